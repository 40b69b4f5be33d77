/* The content cache's local-directory implementation (cache.h). Every call
 * takes the directory's flock(2) (daemon and CLI share it) and a mutex
 * (threads of one process). */
#include "cache/cache.h"
#include "util/fs.h"
#include "util/macro.h"
#include "util/paths.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#define DEFAULT_MAX_BYTES (10ull << 30)
#define MAX_ENTRY_JSON 8192
#define MAX_ENTRIES 100000

struct cache {
  const cache_ops *ops;
  char *dir;
  uint64_t max_bytes;
  pthread_mutex_t mu;
};

typedef struct entry {
  char key[65];
  char digest[65];
  uint64_t size;
  double last_used;
} entry;

bool cache_key_valid(const char *key) {
  if (!key || strlen(key) != 64) return false;
  for (const char *p = key; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
  return true;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* <dir>/<a><b><c> */
static char *pathf(cache *c, const char *a, const char *b, const char *x) {
  char *p = NULL;
  if (asprintf(&p, "%s/%s%s%s", c->dir, a, b, x) < 0) return NULL;
  return p;
}

/* flock + mutex; returns the lock fd or -1 */
static int lock(cache *c) {
  pthread_mutex_lock(&c->mu);
  _cleanup_free_ char *p = pathf(c, "lock", "", "");
  int fd = p ? open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
  if (fd < 0 || flock(fd, LOCK_EX) < 0) {
    if (fd >= 0) close(fd);
    pthread_mutex_unlock(&c->mu);
    return -1;
  }
  return fd;
}

static void unlock(cache *c, int fd) {
  close(fd);
  pthread_mutex_unlock(&c->mu);
}

static json_t *read_json(const char *path) {
  _cleanup_free_ char *buf = NULL;
  size_t len;
  if (cr_read_file(path, MAX_ENTRY_JSON, &buf, &len) < 0) return NULL;
  return json_loadb(buf, len, 0, NULL);
}

static int write_json(const char *path, json_t *j) {
  _cleanup_free_ char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
  if (!s) return -ENOMEM;
  return cr_write_file_atomic(path, s, strlen(s), 0600);
}

static void bump_stat(cache *c, const char *name, json_int_t by) {
  _cleanup_free_ char *p = pathf(c, "stats.json", "", "");
  if (!p) return;
  json_t *j = read_json(p);
  if (!json_is_object(j)) {
    json_decref(j);
    j = json_object();
  }
  json_object_set_new(j, name, json_integer(json_integer_value(json_object_get(j, name)) + by));
  write_json(p, j);
  json_decref(j);
}

static bool digest_valid(const char *d) { return cache_key_valid(d); }

/* All entries (unsorted); *n. Skips files that do not parse. */
static entry *load_entries(cache *c, size_t *n) {
  *n = 0;
  _cleanup_free_ char *d = pathf(c, "entries", "", "");
  DIR *dir = d ? opendir(d) : NULL;
  if (!dir) return NULL;
  entry *v = NULL;
  size_t cap = 0;
  struct dirent *de;
  while ((de = readdir(dir)) && *n < MAX_ENTRIES) {
    size_t l = strlen(de->d_name);
    if (l != 64 + 5 || strcmp(de->d_name + 64, ".json")) continue;
    char key[65];
    memcpy(key, de->d_name, 64);
    key[64] = '\0';
    if (!cache_key_valid(key)) continue;
    _cleanup_free_ char *p = NULL;
    if (asprintf(&p, "%s/%s", d, de->d_name) < 0) continue;
    json_t *j = read_json(p);
    const char *dg = json_string_value(json_object_get(j, "digest"));
    if (!dg || !digest_valid(dg)) {
      json_decref(j);
      continue;
    }
    if (*n == cap) {
      cap = cap ? cap * 2 : 64;
      entry *nv = realloc(v, cap * sizeof(*v));
      if (!nv) {
        json_decref(j);
        break;
      }
      v = nv;
    }
    entry *e = &v[(*n)++];
    snprintf(e->key, sizeof(e->key), "%s", key);
    snprintf(e->digest, sizeof(e->digest), "%s", dg);
    e->size = (uint64_t)json_integer_value(json_object_get(j, "size"));
    e->last_used = json_number_value(json_object_get(j, "last_used"));
    json_decref(j);
  }
  closedir(dir);
  return v;
}

static int by_use_desc(const void *a, const void *b) {
  double x = ((const entry *)a)->last_used, y = ((const entry *)b)->last_used;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Removes an entry, and its blob when no other entry names it. */
static void remove_entry(cache *c, entry *all, size_t n, size_t k) {
  _cleanup_free_ char *ep = pathf(c, "entries/", all[k].key, ".json");
  if (ep) unlink(ep);
  bool shared = false;
  for (size_t i = 0; i < n && !shared; i++)
    shared = i != k && all[i].key[0] && !strcmp(all[i].digest, all[k].digest);
  if (!shared) {
    _cleanup_free_ char *bp = pathf(c, "blobs/", all[k].digest, "");
    if (bp) unlink(bp);
  }
  all[k].key[0] = '\0';
}

/* Distinct blob bytes of the live entries. */
static uint64_t blob_bytes(entry *v, size_t n) {
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (!v[i].key[0]) continue;
    bool seen = false;
    for (size_t k = 0; k < i && !seen; k++) seen = v[k].key[0] && !strcmp(v[k].digest, v[i].digest);
    if (!seen) total += v[i].size;
  }
  return total;
}

/* LRU: drop the least recently used entries until <= keep bytes. */
static size_t evict_to(cache *c, uint64_t keep) {
  size_t n, removed = 0;
  entry *v = load_entries(c, &n);
  if (!v) return 0;
  qsort(v, n, sizeof(*v), by_use_desc);
  for (size_t k = n; k > 0 && blob_bytes(v, n) > keep; k--) {
    remove_entry(c, v, n, k - 1);
    removed++;
  }
  free(v);
  return removed;
}

static int local_get(cache *c, const char *key, uint8_t **data, size_t *len, cr_error **err) {
  if (!cache_key_valid(key)) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "cache key");
  int lk = lock(c);
  if (lk < 0) return cr_error_set(err, CR_E_IO, errno, "locking the cache %s", c->dir);
  _cleanup_free_ char *ep = pathf(c, "entries/", key, ".json");
  json_t *j = ep ? read_json(ep) : NULL;
  const char *dg = json_string_value(json_object_get(j, "digest"));
  int r = 0;
  if (dg && digest_valid(dg)) {
    _cleanup_free_ char *bp = pathf(c, "blobs/", dg, "");
    char *buf = NULL;
    size_t n = 0;
    if (bp && cr_read_file(bp, SIZE_MAX / 2, &buf, &n) == 0) {
      char hex[65];
      cr_sha256_hex(buf, n, hex);
      if (!strcmp(hex, dg)) {
        *data = (uint8_t *)buf;
        *len = n;
        r = 1;
        json_object_set_new(j, "last_used", json_real(now_s()));
        write_json(ep, j);
      } else {
        free(buf); /* corrupt: drop it, a miss */
        unlink(bp);
        unlink(ep);
      }
    } else {
      unlink(ep);
    }
  }
  json_decref(j);
  bump_stat(c, r ? "hits" : "misses", 1);
  unlock(c, lk);
  return r;
}

static int local_put(cache *c, const char *key, const char *kind, const char *source,
                     const uint8_t *data, size_t len, cr_error **err) {
  if (!cache_key_valid(key)) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "cache key");
  if (len > c->max_bytes) return 0; /* would evict everything: not cached */
  char hex[65];
  cr_sha256_hex(data, len, hex);
  int lk = lock(c);
  if (lk < 0) return cr_error_set(err, CR_E_IO, errno, "locking the cache %s", c->dir);
  _cleanup_free_ char *bp = pathf(c, "blobs/", hex, "");
  _cleanup_free_ char *ep = pathf(c, "entries/", key, ".json");
  int r = 0;
  struct stat st;
  if (!bp || !ep) {
    r = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "cache");
  } else if ((stat(bp, &st) < 0 || (uint64_t)st.st_size != len) &&
             (r = cr_write_file_atomic(bp, data, len, 0600)) < 0) {
    r = cr_error_set(err, r == -ENOSPC ? CR_E_DISK_FULL : CR_E_IO, -r, "writing %s", bp);
  } else {
    json_t *old = read_json(ep); /* a replaced entry: its blob may go below */
    char old_dg[65] = "";
    const char *od = json_string_value(json_object_get(old, "digest"));
    if (od && digest_valid(od) && strcmp(od, hex)) snprintf(old_dg, sizeof(old_dg), "%s", od);
    json_decref(old);
    double t = now_s();
    json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:s, s:f, s:f}", "key", key, "digest", hex,
                          "size", (json_int_t)len, "kind", kind ? kind : "", "source",
                          source ? source : "", "created", t, "last_used", t);
    if (!j || write_json(ep, j) < 0) r = cr_error_set(err, CR_E_IO, errno, "writing %s", ep);
    json_decref(j);
    if (r == 0 && old_dg[0]) {
      size_t n;
      entry *v = load_entries(c, &n);
      bool named = false;
      for (size_t i = 0; i < n && !named; i++) named = !strcmp(v[i].digest, old_dg);
      free(v);
      _cleanup_free_ char *obp = named ? NULL : pathf(c, "blobs/", old_dg, "");
      if (obp) unlink(obp);
    }
    if (r == 0) {
      bump_stat(c, "stores", 1);
      size_t ev = evict_to(c, c->max_bytes);
      if (ev) bump_stat(c, "evictions", (json_int_t)ev);
    }
  }
  unlock(c, lk);
  return r < 0 ? -1 : 0;
}

static int local_meta_get(cache *c, const char *key, json_t **meta, cr_error **err) {
  *meta = NULL;
  if (!cache_key_valid(key)) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "cache key");
  int lk = lock(c);
  if (lk < 0) return cr_error_set(err, CR_E_IO, errno, "locking the cache %s", c->dir);
  _cleanup_free_ char *ep = pathf(c, "entries/", key, ".json");
  json_t *j = ep ? read_json(ep) : NULL;
  json_t *m = json_object_get(j, "meta");
  int r = 0;
  if (json_is_object(m)) {
    *meta = json_incref(m);
    r = 1;
  }
  json_decref(j);
  unlock(c, lk);
  return r;
}

static int local_meta_set(cache *c, const char *key, json_t *meta, cr_error **err) {
  if (!cache_key_valid(key)) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "cache key");
  int lk = lock(c);
  if (lk < 0) return cr_error_set(err, CR_E_IO, errno, "locking the cache %s", c->dir);
  _cleanup_free_ char *ep = pathf(c, "entries/", key, ".json");
  json_t *j = ep ? read_json(ep) : NULL;
  int r = 0;
  if (json_is_object(j) && json_is_object(meta)) {
    json_object_set(j, "meta", meta);
    if (write_json(ep, j) < 0) r = cr_error_set(err, CR_E_IO, errno, "writing %s", ep);
    else r = 1;
  }
  json_decref(j);
  unlock(c, lk);
  return r;
}

static json_t *local_list(cache *c) {
  json_t *a = json_array();
  int lk = lock(c);
  if (lk < 0) return json_pack("{s:o}", "entries", a);
  size_t n;
  entry *v = load_entries(c, &n);
  if (n) qsort(v, n, sizeof(*v), by_use_desc); /* v is NULL when empty */
  for (size_t i = 0; i < n; i++) {
    _cleanup_free_ char *ep = pathf(c, "entries/", v[i].key, ".json");
    json_t *j = ep ? read_json(ep) : NULL;
    if (json_is_object(j)) json_array_append_new(a, j);
    else json_decref(j);
  }
  free(v);
  unlock(c, lk);
  return json_pack("{s:o}", "entries", a);
}

static int local_prune(cache *c, uint64_t keep, size_t *removed, cr_error **err) {
  int lk = lock(c);
  if (lk < 0) return cr_error_set(err, CR_E_IO, errno, "locking the cache %s", c->dir);
  size_t n = evict_to(c, keep);
  if (keep == 0) {
    /* blobs no entry names (a crash between the two writes) */
    _cleanup_free_ char *d = pathf(c, "blobs", "", "");
    DIR *dir = d ? opendir(d) : NULL;
    struct dirent *de;
    while (dir && (de = readdir(dir)))
      if (de->d_name[0] != '.') unlinkat(dirfd(dir), de->d_name, 0);
    if (dir) closedir(dir);
  }
  if (n) bump_stat(c, "evictions", (json_int_t)n);
  unlock(c, lk);
  if (removed) *removed = n;
  return 0;
}

static json_t *local_stats(cache *c) {
  int lk = lock(c);
  size_t n = 0;
  entry *v = lk >= 0 ? load_entries(c, &n) : NULL;
  uint64_t bytes = blob_bytes(v, n);
  free(v);
  _cleanup_free_ char *p = pathf(c, "stats.json", "", "");
  json_t *s = p ? read_json(p) : NULL;
  if (lk >= 0) unlock(c, lk);
  json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:I}", "backend", "local", "dir", c->dir,
                        "entries", (json_int_t)n, "bytes", (json_int_t)bytes, "max_bytes",
                        (json_int_t)c->max_bytes);
  static const char *names[] = {"hits", "misses", "stores", "evictions"};
  for (size_t i = 0; i < ELEMENTSOF(names); i++)
    json_object_set_new(j, names[i], json_integer(json_integer_value(json_object_get(s, names[i]))));
  json_decref(s);
  return j;
}

static void local_close(cache *c) {
  pthread_mutex_destroy(&c->mu);
  free(c->dir);
  free(c);
}

static const cache_ops local_ops = {
    .name = "local",
    .get = local_get,
    .put = local_put,
    .meta_get = local_meta_get,
    .meta_set = local_meta_set,
    .list = local_list,
    .prune = local_prune,
    .stats = local_stats,
    .close = local_close,
};

char *cache_default_dir(void) {
  const char *d = getenv("CLEANROOM_CACHE_DIR");
  return d && *d ? strdup(d) : cr_data_path("content-cache");
}

int cache_open_local(const char *dir, uint64_t max_bytes, cache **ret, cr_error **err) {
  cache *c = calloc(1, sizeof(*c));
  if (!c) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "cache");
  c->ops = &local_ops;
  c->dir = dir ? strdup(dir) : cache_default_dir();
  if (!c->dir) {
    free(c);
    return cr_error_set(err, CR_E_INTERNAL, 0, "no data directory for the content cache");
  }
  if (!max_bytes) {
    const char *m = getenv("CLEANROOM_CACHE_MAX_BYTES");
    char *end = NULL;
    unsigned long long v = m && *m ? strtoull(m, &end, 10) : 0;
    max_bytes = v && end && !*end ? v : DEFAULT_MAX_BYTES;
  }
  c->max_bytes = max_bytes;
  pthread_mutex_init(&c->mu, NULL);
  _cleanup_free_ char *e = pathf(c, "entries", "", ""), *b = pathf(c, "blobs", "", "");
  int r = -ENOMEM;
  if (!e || !b || (r = cr_mkdir_p(e, 0700)) < 0 || (r = cr_mkdir_p(b, 0700)) < 0) {
    cr_error_set(err, CR_E_IO, -r, "creating the content cache %s", c->dir);
    local_close(c);
    return -1;
  }
  *ret = c;
  return 0;
}

int cache_get(cache *c, const char *key, uint8_t **data, size_t *len, cr_error **err) {
  return c->ops->get(c, key, data, len, err);
}
int cache_put(cache *c, const char *key, const char *kind, const char *source,
              const uint8_t *data, size_t len, cr_error **err) {
  return c->ops->put(c, key, kind, source, data, len, err);
}
int cache_meta_get(cache *c, const char *key, json_t **meta, cr_error **err) {
  return c->ops->meta_get(c, key, meta, err);
}
int cache_meta_set(cache *c, const char *key, json_t *meta, cr_error **err) {
  return c->ops->meta_set(c, key, meta, err);
}
json_t *cache_list(cache *c) { return c->ops->list(c); }
int cache_prune(cache *c, uint64_t keep, size_t *removed, cr_error **err) {
  return c->ops->prune(c, keep, removed, err);
}
json_t *cache_stats(cache *c) { return c->ops->stats(c); }
void cache_close(cache *c) {
  if (c) c->ops->close(c);
}

/* The image store on disk: refs index, meta.json, lookup, list, remove.
 * refs.json is the single source of truth for ref -> digest; each
 * meta.json's "refs" is rewritten from it whenever a ref changes. */
#include "image/image-internal.h"
#include "util/fs.h"
#include "util/macro.h"
#include "util/paths.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#define REFS_FILE "refs.json"
#define META_FILE "meta.json"
#define ROOTFS_FILE "rootfs.ext4"
#define MAX_JSON (16u << 20)

int image_is_hex(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return s[len] == '\0';
}

int image_ref_valid(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > 255 || s[0] == '.' || s[0] == '-' || s[0] == '/' ||
      !strncmp(s, "sha256:", 7))
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!isalnum(c) && !strchr("._/:@-", c)) return 0;
  }
  return 1;
}

void image_info_free(image_info *info) {
  if (!info) return;
  free(info->digest);
  for (size_t i = 0; i < info->n_refs; i++) free(info->refs[i]);
  free(info->refs);
  free(info->dir);
  free(info->rootfs);
  free(info->source_format);
  free(info->imported_from);
  free(info->created_at);
  free(info->platform);
  free(info);
}

void image_info_list_free(image_info **list, size_t n) {
  if (!list) return;
  for (size_t i = 0; i < n; i++) image_info_free(list[i]);
  free(list);
}

json_t *image_info_to_json(const image_info *info) {
  json_t *refs = json_array();
  for (size_t i = 0; refs && i < info->n_refs; i++)
    json_array_append_new(refs, json_string(info->refs[i]));
  return json_pack("{s:s, s:o, s:s?, s:I, s:I, s:s?, s:s?, s:s?, s:s*}",
                   "digest", info->digest, "refs", refs ? refs : json_array(),
                   "rootfs", info->rootfs, "size", (json_int_t)info->size,
                   "content_size", (json_int_t)info->content_size,
                   "source_format", info->source_format,
                   "imported_from", info->imported_from,
                   "created_at", info->created_at, "platform", info->platform);
}

char *image_store_dir(void) {
  _cleanup_free_ char *d = cr_data_path("images");
  if (!d) return NULL;
  if (cr_mkdir_p(d, 0755) < 0) return NULL;
  return realpath(d, NULL);
}

int image_store_lock(const char *store, cr_error **err) {
  _cleanup_free_ char *p = cr_path_join(store, ".lock");
  if (!p) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "lock");
  int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return cr_error_set(err, CR_E_IO, errno, "opening %s", p);
  while (flock(fd, LOCK_EX) < 0) {
    if (errno == EINTR) continue;
    int r = cr_error_set(err, CR_E_IO, errno, "locking %s", p);
    close(fd);
    return r;
  }
  return fd;
}

/* Loads refs.json's "refs" object (empty when missing). */
static int refs_load(const char *store, json_t **ret, cr_error **err) {
  _cleanup_free_ char *p = cr_path_join(store, REFS_FILE);
  if (!p) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "refs");
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;
  int r = cr_read_file(p, MAX_JSON, &buf, &len);
  if (r == -ENOENT) {
    *ret = json_object();
    return *ret ? 0 : cr_error_set(err, CR_E_INTERNAL, ENOMEM, "refs");
  }
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "reading %s", p);
  json_error_t je;
  _cleanup_json_ json_t *doc = json_loadb(buf, len, 0, &je);
  json_t *refs = doc ? json_object_get(doc, "refs") : NULL;
  if (!json_is_object(refs))
    return cr_error_set(err, CR_E_IO, 0, "%s is corrupt: %s", p, doc ? "no refs object" : je.text);
  *ret = json_incref(refs);
  return 0;
}

static int refs_save(const char *store, json_t *refs, cr_error **err) {
  _cleanup_free_ char *p = cr_path_join(store, REFS_FILE);
  _cleanup_json_ json_t *doc = json_pack("{s:i, s:O}", "version", 1, "refs", refs);
  _cleanup_free_ char *s = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
  if (!p || !s) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "refs");
  size_t n = strlen(s);
  char *s2 = realloc(s, n + 2);
  if (!s2) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "refs");
  s = s2;
  s[n] = '\n';
  s[n + 1] = '\0';
  int r = cr_write_file_atomic(p, s, n + 1, 0644);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "writing %s", p);
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Fills info->refs from the refs object. */
static int refs_of(json_t *refs, const char *digest, image_info *info) {
  const char *k;
  json_t *v;
  size_t n = 0;
  json_object_foreach(refs, k, v) if (json_is_string(v) && !strcmp(json_string_value(v), digest)) n++;
  info->refs = calloc(n + 1, sizeof(char *));
  if (!info->refs) return -ENOMEM;
  json_object_foreach(refs, k, v) {
    if (!json_is_string(v) || strcmp(json_string_value(v), digest)) continue;
    if (!(info->refs[info->n_refs] = strdup(k))) return -ENOMEM;
    info->n_refs++;
  }
  qsort(info->refs, info->n_refs, sizeof(char *), cmp_str);
  return 0;
}

int image_store_write_meta(const char *dir, const image_info *info, cr_error **err) {
  _cleanup_json_ json_t *j = image_info_to_json(info);
  if (!j) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "meta");
  json_object_del(j, "rootfs"); /* derived from the location */
  _cleanup_free_ char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
  _cleanup_free_ char *p = cr_path_join(dir, META_FILE);
  _cleanup_free_ char *line = NULL;
  if (!s || !p || asprintf(&line, "%s\n", s) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "meta");
  int r = cr_write_file_atomic(p, line, strlen(line), 0644);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "writing %s", p);
  return 0;
}

static char *jstrdup(json_t *o, const char *key) {
  const char *s = json_string_value(json_object_get(o, key));
  return s ? strdup(s) : NULL;
}

static int load_with_refs(const char *store, const char *hex, json_t *refs,
                          image_info **ret, cr_error **err) {
  _cleanup_free_ char *dir = cr_path_join(store, hex);
  _cleanup_free_ char *mp = dir ? cr_path_join(dir, META_FILE) : NULL;
  if (!mp) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "meta");
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;
  int r = cr_read_file(mp, MAX_JSON, &buf, &len);
  if (r == -ENOENT)
    return cr_error_set(err, CR_E_IMAGE_NOT_FOUND, 0, "image sha256:%s not found", hex);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "reading %s", mp);
  json_error_t je;
  _cleanup_json_ json_t *j = json_loadb(buf, len, 0, &je);
  if (!json_is_object(j)) return cr_error_set(err, CR_E_IO, 0, "%s is corrupt: %s", mp, je.text);
  _cleanup_(image_info_freep) image_info *info = calloc(1, sizeof(*info));
  if (!info) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "meta");
  if (asprintf(&info->digest, "sha256:%s", hex) < 0) {
    info->digest = NULL;
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "meta");
  }
  info->dir = TAKE_PTR(dir);
  info->rootfs = cr_path_join(info->dir, ROOTFS_FILE);
  info->source_format = jstrdup(j, "source_format");
  info->imported_from = jstrdup(j, "imported_from");
  info->created_at = jstrdup(j, "created_at");
  info->platform = jstrdup(j, "platform");
  info->size = (uint64_t)json_integer_value(json_object_get(j, "size"));
  info->content_size = (uint64_t)json_integer_value(json_object_get(j, "content_size"));
  if (info->created_at) {
    struct tm tm = {0};
    if (strptime(info->created_at, "%Y-%m-%dT%H:%M:%SZ", &tm)) info->created = timegm(&tm);
  }
  if (!info->rootfs || refs_of(refs, info->digest, info) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "meta");
  *ret = TAKE_PTR(info);
  return 0;
}

int image_store_load(const char *store, const char *hex, image_info **ret,
                     cr_error **err) {
  _cleanup_json_ json_t *refs = NULL;
  int r = refs_load(store, &refs, err);
  if (r < 0) return r;
  return load_with_refs(store, hex, refs, ret, err);
}

/* Rewrites meta.json of hex with its current refs (ignores a missing image). */
static int refresh_meta(const char *store, const char *hex, json_t *refs, cr_error **err) {
  _cleanup_(image_info_freep) image_info *info = NULL;
  cr_error *e = NULL;
  if (load_with_refs(store, hex, refs, &info, &e) < 0) {
    bool missing = !strcmp(cr_error_reason(e), CR_E_IMAGE_NOT_FOUND);
    int r = missing ? 0 : cr_error_set(err, cr_error_reason(e), 0, "%s", e->message);
    cr_error_free(e);
    return r;
  }
  return image_store_write_meta(info->dir, info, err);
}

int image_store_add_ref(const char *store, const char *hex, const char *ref,
                        cr_error **err) {
  if (!ref) return 0;
  _cleanup_json_ json_t *refs = NULL;
  int r = refs_load(store, &refs, err);
  if (r < 0) return r;
  _cleanup_free_ char *digest = NULL;
  if (asprintf(&digest, "sha256:%s", hex) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "ref");
  const char *old = json_string_value(json_object_get(refs, ref));
  _cleanup_free_ char *old_hex = old && !strncmp(old, "sha256:", 7) && strcmp(old, digest)
                                     ? strdup(old + 7) : NULL;
  if (json_object_set_new(refs, ref, json_string(digest)) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "ref");
  r = refs_save(store, refs, err);
  if (r < 0) return r;
  r = refresh_meta(store, hex, refs, err);
  if (r >= 0 && old_hex && image_is_hex(old_hex, IMAGE_HEX_LEN))
    r = refresh_meta(store, old_hex, refs, err);
  return r;
}

static int not_found(const char *what, cr_error **err) {
  const char *slash = strrchr(what, '/');
  const char *name = slash ? slash + 1 : what;
  size_t n = strcspn(name, ":@");
  return cr_error_set(err, CR_E_IMAGE_NOT_FOUND, 0,
                      "image '%s' not found; import it with 'cleanroom image import FILE "
                      "--ref %s' or build it with images/%.*s/build.sh",
                      what, what, (int)n, name);
}

/* Resolves to a stored hex digest. *ret_is_ref tells whether it matched a
 * ref (and which key, in *ret_ref). */
static int resolve(const char *store, json_t *refs, const char *what, char ret_hex[65],
                   char **ret_ref, cr_error **err) {
  if (!what || !*what) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "empty image reference");
  /* 1. a ref, also name -> name:latest */
  const char *keys[2] = {what, NULL};
  _cleanup_free_ char *latest = NULL;
  const char *slash = strrchr(what, '/');
  if (!strchr(slash ? slash : what, ':') && !strchr(what, '@') &&
      asprintf(&latest, "%s:latest", what) >= 0)
    keys[1] = latest;
  for (size_t i = 0; i < 2 && keys[i]; i++) {
    const char *d = json_string_value(json_object_get(refs, keys[i]));
    if (d && !strncmp(d, "sha256:", 7) && image_is_hex(d + 7, IMAGE_HEX_LEN)) {
      memcpy(ret_hex, d + 7, 65);
      if (ret_ref) *ret_ref = strdup(keys[i]);
      return 0;
    }
  }
  /* 2. a digest or a unique prefix */
  const char *hex = !strncmp(what, "sha256:", 7) ? what + 7 : what;
  size_t n = strlen(hex);
  if (n >= 12 && n <= IMAGE_HEX_LEN && image_is_hex(hex, n)) {
    DIR *d = opendir(store);
    if (!d) return cr_error_set(err, CR_E_IO, errno, "reading %s", store);
    struct dirent *de;
    int matches = 0;
    while ((de = readdir(d))) {
      if (!image_is_hex(de->d_name, IMAGE_HEX_LEN) || strncmp(de->d_name, hex, n)) continue;
      if (++matches == 1) memcpy(ret_hex, de->d_name, 65);
    }
    closedir(d);
    if (matches > 1)
      return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                          "'%s' matches %d images; give more digits", what, matches);
    if (matches == 1) {
      if (ret_ref) *ret_ref = NULL;
      return 0;
    }
  }
  return not_found(what, err);
}

int image_lookup(const char *ref_or_digest, image_info **ret, cr_error **err) {
  _cleanup_free_ char *store = image_store_dir();
  if (!store) return cr_error_set(err, CR_E_IO, errno, "opening the image store");
  _cleanup_json_ json_t *refs = NULL;
  int r = refs_load(store, &refs, err);
  if (r < 0) return r;
  char hex[65];
  r = resolve(store, refs, ref_or_digest, hex, NULL, err);
  if (r < 0) return r;
  r = load_with_refs(store, hex, refs, ret, err);
  if (r < 0 && !strcmp(cr_error_reason(*err), CR_E_IMAGE_NOT_FOUND)) {
    cr_error_free(*err);
    *err = NULL;
    return not_found(ref_or_digest, err);
  }
  return r;
}

static int cmp_created(const void *a, const void *b) {
  const image_info *x = *(image_info *const *)a, *y = *(image_info *const *)b;
  if (x->created != y->created) return x->created > y->created ? -1 : 1;
  return strcmp(x->digest, y->digest);
}

int image_list(image_info ***ret, size_t *ret_n, cr_error **err) {
  _cleanup_free_ char *store = image_store_dir();
  if (!store) return cr_error_set(err, CR_E_IO, errno, "opening the image store");
  _cleanup_json_ json_t *refs = NULL;
  int r = refs_load(store, &refs, err);
  if (r < 0) return r;
  DIR *d = opendir(store);
  if (!d) return cr_error_set(err, CR_E_IO, errno, "reading %s", store);
  image_info **list = NULL;
  size_t n = 0;
  struct dirent *de;
  r = 0;
  while ((de = readdir(d))) {
    if (!image_is_hex(de->d_name, IMAGE_HEX_LEN)) continue;
    image_info *info = NULL;
    cr_error *e = NULL;
    if (load_with_refs(store, de->d_name, refs, &info, &e) < 0) {
      cr_error_free(e); /* half-removed or foreign directory: not an image */
      continue;
    }
    image_info **nl = realloc(list, (n + 1) * sizeof(*list));
    if (!nl) {
      image_info_free(info);
      r = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "listing images");
      break;
    }
    list = nl;
    list[n++] = info;
  }
  closedir(d);
  if (r < 0) {
    image_info_list_free(list, n);
    return r;
  }
  if (n) qsort(list, n, sizeof(*list), cmp_created);
  *ret = list;
  *ret_n = n;
  return 0;
}

/* Removes images/<hex> by renaming it away first, so a crash never leaves a
 * half-deleted image that looks valid. */
static int remove_dir(const char *store, const char *hex, cr_error **err) {
  _cleanup_free_ char *dir = cr_path_join(store, hex);
  _cleanup_free_ char *tmp = NULL;
  if (!dir || asprintf(&tmp, "%s/.tmp-rm-%s", store, hex) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "removing image");
  if (rename(dir, tmp) < 0) {
    if (errno == ENOENT) return 0;
    return cr_error_set(err, CR_E_IO, errno, "removing %s", dir);
  }
  int r = cr_rm_rf(tmp);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "removing %s", tmp);
  return 0;
}

int image_remove(const char *ref_or_digest, unsigned flags,
                 char **ret_removed_digest, cr_error **err) {
  _cleanup_free_ char *store = image_store_dir();
  if (!store) return cr_error_set(err, CR_E_IO, errno, "opening the image store");
  _cleanup_close_ int lock = image_store_lock(store, err);
  if (lock < 0) return lock;
  _cleanup_json_ json_t *refs = NULL;
  int r = refs_load(store, &refs, err);
  if (r < 0) return r;
  char hex[65];
  _cleanup_free_ char *ref = NULL;
  r = resolve(store, refs, ref_or_digest, hex, &ref, err);
  if (r < 0) return r;
  _cleanup_free_ char *digest = NULL;
  if (asprintf(&digest, "sha256:%s", hex) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "remove");
  bool changed = false;
  if (ref) {
    json_object_del(refs, ref);
    changed = true;
  } else {
    /* by digest: its refs go too, but only when forced */
    const char *k;
    json_t *v;
    void *tmp;
    size_t users = 0;
    json_object_foreach(refs, k, v) if (!strcmp(json_string_value(v) ?: "", digest)) users++;
    if (users && !(flags & IMAGE_REMOVE_FORCE))
      return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                          "image %s still has %zu ref(s); remove them by name or use --force",
                          digest, users);
    json_object_foreach_safe(refs, tmp, k, v) {
      if (!strcmp(json_string_value(v) ?: "", digest)) {
        json_object_del(refs, k);
        changed = true;
      }
    }
  }
  if (changed) {
    r = refs_save(store, refs, err);
    if (r < 0) return r;
  }
  bool still_used = false;
  const char *k;
  json_t *v;
  json_object_foreach(refs, k, v) if (!strcmp(json_string_value(v) ?: "", digest)) still_used = true;
  if (still_used) return refresh_meta(store, hex, refs, err);
  r = remove_dir(store, hex, err);
  if (r < 0) return r;
  if (ret_removed_digest) *ret_removed_digest = TAKE_PTR(digest);
  return 1;
}

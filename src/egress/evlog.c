/* The egress audit log on disk (evlog.h). */
#include "egress/evlog.h"
#include "util/fs.h"
#include "util/macro.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* An event line is far shorter (names are at most 253 bytes, answers at
 * most DNS_MAX_ANSWERS addresses); longer lines are not ours. */
#define MAX_LINE (64u << 10)

struct egress_evlog {
  char *dir, *path, *path_old;
  size_t max;
  int fd;
  uint64_t size;
};

egress_evlog *egress_evlog_new(const char *dir, size_t max_bytes) {
  egress_evlog *l = calloc(1, sizeof(*l));
  if (!l) return NULL;
  l->dir = strdup(dir);
  l->path = cr_path_join(dir, EGRESS_EVLOG_FILE);
  if (l->path && asprintf(&l->path_old, "%s.1", l->path) < 0) l->path_old = NULL;
  if (!l->dir || !l->path || !l->path_old) {
    egress_evlog_free(l);
    return NULL;
  }
  l->max = max_bytes < 4096 ? 4096 : max_bytes;
  l->fd = -1;
  return l;
}

void egress_evlog_free(egress_evlog *l) {
  if (!l) return;
  if (l->fd >= 0) close(l->fd);
  free(l->dir);
  free(l->path);
  free(l->path_old);
  free(l);
}

static int open_log(egress_evlog *l) {
  int r = cr_mkdir_p(l->dir, 0700);
  if (r < 0) return r;
  int fd = open(l->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    r = errno ? -errno : -EINVAL;
    close(fd);
    return r;
  }
  l->size = (uint64_t)st.st_size;
  if (l->size > 0) {
    /* a crash in the middle of a write left a partial last line: end it,
     * so the next event starts a line of its own (loading skips it) */
    char c = '\n';
    if (pread(fd, &c, 1, (off_t)(l->size - 1)) == 1 && c != '\n' && write(fd, "\n", 1) == 1)
      l->size++;
  }
  l->fd = fd;
  return 0;
}

static int rotate(egress_evlog *l) {
  close(l->fd);
  l->fd = -1;
  if (rename(l->path, l->path_old) < 0 && errno != ENOENT) return -errno;
  return open_log(l);
}

int egress_evlog_append(egress_evlog *l, json_t *ev) {
  if (!l || !ev) return -EINVAL;
  _cleanup_free_ char *s = json_dumps(ev, JSON_COMPACT);
  if (!s) return -ENOMEM;
  size_t n = strlen(s);
  if (n + 1 > MAX_LINE) return -E2BIG;
  s[n++] = '\n'; /* replaces the NUL: s is written by length */
  int r;
  if (l->fd < 0 && (r = open_log(l)) < 0) return r;
  if (l->size > 0 && l->size + n > l->max && (r = rotate(l)) < 0) return r;
  ssize_t w = write(l->fd, s, n); /* one write: whole lines for readers */
  if (w < 0) return -errno;
  l->size += (uint64_t)w;
  if ((size_t)w < n) {
    /* disk full: end the partial line so the next one is whole */
    if (write(l->fd, "\n", 1) == 1) l->size++;
    return -ENOSPC;
  }
  return 0;
}

/* Start of the last k lines of buf (lines end with '\n'; a last line
 * without one is partial and not counted). *ret_n: how many there are. */
static const char *last_lines(const char *buf, size_t len, size_t k, size_t *ret_n) {
  size_t end = len;
  while (end > 0 && buf[end - 1] != '\n') end--; /* drop a partial last line */
  size_t n = 0, i = end;
  while (i > 0 && n < k) {
    /* buf[i-1] is the '\n' that ends a line; find where it starts */
    size_t j = i - 1;
    while (j > 0 && buf[j - 1] != '\n') j--;
    n++;
    i = j;
  }
  *ret_n = n;
  return buf + i;
}

typedef struct load_ctx {
  void (*fn)(json_t *ev, void *ud);
  void *ud;
  json_int_t last_seq;
  size_t n;
} load_ctx;

static void feed(load_ctx *c, const char *p, const char *end) {
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) break; /* partial */
    json_t *ev = (size_t)(nl - p) < MAX_LINE ? json_loadb(p, (size_t)(nl - p), 0, NULL) : NULL;
    json_t *seq = json_object_get(ev, "seq");
    if (json_is_object(ev) && json_is_integer(seq) && json_integer_value(seq) > c->last_seq) {
      c->last_seq = json_integer_value(seq);
      c->fn(ev, c->ud);
      c->n++;
    }
    json_decref(ev);
    p = nl + 1;
  }
}

/* A file's tail, bounded; a tail that starts mid-file loses its first,
 * partial line. */
static int read_tail(const char *path, size_t cap, char **ret_buf, size_t *ret_len,
                     size_t *ret_skip) {
  struct stat st;
  if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode)) return -ENOENT;
  int r = cr_read_file_tail(path, cap, ret_buf, ret_len);
  if (r < 0) return r;
  size_t skip = 0;
  if ((uint64_t)st.st_size > *ret_len) {
    const char *nl = memchr(*ret_buf, '\n', *ret_len);
    skip = nl ? (size_t)(nl - *ret_buf) + 1 : *ret_len;
  }
  *ret_skip = skip;
  return 0;
}

size_t egress_evlog_load(egress_evlog *l, size_t max, void (*fn)(json_t *ev, void *ud),
                         void *ud) {
  if (!l || !max) return 0;
  /* the files may come from a daemon with a larger limit: read tails */
  size_t cap = l->max + MAX_LINE;
  _cleanup_free_ char *cur = NULL, *old = NULL;
  size_t cur_len = 0, old_len = 0, cur_skip = 0, old_skip = 0, n_cur = 0, n_old = 0;
  if (read_tail(l->path, cap, &cur, &cur_len, &cur_skip) < 0) cur_len = 0;
  const char *cur_from = cur ? last_lines(cur + cur_skip, cur_len - cur_skip, max, &n_cur) : NULL;
  const char *old_from = NULL;
  if (n_cur < max && read_tail(l->path_old, cap, &old, &old_len, &old_skip) == 0)
    old_from = last_lines(old + old_skip, old_len - old_skip, max - n_cur, &n_old);
  load_ctx c = {fn, ud, 0, 0};
  if (old_from) feed(&c, old_from, old + old_len);
  if (cur_from) feed(&c, cur_from, cur + cur_len);
  return c.n;
}

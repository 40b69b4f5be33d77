/* Buffers, a small tar writer and path checks for src/workspace. */
#include "workspace/ws.h"

#include <errno.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *ws_git_error(void) {
  const git_error *e = git_error_last();
  return e && e->message ? e->message : "unknown libgit2 error";
}

/* ---- tar */

static void put_oct(char *dst, size_t w, uint64_t v) {
  /* w-1 octal digits + NUL */
  char tmp[32];
  int k = snprintf(tmp, sizeof(tmp), "%0*llo", (int)(w - 1), (unsigned long long)v);
  if (k < 0 || (size_t)k > w - 1) memset(dst, '7', w - 1); /* does not fit: clamp */
  else memcpy(dst, tmp, (size_t)k);
  dst[w - 1] = '\0';
}

static int header(cr_buf *b, const char *name, char type, uint32_t mode, int64_t mtime,
                  uint64_t size, const char *link) {
  char h[512];
  memset(h, 0, sizeof(h));
  snprintf(h, 100, "%s", name);
  put_oct(h + 100, 8, mode & 07777);
  put_oct(h + 108, 8, 0);
  put_oct(h + 116, 8, 0);
  put_oct(h + 124, 12, size);
  put_oct(h + 136, 12, mtime < 0 ? 0 : (uint64_t)mtime);
  memset(h + 148, ' ', 8);
  h[156] = type;
  if (link) snprintf(h + 157, 100, "%s", link);
  memcpy(h + 257, "ustar\0" "00", 8);
  unsigned sum = 0;
  for (size_t i = 0; i < sizeof(h); i++) sum += (unsigned char)h[i];
  snprintf(h + 148, 8, "%06o", sum);
  h[155] = ' ';
  return cr_buf_append(b, h, sizeof(h));
}

static int pad(cr_buf *b, uint64_t n) {
  static const char zero[512];
  size_t p = (size_t)((512 - n % 512) % 512);
  return p ? cr_buf_append(b, zero, p) : 0;
}

static int pax_record(cr_buf *px, const char *key, const char *val) {
  /* "<len> key=val\n" where len counts itself */
  size_t body = strlen(key) + strlen(val) + 3; /* ' ', '=', '\n' */
  size_t len = body + 1;
  for (;;) {
    char tmp[32];
    size_t d = (size_t)snprintf(tmp, sizeof(tmp), "%zu", len);
    if (body + d == len) break;
    len = body + d;
  }
  char num[32];
  snprintf(num, sizeof(num), "%zu ", len);
  if (cr_buf_append(px, num, strlen(num)) < 0 || cr_buf_append(px, key, strlen(key)) < 0 ||
      cr_buf_append(px, "=", 1) < 0 || cr_buf_append(px, val, strlen(val)) < 0 ||
      cr_buf_append(px, "\n", 1) < 0)
    return -ENOMEM;
  return 0;
}

int ws_tar_add(cr_buf *b, const char *path, char type, uint32_t mode, int64_t mtime,
               const void *data, size_t n, const char *link) {
  char name[4200];
  int k = snprintf(name, sizeof(name), "%s%s", path, type == '5' ? "/" : "");
  if (k < 0 || (size_t)k >= sizeof(name)) return -ENAMETOOLONG;
  bool longname = strlen(name) > 99, longlink = link && strlen(link) > 99;
  if (longname || longlink) {
    cr_buf px = {0};
    int r = 0;
    if (longname) r = pax_record(&px, "path", name);
    if (!r && longlink) r = pax_record(&px, "linkpath", link);
    if (!r) r = header(b, "././@PaxHeader", 'x', 0644, mtime, px.len, NULL);
    if (!r) r = cr_buf_append(b, px.data, px.len);
    if (!r) r = pad(b, px.len);
    cr_buf_free(&px);
    if (r) return r;
  }
  size_t size = type == '0' ? n : 0;
  int r = header(b, name, type, mode, mtime, size, link);
  if (!r && size) r = cr_buf_append(b, data, size);
  if (!r) r = pad(b, size);
  return r;
}

int ws_tar_end(cr_buf *b) {
  static const char zero[1024];
  return cr_buf_append(b, zero, sizeof(zero));
}

/* ---- paths */

bool ws_path_ok(const char *p) {
  if (!p || !*p || *p == '/' || strlen(p) > 4096) return false;
  const char *s = p;
  for (;;) {
    const char *e = strchr(s, '/');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
      return false;
    if (!e) return true;
    s = e + 1;
  }
}

bool ws_path_has_git(const char *p) {
  for (const char *s = p; s && *s;) {
    const char *e = strchr(s, '/');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if (n == 4 && strncasecmp(s, ".git", 4) == 0) return true;
    s = e ? e + 1 : NULL;
  }
  return false;
}

bool ws_path_selected(const char *p, const char *const *paths, size_t npaths) {
  if (!paths || npaths == 0) return true;
  for (size_t i = 0; i < npaths; i++) {
    size_t n = strlen(paths[i]);
    while (n > 0 && paths[i][n - 1] == '/') n--;
    if (n == 0) return true;
    if (strncmp(p, paths[i], n) == 0 && (p[n] == '\0' || p[n] == '/')) return true;
  }
  return false;
}

void ws_blob_oid(const void *data, size_t n, char ret[41]) {
  git_oid oid;
  if (git_odb_hash(&oid, data, n, GIT_OBJECT_BLOB) < 0) memset(&oid, 0, sizeof(oid));
  git_oid_tostr(ret, 41, &oid);
}

void ws_changes_free(ws_change *c, size_t n) {
  if (!c) return;
  for (size_t i = 0; i < n; i++) {
    free(c[i].path);
    free(c[i].data);
  }
  free(c);
}

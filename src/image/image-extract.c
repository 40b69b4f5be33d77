/* Safe extraction of untrusted layer archives into a staging directory.
 *
 * Every entry is checked before libarchive sees it: the name is normalized
 * (leading '/' stripped, "." dropped, ".." rejected, lengths bounded), no
 * existing parent inside the staging dir may be a symlink (so nothing is
 * written through one), hardlink targets must be existing non-directories
 * inside, and totals are bounded. The entry is then re-rooted under the
 * staging dir's real path and written by libarchive with its own
 * SECURE_NODOTDOT and SECURE_SYMLINKS checks as a second line of defence. */
#include "image/image-internal.h"
#include "util/fs.h"
#include "util/macro.h"

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#define WH_PREFIX ".wh."
#define WH_OPAQUE ".wh..wh..opq"
#define WH_META ".wh..wh."

static image_limits limits = {
    .max_entries = 4000000,
    .max_total_bytes = 64ULL << 30,
    .max_path = 4095,
    .max_component = 255,
    .max_layers = 256,
};

image_limits *image_limits_get(void) { return &limits; }

static void archive_freep(struct archive **a) {
  if (*a) archive_read_free(*a);
}
static void archive_write_freep(struct archive **a) {
  if (*a) archive_write_free(*a);
}
#define _cleanup_archive_ _cleanup_(archive_freep)
#define _cleanup_archive_write_ _cleanup_(archive_write_freep)

int image_path_sanitize(const char *name, char **ret, cr_error **err) {
  if (!name)
    return cr_error_set(err, CR_E_IMAGE_UNSAFE_PATH, 0,
                        "archive entry without a usable name");
  size_t len = strlen(name);
  if (len > limits.max_path)
    return cr_error_set(err, CR_E_IMAGE_UNSAFE_PATH, 0,
                        "archive entry name is %zu bytes (limit %zu): '%.64s...'",
                        len, limits.max_path, name);
  _cleanup_free_ char *out = malloc(len + 1);
  if (!out) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "sanitizing path");
  size_t o = 0;
  const char *p = name;
  while (*p) {
    while (*p == '/') p++;
    if (!*p) break;
    const char *end = strchrnul(p, '/');
    size_t n = (size_t)(end - p);
    if (n == 1 && p[0] == '.') {
      p = end;
      continue;
    }
    if (n == 2 && p[0] == '.' && p[1] == '.')
      return cr_error_set(err, CR_E_IMAGE_UNSAFE_PATH, 0,
                          "archive entry '%s' has a '..' component", name);
    if (n > limits.max_component)
      return cr_error_set(err, CR_E_IMAGE_UNSAFE_PATH, 0,
                          "archive entry '%.64s...' has a component of %zu bytes (limit %zu)",
                          name, n, limits.max_component);
    if (o) out[o++] = '/';
    memcpy(out + o, p, n);
    o += n;
    p = end;
  }
  out[o] = '\0';
  *ret = TAKE_PTR(out);
  return 0;
}

enum entry_kind {
  KIND_NORMAL,
  KIND_HARDLINK,
  KIND_WHITEOUT, /* path is the deleted name */
  KIND_OPAQUE,   /* path is the opaque directory */
  KIND_SKIP,
};

typedef struct checked_entry {
  enum entry_kind kind;
  char *path;   /* normalized, relative */
  char *target; /* hardlink target, normalized */
} checked_entry;

static void checked_entry_clear(checked_entry *c) {
  free(c->path);
  free(c->target);
  *c = (checked_entry){0};
}

/* Validates one header; counts it against the limits. */
static int check_entry(struct archive_entry *e, uint64_t *entries, uint64_t *bytes,
                       checked_entry *ret, cr_error **err) {
  const char *name = archive_entry_pathname(e);
  checked_entry c = {0};
  if (++*entries > limits.max_entries)
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0,
                        "archive has more than %llu entries",
                        (unsigned long long)limits.max_entries);
  int r = image_path_sanitize(name, &c.path, err);
  if (r < 0) return r;
  mode_t type = archive_entry_filetype(e);
  const char *hl = archive_entry_hardlink(e);
  la_int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
  if (size < 0) size = 0;
  *bytes += (uint64_t)size;
  if (*bytes > limits.max_total_bytes) {
    r = cr_error_set(err, CR_E_IMAGE_INVALID, 0,
                     "archive content exceeds %llu bytes (at '%s')",
                     (unsigned long long)limits.max_total_bytes, name);
    goto fail;
  }
  const char *base = strrchr(c.path, '/');
  base = base ? base + 1 : c.path;
  if (!strncmp(base, WH_PREFIX, strlen(WH_PREFIX))) {
    if (!strcmp(base, WH_OPAQUE)) {
      c.kind = KIND_OPAQUE;
      c.path[base - c.path ? (size_t)(base - c.path) - 1 : 0] = '\0';
    } else if (!strncmp(base, WH_META, strlen(WH_META))) {
      c.kind = KIND_SKIP; /* aufs metadata (.wh..wh.plnk etc.) */
    } else {
      const char *victim = base + strlen(WH_PREFIX);
      if (!*victim || !strcmp(victim, ".") || !strcmp(victim, "..")) {
        r = cr_error_set(err, CR_E_IMAGE_UNSAFE_PATH, 0,
                         "archive entry '%s' is a malformed whiteout", name);
        goto fail;
      }
      c.kind = KIND_WHITEOUT;
      memmove((char *)base, victim, strlen(victim) + 1);
    }
    *ret = c;
    return 0;
  }
  if (!c.path[0]) {
    c.kind = KIND_SKIP; /* the root itself: the store sets 0755 root:root */
    *ret = c;
    return 0;
  }
  if (hl) {
    r = image_path_sanitize(hl, &c.target, err);
    if (r < 0) {
      cr_error_wrap(err, "hardlink '%s'", name);
      goto fail;
    }
    if (!c.target[0] || !strcmp(c.target, c.path)) {
      r = cr_error_set(err, CR_E_IMAGE_UNSAFE_PATH, 0,
                       "archive entry '%s' is a hardlink to '%s'", name, hl);
      goto fail;
    }
    c.kind = KIND_HARDLINK;
    *ret = c;
    return 0;
  }
  switch (type) {
  case AE_IFREG:
  case AE_IFDIR:
  case AE_IFCHR:
  case AE_IFBLK:
  case AE_IFIFO:
    c.kind = KIND_NORMAL;
    break;
  case AE_IFLNK: {
    const char *t = archive_entry_symlink(e);
    if (!t || strlen(t) > limits.max_path) {
      r = cr_error_set(err, CR_E_IMAGE_UNSAFE_PATH, 0,
                       "symlink '%s' has a missing or over-long target", name);
      goto fail;
    }
    c.kind = KIND_NORMAL; /* targets are resolved inside the guest */
    break;
  }
  case AE_IFSOCK:
    c.kind = KIND_SKIP;
    break;
  default:
    r = cr_error_set(err, CR_E_IMAGE_INVALID, 0,
                     "archive entry '%s' has an unsupported type %o", name,
                     (unsigned)type);
    goto fail;
  }
  *ret = c;
  return 0;
fail:
  checked_entry_clear(&c);
  return r;
}

struct archive *image_archive_reader(void) {
  struct archive *a = archive_read_new();
  if (!a) return NULL;
  archive_read_support_filter_gzip(a);
  archive_read_support_filter_bzip2(a);
  archive_read_support_filter_xz(a);
  archive_read_support_filter_lzma(a);
  archive_read_support_filter_zstd(a);
  archive_read_support_filter_lz4(a);
  archive_read_support_format_tar(a);
  archive_read_support_format_gnutar(a);
  return a;
}

/* Reads a layer file for libarchive, hashing every byte, so the content
 * extracted is the content verified (no check-then-read gap). */
typedef struct layer_reader {
  int fd;
  EVP_MD_CTX *md;
  const char *path;
  uint8_t buf[1 << 16];
} layer_reader;

static void layer_reader_free(layer_reader *lr) {
  if (!lr) return;
  if (lr->fd >= 0) close(lr->fd);
  EVP_MD_CTX_free(lr->md);
  free(lr);
}
static void layer_reader_freep(layer_reader **lr) { layer_reader_free(*lr); }

static la_ssize_t layer_read(struct archive *a, void *userdata, const void **ret_buf) {
  layer_reader *lr = userdata;
  for (;;) {
    ssize_t n = read(lr->fd, lr->buf, sizeof(lr->buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      archive_set_error(a, errno, "reading %s", lr->path);
      return -1;
    }
    EVP_DigestUpdate(lr->md, lr->buf, (size_t)n);
    *ret_buf = lr->buf;
    return n;
  }
}

/* Drains what libarchive did not read (padding, trailers) and compares. */
static int layer_reader_verify(layer_reader *lr, const char *expect_hex, cr_error **err) {
  for (;;) {
    ssize_t n = read(lr->fd, lr->buf, sizeof(lr->buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return cr_error_set(err, CR_E_IO, errno, "reading %s", lr->path);
    if (n == 0) break;
    EVP_DigestUpdate(lr->md, lr->buf, (size_t)n);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(lr->md, md, &len);
  char hex[65];
  for (unsigned i = 0; i < 32 && i < len; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  hex[64] = '\0';
  if (expect_hex && strcmp(hex, expect_hex))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0,
                        "layer sha256:%s is corrupt: its content has sha256:%s", expect_hex, hex);
  return 0;
}

static int open_archive_file(const char *path, struct archive **ret, layer_reader **ret_lr,
                             cr_error **err) {
  layer_reader *lr = calloc(1, sizeof(*lr));
  if (!lr) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "reading %s", path);
  lr->path = path;
  lr->fd = open(path, O_RDONLY | O_CLOEXEC);
  lr->md = EVP_MD_CTX_new();
  if (lr->fd < 0 || !lr->md) {
    int r = cr_error_set(err, lr->fd < 0 ? CR_E_IMAGE_INVALID : CR_E_INTERNAL,
                         lr->fd < 0 ? errno : ENOMEM, "cannot read '%s'", path);
    layer_reader_free(lr);
    return r;
  }
  EVP_DigestInit_ex(lr->md, EVP_sha256(), NULL);
  struct archive *a = image_archive_reader();
  if (!a) {
    layer_reader_free(lr);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "archive_read_new");
  }
  if (archive_read_open(a, lr, NULL, layer_read, NULL) != ARCHIVE_OK) {
    int r = cr_error_set(err, CR_E_IMAGE_INVALID, archive_errno(a) > 0 ? archive_errno(a) : 0,
                         "cannot read '%s': %s", path, archive_error_string(a));
    archive_read_free(a);
    layer_reader_free(lr);
    return r;
  }
  *ret = a;
  *ret_lr = lr;
  return 0;
}

static int next_header(struct archive *a, struct archive_entry **e, const char *what,
                       cr_error **err) {
  int r = archive_read_next_header(a, e);
  if (r == ARCHIVE_EOF) return 0;
  if (r == ARCHIVE_OK || r == ARCHIVE_WARN) return 1;
  return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "reading %s: %s", what,
                      archive_error_string(a) ? archive_error_string(a) : "bad archive");
}

int image_archive_check(const void *data, size_t size, cr_error **err) {
  _cleanup_archive_ struct archive *a = image_archive_reader();
  if (!a) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "archive_read_new");
  if (archive_read_open_memory(a, data, size) != ARCHIVE_OK)
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "not an archive: %s",
                        archive_error_string(a));
  uint64_t entries = 0, bytes = 0;
  for (;;) {
    struct archive_entry *e;
    int r = next_header(a, &e, "archive", err);
    if (r <= 0) return r;
    checked_entry c = {0};
    r = check_entry(e, &entries, &bytes, &c, err);
    checked_entry_clear(&c);
    if (r < 0) return r;
  }
}

/* Fails when an existing parent of rel (inside x->root) is not a real
 * directory; stops at the first missing one. With check_last, the last
 * component is checked the same way. */
static int check_parents(image_extract *x, const char *rel, bool check_last,
                         const char *entry, cr_error **err) {
  _cleanup_free_ char *p = strdup(rel);
  if (!p) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "checking path");
  for (char *s = p;; s++) {
    bool last = *s == '\0';
    if (*s != '/' && !last) continue;
    if (last && !check_last) break;
    char saved = *s;
    *s = '\0';
    struct stat st;
    if (fstatat(x->root_fd, p, &st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT) return 0;
      return cr_error_set(err, CR_E_IO, errno, "checking '%s' for '%s'", p, entry);
    }
    if (S_ISLNK(st.st_mode))
      return cr_error_set(err, CR_E_IMAGE_UNSAFE_PATH, 0,
                          "archive entry '%s' would be written through the symlink '/%s'",
                          entry, p);
    if (!S_ISDIR(st.st_mode))
      return cr_error_set(err, CR_E_IMAGE_INVALID, 0,
                          "archive entry '%s': '/%s' is not a directory", entry, p);
    if (last) break;
    *s = saved;
  }
  return 0;
}

static int apply_whiteout(image_extract *x, const checked_entry *c, cr_error **err) {
  if (c->kind == KIND_WHITEOUT) {
    int r = check_parents(x, c->path, false, c->path, err);
    if (r < 0) return r;
    _cleanup_free_ char *full = cr_path_join(x->root, c->path);
    if (!full) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "whiteout");
    r = cr_rm_rf(full);
    if (r < 0) return cr_error_set(err, CR_E_IO, -r, "removing '/%s' (whiteout)", c->path);
    return 0;
  }
  /* opaque: empty the directory (its lower-layer content) */
  if (c->path[0]) {
    int r = check_parents(x, c->path, true, c->path, err);
    if (r < 0) return r;
  }
  int dfd = c->path[0] ? openat(x->root_fd, c->path,
                                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                       : openat(x->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    if (errno == ENOENT) return 0;
    return cr_error_set(err, CR_E_IO, errno, "opening '/%s' (opaque whiteout)", c->path);
  }
  DIR *d = fdopendir(dfd);
  if (!d) {
    close(dfd);
    return cr_error_set(err, CR_E_IO, errno, "opening '/%s'", c->path);
  }
  _cleanup_free_ char *dir = cr_path_join(x->root, c->path);
  struct dirent *de;
  int r = 0;
  while (dir && (de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    _cleanup_free_ char *child = cr_path_join(dir, de->d_name);
    int q = child ? cr_rm_rf(child) : -ENOMEM;
    if (q < 0) {
      r = cr_error_set(err, CR_E_IO, -q, "emptying '/%s' (opaque whiteout)", c->path);
      break;
    }
  }
  closedir(d);
  if (!dir) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "opaque whiteout");
  return r;
}

int image_extract_init(image_extract *x, const char *root, image_progress_fn progress,
                       void *userdata, cr_error **err) {
  *x = (image_extract){.root_fd = -1, .progress = progress, .userdata = userdata};
  x->root = realpath(root, NULL);
  if (!x->root) return cr_error_set(err, CR_E_IO, errno, "resolving '%s'", root);
  x->root_fd = open(x->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (x->root_fd < 0) {
    int r = cr_error_set(err, CR_E_IO, errno, "opening '%s'", x->root);
    image_extract_done(x);
    return r;
  }
  return 0;
}

void image_extract_done(image_extract *x) {
  if (x->root_fd >= 0) close(x->root_fd);
  x->root_fd = -1;
  free(x->root);
  x->root = NULL;
}

static int whiteout_pass(image_extract *x, const char *path, const char *expect_hex,
                         const char *phase, cr_error **err) {
  _cleanup_(layer_reader_freep) layer_reader *lr = NULL;
  _cleanup_archive_ struct archive *a = NULL;
  int r = open_archive_file(path, &a, &lr, err);
  if (r < 0) return r;
  uint64_t entries = 0, bytes = 0; /* counted in the extract pass */
  for (;;) {
    struct archive_entry *e;
    r = next_header(a, &e, phase, err);
    if (r < 0) return r;
    if (r == 0) return layer_reader_verify(lr, expect_hex, err);
    checked_entry c = {0};
    r = check_entry(e, &entries, &bytes, &c, err);
    if (r >= 0 && (c.kind == KIND_WHITEOUT || c.kind == KIND_OPAQUE))
      r = apply_whiteout(x, &c, err);
    checked_entry_clear(&c);
    if (r < 0) return r;
  }
}

static int copy_data(struct archive *in, struct archive *out, const char *name,
                     cr_error **err) {
  for (;;) {
    const void *buf;
    size_t size;
    la_int64_t off;
    int r = archive_read_data_block(in, &buf, &size, &off);
    if (r == ARCHIVE_EOF) return 0;
    if (r < ARCHIVE_WARN)
      return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "reading '%s': %s", name,
                          archive_error_string(in));
    if (archive_write_data_block(out, buf, size, off) < ARCHIVE_WARN)
      return cr_error_set(err, CR_E_IO, archive_errno(out) > 0 ? archive_errno(out) : 0,
                          "writing '%s': %s", name, archive_error_string(out));
  }
}

static void report(image_extract *x, const char *phase, struct archive *a, uint64_t total) {
  if (x->progress) x->progress(phase, (uint64_t)archive_filter_bytes(a, -1), total, x->userdata);
}

static int extract_layer(image_extract *x, const char *archive_path, const char *expect_hex,
                         bool apply_whiteouts, const char *phase, cr_error **err);

int image_extract_layer(image_extract *x, const char *archive_path, const char *expect_hex,
                        bool apply_whiteouts, const char *phase, cr_error **err) {
  int r = extract_layer(x, archive_path, expect_hex, apply_whiteouts, phase, err);
  if (r >= 0 || !expect_hex || !err || !*err ||
      strcmp(cr_error_reason(*err), CR_E_IMAGE_INVALID))
    return r;
  /* an unreadable layer: say whether it is simply not what the manifest names */
  char hex[65];
  if (cr_sha256_file(archive_path, hex) == 0 && strcmp(hex, expect_hex)) {
    cr_error_free(*err);
    *err = NULL;
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0,
                        "layer sha256:%s is corrupt: its content has sha256:%s", expect_hex, hex);
  }
  return r;
}

static int extract_layer(image_extract *x, const char *archive_path, const char *expect_hex,
                         bool apply_whiteouts, const char *phase, cr_error **err) {
  struct stat st;
  uint64_t total = stat(archive_path, &st) == 0 ? (uint64_t)st.st_size : 0;
  int r;
  if (apply_whiteouts) {
    r = whiteout_pass(x, archive_path, expect_hex, phase, err);
    if (r < 0) return r;
  }
  _cleanup_(layer_reader_freep) layer_reader *lr = NULL;
  _cleanup_archive_ struct archive *a = NULL;
  r = open_archive_file(archive_path, &a, &lr, err);
  if (r < 0) return r;
  _cleanup_archive_write_ struct archive *w = archive_write_disk_new();
  if (!w) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "archive_write_disk_new");
  /* Numeric owners: no lookup functions are installed. Absolute names
   * never come from the archive: each one is sanitized to a relative path
   * first and only then re-rooted under x->root (hence no NOABSOLUTEPATHS). */
  archive_write_disk_set_options(
      w, ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME |
             ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
             ARCHIVE_EXTRACT_SECURE_SYMLINKS);
  report(x, phase, a, total);
  uint64_t last = 0;
  for (;;) {
    struct archive_entry *e;
    r = next_header(a, &e, phase, err);
    if (r < 0) return r;
    if (r == 0) break;
    _cleanup_free_ char *orig = strdup(archive_entry_pathname(e) ? archive_entry_pathname(e) : "");
    checked_entry c = {0};
    r = check_entry(e, &x->entries, &x->bytes, &c, err);
    if (r < 0) return r;
    if (c.kind != KIND_NORMAL && c.kind != KIND_HARDLINK) {
      checked_entry_clear(&c);
      continue;
    }
    r = check_parents(x, c.path, false, orig, err);
    if (r >= 0 && c.kind == KIND_HARDLINK) {
      r = check_parents(x, c.target, false, orig, err);
      struct stat tst;
      if (r >= 0 && (fstatat(x->root_fd, c.target, &tst, AT_SYMLINK_NOFOLLOW) < 0 ||
                     S_ISDIR(tst.st_mode)))
        r = cr_error_set(err, CR_E_IMAGE_UNSAFE_PATH, 0,
                         "hardlink '%s' points to '%s', which is not an earlier file of the image",
                         orig, c.target);
    }
    if (r >= 0) {
      /* never write through a symlink left at the final name; a non-dir
       * replaces a whole lower-layer directory */
      struct stat fst;
      if (fstatat(x->root_fd, c.path, &fst, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISLNK(fst.st_mode)) {
          if (unlinkat(x->root_fd, c.path, 0) < 0)
            r = cr_error_set(err, CR_E_IO, errno, "replacing '/%s'", c.path);
        } else if (S_ISDIR(fst.st_mode) && (c.kind == KIND_HARDLINK ||
                                            archive_entry_filetype(e) != AE_IFDIR)) {
          _cleanup_free_ char *victim = cr_path_join(x->root, c.path);
          int q = victim ? cr_rm_rf(victim) : -ENOMEM;
          if (q < 0) r = cr_error_set(err, CR_E_IO, -q, "replacing '/%s'", c.path);
        }
      }
    }
    if (r < 0) {
      checked_entry_clear(&c);
      return r;
    }
    bool is_link = c.kind == KIND_HARDLINK;
    _cleanup_free_ char *full = cr_path_join(x->root, c.path);
    _cleanup_free_ char *ftarget = is_link ? cr_path_join(x->root, c.target) : NULL;
    checked_entry_clear(&c);
    if (!full || (is_link && !ftarget))
      return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "extracting");
    archive_entry_set_pathname(e, full);
    if (ftarget) archive_entry_set_hardlink(e, ftarget);
    r = archive_write_header(w, e);
    if (r < ARCHIVE_WARN)
      return cr_error_set(err, CR_E_IO,
                          archive_errno(w) > 0 ? archive_errno(w) : 0,
                          "extracting '%s': %s", orig, archive_error_string(w));
    if (archive_entry_size(e) > 0 && !ftarget) {
      r = copy_data(a, w, orig, err);
      if (r < 0) return r;
    }
    r = archive_write_finish_entry(w);
    if (r < ARCHIVE_WARN)
      return cr_error_set(err, CR_E_IO, archive_errno(w) > 0 ? archive_errno(w) : 0,
                          "finishing '%s': %s", orig, archive_error_string(w));
    uint64_t now = (uint64_t)archive_filter_bytes(a, -1);
    if (now - last >= (8u << 20)) {
      last = now;
      report(x, phase, a, total);
    }
  }
  if (archive_write_close(w) < ARCHIVE_WARN)
    return cr_error_set(err, CR_E_IO, 0, "finishing %s: %s", phase, archive_error_string(w));
  r = layer_reader_verify(lr, expect_hex, err);
  if (r < 0) return r;
  if (x->progress) x->progress(phase, total, total, x->userdata);
  return 0;
}

int image_extract_outer(const char *archive_path, const char *dir, cr_error **err) {
  image_extract x;
  int r = image_extract_init(&x, dir, NULL, NULL, err);
  if (r < 0) return r;
  _cleanup_(layer_reader_freep) layer_reader *lr = NULL;
  _cleanup_archive_ struct archive *a = NULL;
  _cleanup_archive_write_ struct archive *w = archive_write_disk_new();
  r = open_archive_file(archive_path, &a, &lr, err);
  if (r < 0 || !w) goto out;
  archive_write_disk_set_options(w, ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                        ARCHIVE_EXTRACT_SECURE_SYMLINKS);
  for (;;) {
    struct archive_entry *e;
    r = next_header(a, &e, archive_path, err);
    if (r <= 0) break;
    _cleanup_free_ char *orig = strdup(archive_entry_pathname(e) ? archive_entry_pathname(e) : "");
    checked_entry c = {0};
    r = check_entry(e, &x.entries, &x.bytes, &c, err);
    if (r < 0) break;
    mode_t t = archive_entry_filetype(e);
    if (c.kind == KIND_SKIP || (c.kind == KIND_NORMAL && t != AE_IFREG &&
                                t != AE_IFDIR && t != AE_IFLNK)) {
      checked_entry_clear(&c);
      continue;
    }
    if (c.kind != KIND_NORMAL) {
      r = cr_error_set(err, CR_E_IMAGE_INVALID, 0,
                       "unexpected entry '%s' in an image archive", orig);
      checked_entry_clear(&c);
      break;
    }
    r = check_parents(&x, c.path, true, orig, err);
    _cleanup_free_ char *full = r >= 0 ? cr_path_join(x.root, c.path) : NULL;
    checked_entry_clear(&c);
    if (r < 0) break;
    if (!full) {
      r = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "extracting");
      break;
    }
    archive_entry_set_pathname(e, full);
    archive_entry_set_perm(e, t == AE_IFDIR ? 0700 : 0600);
    if (archive_write_header(w, e) < ARCHIVE_WARN ||
        (archive_entry_size(e) > 0 && copy_data(a, w, orig, err) < 0) ||
        archive_write_finish_entry(w) < ARCHIVE_WARN) {
      r = cr_error_set(err, CR_E_IO, 0, "extracting '%s': %s", orig,
                       archive_error_string(w) ? archive_error_string(w) : "failed");
      break;
    }
  }
  if (r >= 0 && archive_write_close(w) < ARCHIVE_WARN)
    r = cr_error_set(err, CR_E_IO, 0, "extracting %s: %s", archive_path,
                     archive_error_string(w));
out:
  if (r >= 0 && !w) r = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "archive_write_disk_new");
  image_extract_done(&x);
  return r < 0 ? r : 0;
}

int image_resolve_inside(const char *dir, const char *rel, char **ret, cr_error **err) {
  _cleanup_free_ char *clean = NULL;
  int r = image_path_sanitize(rel, &clean, err);
  if (r < 0) return r;
  _cleanup_free_ char *root = realpath(dir, NULL);
  if (!root) return cr_error_set(err, CR_E_IO, errno, "resolving '%s'", dir);
  _cleanup_free_ char *joined = cr_path_join(root, clean);
  if (!joined) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "resolving");
  _cleanup_free_ char *real = realpath(joined, NULL);
  if (!real)
    return cr_error_set(err, CR_E_IMAGE_INVALID, errno, "image archive lacks '%s'", rel);
  size_t n = strlen(root);
  if (strncmp(real, root, n) != 0 || real[n] != '/')
    return cr_error_set(err, CR_E_IMAGE_UNSAFE_PATH, 0,
                        "'%s' resolves outside the image archive", rel);
  struct stat st;
  if (stat(real, &st) < 0 || !S_ISREG(st.st_mode))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "'%s' in the image archive is not a file", rel);
  *ret = TAKE_PTR(real);
  return 0;
}

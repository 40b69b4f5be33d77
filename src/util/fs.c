#include "util/fs.h"
#include "util/macro.h"

#include <dirent.h>
#include <endian.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int fsync_dir_of(const char *path) {
  _cleanup_free_ char *copy = strdup(path);
  if (!copy) return -ENOMEM;
  _cleanup_close_ int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return -errno;
  if (fsync(dfd) < 0) return -errno;
  return 0;
}

static int write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                        bool durable) {
  _cleanup_free_ char *tmp = NULL;
  if (asprintf(&tmp, "%s.tmp.%d", path, (int)getpid()) < 0) return -ENOMEM;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return -errno;
  const char *p = data;
  size_t left = len;
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      int r = -errno;
      close(fd);
      unlink(tmp);
      return r;
    }
    p += n;
    left -= (size_t)n;
  }
  if ((durable && fsync(fd) < 0) || close(fd) < 0) {
    int r = -errno;
    unlink(tmp);
    return r;
  }
  if (rename(tmp, path) < 0) {
    int r = -errno;
    unlink(tmp);
    return r;
  }
  return durable ? fsync_dir_of(path) : 0;
}

int cr_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode) {
  return write_atomic(path, data, len, mode, true);
}

int cr_write_file_replace(const char *path, const void *data, size_t len, mode_t mode) {
  return write_atomic(path, data, len, mode, false);
}

int cr_read_file(const char *path, size_t max, char **ret_buf, size_t *ret_len) {
  _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  size_t cap = 4096, len = 0;
  _cleanup_free_ char *buf = malloc(cap + 1);
  if (!buf) return -ENOMEM;
  for (;;) {
    if (len == cap) {
      if (cap > max) return -EFBIG;
      size_t ncap = cap * 2;
      char *nb = realloc(buf, ncap + 1);
      if (!nb) return -ENOMEM;
      buf = nb;
      cap = ncap;
    }
    ssize_t n = read(fd, buf + len, cap - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    len += (size_t)n;
    if (len > max) return -EFBIG;
  }
  buf[len] = '\0';
  *ret_buf = TAKE_PTR(buf);
  if (ret_len) *ret_len = len;
  return 0;
}

int cr_read_file_tail(const char *path, size_t max, char **ret_buf, size_t *ret_len) {
  _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  off_t start = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
  size_t want = (size_t)(st.st_size - start);
  char *buf = malloc(want + 1);
  if (!buf) return -ENOMEM;
  size_t len = 0;
  while (len < want) {
    ssize_t n = pread(fd, buf + len, want - len, start + (off_t)len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
  }
  buf[len] = '\0';
  *ret_buf = buf;
  if (ret_len) *ret_len = len;
  return 0;
}

int cr_mkdir_p(const char *path, mode_t mode) {
  _cleanup_free_ char *p = strdup(path);
  if (!p) return -ENOMEM;
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = '\0';
    if (mkdir(p, mode) < 0 && errno != EEXIST) return -errno;
    *s = '/';
  }
  if (mkdir(p, mode) < 0 && errno != EEXIST) return -errno;
  return 0;
}

static int rm_rf_at(int parent, const char *name) {
  struct stat st;
  if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return errno == ENOENT ? 0 : -errno;
  if (S_ISDIR(st.st_mode)) {
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
      int r = -errno;
      close(fd);
      return r;
    }
    struct dirent *de;
    int r = 0;
    while ((de = readdir(d))) {
      if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
      int q = rm_rf_at(dirfd(d), de->d_name);
      if (q < 0 && r == 0) r = q;
    }
    closedir(d);
    if (r < 0) return r;
    if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT) return -errno;
    return 0;
  }
  if (unlinkat(parent, name, 0) < 0 && errno != ENOENT) return -errno;
  return 0;
}

int cr_rm_rf(const char *path) { return rm_rf_at(AT_FDCWD, path); }

void cr_sha256_hex(const void *data, size_t len, char ret_hex[65]) {
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
  for (unsigned i = 0; i < 32; i++) snprintf(ret_hex + 2 * i, 3, "%02x", md[i]);
  ret_hex[64] = '\0';
}

int cr_sha256_file(const char *path, char ret_hex[65]) {
  _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (!ctx) return -ENOMEM;
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int r = -errno;
      EVP_MD_CTX_free(ctx);
      return r;
    }
    if (n == 0) break;
    EVP_DigestUpdate(ctx, buf, (size_t)n);
  }
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_DigestFinal_ex(ctx, md, &mdlen);
  EVP_MD_CTX_free(ctx);
  for (unsigned i = 0; i < 32; i++) snprintf(ret_hex + 2 * i, 3, "%02x", md[i]);
  ret_hex[64] = '\0';
  return 0;
}

int cr_sha256_file_data(const char *path, char ret_hex[65]) {
  _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  const size_t bufsz = 1 << 20;
  _cleanup_free_ char *buf = malloc(bufsz);
  EVP_MD_CTX *ctx = buf ? EVP_MD_CTX_new() : NULL;
  if (!ctx) return -ENOMEM;
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  int r = 0;
  off_t off = 0;
  while (off < st.st_size) {
    off_t data = lseek(fd, off, SEEK_DATA);
    if (data < 0) {
      if (errno != ENXIO) r = -errno;
      break;
    }
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) {
      r = -errno;
      break;
    }
    uint64_t hdr[2] = {htole64((uint64_t)data), htole64((uint64_t)(hole - data))};
    EVP_DigestUpdate(ctx, hdr, sizeof(hdr));
    for (off = data; off < hole;) {
      size_t want = (size_t)(hole - off) < bufsz ? (size_t)(hole - off) : bufsz;
      ssize_t n = pread(fd, buf, want, off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        r = n < 0 ? -errno : -EIO;
        break;
      }
      EVP_DigestUpdate(ctx, buf, (size_t)n);
      off += n;
    }
    if (r < 0) break;
  }
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_DigestFinal_ex(ctx, md, &mdlen);
  EVP_MD_CTX_free(ctx);
  if (r < 0) return r;
  for (unsigned i = 0; i < 32; i++) snprintf(ret_hex + 2 * i, 3, "%02x", md[i]);
  ret_hex[64] = '\0';
  return 0;
}

/* One data extent [off, end) of in into out at the same offset: 0 or
 * -errno. *use_cfr drops to false (read/write from then on) when the
 * kernel or the filesystems cannot copy_file_range this pair. */
static int copy_extent(int in, int out, off_t off, off_t end, bool *use_cfr, char **buf) {
  while (off < end && *use_cfr) {
    loff_t a = off, b = off;
    ssize_t n = copy_file_range(in, &a, out, &b, (size_t)MIN((off_t)(1 << 30), end - off), 0);
    if (n > 0) {
      off += n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP ||
                         errno == EINVAL)) {
      *use_cfr = false;
    } else {
      return n < 0 ? -errno : -EIO; /* 0: the source shrank under us */
    }
  }
  if (off < end && !*buf && !(*buf = malloc(1 << 20))) return -ENOMEM;
  while (off < end) {
    size_t want = (size_t)MIN((off_t)(1 << 20), end - off);
    ssize_t n = pread(in, *buf, want, off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? -errno : -EIO;
    if (pwrite(out, *buf, (size_t)n, off) != n) return -EIO;
    off += n;
  }
  return 0;
}

int cr_copy_data_extents(int in, int out, off_t size) {
  _cleanup_free_ char *buf = NULL;
  bool use_cfr = true;
  for (off_t pos = 0; pos < size;) {
    off_t data = lseek(in, pos, SEEK_DATA);
    if (data < 0) return errno == ENXIO ? 0 : -errno; /* ENXIO: only a hole remains */
    off_t hole = lseek(in, data, SEEK_HOLE);
    if (hole < 0) return -errno;
    int r = copy_extent(in, out, data, hole, &use_cfr, &buf);
    if (r < 0) return r;
    pos = hole;
  }
  return 0;
}

int cr_copy_file_sparse(const char *src, const char *dst, mode_t mode, unsigned flags) {
  _cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
  if (in < 0) return -errno;
  struct stat st;
  if (fstat(in, &st) < 0) return -errno;
  _cleanup_close_ int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (out < 0) return -errno;
  int r = ftruncate(out, st.st_size) < 0 ? -errno : cr_copy_data_extents(in, out, st.st_size);
  if (r == 0 && !(flags & CR_COPY_NO_SYNC) && fsync(out) < 0) r = -errno;
  if (r < 0) unlink(dst);
  return r;
}

int cr_copy_file_clone(const char *src, const char *dst, mode_t mode, unsigned flags) {
  {
    _cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return -errno;
    _cleanup_close_ int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (out < 0) return -errno;
    if (ioctl(out, FICLONE, in) == 0) return 0;
  }
  unlink(dst); /* no reflinks on this filesystem: copy the data extents */
  return cr_copy_file_sparse(src, dst, mode, flags);
}

char *cr_file_identity(const char *path) {
  struct stat st;
  char *s = NULL;
  if (!path || stat(path, &st) < 0) return NULL;
  if (asprintf(&s, "%s %lld %lld.%09ld", path, (long long)st.st_size,
               (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec) < 0)
    return NULL;
  return s;
}

char *cr_find_in_path(const char *prog) {
  if (strchr(prog, '/')) return strdup(prog);
  const char *path = getenv("PATH");
  if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
  _cleanup_free_ char *copy = strdup(path);
  if (!copy) return NULL;
  char *save = NULL;
  for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    char *p = cr_path_join(*d ? d : ".", prog);
    if (p && access(p, X_OK) == 0) return p;
    free(p);
  }
  return NULL;
}

char *cr_path_join(const char *a, const char *b) {
  char *r = NULL;
  size_t la = strlen(a);
  if (asprintf(&r, "%s%s%s", a, (la && a[la - 1] == '/') ? "" : "/", b) < 0) return NULL;
  return r;
}

char *cr_escape_commas(const char *s) {
  size_t n = 0;
  for (const char *p = s; *p; p++) n += *p == ',' ? 2 : 1;
  char *r = malloc(n + 1), *w = r;
  if (!r) return NULL;
  for (const char *p = s; *p; p++) {
    *w++ = *p;
    if (*p == ',') *w++ = ',';
  }
  *w = '\0';
  return r;
}

/* A small ustar reader/writer for TAR_OUT/TAR_IN.
 *
 * Writer: regular files, directories, symlinks; names longer than ustar
 * allows use GNU 'L'/'K' records. Reader: ustar, GNU 'L'/'K', pax 'x'
 * (path, linkpath, size, mtime); regular files, dirs, symlinks, hard links
 * (inside the tree); other types are skipped. Absolute names, `..` and
 * writing through a symlink are refused. Runs in a child process. */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLK 512
#define TAR_MAX_DEPTH 256
#define TAR_MAX_ENTRIES 1000000
#define TAR_MAX_PAX (1u << 20)

static int fail(char *err, size_t errlen, int e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int e, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -e;
}

static int write_all(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n) {
    ssize_t w = write(fd, b, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Reads exactly n bytes; returns bytes read (< n only at EOF) or -errno. */
static ssize_t read_full(int fd, void *p, size_t n) {
  uint8_t *b = p;
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, b + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

/* ---------------------------------------------------------------- writer */

/* Octal into a field of w bytes (w-1 digits + NUL); base-256 when too big. */
static void put_num(char *f, size_t w, uint64_t v) {
  uint64_t lim = 1;
  for (size_t i = 0; i < w - 1; i++) lim *= 8;
  if (v < lim) {
    f[w - 1] = '\0';
    for (size_t i = w - 1; i-- > 0;) {
      f[i] = (char)('0' + (v & 7));
      v >>= 3;
    }
    return;
  }
  memset(f, 0, w);
  for (size_t i = w; i-- > 1;) {
    f[i] = (char)(v & 0xff);
    v >>= 8;
  }
  f[0] = (char)0x80;
}

struct hdr_info {
  char type;
  mode_t mode;
  uid_t uid;
  gid_t gid;
  uint64_t size;
  int64_t mtime;
};

static void fill_header(uint8_t *b, const char *name, const char *link,
                        const struct hdr_info *h) {
  memset(b, 0, BLK);
  char *c = (char *)b;
  memcpy(c, name, MINZ(strlen(name), 100));
  put_num(c + 100, 8, h->mode & 07777);
  put_num(c + 108, 8, h->uid);
  put_num(c + 116, 8, h->gid);
  put_num(c + 124, 12, h->size);
  put_num(c + 136, 12, h->mtime < 0 ? 0 : (uint64_t)h->mtime);
  c[156] = h->type;
  if (link) memcpy(c + 157, link, MINZ(strlen(link), 100));
  memcpy(c + 257, "ustar", 6);
  memcpy(c + 263, "00", 2);
  memset(c + 148, ' ', 8);
  unsigned sum = 0;
  for (int i = 0; i < BLK; i++) sum += b[i];
  put_num(c + 148, 7, sum);
  c[155] = ' ';
}

static int put_long(int out, char type, const char *s) {
  uint8_t b[BLK];
  size_t n = strlen(s) + 1;
  struct hdr_info h = {.type = type, .mode = 0644, .size = n};
  fill_header(b, "././@LongLink", NULL, &h);
  int r = write_all(out, b, BLK);
  if (r < 0) return r;
  r = write_all(out, s, n);
  if (r < 0) return r;
  size_t pad = (BLK - n % BLK) % BLK;
  memset(b, 0, sizeof(b));
  return write_all(out, b, pad);
}

static int put_header(int out, const char *name, const char *link,
                      const struct hdr_info *h) {
  int r;
  if (strlen(name) > 100 && (r = put_long(out, 'L', name)) < 0) return r;
  if (link && strlen(link) > 100 && (r = put_long(out, 'K', link)) < 0) return r;
  uint8_t b[BLK];
  fill_header(b, name, link, h);
  return write_all(out, b, BLK);
}

static int copy_file(int out, int fd, uint64_t size) {
  static uint8_t buf[AP_CHUNK];
  uint64_t left = size;
  while (left) {
    size_t want = (size_t)MINZ((uint64_t)sizeof(buf), left);
    ssize_t r = read(fd, buf, want);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -errno;
    if (r == 0) { /* shrank: pad with zeros to the size in the header */
      memset(buf, 0, want);
      r = (ssize_t)want;
    }
    int w = write_all(out, buf, (size_t)r);
    if (w < 0) return w;
    left -= (uint64_t)r;
  }
  size_t pad = (size_t)((BLK - size % BLK) % BLK);
  memset(buf, 0, BLK);
  return write_all(out, buf, pad);
}

/* Does not descend into directories of other filesystems (like tar
 * --one-file-system): /proc, /sys, /dev, /tmp mounted in the root stay out. */
static int walk(int dfd, const char *prefix, int out, int depth, dev_t dev,
                char *err, size_t errlen) {
  if (depth > TAR_MAX_DEPTH) return fail(err, errlen, ELOOP, "%s: too deep", prefix);
  DIR *d = fdopendir(dfd);
  if (!d) {
    int e = errno;
    close(dfd);
    return fail(err, errlen, e, "%s: %s", prefix, strerror(e));
  }
  int r = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
    char name[PATH_MAX + 2];
    int k = snprintf(name, sizeof(name), "%s%s%s", prefix, e->d_name,
                     S_ISDIR(st.st_mode) ? "/" : "");
    if (k < 0 || (size_t)k >= PATH_MAX) {
      r = fail(err, errlen, ENAMETOOLONG, "%s%s: name too long", prefix, e->d_name);
      break;
    }
    struct hdr_info h = {.mode = st.st_mode, .uid = st.st_uid, .gid = st.st_gid,
                         .mtime = st.st_mtim.tv_sec};
    if (S_ISDIR(st.st_mode)) {
      h.type = '5';
      if ((r = put_header(out, name, NULL, &h)) < 0) break;
      if (st.st_dev != dev) continue; /* a mount point */
      int sub = openat(dirfd(d), e->d_name,
                       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) continue; /* vanished */
      if ((r = walk(sub, name, out, depth + 1, dev, err, errlen)) < 0) break;
    } else if (S_ISREG(st.st_mode)) {
      int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) continue;
      h.type = '0';
      h.size = (uint64_t)st.st_size;
      r = put_header(out, name, NULL, &h);
      if (r >= 0) r = copy_file(out, fd, h.size);
      close(fd);
      if (r < 0) break;
    } else if (S_ISLNK(st.st_mode)) {
      char t[PATH_MAX];
      ssize_t m = readlinkat(dirfd(d), e->d_name, t, sizeof(t) - 1);
      if (m < 0) continue;
      t[m] = '\0';
      h.type = '2';
      if ((r = put_header(out, name, t, &h)) < 0) break;
    }
  }
  closedir(d);
  if (r < 0 && !err[0]) fail(err, errlen, -r, "writing tar: %s", strerror(-r));
  return r;
}

int agent_tar_write(int dirfd_in, int outfd, char *err, size_t errlen) {
  int dfd = openat(dirfd_in, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return fail(err, errlen, errno, "opening directory: %s", strerror(errno));
  struct stat st;
  if (fstat(dfd, &st) < 0) {
    int e = errno;
    close(dfd);
    return fail(err, errlen, e, "stat: %s", strerror(e));
  }
  int r = walk(dfd, "", outfd, 0, st.st_dev, err, errlen);
  if (r < 0) return r;
  uint8_t z[2 * BLK];
  memset(z, 0, sizeof(z));
  r = write_all(outfd, z, sizeof(z));
  if (r < 0) return fail(err, errlen, -r, "writing tar: %s", strerror(-r));
  return 0;
}

/* ---------------------------------------------------------------- reader */

static uint64_t get_num(const uint8_t *f, size_t w) {
  if (f[0] & 0x80) { /* base-256 */
    uint64_t v = f[0] & 0x7f;
    for (size_t i = 1; i < w; i++) v = (v << 8) | f[i];
    return v;
  }
  uint64_t v = 0;
  size_t i = 0;
  while (i < w && (f[i] == ' ' || f[i] == '\0')) i++;
  for (; i < w && f[i] >= '0' && f[i] <= '7'; i++) v = (v << 3) | (uint64_t)(f[i] - '0');
  return v;
}

static int checksum_ok(const uint8_t *b) {
  unsigned sum = 0;
  for (int i = 0; i < BLK; i++) sum += (i >= 148 && i < 156) ? ' ' : b[i];
  return get_num(b + 148, 8) == sum;
}

static int skip_bytes(int fd, uint64_t n) {
  uint8_t buf[4096];
  while (n) {
    size_t want = (size_t)MINZ((uint64_t)sizeof(buf), n);
    ssize_t r = read_full(fd, buf, want);
    if (r < 0) return (int)r;
    if ((size_t)r < want) return -EIO;
    n -= want;
  }
  return 0;
}

static uint64_t padded(uint64_t n) { return (n + BLK - 1) / BLK * BLK; }

/* Reads a long-name/pax record body (bounded) into a new NUL-terminated buffer. */
static int read_body(int fd, uint64_t size, uint64_t max, char **ret) {
  if (size > max) return -ENAMETOOLONG;
  char *b = malloc((size_t)size + 1);
  if (!b) return -ENOMEM;
  ssize_t r = read_full(fd, b, (size_t)size);
  if (r < 0 || (uint64_t)r < size) {
    free(b);
    return r < 0 ? (int)r : -EIO;
  }
  b[size] = '\0';
  int k = skip_bytes(fd, padded(size) - size);
  if (k < 0) {
    free(b);
    return k;
  }
  *ret = b;
  return 0;
}

struct pax {
  char *path, *linkpath;
  int has_size, has_mtime;
  uint64_t size;
  int64_t mtime;
};

static void pax_parse(char *b, size_t n, struct pax *px) {
  size_t off = 0;
  while (off < n) {
    char *end;
    unsigned long len = strtoul(b + off, &end, 10);
    if (end == b + off || *end != ' ' || len == 0 || len > n - off) return;
    char *rec = end + 1;
    char *recend = b + off + len - 1; /* the '\n' */
    if (recend < rec || *recend != '\n') return;
    *recend = '\0';
    char *eq = strchr(rec, '=');
    if (eq) {
      *eq = '\0';
      const char *v = eq + 1;
      if (strcmp(rec, "path") == 0) {
        free(px->path);
        px->path = strdup(v);
      } else if (strcmp(rec, "linkpath") == 0) {
        free(px->linkpath);
        px->linkpath = strdup(v);
      } else if (strcmp(rec, "size") == 0) {
        px->size = strtoull(v, NULL, 10);
        px->has_size = 1;
      } else if (strcmp(rec, "mtime") == 0) {
        px->mtime = strtoll(v, NULL, 10);
        px->has_mtime = 1;
      }
    }
    off += len;
  }
}

/* Normalizes an entry name into out ("a/b/c"); refuses absolute and "..".
 * Returns 0, 1 for "the directory itself", or -EPERM. */
static int clean_name(const char *in, char *out, size_t outlen) {
  if (in[0] == '/') return -EPERM;
  size_t o = 0;
  const char *p = in;
  while (*p) {
    const char *s = strchr(p, '/');
    size_t len = s ? (size_t)(s - p) : strlen(p);
    if (len == 2 && p[0] == '.' && p[1] == '.') return -EPERM;
    if (len && !(len == 1 && p[0] == '.')) {
      if (o + len + 2 > outlen) return -ENAMETOOLONG;
      if (o) out[o++] = '/';
      memcpy(out + o, p, len);
      o += len;
    }
    if (!s) break;
    p = s + 1;
  }
  out[o] = '\0';
  return o ? 0 : 1;
}

#define SAFE_RESOLVE (AGENT_RESOLVE_NO_SYMLINKS | AGENT_RESOLVE_BENEATH)

/* Opens (creating as needed) the parent directory of `name` under root,
 * never through a symlink. *base points into name. */
static int open_parent(int root, char *name, const char **base, char *err,
                       size_t errlen) {
  char *slash = strrchr(name, '/');
  if (!slash) {
    *base = name;
    return fcntl(root, F_DUPFD_CLOEXEC, 3);
  }
  *slash = '\0';
  *base = slash + 1;
  int fd = fcntl(root, F_DUPFD_CLOEXEC, 3);
  char *p = name;
  while (fd >= 0) {
    char *s = strchr(p, '/');
    if (s) *s = '\0';
    if (mkdirat(fd, p, 0755) < 0 && errno != EEXIST) {
      int e = errno;
      close(fd);
      if (s) *s = '/';
      *slash = '/';
      return fail(err, errlen, e, "%s: %s", name, strerror(e));
    }
    int nfd = agent_openat2(fd, p, O_PATH | O_DIRECTORY, 0, SAFE_RESOLVE);
    int e = errno;
    close(fd);
    if (s) *s = '/';
    if (nfd < 0) {
      *slash = '/';
      if (e == ELOOP || e == EXDEV)
        return fail(err, errlen, EPERM, "%s: refusing to write through a symlink", name);
      return fail(err, errlen, e, "%s: %s", name, strerror(e));
    }
    fd = nfd;
    if (!s) break;
    p = s + 1;
  }
  *slash = '/';
  return fd;
}

static void remove_existing(int pfd, const char *base) {
  struct stat st;
  if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode))
    unlinkat(pfd, base, 0);
}

int agent_tar_extract(int root, int infd, char *err, size_t errlen) {
  uint8_t b[BLK];
  char *longname = NULL, *longlink = NULL;
  struct pax px = {0};
  int r = 0;
  for (unsigned long entries = 0;; entries++) {
    if (entries > TAR_MAX_ENTRIES) {
      r = fail(err, errlen, E2BIG, "too many tar entries");
      break;
    }
    ssize_t k = read_full(infd, b, BLK);
    if (k < 0) {
      r = fail(err, errlen, (int)-k, "reading tar: %s", strerror((int)-k));
      break;
    }
    if (k == 0) break; /* lenient: EOF without the end blocks */
    if (k < BLK) {
      r = fail(err, errlen, EIO, "truncated tar header");
      break;
    }
    int zero = 1;
    for (int i = 0; i < BLK && zero; i++) zero = b[i] == 0;
    if (zero) break;
    if (!checksum_ok(b)) {
      r = fail(err, errlen, EINVAL, "bad tar header checksum");
      break;
    }
    char type = (char)b[156];
    uint64_t size = get_num(b + 124, 12);
    if (type == 'L' || type == 'K' || type == 'x' || type == 'g') {
      char *body = NULL;
      int q = read_body(infd, size, type == 'x' || type == 'g' ? TAR_MAX_PAX : PATH_MAX,
                        &body);
      if (q < 0) {
        r = fail(err, errlen, -q, "bad tar extension record: %s", strerror(-q));
        break;
      }
      if (type == 'L') { free(longname); longname = body; }
      else if (type == 'K') { free(longlink); longlink = body; }
      else if (type == 'x') { pax_parse(body, (size_t)size, &px); free(body); }
      else free(body);
      continue;
    }
    /* assemble the entry */
    char raw[PATH_MAX + 256];
    if (px.path) snprintf(raw, sizeof(raw), "%s", px.path);
    else if (longname) snprintf(raw, sizeof(raw), "%s", longname);
    else if (memcmp(b + 257, "ustar", 5) == 0 && b[345])
      snprintf(raw, sizeof(raw), "%.155s/%.100s", (char *)b + 345, (char *)b + 0);
    else
      snprintf(raw, sizeof(raw), "%.100s", (char *)b);
    char link[PATH_MAX];
    if (px.linkpath) snprintf(link, sizeof(link), "%s", px.linkpath);
    else if (longlink) snprintf(link, sizeof(link), "%s", longlink);
    else snprintf(link, sizeof(link), "%.100s", (char *)b + 157);
    if (px.has_size) size = px.size;
    int64_t mtime = px.has_mtime ? px.mtime : (int64_t)get_num(b + 136, 12);
    mode_t mode = (mode_t)get_num(b + 100, 8) & 07777;
    free(longname); longname = NULL;
    free(longlink); longlink = NULL;
    free(px.path); free(px.linkpath);
    memset(&px, 0, sizeof(px));
    uint64_t datalen = (type == '1' || type == '2' || type == '5') ? 0 : size;

    char name[PATH_MAX];
    int c = clean_name(raw, name, sizeof(name));
    if (c < 0) {
      r = fail(err, errlen, c == -EPERM ? EPERM : -c, "%s: unsafe name in tar", raw);
      break;
    }
    if (c == 1) { /* the directory itself */
      if ((r = skip_bytes(infd, padded(datalen))) < 0) break;
      continue;
    }
    const char *base;
    int pfd = open_parent(root, name, &base, err, errlen);
    if (pfd < 0) {
      r = pfd;
      break;
    }
    struct timespec ts[2] = {{0, UTIME_OMIT}, {mtime, 0}};
    if (type == '0' || type == '\0' || type == '7') {
      remove_existing(pfd, base);
      int fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                      mode);
      if (fd < 0) {
        int e = errno;
        close(pfd);
        r = fail(err, errlen, e, "%s: %s", name, strerror(e));
        break;
      }
      static uint8_t buf[AP_CHUNK];
      uint64_t left = size;
      while (left && r >= 0) {
        size_t want = (size_t)MINZ((uint64_t)sizeof(buf), left);
        ssize_t q = read_full(infd, buf, want);
        if (q < 0 || (size_t)q < want) {
          r = fail(err, errlen, EIO, "%s: truncated tar data", name);
          break;
        }
        int w = write_all(fd, buf, want);
        if (w < 0) r = fail(err, errlen, -w, "%s: %s", name, strerror(-w));
        left -= want;
      }
      if (r >= 0) {
        fchmod(fd, mode);
        futimens(fd, ts);
      }
      close(fd);
      close(pfd);
      if (r < 0) break;
      if ((r = skip_bytes(infd, padded(size) - size)) < 0) {
        fail(err, errlen, EIO, "truncated tar");
        break;
      }
      continue;
    }
    if (type == '5') {
      if (mkdirat(pfd, base, mode | 0700) < 0 && errno != EEXIST) {
        int e = errno;
        close(pfd);
        r = fail(err, errlen, e, "%s: %s", name, strerror(e));
        break;
      }
      int dfd = agent_openat2(pfd, base, O_RDONLY | O_DIRECTORY, 0, SAFE_RESOLVE);
      if (dfd < 0) {
        int e = errno;
        close(pfd);
        r = fail(err, errlen, e == ELOOP ? EPERM : e, "%s: %s", name,
                 e == ELOOP ? "is a symlink" : strerror(e));
        break;
      }
      fchmod(dfd, mode);
      close(dfd);
    } else if (type == '2') {
      remove_existing(pfd, base);
      if (symlinkat(link, pfd, base) < 0) {
        int e = errno;
        close(pfd);
        r = fail(err, errlen, e, "%s: %s", name, strerror(e));
        break;
      }
      utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW);
    } else if (type == '1') {
      char tgt[PATH_MAX];
      if (clean_name(link, tgt, sizeof(tgt)) != 0) {
        close(pfd);
        r = fail(err, errlen, EPERM, "%s: unsafe hard link target %s", name, link);
        break;
      }
      int tfd = agent_openat2(root, tgt, O_PATH | O_NOFOLLOW, 0, SAFE_RESOLVE);
      remove_existing(pfd, base);
      if (tfd < 0 || linkat(tfd, "", pfd, base, AT_EMPTY_PATH) < 0) {
        int e = errno;
        if (tfd >= 0) close(tfd);
        close(pfd);
        r = fail(err, errlen, e, "%s: hard link to %s: %s", name, link, strerror(e));
        break;
      }
      close(tfd);
    } else {
      /* devices, fifos, ...: skipped */
      if ((r = skip_bytes(infd, padded(size))) < 0) {
        close(pfd);
        fail(err, errlen, EIO, "truncated tar");
        break;
      }
    }
    close(pfd);
  }
  free(longname);
  free(longlink);
  free(px.path);
  free(px.linkpath);
  return r;
}

/* File operations, resolved inside the merged root with openat2
 * (RESOLVE_IN_ROOT): "..", absolute symlinks and absolute paths all stay
 * inside the guest's root. */
#include "agent.h"
#include "util/reasons.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IN_ROOT (AGENT_RESOLVE_IN_ROOT | AGENT_RESOLVE_NO_MAGICLINKS)

static const char *reason_for(int e) {
  return (e == ENOENT || e == ENOTDIR) ? CR_E_FILE_NOT_FOUND : CR_E_FILE_ERROR;
}

uint32_t agent_ftype(mode_t m) {
  if (S_ISREG(m)) return AP_FT_FILE;
  if (S_ISDIR(m)) return AP_FT_DIR;
  if (S_ISLNK(m)) return AP_FT_SYMLINK;
  return AP_FT_OTHER;
}

static uint64_t mtime_ns(const struct stat *st) {
  return (uint64_t)st->st_mtim.tv_sec * 1000000000u + (uint64_t)st->st_mtim.tv_nsec;
}

/* Gets the PATH field; sends ERROR and returns NULL when absent/bad. */
static char *get_path(uint32_t ch, const uint8_t *p, size_t n, const char *op) {
  char *path = NULL;
  int r = agent_get_str(p, n, AP_T_PATH, &path);
  if (r <= 0 || !path[0] || strlen(path) >= PATH_MAX) {
    agent_send_error(ch, CR_E_INVALID_ARGUMENT, 0, "%s: missing or bad PATH", op);
    free(path);
    return NULL;
  }
  return path;
}

/* Splits "a/b/c" into dir "a/b" and base "c" (in place). */
static int split_path(char *path, const char **dir, const char **base) {
  size_t l = strlen(path);
  while (l > 1 && path[l - 1] == '/') path[--l] = '\0';
  char *s = strrchr(path, '/');
  if (!s) {
    *dir = ".";
    *base = path;
  } else {
    *s = '\0';
    *dir = s == path ? "/" : path;
    *base = s + 1;
  }
  if (!**base || strcmp(*base, ".") == 0 || strcmp(*base, "..") == 0) return -EINVAL;
  return 0;
}

int agent_mkdir_p_in(int rootfd, const char *path, mode_t mode) {
  char buf[PATH_MAX];
  if (strlen(path) >= sizeof(buf)) return -ENAMETOOLONG;
  snprintf(buf, sizeof(buf), "%s", path);
  char *p = buf;
  while (*p == '/') p++;
  for (;;) {
    char *slash = strchr(p, '/');
    if (slash) *slash = '\0';
    if (*p) {
      /* parent = buf up to p */
      char save = *p;
      *p = '\0';
      int dfd = agent_openat2(rootfd, buf[0] ? buf : ".", O_PATH | O_DIRECTORY, 0,
                              IN_ROOT);
      *p = save;
      if (dfd < 0) return -errno;
      int r = mkdirat(dfd, p, mode);
      int e = errno;
      close(dfd);
      if (r < 0 && e != EEXIST) return -e;
    }
    if (!slash) break;
    *slash = '/';
    p = slash + 1;
  }
  return 0;
}

/* ---------------------------------------------------------------- read */

void agent_file_read_start(uint32_t ch, const uint8_t *p, size_t n) {
  char *path = get_path(ch, p, n, "file_read");
  if (!path) return;
  uint64_t off = 0, len = 0;
  if (agent_get_u64(p, n, AP_T_OFFSET, &off) < 0 ||
      agent_get_u64(p, n, AP_T_LENGTH, &len) < 0) {
    agent_send_error(ch, CR_E_INVALID_ARGUMENT, 0, "file_read: bad OFFSET/LENGTH");
    free(path);
    return;
  }
  /* O_NONBLOCK: opening a FIFO must not block the agent */
  int fd = agent_openat2(agent_root_fd(), path, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0,
                         IN_ROOT);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    int e = errno;
    agent_send_error(ch, reason_for(e), e, "%s: %s", path, strerror(e));
    if (fd >= 0) close(fd);
    free(path);
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    int e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    agent_send_error(ch, CR_E_FILE_ERROR, e, "%s: not a regular file", path);
    close(fd);
    free(path);
    return;
  }
  free(path);
  agent_chan *c = agent_chan_new(ch, AGENT_CH_FILE_READ);
  if (!c) {
    close(fd);
    agent_send_error(ch, CR_E_INTERNAL, ENOMEM, "out of memory");
    return;
  }
  c->fd = fd;
  c->size = (uint64_t)st.st_size;
  c->written = off; /* read offset */
  c->remaining = len ? len : UINT64_MAX;
}

void agent_file_read_pump(agent_chan *c) {
  static uint8_t buf[AP_CHUNK];
  for (int i = 0; i < 16 && agent_out_pending() < AGENT_OUT_HIGH; i++) {
    size_t want = (size_t)MINZ((uint64_t)sizeof(buf), c->remaining);
    ssize_t r = want ? pread(c->fd, buf, want, (off_t)c->written) : 0;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      agent_send_error(c->id, CR_E_FILE_ERROR, e, "read: %s", strerror(e));
      agent_chan_free(c);
      return;
    }
    if (r == 0) {
      ap_frame_begin(agent_out(), AP_OK, c->id);
      ap_put_u64(agent_out(), AP_T_SIZE, c->size);
      ap_frame_end(agent_out());
      agent_chan_free(c);
      return;
    }
    agent_send_raw(AP_DATA, c->id, buf, (size_t)r);
    c->written += (uint64_t)r;
    c->remaining -= (uint64_t)r;
  }
}

/* ---------------------------------------------------------------- write */

void agent_file_write_start(uint32_t ch, const uint8_t *p, size_t n) {
  char *path = get_path(ch, p, n, "file_write");
  if (!path) return;
  uint32_t mode = 0644, flags = 0;
  if (agent_get_u32(p, n, AP_T_MODE, &mode) < 0 ||
      agent_get_u32(p, n, AP_T_FLAGS, &flags) < 0) {
    agent_send_error(ch, CR_E_INVALID_ARGUMENT, 0, "file_write: bad MODE/FLAGS");
    free(path);
    return;
  }
  mode &= 07777;
  char *full = strdup(path);
  const char *dir, *base;
  int rootfd = agent_root_fd();
  int dfd = -1, fd = -1, e = 0;
  char tmp[64] = "";
  static unsigned counter;
  if (!full || split_path(path, &dir, &base) < 0) {
    agent_send_error(ch, CR_E_INVALID_ARGUMENT, EINVAL, "file_write: bad path");
    goto out;
  }
  if (flags & AP_F_PARENTS) {
    int r = agent_mkdir_p_in(rootfd, dir, 0755);
    if (r < 0) {
      agent_send_error(ch, reason_for(-r), -r, "creating %s: %s", dir, strerror(-r));
      goto out;
    }
  }
  dfd = agent_openat2(rootfd, dir, O_PATH | O_DIRECTORY, 0, IN_ROOT);
  if (dfd < 0) {
    e = errno;
    agent_send_error(ch, reason_for(e), e, "%s: %s", dir, strerror(e));
    goto out;
  }
  if (flags & AP_F_APPEND) {
    fd = agent_openat2(rootfd, full,
                       O_WRONLY | O_APPEND | O_CREAT | O_NOCTTY | O_NONBLOCK, mode,
                       IN_ROOT);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
      close(fd);
      fd = -1;
      errno = EINVAL;
    }
  } else {
    snprintf(tmp, sizeof(tmp), ".cr-write-%d-%u", (int)getpid(), counter++);
    fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                mode);
    if (fd >= 0) fchmod(fd, mode);
  }
  if (fd < 0) {
    e = errno;
    agent_send_error(ch, reason_for(e), e, "%s: %s", full, strerror(e));
    goto out;
  }
  agent_chan *c = agent_chan_new(ch, AGENT_CH_FILE_WRITE);
  if (!c) {
    agent_send_error(ch, CR_E_INTERNAL, ENOMEM, "out of memory");
    if (tmp[0]) unlinkat(dfd, tmp, 0);
    goto out;
  }
  c->fd = fd;
  c->dirfd = dfd;
  c->tmpname = tmp[0] ? strdup(tmp) : NULL;
  c->basename = strdup(base);
  fd = dfd = -1;
out:
  if (fd >= 0) close(fd);
  if (dfd >= 0) close(dfd);
  free(full);
  free(path);
}

void agent_file_write_data(agent_chan *c, const uint8_t *d, size_t n) {
  agent_chan_consumed(c, n); /* written now (or dropped after an error) */
  while (n && !c->exec_errno) {
    ssize_t w = write(c->fd, d, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      c->exec_errno = errno;
      break;
    }
    d += w;
    n -= (size_t)w;
    c->written += (uint64_t)w;
  }
}

void agent_file_write_end(agent_chan *c) {
  int e = c->exec_errno;
  if (!e && close(c->fd) < 0) e = errno;
  c->fd = -1;
  if (!e && c->tmpname) {
    if (!c->basename || renameat(c->dirfd, c->tmpname, c->dirfd, c->basename) < 0)
      e = c->basename ? errno : ENOMEM;
    else {
      free(c->tmpname);
      c->tmpname = NULL;
    }
  }
  if (e) {
    agent_send_error(c->id, reason_for(e), e, "write: %s", strerror(e));
  } else {
    ap_frame_begin(agent_out(), AP_OK, c->id);
    ap_put_u64(agent_out(), AP_T_SIZE, c->written);
    ap_frame_end(agent_out());
  }
  agent_chan_free(c); /* unlinks the temp file on failure */
}

/* ---------------------------------------------------------------- stat/list */

static void put_stat_fields(ap_buf *o, const struct stat *st) {
  ap_put_u32(o, AP_T_FTYPE, agent_ftype(st->st_mode));
  ap_put_u32(o, AP_T_MODE, (uint32_t)(st->st_mode & 07777));
  ap_put_u64(o, AP_T_SIZE, (uint64_t)st->st_size);
  ap_put_u64(o, AP_T_MTIME_NS, mtime_ns(st));
}

void agent_stat(uint32_t ch, const uint8_t *p, size_t n) {
  char *path = get_path(ch, p, n, "stat");
  if (!path) return;
  int fd = agent_openat2(agent_root_fd(), path, O_PATH | O_NOFOLLOW, 0, IN_ROOT);
  struct stat st;
  if (fd < 0 || fstatat(fd, "", &st, AT_EMPTY_PATH) < 0) {
    int e = errno;
    agent_send_error(ch, reason_for(e), e, "%s: %s", path, strerror(e));
    if (fd >= 0) close(fd);
    free(path);
    return;
  }
  ap_buf *o = agent_out();
  ap_frame_begin(o, AP_STAT_RESULT, ch);
  put_stat_fields(o, &st);
  ap_put_u32(o, AP_T_UID, (uint32_t)st.st_uid);
  ap_put_u32(o, AP_T_GID, (uint32_t)st.st_gid);
  if (S_ISLNK(st.st_mode)) {
    char t[PATH_MAX];
    ssize_t k = readlinkat(fd, "", t, sizeof(t) - 1);
    if (k >= 0) {
      t[k] = '\0';
      ap_put_str(o, AP_T_TARGET, t);
    }
  }
  ap_frame_end(o);
  close(fd);
  free(path);
}

static void list_dir(uint32_t ch, int dfd, const char *prefix, uint32_t depth,
                     size_t *count) {
  DIR *d = fdopendir(dfd);
  if (!d) {
    close(dfd);
    return;
  }
  struct dirent *e;
  while (*count != SIZE_MAX && (e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (*count >= AGENT_MAX_LIST) { /* more than we may send: say so */
      *count = SIZE_MAX;
      break;
    }
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
    char name[PATH_MAX];
    int k = snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "/" : "",
                     e->d_name);
    if (k < 0 || (size_t)k >= sizeof(name)) continue;
    ap_buf *o = agent_out();
    ap_frame_begin(o, AP_ENTRY, ch);
    ap_put_str(o, AP_T_NAME, name);
    put_stat_fields(o, &st);
    if (S_ISLNK(st.st_mode)) {
      char t[PATH_MAX];
      ssize_t m = readlinkat(dirfd(d), e->d_name, t, sizeof(t) - 1);
      if (m >= 0) {
        t[m] = '\0';
        ap_put_str(o, AP_T_TARGET, t);
      }
    }
    ap_frame_end(o);
    (*count)++;
    if (S_ISDIR(st.st_mode) && depth > 1) {
      int sub = openat(dirfd(d), e->d_name,
                       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub >= 0) list_dir(ch, sub, name, depth - 1, count);
    }
  }
  closedir(d);
}

void agent_list(uint32_t ch, const uint8_t *p, size_t n) {
  char *path = get_path(ch, p, n, "list");
  if (!path) return;
  uint32_t depth = 1;
  if (agent_get_u32(p, n, AP_T_DEPTH, &depth) < 0) {
    agent_send_error(ch, CR_E_INVALID_ARGUMENT, 0, "list: bad DEPTH");
    free(path);
    return;
  }
  if (depth == 0) depth = 1;
  if (depth > 64) depth = 64;
  int fd = agent_openat2(agent_root_fd(), path, O_RDONLY | O_DIRECTORY, 0, IN_ROOT);
  if (fd < 0) {
    int e = errno;
    agent_send_error(ch, reason_for(e), e, "%s: %s", path, strerror(e));
    free(path);
    return;
  }
  size_t count = 0;
  list_dir(ch, fd, "", depth, &count);
  if (count == SIZE_MAX)
    agent_send_error(ch, CR_E_RESOURCE_EXHAUSTED, 0,
                     "%s: the listing has more than %d entries; list a subdirectory or use a "
                     "smaller depth", path, AGENT_MAX_LIST);
  else
    agent_send_ok(ch);
  free(path);
}

/* ---------------------------------------------------------------- tar */

static void child_fail(const char *reason, const char *msg) {
  dprintf(2, "%s\n%s\n", reason, msg);
}

static int tar_out_child(void *arg) {
  int dfd = *(int *)arg;
  char err[512] = "";
  int r = agent_tar_write(dfd, 1, err, sizeof(err));
  if (r < 0) child_fail(reason_for(-r), err);
  return r < 0 ? 1 : 0;
}

static int tar_in_child(void *arg) {
  int dfd = *(int *)arg;
  char err[512] = "";
  int r = agent_tar_extract(dfd, 0, err, sizeof(err));
  if (r < 0)
    child_fail(r == -EPERM ? CR_E_IMAGE_UNSAFE_PATH
               : r == -EINVAL ? CR_E_INVALID_ARGUMENT : CR_E_FILE_ERROR, err);
  return r < 0 ? 1 : 0;
}

static void tar_start(uint32_t ch, const uint8_t *p, size_t n, int in) {
  char *path = get_path(ch, p, n, in ? "tar_in" : "tar_out");
  if (!path) return;
  uint32_t flags = 0;
  if (agent_get_u32(p, n, AP_T_FLAGS, &flags) < 0) {
    agent_send_error(ch, CR_E_INVALID_ARGUMENT, 0, "bad FLAGS");
    free(path);
    return;
  }
  if (in && (flags & AP_F_PARENTS)) {
    int r = agent_mkdir_p_in(agent_root_fd(), path, 0755);
    if (r < 0) {
      agent_send_error(ch, reason_for(-r), -r, "creating %s: %s", path, strerror(-r));
      free(path);
      return;
    }
  }
  int dfd = agent_openat2(agent_root_fd(), path, O_RDONLY | O_DIRECTORY, 0, IN_ROOT);
  if (dfd < 0) {
    int e = errno;
    agent_send_error(ch, reason_for(e), e, "%s: %s", path, strerror(e));
    free(path);
    return;
  }
  free(path);
  agent_chan *c = agent_chan_new(ch, in ? AGENT_CH_TAR_IN : AGENT_CH_TAR_OUT);
  if (!c) {
    close(dfd);
    agent_send_error(ch, CR_E_INTERNAL, ENOMEM, "out of memory");
    return;
  }
  /* the child inherits dfd across fork (CLOEXEC only matters for exec) */
  int r = agent_spawn_fn(c, in ? tar_in_child : tar_out_child, &dfd, in);
  close(dfd);
  if (r < 0) {
    agent_chan_free(c);
    agent_send_error(ch, CR_E_INTERNAL, -r, "fork: %s", strerror(-r));
  }
}

void agent_tar_out_start(uint32_t ch, const uint8_t *p, size_t n) {
  tar_start(ch, p, n, 0);
}

void agent_tar_in_start(uint32_t ch, const uint8_t *p, size_t n) {
  tar_start(ch, p, n, 1);
}

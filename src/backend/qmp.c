#include "backend/qmp.h"
#include "util/macro.h"
#include "util/clock.h"

#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#define QMP_MAX_LINE (1u << 20)

struct qmp {
  int fd;
  char *buf;
  size_t len, cap;
};

/* Reads one line (a JSON object) before deadline. */
static int read_msg(qmp *q, long deadline, json_t **ret, cr_error **err) {
  for (;;) {
    char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
    if (nl) {
      size_t n = (size_t)(nl - q->buf);
      json_error_t je;
      json_t *j = json_loadb(q->buf, n, 0, &je);
      memmove(q->buf, nl + 1, q->len - n - 1);
      q->len -= n + 1;
      if (!j) return cr_error_set(err, CR_E_PROTOCOL, 0, "qmp: bad JSON: %s", je.text);
      *ret = j;
      return 0;
    }
    if (q->len >= QMP_MAX_LINE)
      return cr_error_set(err, CR_E_PROTOCOL, 0, "qmp: line too long");
    if (q->cap - q->len < 4096) {
      size_t nc = q->cap ? q->cap * 2 : 8192;
      char *nb = realloc(q->buf, nc);
      if (!nb) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "qmp");
      q->buf = nb;
      q->cap = nc;
    }
    long left = deadline - cr_mono_ms();
    if (left <= 0) return cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, 0, "qmp: timed out");
    struct pollfd p = {.fd = q->fd, .events = POLLIN};
    int r = poll(&p, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = read(q->fd, q->buf + q->len, q->cap - q->len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, n < 0 ? errno : 0,
                                    "qmp: connection closed");
    q->len += (size_t)n;
  }
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Writes the whole message with fd attached (SCM_RIGHTS) to its first byte. */
static int write_with_fd(int sock, const char *p, size_t n, int fd) {
  struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  memset(&u, 0, sizeof(u));
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                      .msg_controllen = sizeof(u.buf)};
  struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  ssize_t w;
  do w = sendmsg(sock, &mh, MSG_NOSIGNAL);
  while (w < 0 && errno == EINTR);
  if (w < 0) return -errno;
  return write_all(sock, p + w, n - (size_t)w);
}

int qmp_execute(qmp *q, const char *command, json_t *args, int timeout_ms,
                json_t **ret_return, cr_error **err) {
  return qmp_execute_fd(q, command, args, -1, timeout_ms, ret_return, err);
}

int qmp_execute_fd(qmp *q, const char *command, json_t *args, int pass_fd, int timeout_ms,
                   json_t **ret_return, cr_error **err) {
  _cleanup_json_ json_t *cmd = json_pack("{s:s}", "execute", command);
  if (args) json_object_set_new(cmd, "arguments", args);
  _cleanup_free_ char *s = json_dumps(cmd, JSON_COMPACT);
  if (!s) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "qmp");
  size_t n = strlen(s);
  s[n] = '\n';
  int r = pass_fd >= 0 ? write_with_fd(q->fd, s, n + 1, pass_fd) : write_all(q->fd, s, n + 1);
  s[n] = '\0';
  if (r < 0) return cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, -r, "qmp: %s", command);
  long deadline = cr_mono_ms() + timeout_ms;
  for (;;) {
    json_t *m = NULL;
    if (read_msg(q, deadline, &m, err) < 0) return cr_error_wrap(err, "qmp %s", command);
    if (json_object_get(m, "event")) {
      json_decref(m);
      continue;
    }
    json_t *e = json_object_get(m, "error");
    if (e) {
      r = cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, 0, "qmp %s: %s", command,
                       json_string_value(json_object_get(e, "desc")) ?: "error");
      json_decref(m);
      return r;
    }
    if (ret_return) *ret_return = json_incref(json_object_get(m, "return"));
    json_decref(m);
    return 0;
  }
}

int qmp_connect(const char *path, int timeout_ms, qmp **ret, cr_error **err) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sa.sun_path))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "qmp socket path too long: %s", path);
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return cr_error_set(err, CR_E_INTERNAL, errno, "socket");
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    int e = errno;
    close(fd);
    return cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, e, "qmp: connect %s", path);
  }
  qmp *q = calloc(1, sizeof(*q));
  if (!q) {
    close(fd);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "qmp");
  }
  q->fd = fd;
  json_t *greeting = NULL;
  if (read_msg(q, cr_mono_ms() + timeout_ms, &greeting, err) < 0 ||
      qmp_execute(q, "qmp_capabilities", NULL, timeout_ms, NULL, err) < 0) {
    json_decref(greeting);
    qmp_free(q);
    return -1;
  }
  json_decref(greeting);
  *ret = q;
  return 0;
}

void qmp_free(qmp *q) {
  if (!q) return;
  close(q->fd);
  free(q->buf);
  free(q);
}

/* Blocking JSON-RPC client for the control API (see client.h). */
#include "client/client.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/fs.h"
#include "util/macro.h"
#include "util/paths.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

struct api_client {
  int fd;
  char *socket;
  json_int_t next_id;
  cr_buf in; /* received bytes not yet returned: a line and one read at most */
  bool eof;
  int send_fd; /* >= 0: goes with the first bytes of the next send (SCM_RIGHTS) */
};

/* Connects a unix stream socket to path; returns the fd or -errno. */
static int connect_unix(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t n = strlen(path);
  if (n >= sizeof(sa.sun_path)) return -ENAMETOOLONG;
  memcpy(sa.sun_path, path, n + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    int r = -errno;
    close(fd);
    return r;
  }
  return fd;
}

/* Resolves host/env/default into a socket path. *ret_explicit tells whether
 * the user named one (then no autostart). */
static int resolve_socket(const char *host, char **ret_path, bool *ret_explicit,
                          cr_error **err) {
  bool expl = true;
  if (!host || !*host) {
    host = getenv("CLEANROOM_HOST");
    if (!host || !*host) {
      host = NULL;
      expl = false;
    }
  }
  char *p;
  if (!host) {
    p = cr_socket_path();
  } else if (!strncmp(host, "unix:", 5)) {
    const char *rest = host + 5;
    if (!strncmp(rest, "//", 2)) rest += 2; /* unix:///path */
    p = strdup(rest);
  } else if (strstr(host, "://")) {
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "unsupported host '%s': only unix sockets "
                        "(unix:/path or /path) are supported",
                        host);
  } else {
    p = strdup(host);
  }
  if (!p) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "resolving socket");
  if (!*p) {
    free(p);
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "empty socket path in host '%s'",
                        host ? host : "");
  }
  *ret_path = p;
  *ret_explicit = expl;
  return 0;
}

/* Starts `<self> serve` detached: new session, stdin /dev/null, output
 * appended to log. Returns the daemon's pid (> 0) or < 0 with err set. */
static pid_t spawn_daemon(const char *log_path, cr_error **err) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n < 0) return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, errno, "finding own executable");
  exe[n] = '\0';

  /* Prepared before fork: only async-signal-safe calls in the children. */
  _cleanup_close_ int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, errno, "opening /dev/null");
  _cleanup_close_ int logfd =
      open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600);
  if (logfd < 0)
    return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, errno, "opening %s", log_path);
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) < 0)
    return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, errno, "pipe");
  char arg0[] = "cleanroom", arg1[] = "serve";
  char *const argv[] = {arg0, arg1, NULL};

  pid_t child = fork();
  if (child < 0) {
    int e = errno;
    close(pfd[0]);
    close(pfd[1]);
    return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, e, "fork");
  }
  if (child == 0) {
    close(pfd[0]);
    if (setsid() < 0) _exit(1);
    pid_t gc = fork();
    if (gc < 0) _exit(1);
    if (gc > 0) {
      (void)!write(pfd[1], &gc, sizeof(gc));
      _exit(0);
    }
    close(pfd[1]);
    struct sigaction sa = {.sa_handler = SIG_DFL};
    for (int s = 1; s < NSIG; s++) sigaction(s, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (dup2(devnull, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0) _exit(1);
    if (chdir("/") < 0) _exit(1);
    /* Everything else is O_CLOEXEC or belongs to the caller; close the rest. */
    for (int fd = 3; fd < 1024; fd++) close(fd);
    execv(exe, argv);
    _exit(127);
  }
  close(pfd[1]);
  pid_t daemon = -1;
  ssize_t r;
  do r = read(pfd[0], &daemon, sizeof(daemon));
  while (r < 0 && errno == EINTR);
  close(pfd[0]);
  int status;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (r != (ssize_t)sizeof(daemon) || daemon <= 0)
    return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, 0,
                        "could not start the daemon (%s serve)", exe);
  return daemon;
}

/* False when pid is gone or a zombie nobody reaped yet. */
static bool pid_alive(pid_t pid) {
  if (kill(pid, 0) < 0 && errno == ESRCH) return false;
  char path[64], buf[256];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno != ENOENT;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  if (n <= 0) return true;
  buf[n] = '\0';
  const char *rp = strrchr(buf, ')'); /* "pid (comm) S ..." */
  return !(rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'));
}

/* Starts the daemon unless another client does so first, then waits for
 * the socket. Returns the connected fd or < 0 with err set. */
static int autostart(const char *sock, cr_error **err) {
  _cleanup_free_ char *run = cr_run_dir();
  if (!run) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "run dir");
  int r = cr_mkdir_p(run, 0700);
  if (r < 0)
    return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, -r, "creating run dir %s", run);
  _cleanup_free_ char *log = cr_path_join(run, "daemon.log");
  _cleanup_free_ char *lockp = cr_path_join(run, "autostart.lock");
  if (!log || !lockp) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "run dir");

  /* Serialize concurrent autostarts: the first one starts the daemon, the
   * others find it listening once they get the lock. */
  _cleanup_close_ int lock = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock >= 0) {
    int64_t until = cr_mono_ms() + API_CLIENT_AUTOSTART_TIMEOUT_MS;
    while (flock(lock, LOCK_EX | LOCK_NB) < 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) break;
      if (cr_mono_ms() > until) break; /* try anyway */
      struct timespec ts = {0, 20 * 1000000};
      nanosleep(&ts, NULL);
    }
    int fd = connect_unix(sock);
    if (fd >= 0) return fd;
  }

  pid_t pid = spawn_daemon(log, err);
  if (pid < 0) return pid;

  int64_t deadline = cr_mono_ms() + API_CLIENT_AUTOSTART_TIMEOUT_MS;
  int last = 0;
  for (;;) {
    int fd = connect_unix(sock);
    if (fd >= 0) return fd;
    last = -fd;
    if (!pid_alive(pid))
      return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, 0,
                          "the daemon (pid %d) exited during start-up; see %s",
                          (int)pid, log);
    if (cr_mono_ms() >= deadline) break;
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
  }
  return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, 0,
                      "started the daemon (pid %d) but %s did not accept "
                      "connections within %d s (%s); see %s",
                      (int)pid, sock, API_CLIENT_AUTOSTART_TIMEOUT_MS / 1000,
                      strerror(last), log);
}

int api_client_connect(const char *host, bool autostart_ok, api_client **ret,
                       cr_error **err) {
  _cleanup_free_ char *sock = NULL;
  bool expl = false;
  int r = resolve_socket(host, &sock, &expl, err);
  if (r < 0) return r;

  int fd = connect_unix(sock);
  if (fd < 0) {
    int e = -fd;
    bool absent = e == ENOENT || e == ECONNREFUSED;
    if (!absent || !autostart_ok || expl) {
      if (absent)
        return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, 0,
                            "no daemon listening on %s (%s); start one with "
                            "'cleanroom serve'",
                            sock, strerror(e));
      return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, e, "connecting to %s", sock);
    }
    fd = autostart(sock, err);
    if (fd < 0) return fd;
  }
  api_client *c = calloc(1, sizeof(*c));
  if (!c) {
    close(fd);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "client");
  }
  c->in = CR_BUF_INIT(API_CLIENT_MAX_LINE + 65536);
  c->fd = fd;
  c->send_fd = -1;
  c->socket = TAKE_PTR(sock);
  c->next_id = 1;
  *ret = c;
  return 0;
}

void api_client_free(api_client *c) {
  if (!c) return;
  if (c->fd >= 0) close(c->fd);
  free(c->socket);
  cr_buf_free(&c->in);
  free(c);
}

int api_client_fd(const api_client *c) { return c->fd; }

const char *api_client_socket(const api_client *c) { return c->socket; }

bool api_client_pending(const api_client *c) {
  return c->in.len > 0 && memchr(c->in.data, '\n', c->in.len) != NULL;
}

/* send(), or sendmsg() with c->send_fd attached the first time. */
static ssize_t send_some(api_client *c, const char *data, size_t len) {
  if (c->send_fd < 0) return send(c->fd, data, len, MSG_NOSIGNAL);
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  memset(&u, 0, sizeof(u));
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                     .msg_controllen = sizeof(u.buf)};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cm), &c->send_fd, sizeof(int));
  ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL);
  if (n > 0) c->send_fd = -1;
  return n;
}

static int send_all(api_client *c, const char *data, size_t len, cr_error **err) {
  while (len > 0) {
    ssize_t n = send_some(c, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        (void)poll(&p, 1, -1);
        continue;
      }
      return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, errno, "sending to %s", c->socket);
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

static int send_msg(api_client *c, json_t *msg, cr_error **err) {
  _cleanup_free_ char *s = json_dumps(msg, JSON_COMPACT | JSON_ENSURE_ASCII);
  if (!s) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "encoding request");
  size_t n = strlen(s);
  if (n + 1 > API_CLIENT_MAX_LINE)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "request of %zu bytes exceeds the %u byte line limit", n,
                        API_CLIENT_MAX_LINE);
  s[n] = '\n'; /* replaces the NUL; send exactly n+1 bytes */
  return send_all(c, s, n + 1, err);
}

static json_t *build(const char *method, json_t *params, json_int_t id, bool with_id) {
  json_t *m = json_object();
  if (!m) {
    json_decref(params);
    return NULL;
  }
  json_object_set_new(m, "jsonrpc", json_string("2.0"));
  json_object_set_new(m, "method", json_string(method));
  if (params) json_object_set_new(m, "params", params);
  if (with_id) json_object_set_new(m, "id", json_integer(id));
  return m;
}

int api_client_request_async(api_client *c, const char *method, json_t *params,
                             json_int_t *ret_id, cr_error **err) {
  json_int_t id = c->next_id++;
  _cleanup_json_ json_t *m = build(method, params, id, true);
  if (!m) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "request");
  int r = send_msg(c, m, err);
  if (r < 0) return r;
  if (ret_id) *ret_id = id;
  return 0;
}

int api_client_send_notification(api_client *c, const char *method, json_t *params,
                                 cr_error **err) {
  _cleanup_json_ json_t *m = build(method, params, 0, false);
  if (!m) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "notification");
  return send_msg(c, m, err);
}

/* Takes one complete line out of the buffer, parses it. 1 = got one,
 * 0 = need more bytes, < 0 = error. */
static int take_line(api_client *c, json_t **ret_msg, cr_error **err) {
  char *nl = c->in.len ? memchr(c->in.data, '\n', c->in.len) : NULL;
  if (!nl) {
    if (c->in.len >= API_CLIENT_MAX_LINE)
      return cr_error_set(err, CR_E_PROTOCOL, 0,
                          "the daemon sent a line longer than %u bytes", API_CLIENT_MAX_LINE);
    return 0;
  }
  size_t linelen = (size_t)(nl - (char *)c->in.data);
  json_error_t je;
  json_t *m = json_loadb((const char *)c->in.data, linelen, 0, &je);
  cr_buf_consume(&c->in, linelen + 1);
  if (!m || !json_is_object(m)) {
    json_decref(m);
    return cr_error_set(err, CR_E_PROTOCOL, 0, "the daemon sent an invalid message: %s",
                        m ? "not an object" : je.text);
  }
  *ret_msg = m;
  return 1;
}

int api_client_read_message(api_client *c, int timeout_ms, json_t **ret_msg,
                            cr_error **err) {
  int64_t deadline = timeout_ms >= 0 ? cr_mono_ms() + timeout_ms : -1;
  for (;;) {
    int r = take_line(c, ret_msg, err);
    if (r != 0) return r;
    if (c->eof)
      return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, 0,
                          "the daemon closed the connection%s",
                          c->in.len ? " in the middle of a message" : "");
    int wait = -1;
    if (deadline >= 0) {
      int64_t left = deadline - cr_mono_ms();
      wait = left > 0 ? (int)left : 0;
    }
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int pr = poll(&p, 1, wait);
    if (pr < 0) {
      if (errno == EINTR) return 0; /* let the caller look at its signals */
      return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, errno, "poll");
    }
    if (pr == 0) return 0;
    int br = cr_buf_reserve(&c->in, 65536);
    if (br == -E2BIG) /* full without a newline */
      return cr_error_set(err, CR_E_PROTOCOL, 0, "the daemon sent a line longer than %u bytes",
                          API_CLIENT_MAX_LINE);
    if (br < 0) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "receive buffer");
    ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
    if (n < 0) {
      if (errno == EINTR) return 0;
      if (errno == EAGAIN) continue;
      if (errno == ECONNRESET) {
        c->eof = true;
        continue;
      }
      return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, errno, "reading from %s", c->socket);
    }
    if (n == 0) c->eof = true;
    c->in.len += (size_t)n;
  }
}

int api_client_response_result(json_t *msg, json_t **ret_result, cr_error **err) {
  json_t *e = json_object_get(msg, "error");
  if (e) {
    const char *text = json_string_value(json_object_get(e, "message"));
    const char *reason =
        json_string_value(json_object_get(json_object_get(e, "data"), "reason"));
    json_int_t code = json_integer_value(json_object_get(e, "code"));
    if (reason && *reason) return cr_error_set(err, reason, 0, "%s", text ? text : reason);
    return cr_error_set(err, CR_E_PROTOCOL, 0, "JSON-RPC error %lld: %s", (long long)code,
                        text ? text : "(no message)");
  }
  json_t *res = json_object_get(msg, "result");
  if (!res) return cr_error_set(err, CR_E_PROTOCOL, 0, "response without result or error");
  if (ret_result) *ret_result = json_incref(res);
  return 0;
}

int api_client_call(api_client *c, const char *method, json_t *params,
                    api_client_notify_fn notify, void *userdata, json_t **ret_result,
                    cr_error **err) {
  return api_client_call_fd(c, method, params, -1, notify, userdata, ret_result, err);
}

int api_client_call_fd(api_client *c, const char *method, json_t *params, int fd,
                       api_client_notify_fn notify, void *userdata, json_t **ret_result,
                       cr_error **err) {
  json_int_t id;
  c->send_fd = fd;
  int r = api_client_request_async(c, method, params, &id, err);
  c->send_fd = -1;
  if (r < 0) return r;
  for (;;) {
    _cleanup_json_ json_t *m = NULL;
    r = api_client_read_message(c, -1, &m, err);
    if (r < 0) return cr_error_wrap(err, "%s", method);
    if (r == 0) continue;
    json_t *mid = json_object_get(m, "id");
    const char *meth = json_string_value(json_object_get(m, "method"));
    if (meth && !mid) {
      if (notify) notify(meth, json_object_get(m, "params"), userdata);
      continue;
    }
    if (json_is_null(mid) && json_object_get(m, "error"))
      /* an error the server could not tie to a request: it is about ours */
      return api_client_response_result(m, NULL, err);
    if (!json_is_integer(mid) || json_integer_value(mid) != id) continue;
    return api_client_response_result(m, ret_result, err);
  }
}

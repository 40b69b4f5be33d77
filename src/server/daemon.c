#include "server/daemon.h"
#include "mcp/mcp.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/paths.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Replies and notifications queued for one client that is not reading them
 * (a slow or hostile client, an attached stream it never drains): beyond
 * this the connection is dropped instead of growing without bound. The
 * largest single reply (file.read, 8 MiB as base64) fits several times. */
#define CONN_MAX_QUEUED (64u << 20)
/* Longest wait for re-attachments before clients are served anyway (below
 * the client's autostart timeout). */
#define DAEMON_SETTLE_MAX_MS 5000
/* Connections at once (CLEANROOM_MAX_CONNECTIONS); beyond, a new one gets a
 * resource_exhausted error and is closed. */
#define CONN_MAX_DEFAULT 256

/* A connection's input buffer holds at most one line under the limit plus
 * one read: longer lines are skipped, never buffered. */
#define READ_MAX ((size_t)MAX(MCP_MAX_LINE, API_MAX_LINE) + 65536)
/* File descriptors a client sent (SCM_RIGHTS) that no request took yet;
 * beyond this they are closed as they arrive. */
#define CONN_MAX_FDS 4

typedef struct conn {
  uv_pipe_t pipe;
  api_sink sink;
  server_ctx *d;
  cr_buf in; /* bytes read, not yet a whole line; bounded (READ_MAX) */
  bool first_done, handle_closed, sink_freed;
  mcp_session *mcp;
  /* skipping a line over the limit: its first and last bytes (to find the
   * request id) and its length so far */
  bool discarding;
  char head[256], tail[256];
  size_t head_len, tail_len, discarded;
  /* descriptors received, oldest first: a request that wants one (an
   * image.import) takes the oldest; the client sends it with the request's
   * first bytes, so it is here once the request's line is complete */
  int fds[CONN_MAX_FDS];
  size_t n_fds;
} conn;

static void conn_maybe_free(conn *c) {
  if (c->handle_closed && c->sink_freed) {
    for (size_t i = 0; i < c->n_fds; i++) close(c->fds[i]);
    cr_buf_free(&c->in);
    free(c);
  }
}

static void sink_free(api_sink *s) {
  conn *c = container_of(s, conn, sink);
  c->sink_freed = true;
  conn_maybe_free(c);
}

static void on_conn_closed(uv_handle_t *h) {
  conn *c = h->data;
  /* The MCP session is closed here, not in conn_close(): conn_close() can run
   * inside the session's own write callback. */
  if (c->mcp) {
    mcp_session_close(c->mcp);
    c->mcp = NULL;
  }
  c->handle_closed = true;
  c->d->conns--;
  api_sink_unref(&c->sink); /* the connection's own reference; may free c */
}

/* Safe from any callback: nothing is freed before the close callback. */
static void conn_close(conn *c) {
  if (c->sink.closed) return;
  c->sink.closed = true;
  uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
}

static void on_written(uv_write_t *req, int status) {
  free(req->data);
  free(req);
}

static void conn_write(conn *c, const char *data, size_t n) {
  if (c->sink.closed) return;
  if (uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) + n > CONN_MAX_QUEUED) {
    log_warn("dropping a client that does not read its replies (%zu bytes queued)",
             uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe));
    conn_close(c);
    return;
  }
  uv_write_t *req = malloc(sizeof(*req));
  char *copy = malloc(n + 1);
  if (!req || !copy) {
    free(req);
    free(copy);
    return;
  }
  memcpy(copy, data, n);
  copy[n] = '\n';
  req->data = copy;
  uv_buf_t b = uv_buf_init(copy, (unsigned)n + 1);
  if (uv_write(req, (uv_stream_t *)&c->pipe, &b, 1, on_written) < 0) {
    free(copy);
    free(req);
  }
}

static void sink_send(api_sink *s, json_t *msg) {
  conn *c = container_of(s, conn, sink);
  char *txt = json_dumps(msg, JSON_COMPACT);
  if (txt) conn_write(c, txt, strlen(txt));
  free(txt);
}

static int sink_take_fd(api_sink *s) {
  conn *c = container_of(s, conn, sink);
  if (!c->n_fds) return -1;
  int fd = c->fds[0];
  memmove(c->fds, c->fds + 1, (--c->n_fds) * sizeof(int));
  return fd;
}

static void on_fd_handle_closed(uv_handle_t *h) { free(h); }

/* Moves the descriptors libuv received with the last read into c->fds (an
 * IPC pipe queues them as "pending handles"; accepting one into a scratch
 * pipe handle gives its fd, which is duplicated before the handle closes). */
static void take_received_fds(conn *c) {
  while (uv_pipe_pending_count(&c->pipe) > 0) {
    uv_pipe_t *h = malloc(sizeof(*h));
    if (!h || uv_pipe_init(c->d->api.loop, h, 0) < 0) {
      free(h);
      return;
    }
    uv_os_fd_t fd = -1;
    int dup = -1;
    if (uv_accept((uv_stream_t *)&c->pipe, (uv_stream_t *)h) == 0 &&
        uv_fileno((uv_handle_t *)h, &fd) == 0)
      dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    uv_close((uv_handle_t *)h, on_fd_handle_closed);
    if (dup < 0) continue;
    if (c->n_fds < CONN_MAX_FDS) c->fds[c->n_fds++] = dup;
    else close(dup);
  }
}

static void mcp_write(void *ud, const char *line, size_t len) {
  conn_write(ud, line, len);
}

static void handle_line(conn *c, const char *line, size_t len) {
  if (len == 0) return;
  if (c->mcp) {
    mcp_session_handle_line(c->mcp, line, len);
    return;
  }
  json_error_t je;
  json_t *msg = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
  if (!msg) {
    char m[256];
    snprintf(m, sizeof(m), "parse error: %s (line %d column %d)", je.text, je.line, je.column);
    api_sink_send(&c->sink, api_error(NULL, API_PARSE_ERROR, m, NULL));
    return;
  }
  if (!c->first_done) {
    c->first_done = true;
    if (mcp_is_session_start(msg)) {
      c->mcp = mcp_session_new(&c->d->api, mcp_write, c);
      if (c->mcp) {
        mcp_session_set_loop(c->mcp, c->d->api.loop);
        mcp_session_handle_message(c->mcp, msg);
        json_decref(msg);
        return;
      }
    }
  }
  api_dispatch(&c->d->api, &c->sink, msg);
  json_decref(msg);
}

/* The id of a JSON-RPC request from the first and last bytes of a line too
 * long to parse: the top-level "id" member is either before "params" or the
 * last member. NULL when it cannot be told. */
static json_t *id_from_value(const char *p, const char *end, const char **ret_after) {
  while (p < end && *p == ' ') p++;
  if (p < end && *p == '"') {
    const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
    if (!q || q - p > 200 || memchr(p + 1, '\\', (size_t)(q - p - 1))) return NULL;
    *ret_after = q + 1;
    return json_stringn(p + 1, (size_t)(q - p - 1));
  }
  const char *q = p;
  if (q < end && *q == '-') q++;
  while (q < end && *q >= '0' && *q <= '9' && q - p < 19) q++;
  if (q == p || (q == p + 1 && *p == '-')) return NULL;
  *ret_after = q;
  return json_integer(strtoll(p, NULL, 10));
}

static json_t *oversized_id(const conn *c) {
  const char *h = c->head, *hend = c->head + c->head_len;
  const char *params = memmem(h, c->head_len, "\"params\"", 8);
  const char *idk = memmem(h, c->head_len, "\"id\":", 5);
  const char *after;
  if (idk && (!params || idk < params)) {
    json_t *id = id_from_value(idk + 5, hend, &after);
    if (id) return id;
  }
  /* the last "id": of the tail, followed only by the closing brace */
  const char *t = c->tail, *tend = c->tail + c->tail_len, *last = NULL;
  for (const char *p = t; (p = memmem(p, (size_t)(tend - p), "\"id\":", 5)); p++) last = p;
  if (!last) return NULL;
  json_t *id = id_from_value(last + 5, tend, &after);
  while (id && after < tend && (*after == ' ' || *after == '\r')) after++;
  if (id && after < tend && *after == '}') {
    after++;
    while (after < tend && (*after == ' ' || *after == '\r')) after++;
    if (after == tend) return id;
  }
  json_decref(id);
  return NULL;
}

static void tail_add(conn *c, const char *p, size_t n) {
  size_t cap = sizeof(c->tail);
  if (n >= cap) {
    memcpy(c->tail, p + n - cap, cap);
    c->tail_len = cap;
    return;
  }
  size_t keep = MIN(c->tail_len, cap - n);
  memmove(c->tail, c->tail + c->tail_len - keep, keep);
  memcpy(c->tail + keep, p, n);
  c->tail_len = keep + n;
}

static size_t line_limit(const conn *c) { return c->mcp ? MCP_MAX_LINE : API_MAX_LINE; }

/* A line over the limit was skipped: answer it and keep the connection. */
static void line_skipped(conn *c) {
  _cleanup_json_ json_t *id = oversized_id(c);
  if (c->mcp) {
    mcp_session_reject_line(c->mcp, id, c->discarded);
  } else {
    char m[200];
    snprintf(m, sizeof(m), "message too long (%zu bytes): lines are limited to %u bytes; send "
             "large data in chunks", c->discarded, API_MAX_LINE);
    api_sink_send(&c->sink, api_error(id, API_INVALID_REQUEST, m, NULL));
  }
  c->discarding = false;
  c->head_len = c->tail_len = c->discarded = 0;
}

static void start_discard(conn *c, const char *p, size_t n) {
  c->discarding = true;
  c->head_len = MIN(n, sizeof(c->head));
  memcpy(c->head, p, c->head_len);
  c->tail_len = 0;
  tail_add(c, p, n);
  c->discarded = n;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn *c = h->data;
  /* a failure (out of memory) gives libuv no buffer: it reports UV_ENOBUFS
   * and the connection is closed */
  if (c->in.cap - c->in.len < 65536 && cr_buf_reserve(&c->in, 65536) < 0) {
    cr_buf_reset(&c->in);
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  *buf = uv_buf_init((char *)c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn *c = s->data;
  if (n < 0) {
    conn_close(c);
    return;
  }
  take_received_fds(c);
  c->in.len += (size_t)n;
  char *d = (char *)c->in.data; /* only on_alloc moves it */
  size_t start = 0;
  if (c->discarding) {
    char *nl = memchr(d, '\n', c->in.len);
    size_t upto = nl ? (size_t)(nl - d) : c->in.len;
    tail_add(c, d, upto);
    c->discarded += upto;
    if (!nl) {
      c->in.len = 0;
      return;
    }
    api_sink_ref(&c->sink);
    line_skipped(c);
    bool closed = c->sink.closed;
    api_sink_unref(&c->sink);
    if (closed) return;
    start = upto + 1;
  }
  for (;;) {
    char *nl = memchr(d + start, '\n', c->in.len - start);
    if (!nl) break;
    size_t l = (size_t)(nl - (d + start));
    api_sink_ref(&c->sink);
    if (l > line_limit(c)) {
      start_discard(c, d + start, l);
      line_skipped(c);
    } else {
      handle_line(c, d + start, l);
    }
    bool closed = c->sink.closed;
    api_sink_unref(&c->sink);
    if (closed) return;
    start += l + 1;
  }
  cr_buf_consume(&c->in, start);
  if (c->in.len > line_limit(c)) { /* skip the rest of this line, answer at its end */
    start_discard(c, d, c->in.len);
    c->in.len = 0;
  }
  /* shrink big idle buffers */
  if (c->in.len == 0 && c->in.cap > (1u << 20)) cr_buf_free(&c->in);
}

/* The supplementary groups of process `pid` (its /proc status), at most n. */
static size_t pid_groups(pid_t pid, gid_t *out, size_t n) {
  char path[64], line[4096];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  size_t k = 0;
  while (fgets(line, sizeof(line), f)) {
    if (strncmp(line, "Groups:", 7)) continue;
    char *p = line + 7, *end;
    for (;;) {
      unsigned long g = strtoul(p, &end, 10);
      if (end == p || k == n) break;
      out[k++] = (gid_t)g;
      p = end;
    }
    break;
  }
  fclose(f);
  return k;
}

/* Is `gid` among the groups of process `pid`? */
static bool pid_in_group(pid_t pid, gid_t gid) {
  gid_t g[4096];
  size_t n = pid_groups(pid, g, ELEMENTSOF(g));
  for (size_t i = 0; i < n; i++)
    if (g[i] == gid) return true;
  return false;
}

/* Who may talk to the daemon: root, the daemon's own user, and members of
 * the configured group (CLEANROOM_SOCKET_GROUP), as with Docker's socket.
 * The socket's mode says the same; this holds even if the mode is wrong. */
static bool peer_allowed(server_ctx *d, int fd, api_peer *peer, char *why, size_t n) {
  struct ucred uc;
  socklen_t len = sizeof(uc);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0) {
    snprintf(why, n, "cannot read the peer's credentials: %s", strerror(errno));
    return false;
  }
  *peer = (api_peer){.known = true, .uid = uc.uid, .gid = uc.gid, .pid = uc.pid};
  if (uc.uid != 0) peer->n_groups = pid_groups(uc.pid, peer->groups, ELEMENTSOF(peer->groups));
  if (uc.uid == 0 || uc.uid == geteuid()) return true;
  if (d->socket_gid != (gid_t)-1 && (uc.gid == d->socket_gid || pid_in_group(uc.pid, d->socket_gid)))
    return true;
  snprintf(why, n, "uid %u (pid %d) is not root, the daemon's user or in its socket group",
           (unsigned)uc.uid, (int)uc.pid);
  return false;
}

/* Tells a refused client why (one short line straight into the fresh
 * socket's buffer: a queued write would be cancelled by the close) and
 * closes it. */
static void refuse(conn *c, int fd, const char *reason, const char *msg) {
  json_t *e = api_error(NULL, API_OPERATION_FAILED, msg, reason);
  char *txt = e ? json_dumps(e, JSON_COMPACT) : NULL;
  json_decref(e);
  if (txt && fd >= 0) {
    size_t n = strlen(txt);
    txt[n] = '\n';
    if (write(fd, txt, n + 1) < 0) {
    }
  }
  free(txt);
  conn_close(c);
}

static void on_connection(uv_stream_t *server, int status) {
  server_ctx *d = server->data;
  if (status < 0) return;
  conn *c = calloc(1, sizeof(*c));
  if (!c) return;
  c->in = CR_BUF_INIT(READ_MAX);
  c->d = d;
  c->sink.send = sink_send;
  c->sink.free = sink_free;
  c->sink.take_fd = sink_take_fd;
  c->sink.refs = 1;
  /* an IPC pipe: it also receives file descriptors (SCM_RIGHTS) */
  uv_pipe_init(d->api.loop, &c->pipe, 1);
  c->pipe.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0) {
    d->conns++;
    conn_close(c);
    return;
  }
  d->conns++;
  uv_os_fd_t fd = -1;
  char why[160] = "no file descriptor for the connection";
  if (uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0 ||
      !peer_allowed(d, fd, &c->sink.peer, why, sizeof(why))) {
    log_warn("refusing a client: %s", why);
    refuse(c, fd, CR_E_PERMISSION_DENIED, "permission denied: only root, the daemon's user or members "
                                      "of its socket group may use this socket");
    return;
  }
  if (d->conns > d->max_conns) {
    log_warn("refusing a client: %d connections already", d->conns - 1);
    refuse(c, fd, CR_E_RESOURCE_EXHAUSTED, "too many connections to the daemon");
    return;
  }
  uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

static void close_walk(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
  server_ctx *d = s->data;
  if (d->stopping) return;
  d->stopping = true;
  log_info("signal %d: stopping (sandboxes keep running)", signum);
  uv_stop(d->api.loop);
}

static void start_serving(server_ctx *d) {
  if (d->serving) return;
  d->serving = true;
  uv_timer_stop(&d->settle_timer);
  int r = uv_listen((uv_stream_t *)&d->server, 128, on_connection);
  if (r < 0) {
    log_error("listening on %s: %s", d->api.socket_path, uv_strerror(r));
    d->stopping = true;
    uv_stop(d->api.loop);
  }
}

static void on_settled(void *ud) { start_serving(ud); }

static void on_settle_timeout(uv_timer_t *t) {
  log_warn("re-attaching sandboxes takes longer than %d ms: serving clients already",
           DAEMON_SETTLE_MAX_MS);
  start_serving(t->data);
}

/* The socket's directory: ours, a directory (not a link), closed to others
 * (0700, or 0750 with a socket group). An existing one with a looser mode is
 * tightened; one owned by someone else is refused. */
static int check_run_dir(server_ctx *d, const char *dir, cr_error **err) {
  struct stat st;
  if (lstat(dir, &st) < 0) return cr_error_set(err, CR_E_IO, errno, "%s", dir);
  if (!S_ISDIR(st.st_mode))
    return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, 0,
                        "%s is not a directory (a symlink?); refusing to put the socket there", dir);
  if (st.st_uid != geteuid())
    return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, 0,
                        "%s belongs to uid %u, not to the daemon's user (%u); refusing to put "
                        "the socket there", dir, (unsigned)st.st_uid, (unsigned)geteuid());
  mode_t want = d->socket_gid != (gid_t)-1 ? 0750 : 0700;
  if (d->socket_gid != (gid_t)-1 && st.st_gid != d->socket_gid &&
      chown(dir, (uid_t)-1, d->socket_gid) < 0)
    return cr_error_set(err, CR_E_IO, errno, "chgrp %s", dir);
  if ((st.st_mode & 07777) != want && chmod(dir, want) < 0)
    return cr_error_set(err, CR_E_IO, errno, "chmod %s", dir);
  return 0;
}

/* Refuses to start a second daemon on a live socket; removes a stale one. */
static int prepare_socket(server_ctx *d, const char *path, cr_error **err) {
  _cleanup_free_ char *dir = strdup(path);
  if (!dir) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "socket");
  int r = cr_mkdir_p(dirname(dir), 0700);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "creating the directory of %s", path);
  strcpy(dir, path);
  if (check_run_dir(d, dirname(dir), err) < 0) return -1;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sa.sun_path))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "socket path too long: %s", path);
  memcpy(sa.sun_path, path, strlen(path) + 1);
  _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
    return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, 0,
                        "another daemon is already listening on %s", path);
  unlink(path);
  return 0;
}

/* One daemon per data dir: an flock(2) on <data>/daemon.lock held for the
 * daemon's life (the kernel drops it when the daemon dies, however it dies).
 * Two daemons on one data dir would each reconcile the other's VMMs as
 * orphans and write the same state files. The lock file holds the pid of
 * its holder, for the error message. Returns the fd (kept open) or -1. */
#define DATA_LOCK_WAIT_MS 5000
static int lock_data_dir(cr_error **err) {
  _cleanup_free_ char *data = cr_data_dir();
  _cleanup_free_ char *path = cr_data_path("daemon.lock");
  if (!data || !path) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "data dir");
  int r = cr_mkdir_p(data, 0700);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "creating the data dir %s", data);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return cr_error_set(err, CR_E_IO, errno, "opening %s", path);
  /* a daemon that is still shutting down (its socket is gone already)
   * holds it for a moment more: wait for it, a bounded time, before the
   * loop runs */
  int tries = DATA_LOCK_WAIT_MS / 50;
  int lr;
  while ((lr = flock(fd, LOCK_EX | LOCK_NB)) < 0 && errno == EWOULDBLOCK && --tries > 0)
    nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
  if (lr < 0) {
    int e = errno;
    char pid[32] = "";
    ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
    if (n > 0) pid[strcspn(pid, "\n")] = 0;
    close(fd);
    if (e != EWOULDBLOCK) return cr_error_set(err, CR_E_IO, e, "locking %s", path);
    return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, 0,
                        "another daemon%s%s%s serves the data dir %s: stop it, or give this "
                        "one its own CLEANROOM_DATA_DIR",
                        *pid ? " (pid " : "", pid, *pid ? ")" : "", data);
  }
  char pid[32];
  int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
  if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
    log_warn("cannot write the pid into %s: %s", path, strerror(errno));
  return fd;
}

static const char *mcp_http_addr;

void daemon_set_mcp_http(const char *addr) { mcp_http_addr = addr; }

int daemon_run(const char *listen_path, cr_error **err) {
  server_ctx d = {0};
  d.api.loop = uv_default_loop();
  signal(SIGPIPE, SIG_IGN);
  /* Everything the daemon and its VMMs create (state, logs, sockets, guest
   * RAM files) is private unless made otherwise on purpose. */
  umask(077);
  d.socket_gid = (gid_t)-1;
  const char *grp = getenv("CLEANROOM_SOCKET_GROUP");
  if (grp && *grp) {
    struct group *g = getgrnam(grp);
    if (!g)
      return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                          "CLEANROOM_SOCKET_GROUP: no group named '%s'", grp);
    d.socket_gid = g->gr_gid;
  }
  const char *mc = getenv("CLEANROOM_MAX_CONNECTIONS");
  d.max_conns = mc && atoi(mc) > 0 ? atoi(mc) : CONN_MAX_DEFAULT;
  d.api.socket_path = listen_path ? strdup(listen_path) : cr_socket_path();
  if (!d.api.socket_path)
    return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, errno,
                        "no socket path: set CLEANROOM_RUN_DIR, XDG_RUNTIME_DIR or HOME");
  _cleanup_close_ int datalock = lock_data_dir(err);
  if (datalock < 0 || prepare_socket(&d, d.api.socket_path, err) < 0) {
    free(d.api.socket_path);
    return -1;
  }
  d.api.sandboxes = sbx_manager_new(d.api.loop, err);
  if (!d.api.sandboxes) {
    free(d.api.socket_path);
    return -1;
  }
  uv_pipe_init(d.api.loop, &d.server, 0);
  d.server.data = &d;
  int r = uv_pipe_bind(&d.server, d.api.socket_path);
  uv_os_fd_t sfd = -1;
  if (r == 0) {
    /* 0600; 0660 for a socket group */
    if (d.socket_gid != (gid_t)-1 && chown(d.api.socket_path, (uid_t)-1, d.socket_gid) < 0) r = -errno;
    if (r == 0 && chmod(d.api.socket_path, d.socket_gid != (gid_t)-1 ? 0660 : 0600) < 0) r = -errno;
    /* the kernel queues clients from here on; they are served once the
     * re-attached sandboxes have settled (below) */
    if (r == 0) r = uv_fileno((uv_handle_t *)&d.server, &sfd);
    if (r == 0 && listen(sfd, 128) < 0) r = -errno;
  }
  cr_error *herr = NULL;
  if (r == 0 && mcp_http_addr && mcp_http_start(&d.api, d.api.loop, mcp_http_addr, &herr) < 0) {
    *err = herr;
    unlink(d.api.socket_path);
    sbx_manager_free(d.api.sandboxes);
    uv_close((uv_handle_t *)&d.server, NULL);
    uv_run(d.api.loop, UV_RUN_DEFAULT);
    free(d.api.socket_path);
    return -1;
  }
  if (r < 0) {
    cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, -r, "listening on %s", d.api.socket_path);
    sbx_manager_free(d.api.sandboxes);
    uv_close((uv_handle_t *)&d.server, NULL);
    uv_run(d.api.loop, UV_RUN_DEFAULT);
    free(d.api.socket_path);
    return -1;
  }
  /* Serve once every re-attached sandbox is ready or failed (a client
   * asking right after a daemon restart sees the state it had), at most
   * after DAEMON_SETTLE_MAX_MS. */
  uv_timer_init(d.api.loop, &d.settle_timer);
  d.settle_timer.data = &d;
  uv_timer_start(&d.settle_timer, on_settle_timeout, DAEMON_SETTLE_MAX_MS, 0);
  sbx_manager_load(d.api.sandboxes, on_settled, &d, NULL);
  uv_signal_init(d.api.loop, &d.sigterm);
  uv_signal_init(d.api.loop, &d.sigint);
  d.sigterm.data = d.sigint.data = &d;
  uv_signal_start(&d.sigterm, on_signal, SIGTERM);
  uv_signal_start(&d.sigint, on_signal, SIGINT);
  fprintf(stderr, "cleanroom: listening on %s (pid %d)\n", d.api.socket_path, (int)getpid());
  uv_run(d.api.loop, UV_RUN_DEFAULT);
  /* shutdown: sandboxes keep running; close everything on the loop */
  unlink(d.api.socket_path);
  sbx_manager_free(d.api.sandboxes);
  uv_walk(d.api.loop, close_walk, NULL);
  uv_run(d.api.loop, UV_RUN_DEFAULT);
  uv_loop_close(d.api.loop);
  free(d.api.socket_path);
  return 0;
}

/* MCP Streamable HTTP transport (2025-03-26 and later) on the daemon, off by
 * default (cleanroom serve --mcp-http HOST:PORT). One endpoint, /mcp:
 *   POST   one JSON-RPC message. Requests are answered with an SSE stream
 *          (text/event-stream: the notifications sent while it is open, then
 *          the response) or, when the client accepts only JSON, with the
 *          response as application/json. Notifications/responses: 202.
 *          The initialize (or server/discover) that starts a session gets
 *          an Mcp-Session-Id header; later requests must carry it (404 for
 *          an unknown one).
 *   GET    405 (no server-initiated stream).
 *   DELETE ends the session.
 * Every request needs `Authorization: Bearer <token>` (the token is made on
 * first start and stored 0600 in <data>/mcp-token; `cleanroom mcp token`
 * prints it). A request with an Origin header that is not a loopback origin
 * is refused with 403 (DNS-rebinding protection). Bodies are bounded by
 * MCP_MAX_LINE; headers by MCP_HTTP_MAX_HEADERS (request parsing and these
 * checks: http-request.c, fuzzed by tests/fuzz/fuzz-http.c). Each connection serves one
 * request (Connection: close), which keeps the framing simple: an SSE body
 * ends when the connection closes. */
#include "mcp/mcp-internal.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/paths.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#define HTTP_MAX_SESSIONS 64

typedef struct http_sess http_sess;
typedef struct http_conn http_conn;

struct http_sess {
  http_sess *next;
  char id[33];
  mcp_session *s;
  http_conn *streams; /* open POST streams waiting for their responses */
};

struct http_conn {
  uv_tcp_t tcp;
  mcp_http_req req; /* the request, parsed (http-request.c) */
  http_conn *next_stream;
  http_sess *sess;
  bool closing, sse, headers_sent;
  json_t *wait_id; /* the request id this stream answers */
};

static struct {
  daemon_ctx *d;
  uv_loop_t *loop;
  uv_tcp_t server;
  char token[65];
  bool loopback; /* listening on a loopback address: Host must be loopback */
  http_sess *sessions;
  int n_sessions;
} H;

/* ---- token ---- */

static int load_or_make_token(cr_error **err) {
  _cleanup_free_ char *path = cr_data_path("mcp-token");
  if (!path) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "token path");
  _cleanup_free_ char *buf = NULL;
  size_t n = 0;
  if (cr_read_file(path, 1024, &buf, &n) == 0 && n >= 32) {
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = 0;
    snprintf(H.token, sizeof(H.token), "%.64s", buf);
    return 0;
  }
  unsigned char raw[32];
  if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
    return cr_error_set(err, CR_E_INTERNAL, errno, "getrandom");
  for (size_t i = 0; i < sizeof(raw); i++) snprintf(H.token + 2 * i, 3, "%02x", raw[i]);
  char line[80];
  snprintf(line, sizeof(line), "%s\n", H.token);
  int r = cr_write_file_atomic(path, line, strlen(line), 0600);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "writing %s", path);
  return 0;
}

/* ---- responses ---- */

static void on_written(uv_write_t *w, int status) {
  free(w->data);
  free(w);
}

static void conn_closed(uv_handle_t *h) {
  http_conn *c = h->data;
  mcp_http_req_done(&c->req);
  json_decref(c->wait_id);
  free(c);
}

static void stream_unlink(http_conn *c) {
  if (!c->sess) return;
  for (http_conn **p = &c->sess->streams; *p; p = &(*p)->next_stream)
    if (*p == c) {
      *p = c->next_stream;
      break;
    }
  c->sess = NULL;
}

static void conn_close(http_conn *c) {
  if (c->closing) return;
  c->closing = true;
  stream_unlink(c);
  uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void shutdown_done(uv_shutdown_t *req, int status) {
  http_conn *c = req->data;
  free(req);
  conn_close(c);
}

/* closes after everything queued was written */
static void conn_finish(http_conn *c) {
  if (c->closing) return;
  stream_unlink(c);
  uv_shutdown_t *req = malloc(sizeof(*req));
  if (!req || uv_shutdown(req, (uv_stream_t *)&c->tcp, shutdown_done) < 0) {
    free(req);
    conn_close(c);
    return;
  }
  req->data = c;
}

static void conn_write(http_conn *c, const char *data, size_t n) {
  if (c->closing) return;
  uv_write_t *w = malloc(sizeof(*w));
  char *copy = malloc(n ? n : 1);
  if (!w || !copy) {
    free(w);
    free(copy);
    return;
  }
  memcpy(copy, data, n);
  w->data = copy;
  uv_buf_t b = uv_buf_init(copy, (unsigned)n);
  if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
    free(copy);
    free(w);
  }
}

static void send_head(http_conn *c, int status, const char *reason, const char *ctype,
                      long long content_length, const char *extra) {
  char head[1024];
  int n = snprintf(head, sizeof(head),
                   "HTTP/1.1 %d %s\r\nConnection: close\r\nCache-Control: no-store\r\n"
                   "%s%s%s",
                   status, reason, ctype ? "Content-Type: " : "", ctype ? ctype : "",
                   ctype ? "\r\n" : "");
  if (content_length >= 0)
    n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: %lld\r\n", content_length);
  if (c->sess)
    n += snprintf(head + n, sizeof(head) - (size_t)n, "Mcp-Session-Id: %s\r\n", c->sess->id);
  n += snprintf(head + n, sizeof(head) - (size_t)n, "%s\r\n", extra ? extra : "");
  conn_write(c, head, (size_t)MIN((size_t)n, sizeof(head) - 1));
  c->headers_sent = true;
}

static void reply_plain(http_conn *c, int status, const char *reason, const char *body,
                        const char *extra) {
  size_t n = body ? strlen(body) : 0;
  send_head(c, status, reason, body ? "application/json" : NULL, (long long)n, extra);
  if (n) conn_write(c, body, n);
  conn_finish(c);
}

static void reply_rpc_error(http_conn *c, int status, const char *reason, int code,
                            const char *message) {
  _cleanup_json_ json_t *e = json_pack("{s:s, s:n, s:{s:i, s:s}}", "jsonrpc", "2.0", "id",
                                       "error", "code", code, "message", message);
  _cleanup_free_ char *t = json_dumps(e, JSON_COMPACT);
  reply_plain(c, status, reason, t, NULL);
}

/* ---- sessions ---- */

static http_sess *sess_find(const char *id) {
  for (http_sess *h = H.sessions; h; h = h->next)
    if (!strcmp(h->id, id)) return h;
  return NULL;
}

/* What the MCP session writes: a response goes to the stream waiting for its
 * id (which then ends); anything else to the newest open stream. */
static void sess_write(void *ud, const char *line, size_t len) {
  http_sess *h = ud;
  _cleanup_json_ json_t *m = json_loadb(line, len, 0, NULL);
  json_t *id = json_object_get(m, "id");
  bool response = m && !json_object_get(m, "method") && id;
  http_conn *target = NULL;
  for (http_conn *c = h->streams; c; c = c->next_stream) {
    if (response && c->wait_id && json_equal(c->wait_id, id)) {
      target = c;
      break;
    }
    if (!response && !target) target = c;
  }
  if (!target) return; /* nobody listening: dropped (no GET stream) */
  if (target->sse) {
    conn_write(target, "event: message\ndata: ", 21);
    conn_write(target, line, len);
    conn_write(target, "\n\n", 2);
  } else if (response) {
    send_head(target, 200, "OK", "application/json", (long long)len, NULL);
    conn_write(target, line, len);
  }
  if (response) conn_finish(target);
}

static void sess_free(http_sess *h) {
  for (http_sess **p = &H.sessions; *p; p = &(*p)->next)
    if (*p == h) {
      *p = h->next;
      break;
    }
  while (h->streams) conn_finish(h->streams);
  mcp_session_close(h->s);
  H.n_sessions--;
  free(h);
}

static http_sess *sess_new(void) {
  if (H.n_sessions >= HTTP_MAX_SESSIONS) return NULL;
  http_sess *h = calloc(1, sizeof(*h));
  if (!h) return NULL;
  unsigned char raw[16];
  if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
    free(h);
    return NULL;
  }
  for (size_t i = 0; i < sizeof(raw); i++) snprintf(h->id + 2 * i, 3, "%02x", raw[i]);
  h->s = mcp_session_new(H.d, sess_write, h);
  if (!h->s) {
    free(h);
    return NULL;
  }
  mcp_session_set_loop(h->s, H.loop);
  h->next = H.sessions;
  H.sessions = h;
  H.n_sessions++;
  return h;
}

/* ---- request handling ---- */

static void handle_request(http_conn *c) {
  const mcp_http_req *q = &c->req;
  const char *method = mcp_http_req_method(q);
  if (!mcp_http_origin_ok(q->origin) || !mcp_http_host_ok(q->host, H.loopback)) {
    reply_rpc_error(c, 403, "Forbidden", -32600,
                    "Origin/Host not allowed (only loopback origins and host names)");
    return;
  }
  if (!mcp_http_token_ok(q->auth, H.token)) {
    reply_rpc_error(c, 401, "Unauthorized", -32600,
                    "missing or wrong bearer token; see 'cleanroom mcp token' on the host");
    return;
  }
  http_sess *h = q->session_id[0] ? sess_find(q->session_id) : NULL;
  if (q->session_id[0] && !h) {
    reply_rpc_error(c, 404, "Not Found", -32600, "unknown Mcp-Session-Id; initialize again");
    return;
  }
  if (!strcmp(method, "DELETE")) {
    if (!h) return reply_rpc_error(c, 400, "Bad Request", -32600, "DELETE needs Mcp-Session-Id");
    sess_free(h);
    reply_plain(c, 200, "OK", NULL, NULL);
    return;
  }
  if (!strcmp(method, "GET")) {
    reply_plain(c, 405, "Method Not Allowed", NULL, "Allow: POST, DELETE\r\n");
    return;
  }
  if (strcmp(method, "POST")) {
    reply_plain(c, 405, "Method Not Allowed", NULL, "Allow: POST, DELETE\r\n");
    return;
  }
  json_error_t je;
  _cleanup_json_ json_t *msg = q->body.len ? json_loadb((const char *)q->body.data, q->body.len, 0, &je) : NULL;
  if (!msg) {
    reply_rpc_error(c, 400, "Bad Request", -32700, "parse error: the body must be one JSON-RPC message");
    return;
  }
  if (!json_is_object(msg)) {
    reply_rpc_error(c, 400, "Bad Request", -32600, "one JSON-RPC message per request (no batches)");
    return;
  }
  json_t *id = json_object_get(msg, "id");
  const char *m = json_string_value(json_object_get(msg, "method"));
  if (!h) {
    if (!m || !mcp_is_session_start(msg) || !id) {
      reply_rpc_error(c, 400, "Bad Request", -32600,
                      "no Mcp-Session-Id: the first request must be initialize");
      return;
    }
    h = sess_new();
    if (!h) {
      reply_rpc_error(c, 503, "Service Unavailable", -32603, "too many MCP HTTP sessions");
      return;
    }
  }
  c->sess = h;
  if (!m || !id) { /* notification or response: accepted */
    reply_plain(c, 202, "Accepted", NULL, NULL);
    mcp_session_handle_message(h->s, msg);
    return;
  }
  c->sse = strstr(q->accept, "text/event-stream") != NULL;
  c->wait_id = json_incref(id);
  c->next_stream = h->streams;
  h->streams = c;
  if (c->sse) send_head(c, 200, "OK", "text/event-stream", -1, NULL);
  mcp_session_handle_message(h->s, msg);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[65536];
  *buf = uv_buf_init(slab, sizeof(slab));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  http_conn *c = s->data;
  if (n < 0) { /* the client went away (or finished sending): a stream ends */
    if (!c->req.complete || n != UV_EOF) conn_close(c);
    return;
  }
  if (c->req.complete || n == 0) return;
  int r = mcp_http_req_feed(&c->req, buf->base, (size_t)n);
  if (r == 0) return;
  uv_read_stop(s);
  if (r == 1) handle_request(c);
  else
    reply_rpc_error(c, r, r == 413 ? "Payload Too Large" : "Bad Request", -32600,
                    r == 413 ? "request too large: at most 8388608 bytes per message"
                             : "malformed HTTP request");
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  http_conn *c = calloc(1, sizeof(*c));
  if (!c) return;
  uv_tcp_init(H.loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
    return;
  }
  mcp_http_req_init(&c->req);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int mcp_http_start(daemon_ctx *d, uv_loop_t *loop, const char *addr, cr_error **err) {
  H.d = d;
  H.loop = loop;
  char host[128];
  const char *colon = strrchr(addr, ':');
  if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof(host))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "--mcp-http %s: want HOST:PORT", addr);
  memcpy(host, addr, (size_t)(colon - addr));
  host[colon - addr] = 0;
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port < 0 || port > 65535)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "--mcp-http %s: bad port", addr);
  struct sockaddr_storage sa;
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&sa) != 0 &&
      uv_ip6_addr(host[0] == '[' ? host + 1 : host, (int)port, (struct sockaddr_in6 *)&sa) != 0)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "--mcp-http %s: want an IP address", addr);
  if (load_or_make_token(err) < 0) return -1;
  H.loopback = !strncmp(host, "127.", 4) || !strcmp(host, "::1") || !strcmp(host, "[::1]") ||
               !strcmp(host, "localhost");
  uv_tcp_init(loop, &H.server);
  int r = uv_tcp_bind(&H.server, (struct sockaddr *)&sa, 0);
  if (r == 0) r = uv_listen((uv_stream_t *)&H.server, 64, on_connection);
  if (r < 0) {
    uv_close((uv_handle_t *)&H.server, NULL);
    return cr_error_set(err, CR_E_DAEMON_UNAVAILABLE, -r, "--mcp-http %s: %s", addr,
                        uv_strerror(r));
  }
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  char name[64] = "";
  if (uv_tcp_getsockname(&H.server, (struct sockaddr *)&bound, &blen) == 0) {
    int p = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                             : ((struct sockaddr_in6 *)&bound)->sin6_port);
    char ip[48];
    uv_ip_name((struct sockaddr *)&bound, ip, sizeof(ip));
    snprintf(name, sizeof(name), bound.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, p);
  }
  /* where it listens, for clients and tests (port 0 picks one) */
  _cleanup_free_ char *rd = cr_run_dir();
  if (rd) {
    _cleanup_free_ char *f = cr_path_join(rd, "mcp-http.addr");
    char line[80];
    snprintf(line, sizeof(line), "%s\n", name);
    if (f) cr_write_file_atomic(f, line, strlen(line), 0644);
  }
  log_info("MCP over HTTP on http://%s/mcp", name);
  return 0;
}

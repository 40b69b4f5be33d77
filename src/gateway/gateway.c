/* The host gateway's loop side (gateway.h): listeners, connections,
 * routing and policy decisions, audit events; upstream work runs on a
 * thread per request (upstream.c) and comes back through one uv_async. */
#include "gateway/gateway.h"
#include "gateway/gateway-internal.h"
#include "policy/policy.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/paths.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define DEFAULT_PORT 8470
#define MAX_CONNS_PER_SBX 32
#define MAX_JOBS_PER_SBX 4
#define MAX_JOBS 32
#define DEFAULT_MAX_RESPONSE (512u << 20)
#define DEFAULT_MAX_BUFFERED (2ull << 30)
#define DEFAULT_REQUEST_TIMEOUT_MS 30000
#define DEFAULT_IDLE_TIMEOUT_MS 60000
#define DEFAULT_REVALIDATE_S 5

struct gw {
  uv_loop_t *loop;
  egress *eg;
  uint16_t port;
  char *cred_file;
  char goproxy[GW_MAX_URL]; /* "<scheme>/<host[:port]><path>" of the Go module proxy, or "" */
  char npm[GW_MAX_URL];     /* the same for the npm registry */
  char rubygems[GW_MAX_URL]; /* the same for the RubyGems source */
  char oci_insecure[1024];  /* ",host:port,..." registries reached over plain HTTP */
  char ca_file[256];        /* CLEANROOM_GATEWAY_CA_FILE: CA bundle for TLS upstreams */
  cache *cache;
  bool offline;
  unsigned revalidate_s, revalidate_refs_s; /* CLEANROOM_GATEWAY_REVALIDATE_S, _REFS_S */
  size_t max_response, max_buffered;
  atomic_size_t buffered;
  uint64_t request_timeout_ms, idle_timeout_ms;
  uv_async_t async;
  uv_mutex_t mu;
  gw_job *done; /* finished jobs (thread -> loop) */
  size_t jobs;  /* in flight */
  gw_job **running;
  size_t n_running, cap_running;
  atomic_bool stopping;
  uint64_t n_requests, n_upstream, n_hits, n_misses, n_denied;
};

struct gw_sbx {
  gw *g;
  egress_sbx *es;
  char id[32];
  char host[16];
  char host_header[24];
  uint8_t guest[4];
  uv_tcp_t listener;
  int refs; /* the listener + each connection */
  int conns, jobs;
  struct conn *conn_list;
  bool detached;
};

typedef struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer; /* idle_timeout_ms for a first byte, then request_timeout_ms for the rest */
  bool got_bytes;
  gw_sbx *s;
  gw_request req;
  char *pending; /* bytes after a complete request (pipelined) */
  size_t pending_len;
  gw_job *job;
  int refs; /* the handle + a job in flight */
  bool closing;
  char peer[16];
  struct conn *prev, *next; /* the sandbox's connections */
} conn;

typedef struct wreq {
  uv_write_t w;
  conn *c;
  size_t accounted; /* of gw.buffered, released when written */
  char *head;
  uint8_t *body;
  bool close_after;
} wreq;

/* ---- events */

static const char *route_name(gw_route_kind k) {
  switch (k) {
    case GW_ROUTE_GIT_INFO_REFS: return "git-info-refs";
    case GW_ROUTE_GIT_UPLOAD_PACK: return "git-upload-pack";
    case GW_ROUTE_GIT_RECEIVE_PACK: return "git-receive-pack";
    case GW_ROUTE_DOWNLOAD: return "download";
    case GW_ROUTE_GOPROXY: return "goproxy";
    case GW_ROUTE_NPM: return "npm";
    case GW_ROUTE_OCI: return "oci";
    case GW_ROUTE_GEMS: return "gems";
    default: return "none";
  }
}

static void event(gw_sbx *s, const char *action, const char *reason, const gw_route *rt,
                  const gw_job *j, int status) {
  json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:i}", "sandbox", s->id, "kind", "gateway",
                        "action", action, "reason", reason, "status", status);
  if (!e) return;
  if (rt && rt->host[0]) {
    json_object_set_new(e, "name", json_string(rt->host));
    json_object_set_new(e, "port", json_integer(rt->port));
    json_object_set_new(e, "route", json_string(route_name(rt->kind)));
    json_object_set_new(e, "url", json_string(rt->upstream_url));
  }
  if (j) {
    json_object_set_new(e, "bytes", json_integer((json_int_t)j->resp_len));
    json_object_set_new(e, "cache", json_string(j->cache_state ? j->cache_state
                                                : j->cacheable ? (j->cache_hit ? "hit" : "miss")
                                                : "none"));
    if (j->cred_used) json_object_set_new(e, "credential", json_true());
    if (j->redirects) json_object_set_new(e, "redirects", json_integer(j->redirects));
    if (j->detail[0]) json_object_set_new(e, "detail", json_string(j->detail));
  }
  egress_event_add(s->g->eg, e);
}

/* ---- lifetimes */

static void sbx_unref(gw_sbx *s) {
  if (--s->refs == 0) free(s);
}

static void conn_unref(conn *c) {
  if (--c->refs > 0) return;
  gw_request_free(&c->req);
  free(c->pending);
  gw_sbx *s = c->s;
  s->conns--;
  if (c->prev) c->prev->next = c->next;
  else s->conn_list = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c);
  sbx_unref(s);
}

static void conn_closed(uv_handle_t *h) { conn_unref(h->data); }

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = true;
  uv_close((uv_handle_t *)&c->tcp, conn_closed);
  uv_close((uv_handle_t *)&c->timer, conn_closed);
}

/* ---- responses */

static const char *status_text(int st) {
  switch (st) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
  }
}

static void start_reading(conn *c);

static void on_written(uv_write_t *w, int status) {
  wreq *r = container_of(w, wreq, w);
  conn *c = r->c;
  atomic_fetch_sub(&c->s->g->buffered, r->accounted);
  free(r->head);
  free(r->body);
  bool close_after = r->close_after;
  free(r);
  if (status < 0 || close_after || c->s->detached) conn_close(c);
  else start_reading(c);
  conn_unref(c);
}

/* Sends a response (takes body). */
static void respond_acct(conn *c, int status, const char *ctype, uint8_t *body, size_t len,
                         bool keep_alive, const char *reason, size_t accounted,
                         const char *extra) {
  wreq *r = calloc(1, sizeof(*r));
  if (!r) {
    atomic_fetch_sub(&c->s->g->buffered, accounted);
    free(body);
    conn_close(c);
    return;
  }
  if (c->req.parser.method == HTTP_HEAD) { /* the headers only (Content-Length says the size) */
    atomic_fetch_sub(&c->s->g->buffered, accounted);
    accounted = 0;
    free(body);
    body = NULL;
  }
  r->c = c;
  r->accounted = accounted;
  r->body = body;
  r->close_after = !keep_alive;
  int n = asprintf(&r->head,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Cache-Control: no-cache\r\n%s%s%s%sConnection: %s\r\n\r\n",
                   status, status_text(status), ctype, len, reason ? "X-Cleanroom-Reason: " : "",
                   reason ? reason : "", reason ? "\r\n" : "", extra ? extra : "",
                   keep_alive ? "keep-alive" : "close");
  if (n < 0) {
    atomic_fetch_sub(&c->s->g->buffered, accounted);
    free(body);
    free(r);
    conn_close(c);
    return;
  }
  uv_buf_t b[2] = {uv_buf_init(r->head, (unsigned)n), uv_buf_init((char *)body, (unsigned)len)};
  c->refs++;
  if (uv_write(&r->w, (uv_stream_t *)&c->tcp, b, len && body ? 2 : 1, on_written) < 0) {
    atomic_fetch_sub(&c->s->g->buffered, accounted);
    free(r->head);
    free(r->body);
    free(r);
    conn_close(c);
    conn_unref(c);
  }
}

static void respond(conn *c, int status, const char *ctype, uint8_t *body, size_t len,
                    bool keep_alive, const char *reason) {
  respond_acct(c, status, ctype, body, len, keep_alive, reason, 0, NULL);
}

static void respond_error(conn *c, int status, const char *reason, const char *msg) {
  size_t n = 0;
  const char *ctype = NULL;
  char *body = gw_error_body(c->req.url, reason, msg, &n, &ctype);
  if (!body) {
    conn_close(c);
    return;
  }
  respond(c, status, ctype, (uint8_t *)body, n, c->req.complete && c->req.keep_alive, reason);
}

/* ---- jobs */

static void job_thread(void *arg) {
  gw_job *j = arg;
  gw_upstream_run(j);
  gw *g = ((conn *)j->conn)->s->g; /* the conn stays alive while its job runs */
  uv_mutex_lock(&g->mu);
  j->next = g->done;
  g->done = j;
  uv_mutex_unlock(&g->mu);
  uv_async_send(&g->async);
}

static void job_free(gw_job *j) {
  if (j->accounted) atomic_fetch_sub(j->buffered, j->accounted);
  free(j->body);
  free(j->resp);
  free(j->policy_text);
  free(j);
}

static void running_remove(gw *g, gw_job *j) {
  for (size_t i = 0; i < g->n_running; i++)
    if (g->running[i] == j) {
      g->running[i] = g->running[--g->n_running];
      return;
    }
}

static void job_done(gw *g, gw_job *j) {
  uv_thread_join(&j->thread);
  running_remove(g, j);
  g->jobs--;
  conn *c = j->conn;
  gw_sbx *s = c->s;
  s->jobs--;
  c->job = NULL;
  g->n_upstream += !j->cache_hit && !(j->cache_state && !strcmp(j->cache_state, "fresh"));
  if (j->cacheable) {
    if (j->cache_hit) g->n_hits++;
    else g->n_misses++;
  }
  if (!c->closing && !s->detached) {
    bool ok = j->status == 200;
    event(s, ok ? "allow" : "deny", j->reason ? j->reason : "upstream_error", &j->rt, j, j->status);
    if (j->status >= 200 && j->status < 600 && (ok || !strcmp(j->reason, "upstream_error") ||
                                                !strcmp(j->reason, "upstream_auth_refused"))) {
      size_t acct = j->accounted;
      j->accounted = 0; /* released when written */
      char extra[128] = "";
      if (j->resp_digest[0])
        snprintf(extra, sizeof(extra), "Docker-Content-Digest: %s\r\n", j->resp_digest);
      if (j->rt.kind == GW_ROUTE_OCI)
        snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra),
                 "Docker-Distribution-API-Version: registry/2.0\r\n");
      respond_acct(c, j->status, j->resp_type[0] ? j->resp_type : "application/octet-stream",
                   TAKE_PTR(j->resp), j->resp_len, c->req.keep_alive, NULL, acct,
                   extra[0] ? extra : NULL);
    } else {
      respond_error(c, j->status ? j->status : 502, j->reason ? j->reason : "upstream_error",
                    j->detail);
    }
  }
  job_free(j);
  conn_unref(c);
}

static void on_async(uv_async_t *a) {
  gw *g = a->data;
  uv_mutex_lock(&g->mu);
  gw_job *list = g->done;
  g->done = NULL;
  uv_mutex_unlock(&g->mu);
  while (list) {
    gw_job *j = list;
    list = j->next;
    job_done(g, j);
  }
}

/* ---- requests */

/* Whether rt's registry is one of CLEANROOM_GATEWAY_OCI_INSECURE's
 * ("host[:port],..."): reached over plain HTTP (a registry on a private
 * network, the tests' registry). */
static bool oci_insecure(const gw *g, const gw_route *rt) {
  char want[GW_MAX_HOST + 12];
  if (rt->port_explicit) snprintf(want, sizeof(want), ",%s:%u,", rt->host, rt->port);
  else snprintf(want, sizeof(want), ",%s,", rt->host);
  return strstr(g->oci_insecure, want) != NULL;
}

static void handle_request(conn *c) {
  gw_sbx *s = c->s;
  gw *g = s->g;
  gw_request *q = &c->req;
  g->n_requests++;
  /* Host: exactly this listener (no forward proxy, no name games) */
  if (strcasecmp(q->host, s->host_header) &&
      !(g->port == 80 && !strcasecmp(q->host, s->host))) {
    g->n_denied++;
    event(s, "deny", "host_header_invalid", NULL, NULL, 400);
    respond_error(c, 400, "host_header_invalid", "the Host header must name this gateway");
    return;
  }
  gw_route rt;
  const char *reason = NULL;
  int status = 0;
  if (gw_route_parse(gw_request_method(q), q->url, &rt, &reason, &status) < 0) {
    g->n_denied++;
    event(s, "deny", reason, NULL, NULL, status);
    respond_error(c, status, reason, "not a gateway route");
    return;
  }
  if (rt.kind == GW_ROUTE_OCI_BASE) { /* the registry API's version check: nothing upstream */
    char *body = strdup("{}");
    respond_acct(c, 200, "application/json", (uint8_t *)body, body ? 2 : 0, q->keep_alive, NULL, 0,
                 "Docker-Distribution-API-Version: registry/2.0\r\n");
    return;
  }
  if (rt.kind == GW_ROUTE_OCI && oci_insecure(g, &rt)) {
    rt.https = false;
    gw_route_build_url(&rt, NULL);
  }
  const char *why = NULL;
  if (egress_sbx_match(s->es, rt.host, rt.port, &why) != POLICY_ALLOW) {
    g->n_denied++;
    why = why ? why : POLICY_REASON_HOST_NOT_ALLOWED;
    event(s, "deny", why, &rt, NULL, 403);
    respond_error(c, 403, why, "the sandbox's network policy does not allow this upstream");
    return;
  }
  if (rt.kind == GW_ROUTE_GIT_RECEIVE_PACK && !egress_sbx_git_push_allows(s->es, rt.host, rt.port)) {
    g->n_denied++;
    event(s, "deny", POLICY_REASON_PUSH_NOT_ALLOWED, &rt, NULL, 403);
    respond_error(c, 403, POLICY_REASON_PUSH_NOT_ALLOWED, "the sandbox's policy does not allow git push to this upstream "
                  "(sandbox.network.git_push)");
    return;
  }
  if (s->jobs >= MAX_JOBS_PER_SBX || g->jobs >= MAX_JOBS) {
    event(s, "deny", "resource_exhausted", &rt, NULL, 503);
    respond_error(c, 503, "resource_exhausted", "too many upstream requests");
    return;
  }
  gw_job *j = calloc(1, sizeof(*j));
  if (!j) {
    respond_error(c, 503, "resource_exhausted", "out of memory");
    return;
  }
  j->rt = rt;
  snprintf(j->content_type, sizeof(j->content_type), "%s", q->content_type);
  snprintf(j->content_encoding, sizeof(j->content_encoding), "%s", q->content_encoding);
  snprintf(j->git_protocol, sizeof(j->git_protocol), "%s", q->git_protocol);
  snprintf(j->accept, sizeof(j->accept), "%s", q->accept);
  snprintf(j->user_agent, sizeof(j->user_agent), "%s", q->user_agent);
  j->body = TAKE_PTR(q->body.data);
  j->body_len = q->body.len;
  cr_buf_free(&q->body);
  j->cred_file = g->cred_file;
  j->cache = g->cache;
  j->offline = g->offline;
  j->revalidate_s = g->revalidate_s;
  j->revalidate_refs_s = g->revalidate_refs_s;
  j->max_response = g->max_response;
  j->stopping = &g->stopping;
  j->buffered = &g->buffered;
  snprintf(j->gw_base, sizeof(j->gw_base), "http://%s", s->host_header);
  const char *pt = egress_sbx_policy_text(s->es);
  j->policy_text = pt ? strdup(pt) : NULL;
  snprintf(j->ca_file, sizeof(j->ca_file), "%s", g->ca_file);
  j->max_buffered = g->max_buffered;
  egress_pool(egress_sbx_owner(s->es), &j->pool, &j->pool_mask);
  j->conn = c;
  if (g->n_running == g->cap_running) {
    size_t cap = g->cap_running ? g->cap_running * 2 : 16;
    gw_job **nv = realloc(g->running, cap * sizeof(*nv));
    if (!nv) {
      job_free(j);
      respond_error(c, 503, "resource_exhausted", "out of memory");
      return;
    }
    g->running = nv;
    g->cap_running = cap;
  }
  c->refs++;
  c->job = j;
  if (uv_thread_create(&j->thread, job_thread, j) != 0) {
    c->refs--;
    c->job = NULL;
    job_free(j);
    respond_error(c, 503, "resource_exhausted", "no thread for the upstream request");
    return;
  }
  g->running[g->n_running++] = j;
  g->jobs++;
  s->jobs++;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[65536];
  *buf = uv_buf_init(slab, sizeof(slab));
}

/* Feeds bytes; on a complete request stops reading and handles it, keeping
 * what follows for the next one. */
static void feed(conn *c, const char *data, size_t n) {
  long used = gw_request_feed(&c->req, data, n);
  if (used < 0) {
    c->s->g->n_denied++;
    event(c->s, "deny", c->req.reason, NULL, NULL, c->req.status);
    c->req.keep_alive = false;
    respond_error(c, c->req.status, c->req.reason, "request refused");
    uv_read_stop((uv_stream_t *)&c->tcp);
    return;
  }
  if (!c->req.complete) return;
  uv_timer_stop(&c->timer);
  uv_read_stop((uv_stream_t *)&c->tcp);
  size_t rest = n - (size_t)used;
  if (rest) {
    if (rest > GW_MAX_HEAD + GW_MAX_BODY) {
      conn_close(c);
      return;
    }
    char *p = malloc(rest);
    if (!p) {
      conn_close(c);
      return;
    }
    memcpy(p, data + used, rest);
    free(c->pending);
    c->pending = p;
    c->pending_len = rest;
  }
  handle_request(c);
}

static void on_request_timeout(uv_timer_t *t);

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  conn *c = st->data;
  if (n < 0) {
    conn_close(c);
    return;
  }
  if (n > 0) {
    if (!c->got_bytes)
      uv_timer_start(&c->timer, on_request_timeout, c->s->g->request_timeout_ms, 0);
    c->got_bytes = true;
    feed(c, buf->base, (size_t)n);
  }
}

/* No whole request in time: a slow or idle client loses its connection
 * (an idle keep-alive one silently). */
static void on_request_timeout(uv_timer_t *t) {
  conn *c = t->data;
  if (c->got_bytes) event(c->s, "deny", "request_timeout", NULL, NULL, 408);
  conn_close(c);
}

static void start_reading(conn *c) {
  gw_request_free(&c->req);
  gw_request_init(&c->req);
  c->got_bytes = c->pending_len > 0;
  uv_timer_start(&c->timer, on_request_timeout,
                 c->got_bytes ? c->s->g->request_timeout_ms : c->s->g->idle_timeout_ms, 0);
  if (c->pending) {
    char *p = TAKE_PTR(c->pending);
    size_t n = c->pending_len;
    c->pending_len = 0;
    feed(c, p, n);
    free(p);
    if (c->req.complete || c->req.reason || c->closing) return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void listener_closed(uv_handle_t *h);

static void on_connection(uv_stream_t *server, int status) {
  gw_sbx *s = server->data;
  if (status < 0) return;
  conn *c = calloc(1, sizeof(*c));
  if (!c) return;
  c->s = s;
  c->refs = 2; /* the socket and the timer handles */
  s->refs++;
  s->conns++;
  c->next = s->conn_list;
  if (c->next) c->next->prev = c;
  s->conn_list = c;
  uv_tcp_init(s->g->loop, &c->tcp);
  uv_timer_init(s->g->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  gw_request_init(&c->req);
  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
    conn_close(c);
    return;
  }
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  bool from_guest = false;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    from_guest = !memcmp(&in->sin_addr, s->guest, 4);
    inet_ntop(AF_INET, &in->sin_addr, c->peer, sizeof(c->peer));
  }
  if (!from_guest) { /* only the sandbox's own address (egress drops spoofed ones first) */
    event(s, "deny", "spoofed_source", NULL, NULL, 0);
    conn_close(c);
    return;
  }
  if (s->conns > MAX_CONNS_PER_SBX) {
    event(s, "deny", "resource_exhausted", NULL, NULL, 0);
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_timer_start(&c->timer, on_request_timeout, s->g->idle_timeout_ms, 0);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- attach / detach */

int gw_attach(gw *g, egress_sbx *es, gw_sbx **ret, cr_error **err) {
  gw_sbx *s = calloc(1, sizeof(*s));
  if (!s) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "gateway");
  s->g = g;
  s->es = es;
  snprintf(s->id, sizeof(s->id), "%s", egress_sbx_id(es));
  snprintf(s->host, sizeof(s->host), "%s", egress_sbx_host_addr(es));
  snprintf(s->host_header, sizeof(s->host_header), "%s:%u", s->host, g->port);
  egress_sbx_guest_ip(es, s->guest);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    free(s);
    return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, errno, "gateway socket");
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(fd, SOL_IP, IP_FREEBIND, &one, sizeof(one));
  const char *tap = egress_sbx_tap(es);
  setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, tap, (socklen_t)strlen(tap));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(g->port)};
  inet_pton(AF_INET, s->host, &a.sin_addr);
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 64) < 0) {
    int r = errno;
    close(fd);
    free(s);
    return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, r, "binding the gateway to %s:%u",
                        egress_sbx_host_addr(es), g->port);
  }
  uv_tcp_init(g->loop, &s->listener);
  s->listener.data = s;
  s->refs = 1;
  int r;
  if ((r = uv_tcp_open(&s->listener, fd)) < 0 ||
      (r = uv_listen((uv_stream_t *)&s->listener, 64, on_connection)) < 0) {
    s->detached = true;
    uv_close((uv_handle_t *)&s->listener, listener_closed);
    return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, -r, "gateway listener");
  }
  *ret = s;
  return 0;
}

static void listener_closed(uv_handle_t *h) { sbx_unref(h->data); }

void gw_detach(gw_sbx *s) {
  if (!s) return;
  s->detached = true;
  for (conn *c = s->conn_list; c; c = c->next) conn_close(c);
  uv_close((uv_handle_t *)&s->listener, listener_closed);
}

json_t *gw_exec_env(const gw_sbx *s) {
  char base[64];
  snprintf(base, sizeof(base), "http://%s:%u/git/", s->host, s->g->port);
  json_t *a = json_array();
  char kv[GW_MAX_URL + 128];
  if (s->g->goproxy[0]) {
    snprintf(kv, sizeof(kv), "GOPROXY=http://%s:%u/go/%s", s->host, s->g->port, s->g->goproxy);
    json_array_append_new(a, json_string(kv));
  }
  if (s->g->npm[0]) {
    snprintf(kv, sizeof(kv), "npm_config_registry=http://%s:%u/npm/%s/", s->host, s->g->port,
             s->g->npm);
    json_array_append_new(a, json_string(kv));
  }
  if (s->g->rubygems[0]) {
    /* bundler mirrors rubygems.org to us; `gem` takes the source by hand:
     * gem install --clear-sources --source "$CLEANROOM_RUBYGEMS_SOURCE" NAME */
    snprintf(kv, sizeof(kv), "BUNDLE_MIRROR__HTTPS://RUBYGEMS__ORG/=http://%s:%u/gems/%s/", s->host,
             s->g->port, s->g->rubygems);
    json_array_append_new(a, json_string(kv));
    snprintf(kv, sizeof(kv), "CLEANROOM_RUBYGEMS_SOURCE=http://%s:%u/gems/%s/", s->host, s->g->port,
             s->g->rubygems);
    json_array_append_new(a, json_string(kv));
  }
  json_array_append_new(a, json_string("GIT_CONFIG_COUNT=2"));
  snprintf(kv, sizeof(kv), "GIT_CONFIG_KEY_0=url.%shttps/.insteadOf", base);
  json_array_append_new(a, json_string(kv));
  json_array_append_new(a, json_string("GIT_CONFIG_VALUE_0=https://"));
  snprintf(kv, sizeof(kv), "GIT_CONFIG_KEY_1=url.%shttp/.insteadOf", base);
  json_array_append_new(a, json_string(kv));
  json_array_append_new(a, json_string("GIT_CONFIG_VALUE_1=http://"));
  return a;
}

json_t *gw_stats(const gw *g) {
  return json_pack("{s:i, s:I, s:I, s:I, s:I, s:I, s:b}", "port", g->port, "requests",
                   (json_int_t)g->n_requests, "upstream_requests", (json_int_t)g->n_upstream,
                   "cache_hits", (json_int_t)g->n_hits, "cache_misses", (json_int_t)g->n_misses,
                   "denied", (json_int_t)g->n_denied, "offline", g->offline);
}

uint16_t gw_port(const gw *g) { return g ? g->port : 0; }

/* ---- setup */

/* $var (else def) "http(s)://host[:port][/path]" as "<scheme>/host[:port][/path]"
 * without a trailing '/'; "" when "off" or not such a URL. */
static void upstream_base(const char *var, const char *def, char *out, size_t cap) {
  const char *v = getenv(var);
  if (!v) v = def;
  out[0] = '\0';
  if (!*v || !strcmp(v, "off")) return;
  const char *rest = !strncmp(v, "https://", 8) ? v + 8 : !strncmp(v, "http://", 7) ? v + 7 : NULL;
  if (!rest || strlen(v) + 8 >= cap) {
    log_warn("gateway: %s=%s: want an http(s) URL; the guest's setting is not made", var, v);
    return;
  }
  snprintf(out, cap, "%s/%s", v[4] == 's' ? "https" : "http", rest);
  size_t n = strlen(out);
  while (n && out[n - 1] == '/') out[--n] = '\0';
}

int gw_new(uv_loop_t *loop, egress *e, gw **ret, cr_error **err) {
  *ret = NULL;
  const char *p = getenv("CLEANROOM_GATEWAY_PORT");
  unsigned long port = DEFAULT_PORT;
  if (p && *p) {
    if (!strcmp(p, "off")) return 0;
    char *end;
    port = strtoul(p, &end, 10);
    if (*end || port > 65535)
      return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "CLEANROOM_GATEWAY_PORT=%s", p);
    if (port == 0) return 0;
  }
  gw *g = calloc(1, sizeof(*g));
  if (!g) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "gateway");
  g->loop = loop;
  g->eg = e;
  g->port = (uint16_t)port;
  const char *cf = getenv("CLEANROOM_GATEWAY_CREDENTIALS");
  if (cf && *cf) g->cred_file = strdup(cf);
  else if (access("/etc/cleanroom/gateway-credentials.json", R_OK) == 0)
    g->cred_file = strdup("/etc/cleanroom/gateway-credentials.json");
  const char *off = getenv("CLEANROOM_GATEWAY_OFFLINE");
  g->offline = off && !strcmp(off, "1");
  /* how long a mutable answer is served from the cache before it is
   * revalidated: package indexes, Go lists, OCI tags; git refs apart (a
   * fetch right after a push must see it: 0 by default) */
  g->revalidate_s = DEFAULT_REVALIDATE_S;
  g->revalidate_refs_s = 0;
  static const struct {
    const char *var;
    size_t off;
  } rv[] = {{"CLEANROOM_GATEWAY_REVALIDATE_S", offsetof(gw, revalidate_s)},
            {"CLEANROOM_GATEWAY_REVALIDATE_REFS_S", offsetof(gw, revalidate_refs_s)}};
  for (size_t i = 0; i < ELEMENTSOF(rv); i++) {
    const char *v = getenv(rv[i].var);
    char *end = NULL;
    unsigned long n = v && *v ? strtoul(v, &end, 10) : 0;
    if (v && *v && (*end || n > 86400))
      log_warn("gateway: %s=%s: want seconds (0-86400); keeping the default", rv[i].var, v);
    else if (v && *v)
      *(unsigned *)((char *)g + rv[i].off) = (unsigned)n;
  }
  g->max_response = DEFAULT_MAX_RESPONSE;
  const char *mr = getenv("CLEANROOM_GATEWAY_MAX_RESPONSE");
  if (mr && *mr) {
    unsigned long long v = strtoull(mr, NULL, 10);
    if (v) g->max_response = (size_t)v;
  }
  g->max_buffered = DEFAULT_MAX_BUFFERED;
  const char *mb = getenv("CLEANROOM_GATEWAY_MAX_BUFFERED");
  if (mb && *mb) {
    unsigned long long v = strtoull(mb, NULL, 10);
    if (v) g->max_buffered = (size_t)v;
  }
  g->request_timeout_ms = DEFAULT_REQUEST_TIMEOUT_MS;
  const char *rt = getenv("CLEANROOM_GATEWAY_REQUEST_TIMEOUT_MS");
  if (rt && *rt) {
    unsigned long long v = strtoull(rt, NULL, 10);
    if (v) g->request_timeout_ms = v;
  }
  g->idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
  const char *it = getenv("CLEANROOM_GATEWAY_IDLE_TIMEOUT_MS");
  if (it && *it) {
    unsigned long long v = strtoull(it, NULL, 10);
    if (v) g->idle_timeout_ms = v;
  }
  /* the Go module proxy and npm registry the guest's GOPROXY and
   * npm_config_registry go to, through us */
  upstream_base("CLEANROOM_GATEWAY_GOPROXY", "https://proxy.golang.org", g->goproxy,
                sizeof(g->goproxy));
  upstream_base("CLEANROOM_GATEWAY_NPM_REGISTRY", "https://registry.npmjs.org", g->npm,
                sizeof(g->npm));
  upstream_base("CLEANROOM_GATEWAY_RUBYGEMS", "https://rubygems.org", g->rubygems,
                sizeof(g->rubygems));
  const char *ca = getenv("CLEANROOM_GATEWAY_CA_FILE");
  snprintf(g->ca_file, sizeof(g->ca_file), "%s", ca && *ca == '/' ? ca : "");
  const char *oi = getenv("CLEANROOM_GATEWAY_OCI_INSECURE");
  snprintf(g->oci_insecure, sizeof(g->oci_insecure), ",%s,", oi ? oi : "");
  for (char *q = g->oci_insecure; *q; q++)
    if (*q == ' ') *q = ',';
  cr_error *cerr = NULL;
  if (cache_open_local(NULL, 0, &g->cache, &cerr) < 0) {
    log_warn("gateway: content cache unavailable (%s): nothing is cached",
             cerr ? cerr->message : "?");
    cr_error_free(cerr);
    g->cache = NULL;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  uv_mutex_init(&g->mu);
  uv_async_init(loop, &g->async, on_async);
  g->async.data = g;
  uv_unref((uv_handle_t *)&g->async);
  egress_set_gateway_port(e, g->port);
  *ret = g;
  return 0;
}

static void async_closed(uv_handle_t *h) {
  gw *g = h->data;
  uv_mutex_destroy(&g->mu);
  free(g->running);
  free(g->cred_file);
  cache_close(g->cache);
  free(g);
}

void gw_free(gw *g) {
  if (!g) return;
  atomic_store(&g->stopping, true); /* upstream transfers abort */
  for (size_t i = 0; i < g->n_running; i++) uv_thread_join(&g->running[i]->thread);
  g->n_running = 0;
  uv_mutex_lock(&g->mu);
  gw_job *list = g->done;
  g->done = NULL;
  uv_mutex_unlock(&g->mu);
  while (list) {
    gw_job *j = list;
    list = j->next;
    conn *c = j->conn;
    c->job = NULL;
    job_free(j);
    conn_unref(c);
  }
  uv_close((uv_handle_t *)&g->async, async_closed);
}

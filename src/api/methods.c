/* Control API methods (docs/api.md): JSON in, sandbox layer calls, JSON out. */
#include "api/api.h"
#include "api/methods-cache.h"
#include "api/methods-workspace.h"
#include "api/pull.h"
#include "backend/backend.h"
#include "config.h"
#include "egress/egress.h"
#include "image/image.h"
#include "util/base64.h"
#include "util/log.h"
#include "util/paths.h"

#include <signal.h>
#include <string.h>

typedef struct req {
  daemon_ctx *d;
  api_sink *sink;
  json_t *id; /* NULL for notifications */
  json_t *params;
  const api_bytes *bytes; /* in process: file.write's or execution.write's data */
} req;

typedef void (*method_fn)(req *r);

/* ---- replies */

static void reply(req *r, json_t *result) {
  if (r->id) api_sink_result(r->sink, r->id, result, NULL);
  else json_decref(result);
}

static void reply_err(req *r, const cr_error *e) {
  if (r->id)
    api_sink_error(r->sink, r->id, API_OPERATION_FAILED, e && e->message ? e->message : "failed",
                   cr_error_reason(e));
}

static void bad_params(req *r, const char *fmt, ...) _printf_(2, 3);
static void bad_params(req *r, const char *fmt, ...) {
  char m[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m, sizeof(m), fmt, ap);
  va_end(ap);
  if (r->id) api_sink_error(r->sink, r->id, API_INVALID_PARAMS, m, CR_E_INVALID_ARGUMENT);
}

/* A request that outlives the dispatch call. */
static req *req_keep(req *r) {
  req *k = calloc(1, sizeof(*k));
  k->d = r->d;
  k->sink = api_sink_ref(r->sink);
  k->id = r->id ? json_incref(r->id) : NULL;
  k->params = json_incref(r->params);
  return k;
}

static void req_free(req *k) {
  api_sink_unref(k->sink);
  json_decref(k->id);
  json_decref(k->params);
  free(k);
}

static const char *pstr(req *r, const char *key) {
  return json_string_value(json_object_get(r->params, key));
}

static sbx *need_sandbox(req *r, const char *key) {
  const char *id = pstr(r, key);
  if (!id) {
    bad_params(r, "missing '%s' (a sandbox id)", key);
    return NULL;
  }
  sbx *s = sbx_find(r->d->sandboxes, id);
  if (!s) {
    cr_error *e = NULL;
    cr_error_set(&e, CR_E_SANDBOX_NOT_FOUND, 0,
                 "no sandbox '%s'; list them with 'cleanroom sandbox ls'", id);
    reply_err(r, e);
    cr_error_free(e);
  }
  return s;
}

static sbx_exec *need_exec(req *r) {
  const char *id = pstr(r, "execution_id");
  if (!id) {
    bad_params(r, "missing 'execution_id'");
    return NULL;
  }
  sbx_exec *e = sbx_exec_find(r->d->sandboxes, id);
  if (!e) {
    cr_error *err = NULL;
    cr_error_set(&err, CR_E_EXECUTION_NOT_FOUND, 0,
                 "no execution '%s'; list them with 'cleanroom execution ls'", id);
    reply_err(r, err);
    cr_error_free(err);
  }
  return e;
}

/* ---- system */

static void m_system_info(req *r) {
  json_t *caps = backend_default()->capabilities();
  /* what this host enforces: egress on the backend's TAP (src/egress) */
  const char *netcap = json_string_value(json_object_get(caps, "network"));
  if (!json_is_true(json_object_get(caps, "egress")) && netcap && !strcmp(netcap, "tap"))
    json_object_set_new(caps, "egress", json_boolean(egress_host_capable(NULL)));
  reply(r, json_pack("{s:s, s:s, s:s, s:i, s:s, s:o, s:o}", "version", CR_VERSION, "backend",
                     backend_default()->name, "accel", backend_accel(), "pid", (int)getpid(),
                     "socket", r->d->socket_path, "capabilities", caps, "pool",
                     sbx_pool_info(r->d->sandboxes)));
}

/* ---- sandboxes */

static void create_progress(void *ud, const char *phase, const char *message) {
  req *k = ud;
  api_sink_notify(k->sink, "sandbox.progress",
                  json_pack("{s:O?, s:s, s:s}", "request_id", k->id, "phase", phase, "message",
                            message));
}

static void create_done(void *ud, sbx *s, cr_error *err) {
  req *k = ud;
  if (err) reply_err(k, err);
  else {
    sbx_detach_progress(s);
    reply(k, sbx_to_json(s));
  }
  cr_error_free(err);
  req_free(k);
}

static void m_sandbox_create(req *r);

/* sandbox.create with an image that names a registry and is not stored:
 * pull it first (progress as sandbox.progress phase "pulling"). */
static void create_pull_progress(void *ud, const char *phase, uint64_t done, uint64_t total) {
  req *k = ud;
  char msg[160];
  snprintf(msg, sizeof(msg), "%s %llu/%llu bytes", phase, (unsigned long long)done,
           (unsigned long long)total);
  create_progress(k, "pulling", msg);
}

static void create_pull_done(void *ud, const image_info *info, const image_pull_stats *st,
                             cr_error *err) {
  req *k = ud;
  if (err) reply_err(k, err);
  else m_sandbox_create(k);
  cr_error_free(err);
  req_free(k);
}

static bool create_needs_pull(req *r) {
  const char *img = pstr(r, "image");
  if (!img || !*img)
    img = json_string_value(json_object_get(
        json_object_get(json_object_get(json_object_get(r->params, "policy"), "sandbox"), "image"),
        "ref"));
  if (!api_ref_names_registry(img) || json_is_true(json_object_get(r->params, "no_pull")))
    return false;
  _cleanup_image_info_ image_info *info = NULL;
  cr_error *e = NULL;
  bool missing = image_lookup(img, &info, &e) < 0 && !strcmp(cr_error_reason(e), CR_E_IMAGE_NOT_FOUND);
  cr_error_free(e);
  if (!missing) return false;
  req *k = req_keep(r);
  /* the retry after the pull must not pull again */
  json_t *copy = json_deep_copy(k->params);
  json_decref(k->params);
  k->params = copy;
  json_object_set_new(copy, "no_pull", json_true());
  if (api_pull_start(r->d, img, r->params, create_pull_progress, create_pull_done, k, &e) < 0) {
    reply_err(r, e);
    cr_error_free(e);
    req_free(k);
  }
  return true;
}

static void m_sandbox_create(req *r) {
  if (create_needs_pull(r)) return;
  json_t *p = r->params;
  if (json_object_get(p, "workspace") && !json_is_null(json_object_get(p, "workspace")))
    return api_ws_sandbox_create(r->d, r->sink, r->id, p);
  json_t *vc = json_object_get(p, "vcpus"), *mem = json_object_get(p, "memory_mib");
  if ((vc && (!json_is_integer(vc) || json_integer_value(vc) < 0)) ||
      (mem && (!json_is_integer(mem) || json_integer_value(mem) < 0)))
    return bad_params(r, "vcpus and memory_mib must be non-negative integers");
  json_t *pol = json_object_get(p, "policy");
  sbx_create_params cp = {
      .image = pstr(r, "image"),
      .vcpus = (unsigned)json_integer_value(vc),
      .memory_mib = (unsigned)json_integer_value(mem),
      .policy = json_is_object(pol) ? pol : NULL,
      .policy_hash = pstr(r, "policy_hash"),
      .cold = json_is_true(json_object_get(p, "cold")),
      .from_snapshot = pstr(r, "from_snapshot"),
  };
  req *k = req_keep(r);
  cr_error *err = NULL;
  if (sbx_create(r->d->sandboxes, &cp, create_done, create_progress, k, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    req_free(k);
  }
}

static void m_sandbox_get(req *r) {
  sbx *s = need_sandbox(r, "id");
  if (s) reply(r, sbx_to_json(s));
}

static void m_sandbox_list(req *r) {
  size_t n = 0;
  sbx **v = sbx_list(r->d->sandboxes, &n);
  json_t *a = json_array();
  for (size_t i = 0; i < n; i++) json_array_append_new(a, sbx_to_json(v[i]));
  free(v);
  reply(r, json_pack("{s:o}", "sandboxes", a));
}

/* events.list {sandbox?, action?, since?, limit?}: egress audit events (DNS
 * decisions, dropped connections), oldest first; they survive a daemon
 * restart (<data>/egress/events.jsonl). */
static void m_events_list(req *r) {
  const char *id = json_string_value(json_object_get(r->params, "sandbox"));
  const char *action = json_string_value(json_object_get(r->params, "action"));
  json_t *since_j = json_object_get(r->params, "since");
  json_t *limit_j = json_object_get(r->params, "limit");
  if ((since_j && !json_is_integer(since_j)) || (limit_j && !json_is_integer(limit_j)) ||
      (json_object_get(r->params, "sandbox") && !id) ||
      (json_object_get(r->params, "action") && !action)) {
    bad_params(r, "events.list: sandbox and action are strings, since and limit are integers");
    return;
  }
  if (action && strcmp(action, "allow") && strcmp(action, "deny") && strcmp(action, "attach") &&
      strcmp(action, "detach")) {
    bad_params(r, "events.list: action is allow, deny, attach or detach");
    return;
  }
  json_int_t since = since_j ? json_integer_value(since_j) : 0;
  json_int_t limit = limit_j ? json_integer_value(limit_j) : 100;
  if (since < 0 || limit < 1 || limit > 1000) {
    bad_params(r, "events.list: since >= 0, limit 1-1000");
    return;
  }
  char idbuf[32] = "";
  if (id) {
    sbx *s = sbx_find(r->d->sandboxes, id);
    /* a removed sandbox's events stay visible under its id */
    snprintf(idbuf, sizeof(idbuf), "%s", s ? sbx_id(s) : id);
  }
  egress *eg = sbx_manager_egress(r->d->sandboxes);
  reply(r, json_pack("{s:o, s:I}", "events",
                     egress_events(eg, id ? idbuf : NULL, action, (uint64_t)since, (size_t)limit),
                     "last_seq", (json_int_t)egress_events_last(eg)));
}

typedef struct terminate_req {
  req *k;
  char id[32];
} terminate_req;

static void terminate_done(void *ud, cr_error *err) {
  terminate_req *t = ud;
  if (err)
    reply_err(t->k, err);
  else
    reply(t->k, json_pack("{s:s, s:s}", "id", t->id, "state", "stopped"));
  cr_error_free(err);
  req_free(t->k);
  free(t);
}

/* Answered once the VMM is gone; the loop keeps serving others meanwhile. */
static void m_sandbox_terminate(req *r) {
  sbx *s = need_sandbox(r, "id");
  if (!s) return;
  terminate_req *t = calloc(1, sizeof(*t));
  if (!t) {
    cr_error *e = NULL;
    cr_error_set(&e, CR_E_INTERNAL, ENOMEM, "terminate");
    reply_err(r, e);
    cr_error_free(e);
    return;
  }
  snprintf(t->id, sizeof(t->id), "%s", sbx_id(s));
  t->k = req_keep(r);
  cr_error *err = NULL;
  if (sbx_terminate(r->d->sandboxes, s, terminate_done, t, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    req_free(t->k);
    free(t);
  }
}

/* ---- executions */

typedef struct attach {
  api_sink *sink;
  char id[27];
} attach;

static void attach_output(void *ud, sbx_exec *e, int stream, const uint8_t *data, size_t n) {
  attach *a = ud;
  api_sink_output(a->sink, a->id, stream, data, n);
}

static void attach_ended(void *ud, sbx_exec *e) {
  attach *a = ud;
  api_sink_notify(a->sink, "execution.exit",
                  json_pack("{s:s, s:o}", "execution_id", a->id, "execution",
                            sbx_exec_to_json(e)));
  api_sink_unref(a->sink);
  free(a);
}

static void m_execution_create(req *r) {
  sbx *s = need_sandbox(r, "sandbox_id");
  if (!s) return;
  json_t *argv = json_object_get(r->params, "argv");
  json_t *env = json_object_get(r->params, "env");
  json_t *to = json_object_get(r->params, "timeout_ms");
  if (!json_is_array(argv) || json_array_size(argv) == 0)
    return bad_params(r, "'argv' must be a non-empty array of strings");
  if (env && !json_is_array(env) && !json_is_null(env))
    return bad_params(r, "'env' must be an array of \"KEY=VALUE\" strings");
  if (to && (!json_is_integer(to) || json_integer_value(to) < 0))
    return bad_params(r, "'timeout_ms' must be a non-negative integer (0 = no timeout)");
  json_t *rows = json_object_get(r->params, "rows"), *cols = json_object_get(r->params, "cols");
  if ((rows && (!json_is_integer(rows) || json_integer_value(rows) < 1 ||
                json_integer_value(rows) > 65535)) ||
      (cols && (!json_is_integer(cols) || json_integer_value(cols) < 1 ||
                json_integer_value(cols) > 65535)))
    return bad_params(r, "'rows' and 'cols' must be integers 1-65535");
  sbx_exec_params ep = {
      .argv = argv,
      .env = json_is_array(env) ? env : NULL,
      .cwd = pstr(r, "cwd"),
      .stdin_open = json_is_true(json_object_get(r->params, "stdin")),
      .timeout_ms = to ? (uint64_t)json_integer_value(to) : 0,
      .tty = json_is_true(json_object_get(r->params, "tty")),
      .rows = (uint16_t)json_integer_value(rows),
      .cols = (uint16_t)json_integer_value(cols),
  };
  sbx_exec *e = NULL;
  cr_error *err = NULL;
  if (sbx_exec_start(s, &ep, &e, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    return;
  }
  reply(r, json_pack("{s:s, s:s}", "execution_id", sbx_exec_id(e), "sandbox_id", sbx_id(s)));
  json_t *at = json_object_get(r->params, "attach");
  if (at && !json_is_true(at)) return;
  attach *a = calloc(1, sizeof(*a));
  if (!a) return;
  a->sink = api_sink_ref(r->sink);
  snprintf(a->id, sizeof(a->id), "%s", sbx_exec_id(e));
  sbx_exec_observer o = {attach_output, attach_ended, a};
  if (sbx_exec_observe(e, &o) < 0) {
    api_sink_unref(a->sink);
    free(a);
  }
}

static void replay_none(void *ud, int stream, const uint8_t *data, size_t n) {}

static void replay_chunk(void *ud, int stream, const uint8_t *data, size_t n) {
  attach_output(ud, NULL, stream, data, n);
}

/* Streams an execution to this connection: buffered output from cursor,
 * then live output, then execution.exit (at once when it has ended). */
static void m_execution_attach(req *r) {
  sbx_exec *e = need_exec(r);
  if (!e) return;
  json_t *c = json_object_get(r->params, "cursor");
  if (c && (!json_is_integer(c) || json_integer_value(c) < 0))
    return bad_params(r, "'cursor' must be a non-negative integer");
  attach *a = calloc(1, sizeof(*a));
  if (!a) return;
  a->sink = api_sink_ref(r->sink);
  snprintf(a->id, sizeof(a->id), "%s", sbx_exec_id(e));
  sbx_exec_observer o = {attach_output, attach_ended, a};
  if (!sbx_exec_ended(e) && sbx_exec_observe(e, &o) < 0) {
    api_sink_unref(a->sink);
    free(a);
    cr_error *err = NULL;
    cr_error_set(&err, CR_E_INTERNAL, 0, "too many clients attached to execution %s",
                 sbx_exec_id(e));
    reply_err(r, err);
    cr_error_free(err);
    return;
  }
  uint64_t cursor = c ? (uint64_t)json_integer_value(c) : 0;
  uint64_t dropped = sbx_exec_replay(e, cursor, replay_none, NULL);
  reply(r, json_pack("{s:s, s:I}", "execution_id", a->id, "dropped", (json_int_t)dropped));
  sbx_exec_replay(e, cursor, replay_chunk, a);
  if (sbx_exec_ended(e)) attach_ended(a, e);
}

static void m_execution_write(req *r) {
  sbx_exec *e = need_exec(r);
  if (!e) return;
  const char *data = pstr(r, "data");
  uint8_t *buf = NULL;
  size_t n = 0;
  if (r->bytes) {
    n = r->bytes->len;
  } else if (data && cr_base64_decode(data, strlen(data), &buf, &n) < 0) {
    return bad_params(r, "'data' is not valid base64");
  }
  cr_error *err = NULL;
  int rc = sbx_exec_write(e, r->bytes ? r->bytes->data : buf, n,
                          json_is_true(json_object_get(r->params, "eof")), &err);
  free(buf);
  if (rc < 0) {
    reply_err(r, err);
    cr_error_free(err);
    return;
  }
  reply(r, json_object());
}

static void m_execution_resize(req *r) {
  sbx_exec *e = need_exec(r);
  if (!e) return;
  json_t *rows = json_object_get(r->params, "rows"), *cols = json_object_get(r->params, "cols");
  if (!json_is_integer(rows) || !json_is_integer(cols) || json_integer_value(rows) < 1 ||
      json_integer_value(cols) < 1 || json_integer_value(rows) > 65535 ||
      json_integer_value(cols) > 65535)
    return bad_params(r, "'rows' and 'cols' must be integers 1-65535");
  cr_error *err = NULL;
  if (sbx_exec_resize(e, (uint16_t)json_integer_value(rows), (uint16_t)json_integer_value(cols),
                      &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    return;
  }
  reply(r, json_object());
}

static int parse_signal(json_t *v) {
  if (!v) return SIGKILL;
  if (json_is_integer(v)) return (int)json_integer_value(v);
  const char *s = json_string_value(v);
  if (!s) return -1;
  if (!strncmp(s, "SIG", 3)) s += 3;
  static const struct { const char *n; int v; } t[] = {
      {"KILL", SIGKILL}, {"TERM", SIGTERM}, {"INT", SIGINT}, {"HUP", SIGHUP},
      {"QUIT", SIGQUIT}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"STOP", SIGSTOP}, {"CONT", SIGCONT}};
  for (size_t i = 0; i < ELEMENTSOF(t); i++)
    if (!strcmp(s, t[i].n)) return t[i].v;
  return -1;
}

static void m_execution_cancel(req *r) {
  sbx_exec *e = need_exec(r);
  if (!e) return;
  int sig = parse_signal(json_object_get(r->params, "signal"));
  if (sig <= 0 || sig > 64) return bad_params(r, "unknown signal");
  cr_error *err = NULL;
  if (sbx_exec_signal(e, sig, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    return;
  }
  reply(r, json_object());
}

static void wait_ended(void *ud, sbx_exec *e) {
  req *k = ud;
  reply(k, sbx_exec_to_json(e));
  req_free(k);
}

static void m_execution_wait(req *r) {
  sbx_exec *e = need_exec(r);
  if (!e) return;
  if (sbx_exec_ended(e)) return reply(r, sbx_exec_to_json(e));
  req *k = req_keep(r);
  sbx_exec_observer o = {NULL, wait_ended, k};
  if (sbx_exec_observe(e, &o) < 0) {
    req_free(k);
    cr_error *err = NULL;
    cr_error_set(&err, CR_E_INTERNAL, 0, "too many waiters on execution %s", sbx_exec_id(e));
    reply_err(r, err);
    cr_error_free(err);
  }
}

static void m_execution_get(req *r) {
  sbx_exec *e = need_exec(r);
  if (e) reply(r, sbx_exec_to_json(e));
}

static void m_execution_list(req *r) {
  size_t n = 0;
  sbx_exec **v = sbx_exec_list(r->d->sandboxes, pstr(r, "sandbox_id"), &n);
  json_t *a = json_array();
  for (size_t i = 0; i < n; i++) json_array_append_new(a, sbx_exec_to_json(v[i]));
  free(v);
  reply(r, json_pack("{s:o}", "executions", a));
}

static void m_execution_read(req *r) {
  sbx_exec *e = need_exec(r);
  if (!e) return;
  json_t *c = json_object_get(r->params, "cursor");
  if (c && (!json_is_integer(c) || json_integer_value(c) < 0))
    return bad_params(r, "'cursor' must be a non-negative integer");
  /* the streams as bytes: base64 only for a socket's client (api_sink_result_n) */
  cr_buf st[2] = {{0}, {0}};
  json_t *out = sbx_exec_read(e, c ? (uint64_t)json_integer_value(c) : 0, st);
  if (!out) {
    cr_error *err = NULL;
    cr_error_set(&err, CR_E_INTERNAL, ENOMEM, "reading the output of %s", sbx_exec_id(e));
    reply_err(r, err);
    cr_error_free(err);
    return;
  }
  api_bytes by[2] = {{st[0].data, st[0].len, "stdout"}, {st[1].data, st[1].len, "stderr"}};
  if (r->id) api_sink_result_n(r->sink, r->id, out, by, 2);
  else json_decref(out);
  cr_buf_free(&st[0]);
  cr_buf_free(&st[1]);
}

/* ---- files */

static void file_done(void *ud, json_t *result, cr_error *err) {
  req *k = ud;
  if (err) reply_err(k, err);
  else reply(k, result);
  cr_error_free(err);
  req_free(k);
}

static const char *need_path(req *r) {
  const char *p = pstr(r, "path");
  if (!p) bad_params(r, "missing 'path'");
  return p;
}

static void file_read_done(void *ud, json_t *result, const uint8_t *data, size_t n,
                           cr_error *err) {
  req *k = ud;
  if (err) {
    reply_err(k, err);
  } else if (k->id) {
    api_bytes b = {data, n};
    api_sink_result(k->sink, k->id, result, &b);
  } else {
    json_decref(result);
  }
  cr_error_free(err);
  req_free(k);
}

static void m_file_read(req *r) {
  sbx *s = need_sandbox(r, "sandbox_id");
  const char *path = s ? need_path(r) : NULL;
  if (!path) return;
  json_int_t off = json_integer_value(json_object_get(r->params, "offset"));
  json_int_t len = json_integer_value(json_object_get(r->params, "length"));
  if (off < 0 || len < 0) return bad_params(r, "offset and length must be >= 0");
  req *k = req_keep(r);
  cr_error *err = NULL;
  if (sbx_file_read(s, path, (uint64_t)off, (uint64_t)len, file_read_done, k, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    req_free(k);
  }
}

static void m_file_write(req *r) {
  sbx *s = need_sandbox(r, "sandbox_id");
  const char *path = s ? need_path(r) : NULL;
  if (!path) return;
  const char *data = pstr(r, "data");
  if (!data && !r->bytes) return bad_params(r, "missing 'data' (base64)");
  uint8_t *buf = NULL;
  size_t n = 0;
  if (r->bytes) n = r->bytes->len;
  else if (cr_base64_decode(data, strlen(data), &buf, &n) < 0)
    return bad_params(r, "'data' is not valid base64");
  json_t *mode = json_object_get(r->params, "mode");
  req *k = req_keep(r);
  cr_error *err = NULL;
  int rc = sbx_file_write(s, path, r->bytes ? r->bytes->data : buf, n, mode ? (uint32_t)json_integer_value(mode) : 0644,
                          json_is_true(json_object_get(r->params, "parents")),
                          json_is_true(json_object_get(r->params, "append")), file_done, k, &err);
  free(buf);
  if (rc < 0) {
    reply_err(r, err);
    cr_error_free(err);
    req_free(k);
  }
}

static void m_file_stat(req *r) {
  sbx *s = need_sandbox(r, "sandbox_id");
  const char *path = s ? need_path(r) : NULL;
  if (!path) return;
  req *k = req_keep(r);
  cr_error *err = NULL;
  if (sbx_file_stat(s, path, file_done, k, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    req_free(k);
  }
}

static void m_file_list(req *r) {
  sbx *s = need_sandbox(r, "sandbox_id");
  const char *path = s ? need_path(r) : NULL;
  if (!path) return;
  json_int_t depth = json_integer_value(json_object_get(r->params, "depth"));
  if (depth < 0 || depth > 32) return bad_params(r, "depth must be 0-32");
  req *k = req_keep(r);
  cr_error *err = NULL;
  if (sbx_file_list(s, path, (uint32_t)depth, file_done, k, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    req_free(k);
  }
}

/* ---- workspaces (methods-workspace.c) */

static void m_workspace_resolve(req *r) { api_ws_resolve(r->d, r->sink, r->id, r->params); }
static void m_workspace_checkout(req *r) { api_ws_checkout(r->d, r->sink, r->id, r->params); }
static void m_workspace_diff(req *r) { api_ws_diff(r->d, r->sink, r->id, r->params); }
static void m_workspace_copy_in(req *r) { api_ws_copy_in(r->d, r->sink, r->id, r->params); }

/* ---- the content cache (methods-cache.c) */

static void m_cache_list(req *r) { api_cache_call(r->d, r->sink, r->id, r->params, API_CACHE_LIST); }
static void m_cache_stats(req *r) { api_cache_call(r->d, r->sink, r->id, r->params, API_CACHE_STATS); }
static void m_cache_prune(req *r) { api_cache_call(r->d, r->sink, r->id, r->params, API_CACHE_PRUNE); }

/* ---- images */

static void m_image_list(req *r) {
  image_info **list = NULL;
  size_t n = 0;
  cr_error *err = NULL;
  if (image_list(&list, &n, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    return;
  }
  json_t *a = json_array();
  for (size_t i = 0; i < n; i++) json_array_append_new(a, image_info_to_json(list[i]));
  image_info_list_free(list, n);
  reply(r, json_pack("{s:o}", "images", a));
}

/* image.inspect {ref}: ref is a name, sha256:HEX or a unique hex prefix. */
static void m_image_inspect(req *r) {
  const char *ref = pstr(r, "ref");
  if (!ref) return bad_params(r, "missing 'ref'");
  _cleanup_image_info_ image_info *info = NULL;
  cr_error *err = NULL;
  if (image_lookup(ref, &info, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    return;
  }
  reply(r, json_pack("{s:o}", "image", image_info_to_json(info)));
}

static void m_image_remove(req *r) {
  const char *ref = pstr(r, "ref");
  if (!ref) return bad_params(r, "missing 'ref'");
  json_t *force = json_object_get(r->params, "force");
  if (force && !json_is_boolean(force)) return bad_params(r, "'force' must be a boolean");
  cr_error *err = NULL;
  char *digest = NULL;
  if (image_remove(ref, json_is_true(force) ? IMAGE_REMOVE_FORCE : 0, &digest, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    return;
  }
  if (digest) sbx_template_gc(r->d->sandboxes); /* templates go with their image */
  reply(r, json_pack("{s:s?}", "removed_digest", digest));
  free(digest);
}

static void pull_progress(void *ud, const char *phase, uint64_t done, uint64_t total) {
  req *k = ud;
  api_sink_notify(k->sink, "image.progress",
                  json_pack("{s:O?, s:s, s:I, s:I}", "request_id", k->id, "phase", phase, "done",
                            (json_int_t)done, "total", (json_int_t)total));
}

static void pull_done(void *ud, const image_info *info, const image_pull_stats *st,
                      cr_error *err) {
  req *k = ud;
  if (err) reply_err(k, err);
  else
    reply(k, json_pack("{s:o, s:{s:I, s:I, s:i, s:i, s:b}}", "image", image_info_to_json(info),
                       "stats", "downloaded", (json_int_t)st->downloaded, "resumed",
                       (json_int_t)st->resumed, "blobs_fetched", (int)st->blobs_fetched,
                       "blobs_cached", (int)st->blobs_cached, "already_stored",
                       st->already_stored));
  cr_error_free(err);
  req_free(k);
}

static void m_image_pull(req *r) {
  const char *ref = pstr(r, "ref");
  if (!ref) return bad_params(r, "missing 'ref'");
  req *k = req_keep(r);
  cr_error *err = NULL;
  if (api_pull_start(r->d, ref, r->params, pull_progress, pull_done, k, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    req_free(k);
  }
}

/* image.import: the client opens the file or directory (so its own right to
 * read it is what counts) and sends the descriptor with the request; the
 * daemon imports it on a worker thread. */
static void import_done(void *ud, const image_info *info, const image_pull_stats *st,
                        cr_error *err) {
  req *k = ud;
  if (err) reply_err(k, err);
  else reply(k, json_pack("{s:o}", "image", image_info_to_json(info)));
  cr_error_free(err);
  req_free(k);
}

static void m_image_import(req *r) {
  int fd = r->sink->take_fd ? r->sink->take_fd(r->sink) : -1;
  const char *path = pstr(r, "path");
  json_t *ref = json_object_get(r->params, "ref");
  if (!path || !*path || (ref && !json_is_string(ref) && !json_is_null(ref)) || fd < 0) {
    if (fd >= 0) close(fd);
    return bad_params(r, fd < 0 ? "image.import needs the archive's file descriptor, sent with "
                                  "the request (SCM_RIGHTS on the daemon's unix socket)"
                                : "missing 'path' (the client's path of the archive) or 'ref' "
                                  "is not a string");
  }
  req *k = req_keep(r);
  cr_error *err = NULL;
  if (api_import_start(r->d, fd, path, json_string_value(ref), &r->sink->peer, pull_progress,
                       import_done, k, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    req_free(k);
  }
}

/* ---- templates and snapshots */

static void reply_or_err(req *r, int rc, json_t *result, cr_error *err) {
  if (rc < 0) reply_err(r, err);
  else reply(r, result);
  cr_error_free(err);
}

static void json_done(void *ud, json_t *result, cr_error *err) {
  req *k = ud;
  reply_or_err(k, err ? -1 : 0, result, err);
  req_free(k);
}

static void m_image_warm(req *r) {
  json_t *vc = json_object_get(r->params, "vcpus"), *mem = json_object_get(r->params, "memory_mib");
  if ((vc && !json_is_integer(vc)) || (mem && !json_is_integer(mem)) ||
      json_integer_value(vc) < 0 || json_integer_value(mem) < 0)
    return bad_params(r, "vcpus and memory_mib must be non-negative integers");
  req *k = req_keep(r);
  cr_error *err = NULL;
  if (sbx_template_warm(r->d->sandboxes, pstr(r, "image"), (unsigned)json_integer_value(vc),
                        (unsigned)json_integer_value(mem), json_done, k, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    req_free(k);
  }
}

static void m_template_list(req *r) {
  reply(r, json_pack("{s:o}", "templates", sbx_template_list(r->d->sandboxes)));
}

static void m_template_remove(req *r) {
  const char *key = pstr(r, "key");
  if (!key) return bad_params(r, "missing 'key' (a template key, prefix or \"all\")");
  cr_error *err = NULL;
  int n = sbx_template_remove(r->d->sandboxes, key, &err);
  reply_or_err(r, n, json_pack("{s:i}", "removed", n), err);
}

static void m_snapshot_create(req *r) {
  sbx *s = need_sandbox(r, "sandbox_id");
  if (!s) return;
  req *k = req_keep(r);
  cr_error *err = NULL;
  if (sbx_snapshot_create(r->d->sandboxes, s, pstr(r, "name"), json_done, k, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    req_free(k);
  }
}

static void m_snapshot_list(req *r) {
  json_t *all = sbx_snapshot_list(r->d->sandboxes);
  const char *sid = pstr(r, "sandbox_id");
  if (sid) {
    json_t *f = json_array(), *j;
    size_t i;
    json_array_foreach(all, i, j) {
      if (!strcmp(json_string_value(json_object_get(j, "sandbox_id")) ?: "", sid))
        json_array_append(f, j);
    }
    json_decref(all);
    all = f;
  }
  reply(r, json_pack("{s:o}", "snapshots", all));
}

static void m_snapshot_get(req *r) {
  const char *ref = pstr(r, "snapshot");
  if (!ref) return bad_params(r, "missing 'snapshot' (an id or name)");
  json_t *res = NULL;
  cr_error *err = NULL;
  int rc = sbx_snapshot_inspect(r->d->sandboxes, ref, &res, &err);
  reply_or_err(r, rc, res, err);
}

static void m_snapshot_remove(req *r) {
  const char *ref = pstr(r, "snapshot");
  if (!ref) return bad_params(r, "missing 'snapshot' (an id or name)");
  json_t *res = NULL;
  cr_error *err = NULL;
  int rc = sbx_snapshot_remove(r->d->sandboxes, ref, &res, &err);
  reply_or_err(r, rc, res, err);
}

static void m_snapshot_restore(req *r) {
  const char *ref = pstr(r, "snapshot");
  if (!ref) return bad_params(r, "missing 'snapshot' (an id or name)");
  sbx *s = need_sandbox(r, "sandbox_id");
  if (!s) return;
  req *k = req_keep(r);
  cr_error *err = NULL;
  if (sbx_snapshot_restore(r->d->sandboxes, ref, s, create_done, k, &err) < 0) {
    reply_err(r, err);
    cr_error_free(err);
    req_free(k);
  }
}

static const struct {
  const char *name;
  method_fn fn;
} methods[] = {
    {"system.info", m_system_info},
    {"sandbox.create", m_sandbox_create},
    {"sandbox.get", m_sandbox_get},
    {"sandbox.list", m_sandbox_list},
    {"sandbox.terminate", m_sandbox_terminate},
    {"events.list", m_events_list},
    {"execution.create", m_execution_create},
    {"execution.attach", m_execution_attach},
    {"execution.write", m_execution_write},
    {"execution.resize", m_execution_resize},
    {"execution.cancel", m_execution_cancel},
    {"execution.wait", m_execution_wait},
    {"execution.get", m_execution_get},
    {"execution.list", m_execution_list},
    {"execution.read", m_execution_read},
    {"file.read", m_file_read},
    {"file.write", m_file_write},
    {"file.stat", m_file_stat},
    {"file.list", m_file_list},
    {"workspace.resolve", m_workspace_resolve},
    {"workspace.checkout", m_workspace_checkout},
    {"workspace.diff", m_workspace_diff},
    {"workspace.copy_in", m_workspace_copy_in},
    {"image.list", m_image_list},
    {"image.inspect", m_image_inspect},
    {"image.import", m_image_import},
    {"image.remove", m_image_remove},
    {"image.pull", m_image_pull},
    {"image.warm", m_image_warm},
    {"template.list", m_template_list},
    {"template.remove", m_template_remove},
    {"snapshot.create", m_snapshot_create},
    {"snapshot.list", m_snapshot_list},
    {"snapshot.get", m_snapshot_get},
    {"snapshot.remove", m_snapshot_remove},
    {"snapshot.restore", m_snapshot_restore},
    {"cache.list", m_cache_list},
    {"cache.stats", m_cache_stats},
    {"cache.prune", m_cache_prune},
};

static void run_method(daemon_ctx *d, api_sink *sink, json_t *id, const char *name,
                       json_t *params, const api_bytes *bytes) {
  for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
    if (strcmp(methods[i].name, name)) continue;
    _cleanup_json_ json_t *p = params ? json_incref(params) : json_object();
    req r = {.d = d, .sink = sink, .id = id, .params = p, .bytes = bytes};
    methods[i].fn(&r);
    return;
  }
  if (id) {
    char m[256];
    snprintf(m, sizeof(m), "unknown method '%.100s' (see docs/api.md)", name);
    api_sink_error(sink, id, API_METHOD_NOT_FOUND, m, NULL);
  }
}

void api_dispatch(daemon_ctx *d, api_sink *sink, json_t *msg) {
  if (!json_is_object(msg)) {
    api_sink_send(sink, api_error(NULL, API_INVALID_REQUEST,
                                  json_is_array(msg) ? "batches are not supported"
                                                     : "a request must be a JSON object",
                                  NULL));
    return;
  }
  json_t *id = json_object_get(msg, "id");
  json_t *method = json_object_get(msg, "method");
  const char *ver = json_string_value(json_object_get(msg, "jsonrpc"));
  if (id && !json_is_string(id) && !json_is_integer(id) && !json_is_null(id)) id = NULL;
  if (!ver || strcmp(ver, "2.0") || !json_is_string(method)) {
    if (!method && (json_object_get(msg, "result") || json_object_get(msg, "error"))) return;
    api_sink_send(sink, api_error(id, API_INVALID_REQUEST,
                                  "not a JSON-RPC 2.0 request (need jsonrpc:\"2.0\" and a method)",
                                  NULL));
    return;
  }
  json_t *params = json_object_get(msg, "params");
  if (params && !json_is_object(params)) {
    if (id) api_sink_send(sink, api_error(id, API_INVALID_PARAMS, "params must be an object", NULL));
    return;
  }
  run_method(d, sink, id, json_string_value(method), params, NULL);
}

void api_call(daemon_ctx *d, api_sink *sink, const char *method, json_t *params,
              const api_bytes *bytes) {
  /* an in-process request always wants its answer: a null id */
  run_method(d, sink, json_null(), method ? method : "", params, bytes);
}

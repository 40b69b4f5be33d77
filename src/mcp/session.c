/* MCP session: JSON-RPC framing, both protocol eras, and the plumbing that
 * turns tools/call into control API requests (api_call) with our own
 * sinks. docs/mcp.md describes the behaviour. */
#include "mcp/mcp-internal.h"
#include "util/base64.h"
#include "config.h"
#include "util/error.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>

static const char *const versions[] = {
    MCP_MODERN_VERSION, "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05",
};
#define LEGACY_NEWEST "2025-11-25"

static const char *const log_levels[] = {
    "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency",
};

static const char instructions[] =
    "Cleanroom runs your commands in an isolated Linux microVM (a sandbox) with "
    "deny-by-default network egress, so nothing you run touches the host.\n"
    "- Just call `exec` with `command` (run by /bin/sh -c) or `argv`: the first "
    "call creates this session's default sandbox (it can take a while to boot) and "
    "later calls reuse it. Output is capped (max_output_bytes, head and tail kept; "
    "the result says how many bytes were dropped); timeout_ms defaults to 60000.\n"
    "- For anything long-running (builds, servers, test suites over a minute) use "
    "`exec_start`, then `exec_poll` with the returned cursor until state is "
    "exited; `exec_write` feeds stdin, `exec_kill` stops it.\n"
    "- Files: `read_file` (text by line range, or base64 with offset/length: "
    "page with next_offset until eof is true), `write_file` (at most 4 MiB per "
    "call; append:true for the next pieces), `file_move`, `file_delete`, "
    "`search_files` (grep -E, bounded), `edit_file` (exact old_string -> new_string; read the file "
    "first), `list_files`.\n"
    "- `sandbox_create` makes additional sandboxes (pass their sandbox_id to "
    "other tools), `sandbox_list`/`sandbox_inspect` show state, `sandbox_remove` "
    "deletes one.\n"
    "A tool failure comes back with isError and a reason code (e.g. "
    "sandbox_not_found, file_not_found) plus what to do next.";

uint64_t mcp_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- session lifetime ---- */

static void session_free(mcp_session *s) {
  free(s->legacy_version);
  free(s->attached);
  free(s->default_sandbox);
  json_decref(s->config);
  free(s);
}

void mcp_session_ref(mcp_session *s) { s->refs++; }
void mcp_session_unref(mcp_session *s) {
  if (s && --s->refs == 0) session_free(s);
}

static mcp_session *session_new(daemon_ctx *d, mcp_api_fn call, mcp_dispatch_fn dispatch,
                                mcp_write_fn write_line, void *ud) {
  mcp_session *s = calloc(1, sizeof(*s));
  if (!s) return NULL;
  s->d = d;
  s->call = call;
  s->dispatch = dispatch;
  s->write_line = write_line;
  s->ud = ud;
  s->loop = uv_default_loop();
  s->refs = 1;
  s->log_level = 1; /* info */
  s->idle_timeout_ms = mcp_default_idle_timeout_ms();
  return s;
}

mcp_session *mcp_session_new_with_call(daemon_ctx *d, mcp_api_fn call, mcp_write_fn write_line,
                                       void *ud) {
  return session_new(d, call, NULL, write_line, ud);
}

mcp_session *mcp_session_new_with_dispatch(daemon_ctx *d, mcp_dispatch_fn dispatch,
                                           mcp_write_fn write_line, void *ud) {
  return session_new(d, NULL, dispatch, write_line, ud);
}

void mcp_session_set_loop(mcp_session *s, uv_loop_t *loop) {
  if (s && loop) s->loop = loop;
}

void mcp_send(mcp_session *s, json_t *msg) {
  if (!msg) return;
  if (!s->closed) {
    char *text = json_dumps(msg, JSON_COMPACT);
    if (text) s->write_line(s->ud, text, strlen(text));
    free(text);
  }
  json_decref(msg);
}

static json_t *rpc_error(json_t *id, int code, const char *message, json_t *data) {
  json_t *e = json_pack("{s:i, s:s}", "code", code, "message", message);
  if (data) json_object_set_new(e, "data", data);
  return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "error", e);
}

static void send_error(mcp_session *s, json_t *id, int code, const char *message) {
  mcp_send(s, rpc_error(id, code, message, NULL));
}

/* modern results carry resultType (and for lists/reads ttlMs + cacheScope) */
static void decorate(json_t *result, bool modern, int ttl_ms, const char *scope) {
  if (!modern) return;
  json_object_set_new(result, "resultType", json_string("complete"));
  if (scope) {
    json_object_set_new(result, "ttlMs", json_integer(ttl_ms));
    json_object_set_new(result, "cacheScope", json_string(scope));
  }
}

static void send_result(mcp_session *s, json_t *id, json_t *result) {
  mcp_send(s, json_pack("{s:s, s:O, s:O}", "jsonrpc", "2.0", "id", id, "result", result));
}

/* ---- control API ops ---- */

static void op_free(api_sink *sink) {
  mcp_op *op = container_of(sink, mcp_op, sink);
  mcp_session *s = op->s;
  if (op->call) mcp_call_unref(op->call);
  free(op);
  mcp_session_unref(s);
}

static void op_release(mcp_op *op) {
  if (op->released) return;
  op->released = true;
  if (--op->sink.refs == 0) op->sink.free(&op->sink);
}

static void op_deliver(mcp_op *op, const mcp_msg *m) {
  if (op->done) return;
  if (op->on_msg(op, m)) {
    op->done = true;
    op->sink.closed = true;
    if (!op->in_dispatch) op_release(op);
  }
}

static void op_reply(api_sink *sink, const api_reply *r) {
  mcp_msg m = {.response = true, .is_error = !r->result, .result = r->result, .code = r->code,
               .message = r->message, .reason = r->reason, .bytes = r->bytes};
  op_deliver(container_of(sink, mcp_op, sink), &m);
}

static void op_notify(api_sink *sink, const char *method, json_t *params, const api_bytes *b) {
  mcp_msg m = {.method = method, .params = params, .bytes = b};
  op_deliver(container_of(sink, mcp_op, sink), &m);
}

void mcp_api(mcp_session *s, mcp_call *c, const char *method, json_t *params,
             mcp_op_fn on_msg) {
  mcp_api_bytes(s, c, method, params, NULL, 0, on_msg);
}

void mcp_api_bytes(mcp_session *s, mcp_call *c, const char *method, json_t *params,
                   const void *data, size_t n, mcp_op_fn on_msg) {
  mcp_op *op = calloc(1, sizeof(*op));
  if (!op) {
    json_decref(params);
    if (c) mcp_call_fail(c, CR_E_INTERNAL, "out of memory");
    return;
  }
  op->sink.reply = op_reply;
  op->sink.notify = op_notify;
  op->sink.free = op_free;
  op->sink.refs = 1;
  op->s = s;
  mcp_session_ref(s);
  op->call = c ? mcp_call_ref(c) : NULL;
  op->on_msg = on_msg;
  api_bytes bytes = {data, n};
  if (!params) params = json_object();
  op->in_dispatch = true;
  mcp_api_invoke(s->d, s->call, s->dispatch, &op->sink, method, params, data ? &bytes : NULL,
                 (json_int_t)++s->next_api_id);
  op->in_dispatch = false;
  json_decref(params);
  if (op->done) op_release(op);
}

bool mcp_is_error(const mcp_msg *msg) { return msg->response && msg->is_error; }
json_t *mcp_result_of(const mcp_msg *msg) { return msg->response ? msg->result : NULL; }

/* ---- calls ---- */

mcp_call *mcp_call_ref(mcp_call *c) {
  c->refs++;
  return c;
}

void mcp_call_unref(mcp_call *c) {
  if (!c || --c->refs > 0) return;
  mcp_session *s = c->s;
  json_decref(c->id);
  json_decref(c->progress_token);
  json_decref(c->args);
  json_decref(c->scratch);
  free(c->sandbox_id);
  free(c->execution_id);
  mcp_outbuf_done(&c->out[0]);
  mcp_outbuf_done(&c->out[1]);
  free(c);
  mcp_session_unref(s);
}

bool mcp_call_alive(const mcp_call *c) { return c && !c->finished; }

static void timer_closed(uv_handle_t *h) {
  mcp_call *c = container_of((uv_timer_t *)h, mcp_call, timer);
  mcp_call_unref(c);
}

static void call_unlink(mcp_call *c) {
  mcp_session *s = c->s;
  for (mcp_call **p = &s->calls; *p; p = &(*p)->next)
    if (*p == c) {
      *p = c->next;
      c->next = NULL;
      break;
    }
  if (c->timer_active) {
    c->timer_active = false;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, timer_closed); /* holds a ref */
  }
  mcp_call_unref(c); /* the list's reference */
}

static void fail_text(mcp_call *c, const char *reason, const char *message);

void mcp_call_finish(mcp_call *c, json_t *result) {
  if (!c || c->finished) {
    json_decref(result);
    return;
  }
  if (!c->cancelled && c->id) {
    decorate(result, c->modern, 0, NULL);
    _cleanup_json_ json_t *msg =
        json_pack("{s:s, s:O, s:O}", "jsonrpc", "2.0", "id", c->id, "result", result);
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    size_t len = text ? strlen(text) : 0;
    if (text && len <= MCP_RESULT_MAX) {
      c->finished = true;
      if (!c->s->closed) c->s->write_line(c->s->ud, text, len);
      free(text);
      json_decref(result);
      call_unlink(c);
      return;
    }
    free(text);
    json_decref(result);
    char buf[300];
    snprintf(buf, sizeof(buf), "the result would be %zu bytes, over the %u-byte limit of one "
             "MCP message; ask for less (max_output_bytes, length, a line range)", len,
             MCP_RESULT_MAX);
    fail_text(c, CR_E_INVALID_ARGUMENT, buf);
    return;
  }
  c->finished = true;
  json_decref(result);
  call_unlink(c);
}

void mcp_call_finish_structured(mcp_call *c, json_t *structured) {
  _cleanup_free_ char *text = json_dumps(structured, JSON_COMPACT);
  json_t *r = json_pack("{s:[{s:s, s:s}], s:o}", "content", "type", "text", "text",
                        text ? text : "{}", "structuredContent", structured);
  mcp_call_finish(c, r);
}

void mcp_call_finish_with_output(mcp_call *c, json_t *status, json_t *out, json_t *err) {
  json_t *full = json_deep_copy(status);
  json_object_set_new(full, "stdout", out);
  json_object_set_new(full, "stderr", err);
  /* the schema's types: a member without a value is absent */
  const char *k;
  json_t *v;
  void *tmp;
  json_object_foreach_safe(status, tmp, k, v) if (json_is_null(v)) json_object_del(status, k);
  _cleanup_free_ char *text = json_dumps(full, JSON_COMPACT);
  json_decref(full);
  mcp_call_finish(c, json_pack("{s:[{s:s, s:s}], s:o}", "content", "type", "text", "text",
                               text ? text : "{}", "structuredContent", status));
}

static const char *reason_hint(const char *reason) {
  static const struct {
    const char *reason, *hint;
  } hints[] = {
      {CR_E_SANDBOX_NOT_FOUND, "Call sandbox_list to see the sandboxes that exist, or omit "
                               "sandbox_id to use this session's default sandbox."},
      {CR_E_SANDBOX_NOT_READY, "Call sandbox_inspect to see its state; retry once it is ready "
                               "or create another with sandbox_create."},
      {CR_E_FILE_NOT_FOUND, "Check the path (absolute, inside the sandbox) with list_files."},
      {CR_E_FILE_ERROR, "Check the path and its type with list_files."},
      {CR_E_COMMAND_NOT_FOUND, "Check the program name (list_files /usr/bin), or pass "
                               "`command` to run it through /bin/sh -c."},
      {CR_E_EXECUTION_NOT_FOUND, "Use an execution_id returned by exec_start."},
      {CR_E_EXECUTION_TIMEOUT, "Raise timeout_ms, or use exec_start and exec_poll for long "
                               "commands."},
      {CR_E_IMAGE_NOT_FOUND, "Pick an existing image (sandbox_create image=...) or build it "
                             "on the host first."},
      {CR_E_BACKEND_UNAVAILABLE, "The host cannot run VMs right now; run `cleanroom doctor` on "
                                 "the host."},
      {CR_E_INVALID_ARGUMENT, "Fix the arguments as the message says and call again."},
  };
  for (size_t i = 0; i < ELEMENTSOF(hints); i++)
    if (!strcmp(hints[i].reason, reason)) return hints[i].hint;
  return NULL;
}

static void fail_text(mcp_call *c, const char *reason, const char *message) {
  const char *hint = reason_hint(reason);
  size_t n = strlen(reason) + strlen(message) + (hint ? strlen(hint) : 0) + 8;
  _cleanup_free_ char *text = malloc(n);
  if (!text) return;
  snprintf(text, n, "%s: %s%s%s", reason, message, hint ? ". " : "", hint ? hint : "");
  json_t *r = json_pack("{s:[{s:s, s:s}], s:b}", "content", "type", "text", "text", text,
                        "isError", 1);
  mcp_call_finish(c, r);
}

void mcp_call_fail(mcp_call *c, const char *reason, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  fail_text(c, reason, buf);
}

void mcp_call_fail_api(mcp_call *c, const mcp_msg *msg) {
  const char *message = msg->is_error ? msg->message : NULL;
  const char *reason = msg->is_error ? msg->reason : NULL;
  if (!reason) reason = msg->is_error && msg->code == API_INVALID_PARAMS
                            ? CR_E_INVALID_ARGUMENT
                            : CR_E_INTERNAL;
  /* the default sandbox went away: make the next call create a new one
   * (unless it was given with --sandbox: then say so) */
  if (c->used_default && !strcmp(reason, CR_E_SANDBOX_NOT_FOUND) && c->s->default_sandbox &&
      c->sandbox_id && !strcmp(c->s->default_sandbox, c->sandbox_id)) {
    if (c->s->pinned) {
      mcp_call_fail(c, reason, "%s (this session was started with --sandbox %s, which does "
                    "not exist (any more); pass another sandbox_id, or create one with "
                    "sandbox_create)", message ? message : "sandbox not found", c->sandbox_id);
      return;
    }
    mcp_session_detach(c->s);
    mcp_sandbox_forget(c->sandbox_id);
    free(c->s->default_sandbox);
    c->s->default_sandbox = NULL;
    mcp_call_fail(c, reason, "%s (this session's default sandbox is gone; the next call "
                  "creates a new one)", message ? message : "sandbox not found");
    return;
  }
  /* the control API's messages name host CLI commands the model cannot run
   * ("...; list them with 'cleanroom sandbox ls'"): keep the first part, the
   * hint says what to do with the tools */
  char buf[1024];
  snprintf(buf, sizeof(buf), "%s", message ? message : "the control API call failed");
  char *cli = strstr(buf, "'cleanroom ");
  if (cli) {
    char *semi = NULL;
    for (char *p = buf; p < cli; p++)
      if (*p == ';') semi = p;
    if (semi) *semi = 0;
  }
  fail_text(c, reason, buf);
}

void mcp_call_progress(mcp_call *c, const char *message) {
  if (!c->progress_token || c->finished || c->cancelled || c->s->closed) return;
  c->progress += 1;
  json_t *p = json_pack("{s:O, s:f}", "progressToken", c->progress_token, "progress",
                        c->progress);
  if (message) json_object_set_new(p, "message", json_string(message));
  if (!json_object_get(p, "message") && message) /* not UTF-8: make it so */
    json_object_set_new(p, "message", mcp_text_json(message, strlen(message)));
  mcp_send(c->s, json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method",
                           "notifications/progress", "params", p));
}

/* ---- the default sandbox ---- */

static void run_call(mcp_call *c) {
  if (c->finished) return;
  c->tool->run(c);
}

static bool default_created(mcp_op *op, const mcp_msg *msg) {
  mcp_session *s = op->s;
  if (!msg->response) {
    const char *method = msg->method;
    json_t *p = msg->params;
    if (method && !strcmp(method, "sandbox.progress")) {
      char buf[512];
      snprintf(buf, sizeof(buf), "creating the default sandbox: %s%s%s",
               json_string_value(json_object_get(p, "phase")) ?: "booting",
               json_string_value(json_object_get(p, "message")) ? ": " : "",
               json_string_value(json_object_get(p, "message")) ?: "");
      for (mcp_call *w = s->waiters; w; w = w->next_waiter) mcp_call_progress(w, buf);
    }
    return false;
  }
  s->default_creating = false;
  mcp_call *w = TAKE_PTR(s->waiters);
  const char *id = json_string_value(json_object_get(mcp_result_of(msg), "id"));
  if (!mcp_is_error(msg) && id) {
    free(s->default_sandbox);
    s->default_sandbox = strdup(id);
    const char *name = json_string_value(json_object_get(s->config, "name"));
    if (name) mcp_name_set(name, id);
    mcp_session_attach(s, id, true);
  }
  while (w) {
    mcp_call *next = w->next_waiter;
    w->next_waiter = NULL;
    if (mcp_is_error(msg) || !id) {
      mcp_call_fail_api(w, msg);
    } else if (!w->finished) {
      w->sandbox_id = strdup(id);
      w->used_default = true;
      run_call(w);
    }
    mcp_call_unref(w);
    w = next;
  }
  return true;
}

static void create_default(mcp_session *s, mcp_call *c);

/* --name: the sandbox the name points at, if it still exists */
static bool named_found(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_session *s = op->s;
  const char *id = json_string_value(json_object_get(mcp_result_of(msg), "id"));
  const char *state = json_string_value(json_object_get(mcp_result_of(msg), "state"));
  bool usable = !mcp_is_error(msg) && id && state && strcmp(state, "failed") &&
                strcmp(state, "terminated") && strcmp(state, "stopped");
  if (!usable) {
    create_default(s, s->waiters);
    return true;
  }
  /* as if created: the same path runs the waiters */
  default_created(op, msg);
  return true;
}

static void wait_for_default(mcp_call *c) {
  mcp_session *s = c->s;
  mcp_call_ref(c);
  c->next_waiter = NULL;
  mcp_call **p = &s->waiters;
  while (*p) p = &(*p)->next_waiter;
  *p = c;
  if (s->default_creating) return;
  s->default_creating = true;
  const char *name = json_string_value(json_object_get(s->config, "name"));
  _cleanup_free_ char *known = name ? mcp_name_lookup(name) : NULL;
  if (known) {
    mcp_call_progress(c, "looking up this session's named sandbox");
    mcp_api(s, NULL, "sandbox.get", json_pack("{s:s}", "id", known), named_found);
    return;
  }
  create_default(s, c);
}

static void create_default(mcp_session *s, mcp_call *c) {
  if (c) mcp_call_progress(c, "creating this session's default sandbox");
  json_t *params = json_object();
  json_t *image = json_object_get(s->config, "image");
  json_t *policy = json_object_get(s->config, "policy");
  if (json_is_string(image)) json_object_set(params, "image", image);
  if (json_is_object(policy)) json_object_set(params, "policy", policy);
  json_t *ws = json_object_get(s->config, "workspace"); /* mcp --repo: src/workspace */
  if (json_is_object(ws)) json_object_set(params, "workspace", ws);
  mcp_api(s, NULL, "sandbox.create", params, default_created);
}

/* ---- protocol ---- */

static json_t *capabilities(void) {
  return json_pack("{s:{s:b}, s:{s:b, s:b}, s:{}}", "tools", "listChanged", 0, "resources",
                   "subscribe", 0, "listChanged", 0, "logging");
}

static json_t *server_info(void) {
  return json_pack("{s:s, s:s, s:s}", "name", MCP_SERVER_NAME, "title", "Cleanroom",
                   "version", CR_VERSION);
}

static bool version_known(const char *v) {
  for (size_t i = 0; i < ELEMENTSOF(versions); i++)
    if (!strcmp(versions[i], v)) return true;
  return false;
}

static json_t *versions_json(void) {
  json_t *a = json_array();
  for (size_t i = 0; i < ELEMENTSOF(versions); i++) json_array_append_new(a, json_string(versions[i]));
  return a;
}

static void handle_initialize(mcp_session *s, json_t *id, json_t *params) {
  const char *want = json_string_value(json_object_get(params, "protocolVersion"));
  if (!want) {
    send_error(s, id, API_INVALID_PARAMS, "initialize needs params.protocolVersion");
    return;
  }
  const char *v = version_known(want) && strcmp(want, MCP_MODERN_VERSION) ? want : LEGACY_NEWEST;
  free(s->legacy_version);
  s->legacy_version = strdup(v);
  s->initialized = true;
  json_t *r = json_pack("{s:s, s:o, s:o, s:s}", "protocolVersion", v, "capabilities",
                        capabilities(), "serverInfo", server_info(), "instructions",
                        instructions);
  send_result(s, id, r);
  json_decref(r);
}

static void handle_discover(mcp_session *s, json_t *id) {
  json_t *r = json_pack("{s:o, s:o, s:s, s:{s:o}}", "supportedVersions", versions_json(),
                        "capabilities", capabilities(), "instructions", instructions, "_meta",
                        MCP_META_SERVER_INFO, server_info());
  decorate(r, true, 3600000, "public");
  send_result(s, id, r);
  json_decref(r);
}

static size_t tools_page = MCP_TOOLS_PAGE_DEFAULT;

void mcp_tools_set_page_size(size_t n) { tools_page = n > 0 ? n : MCP_TOOLS_PAGE_DEFAULT; }

size_t mcp_tools_page_size(void) { return tools_page; }

/* Cursor: base64 of "tools:<offset>"; any offset inside the table is valid,
 * so a cursor survives a change of the page size. */
static void handle_tools_list(mcp_session *s, json_t *id, json_t *params, bool modern) {
  size_t start = 0;
  json_t *cur = json_object_get(params, "cursor");
  if (cur && !json_is_null(cur)) {
    const char *c = json_string_value(cur);
    unsigned char *raw = NULL;
    size_t n = 0;
    unsigned long off = 0;
    int used = 0;
    bool ok = c && cr_base64_decode_lenient(c, strlen(c), &raw, &n) >= 0 && n < 32;
    if (ok) {
      char buf[32];
      memcpy(buf, raw, n);
      buf[n] = 0;
      ok = sscanf(buf, "tools:%lu%n", &off, &used) == 1 && (size_t)used == n &&
           off > 0 && off < mcp_n_tools;
    }
    free(raw);
    if (!ok) {
      send_error(s, id, API_INVALID_PARAMS, "invalid cursor; call tools/list without one");
      return;
    }
    start = off;
  }
  json_t *tools = json_array();
  size_t end = MIN(start + tools_page, mcp_n_tools);
  for (size_t i = start; i < end; i++) json_array_append_new(tools, mcp_tool_describe(&mcp_tools[i]));
  json_t *r = json_pack("{s:o}", "tools", tools);
  if (end < mcp_n_tools) {
    char buf[32];
    snprintf(buf, sizeof(buf), "tools:%zu", end);
    _cleanup_free_ char *c = cr_base64_encode((const uint8_t *)buf, strlen(buf));
    json_object_set_new(r, "nextCursor", json_string(c));
  }
  decorate(r, modern, 3600000, "public");
  send_result(s, id, r);
  json_decref(r);
}

static void handle_tools_call(mcp_session *s, json_t *id, json_t *params, bool modern) {
  const char *name = json_string_value(json_object_get(params, "name"));
  if (!name) {
    send_error(s, id, API_INVALID_PARAMS, "tools/call needs params.name");
    return;
  }
  const mcp_tool *t = mcp_tool_find(name);
  if (!t) {
    char buf[256];
    snprintf(buf, sizeof(buf), "unknown tool '%.100s'; call tools/list", name);
    send_error(s, id, API_INVALID_PARAMS, buf);
    return;
  }
  json_t *args = json_object_get(params, "arguments");
  if (args && json_is_null(args)) args = NULL;
  if (args && !json_is_object(args)) {
    send_error(s, id, API_INVALID_PARAMS, "arguments must be an object");
    return;
  }
  /* the tools only read their arguments: a reference, not a copy (a
   * write_file piece is a 5.6 MB string) */
  _cleanup_json_ json_t *a = args ? json_incref(args) : json_object();
  char buf[512];
  const char *problem = mcp_schema_check(mcp_tool_input_schema(t), a, buf, sizeof(buf));
  if (!problem && t->check) problem = t->check(a);
  if (problem) {
    char msg[700];
    snprintf(msg, sizeof(msg), "invalid arguments for %s: %s", t->name, problem);
    send_error(s, id, API_INVALID_PARAMS, msg);
    return;
  }
  mcp_call *c = calloc(1, sizeof(*c));
  if (!c) {
    send_error(s, id, API_INTERNAL_ERROR, "out of memory");
    return;
  }
  c->refs = 1; /* s->calls */
  c->s = s;
  mcp_session_ref(s);
  c->id = json_incref(id);
  c->progress_token = json_incref(json_object_get(json_object_get(params, "_meta"), "progressToken"));
  c->modern = modern;
  c->tool = t;
  c->args = TAKE_PTR(a);
  c->next = s->calls;
  s->calls = c;

  mcp_call_ref(c); /* keep it while starting */
  const char *sid = json_string_value(json_object_get(c->args, "sandbox_id"));
  if (sid || t->sandbox == MCP_SBX_NONE) {
    if (sid) c->sandbox_id = strdup(sid);
    run_call(c);
  } else if (s->default_sandbox) {
    c->sandbox_id = strdup(s->default_sandbox);
    c->used_default = true;
    run_call(c);
  } else if (t->sandbox == MCP_SBX_EXISTING) {
    mcp_call_fail(c, CR_E_SANDBOX_NOT_FOUND,
                  "this session has no default sandbox yet and no sandbox_id was given");
  } else {
    wait_for_default(c);
  }
  mcp_call_unref(c);
}

/* resources: cleanroom://sandboxes and cleanroom://sandboxes/{id} */
#define RES_PREFIX "cleanroom://sandboxes"

static bool resource_read_done(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (c->finished) return true;
  const char *uri = json_string_value(json_object_get(c->args, "uri"));
  c->finished = true;
  if (!c->cancelled) {
    if (mcp_is_error(msg)) {
      char buf[512];
      snprintf(buf, sizeof(buf), "%s: %s", uri, msg->message ?: "not found");
      mcp_send(c->s, rpc_error(c->id, -32002, buf, json_pack("{s:s}", "uri", uri)));
    } else {
      _cleanup_free_ char *text = json_dumps(mcp_result_of(msg), JSON_COMPACT | JSON_INDENT(2));
      json_t *r = json_pack("{s:[{s:s, s:s, s:s}]}", "contents", "uri", uri, "mimeType",
                            "application/json", "text", text ? text : "null");
      decorate(r, c->modern, 0, "private");
      send_result(c->s, c->id, r);
      json_decref(r);
    }
  }
  call_unlink(c);
  return true;
}

static void handle_resources_read(mcp_session *s, json_t *id, json_t *params, bool modern) {
  const char *uri = json_string_value(json_object_get(params, "uri"));
  if (!uri) {
    send_error(s, id, API_INVALID_PARAMS, "resources/read needs params.uri");
    return;
  }
  const char *method;
  json_t *p;
  size_t pl = strlen(RES_PREFIX);
  if (!strcmp(uri, RES_PREFIX)) {
    method = "sandbox.list";
    p = json_object();
  } else if (!strncmp(uri, RES_PREFIX "/", pl + 1) && uri[pl + 1] && !strchr(uri + pl + 1, '/')) {
    method = "sandbox.get";
    p = json_pack("{s:s}", "id", uri + pl + 1);
  } else {
    mcp_send(s, rpc_error(id, -32002, "resource not found; see resources/list",
                          json_pack("{s:s}", "uri", uri)));
    return;
  }
  mcp_call *c = calloc(1, sizeof(*c));
  if (!c) {
    json_decref(p);
    return;
  }
  c->refs = 1;
  c->s = s;
  mcp_session_ref(s);
  c->id = json_incref(id);
  c->modern = modern;
  c->args = json_pack("{s:s}", "uri", uri);
  c->next = s->calls;
  s->calls = c;
  mcp_api(s, c, method, p, resource_read_done);
}

static void handle_resources_list(mcp_session *s, json_t *id, bool modern) {
  json_t *r = json_pack(
      "{s:[{s:s, s:s, s:s, s:s, s:s}]}", "resources", "uri", RES_PREFIX, "name", "sandboxes",
      "title", "Sandboxes", "description",
      "All sandboxes of this daemon with state, image, policy hash and timings (JSON)",
      "mimeType", "application/json");
  decorate(r, modern, 0, "private");
  send_result(s, id, r);
  json_decref(r);
}

static void handle_templates_list(mcp_session *s, json_t *id, bool modern) {
  json_t *r = json_pack("{s:[{s:s, s:s, s:s, s:s, s:s}]}", "resourceTemplates", "uriTemplate",
                        RES_PREFIX "/{id}", "name", "sandbox", "title", "Sandbox",
                        "description", "One sandbox by id (JSON, as sandbox_inspect returns)",
                        "mimeType", "application/json");
  decorate(r, modern, 3600000, "public");
  send_result(s, id, r);
  json_decref(r);
}

static void handle_set_level(mcp_session *s, json_t *id, json_t *params, bool modern) {
  const char *level = json_string_value(json_object_get(params, "level"));
  for (size_t i = 0; level && i < ELEMENTSOF(log_levels); i++)
    if (!strcmp(level, log_levels[i])) {
      s->log_level = (int)i;
      json_t *r = json_object();
      decorate(r, modern, 0, NULL);
      send_result(s, id, r);
      json_decref(r);
      return;
    }
  send_error(s, id, API_INVALID_PARAMS,
             "level must be one of debug, info, notice, warning, error, critical, alert, emergency");
}

static void handle_configure(mcp_session *s, json_t *params) {
  if (!json_is_object(params)) return;
  json_decref(s->config);
  s->config = json_deep_copy(params);
  json_object_del(s->config, "_meta");
  json_t *idle = json_object_get(s->config, "idle_timeout_ms");
  if (json_is_integer(idle) && json_integer_value(idle) >= 0) {
    s->idle_timeout_ms = (uint64_t)json_integer_value(idle);
    s->idle_explicit = true;
  }
  /* --sandbox ID|NAME: the default is that sandbox, never a new one */
  const char *pin = json_string_value(json_object_get(s->config, "sandbox"));
  if (pin && *pin) {
    _cleanup_free_ char *named = mcp_name_lookup(pin);
    free(s->default_sandbox);
    s->default_sandbox = strdup(named ? named : pin);
    s->pinned = true;
    mcp_session_attach(s, s->default_sandbox, false);
  }
}

static void kill_execution(mcp_session *s, mcp_call *c);

static void handle_cancelled(mcp_session *s, json_t *params) {
  json_t *rid = json_object_get(params, "requestId");
  if (!rid) return;
  for (mcp_call *c = s->calls; c; c = c->next) {
    if (c->finished || !c->id || !json_equal(c->id, rid)) continue;
    c->cancelled = true;
    if (c->execution_id) kill_execution(s, c);
    /* no response for a cancelled request; the op stays to reap the exit */
    mcp_call_finish(c, json_object());
    return;
  }
}

static bool ignore_response(mcp_op *op, const mcp_msg *msg) { return msg->response; }

static void kill_execution(mcp_session *s, mcp_call *c) {
  if (c->kill_sent || !c->execution_id) return;
  c->kill_sent = true;
  mcp_api(s, NULL, "execution.cancel",
          json_pack("{s:s, s:s}", "execution_id", c->execution_id, "signal", "KILL"),
          ignore_response);
}

void mcp_call_kill(mcp_call *c) { kill_execution(c->s, c); }

static void handle_notification(mcp_session *s, const char *method, json_t *params) {
  if (!strcmp(method, "notifications/initialized"))
    s->client_ready = true;
  else if (!strcmp(method, "notifications/cancelled"))
    handle_cancelled(s, params);
  else if (!strcmp(method, "cleanroom/configure"))
    handle_configure(s, params);
  /* others (roots/list_changed, progress, ...) need nothing from us */
}

void mcp_session_handle_message(mcp_session *s, json_t *msg) {
  if (!s || s->closed) return;
  if (json_is_array(msg)) {
    send_error(s, NULL, API_INVALID_REQUEST, "JSON-RPC batches are not supported; send one message per line");
    return;
  }
  if (!json_is_object(msg)) {
    send_error(s, NULL, API_INVALID_REQUEST, "a JSON-RPC message must be an object");
    return;
  }
  json_t *id = json_object_get(msg, "id");
  if (id && !json_is_string(id) && !json_is_integer(id)) {
    send_error(s, NULL, API_INVALID_REQUEST, "id must be a string or an integer");
    return;
  }
  const char *jsonrpc = json_string_value(json_object_get(msg, "jsonrpc"));
  json_t *m = json_object_get(msg, "method");
  if (!jsonrpc || strcmp(jsonrpc, "2.0") != 0 || (m && !json_is_string(m))) {
    if (id) send_error(s, id, API_INVALID_REQUEST, "not a JSON-RPC 2.0 request");
    else send_error(s, NULL, API_INVALID_REQUEST, "not a JSON-RPC 2.0 message");
    return;
  }
  if (!m) {
    /* a response to a request of ours (we send none) */
    if (json_object_get(msg, "result") || json_object_get(msg, "error")) return;
    send_error(s, id, API_INVALID_REQUEST, "missing method");
    return;
  }
  const char *method = json_string_value(m);
  json_t *params = json_object_get(msg, "params");
  if (params && !json_is_object(params)) {
    if (id) send_error(s, id, API_INVALID_PARAMS, "params must be an object");
    return;
  }
  if (!id) {
    handle_notification(s, method, params);
    return;
  }

  /* the era: 2026-07-28 requests name their version in _meta */
  bool modern = false;
  json_t *ver = json_object_get(json_object_get(params, "_meta"), MCP_META_VERSION);
  if (ver) {
    const char *v = json_string_value(ver);
    if (!v || !version_known(v)) {
      mcp_send(s, rpc_error(id, MCP_UNSUPPORTED_VERSION, "unsupported protocol version",
                            json_pack("{s:o, s:O}", "supported", versions_json(),
                                      "requested", ver)));
      return;
    }
    modern = !strcmp(v, MCP_MODERN_VERSION);
  }

  if (!strcmp(method, "initialize"))
    handle_initialize(s, id, params);
  else if (!strcmp(method, "server/discover"))
    handle_discover(s, id);
  else if (!strcmp(method, "ping")) {
    json_t *r = json_object();
    decorate(r, modern, 0, NULL);
    send_result(s, id, r);
    json_decref(r);
  } else if (!strcmp(method, "tools/list"))
    handle_tools_list(s, id, params, modern);
  else if (!strcmp(method, "tools/call"))
    handle_tools_call(s, id, params, modern);
  else if (!strcmp(method, "resources/list"))
    handle_resources_list(s, id, modern);
  else if (!strcmp(method, "resources/templates/list"))
    handle_templates_list(s, id, modern);
  else if (!strcmp(method, "resources/read"))
    handle_resources_read(s, id, params, modern);
  else if (!strcmp(method, "logging/setLevel"))
    handle_set_level(s, id, params, modern);
  else if (!strcmp(method, "cleanroom/configure")) {
    handle_configure(s, params);
    json_t *r = json_object();
    decorate(r, modern, 0, NULL);
    send_result(s, id, r);
    json_decref(r);
  } else {
    char buf[200];
    snprintf(buf, sizeof(buf), "method not found: %.120s", method);
    send_error(s, id, API_METHOD_NOT_FOUND, buf);
  }
}

void mcp_session_reject_line(mcp_session *s, json_t *id, size_t len) {
  if (!s || s->closed) return;
  char buf[600];
  snprintf(buf, sizeof(buf),
           "request too large: %zu bytes, over the %u-byte limit of one MCP message. "
           "write_file takes at most 4194304 bytes of content per call (write big files in "
           "pieces with append:true); exec_write at most 1048576; read_file returns at most "
           "4194304 bytes per call (offset/length, next_offset)", len, MCP_MAX_LINE);
  mcp_send(s, rpc_error(id, API_INVALID_REQUEST, buf,
                        json_pack("{s:I, s:I}", "limit", (json_int_t)MCP_MAX_LINE, "size",
                                  (json_int_t)len)));
}

void mcp_session_handle_line(mcp_session *s, const char *line, size_t len) {
  if (!s || s->closed) return;
  while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
  if (len > MCP_MAX_LINE) {
    mcp_session_reject_line(s, NULL, len);
    return;
  }
  size_t i = 0;
  while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
  if (i == len) return; /* blank line */
  json_error_t jerr;
  _cleanup_json_ json_t *msg = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
  if (!msg) {
    char buf[300];
    snprintf(buf, sizeof(buf), "parse error: %s", jerr.text);
    send_error(s, NULL, API_PARSE_ERROR, buf);
    return;
  }
  mcp_session_handle_message(s, msg);
}

bool mcp_is_session_start(const json_t *first_msg) {
  const char *m = json_string_value(json_object_get(first_msg, "method"));
  return m && (!strcmp(m, "initialize") || !strcmp(m, "server/discover") ||
               !strcmp(m, "cleanroom/configure"));
}

void mcp_session_close(mcp_session *s) {
  if (!s || s->closed) return;
  s->closed = true;
  mcp_session_detach(s);
  /* kill what is still running; finished calls release their list ref */
  mcp_call *c = s->calls;
  while (c) {
    mcp_call *next = c->next;
    c->cancelled = true;
    mcp_call_ref(c);
    if (c->execution_id) kill_execution(s, c);
    if (c->tool) mcp_call_finish(c, json_object());
    mcp_call_unref(c);
    c = next;
  }
  mcp_session_unref(s);
}

/* MCP session: its lifetime, JSON-RPC framing and answers, the dispatch of
 * a message to its handler (both protocol eras), notifications, and the
 * end of a session. The handlers live in protocol.c (handshake, tools/list,
 * logging), call.c (tools/call), resources.c; docs/mcp.md describes the
 * behaviour. */
#include "mcp/mcp-internal.h"
#include "util/error.h"

#include <stdio.h>
#include <string.h>

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

json_t *mcp_rpc_error(json_t *id, int code, const char *message, json_t *data) {
  json_t *e = json_pack("{s:i, s:s}", "code", code, "message", message);
  if (data) json_object_set_new(e, "data", data);
  return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "error", e);
}

void mcp_send_error(mcp_session *s, json_t *id, int code, const char *message) {
  mcp_send(s, mcp_rpc_error(id, code, message, NULL));
}

/* modern results carry resultType (and for lists/reads ttlMs + cacheScope) */
void mcp_decorate(json_t *result, bool modern, int ttl_ms, const char *scope) {
  if (!modern) return;
  json_object_set_new(result, "resultType", json_string("complete"));
  if (scope) {
    json_object_set_new(result, "ttlMs", json_integer(ttl_ms));
    json_object_set_new(result, "cacheScope", json_string(scope));
  }
}

void mcp_send_result(mcp_session *s, json_t *id, json_t *result) {
  mcp_send(s, json_pack("{s:s, s:O, s:O}", "jsonrpc", "2.0", "id", id, "result", result));
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
    mcp_send_error(s, NULL, API_INVALID_REQUEST, "JSON-RPC batches are not supported; send one message per line");
    return;
  }
  if (!json_is_object(msg)) {
    mcp_send_error(s, NULL, API_INVALID_REQUEST, "a JSON-RPC message must be an object");
    return;
  }
  json_t *id = json_object_get(msg, "id");
  if (id && !json_is_string(id) && !json_is_integer(id)) {
    mcp_send_error(s, NULL, API_INVALID_REQUEST, "id must be a string or an integer");
    return;
  }
  const char *jsonrpc = json_string_value(json_object_get(msg, "jsonrpc"));
  json_t *m = json_object_get(msg, "method");
  if (!jsonrpc || strcmp(jsonrpc, "2.0") != 0 || (m && !json_is_string(m))) {
    if (id) mcp_send_error(s, id, API_INVALID_REQUEST, "not a JSON-RPC 2.0 request");
    else mcp_send_error(s, NULL, API_INVALID_REQUEST, "not a JSON-RPC 2.0 message");
    return;
  }
  if (!m) {
    /* a response to a request of ours (we send none) */
    if (json_object_get(msg, "result") || json_object_get(msg, "error")) return;
    mcp_send_error(s, id, API_INVALID_REQUEST, "missing method");
    return;
  }
  const char *method = json_string_value(m);
  json_t *params = json_object_get(msg, "params");
  if (params && !json_is_object(params)) {
    if (id) mcp_send_error(s, id, API_INVALID_PARAMS, "params must be an object");
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
    if (!v || !mcp_version_known(v)) {
      mcp_send(s, mcp_rpc_error(id, MCP_UNSUPPORTED_VERSION, "unsupported protocol version",
                            json_pack("{s:o, s:O}", "supported", mcp_versions_json(),
                                      "requested", ver)));
      return;
    }
    modern = !strcmp(v, MCP_MODERN_VERSION);
  }

  if (!strcmp(method, "initialize"))
    mcp_handle_initialize(s, id, params);
  else if (!strcmp(method, "server/discover"))
    mcp_handle_discover(s, id);
  else if (!strcmp(method, "ping")) {
    json_t *r = json_object();
    mcp_decorate(r, modern, 0, NULL);
    mcp_send_result(s, id, r);
    json_decref(r);
  } else if (!strcmp(method, "tools/list"))
    mcp_handle_tools_list(s, id, params, modern);
  else if (!strcmp(method, "tools/call"))
    mcp_handle_tools_call(s, id, params, modern);
  else if (!strcmp(method, "resources/list"))
    mcp_handle_resources_list(s, id, modern);
  else if (!strcmp(method, "resources/templates/list"))
    mcp_handle_templates_list(s, id, modern);
  else if (!strcmp(method, "resources/read"))
    mcp_handle_resources_read(s, id, params, modern);
  else if (!strcmp(method, "logging/setLevel"))
    mcp_handle_set_level(s, id, params, modern);
  else if (!strcmp(method, "cleanroom/configure")) {
    handle_configure(s, params);
    json_t *r = json_object();
    mcp_decorate(r, modern, 0, NULL);
    mcp_send_result(s, id, r);
    json_decref(r);
  } else {
    char buf[200];
    snprintf(buf, sizeof(buf), "method not found: %.120s", method);
    mcp_send_error(s, id, API_METHOD_NOT_FOUND, buf);
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
  mcp_send(s, mcp_rpc_error(id, API_INVALID_REQUEST, buf,
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
    mcp_send_error(s, NULL, API_PARSE_ERROR, buf);
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

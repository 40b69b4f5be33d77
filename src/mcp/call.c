/* MCP tools/call: a call's arguments checked and its sandbox resolved, its
 * lifetime (references, the session's list, the backstop timer), and its
 * answer (results, isError results with a hint, progress). */
#include "mcp/mcp-internal.h"
#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

void mcp_call_unlink(mcp_call *c) {
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
    mcp_decorate(result, c->modern, 0, NULL);
    _cleanup_json_ json_t *msg =
        json_pack("{s:s, s:O, s:O}", "jsonrpc", "2.0", "id", c->id, "result", result);
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    size_t len = text ? strlen(text) : 0;
    if (text && len <= MCP_RESULT_MAX) {
      c->finished = true;
      if (!c->s->closed) c->s->write_line(c->s->ud, text, len);
      free(text);
      json_decref(result);
      mcp_call_unlink(c);
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
  mcp_call_unlink(c);
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

void mcp_call_run(mcp_call *c) {
  if (c->finished) return;
  c->tool->run(c);
}

void mcp_handle_tools_call(mcp_session *s, json_t *id, json_t *params, bool modern) {
  const char *name = json_string_value(json_object_get(params, "name"));
  if (!name) {
    mcp_send_error(s, id, API_INVALID_PARAMS, "tools/call needs params.name");
    return;
  }
  const mcp_tool *t = mcp_tool_find(name);
  if (!t) {
    char buf[256];
    snprintf(buf, sizeof(buf), "unknown tool '%.100s'; call tools/list", name);
    mcp_send_error(s, id, API_INVALID_PARAMS, buf);
    return;
  }
  json_t *args = json_object_get(params, "arguments");
  if (args && json_is_null(args)) args = NULL;
  if (args && !json_is_object(args)) {
    mcp_send_error(s, id, API_INVALID_PARAMS, "arguments must be an object");
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
    mcp_send_error(s, id, API_INVALID_PARAMS, msg);
    return;
  }
  mcp_call *c = calloc(1, sizeof(*c));
  if (!c) {
    mcp_send_error(s, id, API_INTERNAL_ERROR, "out of memory");
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
    mcp_call_run(c);
  } else if (s->default_sandbox) {
    c->sandbox_id = strdup(s->default_sandbox);
    c->used_default = true;
    mcp_call_run(c);
  } else if (t->sandbox == MCP_SBX_EXISTING) {
    mcp_call_fail(c, CR_E_SANDBOX_NOT_FOUND,
                  "this session has no default sandbox yet and no sandbox_id was given");
  } else {
    mcp_default_wait(c);
  }
  mcp_call_unref(c);
}

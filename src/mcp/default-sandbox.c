/* The session's default sandbox: found by --name or created on the first
 * call that needs it; the calls waiting for it run once it is there. */
#include "mcp/mcp-internal.h"
#include "util/error.h"

#include <stdio.h>
#include <string.h>

/* ---- the default sandbox ---- */

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
      mcp_call_run(w);
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

void mcp_default_wait(mcp_call *c) {
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

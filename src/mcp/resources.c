/* MCP resources: cleanroom://sandboxes and cleanroom://sandboxes/{id}
 * (resources/list, resources/templates/list, resources/read). */
#include "mcp/mcp-internal.h"

#include <stdio.h>
#include <string.h>

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
      mcp_send(c->s, mcp_rpc_error(c->id, -32002, buf, json_pack("{s:s}", "uri", uri)));
    } else {
      _cleanup_free_ char *text = json_dumps(mcp_result_of(msg), JSON_COMPACT | JSON_INDENT(2));
      json_t *r = json_pack("{s:[{s:s, s:s, s:s}]}", "contents", "uri", uri, "mimeType",
                            "application/json", "text", text ? text : "null");
      mcp_decorate(r, c->modern, 0, "private");
      mcp_send_result(c->s, c->id, r);
      json_decref(r);
    }
  }
  mcp_call_unlink(c);
  return true;
}

void mcp_handle_resources_read(mcp_session *s, json_t *id, json_t *params, bool modern) {
  const char *uri = json_string_value(json_object_get(params, "uri"));
  if (!uri) {
    mcp_send_error(s, id, API_INVALID_PARAMS, "resources/read needs params.uri");
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
    mcp_send(s, mcp_rpc_error(id, -32002, "resource not found; see resources/list",
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

void mcp_handle_resources_list(mcp_session *s, json_t *id, bool modern) {
  json_t *r = json_pack(
      "{s:[{s:s, s:s, s:s, s:s, s:s}]}", "resources", "uri", RES_PREFIX, "name", "sandboxes",
      "title", "Sandboxes", "description",
      "All sandboxes of this daemon with state, image, policy hash and timings (JSON)",
      "mimeType", "application/json");
  mcp_decorate(r, modern, 0, "private");
  mcp_send_result(s, id, r);
  json_decref(r);
}

void mcp_handle_templates_list(mcp_session *s, json_t *id, bool modern) {
  json_t *r = json_pack("{s:[{s:s, s:s, s:s, s:s, s:s}]}", "resourceTemplates", "uriTemplate",
                        RES_PREFIX "/{id}", "name", "sandbox", "title", "Sandbox",
                        "description", "One sandbox by id (JSON, as sandbox_inspect returns)",
                        "mimeType", "application/json");
  mcp_decorate(r, modern, 3600000, "public");
  mcp_send_result(s, id, r);
  json_decref(r);
}

/* MCP tools, the sandbox group: sandbox_create, sandbox_list,
 * sandbox_inspect, sandbox_remove. */
#include "mcp/tools.h"

/* ---- schemas ---- */

const char mcp_sandbox_create_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"image\":{\"type\":\"string\",\"description\":\"Image reference (default: the "
    "session's configured image, else the daemon's default).\"},"
    "\"vcpus\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":64},"
    "\"memory_mib\":{\"type\":\"integer\",\"minimum\":128,\"maximum\":262144},"
    "\"policy\":{\"type\":\"object\",\"description\":\"Compiled egress policy (default: the "
    "session's configured policy).\"},"
    "\"repo_url\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Git repository to "
    "check out into /workspace (resolved to an exact commit before boot).\"},"
    "\"ref\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Branch, tag, ref or "
    "commit of repo_url (default: its HEAD).\"},"
    "\"submodules\":{\"type\":\"boolean\",\"description\":\"Check repo_url's submodules "
    "out too, each at the commit the superproject pins (default false).\"},"
    "\"from_snapshot\":{\"type\":\"string\",\"description\":\"Fork: start from this snapshot "
    "(id or name) with its memory, processes and files; image, vcpus and memory are the "
    "snapshot's.\"}},\"additionalProperties\":false}";

const char mcp_sandbox_id_only_input[] =
    "{\"type\":\"object\",\"properties\":{" SANDBOX_ID_PROP "},\"additionalProperties\":false}";

const char mcp_no_input[] = "{\"type\":\"object\",\"additionalProperties\":false}";

const char mcp_sandbox_list_output[] =
    "{\"type\":\"object\",\"properties\":{\"sandboxes\":{\"type\":\"array\"}},"
    "\"required\":[\"sandboxes\"]}";

/* ---- sandboxes ---- */

static bool sandbox_created(mcp_op *op, const mcp_msg *msg) {
  mcp_call *c = op->call;
  if (!msg->response) {
    json_t *p = msg->params;
    const char *phase = json_string_value(json_object_get(p, "phase"));
    const char *m = json_string_value(json_object_get(p, "message"));
    char buf[512];
    snprintf(buf, sizeof(buf), "%s%s%s", phase ? phase : "booting", m ? ": " : "", m ? m : "");
    mcp_call_progress(c, buf);
    return false;
  }
  const char *id = json_string_value(json_object_get(mcp_result_of(msg), "id"));
  if (!mcp_is_error(msg) && id && !c->s->default_sandbox) {
    c->s->default_sandbox = strdup(id);
    mcp_session_attach(c->s, id, true);
  }
  return finish_with_result(op, msg);
}

void mcp_sandbox_create_run(mcp_call *c) {
  json_t *p = json_object();
  json_t *cfg = c->s->config;
  static const char *const keys[] = {"image", "vcpus", "memory_mib", "policy"};
  json_t *from = json_object_get(c->args, "from_snapshot");
  if (json_is_string(from)) {
    json_object_set(p, "from_snapshot", from); /* the snapshot says image, vcpus, memory */
  } else {
    for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
      json_t *v = json_object_get(c->args, keys[i]);
      if (!v && (i == 0 || i == 3)) v = json_object_get(cfg, keys[i]);
      if (v && !json_is_null(v)) json_object_set(p, keys[i], v);
    }
  }
  if (arg_str(c, "repo_url"))
    json_object_set_new(p, "workspace",
                        json_pack("{s:s, s:s?, s:b}", "repo_url", arg_str(c, "repo_url"), "ref",
                                  arg_str(c, "ref"), "submodules", arg_bool(c, "submodules")));
  mcp_call_progress(c, "creating a sandbox");
  mcp_api(c->s, c, "sandbox.create", p, sandbox_created);
}

void mcp_sandbox_list_run(mcp_call *c) {
  mcp_api(c->s, c, "sandbox.list", json_object(), finish_with_result);
}

/* What the sandbox may reach: from its compiled policy (deny by default). */
static json_t *network_summary(json_t *sandbox) {
  json_t *net = json_object_get(json_object_get(json_object_get(sandbox, "policy"), "sandbox"),
                                "network");
  json_t *n = json_object();
  if (!json_is_object(net)) {
    json_object_set_new(n, "default", json_string("deny"));
    json_object_set_new(n, "allow", json_array());
    json_object_set_new(n, "summary", json_string("no policy: no egress at all"));
    return n;
  }
  const char *def = json_string_value(json_object_get(net, "default"));
  json_object_set_new(n, "default", json_string(def ? def : "deny"));
  json_t *allow = json_array();
  size_t i;
  json_t *r;
  json_array_foreach(json_object_get(net, "allow"), i, r) {
    const char *host = json_string_value(json_object_get(r, "host"));
    if (host) json_array_append_new(allow, json_string(host));
  }
  char buf[200];
  snprintf(buf, sizeof(buf), "%s by default; %zu allow rule(s)", def && !strcmp(def, "allow")
           ? "egress allowed" : "egress denied", json_array_size(allow));
  json_object_set_new(n, "allow", allow);
  json_object_set_new(n, "summary", json_string(buf));
  return n;
}

#define INSPECT_DENIALS 10

/* sandbox_inspect, second step: the newest denials into network */
static bool inspect_denials(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  json_t *r = TAKE_PTR(c->scratch);
  json_t *evs = mcp_is_error(msg) ? NULL : json_object_get(mcp_result_of(msg), "events");
  if (json_is_array(evs))
    json_object_set(json_object_get(r, "network"), "recent_denials", evs);
  mcp_call_finish_structured(c, r);
  return true;
}

static bool inspected(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  if (failed_response(op, msg)) return true;
  mcp_call *c = op->call;
  json_t *r = json_deep_copy(mcp_result_of(msg));
  /* the policy's summary, plus (sandboxes with a network) the effective
   * allowlist of the daemon: addresses, rules, resolved entries (egress),
   * and its newest denials (egress_events has them all) */
  json_t *sum = network_summary(r), *eff = json_object_get(r, "network");
  bool has_net = json_is_object(eff);
  if (has_net) json_object_set(sum, "effective", eff);
  json_object_set_new(r, "network", sum);
  if (!has_net) {
    mcp_call_finish_structured(c, r);
    return true;
  }
  json_decref(c->scratch);
  c->scratch = r;
  mcp_api(c->s, c, "events.list",
          json_pack("{s:s, s:s, s:i}", "sandbox", c->sandbox_id, "action", "deny", "limit",
                    INSPECT_DENIALS),
          inspect_denials);
  return true;
}

void mcp_sandbox_inspect_run(mcp_call *c) {
  mcp_api(c->s, c, "sandbox.get", json_pack("{s:s}", "id", c->sandbox_id), inspected);
}

static bool sandbox_removed(mcp_op *op, const mcp_msg *msg) {
  mcp_call *c = op->call;
  if (msg->response && !mcp_is_error(msg) && c->s->default_sandbox &&
      !strcmp(c->s->default_sandbox, c->sandbox_id)) {
    mcp_session_detach(c->s);
    free(c->s->default_sandbox);
    c->s->default_sandbox = NULL;
    c->s->pinned = false;
  }
  if (msg->response && !mcp_is_error(msg)) mcp_sandbox_forget(c->sandbox_id);
  return finish_with_result(op, msg);
}

void mcp_sandbox_remove_run(mcp_call *c) {
  mcp_api(c->s, c, "sandbox.terminate", json_pack("{s:s}", "id", c->sandbox_id),
          sandbox_removed);
}

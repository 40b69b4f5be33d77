/* MCP tool group: snapshots (snapshot_create, snapshot_restore,
 * snapshot_list, snapshot_remove). Each is one control-API call
 * (docs/api.md, snapshot.*); sandbox_create {from_snapshot} forks. */
#include "mcp/mcp-internal.h"

#include <string.h>

#define SNAP_SANDBOX_PROP                                                             \
  "\"sandbox_id\":{\"type\":\"string\",\"description\":\"Sandbox to act on; omit to use " \
  "this session's default sandbox.\"}"
#define SNAPSHOT_PROP                                                                  \
  "\"snapshot\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Snapshot id, unique " \
  "id prefix or name.\"}"

const char mcp_snapshot_create_input[] =
    "{\"type\":\"object\",\"properties\":{" SNAP_SANDBOX_PROP ","
    "\"name\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$\","
    "\"description\":\"A unique name to refer to the snapshot by.\"}},"
    "\"additionalProperties\":false}";
const char mcp_snapshot_restore_input[] =
    "{\"type\":\"object\",\"properties\":{" SNAPSHOT_PROP "," SNAP_SANDBOX_PROP "},"
    "\"required\":[\"snapshot\"],\"additionalProperties\":false}";
const char mcp_snapshot_list_input[] =
    "{\"type\":\"object\",\"properties\":{\"sandbox_id\":{\"type\":\"string\","
    "\"description\":\"Only this sandbox's snapshots.\"}},\"additionalProperties\":false}";
const char mcp_snapshot_remove_input[] =
    "{\"type\":\"object\",\"properties\":{" SNAPSHOT_PROP "},\"required\":[\"snapshot\"],"
    "\"additionalProperties\":false}";
const char mcp_snapshot_output[] =
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"name\":{\"anyOf\":"
    "[{\"type\":\"string\"},{\"type\":\"null\"}]},\"sandbox_id\":{\"type\":\"string\"}},\"required\":[\"id\"]}";
const char mcp_snapshot_list_output[] =
    "{\"type\":\"object\",\"properties\":{\"snapshots\":{\"type\":\"array\"}},"
    "\"required\":[\"snapshots\"]}";

static bool finish(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  if (mcp_is_error(msg))
    mcp_call_fail_api(op->call, msg);
  else
    mcp_call_finish_structured(op->call, json_incref(mcp_result_of(msg)));
  return true;
}

static const char *arg(mcp_call *c, const char *k) {
  return json_string_value(json_object_get(c->args, k));
}

void mcp_snapshot_create_run(mcp_call *c) {
  json_t *p = json_pack("{s:s}", "sandbox_id", c->sandbox_id);
  if (arg(c, "name")) json_object_set_new(p, "name", json_string(arg(c, "name")));
  mcp_call_progress(c, "pausing the sandbox and saving its memory and disk");
  mcp_api(c->s, c, "snapshot.create", p, finish);
}

void mcp_snapshot_restore_run(mcp_call *c) {
  mcp_call_progress(c, "restoring the snapshot");
  mcp_api(c->s, c, "snapshot.restore",
          json_pack("{s:s, s:s}", "snapshot", arg(c, "snapshot"), "sandbox_id", c->sandbox_id),
          finish);
}

void mcp_snapshot_list_run(mcp_call *c) {
  json_t *p = json_object();
  if (arg(c, "sandbox_id")) json_object_set_new(p, "sandbox_id", json_string(arg(c, "sandbox_id")));
  mcp_api(c->s, c, "snapshot.list", p, finish);
}

void mcp_snapshot_remove_run(mcp_call *c) {
  mcp_api(c->s, c, "snapshot.remove", json_pack("{s:s}", "snapshot", arg(c, "snapshot")), finish);
}

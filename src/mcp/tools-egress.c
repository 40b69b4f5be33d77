/* MCP tools, the egress group: egress_events. */
#include "mcp/tools.h"

/* ---- egress_events ---- */

#define EVENTS_DEFAULT_LIMIT 50

const char mcp_egress_events_input[] =
    "{\"type\":\"object\",\"properties\":{" SANDBOX_ID_PROP ","
    "\"action\":{\"type\":\"string\",\"enum\":[\"deny\",\"allow\",\"all\"],"
    "\"description\":\"deny (default): denied DNS lookups and rejected connections; allow: "
    "allowed lookups; all: both, plus network attach/detach.\"},"
    "\"since\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"Only events with a "
    "larger seq (pass the last_seq of the previous call to see what is new).\"},"
    "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":200,\"description\":"
    "\"At most this many, the newest (default 50, at most 200).\"}"
    "},\"additionalProperties\":false}";

const char mcp_egress_events_output[] =
    "{\"type\":\"object\",\"properties\":{\"sandbox_id\":{\"type\":\"string\"},"
    "\"events\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{"
    "\"seq\":{\"type\":\"integer\"},\"time\":{\"type\":\"string\"},"
    "\"kind\":{\"type\":\"string\",\"enum\":[\"dns\",\"connection\",\"network\"]},"
    "\"action\":{\"type\":\"string\"},\"reason\":{\"type\":\"string\"},"
    "\"name\":{\"type\":\"string\"},\"qtype\":{\"type\":\"string\"},"
    "\"address\":{\"type\":\"string\"},\"port\":{\"type\":\"integer\"},"
    "\"protocol\":{\"type\":\"string\"},\"addresses\":{\"type\":\"array\","
    "\"items\":{\"type\":\"string\"}}},\"required\":[\"seq\",\"kind\",\"action\","
    "\"reason\"]}},\"last_seq\":{\"type\":\"integer\"}},"
    "\"required\":[\"sandbox_id\",\"events\",\"last_seq\"]}";

static bool egress_events_listed(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (failed_response(op, msg)) return true;
  json_t *r = mcp_result_of(msg);
  json_t *evs = json_array();
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(r, "events"), i, e) {
    json_t *o = json_deep_copy(e);
    json_object_del(o, "sandbox"); /* the result names it once */
    json_array_append_new(evs, o);
  }
  mcp_call_finish_structured(c, json_pack("{s:s, s:o, s:O}", "sandbox_id", c->sandbox_id,
                                          "events", evs, "last_seq",
                                          json_object_get(r, "last_seq")));
  return true;
}

void mcp_egress_events_run(mcp_call *c) {
  const char *action = arg_str(c, "action") ?: "deny";
  json_t *p = json_pack("{s:s, s:I, s:I}", "sandbox", c->sandbox_id, "since",
                        arg_int(c, "since", 0), "limit",
                        arg_int(c, "limit", EVENTS_DEFAULT_LIMIT));
  if (strcmp(action, "all")) json_object_set_new(p, "action", json_string(action));
  mcp_api(c->s, c, "events.list", p, egress_events_listed);
}

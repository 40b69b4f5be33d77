/* MCP tools, the process group: process_list. */
#include "mcp/tools.h"

const char mcp_process_list_output[] =
    "{\"type\":\"object\",\"properties\":{\"executions\":{\"type\":\"array\"},"
    "\"running\":{\"type\":\"integer\"}},\"required\":[\"executions\"]}";


/* ---- process_list ---- */

static bool processes_listed(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (failed_response(op, msg)) return true;
  json_t *all = json_object_get(mcp_result_of(msg), "executions");
  json_t *list = json_array();
  json_int_t running = 0;
  size_t i;
  json_t *e;
  json_array_foreach(all, i, e) {
    const char *state = json_string_value(json_object_get(e, "state"));
    if (state && !strcmp(state, "running")) running++;
    if (json_array_size(list) >= 100) continue;
    json_t *o = json_object();
    static const char *const keys[] = {"id", "state", "argv", "exit_code", "signal",
                                       "timed_out", "created_at", "started_at", "ended_at"};
    for (size_t k = 0; k < ELEMENTSOF(keys); k++) {
      json_t *v = json_object_get(e, keys[k]);
      if (v && !json_is_null(v)) json_object_set(o, keys[k], v);
    }
    json_array_append_new(list, o);
  }
  mcp_call_finish_structured(c, json_pack("{s:o, s:I, s:b}", "executions", list, "running",
                                          running, "truncated", json_array_size(all) > 100));
  return true;
}

void mcp_process_list_run(mcp_call *c) {
  mcp_api(c->s, c, "execution.list", json_pack("{s:s}", "sandbox_id", c->sandbox_id),
          processes_listed);
}

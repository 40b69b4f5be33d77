/* The tool groups of src/mcp (tools-*.c) and their table (tools.c): what
 * the groups share, and what each one gives the table. */
#pragma once
#include "mcp/mcp-internal.h"
#include "util/error.h"

#include <string.h>

#define EXEC_DEFAULT_TIMEOUT_MS 60000
#define EXEC_DEFAULT_OUTPUT (64u * 1024)
#define EXEC_KILL_GRACE_MS 10000
#define PROGRESS_MAX_TEXT 4096
#define TEXT_READ_MAX (8u * 1024 * 1024)
#define TEXT_RETURN_MAX (256u * 1024)
#define B64_DEFAULT_LEN (1u * 1024 * 1024)
#define WRITE_MAX (4u * 1024 * 1024) /* write_file bytes per call (schema, description) */
#define LIST_MAX_ENTRIES 5000

/* schema parts */
#define SANDBOX_ID_PROP                                                              \
  "\"sandbox_id\":{\"type\":\"string\",\"description\":\"Sandbox to act on; omit to use " \
  "this session's default sandbox (created on first use).\"}"
#define EXEC_ID_PROP \
  "\"execution_id\":{\"type\":\"string\",\"minLength\":1,\"description\":\"From exec_start.\"}"
#define SANDBOX_OUT                                                                     \
  "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"state\":{\"type\":" \
  "\"string\"}},\"required\":[\"id\",\"state\"]}"
#define COMMAND_PROPS                                                                   \
  "\"command\":{\"type\":\"string\",\"description\":\"Shell command, run as /bin/sh -c "  \
  "COMMAND (not a login shell; PATH is set).\"},"                                       \
  "\"argv\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"minItems\":1,"           \
  "\"description\":\"Program and arguments, run without a shell (instead of command).\"},"

/* ---- helpers ---- */

static inline const char *arg_str(mcp_call *c, const char *k) {
  return json_string_value(json_object_get(c->args, k));
}
static inline json_int_t arg_int(mcp_call *c, const char *k, json_int_t def) {
  json_t *v = json_object_get(c->args, k);
  if (json_is_integer(v)) return json_integer_value(v);
  if (json_is_real(v)) return (json_int_t)json_real_value(v);
  return def;
}
static inline bool arg_bool(mcp_call *c, const char *k) {
  return json_is_true(json_object_get(c->args, k));
}

/* An error answer from the control API fails the call (isError result). */
static inline bool failed_response(mcp_op *op, const mcp_msg *msg) {
  if (!mcp_is_error(msg)) return false;
  mcp_call_fail_api(op->call, msg);
  return true;
}

/* Plain request: finish with the result (or its error) as structuredContent. */
static inline bool finish_with_result(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  if (mcp_is_error(msg)) mcp_call_fail_api(op->call, msg);
  else mcp_call_finish_structured(op->call, json_incref(mcp_result_of(msg)));
  return true;
}


/* ---- what each group gives the table ---- */

/* tools-sandbox.c */
extern const char mcp_sandbox_create_input[], mcp_sandbox_id_only_input[], mcp_no_input[],
    mcp_sandbox_list_output[];
void mcp_sandbox_create_run(mcp_call *c);
void mcp_sandbox_list_run(mcp_call *c);
void mcp_sandbox_inspect_run(mcp_call *c);
void mcp_sandbox_remove_run(mcp_call *c);
/* tools-exec.c */
extern const char mcp_exec_input[], mcp_exec_output[], mcp_exec_start_input[],
    mcp_exec_start_output[], mcp_exec_poll_input[], mcp_exec_poll_output[],
    mcp_exec_write_input[], mcp_exec_kill_input[], mcp_ack_output[];
const char *mcp_check_command(json_t *args);
const char *mcp_check_write(json_t *args);
void mcp_exec_run(mcp_call *c);
void mcp_exec_start_run(mcp_call *c);
void mcp_exec_poll_run(mcp_call *c);
void mcp_exec_write_run(mcp_call *c);
void mcp_exec_kill_run(mcp_call *c);
/* tools-files.c */
extern const char mcp_read_file_input[], mcp_read_file_output[], mcp_write_file_input[],
    mcp_write_file_output[], mcp_edit_file_input[], mcp_edit_file_output[],
    mcp_list_files_input[], mcp_list_files_output[], mcp_file_delete_input[],
    mcp_file_move_input[], mcp_search_files_input[], mcp_search_files_output[];
const char *mcp_check_read(json_t *args);
const char *mcp_check_write_file(json_t *args);
const char *mcp_check_abs(json_t *args);
const char *mcp_check_search(json_t *args);
void mcp_read_file_run(mcp_call *c);
void mcp_write_file_run(mcp_call *c);
void mcp_edit_file_run(mcp_call *c);
void mcp_list_files_run(mcp_call *c);
void mcp_file_delete_run(mcp_call *c);
void mcp_file_move_run(mcp_call *c);
void mcp_search_files_run(mcp_call *c);
/* tools-process.c */
extern const char mcp_process_list_output[];
void mcp_process_list_run(mcp_call *c);
/* tools-egress.c */
extern const char mcp_egress_events_input[], mcp_egress_events_output[];
void mcp_egress_events_run(mcp_call *c);

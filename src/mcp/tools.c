/* The MCP tools: one table entry per tool (name, description, schemas,
 * annotations, handler). Handlers call the control API (docs/api.md) and
 * finish with mcp_call_finish*() or mcp_call_fail*(). */
#include "mcp/tools.h"

/* ---- the table: fixed order (tools/list pages through it) ---- */

const mcp_tool mcp_tools[] = {
    {"exec", "Run a command",
     "Run a command in the sandbox and wait for it (default timeout 60 s). Give `command` "
     "(run by /bin/sh -c, so pipes and && work) or `argv`. Returns exit_code, stdout, "
     "stderr, timed_out and duration_ms as JSON text (structuredContent has the status "
     "without the output); output over max_output_bytes per stream (default 65536, at most "
     "1048576) keeps the head and the tail and says how many bytes were dropped. Progress "
     "notifications carry output as it arrives. For commands that may run longer than a "
     "minute use exec_start + exec_poll.",
     mcp_exec_input, mcp_exec_output, false, false, false, false, MCP_SBX_DEFAULT, mcp_check_command, mcp_exec_run},
    {"exec_start", "Start a background command",
     "Start a command in the background and return its execution_id at once; read its output "
     "with exec_poll, feed stdin with exec_write (set keep_stdin_open), stop it with "
     "exec_kill. Use for builds, servers and long test runs.",
     mcp_exec_start_input, mcp_exec_start_output, false, false, false, false, MCP_SBX_DEFAULT,
     mcp_check_command, mcp_exec_start_run},
    {"exec_poll", "Poll a background command",
     "Return the output a background command (exec_start) produced since `cursor`, its state "
     "(running, exited, failed) and exit_code. Pass the returned cursor to the next call; poll "
     "until running is false.",
     mcp_exec_poll_input, mcp_exec_poll_output, true, false, false, false, MCP_SBX_NONE, NULL, mcp_exec_poll_run},
    {"exec_write", "Write to a background command's stdin",
     "Write text (`data`) or bytes (`data_base64`) to the stdin of a command started with "
     "exec_start keep_stdin_open:true; eof:true closes stdin.",
     mcp_exec_write_input, mcp_ack_output, false, false, false, false, MCP_SBX_NONE, mcp_check_write, mcp_exec_write_run},
    {"exec_kill", "Stop a background command",
     "Send a signal (default KILL) to a background command's process group.",
     mcp_exec_kill_input, mcp_ack_output, false, true, true, false, MCP_SBX_NONE, NULL, mcp_exec_kill_run},
    {"read_file", "Read a file",
     "Read a file from the sandbox: text by line range (start_line/end_line, at most 262144 "
     "bytes per call), or exact bytes with encoding base64 and offset/length (length default "
     "1048576, at most 4194304 per call). The data is the first text block; structuredContent "
     "has the metadata: for base64, eof is true only on the chunk that reaches the end of the "
     "file, otherwise next_offset says where to continue.",
     mcp_read_file_input, mcp_read_file_output, true, false, true, false, MCP_SBX_DEFAULT, mcp_check_read,
     mcp_read_file_run},
    {"write_file", "Write a file",
     "Create or replace a file in the sandbox with `content` (utf8 text, or bytes with "
     "encoding base64; at most 4194304 bytes per call: write larger files in pieces with "
     "append:true after the first); mode sets permissions (\"0755\"), create_parents makes "
     "missing directories.",
     mcp_write_file_input, mcp_write_file_output, false, true, true, false, MCP_SBX_DEFAULT,
     mcp_check_write_file, mcp_write_file_run},
    {"edit_file", "Edit a file",
     "Replace the exact text old_string with new_string in a file. old_string must occur "
     "exactly once unless replace_all is set; read_file first to copy the text exactly.",
     mcp_edit_file_input, mcp_edit_file_output, false, true, false, false, MCP_SBX_DEFAULT, NULL,
     mcp_edit_file_run},
    {"list_files", "List files",
     "List a directory in the sandbox (depth levels deep) with name, type, mode and size.",
     mcp_list_files_input, mcp_list_files_output, true, false, true, false, MCP_SBX_DEFAULT, NULL,
     mcp_list_files_run},
    {"file_delete", "Delete a file",
     "Delete a file, a symlink or an empty directory in the sandbox; recursive:true deletes a "
     "directory with everything in it.",
     mcp_file_delete_input, NULL, false, true, true, false, MCP_SBX_DEFAULT, mcp_check_abs,
     mcp_file_delete_run},
    {"file_move", "Move or rename a file",
     "Move or rename a file or directory inside the sandbox (mv). Fails when the destination "
     "exists unless overwrite:true.",
     mcp_file_move_input, NULL, false, true, false, false, MCP_SBX_DEFAULT, mcp_check_abs, mcp_file_move_run},
    {"search_files", "Search file contents",
     "grep-like search: lines matching `pattern` (extended regex) in files under `path` "
     "(default /, skipping /proc, /sys, /dev) whose name matches `glob`. Returns path, line "
     "number and text per match; at most max_results (default 200, at most 2000) matches, "
     "lines cut at 400 bytes; truncated says when there were more.",
     mcp_search_files_input, mcp_search_files_output, true, false, true, false, MCP_SBX_DEFAULT,
     mcp_check_search, mcp_search_files_run},
    {"process_list", "List the sandbox's commands",
     "List the executions of the sandbox, newest first (at most 100): background commands "
     "from exec_start and finished ones, with state (running, exited, failed), argv and exit "
     "code. Poll a running one with exec_poll, stop it with exec_kill.",
     mcp_sandbox_id_only_input, mcp_process_list_output, true, false, true, false, MCP_SBX_EXISTING,
     NULL, mcp_process_list_run},
    {"diff", "Diff the workspace",
     "Show the changes in the sandbox's /workspace against the commit it was checked out at, "
     "as a git patch that `git apply` accepts (binary files as git binary patches, mode "
     "changes, deletions). stat_only lists the changed paths with A/M/D/T instead; paths "
     "limits it. Only files that changed are read, so it is cheap on large repositories.",
     mcp_diff_input, mcp_diff_output, true, false, true, false, MCP_SBX_EXISTING, NULL,
     mcp_diff_run},
    {"sandbox_create", "Create a sandbox",
     "Boot a new sandbox (microVM) and return it when ready; pass its id as sandbox_id to "
     "other tools. Optional image, vcpus, memory_mib, policy, and repo_url (+ ref) to check a "
     "git repository out into /workspace at an exact commit. The first sandbox a session "
     "creates becomes its default.",
     mcp_sandbox_create_input, SANDBOX_OUT, false, false, false, false, MCP_SBX_NONE, NULL,
     mcp_sandbox_create_run},
    {"sandbox_list", "List sandboxes",
     "List all sandboxes with state, image, policy hash and timings, newest first.",
     mcp_no_input, mcp_sandbox_list_output, true, false, true, false, MCP_SBX_NONE, NULL, mcp_sandbox_list_run},
    {"sandbox_inspect", "Inspect a sandbox",
     "Show one sandbox (default: this session's): state, image, policy, network summary "
     "(the effective allowlist and the newest denials for sandboxes with a network), "
     "created and last execution.",
     mcp_sandbox_id_only_input, SANDBOX_OUT, true, false, true, false, MCP_SBX_EXISTING, NULL,
     mcp_sandbox_inspect_run},
    {"egress_events", "Why a network request failed",
     "The sandbox's network audit events, oldest first: denied DNS lookups (REFUSED for a "
     "name the policy does not allow) and rejected connections, each with destination, port "
     "and a reason code (host_not_allowed, host_denied, port_not_allowed, "
     "ip_literal_not_allowed, protocol_not_allowed, host_service_denied, spoofed_source, ...). "
     "Call it when a connection, download or lookup in the sandbox fails: egress is denied "
     "unless the policy (cleanroom.yaml sandbox.network.allow) allows the host and port. "
     "action: deny (default), allow or all; since: the last_seq of a previous call. "
     "Kept across daemon restarts.",
     mcp_egress_events_input, mcp_egress_events_output, true, false, true, false, MCP_SBX_EXISTING,
     NULL, mcp_egress_events_run},
    {"sandbox_remove", "Remove a sandbox",
     "Stop a sandbox and delete it with its files (default: this session's sandbox; the next "
     "call then creates a fresh one).",
     mcp_sandbox_id_only_input, NULL, false, true, true, false, MCP_SBX_EXISTING, NULL,
     mcp_sandbox_remove_run},
    /* the snapshot group (tools-snapshot.c) */
    {"snapshot_create", "Snapshot a sandbox",
     "Save the sandbox's memory, running processes and files as a snapshot (the VM pauses "
     "for about a second) and return it; roll back to it with snapshot_restore or start "
     "independent copies with sandbox_create from_snapshot. Snapshots outlive the sandbox.",
     mcp_snapshot_create_input, mcp_snapshot_output, false, false, false, false,
     MCP_SBX_EXISTING, NULL, mcp_snapshot_create_run},
    {"snapshot_restore", "Restore a snapshot",
     "Roll the sandbox back to a snapshot: memory, processes and files are the snapshot's, "
     "running commands end. A damaged snapshot fails with snapshot_invalid and leaves the "
     "sandbox as it was.",
     mcp_snapshot_restore_input, SANDBOX_OUT, false, true, false, false, MCP_SBX_EXISTING,
     NULL, mcp_snapshot_restore_run},
    {"snapshot_list", "List snapshots",
     "List snapshots (optionally of one sandbox), newest first, with name, sandbox, size "
     "and creation time.",
     mcp_snapshot_list_input, mcp_snapshot_list_output, true, false, true, false, MCP_SBX_NONE,
     NULL, mcp_snapshot_list_run},
    {"snapshot_remove", "Remove a snapshot",
     "Delete a snapshot's files. Sandboxes forked from it keep running.",
     mcp_snapshot_remove_input, mcp_snapshot_output, false, true, true, false, MCP_SBX_NONE,
     NULL, mcp_snapshot_remove_run},
};
const size_t mcp_n_tools = ELEMENTSOF(mcp_tools);

static json_t *schema_cache[ELEMENTSOF(mcp_tools)][2];

static json_t *parsed(const mcp_tool *t, int which) {
  size_t i = (size_t)(t - mcp_tools);
  if (!schema_cache[i][which]) {
    const char *text = which ? t->output_schema : t->input_schema;
    if (!text) return NULL;
    schema_cache[i][which] = json_loads(text, 0, NULL);
  }
  return schema_cache[i][which];
}

json_t *mcp_tool_input_schema(const mcp_tool *t) { return parsed(t, 0); }

const mcp_tool *mcp_tool_find(const char *name) {
  for (size_t i = 0; i < mcp_n_tools; i++)
    if (!strcmp(mcp_tools[i].name, name)) return &mcp_tools[i];
  return NULL;
}

json_t *mcp_tool_describe(const mcp_tool *t) {
  json_t *d = json_pack("{s:s, s:s, s:s, s:O, s:{s:s, s:b, s:b, s:b, s:b}}", "name", t->name,
                        "title", t->title, "description", t->description, "inputSchema",
                        parsed(t, 0), "annotations", "title", t->title, "readOnlyHint",
                        t->read_only, "destructiveHint", t->destructive, "idempotentHint",
                        t->idempotent, "openWorldHint", t->open_world);
  if (t->output_schema) json_object_set(d, "outputSchema", parsed(t, 1));
  return d;
}

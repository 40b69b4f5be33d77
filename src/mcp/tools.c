/* The MCP tools: one table entry per tool (name, description, schemas,
 * annotations, handler). Handlers call the control API (docs/api.md) and
 * finish with mcp_call_finish*() or mcp_call_fail*(). */
#include "mcp/mcp-internal.h"
#include "util/base64.h"
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

/* ---- schemas ---- */

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

static const char exec_input[] =
    "{\"type\":\"object\",\"properties\":{" COMMAND_PROPS
    "\"cwd\":{\"type\":\"string\",\"description\":\"Working directory (absolute).\"},"
    "\"env\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"},"
    "\"description\":\"Extra environment variables.\"},"
    "\"stdin\":{\"type\":\"string\",\"maxLength\":1048576,\"description\":\"Text fed to the "
    "command's stdin, then closed (at most 1048576 characters).\"},"
    "\"timeout_ms\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":86400000,"
    "\"description\":\"Kill the command after this long (default 60000). Use exec_start for "
    "long work.\"},"
    "\"max_output_bytes\":{\"type\":\"integer\",\"minimum\":256,\"maximum\":1048576,"
    "\"description\":\"Cap per stream (default 65536, at most 1048576); the head and the tail "
    "are kept and the dropped byte count is reported.\"}," SANDBOX_ID_PROP
    "},\"additionalProperties\":false}";

/* stdout and stderr are in the text block only (bytes once per result) */
#define EXEC_STATUS_PROPS                                                               \
  "\"exit_code\":{\"type\":\"integer\",\"description\":\"Absent when the command was killed " \
  "by a signal.\"},"                                                                    \
  "\"signal\":{\"type\":\"integer\",\"description\":\"The signal number that ended it; absent when it exited.\"},"                   \
  "\"timed_out\":{\"type\":\"boolean\"},"                                                \
  "\"execution_id\":{\"type\":\"string\"},"

static const char exec_output[] =
    "{\"type\":\"object\",\"description\":\"Status only: the text block carries the same "
    "fields plus stdout and stderr.\",\"properties\":{" EXEC_STATUS_PROPS
    "\"truncated\":{\"type\":\"boolean\"},"
    "\"dropped_bytes\":{\"type\":\"object\",\"properties\":{\"stdout\":{\"type\":\"integer\"},"
    "\"stderr\":{\"type\":\"integer\"}}},"
    "\"duration_ms\":{\"type\":\"integer\"},\"sandbox_id\":{\"type\":\"string\"}},"
    "\"required\":[\"truncated\",\"timed_out\",\"duration_ms\",\"execution_id\"]}";

static const char exec_start_input[] =
    "{\"type\":\"object\",\"properties\":{" COMMAND_PROPS
    "\"cwd\":{\"type\":\"string\"},"
    "\"env\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"}},"
    "\"keep_stdin_open\":{\"type\":\"boolean\",\"description\":\"Keep stdin open for "
    "exec_write (default false: stdin is empty).\"},"
    "\"timeout_ms\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"Optional limit; "
    "none by default.\"}," SANDBOX_ID_PROP "},\"additionalProperties\":false}";

static const char exec_start_output[] =
    "{\"type\":\"object\",\"properties\":{\"execution_id\":{\"type\":\"string\"},"
    "\"sandbox_id\":{\"type\":\"string\"}},\"required\":[\"execution_id\"]}";

static const char exec_poll_input[] =
    "{\"type\":\"object\",\"properties\":{" EXEC_ID_PROP ","
    "\"cursor\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"The cursor the previous "
    "exec_poll returned (0 or omitted: from the start).\"},"
    "\"max_output_bytes\":{\"type\":\"integer\",\"minimum\":256,\"maximum\":1048576,"
    "\"description\":\"Cap per stream (default 65536, at most 1048576).\"}},"
    "\"required\":[\"execution_id\"],\"additionalProperties\":false}";

static const char exec_poll_output[] =
    "{\"type\":\"object\",\"description\":\"Status only: the text block carries the same "
    "fields plus stdout and stderr.\",\"properties\":{" EXEC_STATUS_PROPS
    "\"state\":{\"type\":\"string\"},\"running\":{\"type\":\"boolean\"},"
    "\"cursor\":{\"type\":\"integer\"},\"dropped_bytes\":{\"type\":\"integer\"}},"
    "\"required\":[\"execution_id\",\"state\",\"running\",\"cursor\"]}";

static const char exec_write_input[] =
    "{\"type\":\"object\",\"properties\":{" EXEC_ID_PROP ","
    "\"data\":{\"type\":\"string\",\"maxLength\":1048576,\"description\":\"UTF-8 text to "
    "write to stdin (at most 1048576 characters per call).\"},"
    "\"data_base64\":{\"type\":\"string\",\"maxLength\":1398104,\"description\":\"Bytes to "
    "write, base64 (at most 1 MiB of bytes per call).\"},"
    "\"eof\":{\"type\":\"boolean\",\"description\":\"Close stdin after writing.\"}},"
    "\"required\":[\"execution_id\"],\"additionalProperties\":false}";

static const char exec_kill_input[] =
    "{\"type\":\"object\",\"properties\":{" EXEC_ID_PROP ","
    "\"signal\":{\"type\":\"string\",\"description\":\"TERM, KILL (default), INT, HUP, QUIT, "
    "USR1, USR2, STOP, CONT, or a number like \\\"15\\\".\"}},"
    "\"required\":[\"execution_id\"],\"additionalProperties\":false}";

static const char ack_output[] =
    "{\"type\":\"object\",\"properties\":{\"execution_id\":{\"type\":\"string\"}}}";

static const char read_file_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"path\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Absolute path in the "
    "sandbox.\"},"
    "\"encoding\":{\"enum\":[\"utf8\",\"base64\"],\"description\":\"utf8 (default): text, "
    "by lines; base64: raw bytes, paged by offset/length.\"},"
    "\"start_line\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"utf8: first line "
    "(1-based).\"},"
    "\"end_line\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"utf8: last line, "
    "inclusive.\"},"
    "\"offset\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"base64: first byte "
    "(pass the previous result's next_offset).\"},"
    "\"length\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":4194304,\"description\":"
    "\"base64: bytes to read (default 1048576, at most 4194304).\"}," SANDBOX_ID_PROP
    "},\"required\":[\"path\"],\"additionalProperties\":false}";

/* the bytes/text are in the first text block only */
static const char read_file_output[] =
    "{\"type\":\"object\",\"description\":\"Metadata: the file's text (utf8) or its base64 "
    "(base64) is the first text block.\",\"properties\":{\"path\":{\"type\":\"string\"},"
    "\"encoding\":{\"type\":\"string\"},\"size\":{\"type\":\"integer\"},"
    "\"truncated\":{\"type\":\"boolean\"},\"offset\":{\"type\":\"integer\"},"
    "\"length\":{\"type\":\"integer\"},\"eof\":{\"type\":\"boolean\"},"
    "\"next_offset\":{\"type\":\"integer\"},\"start_line\":{\"type\":\"integer\"},"
    "\"end_line\":{\"type\":\"integer\"},\"total_lines\":{\"type\":\"integer\"},"
    "\"next_start_line\":{\"type\":\"integer\"}},"
    "\"required\":[\"path\",\"encoding\",\"truncated\"]}";

static const char write_file_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"path\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Absolute path in the "
    "sandbox.\"},"
    "\"content\":{\"type\":\"string\",\"maxLength\":5592408,\"description\":\"The content "
    "(at most 4194304 bytes per call: 4 MiB of UTF-8, or 5592408 characters of base64). "
    "Write larger files in pieces: the first call without append, the rest with "
    "append:true.\"},"
    "\"encoding\":{\"enum\":[\"utf8\",\"base64\"],\"description\":\"How content is encoded "
    "(default utf8).\"},"
    "\"append\":{\"type\":\"boolean\",\"description\":\"Append content to the file instead "
    "of replacing it (for writing large files in pieces).\"},"
    "\"mode\":{\"type\":\"string\",\"pattern\":\"^[0-7]{3,4}$\",\"description\":\"Octal "
    "permissions like \\\"0755\\\" (default \\\"0644\\\").\"},"
    "\"create_parents\":{\"type\":\"boolean\",\"description\":\"Create missing parent "
    "directories.\"}," SANDBOX_ID_PROP
    "},\"required\":[\"path\",\"content\"],\"additionalProperties\":false}";

static const char write_file_output[] =
    "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"},"
    "\"size\":{\"type\":\"integer\"},\"bytes_written\":{\"type\":\"integer\"}},"
    "\"required\":[\"path\"]}";

static const char edit_file_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"path\":{\"type\":\"string\",\"minLength\":1},"
    "\"old_string\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Exact text to "
    "replace (whitespace matters).\"},"
    "\"new_string\":{\"type\":\"string\",\"description\":\"Replacement text.\"},"
    "\"replace_all\":{\"type\":\"boolean\",\"description\":\"Replace every occurrence "
    "(default: old_string must occur exactly once).\"}," SANDBOX_ID_PROP
    "},\"required\":[\"path\",\"old_string\",\"new_string\"],\"additionalProperties\":false}";

static const char edit_file_output[] =
    "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"},"
    "\"replacements\":{\"type\":\"integer\"},\"size\":{\"type\":\"integer\"}},"
    "\"required\":[\"path\",\"replacements\"]}";

static const char list_files_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"path\":{\"type\":\"string\",\"description\":\"Directory (default /).\"},"
    "\"depth\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":10,\"description\":\"Levels "
    "to descend (default 1).\"}," SANDBOX_ID_PROP "},\"additionalProperties\":false}";

static const char list_files_output[] =
    "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"},"
    "\"entries\":{\"type\":\"array\"},\"truncated\":{\"type\":\"boolean\"}},"
    "\"required\":[\"path\",\"entries\"]}";

static const char sandbox_create_input[] =
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

static const char sandbox_id_only_input[] =
    "{\"type\":\"object\",\"properties\":{" SANDBOX_ID_PROP "},\"additionalProperties\":false}";

static const char no_input[] = "{\"type\":\"object\",\"additionalProperties\":false}";

static const char sandbox_list_output[] =
    "{\"type\":\"object\",\"properties\":{\"sandboxes\":{\"type\":\"array\"}},"
    "\"required\":[\"sandboxes\"]}";

/* ---- helpers ---- */

static const char *arg_str(mcp_call *c, const char *k) {
  return json_string_value(json_object_get(c->args, k));
}
static json_int_t arg_int(mcp_call *c, const char *k, json_int_t def) {
  json_t *v = json_object_get(c->args, k);
  if (json_is_integer(v)) return json_integer_value(v);
  if (json_is_real(v)) return (json_int_t)json_real_value(v);
  return def;
}
static bool arg_bool(mcp_call *c, const char *k) {
  return json_is_true(json_object_get(c->args, k));
}

static const char *check_command(json_t *args) {
  bool cmd = json_object_get(args, "command") != NULL, argv = json_object_get(args, "argv") != NULL;
  if (cmd == argv) return "give exactly one of 'command' (a shell string) or 'argv' (an array)";
  if (argv && json_array_size(json_object_get(args, "argv")) == 0) return "'argv' must not be empty";
  return NULL;
}

/* the common parameters of execution.create */
static json_t *exec_params(mcp_call *c) {
  json_t *p = json_pack("{s:s}", "sandbox_id", c->sandbox_id);
  const char *cmd = arg_str(c, "command");
  if (cmd)
    json_object_set_new(p, "argv", json_pack("[s, s, s]", "/bin/sh", "-c", cmd));
  else
    json_object_set(p, "argv", json_object_get(c->args, "argv"));
  if (arg_str(c, "cwd")) json_object_set(p, "cwd", json_object_get(c->args, "cwd"));
  json_t *env = json_object_get(c->args, "env");
  if (json_object_size(env)) {
    json_t *a = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(env, k, v) {
      size_t n = strlen(k) + json_string_length(v) + 2;
      _cleanup_free_ char *kv = malloc(n);
      if (!kv) continue;
      snprintf(kv, n, "%s=%s", k, json_string_value(v));
      json_array_append_new(a, json_string(kv));
    }
    json_object_set_new(p, "env", a);
  }
  return p;
}

/* An error answer from the control API fails the call (isError result). */
static bool failed_response(mcp_op *op, const mcp_msg *msg) {
  if (!mcp_is_error(msg)) return false;
  mcp_call_fail_api(op->call, msg);
  return true;
}

/* Plain request: finish with the result (or its error) as structuredContent. */
static bool finish_with_result(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  if (mcp_is_error(msg)) mcp_call_fail_api(op->call, msg);
  else mcp_call_finish_structured(op->call, json_incref(mcp_result_of(msg)));
  return true;
}

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

static void sandbox_create_run(mcp_call *c) {
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

static void sandbox_list_run(mcp_call *c) {
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

static void sandbox_inspect_run(mcp_call *c) {
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

static void sandbox_remove_run(mcp_call *c) {
  mcp_api(c->s, c, "sandbox.terminate", json_pack("{s:s}", "id", c->sandbox_id),
          sandbox_removed);
}

/* ---- exec ---- */

static void exec_finish(mcp_call *c, json_t *execution) {
  if (!mcp_call_alive(c)) return;
  const char *state = json_string_value(json_object_get(execution, "state"));
  json_t *code = json_object_get(execution, "exit_code");
  const char *reason = json_string_value(json_object_get(execution, "reason"));
  const char *message = json_string_value(json_object_get(execution, "message"));
  /* never started: failed without an exit code, or the guest could not exec
   * the program (reason set with exit code 127/126) */
  bool timed_out = c->timed_out || json_is_true(json_object_get(execution, "timed_out"));
  if (!timed_out && ((state && !strcmp(state, "failed") && !json_is_integer(code)) ||
                        (reason && state && !strcmp(state, "exited")))) {
    mcp_call_fail(c, reason ? reason : CR_E_COMMAND_NOT_FOUND, "%s",
                  message ? message : "the command could not be started");
    return;
  }
  uint64_t d_out = 0, d_err = 0;
  json_t *out = mcp_outbuf_text(&c->out[0], "stdout", &d_out);
  json_t *err = mcp_outbuf_text(&c->out[1], "stderr", &d_err);
  json_t *r = json_pack("{s:b, s:{s:I, s:I}, s:b, s:I, s:s, s:s}", "truncated",
                        d_out + d_err > 0, "dropped_bytes", "stdout", (json_int_t)d_out,
                        "stderr", (json_int_t)d_err, "timed_out", timed_out, "duration_ms",
                        (json_int_t)(mcp_now_ms() - c->started_ms), "execution_id",
                        c->execution_id ? c->execution_id : "", "sandbox_id", c->sandbox_id);
  /* absent, never null, when not known (the output schema says integer) */
  if (json_is_integer(code)) json_object_set(r, "exit_code", code);
  json_t *sig = json_object_get(execution, "signal");
  if (json_is_integer(sig)) json_object_set(r, "signal", sig);
  mcp_call_finish_with_output(c, r, out ? out : json_string(""), err ? err : json_string(""));
}

/* The timeout is the daemon's (execution.create's timeout_ms: it kills the
 * command and the exit says timed_out). This is only the backstop when no
 * exit came even EXEC_KILL_GRACE_MS after it: answer with what we have. */
static void exec_timer(uv_timer_t *t) {
  mcp_call *c = container_of(t, mcp_call, timer);
  c->timed_out = true;
  exec_finish(c, NULL);
}

static bool exec_write_done(mcp_op *op, const mcp_msg *msg) { return msg->response; }

static bool exec_msg(mcp_op *op, const mcp_msg *msg) {
  mcp_call *c = op->call;
  if (msg->response) {
    if (mcp_is_error(msg)) {
      mcp_call_fail_api(c, msg);
      return true;
    }
    const char *eid = json_string_value(json_object_get(mcp_result_of(msg), "execution_id"));
    if (!eid) {
      mcp_call_fail(c, CR_E_INTERNAL, "execution.create returned no execution_id");
      return true;
    }
    free(c->execution_id);
    c->execution_id = strdup(eid);
    if (c->cancelled || c->finished) { /* cancelled while starting */
      mcp_call_kill(c);
      return false;
    }
    const char *in = arg_str(c, "stdin");
    if (in)
      mcp_api_bytes(c->s, NULL, "execution.write",
                    json_pack("{s:s, s:b}", "execution_id", eid, "eof", 1), in, strlen(in),
                    exec_write_done);
    if (c->s->loop && uv_timer_init(c->s->loop, &c->timer) == 0) {
      mcp_call_ref(c); /* released when the timer is closed */
      c->timer_active = true;
      uv_timer_start(&c->timer, exec_timer, c->timeout_ms + EXEC_KILL_GRACE_MS, 0);
    }
    return false;
  }
  const char *method = msg->method;
  json_t *p = msg->params;
  if (!method) return false;
  if (!strcmp(method, "execution.output")) {
    if (!mcp_call_alive(c) || !msg->bytes) return false;
    const char *stream = json_string_value(json_object_get(p, "stream"));
    const char *raw = (const char *)msg->bytes->data;
    size_t n = msg->bytes->len;
    bool is_err = stream && !strcmp(stream, "stderr");
    mcp_outbuf_add(&c->out[is_err], raw, n);
    if (c->progress_token) {
      _cleanup_free_ char *t = mcp_utf8_lossy(raw, MIN(n, PROGRESS_MAX_TEXT), NULL);
      if (t) mcp_call_progress(c, t);
    }
    return false;
  }
  if (!strcmp(method, "execution.exit")) {
    exec_finish(c, json_object_get(p, "execution"));
    return true;
  }
  return false;
}

static void exec_run(mcp_call *c) {
  c->timeout_ms = (uint64_t)arg_int(c, "timeout_ms", EXEC_DEFAULT_TIMEOUT_MS);
  c->max_output = (uint64_t)arg_int(c, "max_output_bytes", EXEC_DEFAULT_OUTPUT);
  mcp_outbuf_init(&c->out[0], c->max_output);
  mcp_outbuf_init(&c->out[1], c->max_output);
  json_t *p = exec_params(c);
  json_object_set_new(p, "attach", json_true());
  json_object_set_new(p, "stdin", json_boolean(arg_str(c, "stdin") != NULL));
  json_object_set_new(p, "timeout_ms", json_integer((json_int_t)c->timeout_ms));
  c->started_ms = mcp_now_ms();
  mcp_api(c->s, c, "execution.create", p, exec_msg);
}

static bool exec_started(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (failed_response(op, msg)) return true;
  const char *eid = json_string_value(json_object_get(mcp_result_of(msg), "execution_id"));
  mcp_call_finish_structured(c, json_pack("{s:s, s:s}", "execution_id", eid ? eid : "",
                                          "sandbox_id", c->sandbox_id));
  return true;
}

static void exec_start_run(mcp_call *c) {
  json_t *p = exec_params(c);
  json_object_set_new(p, "attach", json_false());
  json_object_set_new(p, "stdin", json_boolean(arg_bool(c, "keep_stdin_open")));
  if (json_object_get(c->args, "timeout_ms"))
    json_object_set_new(p, "timeout_ms", json_integer(arg_int(c, "timeout_ms", 0)));
  mcp_api(c->s, c, "execution.create", p, exec_started);
}

static json_t *capped_b64_text(const char *b64, size_t cap, const char *stream,
                               uint64_t *ret_dropped) {
  unsigned char *raw = NULL;
  size_t n = 0;
  if (!b64 || cr_base64_decode_lenient(b64, strlen(b64), &raw, &n) < 0) {
    *ret_dropped = 0;
    return json_string("");
  }
  mcp_outbuf b;
  mcp_outbuf_init(&b, cap);
  mcp_outbuf_add(&b, (const char *)raw, n);
  free(raw);
  json_t *t = mcp_outbuf_text(&b, stream, ret_dropped);
  mcp_outbuf_done(&b);
  return t ? t : json_string("");
}

static bool exec_polled(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (failed_response(op, msg)) return true;
  json_t *r = mcp_result_of(msg);
  size_t cap = (size_t)arg_int(c, "max_output_bytes", EXEC_DEFAULT_OUTPUT);
  uint64_t d1 = 0, d2 = 0;
  json_t *out = capped_b64_text(json_string_value(json_object_get(r, "stdout")), cap, "stdout", &d1);
  json_t *err = capped_b64_text(json_string_value(json_object_get(r, "stderr")), cap, "stderr", &d2);
  json_t *ex = json_object_get(r, "execution");
  const char *state = json_string_value(json_object_get(r, "state"));
  if (!state) state = json_string_value(json_object_get(ex, "state"));
  if (!state) state = "unknown";
  json_t *code = json_object_get(ex, "exit_code");
  json_int_t dropped = json_integer_value(json_object_get(r, "dropped")) + (json_int_t)(d1 + d2);
  json_t *res = json_pack("{s:s, s:s, s:b, s:I, s:I}", "execution_id",
                          arg_str(c, "execution_id"), "state", state, "running",
                          !strcmp(state, "running"), "cursor",
                          json_integer_value(json_object_get(r, "cursor")), "dropped_bytes",
                          dropped);
  /* absent while running or after a signal (the output schema says integer) */
  if (json_is_integer(code)) json_object_set(res, "exit_code", code);
  json_t *sig = json_object_get(ex, "signal");
  if (json_is_integer(sig)) json_object_set(res, "signal", sig);
  if (json_is_true(json_object_get(ex, "timed_out"))) json_object_set_new(res, "timed_out", json_true());
  mcp_call_finish_with_output(c, res, out, err);
  return true;
}

static void exec_poll_run(mcp_call *c) {
  mcp_api(c->s, c, "execution.read",
          json_pack("{s:s, s:I}", "execution_id", arg_str(c, "execution_id"), "cursor",
                    arg_int(c, "cursor", 0)),
          exec_polled);
}

static const char *check_write(json_t *args) {
  if (json_object_get(args, "data") && json_object_get(args, "data_base64"))
    return "give 'data' or 'data_base64', not both";
  if (!json_object_get(args, "data") && !json_object_get(args, "data_base64") &&
      !json_is_true(json_object_get(args, "eof")))
    return "nothing to do: give 'data', 'data_base64' or eof:true";
  const char *b = json_string_value(json_object_get(args, "data_base64"));
  if (b) {
    unsigned char *raw = NULL;
    size_t n;
    if (cr_base64_decode_lenient(b, strlen(b), &raw, &n) < 0) return "'data_base64' is not valid base64";
    free(raw);
  }
  return NULL;
}

static bool ack_execution(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (mcp_is_error(msg)) mcp_call_fail_api(c, msg);
  else {
    json_t *r = json_pack("{s:s}", "execution_id", arg_str(c, "execution_id"));
    if (c->scratch) json_object_update(r, c->scratch);
    mcp_call_finish_structured(c, r);
  }
  return true;
}

static void exec_write_run(mcp_call *c) {
  json_t *p = json_pack("{s:s}", "execution_id", arg_str(c, "execution_id"));
  size_t n = 0;
  const void *data = NULL;
  _cleanup_free_ unsigned char *raw = NULL;
  if (arg_str(c, "data")) {
    data = arg_str(c, "data");
    n = strlen(data);
  } else if (arg_str(c, "data_base64")) {
    const char *b = arg_str(c, "data_base64");
    if (cr_base64_decode_lenient(b, strlen(b), &raw, &n) == 0) data = raw;
    else n = 0;
  }
  if (arg_bool(c, "eof")) json_object_set_new(p, "eof", json_true());
  c->scratch = json_pack("{s:I, s:b}", "bytes_written", (json_int_t)n, "eof", arg_bool(c, "eof"));
  mcp_api_bytes(c->s, c, "execution.write", p, data, n, ack_execution);
}

static void exec_kill_run(mcp_call *c) {
  const char *name = arg_str(c, "signal");
  if (!name) name = "KILL";
  _cleanup_json_ json_t *sig = name[0] && strspn(name, "0123456789") == strlen(name)
                                   ? json_integer(strtol(name, NULL, 10))
                                   : json_string(name);
  json_t *p = json_pack("{s:s, s:O}", "execution_id", arg_str(c, "execution_id"), "signal", sig);
  c->scratch = json_pack("{s:s}", "signal", name);
  mcp_api(c->s, c, "execution.cancel", p, ack_execution);
}

/* ---- files ---- */

static const char *check_read(json_t *args) {
  const char *enc = json_string_value(json_object_get(args, "encoding"));
  bool b64 = enc && !strcmp(enc, "base64");
  if (b64 && (json_object_get(args, "start_line") || json_object_get(args, "end_line")))
    return "start_line/end_line apply to encoding utf8; use offset/length with base64";
  if (!b64 && (json_object_get(args, "offset") || json_object_get(args, "length")))
    return "offset/length apply to encoding base64; use start_line/end_line for text";
  json_t *s = json_object_get(args, "start_line"), *e = json_object_get(args, "end_line");
  if (s && e && json_integer_value(e) < json_integer_value(s)) return "end_line is before start_line";
  return NULL;
}

static void read_text(mcp_call *c, json_t *r, const api_bytes *bytes) {
  if (!bytes) {
    mcp_call_fail(c, CR_E_INTERNAL, "file.read returned no data");
    return;
  }
  const unsigned char *raw = bytes->data ? bytes->data : (const unsigned char *)"";
  size_t n = bytes->len;
  bool eof = !json_is_false(json_object_get(r, "eof"));
  json_int_t first = arg_int(c, "start_line", 1), last = arg_int(c, "end_line", 0);
  /* find the byte range of lines [first, last] */
  size_t start = 0, line = 1, i = 0;
  while (line < (size_t)first && i < n) {
    if (raw[i++] == '\n') {
      line++;
      start = i;
    }
  }
  if (line < (size_t)first) start = n;
  size_t end = start, shown_last = line - 1, total_lines = 0;
  bool truncated = false;
  for (i = start; i < n; i++) {
    if (raw[i] == '\n') {
      shown_last++;
      if (i + 1 - start > TEXT_RETURN_MAX) {
        truncated = true;
        shown_last--;
        break;
      }
      end = i + 1;
      if (last && shown_last >= (size_t)last) break;
    }
  }
  if (i >= n && end < n && !truncated) { /* last line without newline */
    if (n - start <= TEXT_RETURN_MAX) {
      end = n;
      shown_last++;
    } else {
      truncated = true;
    }
  }
  if (end == start && start < n && truncated) { /* one giant line */
    end = start + TEXT_RETURN_MAX;
    shown_last = line;
  }
  for (size_t k = 0; k < n; k++) total_lines += raw[k] == '\n';
  if (n && raw[n - 1] != '\n') total_lines++;
  if (!eof) truncated = true;
  bool more = end < n || !eof;
  bool binary = memchr(raw, 0, n) != NULL;
  json_t *content = mcp_text_json((const char *)raw + start, end - start);
  json_t *res = json_pack("{s:s, s:s, s:I, s:I, s:I, s:b}", "path", arg_str(c, "path"),
                          "encoding", "utf8", "size",
                          json_integer_value(json_object_get(r, "size")), "start_line",
                          (json_int_t)first, "end_line", (json_int_t)shown_last, "truncated",
                          truncated && more);
  if (eof) json_object_set_new(res, "total_lines", json_integer((json_int_t)total_lines));
  if (more && (!last || shown_last < (size_t)last))
    json_object_set_new(res, "next_start_line", json_integer((json_int_t)shown_last + 1));
  /* content blocks: the text itself, then a note */
  char note[400];
  snprintf(note, sizeof(note),
           "[cleanroom: %s lines %lld-%zu%s%s%s]", arg_str(c, "path"), (long long)first, shown_last,
           truncated && more ? "; output truncated, call read_file with start_line=" : "",
           truncated && more ? "the next_start_line value for more" : "",
           binary ? "; the file has NUL bytes: use encoding base64 for exact bytes" : "");
  json_t *blocks = json_pack("[{s:s, s:o}, {s:s, s:s}]", "type", "text", "text",
                             content ? content : json_string(""), "type", "text", "text", note);
  mcp_call_finish(c, json_pack("{s:o, s:o}", "content", blocks, "structuredContent", res));
}

static bool file_read_done(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (failed_response(op, msg)) return true;
  json_t *r = mcp_result_of(msg);
  const char *enc = arg_str(c, "encoding");
  if (!enc || strcmp(enc, "base64") != 0) {
    read_text(c, r, msg->bytes);
    return true;
  }
  /* the model gets text: base64, encoded once, here */
  _cleanup_free_ char *b64 =
      msg->bytes ? cr_base64_encode(msg->bytes->data ? msg->bytes->data : (const uint8_t *)"",
                                    msg->bytes->len)
                 : NULL;
  if (!b64) {
    mcp_call_fail(c, CR_E_INTERNAL, "file.read returned no data");
    return true;
  }
  /* eof from the file's size, not from a short read: a chunk that ends
   * before the end of the file is never the last one */
  size_t n = (size_t)json_integer_value(json_object_get(r, "length"));
  uint64_t off = (uint64_t)arg_int(c, "offset", 0);
  uint64_t size = (uint64_t)json_integer_value(json_object_get(r, "size"));
  bool eof = off + n >= size;
  json_t *res = json_pack("{s:s, s:s, s:I, s:I, s:I, s:b, s:b}", "path", arg_str(c, "path"),
                          "encoding", "base64", "size", (json_int_t)size, "offset",
                          (json_int_t)off, "length", (json_int_t)n, "eof", eof, "truncated", !eof);
  if (!eof) json_object_set_new(res, "next_offset", json_integer((json_int_t)(off + n)));
  char note[300];
  if (eof)
    snprintf(note, sizeof(note), "[cleanroom: %s: %zu bytes from offset %llu, base64 in the "
             "first block; end of file (size %llu)]", arg_str(c, "path"), n,
             (unsigned long long)off, (unsigned long long)size);
  else
    snprintf(note, sizeof(note), "[cleanroom: %s: %zu bytes from offset %llu, base64 in the "
             "first block; NOT the end (size %llu): call read_file again with offset=%llu]",
             arg_str(c, "path"), n, (unsigned long long)off, (unsigned long long)size,
             (unsigned long long)(off + n));
  json_t *blocks = json_pack("[{s:s, s:s}, {s:s, s:s}]", "type", "text", "text", b64, "type",
                             "text", "text", note);
  mcp_call_finish(c, json_pack("{s:o, s:o}", "content", blocks, "structuredContent", res));
  return true;
}

static void read_file_run(mcp_call *c) {
  const char *enc = arg_str(c, "encoding");
  bool b64 = enc && !strcmp(enc, "base64");
  json_t *p = json_pack("{s:s, s:s, s:I, s:I}", "sandbox_id", c->sandbox_id, "path",
                        arg_str(c, "path"), "offset", b64 ? arg_int(c, "offset", 0) : 0,
                        "length", b64 ? arg_int(c, "length", B64_DEFAULT_LEN) : (json_int_t)TEXT_READ_MAX);
  mcp_api(c->s, c, "file.read", p, file_read_done);
}

/* Decoded content of write_file (NULL + message on bad input). */
static unsigned char *write_content(json_t *args, size_t *ret_n, const char **ret_problem) {
  const char *enc = json_string_value(json_object_get(args, "encoding"));
  json_t *cv = json_object_get(args, "content");
  const char *content = json_string_value(cv);
  size_t len = json_string_length(cv);
  unsigned char *raw = NULL;
  *ret_problem = NULL;
  if (enc && !strcmp(enc, "base64")) {
    if (cr_base64_decode_lenient(content, len, &raw, ret_n) < 0) {
      *ret_problem = "'content' is not valid base64";
      return NULL;
    }
  } else {
    raw = malloc(len + 1);
    if (!raw) {
      *ret_problem = "out of memory";
      return NULL;
    }
    memcpy(raw, content, len);
    *ret_n = len;
  }
  if (*ret_n > WRITE_MAX) {
    free(raw);
    *ret_problem = "'content' is larger than 4194304 bytes, the most write_file takes per "
                   "call: write the file in pieces of at most 4194304 bytes, the first call "
                   "without append and the rest with append:true";
    return NULL;
  }
  return raw;
}

static const char *check_write_file(json_t *args) {
  size_t n;
  const char *problem;
  free(write_content(args, &n, &problem));
  return problem;
}

static bool written(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (mcp_is_error(msg)) {
    const char *reason = msg->reason;
    if (reason && !strcmp(reason, CR_E_FILE_NOT_FOUND) && !arg_bool(c, "create_parents") &&
        !strcmp(c->tool->name, "write_file")) {
      const char *m = msg->message;
      mcp_call_fail(c, reason, "%s; set create_parents:true to create the missing directories",
                    m ? m : "no such directory");
      return true;
    }
    mcp_call_fail_api(c, msg);
    return true;
  }
  json_t *r = json_pack("{s:s, s:I}", "path", arg_str(c, "path"), "size",
                        json_integer_value(json_object_get(mcp_result_of(msg), "size")));
  if (c->scratch) json_object_update(r, c->scratch);
  mcp_call_finish_structured(c, r);
  return true;
}

static void write_file_run(mcp_call *c) {
  size_t n = 0;
  const char *problem;
  _cleanup_free_ unsigned char *raw = write_content(c->args, &n, &problem);
  if (!raw) {
    mcp_call_fail(c, CR_E_INVALID_ARGUMENT, "%s", problem ? problem : "bad content");
    return;
  }
  json_int_t mode = 0644;
  const char *m = arg_str(c, "mode");
  if (m) mode = (json_int_t)strtol(m, NULL, 8);
  json_t *p = json_pack("{s:s, s:s, s:I, s:b, s:b}", "sandbox_id", c->sandbox_id, "path",
                        arg_str(c, "path"), "mode", mode, "parents",
                        arg_bool(c, "create_parents"), "append", arg_bool(c, "append"));
  c->scratch = json_pack("{s:I}", "bytes_written", (json_int_t)n);
  mcp_api_bytes(c->s, c, "file.write", p, raw, n, written);
}

/* edit_file: file.stat (keep the mode) -> file.read -> replace -> file.write */
static bool edit_read(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (failed_response(op, msg)) return true;
  json_t *r = mcp_result_of(msg);
  const char *path = arg_str(c, "path");
  if (!json_is_true(json_object_get(r, "eof"))) {
    mcp_call_fail(c, CR_E_FILE_ERROR, "%s is larger than %u bytes, too large for edit_file; "
                  "edit it with exec (e.g. sed)", path, TEXT_READ_MAX);
    return true;
  }
  if (!msg->bytes) {
    mcp_call_fail(c, CR_E_INTERNAL, "file.read returned no data");
    return true;
  }
  size_t n = msg->bytes->len;
  unsigned char *raw = malloc(n + 1); /* memmem below wants a non-NULL base */
  if (!raw) {
    mcp_call_fail(c, CR_E_INTERNAL, "out of memory");
    return true;
  }
  if (n) memcpy(raw, msg->bytes->data, n);
  const char *old = arg_str(c, "old_string");
  size_t olen = json_string_length(json_object_get(c->args, "old_string"));
  const char *new = arg_str(c, "new_string");
  size_t nlen = json_string_length(json_object_get(c->args, "new_string"));
  size_t count = 0;
  for (const unsigned char *p = raw; (p = memmem(p, n - (size_t)(p - raw), old, olen)); p += olen) count++;
  if (count == 0) {
    free(raw);
    mcp_call_fail(c, CR_E_INVALID_ARGUMENT, "old_string not found in %s; read_file it first and "
                  "copy the exact text (whitespace and indentation matter)", path);
    return true;
  }
  if (count > 1 && !arg_bool(c, "replace_all")) {
    free(raw);
    mcp_call_fail(c, CR_E_INVALID_ARGUMENT, "old_string matches %zu times in %s; add context "
                  "to make it unique or set replace_all", count, path);
    return true;
  }
  size_t out_len = n - count * olen + count * nlen;
  _cleanup_free_ char *out = malloc(out_len + 1);
  if (!out) {
    free(raw);
    mcp_call_fail(c, CR_E_INTERNAL, "out of memory");
    return true;
  }
  size_t o = 0;
  const unsigned char *p = raw, *end = raw + n;
  const unsigned char *hit;
  while ((hit = memmem(p, (size_t)(end - p), old, olen))) {
    memcpy(out + o, p, (size_t)(hit - p));
    o += (size_t)(hit - p);
    memcpy(out + o, new, nlen);
    o += nlen;
    p = hit + olen;
  }
  memcpy(out + o, p, (size_t)(end - p));
  o += (size_t)(end - p);
  free(raw);
  json_int_t mode = json_integer_value(json_object_get(c->scratch, "mode"));
  json_t *wp = json_pack("{s:s, s:s, s:I}", "sandbox_id", c->sandbox_id, "path", path, "mode",
                         mode ? mode : 0644);
  json_decref(c->scratch);
  c->scratch = json_pack("{s:I}", "replacements", (json_int_t)count);
  mcp_api_bytes(c->s, c, "file.write", wp, out, o, written);
  return true;
}

static bool edit_stat(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (failed_response(op, msg)) return true;
  json_t *r = mcp_result_of(msg);
  const char *type = json_string_value(json_object_get(r, "type"));
  if (type && strcmp(type, "file") != 0 && strcmp(type, "regular") != 0) {
    mcp_call_fail(c, CR_E_FILE_ERROR, "%s is a %s, not a regular file", arg_str(c, "path"), type);
    return true;
  }
  c->scratch = json_pack("{s:I}", "mode", json_integer_value(json_object_get(r, "mode")) & 07777);
  mcp_api(c->s, c, "file.read",
          json_pack("{s:s, s:s, s:I, s:I}", "sandbox_id", c->sandbox_id, "path",
                    arg_str(c, "path"), "offset", (json_int_t)0, "length", (json_int_t)TEXT_READ_MAX),
          edit_read);
  return true;
}

static void edit_file_run(mcp_call *c) {
  mcp_api(c->s, c, "file.stat",
          json_pack("{s:s, s:s}", "sandbox_id", c->sandbox_id, "path", arg_str(c, "path")),
          edit_stat);
}

static bool listed(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (failed_response(op, msg)) return true;
  json_t *entries = json_object_get(mcp_result_of(msg), "entries");
  json_t *list = json_array();
  size_t i;
  json_t *e;
  json_array_foreach(entries, i, e) {
    if (i >= LIST_MAX_ENTRIES) break;
    json_array_append(list, e);
  }
  json_t *r = json_pack("{s:s, s:o, s:b}", "path", arg_str(c, "path") ?: "/", "entries", list,
                        "truncated", json_array_size(entries) > LIST_MAX_ENTRIES);
  if (json_array_size(entries) > LIST_MAX_ENTRIES)
    json_object_set_new(r, "total_entries", json_integer((json_int_t)json_array_size(entries)));
  mcp_call_finish_structured(c, r);
  return true;
}

static void list_files_run(mcp_call *c) {
  mcp_api(c->s, c, "file.list",
          json_pack("{s:s, s:s, s:I}", "sandbox_id", c->sandbox_id, "path",
                    arg_str(c, "path") ?: "/", "depth", arg_int(c, "depth", 1)),
          listed);
}

/* ---- file_delete, file_move, search_files: guest programs run with argv ----
 * (rm, mv, find + grep of the image; busybox has them all). The program's
 * exit status and stderr become the answer. */

#define SEARCH_DEFAULT_RESULTS 200
#define SEARCH_MAX_RESULTS 2000
#define SEARCH_MAX_LINE 400
#define HELPER_OUTPUT (512u * 1024)

static const char file_delete_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"path\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Absolute path in the "
    "sandbox.\"},"
    "\"recursive\":{\"type\":\"boolean\",\"description\":\"Delete a directory with everything "
    "in it (default false: files and empty directories only).\"}," SANDBOX_ID_PROP
    "},\"required\":[\"path\"],\"additionalProperties\":false}";

static const char file_move_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"from\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Absolute source path.\"},"
    "\"to\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Absolute destination "
    "path.\"},"
    "\"overwrite\":{\"type\":\"boolean\",\"description\":\"Replace an existing destination "
    "(default false: fail).\"}," SANDBOX_ID_PROP
    "},\"required\":[\"from\",\"to\"],\"additionalProperties\":false}";

static const char search_files_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"pattern\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":1000,\"description\":"
    "\"Extended regular expression (grep -E) matched against each line.\"},"
    "\"path\":{\"type\":\"string\",\"description\":\"Directory or file to search (default "
    "/).\"},"
    "\"glob\":{\"type\":\"string\",\"description\":\"Only files whose name matches this "
    "shell glob, e.g. *.c\"},"
    "\"case_insensitive\":{\"type\":\"boolean\"},"
    "\"max_results\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":2000,\"description\":"
    "\"At most this many matching lines (default 200, at most 2000); lines are cut at 400 "
    "bytes.\"}," SANDBOX_ID_PROP
    "},\"required\":[\"pattern\"],\"additionalProperties\":false}";

static const char search_files_output[] =
    "{\"type\":\"object\",\"properties\":{\"matches\":{\"type\":\"array\",\"items\":{\"type\":"
    "\"object\",\"properties\":{\"path\":{\"type\":\"string\"},\"line\":{\"type\":\"integer\"},"
    "\"text\":{\"type\":\"string\"}}}},\"truncated\":{\"type\":\"boolean\"}},"
    "\"required\":[\"matches\",\"truncated\"]}";

static const char process_list_output[] =
    "{\"type\":\"object\",\"properties\":{\"executions\":{\"type\":\"array\"},"
    "\"running\":{\"type\":\"integer\"}},\"required\":[\"executions\"]}";

static const char *check_abs(json_t *args) {
  static const char *const keys[] = {"path", "from", "to"};
  for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
    const char *p = json_string_value(json_object_get(args, keys[i]));
    if (p && p[0] != '/') return "paths must be absolute (start with /)";
  }
  const char *p = json_string_value(json_object_get(args, "path"));
  if (p && !strcmp(p, "/") && json_object_get(args, "recursive")) return "refusing to delete /";
  return NULL;
}

/* Runs argv in the sandbox; done(c, exit_code, stdout, stderr) on exit. */
typedef void (*helper_done_fn)(mcp_call *c, int code, const char *out, size_t out_len,
                               const char *err, size_t err_len);

static bool helper_msg(mcp_op *op, const mcp_msg *msg) {
  mcp_call *c = op->call;
  if (msg->response) {
    if (mcp_is_error(msg)) {
      mcp_call_fail_api(c, msg);
      return true;
    }
    return false;
  }
  const char *method = msg->method;
  json_t *p = msg->params;
  if (!method || !mcp_call_alive(c)) return false;
  if (!strcmp(method, "execution.output")) {
    const char *stream = json_string_value(json_object_get(p, "stream"));
    if (!msg->bytes) return false;
    mcp_outbuf_add(&c->out[stream && !strcmp(stream, "stderr")], (const char *)msg->bytes->data,
                   msg->bytes->len);
    return false;
  }
  if (!strcmp(method, "execution.exit")) {
    json_t *ex = json_object_get(p, "execution");
    json_t *code = json_object_get(ex, "exit_code");
    helper_done_fn done = (helper_done_fn)c->helper_done;
    mcp_outbuf *o = &c->out[0], *e = &c->out[1];
    if (!json_is_integer(code)) {
      const char *m = json_string_value(json_object_get(ex, "message"));
      mcp_call_fail(c, CR_E_INTERNAL, "the helper command did not run: %s", m ? m : "no exit code");
      return true;
    }
    /* the head part of the buffer holds everything up to its cap */
    done(c, (int)json_integer_value(code), o->head ? o->head : "", o->head_len,
         e->head ? e->head : "", e->head_len);
    return true;
  }
  return false;
}

static void run_helper(mcp_call *c, json_t *argv /* stolen */, helper_done_fn done) {
  mcp_outbuf_init(&c->out[0], HELPER_OUTPUT * 2);
  mcp_outbuf_init(&c->out[1], 8192);
  c->helper_done = (void (*)(void))done;
  json_t *p = json_pack("{s:s, s:o, s:b, s:I}", "sandbox_id", c->sandbox_id, "argv", argv,
                        "attach", 1, "timeout_ms", (json_int_t)60000);
  mcp_api(c->s, c, "execution.create", p, helper_msg);
}

static void helper_fail(mcp_call *c, const char *what, const char *err, size_t err_len) {
  _cleanup_free_ char *e = mcp_utf8_lossy(err, MIN(err_len, 1000), NULL);
  while (e && *e && e[strlen(e) - 1] == '\n') e[strlen(e) - 1] = 0;
  const char *reason = e && (strstr(e, "No such file") || strstr(e, "can't stat") ||
                             strstr(e, "can't remove"))
                           ? CR_E_FILE_NOT_FOUND
                           : CR_E_FILE_ERROR;
  mcp_call_fail(c, reason, "%s: %s", what, e && *e ? e : "failed");
}

static void deleted(mcp_call *c, int code, const char *out, size_t out_len, const char *err,
                    size_t err_len) {
  if (code != 0) return helper_fail(c, arg_str(c, "path"), err, err_len);
  mcp_call_finish_structured(c, json_pack("{s:s, s:b}", "path", arg_str(c, "path"), "deleted", 1));
}

static void file_delete_run(mcp_call *c) {
  const char *path = arg_str(c, "path");
  json_t *argv = arg_bool(c, "recursive") ? json_pack("[s, s, s, s]", "rm", "-r", "--", path)
                                          : json_pack("[s, s, s, s, s]", "sh", "-c",
                                                      "if [ -d \"$1\" ] && [ ! -L \"$1\" ]; then "
                                                      "rmdir -- \"$1\"; else rm -- \"$1\"; fi",
                                                      "sh", path);
  run_helper(c, argv, deleted);
}

static void moved(mcp_call *c, int code, const char *out, size_t out_len, const char *err,
                  size_t err_len) {
  if (code == 17) {
    mcp_call_fail(c, CR_E_FILE_ERROR, "%s exists; pass overwrite:true to replace it",
                  arg_str(c, "to"));
    return;
  }
  if (code != 0) return helper_fail(c, arg_str(c, "from"), err, err_len);
  mcp_call_finish_structured(c, json_pack("{s:s, s:s}", "from", arg_str(c, "from"), "to",
                                          arg_str(c, "to")));
}

static void file_move_run(mcp_call *c) {
  const char *script = arg_bool(c, "overwrite")
                           ? "mv -f -- \"$1\" \"$2\""
                           : "if [ -e \"$2\" ] || [ -L \"$2\" ]; then exit 17; fi; mv -- \"$1\" \"$2\"";
  run_helper(c, json_pack("[s, s, s, s, s, s]", "sh", "-c", script, "sh", arg_str(c, "from"),
                          arg_str(c, "to")),
             moved);
}

static void searched(mcp_call *c, int code, const char *out, size_t out_len, const char *err,
                     size_t err_len) {
  /* grep: 0 matches found, 1 none; find may say 1 for unreadable dirs */
  if (code > 1 && out_len == 0) return helper_fail(c, "search_files", err, err_len);
  size_t max = (size_t)arg_int(c, "max_results", SEARCH_DEFAULT_RESULTS);
  json_t *matches = json_array();
  bool truncated = false;
  const char *p = out, *end = out + out_len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) { /* a cut line at the cap */
      truncated = true;
      break;
    }
    if (json_array_size(matches) >= max) {
      truncated = true;
      break;
    }
    /* path:line:text (paths with ':' are split at the first ":<digits>:") */
    const char *q = p;
    const char *c1 = NULL;
    while ((q = memchr(q, ':', (size_t)(nl - q)))) {
      const char *d = q + 1;
      while (d < nl && *d >= '0' && *d <= '9') d++;
      if (d > q + 1 && d < nl && *d == ':') {
        c1 = q;
        break;
      }
      q++;
    }
    if (c1) {
      const char *num = c1 + 1;
      const char *c2 = memchr(num, ':', (size_t)(nl - num));
      size_t tl = (size_t)(nl - c2 - 1);
      json_t *path = mcp_text_json(p, (size_t)(c1 - p));
      json_t *text = mcp_text_json(c2 + 1, MIN(tl, SEARCH_MAX_LINE));
      json_array_append_new(matches, json_pack("{s:o, s:I, s:o}", "path", path, "line",
                                               (json_int_t)strtoll(num, NULL, 10), "text", text));
    }
    p = nl + 1;
  }
  if (c->out[0].total > out_len) truncated = true;
  mcp_call_finish_structured(c, json_pack("{s:o, s:b}", "matches", matches, "truncated", truncated));
}

static void search_files_run(mcp_call *c) {
  size_t max = (size_t)arg_int(c, "max_results", SEARCH_DEFAULT_RESULTS);
  char head[32];
  snprintf(head, sizeof(head), "%zu", max + 1);
  /* find prunes nothing but /proc and /sys; grep -I skips binary files where supported */
  const char *script =
      "p=$1; g=$2; pat=$3; n=$4; fl=-nHE; [ \"$5\" = 1 ] && fl=-nHEi; "
      "find \"$p\" \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -type f "
      "-name \"$g\" -exec grep $fl -e \"$pat\" -- {} + 2>/dev/null | head -n \"$n\"";
  run_helper(c, json_pack("[s, s, s, s, s, s, s, s, s]", "sh", "-c", script, "sh",
                          arg_str(c, "path") ?: "/", arg_str(c, "glob") ?: "*",
                          arg_str(c, "pattern"), head, arg_bool(c, "case_insensitive") ? "1" : "0"),
             searched);
}

static const char *check_search(json_t *args) {
  const char *p = json_string_value(json_object_get(args, "path"));
  if (p && p[0] != '/') return "'path' must be absolute";
  return NULL;
}

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

static void process_list_run(mcp_call *c) {
  mcp_api(c->s, c, "execution.list", json_pack("{s:s}", "sandbox_id", c->sandbox_id),
          processes_listed);
}

/* ---- egress_events ---- */

#define EVENTS_DEFAULT_LIMIT 50

static const char egress_events_input[] =
    "{\"type\":\"object\",\"properties\":{" SANDBOX_ID_PROP ","
    "\"action\":{\"type\":\"string\",\"enum\":[\"deny\",\"allow\",\"all\"],"
    "\"description\":\"deny (default): denied DNS lookups and rejected connections; allow: "
    "allowed lookups; all: both, plus network attach/detach.\"},"
    "\"since\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"Only events with a "
    "larger seq (pass the last_seq of the previous call to see what is new).\"},"
    "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":200,\"description\":"
    "\"At most this many, the newest (default 50, at most 200).\"}"
    "},\"additionalProperties\":false}";

static const char egress_events_output[] =
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

static void egress_events_run(mcp_call *c) {
  const char *action = arg_str(c, "action") ?: "deny";
  json_t *p = json_pack("{s:s, s:I, s:I}", "sandbox", c->sandbox_id, "since",
                        arg_int(c, "since", 0), "limit",
                        arg_int(c, "limit", EVENTS_DEFAULT_LIMIT));
  if (strcmp(action, "all")) json_object_set_new(p, "action", json_string(action));
  mcp_api(c->s, c, "events.list", p, egress_events_listed);
}

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
     exec_input, exec_output, false, false, false, false, MCP_SBX_DEFAULT, check_command, exec_run},
    {"exec_start", "Start a background command",
     "Start a command in the background and return its execution_id at once; read its output "
     "with exec_poll, feed stdin with exec_write (set keep_stdin_open), stop it with "
     "exec_kill. Use for builds, servers and long test runs.",
     exec_start_input, exec_start_output, false, false, false, false, MCP_SBX_DEFAULT,
     check_command, exec_start_run},
    {"exec_poll", "Poll a background command",
     "Return the output a background command (exec_start) produced since `cursor`, its state "
     "(running, exited, failed) and exit_code. Pass the returned cursor to the next call; poll "
     "until running is false.",
     exec_poll_input, exec_poll_output, true, false, false, false, MCP_SBX_NONE, NULL, exec_poll_run},
    {"exec_write", "Write to a background command's stdin",
     "Write text (`data`) or bytes (`data_base64`) to the stdin of a command started with "
     "exec_start keep_stdin_open:true; eof:true closes stdin.",
     exec_write_input, ack_output, false, false, false, false, MCP_SBX_NONE, check_write, exec_write_run},
    {"exec_kill", "Stop a background command",
     "Send a signal (default KILL) to a background command's process group.",
     exec_kill_input, ack_output, false, true, true, false, MCP_SBX_NONE, NULL, exec_kill_run},
    {"read_file", "Read a file",
     "Read a file from the sandbox: text by line range (start_line/end_line, at most 262144 "
     "bytes per call), or exact bytes with encoding base64 and offset/length (length default "
     "1048576, at most 4194304 per call). The data is the first text block; structuredContent "
     "has the metadata: for base64, eof is true only on the chunk that reaches the end of the "
     "file, otherwise next_offset says where to continue.",
     read_file_input, read_file_output, true, false, true, false, MCP_SBX_DEFAULT, check_read,
     read_file_run},
    {"write_file", "Write a file",
     "Create or replace a file in the sandbox with `content` (utf8 text, or bytes with "
     "encoding base64; at most 4194304 bytes per call: write larger files in pieces with "
     "append:true after the first); mode sets permissions (\"0755\"), create_parents makes "
     "missing directories.",
     write_file_input, write_file_output, false, true, true, false, MCP_SBX_DEFAULT,
     check_write_file, write_file_run},
    {"edit_file", "Edit a file",
     "Replace the exact text old_string with new_string in a file. old_string must occur "
     "exactly once unless replace_all is set; read_file first to copy the text exactly.",
     edit_file_input, edit_file_output, false, true, false, false, MCP_SBX_DEFAULT, NULL,
     edit_file_run},
    {"list_files", "List files",
     "List a directory in the sandbox (depth levels deep) with name, type, mode and size.",
     list_files_input, list_files_output, true, false, true, false, MCP_SBX_DEFAULT, NULL,
     list_files_run},
    {"file_delete", "Delete a file",
     "Delete a file, a symlink or an empty directory in the sandbox; recursive:true deletes a "
     "directory with everything in it.",
     file_delete_input, NULL, false, true, true, false, MCP_SBX_DEFAULT, check_abs,
     file_delete_run},
    {"file_move", "Move or rename a file",
     "Move or rename a file or directory inside the sandbox (mv). Fails when the destination "
     "exists unless overwrite:true.",
     file_move_input, NULL, false, true, false, false, MCP_SBX_DEFAULT, check_abs, file_move_run},
    {"search_files", "Search file contents",
     "grep-like search: lines matching `pattern` (extended regex) in files under `path` "
     "(default /, skipping /proc, /sys, /dev) whose name matches `glob`. Returns path, line "
     "number and text per match; at most max_results (default 200, at most 2000) matches, "
     "lines cut at 400 bytes; truncated says when there were more.",
     search_files_input, search_files_output, true, false, true, false, MCP_SBX_DEFAULT,
     check_search, search_files_run},
    {"process_list", "List the sandbox's commands",
     "List the executions of the sandbox, newest first (at most 100): background commands "
     "from exec_start and finished ones, with state (running, exited, failed), argv and exit "
     "code. Poll a running one with exec_poll, stop it with exec_kill.",
     sandbox_id_only_input, process_list_output, true, false, true, false, MCP_SBX_EXISTING,
     NULL, process_list_run},
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
     sandbox_create_input, SANDBOX_OUT, false, false, false, false, MCP_SBX_NONE, NULL,
     sandbox_create_run},
    {"sandbox_list", "List sandboxes",
     "List all sandboxes with state, image, policy hash and timings, newest first.",
     no_input, sandbox_list_output, true, false, true, false, MCP_SBX_NONE, NULL, sandbox_list_run},
    {"sandbox_inspect", "Inspect a sandbox",
     "Show one sandbox (default: this session's): state, image, policy, network summary "
     "(the effective allowlist and the newest denials for sandboxes with a network), "
     "created and last execution.",
     sandbox_id_only_input, SANDBOX_OUT, true, false, true, false, MCP_SBX_EXISTING, NULL,
     sandbox_inspect_run},
    {"egress_events", "Why a network request failed",
     "The sandbox's network audit events, oldest first: denied DNS lookups (REFUSED for a "
     "name the policy does not allow) and rejected connections, each with destination, port "
     "and a reason code (host_not_allowed, host_denied, port_not_allowed, "
     "ip_literal_not_allowed, protocol_not_allowed, host_service_denied, spoofed_source, ...). "
     "Call it when a connection, download or lookup in the sandbox fails: egress is denied "
     "unless the policy (cleanroom.yaml sandbox.network.allow) allows the host and port. "
     "action: deny (default), allow or all; since: the last_seq of a previous call. "
     "Kept across daemon restarts.",
     egress_events_input, egress_events_output, true, false, true, false, MCP_SBX_EXISTING,
     NULL, egress_events_run},
    {"sandbox_remove", "Remove a sandbox",
     "Stop a sandbox and delete it with its files (default: this session's sandbox; the next "
     "call then creates a fresh one).",
     sandbox_id_only_input, NULL, false, true, true, false, MCP_SBX_EXISTING, NULL,
     sandbox_remove_run},
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

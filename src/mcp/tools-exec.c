/* MCP tools, the exec group: exec, exec_start, exec_poll, exec_write,
 * exec_kill. */
#include "mcp/tools.h"
#include "util/base64.h"

/* ---- schemas ---- */

const char mcp_exec_input[] =
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

const char mcp_exec_output[] =
    "{\"type\":\"object\",\"description\":\"Status only: the text block carries the same "
    "fields plus stdout and stderr.\",\"properties\":{" EXEC_STATUS_PROPS
    "\"truncated\":{\"type\":\"boolean\"},"
    "\"dropped_bytes\":{\"type\":\"object\",\"properties\":{\"stdout\":{\"type\":\"integer\"},"
    "\"stderr\":{\"type\":\"integer\"}}},"
    "\"duration_ms\":{\"type\":\"integer\"},\"sandbox_id\":{\"type\":\"string\"}},"
    "\"required\":[\"truncated\",\"timed_out\",\"duration_ms\",\"execution_id\"]}";

const char mcp_exec_start_input[] =
    "{\"type\":\"object\",\"properties\":{" COMMAND_PROPS
    "\"cwd\":{\"type\":\"string\"},"
    "\"env\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"}},"
    "\"keep_stdin_open\":{\"type\":\"boolean\",\"description\":\"Keep stdin open for "
    "exec_write (default false: stdin is empty).\"},"
    "\"timeout_ms\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"Optional limit; "
    "none by default.\"}," SANDBOX_ID_PROP "},\"additionalProperties\":false}";

const char mcp_exec_start_output[] =
    "{\"type\":\"object\",\"properties\":{\"execution_id\":{\"type\":\"string\"},"
    "\"sandbox_id\":{\"type\":\"string\"}},\"required\":[\"execution_id\"]}";

const char mcp_exec_poll_input[] =
    "{\"type\":\"object\",\"properties\":{" EXEC_ID_PROP ","
    "\"cursor\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"The cursor the previous "
    "exec_poll returned (0 or omitted: from the start).\"},"
    "\"max_output_bytes\":{\"type\":\"integer\",\"minimum\":256,\"maximum\":1048576,"
    "\"description\":\"Cap per stream (default 65536, at most 1048576).\"}},"
    "\"required\":[\"execution_id\"],\"additionalProperties\":false}";

const char mcp_exec_poll_output[] =
    "{\"type\":\"object\",\"description\":\"Status only: the text block carries the same "
    "fields plus stdout and stderr.\",\"properties\":{" EXEC_STATUS_PROPS
    "\"state\":{\"type\":\"string\"},\"running\":{\"type\":\"boolean\"},"
    "\"cursor\":{\"type\":\"integer\"},\"dropped_bytes\":{\"type\":\"integer\"}},"
    "\"required\":[\"execution_id\",\"state\",\"running\",\"cursor\"]}";

const char mcp_exec_write_input[] =
    "{\"type\":\"object\",\"properties\":{" EXEC_ID_PROP ","
    "\"data\":{\"type\":\"string\",\"maxLength\":1048576,\"description\":\"UTF-8 text to "
    "write to stdin (at most 1048576 characters per call).\"},"
    "\"data_base64\":{\"type\":\"string\",\"maxLength\":1398104,\"description\":\"Bytes to "
    "write, base64 (at most 1 MiB of bytes per call).\"},"
    "\"eof\":{\"type\":\"boolean\",\"description\":\"Close stdin after writing.\"}},"
    "\"required\":[\"execution_id\"],\"additionalProperties\":false}";

const char mcp_exec_kill_input[] =
    "{\"type\":\"object\",\"properties\":{" EXEC_ID_PROP ","
    "\"signal\":{\"type\":\"string\",\"description\":\"TERM, KILL (default), INT, HUP, QUIT, "
    "USR1, USR2, STOP, CONT, or a number like \\\"15\\\".\"}},"
    "\"required\":[\"execution_id\"],\"additionalProperties\":false}";

const char mcp_ack_output[] =
    "{\"type\":\"object\",\"properties\":{\"execution_id\":{\"type\":\"string\"}}}";

/* ---- helpers ---- */

const char *mcp_check_command(json_t *args) {
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

void mcp_exec_run(mcp_call *c) {
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

void mcp_exec_start_run(mcp_call *c) {
  json_t *p = exec_params(c);
  json_object_set_new(p, "attach", json_false());
  json_object_set_new(p, "stdin", json_boolean(arg_bool(c, "keep_stdin_open")));
  if (json_object_get(c->args, "timeout_ms"))
    json_object_set_new(p, "timeout_ms", json_integer(arg_int(c, "timeout_ms", 0)));
  mcp_api(c->s, c, "execution.create", p, exec_started);
}

/* One stream of execution.read's answer (bytes, in process) as capped text. */
static json_t *capped_text(const api_bytes *raw, size_t cap, const char *stream,
                           uint64_t *ret_dropped) {
  if (!raw) {
    *ret_dropped = 0;
    return json_string("");
  }
  mcp_outbuf b;
  mcp_outbuf_init(&b, cap);
  if (raw->len) mcp_outbuf_add(&b, (const char *)raw->data, raw->len);
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
  json_t *out = capped_text(mcp_msg_bytes(msg, "stdout"), cap, "stdout", &d1);
  json_t *err = capped_text(mcp_msg_bytes(msg, "stderr"), cap, "stderr", &d2);
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

void mcp_exec_poll_run(mcp_call *c) {
  mcp_api(c->s, c, "execution.read",
          json_pack("{s:s, s:I}", "execution_id", arg_str(c, "execution_id"), "cursor",
                    arg_int(c, "cursor", 0)),
          exec_polled);
}

const char *mcp_check_write(json_t *args) {
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

void mcp_exec_write_run(mcp_call *c) {
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

void mcp_exec_kill_run(mcp_call *c) {
  const char *name = arg_str(c, "signal");
  if (!name) name = "KILL";
  _cleanup_json_ json_t *sig = name[0] && strspn(name, "0123456789") == strlen(name)
                                   ? json_integer(strtol(name, NULL, 10))
                                   : json_string(name);
  json_t *p = json_pack("{s:s, s:O}", "execution_id", arg_str(c, "execution_id"), "signal", sig);
  c->scratch = json_pack("{s:s}", "signal", name);
  mcp_api(c->s, c, "execution.cancel", p, ack_execution);
}

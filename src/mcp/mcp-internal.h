/* Internals of the MCP server shared by the files of src/mcp/. */
#pragma once
#include "util/buf.h"
#include "util/macro.h"
#include "mcp/mcp.h"

#include <http_parser.h>
#include <stdint.h>
#include <uv.h>

#define MCP_SERVER_NAME "cleanroom"
#define MCP_MODERN_VERSION "2026-07-28"
#define MCP_META_VERSION "io.modelcontextprotocol/protocolVersion"
#define MCP_META_SERVER_INFO "io.modelcontextprotocol/serverInfo"
#define MCP_UNSUPPORTED_VERSION -32022
/* tools/list page size: large enough for the whole table, so clients that
 * do not follow nextCursor (the Inspector CLI shows page 1) see every tool. */
#define MCP_TOOLS_PAGE_DEFAULT 50
/* The largest result the server sends: below the 10 MiB a TypeScript SDK
 * stdio client accepts per line, with room for the envelope. Tool caps keep
 * results well below it; a result over it is replaced by an isError. */
#define MCP_RESULT_MAX (8u << 20)

typedef struct mcp_call mcp_call;
typedef struct mcp_op mcp_op;
typedef struct mcp_tool mcp_tool;

/* How a tool finds its sandbox. */
typedef enum {
  MCP_SBX_NONE,     /* no sandbox_id parameter */
  MCP_SBX_EXISTING, /* sandbox_id, or the default if one exists */
  MCP_SBX_DEFAULT,  /* sandbox_id, or the default, created on first use */
} mcp_sbx_mode;

struct mcp_tool {
  const char *name;
  const char *title;
  const char *description;
  const char *input_schema;  /* JSON text */
  const char *output_schema; /* JSON text or NULL */
  bool read_only, destructive, idempotent, open_world;
  mcp_sbx_mode sandbox;
  /* Checks what the schema cannot say (NULL = ok) and returns a message
   * for -32602. */
  const char *(*check)(json_t *args);
  /* Starts the work; finishes with mcp_call_finish()/mcp_call_fail(). */
  void (*run)(mcp_call *c);
};

/* The snapshot tool group (tools-snapshot.c), listed in mcp_tools. */
extern const char mcp_snapshot_create_input[], mcp_snapshot_restore_input[],
    mcp_snapshot_list_input[], mcp_snapshot_remove_input[], mcp_snapshot_output[],
    mcp_snapshot_list_output[];
void mcp_snapshot_create_run(mcp_call *c);
void mcp_snapshot_restore_run(mcp_call *c);
void mcp_snapshot_list_run(mcp_call *c);
void mcp_snapshot_remove_run(mcp_call *c);

extern const mcp_tool mcp_tools[];
extern const size_t mcp_n_tools;
/* tools-workspace.c: the `diff` tool */
extern const char mcp_diff_input[], mcp_diff_output[];
void mcp_diff_run(mcp_call *c);
const mcp_tool *mcp_tool_find(const char *name);
json_t *mcp_tool_describe(const mcp_tool *t);
/* Parsed schema, cached per tool (never freed: static data). */
json_t *mcp_tool_input_schema(const mcp_tool *t);

/* What an op sees of its control API call (api_call: no JSON-RPC
 * envelope). Everything is borrowed for the callback's duration. */
typedef struct mcp_msg {
  bool response; /* the answer; else a notification bound to the request */
  bool is_error; /* the answer is an error: code, message, reason */
  json_t *result;
  int code;
  const char *message, *reason; /* reason NULL: a protocol error */
  const char *method;           /* a notification */
  json_t *params;
  const api_bytes *bytes; /* file.read's bytes, execution.read's stdout and
                           * stderr (n_bytes of them: find with mcp_msg_bytes),
                           * execution.output's data; or NULL */
  size_t n_bytes;
} mcp_msg;

/* The byte field `key` of an answer (NULL key: "data"), or NULL. */
const api_bytes *mcp_msg_bytes(const mcp_msg *m, const char *key);

/* One control API request with its own sink. on_msg sees the answer
 * (msg->response) and the notifications bound to it, and returns true
 * when the op is finished (then nothing more is delivered). */
typedef bool (*mcp_op_fn)(mcp_op *op, const mcp_msg *msg);
struct mcp_op {
  api_sink sink; /* first: the op is its (in-process) sink */
  mcp_session *s;
  mcp_call *call; /* holds a reference, or NULL */
  mcp_op_fn on_msg;
  bool in_dispatch, done, released;
};

typedef struct mcp_outbuf {
  char *head;
  size_t head_len, head_cap;
  char *tail; /* ring */
  size_t tail_len, tail_cap, tail_pos;
  uint64_t total;
} mcp_outbuf;

/* An in-flight tools/call. */
struct mcp_call {
  int refs;
  mcp_session *s;
  mcp_call *next; /* in s->calls */
  json_t *id;
  json_t *progress_token;
  double progress;
  bool modern;
  const mcp_tool *tool;
  json_t *args;
  char *sandbox_id;   /* resolved */
  bool used_default;  /* sandbox_id came from the session default */
  bool finished;      /* response sent or suppressed */
  bool cancelled;
  mcp_call *next_waiter; /* waiting for the default sandbox */
  /* exec */
  char *execution_id;
  bool exec_started, kill_sent, timed_out;
  uint64_t started_ms, timeout_ms, max_output;
  mcp_outbuf out[2];
  uv_timer_t timer;
  bool timer_active;
  /* tool-specific scratch */
  json_t *scratch;
  void (*helper_done)(void); /* tools.c run_helper(): its callback */
};

struct mcp_session {
  daemon_ctx *d;
  mcp_api_fn call;          /* api_call; NULL: through `dispatch` (tests) */
  mcp_dispatch_fn dispatch; /* a JSON-RPC test double (envelope.c) */
  mcp_write_fn write_line;
  void *ud;
  uv_loop_t *loop;
  int refs;
  bool closed;
  bool initialized;       /* got initialize */
  bool client_ready;      /* got notifications/initialized */
  char *legacy_version;   /* negotiated by initialize */
  int log_level;          /* index into levels, see protocol.c */
  json_t *config;         /* from cleanroom/configure */
  char *default_sandbox;
  bool default_creating;
  bool pinned;              /* default given by cleanroom mcp --sandbox */
  char *attached;           /* the sandbox this session counts as attached to */
  uint64_t idle_timeout_ms; /* for sandboxes this session makes its default */
  bool idle_explicit;       /* idle_timeout_ms came from --idle-timeout */
  mcp_call *waiters;
  mcp_call *calls;
  json_int_t next_api_id;
};

/* session.c */
void mcp_session_ref(mcp_session *s);
void mcp_session_unref(mcp_session *s);
void mcp_send(mcp_session *s, json_t *msg /* stolen */);
/* A JSON-RPC error message (data stolen, may be NULL). */
json_t *mcp_rpc_error(json_t *id, int code, const char *message, json_t *data);
void mcp_send_error(mcp_session *s, json_t *id, int code, const char *message);
/* Modern results carry resultType (and for lists/reads ttlMs + cacheScope). */
void mcp_decorate(json_t *result, bool modern, int ttl_ms, const char *scope);
void mcp_send_result(mcp_session *s, json_t *id, json_t *result /* borrowed */);
uint64_t mcp_now_ms(void); /* util.c */

/* protocol.c: the handlers that need no control API */
bool mcp_version_known(const char *v);
json_t *mcp_versions_json(void);
void mcp_handle_initialize(mcp_session *s, json_t *id, json_t *params);
void mcp_handle_discover(mcp_session *s, json_t *id);
void mcp_handle_tools_list(mcp_session *s, json_t *id, json_t *params, bool modern);
void mcp_handle_set_level(mcp_session *s, json_t *id, json_t *params, bool modern);
/* Sets the tools/list page size for all sessions (tests shrink it to
 * exercise cursors); 0 restores MCP_TOOLS_PAGE_DEFAULT. */
void mcp_tools_set_page_size(size_t n);
size_t mcp_tools_page_size(void);

/* resources.c */
void mcp_handle_resources_read(mcp_session *s, json_t *id, json_t *params, bool modern);
void mcp_handle_resources_list(mcp_session *s, json_t *id, bool modern);
void mcp_handle_templates_list(mcp_session *s, json_t *id, bool modern);

/* call.c: tools/call and a call's lifetime and answer */
void mcp_handle_tools_call(mcp_session *s, json_t *id, json_t *params, bool modern);
/* Runs the call's tool (its sandbox resolved), unless it finished already. */
void mcp_call_run(mcp_call *c);
/* Takes a finished call off the session's list (and closes its timer). */
void mcp_call_unlink(mcp_call *c);
mcp_call *mcp_call_ref(mcp_call *c);
void mcp_call_unref(mcp_call *c);

/* default-sandbox.c: c waits for the session's default sandbox (found by
 * --name or created), then runs. */
void mcp_default_wait(mcp_call *c);

/* ops.c: control API requests */
/* Sends a control API request bound to c (may be NULL). params stolen. */
void mcp_api(mcp_session *s, mcp_call *c, const char *method, json_t *params,
             mcp_op_fn on_msg);
/* Same with a binary payload (file.write, execution.write: no base64). */
void mcp_api_bytes(mcp_session *s, mcp_call *c, const char *method, json_t *params,
                   const void *data, size_t n, mcp_op_fn on_msg);

/* envelope.c: calls the method table in process (call), or a JSON-RPC
 * dispatcher (a test double speaking the socket's messages: the bytes go as
 * base64 and the answers are turned back into in-process replies). params
 * borrowed. */
void mcp_api_invoke(daemon_ctx *d, mcp_api_fn call, mcp_dispatch_fn dispatch, api_sink *sink,
                    const char *method, json_t *params, const api_bytes *bytes, json_int_t id);
/* Sends execution.cancel KILL for the call's execution (once; session.c). */
void mcp_call_kill(mcp_call *c);
/* call.c: the answer. Sends the result {content, structuredContent?, isError?}; stolen. */
void mcp_call_finish(mcp_call *c, json_t *result);
/* Finishes with structuredContent plus a text block of the same JSON. */
void mcp_call_finish_structured(mcp_call *c, json_t *structured);
/* Finishes a result that carries command output: structuredContent is the
 * status (null members dropped), the text block is the status plus stdout
 * and stderr, so the output bytes are in the result once. All stolen. */
void mcp_call_finish_with_output(mcp_call *c, json_t *status, json_t *out, json_t *err);
/* Finishes with isError:true and "reason: message". */
void mcp_call_fail(mcp_call *c, const char *reason, const char *fmt, ...) _printf_(3, 4);
/* Turns a control API error answer into an isError result. */
void mcp_call_fail_api(mcp_call *c, const mcp_msg *msg);
/* Sends notifications/progress when the call asked for it. */
void mcp_call_progress(mcp_call *c, const char *message);
bool mcp_call_alive(const mcp_call *c);

/* helpers (ops.c) */
bool mcp_is_error(const mcp_msg *msg);
json_t *mcp_result_of(const mcp_msg *msg); /* borrowed */
/* util.c */
/* Lossy UTF-8 (invalid bytes -> U+FFFD). */
json_t *mcp_text_json(const char *data, size_t len);
char *mcp_utf8_lossy(const char *data, size_t len, size_t *ret_len);

void mcp_outbuf_init(mcp_outbuf *b, size_t cap);
void mcp_outbuf_add(mcp_outbuf *b, const char *data, size_t len);
/* Head + marker + tail as text; *ret_dropped = bytes left out. */
json_t *mcp_outbuf_text(const mcp_outbuf *b, const char *stream, uint64_t *ret_dropped);
void mcp_outbuf_done(mcp_outbuf *b);

/* hygiene.c: attachments, names, idle removal (see the file). */
/* Counts s as attached to sandbox id (one at a time). A session_default
 * sandbox gets s->idle_timeout_ms: removed that long after the last session
 * detached. */
void mcp_session_attach(mcp_session *s, const char *id, bool session_default);
void mcp_session_detach(mcp_session *s);
/* The sandbox was removed: drop its attachment record and names. */
void mcp_sandbox_forget(const char *id);
/* Sessions attached to id now. */
int mcp_sandbox_attached(const char *id);
char *mcp_name_lookup(const char *name);
void mcp_name_set(const char *name, const char *id /* NULL: remove */);
/* The daemon's default idle timeout (CLEANROOM_MCP_IDLE_TIMEOUT seconds,
 * default 1800; 0 = never). */
uint64_t mcp_default_idle_timeout_ms(void);

/* schema.c: returns NULL when v matches, else a message (static or in buf). */
const char *mcp_schema_check(json_t *schema, json_t *v, char *buf, size_t buflen);

/* http-request.c: one Streamable HTTP request read from an untrusted peer
 * (no I/O: http.c feeds it; tests/fuzz/fuzz-http.c too). Headers are
 * bounded by MCP_HTTP_MAX_HEADERS in all, the body by MCP_MAX_LINE; the
 * headers kept are cut at their buffers' sizes and NUL-terminated. */
#define MCP_HTTP_MAX_HEADERS (32u * 1024)
typedef struct mcp_http_req {
  http_parser parser;
  cr_buf field; /* the header name being read (text: NUL after len) */
  bool in_value;
  char auth[256], origin[256], session_id[64], accept[256], ctype[128], host[256];
  cr_buf body; /* text: NUL after len; bounded at MCP_MAX_LINE + 1 */
  size_t header_bytes;
  bool complete, too_large;
  int failed; /* 400 or 413 once the request is refused */
} mcp_http_req;
void mcp_http_req_init(mcp_http_req *r);
void mcp_http_req_done(mcp_http_req *r);
/* 0: more bytes wanted; 1: a whole request (bytes after it are ignored:
 * one request per connection); 400 malformed, 413 over a bound. */
int mcp_http_req_feed(mcp_http_req *r, const char *data, size_t n);
const char *mcp_http_req_method(const mcp_http_req *r);
/* No Origin, or a loopback origin (http(s)://localhost|127.0.0.1|[::1][:port]). */
bool mcp_http_origin_ok(const char *origin);
/* While listening on loopback, Host must be a loopback name (any port). */
bool mcp_http_host_ok(const char *host, bool loopback);
/* "Bearer <token>", compared in constant time. */
bool mcp_http_token_ok(const char *auth, const char *token);

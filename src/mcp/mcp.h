/* The MCP server (docs/mcp.md), living inside the daemon.
 *
 * A daemon socket connection whose first message is `initialize`,
 * `server/discover` or `cleanroom/configure` becomes an MCP session: the
 * connection code hands every further line to mcp_session_handle_line() and
 * writes what write_line() gives it. Tools call the control API's method
 * table in process through api_call() with the session's own sinks.
 *
 * Everything runs on the daemon's loop thread. */
#pragma once
#include "util/macro.h"
#include "api/api.h"
#include "util/error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct mcp_session mcp_session;

/* Sends one MCP message to the client: `line` is a complete JSON text
 * without the trailing newline (the callee adds "\n"). Never called after
 * mcp_session_close(). */
typedef void (*mcp_write_fn)(void *ud, const char *line, size_t len);
/* The control API's in-process entry point (api_call). */
typedef void (*mcp_api_fn)(daemon_ctx *d, api_sink *sink, const char *method, json_t *params,
                           const api_bytes *bytes);
/* A JSON-RPC entry point (api_dispatch's shape): test doubles. */
typedef void (*mcp_dispatch_fn)(daemon_ctx *d, api_sink *sink, json_t *msg);

/* True when a connection's first message makes it an MCP session. */
bool mcp_is_session_start(const json_t *first_msg);

/* New session calling the daemon's method table (api_call). */
mcp_session *mcp_session_new(daemon_ctx *d, mcp_write_fn write_line, void *ud);
mcp_session *mcp_session_new_with_call(daemon_ctx *d, mcp_api_fn call, mcp_write_fn write_line,
                                       void *ud);
/* Same with a JSON-RPC dispatcher (test doubles). */
mcp_session *mcp_session_new_with_dispatch(daemon_ctx *d, mcp_dispatch_fn dispatch,
                                           mcp_write_fn write_line, void *ud);

/* The loop for the session's timers (default: uv_default_loop()). */
void mcp_session_set_loop(mcp_session *s, uv_loop_t *loop);

/* One line from the client (without its newline; a trailing "\r" or "\n"
 * is ignored). Lines longer than MCP_MAX_LINE are answered -32600. */
void mcp_session_handle_line(mcp_session *s, const char *line, size_t len);
/* An already parsed message (the connection's first one). Borrowed. */
void mcp_session_handle_message(mcp_session *s, json_t *msg);

/* The client is gone: stops writing, cancels running tool calls (kills
 * their commands) and frees the session once outstanding control API calls
 * have finished. Accepts NULL. */
void mcp_session_close(mcp_session *s);

/* A line the connection skipped because it was longer than MCP_MAX_LINE:
 * answers `id` (NULL when it could not be found) with -32600 naming the
 * limit and the paging parameters; the session goes on. */
void mcp_session_reject_line(mcp_session *s, json_t *id, size_t len);

/* One MCP message (line) from the client: room for a write_file of 4 MiB as
 * base64 (5.6 MB) with its envelope. */
#define MCP_MAX_LINE (8u << 20)

/* The Streamable HTTP transport (src/mcp/http.c): listens on HOST:PORT
 * (cleanroom serve --mcp-http); makes the bearer token when missing. */
int mcp_http_start(daemon_ctx *d, uv_loop_t *loop, const char *addr, cr_error **err);

/* cleanroom serve: the daemon. One libuv loop; a unix socket speaking
 * JSON-RPC 2.0 one message per line (docs/api.md), or MCP when a
 * connection's first message starts an MCP session (docs/mcp.md). */
#pragma once
#include "api/api.h"

/* The server: the method table's context plus the listening socket. */
typedef struct server_ctx {
  daemon_ctx api; /* first: a daemon_ctx * of the server is the server */
  uv_pipe_t server;
  uv_signal_t sigterm, sigint;
  uv_timer_t settle_timer;
  bool stopping, serving;
  int conns, max_conns;
  gid_t socket_gid; /* CLEANROOM_SOCKET_GROUP, or (gid_t)-1 */
} server_ctx;

/* Also serve MCP over Streamable HTTP on HOST:PORT (call before daemon_run). */
void daemon_set_mcp_http(const char *addr);

/* Runs the daemon until SIGTERM/SIGINT. listen_path NULL = default socket. */
int daemon_run(const char *listen_path, cr_error **err);

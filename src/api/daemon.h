/* cleanroom serve: the daemon. One libuv loop; a unix socket speaking
 * JSON-RPC 2.0 one message per line (docs/api.md), or MCP when a
 * connection's first message starts an MCP session (docs/mcp.md). */
#pragma once
#include "api/api.h"
#include "sandbox/sandbox.h"

struct daemon_ctx {
  uv_loop_t *loop;
  sbx_manager *sandboxes;
  char *socket_path;
  uv_pipe_t server;
  uv_signal_t sigterm, sigint;
  uv_timer_t settle_timer;
  bool stopping, serving;
  int conns;
};

/* Runs the daemon until SIGTERM/SIGINT. listen_path NULL = default socket. */
int daemon_run(const char *listen_path, cr_error **err);

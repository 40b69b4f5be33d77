/* Fuzz target: MCP JSON-RPC lines into an mcp_session. The input is split
 * at newlines; each line goes to mcp_session_handle_line(). The control API
 * double creates sandboxes and fails every other request, so tool paths up
 * to the daemon call are exercised without a daemon. */
#include "mcp/mcp-internal.h"

#include <stdint.h>
#include <string.h>

static void sink_line(void *ud, const char *line, size_t len) {
  (void)ud;
  if (memchr(line, '\n', len)) __builtin_trap(); /* framing: one message per line */
}

static void dispatch(daemon_ctx *d, api_sink *sink, json_t *req) {
  (void)d;
  const char *m = json_string_value(json_object_get(req, "method"));
  json_t *msg;
  if (m && !strcmp(m, "sandbox.create"))
    msg = json_pack("{s:s, s:O, s:{s:s, s:s}}", "jsonrpc", "2.0", "id", json_object_get(req, "id"),
                    "result", "id", "sbx", "state", "ready");
  else
    msg = json_pack("{s:s, s:O, s:{s:i, s:s, s:{s:s}}}", "jsonrpc", "2.0", "id",
                    json_object_get(req, "id"), "error", "code", -32000, "message", "no",
                    "data", "reason", "sandbox_not_found");
  sink->send(sink, msg);
  json_decref(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mcp_session *s = mcp_session_new_with_dispatch(NULL, dispatch, sink_line, NULL);
  const char *p = (const char *)data, *end = p + size;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
    mcp_session_handle_line(s, p, n);
    p += n + 1;
  }
  mcp_session_close(s);
  return 0;
}

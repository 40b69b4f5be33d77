/* The session constructor bound to the daemon's control API. Kept apart
 * from session.c so unit tests can link the protocol core with a test
 * double instead of the daemon. */
#include "mcp/mcp-internal.h"

mcp_session *mcp_session_new(daemon_ctx *d, mcp_write_fn write_line, void *ud) {
  return mcp_session_new_with_call(d, api_call, write_line, ud);
}

/* Fuzz target: the Streamable HTTP front's request reader
 * (src/mcp/http-request.c, used by `serve --mcp-http`). The input is fed in
 * pieces whose sizes come from its first byte (a peer's writes split a
 * request anywhere); a complete request then goes through the checks the
 * front makes before any session is touched. Checks the bounds the reader
 * promises: kept headers NUL-terminated inside their buffers, headers and
 * body within their limits, an answer that never changes once given. */
#include "mcp/mcp-internal.h"

#include <stdint.h>
#include <string.h>

#define CHECK(x) \
  do {           \
    if (!(x)) __builtin_trap(); \
  } while (0)

static void check_str(const char *s, size_t cap) { CHECK(memchr(s, 0, cap) != NULL); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t piece = (size_t)data[0] % 64 + 1;
  const char *p = (const char *)data + 1, *end = (const char *)data + size;
  mcp_http_req r;
  mcp_http_req_init(&r);
  int st = 0;
  while (p < end) {
    size_t n = MIN(piece, (size_t)(end - p));
    int s2 = mcp_http_req_feed(&r, p, n);
    CHECK(s2 == 0 || s2 == 1 || s2 == 400 || s2 == 413);
    if (st) CHECK(s2 == st); /* a verdict once given stays */
    st = s2;
    p += n;
  }
  check_str(r.auth, sizeof(r.auth));
  check_str(r.origin, sizeof(r.origin));
  check_str(r.session_id, sizeof(r.session_id));
  check_str(r.accept, sizeof(r.accept));
  check_str(r.ctype, sizeof(r.ctype));
  check_str(r.host, sizeof(r.host));
  CHECK(r.header_bytes <= MCP_HTTP_MAX_HEADERS || st == 413);
  CHECK(r.body.len <= MCP_MAX_LINE);
  CHECK(!r.body.data || r.body.data[r.body.len] == 0);
  if (st == 1) {
    const char *m = mcp_http_req_method(&r);
    CHECK(m && *m);
    (void)mcp_http_origin_ok(r.origin);
    (void)mcp_http_host_ok(r.host, true);
    /* a token only the exact header matches */
    bool ok = mcp_http_token_ok(r.auth, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
    if (ok) CHECK(!strcmp(r.auth + 7, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"));
    CHECK(!mcp_http_token_ok(r.auth, ""));
  }
  mcp_http_req_done(&r);
  return 0;
}

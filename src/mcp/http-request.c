/* The Streamable HTTP front's request reader and its checks (mcp-internal.h):
 * bytes from an untrusted peer into one bounded request, with no I/O, so that
 * tests/fuzz/fuzz-http.c can drive it. http.c owns the connections. */
#include "mcp/mcp-internal.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

static mcp_http_req *req_of(http_parser *p) { return p->data; }

/* Keeps the headers we use (bounded copies, NUL-terminated); others only
 * count against MCP_HTTP_MAX_HEADERS. */
static void save_header(mcp_http_req *r, const char *value, size_t n) {
  static const struct {
    const char *name;
    size_t off, cap;
  } wanted[] = {
      {"authorization", offsetof(mcp_http_req, auth), sizeof(((mcp_http_req *)0)->auth)},
      {"origin", offsetof(mcp_http_req, origin), sizeof(((mcp_http_req *)0)->origin)},
      {"mcp-session-id", offsetof(mcp_http_req, session_id),
       sizeof(((mcp_http_req *)0)->session_id)},
      {"accept", offsetof(mcp_http_req, accept), sizeof(((mcp_http_req *)0)->accept)},
      {"content-type", offsetof(mcp_http_req, ctype), sizeof(((mcp_http_req *)0)->ctype)},
      {"host", offsetof(mcp_http_req, host), sizeof(((mcp_http_req *)0)->host)},
  };
  for (size_t i = 0; i < ELEMENTSOF(wanted); i++) {
    if (r->field.len != strlen(wanted[i].name) ||
        strncasecmp((const char *)r->field.data, wanted[i].name, r->field.len))
      continue;
    char *dst = (char *)r + wanted[i].off;
    size_t have = strlen(dst);
    size_t k = MIN(n, wanted[i].cap - 1 - have);
    memcpy(dst + have, value, k);
    dst[have + k] = 0;
  }
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  mcp_http_req *r = req_of(p);
  if ((r->header_bytes += n) > MCP_HTTP_MAX_HEADERS) return 1;
  if (r->in_value) {
    cr_buf_reset(&r->field);
    r->in_value = false;
  }
  /* the name and its NUL; header_bytes bounds it first */
  if (cr_buf_append(&r->field, at, n) < 0 || cr_buf_reserve(&r->field, 1) < 0) return 1;
  r->field.data[r->field.len] = 0;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  mcp_http_req *r = req_of(p);
  if ((r->header_bytes += n) > MCP_HTTP_MAX_HEADERS) return 1;
  r->in_value = true;
  save_header(r, at, n);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  mcp_http_req *r = req_of(p);
  int e = cr_buf_append(&r->body, at, n);
  if (e == 0) e = cr_buf_reserve(&r->body, 1); /* the NUL */
  if (e < 0) {
    r->too_large = e == -E2BIG; /* else out of memory: a plain failure */
    return 1;
  }
  r->body.data[r->body.len] = 0;
  return 0;
}

static int on_message_complete(http_parser *p) {
  req_of(p)->complete = true;
  return 1; /* one request per connection: stop here */
}

static const http_parser_settings settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void mcp_http_req_init(mcp_http_req *r) {
  memset(r, 0, sizeof(*r));
  r->field = CR_BUF_INIT(MCP_HTTP_MAX_HEADERS + 1);
  r->body = CR_BUF_INIT((size_t)MCP_MAX_LINE + 1);
  http_parser_init(&r->parser, HTTP_REQUEST);
  r->parser.data = r;
}

void mcp_http_req_done(mcp_http_req *r) {
  if (!r) return;
  cr_buf_free(&r->field);
  cr_buf_free(&r->body);
}

int mcp_http_req_feed(mcp_http_req *r, const char *data, size_t n) {
  if (r->complete) return 1;
  if (r->failed) return r->failed;
  size_t used = http_parser_execute(&r->parser, &settings, data, n);
  if (r->complete) return 1;
  if (used != n || HTTP_PARSER_ERRNO(&r->parser) != HPE_OK) {
    r->failed = r->too_large || r->header_bytes > MCP_HTTP_MAX_HEADERS ? 413 : 400;
    return r->failed;
  }
  return 0;
}

const char *mcp_http_req_method(const mcp_http_req *r) {
  return http_method_str((enum http_method)r->parser.method);
}

bool mcp_http_origin_ok(const char *origin) {
  if (!*origin) return true; /* not a browser */
  static const char *const ok[] = {"http://localhost", "http://127.0.0.1", "http://[::1]",
                                   "https://localhost", "https://127.0.0.1", "https://[::1]"};
  for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
    size_t n = strlen(ok[i]);
    if (!strncmp(origin, ok[i], n) && (origin[n] == 0 || origin[n] == ':')) return true;
  }
  return false;
}

bool mcp_http_host_ok(const char *host, bool loopback) {
  if (!loopback) return true;
  static const char *const ok[] = {"localhost", "127.0.0.1", "[::1]"};
  for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
    size_t n = strlen(ok[i]);
    if (!strncasecmp(host, ok[i], n) && (host[n] == 0 || host[n] == ':')) return true;
  }
  return false;
}

bool mcp_http_token_ok(const char *auth, const char *token) {
  if (strncasecmp(auth, "Bearer ", 7)) return false;
  const char *t = auth + 7;
  size_t n = strlen(token);
  if (n == 0 || strlen(t) != n) return false;
  unsigned char diff = 0; /* constant time in the token's length */
  for (size_t i = 0; i < n; i++) diff |= (unsigned char)(t[i] ^ token[i]);
  return diff == 0;
}

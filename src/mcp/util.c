/* Small helpers for the MCP server: lossy UTF-8, capped output. */
#include "mcp/mcp-internal.h"
#include "util/base64.h"

#include <string.h>
#include <time.h>

/* Length of a valid UTF-8 sequence at p (max n bytes), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n) {
  unsigned char c = p[0];
  if (c < 0x80) return c == 0 ? 1 : 1;
  size_t need;
  uint32_t cp;
  if (c >= 0xc2 && c <= 0xdf) need = 2, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef) need = 3, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4) need = 4, cp = c & 0x07;
  else return 0;
  if (n < need) return 0;
  for (size_t i = 1; i < need; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if ((need == 3 && cp < 0x800) || (need == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return need;
}

char *mcp_utf8_lossy(const char *data, size_t len, size_t *ret_len) {
  if (len > SIZE_MAX / 3 - 1) return NULL;
  char *out = malloc(len * 3 + 1);
  if (!out) return NULL;
  size_t o = 0;
  const unsigned char *p = (const unsigned char *)data;
  for (size_t i = 0; i < len;) {
    size_t n = utf8_seq(p + i, len - i);
    if (n == 0) {
      out[o++] = (char)0xef;
      out[o++] = (char)0xbf;
      out[o++] = (char)0xbd;
      i++;
    } else {
      memcpy(out + o, p + i, n);
      o += n;
      i += n;
    }
  }
  out[o] = 0;
  if (ret_len) *ret_len = o;
  return out;
}

json_t *mcp_text_json(const char *data, size_t len) {
  size_t n;
  _cleanup_free_ char *t = mcp_utf8_lossy(data ? data : "", data ? len : 0, &n);
  if (!t) return NULL;
  return json_stringn(t, n);
}

void mcp_outbuf_init(mcp_outbuf *b, size_t cap) {
  memset(b, 0, sizeof(*b));
  b->head_cap = cap / 2;
  b->tail_cap = cap - b->head_cap;
}

void mcp_outbuf_add(mcp_outbuf *b, const char *data, size_t len) {
  b->total += len;
  if (b->head_len < b->head_cap) {
    size_t n = MIN(len, b->head_cap - b->head_len);
    if (!b->head) b->head = malloc(b->head_cap);
    if (!b->head) return;
    memcpy(b->head + b->head_len, data, n);
    b->head_len += n;
    data += n;
    len -= n;
  }
  if (len == 0 || b->tail_cap == 0) return;
  if (!b->tail) b->tail = malloc(b->tail_cap);
  if (!b->tail) return;
  if (len >= b->tail_cap) { /* only the last tail_cap bytes matter */
    memcpy(b->tail, data + len - b->tail_cap, b->tail_cap);
    b->tail_len = b->tail_cap;
    b->tail_pos = 0;
    return;
  }
  for (size_t i = 0; i < len;) {
    size_t n = MIN(len - i, b->tail_cap - b->tail_pos);
    memcpy(b->tail + b->tail_pos, data + i, n);
    b->tail_pos = (b->tail_pos + n) % b->tail_cap;
    b->tail_len = MIN(b->tail_len + n, b->tail_cap);
    i += n;
  }
}

json_t *mcp_outbuf_text(const mcp_outbuf *b, const char *stream, uint64_t *ret_dropped) {
  uint64_t kept = b->head_len + b->tail_len;
  uint64_t dropped = b->total - kept;
  size_t cap = b->head_len + b->tail_len + 128;
  _cleanup_free_ char *raw = malloc(cap);
  if (!raw) return NULL;
  size_t o = 0;
  if (b->head_len) memcpy(raw, b->head, b->head_len);
  o = b->head_len;
  if (dropped > 0) {
    int n = snprintf(raw + o, cap - o,
                     "\n[... cleanroom: %llu bytes of %s dropped here (output cap); "
                     "the head and the tail are kept ...]\n",
                     (unsigned long long)dropped, stream);
    if (n > 0 && (size_t)n < cap - o) o += (size_t)n;
  }
  /* ring: oldest byte at tail_pos when full, else at 0 */
  if (b->tail_len == b->tail_cap && b->tail_cap) {
    memcpy(raw + o, b->tail + b->tail_pos, b->tail_cap - b->tail_pos);
    o += b->tail_cap - b->tail_pos;
    memcpy(raw + o, b->tail, b->tail_pos);
    o += b->tail_pos;
  } else if (b->tail_len) {
    memcpy(raw + o, b->tail, b->tail_len);
    o += b->tail_len;
  }
  if (ret_dropped) *ret_dropped = dropped;
  return mcp_text_json(raw, o);
}

void mcp_outbuf_done(mcp_outbuf *b) {
  free(b->head);
  free(b->tail);
  memset(b, 0, sizeof(*b));
}

uint64_t mcp_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The bounded buffer (see buf.h). */
#include "util/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int cr_buf_reserve(cr_buf *b, size_t extra) {
  if (b->err) return b->err;
  size_t max = b->max ? b->max : CR_BUF_MAX;
  if (extra > max || b->len > max - extra) return b->err = -E2BIG;
  if (b->len + extra <= b->cap) return 0;
  size_t nc = b->cap ? b->cap : 256;
  while (nc < b->len + extra) nc *= 2;
  if (nc > max) nc = max;
  uint8_t *nd = realloc(b->data, nc);
  if (!nd) return b->err = -ENOMEM;
  b->data = nd;
  b->cap = nc;
  return 0;
}

int cr_buf_append(cr_buf *b, const void *p, size_t n) {
  int r = cr_buf_reserve(b, n);
  if (r < 0) return r;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int cr_buf_zero(cr_buf *b, size_t n) {
  int r = cr_buf_reserve(b, n);
  if (r < 0) return r;
  if (n) memset(b->data + b->len, 0, n);
  b->len += n;
  return 0;
}

void cr_buf_consume(cr_buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void cr_buf_reset(cr_buf *b) {
  b->len = 0;
  b->err = 0;
}

void cr_buf_free(cr_buf *b) {
  free(b->data);
  *b = (cr_buf){.max = b->max};
}

/* The bounded buffer (see buf.h). */
#include "util/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
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

int cr_buf_printf(cr_buf *b, const char *fmt, ...) {
  if (b->err) return b->err;
  va_list ap, aq;
  va_start(ap, fmt);
  va_copy(aq, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  int r = n < 0 ? (b->err = -EINVAL) : cr_buf_reserve(b, (size_t)n + 1);
  if (r == 0) {
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, aq);
    b->len += (size_t)n;
  }
  va_end(aq);
  return r;
}

char *cr_buf_steal_str(cr_buf *b) {
  if (b->err || cr_buf_reserve(b, 1) < 0) {
    cr_buf_free(b);
    return NULL;
  }
  b->data[b->len] = 0;
  char *s = (char *)b->data;
  *b = (cr_buf){.max = b->max};
  return s;
}

#include "util/base64.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

static const char tb[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *cr_base64_encode(const uint8_t *p, size_t n) {
  char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
  if (!out) return NULL;
  size_t i = 0;
  for (; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    *o++ = tb[v >> 18 & 63]; *o++ = tb[v >> 12 & 63]; *o++ = tb[v >> 6 & 63]; *o++ = tb[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
    *o++ = tb[v >> 18 & 63];
    *o++ = tb[v >> 12 & 63];
    *o++ = i + 1 < n ? tb[v >> 6 & 63] : '=';
    *o++ = '=';
  }
  *o = '\0';
  return out;
}

static int val(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int cr_base64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len) {
  if (len % 4) return -EINVAL;
  uint8_t *out = malloc(len / 4 * 3 + 1);
  if (!out) return -ENOMEM;
  size_t o = 0;
  for (size_t i = 0; i < len; i += 4) {
    int a = val(s[i]), b = val(s[i + 1]);
    int c = s[i + 2] == '=' ? -2 : val(s[i + 2]);
    int d = s[i + 3] == '=' ? -2 : val(s[i + 3]);
    bool last = i + 4 == len;
    if (a < 0 || b < 0 || c == -1 || d == -1 || (c == -2 && d != -2) ||
        ((c == -2 || d == -2) && !last)) {
      free(out);
      return -EINVAL;
    }
    uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)(c < 0 ? 0 : c) << 6 |
                 (uint32_t)(d < 0 ? 0 : d);
    out[o++] = (uint8_t)(v >> 16);
    if (c >= 0) out[o++] = (uint8_t)(v >> 8);
    if (d >= 0) out[o++] = (uint8_t)v;
  }
  *ret = out;
  *ret_len = o;
  return 0;
}

static int lenient_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

/* Accepts standard and URL alphabets, optional padding, no whitespace. */
int cr_base64_decode_lenient(const char *s, size_t len, uint8_t **ret, size_t *ret_len) {
  while (len > 0 && s[len - 1] == '=') len--;
  if (len % 4 == 1) return -EINVAL;
  uint8_t *out = malloc(len / 4 * 3 + 3);
  if (!out) return -ENOMEM;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    int v = lenient_value((unsigned char)s[i]);
    if (v < 0) {
      free(out);
      return -EINVAL;
    }
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (uint8_t)(acc >> bits);
    }
  }
  *ret = out;
  *ret_len = o;
  return 0;
}

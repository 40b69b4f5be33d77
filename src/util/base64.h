/* Standard base64 (RFC 4648, with padding). */
#pragma once
#include <stddef.h>
#include <stdint.h>
/* New NUL-terminated string; NULL on OOM. */
char *cr_base64_encode(const uint8_t *p, size_t n);
/* Decodes s (len bytes; whitespace not allowed). Returns 0 and a new buffer
 * (*ret may be non-NULL even for 0 bytes), -EINVAL on bad input. */
int cr_base64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len);
/* For input from agents: standard or URL alphabet, padding optional. */
int cr_base64_decode_lenient(const char *s, size_t len, uint8_t **ret, size_t *ret_len);

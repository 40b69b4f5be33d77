/* One growable byte buffer with a bound, used wherever a buffer grows
 * (frames, initramfs images, socket input, tar streams).
 *
 *   cr_buf b = CR_BUF_INIT(16 << 20);   // never more than 16 MiB
 *   if (cr_buf_append(&b, p, n) < 0) ... // -E2BIG: the bound; -ENOMEM: malloc
 *
 * The bound is fixed when the buffer is made (0 = CR_BUF_MAX). An error is
 * sticky (b.err): after one, appends are ignored and return it again, so a
 * writer can build a whole record and check once. "Too large" (-E2BIG) and
 * "out of memory" (-ENOMEM) are never confused. No dependencies beyond libc:
 * the guest agent links it too. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define CR_BUF_MAX ((size_t)1 << 40)

typedef struct cr_buf {
  uint8_t *data;
  size_t len, cap;
  size_t max; /* 0 = CR_BUF_MAX */
  int err;    /* 0, -E2BIG or -ENOMEM; sticky */
} cr_buf;

#define CR_BUF_INIT(bound) ((cr_buf){.max = (bound)})

/* Room for extra more bytes: 0, or the (sticky) error. */
int cr_buf_reserve(cr_buf *b, size_t extra);
int cr_buf_append(cr_buf *b, const void *p, size_t n);
/* Appends n zero bytes. */
int cr_buf_zero(cr_buf *b, size_t n);
/* Drops the first n bytes (n > len drops all). */
void cr_buf_consume(cr_buf *b, size_t n);
/* Empties the buffer and clears the error; keeps the memory and the bound. */
void cr_buf_reset(cr_buf *b);
/* Frees the memory; keeps the bound. */
void cr_buf_free(cr_buf *b);
/* Text: appends printf output (the byte after len is a NUL, not counted;
 * the bound counts it). */
int cr_buf_printf(cr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The text as a NUL-terminated string the caller frees ("" when empty), the
 * buffer left empty; NULL (and freed) after an error. */
char *cr_buf_steal_str(cr_buf *b);

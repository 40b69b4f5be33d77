/* A bounded byte ring for an execution's output (stdout and stderr in the
 * order they came), with no allocation per write: a guest sending 1-byte
 * frames costs O(1) per frame and at most OUT_RING_CAP bytes are kept. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define OUT_RING_CAP (2u << 20) /* bytes kept (both streams together) */
#define OUT_RING_RUNS 4096      /* stream changes kept; beyond, oldest run dropped */

typedef struct out_run {
  uint64_t offset; /* stream offset of the run's first byte; it ends where the next begins */
  int stream;
} out_run;

typedef struct out_ring {
  uint8_t *data;
  size_t cap;     /* allocated bytes: doubles from 4 KiB up to OUT_RING_CAP */
  size_t head;    /* index of the oldest kept byte */
  uint64_t start; /* offset of the oldest kept byte (bytes before it were dropped) */
  uint64_t end;   /* offset after the newest byte = bytes ever appended */
  out_run *runs;  /* OUT_RING_RUNS entries once allocated */
  size_t run_head, nruns;
} out_ring;

/* Appends n bytes of `stream`; the oldest bytes make room. Without memory the
 * bytes are counted as dropped. */
void out_ring_append(out_ring *r, int stream, const uint8_t *p, size_t n);
/* Calls fn for every kept byte at or after offset `from`, in order, in runs of
 * one stream (a run may come in two pieces). Returns the bytes after `from`
 * that were dropped. */
uint64_t out_ring_each(const out_ring *r, uint64_t from,
                       void (*fn)(void *ud, int stream, const uint8_t *data, size_t n),
                       void *ud);
/* Bytes appended but no longer kept. */
static inline uint64_t out_ring_dropped(const out_ring *r) { return r->start; }
/* Frees the buffers; every byte so far counts as dropped, offsets go on. */
void out_ring_release(out_ring *r);

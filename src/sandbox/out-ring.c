/* Bounded output ring (out-ring.h). */
#include "sandbox/out-ring.h"

#include <stdlib.h>
#include <string.h>

static out_run *run_at(const out_ring *r, size_t i) {
  return &r->runs[(r->run_head + i) % OUT_RING_RUNS];
}

/* Forgets the oldest `n` kept bytes. */
static void drop_oldest(out_ring *r, uint64_t n) {
  r->start += n;
  if (r->start >= r->end) {
    r->start = r->end;
    r->head = 0;
    r->nruns = 0;
    return;
  }
  r->head = (size_t)((r->head + n) % r->cap);
  while (r->nruns > 1 && run_at(r, 1)->offset <= r->start) {
    r->run_head = (r->run_head + 1) % OUT_RING_RUNS;
    r->nruns--;
  }
  if (r->nruns && run_at(r, 0)->offset < r->start) run_at(r, 0)->offset = r->start;
}

static void grow(out_ring *r, size_t want) {
  size_t nc = r->cap ? r->cap : 4096;
  while (nc < want && nc < OUT_RING_CAP) nc *= 2;
  if (nc > OUT_RING_CAP) nc = OUT_RING_CAP;
  if (nc <= r->cap) return;
  uint8_t *nd = malloc(nc);
  if (!nd) return; /* keep what fits in the current buffer */
  size_t kept = (size_t)(r->end - r->start);
  if (kept) {
    size_t first = kept < r->cap - r->head ? kept : r->cap - r->head;
    memcpy(nd, r->data + r->head, first);
    memcpy(nd + first, r->data, kept - first);
  }
  free(r->data);
  r->data = nd;
  r->cap = nc;
  r->head = 0;
}

void out_ring_append(out_ring *r, int stream, const uint8_t *p, size_t n) {
  if (n == 0) return;
  if (n > OUT_RING_CAP) { /* only its tail can be kept */
    size_t skip = n - OUT_RING_CAP;
    r->end += skip;
    drop_oldest(r, r->end - r->start);
    p += skip;
    n = OUT_RING_CAP;
  }
  if (!r->runs) r->runs = malloc(OUT_RING_RUNS * sizeof(*r->runs));
  size_t kept = (size_t)(r->end - r->start);
  if (kept + n > r->cap) grow(r, kept + n);
  if (!r->runs || r->cap == 0) {
    r->end += n;
    drop_oldest(r, r->end - r->start);
    return;
  }
  if (n > r->cap) { /* no memory to grow: keep the tail that fits */
    r->end += n - r->cap;
    drop_oldest(r, r->end - r->start);
    p += n - r->cap;
    n = r->cap;
  }
  kept = (size_t)(r->end - r->start);
  if (kept + n > r->cap) drop_oldest(r, kept + n - r->cap);
  if (r->nruns == 0 || run_at(r, r->nruns - 1)->stream != stream) {
    if (r->nruns == OUT_RING_RUNS) drop_oldest(r, run_at(r, 1)->offset - r->start);
    *run_at(r, r->nruns) = (out_run){r->end, stream};
    r->nruns++;
  }
  kept = (size_t)(r->end - r->start);
  size_t idx = (r->head + kept) % r->cap;
  size_t first = n < r->cap - idx ? n : r->cap - idx;
  memcpy(r->data + idx, p, first);
  memcpy(r->data, p + first, n - first);
  r->end += n;
}

uint64_t out_ring_each(const out_ring *r, uint64_t from,
                       void (*fn)(void *ud, int stream, const uint8_t *data, size_t n),
                       void *ud) {
  uint64_t dropped = from < r->start ? r->start - from : 0;
  if (from < r->start) from = r->start;
  for (size_t i = 0; i < r->nruns; i++) {
    const out_run *run = run_at(r, i);
    uint64_t lo = run->offset > from ? run->offset : from;
    uint64_t hi = i + 1 < r->nruns ? run_at(r, i + 1)->offset : r->end;
    if (lo >= hi) continue;
    size_t idx = (size_t)((r->head + (lo - r->start)) % r->cap);
    size_t len = (size_t)(hi - lo);
    size_t first = len < r->cap - idx ? len : r->cap - idx;
    fn(ud, run->stream, r->data + idx, first);
    if (len > first) fn(ud, run->stream, r->data, len - first);
  }
  return dropped;
}

void out_ring_release(out_ring *r) {
  free(r->data);
  free(r->runs);
  r->data = NULL;
  r->runs = NULL;
  r->cap = r->head = r->run_head = r->nruns = 0;
  r->start = r->end;
}

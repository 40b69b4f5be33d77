/* The execution output ring (src/sandbox/out-ring.c): bounded, in order,
 * drops the oldest bytes and says how many. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sandbox/out-ring.h"

#include <stdlib.h>
#include <string.h>

typedef struct collected {
  uint8_t *buf;
  int *streams;
  size_t len, cap;
  size_t calls;
} collected;

static void collect(void *ud, int stream, const uint8_t *data, size_t n) {
  collected *c = ud;
  if (c->len + n > c->cap) {
    c->cap = (c->len + n) * 2;
    c->buf = realloc(c->buf, c->cap);
    c->streams = realloc(c->streams, c->cap * sizeof(int));
    assert_non_null(c->buf);
    assert_non_null(c->streams);
  }
  memcpy(c->buf + c->len, data, n);
  for (size_t i = 0; i < n; i++) c->streams[c->len + i] = stream;
  c->len += n;
  c->calls++;
}

static void collected_free(collected *c) {
  free(c->buf);
  free(c->streams);
  memset(c, 0, sizeof(*c));
}

static void test_order_of_streams_kept(void **state) {
  out_ring r = {0};
  out_ring_append(&r, 1, (const uint8_t *)"one ", 4);
  out_ring_append(&r, 2, (const uint8_t *)"two ", 4);
  out_ring_append(&r, 1, (const uint8_t *)"three", 5);
  collected c = {0};
  assert_int_equal(out_ring_each(&r, 0, collect, &c), 0);
  assert_int_equal(c.len, 13);
  assert_memory_equal(c.buf, "one two three", 13);
  assert_int_equal(c.streams[0], 1);
  assert_int_equal(c.streams[4], 2);
  assert_int_equal(c.streams[8], 1);
  assert_int_equal(c.calls, 3);
  collected_free(&c);
  /* from a cursor inside a run */
  assert_int_equal(out_ring_each(&r, 6, collect, &c), 0);
  assert_int_equal(c.len, 7);
  assert_memory_equal(c.buf, "o three", 7);
  collected_free(&c);
  assert_int_equal(out_ring_dropped(&r), 0);
  out_ring_release(&r);
}

/* A guest writing one byte per frame: the ring keeps the newest
 * OUT_RING_CAP bytes, never more, and reports the rest as dropped. */
static void test_one_byte_flood_is_capped(void **state) {
  out_ring r = {0};
  const size_t total = 3 * OUT_RING_CAP + 12345;
  for (size_t i = 0; i < total; i++) {
    uint8_t b = (uint8_t)(i % 251);
    out_ring_append(&r, 1, &b, 1);
    assert_true(r.cap <= OUT_RING_CAP);
  }
  assert_int_equal(r.end, total);
  assert_int_equal(out_ring_dropped(&r), total - OUT_RING_CAP);
  collected c = {0};
  assert_int_equal(out_ring_each(&r, 0, collect, &c), total - OUT_RING_CAP);
  assert_int_equal(c.len, OUT_RING_CAP);
  for (size_t i = 0; i < c.len; i++)
    if (c.buf[i] != (uint8_t)((total - OUT_RING_CAP + i) % 251)) fail_msg("byte %zu wrong", i);
  assert_true(c.calls <= 2); /* one run, maybe wrapped */
  collected_free(&c);
  out_ring_release(&r);
  assert_int_equal(out_ring_dropped(&r), total);
  assert_int_equal(r.cap, 0);
}

/* Alternating streams byte by byte: the run table is bounded too. */
static void test_alternating_streams_bound_the_runs(void **state) {
  out_ring r = {0};
  const size_t total = 3 * OUT_RING_RUNS + 7;
  for (size_t i = 0; i < total; i++) {
    uint8_t b = (uint8_t)i;
    out_ring_append(&r, 1 + (int)(i % 2), &b, 1);
  }
  assert_true(r.nruns <= OUT_RING_RUNS);
  collected c = {0};
  uint64_t dropped = out_ring_each(&r, 0, collect, &c);
  assert_int_equal(dropped + c.len, total);
  assert_true(dropped > 0);
  for (size_t i = 0; i < c.len; i++) {
    size_t at = (size_t)dropped + i;
    if (c.buf[i] != (uint8_t)at || c.streams[i] != 1 + (int)(at % 2))
      fail_msg("byte %zu: wrong data or stream", i);
  }
  collected_free(&c);
  out_ring_release(&r);
}

static void test_frame_larger_than_the_cap(void **state) {
  out_ring r = {0};
  out_ring_append(&r, 2, (const uint8_t *)"head", 4);
  size_t n = OUT_RING_CAP + 100;
  uint8_t *big = malloc(n);
  assert_non_null(big);
  for (size_t i = 0; i < n; i++) big[i] = (uint8_t)(i * 7);
  out_ring_append(&r, 1, big, n);
  collected c = {0};
  assert_int_equal(out_ring_each(&r, 0, collect, &c), 104);
  assert_int_equal(c.len, OUT_RING_CAP);
  assert_memory_equal(c.buf, big + 100, OUT_RING_CAP);
  assert_int_equal(c.streams[0], 1);
  collected_free(&c);
  free(big);
  out_ring_release(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_order_of_streams_kept),
      cmocka_unit_test(test_one_byte_flood_is_capped),
      cmocka_unit_test(test_alternating_streams_bound_the_runs),
      cmocka_unit_test(test_frame_larger_than_the_cap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

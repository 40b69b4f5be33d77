/* Unit tests for the agent protocol codec (src/proto/agent_proto.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/agent_proto.h"

static void test_round_trip(void **state) {
  (void)state;
  ap_buf b = {0};
  ap_frame_begin(&b, AP_EXEC, 7);
  ap_put_str(&b, AP_T_ARGV, "echo");
  ap_put_str(&b, AP_T_ARGV, "hi");
  ap_put_u32(&b, AP_T_FLAGS, AP_F_STDIN);
  ap_put_u64(&b, AP_T_OFFSET, 0x1122334455667788ull);
  ap_put_bytes(&b, AP_T_SEED, "\0\1\2", 3);
  assert_int_equal(ap_frame_end(&b), 0);
  assert_int_equal(ap_put_raw_frame(&b, AP_STDOUT, 9, "x\0y", 3), 0);

  ap_header h;
  const uint8_t *p;
  long n = ap_frame_parse(b.data, b.len, AP_MAX_PAYLOAD, &h, &p);
  assert_true(n > 0);
  assert_int_equal(h.type, AP_EXEC);
  assert_int_equal(h.channel, 7);
  assert_int_equal(h.flags, 0);
  assert_int_equal((size_t)n, AP_HEADER_SIZE + h.len);

  size_t off = 0;
  ap_field f;
  char *s = NULL;
  assert_int_equal(ap_field_next(p, h.len, &off, &f), 1);
  assert_int_equal(f.tag, AP_T_ARGV);
  assert_int_equal(ap_field_str(&f, &s), 0);
  assert_string_equal(s, "echo");
  free(s);
  assert_int_equal(ap_field_next(p, h.len, &off, &f), 1);
  assert_int_equal(ap_field_str(&f, &s), 0);
  assert_string_equal(s, "hi");
  free(s);
  uint32_t u;
  uint64_t v;
  assert_int_equal(ap_field_next(p, h.len, &off, &f), 1);
  assert_int_equal(ap_field_u32(&f, &u), 0);
  assert_int_equal(u, AP_F_STDIN);
  assert_int_equal(ap_field_next(p, h.len, &off, &f), 1);
  assert_int_equal(ap_field_u64(&f, &v), 0);
  assert_true(v == 0x1122334455667788ull);
  assert_int_equal(ap_field_next(p, h.len, &off, &f), 1);
  assert_int_equal(f.len, 3);
  assert_memory_equal(f.val, "\0\1\2", 3);
  assert_int_equal(ap_field_next(p, h.len, &off, &f), 0);

  assert_int_equal(ap_find(p, h.len, AP_T_FLAGS, &f), 1);
  assert_int_equal(ap_find(p, h.len, AP_T_PATH, &f), 0);

  /* the second frame: raw bytes */
  long n2 = ap_frame_parse(b.data + n, b.len - (size_t)n, AP_MAX_PAYLOAD, &h, &p);
  assert_int_equal(n2, AP_HEADER_SIZE + 3);
  assert_int_equal(h.type, AP_STDOUT);
  assert_int_equal(h.channel, 9);
  assert_memory_equal(p, "x\0y", 3);
  assert_string_equal(ap_type_name(AP_STDOUT), "stdout");
  ap_buf_free(&b);
}

static void test_truncated(void **state) {
  (void)state;
  ap_buf b = {0};
  ap_frame_begin(&b, AP_HELLO, 0);
  ap_put_u32(&b, AP_T_VERSION, 1);
  assert_int_equal(ap_frame_end(&b), 0);
  ap_header h;
  const uint8_t *p;
  for (size_t i = 0; i < b.len; i++) /* header or payload cut short */
    assert_int_equal(ap_frame_parse(b.data, i, AP_MAX_PAYLOAD, &h, &p), 0);
  assert_int_equal(ap_frame_parse(b.data, b.len, AP_MAX_PAYLOAD, &h, &p),
                   (long)b.len);
  ap_buf_free(&b);
}

static void put_hdr(uint8_t *o, uint32_t len, uint16_t type, uint16_t flags,
                    uint32_t ch) {
  ap_header h = {.len = len, .type = type, .flags = flags, .channel = ch};
  ap_header_encode(o, &h);
}

static void test_bad_frames(void **state) {
  (void)state;
  uint8_t o[AP_HEADER_SIZE];
  ap_header h;
  const uint8_t *p;
  put_hdr(o, AP_MAX_PAYLOAD + 1, AP_DATA, 0, 1);
  assert_int_equal(ap_frame_parse(o, sizeof(o), AP_MAX_PAYLOAD, &h, &p), -EMSGSIZE);
  put_hdr(o, 100, AP_DATA, 0, 1); /* over the receiver's own cap */
  assert_int_equal(ap_frame_parse(o, sizeof(o), 64, &h, &p), -EMSGSIZE);
  put_hdr(o, 0, 0x7777, 0, 1);
  assert_int_equal(ap_frame_parse(o, sizeof(o), AP_MAX_PAYLOAD, &h, &p), -EBADMSG);
  put_hdr(o, 0, AP_DATA, 1, 1);
  assert_int_equal(ap_frame_parse(o, sizeof(o), AP_MAX_PAYLOAD, &h, &p), -EBADMSG);
  put_hdr(o, 0, AP_DATA_END, 0, 1);
  assert_int_equal(ap_frame_parse(o, sizeof(o), AP_MAX_PAYLOAD, &h, &p),
                   AP_HEADER_SIZE);
  assert_int_equal(ap_type_known(0x7777), 0);
  assert_string_equal(ap_type_name(0x7777), "unknown");
}

/* AP_WINDOW (flow-control credit) is a known guest->host type carrying a
 * u64 LENGTH; a receiver accepts it and reads the credit back. */
static void test_window_frame(void **state) {
  (void)state;
  ap_buf b = {0};
  ap_frame_begin(&b, AP_WINDOW, 7);
  ap_put_u64(&b, AP_T_LENGTH, 65536);
  assert_int_equal(ap_frame_end(&b), 0);
  assert_int_equal(ap_type_known(AP_WINDOW), 1);
  assert_string_equal(ap_type_name(AP_WINDOW), "window");
  ap_header h;
  const uint8_t *p;
  assert_int_equal(ap_frame_parse(b.data, b.len, AP_MAX_PAYLOAD, &h, &p), (long)b.len);
  assert_int_equal(h.type, AP_WINDOW);
  assert_int_equal(h.channel, 7);
  ap_field f;
  uint64_t v = 0;
  assert_int_equal(ap_find(p, h.len, AP_T_LENGTH, &f), 1);
  assert_int_equal(ap_field_u64(&f, &v), 0);
  assert_int_equal(v, 65536);
  /* the next type after it is still unknown */
  assert_int_equal(ap_type_known(AP_WINDOW + 1), 0);
  ap_buf_free(&b);
}

static void test_oversized_build(void **state) {
  (void)state;
  ap_buf b = {0};
  uint8_t *big = calloc(1, AP_MAX_PAYLOAD + 1);
  assert_non_null(big);
  assert_int_equal(ap_put_raw_frame(&b, AP_DATA, 1, big, AP_MAX_PAYLOAD + 1),
                   -EMSGSIZE);
  ap_buf_reset(&b);
  ap_frame_begin(&b, AP_EXEC, 1);
  ap_put_bytes(&b, AP_T_ARGV, big, AP_MAX_PAYLOAD - 6);
  ap_put_bytes(&b, AP_T_ARGV, "x", 1);
  assert_int_equal(ap_frame_end(&b), -EMSGSIZE);
  assert_int_equal(b.len, 0); /* dropped */
  /* A field larger than any frame: "too large", not "out of memory"; only
   * that frame goes, the one before it and the buffer stay. */
  assert_int_equal(ap_put_raw_frame(&b, AP_STDOUT, 2, "ok", 2), 0);
  size_t before = b.len;
  ap_frame_begin(&b, AP_FILE_WRITE, 3);
  ap_put_str(&b, AP_T_PATH, "/tmp/x");
  ap_put_bytes(&b, AP_T_SEED, big, AP_MAX_PAYLOAD + 1);
  assert_int_equal(b.err, -E2BIG);
  assert_int_equal(ap_frame_end(&b), -EMSGSIZE);
  assert_int_equal(b.err, 0);
  assert_int_equal(b.len, before);
  assert_int_equal(ap_put_raw_frame(&b, AP_STDOUT, 2, "more", 4), 0);
  ap_header h;
  const uint8_t *p;
  long n = ap_frame_parse(b.data, b.len, AP_MAX_PAYLOAD, &h, &p);
  assert_int_equal(n, (long)before);
  assert_int_equal(h.len, 2);
  assert_int_equal(ap_frame_parse(b.data + n, b.len - (size_t)n, AP_MAX_PAYLOAD, &h, &p),
                   (long)(b.len - (size_t)n));
  assert_memory_equal(p, "more", 4);
  free(big);
  ap_buf_free(&b);
}

static void test_bad_fields(void **state) {
  (void)state;
  /* a field whose length runs past the payload */
  uint8_t p[] = {AP_T_PATH, 0, 10, 0, 0, 0, 'a', 'b'};
  size_t off = 0;
  ap_field f;
  assert_int_equal(ap_field_next(p, sizeof(p), &off, &f), -EBADMSG);
  /* a field header cut short */
  off = 0;
  assert_int_equal(ap_field_next(p, 4, &off, &f), -EBADMSG);
  assert_int_equal(ap_find(p, sizeof(p), AP_T_ARGV, &f), -EBADMSG);
  /* strings with NUL are rejected */
  uint8_t q[] = {AP_T_PATH, 0, 3, 0, 0, 0, 'a', 0, 'b'};
  off = 0;
  assert_int_equal(ap_field_next(q, sizeof(q), &off, &f), 1);
  char *s = NULL;
  assert_int_equal(ap_field_str(&f, &s), -EBADMSG);
  assert_null(s);
  /* u32 / u64 of the wrong length */
  uint32_t u;
  uint64_t v;
  assert_int_equal(ap_field_u32(&f, &u), -EBADMSG);
  assert_int_equal(ap_field_u64(&f, &v), -EBADMSG);
  ap_field f8 = {.tag = AP_T_SIZE, .len = 8, .val = (const uint8_t *)"\1\0\0\0\0\0\0\0"};
  assert_int_equal(ap_field_u32(&f8, &u), -EBADMSG);
  assert_int_equal(ap_field_u64(&f8, &v), 0);
  assert_true(v == 1);
  /* an empty string is fine */
  ap_field f0 = {.tag = AP_T_CWD, .len = 0, .val = (const uint8_t *)""};
  assert_int_equal(ap_field_str(&f0, &s), 0);
  assert_string_equal(s, "");
  free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_truncated),
      cmocka_unit_test(test_bad_frames),
      cmocka_unit_test(test_window_frame),
      cmocka_unit_test(test_oversized_build),
      cmocka_unit_test(test_bad_fields),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

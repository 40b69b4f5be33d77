/* Fuzz target: the agent protocol codec. Parses frames in a loop the way
 * both ends do, iterates every payload's fields and calls the typed
 * accessors; re-encodes what it parsed and checks it parses back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/agent_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t off = 0;
  ap_buf b = {0};
  while (off < size) {
    ap_header h;
    const uint8_t *p;
    long n = ap_frame_parse(data + off, size - off, AP_MAX_PAYLOAD, &h, &p);
    if (n <= 0) break; /* need more, or a violation: stop like a receiver */
    if (n < AP_HEADER_SIZE || (size_t)n > size - off) abort();
    (void)ap_type_name(h.type);
    size_t foff = 0;
    ap_field f;
    int r;
    ap_frame_begin(&b, h.type, h.channel);
    while ((r = ap_field_next(p, h.len, &foff, &f)) > 0) {
      uint32_t u;
      uint64_t v;
      char *s = NULL;
      if (ap_field_u32(&f, &u) == 0 && f.len != 4) abort();
      if (ap_field_u64(&f, &v) == 0 && f.len != 8) abort();
      if (ap_field_str(&f, &s) == 0) {
        if (strlen(s) != f.len) abort();
        free(s);
      }
      ap_put_bytes(&b, f.tag, f.val, f.len);
    }
    if (r == 0) {
      /* a well-formed field list re-encodes to the same bytes */
      if (ap_frame_end(&b) != 0) abort();
      ap_header h2;
      const uint8_t *p2;
      long n2 = ap_frame_parse(b.data, b.len, AP_MAX_PAYLOAD, &h2, &p2);
      if (n2 != n || h2.len != h.len || memcmp(p2, p, h.len) != 0) abort();
    }
    ap_field any;
    (void)ap_find(p, h.len, AP_T_PATH, &any);
    ap_buf_reset(&b);
    off += (size_t)n;
  }
  ap_buf_free(&b);
  return 0;
}

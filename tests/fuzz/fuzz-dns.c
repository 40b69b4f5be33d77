/* Fuzz target: the DNS message parser of the per-sandbox resolver
 * (src/egress/dns.c). Parses the input as a query and as a reply; builds a
 * reply to a parsed query and checks it parses back as a reply to the same
 * question. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "egress/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dns_question q, q2;
  if (dns_parse_query(data, size, &q) == 0) {
    if (q.end > size || strlen(q.name) > DNS_MAX_NAME) abort();
    uint8_t out[DNS_MAX_MSG];
    int n = dns_build_reply(data, &q, DNS_RCODE_REFUSED, out, sizeof(out));
    if (n <= 0) abort();
    uint8_t rcode = 0;
    if (dns_parse_reply(out, (size_t)n, &q2, &rcode, NULL, 0) != 0) abort();
    if (rcode != DNS_RCODE_REFUSED || strcmp(q.name, q2.name) || q.qtype != q2.qtype) abort();
  }
  dns_a a[DNS_MAX_ANSWERS];
  uint8_t rcode;
  int n = dns_parse_reply(data, size, &q, &rcode, a, DNS_MAX_ANSWERS);
  if (n > DNS_MAX_ANSWERS) abort();
  for (int i = 0; i < n; i++)
    if (a[i].ttl > 0x7fffffffu) abort();
  return 0;
}

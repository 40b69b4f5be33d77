/* DNS messages (RFC 1035), only what the per-sandbox resolver needs: read the
 * one question of a query, read the A answers of a reply, build a reply with
 * no answers (REFUSED, NODATA, SERVFAIL). Everything here comes from the
 * guest or the network: bounded, no allocation, never trusts a length. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define DNS_MAX_MSG 1232        /* what we accept and send over UDP */
#define DNS_MAX_NAME 253        /* dotted text, without the trailing dot */
#define DNS_MAX_ANSWERS 64      /* A records collected from one reply */

#define DNS_TYPE_A 1
#define DNS_TYPE_CNAME 5
#define DNS_TYPE_AAAA 28
#define DNS_CLASS_IN 1

#define DNS_RCODE_NOERROR 0
#define DNS_RCODE_FORMERR 1
#define DNS_RCODE_SERVFAIL 2
#define DNS_RCODE_NXDOMAIN 3
#define DNS_RCODE_REFUSED 5

typedef struct dns_question {
  uint16_t id;
  uint16_t flags;
  char name[DNS_MAX_NAME + 1]; /* lowercase, dotted, no trailing dot; "" = root */
  uint16_t qtype, qclass;
  size_t end;                  /* offset just past the question */
} dns_question;

typedef struct dns_a {
  uint8_t addr[4];
  uint32_t ttl;
} dns_a;

/* Parses the header and the single question of a query (QR=0, opcode 0,
 * QDCOUNT 1). Labels must be letters, digits, '-' or '_' (anything else, a
 * '.' inside a label, compression in a query, is rejected). 0 or -EINVAL. */
int dns_parse_query(const uint8_t *msg, size_t len, dns_question *q);

/* Parses a reply: header (QR=1), its single question into *q, then the
 * answer section; every IN A record goes into ret[] (at most max). Returns
 * the number of A records, or -EINVAL. Compression pointers are followed
 * (backwards only, bounded). *rcode gets the reply's RCODE. */
int dns_parse_reply(const uint8_t *msg, size_t len, dns_question *q, uint8_t *rcode,
                    dns_a *ret, size_t max);

/* Writes a reply to query (header id/RD copied, QR=1, RA=1, rcode, the
 * question copied verbatim, no records) into out. Returns its length, or
 * -ENOSPC. */
int dns_build_reply(const uint8_t *query, const dns_question *q, uint8_t rcode, uint8_t *out,
                    size_t cap);

/* "A", "AAAA", "TXT", ... or "TYPE<n>" into buf (>= 12 bytes). */
const char *dns_type_name(uint16_t t, char *buf, size_t size);

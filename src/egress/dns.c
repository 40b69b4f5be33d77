/* DNS message parsing for the per-sandbox resolver (dns.h). */
#include "egress/dns.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool label_char(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '_';
}

/* Reads a name at *off. With out != NULL the text is written (lowercase) and
 * the characters are checked; compression is allowed only when allow_ptr.
 * *off moves past the name in the message (not past pointer targets). */
static int read_name(const uint8_t *msg, size_t len, size_t *off, char *out, bool allow_ptr) {
  size_t pos = *off, outlen = 0;
  bool jumped = false;
  unsigned hops = 0;
  for (;;) {
    if (pos >= len) return -EINVAL;
    uint8_t l = msg[pos];
    if ((l & 0xc0) == 0xc0) {
      if (!allow_ptr || pos + 1 >= len || ++hops > 16) return -EINVAL;
      size_t target = (size_t)(l & 0x3f) << 8 | msg[pos + 1];
      if (target >= pos) return -EINVAL; /* backwards only: no loops */
      if (!jumped) *off = pos + 2;
      jumped = true;
      pos = target;
      continue;
    }
    if (l & 0xc0) return -EINVAL; /* 0x40/0x80: reserved label types */
    if (l == 0) {
      if (!jumped) *off = pos + 1;
      break;
    }
    if (pos + 1 + l > len) return -EINVAL;
    if (outlen + (outlen ? 1 : 0) + l > DNS_MAX_NAME) return -EINVAL;
    if (out) {
      if (outlen) out[outlen++] = '.';
      for (size_t i = 0; i < l; i++) {
        uint8_t c = msg[pos + 1 + i];
        if (!label_char(c)) return -EINVAL;
        out[outlen++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
      }
    } else {
      outlen += (outlen ? 1 : 0) + l;
    }
    pos += 1 + l;
  }
  if (out) out[outlen] = '\0';
  return 0;
}

static int parse_header_question(const uint8_t *msg, size_t len, dns_question *q, bool reply) {
  if (!msg || len < 12 || len > DNS_MAX_MSG) return -EINVAL;
  memset(q, 0, sizeof(*q));
  q->id = rd16(msg);
  q->flags = rd16(msg + 2);
  bool qr = q->flags & 0x8000;
  unsigned opcode = (q->flags >> 11) & 0xf;
  if (qr != reply || opcode != 0) return -EINVAL;
  if (rd16(msg + 4) != 1) return -EINVAL; /* exactly one question */
  size_t off = 12;
  if (read_name(msg, len, &off, q->name, reply) < 0) return -EINVAL;
  if (off + 4 > len) return -EINVAL;
  q->qtype = rd16(msg + off);
  q->qclass = rd16(msg + off + 2);
  q->end = off + 4;
  return 0;
}

int dns_parse_query(const uint8_t *msg, size_t len, dns_question *q) {
  if (parse_header_question(msg, len, q, false) < 0) return -EINVAL;
  if (rd16(msg + 6) != 0 || rd16(msg + 8) != 0) return -EINVAL; /* no answers in a query */
  return 0;
}

int dns_parse_reply(const uint8_t *msg, size_t len, dns_question *q, uint8_t *rcode,
                    dns_a *ret, size_t max) {
  if (parse_header_question(msg, len, q, true) < 0) return -EINVAL;
  if (rcode) *rcode = q->flags & 0xf;
  unsigned an = rd16(msg + 6);
  size_t off = q->end, n = 0;
  for (unsigned i = 0; i < an; i++) {
    if (read_name(msg, len, &off, NULL, true) < 0) return -EINVAL;
    if (off + 10 > len) return -EINVAL;
    uint16_t type = rd16(msg + off), cls = rd16(msg + off + 2);
    uint32_t ttl = rd32(msg + off + 4);
    uint16_t rdlen = rd16(msg + off + 8);
    off += 10;
    if (off + rdlen > len) return -EINVAL;
    if (type == DNS_TYPE_A && cls == DNS_CLASS_IN) {
      if (rdlen != 4) return -EINVAL;
      if (n < max && ret) {
        memcpy(ret[n].addr, msg + off, 4);
        ret[n].ttl = ttl > 0x7fffffffu ? 0 : ttl; /* RFC 2181: top bit set means 0 */
        n++;
      }
    }
    off += rdlen;
  }
  return (int)n;
}

int dns_build_reply(const uint8_t *query, const dns_question *q, uint8_t rcode, uint8_t *out,
                    size_t cap) {
  if (q->end < 12 || q->end > cap) return -ENOSPC;
  memcpy(out, query, q->end);
  uint16_t flags = 0x8000 | 0x0080 | (q->flags & 0x0100) | (rcode & 0xf); /* QR RA RD rcode */
  out[2] = (uint8_t)(flags >> 8);
  out[3] = (uint8_t)flags;
  out[4] = 0, out[5] = 1;              /* QDCOUNT */
  memset(out + 6, 0, 6);               /* AN, NS, AR */
  return (int)q->end;
}

const char *dns_type_name(uint16_t t, char *buf, size_t size) {
  switch (t) {
  case 1: return "A";
  case 2: return "NS";
  case 5: return "CNAME";
  case 6: return "SOA";
  case 12: return "PTR";
  case 15: return "MX";
  case 16: return "TXT";
  case 28: return "AAAA";
  case 33: return "SRV";
  case 64: return "SVCB";
  case 65: return "HTTPS";
  case 255: return "ANY";
  }
  snprintf(buf, size, "TYPE%u", t);
  return buf;
}

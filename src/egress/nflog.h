/* NFLOG: the packets the per-sandbox chains log before rejecting them, read
 * from a netlink socket (NETLINK_NETFILTER, NFULNL) so each rejected
 * connection becomes an audit event. Only one socket can bind a group per
 * host: CLEANROOM_EGRESS_NFLOG_GROUP picks another for a second daemon. */
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct egress_nflog_pkt {
  char prefix[65];      /* "cr <id> <reason> " */
  uint8_t saddr[4], daddr[4];
  uint8_t proto;        /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, ... */
  uint16_t dport;       /* 0 unless TCP/UDP */
} egress_nflog_pkt;

/* Opens, binds group and asks for the first 64 bytes of each packet. Returns
 * the fd or -errno. */
int egress_nflog_open(unsigned group);
/* Parses one netlink datagram; calls cb for each packet message. Returns the
 * number of packets or -EINVAL. Untrusted lengths are checked. */
int egress_nflog_parse(const uint8_t *buf, size_t len,
                       void (*cb)(void *ud, const egress_nflog_pkt *p), void *ud);

/* NFLOG over raw netlink (nflog.h). */
#include "egress/nflog.h"

#include <errno.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_cfg(int fd, unsigned group, uint8_t family, uint16_t attr_type, const void *attr,
                    uint16_t attr_len) {
  uint8_t buf[128] = {0};
  struct nlmsghdr *nh = (struct nlmsghdr *)buf;
  nh->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
  nh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  nh->nlmsg_seq = 1;
  struct nfgenmsg *g = (struct nfgenmsg *)NLMSG_DATA(nh);
  g->nfgen_family = family;
  g->version = NFNETLINK_V0;
  g->res_id = htons((uint16_t)group);
  struct nlattr *a = (struct nlattr *)((uint8_t *)g + NLMSG_ALIGN(sizeof(*g)));
  a->nla_type = attr_type;
  a->nla_len = (uint16_t)(NLA_HDRLEN + attr_len);
  memcpy((uint8_t *)a + NLA_HDRLEN, attr, attr_len);
  nh->nlmsg_len = (uint32_t)(NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(*g)) + NLA_ALIGN(a->nla_len));
  struct sockaddr_nl to = {.nl_family = AF_NETLINK};
  if (sendto(fd, buf, nh->nlmsg_len, 0, (struct sockaddr *)&to, sizeof(to)) < 0) return -errno;
  /* the ack */
  uint8_t rb[512];
  ssize_t n = recv(fd, rb, sizeof(rb), 0);
  if (n < 0) return -errno;
  struct nlmsghdr *rh = (struct nlmsghdr *)rb;
  if (n >= (ssize_t)(NLMSG_HDRLEN + sizeof(int)) && rh->nlmsg_type == NLMSG_ERROR) {
    int e = *(int *)NLMSG_DATA(rh);
    if (e < 0) return e;
  }
  return 0;
}

int egress_nflog_open(unsigned group) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return -errno;
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) goto fail;
  struct timeval tv = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  uint8_t cmd = NFULNL_CFG_CMD_BIND;
  int r = send_cfg(fd, group, AF_UNSPEC, NFULA_CFG_CMD, &cmd, sizeof(cmd));
  if (r < 0) {
    close(fd);
    return r;
  }
  struct nfulnl_msg_config_mode mode = {.copy_range = htonl(64), .copy_mode = NFULNL_COPY_PACKET};
  if ((r = send_cfg(fd, group, AF_UNSPEC, NFULA_CFG_MODE, &mode, sizeof(mode))) < 0) {
    close(fd);
    return r;
  }
  tv.tv_sec = 0;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
fail:
  r = -errno;
  close(fd);
  return r;
}

static void parse_payload(const uint8_t *p, size_t n, egress_nflog_pkt *pkt) {
  if (n < 20 || (p[0] >> 4) != 4) return;
  size_t ihl = (size_t)(p[0] & 0xf) * 4;
  if (ihl < 20 || ihl > n) return;
  pkt->proto = p[9];
  memcpy(pkt->saddr, p + 12, 4);
  memcpy(pkt->daddr, p + 16, 4);
  bool first_fragment = ((p[6] & 0x1f) << 8 | p[7]) == 0;
  if ((pkt->proto == IPPROTO_TCP || pkt->proto == IPPROTO_UDP) && first_fragment &&
      n >= ihl + 4)
    pkt->dport = (uint16_t)(p[ihl + 2] << 8 | p[ihl + 3]);
}

int egress_nflog_parse(const uint8_t *buf, size_t len,
                       void (*cb)(void *ud, const egress_nflog_pkt *p), void *ud) {
  int count = 0;
  size_t off = 0;
  while (off + NLMSG_HDRLEN <= len) {
    const struct nlmsghdr *nh = (const struct nlmsghdr *)(buf + off);
    size_t mlen = nh->nlmsg_len;
    if (mlen < NLMSG_HDRLEN || mlen > len - off) return -EINVAL;
    if (nh->nlmsg_type == ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)) {
      size_t aoff = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
      egress_nflog_pkt pkt;
      memset(&pkt, 0, sizeof(pkt));
      while (aoff + NLA_HDRLEN <= mlen) {
        const struct nlattr *a = (const struct nlattr *)((const uint8_t *)nh + aoff);
        size_t alen = a->nla_len;
        if (alen < NLA_HDRLEN || alen > mlen - aoff) return -EINVAL;
        const uint8_t *v = (const uint8_t *)a + NLA_HDRLEN;
        size_t vlen = alen - NLA_HDRLEN;
        switch (a->nla_type & NLA_TYPE_MASK) {
        case NFULA_PREFIX: {
          size_t k = vlen < sizeof(pkt.prefix) - 1 ? vlen : sizeof(pkt.prefix) - 1;
          memcpy(pkt.prefix, v, k);
          pkt.prefix[k] = '\0';
          break;
        }
        case NFULA_PAYLOAD: parse_payload(v, vlen, &pkt); break;
        }
        aoff += NLA_ALIGN(alen);
      }
      if (cb) cb(ud, &pkt);
      count++;
    }
    off += NLMSG_ALIGN(mlen);
  }
  return count;
}

/* ACTIVATE's network part, in two halves.
 *
 * agent_net_prepare (a template with a NIC, AP_T_NET_UP; also the first
 * configure of a VM that was not prepared): everything that does not depend
 * on the sandbox's address, done once before the template is saved: lo up,
 * the NIC found, IPv6 off on it, the NIC up (no address: frames go nowhere
 * until a clone's ACTIVATE), a netlink socket kept open, and /etc/resolv.conf
 * in the root made a bind mount of a file in the agent's own tmpfs (empty
 * until then). The agent's memory is part of the template: its clones start
 * with all of this done and remembered.
 *
 * agent_net_configure (every ACTIVATE with an address, so a clone or a fork
 * gets its own): one netlink message batch (the old address, if this VM had
 * one, removed; the address with its prefix; the default route) and the
 * nameserver line written into the tmpfs file. Under TCG every kernel path a
 * clone runs is translated afresh in its QEMU process: the address change
 * through SIOCSIFADDR + SIOCSIFNETMASK (which removes and re-adds it) and a
 * resolv.conf created on the overlay (overlayfs, ext4, jbd2) cost ~60-100 ms
 * of a clone's ACTIVATE; this path ~10 ms. Nothing here waits except the
 * NIC probe of a VM that was never prepared. No ip(8) in the guest: plain
 * netlink, the few structures defined here (musl has no linux/ headers). */
#include "agent.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ---- rtnetlink ABI (linux/netlink.h, linux/rtnetlink.h) */
struct nl_sockaddr {
  sa_family_t nl_family;
  unsigned short nl_pad;
  uint32_t nl_pid, nl_groups;
};
struct nl_hdr {
  uint32_t len;
  uint16_t type, flags;
  uint32_t seq, pid;
};
struct nl_err {
  int error;
  struct nl_hdr msg;
};
struct nl_ifaddr {
  uint8_t family, prefixlen, flags, scope;
  uint32_t index;
};
struct nl_rt {
  uint8_t family, dst_len, src_len, tos, table, protocol, scope, type;
  uint32_t flags;
};
struct nl_attr {
  uint16_t len, type;
};
#define NL_ROUTE 0
#define NL_ERROR 2
#define NL_F_REQUEST 0x1
#define NL_F_ACK 0x4
#define NL_F_REPLACE 0x100
#define NL_F_CREATE 0x400
#define NL_RTM_NEWADDR 20
#define NL_RTM_DELADDR 21
#define NL_RTM_NEWROUTE 24
#define NL_IFA_ADDRESS 1
#define NL_IFA_LOCAL 2
#define NL_RTA_OIF 4
#define NL_RTA_GATEWAY 5
#define NL_RT_TABLE_MAIN 254
#define NL_RTPROT_BOOT 3
#define NL_RTN_UNICAST 1
#define NL_ALIGN(n) (((n) + 3u) & ~3u)

/* the agent's own copy; /etc/resolv.conf in the root is a bind mount of it.
 * Always RESOLV_SIZE bytes (a padded comment line after the nameserver), so
 * the first ACTIVATE of a clone writes it through the mapping the template
 * left (a store into a page that is there: no kernel path at all). */
#define RESOLV_PRIVATE "/run/cleanroom/resolv.conf"
#define RESOLV_SIZE 64

static struct {
  int prepared;
  int nl;                /* NETLINK_ROUTE socket, kept open */
  int resolv;            /* RESOLV_PRIVATE, bound on the root's /etc/resolv.conf */
  char *resolv_map;      /* its RESOLV_SIZE bytes, MAP_SHARED */
  char nic[IFNAMSIZ];
  unsigned ifindex;
  struct in_addr addr;   /* the address this VM has now (a fork's source's) */
  unsigned prefix;
} net = {.nl = -1, .resolv = -1};

static int if_up(int s, const char *name) {
  struct ifreq ifr = {0};
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) return -errno;
  if (ifr.ifr_flags & IFF_UP) return 0;
  ifr.ifr_flags |= IFF_UP;
  return ioctl(s, SIOCSIFFLAGS, &ifr) < 0 ? -errno : 0;
}

/* The first interface that is not lo (virtio-net probes late: wait up to 3 s). */
static int find_nic(char *ret, size_t n) {
  for (int i = 0; i < 300; i++) {
    DIR *d = opendir("/sys/class/net");
    if (d) {
      struct dirent *e;
      while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "lo")) continue;
        snprintf(ret, n, "%.15s", e->d_name);
        closedir(d);
        return 0;
      }
      closedir(d);
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return -ENODEV;
}

static void ipv6_off(const char *nic) {
  char p[128];
  snprintf(p, sizeof(p), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", nic);
  int fd = open(p, O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t w = write(fd, "1\n", 2);
    (void)w;
    close(fd);
  }
}

/* "nameserver DNS\n" (none without dns) and a comment line padded to
 * RESOLV_SIZE bytes in all. */
static void resolv_text(char out[RESOLV_SIZE], const char *dns) {
  int n = dns ? snprintf(out, RESOLV_SIZE, "nameserver %.15s\n", dns) : 0;
  memset(out + n, ' ', RESOLV_SIZE - (size_t)n);
  out[n] = '#';
  out[RESOLV_SIZE - 1] = '\n';
}

/* /etc/resolv.conf in the root: a regular file of the overlay's upper layer
 * (whatever the image had there, a symlink included, is replaced; resolved
 * inside the root) with RESOLV_PRIVATE bound onto it. 0 or -errno. */
static int bind_resolv(char *msg, size_t msglen) {
  int fd = open(RESOLV_PRIVATE, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  char *map = MAP_FAILED;
  if (fd < 0 || ftruncate(fd, RESOLV_SIZE) < 0 ||
      (map = mmap(NULL, RESOLV_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
    int e = errno;
    snprintf(msg, msglen, "creating %s: %s", RESOLV_PRIVATE, strerror(e));
    if (fd >= 0) close(fd);
    return -e;
  }
  resolv_text(map, NULL); /* no resolver before ACTIVATE; the page is there now */
  int r = agent_mkdir_p_in(agent_root_fd(), "etc", 0755);
  int etc = r < 0 ? -1
                  : agent_openat2(agent_root_fd(), "etc", O_PATH | O_DIRECTORY | O_CLOEXEC, 0,
                                  AGENT_RESOLVE_IN_ROOT | AGENT_RESOLVE_NO_MAGICLINKS);
  if (etc < 0) {
    r = r < 0 ? r : -errno;
    snprintf(msg, msglen, "/etc in the root: %s", strerror(-r));
    close(fd);
    return r;
  }
  int file = -1, target = -1;
  if ((unlinkat(etc, "resolv.conf", 0) < 0 && errno != ENOENT) ||
      (file = openat(etc, "resolv.conf", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     0644)) < 0 ||
      (target = openat(etc, "resolv.conf", O_PATH | O_NOFOLLOW | O_CLOEXEC)) < 0) {
    r = -errno;
    snprintf(msg, msglen, "/etc/resolv.conf in the root: %s", strerror(errno));
    goto out;
  }
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", target);
  if (mount(RESOLV_PRIVATE, path, NULL, MS_BIND, NULL) < 0) {
    r = -errno;
    snprintf(msg, msglen, "binding /etc/resolv.conf: %s", strerror(errno));
    goto out;
  }
  net.resolv = fd; /* kept open and mapped: a clone only rewrites it */
  net.resolv_map = map;
  fd = -1;
  map = MAP_FAILED;
  r = 0;
out:
  if (map != MAP_FAILED) munmap(map, RESOLV_SIZE);
  if (file >= 0) close(file);
  if (target >= 0) close(target);
  if (fd >= 0) close(fd);
  close(etc);
  return r;
}

int agent_net_prepare(char *msg, size_t msglen) {
  if (net.prepared) return 0;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    snprintf(msg, msglen, "socket: %s", strerror(errno));
    return -errno;
  }
  int r;
  if_up(s, "lo");
  if ((r = find_nic(net.nic, sizeof(net.nic))) < 0) {
    snprintf(msg, msglen, "no network interface (virtio-net) in the guest");
    goto out;
  }
  if (!(net.ifindex = if_nametoindex(net.nic))) {
    r = -errno;
    snprintf(msg, msglen, "%s: %s", net.nic, strerror(errno));
    goto out;
  }
  ipv6_off(net.nic); /* IPv6 stays off: the host denies it */
  if ((r = if_up(s, net.nic)) < 0) {
    snprintf(msg, msglen, "bringing %s up: %s", net.nic, strerror(-r));
    goto out;
  }
  if (net.nl < 0) {
    net.nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NL_ROUTE);
    struct nl_sockaddr sa = {.nl_family = AF_NETLINK};
    struct timeval tv = {1, 0}; /* the kernel answers within sendto; never hang on it */
    if (net.nl < 0 || bind(net.nl, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        setsockopt(net.nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
      r = -errno;
      snprintf(msg, msglen, "netlink socket: %s", strerror(errno));
      if (net.nl >= 0) close(net.nl);
      net.nl = -1;
      goto out;
    }
  }
  if (agent_root_ready() && net.resolv < 0 && (r = bind_resolv(msg, msglen)) < 0) goto out;
  net.prepared = 1;
  r = 0;
out:
  close(s);
  return r;
}

/* ---- one netlink batch */

typedef struct {
  uint8_t b[512];
  size_t n;
  uint32_t last_seq;
} nl_batch;

static struct nl_hdr *nl_begin(nl_batch *q, uint16_t type, uint16_t flags, const void *body,
                               size_t len) {
  struct nl_hdr *h = (struct nl_hdr *)(q->b + q->n);
  memset(h, 0, sizeof(*h));
  h->type = type;
  h->flags = NL_F_REQUEST | NL_F_ACK | flags;
  h->seq = ++q->last_seq;
  memcpy(h + 1, body, len);
  h->len = (uint32_t)(sizeof(*h) + NL_ALIGN(len));
  return h;
}

static void nl_attr_put(struct nl_hdr *h, uint16_t type, const void *val, size_t len) {
  struct nl_attr *a = (struct nl_attr *)((uint8_t *)h + NL_ALIGN(h->len));
  a->type = type;
  a->len = (uint16_t)(sizeof(*a) + len);
  memcpy(a + 1, val, len);
  h->len = NL_ALIGN(h->len) + NL_ALIGN(a->len);
}

static void nl_end(nl_batch *q, struct nl_hdr *h) { q->n += NL_ALIGN(h->len); }

static void put_addr(nl_batch *q, uint16_t type, uint16_t flags, struct in_addr a,
                     unsigned prefix) {
  struct nl_ifaddr ifa = {.family = AF_INET, .prefixlen = (uint8_t)prefix, .index = net.ifindex};
  struct nl_hdr *h = nl_begin(q, type, flags, &ifa, sizeof(ifa));
  nl_attr_put(h, NL_IFA_LOCAL, &a, sizeof(a));
  nl_attr_put(h, NL_IFA_ADDRESS, &a, sizeof(a));
  nl_end(q, h);
}

/* Sends the batch; the error of each message, by sequence number (1-based),
 * in errs[]. 0, or -errno when the exchange itself failed. */
static int nl_exchange(nl_batch *q, int *errs) {
  struct nl_sockaddr to = {.nl_family = AF_NETLINK};
  if (sendto(net.nl, q->b, q->n, 0, (struct sockaddr *)&to, sizeof(to)) != (ssize_t)q->n)
    return -errno;
  uint32_t acked = 0;
  while (acked < q->last_seq) {
    union {
      struct nl_hdr h;
      uint8_t b[1024];
    } in;
    ssize_t got = recv(net.nl, &in, sizeof(in), 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    for (size_t off = 0; off + sizeof(struct nl_hdr) <= (size_t)got;) {
      struct nl_hdr *h = (struct nl_hdr *)(in.b + off);
      if (h->len < sizeof(*h) || off + h->len > (size_t)got) break;
      if (h->type == NL_ERROR && h->len >= sizeof(*h) + sizeof(struct nl_err) && h->seq >= 1 &&
          h->seq <= q->last_seq) {
        errs[h->seq - 1] = -((struct nl_err *)(h + 1))->error;
        acked++;
      }
      off += NL_ALIGN(h->len);
    }
  }
  return 0;
}

static int write_resolv(const char *dns, int fresh, char *msg, size_t msglen) {
  char buf[RESOLV_SIZE];
  resolv_text(buf, dns);
  if (net.resolv >= 0) {
    /* a clone's first address: the file is as the template left it (only
     * the agent ran there). Later (a fork) the guest may have truncated it:
     * a store beyond its end would fault, so write() then. */
    if (fresh) {
      memcpy(net.resolv_map, buf, RESOLV_SIZE);
      return 0;
    }
    errno = 0;
    if (pwrite(net.resolv, buf, RESOLV_SIZE, 0) != RESOLV_SIZE ||
        ftruncate(net.resolv, RESOLV_SIZE) < 0) {
      int e = errno ? errno : EIO;
      snprintf(msg, msglen, "writing %s: %s", RESOLV_PRIVATE, strerror(e));
      return -e;
    }
    return 0;
  }
  /* no root (an ACTIVATE without an image): the agent's own /etc */
  mkdir("/etc", 0755);
  unlink("/etc/resolv.conf");
  int fd = open("/etc/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {
    int e = errno;
    snprintf(msg, msglen, "writing /etc/resolv.conf: %s", strerror(e));
    return -e;
  }
  ssize_t w = write(fd, buf, RESOLV_SIZE);
  (void)w;
  close(fd);
  return 0;
}

int agent_net_configure(const char *cidr, const char *gateway, const char *dns, char *msg,
                        size_t msglen) {
  char addr[32];
  snprintf(addr, sizeof(addr), "%s", cidr);
  char *slash = strchr(addr, '/');
  unsigned prefix = 32;
  if (slash) {
    *slash = '\0';
    prefix = (unsigned)strtoul(slash + 1, NULL, 10);
  }
  struct in_addr a, gw;
  if (prefix < 1 || prefix > 32 || inet_pton(AF_INET, addr, &a) != 1 ||
      (gateway && *gateway && inet_pton(AF_INET, gateway, &gw) != 1)) {
    snprintf(msg, msglen, "bad network address %s / gateway %s", cidr, gateway ? gateway : "");
    return -EINVAL;
  }
  int r = agent_net_prepare(msg, msglen); /* done already in a template's clone */
  if (r < 0) return r;

  int fresh = !net.addr.s_addr; /* no address before: a template's clone */
  nl_batch q = {.n = 0};
  int errs[3] = {0};
  int had = net.addr.s_addr && (net.addr.s_addr != a.s_addr || net.prefix != prefix);
  /* a fork: the address it came with goes (and with it its routes) */
  if (had) put_addr(&q, NL_RTM_DELADDR, 0, net.addr, net.prefix);
  uint32_t addr_seq = q.last_seq + 1;
  put_addr(&q, NL_RTM_NEWADDR, NL_F_CREATE | NL_F_REPLACE, a, prefix);
  uint32_t route_seq = 0;
  if (gateway && *gateway) {
    struct nl_rt rt = {.family = AF_INET,
                       .table = NL_RT_TABLE_MAIN,
                       .protocol = NL_RTPROT_BOOT,
                       .type = NL_RTN_UNICAST};
    struct nl_hdr *h = nl_begin(&q, NL_RTM_NEWROUTE, NL_F_CREATE | NL_F_REPLACE, &rt, sizeof(rt));
    nl_attr_put(h, NL_RTA_GATEWAY, &gw, sizeof(gw));
    nl_attr_put(h, NL_RTA_OIF, &net.ifindex, sizeof(net.ifindex));
    nl_end(&q, h);
    route_seq = q.last_seq;
  }
  if ((r = nl_exchange(&q, errs)) < 0) {
    snprintf(msg, msglen, "netlink: %s", strerror(-r));
    return r;
  }
  /* the old address may be gone already (the guest is root): not an error */
  if ((r = errs[addr_seq - 1]) < 0) {
    snprintf(msg, msglen, "configuring %s with %s: %s", net.nic, cidr, strerror(-r));
    return r;
  }
  net.addr = a;
  net.prefix = prefix;
  if (route_seq && (r = errs[route_seq - 1]) < 0) {
    snprintf(msg, msglen, "default route via %s: %s", gateway, strerror(-r));
    return r;
  }
  if (dns && *dns && (r = write_resolv(dns, fresh, msg, msglen)) < 0) return r;
  return 0;
}

const char *agent_net_nic(void) { return net.nic[0] ? net.nic : "-"; }

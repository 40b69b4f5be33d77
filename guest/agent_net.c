/* ACTIVATE's network part: the guest's NIC address, default route and
 * resolv.conf, from fields the host sends (AP_T_NET_*). Runs at every
 * ACTIVATE, so a clone or fork restored from a snapshot gets its own
 * address. Plain ioctls: the guest has no ip(8). */
#include "agent.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int if_up(int s, const char *name) {
  struct ifreq ifr = {0};
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) return -errno;
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

static int set_addr(int s, const char *nic, unsigned long req, struct in_addr a) {
  struct ifreq ifr = {0};
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", nic);
  struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
  sin->sin_family = AF_INET;
  sin->sin_addr = a;
  return ioctl(s, req, &ifr) < 0 ? -errno : 0;
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

int agent_net_prepare(char *msg, size_t msglen) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    snprintf(msg, msglen, "socket: %s", strerror(errno));
    return -errno;
  }
  if_up(s, "lo");
  char nic[IFNAMSIZ];
  int r = find_nic(nic, sizeof(nic));
  if (r < 0) {
    snprintf(msg, msglen, "no network interface (virtio-net) in the guest");
  } else {
    ipv6_off(nic);
    if ((r = if_up(s, nic)) < 0) snprintf(msg, msglen, "bringing %s up: %s", nic, strerror(-r));
  }
  close(s);
  if (r == 0) agent_log("activate: %s up (no address yet)", nic);
  return r;
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
  struct in_addr a, gw, mask;
  if (prefix < 1 || prefix > 32 || inet_pton(AF_INET, addr, &a) != 1 ||
      (gateway && *gateway && inet_pton(AF_INET, gateway, &gw) != 1)) {
    snprintf(msg, msglen, "bad network address %s / gateway %s", cidr, gateway ? gateway : "");
    return -EINVAL;
  }
  mask.s_addr = htonl(~0u << (32 - prefix));
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    snprintf(msg, msglen, "socket: %s", strerror(errno));
    return -errno;
  }
  if_up(s, "lo");
  char nic[IFNAMSIZ];
  int r;
  if ((r = find_nic(nic, sizeof(nic))) < 0) {
    snprintf(msg, msglen, "no network interface (virtio-net) in the guest");
    goto out;
  }
  /* IPv6 stays off: the host denies it */
  ipv6_off(nic);
  if ((r = set_addr(s, nic, SIOCSIFADDR, a)) < 0 ||
      (r = set_addr(s, nic, SIOCSIFNETMASK, mask)) < 0 || (r = if_up(s, nic)) < 0) {
    snprintf(msg, msglen, "configuring %s with %s: %s", nic, cidr, strerror(-r));
    goto out;
  }
  if (gateway && *gateway) {
    struct rtentry rt = {0};
    struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst;
    struct sockaddr_in *g = (struct sockaddr_in *)&rt.rt_gateway;
    struct sockaddr_in *m = (struct sockaddr_in *)&rt.rt_genmask;
    dst->sin_family = g->sin_family = m->sin_family = AF_INET;
    g->sin_addr = gw;
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    rt.rt_dev = nic;
    if (ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST) {
      r = -errno;
      snprintf(msg, msglen, "default route via %s: %s", gateway, strerror(errno));
      goto out;
    }
  }
  if (dns && *dns) {
    char path[256];
    snprintf(path, sizeof(path), "%s/etc", agent_root_ready() ? AGENT_ROOT : "");
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/etc/resolv.conf", agent_root_ready() ? AGENT_ROOT : "");
    unlink(path); /* a symlink in the image must not redirect the write */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
      r = -errno;
      snprintf(msg, msglen, "writing %s: %s", path, strerror(errno));
      goto out;
    }
    char buf[128];
    int n = snprintf(buf, sizeof(buf), "nameserver %s\n", dns);
    ssize_t w = write(fd, buf, (size_t)n);
    (void)w;
    close(fd);
  }
  agent_log("activate: network %s on %s, gateway %s", cidr, nic, gateway ? gateway : "-");
  r = 0;
out:
  close(s);
  return r;
}

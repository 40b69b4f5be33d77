/* TAP devices (netif.h): ioctls on /dev/net/tun and an AF_INET socket. */
#include "egress/netif.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_file(const char *path, const char *s) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = write(fd, s, strlen(s));
  int r = n < 0 ? -errno : 0;
  close(fd);
  return r;
}

#define IP_FORWARD "/proc/sys/net/ipv4/ip_forward"
#define FORWARD_LOCK "/run/cleanroom-egress.lock"

int egress_forwarding_lock(void) {
  int fd = open(FORWARD_LOCK, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return -errno;
  if (flock(fd, LOCK_EX) < 0) {
    int r = -errno;
    close(fd);
    return r;
  }
  return fd;
}

static int record_path(char *buf, size_t n) {
  struct stat st;
  if (stat("/proc/self/ns/net", &st) < 0) return -errno;
  snprintf(buf, n, "/run/cleanroom-egress-ip_forward.%llu", (unsigned long long)st.st_ino);
  return 0;
}

int egress_forwarding_on(void) {
  char cur[8] = "";
  int fd = open(IP_FORWARD, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = read(fd, cur, sizeof(cur) - 1);
  close(fd);
  if (n > 0 && cur[0] == '1') return 0; /* on already: not ours to turn off */
  char rec[96];
  int r = record_path(rec, sizeof(rec));
  if (r < 0) return r;
  /* the record before the switch: a crash in between leaves a record of
   * an off switch, and turning it off is then harmless */
  fd = open(rec, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return -errno;
  r = write(fd, "0\n", 2) == 2 ? 0 : -EIO;
  close(fd);
  if (r < 0) return r;
  return write_file(IP_FORWARD, "1\n");
}

int egress_forwarding_restore(void) {
  char rec[96];
  int r = record_path(rec, sizeof(rec));
  if (r < 0) return r;
  if (access(rec, F_OK) < 0) return 0;
  if ((r = write_file(IP_FORWARD, "0\n")) < 0) return r;
  unlink(rec);
  return 1;
}

int egress_if_exists(const char *name) { return if_nametoindex(name) > 0; }

static int tun_open(const char *name, int *ret) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct ifreq ifr = {0};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int r = -errno;
    close(fd);
    return r;
  }
  *ret = fd;
  return 0;
}

int egress_tap_create(const char *name, const uint8_t host[4], unsigned prefix, cr_error **err) {
  if (strlen(name) >= IFNAMSIZ)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "interface name %s too long", name);
  int fd = -1, r;
  /* a TAP that exists (a re-attach after a daemon restart: QEMU holds it
   * open, so TUNSETIFF would fail with EBUSY) only gets its address again */
  if (!egress_if_exists(name)) {
    if ((r = tun_open(name, &fd)) < 0)
      return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, -r, "creating TAP %s (/dev/net/tun)",
                          name);
    if (ioctl(fd, TUNSETPERSIST, 1) < 0) {
      r = -errno;
      close(fd);
      return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, -r, "making TAP %s persistent", name);
    }
    close(fd);
  }
  char path[128];
  snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
  write_file(path, "1\n"); /* absent when the kernel has no IPv6: nothing to disable */
  _cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, errno, "socket");
  struct ifreq ifr = {0};
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
  sin->sin_family = AF_INET;
  memcpy(&sin->sin_addr, host, 4);
  if (ioctl(s, SIOCSIFADDR, &ifr) < 0 && errno != EEXIST)
    goto fail;
  memset(&ifr.ifr_addr, 0, sizeof(ifr.ifr_addr));
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = htonl(prefix ? ~0u << (32 - prefix) : 0);
  if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0) goto fail;
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) goto fail;
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) goto fail;
  return 0;
fail:
  r = errno;
  egress_tap_delete(name);
  return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, r, "configuring TAP %s", name);
}

/* RTM_DELLINK: works also while QEMU still holds the TAP open (a
 * TUNSETPERSIST 0 would need TUNSETIFF, which fails with EBUSY then). */
int egress_tap_delete(const char *name) {
  unsigned idx = if_nametoindex(name);
  if (!idx) return 0;
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return -errno;
  struct {
    struct nlmsghdr nh;
    struct ifinfomsg ifi;
  } req = {0};
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
  req.nh.nlmsg_type = RTM_DELLINK;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  req.nh.nlmsg_seq = 1;
  req.ifi.ifi_family = AF_UNSPEC;
  req.ifi.ifi_index = (int)idx;
  struct sockaddr_nl to = {.nl_family = AF_NETLINK};
  int r = 0;
  if (sendto(fd, &req, req.nh.nlmsg_len, 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
    r = -errno;
  } else {
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    uint8_t buf[512];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    if (n < 0) r = -errno;
    else if (n >= (ssize_t)NLMSG_LENGTH(sizeof(int)) && h->nlmsg_type == NLMSG_ERROR)
      r = *(int *)NLMSG_DATA(h);
  }
  close(fd);
  return r == -ENODEV ? 0 : r;
}

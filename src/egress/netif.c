/* TAP devices (netif.h): ioctls on /dev/net/tun and an AF_INET socket. */
#include "egress/netif.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

static int write_file(const char *path, const char *s) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = write(fd, s, strlen(s));
  int r = n < 0 ? -errno : 0;
  close(fd);
  return r;
}

int egress_enable_forwarding(void) { return write_file("/proc/sys/net/ipv4/ip_forward", "1\n"); }

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
  int fd, r;
  if ((r = tun_open(name, &fd)) < 0)
    return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, -r, "creating TAP %s (/dev/net/tun)", name);
  if (ioctl(fd, TUNSETPERSIST, 1) < 0) {
    r = -errno;
    close(fd);
    return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, -r, "making TAP %s persistent", name);
  }
  close(fd);
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
  if (ioctl(s, SIOCSIFADDR, &ifr) < 0)
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

int egress_tap_delete(const char *name) {
  if (!egress_if_exists(name)) return 0;
  int fd, r;
  if ((r = tun_open(name, &fd)) < 0) return r;
  r = ioctl(fd, TUNSETPERSIST, 0) < 0 ? -errno : 0;
  close(fd);
  return r;
}

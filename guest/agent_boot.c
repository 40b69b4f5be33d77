/* cleanroom-agent: PID-1 set-up (mounts, loopback, modules, the port) and power-off. */
#include "agent_loop.h"
#include "util/reasons.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- boot */

void agent_mount_basics(void) {
  mkdir("/dev", 0755);
  mkdir("/proc", 0555);
  mkdir("/sys", 0555);
  if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") < 0 &&
      errno != EBUSY)
    agent_log("mount /dev: %s", strerror(errno));
  agent_console_fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
  /* make sure fds 0-2 exist so pipes never land on them */
  for (int fd = 0; fd < 3; fd++)
    if (fcntl(fd, F_GETFD) < 0) {
      int t = open("/dev/null", O_RDWR | O_NOCTTY);
      if (t >= 0 && t != fd) {
        dup2(t, fd);
        close(t);
      }
    }
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    agent_log("mount /proc: %s", strerror(errno));
  if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    agent_log("mount /sys: %s", strerror(errno));
  mkdir("/run", 0755);
  mkdir("/tmp", 01777);
  if (mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
    agent_log("mount /run: %s", strerror(errno));
}

/* Brings up the loopback interface (the kernel then adds 127.0.0.1/8):
 * builds and tests inside the sandbox expect localhost to work. */
void agent_loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) agent_log("lo up: %s", strerror(errno));
  }
  close(s);
}

void agent_load_modules(void) {
  FILE *f = fopen("/modules.order", "re");
  if (!f) {
    agent_log("no /modules.order: %s", strerror(errno));
    return;
  }
  char line[256];
  int loaded = 0, failed = 0;
  while (fgets(line, sizeof(line), f)) {
    line[strcspn(line, "\r\n")] = '\0';
    if (!line[0] || line[0] == '#' || strchr(line, '/')) continue;
    char path[300];
    snprintf(path, sizeof(path), "/lib/modules/%s", line);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      agent_log("module %s: %s", line, strerror(errno));
      failed++;
      continue;
    }
    if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST) {
      agent_log("finit_module %s: %s", line, strerror(errno));
      failed++;
    } else {
      loaded++;
    }
    close(fd);
  }
  fclose(f);
  agent_log("modules: %d loaded, %d failed", loaded, failed);
}

int agent_find_port(void) {
  /* bounded wait: probing is asynchronous, devtmpfs creates the node */
  for (int i = 0; i < 1000; i++) { /* 10 s */
    DIR *d = opendir("/sys/class/virtio-ports");
    if (d) {
      struct dirent *e;
      while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[300], name[64];
        snprintf(p, sizeof(p), "/sys/class/virtio-ports/%s/name", e->d_name);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t r = read(fd, name, sizeof(name) - 1);
        close(fd);
        if (r <= 0) continue;
        name[r] = '\0';
        name[strcspn(name, "\n")] = '\0';
        if (strcmp(name, AP_PORT_NAME) != 0) continue;
        snprintf(agent_port_path, sizeof(agent_port_path), "/dev/%.100s", e->d_name);
        int pfd = open(agent_port_path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (pfd >= 0) {
          closedir(d);
          return pfd;
        }
      }
      closedir(d);
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return -1;
}

void agent_power_off(void) {
  sync();
  if (getpid() != 1) {
    /* run by hand outside a VM: never power off the machine */
    agent_log("not PID 1: exiting instead of powering off");
    exit(1);
  }
  reboot(RB_POWER_OFF);
  for (;;) pause();
}

void agent_reap_children(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    agent_child_reaped(pid, status);
  }
}

void agent_drain_signals(void) {
  struct signalfd_siginfo si[8];
  while (read(agent_sig_fd, si, sizeof(si)) > 0) {
  }
}

/* ACTIVATE: clock, entropy, hostname, and (once) the overlay root. */
#include "agent.h"
#include "agent_loop.h"
#include "util/reasons.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int root_fd = -1;
static int root_mounted;

int agent_root_ready(void) { return root_mounted; }

int agent_root_fd(void) {
  if (root_fd < 0) root_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  return root_fd;
}

/* /dev/urandom stays open from the first ACTIVATE, with or without a seed
 * (a template's ACTIVATE has none: it is opened there, before the
 * template's state is saved, so no clone opens it): in a fresh clone under
 * TCG its open and close were ~10 ms of the ~12 ms the seeding took,
 * against ~1 ms for the ioctls. */
static int urandom_fd = -1;

static void urandom_open(void) {
  if (urandom_fd < 0) urandom_fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
}

static void seed_entropy(const uint8_t *seed, size_t n) {
  if (urandom_fd < 0) {
    agent_log("open /dev/urandom: %s", strerror(errno));
    return;
  }
  if (n > 512) n = 512;
  struct {
    int entropy_count;
    int buf_size;
    uint8_t buf[512];
  } info;
  info.entropy_count = (int)n * 8;
  info.buf_size = (int)n;
  memcpy(info.buf, seed, n);
  /* mixes the bytes into the input pool and credits them (a write() of
   * the same bytes before it mixed them once more, for ~0.8 ms) */
  if (ioctl(urandom_fd, AGENT_RNDADDENTROPY, &info) < 0)
    agent_log("RNDADDENTROPY: %s", strerror(errno));
  /* the clone's CRNG leaves the template's state now, not at its next
   * scheduled reseed */
  if (ioctl(urandom_fd, AGENT_RNDRESEEDCRNG) < 0)
    agent_log("RNDRESEEDCRNG: %s", strerror(errno));
  explicit_bzero(&info, sizeof(info));
}

/* "serial:NAME" -> /dev/<disk> whose /sys/block/<disk>/serial is NAME. */
static int resolve_dev(const char *spec, char *ret, size_t retlen) {
  if (strncmp(spec, "serial:", 7) != 0) {
    if (strncmp(spec, "/dev/", 5) != 0 || strstr(spec, "..")) return -EINVAL;
    snprintf(ret, retlen, "%s", spec);
    return 0;
  }
  const char *want = spec + 7;
  for (int i = 0; i < 300; i++) { /* up to 3 s for late probes */
    DIR *d = opendir("/sys/block");
    if (d) {
      struct dirent *e;
      while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[300], s[128];
        snprintf(p, sizeof(p), "/sys/block/%s/serial", e->d_name);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t r = read(fd, s, sizeof(s) - 1);
        close(fd);
        if (r <= 0) continue;
        s[r] = '\0';
        s[strcspn(s, "\n")] = '\0';
        if (strcmp(s, want) == 0) {
          snprintf(ret, retlen, "/dev/%.200s", e->d_name);
          closedir(d);
          /* the node appears in devtmpfs shortly after the disk */
          for (int j = 0; j < 200 && access(ret, F_OK) < 0; j++) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
          }
          return 0;
        }
      }
      closedir(d);
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return -ENODEV;
}

static int mkdir_p(const char *path, mode_t mode) {
  char buf[512];
  snprintf(buf, sizeof(buf), "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, mode) < 0 && errno != EEXIST) return -errno;
    *p = '/';
  }
  if (mkdir(buf, mode) < 0 && errno != EEXIST) return -errno;
  return 0;
}

struct inner_mount {
  const char *src, *dir, *type;
  unsigned long flags;
  const char *data;
  mode_t mode;
};

static const struct inner_mount inner[] = {
    {"proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555},
    {"sysfs", "sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555},
    {"devtmpfs", "dev", "devtmpfs", MS_NOSUID, "mode=0755", 0755},
    {"devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
     "newinstance,gid=5,mode=0620,ptmxmode=0666", 0755},
    {"tmpfs", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777},
    {"tmpfs", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777},
    {"tmpfs", "run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", 0755},
};

/* Mounts image + scratch + overlay + the inner filesystems. 0 or -errno
 * with a message. */
static int mount_root(const char *image, const char *scratch, char *msg,
                      size_t msglen) {
  char dev[256];
  int r;
  if ((r = resolve_dev(image, dev, sizeof(dev))) < 0) {
    snprintf(msg, msglen, "image device %s not found", image);
    return r;
  }
  mkdir_p(AGENT_IMAGE_MNT, 0755);
  mkdir_p(AGENT_SCRATCH_MNT, 0755);
  mkdir_p(AGENT_ROOT, 0755);
  if (mount(dev, AGENT_IMAGE_MNT, "ext4", MS_RDONLY, "noload") < 0 &&
      mount(dev, AGENT_IMAGE_MNT, "ext4", MS_RDONLY, NULL) < 0) {
    r = -errno;
    snprintf(msg, msglen, "mount image %s: %s", dev, strerror(errno));
    return r;
  }
  if (scratch && *scratch) {
    if ((r = resolve_dev(scratch, dev, sizeof(dev))) < 0) {
      snprintf(msg, msglen, "scratch device %s not found", scratch);
      goto fail_image;
    }
    if (mount(dev, AGENT_SCRATCH_MNT, "ext4", MS_NOATIME, NULL) < 0) {
      r = -errno;
      snprintf(msg, msglen, "mount scratch %s: %s", dev, strerror(errno));
      goto fail_image;
    }
  } else if (mount("tmpfs", AGENT_SCRATCH_MNT, "tmpfs", 0, "mode=0755") < 0) {
    r = -errno;
    snprintf(msg, msglen, "mount scratch tmpfs: %s", strerror(errno));
    goto fail_image;
  }
  mkdir(AGENT_SCRATCH_MNT "/upper", 0755);
  mkdir(AGENT_SCRATCH_MNT "/work", 0755);
  if (mount("overlay", AGENT_ROOT, "overlay", 0,
            "lowerdir=" AGENT_IMAGE_MNT ",upperdir=" AGENT_SCRATCH_MNT
            "/upper,workdir=" AGENT_SCRATCH_MNT "/work") < 0) {
    r = -errno;
    snprintf(msg, msglen, "mount overlay: %s", strerror(errno));
    umount2(AGENT_SCRATCH_MNT, MNT_DETACH);
    goto fail_image;
  }
  for (size_t i = 0; i < sizeof(inner) / sizeof(inner[0]); i++) {
    char p[300];
    snprintf(p, sizeof(p), AGENT_ROOT "/%s", inner[i].dir);
    mkdir(p, inner[i].mode);
    if (mount(inner[i].src, p, inner[i].type, inner[i].flags, inner[i].data) < 0) {
      if (strcmp(inner[i].type, "devtmpfs") == 0 &&
          mount("/dev", p, NULL, MS_BIND | MS_REC, NULL) == 0)
        continue;
      agent_log("mount %s: %s", p, strerror(errno)); /* not fatal */
    }
  }
  char p[300];
  snprintf(p, sizeof(p), AGENT_ROOT "/dev/ptmx");
  if (access(p, F_OK) < 0) symlink("pts/ptmx", p);
  return 0;
fail_image:
  umount2(AGENT_IMAGE_MNT, MNT_DETACH);
  return r;
}

void agent_activate(const uint8_t *p, size_t n) {
  uint64_t t = 0;
  char *hostname = NULL, *image = NULL, *scratch = NULL;
  char *net_addr = NULL, *net_gw = NULL, *net_dns = NULL;
  uint32_t net_up = 0;
  ap_field f;
  int r;
  if ((r = agent_get_u64(p, n, AP_T_TIME_NS, &t)) < 0 ||
      (r = agent_get_str(p, n, AP_T_HOSTNAME, &hostname)) < 0 ||
      (r = agent_get_str(p, n, AP_T_IMAGE_DEV, &image)) < 0 ||
      (r = agent_get_str(p, n, AP_T_SCRATCH_DEV, &scratch)) < 0 ||
      (r = agent_get_str(p, n, AP_T_NET_ADDR, &net_addr)) < 0 ||
      (r = agent_get_str(p, n, AP_T_NET_GATEWAY, &net_gw)) < 0 ||
      (r = agent_get_str(p, n, AP_T_NET_DNS, &net_dns)) < 0 ||
      (r = agent_get_u32(p, n, AP_T_NET_UP, &net_up)) < 0) {
    agent_send_error(0, CR_E_INVALID_ARGUMENT, 0, "activate: malformed fields");
    goto out;
  }
  if (t) {
    struct timespec ts = {(time_t)(t / 1000000000u), (long)(t % 1000000000u)};
    if (clock_settime(CLOCK_REALTIME, &ts) < 0)
      agent_log("clock_settime: %s", strerror(errno));
  }
  urandom_open(); /* also a template's (no seed): its clones find it open */
  if (ap_find(p, n, AP_T_SEED, &f) > 0 && f.len) seed_entropy(f.val, f.len);
  if (hostname && *hostname) {
    if (sethostname(hostname, strnlen(hostname, 64)) < 0)
      agent_log("sethostname: %s", strerror(errno));
  }
  if (image && *image && !root_mounted) {
    char msg[512];
    r = mount_root(image, scratch, msg, sizeof(msg));
    if (r < 0) {
      agent_log("activate: %s", msg);
      agent_send_error(0, CR_E_FILE_ERROR, -r, "activate: %s", msg);
      goto out;
    }
    root_mounted = 1;
    if (root_fd >= 0) close(root_fd);
    root_fd = open(AGENT_ROOT, O_PATH | O_DIRECTORY | O_CLOEXEC);
    agent_log("activate: root mounted (image %s, scratch %s)", image,
              scratch && *scratch ? scratch : "tmpfs");
  }
  if (net_up && !(net_addr && *net_addr)) {
    /* a template: its clones find the NIC up (the slow part under TCG) */
    char msg[256];
    if (agent_net_prepare(msg, sizeof(msg)) < 0) agent_log("activate: %s", msg);
    else agent_log("activate: %s up (no address yet)", agent_net_nic());
  }
  if (net_addr && *net_addr) {
    char msg[256];
    r = agent_net_configure(net_addr, net_gw, net_dns, msg, sizeof(msg));
    if (r < 0) {
      agent_log("activate: %s", msg);
      agent_send_error(0, CR_E_RUNTIME_LAUNCH_FAILED, -r, "activate: %s", msg);
      goto out;
    }
  }
  agent_send_ok(0);
  /* No console line on success: one through the emulated UART costs ~5-10
   * ms of a fresh clone's vCPU under TCG (guest timestamps around it), and
   * it came before the answer (agent_send_ok only queues; the loop writes
   * it later) and before the first command. The address is in the host's
   * egress attach event. */
  agent_out_flush();
out:
  free(net_addr);
  free(net_gw);
  free(net_dns);
  free(hostname);
  free(image);
  free(scratch);
}

/* ---------------------------------------------------------------- MOUNT */

/* Stats every entry below dfd (closes it): the inodes of a disk the guest
 * did not write are instantiated once, ~0.2 ms each under TCG. */
static void warm_walk(int dfd, int depth) {
  DIR *d = fdopendir(dfd);
  if (!d) {
    close(dfd);
    return;
  }
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
    if (S_ISDIR(st.st_mode) && depth < 64) {
      int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub >= 0) warm_walk(sub, depth + 1);
    }
  }
  closedir(d);
}

/* MOUNT{IMAGE_DEV, PATH}: the workspace disk (an ext4 the host built with
 * the tree already in it) mounted read-write at PATH inside the root. The
 * host wrote the disk after the guest probed it: the probe's cached blocks
 * are dropped first (BLKFLSBUF). */
void agent_mount(uint32_t ch, const uint8_t *p, size_t n) {
  char *spec = NULL, *path = NULL;
  char dev[256];
  int r, fd = -1, dfd = -1;
  if (agent_get_str(p, n, AP_T_IMAGE_DEV, &spec) <= 0 ||
      agent_get_str(p, n, AP_T_PATH, &path) <= 0 || path[0] != '/' || !path[1] ||
      strlen(path) >= 1024) {
    agent_send_error(ch, CR_E_INVALID_ARGUMENT, 0, "mount: missing or bad IMAGE_DEV/PATH");
    goto out;
  }
  if ((r = resolve_dev(spec, dev, sizeof(dev))) < 0) {
    agent_send_error(ch, CR_E_FILE_NOT_FOUND, -r, "mount: device %s not found", spec);
    goto out;
  }
  fd = open(dev, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ioctl(fd, AGENT_BLKFLSBUF, 0) < 0) {
    int e = errno;
    agent_send_error(ch, CR_E_FILE_ERROR, e, "mount: %s: %s", dev, strerror(e));
    goto out;
  }
  if ((r = agent_mkdir_p_in(agent_root_fd(), path, 0755)) < 0) {
    agent_send_error(ch, CR_E_FILE_ERROR, -r, "mount: creating %s: %s", path, strerror(-r));
    goto out;
  }
  /* resolved inside the root (no escape through a symlink the guest made),
   * mounted on the resolved directory through its /proc/self/fd link */
  dfd = agent_openat2(agent_root_fd(), path, O_PATH | O_DIRECTORY | O_CLOEXEC, 0,
                      AGENT_RESOLVE_IN_ROOT | AGENT_RESOLVE_NO_MAGICLINKS);
  if (dfd < 0) {
    int e = errno;
    agent_send_error(ch, CR_E_FILE_ERROR, e, "mount: %s: %s", path, strerror(e));
    goto out;
  }
  char target[64];
  snprintf(target, sizeof(target), "/proc/self/fd/%d", dfd);
  /* noinit_itable: no background zeroing of inode tables (the host left
   * them lazy; zeroing them under TCG costs CPU and fills the sparse file) */
  if (mount(dev, target, "ext4", MS_NOATIME, "noinit_itable") < 0) {
    int e = errno;
    agent_send_error(ch, CR_E_FILE_ERROR, e, "mount %s on %s: %s", dev, path, strerror(e));
    goto out;
  }
  int wfd = agent_openat2(agent_root_fd(), path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0,
                          AGENT_RESOLVE_IN_ROOT | AGENT_RESOLVE_NO_MAGICLINKS);
  if (wfd >= 0) {
    unlinkat(wfd, "lost+found", AT_REMOVEDIR); /* mke2fs made it; empty */
    /* The first LIST (diff) would instantiate every inode: 1.4-2.4 s for
     * 10k files under TCG. A child at nice 19 does it now, in the time
     * the guest is idle (the agent reaps it like any child). */
    pid_t pid = fork();
    if (pid == 0) {
      agent_exec_drop_spares(); /* a later exec's EOF must not wait for us */
      setpriority(PRIO_PROCESS, 0, 19);
      warm_walk(wfd, 0);
      _exit(0);
    }
    close(wfd);
  }
  agent_send_ok(ch);
out:
  if (fd >= 0) close(fd);
  if (dfd >= 0) close(dfd);
  free(spec);
  free(path);
}

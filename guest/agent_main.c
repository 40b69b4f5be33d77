/* cleanroom-agent main: PID 1 setup, module loading, the agent port and the
 * single-threaded poll() loop that serves the protocol. */
#include "agent.h"
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

static int console_fd = -1;
static int port_fd = -1;
static int sig_fd = -1;
static char port_path[128];

/* input from the host */
static uint8_t *in_buf;
static size_t in_len;
static const size_t in_cap = AP_HEADER_SIZE + AP_MAX_PAYLOAD + 65536;
/* output to the host */
static ap_buf out;
static size_t out_off;
static int draining;      /* protocol violation: discard input until EOF */
static int host_present;  /* 0: port reported HUP without data */
static int shutdown_requested;

static agent_chan *chans[AGENT_MAX_CHANNELS];
static size_t n_chans;

/* ---------------------------------------------------------------- log */

void agent_log(const char *fmt, ...) {
  char buf[512];
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  int k = snprintf(buf, sizeof(buf), "[%5ld.%03ld] cleanroom-agent: ",
                   (long)ts.tv_sec, ts.tv_nsec / 1000000);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(buf + k, sizeof(buf) - (size_t)k - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)k + (m < 0 ? 0 : MINZ((size_t)m, sizeof(buf) - (size_t)k - 2));
  buf[len++] = '\n';
  int fd = console_fd >= 0 ? console_fd : 2;
  ssize_t w = write(fd, buf, len);
  (void)w;
}

int agent_openat2(int dirfd, const char *path, int flags, mode_t mode,
                  uint64_t resolve) {
  struct agent_open_how how = {
      .flags = (uint64_t)(unsigned)(flags | O_CLOEXEC),
      .mode = mode,
      .resolve = resolve};
  return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

/* ---------------------------------------------------------------- output */

ap_buf *agent_out(void) { return &out; }
size_t agent_out_pending(void) { return out.len - out_off; }

void agent_send_raw(uint16_t type, uint32_t ch, const void *data, size_t n) {
  ap_put_raw_frame(&out, type, ch, data, n);
}

void agent_send_ok(uint32_t ch) {
  ap_frame_begin(&out, AP_OK, ch);
  ap_frame_end(&out);
}

void agent_send_error(uint32_t ch, const char *reason, int errnum,
                      const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  ap_frame_begin(&out, AP_ERROR, ch);
  ap_put_str(&out, AP_T_REASON, reason);
  if (errnum > 0) ap_put_u32(&out, AP_T_ERRNO, (uint32_t)errnum);
  ap_put_str(&out, AP_T_MESSAGE, msg);
  ap_frame_end(&out);
}

static void out_flush(void) {
  while (out_off < out.len) {
    ssize_t w = write(port_fd, out.data + out_off, out.len - out_off);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) { /* host gone: the EOF path resets */
        out_off = out.len;
      }
      break;
    }
    out_off += (size_t)w;
  }
  if (out_off == out.len) {
    ap_buf_reset(&out);
    out_off = 0;
    if (out.cap > (4u << 20)) ap_buf_free(&out); /* give big buffers back */
  } else if (out_off > (1u << 20) && out_off > out.len / 2) {
    memmove(out.data, out.data + out_off, out.len - out_off);
    out.len -= out_off;
    out_off = 0;
  }
  if (out.err) { /* -ENOMEM only (a frame too large is dropped by ap_frame_end) */
    agent_log("output buffer allocation failed; dropping output");
    ap_buf_free(&out);
    out_off = 0;
  }
}

/* ---------------------------------------------------------------- fields */

int agent_get_str(const uint8_t *p, size_t n, uint16_t tag, char **ret) {
  ap_field f;
  int r = ap_find(p, n, tag, &f);
  if (r <= 0) return r;
  r = ap_field_str(&f, ret);
  return r < 0 ? r : 1;
}

int agent_get_u32(const uint8_t *p, size_t n, uint16_t tag, uint32_t *ret) {
  ap_field f;
  int r = ap_find(p, n, tag, &f);
  if (r <= 0) return r;
  r = ap_field_u32(&f, ret);
  return r < 0 ? r : 1;
}

int agent_get_u64(const uint8_t *p, size_t n, uint16_t tag, uint64_t *ret) {
  ap_field f;
  int r = ap_find(p, n, tag, &f);
  if (r <= 0) return r;
  r = ap_field_u64(&f, ret);
  return r < 0 ? r : 1;
}

/* ---------------------------------------------------------------- channels */

agent_chan *agent_chan_find(uint32_t id) {
  for (size_t i = 0; i < n_chans; i++)
    if (chans[i]->id == id) return chans[i];
  return NULL;
}

/* Compares pointers only: c may already be freed. */
static int chan_alive(const agent_chan *c) {
  for (size_t i = 0; i < n_chans; i++)
    if (chans[i] == c) return 1;
  return 0;
}

agent_chan *agent_chan_by_pid(pid_t pid) {
  for (size_t i = 0; i < n_chans; i++)
    if (chans[i]->pid == pid) return chans[i];
  return NULL;
}

agent_chan *agent_chan_new(uint32_t id, int kind) {
  if (n_chans >= AGENT_MAX_CHANNELS) return NULL;
  agent_chan *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->id = id;
  c->kind = kind;
  c->pid = -1;
  c->fd_in = c->fd_out = c->fd_err = c->fd = c->dirfd = -1;
  chans[n_chans++] = c;
  return c;
}

static void closefd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

void agent_chan_free(agent_chan *c) {
  if (!c) return;
  for (size_t i = 0; i < n_chans; i++)
    if (chans[i] == c) {
      chans[i] = chans[--n_chans];
      break;
    }
  closefd(&c->fd_in);
  closefd(&c->fd_out);
  closefd(&c->fd_err);
  closefd(&c->fd);
  if (c->tmpname && c->dirfd >= 0) unlinkat(c->dirfd, c->tmpname, 0);
  closefd(&c->dirfd);
  free(c->tmpname);
  free(c->basename);
  free(c->inbuf);
  free(c);
}

/* Acknowledges consumed STDIN/DATA bytes: one AP_WINDOW per channel and loop
 * iteration at most (coalesced). */
static void send_windows(void) {
  for (size_t i = 0; i < n_chans; i++) {
    agent_chan *c = chans[i];
    if (!c->ack_pending) continue;
    ap_frame_begin(&out, AP_WINDOW, c->id);
    ap_put_u64(&out, AP_T_LENGTH, c->ack_pending);
    ap_frame_end(&out);
    c->in_unacked -= MINZ(c->in_unacked, c->ack_pending);
    c->ack_pending = 0;
  }
}

static void session_reset(const char *why) {
  if (n_chans) agent_log("session reset (%s): killing %zu channel(s)", why, n_chans);
  pid_t killed[AGENT_MAX_CHANNELS];
  size_t n_killed = 0;
  while (n_chans) {
    agent_chan *c = chans[n_chans - 1];
    if (c->pid > 0 && !c->reaped) killed[n_killed++] = c->pid;
    agent_chan_kill(c, SIGKILL);
    agent_chan_free(c);
  }
  /* reap the killed leaders (bounded: 200 ms) so that the next session
   * never sees their zombies */
  for (int i = 0; i < 200 && n_killed; i++) {
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
      for (size_t k = 0; k < n_killed; k++)
        if (killed[k] == pid) killed[k] = killed[--n_killed];
    if (n_killed) {
      struct timespec ts = {0, 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  in_len = 0;
  ap_buf_free(&out);
  out_off = 0;
}

/* ---------------------------------------------------------------- dispatch */

static void handle_hello(const uint8_t *p, size_t n) {
  uint32_t v = 0;
  /* HELLO starts a session: a host that reconnected faster than we saw
   * its hang-up must not inherit the old session's processes. */
  if (n_chans) {
    size_t keep_len = in_len; /* the frames after this HELLO stay queued */
    in_len = 0;
    session_reset("new HELLO");
    in_len = keep_len;
  }
  if (agent_get_u32(p, n, AP_T_VERSION, &v) <= 0 || v != AP_VERSION) {
    agent_send_error(0, CR_E_AGENT_PROTOCOL, 0,
                     "unsupported protocol version %u (agent speaks %d)", v,
                     AP_VERSION);
    return;
  }
  struct utsname u;
  uname(&u);
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  ap_frame_begin(&out, AP_HELLO_REPLY, 0);
  ap_put_u32(&out, AP_T_VERSION, AP_VERSION);
  ap_put_str(&out, AP_T_AGENT_VERSION, AGENT_VERSION);
  ap_put_str(&out, AP_T_KERNEL, u.release);
  ap_put_u64(&out, AP_T_UPTIME_NS,
             (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
  ap_put_u32(&out, AP_T_MAX_PAYLOAD, AP_MAX_PAYLOAD);
  ap_put_u64(&out, AP_T_WINDOW, AP_WINDOW_INITIAL); /* we speak flow control */
  ap_frame_end(&out);
}

static void handle_shutdown(void) {
  agent_send_ok(0);
  shutdown_requested = 1;
}

/* Returns <0 on a protocol violation (session reset). */
static int dispatch(const ap_header *h, const uint8_t *p) {
  size_t n = h->len;
  uint32_t ch = h->channel;
  if (ch == 0) {
    switch (h->type) {
    case AP_HELLO: handle_hello(p, n); return 0;
    case AP_ACTIVATE: agent_activate(p, n); return 0;
    case AP_SHUTDOWN: handle_shutdown(); return 0;
    default:
      agent_send_error(0, CR_E_AGENT_PROTOCOL, 0,
                       "%s is not a control-channel request",
                       ap_type_name(h->type));
      return 0;
    }
  }
  agent_chan *c = agent_chan_find(ch);
  switch (h->type) {
  case AP_EXEC: case AP_FILE_READ: case AP_FILE_WRITE: case AP_STAT:
  case AP_LIST: case AP_TAR_OUT: case AP_TAR_IN: case AP_MOUNT:
    if (c) {
      agent_send_error(ch, CR_E_AGENT_PROTOCOL, 0, "channel %u is in use", ch);
      return 0;
    }
    if (n_chans >= AGENT_MAX_CHANNELS) {
      agent_send_error(ch, CR_E_AGENT_PROTOCOL, 0, "too many channels");
      return 0;
    }
    switch (h->type) {
    case AP_EXEC: agent_exec_start(ch, p, n); break;
    case AP_FILE_READ: agent_file_read_start(ch, p, n); break;
    case AP_FILE_WRITE: agent_file_write_start(ch, p, n); break;
    case AP_STAT: agent_stat(ch, p, n); break;
    case AP_LIST: agent_list(ch, p, n); break;
    case AP_TAR_OUT: agent_tar_out_start(ch, p, n); break;
    case AP_TAR_IN: agent_tar_in_start(ch, p, n); break;
    case AP_MOUNT: agent_mount(ch, p, n); break;
    }
    return 0;
  case AP_STDIN:
    if (!c) return 0;
    if (agent_chan_recv_in(c, n) < 0) return 0; /* window exceeded: failed */
    if (c->kind == AGENT_CH_EXEC) agent_chan_queue_in(c, p, n);
    else agent_chan_consumed(c, n); /* dropped */
    return 0;
  case AP_STDIN_EOF:
    if (c && c->kind == AGENT_CH_EXEC) {
      c->in_eof = 1;
      agent_chan_write_in(c);
    }
    return 0;
  case AP_RESIZE:
    if (c && c->kind == AGENT_CH_EXEC) {
      uint32_t ws = 0;
      if (agent_get_u32(p, n, AP_T_WINSIZE, &ws) > 0) agent_chan_resize(c, ws);
    }
    return 0;
  case AP_SIGNAL:
    if (c && c->kind == AGENT_CH_EXEC) {
      uint32_t sig = 0;
      if (agent_get_u32(p, n, AP_T_SIGNAL, &sig) > 0 && sig > 0 && sig < 65)
        agent_chan_kill(c, (int)sig);
    }
    return 0;
  case AP_DATA:
    if (!c) return 0;
    if (agent_chan_recv_in(c, n) < 0) return 0; /* window exceeded: failed */
    if (c->kind == AGENT_CH_FILE_WRITE) agent_file_write_data(c, p, n);
    else if (c->kind == AGENT_CH_TAR_IN && !c->data_end) agent_chan_queue_in(c, p, n);
    else agent_chan_consumed(c, n); /* dropped */
    return 0;
  case AP_DATA_END:
    if (!c) return 0;
    if (c->kind == AGENT_CH_FILE_WRITE) agent_file_write_end(c);
    else if (c->kind == AGENT_CH_TAR_IN) {
      c->data_end = 1;
      c->in_eof = 1;
      agent_chan_write_in(c);
    }
    return 0;
  case AP_CANCEL:
    if (!c) return 0;
    if (c->kind == AGENT_CH_EXEC) return 0; /* use SIGNAL */
    agent_chan_kill(c, SIGKILL);
    agent_send_error(ch, CR_E_EXECUTION_CANCELLED, 0, "cancelled");
    agent_chan_free(c);
    return 0;
  default:
    /* a guest->host type from the host */
    agent_log("protocol violation: %s from host", ap_type_name(h->type));
    return -EBADMSG;
  }
}

/* After a protocol violation we discard input until the host hangs up. A
 * host that reconnects faster than we can see its hang-up starts with HELLO
 * on channel 0: resynchronize on that frame. Returns 1 when found. */
static int resync(void) {
  static const uint8_t hello_tail[] = {0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
                                       0x00, 0x00, AP_T_VERSION, 0x00, 0x04,
                                       0x00, 0x00, 0x00};
  const size_t tl = sizeof(hello_tail);
  for (size_t i = 0; i + 4 + tl <= in_len; i++) {
    if (memcmp(in_buf + i + 4, hello_tail, tl) != 0) continue;
    memmove(in_buf, in_buf + i, in_len - i);
    in_len -= i;
    draining = 0;
    agent_log("resynchronized on a new HELLO");
    return 1;
  }
  size_t keep = 4 + tl;
  if (in_len > keep) {
    memmove(in_buf, in_buf + in_len - keep, keep);
    in_len = keep;
  }
  return 0;
}

static void port_read(void) {
  for (;;) {
    if (in_len == in_cap) break;
    ssize_t r = read(port_fd, in_buf + in_len, in_cap - in_len);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      agent_log("read %s: %s", port_path, strerror(errno));
      r = 0;
    }
    if (r == 0) {
      if (n_chans || draining) agent_log("host disconnected (EOF)");
      session_reset("host gone");
      draining = 0;
      host_present = 0;
      return;
    }
    host_present = 1;
    in_len += (size_t)r;
    if (draining && !resync()) continue;
    /* parse whole frames */
    size_t off = 0;
    for (;;) {
      ap_header h;
      const uint8_t *payload;
      long k = ap_frame_parse(in_buf + off, in_len - off, AP_MAX_PAYLOAD, &h,
                              &payload);
      if (k == 0) break;
      if (k < 0 || dispatch(&h, payload) < 0) {
        agent_log("protocol violation from host (%s); resetting session",
                  k < 0 ? strerror((int)-k) : "bad frame type");
        session_reset("protocol violation");
        draining = 1;
        off = in_len = 0;
        break;
      }
      off += (size_t)k;
      if (shutdown_requested) break;
    }
    if (off) {
      memmove(in_buf, in_buf + off, in_len - off);
      in_len -= off;
    }
    if (shutdown_requested) return;
    /* Channel input is bounded by the flow-control window, so a process
     * that does not read its stdin never stops us reading the port. Only
     * a host that does not read our output does. */
    if (agent_out_pending() > AGENT_OUT_HIGH) return;
  }
}

/* ---------------------------------------------------------------- boot */

static void mount_basics(void) {
  mkdir("/dev", 0755);
  mkdir("/proc", 0555);
  mkdir("/sys", 0555);
  if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") < 0 &&
      errno != EBUSY)
    agent_log("mount /dev: %s", strerror(errno));
  console_fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
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
static void loopback_up(void) {
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

static void load_modules(void) {
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

static int find_port(void) {
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
        snprintf(port_path, sizeof(port_path), "/dev/%.100s", e->d_name);
        int pfd = open(port_path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
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

static void power_off(void) {
  sync();
  if (getpid() != 1) {
    /* run by hand outside a VM: never power off the machine */
    agent_log("not PID 1: exiting instead of powering off");
    exit(1);
  }
  reboot(RB_POWER_OFF);
  for (;;) pause();
}

static void reap_children(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    agent_child_reaped(pid, status);
  }
}

static void drain_signals(void) {
  struct signalfd_siginfo si[8];
  while (read(sig_fd, si, sizeof(si)) > 0) {
  }
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  if (getpid() == 1) mount_basics();
  else console_fd = dup(2); /* run by hand for debugging */
  agent_log("starting (agent %s)", AGENT_VERSION);
  if (getpid() == 1) {
    load_modules();
    loopback_up();
  }

  signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGIO);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

  in_buf = malloc(in_cap);
  if (!in_buf) {
    agent_log("out of memory");
    power_off();
  }

  port_fd = find_port();
  if (port_fd < 0) {
    agent_log("virtio port %s not found; powering off", AP_PORT_NAME);
    power_off();
  }
  /* SIGIO on host connect/disconnect wakes the idle loop at once */
  fcntl(port_fd, F_SETOWN, getpid());
  fcntl(port_fd, F_SETFL, fcntl(port_fd, F_GETFL) | O_ASYNC);
  agent_log("serving on %s", port_path);
  host_present = 1;

  struct pollfd *pfd = calloc(2 + 3 * AGENT_MAX_CHANNELS, sizeof(*pfd));
  struct { agent_chan *c; int which; } *map =
      calloc(2 + 3 * AGENT_MAX_CHANNELS, sizeof(*map));
  if (!pfd || !map) power_off();

  for (;;) {
    if (shutdown_requested) {
      /* flush the OK (bounded), then power off */
      for (int i = 0; i < 100 && agent_out_pending(); i++) {
        struct pollfd q = {port_fd, POLLOUT, 0};
        poll(&q, 1, 10);
        out_flush();
      }
      session_reset("shutdown");
      agent_log("shutdown requested: powering off");
      umount2(AGENT_ROOT, MNT_DETACH);
      power_off();
    }
    size_t np = 0;
    int out_ok = agent_out_pending() < AGENT_OUT_HIGH;
    int want_port_in = out_ok;
    pfd[np] = (struct pollfd){sig_fd, POLLIN, 0};
    map[np++].c = NULL;
    int port_idx = -1;
    short pev = (short)((want_port_in ? POLLIN : 0) |
                        (agent_out_pending() ? POLLOUT : 0));
    if (host_present || agent_out_pending()) {
      port_idx = (int)np;
      pfd[np] = (struct pollfd){port_fd, pev, 0};
      map[np++].c = NULL;
    }
    int timeout = host_present ? -1 : 1000; /* SIGIO wakes us at once */
    for (size_t i = 0; i < n_chans; i++) {
      agent_chan *c = chans[i];
      if (out_ok && c->fd_out >= 0) {
        pfd[np] = (struct pollfd){c->fd_out, POLLIN, 0};
        map[np].c = c;
        map[np++].which = 1;
      }
      if (out_ok && c->fd_err >= 0) {
        pfd[np] = (struct pollfd){c->fd_err, POLLIN, 0};
        map[np].c = c;
        map[np++].which = 2;
      }
      if (c->fd_in >= 0 && c->inlen) {
        pfd[np] = (struct pollfd){c->fd_in, POLLOUT, 0};
        map[np].c = c;
        map[np++].which = 0;
      }
      if (out_ok && c->kind == AGENT_CH_FILE_READ) timeout = 0;
    }
    for (size_t i = 0; i < n_chans; i++) {
      /* not drained yet: its pipes are polled, their data wakes us */
      if (!agent_chan_in_grace(chans[i]) || !chans[i]->drained_ms) continue;
      uint64_t end = chans[i]->drained_ms + AGENT_EXIT_GRACE_MS, now = agent_now_ms();
      int left = end > now ? (int)(end - now) : 0;
      if (timeout < 0 || left < timeout) timeout = left;
    }
    int r = poll(pfd, np, timeout);
    if (r < 0 && errno != EINTR) {
      agent_log("poll: %s", strerror(errno));
      struct timespec ts = {0, 100 * 1000 * 1000};
      nanosleep(&ts, NULL);
      continue;
    }
    if (pfd[0].revents) {
      drain_signals();
      reap_children();
    }
    if (port_idx < 0 || r == 0) {
      /* idle without a host: look whether one connected. The port reports
       * POLLHUP exactly while no host is connected (and POLLIN with it:
       * reads return 0), so HUP decides. */
      struct pollfd q = {port_fd, POLLIN, 0};
      if (poll(&q, 1, 0) >= 0 && !(q.revents & (POLLHUP | POLLERR))) host_present = 1;
    }
    if (port_idx >= 0 && r > 0) {
      short rev = pfd[port_idx].revents;
      if (rev & (POLLHUP | POLLERR)) {
        /* the host hung up (possibly with unread data): reset, then idle */
        if (n_chans || in_len || draining || agent_out_pending())
          agent_log("host disconnected");
        session_reset("host gone");
        draining = 0;
        host_present = 0;
        /* a host that connected again may have sent its SIGIO already
         * (drained above in this very round): look now, not after the idle
         * timeout (a clone's port goes closed at restore and open when its
         * daemon connects, often both within one round: a 1 s stall) */
        struct pollfd q = {port_fd, POLLIN, 0};
        if (poll(&q, 1, 0) >= 0 && !(q.revents & (POLLHUP | POLLERR))) host_present = 1;
      } else {
        if (rev & POLLOUT) out_flush();
        if (rev & POLLIN) port_read();
      }
    }
    for (size_t i = 0; r > 0 && i < np; i++) {
      agent_chan *c = map[i].c;
      if (!c || !pfd[i].revents) continue;
      if (!chan_alive(c)) continue; /* freed by a reset or CANCEL meanwhile */
      if (map[i].which == 0) agent_chan_write_in(c);
      else agent_chan_read_fd(c, map[i].which);
    }
    /* pumps and finished channels (iterate over a snapshot: may free) */
    for (size_t i = n_chans; i-- > 0;) {
      if (i >= n_chans) continue;
      agent_chan *c = chans[i];
      if (c->kind == AGENT_CH_FILE_READ) {
        if (agent_out_pending() < AGENT_OUT_HIGH) agent_file_read_pump(c);
      } else {
        /* a reaped command's pipes are read once more (they may be silent:
         * a background process holds them) so that the exit grace starts
         * only once what was written is sent */
        if (agent_chan_in_grace(c) && !c->drained_ms && agent_out_pending() < AGENT_OUT_HIGH) {
          if (c->fd_out >= 0) agent_chan_read_fd(c, 1);
          if (c->fd_err >= 0) agent_chan_read_fd(c, 2);
        }
        agent_chan_maybe_finish(c);
      }
    }
    send_windows();
    if (agent_out_pending()) out_flush();
  }
}

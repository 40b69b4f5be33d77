/* cleanroom-agent main: the loop's state and the single-threaded poll() loop
 * that serves the protocol (PID-1 set-up: agent_boot.c). */
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

int agent_console_fd = -1;
int agent_port_fd = -1;
int agent_sig_fd = -1;
char agent_port_path[128];

/* input from the host */
uint8_t *agent_in_buf;
size_t agent_in_len;
const size_t agent_in_cap = AP_HEADER_SIZE + AP_MAX_PAYLOAD + 65536;
/* output to the host */
ap_buf agent_out_buf;
size_t agent_out_off;
int agent_draining;      /* protocol violation: discard input until EOF */
int agent_host_present;  /* 0: port reported HUP without data */
int agent_shutdown_requested;

agent_chan *agent_chans[AGENT_MAX_CHANNELS];
size_t agent_n_chans;

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  if (getpid() == 1) agent_mount_basics();
  else agent_console_fd = dup(2); /* run by hand for debugging */
  agent_log("starting (agent %s)", AGENT_VERSION);
  if (getpid() == 1) {
    agent_load_modules();
    agent_loopback_up();
  }

  signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGIO);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  agent_sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

  agent_in_buf = malloc(agent_in_cap);
  if (!agent_in_buf) {
    agent_log("out of memory");
    agent_power_off();
  }

  agent_port_fd = agent_find_port();
  if (agent_port_fd < 0) {
    agent_log("virtio port %s not found; powering off", AP_PORT_NAME);
    agent_power_off();
  }
  /* SIGIO on host connect/disconnect wakes the idle loop at once */
  fcntl(agent_port_fd, F_SETOWN, getpid());
  fcntl(agent_port_fd, F_SETFL, fcntl(agent_port_fd, F_GETFL) | O_ASYNC);
  agent_log("serving on %s", agent_port_path);
  agent_host_present = 1;

  struct pollfd *pfd = calloc(2 + 3 * AGENT_MAX_CHANNELS, sizeof(*pfd));
  struct { agent_chan *c; int which; } *map =
      calloc(2 + 3 * AGENT_MAX_CHANNELS, sizeof(*map));
  if (!pfd || !map) agent_power_off();

  for (;;) {
    if (agent_shutdown_requested) {
      /* flush the OK (bounded), then power off */
      for (int i = 0; i < 100 && agent_out_pending(); i++) {
        struct pollfd q = {agent_port_fd, POLLOUT, 0};
        poll(&q, 1, 10);
        agent_out_flush();
      }
      agent_session_reset("shutdown");
      agent_log("shutdown requested: powering off");
      umount2(AGENT_ROOT, MNT_DETACH);
      agent_power_off();
    }
    size_t np = 0;
    int out_ok = agent_out_pending() < AGENT_OUT_HIGH;
    int want_port_in = out_ok;
    pfd[np] = (struct pollfd){agent_sig_fd, POLLIN, 0};
    map[np++].c = NULL;
    int port_idx = -1;
    short pev = (short)((want_port_in ? POLLIN : 0) |
                        (agent_out_pending() ? POLLOUT : 0));
    if (agent_host_present || agent_out_pending()) {
      port_idx = (int)np;
      pfd[np] = (struct pollfd){agent_port_fd, pev, 0};
      map[np++].c = NULL;
    }
    int timeout = agent_host_present ? -1 : 1000; /* SIGIO wakes us at once */
    for (size_t i = 0; i < agent_n_chans; i++) {
      agent_chan *c = agent_chans[i];
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
    for (size_t i = 0; i < agent_n_chans; i++) {
      /* not drained yet: its pipes are polled, their data wakes us */
      if (!agent_chan_in_grace(agent_chans[i]) || !agent_chans[i]->drained_ms) continue;
      uint64_t end = agent_chans[i]->drained_ms + AGENT_EXIT_GRACE_MS, now = agent_now_ms();
      int left = end > now ? (int)(end - now) : 0;
      if (timeout < 0 || left < timeout) timeout = left;
    }
    /* about to sleep with nothing to send: make the next exec's pipes now,
     * off its critical path */
    if (!agent_out_pending()) agent_exec_prepare();
    int r = poll(pfd, np, timeout);
    if (r < 0 && errno != EINTR) {
      agent_log("poll: %s", strerror(errno));
      struct timespec ts = {0, 100 * 1000 * 1000};
      nanosleep(&ts, NULL);
      continue;
    }
    if (pfd[0].revents) {
      agent_drain_signals();
      agent_reap_children();
    }
    if (port_idx < 0 || r == 0) {
      /* idle without a host: look whether one connected. The port reports
       * POLLHUP exactly while no host is connected (and POLLIN with it:
       * reads return 0), so HUP decides. */
      struct pollfd q = {agent_port_fd, POLLIN, 0};
      if (poll(&q, 1, 0) >= 0 && !(q.revents & (POLLHUP | POLLERR))) agent_host_present = 1;
    }
    if (port_idx >= 0 && r > 0) {
      short rev = pfd[port_idx].revents;
      if (rev & (POLLHUP | POLLERR)) {
        /* the host hung up (possibly with unread data): reset, then idle */
        if (agent_n_chans || agent_in_len || agent_draining || agent_out_pending())
          agent_log("host disconnected");
        agent_session_reset("host gone");
        agent_draining = 0;
        agent_host_present = 0;
        /* a host that connected again may have sent its SIGIO already
         * (drained above in this very round): look now, not after the idle
         * timeout (a clone's port goes closed at restore and open when its
         * daemon connects, often both within one round: a 1 s stall) */
        struct pollfd q = {agent_port_fd, POLLIN, 0};
        if (poll(&q, 1, 0) >= 0 && !(q.revents & (POLLHUP | POLLERR))) agent_host_present = 1;
      } else {
        if (rev & POLLOUT) agent_out_flush();
        if (rev & POLLIN) agent_port_read();
      }
    }
    for (size_t i = 0; r > 0 && i < np; i++) {
      agent_chan *c = map[i].c;
      if (!c || !pfd[i].revents) continue;
      /* freed by a reset or CANCEL meanwhile (its memory may be a new
       * channel's by now: the fd must be the one polled) */
      if (!agent_chan_alive(c)) continue;
      int fd = map[i].which == 0 ? c->fd_in : map[i].which == 1 ? c->fd_out : c->fd_err;
      if (fd != pfd[i].fd) continue;
      if (map[i].which == 0) agent_chan_write_in(c);
      else agent_chan_read_fd(c, map[i].which);
    }
    /* pumps and finished channels (iterate over a snapshot: may free) */
    for (size_t i = agent_n_chans; i-- > 0;) {
      if (i >= agent_n_chans) continue;
      agent_chan *c = agent_chans[i];
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
    agent_send_windows();
    if (agent_out_pending()) agent_out_flush();
  }
}

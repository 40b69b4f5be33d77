/* cleanroom-agent: reading the host's frames from the port and dispatching them. */
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

/* ---------------------------------------------------------------- dispatch */

uint64_t agent_req_ns;

static void handle_hello(const uint8_t *p, size_t n) {
  uint32_t v = 0;
  /* HELLO starts a session: a host that reconnected faster than we saw
   * its hang-up must not inherit the old session's processes. */
  if (agent_n_chans) {
    size_t keep_len = agent_in_len; /* the frames after this HELLO stay queued */
    agent_in_len = 0;
    agent_session_reset("new HELLO");
    agent_in_len = keep_len;
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
  ap_frame_begin(&agent_out_buf, AP_HELLO_REPLY, 0);
  ap_put_u32(&agent_out_buf, AP_T_VERSION, AP_VERSION);
  ap_put_str(&agent_out_buf, AP_T_AGENT_VERSION, AGENT_VERSION);
  ap_put_str(&agent_out_buf, AP_T_KERNEL, u.release);
  ap_put_u64(&agent_out_buf, AP_T_UPTIME_NS,
             (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
  ap_put_u32(&agent_out_buf, AP_T_MAX_PAYLOAD, AP_MAX_PAYLOAD);
  ap_put_u64(&agent_out_buf, AP_T_WINDOW, AP_WINDOW_INITIAL); /* we speak flow control */
  ap_frame_end(&agent_out_buf);
}

static void handle_shutdown(void) {
  agent_send_ok(0);
  agent_shutdown_requested = 1;
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
    if (agent_n_chans >= AGENT_MAX_CHANNELS) {
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
  for (size_t i = 0; i + 4 + tl <= agent_in_len; i++) {
    if (memcmp(agent_in_buf + i + 4, hello_tail, tl) != 0) continue;
    memmove(agent_in_buf, agent_in_buf + i, agent_in_len - i);
    agent_in_len -= i;
    agent_draining = 0;
    agent_log("resynchronized on a new HELLO");
    return 1;
  }
  size_t keep = 4 + tl;
  if (agent_in_len > keep) {
    memmove(agent_in_buf, agent_in_buf + agent_in_len - keep, keep);
    agent_in_len = keep;
  }
  return 0;
}

void agent_port_read(void) {
  for (;;) {
    if (agent_in_len == agent_in_cap) break;
    ssize_t r = read(agent_port_fd, agent_in_buf + agent_in_len, agent_in_cap - agent_in_len);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      agent_log("read %s: %s", agent_port_path, strerror(errno));
      r = 0;
    }
    if (r == 0) {
      if (agent_n_chans || agent_draining) agent_log("host disconnected (EOF)");
      agent_session_reset("host gone");
      agent_draining = 0;
      agent_host_present = 0;
      return;
    }
    agent_host_present = 1;
    agent_req_ns = agent_now_ns();
    agent_in_len += (size_t)r;
    if (agent_draining && !resync()) continue;
    /* parse whole frames */
    size_t off = 0;
    for (;;) {
      ap_header h;
      const uint8_t *payload;
      long k = ap_frame_parse(agent_in_buf + off, agent_in_len - off, AP_MAX_PAYLOAD, &h,
                              &payload);
      if (k == 0) break;
      if (k < 0 || dispatch(&h, payload) < 0) {
        agent_log("protocol violation from host (%s); resetting session",
                  k < 0 ? strerror((int)-k) : "bad frame type");
        agent_session_reset("protocol violation");
        agent_draining = 1;
        off = agent_in_len = 0;
        break;
      }
      off += (size_t)k;
      if (agent_shutdown_requested) break;
    }
    if (off) {
      memmove(agent_in_buf, agent_in_buf + off, agent_in_len - off);
      agent_in_len -= off;
    }
    if (agent_shutdown_requested) return;
    /* Channel input is bounded by the flow-control window, so a process
     * that does not read its stdin never stops us reading the port. Only
     * a host that does not read our output does. */
    if (agent_out_pending() > AGENT_OUT_HIGH) return;
  }
}

/* cleanroom-agent: the console log, output to the host and frame fields. */
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
  int fd = agent_console_fd >= 0 ? agent_console_fd : 2;
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

ap_buf *agent_out(void) { return &agent_out_buf; }
size_t agent_out_pending(void) { return agent_out_buf.len - agent_out_off; }

void agent_send_raw(uint16_t type, uint32_t ch, const void *data, size_t n) {
  ap_put_raw_frame(&agent_out_buf, type, ch, data, n);
}

void agent_send_ok(uint32_t ch) {
  ap_frame_begin(&agent_out_buf, AP_OK, ch);
  ap_frame_end(&agent_out_buf);
}

void agent_send_error(uint32_t ch, const char *reason, int errnum,
                      const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  ap_frame_begin(&agent_out_buf, AP_ERROR, ch);
  ap_put_str(&agent_out_buf, AP_T_REASON, reason);
  if (errnum > 0) ap_put_u32(&agent_out_buf, AP_T_ERRNO, (uint32_t)errnum);
  ap_put_str(&agent_out_buf, AP_T_MESSAGE, msg);
  ap_frame_end(&agent_out_buf);
}

void agent_out_flush(void) {
  while (agent_out_off < agent_out_buf.len) {
    ssize_t w = write(agent_port_fd, agent_out_buf.data + agent_out_off, agent_out_buf.len - agent_out_off);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) { /* host gone: the EOF path resets */
        agent_out_off = agent_out_buf.len;
      }
      break;
    }
    agent_out_off += (size_t)w;
  }
  if (agent_out_off == agent_out_buf.len) {
    ap_buf_reset(&agent_out_buf);
    agent_out_off = 0;
    if (agent_out_buf.cap > (4u << 20)) ap_buf_free(&agent_out_buf); /* give big buffers back */
  } else if (agent_out_off > (1u << 20) && agent_out_off > agent_out_buf.len / 2) {
    memmove(agent_out_buf.data, agent_out_buf.data + agent_out_off, agent_out_buf.len - agent_out_off);
    agent_out_buf.len -= agent_out_off;
    agent_out_off = 0;
  }
  if (agent_out_buf.err) { /* -ENOMEM only (a frame too large is dropped by ap_frame_end) */
    agent_log("output buffer allocation failed; dropping output");
    ap_buf_free(&agent_out_buf);
    agent_out_off = 0;
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

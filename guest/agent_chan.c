/* cleanroom-agent: the channel table and session resets. */
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

/* ---------------------------------------------------------------- channels */

agent_chan *agent_chan_find(uint32_t id) {
  for (size_t i = 0; i < agent_n_chans; i++)
    if (agent_chans[i]->id == id) return agent_chans[i];
  return NULL;
}

/* Compares pointers only: c may already be freed (or reused: agent_chan_new). */
int agent_chan_alive(const agent_chan *c) {
  for (size_t i = 0; i < agent_n_chans; i++)
    if (agent_chans[i] == c) return 1;
  return 0;
}

agent_chan *agent_chan_by_pid(pid_t pid) {
  for (size_t i = 0; i < agent_n_chans; i++)
    if (agent_chans[i]->pid == pid) return agent_chans[i];
  return NULL;
}

/* Freed channels kept for reuse: musl gave a freed one's pages back and the
 * next calloc faulted them in again, ~0.3 ms of every exec under TCG. */
#define CHAN_CACHE 4
static agent_chan *chan_cache[CHAN_CACHE];
static size_t n_chan_cache;

agent_chan *agent_chan_new(uint32_t id, int kind) {
  if (agent_n_chans >= AGENT_MAX_CHANNELS) return NULL;
  agent_chan *c = n_chan_cache ? chan_cache[--n_chan_cache] : malloc(sizeof(*c));
  if (!c) return NULL;
  memset(c, 0, sizeof(*c));
  c->id = id;
  c->kind = kind;
  c->pid = -1;
  c->fd_in = c->fd_out = c->fd_err = c->fd = c->dirfd = -1;
  agent_chans[agent_n_chans++] = c;
  return c;
}

static void closefd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

void agent_chan_free(agent_chan *c) {
  if (!c) return;
  for (size_t i = 0; i < agent_n_chans; i++)
    if (agent_chans[i] == c) {
      agent_chans[i] = agent_chans[--agent_n_chans];
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
  if (n_chan_cache < CHAN_CACHE) chan_cache[n_chan_cache++] = c;
  else free(c);
}

/* Acknowledges consumed STDIN/DATA bytes: one AP_WINDOW per channel and loop
 * iteration at most (coalesced). */
void agent_send_windows(void) {
  for (size_t i = 0; i < agent_n_chans; i++) {
    agent_chan *c = agent_chans[i];
    if (!c->ack_pending) continue;
    ap_frame_begin(&agent_out_buf, AP_WINDOW, c->id);
    ap_put_u64(&agent_out_buf, AP_T_LENGTH, c->ack_pending);
    ap_frame_end(&agent_out_buf);
    c->in_unacked -= MINZ(c->in_unacked, c->ack_pending);
    c->ack_pending = 0;
  }
}

void agent_session_reset(const char *why) {
  if (agent_n_chans) agent_log("session reset (%s): killing %zu channel(s)", why, agent_n_chans);
  pid_t killed[AGENT_MAX_CHANNELS];
  size_t n_killed = 0;
  while (agent_n_chans) {
    agent_chan *c = agent_chans[agent_n_chans - 1];
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
  agent_in_len = 0;
  ap_buf_free(&agent_out_buf);
  agent_out_off = 0;
}

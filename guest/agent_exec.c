/* EXEC channels and the generic "child process behind a channel" machinery
 * (also used by TAR_OUT/TAR_IN, which run their work in a child). */
#include "agent.h"
#include "util/reasons.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <limits.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

struct exec_fail {
  int step; /* 0 chroot, 1 chdir, 2 exec */
  int err;
};

static void child_common_setup(void) {
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
  signal(SIGPIPE, SIG_DFL);
  setsid();
}

/* A fresh pipe or pty end has no other F_SETFL flag: one call, not two. */
static void set_nonblock(int fd) { fcntl(fd, F_SETFL, O_NONBLOCK); }

static int make_pipe(int p[2]) {
  return pipe2(p, O_CLOEXEC) < 0 ? -errno : 0;
}

/* Output pipes made ahead while the agent is idle (agent_exec_prepare):
 * two pipe2() and their fcntl() were ~0.25 ms of every exec's critical
 * path under TCG. Never used before; the read end is already non-blocking
 * (the agent's), the write end is the child's stdout or stderr. */
#define SPARE_PIPES 2
static int spare[SPARE_PIPES][2];
static size_t n_spare;

/* /dev/null for a child without stdin, opened once while idle (a
 * template's agent has it open before its state is saved): an open by
 * path in each child was a path walk and the LSMs' open hooks, translated
 * afresh in a new clone under TCG. */
static int devnull_fd = -1;

void agent_exec_prepare(void) {
  if (devnull_fd < 0) devnull_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  while (n_spare < SPARE_PIPES) {
    int *p = spare[n_spare];
    if (make_pipe(p) < 0) return;
    set_nonblock(p[0]);
    n_spare++;
  }
}

void agent_exec_drop_spares(void) {
  while (n_spare) {
    n_spare--;
    close(spare[n_spare][0]);
    close(spare[n_spare][1]);
  }
}

/* An output pipe: its read end (p[0]) non-blocking. 0 or -errno. */
static int out_pipe(int p[2]) {
  if (n_spare) {
    n_spare--;
    p[0] = spare[n_spare][0];
    p[1] = spare[n_spare][1];
    return 0;
  }
  int r = make_pipe(p);
  if (r == 0) set_nonblock(p[0]);
  return r;
}


/* fds: [0] child stdin read end or -1 (/dev/null), [1] stdout w, [2] stderr w */
static void child_dup_stdio(int in_r, int out_w, int err_w) {
  if (in_r < 0) in_r = devnull_fd >= 0 ? devnull_fd : open("/dev/null", O_RDONLY | O_CLOEXEC);
  dup2(in_r, 0);
  dup2(out_w, 1);
  dup2(err_w, 2);
}

int agent_spawn_fn(agent_chan *c, int (*fn)(void *), void *arg, int want_stdin) {
  int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
  int r;
  if ((want_stdin && (r = make_pipe(pin)) < 0) || (r = out_pipe(pout)) < 0 ||
      (r = out_pipe(perr)) < 0)
    goto fail;
  pid_t pid = fork();
  if (pid < 0) {
    r = -errno;
    goto fail;
  }
  if (pid == 0) {
    agent_exec_drop_spares(); /* a later exec's EOF must not wait for us */
    child_common_setup();
    child_dup_stdio(pin[0], pout[1], perr[1]);
    _exit(fn(arg) == 0 ? 0 : 1);
  }
  c->pid = pid;
  if (pin[0] >= 0) close(pin[0]);
  close(pout[1]);
  close(perr[1]);
  c->fd_in = pin[1];
  c->fd_out = pout[0];
  c->fd_err = perr[0];
  if (c->fd_in >= 0) set_nonblock(c->fd_in);
  return 0;
fail:
  for (int i = 0; i < 2; i++) {
    if (pin[i] >= 0) close(pin[i]);
    if (pout[i] >= 0) close(pout[i]);
    if (perr[i] >= 0) close(perr[i]);
  }
  return r;
}

/* A pseudo-terminal pair from the root's devpts instance (the one the
 * command sees as /dev/pts), else the agent's own /dev/ptmx. Both fds
 * close-on-exec; *slave is opened through the master (TIOCGPTPEER), so no
 * path is looked up. */
static int open_pty(uint32_t winsize, int *master, int *slave) {
  static const char *const ptmx[] = {AGENT_ROOT "/dev/pts/ptmx", "/dev/ptmx"};
  int m = -1, e = ENOENT;
  for (size_t i = 0; i < sizeof(ptmx) / sizeof(ptmx[0]) && m < 0; i++) {
    m = open(ptmx[i], O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0) e = errno;
  }
  if (m < 0) return -e;
  int unlock = 0;
  int s = ioctl(m, TIOCSPTLCK, &unlock) < 0 ? -1 : ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (s < 0) {
    e = errno;
    close(m);
    return -e;
  }
  struct winsize ws = {.ws_row = (unsigned short)(winsize >> 16),
                       .ws_col = (unsigned short)(winsize & 0xffff)};
  if (!ws.ws_row || !ws.ws_col) ws = (struct winsize){.ws_row = 24, .ws_col = 80};
  (void)ioctl(s, TIOCSWINSZ, &ws);
  *master = m;
  *slave = s;
  return 0;
}

void agent_chan_resize(agent_chan *c, uint32_t winsize) {
  struct winsize ws = {.ws_row = (unsigned short)(winsize >> 16),
                       .ws_col = (unsigned short)(winsize & 0xffff)};
  if (c->tty && c->fd_out >= 0 && ws.ws_row && ws.ws_col) (void)ioctl(c->fd_out, TIOCSWINSZ, &ws);
}

static void free_strv(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

static int has_var(char **envp, size_t n, const char *name) {
  size_t k = strlen(name);
  for (size_t i = 0; i < n; i++)
    if (strncmp(envp[i], name, k) == 0 && envp[i][k] == '=') return 1;
  return 0;
}

/* What an exec's child needs, in memory it shares with the agent (CLONE_VM):
 * the child only reads it, except `fail`, which says why it did not exec. */
struct exec_spawn {
  char **argv;
  char **envp;
  const char *path; /* the command's PATH (from envp; NULL: none) */
  const char *cwd;
  int do_chroot, tty;
  int in_r, out_w, err_w; /* -1 in_r: /dev/null */
  int pts;                /* tty: the terminal's slave */
  struct exec_fail fail;  /* step -1: it exec'd */
};

/* The PATH search of execvp(3) (musl's: EACCES remembered, ENOENT and
 * ENOTDIR skip to the next directory, any other error stops), with the
 * command's own PATH, and a faccessat before each execve: a missing file
 * costs a failed lookup, where a failed execve first builds a new address
 * space and copies the arguments and environment into it (Linux < 6.8).
 * Returns the errno of the last attempt; no allocation (a CLONE_VM child). */
static int exec_search(const char *file, char **argv, char **envp, const char *path) {
  if (strchr(file, '/')) {
    execve(file, argv, envp);
    return errno;
  }
  if (!path) path = AGENT_DEFAULT_PATH; /* never: the agent adds one */
  size_t k = strnlen(file, NAME_MAX + 1);
  if (k > NAME_MAX) return ENAMETOOLONG;
  char b[PATH_MAX];
  int seen_eacces = 0;
  for (const char *p = path;; p++) {
    const char *z = strchrnul(p, ':');
    size_t l = (size_t)(z - p);
    if (l < sizeof(b) - k - 1) {
      memcpy(b, p, l);
      b[l] = '/';
      memcpy(b + l + !!l, file, k + 1); /* an empty entry: the cwd */
      if (faccessat(AT_FDCWD, b, F_OK, 0) == 0 || (errno != ENOENT && errno != ENOTDIR)) {
        execve(b, argv, envp);
        switch (errno) {
        case EACCES: seen_eacces = 1; /* fall through */
        case ENOENT:
        case ENOTDIR: break;
        default: return errno;
        }
      }
    }
    if (!*z) break;
    p = z;
  }
  return seen_eacces ? EACCES : ENOENT;
}

/* The exec's child, on its own stack in the agent's memory until it execs
 * or exits (CLONE_VM | CLONE_VFORK: the agent waits meanwhile). Only
 * system calls: nothing here allocates or touches the agent's state. */
static int exec_child(void *arg) {
  struct exec_spawn *sp = arg;
  child_common_setup(); /* a new session: the pty becomes its terminal */
  if (sp->tty) {
    (void)ioctl(sp->pts, TIOCSCTTY, 0);
    dup2(sp->pts, 0);
    dup2(sp->pts, 1);
    dup2(sp->pts, 2);
  } else {
    child_dup_stdio(sp->in_r, sp->out_w, sp->err_w);
  }
  if (sp->do_chroot && (chroot(AGENT_ROOT) < 0 || chdir("/") < 0)) {
    sp->fail = (struct exec_fail){0, errno};
  } else if (chdir(sp->cwd && *sp->cwd ? sp->cwd : "/") < 0) {
    sp->fail = (struct exec_fail){1, errno};
  } else {
    int e = exec_search(sp->argv[0], sp->argv, sp->envp, sp->path);
    sp->fail = (struct exec_fail){2, e ? e : EIO};
  }
  _exit(sp->fail.step == 2 && (sp->fail.err == ENOENT || sp->fail.err == ENOTDIR) ? 127 : 126);
}

/* The child's stack. One is enough: the agent is single-threaded and waits
 * while a child runs on it (CLONE_VFORK). */
static uint8_t exec_stack[64 * 1024] __attribute__((aligned(16)));

static const char *env_value(char **envp, const char *name) {
  size_t k = strlen(name);
  for (char **e = envp; *e; e++)
    if (strncmp(*e, name, k) == 0 && (*e)[k] == '=') return *e + k + 1;
  return NULL;
}

static int count_fields(const uint8_t *p, size_t n, size_t *argc, size_t *envc) {
  size_t off = 0;
  ap_field f;
  int r;
  *argc = *envc = 0;
  while ((r = ap_field_next(p, n, &off, &f)) > 0) {
    if (f.tag == AP_T_ARGV) ++*argc;
    else if (f.tag == AP_T_ENV) ++*envc;
  }
  return r;
}

void agent_exec_start(uint32_t ch, const uint8_t *p, size_t n) {
  size_t argc = 0, envc = 0, nargs = 0, nenv = 0;
  char **argv = NULL, **envp = NULL;
  char *cwd = NULL;
  uint32_t flags = 0, winsize = 0;
  const char *bad = NULL;
  if (count_fields(p, n, &nargs, &nenv) < 0) { bad = "malformed fields"; goto out; }
  if (nargs > AGENT_MAX_ARGS) { bad = "too many arguments"; goto out; }
  if (nenv > AGENT_MAX_ARGS) { bad = "too many environment variables"; goto out; }
  argv = calloc(nargs + 1, sizeof(char *));
  envp = calloc(nenv + 4, sizeof(char *)); /* + PATH, HOME, TERM */
  if (!argv || !envp) {
    bad = "out of memory";
    goto out;
  }
  size_t off = 0;
  ap_field f;
  int r;
  while ((r = ap_field_next(p, n, &off, &f)) > 0) {
    char *s = NULL;
    switch (f.tag) {
    case AP_T_ARGV:
      if (ap_field_str(&f, &s) < 0) { bad = "bad ARGV string"; goto out; }
      argv[argc++] = s;
      break;
    case AP_T_ENV:
      if (ap_field_str(&f, &s) < 0) { bad = "bad ENV string"; goto out; }
      if (!strchr(s, '=') || s[0] == '=') { free(s); bad = "ENV entry without NAME="; goto out; }
      envp[envc++] = s;
      break;
    case AP_T_CWD:
      free(cwd);
      cwd = NULL;
      if (ap_field_str(&f, &cwd) < 0) { bad = "bad CWD string"; goto out; }
      break;
    case AP_T_FLAGS:
      if (ap_field_u32(&f, &flags) < 0) { bad = "bad FLAGS"; goto out; }
      break;
    case AP_T_WINSIZE:
      if (ap_field_u32(&f, &winsize) < 0) { bad = "bad WINSIZE"; goto out; }
      break;
    default:
      break;
    }
  }
  if (r < 0) { bad = "malformed fields"; goto out; }
  if (argc == 0 || !argv[0][0]) { bad = "no ARGV"; goto out; }
  if (!has_var(envp, envc, "PATH")) envp[envc++] = strdup("PATH=" AGENT_DEFAULT_PATH);
  if (!has_var(envp, envc, "HOME")) envp[envc++] = strdup("HOME=/root");
  int tty = (flags & AP_F_TTY) != 0;
  if (tty && !has_var(envp, envc, "TERM")) envp[envc++] = strdup("TERM=xterm");
  for (size_t i = 0; i < envc; i++)
    if (!envp[i]) { bad = "out of memory"; goto out; }

  agent_chan *c = agent_chan_new(ch, AGENT_CH_EXEC);
  if (!c) { bad = "out of memory"; goto out; }

  int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
  int ptm = -1, pts = -1;
  if (tty) {
    int r2 = open_pty(winsize, &ptm, &pts);
    if (r2 < 0) {
      agent_chan_free(c);
      agent_send_error(ch, CR_E_INTERNAL, -r2, "no pseudo-terminal: %s", strerror(-r2));
      goto out;
    }
  }
  if (!tty && (((flags & AP_F_STDIN) && (r = make_pipe(pin)) < 0) || (r = out_pipe(pout)) < 0 ||
               (r = out_pipe(perr)) < 0)) {
    int e = -r;
    for (int i = 0; i < 2; i++) {
      if (pin[i] >= 0) close(pin[i]);
      if (pout[i] >= 0) close(pout[i]);
      if (perr[i] >= 0) close(perr[i]);
    }
    agent_chan_free(c);
    agent_send_error(ch, CR_E_INTERNAL, e, "pipe: %s", strerror(e));
    goto out;
  }
  struct exec_spawn sp = {
      .argv = argv, .envp = envp, .path = env_value(envp, "PATH"), .cwd = cwd,
      .do_chroot = agent_root_ready() && !(flags & AP_F_NO_CHROOT), .tty = tty,
      .in_r = pin[0], .out_w = pout[1], .err_w = perr[1], .pts = pts,
      .fail = {-1, 0},
  };
  c->t_req_ns = agent_req_ns;
  c->t_fork_ns = agent_now_ns();
  /* the agent resumes once the child exec'd or exited (CLONE_VFORK); no
   * page tables copied (CLONE_VM): what fork cost here under TCG */
  pid_t pid = clone(exec_child, exec_stack + sizeof(exec_stack),
                    CLONE_VM | CLONE_VFORK | SIGCHLD, &sp, NULL, NULL, NULL);
  int fork_errno = errno;
  if (pin[0] >= 0) close(pin[0]);
  if (pout[1] >= 0) close(pout[1]);
  if (perr[1] >= 0) close(perr[1]);
  if (pts >= 0) close(pts);
  if (tty) { /* output and input both through the master */
    pout[0] = ptm;
    if (flags & AP_F_STDIN) pin[1] = fcntl(ptm, F_DUPFD_CLOEXEC, 0);
  }
  if (pid < 0) {
    if (pin[1] >= 0) close(pin[1]);
    close(pout[0]);
    if (perr[0] >= 0) close(perr[0]);
    agent_chan_free(c);
    agent_send_error(ch, CR_E_INTERNAL, fork_errno, "clone: %s", strerror(fork_errno));
    goto out;
  }
  c->pid = pid;
  c->tty = tty;
  c->fd_in = pin[1];
  c->fd_out = pout[0];
  c->fd_err = perr[0];
  if (c->fd_in >= 0) set_nonblock(c->fd_in);
  if (tty) set_nonblock(c->fd_out); /* the pty master (out_pipe's read ends already are) */

  if (sp.fail.step >= 0) {
    struct exec_fail fl = sp.fail;
    char msg[1200];
    int m;
    if (fl.step == 2 && (fl.err == ENOENT || fl.err == ENOTDIR))
      m = snprintf(msg, sizeof(msg), "cleanroom: command not found: %s\n", argv[0]);
    else if (fl.step == 2)
      m = snprintf(msg, sizeof(msg), "cleanroom: cannot execute %s: %s\n",
                   argv[0], strerror(fl.err));
    else if (fl.step == 1)
      m = snprintf(msg, sizeof(msg), "cleanroom: cannot change directory to %s: %s\n",
                   cwd ? cwd : "/", strerror(fl.err));
    else
      m = snprintf(msg, sizeof(msg), "cleanroom: cannot enter the root: %s\n",
                   strerror(fl.err));
    agent_send_raw(AP_STDERR, ch, msg, MINZ((size_t)(m < 0 ? 0 : m), sizeof(msg) - 1));
    c->exec_errno = fl.err ? fl.err : EIO;
  } else {
    ap_frame_begin(agent_out(), AP_STARTED, ch);
    ap_put_u32(agent_out(), AP_T_PID, (uint32_t)pid);
    ap_frame_end(agent_out());
  }

out:
  if (bad) agent_send_error(ch, CR_E_INVALID_ARGUMENT, 0, "exec: %s", bad);
  free_strv(argv);
  free_strv(envp);
  free(cwd);
}

void agent_chan_consumed(agent_chan *c, size_t n) { c->ack_pending += n; }

int agent_chan_recv_in(agent_chan *c, size_t n) {
  if (c->in_unacked + n <= AP_WINDOW_INITIAL) {
    c->in_unacked += n;
    return 0;
  }
  /* a violation for this channel only: the session goes on */
  agent_log("channel %u: host exceeded the flow-control window", c->id);
  agent_send_error(c->id, CR_E_AGENT_PROTOCOL, 0,
                   "flow-control window exceeded (%llu unacknowledged + %zu > %u bytes)",
                   (unsigned long long)c->in_unacked, n, AP_WINDOW_INITIAL);
  agent_chan_kill(c, SIGKILL);
  agent_chan_free(c);
  return -1;
}

void agent_chan_queue_in(agent_chan *c, const uint8_t *d, size_t n) {
  if (c->fd_in < 0 || c->in_eof || n == 0) {
    agent_chan_consumed(c, n); /* dropped */
    return;
  }
  if (!c->inlen) { /* try directly first */
    ssize_t w = write(c->fd_in, d, n);
    if (w < 0 && errno == EPIPE) {
      close(c->fd_in);
      c->fd_in = -1;
      agent_chan_consumed(c, n);
      return;
    }
    if (w > 0) {
      agent_chan_consumed(c, (size_t)w);
      d += w;
      n -= (size_t)w;
    }
    if (!n) return;
  }
  /* bounded by the window: at most AP_WINDOW_INITIAL bytes */
  uint8_t *nb = realloc(c->inbuf, c->inlen + n);
  if (!nb) { /* drop: out of memory */
    agent_chan_consumed(c, n);
    return;
  }
  memcpy(nb + c->inlen, d, n);
  c->inbuf = nb;
  c->inlen += n;
}

void agent_chan_write_in(agent_chan *c) {
  while (c->fd_in >= 0 && c->inlen) {
    ssize_t w = write(c->fd_in, c->inbuf, c->inlen);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      /* EPIPE: the reader is gone; drop what is queued */
      close(c->fd_in);
      c->fd_in = -1;
      break;
    }
    agent_chan_consumed(c, (size_t)w);
    memmove(c->inbuf, c->inbuf + w, c->inlen - (size_t)w);
    c->inlen -= (size_t)w;
  }
  if (c->fd_in < 0 || c->inlen == 0) {
    agent_chan_consumed(c, c->inlen); /* dropped when the reader is gone */
    free(c->inbuf);
    c->inbuf = NULL;
    c->inlen = 0;
    if (c->in_eof && c->fd_in >= 0) {
      if (c->tty) { /* the terminal's EOF: the master stays open for output */
        static const char veof = 4;
        (void)!write(c->fd_in, &veof, 1);
      }
      close(c->fd_in);
      c->fd_in = -1;
    }
  }
}

static void mark_drained(agent_chan *c, int which) {
  if (!c->reaped || c->drained_ms) return;
  c->drained_mask |= which;
  if ((c->fd_out < 0 || (c->drained_mask & 1)) && (c->fd_err < 0 || (c->drained_mask & 2)))
    c->drained_ms = agent_now_ms();
}

void agent_chan_read_fd(agent_chan *c, int which) {
  int *fdp = which == 1 ? &c->fd_out : &c->fd_err;
  static uint8_t buf[AP_CHUNK];
  for (int i = 0; i < 16 && *fdp >= 0; i++) {
    if (agent_out_pending() >= AGENT_OUT_HIGH) return;
    ssize_t r = read(*fdp, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        mark_drained(c, which);
        return;
      }
      r = 0;
    }
    if (r == 0) {
      close(*fdp);
      *fdp = -1;
      mark_drained(c, 0);
      return;
    }
    if (c->kind == AGENT_CH_EXEC) {
      if (!c->exit_sent) agent_send_raw(which == 1 ? AP_STDOUT : AP_STDERR, c->id, buf, (size_t)r);
    } else if (which == 1 && c->kind == AGENT_CH_TAR_OUT) {
      agent_send_raw(AP_DATA, c->id, buf, (size_t)r);
    } else if (which == 2) {
      size_t room = sizeof(c->errtext) - 1 - c->errtext_len;
      size_t k = MINZ(room, (size_t)r);
      memcpy(c->errtext + c->errtext_len, buf, k);
      c->errtext_len += k;
      c->errtext[c->errtext_len] = '\0';
    }
    if ((size_t)r < sizeof(buf)) { /* a short read emptied the pipe */
      mark_drained(c, which);
      return;
    }
  }
}

uint64_t agent_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t agent_now_ms(void) { return agent_now_ns() / 1000000u; }

void agent_child_reaped(pid_t pid, int status) {
  agent_chan *c = agent_chan_by_pid(pid);
  if (!c) return; /* an orphan reparented to us, or a killed channel */
  c->reaped = 1;
  c->t_reap_ns = agent_now_ns();
  c->reaped_ms = c->t_reap_ns / 1000000u;
  c->status = status;
}

int agent_chan_in_grace(const agent_chan *c) {
  return c->kind == AGENT_CH_EXEC && c->pid > 0 && c->reaped && !c->exit_sent &&
         (c->fd_out >= 0 || c->fd_err >= 0);
}

void agent_chan_kill(agent_chan *c, int sig) {
  if (c->pid <= 0) return;
  /* The group outlives its leader while background members still hold the
   * output pipes (the channel is then waiting for EOF): signal the group
   * even after the leader was reaped. */
  if (kill(-c->pid, sig) < 0 && !c->reaped) kill(c->pid, sig);
}

static void send_exit(agent_chan *c) {
  ap_buf *o = agent_out();
  ap_frame_begin(o, AP_EXIT, c->id);
  if (WIFSIGNALED(c->status)) {
    ap_put_u32(o, AP_T_SIGNAL, (uint32_t)WTERMSIG(c->status));
  } else {
    ap_put_u32(o, AP_T_EXIT_CODE, (uint32_t)WEXITSTATUS(c->status));
  }
  if (c->exec_errno) ap_put_u32(o, AP_T_EXEC_ERRNO, (uint32_t)c->exec_errno);
  if (c->t_req_ns) {
    ap_put_u64(o, AP_T_AGENT_NS, agent_now_ns() - c->t_req_ns);
    ap_put_u64(o, AP_T_SPAWN_NS, c->t_reap_ns - c->t_fork_ns);
  }
  ap_frame_end(o);
}

void agent_chan_maybe_finish(agent_chan *c) {
  if (agent_chan_in_grace(c) && c->drained_ms &&
      agent_now_ms() >= c->drained_ms + AGENT_EXIT_GRACE_MS) {
    /* the command exited; background processes still hold its output */
    send_exit(c);
    c->exit_sent = 1;
    if (c->fd_in >= 0) {
      close(c->fd_in);
      c->fd_in = -1;
    }
    agent_chan_consumed(c, c->inlen); /* queued stdin is dropped */
    free(c->inbuf);
    c->inbuf = NULL;
    c->inlen = 0;
    return;
  }
  if (c->pid <= 0 || !c->reaped || c->fd_out >= 0 || c->fd_err >= 0) return;
  uint32_t id = c->id;
  if (c->kind == AGENT_CH_EXEC && c->exit_sent) {
    agent_chan_free(c);
    return;
  }
  if (c->kind == AGENT_CH_EXEC) {
    send_exit(c);
  } else if (WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0) {
    agent_send_ok(id);
  } else {
    /* the child wrote "reason\nmessage" on stderr */
    char *nl = strchr(c->errtext, '\n');
    const char *reason = CR_E_FILE_ERROR;
    const char *msg = c->errtext;
    if (nl) {
      *nl = '\0';
      reason = c->errtext;
      msg = nl + 1;
      char *end = strchr(nl + 1, '\n');
      if (end) *end = '\0';
    }
    if (!*msg) msg = WIFSIGNALED(c->status) ? "killed" : "failed";
    agent_send_error(id, reason, 0, "%s", msg);
  }
  agent_chan_free(c);
}

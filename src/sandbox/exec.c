/* Executions inside a sandbox: start, stream, signal, record. */
#include "sandbox/sandbox-internal.h"
#include "sandbox/out-ring.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/ulid.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Execution records: one file per sandbox, executions/slots, of SLOT_SIZE
 * slots, each one compact JSON record padded with blanks (a free slot is all
 * blanks). A record is rewritten in place with one aligned pwrite (a process
 * killed during it leaves all of it or none), so an exec allocates no inode:
 * on ext4 a new inode scans past the recently deleted ones, which had cost
 * most of the daemon's CPU per exec (~0.3-1 ms). A record too long for a
 * slot keeps a shortened argv ("argv_truncated"). Slots are reused once
 * their execution was pruned (KEEP_RECORDS). */
#define SLOT_SIZE 4096
#define SLOTS_MAX 4096 /* read at load: 16 MiB */

/* Output kept per execution: the newest OUT_RING_CAP bytes of both streams
 * in a byte ring (out-ring.h; no allocation per frame). */
/* Output kept by all executions of the daemon: beyond it, the buffers of the
 * oldest ended executions are freed (their records stay). */
#define OUT_TOTAL_CAP (256u << 20)
#define MAX_OBSERVERS 8
#define KEEP_OUTPUTS 32 /* ended executions per sandbox whose output is kept */
/* Ended execution records per sandbox (memory and executions/<id>.json):
 * beyond it the oldest are deleted. */
#define KEEP_RECORDS 512
#define STDIN_MAX_QUEUED (16u << 20)

struct sbx_exec {
  char id[27];
  sbx *s;
  json_t *argv;
  char *cwd;
  enum { EX_RUNNING, EX_EXITED, EX_FAILED } state;
  int exit_code, signal;
  bool timed_out, cancelled, stdin_open, tty;
  char *reason, *message;
  int64_t started_ms, ended_ms, running_ms; /* running_ms: the guest's STARTED */
  uint64_t daemon_ns; /* the daemon's own time: start handling + exit handling */
  /* the guest's part (0 when unknown): EXEC sent -> EXIT received on the
   * daemon's clock, and the agent's own total and spawn from the EXIT */
  uint64_t sent_ns, guest_rt_ns, agent_ns, spawn_ns;
  uint32_t channel;
  sbx_exec_observer obs[MAX_OBSERVERS];
  size_t nobs;
  out_ring out;      /* out.end: bytes of output produced (both streams) */
  uint64_t bytes[3]; /* per stream */
  uv_timer_t timer;
  bool timer_on, timer_init;
  /* its record: slot `slot` of executions/slots; -1 none yet, or (legacy)
   * executions/<id>.json as written before slots */
  int slot;
  bool legacy_file;
  bool argv_truncated; /* loaded from a record that had to shorten it */
};

const char *sbx_exec_id(const sbx_exec *e) { return e->id; }
bool sbx_exec_ended(const sbx_exec *e) { return e->state != EX_RUNNING; }

static const char *exec_state_name(const sbx_exec *e) {
  return e->state == EX_RUNNING ? "running" : e->state == EX_EXITED ? "exited" : "failed";
}

/* ns as ms with microsecond resolution */
static double us_ms(uint64_t ns) { return (double)(ns / 1000) / 1000.0; }

json_t *sbx_exec_to_json(const sbx_exec *e) {
  json_t *j = json_object();
  json_object_set_new(j, "id", json_string(e->id));
  json_object_set_new(j, "sandbox_id", json_string(e->s->id));
  json_object_set_new(j, "argv", json_incref(e->argv));
  if (e->argv_truncated) json_object_set_new(j, "argv_truncated", json_true());
  json_object_set_new(j, "cwd", json_string(e->cwd ? e->cwd : "/"));
  json_object_set_new(j, "state", json_string(exec_state_name(e)));
  json_object_set_new(j, "exit_code", e->state == EX_EXITED ? json_integer(e->exit_code) : json_null());
  json_object_set_new(j, "signal", e->signal ? json_integer(e->signal) : json_null());
  json_object_set_new(j, "timed_out", json_boolean(e->timed_out));
  if (e->tty) json_object_set_new(j, "tty", json_true());
  json_object_set_new(j, "cancelled", json_boolean(e->cancelled));
  json_object_set_new(j, "reason", e->reason ? json_string(e->reason) : json_null());
  json_object_set_new(j, "message", e->message ? json_string(e->message) : json_null());
  json_object_set_new(j, "started_at", sbx_time_json(e->started_ms));
  json_object_set_new(j, "ended_at", sbx_time_json(e->ended_ms));
  json_object_set_new(j, "output_bytes", json_pack("{s:I, s:I}", "stdout", (json_int_t)e->bytes[1],
                                                   "stderr", (json_int_t)e->bytes[2]));
  /* bytes produced that are no longer kept (ring cap, pruned output) */
  json_object_set_new(j, "output_dropped", json_integer((json_int_t)out_ring_dropped(&e->out)));
  /* phases: start = request sent -> process started in the guest,
   * run = process started -> exit reported, total = both */
  int64_t end = e->ended_ms ? e->ended_ms : sbx_now_ms();
  int64_t running = e->running_ms ? e->running_ms : end;
  json_object_set_new(j, "timing_ms",
                      json_pack("{s:I, s:I, s:I, s:f}", "start", (json_int_t)(running - e->started_ms),
                                "run", (json_int_t)(end - running), "total",
                                (json_int_t)(end - e->started_ms), "daemon",
                                (double)(e->daemon_ns / 1000) / 1000.0));
  if (e->agent_ns)
    json_object_set_new(json_object_get(j, "timing_ms"), "agent",
                        json_pack("{s:f, s:f, s:f}", "round_trip", us_ms(e->guest_rt_ns), "total",
                                  us_ms(e->agent_ns), "spawn", us_ms(e->spawn_ns)));
  return j;
}

/* The record's JSON, at most SLOT_SIZE - 1 bytes: argv shortened (fewer
 * and shorter arguments) when the whole one does not fit. NULL: out of
 * memory. */
static char *render_slot(const sbx_exec *e) {
  json_t *j = sbx_exec_to_json(e);
  if (!j) return NULL;
  char *txt = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
  size_t n = json_array_size(e->argv);
  for (size_t keep = n; txt && strlen(txt) >= SLOT_SIZE; keep = keep ? keep / 2 : 0) {
    free(txt);
    json_t *a = json_array();
    for (size_t i = 0; i < keep && i < 16; i++) {
      const char *v = json_string_value(json_array_get(e->argv, i));
      json_array_append_new(a, json_stringn(v ? v : "", v ? MIN(strlen(v), (size_t)128) : 0));
    }
    json_object_set_new(j, "argv", a);
    json_object_set_new(j, "argv_truncated", json_true());
    if (!keep) {
      json_object_del(j, "message");
      const char *cwd = e->cwd ? e->cwd : "/";
      json_object_set_new(j, "cwd", json_stringn(cwd, MIN(strlen(cwd), (size_t)256)));
    }
    txt = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    if (!keep && txt && strlen(txt) >= SLOT_SIZE) { /* cannot happen: a guard */
      free(txt);
      txt = NULL;
      break;
    }
  }
  json_decref(j);
  return txt;
}

/* The lowest slot no other execution of s holds. */
static int slot_alloc(const sbx *s, const sbx_exec *self) {
  size_t n = s->nexecs + 1;
  _cleanup_free_ bool *used = calloc(n, sizeof(*used));
  if (!used) return -1;
  for (size_t i = 0; i < s->nexecs; i++) {
    const sbx_exec *x = s->execs[i];
    if (x != self && x->slot >= 0 && (size_t)x->slot < n) used[x->slot] = true;
  }
  for (size_t i = 0; i < n; i++)
    if (!used[i]) return (int)i;
  return -1;
}

/* Writes txt (NULL: a free slot) into slot of s's executions/slots, through
 * a descriptor kept open for the sandbox (closed when it is removed). With
 * mkdir, a missing executions directory is made (once per sandbox, at an
 * execution's start); without, it stays missing (the sandbox was removed
 * meanwhile). */
static void slot_write(sbx *s, int slot, const char *txt, bool mkdir) {
  if (slot < 0 || s->removed) return;
  if (s->slots_fd < 0) {
    _cleanup_free_ char *dir = cr_path_join(s->dir, "executions");
    _cleanup_free_ char *path = dir ? cr_path_join(dir, "slots") : NULL;
    if (!path) return;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno == ENOENT && mkdir && cr_mkdir_p(dir, 0700) == 0)
      fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return;
    s->slots_fd = fd;
  }
  int fd = s->slots_fd;
  char buf[SLOT_SIZE];
  size_t len = txt ? strlen(txt) : 0;
  if (len > sizeof(buf) - 1) len = sizeof(buf) - 1;
  memcpy(buf, txt ? txt : "", len);
  memset(buf + len, ' ', sizeof(buf) - len);
  buf[sizeof(buf) - 1] = '\n';
  ssize_t w;
  do w = pwrite(fd, buf, sizeof(buf), (off_t)slot * SLOT_SIZE);
  while (w < 0 && errno == EINTR);
  if (w != (ssize_t)sizeof(buf)) log_warn("execution records of %s: %s", s->id,
                                          w < 0 ? strerror(errno) : "short write");
}

/* Writes e's record. At an execution's start (mkdir) the directory is made
 * when missing; at its end it is not (the sandbox may have gone). */
static void exec_write(sbx_exec *e, bool mkdir) {
  if (e->s->removed || e->legacy_file) return;
  if (e->slot < 0) e->slot = slot_alloc(e->s, e);
  _cleanup_free_ char *txt = render_slot(e);
  if (txt) slot_write(e->s, e->slot, txt, mkdir);
}

static void exec_save(sbx_exec *e) { exec_write(e, true); }

static void timer_closed(uv_handle_t *h) { free(h->data); }

void sbx_exec_free(sbx_exec *e) {
  if (!e) return;
  json_decref(e->argv);
  free(e->cwd);
  free(e->reason);
  free(e->message);
  e->s->m->output_bytes -= e->out.cap;
  out_ring_release(&e->out);
  if (e->timer_init) {
    /* the timer handle owns the struct until it is closed */
    e->timer.data = e;
    uv_timer_stop(&e->timer);
    uv_close((uv_handle_t *)&e->timer, timer_closed);
    return;
  }
  free(e);
}

static void release_output(sbx_exec *x) {
  x->s->m->output_bytes -= x->out.cap;
  out_ring_release(&x->out);
}

static void delete_record(sbx_exec *x) {
  if (x->slot >= 0) {
    slot_write(x->s, x->slot, NULL, false);
    x->slot = -1;
    return;
  }
  if (!x->legacy_file) return;
  _cleanup_free_ char *dir = cr_path_join(x->s->dir, "executions");
  char name[40];
  snprintf(name, sizeof(name), "%s.json", x->id);
  _cleanup_free_ char *path = dir ? cr_path_join(dir, name) : NULL;
  if (path) unlink(path);
}

/* Daemon memory stays bounded: only the newest KEEP_OUTPUTS ended executions
 * of a sandbox keep their buffered output, and only the newest KEEP_RECORDS
 * ended records are kept at all (older ones are deleted, file included).
 * Called when an execution ends: nothing observes an ended execution. */
static void prune_outputs(sbx *s) {
  size_t ended = 0, w = s->nexecs;
  for (size_t i = s->nexecs; i-- > 0;) {
    sbx_exec *x = s->execs[i];
    if (x->state == EX_RUNNING) continue;
    ended++;
    if (ended > KEEP_OUTPUTS && x->out.cap) release_output(x);
    if (ended > KEEP_RECORDS && x->nobs == 0) {
      delete_record(x);
      if (s->last_exec_id && !strcmp(s->last_exec_id, x->id)) {
        free(s->last_exec_id);
        s->last_exec_id = NULL;
      }
      sbx_exec_free(x);
      s->execs[i] = NULL;
      w--;
    }
  }
  if (w != s->nexecs) {
    size_t k = 0;
    for (size_t i = 0; i < s->nexecs; i++)
      if (s->execs[i]) s->execs[k++] = s->execs[i];
    s->nexecs = k;
  }
}

/* The daemon-wide cap: free the output of the oldest ended executions
 * (ids are ULIDs: the smallest is the oldest). */
static void prune_total(sbx_manager *m) {
  while (m->output_bytes > OUT_TOTAL_CAP) {
    sbx_exec *oldest = NULL;
    for (size_t i = 0; i < m->n; i++)
      for (size_t k = 0; k < m->list[i]->nexecs; k++) {
        sbx_exec *x = m->list[i]->execs[k];
        if (x->state != EX_RUNNING && x->out.cap && (!oldest || strcmp(x->id, oldest->id) < 0))
          oldest = x;
      }
    if (!oldest) return; /* all of it belongs to running executions */
    release_output(oldest);
  }
}

static void finish(sbx_exec *e) {
  uint64_t t0 = (uint64_t)cr_mono_ns();
  if (e->timer_on) {
    e->timer_on = false;
    uv_timer_stop(&e->timer);
  }
  e->ended_ms = sbx_now_ms();
  prune_outputs(e->s);
  /* observers may unobserve during the callback: iterate over a copy */
  sbx_exec_observer obs[MAX_OBSERVERS];
  size_t n = e->nobs;
  memcpy(obs, e->obs, n * sizeof(*obs));
  e->nobs = 0;
  /* counted before the observers: what they do with it (answer a client)
   * is theirs. The record is rendered and written once they were told (a
   * file open on the host's disk and the JSON, ~0.1-1 ms of every exec's
   * answer). Nothing they do frees an execution (only prune_outputs, above,
   * and the sandbox's end later on the loop do): the check is a guard. */
  e->daemon_ns += (uint64_t)cr_mono_ns() - t0;
  sbx *s = e->s;
  for (size_t i = 0; i < n; i++)
    if (obs[i].ended) obs[i].ended(obs[i].ud, e);
  for (size_t i = 0; i < s->nexecs; i++)
    if (s->execs[i] == e) {
      exec_write(e, false); /* its directory exists: the start wrote it */
      break;
    }
}

static void keep_output(sbx_exec *e, int stream, const uint8_t *p, size_t n) {
  size_t before = e->out.cap;
  out_ring_append(&e->out, stream, p, n);
  e->bytes[stream] += n;
  if (e->out.cap != before) {
    e->s->m->output_bytes += e->out.cap - before;
    prune_total(e->s->m);
  }
}

static void on_event(void *ud, const agent_event *ev) {
  sbx_exec *e = ud;
  if (e->state != EX_RUNNING) return;
  switch (ev->type) {
  case AGENT_EV_STARTED:
    if (!e->running_ms) e->running_ms = sbx_now_ms();
    return;
  case AGENT_EV_STDOUT:
  case AGENT_EV_STDERR: {
    int stream = ev->type == AGENT_EV_STDOUT ? 1 : 2;
    keep_output(e, stream, ev->data, ev->len);
    for (size_t i = 0; i < e->nobs; i++)
      if (e->obs[i].output) e->obs[i].output(e->obs[i].ud, e, stream, ev->data, ev->len);
    return;
  }
  case AGENT_EV_EXIT: {
    e->state = EX_EXITED;
    if (ev->exit.agent_ns && e->sent_ns) {
      e->guest_rt_ns = (uint64_t)cr_mono_ns() - e->sent_ns;
      e->agent_ns = ev->exit.agent_ns;
      e->spawn_ns = ev->exit.spawn_ns;
    }
    if (ev->exit.signal > 0) {
      e->signal = (int)ev->exit.signal;
      e->exit_code = 128 + (int)ev->exit.signal;
    } else if (ev->exit.has_code) {
      e->exit_code = (int)(ev->exit.code & 0xff);
    }
    if (ev->exit.exec_failed) {
      e->reason = strdup(e->exit_code == 127 ? CR_E_COMMAND_NOT_FOUND : CR_E_INVALID_ARGUMENT);
      const char *cmd = json_string_value(json_array_get(e->argv, 0));
      if (asprintf(&e->message, "%s: %s", e->exit_code == 127 ? "command not found" : "cannot execute",
                   cmd ? cmd : "") < 0)
        e->message = NULL;
    }
    break;
  }
  case AGENT_EV_ERROR:
    e->state = EX_FAILED;
    e->exit_code = -1;
    e->reason = strdup(ev->error.reason ? ev->error.reason : CR_E_AGENT_PROTOCOL);
    if (ev->error.message) e->message = strdup(ev->error.message);
    break;
  default:
    return; /* ignore unexpected events */
  }
  finish(e);
}

static void on_timeout(uv_timer_t *t) {
  sbx_exec *e = t->data;
  e->timer_on = false;
  if (e->state != EX_RUNNING) return;
  e->timed_out = true;
  agent_exec_signal(e->s->agent, e->channel, SIGKILL);
}

/* Room for one more execution record. */
static int execs_reserve(sbx *s) {
  if (s->nexecs < s->capexecs) return 0;
  size_t nc = s->capexecs ? s->capexecs * 2 : 16;
  sbx_exec **nv = realloc(s->execs, nc * sizeof(*s->execs));
  if (!nv) return -ENOMEM;
  s->execs = nv;
  s->capexecs = nc;
  return 0;
}

int sbx_exec_start(sbx *s, const sbx_exec_params *p, sbx_exec **ret, cr_error **err) {
  uint64_t t0 = (uint64_t)cr_mono_ns();
  if (sbx_check_ready(s, err) < 0) return -1;
  size_t argc = json_array_size(p->argv);
  if (argc == 0 || argc > 4096)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "argv must have 1-4096 strings");
  /* the guest's argv and env: borrowed from the JSON (and the gateway's) */
  _cleanup_json_ json_t *genv = NULL;
  bool own_git_config = false;
  size_t i;
  json_t *v;
  json_array_foreach(p->env, i, v) {
    const char *kv = json_string_value(v);
    own_git_config |= kv && !strncmp(kv, "GIT_CONFIG_COUNT=", 17);
  }
  if (s->gw && !own_git_config) {
    /* git in the guest goes through the host gateway (docs/gateway.md),
     * unless the caller sets git's environment config itself */
    genv = gw_exec_env(s->gw);
  }
  size_t envc = json_array_size(p->env) + json_array_size(genv);
  _cleanup_free_ const char **argv = calloc(argc, sizeof(*argv));
  _cleanup_free_ const char **env = calloc(envc + 1, sizeof(*env));
  if (!argv || !env) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "exec");
  json_array_foreach(p->argv, i, v) {
    if (!json_is_string(v))
      return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "argv[%zu] is not a string", i);
    argv[i] = json_string_value(v);
  }
  size_t k = 0;
  json_array_foreach(p->env, i, v) {
    const char *kv = json_string_value(v);
    if (!kv || !strchr(kv, '='))
      return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "env[%zu] must be a \"KEY=VALUE\" string", i);
    env[k++] = kv;
  }
  json_array_foreach(genv, i, v) env[k++] = json_string_value(v);
  agent_exec_req req = {
      .argv = argv, .argc = argc, .env = env, .envc = k, .cwd = p->cwd,
      .stdin_open = p->stdin_open, .tty = p->tty, .rows = p->rows, .cols = p->cols,
  };
  sbx_exec *e = execs_reserve(s) == 0 ? calloc(1, sizeof(*e)) : NULL;
  if (!e) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "exec");
  cr_ulid_new(e->id);
  e->s = s;
  e->slot = -1;
  e->argv = json_incref(p->argv);
  e->cwd = p->cwd ? strdup(p->cwd) : NULL;
  e->stdin_open = p->stdin_open;
  e->tty = p->tty;
  e->started_ms = sbx_now_ms();
  long ch = agent_exec_start(s->agent, &req, on_event, e);
  if (ch < 0) {
    sbx_exec_free(e);
    if (ch == -EMSGSIZE)
      return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "the command is too large (over 1 MiB)");
    return cr_error_set(err, CR_E_AGENT_UNAVAILABLE, (int)-ch, "sending the command to the guest");
  }
  e->sent_ns = (uint64_t)cr_mono_ns();
  e->channel = (uint32_t)ch;
  s->execs[s->nexecs++] = e;
  free(s->last_exec_id);
  s->last_exec_id = strdup(e->id);
  if (p->timeout_ms) {
    uv_timer_init(s->m->loop, &e->timer);
    e->timer.data = e;
    e->timer_init = e->timer_on = true;
    uv_timer_start(&e->timer, on_timeout, p->timeout_ms, 0);
  }
  exec_save(e);
  e->daemon_ns += (uint64_t)cr_mono_ns() - t0;
  *ret = e;
  return 0;
}

int sbx_exec_observe(sbx_exec *e, const sbx_exec_observer *o) {
  if (e->nobs == MAX_OBSERVERS) return -EBUSY;
  e->obs[e->nobs++] = *o;
  return 0;
}

void sbx_exec_unobserve(sbx_exec *e, void *ud) {
  for (size_t i = 0; i < e->nobs; i++)
    if (e->obs[i].ud == ud) {
      e->obs[i] = e->obs[--e->nobs];
      return;
    }
}

int sbx_exec_write(sbx_exec *e, const void *data, size_t n, bool eof, cr_error **err) {
  if (e->state != EX_RUNNING)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "execution %s has ended", e->id);
  if (!e->stdin_open)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "execution %s was started without stdin (stdin: true)", e->id);
  size_t queued = agent_channel_queued(e->s->agent, e->channel);
  if (n && queued + n > STDIN_MAX_QUEUED)
    return cr_error_set(err, CR_E_AGENT_UNAVAILABLE, 0,
                        "the guest is not consuming stdin of %s (%zu bytes still queued); "
                        "retry the write later", e->id, queued);
  int r = 0;
  if (n) r = agent_exec_stdin(e->s->agent, e->channel, data, n);
  if (r == 0 && eof) {
    r = agent_exec_stdin_close(e->s->agent, e->channel);
    e->stdin_open = false;
  }
  if (r < 0) return cr_error_set(err, CR_E_AGENT_UNAVAILABLE, -r, "writing stdin");
  return 0;
}

int sbx_exec_resize(sbx_exec *e, uint16_t rows, uint16_t cols, cr_error **err) {
  if (!e->tty)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "execution %s has no terminal (tty: true) to resize", e->id);
  if (!rows || !cols)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "rows and cols must be 1-65535");
  if (e->state != EX_RUNNING) return 0;
  int r = agent_exec_resize(e->s->agent, e->channel, rows, cols);
  if (r < 0) return cr_error_set(err, CR_E_AGENT_UNAVAILABLE, -r, "resizing the terminal");
  return 0;
}

int sbx_exec_signal(sbx_exec *e, int signo, cr_error **err) {
  if (e->state != EX_RUNNING) return 0;
  e->cancelled = true;
  int r = agent_exec_signal(e->s->agent, e->channel, signo);
  if (r < 0) return cr_error_set(err, CR_E_AGENT_UNAVAILABLE, -r, "signalling the command");
  return 0;
}

sbx_exec *sbx_exec_find(sbx_manager *m, const char *id) {
  if (!id) return NULL;
  bool last = !strcmp(id, "last") || !strcmp(id, "--last");
  sbx_exec *best = NULL;
  for (size_t i = 0; i < m->n; i++)
    for (size_t k = 0; k < m->list[i]->nexecs; k++) {
      sbx_exec *e = m->list[i]->execs[k];
      if (last ? (!best || strcmp(e->id, best->id) > 0) : !strcmp(e->id, id)) best = e;
    }
  return best;
}

static int cmp_exec(const void *a, const void *b) {
  return strcmp((*(sbx_exec *const *)b)->id, (*(sbx_exec *const *)a)->id);
}

sbx_exec **sbx_exec_list(sbx_manager *m, const char *sandbox_id, size_t *ret_n) {
  size_t n = 0, cap = 16;
  sbx_exec **v = malloc(cap * sizeof(*v));
  for (size_t i = 0; v && i < m->n; i++) {
    if (sandbox_id && strcmp(m->list[i]->id, sandbox_id)) continue;
    for (size_t k = 0; k < m->list[i]->nexecs; k++) {
      if (n == cap) {
        cap *= 2;
        sbx_exec **nv = realloc(v, cap * sizeof(*v));
        if (!nv) break;
        v = nv;
      }
      v[n++] = m->list[i]->execs[k];
    }
  }
  if (v) qsort(v, n, sizeof(*v), cmp_exec);
  *ret_n = v ? n : 0;
  return v;
}

uint64_t sbx_exec_replay(sbx_exec *e, uint64_t cursor,
                         void (*fn)(void *ud, int stream, const uint8_t *data, size_t n),
                         void *ud) {
  return out_ring_each(&e->out, cursor, fn, ud);
}

typedef struct gather {
  cr_buf buf[3]; /* [1] stdout, [2] stderr: at most the ring's size each */
} gather;

static void gather_piece(void *ud, int stream, const uint8_t *data, size_t n) {
  gather *g = ud;
  cr_buf_append(&g->buf[stream], data, n); /* an error is kept in the buffer */
}

json_t *sbx_exec_read(sbx_exec *e, uint64_t cursor, cr_buf streams[2]) {
  gather g = {{{0}, {0}, {0}}};
  uint64_t dropped = out_ring_each(&e->out, cursor, gather_piece, &g);
  bool failed = g.buf[1].err || g.buf[2].err;
  json_t *j = failed ? NULL : json_object();
  for (int s = 1; s <= 2; s++) {
    if (j) streams[s - 1] = g.buf[s];
    else cr_buf_free(&g.buf[s]);
  }
  if (!j) return NULL; /* out of memory */
  json_object_set_new(j, "cursor", json_integer((json_int_t)e->out.end));
  json_object_set_new(j, "dropped", json_integer((json_int_t)dropped));
  json_object_set_new(j, "state", json_string(exec_state_name(e)));
  json_object_set_new(j, "execution", sbx_exec_to_json(e));
  return j;
}

void sbx_execs_abort(sbx *s, const char *why) {
  for (size_t i = 0; i < s->nexecs; i++) {
    sbx_exec *e = s->execs[i];
    if (e->state != EX_RUNNING) continue;
    if (s->agent) agent_channel_forget(s->agent, e->channel);
    e->state = EX_FAILED;
    e->cancelled = true;
    e->reason = strdup(CR_E_EXECUTION_CANCELLED);
    e->message = strdup(why);
    finish(e);
  }
}

static uint64_t ms_ns(const json_t *v) {
  double ms = json_number_value(v);
  return ms > 0 && ms < 1e12 ? (uint64_t)(ms * 1e6 + 0.5) : 0;
}

/* One execution from its record (j stolen); NULL when it has none or out
 * of memory. */
static sbx_exec *exec_from_record(sbx *s, json_t *j, const char *id) {
  sbx_exec *e = calloc(1, sizeof(*e));
  if (!e) {
    json_decref(j);
    return NULL;
  }
  memcpy(e->id, id, 26);
  e->s = s;
  e->slot = -1;
  e->argv = json_incref(json_object_get(j, "argv"));
  if (!e->argv) e->argv = json_array();
  e->argv_truncated = json_is_true(json_object_get(j, "argv_truncated"));
  const char *cwd = json_string_value(json_object_get(j, "cwd"));
  e->cwd = cwd ? strdup(cwd) : NULL;
  const char *st = json_string_value(json_object_get(j, "state"));
  json_t *ec = json_object_get(j, "exit_code");
  if (st && !strcmp(st, "exited") && json_is_integer(ec)) {
    e->state = EX_EXITED;
    e->exit_code = (int)json_integer_value(ec);
  } else {
    e->state = EX_FAILED;
    e->exit_code = -1;
  }
  e->signal = (int)json_integer_value(json_object_get(j, "signal"));
  e->timed_out = json_is_true(json_object_get(j, "timed_out"));
  e->cancelled = json_is_true(json_object_get(j, "cancelled"));
  const char *r = json_string_value(json_object_get(j, "reason"));
  const char *msg = json_string_value(json_object_get(j, "message"));
  if (st && !strcmp(st, "running")) {
    r = CR_E_EXECUTION_CANCELLED;
    msg = "the daemon restarted while the command ran; its output stream was lost";
  }
  e->reason = r ? strdup(r) : NULL;
  e->message = msg ? strdup(msg) : NULL;
  json_t *times = json_object_get(j, "timing_ms");
  e->started_ms = sbx_time_from_json(json_object_get(j, "started_at"));
  e->ended_ms = sbx_time_from_json(json_object_get(j, "ended_at"));
  if (!e->ended_ms) e->ended_ms = e->started_ms + json_integer_value(json_object_get(times, "total"));
  e->running_ms = e->started_ms + json_integer_value(json_object_get(times, "start"));
  json_t *ag = json_object_get(times, "agent");
  e->guest_rt_ns = ms_ns(json_object_get(ag, "round_trip"));
  e->agent_ns = ms_ns(json_object_get(ag, "total"));
  e->spawn_ns = ms_ns(json_object_get(ag, "spawn"));
  json_decref(j);
  return e;
}

static bool add_loaded(sbx *s, sbx_exec *e) {
  if (!e) return false;
  if (execs_reserve(s) < 0) {
    sbx_exec_free(e);
    return false;
  }
  s->execs[s->nexecs++] = e;
  return true;
}

/* executions/slots: every slot that holds a record (a broken one is
 * skipped: its slot is free again). */
static void load_slots(sbx *s, const char *dir) {
  _cleanup_free_ char *path = cr_path_join(dir, "slots");
  _cleanup_close_ int fd = path ? open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) : -1;
  if (fd < 0) return;
  char buf[SLOT_SIZE];
  for (int slot = 0; slot < SLOTS_MAX; slot++) {
    ssize_t n = pread(fd, buf, sizeof(buf), (off_t)slot * SLOT_SIZE);
    if (n <= 0) break;
    size_t k = 0;
    while (k < (size_t)n && (buf[k] == ' ' || buf[k] == '\n' || buf[k] == '\0')) k++;
    if (k == (size_t)n) continue; /* free */
    json_t *j = json_loadb(buf + k, (size_t)n - k, 0, NULL);
    const char *id = json_string_value(json_object_get(j, "id"));
    if (!cr_ulid_valid(id)) {
      json_decref(j);
      continue;
    }
    char idc[27];
    memcpy(idc, id, 27);
    sbx_exec *e = exec_from_record(s, j, idc);
    if (e) e->slot = slot;
    if (!add_loaded(s, e)) break;
  }
}

void sbx_execs_load(sbx *s) {
  _cleanup_free_ char *dir = cr_path_join(s->dir, "executions");
  if (!dir) return;
  load_slots(s, dir);
  /* records written before slots: executions/<id>.json */
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d))) {
    size_t l = strlen(de->d_name);
    char idc[27];
    if (l != 31 || strcmp(de->d_name + 26, ".json")) continue;
    memcpy(idc, de->d_name, 26);
    idc[26] = '\0';
    if (!cr_ulid_valid(idc)) continue;
    _cleanup_free_ char *path = cr_path_join(dir, de->d_name);
    json_t *j = json_load_file(path, 0, NULL);
    if (!j) continue;
    sbx_exec *e = exec_from_record(s, j, idc);
    if (e) e->legacy_file = true;
    if (!add_loaded(s, e)) break;
  }
  closedir(d);
}

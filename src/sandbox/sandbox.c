/* Sandbox registry and lifecycle state machine: the manager, the registry,
 * states and waiters, failure, stopping and removing a sandbox's VMM and
 * files. See sandbox.h; the other parts: sandbox-create.c (create),
 * sandbox-boot.c (launch -> agent -> ready), sandbox-store.c (state.json),
 * sandbox-reattach.c (daemon restart). */
#include "sandbox/sandbox.h"
#include "sandbox/sandbox-internal.h"
#include "sandbox/template.h"
#include "backend/cgroup.h"
#include "boot/boot.h"
#include "image/image.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/paths.h"
#include "util/spawn.h"
#include "util/ulid.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

static const char *state_names[] = {"provisioning", "ready", "stopping", "stopped",
                                    "failed"};
const char *sbx_state_name(sbx_state s) { return state_names[s]; }

int64_t sbx_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

json_t *sbx_time_json(int64_t ms) {
  if (ms <= 0) return json_null();
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[64];
  snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
  return json_string(buf);
}

int64_t sbx_time_from_json(json_t *j) {
  const char *s = json_string_value(j);
  if (!s) return 0;
  struct tm tm = {0};
  int msec = 0;
  if (sscanf(s, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
             &tm.tm_min, &tm.tm_sec, &msec) < 6)
    return 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return (int64_t)timegm(&tm) * 1000 + msec;
}

/* ---- manager */

sbx_manager *sbx_manager_new(uv_loop_t *loop, cr_error **err) {
  sbx_manager *m = calloc(1, sizeof(*m));
  if (!m) {
    cr_error_set(err, CR_E_INTERNAL, ENOMEM, "sandbox manager");
    return NULL;
  }
  m->loop = loop;
  m->dir = cr_data_path("sandboxes");
  m->backend = backend_default();
  int r = m->dir ? cr_mkdir_p(m->dir, 0700) : -ENOMEM;
  if (r < 0) {
    cr_error_set(err, CR_E_INTERNAL, -r, "creating %s", m->dir ? m->dir : "sandboxes dir");
    free(m->dir);
    free(m);
    return NULL;
  }
  const char *bt = getenv("CLEANROOM_BOOT_TIMEOUT_MS");
  m->boot_timeout_ms = bt ? strtoull(bt, NULL, 10) : 0;
  if (m->boot_timeout_ms == 0) m->boot_timeout_ms = 120000;
  sbx_console_watch_start(m);
  const char *tv = getenv("CLEANROOM_TEMPLATES");
  m->templates_off = tv && !strcmp(tv, "0");
  m->tmpl = tmpl_registry_new(loop, m->backend);
  if (m->tmpl) tmpl_gc(m->tmpl);
  if (!m->templates_off) m->pool = sbx_pool_new(m);
  return m;
}

uv_loop_t *sbx_manager_loop(sbx_manager *m) { return m->loop; }

egress *sbx_manager_egress(sbx_manager *m) {
  if (!m->egress) {
    cr_error *err = NULL;
    if (egress_new(m->loop, &m->egress, &err) < 0) {
      log_warn("egress: %s", err ? err->message : "unavailable");
      cr_error_free(err);
      return NULL;
    }
  }
  if (m->egress && !m->gateway_tried) {
    m->gateway_tried = true;
    cr_error *err = NULL;
    if (gw_new(m->loop, m->egress, &m->gateway, &err) < 0) {
      log_warn("gateway: %s", err ? err->message : "unavailable");
      cr_error_free(err);
    }
  }
  return m->egress;
}

void sbx_detach_net(sbx *s) {
  if (s->gw) {
    gw_detach(s->gw);
    s->gw = NULL;
  }
  if (s->net) {
    egress_detach(s->net);
    s->net = NULL;
  }
}

/* Attaches the sandbox's network (slot < 0: a new address). */
int sbx_attach_net(sbx *s, int slot, cr_error **err) {
  egress *eg = sbx_manager_egress(s->m);
  if (!eg) return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, 0, "egress is not available");
  if (egress_attach(eg, s->id, s->policy, slot, &s->net, err) < 0) return -1;
  s->net_slot = egress_sbx_slot(s->net);
  if (s->m->gateway && gw_attach(s->m->gateway, s->net, &s->gw, err) < 0) {
    egress_detach(TAKE_PTR(s->net));
    return -1;
  }
  snprintf(s->net_mac, sizeof(s->net_mac), "52:54:00:%02x:%02x:%02x", (s->net_slot >> 16) & 0xff,
           (s->net_slot >> 8) & 0xff, s->net_slot & 0xff);
  return 0;
}

int sbx_registry_add(sbx_manager *m, sbx *s) {
  if (m->n == m->cap) {
    size_t nc = m->cap ? m->cap * 2 : 16;
    sbx **nl = realloc(m->list, nc * sizeof(*m->list));
    if (!nl) return -ENOMEM;
    m->list = nl;
    m->cap = nc;
  }
  m->list[m->n++] = s;
  return 0;
}

void sbx_registry_remove(sbx_manager *m, sbx *s) {
  for (size_t i = 0; i < m->n; i++)
    if (m->list[i] == s) {
      memmove(&m->list[i], &m->list[i + 1], (m->n - i - 1) * sizeof(*m->list));
      m->n--;
      return;
    }
}

/* Newest first: by creation time (a sandbox from the VMM pool has an id
 * from when its VMM started), then id. */
static int cmp_newest(const void *a, const void *b) {
  const sbx *x = *(sbx *const *)a, *y = *(sbx *const *)b;
  if (x->created_ms != y->created_ms) return x->created_ms > y->created_ms ? -1 : 1;
  return strcmp(y->id, x->id);
}

sbx *sbx_find(sbx_manager *m, const char *id) {
  if (!id) return NULL;
  if (!strcmp(id, "last") || !strcmp(id, "--last")) {
    sbx *best = NULL;
    for (size_t i = 0; i < m->n; i++)
      if (!best || cmp_newest(&m->list[i], &best) < 0) best = m->list[i];
    return best;
  }
  for (size_t i = 0; i < m->n; i++)
    if (!strcmp(m->list[i]->id, id)) return m->list[i];
  return NULL;
}

sbx **sbx_list(sbx_manager *m, size_t *ret_n) {
  sbx **v = calloc(m->n + 1, sizeof(*v));
  if (!v) {
    *ret_n = 0;
    return NULL;
  }
  if (m->n) {
    memcpy(v, m->list, m->n * sizeof(*v));
    qsort(v, m->n, sizeof(*v), cmp_newest);
  }
  *ret_n = m->n;
  return v;
}

const char *sbx_id(const sbx *s) { return s->id; }
sbx_state sbx_get_state(const sbx *s) { return s->state; }
agent_conn *sbx_agent(sbx *s) { return s->agent; }

int sbx_check_ready(const sbx *s, cr_error **err) {
  if (s->state == SBX_READY && agent_conn_ready(s->agent)) return 0;
  if (s->state == SBX_FAILED)
    return cr_error_set(err, CR_E_SANDBOX_NOT_READY, 0, "sandbox %s failed (%s: %s); remove it with 'cleanroom sandbox rm %s' and create a new one",
                        s->id, s->reason ? s->reason : "unknown", s->message ? s->message : "", s->id);
  return cr_error_set(err, CR_E_SANDBOX_NOT_READY, 0, "sandbox %s is %s, not ready", s->id,
                      sbx_state_name(s->state));
}

/* The RAM file when it is the sandbox's own (not a template's). */
void sbx_unlink_ram(sbx *s) {
  if (s->ram_path && s->ram_owned) unlink(s->ram_path);
}

static void sbx_unref_handle(uv_handle_t *h);

static void stop_boot_timer(sbx *s) {
  if (s->boot_timer_on) {
    s->boot_timer_on = false;
    uv_timer_stop(&s->boot_timer);
  }
}

void sbx_notify_waiters(sbx *s, const cr_error *err) {
  /* Waiters may add new waiters or free things: take the list. */
  sbx_waiter *w = s->waiters;
  size_t n = s->nwaiters;
  s->waiters = NULL;
  s->nwaiters = s->capwaiters = 0;
  for (size_t i = 0; i < n; i++) {
    cr_error *e = NULL;
    if (err) cr_error_set(&e, err->reason, 0, "%s", err->message);
    w[i].cb(w[i].ud, err ? NULL : s, e);
  }
  free(w);
}

static void finish_terminate(sbx *s);

/* ---- removing files off the loop: unlinking a guest's RAM file or a
 * sparse scratch disk frees their pages and extents, tens of ms each. */

typedef struct rm_work {
  uv_work_t w;
  char *paths[2];
} rm_work;

static void rm_run(uv_work_t *w) {
  rm_work *k = w->data;
  for (size_t i = 0; i < ELEMENTSOF(k->paths); i++)
    if (k->paths[i]) {
      int r = cr_rm_rf(k->paths[i]);
      if (r < 0) log_warn("removing %s: %s", k->paths[i], strerror(-r));
    }
}

static void rm_done(uv_work_t *w, int status) {
  rm_work *k = w->data;
  for (size_t i = 0; i < ELEMENTSOF(k->paths); i++) free(k->paths[i]);
  free(k);
}

/* Removes a and b (files or trees; either may be NULL) on the thread pool,
 * or here when that is not possible. Takes the strings. */
static void remove_later(uv_loop_t *loop, char *a, char *b) {
  rm_work *k = calloc(1, sizeof(*k));
  if (k) {
    k->paths[0] = a;
    k->paths[1] = b;
    k->w.data = k;
    if (uv_queue_work(loop, &k->w, rm_run, rm_done) == 0) return;
  }
  if (a) cr_rm_rf(a);
  if (b) cr_rm_rf(b);
  free(a);
  free(b);
  free(k);
}

static void unlink_ram_later(sbx *s) {
  if (s->ram_path && s->ram_owned) remove_later(s->m->loop, strdup(s->ram_path), NULL);
}

/* The VMM is gone (stop() reported). */
static void on_vm_stopped(void *ud, backend_vm *vm, cr_error *err) {
  sbx *s = ud;
  if (err) log_warn("sandbox %s: %s", s->id, err->message);
  cr_error_free(err);
  s->vm_stopping = false;
  s->stopping_vm = NULL;
  bool relaunch = TAKE_PTR(s->relaunch_pending);
  /* else finish_terminate removes it; a relaunch removed the old one itself */
  if (!s->term_cb && !relaunch) unlink_ram_later(s);
  if (s->fail_err) {
    cr_error *e = TAKE_PTR(s->fail_err);
    sbx_notify_waiters(s, e);
    cr_error_free(e);
  }
  if (s->term_cb) {
    if (!s->vm_killing) finish_terminate(s);
  } else if (relaunch && s->state == SBX_PROVISIONING) {
    sbx_launch_vm(s);
  }
  sbx_unref_handle_cb(s);
}

/* A VMM a restore replaced is gone. */
static void on_vm_killed(void *ud, backend_vm *vm, cr_error *err) {
  sbx *s = ud;
  if (err) log_warn("sandbox %s: %s", s->id, err->message);
  cr_error_free(err);
  s->vm_killing--;
  if (s->term_cb && !s->vm_stopping && !s->vm_killing) finish_terminate(s);
  sbx_unref_handle_cb(s);
}

/* Kills the VMM at once (its VM is thrown away): no QMP quit reaches the
 * directory's socket, so the next VMM can start beside the dying one. */
void sbx_kill_vmm(sbx *s) {
  if (!s->vm) return;
  backend_vm *vm = TAKE_PTR(s->vm);
  s->vm_killing++;
  s->handles++;
  backend_vm_ops(vm)->kill(vm, on_vm_killed, s);
}

/* Asks the backend to end the VMM (asynchronous; idempotent). */
void sbx_stop_vmm(sbx *s) {
  if (!s->vm) return;
  backend_vm *vm = TAKE_PTR(s->vm);
  s->vm_stopping = true;
  s->stopping_vm = vm;
  s->handles++;
  backend_vm_ops(vm)->stop(vm, on_vm_stopped, s);
}

char *sbx_console_tail(sbx *s) {
  _cleanup_free_ char *p = cr_path_join(s->dir, "console.log");
  char *r = NULL;
  if (!p || cr_read_file_tail(p, 1200, &r, NULL) < 0 || !*r) {
    free(r);
    return strdup("(no console output)");
  }
  for (char *c = r; *c; c++)
    if ((unsigned char)*c < 0x20 && *c != '\n') *c = ' ';
  return r;
}

void sbx_set_failed(sbx *s, const char *reason, const char *fmt, ...) {
  if (s->state == SBX_FAILED || s->state == SBX_STOPPED) return;
  va_list ap;
  va_start(ap, fmt);
  char *msg = NULL;
  if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
  va_end(ap);
  free(s->reason);
  free(s->message);
  s->reason = strdup(reason);
  s->message = msg;
  s->state = SBX_FAILED;
  stop_boot_timer(s);
  sbx_reattach_settled(s);
  if (s->agent) {
    agent_conn *a = s->agent;
    s->agent = NULL;
    agent_conn_close(a);
  }
  sbx_stop_vmm(s);
  sbx_save_state(s);
  log_warn("%s %s failed: %s: %s", s->pooled ? "pool entry" : "sandbox", s->id, reason,
           msg ? msg : "");
  /* the pool discards a failed entry; a sandbox that is not starting any
   * more lets a refill start */
  sbx_pool_kick(s->m, s->pooled ? 0 : SBX_POOL_REFILL_DELAY_MS);
  cr_error *e = NULL;
  cr_error_set(&e, reason, 0, "sandbox %s: %s", s->id, msg ? msg : "failed");
  if (s->vm_stopping) {
    /* waiters hear of the failure once the VMM is gone */
    cr_error_free(s->fail_err);
    s->fail_err = e;
    return;
  }
  unlink_ram_later(s);
  sbx_notify_waiters(s, e);
  cr_error_free(e);
}

void sbx_when_ready(sbx *s, sbx_ready_cb done, void *ud) {
  if (s->state != SBX_PROVISIONING) {
    cr_error *e = NULL;
    if (s->state != SBX_READY) sbx_check_ready(s, &e);
    done(ud, e ? NULL : s, e);
    return;
  }
  if (s->nwaiters == s->capwaiters) {
    size_t nc = s->capwaiters ? s->capwaiters * 2 : 4;
    sbx_waiter *nw = realloc(s->waiters, nc * sizeof(*s->waiters));
    if (!nw) {
      cr_error *e = NULL;
      cr_error_set(&e, CR_E_INTERNAL, ENOMEM, "waiting for sandbox %s", s->id);
      done(ud, NULL, e);
      return;
    }
    s->waiters = nw;
    s->capwaiters = nc;
  }
  s->waiters[s->nwaiters++] = (sbx_waiter){done, ud};
}

void sbx_progress(sbx *s, const char *phase, const char *msg) {
  log_debug("sandbox %s: +%lld ms: %s", s->id, (long long)(sbx_now_ms() - s->boot_start_ms), phase);
  if (s->progress_cb) s->progress_cb(s->progress_ud, phase, msg);
}

/* ---- free */

void sbx_free(sbx *s) {
  if (s->slots_fd >= 0) close(s->slots_fd);
  for (size_t i = 0; i < s->nexecs; i++) sbx_exec_free(s->execs[i]);
  free(s->execs);
  free(s->dir);
  free(s->reason);
  free(s->message);
  free(s->image_ref);
  free(s->image_digest);
  free(s->image_path);
  free(s->ram_path);
  free(s->policy_hash);
  json_decref(s->workspace);
  free(s->last_exec_id);
  free(s->template_key);
  free(s->from_snapshot);
  free(s->restore_dir);
  free(s->scratch_src);
  json_decref(s->events);
  json_decref(s->policy);
  free(s->waiters);
  cr_error_free(s->fail_err);
  sbx_manager *m = s->m;
  free(s);
  if (m) {
    m->live--;
    sbx_manager_maybe_free(m);
  }
}

sbx *sbx_alloc(sbx_manager *m) {
  sbx *s = calloc(1, sizeof(*s));
  if (s) {
    s->m = m;
    s->slots_fd = -1;
    m->live++;
  }
  return s;
}

void sbx_unref_handle_cb(sbx *s) {
  if (--s->handles == 0 && s->removed) sbx_free(s);
}

static void sbx_unref_handle(uv_handle_t *h) { sbx_unref_handle_cb(h->data); }

void sbx_hold(sbx *s) { s->handles++; }
void sbx_unhold(sbx *s) { sbx_unref_handle_cb(s); }

void sbx_release(sbx *s) {
  /* called once the sandbox left the registry */
  s->removed = true;
  if (s->slots_fd >= 0) {
    close(s->slots_fd);
    s->slots_fd = -1;
  }
  if (s->boot_timer_init) {
    s->boot_timer_init = false;
    stop_boot_timer(s);
    s->handles++;
    uv_close((uv_handle_t *)&s->boot_timer, sbx_unref_handle);
  }
  if (s->handles == 0) sbx_free(s);
}

/* ---- VMM events */

void sbx_on_vm_exited(void *ud, backend_vm *vm, int status, int sig, const char *why) {
  sbx *s = ud;
  if (vm != s->vm) return;
  if (s->state == SBX_STOPPING || s->state == SBX_STOPPED || s->state == SBX_FAILED) return;
  _cleanup_free_ char *tail = sbx_console_tail(s);
  sbx_set_failed(s, CR_E_VMM_EXITED, "%s; console tail: %s", why, tail ? tail : "");
}

void sbx_stop_boot_timer(sbx *s) { stop_boot_timer(s); }

void sbx_release_entry(sbx *s) { sbx_release(s); }

void sbx_detach_progress(sbx *s) {
  s->progress_cb = NULL;
  s->progress_ud = NULL;
}

static void finish_terminate(sbx *s) {
  sbx_terminate_cb cb = TAKE_PTR(s->term_cb);
  void *ud = s->term_ud;
  sbx_detach_net(s); /* the VMM is gone: its TAP, chains, set and resolver go too */
  backend_cgroup_remove(s->id); /* and its cgroup (when the backend did not see it end) */
  cr_error *e = NULL;
  cr_error_set(&e, CR_E_SANDBOX_NOT_FOUND, 0, "sandbox %s was removed while starting", s->id);
  s->state = SBX_STOPPED;
  sbx_notify_waiters(s, e);
  cr_error_free(e);
  /* the directory leaves its name at once (a rename), its contents and the
   * RAM file go on the thread pool; a crash in between leaves a .trash-
   * dir that the next daemon start removes */
  sbx_crash_point("terminate-rm");
  cr_error *err = NULL;
  char *trash = NULL;
  if (asprintf(&trash, "%s/.trash-%s", s->m->dir, s->id) < 0) trash = NULL;
  if (!trash || rename(s->dir, trash) < 0) {
    free(trash);
    trash = NULL;
    int r = errno == ENOENT ? 0 : cr_rm_rf(s->dir);
    if (r < 0) cr_error_set(&err, CR_E_IO, -r, "removing the sandbox directory");
  }
  /* a clone's RAM file is its template's: never removed with the clone */
  remove_later(s->m->loop, trash, s->ram_path && s->ram_owned ? strdup(s->ram_path) : NULL);
  sbx_release(s);
  cb(ud, err);
}

int sbx_terminate(sbx_manager *m, sbx *s, sbx_terminate_cb done, void *ud, cr_error **err) {
  if (s->state == SBX_STOPPING || s->term_cb)
    return cr_error_set(err, CR_E_SANDBOX_NOT_FOUND, 0, "sandbox %s is being removed", s->id);
  bool was_failed = s->state == SBX_FAILED;
  s->state = SBX_STOPPING;
  if (!was_failed) sbx_save_state(s);
  sbx_crash_point("terminate-stopping");
  stop_boot_timer(s);
  sbx_reattach_settled(s);
  sbx_execs_abort(s, "the sandbox was removed");
  if (s->agent) {
    agent_conn *a = s->agent;
    s->agent = NULL;
    agent_conn_close(a);
  }
  sbx_registry_remove(m, s);
  s->term_cb = done;
  s->term_ud = ud;
  sbx_stop_vmm(s);
  /* a failure still waiting for its VMM to go: the removal reports it
   * (as do VMMs a restore replaced that are not reaped yet) */
  if (!s->vm_stopping && !s->vm_killing) finish_terminate(s);
  return 0;
}

/* ---- workspace record (src/workspace) */

json_t *sbx_workspace(const sbx *s) { return s->workspace; }

char *sbx_ws_disk(const sbx *s) {
  char *p = cr_path_join(s->dir, SBX_WS_DISK);
  if (p && access(p, F_OK) < 0) {
    free(p);
    return NULL;
  }
  return p;
}

int sbx_ws_disk_blank(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return -errno;
  int r = ftruncate(fd, (off_t)SBX_WS_DISK_MIB << 20) < 0 ? -errno : 0;
  close(fd);
  return r;
}

void sbx_set_workspace(sbx *s, json_t *ws) {
  json_t *old = s->workspace;
  s->workspace = ws ? json_deep_copy(ws) : NULL;
  json_decref(old);
  sbx_save_state(s);
}

void sbx_manager_free(sbx_manager *m) {
  if (!m) return;
  while (m->n > 0) {
    sbx *s = m->list[--m->n];
    stop_boot_timer(s);
    sbx_execs_abort(s, "the daemon is shutting down");
    if (s->agent) {
      agent_conn *a = s->agent;
      s->agent = NULL;
      agent_conn_close(a);
    }
    /* the VMM keeps running; a restarted daemon attaches to it. So does its
     * network; only the resolver stops until then */
    backend_vm_forget(TAKE_PTR(s->vm));
    if (s->gw) gw_detach(TAKE_PTR(s->gw));
    if (s->net) egress_release(TAKE_PTR(s->net));
    sbx_release(s);
  }
  free(m->list);
  sbx_pool_shutdown(m);
  free(m->scratch_blank);
  tmpl_registry_free(m->tmpl);
  gw_free(m->gateway);
  egress_free(m->egress);
  boot_assets_free(m->assets);
  free(m->dir);
  if (!sbx_console_watch_stop(m)) {
    m->dead = true;
    sbx_manager_maybe_free(m);
  }
}

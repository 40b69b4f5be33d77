/* Sandbox registry and lifecycle. See sandbox.h. */
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

#define SCRATCH_SIZE_MIB 4096

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

static void detach_net(sbx *s) {
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
static int attach_net(sbx *s, int slot, cr_error **err) {
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

static int registry_add(sbx_manager *m, sbx *s) {
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

static void registry_remove(sbx_manager *m, sbx *s) {
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

/* ---- state persistence */

json_t *sbx_to_json(const sbx *s) {
  json_t *j = json_object();
  json_object_set_new(j, "id", json_string(s->id));
  json_object_set_new(j, "state", json_string(sbx_state_name(s->state)));
  json_object_set_new(j, "reason", s->reason ? json_string(s->reason) : json_null());
  json_object_set_new(j, "message", s->message ? json_string(s->message) : json_null());
  json_object_set_new(j, "image", json_pack("{s:s?, s:s?}", "ref", s->image_ref, "digest",
                                            s->image_digest));
  json_object_set_new(j, "vcpus", json_integer(s->vcpus));
  json_object_set_new(j, "memory_mib", json_integer(s->memory_mib));
  json_object_set_new(j, "backend", json_string(s->m->backend->name));
  json_object_set_new(j, "accel", json_string(backend_accel()));
  json_object_set_new(j, "created_at", sbx_time_json(s->created_ms));
  json_object_set_new(j, "ready_at", sbx_time_json(s->ready_ms));
  json_object_set_new(j, "policy_hash", s->policy_hash ? json_string(s->policy_hash) : json_null());
  json_object_set_new(j, "policy", s->policy ? json_incref(s->policy) : json_null());
  json_object_set_new(j, "network", s->net ? egress_sbx_json(s->net) : json_null());
  json_object_set_new(j, "last_execution_id",
                      s->last_exec_id ? json_string(s->last_exec_id) : json_null());
  json_object_set_new(j, "vmm_pid", s->pid > 0 ? json_integer(s->pid) : json_null());
  json_object_set_new(j, "timing_ms", json_pack("{s:I, s:I}", "boot", (json_int_t)s->boot_ms,
                                                 "restore", (json_int_t)s->restore_ms));
  json_object_set_new(j, "boot", json_pack("{s:s, s:s?, s:s?}", "mode",
                                           s->boot_mode ? s->boot_mode : "cold", "template",
                                           s->template_key, "from_snapshot", s->from_snapshot));
  json_object_set_new(j, "events", s->events ? json_incref(s->events) : json_array());
  json_object_set_new(j, "workspace", s->workspace ? json_deep_copy(s->workspace) : json_null());
  return j;
}

#define SBX_MAX_EVENTS 64

void sbx_event(sbx *s, const char *type, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = NULL;
  if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
  va_end(ap);
  if (!s->events) s->events = json_array();
  while (json_array_size(s->events) >= SBX_MAX_EVENTS) json_array_remove(s->events, 0);
  json_array_append_new(s->events, json_pack("{s:o, s:s, s:s}", "time",
                                             sbx_time_json(sbx_now_ms()), "type", type,
                                             "message", msg ? msg : ""));
  log_info("sandbox %s: %s: %s", s->id, type, msg ? msg : "");
  free(msg);
}

static void save_state(sbx *s) {
  if (s->removed || s->pooled) return; /* a pool entry has no journal */
  json_t *j = sbx_to_json(s);
  json_object_set_new(j, "image_path", json_string(s->image_path ? s->image_path : ""));
  json_object_set_new(j, "ram_path", s->ram_path ? json_string(s->ram_path) : json_null());
  json_object_set_new(j, "ram_owned", json_boolean(s->ram_owned));
  json_object_set_new(j, "net_slot", s->net_slot >= 0 ? json_integer(s->net_slot) : json_null());
  char *txt = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(j);
  _cleanup_free_ char *path = cr_path_join(s->dir, "state.json");
  if (txt && path) {
    int r = cr_write_file_atomic(path, txt, strlen(txt), 0600);
    if (r < 0) log_error("writing %s: %s", path, strerror(-r));
  }
  free(txt);
}

static void set_failed(sbx *s, const char *reason, const char *fmt, ...) _printf_(3, 4);

void sbx_save_state(sbx *s) { save_state(s); }

/* The RAM file when it is the sandbox's own (not a template's). */
static void unlink_ram(sbx *s) {
  if (s->ram_path && s->ram_owned) unlink(s->ram_path);
}

static void sbx_unref_handle(uv_handle_t *h);
static void sbx_unref_handle_cb(sbx *s);
static void reattach_settled(sbx *s);

static void stop_boot_timer(sbx *s) {
  if (s->boot_timer_on) {
    s->boot_timer_on = false;
    uv_timer_stop(&s->boot_timer);
  }
}

static void notify_waiters(sbx *s, const cr_error *err) {
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

static int launch_vm(sbx *s);

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
    notify_waiters(s, e);
    cr_error_free(e);
  }
  if (s->term_cb) {
    if (!s->vm_killing) finish_terminate(s);
  } else if (relaunch && s->state == SBX_PROVISIONING) {
    launch_vm(s);
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
static void kill_vmm(sbx *s) {
  if (!s->vm) return;
  backend_vm *vm = TAKE_PTR(s->vm);
  s->vm_killing++;
  s->handles++;
  backend_vm_ops(vm)->kill(vm, on_vm_killed, s);
}

/* Asks the backend to end the VMM (asynchronous; idempotent). */
static void stop_vmm(sbx *s) {
  if (!s->vm) return;
  backend_vm *vm = TAKE_PTR(s->vm);
  s->vm_stopping = true;
  s->stopping_vm = vm;
  s->handles++;
  backend_vm_ops(vm)->stop(vm, on_vm_stopped, s);
}

static char *console_tail(sbx *s) {
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

static void set_failed(sbx *s, const char *reason, const char *fmt, ...) {
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
  reattach_settled(s);
  if (s->agent) {
    agent_conn *a = s->agent;
    s->agent = NULL;
    agent_conn_close(a);
  }
  stop_vmm(s);
  save_state(s);
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
  notify_waiters(s, e);
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

static void progress(sbx *s, const char *phase, const char *msg) {
  log_debug("sandbox %s: +%lld ms: %s", s->id, (long long)(sbx_now_ms() - s->boot_start_ms), phase);
  if (s->progress_cb) s->progress_cb(s->progress_ud, phase, msg);
}

/* ---- free */

static void sbx_free(sbx *s) {
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
    m->live++;
  }
  return s;
}

static void sbx_unref_handle_cb(sbx *s) {
  if (--s->handles == 0 && s->removed) sbx_free(s);
}

static void sbx_unref_handle(uv_handle_t *h) { sbx_unref_handle_cb(h->data); }

void sbx_hold(sbx *s) { s->handles++; }
void sbx_unhold(sbx *s) { sbx_unref_handle_cb(s); }

static void sbx_release(sbx *s) {
  /* called once the sandbox left the registry */
  s->removed = true;
  if (s->boot_timer_init) {
    s->boot_timer_init = false;
    stop_boot_timer(s);
    s->handles++;
    uv_close((uv_handle_t *)&s->boot_timer, sbx_unref_handle);
  }
  if (s->handles == 0) sbx_free(s);
}

/* ---- VMM events */

static void on_vm_exited(void *ud, backend_vm *vm, int status, int sig, const char *why) {
  sbx *s = ud;
  if (vm != s->vm) return;
  if (s->state == SBX_STOPPING || s->state == SBX_STOPPED || s->state == SBX_FAILED) return;
  _cleanup_free_ char *tail = console_tail(s);
  set_failed(s, CR_E_VMM_EXITED, "%s; console tail: %s", why, tail ? tail : "");
}

/* ---- boot sequence: launch -> agent hello -> activate -> ready */

static void on_agent_state(agent_conn *c, void *ud, int status, const char *message,
                           const uint8_t *hello, size_t hello_len);

static void on_activated(void *ud, const agent_event *ev) {
  sbx *s = ud;
  if (s->state != SBX_PROVISIONING) return;
  if (ev->type != AGENT_EV_OK) {
    const char *msg = ev->error.message;
    set_failed(s, CR_E_RUNTIME_LAUNCH_FAILED, "the guest could not activate: %s",
               msg ? msg : "unknown error");
    return;
  }
  if (s->pooled) {
    sbx_pool_activated(s); /* warm-up, pause */
    return;
  }
  stop_boot_timer(s);
  s->state = SBX_READY;
  s->ready_ms = sbx_now_ms();
  s->boot_ms = (uint64_t)(s->ready_ms - s->boot_start_ms);
  save_state(s);
  progress(s, "ready", "sandbox ready");
  log_info("sandbox %s ready in %llu ms", s->id, (unsigned long long)s->boot_ms);
  sbx_pool_kick(s->m, SBX_POOL_REFILL_DELAY_MS);
  notify_waiters(s, NULL);
}

static void send_activate(sbx *s) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint8_t seed[64];
  bool seeded = getrandom(seed, sizeof(seed), 0) == sizeof(seed);
  char host[32];
  snprintf(host, sizeof(host), "cleanroom-%.10s", s->id + 16); /* the random part */
  agent_activate_req a = {
      .set_time = true,
      .time_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec,
      .seed = seeded ? seed : NULL,
      .seed_len = seeded ? sizeof(seed) : 0,
      .hostname = host,
      .image_dev = "serial:cr-image",
      .scratch_dev = "serial:cr-scratch",
  };
  if (s->net) {
    a.net_addr = egress_sbx_guest_cidr(s->net);
    a.net_gateway = a.net_dns = egress_sbx_host_addr(s->net);
  }
  int r = agent_activate(s->agent, &a, on_activated, s);
  if (r < 0) set_failed(s, CR_E_RUNTIME_LAUNCH_FAILED, "cannot send activate: %s", strerror(-r));
}

static void on_agent_state(agent_conn *c, void *ud, int status, const char *message,
                           const uint8_t *hello, size_t hello_len) {
  sbx *s = ud;
  if (status == 0) {
    if (s->state == SBX_PROVISIONING) {
      if (s->reattaching) {
        stop_boot_timer(s);
        s->state = SBX_READY;
        save_state(s);
        log_info("sandbox %s re-attached", s->id);
        sbx_pool_kick(s->m, SBX_POOL_REFILL_DELAY_MS);
        reattach_settled(s);
        notify_waiters(s, NULL);
      } else {
        progress(s, "activate", "guest agent answered; activating");
        send_activate(s);
      }
    }
    return;
  }
  /* connection failed or lost */
  if (s->state == SBX_STOPPING || s->state == SBX_STOPPED || s->state == SBX_FAILED) return;
  if (!s->vm || !backend_vm_ops(s->vm)->alive(s->vm)) {
    _cleanup_free_ char *tail = console_tail(s);
    set_failed(s, CR_E_VMM_EXITED, "the VMM (pid %d) exited; console tail: %s", (int)s->pid,
               tail ? tail : "");
  } else {
    set_failed(s, CR_E_AGENT_UNAVAILABLE, "lost the guest agent: %s", message ? message : "");
  }
}

static void on_agent_stream(void *ud, backend_vm *vm, int fd, cr_error *err) {
  sbx *s = ud;
  if (vm != s->vm || s->state != SBX_PROVISIONING) {
    if (fd >= 0) close(fd);
    cr_error_free(err);
    return;
  }
  if (fd < 0) {
    set_failed(s, cr_error_reason(err), "%s", err ? err->message : "no agent stream");
    cr_error_free(err);
    return;
  }
  s->agent = agent_conn_new(s->m->loop, on_agent_state, s);
  if (!s->agent) {
    close(fd);
    set_failed(s, CR_E_INTERNAL, "out of memory");
    return;
  }
  int r = agent_conn_open(s->agent, fd);
  if (r < 0 && s->agent)
    set_failed(s, CR_E_RUNTIME_LAUNCH_FAILED, "cannot use the agent stream: %s", uv_strerror(r));
}

static void connect_agent(sbx *s) {
  cr_error *err = NULL;
  if (backend_vm_ops(s->vm)->connect_agent(s->vm, on_agent_stream, s, &err) < 0) {
    set_failed(s, cr_error_reason(err), "cannot reach the guest agent: %s", err ? err->message : "");
    cr_error_free(err);
  }
}

static void launch_cold(sbx *s, const char *why);

static void on_vm_ready(void *ud, backend_vm *vm, cr_error *err) {
  sbx *s = ud;
  if (vm != s->vm) {
    cr_error_free(err);
    return;
  }
  bool restored = TAKE_PTR(s->restoring);
  if (restored) s->restore_ms = (uint64_t)(sbx_now_ms() - s->restore_start_ms);
  if (err && restored && s->boot_mode && !strcmp(s->boot_mode, "clone") &&
      s->state == SBX_PROVISIONING) {
    /* the template is unusable: boot this sandbox cold, say why */
    _cleanup_free_ char *why = NULL;
    if (s->agent) {
      agent_conn *a = s->agent;
      s->agent = NULL;
      agent_conn_close(a);
    }
    if (asprintf(&why, "restoring template %s failed: %s", s->template_key, err->message) < 0)
      why = NULL;
    cr_error_free(err);
    stop_vmm(s);
    launch_cold(s, why ? why : "restoring the template failed");
    return;
  }
  if (err) {
    if (restored)
      set_failed(s, CR_E_SNAPSHOT_FAILED, "restoring snapshot %s: %s",
                 s->from_snapshot ? s->from_snapshot : "?", err->message);
    else
      set_failed(s, cr_error_reason(err), "%s", err->message);
    cr_error_free(err);
    return;
  }
  /* (an early agent connection may have activated the guest already) */
  if (s->state != SBX_PROVISIONING && s->state != SBX_READY) return;
  s->pid = backend_vm_pid(vm);
  save_state(s);
  if (s->state != SBX_PROVISIONING) return;
  if (!s->reattaching) sbx_crash_point("create-pid-saved");
  if (!s->reattaching) progress(s, "boot", "VMM started; waiting for the guest agent");
  if (!s->agent_early) connect_agent(s);
}

static const backend_events vm_events = {.ready = on_vm_ready, .exited = on_vm_exited};

static void vm_config(sbx *s, backend_vm_config *cfg, const char *scratch, const char *ws);

static void vm_config(sbx *s, backend_vm_config *cfg, const char *scratch, const char *ws) {
  sbx_manager *m = s->m;
  *cfg = (backend_vm_config){
      .workspace = ws,
      .id = s->id,
      .dir = s->dir,
      .kernel = m->assets ? (m->assets->vmlinux ? m->assets->vmlinux : m->assets->kernel) : NULL,
      .initrd = m->assets ? m->assets->initrd : NULL,
      .image = s->image_path,
      .scratch = scratch,
      .ram_path = s->ram_path,
      .vcpus = s->vcpus,
      .memory_mib = s->memory_mib,
      .ram_private = s->ram_private,
  };
  if (s->net) {
    cfg->net.tap = egress_sbx_tap(s->net);
    cfg->net.mac = s->net_mac;
    cfg->net.guest_addr = egress_sbx_guest_cidr(s->net);
    cfg->net.host_addr = egress_sbx_host_addr(s->net);
  }
}

static void on_boot_timeout(uv_timer_t *t) {
  sbx *s = t->data;
  s->boot_timer_on = false;
  if (s->state != SBX_PROVISIONING) return;
  if (s->tmpl_waiting) {
    /* the template build has the same deadline and reports soon */
    s->boot_expired = true;
    return;
  }
  _cleanup_free_ char *tail = console_tail(s);
  set_failed(s, CR_E_RUNTIME_LAUNCH_FAILED,
             "the guest agent did not answer within %llu ms; the VM was killed. Console tail: %s",
             (unsigned long long)s->m->boot_timeout_ms, tail ? tail : "");
}

static void start_boot_timer(sbx *s) {
  if (!s->boot_timer_init) {
    uv_timer_init(s->m->loop, &s->boot_timer);
    s->boot_timer.data = s;
    s->boot_timer_init = true;
  }
  s->boot_timer_on = true;
  uv_timer_start(&s->boot_timer, on_boot_timeout, s->m->boot_timeout_ms, 0);
}

void sbx_stop_boot_timer(sbx *s) { stop_boot_timer(s); }

/* A pre-formatted sparse scratch disk, copied per sandbox. */
static int scratch_template(char **ret, cr_error **err) {
  _cleanup_free_ char *cache = cr_data_path("cache");
  if (!cache) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "paths");
  cr_mkdir_p(cache, 0700);
  char name[64];
  snprintf(name, sizeof(name), "scratch-%dM.ext4", SCRATCH_SIZE_MIB);
  _cleanup_free_ char *path = cr_path_join(cache, name);
  if (access(path, R_OK) == 0) {
    *ret = TAKE_PTR(path);
    return 0;
  }
  _cleanup_free_ char *tmp = NULL;
  if (asprintf(&tmp, "%s.tmp.%d", path, (int)getpid()) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "paths");
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return cr_error_set(err, CR_E_IO, errno, "creating %s", tmp);
  int r = ftruncate(fd, (off_t)SCRATCH_SIZE_MIB << 20);
  close(fd);
  if (r < 0) return cr_error_set(err, CR_E_IO, errno, "sizing %s", tmp);
  char *argv[] = {(char *)"mkfs.ext4", (char *)"-q", (char *)"-F", (char *)"-L",
                  (char *)"cr-scratch", (char *)"-E",
                  (char *)"lazy_itable_init=1,lazy_journal_init=1,discard", tmp, NULL};
  _cleanup_free_ char *out = NULL;
  r = cr_run(argv, &out, 4096, err);
  if (r != 0) {
    unlink(tmp);
    if (r > 0) cr_error_set(err, CR_E_IO, 0, "mkfs.ext4 failed: %s", out ? out : "");
    return -1;
  }
  if (rename(tmp, path) < 0) {
    unlink(tmp);
    return cr_error_set(err, CR_E_IO, errno, "renaming %s", tmp);
  }
  *ret = TAKE_PTR(path);
  return 0;
}

static int build_boot_assets(boot_assets **ret, cr_error **err) {
  _cleanup_free_ char *kdir = cr_kernel_dir();
  _cleanup_free_ char *agent = boot_find_agent();
  if (!agent)
    return cr_error_set(err, CR_E_AGENT_NOT_FOUND, 0,
                        "cleanroom-agent not found; set CLEANROOM_AGENT or reinstall cleanroom");
  return boot_assets_ensure(kdir, agent, ret, err);
}

/* ---- preparing a sandbox's files off the loop (thread pool): the boot
 * assets (initramfs build, once), the scratch template (mkfs.ext4, once),
 * the sparse copy of the scratch disk. */

typedef struct prepare_work {
  uv_work_t w;
  sbx *s;
  bool need_assets;
  boot_assets *assets;
  char *scratch; /* destination */
  char *scratch_src; /* fork: the snapshot's scratch disk (else the blank template) */
  char *ws_disk;     /* destination of the workspace disk */
  char *ws_src;      /* fork: the snapshot's workspace disk (NULL: blank, or none) */
  bool ws_none;      /* fork of a snapshot without one: no workspace disk */
  char *tmpl;        /* out: the blank scratch template (for boot templates) */
  cr_error *err;
} prepare_work;

/* Serializes the shared, build-once files between worker threads. */
static uv_mutex_t prepare_lock;
static uv_once_t prepare_once = UV_ONCE_INIT;
static void prepare_lock_init(void) { uv_mutex_init(&prepare_lock); }

static void prepare_run(uv_work_t *w) {
  prepare_work *pw = w->data;
  _cleanup_free_ char *tmpl = NULL;
  uv_mutex_lock(&prepare_lock);
  int r = pw->need_assets ? build_boot_assets(&pw->assets, &pw->err) : 0;
  if (r < 0)
    cr_error_wrap(&pw->err, "preparing the boot assets");
  else if ((r = scratch_template(&tmpl, &pw->err)) < 0)
    cr_error_wrap(&pw->err, "scratch disk");
  uv_mutex_unlock(&prepare_lock);
  if (r < 0) return;
  pw->tmpl = strdup(tmpl);
  if (!pw->ws_none && pw->ws_disk) { /* a blank one, or a fork's copy */
    r = pw->ws_src ? cr_copy_file_clone(pw->ws_src, pw->ws_disk, 0600)
                   : sbx_ws_disk_blank(pw->ws_disk);
    if (r < 0) {
      cr_error_set(&pw->err, CR_E_IO, -r, "preparing %s", pw->ws_disk);
      return;
    }
  }
  /* a fork's disk now; a create's once it is known whether a boot
   * template's disk or the blank one is copied (launch_vm) */
  if (!pw->scratch_src) return;
  /* a reflink when the filesystem shares blocks, else a sparse copy */
  r = cr_copy_file_clone(pw->scratch_src, pw->scratch, 0600);
  if (r < 0) cr_error_set(&pw->err, CR_E_IO, -r, "preparing %s", pw->scratch);
}

static int launch_vm(sbx *s);
static void start_vm(sbx *s, const char *scratch_tmpl);
static int copy_scratch(sbx *s);

static void prepare_done(uv_work_t *w, int status) {
  prepare_work *pw = w->data;
  sbx *s = pw->s;
  sbx_manager *m = s->m;
  if (pw->assets) {
    if (!m->assets)
      m->assets = TAKE_PTR(pw->assets);
    else
      boot_assets_free(TAKE_PTR(pw->assets));
  }
  if (status < 0 && !pw->err) cr_error_set(&pw->err, CR_E_INTERNAL, -status, "preparing");
  if (pw->tmpl && !m->scratch_blank) m->scratch_blank = strdup(pw->tmpl);
  if (pw->scratch_src && !pw->err) s->scratch_ready = true;
  if (s->removed) {
    cr_rm_rf(s->dir); /* the copy may have run after the removal */
  } else if (s->state == SBX_PROVISIONING && pw->err) {
    /* as before the create was asynchronous: no sandbox is left behind */
    s->state = SBX_STOPPED;
    registry_remove(m, s);
    cr_rm_rf(s->dir);
    notify_waiters(s, pw->err);
    sbx_release(s);
  } else if (s->state == SBX_PROVISIONING) {
    start_vm(s, pw->tmpl);
  }
  cr_error_free(pw->err);
  free(pw->tmpl);
  free(pw->scratch_src);
  free(pw->scratch);
  free(pw->ws_disk);
  free(pw->ws_src);
  free(pw);
  sbx_unref_handle_cb(s);
}

/* ---- the sandbox's scratch disk, copied on the thread pool before its
 * VMM starts: a clone's from its template (whose guest has it mounted),
 * else the blank one. */

typedef struct copy_work {
  uv_work_t w;
  sbx *s;
  char *src, *dst, *ws;
  int r;
} copy_work;

static void copy_run(uv_work_t *w) {
  copy_work *k = w->data;
  /* a reflink when the filesystem shares blocks, else a sparse copy */
  k->r = cr_copy_file_clone(k->src, k->dst, 0600);
  /* a blank workspace disk, unless prepare_run made one (or a fork's) */
  if (k->r == 0 && k->ws && access(k->ws, F_OK) < 0) k->r = sbx_ws_disk_blank(k->ws);
}

static void copy_done(uv_work_t *w, int status) {
  copy_work *k = w->data;
  sbx *s = k->s;
  s->scratch_copying = false;
  if (status < 0 && k->r == 0) k->r = status;
  if (s->removed) {
    cr_rm_rf(s->dir); /* the copy may have run after the removal */
  } else if (s->state == SBX_PROVISIONING) {
    if (k->r < 0) {
      set_failed(s, CR_E_IO, "preparing the scratch disk %s from %s: %s", k->dst, k->src,
                 strerror(-k->r));
    } else {
      s->scratch_ready = true;
      launch_vm(s);
    }
  }
  free(k->src);
  free(k->dst);
  free(k->ws);
  free(k);
  sbx_unref_handle_cb(s);
}

static int copy_scratch(sbx *s) {
  if (s->scratch_copying) return 0;
  const char *src = s->scratch_src ? s->scratch_src : s->m->scratch_blank;
  copy_work *k = calloc(1, sizeof(*k));
  if (k) {
    k->s = s;
    k->src = src ? strdup(src) : NULL;
    k->dst = cr_path_join(s->dir, "scratch.ext4");
    k->ws = cr_path_join(s->dir, SBX_WS_DISK);
    k->w.data = k;
  }
  if (!k || !k->src || !k->dst || !k->ws) {
    if (k) free(k->src), free(k->dst), free(k->ws);
    free(k);
    set_failed(s, CR_E_INTERNAL, "preparing the scratch disk: %s",
               src ? "out of memory" : "no blank scratch disk");
    return -1;
  }
  s->scratch_copying = true;
  s->handles++;
  int r = uv_queue_work(s->m->loop, &k->w, copy_run, copy_done);
  if (r < 0) {
    s->handles--;
    s->scratch_copying = false;
    free(k->src);
    free(k->dst);
    free(k->ws);
    free(k);
    set_failed(s, CR_E_INTERNAL, "cannot queue the scratch copy: %s", uv_strerror(r));
    return -1;
  }
  return 0;
}

/* Starts the VMM as s says: cold (launch) or from s->restore_dir. */
static int launch_vm(sbx *s) {
  sbx_manager *m = s->m;
  if (s->vm_stopping) {
    /* the previous VMM of this dir still goes: its QMP quit would reach the
     * new one's socket; on_vm_stopped launches */
    s->relaunch_pending = true;
    return 0;
  }
  if (!s->scratch_ready) return copy_scratch(s);
  _cleanup_free_ char *scratch = cr_path_join(s->dir, "scratch.ext4");
  _cleanup_free_ char *wsd = sbx_ws_disk(s);
  backend_vm_config cfg;
  vm_config(s, &cfg, scratch, wsd);
  progress(s, "launch", "starting the VMM");
  cr_error *lerr = NULL;
  int r;
  s->agent_early = false;
  if (s->restore_dir) {
    s->restoring = true;
    s->restore_start_ms = sbx_now_ms();
    r = m->backend->restore(m->loop, &cfg, s->restore_dir, &vm_events, s, &s->vm, &lerr);
    /* The agent socket at once (it exists before the VMM runs): the guest
     * was saved with its host connected, and a VMM whose socket is
     * connected when the state is loaded shows the guest no hang-up and new
     * connection (its agent would reset, sleep and wake again); HELLO waits
     * in the socket until the guest runs. */
    if (r == 0 && s->vm) {
      s->agent_early = true;
      connect_agent(s);
    }
  } else {
    r = m->backend->launch(m->loop, &cfg, &vm_events, s, &s->vm, &lerr);
  }
  /* a pool entry has no journal: its pid is known from here (pool.c kills
   * it at a daemon stop however far it got) */
  if (r == 0 && s->pooled && s->vm) s->pid = backend_vm_pid(s->vm);
  if (r < 0) {
    s->vm = NULL;
    s->restoring = false;
    set_failed(s, cr_error_reason(lerr), "%s", lerr ? lerr->message : "launch failed");
    cr_error_free(lerr);
    return -1;
  }
  return 0;
}

static void launch_cold(sbx *s, const char *why) {
  s->boot_mode = "cold";
  free(s->restore_dir);
  s->restore_dir = NULL;
  free(s->template_key);
  s->template_key = NULL;
  /* the sandbox's own RAM file (created 0600 at create; again after a
   * clone's template RAM was used) */
  if (!s->ram_path || !s->ram_owned) {
    free(s->ram_path);
    s->ram_path = NULL;
    cr_error *e = NULL;
    if (sbx_ram_file_create(s->id, &s->ram_path, &e) < 0) {
      set_failed(s, cr_error_reason(e), "%s", e->message);
      cr_error_free(e);
      return;
    }
  }
  s->ram_owned = true;
  s->ram_private = false;
  sbx_event(s, "boot", "cold boot: %s", why);
  launch_vm(s);
}

static void on_template(void *ud, const char *dir, cr_error *err);

/* After the preparation: a fork (restore_dir set), a cold boot, or a clone
 * of the image's boot template (built first when there is none). */
static void start_vm(sbx *s, const char *scratch_tmpl) {
  sbx_manager *m = s->m;
  if (s->restore_dir) {
    launch_vm(s);
    return;
  }
  if (s->cold || m->templates_off || !m->tmpl || !scratch_tmpl) {
    launch_cold(s, s->cold ? "cold boot requested (--cold)"
                           : "templates are off (CLEANROOM_TEMPLATES=0)");
    return;
  }
  /* a sandbox with a network clones a template with a NIC (on no network
   * while it is built); the clone attaches that NIC to its own TAP */
  tmpl_spec spec = {s->image_digest, s->image_path,
                    m->assets->vmlinux ? m->assets->vmlinux : m->assets->kernel,
                    m->assets->initrd, s->vcpus, s->memory_mib, scratch_tmpl, s->net != NULL};
  progress(s, "template", "looking for a boot template");
  s->handles++;
  s->tmpl_waiting = true;
  /* a build ends by this sandbox's boot deadline (the sandbox's own timer
   * then waits for it: its VMM is gone when the failure is reported) */
  int64_t left = (int64_t)m->boot_timeout_ms - (sbx_now_ms() - s->boot_start_ms);
  tmpl_ensure(m->tmpl, &spec, left > 100 ? (uint64_t)left : 100, on_template, s);
}

static void on_template(void *ud, const char *dir, cr_error *err) {
  sbx *s = ud;
  if (s->removed || s->state != SBX_PROVISIONING) {
    cr_error_free(err);
    sbx_unref_handle_cb(s);
    return;
  }
  s->tmpl_waiting = false;
  sbx_unref_handle_cb(s);
  if (s->boot_expired) {
    set_failed(s, CR_E_RUNTIME_LAUNCH_FAILED,
               "the guest agent did not answer within %llu ms (building the boot template%s%s)",
               (unsigned long long)s->m->boot_timeout_ms, err ? ": " : "",
               err ? err->message : "");
    cr_error_free(err);
    return;
  }
  if (err) {
    _cleanup_free_ char *why = NULL;
    if (asprintf(&why, "no template: %s (%s)", err->message, cr_error_reason(err)) < 0) why = NULL;
    cr_error_free(err);
    launch_cold(s, why ? why : "no template");
    return;
  }
  const char *key = strrchr(dir, '/');
  s->template_key = strdup(key ? key + 1 : dir);
  s->boot_mode = "clone";
  unlink_ram(s); /* the RAM file made at create: a clone maps the template's */
  free(s->ram_path);
  s->ram_path = cr_path_join(dir, "ram");
  s->ram_owned = false;
  s->ram_private = true;
  free(s->restore_dir);
  s->restore_dir = cr_path_join(dir, "state");
  /* the template's guest has its scratch disk mounted: the clone's is a
   * copy of that one */
  free(s->scratch_src);
  s->scratch_src = cr_path_join(dir, "scratch.ext4");
  sbx_event(s, "boot", "clone of template %s", s->template_key);
  launch_vm(s);
}

int sbx_relaunch_restore(sbx *s, const char *state_dir, const char *snapshot_id,
                         const char *ram, const char *scratch_new, cr_error **err) {
  if (s->state != SBX_READY && s->state != SBX_FAILED)
    return cr_error_set(err, CR_E_SANDBOX_NOT_READY, 0, "sandbox %s is %s", s->id,
                        sbx_state_name(s->state));
  if (s->vm_stopping || s->term_cb)
    return cr_error_set(err, CR_E_SANDBOX_NOT_READY, 0, "sandbox %s is stopping", s->id);
  sbx_execs_abort(s, "the sandbox was restored from a snapshot");
  if (s->agent) {
    agent_conn *a = s->agent;
    s->agent = NULL;
    agent_conn_close(a);
  }
  /* SIGKILL (asynchronous): its VM is replaced, nothing to shut down
   * politely; it keeps its (now unlinked) files until it is gone, and the
   * new VMM starts meanwhile (~40-90 ms saved: a quit waited for) */
  kill_vmm(s);
  _cleanup_free_ char *scratch = cr_path_join(s->dir, "scratch.ext4");
  if (!scratch || rename(scratch_new, scratch) < 0) {
    int e = errno;
    set_failed(s, CR_E_IO, "replacing the scratch disk: %s", strerror(e));
    return cr_error_set(err, CR_E_IO, e, "replacing the scratch disk of %s", s->id);
  }
  /* the snapshot's workspace disk (snapshot.c left it as .restore), or none */
  _cleanup_free_ char *wsd = cr_path_join(s->dir, SBX_WS_DISK);
  _cleanup_free_ char *wsn = cr_path_join(s->dir, SBX_WS_DISK ".restore");
  if (wsd && wsn && rename(wsn, wsd) < 0) unlink(wsd);
  unlink_ram(s);
  free(s->ram_path);
  /* the snapshot's RAM file mapped copy-on-write (never written: it stays
   * the snapshot's), or anonymous RAM filled by the migration stream */
  s->ram_path = ram ? strdup(ram) : NULL;
  s->ram_owned = false;
  s->ram_private = s->ram_path != NULL;
  free(s->reason);
  free(s->message);
  s->reason = s->message = NULL;
  free(s->restore_dir);
  s->restore_dir = strdup(state_dir);
  free(s->from_snapshot);
  s->from_snapshot = strdup(snapshot_id);
  free(s->template_key);
  s->template_key = NULL;
  s->boot_mode = "restore";
  s->scratch_ready = true; /* scratch_new is in place */
  s->state = SBX_PROVISIONING;
  s->boot_start_ms = sbx_now_ms();
  sbx_event(s, "restore", "restored from snapshot %s", snapshot_id);
  save_state(s);
  start_boot_timer(s);
  if (launch_vm(s) < 0)
    return cr_error_set(err, s->reason ? s->reason : CR_E_INTERNAL, 0, "%s",
                        s->message ? s->message : "launch failed");
  return 0;
}

/* ---- the VMM pool's side of the lifecycle (pool.c) */

typedef struct assets_work {
  uv_work_t w;
  sbx_manager *m;
  boot_assets *assets;
  char *blank;
  cr_error *err;
} assets_work;

static void assets_run(uv_work_t *w) {
  assets_work *k = w->data;
  uv_mutex_lock(&prepare_lock);
  if (build_boot_assets(&k->assets, &k->err) == 0) scratch_template(&k->blank, &k->err);
  uv_mutex_unlock(&prepare_lock);
}

static void assets_done(uv_work_t *w, int status) {
  assets_work *k = w->data;
  sbx_manager *m = k->m;
  m->assets_building = false;
  if (k->assets && !m->assets) m->assets = TAKE_PTR(k->assets);
  boot_assets_free(k->assets);
  if (k->blank && !m->scratch_blank) m->scratch_blank = TAKE_PTR(k->blank);
  free(k->blank);
  if (k->err) log_warn("pool: preparing the boot assets: %s", k->err->message);
  bool ok = !k->err && m->assets && m->scratch_blank;
  cr_error_free(k->err);
  free(k);
  if (ok) sbx_pool_kick(m, 0);
}

void sbx_prepare_assets(sbx_manager *m) {
  if (m->assets_building || !m->pool) return;
  assets_work *k = calloc(1, sizeof(*k));
  if (!k) return;
  k->m = m;
  k->w.data = k;
  uv_once(&prepare_once, prepare_lock_init);
  m->assets_building = true;
  if (uv_queue_work(m->loop, &k->w, assets_run, assets_done) < 0) {
    m->assets_building = false;
    free(k);
  }
}

void sbx_pool_failed(sbx *s, const char *why) {
  set_failed(s, CR_E_RUNTIME_LAUNCH_FAILED, "%s", why ? why : "failed");
}

void sbx_release_entry(sbx *s) { sbx_release(s); }

sbx *sbx_pooled_new(sbx_manager *m, const image_info *img, const char *tmpl_dir,
                    cr_error **err) {
  sbx *s = sbx_alloc(m);
  if (!s) {
    cr_error_set(err, CR_E_INTERNAL, ENOMEM, "pool entry");
    return NULL;
  }
  s->m = m;
  s->net_slot = -1;
  s->pooled = true;
  cr_ulid_new(s->id);
  s->dir = cr_path_join(m->dir, s->id);
  s->state = SBX_PROVISIONING;
  s->image_ref = strdup(img->n_refs ? img->refs[0] : img->digest);
  s->image_digest = strdup(img->digest);
  s->image_path = strdup(img->rootfs);
  s->vcpus = SBX_POOL_VCPUS;
  s->memory_mib = SBX_POOL_MEMORY_MIB;
  s->created_ms = s->boot_start_ms = sbx_now_ms();
  s->template_key = strdup(strrchr(tmpl_dir, '/') ? strrchr(tmpl_dir, '/') + 1 : tmpl_dir);
  s->boot_mode = "clone";
  s->ram_path = cr_path_join(tmpl_dir, "ram");
  s->ram_private = true;
  s->restore_dir = cr_path_join(tmpl_dir, "state");
  s->scratch_src = cr_path_join(tmpl_dir, "scratch.ext4");
  int r = s->dir ? cr_mkdir_p(s->dir, 0700) : -ENOMEM;
  if (r < 0 || !s->image_ref || !s->image_digest || !s->image_path || !s->template_key ||
      !s->ram_path || !s->restore_dir || !s->scratch_src) {
    cr_error_set(err, CR_E_IO, r < 0 ? -r : ENOMEM, "preparing a pool entry");
    if (s->dir && r == 0) cr_rm_rf(s->dir);
    sbx_free(s);
    return NULL;
  }
  sbx_event(s, "boot", "pool entry: clone of template %s", s->template_key);
  start_boot_timer(s);
  launch_vm(s); /* a failure is reported through set_failed: the pool discards it */
  return s;
}

static void on_discarded_entry(void *ud, cr_error *err) { cr_error_free(err); }

static void on_pool_resumed(void *ud, backend_vm *vm, cr_error *err) {
  sbx *s = ud;
  if (vm == s->vm && s->state == SBX_PROVISIONING) {
    if (err)
      set_failed(s, cr_error_reason(err), "resuming the pooled VMM: %s", err->message);
    else
      send_activate(s); /* clock, entropy, hostname again; the mounts are there */
  }
  cr_error_free(err);
  sbx_unhold(s);
}

/* A create served by a pool entry: the sandbox takes the entry's id, VMM,
 * scratch disk and agent connection. */
static int adopt_pooled(sbx_manager *m, sbx *s, const sbx_create_params *p, const char *ref,
                        char **policy_hash, sbx_ready_cb done, sbx_progress_cb progress_cb,
                        void *ud, cr_error **err) {
  int64_t started = s->boot_start_ms;
  free(s->image_ref);
  s->image_ref = strdup(ref);
  if (p->policy) s->policy = json_incref(p->policy);
  s->policy_hash = TAKE_PTR(*policy_hash);
  s->progress_cb = progress_cb;
  s->progress_ud = ud;
  s->created_ms = s->boot_start_ms = sbx_now_ms();
  s->pooled = false;
  if (registry_add(m, s) < 0) {
    s->pooled = true; /* back to the pool's way out */
    set_failed(s, CR_E_INTERNAL, "out of memory");
    sbx_terminate(m, s, on_discarded_entry, NULL, NULL);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "sandbox registry");
  }
  sbx_event(s, "boot", "from the VMM pool: a clone of template %s started %lld ms before",
            s->template_key, (long long)(s->created_ms - started));
  save_state(s);
  sbx_when_ready(s, done, ud);
  start_boot_timer(s);
  progress(s, "pool", "resuming a pre-started VMM");
  cr_error *e = NULL;
  sbx_hold(s);
  if (backend_vm_ops(s->vm)->resume(s->vm, on_pool_resumed, s, &e) < 0) {
    set_failed(s, cr_error_reason(e), "resuming the pooled VMM: %s", e ? e->message : "");
    cr_error_free(e);
    sbx_unhold(s);
  }
  return 0;
}

/* A ready pool entry for this create, or NULL. */
static sbx *pool_match(sbx_manager *m, const sbx_create_params *p, const image_info *img,
                       unsigned vcpus, unsigned mem) {
  if (!m->pool || !m->assets || !m->tmpl || m->templates_off || p->cold || p->from_snapshot ||
      !sbx_pool_has_ready(m))
    return NULL;
  if (p->policy && egress_policy_wants_network(p->policy)) return NULL;
  tmpl_spec spec = {img->digest, img->rootfs,
                    m->assets->vmlinux ? m->assets->vmlinux : m->assets->kernel,
                    m->assets->initrd, vcpus, mem, NULL};
  _cleanup_free_ char *dir = NULL;
  if (tmpl_lookup(m->tmpl, &spec, &dir, NULL) != 1) return NULL;
  const char *key = strrchr(dir, '/');
  return sbx_pool_take(m, key ? key + 1 : dir);
}

int sbx_create(sbx_manager *m, const sbx_create_params *p, sbx_ready_cb done,
               sbx_progress_cb progress_cb, void *ud, cr_error **err) {
  _cleanup_free_ char *policy_hash = NULL;
  json_t *psb = NULL;
  _cleanup_(snap_source_clear) snap_source src = {0};
  /* a fork: the snapshot says image, vcpus, memory, and (unless the request
   * gives one) the policy: its VM has a NIC exactly when the sandbox had a
   * network, and then gets a network (TAP, address, chains) of its own */
  if (p->from_snapshot && snap_open(m, p->from_snapshot, &src, err) < 0) return -1;
  json_t *policy = p->policy ? p->policy : src.policy;
  if (policy) {
    if (sbx_policy_check(m->backend, policy, p->policy ? p->policy_hash : NULL, &policy_hash,
                         err) < 0)
      return -1;
    psb = json_object_get(policy, "sandbox");
  }
  if (p->from_snapshot && src.network != (policy && egress_policy_wants_network(policy)))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "snapshot %s was taken of a sandbox %s a network: a fork's policy must "
                        "%s network rules (its VM has the same devices)",
                        src.id, src.network ? "with" : "without", src.network ? "have" : "have no");
  const char *pref = json_string_value(json_object_get(json_object_get(psb, "image"), "ref"));
  const char *ref = p->image && *p->image ? p->image : pref ? pref : getenv("CLEANROOM_IMAGE");
  if (!ref || !*ref) ref = IMAGE_DEFAULT_REF;
  if (p->from_snapshot) ref = src.image_ref ? src.image_ref : src.image_digest;
  _cleanup_image_info_ image_info *img = NULL;
  if (image_lookup(p->from_snapshot ? src.image_digest : ref, &img, err) < 0)
    return p->from_snapshot ? cr_error_wrap(err, "the image of snapshot %s", src.id) : -1;
  /* the policy's resources are minimums */
  json_t *res = json_object_get(psb, "resources");
  unsigned pv = (unsigned)json_integer_value(json_object_get(res, "vcpus"));
  unsigned pm = (unsigned)json_integer_value(json_object_get(res, "memory_mib"));
  unsigned vcpus = MAX(p->vcpus ? p->vcpus : 1, pv), mem = MAX(p->memory_mib ? p->memory_mib : 512, pm);
  if (p->from_snapshot) {
    vcpus = src.vcpus;
    mem = src.memory_mib;
  }
  if (vcpus > 64 || mem < 64 || mem > 65536)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "vcpus must be 1-64 and memory 64-65536 MiB (got %u, %u)", vcpus, mem);
  if (sbx_quota_check(m, mem, err) < 0) return -1;
  sbx *pooled = pool_match(m, p, img, vcpus, mem);
  if (pooled) return adopt_pooled(m, pooled, p, ref, &policy_hash, done, progress_cb, ud, err);
  sbx *s = sbx_alloc(m);
  if (!s) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "sandbox");
  s->m = m;
  s->net_slot = -1;
  cr_ulid_new(s->id);
  s->dir = cr_path_join(m->dir, s->id);
  s->state = SBX_PROVISIONING;
  s->image_ref = strdup(ref);
  s->image_digest = strdup(img->digest);
  s->image_path = strdup(img->rootfs);
  s->vcpus = vcpus;
  s->memory_mib = mem;
  s->created_ms = s->boot_start_ms = sbx_now_ms();
  if (policy) s->policy = json_incref(policy);
  s->policy_hash = TAKE_PTR(policy_hash);
  s->progress_cb = progress_cb;
  s->progress_ud = ud;
  if (sbx_ram_file_create(s->id, &s->ram_path, err) < 0) {
    sbx_free(s);
    return -1;
  }
  s->ram_owned = true;
  int r = s->dir ? cr_mkdir_p(s->dir, 0700) : -ENOMEM;
  prepare_work *pw = r < 0 ? NULL : calloc(1, sizeof(*pw));
  if (pw) pw->scratch = cr_path_join(s->dir, "scratch.ext4");
  if (pw) pw->ws_disk = cr_path_join(s->dir, SBX_WS_DISK);
  if (!pw || !pw->scratch || !pw->ws_disk) {
    cr_error_set(err, CR_E_IO, r < 0 ? -r : ENOMEM, "preparing %s", s->dir ? s->dir : "sandbox");
    if (pw) free(pw);
    if (s->dir) cr_rm_rf(s->dir);
    unlink(s->ram_path);
    sbx_free(s);
    return -1;
  }
  /* a policy with network rules: TAP, nftables, DNS before the VMM starts
   * (fails closed when this host cannot enforce them) */
  if (s->policy && egress_policy_wants_network(s->policy) && attach_net(s, -1, err) < 0) {
    cr_rm_rf(s->dir);
    sbx_free(s);
    return -1;
  }
  if (registry_add(m, s) < 0) {
    detach_net(s);
    cr_rm_rf(s->dir);
    free(pw->scratch);
    free(pw);
    unlink(s->ram_path);
    sbx_free(s);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "sandbox registry");
  }
  sbx_crash_point("create-dir");
  save_state(s);
  sbx_when_ready(s, done, ud);
  /* the boot deadline covers the preparation too */
  start_boot_timer(s);
  uv_once(&prepare_once, prepare_lock_init);
  pw->s = s;
  pw->need_assets = !m->assets;
  if (p->from_snapshot) {
    /* a fork: the snapshot's scratch disk, then its VM state */
    s->boot_mode = "fork";
    s->from_snapshot = strdup(src.id);
    s->restore_dir = strdup(src.state_dir);
    if (src.ram) {
      /* its RAM file, mapped copy-on-write, instead of a RAM file of its own */
      unlink(s->ram_path);
      free(s->ram_path);
      s->ram_path = strdup(src.ram);
      s->ram_owned = false;
      s->ram_private = true;
    }
    pw->scratch_src = strdup(src.scratch);
    if (src.workspace) sbx_set_workspace(s, src.workspace);
    /* its workspace disk, or none (an older snapshot: same devices as it) */
    _cleanup_free_ char *wsd = cr_path_join(src.dir, SBX_WS_DISK);
    if (wsd && access(wsd, F_OK) == 0) pw->ws_src = TAKE_PTR(wsd);
    else pw->ws_none = true;
    sbx_event(s, "boot", "forked from snapshot %s", src.id);
  }
  s->cold = p->cold;
  pw->w.data = pw;
  s->handles++;
  progress(s, "prepare", "preparing the scratch disk");
  r = uv_queue_work(m->loop, &pw->w, prepare_run, prepare_done);
  if (r < 0) {
    s->handles--;
    free(pw->scratch);
    free(pw->scratch_src);
    free(pw);
    set_failed(s, CR_E_INTERNAL, "cannot queue the preparation: %s", uv_strerror(r));
  }
  sbx_crash_point("create-launched");
  /* After return the caller may get the callback any time; progress
   * callbacks stop once ready/failed. */
  return 0;
}

/* ---- templates */

json_t *sbx_template_list(sbx_manager *m) {
  return m->tmpl ? tmpl_list(m->tmpl) : json_array();
}

int sbx_template_remove(sbx_manager *m, const char *key, cr_error **err) {
  if (!m->tmpl) return cr_error_set(err, CR_E_INTERNAL, 0, "no template registry");
  return tmpl_remove(m->tmpl, key, err);
}

void sbx_template_gc(sbx_manager *m) {
  if (m->tmpl) tmpl_gc(m->tmpl);
}

typedef struct warm_req {
  sbx_manager *m;
  sbx_json_cb done;
  void *ud;
} warm_req;

static void on_warm(void *ud, const char *dir, cr_error *err) {
  warm_req *w = ud;
  if (!err) sbx_pool_kick(w->m, 0); /* the default template may be this one */
  if (err) {
    w->done(w->ud, NULL, err);
  } else {
    const char *key = strrchr(dir, '/');
    key = key ? key + 1 : dir;
    json_t *found = NULL, *all = tmpl_list(w->m->tmpl), *t;
    size_t i;
    json_array_foreach(all, i, t) {
      const char *k = json_string_value(json_object_get(t, "key"));
      if (k && !strcmp(k, key)) found = json_incref(t);
    }
    json_decref(all);
    w->done(w->ud, found ? found : json_pack("{s:s}", "key", key), NULL);
  }
  free(w);
}

int sbx_template_warm(sbx_manager *m, const char *image, unsigned vcpus, unsigned memory_mib,
                      sbx_json_cb done, void *ud, cr_error **err) {
  if (!m->tmpl) return cr_error_set(err, CR_E_INTERNAL, 0, "no template registry");
  const char *ref = image && *image ? image : getenv("CLEANROOM_IMAGE");
  if (!ref || !*ref) ref = IMAGE_DEFAULT_REF;
  _cleanup_image_info_ image_info *img = NULL;
  if (image_lookup(ref, &img, err) < 0) return -1;
  if (!m->assets && build_boot_assets(&m->assets, err) < 0)
    return cr_error_wrap(err, "preparing the boot assets");
  if (!vcpus) vcpus = 1;
  if (!memory_mib) memory_mib = 512;
  if (vcpus > 64 || memory_mib < 64 || memory_mib > 65536)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "vcpus must be 1-64 and memory 64-65536 MiB (got %u, %u)", vcpus,
                        memory_mib);
  _cleanup_free_ char *scratch_tmpl = NULL;
  uv_once(&prepare_once, prepare_lock_init);
  uv_mutex_lock(&prepare_lock);
  int r = scratch_template(&scratch_tmpl, err);
  uv_mutex_unlock(&prepare_lock);
  if (r < 0) return cr_error_wrap(err, "scratch disk");
  warm_req *w = calloc(1, sizeof(*w));
  if (!w) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "warm");
  *w = (warm_req){m, done, ud};
  tmpl_spec spec = {img->digest, img->rootfs,
                    m->assets->vmlinux ? m->assets->vmlinux : m->assets->kernel,
                    m->assets->initrd, vcpus, memory_mib, scratch_tmpl};
  tmpl_ensure(m->tmpl, &spec, m->boot_timeout_ms, on_warm, w);
  return 0;
}

void sbx_detach_progress(sbx *s) {
  s->progress_cb = NULL;
  s->progress_ud = NULL;
}

static void finish_terminate(sbx *s) {
  sbx_terminate_cb cb = TAKE_PTR(s->term_cb);
  void *ud = s->term_ud;
  detach_net(s); /* the VMM is gone: its TAP, chains, set and resolver go too */
  backend_cgroup_remove(s->id); /* and its cgroup (when the backend did not see it end) */
  cr_error *e = NULL;
  cr_error_set(&e, CR_E_SANDBOX_NOT_FOUND, 0, "sandbox %s was removed while starting", s->id);
  s->state = SBX_STOPPED;
  notify_waiters(s, e);
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
  if (!was_failed) save_state(s);
  sbx_crash_point("terminate-stopping");
  stop_boot_timer(s);
  reattach_settled(s);
  sbx_execs_abort(s, "the sandbox was removed");
  if (s->agent) {
    agent_conn *a = s->agent;
    s->agent = NULL;
    agent_conn_close(a);
  }
  registry_remove(m, s);
  s->term_cb = done;
  s->term_ud = ud;
  stop_vmm(s);
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
  save_state(s);
}

/* ---- restart: re-attach */

static void load_one(sbx_manager *m, const char *id) {
  _cleanup_free_ char *dir = cr_path_join(m->dir, id);
  _cleanup_free_ char *path = cr_path_join(dir, "state.json");
  json_error_t je;
  _cleanup_json_ json_t *j = path ? json_load_file(path, 0, &je) : NULL;
  if (!j || !cr_ulid_valid(id)) {
    /* a ULID directory without its journal: creation was interrupted */
    if (cr_ulid_valid(id) && dir) sbx_remove_partial(m, id, dir);
    else log_warn("ignoring %s: no valid state.json", dir);
    return;
  }
  sbx *s = sbx_alloc(m);
  if (!s) return;
  s->m = m;
  s->net_slot = -1;
  snprintf(s->id, sizeof(s->id), "%s", id);
  s->dir = TAKE_PTR(dir);
  s->scratch_ready = true; /* its VMM was started with it */
  const char *st = json_string_value(json_object_get(j, "state"));
  s->state = SBX_FAILED;
  for (int i = 0; i < 5; i++)
    if (st && !strcmp(st, state_names[i])) s->state = (sbx_state)i;
#define DUPS(field, key)                                           \
  do {                                                             \
    const char *v_ = json_string_value(json_object_get(j, key));   \
    s->field = v_ && *v_ ? strdup(v_) : NULL;                      \
  } while (0)
  DUPS(reason, "reason");
  DUPS(message, "message");
  DUPS(image_path, "image_path");
  DUPS(ram_path, "ram_path");
  DUPS(policy_hash, "policy_hash");
  DUPS(last_exec_id, "last_execution_id");
#undef DUPS
  json_t *img = json_object_get(j, "image");
  const char *v;
  if ((v = json_string_value(json_object_get(img, "ref")))) s->image_ref = strdup(v);
  if ((v = json_string_value(json_object_get(img, "digest")))) s->image_digest = strdup(v);
  s->vcpus = (unsigned)json_integer_value(json_object_get(j, "vcpus"));
  s->memory_mib = (unsigned)json_integer_value(json_object_get(j, "memory_mib"));
  s->pid = (pid_t)json_integer_value(json_object_get(j, "vmm_pid"));
  s->created_ms = sbx_time_from_json(json_object_get(j, "created_at"));
  s->ready_ms = sbx_time_from_json(json_object_get(j, "ready_at"));
  s->boot_ms = (uint64_t)json_integer_value(json_object_get(json_object_get(j, "timing_ms"), "boot"));
  json_t *pol = json_object_get(j, "policy");
  if (pol && !json_is_null(pol)) s->policy = json_incref(pol);
  json_t *wsj = json_object_get(j, "workspace");
  if (json_is_object(wsj)) s->workspace = json_incref(wsj);
  json_t *ro = json_object_get(j, "ram_owned");
  s->ram_owned = ro ? json_is_true(ro) : s->ram_path != NULL;
  s->ram_private = !s->ram_owned && s->ram_path;
  json_t *boot = json_object_get(j, "boot");
  static const char *const modes[] = {"cold", "clone", "fork", "restore"};
  const char *mode = json_string_value(json_object_get(boot, "mode"));
  s->boot_mode = modes[0];
  for (size_t i = 0; mode && i < ELEMENTSOF(modes); i++)
    if (!strcmp(mode, modes[i])) s->boot_mode = modes[i];
  if ((v = json_string_value(json_object_get(boot, "template")))) s->template_key = strdup(v);
  if ((v = json_string_value(json_object_get(boot, "from_snapshot")))) s->from_snapshot = strdup(v);
  s->restore_ms = (uint64_t)json_integer_value(json_object_get(json_object_get(j, "timing_ms"), "restore"));
  json_t *ev = json_object_get(j, "events");
  if (json_is_array(ev)) s->events = json_incref(ev);
  json_t *slot = json_object_get(j, "net_slot");
  if (json_is_integer(slot)) s->net_slot = (int)json_integer_value(slot);
  if (registry_add(m, s) < 0) {
    sbx_free(s);
    return;
  }
  sbx_execs_load(s);
  if (s->state == SBX_READY || s->state == SBX_PROVISIONING || s->state == SBX_STOPPING) {
    bool stopping = s->state == SBX_STOPPING;
    s->state = SBX_PROVISIONING; /* so set_failed records it */
    /* killed between the VMM's start and the pid's write: find it */
    if (s->pid <= 0 && !stopping) s->pid = sbx_find_vmm(m, s->id);
    /* the guest keeps its address; the rules and the resolver come back */
    cr_error *nerr = NULL;
    if (!stopping && s->net_slot >= 0 && s->policy) attach_net(s, s->net_slot, &nerr);
    _cleanup_free_ char *scratch = cr_path_join(s->dir, "scratch.ext4");
    _cleanup_free_ char *wsd = sbx_ws_disk(s);
    backend_vm_config cfg;
    vm_config(s, &cfg, scratch, wsd);
    cr_error *e = NULL;
    if (stopping || m->backend->attach(m->loop, &cfg, s->pid, &vm_events, s, &s->vm, &e) < 0) {
      s->vm = NULL;
      cr_error_free(e);
      sbx_kill_vmms_of(m, s->id); /* an interrupted terminate, or a VMM we cannot attach */
      cr_error_free(nerr);
      set_failed(s, CR_E_VMM_EXITED,
                 "the VMM (pid %d) is gone (it exited while the daemon was not running)",
                 (int)s->pid);
      return;
    }
    if (nerr) {
      /* never leave a guest on an unfiltered TAP: stop it */
      set_failed(s, cr_error_reason(nerr), "cannot restore the sandbox's network: %s",
                 nerr->message);
      cr_error_free(nerr);
      return;
    }
    s->reattaching = true;
    m->reattach_pending++;
    s->boot_start_ms = sbx_now_ms();
    start_boot_timer(s);
  }
}

static void settle_check(sbx_manager *m) {
  if (m->reattach_pending == 0 && m->settled) {
    void (*cb)(void *) = TAKE_PTR(m->settled);
    cb(m->settled_ud);
  }
}

/* A re-attaching sandbox is ready or failed. */
static void reattach_settled(sbx *s) {
  if (!s->reattaching) return;
  s->reattaching = false;
  if (s->m->reattach_pending > 0) s->m->reattach_pending--;
  settle_check(s->m);
}

int sbx_manager_load(sbx_manager *m, void (*settled)(void *ud), void *ud, cr_error **err) {
  m->settled = settled;
  m->settled_ud = ud;
  DIR *d = opendir(m->dir);
  if (!d) {
    settle_check(m);
    return cr_error_set(err, CR_E_IO, errno, "reading %s", m->dir);
  }
  struct dirent *de;
  while ((de = readdir(d))) {
    if (!strncmp(de->d_name, ".trash-", 7)) {
      _cleanup_free_ char *t = cr_path_join(m->dir, de->d_name);
      if (t) cr_rm_rf(t); /* a removal the previous daemon did not finish */
      char *ram = NULL;
      if (cr_ulid_valid(de->d_name + 7) && sbx_ram_file_path(de->d_name + 7, &ram) == 0) unlink(ram);
      free(ram);
    } else if (de->d_name[0] != '.') {
      load_one(m, de->d_name);
    }
  }
  closedir(d);
  sbx_kill_orphan_vmms(m);
  /* nftables objects and TAPs of sandboxes that no longer have a network */
  char **ids = calloc(m->n + 1, sizeof(*ids));
  size_t nlive = 0;
  for (size_t i = 0; ids && i < m->n; i++)
    if (m->list[i]->net) ids[nlive++] = m->list[i]->id;
  if (ids && egress_host_capable(NULL)) {
    egress *eg = sbx_manager_egress(m);
    if (eg) egress_sweep(eg, ids, nlive);
  }
  free(ids);
  settle_check(m);
  sbx_pool_kick(m, 0);
  return 0;
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

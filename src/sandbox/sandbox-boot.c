/* The boot sequence of a sandbox's VM: scratch copy -> launch (cold, clone
 * of a template, fork or restore) -> agent hello -> activate -> ready, with
 * its deadline. */
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

/* ---- boot sequence: launch -> agent hello -> activate -> ready */

static void on_agent_state(agent_conn *c, void *ud, int status, const char *message,
                           const uint8_t *hello, size_t hello_len);

static void on_activated(void *ud, const agent_event *ev) {
  sbx *s = ud;
  if (s->state != SBX_PROVISIONING) return;
  if (ev->type != AGENT_EV_OK) {
    const char *msg = ev->error.message;
    sbx_set_failed(s, CR_E_RUNTIME_LAUNCH_FAILED, "the guest could not activate: %s",
               msg ? msg : "unknown error");
    return;
  }
  if (s->pooled) {
    s->net_configured = s->net != NULL;
    sbx_pool_activated(s); /* warm-up, pause */
    return;
  }
  sbx_stop_boot_timer(s);
  s->state = SBX_READY;
  s->ready_ms = sbx_now_ms();
  s->boot_ms = (uint64_t)(s->ready_ms - s->boot_start_ms);
  sbx_save_state(s);
  sbx_progress(s, "ready", "sandbox ready");
  log_info("sandbox %s ready in %llu ms", s->id, (unsigned long long)s->boot_ms);
  sbx_pool_kick(s->m, SBX_POOL_REFILL_DELAY_MS);
  sbx_notify_waiters(s, NULL);
}

void sbx_send_activate(sbx *s) {
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
  /* a handed-out pool entry's guest has its address since the entry's own
   * ACTIVATE (only the host's rules changed at the hand-out) */
  if (s->net && !s->net_configured) {
    a.net_addr = egress_sbx_guest_cidr(s->net);
    a.net_gateway = a.net_dns = egress_sbx_host_addr(s->net);
  }
  int r = agent_activate(s->agent, &a, on_activated, s);
  if (r < 0) sbx_set_failed(s, CR_E_RUNTIME_LAUNCH_FAILED, "cannot send activate: %s", strerror(-r));
}

static void on_agent_state(agent_conn *c, void *ud, int status, const char *message,
                           const uint8_t *hello, size_t hello_len) {
  sbx *s = ud;
  if (status == 0) {
    if (s->state == SBX_PROVISIONING) {
      if (s->reattaching) {
        sbx_stop_boot_timer(s);
        s->state = SBX_READY;
        sbx_save_state(s);
        log_info("sandbox %s re-attached", s->id);
        sbx_pool_kick(s->m, SBX_POOL_REFILL_DELAY_MS);
        sbx_reattach_settled(s);
        sbx_notify_waiters(s, NULL);
      } else {
        sbx_progress(s, "activate", "guest agent answered; activating");
        sbx_send_activate(s);
      }
    }
    return;
  }
  /* connection failed or lost */
  if (s->state == SBX_STOPPING || s->state == SBX_STOPPED || s->state == SBX_FAILED) return;
  if (!s->vm || !backend_vm_ops(s->vm)->alive(s->vm)) {
    _cleanup_free_ char *tail = sbx_console_tail(s);
    sbx_set_failed(s, CR_E_VMM_EXITED, "the VMM (pid %d) exited; console tail: %s", (int)s->pid,
               tail ? tail : "");
  } else {
    sbx_set_failed(s, CR_E_AGENT_UNAVAILABLE, "lost the guest agent: %s", message ? message : "");
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
    sbx_set_failed(s, cr_error_reason(err), "%s", err ? err->message : "no agent stream");
    cr_error_free(err);
    return;
  }
  s->agent = agent_conn_new(s->m->loop, on_agent_state, s);
  if (!s->agent) {
    close(fd);
    sbx_set_failed(s, CR_E_INTERNAL, "out of memory");
    return;
  }
  int r = agent_conn_open(s->agent, fd);
  if (r < 0 && s->agent)
    sbx_set_failed(s, CR_E_RUNTIME_LAUNCH_FAILED, "cannot use the agent stream: %s", uv_strerror(r));
}

static void connect_agent(sbx *s) {
  cr_error *err = NULL;
  if (backend_vm_ops(s->vm)->connect_agent(s->vm, on_agent_stream, s, &err) < 0) {
    sbx_set_failed(s, cr_error_reason(err), "cannot reach the guest agent: %s", err ? err->message : "");
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
    sbx_stop_vmm(s);
    launch_cold(s, why ? why : "restoring the template failed");
    return;
  }
  if (err) {
    if (restored)
      sbx_set_failed(s, CR_E_SNAPSHOT_FAILED, "restoring snapshot %s: %s",
                 s->from_snapshot ? s->from_snapshot : "?", err->message);
    else
      sbx_set_failed(s, cr_error_reason(err), "%s", err->message);
    cr_error_free(err);
    return;
  }
  /* (an early agent connection may have activated the guest already) */
  if (s->state != SBX_PROVISIONING && s->state != SBX_READY) return;
  s->pid = backend_vm_pid(vm);
  sbx_save_state(s);
  if (s->state != SBX_PROVISIONING) return;
  if (!s->reattaching) sbx_crash_point("create-pid-saved");
  if (!s->reattaching) sbx_progress(s, "boot", "VMM started; waiting for the guest agent");
  if (!s->agent_early) connect_agent(s);
}

const backend_events sbx_vm_events = {.ready = on_vm_ready, .exited = sbx_on_vm_exited};

void sbx_vm_config(sbx *s, backend_vm_config *cfg, const char *scratch, const char *ws) {
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
  _cleanup_free_ char *tail = sbx_console_tail(s);
  sbx_set_failed(s, CR_E_RUNTIME_LAUNCH_FAILED,
             "the guest agent did not answer within %llu ms; the VM was killed. Console tail: %s",
             (unsigned long long)s->m->boot_timeout_ms, tail ? tail : "");
}

void sbx_start_boot_timer(sbx *s) {
  if (!s->boot_timer_init) {
    uv_timer_init(s->m->loop, &s->boot_timer);
    s->boot_timer.data = s;
    s->boot_timer_init = true;
  }
  s->boot_timer_on = true;
  uv_timer_start(&s->boot_timer, on_boot_timeout, s->m->boot_timeout_ms, 0);
}
static int copy_scratch(sbx *s);

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
  k->r = cr_copy_file_clone(k->src, k->dst, 0600, CR_COPY_NO_SYNC);
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
      sbx_set_failed(s, CR_E_IO, "preparing the scratch disk %s from %s: %s", k->dst, k->src,
                 strerror(-k->r));
    } else {
      s->scratch_ready = true;
      sbx_launch_vm(s);
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
    sbx_set_failed(s, CR_E_INTERNAL, "preparing the scratch disk: %s",
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
    sbx_set_failed(s, CR_E_INTERNAL, "cannot queue the scratch copy: %s", uv_strerror(r));
    return -1;
  }
  return 0;
}

/* Starts the VMM as s says: cold (launch) or from s->restore_dir. */
int sbx_launch_vm(sbx *s) {
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
  sbx_vm_config(s, &cfg, scratch, wsd);
  sbx_progress(s, "launch", "starting the VMM");
  cr_error *lerr = NULL;
  int r;
  s->agent_early = false;
  if (s->restore_dir) {
    s->restoring = true;
    s->restore_start_ms = sbx_now_ms();
    r = m->backend->restore(m->loop, &cfg, s->restore_dir, &sbx_vm_events, s, &s->vm, &lerr);
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
    r = m->backend->launch(m->loop, &cfg, &sbx_vm_events, s, &s->vm, &lerr);
  }
  /* a pool entry has no journal: its pid is known from here (pool.c kills
   * it at a daemon stop however far it got) */
  if (r == 0 && s->pooled && s->vm) s->pid = backend_vm_pid(s->vm);
  if (r < 0) {
    s->vm = NULL;
    s->restoring = false;
    sbx_set_failed(s, cr_error_reason(lerr), "%s", lerr ? lerr->message : "launch failed");
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
      sbx_set_failed(s, cr_error_reason(e), "%s", e->message);
      cr_error_free(e);
      return;
    }
  }
  s->ram_owned = true;
  s->ram_private = false;
  sbx_event(s, "boot", "cold boot: %s", why);
  sbx_launch_vm(s);
}

static void on_template(void *ud, const char *dir, cr_error *err);

/* After the preparation: a fork (restore_dir set), a cold boot, or a clone
 * of the image's boot template (built first when there is none). */
void sbx_start_vm(sbx *s, const char *scratch_tmpl) {
  sbx_manager *m = s->m;
  if (s->restore_dir) {
    sbx_launch_vm(s);
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
  sbx_progress(s, "template", "looking for a boot template");
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
    sbx_set_failed(s, CR_E_RUNTIME_LAUNCH_FAILED,
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
  sbx_unlink_ram(s); /* the RAM file made at create: a clone maps the template's */
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
  sbx_launch_vm(s);
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
  sbx_kill_vmm(s);
  _cleanup_free_ char *scratch = cr_path_join(s->dir, "scratch.ext4");
  if (!scratch || rename(scratch_new, scratch) < 0) {
    int e = errno;
    sbx_set_failed(s, CR_E_IO, "replacing the scratch disk: %s", strerror(e));
    return cr_error_set(err, CR_E_IO, e, "replacing the scratch disk of %s", s->id);
  }
  /* the snapshot's workspace disk (snapshot.c left it as .restore), or none */
  _cleanup_free_ char *wsd = cr_path_join(s->dir, SBX_WS_DISK);
  _cleanup_free_ char *wsn = cr_path_join(s->dir, SBX_WS_DISK ".restore");
  if (wsd && wsn && rename(wsn, wsd) < 0) unlink(wsd);
  sbx_unlink_ram(s);
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
  sbx_save_state(s);
  sbx_start_boot_timer(s);
  if (sbx_launch_vm(s) < 0)
    return cr_error_set(err, s->reason ? s->reason : CR_E_INTERNAL, 0, "%s",
                        s->message ? s->message : "launch failed");
  return 0;
}

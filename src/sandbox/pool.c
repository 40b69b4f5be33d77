/* The VMM pool: clones of the default boot template (the default image,
 * SBX_POOL_VCPUS, SBX_POOL_MEMORY_MIB; with or without a NIC) started ahead of time,
 * activated (their own id, hostname, scratch disk, clock and entropy), warmed
 * up with one `true` (TCG has translated the exec path of that QEMU
 * process) and paused. sbx_create hands one out when its request matches
 * the entry's template (same key: image, kernel, initramfs, QEMU, vcpus,
 * memory, device set; not cold, not a fork): `cont` and, without waiting
 * for its answer, a second ACTIVATE (clock and entropy again: a paused
 * guest's clock stands still), ready.
 *
 * An entry is a sandbox (sbx) that is not in the registry and has no
 * state.json: a daemon killed with a pool leaves directories that the next
 * start removes with their VMMs (reconcile.c, "creation interrupted"). On a
 * clean stop entries are killed and removed (sbx_pool_shutdown). Refills run
 * one at a time, never while a sandbox is provisioning, and start
 * SBX_POOL_REFILL_DELAY_MS after a hand-out (its first exec comes right
 * after; two cores). Size: CLEANROOM_POOL_SIZE (0 = off), else by the host's
 * memory (sbx_pool_default_size).
 *
 * Network entries (CLEANROOM_POOL_NET_SIZE, default 1 with a pool): clones
 * of the default template with a NIC, kept once this daemon has created a
 * sandbox with a network (so the host can enforce egress). Each has its own
 * address, TAP and chains that allow nothing (egress_attach without a
 * policy), and its guest's network is set at its own ACTIVATE, so the
 * kernel's address and route paths are translated before the hand-out. A
 * create with network rules takes one: egress_rebind() installs the
 * policy's rules (one nftables transaction) before `cont`; the hand-out's
 * ACTIVATE leaves the guest's network as it is. */
#include "sandbox/sandbox-internal.h"
#include "sandbox/template.h"
#include "backend/cgroup.h"
#include "image/image.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/macro.h"

#include <signal.h>
#include <string.h>

#define SBX_POOL_MAX 16

struct sbx_pool {
  uv_timer_t kick; /* first: closing it frees the pool */
  sbx_manager *m;
  unsigned size;     /* entries without a network */
  unsigned net_size; /* entries with one (once m->net_wanted) */
  sbx *e[SBX_POOL_MAX];
  size_t n;
  bool kick_open, kick_pending;
  uint64_t handed_out, started, discarded;
};

/* 2 with >= 16 GiB of RAM, 1 with >= 2 GiB, else 0 (an idle clone costs
 * ~55 MiB PSS, but its guest may grow to SBX_POOL_MEMORY_MIB). */
static unsigned default_size(void) {
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;
  unsigned long long kib = 0;
  if (cr_read_file("/proc/meminfo", 1 << 16, &buf, &len) == 0) {
    const char *p = strstr(buf, "MemTotal:");
    if (p) kib = strtoull(p + 9, NULL, 10);
  }
  if (kib >= 16ull << 20) return 2;
  if (kib >= 2ull << 20) return 1;
  return 0;
}

static bool env_count(const char *name, unsigned *ret) {
  const char *e = getenv(name);
  if (!e || !*e) return false;
  char *end = NULL;
  unsigned long v = strtoul(e, &end, 10);
  if (!end || *end) return false;
  *ret = v > SBX_POOL_MAX / 2 ? SBX_POOL_MAX / 2 : (unsigned)v;
  return true;
}

unsigned sbx_pool_size_config(void) {
  unsigned v;
  return env_count("CLEANROOM_POOL_SIZE", &v) ? v : default_size();
}

static unsigned net_size_config(unsigned size) {
  unsigned v;
  return env_count("CLEANROOM_POOL_NET_SIZE", &v) ? v : size > 0 ? 1 : 0;
}

static void on_kick(uv_timer_t *t);

sbx_pool *sbx_pool_new(sbx_manager *m) {
  sbx_pool *p = calloc(1, sizeof(*p));
  if (!p) return NULL;
  p->m = m;
  p->size = sbx_pool_size_config();
  p->net_size = net_size_config(p->size);
  uv_timer_init(m->loop, &p->kick);
  p->kick.data = p;
  p->kick_open = true;
  return p;
}

void sbx_pool_kick(sbx_manager *m, uint64_t delay_ms) {
  sbx_pool *p = m->pool;
  if (!p || !p->kick_open) return;
  /* an earlier kick stays earlier */
  if (p->kick_pending && uv_timer_get_due_in(&p->kick) <= delay_ms) return;
  p->kick_pending = true;
  uv_timer_start(&p->kick, on_kick, delay_ms, 0);
}

static void entry_remove(sbx_pool *p, size_t i) {
  memmove(&p->e[i], &p->e[i + 1], (p->n - i - 1) * sizeof(*p->e));
  p->n--;
}

/* Discarded entries whose VMM is still going (sbx_terminate in flight):
 * a daemon stop kills those too. Static: their callbacks may run after the
 * pool is gone (only pointers are compared then). */
static sbx *dying[SBX_POOL_MAX * 2];
static size_t ndying;

static void on_discarded(void *ud, cr_error *err) {
  if (err) log_warn("pool: %s", err->message);
  cr_error_free(err);
  for (size_t i = 0; i < ndying; i++)
    if (dying[i] == ud) {
      dying[i] = dying[--ndying];
      break;
    }
}

static void discard(sbx_pool *p, size_t i, const char *why) {
  sbx *s = p->e[i];
  entry_remove(p, i);
  p->discarded++;
  log_info("pool: discarding %s: %s", s->id, why);
  if (ndying < ELEMENTSOF(dying)) dying[ndying++] = s;
  cr_error *err = NULL;
  if (sbx_terminate(p->m, s, on_discarded, s, &err) < 0) {
    log_warn("pool: %s", err ? err->message : "cannot remove an entry");
    cr_error_free(err);
    on_discarded(s, NULL);
  }
}

/* The default template's directory for the pool's spec, with or without
 * a NIC (NULL: none yet). */
static char *pool_template(sbx_manager *m, bool net, image_info **ret_img) {
  if (!m->tmpl || m->templates_off) return NULL;
  if (!m->assets || !m->scratch_blank) {
    sbx_prepare_assets(m); /* kicks again when done */
    return NULL;
  }
  const char *ref = getenv("CLEANROOM_IMAGE");
  if (!ref || !*ref) ref = IMAGE_DEFAULT_REF;
  image_info *img = NULL;
  cr_error *e = NULL;
  if (image_lookup(ref, &img, &e) < 0) {
    cr_error_free(e);
    return NULL;
  }
  tmpl_spec spec = {img->digest, img->rootfs,
                    m->assets->vmlinux ? m->assets->vmlinux : m->assets->kernel,
                    m->assets->initrd, SBX_POOL_VCPUS, SBX_POOL_MEMORY_MIB, NULL, net};
  char *dir = NULL;
  if (tmpl_lookup(m->tmpl, &spec, &dir, NULL) != 1) {
    image_info_free(img);
    return NULL;
  }
  *ret_img = img;
  return dir;
}

static const char *key_of(const char *dir) {
  const char *k = strrchr(dir, '/');
  return k ? k + 1 : dir;
}

/* net_wanted is set by a create whose policy passed the capability check
 * (sbx_policy_check): this host enforces egress. */
static bool wants_net_entries(sbx_pool *p) { return p->net_size > 0 && p->m->net_wanted; }

static void on_kick(uv_timer_t *t) {
  sbx_pool *p = t->data;
  sbx_manager *m = p->m;
  p->kick_pending = false;
  image_info *img = NULL, *img_net = NULL;
  _cleanup_free_ char *dir = pool_template(m, false, &img);
  _cleanup_free_ char *dir_net = wants_net_entries(p) ? pool_template(m, true, &img_net) : NULL;
  /* entries that failed, or of a template that is not the default one any
   * more (removed, rebuilt, another image) */
  unsigned n_plain = 0, n_net = 0;
  for (size_t i = 0; i < p->n; i++) {
    if (p->e[i]->net) n_net++;
    else n_plain++;
  }
  for (size_t i = p->n; i-- > 0;) {
    sbx *s = p->e[i];
    const char *want = s->net ? dir_net : dir;
    if (s->state != SBX_PROVISIONING)
      discard(p, i, s->message ? s->message : "failed");
    else if (!want || !s->template_key || strcmp(s->template_key, key_of(want)))
      discard(p, i, "its template is not the default one any more");
    else if (s->net ? n_net > p->net_size : n_plain > p->size)
      discard(p, i, "the pool is smaller now");
    else
      continue;
    if (s->net) n_net--;
    else n_plain--;
  }
  bool busy = false;
  for (size_t i = 0; i < p->n; i++)
    if (!p->e[i]->pool_ready) busy = true;
  for (size_t i = 0; i < m->n; i++)
    if (m->list[i]->state == SBX_PROVISIONING) busy = true;
  /* one at a time, and never beside a sandbox that is starting: its kick
   * comes when it is ready or failed; entries without a network first */
  bool net = !(dir && n_plain < p->size) && dir_net && n_net < p->net_size;
  if (!busy && p->n < SBX_POOL_MAX && ((dir && n_plain < p->size) || net)) {
    cr_error *err = NULL;
    sbx *s = sbx_pooled_new(m, net ? img_net : img, net ? dir_net : dir, net, &err);
    if (s) {
      p->e[p->n++] = s;
      p->started++;
    } else {
      log_warn("pool: cannot start an entry: %s", err ? err->message : "?");
      cr_error_free(err);
    }
  }
  image_info_free(img);
  image_info_free(img_net);
}

/* ---- an entry's warm-up after its ACTIVATE: one `true`, then pause */

static void on_paused(void *ud, backend_vm *vm, cr_error *err) {
  sbx *s = ud;
  if (s->pooled && s->state == SBX_PROVISIONING && vm == s->vm) {
    if (err) {
      sbx_pool_failed(s, err->message);
    } else {
      sbx_stop_boot_timer(s);
      s->pool_ready = true;
      log_info("pool: %s ready (paused) after %lld ms", s->id,
               (long long)(sbx_now_ms() - s->boot_start_ms));
      sbx_pool_kick(s->m, 0);
    }
  }
  cr_error_free(err);
  sbx_unhold(s);
}

static void pause_entry(sbx *s) {
  cr_error *err = NULL;
  sbx_hold(s);
  if (!s->vm || backend_vm_ops(s->vm)->pause(s->vm, on_paused, s, &err) < 0) {
    sbx_pool_failed(s, err ? err->message : "cannot pause");
    cr_error_free(err);
    sbx_unhold(s);
  }
}

static const char *const warm_argv[] = {"true"};
static const char *const warm_env[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
const agent_exec_req sbx_warm_exec = {
    .argv = warm_argv, .argc = 1, .env = warm_env, .envc = 1};

static void on_warmed(void *ud, const agent_event *ev) {
  sbx *s = ud;
  if (ev->type != AGENT_EV_EXIT && ev->type != AGENT_EV_ERROR) return;
  if (!s->pooled || s->state != SBX_PROVISIONING) return;
  pause_entry(s);
}

void sbx_pool_activated(sbx *s) {
  long ch = agent_exec_start(s->agent, &sbx_warm_exec, on_warmed, s);
  if (ch < 0) pause_entry(s);
}

/* ---- hand-out */

sbx *sbx_pool_take(sbx_manager *m, const char *template_key) {
  sbx_pool *p = m->pool;
  if (!p || !template_key) return NULL;
  for (size_t i = 0; i < p->n; i++) {
    sbx *s = p->e[i];
    if (s->pool_ready && s->state == SBX_PROVISIONING && s->vm &&
        backend_vm_ops(s->vm)->alive(s->vm) && s->template_key &&
        !strcmp(s->template_key, template_key) && agent_conn_ready(s->agent)) {
      entry_remove(p, i);
      p->handed_out++;
      s->pool_ready = false;
      sbx_pool_kick(m, SBX_POOL_REFILL_DELAY_MS);
      return s;
    }
  }
  return NULL;
}

bool sbx_pool_has_ready(sbx_manager *m) {
  sbx_pool *p = m->pool;
  for (size_t i = 0; p && i < p->n; i++)
    if (p->e[i]->pool_ready) return true;
  return false;
}

json_t *sbx_pool_info(sbx_manager *m) {
  sbx_pool *p = m->pool;
  if (!p) return json_pack("{s:i}", "size", 0);
  json_int_t ready = 0, starting = 0, net_ready = 0, net_starting = 0;
  for (size_t i = 0; i < p->n; i++) {
    bool net = p->e[i]->net != NULL;
    if (p->e[i]->pool_ready)
      *(net ? &net_ready : &ready) += 1;
    else
      *(net ? &net_starting : &starting) += 1;
  }
  return json_pack("{s:i, s:I, s:I, s:I, s:I, s:I, s:i, s:i, s:{s:i, s:b, s:I, s:I}}", "size",
                   (int)p->size, "ready", ready, "starting", starting, "handed_out",
                   (json_int_t)p->handed_out, "started", (json_int_t)p->started, "discarded",
                   (json_int_t)p->discarded, "vcpus", SBX_POOL_VCPUS, "memory_mib",
                   SBX_POOL_MEMORY_MIB, "network", "size", (int)p->net_size, "active",
                   wants_net_entries(p), "ready", net_ready, "starting", net_starting);
}

/* ---- daemon stop: entries are killed and removed now (the loop only runs
 * to close handles from here on) */

/* The entry's VMM handle if it may still run: its own, or the one of a stop
 * in flight. Killed through the handle's pidfd: a pid read here could name
 * another process once the VMM is reaped. */
static void kill_now(sbx *s) {
  backend_vm *vm = s->vm ? s->vm : s->vm_stopping ? s->stopping_vm : NULL;
  backend_vm_kill_sync(vm, 2000);
}

void sbx_pool_shutdown(sbx_manager *m) {
  sbx_pool *p = m->pool;
  if (!p) return;
  while (p->n > 0) {
    sbx *s = p->e[--p->n];
    /* STOPPED first: closing the agent below fails its pending requests,
     * which must not start an asynchronous stop now */
    s->state = SBX_STOPPED;
    sbx_stop_boot_timer(s);
    kill_now(s);
    /* the handle is forgotten, not stopped: nothing else sees the VMM end */
    backend_cgroup_remove(s->id);
    sbx_detach_net(s); /* an entry's network goes with it (a sandbox's stays) */
    if (s->vm) backend_vm_forget(TAKE_PTR(s->vm));
    if (s->agent) {
      agent_conn *a = s->agent;
      s->agent = NULL;
      agent_conn_close(a);
    }
    cr_rm_rf(s->dir);
    sbx_release_entry(s);
  }
  /* discarded ones still stopping: the loop only closes handles from here
   * on, so their stop would not finish */
  while (ndying > 0) {
    sbx *s = dying[--ndying];
    kill_now(s);
    backend_cgroup_remove(s->id);
    sbx_detach_net(s);
    cr_rm_rf(s->dir);
  }
  if (p->kick_open) {
    p->kick_open = false;
    uv_timer_stop(&p->kick);
    uv_close((uv_handle_t *)&p->kick, (uv_close_cb)free);
  } else {
    free(p);
  }
  m->pool = NULL;
}

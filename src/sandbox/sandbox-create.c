/* Creating sandboxes: checks, the preparation off the loop (boot assets,
 * scratch and workspace disks), the VMM pool's side (entries and hand-out),
 * boot templates (warm, list, remove). */
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
    r = pw->ws_src ? cr_copy_file_clone(pw->ws_src, pw->ws_disk, 0600, CR_COPY_NO_SYNC)
                   : sbx_ws_disk_blank(pw->ws_disk);
    if (r < 0) {
      cr_error_set(&pw->err, CR_E_IO, -r, "preparing %s", pw->ws_disk);
      return;
    }
  }
  /* a fork's disk now; a create's once it is known whether a boot
   * template's disk or the blank one is copied (sbx_launch_vm) */
  if (!pw->scratch_src) return;
  /* a reflink when the filesystem shares blocks, else a sparse copy */
  r = cr_copy_file_clone(pw->scratch_src, pw->scratch, 0600, CR_COPY_NO_SYNC);
  if (r < 0) cr_error_set(&pw->err, CR_E_IO, -r, "preparing %s", pw->scratch);
}

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
    sbx_registry_remove(m, s);
    cr_rm_rf(s->dir);
    sbx_notify_waiters(s, pw->err);
    sbx_release(s);
  } else if (s->state == SBX_PROVISIONING) {
    sbx_start_vm(s, pw->tmpl);
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
  sbx_set_failed(s, CR_E_RUNTIME_LAUNCH_FAILED, "%s", why ? why : "failed");
}

sbx *sbx_pooled_new(sbx_manager *m, const image_info *img, const char *tmpl_dir, bool net,
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
  /* a network entry: address, TAP and chains that allow nothing until the
   * hand-out gives them the sandbox's policy (egress_rebind) */
  if (net && sbx_attach_net(s, -1, err) < 0) {
    cr_rm_rf(s->dir);
    sbx_free(s);
    return NULL;
  }
  sbx_event(s, "boot", "pool entry: clone of template %s", s->template_key);
  sbx_start_boot_timer(s);
  sbx_launch_vm(s); /* a failure is reported through sbx_set_failed: the pool discards it */
  return s;
}

static void on_discarded_entry(void *ud, cr_error *err) { cr_error_free(err); }

static void on_pool_resumed(void *ud, backend_vm *vm, cr_error *err) {
  sbx *s = ud;
  /* the ACTIVATE went out with the `cont` (adopt_pooled): only a failure
   * is news here */
  if (vm == s->vm && s->state == SBX_PROVISIONING && err)
    sbx_set_failed(s, cr_error_reason(err), "resuming the pooled VMM: %s", err->message);
  cr_error_free(err);
  sbx_unhold(s);
}

/* A create served by a pool entry: the sandbox takes the entry's id, VMM,
 * scratch disk and agent connection. */
static int adopt_pooled(sbx_manager *m, sbx *s, const sbx_create_params *p, const char *ref,
                        char **policy_hash, sbx_ready_cb done, sbx_progress_cb progress_cb,
                        void *ud, cr_error **err) {
  int64_t started = s->boot_start_ms;
  /* `cont` first: QEMU and the guest resume while the daemon does the rest
   * (the callback runs from the loop, after this function) */
  cr_error *e = NULL;
  sbx_hold(s);
  bool resuming = backend_vm_ops(s->vm)->resume(s->vm, on_pool_resumed, s, &e) == 0;
  if (!resuming) sbx_unhold(s);
  /* a network entry gets the policy's rules meanwhile: its chains allowed
   * nothing until now (the guest resumes under those), and fail closed if
   * this does; either way before the ACTIVATE's answer can make it ready */
  if (s->net && egress_rebind(s->net, p->policy, err) < 0) {
    cr_error_free(e);
    sbx_set_failed(s, cr_error_reason(*err), "%s", (*err)->message);
    sbx_terminate(m, s, on_discarded_entry, NULL, NULL);
    return -1;
  }
  free(s->image_ref);
  s->image_ref = strdup(ref);
  if (p->policy) s->policy = json_incref(p->policy);
  s->policy_hash = TAKE_PTR(*policy_hash);
  s->progress_cb = progress_cb;
  s->progress_ud = ud;
  s->created_ms = s->boot_start_ms = sbx_now_ms();
  s->pooled = false;
  if (sbx_registry_add(m, s) < 0) {
    cr_error_free(e);
    s->pooled = true; /* back to the pool's way out */
    sbx_set_failed(s, CR_E_INTERNAL, "out of memory");
    sbx_terminate(m, s, on_discarded_entry, NULL, NULL);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "sandbox registry");
  }
  sbx_event(s, "boot", "from the VMM pool: a clone of template %s started %lld ms before",
            s->template_key, (long long)(s->created_ms - started));
  sbx_save_state(s);
  sbx_when_ready(s, done, ud);
  sbx_start_boot_timer(s);
  sbx_progress(s, "pool", "resuming a pre-started VMM");
  if (!resuming) {
    sbx_set_failed(s, cr_error_reason(e), "resuming the pooled VMM: %s", e ? e->message : "");
    cr_error_free(e);
    return 0;
  }
  /* clock, entropy, hostname again (the mounts are there; a network
   * entry's guest has its address): sent now, it waits in the agent's
   * channel until the guest runs, without waiting for QMP's answer */
  sbx_send_activate(s);
  return 0;
}

/* A ready pool entry for this create, or NULL. */
static sbx *pool_match(sbx_manager *m, const sbx_create_params *p, const image_info *img,
                       unsigned vcpus, unsigned mem) {
  bool net = p->policy && egress_policy_wants_network(p->policy);
  if (net) m->net_wanted = true; /* the pool keeps a network entry from now on */
  if (!m->pool || !m->assets || !m->tmpl || m->templates_off || p->cold || p->from_snapshot ||
      !sbx_pool_has_ready(m))
    return NULL;
  tmpl_spec spec = {img->digest, img->rootfs,
                    m->assets->vmlinux ? m->assets->vmlinux : m->assets->kernel,
                    m->assets->initrd, vcpus, mem, NULL, net};
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
  if (s->policy && egress_policy_wants_network(s->policy) && sbx_attach_net(s, -1, err) < 0) {
    cr_rm_rf(s->dir);
    sbx_free(s);
    return -1;
  }
  if (sbx_registry_add(m, s) < 0) {
    sbx_detach_net(s);
    cr_rm_rf(s->dir);
    free(pw->scratch);
    free(pw);
    unlink(s->ram_path);
    sbx_free(s);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "sandbox registry");
  }
  sbx_crash_point("create-dir");
  sbx_save_state(s);
  sbx_when_ready(s, done, ud);
  /* the boot deadline covers the preparation too */
  sbx_start_boot_timer(s);
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
  sbx_progress(s, "prepare", "preparing the scratch disk");
  r = uv_queue_work(m->loop, &pw->w, prepare_run, prepare_done);
  if (r < 0) {
    s->handles--;
    free(pw->scratch);
    free(pw->scratch_src);
    free(pw);
    sbx_set_failed(s, CR_E_INTERNAL, "cannot queue the preparation: %s", uv_strerror(r));
  }
  sbx_crash_point("create-launched");
  /* After return the caller may get the callback any time; sbx_progress
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

/* A restarted daemon: reads every state.json and re-attaches to the VMMs
 * that still run (or marks their sandboxes failed). */
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
    if (st && !strcmp(st, sbx_state_name((sbx_state)i))) s->state = (sbx_state)i;
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
  if (sbx_registry_add(m, s) < 0) {
    sbx_free(s);
    return;
  }
  sbx_execs_load(s);
  if (s->state == SBX_READY || s->state == SBX_PROVISIONING || s->state == SBX_STOPPING) {
    bool stopping = s->state == SBX_STOPPING;
    s->state = SBX_PROVISIONING; /* so sbx_set_failed records it */
    /* killed between the VMM's start and the pid's write: find it */
    if (s->pid <= 0 && !stopping) s->pid = sbx_find_vmm(m, s->id);
    /* the guest keeps its address; the rules and the resolver come back */
    cr_error *nerr = NULL;
    if (!stopping && s->net_slot >= 0 && s->policy) sbx_attach_net(s, s->net_slot, &nerr);
    _cleanup_free_ char *scratch = cr_path_join(s->dir, "scratch.ext4");
    _cleanup_free_ char *wsd = sbx_ws_disk(s);
    backend_vm_config cfg;
    sbx_vm_config(s, &cfg, scratch, wsd);
    cr_error *e = NULL;
    if (stopping || m->backend->attach(m->loop, &cfg, s->pid, &sbx_vm_events, s, &s->vm, &e) < 0) {
      s->vm = NULL;
      cr_error_free(e);
      sbx_kill_vmms_of(m, s->id); /* an interrupted terminate, or a VMM we cannot attach */
      cr_error_free(nerr);
      sbx_set_failed(s, CR_E_VMM_EXITED,
                 "the VMM (pid %d) is gone (it exited while the daemon was not running)",
                 (int)s->pid);
      return;
    }
    if (nerr) {
      /* never leave a guest on an unfiltered TAP: stop it */
      sbx_set_failed(s, cr_error_reason(nerr), "cannot restore the sandbox's network: %s",
                 nerr->message);
      cr_error_free(nerr);
      return;
    }
    s->reattaching = true;
    m->reattach_pending++;
    s->boot_start_ms = sbx_now_ms();
    sbx_start_boot_timer(s);
  }
}

static void settle_check(sbx_manager *m) {
  if (m->reattach_pending == 0 && m->settled) {
    void (*cb)(void *) = TAKE_PTR(m->settled);
    cb(m->settled_ud);
  }
}

/* A re-attaching sandbox is ready or failed. */
void sbx_reattach_settled(sbx *s) {
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

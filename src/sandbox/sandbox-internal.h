/* Internals shared by the files of src/sandbox. */
#pragma once
#include "sandbox/sandbox.h"
#include "boot/boot.h"
#include "egress/egress.h"
#include "gateway/gateway.h"
#include "image/image.h"
#include "util/macro.h"

#include <sys/types.h>

/* what the VMM pool's entries are (pool.c) */
#define SBX_POOL_VCPUS 1
#define SBX_POOL_MEMORY_MIB 512
/* a refill waits this long after a hand-out or a ready sandbox: its first
 * exec usually follows at once, and there are few cores */
#define SBX_POOL_REFILL_DELAY_MS 250

typedef struct sbx_pool sbx_pool;

typedef struct sbx_waiter {
  sbx_ready_cb cb;
  void *ud;
} sbx_waiter;

struct sbx_manager {
  uv_loop_t *loop;
  char *dir; /* <data>/sandboxes */
  sbx **list;
  size_t n, cap;
  const backend_ops *backend;
  boot_assets *assets;
  uint64_t boot_timeout_ms;
  size_t reattach_pending; /* re-attaches not yet ready or failed */
  struct tmpl_registry *tmpl; /* boot templates (template.h) */
  bool templates_off;         /* CLEANROOM_TEMPLATES=0 */
  void (*settled)(void *ud);
  void *settled_ud;
  size_t output_bytes; /* execution output buffers allocated (exec.c) */
  uv_timer_t console_timer; /* console.c: caps every console.log */
  bool console_timer_init;
  egress *egress; /* per-sandbox networks (NULL until the first one) */
  char *scratch_blank; /* the blank scratch disk (cache/scratch-*.ext4), once known */
  gw *gateway;    /* the host gateway (NULL until the first network, or off) */
  bool gateway_tried;
  sbx_pool *pool;      /* pre-started clones of the default template (pool.c) */
  bool net_wanted;     /* a sandbox with a network was created: the pool keeps
                          network entries too */
  bool assets_building; /* sbx_prepare_assets in flight */
  /* sandboxes allocated and not yet freed: a sandbox still held by
   * asynchronous work at shutdown is freed after the manager's last handle
   * closed; the manager's memory goes with the last of both */
  size_t live;
  bool dead; /* sbx_manager_free ran; freed once live is 0 */
};

struct sbx {
  sbx_manager *m;
  char id[27];
  sbx_state state;
  char *reason, *message;
  char *dir;
  int slots_fd; /* executions/slots, opened at the first record written; -1 */
  char *image_ref, *image_digest, *image_path, *ram_path;
  unsigned vcpus, memory_mib;
  int64_t created_ms, ready_ms, boot_start_ms;
  uint64_t boot_ms;
  json_t *policy;
  char *policy_hash;
  json_t *workspace; /* repository checked out into the sandbox (src/workspace), or NULL */
  egress_sbx *net;   /* the sandbox's network (policy with network rules) */
  gw_sbx *gw;        /* its gateway listener (NULL when the gateway is off) */
  int net_slot;      /* its address slot, -1 without a network */
  char net_mac[24];  /* the guest NIC's MAC (from the slot) */
  char *last_exec_id;
  pid_t pid;            /* recorded VMM pid (state.json; re-attach) */
  backend_vm *vm;       /* NULL once stop() was asked for */
  bool vm_stopping;     /* a stop() is in flight (on_vm_stopped pending) */
  unsigned vm_killing;  /* VMMs a restore replaced, killed and not reaped yet */
  backend_vm *stopping_vm; /* its handle meanwhile (valid until on_vm_stopped) */
  cr_error *fail_err;   /* failure reported to waiters once the VMM is gone */
  sbx_terminate_cb term_cb;
  void *term_ud;
  agent_conn *agent;
  sbx_waiter *waiters;
  size_t nwaiters, capwaiters;
  sbx_progress_cb progress_cb;
  void *progress_ud;
  uv_timer_t boot_timer;
  bool boot_timer_init, boot_timer_on;
  bool reattaching, removed;
  int handles; /* libuv handles/callbacks still pending before free */
  /* snapshots (template.h, snapshot.c): how the VM came to be */
  const char *boot_mode;   /* "cold", "clone", "fork", "restore" (static) */
  char *template_key;      /* clone: the template used */
  char *from_snapshot;     /* fork/restore: the snapshot id */
  char *restore_dir;       /* backend state dir to start the VM from */
  bool restoring;          /* a restore() is in flight (not yet ready) */
  bool agent_early;        /* the agent socket was connected before the state was loaded */
  bool ram_owned;          /* ram_path is ours (unlinked with the sandbox) */
  bool ram_private;        /* ram_path is mapped copy-on-write */
  bool snapshotting;       /* a snapshot is being taken */
  bool cold;               /* create asked for a cold boot */
  bool tmpl_waiting;       /* waiting for a boot template (on_template pending) */
  bool boot_expired;       /* the boot deadline passed while waiting for it */
  bool relaunch_pending;   /* launch_vm waits for the previous VMM to go */
  bool pooled;             /* a VMM pool entry: not in the registry, no state.json */
  bool pool_ready;         /* ... activated, warmed up and paused: can be handed out */
  bool net_configured;     /* the guest's network was set at an ACTIVATE already (a
                              pool entry's: the hand-out's ACTIVATE leaves it) */
  bool scratch_ready;      /* <dir>/scratch.ext4 exists (else launch_vm copies it first) */
  bool scratch_copying;    /* that copy is on the thread pool */
  char *scratch_src;       /* what launch_vm copies: a template's scratch disk, else blank */
  json_t *events;          /* [{time, type, message}], bounded */
  int64_t restore_start_ms;
  uint64_t restore_ms;     /* VMM start -> state loaded and running */
  sbx_exec **execs;
  size_t nexecs, capexecs;
};

int64_t sbx_now_ms(void);
/* A new sandbox struct of m (counted in m->live); sbx_free uncounts it. */
struct sbx *sbx_alloc(sbx_manager *m);
/* Frees m once it is dead and no sandbox is left (console.c). */
void sbx_manager_maybe_free(sbx_manager *m);
json_t *sbx_time_json(int64_t ms);
int64_t sbx_time_from_json(json_t *j);
void sbx_exec_free(sbx_exec *e);
/* Ends every running execution of s (agent going away). */
void sbx_execs_abort(sbx *s, const char *why);
/* Loads recorded executions from <dir>/executions. */
void sbx_execs_load(sbx *s);
/* console.c: the periodic console.log cap; stop returns true when it
 * closes the timer, which then frees m. */
void sbx_console_watch_start(sbx_manager *m);
bool sbx_console_watch_stop(sbx_manager *m);
/* quota.c: room for one more sandbox of memory_mib (resource_exhausted). */
int sbx_quota_check(sbx_manager *m, unsigned memory_mib, cr_error **err);
/* console.c: creates the guest RAM file (0600 in a 0700 dir of ours). */
int sbx_ram_file_create(const char *id, char **ret_path, cr_error **err);
int sbx_ram_file_path(const char *id, char **ret);
/* reconcile.c: crash windows. A test hook first: with
 * CLEANROOM_TEST_CRASH_AT=<step> the daemon SIGKILLs itself at that step. */
void sbx_crash_point(const char *step);
pid_t sbx_find_vmm(sbx_manager *m, const char *id);
void sbx_kill_vmms_of(sbx_manager *m, const char *id);
void sbx_kill_orphan_vmms(sbx_manager *m);
void sbx_remove_partial(sbx_manager *m, const char *id, const char *dir);
/* Appends an event to the sandbox's events (kept in state.json). */
void sbx_event(sbx *s, const char *type, const char *fmt, ...) _printf_(3, 4);
void sbx_save_state(sbx *s);
/* Keeps s allocated across asynchronous work (a removed sandbox is freed
 * once the last hold goes). */
void sbx_hold(sbx *s);
void sbx_unhold(sbx *s);
/* A snapshot opened for restore/fork (snapshot.c): checked (files present,
 * sizes and sha256 of the VM state) before anything is touched. */
typedef struct snap_source {
  char *id, *dir, *state_dir, *scratch, *image_ref, *image_digest;
  char *ram; /* state/ram: the guest RAM as a flat file (mapped private), or NULL */
  unsigned vcpus, memory_mib;
  json_t *workspace; /* the sandbox's workspace record then, or NULL */
  json_t *policy;    /* the sandbox's compiled policy then, or NULL */
  bool network;      /* the sandbox had a network (its VM a NIC) */
} snap_source;
int snap_open(sbx_manager *m, const char *ref, snap_source *ret, cr_error **err);
void snap_source_clear(snap_source *s);
/* Replaces the VM of a ready or failed sandbox with one restored from
 * state_dir (a snapshot's backend state; ram: its flat RAM file, mapped
 * private, or NULL); scratch_new replaces the scratch disk. Executions end; the sandbox is provisioning until the agent
 * answers again. */
int sbx_relaunch_restore(sbx *s, const char *state_dir, const char *snapshot_id,
                         const char *ram, const char *scratch_new, cr_error **err);

/* ---- the VMM pool (pool.c) */
sbx_pool *sbx_pool_new(sbx_manager *m);
unsigned sbx_pool_size_config(void);
/* Looks at the pool after delay_ms: discards failed or stale entries,
 * starts one when there is room and nothing else is starting. */
void sbx_pool_kick(sbx_manager *m, uint64_t delay_ms);
/* A ready entry of that template (removed from the pool), or NULL. A
 * template with a NIC gives entries with a reserved network (egress.h). */
sbx *sbx_pool_take(sbx_manager *m, const char *template_key);
bool sbx_pool_has_ready(sbx_manager *m);
/* An entry's ACTIVATE was answered: warm-up, pause, ready. */
void sbx_pool_activated(sbx *s);
/* Kills and removes every entry (daemon stop); frees the pool. */
void sbx_pool_shutdown(sbx_manager *m);
/* sandbox-create.c for pool.c: a new entry (a clone of the template in tmpl_dir),
 * starting; its failure, the boot timer, the final release. */
sbx *sbx_pooled_new(sbx_manager *m, const image_info *img, const char *tmpl_dir, bool net,
                    cr_error **err);
void sbx_pool_failed(sbx *s, const char *why);
void sbx_stop_boot_timer(sbx *s);
void sbx_release_entry(sbx *s);
/* Builds the boot assets and the blank scratch disk on the thread pool
 * when they are not there yet (once at a time); kicks the pool when done. */
void sbx_prepare_assets(sbx_manager *m);

/* ---- shared by sandbox.c, sandbox-store.c, sandbox-boot.c, sandbox-create.c
 * and sandbox-reattach.c (one sandbox.c before) */
int sbx_attach_net(sbx *s, int slot, cr_error **err);
char *sbx_console_tail(sbx *s);
void sbx_detach_net(sbx *s);
void sbx_kill_vmm(sbx *s);
int sbx_launch_vm(sbx *s);
void sbx_notify_waiters(sbx *s, const cr_error *err);
void sbx_on_vm_exited(void *ud, backend_vm *vm, int status, int sig, const char *why);
void sbx_progress(sbx *s, const char *phase, const char *msg);
void sbx_reattach_settled(sbx *s);
int sbx_registry_add(sbx_manager *m, sbx *s);
void sbx_registry_remove(sbx_manager *m, sbx *s);
void sbx_free(sbx *s);
void sbx_release(sbx *s);
void sbx_unref_handle_cb(sbx *s);
void sbx_send_activate(sbx *s);
void sbx_set_failed(sbx *s, const char *reason, const char *fmt, ...) _printf_(3, 4);
void sbx_start_boot_timer(sbx *s);
void sbx_start_vm(sbx *s, const char *scratch_tmpl);
void sbx_stop_vmm(sbx *s);
void sbx_unlink_ram(sbx *s);
void sbx_vm_config(sbx *s, backend_vm_config *cfg, const char *scratch, const char *ws);
extern const backend_events sbx_vm_events;

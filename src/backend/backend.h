/* VMM backends behind one vtable (one file per VMM: qemu.c, ...). The
 * backend owns the VM, all of it: the VMM process, its sockets, how the agent
 * byte stream is reached, pausing, saving and restoring, and stopping it.
 * The sandbox layer above holds a backend_vm handle and never learns paths,
 * pids or QMP.
 *
 * Rules every backend follows (docs/architecture.md, "Backends"):
 * - Nothing blocks the caller's loop: every operation that waits for the
 *   VMM reports through a callback that runs later on the loop (never
 *   inside the call that started it).
 * - A handle (backend_vm) comes from launch, restore or attach and lives
 *   until stop() has reported (or forget() was called). stop() is the only
 *   way to end a VMM; it is valid in any state (also while launching, also
 *   after the VMM died on its own) and always reports exactly once.
 * - When the VMM goes away without stop(), events->exited runs once.
 * - An operation a backend does not implement fails at once with
 *   CR_E_BACKEND_UNSUPPORTED (a clear message; its callback never runs).
 * - VMM processes outlive the daemon (a restarted daemon attach()es). */
#pragma once
#include "util/error.h"
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

/* The guest's network attachment (filled in by egress; all NULL/0 = no NIC).
 * The TAP device exists and is configured on the host before launch; the
 * backend attaches the guest's NIC to it. Addresses are for the guest side
 * set-up (ACTIVATE) and for backends that configure the guest themselves. */
typedef struct backend_net {
  const char *tap;        /* host TAP device name, e.g. "crt-01hx..." */
  const char *mac;        /* guest NIC MAC, "52:54:00:xx:xx:xx" */
  const char *guest_addr; /* guest address with prefix, "10.200.0.2/30" */
  const char *host_addr;  /* host side of the link: gateway + DNS, "10.200.0.1" */
  unsigned mtu;           /* 0 = backend default (1500) */
  /* No TAP, but the same NIC on no network: boot templates for sandboxes
   * with a network (a clone then attaches the NIC to its own TAP; the
   * device set must match). QEMU: -netdev hubport on a hub of its own. */
  bool placeholder;
} backend_net;

typedef struct backend_vm_config {
  const char *id;          /* sandbox id (names the VMM process) */
  const char *dir;         /* per-VM dir the backend may use (sockets, logs) */
  const char *kernel;      /* kernel image */
  const char *initrd;      /* initramfs with the agent as /init */
  const char *image;       /* image ext4, attached read-only, serial cr-image */
  const char *scratch;     /* scratch ext4, read-write, serial cr-scratch */
  const char *workspace;   /* workspace disk, read-write, serial cr-workspace (NULL: none) */
  const char *ram_path;    /* guest RAM file (for snapshots); NULL = anonymous */
  unsigned vcpus;
  unsigned memory_mib;
  backend_net net;         /* network attachment; net.tap NULL = none */
  /* ram_path is mapped private (copy-on-write; the file stays intact):
   * clones of a template share its pages */
  bool ram_private;
} backend_vm_config;

typedef struct backend_vm backend_vm;

/* Events of one VM, on the loop. */
typedef struct backend_events {
  /* launch/restore/attach outcome: err NULL = the VMM runs and
   * connect_agent may be called; else err says why (callee owns err) and the
   * handle still has to be stop()ped (which then completes at once). */
  void (*ready)(void *ud, backend_vm *vm, cr_error *err);
  /* The VMM went away without stop(): how (status/signal as from waitpid
   * when known, else -1/0), and a short reason with the VMM's log tail. */
  void (*exited)(void *ud, backend_vm *vm, int status, int signal, const char *why);
} backend_events;

/* Operation done: err NULL = success (callee owns err). */
typedef void (*backend_done_cb)(void *ud, backend_vm *vm, cr_error *err);
/* The agent byte stream: fd is a connected, non-blocking stream socket the
 * caller now owns (e.g. for agent_conn_open), or -1 with err. */
typedef void (*backend_agent_cb)(void *ud, backend_vm *vm, int fd, cr_error *err);

/* What save() writes and restore() reads: a directory the backend fills
 * with the device state and a copy of the guest RAM (its layout is the
 * backend's, except: a file "ram" there is the guest RAM as a flat sparse
 * file, which restore() needs as cfg.ram_path with cfg.ram_private). */
typedef struct backend_save_opts {
  const char *state_dir; /* created by the caller, empty */
  bool resume_after;     /* true: the VM runs on after the save; false: stays paused */
  /* Device state only: the guest RAM stays in the VM's RAM file (cfg
   * ram_path, shared), which the caller keeps (boot templates). A restore
   * then needs that file as its cfg ram_path. */
  bool ram_in_file;
} backend_save_opts;

typedef struct backend_ops {
  const char *name;
  /* Machine-readable capabilities: {"backend", "accel", "kvm", "snapshots",
   * "network" ("tap": attaches a TAP from the VM config), "egress" (the
   * backend filters by itself; false for qemu: src/egress does, see
   * sbx_policy_check), "vmm_user", "notes", ...}. New reference. */
  json_t *(*capabilities)(void);
  /* What a state save() writes depends on besides the VM config, as one
   * canonical text: the VMM binary (its file identity), the accelerator,
   * the guest CPU model, the fixed part of the guest kernel's command line.
   * Part of a boot template's key: a template saved under other values is
   * never restored. NULL when the VMM is not installed. Caller frees. */
  char *(*state_identity)(void);
  /* Starts a VMM for cfg (everything in cfg is copied). *ret gets the handle
   * at once; events->ready reports the outcome. */
  int (*launch)(uv_loop_t *loop, const backend_vm_config *cfg, const backend_events *ev,
                void *ud, backend_vm **ret, cr_error **err);
  /* Starts a new VMM for cfg (new dir, new scratch and RAM backing files)
   * from a state save() wrote; reported like launch. The guest resumes
   * where it was saved (then the caller re-activates it). */
  int (*restore)(uv_loop_t *loop, const backend_vm_config *cfg, const char *state_dir,
                 const backend_events *ev, void *ud, backend_vm **ret, cr_error **err);
  /* Takes over a VMM a previous daemon started (pid from the caller's
   * records): fails with CR_E_VMM_EXITED when that pid is not this VM's
   * VMM any more. events->ready runs (err NULL) once attached. */
  int (*attach)(uv_loop_t *loop, const backend_vm_config *cfg, pid_t pid,
                const backend_events *ev, void *ud, backend_vm **ret, cr_error **err);
  /* Opens the agent byte stream (QEMU: the virtio-serial port's unix
   * socket; Firecracker: vsock over its unix socket). */
  int (*connect_agent)(backend_vm *vm, backend_agent_cb cb, void *ud, cr_error **err);
  /* Stops / continues the vCPUs. */
  int (*pause)(backend_vm *vm, backend_done_cb cb, void *ud, cr_error **err);
  int (*resume)(backend_vm *vm, backend_done_cb cb, void *ud, cr_error **err);
  /* Saves device state + RAM (the VM is paused for it). cb always runs, also
   * when stop() ended the VM meanwhile (then with an error). */
  int (*save)(backend_vm *vm, const backend_save_opts *opts, backend_done_cb cb, void *ud,
              cr_error **err);
  /* Ends the VMM: a polite quit, a hard kill after a short grace; cb runs
   * once the VMM process is gone (err only when even SIGKILL did not end it),
   * then the handle is freed. Never fails synchronously; cb may be NULL. */
  void (*stop)(backend_vm *vm, backend_done_cb cb, void *ud);
  /* Like stop, without the polite quit: the VMM is killed at once (its VM
   * is thrown away: a restore replaces it). Nothing of it reaches the VMM's
   * sockets any more, so a new VMM may use the same directory at once. */
  void (*kill)(backend_vm *vm, backend_done_cb cb, void *ud);
  /* true while the VMM process exists (not a liveness probe of the guest). */
  bool (*alive)(const backend_vm *vm);
} backend_ops;

/* ---- generic (backend.c) */

extern const backend_ops backend_qemu;

/* The backend for this host: $CLEANROOM_BACKEND when set ("qemu"), else
 * qemu (firecracker when it lands and KVM is usable). */
const backend_ops *backend_default(void);
/* By name; NULL when unknown. */
const backend_ops *backend_by_name(const char *name);
/* Makes one more backend known by its name (for backend_by_name() and so
 * CLEANROOM_BACKEND). Only the unit tests use it: their fake VMM
 * (tests/unit/test-sandbox.c) is a test double of this vtable that drives
 * the sandbox state machine alone; integration tests use real QEMU. */
void backend_register(const backend_ops *ops);
/* "kvm" when /dev/kvm can create a VM, else "tcg". Cached. */
const char *backend_accel(void);
/* Why backend_accel() chose what it chose (for doctor). */
const char *backend_accel_reason(void);
/* The unprivileged user VMMs run as ($CLEANROOM_VMM_USER, default
 * BACKEND_VMM_USER; empty = off), or NULL when the daemon is not root or the
 * user does not exist (then VMMs keep the daemon's user). */
#define BACKEND_VMM_USER "cleanroom-vmm"
const char *backend_vmm_user(void);
/* A uid of its own for each VMM (Firecracker's jailer does the same): a root
 * daemon gives every VMM the lowest uid (gid the same number) of
 * $CLEANROOM_VMM_UIDS ("FIRST-LAST", default BACKEND_VMM_UIDS) that no live
 * VMM on this host holds, so one compromised VMM cannot signal, ptrace or
 * read the memory of another. Holding is an flock(2) on
 * BACKEND_VMM_UID_LOCKS/<uid> that the VMM inherits: it ends when that VMM
 * exits, across daemon restarts and between daemons. CLEANROOM_VMM_UIDS=""
 * falls back to the one VMM user (backend_vmm_user()). false when off (not
 * root, the range disabled, or CLEANROOM_VMM_USER="" opted out of dropping
 * root). */
#define BACKEND_VMM_UIDS "1900000000-1900065535"
#define BACKEND_VMM_UID_LOCKS "/run/cleanroom-vmm-uids"
bool backend_vmm_uid_range(uid_t *first, uid_t *last);
/* What a VMM runs as: runas is "" (keep the daemon's user), a user name, or
 * "UID:GID" (QEMU's -runas); lockfd (>= 0) holds a per-VMM uid and must be
 * inherited by the VMM. */
typedef struct backend_vmm_id {
  char runas[64];
  uid_t uid;
  int lockfd;
} backend_vmm_id;
int backend_vmm_id_take(backend_vmm_id *id, cr_error **err);
void backend_vmm_id_release(backend_vmm_id *id);
/* Confinement fails closed: a root daemon without its VMM user does not
 * start VMMs as root unless the operator opted out (CLEANROOM_VMM_USER set
 * to the empty string). NULL = VMMs may start; else why not. */
const char *backend_vmm_refusal(void);

/* The handle's backend, VMM pid (> 0 once launched) and id. */
const backend_ops *backend_vm_ops(const backend_vm *vm);
pid_t backend_vm_pid(const backend_vm *vm);
/* SIGKILLs the VMM now (through a pidfd: never another process that reused
 * its pid) and waits up to timeout_ms for it to end. Blocks: for the
 * daemon's shutdown only, when the loop no longer runs the stop sequence. */
void backend_vm_kill_sync(backend_vm *vm, int timeout_ms);
const char *backend_vm_id(const backend_vm *vm);
/* Lets go of the handle without touching the VMM (daemon shutdown: VMMs keep
 * running and a restarted daemon attach()es). No callbacks run after this. */
void backend_vm_forget(backend_vm *vm);

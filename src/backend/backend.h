/* VMM backends behind one vtable (one file per VMM: qemu.c, ...).
 *
 * A backend starts a VM whose guest runs cleanroom-agent and exposes the
 * agent channel as a unix socket (<dir>/agent.sock); the sandbox layer then
 * speaks the agent protocol over it (agent_client.h). VMM processes are
 * started detached so they outlive the daemon. */
#pragma once
#include "util/error.h"
#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>
#include <uv.h>

typedef struct backend_vm_config {
  const char *id;          /* sandbox id (names the VMM process) */
  const char *dir;         /* sandbox dir: sockets, logs, pidfile live here */
  const char *kernel;      /* kernel image */
  const char *initrd;      /* initramfs with the agent as /init */
  const char *image;       /* image ext4, attached read-only, serial cr-image */
  const char *scratch;     /* scratch ext4, read-write, serial cr-scratch */
  const char *ram_path;    /* guest RAM file (for snapshots); NULL = anonymous */
  unsigned vcpus;
  unsigned memory_mib;
} backend_vm_config;

/* Reports the VMM start: pid > 0 when the VMM is up and its sockets exist,
 * else err says why (the callee owns err). */
typedef void (*backend_launch_cb)(void *ud, pid_t pid, cr_error *err);

typedef struct backend_ops {
  const char *name;
  /* Machine-readable capabilities: {"backend", "accel", "kvm", "snapshots",
   * "network": [...], "notes"}. New reference. */
  json_t *(*capabilities)(void);
  /* Starts the VMM for cfg; cb runs on the loop. */
  int (*launch)(uv_loop_t *loop, const backend_vm_config *cfg,
                backend_launch_cb cb, void *ud, cr_error **err);
  /* Asks the VMM to quit at once (QMP quit), then SIGKILL if needed. */
  int (*stop)(const char *dir, pid_t pid, cr_error **err);
  /* 1 when pid is the VMM of sandbox id, 0 when gone. */
  int (*alive)(const char *id, pid_t pid);
  /* Later: pause, resume, snapshot, restore (templates, snapshots, fork). */
} backend_ops;

extern const backend_ops backend_qemu;

/* The default backend for this host (qemu; firecracker when it lands). */
const backend_ops *backend_default(void);
/* "kvm" when /dev/kvm can create a VM, else "tcg". Cached. */
const char *backend_accel(void);
/* The unprivileged user VMMs run as ($CLEANROOM_VMM_USER, default
 * BACKEND_VMM_USER; empty = off), or NULL when the daemon is not root or the
 * user does not exist (then VMMs keep the daemon's user). */
#define BACKEND_VMM_USER "cleanroom-vmm"
const char *backend_vmm_user(void);
/* Why backend_accel() chose what it chose (for doctor). */
const char *backend_accel_reason(void);

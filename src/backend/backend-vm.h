/* For backend implementations only (qemu.c, tests' fake backend): the part
 * of a VM handle every backend shares, run by backend.c. It spawns the VMM as
 * a child of the daemon in its own session (no -daemonize: the daemon reaps
 * it, so nothing lingers as a zombie), watches a VMM a previous daemon
 * started through a pidfd, and runs the stop sequence: the backend's polite
 * quit, SIGKILL after a grace, completion when the process is gone. Nothing
 * here sleeps or polls. */
#pragma once
#include "backend/backend.h"

typedef struct backend_vm_impl {
  /* Asks the VMM to quit (asynchronously; e.g. QMP quit). May be NULL. */
  void (*request_quit)(backend_vm *vm);
  /* Frees vm->priv. May be NULL. */
  void (*free_priv)(void *priv);
  /* The VMM's log in vm->dir, quoted when it dies (e.g. "qemu.log"). */
  const char *log_name;
} backend_vm_impl;

struct backend_vm {
  const backend_ops *ops;
  const backend_vm_impl *impl;
  uv_loop_t *loop;
  backend_events ev;
  void *ud;
  char *id, *dir;
  pid_t pid;
  unsigned vcpus, memory_mib; /* for the VMM's cgroup */
  void *priv; /* the backend's own state */

  /* exit watch: a child through uv_process (reaped here), else a pidfd */
  uv_process_t proc;
  uv_poll_t pidfd_poll;
  int pidfd;
  bool proc_open, pidfd_open, gone, ready_reported;
  int exit_status, exit_signal;

  /* stop sequence */
  uv_timer_t stop_timer;
  bool stop_timer_open, stopping, kill_sent, finished, forgotten;
  backend_done_cb stop_cb;
  void *stop_ud;

  int refs; /* open handles, queued work, deferred calls */
};

/* Grace between the polite quit and SIGKILL, and how long SIGKILL may take. */
#define BACKEND_STOP_GRACE_MS 500
#define BACKEND_KILL_WAIT_MS 2000
unsigned backend_stop_grace_ms(void);

backend_vm *backend_vm_new(const backend_ops *ops, const backend_vm_impl *impl,
                           uv_loop_t *loop, const backend_vm_config *cfg,
                           const backend_events *ev, void *ud);
/* Spawns argv as the VMM: setsid() (libuv's detached mode) and exec, stdin
 * /dev/null, stdout+stderr to logfd; fds[i] becomes fd 3+i in the child. */
int backend_vm_spawn(backend_vm *vm, char **argv, int logfd, const int *fds, int nfds,
                     cr_error **err);
/* Watches pid (not our child) through a pidfd. Fails with CR_E_VMM_EXITED
 * when it is gone already. */
int backend_vm_watch(backend_vm *vm, pid_t pid, cr_error **err);
/* Reports ready (err NULL or the failure) on the next loop turn. */
void backend_vm_report_ready(backend_vm *vm, cr_error *err);
/* Runs fn(vm, arg) on the next loop turn unless the handle finished. */
int backend_vm_later(backend_vm *vm, void (*fn)(backend_vm *vm, void *arg), void *arg);
/* Holds the handle while asynchronous work (uv_queue_work) is pending. */
void backend_vm_ref(backend_vm *vm);
void backend_vm_unref(backend_vm *vm);
/* true once stop() reported or forget() ran: late results are dropped. */
bool backend_vm_finished(const backend_vm *vm);
/* The generic stop sequence (backend_ops.stop of most backends). */
void backend_vm_stop(backend_vm *vm, backend_done_cb cb, void *ud);
/* The same without the polite quit: SIGKILL at once (backend_ops.kill). */
void backend_vm_kill(backend_vm *vm, backend_done_cb cb, void *ud);
bool backend_vm_alive(const backend_vm *vm);
/* Fails with CR_E_BACKEND_UNSUPPORTED: "<backend> cannot <what> yet". */
int backend_unsupported(const backend_vm *vm, const char *what, cr_error **err);
/* The end of a file in dir, for error messages ("" when missing). */
char *backend_log_tail(const char *dir, const char *name, size_t max);

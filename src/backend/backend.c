/* The generic part of the backend layer: the picker, accelerator detection,
 * the VMM user, and the VM handle every backend shares (backend-vm.h): the
 * VMM as a reaped child, the pidfd watch of a VMM a previous daemon started,
 * and the asynchronous stop sequence. */
#include "backend/backend-vm.h"
#include "backend/cgroup.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/macro.h"

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <string.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* ---- picker, accelerator, VMM user */

static const backend_ops *registered;

void backend_register(const backend_ops *ops) { registered = ops; }

const backend_ops *backend_by_name(const char *name) {
  if (name && !strcmp(name, backend_qemu.name)) return &backend_qemu;
  if (name && registered && !strcmp(name, registered->name)) return registered;
  return NULL;
}

const backend_ops *backend_default(void) {
  const backend_ops *b = backend_by_name(getenv("CLEANROOM_BACKEND"));
  return b ? b : &backend_qemu;
}

#define KVM_CREATE_VM_IOCTL 0xAE01

static bool cpu_has_virt(void) {
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;
  if (cr_read_file("/proc/cpuinfo", 64 << 20, &buf, &len) < 0) return false;
  char *save = NULL;
  for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    if (strncmp(line, "flags", 5)) continue;
    return strstr(line, " vmx") || strstr(line, " svm");
  }
  return false;
}

static char accel_reason[256];

const char *backend_accel(void) {
  static const char *cached;
  if (cached) return cached;
  const char *e = getenv("CLEANROOM_ACCEL");
  if (e && (!strcmp(e, "kvm") || !strcmp(e, "tcg"))) {
    snprintf(accel_reason, sizeof(accel_reason), "chosen by CLEANROOM_ACCEL=%s", e);
    return cached = e;
  }
  cached = "tcg";
  /* /dev/kvm can exist and even create VMs while the CPU lacks the
   * virtualization extensions (some nested setups): QEMU then dies setting
   * MSRs or the guest never runs. Require the vmx/svm flag as well. */
  if (!cpu_has_virt()) {
    snprintf(accel_reason, sizeof(accel_reason),
             "the CPU has no vmx/svm flag in /proc/cpuinfo%s",
             access("/dev/kvm", F_OK) == 0 ? " (/dev/kvm exists but cannot run guests here)" : "");
    return cached;
  }
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    snprintf(accel_reason, sizeof(accel_reason), "/dev/kvm: %s", strerror(errno));
    return cached;
  }
  int vm = ioctl(fd, KVM_CREATE_VM_IOCTL, 0);
  if (vm >= 0) {
    cached = "kvm";
    snprintf(accel_reason, sizeof(accel_reason), "/dev/kvm can create VMs");
    close(vm);
  } else {
    snprintf(accel_reason, sizeof(accel_reason), "KVM_CREATE_VM: %s", strerror(errno));
  }
  close(fd);
  return cached;
}

const char *backend_accel_reason(void) {
  backend_accel();
  return accel_reason;
}

const char *backend_vmm_user(void) {
  static char user[64];
  static int done;
  if (done) return user[0] ? user : NULL;
  done = 1;
  if (geteuid() != 0) return NULL; /* already unprivileged */
  const char *e = getenv("CLEANROOM_VMM_USER");
  if (e && !*e) return NULL; /* explicitly disabled */
  const char *name = e ? e : BACKEND_VMM_USER;
  if (!getpwnam(name)) {
    log_warn("VMM user '%s' does not exist: no VMM will start (create it with "
             "'useradd --system --no-create-home --shell /usr/sbin/nologin %s', or opt out "
             "of dropping root with CLEANROOM_VMM_USER=)",
             name, name);
    return NULL;
  }
  snprintf(user, sizeof(user), "%s", name);
  return user;
}

/* The range from the environment, or false; read once (like the VMM user):
 * the environment of a daemon does not change while it runs. */
static bool parse_uid_range(uid_t *first, uid_t *last) {
  if (geteuid() != 0) return false;
  const char *u = getenv("CLEANROOM_VMM_USER");
  if (u && !*u) return false; /* opted out of dropping root */
  const char *e = getenv("CLEANROOM_VMM_UIDS");
  if (!e) e = BACKEND_VMM_UIDS;
  if (!*e) return false;
  char *end = NULL;
  errno = 0;
  unsigned long long a = strtoull(e, &end, 10), b;
  if (errno || end == e || *end != '-') goto bad;
  const char *s = end + 1;
  b = strtoull(s, &end, 10);
  if (errno || end == s || *end || a == 0 || b < a || b >= UINT32_MAX) goto bad;
  *first = (uid_t)a;
  *last = (uid_t)b;
  return true;
bad:
  log_warn("CLEANROOM_VMM_UIDS='%s' is not FIRST-LAST (1 <= FIRST <= LAST < 4294967295); "
           "using the VMM user instead", e);
  return false;
}

bool backend_vmm_uid_range(uid_t *first, uid_t *last) {
  static int done;
  static bool on;
  static uid_t f, l;
  if (!done) {
    on = parse_uid_range(&f, &l);
    done = 1;
  }
  if (on) {
    *first = f;
    *last = l;
  }
  return on;
}

/* The lowest uid of the range whose lock file this process can lock. */
static int take_uid(uid_t first, uid_t last, uid_t *ret, int *ret_fd, cr_error **err) {
  if (mkdir(BACKEND_VMM_UID_LOCKS, 0700) < 0 && errno != EEXIST)
    return cr_error_set(err, CR_E_BACKEND_UNAVAILABLE, errno, "creating %s", BACKEND_VMM_UID_LOCKS);
  struct stat st;
  if (lstat(BACKEND_VMM_UID_LOCKS, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != 0 ||
      (st.st_mode & 077))
    return cr_error_set(err, CR_E_BACKEND_UNAVAILABLE, 0,
                        "%s must be a directory owned by root, mode 0700", BACKEND_VMM_UID_LOCKS);
  for (uint64_t u = first; u <= last; u++) {
    char path[128];
    snprintf(path, sizeof(path), BACKEND_VMM_UID_LOCKS "/%llu", (unsigned long long)u);
    /* never unlinked: a lock must stay on the one inode of its path */
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return cr_error_set(err, CR_E_BACKEND_UNAVAILABLE, errno, "opening %s", path);
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
      *ret = (uid_t)u;
      *ret_fd = fd;
      return 0;
    }
    int e = errno;
    close(fd);
    if (e != EWOULDBLOCK) return cr_error_set(err, CR_E_BACKEND_UNAVAILABLE, e, "locking %s", path);
  }
  return cr_error_set(err, CR_E_RESOURCE_EXHAUSTED, 0,
                      "every VMM uid of %llu-%llu is in use (CLEANROOM_VMM_UIDS)",
                      (unsigned long long)first, (unsigned long long)last);
}

int backend_vmm_id_take(backend_vmm_id *id, cr_error **err) {
  *id = (backend_vmm_id){.lockfd = -1};
  uid_t first, last;
  if (backend_vmm_uid_range(&first, &last)) {
    if (take_uid(first, last, &id->uid, &id->lockfd, err) < 0) return -1;
    snprintf(id->runas, sizeof(id->runas), "%llu:%llu", (unsigned long long)id->uid,
             (unsigned long long)id->uid);
    return 0;
  }
  const char *u = backend_vmm_user();
  if (u) snprintf(id->runas, sizeof(id->runas), "%s", u);
  return 0;
}

void backend_vmm_id_release(backend_vmm_id *id) {
  if (id->lockfd >= 0) close(id->lockfd);
  id->lockfd = -1;
}

const char *backend_vmm_refusal(void) {
  uid_t first, last;
  if (backend_vmm_uid_range(&first, &last)) return NULL;
  if (geteuid() != 0 || backend_vmm_user()) return NULL;
  const char *e = getenv("CLEANROOM_VMM_USER");
  if (e && !*e) return NULL; /* the operator opted out: VMMs run as root */
  return "the VMM user does not exist; refusing to run QEMU as root (create the user "
         "with 'useradd --system --no-create-home --shell /usr/sbin/nologin " BACKEND_VMM_USER
         "', name another with CLEANROOM_VMM_USER, or opt out with CLEANROOM_VMM_USER=)";
}

/* ---- the VM handle */

const backend_ops *backend_vm_ops(const backend_vm *vm) { return vm->ops; }
pid_t backend_vm_pid(const backend_vm *vm) { return vm->pid; }
const char *backend_vm_id(const backend_vm *vm) { return vm->id; }
bool backend_vm_finished(const backend_vm *vm) { return vm->finished; }
bool backend_vm_alive(const backend_vm *vm) { return vm && vm->pid > 0 && !vm->gone; }

backend_vm *backend_vm_new(const backend_ops *ops, const backend_vm_impl *impl,
                           uv_loop_t *loop, const backend_vm_config *cfg,
                           const backend_events *ev, void *ud) {
  backend_vm *vm = calloc(1, sizeof(*vm));
  if (!vm) return NULL;
  vm->ops = ops;
  vm->impl = impl;
  vm->loop = loop;
  vm->ev = *ev;
  vm->ud = ud;
  vm->pidfd = -1;
  vm->vcpus = cfg->vcpus;
  vm->memory_mib = cfg->memory_mib;
  vm->id = strdup(cfg->id ? cfg->id : "");
  vm->dir = strdup(cfg->dir ? cfg->dir : "");
  if (!vm->id || !vm->dir) {
    free(vm->id);
    free(vm->dir);
    free(vm);
    return NULL;
  }
  return vm;
}

static void vm_free(backend_vm *vm) {
  if (vm->impl && vm->impl->free_priv && vm->priv) vm->impl->free_priv(vm->priv);
  if (vm->pidfd >= 0) close(vm->pidfd);
  free(vm->id);
  free(vm->dir);
  free(vm);
}

static void vm_maybe_free(backend_vm *vm) {
  if (vm->refs == 0 && vm->finished) vm_free(vm);
}

void backend_vm_ref(backend_vm *vm) { vm->refs++; }

void backend_vm_unref(backend_vm *vm) {
  vm->refs--;
  vm_maybe_free(vm);
}

static void on_handle_closed(uv_handle_t *h) { backend_vm_unref(h->data); }

static void close_exit_watch(backend_vm *vm) {
  if (vm->proc_open) {
    vm->proc_open = false;
    uv_close((uv_handle_t *)&vm->proc, on_handle_closed);
  }
  if (vm->pidfd_open) {
    vm->pidfd_open = false;
    uv_poll_stop(&vm->pidfd_poll);
    uv_close((uv_handle_t *)&vm->pidfd_poll, on_handle_closed);
  }
}

static void close_all(backend_vm *vm) {
  close_exit_watch(vm);
  if (vm->stop_timer_open) {
    vm->stop_timer_open = false;
    uv_timer_stop(&vm->stop_timer);
    uv_close((uv_handle_t *)&vm->stop_timer, on_handle_closed);
  }
}

void backend_vm_forget(backend_vm *vm) {
  if (!vm || vm->finished) return;
  vm->finished = true;
  close_all(vm);
  vm_maybe_free(vm);
}

static void finish_stop(backend_vm *vm, cr_error *err) {
  if (vm->finished) {
    cr_error_free(err);
    return;
  }
  vm->finished = true;
  close_all(vm);
  vm->refs++; /* vm stays valid through the callback */
  if (vm->stop_cb)
    vm->stop_cb(vm->stop_ud, vm, err);
  else
    cr_error_free(err);
  backend_vm_unref(vm);
}

typedef struct later {
  uv_timer_t t;
  backend_vm *vm;
  void (*fn)(backend_vm *vm, void *arg);
  void *arg;
} later;

static void later_closed(uv_handle_t *h) {
  later *l = h->data;
  backend_vm *vm = l->vm;
  free(l);
  backend_vm_unref(vm);
}

static void later_fire(uv_timer_t *t) {
  later *l = t->data;
  l->fn(l->vm, l->arg);
  uv_close((uv_handle_t *)&l->t, later_closed);
}

int backend_vm_later(backend_vm *vm, void (*fn)(backend_vm *vm, void *arg), void *arg) {
  later *l = calloc(1, sizeof(*l));
  if (!l) return -ENOMEM;
  l->vm = vm;
  l->fn = fn;
  l->arg = arg;
  l->t.data = l;
  uv_timer_init(vm->loop, &l->t);
  vm->refs++;
  uv_timer_start(&l->t, later_fire, 0, 0);
  return 0;
}

static void ready_now(backend_vm *vm, void *arg) {
  cr_error *err = arg;
  if (vm->finished || vm->stopping || vm->ready_reported) {
    cr_error_free(err);
    return;
  }
  vm->ready_reported = true;
  vm->ev.ready(vm->ud, vm, err);
}

void backend_vm_report_ready(backend_vm *vm, cr_error *err) {
  if (backend_vm_later(vm, ready_now, err) < 0) ready_now(vm, err);
}

char *backend_log_tail(const char *dir, const char *name, size_t max) {
  _cleanup_free_ char *path = name ? cr_path_join(dir, name) : NULL;
  char *r = NULL;
  if (!path || cr_read_file_tail(path, max, &r, NULL) < 0) return strdup("");
  size_t n = strlen(r);
  while (n > 0 && (r[n - 1] == '\n' || r[n - 1] == '\r')) r[--n] = '\0';
  return r;
}

/* The VMM process is gone (reaped child or readable pidfd). */
static void vm_gone(backend_vm *vm, int status, int sig) {
  if (vm->gone) return;
  vm->gone = true;
  vm->exit_status = status;
  vm->exit_signal = sig;
  close_exit_watch(vm);
  backend_cgroup_remove(vm->id);
  char how[64];
  if (sig)
    snprintf(how, sizeof(how), "was killed by signal %d", sig);
  else if (status >= 0)
    snprintf(how, sizeof(how), "exited with status %d", status);
  else
    snprintf(how, sizeof(how), "exited");
  /* every exit, also one the stop sequence did not cause (a SIGKILL from
   * elsewhere ends a VMM with an empty log: this line is the only trace) */
  if (vm->kill_sent || (vm->stopping && !sig))
    log_info("%s: the VMM (pid %d) %s (stopped by us)", vm->id, (int)vm->pid, how);
  else
    log_warn("%s: the VMM (pid %d) %s (%s)", vm->id, (int)vm->pid, how,
             vm->stopping ? "while stopping, before any SIGKILL from us" : "unexpectedly");
  if (vm->finished) return;
  if (vm->stopping) {
    finish_stop(vm, NULL);
    return;
  }
  _cleanup_free_ char *tail = backend_log_tail(vm->dir, vm->impl ? vm->impl->log_name : NULL, 1500);
  if (!vm->ready_reported) {
    vm->ready_reported = true;
    cr_error *err = NULL;
    cr_error_set(&err, CR_E_RUNTIME_LAUNCH_FAILED, 0, "%s %s while starting%s%s", vm->ops->name,
                 how, tail && *tail ? ": " : "", tail ? tail : "");
    vm->ev.ready(vm->ud, vm, err);
    return;
  }
  _cleanup_free_ char *why = NULL;
  if (asprintf(&why, "the VMM (%s, pid %d) %s%s%s", vm->ops->name, (int)vm->pid, how,
               tail && *tail ? ": " : "", tail ? tail : "") < 0)
    why = NULL;
  if (vm->ev.exited) vm->ev.exited(vm->ud, vm, status, sig, why ? why : "the VMM exited");
}

static void on_proc_exit(uv_process_t *p, int64_t status, int sig) {
  vm_gone(p->data, (int)status, sig);
}

int backend_vm_spawn(backend_vm *vm, char **argv, int logfd, const int *fds, int nfds,
                     cr_error **err) {
  uv_stdio_container_t stdio[16];
  if (nfds < 0 || nfds > 12) return cr_error_set(err, CR_E_INTERNAL, EINVAL, "too many fds");
  stdio[0] = (uv_stdio_container_t){.flags = UV_IGNORE};
  stdio[1] = (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = logfd};
  stdio[2] = (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = logfd};
  for (int i = 0; i < nfds; i++)
    stdio[3 + i] = (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = fds[i]};
  uv_process_options_t opts = {
      .file = argv[0],
      .args = argv,
      .exit_cb = on_proc_exit,
      .stdio_count = 3 + nfds,
      .stdio = stdio,
      /* setsid(): its own session, untouched by signals to the daemon's
       * process group; the daemon stays its parent and reaps it */
      .flags = UV_PROCESS_DETACHED,
  };
  vm->proc.data = vm;
  int r = uv_spawn(vm->loop, &vm->proc, &opts);
  /* the handle is initialized even when the spawn failed: it is closed */
  vm->proc_open = true;
  vm->refs++;
  if (r < 0)
    return cr_error_set(err, CR_E_BACKEND_UNAVAILABLE, -r, "cannot start %s: %s", argv[0],
                        uv_strerror(r));
  vm->pid = vm->proc.pid;
  /* A pidfd for signals: the pid alone could name another process once the
   * child is reaped (libuv reaps on the loop, before our exit callback
   * runs). Opened here, before the loop can reap it. Not polled: the exit is
   * seen through uv_process. Without pidfds (old kernels) signals go by pid. */
  vm->pidfd = (int)syscall(SYS_pidfd_open, vm->pid, 0);
  /* its cgroup (limits from the sandbox's resources) */
  if (backend_cgroup_join(vm->id, vm->pid, vm->vcpus, vm->memory_mib, err) < 0) {
    /* not confined as configured: it must not run. Just started, so it
     * ends at once; reaped here, as the caller forgets the handle. */
    backend_vm_kill_sync(vm, 2000);
    waitpid(vm->pid, NULL, WNOHANG);
    backend_cgroup_remove(vm->id);
    vm->gone = true;
    return -1;
  }
  return 0;
}

static void on_pidfd(uv_poll_t *p, int status, int events) { vm_gone(p->data, -1, 0); }

int backend_vm_watch(backend_vm *vm, pid_t pid, cr_error **err) {
  if (pid <= 0) return cr_error_set(err, CR_E_VMM_EXITED, 0, "no VMM pid recorded");
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    if (errno == ESRCH) return cr_error_set(err, CR_E_VMM_EXITED, 0, "the VMM (pid %d) is gone", (int)pid);
    return cr_error_set(err, CR_E_INTERNAL, errno, "pidfd_open(%d)", (int)pid);
  }
  vm->pidfd = fd;
  vm->pid = pid;
  int r = uv_poll_init(vm->loop, &vm->pidfd_poll, fd);
  if (r < 0) return cr_error_set(err, CR_E_INTERNAL, -r, "watching the VMM (pid %d)", (int)pid);
  vm->pidfd_poll.data = vm;
  vm->pidfd_open = true;
  vm->refs++;
  uv_poll_start(&vm->pidfd_poll, UV_READABLE, on_pidfd);
  return 0;
}

static void vm_kill(backend_vm *vm) {
  if (vm->gone) return;
  if (vm->pidfd >= 0)
    syscall(SYS_pidfd_send_signal, vm->pidfd, SIGKILL, NULL, 0);
  else if (vm->proc_open)
    uv_process_kill(&vm->proc, SIGKILL);
}

void backend_vm_kill_sync(backend_vm *vm, int timeout_ms) {
  if (!vm || vm->gone || vm->pid <= 0) return;
  vm->kill_sent = true;
  vm_kill(vm);
  if (vm->pidfd < 0) return;
  /* readable once the process has ended (reaped or not) */
  struct pollfd pf = {.fd = vm->pidfd, .events = POLLIN};
  int r;
  do r = poll(&pf, 1, timeout_ms);
  while (r < 0 && errno == EINTR);
  if (r == 0) log_warn("%s: the VMM (pid %d) does not exit after SIGKILL", vm->id, (int)vm->pid);
}

/* BACKEND_STOP_GRACE_MS, or $CLEANROOM_STOP_GRACE_MS (0-60000). */
unsigned backend_stop_grace_ms(void) {
  const char *e = getenv("CLEANROOM_STOP_GRACE_MS");
  if (!e || !*e) return BACKEND_STOP_GRACE_MS;
  char *end = NULL;
  unsigned long v = strtoul(e, &end, 10);
  return end && !*end && v <= 60000 ? (unsigned)v : BACKEND_STOP_GRACE_MS;
}

static void on_stop_timer(uv_timer_t *t) {
  backend_vm *vm = t->data;
  if (vm->gone || vm->finished) return;
  if (!vm->kill_sent) {
    log_info("%s: the VMM (pid %d) did not quit within %u ms: SIGKILL", vm->id, (int)vm->pid,
             backend_stop_grace_ms());
    vm->kill_sent = true;
    vm_kill(vm);
    uv_timer_start(&vm->stop_timer, on_stop_timer, BACKEND_KILL_WAIT_MS, 0);
    return;
  }
  cr_error *err = NULL;
  cr_error_set(&err, CR_E_INTERNAL, 0, "the VMM (pid %d) does not exit even after SIGKILL",
               (int)vm->pid);
  finish_stop(vm, err);
}

static void stop_now(backend_vm *vm, void *arg) {
  if (vm->gone || vm->pid <= 0) finish_stop(vm, NULL);
}

static void stop_seq(backend_vm *vm, backend_done_cb cb, void *ud, bool polite) {
  if (!vm || vm->finished || vm->stopping) return; /* one stop per handle */
  vm->stopping = true;
  vm->stop_cb = cb;
  vm->stop_ud = ud;
  if (vm->gone || vm->pid <= 0) {
    if (backend_vm_later(vm, stop_now, NULL) < 0) finish_stop(vm, NULL);
    return;
  }
  polite = polite && vm->impl && vm->impl->request_quit;
  if (polite) vm->impl->request_quit(vm);
  uv_timer_init(vm->loop, &vm->stop_timer);
  vm->stop_timer.data = vm;
  vm->stop_timer_open = true;
  vm->refs++;
  if (polite) {
    uv_timer_start(&vm->stop_timer, on_stop_timer, backend_stop_grace_ms(), 0);
  } else {
    vm->kill_sent = true;
    vm_kill(vm);
    uv_timer_start(&vm->stop_timer, on_stop_timer, BACKEND_KILL_WAIT_MS, 0);
  }
}

void backend_vm_stop(backend_vm *vm, backend_done_cb cb, void *ud) { stop_seq(vm, cb, ud, true); }

void backend_vm_kill(backend_vm *vm, backend_done_cb cb, void *ud) { stop_seq(vm, cb, ud, false); }

int backend_unsupported(const backend_vm *vm, const char *what, cr_error **err) {
  return cr_error_set(err, CR_E_BACKEND_UNSUPPORTED, 0, "the %s backend cannot %s yet",
                      vm ? vm->ops->name : "selected", what);
}

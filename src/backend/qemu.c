/* The QEMU backend: -M microvm, virtio-mmio devices, KVM when usable else
 * TCG with the flags measured in shared/design/guest-boot.md.
 *
 * QEMU runs with -daemonize: the process we spawn exits once QEMU has set up
 * its devices and sockets, so its exit is our "VMM is up" signal, and the
 * real VMM is reparented away from the daemon (it survives daemon restarts).
 * Its pid comes from the pidfile. */
#include "backend/backend.h"
#include "backend/qmp.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/macro.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#define KVM_CREATE_VM_IOCTL 0xAE01

static bool cpu_has_virt(void) {
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;
  if (cr_read_file("/proc/cpuinfo", 64 << 20, &buf, &len) < 0) return false;
  for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
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
    log_warn("VMM user '%s' does not exist: QEMU runs as root (create it with "
             "'useradd --system --no-create-home --shell /usr/sbin/nologin %s')",
             name, name);
    return NULL;
  }
  snprintf(user, sizeof(user), "%s", name);
  return user;
}

static const char *qemu_binary(void) {
  const char *e = getenv("CLEANROOM_QEMU");
  return e && *e ? e : "qemu-system-x86_64";
}

typedef struct launch_ctx {
  uv_process_t proc;
  backend_launch_cb cb;
  void *ud;
  char *dir;
} launch_ctx;

static void launch_closed(uv_handle_t *h) {
  launch_ctx *l = h->data;
  free(l->dir);
  free(l);
}

/* The end of a log file, for error messages. */
static char *log_tail(const char *dir, const char *name, size_t max) {
  _cleanup_free_ char *path = cr_path_join(dir, name);
  char *r = NULL;
  if (!path || cr_read_file_tail(path, max, &r, NULL) < 0) return strdup("");
  size_t n = strlen(r);
  while (n > 0 && (r[n - 1] == '\n' || r[n - 1] == '\r')) r[--n] = '\0';
  return r;
}

static void launch_exited(uv_process_t *p, int64_t status, int sig) {
  launch_ctx *l = p->data;
  cr_error *err = NULL;
  pid_t pid = -1;
  if (status != 0 || sig != 0) {
    _cleanup_free_ char *tail = log_tail(l->dir, "qemu.log", 1500);
    cr_error_set(&err, CR_E_RUNTIME_LAUNCH_FAILED, 0,
                 "qemu exited with status %d%s%s", (int)status,
                 tail && *tail ? ": " : "", tail ? tail : "");
  } else {
    _cleanup_free_ char *pf = cr_path_join(l->dir, "qemu.pid");
    _cleanup_free_ char *buf = NULL;
    if (!pf || cr_read_file(pf, 64, &buf, NULL) < 0 ||
        (pid = (pid_t)strtol(buf, NULL, 10)) <= 0) {
      pid = -1;
      cr_error_set(&err, CR_E_RUNTIME_LAUNCH_FAILED, 0,
                   "qemu started but wrote no pidfile in %s", l->dir);
    }
  }
  l->cb(l->ud, pid, err);
  uv_close((uv_handle_t *)p, launch_closed);
}

typedef struct argv_b {
  char **v;
  size_t n, cap;
} argv_b;

static void add(argv_b *a, const char *fmt, ...) _printf_(2, 3);
static void add(argv_b *a, const char *fmt, ...) {
  if (a->n + 2 > a->cap) {
    a->cap = a->cap ? a->cap * 2 : 64;
    a->v = realloc(a->v, a->cap * sizeof(char *));
  }
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  a->v[a->n++] = s;
  a->v[a->n] = NULL;
}

static void argv_free(argv_b *a) {
  for (size_t i = 0; i < a->n; i++) free(a->v[i]);
  free(a->v);
}

static int qemu_launch(uv_loop_t *loop, const backend_vm_config *c,
                       backend_launch_cb cb, void *ud, cr_error **err) {
  bool kvm = !strcmp(backend_accel(), "kvm");
  argv_b a = {0};
  add(&a, "%s", qemu_binary());
  add(&a, "-name");
  add(&a, "cleanroom-%s", c->id);
  add(&a, "-M");
  add(&a, "microvm,x-option-roms=off,isa-serial=on,rtc=%s%s%s", kvm ? "off" : "on",
      kvm ? ",pit=off,pic=off" : "", c->ram_path ? ",memory-backend=mem" : "");
  add(&a, "-accel");
  add(&a, "%s", kvm ? "kvm" : "tcg");
  add(&a, "-cpu");
  add(&a, "%s", kvm ? "host" : "max");
  add(&a, "-smp");
  add(&a, "%u", c->vcpus);
  add(&a, "-m");
  add(&a, "%uM", c->memory_mib);
  if (c->ram_path) {
    add(&a, "-object");
    add(&a, "memory-backend-file,id=mem,size=%uM,mem-path=%s,share=on", c->memory_mib,
        c->ram_path);
  }
  add(&a, "-nodefaults");
  add(&a, "-no-user-config");
  add(&a, "-display");
  add(&a, "none");
  add(&a, "-no-reboot");
  add(&a, "-serial");
  add(&a, "file:%s/console.log", c->dir);
  add(&a, "-kernel");
  add(&a, "%s", c->kernel);
  add(&a, "-initrd");
  add(&a, "%s", c->initrd);
  add(&a, "-append");
  /* tsc_early_khz: without it ~1 boot in 3 hangs under TCG (guest-boot.md) */
  add(&a, "console=ttyS0 quiet panic=-1 reboot=t%s",
      kvm ? "" : " tsc_early_khz=2000000 tsc=reliable");
  add(&a, "-drive");
  add(&a, "id=img,file=%s,format=raw,if=none,readonly=on", c->image);
  add(&a, "-device");
  add(&a, "virtio-blk-device,drive=img,serial=cr-image");
  add(&a, "-drive");
  add(&a, "id=scr,file=%s,format=raw,if=none,discard=unmap", c->scratch);
  add(&a, "-device");
  add(&a, "virtio-blk-device,drive=scr,serial=cr-scratch");
  add(&a, "-device");
  add(&a, "virtio-rng-device");
  add(&a, "-device");
  add(&a, "virtio-serial-device");
  add(&a, "-chardev");
  add(&a, "socket,id=ag,path=%s/agent.sock,server=on,wait=off", c->dir);
  add(&a, "-device");
  add(&a, "virtserialport,chardev=ag,name=cleanroom.agent");
  add(&a, "-qmp");
  add(&a, "unix:%s/qmp.sock,server=on,wait=off", c->dir);
  /* QEMU's seccomp filter. elevateprivileges=deny and spawn=deny would also
   * block the setsid()/fork() of -daemonize; they need a launch without
   * -daemonize (later, with the unprivileged VMM user). */
  add(&a, "-sandbox");
  add(&a, "on,obsolete=deny,resourcecontrol=deny");
  /* drop root once QEMU has opened its files and sockets */
  if (backend_vmm_user()) {
    add(&a, "-runas");
    add(&a, "%s", backend_vmm_user());
  }
  add(&a, "-pidfile");
  add(&a, "%s/qemu.pid", c->dir);
  add(&a, "-daemonize");
  for (size_t i = 0; i < a.n; i++)
    if (!a.v[i]) {
      argv_free(&a);
      return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "building the qemu command line");
    }
  if (cr_log_level >= CR_LOG_DEBUG) {
    for (size_t i = 0; i < a.n; i++) fprintf(stderr, "%s ", a.v[i]);
    fputc('\n', stderr);
  }

  _cleanup_free_ char *logpath = cr_path_join(c->dir, "qemu.log");
  _cleanup_close_ int logfd = logpath ? open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
  if (logfd < 0) {
    argv_free(&a);
    return cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, errno, "opening %s", logpath);
  }
  launch_ctx *l = calloc(1, sizeof(*l));
  if (!l || !(l->dir = strdup(c->dir))) {
    free(l);
    argv_free(&a);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "launch");
  }
  l->cb = cb;
  l->ud = ud;
  l->proc.data = l;
  uv_stdio_container_t stdio[3] = {
      {.flags = UV_IGNORE},
      {.flags = UV_INHERIT_FD, .data.fd = logfd},
      {.flags = UV_INHERIT_FD, .data.fd = logfd},
  };
  uv_process_options_t opts = {
      .file = a.v[0],
      .args = a.v,
      .exit_cb = launch_exited,
      .stdio_count = 3,
      .stdio = stdio,
      .flags = UV_PROCESS_DETACHED,
  };
  int r = uv_spawn(loop, &l->proc, &opts);
  argv_free(&a);
  if (r < 0) {
    free(l->dir);
    free(l);
    return cr_error_set(err, CR_E_BACKEND_UNAVAILABLE, -r,
                        "cannot start %s (install qemu-system-x86)", qemu_binary());
  }
  return 0;
}

static int qemu_alive(const char *id, pid_t pid) {
  if (pid <= 0 || kill(pid, 0) < 0) return 0;
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;
  if (cr_read_file(path, 1 << 20, &buf, &len) < 0) return 0;
  char want[128];
  snprintf(want, sizeof(want), "cleanroom-%s", id);
  for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
    if (!strcmp(buf + i, want)) return 1;
  return 0;
}

static bool wait_gone(pid_t pid, int timeout_ms) {
  struct timespec ts = {0, 10 * 1000 * 1000};
  for (int waited = 0; waited < timeout_ms; waited += 10) {
    if (kill(pid, 0) < 0 && errno == ESRCH) return true;
    nanosleep(&ts, NULL);
  }
  return kill(pid, 0) < 0 && errno == ESRCH;
}

static int qemu_stop(const char *dir, pid_t pid, cr_error **err) {
  _cleanup_free_ char *sock = cr_path_join(dir, "qmp.sock");
  qmp *q = NULL;
  cr_error *qerr = NULL;
  if (sock && qmp_connect(sock, 1000, &q, &qerr) == 0) {
    qmp_execute(q, "quit", NULL, 1000, NULL, &qerr);
    qmp_free(q);
  }
  cr_error_free(qerr);
  if (pid > 0 && !wait_gone(pid, 2000)) {
    kill(pid, SIGKILL);
    if (!wait_gone(pid, 2000))
      return cr_error_set(err, CR_E_INTERNAL, 0, "VMM pid %d does not exit", (int)pid);
  }
  return 0;
}

static json_t *qemu_capabilities(void) {
  bool kvm = !strcmp(backend_accel(), "kvm");
  return json_pack("{s:s, s:s, s:b, s:b, s:s, s:b, s:b, s:s?, s:s}", "backend", "qemu", "accel",
                   backend_accel(), "kvm", kvm, "snapshots", 0, "network", "none", "egress", 0,
                   "docker", 0, "vmm_user", backend_vmm_user(),
                   "notes",
                   kvm ? "hardware virtualization (KVM)"
                       : "software emulation (TCG): still a separate VM with its own kernel, "
                         "but slower; no /dev/kvm usable on this host");
}

const backend_ops backend_qemu = {
    .name = "qemu",
    .capabilities = qemu_capabilities,
    .launch = qemu_launch,
    .stop = qemu_stop,
    .alive = qemu_alive,
};

const backend_ops *backend_default(void) { return &backend_qemu; }

/* The QEMU backend: -M microvm, virtio-mmio devices, KVM when usable else
 * TCG with the flags measured in shared/design/guest-boot.md.
 *
 * No -daemonize: the daemon binds the agent and QMP sockets itself and hands
 * the listening fds to QEMU (chardev fd=3/4), so they accept connections
 * before QEMU runs and "spawned" already means "reachable"; QEMU is the
 * daemon's child in its own session (setsid), reaped by the daemon, and
 * keeps running when the daemon exits (a restarted daemon attaches to it by
 * pid). Not forking lets QEMU's seccomp deny spawn (and elevateprivileges
 * when it does not have to drop root itself with -runas).
 *
 * QMP calls (quit, stop, cont; migrate for snapshots) run on libuv's thread
 * pool with deadlines (qmp_async below): the loop never waits for QEMU. */
#include "backend/backend-vm.h"
#include "backend/cgroup.h"
#include "backend/qmp.h"
#include "backend/qemu-snapshot.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/macro.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

/* TCG translation cache size (MiB): QEMU 7.2's default is 1 GiB, most of
 * an idle VMM's anonymous memory after a workload; bench/vmm-memory.py. */
#define QEMU_TCG_TB_MIB 32

/* The host's TSC rate in kHz, measured once against CLOCK_MONOTONIC_RAW over
 * 50 ms. Under TCG the guest's rdtsc reads the host's TSC, so the guest
 * kernel must be told this rate (a fixed guess makes its clock run fast or
 * slow by the ratio). 2000000 where there is no x86 TSC to read. */
static unsigned long host_tsc_khz(void) {
  static unsigned long khz;
#if defined(__x86_64__)
  for (int tries = 0; !khz && tries < 5; tries++) {
    struct timespec t0, t1, d = {0, 50 * 1000 * 1000};
    uint64_t a0 = __builtin_ia32_rdtsc();
    clock_gettime(CLOCK_MONOTONIC_RAW, &t0);
    uint64_t b0 = __builtin_ia32_rdtsc();
    nanosleep(&d, NULL);
    uint64_t a1 = __builtin_ia32_rdtsc();
    clock_gettime(CLOCK_MONOTONIC_RAW, &t1);
    uint64_t b1 = __builtin_ia32_rdtsc();
    int64_t ns = (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec);
    /* preempted between a TSC read and the clock read: measure again */
    if (ns <= 0 || b0 - a0 > 100000 || b1 - a1 > 100000) continue;
    uint64_t ticks = (a1 + b1) / 2 - (a0 + b0) / 2;
    unsigned long k = (unsigned long)(ticks * 1000000 / (uint64_t)ns);
    if (k >= 100000 && k <= 10000000) khz = k;
  }
#endif
  if (!khz) khz = 2000000;
  return khz;
}

static const char *qemu_binary(void) {
  const char *e = getenv("CLEANROOM_QEMU");
  return e && *e ? e : "qemu-system-x86_64";
}

static const char *qemu_cpu_model(bool kvm) { return kvm ? "host" : "max"; }

/* The guest kernel's command line without its per-host part (the TSC rate).
 * Under TCG, mitigations=off: the guest's Spectre-class mitigations defend
 * against the speculation of the CPU the guest runs on, and the emulated CPU
 * does not speculate; nor do they reach the host CPU as such (TCG emits no
 * host fence for the guest's lfence and turns a retpoline's ret into an
 * ordinary indirect jump of its own). They only cost time: every indirect
 * branch in the guest kernel becomes three translation-block exits; a
 * fresh clone's first exec is 10-15 % faster without them (bench/snapshots.py).
 * Under KVM the guest runs on the real CPU: the kernel's defaults stay. */
static const char *qemu_guest_cmdline(bool kvm) {
  return kvm ? "console=ttyS0 quiet panic=-1 reboot=t"
             : "console=ttyS0 quiet panic=-1 reboot=t mitigations=off";
}

static char *qemu_state_identity(void) {
  bool kvm = !strcmp(backend_accel(), "kvm");
  _cleanup_free_ char *bin = cr_find_in_path(qemu_binary());
  _cleanup_free_ char *id = bin ? cr_file_identity(bin) : NULL;
  if (!id) return NULL;
  char *s = NULL;
  if (asprintf(&s, "qemu=%s\naccel=%s\ncpu=%s\ncmdline=%s\n", id, backend_accel(),
               qemu_cpu_model(kvm), qemu_guest_cmdline(kvm)) < 0)
    return NULL;
  return s;
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


/* A listening unix socket at dir/name (stale socket replaced). */
static int listen_unix(const char *dir, const char *name, cr_error **err) {
  _cleanup_free_ char *path = cr_path_join(dir, name);
  if (!path) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "socket path");
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sa.sun_path))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "socket path too long: %s", path);
  strcpy(sa.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return cr_error_set(err, CR_E_INTERNAL, errno, "socket");
  unlink(path);
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
    int e = errno;
    close(fd);
    return cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, e, "listening on %s", path);
  }
  return fd;
}

static char *qemu_tb_size(void) {
  const char *e = getenv("CLEANROOM_TCG_TB_MIB");
  unsigned long v = e && *e ? strtoul(e, NULL, 10) : QEMU_TCG_TB_MIB;
  if (v == 0 || v > 4096) v = QEMU_TCG_TB_MIB;
  char *s = NULL;
  if (asprintf(&s, "%lu", v) < 0) return NULL;
  return s;
}

/* A value inside a QEMU option string: "," separates options there, ",,"
 * is a literal comma (a data dir named "a,b" must not add options). */
static char *qv(const char *s) { return cr_escape_commas(s ? s : ""); }

/* How a VMM starts: booting, or waiting for a migration stream (-incoming
 * defer), or for one without a configuration section: a device state
 * (xen-save-devices-state: a snapshot whose RAM is a flat file) or any
 * stream such a VMM saved (send-configuration=off holds for its saves
 * too; backend.json records it). */
enum { START_BOOT, START_INCOMING, START_INCOMING_NOCONFIG };

static int build_argv(const backend_vm_config *c, int start, const char *runas, argv_b *a) {
  bool kvm = !strcmp(backend_accel(), "kvm");
  if (runas && !*runas) runas = NULL;
  add(a, "%s", qemu_binary());
  add(a, "-name");
  add(a, "cleanroom-%s", c->id);
  add(a, "-M");
  add(a, "microvm,x-option-roms=off,isa-serial=on,rtc=%s%s%s", kvm ? "off" : "on",
      kvm ? ",pit=off,pic=off" : "", ",memory-backend=mem");
  add(a, "-accel");
  if (kvm) {
    add(a, "kvm");
  } else {
    _cleanup_free_ char *tb = qemu_tb_size();
    add(a, "tcg,tb-size=%s", tb ? tb : "32");
  }
  add(a, "-cpu");
  add(a, "%s", qemu_cpu_model(kvm));
  add(a, "-smp");
  add(a, "%u", c->vcpus);
  add(a, "-m");
  add(a, "%uM", c->memory_mib);
  /* always a memory backend named "mem": migration matches RAM blocks by
   * name, so cold boots, templates, clones and restores stay compatible */
  add(a, "-object");
  if (c->ram_path) {
    _cleanup_free_ char *ram = qv(c->ram_path);
    add(a, "memory-backend-file,id=mem,size=%uM,mem-path=%s,share=%s", c->memory_mib, ram,
        c->ram_private ? "off" : "on");
  } else {
    add(a, "memory-backend-ram,id=mem,size=%uM", c->memory_mib);
  }
  add(a, "-nodefaults");
  add(a, "-no-user-config");
  add(a, "-display");
  add(a, "none");
  add(a, "-no-reboot");
  /* append=on (O_APPEND): the daemon caps the log by truncating it
   * (sandbox/console.c); QEMU's next write then lands at the new end. */
  add(a, "-chardev");
  _cleanup_free_ char *dir = qv(c->dir), *image = qv(c->image);
  add(a, "file,id=con,path=%s/console.log,append=on", dir);
  add(a, "-serial");
  add(a, "chardev:con");
  add(a, "-kernel");
  add(a, "%s", c->kernel);
  add(a, "-initrd");
  add(a, "%s", c->initrd);
  add(a, "-append");
  /* tsc_early_khz: without it ~1 boot in 3 hangs under TCG (guest-boot.md);
   * it must be the host's rate, which the guest's TSC runs at under TCG */
  char tsc[64] = "";
  if (!kvm) snprintf(tsc, sizeof(tsc), " tsc_early_khz=%lu tsc=reliable", host_tsc_khz());
  add(a, "%s%s", qemu_guest_cmdline(kvm), tsc);
  add(a, "-drive");
  add(a, "id=img,file=%s,format=raw,if=none,readonly=on", image);
  add(a, "-device");
  add(a, "virtio-blk-device,drive=img,serial=cr-image");
  /* The scratch disk as an fd set (fd 5 read-write, fd 6 read-only): a
   * migration inactivates and reactivates the disk, and QEMU reopens it
   * then, after dropping root, when it cannot open the path. Locking off:
   * two descriptions of one file would conflict, and a scratch disk is
   * never shared between VMMs. */
  add(a, "-add-fd");
  add(a, "fd=5,set=1,opaque=scratch-rw");
  add(a, "-add-fd");
  add(a, "fd=6,set=1,opaque=scratch-ro");
  add(a, "-drive");
  add(a, "id=scr,file.driver=file,file.filename=/dev/fdset/1,file.locking=off,format=raw,"
         "if=none,discard=unmap");
  add(a, "-device");
  add(a, "virtio-blk-device,drive=scr,serial=cr-scratch");
  if (c->workspace) { /* the same as the scratch disk: fd set 2, fds 7 and 8 */
    add(a, "-add-fd");
    add(a, "fd=7,set=2,opaque=workspace-rw");
    add(a, "-add-fd");
    add(a, "fd=8,set=2,opaque=workspace-ro");
    add(a, "-drive");
    add(a, "id=ws,file.driver=file,file.filename=/dev/fdset/2,file.locking=off,format=raw,"
           "if=none,discard=unmap");
    add(a, "-device");
    add(a, "virtio-blk-device,drive=ws,serial=cr-workspace");
  }
  add(a, "-device");
  add(a, "virtio-rng-device");
  if (c->net.tap && *c->net.tap) {
    /* the TAP exists already (egress); QEMU opens it before dropping root */
    add(a, "-netdev");
    add(a, "tap,id=net0,ifname=%s,script=no,downscript=no", c->net.tap);
    add(a, "-device");
    add(a, "virtio-net-device,netdev=net0%s%s", c->net.mac ? ",mac=" : "",
        c->net.mac ? c->net.mac : "");
    /* no self-announce after a restore: the TAP is new, nothing upstream
     * learnt the MAC, and virtio-net's announce makes the guest handle a
     * config interrupt (rtnl, the control queue) in its first 0.5 s */
    if (start != START_BOOT) {
      add(a, "-global");
      add(a, "migration.announce-rounds=0");
    }
  } else if (c->net.placeholder) {
    /* a template's NIC: a hub port with no other port (frames go nowhere).
     * Its vmstate says no vnet header, which a clone's TAP accepts. */
    add(a, "-netdev");
    add(a, "hubport,id=net0,hubid=0");
    add(a, "-device");
    add(a, "virtio-net-device,netdev=net0,mac=52:54:00:00:00:01");
  }
  add(a, "-device");
  add(a, "virtio-serial-device");
  /* fd 3: the agent socket, fd 4: QMP (listening; bound by the daemon) */
  add(a, "-chardev");
  add(a, "socket,id=ag,fd=3,server=on,wait=off");
  add(a, "-device");
  add(a, "virtserialport,chardev=ag,name=cleanroom.agent");
  add(a, "-chardev");
  add(a, "socket,id=qmp,fd=4,server=on,wait=off");
  add(a, "-mon");
  add(a, "chardev=qmp,mode=control");
  /* QEMU's seccomp filter. spawn=deny: no fork/exec (there is no
   * -daemonize). elevateprivileges=deny kills QEMU at its own -runas
   * setuid (the filter is installed first), so it is only added when QEMU
   * does not drop root itself; with -runas QEMU runs as the VMM user and
   * cannot regain root anyway. */
  add(a, "-sandbox");
  add(a, "on,obsolete=deny,resourcecontrol=deny,spawn=deny%s",
      runas ? "" : ",elevateprivileges=deny");
  /* drop root once QEMU has opened its files and sockets */
  if (runas) {
    add(a, "-runas");
    add(a, "%s", runas);
  }
  if (start != START_BOOT) {
    add(a, "-incoming");
    add(a, "defer");
  }
  if (start == START_INCOMING_NOCONFIG) {
    add(a, "-global");
    add(a, "migration.send-configuration=off");
  }
  for (size_t i = 0; i < a->n; i++)
    if (!a->v[i]) return -ENOMEM;
  return 0;
}

/* ---- QMP on the thread pool */

typedef void (*qmp_done_cb)(backend_vm *vm, void *ud, json_t *ret, cr_error *err);

typedef struct qmp_work {
  uv_work_t w;
  backend_vm *vm;
  char *sock, *cmd;
  json_t *args, *ret;
  int timeout_ms;
  cr_error *err;
  qmp_done_cb done;
  void *ud;
} qmp_work;

static void qmp_work_run(uv_work_t *w) {
  qmp_work *q = w->data;
  qmp *c = NULL;
  if (qmp_connect(q->sock, q->timeout_ms, &c, &q->err) < 0) return;
  json_t *args = TAKE_PTR(q->args);
  qmp_execute(c, q->cmd, args, q->timeout_ms, &q->ret, &q->err);
  qmp_free(c);
}

static void qmp_work_after(uv_work_t *w, int status) {
  qmp_work *q = w->data;
  backend_vm *vm = q->vm;
  if (status < 0 && !q->err) cr_error_set(&q->err, CR_E_INTERNAL, -status, "qmp %s", q->cmd);
  if (q->done) q->done(vm, q->ud, q->ret, TAKE_PTR(q->err));
  cr_error_free(q->err);
  json_decref(q->ret);
  json_decref(q->args);
  free(q->sock);
  free(q->cmd);
  free(q);
  backend_vm_unref(vm);
}

/* Runs one QMP command off the loop; done (may be NULL) runs on the loop
 * with the "return" value (borrowed) or the error (done owns it), also
 * after stop() finished the handle (check backend_vm_finished()). */
static int qmp_async(backend_vm *vm, const char *cmd, json_t *args /* stolen */,
                     int timeout_ms, qmp_done_cb done, void *ud, cr_error **err) {
  qmp_work *q = calloc(1, sizeof(*q));
  if (q) {
    q->sock = cr_path_join(vm->dir, "qmp.sock");
    q->cmd = strdup(cmd);
  }
  if (!q || !q->sock || !q->cmd) {
    if (q) free(q->sock), free(q->cmd);
    free(q);
    json_decref(args);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "qmp");
  }
  q->vm = vm;
  q->args = args;
  q->timeout_ms = timeout_ms;
  q->done = done;
  q->ud = ud;
  q->w.data = q;
  backend_vm_ref(vm);
  int r = uv_queue_work(vm->loop, &q->w, qmp_work_run, qmp_work_after);
  if (r < 0) {
    backend_vm_unref(vm);
    json_decref(q->args);
    free(q->sock);
    free(q->cmd);
    free(q);
    return cr_error_set(err, CR_E_INTERNAL, -r, "qmp %s", cmd);
  }
  return 0;
}

static void qemu_request_quit(backend_vm *vm) {
  /* its answer does not matter: the stop sequence watches the process */
  if (qmp_async(vm, "quit", NULL, (int)backend_stop_grace_ms(), NULL, NULL, NULL) < 0)
    log_warn("%s: cannot send QMP quit; the VMM is killed after the grace", vm->id);
}

/* What a save needs to know of the VM's RAM. */
typedef struct qemu_priv {
  char *ram_path;     /* the guest RAM's file (shared or private), or NULL */
  uint64_t ram_bytes;
  bool no_config;     /* started with migration.send-configuration=off */
} qemu_priv;

static void qemu_free_priv(void *p) {
  qemu_priv *q = p;
  if (q) free(q->ram_path);
  free(q);
}

static const backend_vm_impl qemu_impl = {
    .request_quit = qemu_request_quit,
    .free_priv = qemu_free_priv,
    .log_name = "qemu.log",
};

static void set_priv(backend_vm *vm, const backend_vm_config *c, bool no_config) {
  qemu_priv *q = calloc(1, sizeof(*q));
  if (!q) return; /* a save then makes a full migration */
  q->ram_path = c->ram_path ? strdup(c->ram_path) : NULL;
  q->ram_bytes = (uint64_t)c->memory_mib << 20;
  q->no_config = no_config;
  vm->priv = q;
}

/* ---- operations */

/* Spawns QEMU for c (waiting for its state when incoming); *ret = handle. */
static int qemu_spawn(uv_loop_t *loop, const backend_vm_config *c, int start,
                      const backend_events *ev, void *ud, backend_vm **ret, cr_error **err) {
  const char *refused = backend_vmm_refusal();
  if (refused) return cr_error_set(err, CR_E_BACKEND_UNAVAILABLE, 0, "%s", refused);
  /* the uid this VMM runs as: its lock goes to QEMU as the last fd */
  _cleanup_(backend_vmm_id_release) backend_vmm_id id = {.lockfd = -1};
  if (backend_vmm_id_take(&id, err) < 0) return -1;
  argv_b a = {0};
  if (build_argv(c, start, id.runas, &a) < 0) {
    argv_free(&a);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "building the qemu command line");
  }
  if (cr_log_level >= CR_LOG_DEBUG) {
    for (size_t i = 0; i < a.n; i++) fprintf(stderr, "%s ", a.v[i]);
    fputc('\n', stderr);
  }
  _cleanup_free_ char *logpath = cr_path_join(c->dir, "qemu.log");
  _cleanup_close_ int logfd =
      logpath ? open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
  if (logfd < 0) {
    argv_free(&a);
    return cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, errno, "opening %s", logpath);
  }
  /* fds 3, 4: agent and QMP sockets; 5, 6: the scratch disk rw and ro;
   * 7, 8: the workspace disk rw and ro; then the VMM uid's lock (QEMU never
   * uses it: holding it is the point) */
  int fds[6] = {-1, -1, -1, -1, -1, -1};
  int nfds = c->workspace ? 6 : 4;
  fds[0] = listen_unix(c->dir, "agent.sock", err);
  if (fds[0] >= 0) fds[1] = listen_unix(c->dir, "qmp.sock", err);
  if (fds[1] >= 0) {
    fds[2] = open(c->scratch, O_RDWR | O_CLOEXEC);
    fds[3] = open(c->scratch, O_RDONLY | O_CLOEXEC);
    if (fds[2] < 0 || fds[3] < 0)
      cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, errno, "opening %s", c->scratch);
  }
  if (fds[3] >= 0 && c->workspace) {
    fds[4] = open(c->workspace, O_RDWR | O_CLOEXEC);
    fds[5] = open(c->workspace, O_RDONLY | O_CLOEXEC);
    if (fds[4] < 0 || fds[5] < 0)
      cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, errno, "opening %s", c->workspace);
  }
  if (fds[nfds - 1] < 0) {
    for (int i = 0; i < 6; i++)
      if (fds[i] >= 0) close(fds[i]);
    argv_free(&a);
    return -1;
  }
  backend_vm *vm = backend_vm_new(&backend_qemu, &qemu_impl, loop, c, ev, ud);
  if (vm) set_priv(vm, c, start == START_INCOMING_NOCONFIG);
  int sfds[7];
  memcpy(sfds, fds, sizeof(fds));
  sfds[nfds] = id.lockfd;
  int r = vm ? backend_vm_spawn(vm, a.v, logfd, sfds, nfds + (id.lockfd >= 0), err)
             : cr_error_set(err, CR_E_INTERNAL, ENOMEM, "launch");
  for (int i = 0; i < 6; i++)
    if (fds[i] >= 0) close(fds[i]);
  argv_free(&a);
  if (r < 0) {
    if (vm) backend_vm_forget(vm);
    return cr_error_wrap(err, "install qemu-system-x86 or set CLEANROOM_QEMU");
  }
  *ret = vm;
  return 0;
}

static int qemu_launch(uv_loop_t *loop, const backend_vm_config *c, const backend_events *ev,
                       void *ud, backend_vm **ret, cr_error **err) {
  if (qemu_spawn(loop, c, START_BOOT, ev, ud, ret, err) < 0) return -1;
  backend_vm_report_ready(*ret, NULL);
  return 0;
}

/* pid's command line has the argument want. */
static bool cmdline_has(pid_t pid, const char *want) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;
  if (cr_read_file(path, 1 << 20, &buf, &len) < 0) return false;
  for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
    if (!strcmp(buf + i, want)) return true;
  return false;
}

static bool cmdline_names(pid_t pid, const char *id) {
  char want[128];
  snprintf(want, sizeof(want), "cleanroom-%s", id);
  return cmdline_has(pid, want);
}

static int qemu_attach(uv_loop_t *loop, const backend_vm_config *c, pid_t pid,
                       const backend_events *ev, void *ud, backend_vm **ret, cr_error **err) {
  backend_vm *vm = backend_vm_new(&backend_qemu, &qemu_impl, loop, c, ev, ud);
  if (!vm) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "attach");
  /* pidfd first, then the command line: the pid cannot be reused between */
  if (backend_vm_watch(vm, pid, err) < 0 || !cmdline_names(pid, c->id)) {
    backend_vm_forget(vm);
    backend_cgroup_remove(c->id); /* it died while no daemon watched */
    return cr_error_set(err, CR_E_VMM_EXITED, 0, "the VMM (pid %d) of %s is gone", (int)pid,
                        c->id);
  }
  set_priv(vm, c, cmdline_has(pid, "migration.send-configuration=off"));
  *ret = vm;
  backend_vm_report_ready(vm, NULL);
  return 0;
}

typedef struct agent_connect {
  uv_pipe_t pipe;
  uv_connect_t req;
  backend_vm *vm;
  backend_agent_cb cb;
  void *ud;
  int fd;
  cr_error *err;
} agent_connect;

static void agent_connect_closed(uv_handle_t *h) {
  agent_connect *k = h->data;
  backend_vm *vm = k->vm;
  if (!backend_vm_finished(vm))
    k->cb(k->ud, vm, k->fd, TAKE_PTR(k->err));
  else if (k->fd >= 0)
    close(k->fd);
  cr_error_free(k->err);
  free(k);
  backend_vm_unref(vm);
}

static void on_agent_connected(uv_connect_t *req, int status) {
  agent_connect *k = req->data;
  if (status < 0) {
    cr_error_set(&k->err, CR_E_AGENT_UNAVAILABLE, -status, "cannot connect to the agent socket");
  } else {
    uv_os_fd_t fd = -1;
    if (uv_fileno((uv_handle_t *)&k->pipe, &fd) == 0) k->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (k->fd < 0) cr_error_set(&k->err, CR_E_INTERNAL, errno, "agent socket");
  }
  uv_close((uv_handle_t *)&k->pipe, agent_connect_closed);
}

static int qemu_connect_agent(backend_vm *vm, backend_agent_cb cb, void *ud, cr_error **err) {
  _cleanup_free_ char *path = cr_path_join(vm->dir, "agent.sock");
  agent_connect *k = calloc(1, sizeof(*k));
  if (!k || !path) {
    free(k);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "agent connect");
  }
  k->vm = vm;
  k->cb = cb;
  k->ud = ud;
  k->fd = -1;
  int r = uv_pipe_init(vm->loop, &k->pipe, 0);
  if (r < 0) {
    free(k);
    return cr_error_set(err, CR_E_INTERNAL, -r, "agent connect");
  }
  k->pipe.data = k;
  k->req.data = k;
  backend_vm_ref(vm);
  uv_pipe_connect(&k->req, &k->pipe, path, on_agent_connected);
  return 0;
}

typedef struct op_ctx {
  backend_done_cb cb;
  void *ud;
} op_ctx;

static void op_done(backend_vm *vm, void *ud, json_t *ret, cr_error *err) {
  op_ctx *o = ud;
  if (!backend_vm_finished(vm))
    o->cb(o->ud, vm, err);
  else
    cr_error_free(err);
  free(o);
}

static int qmp_op(backend_vm *vm, const char *cmd, backend_done_cb cb, void *ud, cr_error **err) {
  if (!backend_vm_alive(vm)) return cr_error_set(err, CR_E_VMM_EXITED, 0, "the VMM is gone");
  op_ctx *o = calloc(1, sizeof(*o));
  if (!o) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "qmp");
  o->cb = cb;
  o->ud = ud;
  if (qmp_async(vm, cmd, NULL, 5000, op_done, o, err) < 0) {
    free(o);
    return -1;
  }
  return 0;
}

static int qemu_pause(backend_vm *vm, backend_done_cb cb, void *ud, cr_error **err) {
  return qmp_op(vm, "stop", cb, ud, err);
}

static int qemu_resume(backend_vm *vm, backend_done_cb cb, void *ud, cr_error **err) {
  return qmp_op(vm, "cont", cb, ud, err);
}

/* ---- save / restore (qemu-snapshot.c does the QMP; here on the thread
 * pool). A state dir holds "vmstate" (the migration stream) and
 * "backend.json" ({"backend": "qemu", "ram_in_file": bool}). */

typedef struct snap_work {
  uv_work_t w;
  backend_vm *vm;
  char *dir, *state_dir, *ram_path;
  uint64_t ram_bytes;
  pid_t pid;
  bool no_config;
  unsigned flags;
  bool save;
  cr_error *err;
  backend_done_cb cb;
  void *ud;
} snap_work;

static int write_backend_meta(const char *state_dir, bool ram_in_file, bool flat,
                              bool no_config) {
  _cleanup_free_ char *p = cr_path_join(state_dir, "backend.json");
  char buf[160];
  int n = snprintf(buf, sizeof(buf), "{\"backend\": \"qemu\", \"ram_in_file\": %s%s%s}\n",
                   ram_in_file ? "true" : "false", flat ? ", \"ram_file\": \"ram\"" : "",
                   flat || no_config ? ", \"configuration_section\": false" : "");
  return p ? cr_write_file_atomic(p, buf, (size_t)n, 0600) : -ENOMEM;
}

static void snap_work_run(uv_work_t *w) {
  snap_work *k = w->data;
  _cleanup_free_ char *vmstate = cr_path_join(k->state_dir, "vmstate");
  if (!vmstate) {
    cr_error_set(&k->err, CR_E_INTERNAL, ENOMEM, "paths");
    return;
  }
  if (k->save) {
    /* a RAM file: the RAM goes flat beside the device state (a restore maps
     * it), unless it cannot be read; then, and for anonymous RAM, a full
     * migration stream */
    bool flat = false;
    _cleanup_free_ char *ram_out = cr_path_join(k->state_dir, "ram");
    if (!(k->flags & QEMU_SNAP_IGNORE_SHARED) && k->ram_path && k->pid > 0 && ram_out) {
      cr_error *e = NULL;
      if (qemu_vm_save_flat(k->dir, k->pid, k->ram_path, k->ram_bytes, ram_out, vmstate,
                            k->flags, &e) == 0) {
        flat = true;
      } else if (strcmp(e->reason, CR_E_BACKEND_UNSUPPORTED)) {
        k->err = e;
        return;
      } else {
        log_warn("%s; saving a full migration stream instead", e->message);
        cr_error_free(e);
      }
    }
    if (!flat && qemu_vm_save(k->dir, vmstate, k->flags, &k->err) < 0) return;
    int r = write_backend_meta(k->state_dir, k->flags & QEMU_SNAP_IGNORE_SHARED, flat,
                               k->no_config);
    if (r < 0) cr_error_set(&k->err, CR_E_IO, -r, "writing %s/backend.json", k->state_dir);
  } else if (qemu_vm_restore(k->dir, vmstate, k->flags, &k->err) < 0) {
    cr_error_wrap(&k->err, "loading %s", vmstate);
  }
}

static void snap_work_after(uv_work_t *w, int status) {
  snap_work *k = w->data;
  backend_vm *vm = k->vm;
  if (status < 0 && !k->err) cr_error_set(&k->err, CR_E_INTERNAL, -status, "snapshot work");
  if (k->save) {
    /* unlike other late results, a save always reports (the caller holds
     * files and a request open for it): an error when the VM was stopped */
    if (backend_vm_finished(vm) && !k->err)
      cr_error_set(&k->err, CR_E_VMM_EXITED, 0, "the VM was stopped during the save");
    k->cb(k->ud, vm, TAKE_PTR(k->err));
  } else {
    backend_vm_report_ready(vm, TAKE_PTR(k->err));
  }
  cr_error_free(k->err);
  free(k->dir);
  free(k->state_dir);
  free(k->ram_path);
  free(k);
  backend_vm_unref(vm);
}

static int snap_queue(backend_vm *vm, const char *state_dir, unsigned flags, bool save,
                      backend_done_cb cb, void *ud, cr_error **err) {
  snap_work *k = calloc(1, sizeof(*k));
  if (!k || !(k->dir = strdup(vm->dir)) || !(k->state_dir = strdup(state_dir))) {
    if (k) free(k->dir);
    free(k);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "snapshot");
  }
  k->vm = vm;
  k->pid = vm->pid;
  qemu_priv *qp = vm->priv;
  if (qp && qp->ram_path && !(k->ram_path = strdup(qp->ram_path))) {
    free(k->dir);
    free(k->state_dir);
    free(k);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "snapshot");
  }
  k->ram_bytes = qp ? qp->ram_bytes : 0;
  k->no_config = qp && qp->no_config;
  k->flags = flags;
  k->save = save;
  k->cb = cb;
  k->ud = ud;
  k->w.data = k;
  backend_vm_ref(vm);
  int r = uv_queue_work(vm->loop, &k->w, snap_work_run, snap_work_after);
  if (r < 0) {
    backend_vm_unref(vm);
    free(k->dir);
    free(k->state_dir);
    free(k->ram_path);
    free(k);
    return cr_error_set(err, CR_E_INTERNAL, -r, "snapshot");
  }
  return 0;
}

static int qemu_save(backend_vm *vm, const backend_save_opts *opts, backend_done_cb cb,
                     void *ud, cr_error **err) {
  if (!backend_vm_alive(vm)) return cr_error_set(err, CR_E_VMM_EXITED, 0, "the VMM is gone");
  unsigned flags = (opts->ram_in_file ? QEMU_SNAP_IGNORE_SHARED : 0) |
                   (opts->resume_after ? QEMU_SNAP_RESUME : 0);
  return snap_queue(vm, opts->state_dir, flags, true, cb, ud, err);
}

static int qemu_restore(uv_loop_t *loop, const backend_vm_config *cfg, const char *state_dir,
                        const backend_events *ev, void *ud, backend_vm **ret, cr_error **err) {
  _cleanup_free_ char *meta_path = cr_path_join(state_dir, "backend.json");
  json_error_t je;
  _cleanup_json_ json_t *meta = meta_path ? json_load_file(meta_path, 0, &je) : NULL;
  const char *be = json_string_value(json_object_get(meta, "backend"));
  if (!meta || !be || strcmp(be, "qemu"))
    return cr_error_set(err, CR_E_SNAPSHOT_INVALID, 0, "%s is not a qemu VM state", state_dir);
  bool ram_in_file = json_is_true(json_object_get(meta, "ram_in_file"));
  if (ram_in_file && !cfg->ram_path)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "this VM state needs the RAM file it was saved with");
  /* a flat RAM file in the state dir: mapped private, the device state
   * loaded beside it */
  const char *ram_file = json_string_value(json_object_get(meta, "ram_file"));
  if (ram_file && (!cfg->ram_path || !cfg->ram_private))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "this VM state needs its RAM file %s/%s mapped private", state_dir,
                        ram_file);
  json_t *conf = json_object_get(meta, "configuration_section");
  int start = ram_file || json_is_false(conf) ? START_INCOMING_NOCONFIG : START_INCOMING;
  if (qemu_spawn(loop, cfg, start, ev, ud, ret, err) < 0) return -1;
  /* ready is reported once the state is loaded and the vCPUs run */
  if (snap_queue(*ret, state_dir, ram_in_file ? QEMU_SNAP_IGNORE_SHARED : 0, false, NULL, NULL,
                 err) < 0) {
    backend_vm_stop(*ret, NULL, NULL);
    *ret = NULL;
    return -1;
  }
  return 0;
}

static bool qemu_alive(const backend_vm *vm) { return backend_vm_alive(vm); }

static json_t *qemu_capabilities(void) {
  bool kvm = !strcmp(backend_accel(), "kvm");
  uid_t first, last;
  char uids[64] = "";
  if (backend_vmm_uid_range(&first, &last))
    snprintf(uids, sizeof(uids), "%llu-%llu", (unsigned long long)first, (unsigned long long)last);
  json_t *j = json_pack(
      "{s:s, s:s, s:b, s:b, s:s, s:b, s:b, s:s?, s:s}", "backend", "qemu", "accel",
      backend_accel(), "kvm", kvm, "snapshots", 1, "network", "tap", "egress", 0, "docker", 0,
      "vmm_user", uids[0] ? "per-sandbox uid" : backend_vmm_user(), "notes",
      kvm ? "hardware virtualization (KVM)"
          : "software emulation (TCG): still a separate VM with its own kernel, "
            "but slower; no /dev/kvm usable on this host");
  if (j && uids[0]) json_object_set_new(j, "vmm_uids", json_string(uids));
  if (j)
    json_object_set_new(j, "cgroups",
                        json_string(backend_cgroup_mode_name(backend_cgroup_mode_get(NULL))));
  return j;
}

const backend_ops backend_qemu = {
    .name = "qemu",
    .capabilities = qemu_capabilities,
    .state_identity = qemu_state_identity,
    .launch = qemu_launch,
    .restore = qemu_restore,
    .attach = qemu_attach,
    .connect_agent = qemu_connect_agent,
    .pause = qemu_pause,
    .resume = qemu_resume,
    .save = qemu_save,
    .stop = backend_vm_stop,
    .kill = backend_vm_kill,
    .alive = qemu_alive,
};

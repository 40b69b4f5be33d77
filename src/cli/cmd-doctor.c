/* cleanroom doctor: host checks that need no daemon (KVM, QEMU, kernel,
 * guest agent, default image, disk space), plus whether a daemon answers. */
#include "client/client.h"
#include "boot/boot.h"
#include "backend/backend.h"
#include "backend/cgroup.h"
#include "cli/cli.h"
#include "config.h"
#include "cache/cache.h"
#include "egress/egress.h"
#include "image/ref.h"
#include "util/fs.h"
#include "util/macro.h"
#include "util/paths.h"
#include "util/spawn.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>


typedef struct checks {
  json_t *list;
  bool failed;
} checks;

static void add(checks *cs, const char *name, const char *status, const char *fix,
                const char *fmt, ...) _printf_(5, 6);
static void add(checks *cs, const char *name, const char *status, const char *fix,
                const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = NULL;
  if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
  va_end(ap);
  json_array_append_new(cs->list, json_pack("{s:s,s:s,s:s,s:s?}", "name", name, "status", status,
                                            "message", msg ? msg : "", "fix", fix));
  free(msg);
  if (!strcmp(status, "fail")) cs->failed = true;
}

static void check_kvm(checks *cs, bool *ret_kvm) {
  *ret_kvm = !strcmp(backend_accel(), "kvm");
  if (*ret_kvm) {
    add(cs, "kvm", "ok", NULL, "KVM usable (%s): VMs run with hardware virtualization",
        backend_accel_reason());
    return;
  }
  add(cs, "kvm", "warn",
      "enable virtualization (VT-x/AMD-V or nested virtualization) and load kvm_intel or "
      "kvm_amd; give this user access to /dev/kvm",
      "KVM not usable (%s); using QEMU TCG: sandboxes are still separate VMs with "
      "their own kernel, but the CPU and the hardware isolation are emulated in software "
      "(the emulator is the boundary) and everything runs several times slower",
      backend_accel_reason());
}

static void check_vmm_user(checks *cs) {
  const char *u = backend_vmm_user();
  uid_t first, last;
  if (backend_vmm_uid_range(&first, &last)) {
    add(cs, "vmm_user", "ok", NULL,
        "QEMU drops root; each VMM runs as a uid of its own (%llu-%llu, CLEANROOM_VMM_UIDS), so "
        "one VMM cannot signal, trace or read another",
        (unsigned long long)first, (unsigned long long)last);
  } else if (u) {
    add(cs, "vmm_user", "ok", NULL, "QEMU drops root and runs as '%s'", u);
  } else if (geteuid() != 0) {
    add(cs, "vmm_user", "ok", NULL, "QEMU runs as this (unprivileged) user");
  } else if (!backend_vmm_refusal()) {
    add(cs, "vmm_user", "warn", "unset CLEANROOM_VMM_USER and create " BACKEND_VMM_USER,
        "QEMU runs as root because CLEANROOM_VMM_USER is empty (the operator opted out): a "
        "guest that escaped the emulator would be root on this host");
  } else {
    add(cs, "vmm_user", "fail",
        "useradd --system --no-create-home --shell /usr/sbin/nologin " BACKEND_VMM_USER
        " (scripts/install.sh does this)",
        "the VMM user does not exist: the daemon refuses to start VMMs as root (opt out "
        "with CLEANROOM_VMM_USER=)");
  }
}

/* A cgroup per VMM (memory, pids, CPU limits): off is a warning, not a
 * failure (sandboxes run, but one can take the host's memory). */
static void check_cgroups(checks *cs) {
  const char *why = NULL;
  backend_cgroup_mode m = backend_cgroup_mode_get(&why);
  if (m != BACKEND_CGROUP_NONE)
    add(cs, "cgroups", "ok", NULL,
        "each VMM runs in a cgroup of its own (%s, under '%s'): memory, pids and CPU limited to "
        "its sandbox's resources",
        why, getenv("CLEANROOM_CGROUP") ? getenv("CLEANROOM_CGROUP") : BACKEND_CGROUP_PARENT);
  else
    add(cs, "cgroups", "warn",
        "run the daemon as root on a host with cgroup v2 (or v1 memory and pids hierarchies); "
        "unset CLEANROOM_CGROUP=off",
        "VMMs run without cgroup limits (%s): a sandbox's VMM can use more memory and CPU "
        "than its resources say", why);
}

/* What per-sandbox egress needs: CAP_NET_ADMIN, /dev/net/tun, nftables.
 * Without them a policy with network rules fails closed (warn, not fail:
 * sandboxes without network still run). */
static void check_egress(checks *cs) {
  const char *why = NULL;
  if (egress_host_capable(&why))
    add(cs, "egress", "ok", NULL,
        "network policies are enforced: TAP per sandbox, nftables, DNS filtered by the daemon");
  else
    add(cs, "egress", "warn",
        "run the daemon as root (or with CAP_NET_ADMIN); apt-get install nftables; modprobe tun",
        "a policy with sandbox.network.allow fails closed (backend_capability_mismatch): %s", why);
}

/* The gateway's content cache: size and hit/miss counters (docs/gateway.md).
 * Not created when missing (doctor changes nothing). */
static void check_cache(checks *cs) {
  _cleanup_free_ char *dir = cache_default_dir();
  struct stat st;
  if (!dir || stat(dir, &st) < 0) {
    add(cs, "content_cache", "ok", NULL, "%s: empty (created on the first gateway request)",
        dir ? dir : "?");
    return;
  }
  cache *c = NULL;
  cr_error *err = NULL;
  if (cache_open_local(dir, 0, &c, &err) < 0) {
    add(cs, "content_cache", "warn", "check the directory's owner and mode",
        "%s: %s", dir, err ? err->message : "unusable");
    cr_error_free(err);
    return;
  }
  json_t *stats = cache_stats(c);
  cache_close(c);
  add(cs, "content_cache", "ok", NULL, "%s: %lld entries, %lld of %lld bytes; %lld hits, %lld misses",
      dir, (long long)json_integer_value(json_object_get(stats, "entries")),
      (long long)json_integer_value(json_object_get(stats, "bytes")),
      (long long)json_integer_value(json_object_get(stats, "max_bytes")),
      (long long)json_integer_value(json_object_get(stats, "hits")),
      (long long)json_integer_value(json_object_get(stats, "misses")));
  json_object_set_new(json_array_get(cs->list, json_array_size(cs->list) - 1), "stats", stats);
}

static void check_qemu(checks *cs) {
  const char *prog = "qemu-system-x86_64";
  _cleanup_free_ char *p = cr_find_in_path(prog);
  if (!p) {
    add(cs, "qemu", "fail", "apt-get install qemu-system-x86", "%s not found in PATH", prog);
    return;
  }
  char *argv[] = {p, (char *)"--version", NULL};
  _cleanup_free_ char *out = NULL;
  _cleanup_error_ cr_error *err = NULL;
  int r = cr_run(argv, &out, 4096, &err);
  if (r != 0) {
    add(cs, "qemu", "fail", "reinstall qemu-system-x86", "%s --version failed (%s)", p,
        r < 0 ? (err ? err->message : "cannot run") : "non-zero exit");
    return;
  }
  char *nl = out ? strchr(out, '\n') : NULL;
  if (nl) *nl = '\0';
  add(cs, "qemu", "ok", NULL, "%s: %s", p, out && *out ? out : "(no version output)");
}

static void check_kernel(checks *cs) {
  _cleanup_free_ char *kdir = cr_kernel_dir();
  _cleanup_free_ char *boot = kdir ? cr_path_join(kdir, "boot") : NULL;
  _cleanup_free_ char *fix = NULL;
  _cleanup_free_ char *data = cr_data_dir();
  if (asprintf(&fix, "scripts/fetch-kernel.sh %s (or set CLEANROOM_KERNEL_DIR)",
               data ? data : "") < 0)
    fix = NULL;
  DIR *d = boot ? opendir(boot) : NULL;
  if (!d) {
    add(cs, "kernel", "fail", fix, "no kernel in %s (%s)", kdir ? kdir : "?",
        boot ? strerror(errno) : "out of memory");
    return;
  }
  char found[256] = "";
  struct dirent *de;
  while ((de = readdir(d)))
    if (!strncmp(de->d_name, "vmlinuz-", 8) || !strncmp(de->d_name, "vmlinux-", 8)) {
      snprintf(found, sizeof(found), "%s", de->d_name);
      if (de->d_name[6] == 'z') break; /* prefer the bzImage name */
    }
  closedir(d);
  if (!*found) {
    add(cs, "kernel", "fail", fix, "%s has no vmlinuz-*", boot);
    return;
  }
  add(cs, "kernel", "ok", NULL, "%s/%s", boot, found);
}

static void check_agent(checks *cs) {
  const char *env = getenv("CLEANROOM_AGENT");
  _cleanup_free_ char *p = boot_find_agent(); /* the daemon's own lookup */
  if (p && access(p, X_OK) == 0) {
    add(cs, "agent", "ok", NULL, "%s%s", p, env && *env ? " (CLEANROOM_AGENT)" : "");
    return;
  }
  if (env && *env) {
    add(cs, "agent", "fail", "point CLEANROOM_AGENT at the built guest/cleanroom-agent",
        "CLEANROOM_AGENT=%s is not an executable file", env);
    return;
  }
  _cleanup_free_ char *self = cr_self_dir();
  add(cs, "agent", "fail",
      "build it (ninja builds guest/cleanroom-agent next to the cleanroom binary), install it "
      "into " CR_LIBEXECDIR ", or set CLEANROOM_AGENT",
      "guest agent (cleanroom-agent) not found near %s, in " CR_LIBEXECDIR
      ", or via CLEANROOM_AGENT",
      self ? self : "this executable");
}

static void check_image(checks *cs) {
  const char *want = getenv("CLEANROOM_IMAGE");
  if (!want || !*want) want = IMAGE_DEFAULT_REF;
  _cleanup_free_ char *refs = cr_data_path("images/refs.json");
  const char *fix = "images/debian/build.sh (then cleanroom image import), or pass --image to "
                    "exec and sandbox create";
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;
  int r = refs ? cr_read_file(refs, 16u << 20, &buf, &len) : -ENOMEM;
  if (r < 0) {
    add(cs, "image", "fail", fix, "no images stored (%s: %s)", refs ? refs : "?", strerror(-r));
    return;
  }
  _cleanup_json_ json_t *j = json_loadb(buf, len, 0, NULL);
  json_t *map = json_object_get(j, "refs");
  const char *digest = json_string_value(json_object_get(map, want));
  if (!digest) {
    add(cs, "image", json_object_size(map) ? "warn" : "fail", fix,
        "default image %s not in %s (%zu other refs stored)", want, refs, json_object_size(map));
    return;
  }
  const char *hex = strncmp(digest, "sha256:", 7) ? digest : digest + 7;
  _cleanup_free_ char *sub = NULL;
  if (asprintf(&sub, "images/%s/rootfs.ext4", hex) < 0) sub = NULL;
  _cleanup_free_ char *rootfs = sub ? cr_data_path(sub) : NULL;
  if (!rootfs || access(rootfs, R_OK) != 0) {
    add(cs, "image", "fail", "cleanroom image rm, then import it again",
        "%s -> %s but %s is missing", want, digest, rootfs ? rootfs : "its rootfs");
    return;
  }
  add(cs, "image", "ok", NULL, "%s -> %s", want, digest);
}

static void check_daemon(checks *cs) {
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_api_client_ api_client *c = NULL;
  if (api_client_connect(NULL, false, &c, &err) < 0) {
    add(cs, "daemon", "warn",
        "none needed: the CLI starts 'cleanroom serve' on demand (or start it yourself)",
        "no daemon answering: %s", err ? err->message : "unknown error");
    return;
  }
  _cleanup_json_ json_t *info = NULL;
  if (api_client_call(c, "system.info", NULL, NULL, NULL, &info, &err) < 0) {
    add(cs, "daemon", "fail", "restart the daemon (its log is daemon.log in the run dir)",
        "%s accepts connections but system.info failed: %s", api_client_socket(c),
        err ? err->message : "unknown error");
    return;
  }
  add(cs, "daemon", "ok", NULL, "%s: version %s, pid %lld, backend %s/%s", api_client_socket(c),
      json_string_value(json_object_get(info, "version")) ?: "?",
      (long long)json_integer_value(json_object_get(info, "pid")),
      json_string_value(json_object_get(info, "backend")) ?: "?",
      json_string_value(json_object_get(info, "accel")) ?: "?");
}

static void check_disk(checks *cs) {
  _cleanup_free_ char *data = cr_data_dir();
  if (!data) return;
  /* the data dir may not exist yet: measure its nearest existing parent */
  _cleanup_free_ char *p = strdup(data);
  struct statvfs st;
  while (p && statvfs(p, &st) < 0) {
    char *slash = strrchr(p, '/');
    if (!slash || slash == p) {
      snprintf(p, strlen(p) + 1, "/");
      if (statvfs(p, &st) < 0) {
        add(cs, "disk", "warn", NULL, "cannot measure free space for %s: %s", data,
            strerror(errno));
        return;
      }
      break;
    }
    *slash = '\0';
  }
  if (!p) return;
  double gib = (double)st.f_bavail * (double)st.f_frsize / (1024.0 * 1024 * 1024);
  const char *fix = "free space there, or point CLEANROOM_DATA_DIR at a larger filesystem";
  if (gib < 1.0)
    add(cs, "disk", "fail", fix, "%.1f GiB free for %s: images and sandbox disks need more", gib,
        data);
  else if (gib < 5.0)
    add(cs, "disk", "warn", fix, "%.1f GiB free for %s (images and sandbox disks grow)", gib,
        data);
  else
    add(cs, "disk", "ok", NULL, "%.1f GiB free for %s", gib, data);
}

static void check_firecracker(checks *cs, bool kvm) {
  _cleanup_free_ char *fc = cr_find_in_path("firecracker");
  if (!fc || !kvm) {
    add(cs, "firecracker", "warn",
        "none needed: the qemu backend is used; firecracker needs KVM and a firecracker binary",
        "not available on this host (%s%s%s); the qemu backend is used",
        fc ? "" : "no firecracker binary in PATH", !fc && !kvm ? ", " : "",
        kvm ? "" : "no usable KVM");
    return;
  }
  add(cs, "firecracker", "ok", NULL,
      "%s with KVM present; the qemu backend stays the default", fc);
}

static void print_text(json_t *list) {
  size_t i;
  json_t *ch;
  json_array_foreach(list, i, ch) {
    const char *st = json_string_value(json_object_get(ch, "status"));
    const char *tag = !strcmp(st, "ok") ? "ok  " : !strcmp(st, "warn") ? "WARN" : "FAIL";
    printf("%s  %-12s %s\n", tag, json_string_value(json_object_get(ch, "name")),
           json_string_value(json_object_get(ch, "message")));
    const char *fix = json_string_value(json_object_get(ch, "fix"));
    if (fix && strcmp(st, "ok") != 0) printf("      %-12s fix: %s\n", "", fix);
  }
}

int cmd_doctor(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("Usage: cleanroom doctor [--json]\n\n"
           "Check this host: KVM (or the TCG fallback), QEMU, the guest kernel, the guest\n"
           "agent, the default image, free disk space, egress (CAP_NET_ADMIN, TUN,\n"
           "nftables), the content cache (size, hits, misses), Firecracker, and whether a daemon\n"
           "answers (without starting one). Exit status 1 when any check fails.\n\n"
           "Options:\n"
           "  --json      print {\"ok\": bool, \"checks\": [{name, status, message, fix}]}\n"
           "              (status: ok, warn or fail)\n"
           "  -h, --help  show this help\n");
    return 0;
  }
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) {
      json = true;
    } else {
      fprintf(stderr, "cleanroom: invalid_argument: unexpected argument '%s'\n", argv[i]);
      return CLI_EXIT_USAGE;
    }
  }
  checks cs = {.list = json_array()};
  bool kvm;
  check_kvm(&cs, &kvm);
  check_qemu(&cs);
  check_vmm_user(&cs);
  check_kernel(&cs);
  check_agent(&cs);
  check_image(&cs);
  check_disk(&cs);
  check_cgroups(&cs);
  check_egress(&cs);
  check_cache(&cs);
  check_daemon(&cs);
  check_firecracker(&cs, kvm);
  if (json) {
    _cleanup_json_ json_t *out = json_pack("{s:b,s:o}", "ok", !cs.failed, "checks", cs.list);
    json_dumpf(out, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
  } else {
    print_text(cs.list);
    json_decref(cs.list);
  }
  return cs.failed ? 1 : 0;
}

/* A cgroup per VMM: see cgroup.h. */
#include "backend/cgroup.h"
#include "util/log.h"
#include "util/macro.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CG_ROOT_DEFAULT "/sys/fs/cgroup"
#define CG_HINT " (set CLEANROOM_CGROUP=off to run VMMs without cgroups)"

/* v1: the hierarchies a group is made in; memory and pids are required,
 * cpu is used when mounted */
static const char *const v1_ctrls[] = {"memory", "pids", "cpu"};

static backend_cgroup_mode mode = BACKEND_CGROUP_NONE;
static const char *mode_why;
static bool mode_known, v1_cpu, v2_cpu;
static char parent[256];
static char root[256] = CG_ROOT_DEFAULT;

static bool exists(const char *p) { return access(p, F_OK) == 0; }

/* "memory pids cpu ..." contains word */
static bool has_word(const char *list, const char *word) {
  size_t n = strlen(word);
  for (const char *p = list; (p = strstr(p, word)); p += n)
    if ((p == list || p[-1] == ' ') && (p[n] == 0 || p[n] == ' ' || p[n] == '\n')) return true;
  return false;
}

static int write_str(const char *path, const char *val) {
  int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC); /* as a shell's > does */
  if (fd < 0) return -errno;
  size_t n = strlen(val);
  ssize_t w = write(fd, val, n);
  int r = w == (ssize_t)n ? 0 : w < 0 ? -errno : -EIO;
  close(fd);
  return r;
}

static bool valid_parent(const char *p) {
  if (!*p || *p == '/' || strlen(p) >= sizeof(parent) || strstr(p, "..")) return false;
  for (const char *c = p; *c; c++)
    if (!(('a' <= *c && *c <= 'z') || ('A' <= *c && *c <= 'Z') || ('0' <= *c && *c <= '9') ||
          strchr("._-/", *c)))
      return false;
  return true;
}

static bool valid_id(const char *id) {
  if (!id || !*id || !strcmp(id, ".") || !strcmp(id, "..") || strlen(id) > 128) return false;
  for (const char *c = id; *c; c++)
    if (!(('a' <= *c && *c <= 'z') || ('A' <= *c && *c <= 'Z') || ('0' <= *c && *c <= '9') ||
          strchr("._-", *c)))
      return false;
  return true;
}

static void detect(void) {
  mode_known = true;
  mode = BACKEND_CGROUP_NONE;
  v1_cpu = v2_cpu = false;
  /* the cgroup file system's mount point: a test tree in unit tests (cgroup
   * v2 with controllers cannot exist on a v1 host) */
  const char *fs = getenv("CLEANROOM_CGROUP_FS");
  snprintf(root, sizeof(root), "%s", fs && *fs == '/' ? fs : CG_ROOT_DEFAULT);
  const char *e = getenv("CLEANROOM_CGROUP");
  if (e && (!*e || !strcmp(e, "off"))) {
    mode_why = "turned off (CLEANROOM_CGROUP)";
    return;
  }
  if (!e) e = BACKEND_CGROUP_PARENT;
  if (!valid_parent(e)) {
    mode_why = "CLEANROOM_CGROUP is not a relative path of letters, digits and ._-/";
    return;
  }
  snprintf(parent, sizeof(parent), "%s", e);
  if (geteuid() != 0) {
    mode_why = "the daemon is not root";
    return;
  }
  char path[512];
  snprintf(path, sizeof(path), "%s/cgroup.controllers", root);
  FILE *f = fopen(path, "re");
  if (f) {
    char buf[512] = "";
    if (!fgets(buf, sizeof(buf), f)) buf[0] = 0;
    fclose(f);
    if (has_word(buf, "memory") && has_word(buf, "pids")) {
      mode = BACKEND_CGROUP_V2;
      v2_cpu = has_word(buf, "cpu");
      mode_why = "cgroup v2 (unified hierarchy)";
      return;
    }
    mode_why = "cgroup v2 without the memory and pids controllers";
    return;
  }
  char mem[512], pids[512], cpu[512];
  snprintf(mem, sizeof(mem), "%s/memory/cgroup.procs", root);
  snprintf(pids, sizeof(pids), "%s/pids/cgroup.procs", root);
  snprintf(cpu, sizeof(cpu), "%s/cpu/cpu.cfs_quota_us", root);
  if (exists(mem) && exists(pids)) {
    mode = BACKEND_CGROUP_V1;
    v1_cpu = exists(cpu);
    mode_why = "cgroup v1 (memory, pids and cpu hierarchies; no cgroup v2 on this host)";
    return;
  }
  mode_why = "no cgroup hierarchy with the memory and pids controllers is mounted";
}

void backend_cgroup_redetect(void) { mode_known = false; }

backend_cgroup_mode backend_cgroup_mode_get(const char **why) {
  if (!mode_known) detect();
  if (why) *why = mode_why;
  return mode;
}

const char *backend_cgroup_mode_name(backend_cgroup_mode m) {
  return m == BACKEND_CGROUP_V2 ? "v2" : m == BACKEND_CGROUP_V1 ? "v1" : "off";
}

/* <root>[/<ctrl>]/<parent>[/<id>] */
static char *group_dir(const char *ctrl, const char *id) {
  char *p = NULL;
  if (asprintf(&p, "%s%s%s/%s%s%s", root, ctrl ? "/" : "", ctrl ? ctrl : "", parent,
               id ? "/" : "", id ? id : "") < 0)
    return NULL;
  return p;
}

static int mkdir_p(const char *path) {
  _cleanup_free_ char *p = strdup(path);
  if (!p) return -ENOMEM;
  for (char *s = p + strlen(root) + 1; (s = strchr(s, '/')); s++) {
    *s = 0;
    if (mkdir(p, 0755) < 0 && errno != EEXIST) return -errno;
    *s = '/';
  }
  return mkdir(p, 0755) < 0 && errno != EEXIST ? -errno : 0;
}

static int set(const char *dir, const char *file, const char *val, cr_error **err) {
  _cleanup_free_ char *p = NULL;
  if (asprintf(&p, "%s/%s", dir, file) < 0) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "cgroup");
  int r = write_str(p, val);
  if (r < 0) return cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, -r, "writing '%s' to %s" CG_HINT, val, p);
  return 0;
}

/* v2: the parent must hand the controllers down to its children (and so
 * must every level above it, up to the root) */
static int v2_enable(cr_error **err) {
  const char *want = v2_cpu ? "+memory +pids +cpu" : "+memory +pids";
  _cleanup_free_ char *dir = group_dir(NULL, NULL);
  if (!dir) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "cgroup");
  int r = mkdir_p(dir);
  if (r < 0) return cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, -r, "creating %s" CG_HINT, dir);
  /* each level from the root down to the parent */
  _cleanup_free_ char *p = strdup(dir);
  if (!p) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "cgroup");
  char *s = p + strlen(root);
  for (;;) {
    char save = *s;
    *s = 0;
    if (set(p, "cgroup.subtree_control", want, err) < 0) return -1;
    *s = save;
    if (!save) break;
    s = strchr(s + 1, '/');
    if (!s) s = p + strlen(p);
  }
  return 0;
}

int backend_cgroup_join(const char *id, pid_t pid, unsigned vcpus, unsigned memory_mib,
                        cr_error **err) {
  backend_cgroup_mode m = backend_cgroup_mode_get(NULL);
  if (m == BACKEND_CGROUP_NONE) return 0;
  if (!valid_id(id))
    return cr_error_set(err, CR_E_INTERNAL, EINVAL, "no cgroup name for VMM '%s'", id ? id : "");
  if (vcpus == 0) vcpus = 1;
  char mem[32], pids[16], quota[32], procs[16];
  snprintf(mem, sizeof(mem), "%llu",
           ((unsigned long long)memory_mib + BACKEND_CGROUP_MEM_OVERHEAD_MIB) << 20);
  snprintf(pids, sizeof(pids), "%u", BACKEND_CGROUP_PIDS);
  unsigned long long q = (unsigned long long)vcpus * 100000 + 50000;
  snprintf(procs, sizeof(procs), "%d", (int)pid);
  if (m == BACKEND_CGROUP_V2) {
    if (v2_enable(err) < 0) return -1;
    _cleanup_free_ char *dir = group_dir(NULL, id);
    if (!dir) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "cgroup");
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
      return cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, errno,
                          "creating %s" CG_HINT, dir);
    snprintf(quota, sizeof(quota), "%llu 100000", q);
    /* memory.swap.max only exists with swap accounting: optional */
    _cleanup_free_ char *swap = NULL;
    if (asprintf(&swap, "%s/memory.swap.max", dir) >= 0 && exists(swap)) write_str(swap, "0");
    if (set(dir, "memory.max", mem, err) < 0 || set(dir, "pids.max", pids, err) < 0 ||
        (v2_cpu && set(dir, "cpu.max", quota, err) < 0) ||
        set(dir, "cgroup.procs", procs, err) < 0)
      return -1;
    return 0;
  }
  for (size_t i = 0; i < ELEMENTSOF(v1_ctrls); i++) {
    const char *c = v1_ctrls[i];
    if (!strcmp(c, "cpu") && !v1_cpu) continue;
    _cleanup_free_ char *dir = group_dir(c, id);
    if (!dir) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "cgroup");
    int r = mkdir_p(dir);
    if (r < 0)
      return cr_error_set(err, CR_E_RUNTIME_LAUNCH_FAILED, -r,
                          "creating %s" CG_HINT, dir);
    snprintf(quota, sizeof(quota), "%llu", q);
    if ((!strcmp(c, "memory") && set(dir, "memory.limit_in_bytes", mem, err) < 0) ||
        (!strcmp(c, "pids") && set(dir, "pids.max", pids, err) < 0) ||
        (!strcmp(c, "cpu") && (set(dir, "cpu.cfs_period_us", "100000", err) < 0 ||
                               set(dir, "cpu.cfs_quota_us", quota, err) < 0)) ||
        set(dir, "cgroup.procs", procs, err) < 0)
      return -1;
  }
  return 0;
}

void backend_cgroup_remove(const char *id) {
  backend_cgroup_mode m = backend_cgroup_mode_get(NULL);
  if (m == BACKEND_CGROUP_NONE || !valid_id(id)) return;
  for (size_t i = 0; i < (m == BACKEND_CGROUP_V2 ? 1 : ELEMENTSOF(v1_ctrls)); i++) {
    _cleanup_free_ char *dir = group_dir(m == BACKEND_CGROUP_V2 ? NULL : v1_ctrls[i], id);
    if (dir && rmdir(dir) < 0 && errno != ENOENT)
      log_debug("cgroup %s: %s (removed once its VMM is gone)", dir, strerror(errno));
  }
}

char *backend_cgroup_path(const char *id) {
  backend_cgroup_mode m = backend_cgroup_mode_get(NULL);
  if (m == BACKEND_CGROUP_NONE || !valid_id(id)) return NULL;
  return group_dir(m == BACKEND_CGROUP_V2 ? NULL : "memory", id);
}

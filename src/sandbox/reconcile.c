/* Crash windows (issue 11, item 7): a daemon killed at any step of create
 * or terminate must leave nothing a restart cannot find. The state.json of a
 * sandbox is written before its VMM starts (the journal); on load the
 * daemon reconciles it with the processes that exist:
 *   - a directory without a valid state.json (killed between mkdir and the
 *     first write) is removed with its scratch disk, RAM file and any VMM;
 *   - a sandbox without a recorded pid (killed between the VMM's start and
 *     the pid's write) gets the pid of the VMM that names it;
 *   - VMMs of this data dir that no sandbox lists are killed.
 * VMMs are recognised by their command line: "-name cleanroom-<id>" and a
 * path under this data dir's sandboxes/ (other daemons' VMMs are left
 * alone). Test builds crash on purpose at named steps
 * (CLEANROOM_TEST_CRASH_AT, tests/integration/crash-windows.py). */
#include "sandbox/sandbox-internal.h"
#include "util/fs.h"
#include "util/log.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void sbx_crash_point(const char *step) {
  const char *at = getenv("CLEANROOM_TEST_CRASH_AT");
  if (!at || strcmp(at, step)) return;
  log_warn("CLEANROOM_TEST_CRASH_AT=%s: killing the daemon here (fault injection)", step);
  raise(SIGKILL);
}

/* The sandbox id a VMM of sandboxes dir `dir` runs, from /proc/<pid>/cmdline. */
static bool vmm_of(pid_t pid, const char *dir, char id[27]) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
  _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  static char buf[65536];
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  if (n <= 0) return false;
  buf[n] = '\0';
  bool under = false, named = false;
  size_t dl = strlen(dir);
  const char *prev = "";
  for (char *a = buf; a < buf + n; a += strlen(a) + 1) {
    if (!strcmp(prev, "-name") && !strncmp(a, "cleanroom-", 10) && strlen(a + 10) == 26) {
      memcpy(id, a + 10, 26);
      id[26] = '\0';
      named = true;
    }
    /* a path under dir: it starts the argument or follows '=' (QEMU option
     * values: "file=...", "mem-path=..."). A hit inside another path
     * ("/tmp/x" + dir) is another daemon's VMM: a daemon whose data dir is
     * /data once took every "/tmp/.../data/sandboxes/..." VMM for its own
     * orphan and killed it. */
    for (const char *hit = strstr(a, dir); hit; hit = strstr(hit + 1, dir))
      if (hit[dl] == '/' && (hit == a || hit[-1] == '=')) under = true;
    prev = a;
  }
  return named && under;
}

typedef bool (*vmm_fn)(void *ud, pid_t pid, const char *id);

static void each_vmm(const char *dir, vmm_fn fn, void *ud) {
  DIR *d = opendir("/proc");
  if (!d) return;
  struct dirent *de;
  char id[27];
  while ((de = readdir(d))) {
    char *end;
    long pid = strtol(de->d_name, &end, 10);
    if (*end || pid <= 1 || pid == getpid()) continue;
    if (vmm_of((pid_t)pid, dir, id) && !fn(ud, (pid_t)pid, id)) break;
  }
  closedir(d);
}

typedef struct find_ctx {
  const char *id;
  pid_t pid;
} find_ctx;

static bool find_fn(void *ud, pid_t pid, const char *id) {
  find_ctx *f = ud;
  if (strcmp(id, f->id)) return true;
  f->pid = pid;
  return false;
}

pid_t sbx_find_vmm(sbx_manager *m, const char *id) {
  find_ctx f = {id, 0};
  each_vmm(m->dir, find_fn, &f);
  return f.pid;
}

static bool kill_fn(void *ud, pid_t pid, const char *id) {
  const char *want = ud;
  if (want && strcmp(id, want)) return true;
  log_warn("killing VMM pid %d of sandbox %s: no sandbox tracks it", (int)pid, id);
  kill(pid, SIGKILL);
  return true;
}

void sbx_kill_vmms_of(sbx_manager *m, const char *id) { each_vmm(m->dir, kill_fn, (void *)id); }

static bool orphan_fn(void *ud, pid_t pid, const char *id) {
  sbx_manager *m = ud;
  for (size_t i = 0; i < m->n; i++)
    if (!strcmp(m->list[i]->id, id) && m->list[i]->pid == pid &&
        m->list[i]->state != SBX_FAILED && m->list[i]->state != SBX_STOPPED)
      return true;
  return kill_fn(NULL, pid, id);
}

void sbx_kill_orphan_vmms(sbx_manager *m) { each_vmm(m->dir, orphan_fn, m); }

void sbx_remove_partial(sbx_manager *m, const char *id, const char *dir) {
  log_warn("removing %s: a sandbox whose creation was interrupted (no state.json)", dir);
  sbx_kill_vmms_of(m, id);
  cr_rm_rf(dir);
  char *ram = NULL;
  if (sbx_ram_file_path(id, &ram) == 0) {
    unlink(ram);
    free(ram);
  }
}

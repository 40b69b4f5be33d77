/* QEMU pause/resume/save/restore over QMP (shared/design/guest-boot.md,
 * "Clone from a snapshot").
 *
 * Migration streams go through a file descriptor handed to QEMU with QMP
 * `getfd` (SCM_RIGHTS) and `fd:NAME` URIs, never `exec:`, so QEMU's seccomp
 * filter may deny spawning. Two kinds of state:
 *  - device state only (QEMU_SNAP_IGNORE_SHARED, capability x-ignore-shared):
 *    the guest RAM stays in the shared memory-backend-file; templates.
 *  - full (RAM + devices): user snapshots, whatever the RAM backing.
 * These calls block for the duration of the migration (tens of ms for device
 * state, ~a second for a full 512 MiB guest); they run on the daemon loop. */
#include "backend/qemu-snapshot.h"
#include "backend/qmp.h"
#include "util/fs.h"
#include "util/macro.h"
#include "util/log.h"

#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define QMP_TIMEOUT_MS 20000
#define MIGRATE_TIMEOUT_MS 60000
#define FD_NAME "cr-migration"

static long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

static int qmp_open(const char *dir, qmp **ret, cr_error **err) {
  _cleanup_free_ char *sock = cr_path_join(dir, "qmp.sock");
  if (!sock) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "qmp");
  return qmp_connect(sock, QMP_TIMEOUT_MS, ret, err);
}

static int set_ignore_shared(qmp *q, bool on, cr_error **err) {
  json_t *caps = json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability", "x-ignore-shared",
                           "state", on);
  return qmp_execute(q, "migrate-set-capabilities", caps, QMP_TIMEOUT_MS, NULL, err);
}

/* Polls query-migrate until completed (0) or failed/deadline (-1). */
static int wait_migration(qmp *q, const char *what, cr_error **err) {
  long deadline = mono_ms() + MIGRATE_TIMEOUT_MS;
  struct timespec ts = {0, 2 * 1000 * 1000};
  for (;;) {
    json_t *ret = NULL;
    if (qmp_execute(q, "query-migrate", NULL, QMP_TIMEOUT_MS, &ret, err) < 0) return -1;
    const char *st = json_string_value(json_object_get(ret, "status"));
    if (st && !strcmp(st, "completed")) {
      json_decref(ret);
      return 0;
    }
    if (st && (!strcmp(st, "failed") || !strcmp(st, "cancelled"))) {
      const char *desc = json_string_value(json_object_get(ret, "error-desc"));
      int r = cr_error_set(err, CR_E_SNAPSHOT_FAILED, 0, "%s: migration %s%s%s", what, st,
                           desc ? ": " : "", desc ? desc : "");
      json_decref(ret);
      return r;
    }
    json_decref(ret);
    if (mono_ms() > deadline)
      return cr_error_set(err, CR_E_SNAPSHOT_FAILED, 0, "%s: migration timed out", what);
    nanosleep(&ts, NULL);
  }
}

static int running(qmp *q, bool *ret) {
  json_t *st = NULL;
  cr_error *e = NULL;
  if (qmp_execute(q, "query-status", NULL, QMP_TIMEOUT_MS, &st, &e) < 0) {
    cr_error_free(e);
    return -1;
  }
  *ret = json_is_true(json_object_get(st, "running"));
  json_decref(st);
  return 0;
}

int qemu_vm_pause(const char *dir, cr_error **err) {
  qmp *q = NULL;
  if (qmp_open(dir, &q, err) < 0) return -1;
  int r = qmp_execute(q, "stop", NULL, QMP_TIMEOUT_MS, NULL, err);
  qmp_free(q);
  return r;
}

int qemu_vm_resume(const char *dir, cr_error **err) {
  qmp *q = NULL;
  if (qmp_open(dir, &q, err) < 0) return -1;
  int r = qmp_execute(q, "cont", NULL, QMP_TIMEOUT_MS, NULL, err);
  qmp_free(q);
  return r;
}

int qemu_vm_save(const char *dir, const char *state_path, unsigned flags, cr_error **err) {
  qmp *q = NULL;
  if (qmp_open(dir, &q, err) < 0) return cr_error_wrap(err, "saving the VM");
  bool was_running = false;
  running(q, &was_running);
  _cleanup_free_ char *tmp = NULL;
  int fd = -1, r = -1;
  if (asprintf(&tmp, "%s.tmp", state_path) < 0) {
    cr_error_set(err, CR_E_INTERNAL, ENOMEM, "paths");
    goto out;
  }
  if (qmp_execute(q, "stop", NULL, QMP_TIMEOUT_MS, NULL, err) < 0) goto out;
  if (set_ignore_shared(q, flags & QEMU_SNAP_IGNORE_SHARED, err) < 0) goto out;
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    cr_error_set(err, CR_E_IO, errno, "creating %s", tmp);
    goto out;
  }
  if (qmp_execute_fd(q, "getfd", json_pack("{s:s}", "fdname", FD_NAME), fd, QMP_TIMEOUT_MS,
                     NULL, err) < 0)
    goto out;
  if (qmp_execute(q, "migrate", json_pack("{s:s}", "uri", "fd:" FD_NAME), QMP_TIMEOUT_MS, NULL,
                  err) < 0)
    goto out;
  if (wait_migration(q, "saving the VM", err) < 0) goto out;
  if (fsync(fd) < 0) {
    cr_error_set(err, CR_E_IO, errno, "writing %s", tmp);
    goto out;
  }
  if (rename(tmp, state_path) < 0) {
    cr_error_set(err, CR_E_IO, errno, "renaming %s", tmp);
    goto out;
  }
  r = 0;
out:
  if (fd >= 0) close(fd);
  if (r < 0 && tmp) unlink(tmp);
  /* the VM goes on as before unless asked to stay stopped */
  if (was_running && (r < 0 || (flags & QEMU_SNAP_RESUME))) {
    cr_error *e = NULL;
    if (qmp_execute(q, "cont", NULL, QMP_TIMEOUT_MS, NULL, &e) < 0 && r == 0) {
      *err = e;
      r = -1;
    } else {
      cr_error_free(e);
    }
  }
  qmp_free(q);
  return r;
}

int qemu_vm_restore(const char *dir, const char *state_path, unsigned flags, cr_error **err) {
  _cleanup_close_ int fd = open(state_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return cr_error_set(err, CR_E_SNAPSHOT_INVALID, errno, "opening the VM state %s",
                        state_path);
  qmp *q = NULL;
  if (qmp_open(dir, &q, err) < 0) return cr_error_wrap(err, "restoring the VM");
  int r = -1;
  long t0 = mono_ms();
  log_debug("restore: qmp connected");
  if (set_ignore_shared(q, flags & QEMU_SNAP_IGNORE_SHARED, err) < 0) goto out;
  if (qmp_execute_fd(q, "getfd", json_pack("{s:s}", "fdname", FD_NAME), fd, QMP_TIMEOUT_MS,
                     NULL, err) < 0)
    goto out;
  if (qmp_execute(q, "migrate-incoming", json_pack("{s:s}", "uri", "fd:" FD_NAME),
                  QMP_TIMEOUT_MS, NULL, err) < 0)
    goto out;
  /* QEMU 7.2 exits when an incoming migration fails: the QMP connection
   * closes, which wait_migration reports */
  log_debug("restore: +%ld ms incoming started", mono_ms() - t0);
  if (wait_migration(q, "restoring the VM", err) < 0) goto out;
  log_debug("restore: +%ld ms incoming done", mono_ms() - t0);
  if (qmp_execute(q, "cont", NULL, QMP_TIMEOUT_MS, NULL, err) < 0) goto out;
  log_debug("restore: +%ld ms running", mono_ms() - t0);
  r = 0;
out:
  qmp_free(q);
  return r;
}

/* QEMU pause/resume/save/restore over QMP (shared/design/guest-boot.md,
 * "Clone from a snapshot").
 *
 * Migration streams go through a file descriptor handed to QEMU with QMP
 * `getfd` (SCM_RIGHTS) and `fd:NAME` URIs, never `exec:`, so QEMU's seccomp
 * filter may deny spawning. Three kinds of state:
 *  - device state only (QEMU_SNAP_IGNORE_SHARED, capability x-ignore-shared):
 *    the guest RAM stays in the shared memory-backend-file; templates.
 *  - flat (qemu_vm_save_flat): user snapshots of a VM whose RAM is a file
 *    (shared or mapped private): the RAM read from the stopped VMM into a
 *    sparse file, the device state without RAM (xen-save-devices-state, an
 *    fd set). A restore maps that file private and loads only the devices.
 *  - full (RAM + devices): user snapshots of anonymous RAM, or when the flat
 *    RAM cannot be read.
 * These calls block for the duration of the migration (tens of ms for device
 * state, ~a second for a full 512 MiB guest); they run on the daemon loop. */
#include "backend/qemu-snapshot.h"
#include "backend/qmp.h"
#include "util/fs.h"
#include "util/clock.h"
#include "util/macro.h"
#include "util/log.h"

#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <time.h>

#define QMP_TIMEOUT_MS 20000
#define MIGRATE_TIMEOUT_MS 60000
#define FD_NAME "cr-migration"

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
  long deadline = cr_mono_ms() + MIGRATE_TIMEOUT_MS;
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
    if (cr_mono_ms() > deadline)
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

/* The end of a save: a VM that was running goes on unless the save asked
 * it to stay stopped (a failed save always resumes it); frees q. A failing
 * cont fails a save that had worked. Returns r or -1. */
static int save_finish(qmp *q, bool was_running, unsigned flags, int r, cr_error **err) {
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
  return save_finish(q, was_running, flags, r, err);
}

/* ---- flat RAM: the guest's memory as a sparse file a restore maps
 * private (copy-on-write), so that loading it costs nothing up front */

#define RAM_CHUNK_PAGES 512
#define PM_PRESENT (1ull << 63)
#define PM_SWAPPED (1ull << 62)

/* The start of the mapping of (dev, ino) at file offset 0 that is exactly
 * bytes long in pid's address space, or 0. */
static uint64_t find_ram_mapping(pid_t pid, dev_t dev, ino_t ino, uint64_t bytes) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  char line[512];
  uint64_t found = 0;
  while (!found && fgets(line, sizeof(line), f)) {
    unsigned long long start, end, off, inode;
    unsigned maj, min;
    char perms[8];
    if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu", &start, &end, perms, &off, &maj, &min,
               &inode) != 7)
      continue;
    if (inode == (unsigned long long)ino && maj == major(dev) && min == minor(dev) && off == 0 &&
        end - start == bytes)
      found = start;
  }
  fclose(f);
  return found;
}

static bool page_is_zero(const uint8_t *p, size_t n) {
  const uint64_t *q = (const uint64_t *)p;
  for (size_t i = 0; i < n / 8; i++)
    if (q[i]) return false;
  return true;
}

static int pread_full(int fd, void *buf, size_t n, uint64_t off) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd, (uint8_t *)buf + done, n - done, (off_t)(off + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -errno;
    if (r == 0) { /* past the end of the file: zeros */
      memset((uint8_t *)buf + done, 0, n - done);
      break;
    }
    done += (size_t)r;
  }
  return 0;
}

static int pwrite_full(int fd, const void *buf, size_t n, uint64_t off) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = pwrite(fd, (const uint8_t *)buf + done, n - done, (off_t)(off + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r < 0 ? -errno : -EIO;
    done += (size_t)r;
  }
  return 0;
}

/* Pages present in the VMM (its own copy-on-write pages, or file pages it
 * mapped) are read from its memory; the others are the file's (or holes).
 * Zero pages stay holes in out. Errors writing out are returned as they
 * are; any other (no such mapping, unreadable memory or file) is not
 * -ENOSPC/-EIO: the caller falls back to a full save then. */
static int copy_guest_ram(pid_t pid, const char *ram_path, uint64_t bytes, int out) {
  struct stat st;
  if (stat(ram_path, &st) < 0) return -errno;
  uint64_t base = find_ram_mapping(pid, st.st_dev, st.st_ino, bytes);
  if (!base) return -ENOENT;
  const size_t pg = 4096, chunk = RAM_CHUNK_PAGES * pg;
  char p[64];
  snprintf(p, sizeof(p), "/proc/%d/pagemap", (int)pid);
  _cleanup_close_ int pm = open(p, O_RDONLY | O_CLOEXEC);
  snprintf(p, sizeof(p), "/proc/%d/mem", (int)pid);
  _cleanup_close_ int mem = open(p, O_RDONLY | O_CLOEXEC);
  _cleanup_close_ int rf = open(ram_path, O_RDONLY | O_CLOEXEC);
  if (pm < 0 || mem < 0 || rf < 0) return -errno;
  _cleanup_free_ uint8_t *buf = malloc(chunk);
  uint64_t ents[RAM_CHUNK_PAGES];
  if (!buf) return -ENOMEM;
  if (ftruncate(out, (off_t)bytes) < 0) return -errno;
  uint64_t next_data = 0; /* the file's next data at or after off */
  for (uint64_t off = 0; off < bytes; off += chunk) {
    size_t n = (size_t)((bytes - off) < chunk ? (bytes - off) : chunk) / pg;
    int r = pread_full(pm, ents, n * sizeof(uint64_t), (base + off) / pg * sizeof(uint64_t));
    if (r < 0) return -EACCES;
    if (next_data < off) {
      off_t d = lseek(rf, (off_t)off, SEEK_DATA);
      next_data = d < 0 ? bytes : (uint64_t)d;
    }
    bool any_mem = false;
    for (size_t i = 0; i < n && !any_mem; i++) any_mem = ents[i] & (PM_PRESENT | PM_SWAPPED);
    if (!any_mem && next_data >= off + n * pg) continue; /* a hole, not touched */
    for (size_t i = 0; i < n;) {
      bool in_mem = ents[i] & (PM_PRESENT | PM_SWAPPED);
      size_t j = i + 1;
      while (j < n && (bool)(ents[j] & (PM_PRESENT | PM_SWAPPED)) == in_mem) j++;
      r = pread_full(in_mem ? mem : rf, buf + i * pg, (j - i) * pg,
                     (in_mem ? base : 0) + off + i * pg);
      if (r < 0) return -EACCES; /* unreadable: the caller falls back to a full save */
      i = j;
    }
    for (size_t i = 0; i < n;) {
      if (page_is_zero(buf + i * pg, pg)) {
        i++;
        continue;
      }
      size_t j = i + 1;
      while (j < n && !page_is_zero(buf + j * pg, pg)) j++;
      r = pwrite_full(out, buf + i * pg, (j - i) * pg, off + i * pg);
      if (r < 0) return r;
      i = j;
    }
  }
  return 0;
}

#define STATE_FDSET 9

int qemu_vm_save_flat(const char *dir, pid_t pid, const char *ram_path, uint64_t ram_bytes,
                      const char *ram_out, const char *state_path, unsigned flags,
                      cr_error **err) {
  qmp *q = NULL;
  if (qmp_open(dir, &q, err) < 0) return cr_error_wrap(err, "saving the VM");
  bool was_running = false;
  running(q, &was_running);
  _cleanup_free_ char *ram_tmp = NULL, *st_tmp = NULL;
  int rfd = -1, sfd = -1, r = -1;
  bool fdset = false;
  long t0 = cr_mono_ms();
  if (asprintf(&ram_tmp, "%s.tmp", ram_out) < 0) ram_tmp = NULL;
  if (asprintf(&st_tmp, "%s.tmp", state_path) < 0) st_tmp = NULL;
  if (!ram_tmp || !st_tmp) {
    cr_error_set(err, CR_E_INTERNAL, ENOMEM, "paths");
    goto out;
  }
  if (qmp_execute(q, "stop", NULL, QMP_TIMEOUT_MS, NULL, err) < 0) goto out;
  rfd = open(ram_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  sfd = open(st_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (rfd < 0 || sfd < 0) {
    cr_error_set(err, CR_E_IO, errno, "creating %s", rfd < 0 ? ram_tmp : st_tmp);
    goto out;
  }
  int cr = copy_guest_ram(pid, ram_path, ram_bytes, rfd);
  if (cr < 0) {
    /* the caller falls back to a full save */
    cr_error_set(err, cr == -ENOSPC || cr == -EIO ? CR_E_IO : CR_E_BACKEND_UNSUPPORTED, -cr,
                 "reading the guest RAM of VMM %d (%s)", (int)pid, ram_path);
    goto out;
  }
  long t1 = cr_mono_ms();
  /* device state only: no RAM sections, no configuration section (the
   * restoring VMM runs with migration.send-configuration=off) */
  json_t *ret = NULL;
  if (qmp_execute_fd(q, "add-fd", json_pack("{s:i, s:s}", "fdset-id", STATE_FDSET, "opaque",
                                            "cr-devstate"),
                     sfd, QMP_TIMEOUT_MS, &ret, err) < 0)
    goto out;
  json_decref(ret);
  fdset = true;
  char fname[32];
  snprintf(fname, sizeof(fname), "/dev/fdset/%d", STATE_FDSET);
  if (qmp_execute(q, "xen-save-devices-state", json_pack("{s:s, s:b}", "filename", fname,
                                                         "live", 0),
                  QMP_TIMEOUT_MS, NULL, err) < 0)
    goto out;
  if (fsync(sfd) < 0 || rename(ram_tmp, ram_out) < 0 || rename(st_tmp, state_path) < 0) {
    cr_error_set(err, CR_E_IO, errno, "writing %s", state_path);
    goto out;
  }
  log_debug("save: RAM copied in %ld ms, device state in %ld ms", t1 - t0, cr_mono_ms() - t1);
  r = 0;
out:
  if (fdset) {
    cr_error *e = NULL;
    qmp_execute(q, "remove-fd", json_pack("{s:i}", "fdset-id", STATE_FDSET), QMP_TIMEOUT_MS,
                NULL, &e);
    cr_error_free(e);
  }
  if (rfd >= 0) close(rfd);
  if (sfd >= 0) close(sfd);
  if (r < 0) {
    if (ram_tmp) unlink(ram_tmp);
    if (st_tmp) unlink(st_tmp);
  }
  /* (also before a fallback to a full save, which stops it again) */
  return save_finish(q, was_running, flags, r, err);
}

int qemu_vm_restore(const char *dir, const char *state_path, unsigned flags, cr_error **err) {
  _cleanup_close_ int fd = open(state_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return cr_error_set(err, CR_E_SNAPSHOT_INVALID, errno, "opening the VM state %s",
                        state_path);
  qmp *q = NULL;
  if (qmp_open(dir, &q, err) < 0) return cr_error_wrap(err, "restoring the VM");
  int r = -1;
  long t0 = cr_mono_ms();
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
  log_debug("restore: +%ld ms incoming started", cr_mono_ms() - t0);
  if (wait_migration(q, "restoring the VM", err) < 0) goto out;
  log_debug("restore: +%ld ms incoming done", cr_mono_ms() - t0);
  if (qmp_execute(q, "cont", NULL, QMP_TIMEOUT_MS, NULL, err) < 0) goto out;
  log_debug("restore: +%ld ms running", cr_mono_ms() - t0);
  r = 0;
out:
  qmp_free(q);
  return r;
}

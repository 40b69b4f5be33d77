/* Bounds on what a sandbox leaves on the host: the console log (a guest can
 * write /dev/ttyS0 as fast as it likes and would fill the data disk) and the
 * guest RAM file (private to the daemon's user). */
#include "sandbox/sandbox-internal.h"
#include "util/fs.h"
#include "util/log.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* console.log beyond CLEANROOM_CONSOLE_MAX bytes (default 4 MiB) is cut:
 * its last quarter (at most 256 KiB) moves to console.log.1 and console.log
 * starts again empty. Checked every CONSOLE_CHECK_MS, so the log stays under
 * the cap plus what the guest writes in that time (a serial port under TCG:
 * well under 1 MiB/s). */
#define CONSOLE_MAX_DEFAULT (4u << 20)
#define CONSOLE_KEEP (256u << 10)
#define CONSOLE_CHECK_MS 500

static uint64_t console_max(void) {
  const char *v = getenv("CLEANROOM_CONSOLE_MAX");
  unsigned long long r = v ? strtoull(v, NULL, 10) : 0;
  return r >= 4096 ? r : CONSOLE_MAX_DEFAULT;
}

static void cap_console(sbx *s, uint64_t max) {
  _cleanup_free_ char *p = cr_path_join(s->dir, "console.log");
  struct stat st;
  if (!p || lstat(p, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size <= max) return;
  char *tail = NULL;
  size_t n = 0;
  _cleanup_free_ char *old = cr_path_join(s->dir, "console.log.1");
  if (old && cr_read_file_tail(p, MIN(CONSOLE_KEEP, max / 4), &tail, &n) == 0)
    cr_write_file_atomic(old, tail, n, 0600);
  free(tail);
  _cleanup_close_ int fd = open(p, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 || ftruncate(fd, 0) < 0) log_warn("sandbox %s: cannot cut console.log", s->id);
  log_debug("sandbox %s: console.log cut at %lld bytes", s->id, (long long)st.st_size);
}

static void on_check(uv_timer_t *t) {
  sbx_manager *m = t->data;
  uint64_t max = console_max();
  for (size_t i = 0; i < m->n; i++) {
    sbx *s = m->list[i];
    if (s->state == SBX_PROVISIONING || s->state == SBX_READY) cap_console(s, max);
  }
}

void sbx_console_watch_start(sbx_manager *m) {
  uv_timer_init(m->loop, &m->console_timer);
  m->console_timer.data = m;
  uv_timer_start(&m->console_timer, on_check, CONSOLE_CHECK_MS, CONSOLE_CHECK_MS);
  uv_unref((uv_handle_t *)&m->console_timer);
  m->console_timer_init = true;
}

void sbx_manager_maybe_free(sbx_manager *m) {
  if (m->dead && m->live == 0) free(m);
}

static void manager_free_cb(uv_handle_t *h) {
  sbx_manager *m = h->data;
  m->dead = true;
  sbx_manager_maybe_free(m);
}

bool sbx_console_watch_stop(sbx_manager *m) {
  if (!m->console_timer_init) return false;
  m->console_timer_init = false;
  uv_timer_stop(&m->console_timer);
  m->console_timer.data = m;
  uv_close((uv_handle_t *)&m->console_timer, manager_free_cb);
  return true;
}

/* The directory of guest RAM files (memory-backend-file on /dev/shm):
 * /dev/shm/cleanroom (root) or /dev/shm/cleanroom-<uid>, a real directory
 * owned by the daemon's user, mode 0700; files in it are created here
 * O_EXCL|O_NOFOLLOW, 0600, before QEMU opens them. */
static void ram_dir(char dir[64]) {
  if (geteuid() == 0) snprintf(dir, 64, "/dev/shm/cleanroom");
  else snprintf(dir, 64, "/dev/shm/cleanroom-%u", (unsigned)geteuid());
}

int sbx_ram_file_path(const char *id, char **ret) {
  char dir[64];
  ram_dir(dir);
  return asprintf(ret, "%s/%s.ram", dir, id) < 0 ? -ENOMEM : 0;
}

int sbx_ram_file_create(const char *id, char **ret_path, cr_error **err) {
  char dir[64];
  ram_dir(dir);
  if (mkdir(dir, 0700) < 0 && errno != EEXIST)
    return cr_error_set(err, CR_E_IO, errno, "creating %s", dir);
  struct stat st;
  if (lstat(dir, &st) < 0) return cr_error_set(err, CR_E_IO, errno, "%s", dir);
  if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid())
    return cr_error_set(err, CR_E_IO, 0,
                        "%s is not a directory owned by uid %u; refusing to put guest memory there",
                        dir, (unsigned)geteuid());
  if ((st.st_mode & 07777) != 0700 && chmod(dir, 0700) < 0)
    return cr_error_set(err, CR_E_IO, errno, "chmod %s", dir);
  char *path = NULL;
  if (asprintf(&path, "%s/%s.ram", dir, id) < 0) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "ram");
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    cr_error_set(err, CR_E_IO, errno, "creating %s", path);
    free(path);
    return -1;
  }
  close(fd);
  *ret_path = path;
  return 0;
}

#include "util/paths.h"
#include "util/fs.h"
#include "util/macro.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

static char *env_or(const char *name, const char *root_default,
                    const char *xdg, const char *home_sub, const char *leaf) {
  const char *e = getenv(name);
  if (e && *e) return strdup(e);
  if (geteuid() == 0) return strdup(root_default);
  const char *x = getenv(xdg);
  char *r = NULL;
  if (x && *x) {
    if (asprintf(&r, "%s/%s", x, leaf) < 0) return NULL;
    return r;
  }
  /* No shared /tmp fallback: another local user could create that path
   * first and take over the socket or the state. */
  const char *home = getenv("HOME");
  if (!home || home[0] != '/') {
    errno = ENOENT;
    return NULL;
  }
  if (asprintf(&r, "%s/%s/%s", home, home_sub, leaf) < 0) return NULL;
  return r;
}

char *cr_data_dir(void) {
  return env_or("CLEANROOM_DATA_DIR", "/var/lib/cleanroom", "XDG_DATA_HOME",
                ".local/share", "cleanroom");
}

char *cr_run_dir(void) {
  return env_or("CLEANROOM_RUN_DIR", "/run/cleanroom", "XDG_RUNTIME_DIR",
                ".cache", "cleanroom");
}

char *cr_socket_path(void) {
  _cleanup_free_ char *d = cr_run_dir();
  return d ? cr_path_join(d, "cleanroom.sock") : NULL;
}

char *cr_data_path(const char *sub) {
  _cleanup_free_ char *d = cr_data_dir();
  return d ? cr_path_join(d, sub) : NULL;
}

char *cr_kernel_dir(void) {
  const char *e = getenv("CLEANROOM_KERNEL_DIR");
  if (e && *e) return strdup(e);
  return cr_data_path("kernels/current");
}

char *cr_self_dir(void) {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n < 0) return NULL;
  buf[n] = '\0';
  char *slash = strrchr(buf, '/');
  if (slash) *slash = '\0';
  return strdup(buf);
}

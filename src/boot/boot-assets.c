/* Kernel + initramfs for the microVM, built and cached in the kernel dir. */
#include "boot/boot.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "config.h"
#include "util/fs.h"
#include "util/paths.h"

#define AGENT_MAX_SIZE (64u << 20)

void boot_assets_free(boot_assets *a) {
  if (!a) return;
  free(a->kernel);
  free(a->vmlinux);
  free(a->initrd);
  free(a->version);
  free(a);
}

static int is_file(const char *p) {
  struct stat st;
  return p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* version from kernel_dir/version, else the single boot/vmlinuz-* name */
static char *kernel_version(const char *kernel_dir) {
  _cleanup_free_ char *vf = cr_path_join(kernel_dir, "version");
  char *buf = NULL;
  size_t len = 0;
  if (vf && cr_read_file(vf, 256, &buf, &len) == 0) {
    buf[strcspn(buf, " \t\r\n")] = '\0';
    if (buf[0] && !strchr(buf, '/')) return buf;
    free(buf);
  }
  _cleanup_free_ char *bd = cr_path_join(kernel_dir, "boot");
  DIR *d = bd ? opendir(bd) : NULL;
  if (!d) return NULL;
  char *v = NULL;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strncmp(e->d_name, "vmlinuz-", 8) == 0 && e->d_name[8] && !v)
      v = strdup(e->d_name + 8);
  closedir(d);
  return v;
}

/* Removes initrd-*.cpio files other than `keep` that are older than a day
 * (older agent builds; a day leaves time for VMs being started with them). */
static void prune_initrds(const char *kernel_dir, const char *keep) {
  DIR *d = opendir(kernel_dir);
  if (!d) return;
  const char *kb = strrchr(keep, '/');
  kb = kb ? kb + 1 : keep;
  time_t now = time(NULL);
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t l = strlen(e->d_name);
    if (strncmp(e->d_name, "initrd-", 7) != 0 || l < 12 ||
        strcmp(e->d_name + l - 5, ".cpio") != 0 || strcmp(e->d_name, kb) == 0)
      continue;
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG(st.st_mode) && st.st_mtime < now - 86400)
      unlinkat(dirfd(d), e->d_name, 0);
  }
  closedir(d);
}

static char *base_name(const char *p) {
  const char *b = strrchr(p, '/');
  return strdup(b ? b + 1 : p);
}

int boot_assets_ensure(const char *kernel_dir, const char *agent_path,
                       boot_assets **ret, cr_error **err) {
  _cleanup_free_ char *version = kernel_version(kernel_dir);
  if (!version)
    return cr_error_set(err, CR_E_KERNEL_NOT_FOUND, 0,
                        "no kernel in %s (run scripts/fetch-kernel.sh)", kernel_dir);
  _cleanup_free_ char *kernel = NULL, *vmlinux = NULL, *moddir = NULL;
  if (asprintf(&kernel, "%s/boot/vmlinuz-%s", kernel_dir, version) < 0 ||
      asprintf(&vmlinux, "%s/boot/vmlinux-%s", kernel_dir, version) < 0 ||
      asprintf(&moddir, "%s/lib/modules/%s", kernel_dir, version) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "boot assets");
  if (!is_file(kernel))
    return cr_error_set(err, CR_E_KERNEL_NOT_FOUND, 0,
                        "kernel %s not found (run scripts/fetch-kernel.sh)", kernel);
  if (!agent_path || !is_file(agent_path))
    return cr_error_set(err, CR_E_AGENT_NOT_FOUND, 0,
                        "guest agent %s not found (build it with musl-gcc, or set "
                        "CLEANROOM_AGENT)", agent_path ? agent_path : "cleanroom-agent");

  char **mods = NULL;
  size_t n_mods = 0;
  int r = boot_module_order(moddir, boot_default_modules, boot_n_default_modules,
                            &mods, &n_mods, err);
  if (r < 0) return cr_error_wrap(err, "kernel %s", version);

  /* cache key: agent content, module files (name + content), version */
  _cleanup_free_ char *key = NULL;
  size_t keylen = 0;
  FILE *kf = open_memstream(&key, &keylen);
  char hex[65];
  if (!kf) {
    boot_strv_free(mods);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "boot assets");
  }
  fprintf(kf, "cleanroom-initrd-v1\nversion=%s\n", version);
  if ((r = cr_sha256_file(agent_path, hex)) < 0) {
    fclose(kf);
    boot_strv_free(mods);
    return cr_error_set(err, CR_E_AGENT_NOT_FOUND, -r, "reading agent %s", agent_path);
  }
  fprintf(kf, "agent=%s\n", hex);
  for (size_t i = 0; i < n_mods; i++) {
    if ((r = cr_sha256_file(mods[i], hex)) < 0) {
      fclose(kf);
      boot_strv_free(mods);
      return cr_error_set(err, CR_E_KERNEL_NOT_FOUND, -r, "reading %s", mods[i]);
    }
    _cleanup_free_ char *b = base_name(mods[i]);
    fprintf(kf, "module=%s %s\n", b ? b : "", hex);
  }
  fclose(kf);
  char khash[65];
  cr_sha256_hex(key, keylen, khash);
  khash[16] = '\0';
  _cleanup_free_ char *initrd = NULL;
  if (asprintf(&initrd, "%s/initrd-%s.cpio", kernel_dir, khash) < 0) {
    boot_strv_free(mods);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "boot assets");
  }

  if (!is_file(initrd)) {
    boot_cpio c = BOOT_CPIO_INIT;
    boot_cpio_add_dir(&c, "dev", 0755);
    boot_cpio_add_node(&c, "dev/console", S_IFCHR | 0600, 5, 1);
    boot_cpio_add_node(&c, "dev/null", S_IFCHR | 0666, 1, 3);
    boot_cpio_add_dir(&c, "proc", 0555);
    boot_cpio_add_dir(&c, "sys", 0555);
    boot_cpio_add_dir(&c, "run", 0755);
    boot_cpio_add_dir(&c, "tmp", 01777);
    boot_cpio_add_dir(&c, "lib", 0755);
    boot_cpio_add_dir(&c, "lib/modules", 0755);
    _cleanup_free_ char *order = NULL;
    size_t order_len = 0;
    FILE *of = open_memstream(&order, &order_len);
    for (size_t i = 0; i < n_mods && r >= 0; i++) {
      _cleanup_free_ char *data = NULL, *b = base_name(mods[i]), *name = NULL;
      size_t len = 0;
      r = cr_read_file(mods[i], 64u << 20, &data, &len);
      if (r < 0) {
        cr_error_set(err, CR_E_KERNEL_NOT_FOUND, -r, "reading %s", mods[i]);
        break;
      }
      if (!b || asprintf(&name, "lib/modules/%s", b) < 0) {
        r = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "boot assets");
        break;
      }
      boot_cpio_add_data(&c, name, 0644, data, len);
      if (of) fprintf(of, "%s\n", b);
    }
    if (of) fclose(of);
    if (r >= 0 && !order) r = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "boot assets");
    if (r >= 0) {
      boot_cpio_add_data(&c, "modules.order", 0644, order, order_len);
      _cleanup_free_ char *agent = NULL;
      size_t alen = 0;
      r = cr_read_file(agent_path, AGENT_MAX_SIZE, &agent, &alen);
      if (r < 0)
        cr_error_set(err, CR_E_AGENT_NOT_FOUND, -r, "reading agent %s", agent_path);
      else
        boot_cpio_add_data(&c, "init", 0755, agent, alen);
    }
    int fr = r >= 0 ? boot_cpio_finish(&c) : 0;
    if (fr == -E2BIG)
      r = cr_error_set(err, CR_E_RESOURCE_EXHAUSTED, E2BIG,
                       "building initramfs: the modules and agent exceed %zu MiB",
                       BOOT_CPIO_MAX >> 20);
    else if (fr < 0)
      r = cr_error_set(err, CR_E_INTERNAL, -fr, "building initramfs");
    if (r >= 0 && (r = cr_write_file_atomic(initrd, c.buf.data, c.buf.len, 0644)) < 0)
      cr_error_set(err, CR_E_IO, -r, "writing %s", initrd);
    boot_cpio_free(&c);
    if (r < 0) {
      boot_strv_free(mods);
      return r;
    }
    prune_initrds(kernel_dir, initrd);
  }
  boot_strv_free(mods);

  boot_assets *a = calloc(1, sizeof(*a));
  if (!a) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "boot assets");
  a->kernel = TAKE_PTR(kernel);
  a->vmlinux = is_file(vmlinux) ? TAKE_PTR(vmlinux) : NULL;
  a->initrd = TAKE_PTR(initrd);
  a->version = TAKE_PTR(version);
  *ret = a;
  return 0;
}

static char *try_path(const char *dir, const char *rel) {
  if (!dir) return NULL;
  char *p = NULL;
  if (asprintf(&p, "%s/%s", dir, rel) < 0) return NULL;
  char *real = realpath(p, NULL);
  free(p);
  if (real && is_file(real)) return real;
  free(real);
  return NULL;
}

char *boot_find_agent(void) {
  const char *e = getenv("CLEANROOM_AGENT");
  if (e && *e) return strdup(e);
  _cleanup_free_ char *self = cr_self_dir();
  char *p;
  if ((p = try_path(self, "../libexec/cleanroom/cleanroom-agent"))) return p;
  if ((p = try_path(self, "guest/cleanroom-agent"))) return p;
  if ((p = try_path(self, "../guest/cleanroom-agent"))) return p;
  if ((p = try_path(self, "../../guest/cleanroom-agent"))) return p;
  if ((p = try_path(CR_LIBEXECDIR, "cleanroom-agent"))) return p;
  return NULL;
}

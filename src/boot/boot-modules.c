/* Kernel module load order from each .ko's ELF .modinfo section. */
#include "boot/boot.h"

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "util/fs.h"

#define KO_MAX_SIZE (64u << 20)
#define MAX_MODULES 8192
#define MAX_DEPENDS 256

const char *const boot_default_modules[] = {
    "virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_console",
    "virtio_net", "failover", "net_failover", "overlay", "virtio_rng",
    "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
};
const size_t boot_n_default_modules = ELEMENTSOF(boot_default_modules);

void boot_strv_free(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

/* "virtio-rng.ko" or "virtio-rng" -> "virtio_rng" */
static char *name_from_file(const char *file) {
  const char *b = strrchr(file, '/');
  b = b ? b + 1 : file;
  size_t n = strlen(b);
  if (n > 3 && strcmp(b + n - 3, ".ko") == 0) n -= 3;
  char *s = strndup(b, n);
  if (!s) return NULL;
  for (char *p = s; *p; p++)
    if (*p == '-') *p = '_';
  return s;
}

int boot_modinfo_read(const char *ko_path, char **ret_name, char ***ret_depends,
                      size_t *ret_n_depends, cr_error **err) {
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;
  int r = cr_read_file(ko_path, KO_MAX_SIZE, &buf, &len);
  if (r < 0)
    return cr_error_set(err, CR_E_KERNEL_NOT_FOUND, -r, "reading module %s", ko_path);
  const uint8_t *d = (const uint8_t *)buf;
  if (len < sizeof(Elf64_Ehdr) || memcmp(d, ELFMAG, SELFMAG) != 0 ||
      d[EI_CLASS] != ELFCLASS64 || d[EI_DATA] != ELFDATA2LSB)
    return cr_error_set(err, CR_E_KERNEL_NOT_FOUND, 0,
                        "module %s: not a little-endian ELF64 file", ko_path);
  Elf64_Ehdr eh;
  memcpy(&eh, d, sizeof(eh));
  if (eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum == 0 ||
      eh.e_shstrndx >= eh.e_shnum || eh.e_shoff > len ||
      (uint64_t)eh.e_shnum * sizeof(Elf64_Shdr) > len - eh.e_shoff)
    return cr_error_set(err, CR_E_KERNEL_NOT_FOUND, 0,
                        "module %s: bad section header table", ko_path);
  Elf64_Shdr strsh;
  memcpy(&strsh, d + eh.e_shoff + (size_t)eh.e_shstrndx * sizeof(Elf64_Shdr),
         sizeof(strsh));
  if (strsh.sh_offset > len || strsh.sh_size > len - strsh.sh_offset)
    return cr_error_set(err, CR_E_KERNEL_NOT_FOUND, 0,
                        "module %s: bad section name table", ko_path);
  const char *mi = NULL;
  size_t mi_len = 0;
  for (size_t i = 0; i < eh.e_shnum; i++) {
    Elf64_Shdr sh;
    memcpy(&sh, d + eh.e_shoff + i * sizeof(Elf64_Shdr), sizeof(sh));
    if (sh.sh_name >= strsh.sh_size) continue;
    const char *nm = (const char *)d + strsh.sh_offset + sh.sh_name;
    size_t maxn = strsh.sh_size - sh.sh_name;
    if (strnlen(nm, maxn) == maxn || strcmp(nm, ".modinfo") != 0) continue;
    if (sh.sh_type == SHT_NOBITS || sh.sh_offset > len || sh.sh_size > len - sh.sh_offset)
      return cr_error_set(err, CR_E_KERNEL_NOT_FOUND, 0,
                          "module %s: bad .modinfo section", ko_path);
    mi = (const char *)d + sh.sh_offset;
    mi_len = sh.sh_size;
    break;
  }
  if (!mi)
    return cr_error_set(err, CR_E_KERNEL_NOT_FOUND, 0,
                        "module %s: no .modinfo section", ko_path);
  _cleanup_free_ char *name = NULL;
  char **deps = calloc(MAX_DEPENDS + 1, sizeof(char *));
  size_t n_deps = 0;
  if (!deps) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "modinfo");
  size_t off = 0;
  while (off < mi_len) {
    const char *s = mi + off;
    size_t sl = strnlen(s, mi_len - off);
    off += sl + 1;
    if (sl > 5 && strncmp(s, "name=", 5) == 0 && !name) {
      name = strndup(s + 5, sl - 5);
    } else if (sl >= 8 && strncmp(s, "depends=", 8) == 0) {
      const char *p = s + 8, *end = s + sl;
      while (p < end) {
        const char *c = memchr(p, ',', (size_t)(end - p));
        if (!c) c = end;
        if (c > p) {
          if (n_deps >= MAX_DEPENDS) {
            boot_strv_free(deps);
            return cr_error_set(err, CR_E_KERNEL_NOT_FOUND, 0,
                                "module %s: too many dependencies", ko_path);
          }
          deps[n_deps] = strndup(p, (size_t)(c - p));
          if (!deps[n_deps]) break;
          n_deps++;
        }
        p = c + 1;
      }
    }
  }
  if (!name) name = name_from_file(ko_path);
  if (!name) {
    boot_strv_free(deps);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "modinfo");
  }
  *ret_name = TAKE_PTR(name);
  *ret_depends = deps;
  if (ret_n_depends) *ret_n_depends = n_deps;
  return 0;
}

/* ---------------------------------------------------------------- order */

typedef struct mod {
  char *name; /* module name (underscores) */
  char *path;
  char **deps;
  size_t n_deps;
  int loaded; /* modinfo read */
  int state;  /* 0 new, 1 visiting, 2 done */
} mod;

typedef struct modset {
  mod *m;
  size_t n, cap;
} modset;

static void modset_free(modset *s) {
  for (size_t i = 0; i < s->n; i++) {
    free(s->m[i].name);
    free(s->m[i].path);
    boot_strv_free(s->m[i].deps);
  }
  free(s->m);
}

static mod *modset_find(modset *s, const char *name) {
  _cleanup_free_ char *n = name_from_file(name);
  if (!n) return NULL;
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->m[i].name, n) == 0) return &s->m[i];
  return NULL;
}

static int scan(modset *s, const char *dir, int depth) {
  if (depth > 16) return 0;
  DIR *d = opendir(dir);
  if (!d) return -errno;
  struct dirent *e;
  int r = 0;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    _cleanup_free_ char *p = cr_path_join(dir, e->d_name);
    if (!p) { r = -ENOMEM; break; }
    struct stat st;
    if (lstat(p, &st) < 0) continue;
    if (S_ISDIR(st.st_mode)) {
      if ((r = scan(s, p, depth + 1)) < 0) break;
      continue;
    }
    size_t l = strlen(e->d_name);
    if (!S_ISREG(st.st_mode) || l < 4 || strcmp(e->d_name + l - 3, ".ko") != 0)
      continue;
    if (s->n >= MAX_MODULES) { r = -E2BIG; break; }
    if (s->n == s->cap) {
      size_t nc = s->cap ? s->cap * 2 : 64;
      mod *nm = realloc(s->m, nc * sizeof(mod));
      if (!nm) { r = -ENOMEM; break; }
      s->m = nm;
      s->cap = nc;
    }
    mod *m = &s->m[s->n];
    memset(m, 0, sizeof(*m));
    m->name = name_from_file(e->d_name);
    m->path = TAKE_PTR(p);
    if (!m->name) { free(m->path); r = -ENOMEM; break; }
    s->n++;
  }
  closedir(d);
  return r;
}

static int ensure_info(mod *m, cr_error **err) {
  if (m->loaded) return 0;
  _cleanup_free_ char *name = NULL;
  int r = boot_modinfo_read(m->path, &name, &m->deps, &m->n_deps, err);
  if (r < 0) return r;
  m->loaded = 1;
  return 0;
}

static int visit(modset *s, mod *m, char **out, size_t *n_out, int depth,
                 cr_error **err) {
  if (m->state == 2) return 0;
  if (m->state == 1 || depth > 256)
    return cr_error_set(err, CR_E_INTERNAL, 0,
                        "kernel module dependency cycle through %s", m->name);
  m->state = 1;
  int r = ensure_info(m, err);
  if (r < 0) return r;
  for (size_t i = 0; i < m->n_deps; i++) {
    mod *dm = modset_find(s, m->deps[i]);
    if (!dm)
      return cr_error_set(err, CR_E_KERNEL_NOT_FOUND, 0,
                          "module %s depends on %s, which the kernel package lacks",
                          m->name, m->deps[i]);
    r = visit(s, dm, out, n_out, depth + 1, err);
    if (r < 0) return cr_error_wrap(err, "%s", m->name);
  }
  m->state = 2;
  out[(*n_out)++] = m->path; /* borrowed; duplicated by the caller */
  return 0;
}

int boot_module_order(const char *modules_dir, const char *const *wanted,
                      size_t n_wanted, char ***ret_paths, size_t *ret_n,
                      cr_error **err) {
  modset s = {0};
  int r = scan(&s, modules_dir, 0);
  if (r < 0) {
    modset_free(&s);
    return cr_error_set(err, CR_E_KERNEL_NOT_FOUND, -r,
                        "scanning kernel modules in %s", modules_dir);
  }
  char **tmp = calloc(s.n + 1, sizeof(char *));
  size_t n = 0;
  if (!tmp) {
    modset_free(&s);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "module order");
  }
  for (size_t i = 0; i < n_wanted; i++) {
    mod *m = modset_find(&s, wanted[i]);
    if (!m) continue; /* optional: not in this kernel */
    if ((r = visit(&s, m, tmp, &n, 0, err)) < 0) break;
  }
  char **res = NULL;
  if (r >= 0) {
    res = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; res && i < n; i++)
      if (!(res[i] = strdup(tmp[i]))) {
        boot_strv_free(res);
        res = NULL;
      }
    if (!res) r = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "module order");
  }
  free(tmp);
  modset_free(&s);
  if (r < 0) return r;
  *ret_paths = res;
  if (ret_n) *ret_n = n;
  return 0;
}

/* Unit tests for src/boot: module order from synthetic ELF .ko files, cycle
 * and missing-dependency errors, the cpio writer (read back with
 * libarchive), boot_assets_ensure on a synthetic kernel dir, and the real
 * kernel's modules when CLEANROOM_KERNEL_DIR is set. */
#include <archive.h>
#include <archive_entry.h>
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "boot/boot.h"
#include "util/fs.h"

static char *tmpdir;

static int setup(void **state) {
  (void)state;
  char t[] = "/tmp/cr-test-boot-XXXXXX";
  if (!mkdtemp(t)) return -1;
  tmpdir = strdup(t);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  cr_rm_rf(tmpdir);
  free(tmpdir);
  return 0;
}

static char *tpath(const char *rel) {
  char *p = NULL;
  assert_true(asprintf(&p, "%s/%s", tmpdir, rel) > 0);
  return p;
}

/* Writes a minimal ELF64 with a .modinfo section holding `modinfo`
 * (NUL-separated key=value strings, given with '|' as separator). */
static void write_ko(const char *rel, const char *modinfo) {
  char mi[512];
  size_t mlen = strlen(modinfo) + 1;
  assert_true(mlen < sizeof(mi));
  memcpy(mi, modinfo, mlen);
  for (size_t i = 0; i < mlen; i++)
    if (mi[i] == '|') mi[i] = '\0';
  static const char shstr[] = "\0.modinfo\0.shstrtab\0";
  size_t off_mi = sizeof(Elf64_Ehdr);
  size_t off_str = off_mi + mlen;
  size_t off_sh = (off_str + sizeof(shstr) + 7) & ~(size_t)7;
  size_t total = off_sh + 3 * sizeof(Elf64_Shdr);
  uint8_t *buf = calloc(1, total);
  assert_non_null(buf);
  Elf64_Ehdr eh = {0};
  memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_REL;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_ehsize = sizeof(Elf64_Ehdr);
  eh.e_shoff = off_sh;
  eh.e_shentsize = sizeof(Elf64_Shdr);
  eh.e_shnum = 3;
  eh.e_shstrndx = 2;
  memcpy(buf, &eh, sizeof(eh));
  memcpy(buf + off_mi, mi, mlen);
  memcpy(buf + off_str, shstr, sizeof(shstr));
  Elf64_Shdr sh[3] = {{0}};
  sh[1].sh_name = 1;
  sh[1].sh_type = SHT_PROGBITS;
  sh[1].sh_offset = off_mi;
  sh[1].sh_size = mlen;
  sh[2].sh_name = 10;
  sh[2].sh_type = SHT_STRTAB;
  sh[2].sh_offset = off_str;
  sh[2].sh_size = sizeof(shstr);
  memcpy(buf + off_sh, sh, sizeof(sh));
  char *p = tpath(rel);
  char *dir = strdup(p);
  *strrchr(dir, '/') = '\0';
  assert_int_equal(cr_mkdir_p(dir, 0755), 0);
  assert_int_equal(cr_write_file_atomic(p, buf, total, 0644), 0);
  free(dir);
  free(p);
  free(buf);
}

static const char *base(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

static void test_modinfo(void **state) {
  (void)state;
  write_ko("mi/my-mod.ko", "license=GPL|depends=a,b_c|name=my_mod|vermagic=x");
  char *p = tpath("mi/my-mod.ko");
  char *name = NULL;
  char **deps = NULL;
  size_t n = 0;
  cr_error *err = NULL;
  assert_int_equal(boot_modinfo_read(p, &name, &deps, &n, &err), 0);
  assert_string_equal(name, "my_mod");
  assert_int_equal(n, 2);
  assert_string_equal(deps[0], "a");
  assert_string_equal(deps[1], "b_c");
  assert_null(deps[2]);
  free(name);
  boot_strv_free(deps);
  free(p);
  /* not an ELF */
  p = tpath("mi/bad.ko");
  assert_int_equal(cr_write_file_atomic(p, "hello", 5, 0644), 0);
  assert_true(boot_modinfo_read(p, &name, &deps, &n, &err) < 0);
  assert_string_equal(cr_error_reason(err), CR_E_KERNEL_NOT_FOUND);
  cr_error_free(err);
  free(p);
}

static void test_order(void **state) {
  (void)state;
  write_ko("ord/kernel/x/a.ko", "name=a|depends=b,c_d");
  write_ko("ord/kernel/y/b.ko", "name=b|depends=c_d");
  write_ko("ord/kernel/y/z/c-d.ko", "name=c_d|depends=");
  write_ko("ord/kernel/unrelated.ko", "name=unrelated|depends=a");
  char *dir = tpath("ord");
  const char *want[] = {"a", "not_there", "c-d"};
  char **paths = NULL;
  size_t n = 0;
  cr_error *err = NULL;
  assert_int_equal(boot_module_order(dir, want, 3, &paths, &n, &err), 0);
  assert_int_equal(n, 3);
  assert_string_equal(base(paths[0]), "c-d.ko");
  assert_string_equal(base(paths[1]), "b.ko");
  assert_string_equal(base(paths[2]), "a.ko");
  assert_null(paths[3]);
  boot_strv_free(paths);
  free(dir);
}

static void test_cycle_and_missing(void **state) {
  (void)state;
  write_ko("cyc/x.ko", "name=x|depends=y");
  write_ko("cyc/y.ko", "name=y|depends=z");
  write_ko("cyc/z.ko", "name=z|depends=x");
  char *dir = tpath("cyc");
  const char *want[] = {"x"};
  char **paths = NULL;
  size_t n = 0;
  cr_error *err = NULL;
  assert_true(boot_module_order(dir, want, 1, &paths, &n, &err) < 0);
  assert_non_null(strstr(err->message, "cycle"));
  cr_error_free(err);
  err = NULL;
  free(dir);

  write_ko("miss/x.ko", "name=x|depends=gone");
  dir = tpath("miss");
  assert_true(boot_module_order(dir, want, 1, &paths, &n, &err) < 0);
  assert_string_equal(cr_error_reason(err), CR_E_KERNEL_NOT_FOUND);
  assert_non_null(strstr(err->message, "gone"));
  cr_error_free(err);
  free(dir);
}

/* Reads a cpio archive with libarchive; returns the number of entries and
 * copies the content of `want` into *ret (if found). */
static int read_cpio(const void *data, size_t len, const char *want, char **ret,
                     unsigned *ret_mode) {
  struct archive *a = archive_read_new();
  archive_read_support_format_cpio(a);
  archive_read_support_filter_none(a);
  assert_int_equal(archive_read_open_memory(a, data, len), ARCHIVE_OK);
  struct archive_entry *e;
  int n = 0;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    n++;
    if (want && strcmp(archive_entry_pathname(e), want) == 0) {
      size_t sz = (size_t)archive_entry_size(e);
      char *b = calloc(1, sz + 1);
      assert_int_equal(archive_read_data(a, b, sz), (ssize_t)sz);
      *ret = b;
      if (ret_mode) *ret_mode = archive_entry_mode(e);
    }
  }
  assert_int_equal(archive_read_free(a), ARCHIVE_OK);
  return n;
}

static void test_cpio(void **state) {
  (void)state;
  boot_cpio c = BOOT_CPIO_INIT;
  boot_cpio_add_dir(&c, "dev", 0755);
  boot_cpio_add_node(&c, "dev/console", S_IFCHR | 0600, 5, 1);
  boot_cpio_add_data(&c, "init", 0755, "#!agent\0bin", 11);
  boot_cpio_add_data(&c, "empty", 0644, NULL, 0);
  assert_int_equal(boot_cpio_finish(&c), 0);
  assert_int_equal(c.buf.len % 4, 0);
  char *content = NULL;
  unsigned mode = 0;
  assert_int_equal(read_cpio(c.buf.data, c.buf.len, "init", &content, &mode), 4);
  assert_non_null(content);
  assert_memory_equal(content, "#!agent\0bin", 11);
  assert_int_equal(mode, S_IFREG | 0755);
  free(content);
  boot_cpio_free(&c);
}

static void make_kernel_dir(const char *rel) {
  char *p = NULL;
  assert_true(asprintf(&p, "%s/boot/vmlinuz-9.9-test", rel) > 0);
  char *full = tpath(p);
  char *dir = strdup(full);
  *strrchr(dir, '/') = '\0';
  assert_int_equal(cr_mkdir_p(dir, 0755), 0);
  assert_int_equal(cr_write_file_atomic(full, "kernel", 6, 0644), 0);
  free(dir);
  free(full);
  free(p);
  const char *mods[][2] = {
      {"kernel/drivers/virtio/virtio_ring.ko", "name=virtio_ring|depends="},
      {"kernel/drivers/virtio/virtio.ko", "name=virtio|depends=virtio_ring"},
      {"kernel/drivers/virtio/virtio_mmio.ko", "name=virtio_mmio|depends=virtio,virtio_ring"},
      {"kernel/drivers/char/virtio_console.ko", "name=virtio_console|depends=virtio,virtio_ring"},
      {"kernel/drivers/char/hw_random/virtio-rng.ko", "name=virtio_rng|depends=virtio,virtio_ring"},
      {"kernel/fs/overlayfs/overlay.ko", "name=overlay|depends="},
  };
  for (size_t i = 0; i < ELEMENTSOF(mods); i++) {
    assert_true(asprintf(&p, "%s/lib/modules/9.9-test/%s", rel, mods[i][0]) > 0);
    write_ko(p, mods[i][1]);
    free(p);
  }
}

static void test_assets(void **state) {
  (void)state;
  make_kernel_dir("kd");
  char *kd = tpath("kd");
  char *agent = tpath("agent");
  assert_int_equal(cr_write_file_atomic(agent, "\177ELFagent", 9, 0755), 0);
  /* stale initrds of older agents are pruned after a day, recent ones kept */
  char *old = tpath("kd/initrd-0000000000000000.cpio");
  char *recent = tpath("kd/initrd-1111111111111111.cpio");
  assert_int_equal(cr_write_file_atomic(old, "x", 1, 0644), 0);
  assert_int_equal(cr_write_file_atomic(recent, "x", 1, 0644), 0);
  struct timespec two_days[2] = {{time(NULL) - 2 * 86400, 0}, {time(NULL) - 2 * 86400, 0}};
  assert_int_equal(utimensat(AT_FDCWD, old, two_days, 0), 0);
  boot_assets *a = NULL;
  cr_error *err = NULL;
  assert_int_equal(boot_assets_ensure(kd, agent, &a, &err), 0);
  assert_int_equal(access(old, F_OK), -1);
  assert_int_equal(access(recent, F_OK), 0);
  free(old);
  free(recent);
  assert_string_equal(a->version, "9.9-test");
  assert_non_null(strstr(a->kernel, "/boot/vmlinuz-9.9-test"));
  assert_null(a->vmlinux);
  char *data = NULL;
  size_t len = 0;
  assert_int_equal(cr_read_file(a->initrd, 1 << 24, &data, &len), 0);
  char *order = NULL;
  read_cpio(data, len, "modules.order", &order, NULL);
  assert_non_null(order);
  assert_string_equal(order, "virtio_ring.ko\nvirtio.ko\nvirtio_mmio.ko\n"
                             "virtio_console.ko\noverlay.ko\nvirtio-rng.ko\n");
  free(order);
  char *init = NULL;
  unsigned mode = 0;
  read_cpio(data, len, "init", &init, &mode);
  assert_non_null(init);
  assert_memory_equal(init, "\177ELFagent", 9);
  assert_int_equal(mode & 07777, 0755);
  free(init);
  free(data);

  /* cached: same path, not rewritten */
  struct stat st1, st2;
  assert_int_equal(stat(a->initrd, &st1), 0);
  boot_assets *b = NULL;
  assert_int_equal(boot_assets_ensure(kd, agent, &b, &err), 0);
  assert_string_equal(a->initrd, b->initrd);
  assert_int_equal(stat(b->initrd, &st2), 0);
  assert_int_equal(st1.st_ino, st2.st_ino);
  boot_assets_free(b);
  /* a different agent gives a different initrd */
  assert_int_equal(cr_write_file_atomic(agent, "\177ELFagent2", 10, 0755), 0);
  assert_int_equal(boot_assets_ensure(kd, agent, &b, &err), 0);
  assert_string_not_equal(a->initrd, b->initrd);
  boot_assets_free(b);
  boot_assets_free(a);

  /* errors */
  char *nok = tpath("nokernel");
  assert_true(boot_assets_ensure(nok, agent, &a, &err) < 0);
  assert_string_equal(cr_error_reason(err), CR_E_KERNEL_NOT_FOUND);
  assert_non_null(strstr(err->message, "fetch-kernel.sh"));
  cr_error_free(err);
  err = NULL;
  char *noagent = tpath("no-agent");
  assert_true(boot_assets_ensure(kd, noagent, &a, &err) < 0);
  assert_string_equal(cr_error_reason(err), CR_E_AGENT_NOT_FOUND);
  cr_error_free(err);
  free(nok);
  free(noagent);
  free(kd);
  free(agent);
}

static void test_find_agent(void **state) {
  (void)state;
  setenv("CLEANROOM_AGENT", "/x/y/agent", 1);
  char *p = boot_find_agent();
  assert_string_equal(p, "/x/y/agent");
  free(p);
  unsetenv("CLEANROOM_AGENT");
}

static void test_real_kernel(void **state) {
  (void)state;
  const char *kd = getenv("CLEANROOM_KERNEL_DIR");
  if (!kd || !*kd) skip();
  char *vf = NULL, *ver = NULL;
  size_t len = 0;
  assert_true(asprintf(&vf, "%s/version", kd) > 0);
  assert_int_equal(cr_read_file(vf, 256, &ver, &len), 0);
  ver[strcspn(ver, "\n")] = '\0';
  char *md = NULL;
  assert_true(asprintf(&md, "%s/lib/modules/%s", kd, ver) > 0);
  char **paths = NULL;
  size_t n = 0;
  cr_error *err = NULL;
  assert_int_equal(boot_module_order(md, boot_default_modules,
                                     boot_n_default_modules, &paths, &n, &err), 0);
  /* each module after everything it depends on */
  int pos_ring = -1, pos_virtio = -1, pos_net = -1, pos_failover = -1, pos_ovl = -1;
  for (size_t i = 0; i < n; i++) {
    const char *b = base(paths[i]);
    if (!strcmp(b, "virtio_ring.ko")) pos_ring = (int)i;
    if (!strcmp(b, "virtio.ko")) pos_virtio = (int)i;
    if (!strcmp(b, "virtio_net.ko")) pos_net = (int)i;
    if (!strcmp(b, "net_failover.ko")) pos_failover = (int)i;
    if (!strcmp(b, "overlay.ko")) pos_ovl = (int)i;
  }
  assert_true(pos_ring >= 0 && pos_virtio > pos_ring);
  assert_true(pos_net > pos_failover && pos_failover >= 0);
  assert_true(pos_ovl >= 0);
  assert_true(n >= 12);
  boot_strv_free(paths);
  free(md);
  free(ver);
  free(vf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_modinfo),
      cmocka_unit_test(test_order),
      cmocka_unit_test(test_cycle_and_missing),
      cmocka_unit_test(test_cpio),
      cmocka_unit_test(test_assets),
      cmocka_unit_test(test_find_agent),
      cmocka_unit_test(test_real_kernel),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

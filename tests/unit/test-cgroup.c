/* backend/cgroup.c against trees of plain files laid out as the kernel's
 * cgroup file systems. A stand-in: this host has cgroup v1 only, and cgroup
 * v2 with the memory and pids controllers cannot exist next to it; the real
 * v1 hierarchies are used by tests/integration/cgroups.py. What this checks:
 * the mode each layout is detected as, and which file gets which value. */
#include "backend/cgroup.h"
#include "util/fs.h"
#include "util/macro.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tree[256];

static void put(const char *rel, const char *val) {
  char p[512];
  snprintf(p, sizeof(p), "%s/%s", tree, rel);
  char *slash = strrchr(p, '/');
  *slash = 0;
  assert_int_equal(cr_mkdir_p(p, 0755), 0);
  *slash = '/';
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs(val, f);
  fclose(f);
}

static char *get(const char *rel) {
  char p[512];
  snprintf(p, sizeof(p), "%s/%s", tree, rel);
  char *buf = NULL;
  size_t len = 0;
  if (cr_read_file(p, 4096, &buf, &len) < 0) return NULL;
  return buf;
}

static int setup(void **state) {
  snprintf(tree, sizeof(tree), "/tmp/cr-test-cgroup-XXXXXX");
  assert_non_null(mkdtemp(tree));
  setenv("CLEANROOM_CGROUP_FS", tree, 1);
  setenv("CLEANROOM_CGROUP", "cr/test", 1);
  return 0;
}

static int teardown(void **state) {
  cr_rm_rf(tree);
  unsetenv("CLEANROOM_CGROUP_FS");
  unsetenv("CLEANROOM_CGROUP");
  backend_cgroup_redetect();
  return 0;
}

static void test_v2(void **state) {
  if (geteuid() != 0) skip();
  put("cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma\n");
  put("cgroup.subtree_control", "");
  put("cr/cgroup.subtree_control", "");
  put("cr/test/cgroup.subtree_control", "");
  /* the group's files as the kernel would make them */
  put("cr/test/01ABC/memory.max", "max");
  put("cr/test/01ABC/memory.swap.max", "max");
  put("cr/test/01ABC/pids.max", "max");
  put("cr/test/01ABC/cpu.max", "max 100000");
  put("cr/test/01ABC/cgroup.procs", "");
  backend_cgroup_redetect();
  const char *why = NULL;
  assert_int_equal(backend_cgroup_mode_get(&why), BACKEND_CGROUP_V2);
  assert_string_equal(backend_cgroup_mode_name(BACKEND_CGROUP_V2), "v2");
  cr_error *err = NULL;
  assert_int_equal(backend_cgroup_join("01ABC", 4242, 2, 512, &err), 0);
  assert_null(err);
  _cleanup_free_ char *mem = get("cr/test/01ABC/memory.max");
  _cleanup_free_ char *swap = get("cr/test/01ABC/memory.swap.max");
  _cleanup_free_ char *pids = get("cr/test/01ABC/pids.max");
  _cleanup_free_ char *cpu = get("cr/test/01ABC/cpu.max");
  _cleanup_free_ char *procs = get("cr/test/01ABC/cgroup.procs");
  _cleanup_free_ char *sub_root = get("cgroup.subtree_control");
  _cleanup_free_ char *sub_mid = get("cr/cgroup.subtree_control");
  _cleanup_free_ char *sub_parent = get("cr/test/cgroup.subtree_control");
  assert_string_equal(mem, "805306368"); /* (512 + 256) MiB */
  assert_string_equal(swap, "0");
  assert_string_equal(pids, "256");
  assert_string_equal(cpu, "250000 100000"); /* 2 vCPUs + half a CPU */
  assert_string_equal(procs, "4242");
  /* every level down to the parent hands the controllers on */
  assert_string_equal(sub_root, "+memory +pids +cpu");
  assert_string_equal(sub_mid, "+memory +pids +cpu");
  assert_string_equal(sub_parent, "+memory +pids +cpu");
  _cleanup_free_ char *path = backend_cgroup_path("01ABC");
  char want[512];
  snprintf(want, sizeof(want), "%s/cr/test/01ABC", tree);
  assert_string_equal(path, want);
  /* a name that could leave the parent is refused */
  assert_true(backend_cgroup_join("../x", 1, 1, 1, &err) < 0);
  assert_non_null(err);
  cr_error_free(err);
}

static void test_v2_without_memory(void **state) {
  if (geteuid() != 0) skip();
  put("cgroup.controllers", "cpuset cpu io\n");
  backend_cgroup_redetect();
  const char *why = NULL;
  assert_int_equal(backend_cgroup_mode_get(&why), BACKEND_CGROUP_NONE);
  assert_non_null(strstr(why, "memory and pids"));
  cr_error *err = NULL;
  assert_int_equal(backend_cgroup_join("01ABC", 4242, 1, 256, &err), 0); /* off: no-op */
  assert_null(backend_cgroup_path("01ABC"));
}

static void test_v1(void **state) {
  if (geteuid() != 0) skip();
  put("memory/cgroup.procs", "");
  put("pids/cgroup.procs", "");
  put("cpu/cpu.cfs_quota_us", "-1");
  put("memory/cr/test/01XYZ/memory.limit_in_bytes", "");
  put("memory/cr/test/01XYZ/cgroup.procs", "");
  put("pids/cr/test/01XYZ/pids.max", "");
  put("pids/cr/test/01XYZ/cgroup.procs", "");
  put("cpu/cr/test/01XYZ/cpu.cfs_period_us", "");
  put("cpu/cr/test/01XYZ/cpu.cfs_quota_us", "");
  put("cpu/cr/test/01XYZ/cgroup.procs", "");
  backend_cgroup_redetect();
  assert_int_equal(backend_cgroup_mode_get(NULL), BACKEND_CGROUP_V1);
  cr_error *err = NULL;
  assert_int_equal(backend_cgroup_join("01XYZ", 77, 1, 256, &err), 0);
  _cleanup_free_ char *mem = get("memory/cr/test/01XYZ/memory.limit_in_bytes");
  _cleanup_free_ char *pids = get("pids/cr/test/01XYZ/pids.max");
  _cleanup_free_ char *quota = get("cpu/cr/test/01XYZ/cpu.cfs_quota_us");
  _cleanup_free_ char *period = get("cpu/cr/test/01XYZ/cpu.cfs_period_us");
  _cleanup_free_ char *p1 = get("memory/cr/test/01XYZ/cgroup.procs");
  _cleanup_free_ char *p2 = get("pids/cr/test/01XYZ/cgroup.procs");
  _cleanup_free_ char *p3 = get("cpu/cr/test/01XYZ/cgroup.procs");
  assert_string_equal(mem, "536870912");
  assert_string_equal(pids, "256");
  assert_string_equal(quota, "150000");
  assert_string_equal(period, "100000");
  assert_string_equal(p1, "77");
  assert_string_equal(p2, "77");
  assert_string_equal(p3, "77");
}

static void test_off(void **state) {
  setenv("CLEANROOM_CGROUP", "off", 1);
  backend_cgroup_redetect();
  const char *why = NULL;
  assert_int_equal(backend_cgroup_mode_get(&why), BACKEND_CGROUP_NONE);
  assert_non_null(strstr(why, "CLEANROOM_CGROUP"));
  setenv("CLEANROOM_CGROUP", "/abs", 1);
  backend_cgroup_redetect();
  assert_int_equal(backend_cgroup_mode_get(&why), BACKEND_CGROUP_NONE);
  setenv("CLEANROOM_CGROUP", "a/../b", 1);
  backend_cgroup_redetect();
  assert_int_equal(backend_cgroup_mode_get(&why), BACKEND_CGROUP_NONE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_v2, setup, teardown),
      cmocka_unit_test_setup_teardown(test_v2_without_memory, setup, teardown),
      cmocka_unit_test_setup_teardown(test_v1, setup, teardown),
      cmocka_unit_test_setup_teardown(test_off, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

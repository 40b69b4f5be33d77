/* src/workspace without a VM: path checks, the tar writer (read back with
 * libarchive), git blob ids. */
#include "workspace/ws.h"

#include <archive.h>
#include <archive_entry.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

static void test_paths(void **state) {
  const char *good[] = {"a", "a/b", "a.b/c", "...", "a/.b"};
  const char *bad[] = {"", "/a", "a/", "a//b", ".", "..", "a/../b", "../a", "a/.", "a/.."};
  for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) assert_true(ws_path_ok(good[i]));
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) assert_false(ws_path_ok(bad[i]));
  assert_false(ws_path_ok(NULL));
  assert_true(ws_path_has_git(".git"));
  assert_true(ws_path_has_git("a/.GIT/hooks/x"));
  assert_true(ws_path_has_git("a/.git"));
  assert_false(ws_path_has_git(".gitignore"));
  assert_false(ws_path_has_git("a/x.git/b"));
  const char *sel[] = {"src", "docs/"};
  assert_true(ws_path_selected("src", sel, 2));
  assert_true(ws_path_selected("src/a.c", sel, 2));
  assert_true(ws_path_selected("docs/x.md", sel, 2));
  assert_false(ws_path_selected("srcx/a.c", sel, 2));
  assert_false(ws_path_selected("README", sel, 2));
  assert_true(ws_path_selected("README", NULL, 0));
}

static void test_blob_oid(void **state) {
  char oid[41];
  ws_blob_oid("hello\n", 6, oid);
  assert_string_equal(oid, "ce013625030ba8dba906f756967f9e9ca394464a"); /* git hash-object */
  ws_blob_oid("", 0, oid);
  assert_string_equal(oid, "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
}

static void test_tar_roundtrip(void **state) {
  char longname[300], longlink[200];
  memset(longname, 'n', sizeof(longname));
  memcpy(longname, "deep/", 5);
  longname[sizeof(longname) - 1] = '\0';
  memset(longlink, 't', sizeof(longlink));
  longlink[sizeof(longlink) - 1] = '\0';
  ws_buf b = {0};
  assert_int_equal(ws_tar_add(&b, "deep", '5', 0755, 1700000000, NULL, 0, NULL), 0);
  assert_int_equal(ws_tar_add(&b, longname, '0', 0755, 1700000000, "abc", 3, NULL), 0);
  assert_int_equal(ws_tar_add(&b, "link", '2', 0777, 1700000000, NULL, 0, longlink), 0);
  assert_int_equal(ws_tar_add(&b, "bin", '0', 0644, 1700000000, "\0\1\2", 3, NULL), 0);
  assert_int_equal(ws_tar_end(&b), 0);
  assert_int_equal(b.len % 512, 0);
  struct archive *a = archive_read_new();
  archive_read_support_format_tar(a);
  assert_int_equal(archive_read_open_memory(a, b.data, b.len), ARCHIVE_OK);
  struct archive_entry *e;
  int n = 0;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    const char *name = archive_entry_pathname(e);
    if (n == 0) assert_string_equal(name, "deep/");
    if (n == 1) {
      assert_string_equal(name, longname);
      assert_int_equal(archive_entry_size(e), 3);
      assert_int_equal(archive_entry_perm(e), 0755);
      char buf[8];
      assert_int_equal(archive_read_data(a, buf, sizeof(buf)), 3);
      assert_memory_equal(buf, "abc", 3);
    }
    if (n == 2) {
      assert_string_equal(name, "link");
      assert_string_equal(archive_entry_symlink(e), longlink);
    }
    if (n == 3) {
      assert_int_equal(archive_entry_mtime(e), 1700000000);
      char buf[8];
      assert_int_equal(archive_read_data(a, buf, sizeof(buf)), 3);
      assert_memory_equal(buf, "\0\1\2", 3);
    }
    n++;
  }
  assert_int_equal(n, 4);
  archive_read_free(a);
  ws_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_paths),
      cmocka_unit_test(test_blob_oid),
      cmocka_unit_test(test_tar_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

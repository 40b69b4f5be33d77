/* src/workspace without a VM: path checks, the tar writer (read back with
 * libarchive), git blob ids, the tree written as host files for the
 * workspace disk (modes, symlinks, mtimes; crafted unsafe names refused). */
#include "workspace/ws.h"
#include "util/fs.h"

#include <archive.h>
#include <errno.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
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
  cr_buf b = {0};
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
  cr_buf_free(&b);
}

/* A tree object of n entries, written to the odb unchecked (as a hostile
 * remote could send it: libgit2's treebuilder would refuse bad names). */
static void raw_tree(git_odb *odb, git_oid *ret, const char *const *names,
                     const char *const *modes, const git_oid *const *ids, int n) {
  char buf[4096];
  size_t len = 0;
  for (int i = 0; i < n; i++) {
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s %s", modes[i], names[i]) + 1;
    memcpy(buf + len, ids[i]->id, 20);
    len += 20;
  }
  assert_int_equal(git_odb_write(ret, odb, buf, len, GIT_OBJECT_TREE), 0);
}

/* A bare mirror for url under $CLEANROOM_DATA_DIR with one commit (time
 * 1700000000): a good tree (bad = 0: a.txt, link -> a.txt, sub/run.sh 0755),
 * or one entry named ".." (1) or "x/../../y" (2). ret: the commit id. */
static void make_commit(const char *url, int bad, char ret[41]) {
  char *dir = ws_mirror_dir(url);
  assert_non_null(dir);
  git_repository *repo = NULL;
  assert_int_equal(git_repository_init(&repo, dir, 1), 0);
  git_odb *odb = NULL;
  assert_int_equal(git_repository_odb(&odb, repo), 0);
  git_oid hello, run, link, sub, root, commit;
  assert_int_equal(git_odb_write(&hello, odb, "hello\n", 6, GIT_OBJECT_BLOB), 0);
  assert_int_equal(git_odb_write(&run, odb, "#!/bin/sh\n", 10, GIT_OBJECT_BLOB), 0);
  assert_int_equal(git_odb_write(&link, odb, "a.txt", 5, GIT_OBJECT_BLOB), 0);
  const char *sn[] = {"run.sh"}, *sm[] = {"100755"};
  const git_oid *si[] = {&run};
  raw_tree(odb, &sub, sn, sm, si, 1);
  if (bad == 0) {
    const char *n[] = {"a.txt", "link", "sub"}, *m[] = {"100644", "120000", "40000"};
    const git_oid *i[] = {&hello, &link, &sub};
    raw_tree(odb, &root, n, m, i, 3);
  } else {
    /* ".." as a directory holding a file, or a name with a slash */
    const char *n[] = {bad == 1 ? ".." : "x/../../y"}, *m[] = {bad == 1 ? "40000" : "100644"};
    const git_oid *i[] = {bad == 1 ? &sub : &hello};
    raw_tree(odb, &root, n, m, i, 1);
  }
  char body[512];
  int k = snprintf(body, sizeof(body),
                   "tree %s\nauthor a <a@x> 1700000000 +0000\ncommitter a <a@x> 1700000000 +0000\n\nc\n",
                   git_oid_tostr_s(&root));
  assert_int_equal(git_odb_write(&commit, odb, body, (size_t)k, GIT_OBJECT_COMMIT), 0);
  git_oid_tostr(ret, 41, &commit);
  git_odb_free(odb);
  git_repository_free(repo);
  free(dir);
}

static void check_url(const char *super, const char *url, const char *want) {
  char *got = ws_submodule_url(super, url);
  if (!want) {
    if (got) fprintf(stderr, "%s + %s -> %s (want refused)\n", super, url, got);
    assert_null(got);
    return;
  }
  assert_non_null(got);
  assert_string_equal(got, want);
  free(got);
}

static void test_submodule_url(void **state) {
  check_url("https://h/a/super.git", "../sub.git", "https://h/a/sub.git");
  check_url("https://h/a/super.git/", "../../b/sub", "https://h/b/sub");
  check_url("https://h/a/super", "./sub", "https://h/a/super/sub");
  check_url("https://h/super", "../../x", NULL);            /* above the host */
  check_url("git@h:a/super.git", "../sub.git", "git@h:a/sub.git");
  check_url("git@h:super.git", "../sub.git", "git@h:sub.git");
  check_url("/srv/git/super.git", "../sub.git", "/srv/git/sub.git");
  check_url("file:///srv/super", "../sub", "file:///srv/sub");
  check_url("/srv/super", "file:///srv/other", "file:///srv/other");
  check_url("file:///super", "../lib", "file:///lib");
  check_url("/super", "../lib", "/lib");
  check_url("/super", "../../lib", NULL);
  check_url("https://h/super", "https://other/x.git", "https://other/x.git");
  /* a remote superproject cannot pull in the daemon host's repositories */
  check_url("https://h/a/super", "/etc/secret.git", NULL);
  check_url("https://h/a/super", "file:///etc/x", NULL);
  check_url("https://h/a/super", "-uupload-pack=x", NULL);
  check_url("https://h/a/super", "ext::sh -c x", NULL);
  check_url("https://h/a/super", "ftp://h/x", NULL);
  check_url("https://h/a/super", "relative/x", NULL);
  check_url("https://h/a/super", "https://h/x\nevil", NULL);
  check_url("/srv/super", "", NULL);
}

static void test_gitmodules(void **state) {
  const char *gm = "[submodule \"lib\"]\n\tpath = vendor/lib\n\turl = ../lib.git\n"
                   "[submodule \"b\"]\n\tpath = b\n\turl = https://h/b\n";
  char *u = NULL;
  cr_error *err = NULL;
  assert_int_equal(ws_gitmodules_url(gm, strlen(gm), "vendor/lib", &u, &err), 0);
  assert_string_equal(u, "../lib.git");
  free(u);
  assert_int_equal(ws_gitmodules_url(gm, strlen(gm), "b", &u, &err), 0);
  assert_string_equal(u, "https://h/b");
  free(u);
  assert_int_equal(ws_gitmodules_url(gm, strlen(gm), "none", &u, &err), 0);
  assert_null(u);
  const char *inc = "[include]\n\tpath = /etc/gitconfig\n[submodule \"b\"]\n\tpath = b\n";
  assert_int_equal(ws_gitmodules_url(inc, strlen(inc), "b", &u, &err), -1);
  assert_string_equal(err->reason, CR_E_WORKSPACE_UNSAFE_PATH);
  cr_error_free(err);
}

/* A superproject (mirror of file:///super) whose "lib" is a gitlink to the
 * commit of file:///lib, named by .gitmodules with a relative URL: both
 * writers bring lib's tree with subs, leave it empty without. */
static void test_submodule_tree(void **state) {
  char tmp[] = "/tmp/cr-test-ws-XXXXXX";
  assert_non_null(mkdtemp(tmp));
  setenv("CLEANROOM_DATA_DIR", tmp, 1);
  git_libgit2_init();
  char lib[41], commit[41];
  make_commit("file:///lib", 0, lib);
  char *dir = ws_mirror_dir("file:///super");
  git_repository *repo = NULL;
  assert_int_equal(git_repository_init(&repo, dir, 1), 0);
  git_odb *odb = NULL;
  assert_int_equal(git_repository_odb(&odb, repo), 0);
  const char gm[] = "[submodule \"l\"]\n\tpath = lib\n\turl = ../lib\n";
  git_oid gmo, top, libo, root, c;
  assert_int_equal(git_odb_write(&gmo, odb, gm, strlen(gm), GIT_OBJECT_BLOB), 0);
  assert_int_equal(git_odb_write(&top, odb, "top\n", 4, GIT_OBJECT_BLOB), 0);
  assert_int_equal(git_oid_fromstr(&libo, lib), 0);
  const char *n[] = {".gitmodules", "lib", "top.txt"}, *m[] = {"100644", "160000", "100644"};
  const git_oid *i[] = {&gmo, &libo, &top};
  raw_tree(odb, &root, n, m, i, 3);
  char body[512];
  int k = snprintf(body, sizeof(body),
                   "tree %s\nauthor a <a@x> 1600000000 +0000\ncommitter a <a@x> 1600000000 +0000\n\nc\n",
                   git_oid_tostr_s(&root));
  assert_int_equal(git_odb_write(&c, odb, body, (size_t)k, GIT_OBJECT_COMMIT), 0);
  git_oid_tostr(commit, sizeof(commit), &c);
  git_odb_free(odb);
  git_repository_free(repo);
  free(dir);

  cr_error *err = NULL;
  size_t files = 0;
  ws_submodules subs = {0};
  cr_buf b = {0};
  assert_int_equal(ws_tree_tar("file:///super", commit, &b, &files, &subs, &err), 0);
  assert_int_equal(files, 5); /* .gitmodules top.txt + lib's a.txt link sub/run.sh */
  assert_int_equal(subs.n, 1);
  assert_string_equal(subs.v[0].path, "lib");
  assert_string_equal(subs.v[0].url, "file:///lib");
  assert_string_equal(subs.v[0].commit, lib);
  assert_false(subs.v[0].fetched);
  struct archive *a = archive_read_new();
  archive_read_support_format_tar(a);
  assert_int_equal(archive_read_open_memory(a, b.data, b.len), ARCHIVE_OK);
  struct archive_entry *e;
  bool seen = false;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK)
    if (strcmp(archive_entry_pathname(e), "lib/sub/run.sh") == 0) {
      seen = true;
      assert_int_equal(archive_entry_perm(e), 0755);
      assert_int_equal(archive_entry_mtime(e), 1700000000); /* lib's own commit time */
    }
  assert_true(seen);
  archive_read_free(a);
  cr_buf_free(&b);
  ws_submodules_free(&subs);

  char path[512];
  snprintf(path, sizeof(path), "%s/with", tmp);
  assert_int_equal(ws_tree_write("file:///super", commit, path, &files, &subs, &err), 0);
  assert_int_equal(files, 5);
  assert_int_equal(subs.n, 1);
  ws_submodules_free(&subs);
  struct stat st;
  snprintf(path, sizeof(path), "%s/with/lib/a.txt", tmp);
  assert_int_equal(lstat(path, &st), 0);
  assert_int_equal(st.st_size, 6);
  snprintf(path, sizeof(path), "%s/without", tmp);
  assert_int_equal(ws_tree_write("file:///super", commit, path, &files, NULL, &err), 0);
  assert_int_equal(files, 2);
  snprintf(path, sizeof(path), "%s/without/lib/a.txt", tmp);
  assert_int_equal(lstat(path, &st), -1);
  snprintf(path, sizeof(path), "%s/without/lib", tmp);
  assert_int_equal(lstat(path, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  git_libgit2_shutdown();
  cr_rm_rf(tmp);
}

static void test_tree_write(void **state) {
  (void)state;
  char tmp[] = "/tmp/cr-test-ws-XXXXXX";
  assert_non_null(mkdtemp(tmp));
  setenv("CLEANROOM_DATA_DIR", tmp, 1);
  git_libgit2_init();
  char commit[41], path[512];
  make_commit("file:///good", 0, commit);
  snprintf(path, sizeof(path), "%s/tree", tmp);
  size_t files = 0;
  cr_error *err = NULL;
  assert_int_equal(ws_tree_write("file:///good", commit, path, &files, NULL, &err), 0);
  assert_int_equal(files, 3);
  struct stat st;
  snprintf(path, sizeof(path), "%s/tree/a.txt", tmp);
  assert_int_equal(lstat(path, &st), 0);
  assert_true(S_ISREG(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0644);
  assert_int_equal(st.st_size, 6);
  assert_int_equal(st.st_mtim.tv_sec, 1700000000);
  assert_int_equal(st.st_mtim.tv_nsec, 0);
  snprintf(path, sizeof(path), "%s/tree/sub/run.sh", tmp);
  assert_int_equal(lstat(path, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0755);
  snprintf(path, sizeof(path), "%s/tree/link", tmp);
  char t[16] = "";
  assert_int_equal(readlink(path, t, sizeof(t) - 1), 5);
  assert_string_equal(t, "a.txt");
  snprintf(path, sizeof(path), "%s/tree", tmp);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0755);
  /* crafted trees: refused, nothing outside the tree directory */
  for (int bad = 1; bad <= 2; bad++) {
    char url[32];
    snprintf(url, sizeof(url), "file:///bad%d", bad);
    make_commit(url, bad, commit);
    snprintf(path, sizeof(path), "%s/bad%d/t", tmp, bad);
    char parent[512];
    snprintf(parent, sizeof(parent), "%s/bad%d", tmp, bad);
    assert_int_equal(mkdir(parent, 0700), 0);
    err = NULL;
    assert_int_equal(ws_tree_write(url, commit, path, &files, NULL, &err), -1);
    assert_non_null(err);
    assert_string_equal(err->reason, CR_E_WORKSPACE_UNSAFE_PATH);
    cr_error_free(err);
    snprintf(path, sizeof(path), "%s/bad%d/run.sh", tmp, bad);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof(path), "%s/bad%d/y", tmp, bad);
    assert_int_equal(access(path, F_OK), -1);
  }
  git_libgit2_shutdown();
  cr_rm_rf(tmp);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_paths),
      cmocka_unit_test(test_blob_oid),
      cmocka_unit_test(test_tar_roundtrip),
      cmocka_unit_test(test_tree_write),
      cmocka_unit_test(test_submodule_url),
      cmocka_unit_test(test_gitmodules),
      cmocka_unit_test(test_submodule_tree),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

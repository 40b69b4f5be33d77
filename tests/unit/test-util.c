/* util: base64, atomic writes, ULIDs, errors, sparse copy, sums of sparse files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "util/buf.h"
#include "util/base64.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/paths.h"
#include "util/spawn.h"
#include "util/ulid.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_base64_roundtrip(void **state) {
  uint8_t data[256];
  for (int i = 0; i < 256; i++) data[i] = (uint8_t)i;
  for (size_t n = 0; n <= sizeof(data); n += 1) {
    char *enc = cr_base64_encode(data, n);
    assert_non_null(enc);
    assert_int_equal(strlen(enc), (n + 2) / 3 * 4);
    uint8_t *dec = NULL;
    size_t len = 99;
    assert_int_equal(cr_base64_decode(enc, strlen(enc), &dec, &len), 0);
    assert_int_equal(len, n);
    if (n) assert_memory_equal(dec, data, n);
    free(dec);
    free(enc);
  }
}

static void test_base64_rejects(void **state) {
  const char *bad[] = {"A", "AB", "ABC", "A===", "AB=C", "AB==AB==", "ab$d", "====", "AB\nC"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uint8_t *dec = NULL;
    size_t len = 0;
    assert_int_equal(cr_base64_decode(bad[i], strlen(bad[i]), &dec, &len), -EINVAL);
    assert_null(dec);
  }
  uint8_t *dec = NULL;
  size_t len = 0;
  assert_int_equal(cr_base64_decode("AAECAw==", 8, &dec, &len), 0);
  assert_int_equal(len, 4);
  assert_int_equal(dec[3], 3);
  free(dec);
}

static void test_ulid(void **state) {
  char a[27], b[27];
  cr_ulid_new(a);
  cr_ulid_new(b);
  assert_true(cr_ulid_valid(a));
  assert_true(cr_ulid_valid(b));
  assert_string_not_equal(a, b);
  assert_false(cr_ulid_valid("not-a-ulid"));
  assert_false(cr_ulid_valid("01M8QQ9MHS7GRZV63JPNY2EZCX")); /* we print lowercase */
  assert_false(cr_ulid_valid("01m8qq9mhs7grzv63jpny2ezcu")); /* 'u' is not Crockford */
  assert_false(cr_ulid_valid(NULL));
}

static void test_atomic_write_and_read(void **state) {
  char dir[] = "/tmp/cr-test-util-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char *p = cr_path_join(dir, "f.json");
  assert_int_equal(cr_write_file_atomic(p, "hello", 5, 0600), 0);
  assert_int_equal(cr_write_file_atomic(p, "bye", 3, 0600), 0);
  char *buf = NULL;
  size_t len = 0;
  assert_int_equal(cr_read_file(p, 100, &buf, &len), 0);
  assert_int_equal(len, 3);
  assert_string_equal(buf, "bye");
  free(buf);
  assert_int_equal(cr_read_file(p, 2, &buf, &len), -EFBIG);
  struct stat st;
  assert_int_equal(stat(p, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  /* sparse copy keeps content and size */
  char *big = cr_path_join(dir, "big");
  int fd = open(big, O_WRONLY | O_CREAT, 0600);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, 64 << 20), 0);
  assert_int_equal(pwrite(fd, "x", 1, 32 << 20), 1);
  close(fd);
  char *copy = cr_path_join(dir, "copy");
  assert_int_equal(cr_copy_file_sparse(big, copy, 0600, 0), 0);
  assert_int_equal(stat(copy, &st), 0);
  assert_int_equal(st.st_size, 64 << 20);
  assert_true(st.st_blocks * 512 < (4 << 20));
  char c = 0;
  fd = open(copy, O_RDONLY);
  assert_int_equal(pread(fd, &c, 1, 32 << 20), 1);
  close(fd);
  assert_int_equal(c, 'x');
  assert_int_equal(cr_copy_file_sparse(big, copy, 0600, 0), -EEXIST);
  /* several extents, unsynced, and from another filesystem (tmpfs), where
   * copy_file_range gives EXDEV and read/write takes over */
  {
    char shm[] = "/dev/shm/cr-test-copy-XXXXXX";
    _cleanup_free_ char *local = cr_path_join(dir, "from");
    int sfd = mkstemp(shm);
    const char *from = sfd >= 0 ? shm : local; /* no /dev/shm: the same fs */
    if (sfd < 0) sfd = open(local, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(sfd >= 0);
    assert_int_equal(ftruncate(sfd, 16 << 20), 0);
    close(sfd);
    fd = open(from, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "a", 1, 0), 1);
    assert_int_equal(pwrite(fd, "b", 1, 5 << 20), 1);
    assert_int_equal(pwrite(fd, "c", 1, (16 << 20) - 1), 1);
    close(fd);
    char *copy2 = cr_path_join(dir, "copy2");
    assert_int_equal(cr_copy_file_sparse(from, copy2, 0600, CR_COPY_NO_SYNC), 0);
    char h_from[65], h_copy[65];
    assert_int_equal(cr_sha256_file(from, h_from), 0);
    assert_int_equal(cr_sha256_file(copy2, h_copy), 0);
    assert_string_equal(h_from, h_copy);
    assert_int_equal(stat(copy2, &st), 0);
    assert_true(st.st_blocks * 512 < (4 << 20));
    /* a missing source leaves no destination behind */
    char *gone = cr_path_join(dir, "gone");
    assert_int_equal(cr_copy_file_sparse(gone, copy2, 0600, 0), -ENOENT);
    unlink(copy2);
    free(gone);
    free(copy2);
    unlink(from);
  }
  /* the data-only sum: equal for equal data, changed by a byte written
   * into a hole (even a zero byte: a new extent), by a truncation, and by
   * a flipped byte; never the plain sum */
  char h1[65], h2[65], h3[65], plain[65];
  assert_int_equal(cr_sha256_file_data(big, h1), 0);
  assert_int_equal(cr_sha256_file_data(copy, h2), 0);
  assert_string_equal(h1, h2);
  assert_int_equal(cr_sha256_file(big, plain), 0);
  assert_string_not_equal(h1, plain);
  fd = open(copy, O_WRONLY);
  assert_int_equal(pwrite(fd, "\0", 1, 1 << 20), 1);
  close(fd);
  assert_int_equal(cr_sha256_file_data(copy, h3), 0);
  assert_string_not_equal(h1, h3);
  fd = open(big, O_WRONLY);
  assert_int_equal(pwrite(fd, "y", 1, 32 << 20), 1);
  close(fd);
  assert_int_equal(cr_sha256_file_data(big, h3), 0);
  assert_string_not_equal(h1, h3);
  assert_int_equal(truncate(big, 16 << 20), 0);
  assert_int_equal(cr_sha256_file_data(big, h3), 0);
  assert_string_not_equal(h1, h3);
  assert_int_equal(cr_sha256_file_data("/nonexistent/x", h3), -ENOENT);
  assert_int_equal(cr_rm_rf(dir), 0);
  assert_int_equal(access(dir, F_OK), -1);
  free(p);
  free(big);
  free(copy);
}

static void test_error_wrap(void **state) {
  cr_error *e = NULL;
  assert_int_equal(cr_error_set(&e, CR_E_IMAGE_NOT_FOUND, 0, "no image %s", "x"), -1);
  assert_int_equal(cr_error_set(&e, CR_E_INTERNAL, 0, "ignored"), -1); /* first wins */
  cr_error_wrap(&e, "creating sandbox %d", 7);
  assert_string_equal(e->message, "creating sandbox 7: no image x");
  assert_string_equal(cr_error_reason(e), "image_not_found");
  cr_error_free(e);
  e = NULL;
  assert_int_equal(cr_error_set(&e, CR_E_IO, ENOENT, "open f"), -ENOENT);
  assert_non_null(strstr(e->message, "No such file"));
  cr_error_free(e);
  assert_string_equal(cr_error_reason(NULL), "internal_error");
  e = NULL;
  cr_error_set(&e, CR_E_WORKSPACE_FETCH, 0, "fetch");
  assert_false(cr_error_recode(e, CR_E_IO, CR_E_INTERNAL)); /* another reason: kept */
  assert_string_equal(cr_error_reason(e), "workspace_fetch_failed");
  assert_true(cr_error_recode(e, CR_E_WORKSPACE_FETCH, CR_E_WORKSPACE_SUBMODULE_FETCH));
  assert_string_equal(cr_error_reason(e), "workspace_submodule_fetch_failed");
  assert_string_equal(e->message, "fetch");
  cr_error_free(e);
  assert_false(cr_error_recode(NULL, CR_E_IO, CR_E_INTERNAL));
}

/* QEMU option values: a path with commas must not add options (issue 11). */
static void test_escape_commas(void **state) {
  char *r = cr_escape_commas("/data/a,b/x,,y,");
  assert_string_equal(r, "/data/a,,b/x,,,,y,,");
  free(r);
  r = cr_escape_commas("");
  assert_string_equal(r, "");
  free(r);
  r = cr_escape_commas("/plain");
  assert_string_equal(r, "/plain");
  free(r);
}

/* A non-root user without CLEANROOM_RUN_DIR, XDG_RUNTIME_DIR or HOME gets
 * no run dir, not a shared /tmp path another user could create first
 * (issue 11, item 8). Checked in a child that drops to nobody when root. */
static void test_no_shared_tmp_fallback(void **state) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0)) _exit(2);
    unsetenv("CLEANROOM_RUN_DIR");
    unsetenv("CLEANROOM_DATA_DIR");
    unsetenv("XDG_RUNTIME_DIR");
    unsetenv("XDG_DATA_HOME");
    unsetenv("HOME");
    char *r = cr_run_dir(), *d = cr_data_dir();
    _exit(r == NULL && d == NULL ? 0 : 1);
  }
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
}

/* The bounded buffer: the bound is exact, "too large" is not "out of
 * memory", errors are sticky until reset. */
static void test_buf_bound(void **state) {
  cr_buf b = CR_BUF_INIT(1000);
  char chunk[300];
  memset(chunk, 'x', sizeof(chunk));
  for (int i = 0; i < 3; i++) assert_int_equal(cr_buf_append(&b, chunk, sizeof(chunk)), 0);
  assert_int_equal(b.len, 900);
  assert_true(b.cap <= 1000);
  assert_int_equal(cr_buf_append(&b, chunk, 100), 0); /* exactly the bound */
  assert_int_equal(cr_buf_append(&b, chunk, 1), -E2BIG);
  assert_int_equal(cr_buf_append(&b, chunk, 0), -E2BIG); /* sticky */
  assert_int_equal(b.len, 1000);
  cr_buf_consume(&b, 400);
  assert_int_equal(b.len, 600);
  assert_int_equal(b.data[0], 'x');
  cr_buf_reset(&b);
  assert_int_equal(cr_buf_zero(&b, 10), 0);
  assert_int_equal(b.data[9], 0);
  assert_int_equal(cr_buf_reserve(&b, SIZE_MAX), -E2BIG); /* no overflow */
  cr_buf_free(&b);
  assert_int_equal(b.max, 1000);
  assert_null(b.data);
  cr_buf u = CR_BUF_INIT(0); /* unbounded but for CR_BUF_MAX */
  assert_int_equal(cr_buf_reserve(&u, CR_BUF_MAX + 1), -E2BIG);
  assert_int_equal(u.err, -E2BIG);
  cr_buf_free(&u);
}

/* Text in the bounded buffer: printf appends, the NUL counts against the
 * bound, steal hands the string over (NULL after an error). */
static void test_buf_text(void **state) {
  cr_buf b = CR_BUF_INIT(16);
  assert_int_equal(cr_buf_printf(&b, "%s-%d", "ab", 12), 0);
  assert_int_equal(cr_buf_printf(&b, "%s", "cdefghij"), 0);
  assert_int_equal(b.len, 13);
  char *s = cr_buf_steal_str(&b);
  assert_string_equal(s, "ab-12cdefghij");
  free(s);
  assert_null(b.data);
  assert_int_equal(b.max, 16);
  s = cr_buf_steal_str(&b); /* empty */
  assert_string_equal(s, "");
  free(s);
  assert_int_equal(cr_buf_printf(&b, "%015d", 7), 0); /* 15 + NUL: exactly the bound */
  assert_int_equal(cr_buf_printf(&b, "x"), -E2BIG);
  assert_null(cr_buf_steal_str(&b));
  assert_null(b.data);
}

/* cr_run: stdout and stderr together, the tail kept; cr_run_input: the
 * input on stdin, stdout only, the head kept; exit codes and signals */
static void test_run(void **state) {
  (void)state;
  cr_error *err = NULL;
  char *out = NULL;
  char *both[] = {(char *)"sh", (char *)"-c",
                  (char *)"printf 0123456789; printf err >&2; exit 3", NULL};
  assert_int_equal(cr_run(both, &out, 8, &err), 3);
  assert_string_equal(out, "56789err"); /* "0123456789err", its last 8 bytes */
  free(out);
  out = NULL;
  char *cat[] = {(char *)"sh", (char *)"-c", (char *)"cat; echo gone >&2", NULL};
  assert_int_equal(cr_run_input(cat, "abcdefghij", &out, 4, &err), 0);
  assert_string_equal(out, "abcd");
  free(out);
  out = NULL;
  assert_int_equal(cr_run_input(cat, NULL, &out, 0, &err), 0);
  assert_string_equal(out, "");
  free(out);
  char *sig[] = {(char *)"sh", (char *)"-c", (char *)"kill -9 $$", NULL};
  assert_int_equal(cr_run(sig, NULL, 0, &err), 128 + 9);
  char *none[] = {(char *)"/nonexistent/cr-no-such-program", NULL};
  assert_null(err);
  assert_true(cr_run(none, NULL, 0, &err) < 0); /* posix_spawnp: ENOENT */
  assert_non_null(err);
  cr_error_free(err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_escape_commas),
      cmocka_unit_test(test_no_shared_tmp_fallback),
      cmocka_unit_test(test_base64_roundtrip), cmocka_unit_test(test_base64_rejects),
      cmocka_unit_test(test_ulid), cmocka_unit_test(test_atomic_write_and_read),
      cmocka_unit_test(test_error_wrap), cmocka_unit_test(test_buf_bound),
      cmocka_unit_test(test_buf_text), cmocka_unit_test(test_run),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

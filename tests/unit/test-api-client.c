/* Unit tests for the control API client (src/client/client.c) against a
 * scripted peer: a forked child that accepts one connection, reads one
 * request line and answers with fixed bytes. */
#include "client/client.h"
#include "util/fs.h"
#include "util/macro.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static char tmpdir[] = "/tmp/test-api-client-XXXXXX";
static char sock[100]; /* fits sockaddr_un.sun_path */
static char host[300];

/* Serves one connection: reads a line, writes `reply` (len bytes), closes. */
static pid_t serve_once(const char *reply, size_t len) {
  unlink(sock);
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(l >= 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
  assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(l, 4), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int c = accept(l, NULL, NULL);
    if (c < 0) _exit(1);
    char ch;
    while (read(c, &ch, 1) == 1 && ch != '\n') {
    }
    size_t off = 0;
    while (off < len) {
      ssize_t n = write(c, reply + off, len - off);
      if (n <= 0) _exit(1);
      off += (size_t)n;
    }
    close(c);
    _exit(0);
  }
  close(l);
  return pid;
}

static void reap(pid_t pid) {
  int st;
  kill(pid, SIGKILL);
  waitpid(pid, &st, 0);
}

static int setup(void **state) {
  assert_non_null(mkdtemp(tmpdir));
  snprintf(sock, sizeof(sock), "%s/s.sock", tmpdir);
  snprintf(host, sizeof(host), "unix:%s", sock);
  return 0;
}

static int teardown(void **state) {
  cr_rm_rf(tmpdir);
  return 0;
}

typedef struct seen {
  int n;
  char method[64];
} seen;

static void on_note(const char *method, json_t *params, void *ud) {
  seen *s = ud;
  s->n++;
  snprintf(s->method, sizeof(s->method), "%s", method);
  assert_int_equal(json_integer_value(json_object_get(params, "x")), 1);
}

static void test_result_and_notification(void **state) {
  const char *r = "{\"jsonrpc\":\"2.0\",\"method\":\"sandbox.progress\",\"params\":{\"x\":1}}\n"
                  "{\"jsonrpc\":\"2.0\",\"id\":99,\"result\":{\"other\":true}}\n"
                  "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"pid\":42}}\n";
  pid_t pid = serve_once(r, strlen(r));
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_api_client_ api_client *c = NULL;
  assert_int_equal(api_client_connect(host, true, &c, &err), 0);
  assert_string_equal(api_client_socket(c), sock);
  seen s = {0};
  _cleanup_json_ json_t *res = NULL;
  assert_int_equal(api_client_call(c, "system.info", NULL, on_note, &s, &res, &err), 0);
  assert_int_equal(s.n, 1);
  assert_string_equal(s.method, "sandbox.progress");
  assert_int_equal(json_integer_value(json_object_get(res, "pid")), 42);
  reap(pid);
}

static void test_error_reason(void **state) {
  const char *r = "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32000,\"message\":\"no "
                  "sandbox x\",\"data\":{\"reason\":\"sandbox_not_found\"}}}\n";
  pid_t pid = serve_once(r, strlen(r));
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_api_client_ api_client *c = NULL;
  assert_int_equal(api_client_connect(sock, false, &c, &err), 0);
  assert_true(api_client_call(c, "sandbox.get", json_pack("{s:s}", "id", "x"), NULL, NULL, NULL,
                              &err) < 0);
  assert_string_equal(cr_error_reason(err), "sandbox_not_found");
  assert_string_equal(err->message, "no sandbox x");
  reap(pid);
}

static void test_error_without_reason(void **state) {
  const char *r =
      "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32601,\"message\":\"unknown\"}}\n";
  pid_t pid = serve_once(r, strlen(r));
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_api_client_ api_client *c = NULL;
  assert_int_equal(api_client_connect(host, false, &c, &err), 0);
  assert_true(api_client_call(c, "nope", NULL, NULL, NULL, NULL, &err) < 0);
  assert_string_equal(cr_error_reason(err), "protocol_error");
  reap(pid);
}

static void test_overlong_line(void **state) {
  size_t n = API_CLIENT_MAX_LINE + 100;
  char *big = malloc(n);
  assert_non_null(big);
  memset(big, 'x', n);
  pid_t pid = serve_once(big, n);
  free(big);
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_api_client_ api_client *c = NULL;
  assert_int_equal(api_client_connect(host, false, &c, &err), 0);
  assert_true(api_client_call(c, "system.info", NULL, NULL, NULL, NULL, &err) < 0);
  assert_string_equal(cr_error_reason(err), "protocol_error");
  reap(pid);
}

static void test_closed_and_garbage(void **state) {
  const char *r = "not json\n";
  pid_t pid = serve_once(r, strlen(r));
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_api_client_ api_client *c = NULL;
  assert_int_equal(api_client_connect(host, false, &c, &err), 0);
  assert_true(api_client_call(c, "system.info", NULL, NULL, NULL, NULL, &err) < 0);
  assert_string_equal(cr_error_reason(err), "protocol_error");
  reap(pid);

  pid = serve_once("", 0);
  api_client_free(TAKE_PTR(c));
  cr_error_free(TAKE_PTR(err));
  assert_int_equal(api_client_connect(host, false, &c, &err), 0);
  assert_true(api_client_call(c, "system.info", NULL, NULL, NULL, NULL, &err) < 0);
  assert_string_equal(cr_error_reason(err), "daemon_unavailable");
  reap(pid);
}

static void test_read_message_timeout(void **state) {
  /* the peer never answers within the timeout: it only answers after EOF
   * of a line we do not send */
  unlink(sock);
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
  assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(l, 4), 0);
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_api_client_ api_client *c = NULL;
  assert_int_equal(api_client_connect(host, false, &c, &err), 0);
  json_t *m = NULL;
  assert_int_equal(api_client_read_message(c, 0, &m, &err), 0);
  assert_null(m);
  assert_false(api_client_pending(c));
  close(l);
}

static void test_no_daemon_no_autostart(void **state) {
  unlink(sock);
  _cleanup_error_ cr_error *err = NULL;
  api_client *c = NULL;
  /* explicit host: never autostarts, even when asked to */
  assert_true(api_client_connect(host, true, &c, &err) < 0);
  assert_null(c);
  assert_string_equal(cr_error_reason(err), "daemon_unavailable");
  cr_error_free(TAKE_PTR(err));
  assert_true(api_client_connect("http://example.com:1234", true, &c, &err) < 0);
  assert_string_equal(cr_error_reason(err), "invalid_argument");
  cr_error_free(TAKE_PTR(err));
  setenv("CLEANROOM_HOST", host, 1);
  assert_true(api_client_connect(NULL, true, &c, &err) < 0);
  assert_string_equal(cr_error_reason(err), "daemon_unavailable");
  unsetenv("CLEANROOM_HOST");
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_result_and_notification),
      cmocka_unit_test(test_error_reason),
      cmocka_unit_test(test_error_without_reason),
      cmocka_unit_test(test_overlong_line),
      cmocka_unit_test(test_closed_and_garbage),
      cmocka_unit_test(test_read_message_timeout),
      cmocka_unit_test(test_no_daemon_no_autostart),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

/* agent_client against a scripted guest on a real unix socket: everything the
 * guest sends is untrusted, so oversized or malformed frames and a wrong
 * protocol version must end the connection cleanly, with every open channel
 * told why, and never crash or hang the host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backend/agent_client.h"
#include "util/error.h"
#include "util/fs.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef enum {
  BAD_OVERSIZED,
  BAD_UNKNOWN_TYPE,
  BAD_VERSION,
  GOOD_EXIT,
  BAD_OK_ON_EXEC,   /* a file operation's end on an exec channel */
  BAD_EXIT_ON_STAT, /* an exec's end on a file channel */
  NO_CREDIT,        /* flow control on, and stdin never taken */
} script;

typedef struct guest {
  int listen_fd;
  script what;
} guest;

static int read_full(int fd, void *buf, size_t n) {
  uint8_t *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

/* Reads one frame; returns its type (payload discarded). */
static int read_frame(int fd, uint32_t *ret_channel) {
  uint8_t hdr[AP_HEADER_SIZE];
  if (read_full(fd, hdr, sizeof(hdr)) < 0) return -1;
  ap_header h;
  const uint8_t *payload;
  uint8_t *buf = malloc(AP_HEADER_SIZE + AP_MAX_PAYLOAD);
  memcpy(buf, hdr, sizeof(hdr));
  uint32_t len = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 |
                 (uint32_t)hdr[3] << 24;
  if (len > AP_MAX_PAYLOAD || read_full(fd, buf + AP_HEADER_SIZE, len) < 0) {
    free(buf);
    return -1;
  }
  long r = ap_frame_parse(buf, AP_HEADER_SIZE + len, AP_MAX_PAYLOAD, &h, &payload);
  free(buf);
  if (r <= 0) return -1;
  if (ret_channel) *ret_channel = h.channel;
  return h.type;
}

static void send_buf(int fd, ap_buf *b) {
  if (write(fd, b->data, b->len) != (ssize_t)b->len) fail_msg("guest write");
}

static void *guest_main(void *arg) {
  guest *g = arg;
  int fd = accept(g->listen_fd, NULL, NULL);
  if (fd < 0) return NULL;
  if (read_frame(fd, NULL) != AP_HELLO) goto out;
  ap_buf b = {0};
  ap_frame_begin(&b, AP_HELLO_REPLY, 0);
  ap_put_u32(&b, AP_T_VERSION, g->what == BAD_VERSION ? 99 : AP_VERSION);
  if (g->what == NO_CREDIT) ap_put_u64(&b, AP_T_WINDOW, 4096);
  ap_frame_end(&b);
  send_buf(fd, &b);
  if (g->what == BAD_VERSION) goto drain;
  uint32_t ch = 0;
  if (read_frame(fd, &ch) != (g->what == BAD_EXIT_ON_STAT ? AP_STAT : AP_EXEC)) goto drain;
  ap_buf_reset(&b);
  if (g->what == BAD_OK_ON_EXEC) {
    ap_put_raw_frame(&b, AP_STDOUT, ch, "partial", 7);
    ap_frame_begin(&b, AP_OK, ch);
    ap_frame_end(&b);
  } else if (g->what == BAD_EXIT_ON_STAT) {
    ap_frame_begin(&b, AP_EXIT, ch);
    ap_put_u32(&b, AP_T_EXIT_CODE, 0);
    ap_frame_end(&b);
  } else if (g->what == NO_CREDIT) {
    goto drain; /* reads what comes, never grants a byte more */
  } else if (g->what == GOOD_EXIT) {
    ap_put_raw_frame(&b, AP_STDOUT, ch, "hi\n", 3);
    ap_frame_begin(&b, AP_EXIT, ch);
    ap_put_u32(&b, AP_T_EXIT_CODE, 7);
    ap_frame_end(&b);
  } else {
    uint8_t hdr[AP_HEADER_SIZE];
    ap_header h = {.len = g->what == BAD_OVERSIZED ? AP_MAX_PAYLOAD + 1 : 0,
                   .type = g->what == BAD_UNKNOWN_TYPE ? 0x7777 : AP_STDOUT,
                   .channel = ch};
    ap_header_encode(hdr, &h);
    b.len = 0;
    ap_put_raw_frame(&b, AP_STDOUT, ch, "partial", 7); /* delivered before the bad frame */
    if (write(fd, b.data, b.len) < 0 || write(fd, hdr, sizeof(hdr)) < 0) goto drain;
    b.len = 0;
  }
  if (b.len) send_buf(fd, &b);
drain:
  ap_buf_free(&b);
  { /* keep the socket open until the host closes it */
    char sink[4096];
    while (read(fd, sink, sizeof(sink)) > 0) {
    }
  }
out:
  close(fd);
  return NULL;
}

typedef struct result {
  uint16_t req; /* the request sent once ready */
  int state_status; /* 1 = not reported */
  char state_msg[256];
  int ready;
  char out[64];
  size_t outlen;
  uint16_t end_type;
  char end_reason[64];
  uint32_t exit_code;
  agent_conn *conn;
  uv_timer_t deadline;
  int timed_out;
  script what;
  size_t queued_at_refusal, queued_after;
  int refusal;
} result;

static void on_frame(agent_conn *c, void *ud, const ap_header *h, const uint8_t *p) {
  result *r = ud;
  if (h->type == AP_STDOUT) {
    size_t n = h->len < sizeof(r->out) - r->outlen - 1 ? h->len : sizeof(r->out) - r->outlen - 1;
    memcpy(r->out + r->outlen, p, n);
    r->outlen += n;
    return;
  }
  r->end_type = h->type;
  ap_field f;
  char *s = NULL;
  if (ap_find(p, h->len, AP_T_REASON, &f) > 0 && ap_field_str(&f, &s) == 0) {
    snprintf(r->end_reason, sizeof(r->end_reason), "%s", s);
    free(s);
  }
  if (ap_find(p, h->len, AP_T_EXIT_CODE, &f) > 0) ap_field_u32(&f, &r->exit_code);
  if (h->type == AP_EXIT) { /* done: close from inside a callback */
    agent_conn_close(r->conn);
    r->conn = NULL;
    uv_timer_stop(&r->deadline);
    uv_close((uv_handle_t *)&r->deadline, NULL);
  }
}

static void on_state(agent_conn *c, void *ud, int status, const char *msg, const uint8_t *hello,
                     size_t n) {
  result *r = ud;
  if (status == 0) {
    r->ready = 1;
    ap_buf b = {0};
    ap_frame_begin(&b, r->req, 0);
    if (r->req == AP_STAT) ap_put_str(&b, AP_T_PATH, "/");
    else ap_put_str(&b, AP_T_ARGV, "true");
    ap_frame_end(&b);
    int ch = agent_request(c, &b, on_frame, r);
    assert_true(ch > 0);
    ap_buf_free(&b);
    if (r->what == NO_CREDIT) {
      /* stdin the guest never takes: queued up to the bound, then refused */
      static uint8_t mib[1 << 20];
      int sr = 0;
      for (int i = 0; i < 200 && sr == 0; i++) {
        r->queued_at_refusal = agent_channel_queued(c, (uint32_t)ch);
        sr = agent_send(c, AP_STDIN, (uint32_t)ch, mib, sizeof(mib));
      }
      r->refusal = sr;
      r->queued_after = agent_channel_queued(c, (uint32_t)ch);
      agent_conn_close(r->conn);
      r->conn = NULL;
      uv_timer_stop(&r->deadline);
      uv_close((uv_handle_t *)&r->deadline, NULL);
    }
    return;
  }
  r->state_status = status;
  snprintf(r->state_msg, sizeof(r->state_msg), "%s", msg ? msg : "");
  agent_conn_close(r->conn);
  r->conn = NULL;
  uv_timer_stop(&r->deadline);
  uv_close((uv_handle_t *)&r->deadline, NULL);
}

static void on_deadline(uv_timer_t *t) {
  result *r = t->data;
  r->timed_out = 1;
  agent_conn_close(r->conn);
  r->conn = NULL;
  uv_close((uv_handle_t *)t, NULL);
}

static void run(script what, result *r) {
  char dir[] = "/tmp/cr-test-agent-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[100]; /* fits sun_path */
  snprintf(path, sizeof(path), "%s/agent.sock", dir);
  guest g = {.what = what};
  g.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
  assert_int_equal(bind(g.listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(g.listen_fd, 1), 0);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, guest_main, &g), 0);

  uv_loop_t loop;
  uv_loop_init(&loop);
  memset(r, 0, sizeof(*r));
  r->what = what;
  r->req = what == BAD_EXIT_ON_STAT ? AP_STAT : AP_EXEC;
  r->state_status = 1;
  uv_timer_init(&loop, &r->deadline);
  r->deadline.data = r;
  uv_timer_start(&r->deadline, on_deadline, 10000, 0);
  r->conn = agent_conn_new(&loop, on_state, r);
  assert_non_null(r->conn);
  assert_int_equal(agent_conn_connect(r->conn, path), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  pthread_join(th, NULL);
  close(g.listen_fd);
  cr_rm_rf(dir);
  assert_false(r->timed_out);
}

static void test_stdin_queue_is_bounded(void **state) {
  result r;
  run(NO_CREDIT, &r);
  assert_true(r.ready);
  assert_int_equal(r.refusal, -E2BIG);
  /* 4096 bytes went out on credit; the rest waits, up to the bound */
  assert_true(r.queued_at_refusal <= AGENT_PENDING_MAX_STDIN);
  assert_true(r.queued_at_refusal + (1 << 20) > AGENT_PENDING_MAX_STDIN);
  assert_int_equal(r.queued_after, r.queued_at_refusal); /* the refused write changed nothing */
}

static void test_good_exchange(void **state) {
  result r;
  run(GOOD_EXIT, &r);
  assert_true(r.ready);
  assert_int_equal(r.end_type, AP_EXIT);
  assert_int_equal(r.exit_code, 7);
  assert_string_equal(r.out, "hi\n");
}

static void test_oversized_frame_drops_the_guest(void **state) {
  result r;
  run(BAD_OVERSIZED, &r);
  assert_true(r.ready);
  assert_string_equal(r.out, "partial"); /* what came before is kept */
  assert_int_equal(r.end_type, AP_ERROR); /* the open channel is told */
  assert_string_equal(r.end_reason, CR_E_AGENT_UNAVAILABLE);
  assert_true(r.state_status < 0);
  assert_non_null(strstr(r.state_msg, "oversized"));
}

static void test_unknown_frame_type_drops_the_guest(void **state) {
  result r;
  run(BAD_UNKNOWN_TYPE, &r);
  assert_int_equal(r.end_type, AP_ERROR);
  assert_true(r.state_status < 0);
  assert_non_null(strstr(r.state_msg, "malformed"));
}

static void test_wrong_version_is_refused(void **state) {
  result r;
  run(BAD_VERSION, &r);
  assert_false(r.ready);
  assert_true(r.state_status < 0);
  assert_non_null(strstr(r.state_msg, "protocol version"));
}

/* Item 3 of issue 11: a wrong terminal frame used to end the channel
 * silently, leaving the execution "running" forever. */
static void test_wrong_terminal_frame_fails_the_operation(void **state) {
  result r;
  run(BAD_OK_ON_EXEC, &r);
  assert_true(r.ready);
  assert_string_equal(r.out, "partial");
  assert_int_equal(r.end_type, AP_ERROR);
  assert_string_equal(r.end_reason, CR_E_AGENT_PROTOCOL);
  assert_true(r.state_status < 0); /* and the guest connection is dropped */
  assert_non_null(strstr(r.state_msg, "frame type 0x82"));

  run(BAD_EXIT_ON_STAT, &r);
  assert_int_equal(r.end_type, AP_ERROR);
  assert_string_equal(r.end_reason, CR_E_AGENT_PROTOCOL);
  assert_true(r.state_status < 0);
  assert_non_null(strstr(r.state_msg, "frame type 0x87"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good_exchange),
      cmocka_unit_test(test_stdin_queue_is_bounded),
      cmocka_unit_test(test_oversized_frame_drops_the_guest),
      cmocka_unit_test(test_unknown_frame_type_drops_the_guest),
      cmocka_unit_test(test_wrong_version_is_refused),
      cmocka_unit_test(test_wrong_terminal_frame_fails_the_operation),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The typed agent API (backend/agent_ops.h): requests encode to exactly the
 * frames the protocol defines, and replies from the guest, which are
 * untrusted, decode into bounded typed events: malformed fields count as
 * absent, an ERROR's reason must be a stable code and its message is cut.
 * The last test drives the API over a real socket against a scripted guest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backend/agent_client.h"
#include "util/error.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- helpers */

static void assert_same_frame(ap_buf *got, ap_buf *want) {
  assert_int_equal(got->len, want->len);
  assert_memory_equal(got->data, want->data, want->len);
  ap_buf_free(got);
  ap_buf_free(want);
}

/* A payload built with the proto's field writers (no header). */
typedef struct payload {
  ap_buf b;
} payload;

static const uint8_t *pl_data(payload *p) { return p->b.data + AP_HEADER_SIZE; }
static size_t pl_len(payload *p) { return p->b.len - AP_HEADER_SIZE; }
static void pl_begin(payload *p) {
  p->b = (ap_buf){0};
  ap_frame_begin(&p->b, AP_OK, 0);
}
static void pl_raw_field(payload *p, uint16_t tag, const void *v, size_t n) {
  ap_put_bytes(&p->b, tag, v, n);
}

/* ---- encoding: the same bytes as the protocol's writers give */

static void test_encode_exec(void **state) {
  const char *argv[] = {"sh", "-c", "echo hi"};
  const char *env[] = {"A=1", "PATH=/bin"};
  agent_exec_req r = {.argv = argv, .argc = 3, .env = env, .envc = 2, .cwd = "/work",
                      .stdin_open = true, .tty = true, .rows = 40, .cols = 120};
  ap_buf got = {0}, want = {0};
  assert_int_equal(agent_enc_exec(&got, &r), 0);
  ap_frame_begin(&want, AP_EXEC, 0);
  ap_put_str(&want, AP_T_ARGV, "sh");
  ap_put_str(&want, AP_T_ARGV, "-c");
  ap_put_str(&want, AP_T_ARGV, "echo hi");
  ap_put_str(&want, AP_T_ENV, "A=1");
  ap_put_str(&want, AP_T_ENV, "PATH=/bin");
  ap_put_str(&want, AP_T_CWD, "/work");
  ap_put_u32(&want, AP_T_FLAGS, AP_F_STDIN | AP_F_TTY);
  ap_put_u32(&want, AP_T_WINSIZE, 40u << 16 | 120);
  ap_frame_end(&want);
  assert_same_frame(&got, &want);

  /* no tty: no WINSIZE, whatever rows and cols say; no cwd: none sent */
  agent_exec_req q = {.argv = argv, .argc = 1, .rows = 40, .cols = 120, .no_chroot = true};
  assert_int_equal(agent_enc_exec(&got, &q), 0);
  ap_frame_begin(&want, AP_EXEC, 0);
  ap_put_str(&want, AP_T_ARGV, "sh");
  ap_put_u32(&want, AP_T_FLAGS, AP_F_NO_CHROOT);
  ap_frame_end(&want);
  assert_same_frame(&got, &want);
}

static void test_encode_exec_too_large(void **state) {
  size_t n = AP_MAX_PAYLOAD + 10;
  char *big = malloc(n + 1);
  assert_non_null(big);
  memset(big, 'x', n);
  big[n] = '\0';
  const char *argv[] = {"echo", big};
  agent_exec_req r = {.argv = argv, .argc = 2};
  ap_buf b = {0};
  assert_int_equal(agent_enc_exec(&b, &r), -EMSGSIZE);
  assert_int_equal(b.len, 0); /* the frame is dropped */
  /* many strings that each fit, together over a frame */
  big[AP_MAX_PAYLOAD / 2] = '\0';
  const char *argv2[] = {"echo", big, big, big};
  agent_exec_req r2 = {.argv = argv2, .argc = 4};
  assert_int_equal(agent_enc_exec(&b, &r2), -EMSGSIZE);
  assert_int_equal(b.len, 0);
  ap_buf_free(&b);
  free(big);
}

static void test_encode_activate(void **state) {
  uint8_t seed[64];
  memset(seed, 7, sizeof(seed));
  /* a sandbox's: clock, seed, hostname, disks, network */
  agent_activate_req r = {.set_time = true, .time_ns = 1234567890123ull, .seed = seed,
                          .seed_len = sizeof(seed), .hostname = "cleanroom-abc",
                          .image_dev = "serial:cr-image", .scratch_dev = "serial:cr-scratch",
                          .net_addr = "10.213.0.2/30", .net_gateway = "10.213.0.1",
                          .net_dns = "10.213.0.1"};
  ap_buf got = {0}, want = {0};
  assert_int_equal(agent_enc_activate(&got, &r), 0);
  ap_frame_begin(&want, AP_ACTIVATE, 0);
  ap_put_u64(&want, AP_T_TIME_NS, 1234567890123ull);
  ap_put_bytes(&want, AP_T_SEED, seed, sizeof(seed));
  ap_put_str(&want, AP_T_HOSTNAME, "cleanroom-abc");
  ap_put_str(&want, AP_T_IMAGE_DEV, "serial:cr-image");
  ap_put_str(&want, AP_T_SCRATCH_DEV, "serial:cr-scratch");
  ap_put_str(&want, AP_T_NET_ADDR, "10.213.0.2/30");
  ap_put_str(&want, AP_T_NET_GATEWAY, "10.213.0.1");
  ap_put_str(&want, AP_T_NET_DNS, "10.213.0.1");
  ap_frame_end(&want);
  assert_same_frame(&got, &want);
  /* a template's: the disks and the NIC up, nothing sandbox-specific */
  agent_activate_req t = {.image_dev = "serial:cr-image", .scratch_dev = "serial:cr-scratch",
                          .net_up = true};
  assert_int_equal(agent_enc_activate(&got, &t), 0);
  ap_frame_begin(&want, AP_ACTIVATE, 0);
  ap_put_str(&want, AP_T_IMAGE_DEV, "serial:cr-image");
  ap_put_str(&want, AP_T_SCRATCH_DEV, "serial:cr-scratch");
  ap_put_u32(&want, AP_T_NET_UP, 1);
  ap_frame_end(&want);
  assert_same_frame(&got, &want);
}

static void test_encode_file_requests(void **state) {
  ap_buf got = {0}, want = {0};
  assert_int_equal(agent_enc_file_read(&got, "/etc/hosts", 5, 100), 0);
  ap_frame_begin(&want, AP_FILE_READ, 0);
  ap_put_str(&want, AP_T_PATH, "/etc/hosts");
  ap_put_u64(&want, AP_T_OFFSET, 5);
  ap_put_u64(&want, AP_T_LENGTH, 100);
  ap_frame_end(&want);
  assert_same_frame(&got, &want);

  assert_int_equal(agent_enc_file_write(&got, "/a/b", 0640, true, true), 0);
  ap_frame_begin(&want, AP_FILE_WRITE, 0);
  ap_put_str(&want, AP_T_PATH, "/a/b");
  ap_put_u32(&want, AP_T_MODE, 0640);
  ap_put_u32(&want, AP_T_FLAGS, AP_F_PARENTS | AP_F_APPEND);
  ap_frame_end(&want);
  assert_same_frame(&got, &want);

  assert_int_equal(agent_enc_list(&got, "/w", 64), 0);
  ap_frame_begin(&want, AP_LIST, 0);
  ap_put_str(&want, AP_T_PATH, "/w");
  ap_put_u32(&want, AP_T_DEPTH, 64);
  ap_frame_end(&want);
  assert_same_frame(&got, &want);

  assert_int_equal(agent_enc_path(&got, AP_STAT, "/x"), 0);
  ap_frame_begin(&want, AP_STAT, 0);
  ap_put_str(&want, AP_T_PATH, "/x");
  ap_frame_end(&want);
  assert_same_frame(&got, &want);

  assert_int_equal(agent_enc_tar_in(&got, "/w", false), 0);
  ap_frame_begin(&want, AP_TAR_IN, 0);
  ap_put_str(&want, AP_T_PATH, "/w");
  ap_put_u32(&want, AP_T_FLAGS, 0);
  ap_frame_end(&want);
  assert_same_frame(&got, &want);

  assert_int_equal(agent_enc_mount(&got, "serial:cr-workspace", "/workspace"), 0);
  ap_frame_begin(&want, AP_MOUNT, 0);
  ap_put_str(&want, AP_T_IMAGE_DEV, "serial:cr-workspace");
  ap_put_str(&want, AP_T_PATH, "/workspace");
  ap_frame_end(&want);
  assert_same_frame(&got, &want);

  assert_int_equal(agent_enc_hello(&got), 0);
  ap_frame_begin(&want, AP_HELLO, 0);
  ap_put_u32(&want, AP_T_VERSION, AP_VERSION);
  ap_put_u32(&want, AP_T_MAX_PAYLOAD, AP_MAX_PAYLOAD);
  ap_frame_end(&want);
  assert_same_frame(&got, &want);
}

/* ---- decoding replies */

static void test_decode_hello(void **state) {
  payload p;
  pl_begin(&p);
  ap_put_u32(&p.b, AP_T_VERSION, 1);
  ap_put_str(&p.b, AP_T_AGENT_VERSION, "0.1.0");
  char kernel[300];
  memset(kernel, 'k', sizeof(kernel) - 1);
  kernel[sizeof(kernel) - 1] = '\0';
  ap_put_str(&p.b, AP_T_KERNEL, kernel);
  ap_put_u64(&p.b, AP_T_WINDOW, 1 << 20);
  ap_put_u64(&p.b, AP_T_UPTIME_NS, 99);
  agent_hello h;
  assert_int_equal(agent_dec_hello(pl_data(&p), pl_len(&p), &h), 0);
  assert_int_equal(h.version, 1);
  assert_int_equal(h.window, 1 << 20);
  assert_int_equal(h.uptime_ns, 99);
  assert_string_equal(h.agent_version, "0.1.0");
  assert_int_equal(strlen(h.kernel), sizeof(h.kernel) - 1); /* cut, not overflowed */
  ap_buf_free(&p.b);

  /* no version, or one of the wrong size: not a hello */
  pl_begin(&p);
  ap_put_u64(&p.b, AP_T_WINDOW, 1 << 20);
  assert_int_equal(agent_dec_hello(pl_data(&p), pl_len(&p), &h), -EPROTO);
  ap_put_u64(&p.b, AP_T_VERSION, 1);
  assert_int_equal(agent_dec_hello(pl_data(&p), pl_len(&p), &h), -EPROTO);
  ap_buf_free(&p.b);

  /* a window of the wrong size: no flow control */
  pl_begin(&p);
  ap_put_u32(&p.b, AP_T_VERSION, 1);
  ap_put_u32(&p.b, AP_T_WINDOW, 4096);
  assert_int_equal(agent_dec_hello(pl_data(&p), pl_len(&p), &h), 0);
  assert_int_equal(h.window, 0);
  ap_buf_free(&p.b);
}

static void test_decode_exit(void **state) {
  payload p;
  agent_event ev;
  pl_begin(&p);
  ap_put_u32(&p.b, AP_T_EXIT_CODE, 3);
  assert_int_equal(agent_dec_event(AP_EXIT, pl_data(&p), pl_len(&p), &ev), 0);
  assert_int_equal(ev.type, AGENT_EV_EXIT);
  assert_true(ev.exit.has_code);
  assert_int_equal(ev.exit.code, 3);
  assert_int_equal(ev.exit.signal, 0);
  assert_false(ev.exit.exec_failed);
  agent_event_clear(&ev);
  ap_buf_free(&p.b);

  pl_begin(&p);
  ap_put_u32(&p.b, AP_T_SIGNAL, 9);
  uint8_t two[2] = {1, 2};
  pl_raw_field(&p, AP_T_EXEC_ERRNO, two, 2); /* wrong size: still "exec failed" */
  assert_int_equal(agent_dec_event(AP_EXIT, pl_data(&p), pl_len(&p), &ev), 0);
  assert_false(ev.exit.has_code);
  assert_int_equal(ev.exit.signal, 9);
  assert_true(ev.exit.exec_failed);
  assert_int_equal(ev.exit.exec_errno, 0);
  agent_event_clear(&ev);
  ap_buf_free(&p.b);

  /* an exit code of the wrong size is absent; a second one does not count */
  pl_begin(&p);
  pl_raw_field(&p, AP_T_EXIT_CODE, two, 2);
  ap_put_u32(&p.b, AP_T_EXIT_CODE, 0);
  assert_int_equal(agent_dec_event(AP_EXIT, pl_data(&p), pl_len(&p), &ev), 0);
  assert_false(ev.exit.has_code);
  agent_event_clear(&ev);
  ap_buf_free(&p.b);
}

/* The agent's timing fields: both or neither, spawn within the total. */
static void test_decode_exit_timing(void **state) {
  payload p;
  agent_event ev;
  pl_begin(&p);
  ap_put_u32(&p.b, AP_T_EXIT_CODE, 0);
  ap_put_u64(&p.b, AP_T_AGENT_NS, 6000000);
  ap_put_u64(&p.b, AP_T_SPAWN_NS, 5500000);
  assert_int_equal(agent_dec_event(AP_EXIT, pl_data(&p), pl_len(&p), &ev), 0);
  assert_true(ev.exit.agent_ns == 6000000 && ev.exit.spawn_ns == 5500000);
  agent_event_clear(&ev);
  ap_buf_free(&p.b);

  /* older agents send none */
  pl_begin(&p);
  ap_put_u32(&p.b, AP_T_EXIT_CODE, 0);
  assert_int_equal(agent_dec_event(AP_EXIT, pl_data(&p), pl_len(&p), &ev), 0);
  assert_true(ev.exit.agent_ns == 0 && ev.exit.spawn_ns == 0);
  agent_event_clear(&ev);
  ap_buf_free(&p.b);

  /* one without the other, a spawn longer than the total, a wrong size:
   * a hostile guest's numbers are dropped, the exit stands */
  uint64_t cases[3][2] = {{6000000, UINT64_MAX}, {UINT64_MAX, 5000}, {1000, 2000}};
  for (int i = 0; i < 3; i++) {
    pl_begin(&p);
    ap_put_u32(&p.b, AP_T_EXIT_CODE, 7);
    if (cases[i][0] != UINT64_MAX) ap_put_u64(&p.b, AP_T_AGENT_NS, cases[i][0]);
    if (cases[i][1] != UINT64_MAX) ap_put_u64(&p.b, AP_T_SPAWN_NS, cases[i][1]);
    assert_int_equal(agent_dec_event(AP_EXIT, pl_data(&p), pl_len(&p), &ev), 0);
    assert_true(ev.exit.has_code && ev.exit.code == 7);
    assert_true(ev.exit.agent_ns == 0 && ev.exit.spawn_ns == 0);
    agent_event_clear(&ev);
    ap_buf_free(&p.b);
  }
  pl_begin(&p);
  ap_put_u32(&p.b, AP_T_AGENT_NS, 6000); /* u32 where a u64 belongs */
  ap_put_u64(&p.b, AP_T_SPAWN_NS, 5000);
  assert_int_equal(agent_dec_event(AP_EXIT, pl_data(&p), pl_len(&p), &ev), 0);
  assert_true(ev.exit.agent_ns == 0 && ev.exit.spawn_ns == 0);
  agent_event_clear(&ev);
  ap_buf_free(&p.b);
}

static void decode_error(payload *p, agent_event *ev) {
  assert_int_equal(agent_dec_event(AP_ERROR, pl_data(p), pl_len(p), ev), 0);
  assert_int_equal(ev->type, AGENT_EV_ERROR);
}

static void test_decode_error_is_bounded(void **state) {
  payload p;
  agent_event ev;
  pl_begin(&p);
  ap_put_str(&p.b, AP_T_REASON, CR_E_FILE_NOT_FOUND);
  ap_put_u32(&p.b, AP_T_ERRNO, ENOENT);
  ap_put_str(&p.b, AP_T_MESSAGE, "/x: No such file or directory");
  decode_error(&p, &ev);
  assert_string_equal(ev.error.reason, CR_E_FILE_NOT_FOUND);
  assert_string_equal(ev.error.message, "/x: No such file or directory");
  assert_int_equal(ev.error.err_no, ENOENT);
  agent_event_clear(&ev);
  ap_buf_free(&p.b);

  /* not a stable code: agent_protocol_error, whatever it said */
  static const char *bad[] = {"File Not Found", "file-not-found", "x\n", "\xc3\xa9t\xc3\xa9",
                              "a_reason_that_is_much_longer_than_any_stable_code_could_ever_be_at_all"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    pl_begin(&p);
    ap_put_str(&p.b, AP_T_REASON, bad[i]);
    decode_error(&p, &ev);
    assert_string_equal(ev.error.reason, CR_E_AGENT_PROTOCOL);
    assert_null(ev.error.message);
    agent_event_clear(&ev);
    ap_buf_free(&p.b);
  }

  /* empty, or with a NUL inside: none (the caller's default applies) */
  pl_begin(&p);
  ap_put_str(&p.b, AP_T_REASON, "");
  pl_raw_field(&p, AP_T_MESSAGE, "a\0b", 3);
  decode_error(&p, &ev);
  assert_null(ev.error.reason);
  assert_null(ev.error.message);
  agent_event_clear(&ev);
  ap_buf_free(&p.b);

  /* a message of nearly a frame: cut at AGENT_MAX_MESSAGE on a character
   * boundary, and marked */
  size_t n = AP_MAX_PAYLOAD - 64;
  char *msg = malloc(n + 1);
  assert_non_null(msg);
  for (size_t i = 0; i + 1 < n; i += 2) msg[i] = '\xc3', msg[i + 1] = '\xa9'; /* é */
  msg[n - (n % 2)] = '\0';
  pl_begin(&p);
  ap_put_str(&p.b, AP_T_MESSAGE, msg);
  assert_int_equal(ap_frame_end(&p.b), 0);
  decode_error(&p, &ev);
  size_t got = strlen(ev.error.message);
  assert_true(got <= AGENT_MAX_MESSAGE);
  assert_true(got > AGENT_MAX_MESSAGE - 8);
  assert_string_equal(ev.error.message + got - 3, "...");
  assert_int_equal((got - 3) % 2, 0); /* no é cut in half */
  agent_event_clear(&ev);
  ap_buf_free(&p.b);
  free(msg);
}

static void test_decode_stat_and_entry(void **state) {
  payload p;
  agent_event ev;
  pl_begin(&p);
  ap_put_str(&p.b, AP_T_NAME, "dir/link");
  ap_put_u32(&p.b, AP_T_FTYPE, AP_FT_SYMLINK);
  ap_put_u32(&p.b, AP_T_MODE, 0777);
  ap_put_u64(&p.b, AP_T_SIZE, 6);
  ap_put_u64(&p.b, AP_T_MTIME_NS, 5000);
  ap_put_str(&p.b, AP_T_TARGET, "target");
  ap_put_str(&p.b, AP_T_NAME, "second/name"); /* the first one decides */
  ap_put_u32(&p.b, 999, 1);                     /* unknown tags are ignored */
  assert_int_equal(agent_dec_event(AP_ENTRY, pl_data(&p), pl_len(&p), &ev), 0);
  assert_int_equal(ev.type, AGENT_EV_ENTRY);
  assert_int_equal(ev.len, pl_len(&p));
  assert_string_equal(ev.stat.name, "dir/link");
  assert_string_equal(ev.stat.target, "target");
  assert_int_equal(ev.stat.have,
                   AGENT_ST_FTYPE | AGENT_ST_MODE | AGENT_ST_SIZE | AGENT_ST_MTIME);
  assert_int_equal(ev.stat.ftype, AGENT_FT_SYMLINK);
  assert_int_equal(ev.stat.mode, 0777);
  assert_int_equal(ev.stat.size, 6);
  assert_int_equal(ev.stat.mtime_ns, 5000);
  agent_event_clear(&ev);
  ap_buf_free(&p.b);

  /* wrong sizes are absent; a truncated field list keeps what came before */
  pl_begin(&p);
  ap_put_u64(&p.b, AP_T_FTYPE, AP_FT_FILE);
  ap_put_u32(&p.b, AP_T_MODE, 0644);
  ap_put_u32(&p.b, AP_T_UID, 1000);
  pl_raw_field(&p, AP_T_NAME, "a\0b", 3);
  assert_int_equal(ap_frame_end(&p.b), 0);
  size_t n = pl_len(&p);
  uint8_t *trunc = malloc(n + 4);
  memcpy(trunc, pl_data(&p), n);
  memcpy(trunc + n, "\x13\x00\x08\x00", 4); /* SIZE, 8 bytes... that never come */
  assert_int_equal(agent_dec_event(AP_STAT_RESULT, trunc, n + 4, &ev), 0);
  assert_int_equal(ev.type, AGENT_EV_STAT);
  assert_int_equal(ev.stat.have, AGENT_ST_MODE | AGENT_ST_UID);
  assert_int_equal(ev.stat.mode, 0644);
  assert_int_equal(ev.stat.uid, 1000);
  assert_null(ev.stat.name);
  assert_null(ev.stat.target);
  agent_event_clear(&ev);
  free(trunc);
  ap_buf_free(&p.b);
}

static void test_decode_other_events(void **state) {
  payload p;
  agent_event ev;
  pl_begin(&p);
  ap_put_u64(&p.b, AP_T_SIZE, 1 << 30);
  assert_int_equal(agent_dec_event(AP_OK, pl_data(&p), pl_len(&p), &ev), 0);
  assert_int_equal(ev.type, AGENT_EV_OK);
  assert_true(ev.has_size);
  assert_int_equal(ev.size, 1 << 30);
  ap_buf_free(&p.b);
  assert_int_equal(agent_dec_event(AP_OK, NULL, 0, &ev), 0);
  assert_false(ev.has_size);

  pl_begin(&p);
  ap_put_u32(&p.b, AP_T_PID, 42);
  assert_int_equal(agent_dec_event(AP_STARTED, pl_data(&p), pl_len(&p), &ev), 0);
  assert_int_equal(ev.type, AGENT_EV_STARTED);
  assert_int_equal(ev.pid, 42);
  ap_buf_free(&p.b);

  /* raw payloads are passed through as they are */
  assert_int_equal(agent_dec_event(AP_STDERR, (const uint8_t *)"oops", 4, &ev), 0);
  assert_int_equal(ev.type, AGENT_EV_STDERR);
  assert_int_equal(ev.len, 4);
  assert_memory_equal(ev.data, "oops", 4);
  assert_int_equal(agent_dec_event(AP_DATA, (const uint8_t *)"", 0, &ev), 0);
  assert_int_equal(ev.type, AGENT_EV_DATA);

  /* requests and control frames are not replies */
  assert_int_equal(agent_dec_event(AP_EXEC, NULL, 0, &ev), -EBADMSG);
  assert_int_equal(agent_dec_event(AP_HELLO_REPLY, NULL, 0, &ev), -EBADMSG);
  assert_int_equal(agent_dec_event(AP_WINDOW, NULL, 0, &ev), -EBADMSG);
}

/* ---- the API over a socket, against a scripted guest */

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

static void send_all(int fd, ap_buf *b) {
  if (b->len && write(fd, b->data, b->len) != (ssize_t)b->len) fail_msg("guest write");
  ap_buf_reset(b);
}

typedef struct guest {
  int fd;
  size_t write_bytes; /* FILE_WRITE data received */
  int write_ended;
} guest;

static void *guest_main(void *arg) {
  guest *g = arg;
  uint8_t *buf = malloc(AP_HEADER_SIZE + AP_MAX_PAYLOAD);
  ap_buf b = {0};
  uint32_t write_ch = 0;
  for (;;) {
    if (read_full(g->fd, buf, AP_HEADER_SIZE) < 0) break;
    uint32_t len = (uint32_t)buf[0] | (uint32_t)buf[1] << 8 | (uint32_t)buf[2] << 16 |
                   (uint32_t)buf[3] << 24;
    if (len > AP_MAX_PAYLOAD || read_full(g->fd, buf + AP_HEADER_SIZE, len) < 0) break;
    ap_header h;
    const uint8_t *pl;
    if (ap_frame_parse(buf, AP_HEADER_SIZE + len, AP_MAX_PAYLOAD, &h, &pl) <= 0) break;
    switch (h.type) {
    case AP_HELLO:
      ap_frame_begin(&b, AP_HELLO_REPLY, 0);
      ap_put_u32(&b, AP_T_VERSION, AP_VERSION);
      ap_put_str(&b, AP_T_AGENT_VERSION, "scripted");
      ap_put_u64(&b, AP_T_WINDOW, AP_WINDOW_INITIAL);
      ap_frame_end(&b);
      break;
    case AP_EXEC:
      ap_frame_begin(&b, AP_STARTED, h.channel);
      ap_put_u32(&b, AP_T_PID, 42);
      ap_frame_end(&b);
      ap_put_raw_frame(&b, AP_STDOUT, h.channel, "hi\n", 3);
      ap_frame_begin(&b, AP_EXIT, h.channel);
      ap_put_u32(&b, AP_T_EXIT_CODE, 3);
      ap_frame_end(&b);
      break;
    case AP_STAT: /* a hostile answer: a wrong size, a NUL in the target */
      ap_frame_begin(&b, AP_STAT_RESULT, h.channel);
      ap_put_u64(&b, AP_T_FTYPE, AP_FT_DIR);
      ap_put_u32(&b, AP_T_MODE, 0755);
      ap_put_bytes(&b, AP_T_TARGET, "x\0y", 3);
      ap_frame_end(&b);
      break;
    case AP_FILE_READ: { /* some data, then an error that is not one */
      ap_put_raw_frame(&b, AP_DATA, h.channel, "abc", 3);
      ap_frame_begin(&b, AP_ERROR, h.channel);
      ap_put_str(&b, AP_T_REASON, "EVERYTHING IS FINE");
      static char msg[64 * 1024];
      memset(msg, 'm', sizeof(msg) - 1);
      ap_put_str(&b, AP_T_MESSAGE, msg);
      ap_frame_end(&b);
      break;
    }
    case AP_FILE_WRITE:
      write_ch = h.channel;
      break;
    case AP_DATA:
      if (h.channel == write_ch) g->write_bytes += h.len;
      break;
    case AP_DATA_END:
      if (h.channel != write_ch) break;
      g->write_ended++;
      ap_frame_begin(&b, AP_OK, h.channel);
      ap_put_u64(&b, AP_T_SIZE, g->write_bytes);
      ap_frame_end(&b);
      break;
    case AP_ACTIVATE: /* answered with something that is no answer */
      ap_put_raw_frame(&b, AP_STDOUT, 0, "??", 2);
      break;
    default:
      break;
    }
    send_all(g->fd, &b);
  }
  ap_buf_free(&b);
  free(buf);
  return NULL;
}

typedef struct host {
  agent_conn *conn;
  uv_timer_t deadline;
  int timed_out, ready, pending;
  const agent_hello *hello_seen;
  char agent_version[64];
  /* exec */
  uint32_t pid;
  char out[16];
  int exit_code;
  /* stat */
  unsigned stat_have;
  uint32_t stat_mode;
  int stat_target_null;
  /* read */
  size_t read_bytes;
  char read_reason[80];
  size_t read_msg_len;
  /* write */
  uint64_t write_size;
  /* activate */
  char act_reason[80];
} host;

static void one_done(host *h) {
  if (h->pending <= 0 || --h->pending > 0) return;
  agent_conn_close(h->conn);
  h->conn = NULL;
  uv_timer_stop(&h->deadline);
  uv_close((uv_handle_t *)&h->deadline, NULL);
}

static void on_exec(void *ud, const agent_event *ev) {
  host *h = ud;
  if (ev->type == AGENT_EV_STARTED) h->pid = ev->pid;
  if (ev->type == AGENT_EV_STDOUT) memcpy(h->out, ev->data, ev->len < 15 ? ev->len : 15);
  if (ev->type == AGENT_EV_EXIT) {
    h->exit_code = ev->exit.has_code ? (int)ev->exit.code : -1;
    one_done(h);
  }
  if (ev->type == AGENT_EV_ERROR) fail_msg("exec failed: %s", ev->error.message);
}

static void on_stat(void *ud, const agent_event *ev) {
  host *h = ud;
  assert_int_equal(ev->type, AGENT_EV_STAT);
  h->stat_have = ev->stat.have;
  h->stat_mode = ev->stat.mode;
  h->stat_target_null = ev->stat.target == NULL;
  one_done(h);
}

static void on_read(void *ud, const agent_event *ev) {
  host *h = ud;
  if (ev->type == AGENT_EV_DATA) h->read_bytes += ev->len;
  if (ev->type == AGENT_EV_ERROR) {
    snprintf(h->read_reason, sizeof(h->read_reason), "%s", ev->error.reason);
    h->read_msg_len = ev->error.message ? strlen(ev->error.message) : 0;
    one_done(h);
  }
}

static void on_write(void *ud, const agent_event *ev) {
  host *h = ud;
  assert_int_equal(ev->type, AGENT_EV_OK);
  h->write_size = ev->size;
  one_done(h);
}

static void on_activate(void *ud, const agent_event *ev) {
  host *h = ud;
  assert_int_equal(ev->type, AGENT_EV_ERROR);
  snprintf(h->act_reason, sizeof(h->act_reason), "%s", ev->error.reason);
  one_done(h);
}

static uint8_t wdata[300 * 1024];

static void on_state(agent_conn *c, void *ud, int status, const char *msg, const uint8_t *hello,
                     size_t n) {
  host *h = ud;
  if (status < 0) {
    if (h->conn) fail_msg("connection lost: %s", msg);
    return;
  }
  h->ready = 1;
  h->hello_seen = agent_conn_hello(c);
  if (h->hello_seen)
    snprintf(h->agent_version, sizeof(h->agent_version), "%s", h->hello_seen->agent_version);
  const char *argv[] = {"echo", "hi"};
  agent_exec_req x = {.argv = argv, .argc = 2};
  h->pending = 5;
  assert_true(agent_exec_start(c, &x, on_exec, h) > 0);
  assert_true(agent_file_stat(c, "/", on_stat, h) > 0);
  assert_true(agent_file_read(c, "/f", 0, 0, on_read, h) > 0);
  memset(wdata, 'w', sizeof(wdata));
  assert_true(agent_file_write(c, "/g", 0644, false, false, wdata, sizeof(wdata), on_write, h) > 0);
  agent_activate_req a = {.hostname = "h"};
  assert_int_equal(agent_activate(c, &a, on_activate, h), 0);
  assert_int_equal(agent_activate(c, &a, on_activate, h), -EBUSY); /* one at a time */
}

static void on_deadline(uv_timer_t *t) {
  host *h = t->data;
  h->timed_out = 1;
  agent_conn_close(h->conn);
  h->conn = NULL;
  uv_close((uv_handle_t *)t, NULL);
}

static void test_api_against_a_scripted_guest(void **state) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  guest g = {.fd = sv[1]};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, guest_main, &g), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  host h = {0};
  uv_timer_init(&loop, &h.deadline);
  h.deadline.data = &h;
  uv_timer_start(&h.deadline, on_deadline, 20000, 0);
  h.conn = agent_conn_new(&loop, on_state, &h);
  assert_non_null(h.conn);
  assert_null(agent_conn_hello(h.conn)); /* not before the handshake */
  assert_int_equal(agent_conn_open(h.conn, sv[0]), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  shutdown(sv[1], SHUT_RDWR);
  pthread_join(th, NULL);
  close(sv[1]);
  assert_false(h.timed_out);
  assert_true(h.ready);
  assert_non_null(h.hello_seen);
  assert_string_equal(h.agent_version, "scripted");
  /* exec: typed events in order */
  assert_int_equal(h.pid, 42);
  assert_string_equal(h.out, "hi\n");
  assert_int_equal(h.exit_code, 3);
  /* stat: the malformed fields are absent, the good one is there */
  assert_int_equal(h.stat_have, AGENT_ST_MODE);
  assert_int_equal(h.stat_mode, 0755);
  assert_true(h.stat_target_null);
  /* read: the data, then an error whose reason was no code and whose 64 KiB
   * message was cut */
  assert_int_equal(h.read_bytes, 3);
  assert_string_equal(h.read_reason, CR_E_AGENT_PROTOCOL);
  assert_true(h.read_msg_len > 0 && h.read_msg_len <= AGENT_MAX_MESSAGE);
  /* write: all the data (beyond one chunk and within the window), then its
   * end, once */
  assert_int_equal(g.write_bytes, sizeof(wdata));
  assert_int_equal(g.write_ended, 1);
  assert_int_equal(h.write_size, sizeof(wdata));
  /* activate answered with something else: an error, with a clear reason */
  assert_string_equal(h.act_reason, CR_E_AGENT_PROTOCOL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_encode_exec),
      cmocka_unit_test(test_encode_exec_too_large),
      cmocka_unit_test(test_encode_activate),
      cmocka_unit_test(test_encode_file_requests),
      cmocka_unit_test(test_decode_hello),
      cmocka_unit_test(test_decode_exit),
      cmocka_unit_test(test_decode_exit_timing),
      cmocka_unit_test(test_decode_error_is_bounded),
      cmocka_unit_test(test_decode_stat_and_entry),
      cmocka_unit_test(test_decode_other_events),
      cmocka_unit_test(test_api_against_a_scripted_guest),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

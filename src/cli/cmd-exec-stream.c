/* The streaming loop shared by `cleanroom exec` and `cleanroom execution
 * attach`.
 *
 * The socket and stdin are polled together: stdin is forwarded in chunks
 * (execution.write, base64) with a few writes in flight at most, so a fast
 * producer cannot outrun the daemon; output notifications are written to
 * our stdout/stderr unmodified. SIGINT once cancels the command (TERM),
 * twice detaches. */
#include "cli/cmd-exec-stream.h"
#include "util/base64.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define STDIN_CHUNK (48 * 1024)
#define MAX_WRITES_IN_FLIGHT 4

static volatile sig_atomic_t interrupts, winch;
static int sigpipe_r = -1, sigpipe_w = -1;

static void on_signal(int sig) {
  int saved = errno;
  if (sig == SIGWINCH) winch = 1;
  else interrupts++;
  if (sigpipe_w >= 0) (void)!write(sigpipe_w, "x", 1);
  errno = saved;
}

void exec_stream_ignore_sigpipe(void) {
  struct sigaction ign = {.sa_handler = SIG_IGN};
  sigaction(SIGPIPE, &ign, NULL);
}

int exec_stream_catch_signals(void) {
  int sp[2];
  if (pipe2(sp, O_CLOEXEC | O_NONBLOCK) < 0) return cli_failf(CR_E_INTERNAL, "pipe: %m");
  sigpipe_r = sp[0];
  sigpipe_w = sp[1];
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGWINCH, &sa, NULL);
  return 0;
}

bool exec_stream_winsize(unsigned *rows, unsigned *cols) {
  struct winsize ws;
  if ((ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0 && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0) ||
      !ws.ws_row || !ws.ws_col)
    return false;
  *rows = ws.ws_row;
  *cols = ws.ws_col;
  return true;
}

static void write_all(int fd, const unsigned char *p, size_t n, bool *broken) {
  while (n > 0 && !*broken) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        (void)poll(&pf, 1, -1);
        continue;
      }
      *broken = true; /* EPIPE and friends: drop the rest of this stream */
      return;
    }
    p += w;
    n -= (size_t)w;
  }
}

void exec_stream_on_notification(const char *method, json_t *params, void *ud) {
  exec_stream *x = ud;
  if (!strcmp(method, "sandbox.progress")) {
    if (x->progress) {
      const char *msg = cli_json_str(params, "message", "");
      fprintf(stderr, "cleanroom: %s%s%s\n", cli_json_str(params, "phase", ""), *msg ? ": " : "",
              msg);
    }
    return;
  }
  const char *eid = cli_json_str(params, "execution_id", NULL);
  if (x->exec_id && eid && strcmp(eid, x->exec_id) != 0) return;
  if (!strcmp(method, "execution.output")) {
    const char *stream = cli_json_str(params, "stream", "stdout");
    json_t *d = json_object_get(params, "data");
    uint8_t *buf = NULL;
    size_t n = 0;
    if (!json_is_string(d) ||
        cr_base64_decode(json_string_value(d), json_string_length(d), &buf, &n) < 0)
      return;
    if (!strcmp(stream, "stderr"))
      write_all(STDERR_FILENO, buf, n, &x->stderr_broken);
    else
      write_all(STDOUT_FILENO, buf, n, &x->stdout_broken);
    free(buf);
  } else if (!strcmp(method, "execution.exit")) {
    json_t *e = json_object_get(params, "execution");
    json_decref(x->final);
    x->final = json_incref(e ? e : params);
  }
}

static int signal_number(json_t *sig) {
  if (json_is_integer(sig)) return (int)json_integer_value(sig);
  const char *s = json_string_value(sig);
  if (!s) return 0;
  if (!strncmp(s, "SIG", 3)) s += 3;
  static const struct {
    const char *name;
    int num;
  } names[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"ILL", SIGILL},
               {"TRAP", SIGTRAP}, {"ABRT", SIGABRT}, {"BUS", SIGBUS},   {"FPE", SIGFPE},
               {"KILL", SIGKILL}, {"USR1", SIGUSR1}, {"SEGV", SIGSEGV}, {"USR2", SIGUSR2},
               {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM}, {"XCPU", SIGXCPU},
               {"XFSZ", SIGXFSZ}, {"SYS", SIGSYS}};
  for (size_t i = 0; i < ELEMENTSOF(names); i++)
    if (!strcmp(s, names[i].name)) return names[i].num;
  int64_t n;
  return cli_parse_int(s, 1, 127, &n) == 0 ? (int)n : 0;
}

int exec_stream_exit_status(json_t *e, const char *timeout_opt) {
  const char *state = cli_json_str(e, "state", "");
  if (json_is_true(json_object_get(e, "timed_out"))) {
    fprintf(stderr, "cleanroom: execution_timeout: the command did not finish within %s and was killed\n",
            timeout_opt ? timeout_opt : "its timeout");
    return EXEC_STREAM_EXIT_TIMEOUT;
  }
  json_t *code = json_object_get(e, "exit_code");
  int sig = signal_number(json_object_get(e, "signal"));
  if (!strcmp(state, "failed")) {
    const char *reason = cli_json_str(e, "reason", CR_E_INTERNAL);
    const char *msg = cli_json_str(e, "message", "the execution failed");
    fprintf(stderr, "cleanroom: %s: %s\n", reason, msg);
    if (!strcmp(reason, CR_E_COMMAND_NOT_FOUND)) return 127;
    if (json_is_integer(code)) return (int)(json_integer_value(code) & 0xff);
    return CLI_EXIT_FAILURE;
  }
  if (sig > 0) return 128 + sig;
  if (json_is_integer(code)) return (int)(json_integer_value(code) & 0xff);
  fprintf(stderr, "cleanroom: protocol_error: the daemon reported no exit status\n");
  return CLI_EXIT_FAILURE;
}

/* One message from the socket: a notification or a response to one of our
 * async requests (stdin writes, cancel). */
static void handle_message(exec_stream *x, json_t *m, json_int_t *write_ids, int *n_writes,
                           bool *stdin_open) {
  const char *method = cli_json_str(m, "method", NULL);
  json_t *id = json_object_get(m, "id");
  if (method && !id) {
    exec_stream_on_notification(method, json_object_get(m, "params"), x);
    return;
  }
  if (!json_is_integer(id)) return;
  for (int i = 0; i < *n_writes; i++) {
    if (write_ids[i] != json_integer_value(id)) continue;
    write_ids[i] = write_ids[--*n_writes];
    /* the command closed its stdin, or never had one (attach) */
    if (json_object_get(m, "error")) *stdin_open = false;
    return;
  }
}

int exec_stream_run(exec_stream *x, const char *sid, bool stdin_open, const char *timeout_opt) {
  api_client *c = x->c;
  _cleanup_error_ cr_error *err = NULL;
  json_int_t write_ids[MAX_WRITES_IN_FLIGHT];
  int n_writes = 0;
  int handled = 0;
  int r;
  bool eof_sent = !stdin_open;
  unsigned char *chunk = malloc(STDIN_CHUNK);
  if (!chunk || !x->exec_id) {
    free(chunk);
    return cli_failf(CR_E_INTERNAL, "out of memory");
  }

  while (!x->final) {
    if (interrupts > handled) {
      handled++;
      if (handled == 1) {
        json_int_t ignored;
        if (api_client_request_async(c, "execution.cancel",
                                     json_pack("{s:s,s:s}", "execution_id", x->exec_id, "signal",
                                               "TERM"),
                                     &ignored, &err) < 0)
          break;
      } else {
        fprintf(stderr,
                "cleanroom: detached; execution %s keeps running in sandbox %s "
                "(cleanroom execution attach %s; cleanroom execution inspect %s)\n",
                x->exec_id, sid, x->exec_id, x->exec_id);
        free(chunk);
        return EXEC_STREAM_EXIT_DETACHED;
      }
    }
    if (api_client_pending(c)) {
      _cleanup_json_ json_t *m = NULL;
      r = api_client_read_message(c, 0, &m, &err);
      if (r < 0) break;
      if (r > 0) handle_message(x, m, write_ids, &n_writes, &stdin_open);
      continue;
    }
    /* stdin_open turned false by a failed write: stop reading, no eof needed */
    if (!stdin_open) eof_sent = true;
    struct pollfd pf[3] = {
        {.fd = api_client_fd(c), .events = POLLIN},
        {.fd = sigpipe_r, .events = POLLIN},
        {.fd = -1, .events = POLLIN},
    };
    if (!eof_sent && n_writes < MAX_WRITES_IN_FLIGHT) pf[2].fd = STDIN_FILENO;
    int pr = poll(pf, 3, -1);
    if (pr < 0) {
      if (errno == EINTR) continue;
      cr_error_set(&err, CR_E_INTERNAL, errno, "poll");
      break;
    }
    if (pf[1].fd >= 0 && pf[1].revents) {
      char drain[16];
      while (read(sigpipe_r, drain, sizeof(drain)) > 0) {
      }
    }
    unsigned rows, cols;
    if (winch && x->tty) {
      winch = 0;
      json_int_t ignored; /* a failure (ended meanwhile) changes nothing */
      if (exec_stream_winsize(&rows, &cols) &&
          api_client_request_async(c, "execution.resize",
                                   json_pack("{s:s, s:i, s:i}", "execution_id", x->exec_id,
                                             "rows", (int)rows, "cols", (int)cols),
                                   &ignored, &err) < 0)
        break;
    }
    if (pf[0].revents) {
      _cleanup_json_ json_t *m = NULL;
      r = api_client_read_message(c, 0, &m, &err);
      if (r < 0) break;
      if (r > 0) handle_message(x, m, write_ids, &n_writes, &stdin_open);
    }
    if (pf[2].fd >= 0 && pf[2].revents) {
      ssize_t n = read(STDIN_FILENO, chunk, STDIN_CHUNK);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      json_t *wp;
      if (n > 0) {
        _cleanup_free_ char *b = cr_base64_encode(chunk, (size_t)n);
        if (!b) {
          cr_error_set(&err, CR_E_INTERNAL, ENOMEM, "stdin");
          break;
        }
        wp = json_pack("{s:s,s:s}", "execution_id", x->exec_id, "data", b);
      } else {
        /* EOF, or an unreadable stdin: the command sees end of input */
        wp = json_pack("{s:s,s:b}", "execution_id", x->exec_id, "eof", 1);
        eof_sent = true;
      }
      json_int_t id;
      if (api_client_request_async(c, "execution.write", wp, &id, &err) < 0) break;
      write_ids[n_writes++] = id;
    }
  }
  free(chunk);
  if (!x->final) {
    cr_error_wrap(&err, "execution %s", x->exec_id);
    return cli_fail(err);
  }
  return exec_stream_exit_status(x->final, timeout_opt);
}

void exec_stream_done(exec_stream *x) {
  if (!x) return;
  free(x->exec_id);
  x->exec_id = NULL;
  json_decref(x->final);
  x->final = NULL;
}

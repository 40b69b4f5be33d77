/* cleanroom exec: run a command in a sandbox, streaming stdin/stdout/stderr,
 * and exit with the command's exit code.
 *
 * The socket and stdin are polled together: stdin is forwarded in chunks
 * (execution.write, base64) with a few writes in flight at most, so a fast
 * producer cannot outrun the daemon; output notifications are written to
 * our stdout/stderr unmodified. SIGINT once cancels the command (TERM),
 * twice detaches. */
#include "cli/cmd-sandbox-common.h"
#include "util/base64.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define STDIN_CHUNK (48 * 1024)
#define MAX_WRITES_IN_FLIGHT 4
#define EXIT_TIMEOUT 124
#define EXIT_DETACHED 130

static void help(FILE *f) {
  fprintf(f,
          "Usage: cleanroom exec [options] -- COMMAND [ARG...]\n\n"
          "Run COMMAND in a sandbox and exit with its exit code (128+N when it was\n"
          "killed by signal N). Without --in a new sandbox is created from the image\n"
          "and stays ready afterwards (its id: --print-sandbox-id or 'sandbox ls').\n"
          "Stdin is forwarded when it is not a terminal; stdout and stderr are\n"
          "passed through unmodified. Ctrl-C cancels the command (SIGTERM in the\n"
          "guest); a second Ctrl-C detaches and leaves it running.\n\n"
          "Options:\n"
          "  --in ID               run in an existing sandbox\n"
          "  --rm                  remove the sandbox exec created when the command ends\n"
          "  --image REF           image for a new sandbox (default: the policy's\n"
          "                        sandbox.image.ref, else $CLEANROOM_IMAGE or %s)\n"
          "  --policy FILE         policy for a new sandbox (default: cleanroom.yaml, then\n"
          "                        .buildkite/cleanroom.yaml, at the repository root)\n"
          "  --vcpus N             virtual CPUs of a new sandbox\n"
          "  --memory SIZE         memory of a new sandbox (MiB, or 1GiB style)\n"
          "  --env K=V             environment variable (repeatable)\n"
          "  --cwd DIR             working directory in the guest\n"
          "  --timeout DURATION    kill the command after DURATION (30s, 5m, 1h30m, 500ms);\n"
          "                        exit status 124\n"
          "  --print-sandbox-id    print sandbox_id=<id> on stderr\n"
          "  --progress            show sandbox boot progress on stderr\n"
          "  --host HOST           daemon socket (unix:/path)\n"
          "  -h, --help            show this help\n\n"
          "Exit status: the command's own, 124 on --timeout, 125 when cleanroom itself\n"
          "failed, 127 when the command was not found, 130 when detached.\n",
          CLI_DEFAULT_IMAGE);
}

static volatile sig_atomic_t interrupts;
static int sigpipe_w = -1;

static void on_signal(int sig) {
  int saved = errno;
  interrupts++;
  if (sigpipe_w >= 0) (void)!write(sigpipe_w, "x", 1);
  errno = saved;
}

typedef struct exec_ctx {
  api_client *c;
  char *exec_id;
  json_t *final; /* the Execution from execution.exit */
  bool stdout_broken, stderr_broken;
  bool progress;
} exec_ctx;

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

static void on_notification(const char *method, json_t *params, void *ud) {
  exec_ctx *x = ud;
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

/* Maps the final Execution to our exit status (and explains failures). */
static int exit_status(json_t *e, const char *timeout_opt) {
  const char *state = cli_json_str(e, "state", "");
  if (json_is_true(json_object_get(e, "timed_out"))) {
    fprintf(stderr, "cleanroom: execution_timeout: the command did not finish within %s and was killed\n",
            timeout_opt ? timeout_opt : "its timeout");
    return EXIT_TIMEOUT;
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

static void remove_sandbox(api_client *c, const char *sid) {
  _cleanup_error_ cr_error *err = NULL;
  if (api_client_call(c, "sandbox.terminate", json_pack("{s:s}", "id", sid), NULL, NULL, NULL,
                      &err) < 0) {
    cr_error_wrap(&err, "removing sandbox %s", sid);
    cli_fail(err);
  }
}

/* One message from the socket: a notification or a response to one of our
 * async requests (stdin writes, cancel). */
static void handle_message(exec_ctx *x, json_t *m, json_int_t *write_ids, int *n_writes,
                           bool *stdin_open) {
  const char *method = cli_json_str(m, "method", NULL);
  json_t *id = json_object_get(m, "id");
  if (method && !id) {
    on_notification(method, json_object_get(m, "params"), x);
    return;
  }
  if (!json_is_integer(id)) return;
  for (int i = 0; i < *n_writes; i++) {
    if (write_ids[i] != json_integer_value(id)) continue;
    write_ids[i] = write_ids[--*n_writes];
    if (json_object_get(m, "error")) *stdin_open = false; /* the command closed its stdin */
    return;
  }
}

int cmd_exec(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  enum {
    O_IN = 1000, O_RM, O_IMAGE, O_PRINT_ID, O_ENV, O_CWD, O_TIMEOUT, O_HOST, O_PROGRESS,
    O_VCPUS, O_MEMORY, O_POLICY,
  };
  static const struct option opts[] = {
      {"in", required_argument, NULL, O_IN},
      {"rm", no_argument, NULL, O_RM},
      {"image", required_argument, NULL, O_IMAGE},
      {"print-sandbox-id", no_argument, NULL, O_PRINT_ID},
      {"env", required_argument, NULL, O_ENV},
      {"cwd", required_argument, NULL, O_CWD},
      {"timeout", required_argument, NULL, O_TIMEOUT},
      {"host", required_argument, NULL, O_HOST},
      {"progress", no_argument, NULL, O_PROGRESS},
      {"vcpus", required_argument, NULL, O_VCPUS},
      {"memory", required_argument, NULL, O_MEMORY},
      {"policy", required_argument, NULL, O_POLICY},
      {0},
  };
  const char *in = NULL, *image = NULL, *cwd = NULL, *host = NULL, *timeout_opt = NULL;
  const char *policy_path = NULL;
  bool rm = false, print_id = false;
  int64_t timeout_ms = 0, vcpus = 0, mem = 0;
  _cleanup_json_ json_t *env = json_array();
  exec_ctx x = {0};
  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    switch (o) {
    case O_IN: in = optarg; break;
    case O_RM: rm = true; break;
    case O_IMAGE: image = optarg; break;
    case O_POLICY: policy_path = optarg; break;
    case O_PRINT_ID: print_id = true; break;
    case O_ENV:
      if (!strchr(optarg, '=') || optarg[0] == '=')
        return cli_usage_error(NULL, "--env wants K=V, got '%s'", optarg);
      json_array_append_new(env, json_string(optarg));
      break;
    case O_CWD: cwd = optarg; break;
    case O_TIMEOUT:
      if (cli_parse_duration_ms(optarg, &timeout_ms) < 0)
        return cli_usage_error(NULL,
                               "--timeout wants a duration like 30s, 5m, 1h30m or 500ms, got '%s'",
                               optarg);
      timeout_opt = optarg;
      break;
    case O_HOST: host = optarg; break;
    case O_PROGRESS: x.progress = true; break;
    case O_VCPUS:
      if (cli_opt_vcpus(optarg, &vcpus)) return CLI_EXIT_USAGE;
      break;
    case O_MEMORY:
      if (cli_opt_memory(optarg, &mem)) return CLI_EXIT_USAGE;
      break;
    default: return cli_usage_error(help, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  if (optind >= argc)
    return cli_usage_error(NULL, "no command given; usage: cleanroom exec "
                                 "[options] -- COMMAND [ARG...]");
  if (in && rm)
    return cli_usage_error(NULL, "--rm removes only a sandbox exec creates; "
                                 "use 'cleanroom sandbox rm %s' for an existing one",
                           in);
  if (in && (image || vcpus || mem || policy_path))
    return cli_usage_error(NULL, "--image, --policy, --vcpus and --memory apply to a new "
                                 "sandbox, not with --in");
  _cleanup_json_ json_t *cmd = json_array();
  for (int i = optind; i < argc; i++) json_array_append_new(cmd, json_string(argv[i]));

  struct sigaction ign = {.sa_handler = SIG_IGN};
  sigaction(SIGPIPE, &ign, NULL);

  _cleanup_api_client_ api_client *c = NULL;
  int r = cli_connect(host, &c);
  if (r) return r;
  x.c = c;
  _cleanup_error_ cr_error *err = NULL;

  /* The sandbox. */
  _cleanup_free_ char *sid = NULL;
  if (in) {
    sid = strdup(in);
  } else {
    json_t *p = NULL;
    r = cli_sandbox_create_params(policy_path, image, vcpus, mem, &p);
    if (r) return r;
    _cleanup_json_ json_t *sb = NULL;
    if (api_client_call(c, "sandbox.create", p, on_notification, &x, &sb, &err) < 0)
      return cli_fail(err);
    sid = strdup(cli_json_str(sb, "id", ""));
  }
  if (!sid) return cli_failf(CR_E_INTERNAL, "out of memory");
  if (print_id) fprintf(stderr, "sandbox_id=%s\n", sid);

  /* Stdin: forwarded unless it is a terminal (or closed). */
  bool stdin_open = !isatty(STDIN_FILENO) && fcntl(STDIN_FILENO, F_GETFD) >= 0;

  /* Signals: first SIGINT cancels, second detaches. */
  int sp[2];
  if (pipe2(sp, O_CLOEXEC | O_NONBLOCK) < 0) return cli_failf(CR_E_INTERNAL, "pipe: %m");
  sigpipe_w = sp[1];
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  json_t *p = json_pack("{s:s,s:O,s:b,s:b}", "sandbox_id", sid, "argv", cmd, "stdin", stdin_open,
                        "attach", 1);
  if (json_array_size(env)) json_object_set(p, "env", env);
  if (cwd) json_object_set_new(p, "cwd", json_string(cwd));
  if (timeout_ms) json_object_set_new(p, "timeout_ms", json_integer(timeout_ms));
  _cleanup_json_ json_t *created = NULL;
  if (api_client_call(c, "execution.create", p, on_notification, &x, &created, &err) < 0) {
    r = cli_fail(err);
    if (rm) remove_sandbox(c, sid);
    return r;
  }
  x.exec_id = strdup(cli_json_str(created, "execution_id", ""));

  json_int_t write_ids[MAX_WRITES_IN_FLIGHT];
  int n_writes = 0;
  int handled = 0;
  bool eof_sent = !stdin_open;
  unsigned char *chunk = malloc(STDIN_CHUNK);
  if (!chunk || !x.exec_id) return cli_failf(CR_E_INTERNAL, "out of memory");

  while (!x.final) {
    if (interrupts > handled) {
      handled++;
      if (handled == 1) {
        json_int_t ignored;
        if (api_client_request_async(c, "execution.cancel",
                                     json_pack("{s:s,s:s}", "execution_id", x.exec_id, "signal",
                                               "TERM"),
                                     &ignored, &err) < 0)
          break;
      } else {
        fprintf(stderr,
                "cleanroom: detached; execution %s keeps running in sandbox %s "
                "(cleanroom execution inspect %s)\n",
                x.exec_id, sid, x.exec_id);
        free(chunk);
        free(x.exec_id);
        return EXIT_DETACHED;
      }
    }
    if (api_client_pending(c)) {
      _cleanup_json_ json_t *m = NULL;
      r = api_client_read_message(c, 0, &m, &err);
      if (r < 0) break;
      if (r > 0) handle_message(&x, m, write_ids, &n_writes, &stdin_open);
      continue;
    }
    /* stdin_open turned false by a failed write: stop reading, no eof needed */
    if (!stdin_open) eof_sent = true;
    struct pollfd pf[3] = {
        {.fd = api_client_fd(c), .events = POLLIN},
        {.fd = sp[0], .events = POLLIN},
        {.fd = -1, .events = POLLIN},
    };
    if (!eof_sent && n_writes < MAX_WRITES_IN_FLIGHT) pf[2].fd = STDIN_FILENO;
    int pr = poll(pf, 3, -1);
    if (pr < 0) {
      if (errno == EINTR) continue;
      cr_error_set(&err, CR_E_INTERNAL, errno, "poll");
      break;
    }
    if (pf[1].revents) {
      char drain[16];
      while (read(sp[0], drain, sizeof(drain)) > 0) {
      }
    }
    if (pf[0].revents) {
      _cleanup_json_ json_t *m = NULL;
      r = api_client_read_message(c, 0, &m, &err);
      if (r < 0) break;
      if (r > 0) handle_message(&x, m, write_ids, &n_writes, &stdin_open);
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
        wp = json_pack("{s:s,s:s}", "execution_id", x.exec_id, "data", b);
      } else {
        /* EOF, or an unreadable stdin: the command sees end of input */
        wp = json_pack("{s:s,s:b}", "execution_id", x.exec_id, "eof", 1);
        eof_sent = true;
      }
      json_int_t id;
      if (api_client_request_async(c, "execution.write", wp, &id, &err) < 0) break;
      write_ids[n_writes++] = id;
    }
  }
  free(chunk);
  if (!x.final) {
    cr_error_wrap(&err, "execution %s", x.exec_id);
    r = cli_fail(err);
    free(x.exec_id);
    return r;
  }
  int status = exit_status(x.final, timeout_opt);
  json_decref(x.final);
  free(x.exec_id);
  /* no cancellation while we clean up */
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  if (rm) remove_sandbox(c, sid);
  return status;
}

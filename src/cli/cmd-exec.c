/* cleanroom exec: run a command in a sandbox, streaming stdin/stdout/stderr,
 * and exit with the command's exit code; cleanroom console: the same with a
 * pseudo-terminal in the guest (default command sh), our terminal in raw
 * mode and its size changes sent on. The streaming loop (stdin forwarding,
 * output pass-through, Ctrl-C handling) is shared with `execution attach`
 * in cmd-exec-stream.c. */
#include "cli/cmd-exec-stream.h"
#include "cli/cmd-workspace.h"

#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static void help(FILE *f) {
  fprintf(f,
          "Usage: cleanroom exec [options] -- COMMAND [ARG...]\n\n"
          "Run COMMAND in a sandbox and exit with its exit code (128+N when it was\n"
          "killed by signal N). Without --in a new sandbox is created from the image\n"
          "and stays ready afterwards (its id: --print-sandbox-id or 'sandbox ls').\n"
          "Stdin is forwarded when it is not a terminal; stdout and stderr are\n"
          "passed through unmodified. Ctrl-C cancels the command (SIGTERM in the\n"
          "guest); a second Ctrl-C detaches and leaves it running ('cleanroom\n"
          "execution attach ID' re-attaches).\n\n"
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
          "  --repo-url URL        check out URL (at --ref, default its HEAD) into the new\n"
          "                        sandbox's workspace. Inside a git checkout this is the\n"
          "                        default: the policy's repository.remote (origin) at the\n"
          "                        remote branch the current branch tracks, resolved to an\n"
          "                        exact commit and fetched into the daemon's mirror cache\n"
          "  --ref REF             branch, tag, ref or commit for the workspace\n"
          "  --no-repo             no workspace, even inside a git checkout\n"
          "  --copy-in             copy local uncommitted and untracked (not ignored) files,\n"
          "                        deletions included, into the workspace before COMMAND\n"
          "  --copy-out            write the workspace's changes back into the checkout\n"
          "                        after COMMAND (refuses to overwrite local edits)\n"
          "  --sync                --copy-in and --copy-out\n"
          "  --force               copy-out overwrites local edits\n"
          "  --print-sandbox-id    print sandbox_id=<id> on stderr\n"
          "  --progress            show sandbox boot progress on stderr\n"
          "  --host HOST           daemon socket (unix:/path)\n"
          "  -h, --help            show this help\n\n"
          "Exit status: the command's own, 124 on --timeout, 125 when cleanroom itself\n"
          "failed, 127 when the command was not found, 130 when detached.\n",
          CLI_DEFAULT_IMAGE);
}

static void console_help(FILE *f) {
  fprintf(f,
          "Usage: cleanroom console [options] [-- COMMAND [ARG...]]\n\n"
          "Open an interactive terminal in a sandbox: COMMAND (default: sh) runs on a\n"
          "pseudo-terminal in the guest, with this terminal in raw mode (keys such as\n"
          "Ctrl-C and Ctrl-D go to the guest) and its size kept in step. Exits with\n"
          "COMMAND's exit code. Without --in a new sandbox is created (and kept unless\n"
          "--rm); inside a git checkout it gets the repository, like exec, and\n"
          "--copy-in, --copy-out and --sync work as for exec.\n\n"
          "Options: those of 'cleanroom exec' (see 'cleanroom exec --help'): --in ID,\n"
          "--rm, --image, --policy, --vcpus, --memory, --env, --cwd, --timeout,\n"
          "--repo-url, --ref, --no-repo, --copy-in, --copy-out, --sync, --force,\n"
          "--print-sandbox-id, --progress, --host.\n\n"
          "Examples:\n"
          "  cleanroom console --in 01kr7p9ksmfa7rmyypyqw2w8r0 -- sh\n"
          "  cleanroom console --sync -- bash\n");
}

/* Our terminal in raw mode while a console runs (restored on every path). */
static struct termios saved_tio;
static bool tio_saved;

static void terminal_raw(void) {
  struct termios t;
  if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tio) < 0) return;
  t = saved_tio;
  cfmakeraw(&t);
  if (tcsetattr(STDIN_FILENO, TCSADRAIN, &t) == 0) tio_saved = true;
}

static void terminal_restore(void) {
  if (tio_saved) tcsetattr(STDIN_FILENO, TCSADRAIN, &saved_tio);
  tio_saved = false;
}

static void remove_sandbox(api_client *c, const char *sid) {
  _cleanup_error_ cr_error *err = NULL;
  if (api_client_call(c, "sandbox.terminate", json_pack("{s:s}", "id", sid), NULL, NULL, NULL,
                      &err) < 0) {
    cr_error_wrap(&err, "removing sandbox %s", sid);
    cli_fail(err);
  }
}

static int run(int argc, char **argv, bool console) {
  void (*usage)(FILE *) = console ? console_help : help;
  if (cli_wants_help(argc, argv)) {
    usage(stdout);
    return 0;
  }
  enum {
    O_IN = 1000, O_RM, O_IMAGE, O_PRINT_ID, O_ENV, O_CWD, O_TIMEOUT, O_HOST, O_PROGRESS,
    O_VCPUS, O_MEMORY, O_POLICY, O_REPO_URL, O_REF, O_NO_REPO, O_COPY_IN, O_COPY_OUT, O_SYNC_WS,
    O_FORCE,
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
      {"repo-url", required_argument, NULL, O_REPO_URL},
      {"ref", required_argument, NULL, O_REF},
      {"no-repo", no_argument, NULL, O_NO_REPO},
      {"copy-in", no_argument, NULL, O_COPY_IN},
      {"copy-out", no_argument, NULL, O_COPY_OUT},
      {"sync", no_argument, NULL, O_SYNC_WS},
      {"force", no_argument, NULL, O_FORCE},
      {0},
  };
  const char *in = NULL, *image = NULL, *cwd = NULL, *host = NULL, *timeout_opt = NULL;
  const char *policy_path = NULL;
  bool rm = false, print_id = false;
  int64_t timeout_ms = 0, vcpus = 0, mem = 0;
  _cleanup_json_ json_t *env = json_array();
  exec_stream x = {0};
  cli_ws_opts wo = {0};
  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    switch (o) {
    case O_IN: in = optarg; break;
    case O_RM: rm = true; break;
    case O_IMAGE: image = optarg; break;
    case O_POLICY: policy_path = optarg; break;
    case O_REPO_URL: wo.repo_url = optarg; break;
    case O_REF: wo.ref = optarg; break;
    case O_NO_REPO: wo.no_repo = true; break;
    case O_COPY_IN: wo.copy_in = true; break;
    case O_COPY_OUT: wo.copy_out = true; break;
    case O_SYNC_WS: wo.copy_in = wo.copy_out = true; break;
    case O_FORCE: wo.force = true; break;
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
    default: return cli_usage_error(usage, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  if (optind >= argc && !console)
    return cli_usage_error(NULL, "no command given; usage: cleanroom exec "
                                 "[options] -- COMMAND [ARG...]");
  if (in && rm)
    return cli_usage_error(NULL, "--rm removes only a sandbox exec creates; "
                                 "use 'cleanroom sandbox rm %s' for an existing one",
                           in);
  if (in && (image || vcpus || mem || policy_path || wo.repo_url || wo.ref || wo.no_repo))
    return cli_usage_error(NULL, "--image, --policy, --vcpus, --memory, --repo-url, --ref and "
                                 "--no-repo apply to a new sandbox, not with --in");
  if (wo.ref && !wo.repo_url && wo.no_repo)
    return cli_usage_error(NULL, "--ref needs a repository");
  _cleanup_json_ json_t *cmd = json_array();
  for (int i = optind; i < argc; i++) json_array_append_new(cmd, json_string(argv[i]));
  if (json_array_size(cmd) == 0) json_array_append_new(cmd, json_string("sh"));
  x.tty = console;

  exec_stream_ignore_sigpipe();

  _cleanup_api_client_ api_client *c = NULL;
  int r = cli_connect(host, &c);
  if (r) return r;
  x.c = c;
  _cleanup_error_ cr_error *err = NULL;

  /* The sandbox. */
  _cleanup_free_ char *sid = NULL, *ws_cwd = NULL;
  if (in) {
    sid = strdup(in);
  } else {
    json_t *p = NULL;
    r = cli_sandbox_create_params(c, policy_path, image, vcpus, mem, &p);
    if (r) return r;
    bool local = false;
    _cleanup_json_ json_t *fallback = NULL;
    r = cli_ws_create_params(policy_path, &wo, p, &local, &fallback);
    if (r) {
      json_decref(p);
      return r;
    }
    _cleanup_json_ json_t *sb = NULL;
    if (fallback) json_incref(p); /* kept for a second try */
    int cr = api_client_call(c, "sandbox.create", p, exec_stream_on_notification, &x, &sb, &err);
    if (cr < 0 && fallback && err && strcmp(err->reason, CR_E_WORKSPACE_FETCH) == 0) {
      /* The remote the checkout tracks cannot be fetched: its own HEAD. */
      cli_ws_fallback_note(fallback, err->message);
      json_object_set(p, "workspace", fallback);
      cr_error_free(TAKE_PTR(err));
      cr = api_client_call(c, "sandbox.create", p, exec_stream_on_notification, &x, &sb, &err);
    } else if (fallback) {
      json_decref(p);
    }
    if (cr < 0) return cli_fail(err);
    sid = strdup(cli_json_str(sb, "id", ""));
    if (!cwd && cli_ws_path(sb)) cwd = ws_cwd = strdup(cli_ws_path(sb));
  }
  if (in && !cwd) {
    _cleanup_json_ json_t *sb = NULL;
    if (api_client_call(c, "sandbox.get", json_pack("{s:s}", "id", in), NULL, NULL, &sb, &err) == 0 &&
        cli_ws_path(sb))
      cwd = ws_cwd = strdup(cli_ws_path(sb));
    cr_error_free(TAKE_PTR(err));
  }
  if (!sid) return cli_failf(CR_E_INTERNAL, "out of memory");
  if (print_id) fprintf(stderr, "sandbox_id=%s\n", sid);
  if (wo.copy_in && (r = cli_ws_copy_in(c, sid, NULL, 0, false))) {
    if (rm) remove_sandbox(c, sid);
    return r;
  }

  /* Stdin: forwarded unless it is a terminal (or closed); a console's
   * terminal is what it is for. */
  bool stdin_open = (console || !isatty(STDIN_FILENO)) && fcntl(STDIN_FILENO, F_GETFD) >= 0;

  /* Signals: first SIGINT cancels, second detaches. */
  r = exec_stream_catch_signals();
  if (r) return r;

  json_t *p = json_pack("{s:s,s:O,s:b,s:b}", "sandbox_id", sid, "argv", cmd, "stdin", stdin_open,
                        "attach", 1);
  if (json_array_size(env)) json_object_set(p, "env", env);
  if (cwd) json_object_set_new(p, "cwd", json_string(cwd));
  if (timeout_ms) json_object_set_new(p, "timeout_ms", json_integer(timeout_ms));
  unsigned rows, cols;
  if (console) {
    json_object_set_new(p, "tty", json_true());
    if (exec_stream_winsize(&rows, &cols)) {
      json_object_set_new(p, "rows", json_integer(rows));
      json_object_set_new(p, "cols", json_integer(cols));
    }
    const char *term = getenv("TERM");
    bool has_term = false;
    size_t i;
    json_t *v;
    json_array_foreach(env, i, v) has_term |= !strncmp(json_string_value(v), "TERM=", 5);
    if (term && *term && !has_term) {
      _cleanup_free_ char *kv = NULL;
      if (asprintf(&kv, "TERM=%s", term) > 0) {
        json_t *e2 = json_deep_copy(env);
        json_array_append_new(e2, json_string(kv));
        json_object_set_new(p, "env", e2);
      }
    }
  }
  _cleanup_json_ json_t *created = NULL;
  if (api_client_call(c, "execution.create", p, exec_stream_on_notification, &x, &created,
                      &err) < 0) {
    r = cli_fail(err);
    if (rm) remove_sandbox(c, sid);
    return r;
  }
  x.exec_id = strdup(cli_json_str(created, "execution_id", ""));

  if (console) terminal_raw();
  int status = exec_stream_run(&x, sid, stdin_open, timeout_opt);
  terminal_restore();
  bool ended = x.final != NULL;
  exec_stream_done(&x);
  if (!ended) return status; /* detached, or the connection was lost */
  /* no cancellation while we clean up */
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  if (wo.copy_out) {
    int q = cli_ws_copy_out(c, sid, NULL, 0, wo.force, false);
    if (q && status == 0) status = q;
  }
  if (rm) remove_sandbox(c, sid);
  return status;
}

int cmd_exec(int argc, char **argv) { return run(argc, argv, false); }

int cmd_console(int argc, char **argv) { return run(argc, argv, true); }

/* cleanroom execution attach: stream a running (or ended) execution's output
 * from the start of what the daemon still keeps, forward stdin, and exit with
 * the command's status, like `cleanroom exec` (the loop is cmd-exec-stream.c). */
#include "cli/cmd-exec-stream.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void help(FILE *f) {
  fprintf(f, "Usage: cleanroom execution attach ID|--last [--host HOST] [--no-stdin]\n\n"
             "Attach to a running or ended execution: print the output the daemon still\n"
             "keeps (the last 1 MiB of each stream), then live output, and exit with the\n"
             "command's status as 'cleanroom exec' does. Stdout and stderr are passed\n"
             "through unmodified. Stdin is forwarded when it is not a terminal, until the\n"
             "daemon refuses it (an execution created without stdin, or one whose stdin\n"
             "is closed); its end closes the command's stdin. Ctrl-C cancels the\n"
             "command (SIGTERM in the guest); a second Ctrl-C detaches again and leaves\n"
             "it running.\n\n"
             "Options:\n"
             "  --last       the newest execution\n"
             "  --no-stdin   do not forward stdin\n"
             "  --host HOST  daemon socket (unix:/path)\n"
             "  -h, --help   show this help\n\n"
             "Exit status: the command's own (128+N when killed by signal N), 124 when it\n"
             "timed out, 125 when cleanroom itself failed, 127 when the command was not\n"
             "found, 130 when detached.\n");
}

int cmd_execution_attach(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  enum { O_LAST = 1000, O_HOST, O_NO_STDIN };
  static const struct option opts[] = {
      {"last", no_argument, NULL, O_LAST},
      {"host", required_argument, NULL, O_HOST},
      {"no-stdin", no_argument, NULL, O_NO_STDIN},
      {0},
  };
  const char *host = NULL;
  bool last = false, no_stdin = false;
  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case O_LAST: last = true; break;
    case O_HOST: host = optarg; break;
    case O_NO_STDIN: no_stdin = true; break;
    default: return cli_usage_error(help, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  if ((last && optind != argc) || (!last && optind + 1 != argc))
    return cli_usage_error(help, "give exactly one execution ID or --last");

  exec_stream_ignore_sigpipe();
  _cleanup_api_client_ api_client *c = NULL;
  int r = cli_connect(host, &c);
  if (r) return r;

  /* Resolve --last once, and learn the sandbox (for the detach message). */
  _cleanup_json_ json_t *e = NULL;
  r = cli_call(c, "execution.get",
               json_pack("{s:s}", "execution_id", last ? "last" : argv[optind]), &e);
  if (r) return r;
  const char *eid = cli_json_str(e, "id", NULL);
  if (!eid) return cli_failf(CR_E_PROTOCOL, "execution.get returned no id");
  const char *sid = cli_json_str(e, "sandbox_id", "?");
  bool running = !strcmp(cli_json_str(e, "state", ""), "running");

  r = exec_stream_catch_signals();
  if (r) return r;

  exec_stream x = {.c = c, .exec_id = strdup(eid)};
  if (!x.exec_id) return cli_failf(CR_E_INTERNAL, "out of memory");
  _cleanup_json_ json_t *res = NULL;
  _cleanup_error_ cr_error *err = NULL;
  if (api_client_call(c, "execution.attach", json_pack("{s:s}", "execution_id", eid),
                      exec_stream_on_notification, &x, &res, &err) < 0) {
    exec_stream_done(&x);
    return cli_fail(err);
  }
  json_int_t dropped = json_integer_value(json_object_get(res, "dropped"));
  if (dropped > 0)
    fprintf(stderr, "cleanroom: the first %lld bytes of output are no longer kept\n",
            (long long)dropped);

  /* Stdin: forwarded unless it is a terminal (or closed) or the command has
   * ended; the daemon refuses writes when the execution has no stdin, which
   * stops the forwarding. */
  bool stdin_open =
      running && !no_stdin && !isatty(STDIN_FILENO) && fcntl(STDIN_FILENO, F_GETFD) >= 0;
  int status = exec_stream_run(&x, sid, stdin_open, NULL);
  exec_stream_done(&x);
  return status;
}

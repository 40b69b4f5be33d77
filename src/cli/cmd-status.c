/* cleanroom status: the last (or a given) execution with its sandbox. */
#include "cli/cmd-sandbox-common.h"

#include <getopt.h>
#include <stdio.h>

static void help(FILE *f) {
  fprintf(f, "Usage: cleanroom status [--last | EXECUTION_ID] [--json] [--host HOST]\n\n"
             "Show an execution (default: the last one) with its sandbox: command, state,\n"
             "exit code or signal, timings, and the sandbox's state.\n\n"
             "Options:\n"
             "  --last       the newest execution (the default)\n"
             "  --json       print {\"execution\": {...}, \"sandbox\": {...}}\n"
             "  --host HOST  daemon socket (unix:/path)\n"
             "  -h, --help   show this help\n");
}

static void print_ms(const char *label, json_t *timing, const char *key) {
  json_t *v = json_object_get(timing, key);
  if (json_is_number(v)) printf("  %-10s %.0f ms\n", label, json_number_value(v));
}

int cmd_status(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'},
      {"last", no_argument, NULL, 'l'},
      {"host", required_argument, NULL, 'H'},
      {0},
  };
  cli_opts opt;
  int r = cli_getopt(argc, argv, "", opts, help, &opt);
  if (r) return r;
  if (optind + 1 < argc || (opt.last && optind < argc))
    return cli_usage_error(NULL, "give one execution ID or --last");
  const char *id = optind < argc ? argv[optind] : "last";
  _cleanup_api_client_ api_client *c = NULL;
  _cleanup_json_ json_t *e = NULL;
  r = cli_connect_call(opt.host, "execution.get", json_pack("{s:s}", "execution_id", id), &c, &e);
  if (r) return r;
  const char *sid = cli_json_str(e, "sandbox_id", NULL);
  _cleanup_json_ json_t *sb = NULL;
  if (sid) {
    _cleanup_error_ cr_error *err = NULL;
    /* the sandbox may be gone (removed); status still shows the execution */
    if (api_client_call(c, "sandbox.get", json_pack("{s:s}", "id", sid), NULL, NULL, &sb, &err) <
        0)
      sb = json_pack("{s:s,s:s,s:s}", "id", sid, "state", "removed", "reason",
                     cr_error_reason(err));
  }
  if (opt.json) {
    _cleanup_json_ json_t *out = json_pack("{s:O,s:O?}", "execution", e, "sandbox", sb);
    cli_print_json(out);
    return 0;
  }
  printf("execution  %s\n", cli_json_str(e, "id", "-"));
  printf("command   ");
  size_t i;
  json_t *a;
  json_array_foreach(json_object_get(e, "argv"), i, a) printf(" %s", json_string_value(a) ? json_string_value(a) : "");
  printf("\n");
  printf("state      %s", cli_json_str(e, "state", "-"));
  json_t *code = json_object_get(e, "exit_code");
  json_t *sig = json_object_get(e, "signal");
  if (json_is_integer(sig))
    printf(", killed by signal %lld", (long long)json_integer_value(sig));
  else if (json_is_string(sig))
    printf(", killed by signal %s", json_string_value(sig));
  else if (json_is_integer(code))
    printf(", exit code %lld", (long long)json_integer_value(code));
  if (json_is_true(json_object_get(e, "timed_out"))) printf(", timed out");
  if (json_is_true(json_object_get(e, "cancelled"))) printf(", cancelled");
  printf("\n");
  printf("started    %s\n", cli_json_str(e, "started_at", "-"));
  printf("ended      %s\n", cli_json_str(e, "ended_at", "-"));
  json_t *t = json_object_get(e, "timing_ms");
  if (json_object_size(t)) {
    printf("timings\n");
    const char *k;
    json_t *v;
    json_object_foreach(t, k, v) print_ms(k, t, k);
  }
  if (sb) {
    printf("sandbox    %s (%s", cli_json_str(sb, "id", "-"), cli_json_str(sb, "state", "-"));
    const char *reason = cli_json_str(sb, "reason", NULL);
    if (reason) printf(": %s", reason);
    printf(")\n");
    const char *ref = cli_sandbox_image(sb, NULL);
    if (ref) printf("image      %s\n", ref);
  }
  return 0;
}

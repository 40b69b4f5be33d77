/* cleanroom execution ls: list executions, newest first. */
#include "cli/cmd-sandbox-common.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void help(FILE *f) {
  fprintf(f, "Usage: cleanroom execution ls [--in SANDBOX_ID] [--json] [--host HOST]\n\n"
             "List executions, newest first: ID, SANDBOX, STATE, EXIT, STARTED, COMMAND.\n\n"
             "Options:\n"
             "  --in ID      only executions in this sandbox\n"
             "  --json       print {\"executions\": [...]} as returned by the daemon\n"
             "  --host HOST  daemon socket (unix:/path)\n"
             "  -h, --help   show this help\n");
}

/* "0", "SIGTERM" (signal), or "-" while running. */
static const char *exit_text(json_t *e, char *buf, size_t size) {
  json_t *sig = json_object_get(e, "signal");
  json_t *code = json_object_get(e, "exit_code");
  if (json_is_integer(sig))
    snprintf(buf, size, "sig %lld", (long long)json_integer_value(sig));
  else if (json_is_string(sig))
    snprintf(buf, size, "%s", json_string_value(sig));
  else if (json_is_integer(code))
    snprintf(buf, size, "%lld", (long long)json_integer_value(code));
  else
    snprintf(buf, size, "-");
  return buf;
}

int cmd_execution_ls(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'},
      {"in", required_argument, NULL, 'i'},
      {"host", required_argument, NULL, 'H'},
      {0},
  };
  cli_opts opt;
  int r = cli_getopt(argc, argv, "", opts, help, &opt);
  if (r) return r;
  if (optind < argc) return cli_usage_error(NULL, "unexpected argument '%s'", argv[optind]);
  _cleanup_json_ json_t *res = NULL;
  r = cli_connect_call(opt.host, "execution.list",
                       opt.in ? json_pack("{s:s}", "sandbox_id", opt.in) : json_object(), NULL,
                       &res);
  if (r) return r;
  if (opt.json) {
    cli_print_json(res);
    return 0;
  }
  printf("%-28s %-28s %-8s %-8s %-10s %s\n", "ID", "SANDBOX", "STATE", "EXIT", "STARTED",
         "COMMAND");
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(res, "executions"), i, e) {
    char age[32], code[32], cmd[256];
    size_t off = 0;
    cmd[0] = '\0';
    size_t j;
    json_t *a;
    json_array_foreach(json_object_get(e, "argv"), j, a) {
      int n = snprintf(cmd + off, sizeof(cmd) - off, "%s%s", j ? " " : "",
                       json_string_value(a) ? json_string_value(a) : "");
      if (n < 0 || (size_t)n >= sizeof(cmd) - off) {
        memcpy(cmd + sizeof(cmd) - 4, "...", 4);
        break;
      }
      off += (size_t)n;
    }
    printf("%-28s %-28s %-8s %-8s %-10s %s\n", cli_json_str(e, "id", "-"),
           cli_json_str(e, "sandbox_id", "-"), cli_json_str(e, "state", "-"),
           exit_text(e, code, sizeof(code)),
           cli_format_age(cli_json_str(e, "started_at", NULL), age, sizeof(age)), cmd);
  }
  return 0;
}

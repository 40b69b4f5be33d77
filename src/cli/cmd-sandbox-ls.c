/* cleanroom sandbox ls: list sandboxes, newest first. */
#include "cli/cmd-sandbox-common.h"

#include <getopt.h>
#include <stdio.h>

static void help(FILE *f) {
  fprintf(f, "Usage: cleanroom sandbox ls [--json] [--host HOST]\n\n"
             "List sandboxes, newest first: ID, STATE, IMAGE, CREATED, REASON.\n\n"
             "Options:\n"
             "  --json       print {\"sandboxes\": [...]} as returned by the daemon\n"
             "  --host HOST  daemon socket (unix:/path)\n"
             "  -h, --help   show this help\n");
}

int cmd_sandbox_ls(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'},
      {"host", required_argument, NULL, 'H'},
      {0},
  };
  cli_opts opt;
  int r = cli_getopt(argc, argv, "+", opts, help, &opt);
  if (r) return r;
  if (optind < argc) return cli_usage_error(NULL, "unexpected argument '%s'", argv[optind]);
  _cleanup_json_ json_t *res = NULL;
  r = cli_connect_call(opt.host, "sandbox.list", NULL, NULL, &res);
  if (r) return r;
  if (opt.json) {
    cli_print_json(res);
    return 0;
  }
  json_t *list = json_object_get(res, "sandboxes");
  printf("%-28s %-13s %-36s %-10s %s\n", "ID", "STATE", "IMAGE", "CREATED", "REASON");
  size_t i;
  json_t *sb;
  json_array_foreach(list, i, sb) {
    char age[32];
    const char *ref =
        cli_sandbox_image(sb, cli_json_str(json_object_get(sb, "image"), "digest", "-"));
    printf("%-28s %-13s %-36s %-10s %s\n", cli_json_str(sb, "id", "-"),
           cli_json_str(sb, "state", "-"), ref,
           cli_format_age(cli_json_str(sb, "created_at", NULL), age, sizeof(age)),
           cli_json_str(sb, "reason", ""));
  }
  return 0;
}

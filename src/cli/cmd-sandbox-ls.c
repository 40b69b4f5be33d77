/* cleanroom sandbox ls: list sandboxes, newest first. */
#include "cli/cmd-sandbox-common.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

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
  bool json = false;
  const char *host = NULL;
  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    switch (o) {
    case 'j': json = true; break;
    case 'H': host = optarg; break;
    default:
      fprintf(stderr, "cleanroom: invalid_argument: unknown or incomplete option '%s'\n",
              argv[optind - 1]);
      help(stderr);
      return CLI_EXIT_USAGE;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "cleanroom: invalid_argument: unexpected argument '%s'\n", argv[optind]);
    return CLI_EXIT_USAGE;
  }
  _cleanup_api_client_ api_client *c = NULL;
  int r = cli_connect(host, &c);
  if (r) return r;
  _cleanup_json_ json_t *res = NULL;
  r = cli_call(c, "sandbox.list", NULL, &res);
  if (r) return r;
  if (json) {
    cli_print_json(res);
    return 0;
  }
  json_t *list = json_object_get(res, "sandboxes");
  printf("%-28s %-13s %-36s %-10s %s\n", "ID", "STATE", "IMAGE", "CREATED", "REASON");
  size_t i;
  json_t *sb;
  json_array_foreach(list, i, sb) {
    char age[32];
    json_t *img = json_object_get(sb, "image");
    const char *ref = json_is_string(img) ? json_string_value(img)
                                          : cli_json_str(img, "ref", cli_json_str(img, "digest", "-"));
    printf("%-28s %-13s %-36s %-10s %s\n", cli_json_str(sb, "id", "-"),
           cli_json_str(sb, "state", "-"), ref,
           cli_format_age(cli_json_str(sb, "created_at", NULL), age, sizeof(age)),
           cli_json_str(sb, "reason", ""));
  }
  return 0;
}

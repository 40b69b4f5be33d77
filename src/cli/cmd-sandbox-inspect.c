/* cleanroom sandbox inspect: one sandbox as JSON. */
#include "cli/cmd-sandbox-common.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void help(FILE *f) {
  fprintf(f, "Usage: cleanroom sandbox inspect ID|--last [--json] [--host HOST]\n\n"
             "Print a sandbox's details (state, reason, image, resources, timings) as JSON.\n\n"
             "Options:\n"
             "  --last       the newest sandbox\n"
             "  --json       JSON output (the default; accepted for symmetry)\n"
             "  --host HOST  daemon socket (unix:/path)\n"
             "  -h, --help   show this help\n");
}

int cmd_sandbox_inspect(int argc, char **argv) {
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
  bool last = false;
  const char *host = NULL;
  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case 'j': break;
    case 'l': last = true; break;
    case 'H': host = optarg; break;
    default:
      fprintf(stderr, "cleanroom: invalid_argument: unknown or incomplete option '%s'\n",
              argv[optind - 1]);
      help(stderr);
      return CLI_EXIT_USAGE;
    }
  }
  if ((last && optind != argc) || (!last && optind + 1 != argc)) {
    fprintf(stderr, "cleanroom: invalid_argument: give exactly one sandbox ID or --last\n");
    help(stderr);
    return CLI_EXIT_USAGE;
  }
  _cleanup_api_client_ api_client *c = NULL;
  int r = cli_connect(host, &c);
  if (r) return r;
  _cleanup_json_ json_t *res = NULL;
  r = cli_call(c, "sandbox.get", json_pack("{s:s}", "id", last ? "last" : argv[optind]), &res);
  if (r) return r;
  cli_print_json(res);
  return 0;
}

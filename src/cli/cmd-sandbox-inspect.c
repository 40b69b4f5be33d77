/* cleanroom sandbox inspect: one sandbox as JSON. */
#include "cli/cmd-sandbox-common.h"

#include <stdio.h>

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
  return cli_inspect(argc, argv, help, "sandbox", "sandbox.get", "id");
}

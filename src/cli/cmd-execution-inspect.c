/* cleanroom execution inspect: one execution as JSON. */
#include "cli/cmd-sandbox-common.h"

#include <stdio.h>

static void help(FILE *f) {
  fprintf(f, "Usage: cleanroom execution inspect ID|--last [--json] [--host HOST]\n\n"
             "Print an execution's details (command, state, exit code, signal, timings)\n"
             "as JSON.\n\n"
             "Options:\n"
             "  --last       the newest execution\n"
             "  --json       JSON output (the default; accepted for symmetry)\n"
             "  --host HOST  daemon socket (unix:/path)\n"
             "  -h, --help   show this help\n");
}

int cmd_execution_inspect(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  return cli_inspect(argc, argv, help, "execution", "execution.get", "execution_id");
}

#include "cli/cli.h"
#include "config.h"

#include <stdio.h>
#include <string.h>

int cmd_version(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("Usage: cleanroom version [--json]\n\nPrint the cleanroom version.\n");
    return 0;
  }
  bool json = argc > 1 && !strcmp(argv[1], "--json");
  if (json)
    printf("{\"version\":\"%s\"}\n", CR_VERSION);
  else
    printf("cleanroom %s\n", CR_VERSION);
  return 0;
}

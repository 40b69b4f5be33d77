/* Helpers shared by the policy-reading CLI commands (see cmd-policy-common.h). */
#include "cli/cmd-policy-common.h"
#include "util/macro.h"

#include <stdio.h>
#include <string.h>

int cli_policy_args(int argc, char **argv, const char **ret_file, bool *ret_json) {
  const char *file = NULL;
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      json = true;
    else if (!strcmp(argv[i], "--policy") && i + 1 < argc && !file)
      file = argv[++i];
    else if (argv[i][0] != '-' && !file)
      file = argv[i];
    else
      return cli_usage_error(NULL, "unexpected argument '%s'; see --help", argv[i]);
  }
  *ret_file = file;
  *ret_json = json;
  return 0;
}

void cli_policy_print_diags(const policy_diags *d) {
  for (size_t i = 0; d && i < d->n; i++) {
    _cleanup_free_ char *s = policy_diag_format(&d->items[i]);
    if (s) fprintf(stderr, "%s\n", s);
  }
}

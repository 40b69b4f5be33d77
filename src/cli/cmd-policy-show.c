/* cleanroom policy show [FILE] [--policy FILE] [--json] */
#include "cli/cmd-policy-common.h"

#include <stdio.h>

int cmd_policy_show(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("Usage: cleanroom policy show [FILE] [--policy FILE] [--json]\n\n"
           "Print the compiled policy (canonical JSON with defaults filled in and\n"
           "hosts normalized) and its policy_hash. Without FILE, uses cleanroom.yaml\n"
           "at the repository root, then .buildkite/cleanroom.yaml.\n\n"
           "Options:\n"
           "  --policy FILE  the policy file (same as FILE)\n"
           "  --json         print {file, policy, policy_hash} as one JSON object\n");
    return 0;
  }
  const char *file;
  bool json;
  if (cli_policy_args(argc, argv, &file, &json)) return CLI_EXIT_USAGE;
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_free_ char *path = NULL, *warning = NULL;
  _cleanup_policy_ policy *p = NULL;
  _cleanup_(policy_diags_freep) policy_diags *diags = NULL;
  if (policy_locate(file, &path, &warning, &err) < 0) return cli_fail(err);
  if (warning) fprintf(stderr, "cleanroom: warning: %s\n", warning);
  int r = policy_load_file(path, &p, &diags, &err);
  cli_policy_print_diags(diags);
  if (r < 0) {
    if (diags) return 1;
    return cli_fail(err);
  }
  char hash[72];
  _cleanup_json_ json_t *compiled = policy_compile_json(p);
  if (!compiled || policy_hash(p, hash) < 0)
    return cli_failf(CR_E_INTERNAL, "compiling policy: out of memory");
  if (json) {
    _cleanup_json_ json_t *out =
        json_pack("{s:s, s:O, s:s}", "file", path, "policy", compiled, "policy_hash", hash);
    if (!out) return cli_failf(CR_E_INTERNAL, "out of memory");
    json_dumpf(out, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
    putchar('\n');
  } else {
    printf("# %s\n# policy_hash: %s\n", path, hash);
    json_dumpf(compiled, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
    putchar('\n');
  }
  return 0;
}

/* Helpers shared by the CLI commands that read a policy file (policy show,
 * policy validate, and the sandbox-creating ones). Implemented in
 * cmd-policy-common.c. */
#pragma once
#include "cli/cli.h"
#include "policy/policy.h"

#include <stdbool.h>

/* Parses `[FILE] [--policy FILE] [--json]` (argv[0] is the command). Returns
 * 0, or CLI_EXIT_USAGE after printing the error. *ret_file stays NULL when no
 * file is given. */
int cli_policy_args(int argc, char **argv, const char **ret_file, bool *ret_json);

/* Prints each diagnostic as FILE:LINE:COLUMN: PATH: MESSAGE on stderr. */
void cli_policy_print_diags(const policy_diags *d);

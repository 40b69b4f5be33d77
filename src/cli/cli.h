/* The cleanroom CLI: one file per subcommand, registered in main.c's table.
 * The CLI talks to the daemon only through the control API (src/client/client.h),
 * except for commands that need no daemon (policy, version, doctor's host checks).
 *
 * Exit codes: a guest's own exit code passes through `exec`; cleanroom's own
 * failures exit 125 and print "cleanroom: <reason>: <message>" on stderr. */
#pragma once
#include "util/error.h"
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#define CLI_EXIT_FAILURE 125
#define CLI_EXIT_USAGE 2

typedef struct cli_command {
  const char *name;    /* "sandbox create" style names have a space */
  const char *summary; /* one line for `cleanroom --help` */
  int (*run)(int argc, char **argv); /* argv[0] is the command name */
} cli_command;

/* Prints "cleanroom: <reason>: <message>" and returns CLI_EXIT_FAILURE. */
int cli_fail(const cr_error *err);
/* Same with a reason and a formatted message. */
int cli_failf(const char *reason, const char *fmt, ...) _printf_(2, 3);
/* Prints "cleanroom: invalid_argument: <message>" on stderr, then help(stderr)
 * unless help is NULL; returns CLI_EXIT_USAGE. */
int cli_usage_error(void (*help)(FILE *), const char *fmt, ...) _printf_(2, 3);
/* True when argv has --help or -h before any "--". */
bool cli_wants_help(int argc, char **argv);

/* Subcommands (one per file, cmd-*.c). */
int cmd_version(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_image_import(int argc, char **argv);
int cmd_image_inspect(int argc, char **argv);
int cmd_image_ls(int argc, char **argv);
int cmd_image_rm(int argc, char **argv);
int cmd_image_bump_ref(int argc, char **argv);
int cmd_image_resolve(int argc, char **argv);
int cmd_image_pull(int argc, char **argv);
int cmd_policy_show(int argc, char **argv);
int cmd_policy_validate(int argc, char **argv);
/* REF -> "name@sha256:<hex>": asked from the registry when REF names one
 * (or is not in the local store), else from the local store
 * (cmd-image-resolve.c). auth_file: --registry-auth (may be NULL). */
int cli_image_resolve(const char *ref, const char *auth_file, char **ret, cr_error **err);
/* Fills params.auth from this host's credentials for ref's registry
 * (cmd-image-pull.c). */
int cli_registry_auth(const char *ref, const char *auth_file, json_t *params, cr_error **err);
/* ref names a registry (host with '.'/':' or localhost first) and the
 * daemon's store does not have it (image.inspect on c): the daemon will pull
 * it. */
typedef struct api_client api_client;
bool cli_image_needs_pull(api_client *c, const char *ref);
/* ref names a registry: a host with '.' or ':', or localhost, before its
 * first '/' (cmd-image-resolve.c). */
bool cli_names_registry(const char *ref);
/* Whether the daemon's store has ref (image.inspect on c): 1 (*ret_digest,
 * optional, its digest), 0 not stored, -1 with *err. */
int cli_image_stored(api_client *c, const char *ref, char **ret_digest, cr_error **err);
int cmd_doctor(int argc, char **argv);
int cmd_cache_ls(int argc, char **argv);
int cmd_cache_prune(int argc, char **argv);
int cmd_cache_stats(int argc, char **argv);
int cmd_exec(int argc, char **argv);
int cmd_console(int argc, char **argv);
int cmd_execution_attach(int argc, char **argv);
int cmd_execution_inspect(int argc, char **argv);
int cmd_execution_ls(int argc, char **argv);
int cmd_events(int argc, char **argv);
int cmd_sandbox_create(int argc, char **argv);
int cmd_sandbox_inspect(int argc, char **argv);
int cmd_sandbox_ls(int argc, char **argv);
int cmd_sandbox_rm(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_mcp(int argc, char **argv);
int cmd_workspace_diff(int argc, char **argv);
int cmd_workspace_preview(int argc, char **argv);
int cmd_workspace_copy_in(int argc, char **argv);
int cmd_workspace_copy_out(int argc, char **argv);
int cmd_snapshot_create(int argc, char **argv);
int cmd_snapshot_inspect(int argc, char **argv);
int cmd_snapshot_ls(int argc, char **argv);
int cmd_snapshot_restore(int argc, char **argv);
int cmd_snapshot_rm(int argc, char **argv);
int cmd_template_ls(int argc, char **argv);
int cmd_template_rm(int argc, char **argv);
int cmd_image_warm(int argc, char **argv);

/* Helpers shared by the CLI commands that talk to the daemon (sandbox *,
 * exec, execution *, status). Implemented in cmd-sandbox-common.c. */
#pragma once
#include "client/client.h"
#include "cli/cli.h"
#include "image/ref.h"

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CLI_DEFAULT_IMAGE IMAGE_DEFAULT_REF

/* --image, else env CLEANROOM_IMAGE, else CLI_DEFAULT_IMAGE. */
const char *cli_default_image(const char *opt);

/* Connects (with autostart unless --host/CLEANROOM_HOST names a daemon).
 * On failure prints the error and returns CLI_EXIT_FAILURE; else 0. */
int cli_connect(const char *host, api_client **ret);

/* cli_connect, then cli_call. params stolen (also when connecting fails).
 * *ret_client is set on success unless ret_client is NULL. */
int cli_connect_call(const char *host, const char *method, json_t *params,
                     api_client **ret_client, json_t **ret_result);
/* Calls method; on failure prints "cleanroom: <reason>: <message>" and
 * returns CLI_EXIT_FAILURE; else 0 with *ret_result set. params stolen. */
int cli_call(api_client *c, const char *method, json_t *params, json_t **ret_result);

/* sandbox.create params from the repository's policy: policy_path when given,
 * else cleanroom.yaml (then .buildkite/cleanroom.yaml) at the repository root
 * of the current directory, if any. Sets "policy" (compiled), "image"
 * (explicit, else the policy's, else $CLEANROOM_IMAGE, else the default), and
 * "vcpus" and "memory_mib" when not 0; c answers whether a registry image
 * is stored (else this host's credentials for it go along). Returns 0 with
 * *ret_params set, or a CLI exit code after printing the errors. */
int cli_sandbox_create_params(api_client *c, const char *policy_path, const char *image,
                              int64_t vcpus, int64_t mem_mib, json_t **ret_params);

/* The options the daemon commands share, as set by cli_getopt. */
typedef struct cli_opts {
  bool json, last, all;
  const char *host, *in, *name; /* 'N': --name */
} cli_opts;

/* getopt_long over argv with the command's own options table. Recognized
 * vals: 'j' --json, 'l' --last, 'a' --all, 'i' --in ID, 'H' --host HOST,
 * 'f' (accepted, ignored). Any other result is an unknown or incomplete
 * option: prints that with help to stderr and returns CLI_EXIT_USAGE. Else
 * returns 0 with optind at the first operand. */
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts,
               void (*help)(FILE *), cli_opts *ret);

/* A whole `<noun> inspect ID|--last [--json] [--host HOST]` command after
 * --help: calls method with {id_key: ID or "last"} and prints the result. */
int cli_inspect(int argc, char **argv, void (*help)(FILE *), const char *noun,
                const char *method, const char *id_key);

/* --vcpus and --memory values; a bad one prints the usage error and returns
 * CLI_EXIT_USAGE, else 0. */
int cli_opt_vcpus(const char *arg, int64_t *ret);
int cli_opt_memory(const char *arg, int64_t *ret_mib);

/* A sandbox's image ref: "image" when a string, else image.ref, else fallback. */
const char *cli_sandbox_image(json_t *sb, const char *fallback);

/* Prints JSON to stdout, indented, with a final newline. */
void cli_print_json(json_t *j);

/* "512", "512M", "512MiB", "1G", "1GiB", "2g" -> MiB. -EINVAL when bad. */
int cli_parse_size_mib(const char *s, int64_t *ret_mib);
/* "30" (seconds), "500ms", "30s", "5m", "1h", "1h30m" -> milliseconds. */
int cli_parse_duration_ms(const char *s, int64_t *ret_ms);
/* A positive integer in [min, max]. */
int cli_parse_int(const char *s, int64_t min, int64_t max, int64_t *ret);

/* "2026-12-01T02:00:00.000Z" -> "5 minutes ago" style into buf. */
const char *cli_format_age(const char *rfc3339, char *buf, size_t size);

/* String member or fallback. */
const char *cli_json_str(json_t *obj, const char *key, const char *fallback);

/* Helpers shared by the CLI commands that talk to the daemon (sandbox *,
 * exec, execution *, status). Implemented in cmd-sandbox-common.c. */
#pragma once
#include "api/client.h"
#include "cli/cli.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define CLI_DEFAULT_IMAGE "cleanroom-base/debian:bookworm"

/* --image, else env CLEANROOM_IMAGE, else CLI_DEFAULT_IMAGE. */
const char *cli_default_image(const char *opt);

/* Connects (with autostart unless --host/CLEANROOM_HOST names a daemon).
 * On failure prints the error and returns CLI_EXIT_FAILURE; else 0. */
int cli_connect(const char *host, api_client **ret);
/* sandbox.create params from the repository's policy: policy_path when given,
 * else cleanroom.yaml (then .buildkite/cleanroom.yaml) at the repository root
 * of the current directory, if any. Sets "policy" (compiled) and "image"
 * (explicit, else the policy's, else $CLEANROOM_IMAGE, else the default).
 * Returns 0, or a CLI exit code after printing the errors. */
int cli_sandbox_params(const char *policy_path, const char *image, json_t *params);

/* Calls method; on failure prints "cleanroom: <reason>: <message>" and
 * returns CLI_EXIT_FAILURE; else 0 with *ret_result set. params stolen. */
int cli_call(api_client *c, const char *method, json_t *params, json_t **ret_result);

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

/* Repository policy: cleanroom.yaml parsed, validated, compiled and hashed.
 *
 * A policy is loaded from a file or a buffer. Parsing collects every error at
 * once as diagnostics ("cleanroom.yaml:12:7: sandbox.network.allow[2]: port
 * 70000 out of range (1-65535)"); when there is at least one error the call
 * fails with reason policy_invalid and no policy is returned.
 *
 * A valid policy has its defaults filled in and every host normalized
 * (lowercase, IDN to punycode, no trailing dot). Its compiled form is
 * canonical JSON (sorted keys, compact, lists in a deterministic order) and
 * its hash "sha256:<hex>" is the sha256 of that JSON: two spellings of the
 * same policy compile to the same bytes and hash. docs/policy.md has the
 * format and the matching rules. */
#pragma once
#include "util/error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits on untrusted input. */
#define POLICY_MAX_FILE_SIZE (1024 * 1024) /* bytes */
#define POLICY_MAX_DEPTH 32                /* YAML nesting */
#define POLICY_MAX_NODES 100000            /* YAML nodes in one file */
#define POLICY_MAX_RULES 4096              /* network allow + deny entries */
#define POLICY_MAX_DIAGS 100               /* errors kept; more are counted */

/* Where policy_find() looks, in order, relative to the repository root. */
#define POLICY_FILE_NAME "cleanroom.yaml"
#define POLICY_FILE_NAME_FALLBACK ".buildkite/cleanroom.yaml"

typedef struct policy policy;

typedef enum policy_severity {
  POLICY_ERROR,
  POLICY_WARNING,
} policy_severity;

typedef struct policy_diag {
  policy_severity severity;
  char *file;        /* as given to policy_parse() */
  unsigned line;     /* 1-based; 0 when not tied to a place */
  unsigned column;   /* 1-based */
  char *path;        /* "sandbox.network.allow[2]", "" for the document */
  char *message;     /* "port 70000 out of range (1-65535)" */
} policy_diag;

typedef struct policy_diags {
  policy_diag *items;
  size_t n;
  size_t n_errors;
  size_t n_warnings;
  size_t n_dropped; /* errors past POLICY_MAX_DIAGS, not kept */
} policy_diags;

void policy_diags_free(policy_diags *d);
static inline void policy_diags_freep(policy_diags **d) { policy_diags_free(*d); *d = NULL; }
/* "file:line:col: [warning: ]path: message" (newly allocated, NULL on OOM). */
char *policy_diag_format(const policy_diag *d);
/* {file, line, column, path, message} */
json_t *policy_diag_to_json(const policy_diag *d);

/* Parses and validates a policy from a buffer (need not be NUL-terminated).
 * filename is used only in diagnostics. On success *ret is the policy and,
 * when ret_diags is non-NULL, *ret_diags holds the warnings (or NULL when
 * there are none). On failure returns < 0 with *err set (reason
 * policy_invalid for a bad policy) and, when ret_diags is non-NULL,
 * *ret_diags holds every error and warning. */
int policy_parse(const char *buf, size_t len, const char *filename,
                 policy **ret, policy_diags **ret_diags, cr_error **err);
/* Reads a file (at most POLICY_MAX_FILE_SIZE bytes) and parses it. The file
 * name in diagnostics is the path as given. */
int policy_load_file(const char *path, policy **ret, policy_diags **ret_diags,
                     cr_error **err);

/* Finds the policy of the repository at repo_dir: cleanroom.yaml, then
 * .buildkite/cleanroom.yaml. *ret_path is a new string (repo_dir joined with
 * the name). When both exist the first wins and *ret_warning (if non-NULL)
 * is set to a message naming the ignored file, else to NULL. Fails with
 * reason policy_not_found when neither exists. */
int policy_find(const char *repo_dir, char **ret_path, char **ret_warning,
                cr_error **err);

/* The policy a CLI command uses: explicit_path when non-NULL, else
 * policy_find() at the repository root, which is the nearest directory at or
 * above the current one holding .git (the current directory when none). */
int policy_locate(const char *explicit_path, char **ret_path, char **ret_warning,
                  cr_error **err);

void policy_free(policy *p);
static inline void policy_freep(policy **p) { policy_free(*p); *p = NULL; }
#define _cleanup_policy_ _cleanup_(policy_freep)

/* Accessors. Strings are owned by the policy. */
const char *policy_filename(const policy *p);
/* sandbox.image.ref or NULL when the policy names no image. */
const char *policy_image_ref(const policy *p);
/* True when the ref carries "@sha256:<64 hex>". */
bool policy_image_pinned(const policy *p);
/* Resources; 0 when the policy does not set them (the daemon's default). */
unsigned policy_vcpus(const policy *p);
uint64_t policy_memory_mib(const policy *p);
uint64_t policy_disk_mib(const policy *p);
bool policy_docker_required(const policy *p);
/* sandbox.ttl_minutes, 0 when unset. */
unsigned policy_ttl_minutes(const policy *p);
/* sandbox.run.before or NULL. */
const char *policy_run_before(const policy *p);
bool policy_repository_enabled(const policy *p);
const char *policy_repository_remote(const policy *p);
const char *policy_repository_path(const policy *p);
bool policy_repository_submodules(const policy *p);

/* sandbox.dependencies[] and sandbox.services[] (setup steps). */
typedef struct policy_step {
  char *name;
  char *command;
  char **input_files; /* sorted, unique */
  size_t n_input_files;
  char **output_dirs; /* sorted, unique */
  size_t n_output_dirs;
} policy_step;
size_t policy_n_dependencies(const policy *p);
const policy_step *policy_dependency(const policy *p, size_t i);
size_t policy_n_services(const policy *p);
const policy_step *policy_service(const policy *p, size_t i);

/* Compiled policy: canonical JSON (a new reference; NULL on OOM). */
json_t *policy_compile_json(const policy *p);
/* Writes "sha256:<64 hex>" (72 bytes incl. NUL) into ret. < 0 on OOM. */
int policy_hash(const policy *p, char ret[72]);
/* The same recipe over an already compiled policy (the daemon checks a
 * client's claimed hash with it): "sha256:" + hex of the compact JSON with
 * sorted keys. -ENOMEM on OOM. The one definition of the policy hash. */
int policy_hash_json(json_t *compiled, char ret[72]);
/* The canonical bytes that policy_hash() hashes (new string, NULL on OOM). */
char *policy_compile_string(const policy *p);

/* Matching (egress.md). host is a name or an IP literal ("10.0.0.1",
 * "2001:db8::1", "[2001:db8::1]"); it is normalized like policy hosts.
 * Precedence: deny rule > exact allow > wildcard allow > network.default.
 * "*.example.com" matches subdomains only, never the apex. An IP literal is
 * judged only by IP/CIDR rules and is denied when none matches. An allow rule
 * without ports allows 80 and 443; a deny rule without ports denies all.
 * Returns POLICY_ALLOW or POLICY_DENY and sets *ret_reason (if non-NULL) to
 * a static stable code: POLICY_REASON_* below. */
typedef enum policy_verdict {
  POLICY_DENY = 0,
  POLICY_ALLOW = 1,
} policy_verdict;

#define POLICY_REASON_ALLOWED "allowed"
#define POLICY_REASON_HOST_NOT_ALLOWED "host_not_allowed"
#define POLICY_REASON_PORT_NOT_ALLOWED "port_not_allowed"
#define POLICY_REASON_HOST_DENIED "host_denied"
#define POLICY_REASON_HOST_INVALID "host_invalid"

int policy_match(const policy *p, const char *host, uint16_t port,
                 const char **ret_reason);
/* sandbox.secrets: whether the policy lets the host's credential named
 * secret go to host:port (its `hosts` entries, matched like network.allow
 * entries: exact names, "*.suffix" subdomains, IP/CIDR for IP literals;
 * ports default to 80 and 443). The gateway refuses a credential sent
 * anywhere else with secret_scope_violation (docs/gateway.md). */
bool policy_secret_allows(const policy *p, const char *secret, const char *host, uint16_t port);
size_t policy_secret_count(const policy *p);
const char *policy_secret_name(const policy *p, size_t i);
#define POLICY_REASON_SECRET_SCOPE_VIOLATION "secret_scope_violation"
/* sandbox.network.git_push: whether the gateway may pass a git push
 * (receive-pack) on to host:port (entries as in network.allow; ports
 * default to 80 and 443). Without an entry a push is refused
 * (push_not_allowed). The upstream must be allowed by network.allow too. */
bool policy_git_push_allows(const policy *p, const char *host, uint16_t port);
#define POLICY_REASON_PUSH_NOT_ALLOWED "push_not_allowed"

/* True when some allow rule could allow the name (any port): what the DNS
 * resolver asks before forwarding a query. Deny rules without ports win. */
bool policy_host_may_resolve(const policy *p, const char *host);

/* Host normalization as used for policy entries and queries: lowercase, IDN
 * to punycode (IDNA2008/UTS#46), trailing dot stripped, label and length
 * checks. A leading "*." is kept. Returns 0 with *ret (new string) or a
 * negative errno-style value; *ret_problem (if non-NULL) is a static
 * description of what is wrong. */
int policy_normalize_host(const char *host, char **ret, const char **ret_problem);

/* Rewrites the value of sandbox.image.ref in a policy buffer, keeping every
 * other byte (comments, formatting) as it was. Fails (policy_invalid) when
 * the buffer is not valid YAML or has no sandbox.image.ref scalar. */
int policy_edit_image_ref(const char *buf, size_t len, const char *filename,
                          const char *new_ref, char **ret_buf, size_t *ret_len,
                          cr_error **err);
/* Syntax check for an OCI reference; sets *ret_pinned. */
bool policy_image_ref_valid(const char *ref, bool *ret_pinned, const char **ret_problem);

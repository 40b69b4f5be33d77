/* Workspace helpers shared by `cleanroom workspace ...` and `exec`
 * (cmd-workspace.c). */
#pragma once
#include "client/client.h"

#include <jansson.h>
#include <stdbool.h>

typedef struct cli_ws_opts {
  const char *repo_url, *ref; /* --repo-url / --ref */
  bool no_repo;               /* --no-repo */
  bool copy_in, copy_out, force;
} cli_ws_opts;

/* Adds params.workspace {repo_url, ref, path} for a new sandbox: from
 * --repo-url, or (inside a git checkout whose policy has repository enabled)
 * the checkout's remote and the remote branch its branch tracks. Sets
 * *ret_local when the local checkout is the source (copy-in/out possible).
 * When the workspace came from the checkout's remote (no --repo-url, no
 * --ref) and the checkout has a HEAD commit, *ret_fallback (if not NULL) is
 * the workspace to use instead when that remote cannot be fetched: the
 * checkout's own repository at HEAD (see cli_ws_fallback_note). A remote that
 * is a local path which does not exist (a clone of a clone that was moved,
 * CI's copy of a checkout) is replaced by it at once, with a warning.
 * Returns 0 or an exit code. */
int cli_ws_create_params(const char *policy_path, const cli_ws_opts *o, json_t *params,
                         bool *ret_local, json_t **ret_fallback);
/* Prints the warning for switching to *fallback after `why`. */
void cli_ws_fallback_note(json_t *fallback, const char *why);
/* The workspace path recorded on the sandbox JSON (or NULL). */
const char *cli_ws_path(json_t *sandbox);
/* copy-in / copy-out between the current checkout and sandbox sid. Return 0
 * or an exit code; report on stderr (stdout with json). */
int cli_ws_copy_in(api_client *c, const char *sid, char **paths, size_t npaths, bool json);
int cli_ws_copy_out(api_client *c, const char *sid, char **paths, size_t npaths, bool force,
                    bool json);

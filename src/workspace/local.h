/* The local checkout, on the CLI side (libgit2, blocking): its remote and
 * branch, its changes against a base commit (copy-in), and writes into it
 * that never leave it (copy-out). */
#pragma once
#include "workspace/ws.h"

#include <jansson.h>

typedef struct ws_local ws_local;
/* Discovers the repository containing dir (NULL = cwd). */
int ws_local_open(const char *dir, ws_local **ret, cr_error **err);
void ws_local_free(ws_local *l);
const char *ws_local_root(const ws_local *l); /* work tree, no trailing '/' */
/* The remote's URL; a local path is made absolute. -ENOENT when no remote. */
int ws_local_remote_url(ws_local *l, const char *remote, char **ret, cr_error **err);
/* Whether a remote URL (as ws_local_remote_url returns it) names a local
 * path rather than scheme:// or scp-like host:path. */
bool ws_url_is_local_path(const char *url);
/* HEAD's commit id; -1 (no error set) when there is none (unborn branch). */
int ws_local_head(ws_local *l, char ret[41]);
/* The branch on `remote` the current branch tracks ("main"), or NULL. */
char *ws_local_upstream_branch(ws_local *l, const char *remote);

/* The work tree's tracked and untracked-not-ignored files against commit
 * (which must be in the local repository): changed/added files into tar,
 * removed paths into *deletes, and *record = {"path": blob id or null}. */
int ws_local_changes(ws_local *l, const char *commit, const char *const *paths,
                     size_t npaths, cr_buf *tar, json_t **deletes, json_t **record,
                     cr_error **err);
/* <gitdir>/cleanroom/copy-in/<sandbox>.json: what copy-in put there. */
int ws_local_record_save(ws_local *l, const char *sandbox_id, json_t *files, cr_error **err);
json_t *ws_local_record_load(ws_local *l, const char *sandbox_id);

/* Blob id and git mode of the file at path in the work tree (symlinks not
 * followed); ret "" and mode 0 when absent. A symlink on the way (or a
 * non-directory) counts as absent with -ELOOP. */
int ws_local_oid(ws_local *l, const char *path, char ret[41], uint32_t *mode);
/* Writes (mode 0100644/0100755: data; 0120000: data is the target) or
 * removes (mode 0) path below the work tree: never through a symlink, never
 * outside, never into .git; missing directories are created. */
int ws_local_put(ws_local *l, const char *path, uint32_t mode, const void *data, size_t n,
                 cr_error **err);

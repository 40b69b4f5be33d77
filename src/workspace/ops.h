/* Workspace operations in the daemon (libuv loop; libgit2 work runs on the
 * libuv thread pool). Results arrive through ws_done_cb exactly once: result
 * (stolen) or err (owned by the callee). Sandboxes are named by id and looked
 * up again after each asynchronous step, so one removed meanwhile fails the
 * operation with sandbox_not_found instead of being touched. */
#pragma once
#include "sandbox/sandbox.h"
#include "workspace/ws.h"

#include <jansson.h>

typedef void (*ws_done_cb)(void *ud, json_t *result, cr_error *err);

/* {repo_url, ref, commit, fetched, received_objects, received_bytes} */
int ws_resolve_async(uv_loop_t *loop, const char *url, const char *ref, ws_done_cb cb,
                     void *ud, cr_error **err);

/* Resolves url/ref (or takes the 40-hex commit; ref is then only recorded),
 * builds the tree as an ext4 on the sandbox's workspace disk and has the
 * agent mount it at path (default /workspace); a VM without that disk gets
 * the tree over TAR_IN. Records the workspace on the sandbox: {repo_url,
 * ref, commit, path, files, fetched, received_objects, method, ...,
 * submodules: [{path, url, commit, fetched, received_objects}] when asked}. */
int ws_checkout(sbx_manager *m, const char *sandbox_id, const char *url, const char *ref,
                const char *commit /* already resolved, or NULL */, const char *path,
                bool submodules /* their trees too (workspace.submodules) */, ws_done_cb cb,
                void *ud, cr_error **err);

enum {
  WS_DIFF_STAT_ONLY = 1u << 0, /* no patch text */
  WS_DIFF_CONTENTS = 1u << 1,  /* new contents (base64) per file, for copy-out */
};
/* Changes of the sandbox's workspace against its base commit:
 * {base_commit, files: [{path, status, old_mode, new_mode, old_oid, new_oid,
 * size, data?, target?}], patch?, stats: {listed, read, bytes_read}}.
 * Only files whose stat differs from the base manifest are read. */
int ws_diff(sbx_manager *m, const char *sandbox_id, json_t *paths /* array or NULL */,
            unsigned flags, ws_done_cb cb, void *ud, cr_error **err);

/* Local changes on top: deletes (relative paths) are removed, then the tar
 * (relative names) is extracted into the workspace. {deleted, bytes}. */
int ws_copy_in(sbx_manager *m, const char *sandbox_id, uint8_t *tar /* stolen */, size_t n,
               json_t *deletes, ws_done_cb cb, void *ud, cr_error **err);

/* The same with the changes of the local checkout at dir (absolute, read by
 * the daemon itself) against the sandbox's base commit: `mcp --repo DIR`. */
int ws_copy_in_local(sbx_manager *m, const char *sandbox_id, const char *dir, ws_done_cb cb,
                     void *ud, cr_error **err);

/* Image pulls and imports inside the daemon (it owns the image store):
 * image_pull() (blocking, libcurl) and image_import_fd() (extraction,
 * mkfs.ext4) run on a libuv worker thread; progress and the result come
 * back on the loop. */
#pragma once
#include "api/api.h"
#include "image/registry.h"

/* Called on the loop thread, coalesced (at most ~5 per second per phase). */
typedef void (*api_pull_progress_fn)(void *ud, const char *phase, uint64_t done,
                                     uint64_t total);
/* Called once on the loop thread; err is owned by the callee; info/stats
 * are borrowed (NULL on error; stats NULL for an import). */
typedef void (*api_pull_done_fn)(void *ud, const image_info *info,
                                 const image_pull_stats *stats, cr_error *err);

/* params (may be NULL): {"auth":{"username","password"}, "auth_file",
 * "platform"} from the client; credentials given by the client win over
 * the daemon's own lookup. Returns < 0 (with *err) when it cannot start. */
int api_pull_start(daemon_ctx *d, const char *ref, json_t *params, api_pull_progress_fn progress,
                   api_pull_done_fn done, void *ud, cr_error **err);

/* Whether ref names a registry explicitly (host with '.' or ':' or
 * "localhost" as first component): those are pulled when missing. */
bool api_ref_names_registry(const char *ref);

/* Imports what fd refers to (taken: closed when done), a file or directory
 * the client opened and sent with its request; shown_path is the client's
 * path. A directory from a peer that is not root is checked first (every
 * entry a file or directory the peer may read, no symlinks): the daemon
 * reads inside it as root. */
int api_import_start(daemon_ctx *d, int fd, const char *shown_path, const char *ref,
                     const api_peer *peer, api_pull_progress_fn progress, api_pull_done_fn done,
                     void *ud, cr_error **err);

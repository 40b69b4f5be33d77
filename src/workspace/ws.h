/* Workspaces: a git repository at an exact commit inside a sandbox.
 *
 * Blocking parts (libgit2; safe on worker threads, each call opens its own
 * repository handle):
 *   mirror.c  host-side bare mirror cache per remote (<data>/git/mirrors/),
 *             ref -> exact commit, incremental fetch
 *   tree.c    the commit's tree as host files -> an ext4 image (the
 *             workspace disk) or as a tar stream, and its manifest (path ->
 *             blob id, mode, size) that `diff` compares the guest against
 *   patch.c   a git patch (binary patches, modes, deletions) of changes
 *             against the base tree, via an in-memory object store
 *   local.c   the local checkout (CLI side): changes against a base commit
 *             (copy-in) and safe writes into it (copy-out)
 * Daemon parts (libuv loop + agent protocol): ops.c. */
#pragma once
#include "util/buf.h"
#include "util/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CR_WS_DEFAULT_PATH "/workspace"
#define CR_WS_MAX_FILE (64u << 20)     /* one file moved by diff/copy-out */
#define CR_WS_MAX_TOTAL (512u << 20)   /* all files of one diff/copy */
#define CR_WS_MAX_COPY_IN (256u << 20) /* tar bytes of one copy-in request */


/* ---- tar writer (ustar + pax path/linkpath for long names) */
/* type: '0' file, '5' dir, '2' symlink (link = target). */
int ws_tar_add(cr_buf *b, const char *path, char type, uint32_t mode, int64_t mtime,
               const void *data, size_t n, const char *link);
int ws_tar_end(cr_buf *b);

/* ---- mirror */
/* <data>/git/mirrors/<sha256(url)[:32]>.git (new string). */
char *ws_mirror_dir(const char *url);
typedef struct ws_resolved {
  char commit[41];
  char *ref;            /* the remote ref that named it ("refs/heads/main"), or NULL */
  bool fetched;         /* a fetch ran (the commit was not in the cache yet) */
  unsigned received_objects;
  uint64_t received_bytes;
} ws_resolved;
void ws_resolved_clear(ws_resolved *r);
/* Resolves ref (NULL = the remote's HEAD; a branch, tag, full ref or a
 * 40-hex commit) on url to a commit, fetching into the mirror only when the
 * commit is not there yet. Serialized per mirror with a lock file. */
int ws_mirror_resolve(const char *url, const char *ref, ws_resolved *ret, cr_error **err);

/* ---- tree */
typedef struct ws_entry {
  char *path;
  uint32_t mode;  /* git file mode: 0100644, 0100755, 0120000, 0160000 (a gitlink) */
  uint64_t size;
  char oid[41];
  char *target;   /* symlinks: the target */
} ws_entry;
typedef struct ws_manifest {
  ws_entry *v; /* sorted by path (strcmp) */
  size_t n;
  int64_t mtime; /* commit time: the mtime every file gets in the guest */
} ws_manifest;
void ws_manifest_free(ws_manifest *m);
int ws_manifest_load(const char *url, const char *commit, ws_manifest *m, cr_error **err);
const ws_entry *ws_manifest_find(const ws_manifest *m, const char *path);
/* ---- submodules (submodule.c; the trees are written by tree.c) */
#define WS_MAX_SUBMODULE_DEPTH 8 /* nested submodules below the superproject */
#define WS_MAX_SUBMODULES 64     /* in one checkout, all depths */
typedef struct ws_submodule {
  char *path;     /* relative to the workspace root ("lib/x", "lib/x/inner") */
  char *url;      /* resolved; NULL: .gitmodules names none (left empty) */
  char commit[41];
  bool fetched;
  unsigned received_objects;
} ws_submodule;
typedef struct ws_submodules {
  ws_submodule *v; /* in checkout order: a parent before its submodules */
  size_t n;
} ws_submodules;
void ws_submodules_free(ws_submodules *s);
/* The URL a .gitmodules `url` names, relative ones (./x, ../x) resolved
 * against the superproject's URL super as git does; NULL when it is
 * refused: not http(s)/ssh/git/file/scp-like/an absolute path, option-like
 * ('-...'), a transport helper ('::'), or a host-local repository when the
 * superproject is not local itself. */
char *ws_submodule_url(const char *super, const char *url);
/* The url of the submodule at path in a .gitmodules blob (*ret NULL when
 * none names that path). Includes are refused (they would read host files). */
int ws_gitmodules_url(const void *data, size_t n, const char *path, char **ret,
                      cr_error **err);

/* The commit's tree as a tar (names relative; every mtime = commit time).
 * subs non-NULL: the submodules too (each at its gitlink's commit, fetched
 * into its own mirror, recursively), recorded in subs; NULL: their
 * directories stay empty. */
int ws_tree_tar(const char *url, const char *commit, cr_buf *out, size_t *ret_files,
                ws_submodules *subs, cr_error **err);
/* The commit's tree written into a new directory `dir` (modes, symlinks,
 * every mtime = commit time; never through a symlink; a name that is not
 * one path component is workspace_unsafe_path); subs as for ws_tree_tar. */
int ws_tree_write(const char *url, const char *commit, const char *dir, size_t *ret_files,
                  ws_submodules *subs, cr_error **err);
/* About how much room the tree takes as files (blob bytes + 4 KiB each). */
int ws_tree_size(const char *url, const char *commit, uint64_t *ret, cr_error **err);
/* `mkfs.ext4 -d tree`: the workspace disk `image` with the tree in it (the
 * file keeps its inode and size: the disk the VM was started with). With
 * tmp (a path on a tmpfs), mkfs writes there and the data extents are then
 * copied over image (mkfs's fsync of a busy disk costs most of its time). */
int ws_image_build(const char *tree, const char *tmp, const char *image, cr_error **err);

/* ---- patch */
typedef struct ws_change {
  char *path;
  char status;        /* 'A', 'M', 'D', 'T' */
  uint32_t old_mode, new_mode; /* git modes; 0 = absent */
  char old_oid[41], new_oid[41];
  uint8_t *data;      /* new content (symlink: target); NULL when deleted */
  size_t len;
} ws_change;
void ws_changes_free(ws_change *c, size_t n);
/* Git blob id of data. */
void ws_blob_oid(const void *data, size_t n, char ret[41]);
/* A patch `git apply` accepts, against the commit's tree. */
int ws_patch(const char *url, const char *commit, const ws_change *c, size_t n, char **ret,
             cr_error **err);

/* Path checks shared by both sides: relative, no "", ".", ".." components,
 * no NUL, no leading '/', at most 4096 bytes. */
bool ws_path_ok(const char *p);
/* A component is ".git" (any case): never listed, copied or written (a
 * nested .git could plant hooks in the checkout). */
bool ws_path_has_git(const char *p);
/* p equals one of paths or lies below one (paths NULL/empty = everything). */
bool ws_path_selected(const char *p, const char *const *paths, size_t npaths);

const char *ws_git_error(void);

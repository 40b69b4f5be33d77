/* A git patch of changed files against the base tree. The new blobs go into
 * an in-memory object store (libgit2's mempack) layered over the mirror, so
 * nothing is written to the shared cache; the base tree is read into an
 * in-memory index, the changes are applied to it, and libgit2 diffs tree ->
 * index with binary patches (GIT_DIFF_SHOW_BINARY: full blob ids, literal or
 * delta hunks, as `git apply` wants them). */
#include "workspace/ws.h"

#include "util/macro.h"

#include <errno.h>
#include <git2.h>
#include <git2/sys/mempack.h>
#include <stdlib.h>
#include <string.h>

int ws_patch(const char *url, const char *commit, const ws_change *c, size_t n, char **ret,
             cr_error **err) {
  *ret = NULL;
  git_libgit2_init();
  int rc = -1;
  git_repository *repo = NULL;
  git_odb *odb = NULL;
  git_odb_backend *mem = NULL;
  git_commit *cm = NULL;
  git_tree *tree = NULL;
  git_index *idx = NULL;
  git_diff *diff = NULL;
  git_buf buf = {0};
  git_oid oid;
  _cleanup_free_ char *dir = ws_mirror_dir(url);
  if (!dir || git_repository_open_bare(&repo, dir) < 0) {
    cr_error_set(err, CR_E_WORKSPACE_FETCH, 0, "no mirror for %s", url);
    goto out;
  }
  if (git_repository_odb(&odb, repo) < 0 || git_mempack_new(&mem) < 0 ||
      git_odb_add_backend(odb, mem, 1000) < 0) {
    cr_error_set(err, CR_E_INTERNAL, 0, "object store: %s", ws_git_error());
    goto out;
  }
  if (git_oid_fromstr(&oid, commit) < 0 || git_commit_lookup(&cm, repo, &oid) < 0 ||
      git_commit_tree(&tree, cm) < 0) {
    cr_error_set(err, CR_E_WORKSPACE_REF_NOT_FOUND, 0, "commit %s is not in the mirror", commit);
    goto out;
  }
  if (git_index_new(&idx) < 0 || git_index_read_tree(idx, tree) < 0) {
    cr_error_set(err, CR_E_INTERNAL, 0, "index: %s", ws_git_error());
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    if (c[i].status == 'D' || c[i].new_mode == 0) {
      git_index_remove(idx, c[i].path, 0);
      continue;
    }
    if (git_odb_write(&oid, odb, c[i].data ? (const void *)c[i].data : "", c[i].len,
                      GIT_OBJECT_BLOB) < 0) {
      cr_error_set(err, CR_E_INTERNAL, 0, "blob: %s", ws_git_error());
      goto out;
    }
    git_index_entry e = {0};
    e.mode = c[i].new_mode;
    e.id = oid;
    e.path = c[i].path;
    e.file_size = (uint32_t)c[i].len;
    /* a type change file <-> dir replaces the old entries */
    if (git_index_add(idx, &e) < 0) {
      git_index_remove_directory(idx, c[i].path, 0);
      if (git_index_add(idx, &e) < 0) {
        cr_error_set(err, CR_E_INTERNAL, 0, "index %s: %s", c[i].path, ws_git_error());
        goto out;
      }
    }
  }
  git_diff_options opts = GIT_DIFF_OPTIONS_INIT;
  opts.flags = GIT_DIFF_SHOW_BINARY;
  if (git_diff_tree_to_index(&diff, repo, tree, idx, &opts) < 0 ||
      git_diff_to_buf(&buf, diff, GIT_DIFF_FORMAT_PATCH) < 0) {
    cr_error_set(err, CR_E_INTERNAL, 0, "diff: %s", ws_git_error());
    goto out;
  }
  *ret = strndup(buf.ptr ? buf.ptr : "", buf.size);
  if (!*ret) {
    cr_error_set(err, CR_E_INTERNAL, ENOMEM, "patch");
    goto out;
  }
  rc = 0;
out:
  git_buf_dispose(&buf);
  git_diff_free(diff);
  git_index_free(idx);
  git_tree_free(tree);
  git_commit_free(cm);
  git_odb_free(odb);
  git_repository_free(repo);
  git_libgit2_shutdown();
  return rc;
}

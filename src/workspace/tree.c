/* A commit's tree from the mirror: as a tar for TAR_IN, and as a manifest
 * (path -> blob id, mode, size) for `diff`. */
#include "workspace/ws.h"

#include "util/macro.h"

#include <errno.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct walk {
  git_repository *repo;
  int64_t mtime;
  ws_buf *tar;         /* tar mode */
  size_t files;
  ws_manifest *m;      /* manifest mode */
  size_t cap;
  git_odb *odb;
  int err;
} walk;

static int open_commit(const char *url, const char *commit, git_repository **repo,
                       git_tree **tree, int64_t *mtime, cr_error **err) {
  _cleanup_free_ char *dir = ws_mirror_dir(url);
  if (!dir) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "mirror path");
  if (git_repository_open_bare(repo, dir) < 0)
    return cr_error_set(err, CR_E_WORKSPACE_FETCH, 0, "no mirror for %s (resolve it first): %s",
                        url, ws_git_error());
  git_oid oid;
  git_commit *c = NULL;
  if (git_oid_fromstr(&oid, commit) < 0 || git_commit_lookup(&c, *repo, &oid) < 0) {
    cr_error_set(err, CR_E_WORKSPACE_REF_NOT_FOUND, 0, "commit %s is not in the mirror of %s",
                 commit, url);
    git_repository_free(*repo);
    *repo = NULL;
    return -1;
  }
  *mtime = git_commit_time(c);
  int r = git_commit_tree(tree, c);
  git_commit_free(c);
  if (r < 0) {
    git_repository_free(*repo);
    *repo = NULL;
    return cr_error_set(err, CR_E_WORKSPACE_FETCH, 0, "reading the tree of %s: %s", commit,
                        ws_git_error());
  }
  return 0;
}

static int walk_cb(const char *root, const git_tree_entry *e, void *ud) {
  walk *w = ud;
  char path[4200];
  int k = snprintf(path, sizeof(path), "%s%s", root, git_tree_entry_name(e));
  if (k < 0 || (size_t)k >= sizeof(path)) {
    w->err = -ENAMETOOLONG;
    return -1;
  }
  git_filemode_t fm = git_tree_entry_filemode(e);
  if (fm == GIT_FILEMODE_TREE) {
    if (w->tar && ws_tar_add(w->tar, path, '5', 0755, w->mtime, NULL, 0, NULL) < 0) goto nomem;
    return 0;
  }
  if (fm == GIT_FILEMODE_COMMIT) { /* a submodule: an empty directory, as git leaves it */
    if (w->tar && ws_tar_add(w->tar, path, '5', 0755, w->mtime, NULL, 0, NULL) < 0) goto nomem;
    return 1;
  }
  if (w->tar) {
    git_blob *b = NULL;
    if (git_blob_lookup(&b, w->repo, git_tree_entry_id(e)) < 0) {
      w->err = -EIO;
      return -1;
    }
    const void *data = git_blob_rawcontent(b);
    size_t n = (size_t)git_blob_rawsize(b);
    int r;
    if (fm == GIT_FILEMODE_LINK) {
      char *t = strndup(data, n);
      r = t ? ws_tar_add(w->tar, path, '2', 0777, w->mtime, NULL, 0, t) : -ENOMEM;
      free(t);
    } else {
      r = ws_tar_add(w->tar, path, '0', fm == GIT_FILEMODE_BLOB_EXECUTABLE ? 0755 : 0644,
                     w->mtime, data, n, NULL);
    }
    git_blob_free(b);
    if (r < 0) goto nomem;
    w->files++;
    return 0;
  }
  ws_manifest *m = w->m;
  if (m->n == w->cap) {
    size_t nc = w->cap ? w->cap * 2 : 1024;
    ws_entry *nv = realloc(m->v, nc * sizeof(*nv));
    if (!nv) goto nomem;
    m->v = nv;
    w->cap = nc;
  }
  ws_entry *en = &m->v[m->n];
  *en = (ws_entry){.mode = fm};
  en->path = strdup(path);
  if (!en->path) goto nomem;
  m->n++;
  git_oid_tostr(en->oid, sizeof(en->oid), git_tree_entry_id(e));
  size_t sz = 0;
  git_object_t t;
  if (git_odb_read_header(&sz, &t, w->odb, git_tree_entry_id(e)) < 0) {
    w->err = -EIO;
    return -1;
  }
  en->size = sz;
  if (fm == GIT_FILEMODE_LINK) {
    git_blob *b = NULL;
    if (git_blob_lookup(&b, w->repo, git_tree_entry_id(e)) < 0) {
      w->err = -EIO;
      return -1;
    }
    en->target = strndup(git_blob_rawcontent(b), (size_t)git_blob_rawsize(b));
    git_blob_free(b);
    if (!en->target) goto nomem;
  }
  return 0;
nomem:
  w->err = -ENOMEM;
  return -1;
}

int ws_tree_tar(const char *url, const char *commit, ws_buf *out, size_t *ret_files,
                cr_error **err) {
  git_libgit2_init();
  git_repository *repo = NULL;
  git_tree *tree = NULL;
  walk w = {.tar = out};
  int rc = open_commit(url, commit, &repo, &tree, &w.mtime, err);
  if (rc == 0) {
    w.repo = repo;
    if (git_tree_walk(tree, GIT_TREEWALK_PRE, walk_cb, &w) < 0 || w.err) {
      rc = cr_error_set(err, w.err == -ENOMEM ? CR_E_INTERNAL : CR_E_IO, w.err ? -w.err : 0,
                        "reading the tree of %s", commit);
    } else if (ws_tar_end(out) < 0) {
      rc = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "tar");
    }
    if (ret_files) *ret_files = w.files;
  }
  git_tree_free(tree);
  git_repository_free(repo);
  git_libgit2_shutdown();
  return rc;
}

static int entry_cmp(const void *a, const void *b) {
  return strcmp(((const ws_entry *)a)->path, ((const ws_entry *)b)->path);
}

int ws_manifest_load(const char *url, const char *commit, ws_manifest *m, cr_error **err) {
  *m = (ws_manifest){0};
  git_libgit2_init();
  git_repository *repo = NULL;
  git_tree *tree = NULL;
  walk w = {.m = m};
  int rc = open_commit(url, commit, &repo, &tree, &m->mtime, err);
  if (rc == 0) {
    w.repo = repo;
    if (git_repository_odb(&w.odb, repo) < 0 ||
        git_tree_walk(tree, GIT_TREEWALK_PRE, walk_cb, &w) < 0 || w.err)
      rc = cr_error_set(err, CR_E_IO, w.err ? -w.err : 0, "reading the tree of %s", commit);
    else
      qsort(m->v, m->n, sizeof(*m->v), entry_cmp);
  }
  git_odb_free(w.odb);
  git_tree_free(tree);
  git_repository_free(repo);
  git_libgit2_shutdown();
  if (rc < 0) ws_manifest_free(m);
  return rc;
}

void ws_manifest_free(ws_manifest *m) {
  for (size_t i = 0; i < m->n; i++) {
    free(m->v[i].path);
    free(m->v[i].target);
  }
  free(m->v);
  *m = (ws_manifest){0};
}

const ws_entry *ws_manifest_find(const ws_manifest *m, const char *path) {
  ws_entry key = {.path = (char *)path};
  return m->n ? bsearch(&key, m->v, m->n, sizeof(*m->v), entry_cmp) : NULL;
}

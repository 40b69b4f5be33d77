/* A commit's tree from the mirror: as a tar for TAR_IN, and as a manifest
 * (path -> blob id, mode, size) for `diff`. */
#include "workspace/ws.h"

#include "util/fs.h"
#include "util/macro.h"
#include "util/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The gitlinks (submodule entries) of one tree, paths relative to it. */
typedef struct glink {
  char *path;
  char oid[41];
} glink;
typedef struct glinks {
  glink *v;
  size_t n;
} glinks;

static int glinks_add(glinks *g, const char *path, const git_oid *oid) {
  if (g->n >= WS_MAX_SUBMODULES + 1) return 0; /* sub_fetch refuses the extra one */
  glink *nv = realloc(g->v, (g->n + 1) * sizeof(*nv));
  if (!nv) return -ENOMEM;
  g->v = nv;
  g->v[g->n].path = strdup(path);
  if (!g->v[g->n].path) return -ENOMEM;
  git_oid_tostr(g->v[g->n].oid, sizeof(g->v[g->n].oid), oid);
  g->n++;
  return 0;
}

static void glinks_free(glinks *g) {
  for (size_t i = 0; i < g->n; i++) free(g->v[i].path);
  free(g->v);
  *g = (glinks){0};
}

/* Submodule g (of the tree of url at prefix): its URL from the tree's
 * .gitmodules, and its commit fetched into that URL's mirror. Appends it to
 * subs; returns 1 when its tree is to be written (subs->v[*ret_idx]), 0 when
 * .gitmodules names no URL for it (it stays an empty directory, as an
 * uninitialized submodule does). */
static int sub_fetch(git_repository *repo, git_tree *tree, const char *url, const char *prefix,
                     const glink *g, unsigned depth, ws_submodules *subs, size_t *ret_idx,
                     cr_error **err) {
  char full[4200];
  snprintf(full, sizeof(full), "%s%s", prefix, g->path);
  if (subs->n >= WS_MAX_SUBMODULES)
    return cr_error_set(err, CR_E_WORKSPACE_TOO_LARGE, 0,
                        "more than %d submodules (at '%s')", WS_MAX_SUBMODULES, full);
  if (depth >= WS_MAX_SUBMODULE_DEPTH)
    return cr_error_set(err, CR_E_WORKSPACE_TOO_LARGE, 0,
                        "submodule '%s' is nested more than %d deep", full,
                        WS_MAX_SUBMODULE_DEPTH);
  _cleanup_free_ char *raw = NULL;
  git_tree_entry *te = NULL;
  if (git_tree_entry_bypath(&te, tree, ".gitmodules") == 0 &&
      (git_tree_entry_filemode(te) == GIT_FILEMODE_BLOB ||
       git_tree_entry_filemode(te) == GIT_FILEMODE_BLOB_EXECUTABLE)) {
    git_blob *b = NULL;
    int r = git_blob_lookup(&b, repo, git_tree_entry_id(te));
    if (r == 0)
      r = ws_gitmodules_url(git_blob_rawcontent(b), (size_t)git_blob_rawsize(b), g->path, &raw,
                            err);
    else
      cr_error_set(err, CR_E_IO, 0, "reading .gitmodules: %s", ws_git_error());
    git_blob_free(b);
    if (r < 0) {
      git_tree_entry_free(te);
      return cr_error_wrap(err, "submodule '%s'", full);
    }
  }
  git_tree_entry_free(te);
  ws_submodule *nv = realloc(subs->v, (subs->n + 1) * sizeof(*nv));
  if (!nv) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "submodules");
  subs->v = nv;
  ws_submodule *sm = &subs->v[subs->n];
  *sm = (ws_submodule){0};
  sm->path = strdup(full);
  if (!sm->path) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "submodules");
  memcpy(sm->commit, g->oid, sizeof(sm->commit));
  *ret_idx = subs->n++;
  if (!raw) return 0;
  char *u = ws_submodule_url(url, raw);
  if (!u)
    return cr_error_set(err, CR_E_WORKSPACE_UNSAFE_PATH, 0,
                        "submodule '%s': the URL '%.200s' (of %s) is refused (not a git URL, "
                        "or a host-local path from a remote superproject)",
                        full, raw, url);
  ws_resolved r;
  if (ws_mirror_resolve(u, g->oid, &r, err) < 0) {
    /* its own code: the superproject was fetched (the CLI falls back to the
     * checkout's HEAD only when that fails) */
    if (err) cr_error_recode(*err, CR_E_WORKSPACE_FETCH, CR_E_WORKSPACE_SUBMODULE_FETCH);
    cr_error_wrap(err, "submodule '%s' at %.12s", full, g->oid);
    free(u);
    return -1;
  }
  sm = &subs->v[*ret_idx];
  sm->url = u;
  sm->fetched = r.fetched;
  sm->received_objects = r.received_objects;
  ws_resolved_clear(&r);
  return 1;
}

typedef struct walk {
  const char *prefix;  /* tar mode: names are prefix + path (a submodule's) */
  glinks *gl;          /* tar mode: the gitlinks, when submodules are wanted */
  git_repository *repo;
  int64_t mtime;
  cr_buf *tar;         /* tar mode */
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
  int k = snprintf(path, sizeof(path), "%s%s%s", w->prefix ? w->prefix : "", root,
                   git_tree_entry_name(e));
  if (k < 0 || (size_t)k >= sizeof(path)) {
    w->err = -ENAMETOOLONG;
    return -1;
  }
  git_filemode_t fm = git_tree_entry_filemode(e);
  if (fm == GIT_FILEMODE_TREE) {
    if (w->tar && ws_tar_add(w->tar, path, '5', 0755, w->mtime, NULL, 0, NULL) < 0) goto nomem;
    return 0;
  }
  if (fm == GIT_FILEMODE_COMMIT && w->tar) {
    /* a submodule: a directory, empty as git leaves it unless wanted */
    if (ws_tar_add(w->tar, path, '5', 0755, w->mtime, NULL, 0, NULL) < 0) goto nomem;
    if (w->gl && glinks_add(w->gl, path + strlen(w->prefix ? w->prefix : ""),
                            git_tree_entry_id(e)) < 0)
      goto nomem;
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
  if (fm == GIT_FILEMODE_COMMIT) return 1; /* a gitlink: diff skips what is below it */
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

static int tar_tree(cr_buf *out, const char *url, const char *commit, const char *prefix,
                    unsigned depth, ws_submodules *subs, size_t *files, cr_error **err) {
  git_repository *repo = NULL;
  git_tree *tree = NULL;
  glinks gl = {0};
  walk w = {.tar = out, .prefix = prefix, .gl = subs ? &gl : NULL};
  int rc = open_commit(url, commit, &repo, &tree, &w.mtime, err);
  if (rc == 0) {
    w.repo = repo;
    if (git_tree_walk(tree, GIT_TREEWALK_PRE, walk_cb, &w) < 0 || w.err)
      rc = cr_error_set(err, w.err == -ENOMEM ? CR_E_INTERNAL : CR_E_IO, w.err ? -w.err : 0,
                        "reading the tree of %s", commit);
    *files += w.files;
  }
  for (size_t i = 0; rc == 0 && i < gl.n; i++) {
    size_t idx = 0;
    int r = sub_fetch(repo, tree, url, prefix, &gl.v[i], depth, subs, &idx, err);
    if (r <= 0) {
      rc = r;
      continue;
    }
    _cleanup_free_ char *sub_url = strdup(subs->v[idx].url), *sub_prefix = NULL;
    char sub_commit[41];
    memcpy(sub_commit, subs->v[idx].commit, sizeof(sub_commit));
    if (!sub_url || asprintf(&sub_prefix, "%s/", subs->v[idx].path) < 0) {
      sub_prefix = NULL;
      rc = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "submodules");
      continue;
    }
    rc = tar_tree(out, sub_url, sub_commit, sub_prefix, depth + 1, subs, files, err);
  }
  glinks_free(&gl);
  git_tree_free(tree);
  git_repository_free(repo);
  return rc;
}

int ws_tree_tar(const char *url, const char *commit, cr_buf *out, size_t *ret_files,
                ws_submodules *subs, cr_error **err) {
  git_libgit2_init();
  size_t files = 0;
  int rc = tar_tree(out, url, commit, "", 0, subs, &files, err);
  if (rc == 0 && ws_tar_end(out) < 0) rc = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "tar");
  if (ret_files) *ret_files = files;
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

/* ---- the tree as files in a host directory, then an ext4 image of it */

typedef struct dwalk {
  git_repository *repo;
  int64_t mtime;
  int root;            /* the tree's directory */
  char cur[4200];      /* the directory cur_fd is open on ("a/b/") */
  int cur_fd;
  size_t files;
  int err;             /* -errno */
  const char *bad;     /* a name refused */
  glinks *gl;          /* the gitlinks, when submodules are wanted */
} dwalk;

/* A tree entry name that can be written as one path component. */
static bool name_ok(const char *n) {
  return n[0] && strcmp(n, ".") != 0 && strcmp(n, "..") != 0 && !strchr(n, '/') &&
         strlen(n) <= 255;
}

/* Opens the directory `rel` ("a/b/", "" = the root) below w->root, never
 * through a symlink; each component was created by an earlier entry. */
static int open_dir(dwalk *w, const char *rel) {
  if (!*rel) return fcntl(w->root, F_DUPFD_CLOEXEC, 3);
  char buf[4200];
  snprintf(buf, sizeof(buf), "%s", rel);
  size_t l = strlen(buf);
  if (l && buf[l - 1] == '/') buf[l - 1] = '\0';
  int fd = fcntl(w->root, F_DUPFD_CLOEXEC, 3);
  char *save = NULL;
  for (char *c = strtok_r(buf, "/", &save); c && fd >= 0; c = strtok_r(NULL, "/", &save)) {
    int nfd = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(fd);
    fd = nfd;
  }
  return fd;
}

static int dwalk_cb(const char *root, const git_tree_entry *e, void *ud) {
  dwalk *w = ud;
  const char *name = git_tree_entry_name(e);
  if (!name_ok(name)) {
    w->bad = name;
    w->err = -EPERM;
    return -1;
  }
  git_filemode_t fm = git_tree_entry_filemode(e);
  /* the entries of one directory come one after another: keep it open */
  if (w->cur_fd < 0 || strcmp(w->cur, root) != 0) {
    if (w->cur_fd >= 0) close(w->cur_fd);
    w->cur_fd = open_dir(w, root);
    if (w->cur_fd < 0) {
      w->err = -errno;
      return -1;
    }
    snprintf(w->cur, sizeof(w->cur), "%s", root);
  }
  int dfd = w->cur_fd;
  struct timespec ts[2] = {{w->mtime, 0}, {w->mtime, 0}};
  if (fm == GIT_FILEMODE_TREE || fm == GIT_FILEMODE_COMMIT) {
    /* a submodule: an empty directory, as git leaves it */
    if (mkdirat(dfd, name, 0755) < 0 || fchmodat(dfd, name, 0755, 0) < 0) {
      w->err = -errno;
      return -1;
    }
    if (fm == GIT_FILEMODE_COMMIT && w->gl) {
      char rel[4200];
      snprintf(rel, sizeof(rel), "%s%s", root, name);
      if (glinks_add(w->gl, rel, git_tree_entry_id(e)) < 0) {
        w->err = -ENOMEM;
        return -1;
      }
    }
    return fm == GIT_FILEMODE_COMMIT ? 1 : 0;
  }
  git_blob *b = NULL;
  if (git_blob_lookup(&b, w->repo, git_tree_entry_id(e)) < 0) {
    w->err = -EIO;
    return -1;
  }
  const char *data = git_blob_rawcontent(b);
  size_t n = (size_t)git_blob_rawsize(b);
  int r = 0;
  if (fm == GIT_FILEMODE_LINK) {
    char *t = strndup(data, n);
    if (!t) r = -ENOMEM;
    else if (symlinkat(t, dfd, name) < 0 ||
             utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
      r = -errno;
    free(t);
  } else {
    mode_t mode = fm == GIT_FILEMODE_BLOB_EXECUTABLE ? 0755 : 0644;
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
      r = -errno;
    } else {
      size_t off = 0;
      while (off < n && r == 0) {
        ssize_t k = write(fd, data + off, n - off);
        if (k < 0 && errno != EINTR) r = -errno;
        if (k > 0) off += (size_t)k;
      }
      if (r == 0 && (fchmod(fd, mode) < 0 || futimens(fd, ts) < 0)) r = -errno;
      close(fd);
    }
  }
  git_blob_free(b);
  if (r < 0) {
    w->err = r;
    return -1;
  }
  w->files++;
  return 0;
}

/* The tree of url at commit written below the directory root (open);
 * prefix names it in messages and submodule paths ("" or "lib/x/"). */
static int write_tree(int root, const char *url, const char *commit, const char *prefix,
                      unsigned depth, ws_submodules *subs, size_t *files, int64_t *ret_mtime,
                      cr_error **err) {
  git_repository *repo = NULL;
  git_tree *tree = NULL;
  glinks gl = {0};
  dwalk w = {.root = root, .cur_fd = -1, .gl = subs ? &gl : NULL};
  int rc = open_commit(url, commit, &repo, &tree, &w.mtime, err);
  if (rc == 0) {
    w.repo = repo;
    if (ret_mtime) *ret_mtime = w.mtime;
    if (git_tree_walk(tree, GIT_TREEWALK_PRE, dwalk_cb, &w) < 0 || w.err) {
      if (w.bad)
        rc = cr_error_set(err, CR_E_WORKSPACE_UNSAFE_PATH, 0,
                          "the tree of %s%s%s has an entry named '%s'", commit,
                          *prefix ? " at " : "", prefix, w.bad);
      else
        rc = cr_error_set(err, w.err == -ENOMEM ? CR_E_INTERNAL : CR_E_IO, w.err ? -w.err : 0,
                          "writing the tree of %s", commit);
    }
    *files += w.files;
  }
  if (w.cur_fd >= 0) close(w.cur_fd);
  for (size_t i = 0; rc == 0 && i < gl.n; i++) {
    size_t idx = 0;
    int r = sub_fetch(repo, tree, url, prefix, &gl.v[i], depth, subs, &idx, err);
    if (r <= 0) {
      rc = r;
      continue;
    }
    _cleanup_free_ char *sub_url = strdup(subs->v[idx].url), *sub_prefix = NULL;
    char sub_commit[41];
    memcpy(sub_commit, subs->v[idx].commit, sizeof(sub_commit));
    if (!sub_url || asprintf(&sub_prefix, "%s/", subs->v[idx].path) < 0) {
      sub_prefix = NULL;
      rc = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "submodules");
      continue;
    }
    /* the directory the gitlink made, reached without following a symlink */
    int fd = open_dir(&w, gl.v[i].path);
    if (fd < 0) {
      rc = cr_error_set(err, CR_E_IO, errno, "opening the directory of submodule '%s'",
                        subs->v[idx].path);
      continue;
    }
    rc = write_tree(fd, sub_url, sub_commit, sub_prefix, depth + 1, subs, files, NULL, err);
    close(fd);
  }
  glinks_free(&gl);
  git_tree_free(tree);
  git_repository_free(repo);
  return rc;
}

int ws_tree_write(const char *url, const char *commit, const char *dir, size_t *ret_files,
                  ws_submodules *subs, cr_error **err) {
  if (mkdir(dir, 0700) < 0)
    return cr_error_set(err, CR_E_IO, errno, "creating %s", dir);
  int root = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (root < 0) return cr_error_set(err, CR_E_IO, errno, "opening %s", dir);
  git_libgit2_init();
  size_t files = 0;
  int64_t mtime = 0;
  int rc = write_tree(root, url, commit, "", 0, subs, &files, &mtime, err);
  if (ret_files) *ret_files = files;
  /* the directory becomes the filesystem's root: its mode and time too */
  if (rc == 0) {
    struct timespec ts[2] = {{mtime, 0}, {mtime, 0}};
    if (fchmod(root, 0755) < 0 || futimens(root, ts) < 0)
      rc = cr_error_set(err, CR_E_IO, errno, "%s", dir);
  }
  close(root);
  git_libgit2_shutdown();
  return rc;
}

typedef struct swalk {
  git_odb *odb;
  uint64_t bytes;
  int err;
} swalk;

static int swalk_cb(const char *root, const git_tree_entry *e, void *ud) {
  swalk *w = ud;
  git_filemode_t fm = git_tree_entry_filemode(e);
  w->bytes += 4096; /* an inode, a directory entry, a partial block */
  if (fm == GIT_FILEMODE_COMMIT) return 1;
  if (fm == GIT_FILEMODE_TREE) return 0;
  size_t sz = 0;
  git_object_t t;
  if (git_odb_read_header(&sz, &t, w->odb, git_tree_entry_id(e)) < 0) {
    w->err = -EIO;
    return -1;
  }
  w->bytes += sz;
  return 0;
}

int ws_tree_size(const char *url, const char *commit, uint64_t *ret, cr_error **err) {
  git_libgit2_init();
  git_repository *repo = NULL;
  git_tree *tree = NULL;
  int64_t mtime;
  swalk w = {0};
  int rc = open_commit(url, commit, &repo, &tree, &mtime, err);
  if (rc == 0 && (git_repository_odb(&w.odb, repo) < 0 ||
                  git_tree_walk(tree, GIT_TREEWALK_PRE, swalk_cb, &w) < 0 || w.err))
    rc = cr_error_set(err, CR_E_IO, w.err ? -w.err : 0, "reading the tree of %s", commit);
  *ret = w.bytes;
  git_odb_free(w.odb);
  git_tree_free(tree);
  git_repository_free(repo);
  git_libgit2_shutdown();
  return rc;
}

static int run_mkfs(const char *tree, const char *image, cr_error **err) {
  char *argv[] = {(char *)"mkfs.ext4", (char *)"-q", (char *)"-F", (char *)"-L",
                  (char *)"cr-workspace", (char *)"-m", (char *)"0", (char *)"-E",
                  (char *)"lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
                  (char *)"-d", (char *)tree, (char *)image, NULL};
  _cleanup_free_ char *out = NULL;
  int r = cr_run(argv, &out, 4096, err);
  if (r > 0) return cr_error_set(err, CR_E_IO, 0, "mkfs.ext4 -d failed: %s", out ? out : "");
  return r < 0 ? -1 : 0;
}

/* The data extents of src written over dst in place (the same inode: the
 * VMM has it open), the rest of dst a hole. No fsync: the VMM reads the
 * host's page cache, and the disk lives no longer than the VM. */
static int copy_in_place(const char *src, const char *dst, cr_error **err) {
  _cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
  _cleanup_close_ int out = open(dst, O_WRONLY | O_CLOEXEC);
  struct stat st, dt;
  if (in < 0 || out < 0 || fstat(in, &st) < 0 || fstat(out, &dt) < 0)
    return cr_error_set(err, CR_E_IO, errno, "opening %s", in < 0 ? src : dst);
  if (st.st_size != dt.st_size)
    return cr_error_set(err, CR_E_INTERNAL, 0, "%s changed its size", dst);
  if (fallocate(out, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, dt.st_size) < 0 &&
      errno != EOPNOTSUPP)
    return cr_error_set(err, CR_E_IO, errno, "clearing %s", dst);
  int r = cr_copy_data_extents(in, out, st.st_size);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "copying %s over %s", src, dst);
  return 0;
}

int ws_image_build(const char *tree, const char *tmp, const char *image, cr_error **err) {
  if (!tmp) return run_mkfs(tree, image, err);
  struct stat st;
  if (stat(image, &st) < 0) return cr_error_set(err, CR_E_IO, errno, "%s", image);
  _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ftruncate(fd, st.st_size) < 0) {
    int e = errno;
    unlink(tmp);
    return cr_error_set(err, CR_E_IO, e, "creating %s", tmp);
  }
  int r = run_mkfs(tree, tmp, err);
  if (r == 0) r = copy_in_place(tmp, image, err);
  unlink(tmp);
  return r;
}

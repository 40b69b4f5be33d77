/* A commit's tree from the mirror: as a tar for TAR_IN, and as a manifest
 * (path -> blob id, mode, size) for `diff`. */
#include "workspace/ws.h"

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

int ws_tree_write(const char *url, const char *commit, const char *dir, size_t *ret_files,
                  cr_error **err) {
  if (mkdir(dir, 0700) < 0)
    return cr_error_set(err, CR_E_IO, errno, "creating %s", dir);
  int root = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (root < 0) return cr_error_set(err, CR_E_IO, errno, "opening %s", dir);
  git_libgit2_init();
  git_repository *repo = NULL;
  git_tree *tree = NULL;
  dwalk w = {.root = root, .cur_fd = -1};
  int rc = open_commit(url, commit, &repo, &tree, &w.mtime, err);
  if (rc == 0) {
    w.repo = repo;
    if (git_tree_walk(tree, GIT_TREEWALK_PRE, dwalk_cb, &w) < 0 || w.err) {
      if (w.bad)
        rc = cr_error_set(err, CR_E_WORKSPACE_UNSAFE_PATH, 0,
                          "the tree of %s has an entry named '%s'", commit, w.bad);
      else
        rc = cr_error_set(err, w.err == -ENOMEM ? CR_E_INTERNAL : CR_E_IO, w.err ? -w.err : 0,
                          "writing the tree of %s", commit);
    }
    if (ret_files) *ret_files = w.files;
  }
  if (w.cur_fd >= 0) close(w.cur_fd);
  /* the directory becomes the filesystem's root: its mode and time too */
  if (rc == 0) {
    struct timespec ts[2] = {{w.mtime, 0}, {w.mtime, 0}};
    if (fchmod(root, 0755) < 0 || futimens(root, ts) < 0)
      rc = cr_error_set(err, CR_E_IO, errno, "%s", dir);
  }
  close(root);
  git_tree_free(tree);
  git_repository_free(repo);
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
  _cleanup_free_ uint8_t *buf = malloc(1 << 20);
  if (!buf) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "copy");
  off_t pos = 0;
  while (pos < st.st_size) {
    off_t data = lseek(in, pos, SEEK_DATA);
    if (data < 0) break; /* ENXIO: only a hole remains */
    off_t hole = lseek(in, data, SEEK_HOLE);
    if (hole < 0) return cr_error_set(err, CR_E_IO, errno, "reading %s", src);
    for (off_t off = data; off < hole;) {
      size_t want = (size_t)MIN((off_t)(1 << 20), hole - off);
      ssize_t n = pread(in, buf, want, off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return cr_error_set(err, CR_E_IO, n < 0 ? errno : EIO, "reading %s", src);
      if (pwrite(out, buf, (size_t)n, off) != n)
        return cr_error_set(err, CR_E_IO, errno, "writing %s", dst);
      off += n;
    }
    pos = hole;
  }
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

/* The local checkout (see local.h). */
#include "workspace/local.h"

#include "util/fs.h"
#include "util/macro.h"

#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct ws_local {
  git_repository *repo;
  char *root;
};

int ws_local_open(const char *dir, ws_local **ret, cr_error **err) {
  git_libgit2_init();
  char cwd[PATH_MAX];
  if (!dir && !getcwd(cwd, sizeof(cwd))) {
    git_libgit2_shutdown();
    return cr_error_set(err, CR_E_IO, errno, "getcwd");
  }
  ws_local *l = calloc(1, sizeof(*l));
  if (!l) {
    git_libgit2_shutdown();
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "repository");
  }
  if (git_repository_open_ext(&l->repo, dir ? dir : cwd, 0, NULL) < 0) {
    ws_local_free(l);
    return cr_error_set(err, CR_E_WORKSPACE_NONE, 0, "%s is not inside a git checkout",
                        dir ? dir : cwd);
  }
  const char *wd = git_repository_workdir(l->repo);
  if (!wd) {
    ws_local_free(l);
    return cr_error_set(err, CR_E_WORKSPACE_NONE, 0, "a bare repository has no work tree");
  }
  l->root = strdup(wd);
  size_t n = l->root ? strlen(l->root) : 0;
  while (n > 1 && l->root[n - 1] == '/') l->root[--n] = '\0';
  *ret = l;
  return 0;
}

void ws_local_free(ws_local *l) {
  if (!l) return;
  git_repository_free(l->repo);
  free(l->root);
  free(l);
  git_libgit2_shutdown();
}

const char *ws_local_root(const ws_local *l) { return l->root; }

bool ws_url_is_local_path(const char *u) {
  if (strstr(u, "://")) return false; /* scheme:// */
  const char *colon = strchr(u, ':'), *slash = strchr(u, '/');
  return !(colon && (!slash || colon < slash)); /* scp-like host:path */
}

int ws_local_remote_url(ws_local *l, const char *remote, char **ret, cr_error **err) {
  git_remote *r = NULL;
  if (git_remote_lookup(&r, l->repo, remote) < 0) return -ENOENT;
  const char *u = git_remote_url(r);
  int rc = 0;
  if (!u || !*u) {
    rc = cr_error_set(err, CR_E_WORKSPACE_NONE, 0, "remote '%s' has no URL", remote);
  } else if (!ws_url_is_local_path(u)) {
    *ret = strdup(u);
  } else {
    /* a local path, relative to the work tree */
    char buf[PATH_MAX * 2];
    if (u[0] == '/') snprintf(buf, sizeof(buf), "%s", u);
    else snprintf(buf, sizeof(buf), "%s/%s", l->root, u);
    char real[PATH_MAX];
    *ret = strdup(realpath(buf, real) ? real : buf);
  }
  git_remote_free(r);
  if (!rc && !*ret) rc = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "url");
  return rc;
}

int ws_local_head(ws_local *l, char ret[41]) {
  git_oid oid;
  if (git_reference_name_to_id(&oid, l->repo, "HEAD") < 0) return -1;
  git_oid_tostr(ret, 41, &oid);
  return 0;
}

char *ws_local_upstream_branch(ws_local *l, const char *remote) {
  git_reference *head = NULL, *up = NULL;
  char *out = NULL;
  if (git_repository_head(&head, l->repo) == 0 && git_reference_is_branch(head) &&
      git_branch_upstream(&up, head) == 0) {
    const char *name = git_reference_shorthand(up); /* "origin/main" */
    size_t rl = strlen(remote);
    if (name && strncmp(name, remote, rl) == 0 && name[rl] == '/') out = strdup(name + rl + 1);
  }
  git_reference_free(up);
  git_reference_free(head);
  return out;
}

static int read_workdir(ws_local *l, const char *path, cr_buf *b, struct stat *st) {
  char full[PATH_MAX * 2];
  snprintf(full, sizeof(full), "%s/%s", l->root, path);
  if (lstat(full, st) < 0) return -errno;
  if (S_ISLNK(st->st_mode)) {
    char t[PATH_MAX];
    ssize_t k = readlink(full, t, sizeof(t) - 1);
    if (k < 0) return -errno;
    return cr_buf_append(b, t, (size_t)k);
  }
  if (!S_ISREG(st->st_mode)) return -EINVAL;
  int fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return -errno;
  char tmp[65536];
  ssize_t k;
  int r = 0;
  while ((k = read(fd, tmp, sizeof(tmp))) > 0)
    if ((r = cr_buf_append(b, tmp, (size_t)k)) < 0) break;
  if (k < 0) r = -errno;
  close(fd);
  return r;
}

int ws_local_changes(ws_local *l, const char *commit, const char *const *paths,
                     size_t npaths, cr_buf *tar, json_t **deletes, json_t **record,
                     cr_error **err) {
  git_oid oid;
  git_commit *c = NULL;
  git_tree *tree = NULL;
  git_diff *diff = NULL;
  int rc = -1;
  *deletes = json_array();
  *record = json_object();
  if (git_oid_fromstr(&oid, commit) < 0 || git_commit_lookup(&c, l->repo, &oid) < 0) {
    cr_error_set(err, CR_E_WORKSPACE_REF_NOT_FOUND, 0,
                 "the base commit %s is not in the local repository (run 'git fetch')", commit);
    goto out;
  }
  if (git_commit_tree(&tree, c) < 0) {
    cr_error_set(err, CR_E_IO, 0, "reading %s: %s", commit, ws_git_error());
    goto out;
  }
  git_diff_options o = GIT_DIFF_OPTIONS_INIT;
  o.flags = GIT_DIFF_INCLUDE_UNTRACKED | GIT_DIFF_RECURSE_UNTRACKED_DIRS |
            GIT_DIFF_INCLUDE_TYPECHANGE | GIT_DIFF_IGNORE_SUBMODULES;
  o.pathspec.strings = (char **)paths;
  o.pathspec.count = npaths;
  if (git_diff_tree_to_workdir_with_index(&diff, l->repo, tree, &o) < 0) {
    cr_error_set(err, CR_E_IO, 0, "comparing the work tree with %s: %s", commit, ws_git_error());
    goto out;
  }
  size_t n = git_diff_num_deltas(diff);
  int64_t now = (int64_t)time(NULL);
  for (size_t i = 0; i < n; i++) {
    const git_diff_delta *d = git_diff_get_delta(diff, i);
    const char *path = d->new_file.path ? d->new_file.path : d->old_file.path;
    if (!ws_path_ok(path)) continue;
    if (d->status == GIT_DELTA_DELETED) {
      json_array_append_new(*deletes, json_string(path));
      json_object_set_new(*record, path, json_null());
      continue;
    }
    if (d->new_file.mode == GIT_FILEMODE_COMMIT) continue;
    cr_buf b = {0};
    struct stat st;
    int r = read_workdir(l, path, &b, &st);
    if (r == -ENOENT) { /* deleted while we looked */
      cr_buf_free(&b);
      json_array_append_new(*deletes, json_string(path));
      json_object_set_new(*record, path, json_null());
      continue;
    }
    if (r < 0) {
      cr_buf_free(&b);
      cr_error_set(err, CR_E_IO, -r, "reading %s/%s", l->root, path);
      goto out;
    }
    if (d->status == GIT_DELTA_TYPECHANGE) json_array_append_new(*deletes, json_string(path));
    char hex[41];
    ws_blob_oid(b.data ? (const void *)b.data : "", b.len, hex);
    json_object_set_new(*record, path, json_string(hex));
    char *target = S_ISLNK(st.st_mode) ? strndup(b.data ? (char *)b.data : "", b.len) : NULL;
    if (S_ISLNK(st.st_mode))
      r = target ? ws_tar_add(tar, path, '2', 0777, now, NULL, 0, target) : -ENOMEM;
    else
      r = ws_tar_add(tar, path, '0', (st.st_mode & 0111) ? 0755 : 0644, st.st_mtim.tv_sec,
                     b.data, b.len, NULL);
    free(target);
    cr_buf_free(&b);
    if (r < 0 || tar->len > CR_WS_MAX_COPY_IN) {
      cr_error_set(err, CR_E_WORKSPACE_TOO_LARGE, 0, "the local changes are larger than %u MiB",
                   CR_WS_MAX_COPY_IN >> 20);
      goto out;
    }
  }
  if (tar->len && ws_tar_end(tar) < 0) {
    cr_error_set(err, CR_E_INTERNAL, ENOMEM, "tar");
    goto out;
  }
  rc = 0;
out:
  git_diff_free(diff);
  git_tree_free(tree);
  git_commit_free(c);
  if (rc < 0) {
    json_decref(*deletes);
    json_decref(*record);
    *deletes = *record = NULL;
  }
  return rc;
}

static char *record_path(ws_local *l, const char *sid, bool mkdirs) {
  const char *gd = git_repository_path(l->repo); /* ends with '/' */
  char buf[PATH_MAX];
  snprintf(buf, sizeof(buf), "%scleanroom", gd);
  if (mkdirs) mkdir(buf, 0700);
  snprintf(buf, sizeof(buf), "%scleanroom/copy-in", gd);
  if (mkdirs) mkdir(buf, 0700);
  for (const char *p = sid; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
      return NULL;
  snprintf(buf, sizeof(buf), "%scleanroom/copy-in/%s.json", gd, sid);
  return strdup(buf);
}

int ws_local_record_save(ws_local *l, const char *sid, json_t *files, cr_error **err) {
  _cleanup_free_ char *p = record_path(l, sid, true);
  if (!p) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "bad sandbox id '%s'", sid);
  char *txt = json_dumps(files, JSON_SORT_KEYS | JSON_INDENT(1));
  int r = txt ? cr_write_file_atomic(p, txt, strlen(txt), 0600) : -ENOMEM;
  free(txt);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "writing %s", p);
  return 0;
}

json_t *ws_local_record_load(ws_local *l, const char *sid) {
  _cleanup_free_ char *p = record_path(l, sid, false);
  if (!p) return NULL;
  json_error_t je;
  json_t *j = json_load_file(p, 0, &je);
  if (j && !json_is_object(j)) {
    json_decref(j);
    return NULL;
  }
  return j;
}

/* Opens the parent directory of path below the root, one component at a
 * time with O_NOFOLLOW (creating missing ones when create). */
static int open_parent(ws_local *l, const char *path, bool create, const char **base) {
  int fd = open(l->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  char comp[PATH_MAX];
  const char *s = path;
  for (;;) {
    const char *e = strchr(s, '/');
    if (!e) break;
    size_t n = (size_t)(e - s);
    if (n >= sizeof(comp)) {
      close(fd);
      return -ENAMETOOLONG;
    }
    memcpy(comp, s, n);
    comp[n] = '\0';
    int nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (nfd < 0 && errno == ENOENT && create) {
      if (mkdirat(fd, comp, 0755) < 0 && errno != EEXIST) {
        int er = errno;
        close(fd);
        return -er;
      }
      nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    int er = errno;
    close(fd);
    if (nfd < 0) return er == ENOTDIR ? -ELOOP : -er;
    fd = nfd;
    s = e + 1;
  }
  *base = s;
  return fd;
}

int ws_local_oid(ws_local *l, const char *path, char ret[41], uint32_t *mode) {
  ret[0] = '\0';
  *mode = 0;
  if (!ws_path_ok(path)) return -EINVAL;
  const char *base;
  int pfd = open_parent(l, path, false, &base);
  if (pfd == -ENOENT) return 0;
  if (pfd < 0) return pfd;
  struct stat st;
  int rc = 0;
  if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
    rc = errno == ENOENT ? 0 : -errno;
    close(pfd);
    return rc;
  }
  cr_buf b = {0};
  if (S_ISLNK(st.st_mode)) {
    char t[PATH_MAX];
    ssize_t k = readlinkat(pfd, base, t, sizeof(t) - 1);
    if (k < 0) rc = -errno;
    else rc = cr_buf_append(&b, t, (size_t)k);
    *mode = 0120000;
  } else if (S_ISREG(st.st_mode)) {
    int fd = openat(pfd, base, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) rc = -errno;
    else {
      char tmp[65536];
      ssize_t k;
      while ((k = read(fd, tmp, sizeof(tmp))) > 0)
        if ((rc = cr_buf_append(&b, tmp, (size_t)k)) < 0) break;
      if (k < 0) rc = -errno;
      close(fd);
    }
    *mode = (st.st_mode & 0111) ? 0100755 : 0100644;
  } else {
    *mode = 040000; /* a directory (or other): not a file git would write here */
    snprintf(ret, 41, "(directory)");
    close(pfd);
    return 0;
  }
  close(pfd);
  if (rc == 0) ws_blob_oid(b.data ? (const void *)b.data : "", b.len, ret);
  cr_buf_free(&b);
  return rc;
}

int ws_local_put(ws_local *l, const char *path, uint32_t mode, const void *data, size_t n,
                 cr_error **err) {
  if (!ws_path_ok(path) || ws_path_has_git(path))
    return cr_error_set(err, CR_E_WORKSPACE_UNSAFE_PATH, 0,
                        "refusing '%s': not a path inside the checkout", path);
  const char *base;
  int pfd = open_parent(l, path, mode != 0, &base);
  if (pfd == -ENOENT && mode == 0) return 0;
  if (pfd == -ELOOP)
    return cr_error_set(err, CR_E_WORKSPACE_UNSAFE_PATH, ELOOP,
                        "refusing '%s': a parent is a symlink or not a directory", path);
  if (pfd < 0) return cr_error_set(err, CR_E_IO, -pfd, "opening the parent of %s", path);
  int rc = 0;
  if (mode == 0) {
    if (unlinkat(pfd, base, 0) < 0 && errno != ENOENT)
      rc = cr_error_set(err, CR_E_IO, errno, "removing %s", path);
    close(pfd);
    return rc;
  }
  char tmp[64];
  snprintf(tmp, sizeof(tmp), ".cleanroom-tmp-%d", (int)getpid());
  unlinkat(pfd, tmp, 0);
  if (mode == 0120000) {
    char *t = strndup(data ? data : "", n);
    if (!t || symlinkat(t, pfd, tmp) < 0) rc = cr_error_set(err, CR_E_IO, errno, "writing %s", path);
    free(t);
  } else {
    int fd = openat(pfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    mode == 0100755 ? 0755 : 0644);
    if (fd < 0) rc = cr_error_set(err, CR_E_IO, errno, "writing %s", path);
    else {
      const uint8_t *p = data;
      size_t left = n;
      while (left && rc == 0) {
        ssize_t k = write(fd, p, left);
        if (k < 0) {
          if (errno == EINTR) continue;
          rc = cr_error_set(err, CR_E_IO, errno, "writing %s", path);
          break;
        }
        p += k;
        left -= (size_t)k;
      }
      if (rc == 0 && fchmod(fd, mode == 0100755 ? 0755 : 0644) < 0)
        rc = cr_error_set(err, CR_E_IO, errno, "chmod %s", path);
      close(fd);
    }
  }
  if (rc == 0) {
    struct stat st;
    if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
      rc = cr_error_set(err, CR_E_WORKSPACE_CONFLICT, EISDIR,
                        "%s is a directory in the checkout", path);
    else if (renameat(pfd, tmp, pfd, base) < 0)
      rc = cr_error_set(err, CR_E_IO, errno, "renaming into %s", path);
  }
  if (rc < 0) unlinkat(pfd, tmp, 0);
  close(pfd);
  return rc;
}

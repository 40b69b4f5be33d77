/* The host-side mirror cache: one bare repository per remote URL under
 * <data>/git/mirrors/, shared by every sandbox of that remote. A ref is
 * resolved against the remote (ls-remote) to an exact commit; the fetch runs
 * only when that commit is not in the cache yet, and is incremental (libgit2
 * negotiates with what the mirror has). Credentials stay on the host: the
 * remote is contacted from here, never from the guest. */
#include "workspace/ws.h"

#include "util/fs.h"
#include "util/macro.h"
#include "util/paths.h"
#include "util/spawn.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

char *ws_mirror_dir(const char *url) {
  char hex[65];
  cr_sha256_hex(url, strlen(url), hex);
  hex[32] = '\0';
  char sub[128];
  snprintf(sub, sizeof(sub), "git/mirrors/%s.git", hex);
  return cr_data_path(sub);
}

void ws_resolved_clear(ws_resolved *r) {
  free(r->ref);
  *r = (ws_resolved){0};
}

static bool is_hex40(const char *s) {
  if (!s || strlen(s) != 40) return false;
  for (int i = 0; i < 40; i++)
    if (!isxdigit((unsigned char)s[i])) return false;
  return true;
}

static int mkdir_p(const char *path) {
  char tmp[4096];
  snprintf(tmp, sizeof(tmp), "%s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST) return -errno;
    *p = '/';
  }
  if (mkdir(tmp, 0700) < 0 && errno != EEXIST) return -errno;
  return 0;
}

static int gerr(cr_error **err, const char *what, const char *url) {
  return cr_error_set(err, CR_E_WORKSPACE_FETCH, 0, "%s %s: %s", what, url, ws_git_error());
}

/* Opens (creating) the mirror and takes its lock. */
static int open_mirror(const char *url, git_repository **ret, int *ret_lock, cr_error **err) {
  _cleanup_free_ char *dir = ws_mirror_dir(url);
  if (!dir) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "mirror path");
  _cleanup_free_ char *parent = strdup(dir);
  if (!parent) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "mirror path");
  *strrchr(parent, '/') = '\0';
  int r = mkdir_p(parent);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "creating %s", parent);
  char lockpath[4200];
  snprintf(lockpath, sizeof(lockpath), "%s.lock", dir);
  int fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return cr_error_set(err, CR_E_IO, errno, "opening %s", lockpath);
  if (flock(fd, LOCK_EX) < 0) {
    int e = errno;
    close(fd);
    return cr_error_set(err, CR_E_IO, e, "locking %s", lockpath);
  }
  git_repository *repo = NULL;
  if (git_repository_open_bare(&repo, dir) < 0 && git_repository_init(&repo, dir, 1) < 0) {
    close(fd);
    return cr_error_set(err, CR_E_IO, 0, "creating the mirror %s: %s", dir, ws_git_error());
  }
  *ret = repo;
  *ret_lock = fd;
  return 0;
}

static bool have_commit(git_repository *repo, const git_oid *oid) {
  git_commit *c = NULL;
  if (git_commit_lookup(&c, repo, oid) < 0) return false;
  git_commit_free(c);
  return true;
}

static int on_transfer(const git_indexer_progress *st, void *ud) { return 0; }

/* Credentials for the remote, on the host only: the host's git credential
 * helpers (`git credential fill`, with the daemon's HOME and git config;
 * never a prompt). Asked once per connection: a second call means the first
 * answer was refused, and libgit2's error says so. */
typedef struct cred_ctx {
  int asked;
} cred_ctx;

static int on_credentials(git_credential **out, const char *url, const char *user_from_url,
                          unsigned int allowed, void *payload) {
  cred_ctx *cc = payload;
  if (!(allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT) || cc->asked++) return GIT_PASSTHROUGH;
  if (strlen(url) > 4000 || strpbrk(url, "\n\r")) return GIT_PASSTHROUGH;
  char input[4200];
  snprintf(input, sizeof(input), "url=%s\n%s%s%s\n", url, user_from_url ? "username=" : "",
           user_from_url ? user_from_url : "", user_from_url ? "\n" : "");
  /* never a prompt (env: no setenv in a worker thread) */
  char *argv[] = {(char *)"env", (char *)"GIT_TERMINAL_PROMPT=0", (char *)"git", (char *)"-c",
                  (char *)"core.askPass=", (char *)"credential", (char *)"fill", NULL};
  _cleanup_free_ char *res = NULL;
  cr_error *e = NULL;
  int st = cr_run_input(argv, input, &res, 16384, &e);
  cr_error_free(e);
  if (st != 0 || !res) return GIT_PASSTHROUGH;
  size_t res_len = strlen(res);
  char *user = NULL, *pass = NULL, *save = NULL;
  for (char *l = strtok_r(res, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    if (!strncmp(l, "username=", 9)) user = l + 9;
    else if (!strncmp(l, "password=", 9)) pass = l + 9;
  }
  int r = user && pass ? git_credential_userpass_plaintext_new(out, user, pass) : GIT_PASSTHROUGH;
  explicit_bzero(res, res_len); /* libgit2 keeps its own copy */
  return r;
}

int ws_mirror_resolve(const char *url, const char *ref, ws_resolved *ret, cr_error **err) {
  *ret = (ws_resolved){0};
  if (!url || !*url) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "no repository URL");
  if (ref && !*ref) ref = NULL;
  git_libgit2_init();
  git_repository *repo = NULL;
  int lock = -1, rc = -1;
  git_remote *remote = NULL;
  if (open_mirror(url, &repo, &lock, err) < 0) goto out;

  git_oid want;
  bool want_set = false;
  char *want_ref = NULL;
  /* A commit id the cache already has needs no network at all. */
  if (is_hex40(ref) && git_oid_fromstr(&want, ref) == 0 && have_commit(repo, &want)) {
    git_oid_tostr(ret->commit, sizeof(ret->commit), &want);
    rc = 0;
    goto out;
  }
  if (git_remote_create_anonymous(&remote, repo, url) < 0) {
    gerr(err, "bad repository URL", url);
    goto out;
  }
  git_remote_callbacks cbs = GIT_REMOTE_CALLBACKS_INIT;
  cred_ctx cc = {0};
  cbs.credentials = on_credentials;
  cbs.payload = &cc;
  if (git_remote_connect(remote, GIT_DIRECTION_FETCH, &cbs, NULL, NULL) < 0) {
    gerr(err, "connecting to", url);
    goto out;
  }
  const git_remote_head **heads = NULL;
  size_t nheads = 0;
  if (git_remote_ls(&heads, &nheads, remote) < 0) {
    gerr(err, "listing refs of", url);
    goto out;
  }
  /* candidates in order of preference; a peeled tag (^{}) wins over the tag */
  char cand[4][1100];
  int ncand = 0;
  if (!ref) {
    snprintf(cand[ncand++], sizeof(cand[0]), "HEAD");
  } else if (!is_hex40(ref)) {
    if (strlen(ref) > 1000) {
      cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "ref too long");
      goto out;
    }
    snprintf(cand[ncand++], sizeof(cand[0]), "%s", ref);
    snprintf(cand[ncand++], sizeof(cand[0]), "refs/heads/%s", ref);
    snprintf(cand[ncand++], sizeof(cand[0]), "refs/tags/%s", ref);
  }
  for (int c = 0; c < ncand && !want_set; c++) {
    char peeled[sizeof(cand[0]) + 4];
    snprintf(peeled, sizeof(peeled), "%.1099s^{}", cand[c]); /* a cand is < 1100 */
    for (size_t i = 0; i < nheads; i++)
      if (strcmp(heads[i]->name, peeled) == 0) {
        want = heads[i]->oid;
        want_set = true;
      }
    for (size_t i = 0; i < nheads && !want_set; i++)
      if (strcmp(heads[i]->name, cand[c]) == 0) {
        want = heads[i]->oid;
        want_set = true;
        want_ref = strdup(heads[i]->symref_target ? heads[i]->symref_target : heads[i]->name);
      }
    if (want_set && !want_ref) want_ref = strdup(cand[c]);
  }
  if (!want_set && is_hex40(ref)) {
    git_oid_fromstr(&want, ref);
    want_set = true;
  }
  if (!want_set) {
    if (ref)
      cr_error_set(err, CR_E_WORKSPACE_REF_NOT_FOUND, 0, "%s has no branch, tag or ref '%s'", url, ref);
    else
      cr_error_set(err, CR_E_WORKSPACE_REF_NOT_FOUND, 0, "%s has no HEAD (an empty repository?)", url);
    goto out;
  }
  ret->ref = want_ref;
  git_remote_disconnect(remote);
  if (!have_commit(repo, &want)) {
    /* Heads and tags into the mirror; a ref outside them (refs/pull/...) is
     * fetched into refs/cleanroom/ so that it stays. */
    char extra[1200];
    char heads_spec[] = "+refs/heads/*:refs/heads/*", tags_spec[] = "+refs/tags/*:refs/tags/*";
    char *specs[3] = {heads_spec, tags_spec, extra};
    size_t nspecs = 2;
    if (want_ref && strncmp(want_ref, "refs/heads/", 11) && strncmp(want_ref, "refs/tags/", 10) &&
        strncmp(want_ref, "refs/", 5) == 0) {
      snprintf(extra, sizeof(extra), "+%s:refs/cleanroom/%s", want_ref, want_ref + 5);
      nspecs = 3;
    }
    git_strarray sa = {specs, nspecs};
    git_fetch_options fo = GIT_FETCH_OPTIONS_INIT;
    fo.callbacks.transfer_progress = on_transfer;
    cred_ctx fcc = {0};
    fo.callbacks.credentials = on_credentials;
    fo.callbacks.payload = &fcc;
    fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
    if (git_remote_fetch(remote, &sa, &fo, NULL) < 0) {
      gerr(err, "fetching", url);
      goto out;
    }
    const git_indexer_progress *st = git_remote_stats(remote);
    ret->fetched = true;
    ret->received_objects = st->received_objects;
    ret->received_bytes = st->received_bytes;
    if (!have_commit(repo, &want)) {
      char hex[41];
      git_oid_tostr(hex, sizeof(hex), &want);
      cr_error_set(err, CR_E_WORKSPACE_REF_NOT_FOUND, 0,
                   "%s: commit %s is not reachable from its branches or tags", url, hex);
      goto out;
    }
  }
  git_oid_tostr(ret->commit, sizeof(ret->commit), &want);
  rc = 0;
out:
  if (rc < 0) ws_resolved_clear(ret);
  git_remote_free(remote);
  git_repository_free(repo);
  if (lock >= 0) close(lock);
  git_libgit2_shutdown();
  return rc;
}

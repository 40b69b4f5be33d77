/* Image pulls and imports on a libuv worker thread (see pull.h). */
#include "api/pull.h"
#include "util/macro.h"

#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

typedef struct pull_job {
  uv_work_t work;
  uv_async_t async;
  pthread_mutex_t mu;
  /* progress: the newest event, plus whether a phase changed unseen */
  char phase[64];
  uint64_t done, total;
  bool dirty;
  char last_sent_phase[64];
  /* input */
  char *ref;
  char *auth_file;
  char *platform;
  image_credentials creds;
  bool have_creds;
  /* an import: the client's descriptor, its path, who it is */
  bool import;
  int fd;
  char *shown;
  api_peer peer;
  /* output */
  image_info *info;
  image_pull_stats stats;
  cr_error *err;
  api_pull_progress_fn progress;
  api_pull_done_fn done_cb;
  void *ud;
} pull_job;

static void job_free(pull_job *j) {
  pthread_mutex_destroy(&j->mu);
  free(j->ref);
  free(j->auth_file);
  free(j->platform);
  image_credentials_clear(&j->creds);
  if (j->fd >= 0) close(j->fd);
  free(j->shown);
  image_info_free(j->info);
  cr_error_free(j->err);
  free(j);
}

static void flush_progress(pull_job *j) {
  char phase[64];
  uint64_t done, total;
  pthread_mutex_lock(&j->mu);
  bool dirty = j->dirty;
  j->dirty = false;
  memcpy(phase, j->phase, sizeof(phase));
  done = j->done;
  total = j->total;
  pthread_mutex_unlock(&j->mu);
  if (dirty && j->progress) j->progress(j->ud, phase, done, total);
}

static void on_async(uv_async_t *a) { flush_progress(a->data); }

/* worker thread */
static void on_progress(const char *phase, uint64_t done, uint64_t total, void *ud) {
  pull_job *j = ud;
  pthread_mutex_lock(&j->mu);
  snprintf(j->phase, sizeof(j->phase), "%s", phase);
  j->done = done;
  j->total = total;
  j->dirty = true;
  pthread_mutex_unlock(&j->mu);
  uv_async_send(&j->async);
}

/* A directory passed by a client that is not root: the daemon reads files
 * inside it as root, so it checks they are the client's to read (mode bits
 * against its uid, gid and groups; no symlinks, which could point
 * anywhere). A file's descriptor needs no check: the client opened it. */
static __thread const api_peer *walk_peer;
static __thread size_t walk_top_len;
static __thread char walk_bad[256];

static bool peer_in_group(const api_peer *p, gid_t g) {
  if (g == p->gid) return true;
  for (size_t i = 0; i < p->n_groups; i++)
    if (p->groups[i] == g) return true;
  return false;
}

static int walk_check(const char *path, const struct stat *st, int flag, struct FTW *f) {
  const api_peer *p = walk_peer;
  const char *rel = f->level && strlen(path) > walk_top_len ? path + walk_top_len + 1 : ".";
  if (flag == FTW_SL || flag == FTW_SLN) {
    snprintf(walk_bad, sizeof(walk_bad), "'%s' is a symlink (not followed for a client)", rel);
    return 1;
  }
  if (flag == FTW_NS || flag == FTW_DNR || (!S_ISDIR(st->st_mode) && !S_ISREG(st->st_mode))) {
    snprintf(walk_bad, sizeof(walk_bad), "'%s' is not a regular file or directory", rel);
    return 1;
  }
  mode_t need = S_ISDIR(st->st_mode) ? 05 : 04;
  mode_t have = st->st_uid == p->uid ? (st->st_mode >> 6) & 07
                : peer_in_group(p, st->st_gid) ? (st->st_mode >> 3) & 07
                                               : st->st_mode & 07;
  if ((have & need) != need) {
    snprintf(walk_bad, sizeof(walk_bad), "uid %u may not read '%s'", (unsigned)p->uid, rel);
    return 1;
  }
  return 0;
}

static int check_dir(pull_job *j, cr_error **err) {
  struct stat st;
  if (fstat(j->fd, &st) < 0) return cr_error_set(err, CR_E_IO, errno, "%s", j->shown);
  if (!S_ISDIR(st.st_mode) || !j->peer.known || j->peer.uid == 0) return 0;
  char top[40];
  snprintf(top, sizeof(top), "/proc/self/fd/%d/.", j->fd); /* "/." follows the link */
  walk_peer = &j->peer;
  walk_top_len = strlen(top);
  walk_bad[0] = '\0';
  int r = nftw(top, walk_check, 16, FTW_PHYS);
  if (r != 0)
    return cr_error_set(err, CR_E_PERMISSION_DENIED, r < 0 ? errno : 0,
                        "importing %s: %s", j->shown, walk_bad[0] ? walk_bad : "cannot walk it");
  return 0;
}

static void run(uv_work_t *w) {
  pull_job *j = w->data;
  if (j->import) {
    if (check_dir(j, &j->err) == 0)
      image_import_fd(j->fd, j->shown, j->ref, on_progress, j, &j->info, &j->err);
    return;
  }
  image_pull_opts o = {.auth_file = j->auth_file,
                       .creds = j->have_creds ? &j->creds : NULL,
                       .platform = j->platform};
  image_pull(j->ref, &o, on_progress, j, &j->info, &j->stats, &j->err);
}

static void on_closed(uv_handle_t *h) { job_free(h->data); }

static void after(uv_work_t *w, int status) {
  pull_job *j = w->data;
  flush_progress(j);
  cr_error *e = TAKE_PTR(j->err);
  if (!e && status < 0)
    cr_error_set(&e, CR_E_INTERNAL, 0, "the %s was cancelled", j->import ? "import" : "pull");
  if (j->done_cb)
    j->done_cb(j->ud, e ? NULL : j->info, e || j->import ? NULL : &j->stats, e);
  else cr_error_free(e);
  uv_close((uv_handle_t *)&j->async, on_closed);
}

static pull_job *job_new(api_pull_progress_fn progress, api_pull_done_fn done, void *ud) {
  pull_job *j = calloc(1, sizeof(*j));
  if (!j) return NULL;
  pthread_mutex_init(&j->mu, NULL);
  j->fd = -1;
  j->progress = progress;
  j->done_cb = done;
  j->ud = ud;
  return j;
}

static int job_queue(daemon_ctx *d, pull_job *j, cr_error **err) {
  if (uv_async_init(d->loop, &j->async, on_async) < 0) {
    job_free(j);
    return cr_error_set(err, CR_E_INTERNAL, 0, "uv_async_init");
  }
  j->async.data = j;
  j->work.data = j;
  int r = uv_queue_work(d->loop, &j->work, run, after);
  if (r < 0) {
    uv_close((uv_handle_t *)&j->async, on_closed);
    return cr_error_set(err, CR_E_INTERNAL, 0, "uv_queue_work: %s", uv_strerror(r));
  }
  return 0;
}

int api_import_start(daemon_ctx *d, int fd, const char *shown_path, const char *ref,
                     const api_peer *peer, api_pull_progress_fn progress, api_pull_done_fn done,
                     void *ud, cr_error **err) {
  pull_job *j = job_new(progress, done, ud);
  if (!j) {
    close(fd);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "import");
  }
  j->import = true;
  j->fd = fd;
  if (peer) j->peer = *peer;
  j->shown = strdup(shown_path);
  if (!j->shown || (ref && !(j->ref = strdup(ref)))) {
    job_free(j);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "import");
  }
  return job_queue(d, j, err);
}

int api_pull_start(daemon_ctx *d, const char *ref, json_t *params, api_pull_progress_fn progress,
                   api_pull_done_fn done, void *ud, cr_error **err) {
  pull_job *j = job_new(progress, done, ud);
  if (!j) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "pull");
  j->ref = strdup(ref);
  json_t *auth = json_object_get(params, "auth");
  const char *u = json_string_value(json_object_get(auth, "username"));
  const char *p = json_string_value(json_object_get(auth, "password"));
  const char *af = json_string_value(json_object_get(params, "auth_file"));
  const char *pl = json_string_value(json_object_get(params, "platform"));
  if (u && p) {
    j->creds.username = strdup(u);
    j->creds.password = strdup(p);
    j->have_creds = true;
  }
  if (af) j->auth_file = strdup(af);
  if (pl) j->platform = strdup(pl);
  if (!j->ref || (u && p && (!j->creds.username || !j->creds.password)) || (af && !j->auth_file) ||
      (pl && !j->platform)) {
    job_free(j);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "pull");
  }
  return job_queue(d, j, err);
}

bool api_ref_names_registry(const char *ref) {
  if (!ref) return false;
  const char *slash = strchr(ref, '/');
  if (!slash) return false;
  size_t n = (size_t)(slash - ref);
  return memchr(ref, '.', n) || memchr(ref, ':', n) || (n == 9 && !strncmp(ref, "localhost", 9));
}

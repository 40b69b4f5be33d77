/* Image pulls on a libuv worker thread (see pull.h). */
#include "api/pull.h"
#include "util/macro.h"

#include <pthread.h>
#include <string.h>

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

static void run(uv_work_t *w) {
  pull_job *j = w->data;
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
  if (!e && status < 0) cr_error_set(&e, CR_E_INTERNAL, 0, "the pull was cancelled");
  if (j->done_cb) j->done_cb(j->ud, e ? NULL : j->info, e ? NULL : &j->stats, e);
  else cr_error_free(e);
  uv_close((uv_handle_t *)&j->async, on_closed);
}

int api_pull_start(daemon_ctx *d, const char *ref, json_t *params, api_pull_progress_fn progress,
                   api_pull_done_fn done, void *ud, cr_error **err) {
  pull_job *j = calloc(1, sizeof(*j));
  if (!j) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "pull");
  pthread_mutex_init(&j->mu, NULL);
  j->progress = progress;
  j->done_cb = done;
  j->ud = ud;
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

bool api_ref_names_registry(const char *ref) {
  if (!ref) return false;
  const char *slash = strchr(ref, '/');
  if (!slash) return false;
  size_t n = (size_t)(slash - ref);
  return memchr(ref, '.', n) || memchr(ref, ':', n) || (n == 9 && !strncmp(ref, "localhost", 9));
}

/* cache.list, cache.stats, cache.prune (docs/api.md): the gateway's content
 * cache, read and pruned by the daemon (it owns the store; `cleanroom cache`
 * asks it). The cache's calls are blocking file I/O, so each request runs on
 * a libuv worker thread with its own handle on the directory (the cache's
 * flock orders it against the gateway's threads). */
#include "api/methods-cache.h"
#include "cache/cache.h"
#include "util/macro.h"

#include <errno.h>
#include <stdlib.h>

typedef struct cache_job {
  uv_work_t work;
  api_sink *sink;
  json_t *id;
  api_cache_op op;
  bool all;
  int64_t keep; /* -1: the cache's size limit */
  /* output */
  json_t *result;
  cr_error *err;
} cache_job;

static void cache_work(uv_work_t *w) {
  cache_job *j = w->data;
  cache *c = NULL;
  if (cache_open_local(NULL, 0, &c, &j->err) < 0) return;
  if (j->op == API_CACHE_LIST) {
    j->result = cache_list(c);
  } else if (j->op == API_CACHE_STATS) {
    j->result = cache_stats(c);
  } else {
    uint64_t keep = 0;
    if (!j->all && j->keep >= 0) {
      keep = (uint64_t)j->keep;
    } else if (!j->all) {
      json_t *st = cache_stats(c);
      keep = (uint64_t)json_integer_value(json_object_get(st, "max_bytes"));
      json_decref(st);
    }
    size_t removed = 0;
    if (cache_prune(c, keep, &removed, &j->err) == 0)
      j->result = json_pack("{s:I, s:o}", "removed", (json_int_t)removed, "stats", cache_stats(c));
  }
  cache_close(c);
  if (!j->result && !j->err) cr_error_set(&j->err, CR_E_INTERNAL, ENOMEM, "the content cache");
}

static void cache_done(uv_work_t *w, int status) {
  cache_job *j = w->data;
  if (status < 0 && !j->err && !j->result)
    cr_error_set(&j->err, CR_E_INTERNAL, 0, "the content cache request was cancelled");
  if (j->result) {
    api_sink_result(j->sink, j->id, TAKE_PTR(j->result), NULL);
  } else {
    api_sink_error(j->sink, j->id, API_OPERATION_FAILED,
                   j->err && j->err->message ? j->err->message : "content cache failed",
                   cr_error_reason(j->err));
  }
  json_decref(j->result);
  cr_error_free(j->err);
  api_sink_unref(j->sink);
  json_decref(j->id);
  free(j);
}

void api_cache_call(daemon_ctx *d, api_sink *sink, json_t *id, json_t *params, api_cache_op op) {
  bool all = false;
  int64_t keep = -1;
  if (op == API_CACHE_PRUNE) {
    json_t *a = json_object_get(params, "all"), *k = json_object_get(params, "keep_bytes");
    const char *bad = NULL;
    if (a && !json_is_boolean(a)) bad = "'all' must be a boolean";
    else if (k && !json_is_null(k) && (!json_is_integer(k) || json_integer_value(k) < 0))
      bad = "'keep_bytes' must be an integer >= 0";
    else if (json_is_true(a) && json_is_integer(k))
      bad = "give 'all' or 'keep_bytes', not both";
    if (bad) {
      if (id) api_sink_error(sink, id, API_INVALID_PARAMS, bad, CR_E_INVALID_ARGUMENT);
      return;
    }
    all = json_is_true(a);
    if (json_is_integer(k)) keep = (int64_t)json_integer_value(k);
  }
  if (!id) return; /* a notification: nobody wants the answer */
  cache_job *j = calloc(1, sizeof(*j));
  if (!j) {
    api_sink_error(sink, id, API_INTERNAL_ERROR, "out of memory", CR_E_INTERNAL);
    return;
  }
  j->work.data = j;
  j->sink = api_sink_ref(sink);
  j->id = json_incref(id);
  j->op = op;
  j->all = all;
  j->keep = keep;
  if (uv_queue_work(d->loop, &j->work, cache_work, cache_done) < 0) {
    api_sink_error(sink, id, API_INTERNAL_ERROR, "cannot queue the content cache request",
                   CR_E_INTERNAL);
    api_sink_unref(j->sink);
    json_decref(j->id);
    free(j);
  }
}

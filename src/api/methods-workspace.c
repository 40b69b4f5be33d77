/* Control API: workspace.* methods (docs/api.md) and the workspace step of
 * sandbox.create. The work itself is src/workspace/ops.c. */
#include "api/methods-workspace.h"

#include "util/base64.h"
#include "util/macro.h"
#include "workspace/ops.h"

#include <stdio.h>
#include <string.h>

typedef struct wreq {
  daemon_ctx *d;
  api_sink *sink;
  json_t *id;
  json_t *params;
  json_t *sandbox; /* sandbox.create: the sandbox JSON to reply with */
  char sid[32];
  char commit[41];
} wreq;

static wreq *wreq_new(daemon_ctx *d, api_sink *sink, json_t *id, json_t *params) {
  wreq *w = calloc(1, sizeof(*w));
  if (!w) return NULL;
  w->d = d;
  w->sink = api_sink_ref(sink);
  w->id = id ? json_incref(id) : NULL;
  w->params = json_incref(params);
  return w;
}

static void wreq_free(wreq *w) {
  api_sink_unref(w->sink);
  json_decref(w->id);
  json_decref(w->params);
  json_decref(w->sandbox);
  free(w);
}

static void send_err(api_sink *sink, json_t *id, const cr_error *e) {
  if (id)
    api_sink_error(sink, id, API_OPERATION_FAILED, e && e->message ? e->message : "failed",
                   cr_error_reason(e));
}

static void bad(api_sink *sink, json_t *id, const char *msg) {
  if (id) api_sink_error(sink, id, API_INVALID_PARAMS, msg, CR_E_INVALID_ARGUMENT);
}

static void done_reply(void *ud, json_t *result, cr_error *err) {
  wreq *w = ud;
  if (err) send_err(w->sink, w->id, err);
  else if (w->id) api_sink_result(w->sink, w->id, result, NULL);
  else json_decref(result);
  cr_error_free(err);
  wreq_free(w);
}

static const char *str(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* Starts op; on a synchronous failure replies and frees w. */
#define START(w, call)                            \
  do {                                            \
    cr_error *e_ = NULL;                          \
    if ((call) < 0) {                             \
      send_err((w)->sink, (w)->id, e_);           \
      cr_error_free(e_);                          \
      wreq_free(w);                               \
    }                                             \
  } while (0)
#define ERRP (&e_)

void api_ws_resolve(daemon_ctx *d, api_sink *sink, json_t *id, json_t *params) {
  wreq *w = wreq_new(d, sink, id, params);
  if (!w) return;
  START(w, ws_resolve_async(d->loop, str(params, "repo_url"), str(params, "ref"), done_reply, w,
                            ERRP));
}

void api_ws_checkout(daemon_ctx *d, api_sink *sink, json_t *id, json_t *params) {
  const char *sid = str(params, "sandbox_id");
  if (!sid) return bad(sink, id, "missing 'sandbox_id'");
  wreq *w = wreq_new(d, sink, id, params);
  if (!w) return;
  START(w, ws_checkout(d->sandboxes, sid, str(params, "repo_url"), str(params, "ref"), NULL,
                       str(params, "path"), json_is_true(json_object_get(params, "submodules")),
                       done_reply, w, ERRP));
}

void api_ws_diff(daemon_ctx *d, api_sink *sink, json_t *id, json_t *params) {
  const char *sid = str(params, "sandbox_id");
  if (!sid) return bad(sink, id, "missing 'sandbox_id'");
  wreq *w = wreq_new(d, sink, id, params);
  if (!w) return;
  unsigned flags = json_is_true(json_object_get(params, "stat_only")) ? WS_DIFF_STAT_ONLY : 0;
  START(w, ws_diff(d->sandboxes, sid, json_object_get(params, "paths"), flags, done_reply, w,
                   ERRP));
}

/* ---- copy-in: the tar may come in several calls ("more": true), each one
 * line of JSON-RPC (4 MiB); the pieces are kept per sandbox until the last. */

typedef struct staged {
  struct staged *next;
  char sid[32];
  cr_buf tar;
} staged;
static staged *staging;

static staged *stage_get(const char *sid, bool create) {
  for (staged *s = staging; s; s = s->next)
    if (strcmp(s->sid, sid) == 0) return s;
  if (!create) return NULL;
  staged *s = calloc(1, sizeof(*s));
  if (!s) return NULL;
  snprintf(s->sid, sizeof(s->sid), "%s", sid);
  s->tar = CR_BUF_INIT(CR_WS_MAX_COPY_IN);
  s->next = staging;
  staging = s;
  return s;
}

static void stage_drop(staged *t) {
  for (staged **p = &staging; *p; p = &(*p)->next)
    if (*p == t) {
      *p = t->next;
      break;
    }
  cr_buf_free(&t->tar);
  free(t);
}

void api_ws_copy_in(daemon_ctx *d, api_sink *sink, json_t *id, json_t *params) {
  const char *sid = str(params, "sandbox_id");
  if (!sid) return bad(sink, id, "missing 'sandbox_id'");
  sbx *s = sbx_find(d->sandboxes, sid);
  if (!s) {
    cr_error *e = NULL;
    cr_error_set(&e, CR_E_SANDBOX_NOT_FOUND, 0, "no sandbox '%s'", sid);
    send_err(sink, id, e);
    cr_error_free(e);
    return;
  }
  sid = sbx_id(s); /* "last" -> the id */
  const char *tar = str(params, "tar");
  uint8_t *buf = NULL;
  size_t n = 0;
  if (tar && cr_base64_decode(tar, strlen(tar), &buf, &n) < 0)
    return bad(sink, id, "'tar' is not valid base64");
  staged *t = stage_get(sid, json_is_true(json_object_get(params, "more")));
  if (t) {
    int r = n ? cr_buf_append(&t->tar, buf, n) : 0;
    free(buf);
    buf = NULL;
    if (r < 0) {
      stage_drop(t);
      cr_error *e = NULL;
      if (r == -ENOMEM) cr_error_set(&e, CR_E_INTERNAL, ENOMEM, "staging the copy-in");
      else
        cr_error_set(&e, CR_E_WORKSPACE_TOO_LARGE, 0, "copy-in is larger than %u MiB",
                     CR_WS_MAX_COPY_IN >> 20);
      send_err(sink, id, e);
      cr_error_free(e);
      return;
    }
    if (json_is_true(json_object_get(params, "more"))) {
      if (id) api_sink_result(sink, id, json_pack("{s:I}", "staged", (json_int_t)t->tar.len), NULL);
      return;
    }
    buf = TAKE_PTR(t->tar.data);
    n = t->tar.len;
    t->tar = CR_BUF_INIT(CR_WS_MAX_COPY_IN);
    stage_drop(t);
  }
  wreq *w = wreq_new(d, sink, id, params);
  if (!w) {
    free(buf);
    return;
  }
  START(w, ws_copy_in(d->sandboxes, sid, buf, n, json_object_get(params, "delete"), done_reply,
                      w, ERRP));
}

/* ---- sandbox.create {workspace: {repo_url, ref, path}}: resolve (fetch)
 * before the sandbox boots, then check the exact commit out once it is
 * ready, then reply with the sandbox. */

static void create_copied_in(void *ud, json_t *result, cr_error *err) {
  wreq *w = ud;
  if (err) {
    send_err(w->sink, w->id, err);
    cr_error_free(err);
  } else {
    sbx *s = sbx_find(w->d->sandboxes, w->sid);
    json_t *sb = s ? sbx_to_json(s) : json_incref(w->sandbox);
    if (w->id) api_sink_result(w->sink, w->id, sb, NULL);
    else json_decref(sb);
  }
  json_decref(result);
  wreq_free(w);
}

static void create_checked_out(void *ud, json_t *result, cr_error *err) {
  wreq *w = ud;
  const char *local = str(json_object_get(w->params, "workspace"), "copy_in_from");
  if (err || !local) return create_copied_in(ud, result, err);
  json_decref(result);
  START(w, ws_copy_in_local(w->d->sandboxes, w->sid, local, create_copied_in, w, ERRP));
}

static void create_ready(void *ud, sbx *s, cr_error *err) {
  wreq *w = ud;
  if (err) {
    send_err(w->sink, w->id, err);
    cr_error_free(err);
    wreq_free(w);
    return;
  }
  sbx_detach_progress(s);
  snprintf(w->sid, sizeof(w->sid), "%s", sbx_id(s));
  w->sandbox = sbx_to_json(s);
  json_t *ws = json_object_get(w->params, "workspace");
  api_sink_notify(w->sink, "sandbox.progress",
                  json_pack("{s:O?, s:s, s:s}", "request_id", w->id, "phase", "workspace",
                            "message", "streaming the repository into the sandbox"));
  START(w, ws_checkout(w->d->sandboxes, w->sid, str(ws, "repo_url"), str(ws, "ref"), w->commit,
                       str(ws, "path"), json_is_true(json_object_get(ws, "submodules")),
                       create_checked_out, w, ERRP));
}

static void create_progress(void *ud, const char *phase, const char *message) {
  wreq *w = ud;
  api_sink_notify(w->sink, "sandbox.progress",
                  json_pack("{s:O?, s:s, s:s}", "request_id", w->id, "phase", phase, "message",
                            message));
}

static void create_resolved(void *ud, json_t *result, cr_error *err) {
  wreq *w = ud;
  if (err) {
    send_err(w->sink, w->id, err);
    cr_error_free(err);
    wreq_free(w);
    return;
  }
  snprintf(w->commit, sizeof(w->commit), "%s", str(result, "commit") ?: "");
  json_decref(result);
  json_t *p = w->params;
  json_t *vc = json_object_get(p, "vcpus"), *mem = json_object_get(p, "memory_mib");
  json_t *pol = json_object_get(p, "policy");
  sbx_create_params cp = {
      .image = str(p, "image"),
      .vcpus = (unsigned)json_integer_value(vc),
      .memory_mib = (unsigned)json_integer_value(mem),
      .policy = json_is_object(pol) ? pol : NULL,
      .policy_hash = str(p, "policy_hash"),
  };
  cr_error *e = NULL;
  if (sbx_create(w->d->sandboxes, &cp, create_ready, create_progress, w, &e) < 0) {
    send_err(w->sink, w->id, e);
    cr_error_free(e);
    wreq_free(w);
  }
}

void api_ws_sandbox_create(daemon_ctx *d, api_sink *sink, json_t *id, json_t *params) {
  json_t *ws = json_object_get(params, "workspace");
  if (!json_is_object(ws) || !str(ws, "repo_url"))
    return bad(sink, id, "'workspace' must be an object with 'repo_url' (and 'ref', 'path')");
  wreq *w = wreq_new(d, sink, id, params);
  if (!w) return;
  create_progress(w, "workspace", "resolving the repository ref");
  START(w, ws_resolve_async(d->loop, str(ws, "repo_url"), str(ws, "ref"), create_resolved, w,
                            ERRP));
}

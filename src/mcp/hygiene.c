/* Session hygiene: which sessions use which sandbox, names that reconnecting
 * agents find their sandbox by, and the idle timeout that removes a
 * session-default sandbox once no session has been attached to it for that
 * long (never while one is).
 *
 * All state lives in the daemon's loop thread. Names are kept in
 * <data>/mcp-names.json (name -> sandbox id) so that they survive a daemon
 * restart; attachments and idle timers do not (a restarted daemon removes no
 * sandbox until a session attaches and leaves again). */
#include "mcp/mcp-internal.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/paths.h"

#include <stdlib.h>
#include <string.h>

typedef struct owned {
  struct owned *next;
  char *id;
  int attached;
  uint64_t idle_ms; /* 0: never removed by the timer */
  bool idle_set;    /* idle_ms came from a session */
  daemon_ctx *d;
  mcp_api_fn call;
  mcp_dispatch_fn dispatch;
  uv_timer_t timer;
  bool timer_init;
} owned;

static owned *owned_list;

uint64_t mcp_default_idle_timeout_ms(void) {
  const char *e = getenv("CLEANROOM_MCP_IDLE_TIMEOUT");
  if (e && *e) {
    char *end;
    unsigned long long v = strtoull(e, &end, 10);
    if (!*end && v <= 30ull * 24 * 3600) return v * 1000;
    log_warn("CLEANROOM_MCP_IDLE_TIMEOUT=%s: not a number of seconds; using 1800", e);
  }
  return 1800ull * 1000;
}

static owned *owned_find(const char *id) {
  for (owned *o = owned_list; o; o = o->next)
    if (!strcmp(o->id, id)) return o;
  return NULL;
}

/* ---- names ---- */

static json_t *names_load(void) {
  _cleanup_free_ char *path = cr_data_path("mcp-names.json");
  _cleanup_free_ char *buf = NULL;
  size_t n = 0;
  json_t *j = NULL;
  if (path && cr_read_file(path, 1u << 20, &buf, &n) == 0) j = json_loadb(buf, n, 0, NULL);
  if (!json_is_object(j)) {
    json_decref(j);
    j = json_object();
  }
  return j;
}

static void names_save(json_t *names) {
  _cleanup_free_ char *path = cr_data_path("mcp-names.json");
  _cleanup_free_ char *text = json_dumps(names, JSON_COMPACT | JSON_SORT_KEYS);
  if (!path || !text) return;
  int r = cr_write_file_atomic(path, text, strlen(text), 0600);
  if (r < 0) log_warn("mcp: saving sandbox names to %s: %s", path, strerror(-r));
}

char *mcp_name_lookup(const char *name) {
  _cleanup_json_ json_t *names = names_load();
  const char *id = json_string_value(json_object_get(names, name));
  return id ? strdup(id) : NULL;
}

void mcp_name_set(const char *name, const char *id) {
  _cleanup_json_ json_t *names = names_load();
  if (id) json_object_set_new(names, name, json_string(id));
  else json_object_del(names, name);
  names_save(names);
}

static void names_forget_id(const char *id) {
  _cleanup_json_ json_t *names = names_load();
  const char *k;
  json_t *v;
  void *tmp;
  bool changed = false;
  json_object_foreach_safe(names, tmp, k, v) {
    if (json_is_string(v) && !strcmp(json_string_value(v), id)) {
      json_object_del(names, k);
      changed = true;
    }
  }
  if (changed) names_save(names);
}

/* ---- idle removal ---- */

typedef struct term_sink {
  api_sink sink;
} term_sink;

static void term_reply(api_sink *s, const api_reply *r) {
  if (!r->result) log_warn("mcp: removing an idle sandbox: %s", r->message ?: "failed");
}

static void term_free(api_sink *s) { free(container_of(s, term_sink, sink)); }

static void owned_unlink(owned *o) {
  for (owned **p = &owned_list; *p; p = &(*p)->next)
    if (*p == o) {
      *p = o->next;
      break;
    }
}

static void owned_closed(uv_handle_t *h) {
  owned *o = h->data;
  free(o->id);
  free(o);
}

static void owned_free(owned *o) {
  owned_unlink(o);
  if (o->timer_init) {
    uv_timer_stop(&o->timer);
    uv_close((uv_handle_t *)&o->timer, owned_closed);
  } else {
    free(o->id);
    free(o);
  }
}

static void idle_fired(uv_timer_t *t) {
  owned *o = t->data;
  if (o->attached > 0) return;
  log_info("mcp: removing sandbox %s: no session for %llu ms", o->id,
           (unsigned long long)o->idle_ms);
  term_sink *ts = calloc(1, sizeof(*ts));
  if (ts) {
    ts->sink.reply = term_reply;
    ts->sink.free = term_free;
    ts->sink.refs = 1;
    json_t *params = json_pack("{s:s}", "id", o->id);
    mcp_api_invoke(o->d, o->call, o->dispatch, &ts->sink, "sandbox.terminate", params, NULL, 0);
    json_decref(params);
    api_sink_unref(&ts->sink);
  }
  names_forget_id(o->id);
  owned_free(o);
}

void mcp_session_attach(mcp_session *s, const char *id, bool session_default) {
  if (!id) return;
  if (s->attached && !strcmp(s->attached, id)) return;
  mcp_session_detach(s);
  owned *o = owned_find(id);
  if (!o) {
    o = calloc(1, sizeof(*o));
    if (!o || !(o->id = strdup(id))) {
      free(o);
      return;
    }
    o->d = s->d;
    o->call = s->call;
    o->dispatch = s->dispatch;
    o->next = owned_list;
    owned_list = o;
  }
  /* the idle timeout of the session that first made it its default; a later
   * one changes it only when it was given --idle-timeout */
  if (session_default && (!o->idle_set || s->idle_explicit)) {
    o->idle_ms = s->idle_timeout_ms;
    o->idle_set = true;
  }
  o->attached++;
  if (o->timer_init) uv_timer_stop(&o->timer);
  s->attached = strdup(id);
}

void mcp_session_detach(mcp_session *s) {
  if (!s->attached) return;
  owned *o = owned_find(s->attached);
  free(s->attached);
  s->attached = NULL;
  if (!o || --o->attached > 0) return;
  if (o->idle_ms == 0 || !s->loop) {
    owned_free(o);
    return;
  }
  if (!o->timer_init) {
    if (uv_timer_init(s->loop, &o->timer) < 0) return;
    o->timer.data = o;
    o->timer_init = true;
  }
  uv_timer_start(&o->timer, idle_fired, o->idle_ms, 0);
}

void mcp_sandbox_forget(const char *id) {
  owned *o = owned_find(id);
  if (o && o->attached == 0) owned_free(o);
  names_forget_id(id);
}

int mcp_sandbox_attached(const char *id) {
  owned *o = owned_find(id);
  return o ? o->attached : 0;
}

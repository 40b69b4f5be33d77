/* File operations on a running sandbox over the agent protocol. */
#include "sandbox/sandbox-internal.h"

#include "util/buf.h"

#include <string.h>

#define READ_CAP (8u << 20) /* bytes per file.read call */
/* Everything here comes from the guest and is bounded before it is kept: a
 * listing beyond these fails with resource_exhausted (and the guest's walk
 * is cancelled) instead of growing the daemon. */
#define LIST_MAX_ENTRIES 100000
#define LIST_MAX_BYTES (32u << 20) /* ENTRY payload bytes per listing */
/* Deadline of one file operation (the guest may never answer). */
#define FILE_OP_TIMEOUT_MS 120000

typedef struct fop {
  sbx_file_cb cb;
  sbx_file_read_cb read_cb; /* FOP_READ */
  void *ud;
  sbx *s;
  uint32_t ch;
  uv_timer_t timer;
  size_t entry_bytes;
  enum { FOP_READ, FOP_WRITE, FOP_STAT, FOP_LIST } kind;
  cr_buf buf; /* the bytes read, bounded at want (<= READ_CAP) */
  uint64_t want, offset;
  json_t *entries;
  bool truncated;
} fop;

static void fop_closed(uv_handle_t *h) { free(h->data); }

/* Frees o once libuv is done with its timer. */
static void fop_free(fop *o) {
  cr_buf_free(&o->buf);
  json_decref(o->entries);
  o->entries = NULL;
  uv_timer_stop(&o->timer);
  uv_close((uv_handle_t *)&o->timer, fop_closed);
}

static void fop_done(fop *o, json_t *result, cr_error *err) {
  uv_timer_stop(&o->timer);
  if (o->kind == FOP_READ)
    o->read_cb(o->ud, result, result ? o->buf.data : NULL, result ? o->buf.len : 0, err);
  else
    o->cb(o->ud, result, err);
  fop_free(o);
}

/* Ends the operation early (cap, deadline): the guest is told to stop and
 * whatever it still sends on the channel is dropped. */
static void fop_abort(fop *o, const char *reason, const char *msg) {
  agent_cancel(o->s->agent, o->ch);
  cr_error *err = NULL;
  cr_error_set(&err, reason, 0, "%s", msg);
  fop_done(o, NULL, err);
  cr_error_free(err);
}

static void on_fop_timeout(uv_timer_t *t) {
  fop *o = t->data;
  fop_abort(o, CR_E_OPERATION_TIMEOUT,
            o->kind == FOP_LIST   ? "the guest did not finish the listing in time"
            : o->kind == FOP_STAT ? "the guest did not answer the stat in time"
                                 : "the guest did not finish the file transfer in time");
}

static const char *ftype_name(uint32_t t) {
  return t == AGENT_FT_FILE ? "file" : t == AGENT_FT_DIR ? "dir" : t == AGENT_FT_SYMLINK ? "symlink" : "other";
}

/* a STAT or an ENTRY -> JSON (the keys the guest sent, in its order) */
static json_t *stat_json(const agent_stat *st) {
  json_t *j = json_object();
  if (st->name) json_object_set_new(j, "name", json_string(st->name));
  if (st->have & AGENT_ST_FTYPE) json_object_set_new(j, "type", json_string(ftype_name(st->ftype)));
  if (st->have & AGENT_ST_MODE) json_object_set_new(j, "mode", json_integer(st->mode & 07777));
  if (st->have & AGENT_ST_SIZE) json_object_set_new(j, "size", json_integer((json_int_t)st->size));
  if (st->have & AGENT_ST_MTIME)
    json_object_set_new(j, "mtime_ns", json_integer((json_int_t)st->mtime_ns));
  if (st->target) json_object_set_new(j, "target", json_string(st->target));
  return j;
}

static void error_from_event(const agent_error *ge, cr_error **err) {
  cr_error_set(err, ge->reason ? ge->reason : CR_E_FILE_ERROR, 0, "%s",
               ge->message ? ge->message : "the guest reported an error");
}

static void on_event(void *ud, const agent_event *ev) {
  fop *o = ud;
  cr_error *err = NULL;
  switch (ev->type) {
  case AGENT_EV_DATA:
    if (o->kind != FOP_READ) return;
    if (o->buf.err) return; /* failed already (out of memory) */
    if (o->buf.len + ev->len > o->buf.max) { /* more than asked for: the guest's excess */
      o->truncated = true;
      return;
    }
    if (cr_buf_append(&o->buf, ev->data, ev->len) < 0)
      fop_abort(o, CR_E_INTERNAL, "out of memory while reading the file");
    return;
  case AGENT_EV_ENTRY:
    o->entry_bytes += ev->len;
    if (json_array_size(o->entries) >= LIST_MAX_ENTRIES || o->entry_bytes > LIST_MAX_BYTES) {
      fop_abort(o, CR_E_RESOURCE_EXHAUSTED,
                "the listing has more than 100000 entries (or 32 MiB of them); list a "
                "subdirectory or use a smaller depth");
      return;
    }
    json_array_append_new(o->entries, stat_json(&ev->stat));
    return;
  case AGENT_EV_STAT:
    fop_done(o, stat_json(&ev->stat), NULL);
    return;
  case AGENT_EV_OK: {
    uint64_t size = ev->size;
    json_t *r;
    if (o->kind == FOP_READ) {
      r = json_pack("{s:I, s:I, s:b}", "size", (json_int_t)size, "length",
                    (json_int_t)o->buf.len, "eof", !o->truncated && o->offset + o->buf.len >= size);
    } else if (o->kind == FOP_LIST) {
      r = json_pack("{s:O, s:b}", "entries", o->entries, "truncated", o->truncated);
    } else {
      r = json_pack("{s:I}", "size", (json_int_t)size);
    }
    fop_done(o, r, NULL);
    return;
  }
  case AGENT_EV_ERROR:
    error_from_event(&ev->error, &err);
    fop_done(o, NULL, err);
    return;
  default:
    return;
  }
}

static fop *fop_new(sbx *s, int kind, sbx_file_cb cb, void *ud) {
  fop *o = calloc(1, sizeof(*o));
  if (!o) return NULL;
  o->kind = kind;
  o->cb = cb;
  o->ud = ud;
  o->s = s;
  uv_timer_init(s->m->loop, &o->timer);
  o->timer.data = o;
  return o;
}

/* ch: what the agent_* call returned; o is freed on failure. */
static int started(fop *o, long ch, cr_error **err) {
  if (ch == -EMSGSIZE) {
    fop_free(o);
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "request too large");
  }
  if (ch < 0) {
    fop_free(o);
    return cr_error_set(err, CR_E_AGENT_UNAVAILABLE, (int)-ch, "sending to the guest agent");
  }
  o->ch = (uint32_t)ch;
  uv_timer_start(&o->timer, on_fop_timeout, FILE_OP_TIMEOUT_MS, 0);
  return 0;
}

static int check(sbx *s, const char *path, cr_error **err) {
  if (sbx_check_ready(s, err) < 0) return -1;
  if (!path || path[0] != '/' || strlen(path) > 4096)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "path must be absolute (got '%s')",
                        path ? path : "");
  return 0;
}

int sbx_file_read(sbx *s, const char *path, uint64_t offset, uint64_t length,
                  sbx_file_read_cb cb, void *ud, cr_error **err) {
  if (check(s, path, err) < 0) return -1;
  fop *o = fop_new(s, FOP_READ, NULL, ud);
  if (!o) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "file read");
  o->read_cb = cb;
  o->want = length && length < READ_CAP ? length : READ_CAP;
  o->buf = CR_BUF_INIT(o->want);
  o->offset = offset;
  return started(o, agent_file_read(s->agent, path, offset, o->want, on_event, o), err);
}

int sbx_file_write(sbx *s, const char *path, const void *data, size_t n, uint32_t mode,
                   bool parents, bool append, sbx_file_cb cb, void *ud, cr_error **err) {
  if (check(s, path, err) < 0) return -1;
  fop *o = fop_new(s, FOP_WRITE, cb, ud);
  if (!o) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "file write");
  /* the data goes with the request: on a failure to send it the connection
   * is gone and the operation gets its ERROR */
  return started(o, agent_file_write(s->agent, path, mode, parents, append, data, n, on_event, o),
                 err);
}

int sbx_file_stat(sbx *s, const char *path, sbx_file_cb cb, void *ud, cr_error **err) {
  if (check(s, path, err) < 0) return -1;
  fop *o = fop_new(s, FOP_STAT, cb, ud);
  if (!o) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "stat");
  return started(o, agent_file_stat(s->agent, path, on_event, o), err);
}

int sbx_file_list(sbx *s, const char *path, uint32_t depth, sbx_file_cb cb, void *ud,
                  cr_error **err) {
  if (check(s, path, err) < 0) return -1;
  fop *o = fop_new(s, FOP_LIST, cb, ud);
  if (!o) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "list");
  o->entries = json_array();
  return started(o, agent_file_list(s->agent, path, depth ? depth : 1, on_event, o), err);
}

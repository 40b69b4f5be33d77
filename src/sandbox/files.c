/* File operations on a running sandbox over the agent protocol. */
#include "sandbox/sandbox-internal.h"

#include "util/base64.h"
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
  void *ud;
  sbx *s;
  uint32_t ch;
  uv_timer_t timer;
  size_t entry_bytes;
  uint16_t kind;
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
  o->cb(o->ud, result, err);
  fop_free(o);
}

/* Ends the operation early (cap, deadline): the guest is told to stop and
 * whatever it still sends on the channel is dropped. */
static void fop_abort(fop *o, const char *reason, const char *msg) {
  if (o->s->agent) {
    agent_channel_forget(o->s->agent, o->ch);
    agent_send(o->s->agent, AP_CANCEL, o->ch, NULL, 0);
  }
  cr_error *err = NULL;
  cr_error_set(&err, reason, 0, "%s", msg);
  fop_done(o, NULL, err);
  cr_error_free(err);
}

static void on_fop_timeout(uv_timer_t *t) {
  fop *o = t->data;
  fop_abort(o, CR_E_OPERATION_TIMEOUT,
            o->kind == AP_LIST   ? "the guest did not finish the listing in time"
            : o->kind == AP_STAT ? "the guest did not answer the stat in time"
                                 : "the guest did not finish the file transfer in time");
}

static const char *ftype_name(uint32_t t) {
  return t == AP_FT_FILE ? "file" : t == AP_FT_DIR ? "dir" : t == AP_FT_SYMLINK ? "symlink" : "other";
}

/* STAT_RESULT / ENTRY payload -> JSON */
static json_t *stat_json(const uint8_t *p, size_t n) {
  json_t *j = json_object();
  size_t off = 0;
  ap_field f;
  while (ap_field_next(p, n, &off, &f) > 0) {
    uint32_t u = 0;
    uint64_t q = 0;
    char *s = NULL;
    switch (f.tag) {
    case AP_T_FTYPE:
      if (ap_field_u32(&f, &u) == 0) json_object_set_new(j, "type", json_string(ftype_name(u)));
      break;
    case AP_T_MODE:
      if (ap_field_u32(&f, &u) == 0) json_object_set_new(j, "mode", json_integer(u & 07777));
      break;
    case AP_T_SIZE:
      if (ap_field_u64(&f, &q) == 0) json_object_set_new(j, "size", json_integer((json_int_t)q));
      break;
    case AP_T_MTIME_NS:
      if (ap_field_u64(&f, &q) == 0) json_object_set_new(j, "mtime_ns", json_integer((json_int_t)q));
      break;
    case AP_T_NAME:
      if (ap_field_str(&f, &s) == 0) json_object_set_new(j, "name", json_string(s));
      break;
    case AP_T_TARGET:
      if (ap_field_str(&f, &s) == 0) json_object_set_new(j, "target", json_string(s));
      break;
    }
    free(s);
  }
  return j;
}

static void error_from_frame(const uint8_t *p, size_t n, cr_error **err) {
  ap_field f;
  char *reason = NULL, *msg = NULL;
  if (ap_find(p, n, AP_T_REASON, &f) > 0) ap_field_str(&f, &reason);
  if (ap_find(p, n, AP_T_MESSAGE, &f) > 0) ap_field_str(&f, &msg);
  cr_error_set(err, reason && *reason ? reason : CR_E_FILE_ERROR, 0, "%s",
               msg ? msg : "the guest reported an error");
  free(reason);
  free(msg);
}

static void on_frame(agent_conn *c, void *ud, const ap_header *h, const uint8_t *p) {
  fop *o = ud;
  cr_error *err = NULL;
  switch (h->type) {
  case AP_DATA:
    if (o->kind != AP_FILE_READ) return;
    if (o->buf.err) return; /* failed already (out of memory) */
    if (o->buf.len + h->len > o->buf.max) { /* more than asked for: the guest's excess */
      o->truncated = true;
      return;
    }
    if (cr_buf_append(&o->buf, p, h->len) < 0)
      fop_abort(o, CR_E_INTERNAL, "out of memory while reading the file");
    return;
  case AP_ENTRY:
    o->entry_bytes += h->len;
    if (json_array_size(o->entries) >= LIST_MAX_ENTRIES || o->entry_bytes > LIST_MAX_BYTES) {
      fop_abort(o, CR_E_RESOURCE_EXHAUSTED,
                "the listing has more than 100000 entries (or 32 MiB of them); list a "
                "subdirectory or use a smaller depth");
      return;
    }
    json_array_append_new(o->entries, stat_json(p, h->len));
    return;
  case AP_STAT_RESULT:
    fop_done(o, stat_json(p, h->len), NULL);
    return;
  case AP_OK: {
    ap_field f;
    uint64_t size = 0;
    if (ap_find(p, h->len, AP_T_SIZE, &f) > 0) ap_field_u64(&f, &size);
    json_t *r;
    if (o->kind == AP_FILE_READ) {
      char *enc = cr_base64_encode(o->buf.data ? o->buf.data : (const uint8_t *)"", o->buf.len);
      r = json_pack("{s:s, s:I, s:I, s:b}", "data", enc ? enc : "", "size", (json_int_t)size,
                    "length", (json_int_t)o->buf.len, "eof",
                    !o->truncated && o->offset + o->buf.len >= size);
      free(enc);
    } else if (o->kind == AP_LIST) {
      r = json_pack("{s:O, s:b}", "entries", o->entries, "truncated", o->truncated);
    } else {
      r = json_pack("{s:I}", "size", (json_int_t)size);
    }
    fop_done(o, r, NULL);
    return;
  }
  case AP_ERROR:
    error_from_frame(p, h->len, &err);
    fop_done(o, NULL, err);
    return;
  default:
    return;
  }
}

static fop *fop_new(sbx *s, uint16_t kind, sbx_file_cb cb, void *ud) {
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

static int send_req(sbx *s, ap_buf *b, fop *o, long *ret_ch, cr_error **err) {
  if (ap_frame_end(b) < 0) {
    ap_buf_free(b);
    fop_free(o);
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "request too large");
  }
  long ch = agent_request(s->agent, b, on_frame, o);
  ap_buf_free(b);
  if (ch < 0) {
    fop_free(o);
    return cr_error_set(err, CR_E_AGENT_UNAVAILABLE, (int)-ch, "sending to the guest agent");
  }
  o->ch = (uint32_t)ch;
  uv_timer_start(&o->timer, on_fop_timeout, FILE_OP_TIMEOUT_MS, 0);
  if (ret_ch) *ret_ch = ch;
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
                  sbx_file_cb cb, void *ud, cr_error **err) {
  if (check(s, path, err) < 0) return -1;
  fop *o = fop_new(s, AP_FILE_READ, cb, ud);
  if (!o) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "file read");
  o->want = length && length < READ_CAP ? length : READ_CAP;
  o->buf = CR_BUF_INIT(o->want);
  o->offset = offset;
  ap_buf b = {0};
  ap_frame_begin(&b, AP_FILE_READ, 0);
  ap_put_str(&b, AP_T_PATH, path);
  ap_put_u64(&b, AP_T_OFFSET, offset);
  ap_put_u64(&b, AP_T_LENGTH, o->want);
  return send_req(s, &b, o, NULL, err);
}

int sbx_file_write(sbx *s, const char *path, const void *data, size_t n, uint32_t mode,
                   bool parents, bool append, sbx_file_cb cb, void *ud, cr_error **err) {
  if (check(s, path, err) < 0) return -1;
  fop *o = fop_new(s, AP_FILE_WRITE, cb, ud);
  if (!o) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "file write");
  ap_buf b = {0};
  ap_frame_begin(&b, AP_FILE_WRITE, 0);
  ap_put_str(&b, AP_T_PATH, path);
  ap_put_u32(&b, AP_T_MODE, mode);
  ap_put_u32(&b, AP_T_FLAGS, (parents ? AP_F_PARENTS : 0) | (append ? AP_F_APPEND : 0));
  long ch = 0;
  if (send_req(s, &b, o, &ch, err) < 0) return -1;
  int r = n ? agent_send(s->agent, AP_DATA, (uint32_t)ch, data, n) : 0;
  if (r == 0) r = agent_send(s->agent, AP_DATA_END, (uint32_t)ch, NULL, 0);
  /* on failure the connection is gone and the channel gets its ERROR */
  return 0;
}

int sbx_file_stat(sbx *s, const char *path, sbx_file_cb cb, void *ud, cr_error **err) {
  if (check(s, path, err) < 0) return -1;
  fop *o = fop_new(s, AP_STAT, cb, ud);
  if (!o) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "stat");
  ap_buf b = {0};
  ap_frame_begin(&b, AP_STAT, 0);
  ap_put_str(&b, AP_T_PATH, path);
  return send_req(s, &b, o, NULL, err);
}

int sbx_file_list(sbx *s, const char *path, uint32_t depth, sbx_file_cb cb, void *ud,
                  cr_error **err) {
  if (check(s, path, err) < 0) return -1;
  fop *o = fop_new(s, AP_LIST, cb, ud);
  if (!o) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "list");
  o->entries = json_array();
  ap_buf b = {0};
  ap_frame_begin(&b, AP_LIST, 0);
  ap_put_str(&b, AP_T_PATH, path);
  ap_put_u32(&b, AP_T_DEPTH, depth ? depth : 1);
  return send_req(s, &b, o, NULL, err);
}

#include "proto/agent_proto.h"

#include <errno.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

static void put_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static void put_le16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8);
}
static uint32_t get_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}
static uint16_t get_le16(const uint8_t *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}

static const struct { uint16_t type; const char *name; } types[] = {
    {AP_HELLO, "hello"}, {AP_ACTIVATE, "activate"}, {AP_EXEC, "exec"},
    {AP_STDIN, "stdin"}, {AP_STDIN_EOF, "stdin_eof"}, {AP_SIGNAL, "signal"},
    {AP_FILE_READ, "file_read"}, {AP_FILE_WRITE, "file_write"},
    {AP_STAT, "stat"}, {AP_LIST, "list"}, {AP_TAR_OUT, "tar_out"},
    {AP_TAR_IN, "tar_in"}, {AP_SHUTDOWN, "shutdown"}, {AP_CANCEL, "cancel"},
    {AP_RESIZE, "resize"},
    {AP_MOUNT, "mount"},
    {AP_DATA, "data"}, {AP_DATA_END, "data_end"},
    {AP_HELLO_REPLY, "hello_reply"}, {AP_OK, "ok"}, {AP_ERROR, "error"},
    {AP_STARTED, "started"}, {AP_STDOUT, "stdout"}, {AP_STDERR, "stderr"},
    {AP_EXIT, "exit"}, {AP_STAT_RESULT, "stat_result"}, {AP_ENTRY, "entry"},
    {AP_LOG, "log"}, {AP_WINDOW, "window"},
};

int ap_type_known(uint16_t type) {
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
    if (types[i].type == type) return 1;
  return 0;
}

const char *ap_type_name(uint16_t type) {
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
    if (types[i].type == type) return types[i].name;
  return "unknown";
}

void ap_header_encode(uint8_t out[AP_HEADER_SIZE], const ap_header *h) {
  put_le32(out, h->len);
  put_le16(out + 4, h->type);
  put_le16(out + 6, h->flags);
  put_le32(out + 8, h->channel);
}

long ap_frame_parse(const uint8_t *buf, size_t n, uint32_t max_payload,
                    ap_header *h, const uint8_t **payload) {
  if (n < AP_HEADER_SIZE) return 0;
  ap_header t;
  t.len = get_le32(buf);
  t.type = get_le16(buf + 4);
  t.flags = get_le16(buf + 6);
  t.channel = get_le32(buf + 8);
  if (t.len > max_payload || t.len > AP_MAX_PAYLOAD) return -EMSGSIZE;
  if (!ap_type_known(t.type) || t.flags != 0) return -EBADMSG;
  if (n - AP_HEADER_SIZE < t.len) return 0;
  *h = t;
  *payload = buf + AP_HEADER_SIZE;
  return (long)(AP_HEADER_SIZE + t.len);
}

_Static_assert(offsetof(ap_buf, data) == offsetof(cr_buf, data) &&
                   offsetof(ap_buf, len) == offsetof(cr_buf, len) &&
                   offsetof(ap_buf, err) == offsetof(cr_buf, err),
               "ap_buf's direct fields are its cr_buf's");

void ap_buf_free(ap_buf *b) {
  cr_buf_free(&b->buf);
  b->frame_start = 0;
}

void ap_buf_reset(ap_buf *b) {
  cr_buf_reset(&b->buf);
  b->frame_start = 0;
}

void ap_frame_begin(ap_buf *b, uint16_t type, uint32_t channel) {
  b->frame_start = b->len;
  if (cr_buf_reserve(&b->buf, AP_HEADER_SIZE) < 0) return;
  ap_header h = {.len = 0, .type = type, .flags = 0, .channel = channel};
  ap_header_encode(b->data + b->len, &h);
  b->len += AP_HEADER_SIZE;
}

int ap_frame_end(ap_buf *b) {
  if (b->err == -E2BIG && b->len >= b->frame_start) {
    /* a field too large for a frame: this frame is dropped, the buffer (and
     * the frames before it) stay usable */
    b->len = b->frame_start;
    b->err = 0;
    return -EMSGSIZE;
  }
  if (b->err) return b->err;
  size_t plen = b->len - b->frame_start - AP_HEADER_SIZE;
  if (plen > AP_MAX_PAYLOAD) {
    b->len = b->frame_start; /* drop the oversized frame */
    return -EMSGSIZE;
  }
  put_le32(b->data + b->frame_start, (uint32_t)plen);
  return 0;
}

void ap_put_bytes(ap_buf *b, uint16_t tag, const void *v, size_t n) {
  if (b->err) return;
  if (n > AP_MAX_PAYLOAD) {
    b->err = -E2BIG;
    return;
  }
  if (cr_buf_reserve(&b->buf, 6 + n) < 0) return;
  put_le16(b->data + b->len, tag);
  put_le32(b->data + b->len + 2, (uint32_t)n);
  if (n) memcpy(b->data + b->len + 6, v, n);
  b->len += 6 + n;
}

void ap_put_str(ap_buf *b, uint16_t tag, const char *s) {
  ap_put_bytes(b, tag, s, strlen(s));
}

void ap_put_u32(ap_buf *b, uint16_t tag, uint32_t v) {
  uint8_t t[4];
  put_le32(t, v);
  ap_put_bytes(b, tag, t, 4);
}

void ap_put_u64(ap_buf *b, uint16_t tag, uint64_t v) {
  uint8_t t[8];
  put_le32(t, (uint32_t)v);
  put_le32(t + 4, (uint32_t)(v >> 32));
  ap_put_bytes(b, tag, t, 8);
}

int ap_put_raw_frame(ap_buf *b, uint16_t type, uint32_t channel,
                     const void *data, size_t n) {
  if (n > AP_MAX_PAYLOAD) return -EMSGSIZE;
  ap_frame_begin(b, type, channel);
  cr_buf_append(&b->buf, data, n); /* an error is reported by ap_frame_end */
  return ap_frame_end(b);
}

int ap_field_next(const uint8_t *p, size_t n, size_t *off, ap_field *f) {
  if (*off >= n) return 0;
  if (n - *off < 6) return -EBADMSG;
  uint16_t tag = get_le16(p + *off);
  uint32_t len = get_le32(p + *off + 2);
  if (len > n - *off - 6) return -EBADMSG;
  f->tag = tag;
  f->len = len;
  f->val = p + *off + 6;
  *off += 6 + (size_t)len;
  return 1;
}

int ap_field_u32(const ap_field *f, uint32_t *ret) {
  if (f->len != 4) return -EBADMSG;
  *ret = get_le32(f->val);
  return 0;
}

int ap_field_u64(const ap_field *f, uint64_t *ret) {
  if (f->len != 8) return -EBADMSG;
  *ret = (uint64_t)get_le32(f->val) | (uint64_t)get_le32(f->val + 4) << 32;
  return 0;
}

int ap_field_str(const ap_field *f, char **ret) {
  if (memchr(f->val, '\0', f->len)) return -EBADMSG;
  char *s = malloc((size_t)f->len + 1);
  if (!s) return -ENOMEM;
  memcpy(s, f->val, f->len);
  s[f->len] = '\0';
  *ret = s;
  return 0;
}

int ap_find(const uint8_t *p, size_t n, uint16_t tag, ap_field *ret) {
  size_t off = 0;
  ap_field f;
  int r;
  while ((r = ap_field_next(p, n, &off, &f)) > 0)
    if (f.tag == tag) {
      *ret = f;
      return 1;
    }
  return r;
}

/* The typed host-side agent API (agent_ops.h): requests encoded into frames,
 * replies decoded into events. Frames travel through agent_client.c. */
#include "backend/agent_client.h"
#include "util/error.h"
#include "util/macro.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert((int)AGENT_FT_OTHER == (int)AP_FT_OTHER && (int)AGENT_FT_FILE == (int)AP_FT_FILE &&
                   (int)AGENT_FT_DIR == (int)AP_FT_DIR &&
                   (int)AGENT_FT_SYMLINK == (int)AP_FT_SYMLINK,
               "ftype values are the protocol's");

/* ---- encoding */

int agent_enc_hello(ap_buf *b) {
  ap_frame_begin(b, AP_HELLO, 0);
  ap_put_u32(b, AP_T_VERSION, AP_VERSION);
  ap_put_u32(b, AP_T_MAX_PAYLOAD, AP_MAX_PAYLOAD);
  return ap_frame_end(b);
}

int agent_enc_exec(ap_buf *b, const agent_exec_req *r) {
  ap_frame_begin(b, AP_EXEC, 0);
  for (size_t i = 0; i < r->argc; i++) ap_put_str(b, AP_T_ARGV, r->argv[i]);
  for (size_t i = 0; i < r->envc; i++) ap_put_str(b, AP_T_ENV, r->env[i]);
  if (r->cwd) ap_put_str(b, AP_T_CWD, r->cwd);
  ap_put_u32(b, AP_T_FLAGS, (r->stdin_open ? AP_F_STDIN : 0) | (r->tty ? AP_F_TTY : 0) |
                                (r->no_chroot ? AP_F_NO_CHROOT : 0));
  if (r->tty && r->rows && r->cols) ap_put_u32(b, AP_T_WINSIZE, (uint32_t)r->rows << 16 | r->cols);
  return ap_frame_end(b);
}

int agent_enc_activate(ap_buf *b, const agent_activate_req *r) {
  ap_frame_begin(b, AP_ACTIVATE, 0);
  if (r->set_time) ap_put_u64(b, AP_T_TIME_NS, r->time_ns);
  if (r->seed && r->seed_len) ap_put_bytes(b, AP_T_SEED, r->seed, r->seed_len);
  if (r->hostname) ap_put_str(b, AP_T_HOSTNAME, r->hostname);
  if (r->image_dev) ap_put_str(b, AP_T_IMAGE_DEV, r->image_dev);
  if (r->scratch_dev) ap_put_str(b, AP_T_SCRATCH_DEV, r->scratch_dev);
  if (r->net_addr) ap_put_str(b, AP_T_NET_ADDR, r->net_addr);
  if (r->net_gateway) ap_put_str(b, AP_T_NET_GATEWAY, r->net_gateway);
  if (r->net_dns) ap_put_str(b, AP_T_NET_DNS, r->net_dns);
  if (r->net_up) ap_put_u32(b, AP_T_NET_UP, 1);
  return ap_frame_end(b);
}

int agent_enc_path(ap_buf *b, uint16_t type, const char *path) {
  ap_frame_begin(b, type, 0);
  ap_put_str(b, AP_T_PATH, path);
  return ap_frame_end(b);
}

int agent_enc_file_read(ap_buf *b, const char *path, uint64_t offset, uint64_t length) {
  ap_frame_begin(b, AP_FILE_READ, 0);
  ap_put_str(b, AP_T_PATH, path);
  ap_put_u64(b, AP_T_OFFSET, offset);
  ap_put_u64(b, AP_T_LENGTH, length);
  return ap_frame_end(b);
}

int agent_enc_file_write(ap_buf *b, const char *path, uint32_t mode, bool parents, bool append) {
  ap_frame_begin(b, AP_FILE_WRITE, 0);
  ap_put_str(b, AP_T_PATH, path);
  ap_put_u32(b, AP_T_MODE, mode);
  ap_put_u32(b, AP_T_FLAGS, (parents ? AP_F_PARENTS : 0) | (append ? AP_F_APPEND : 0));
  return ap_frame_end(b);
}

int agent_enc_list(ap_buf *b, const char *path, uint32_t depth) {
  ap_frame_begin(b, AP_LIST, 0);
  ap_put_str(b, AP_T_PATH, path);
  ap_put_u32(b, AP_T_DEPTH, depth);
  return ap_frame_end(b);
}

int agent_enc_tar_in(ap_buf *b, const char *path, bool parents) {
  ap_frame_begin(b, AP_TAR_IN, 0);
  ap_put_str(b, AP_T_PATH, path);
  ap_put_u32(b, AP_T_FLAGS, parents ? AP_F_PARENTS : 0);
  return ap_frame_end(b);
}

int agent_enc_mount(ap_buf *b, const char *dev, const char *path) {
  ap_frame_begin(b, AP_MOUNT, 0);
  ap_put_str(b, AP_T_IMAGE_DEV, dev);
  ap_put_str(b, AP_T_PATH, path);
  return ap_frame_end(b);
}

/* ---- decoding */

/* The fields of a payload, first of each tag (up to the first malformed
 * field: what comes before it counts). */
#define MAX_TAG 64
typedef struct fields {
  ap_field f[MAX_TAG];
  uint64_t seen;
} fields;

static void fields_scan(const uint8_t *p, size_t n, fields *fs) {
  size_t off = 0;
  ap_field f;
  fs->seen = 0;
  while (ap_field_next(p, n, &off, &f) > 0) {
    if (f.tag >= MAX_TAG || (fs->seen & (1ull << f.tag))) continue;
    fs->seen |= 1ull << f.tag;
    fs->f[f.tag] = f;
  }
}

static bool get_u32(const fields *fs, uint16_t tag, uint32_t *ret) {
  return (fs->seen & (1ull << tag)) && ap_field_u32(&fs->f[tag], ret) == 0;
}

static bool get_u64(const fields *fs, uint16_t tag, uint64_t *ret) {
  return (fs->seen & (1ull << tag)) && ap_field_u64(&fs->f[tag], ret) == 0;
}

/* A new string, or NULL (absent, a NUL inside, out of memory). */
static char *get_str(const fields *fs, uint16_t tag) {
  char *s = NULL;
  if ((fs->seen & (1ull << tag)) && ap_field_str(&fs->f[tag], &s) < 0) s = NULL;
  return s;
}

static bool reason_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > AGENT_MAX_REASON) return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return false;
  return true;
}

/* Cuts s to at most max bytes on a UTF-8 character boundary, marked "...". */
static void cut_message(char *s, size_t max) {
  size_t n = strlen(s);
  if (n <= max) return;
  size_t k = max - 3;
  while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80) k--;
  memcpy(s + k, "...", 4);
}

int agent_dec_hello(const uint8_t *p, size_t n, agent_hello *ret) {
  fields fs;
  fields_scan(p, n, &fs);
  *ret = (agent_hello){0};
  if (!get_u32(&fs, AP_T_VERSION, &ret->version)) return -EPROTO;
  get_u32(&fs, AP_T_MAX_PAYLOAD, &ret->max_payload);
  if (!get_u64(&fs, AP_T_WINDOW, &ret->window)) ret->window = 0;
  get_u64(&fs, AP_T_UPTIME_NS, &ret->uptime_ns);
  _cleanup_free_ char *av = get_str(&fs, AP_T_AGENT_VERSION);
  _cleanup_free_ char *k = get_str(&fs, AP_T_KERNEL);
  snprintf(ret->agent_version, sizeof(ret->agent_version), "%s", av ? av : "");
  snprintf(ret->kernel, sizeof(ret->kernel), "%s", k ? k : "");
  return 0;
}

static void dec_stat(const fields *fs, agent_stat *st) {
  if (get_u32(fs, AP_T_FTYPE, &st->ftype)) st->have |= AGENT_ST_FTYPE;
  if (get_u32(fs, AP_T_MODE, &st->mode)) st->have |= AGENT_ST_MODE;
  if (get_u64(fs, AP_T_SIZE, &st->size)) st->have |= AGENT_ST_SIZE;
  if (get_u64(fs, AP_T_MTIME_NS, &st->mtime_ns)) st->have |= AGENT_ST_MTIME;
  if (get_u32(fs, AP_T_UID, &st->uid)) st->have |= AGENT_ST_UID;
  if (get_u32(fs, AP_T_GID, &st->gid)) st->have |= AGENT_ST_GID;
  st->name = get_str(fs, AP_T_NAME);
  st->target = get_str(fs, AP_T_TARGET);
}

int agent_dec_event(uint16_t type, const uint8_t *p, size_t n, agent_event *ev) {
  *ev = (agent_event){.len = n};
  fields fs;
  switch (type) {
  case AP_STDOUT:
  case AP_STDERR:
  case AP_DATA:
    ev->type = type == AP_STDOUT ? AGENT_EV_STDOUT : type == AP_STDERR ? AGENT_EV_STDERR
                                                                       : AGENT_EV_DATA;
    ev->data = p;
    return 0;
  case AP_STARTED:
    ev->type = AGENT_EV_STARTED;
    fields_scan(p, n, &fs);
    get_u32(&fs, AP_T_PID, &ev->pid);
    return 0;
  case AP_EXIT:
    ev->type = AGENT_EV_EXIT;
    fields_scan(p, n, &fs);
    ev->exit.has_code = get_u32(&fs, AP_T_EXIT_CODE, &ev->exit.code);
    if (!get_u32(&fs, AP_T_SIGNAL, &ev->exit.signal)) ev->exit.signal = 0;
    /* present at all (whatever its size) means the exec failed */
    ev->exit.exec_failed = fs.seen & (1ull << AP_T_EXEC_ERRNO);
    get_u32(&fs, AP_T_EXEC_ERRNO, &ev->exit.exec_errno);
    if (!get_u64(&fs, AP_T_AGENT_NS, &ev->exit.agent_ns) ||
        !get_u64(&fs, AP_T_SPAWN_NS, &ev->exit.spawn_ns) || ev->exit.spawn_ns > ev->exit.agent_ns)
      ev->exit.agent_ns = ev->exit.spawn_ns = 0; /* both or neither, and consistent */
    return 0;
  case AP_ENTRY:
  case AP_STAT_RESULT:
    ev->type = type == AP_ENTRY ? AGENT_EV_ENTRY : AGENT_EV_STAT;
    fields_scan(p, n, &fs);
    dec_stat(&fs, &ev->stat);
    return 0;
  case AP_OK:
    ev->type = AGENT_EV_OK;
    fields_scan(p, n, &fs);
    ev->has_size = get_u64(&fs, AP_T_SIZE, &ev->size);
    if (!ev->has_size) ev->size = 0;
    return 0;
  case AP_ERROR: {
    ev->type = AGENT_EV_ERROR;
    fields_scan(p, n, &fs);
    char *reason = get_str(&fs, AP_T_REASON);
    char *msg = get_str(&fs, AP_T_MESSAGE);
    if (reason && !*reason) { /* an empty one is none */
      free(reason);
      reason = NULL;
    }
    if (reason && !reason_ok(reason)) {
      free(reason);
      reason = strdup(CR_E_AGENT_PROTOCOL);
    }
    if (msg) cut_message(msg, AGENT_MAX_MESSAGE);
    ev->error.reason = reason;
    ev->error.message = msg;
    get_u32(&fs, AP_T_ERRNO, &ev->error.err_no);
    return 0;
  }
  default:
    return -EBADMSG;
  }
}

void agent_event_clear(agent_event *ev) {
  free((char *)ev->stat.name);
  free((char *)ev->stat.target);
  free((char *)ev->error.reason);
  free((char *)ev->error.message);
  ev->stat.name = ev->stat.target = ev->error.reason = ev->error.message = NULL;
}

/* ---- operations */

static long request(agent_conn *c, ap_buf *b, int enc, agent_event_cb cb, void *ud) {
  long r = enc < 0 ? enc : agent_request_ev(c, b, cb, ud);
  ap_buf_free(b);
  return r;
}

long agent_exec_start(agent_conn *c, const agent_exec_req *req, agent_event_cb cb, void *ud) {
  ap_buf b = {0};
  return request(c, &b, agent_enc_exec(&b, req), cb, ud);
}

int agent_exec_stdin(agent_conn *c, uint32_t ch, const void *data, size_t n) {
  return agent_send(c, AP_STDIN, ch, data, n);
}

int agent_exec_stdin_close(agent_conn *c, uint32_t ch) {
  return agent_send(c, AP_STDIN_EOF, ch, NULL, 0);
}

int agent_exec_signal(agent_conn *c, uint32_t ch, int signo) {
  return agent_send_u32(c, AP_SIGNAL, ch, AP_T_SIGNAL, (uint32_t)signo);
}

int agent_exec_resize(agent_conn *c, uint32_t ch, uint16_t rows, uint16_t cols) {
  return agent_send_u32(c, AP_RESIZE, ch, AP_T_WINSIZE, (uint32_t)rows << 16 | cols);
}

long agent_file_read(agent_conn *c, const char *path, uint64_t offset, uint64_t length,
                     agent_event_cb cb, void *ud) {
  ap_buf b = {0};
  return request(c, &b, agent_enc_file_read(&b, path, offset, length), cb, ud);
}

/* Sends the request, then the data and its end (on a failure the
 * connection is gone and the operation gets its ERROR). */
static long request_stream(agent_conn *c, ap_buf *b, int enc, const void *data, size_t n,
                           agent_event_cb cb, void *ud) {
  long ch = request(c, b, enc, cb, ud);
  if (ch < 0) return ch;
  int r = n ? agent_send(c, AP_DATA, (uint32_t)ch, data, n) : 0;
  if (r == 0) agent_send(c, AP_DATA_END, (uint32_t)ch, NULL, 0);
  return ch;
}

long agent_file_write(agent_conn *c, const char *path, uint32_t mode, bool parents, bool append,
                      const void *data, size_t n, agent_event_cb cb, void *ud) {
  ap_buf b = {0};
  return request_stream(c, &b, agent_enc_file_write(&b, path, mode, parents, append), data, n,
                        cb, ud);
}

long agent_file_stat(agent_conn *c, const char *path, agent_event_cb cb, void *ud) {
  ap_buf b = {0};
  return request(c, &b, agent_enc_path(&b, AP_STAT, path), cb, ud);
}

long agent_file_list(agent_conn *c, const char *path, uint32_t depth, agent_event_cb cb,
                     void *ud) {
  ap_buf b = {0};
  return request(c, &b, agent_enc_list(&b, path, depth), cb, ud);
}

long agent_tar_out(agent_conn *c, const char *path, agent_event_cb cb, void *ud) {
  ap_buf b = {0};
  return request(c, &b, agent_enc_path(&b, AP_TAR_OUT, path), cb, ud);
}

long agent_tar_in(agent_conn *c, const char *path, bool parents, const void *tar, size_t n,
                  agent_event_cb cb, void *ud) {
  ap_buf b = {0};
  return request_stream(c, &b, agent_enc_tar_in(&b, path, parents), tar, n, cb, ud);
}

long agent_mount(agent_conn *c, const char *dev, const char *path, agent_event_cb cb, void *ud) {
  ap_buf b = {0};
  return request(c, &b, agent_enc_mount(&b, dev, path), cb, ud);
}

void agent_cancel(agent_conn *c, uint32_t ch) {
  if (!c) return;
  agent_channel_forget(c, ch);
  agent_send(c, AP_CANCEL, ch, NULL, 0);
}

int agent_activate(agent_conn *c, const agent_activate_req *req, agent_event_cb cb, void *ud) {
  ap_buf b = {0};
  int r = agent_enc_activate(&b, req);
  if (r == 0) r = agent_control_ev(c, &b, cb, ud);
  ap_buf_free(&b);
  return r;
}

int agent_shutdown(agent_conn *c, agent_event_cb cb, void *ud) {
  ap_buf b = {0};
  ap_frame_begin(&b, AP_SHUTDOWN, 0);
  int r = ap_frame_end(&b);
  if (r == 0) r = agent_control_ev(c, &b, cb, ud);
  ap_buf_free(&b);
  return r;
}

#include "backend/agent_client.h"
#include "util/buf.h"
#include "util/error.h"
#include "util/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct channel {
  uint32_t id;
  uint16_t op; /* the request's frame type: which replies are legal */
  agent_frame_cb cb;
  agent_event_cb ecb; /* typed instead (agent_ops.c) */
  void *ud;
  /* flow control (docs/agent-protocol.md): STDIN/DATA bytes we may still
   * send, and what waits for credit (then an optional STDIN_EOF/DATA_END) */
  uint64_t credit;
  cr_buf pend;     /* bounded: AGENT_PENDING_MAX_STDIN/_DATA */
  size_t pend_off; /* sent from the front of pend */
  uint16_t pend_type, pend_end;
} channel;

struct agent_conn {
  uv_pipe_t pipe;
  uv_connect_t connect_req;
  uv_loop_t *loop;
  agent_state_cb state_cb;
  void *state_ud;
  bool open, handshaken, closing, pipe_inited;
  cr_buf rbuf; /* input: at most one frame + two reads */
  channel *chans;
  size_t nchans, capchans;
  uint32_t next_channel;
  /* the guest advertised AP_T_WINDOW: per-channel credit for STDIN/DATA */
  bool flow;
  uint64_t window;
  /* control channel listener (ACTIVATE, SHUTDOWN replies) */
  agent_frame_cb ctl_cb;
  agent_event_cb ctl_ecb;
  void *ctl_ud;
  agent_hello hello; /* the guest's HELLO_REPLY, once handshaken */
};

typedef struct write_req {
  uv_write_t req;
  uint8_t data[];
} write_req;

agent_conn *agent_conn_new(uv_loop_t *loop, agent_state_cb cb, void *ud) {
  agent_conn *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->loop = loop;
  c->state_cb = cb;
  c->state_ud = ud;
  c->next_channel = 1;
  return c;
}

bool agent_conn_ready(const agent_conn *c) { return c && c->open && c->handshaken && !c->closing; }

static void channel_drop_pending(channel *ch) {
  cr_buf_free(&ch->pend);
  ch->pend = (cr_buf){0};
  ch->pend_off = 0;
  ch->pend_end = 0;
}

size_t agent_write_queue(const agent_conn *c) {
  if (!c || !c->open) return 0;
  size_t n = uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe);
  for (size_t i = 0; i < c->nchans; i++) n += c->chans[i].pend.len - c->chans[i].pend_off;
  return n;
}

size_t agent_channel_queued(const agent_conn *c, uint32_t id) {
  if (!c || !c->open) return 0;
  if (!c->flow) return uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe);
  for (size_t i = 0; i < c->nchans; i++)
    if (c->chans[i].id == id) return c->chans[i].pend.len - c->chans[i].pend_off;
  return 0;
}

static void on_close(uv_handle_t *h) {
  agent_conn *c = h->data;
  cr_buf_free(&c->rbuf);
  free(c->chans);
  free(c);
}

/* Hands a frame to whoever waits for it: a frame callback, or a typed one
 * (decoded here; on channel 0 anything but OK/ERROR is reported as an
 * ERROR: the control channel carries ACTIVATE and SHUTDOWN only). */
static void deliver(agent_conn *c, agent_frame_cb fcb, agent_event_cb ecb, void *ud,
                    const ap_header *h, const uint8_t *p) {
  if (fcb) {
    fcb(c, ud, h, p);
    return;
  }
  if (!ecb) return;
  agent_event ev;
  int r = agent_dec_event(h->type, p, h->len, &ev);
  if (h->channel == 0 && (r < 0 || (ev.type != AGENT_EV_OK && ev.type != AGENT_EV_ERROR))) {
    agent_event_clear(&ev);
    char msg[96];
    snprintf(msg, sizeof(msg), "the guest answered a control request with frame type 0x%02x",
             (unsigned)h->type);
    ev = (agent_event){.type = AGENT_EV_ERROR,
                       .error = {.reason = CR_E_AGENT_PROTOCOL, .message = msg}};
    ecb(ud, &ev);
    return;
  }
  if (r < 0) return; /* not a reply (frame_allowed let it through: cannot happen) */
  ecb(ud, &ev);
  agent_event_clear(&ev);
}

static void fail_channels(agent_conn *c, const char *why) {
  /* Synthesize an ERROR frame per open channel. */
  ap_buf b = {0};
  ap_frame_begin(&b, AP_ERROR, 0);
  ap_put_str(&b, AP_T_REASON, CR_E_AGENT_UNAVAILABLE);
  ap_put_str(&b, AP_T_MESSAGE, why);
  if (ap_frame_end(&b) < 0) {
    ap_buf_free(&b);
    return;
  }
  while (c->nchans > 0) {
    channel ch = c->chans[--c->nchans];
    channel_drop_pending(&ch);
    ap_header h = {.len = (uint32_t)(b.len - AP_HEADER_SIZE), .type = AP_ERROR,
                   .channel = ch.id};
    deliver(c, ch.cb, ch.ecb, ch.ud, &h, b.data + AP_HEADER_SIZE);
  }
  if (c->ctl_cb || c->ctl_ecb) {
    agent_frame_cb cb = c->ctl_cb;
    agent_event_cb ecb = c->ctl_ecb;
    c->ctl_cb = NULL;
    c->ctl_ecb = NULL;
    ap_header h = {.len = (uint32_t)(b.len - AP_HEADER_SIZE), .type = AP_ERROR,
                   .channel = 0};
    deliver(c, cb, ecb, c->ctl_ud, &h, b.data + AP_HEADER_SIZE);
  }
  ap_buf_free(&b);
}

/* Connection lost or violated the protocol: tell the owner once. */
static void conn_fail(agent_conn *c, int status, const char *why) {
  if (c->closing) return;
  bool was_open = c->open;
  c->open = false;
  c->handshaken = false;
  if (was_open) uv_read_stop((uv_stream_t *)&c->pipe);
  fail_channels(c, why);
  if (c->state_cb) c->state_cb(c, c->state_ud, status, why, NULL, 0);
}

void agent_conn_close(agent_conn *c) {
  if (!c || c->closing) return;
  c->state_cb = NULL; /* owner is going away: no state callbacks */
  /* Closing before the synthetic errors: a channel callback that calls
   * agent_conn_close() again, or starts a new request, must find the conn
   * closed (no second uv_close, no channel added while failing them). */
  c->closing = true;
  c->open = false;
  fail_channels(c, "connection closed by the host");
  if (c->pipe_inited)
    uv_close((uv_handle_t *)&c->pipe, on_close);
  else
    on_close((uv_handle_t *)&c->pipe);
}

static void on_write(uv_write_t *req, int status) {
  free(container_of(req, write_req, req));
}

static int write_bytes(agent_conn *c, const uint8_t *data, size_t n) {
  if (!c->open || c->closing) return -ENOTCONN;
  write_req *w = malloc(sizeof(*w) + n);
  if (!w) return -ENOMEM;
  memcpy(w->data, data, n);
  uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)n);
  int r = uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_write);
  if (r < 0) {
    free(w);
    return r;
  }
  return 0;
}

static channel *find_channel(agent_conn *c, uint32_t id, size_t *idx) {
  for (size_t i = 0; i < c->nchans; i++)
    if (c->chans[i].id == id) {
      if (idx) *idx = i;
      return &c->chans[i];
    }
  return NULL;
}

void agent_channel_forget(agent_conn *c, uint32_t id) {
  size_t i;
  if (!c || !find_channel(c, id, &i)) return;
  channel_drop_pending(&c->chans[i]);
  c->chans[i] = c->chans[--c->nchans];
}

/* Sends what the channel's credit allows of its pending STDIN/DATA, then the
 * STDIN_EOF/DATA_END that waited behind it. */
static int channel_pump(agent_conn *c, channel *ch) {
  ap_buf b = {0};
  int r = 0;
  while (r == 0 && ch->pend_off < ch->pend.len && ch->credit > 0) {
    size_t k = MIN(ch->pend.len - ch->pend_off, (size_t)AP_CHUNK);
    if (k > ch->credit) k = (size_t)ch->credit;
    ap_buf_reset(&b);
    r = ap_put_raw_frame(&b, ch->pend_type, ch->id, ch->pend.data + ch->pend_off, k);
    if (r == 0) r = write_bytes(c, b.data, b.len);
    if (r == 0) {
      ch->pend_off += k;
      ch->credit -= k;
    }
  }
  if (r == 0 && ch->pend_off == ch->pend.len) {
    uint16_t end = ch->pend_end;
    cr_buf_free(&ch->pend);
    ch->pend = (cr_buf){0};
    ch->pend_off = 0;
    ch->pend_end = 0;
    if (end) {
      ap_buf_reset(&b);
      r = ap_put_raw_frame(&b, end, ch->id, NULL, 0);
      if (r == 0) r = write_bytes(c, b.data, b.len);
    }
  } else if (ch->pend_off > (1u << 20) && ch->pend_off * 2 > ch->pend.len) {
    cr_buf_consume(&ch->pend, ch->pend_off);
    ch->pend_off = 0;
  }
  ap_buf_free(&b);
  return r;
}

static void handle_window(agent_conn *c, const ap_header *h, const uint8_t *p) {
  channel *ch = find_channel(c, h->channel, NULL);
  ap_field f;
  uint64_t v = 0;
  if (!ch || ap_find(p, h->len, AP_T_LENGTH, &f) <= 0 || ap_field_u64(&f, &v) < 0) return;
  /* never more than the window, whatever the guest claims */
  uint64_t room = c->window > ch->credit ? c->window - ch->credit : 0;
  ch->credit += MIN(v, room);
  if (channel_pump(c, ch) < 0) log_debug("agent: sending queued data on channel %u failed", h->channel);
}

static bool terminal(uint16_t type) {
  return type == AP_EXIT || type == AP_OK || type == AP_ERROR ||
         type == AP_STAT_RESULT;
}

/* The frames a guest may send on a channel opened by request `op`; anything
 * else (OK or STAT_RESULT on an exec channel, EXIT on a file channel...) is a
 * protocol violation: the operation fails with agent_protocol_error and the
 * connection is dropped, so no operation waits forever for an end that the
 * channel already had. ERROR ends every operation. */
static bool frame_allowed(uint16_t op, uint16_t type) {
  if (type == AP_ERROR) return true;
  switch (op) {
  case AP_EXEC:
    return type == AP_STARTED || type == AP_STDOUT || type == AP_STDERR || type == AP_EXIT;
  case AP_FILE_READ:
  case AP_TAR_OUT:
    return type == AP_DATA || type == AP_OK;
  case AP_FILE_WRITE:
  case AP_TAR_IN:
    return type == AP_OK;
  case AP_STAT:
    return type == AP_STAT_RESULT;
  case AP_LIST:
    return type == AP_ENTRY || type == AP_OK;
  default:
    return type == AP_OK;
  }
}

static void protocol_violation(agent_conn *c, channel *chp, uint16_t type) {
  channel ch = *chp;
  agent_channel_forget(c, ch.id);
  char msg[160];
  snprintf(msg, sizeof(msg), "the guest sent frame type 0x%02x on a channel of request 0x%02x",
           (unsigned)type, (unsigned)ch.op);
  ap_buf b = {0};
  ap_frame_begin(&b, AP_ERROR, ch.id);
  ap_put_str(&b, AP_T_REASON, CR_E_AGENT_PROTOCOL);
  ap_put_str(&b, AP_T_MESSAGE, msg);
  if (ap_frame_end(&b) == 0) {
    ap_header h = {.len = (uint32_t)(b.len - AP_HEADER_SIZE), .type = AP_ERROR, .channel = ch.id};
    deliver(c, ch.cb, ch.ecb, ch.ud, &h, b.data + AP_HEADER_SIZE);
  }
  ap_buf_free(&b);
  log_warn("agent: %s; dropping the connection", msg);
  conn_fail(c, -EPROTO, msg);
}

static void handle_frame(agent_conn *c, const ap_header *h, const uint8_t *p) {
  if (h->channel == 0) {
    if (h->type == AP_HELLO_REPLY && !c->handshaken) {
      agent_hello hi;
      if (agent_dec_hello(p, h->len, &hi) < 0 || hi.version != AP_VERSION) {
        conn_fail(c, -EPROTO, "the guest agent speaks another protocol version");
        return;
      }
      c->handshaken = true;
      c->hello = hi;
      c->flow = hi.window > 0;
      c->window = MIN(hi.window, (uint64_t)1 << 30);
      if (c->state_cb) c->state_cb(c, c->state_ud, 0, NULL, p, h->len);
      return;
    }
    if (h->type == AP_LOG) {
      log_debug("guest: %.*s", (int)MIN(h->len, 1024u), (const char *)p);
      return;
    }
    if (c->ctl_cb || c->ctl_ecb) {
      agent_frame_cb cb = c->ctl_cb;
      agent_event_cb ecb = c->ctl_ecb;
      void *ud = c->ctl_ud;
      /* a typed request ends with whatever comes (OK, ERROR, or something
       * else, which deliver() reports as an ERROR) */
      if (terminal(h->type) || ecb) c->ctl_cb = NULL, c->ctl_ecb = NULL;
      deliver(c, cb, ecb, ud, h, p);
      return;
    }
    if (h->type == AP_ERROR && !c->handshaken) {
      conn_fail(c, -EPROTO, "the guest agent refused the handshake");
      return;
    }
    return; /* unsolicited control frame: ignore */
  }
  if (h->type == AP_WINDOW) {
    handle_window(c, h, p);
    return;
  }
  size_t idx;
  channel *ch = find_channel(c, h->channel, &idx);
  if (!ch) return; /* forgotten channel: drop late frames */
  if (!frame_allowed(ch->op, h->type)) {
    protocol_violation(c, ch, h->type);
    return;
  }
  channel copy = *ch;
  if (terminal(h->type)) agent_channel_forget(c, h->channel);
  deliver(c, copy.cb, copy.ecb, copy.ud, h, p);
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
  agent_conn *c = hd->data;
  const size_t want = 65536;
  /* a partial frame of at most AP_MAX_PAYLOAD stays, so the bound is never
   * hit by a well-formed guest (an oversized frame fails in on_read first) */
  if (!c->rbuf.max) c->rbuf = CR_BUF_INIT(AP_HEADER_SIZE + AP_MAX_PAYLOAD + 2 * want);
  if (cr_buf_reserve(&c->rbuf, want) < 0) {
    *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
    return;
  }
  *buf = uv_buf_init((char *)c->rbuf.data + c->rbuf.len, (unsigned)(c->rbuf.cap - c->rbuf.len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  agent_conn *c = s->data;
  if (n == 0) return;
  if (n < 0) {
    conn_fail(c, (int)n, n == UV_EOF ? "the guest agent closed the channel (VM stopped?)"
                                     : "reading from the guest agent failed");
    return;
  }
  c->rbuf.len += (size_t)n;
  size_t off = 0;
  while (!c->closing && c->open) {
    ap_header h;
    const uint8_t *payload;
    long r = ap_frame_parse(c->rbuf.data + off, c->rbuf.len - off, AP_MAX_PAYLOAD, &h, &payload);
    if (r == 0) break;
    if (r < 0) {
      conn_fail(c, (int)r, r == -EMSGSIZE ? "the guest sent an oversized frame"
                                          : "the guest sent a malformed frame");
      return;
    }
    off += (size_t)r;
    handle_frame(c, &h, payload);
  }
  if (c->closing) return;
  if (off > 0) cr_buf_consume(&c->rbuf, off);
}

static void start_session(agent_conn *c) {
  c->open = true;
  uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
  ap_buf b = {0};
  int r = agent_enc_hello(&b);
  if (r == 0) r = write_bytes(c, b.data, b.len);
  ap_buf_free(&b);
  if (r < 0) conn_fail(c, r, "cannot send HELLO to the agent");
}

static void on_connect(uv_connect_t *req, int status) {
  agent_conn *c = req->data;
  if (c->closing) return;
  if (status < 0) {
    conn_fail(c, status, "cannot connect to the agent socket");
    return;
  }
  start_session(c);
}

int agent_conn_open(agent_conn *c, int fd) {
  int r = uv_pipe_init(c->loop, &c->pipe, 0);
  if (r < 0) {
    close(fd);
    return r;
  }
  c->pipe_inited = true;
  c->pipe.data = c;
  r = uv_pipe_open(&c->pipe, fd);
  if (r < 0) {
    close(fd);
    return r;
  }
  start_session(c);
  return 0;
}

int agent_conn_connect(agent_conn *c, const char *path) {
  int r = uv_pipe_init(c->loop, &c->pipe, 0);
  if (r < 0) return r;
  c->pipe_inited = true;
  c->pipe.data = c;
  c->connect_req.data = c;
  uv_pipe_connect(&c->connect_req, &c->pipe, path, on_connect);
  return 0;
}

static long request(agent_conn *c, ap_buf *b, agent_frame_cb cb, agent_event_cb ecb,
                    void *ud) {
  if (!agent_conn_ready(c)) return -ENOTCONN;
  if (b->err || b->len < AP_HEADER_SIZE) return b->err ? b->err : -ENOMEM;
  if (c->nchans == c->capchans) {
    size_t n = c->capchans ? c->capchans * 2 : 8;
    channel *nc = realloc(c->chans, n * sizeof(*nc));
    if (!nc) return -ENOMEM;
    c->chans = nc;
    c->capchans = n;
  }
  uint32_t id = c->next_channel;
  c->next_channel += 2;
  if (c->next_channel > 0x7fffffff) c->next_channel = 1;
  /* patch the channel into the header */
  b->data[8] = (uint8_t)id;
  b->data[9] = (uint8_t)(id >> 8);
  b->data[10] = (uint8_t)(id >> 16);
  b->data[11] = (uint8_t)(id >> 24);
  int r = write_bytes(c, b->data, b->len);
  if (r < 0) return r;
  uint16_t op = (uint16_t)(b->data[4] | b->data[5] << 8);
  c->chans[c->nchans++] = (channel){.id = id, .op = op, .cb = cb, .ecb = ecb, .ud = ud,
                                   .credit = c->window};
  return id;
}

long agent_request(agent_conn *c, ap_buf *b, agent_frame_cb cb, void *ud) {
  return request(c, b, cb, NULL, ud);
}

long agent_request_ev(agent_conn *c, ap_buf *b, agent_event_cb cb, void *ud) {
  return request(c, b, NULL, cb, ud);
}

const agent_hello *agent_conn_hello(const agent_conn *c) {
  return agent_conn_ready(c) ? &c->hello : NULL;
}

static int control(agent_conn *c, ap_buf *b, agent_frame_cb cb, agent_event_cb ecb, void *ud) {
  if (!agent_conn_ready(c)) return -ENOTCONN;
  if (c->ctl_cb || c->ctl_ecb) return -EBUSY;
  int r = write_bytes(c, b->data, b->len);
  if (r < 0) return r;
  c->ctl_cb = cb;
  c->ctl_ecb = ecb;
  c->ctl_ud = ud;
  return 0;
}

int agent_control(agent_conn *c, ap_buf *b, agent_frame_cb cb, void *ud) {
  return control(c, b, cb, NULL, ud);
}

int agent_control_ev(agent_conn *c, ap_buf *b, agent_event_cb cb, void *ud) {
  return control(c, b, NULL, cb, ud);
}

int agent_send(agent_conn *c, uint16_t type, uint32_t ch, const void *data,
               size_t n) {
  if (!agent_conn_ready(c)) return -ENOTCONN;
  bool is_data = type == AP_STDIN || type == AP_DATA;
  bool is_end = type == AP_STDIN_EOF || type == AP_DATA_END;
  if (c->flow && (is_data || is_end)) {
    channel *chp = find_channel(c, ch, NULL);
    if (!chp) return 0; /* the operation ended: the guest would drop it */
    if (is_end) {
      chp->pend_end = type;
    } else if (n > 0) {
      if (chp->pend_end) return -EPIPE; /* after STDIN_EOF/DATA_END */
      if (chp->pend_off == chp->pend.len) {
        cr_buf_reset(&chp->pend);
        chp->pend_off = 0;
      }
      /* what the guest has not taken yet is bounded; checked first, so a
       * refused write leaves the backlog as it was */
      size_t max = chp->op == AP_EXEC ? AGENT_PENDING_MAX_STDIN : AGENT_PENDING_MAX_DATA;
      if (chp->pend_off) {
        cr_buf_consume(&chp->pend, chp->pend_off);
        chp->pend_off = 0;
      }
      if (n > max || chp->pend.len > max - n) return -E2BIG;
      chp->pend.max = max;
      int r = cr_buf_append(&chp->pend, data, n);
      if (r < 0) {
        chp->pend.err = 0; /* out of memory: this write only */
        return r;
      }
      chp->pend_type = type;
    }
    return channel_pump(c, chp);
  }
  const uint8_t *p = data;
  ap_buf b = {0};
  int r = 0;
  do {
    size_t chunk = MIN(n, (size_t)AP_CHUNK);
    ap_buf_reset(&b);
    r = ap_put_raw_frame(&b, type, ch, p, chunk);
    if (r == 0) r = write_bytes(c, b.data, b.len);
    p += chunk;
    n -= chunk;
  } while (r == 0 && n > 0);
  ap_buf_free(&b);
  return r;
}

int agent_send_u32(agent_conn *c, uint16_t type, uint32_t ch, uint16_t tag,
                   uint32_t v) {
  if (!agent_conn_ready(c)) return -ENOTCONN;
  ap_buf b = {0};
  ap_frame_begin(&b, type, ch);
  ap_put_u32(&b, tag, v);
  int r = ap_frame_end(&b);
  if (r == 0) r = write_bytes(c, b.data, b.len);
  ap_buf_free(&b);
  return r;
}

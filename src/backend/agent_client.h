/* Host side of the agent protocol (docs/agent-protocol.md) on a libuv loop:
 * the frame level under the typed API of agent_ops.h. Only backend/ (and
 * tests) include this header; sandbox/ and workspace/ use agent_ops.h.
 *
 * One agent_conn per sandbox: a connection to the VMM's agent channel,
 * multiplexing many operations (channels). Everything the guest sends is
 * untrusted: frames are capped (AP_MAX_PAYLOAD) and a protocol violation
 * closes the connection. */
#pragma once
#include "backend/agent_ops.h"
#include "proto/agent_proto.h"
#include <stdbool.h>
#include <uv.h>

/* Delivered for every frame on a channel. When the frame ends the operation
 * (EXIT, OK, ERROR, STAT_RESULT) the channel is forgotten after the callback
 * returns. On connection loss each open channel gets one synthetic ERROR
 * frame (reason agent_unavailable) with payload built by the conn. */
typedef void (*agent_frame_cb)(agent_conn *c, void *ud, const ap_header *h,
                               const uint8_t *payload);

/* Sends a request: `b` holds one frame built with ap_frame_begin(type, 0) +
 * fields + ap_frame_end(); its channel is assigned here. Returns the channel
 * (> 0) or < 0 when not connected. */
long agent_request(agent_conn *c, ap_buf *b, agent_frame_cb cb, void *ud);
/* The same with the replies decoded into typed events (agent_ops.c). */
long agent_request_ev(agent_conn *c, ap_buf *b, agent_event_cb cb, void *ud);
/* Sends a frame on channel 0 (ACTIVATE, SHUTDOWN); replies go to cb. */
int agent_control(agent_conn *c, ap_buf *b, agent_frame_cb cb, void *ud);
int agent_control_ev(agent_conn *c, ap_buf *b, agent_event_cb cb, void *ud);
/* Sends raw data (STDIN, DATA) or an empty frame (STDIN_EOF, DATA_END) on an
 * open channel; chunks data at AP_CHUNK. When the guest speaks flow control
 * (AP_T_WINDOW in HELLO_REPLY), STDIN/DATA beyond the channel's credit is
 * copied into a per-channel queue and sent as AP_WINDOW credit arrives; a
 * STDIN_EOF/DATA_END waits behind it. The queue is a cr_buf bounded at
 * AGENT_PENDING_MAX_STDIN (exec channels) or AGENT_PENDING_MAX_DATA (file
 * and tar streams): a write that would pass it fails with -E2BIG and leaves
 * the queue as it was (callers keep tighter caps of their own with
 * agent_channel_queued()). Data for a channel that has ended is dropped. */
int agent_send(agent_conn *c, uint16_t type, uint32_t channel, const void *data,
               size_t n);
/* Sends a frame with one u32 field (e.g. SIGNAL). */
int agent_send_u32(agent_conn *c, uint16_t type, uint32_t channel,
                   uint16_t tag, uint32_t v);

/* ---- encoding and decoding (agent_ops.c; unit-tested on their own).
 * Encoders append one whole frame to b (channel 0; agent_request assigns
 * the real one) and return 0, -EMSGSIZE (too large for a frame) or
 * -ENOMEM; a failed frame leaves b as it was before. */
int agent_enc_hello(ap_buf *b);
int agent_enc_exec(ap_buf *b, const agent_exec_req *r);
int agent_enc_activate(ap_buf *b, const agent_activate_req *r);
int agent_enc_path(ap_buf *b, uint16_t type, const char *path); /* STAT, TAR_OUT */
int agent_enc_file_read(ap_buf *b, const char *path, uint64_t offset, uint64_t length);
int agent_enc_file_write(ap_buf *b, const char *path, uint32_t mode, bool parents, bool append);
int agent_enc_list(ap_buf *b, const char *path, uint32_t depth);
int agent_enc_tar_in(ap_buf *b, const char *path, bool parents);
int agent_enc_mount(ap_buf *b, const char *dev, const char *path);
/* HELLO_REPLY: 0, or -EPROTO when VERSION is missing or malformed. */
int agent_dec_hello(const uint8_t *p, size_t n, agent_hello *ret);
/* A reply frame of `type` into *ev; strings are allocated (NULL when
 * absent, malformed or out of memory): agent_event_clear() frees them.
 * Returns 0, or -EBADMSG for a type that is not a reply. */
int agent_dec_event(uint16_t type, const uint8_t *p, size_t n, agent_event *ev);
void agent_event_clear(agent_event *ev);

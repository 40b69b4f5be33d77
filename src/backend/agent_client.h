/* Host side of the agent protocol (docs/agent-protocol.md) on a libuv loop.
 *
 * One agent_conn per sandbox: a unix-socket connection to the VMM's agent
 * channel, multiplexing many operations (channels). Everything the guest
 * sends is untrusted: frames are capped (AP_MAX_PAYLOAD) and a protocol
 * violation closes the connection. */
#pragma once
#include "proto/agent_proto.h"
#include <stdbool.h>
#include <uv.h>

typedef struct agent_conn agent_conn;

/* Delivered for every frame on a channel. When the frame ends the operation
 * (EXIT, OK, ERROR, STAT_RESULT) the channel is forgotten after the callback
 * returns. On connection loss each open channel gets one synthetic ERROR
 * frame (reason agent_unavailable) with payload built by the conn. */
typedef void (*agent_frame_cb)(agent_conn *c, void *ud, const ap_header *h,
                               const uint8_t *payload);
/* Connection state: status 0 = handshake done (hello has the guest's
 * HELLO_REPLY payload), < 0 = failed or closed (-errno), message says why. */
typedef void (*agent_state_cb)(agent_conn *c, void *ud, int status,
                               const char *message, const uint8_t *hello,
                               size_t hello_len);

agent_conn *agent_conn_new(uv_loop_t *loop, agent_state_cb cb, void *ud);
/* Connects to path and sends HELLO. The state callback reports the outcome. */
int agent_conn_connect(agent_conn *c, const char *path);
/* Takes a connected stream socket (backend_ops.connect_agent) and sends
 * HELLO; fd is owned by the conn from here on (closed on failure too). */
int agent_conn_open(agent_conn *c, int fd);
/* Closes the connection; pending channels get their synthetic ERROR; the
 * memory is freed once libuv is done with the handle. Safe with NULL. No
 * callbacks run after this returns... except the synthetic errors, which run
 * synchronously inside this call. */
void agent_conn_close(agent_conn *c);
bool agent_conn_ready(const agent_conn *c);

/* Sends a request: `b` holds one frame built with ap_frame_begin(type, 0) +
 * fields + ap_frame_end(); its channel is assigned here. Returns the channel
 * (> 0) or < 0 when not connected. */
long agent_request(agent_conn *c, ap_buf *b, agent_frame_cb cb, void *ud);
/* Sends a frame on channel 0 (ACTIVATE, SHUTDOWN); replies go to cb. */
int agent_control(agent_conn *c, ap_buf *b, agent_frame_cb cb, void *ud);
/* Sends raw data (STDIN, DATA) or an empty frame (STDIN_EOF, DATA_END) on an
 * open channel; chunks data at AP_CHUNK. When the guest speaks flow control
 * (AP_T_WINDOW in HELLO_REPLY), STDIN/DATA beyond the channel's credit is
 * copied into a per-channel queue and sent as AP_WINDOW credit arrives; a
 * STDIN_EOF/DATA_END waits behind it. The queue is a cr_buf bounded at
 * AGENT_PENDING_MAX_STDIN (exec channels) or AGENT_PENDING_MAX_DATA (file
 * and tar streams): a write that would pass it fails with -E2BIG and leaves
 * the queue as it was (callers keep tighter caps of their own with
 * agent_channel_queued()). Data for a channel that has ended is dropped. */
#define AGENT_PENDING_MAX_STDIN (64u << 20)
/* at least the largest DATA stream sent in one piece (a workspace copy-in
 * tar, CR_WS_MAX_COPY_IN, 256 MiB) */
#define AGENT_PENDING_MAX_DATA (320u << 20)
int agent_send(agent_conn *c, uint16_t type, uint32_t channel, const void *data,
               size_t n);
/* Sends a frame with one u32 field (e.g. SIGNAL). */
int agent_send_u32(agent_conn *c, uint16_t type, uint32_t channel,
                   uint16_t tag, uint32_t v);
/* Stops delivering frames for channel (its callback will not run again). */
void agent_channel_forget(agent_conn *c, uint32_t channel);
/* Bytes queued for writing (backpressure): the socket's write queue plus
 * every channel's data waiting for credit. */
size_t agent_write_queue(const agent_conn *c);
/* Bytes of the channel's STDIN/DATA waiting for credit from the guest; with
 * an agent without flow control, the whole connection's write queue. */
size_t agent_channel_queued(const agent_conn *c, uint32_t id);

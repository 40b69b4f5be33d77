/* MCP ops: one control API request with its own in-process sink (api_call
 * through envelope.c); an op's callback sees the answer and the
 * notifications bound to the request. */
#include "mcp/mcp-internal.h"
#include "util/error.h"

#include <stdlib.h>
#include <string.h>

/* ---- control API ops ---- */

static void op_free(api_sink *sink) {
  mcp_op *op = container_of(sink, mcp_op, sink);
  mcp_session *s = op->s;
  if (op->call) mcp_call_unref(op->call);
  free(op);
  mcp_session_unref(s);
}

static void op_release(mcp_op *op) {
  if (op->released) return;
  op->released = true;
  if (--op->sink.refs == 0) op->sink.free(&op->sink);
}

static void op_deliver(mcp_op *op, const mcp_msg *m) {
  if (op->done) return;
  if (op->on_msg(op, m)) {
    op->done = true;
    op->sink.closed = true;
    if (!op->in_dispatch) op_release(op);
  }
}

static void op_reply(api_sink *sink, const api_reply *r) {
  mcp_msg m = {.response = true, .is_error = !r->result, .result = r->result, .code = r->code,
               .message = r->message, .reason = r->reason, .bytes = r->bytes,
               .n_bytes = r->n_bytes};
  op_deliver(container_of(sink, mcp_op, sink), &m);
}

const api_bytes *mcp_msg_bytes(const mcp_msg *m, const char *key) {
  if (!key) key = "data";
  for (size_t i = 0; i < m->n_bytes; i++)
    if (!strcmp(m->bytes[i].key ? m->bytes[i].key : "data", key)) return &m->bytes[i];
  return NULL;
}

static void op_notify(api_sink *sink, const char *method, json_t *params, const api_bytes *b) {
  mcp_msg m = {.method = method, .params = params, .bytes = b, .n_bytes = b ? 1 : 0};
  op_deliver(container_of(sink, mcp_op, sink), &m);
}

void mcp_api(mcp_session *s, mcp_call *c, const char *method, json_t *params,
             mcp_op_fn on_msg) {
  mcp_api_bytes(s, c, method, params, NULL, 0, on_msg);
}

void mcp_api_bytes(mcp_session *s, mcp_call *c, const char *method, json_t *params,
                   const void *data, size_t n, mcp_op_fn on_msg) {
  mcp_op *op = calloc(1, sizeof(*op));
  if (!op) {
    json_decref(params);
    if (c) mcp_call_fail(c, CR_E_INTERNAL, "out of memory");
    return;
  }
  op->sink.reply = op_reply;
  op->sink.notify = op_notify;
  op->sink.free = op_free;
  op->sink.refs = 1;
  op->s = s;
  mcp_session_ref(s);
  op->call = c ? mcp_call_ref(c) : NULL;
  op->on_msg = on_msg;
  api_bytes bytes = {data, n};
  if (!params) params = json_object();
  op->in_dispatch = true;
  mcp_api_invoke(s->d, s->call, s->dispatch, &op->sink, method, params, data ? &bytes : NULL,
                 (json_int_t)++s->next_api_id);
  op->in_dispatch = false;
  json_decref(params);
  if (op->done) op_release(op);
}

bool mcp_is_error(const mcp_msg *msg) { return msg->response && msg->is_error; }
json_t *mcp_result_of(const mcp_msg *msg) { return msg->response ? msg->result : NULL; }

/* The door of MCP tools to the control API: api_call in process (no
 * JSON-RPC envelope, bytes as bytes), or, for a session made with
 * mcp_session_new_with_dispatch() (unit tests' doubles of the control API),
 * the socket's JSON-RPC messages, turned back into in-process replies. */
#include "mcp/mcp-internal.h"
#include "util/base64.h"

#include <stdlib.h>
#include <string.h>

typedef struct bridge {
  api_sink sink; /* the JSON-RPC side: the dispatcher sends to it */
  api_sink *target;
  bool file_read; /* the result's "data" is the file's bytes */
  bool exec_read; /* the result's "stdout" and "stderr" are bytes */
} bridge;

static void bridge_free(api_sink *s) {
  bridge *b = container_of(s, bridge, sink);
  api_sink_unref(b->target);
  free(b);
}

/* Takes base64 `key` out of o (a copy of the message's object): *ret_raw
 * the bytes. false when there is none or it does not decode. */
static bool take_key(json_t *o, const char *key, uint8_t **ret_raw, size_t *ret_n) {
  const char *d = json_string_value(json_object_get(o, key));
  if (!d || cr_base64_decode_lenient(d, strlen(d), ret_raw, ret_n) < 0) return false;
  json_object_del(o, key);
  return true;
}

/* take_key of "data" from a copy of o: *ret_o the copy (new reference). */
static bool take_data(json_t *o, json_t **ret_o, uint8_t **ret_raw, size_t *ret_n) {
  json_t *c = json_copy(o);
  if (!c || !take_key(c, "data", ret_raw, ret_n)) {
    json_decref(c);
    return false;
  }
  *ret_o = c;
  return true;
}

static void bridge_send(api_sink *s, json_t *msg) {
  bridge *b = container_of(s, bridge, sink);
  api_sink *t = b->target;
  if (t->closed || !json_is_object(msg)) return;
  const char *method = json_string_value(json_object_get(msg, "method"));
  json_t *result = json_object_get(msg, "result"), *error = json_object_get(msg, "error");
  if (!method && (result || error)) {
    if (!t->reply) return;
    if (error) {
      api_reply r = {
          .code = (int)json_integer_value(json_object_get(error, "code")),
          .message = json_string_value(json_object_get(error, "message")),
          .reason = json_string_value(json_object_get(json_object_get(error, "data"), "reason")),
      };
      t->reply(t, &r);
      return;
    }
    json_t *o = NULL;
    uint8_t *raw = NULL;
    size_t n = 0;
    if (b->file_read && take_data(result, &o, &raw, &n)) {
      api_bytes by = {raw, n};
      api_reply r = {.result = o, .bytes = &by, .n_bytes = 1};
      t->reply(t, &r);
      json_decref(o);
      free(raw);
      return;
    }
    if (b->exec_read) {
      uint8_t *raw2 = NULL;
      size_t n2 = 0;
      o = json_copy(result);
      if (o && take_key(o, "stdout", &raw, &n) && take_key(o, "stderr", &raw2, &n2)) {
        api_bytes by[2] = {{raw, n, "stdout"}, {raw2, n2, "stderr"}};
        api_reply r = {.result = o, .bytes = by, .n_bytes = 2};
        t->reply(t, &r);
        json_decref(o);
        free(raw);
        free(raw2);
        return;
      }
      json_decref(o);
      free(raw);
    }
    api_reply r = {.result = result};
    t->reply(t, &r);
    return;
  }
  if (!method || !t->notify) return;
  json_t *params = json_object_get(msg, "params");
  json_t *o = NULL;
  uint8_t *raw = NULL;
  size_t n = 0;
  if (!strcmp(method, "execution.output")) {
    if (!take_data(params, &o, &raw, &n)) return;
    api_bytes by = {raw, n};
    t->notify(t, method, o, &by);
    json_decref(o);
    free(raw);
    return;
  }
  t->notify(t, method, params, NULL);
}

void mcp_api_invoke(daemon_ctx *d, mcp_api_fn call, mcp_dispatch_fn dispatch, api_sink *sink,
                    const char *method, json_t *params, const api_bytes *bytes, json_int_t id) {
  if (call) {
    call(d, sink, method, params, bytes);
    return;
  }
  bridge *b = calloc(1, sizeof(*b));
  if (!b) return;
  b->sink.send = bridge_send;
  b->sink.free = bridge_free;
  b->sink.refs = 1;
  b->target = api_sink_ref(sink);
  b->file_read = !strcmp(method, "file.read");
  b->exec_read = !strcmp(method, "execution.read");
  json_t *p = params ? json_copy(params) : json_object();
  if (bytes) {
    char *enc = cr_base64_encode(bytes->data ? bytes->data : (const uint8_t *)"", bytes->len);
    json_object_set_new(p, "data", json_string(enc ? enc : ""));
    free(enc);
  }
  json_t *msg = json_pack("{s:s, s:I, s:s, s:o}", "jsonrpc", "2.0", "id", id, "method", method,
                          "params", p);
  dispatch(d, &b->sink, msg);
  json_decref(msg);
  api_sink_unref(&b->sink);
}

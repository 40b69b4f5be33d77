/* JSON-RPC messages and sinks of the control API (api.h). */
#include "api/api.h"
#include "util/base64.h"

#include <stdlib.h>
#include <string.h>

void api_sink_unref(api_sink *s) {
  if (s && --s->refs == 0 && s->free) s->free(s);
}

void api_sink_send(api_sink *s, json_t *msg) {
  if (s && !s->closed && msg) s->send(s, msg);
  json_decref(msg);
}

json_t *api_result(json_t *id, json_t *result) {
  return json_pack("{s:s, s:O?, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "result",
                   result ? result : json_object());
}

json_t *api_error(json_t *id, int code, const char *message, const char *reason) {
  json_t *e = json_pack("{s:i, s:s}", "code", code, "message", message ? message : "error");
  if (reason) json_object_set_new(e, "data", json_pack("{s:s}", "reason", reason));
  return json_pack("{s:s, s:O?, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "error", e);
}

json_t *api_notification(const char *method, json_t *params) {
  return json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", method, "params",
                   params ? params : json_object());
}

void api_sink_result(api_sink *s, json_t *id, json_t *result, const api_bytes *bytes) {
  api_sink_result_n(s, id, result, bytes, bytes ? 1 : 0);
}

void api_sink_result_n(api_sink *s, json_t *id, json_t *result, const api_bytes *bytes, size_t n) {
  if (!result) result = json_object();
  if (!s || s->closed) {
    json_decref(result);
    return;
  }
  if (s->reply) {
    api_reply r = {.result = result, .bytes = n ? bytes : NULL, .n_bytes = n};
    s->reply(s, &r);
    json_decref(result);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const api_bytes *b = &bytes[i];
    char *enc = cr_base64_encode(b->data ? b->data : (const uint8_t *)"", b->len);
    json_object_set_new(result, b->key ? b->key : "data", json_string(enc ? enc : ""));
    free(enc);
  }
  api_sink_send(s, api_result(id, result));
}

void api_sink_error(api_sink *s, json_t *id, int code, const char *message, const char *reason) {
  if (!s || s->closed) return;
  if (s->reply) {
    api_reply r = {.code = code, .message = message ? message : "error", .reason = reason};
    s->reply(s, &r);
    return;
  }
  api_sink_send(s, api_error(id, code, message, reason));
}

void api_sink_notify(api_sink *s, const char *method, json_t *params) {
  if (!params) params = json_object();
  if (!s || s->closed) {
    json_decref(params);
    return;
  }
  if (s->notify) {
    s->notify(s, method, params, NULL);
    json_decref(params);
    return;
  }
  if (s->reply) { /* an in-process sink without notifications */
    json_decref(params);
    return;
  }
  api_sink_send(s, api_notification(method, params));
}

void api_sink_output(api_sink *s, const char *execution_id, int stream, const uint8_t *data,
                     size_t n) {
  if (!s || s->closed) return;
  const char *name = stream == 1 ? "stdout" : "stderr";
  if (s->reply) {
    if (!s->notify) return;
    json_t *p = json_pack("{s:s, s:s}", "execution_id", execution_id, "stream", name);
    api_bytes b = {data, n};
    s->notify(s, "execution.output", p, &b);
    json_decref(p);
    return;
  }
  char *enc = cr_base64_encode(data, n);
  api_sink_send(s, api_notification("execution.output",
                                    json_pack("{s:s, s:s, s:s}", "execution_id", execution_id,
                                              "stream", name, "data", enc ? enc : "")));
  free(enc);
}

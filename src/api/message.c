/* JSON-RPC messages and sinks of the control API (api.h). */
#include "api/api.h"

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

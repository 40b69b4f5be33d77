/* Fuzz target: the daemon's control-API dispatcher (src/api/methods.c).
 * Each input line is parsed like the socket server does and dispatched to a
 * real daemon context whose data dir is empty, so no VM ever boots; replies
 * go to a sink that checks they are valid JSON-RPC. */
#include "api/api.h"
#include "util/fs.h"
#include "util/macro.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void sink_send(api_sink *s, json_t *msg) {
  assert(json_is_object(msg));
  assert(json_object_get(msg, "jsonrpc"));
  char *txt = json_dumps(msg, JSON_COMPACT);
  assert(txt && !strchr(txt, '\n'));
  free(txt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char data_dir[] = "/tmp/cr-fuzz-api-XXXXXX";

static void cleanup(void) { cr_rm_rf(data_dir); }

static daemon_ctx *ctx(void) {
  static daemon_ctx d;
  if (d.sandboxes) return &d;
  if (!mkdtemp(data_dir)) abort();
  atexit(cleanup);
  setenv("CLEANROOM_DATA_DIR", data_dir, 1);
  setenv("CLEANROOM_IMAGE", "fuzz/none", 1);
  d.loop = uv_default_loop();
  d.socket_path = strdup("/nonexistent/cleanroom.sock");
  d.sandboxes = sbx_manager_new(d.loop, NULL);
  if (!d.sandboxes) abort();
  return &d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  daemon_ctx *d = ctx();
  api_sink sink = {.send = sink_send, .free = NULL, .refs = 1};
  size_t start = 0;
  while (start < size) {
    const uint8_t *nl = memchr(data + start, '\n', size - start);
    size_t len = nl ? (size_t)(nl - (data + start)) : size - start;
    json_t *msg = json_loadb((const char *)data + start, len, JSON_REJECT_DUPLICATES, NULL);
    if (msg) {
      api_dispatch(d, &sink, msg);
      json_decref(msg);
    }
    start += len + 1;
  }
  uv_run(d->loop, UV_RUN_NOWAIT);
  return 0;
}

/* Fuzz target: the daemon's control-API dispatcher (src/api/methods.c).
 * Each input line is parsed like the socket server does and dispatched to a
 * real daemon context whose data dir is empty, so no VM ever boots; replies
 * go to a sink that checks they are valid JSON-RPC. */
#include "api/api.h"
#include "util/fs.h"
#include "util/macro.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Not assert(): that is compiled out under NDEBUG and the check would
 * silently pass in a release-style build. */
#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "fuzz-api: check failed: %s (%s:%d)\n", #cond, __FILE__, \
              __LINE__);                                                     \
      abort();                                                               \
    }                                                                        \
  } while (0)

static void sink_send(api_sink *s, json_t *msg) {
  CHECK(json_is_object(msg));
  const char *v = json_string_value(json_object_get(msg, "jsonrpc"));
  CHECK(v && !strcmp(v, "2.0"));
  /* a reply has an id and exactly one of result/error; else a notification */
  json_t *res = json_object_get(msg, "result"), *err = json_object_get(msg, "error");
  if (json_object_get(msg, "method")) {
    CHECK(!res && !err);
  } else {
    CHECK(json_object_get(msg, "id"));
    CHECK((res != NULL) != (err != NULL));
    if (err) {
      CHECK(json_is_integer(json_object_get(err, "code")));
      CHECK(json_is_string(json_object_get(err, "message")));
    }
  }
  char *txt = json_dumps(msg, JSON_COMPACT);
  CHECK(txt && !strchr(txt, '\n'));
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

/* The control API inside the daemon (docs/api.md).
 *
 * Requests arrive as parsed JSON-RPC objects together with a sink, the thing
 * that receives the response and any notifications bound to that request.
 * The socket server (src/server/) makes one sink per connection and hands
 * JSON-RPC messages to api_dispatch(). The MCP layer (src/mcp/) calls the
 * same method table in process with api_call(): a method name and params
 * in, the result or error out through its sink's `reply` (no JSON-RPC
 * envelope), file content as bytes (no base64), so MCP tools and the CLI
 * run exactly the same code.
 *
 * Everything here runs on the daemon's libuv loop thread. */
#pragma once
#include "sandbox/sandbox.h"
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

/* Who sent a request (SO_PEERCRED and the process's groups), as far as the
 * transport knows. */
typedef struct api_peer {
  bool known;
  uid_t uid;
  gid_t gid;
  pid_t pid;
  gid_t groups[64];
  size_t n_groups;
} api_peer;

/* A binary payload passed in process instead of base64 text. In a result,
 * key names the field a socket sink puts it in, base64 (NULL: "data"). */
typedef struct api_bytes {
  const uint8_t *data;
  size_t len;
  const char *key;
} api_bytes;

/* The answer to an in-process call (api_call). */
typedef struct api_reply {
  json_t *result;     /* borrowed; NULL for an error */
  const api_bytes *bytes; /* n_bytes fields the result lacks, as bytes:
                           * file.read's "data" (the file's bytes),
                           * execution.read's "stdout" and "stderr"; NULL
                           * otherwise */
  size_t n_bytes;
  int code;           /* an error: its JSON-RPC code */
  const char *message, *reason; /* an error; reason NULL for protocol errors */
} api_reply;

typedef struct api_sink api_sink;
struct api_sink {
  /* A sink of the socket server: receives a response or notification as a
   * JSON-RPC message. `msg` is borrowed: json_incref it to keep it. Never
   * called after the sink was closed. */
  void (*send)(api_sink *sink, json_t *msg);
  /* An in-process sink (api_call) sets these instead of `send`: the answer,
   * and the notifications bound to the request (params borrowed; `bytes`:
   * execution.output's data, which params then lack). */
  void (*reply)(api_sink *sink, const api_reply *r);
  void (*notify)(api_sink *sink, const char *method, json_t *params, const api_bytes *bytes);
  /* Called when the last reference goes away. */
  void (*free)(api_sink *sink);
  /* Transports that carry file descriptors (the socket server: SCM_RIGHTS)
   * set this: it takes the oldest descriptor the peer sent before the
   * current request ended, or returns -1; the caller owns it. NULL: no
   * descriptors can come this way (MCP, in-process callers). */
  int (*take_fd)(api_sink *sink);
  api_peer peer; /* filled in by the transport; .known false otherwise */
  int refs;
  bool closed; /* set by the owner when its peer went away */
};

static inline api_sink *api_sink_ref(api_sink *s) {
  if (s) s->refs++;
  return s;
}
void api_sink_unref(api_sink *s);
/* Sends msg to the sink unless it is closed; steals msg. Socket sinks only. */
void api_sink_send(api_sink *s, json_t *msg);
/* What the method table answers with, to either kind of sink (nothing once
 * it is closed). result and params are stolen. api_sink_result's bytes (NULL:
 * none) reach a socket sink base64 in result's "data"; api_sink_output's as
 * execution.output's "data". */
void api_sink_result(api_sink *s, json_t *id, json_t *result, const api_bytes *bytes);
/* The same with n byte fields (each base64 in its key's field for a socket
 * sink, as bytes for an in-process one). */
void api_sink_result_n(api_sink *s, json_t *id, json_t *result, const api_bytes *bytes, size_t n);
void api_sink_error(api_sink *s, json_t *id, int code, const char *message,
                    const char *reason);
void api_sink_notify(api_sink *s, const char *method, json_t *params);
void api_sink_output(api_sink *s, const char *execution_id, int stream /* 1 stdout, 2 stderr */,
                     const uint8_t *data, size_t n);

/* What the method table works on: the daemon's state. The socket server
 * (src/server) makes one; so do tests. */
typedef struct daemon_ctx {
  uv_loop_t *loop;
  sbx_manager *sandboxes;
  char *socket_path; /* reported by system.info */
} daemon_ctx;

/* Handles one JSON-RPC message (request or notification). The response is
 * sent to `sink` now or later (long operations). Steals nothing. */
void api_dispatch(daemon_ctx *d, api_sink *sink, json_t *msg);
/* The same method table in process: `method` with `params` (borrowed; NULL =
 * {}), `bytes` the binary payload of file.write and execution.write (NULL: the
 * params' base64 "data", if any). The answer reaches sink->reply now or later,
 * once; the request's notifications sink->notify. */
void api_call(daemon_ctx *d, api_sink *sink, const char *method, json_t *params,
              const api_bytes *bytes);

/* Helpers for building messages (new references). */
json_t *api_result(json_t *id, json_t *result /* stolen */);
json_t *api_error(json_t *id, int code, const char *message,
                  const char *reason /* NULL for protocol errors */);
json_t *api_notification(const char *method, json_t *params /* stolen */);

/* JSON-RPC error codes */
#define API_PARSE_ERROR -32700
#define API_INVALID_REQUEST -32600
#define API_METHOD_NOT_FOUND -32601
#define API_INVALID_PARAMS -32602
#define API_INTERNAL_ERROR -32603
#define API_OPERATION_FAILED -32000

#define API_MAX_LINE (4u << 20)

/* A blocking client for the control API (docs/api.md): JSON-RPC 2.0, one
 * message per line, over the daemon's unix socket.
 *
 * Used by the CLI (src/cli/) and anything else that talks to `cleanroom
 * serve` from another process. Not thread-safe: one client per thread.
 *
 *   _cleanup_(api_client_freep) api_client *c = NULL;
 *   if (api_client_connect(NULL, true, &c, &err) < 0) ...
 *   json_t *res;
 *   if (api_client_call(c, "sandbox.list", NULL, NULL, NULL, &res, &err) < 0) ...
 *
 * For interleaving other input with the socket (exec forwarding stdin),
 * use api_client_fd() in poll(2), api_client_request_async() /
 * api_client_send_notification() to send, and api_client_read_message() to
 * receive whatever comes next (response or notification). */
#pragma once
#include "util/error.h"

#include <jansson.h>
#include <stdbool.h>

typedef struct api_client api_client;

/* Lines longer than this are a protocol error (the same bound as the server). */
#define API_CLIENT_MAX_LINE (4u << 20)
/* How long the autostart waits for a new daemon's socket to accept. */
#define API_CLIENT_AUTOSTART_TIMEOUT_MS 10000

/* Called for each notification that arrives while api_client_call() waits.
 * method and params are borrowed (params may be NULL). */
typedef void (*api_client_notify_fn)(const char *method, json_t *params,
                                     void *userdata);

/* Connects to the daemon.
 *   host: "unix:/path" or "/path"; NULL means env CLEANROOM_HOST, else
 *         cr_socket_path().
 *   autostart: when nothing listens and neither host nor CLEANROOM_HOST was
 *         given, start `<this executable> serve` detached (log appended to
 *         <run dir>/daemon.log) and wait up to 10 s for it.
 * Errors: daemon_unavailable, invalid_argument (unsupported host). */
int api_client_connect(const char *host, bool autostart, api_client **ret,
                       cr_error **err);
void api_client_free(api_client *c);
static inline void api_client_freep(api_client **c) {
  api_client_free(*c);
  *c = NULL;
}
#define _cleanup_api_client_ _cleanup_(api_client_freep)

/* The socket's file descriptor, for poll(2). Data may already be buffered
 * inside the client: call api_client_pending() before polling. */
int api_client_fd(const api_client *c);
/* True when a complete message is already buffered. */
bool api_client_pending(const api_client *c);
/* The socket path this client is connected to. */
const char *api_client_socket(const api_client *c);

/* Sends a request and waits for its response. params is stolen (NULL = no
 * params). Notifications arriving meanwhile go to notify (may be NULL);
 * responses to other (async) requests are dropped.
 * On success *ret_result (optional) gets a new reference to the result.
 * A JSON-RPC error becomes a cr_error whose reason is error.data.reason, or
 * "protocol_error" when the error has none. */
int api_client_call(api_client *c, const char *method, json_t *params,
                    api_client_notify_fn notify, void *userdata,
                    json_t **ret_result, cr_error **err);

/* api_client_call() that also sends fd (a copy: the caller keeps it) with
 * the request's first bytes (SCM_RIGHTS), for methods that read something
 * the caller opened (image.import). fd < 0: none. */
int api_client_call_fd(api_client *c, const char *method, json_t *params, int fd,
                       api_client_notify_fn notify, void *userdata,
                       json_t **ret_result, cr_error **err);

/* Sends a request without waiting; *ret_id (optional) gets its id.
 * params is stolen. */
int api_client_request_async(api_client *c, const char *method, json_t *params,
                             json_int_t *ret_id, cr_error **err);
/* Sends a notification (no id, no response). params is stolen. */
int api_client_send_notification(api_client *c, const char *method,
                                 json_t *params, cr_error **err);

/* Reads the next message. timeout_ms < 0 waits forever, 0 polls.
 * Returns 1 with *ret_msg set (new reference), 0 on timeout, < 0 on error
 * (daemon_unavailable when the connection closed, protocol_error for an
 * over-long or unparsable line). */
int api_client_read_message(api_client *c, int timeout_ms, json_t **ret_msg,
                            cr_error **err);

/* Converts a response message into its result or an error: returns 0 and
 * *ret_result (optional, new reference) for a result, < 0 with *err set for
 * a JSON-RPC error (see api_client_call). */
int api_client_response_result(json_t *msg, json_t **ret_result, cr_error **err);

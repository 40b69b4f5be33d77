/* Control API workspace methods (methods-workspace.c), called from the
 * method table in methods.c with the request's parts. */
#pragma once
#include "api/api.h"

void api_ws_resolve(daemon_ctx *d, api_sink *sink, json_t *id, json_t *params);
void api_ws_checkout(daemon_ctx *d, api_sink *sink, json_t *id, json_t *params);
void api_ws_diff(daemon_ctx *d, api_sink *sink, json_t *id, json_t *params);
void api_ws_copy_in(daemon_ctx *d, api_sink *sink, json_t *id, json_t *params);
/* sandbox.create with a 'workspace' object. */
void api_ws_sandbox_create(daemon_ctx *d, api_sink *sink, json_t *id, json_t *params);

/* Control API content-cache methods (methods-cache.c): cache.list,
 * cache.stats and cache.prune, called from the method table in methods.c
 * with the request's parts. */
#pragma once
#include "api/api.h"

typedef enum api_cache_op { API_CACHE_LIST, API_CACHE_STATS, API_CACHE_PRUNE } api_cache_op;

void api_cache_call(daemon_ctx *d, api_sink *sink, json_t *id, json_t *params, api_cache_op op);

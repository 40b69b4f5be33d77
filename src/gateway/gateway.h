/* The host gateway (docs/gateway.md): an HTTP service on each network
 * sandbox's host address (CLEANROOM_GATEWAY_PORT, default 8470; "0" or "off"
 * turns it off), bound to the sandbox's TAP. The listener identifies the
 * sandbox; the peer must be the guest's address (anti-spoofing in egress
 * makes that sound). Routes: git smart-HTTP (upload-pack; receive-pack
 * refused with push_not_allowed unless the policy's sandbox.network.git_push
 * names the upstream). The upstream must be allowed by the
 * sandbox's network policy (else host_not_allowed etc. in the audit events);
 * it is asked with libcurl on a thread per request, credentials from the
 * host's file (CLEANROOM_GATEWAY_CREDENTIALS) added there only. Immutable
 * responses go to the content cache (src/cache). */
#pragma once
#include "egress/egress.h"
#include "util/error.h"

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

typedef struct gw gw;
typedef struct gw_sbx gw_sbx;

/* Reads the configuration; tells egress its port. *ret NULL (and 0) when
 * the gateway is turned off. */
int gw_new(uv_loop_t *loop, egress *e, gw **ret, cr_error **err);
/* Ends upstream requests (they are cancelled) and frees. */
void gw_free(gw *g);
uint16_t gw_port(const gw *g);

/* Starts the listener on the sandbox's host address. */
int gw_attach(gw *g, egress_sbx *s, gw_sbx **ret, cr_error **err);
/* Closes the listener and the sandbox's connections. */
void gw_detach(gw_sbx *s);

/* KEY=VALUE strings (new array) for a sandbox's executions: git's
 * url.<gateway>.insteadOf for https:// and http:// as GIT_CONFIG_COUNT/
 * GIT_CONFIG_KEY_n/GIT_CONFIG_VALUE_n; GOPROXY, npm_config_registry, bundler's
 * rubygems.org mirror and CLEANROOM_RUBYGEMS_SOURCE when configured. */
json_t *gw_exec_env(const gw_sbx *s);
/* {port, requests, upstream_requests, cache_hits, cache_misses, denied} */
json_t *gw_stats(const gw *g);

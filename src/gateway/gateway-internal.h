/* Gateway internals shared by gateway.c (the loop side) and upstream.c (the
 * upstream request, run on a thread of its own). */
#pragma once
#include "cache/cache.h"
#include "gateway/request.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct gw_job {
  /* in (filled on the loop, read-only on the thread) */
  gw_route rt;
  char content_type[128], content_encoding[32], git_protocol[128], accept[128], user_agent[128];
  uint8_t *body;
  size_t body_len;
  const char *cred_file;   /* may be NULL */
  char *policy_text;        /* the sandbox's network policy (redirects are checked against it) */
  char ca_file[256];        /* CA bundle for TLS upstreams ("" = libcurl's default) */
  cache *cache;            /* may be NULL */
  bool offline;            /* only cached entries */
  unsigned revalidate_s;   /* a mutable answer is served from the cache this long (0: always ask) */
  unsigned revalidate_refs_s; /* the same for git ref advertisements */
  uint32_t pool, pool_mask; /* the sandbox pool: never an upstream */
  size_t max_response;
  atomic_bool *stopping;
  atomic_size_t *buffered;  /* bytes of responses held by the gateway (all jobs) */
  size_t max_buffered;
  size_t accounted;         /* this job's share of *buffered */
  char gw_base[48];         /* "http://<host address>:<port>" as the guest reaches us */
  /* out (filled on the thread) */
  int status;
  char resp_type[128];
  char resp_digest[80];     /* OCI manifests: "sha256:<hex>" (Docker-Content-Digest) */
  uint8_t *resp;
  size_t resp_len, resp_cap;
  const char *reason;      /* stable code: "allowed", "upstream_unavailable", ... */
  char detail[256];
  bool cacheable, cache_hit, cred_used;
  bool snapshot;            /* a mutable answer (refs, indexes, tags) kept as the latest: served
                               within its revalidation time, after a 304, and offline */
  const char *cache_state;  /* "fresh" (within the time) or "revalidated" (304), else NULL */
  char cache_key[65];
  double upstream_ms;
  int redirects;            /* followed */
  /* linkage (loop side) */
  uv_thread_t thread;
  struct gw_job *next;
  void *conn;
} gw_job;

/* Blocking: cache lookup, the upstream request with libcurl, cache store. */
void gw_upstream_run(gw_job *j);

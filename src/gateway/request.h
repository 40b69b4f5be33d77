/* The gateway's HTTP request reader and router (docs/gateway.md): pure
 * functions over bytes from the guest, fuzzed by tests/fuzz/fuzz-gateway.c.
 *
 * gw_request_feed() takes the bytes of one request (any split) through
 * http-parser with bounds: request line + headers at most GW_MAX_HEAD bytes,
 * GW_MAX_HEADERS headers, a body at most GW_MAX_BODY bytes (after chunked
 * decoding), origin-form targets only (no absolute URLs, no CONNECT, no
 * upgrades: this is no forward proxy). gw_route_parse() then accepts only
 * canonical paths of known routes. */
#pragma once
#include "util/buf.h"
#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_MAX_HEAD 16384
#define GW_MAX_HEADERS 64
#define GW_MAX_URL 2048
#define GW_MAX_BODY (8u << 20)
#define GW_MAX_HOST 253

typedef struct gw_request {
  http_parser parser;
  char url[GW_MAX_URL + 1];
  size_t url_len;
  /* the headers the gateway uses (others are counted and dropped) */
  char host[GW_MAX_HOST + 8];
  char content_type[128];
  char content_encoding[32];
  char git_protocol[128];
  char accept[128];
  char user_agent[128];
  cr_buf body; /* bounded at GW_MAX_BODY */
  /* parser state */
  size_t head_bytes, n_headers;
  char field[32];
  size_t field_len;
  bool field_too_long;
  char *value;          /* where the current header's value goes, or NULL */
  size_t value_cap, value_len;
  bool dup_host;
  bool complete, keep_alive;
  const char *reason;   /* why the request was refused: stable code */
  int status;           /* HTTP status for the refusal */
} gw_request;

void gw_request_init(gw_request *r);
void gw_request_free(gw_request *r);
/* Returns bytes consumed (the request ends there: the rest belongs to the
 * next one) with r->complete, all of len when more is needed, or -1 with
 * r->reason and r->status. */
long gw_request_feed(gw_request *r, const char *buf, size_t len);
const char *gw_request_method(const gw_request *r);

typedef enum gw_route_kind {
  GW_ROUTE_NONE = 0,
  GW_ROUTE_GIT_INFO_REFS,     /* GET  /git/<scheme>/<host[:port]>/<repo>/info/refs?service=git-upload-pack */
  GW_ROUTE_GIT_UPLOAD_PACK,   /* POST .../<repo>/git-upload-pack */
  GW_ROUTE_GIT_RECEIVE_PACK,  /* push: info/refs?service=git-receive-pack or POST .../git-receive-pack */
  GW_ROUTE_DOWNLOAD,          /* GET  /download/sha256/<hex>/<scheme>/<host[:port]>/<path>: immutable, by digest */
  GW_ROUTE_GOPROXY,           /* GET  /go/<scheme>/<host[:port]>/<proxy path>: the Go module proxy protocol */
  GW_ROUTE_NPM,               /* GET  /npm/<scheme>/<host[:port]>/<registry path>: package metadata and tarballs */
  GW_ROUTE_OCI_BASE,          /* GET  /v2/: the registry API's version check, answered here */
  GW_ROUTE_OCI,               /* GET  /v2/<host[:port]>/<name>/(manifests|blobs)/<ref>: OCI pull-through */
  GW_ROUTE_GEMS,              /* GET  /gems/<scheme>/<host[:port]>/<path>: RubyGems (compact index, gems) */
} gw_route_kind;

typedef struct gw_route {
  gw_route_kind kind;
  bool https;
  char host[GW_MAX_HOST + 1]; /* lowercase name or IPv4 literal */
  uint16_t port;              /* explicit or 443/80 */
  bool port_explicit;
  char repo[GW_MAX_URL];      /* "/org/x.git" (canonical, no trailing route part); a download's path */
  char digest[65];            /* GW_ROUTE_DOWNLOAD: the expected sha256 (lowercase hex) */
  bool immutable;             /* GOPROXY: a version's .info/.mod/.zip (not list, @latest, sumdb);
                                 NPM: a tarball (<pkg>/-/<file>.tgz); OCI: by digest (digest set);
                                 GEMS: a .gem or a gemspec (gw_gems_immutable) */
  bool oci_manifest;          /* OCI: a manifest (else a blob) */
  bool post;                  /* git-upload-pack / git-receive-pack (POST) */
  char upstream_url[GW_MAX_URL + 320]; /* the URL asked of the upstream */
} gw_route;

/* Routes method + url; 0, or -1 with *reason ("route_not_found",
 * "path_not_canonical", "method_not_allowed", "host_invalid") and *status. */
int gw_route_parse(const char *method, const char *url, gw_route *rt, const char **reason,
                   int *status);

/* (Re)builds rt->upstream_url from https, host, port and repo + suffix
 * (after a change of scheme: a port that was not explicit follows it). */
void gw_route_build_url(gw_route *rt, const char *suffix);

/* Whether an upload-pack request body (already decoded) asks for a fixed
 * object set: every want an object id, no have, `done`, no ref-relative
 * options (want-ref, deepen-not, deepen-since/relative). Protocol v0/v1 and
 * v2 `command=fetch`. Then the response is immutable and cacheable. */
bool gw_upload_pack_cacheable(const uint8_t *body, size_t len);
/* A protocol v2 `command=ls-refs` request (its answer is mutable). */
bool gw_upload_pack_is_ls_refs(const uint8_t *body, size_t len);

/* Whether a Go module proxy path ("/<module>/@v/<version>.zip") names
 * immutable content: <version>.info, .mod or .zip of a version that is not
 * "list" (not @latest, not @v/list, not /sumdb/...). */
bool gw_goproxy_immutable(const char *path);

/* Whether a RubyGems path names immutable content: <...>/gems/<name>-<version>.gem
 * or <...>/quick/Marshal.4.8/<name>-<version>.gemspec.rz (not the compact
 * index: /versions, /info/<gem>, /names). */
bool gw_gems_immutable(const char *path);

/* npm metadata (a packument) with every versions.*.dist.tarball that is an
 * http(s) URL rewritten to <gw_base>/npm/<scheme>/<host[:port]>/<path>, so
 * the guest fetches tarballs through the gateway too. New NUL-terminated
 * buffer (*out_len), or NULL when the input is not such JSON (then it is
 * passed on unchanged). */
char *gw_npm_rewrite(const char *json, size_t len, const char *gw_base, size_t *out_len);

/* The body of the gateway's own refusal of the request for `url`: one line
 * "cleanroom gateway: <reason>: <msg>" (text/plain), except on the npm route,
 * where it is that line as npm registries answer errors, JSON {"error": ...}
 * (npm shows it: "403 Forbidden - GET <url> - cleanroom gateway: ..."). A new
 * buffer (*len, *ctype set), or NULL when out of memory. */
char *gw_error_body(const char *url, const char *reason, const char *msg, size_t *len,
                    const char **ctype);

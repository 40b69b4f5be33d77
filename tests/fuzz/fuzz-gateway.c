/* Fuzz target: the gateway's request reader and router (src/gateway/
 * request.c) and the upload-pack cacheability check. The input is fed
 * whole and split at a point its first byte picks; both must agree, every
 * result stays within the bounds, and a routed path is canonical. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_route(const gw_request *r) {
  gw_route rt;
  const char *reason = NULL;
  int status = 0;
  if (gw_route_parse(gw_request_method(r), r->url, &rt, &reason, &status) == 0) {
    if (rt.kind == GW_ROUTE_NONE) abort();
    if (rt.kind == GW_ROUTE_OCI_BASE) return; /* answered by the gateway itself */
    if (!rt.host[0] || rt.port == 0) abort();
    if (strstr(rt.repo, "/../") || strstr(rt.repo, "/./") || strstr(rt.repo, "//") ||
        strchr(rt.host, '@'))
      abort();
    /* the only escape: npm's scoped names, "@scope%2fname" */
    for (const char *p = strchr(rt.repo, '%'); p; p = strchr(p + 1, '%'))
      if (rt.kind != GW_ROUTE_NPM || strncasecmp(p, "%2f", 3)) abort();
    if (strncmp(rt.upstream_url, "http://", 7) && strncmp(rt.upstream_url, "https://", 8)) abort();
  } else if (!reason || status < 400) {
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  gw_request a, b;
  gw_request_init(&a);
  long ua = gw_request_feed(&a, (const char *)data, size);
  gw_request_init(&b);
  size_t split = size ? data[0] % (size + 1) : 0;
  long ub = gw_request_feed(&b, (const char *)data, split);
  if (ub >= 0 && !b.complete) {
    long u2 = gw_request_feed(&b, (const char *)data + split, size - split);
    ub = u2 < 0 ? u2 : ub + u2;
  }
  if ((ua < 0) != (ub < 0) || a.complete != b.complete) abort();
  if (a.complete) {
    if (ua != ub || (size_t)ua > size) abort();
    if (a.body.len != b.body.len || a.body.len > GW_MAX_BODY) abort();
    if (a.body.len && memcmp(a.body.data, b.body.data, a.body.len)) abort();
    if (strcmp(a.url, b.url) || strlen(a.url) > GW_MAX_URL) abort();
    check_route(&a);
    gw_upload_pack_cacheable(a.body.data, a.body.len);
  } else if (ua < 0 && (!a.reason || a.status < 400)) {
    abort();
  }
  gw_upload_pack_cacheable(data, size);
  gw_request_free(&a);
  gw_request_free(&b);
  return 0;
}

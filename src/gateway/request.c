/* HTTP request reader and router of the gateway (request.h). Everything here
 * is guest input: bounded, and refused with a stable reason code. */
#include "gateway/request.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REQ(p) ((gw_request *)(p)->data)

static int refuse(gw_request *r, const char *reason, int status) {
  if (!r->reason) {
    r->reason = reason;
    r->status = status;
  }
  return -1;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  gw_request *r = REQ(p);
  if ((r->head_bytes += n) > GW_MAX_HEAD) return refuse(r, "request_too_large", 431);
  if (r->url_len + n > GW_MAX_URL) return refuse(r, "request_too_large", 414);
  memcpy(r->url + r->url_len, at, n);
  r->url_len += n;
  r->url[r->url_len] = '\0';
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  gw_request *r = REQ(p);
  if ((r->head_bytes += n) > GW_MAX_HEAD) return refuse(r, "request_too_large", 431);
  if (r->value) { /* a new field begins */
    r->value = NULL;
    r->field_len = 0;
    r->field_too_long = false;
  }
  if (r->field_len == 0 && !r->field_too_long && ++r->n_headers > GW_MAX_HEADERS)
    return refuse(r, "request_too_large", 431);
  if (r->field_len + n >= sizeof(r->field)) {
    r->field_too_long = true; /* not one we use */
    return 0;
  }
  memcpy(r->field + r->field_len, at, n);
  r->field_len += n;
  r->field[r->field_len] = '\0';
  return 0;
}

static char dummy_value[1];

static int on_header_value(http_parser *p, const char *at, size_t n) {
  gw_request *r = REQ(p);
  if ((r->head_bytes += n) > GW_MAX_HEAD) return refuse(r, "request_too_large", 431);
  if (!r->value) {
    r->value = dummy_value;
    r->value_cap = 0;
    r->value_len = 0;
    if (!r->field_too_long) {
      static const struct {
        const char *name;
        size_t off, cap;
      } known[] = {
          {"host", offsetof(gw_request, host), sizeof(((gw_request *)0)->host)},
          {"content-type", offsetof(gw_request, content_type), sizeof(((gw_request *)0)->content_type)},
          {"content-encoding", offsetof(gw_request, content_encoding), sizeof(((gw_request *)0)->content_encoding)},
          {"git-protocol", offsetof(gw_request, git_protocol), sizeof(((gw_request *)0)->git_protocol)},
          {"accept", offsetof(gw_request, accept), sizeof(((gw_request *)0)->accept)},
          {"user-agent", offsetof(gw_request, user_agent), sizeof(((gw_request *)0)->user_agent)},
      };
      for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (!strcasecmp(r->field, known[i].name)) {
          char *dst = (char *)r + known[i].off;
          if (i == 0 && r->host[0]) r->dup_host = true;
          dst[0] = '\0';
          r->value = dst;
          r->value_cap = known[i].cap;
        }
    }
  }
  if (r->value_cap == 0) return 0;
  if (r->value_len + n >= r->value_cap) return refuse(r, "header_too_large", 431);
  memcpy(r->value + r->value_len, at, n);
  r->value_len += n;
  r->value[r->value_len] = '\0';
  return 0;
}

static int on_headers_complete(http_parser *p) {
  gw_request *r = REQ(p);
  if (p->upgrade || p->method == HTTP_CONNECT) {
    refuse(r, "method_not_allowed", 405);
    return 3;
  }
  if (p->method != HTTP_GET && p->method != HTTP_POST && p->method != HTTP_HEAD) {
    refuse(r, "method_not_allowed", 405); /* HEAD: the OCI routes only (gw_route_parse) */
    return 3;
  }
  if (r->dup_host || !r->host[0]) {
    refuse(r, "host_header_invalid", 400);
    return 3;
  }
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > GW_MAX_BODY) {
    refuse(r, "request_too_large", 413);
    return 3;
  }
  for (const char *c = r->host; *c; c++)
    if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f) {
      refuse(r, "host_header_invalid", 400);
      return 3;
    }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  gw_request *r = REQ(p);
  int e = cr_buf_append(&r->body, at, n);
  if (e == -E2BIG) return refuse(r, "request_too_large", 413);
  if (e < 0) return refuse(r, "resource_exhausted", 503);
  return 0;
}

static int on_message_complete(http_parser *p) {
  gw_request *r = REQ(p);
  r->complete = true;
  r->keep_alive = http_should_keep_alive(p);
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void gw_request_init(gw_request *r) {
  memset(r, 0, sizeof(*r));
  r->body = CR_BUF_INIT(GW_MAX_BODY);
  http_parser_init(&r->parser, HTTP_REQUEST);
  r->parser.data = r;
}

void gw_request_free(gw_request *r) { cr_buf_free(&r->body); }

const char *gw_request_method(const gw_request *r) {
  return http_method_str((enum http_method)r->parser.method);
}

long gw_request_feed(gw_request *r, const char *buf, size_t len) {
  if (r->reason) return -1;
  if (r->complete || len == 0) return 0; /* (len 0 would mean EOF to http-parser) */
  size_t used = http_parser_execute(&r->parser, &settings, buf, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
  if (r->reason) return -1;
  if (r->complete) return (long)used;
  if (e != HPE_OK) return refuse(r, "request_malformed", 400);
  if (used != len) return refuse(r, "request_malformed", 400);
  /* bytes of the head not seen by a callback (request line, separators) */
  if (r->parser.state != 0 && r->head_bytes > GW_MAX_HEAD) return refuse(r, "request_too_large", 431);
  return (long)used;
}

/* ---- routes */

static bool host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

static bool path_char(char c) {
  return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/' ||
         c == '+' || c == '@' || c == '!';
}

/* "/a/b.git": segments not empty, not "." or "..", allowed characters only. */
static bool path_canonical(const char *p, size_t n, bool pct2f) {
  if (n == 0 || p[0] != '/') return false;
  size_t seg = 1;
  for (size_t i = 1; i <= n; i++) {
    if (i == n || p[i] == '/') {
      size_t len = i - seg;
      if (len == 0) return false;
      if ((len == 1 && p[seg] == '.') || (len == 2 && p[seg] == '.' && p[seg + 1] == '.'))
        return false;
      seg = i + 1;
      continue;
    }
    if (pct2f && p[i] == '%' && i + 2 < n && p[i + 1] == '2' && (p[i + 2] == 'f' || p[i + 2] == 'F') &&
        i > seg && p[seg] == '@') {
      i += 2; /* npm's scoped names: /@scope%2fname */
      continue;
    }
    if (!path_char(p[i])) return false;
  }
  return true;
}

static int route_fail(const char **reason, int *status, const char *why, int st) {
  *reason = why;
  *status = st;
  return -1;
}

static bool ends_with(const char *s, size_t n, const char *suffix, size_t *ret_base) {
  size_t k = strlen(suffix);
  if (n < k || memcmp(s + n - k, suffix, k)) return false;
  *ret_base = n - k;
  return true;
}

/* host[:port] at pre (avail bytes of path): fills rt->host, rt->port
 * (explicit, or 443/80 by rt->https) and rt->port_explicit; returns the
 * '/' after it, or NULL with *reason. */
static const char *parse_host(const char *pre, size_t avail, gw_route *rt, const char **reason,
                              int *status) {
  const char *slash = memchr(pre, '/', avail);
  if (!slash) {
    route_fail(reason, status, "route_not_found", 404);
    return NULL;
  }
  size_t hl = (size_t)(slash - pre);
  const char *colon = memchr(pre, ':', hl);
  size_t namelen = colon ? (size_t)(colon - pre) : hl;
  bool ok = namelen > 0 && namelen <= GW_MAX_HOST;
  for (size_t i = 0; ok && i < namelen; i++) ok = host_char(pre[i]);
  if (ok) ok = pre[0] != '.' && pre[0] != '-' && pre[namelen - 1] != '.';
  for (size_t i = 0; ok && i + 1 < namelen; i++) ok = !(pre[i] == '.' && pre[i + 1] == '.');
  if (!ok) {
    route_fail(reason, status, "host_invalid", 400);
    return NULL;
  }
  memcpy(rt->host, pre, namelen);
  rt->host[namelen] = '\0';
  rt->port = rt->https ? 443 : 80;
  if (colon) {
    size_t pl = hl - namelen - 1;
    unsigned long v = 0;
    ok = pl > 0 && pl <= 5 && colon[1] != '0';
    for (size_t i = 0; ok && i < pl; i++) {
      char c = colon[1 + i];
      ok = c >= '0' && c <= '9';
      v = v * 10 + (unsigned long)(c - '0');
    }
    if (!ok || v == 0 || v > 65535) {
      route_fail(reason, status, "host_invalid", 400);
      return NULL;
    }
    rt->port = (uint16_t)v;
    rt->port_explicit = true;
  }
  return slash;
}

void gw_route_build_url(gw_route *rt, const char *suffix) {
  if (!rt->port_explicit) rt->port = rt->https ? 443 : 80;
  char portbuf[8] = "";
  if (rt->port != (rt->https ? 443 : 80)) snprintf(portbuf, sizeof(portbuf), ":%u", rt->port);
  snprintf(rt->upstream_url, sizeof(rt->upstream_url), "%s://%s%s%s%s", rt->https ? "https" : "http",
           rt->host, portbuf, rt->repo, suffix ? suffix : "");
}

/* An OCI distribution path below the upstream: /<name>/(manifests|blobs)/<ref>,
 * name: lowercase components of [a-z0-9._-]; ref: a tag (manifests only)
 * or sha256:<64 lowercase hex>. */
static int oci_path(const char *path, size_t n, gw_route *rt, const char **reason, int *status) {
  const char *last = NULL, *kind = NULL;
  for (size_t i = n; i-- > 0;)
    if (path[i] == '/') {
      if (!last) last = path + i;
      else {
        kind = path + i;
        break;
      }
    }
  if (!last || !kind || kind == path) return route_fail(reason, status, "route_not_found", 404);
  size_t kl = (size_t)(last - kind - 1), rl = n - (size_t)(last + 1 - path);
  bool manifests = kl == 9 && !memcmp(kind + 1, "manifests", 9);
  bool blobs = kl == 5 && !memcmp(kind + 1, "blobs", 5);
  if (!manifests && !blobs) return route_fail(reason, status, "route_not_found", 404);
  size_t nl = (size_t)(kind - path);
  if (!path_canonical(path, nl, false)) return route_fail(reason, status, "path_not_canonical", 400);
  for (size_t i = 1; i < nl; i++) {
    char c = path[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
          c == '/'))
      return route_fail(reason, status, "path_not_canonical", 400);
  }
  const char *ref = last + 1;
  if (rl == 71 && !memcmp(ref, "sha256:", 7)) {
    for (size_t i = 7; i < 71; i++)
      if (!((ref[i] >= '0' && ref[i] <= '9') || (ref[i] >= 'a' && ref[i] <= 'f')))
        return route_fail(reason, status, "digest_invalid", 400);
    memcpy(rt->digest, ref + 7, 64);
    rt->digest[64] = '\0';
    rt->immutable = true;
  } else if (!manifests || rl == 0 || rl > 128 || ref[0] == '.' || ref[0] == '-') {
    return route_fail(reason, status, blobs ? "digest_invalid" : "path_not_canonical", 400);
  } else {
    for (size_t i = 0; i < rl; i++)
      if (!(isalnum((unsigned char)ref[i]) || ref[i] == '_' || ref[i] == '.' || ref[i] == '-'))
        return route_fail(reason, status, "path_not_canonical", 400);
  }
  rt->oci_manifest = manifests;
  return 0;
}

/* RubyGems' dependency API (<...>/api/v1/dependencies?gems=a,b): the one
 * query passed on, names of [A-Za-z0-9._-] separated by ','. */
static bool gems_query_ok(const char *path, size_t n, const char *query) {
  static const char api[] = "/api/v1/dependencies";
  size_t k = sizeof(api) - 1;
  if (n < k || memcmp(path + n - k, api, k) || strncmp(query, "gems=", 5)) return false;
  const char *q = query + 5;
  if (!*q || strlen(q) > 1024 || *q == ',') return false;
  for (; *q; q++)
    if (!(isalnum((unsigned char)*q) || *q == '.' || *q == '_' || *q == '-' ||
          (*q == ',' && q[1] && q[1] != ',')))
      return false;
  return true;
}

bool gw_gems_immutable(const char *path) {
  const char *file = strrchr(path, '/');
  if (!file || file == path) return false;
  size_t fl = strlen(file + 1), dl = 0;
  const char *dir = file; /* the segment before the file */
  while (dir > path && dir[-1] != '/') dir--, dl++;
  if (fl > 4 && !strcmp(file + 1 + fl - 4, ".gem") && dl == 4 && !strncmp(dir, "gems", 4))
    return true; /* <...>/gems/<name>-<version>.gem */
  if (fl > 11 && !strcmp(file + 1 + fl - 11, ".gemspec.rz") && dl == 11 &&
      !strncmp(dir, "Marshal.4.8", 11) && dir - path >= 7 && !strncmp(dir - 7, "/quick/", 7))
    return true; /* <...>/quick/Marshal.4.8/<name>-<version>.gemspec.rz */
  return false;
}

int gw_route_parse(const char *method, const char *url, gw_route *rt, const char **reason,
                   int *status) {
  memset(rt, 0, sizeof(*rt));
  if (!url || url[0] != '/') return route_fail(reason, status, "path_not_canonical", 400);
  const char *q = strchr(url, '?');
  size_t plen = q ? (size_t)(q - url) : strlen(url);
  const char *query = q ? q + 1 : NULL;
  if (strchr(url, '#')) return route_fail(reason, status, "path_not_canonical", 400);
  if (plen >= 3 && !strncmp(url, "/v2", 3) && (plen == 3 || url[3] == '/')) {
    /* OCI distribution: /v2/ itself, or /v2/<host[:port]>/<name>/...;
     * HEAD as GET (clients check a manifest's digest with it), answered
     * without the body */
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
      return route_fail(reason, status, "method_not_allowed", 405);
    if (query) return route_fail(reason, status, "path_not_canonical", 400);
    if (plen <= 4) {
      rt->kind = GW_ROUTE_OCI_BASE;
      return 0;
    }
    rt->https = true; /* CLEANROOM_GATEWAY_OCI_INSECURE names plain-HTTP registries */
    const char *slash = parse_host(url + 4, plen - 4, rt, reason, status);
    if (!slash) return -1;
    size_t n = plen - (size_t)(slash - url);
    if (oci_path(slash, n, rt, reason, status) < 0) return -1;
    rt->kind = GW_ROUTE_OCI;
    snprintf(rt->repo, sizeof(rt->repo), "/v2%.*s", (int)n, slash);
    gw_route_build_url(rt, NULL);
    return 0;
  }
  const char *pre, *scheme;
  bool download = false, goproxy = false, npm = false, gems = false;
  if (plen > 17 + 64 + 1 && !strncmp(url, "/download/sha256/", 17)) {
    download = true;
    for (size_t i = 0; i < 64; i++) {
      char c = url[17 + i];
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
        return route_fail(reason, status, "digest_invalid", 400);
    }
    if (url[17 + 64] != '/') return route_fail(reason, status, "digest_invalid", 400);
    memcpy(rt->digest, url + 17, 64);
    rt->digest[64] = '\0';
    scheme = url + 17 + 64 + 1;
  } else if (plen > 5 && !strncmp(url, "/git/", 5)) {
    scheme = url + 5;
  } else if (plen > 4 && !strncmp(url, "/go/", 4)) {
    scheme = url + 4;
    goproxy = true;
  } else if (plen > 5 && !strncmp(url, "/npm/", 5)) {
    scheme = url + 5;
    npm = true;
  } else if (plen > 6 && !strncmp(url, "/gems/", 6)) {
    scheme = url + 6;
    gems = true;
  } else {
    return route_fail(reason, status, "route_not_found", 404);
  }
  size_t left = plen - (size_t)(scheme - url);
  if (left > 6 && !strncmp(scheme, "https/", 6)) {
    rt->https = true;
    pre = scheme + 6;
  } else if (left > 5 && !strncmp(scheme, "http/", 5)) {
    pre = scheme + 5;
  } else {
    return route_fail(reason, status, "route_not_found", 404);
  }
  /* host[:port] */
  const char *slash = parse_host(pre, plen - (size_t)(pre - url), rt, reason, status);
  if (!slash) return -1;
  const char *path = slash;
  size_t n = plen - (size_t)(slash - url);
  if (!path_canonical(path, n, npm)) return route_fail(reason, status, "path_not_canonical", 400);
  size_t base;
  const char *suffix;
  char gems_query[GW_MAX_URL + 2] = "";
  if (download || goproxy || npm || gems) {
    if (strcmp(method, "GET")) return route_fail(reason, status, "method_not_allowed", 405);
    if (query && !(gems && gems_query_ok(path, n, query)))
      return route_fail(reason, status, "path_not_canonical", 400);
    rt->kind = download ? GW_ROUTE_DOWNLOAD : goproxy ? GW_ROUTE_GOPROXY : npm ? GW_ROUTE_NPM
               : GW_ROUTE_GEMS;
    char pz[GW_MAX_URL];
    snprintf(pz, sizeof(pz), "%.*s", (int)n, path);
    rt->immutable = goproxy ? gw_goproxy_immutable(path)
                    : gems ? !query && gw_gems_immutable(pz)
                    : npm && n > 4 && !strcmp(path + n - 4, ".tgz") && strstr(path, "/-/");
    base = n;
    if (query) snprintf(gems_query, sizeof(gems_query), "?%s", query);
    suffix = gems_query;
  } else if (ends_with(path, n, "/info/refs", &base)) {
    if (strcmp(method, "GET")) return route_fail(reason, status, "method_not_allowed", 405);
    if (query && !strcmp(query, "service=git-upload-pack")) {
      rt->kind = GW_ROUTE_GIT_INFO_REFS;
      suffix = "/info/refs?service=git-upload-pack";
    } else if (query && !strcmp(query, "service=git-receive-pack")) {
      rt->kind = GW_ROUTE_GIT_RECEIVE_PACK;
      suffix = "/info/refs?service=git-receive-pack";
    } else {
      return route_fail(reason, status, "route_not_found", 404); /* dumb HTTP: not served */
    }
  } else if (ends_with(path, n, "/git-upload-pack", &base)) {
    if (strcmp(method, "POST")) return route_fail(reason, status, "method_not_allowed", 405);
    if (query) return route_fail(reason, status, "path_not_canonical", 400);
    rt->kind = GW_ROUTE_GIT_UPLOAD_PACK;
    rt->post = true;
    suffix = "/git-upload-pack";
  } else if (ends_with(path, n, "/git-receive-pack", &base)) {
    if (strcmp(method, "POST")) return route_fail(reason, status, "method_not_allowed", 405);
    if (query) return route_fail(reason, status, "path_not_canonical", 400);
    rt->kind = GW_ROUTE_GIT_RECEIVE_PACK;
    rt->post = true;
    suffix = "/git-receive-pack";
  } else {
    return route_fail(reason, status, "route_not_found", 404);
  }
  if (base == 0) return route_fail(reason, status, "route_not_found", 404);
  memcpy(rt->repo, path, base);
  rt->repo[base] = '\0';
  gw_route_build_url(rt, suffix);
  return 0;
}

bool gw_goproxy_immutable(const char *path) {
  if (!strncmp(path, "/sumdb/", 7)) return false;
  const char *v = strstr(path, "/@v/");
  if (!v || strstr(v + 4, "/")) return false;
  const char *ver = v + 4;
  const char *dot = strrchr(ver, '.');
  if (!dot || dot == ver) return false;
  if (strcmp(dot, ".info") && strcmp(dot, ".mod") && strcmp(dot, ".zip")) return false;
  return ver[0] == 'v'; /* semantic versions (and pseudo-versions) start with v */
}

char *gw_npm_rewrite(const char *text, size_t len, const char *gw_base, size_t *out_len) {
  json_t *root = json_loadb(text, len, 0, NULL);
  if (!json_is_object(root)) {
    json_decref(root);
    return NULL;
  }
  json_t *versions = json_object_get(root, "versions");
  const char *k;
  json_t *v;
  size_t changed = 0;
  json_object_foreach(versions, k, v) {
    json_t *dist = json_object_get(v, "dist");
    const char *t = json_string_value(json_object_get(dist, "tarball"));
    if (!t) continue;
    const char *rest = !strncmp(t, "https://", 8) ? t + 8 : !strncmp(t, "http://", 7) ? t + 7 : NULL;
    if (!rest || !*rest) continue;
    char *nt = NULL;
    if (asprintf(&nt, "%s/npm/%s/%s", gw_base, t[4] == 's' ? "https" : "http", rest) < 0) continue;
    json_object_set_new(dist, "tarball", json_string(nt));
    free(nt);
    changed++;
  }
  char *out = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (!out) return NULL;
  *out_len = strlen(out);
  return out;
}

char *gw_error_body(const char *url, const char *reason, const char *msg, size_t *len,
                    const char **ctype) {
  char *line = NULL;
  if (asprintf(&line, "cleanroom gateway: %s: %s", reason, msg ? msg : "") < 0) return NULL;
  if (url && !strncmp(url, "/npm/", 5)) {
    json_t *o = json_pack("{s:s}", "error", line);
    char *out = o ? json_dumps(o, JSON_COMPACT) : NULL; /* escapes what msg holds */
    json_decref(o);
    free(line);
    if (!out) return NULL;
    *len = strlen(out);
    *ctype = "application/json";
    return out;
  }
  size_t n = strlen(line);
  char *out = realloc(line, n + 2);
  if (!out) {
    free(line);
    return NULL;
  }
  out[n] = '\n';
  out[n + 1] = '\0';
  *len = n + 1;
  *ctype = "text/plain; charset=utf-8";
  return out;
}

/* ---- upload-pack bodies (pkt-line) */

static int hexval(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static bool is_oid(const uint8_t *s, size_t n) {
  if (n != 40 && n != 64) return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  return true;
}

static bool starts(const uint8_t *s, size_t n, const char *w) {
  size_t k = strlen(w);
  return n >= k && !memcmp(s, w, k);
}

bool gw_upload_pack_is_ls_refs(const uint8_t *body, size_t len) {
  static const char w[] = "0014command=ls-refs\n";
  return len >= sizeof(w) - 1 && !memcmp(body, w, sizeof(w) - 1);
}

bool gw_upload_pack_cacheable(const uint8_t *body, size_t len) {
  size_t i = 0, wants = 0;
  bool done = false, v2 = false, v2_fetch = false, first = true;
  while (i + 4 <= len) {
    int a = hexval(body[i]), b = hexval(body[i + 1]), c = hexval(body[i + 2]), d = hexval(body[i + 3]);
    if (a < 0 || b < 0 || c < 0 || d < 0) return false;
    size_t pl = (size_t)(a << 12 | b << 8 | c << 4 | d);
    if (pl < 4) { /* flush 0000, delim 0001, response-end 0002 */
      if (pl == 3) return false;
      i += 4;
      continue;
    }
    if (i + pl > len) return false;
    const uint8_t *s = body + i + 4;
    size_t n = pl - 4;
    if (n && s[n - 1] == '\n') n--;
    i += pl;
    if (first && starts(s, n, "command=")) {
      v2 = true;
      v2_fetch = n == 13 && starts(s, n, "command=fetch");
      if (!v2_fetch) return false; /* ls-refs etc.: refs are mutable */
    }
    first = false;
    if (starts(s, n, "want ")) {
      size_t k = 5, e = k;
      while (e < n && s[e] != ' ') e++;
      if (!is_oid(s + k, e - k)) return false;
      if (!v2 && e < n && wants > 0) return false; /* capabilities on a later want */
      wants++;
    } else if (starts(s, n, "have ") || starts(s, n, "want-ref ") ||
               starts(s, n, "deepen-not ") || starts(s, n, "deepen-since ") ||
               starts(s, n, "deepen-relative")) {
      return false;
    } else if (n == 4 && starts(s, n, "done")) {
      done = true;
    }
  }
  if (i != len) return false;
  if (v2 && !v2_fetch) return false;
  return wants > 0 && done;
}

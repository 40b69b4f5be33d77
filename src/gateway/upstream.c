/* The gateway's upstream side (gateway-internal.h): runs on a thread per
 * request, never on the daemon's loop. libcurl, no redirects followed, IPv4
 * only, never to loopback, link-local, the sandbox pool or this host's own
 * addresses (whatever a name resolves to); credentials from the host's
 * file for the upstream host only; immutable responses into the cache. */
#include "gateway/gateway-internal.h"
#include "image/registry.h"
#include "policy/policy.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/fs.h"
#include "util/macro.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <ifaddrs.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <zlib.h>

#define MAX_INFLATED (32u << 20)

static void fail(gw_job *j, int status, const char *reason, const char *fmt, ...) _printf_(4, 5);
static void fail(gw_job *j, int status, const char *reason, const char *fmt, ...) {
  j->status = status;
  j->reason = reason;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(j->detail, sizeof(j->detail), fmt, ap);
  va_end(ap);
}

/* gzip -> new buffer (bounded); NULL when not valid. */
static uint8_t *gunzip(const uint8_t *in, size_t len, size_t *out_len) {
  z_stream z = {0};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return NULL;
  size_t cap = 65536, n = 0;
  uint8_t *out = malloc(cap);
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)len;
  int r = Z_OK;
  while (out && r != Z_STREAM_END) {
    if (n == cap) {
      if (cap >= MAX_INFLATED) break;
      uint8_t *no = realloc(out, cap * 2);
      if (!no) break;
      out = no;
      cap *= 2;
    }
    z.next_out = out + n;
    z.avail_out = (uInt)(cap - n);
    r = inflate(&z, Z_NO_FLUSH);
    n = cap - z.avail_out;
    if (r != Z_OK && r != Z_STREAM_END) break;
    if (r == Z_OK && z.avail_in == 0 && z.avail_out != 0) break; /* truncated */
  }
  inflateEnd(&z);
  if (r != Z_STREAM_END) {
    free(out);
    return NULL;
  }
  *out_len = n;
  return out;
}

static size_t on_data(char *p, size_t sz, size_t nm, void *ud) {
  gw_job *j = ud;
  size_t n = sz * nm;
  if (j->resp_len + n > j->max_response) return 0; /* aborts: CURLE_WRITE_ERROR */
  if (atomic_fetch_add(j->buffered, n) + n > j->max_buffered) {
    atomic_fetch_sub(j->buffered, n);
    fail(j, 503, "resource_exhausted", "the gateway holds too many response bytes (%zu)",
         j->max_buffered);
    return 0;
  }
  j->accounted += n;
  if (j->resp_len + n > j->resp_cap) {
    size_t cap = j->resp_cap ? j->resp_cap : 65536;
    while (cap < j->resp_len + n) cap *= 2;
    uint8_t *nb = realloc(j->resp, cap);
    if (!nb) return 0;
    j->resp = nb;
    j->resp_cap = cap;
  }
  memcpy(j->resp + j->resp_len, p, n);
  j->resp_len += n;
  return n;
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d) {
  gw_job *j = ud;
  return atomic_load(j->stopping) ? 1 : 0;
}

static bool addr_forbidden(gw_job *j, uint32_t a /* host order */) {
  uint8_t b0 = (uint8_t)(a >> 24), b1 = (uint8_t)(a >> 16);
  if (b0 == 127 || b0 == 0 || b0 >= 224) return true;      /* loopback, "this", multicast+ */
  if (b0 == 169 && b1 == 254) return true;                  /* link-local (metadata services) */
  if ((a & j->pool_mask) == j->pool) return true;           /* sandboxes and their host ends */
  struct ifaddrs *ifa = NULL, *i;
  bool local = false;
  if (getifaddrs(&ifa) == 0) {
    for (i = ifa; i && !local; i = i->ifa_next)
      if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET)
        local = ntohl(((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr) == a;
    freeifaddrs(ifa);
  }
  return local;
}

static curl_socket_t on_open(void *ud, curlsocktype purpose, struct curl_sockaddr *addr) {
  gw_job *j = ud;
  if (addr->family != AF_INET) {
    fail(j, 502, "upstream_address_denied", "only IPv4 upstreams");
    return CURL_SOCKET_BAD;
  }
  uint32_t a = ntohl(((struct sockaddr_in *)&addr->addr)->sin_addr.s_addr);
  if (addr_forbidden(j, a)) {
    char t[16];
    inet_ntop(AF_INET, &((struct sockaddr_in *)&addr->addr)->sin_addr, t, sizeof(t));
    fail(j, 502, "upstream_address_denied", "the upstream resolves to %s (loopback, link-local, "
         "this host or the sandbox pool)", t);
    return CURL_SOCKET_BAD;
  }
  return socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
}

static bool printable(const char *s);
static void drop_response(gw_job *j);

/* The sandbox's network policy, parsed on this thread from its text (once:
 * *pol); NULL when there is none. */
static policy *job_policy(gw_job *j, policy **pol) {
  if (*pol || !j->policy_text) return *pol;
  cr_error *err = NULL;
  if (policy_parse(j->policy_text, strlen(j->policy_text), "network policy", pol, NULL, &err) < 0)
    *pol = NULL;
  cr_error_free(err);
  return *pol;
}

/* Credentials for host[:port] from the host's file (docs/gateway.md):
 *   {"hosts": {"name[:port]": {"username", "password"} | {"token"} | {"secret": NAME}},
 *    "secrets": {NAME: {"username", "password"} | {"token"}}}
 * A host entry with its own credential is scoped by the host it is filed
 * under. A named secret goes only where the sandbox's policy scopes it
 * (sandbox.secrets): a host entry naming a secret the policy does not scope
 * to this upstream fails the request (secret_scope_violation, -1); without
 * a host entry, a secret the policy scopes to this upstream is used. */
static int add_credentials(gw_job *j, policy **pol, CURL *h, struct curl_slist **hdrs,
                           const char *to_host, uint16_t to_port, bool basic_only) {
  if (!j->cred_file) return 0;
  _cleanup_free_ char *buf = NULL;
  size_t len;
  if (cr_read_file(j->cred_file, 1 << 20, &buf, &len) < 0) return 0;
  json_t *root = json_loadb(buf, len, 0, NULL);
  json_t *hosts = json_object_get(root, "hosts"), *secrets = json_object_get(root, "secrets");
  char hp[300];
  snprintf(hp, sizeof(hp), "%s:%u", j->rt.host, j->rt.port);
  json_t *c = json_object_get(hosts, hp);
  if (!c) c = json_object_get(hosts, j->rt.host);
  const char *secret = json_string_value(json_object_get(c, "secret"));
  bool elsewhere = strcmp(to_host, j->rt.host) || to_port != j->rt.port;
  int r = 0;
  if (secret) {
    if (!job_policy(j, pol) || !policy_secret_allows(*pol, secret, to_host, to_port)) {
      fail(j, 403, POLICY_REASON_SECRET_SCOPE_VIOLATION,
           "the host's credential '%.64s' for %.100s is not scoped to %.100s:%u by the sandbox's "
           "policy (sandbox.secrets)", secret, hp, to_host, to_port);
      json_decref(root);
      return -1;
    }
    c = json_object_get(secrets, secret);
  } else if (c && elsewhere) {
    c = NULL; /* filed under the upstream's host: for that host only */
  } else if (!c && json_is_object(secrets) && job_policy(j, pol)) {
    for (size_t i = 0; !c && i < policy_secret_count(*pol); i++) {
      const char *name = policy_secret_name(*pol, i);
      if (policy_secret_allows(*pol, name, j->rt.host, j->rt.port) &&
          policy_secret_allows(*pol, name, to_host, to_port))
        c = json_object_get(secrets, name);
    }
  }
  const char *user = json_string_value(json_object_get(c, "username"));
  const char *pass = json_string_value(json_object_get(c, "password"));
  const char *token = json_string_value(json_object_get(c, "token"));
  if (user && pass) {
    curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(h, CURLOPT_USERNAME, user);
    curl_easy_setopt(h, CURLOPT_PASSWORD, pass);
    j->cred_used = true;
    r = 1;
  } else if (token && !basic_only && !strpbrk(token, "\r\n")) {
    char *line = NULL;
    if (asprintf(&line, "Authorization: Bearer %s", token) >= 0) {
      *hdrs = curl_slist_append(*hdrs, line);
      j->cred_used = true;
      r = 1;
    }
    free(line);
  }
  json_decref(root);
  return r;
}

static bool printable(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f) return false;
  return true;
}

static void add_header(struct curl_slist **l, const char *name, const char *v) {
  if (!v[0] || !printable(v)) return;
  char line[300];
  snprintf(line, sizeof(line), "%s: %s", name, v);
  *l = curl_slist_append(*l, line);
}

static double mono_ms(void) { return (double)cr_mono_ns() / 1e6; }

/* The key of a mutable answer kept for offline mode: route, URL, protocol
 * and the (decoded) request body. */
static void snapshot_key(gw_job *j, const uint8_t *body, size_t blen) {
  char *pre = NULL;
  int pn = asprintf(&pre, "git-refs\n%s\n%s\n", j->rt.upstream_url, j->git_protocol);
  uint8_t *all = pn > 0 ? malloc((size_t)pn + blen) : NULL;
  if (!all) {
    j->snapshot = false;
    free(pre);
    return;
  }
  memcpy(all, pre, (size_t)pn);
  if (blen) memcpy(all + pn, body, blen);
  cr_sha256_hex(all, (size_t)pn + blen, j->cache_key);
  free(all);
  free(pre);
}

/* The key of another mutable answer (package indexes, Go lists, OCI
 * tags): route, URL and (but for OCI, whose Accept is the gateway's own)
 * the guest's Accept, which picks the answer's form (npm's abbreviated
 * metadata). */
static void mutable_key(gw_job *j) {
  char *pre = NULL;
  if (asprintf(&pre, "mutable\n%d\n%s\n%s\n", (int)j->rt.kind, j->rt.upstream_url,
               j->rt.kind == GW_ROUTE_OCI ? "" : j->accept) < 0) {
    j->snapshot = false;
    return;
  }
  cr_sha256_hex(pre, strlen(pre), j->cache_key);
  free(pre);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The kept answer of a mutable request as the response (its type from the
 * metadata, else git's); false when it is not in the cache. */
static bool serve_snapshot(gw_job *j, json_t *meta) {
  uint8_t *data = NULL;
  size_t len = 0;
  cr_error *err = NULL;
  if (cache_get(j->cache, j->cache_key, &data, &len, &err) != 1) {
    cr_error_free(err);
    return false;
  }
  drop_response(j);
  atomic_fetch_add(j->buffered, len);
  j->accounted += len;
  j->resp = data;
  j->resp_len = j->resp_cap = len;
  j->status = 200;
  j->reason = "allowed";
  const char *t = json_string_value(json_object_get(meta, "type"));
  if (t && printable(t) && strlen(t) < sizeof(j->resp_type))
    snprintf(j->resp_type, sizeof(j->resp_type), "%s", t);
  else if (j->rt.kind == GW_ROUTE_GIT_INFO_REFS || j->rt.kind == GW_ROUTE_GIT_UPLOAD_PACK)
    snprintf(j->resp_type, sizeof(j->resp_type), "application/x-git-upload-pack-%s",
             j->rt.post ? "result" : "advertisement");
  else
    j->resp_type[0] = 0;
  return true;
}

#define GW_MAX_REDIRECTS 5

/* Forgets what a response brought (a redirect's body). */
static void drop_response(gw_job *j) {
  atomic_fetch_sub(j->buffered, j->accounted);
  j->accounted = 0;
  free(j->resp);
  j->resp = NULL;
  j->resp_len = j->resp_cap = 0;
}

/* May the upstream's redirect to loc be followed? http(s) only, to a
 * host:port the sandbox's policy allows (parsed here, on this thread, from
 * the policy's text: *pol, once). *on_origin: loc is the first upstream's
 * scheme, host and port (only it gets the host's credentials). Else fails
 * the job with the policy's reason. */
static bool redirect_allowed(gw_job *j, policy **pol, const char *loc, bool *on_origin) {
  CURLU *u = curl_url();
  char *scheme = NULL, *host = NULL, *port = NULL;
  bool ok = u && curl_url_set(u, CURLUPART_URL, loc, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
            (!strcmp(scheme, "http") || !strcmp(scheme, "https"));
  unsigned long pn = ok ? strtoul(port, NULL, 10) : 0;
  ok = ok && pn > 0 && pn < 65536 && printable(host);
  if (!ok) {
    fail(j, 502, "upstream_redirect", "a redirect to an unusable URL");
  } else {
    const char *why = NULL;
    if (!job_policy(j, pol)) {
      fail(j, 502, "upstream_redirect", "no policy to check a redirect against");
      ok = false;
    } else if (policy_match(*pol, host, (uint16_t)pn, &why) != POLICY_ALLOW) {
      fail(j, 403, why ? why : POLICY_REASON_HOST_NOT_ALLOWED,
           "the upstream redirects to %.100s:%lu, which the sandbox's network policy does not allow",
           host, pn);
      ok = false;
    } else {
      *on_origin = !strcmp(scheme, j->rt.https ? "https" : "http") && !strcmp(host, j->rt.host) &&
                   pn == j->rt.port;
      j->redirects++;
    }
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  return ok;
}

/* What every upstream request of the gateway has: IPv4, http(s) only, no
 * redirects (followed by hand), no proxy or netrc, the address checks of
 * on_open, the CA bundle, a connect timeout and an overall one. */
static void upstream_handle(gw_job *j, CURL *h, const char *url, const char *ua, long timeout_s,
                            curl_write_callback write_fn, void *write_ud) {
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_USERAGENT, ua);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_IPRESOLVE, (long)CURL_IPRESOLVE_V4);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
  curl_easy_setopt(h, CURLOPT_NETRC, (long)CURL_NETRC_IGNORED);
  curl_easy_setopt(h, CURLOPT_PROXY, "");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_fn);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, write_ud);
  curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, on_open);
  curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, j);
  if (j->ca_file[0]) curl_easy_setopt(h, CURLOPT_CAINFO, j->ca_file);
}

/* WWW-Authenticate and the validators of a response (libcurl's header
 * callback; a header too long for its field is not kept). */
typedef struct hdr_capture {
  char www_auth[1024];
  char etag[256];
  char last_modified[64];
} hdr_capture;

static void capture(const char *p, size_t n, const char *k, char *dst, size_t cap) {
  size_t kl = strlen(k);
  if (n <= kl || strncasecmp(p, k, kl) || dst[0]) return;
  size_t off = kl;
  while (off < n && (p[off] == ' ' || p[off] == '\t')) off++;
  size_t len = n - off;
  while (len && (p[off + len - 1] == '\r' || p[off + len - 1] == '\n')) len--;
  if (len < cap) {
    memcpy(dst, p + off, len);
    dst[len] = 0;
  }
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud) {
  hdr_capture *hc = ud;
  size_t n = sz * nm;
  if (n >= 5 && !strncmp(p, "HTTP/", 5)) /* a new response (after a 100): its own headers */
    hc->www_auth[0] = hc->etag[0] = hc->last_modified[0] = 0;
  capture(p, n, "www-authenticate:", hc->www_auth, sizeof(hc->www_auth));
  capture(p, n, "etag:", hc->etag, sizeof(hc->etag));
  capture(p, n, "last-modified:", hc->last_modified, sizeof(hc->last_modified));
  return n;
}

/* The repository name of an OCI route ("/v2/<name>/manifests/<ref>"). */
static void oci_name(const gw_job *j, char *out, size_t n) {
  const char *r = j->rt.repo + 3, *m = strstr(r, j->rt.oci_manifest ? "/manifests/" : "/blobs/");
  size_t len = m && m > r ? (size_t)(m - r - 1) : 0;
  snprintf(out, n, "%.*s", (int)(len < n ? len : n - 1), r + 1);
}

static size_t on_token(char *p, size_t sz, size_t nm, void *ud) {
  cr_buf *b = ud;
  return cr_buf_append(b, p, sz * nm) < 0 ? 0 : sz * nm;
}

/* The distribution token flow (a 401 with WWW-Authenticate: Bearer
 * realm,service,scope): the token service must be http(s) and allowed by
 * the sandbox's policy like any upstream; it gets the registry's Basic
 * credential only where that credential may go (add_credentials). Returns
 * the token (new string), or NULL: the job failed (policy, scope,
 * unreachable) or the challenge is not a Bearer one (then the 401 stands). */
static char *oci_token(gw_job *j, policy **pol, const char *challenge) {
  image_auth_challenge ch = {0};
  cr_error *err = NULL;
  if (image_auth_challenge_parse(challenge, &ch, &err) < 0 || !ch.scheme ||
      strcmp(ch.scheme, "bearer") || !ch.realm) {
    cr_error_free(err);
    image_auth_challenge_clear(&ch);
    return NULL;
  }
  char *token = NULL;
  CURLU *u = curl_url();
  char *scheme = NULL, *host = NULL, *port = NULL;
  bool ok = u && curl_url_set(u, CURLUPART_URL, ch.realm, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
            (!strcmp(scheme, "http") || !strcmp(scheme, "https")) && printable(host);
  unsigned long pn = ok ? strtoul(port, NULL, 10) : 0;
  const char *why = NULL;
  if (!ok || pn == 0 || pn > 65535) {
    fail(j, 502, "upstream_auth_refused", "the registry names an unusable token service");
  } else if (!job_policy(j, pol) || policy_match(*pol, host, (uint16_t)pn, &why) != POLICY_ALLOW) {
    fail(j, 403, why ? why : POLICY_REASON_HOST_NOT_ALLOWED,
         "the registry's token service %.100s:%lu is not allowed by the sandbox's network policy",
         host, pn);
  } else {
    char name[GW_MAX_URL], scope[GW_MAX_URL + 32];
    oci_name(j, name, sizeof(name));
    snprintf(scope, sizeof(scope), "%s", ch.scope ? ch.scope : "");
    if (!scope[0]) snprintf(scope, sizeof(scope), "repository:%s:pull", name);
    CURL *h = curl_easy_init();
    char *es = h ? curl_easy_escape(h, ch.service ? ch.service : "", 0) : NULL;
    char *esc = h ? curl_easy_escape(h, scope, 0) : NULL;
    char *turl = NULL;
    if (es && esc &&
        asprintf(&turl, "%s%cservice=%s&scope=%s", ch.realm, strchr(ch.realm, '?') ? '&' : '?',
                 es, esc) < 0)
      turl = NULL;
    struct curl_slist *hdrs = NULL;
    cr_buf body = CR_BUF_INIT(64 << 10);
    if (!turl) {
      fail(j, 503, "resource_exhausted", "out of memory");
    } else if (add_credentials(j, pol, h, &hdrs, host, (uint16_t)pn, true) >= 0) {
      upstream_handle(j, h, turl, "cleanroom-gateway", 60, on_token, &body);
      curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
      CURLcode rc = curl_easy_perform(h);
      long code = 0;
      curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
      json_t *t = rc == CURLE_OK && code == 200 && body.data
                      ? json_loadb((const char *)body.data, body.len, 0, NULL) : NULL;
      const char *v = json_string_value(json_object_get(t, "token"));
      if (!v) v = json_string_value(json_object_get(t, "access_token"));
      if (v && *v && printable(v) && strlen(v) < 16384) token = strdup(v);
      else if (!j->status)
        fail(j, code == 401 || code == 403 ? 401 : 502, "upstream_auth_refused",
             "the registry's token service refused (HTTP %ld%s%s)", code,
             rc != CURLE_OK ? ": " : "", rc != CURLE_OK ? curl_easy_strerror(rc) : "");
      json_decref(t);
    }
    cr_buf_free(&body);
    curl_slist_free_all(hdrs);
    free(turl);
    curl_free(es);
    curl_free(esc);
    if (h) curl_easy_cleanup(h);
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  image_auth_challenge_clear(&ch);
  return token;
}

/* An OCI manifest's Docker-Content-Digest (what clients pin a tag to) and
 * media type: the upstream's Content-Type, else the manifest's own
 * mediaType (a cached manifest has no headers), else OCI's. */
static void oci_manifest_headers(gw_job *j) {
  char hex[65];
  cr_sha256_hex(j->resp ? (const void *)j->resp : "", j->resp_len, hex);
  snprintf(j->resp_digest, sizeof(j->resp_digest), "sha256:%s", hex);
  if (j->resp_type[0] && strcmp(j->resp_type, "application/octet-stream")) return;
  json_t *m = json_loadb((const char *)j->resp, j->resp_len, 0, NULL);
  const char *mt = json_string_value(json_object_get(m, "mediaType"));
  snprintf(j->resp_type, sizeof(j->resp_type), "%s",
           mt && printable(mt) && strlen(mt) < sizeof(j->resp_type) ? mt : IMAGE_MT_OCI_MANIFEST);
  json_decref(m);
}

void gw_upstream_run(gw_job *j) {
  j->status = 0;
  j->reason = "allowed";
  bool post = j->rt.post; /* upload-pack, receive-pack (a push: never cached) */
  /* immutable? then the cache key is what identifies the content */
  if (j->rt.kind == GW_ROUTE_GIT_UPLOAD_PACK && j->cache) {
    const uint8_t *body = j->body;
    size_t blen = j->body_len;
    _cleanup_free_ uint8_t *plain = NULL;
    bool ok = true;
    if (!strcasecmp(j->content_encoding, "gzip")) {
      plain = gunzip(j->body, j->body_len, &blen);
      body = plain;
      ok = plain != NULL;
    } else if (j->content_encoding[0]) {
      ok = false;
    }
    if (ok && gw_upload_pack_is_ls_refs(body, blen)) {
      /* v2 ref listing: mutable, the latest answer kept (revalidated below) */
      j->snapshot = true;
      snapshot_key(j, body, blen);
    } else if (ok && gw_upload_pack_cacheable(body, blen)) {
      j->cacheable = true;
      char *pre = NULL;
      int pn = asprintf(&pre, "git-upload-pack\n%s\n%s\n", j->rt.upstream_url, j->git_protocol);
      if (pn > 0) {
        uint8_t *all = malloc((size_t)pn + blen);
        if (all) {
          memcpy(all, pre, (size_t)pn);
          memcpy(all + pn, body, blen);
          cr_sha256_hex(all, (size_t)pn + blen, j->cache_key);
          free(all);
        } else {
          j->cacheable = false;
        }
      }
      free(pre);
    }
  }
  if (j->rt.kind == GW_ROUTE_GIT_INFO_REFS && j->cache) {
    j->snapshot = true; /* the ref advertisement: mutable, the latest answer kept */
    snapshot_key(j, NULL, 0);
  }
  bool refs = j->snapshot; /* git refs: their own revalidation time */
  if (j->cache && !j->rt.immutable &&
      (j->rt.kind == GW_ROUTE_NPM || j->rt.kind == GW_ROUTE_GOPROXY || j->rt.kind == GW_ROUTE_OCI ||
       j->rt.kind == GW_ROUTE_GEMS)) {
    j->snapshot = true; /* metadata, lists, @latest, tags: mutable, the latest answer kept */
    mutable_key(j);
  }
  /* A mutable answer: served from the cache within its revalidation time
   * (fresh), else asked again with its validators (a 304 serves it:
   * revalidated); offline, whatever was kept last. */
  json_t *meta = NULL;
  bool served = false;
  if (j->snapshot) {
    cr_error *err = NULL;
    if (cache_meta_get(j->cache, j->cache_key, &meta, &err) < 0) cr_error_free(err);
    unsigned ttl = refs ? j->revalidate_refs_s : j->revalidate_s;
    double age = now_s() - json_number_value(json_object_get(meta, "stored"));
    if (j->offline) {
      served = serve_snapshot(j, meta);
      if (served) j->cacheable = j->cache_hit = true;
    } else if (meta && ttl > 0 && age >= 0 && age < ttl && serve_snapshot(j, meta)) {
      served = true;
      j->cache_state = "fresh";
    }
  }
  const char *etag = json_string_value(json_object_get(meta, "etag"));
  const char *lastmod = json_string_value(json_object_get(meta, "last_modified"));
  bool conditional = !served && !post && ((etag && printable(etag)) || (lastmod && printable(lastmod)));
  bool download = j->rt.kind == GW_ROUTE_DOWNLOAD;
  if (download && j->cache) {
    j->cacheable = true; /* content-addressed: the key is the digest itself */
    snprintf(j->cache_key, sizeof(j->cache_key), "%s", j->rt.digest);
  }
  bool goproxy = j->rt.kind == GW_ROUTE_GOPROXY;
  if (goproxy && j->rt.immutable && j->cache) {
    j->cacheable = true; /* a version's files never change (the checksum database says so) */
    char *pre = NULL;
    if (asprintf(&pre, "goproxy\n%s", j->rt.upstream_url) > 0) {
      cr_sha256_hex(pre, strlen(pre), j->cache_key);
    } else {
      j->cacheable = false;
    }
    free(pre);
  }
  bool npm = j->rt.kind == GW_ROUTE_NPM;
  if (npm && j->rt.immutable && j->cache) {
    j->cacheable = true; /* a published version's tarball never changes */
    char *pre = NULL;
    if (asprintf(&pre, "npm\n%s", j->rt.upstream_url) > 0) cr_sha256_hex(pre, strlen(pre), j->cache_key);
    else j->cacheable = false;
    free(pre);
  }
  bool gems = j->rt.kind == GW_ROUTE_GEMS;
  if (gems && j->rt.immutable && j->cache) {
    j->cacheable = true; /* a released gem (and its gemspec) never changes */
    char *pre = NULL;
    if (asprintf(&pre, "gems\n%s", j->rt.upstream_url) > 0) cr_sha256_hex(pre, strlen(pre), j->cache_key);
    else j->cacheable = false;
    free(pre);
  }
  bool oci = j->rt.kind == GW_ROUTE_OCI;
  if (oci && j->rt.immutable && j->cache) {
    /* content-addressed like a download: the key is the digest (so a blob
     * is shared with a download of the same bytes) */
    j->cacheable = true;
    snprintf(j->cache_key, sizeof(j->cache_key), "%s", j->rt.digest);
  }
  if (j->cacheable && !served) {
    uint8_t *data = NULL;
    size_t len = 0;
    cr_error *err = NULL;
    if (cache_get(j->cache, j->cache_key, &data, &len, &err) == 1) {
      j->cache_hit = true;
      atomic_fetch_add(j->buffered, len);
      j->accounted += len;
      j->resp = data;
      j->resp_len = j->resp_cap = len;
      j->status = 200;
      snprintf(j->resp_type, sizeof(j->resp_type), "%s",
               download || goproxy || npm || oci || gems ? "application/octet-stream"
                                          : "application/x-git-upload-pack-result");
      if (oci && j->rt.oci_manifest) oci_manifest_headers(j);
      return;
    }
    cr_error_free(err);
  }
  if (j->offline && !served) {
    json_decref(meta);
    fail(j, 503, "offline_not_cached", "offline mode: %.180s is not in the cache", j->rt.upstream_url);
    return;
  }
  char ua[160];
  if (download || goproxy || npm || oci || gems) /* the guest's own agent, else ours */
    snprintf(ua, sizeof(ua), "%s", j->user_agent[0] && printable(j->user_agent)
                                       ? j->user_agent : "cleanroom-gateway");
  else /* smart-HTTP servers answer git agents only */
    snprintf(ua, sizeof(ua), "%s", !strncmp(j->user_agent, "git/", 4) && printable(j->user_agent)
                                       ? j->user_agent : "git/cleanroom-gateway");
  /* Redirects are followed here, hop by hop, never by libcurl: each target
   * must be http(s) and allowed by the sandbox's policy (the same decision
   * as for the first request), at most GW_MAX_REDIRECTS of them, GETs only,
   * and the host's credentials go to the first upstream only. */
  _cleanup_free_ char *url = served ? NULL : strdup(j->rt.upstream_url);
  hdr_capture last = {{0}}; /* the final response's validators */
  policy *pol = NULL;
  bool on_origin = true, tried_token = false;
  _cleanup_free_ char *bearer = NULL; /* from the registry's token service */
  for (int hop = 0; url; hop++) {
    hdr_capture hc = {{0}};
    CURL *h = curl_easy_init();
    if (!h) {
      fail(j, 503, "resource_exhausted", "libcurl");
      break;
    }
    struct curl_slist *hdrs = NULL;
    upstream_handle(j, h, url, ua, 900, on_data, j);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, j);
    if (oci && j->rt.oci_manifest) /* every manifest kind (the guest's list may be cut at 128 bytes) */
      hdrs = curl_slist_append(hdrs, "Accept: " IMAGE_MT_OCI_INDEX ", " IMAGE_MT_OCI_MANIFEST ", "
                                     IMAGE_MT_DOCKER_LIST ", " IMAGE_MT_DOCKER_MANIFEST);
    else
      add_header(&hdrs, "Accept", j->accept);
    add_header(&hdrs, "Git-Protocol", j->git_protocol);
    hdrs = curl_slist_append(hdrs, "Expect:");
    if (post) {
      add_header(&hdrs, "Content-Type", j->content_type);
      if (!strcasecmp(j->content_encoding, "gzip")) add_header(&hdrs, "Content-Encoding", "gzip");
      curl_easy_setopt(h, CURLOPT_POST, 1L);
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, j->body ? (char *)j->body : "");
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body_len);
    }
    if (on_origin && bearer) {
      char *line = NULL;
      if (asprintf(&line, "Authorization: Bearer %s", bearer) >= 0)
        hdrs = curl_slist_append(hdrs, line);
      free(line);
    } else if (on_origin &&
               add_credentials(j, &pol, h, &hdrs, j->rt.host, j->rt.port, false) < 0) {
      curl_slist_free_all(hdrs); /* secret_scope_violation */
      curl_easy_cleanup(h);
      break;
    }
    bool cond_sent = conditional && hop == 0;
    if (cond_sent) {
      if (etag && etag[0] && printable(etag)) add_header(&hdrs, "If-None-Match", etag);
      if (lastmod && lastmod[0] && printable(lastmod)) add_header(&hdrs, "If-Modified-Since", lastmod);
    }
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &hc);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    double t0 = mono_ms();
    CURLcode rc = curl_easy_perform(h);
    j->upstream_ms += mono_ms() - t0;
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    char *ct = NULL;
    curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
    j->resp_type[0] = 0;
    if (ct && printable(ct)) snprintf(j->resp_type, sizeof(j->resp_type), "%s", ct);
    char *next = NULL;
    if (rc != CURLE_OK) {
      if (!j->status) {
        if (rc == CURLE_WRITE_ERROR)
          fail(j, 502, "upstream_too_large", "the upstream response is over the limit");
        else if (rc == CURLE_OPERATION_TIMEDOUT)
          fail(j, 504, "upstream_timeout", "%s", curl_easy_strerror(rc));
        else
          fail(j, 502, "upstream_unavailable", "%s", curl_easy_strerror(rc));
      }
    } else if (code == 304 && cond_sent) {
      /* not modified: the kept answer, its time renewed (a new validator kept) */
      if (serve_snapshot(j, meta)) {
        j->cache_state = "revalidated";
        json_t *m = json_deep_copy(meta);
        json_object_set_new(m, "stored", json_real(now_s()));
        if (hc.etag[0] && printable(hc.etag)) json_object_set_new(m, "etag", json_string(hc.etag));
        cr_error *err = NULL;
        if (cache_meta_set(j->cache, j->cache_key, m, &err) < 0) cr_error_free(err);
        json_decref(m);
      } else { /* gone from the cache meanwhile: once more, unconditionally */
        conditional = false;
        next = strdup(url);
        if (!next) fail(j, 503, "resource_exhausted", "out of memory");
        hop--;
        drop_response(j);
      }
    } else if (code >= 300 && code < 400) {
      char *loc = NULL;
      curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc); /* absolute */
      if (post || !loc) {
        fail(j, 502, "upstream_redirect", "the upstream redirects a %s (not followed)",
             post ? "POST" : "request without a Location");
      } else if (hop >= GW_MAX_REDIRECTS) {
        fail(j, 502, "upstream_redirect", "more than %d redirects", GW_MAX_REDIRECTS);
      } else if (redirect_allowed(j, &pol, loc, &on_origin)) {
        next = strdup(loc);
        if (!next) fail(j, 503, "resource_exhausted", "out of memory");
        drop_response(j); /* the redirect's own body */
      }
    } else if (code == 401 && oci && on_origin && !tried_token && hc.www_auth[0]) {
      tried_token = true; /* the token flow, then the same request once more */
      bearer = oci_token(j, &pol, hc.www_auth);
      if (bearer) {
        next = strdup(url);
        if (!next) fail(j, 503, "resource_exhausted", "out of memory");
        drop_response(j);
      } else if (!j->status) {
        j->status = 401;
        j->reason = "upstream_auth_refused";
      }
    } else {
      j->status = (int)code;
      if (code == 401 || code == 403) j->reason = "upstream_auth_refused";
      else if (code != 200) j->reason = "upstream_error";
    }
    last = hc;
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    free(url);
    url = next;
  }
  policy_free(pol);
  if ((download || (oci && j->rt.immutable)) && j->status == 200) {
    /* named by its digest: the bytes must be those */
    char hex[65];
    cr_sha256_hex(j->resp, j->resp_len, hex);
    if (strcmp(hex, j->rt.digest)) {
      drop_response(j);
      fail(j, 502, "digest_mismatch", "the upstream's content has sha256 %s", hex);
      return;
    }
  }
  if (oci && j->status == 200 && j->rt.oci_manifest) oci_manifest_headers(j);
  if (download && j->status == 200)
    snprintf(j->resp_type, sizeof(j->resp_type), "application/octet-stream");
  if (j->status == 200 && j->snapshot && !served && !j->cache_state && j->reason &&
      !strcmp(j->reason, "allowed")) {
    /* the upstream's own bytes (npm metadata is rewritten per sandbox below) */
    cr_error *err = NULL;
    if (cache_put(j->cache, j->cache_key, refs ? "git-refs" : "index", j->rt.upstream_url, j->resp,
                  j->resp_len, &err) < 0) {
      cr_error_free(err);
    } else {
      json_t *m = json_pack("{s:f, s:s}", "stored", now_s(), "type", j->resp_type);
      if (m && last.etag[0] && printable(last.etag)) json_object_set_new(m, "etag", json_string(last.etag));
      if (m && last.last_modified[0] && printable(last.last_modified))
        json_object_set_new(m, "last_modified", json_string(last.last_modified));
      if (m && cache_meta_set(j->cache, j->cache_key, m, &err) < 0) cr_error_free(err);
      json_decref(m);
    }
  }
  json_decref(meta);
  if (npm && !j->rt.immutable && j->status == 200 && j->resp_len) {
    /* metadata: tarball URLs through the gateway too */
    size_t nl = 0;
    char *nj = gw_npm_rewrite((const char *)j->resp, j->resp_len, j->gw_base, &nl);
    if (nj) {
      atomic_fetch_sub(j->buffered, j->accounted);
      free(j->resp);
      j->resp = (uint8_t *)nj;
      j->resp_len = j->resp_cap = nl;
      atomic_fetch_add(j->buffered, nl);
      j->accounted = nl;
      snprintf(j->resp_type, sizeof(j->resp_type), "application/json");
    }
  }
  if (j->status == 200 && j->cacheable && !served && j->reason && !strcmp(j->reason, "allowed")) {
    cr_error *err = NULL;
    if (cache_put(j->cache, j->cache_key,
                  download ? "download" : goproxy ? "go-module" : npm ? "npm-tarball" : gems ? "gem"
                  : oci ? (j->rt.oci_manifest ? "oci-manifest" : "oci-blob") : "git-pack",
                  j->rt.upstream_url,
                  j->resp, j->resp_len, &err) < 0)
      cr_error_free(err);
  }
}

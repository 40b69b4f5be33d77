/* Registry client (distribution spec v2) on libcurl: ping and auth
 * (anonymous, Bearer tokens, Basic), manifests, blobs verified by sha256
 * while they stream, resumed with Range, fetched in parallel (curl multi);
 * and image_pull, which turns the blobs into an OCI layout and imports it
 * (image-import.c does the atomic temp dir + rename). */
#include "image/image-internal.h"
#include "image/registry.h"
#include "util/base64.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/macro.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_BODY (4u << 20)      /* manifests, token responses, error bodies */
#define MAX_ERR_BODY (64u << 10)
#define MAX_HDR 8192
#define ACCEPT_MANIFESTS                                                             \
  "Accept: " IMAGE_MT_OCI_INDEX ", " IMAGE_MT_OCI_MANIFEST ", " IMAGE_MT_DOCKER_LIST \
  ", " IMAGE_MT_DOCKER_MANIFEST
#define DEFAULT_PLATFORM "linux/amd64"
#define DEFAULT_PARALLEL 4
#define CONNECT_TIMEOUT_S 15
#define LOW_SPEED_S 60 /* abort a transfer slower than 1 byte/s for this long */

static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ---- one HTTP exchange */

typedef struct xfer {
  CURL *h;
  struct curl_slist *hdrs;
  long status;
  /* headers of the last response (redirects and 401s reset them) */
  char *www_auth, *content_type, *docker_digest, *content_range;
  /* body in memory (manifests, tokens, errors) */
  char *body;
  size_t len, max;
  bool overflow;
  /* blob streaming */
  int fd;              /* >= 0: 2xx bodies go to this file */
  EVP_MD_CTX *sha;
  uint64_t offset;     /* bytes already in the file when the request started */
  uint64_t written;    /* bytes in the file now */
  int64_t expect_size; /* -1: unknown */
  bool too_big;
  int werr;            /* errno of a failed write */
  bool started;        /* first body byte of this response seen */
  /* bookkeeping for the multi loop */
  size_t index;
  int attempts;
} xfer;

static void xfer_reset_headers(xfer *x) {
  free(x->www_auth), free(x->content_type), free(x->docker_digest), free(x->content_range);
  x->www_auth = x->content_type = x->docker_digest = x->content_range = NULL;
}

static void xfer_clear(xfer *x) {
  if (x->h) curl_easy_cleanup(x->h);
  curl_slist_free_all(x->hdrs);
  xfer_reset_headers(x);
  free(x->body);
  if (x->sha) EVP_MD_CTX_free(x->sha);
  if (x->fd >= 0) close(x->fd);
  *x = (xfer){.fd = -1};
}

static size_t on_header(char *buf, size_t size, size_t n, void *ud) {
  xfer *x = ud;
  size_t len = size * n;
  if (len >= 5 && !strncmp(buf, "HTTP/", 5)) {
    xfer_reset_headers(x);
    x->started = false;
    return len;
  }
  if (len > MAX_HDR) return len; /* ignore absurd headers */
  const char *colon = memchr(buf, ':', len);
  if (!colon) return len;
  size_t kl = (size_t)(colon - buf);
  const char *v = colon + 1;
  size_t vl = len - kl - 1;
  while (vl && (*v == ' ' || *v == '\t')) v++, vl--;
  while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' ')) vl--;
  char **slot = NULL;
  if (kl == 16 && !strncasecmp(buf, "WWW-Authenticate", kl)) slot = &x->www_auth;
  else if (kl == 12 && !strncasecmp(buf, "Content-Type", kl)) slot = &x->content_type;
  else if (kl == 21 && !strncasecmp(buf, "Docker-Content-Digest", kl)) slot = &x->docker_digest;
  else if (kl == 13 && !strncasecmp(buf, "Content-Range", kl)) slot = &x->content_range;
  if (slot && !*slot) *slot = strndup(v, vl);
  return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud) {
  xfer *x = ud;
  size_t len = size * n;
  long code = 0;
  curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
  if (x->fd >= 0 && (code == 200 || code == 206)) {
    if (!x->started) {
      x->started = true;
      if (code == 206) { /* must continue exactly where the file ends */
        unsigned long long from = 0;
        if (!x->content_range || sscanf(x->content_range, "bytes %llu-", &from) != 1 ||
            from != x->offset) {
          x->werr = EPROTO;
          return 0;
        }
      }
      if (code == 200 && x->offset > 0) {
        /* the server ignored Range: start over */
        if (ftruncate(x->fd, 0) < 0 || lseek(x->fd, 0, SEEK_SET) < 0) {
          x->werr = errno;
          return 0;
        }
        EVP_DigestInit_ex(x->sha, EVP_sha256(), NULL);
        x->offset = x->written = 0;
      }
    }
    if (x->expect_size >= 0 && x->written + len > (uint64_t)x->expect_size) {
      x->too_big = true;
      return 0;
    }
    for (size_t off = 0; off < len;) {
      ssize_t w = write(x->fd, buf + off, len - off);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        x->werr = errno;
        return 0;
      }
      off += (size_t)w;
    }
    EVP_DigestUpdate(x->sha, buf, len);
    x->written += len;
    return len;
  }
  size_t max = x->fd >= 0 ? MAX_ERR_BODY : x->max;
  if (x->len + len > max) {
    x->overflow = true;
    return 0;
  }
  char *nb = realloc(x->body, x->len + len + 1);
  if (!nb) return 0;
  x->body = nb;
  memcpy(x->body + x->len, buf, len);
  x->len += len;
  x->body[x->len] = '\0';
  return len;
}

/* ---- the client */

typedef struct reg {
  image_reference ref;
  const char *host; /* API host */
  char *base;       /* "https://host" */
  bool insecure_ok;
  image_credentials creds;
  bool have_creds;
  char *authz;      /* "Authorization: ..." or NULL */
  bool bearer;      /* authz is a token that can be refreshed */
  image_auth_challenge challenge;
  char *store;
} reg;

static void reg_clear(reg *g) {
  image_reference_clear(&g->ref);
  free(g->base);
  image_credentials_clear(&g->creds);
  if (g->authz) explicit_bzero(g->authz, strlen(g->authz));
  free(g->authz);
  image_auth_challenge_clear(&g->challenge);
  free(g->store);
  *g = (reg){0};
}

static int xfer_init(reg *g, xfer *x, const char *url, bool with_auth, const char *accept) {
  *x = (xfer){.fd = -1, .max = MAX_BODY, .expect_size = -1};
  x->h = curl_easy_init();
  if (!x->h) return -ENOMEM;
  CURL *h = x->h;
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, g->insecure_ok ? "http,https" : "https");
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, g->insecure_ok ? "http,https" : "https");
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)LOW_SPEED_S);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "cleanroom/0.1");
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
  /* proxies from the environment are honoured by libcurl */
  if (accept) x->hdrs = curl_slist_append(x->hdrs, accept);
  /* custom headers are not sent to another host after a redirect (libcurl
   * drops Authorization on a host change) */
  if (with_auth && g->authz) x->hdrs = curl_slist_append(x->hdrs, g->authz);
  if (x->hdrs) curl_easy_setopt(h, CURLOPT_HTTPHEADER, x->hdrs);
  return 0;
}

/* Maps a transport failure to a reason code. */
static int curl_fail(reg *g, CURLcode c, const char *what, cr_error **err) {
  switch (c) {
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
    return cr_error_set(err, CR_E_REGISTRY_TLS, 0,
                        "%s: TLS with %s failed: %s (check the registry's certificate and "
                        "the host's CA store; plain HTTP is only used for loopback registries "
                        "or ones in CLEANROOM_INSECURE_REGISTRIES)",
                        what, g->host, curl_easy_strerror(c));
  case CURLE_WRITE_ERROR:
    return cr_error_set(err, CR_E_IO, 0, "%s: writing failed", what);
  case CURLE_UNSUPPORTED_PROTOCOL:
    return cr_error_set(err, CR_E_REGISTRY_INSECURE, 0,
                        "%s: %s redirected to a plain HTTP URL; only loopback registries and "
                        "ones in CLEANROOM_INSECURE_REGISTRIES may use HTTP",
                        what, g->host);
  default:
    return cr_error_set(err, CR_E_REGISTRY_UNAVAILABLE, 0,
                        "%s: registry %s unreachable: %s (is it running? check the name and "
                        "the network)",
                        what, g->host, curl_easy_strerror(c));
  }
}

/* The first error code in a registry error body ({"errors":[{"code":..}]}). */
static void error_code(const xfer *x, char *buf, size_t n, char *msg, size_t mn) {
  buf[0] = msg[0] = '\0';
  if (!x->body) return;
  json_error_t je;
  _cleanup_json_ json_t *j = json_loadb(x->body, x->len, 0, &je);
  json_t *e0 = json_array_get(json_object_get(j, "errors"), 0);
  const char *c = json_string_value(json_object_get(e0, "code"));
  const char *m = json_string_value(json_object_get(e0, "message"));
  if (c) snprintf(buf, n, "%.60s", c);
  if (m) snprintf(msg, mn, "%.200s", m);
}

static int http_fail(reg *g, const xfer *x, const char *what, cr_error **err) {
  char code[64], msg[256];
  error_code(x, code, sizeof(code), msg, sizeof(msg));
  _cleanup_free_ char *name = image_reference_name(&g->ref);
  long s = x->status;
  if (s == 401 || s == 403) {
    if (g->have_creds)
      return cr_error_set(err, CR_E_REGISTRY_AUTH_REFUSED, 0,
                          "%s: %s refused the credentials for %s (HTTP %ld%s%s); check them "
                          "(docker login, ~/.docker/config.json or --registry-auth FILE)",
                          what, g->host, name, s, msg[0] ? ": " : "", msg);
    return cr_error_set(err, CR_E_REGISTRY_AUTH_REQUIRED, 0,
                        "%s: %s needs credentials for %s (HTTP %ld%s%s), or the repository "
                        "does not exist; log in with docker login or pass --registry-auth FILE",
                        what, g->host, name, s, msg[0] ? ": " : "", msg);
  }
  if (s == 404 && !strcmp(code, "NAME_UNKNOWN"))
    return cr_error_set(err, CR_E_REGISTRY_UNKNOWN_REPOSITORY, 0,
                        "%s: repository %s does not exist on %s; check the name", what,
                        g->ref.repository, g->host);
  if (s == 404 && (!strcmp(code, "MANIFEST_UNKNOWN") || !code[0]))
    return cr_error_set(err, CR_E_REGISTRY_UNKNOWN_TAG, 0,
                        "%s: %s has no %s%s; list the tags with 'skopeo list-tags "
                        "docker://%s'",
                        what, name, g->ref.digest ? "manifest " : "tag ",
                        g->ref.digest ? g->ref.digest : g->ref.tag, name);
  if (s == 404 && !strcmp(code, "BLOB_UNKNOWN"))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0,
                        "%s: %s lists a blob the registry does not have", what, name);
  if (s == 429 || s >= 500)
    return cr_error_set(err, CR_E_REGISTRY_UNAVAILABLE, 0,
                        "%s: registry %s answered HTTP %ld%s%s; try again later", what, g->host,
                        s, msg[0] ? ": " : "", msg);
  return cr_error_set(err, CR_E_REGISTRY_PROTOCOL, 0, "%s: registry %s answered HTTP %ld%s%s%s%s",
                      what, g->host, s, code[0] ? " " : "", code, msg[0] ? ": " : "", msg);
}

static int perform(reg *g, xfer *x, const char *what, cr_error **err) {
  CURLcode c = curl_easy_perform(x->h);
  curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
  if (c != CURLE_OK) {
    if (x->overflow)
      return cr_error_set(err, CR_E_REGISTRY_PROTOCOL, 0, "%s: response larger than %u bytes",
                          what, (unsigned)x->max);
    return curl_fail(g, c, what, err);
  }
  return 0;
}

static char *url_escape(const char *s) {
  char *e = curl_easy_escape(NULL, s, 0);
  char *r = e ? strdup(e) : NULL;
  curl_free(e);
  return r;
}

/* Bearer: GET realm?service=..&scope=repository:REPO:pull. */
static int fetch_token(reg *g, cr_error **err) {
  const image_auth_challenge *c = &g->challenge;
  _cleanup_free_ char *svc = c->service ? url_escape(c->service) : NULL;
  _cleanup_free_ char *scope_raw = NULL, *scope = NULL, *url = NULL;
  if (asprintf(&scope_raw, "repository:%s:pull", g->ref.repository) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "token");
  scope = url_escape(scope_raw);
  if (!scope || asprintf(&url, "%s%sscope=%s%s%s", c->realm, strchr(c->realm, '?') ? "&" : "?",
                         scope, svc ? "&service=" : "", svc ? svc : "") < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "token");
  /* the token service gets the password: only over TLS unless insecure is allowed */
  bool https = !strncmp(c->realm, "https://", 8);
  if (!https) {
    bool http = !strncmp(c->realm, "http://", 7);
    char host[256] = "";
    if (http) snprintf(host, sizeof(host), "%.*s", (int)strcspn(c->realm + 7, "/?#"), c->realm + 7);
    if (!http || !image_registry_insecure_allowed(host))
      return cr_error_set(err, CR_E_REGISTRY_INSECURE, 0,
                          "token realm '%.200s' of %s is not HTTPS", c->realm, g->host);
  }
  xfer x = {.fd = -1};
  if (xfer_init(g, &x, url, false, NULL) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "token");
  curl_easy_setopt(x.h, CURLOPT_PROTOCOLS_STR, https ? "https" : "http,https");
  curl_easy_setopt(x.h, CURLOPT_REDIR_PROTOCOLS_STR, https ? "https" : "http,https");
  if (g->have_creds && strcmp(g->creds.username, "<token>")) {
    curl_easy_setopt(x.h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(x.h, CURLOPT_USERNAME, g->creds.username);
    curl_easy_setopt(x.h, CURLOPT_PASSWORD, g->creds.password);
  }
  int r = perform(g, &x, "getting a registry token", err);
  if (r >= 0 && x.status != 200) r = http_fail(g, &x, "getting a registry token", err);
  if (r >= 0) {
    json_error_t je;
    _cleanup_json_ json_t *j = json_loadb(x.body ? x.body : "", x.len, 0, &je);
    const char *t = json_string_value(json_object_get(j, "token"));
    if (!t) t = json_string_value(json_object_get(j, "access_token"));
    if (!t || !*t || strlen(t) > 64 * 1024 || strpbrk(t, "\r\n"))
      r = cr_error_set(err, CR_E_REGISTRY_PROTOCOL, 0, "token service %.200s returned no token",
                       c->realm);
    else {
      free(g->authz);
      if (asprintf(&g->authz, "Authorization: Bearer %s", t) < 0) g->authz = NULL;
      g->bearer = true;
      if (!g->authz) r = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "token");
    }
  }
  xfer_clear(&x);
  return r;
}

static int set_basic(reg *g, cr_error **err) {
  _cleanup_free_ char *up = NULL;
  if (asprintf(&up, "%s:%s", g->creds.username, g->creds.password) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "auth");
  _cleanup_free_ char *b = cr_base64_encode((const uint8_t *)up, strlen(up));
  explicit_bzero(up, strlen(up));
  free(g->authz);
  g->authz = NULL;
  if (!b || asprintf(&g->authz, "Authorization: Basic %s", b) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "auth");
  explicit_bzero(b, strlen(b));
  return 0;
}

/* Reacts to a 401: takes its challenge and gets a token / sets Basic.
 * Returns 1 when a retry makes sense. */
static int authenticate(reg *g, const xfer *x, cr_error **err) {
  if (!x->www_auth) return 0;
  image_auth_challenge c;
  if (image_auth_challenge_parse(x->www_auth, &c, err) < 0) return -1;
  image_auth_challenge_clear(&g->challenge);
  g->challenge = c;
  if (!strcmp(c.scheme, "bearer")) {
    int r = fetch_token(g, err);
    return r < 0 ? r : 1;
  }
  if (!strcmp(c.scheme, "basic")) {
    if (!g->have_creds || (g->authz && !g->bearer)) return 0; /* none, or refused */
    if (set_basic(g, err) < 0) return -1;
    g->bearer = false;
    return 1;
  }
  return cr_error_set(err, CR_E_REGISTRY_PROTOCOL, 0, "registry %s wants unsupported auth '%.40s'",
                      g->host, c.scheme);
}

/* GET /v2/: picks the scheme (https, or http for loopback/insecure) and
 * authenticates. */
static int ping(reg *g, cr_error **err) {
  const char *schemes[2] = {"https", g->insecure_ok ? "http" : NULL};
  for (size_t i = 0; i < 2 && schemes[i]; i++) {
    free(g->base);
    if (asprintf(&g->base, "%s://%s", schemes[i], g->host) < 0) {
      g->base = NULL;
      return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "ping");
    }
    _cleanup_free_ char *url = NULL;
    if (asprintf(&url, "%s/v2/", g->base) < 0) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "ping");
    xfer x = {.fd = -1};
    if (xfer_init(g, &x, url, false, NULL) < 0) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "ping");
    CURLcode c = curl_easy_perform(x.h);
    curl_easy_getinfo(x.h, CURLINFO_RESPONSE_CODE, &x.status);
    if (c != CURLE_OK) {
      bool last = i == 1 || !schemes[1];
      int r = 0;
      if (last) {
        /* report the https failure when https was the only try */
        r = curl_fail(g, c, "contacting the registry", err);
      }
      xfer_clear(&x);
      if (last) return r;
      continue;
    }
    int r = 0;
    if (x.status == 401) {
      r = authenticate(g, &x, err);
      if (r == 0 && !g->have_creds) r = http_fail(g, &x, "contacting the registry", err);
      if (r > 0) r = 0;
      /* with Basic and credentials, the first real request tells */
    } else if (x.status != 200 && x.status != 404) {
      /* 404: not a v2 registry root, but some serve /v2/<name> only */
      r = http_fail(g, &x, "contacting the registry", err);
    }
    xfer_clear(&x);
    return r;
  }
  return cr_error_set(err, CR_E_INTERNAL, 0, "ping");
}

static int reg_open(const char *refstr, const image_pull_opts *opts, reg *g, cr_error **err) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, curl_init_once);
  *g = (reg){0};
  int r = image_reference_parse(refstr, &g->ref, err);
  if (r < 0) return r;
  g->host = image_reference_api_host(&g->ref);
  g->insecure_ok = image_registry_insecure_allowed(g->ref.registry);
  if (opts && opts->creds && opts->creds->username && opts->creds->password) {
    g->creds.username = strdup(opts->creds->username);
    g->creds.password = strdup(opts->creds->password);
    if (!g->creds.username || !g->creds.password)
      return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "credentials");
    g->have_creds = true;
  } else {
    r = image_credentials_lookup(g->ref.registry, opts ? opts->auth_file : NULL, &g->creds, err);
    if (r < 0) return cr_error_wrap(err, "registry credentials for %s", g->ref.registry);
    g->have_creds = r > 0;
  }
  return ping(g, err);
}

/* GET (or HEAD) a manifest by tag or digest; verifies a digest reference. */
static int get_manifest(reg *g, const char *what_ref, bool head, xfer *x, char ret_hex[65],
                        cr_error **err) {
  _cleanup_free_ char *url = NULL;
  if (asprintf(&url, "%s/v2/%s/manifests/%s", g->base, g->ref.repository, what_ref) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "manifest");
  for (int attempt = 0;; attempt++) {
    if (xfer_init(g, x, url, true, ACCEPT_MANIFESTS) < 0)
      return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "manifest");
    if (head) curl_easy_setopt(x->h, CURLOPT_NOBODY, 1L);
    int r = perform(g, x, "fetching the manifest", err);
    if (r < 0) return r;
    if (x->status == 401 && attempt == 0) {
      r = authenticate(g, x, err);
      if (r < 0) return r;
      if (r > 0) {
        xfer_clear(x);
        continue;
      }
    }
    if (x->status == 404 && (what_ref == g->ref.tag || what_ref == g->ref.digest)) {
      /* registries answer MANIFEST_UNKNOWN for unknown repositories too: ask
       * for the tag list to tell which it is */
      _cleanup_free_ char *turl = NULL;
      xfer t = {.fd = -1};
      if (asprintf(&turl, "%s/v2/%s/tags/list?n=1", g->base, g->ref.repository) >= 0 &&
          xfer_init(g, &t, turl, true, NULL) == 0 && curl_easy_perform(t.h) == CURLE_OK) {
        curl_easy_getinfo(t.h, CURLINFO_RESPONSE_CODE, &t.status);
        if (t.status == 404) {
          xfer_clear(&t);
          return cr_error_set(err, CR_E_REGISTRY_UNKNOWN_REPOSITORY, 0,
                              "fetching the manifest: repository %s does not exist on %s; "
                              "check the name",
                              g->ref.repository, g->host);
        }
      }
      xfer_clear(&t);
    }
    if (x->status != 200) return http_fail(g, x, "fetching the manifest", err);
    break;
  }
  const char *want = !strncmp(what_ref, "sha256:", 7) ? what_ref + 7 : NULL;
  if (head) {
    const char *d = x->docker_digest;
    if (!d || strncmp(d, "sha256:", 7) || !image_is_hex(d + 7, IMAGE_HEX_LEN))
      return 1; /* no usable digest header: the caller falls back to GET */
    memcpy(ret_hex, d + 7, 65);
  } else {
    cr_sha256_hex(x->body ? x->body : "", x->len, ret_hex);
    const char *d = x->docker_digest;
    if (d && !strncmp(d, "sha256:", 7) && strcmp(d + 7, ret_hex))
      return cr_error_set(err, CR_E_IMAGE_DIGEST_MISMATCH, 0,
                          "manifest %s: registry says %s, content is sha256:%s", what_ref, d,
                          ret_hex);
  }
  if (want && strcmp(want, ret_hex))
    return cr_error_set(err, CR_E_IMAGE_DIGEST_MISMATCH, 0,
                        "manifest %s has digest sha256:%s", what_ref, ret_hex);
  return 0;
}

int image_registry_resolve(const char *refstr, const image_pull_opts *opts, char **ret_digest,
                           cr_error **err) {
  _cleanup_(reg_clear) reg g = {0};
  int r = reg_open(refstr, opts, &g, err);
  if (r < 0) return cr_error_wrap(err, "resolving %s", refstr);
  const char *what = g.ref.digest ? g.ref.digest : g.ref.tag;
  char hex[65];
  xfer x = {.fd = -1};
  r = get_manifest(&g, what, false, &x, hex, err);
  if (r >= 0) {
    image_manifest m;
    r = image_manifest_parse(x.body ? x.body : "", x.len, x.content_type, &m, err);
    if (r >= 0) image_manifest_clear(&m);
  }
  xfer_clear(&x);
  if (r < 0) return cr_error_wrap(err, "resolving %s", refstr);
  if (asprintf(ret_digest, "sha256:%s", hex) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "resolve");
  return 0;
}

/* ---- blobs */

typedef struct blob_job {
  char hex[65];
  int64_t size;
  char *path;    /* <store>/blobs/sha256/<hex> */
  char *partial; /* path + ".partial" */
  bool done;
} blob_job;

typedef struct pull_ctx {
  reg *g;
  image_progress_fn fn;
  void *ud;
  image_pull_stats *stats;
  uint64_t total, base_done;
  struct timespec last;
} pull_ctx;

static void report(pull_ctx *p, const char *phase, uint64_t done, uint64_t total, bool force) {
  if (!p->fn) return;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  long ms = (now.tv_sec - p->last.tv_sec) * 1000 + (now.tv_nsec - p->last.tv_nsec) / 1000000;
  if (!force && ms < 200) return;
  p->last = now;
  p->fn(phase, done, total, p->ud);
}

static int open_partial(blob_job *b, xfer *x, cr_error **err) {
  int fd = open(b->partial, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return cr_error_set(err, errno == ENOSPC ? CR_E_DISK_FULL : CR_E_IO, errno,
                                  "opening %s", b->partial);
  /* two pulls of the same blob: the second waits, then finds it done */
  if (flock(fd, LOCK_EX) < 0) {
    close(fd);
    return cr_error_set(err, CR_E_IO, errno, "locking %s", b->partial);
  }
  x->fd = fd;
  x->sha = EVP_MD_CTX_new();
  if (!x->sha || !EVP_DigestInit_ex(x->sha, EVP_sha256(), NULL))
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "sha256");
  /* resume: hash what is there */
  struct stat st;
  if (fstat(fd, &st) < 0) return cr_error_set(err, CR_E_IO, errno, "stat %s", b->partial);
  uint64_t have = (uint64_t)st.st_size;
  if (b->size >= 0 && have > (uint64_t)b->size) {
    if (ftruncate(fd, 0) < 0) return cr_error_set(err, CR_E_IO, errno, "truncating %s", b->partial);
    have = 0;
  }
  static _Thread_local char buf[1 << 16];
  uint64_t got = 0;
  while (got < have) {
    ssize_t n = pread(fd, buf, sizeof(buf), (off_t)got);
    if (n <= 0) break;
    EVP_DigestUpdate(x->sha, buf, (size_t)n);
    got += (uint64_t)n;
  }
  if (lseek(fd, (off_t)got, SEEK_SET) < 0)
    return cr_error_set(err, CR_E_IO, errno, "seeking %s", b->partial);
  x->offset = x->written = got;
  return 0;
}

/* Checks a finished transfer; moves the blob into place. Returns 1 when it
 * should be retried from scratch. */
static int finish_blob(pull_ctx *p, blob_job *b, xfer *x, CURLcode c, cr_error **err) {
  reg *g = p->g;
  long code = 0;
  curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
  x->status = code;
  if (x->too_big) {
    unlink(b->partial);
    return cr_error_set(err, CR_E_IMAGE_DIGEST_MISMATCH, 0,
                        "blob sha256:%s is larger than the %lld bytes its descriptor says; "
                        "deleted",
                        b->hex, (long long)b->size);
  }
  if (x->werr == EPROTO) { /* a 206 for another range: start over */
    if (ftruncate(x->fd, 0) < 0) return cr_error_set(err, CR_E_IO, errno, "truncating");
    return 1;
  }
  if (x->werr)
    return cr_error_set(err, x->werr == ENOSPC ? CR_E_DISK_FULL : CR_E_IO, x->werr,
                        "writing blob sha256:%s%s", b->hex,
                        x->werr == ENOSPC ? " (free space in the data dir and pull again: the "
                                            "download resumes)"
                                          : "");
  if (c != CURLE_OK) {
    curl_fail(g, c, "downloading a layer", err);
    return cr_error_wrap(err, "blob sha256:%s (%llu bytes kept; pulling again resumes)", b->hex,
                         (unsigned long long)x->written);
  }
  if (code == 416 && x->offset > 0) { /* our partial is no prefix the server knows */
    if (ftruncate(x->fd, 0) < 0) return cr_error_set(err, CR_E_IO, errno, "truncating");
    return 1;
  }
  if (code == 401 && x->attempts == 0) {
    int r = authenticate(g, x, err);
    if (r < 0) return r;
    if (r > 0) return 1;
  }
  if (code != 200 && code != 206) return http_fail(g, x, "downloading a layer", err);
  if (b->size >= 0 && x->written != (uint64_t)b->size) {
    unlink(b->partial);
    return cr_error_set(err, CR_E_IMAGE_DIGEST_MISMATCH, 0,
                        "blob sha256:%s has %llu bytes, its descriptor says %lld; deleted",
                        b->hex, (unsigned long long)x->written, (long long)b->size);
  }
  unsigned char md[32];
  unsigned int mdl = 0;
  EVP_DigestFinal_ex(x->sha, md, &mdl);
  char got[65];
  for (int i = 0; i < 32; i++) snprintf(got + 2 * i, 3, "%02x", md[i]);
  if (strcmp(got, b->hex)) {
    unlink(b->partial);
    return cr_error_set(err, CR_E_IMAGE_DIGEST_MISMATCH, 0,
                        "blob from %s should have digest sha256:%s but has sha256:%s; the "
                        "download was deleted (a corrupt registry or something between)",
                        g->host, b->hex, got);
  }
  if (rename(b->partial, b->path) < 0)
    return cr_error_set(err, errno == ENOSPC ? CR_E_DISK_FULL : CR_E_IO, errno,
                        "storing blob sha256:%s", b->hex);
  b->done = true;
  p->stats->blobs_fetched++;
  return 0;
}

static int start_blob(pull_ctx *p, blob_job *b, xfer *x, size_t idx, int attempts,
                      cr_error **err) {
  reg *g = p->g;
  _cleanup_free_ char *url = NULL;
  if (asprintf(&url, "%s/v2/%s/blobs/sha256:%s", g->base, g->ref.repository, b->hex) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "blob");
  if (xfer_init(g, x, url, true, NULL) < 0) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "blob");
  x->index = idx;
  x->attempts = attempts;
  x->expect_size = b->size;
  int r = open_partial(b, x, err);
  if (r < 0) return r;
  if (access(b->path, F_OK) == 0) { /* another pull finished it meanwhile */
    b->done = true;
    return 1;
  }
  if (x->offset > 0) {
    curl_easy_setopt(x->h, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)x->offset);
    if (attempts == 0) p->stats->resumed += x->offset;
  }
  return 0;
}

/* Downloads the blobs not in the cache, up to `parallel` at once. */
static int fetch_blobs(pull_ctx *p, blob_job *jobs, size_t n, unsigned parallel, cr_error **err) {
  CURLM *m = curl_multi_init();
  if (!m) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "curl multi");
  xfer *xs = calloc(n ? n : 1, sizeof(*xs));
  if (!xs) {
    curl_multi_cleanup(m);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "blobs");
  }
  for (size_t i = 0; i < n; i++) xs[i].fd = -1;
  size_t next = 0, active = 0;
  int r = 0;
  while (r >= 0) {
    while (active < parallel && next < n) {
      size_t i = next++;
      if (jobs[i].done) continue;
      int q = start_blob(p, &jobs[i], &xs[i], i, 0, err);
      if (q < 0) {
        r = q;
        break;
      }
      if (q > 0) {
        xfer_clear(&xs[i]);
        continue;
      }
      curl_multi_add_handle(m, xs[i].h);
      active++;
    }
    if (r < 0 || active == 0) break;
    int running = 0;
    CURLMcode mc = curl_multi_perform(m, &running);
    if (mc != CURLM_OK) {
      r = cr_error_set(err, CR_E_INTERNAL, 0, "curl: %s", curl_multi_strerror(mc));
      break;
    }
    CURLMsg *msg;
    int left;
    while (r >= 0 && (msg = curl_multi_info_read(m, &left))) {
      if (msg->msg != CURLMSG_DONE) continue;
      xfer *x = NULL;
      for (size_t i = 0; i < n && !x; i++)
        if (xs[i].h == msg->easy_handle) x = &xs[i];
      if (!x) continue;
      CURLcode c = msg->data.result;
      curl_multi_remove_handle(m, x->h);
      active--;
      size_t i = x->index;
      int attempts = x->attempts;
      int q = finish_blob(p, &jobs[i], x, c, err);
      if (q == 0) p->base_done += x->written - x->offset;
      xfer_clear(x);
      if (q < 0) {
        r = q;
        break;
      }
      if (q > 0 && attempts < 2) { /* retry (new token, or from scratch) */
        q = start_blob(p, &jobs[i], x, i, attempts + 1, err);
        if (q < 0) {
          r = q;
          break;
        }
        if (q == 0) {
          curl_multi_add_handle(m, x->h);
          active++;
        } else {
          xfer_clear(x);
        }
      } else if (q > 0) {
        r = cr_error_set(err, CR_E_REGISTRY_PROTOCOL, 0, "blob sha256:%s: giving up after retries",
                         jobs[i].hex);
      }
    }
    if (r < 0) break;
    uint64_t now = p->base_done;
    for (size_t i = 0; i < n; i++)
      if (xs[i].h) now += xs[i].written - xs[i].offset;
    p->stats->downloaded = now;
    report(p, "downloading", now, p->total, false);
    if (running > 0) curl_multi_poll(m, NULL, 0, 500, NULL);
  }
  for (size_t i = 0; i < n; i++) {
    if (xs[i].h) {
      p->stats->downloaded += xs[i].written - xs[i].offset;
      curl_multi_remove_handle(m, xs[i].h);
    }
    xfer_clear(&xs[i]);
  }
  free(xs);
  curl_multi_cleanup(m);
  return r;
}

/* Fetches one small blob (the config) into memory, verified. */
static int fetch_small_blob(reg *g, const image_descriptor *d, char **ret, size_t *ret_len,
                            cr_error **err) {
  _cleanup_free_ char *url = NULL;
  if (asprintf(&url, "%s/v2/%s/blobs/sha256:%s", g->base, g->ref.repository, d->hex) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "blob");
  xfer x = {.fd = -1};
  int r = 0;
  for (int attempt = 0;; attempt++) {
    if (xfer_init(g, &x, url, true, NULL) < 0) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "blob");
    r = perform(g, &x, "fetching the image config", err);
    if (r >= 0 && x.status == 401 && attempt == 0) {
      r = authenticate(g, &x, err);
      if (r > 0) {
        xfer_clear(&x);
        continue;
      }
    }
    if (r >= 0 && x.status != 200) r = http_fail(g, &x, "fetching the image config", err);
    break;
  }
  if (r >= 0) {
    char got[65];
    cr_sha256_hex(x.body ? x.body : "", x.len, got);
    if (strcmp(got, d->hex))
      r = cr_error_set(err, CR_E_IMAGE_DIGEST_MISMATCH, 0,
                       "config blob should have digest sha256:%s but has sha256:%s", d->hex, got);
  }
  if (r >= 0) {
    *ret = x.body ? TAKE_PTR(x.body) : strdup("");
    *ret_len = x.len;
  }
  xfer_clear(&x);
  return r;
}

/* ---- pull */

static int write_file(const char *dir, const char *name, const void *data, size_t len,
                      cr_error **err) {
  _cleanup_free_ char *p = cr_path_join(dir, name);
  if (!p) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "layout");
  int r = cr_write_file_atomic(p, data, len, 0600);
  if (r < 0) return cr_error_set(err, r == -ENOSPC ? CR_E_DISK_FULL : CR_E_IO, -r, "writing %s", p);
  return 0;
}

static void blob_jobs_free(blob_job *jobs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(jobs[i].path);
    free(jobs[i].partial);
  }
  free(jobs);
}

/* Builds an OCI layout in dir from the cached blobs (hard links) and the
 * manifest, then imports it. */
static int import_layout(const char *store, const char *dir, const char *manifest,
                         size_t manifest_len, const char *manifest_hex, const char *manifest_mt,
                         const char *config, size_t config_len, const char *config_hex,
                         blob_job *jobs, size_t n, const char *ref, const image_import_extra *ex,
                         image_progress_fn fn, void *ud, image_info **ret, cr_error **err) {
  _cleanup_free_ char *blobs = NULL;
  if (asprintf(&blobs, "%s/blobs/sha256", dir) < 0) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "layout");
  int r = cr_mkdir_p(blobs, 0700);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "creating %s", blobs);
  static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}\n";
  if (write_file(dir, "oci-layout", layout, sizeof(layout) - 1, err) < 0) return -1;
  if (write_file(blobs, manifest_hex, manifest, manifest_len, err) < 0) return -1;
  if (write_file(blobs, config_hex, config, config_len, err) < 0) return -1;
  for (size_t i = 0; i < n; i++) {
    _cleanup_free_ char *dst = cr_path_join(blobs, jobs[i].hex);
    if (!dst) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "layout");
    if (link(jobs[i].path, dst) < 0 && errno != EEXIST)
      return cr_error_set(err, CR_E_IO, errno, "linking %s", jobs[i].path);
  }
  _cleanup_json_ json_t *index = json_pack(
      "{s:i, s:s, s:[{s:s, s:s, s:I}]}", "schemaVersion", 2, "mediaType", IMAGE_MT_OCI_INDEX,
      "manifests", "mediaType", manifest_mt, "digest", "", "size", (json_int_t)manifest_len);
  char digest[72];
  snprintf(digest, sizeof(digest), "sha256:%s", manifest_hex);
  json_t *d0 = json_array_get(json_object_get(index, "manifests"), 0);
  if (!index || json_object_set_new(d0, "digest", json_string(digest)) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "layout");
  _cleanup_free_ char *s = json_dumps(index, JSON_COMPACT);
  if (!s || write_file(dir, "index.json", s, strlen(s), err) < 0)
    return s ? -1 : cr_error_set(err, CR_E_INTERNAL, ENOMEM, "layout");
  r = image_import_ex(dir, ref, ex, fn, ud, ret, err);
  if (r < 0 && (*err)->errnum == ENOSPC) {
    cr_error *e = *err;
    *err = NULL;
    cr_error_set(err, CR_E_DISK_FULL, ENOSPC, "%s (free space in the data dir and pull again)",
                 e->message);
    cr_error_free(e);
  }
  return r;
}

static int make_layout_dir(const char *store, char **ret, cr_error **err) {
  char *tmp = NULL;
  if (asprintf(&tmp, "%s/.tmp-XXXXXX", store) < 0) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "pull");
  if (!mkdtemp(tmp)) {
    int e = errno;
    free(tmp);
    return cr_error_set(err, e == ENOSPC ? CR_E_DISK_FULL : CR_E_IO, e, "creating a temp dir");
  }
  char pid[32];
  int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
  _cleanup_free_ char *pidf = cr_path_join(tmp, "pid");
  if (!pidf || cr_write_file_atomic(pidf, pid, (size_t)n, 0600) < 0) {
    cr_rm_rf(tmp);
    free(tmp);
    return cr_error_set(err, CR_E_IO, errno, "creating a temp dir");
  }
  *ret = tmp;
  return 0;
}

static int do_pull(reg *g, const image_pull_opts *opts, image_progress_fn fn, void *ud,
                   image_info **ret, image_pull_stats *stats, cr_error **err) {
  pull_ctx p = {.g = g, .fn = fn, .ud = ud, .stats = stats};
  const char *platform = opts && opts->platform ? opts->platform : DEFAULT_PLATFORM;
  report(&p, "resolving", 0, 0, true);
  const char *what = g->ref.digest ? g->ref.digest : g->ref.tag;
  char top_hex[65], man_hex[65];
  xfer x = {.fd = -1};
  int r = get_manifest(g, what, false, &x, top_hex, err);
  image_manifest m = {0};
  if (r >= 0) r = image_manifest_parse(x.body ? x.body : "", x.len, x.content_type, &m, err);
  _cleanup_free_ char *body = NULL;
  size_t body_len = 0;
  if (r >= 0 && m.is_index) {
    ssize_t i = image_manifest_pick_platform(&m, platform);
    if (i < 0) {
      char list[512] = "";
      size_t used = 0;
      for (size_t k = 0; k < m.n_layers && used < sizeof(list) - 1; k++) {
        if (!m.platforms[k]) continue;
        int w = snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "",
                         m.platforms[k]);
        if (w > 0) used = MIN(sizeof(list) - 1, used + (size_t)w);
      }
      r = cr_error_set(err, CR_E_IMAGE_PLATFORM_NOT_FOUND, 0,
                       "the image index has no manifest for %s (it has: %s); this host runs "
                       "%s images only",
                       platform, used ? list : "none", platform);
    } else {
      char sub[72];
      snprintf(sub, sizeof(sub), "sha256:%s", m.layers[i].hex);
      image_manifest_clear(&m);
      xfer_clear(&x);
      r = get_manifest(g, sub, false, &x, man_hex, err);
      if (r >= 0) r = image_manifest_parse(x.body ? x.body : "", x.len, x.content_type, &m, err);
      if (r >= 0 && m.is_index)
        r = cr_error_set(err, CR_E_IMAGE_INVALID, 0, "nested image indexes are not supported");
    }
  } else {
    memcpy(man_hex, top_hex, 65);
  }
  if (r >= 0) {
    body = x.body ? TAKE_PTR(x.body) : strdup("");
    body_len = x.len;
  }
  xfer_clear(&x);
  if (r < 0) {
    image_manifest_clear(&m);
    return r;
  }
  _cleanup_free_ char *name = image_reference_name(&g->ref);
  _cleanup_free_ char *tag_ref = NULL, *digest_ref = NULL, *source = image_reference_format(&g->ref);
  if (!name || !source || (g->ref.tag && asprintf(&tag_ref, "%s:%s", name, g->ref.tag) < 0) ||
      asprintf(&digest_ref, "%s@sha256:%s", name, top_hex) < 0) {
    image_manifest_clear(&m);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "pull");
  }
  const char *main_ref = tag_ref ? tag_ref : digest_ref;
  const char *second = tag_ref ? digest_ref : NULL;

  /* 1. already stored: refs only */
  {
    _cleanup_close_ int lock = image_store_lock(g->store, err);
    if (lock < 0) {
      image_manifest_clear(&m);
      return lock;
    }
    r = image_store_try_existing(g->store, man_hex, main_ref, err);
    if (r > 0 && second) r = image_store_add_ref(g->store, man_hex, second, err) < 0 ? -1 : 1;
    if (r != 0) {
      image_manifest_clear(&m);
      if (r < 0) return r;
      stats->already_stored = true;
      report(&p, "done", 0, 0, true);
      return ret ? image_store_load(g->store, man_hex, ret, err) : 0;
    }
  }

  /* 2. config (small, in memory) and layers (cache) */
  _cleanup_free_ char *config = NULL;
  size_t config_len = 0;
  r = fetch_small_blob(g, &m.config, &config, &config_len, err);
  _cleanup_free_ char *cfg_platform = NULL;
  if (r >= 0) {
    json_error_t je;
    _cleanup_json_ json_t *cj = json_loadb(config, config_len, 0, &je);
    const char *os = json_string_value(json_object_get(cj, "os"));
    const char *arch = json_string_value(json_object_get(cj, "architecture"));
    if (os && arch && strlen(os) < 64 && strlen(arch) < 64 &&
        asprintf(&cfg_platform, "%s/%s", os, arch) < 0)
      cfg_platform = NULL;
    size_t pl = strcspn(platform, "/");
    pl += platform[pl] ? 1 + strcspn(platform + pl + 1, "/") : 0;
    if (cfg_platform && (strlen(cfg_platform) != pl || strncmp(cfg_platform, platform, pl)))
      r = cr_error_set(err, CR_E_IMAGE_PLATFORM_NOT_FOUND, 0,
                       "the image is for %s, not %s; this host runs %s images only",
                       cfg_platform, platform, platform);
  }
  _cleanup_free_ char *blobdir = NULL;
  if (r >= 0 && (asprintf(&blobdir, "%s/blobs/sha256", g->store) < 0 || !blobdir))
    r = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "pull");
  if (r >= 0 && (r = cr_mkdir_p(blobdir, 0700)) < 0)
    r = cr_error_set(err, r == -ENOSPC ? CR_E_DISK_FULL : CR_E_IO, -r, "creating %s", blobdir);
  blob_job *jobs = r >= 0 ? calloc(m.n_layers ? m.n_layers : 1, sizeof(*jobs)) : NULL;
  if (r >= 0 && !jobs) r = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "pull");
  size_t n = r >= 0 ? m.n_layers : 0;
  for (size_t i = 0; i < n && r >= 0; i++) {
    memcpy(jobs[i].hex, m.layers[i].hex, 65);
    jobs[i].size = m.layers[i].size;
    jobs[i].path = cr_path_join(blobdir, jobs[i].hex);
    if (!jobs[i].path || asprintf(&jobs[i].partial, "%s.partial", jobs[i].path) < 0) {
      jobs[i].partial = NULL;
      r = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "pull");
      break;
    }
    for (size_t k = 0; k < i; k++) /* a layer listed twice */
      if (!strcmp(jobs[k].hex, jobs[i].hex)) jobs[i].done = true;
    if (!jobs[i].done && access(jobs[i].path, F_OK) == 0) {
      jobs[i].done = true;
      stats->blobs_cached++;
    }
    if (!jobs[i].done && jobs[i].size > 0) p.total += (uint64_t)jobs[i].size;
  }
  if (r >= 0) {
    /* the resumed part of partial blobs counts as done */
    report(&p, "downloading", 0, p.total, true);
    r = fetch_blobs(&p, jobs, n, opts && opts->parallel ? opts->parallel : DEFAULT_PARALLEL, err);
    report(&p, "downloading", stats->downloaded, p.total, true);
  }
  _cleanup_free_ char *layout = NULL;
  if (r >= 0) r = make_layout_dir(g->store, &layout, err);
  if (r >= 0) {
    image_import_extra ex = {.source_format = "registry",
                             .imported_from = source,
                             .platform = cfg_platform ? cfg_platform : platform,
                             .extra_ref = second};
    const char *mt = m.media_type;
    r = import_layout(g->store, layout, body, body_len, man_hex, mt, config, config_len,
                      m.config.hex, jobs, n, main_ref, &ex, fn, ud, ret, err);
    /* Cached blobs are not fsynced (that halved the download rate); one
     * damaged by a crash fails the digest check during extraction: drop
     * every cached blob that no longer matches so the next pull fetches it. */
    if (r < 0 && !strcmp(cr_error_reason(*err), CR_E_IMAGE_INVALID)) {
      unsigned dropped = 0;
      for (size_t i = 0; i < n; i++) {
        char got[65];
        if (cr_sha256_file(jobs[i].path, got) == 0 && strcmp(got, jobs[i].hex) &&
            unlink(jobs[i].path) == 0)
          dropped++;
      }
      if (dropped)
        cr_error_wrap(err, "%u cached layer(s) were damaged and have been deleted; pull again",
                      dropped);
    }
  }
  if (layout) cr_rm_rf(layout);
  if (jobs) blob_jobs_free(jobs, m.n_layers);
  image_manifest_clear(&m);
  return r;
}

int image_pull(const char *refstr, const image_pull_opts *opts, image_progress_fn fn,
               void *userdata, image_info **ret, image_pull_stats *ret_stats, cr_error **err) {
  image_pull_stats st = {0};
  _cleanup_(reg_clear) reg g = {0};
  int r = reg_open(refstr, opts, &g, err);
  if (r >= 0) {
    g.store = image_store_dir();
    if (!g.store) r = cr_error_set(err, CR_E_IO, errno, "opening the image store");
  }
  if (r >= 0) r = do_pull(&g, opts, fn, userdata, ret, &st, err);
  if (ret_stats) *ret_stats = st;
  if (r < 0) return cr_error_wrap(err, "pulling %s", refstr);
  return 0;
}

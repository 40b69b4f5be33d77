/* Parsers for registry input: image references, WWW-Authenticate
 * challenges, manifests and indexes. All input is untrusted and bounded. */
#include "image/image-internal.h"
#include "image/registry.h"
#include "util/macro.h"

#include <ctype.h>
#include <string.h>

#define MAX_NAME 255
#define MAX_TAG 128
#define MAX_HEADER 8192
#define MAX_MANIFEST_BYTES (4u << 20)

void image_reference_clear(image_reference *r) {
  free(r->registry);
  free(r->repository);
  free(r->tag);
  free(r->digest);
  *r = (image_reference){0};
}

static bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

/* path-component: [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)* */
static bool component_valid(const char *s, size_t n) {
  if (n == 0 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1])) return false;
  for (size_t i = 0; i < n;) {
    if (is_lower_alnum(s[i])) {
      i++;
      continue;
    }
    size_t j = i;
    if (s[i] == '.') j++;
    else if (s[i] == '_') j += (i + 1 < n && s[i + 1] == '_') ? 2 : 1;
    else if (s[i] == '-') while (j < n && s[j] == '-') j++;
    else return false;
    if (j >= n || !is_lower_alnum(s[j])) return false;
    i = j;
  }
  return true;
}

/* host: DNS labels or an IPv4 address, or [IPv6]; optional :port */
static bool registry_valid(const char *s, size_t n) {
  if (n == 0 || n > MAX_NAME) return false;
  size_t host_end = n;
  if (s[0] == '[') {
    const char *close = memchr(s, ']', n);
    if (!close || close == s + 1) return false;
    for (const char *p = s + 1; p < close; p++)
      if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.') return false;
    host_end = (size_t)(close - s) + 1;
    if (host_end < n && s[host_end] != ':') return false;
  } else {
    const char *colon = memchr(s, ':', n);
    if (colon) host_end = (size_t)(colon - s);
    if (host_end == 0) return false;
    for (size_t i = 0; i < host_end; i++) {
      char c = s[i];
      if (!isalnum((unsigned char)c) && c != '.' && c != '-') return false;
      if ((c == '.' || c == '-') && (i == 0 || i + 1 == host_end)) return false;
      if (c == '.' && s[i + 1] == '.') return false;
    }
  }
  if (host_end < n) { /* :port */
    size_t digits = n - host_end - 1;
    if (digits == 0 || digits > 5) return false;
    for (size_t i = host_end + 1; i < n; i++)
      if (!isdigit((unsigned char)s[i])) return false;
    if (atoi(s + host_end + 1) > 65535) return false;
  }
  return true;
}

static bool tag_valid(const char *s, size_t n) {
  if (n == 0 || n > MAX_TAG) return false;
  if (!isalnum((unsigned char)s[0]) && s[0] != '_') return false;
  for (size_t i = 1; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && !strchr("_.-", s[i])) return false;
  return true;
}

int image_reference_parse(const char *s, image_reference *ret, cr_error **err) {
  *ret = (image_reference){0};
  if (!s || !*s) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "empty image reference");
  size_t len = strnlen(s, 1024);
  if (len >= 1024) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "image reference too long");
  image_reference r = {0};
  int rc = 0;
  const char *at = strchr(s, '@');
  size_t name_len = at ? (size_t)(at - s) : len;
  if (at) {
    const char *d = at + 1;
    if (strncmp(d, "sha256:", 7) || !image_is_hex(d + 7, IMAGE_HEX_LEN)) {
      rc = cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "bad digest in '%s' (want @sha256:<64 lowercase hex>)", s);
      goto fail;
    }
    if (!(r.digest = strdup(d))) goto oom;
  }
  /* the tag: after the last ':' that follows the last '/' */
  const char *slash = memrchr(s, '/', name_len);
  const char *colon = memrchr(slash ? slash : s, ':', name_len - (size_t)((slash ? slash : s) - s));
  size_t repo_end = name_len;
  if (colon) {
    size_t tl = name_len - (size_t)(colon - s) - 1;
    if (!tag_valid(colon + 1, tl)) {
      rc = cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "bad tag in '%s' (want [A-Za-z0-9_][A-Za-z0-9_.-], at most 128)", s);
      goto fail;
    }
    if (!(r.tag = strndup(colon + 1, tl))) goto oom;
    repo_end = (size_t)(colon - s);
  }
  /* the registry: a first component with '.' or ':' or "localhost" */
  const char *first_slash = memchr(s, '/', repo_end);
  size_t repo_start = 0;
  if (first_slash) {
    size_t fl = (size_t)(first_slash - s);
    if (memchr(s, '.', fl) || memchr(s, ':', fl) || (fl == 9 && !memcmp(s, "localhost", 9)) ||
        s[0] == '[') {
      if (!registry_valid(s, fl)) {
        rc = cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "bad registry host '%.*s' in '%s'",
                          (int)fl, s, s);
        goto fail;
      }
      if (!(r.registry = strndup(s, fl))) goto oom;
      repo_start = fl + 1;
    }
  }
  if (!r.registry && !(r.registry = strdup("docker.io"))) goto oom;
  size_t rl = repo_end - repo_start;
  const char *repo = s + repo_start;
  if (rl == 0 || rl > MAX_NAME) {
    rc = cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "bad repository name in '%s' (%s)", s,
                      rl ? "longer than 255 bytes" : "empty");
    goto fail;
  }
  for (size_t i = 0; i < rl;) {
    const char *e = memchr(repo + i, '/', rl - i);
    size_t cl = e ? (size_t)(e - repo) - i : rl - i;
    if (!component_valid(repo + i, cl)) {
      rc = cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "bad repository name '%.*s' in '%s' (lowercase letters, digits and "
                        "separators . _ __ - between them, components split by /)",
                        (int)rl, repo, s);
      goto fail;
    }
    i += cl + 1;
    if (e && i >= rl) { /* trailing '/' */
      rc = cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "bad repository name in '%s'", s);
      goto fail;
    }
  }
  bool docker_hub = !strcmp(r.registry, "docker.io") || !strcmp(r.registry, "index.docker.io");
  if (docker_hub && !memchr(repo, '/', rl)) {
    if (asprintf(&r.repository, "library/%.*s", (int)rl, repo) < 0) {
      r.repository = NULL;
      goto oom;
    }
  } else if (!(r.repository = strndup(repo, rl))) {
    goto oom;
  }
  if (docker_hub && strcmp(r.registry, "docker.io")) {
    free(r.registry);
    if (!(r.registry = strdup("docker.io"))) goto oom;
  }
  if (strlen(r.registry) + 1 + strlen(r.repository) > MAX_NAME) {
    rc = cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                      "image name '%s/%.40s...' is longer than 255 bytes", r.registry,
                      r.repository);
    goto fail;
  }
  if (!r.tag && !r.digest && !(r.tag = strdup("latest"))) goto oom;
  *ret = r;
  return 0;
oom:
  rc = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "parsing an image reference");
fail:
  image_reference_clear(&r);
  return rc;
}

char *image_reference_format(const image_reference *r) {
  char *s = NULL;
  if (asprintf(&s, "%s/%s%s%s%s%s", r->registry, r->repository, r->tag ? ":" : "",
               r->tag ? r->tag : "", r->digest ? "@" : "", r->digest ? r->digest : "") < 0)
    return NULL;
  return s;
}

char *image_reference_name(const image_reference *r) {
  char *s = NULL;
  if (asprintf(&s, "%s/%s", r->registry, r->repository) < 0) return NULL;
  return s;
}

const char *image_reference_api_host(const image_reference *r) {
  return !strcmp(r->registry, "docker.io") ? "registry-1.docker.io" : r->registry;
}

int image_registry_is_loopback(const char *host) {
  if (!host) return 0;
  size_t n = strlen(host);
  /* strip :port */
  if (host[0] == '[') {
    const char *close = strchr(host, ']');
    if (!close) return 0;
    return (size_t)(close - host) == 4 && !strncmp(host + 1, "::1", 3);
  }
  const char *colon = strchr(host, ':');
  if (colon) n = (size_t)(colon - host);
  if (n == 9 && !strncmp(host, "localhost", 9)) return 1;
  if (n < 4 || strncmp(host, "127.", 4)) return 0;
  int dots = 0;
  for (size_t i = 0; i < n; i++) {
    if (host[i] == '.') dots++;
    else if (!isdigit((unsigned char)host[i])) return 0;
  }
  return dots == 3;
}

int image_registry_insecure_allowed(const char *host) {
  if (image_registry_is_loopback(host)) return 1;
  const char *list = getenv("CLEANROOM_INSECURE_REGISTRIES");
  if (!list || !host) return 0;
  size_t hl = strlen(host);
  for (const char *p = list; *p;) {
    size_t n = strcspn(p, ", ");
    if (n == hl && !strncmp(p, host, n)) return 1;
    p += n;
    while (*p == ',' || *p == ' ') p++;
  }
  return 0;
}

/* ---- WWW-Authenticate */

void image_auth_challenge_clear(image_auth_challenge *c) {
  free(c->scheme);
  free(c->realm);
  free(c->service);
  free(c->scope);
  *c = (image_auth_challenge){0};
}

static bool is_token_char(char c) {
  return isalnum((unsigned char)c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

int image_auth_challenge_parse(const char *h, image_auth_challenge *ret, cr_error **err) {
  *ret = (image_auth_challenge){0};
  if (!h) return cr_error_set(err, CR_E_REGISTRY_PROTOCOL, 0, "no WWW-Authenticate header");
  size_t len = strnlen(h, MAX_HEADER + 1);
  if (len > MAX_HEADER)
    return cr_error_set(err, CR_E_REGISTRY_PROTOCOL, 0, "WWW-Authenticate header too long");
  image_auth_challenge c = {0};
  const char *p = h;
  while (*p == ' ' || *p == '\t') p++;
  const char *s0 = p;
  while (is_token_char(*p)) p++;
  if (p == s0) {
    return cr_error_set(err, CR_E_REGISTRY_PROTOCOL, 0, "WWW-Authenticate without a scheme");
  }
  if (!(c.scheme = strndup(s0, (size_t)(p - s0)))) goto oom;
  for (char *q = c.scheme; *q; q++) *q = (char)tolower((unsigned char)*q);
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == ',') p++;
    if (!*p) break;
    const char *k0 = p;
    while (is_token_char(*p)) p++;
    size_t kl = (size_t)(p - k0);
    while (*p == ' ' || *p == '\t') p++;
    if (kl == 0 || *p != '=') {
      /* token68 or the next challenge's scheme: stop at the first challenge */
      break;
    }
    p++;
    while (*p == ' ' || *p == '\t') p++;
    char *val = malloc(len + 1);
    if (!val) goto oom;
    size_t vl = 0;
    if (*p == '"') {
      p++;
      while (*p && *p != '"') {
        if (*p == '\\' && p[1]) p++;
        val[vl++] = *p++;
      }
      if (*p != '"') {
        free(val);
        image_auth_challenge_clear(&c);
        return cr_error_set(err, CR_E_REGISTRY_PROTOCOL, 0,
                            "WWW-Authenticate: unterminated quoted value");
      }
      p++;
    } else {
      while (is_token_char(*p) || *p == '/' || *p == ':' || *p == '=') val[vl++] = *p++;
    }
    val[vl] = '\0';
    char **slot = NULL;
    if (kl == 5 && !strncasecmp(k0, "realm", 5)) slot = &c.realm;
    else if (kl == 7 && !strncasecmp(k0, "service", 7)) slot = &c.service;
    else if (kl == 5 && !strncasecmp(k0, "scope", 5)) slot = &c.scope;
    if (slot && !*slot) *slot = val;
    else free(val);
  }
  if (!strcmp(c.scheme, "bearer") && (!c.realm || !*c.realm)) {
    image_auth_challenge_clear(&c);
    return cr_error_set(err, CR_E_REGISTRY_PROTOCOL, 0, "Bearer challenge without a realm");
  }
  *ret = c;
  return 0;
oom:
  image_auth_challenge_clear(&c);
  return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "WWW-Authenticate");
}

/* ---- manifests */

void image_manifest_clear(image_manifest *m) {
  free(m->media_type);
  free(m->config.media_type);
  for (size_t i = 0; i < m->n_layers; i++) {
    free(m->layers[i].media_type);
    if (m->platforms) free(m->platforms[i]);
  }
  free(m->layers);
  free(m->platforms);
  *m = (image_manifest){0};
}

static int parse_desc(json_t *j, image_descriptor *d, const char *what, cr_error **err) {
  const char *mt = json_string_value(json_object_get(j, "mediaType"));
  const char *dg = json_string_value(json_object_get(j, "digest"));
  json_t *sz = json_object_get(j, "size");
  if (!json_is_object(j) || !dg)
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "%s: not a descriptor", what);
  if (strncmp(dg, "sha256:", 7) || !image_is_hex(dg + 7, IMAGE_HEX_LEN))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "%s: unsupported digest '%.80s'", what, dg);
  if (sz && (!json_is_integer(sz) || json_integer_value(sz) < 0))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "%s: bad size", what);
  memcpy(d->hex, dg + 7, 65);
  d->size = sz ? json_integer_value(sz) : -1;
  if (mt && strlen(mt) > 255)
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "%s: media type too long", what);
  d->media_type = mt ? strdup(mt) : NULL;
  if (mt && !d->media_type) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "manifest");
  return 0;
}

static bool layer_type_ok(const char *mt) {
  if (!mt) return false;
  static const char *const ok[] = {
      "application/vnd.oci.image.layer.v1.tar",
      "application/vnd.oci.image.layer.v1.tar+gzip",
      "application/vnd.oci.image.layer.v1.tar+zstd",
      "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
      "application/vnd.docker.image.rootfs.diff.tar.gzip",
      "application/vnd.docker.image.rootfs.diff.tar",
      "application/vnd.docker.image.rootfs.diff.tar.zstd",
  };
  for (size_t i = 0; i < ELEMENTSOF(ok); i++)
    if (!strcmp(mt, ok[i])) return true;
  return false;
}

int image_manifest_parse(const char *body, size_t len, const char *content_type,
                         image_manifest *ret, cr_error **err) {
  *ret = (image_manifest){0};
  if (len > MAX_MANIFEST_BYTES)
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "manifest larger than 4 MiB");
  json_error_t je;
  _cleanup_json_ json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
  if (!json_is_object(j))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "manifest is not a JSON object: %s",
                        j ? "not an object" : je.text);
  json_t *sv = json_object_get(j, "schemaVersion");
  if (json_integer_value(sv) == 1)
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0,
                        "Docker schema 1 manifests are not supported (push the image again "
                        "with a current client)");
  if (json_integer_value(sv) != 2)
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "manifest schemaVersion is not 2");
  const char *mt = json_string_value(json_object_get(j, "mediaType"));
  /* The Content-Type names the type; a body that says otherwise is refused. */
  char ct[256] = "";
  if (content_type) {
    size_t n = strcspn(content_type, ";");
    while (n && content_type[n - 1] == ' ') n--;
    if (n < sizeof(ct)) snprintf(ct, sizeof(ct), "%.*s", (int)n, content_type);
  }
  bool ct_known = !strcmp(ct, IMAGE_MT_OCI_INDEX) || !strcmp(ct, IMAGE_MT_OCI_MANIFEST) ||
                  !strcmp(ct, IMAGE_MT_DOCKER_LIST) || !strcmp(ct, IMAGE_MT_DOCKER_MANIFEST);
  if (mt && ct_known && strcmp(mt, ct))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0,
                        "manifest says mediaType %.100s but was served as %s", mt, ct);
  const char *type = mt ? mt : ct_known ? ct : NULL;
  if (!type) /* OCI allows omitting mediaType: decide by shape */
    type = json_object_get(j, "manifests") ? IMAGE_MT_OCI_INDEX : IMAGE_MT_OCI_MANIFEST;
  image_manifest m = {0};
  int r = 0;
  m.is_index = !strcmp(type, IMAGE_MT_OCI_INDEX) || !strcmp(type, IMAGE_MT_DOCKER_LIST);
  if (!m.is_index && strcmp(type, IMAGE_MT_OCI_MANIFEST) && strcmp(type, IMAGE_MT_DOCKER_MANIFEST))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "unsupported manifest media type %.100s",
                        type);
  if (!(m.media_type = strdup(type))) goto oom;
  json_t *arr = json_object_get(j, m.is_index ? "manifests" : "layers");
  if (!json_is_array(arr)) {
    r = cr_error_set(err, CR_E_IMAGE_INVALID, 0, "%s without %s",
                     m.is_index ? "index" : "manifest", m.is_index ? "manifests" : "layers");
    goto fail;
  }
  size_t n = json_array_size(arr);
  if (n > image_limits_get()->max_layers || (m.is_index && n > 1024)) {
    r = cr_error_set(err, CR_E_IMAGE_INVALID, 0, "too many %s (%zu)",
                     m.is_index ? "index entries" : "layers", n);
    goto fail;
  }
  if (!m.is_index) {
    r = parse_desc(json_object_get(j, "config"), &m.config, "config", err);
    if (r < 0) goto fail;
  }
  m.layers = calloc(n ? n : 1, sizeof(*m.layers));
  m.platforms = m.is_index ? calloc(n ? n : 1, sizeof(char *)) : NULL;
  if (!m.layers || (m.is_index && !m.platforms)) goto oom;
  for (size_t i = 0; i < n; i++) {
    json_t *d = json_array_get(arr, i);
    char what[48];
    snprintf(what, sizeof(what), "%s %zu", m.is_index ? "index entry" : "layer", i + 1);
    r = parse_desc(d, &m.layers[i], what, err);
    m.n_layers = i + 1;
    if (r < 0) goto fail;
    if (!m.is_index && !layer_type_ok(m.layers[i].media_type)) {
      r = cr_error_set(err, CR_E_IMAGE_INVALID, 0, "layer %zu has unsupported media type %.100s",
                       i + 1, m.layers[i].media_type ? m.layers[i].media_type : "(none)");
      goto fail;
    }
    if (m.is_index) {
      json_t *p = json_object_get(d, "platform");
      const char *os = json_string_value(json_object_get(p, "os"));
      const char *arch = json_string_value(json_object_get(p, "architecture"));
      const char *var = json_string_value(json_object_get(p, "variant"));
      if (os && arch && strlen(os) < 64 && strlen(arch) < 64 && (!var || strlen(var) < 64) &&
          asprintf(&m.platforms[i], "%s/%s%s%s", os, arch, var ? "/" : "", var ? var : "") < 0)
        m.platforms[i] = NULL;
    }
  }
  *ret = m;
  return 0;
oom:
  r = cr_error_set(err, CR_E_INTERNAL, ENOMEM, "manifest");
fail:
  image_manifest_clear(&m);
  return r;
}

ssize_t image_manifest_pick_platform(const image_manifest *index, const char *platform) {
  if (!index->is_index || !platform) return -1;
  size_t pl = strlen(platform);
  bool with_variant = strchr(platform, '/') != strrchr(platform, '/');
  for (size_t i = 0; i < index->n_layers; i++) {
    const char *p = index->platforms[i];
    if (!p) continue;
    if (with_variant ? !strcmp(p, platform)
                     : (!strncmp(p, platform, pl) && (p[pl] == '\0' || p[pl] == '/')))
      return (ssize_t)i;
  }
  return -1;
}

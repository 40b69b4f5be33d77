/* Images from OCI/Docker registries (distribution spec v2): reference
 * parsing, credentials from the host, resolve (tag -> digest) and pull into
 * the local image store (docs/images.md, "Registries").
 *
 * Everything here is blocking (libcurl): the daemon runs pulls on a worker
 * thread. Credentials are read on the host only and never reach a guest. */
#pragma once
#include "image/image.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- references: [registry/]repository[:tag][@sha256:<hex>] */

typedef struct image_reference {
  char *registry;   /* "docker.io", "ghcr.io", "127.0.0.1:5000" */
  char *repository; /* "library/busybox", "buildkite/cleanroom-base/alpine" */
  char *tag;        /* "latest" when neither tag nor digest was given; may be NULL */
  char *digest;     /* "sha256:<hex>" or NULL */
} image_reference;

void image_reference_clear(image_reference *r);
/* Parses a reference the way docker does: a first component with '.' or ':'
 * or "localhost" names the registry, else docker.io (and a single-component
 * name gets "library/"). Repository components are lowercase [a-z0-9] with
 * '.', '_', '__' or '-'+ separators; tags [A-Za-z0-9_][A-Za-z0-9_.-]{0,127};
 * digests sha256:<64 hex>; at most 255 bytes of name. Error: invalid_argument
 * saying what is wrong. */
int image_reference_parse(const char *s, image_reference *ret, cr_error **err);
/* "registry/repository[:tag][@digest]" (new string, NULL on OOM). */
char *image_reference_format(const image_reference *r);
/* "registry/repository" (new string). */
char *image_reference_name(const image_reference *r);
/* The host the API is served from ("registry-1.docker.io" for docker.io). */
const char *image_reference_api_host(const image_reference *r);
/* 1 when host[:port] is a loopback name or address (localhost, 127/8, ::1). */
int image_registry_is_loopback(const char *host);

/* ---- WWW-Authenticate: Bearer realm="...",service="...",scope="..." */

typedef struct image_auth_challenge {
  char *scheme; /* "bearer" or "basic" (lowercased) */
  char *realm;
  char *service;
  char *scope;
} image_auth_challenge;
void image_auth_challenge_clear(image_auth_challenge *c);
/* Parses the first challenge of a header value (bounded, 8 KiB). Unknown
 * parameters are ignored. Error: registry_protocol_error. */
int image_auth_challenge_parse(const char *header, image_auth_challenge *ret, cr_error **err);

/* ---- credentials (host only) */

typedef struct image_credentials {
  char *username;
  char *password; /* or an identity token when username is "<token>" */
} image_credentials;
void image_credentials_clear(image_credentials *c);
/* Looks up credentials for registry (e.g. "ghcr.io", "docker.io") in
 * auth_file (a docker config.json style file: {"auths":{host:{"auth":
 * base64(user:pass)}}, "credHelpers":{host:name}, "credsStore":name}),
 * or, when auth_file is NULL, $DOCKER_CONFIG/config.json, then
 * ~/.docker/config.json. A credential helper runs as
 * docker-credential-NAME get. Returns 1 with *ret filled, 0 when there are
 * none, < 0 on error (an unreadable or malformed auth_file). */
int image_credentials_lookup(const char *registry, const char *auth_file,
                             image_credentials *ret, cr_error **err);

/* ---- manifests */

/* Media types understood. */
#define IMAGE_MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define IMAGE_MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define IMAGE_MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define IMAGE_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"

typedef struct image_descriptor {
  char *media_type;
  char hex[65];
  int64_t size;
} image_descriptor;

/* A parsed manifest or index (bounded, validated; for the fuzzer too). */
typedef struct image_manifest {
  bool is_index;
  char *media_type;
  image_descriptor config;  /* manifests */
  image_descriptor *layers; /* manifests: layers; indexes: the entries */
  char **platforms;         /* indexes: "os/arch[/variant]" or NULL per entry */
  size_t n_layers;
} image_manifest;
void image_manifest_clear(image_manifest *m);
/* content_type: the response's Content-Type (may be NULL: then the body's
 * mediaType decides). Rejects schema 1, unknown media types, bad digests,
 * negative sizes and more than the layer limit. Error: image_invalid. */
int image_manifest_parse(const char *body, size_t len, const char *content_type,
                         image_manifest *ret, cr_error **err);
/* Index entry for os/arch (variant ignored unless given as "os/arch/v"):
 * its position, or -1. */
ssize_t image_manifest_pick_platform(const image_manifest *index, const char *platform);

/* ---- resolve and pull */

typedef struct image_pull_opts {
  const char *auth_file;               /* NULL: the docker config lookup above */
  const image_credentials *creds;      /* overrides the lookup when non-NULL */
  const char *platform;                /* NULL: "linux/amd64" */
  unsigned parallel;                   /* layer downloads at once; 0: 4 */
} image_pull_opts;

/* Progress of a pull: phase is "resolving", "downloading", "extracting
 * layer i/n", "formatting ext4", "done"; done/total are bytes (download phase:
 * over all layers still to fetch). */
typedef struct image_pull_stats {
  uint64_t downloaded;   /* bytes fetched from the registry in this pull */
  uint64_t resumed;      /* bytes of partial blobs that were kept */
  unsigned blobs_cached; /* layers already in the blob cache */
  unsigned blobs_fetched;
  bool already_stored;   /* the image digest was in the store: nothing pulled */
} image_pull_stats;

/* Asks the registry for ref's digest: the digest of the manifest (or index)
 * the tag names, as `skopeo inspect` reports it. A ref with a digest is
 * checked to exist. *ret_digest: "sha256:<hex>". */
int image_registry_resolve(const char *ref, const image_pull_opts *opts, char **ret_digest,
                           cr_error **err);

/* Pulls ref into the store (an index is resolved to opts->platform); refs
 * stored: the canonical "registry/repo:tag" and "registry/repo@<digest>"
 * (the digest the tag resolved to). Layers are kept in images/blobs/ and
 * shared. Pulling an image whose digest is stored downloads only manifests. */
int image_pull(const char *ref, const image_pull_opts *opts, image_progress_fn progress,
               void *userdata, image_info **ret, image_pull_stats *ret_stats, cr_error **err);

/* Whether plain HTTP may be used for host[:port]: loopback, or listed in
 * $CLEANROOM_INSECURE_REGISTRIES (comma-separated host[:port]). */
int image_registry_insecure_allowed(const char *host);

/* The local image store: OCI images, docker-save archives and rootfs tars
 * materialized into ext4 root filesystems (docs/images.md).
 *
 * Layout under the data dir (cr_data_dir()):
 *   images/<hex>/rootfs.ext4   the image's root filesystem (read-only use)
 *   images/<hex>/meta.json     {digest, refs, source_format, size, ...}
 *   images/refs.json           {"version":1,"refs":{"<ref>":"sha256:<hex>"}}
 *   images/.tmp-XXXXXX/        an import in progress (removed on failure)
 *   images/.lock               flock(2) serializing ref/meta updates
 *
 * All functions return >= 0 on success and < 0 with *err set. Blocking:
 * import extracts and runs mkfs.ext4; call it from a worker, not a loop. */
#pragma once
#include "image/ref.h" /* IMAGE_DEFAULT_REF */
#include "util/error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct image_info {
  char *digest;        /* "sha256:<64 hex>" */
  char **refs;         /* n_refs names, sorted */
  size_t n_refs;
  char *dir;           /* absolute images/<hex> */
  char *rootfs;        /* absolute images/<hex>/rootfs.ext4 */
  uint64_t size;       /* apparent size of rootfs.ext4 in bytes */
  uint64_t content_size; /* bytes used by the extracted tree */
  char *source_format; /* "rootfs-tar", "oci-layout", "docker-archive", "registry" */
  char *imported_from; /* the path given to import, or the ref pulled */
  char *created_at;    /* RFC 3339 UTC */
  char *platform;      /* "linux/amd64" for pulled images, else NULL */
  int64_t created;     /* unix seconds */
} image_info;

void image_info_free(image_info *info);
static inline void image_info_freep(image_info **p) { image_info_free(*p); *p = NULL; }
#define _cleanup_image_info_ _cleanup_(image_info_freep)
void image_info_list_free(image_info **list, size_t n);
/* {"digest","refs":[...],"rootfs","size","content_size","source_format",
 *  "imported_from","created_at","platform"?}; NULL on OOM. */
json_t *image_info_to_json(const image_info *info);

/* Progress: phase is e.g. "hashing", "extracting layer 2/5",
 * "formatting ext4", "done"; done/total are bytes (total 0 when unknown). */
typedef void (*image_progress_fn)(const char *phase, uint64_t done,
                                  uint64_t total, void *userdata);

/* Imports a rootfs tar (plain, gz, zstd, xz, bzip2), an OCI image layout
 * (directory or tar) or a `docker save` tar. ref may be NULL (then the
 * archive's own name is used if it has one). Importing a digest that is
 * already stored only adds the ref. *ret may be NULL. */
int image_import(const char *path, const char *ref, image_progress_fn progress,
                 void *userdata, image_info **ret, cr_error **err);

/* image_import() of what fd refers to (a file or a directory, opened by
 * someone else: the daemon imports what a client opened and passed over
 * its socket, so the client's right to read it is what counts). shown_path
 * (the client's path) is recorded as imported_from and named in errors.
 * fd stays the caller's. */
int image_import_fd(int fd, const char *shown_path, const char *ref, image_progress_fn progress,
                    void *userdata, image_info **ret, cr_error **err);

/* ref_or_digest: a ref ("name:tag"; a bare "name" also tries "name:latest"),
 * "sha256:<hex>", or a unique hex prefix of >= 12 characters. */
int image_lookup(const char *ref_or_digest, image_info **ret, cr_error **err);

/* All stored images, newest first. */
int image_list(image_info ***ret, size_t *ret_n, cr_error **err);

enum {
  /* Given a digest (or prefix) of an image that still has refs: drop the
   * refs and remove it anyway. */
  IMAGE_REMOVE_FORCE = 1 << 0,
};
/* Given a ref: removes the ref, and the image's files when no ref is left.
 * Given a digest: removes the image when it has no refs (or with FORCE).
 * *ret_removed_digest (optional) is set when the files were removed. */
int image_remove(const char *ref_or_digest, unsigned flags,
                 char **ret_removed_digest, cr_error **err);

/* 1 when s is a valid ref to store ("name[:tag]", [A-Za-z0-9._/:@-],
 * 1..255 chars, not starting with "sha256:" or '.'/'-'), else 0. */
int image_ref_valid(const char *s);

/* ---- Safety checks on archive entries (exposed for tests and fuzzing). */

/* Limits on untrusted archives. */
typedef struct image_limits {
  uint64_t max_entries;     /* entries over all layers */
  uint64_t max_total_bytes; /* uncompressed bytes over all layers */
  size_t max_path;          /* bytes of an entry name or link target */
  size_t max_component;     /* bytes of one path component */
  size_t max_layers;
} image_limits;
/* The current limits; tests may change them (process-wide, not thread-safe). */
image_limits *image_limits_get(void);

/* Normalizes an entry name: strips leading '/', drops empty and "."
 * components; rejects ".." components, over-long names/components and
 * embedded control bytes < 0x20 are kept (Linux allows them) but NUL cannot
 * occur. *ret is "" for the root. Error: image_unsafe_path naming the entry. */
int image_path_sanitize(const char *name, char **ret, cr_error **err);

/* Reads an archive from memory and validates every entry (names, link
 * targets, types, counts, sizes) without extracting anything. */
int image_archive_check(const void *data, size_t size, cr_error **err);

/* Internal to src/image: shared between the import, extract and store files. */
#pragma once
#include "image/image.h"

#include <stdint.h>

#define IMAGE_HEX_LEN 64

/* One extraction target: the staging root and running totals over layers. */
typedef struct image_extract {
  char *root;    /* realpath of the staging dir (no trailing '/') */
  int root_fd;   /* O_DIRECTORY fd of root */
  uint64_t entries;
  uint64_t bytes;
  image_progress_fn progress;
  void *userdata;
} image_extract;

/* Opens the staging root (must exist). */
int image_extract_init(image_extract *x, const char *root, image_progress_fn progress,
                       void *userdata, cr_error **err);
void image_extract_done(image_extract *x);
/* Applies one layer archive (any compression libarchive detects).
 * apply_whiteouts: first delete what the layer's whiteouts name (lower
 * layers), then extract the rest. phase names the layer for progress.
 * expect_hex (may be NULL): the sha256 the file must have; it is computed
 * over the bytes actually extracted. */
int image_extract_layer(image_extract *x, const char *archive_path, const char *expect_hex,
                        bool apply_whiteouts, const char *phase, cr_error **err);

/* A tar reader with the in-library decompressors only (gzip, bzip2, xz,
 * lzma, zstd, lz4): libarchive's "all" would also run external programs
 * (lrzip, grzip, ...) on untrusted input. NULL on OOM. */
struct archive *image_archive_reader(void);

/* Extracts an outer OCI/docker tar (regular files, dirs, symlinks only)
 * into dir, with the same path checks. */
int image_extract_outer(const char *archive_path, const char *dir, cr_error **err);

/* Resolves rel (a name from a manifest) inside dir without leaving it;
 * returns a newly allocated real path. */
int image_resolve_inside(const char *dir, const char *rel, char **ret, cr_error **err);

/* Store helpers (image-store.c). */
char *image_store_dir(void);  /* absolute <data>/images, created; NULL on error */
int image_store_lock(const char *store, cr_error **err); /* returns fd */
/* Adds ref -> digest (moving it from another image if needed). Caller
 * holds the lock. ref may be NULL (no-op). */
int image_store_add_ref(const char *store, const char *hex, const char *ref,
                        cr_error **err);
int image_store_load(const char *store, const char *hex, image_info **ret,
                     cr_error **err);
/* Writes meta.json into dir. */
int image_store_write_meta(const char *dir, const image_info *info, cr_error **err);
/* 1 when s is 64 lowercase hex. */
int image_is_hex(const char *s, size_t len);

/* What a pull adds to an import of the OCI layout it built (image-pull.c). */
typedef struct image_import_extra {
  const char *source_format; /* overrides the detected one */
  const char *imported_from; /* overrides the path */
  const char *platform;
  const char *extra_ref;     /* a second ref to add (name@digest) */
} image_import_extra;
int image_import_ex(const char *path, const char *ref, const image_import_extra *extra,
                    image_progress_fn progress, void *userdata, image_info **ret,
                    cr_error **err);
/* Under the store lock: when hex is stored, adds ref (may be NULL) and
 * returns 1; 0 when it is not stored. */
int image_store_try_existing(const char *store, const char *hex, const char *ref,
                             cr_error **err);

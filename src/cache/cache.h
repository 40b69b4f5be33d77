/* Content cache (docs/gateway.md): immutable content the gateway fetched,
 * keyed by what identifies it (the route's key, e.g. sha256 of an
 * upload-pack request for a set of commit ids), stored once by the sha256 of
 * its bytes. An interface (cache_ops) with the local directory as its first
 * implementation; an S3-compatible store can sit behind the same calls.
 *
 * Local layout under the directory (default <data>/content-cache):
 *   entries/<key>.json  {key, digest, size, kind, source, created, last_used[, meta]}
 *   blobs/<digest>      the bytes (sha256 checked on every read)
 *   stats.json          {hits, misses, stores, evictions}
 *   lock                flock(2): the daemon and `cleanroom cache` share it
 * Size limit: after a store, the least recently used entries go until the
 * blobs fit max_bytes. Calls are blocking file I/O: the daemon makes them
 * off its loop (the gateway's upstream threads). Thread-safe. */
#pragma once
#include "util/error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cache cache;

typedef struct cache_ops {
  const char *name; /* "local" */
  /* 1 hit (*data, *len: new buffer), 0 miss; counts hits and misses. */
  int (*get)(cache *c, const char *key, uint8_t **data, size_t *len, cr_error **err);
  int (*put)(cache *c, const char *key, const char *kind, const char *source,
             const uint8_t *data, size_t len, cr_error **err);
  /* An entry's metadata (a JSON object kept beside it: the gateway's
   * validators and the time it last asked the upstream): 1 with *meta (a
   * new reference), 0 when the entry or its metadata is missing. */
  int (*meta_get)(cache *c, const char *key, json_t **meta, cr_error **err);
  /* Replaces an existing entry's metadata (the bytes stay); 0 when there
   * is no such entry. */
  int (*meta_set)(cache *c, const char *key, json_t *meta, cr_error **err);
  /* {entries: [...], newest use first} */
  json_t *(*list)(cache *c);
  /* Removes least recently used entries until at most keep_bytes remain
   * (0: everything); *removed entries. */
  int (*prune)(cache *c, uint64_t keep_bytes, size_t *removed, cr_error **err);
  /* {backend, dir, entries, bytes, max_bytes, hits, misses, stores, evictions} */
  json_t *(*stats)(cache *c);
  void (*close)(cache *c);
} cache_ops;

/* The cache's directory: CLEANROOM_CACHE_DIR, else <data>/content-cache
 * (a new string; NULL when there is no data directory). */
char *cache_default_dir(void);
/* dir NULL: cache_default_dir(). max_bytes 0: CLEANROOM_CACHE_MAX_BYTES,
 * else 10 GiB. Creates the directory (0700). */
int cache_open_local(const char *dir, uint64_t max_bytes, cache **ret, cr_error **err);

int cache_get(cache *c, const char *key, uint8_t **data, size_t *len, cr_error **err);
int cache_put(cache *c, const char *key, const char *kind, const char *source,
              const uint8_t *data, size_t len, cr_error **err);
int cache_meta_get(cache *c, const char *key, json_t **meta, cr_error **err);
int cache_meta_set(cache *c, const char *key, json_t *meta, cr_error **err);
json_t *cache_list(cache *c);
int cache_prune(cache *c, uint64_t keep_bytes, size_t *removed, cr_error **err);
json_t *cache_stats(cache *c);
void cache_close(cache *c);

/* A key is 64 lowercase hex characters (a sha256). */
bool cache_key_valid(const char *key);

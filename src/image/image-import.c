/* image import: rootfs tars, OCI image layouts (dir or tar) and docker-save
 * tars become images/<hex>/rootfs.ext4. Everything is built in
 * images/.tmp-XXXXXX and renamed into place at the end; every failure path
 * removes the temp dir. */
#include "image/image-internal.h"
#include "util/fs.h"
#include "util/macro.h"
#include "util/spawn.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <ftw.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_MANIFEST (4u << 20)
#define MAX_INDEX_DEPTH 4
#define MIB (1ULL << 20)

enum source_kind { SRC_ROOTFS, SRC_OCI, SRC_DOCKER };

static const char *kind_name(enum source_kind k) {
  return k == SRC_OCI ? "oci-layout" : k == SRC_DOCKER ? "docker-archive" : "rootfs-tar";
}

typedef struct import_plan {
  enum source_kind kind;
  char hex[65];       /* the image digest */
  char **layers;      /* absolute paths, in order */
  char **layer_hex;   /* expected sha256 of each, or NULL (docker-save) */
  size_t n_layers;
  char *default_ref;  /* from the archive, may be NULL */
} import_plan;

static void plan_clear(import_plan *p) {
  for (size_t i = 0; i < p->n_layers; i++) {
    free(p->layers[i]);
    free(p->layer_hex[i]);
  }
  free(p->layers);
  free(p->layer_hex);
  free(p->default_ref);
  *p = (import_plan){0};
}

/* Takes path; copies hex (may be NULL). */
static int plan_add_layer(import_plan *p, char *path, const char *hex) {
  char *h = hex ? strdup(hex) : NULL;
  if (p->n_layers >= image_limits_get()->max_layers || (hex && !h)) {
    free(path);
    free(h);
    return hex && !h ? -ENOMEM : -E2BIG;
  }
  char **nl = realloc(p->layers, (p->n_layers + 1) * sizeof(char *));
  if (nl) p->layers = nl;
  char **nh = nl ? realloc(p->layer_hex, (p->n_layers + 1) * sizeof(char *)) : NULL;
  if (nh) p->layer_hex = nh;
  if (!nl || !nh) {
    free(path);
    free(h);
    return -ENOMEM;
  }
  p->layers[p->n_layers] = path;
  p->layer_hex[p->n_layers++] = h;
  return 0;
}

static void progress(image_progress_fn fn, void *ud, const char *phase, uint64_t done,
                     uint64_t total) {
  if (fn) fn(phase, done, total, ud);
}

/* ---- detecting what a tar is */

/* Whether a (sanitized) name can belong to an OCI layout or a docker-save
 * archive; a rootfs tar fails this at its first real file. */
static bool is_layout_name(char *name, bool is_dir, bool *oci, bool *index, bool *manifest) {
  char *slash = strchr(name, '/');
  if (!slash) {
    if (!strcmp(name, "oci-layout")) return (*oci = true);
    if (!strcmp(name, "index.json")) return (*index = true);
    if (!strcmp(name, "manifest.json")) return (*manifest = true);
    size_t n = strlen(name);
    return is_dir || !strcmp(name, "repositories") ||
           (n > 5 && !strcmp(name + n - 5, ".json"));
  }
  if (!strncmp(name, "blobs/", 6)) return true;
  const char *rest = slash + 1;
  return !strchr(rest, '/') &&
         (!strcmp(rest, "layer.tar") || !strcmp(rest, "json") || !strcmp(rest, "VERSION"));
}

static int detect_tar(const char *path, enum source_kind *ret, cr_error **err) {
  struct archive *a = image_archive_reader();
  if (!a) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "archive_read_new");
  int r = 0;
  if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK) {
    r = cr_error_set(err, CR_E_IMAGE_INVALID, 0, "'%s' is not a tar archive: %s", path,
                     archive_error_string(a));
    goto out;
  }
  bool oci = false, index = false, manifest = false, other = false;
  size_t seen = 0;
  for (;;) {
    struct archive_entry *e;
    int q = archive_read_next_header(a, &e);
    if (q == ARCHIVE_EOF) break;
    if (q < ARCHIVE_WARN) {
      r = cr_error_set(err, CR_E_IMAGE_INVALID, 0, "reading '%s': %s", path,
                       archive_error_string(a));
      goto out;
    }
    if (++seen == 1 && !archive_entry_pathname(e)) break;
    _cleanup_free_ char *clean = NULL;
    cr_error *e2 = NULL;
    if (image_path_sanitize(archive_entry_pathname(e), &clean, &e2) < 0) {
      cr_error_free(e2);
      other = true; /* the extractor reports it properly */
      break;
    }
    if (!clean[0]) continue;
    if (!is_layout_name(clean, archive_entry_filetype(e) == AE_IFDIR, &oci, &index,
                        &manifest)) {
      other = true;
      break;
    }
  }
  *ret = !other && oci && index ? SRC_OCI : !other && manifest ? SRC_DOCKER : SRC_ROOTFS;
out:
  archive_read_free(a);
  return r;
}

/* ---- OCI layout */

static int parse_digest(json_t *desc, char ret_hex[65], cr_error **err) {
  const char *d = json_string_value(json_object_get(desc, "digest"));
  if (!d || strncmp(d, "sha256:", 7) || !image_is_hex(d + 7, IMAGE_HEX_LEN))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "unsupported or malformed digest '%s'",
                        d ? d : "(none)");
  memcpy(ret_hex, d + 7, 65);
  return 0;
}

/* Reads blobs/sha256/<hex> of a layout dir, checking its digest. */
static int read_blob(const char *dir, const char *hex, json_t **ret, char **ret_raw,
                     cr_error **err) {
  _cleanup_free_ char *rel = NULL, *path = NULL, *buf = NULL;
  if (asprintf(&rel, "blobs/sha256/%s", hex) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "blob");
  int r = image_resolve_inside(dir, rel, &path, err);
  if (r < 0) return r;
  size_t len = 0;
  r = cr_read_file(path, MAX_MANIFEST, &buf, &len);
  if (r < 0) return cr_error_set(err, CR_E_IMAGE_INVALID, -r, "reading blob sha256:%s", hex);
  char got[65];
  cr_sha256_hex(buf, len, got);
  if (strcmp(got, hex))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "blob sha256:%s has digest sha256:%s",
                        hex, got);
  json_error_t je;
  json_t *j = json_loadb(buf, len, 0, &je);
  if (!json_is_object(j)) {
    json_decref(j);
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "blob sha256:%s is not a JSON object: %s",
                        hex, je.text);
  }
  *ret = j;
  if (ret_raw) *ret_raw = TAKE_PTR(buf);
  return 0;
}

static bool is_index_type(const char *mt) {
  return mt && (!strcmp(mt, "application/vnd.oci.image.index.v1+json") ||
                !strcmp(mt, "application/vnd.docker.distribution.manifest.list.v2+json"));
}

static bool platform_is(json_t *desc, const char *os, const char *arch) {
  json_t *p = json_object_get(desc, "platform");
  const char *o = json_string_value(json_object_get(p, "os"));
  const char *a = json_string_value(json_object_get(p, "architecture"));
  return o && a && !strcmp(o, os) && !strcmp(a, arch);
}

static void take_default_ref(import_plan *plan, json_t *desc) {
  json_t *ann = json_object_get(desc, "annotations");
  const char *n = json_string_value(json_object_get(ann, "io.containerd.image.name"));
  if (!n) {
    n = json_string_value(json_object_get(ann, "org.opencontainers.image.ref.name"));
    if (n && !strchr(n, ':') && !strchr(n, '/')) n = NULL; /* a bare tag */
  }
  if (n && image_ref_valid(n) && !plan->default_ref) plan->default_ref = strdup(n);
}

/* Picks the manifest descriptor out of an index (recursing into nested
 * indexes), fills plan->hex with the manifest digest. */
/* Whether an index entry carries the name ref (full name, or its tag in
 * org.opencontainers.image.ref.name, as umoci and `docker save` write). */
static bool desc_named(json_t *desc, const char *ref) {
  if (!ref) return false;
  json_t *ann = json_object_get(desc, "annotations");
  const char *full = json_string_value(json_object_get(ann, "io.containerd.image.name"));
  const char *name = json_string_value(json_object_get(ann, "org.opencontainers.image.ref.name"));
  const char *slash = strrchr(ref, '/');
  const char *tag = strrchr(slash ? slash : ref, ':');
  return (full && !strcmp(full, ref)) ||
         (name && (!strcmp(name, ref) || (tag && !strcmp(name, tag + 1))));
}

/* Picks the manifest descriptor out of an index (recursing into nested
 * indexes), fills plan->hex with the manifest digest. With several
 * entries: those named like ref first, then linux/amd64. */
static int oci_pick(const char *dir, json_t *index, const char *ref, int depth,
                    import_plan *plan, cr_error **err) {
  json_t *ms = json_object_get(index, "manifests");
  size_t n = json_array_size(ms);
  if (!n) return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "image index lists no manifests");
  json_t *pick = NULL;
  if (n == 1) {
    pick = json_array_get(ms, 0);
  } else {
    size_t i;
    json_t *d;
    json_t *named = NULL;
    json_array_foreach(ms, i, d) if (desc_named(d, ref)) {
      if (!named) named = d;
      if (!pick && platform_is(d, "linux", "amd64")) pick = d;
    }
    if (!pick) pick = named;
    if (!pick) json_array_foreach(ms, i, d) if (platform_is(d, "linux", "amd64")) {
      pick = d;
      break;
    }
    if (!pick) {
      char names[512] = "";
      size_t used = 0;
      json_array_foreach(ms, i, d) {
        const char *nm = json_string_value(json_object_get(
            json_object_get(d, "annotations"), "org.opencontainers.image.ref.name"));
        if (!nm || used >= sizeof(names) - 1) continue;
        int w = snprintf(names + used, sizeof(names) - used, "%s%s", used ? ", " : "", nm);
        if (w > 0) used = MIN(sizeof(names) - 1, used + (size_t)w);
      }
      return cr_error_set(err, CR_E_IMAGE_INVALID, 0,
                          "image index has %zu manifests, none for linux/amd64%s%s%s", n,
                          used ? "; pick one by name with --ref NAME:TAG (tags: " : "",
                          names, used ? ")" : "");
    }
  }
  if (!json_is_object(pick)) return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "bad descriptor");
  take_default_ref(plan, pick);
  char hex[65];
  int r = parse_digest(pick, hex, err);
  if (r < 0) return r;
  if (is_index_type(json_string_value(json_object_get(pick, "mediaType")))) {
    if (depth >= MAX_INDEX_DEPTH)
      return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "image indexes nested too deeply");
    _cleanup_json_ json_t *sub = NULL;
    r = read_blob(dir, hex, &sub, NULL, err);
    if (r < 0) return r;
    return oci_pick(dir, sub, NULL, depth + 1, plan, err);
  }
  memcpy(plan->hex, hex, 65);
  return 0;
}

static int oci_plan(const char *dir, const char *ref, import_plan *plan, cr_error **err) {
  _cleanup_free_ char *ipath = NULL, *buf = NULL;
  int r = image_resolve_inside(dir, "index.json", &ipath, err);
  if (r < 0) return r;
  size_t len = 0;
  r = cr_read_file(ipath, MAX_MANIFEST, &buf, &len);
  if (r < 0) return cr_error_set(err, CR_E_IMAGE_INVALID, -r, "reading index.json");
  json_error_t je;
  _cleanup_json_ json_t *index = json_loadb(buf, len, 0, &je);
  if (!json_is_object(index))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "index.json: %s", je.text);
  r = oci_pick(dir, index, ref, 0, plan, err);
  if (r < 0) return r;
  _cleanup_json_ json_t *manifest = NULL;
  r = read_blob(dir, plan->hex, &manifest, NULL, err);
  if (r < 0) return cr_error_wrap(err, "manifest");
  if (is_index_type(json_string_value(json_object_get(manifest, "mediaType"))))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "manifest sha256:%s is an index", plan->hex);
  json_t *layers = json_object_get(manifest, "layers");
  if (!json_is_array(layers))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "manifest sha256:%s has no layers", plan->hex);
  size_t i;
  json_t *l;
  json_array_foreach(layers, i, l) {
    const char *mt = json_string_value(json_object_get(l, "mediaType"));
    if (mt && !strstr(mt, "tar"))
      return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "layer %zu has unsupported media type %s",
                          i + 1, mt);
    char hex[65];
    r = parse_digest(l, hex, err);
    if (r < 0) return cr_error_wrap(err, "layer %zu", i + 1);
    _cleanup_free_ char *rel = NULL;
    char *path = NULL;
    if (asprintf(&rel, "blobs/sha256/%s", hex) < 0)
      return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "layer");
    r = image_resolve_inside(dir, rel, &path, err);
    if (r < 0) return cr_error_wrap(err, "layer %zu", i + 1);
    /* its digest is checked while it is extracted */
    if (plan_add_layer(plan, path, hex) < 0)
      return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "too many layers");
  }
  return 0;
}

/* ---- docker save */

static int docker_plan(const char *dir, const char *ref, import_plan *plan, cr_error **err) {
  _cleanup_free_ char *mpath = NULL, *buf = NULL;
  int r = image_resolve_inside(dir, "manifest.json", &mpath, err);
  if (r < 0) return r;
  size_t len = 0;
  r = cr_read_file(mpath, MAX_MANIFEST, &buf, &len);
  if (r < 0) return cr_error_set(err, CR_E_IMAGE_INVALID, -r, "reading manifest.json");
  json_error_t je;
  _cleanup_json_ json_t *m = json_loadb(buf, len, 0, &je);
  if (!json_is_array(m) || !json_array_size(m))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "manifest.json is not a non-empty array");
  json_t *pick = NULL;
  if (json_array_size(m) == 1) {
    pick = json_array_get(m, 0);
  } else if (ref) {
    size_t i, j;
    json_t *d, *t;
    json_array_foreach(m, i, d) json_array_foreach(json_object_get(d, "RepoTags"), j, t) if (
        json_is_string(t) && !strcmp(json_string_value(t), ref)) pick = d;
  }
  if (!json_is_object(pick))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0,
                        "docker archive holds %zu images; pick one with --ref NAME:TAG "
                        "matching its RepoTags", json_array_size(m));
  const char *tag = json_string_value(json_array_get(json_object_get(pick, "RepoTags"), 0));
  if (tag && image_ref_valid(tag)) plan->default_ref = strdup(tag);
  const char *config = json_string_value(json_object_get(pick, "Config"));
  if (!config) return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "manifest.json has no Config");
  _cleanup_free_ char *cpath = NULL;
  r = image_resolve_inside(dir, config, &cpath, err);
  if (r < 0) return r;
  /* A docker-save archive has no registry manifest; the image ID (sha256 of
   * the config) is its identity. */
  r = cr_sha256_file(cpath, plan->hex);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "hashing %s", config);
  json_t *layers = json_object_get(pick, "Layers");
  if (!json_is_array(layers))
    return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "manifest.json has no Layers");
  size_t i;
  json_t *l;
  json_array_foreach(layers, i, l) {
    char *path = NULL;
    if (!json_is_string(l))
      return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "layer %zu is not a path", i + 1);
    r = image_resolve_inside(dir, json_string_value(l), &path, err);
    if (r < 0) return cr_error_wrap(err, "layer %zu", i + 1);
    if (plan_add_layer(plan, path, NULL) < 0)
      return cr_error_set(err, CR_E_IMAGE_INVALID, 0, "too many layers");
  }
  return 0;
}

/* ---- building */

static uint64_t walk_bytes, walk_inodes;
static int walk_cb(const char *p, const struct stat *st, int flag, struct FTW *f) {
  walk_bytes += (uint64_t)st->st_blocks * 512;
  walk_inodes++;
  return 0;
}

static int measure(const char *dir, uint64_t *ret_bytes, uint64_t *ret_inodes, cr_error **err) {
  /* nftw has no user pointer; imports are serialized per process by this
   * being the only user (the daemon runs imports one at a time). */
  static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&m);
  walk_bytes = walk_inodes = 0;
  int r = nftw(dir, walk_cb, 64, FTW_PHYS | FTW_MOUNT);
  *ret_bytes = walk_bytes;
  *ret_inodes = walk_inodes;
  pthread_mutex_unlock(&m);
  if (r != 0) return cr_error_set(err, CR_E_IO, errno, "measuring %s", dir);
  return 0;
}

static int make_ext4(const char *staging, const char *out, uint64_t *ret_size,
                     uint64_t *ret_content, cr_error **err) {
  uint64_t bytes = 0, inodes = 0;
  int r = measure(staging, &bytes, &inodes, err);
  if (r < 0) return r;
  uint64_t size = bytes + bytes * 3 / 10 + 256 * MIB;
  size = (size + MIB - 1) / MIB * MIB;
  uint64_t want_inodes = inodes + inodes * 3 / 10 + 16384;
  _cleanup_close_ int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return cr_error_set(err, CR_E_IO, errno, "creating %s", out);
  if (ftruncate(fd, (off_t)size) < 0) return cr_error_set(err, CR_E_IO, errno, "sizing %s", out);
  char inode_arg[32];
  snprintf(inode_arg, sizeof(inode_arg), "%llu", (unsigned long long)want_inodes);
  const char *argv[] = {"mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                        "-N", inode_arg, "-d", staging, "-L", "cleanroom-image", out, NULL};
  _cleanup_free_ char *output = NULL;
  r = cr_run((char *const *)argv, &output, 4096, err);
  if (r < 0) return cr_error_wrap(err, "formatting ext4");
  if (r != 0)
    return cr_error_set(err, CR_E_IO, 0, "mkfs.ext4 exited with %d: %s", r,
                        output && *output ? output : "(no output)");
  *ret_size = size;
  *ret_content = bytes;
  return 0;
}

static void now_rfc3339(char buf[32]) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Under the store lock: when the digest is already stored, add the ref and
 * return 1. */
int image_store_try_existing(const char *store, const char *hex, const char *ref,
                             cr_error **err) {
  _cleanup_free_ char *dir = cr_path_join(store, hex);
  _cleanup_free_ char *meta = dir ? cr_path_join(dir, "meta.json") : NULL;
  if (!meta) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "import");
  if (access(meta, F_OK) < 0) return 0;
  int r = image_store_add_ref(store, hex, ref, err);
  return r < 0 ? r : 1;
}

static int do_import(const char *store, const char *tmp, const char *path, const char *ref,
                     const image_import_extra *extra, image_progress_fn fn, void *ud,
                     char ret_hex[65], cr_error **err) {
  struct stat st;
  if (stat(path, &st) < 0) return cr_error_set(err, CR_E_FILE_NOT_FOUND, errno, "%s", path);
  _cleanup_(plan_clear) import_plan plan = {0};
  _cleanup_free_ char *src_dir = NULL;
  _cleanup_free_ char *work = cr_path_join(tmp, "archive");
  _cleanup_free_ char *rootfs = cr_path_join(tmp, "rootfs");
  _cleanup_free_ char *ext4 = cr_path_join(tmp, "rootfs.ext4");
  if (!work || !rootfs || !ext4) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "import");
  int r;
  if (S_ISDIR(st.st_mode)) {
    src_dir = strdup(path);
    if (!src_dir) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "import");
    _cleanup_free_ char *oci = cr_path_join(path, "oci-layout");
    _cleanup_free_ char *docker = cr_path_join(path, "manifest.json");
    if (!oci || !docker) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "import");
    if (access(oci, F_OK) == 0)
      plan.kind = SRC_OCI;
    else if (access(docker, F_OK) == 0)
      plan.kind = SRC_DOCKER;
    else
      return cr_error_set(err, CR_E_IMAGE_INVALID, 0,
                          "directory %s is neither an OCI image layout (no oci-layout) nor an "
                          "unpacked docker-save archive (no manifest.json)", path);
  } else if (S_ISREG(st.st_mode)) {
    progress(fn, ud, "reading archive", 0, 0);
    r = detect_tar(path, &plan.kind, err);
    if (r < 0) return r;
    if (plan.kind != SRC_ROOTFS) {
      if (mkdir(work, 0700) < 0) return cr_error_set(err, CR_E_IO, errno, "creating %s", work);
      progress(fn, ud, "unpacking archive", 0, (uint64_t)st.st_size);
      r = image_extract_outer(path, work, err);
      if (r < 0) return r;
      src_dir = strdup(work);
      if (!src_dir) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "import");
    }
  } else {
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "%s is neither a file nor a directory",
                        path);
  }

  if (plan.kind == SRC_ROOTFS) {
    progress(fn, ud, "hashing", 0, (uint64_t)st.st_size);
    r = cr_sha256_file(path, plan.hex);
    if (r < 0) return cr_error_set(err, CR_E_IO, -r, "hashing %s", path);
    char *copy = strdup(path);
    if (!copy || plan_add_layer(&plan, copy, plan.hex) < 0)
      return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "import");
  } else {
    progress(fn, ud, "reading manifest", 0, 0);
    r = plan.kind == SRC_OCI ? oci_plan(src_dir, ref, &plan, err)
                             : docker_plan(src_dir, ref, &plan, err);
    if (r < 0) return cr_error_wrap(err, "%s %s", kind_name(plan.kind), path);
  }
  const char *use_ref = ref ? ref : plan.default_ref;
  memcpy(ret_hex, plan.hex, 65);

  {
    _cleanup_close_ int lock = image_store_lock(store, err);
    if (lock < 0) return lock;
    r = image_store_try_existing(store, plan.hex, use_ref, err);
    if (r > 0 && extra && extra->extra_ref &&
        image_store_add_ref(store, plan.hex, extra->extra_ref, err) < 0)
      return -1;
    if (r != 0) return r;
  }

  if (mkdir(rootfs, 0755) < 0 || chmod(rootfs, 0755) < 0)
    return cr_error_set(err, CR_E_IO, errno, "creating %s", rootfs);
  image_extract x;
  r = image_extract_init(&x, rootfs, fn, ud, err);
  if (r < 0) return r;
  for (size_t i = 0; i < plan.n_layers; i++) {
    char phase[64];
    snprintf(phase, sizeof(phase), "extracting layer %zu/%zu", i + 1, plan.n_layers);
    r = image_extract_layer(&x, plan.layers[i], plan.layer_hex[i], i > 0, phase, err);
    if (r < 0) {
      cr_error_wrap(err, "layer %zu/%zu", i + 1, plan.n_layers);
      break;
    }
  }
  image_extract_done(&x);
  if (r < 0) return r;
  cr_rm_rf(work); /* free the space before formatting */

  progress(fn, ud, "formatting ext4", 0, 0);
  _cleanup_(image_info_freep) image_info *info = calloc(1, sizeof(*info));
  char created[32];
  now_rfc3339(created);
  if (!info || asprintf(&info->digest, "sha256:%s", plan.hex) < 0 ||
      !(info->source_format = strdup(extra && extra->source_format ? extra->source_format
                                                                   : kind_name(plan.kind))) ||
      !(info->imported_from = extra && extra->imported_from ? strdup(extra->imported_from)
                                                            : realpath(path, NULL)) ||
      !(info->created_at = strdup(created)) ||
      (extra && extra->platform && !(info->platform = strdup(extra->platform))))
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "import");
  r = make_ext4(rootfs, ext4, &info->size, &info->content_size, err);
  if (r < 0) return r;
  r = cr_rm_rf(rootfs);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "removing %s", rootfs);
  r = image_store_write_meta(tmp, info, err);
  if (r < 0) return r;

  _cleanup_close_ int lock = image_store_lock(store, err);
  if (lock < 0) return lock;
  r = image_store_try_existing(store, plan.hex, use_ref, err); /* lost a race: keep theirs */
  if (r > 0 && extra && extra->extra_ref &&
      image_store_add_ref(store, plan.hex, extra->extra_ref, err) < 0)
    return -1;
  if (r != 0) return r;
  _cleanup_free_ char *final = cr_path_join(store, plan.hex);
  if (!final) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "import");
  _cleanup_free_ char *pidf = cr_path_join(tmp, "pid");
  if (pidf) unlink(pidf);
  if (chmod(tmp, 0755) < 0 || rename(tmp, final) < 0)
    return cr_error_set(err, CR_E_IO, errno, "moving the image into %s", final);
  r = image_store_add_ref(store, plan.hex, use_ref, err);
  if (r >= 0 && extra && extra->extra_ref)
    r = image_store_add_ref(store, plan.hex, extra->extra_ref, err);
  if (r < 0) return r;
  progress(fn, ud, "done", info->size, info->size);
  return 0;
}

/* Removes leftovers of imports that died (SIGKILL, power loss): .tmp-* dirs
 * whose "pid" file names a process that is gone (or that have no pid file
 * and are older than an hour), and .tmp-rm-* dirs of interrupted removals.
 * Runs under the store lock; errors are ignored (best effort). */
static void collect_stale(const char *store) {
  _cleanup_close_ int lock = image_store_lock(store, NULL);
  if (lock < 0) return;
  DIR *d = opendir(store);
  if (!d) return;
  struct dirent *de;
  time_t now = time(NULL);
  while ((de = readdir(d))) {
    if (strncmp(de->d_name, ".tmp-", 5)) continue;
    _cleanup_free_ char *dir = cr_path_join(store, de->d_name);
    _cleanup_free_ char *pidf = dir ? cr_path_join(dir, "pid") : NULL;
    if (!pidf) break;
    bool stale = !strncmp(de->d_name, ".tmp-rm-", 8);
    if (!stale) {
      _cleanup_free_ char *buf = NULL;
      struct stat st;
      if (cr_read_file(pidf, 64, &buf, NULL) == 0) {
        char *end = NULL;
        long pid = strtol(buf, &end, 10);
        stale = end != buf && pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
      } else if (lstat(dir, &st) == 0) {
        stale = S_ISDIR(st.st_mode) && now - st.st_mtime > 3600;
      }
    }
    if (stale) cr_rm_rf(dir);
  }
  closedir(d);
}

int image_import(const char *path, const char *ref, image_progress_fn fn, void *userdata,
                 image_info **ret, cr_error **err) {
  return image_import_ex(path, ref, NULL, fn, userdata, ret, err);
}

int image_import_ex(const char *path, const char *ref, const image_import_extra *extra,
                    image_progress_fn fn, void *userdata, image_info **ret, cr_error **err) {
  if (!path || !*path) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "no image file given");
  if (ref && !image_ref_valid(ref))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "invalid image ref '%s' (want name[:tag], letters, digits, ._/:@-)", ref);
  /* "name" means "name:latest", as with docker */
  _cleanup_free_ char *full_ref = NULL;
  if (ref) {
    const char *slash = strrchr(ref, '/');
    bool tagged = strchr(slash ? slash : ref, ':') || strchr(ref, '@');
    if (asprintf(&full_ref, tagged ? "%s" : "%s:latest", ref) < 0)
      return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "import");
    ref = full_ref;
  }
  _cleanup_free_ char *store = image_store_dir();
  if (!store) return cr_error_set(err, CR_E_IO, errno, "opening the image store");
  _cleanup_free_ char *tmp = NULL;
  if (asprintf(&tmp, "%s/.tmp-XXXXXX", store) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "import");
  collect_stale(store);
  if (!mkdtemp(tmp)) return cr_error_set(err, CR_E_IO, errno, "creating %s", tmp);
  {
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    _cleanup_free_ char *pidf = cr_path_join(tmp, "pid");
    int q = pidf ? cr_write_file_atomic(pidf, pid, (size_t)n, 0600) : -ENOMEM;
    if (q < 0) {
      cr_rm_rf(tmp);
      return cr_error_set(err, CR_E_IO, -q, "creating %s/pid", tmp);
    }
  }
  char hex[65] = "";
  int r = do_import(store, tmp, path, ref, extra, fn, userdata, hex, err);
  cr_rm_rf(tmp); /* gone already after a successful rename */
  if (r < 0) return cr_error_wrap(err, "importing %s", path);
  if (!ret) return 0;
  r = image_store_load(store, hex, ret, err);
  return r < 0 ? r : 0;
}

/* Every "/proc/self/fd/N" in the message becomes shown (the daemon's path
 * for a client's descriptor means nothing to the client). */
static void rename_in_message(cr_error *e, const char *proc, const char *shown) {
  if (!e || !e->message || !strstr(e->message, proc)) return;
  size_t pl = strlen(proc), sl = strlen(shown), n = 0;
  for (const char *p = e->message; (p = strstr(p, proc)); p += pl) n++;
  char *out = malloc(strlen(e->message) + n * sl + 1), *o = out;
  if (!out) return;
  for (const char *p = e->message, *q; ; p = q + pl) {
    q = strstr(p, proc);
    size_t k = q ? (size_t)(q - p) : strlen(p);
    memcpy(o, p, k);
    o += k;
    if (!q) break;
    memcpy(o, shown, sl);
    o += sl;
  }
  *o = '\0';
  free(e->message);
  e->message = out;
}

int image_import_fd(int fd, const char *shown_path, const char *ref, image_progress_fn fn,
                    void *userdata, image_info **ret, cr_error **err) {
  if (fd < 0 || !shown_path || !*shown_path)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "no image file given");
  char proc[32];
  snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
  image_import_extra extra = {.imported_from = shown_path};
  cr_error *e = NULL;
  int r = image_import_ex(proc, ref, &extra, fn, userdata, ret, &e);
  if (r < 0) {
    rename_in_message(e, proc, shown_path);
    if (err && !*err) *err = e;
    else cr_error_free(e);
  }
  return r;
}

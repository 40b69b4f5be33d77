/* User snapshots of sandboxes: memory + devices (a full QEMU migration
 * stream) and the scratch disk (a reflink, else a sparse copy).
 *
 * Layout: <data>/snapshots/<id>/{meta.json, state/ (the backend's saved VM:
 * memory and devices), scratch.ext4}.
 * A snapshot does not belong to its sandbox: removing the sandbox keeps it.
 * Restore and fork check the files (sizes; the sha256 of every file of
 * state/, unless the file's stamp, dev/inode/size/mtime/ctime, is the one
 * recorded when it was hashed: any change through the filesystem moves its
 * ctime) before touching anything, so a damaged snapshot fails with
 * snapshot_invalid and leaves the sandbox as it was. */
#include "sandbox/sandbox-internal.h"
#include "image/image.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/paths.h"
#include "util/ulid.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

static char *snap_root(void) {
  char *d = cr_data_path("snapshots");
  if (d) cr_mkdir_p(d, 0700);
  return d;
}

static bool name_valid(const char *n) {
  size_t len = strlen(n);
  if (len == 0 || len > 64 || n[0] == '.' || n[0] == '-') return false;
  for (const char *p = n; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '.' || *p == '_' || *p == '-'))
      return false;
  return true;
}

static json_t *load_meta(const char *root, const char *id) {
  if (!cr_ulid_valid(id)) return NULL;
  _cleanup_free_ char *dir = cr_path_join(root, id);
  _cleanup_free_ char *mp = dir ? cr_path_join(dir, "meta.json") : NULL;
  json_error_t je;
  return mp ? json_load_file(mp, 0, &je) : NULL;
}

static int cmp_newest(const void *a, const void *b) {
  const char *x = json_string_value(json_object_get(*(json_t *const *)a, "id"));
  const char *y = json_string_value(json_object_get(*(json_t *const *)b, "id"));
  return strcmp(y ? y : "", x ? x : "");
}

json_t *sbx_snapshot_list(sbx_manager *m) {
  (void)m;
  json_t *arr = json_array();
  _cleanup_free_ char *root = snap_root();
  DIR *d = root ? opendir(root) : NULL;
  if (!d) return arr;
  struct dirent *de;
  size_t n = 0, cap = 0;
  json_t **v = NULL;
  while ((de = readdir(d))) {
    json_t *j = load_meta(root, de->d_name);
    if (!j) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      json_t **nv = realloc(v, cap * sizeof(*v));
      if (!nv) {
        json_decref(j);
        break;
      }
      v = nv;
    }
    v[n++] = j;
  }
  closedir(d);
  if (n) qsort(v, n, sizeof(*v), cmp_newest);
  for (size_t i = 0; i < n; i++) json_array_append_new(arr, v[i]);
  free(v);
  return arr;
}

/* By id, name or unique id prefix (>= 6 characters). */
static int find(const char *ref, json_t **ret, cr_error **err) {
  if (!ref || !*ref) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "missing snapshot id or name");
  _cleanup_json_ json_t *all = sbx_snapshot_list(NULL);
  json_t *hit = NULL;
  size_t i, nhits = 0;
  json_t *j;
  json_array_foreach(all, i, j) {
    const char *id = json_string_value(json_object_get(j, "id"));
    const char *name = json_string_value(json_object_get(j, "name"));
    if ((id && !strcmp(id, ref)) || (name && !strcmp(name, ref))) {
      *ret = json_incref(j);
      return 0;
    }
    if (id && strlen(ref) >= 6 && !strncmp(id, ref, strlen(ref))) {
      hit = j;
      nhits++;
    }
  }
  if (nhits == 1) {
    *ret = json_incref(hit);
    return 0;
  }
  if (nhits > 1)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "snapshot prefix '%s' is ambiguous", ref);
  return cr_error_set(err, CR_E_SNAPSHOT_NOT_FOUND, 0,
                      "no snapshot '%s'; list them with 'cleanroom snapshot ls'", ref);
}

int sbx_snapshot_inspect(sbx_manager *m, const char *ref, json_t **ret, cr_error **err) {
  (void)m;
  json_t *j = NULL;
  if (find(ref, &j, err) < 0) return -1;
  /* say whether it is usable (cheap checks; restore also hashes) */
  _cleanup_free_ char *root = snap_root();
  _cleanup_free_ char *dir = cr_path_join(root, json_string_value(json_object_get(j, "id")));
  _cleanup_free_ char *scr = cr_path_join(dir, "scratch.ext4");
  struct stat st;
  const char *problem = NULL;
  const char *fname;
  json_t *fmeta;
  json_object_foreach(json_object_get(j, "state_files"), fname, fmeta) {
    _cleanup_free_ char *rel = NULL, *fp = NULL;
    if (asprintf(&rel, "state/%s", fname) < 0 || !(fp = cr_path_join(dir, rel))) continue;
    if (stat(fp, &st) < 0) problem = "a state file is missing";
    else if ((json_int_t)st.st_size != json_integer_value(json_object_get(fmeta, "bytes")))
      problem = "a state file has the wrong size";
    if (problem) break;
  }
  if (!problem && stat(scr, &st) < 0) problem = "scratch.ext4 is missing";
  json_object_set_new(j, "usable", json_boolean(!problem));
  json_object_set_new(j, "problem", problem ? json_string(problem) : json_null());
  *ret = j;
  return 0;
}

void snap_source_clear(snap_source *s) {
  free(s->id);
  free(s->dir);
  free(s->state_dir);
  free(s->scratch);
  free(s->ram);
  free(s->image_ref);
  free(s->image_digest);
  json_decref(s->workspace);
  json_decref(s->policy);
  memset(s, 0, sizeof(*s));
}

/* "dev ino size mtime ctime" of a file: any write, truncation, chmod or
 * replacement through the filesystem changes it (ctime cannot be set back
 * by a user). */
static char *file_stamp(const struct stat *st) {
  char *r = NULL;
  if (asprintf(&r, "%llu %llu %lld %lld.%09ld %lld.%09ld", (unsigned long long)st->st_dev,
               (unsigned long long)st->st_ino, (long long)st->st_size,
               (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec,
               (long long)st->st_ctim.tv_sec, st->st_ctim.tv_nsec) < 0)
    return NULL;
  return r;
}

/* Checks one recorded state file: size, then sha256 (skipped when the file
 * is untouched since it was hashed: the same stamp). NULL = fine. */
static const char *check_state_file(const char *path, json_t *fmeta) {
  struct stat st;
  if (stat(path, &st) < 0) return "is missing";
  if ((json_int_t)st.st_size != json_integer_value(json_object_get(fmeta, "bytes")))
    return "has the wrong size (truncated?)";
  const char *stamp = json_string_value(json_object_get(fmeta, "stamp"));
  _cleanup_free_ char *now = file_stamp(&st);
  if (stamp && now && !strcmp(stamp, now)) return NULL;
  const char *want = json_string_value(json_object_get(fmeta, "sha256"));
  bool data_only = json_is_true(json_object_get(fmeta, "sha256_data_only"));
  char hex[65];
  if (!want || (data_only ? cr_sha256_file_data(path, hex) : cr_sha256_file(path, hex)) < 0 ||
      strcmp(hex, want))
    return "does not match its checksum (corrupted)";
  return NULL;
}

int snap_open(sbx_manager *m, const char *ref, snap_source *ret, cr_error **err) {
  (void)m;
  _cleanup_json_ json_t *j = NULL;
  if (find(ref, &j, err) < 0) return -1;
  const char *id = json_string_value(json_object_get(j, "id"));
  _cleanup_free_ char *root = snap_root();
  snap_source s = {0};
  s.id = strdup(id);
  s.dir = cr_path_join(root, id);
  s.state_dir = cr_path_join(s.dir, "state");
  s.scratch = cr_path_join(s.dir, "scratch.ext4");
  /* recorded among the state files (and checked with them) when there */
  if (json_object_get(json_object_get(j, "state_files"), "ram"))
    s.ram = cr_path_join(s.state_dir, "ram");
  json_t *img = json_object_get(j, "image");
  const char *v = json_string_value(json_object_get(img, "ref"));
  s.image_ref = v ? strdup(v) : NULL;
  v = json_string_value(json_object_get(img, "digest"));
  s.image_digest = v ? strdup(v) : NULL;
  s.vcpus = (unsigned)json_integer_value(json_object_get(j, "vcpus"));
  s.memory_mib = (unsigned)json_integer_value(json_object_get(j, "memory_mib"));
  json_t *wsj = json_object_get(j, "workspace");
  s.workspace = json_is_object(wsj) ? json_deep_copy(wsj) : NULL;
  json_t *polj = json_object_get(j, "policy");
  s.policy = json_is_object(polj) ? json_deep_copy(polj) : NULL;
  s.network = json_is_true(json_object_get(j, "network"));
  json_t *files = json_object_get(j, "state_files");
  json_int_t sbytes = json_integer_value(json_object_get(j, "scratch_bytes"));
  struct stat st;
  int r = 0;
  if (!s.state_dir || !s.scratch || !s.image_digest || !json_object_size(files) || !s.vcpus ||
      !s.memory_mib) {
    r = cr_error_set(err, CR_E_SNAPSHOT_INVALID, 0, "snapshot %s: meta.json is incomplete", id);
  } else {
    const char *fname;
    json_t *fmeta;
    json_object_foreach(files, fname, fmeta) {
      if (strchr(fname, '/') || fname[0] == '.') {
        r = cr_error_set(err, CR_E_SNAPSHOT_INVALID, 0, "snapshot %s: bad file name", id);
        break;
      }
      _cleanup_free_ char *fp = cr_path_join(s.state_dir, fname);
      const char *why = fp ? check_state_file(fp, fmeta) : "cannot be named";
      if (why) {
        r = cr_error_set(err, CR_E_SNAPSHOT_INVALID, 0, "snapshot %s: state/%s %s", id, fname,
                         why);
        break;
      }
    }
    if (r == 0 && (stat(s.scratch, &st) < 0 || (json_int_t)st.st_size != sbytes))
      r = cr_error_set(err, CR_E_SNAPSHOT_INVALID, 0,
                       "snapshot %s: scratch.ext4 is missing or has the wrong size", id);
  }
  if (r == 0) {
    *ret = s;
    return 0;
  }
  snap_source_clear(&s);
  return r;
}

/* ---- create (asynchronous: save, copy the scratch disk, resume) */

typedef struct snap_create {
  sbx *s;
  char id[27];
  char *name, *tmp, *final;
  int64_t t0, t1, t2;
  sbx_json_cb done;
  void *ud;
} snap_create;

static void create_end(snap_create *c, json_t *res, cr_error *err) {
  if (err) cr_rm_rf(c->tmp);
  c->s->snapshotting = false;
  c->done(c->ud, res, err);
  sbx_unhold(c->s);
  free(c->name);
  free(c->tmp);
  free(c->final);
  free(c);
}

/* {"<file>": {"bytes", "allocated_bytes", "sha256", "stamp"}} for the
 * regular files of dir. "ram" (a flat guest RAM, mostly holes) is summed
 * over its data extents only ("sha256_data_only", cr_sha256_file_data). */
static json_t *hash_dir(const char *dir, int *ret) {
  json_t *o = json_object();
  DIR *d = opendir(dir);
  *ret = 0;
  if (!d) {
    *ret = -errno;
    return o;
  }
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    _cleanup_free_ char *p = cr_path_join(dir, de->d_name);
    struct stat st;
    char hex[65];
    if (!p || stat(p, &st) < 0 || !S_ISREG(st.st_mode)) continue;
    bool data_only = !strcmp(de->d_name, "ram");
    int r = data_only ? cr_sha256_file_data(p, hex) : cr_sha256_file(p, hex);
    if (r < 0) {
      *ret = r;
      break;
    }
    /* stat again: the stamp of the file as hashed */
    _cleanup_free_ char *stamp = stat(p, &st) == 0 ? file_stamp(&st) : NULL;
    json_t *fj = json_pack("{s:I, s:I, s:s, s:s?}", "bytes", (json_int_t)st.st_size,
                           "allocated_bytes", (json_int_t)st.st_blocks * 512, "sha256", hex,
                           "stamp", stamp);
    if (fj && data_only) json_object_set_new(fj, "sha256_data_only", json_true());
    json_object_set_new(o, de->d_name, fj);
  }
  closedir(d);
  return o;
}

static void on_resumed(void *ud, backend_vm *vm, cr_error *err) {
  snap_create *c = ud;
  sbx *s = c->s;
  c->t2 = sbx_now_ms();
  if (err) {
    cr_error_wrap(&err, "resuming sandbox %s after the snapshot", s->id);
    create_end(c, NULL, err);
    return;
  }
  _cleanup_free_ char *state = cr_path_join(c->tmp, "state");
  _cleanup_free_ char *scr = cr_path_join(c->tmp, "scratch.ext4");
  int r = 0;
  json_t *files = hash_dir(state, &r);
  struct stat ss;
  cr_error *e = NULL;
  if (r < 0 || stat(scr, &ss) < 0) {
    json_decref(files);
    cr_error_set(&e, CR_E_IO, r < 0 ? -r : errno, "hashing the snapshot files");
    create_end(c, NULL, e);
    return;
  }
  json_int_t mem_bytes = 0;
  const char *k;
  json_t *f;
  /* what the memory costs on disk: a flat RAM file's holes are free */
  json_object_foreach(files, k, f) mem_bytes +=
      json_integer_value(json_object_get(f, "allocated_bytes"));
  json_t *j = json_object();
  json_object_set_new(j, "id", json_string(c->id));
  json_object_set_new(j, "name", c->name ? json_string(c->name) : json_null());
  json_object_set_new(j, "sandbox_id", json_string(s->id));
  json_object_set_new(j, "parent_snapshot",
                      s->from_snapshot ? json_string(s->from_snapshot) : json_null());
  json_object_set_new(j, "image", json_pack("{s:s?, s:s?}", "ref", s->image_ref, "digest",
                                            s->image_digest));
  json_object_set_new(j, "vcpus", json_integer(s->vcpus));
  json_object_set_new(j, "memory_mib", json_integer(s->memory_mib));
  json_object_set_new(j, "backend", json_string(s->m->backend->name));
  json_object_set_new(j, "created_at", sbx_time_json(sbx_now_ms()));
  json_object_set_new(j, "memory_bytes", json_integer(mem_bytes));
  json_object_set_new(j, "state_files", files);
  json_object_set_new(j, "scratch_bytes", json_integer((json_int_t)ss.st_size));
  json_object_set_new(j, "scratch_allocated_bytes", json_integer((json_int_t)ss.st_blocks * 512));
  /* the workspace record: a fork or restore diffs against the same base */
  json_object_set_new(j, "workspace", s->workspace ? json_deep_copy(s->workspace) : json_null());
  json_object_set_new(j, "policy_hash", s->policy_hash ? json_string(s->policy_hash) : json_null());
  /* a fork runs this machine: with a NIC and a network of its own when it had one */
  json_object_set_new(j, "policy", s->policy ? json_incref(s->policy) : json_null());
  json_object_set_new(j, "network", json_boolean(s->net != NULL));
  json_object_set_new(j, "timing_ms",
                      json_pack("{s:I, s:I, s:I, s:I}", "save", (json_int_t)(c->t1 - c->t0),
                                "scratch_copy_and_resume", (json_int_t)(c->t2 - c->t1), "paused",
                                (json_int_t)(c->t2 - c->t0), "total",
                                (json_int_t)(sbx_now_ms() - c->t0)));
  _cleanup_free_ char *txt = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
  _cleanup_free_ char *mp = cr_path_join(c->tmp, "meta.json");
  if (!txt || !mp || (r = cr_write_file_atomic(mp, txt, strlen(txt), 0600)) < 0 ||
      rename(c->tmp, c->final) < 0) {
    json_decref(j);
    cr_error_set(&e, CR_E_IO, r < 0 ? -r : errno, "writing snapshot %s", c->id);
    create_end(c, NULL, e);
    return;
  }
  sbx_event(s, "snapshot", "snapshot %s%s%s taken (VM paused %lld ms)", c->id,
            c->name ? " " : "", c->name ? c->name : "", (long long)(c->t2 - c->t0));
  sbx_save_state(s);
  create_end(c, j, NULL);
}

static void on_saved(void *ud, backend_vm *vm, cr_error *err) {
  snap_create *c = ud;
  sbx *s = c->s;
  c->t1 = sbx_now_ms();
  if (err || !s->vm) {
    /* the backend resumed the VM (or it was removed meanwhile) */
    if (!err) cr_error_set(&err, CR_E_SANDBOX_NOT_FOUND, 0, "the sandbox was removed");
    cr_error_wrap(&err, "snapshot of sandbox %s", s->id);
    create_end(c, NULL, err);
    return;
  }
  /* the VM is stopped: memory and disk are of the same instant (QEMU
   * flushed the disks when it stopped) */
  _cleanup_free_ char *scr = cr_path_join(c->tmp, "scratch.ext4");
  _cleanup_free_ char *src = cr_path_join(s->dir, "scratch.ext4");
  int r = scr && src ? cr_copy_file_clone(src, scr, 0600, 0) : -ENOMEM;
  /* the workspace disk too, when the VM has one */
  _cleanup_free_ char *wss = sbx_ws_disk(s);
  _cleanup_free_ char *wsd = cr_path_join(c->tmp, SBX_WS_DISK);
  if (r >= 0 && wss) r = wsd ? cr_copy_file_clone(wss, wsd, 0600, 0) : -ENOMEM;
  cr_error *e = NULL;
  if (!s->vm || backend_vm_ops(s->vm)->resume(s->vm, on_resumed, c, &e) < 0) {
    if (!e) cr_error_set(&e, CR_E_SANDBOX_NOT_READY, 0, "sandbox %s went away", s->id);
    create_end(c, NULL, e);
    return;
  }
  if (r < 0) log_warn("snapshot %s: copying the scratch disk: %s", c->id, strerror(-r));
  if (r < 0) {
    /* on_resumed still runs; make it fail */
    _cleanup_free_ char *meta = cr_path_join(c->tmp, "state");
    if (meta) cr_rm_rf(meta);
  }
}

int sbx_snapshot_create(sbx_manager *m, sbx *s, const char *name, sbx_json_cb done, void *ud,
                        cr_error **err) {
  (void)m;
  if (sbx_check_ready(s, err) < 0) return -1;
  if (s->snapshotting || !s->vm)
    return cr_error_set(err, CR_E_SANDBOX_NOT_READY, 0, "sandbox %s is busy with a snapshot",
                        s->id);
  if (name && *name) {
    if (!name_valid(name))
      return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                          "snapshot name '%s': use 1-64 of [A-Za-z0-9._-], not starting with '.' or '-'",
                          name);
    json_t *dup = NULL;
    cr_error *e = NULL;
    if (find(name, &dup, &e) == 0) {
      json_decref(dup);
      return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "a snapshot named '%s' exists", name);
    }
    cr_error_free(e);
  }
  _cleanup_free_ char *root = snap_root();
  snap_create *c = calloc(1, sizeof(*c));
  if (!c || !root) {
    free(c);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "snapshot");
  }
  cr_ulid_new(c->id);
  c->s = s;
  c->done = done;
  c->ud = ud;
  c->name = name && *name ? strdup(name) : NULL;
  c->final = cr_path_join(root, c->id);
  if (asprintf(&c->tmp, "%s/.tmp-%s", root, c->id) < 0) c->tmp = NULL;
  _cleanup_free_ char *state = c->tmp ? cr_path_join(c->tmp, "state") : NULL;
  int r = state && c->final ? cr_mkdir_p(state, 0700) : -ENOMEM;
  if (r < 0) {
    if (c->tmp) cr_rm_rf(c->tmp);
    free(c->name);
    free(c->tmp);
    free(c->final);
    free(c);
    return cr_error_set(err, CR_E_IO, -r, "creating the snapshot directory");
  }
  backend_save_opts o = {.state_dir = state, .resume_after = false, .ram_in_file = false};
  c->t0 = sbx_now_ms();
  if (backend_vm_ops(s->vm)->save(s->vm, &o, on_saved, c, err) < 0) {
    cr_rm_rf(c->tmp);
    free(c->name);
    free(c->tmp);
    free(c->final);
    free(c);
    return cr_error_wrap(err, "snapshot of sandbox %s", s->id);
  }
  s->snapshotting = true;
  sbx_hold(s);
  return 0;
}

int sbx_snapshot_remove(sbx_manager *m, const char *ref, json_t **ret, cr_error **err) {
  (void)m;
  json_t *j = NULL;
  if (find(ref, &j, err) < 0) return -1;
  _cleanup_free_ char *root = snap_root();
  _cleanup_free_ char *dir = cr_path_join(root, json_string_value(json_object_get(j, "id")));
  int r = dir ? cr_rm_rf(dir) : -ENOMEM;
  if (r < 0) {
    json_decref(j);
    return cr_error_set(err, CR_E_IO, -r, "removing %s", dir);
  }
  *ret = j;
  return 0;
}

int sbx_snapshot_restore(sbx_manager *m, const char *ref, sbx *s, sbx_ready_cb done,
                         void *ud, cr_error **err) {
  if (s->state != SBX_READY && s->state != SBX_FAILED)
    return cr_error_set(err, CR_E_SANDBOX_NOT_READY, 0, "sandbox %s is %s", s->id,
                        sbx_state_name(s->state));
  _cleanup_(snap_source_clear) snap_source src = {0};
  int64_t t0 = sbx_now_ms();
  if (snap_open(m, ref, &src, err) < 0) return -1;
  int64_t t1 = sbx_now_ms();
  if (src.network != (s->net != NULL))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "snapshot %s was taken of a sandbox %s a network, sandbox %s has %s "
                        "(the VM's devices differ)",
                        src.id, src.network ? "with" : "without", s->id, s->net ? "one" : "none");
  _cleanup_image_info_ image_info *img = NULL;
  if (image_lookup(src.image_digest, &img, err) < 0)
    return cr_error_wrap(err, "the image of snapshot %s", src.id);
  _cleanup_free_ char *scr_new = cr_path_join(s->dir, "scratch.ext4.restore");
  _cleanup_free_ char *scr = cr_path_join(s->dir, "scratch.ext4");
  if (!scr_new || !scr) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "paths");
  unlink(scr_new);
  /* a running sandbox's own disks: no fsync (CR_COPY_NO_SYNC) */
  int r = cr_copy_file_clone(src.scratch, scr_new, 0600, CR_COPY_NO_SYNC);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "copying the snapshot's scratch disk");
  /* its workspace disk, if it has one (sbx_relaunch_restore moves it in) */
  _cleanup_free_ char *ws_snap = cr_path_join(src.dir, SBX_WS_DISK);
  _cleanup_free_ char *ws_new = cr_path_join(s->dir, SBX_WS_DISK ".restore");
  if (!ws_snap || !ws_new) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "paths");
  unlink(ws_new);
  if (access(ws_snap, F_OK) == 0 &&
      (r = cr_copy_file_clone(ws_snap, ws_new, 0600, CR_COPY_NO_SYNC)) < 0) {
    unlink(scr_new);
    return cr_error_set(err, CR_E_IO, -r, "copying the snapshot's workspace disk");
  }
  log_debug("restore of %s: snapshot checked in %lld ms, disks copied in %lld ms", s->id,
            (long long)(t1 - t0), (long long)(sbx_now_ms() - t1));
  /* from here on the sandbox changes */
  free(s->image_path);
  free(s->image_digest);
  s->image_path = strdup(img->rootfs);
  s->image_digest = strdup(img->digest);
  if (src.image_ref) {
    free(s->image_ref);
    s->image_ref = strdup(src.image_ref);
  }
  s->vcpus = src.vcpus;
  s->memory_mib = src.memory_mib;
  sbx_set_workspace(s, src.workspace); /* as it was then (NULL: none) */
  if (s->snapshotting)
    return cr_error_set(err, CR_E_SANDBOX_NOT_READY, 0, "sandbox %s is busy with a snapshot", s->id);
  if (sbx_relaunch_restore(s, src.state_dir, src.id, src.ram, scr_new, err) < 0) {
    unlink(scr_new);
    return -1;
  }
  (void)scr;
  sbx_when_ready(s, done, ud);
  return 0;
}

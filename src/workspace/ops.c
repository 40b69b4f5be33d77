/* Workspace operations in the daemon: checkout (mirror -> TAR_IN), diff
 * (LIST + FILE_READ of changed files only -> patch) and copy-in. */
#include "workspace/ops.h"

#include "workspace/local.h"

#include "util/base64.h"
#include "util/fs.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/macro.h"

#include <errno.h>
#include <dirent.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* a copy-in tar goes to the agent in one agent_send() */
_Static_assert(CR_WS_MAX_COPY_IN <= AGENT_PENDING_MAX_DATA, "copy-in larger than the agent queue");

#define MAX_PARALLEL_READS 8

typedef struct gentry { /* one LIST entry from the guest */
  char *name;
  uint32_t ftype, mode;
  uint64_t size, mtime_ns;
  char *target;
} gentry;

/* Base manifests, immutable per (url, commit): the last few are kept on the
 * loop thread so repeated diffs of a sandbox do not walk the tree again. */
typedef struct man_ref {
  int refs;
  char *url;
  char commit[41];
  uint64_t used;
  ws_manifest m;
} man_ref;
#define MAN_CACHE 4
static man_ref *man_cache[MAN_CACHE];
static uint64_t man_clock;

static void man_unref(man_ref *r) {
  if (!r || --r->refs > 0) return;
  ws_manifest_free(&r->m);
  free(r->url);
  free(r);
}

static man_ref *man_lookup(const char *url, const char *commit) {
  for (int i = 0; i < MAN_CACHE; i++) {
    man_ref *r = man_cache[i];
    if (r && strcmp(r->commit, commit) == 0 && strcmp(r->url, url) == 0) {
      r->used = ++man_clock;
      r->refs++;
      return r;
    }
  }
  return NULL;
}

static void man_insert(man_ref *r) {
  int slot = 0;
  for (int i = 0; i < MAN_CACHE; i++) {
    if (!man_cache[i]) {
      slot = i;
      break;
    }
    if (man_cache[i]->used < man_cache[slot]->used) slot = i;
  }
  man_unref(man_cache[slot]);
  r->used = ++man_clock;
  r->refs++;
  man_cache[slot] = r;
}

typedef struct ws_op ws_op;
struct ws_op {
  uv_work_t work;
  uv_loop_t *loop;
  sbx_manager *m;
  char sid[32];
  ws_done_cb cb;
  void *ud;
  char *url, *ref, *path;
  unsigned flags;
  char **paths;
  size_t npaths;
  cr_error *err; /* from the worker */
  ws_resolved res;
  cr_buf tar;
  size_t files;
  /* diff */
  struct man_ref *mref; /* the base manifest (shared, cached) */
  gentry *g;
  size_t ng, capg;
  bool list_truncated;
  ws_change *ch;
  size_t nch;
  size_t *reads; /* indexes into ch that need the guest's content */
  size_t nreads, next_read, reads_pending;
  uint64_t bytes_read;
  char *patch;
  /* copy-in */
  json_t *deletes;
  char commit_given[41];
  /* checkout onto the workspace disk (NULL: TAR_IN) */
  char *disk;
  bool submodules;      /* checkout: bring them (repository.submodules) */
  ws_submodules subs;
  int64_t t_start, t_tree, t_image, t_mount; /* ms */
  int64_t t_list0, t_list, t_compared, t_read; /* diff, ms since t_start */
};

static void op_free(ws_op *o) {
  free(o->url);
  free(o->ref);
  free(o->path);
  for (size_t i = 0; i < o->npaths; i++) free(o->paths[i]);
  free(o->paths);
  cr_error_free(o->err);
  ws_resolved_clear(&o->res);
  cr_buf_free(&o->tar);
  man_unref(o->mref);
  for (size_t i = 0; i < o->ng; i++) {
    free(o->g[i].name);
    free(o->g[i].target);
  }
  free(o->g);
  ws_changes_free(o->ch, o->nch);
  free(o->reads);
  free(o->patch);
  json_decref(o->deletes);
  free(o->disk);
  ws_submodules_free(&o->subs);
  free(o);
}

static void finish(ws_op *o, json_t *result, cr_error *err) {
  o->cb(o->ud, result, err);
  op_free(o);
}

static void fail(ws_op *o, const char *reason, int errnum, const char *fmt, ...) _printf_(4, 5);
static void fail(ws_op *o, const char *reason, int errnum, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  cr_error *e = NULL;
  cr_error_set(&e, reason, errnum, "%s", msg);
  finish(o, NULL, e);
}

static sbx *op_sandbox(ws_op *o) {
  sbx *s = sbx_find(o->m, o->sid);
  if (!s) {
    fail(o, CR_E_SANDBOX_NOT_FOUND, 0, "sandbox %s went away", o->sid);
    return NULL;
  }
  cr_error *e = NULL;
  if (sbx_check_ready(s, &e) < 0) {
    finish(o, NULL, e);
    return NULL;
  }
  return s;
}

static ws_op *op_new(sbx_manager *m, const char *sid, ws_done_cb cb, void *ud) {
  ws_op *o = calloc(1, sizeof(*o));
  if (!o) return NULL;
  o->m = m;
  o->loop = m ? sbx_manager_loop(m) : NULL;
  snprintf(o->sid, sizeof(o->sid), "%s", sid ? sid : "");
  o->cb = cb;
  o->ud = ud;
  o->work.data = o;
  return o;
}

static void guest_error(const agent_error *ge, cr_error **err, const char *what) {
  cr_error_set(err, ge->reason ? ge->reason : CR_E_FILE_ERROR, 0, "%s: %s", what,
               ge->message ? ge->message : "the guest reported an error");
}

/* ch: what an agent_* request returned; returns it, or < 0 (o failed). */
static long started(ws_op *o, long ch) {
  if (ch == -EMSGSIZE) {
    fail(o, CR_E_INVALID_ARGUMENT, 0, "request too large");
    return -1;
  }
  if (ch < 0) {
    fail(o, CR_E_AGENT_UNAVAILABLE, (int)-ch, "sending to the guest agent");
    return -1;
  }
  return ch;
}

static const char *ws_path_of(sbx *s) {
  const char *p = json_string_value(json_object_get(sbx_workspace(s), "path"));
  return p ? p : CR_WS_DEFAULT_PATH;
}

/* ---- TAR_IN of o->tar into `dir` (then `done`) */

typedef void (*step_fn)(ws_op *o, cr_error *err);
typedef struct tar_in_ctx {
  ws_op *o;
  step_fn next;
} tar_in_ctx;

static void tar_in_event(void *ud, const agent_event *ev) {
  tar_in_ctx *t = ud;
  if (ev->type != AGENT_EV_OK && ev->type != AGENT_EV_ERROR) return;
  cr_error *e = NULL;
  if (ev->type == AGENT_EV_ERROR) guest_error(&ev->error, &e, "extracting into the workspace");
  ws_op *o = t->o;
  step_fn next = t->next;
  free(t);
  next(o, e);
}

static void tar_in(ws_op *o, sbx *s, const char *dir, bool parents, step_fn next) {
  tar_in_ctx *t = calloc(1, sizeof(*t));
  if (!t) return fail(o, CR_E_INTERNAL, ENOMEM, "tar in");
  t->o = o;
  t->next = next;
  /* On a failure to send the data the connection is gone and the operation
   * gets its ERROR. */
  if (started(o, agent_tar_in(sbx_agent(s), dir, parents, o->tar.data, o->tar.len, tar_in_event,
                              t)) < 0)
    free(t);
}

/* ---- resolve */

static void resolve_work(uv_work_t *w) {
  ws_op *o = w->data;
  ws_mirror_resolve(o->url, o->ref, &o->res, &o->err);
}

static json_t *resolved_json(ws_op *o) {
  return json_pack("{s:s, s:s?, s:s, s:b, s:I, s:I}", "repo_url", o->url, "ref", o->res.ref,
                   "commit", o->res.commit, "fetched", o->res.fetched, "received_objects",
                   (json_int_t)o->res.received_objects, "received_bytes",
                   (json_int_t)o->res.received_bytes);
}

static void resolve_after(uv_work_t *w, int status) {
  ws_op *o = w->data;
  if (o->err) return finish(o, NULL, TAKE_PTR(o->err));
  finish(o, resolved_json(o), NULL);
}

int ws_resolve_async(uv_loop_t *loop, const char *url, const char *ref, ws_done_cb cb,
                     void *ud, cr_error **err) {
  if (!url || !*url) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "missing 'repo_url'");
  ws_op *o = op_new(NULL, NULL, cb, ud);
  if (!o) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "resolve");
  o->loop = loop;
  o->url = strdup(url);
  o->ref = ref ? strdup(ref) : NULL;
  int r = uv_queue_work(loop, &o->work, resolve_work, resolve_after);
  if (r < 0) {
    op_free(o);
    return cr_error_set(err, CR_E_INTERNAL, -r, "queueing the fetch");
  }
  return 0;
}

/* ---- checkout */

/* Where the tree is written for mkfs to read, for a moment: a tmpfs
 * (/dev/shm) when it and the image made of it (about twice `need`) fit in
 * a quarter of its free room and need is below 512 MiB, else
 * next to the disk. Creating 10k inodes on a busy host ext4 costs seconds
 * (ext4's allocator scans for recently deleted inodes); on tmpfs 0.2 s. */
/* Trees and images a killed daemon left on /dev/shm (its pid is gone). */
static void sweep_shm(void) {
  DIR *d = opendir("/dev/shm");
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    int pid = 0;
    if (sscanf(e->d_name, "cleanroom-ws-%d-", &pid) != 1 || pid <= 0 ||
        pid == (int)getpid() || (kill(pid, 0) == 0 || errno == EPERM))
      continue;
    char *p = NULL;
    if (asprintf(&p, "/dev/shm/%s", e->d_name) >= 0) {
      cr_rm_rf(p);
      free(p);
    }
  }
  closedir(d);
}

static char *tree_dir(const char *disk, uint64_t need) {
  static unsigned counter;
  sweep_shm();
  struct statvfs sv;
  char *p = NULL;
  if (statvfs("/dev/shm", &sv) == 0 && need < (512ull << 20) &&
      2 * need + (64u << 20) < (uint64_t)sv.f_bavail * sv.f_frsize / 4) {
    if (asprintf(&p, "/dev/shm/cleanroom-ws-%d-%u", (int)getpid(),
                 __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED)) < 0)
      p = NULL;
    return p;
  }
  if (asprintf(&p, "%s.tree", disk) < 0) p = NULL;
  return p;
}

static void checkout_work(uv_work_t *w) {
  ws_op *o = w->data;
  if (ws_mirror_resolve(o->url, o->commit_given[0] ? o->commit_given : o->ref, &o->res,
                        &o->err) < 0)
    return;
  if (o->commit_given[0] && !o->res.ref && o->ref) o->res.ref = strdup(o->ref);
  if (!o->disk) {
    ws_tree_tar(o->url, o->res.commit, &o->tar, &o->files, o->submodules ? &o->subs : NULL,
                &o->err);
    return;
  }
  /* the tree as host files, then an ext4 of them written onto the disk the
   * VM has (blank so far: the guest mounts it only after this) */
  int64_t t0 = cr_mono_ms();
  uint64_t need = 0;
  if (ws_tree_size(o->url, o->res.commit, &need, &o->err) < 0) return;
  _cleanup_free_ char *tree = tree_dir(o->disk, need);
  if (!tree) {
    cr_error_set(&o->err, CR_E_INTERNAL, ENOMEM, "checkout");
    return;
  }
  cr_rm_rf(tree);
  int r = ws_tree_write(o->url, o->res.commit, tree, &o->files,
                        o->submodules ? &o->subs : NULL, &o->err);
  o->t_tree = cr_mono_ms() - t0;
  if (r == 0) {
    t0 = cr_mono_ms();
    _cleanup_free_ char *tmp = NULL;
    if (strncmp(tree, "/dev/shm/", 9) == 0 && asprintf(&tmp, "%s.img", tree) < 0) tmp = NULL;
    if (ws_image_build(tree, tmp, o->disk, &o->err) < 0)
      cr_error_wrap(&o->err, "building the workspace disk");
    o->t_image = cr_mono_ms() - t0;
  }
  cr_rm_rf(tree);
}

static void checkout_done(ws_op *o, cr_error *err) {
  if (err) return finish(o, NULL, err);
  sbx *s = sbx_find(o->m, o->sid);
  if (!s) return fail(o, CR_E_SANDBOX_NOT_FOUND, 0, "sandbox %s went away", o->sid);
  json_t *ws = resolved_json(o);
  json_object_set_new(ws, "path", json_string(o->path));
  json_object_set_new(ws, "files", json_integer((json_int_t)o->files));
  if (o->submodules) {
    json_t *a = json_array();
    for (size_t i = 0; i < o->subs.n; i++) {
      const ws_submodule *sm = &o->subs.v[i];
      json_array_append_new(a, json_pack("{s:s, s:s?, s:s, s:b, s:I}", "path", sm->path, "url",
                                         sm->url, "commit", sm->commit, "fetched", sm->fetched,
                                         "received_objects",
                                         (json_int_t)sm->received_objects));
    }
    json_object_set_new(ws, "submodules", a);
  }
  if (o->disk) {
    json_object_set_new(ws, "method", json_string("disk"));
    json_object_set_new(ws, "timing_ms",
                        json_pack("{s:I, s:I, s:I, s:I}", "tree", (json_int_t)o->t_tree,
                                  "image", (json_int_t)o->t_image, "mount",
                                  (json_int_t)o->t_mount, "total",
                                  (json_int_t)(cr_mono_ms() - o->t_start)));
  } else {
    json_object_set_new(ws, "method", json_string("tar"));
    json_object_set_new(ws, "tar_bytes", json_integer((json_int_t)o->tar.len));
  }
  sbx_set_workspace(s, ws);
  finish(o, ws, NULL);
}

static void mount_event(void *ud, const agent_event *ev) {
  ws_op *o = ud;
  if (ev->type != AGENT_EV_OK && ev->type != AGENT_EV_ERROR) return;
  o->t_mount = cr_mono_ms() - o->t_mount;
  cr_error *e = NULL;
  if (ev->type == AGENT_EV_ERROR) guest_error(&ev->error, &e, "mounting the workspace disk");
  checkout_done(o, e);
}

static void checkout_after(uv_work_t *w, int status) {
  ws_op *o = w->data;
  if (o->err) return finish(o, NULL, TAKE_PTR(o->err));
  sbx *s = op_sandbox(o);
  if (!s) return;
  if (!o->disk) return tar_in(o, s, o->path, true, checkout_done);
  o->t_mount = cr_mono_ms();
  started(o, agent_mount(sbx_agent(s), "serial:" SBX_WS_DISK_SERIAL, o->path, mount_event, o));
}

static bool abs_path_ok(const char *p) {
  return p && p[0] == '/' && p[1] && (ws_path_ok(p + 1)) && strlen(p) < 1024;
}

int ws_checkout(sbx_manager *m, const char *sandbox_id, const char *url, const char *ref,
                const char *commit, const char *path, bool submodules, ws_done_cb cb, void *ud,
                cr_error **err) {
  if (!url || !*url) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "missing 'repo_url'");
  if (!path || !*path) path = CR_WS_DEFAULT_PATH;
  if (!abs_path_ok(path))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "the workspace path must be absolute, without '..' and not '/' (got '%s')",
                        path);
  sbx *s = sbx_find(m, sandbox_id);
  if (!s)
    return cr_error_set(err, CR_E_SANDBOX_NOT_FOUND, 0, "no sandbox '%s'", sandbox_id);
  if (sbx_check_ready(s, err) < 0) return -1;
  if (sbx_workspace(s))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "sandbox %s already has a workspace (commit %s)", sbx_id(s),
                        json_string_value(json_object_get(sbx_workspace(s), "commit")));
  ws_op *o = op_new(m, sbx_id(s), cb, ud);
  if (!o) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "checkout");
  o->url = strdup(url);
  o->ref = ref && *ref ? strdup(ref) : NULL;
  o->path = strdup(path);
  o->submodules = submodules;
  o->disk = sbx_ws_disk(s); /* NULL: a VM without one (restored from an older snapshot) */
  o->t_start = cr_mono_ms();
  if (commit && *commit) snprintf(o->commit_given, sizeof(o->commit_given), "%s", commit);
  int r = uv_queue_work(o->loop, &o->work, checkout_work, checkout_after);
  if (r < 0) {
    op_free(o);
    return cr_error_set(err, CR_E_INTERNAL, -r, "queueing the checkout");
  }
  return 0;
}

/* ---- diff */

static void diff_manifest_work(uv_work_t *w) {
  ws_op *o = w->data;
  ws_manifest_load(o->url, o->ref, &o->mref->m, &o->err); /* o->ref holds the commit */
}

static void list_event(void *ud, const agent_event *ev);
static void diff_compare(ws_op *o);

static void diff_list(ws_op *o) {
  sbx *s = op_sandbox(o);
  if (!s) return;
  o->t_list0 = cr_mono_ms() - o->t_start;
  started(o, agent_file_list(sbx_agent(s), o->path, 64, list_event, o));
}

static void diff_manifest_after(uv_work_t *w, int status) {
  ws_op *o = w->data;
  if (o->err) return finish(o, NULL, TAKE_PTR(o->err));
  man_insert(o->mref);
  diff_list(o);
}

static void list_event(void *ud, const agent_event *ev) {
  ws_op *o = ud;
  if (ev->type == AGENT_EV_ENTRY) {
    if (o->ng >= 1000000) {
      o->list_truncated = true;
      return;
    }
    const agent_stat *st = &ev->stat;
    uint32_t ftype = st->have & AGENT_ST_FTYPE ? st->ftype : 0;
    if (!st->name || !ws_path_ok(st->name) ||
        (ftype != AGENT_FT_FILE && ftype != AGENT_FT_SYMLINK) || ws_path_has_git(st->name))
      return;
    gentry e = {
        .name = strdup(st->name),
        .target = st->target ? strdup(st->target) : NULL,
        .ftype = ftype,
        .mode = st->have & AGENT_ST_MODE ? st->mode : 0,
        .size = st->have & AGENT_ST_SIZE ? st->size : 0,
        .mtime_ns = st->have & AGENT_ST_MTIME ? st->mtime_ns : 0,
    };
    if (!e.name || (st->target && !e.target)) {
      free(e.name);
      free(e.target);
      o->list_truncated = true;
      return;
    }
    if (o->ng == o->capg) {
      size_t nc = o->capg ? o->capg * 2 : 1024;
      gentry *ng = realloc(o->g, nc * sizeof(*ng));
      if (!ng) {
        free(e.name);
        free(e.target);
        o->list_truncated = true;
        return;
      }
      o->g = ng;
      o->capg = nc;
    }
    o->g[o->ng++] = e;
    return;
  }
  if (ev->type == AGENT_EV_ERROR) {
    cr_error *e = NULL;
    guest_error(&ev->error, &e, "listing the workspace");
    return finish(o, NULL, e);
  }
  if (ev->type == AGENT_EV_OK) {
    /* the agent stops at 100000 entries (AGENT_MAX_LIST) */
    if (o->list_truncated || o->ng >= 100000)
      return fail(o, CR_E_WORKSPACE_TOO_LARGE, 0,
                  "the workspace has more entries than a diff can list (100000)");
    diff_compare(o);
  }
}

static int gentry_cmp(const void *a, const void *b) {
  return strcmp(((const gentry *)a)->name, ((const gentry *)b)->name);
}

static uint32_t git_mode_of(const gentry *g) {
  if (g->ftype == AGENT_FT_SYMLINK) return 0120000;
  return (g->mode & 0111) ? 0100755 : 0100644;
}

static ws_change *add_change(ws_op *o, const char *path, char status) {
  ws_change *nv = realloc(o->ch, (o->nch + 1) * sizeof(*nv));
  if (!nv) return NULL;
  o->ch = nv;
  ws_change *c = &o->ch[o->nch];
  *c = (ws_change){.status = status};
  c->path = strdup(path);
  if (!c->path) return NULL;
  o->nch++;
  return c;
}

static void diff_reads(ws_op *o);
static void diff_finish_changes(ws_op *o);

/* path lies below a gitlink of the base tree: a submodule's files are not
 * the superproject's (git diff shows none of them either). */
static bool below_gitlink(const ws_manifest *m, const char *path) {
  char buf[4200];
  snprintf(buf, sizeof(buf), "%s", path);
  for (char *sl = strchr(buf, '/'); sl; sl = strchr(sl + 1, '/')) {
    *sl = '\0';
    const ws_entry *e = ws_manifest_find(m, buf);
    *sl = '/';
    if (e) return e->mode == 0160000;
  }
  return false;
}

static void diff_compare(ws_op *o) {
  o->t_list = cr_mono_ms() - o->t_start;
  qsort(o->g, o->ng, sizeof(*o->g), gentry_cmp);
  const ws_manifest *m = &o->mref->m;
  uint64_t base_ns = (uint64_t)(m->mtime < 0 ? 0 : m->mtime) * 1000000000ull;
  o->reads = calloc(o->ng + 1, sizeof(*o->reads));
  if (!o->reads) return fail(o, CR_E_INTERNAL, ENOMEM, "diff");
  /* merge the two sorted lists */
  size_t i = 0, j = 0;
  while (i < m->n || j < o->ng) {
    int c = i >= m->n ? 1 : j >= o->ng ? -1 : strcmp(m->v[i].path, o->g[j].name);
    const ws_entry *be = c <= 0 ? &m->v[i] : NULL;
    const gentry *ge = c >= 0 ? &o->g[j] : NULL;
    const char *path = c <= 0 ? m->v[i].path : o->g[j].name;
    if (c <= 0) i++;
    if (c >= 0) j++;
    if (!ws_path_selected(path, (const char *const *)o->paths, o->npaths)) continue;
    if (be && be->mode == 0160000) continue; /* submodule */
    if (!be && below_gitlink(m, path)) continue;
    ws_change *ch = NULL;
    if (be && !ge) {
      ch = add_change(o, path, 'D');
      if (!ch) return fail(o, CR_E_INTERNAL, ENOMEM, "diff");
      ch->old_mode = be->mode;
      memcpy(ch->old_oid, be->oid, 41);
      continue;
    }
    uint32_t gm = git_mode_of(ge);
    if (be && gm == be->mode) {
      if (gm == 0120000 && ge->target && be->target && strcmp(ge->target, be->target) == 0)
        continue;
      if (gm != 0120000 && ge->size == be->size && ge->mtime_ns == base_ns) continue;
    }
    ch = add_change(o, path, !be ? 'A' : ((be->mode == 0120000) != (gm == 0120000)) ? 'T' : 'M');
    if (!ch) return fail(o, CR_E_INTERNAL, ENOMEM, "diff");
    ch->new_mode = gm;
    if (be) {
      ch->old_mode = be->mode;
      memcpy(ch->old_oid, be->oid, 41);
    }
    if (gm == 0120000) {
      const char *t = ge->target ? ge->target : "";
      ch->data = (uint8_t *)strdup(t);
      ch->len = strlen(t);
      ws_blob_oid(ch->data, ch->len, ch->new_oid);
    } else {
      if (ge->size > CR_WS_MAX_FILE)
        return fail(o, CR_E_WORKSPACE_TOO_LARGE, 0, "%s is larger than %u MiB", path,
                    CR_WS_MAX_FILE >> 20);
      o->reads[o->nreads++] = o->nch - 1;
    }
  }
  o->t_compared = cr_mono_ms() - o->t_start;
  diff_reads(o);
}

typedef struct read_ctx {
  ws_op *o;
  size_t idx;
  cr_buf buf;
  bool too_big;
} read_ctx;

static void read_event(void *ud, const agent_event *ev) {
  read_ctx *r = ud;
  ws_op *o = r->o;
  if (ev->type == AGENT_EV_DATA) {
    if (r->buf.len + ev->len > CR_WS_MAX_FILE || o->bytes_read + ev->len > CR_WS_MAX_TOTAL) {
      r->too_big = true;
      return;
    }
    if (cr_buf_append(&r->buf, ev->data, ev->len) < 0) r->too_big = true;
    else o->bytes_read += ev->len;
    return;
  }
  if (ev->type != AGENT_EV_OK && ev->type != AGENT_EV_ERROR) return;
  ws_change *ch = &o->ch[r->idx];
  cr_error *e = NULL;
  if (ev->type == AGENT_EV_ERROR) guest_error(&ev->error, &e, ch->path);
  else if (r->too_big)
    cr_error_set(&e, CR_E_WORKSPACE_TOO_LARGE, 0, "%s: more than the diff moves (%u MiB a file, %u MiB in all)",
                 ch->path, CR_WS_MAX_FILE >> 20, CR_WS_MAX_TOTAL >> 20);
  if (!e) {
    ch->data = r->buf.data;
    ch->len = r->buf.len;
    r->buf = (cr_buf){0};
    ws_blob_oid(ch->data ? (const void *)ch->data : "", ch->len, ch->new_oid);
  }
  cr_buf_free(&r->buf);
  free(r);
  o->reads_pending--;
  if (e) {
    if (!o->err) o->err = e;
    else cr_error_free(e);
  }
  diff_reads(o);
}

static void diff_reads(ws_op *o) {
  if (o->err) {
    if (o->reads_pending == 0) finish(o, NULL, TAKE_PTR(o->err));
    return;
  }
  sbx *s = NULL;
  while (o->next_read < o->nreads && o->reads_pending < MAX_PARALLEL_READS) {
    if (!s) {
      s = sbx_find(o->m, o->sid);
      if (!s || sbx_check_ready(s, &o->err) < 0) {
        if (!s) cr_error_set(&o->err, CR_E_SANDBOX_NOT_FOUND, 0, "sandbox %s went away", o->sid);
        break;
      }
    }
    size_t idx = o->reads[o->next_read++];
    read_ctx *r = calloc(1, sizeof(*r));
    if (!r) {
      o->err = NULL;
      cr_error_set(&o->err, CR_E_INTERNAL, ENOMEM, "diff");
      break;
    }
    r->buf = CR_BUF_INIT(CR_WS_MAX_FILE);
    r->o = o;
    r->idx = idx;
    char full[8200];
    snprintf(full, sizeof(full), "%s/%s", o->path, o->ch[idx].path);
    long chn = agent_file_read(sbx_agent(s), full, 0, 0, read_event, r);
    if (chn == -EMSGSIZE) {
      free(r);
      cr_error_set(&o->err, CR_E_INVALID_ARGUMENT, 0, "path too long");
      break;
    }
    if (chn < 0) {
      free(r);
      cr_error_set(&o->err, CR_E_AGENT_UNAVAILABLE, (int)-chn, "reading from the guest");
      break;
    }
    o->reads_pending++;
  }
  if (o->err) {
    if (o->reads_pending == 0) finish(o, NULL, TAKE_PTR(o->err));
    return;
  }
  if (o->reads_pending == 0 && o->next_read == o->nreads) {
    o->t_read = cr_mono_ms() - o->t_start;
    diff_finish_changes(o);
  }
}

static void patch_work(uv_work_t *w) {
  ws_op *o = w->data;
  ws_patch(o->url, o->ref, o->ch, o->nch, &o->patch, &o->err);
}

static void diff_reply(ws_op *o) {
  json_t *files = json_array();
  for (size_t i = 0; i < o->nch; i++) {
    ws_change *c = &o->ch[i];
    json_t *f = json_pack("{s:s, s:s#}", "path", c->path, "status", &c->status, (size_t)1);
    json_object_set_new(f, "old_mode", c->old_mode ? json_sprintf("%06o", c->old_mode) : json_null());
    json_object_set_new(f, "new_mode", c->new_mode ? json_sprintf("%06o", c->new_mode) : json_null());
    json_object_set_new(f, "old_oid", c->old_mode ? json_string(c->old_oid) : json_null());
    json_object_set_new(f, "new_oid", c->new_mode ? json_string(c->new_oid) : json_null());
    if (c->new_mode) json_object_set_new(f, "size", json_integer((json_int_t)c->len));
    if ((o->flags & WS_DIFF_CONTENTS) && c->new_mode) {
      if (c->new_mode == 0120000) {
        json_object_set_new(f, "target", json_stringn((const char *)c->data, c->len));
      } else {
        char *enc = cr_base64_encode(c->data ? c->data : (const uint8_t *)"", c->len);
        json_object_set_new(f, "data", json_string(enc ? enc : ""));
        free(enc);
      }
    }
    json_array_append_new(files, f);
  }
  json_t *res = json_pack("{s:s, s:s, s:o, s:{s:I, s:I, s:I}}", "base_commit", o->ref, "path",
                          o->path, "files", files, "stats", "listed", (json_int_t)o->ng, "read",
                          (json_int_t)o->nreads, "bytes_read", (json_int_t)o->bytes_read);
  /* where the time went, ms since the request: manifest (cached after the
   * first diff), LIST, compare, reads, patch */
  json_object_set_new(json_object_get(res, "stats"), "timing_ms",
                      json_pack("{s:I, s:I, s:I, s:I, s:I}", "list_start", (json_int_t)o->t_list0,
                                "list_done", (json_int_t)o->t_list, "compared",
                                (json_int_t)o->t_compared, "read", (json_int_t)o->t_read,
                                "total", (json_int_t)(cr_mono_ms() - o->t_start)));
  if (o->patch) json_object_set_new(res, "patch", json_string(o->patch));
  finish(o, res, NULL);
}

static void patch_after(uv_work_t *w, int status) {
  ws_op *o = w->data;
  if (o->err) return finish(o, NULL, TAKE_PTR(o->err));
  diff_reply(o);
}

static int change_cmp(const void *a, const void *b) {
  const ws_change *x = a, *y = b;
  /* deletions first, so an added file may replace a deleted directory */
  if ((x->status == 'D') != (y->status == 'D')) return x->status == 'D' ? -1 : 1;
  return strcmp(x->path, y->path);
}

static void diff_finish_changes(ws_op *o) {
  /* drop the ones that turned out unchanged (touched, same content and mode) */
  size_t k = 0;
  for (size_t i = 0; i < o->nch; i++) {
    ws_change *c = &o->ch[i];
    if (c->status == 'M' && c->old_mode == c->new_mode && strcmp(c->old_oid, c->new_oid) == 0) {
      free(c->path);
      free(c->data);
      continue;
    }
    o->ch[k++] = *c;
  }
  o->nch = k;
  qsort(o->ch, o->nch, sizeof(*o->ch), change_cmp);
  if ((o->flags & WS_DIFF_STAT_ONLY) || o->nch == 0) {
    if (!(o->flags & WS_DIFF_STAT_ONLY)) o->patch = strdup("");
    return diff_reply(o);
  }
  int r = uv_queue_work(o->loop, &o->work, patch_work, patch_after);
  if (r < 0) fail(o, CR_E_INTERNAL, -r, "queueing the patch");
}

static int take_paths(ws_op *o, json_t *paths, cr_error **err) {
  if (!paths || json_is_null(paths)) return 0;
  if (!json_is_array(paths) || json_array_size(paths) > 4096)
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "'paths' must be an array of paths");
  o->paths = calloc(json_array_size(paths) + 1, sizeof(char *));
  if (!o->paths) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "paths");
  size_t i;
  json_t *v;
  json_array_foreach(paths, i, v) {
    const char *p = json_string_value(v);
    while (p && p[0] == '.' && p[1] == '/') p += 2;
    if (p && strcmp(p, ".") == 0) p = "";
    if (!p || (*p && !ws_path_ok(p)))
      return cr_error_set(err, CR_E_WORKSPACE_UNSAFE_PATH, 0,
                          "'%s' is not a path relative to the workspace (no '..', not absolute)",
                          p ? p : "(not a string)");
    o->paths[o->npaths++] = strdup(p);
  }
  return 0;
}

static sbx *ws_sandbox(sbx_manager *m, const char *sandbox_id, cr_error **err) {
  sbx *s = sbx_find(m, sandbox_id ? sandbox_id : "");
  if (!s) {
    cr_error_set(err, CR_E_SANDBOX_NOT_FOUND, 0,
                 "no sandbox '%s'; list them with 'cleanroom sandbox ls'", sandbox_id);
    return NULL;
  }
  if (sbx_check_ready(s, err) < 0) return NULL;
  if (!sbx_workspace(s)) {
    cr_error_set(err, CR_E_WORKSPACE_NONE, 0,
                 "sandbox %s has no workspace (create it with --repo-url, or run exec inside a git checkout)",
                 sbx_id(s));
    return NULL;
  }
  return s;
}

int ws_diff(sbx_manager *m, const char *sandbox_id, json_t *paths, unsigned flags,
            ws_done_cb cb, void *ud, cr_error **err) {
  sbx *s = ws_sandbox(m, sandbox_id, err);
  if (!s) return -1;
  json_t *ws = sbx_workspace(s);
  ws_op *o = op_new(m, sbx_id(s), cb, ud);
  if (!o) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "diff");
  o->t_start = cr_mono_ms();
  o->flags = flags;
  o->url = strdup(json_string_value(json_object_get(ws, "repo_url")) ?: "");
  o->ref = strdup(json_string_value(json_object_get(ws, "commit")) ?: "");
  o->path = strdup(ws_path_of(s));
  if (take_paths(o, paths, err) < 0) {
    op_free(o);
    return -1;
  }
  if ((o->mref = man_lookup(o->url, o->ref))) {
    diff_list(o);
    return 0;
  }
  o->mref = calloc(1, sizeof(*o->mref));
  if (!o->mref) {
    op_free(o);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "diff");
  }
  o->mref->refs = 1;
  o->mref->url = strdup(o->url);
  snprintf(o->mref->commit, sizeof(o->mref->commit), "%s", o->ref);
  int r = uv_queue_work(o->loop, &o->work, diff_manifest_work, diff_manifest_after);
  if (r < 0) {
    op_free(o);
    return cr_error_set(err, CR_E_INTERNAL, -r, "queueing the diff");
  }
  return 0;
}

/* ---- copy-in */

static void copy_in_tar_done(ws_op *o, cr_error *err) {
  if (err) return finish(o, NULL, err);
  finish(o, json_pack("{s:I, s:I}", "deleted", (json_int_t)json_array_size(o->deletes), "bytes",
                      (json_int_t)o->tar.len), NULL);
}

static void copy_in_tar(ws_op *o) {
  if (o->tar.len == 0) return copy_in_tar_done(o, NULL);
  sbx *s = op_sandbox(o);
  if (s) tar_in(o, s, o->path, false, copy_in_tar_done);
}

static void rm_event(void *ud, const agent_event *ev) {
  ws_op *o = ud;
  if (ev->type == AGENT_EV_ERROR) {
    cr_error *e = NULL;
    guest_error(&ev->error, &e, "removing deleted files in the workspace");
    return finish(o, NULL, e);
  }
  if (ev->type != AGENT_EV_EXIT) return;
  uint32_t code = ev->exit.has_code ? ev->exit.code : 255;
  if (code != 0)
    return fail(o, CR_E_FILE_ERROR, 0,
                "removing deleted files in the workspace: rm exited with %u (the image needs rm)",
                code);
  copy_in_tar(o);
}

int ws_copy_in(sbx_manager *m, const char *sandbox_id, uint8_t *tar, size_t n, json_t *deletes,
               ws_done_cb cb, void *ud, cr_error **err) {
  sbx *s = ws_sandbox(m, sandbox_id, err);
  if (!s) {
    free(tar);
    return -1;
  }
  if (deletes && !json_is_array(deletes)) {
    free(tar);
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "'delete' must be an array of paths");
  }
  size_t i;
  json_t *v;
  json_array_foreach(deletes, i, v) {
    if (!ws_path_ok(json_string_value(v))) {
      free(tar);
      return cr_error_set(err, CR_E_WORKSPACE_UNSAFE_PATH, 0,
                          "'%s' is not a path relative to the workspace",
                          json_string_value(v) ?: "(not a string)");
    }
  }
  ws_op *o = op_new(m, sbx_id(s), cb, ud);
  if (!o) {
    free(tar);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "copy-in");
  }
  o->tar = (cr_buf){.data = tar, .len = n, .cap = n};
  o->path = strdup(ws_path_of(s));
  o->deletes = deletes ? json_incref(deletes) : json_array();
  if (json_array_size(o->deletes) == 0) {
    copy_in_tar(o);
    return 0;
  }
  /* The agent has no unlink operation: rm in the guest, paths checked above
   * and passed as argv (no shell). */
  size_t nd = json_array_size(o->deletes), argc = 0;
  char **argv = calloc(nd + 3, sizeof(*argv));
  if (!argv) {
    fail(o, CR_E_INTERNAL, ENOMEM, "copy-in");
    return 0;
  }
  argv[argc++] = strdup("rm");
  argv[argc++] = strdup("-rf");
  argv[argc++] = strdup("--");
  json_array_foreach(o->deletes, i, v) {
    if (asprintf(&argv[argc], "%s/%s", o->path, json_string_value(v)) < 0) argv[argc] = NULL;
    argc++;
  }
  bool oom = false;
  for (i = 0; i < argc; i++) oom |= !argv[i];
  agent_exec_req req = {.argv = (const char *const *)argv, .argc = argc};
  if (oom)
    fail(o, CR_E_INTERNAL, ENOMEM, "copy-in");
  else
    started(o, agent_exec_start(sbx_agent(s), &req, rm_event, o));
  for (i = 0; i < argc; i++) free(argv[i]);
  free(argv);
  return 0;
}

/* ---- copy-in from a local checkout the daemon can read (mcp --repo) */

static void local_changes_work(uv_work_t *w) {
  ws_op *o = w->data;
  ws_local *l = NULL;
  if (ws_local_open(o->url, &l, &o->err) < 0) return;
  json_t *record = NULL;
  if (ws_local_changes(l, o->ref, NULL, 0, &o->tar, &o->deletes, &record, &o->err) == 0)
    json_decref(record);
  ws_local_free(l);
}

static void local_changes_after(uv_work_t *w, int status) {
  ws_op *o = w->data;
  if (o->err) return finish(o, NULL, TAKE_PTR(o->err));
  cr_buf tar = o->tar;
  o->tar = (cr_buf){0};
  json_t *deletes = TAKE_PTR(o->deletes);
  cr_error *e = NULL;
  if (ws_copy_in(o->m, o->sid, tar.data, tar.len, deletes, o->cb, o->ud, &e) < 0) {
    json_decref(deletes);
    o->cb(o->ud, NULL, e);
    op_free(o);
    return;
  }
  json_decref(deletes);
  op_free(o); /* the copy-in op reports to cb */
}

int ws_copy_in_local(sbx_manager *m, const char *sandbox_id, const char *dir, ws_done_cb cb,
                     void *ud, cr_error **err) {
  sbx *s = ws_sandbox(m, sandbox_id, err);
  if (!s) return -1;
  if (!dir || dir[0] != '/')
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "the local checkout must be an absolute path");
  ws_op *o = op_new(m, sbx_id(s), cb, ud);
  if (!o) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "copy-in");
  o->url = strdup(dir);
  o->ref = strdup(json_string_value(json_object_get(sbx_workspace(s), "commit")) ?: "");
  int r = uv_queue_work(o->loop, &o->work, local_changes_work, local_changes_after);
  if (r < 0) {
    op_free(o);
    return cr_error_set(err, CR_E_INTERNAL, -r, "queueing the copy-in");
  }
  return 0;
}

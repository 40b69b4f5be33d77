/* Boot templates (template.h). */
#include "sandbox/template.h"
#include "image/image.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/paths.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Bump when the VM's device set (drives, serial ports, rng, memory
 * backend) changes: the key then changes and old templates are rebuilt. */
#define TMPL_DEVICE_SET "v3:mem-file,img-ro,scr-rw,ws-rw,rng,serial:cleanroom.agent;root-mounted"
/* added for templates of sandboxes with a network (tmpl_spec.net) */
#define TMPL_NET_DEVICE ",net:virtio-net(hubport)"

typedef struct tmpl_waiter {
  tmpl_ready_cb cb;
  void *ud;
} tmpl_waiter;

typedef struct tmpl_build {
  struct tmpl_build *next;
  tmpl_registry *r;
  char key[27];
  char *dir, *final, *scratch_src;
  char *image_digest, *image_path, *kernel, *initrd;
  unsigned vcpus, memory_mib;
  bool net;
  tmpl_waiter *w;
  size_t nw;
  uv_timer_t timer; /* the build's deadline */
  uv_timer_t step;  /* the next step, on the next loop turn */
  bool timer_on, done, vm_stopping, timer_closed, step_closed, final_ok;
  cr_error *pending_err; /* failure told to the waiters once the VMM is gone */
  agent_conn *agent;
  backend_vm *vm;
  int64_t start_ms;
} tmpl_build;

struct tmpl_registry {
  uv_loop_t *loop;
  const backend_ops *be;
  char *dir;
  tmpl_build *builds;
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

tmpl_registry *tmpl_registry_new(uv_loop_t *loop, const backend_ops *be) {
  tmpl_registry *r = calloc(1, sizeof(*r));
  if (!r) return NULL;
  r->loop = loop;
  r->be = be;
  r->dir = cr_data_path("templates");
  if (!r->dir) {
    free(r);
    return NULL;
  }
  cr_mkdir_p(r->dir, 0700);
  return r;
}

/* The key parts as one canonical string; NULL when a file is missing. The
 * VMM's part (binary, accelerator, CPU model, guest command line) comes
 * from the backend. */
static char *key_parts(const tmpl_registry *r, const tmpl_spec *sp) {
  _cleanup_free_ char *k = cr_file_identity(sp->kernel);
  _cleanup_free_ char *i = cr_file_identity(sp->initrd);
  _cleanup_free_ char *vmm = r->be->state_identity ? r->be->state_identity() : NULL;
  /* the image file too: a removed and re-imported image is a new file */
  _cleanup_free_ char *im = cr_file_identity(sp->image_path);
  if (!k || !i || !vmm || !im) return NULL;
  char *s = NULL;
  if (asprintf(&s,
               "cleanroom-template\nimage=%s\nimage_file=%s\nkernel=%s\ninitrd=%s\n%s"
               "vcpus=%u\nmemory_mib=%u\ndevices=%s%s\n",
               sp->image_digest, im, k, i, vmm, sp->vcpus, sp->memory_mib, TMPL_DEVICE_SET,
               sp->net ? TMPL_NET_DEVICE : "") < 0)
    return NULL;
  return s;
}

int tmpl_key(const tmpl_registry *r, const tmpl_spec *sp, char ret[27]) {
  _cleanup_free_ char *parts = key_parts(r, sp);
  if (!parts) return -ENOENT;
  char hex[65];
  cr_sha256_hex(parts, strlen(parts), hex);
  memcpy(ret, hex, 26);
  ret[26] = '\0';
  return 0;
}

static bool key_valid(const char *k) {
  if (strlen(k) != 26) return false;
  for (const char *p = k; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
  return true;
}

static uint64_t file_blocks_bytes(const char *path) {
  struct stat st;
  return path && stat(path, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

/* Why the template in dir (named by its key) cannot be used: NULL when it
 * can. Its key parts are in its name (the caller derived key from the spec
 * it wants), so this checks what the key cannot: meta.json, the stored
 * image, the files. New string. */
static char *check_dir(const char *dir, const char *key) {
  _cleanup_free_ char *mp = cr_path_join(dir, "meta.json");
  json_error_t je;
  _cleanup_json_ json_t *meta = mp ? json_load_file(mp, 0, &je) : NULL;
  char *why = NULL;
  if (!meta) return strdup("no readable meta.json");
  const char *digest = json_string_value(json_object_get(meta, "image_digest"));
  const char *ipath = json_string_value(json_object_get(meta, "image_path"));
  const char *mkey = json_string_value(json_object_get(meta, "key"));
  unsigned mem = (unsigned)json_integer_value(json_object_get(meta, "memory_mib"));
  if (!digest || !ipath || !mkey || strcmp(mkey, key)) return strdup("meta.json does not match");
  _cleanup_image_info_ image_info *img = NULL;
  cr_error *e = NULL;
  const char *iid = json_string_value(json_object_get(meta, "image_identity"));
  _cleanup_free_ char *cur = cr_file_identity(ipath);
  if (image_lookup(digest, &img, &e) < 0 || strcmp(img->rootfs, ipath) || !iid || !cur ||
      strcmp(iid, cur)) {
    cr_error_free(e);
    if (asprintf(&why, "its image %s was removed", digest) < 0) why = NULL;
    return why ? why : strdup("its image was removed");
  }
  _cleanup_free_ char *ram = cr_path_join(dir, "ram");
  _cleanup_free_ char *state = cr_path_join(dir, "state/vmstate");
  struct stat st;
  if (!ram || stat(ram, &st) < 0 || (uint64_t)st.st_size != (uint64_t)mem << 20)
    return strdup("its RAM file is missing or has the wrong size");
  if (!state || stat(state, &st) < 0 || st.st_size < 16)
    return strdup("its device state is missing");
  _cleanup_free_ char *scratch = cr_path_join(dir, "scratch.ext4");
  if (!scratch || access(scratch, R_OK) < 0) return strdup("its scratch disk is missing");
  return NULL;
}

static void remove_dir(tmpl_registry *r, const char *key, const char *why) {
  _cleanup_free_ char *dir = cr_path_join(r->dir, key);
  if (!dir) return;
  log_info("removing template %s: %s", key, why);
  /* the RAM file may still be mapped by clones: unlinking is safe (their
   * private mappings keep the pages) */
  cr_rm_rf(dir);
}

int tmpl_lookup(tmpl_registry *r, const tmpl_spec *sp, char **ret_dir, char **why) {
  char key[27];
  if (tmpl_key(r, sp, key) < 0) {
    if (why) *why = strdup("the kernel, initramfs or QEMU binary cannot be identified");
    return 0;
  }
  _cleanup_free_ char *dir = cr_path_join(r->dir, key);
  if (!dir || access(dir, F_OK) < 0) {
    if (why) *why = strdup("no template yet");
    return 0;
  }
  char *bad = check_dir(dir, key);
  if (bad) {
    remove_dir(r, key, bad);
    if (why)
      *why = bad;
    else
      free(bad);
    return 0;
  }
  *ret_dir = TAKE_PTR(dir);
  return 1;
}

/* ---- building */

static void build_free(tmpl_build *b) {
  cr_error_free(b->pending_err);
  free(b->dir);
  free(b->final);
  free(b->scratch_src);
  free(b->image_digest);
  free(b->image_path);
  free(b->kernel);
  free(b->initrd);
  free(b->w);
  free(b);
}

static void build_maybe_free(tmpl_build *b);

static void build_closed(uv_handle_t *h) {
  tmpl_build *b = h->data;
  if (h == (uv_handle_t *)&b->timer)
    b->timer_closed = true;
  else
    b->step_closed = true;
  build_maybe_free(b);
}

static void build_maybe_free(tmpl_build *b) {
  if (b->done && b->timer_closed && b->step_closed && !b->vm_stopping) build_free(b);
}

static void build_unlink(tmpl_build *b) {
  for (tmpl_build **p = &b->r->builds; *p; p = &(*p)->next)
    if (*p == b) {
      *p = b->next;
      return;
    }
}

static void notify_all(tmpl_build *b, const char *dir, cr_error *err) {
  for (size_t i = 0; i < b->nw; i++) {
    cr_error *e = NULL;
    if (err) cr_error_set(&e, cr_error_reason(err), 0, "%s", err->message);
    b->w[i].cb(b->w[i].ud, dir, e);
  }
  b->nw = 0;
  cr_error_free(err);
}

static void on_build_vm_stopped(void *ud, backend_vm *vm, cr_error *err) {
  tmpl_build *b = ud;
  cr_error_free(err);
  b->vm_stopping = false;
  if (b->done && !b->final_ok) cr_rm_rf(b->dir);
  /* a failed build's waiters hear of it once its VMM is gone */
  if (b->pending_err) notify_all(b, NULL, TAKE_PTR(b->pending_err));
  build_maybe_free(b);
}

static void build_kill(tmpl_build *b) {
  if (b->agent) {
    agent_conn *a = b->agent;
    b->agent = NULL;
    agent_conn_close(a);
  }
  if (b->vm) {
    backend_vm *vm = TAKE_PTR(b->vm);
    b->vm_stopping = true;
    backend_vm_ops(vm)->stop(vm, on_build_vm_stopped, b);
  }
}

/* Ends the build: notifies waiters (dir on success, else err) and frees. */
static void build_end(tmpl_build *b, const char *dir, cr_error *err) {
  if (b->done) return;
  b->done = true;
  build_unlink(b);
  if (b->timer_on) uv_timer_stop(&b->timer);
  b->timer_on = false;
  b->final_ok = dir != NULL;
  build_kill(b);
  if (!dir && !b->vm_stopping) cr_rm_rf(b->dir);
  if (!dir && b->vm_stopping)
    b->pending_err = err; /* on_build_vm_stopped tells the waiters */
  else
    notify_all(b, dir, err);
  uv_timer_stop(&b->step);
  uv_close((uv_handle_t *)&b->timer, build_closed);
  uv_close((uv_handle_t *)&b->step, build_closed);
}

static void build_fail(tmpl_build *b, const char *reason, const char *fmt, ...) _printf_(3, 4);
static void build_fail(tmpl_build *b, const char *reason, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = NULL;
  if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
  va_end(ap);
  cr_error *e = NULL;
  cr_error_set(&e, reason, 0, "building the template: %s", msg ? msg : "failed");
  log_warn("template %s: %s", b->key, msg ? msg : "failed");
  free(msg);
  build_end(b, NULL, e);
}

static int write_meta(tmpl_build *b) {
  _cleanup_free_ char *ram = cr_path_join(b->dir, "ram");
  _cleanup_free_ char *state = cr_path_join(b->dir, "state/vmstate");
  tmpl_spec sp = {b->image_digest, b->image_path, b->kernel, b->initrd, b->vcpus, b->memory_mib,
                  NULL, b->net};
  _cleanup_free_ char *parts = key_parts(b->r, &sp);
  char created[32];
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
  _cleanup_json_ json_t *j = json_pack(
      "{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:I, s:I, s:I, s:s?}", "key", b->key,
      "image_digest", b->image_digest, "image_path", b->image_path, "kernel", b->kernel,
      "initrd", b->initrd, "vcpus", (int)b->vcpus, "memory_mib", (int)b->memory_mib,
      "created_at", created, "ram_bytes", (json_int_t)file_blocks_bytes(ram), "state_bytes",
      (json_int_t)file_blocks_bytes(state), "build_ms", (json_int_t)(now_ms() - b->start_ms),
      "key_parts", parts);
  if (j) json_object_set_new(j, "net", json_boolean(b->net));
  _cleanup_free_ char *iid = cr_file_identity(b->image_path);
  if (j && iid) json_object_set_new(j, "image_identity", json_string(iid));
  _cleanup_free_ char *txt = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
  _cleanup_free_ char *mp = cr_path_join(b->dir, "meta.json");
  if (!txt || !mp) return -ENOMEM;
  return cr_write_file_atomic(mp, txt, strlen(txt), 0600);
}

static void on_build_vm_gone(void *ud, backend_vm *vm, cr_error *err);

/* Saved: drop what clones bring their own of, write meta, publish. */
static void on_build_saved(void *ud, backend_vm *vm, cr_error *err) {
  tmpl_build *b = ud;
  if (b->done) {
    cr_error_free(err);
    return;
  }
  if (err) {
    cr_error_wrap(&err, "building the template");
    build_end(b, NULL, err);
    return;
  }
  /* the guest is stopped: it never sees this hang-up */
  if (b->agent) {
    agent_conn *a = b->agent;
    b->agent = NULL;
    agent_conn_close(a);
  }
  /* the VMM goes; the files it leaves are the template */
  backend_vm *v = TAKE_PTR(b->vm);
  b->vm_stopping = true;
  backend_vm_ops(v)->stop(v, on_build_vm_gone, b);
}

static void on_build_vm_gone(void *ud, backend_vm *vm, cr_error *err) {
  tmpl_build *b = ud;
  b->vm_stopping = false;
  cr_error_free(err);
  if (b->done) {
    build_maybe_free(b);
    return;
  }
  /* scratch.ext4 stays: the guest has it mounted, clones get copies; the
   * workspace disk goes: the template never mounts it, clones get a blank one */
  static const char *const drop[] = {SBX_WS_DISK, "agent.sock", "qmp.sock"};
  for (size_t i = 0; i < ELEMENTSOF(drop); i++) {
    _cleanup_free_ char *p = cr_path_join(b->dir, drop[i]);
    if (p) unlink(p);
  }
  int r = write_meta(b);
  if (r < 0) {
    build_fail(b, CR_E_IO, "writing meta.json: %s", strerror(-r));
    return;
  }
  cr_rm_rf(b->final);
  if (rename(b->dir, b->final) < 0) {
    build_fail(b, CR_E_IO, "renaming %s: %s", b->dir, strerror(errno));
    return;
  }
  log_info("template %s built in %lld ms", b->key, (long long)(now_ms() - b->start_ms));
  build_end(b, b->final, NULL);
}

static void build_finish(uv_timer_t *t) {
  tmpl_build *b = t->data;
  if (b->done) return;
  /* The agent connection stays open through the save: the saved port is
   * "host connected", so a clone whose daemon connects before the state
   * loads sees no hang-up and reconnect (each a round of interrupts and
   * wake-ups TCG would translate anew in every clone), only its HELLO. */
  _cleanup_free_ char *state = cr_path_join(b->dir, "state");
  cr_error *e = NULL;
  if (!state || cr_mkdir_p(state, 0700) < 0) {
    build_fail(b, CR_E_IO, "creating %s", state ? state : "state dir");
    return;
  }
  /* device state only: the RAM stays in the file clones map */
  backend_save_opts o = {.state_dir = state, .resume_after = false, .ram_in_file = true};
  if (backend_vm_ops(b->vm)->save(b->vm, &o, on_build_saved, b, &e) < 0) {
    cr_error_wrap(&e, "building the template");
    build_end(b, NULL, e);
  }
}

static void on_build_timeout(uv_timer_t *t) {
  tmpl_build *b = t->data;
  b->timer_on = false;
  build_fail(b, CR_E_RUNTIME_LAUNCH_FAILED, "the guest agent did not answer in time");
}

/* The next step on the next loop turn (the conn is inside its callback). */
static void build_next(tmpl_build *b, uv_timer_cb fn) {
  uv_timer_start(&b->step, fn, 0, 0);
}

static void on_build_agent_lost(uv_timer_t *t) {
  tmpl_build *b = t->data;
  if (!b->done) build_fail(b, CR_E_RUNTIME_LAUNCH_FAILED, "lost the guest agent");
}

static void on_build_mount_failed(uv_timer_t *t) {
  tmpl_build *b = t->data;
  if (!b->done) build_fail(b, CR_E_RUNTIME_LAUNCH_FAILED, "the guest could not mount its root");
}

/* The warm-up `true` ended (however: its exit code does not matter). */
static void on_build_warmed(void *ud, const agent_event *ev) {
  tmpl_build *b = ud;
  if (b->done) return;
  if (ev->type == AGENT_EV_EXIT || ev->type == AGENT_EV_ERROR) build_next(b, build_finish);
}

static void on_build_activated(void *ud, const agent_event *ev) {
  tmpl_build *b = ud;
  if (b->done) return;
  if (ev->type != AGENT_EV_OK) {
    build_next(b, on_build_mount_failed);
    return;
  }
  /* one `true` from the image: its binary, libraries and the dentries of
   * the exec path are in the page cache (the RAM file) of every clone */
  long ch = agent_exec_start(b->agent, &sbx_warm_exec, on_build_warmed, b);
  if (ch < 0) build_next(b, build_finish);
}

static void on_build_agent(agent_conn *c, void *ud, int status, const char *message,
                           const uint8_t *hello, size_t hello_len) {
  tmpl_build *b = ud;
  if (b->done) return;
  if (status < 0) {
    log_warn("template %s: agent: %s", b->key, message ? message : "closed");
    build_next(b, on_build_agent_lost);
    return;
  }
  /* mount the root (image + the template's scratch disk + overlay): the
   * same for every clone, and the slowest part of ACTIVATE under TCG.
   * Nothing sandbox-specific (clock, entropy, hostname, network) is set:
   * a clone's ACTIVATE does that, and skips the mounts. */
  agent_activate_req a = {
      .image_dev = "serial:cr-image",
      .scratch_dev = "serial:cr-scratch",
      /* with a NIC: up, IPv6 off, no address (the clone's ACTIVATE adds it) */
      .net_up = b->net,
  };
  int r = agent_activate(b->agent, &a, on_build_activated, b);
  if (r < 0) build_next(b, on_build_agent_lost);
}

static void on_build_stream(void *ud, backend_vm *vm, int fd, cr_error *err) {
  tmpl_build *b = ud;
  if (b->done || vm != b->vm) {
    if (fd >= 0) close(fd);
    cr_error_free(err);
    return;
  }
  if (err) {
    build_end(b, NULL, err);
    return;
  }
  b->agent = agent_conn_new(b->r->loop, on_build_agent, b);
  if (!b->agent || agent_conn_open(b->agent, fd) < 0) {
    if (!b->agent) close(fd);
    build_fail(b, CR_E_RUNTIME_LAUNCH_FAILED, "cannot open the agent stream");
  }
}

static void on_build_ready(void *ud, backend_vm *vm, cr_error *err) {
  tmpl_build *b = ud;
  if (b->done || vm != b->vm) {
    cr_error_free(err);
    return;
  }
  if (err) {
    build_end(b, NULL, err);
    return;
  }
  cr_error *e = NULL;
  if (backend_vm_ops(vm)->connect_agent(vm, on_build_stream, b, &e) < 0) build_end(b, NULL, e);
}

static void on_build_exited(void *ud, backend_vm *vm, int status, int sig, const char *why) {
  tmpl_build *b = ud;
  if (b->done || vm != b->vm) return;
  build_fail(b, CR_E_VMM_EXITED, "%s", why ? why : "the VMM exited");
}

static const backend_events build_events = {.ready = on_build_ready, .exited = on_build_exited};

static void add_waiter(tmpl_build *b, tmpl_ready_cb done, void *ud) {
  tmpl_waiter *nw = realloc(b->w, (b->nw + 1) * sizeof(*b->w));
  if (!nw) {
    cr_error *e = NULL;
    cr_error_set(&e, CR_E_INTERNAL, ENOMEM, "template waiters");
    done(ud, NULL, e);
    return;
  }
  b->w = nw;
  b->w[b->nw++] = (tmpl_waiter){done, ud};
}

void tmpl_ensure(tmpl_registry *r, const tmpl_spec *sp, uint64_t timeout_ms,
                 tmpl_ready_cb done, void *ud) {
  _cleanup_free_ char *dir = NULL;
  if (tmpl_lookup(r, sp, &dir, NULL) == 1) {
    done(ud, dir, NULL);
    return;
  }
  char key[27];
  cr_error *e = NULL;
  if (tmpl_key(r, sp, key) < 0) {
    cr_error_set(&e, CR_E_KERNEL_NOT_FOUND, 0,
                 "the kernel, initramfs or QEMU binary cannot be identified");
    done(ud, NULL, e);
    return;
  }
  for (tmpl_build *b = r->builds; b; b = b->next)
    if (!strcmp(b->key, key)) {
      add_waiter(b, done, ud);
      return;
    }
  tmpl_build *b = calloc(1, sizeof(*b));
  if (!b) {
    cr_error_set(&e, CR_E_INTERNAL, ENOMEM, "template");
    done(ud, NULL, e);
    return;
  }
  b->r = r;
  memcpy(b->key, key, sizeof(key));
  b->start_ms = now_ms();
  b->vcpus = sp->vcpus;
  b->memory_mib = sp->memory_mib;
  b->net = sp->net;
  b->image_digest = strdup(sp->image_digest);
  b->image_path = strdup(sp->image_path);
  b->kernel = strdup(sp->kernel);
  b->initrd = strdup(sp->initrd);
  b->final = cr_path_join(r->dir, key);
  if (asprintf(&b->dir, "%s/.build-%s", r->dir, key) < 0) b->dir = NULL;
  uv_timer_init(r->loop, &b->timer);
  b->timer.data = b;
  uv_timer_init(r->loop, &b->step);
  b->step.data = b;
  b->next = r->builds;
  r->builds = b;
  add_waiter(b, done, ud);
  if (!b->image_digest || !b->image_path || !b->kernel || !b->initrd || !b->final || !b->dir) {
    build_fail(b, CR_E_INTERNAL, "out of memory");
    return;
  }
  cr_rm_rf(b->dir);
  int rr = cr_mkdir_p(b->dir, 0700);
  _cleanup_free_ char *scratch = cr_path_join(b->dir, "scratch.ext4");
  _cleanup_free_ char *ram = cr_path_join(b->dir, "ram");
  /* a blank workspace disk: a clone gets its own under the same serial */
  _cleanup_free_ char *wsd = cr_path_join(b->dir, SBX_WS_DISK);
  if (rr < 0 || !scratch || !ram || !wsd ||
      (rr = cr_copy_file_sparse(sp->scratch_blank, scratch, 0600, 0)) < 0 ||
      (rr = sbx_ws_disk_blank(wsd)) < 0) {
    build_fail(b, CR_E_IO, "preparing %s: %s", b->dir, strerror(rr < 0 ? -rr : ENOMEM));
    return;
  }
  char id[40];
  snprintf(id, sizeof(id), "tmpl-%s", key);
  backend_vm_config cfg = {
      .id = id, .dir = b->dir, .kernel = sp->kernel, .initrd = sp->initrd,
      .image = sp->image_path, .scratch = scratch, .workspace = wsd, .ram_path = ram,
      .vcpus = sp->vcpus, .memory_mib = sp->memory_mib,
      .net = {.placeholder = sp->net},
  };
  b->timer_on = true;
  uv_timer_start(&b->timer, on_build_timeout, timeout_ms, 0);
  log_info("building template %s (image %s, %u vcpus, %u MiB%s)", key, sp->image_digest,
           sp->vcpus, sp->memory_mib, sp->net ? ", with a NIC" : "");
  if (r->be->launch(r->loop, &cfg, &build_events, b, &b->vm, &e) < 0) {
    b->vm = NULL;
    build_end(b, NULL, e);
  }
}

void tmpl_registry_free(tmpl_registry *r) {
  if (!r) return;
  while (r->builds) {
    cr_error *e = NULL;
    cr_error_set(&e, CR_E_INTERNAL, 0, "the daemon is shutting down");
    build_end(r->builds, NULL, e);
  }
  free(r->dir);
  free(r);
}

/* ---- listing, removal */

json_t *tmpl_list(tmpl_registry *r) {
  tmpl_gc(r); /* the image store may have changed behind the daemon (CLI image rm) */
  json_t *arr = json_array();
  DIR *d = opendir(r->dir);
  if (!d) return arr;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (!key_valid(de->d_name)) continue;
    _cleanup_free_ char *dir = cr_path_join(r->dir, de->d_name);
    _cleanup_free_ char *mp = cr_path_join(dir, "meta.json");
    json_error_t je;
    json_t *meta = mp ? json_load_file(mp, 0, &je) : NULL;
    if (!meta) meta = json_pack("{s:s}", "key", de->d_name);
    json_object_del(meta, "key_parts");
    _cleanup_free_ char *why = check_dir(dir, de->d_name);
    json_object_set_new(meta, "valid", json_boolean(!why));
    json_object_set_new(meta, "invalid_reason", why ? json_string(why) : json_null());
    json_array_append_new(arr, meta);
  }
  closedir(d);
  for (tmpl_build *b = r->builds; b; b = b->next)
    json_array_append_new(arr, json_pack("{s:s, s:s, s:i, s:i, s:b, s:s}", "key", b->key,
                                         "image_digest", b->image_digest, "vcpus",
                                         (int)b->vcpus, "memory_mib", (int)b->memory_mib,
                                         "valid", 0, "invalid_reason", "building"));
  return arr;
}

int tmpl_remove(tmpl_registry *r, const char *key, cr_error **err) {
  bool all = !strcmp(key, "all");
  if (!all && (strlen(key) < 4 || strlen(key) > 26))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "a template key (or a prefix of at least 4 characters) or 'all'");
  DIR *d = opendir(r->dir);
  if (!d) return cr_error_set(err, CR_E_IO, errno, "reading %s", r->dir);
  char **hits = NULL;
  size_t n = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (!key_valid(de->d_name) || (!all && strncmp(de->d_name, key, strlen(key)))) continue;
    char **nh = realloc(hits, (n + 1) * sizeof(*hits));
    if (!nh) break;
    hits = nh;
    hits[n++] = strdup(de->d_name);
  }
  closedir(d);
  int ret;
  if (!all && n > 1) {
    ret = cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "template prefix %s is ambiguous", key);
  } else if (!all && n == 0) {
    ret = cr_error_set(err, CR_E_TEMPLATE_NOT_FOUND, 0, "no template %s", key);
  } else {
    for (size_t i = 0; i < n; i++)
      if (hits[i]) remove_dir(r, hits[i], "removed on request");
    ret = (int)n;
  }
  for (size_t i = 0; i < n; i++) free(hits[i]);
  free(hits);
  return ret;
}

int tmpl_gc(tmpl_registry *r) {
  DIR *d = opendir(r->dir);
  if (!d) return 0;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (!strncmp(de->d_name, ".build-", 7)) {
      bool active = false;
      for (tmpl_build *b = r->builds; b; b = b->next)
        if (!strcmp(b->key, de->d_name + 7)) active = true;
      if (!active) {
        _cleanup_free_ char *p = cr_path_join(r->dir, de->d_name);
        if (p) cr_rm_rf(p);
      }
      continue;
    }
    if (!key_valid(de->d_name)) continue;
    _cleanup_free_ char *dir = cr_path_join(r->dir, de->d_name);
    _cleanup_free_ char *why = dir ? check_dir(dir, de->d_name) : NULL;
    if (why) {
      remove_dir(r, de->d_name, why);
      n++;
    }
  }
  closedir(d);
  return n;
}

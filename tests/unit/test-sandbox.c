/* The sandbox state machine against a fake backend.
 *
 * The fake is a test double of the backend vtable (backend.h), not of QEMU:
 * it implements launch, restore, connect_agent, pause, resume, save, stop,
 * kill and alive in-process, so the sandbox manager (src/sandbox) runs its real
 * code (create, boot sequence, failure paths, removal) while this test says
 * when the "VMM" is ready, fails, dies or is gone. It exists because this
 * tests the state machine alone; the integration tests (tests/integration)
 * use real QEMU. The agent end of connect_agent is a socketpair served by a
 * thread that speaks just enough of the agent protocol (HELLO, ACTIVATE). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backend/backend-vm.h"
#include "image/image.h"
#include "proto/agent_proto.h"
#include "sandbox/sandbox-internal.h"
#include "util/fs.h"
#include "util/macro.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the fake backend */

typedef enum {
  LAUNCH_OK,         /* ready (err NULL) on the next loop turn */
  LAUNCH_FAIL_SYNC,  /* launch() itself fails */
  LAUNCH_FAIL_ASYNC, /* ready reports runtime_launch_failed */
  LAUNCH_HOLD,       /* ready only when the test says (fake_report_ready) */
} launch_mode;

static struct {
  launch_mode launch;
  bool activate_refused; /* the fake agent answers ACTIVATE with ERROR */
  bool hold_stops;       /* stop callbacks wait for fake_release_stops() */
  /* what happened */
  int launches, restores, stops, kills, saves, pauses, resumes, agents;
  backend_vm *last_vm;
  unsigned last_vcpus, last_mem;
  char last_restore_dir[512];
  bool last_had_image, last_had_scratch;
  backend_vm *held[8];
  size_t n_held;
  pthread_t guests[32];
  size_t n_guests;
} fake;

typedef struct fake_vm {
  bool alive, stopping, killed;
  backend_done_cb stop_cb;
  void *stop_ud;
  int guest_fd; /* the agent end the fake guest serves (-1: none) */
} fake_vm;

static void fake_free_priv(void *p) {
  fake_vm *f = p;
  if (f && f->guest_fd >= 0) close(f->guest_fd);
  free(f);
}

static const backend_vm_impl fake_impl = {.free_priv = fake_free_priv, .log_name = NULL};

static fake_vm *F(const backend_vm *vm) { return vm->priv; }

static json_t *fake_capabilities(void) {
  return json_pack("{s:s, s:s, s:b, s:b, s:s, s:b}", "backend", "fake", "accel", "none", "kvm",
                   0, "snapshots", 1, "network", "none", "egress", 0);
}

static backend_vm *fake_new(uv_loop_t *loop, const backend_vm_config *cfg,
                            const backend_events *ev, void *ud);

static int fake_launch(uv_loop_t *loop, const backend_vm_config *cfg, const backend_events *ev,
                       void *ud, backend_vm **ret, cr_error **err);

static int fake_restore(uv_loop_t *loop, const backend_vm_config *cfg, const char *state_dir,
                        const backend_events *ev, void *ud, backend_vm **ret, cr_error **err) {
  fake.restores++;
  snprintf(fake.last_restore_dir, sizeof(fake.last_restore_dir), "%s", state_dir);
  _cleanup_free_ char *state = cr_path_join(state_dir, "fake.state");
  backend_vm *vm = fake_new(loop, cfg, ev, ud);
  if (!vm) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "fake");
  *ret = vm;
  cr_error *e = NULL;
  if (access(state, R_OK) < 0)
    cr_error_set(&e, CR_E_SNAPSHOT_FAILED, 0, "fake: no fake.state in %s", state_dir);
  else
    F(vm)->alive = true;
  backend_vm_report_ready(vm, e);
  return 0;
}

static backend_vm *fake_new(uv_loop_t *loop, const backend_vm_config *cfg,
                            const backend_events *ev, void *ud);

static int fake_attach(uv_loop_t *loop, const backend_vm_config *cfg, pid_t pid,
                       const backend_events *ev, void *ud, backend_vm **ret, cr_error **err) {
  return cr_error_set(err, CR_E_BACKEND_UNSUPPORTED, 0, "fake cannot attach");
}

/* The guest agent: HELLO -> HELLO_REPLY, ACTIVATE -> OK (or ERROR), until
 * the host end closes or the "VMM" goes. */
static int read_full(int fd, void *buf, size_t n) {
  uint8_t *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static void *guest_main(void *arg) {
  int fd = (int)(intptr_t)arg;
  uint8_t *buf = malloc(AP_HEADER_SIZE + AP_MAX_PAYLOAD);
  for (;;) {
    if (read_full(fd, buf, AP_HEADER_SIZE) < 0) break;
    uint32_t len = (uint32_t)buf[0] | (uint32_t)buf[1] << 8 | (uint32_t)buf[2] << 16 |
                   (uint32_t)buf[3] << 24;
    if (len > AP_MAX_PAYLOAD || read_full(fd, buf + AP_HEADER_SIZE, len) < 0) break;
    ap_header h;
    const uint8_t *payload;
    if (ap_frame_parse(buf, AP_HEADER_SIZE + len, AP_MAX_PAYLOAD, &h, &payload) <= 0) break;
    ap_buf b = {0};
    if (h.type == AP_HELLO) {
      ap_frame_begin(&b, AP_HELLO_REPLY, h.channel);
      ap_put_u32(&b, AP_T_VERSION, AP_VERSION);
    } else if (h.type == AP_ACTIVATE && fake.activate_refused) {
      ap_frame_begin(&b, AP_ERROR, h.channel);
      ap_put_str(&b, AP_T_MESSAGE, "fake: activation refused");
    } else if (h.type == AP_ACTIVATE) {
      ap_frame_begin(&b, AP_OK, h.channel);
    } else {
      continue;
    }
    ap_frame_end(&b);
    bool ok = write(fd, b.data, b.len) == (ssize_t)b.len;
    ap_buf_free(&b);
    if (!ok) break;
  }
  free(buf);
  close(fd);
  return NULL;
}

typedef struct agent_req {
  backend_agent_cb cb;
  void *ud;
  int fd;
} agent_req;

static void agent_now(backend_vm *vm, void *arg) {
  agent_req *q = arg;
  q->cb(q->ud, vm, q->fd, NULL);
  free(q);
}

static int fake_connect_agent(backend_vm *vm, backend_agent_cb cb, void *ud, cr_error **err) {
  int sv[2];
  if (!F(vm)->alive) return cr_error_set(err, CR_E_VMM_EXITED, 0, "fake: the VMM is gone");
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return cr_error_set(err, CR_E_INTERNAL, errno, "socketpair");
  fake.agents++;
  if (F(vm)->guest_fd >= 0) close(F(vm)->guest_fd);
  F(vm)->guest_fd = fcntl(sv[1], F_DUPFD_CLOEXEC, 3);
  assert_true(fake.n_guests < ELEMENTSOF(fake.guests));
  assert_int_equal(pthread_create(&fake.guests[fake.n_guests++], NULL, guest_main,
                                  (void *)(intptr_t)sv[1]), 0);
  agent_req *q = calloc(1, sizeof(*q));
  q->cb = cb;
  q->ud = ud;
  q->fd = sv[0];
  return backend_vm_later(vm, agent_now, q);
}

typedef struct done_req {
  backend_done_cb cb;
  void *ud;
} done_req;

static void done_now(backend_vm *vm, void *arg) {
  done_req *q = arg;
  q->cb(q->ud, vm, NULL);
  free(q);
}

static int later_done(backend_vm *vm, backend_done_cb cb, void *ud) {
  done_req *q = calloc(1, sizeof(*q));
  q->cb = cb;
  q->ud = ud;
  return backend_vm_later(vm, done_now, q);
}

static int fake_pause(backend_vm *vm, backend_done_cb cb, void *ud, cr_error **err) {
  fake.pauses++;
  return later_done(vm, cb, ud);
}

static int fake_resume(backend_vm *vm, backend_done_cb cb, void *ud, cr_error **err) {
  fake.resumes++;
  return later_done(vm, cb, ud);
}

static int fake_save(backend_vm *vm, const backend_save_opts *o, backend_done_cb cb, void *ud,
                     cr_error **err) {
  fake.saves++;
  _cleanup_free_ char *state = cr_path_join(o->state_dir, "fake.state");
  int r = cr_write_file_atomic(state, "fake vm state\n", 14, 0600);
  if (r < 0) return cr_error_set(err, CR_E_IO, -r, "fake save");
  return later_done(vm, cb, ud);
}

/* The "VMM" is gone: its agent end closes (as a dying QEMU's socket does),
 * the stop callback runs, the handle is freed. */
static void guest_gone(backend_vm *vm) {
  fake_vm *f = F(vm);
  f->alive = false;
  /* a descriptor of its own (the guest thread closes the other): never one
   * the number was reused for */
  if (f->guest_fd >= 0) {
    shutdown(f->guest_fd, SHUT_RDWR);
    close(f->guest_fd);
  }
  f->guest_fd = -1;
}

static void stop_now(backend_vm *vm, void *arg) {
  fake_vm *f = F(vm);
  guest_gone(vm);
  backend_done_cb cb = f->stop_cb;
  if (cb) cb(f->stop_ud, vm, NULL);
  backend_vm_forget(vm); /* finished: freed once the deferred call returns */
}

static void fake_stop(backend_vm *vm, backend_done_cb cb, void *ud) {
  fake_vm *f = F(vm);
  assert_false(f->stopping); /* one stop per handle */
  fake.stops++;
  f->stopping = true;
  f->stop_cb = cb;
  f->stop_ud = ud;
  if (fake.hold_stops) {
    assert_true(fake.n_held < ELEMENTSOF(fake.held));
    fake.held[fake.n_held++] = vm;
    return;
  }
  assert_int_equal(backend_vm_later(vm, stop_now, NULL), 0);
}

/* kill: a stop without the polite quit; the same callback rules. */
static void fake_kill_op(backend_vm *vm, backend_done_cb cb, void *ud) {
  fake.kills++;
  fake.stops--; /* counted as a kill, not a stop */
  F(vm)->killed = true;
  fake_stop(vm, cb, ud);
}

static bool fake_alive(const backend_vm *vm) { return F(vm)->alive; }

static char *fake_state_identity(void) { return strdup("vmm=fake\n"); }

static const backend_ops fake_ops = {
    .name = "fake",
    .capabilities = fake_capabilities,
    .state_identity = fake_state_identity,
    .launch = fake_launch,
    .restore = fake_restore,
    .attach = fake_attach,
    .connect_agent = fake_connect_agent,
    .pause = fake_pause,
    .resume = fake_resume,
    .save = fake_save,
    .stop = fake_stop,
    .kill = fake_kill_op,
    .alive = fake_alive,
};

static backend_vm *fake_new(uv_loop_t *loop, const backend_vm_config *cfg,
                            const backend_events *ev, void *ud) {
  backend_vm *vm = backend_vm_new(&fake_ops, &fake_impl, loop, cfg, ev, ud);
  if (!vm) return NULL;
  fake_vm *f = calloc(1, sizeof(*f));
  f->guest_fd = -1;
  vm->priv = f;
  fake.last_vm = vm;
  fake.last_vcpus = cfg->vcpus;
  fake.last_mem = cfg->memory_mib;
  fake.last_had_image = cfg->image && access(cfg->image, R_OK) == 0;
  fake.last_had_scratch = cfg->scratch && access(cfg->scratch, R_OK) == 0;
  return vm;
}

static int fake_launch(uv_loop_t *loop, const backend_vm_config *cfg, const backend_events *ev,
                       void *ud, backend_vm **ret, cr_error **err) {
  fake.launches++;
  if (fake.launch == LAUNCH_FAIL_SYNC)
    return cr_error_set(err, CR_E_BACKEND_UNAVAILABLE, 0, "fake: cannot start a VMM");
  backend_vm *vm = fake_new(loop, cfg, ev, ud);
  if (!vm) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "fake");
  *ret = vm;
  if (fake.launch == LAUNCH_HOLD) return 0;
  cr_error *e = NULL;
  if (fake.launch == LAUNCH_FAIL_ASYNC)
    cr_error_set(&e, CR_E_RUNTIME_LAUNCH_FAILED, 0, "fake: the VMM died while starting");
  else
    F(vm)->alive = true;
  backend_vm_report_ready(vm, e);
  return 0;
}

/* The test's hands on the fake VMM. */
static void fake_report_ready(backend_vm *vm) {
  F(vm)->alive = true;
  backend_vm_report_ready(vm, NULL);
}

static void exited_now(backend_vm *vm, void *arg) {
  guest_gone(vm);
  vm->ev.exited(vm->ud, vm, -1, 9, "the fake VMM was killed by signal 9");
}

static void fake_kill(backend_vm *vm) {
  assert_int_equal(backend_vm_later(vm, exited_now, NULL), 0);
}

/* Lets the held callbacks of stops (killed false) or kills (true) run. */
static void fake_release(bool killed) {
  size_t k = 0;
  for (size_t i = 0; i < fake.n_held; i++) {
    if (F(fake.held[i])->killed == killed)
      assert_int_equal(backend_vm_later(fake.held[i], stop_now, NULL), 0);
    else
      fake.held[k++] = fake.held[i];
  }
  fake.n_held = k;
}

static void fake_release_stops(void) {
  fake_release(false);
  fake_release(true);
}

static void fake_reset(void) {
  pthread_t g[32];
  size_t ng = fake.n_guests;
  memcpy(g, fake.guests, sizeof(g));
  memset(&fake, 0, sizeof(fake));
  memcpy(fake.guests, g, sizeof(g));
  fake.n_guests = ng;
}

/* ---- the loop */

static uv_loop_t loop;
static sbx_manager *mgr;
static char tmp[] = "/tmp/cr-sbx-fake-XXXXXX";

static void on_tick(uv_timer_t *t) {}

/* Runs the loop until *flag or ms pass; returns *flag. */
static bool run_until(const bool *flag, unsigned ms) {
  uv_timer_t tick;
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, on_tick, 10, 10); /* wakes the loop to check the deadline */
  uint64_t end = uv_now(&loop) + ms;
  while (!*flag && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  return *flag;
}

/* Runs the loop for ms whatever happens (to show that something does not). */
static void run_for(unsigned ms) {
  bool never = false;
  run_until(&never, ms);
}

typedef struct created {
  bool done;
  sbx *s;
  char reason[64];
  char message[512];
} created;

static void on_created(void *ud, sbx *s, cr_error *err) {
  created *c = ud;
  c->done = true;
  c->s = s;
  if (err) {
    snprintf(c->reason, sizeof(c->reason), "%s", cr_error_reason(err));
    snprintf(c->message, sizeof(c->message), "%s", err->message ? err->message : "");
  }
  cr_error_free(err);
}

typedef struct removed {
  bool done;
  bool failed;
} removed;

static void on_removed(void *ud, cr_error *err) {
  removed *r = ud;
  r->done = true;
  r->failed = err != NULL;
  cr_error_free(err);
}

static sbx *create(created *c, char *id, size_t n) {
  memset(c, 0, sizeof(*c));
  sbx_create_params p = {.image = "test/fake", .vcpus = 2, .memory_mib = 128};
  cr_error *err = NULL;
  int r = sbx_create(mgr, &p, on_created, NULL, c, &err);
  if (r < 0) fail_msg("sbx_create: %s", err ? err->message : "?");
  size_t k = 0;
  sbx **all = sbx_list(mgr, &k);
  assert_true(k > 0);
  sbx *s = NULL;
  for (size_t i = 0; i < k; i++) /* the new one: provisioning, not seen before */
    if (sbx_get_state(all[i]) == SBX_PROVISIONING) s = all[i];
  free(all);
  assert_non_null(s);
  snprintf(id, n, "%s", sbx_id(s));
  return s;
}

static const char *reason_of(const sbx *s) {
  static char buf[64];
  json_t *j = sbx_to_json(s);
  snprintf(buf, sizeof(buf), "%s", json_string_value(json_object_get(j, "reason")) ?: "");
  json_decref(j);
  return buf;
}

/* A removed sandbox leaves neither its directory nor its RAM file (both go
 * on the thread pool). */
static void assert_files_gone(const char *id) {
  _cleanup_free_ char *ram = NULL;
  assert_int_equal(sbx_ram_file_path(id, &ram), 0);
  char dir[512];
  snprintf(dir, sizeof(dir), "%s/data/sandboxes/%s", tmp, id);
  uint64_t end = uv_now(&loop) + 5000;
  while ((access(ram, F_OK) == 0 || access(dir, F_OK) == 0) && uv_now(&loop) < end) run_for(10);
  if (access(ram, F_OK) == 0) fail_msg("%s is left behind", ram);
  if (access(dir, F_OK) == 0) fail_msg("%s is left behind", dir);
}

static void remove_sandbox(sbx *s) {
  char id[32];
  snprintf(id, sizeof(id), "%s", sbx_id(s));
  removed r = {0};
  cr_error *err = NULL;
  assert_int_equal(sbx_terminate(mgr, s, on_removed, &r, &err), 0);
  assert_true(run_until(&r.done, 5000));
  assert_files_gone(id);
}

/* ---- tests */

static void test_create_ready_then_stop_arrives_late(void **state) {
  fake_reset();
  created c;
  char id[32];
  sbx *s = create(&c, id, sizeof(id));
  assert_int_equal(sbx_get_state(s), SBX_PROVISIONING);
  assert_true(run_until(&c.done, 20000));
  assert_string_equal(c.reason, "");
  assert_ptr_equal(c.s, s);
  assert_int_equal(sbx_get_state(s), SBX_READY);
  assert_int_equal(fake.launches, 1);
  assert_int_equal(fake.agents, 1);
  assert_int_equal(fake.last_vcpus, 2);
  assert_int_equal(fake.last_mem, 128);
  assert_true(fake.last_had_image);   /* the image's ext4 */
  assert_true(fake.last_had_scratch); /* copied before the launch */
  assert_int_equal(sbx_check_ready(s, NULL), 0);

  /* removal: stopping until the backend says the VMM is gone */
  fake.hold_stops = true;
  removed r = {0};
  cr_error *err = NULL;
  assert_int_equal(sbx_terminate(mgr, s, on_removed, &r, &err), 0);
  assert_int_equal(fake.stops, 1);
  assert_int_equal(sbx_get_state(s), SBX_STOPPING);
  assert_null(sbx_find(mgr, id)); /* gone from the registry at once */
  run_for(200);
  assert_false(r.done); /* the stop callback has not come: not done */
  assert_int_equal(sbx_get_state(s), SBX_STOPPING);
  /* a second removal is refused while the first waits */
  assert_int_equal(sbx_terminate(mgr, s, on_removed, &r, &err), -1);
  assert_string_equal(cr_error_reason(err), CR_E_SANDBOX_NOT_FOUND);
  cr_error_free(err);
  fake_release_stops();
  assert_true(run_until(&r.done, 5000));
  assert_false(r.failed);
  assert_int_equal(fake.stops, 1);
  assert_files_gone(id);
}

static void test_launch_fails_at_once(void **state) {
  fake_reset();
  fake.launch = LAUNCH_FAIL_SYNC;
  created c;
  char id[32];
  sbx *s = create(&c, id, sizeof(id));
  assert_true(run_until(&c.done, 20000));
  assert_string_equal(c.reason, CR_E_BACKEND_UNAVAILABLE);
  assert_non_null(strstr(c.message, "fake: cannot start a VMM"));
  assert_int_equal(sbx_get_state(s), SBX_FAILED);
  assert_string_equal(reason_of(s), CR_E_BACKEND_UNAVAILABLE);
  assert_int_equal(fake.stops, 0); /* there was no handle to stop */
  cr_error *err = NULL;
  assert_int_equal(sbx_check_ready(s, &err), -1);
  cr_error_free(err);
  remove_sandbox(s);
  assert_null(sbx_find(mgr, id));
}

static void test_launch_fails_later_reported_once_vmm_gone(void **state) {
  fake_reset();
  fake.launch = LAUNCH_FAIL_ASYNC;
  fake.hold_stops = true;
  created c;
  char id[32];
  sbx *s = create(&c, id, sizeof(id));
  uint64_t end = uv_now(&loop) + 20000;
  while (!fake.stops && uv_now(&loop) < end) run_for(20);
  assert_int_equal(fake.stops, 1); /* a failed launch's handle is still stopped */
  assert_int_equal(sbx_get_state(s), SBX_FAILED);
  assert_string_equal(reason_of(s), CR_E_RUNTIME_LAUNCH_FAILED);
  run_for(200);
  assert_false(c.done); /* waiters hear of it once the VMM is gone */
  fake_release_stops();
  assert_true(run_until(&c.done, 5000));
  assert_string_equal(c.reason, CR_E_RUNTIME_LAUNCH_FAILED);
  assert_int_equal(sbx_get_state(s), SBX_FAILED);
  fake.hold_stops = false;
  remove_sandbox(s);
  assert_int_equal(fake.stops, 1); /* stop once per handle */
}

static void test_vmm_exits_while_running(void **state) {
  fake_reset();
  created c;
  char id[32];
  sbx *s = create(&c, id, sizeof(id));
  assert_true(run_until(&c.done, 20000));
  assert_int_equal(sbx_get_state(s), SBX_READY);
  backend_vm *vm = fake.last_vm;
  fake.hold_stops = true;
  fake_kill(vm);
  uint64_t end = uv_now(&loop) + 5000;
  while (sbx_get_state(s) == SBX_READY && uv_now(&loop) < end) run_for(10);
  assert_int_equal(sbx_get_state(s), SBX_FAILED);
  assert_string_equal(reason_of(s), CR_E_VMM_EXITED);
  assert_int_equal(fake.stops, 1); /* the dead VMM's handle is stopped (freed) */
  cr_error *err = NULL;
  assert_int_equal(sbx_check_ready(s, &err), -1);
  cr_error_free(err);
  /* a removal now waits for that stop to report */
  removed r = {0};
  assert_int_equal(sbx_terminate(mgr, s, on_removed, &r, &err), 0);
  run_for(200);
  assert_false(r.done);
  fake_release_stops();
  assert_true(run_until(&r.done, 5000));
  assert_null(sbx_find(mgr, id));
  assert_int_equal(fake.stops, 1);
  assert_files_gone(id);
}

static void test_removed_while_starting(void **state) {
  fake_reset();
  fake.launch = LAUNCH_HOLD;
  fake.hold_stops = true;
  created c;
  char id[32];
  sbx *s = create(&c, id, sizeof(id));
  uint64_t end = uv_now(&loop) + 20000;
  while (!fake.launches && uv_now(&loop) < end) run_for(10);
  assert_int_equal(fake.launches, 1);
  backend_vm *vm = fake.last_vm;
  removed r = {0};
  cr_error *err = NULL;
  assert_int_equal(sbx_terminate(mgr, s, on_removed, &r, &err), 0);
  assert_int_equal(fake.stops, 1); /* stop() is valid while launching */
  /* a ready that comes after stop() (the fake does not hold it back) is
   * ignored: the sandbox no longer owns that handle */
  fake_report_ready(vm);
  run_for(200);
  assert_false(c.done);
  assert_false(r.done);
  assert_int_equal(fake.agents, 0);
  fake_release_stops();
  assert_true(run_until(&r.done, 5000));
  assert_true(c.done);
  assert_string_equal(c.reason, CR_E_SANDBOX_NOT_FOUND); /* "removed while starting" */
  assert_null(c.s);
  assert_null(sbx_find(mgr, id));
  assert_files_gone(id);
}

static void test_activation_refused(void **state) {
  fake_reset();
  fake.activate_refused = true;
  created c;
  char id[32];
  sbx *s = create(&c, id, sizeof(id));
  assert_true(run_until(&c.done, 20000));
  assert_string_equal(c.reason, CR_E_RUNTIME_LAUNCH_FAILED);
  assert_non_null(strstr(c.message, "activation refused"));
  assert_int_equal(sbx_get_state(s), SBX_FAILED);
  assert_int_equal(fake.stops, 1);
  remove_sandbox(s);
}

typedef struct snap_done {
  bool done;
  json_t *res;
  char reason[64];
} snap_done;

static void on_snapshot(void *ud, json_t *res, cr_error *err) {
  snap_done *d = ud;
  d->done = true;
  d->res = res;
  if (err) snprintf(d->reason, sizeof(d->reason), "%s", cr_error_reason(err));
  cr_error_free(err);
}

static void test_snapshot_save_and_restore(void **state) {
  fake_reset();
  created c;
  char id[32];
  sbx *s = create(&c, id, sizeof(id));
  assert_true(run_until(&c.done, 20000));
  assert_int_equal(sbx_get_state(s), SBX_READY);
  backend_vm *first = fake.last_vm;
  snap_done d = {0};
  cr_error *err = NULL;
  assert_int_equal(sbx_snapshot_create(mgr, s, "fake-snap", on_snapshot, &d, &err), 0);
  assert_true(run_until(&d.done, 20000));
  assert_string_equal(d.reason, "");
  assert_int_equal(fake.saves, 1);
  assert_int_equal(sbx_get_state(s), SBX_READY);
  json_decref(d.res);

  /* restore: a new VMM from the saved state, the old one stopped */
  created rc = {0};
  assert_int_equal(sbx_snapshot_restore(mgr, "fake-snap", s, on_created, &rc, &err), 0);
  assert_true(run_until(&rc.done, 20000));
  assert_string_equal(rc.reason, "");
  assert_int_equal(sbx_get_state(s), SBX_READY);
  assert_int_equal(fake.restores, 1);
  assert_int_equal(fake.kills, 1); /* the replaced VMM is killed, not stopped */
  assert_int_equal(fake.stops, 0);
  assert_ptr_not_equal(fake.last_vm, first);
  _cleanup_free_ char *state_file = cr_path_join(fake.last_restore_dir, "fake.state");
  assert_int_equal(access(state_file, R_OK), 0); /* what save() wrote */

  /* restored again while the replaced VMM's kill has not reported: a
   * removal then waits for it too */
  fake.hold_stops = true;
  created rc2 = {0};
  assert_int_equal(sbx_snapshot_restore(mgr, "fake-snap", s, on_created, &rc2, &err), 0);
  assert_true(run_until(&rc2.done, 20000));
  assert_string_equal(rc2.reason, "");
  assert_int_equal(fake.kills, 2);
  assert_int_equal(fake.n_held, 1);
  removed r = {0};
  assert_int_equal(sbx_terminate(mgr, s, on_removed, &r, &err), 0);
  assert_int_equal(fake.stops, 1);
  fake_release(false); /* the current VMM is gone; the replaced one not yet */
  run_for(200);
  assert_int_equal(fake.n_held, 1);
  assert_false(r.done);
  fake_release(true);
  assert_true(run_until(&r.done, 5000));
  assert_files_gone(id);
  fake.hold_stops = false;
  json_t *res = NULL;
  assert_int_equal(sbx_snapshot_remove(mgr, "fake-snap", &res, &err), 0);
  json_decref(res);
}

/* ---- set-up: a data dir with one image, the fake backend picked by name */

static int setup(void **state) {
  if (!mkdtemp(tmp)) return -1;
  char data[256], run[256], cmd[1024];
  snprintf(data, sizeof(data), "%s/data", tmp);
  snprintf(run, sizeof(run), "%s/run", tmp);
  setenv("CLEANROOM_DATA_DIR", data, 1);
  setenv("CLEANROOM_RUN_DIR", run, 1);
  setenv("CLEANROOM_BACKEND", "fake", 1);
  setenv("CLEANROOM_TEMPLATES", "0", 1); /* cold boots: no boot template, no pool */
  unsetenv("CLEANROOM_BOOT_TIMEOUT_MS");
  backend_register(&fake_ops);
  snprintf(cmd, sizeof(cmd),
           "set -e; mkdir -p %s/root/etc %s/root/bin; echo fake > %s/root/etc/hostname; "
           "tar -C %s/root -cf %s/rootfs.tar .", tmp, tmp, tmp, tmp, tmp);
  if (system(cmd) != 0) return -1;
  char tar[256];
  snprintf(tar, sizeof(tar), "%s/rootfs.tar", tmp);
  cr_error *err = NULL;
  if (image_import(tar, "test/fake", NULL, NULL, NULL, &err) < 0) {
    fprintf(stderr, "import: %s\n", err->message);
    return -1;
  }
  uv_loop_init(&loop);
  mgr = sbx_manager_new(&loop, &err);
  if (!mgr) return -1;
  assert_string_equal(mgr->backend->name, "fake");
  /* the VM's kernel and initramfs are the fake's business: no real ones */
  mgr->assets = calloc(1, sizeof(*mgr->assets));
  mgr->assets->kernel = strdup("/fake/vmlinuz");
  mgr->assets->initrd = strdup("/fake/initrd.cpio");
  mgr->assets->version = strdup("fake");
  return 0;
}

static void close_walk(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static int teardown(void **state) {
  sbx_manager_free(mgr);
  for (int i = 0; i < 50 && uv_run(&loop, UV_RUN_NOWAIT); i++) run_for(10);
  uv_walk(&loop, close_walk, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  for (size_t i = 0; i < fake.n_guests; i++) pthread_join(fake.guests[i], NULL);
  cr_rm_rf(tmp);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_create_ready_then_stop_arrives_late),
      cmocka_unit_test(test_launch_fails_at_once),
      cmocka_unit_test(test_launch_fails_later_reported_once_vmm_gone),
      cmocka_unit_test(test_vmm_exits_while_running),
      cmocka_unit_test(test_removed_while_starting),
      cmocka_unit_test(test_activation_refused),
      cmocka_unit_test(test_snapshot_save_and_restore),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

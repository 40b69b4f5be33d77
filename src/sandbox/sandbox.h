/* Sandboxes: the registry, their lifecycle and the operations on a running
 * one (exec, files), on the daemon's libuv loop.
 *
 * State lives in <data>/sandboxes/<id>/state.json (written atomically on each
 * change) so a restarted daemon re-attaches to running VMMs (sbx_manager_load).
 * Executions are recorded in <data>/sandboxes/<id>/executions/<id>.json. */
#pragma once
#include "backend/agent_ops.h"
#include "backend/backend.h"
#include "egress/egress.h"
#include "util/buf.h"
#include "util/error.h"
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef enum sbx_state {
  SBX_PROVISIONING,
  SBX_READY,
  SBX_STOPPING,
  SBX_STOPPED,
  SBX_FAILED,
} sbx_state;
const char *sbx_state_name(sbx_state s);

typedef struct sbx sbx;
typedef struct sbx_exec sbx_exec;
typedef struct sbx_manager sbx_manager;

typedef struct sbx_create_params {
  const char *image;     /* ref or digest; NULL = default image */
  unsigned vcpus;        /* 0 = default (1) */
  unsigned memory_mib;   /* 0 = default (512) */
  json_t *policy;        /* compiled policy (borrowed), may be NULL */
  const char *policy_hash;
  bool cold;             /* boot cold even when a template could be used */
  const char *from_snapshot; /* fork: snapshot id or name (image, vcpus, memory from it) */
} sbx_create_params;

/* done: sandbox ready (err NULL) or failed (err owned by the callee). */
typedef void (*sbx_ready_cb)(void *ud, sbx *s, cr_error *err);
typedef void (*sbx_progress_cb)(void *ud, const char *phase, const char *message);

/* Checks that backend `be` can enforce everything the compiled policy asks
 * for (else backend_capability_mismatch) and computes its hash (sha256 of the
 * canonical JSON); a claimed hash must match. */
int sbx_policy_check(const backend_ops *be, json_t *policy, const char *claimed_hash,
                     char **ret_hash, cr_error **err);

sbx_manager *sbx_manager_new(uv_loop_t *loop, cr_error **err);
/* Reads state dirs and re-attaches to running VMMs; settled (may be NULL)
 * runs once every re-attached sandbox is ready or failed (possibly inside
 * this call). */
int sbx_manager_load(sbx_manager *m, void (*settled)(void *ud), void *ud, cr_error **err);
/* The egress manager (audit events), created on first use; NULL on error. */
egress *sbx_manager_egress(sbx_manager *m);
/* Closes agent connections (VMMs keep running). */
void sbx_manager_free(sbx_manager *m);
uv_loop_t *sbx_manager_loop(sbx_manager *m);

int sbx_create(sbx_manager *m, const sbx_create_params *p, sbx_ready_cb done,
               sbx_progress_cb progress, void *ud, cr_error **err);
/* By id or "last"; NULL when unknown. */
sbx *sbx_find(sbx_manager *m, const char *id);
/* Newest first; returns a new array of borrowed pointers. */
sbx **sbx_list(sbx_manager *m, size_t *ret_n);
/* Stops the VMM and removes the sandbox's files: the sandbox leaves the
 * registry at once; done runs (on the loop, possibly inside this call when
 * there is no VMM to wait for) once the VMM is gone and the files removed.
 * err (owned by done) only for a failure to remove the files. */
typedef void (*sbx_terminate_cb)(void *ud, cr_error *err);
int sbx_terminate(sbx_manager *m, sbx *s, sbx_terminate_cb done, void *ud, cr_error **err);

const char *sbx_id(const sbx *s);
sbx_state sbx_get_state(const sbx *s);
/* The public JSON (docs/api.md Sandbox). New reference. */
json_t *sbx_to_json(const sbx *s);
/* Stops progress callbacks of the create request. */
void sbx_detach_progress(sbx *s);
/* Waits for a provisioning sandbox (immediately calls done otherwise). */
void sbx_when_ready(sbx *s, sbx_ready_cb done, void *ud);
agent_conn *sbx_agent(sbx *s);
/* The repository checked out into the sandbox ({repo_url, ref, commit, path,
 * ...}, see src/workspace), borrowed, or NULL; set_ copies and persists it. */
json_t *sbx_workspace(const sbx *s);
void sbx_set_workspace(sbx *s, json_t *ws);
/* The workspace disk: every VM started since it exists has a third disk
 * (serial cr-workspace) backed by <sandbox dir>/workspace.ext4, a sparse
 * file of SBX_WS_DISK_MIB, blank until a checkout writes an ext4 into it
 * (docs/workspace.md). Its path (new string) when this VM has one, else
 * NULL (a sandbox restored from an older snapshot). */
#define SBX_WS_DISK "workspace.ext4"
#define SBX_WS_DISK_MIB 8192
#define SBX_WS_DISK_SERIAL "cr-workspace"
char *sbx_ws_disk(const sbx *s);
/* Creates (or truncates to blank) a sparse workspace disk at path. */
int sbx_ws_disk_blank(const char *path);
/* Fails with sandbox_not_ready when not ready. */
int sbx_check_ready(const sbx *s, cr_error **err);

/* ---- templates (template.h) and snapshots (snapshot.c) */
/* Template records (docs/api.md Template). New reference. */
json_t *sbx_template_list(sbx_manager *m);
/* The VMM pool: {size, ready, starting, handed_out, started, discarded,
 * vcpus, memory_mib} (docs/architecture.md, "VMM pool"). */
json_t *sbx_pool_info(sbx_manager *m);
/* By key, prefix or "all"; returns the number removed. */
int sbx_template_remove(sbx_manager *m, const char *key, cr_error **err);
/* Builds (or finds) the template for image/vcpus/memory; done gets a
 * template record (stolen) or err (owned by the callee). */
typedef void (*sbx_json_cb)(void *ud, json_t *result, cr_error *err);
int sbx_template_warm(sbx_manager *m, const char *image, unsigned vcpus, unsigned memory_mib,
                      sbx_json_cb done, void *ud, cr_error **err);
/* Removes the templates of images that are gone. */
void sbx_template_gc(sbx_manager *m);

/* Pauses s, writes memory + devices and a copy of the scratch disk to a new
 * snapshot, resumes s; done gets the Snapshot (stolen) or err. The save runs
 * off the loop; the scratch copy (reflink or sparse) and the checksum on it. */
int sbx_snapshot_create(sbx_manager *m, sbx *s, const char *name, sbx_json_cb done, void *ud,
                        cr_error **err);
/* Snapshot records (docs/api.md Snapshot), newest first. New reference. */
json_t *sbx_snapshot_list(sbx_manager *m);
/* ref = id, unique id prefix or name. */
int sbx_snapshot_inspect(sbx_manager *m, const char *ref, json_t **ret, cr_error **err);
int sbx_snapshot_remove(sbx_manager *m, const char *ref, json_t **ret, cr_error **err);
/* Rolls s back to the snapshot (memory, processes, files); done when ready
 * again. A snapshot that fails its checks leaves s untouched
 * (snapshot_invalid). */
int sbx_snapshot_restore(sbx_manager *m, const char *ref, sbx *s, sbx_ready_cb done,
                         void *ud, cr_error **err);

/* ---- executions */
typedef struct sbx_exec_params {
  json_t *argv;       /* array of strings (borrowed) */
  json_t *env;        /* array of "K=V" strings or NULL */
  const char *cwd;    /* NULL = "/" */
  bool stdin_open;    /* host streams stdin */
  uint64_t timeout_ms;/* 0 = none */
  bool tty;           /* one pseudo-terminal for stdin/stdout/stderr (console) */
  uint16_t rows, cols;/* its size with tty (0 = 24x80) */
} sbx_exec_params;

typedef struct sbx_exec_observer {
  /* stream 1 = stdout, 2 = stderr */
  void (*output)(void *ud, sbx_exec *e, int stream, const uint8_t *data, size_t n);
  /* The execution ended (exited, failed, timed out). */
  void (*ended)(void *ud, sbx_exec *e);
  void *ud;
} sbx_exec_observer;

int sbx_exec_start(sbx *s, const sbx_exec_params *p, sbx_exec **ret, cr_error **err);
/* Observers (up to 8) get output as it arrives and the end. */
int sbx_exec_observe(sbx_exec *e, const sbx_exec_observer *o);
void sbx_exec_unobserve(sbx_exec *e, void *ud);
int sbx_exec_write(sbx_exec *e, const void *data, size_t n, bool eof, cr_error **err);
/* The terminal size of a tty execution (fails for one without a tty). */
int sbx_exec_resize(sbx_exec *e, uint16_t rows, uint16_t cols, cr_error **err);
int sbx_exec_signal(sbx_exec *e, int signo, cr_error **err);
sbx_exec *sbx_exec_find(sbx_manager *m, const char *id);
/* Newest first across sandboxes (sandbox_id NULL) or for one. */
sbx_exec **sbx_exec_list(sbx_manager *m, const char *sandbox_id, size_t *ret_n);
const char *sbx_exec_id(const sbx_exec *e);
bool sbx_exec_ended(const sbx_exec *e);
json_t *sbx_exec_to_json(const sbx_exec *e);
/* Buffered output since cursor (the last 1 MiB per stream is kept).
 * cursor counts bytes of stdout+stderr produced. */
typedef struct sbx_exec_chunk {
  int stream;
  uint64_t offset; /* position in the combined output */
  size_t len;
  uint8_t *data;
} sbx_exec_chunk;
/* {cursor, dropped, state, execution} of the output buffered since cursor,
 * which is streams[0] (stdout) and streams[1] (stderr), the caller's to free
 * (cr_buf_free). NULL when out of memory (streams untouched). */
json_t *sbx_exec_read(sbx_exec *e, uint64_t cursor, cr_buf streams[2]);
/* Calls fn for each buffered chunk at or after cursor, in order (stream 1 =
 * stdout, 2 = stderr). Returns the bytes dropped before the oldest kept. */
uint64_t sbx_exec_replay(sbx_exec *e, uint64_t cursor,
                         void (*fn)(void *ud, int stream, const uint8_t *data, size_t n),
                         void *ud);

/* ---- files (results via callback; runs on the loop) */
typedef void (*sbx_file_cb)(void *ud, json_t *result /* stolen, NULL on error */,
                            cr_error *err /* owned by callee */);
/* A read's result is {size, length, eof}; its bytes come beside it (the
 * control API base64-encodes them for socket clients only). */
typedef void (*sbx_file_read_cb)(void *ud, json_t *result /* stolen, NULL on error */,
                                 const uint8_t *data, size_t n, cr_error *err);
int sbx_file_read(sbx *s, const char *path, uint64_t offset, uint64_t length,
                  sbx_file_read_cb cb, void *ud, cr_error **err);
int sbx_file_write(sbx *s, const char *path, const void *data, size_t n, uint32_t mode,
                   bool parents, bool append, sbx_file_cb cb, void *ud, cr_error **err);
int sbx_file_stat(sbx *s, const char *path, sbx_file_cb cb, void *ud, cr_error **err);
int sbx_file_list(sbx *s, const char *path, uint32_t depth, sbx_file_cb cb, void *ud,
                  cr_error **err);

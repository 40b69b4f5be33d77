/* Boot templates: a VM booted once per (image digest, kernel, initramfs =
 * agent build + modules, QEMU binary, accel, vcpus, memory, device set),
 * root mounted after the agent's HELLO (nothing sandbox-specific), its
 * device state saved with x-ignore-shared and its RAM file kept. Sandboxes
 * are then clones: a new VMM maps the RAM file private (copy-on-write) and
 * loads the device state (docs/architecture.md, "Templates and snapshots").
 *
 * Layout: <data>/templates/<key>/{meta.json, ram, state}; <key> is 26
 * lowercase hex characters of the sha256 of the key parts. */
#pragma once
#include "sandbox/sandbox.h"

typedef struct tmpl_spec {
  const char *image_digest, *image_path;
  const char *kernel, *initrd;
  unsigned vcpus, memory_mib;
  const char *scratch_blank; /* the blank scratch disk the template VM gets */
  bool net; /* with a NIC (on no network): for sandboxes with a network */
} tmpl_spec;

typedef struct tmpl_registry tmpl_registry;

/* done: dir of the ready template (borrowed for the call) or err (owned by
 * the callee). */
typedef void (*tmpl_ready_cb)(void *ud, const char *dir, cr_error *err);

tmpl_registry *tmpl_registry_new(uv_loop_t *loop, const backend_ops *be);
/* Kills builds in progress. */
void tmpl_registry_free(tmpl_registry *r);
/* The key of spec (27 bytes incl. NUL). */
int tmpl_key(const tmpl_registry *r, const tmpl_spec *spec, char ret[27]);
/* A ready, valid template for spec: 1 with *ret_dir (new string), 0 when
 * there is none (an invalid one is removed; *why says why when not NULL). */
int tmpl_lookup(tmpl_registry *r, const tmpl_spec *spec, char **ret_dir, char **why);
/* Calls done once a template for spec is ready: now (synchronously) when it
 * exists, else after building it (concurrent requests share one build). */
void tmpl_ensure(tmpl_registry *r, const tmpl_spec *spec, uint64_t timeout_ms,
                 tmpl_ready_cb done, void *ud);
/* [{key, image_digest, vcpus, memory_mib, created_at, ram_bytes, state_bytes,
 *   kernel, initrd, valid, invalid_reason}] */
json_t *tmpl_list(tmpl_registry *r);
/* By key or unique prefix (>= 4 chars), or "all". Returns the count removed. */
int tmpl_remove(tmpl_registry *r, const char *key, cr_error **err);
/* Removes templates of images no longer stored (also done by lookups). */
int tmpl_gc(tmpl_registry *r);
/* The warm-up exec of templates and pool entries (pool.c): `true` from the
 * image, so its binary, libraries and the exec path are in the guest's
 * page cache (and TCG's translations in the VMM). */
extern const agent_exec_req sbx_warm_exec;

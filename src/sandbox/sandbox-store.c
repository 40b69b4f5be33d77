/* Persistence of a sandbox: its public JSON, its events and the journal
 * (<dir>/state.json, written atomically on each change). */
#include "sandbox/sandbox.h"
#include "sandbox/sandbox-internal.h"
#include "sandbox/template.h"
#include "backend/cgroup.h"
#include "boot/boot.h"
#include "image/image.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/paths.h"
#include "util/spawn.h"
#include "util/ulid.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

/* ---- state persistence */

json_t *sbx_to_json(const sbx *s) {
  json_t *j = json_object();
  json_object_set_new(j, "id", json_string(s->id));
  json_object_set_new(j, "state", json_string(sbx_state_name(s->state)));
  json_object_set_new(j, "reason", s->reason ? json_string(s->reason) : json_null());
  json_object_set_new(j, "message", s->message ? json_string(s->message) : json_null());
  json_object_set_new(j, "image", json_pack("{s:s?, s:s?}", "ref", s->image_ref, "digest",
                                            s->image_digest));
  json_object_set_new(j, "vcpus", json_integer(s->vcpus));
  json_object_set_new(j, "memory_mib", json_integer(s->memory_mib));
  json_object_set_new(j, "backend", json_string(s->m->backend->name));
  json_object_set_new(j, "accel", json_string(backend_accel()));
  json_object_set_new(j, "created_at", sbx_time_json(s->created_ms));
  json_object_set_new(j, "ready_at", sbx_time_json(s->ready_ms));
  json_object_set_new(j, "policy_hash", s->policy_hash ? json_string(s->policy_hash) : json_null());
  json_object_set_new(j, "policy", s->policy ? json_incref(s->policy) : json_null());
  json_object_set_new(j, "network", s->net ? egress_sbx_json(s->net) : json_null());
  json_object_set_new(j, "last_execution_id",
                      s->last_exec_id ? json_string(s->last_exec_id) : json_null());
  json_object_set_new(j, "vmm_pid", s->pid > 0 ? json_integer(s->pid) : json_null());
  json_object_set_new(j, "timing_ms", json_pack("{s:I, s:I}", "boot", (json_int_t)s->boot_ms,
                                                 "restore", (json_int_t)s->restore_ms));
  json_object_set_new(j, "boot", json_pack("{s:s, s:s?, s:s?}", "mode",
                                           s->boot_mode ? s->boot_mode : "cold", "template",
                                           s->template_key, "from_snapshot", s->from_snapshot));
  json_object_set_new(j, "events", s->events ? json_incref(s->events) : json_array());
  json_object_set_new(j, "workspace", s->workspace ? json_deep_copy(s->workspace) : json_null());
  return j;
}

#define SBX_MAX_EVENTS 64

void sbx_event(sbx *s, const char *type, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = NULL;
  if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
  va_end(ap);
  if (!s->events) s->events = json_array();
  while (json_array_size(s->events) >= SBX_MAX_EVENTS) json_array_remove(s->events, 0);
  json_array_append_new(s->events, json_pack("{s:o, s:s, s:s}", "time",
                                             sbx_time_json(sbx_now_ms()), "type", type,
                                             "message", msg ? msg : ""));
  log_info("sandbox %s: %s: %s", s->id, type, msg ? msg : "");
  free(msg);
}

static void save_state(sbx *s) {
  if (s->removed || s->pooled) return; /* a pool entry has no journal */
  json_t *j = sbx_to_json(s);
  json_object_set_new(j, "image_path", json_string(s->image_path ? s->image_path : ""));
  json_object_set_new(j, "ram_path", s->ram_path ? json_string(s->ram_path) : json_null());
  json_object_set_new(j, "ram_owned", json_boolean(s->ram_owned));
  json_object_set_new(j, "net_slot", s->net_slot >= 0 ? json_integer(s->net_slot) : json_null());
  char *txt = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(j);
  _cleanup_free_ char *path = cr_path_join(s->dir, "state.json");
  if (txt && path) {
    int r = cr_write_file_replace(path, txt, strlen(txt), 0600);
    if (r < 0) log_error("writing %s: %s", path, strerror(-r));
  }
  free(txt);
}

void sbx_save_state(sbx *s) { save_state(s); }

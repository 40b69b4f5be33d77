/* Errors that carry context and a stable reason code (house style: crun error.h).
 *
 *   int f(..., cr_error **err)  returns >= 0 on success, < 0 with *err set.
 *   Callers add context on the way up with cr_error_wrap().
 *   The reason code (e.g. CR_E_IMAGE_NOT_FOUND) is shown unchanged by the CLI,
 *   the control API and MCP. */
#pragma once
#include "util/macro.h"

typedef struct cr_error {
  char *reason;  /* stable code, e.g. "image_not_found" */
  char *message; /* human text, context first: "starting sandbox X: qemu: ..." */
  int errnum;    /* errno if one caused it, else 0 */
} cr_error;

/* Stable reason codes. docs/api.md lists them; never rename one. */
#define CR_E_INTERNAL "internal_error"
#define CR_E_INVALID_ARGUMENT "invalid_argument"
#define CR_E_POLICY_INVALID "policy_invalid"
#define CR_E_POLICY_NOT_FOUND "policy_not_found"
#define CR_E_IMAGE_NOT_FOUND "image_not_found"
#define CR_E_IMAGE_INVALID "image_invalid"
#define CR_E_IMAGE_UNSAFE_PATH "image_unsafe_path"
#define CR_E_KERNEL_NOT_FOUND "kernel_not_found"
#define CR_E_AGENT_NOT_FOUND "agent_not_found"
#define CR_E_BACKEND_UNAVAILABLE "backend_unavailable"
#define CR_E_BACKEND_CAPABILITY_MISMATCH "backend_capability_mismatch"
#define CR_E_RUNTIME_LAUNCH_FAILED "runtime_launch_failed"
#define CR_E_AGENT_PROTOCOL "agent_protocol_error"
#define CR_E_AGENT_UNAVAILABLE "agent_unavailable"
#define CR_E_VMM_EXITED "vmm_exited"
#define CR_E_SANDBOX_NOT_FOUND "sandbox_not_found"
#define CR_E_SANDBOX_NOT_READY "sandbox_not_ready"
#define CR_E_EXECUTION_NOT_FOUND "execution_not_found"
#define CR_E_EXECUTION_TIMEOUT "execution_timeout"
#define CR_E_EXECUTION_CANCELLED "execution_cancelled"
#define CR_E_COMMAND_NOT_FOUND "command_not_found"
#define CR_E_FILE_NOT_FOUND "file_not_found"
#define CR_E_FILE_ERROR "file_error"
#define CR_E_DAEMON_UNAVAILABLE "daemon_unavailable"
#define CR_E_PROTOCOL "protocol_error"
#define CR_E_IO "io_error"
#define CR_E_BACKEND_UNSUPPORTED "backend_unsupported"
#define CR_E_WORKSPACE_FETCH "workspace_fetch_failed"
#define CR_E_WORKSPACE_REF_NOT_FOUND "workspace_ref_not_found"
#define CR_E_WORKSPACE_NONE "workspace_not_found"
#define CR_E_WORKSPACE_CONFLICT "workspace_conflict"
#define CR_E_WORKSPACE_UNSAFE_PATH "workspace_unsafe_path"
#define CR_E_WORKSPACE_TOO_LARGE "workspace_too_large"
#define CR_E_IMAGE_DIGEST_MISMATCH "image_digest_mismatch"
#define CR_E_IMAGE_PLATFORM_NOT_FOUND "image_platform_not_found"
#define CR_E_REGISTRY_UNKNOWN_REPOSITORY "registry_unknown_repository"
#define CR_E_REGISTRY_UNKNOWN_TAG "registry_unknown_tag"
#define CR_E_REGISTRY_AUTH_REQUIRED "registry_auth_required"
#define CR_E_REGISTRY_AUTH_REFUSED "registry_auth_refused"
#define CR_E_REGISTRY_UNAVAILABLE "registry_unavailable"
#define CR_E_REGISTRY_TLS "registry_tls_error"
#define CR_E_REGISTRY_INSECURE "registry_insecure"
#define CR_E_REGISTRY_PROTOCOL "registry_protocol_error"
#define CR_E_DISK_FULL "disk_full"
/* a cap was reached: quotas, output or listing bounds, connections */
#define CR_E_RESOURCE_EXHAUSTED "resource_exhausted"
/* a guest operation (file read/write/stat/list) passed its deadline */
#define CR_E_OPERATION_TIMEOUT "operation_timeout"
/* the socket's peer is neither root, the daemon's user nor in its group */
#define CR_E_PERMISSION_DENIED "permission_denied"
#define CR_E_SNAPSHOT_NOT_FOUND "snapshot_not_found"
#define CR_E_SNAPSHOT_INVALID "snapshot_invalid"
#define CR_E_SNAPSHOT_FAILED "snapshot_failed"
#define CR_E_TEMPLATE_NOT_FOUND "template_not_found"
#define CR_E_EGRESS_UNAVAILABLE "egress_unavailable"
#define CR_E_EGRESS_POOL_EXHAUSTED "egress_pool_exhausted"

/* Sets *err (when err is non-NULL and *err is NULL) and returns -1, or
 * -errnum when errnum > 0. */
int cr_error_set(cr_error **err, const char *reason, int errnum,
                 const char *fmt, ...) _printf_(4, 5);
/* Prefixes context: "<fmt>: <old message>". Returns the same value as set. */
int cr_error_wrap(cr_error **err, const char *fmt, ...) _printf_(2, 3);
void cr_error_free(cr_error *e);
static inline void cr_error_freep(cr_error **e) { cr_error_free(*e); *e = NULL; }
#define _cleanup_error_ _cleanup_(cr_error_freep)
/* Reason or CR_E_INTERNAL when err is NULL. */
const char *cr_error_reason(const cr_error *e);

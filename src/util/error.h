/* Errors that carry context and a stable reason code (house style: crun error.h).
 *
 *   int f(..., cr_error **err)  returns >= 0 on success, < 0 with *err set.
 *   Callers add context on the way up with cr_error_wrap().
 *   The reason code (e.g. CR_E_IMAGE_NOT_FOUND) is shown unchanged by the CLI,
 *   the control API and MCP. */
#pragma once
#include "util/macro.h"

#include <stdbool.h>

typedef struct cr_error {
  char *reason;  /* stable code, e.g. "image_not_found" */
  char *message; /* human text, context first: "starting sandbox X: qemu: ..." */
  int errnum;    /* errno if one caused it, else 0 */
} cr_error;

#include "util/reasons.h"

/* Sets *err (when err is non-NULL and *err is NULL) and returns -1, or
 * -errnum when errnum > 0. */
int cr_error_set(cr_error **err, const char *reason, int errnum,
                 const char *fmt, ...) _printf_(4, 5);
/* Prefixes context: "<fmt>: <old message>". Returns the same value as set. */
int cr_error_wrap(cr_error **err, const char *fmt, ...) _printf_(2, 3);
/* Replaces the reason with to when it is from (a caller that knows better
 * what failed: a submodule's fetch, not the superproject's). Returns true
 * when it did; the message and errnum stay. */
bool cr_error_recode(cr_error *e, const char *from, const char *to);
void cr_error_free(cr_error *e);
static inline void cr_error_freep(cr_error **e) { cr_error_free(*e); *e = NULL; }
#define _cleanup_error_ _cleanup_(cr_error_freep)
/* Reason or CR_E_INTERNAL when err is NULL. */
const char *cr_error_reason(const cr_error *e);

#include "util/error.h"

#include <stdarg.h>
#include <string.h>

int cr_error_set(cr_error **err, const char *reason, int errnum,
                 const char *fmt, ...) {
  int ret = errnum > 0 ? -errnum : -1;
  if (!err || *err) return ret;
  cr_error *e = calloc(1, sizeof(*e));
  if (!e) return ret;
  va_list ap;
  va_start(ap, fmt);
  char *msg = NULL;
  if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
  va_end(ap);
  if (msg && errnum > 0) {
    char *full = NULL;
    if (asprintf(&full, "%s: %s", msg, strerror(errnum)) >= 0) {
      free(msg);
      msg = full;
    }
  }
  e->message = msg ? msg : strdup("(out of memory)");
  e->reason = strdup(reason ? reason : CR_E_INTERNAL);
  e->errnum = errnum > 0 ? errnum : 0;
  *err = e;
  return ret;
}

int cr_error_wrap(cr_error **err, const char *fmt, ...) {
  if (!err || !*err) return -1;
  cr_error *e = *err;
  int ret = e->errnum > 0 ? -e->errnum : -1;
  va_list ap;
  va_start(ap, fmt);
  char *ctx = NULL;
  if (vasprintf(&ctx, fmt, ap) < 0) ctx = NULL;
  va_end(ap);
  if (!ctx) return ret;
  char *full = NULL;
  if (asprintf(&full, "%s: %s", ctx, e->message ? e->message : "") >= 0) {
    free(e->message);
    e->message = full;
  }
  free(ctx);
  return ret;
}

bool cr_error_recode(cr_error *e, const char *from, const char *to) {
  if (!e || !e->reason || strcmp(e->reason, from) != 0) return false;
  char *nr = strdup(to);
  if (!nr) return false;
  free(e->reason);
  e->reason = nr;
  return true;
}

void cr_error_free(cr_error *e) {
  if (!e) return;
  free(e->reason);
  free(e->message);
  free(e);
}

const char *cr_error_reason(const cr_error *e) {
  return e && e->reason ? e->reason : CR_E_INTERNAL;
}

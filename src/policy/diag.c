/* Diagnostics: collected, not logged; the caller prints them. */
#include "policy/policy-internal.h"

#include <string.h>

void policy_diags_free(policy_diags *d) {
  if (!d) return;
  for (size_t i = 0; i < d->n; i++) {
    free(d->items[i].file);
    free(d->items[i].path);
    free(d->items[i].message);
  }
  free(d->items);
  free(d);
}

char *policy_diag_format(const policy_diag *d) {
  char *s = NULL;
  const char *sev = d->severity == POLICY_WARNING ? "warning: " : "";
  const char *file = d->file ? d->file : "<policy>";
  const char *path = d->path && *d->path ? d->path : NULL;
  int r;
  if (d->line > 0)
    r = asprintf(&s, "%s:%u:%u: %s%s%s%s", file, d->line, d->column, sev, path ? path : "",
                 path ? ": " : "", d->message ? d->message : "");
  else
    r = asprintf(&s, "%s: %s%s%s%s", file, sev, path ? path : "", path ? ": " : "",
                 d->message ? d->message : "");
  return r < 0 ? NULL : s;
}

json_t *policy_diag_to_json(const policy_diag *d) {
  return json_pack("{s:s, s:I, s:I, s:s, s:s}", "file", d->file ? d->file : "",
                   "line", (json_int_t)d->line, "column", (json_int_t)d->column, "path",
                   d->path ? d->path : "", "message", d->message ? d->message : "");
}

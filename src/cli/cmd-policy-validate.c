/* cleanroom policy validate [FILE] [--policy FILE] [--json] */
#include "cli/cmd-policy-common.h"

#include <stdio.h>
#include <string.h>

static void usage(void) {
  printf("Usage: cleanroom policy validate [FILE] [--policy FILE] [--json]\n\n"
         "Parse and validate a policy. Without FILE, uses cleanroom.yaml at the\n"
         "repository root, then .buildkite/cleanroom.yaml.\n\n"
         "Every error is reported, as FILE:LINE:COLUMN: PATH: MESSAGE on stderr.\n"
         "Exit status: 0 valid, 1 invalid or not found, 2 usage.\n\n"
         "Options:\n"
         "  --policy FILE  the policy file to validate (same as FILE)\n"
         "  --json         print {valid, file, errors, warnings, policy, policy_hash}\n");
}

static json_t *diags_json(const policy_diags *d, policy_severity sev) {
  json_t *a = json_array();
  for (size_t i = 0; a && d && i < d->n; i++)
    if (d->items[i].severity == sev) json_array_append_new(a, policy_diag_to_json(&d->items[i]));
  return a;
}

static void print_diags(const policy_diags *d) {
  cli_policy_print_diags(d);
  if (d && d->n_dropped)
    fprintf(stderr, "(%zu more errors not shown)\n", d->n_dropped);
}

int cmd_policy_validate(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    usage();
    return 0;
  }
  const char *file;
  bool json;
  if (cli_policy_args(argc, argv, &file, &json)) return CLI_EXIT_USAGE;
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_free_ char *path = NULL, *warning = NULL;
  _cleanup_policy_ policy *p = NULL;
  _cleanup_(policy_diags_freep) policy_diags *diags = NULL;
  int r = policy_locate(file, &path, &warning, &err);
  if (r >= 0) r = policy_load_file(path, &p, &diags, &err);
  char hash[72] = "";
  if (r >= 0 && policy_hash(p, hash) < 0) {
    cr_error_set(&err, CR_E_INTERNAL, ENOMEM, "hashing policy");
    r = -1;
  }
  if (r < 0 && !diags && strcmp(cr_error_reason(err), CR_E_POLICY_INVALID) != 0 &&
      strcmp(cr_error_reason(err), CR_E_POLICY_NOT_FOUND) != 0 &&
      strcmp(cr_error_reason(err), CR_E_FILE_ERROR) != 0)
    return cli_fail(err);

  if (json) {
    _cleanup_json_ json_t *out = json_object();
    json_t *errors = diags_json(diags, POLICY_ERROR);
    if (r < 0 && !diags) /* not found / unreadable: one error without a place */
      json_array_append_new(errors, json_pack("{s:s, s:i, s:i, s:s, s:s}", "file",
                                              path ? path : "", "line", 0, "column", 0,
                                              "path", "", "message",
                                              err && err->message ? err->message : ""));
    json_t *warnings = diags_json(diags, POLICY_WARNING);
    if (warning)
      json_array_append_new(warnings, json_pack("{s:s, s:i, s:i, s:s, s:s}", "file",
                                                path ? path : "", "line", 0, "column", 0,
                                                "path", "", "message", warning));
    json_object_set_new(out, "valid", json_boolean(r >= 0));
    json_object_set_new(out, "file", path ? json_string(path) : json_null());
    if (r < 0) json_object_set_new(out, "reason", json_string(cr_error_reason(err)));
    json_object_set_new(out, "errors", errors);
    json_object_set_new(out, "warnings", warnings);
    json_object_set_new(out, "policy", r >= 0 ? policy_compile_json(p) : json_null());
    json_object_set_new(out, "policy_hash", r >= 0 ? json_string(hash) : json_null());
    json_dumpf(out, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
    putchar('\n');
    return r >= 0 ? 0 : 1;
  }
  if (warning) fprintf(stderr, "cleanroom: warning: %s\n", warning);
  print_diags(diags);
  if (r < 0) {
    if (!diags) cli_fail(err);
    else if (diags->n_errors > 1)
      fprintf(stderr, "cleanroom: %s: %s: %zu errors\n", CR_E_POLICY_INVALID, path,
              diags->n_errors);
    return 1;
  }
  printf("%s: valid (%s)\n", path, hash);
  return 0;
}

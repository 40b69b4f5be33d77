/* cleanroom image bump-ref REF [--policy FILE]: pin sandbox.image.ref. */
#include "cli/cli.h"
#include "policy/policy.h"
#include "util/fs.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int cmd_image_bump_ref(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("Usage: cleanroom image bump-ref REF [--policy FILE] [--dry-run] [--registry-auth FILE]\n\n"
           "Resolve REF to a digest-pinned ref (see 'cleanroom image resolve') and\n"
           "write it to sandbox.image.ref of the policy, changing nothing else in\n"
           "the file (comments and formatting are kept). Without --policy, uses\n"
           "cleanroom.yaml at the repository root, then .buildkite/cleanroom.yaml.\n"
           "A policy without sandbox.image.ref gets one added to its sandbox block.\n\n"
           "Options:\n"
           "  --policy FILE  the policy file to update\n"
           "  --dry-run      print the updated file instead of writing it\n"
           "  --registry-auth FILE  registry credentials (docker config.json style)\n");
    return 0;
  }
  const char *ref = NULL, *file = NULL, *auth_file = NULL;
  bool dry_run = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--policy") && i + 1 < argc)
      file = argv[++i];
    else if (!strcmp(argv[i], "--registry-auth") && i + 1 < argc)
      auth_file = argv[++i];
    else if (!strcmp(argv[i], "--dry-run"))
      dry_run = true;
    else if (argv[i][0] != '-' && !ref)
      ref = argv[i];
    else
      return cli_usage_error(NULL, "unexpected argument '%s'; see --help", argv[i]);
  }
  if (!ref) return cli_usage_error(NULL, "expected REF; see --help");
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_free_ char *pinned = NULL, *path = NULL, *warning = NULL, *buf = NULL, *out = NULL;
  size_t len = 0, out_len = 0;
  if (cli_image_resolve(ref, auth_file, &pinned, &err) < 0) return cli_fail(err);
  if (policy_locate(file, &path, &warning, &err) < 0) return cli_fail(err);
  if (warning) fprintf(stderr, "cleanroom: warning: %s\n", warning);
  int r = cr_read_file(path, POLICY_MAX_FILE_SIZE, &buf, &len);
  if (r < 0)
    return cli_failf(r == -ENOENT ? CR_E_POLICY_NOT_FOUND : CR_E_FILE_ERROR, "reading %s: %s",
                     path, strerror(-r));
  if (policy_edit_image_ref(buf, len, path, pinned, &out, &out_len, &err) < 0)
    return cli_fail(err);
  if (dry_run) {
    fwrite(out, 1, out_len, stdout);
    return 0;
  }
  struct stat st;
  mode_t mode = stat(path, &st) == 0 ? (st.st_mode & 07777) : 0644;
  r = cr_write_file_atomic(path, out, out_len, mode);
  if (r < 0) return cli_failf(CR_E_FILE_ERROR, "writing %s: %s", path, strerror(-r));
  printf("%s: sandbox.image.ref = %s\n", path, pinned);
  return 0;
}

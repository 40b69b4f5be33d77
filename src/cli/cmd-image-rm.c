/* cleanroom image rm [--force] REF... */
#include "cli/cli.h"
#include "image/image.h"

#include <stdio.h>
#include <string.h>

int cmd_image_rm(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("Usage: cleanroom image rm [--force] REF|DIGEST...\n\n"
           "Remove image refs from the local store. An image's files are deleted when\n"
           "its last ref goes. Given a digest (sha256:HEX or a unique prefix of at\n"
           "least 12 hex digits), the image is deleted if no ref names it.\n\n"
           "Options:\n"
           "  -f, --force   with a digest: also drop the refs that name it\n");
    return 0;
  }
  unsigned flags = 0;
  int n = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--force") || !strcmp(argv[i], "-f"))
      flags |= IMAGE_REMOVE_FORCE;
    else if (argv[i][0] == '-')
      return cli_failf(CR_E_INVALID_ARGUMENT, "unknown option '%s'; see --help", argv[i]);
    else
      n++;
  }
  if (!n) return cli_failf(CR_E_INVALID_ARGUMENT, "missing REF; see --help");
  int rc = 0;
  for (int i = 1; i < argc; i++) {
    if (argv[i][0] == '-') continue;
    _cleanup_error_ cr_error *err = NULL;
    _cleanup_free_ char *removed = NULL;
    if (image_remove(argv[i], flags, &removed, &err) < 0) {
      rc = cli_fail(err);
      continue;
    }
    if (removed)
      printf("Deleted: %s\n", removed);
    else
      printf("Untagged: %s\n", argv[i]);
  }
  return rc;
}

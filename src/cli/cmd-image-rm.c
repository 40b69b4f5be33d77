/* cleanroom image rm [--force] REF...: through the daemon (image.remove;
 * it owns the image store and drops the image's templates too). */
#include "client/client.h"
#include "cli/cli.h"
#include "cli/cmd-sandbox-common.h"

#include <stdio.h>
#include <string.h>

static void help(FILE *f) {
  fprintf(f,
          "Usage: cleanroom image rm [--force] [--host SOCKET] REF|DIGEST...\n\n"
          "Remove image refs from the store (through the daemon). An image's files\n"
          "are deleted when its last ref goes. Given a digest (sha256:HEX or a unique\n"
          "prefix of at least 12 hex digits), the image is deleted if no ref names it.\n\n"
          "Options:\n"
          "  -f, --force    with a digest: also drop the refs that name it\n"
          "  --host SOCKET  the daemon's socket\n");
}

int cmd_image_rm(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  bool force = false;
  const char *host = NULL;
  int n = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--force") || !strcmp(argv[i], "-f"))
      force = true;
    else if (!strcmp(argv[i], "--host") && i + 1 < argc)
      host = argv[++i];
    else if (argv[i][0] == '-')
      return cli_failf(CR_E_INVALID_ARGUMENT, "unknown option '%s'; see --help", argv[i]);
    else
      n++;
  }
  if (!n) return cli_failf(CR_E_INVALID_ARGUMENT, "missing REF; see --help");
  _cleanup_api_client_ api_client *c = NULL;
  if (cli_connect(host, &c) != 0) return CLI_EXIT_FAILURE;
  int rc = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--host")) {
      i++;
      continue;
    }
    if (argv[i][0] == '-') continue;
    _cleanup_error_ cr_error *err = NULL;
    _cleanup_json_ json_t *res = NULL;
    json_t *params = json_pack("{s:s, s:b}", "ref", argv[i], "force", force);
    if (api_client_call(c, "image.remove", params, NULL, NULL, &res, &err) < 0) {
      rc = cli_fail(err);
      continue;
    }
    const char *removed = json_string_value(json_object_get(res, "removed_digest"));
    if (removed)
      printf("Deleted: %s\n", removed);
    else
      printf("Untagged: %s\n", argv[i]);
  }
  return rc;
}

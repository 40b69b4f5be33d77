/* cleanroom image inspect REF [--json]: through the daemon (image.inspect;
 * it owns the image store). */
#include "client/client.h"
#include "cli/cli.h"
#include "cli/cmd-sandbox-common.h"

#include <stdio.h>
#include <string.h>

static const char *str(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

int cmd_image_inspect(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("Usage: cleanroom image inspect REF|DIGEST [--json] [--host SOCKET]\n\n"
           "Show a stored image (through the daemon): digest, refs, rootfs path, size,\n"
           "origin. REF is a name (name alone means name:latest), sha256:HEX, or a\n"
           "unique hex prefix of at least 12 digits.\n\n"
           "Options:\n"
           "  --json         print JSON\n"
           "  --host SOCKET  the daemon's socket\n");
    return 0;
  }
  const char *what = NULL, *host = NULL;
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      json = true;
    else if (!strcmp(argv[i], "--host") && i + 1 < argc)
      host = argv[++i];
    else if (argv[i][0] == '-')
      return cli_failf(CR_E_INVALID_ARGUMENT, "unknown option '%s'; see --help", argv[i]);
    else if (!what)
      what = argv[i];
    else
      return cli_failf(CR_E_INVALID_ARGUMENT, "one REF at a time");
  }
  if (!what) return cli_failf(CR_E_INVALID_ARGUMENT, "missing REF; see --help");
  _cleanup_api_client_ api_client *c = NULL;
  if (cli_connect(host, &c) != 0) return CLI_EXIT_FAILURE;
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_json_ json_t *res = NULL;
  if (api_client_call(c, "image.inspect", json_pack("{s:s}", "ref", what), NULL, NULL, &res,
                      &err) < 0)
    return cli_fail(err);
  json_t *info = json_object_get(res, "image");
  if (!json_is_object(info))
    return cli_failf(CR_E_INTERNAL, "image.inspect: the daemon's answer has no image");
  if (json) {
    json_dumpf(info, stdout, JSON_INDENT(2));
    putchar('\n');
    return 0;
  }
  json_t *refs = json_object_get(info, "refs");
  printf("Digest:        %s\n", str(info, "digest") ?: "");
  printf("Refs:         ");
  size_t i;
  json_t *ref;
  json_array_foreach(refs, i, ref) printf(" %s", json_string_value(ref) ?: "");
  printf("%s\n", json_array_size(refs) ? "" : " <none>");
  printf("Rootfs:        %s\n", str(info, "rootfs") ?: "");
  printf("Size:          %llu bytes (content %llu)\n",
         (unsigned long long)json_integer_value(json_object_get(info, "size")),
         (unsigned long long)json_integer_value(json_object_get(info, "content_size")));
  printf("Format:        %s\n", str(info, "source_format") ?: "");
  printf("Imported from: %s\n", str(info, "imported_from") ?: "");
  printf("Created:       %s\n", str(info, "created_at") ?: "");
  return 0;
}

/* cleanroom image ls [--json]: through the daemon (image.list; it owns the
 * image store). */
#include "client/client.h"
#include "cli/cli.h"
#include "cli/cmd-sandbox-common.h"

#include <stdio.h>
#include <string.h>

static const char *str(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

int cmd_image_ls(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("Usage: cleanroom image ls [--json] [--host SOCKET]\n\n"
           "List the images in the store (through the daemon), newest first: ref,\n"
           "digest, creation time, size of the ext4 file and platform (pulled images).\n\n"
           "Options:\n"
           "  --json         print a JSON array of images\n"
           "  --host SOCKET  the daemon's socket\n");
    return 0;
  }
  bool json = false;
  const char *host = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      json = true;
    else if (!strcmp(argv[i], "--host") && i + 1 < argc)
      host = argv[++i];
    else
      return cli_failf(CR_E_INVALID_ARGUMENT, "unexpected argument '%s'; see --help", argv[i]);
  }
  _cleanup_api_client_ api_client *c = NULL;
  if (cli_connect(host, &c) != 0) return CLI_EXIT_FAILURE;
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_json_ json_t *res = NULL;
  if (api_client_call(c, "image.list", json_object(), NULL, NULL, &res, &err) < 0)
    return cli_fail(err);
  json_t *arr = json_object_get(res, "images");
  if (!json_is_array(arr))
    return cli_failf(CR_E_INTERNAL, "image.list: the daemon's answer has no images");
  if (json) {
    json_dumpf(arr, stdout, JSON_INDENT(2));
    putchar('\n');
    return 0;
  }
  printf("%-40s %-19s %-20s %8s  %s\n", "REF", "DIGEST", "CREATED", "SIZE", "PLATFORM");
  size_t i;
  json_t *im;
  json_array_foreach(arr, i, im) {
    char dig[20];
    snprintf(dig, sizeof(dig), "%.19s", str(im, "digest") ?: "");
    char size[32];
    snprintf(size, sizeof(size), "%lluM",
             (unsigned long long)((uint64_t)json_integer_value(json_object_get(im, "size")) >> 20));
    const char *created = str(im, "created_at") ?: "";
    const char *plat = str(im, "platform") ?: "-";
    json_t *refs = json_object_get(im, "refs");
    if (json_array_size(refs) == 0)
      printf("%-40s %-19s %-20s %8s  %s\n", "<none>", dig, created, size, plat);
    size_t r;
    json_t *ref;
    json_array_foreach(refs, r, ref)
      printf("%-40s %-19s %-20s %8s  %s\n", json_string_value(ref) ?: "", dig, created, size,
             plat);
  }
  return 0;
}

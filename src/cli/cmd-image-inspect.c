/* cleanroom image inspect REF [--json] */
#include "cli/cli.h"
#include "image/image.h"

#include <stdio.h>
#include <string.h>

int cmd_image_inspect(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("Usage: cleanroom image inspect REF|DIGEST [--json]\n\n"
           "Show a stored image: digest, refs, rootfs path, size, origin.\n"
           "REF is a name (name alone means name:latest), sha256:HEX, or a unique\n"
           "hex prefix of at least 12 digits.\n\n"
           "Options:\n"
           "  --json   print JSON\n");
    return 0;
  }
  const char *what = NULL;
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      json = true;
    else if (argv[i][0] == '-')
      return cli_failf(CR_E_INVALID_ARGUMENT, "unknown option '%s'; see --help", argv[i]);
    else if (!what)
      what = argv[i];
    else
      return cli_failf(CR_E_INVALID_ARGUMENT, "one REF at a time");
  }
  if (!what) return cli_failf(CR_E_INVALID_ARGUMENT, "missing REF; see --help");
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_image_info_ image_info *info = NULL;
  if (image_lookup(what, &info, &err) < 0) return cli_fail(err);
  if (json) {
    _cleanup_json_ json_t *j = image_info_to_json(info);
    if (j) json_dumpf(j, stdout, JSON_INDENT(2));
    putchar('\n');
    return 0;
  }
  printf("Digest:        %s\n", info->digest);
  printf("Refs:         ");
  for (size_t i = 0; i < info->n_refs; i++) printf(" %s", info->refs[i]);
  printf("%s\n", info->n_refs ? "" : " <none>");
  printf("Rootfs:        %s\n", info->rootfs);
  printf("Size:          %llu bytes (content %llu)\n", (unsigned long long)info->size,
         (unsigned long long)info->content_size);
  printf("Format:        %s\n", info->source_format ? info->source_format : "");
  printf("Imported from: %s\n", info->imported_from ? info->imported_from : "");
  printf("Created:       %s\n", info->created_at ? info->created_at : "");
  return 0;
}

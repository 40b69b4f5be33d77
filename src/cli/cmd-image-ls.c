/* cleanroom image ls [--json] */
#include "cli/cli.h"
#include "image/image.h"

#include <stdio.h>
#include <string.h>

int cmd_image_ls(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("Usage: cleanroom image ls [--json]\n\n"
           "List the images in the local store, newest first: ref, digest, creation\n"
           "time, size of the ext4 file and platform (pulled images).\n\n"
           "Options:\n"
           "  --json   print a JSON array of images\n");
    return 0;
  }
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      json = true;
    else
      return cli_failf(CR_E_INVALID_ARGUMENT, "unexpected argument '%s'; see --help", argv[i]);
  }
  _cleanup_error_ cr_error *err = NULL;
  image_info **list = NULL;
  size_t n = 0;
  if (image_list(&list, &n, &err) < 0) return cli_fail(err);
  if (json) {
    _cleanup_json_ json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) json_array_append_new(arr, image_info_to_json(list[i]));
    if (arr) json_dumpf(arr, stdout, JSON_INDENT(2));
    putchar('\n');
  } else {
    printf("%-40s %-19s %-20s %8s  %s\n", "REF", "DIGEST", "CREATED", "SIZE", "PLATFORM");
    for (size_t i = 0; i < n; i++) {
      const image_info *im = list[i];
      char dig[20];
      snprintf(dig, sizeof(dig), "%.19s", im->digest);
      char size[32];
      snprintf(size, sizeof(size), "%lluM", (unsigned long long)(im->size >> 20));
      const char *created = im->created_at ? im->created_at : "";
      const char *plat = im->platform ? im->platform : "-";
      if (im->n_refs == 0)
        printf("%-40s %-19s %-20s %8s  %s\n", "<none>", dig, created, size, plat);
      for (size_t r = 0; r < im->n_refs; r++)
        printf("%-40s %-19s %-20s %8s  %s\n", im->refs[r], dig, created, size, plat);
    }
  }
  image_info_list_free(list, n);
  return 0;
}

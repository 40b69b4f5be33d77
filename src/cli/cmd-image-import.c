/* cleanroom image import FILE|DIR [--ref NAME] [--json] */
#include "cli/cli.h"
#include "image/image.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct progress_state {
  bool tty;
  char last[64];
} progress_state;

static void on_progress(const char *phase, uint64_t done, uint64_t total, void *userdata) {
  progress_state *ps = userdata;
  if (ps->tty) {
    if (total)
      fprintf(stderr, "\r\033[K%s: %llu/%llu MiB", phase,
              (unsigned long long)(done >> 20), (unsigned long long)(total >> 20));
    else
      fprintf(stderr, "\r\033[K%s", phase);
    if (!strcmp(phase, "done")) fputc('\n', stderr);
    fflush(stderr);
    return;
  }
  if (!strcmp(ps->last, phase)) return; /* one line per phase in logs */
  snprintf(ps->last, sizeof(ps->last), "%s", phase);
  fprintf(stderr, "%s\n", phase);
}

int cmd_image_import(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("Usage: cleanroom image import FILE|DIR [--ref NAME] [--json]\n\n"
           "Import an image into the local store and print its digest.\n"
           "FILE is a rootfs tar (optionally gzip/zstd/xz/bzip2 compressed), an OCI\n"
           "image layout tar or a `docker save` tar; DIR is an OCI image layout.\n"
           "The image becomes an ext4 root filesystem under <data>/images/.\n\n"
           "Options:\n"
           "  --ref NAME   name the image (e.g. cleanroom-base/debian:bookworm);\n"
           "               default: the name recorded in the archive, if any\n"
           "  --json       print the image as JSON instead of the digest\n"
           "Progress goes to stderr.\n");
    return 0;
  }
  const char *path = NULL, *ref = NULL;
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) {
      json = true;
    } else if (!strcmp(argv[i], "--ref") && i + 1 < argc) {
      ref = argv[++i];
    } else if (!strncmp(argv[i], "--ref=", 6)) {
      ref = argv[i] + 6;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      return cli_failf(CR_E_INVALID_ARGUMENT, "unknown option '%s'; see --help", argv[i]);
    } else if (!path) {
      path = argv[i];
    } else {
      return cli_failf(CR_E_INVALID_ARGUMENT, "one FILE|DIR at a time");
    }
  }
  if (!path) return cli_failf(CR_E_INVALID_ARGUMENT, "missing FILE|DIR; see --help");
  progress_state ps = {.tty = isatty(STDERR_FILENO)};
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_image_info_ image_info *info = NULL;
  if (image_import(path, ref, on_progress, &ps, &info, &err) < 0) {
    if (ps.tty) fputc('\n', stderr);
    return cli_fail(err);
  }
  if (json) {
    _cleanup_json_ json_t *j = image_info_to_json(info);
    if (!j || json_dumpf(j, stdout, JSON_INDENT(2)) < 0) return cli_failf(CR_E_INTERNAL, "out of memory");
    putchar('\n');
  } else {
    printf("%s\n", info->digest);
  }
  return 0;
}

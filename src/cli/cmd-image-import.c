/* cleanroom image import FILE|DIR [--ref NAME] [--json]: the daemon imports
 * (it owns the image store). The CLI opens FILE|DIR itself, so what counts
 * is this user's right to read it, and sends the descriptor with the
 * request (image.import, SCM_RIGHTS). */
#include "client/client.h"
#include "cli/cli.h"
#include "cli/cmd-sandbox-common.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct progress_state {
  bool tty;
  char last[64];
} progress_state;

static void on_note(const char *method, json_t *params, void *userdata) {
  progress_state *ps = userdata;
  if (strcmp(method, "image.progress")) return;
  const char *phase = json_string_value(json_object_get(params, "phase"));
  uint64_t done = (uint64_t)json_integer_value(json_object_get(params, "done"));
  uint64_t total = (uint64_t)json_integer_value(json_object_get(params, "total"));
  if (!phase) return;
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

/* Opens path for the daemon: a file or a directory, never blocking on a
 * FIFO or device. */
static int open_source(const char *path, int *ret_fd, char **ret_abs) {
  _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0)
    return cli_failf(errno == ENOENT ? CR_E_FILE_NOT_FOUND
                     : errno == EACCES ? CR_E_PERMISSION_DENIED : CR_E_IO,
                     "%s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) < 0) return cli_failf(CR_E_IO, "%s: %s", path, strerror(errno));
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
    return cli_failf(CR_E_INVALID_ARGUMENT, "%s is neither a file nor a directory", path);
  char *abs = realpath(path, NULL);
  if (!abs) return cli_failf(CR_E_IO, "%s: %s", path, strerror(errno));
  *ret_fd = TAKE_FD(fd);
  *ret_abs = abs;
  return 0;
}

static void help(FILE *f) {
  fprintf(f,
          "Usage: cleanroom image import FILE|DIR [--ref NAME] [--json] [--host SOCKET]\n\n"
          "Import an image into the store (through the daemon) and print its digest.\n"
          "FILE is a rootfs tar (optionally gzip/zstd/xz/bzip2 compressed), an OCI\n"
          "image layout tar or a `docker save` tar; DIR is an OCI image layout.\n"
          "The image becomes an ext4 root filesystem under <data>/images/.\n"
          "FILE|DIR is opened here, with your rights, and handed to the daemon.\n\n"
          "Options:\n"
          "  --ref NAME     name the image (e.g. cleanroom-base/debian:bookworm);\n"
          "                 default: the name recorded in the archive, if any\n"
          "  --json         print the image as JSON instead of the digest\n"
          "  --host SOCKET  the daemon's socket\n"
          "Progress goes to stderr.\n");
}

int cmd_image_import(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  const char *path = NULL, *ref = NULL, *host = NULL;
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) {
      json = true;
    } else if (!strcmp(argv[i], "--ref") && i + 1 < argc) {
      ref = argv[++i];
    } else if (!strncmp(argv[i], "--ref=", 6)) {
      ref = argv[i] + 6;
    } else if (!strcmp(argv[i], "--host") && i + 1 < argc) {
      host = argv[++i];
    } else if (argv[i][0] == '-' && argv[i][1]) {
      return cli_failf(CR_E_INVALID_ARGUMENT, "unknown option '%s'; see --help", argv[i]);
    } else if (!path) {
      path = argv[i];
    } else {
      return cli_failf(CR_E_INVALID_ARGUMENT, "one FILE|DIR at a time");
    }
  }
  if (!path) return cli_failf(CR_E_INVALID_ARGUMENT, "missing FILE|DIR; see --help");
  _cleanup_close_ int fd = -1;
  _cleanup_free_ char *abs = NULL;
  int r = open_source(path, &fd, &abs);
  if (r != 0) return r;
  json_t *params = json_pack("{s:s, s:s?}", "path", abs, "ref", ref);
  if (!params) return cli_failf(CR_E_INTERNAL, "out of memory");
  _cleanup_api_client_ api_client *c = NULL;
  if (cli_connect(host, &c) != 0) {
    json_decref(params);
    return CLI_EXIT_FAILURE;
  }
  progress_state ps = {.tty = isatty(STDERR_FILENO)};
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_json_ json_t *res = NULL;
  if (api_client_call_fd(c, "image.import", params, fd, on_note, &ps, &res, &err) < 0) {
    if (ps.tty) fputc('\n', stderr);
    return cli_fail(err);
  }
  json_t *img = json_object_get(res, "image");
  if (json) {
    if (json_dumpf(img, stdout, JSON_INDENT(2)) < 0)
      return cli_failf(CR_E_INTERNAL, "out of memory");
    putchar('\n');
  } else {
    printf("%s\n", json_string_value(json_object_get(img, "digest")) ?: "");
  }
  return 0;
}

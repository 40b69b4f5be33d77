/* Test helper: builds (or reuses) the boot assets and prints them as
 * KEY=VALUE lines. Usage: boot-assets KERNEL_DIR [AGENT] */
#include <stdio.h>
#include <string.h>

#include "boot/boot.h"

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s KERNEL_DIR [AGENT]\n", argv[0]);
    return 2;
  }
  _cleanup_free_ char *agent = argc > 2 ? strdup(argv[2]) : boot_find_agent();
  _cleanup_error_ cr_error *err = NULL;
  boot_assets *a = NULL;
  if (boot_assets_ensure(argv[1], agent, &a, &err) < 0) {
    fprintf(stderr, "boot-assets: %s (%s)\n", err->message, cr_error_reason(err));
    return 1;
  }
  printf("KERNEL=%s\nVMLINUX=%s\nINITRD=%s\nVERSION=%s\nAGENT=%s\n", a->kernel,
         a->vmlinux ? a->vmlinux : "", a->initrd, a->version, agent);
  boot_assets_free(a);
  return 0;
}

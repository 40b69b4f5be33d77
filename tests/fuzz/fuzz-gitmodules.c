/* Fuzz target for the submodule inputs a repository controls: the bytes as a
 * .gitmodules blob (libgit2's parser behind ws_gitmodules_url, includes
 * refused), and the URL it names (or the bytes themselves) resolved against
 * a remote and a local superproject. A URL accepted for a remote
 * superproject must never be a host-local one, nor option-like. */
#include "workspace/ws.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const char *super, const char *url, bool remote) {
  char *u = ws_submodule_url(super, url);
  if (!u) return;
  if (u[0] == '-' || strstr(u, "::")) abort();
  if (remote && (u[0] == '/' || strncmp(u, "file:", 5) == 0)) abort();
  for (const char *p = u; *p; p++)
    if ((unsigned char)*p < 0x20) abort();
  free(u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > (64u << 10)) return 0;
  char *s = malloc(size + 1);
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = '\0';
  char *url = NULL;
  cr_error *err = NULL;
  if (ws_gitmodules_url(data, size, "lib", &url, &err) == 0 && url) {
    check("https://h/a/super.git", url, true);
    check("git@h:a/super.git", url, true);
    check("/srv/a/super.git", url, false);
    free(url);
  }
  cr_error_free(err);
  check("https://h/a/super.git", s, true);
  check("h:super", s, true);
  check("file:///srv/super", s, false);
  free(s);
  return 0;
}

/* Fuzz target: the registry parsers on untrusted bytes. The first byte picks
 * the parser (0: image reference, 1: WWW-Authenticate, 2: manifest or index
 * with a Content-Type taken from the first line, 3: all three on the rest). */
#include "image/registry.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void ref(const char *s) {
  image_reference r;
  cr_error *err = NULL;
  if (image_reference_parse(s, &r, &err) == 0) {
    char *f = image_reference_format(&r);
    image_reference r2;
    cr_error *e2 = NULL;
    /* the canonical form always parses again, to the same */
    if (!f || image_reference_parse(f, &r2, &e2) < 0 || strcmp(r.registry, r2.registry) ||
        strcmp(r.repository, r2.repository))
      abort();
    (void)image_registry_is_loopback(r.registry);
    image_reference_clear(&r2);
    free(f);
    image_reference_clear(&r);
  }
  cr_error_free(err);
}

static void challenge(const char *s) {
  image_auth_challenge c;
  cr_error *err = NULL;
  if (image_auth_challenge_parse(s, &c, &err) == 0) {
    if (!c.scheme) abort();
    image_auth_challenge_clear(&c);
  }
  cr_error_free(err);
}

static void manifest(const char *s, size_t n) {
  const char *nl = memchr(s, '\n', n);
  char ct[128] = "";
  if (nl && (size_t)(nl - s) < sizeof(ct)) {
    memcpy(ct, s, (size_t)(nl - s));
    n -= (size_t)(nl - s) + 1;
    s = nl + 1;
  }
  image_manifest m;
  cr_error *err = NULL;
  if (image_manifest_parse(s, n, ct[0] ? ct : NULL, &m, &err) == 0) {
    if (m.is_index) {
      ssize_t i = image_manifest_pick_platform(&m, "linux/amd64");
      if (i >= (ssize_t)m.n_layers) abort();
    }
    for (size_t i = 0; i < m.n_layers; i++)
      if (strlen(m.layers[i].hex) != 64) abort();
    image_manifest_clear(&m);
  }
  cr_error_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > (1u << 20)) return 0;
  char *s = malloc(size);
  if (!s) return 0;
  memcpy(s, data + 1, size - 1);
  s[size - 1] = '\0';
  switch (data[0] % 4) {
  case 0: ref(s); break;
  case 1: challenge(s); break;
  case 2: manifest(s, size - 1); break;
  default:
    ref(s);
    challenge(s);
    manifest(s, strlen(s));
  }
  free(s);
  return 0;
}

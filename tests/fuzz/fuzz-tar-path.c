/* Fuzz target for the image store's entry checks: the input is read as an
 * archive (any compression) and every entry validated without extracting;
 * the same bytes, as a string, go through the path sanitizer, whose output
 * must be relative, ".."-free and without empty components. */
#include "image/image.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_sanitized(const char *s) {
  if (s[0] == '/') abort();
  const char *p = s;
  while (*p) {
    const char *end = strchrnul(p, '/');
    size_t n = (size_t)(end - p);
    if (n == 0) abort();                               /* "//" or trailing '/' */
    if (n == 1 && p[0] == '.') abort();
    if (n == 2 && p[0] == '.' && p[1] == '.') abort();
    if (n > image_limits_get()->max_component) abort();
    p = *end ? end + 1 : end;
  }
  if (strlen(s) > image_limits_get()->max_path) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cr_error *err = NULL;
  (void)image_archive_check(data, size, &err);
  cr_error_free(err);
  err = NULL;

  char *s = malloc(size + 1);
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = '\0';
  char *out = NULL;
  if (image_path_sanitize(s, &out, &err) >= 0) {
    check_sanitized(out);
    free(out);
  } else if (!err || strcmp(cr_error_reason(err), "image_unsafe_path") != 0) {
    abort();
  }
  cr_error_free(err);
  free(s);
  return 0;
}

/* Small helpers for policy validation. */
#include "policy/policy-internal.h"

#include <string.h>
#include <strings.h>

size_t policy_edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64) return SIZE_MAX; /* keys are short; bound the work */
  size_t row[65];
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t cost = (a[i - 1] | 0x20) == (b[j - 1] | 0x20) ? 0 : 1;
      size_t best = MIN(row[j] + 1, row[j - 1] + 1);
      row[j] = MIN(best, diag + cost);
      diag = up;
    }
  }
  return row[lb];
}

static const struct {
  const char *suffix;
  uint64_t bytes;
} units[] = {
    {"", 1024 * 1024}, /* a bare number is MiB */
    {"b", 1},
    {"k", 1000},
    {"kb", 1000},
    {"ki", 1024},
    {"kib", 1024},
    {"m", 1000 * 1000},
    {"mb", 1000 * 1000},
    {"mi", 1024 * 1024},
    {"mib", 1024 * 1024},
    {"g", 1000ull * 1000 * 1000},
    {"gb", 1000ull * 1000 * 1000},
    {"gi", 1024ull * 1024 * 1024},
    {"gib", 1024ull * 1024 * 1024},
    {"t", 1000ull * 1000 * 1000 * 1000},
    {"tb", 1000ull * 1000 * 1000 * 1000},
    {"ti", 1024ull * 1024 * 1024 * 1024},
    {"tib", 1024ull * 1024 * 1024 * 1024},
};

int policy_parse_size_mib(const char *s, uint64_t *ret) {
  const char *p = s;
  uint64_t n = 0;
  if (*p < '0' || *p > '9') return -EINVAL;
  for (; *p >= '0' && *p <= '9'; p++) {
    if (n > (UINT64_MAX - 9) / 10) return -ERANGE;
    n = n * 10 + (uint64_t)(*p - '0');
  }
  while (*p == ' ') p++;
  for (size_t i = 0; i < ELEMENTSOF(units); i++) {
    if (strcasecmp(p, units[i].suffix) != 0) continue;
    if (n > UINT64_MAX / units[i].bytes) return -ERANGE;
    uint64_t bytes = n * units[i].bytes;
    const uint64_t mib = 1024 * 1024;
    *ret = bytes / mib + (bytes % mib ? 1 : 0);
    return 0;
  }
  return -EINVAL;
}

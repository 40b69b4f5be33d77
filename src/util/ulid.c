#include "util/ulid.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <stdint.h>

static const char enc[] = "0123456789abcdefghjkmnpqrstvwxyz";

void cr_ulid_new(char ret[27]) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
  unsigned char rnd[10];
  if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd)) memset(rnd, 0, sizeof(rnd));
  for (int i = 9; i >= 0; i--) {
    ret[i] = enc[ms & 31];
    ms >>= 5;
  }
  /* 80 random bits -> 16 chars */
  uint64_t hi = 0, lo = 0;
  for (int i = 0; i < 5; i++) hi = (hi << 8) | rnd[i];
  for (int i = 5; i < 10; i++) lo = (lo << 8) | rnd[i];
  for (int i = 0; i < 8; i++) {
    ret[10 + 7 - i] = enc[hi & 31];
    hi >>= 5;
    ret[18 + 7 - i] = enc[lo & 31];
    lo >>= 5;
  }
  ret[26] = '\0';
}

int cr_ulid_valid(const char *s) {
  if (!s || strlen(s) != 26) return 0;
  for (int i = 0; i < 26; i++)
    if (!strchr(enc, s[i])) return 0;
  return s[0] <= '7';
}

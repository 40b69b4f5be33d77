/* The monotonic clock, for intervals, deadlines and timings (never for
 * times shown as dates: those are CLOCK_REALTIME). */
#pragma once
#include <stdint.h>
#include <time.h>

static inline int64_t cr_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t cr_mono_ms(void) { return cr_mono_ns() / 1000000; }

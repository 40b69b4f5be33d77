/* Host-wide quotas on sandboxes (resource_exhausted when reached):
 *   CLEANROOM_MAX_SANDBOXES     sandboxes not stopped (default 64)
 *   CLEANROOM_MEMORY_PERCENT    total guest memory of those, in percent of
 *                               the host's RAM (default 100: guest RAM lives
 *                               in /dev/shm files, so it is real memory) */
#include "sandbox/sandbox-internal.h"

#include <stdlib.h>
#include <unistd.h>

#define MAX_SANDBOXES_DEFAULT 64
#define MEMORY_PERCENT_DEFAULT 100

static unsigned long env_ul(const char *name, unsigned long dflt) {
  const char *v = getenv(name);
  char *end;
  unsigned long r = v && *v ? strtoul(v, &end, 10) : 0;
  return v && *v && !*end && r > 0 ? r : dflt;
}

int sbx_quota_check(sbx_manager *m, unsigned memory_mib, cr_error **err) {
  unsigned long max = env_ul("CLEANROOM_MAX_SANDBOXES", MAX_SANDBOXES_DEFAULT);
  unsigned long pct = env_ul("CLEANROOM_MEMORY_PERCENT", MEMORY_PERCENT_DEFAULT);
  size_t live = 0;
  uint64_t used = 0;
  for (size_t i = 0; i < m->n; i++) {
    sbx *s = m->list[i];
    if (s->state == SBX_STOPPED || s->state == SBX_FAILED) continue;
    live++;
    used += s->memory_mib;
  }
  if (live >= max)
    return cr_error_set(err, CR_E_RESOURCE_EXHAUSTED, 0,
                        "%zu sandboxes are running, the limit is %lu (CLEANROOM_MAX_SANDBOXES); "
                        "remove one first", live, max);
  long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
  if (pages > 0 && psz > 0) {
    uint64_t host_mib = (uint64_t)pages * (uint64_t)psz >> 20;
    uint64_t allowed = host_mib * pct / 100;
    if (used + memory_mib > allowed)
      return cr_error_set(err, CR_E_RESOURCE_EXHAUSTED, 0,
                          "%u MiB more guest memory would make %llu MiB, over %llu MiB (%lu%% of "
                          "the host's %llu MiB, CLEANROOM_MEMORY_PERCENT)",
                          memory_mib, (unsigned long long)(used + memory_mib),
                          (unsigned long long)allowed, pct, (unsigned long long)host_mib);
  }
  return 0;
}

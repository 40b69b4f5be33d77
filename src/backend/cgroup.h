/* A cgroup per VMM (Firecracker's jailer does the same): memory, pids and
 * CPU limits from the sandbox's resources, so one sandbox cannot take the
 * host's memory or CPU from the others.
 *
 * Layout: <cgroup root>/$CLEANROOM_CGROUP/<sandbox id> (default parent
 * BACKEND_CGROUP_PARENT), with cgroup v2 (the unified hierarchy: memory.max,
 * pids.max, cpu.max) where the host has it, else cgroup v1 (the same group
 * in the memory, pids and cpu hierarchies). Limits:
 *   memory  guest memory + BACKEND_CGROUP_MEM_OVERHEAD_MIB (the guest RAM
 *           file's pages are charged to the VMM that faults them in)
 *   pids    BACKEND_CGROUP_PIDS (QEMU's threads; it cannot fork: seccomp)
 *   cpu     the vCPUs plus half a CPU (QEMU's main loop and I/O)
 * Off ("none") when $CLEANROOM_CGROUP is "off" or empty, when the daemon is
 * not root, or when no usable hierarchy is mounted; doctor says which.
 * When on, a group that cannot be made or joined fails the launch.
 *
 * The VMM joins its group right after it is spawned (libuv cannot run code
 * between fork and exec): what QEMU allocates before that, a few MiB of
 * start-up, stays charged to the daemon's group. A group is removed when its
 * VMM is gone; rmdir only succeeds on an empty group, so removing is always
 * safe to try again (sandbox removal, a VMM found dead after a restart). */
#pragma once
#include "util/error.h"

#include <stdbool.h>
#include <sys/types.h>

#define BACKEND_CGROUP_PARENT "cleanroom"
#define BACKEND_CGROUP_MEM_OVERHEAD_MIB 256
#define BACKEND_CGROUP_PIDS 256

typedef enum { BACKEND_CGROUP_NONE, BACKEND_CGROUP_V1, BACKEND_CGROUP_V2 } backend_cgroup_mode;

/* The mode on this host (cached), and why (for doctor). */
backend_cgroup_mode backend_cgroup_mode_get(const char **why);
/* Forgets the cached mode (unit tests: $CLEANROOM_CGROUP_FS points the
 * module at a tree of their own). */
void backend_cgroup_redetect(void);
/* "v2", "v1" or "off". */
const char *backend_cgroup_mode_name(backend_cgroup_mode m);

/* Makes id's group with the limits and moves pid into it. No-op when off. */
int backend_cgroup_join(const char *id, pid_t pid, unsigned vcpus, unsigned memory_mib,
                        cr_error **err);
/* Removes id's group if it exists and is empty (best effort, idempotent). */
void backend_cgroup_remove(const char *id);
/* The directory of id's group in the memory controller (v1) or the unified
 * hierarchy (v2); NULL when off. For tests and inspect. */
char *backend_cgroup_path(const char *id);

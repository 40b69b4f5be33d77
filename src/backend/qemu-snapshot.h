/* QEMU pause/resume/save/restore through QMP (see qemu-snapshot.c). dir is
 * the VM's directory (qmp.sock). */
#pragma once
#include "util/error.h"

#include <stdint.h>
#include <sys/types.h>

enum {
  QEMU_SNAP_IGNORE_SHARED = 1 << 0, /* device state only; RAM stays in its shared file */
  QEMU_SNAP_RESUME = 1 << 1,        /* save: continue the VM afterwards */
};

int qemu_vm_pause(const char *dir, cr_error **err);
int qemu_vm_resume(const char *dir, cr_error **err);
/* Stops the VM and writes its state to state_path (atomically). */
int qemu_vm_save(const char *dir, const char *state_path, unsigned flags, cr_error **err);
/* Stops the VM and writes its RAM as a flat sparse file (ram_out: the guest
 * RAM mapped from ram_path in VMM pid, read through /proc/<pid>/mem and
 * pagemap) and its device state only (state_path; QMP
 * xen-save-devices-state through an fd set), both atomically. Fails with
 * CR_E_BACKEND_UNSUPPORTED, the VM stopped and nothing written, when the
 * RAM mapping cannot be found or read (then a full save still works). */
int qemu_vm_save_flat(const char *dir, pid_t pid, const char *ram_path, uint64_t ram_bytes,
                      const char *ram_out, const char *state_path, unsigned flags,
                      cr_error **err);
/* Into a VMM started with incoming = true: loads state_path, then runs it. */
int qemu_vm_restore(const char *dir, const char *state_path, unsigned flags, cr_error **err);

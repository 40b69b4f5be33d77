/* QEMU pause/resume/save/restore through QMP (see qemu-snapshot.c). dir is
 * the VM's directory (qmp.sock). */
#pragma once
#include "util/error.h"

enum {
  QEMU_SNAP_IGNORE_SHARED = 1 << 0, /* device state only; RAM stays in its shared file */
  QEMU_SNAP_RESUME = 1 << 1,        /* save: continue the VM afterwards */
};

int qemu_vm_pause(const char *dir, cr_error **err);
int qemu_vm_resume(const char *dir, cr_error **err);
/* Stops the VM and writes its state to state_path (atomically). */
int qemu_vm_save(const char *dir, const char *state_path, unsigned flags, cr_error **err);
/* Into a VMM started with incoming = true: loads state_path, then runs it. */
int qemu_vm_restore(const char *dir, const char *state_path, unsigned flags, cr_error **err);

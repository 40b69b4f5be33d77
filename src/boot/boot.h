/* Boot assets for the microVM: kernel + an initramfs holding the static
 * guest agent as /init and the kernel modules it loads (see guest/README.md).
 *
 *   kernel_dir layout (scripts/fetch-kernel.sh):
 *     boot/vmlinuz-<ver>  [boot/vmlinux-<ver>]  lib/modules/<ver>/kernel/...  version
 */
#pragma once
#include "util/buf.h"
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

/* The modules the guest needs, by module name (or file name). Ones missing
 * from the kernel package are skipped. */
extern const char *const boot_default_modules[];
extern const size_t boot_n_default_modules;

/* ---- modules ---- */

/* Reads the `.modinfo` section of an ELF64 .ko: the module name (name=,
 * else derived from the file name) and its depends= list. */
int boot_modinfo_read(const char *ko_path, char **ret_name, char ***ret_depends,
                      size_t *ret_n_depends, cr_error **err);

/* Finds every *.ko under modules_dir, takes the closure of `wanted` (module
 * or file names; absent ones skipped) over depends=, and returns the .ko
 * paths in load order (dependencies first). A missing dependency of a
 * present module and a dependency cycle are errors (CR_E_KERNEL_NOT_FOUND /
 * CR_E_INTERNAL). *ret_paths is a NULL-terminated strv. */
int boot_module_order(const char *modules_dir, const char *const *wanted,
                      size_t n_wanted, char ***ret_paths, size_t *ret_n,
                      cr_error **err);

void boot_strv_free(char **v);

/* ---- cpio (newc) ---- */

typedef struct boot_cpio {
  cr_buf buf; /* the archive so far; bounded by BOOT_CPIO_MAX */
  uint32_t ino;
} boot_cpio;
#define BOOT_CPIO_MAX ((size_t)512 << 20)
#define BOOT_CPIO_INIT ((boot_cpio){.buf = CR_BUF_INIT(BOOT_CPIO_MAX)})

/* Entries are named without a leading '/'. mtime is 0 (reproducible). */
void boot_cpio_add_dir(boot_cpio *c, const char *name, uint32_t mode);
void boot_cpio_add_data(boot_cpio *c, const char *name, uint32_t mode,
                        const void *data, size_t len);
void boot_cpio_add_node(boot_cpio *c, const char *name, uint32_t mode,
                        uint32_t major, uint32_t minor);
/* Appends the trailer; returns -ENOMEM or -E2BIG (over BOOT_CPIO_MAX, or an
 * entry too large for newc) if any append failed, else 0. */
int boot_cpio_finish(boot_cpio *c);
void boot_cpio_free(boot_cpio *c);

/* ---- assets ---- */

typedef struct boot_assets {
  char *kernel;  /* bzImage: kernel_dir/boot/vmlinuz-<ver> */
  char *vmlinux; /* PVH ELF when present (faster under TCG), else NULL */
  char *initrd;  /* kernel_dir/initrd-<hash>.cpio */
  char *version; /* e.g. 6.1.0-57-cloud-amd64 */
} boot_assets;

/* Builds (or reuses, keyed by a hash of the agent, the module set and the
 * kernel version) kernel_dir/initrd-<hash>.cpio containing /init (the
 * agent), /lib/modules/<x>.ko, /modules.order and /dev /proc /sys /run /tmp.
 * Errors: CR_E_KERNEL_NOT_FOUND (run scripts/fetch-kernel.sh),
 * CR_E_AGENT_NOT_FOUND. */
int boot_assets_ensure(const char *kernel_dir, const char *agent_path,
                       boot_assets **ret, cr_error **err);
void boot_assets_free(boot_assets *a);

/* The guest agent binary: $CLEANROOM_AGENT, else
 * <exe dir>/../libexec/cleanroom/cleanroom-agent, else
 * <exe dir>/guest/cleanroom-agent (build tree; also <exe dir>/../guest/ for
 * binaries in subdirectories of the build tree), else CR_LIBEXECDIR.
 * Returns a new string or NULL when none exists. */
char *boot_find_agent(void);

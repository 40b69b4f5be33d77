/* A minimal cpio "newc" writer into memory (initramfs format). */
#include "boot/boot.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void pad4(boot_cpio *c) {
  cr_buf_zero(&c->buf, (4 - c->buf.len % 4) % 4);
}

static void add(boot_cpio *c, const char *name, uint32_t mode, const void *data,
                size_t len, uint32_t rmaj, uint32_t rmin) {
  size_t namesize = strlen(name) + 1;
  if (len > UINT32_MAX || namesize > 4096) {
    if (!c->buf.err) c->buf.err = -E2BIG;
    return;
  }
  char hdr[111];
  snprintf(hdr, sizeof(hdr),
           "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
           ++c->ino, mode, 0u, 0u, S_ISDIR(mode) ? 2u : 1u, 0u, (uint32_t)len,
           0u, 0u, rmaj, rmin, (uint32_t)namesize, 0u);
  cr_buf_append(&c->buf, hdr, 110);
  cr_buf_append(&c->buf, name, namesize);
  pad4(c);
  cr_buf_append(&c->buf, data, len);
  pad4(c);
}

void boot_cpio_add_dir(boot_cpio *c, const char *name, uint32_t mode) {
  add(c, name, S_IFDIR | (mode & 07777), NULL, 0, 0, 0);
}

void boot_cpio_add_data(boot_cpio *c, const char *name, uint32_t mode,
                        const void *data, size_t len) {
  add(c, name, S_IFREG | (mode & 07777), data, len, 0, 0);
}

void boot_cpio_add_node(boot_cpio *c, const char *name, uint32_t mode,
                        uint32_t major, uint32_t minor) {
  add(c, name, mode, NULL, 0, major, minor);
}

int boot_cpio_finish(boot_cpio *c) {
  add(c, "TRAILER!!!", 0, NULL, 0, 0, 0);
  return c->buf.err;
}

void boot_cpio_free(boot_cpio *c) {
  if (!c) return;
  cr_buf_free(&c->buf);
  c->ino = 0;
}

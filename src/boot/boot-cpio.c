/* A minimal cpio "newc" writer into memory (initramfs format). */
#include "boot/boot.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int reserve(boot_cpio *c, size_t extra) {
  if (c->oom) return -1;
  if (extra > SIZE_MAX / 2 - c->len) {
    c->oom = 1;
    return -1;
  }
  if (c->len + extra <= c->cap) return 0;
  size_t nc = c->cap ? c->cap : 65536;
  while (nc < c->len + extra) nc *= 2;
  uint8_t *nd = realloc(c->data, nc);
  if (!nd) {
    c->oom = 1;
    return -1;
  }
  c->data = nd;
  c->cap = nc;
  return 0;
}

static void pad4(boot_cpio *c) {
  while (c->len % 4) c->data[c->len++] = 0;
}

static void add(boot_cpio *c, const char *name, uint32_t mode, const void *data,
                size_t len, uint32_t rmaj, uint32_t rmin) {
  size_t namesize = strlen(name) + 1;
  if (len > UINT32_MAX || namesize > 4096) {
    c->oom = 1;
    return;
  }
  if (reserve(c, 110 + namesize + 3 + len + 3) < 0) return;
  char hdr[111];
  snprintf(hdr, sizeof(hdr),
           "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
           ++c->ino, mode, 0u, 0u, S_ISDIR(mode) ? 2u : 1u, 0u, (uint32_t)len,
           0u, 0u, rmaj, rmin, (uint32_t)namesize, 0u);
  memcpy(c->data + c->len, hdr, 110);
  c->len += 110;
  memcpy(c->data + c->len, name, namesize);
  c->len += namesize;
  pad4(c);
  if (len) memcpy(c->data + c->len, data, len);
  c->len += len;
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
  return c->oom ? -ENOMEM : 0;
}

void boot_cpio_free(boot_cpio *c) {
  if (!c) return;
  free(c->data);
  memset(c, 0, sizeof(*c));
}

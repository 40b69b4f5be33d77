/* Filesystem helpers. Small helpers return -errno (house style). */
#pragma once
#include <stddef.h>
#include <sys/types.h>

/* Writes data to path atomically: temp file in the same dir, fsync, rename,
 * fsync of the directory. */
int cr_write_file_atomic(const char *path, const void *data, size_t len,
                         mode_t mode);
/* The same without either fsync: readers (and a daemon that crashed and
 * restarted) see the old or the new content, never a torn one, and the call
 * takes microseconds instead of a disk flush (milliseconds). For records
 * the daemon rewrites on hot paths (sandbox state) whose
 * loss on a host crash the start-up reconcile handles (the VMMs are gone
 * then too): they must not stall the event loop on every create step. */
int cr_write_file_replace(const char *path, const void *data, size_t len, mode_t mode);
/* Reads at most max bytes; -EFBIG when the file is larger. *ret_buf is
 * NUL-terminated (not counted in *ret_len). */
int cr_read_file(const char *path, size_t max, char **ret_buf, size_t *ret_len);
/* The last (at most) max bytes of a file, NUL-terminated; "" when empty. */
int cr_read_file_tail(const char *path, size_t max, char **ret_buf, size_t *ret_len);
int cr_mkdir_p(const char *path, mode_t mode);
/* Removes a tree; does not follow symlinks; missing path is success. */
int cr_rm_rf(const char *path);
/* Lowercase hex sha256 of a file's content (65 bytes incl. NUL). */
int cr_sha256_file(const char *path, char ret_hex[65]);
void cr_sha256_hex(const void *data, size_t len, char ret_hex[65]);
/* The same over a sparse file's data only: for each data extent (SEEK_DATA
 * / SEEK_HOLE) its offset and length (64-bit little endian each) and its
 * bytes, so that a file of mostly holes (a guest RAM image) is not read in
 * full. Any write into a hole makes a new extent and changes the sum. */
int cr_sha256_file_data(const char *path, char ret_hex[65]);
/* Flags of the copies below. CR_COPY_NO_SYNC: no fsync of the copy. For a
 * running sandbox's own disks only (a scratch or workspace disk made at
 * create, restore or fork): they live as long as their VMM, which a host
 * crash ends too, and QEMU reads them through the same page cache. A copy
 * that must outlive a crash (a template's, a snapshot's) is synced. */
#define CR_COPY_NO_SYNC 1u
/* Writes each data extent (SEEK_DATA / SEEK_HOLE) of in's first size
 * bytes into out at the same offset, with copy_file_range(2) (in the
 * kernel, no bounce buffer) or read/write where the filesystems cannot; out's
 * other bytes are left as they are. 0 or -errno. */
int cr_copy_data_extents(int in, int out, off_t size);
/* Copies a file keeping holes (sparse): cr_copy_data_extents into a new
 * file of the same size. dst must not exist. */
int cr_copy_file_sparse(const char *src, const char *dst, mode_t mode, unsigned flags);
/* A copy sharing the blocks (reflink, FICLONE) when the filesystem can,
 * else a sparse copy. dst must not exist. */
int cr_copy_file_clone(const char *src, const char *dst, mode_t mode, unsigned flags);
/* Joins two path pieces into a new string; NULL on OOM. */
char *cr_path_join(const char *a, const char *b);
/* "path size mtime" of a file (changes when the file is replaced); NULL when
 * it cannot be stat'ed or on out of memory. */
char *cr_file_identity(const char *path);
/* prog as execvp would find it: itself when it has a '/', else the first
 * executable PATH entry (empty entries: the working directory); a new
 * string or NULL. */
char *cr_find_in_path(const char *prog);
/* s with every ',' doubled (a value inside a QEMU-style option string). */
char *cr_escape_commas(const char *s);

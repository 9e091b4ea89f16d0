/*
 * fsutil.h: file helpers of the storage layer: whole writes and reads that
 * retry on EINTR and short counts, syncs, directory syncs. Each passes
 * through a fault point (fault.h) so tests can make it fail.
 */
#ifndef QRAFT_STORAGE_FSUTIL_H
#define QRAFT_STORAGE_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Writes all `len` bytes at `off`. Returns 0 or -errno. */
int qraft__pwrite_all(int fd, const void *buf, size_t len, uint64_t off,
                      const char *fault_point);

/* Reads `len` bytes at `off`; returns the bytes read (fewer at end of file)
 * or -errno. */
ssize_t qraft__pread_all(int fd, void *buf, size_t len, uint64_t off);

/* fdatasync (fault point `fault_point`). Returns 0 or -errno. */
int qraft__fdatasync(int fd, const char *fault_point);

/* fsync of directory `dir` (fault point "dir.fsync"). Returns 0 or -errno. */
int qraft__fsync_dir(const char *dir);

#endif

/*
 * fsutil.c: whole writes, reads and syncs with fault points.
 */
#include "storage/fsutil.h"

#include "storage/fault.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

int qraft__pwrite_all(int fd, const void *buf, size_t len, uint64_t off,
                      const char *fault_point) {
  int rc = qraft__fault(fault_point);
  if (rc != 0) {
    return rc;
  }
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = pwrite(fd, p, len, (off_t)off);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return -errno;
    }
    if (n == 0) {
      return -EIO;
    }
    p += n;
    len -= (size_t)n;
    off += (uint64_t)n;
  }
  return 0;
}

ssize_t qraft__pread_all(int fd, void *buf, size_t len, uint64_t off) {
  uint8_t *p = buf;
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, p + got, len - got, (off_t)(off + got));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return -errno;
    }
    if (n == 0) {
      break;
    }
    got += (size_t)n;
  }
  return (ssize_t)got;
}

int qraft__fdatasync(int fd, const char *fault_point) {
  int rc = qraft__fault(fault_point);
  if (rc != 0) {
    return rc;
  }
  while (fdatasync(fd) != 0) {
    if (errno != EINTR) {
      return -errno;
    }
  }
  return 0;
}

int qraft__fsync_dir(const char *dir) {
  int rc = qraft__fault("dir.fsync");
  if (rc != 0) {
    return rc;
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return -errno;
  }
  rc = 0;
  if (fsync(fd) != 0) {
    rc = -errno;
  }
  close(fd);
  return rc;
}

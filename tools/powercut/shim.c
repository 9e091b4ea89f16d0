/*
 * libqraft-powercut.so: an LD_PRELOAD shim that lets a test cut the power
 * in user space. For every regular file under QRAFT_POWERCUT_DIR it keeps an
 * undo log in QRAFT_POWERCUT_UNDO (format in undo.h): before each write, the
 * bytes and the file size the write replaces. When an fsync or fdatasync of
 * the file returns 0, what was logged before it is durable and is dropped.
 * A write through an O_SYNC/O_DSYNC descriptor is durable when it returns:
 * it leaves only a mark that its pages are durable. After the processes are
 * SIGKILLed (which keeps the page cache, so loses nothing by itself),
 * qraft-powercut rolls the files back with these logs to what a disk may
 * hold after a power loss.
 *
 * What it intercepts is what LMDB 0.9.24 (qraft-kv's state) and the qraft
 * WAL call, checked with strace: pwrite, lseek + writev, fdatasync, fsync;
 * and, so that nothing slips past, write, pwritev, ftruncate, fallocate,
 * sync_file_range and close. Not simulated: lost directory entries
 * (create, rename and unlink count as durable at once; the WAL syncs its
 * directory after each), writes through a shared writable mmap (LMDB's
 * MDB_WRITEMAP, which qraft-kv does not use), truncation by open(O_TRUNC).
 *
 * Never: change what an intercepted call does or returns; log a write
 * after it happened (the log must hold the old bytes first). Without both
 * environment variables the shim passes every call straight through.
 */
#include "undo.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* descriptors above this are passed through untracked (qraft-kv uses a few
 * hundred); files tracked at once */
#define SHIM_FDS_MAX 8192
#define SHIM_FILES_MAX 1024

typedef struct shim_file {
  int refs; /* descriptors that point here; 0 = free slot */
  uint64_t dev, ino;
  int64_t btime_s;
  uint32_t btime_ns;
  int undo_fd;
  int read_fd; /* the file, readable (the writer's descriptor may not be) */
  uint64_t undo_end; /* where the next record goes */
  uint64_t valid_from;
  pthread_mutex_t mu; /* a record and the write it describes, together */
} shim_file;

typedef struct shim_fd {
  bool known;
  bool dsync;
  uint64_t dev, ino;
  shim_file *f; /* NULL: not under the directory */
} shim_fd;

static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_sync_file_range)(int, off_t, off_t, unsigned int);
static int (*real_close)(int);

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static bool g_on;
static char g_dir[PATH_MAX];
static size_t g_dir_len;
static char g_undo[PATH_MAX];
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER; /* the tables */
static shim_fd g_fds[SHIM_FDS_MAX];
static shim_file g_files[SHIM_FILES_MAX];

static void *next_sym(const char *name) {
  void *p = dlsym(RTLD_NEXT, name);
  if (p == NULL) {
    fprintf(stderr, "qraft-powercut shim: no %s\n", name);
    abort();
  }
  return p;
}

static void shim_init(void) {
  real_pwrite = next_sym("pwrite");
  real_write = next_sym("write");
  real_writev = next_sym("writev");
  real_pwritev = next_sym("pwritev");
  real_fsync = next_sym("fsync");
  real_fdatasync = next_sym("fdatasync");
  real_ftruncate = next_sym("ftruncate");
  real_fallocate = next_sym("fallocate");
  real_sync_file_range = next_sym("sync_file_range");
  real_close = next_sym("close");
  const char *d = getenv("QRAFT_POWERCUT_DIR");
  const char *u = getenv("QRAFT_POWERCUT_UNDO");
  if (d == NULL || u == NULL || *d == 0 || *u == 0) {
    return;
  }
  if (realpath(d, g_dir) == NULL || realpath(u, g_undo) == NULL) {
    fprintf(stderr, "qraft-powercut shim: %s or %s: %s\n", d, u,
            strerror(errno));
    abort();
  }
  g_dir_len = strlen(g_dir);
  if (strncmp(g_undo, g_dir, g_dir_len) == 0 &&
      (g_undo[g_dir_len] == '/' || g_undo[g_dir_len] == 0)) {
    fprintf(stderr, "qraft-powercut shim: the undo folder is inside %s\n",
            g_dir);
    abort();
  }
  for (int i = 0; i < SHIM_FILES_MAX; i++) {
    pthread_mutex_init(&g_files[i].mu, NULL);
  }
  g_on = true;
}

static void shim_die(const char *what) {
  fprintf(stderr, "qraft-powercut shim: %s: %s\n", what, strerror(errno));
  abort();
}

static void undo_put(int fd, const void *p, size_t n, uint64_t off) {
  const char *q = p;
  while (n > 0) {
    ssize_t w = real_pwrite(fd, q, n, (off_t)off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) shim_die("write undo log");
    q += w;
    n -= (size_t)w;
    off += (uint64_t)w;
  }
}

static void undo_set_valid_from(shim_file *f, uint64_t v) {
  f->valid_from = v;
  undo_put(f->undo_fd, &v, sizeof v, offsetof(undo_hdr, valid_from));
}

/* Under g_mu: the tracked file for this inode, opened or created. */
static shim_file *file_get(int fd, const struct stat *st, const char *path) {
  struct statx sx;
  if (statx(fd, "", AT_EMPTY_PATH, STATX_BTIME, &sx) != 0) {
    shim_die("statx");
  }
  int64_t bs = (sx.stx_mask & STATX_BTIME) ? sx.stx_btime.tv_sec : 0;
  uint32_t bn = (sx.stx_mask & STATX_BTIME) ? sx.stx_btime.tv_nsec : 0;
  shim_file *free_slot = NULL;
  for (int i = 0; i < SHIM_FILES_MAX; i++) {
    shim_file *f = &g_files[i];
    if (f->refs > 0 && f->dev == st->st_dev && f->ino == st->st_ino &&
        f->btime_s == bs && f->btime_ns == bn) {
      f->refs++;
      return f;
    }
    if (f->refs == 0 && free_slot == NULL) free_slot = f;
  }
  if (free_slot == NULL) {
    errno = EMFILE;
    shim_die("too many files");
  }
  shim_file *f = free_slot;
  char name[PATH_MAX + 128];
  snprintf(name, sizeof name, "%s/%llu-%llu-%lld.%09u.undo", g_undo,
           (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
           (long long)bs, bn);
  int ufd = open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (ufd < 0) shim_die(name);
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  int rfd = open(link, O_RDONLY | O_CLOEXEC);
  if (rfd < 0) shim_die(link);
  struct stat ust;
  if (fstat(ufd, &ust) != 0) shim_die("fstat undo log");
  f->refs = 1;
  f->dev = st->st_dev;
  f->ino = st->st_ino;
  f->btime_s = bs;
  f->btime_ns = bn;
  f->undo_fd = ufd;
  f->read_fd = rfd;
  if (ust.st_size < (off_t)UNDO_HDR_BYTES) {
    static const char zero[UNDO_HDR_BYTES];
    undo_put(ufd, zero, UNDO_HDR_BYTES, 0);
    undo_hdr h = {.magic = UNDO_MAGIC, .version = 1,
                  .valid_from = UNDO_HDR_BYTES, .dev = st->st_dev,
                  .ino = st->st_ino, .btime_s = bs, .btime_ns = bn};
    size_t pl = strlen(path);
    if (pl >= sizeof h.path) pl = sizeof h.path - 1;
    memcpy(h.path, path, pl); /* informational; cut if long */
    undo_put(ufd, &h, sizeof h, 0);
    f->undo_end = UNDO_HDR_BYTES;
    f->valid_from = UNDO_HDR_BYTES;
  } else {
    /* this process reopened a file a previous one logged (a restart
     * without a power cut): go on after its records */
    undo_hdr h;
    if (pread(ufd, &h, sizeof h, 0) != (ssize_t)sizeof h ||
        h.magic != UNDO_MAGIC) {
      errno = EINVAL;
      shim_die(name);
    }
    f->undo_end = (uint64_t)ust.st_size;
    f->valid_from = h.valid_from;
  }
  return f;
}

static void fd_forget(int fd) {
  shim_fd *e = &g_fds[fd];
  if (e->known && e->f != NULL && --e->f->refs == 0) {
    real_close(e->f->undo_fd);
    real_close(e->f->read_fd);
    e->f->undo_fd = -1;
    e->f->read_fd = -1;
  }
  memset(e, 0, sizeof *e);
}

/* The tracked file behind fd, or NULL (not a regular file under the
 * directory, or the shim is off). *dsync: writes through fd are durable. */
static shim_file *lookup(int fd, bool *dsync) {
  pthread_once(&g_once, shim_init);
  if (!g_on || fd < 0 || fd >= SHIM_FDS_MAX) {
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return NULL;
  }
  pthread_mutex_lock(&g_mu);
  shim_fd *e = &g_fds[fd];
  if (!e->known || e->dev != st.st_dev || e->ino != st.st_ino) {
    fd_forget(fd);
    e->known = true;
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n > 0) {
      path[n] = 0;
      if ((size_t)n > g_dir_len && strncmp(path, g_dir, g_dir_len) == 0 &&
          path[g_dir_len] == '/') {
        int fl = fcntl(fd, F_GETFL);
        e->dsync = fl >= 0 && (fl & (O_DSYNC | O_SYNC)) != 0;
        e->f = file_get(fd, &st, path);
      }
    }
  }
  shim_file *f = e->f;
  *dsync = e->dsync;
  pthread_mutex_unlock(&g_mu);
  return f;
}

static uint64_t file_size(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) shim_die("fstat");
  return (uint64_t)st.st_size;
}

/* Under f->mu, before the change: log [off, off+len) with its old bytes
 * (those below the old size). */
static void log_write(shim_file *f, int fd, uint64_t off, uint64_t len) {
  (void)fd;
  uint64_t size = file_size(f->read_fd);
  uint64_t stored = off < size ? (len < size - off ? len : size - off) : 0;
  undo_rec r = {.magic = UNDO_REC_MAGIC, .kind = UNDO_WRITE, .off = off,
                .len = len, .stored = stored, .old_size = size};
  char *old = NULL;
  if (stored > 0) {
    old = malloc(stored);
    if (old == NULL) shim_die("malloc");
    uint64_t got = 0;
    while (got < stored) {
      ssize_t n = pread(f->read_fd, old + got, stored - got, (off_t)(off + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) shim_die("read old bytes");
      got += (uint64_t)n;
    }
  }
  /* the end marker last, so a record cut short is seen as such */
  uint64_t at = f->undo_end;
  undo_put(f->undo_fd, &r, sizeof r, at);
  if (stored > 0) undo_put(f->undo_fd, old, stored, at + sizeof r);
  uint32_t end = UNDO_REC_END;
  undo_put(f->undo_fd, &end, sizeof end, at + sizeof r + stored);
  f->undo_end = at + sizeof r + stored + sizeof end;
  free(old);
}

/* Under f->mu, after a durable write or a ranged flush. */
static void log_durable(shim_file *f, int fd, uint64_t off, uint64_t len) {
  undo_rec r = {.magic = UNDO_REC_MAGIC, .kind = UNDO_DURABLE, .off = off,
                .len = len, .old_size = file_size(fd)};
  uint32_t end = UNDO_REC_END;
  undo_put(f->undo_fd, &r, sizeof r, f->undo_end);
  undo_put(f->undo_fd, &end, sizeof end, f->undo_end + sizeof r);
  f->undo_end += sizeof r + sizeof end;
}

static uint64_t iov_len(const struct iovec *iov, int n) {
  uint64_t t = 0;
  for (int i = 0; i < n; i++) t += iov[i].iov_len;
  return t;
}

/* The offset a write without one goes to. */
static uint64_t cur_off(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_APPEND)) return file_size(fd);
  off_t o = lseek(fd, 0, SEEK_CUR);
  return o < 0 ? 0 : (uint64_t)o;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
  bool dsync = false;
  shim_file *f = lookup(fd, &dsync);
  if (f == NULL || n == 0) return real_pwrite(fd, buf, n, off);
  pthread_mutex_lock(&f->mu);
  if (!dsync) log_write(f, fd, (uint64_t)off, n);
  ssize_t rv = real_pwrite(fd, buf, n, off);
  int e = errno;
  if (dsync && rv > 0) log_durable(f, fd, (uint64_t)off, (uint64_t)rv);
  pthread_mutex_unlock(&f->mu);
  errno = e;
  return rv;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
  return pwrite(fd, buf, n, off);
}

ssize_t write(int fd, const void *buf, size_t n) {
  bool dsync = false;
  shim_file *f = lookup(fd, &dsync);
  if (f == NULL || n == 0) return real_write(fd, buf, n);
  pthread_mutex_lock(&f->mu);
  uint64_t off = cur_off(fd);
  if (!dsync) log_write(f, fd, off, n);
  ssize_t rv = real_write(fd, buf, n);
  int e = errno;
  if (dsync && rv > 0) log_durable(f, fd, off, (uint64_t)rv);
  pthread_mutex_unlock(&f->mu);
  errno = e;
  return rv;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
  bool dsync = false;
  shim_file *f = lookup(fd, &dsync);
  uint64_t n = cnt > 0 ? iov_len(iov, cnt) : 0;
  if (f == NULL || n == 0) return real_writev(fd, iov, cnt);
  pthread_mutex_lock(&f->mu);
  uint64_t off = cur_off(fd);
  if (!dsync) log_write(f, fd, off, n);
  ssize_t rv = real_writev(fd, iov, cnt);
  int e = errno;
  if (dsync && rv > 0) log_durable(f, fd, off, (uint64_t)rv);
  pthread_mutex_unlock(&f->mu);
  errno = e;
  return rv;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
  bool dsync = false;
  shim_file *f = lookup(fd, &dsync);
  uint64_t n = cnt > 0 ? iov_len(iov, cnt) : 0;
  if (f == NULL || n == 0) return real_pwritev(fd, iov, cnt, off);
  pthread_mutex_lock(&f->mu);
  if (!dsync) log_write(f, fd, (uint64_t)off, n);
  ssize_t rv = real_pwritev(fd, iov, cnt, off);
  int e = errno;
  if (dsync && rv > 0) log_durable(f, fd, (uint64_t)off, (uint64_t)rv);
  pthread_mutex_unlock(&f->mu);
  errno = e;
  return rv;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) {
  return pwritev(fd, iov, cnt, off);
}

/* A size change is logged as a write of the bytes between the two sizes:
 * shrinking keeps the bytes cut off, growing adds zeros. */
static void log_resize(shim_file *f, int fd, uint64_t new_size) {
  uint64_t size = file_size(fd);
  if (new_size < size) {
    log_write(f, fd, new_size, size - new_size);
  } else if (new_size > size) {
    log_write(f, fd, size, new_size - size);
  }
}

int ftruncate(int fd, off_t len) {
  bool dsync = false;
  shim_file *f = lookup(fd, &dsync);
  if (f == NULL || len < 0) return real_ftruncate(fd, len);
  pthread_mutex_lock(&f->mu);
  log_resize(f, fd, (uint64_t)len);
  int rv = real_ftruncate(fd, len);
  int e = errno;
  pthread_mutex_unlock(&f->mu);
  errno = e;
  return rv;
}

int ftruncate64(int fd, off_t len) { return ftruncate(fd, len); }

int fallocate(int fd, int mode, off_t off, off_t len) {
  bool dsync = false;
  shim_file *f = lookup(fd, &dsync);
  if (f == NULL || off < 0 || len <= 0) return real_fallocate(fd, mode, off, len);
  pthread_mutex_lock(&f->mu);
  if (mode == 0) {
    uint64_t end = (uint64_t)off + (uint64_t)len;
    if (end > file_size(fd)) log_resize(f, fd, end);
  } else if (mode != FALLOC_FL_KEEP_SIZE) { /* that one changes nothing */
    log_write(f, fd, (uint64_t)off, (uint64_t)len); /* punch, zero, ... */
  }
  int rv = real_fallocate(fd, mode, off, len);
  int e = errno;
  pthread_mutex_unlock(&f->mu);
  errno = e;
  return rv;
}

int fallocate64(int fd, int mode, off_t off, off_t len) {
  return fallocate(fd, mode, off, len);
}

/* After a flush of the whole file returned 0: what was logged before it
 * began is durable. A write logged while it ran stays (it may have missed
 * the flush). */
static int flush(int fd, int (*real)(int)) {
  bool dsync = false;
  shim_file *f = lookup(fd, &dsync);
  if (f == NULL) return real(fd);
  pthread_mutex_lock(&f->mu);
  uint64_t upto = f->undo_end;
  pthread_mutex_unlock(&f->mu);
  int rv = real(fd);
  int e = errno;
  if (rv == 0) {
    pthread_mutex_lock(&f->mu);
    if (f->undo_end == upto) {
      /* nothing after: start the log over */
      if (real_ftruncate(f->undo_fd, UNDO_HDR_BYTES) != 0) {
        shim_die("truncate undo log");
      }
      f->undo_end = UNDO_HDR_BYTES;
      undo_set_valid_from(f, UNDO_HDR_BYTES);
    } else if (upto > f->valid_from) {
      undo_set_valid_from(f, upto);
    }
    pthread_mutex_unlock(&f->mu);
  }
  errno = e;
  return rv;
}

int fsync(int fd) {
  pthread_once(&g_once, shim_init);
  return flush(fd, real_fsync);
}

int fdatasync(int fd) {
  pthread_once(&g_once, shim_init);
  return flush(fd, real_fdatasync);
}

int sync_file_range(int fd, off_t off, off_t n, unsigned int flags) {
  bool dsync = false;
  shim_file *f = lookup(fd, &dsync);
  if (f == NULL) return real_sync_file_range(fd, off, n, flags);
  int rv = real_sync_file_range(fd, off, n, flags);
  int e = errno;
  if (rv == 0 && (flags & SYNC_FILE_RANGE_WAIT_AFTER) &&
      (flags & SYNC_FILE_RANGE_WRITE)) {
    pthread_mutex_lock(&f->mu);
    uint64_t size = file_size(fd);
    uint64_t len = n != 0 ? (uint64_t)n
                   : size > (uint64_t)off ? size - (uint64_t)off : 0;
    log_durable(f, fd, (uint64_t)off, len);
    pthread_mutex_unlock(&f->mu);
  }
  errno = e;
  return rv;
}

int close(int fd) {
  pthread_once(&g_once, shim_init);
  if (g_on && fd >= 0 && fd < SHIM_FDS_MAX) {
    pthread_mutex_lock(&g_mu);
    fd_forget(fd);
    pthread_mutex_unlock(&g_mu);
  }
  return real_close(fd);
}

/* Helpers shared by the storage tests: temporary directories, entries with
 * bytes derived from (index, term), writes, and file surgery. */
#ifndef QRAFT_TESTS_STORAGE_HELPERS_H
#define QRAFT_TESTS_STORAGE_HELPERS_H

#include <qraft/storage.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Creates a fresh directory under /tmp; the caller frees the string after
 * th_rmdir. */
static inline char *th_mkdtemp(void) {
  char *d = strdup("/tmp/qraft-storage-XXXXXX");
  if (d == NULL || mkdtemp(d) == NULL) {
    abort();
  }
  return d;
}

/* Removes the files in a directory (no subdirectories). */
static inline void th_rmdir_contents(const char *dir) {
  DIR *d = opendir(dir);
  if (d != NULL) {
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
      if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
        continue;
      }
      char p[4096];
      snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
      unlink(p);
    }
    closedir(d);
  }
}

/* Removes a directory and the files in it (no subdirectories). */
static inline void th_rmdir(const char *dir) {
  th_rmdir_contents(dir);
  rmdir(dir);
}

/* Counts files in `dir` whose names start with `prefix` and end with
 * `suffix`; writes the last such name into `last` if not NULL. */
static inline int th_count_files(const char *dir, const char *prefix,
                                 const char *suffix, char *last,
                                 size_t last_size) {
  int n = 0;
  DIR *d = opendir(dir);
  if (d == NULL) {
    return -1;
  }
  struct dirent *de;
  char best[256] = "";
  while ((de = readdir(d)) != NULL) {
    size_t l = strlen(de->d_name), ls = strlen(suffix);
    if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 && l >= ls &&
        strcmp(de->d_name + l - ls, suffix) == 0) {
      n++;
      if (strcmp(de->d_name, best) > 0) {
        snprintf(best, sizeof best, "%s", de->d_name);
      }
    }
  }
  closedir(d);
  if (last != NULL) {
    snprintf(last, last_size, "%s", best);
  }
  return n;
}

/* The bytes of entry (index, term): deterministic, length 0..300. */
static inline size_t th_entry_len(uint64_t index, uint64_t term) {
  return (size_t)((index * 131 + term * 17) % 301);
}
static inline uint8_t th_entry_byte(uint64_t index, uint64_t term, size_t i) {
  return (uint8_t)(index * 7 + term * 13 + i * 31 + (i >> 8));
}

typedef struct th_entries {
  qraft_entry *e;
  uint8_t *bytes;
  size_t n;
} th_entries;

/* Entries lo..lo+n-1 with `term`, data from th_entry_byte, a context of 3
 * bytes on every third. */
static inline th_entries th_make(uint64_t lo, size_t n, uint64_t term) {
  th_entries t = {.n = n};
  t.e = calloc(n ? n : 1, sizeof *t.e);
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    total += th_entry_len(lo + i, term) + 3;
  }
  t.bytes = malloc(total ? total : 1);
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t idx = lo + i;
    size_t len = th_entry_len(idx, term);
    for (size_t k = 0; k < len; k++) {
      t.bytes[off + k] = th_entry_byte(idx, term, k);
    }
    t.e[i] = (qraft_entry){
        .type = (qraft_entry_type)(idx % 3),
        .term = term,
        .index = idx,
        .data = {.data = t.bytes + off, .len = len},
    };
    off += len;
    if (idx % 3 == 0) {
      t.bytes[off] = 'c';
      t.bytes[off + 1] = (uint8_t)idx;
      t.bytes[off + 2] = (uint8_t)term;
      t.e[i].context = (qraft_slice){.data = t.bytes + off, .len = 3};
      off += 3;
    }
  }
  return t;
}

static inline void th_free(th_entries *t) {
  free(t->e);
  free(t->bytes);
  t->e = NULL;
  t->bytes = NULL;
}

/* True if `e` is entry (index, term) as th_make builds it. */
static inline int th_entry_ok(const qraft_entry *e, uint64_t index,
                              uint64_t term) {
  if (e->index != index || e->term != term ||
      e->type != (qraft_entry_type)(index % 3) ||
      e->data.len != th_entry_len(index, term)) {
    return 0;
  }
  for (size_t k = 0; k < e->data.len; k++) {
    if (e->data.data[k] != th_entry_byte(index, term, k)) {
      return 0;
    }
  }
  if (index % 3 == 0) {
    return e->context.len == 3 && e->context.data[0] == 'c' &&
           e->context.data[1] == (uint8_t)index &&
           e->context.data[2] == (uint8_t)term;
  }
  return e->context.len == 0;
}

/* Flips bit `bit` of the byte at `off` in file `path`. */
static inline int th_flip(const char *path, uint64_t off, int bit) {
  int fd = open(path, O_RDWR);
  if (fd < 0) {
    return -errno;
  }
  uint8_t b;
  int rc = -EIO;
  if (pread(fd, &b, 1, (off_t)off) == 1) {
    b ^= (uint8_t)(1u << bit);
    if (pwrite(fd, &b, 1, (off_t)off) == 1) {
      rc = 0;
    }
  }
  close(fd);
  return rc;
}

#endif

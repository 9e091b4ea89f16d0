/*
 * bench_storage: durable append latency and throughput of the WAL store,
 * beside the baselines measured in the same run on the same file system:
 *
 *   append+fdatasync     write() to the end of a growing file, fdatasync
 *   overwrite+fdatasync  pwrite() into a preallocated, written-through file
 *   overwrite O_DSYNC    the same pwrite on an O_DSYNC descriptor
 *   overwrite O_DIRECT   the same on O_DIRECT|O_DSYNC (4 KiB aligned)
 *   lmdb commit          one durable LMDB transaction putting the batch
 *
 * for batches of 1, 16 and 256 entries of 256 bytes, one write in flight,
 * and the WAL with 64 single-entry writes in flight (group commit). Every
 * baseline writes the bytes the WAL writes for the same batch (its records
 * with headers). Prints p50/p99 latency, writes/s, entries/s, MB/s, and the
 * WAL's p50 as a ratio of each baseline's.
 *
 *   bench_storage [--dir D] [--iters N]    (defaults: a new directory in
 *                                          /tmp, 500 rounds)
 */
#include <qraft/storage.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ENTRY_BYTES 256
#define REC_BYTES (24 + 32 + ENTRY_BYTES) /* a WAL entry record */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

typedef struct result {
  char name[64];
  double p50_us, p99_us;
  double writes_s, entries_s, mb_s;
} result;

static result summarize(const char *name, uint64_t *lat, size_t n,
                        uint64_t total_ns, size_t entries_per_write,
                        size_t bytes_per_write) {
  result r;
  snprintf(r.name, sizeof r.name, "%s", name);
  qsort(lat, n, sizeof *lat, cmp_u64);
  r.p50_us = (double)lat[n / 2] / 1000.0;
  r.p99_us = (double)lat[(n * 99) / 100] / 1000.0;
  double secs = (double)total_ns / 1e9;
  r.writes_s = (double)n / secs;
  r.entries_s = r.writes_s * (double)entries_per_write;
  r.mb_s = r.writes_s * (double)bytes_per_write / 1e6;
  return r;
}

static void print_result(const result *r) {
  printf("  %-34s p50 %8.1f us  p99 %8.1f us  %9.0f writes/s  %10.0f "
         "entries/s  %7.1f MB/s\n",
         r->name, r->p50_us, r->p99_us, r->writes_s, r->entries_s, r->mb_s);
  fflush(stdout);
}

static void die(const char *what) {
  fprintf(stderr, "bench_storage: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* ---- the methods, each one write at a time, interleaved ---- */

enum method { APPEND, OVERWRITE, OVERWRITE_DSYNC, OVERWRITE_DIRECT, LMDB, WAL,
              METHODS };
static const char *const method_names[METHODS] = {
    "append+fdatasync", "overwrite+fdatasync", "overwrite O_DSYNC",
    "overwrite O_DIRECT|O_DSYNC", "lmdb commit", "wal"};

typedef struct wal_bench {
  qraft_storage *s;
  uint64_t next_index;
  uint8_t payload[ENTRY_BYTES];
} wal_bench;

typedef struct ctx {
  const char *dir;
  size_t entries, bytes, wbytes_direct;
  int fd[METHODS];
  void *buf; /* 4 KiB aligned, wbytes_direct long */
  MDB_env *env;
  MDB_dbi dbi;
  uint64_t key;
  wal_bench wal;
  qraft_entry *ents;
} ctx;

static void rm_store(const char *path) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  if (system(cmd) != 0) {
    fprintf(stderr, "bench_storage: could not remove %s\n", path);
  }
}

static void wal_open(wal_bench *b, const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/wal", dir);
  rm_store(path);
  qraft_err err;
  qraft_err_init(&err, 0);
  if (qraft_storage_wal_open(path, NULL, &b->s, &err) != 0) {
    qraft_err_print(&err, stderr);
    exit(1);
  }
  b->next_index = 1;
  memset(b->payload, 0xef, sizeof b->payload);
}

static void wal_close(wal_bench *b, const char *dir) {
  qraft_storage_close(b->s);
  char path[4096];
  snprintf(path, sizeof path, "%s/wal", dir);
  rm_store(path);
}

static void ctx_op(ctx *c, enum method m, size_t i);

/* A file preallocated to `size` and written through, then synced. */
static int prealloc_open(const char *path, size_t size, int flags) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    die("create baseline file");
  }
  static uint8_t zero[1 << 20];
  for (size_t off = 0; off < size; off += sizeof zero) {
    size_t n = size - off < sizeof zero ? size - off : sizeof zero;
    if (write(fd, zero, n) != (ssize_t)n) {
      die("preallocate");
    }
  }
  if (fsync(fd) != 0) {
    die("fsync");
  }
  close(fd);
  fd = open(path, O_WRONLY | flags);
  if (fd < 0) {
    die("open baseline file");
  }
  return fd;
}

static void ctx_open(ctx *c, const char *dir, size_t entries, size_t iters) {
  memset(c, 0, sizeof *c);
  c->dir = dir;
  c->entries = entries;
  c->bytes = entries * REC_BYTES;
  c->wbytes_direct = (c->bytes + 4095) & ~(size_t)4095;
  if (posix_memalign(&c->buf, 4096, c->wbytes_direct) != 0) {
    die("memalign");
  }
  memset(c->buf, 0xab, c->wbytes_direct);
  char path[4200];
  snprintf(path, sizeof path, "%s/append.dat", dir);
  c->fd[APPEND] = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
  if (c->fd[APPEND] < 0) {
    die("open append file");
  }
  size_t size = c->wbytes_direct * (iters + 1);
  snprintf(path, sizeof path, "%s/overwrite.dat", dir);
  c->fd[OVERWRITE] = prealloc_open(path, size, 0);
  snprintf(path, sizeof path, "%s/dsync.dat", dir);
  c->fd[OVERWRITE_DSYNC] = prealloc_open(path, size, O_DSYNC);
  snprintf(path, sizeof path, "%s/direct.dat", dir);
  c->fd[OVERWRITE_DIRECT] = prealloc_open(path, size, O_DSYNC | O_DIRECT);
  snprintf(path, sizeof path, "%s/lmdb", dir);
  mkdir(path, 0700);
  MDB_txn *txn;
  if (mdb_env_create(&c->env) != 0 ||
      mdb_env_set_mapsize(c->env, (size_t)4 << 30) != 0 ||
      mdb_env_open(c->env, path, 0, 0600) != 0 ||
      mdb_txn_begin(c->env, NULL, 0, &txn) != 0 ||
      mdb_dbi_open(txn, NULL, 0, &c->dbi) != 0 || mdb_txn_commit(txn) != 0) {
    die("lmdb open");
  }
  wal_open(&c->wal, dir);
  c->ents = calloc(entries, sizeof *c->ents);
  /* Steady state: the first write moves into the first segment and sets
   * the preparer on the next one (8 MiB of zeros and a sync, like the
   * baselines' preallocation above); let that finish before timing. */
  ctx_op(c, WAL, 0);
  struct timespec settle = {.tv_sec = 1};
  nanosleep(&settle, NULL);
}

static void ctx_close(ctx *c) {
  for (int m = APPEND; m <= OVERWRITE_DIRECT; m++) {
    close(c->fd[m]);
  }
  const char *files[] = {"append.dat", "overwrite.dat", "dsync.dat",
                         "direct.dat", "lmdb/data.mdb", "lmdb/lock.mdb"};
  mdb_env_close(c->env);
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", c->dir, files[i]);
    unlink(path);
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/lmdb", c->dir);
  rmdir(path);
  wal_close(&c->wal, c->dir);
  free(c->ents);
  free(c->buf);
}

/* One durable write of the batch by method m (the i-th). */
static void ctx_op(ctx *c, enum method m, size_t i) {
  switch (m) {
  case APPEND:
    if (write(c->fd[m], c->buf, c->bytes) != (ssize_t)c->bytes ||
        fdatasync(c->fd[m]) != 0) {
      die("append");
    }
    break;
  case OVERWRITE:
    if (pwrite(c->fd[m], c->buf, c->bytes, (off_t)(i * c->bytes)) !=
            (ssize_t)c->bytes ||
        fdatasync(c->fd[m]) != 0) {
      die("overwrite");
    }
    break;
  case OVERWRITE_DSYNC:
    if (pwrite(c->fd[m], c->buf, c->bytes, (off_t)(i * c->bytes)) !=
        (ssize_t)c->bytes) {
      die("O_DSYNC write");
    }
    break;
  case OVERWRITE_DIRECT:
    if (pwrite(c->fd[m], c->buf, c->wbytes_direct,
               (off_t)(i * c->wbytes_direct)) != (ssize_t)c->wbytes_direct) {
      die("O_DIRECT write");
    }
    break;
  case LMDB: {
    MDB_txn *txn;
    uint8_t val[ENTRY_BYTES];
    memset(val, 0xcd, sizeof val);
    if (mdb_txn_begin(c->env, NULL, 0, &txn) != 0) {
      die("lmdb begin");
    }
    for (size_t e = 0; e < c->entries; e++) {
      uint64_t k = __builtin_bswap64(++c->key); /* ascending keys */
      MDB_val mk = {sizeof k, &k}, mv = {sizeof val, val};
      if (mdb_put(txn, c->dbi, &mk, &mv, MDB_APPEND) != 0) {
        die("lmdb put");
      }
    }
    if (mdb_txn_commit(txn) != 0) {
      die("lmdb commit");
    }
    break;
  }
  case WAL: {
    for (size_t e = 0; e < c->entries; e++) {
      c->ents[e] = (qraft_entry){.term = 1, .index = c->wal.next_index + e,
                                 .data = {c->wal.payload, ENTRY_BYTES, NULL}};
    }
    qraft_storage_write w = {.entries = c->ents, .entries_n = c->entries};
    qraft_err err;
    qraft_err_init(&err, 0);
    if (qraft_storage_write_sync(c->wal.s, &w, &err) != 0) {
      qraft_err_print(&err, stderr);
      exit(1);
    }
    c->wal.next_index += c->entries;
    break;
  }
  default:
    break;
  }
}

/* Runs `iters` rounds; each round does one write with every method, in an
 * order that rotates, so that all of them see the same disk conditions. */
static void bench_batch(const char *dir, size_t entries, size_t iters,
                        result *res) {
  ctx c;
  ctx_open(&c, dir, entries, iters + 20);
  uint64_t *lat[METHODS], total[METHODS] = {0};
  for (int m = 0; m < METHODS; m++) {
    lat[m] = malloc(iters * sizeof *lat[m]);
  }
  for (size_t i = 0; i < iters + 20; i++) {
    for (int k = 0; k < METHODS; k++) {
      enum method m = (enum method)((k + i) % METHODS);
      uint64_t t0 = now_ns();
      ctx_op(&c, m, i);
      uint64_t dt = now_ns() - t0;
      if (i >= 20) { /* warm-up done */
        lat[m][i - 20] = dt;
        total[m] += dt;
      }
    }
  }
  for (int m = 0; m < METHODS; m++) {
    res[m] = summarize(method_names[m], lat[m], iters, total[m], entries,
                       c.bytes);
    free(lat[m]);
  }
  ctx_close(&c);
}

static result bench_wal(const char *dir, size_t entries, size_t iters) {
  ctx c;
  ctx_open(&c, dir, entries, 1);
  uint64_t *lat = malloc(iters * sizeof *lat), total = 0;
  for (size_t i = 0; i < iters; i++) {
    uint64_t t0 = now_ns();
    ctx_op(&c, WAL, i);
    lat[i] = now_ns() - t0;
    total += lat[i];
  }
  result r = summarize("wal", lat, iters, total, entries, c.bytes);
  free(lat);
  ctx_close(&c);
  return r;
}

/* Many single-entry writes in flight: the writer groups them. */
typedef struct pipe_write {
  qraft_storage_write w;
  qraft_entry e;
  uint64_t t0;
} pipe_write;

static uint64_t *pipe_lat;
static size_t pipe_lat_n, pipe_inflight;

static void pipe_cb(qraft_storage_write *w, int status) {
  if (status != 0) {
    fprintf(stderr, "bench_storage: write failed: %s\n", qraft_strerror(status));
    exit(1);
  }
  pipe_write *pw = w->data;
  pipe_lat[pipe_lat_n++] = now_ns() - pw->t0;
  pipe_inflight--;
}

static result bench_wal_pipelined(const char *dir, size_t inflight,
                                  size_t writes) {
  wal_bench b;
  wal_open(&b, dir);
  pipe_write *pw = calloc(inflight, sizeof *pw);
  pipe_lat = malloc(writes * sizeof *pipe_lat);
  pipe_lat_n = 0;
  pipe_inflight = 0;
  size_t submitted = 0, slot = 0;
  uint64_t start = now_ns();
  while (pipe_lat_n < writes) {
    while (pipe_inflight < inflight && submitted < writes) {
      /* Slots are reused in order; completions come in order too. */
      pipe_write *p = &pw[slot];
      slot = (slot + 1) % inflight;
      p->e = (qraft_entry){.term = 1, .index = b.next_index++,
                           .data = {b.payload, ENTRY_BYTES, NULL}};
      p->w = (qraft_storage_write){.entries = &p->e, .entries_n = 1,
                                   .cb = pipe_cb, .data = p};
      p->t0 = now_ns();
      if (qraft_storage_submit(b.s, &p->w, NULL) != 0) {
        fprintf(stderr, "bench_storage: submit failed\n");
        exit(1);
      }
      pipe_inflight++;
      submitted++;
    }
    qraft_storage_wait(b.s, -1);
    qraft_storage_poll(b.s);
  }
  uint64_t total = now_ns() - start;
  wal_close(&b, dir);
  char name[64];
  snprintf(name, sizeof name, "wal, %zu writes of 1 in flight", inflight);
  result r = summarize(name, pipe_lat, writes, total, 1, REC_BYTES);
  free(pipe_lat);
  free(pw);
  return r;
}

int main(int argc, char **argv) {
  const char *dir = NULL;
  size_t iters = 500;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
      dir = argv[++i];
    } else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc) {
      iters = (size_t)strtoull(argv[++i], NULL, 10);
    } else {
      fprintf(stderr, "usage: bench_storage [--dir D] [--iters N]\n");
      return 2;
    }
  }
  char tmp[] = "/tmp/qraft-bench-XXXXXX";
  if (dir == NULL) {
    dir = mkdtemp(tmp);
    if (dir == NULL) {
      die("mkdtemp");
    }
  }
  printf("bench_storage: %d-byte entries, files in %s; each round writes "
         "the batch once with every method, in rotating order\n",
         ENTRY_BYTES, dir);
  const size_t batches[] = {1, 16, 256};
  for (size_t bi = 0; bi < 3; bi++) {
    size_t n = batches[bi];
    size_t it = n == 256 ? iters / 4 : iters;
    result r[METHODS];
    printf("batch of %zu entries (%zu bytes of records), %zu rounds:\n", n,
           n * REC_BYTES, it);
    bench_batch(dir, n, it, r);
    for (int m = 0; m < METHODS; m++) {
      print_result(&r[m]);
    }
    printf("  ratios of p50: wal/overwrite+fdatasync %.2f, wal/append+fdatasync "
           "%.2f, wal/lmdb %.2f; O_DSYNC/fdatasync %.2f, O_DIRECT/fdatasync "
           "%.2f, append/overwrite %.2f\n",
           r[WAL].p50_us / r[OVERWRITE].p50_us,
           r[WAL].p50_us / r[APPEND].p50_us, r[WAL].p50_us / r[LMDB].p50_us,
           r[OVERWRITE_DSYNC].p50_us / r[OVERWRITE].p50_us,
           r[OVERWRITE_DIRECT].p50_us / r[OVERWRITE].p50_us,
           r[APPEND].p50_us / r[OVERWRITE].p50_us);
    printf("  throughput: wal %.0f entries/s = %.2fx lmdb, %.2fx "
           "overwrite+fdatasync\n",
           r[WAL].entries_s, r[WAL].entries_s / r[LMDB].entries_s,
           r[WAL].entries_s / r[OVERWRITE].entries_s);
  }
  printf("group commit:\n");
  result one = bench_wal(dir, 1, iters);
  print_result(&one);
  result pl = bench_wal_pipelined(dir, 64, iters * 8);
  print_result(&pl);
  printf("  throughput: %.2fx one write in flight\n",
         pl.entries_s / one.entries_s);
  if (dir == tmp) {
    rmdir(dir);
  }
  return 0;
}

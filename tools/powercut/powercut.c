/*
 * qraft-powercut: the second half of a simulated power cut. The processes
 * ran with the shim (shim.c) preloaded and were SIGKILLed; this rolls
 * their files back, with the undo logs the shim kept, to what a disk may
 * hold after the power went out: every write not made durable by an fsync
 * or fdatasync is lost (--mode all), or each page with such writes keeps a
 * seeded random one of its versions, from the last durable one to the
 * newest, and the file a random one of its sizes (--mode torn: a disk that
 * wrote back some pages and not others). Then it deletes the undo logs.
 *
 *   qraft-powercut rollback --dir DIR --undo UNDO [--mode all|torn]
 *                           [--seed N] [--verbose]
 *   qraft-powercut applied LMDB_DIR   the applied index qraft-kv's LMDB
 *                                     holds (its "meta" database)
 *
 * Never: run while a process that writes the files is alive.
 */
#include "undo.h"

#include <lmdb.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

typedef struct rec {
  uint32_t kind;
  uint64_t off, len, stored, old_size;
  const uint8_t *old;
} rec;

typedef struct page_ref {
  uint64_t page;
  size_t rec;
} page_ref;

static struct {
  const char *dir, *undo;
  bool torn, verbose;
  uint64_t seed;
  /* totals */
  uint64_t files, writes, pages, pages_back, pages_lost, resized;
  int err;
} g;

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n);
  if (p == NULL) {
    fprintf(stderr, "qraft-powercut: out of memory\n");
    exit(1);
  }
  return p;
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static uint64_t fnv(const char *s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
  return h;
}

static int cmp_ref(const void *a, const void *b) {
  const page_ref *x = a, *y = b;
  if (x->page != y->page) return x->page < y->page ? -1 : 1;
  return x->rec < y->rec ? -1 : x->rec > y->rec;
}

static int put_all(int fd, const void *p, size_t n, uint64_t off) {
  const char *q = p;
  while (n > 0) {
    ssize_t w = pwrite(fd, q, n, (off_t)off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    q += w;
    n -= (size_t)w;
    off += (uint64_t)w;
  }
  return 0;
}

/* Writes back, within page `pg`, the bytes record r replaced. */
static int undo_in_page(int fd, const rec *r, uint64_t pg) {
  static const uint8_t zero[UNDO_PAGE_BYTES];
  uint64_t ps = pg * UNDO_PAGE_BYTES, pe = ps + UNDO_PAGE_BYTES;
  uint64_t lo = r->off > ps ? r->off : ps;
  uint64_t hi = r->off + r->len < pe ? r->off + r->len : pe;
  uint64_t sv = r->off + r->stored; /* saved bytes end here */
  if (lo < hi && lo < sv) {
    uint64_t e = hi < sv ? hi : sv;
    if (put_all(fd, r->old + (lo - r->off), e - lo, lo) != 0) return -1;
    lo = e;
  }
  if (lo < hi && put_all(fd, zero, hi - lo, lo) != 0) return -1;
  return 0;
}

static uint8_t *read_whole(const char *path, size_t *n) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat st;
  uint8_t *b = NULL;
  if (fstat(fd, &st) == 0 && (b = malloc((size_t)st.st_size + 1)) != NULL) {
    size_t got = 0;
    while (got < (size_t)st.st_size) {
      ssize_t r = pread(fd, b + got, (size_t)st.st_size - got, (off_t)got);
      if (r <= 0) break;
      got += (size_t)r;
    }
    *n = got;
  }
  close(fd);
  return b;
}

static void roll_back(const char *path, const char *rel, const char *undo) {
  size_t n = 0;
  uint8_t *b = read_whole(undo, &n);
  if (b == NULL) {
    fprintf(stderr, "qraft-powercut: %s: %s\n", undo, strerror(errno));
    g.err = 1;
    return;
  }
  undo_hdr h;
  if (n < UNDO_HDR_BYTES || (memcpy(&h, b, sizeof h), h.magic != UNDO_MAGIC)) {
    /* cut short while it was begun: the shim completes the header before
     * it logs a write, so no write of this file was logged */
    free(b);
    return;
  }
  /* the records after the last flush, up to the first one cut short */
  size_t cap = 64, nr = 0;
  rec *rs = xrealloc(NULL, cap * sizeof *rs);
  for (uint64_t at = h.valid_from; at + sizeof(undo_rec) + 4 <= n;) {
    undo_rec u;
    memcpy(&u, b + at, sizeof u);
    if (u.magic != UNDO_REC_MAGIC || u.stored > u.len ||
        u.stored > n - at - sizeof u - 4) break;
    uint32_t end;
    memcpy(&end, b + at + sizeof u + u.stored, 4);
    if (end != UNDO_REC_END) break;
    if (nr == cap) rs = xrealloc(rs, (cap *= 2) * sizeof *rs);
    rs[nr++] = (rec){.kind = u.kind, .off = u.off, .len = u.len,
                     .stored = u.stored, .old_size = u.old_size,
                     .old = b + at + sizeof u};
    at += sizeof u + u.stored + 4;
  }
  if (nr == 0) {
    free(rs);
    free(b);
    return;
  }
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    fprintf(stderr, "qraft-powercut: %s: %s\n", path, strerror(errno));
    g.err = 1;
    if (fd >= 0) close(fd);
    free(rs);
    free(b);
    return;
  }
  uint64_t rng = g.seed ^ fnv(rel);
  size_t nref = 0, refcap = 256;
  page_ref *refs = xrealloc(NULL, refcap * sizeof *refs);
  uint64_t writes = 0;
  for (size_t i = 0; i < nr; i++) {
    if (rs[i].len == 0) continue;
    writes += rs[i].kind == UNDO_WRITE;
    for (uint64_t p = rs[i].off / UNDO_PAGE_BYTES;
         p <= (rs[i].off + rs[i].len - 1) / UNDO_PAGE_BYTES; p++) {
      if (nref == refcap) refs = xrealloc(refs, (refcap *= 2) * sizeof *refs);
      refs[nref++] = (page_ref){p, i};
    }
  }
  qsort(refs, nref, sizeof *refs, cmp_ref);
  uint64_t pages = 0, back = 0, lost = 0;
  size_t *cand = xrealloc(NULL, (nr + 1) * sizeof *cand);
  for (size_t i = 0; i < nref;) {
    size_t j = i, m = 0;
    for (; j < nref && refs[j].page == refs[i].page; j++) {
      const rec *r = &rs[refs[j].rec];
      if (r->kind == UNDO_DURABLE) {
        m = 0; /* the page as it was then is on the disk */
      } else {
        cand[m++] = refs[j].rec;
      }
    }
    if (m > 0) {
      /* keep the first k writes to the page; undo the others, newest first */
      size_t k = g.torn ? (size_t)(splitmix(&rng) % (m + 1)) : 0;
      for (size_t x = m; x > k; x--) {
        if (undo_in_page(fd, &rs[cand[x - 1]], refs[i].page) != 0) {
          fprintf(stderr, "qraft-powercut: %s: write: %s\n", path,
                  strerror(errno));
          g.err = 1;
        }
      }
      pages++;
      back += k < m;
      lost += k == 0;
    }
    i = j;
  }
  /* the size: as before one of the changes (all: before the first), but
   * never short of a durable write */
  size_t cut = g.torn ? (size_t)(splitmix(&rng) % (nr + 1)) : 0;
  uint64_t size = cut == nr ? (uint64_t)st.st_size : rs[cut].old_size;
  for (size_t i = cut; i < nr; i++) {
    if (rs[i].kind == UNDO_DURABLE && rs[i].off + rs[i].len > size) {
      size = rs[i].off + rs[i].len;
    }
  }
  struct stat now;
  bool resized = fstat(fd, &now) == 0 && (uint64_t)now.st_size != size;
  if (resized && ftruncate(fd, (off_t)size) != 0) {
    fprintf(stderr, "qraft-powercut: %s: truncate: %s\n", path, strerror(errno));
    g.err = 1;
  }
  if (fsync(fd) != 0) g.err = 1;
  close(fd);
  if (g.verbose) {
    printf("  %s: %" PRIu64 " unsynced writes on %" PRIu64 " pages: %" PRIu64
           " rolled back (%" PRIu64 " to the last durable version); size %"
           PRIu64 " -> %" PRIu64 "\n",
           rel, writes, pages, back, lost, (uint64_t)st.st_size, size);
  }
  g.files++;
  g.writes += writes;
  g.pages += pages;
  g.pages_back += back;
  g.pages_lost += lost;
  g.resized += (uint64_t)st.st_size != size;
  free(cand);
  free(refs);
  free(rs);
  free(b);
}

static int visit(const char *path, const struct stat *sb, int type,
                 struct FTW *ftw) {
  (void)sb;
  (void)ftw;
  if (type != FTW_F) return 0;
  struct statx sx;
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
      statx(AT_FDCWD, path, 0, STATX_BTIME, &sx) != 0) {
    return 0;
  }
  int64_t bs = (sx.stx_mask & STATX_BTIME) ? sx.stx_btime.tv_sec : 0;
  uint32_t bn = (sx.stx_mask & STATX_BTIME) ? sx.stx_btime.tv_nsec : 0;
  char name[PATH_MAX + 128];
  snprintf(name, sizeof name, "%s/%llu-%llu-%lld.%09u.undo", g.undo,
           (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
           (long long)bs, bn);
  if (access(name, F_OK) == 0) {
    roll_back(path, path + strlen(g.dir), name);
  }
  return 0;
}

static int cmd_rollback(int argc, char **argv) {
  const char *mode = "all";
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--verbose") == 0) {
      g.verbose = true;
      continue;
    }
    if (v == NULL) goto usage;
    if (strcmp(a, "--dir") == 0) g.dir = v;
    else if (strcmp(a, "--undo") == 0) g.undo = v;
    else if (strcmp(a, "--mode") == 0) mode = v;
    else if (strcmp(a, "--seed") == 0) g.seed = strtoull(v, NULL, 0);
    else goto usage;
    i++;
  }
  if (g.dir == NULL || g.undo == NULL) goto usage;
  if (strcmp(mode, "torn") == 0) g.torn = true;
  else if (strcmp(mode, "all") != 0) goto usage;
  if (nftw(g.dir, visit, 16, FTW_PHYS) != 0) {
    fprintf(stderr, "qraft-powercut: %s: %s\n", g.dir, strerror(errno));
    return 1;
  }
  /* the logs are spent; the restarted processes begin new ones */
  DIR *d = opendir(g.undo);
  struct dirent *de;
  while (d != NULL && (de = readdir(d)) != NULL) {
    size_t l = strlen(de->d_name);
    if (l > 5 && strcmp(de->d_name + l - 5, ".undo") == 0) {
      char p[PATH_MAX + 256];
      snprintf(p, sizeof p, "%s/%s", g.undo, de->d_name);
      unlink(p);
    }
  }
  if (d != NULL) closedir(d);
  printf("rolled back %s (%s, seed %" PRIu64 "): %" PRIu64
         " files with %" PRIu64 " unsynced writes on %" PRIu64
         " pages: %" PRIu64 " rolled back, %" PRIu64
         " of them to the last durable version; %" PRIu64 " files resized\n",
         g.dir, mode, g.seed, g.files, g.writes, g.pages, g.pages_back,
         g.pages_lost, g.resized);
  return g.err;
usage:
  fprintf(stderr, "usage: qraft-powercut rollback --dir DIR --undo UNDO "
                  "[--mode all|torn] [--seed N] [--verbose]\n");
  return 2;
}

static int cmd_applied(const char *dir) {
  MDB_env *env = NULL;
  MDB_txn *t = NULL;
  MDB_dbi meta;
  int rv;
  if ((rv = mdb_env_create(&env)) != 0 ||
      (rv = mdb_env_set_maxdbs(env, 4)) != 0 ||
      (rv = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK, 0600)) != 0 ||
      (rv = mdb_txn_begin(env, NULL, MDB_RDONLY, &t)) != 0 ||
      ((rv = mdb_dbi_open(t, "meta", 0, &meta)) != 0 && rv != MDB_NOTFOUND)) {
    fprintf(stderr, "qraft-powercut: lmdb %s: %s\n", dir, mdb_strerror(rv));
    if (t) mdb_txn_abort(t);
    if (env) mdb_env_close(env);
    return 1;
  }
  /* no "meta" database: the cut undid the transaction that created it
   * (qraft-kv creates it again at start), nothing was applied */
  MDB_val k = {7, "applied"}, v;
  uint64_t applied = 0;
  if (rv == 0 && mdb_get(t, meta, &k, &v) == 0 && v.mv_size == 8) {
    for (int i = 7; i >= 0; i--) {
      applied = (applied << 8) | ((const uint8_t *)v.mv_data)[i];
    }
  }
  mdb_txn_abort(t);
  mdb_env_close(env);
  printf("%" PRIu64 "\n", applied);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "rollback") == 0) {
    return cmd_rollback(argc, argv);
  }
  if (argc == 3 && strcmp(argv[1], "applied") == 0) {
    return cmd_applied(argv[2]);
  }
  fprintf(stderr, "usage: qraft-powercut rollback --dir DIR --undo UNDO "
                  "[--mode all|torn] [--seed N] [--verbose]\n"
                  "       qraft-powercut applied LMDB_DIR\n");
  return 2;
}

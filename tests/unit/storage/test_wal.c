/*
 * The WAL store on disk: the directory lock, torn tails cut at every byte,
 * flipped bytes in sealed segments and snapshots, unknown format versions,
 * segment deletion after compaction, and faults (failed syncs, a full disk)
 * injected at named points and on a real, small tmpfs.
 */
#include "cmocka_all.h"

#include "storage_helpers.h"

#include "storage/fault.h"

#include <qraft/crc32c.h>
#include <qraft/storage.h>

#include <sys/mount.h>

static const qraft_wal_config small_cfg = {.segment_bytes = 64 << 10,
                                           .snapshot_chunk_bytes = 1000};

static qraft_storage *open_ok(const char *dir) {
  qraft_storage *s = NULL;
  qraft_err err;
  qraft_err_init(&err, 0);
  int rc = qraft_storage_wal_open(dir, &small_cfg, &s, &err);
  if (rc != 0) {
    qraft_err_print(&err, stderr);
  }
  assert_int_equal(rc, 0);
  return s;
}

/* Opens `dir` expecting failure `code`; returns the error text. */
static void open_fails(const char *dir, int code, const char *needle) {
  qraft_storage *s = NULL;
  qraft_err err;
  qraft_err_init(&err, 0);
  int rc = qraft_storage_wal_open(dir, &small_cfg, &s, &err);
  if (rc != code) {
    qraft_err_print(&err, stderr);
    if (rc == 0) {
      qraft_storage_close(s);
    }
  }
  assert_int_equal(rc, code);
  char text[2048];
  qraft_err_format(&err, text, sizeof text);
  if (needle != NULL && strstr(text, needle) == NULL) {
    fprintf(stderr, "error text lacks \"%s\": %s\n", needle, text);
    fail();
  }
}

static int write_sync(qraft_storage *s, qraft_storage_write *w) {
  return qraft_storage_write_sync(s, w, NULL);
}

static void append(qraft_storage *s, uint64_t lo, size_t n, uint64_t term) {
  th_entries t = th_make(lo, n, term);
  qraft_storage_write w = {.entries = t.e, .entries_n = n};
  assert_int_equal(write_sync(s, &w), 0);
  th_free(&t);
}

static void check_log(qraft_storage *s, uint64_t lo, uint64_t hi,
                      uint64_t term) {
  qraft_entry out[32];
  while (lo < hi) {
    size_t n;
    assert_int_equal(
        qraft_storage_entries(s, lo, hi, UINT64_MAX, out, 32, &n, NULL), 0);
    for (size_t i = 0; i < n; i++) {
      assert_true(th_entry_ok(&out[i], lo + i, term));
    }
    qraft_storage_entries_release(out, n);
    lo += n;
  }
}

/* Record offsets of a segment file, walking the lengths from offset 64. */
typedef struct recs {
  uint64_t off[4096];
  uint64_t end[4096];
  size_t n;
} recs;

static uint8_t *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(*len);
  assert_int_equal(fread(b, 1, *len, f), *len);
  fclose(f);
  return b;
}

static void spill(const char *path, const uint8_t *b, size_t len) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(b, 1, len, f), len);
  fclose(f);
}

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static void walk(const uint8_t *b, size_t len, recs *r) {
  r->n = 0;
  uint64_t off = 64;
  while (off + 24 <= len && le32(b + off + 4) != 0) {
    uint64_t size = (24 + le32(b + off + 4) + 7) & ~7ull;
    r->off[r->n] = off;
    r->end[r->n] = off + size;
    r->n++;
    off += size;
  }
}

/* The path of the newest segment that holds records. */
static void last_data_segment(const char *dir, char *path, size_t size) {
  char best[512] = "";
  DIR *d = opendir(dir);
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (strncmp(de->d_name, "wal-", 4) != 0) {
      continue;
    }
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
    size_t len;
    uint8_t *b = slurp(p, &len);
    recs r;
    walk(b, len, &r);
    free(b);
    if (r.n > 0 && strcmp(p, best) > 0) {
      snprintf(best, sizeof best, "%s", p);
    }
  }
  closedir(d);
  snprintf(path, size, "%s", best);
}

/* Mount points to undo even when a test fails half way. */
static char *mounted_now[2];

/* A directory on a private tmpfs when mounting is permitted (the tests that
 * reopen a store hundreds of times check recovery logic, not the disk, and
 * syncs there cost nothing), else a plain temporary directory. */
static char *fast_dir(bool *mounted) {
  char *d = th_mkdtemp();
  *mounted = mount("tmpfs", d, "tmpfs", 0, "size=64m") == 0;
  if (*mounted) {
    mounted_now[1] = d;
  }
  return d;
}

static void fast_dir_free(char *d, bool mounted) {
  th_rmdir_contents(d);
  if (mounted) {
    mounted_now[1] = NULL;
    umount(d);
  }
  rmdir(d);
  free(d);
}

static void second_open_of_a_directory_is_refused(void **st) {
  (void)st;
  char *dir = th_mkdtemp();
  qraft_storage *s = open_ok(dir);
  open_fails(dir, QRAFT_ELOCKED, "in use");
  qraft_storage_close(s);
  qraft_storage *s2 = open_ok(dir); /* released on close */
  qraft_storage_close(s2);
  th_rmdir(dir);
  free(dir);
}

/* The last write (entries 9..11 and a hard state: one batch of four
 * records) is cut, or scrambled, at every byte offset in turn: recovery
 * must keep exactly entries 1..8 and the previous hard state, and accept new
 * writes after them. */
static void torn_last_batch_at_every_offset_keeps_what_came_before(void **st) {
  (void)st;
  bool mounted;
  char *dir = fast_dir(&mounted);
  qraft_storage *s = open_ok(dir);
  append(s, 1, 5, 1);
  qraft_hard_state hs1 = {.term = 1, .vote = 1, .commit = 5};
  th_entries t = th_make(6, 3, 1);
  qraft_storage_write w = {.entries = t.e, .entries_n = 3, .hard_state = &hs1};
  assert_int_equal(write_sync(s, &w), 0);
  th_free(&t);
  qraft_hard_state hs2 = {.term = 2, .vote = 2, .commit = 8};
  t = th_make(9, 3, 2);
  w = (qraft_storage_write){.entries = t.e, .entries_n = 3, .hard_state = &hs2};
  assert_int_equal(write_sync(s, &w), 0);
  th_free(&t);
  qraft_storage_close(s);

  char seg[512];
  last_data_segment(dir, seg, sizeof seg);
  size_t len;
  uint8_t *orig = slurp(seg, &len);
  recs r;
  walk(orig, len, &r);
  assert_true(r.n >= 4);
  uint64_t lo = r.off[r.n - 4], hi = r.end[r.n - 1]; /* the last batch */
  uint8_t *b = malloc(len);
  int runs = 0;
  uint64_t data_end = hi; /* cutting only zero padding changes nothing */
  while (orig[data_end - 1] == 0) {
    data_end--;
  }
  for (int mode = 0; mode < 2; mode++) {
    for (uint64_t c = lo; c < (mode == 0 ? data_end : hi); c++) {
      memcpy(b, orig, len);
      if (mode == 0) {
        memset(b + c, 0, hi - c); /* cut: the write stopped at c */
      } else {
        b[c] ^= 0x5a; /* scrambled byte */
      }
      spill(seg, b, len);
      s = open_ok(dir);
      qraft_storage_state stt;
      qraft_storage_state_get(s, &stt, NULL);
      if (stt.last_index != 8 || stt.hard_state.commit != 5) {
        fprintf(stderr, "mode %d offset %llu: last %llu commit %llu\n", mode,
                (unsigned long long)c, (unsigned long long)stt.last_index,
                (unsigned long long)stt.hard_state.commit);
        fail();
      }
      if (c % 61 == 0) {
        check_log(s, 1, 9, 1);
        /* The store writes on after a torn tail, and reopens. */
        append(s, 9, 2, 3);
        qraft_storage_close(s);
        s = open_ok(dir);
        check_log(s, 9, 11, 3);
      }
      qraft_storage_close(s);
      /* Back to the original files (recovery zeroed the tail and may have
       * removed or added an empty segment). */
      th_rmdir_contents(dir);
      spill(seg, orig, len);
      runs++;
    }
  }
  assert_true(runs > 2 * 100);
  free(b);
  free(orig);
  fast_dir_free(dir, mounted);
}

static void fill(qraft_storage *s, uint64_t *next, size_t writes) {
  for (size_t i = 0; i < writes; i++) {
    append(s, *next, 20, 1);
    *next += 20;
  }
}

static void flipped_byte_in_a_sealed_segment_is_reported(void **st) {
  (void)st;
  bool mounted;
  char *dir = fast_dir(&mounted);
  qraft_storage *s = open_ok(dir);
  uint64_t next = 1;
  fill(s, &next, 60); /* about 5 segments of 64 KiB */
  qraft_storage_close(s);
  assert_true(th_count_files(dir, "wal-", ".seg", NULL, 0) >= 3);
  char seg[512];
  snprintf(seg, sizeof seg, "%s/wal-0000000000000001.seg", dir);
  size_t len;
  uint8_t *orig = slurp(seg, &len);
  recs r;
  walk(orig, len, &r);
  assert_true(r.n > 10);
  uint64_t end = r.end[r.n - 1];
  int checked = 0;
  for (uint64_t off = 64; off < end; off += 211) {
    assert_int_equal(th_flip(seg, off, (int)(off % 8)), 0);
    open_fails(dir, QRAFT_ECORRUPT, "wal-0000000000000001.seg");
    spill(seg, orig, len);
    checked++;
  }
  /* The header too. */
  assert_int_equal(th_flip(seg, 20, 1), 0);
  open_fails(dir, QRAFT_ECORRUPT, "bad header");
  spill(seg, orig, len);
  s = open_ok(dir);
  check_log(s, 1, next, 1);
  qraft_storage_close(s);
  assert_true(checked > 50);
  free(orig);
  fast_dir_free(dir, mounted);
}

/* A damaged batch followed by a good one in the same (last) segment is not a
 * torn tail. */
static void bad_record_before_a_good_batch_is_not_a_torn_tail(void **st) {
  (void)st;
  char *dir = th_mkdtemp();
  qraft_storage *s = open_ok(dir);
  append(s, 1, 3, 1);
  append(s, 4, 3, 1);
  append(s, 7, 3, 1);
  qraft_storage_close(s);
  char seg[512];
  last_data_segment(dir, seg, sizeof seg);
  size_t len;
  uint8_t *orig = slurp(seg, &len);
  recs r;
  walk(orig, len, &r);
  /* State record, then 3 batches of 3 entries. Damage entry 5. */
  assert_int_equal(r.n, 10);
  assert_int_equal(th_flip(seg, r.off[5] + 40, 3), 0);
  char want[128];
  snprintf(want, sizeof want, "offset %llu", (unsigned long long)r.off[5]);
  open_fails(dir, QRAFT_ECORRUPT, want);
  free(orig);
  th_rmdir(dir);
  free(dir);
}

static void flipped_byte_read_back_names_the_entry(void **st) {
  (void)st;
  char *dir = th_mkdtemp();
  qraft_storage *s = open_ok(dir);
  append(s, 1, 10, 1);
  char seg[512];
  last_data_segment(dir, seg, sizeof seg);
  size_t len;
  uint8_t *b = slurp(seg, &len);
  recs r;
  walk(b, len, &r);
  free(b);
  /* Record 0 is the state; entry 7 is record 7. */
  assert_int_equal(th_flip(seg, r.off[7] + 50, 0), 0);
  qraft_entry out[10];
  size_t n = 99;
  qraft_err err;
  qraft_err_init(&err, 0);
  assert_int_equal(
      qraft_storage_entries(s, 5, 11, UINT64_MAX, out, 10, &n, &err),
      QRAFT_ECORRUPT);
  assert_int_equal(n, 0);
  char text[1024];
  qraft_err_format(&err, text, sizeof text);
  assert_non_null(strstr(text, "entry 7"));
  assert_non_null(strstr(text, "wal-"));
  /* Entries before it are still readable. */
  assert_int_equal(
      qraft_storage_entries(s, 1, 7, UINT64_MAX, out, 10, &n, NULL), 0);
  assert_int_equal(n, 6);
  qraft_storage_entries_release(out, n);
  qraft_storage_close(s);
  th_rmdir(dir);
  free(dir);
}

static void install_snapshot(qraft_storage *s, uint64_t index, uint64_t term,
                             size_t bytes) {
  qraft_snapshot_meta meta = {.index = index, .term = term,
                              .conf_state = {.voters_n = 1, .voters = {1}}};
  qraft_snapshot_writer *sw;
  assert_int_equal(qraft_storage_snapshot_writer_open(s, &meta, &sw, NULL), 0);
  uint8_t buf[256];
  for (size_t off = 0; off < bytes; off += sizeof buf) {
    memset(buf, (int)(off / 256), sizeof buf);
    size_t n = bytes - off < sizeof buf ? bytes - off : sizeof buf;
    assert_int_equal(qraft_snapshot_writer_write(sw, buf, n, NULL), 0);
  }
  qraft_storage_write w = {.snapshot = sw};
  assert_int_equal(write_sync(s, &w), 0);
}

static void flipped_byte_in_a_snapshot_is_reported(void **st) {
  (void)st;
  char *dir = th_mkdtemp();
  qraft_storage *s = open_ok(dir);
  append(s, 1, 10, 1);
  install_snapshot(s, 5, 1, 1000);
  install_snapshot(s, 8, 1, 5000);
  qraft_storage_close(s);
  char name[256], snap[512];
  /* The old snapshot was removed once the new one was durable. */
  assert_int_equal(th_count_files(dir, "snap-", ".snap", name, sizeof name), 1);
  snprintf(snap, sizeof snap, "%s/%s", dir, name);
  size_t len;
  uint8_t *orig = slurp(snap, &len);
  /* In the header: open fails. */
  for (uint64_t off = 0; off < 80; off += 7) {
    assert_int_equal(th_flip(snap, off, 2), 0);
    open_fails(dir, QRAFT_ECORRUPT, name);
    spill(snap, orig, len);
  }
  /* In the data: open succeeds (it checks the header), reading fails at the
   * damaged chunk, never returning its bytes. */
  for (uint64_t off = 200; off < len; off += 613) {
    assert_int_equal(th_flip(snap, off, 5), 0);
    s = open_ok(dir);
    qraft_snapshot_reader *r;
    assert_int_equal(qraft_storage_snapshot_reader_open(s, &r, NULL), 0);
    uint8_t buf[700];
    size_t n, total = 0;
    int rc;
    qraft_err err;
    qraft_err_init(&err, 0);
    while ((rc = qraft_snapshot_reader_read(r, buf, sizeof buf, &n, &err)) ==
               0 &&
           n > 0) {
      total += n;
    }
    assert_int_equal(rc, QRAFT_ECORRUPT);
    assert_true(total <= off);
    char text[1024];
    qraft_err_format(&err, text, sizeof text);
    assert_non_null(strstr(text, name));
    qraft_snapshot_reader_close(r);
    qraft_storage_close(s);
    spill(snap, orig, len);
  }
  free(orig);
  th_rmdir(dir);
  free(dir);
}

/* The node writes its own snapshot while one received from the leader, for
 * the same index and term, is written too (found by the power-cut test with
 * a snapshot every three entries): the received one is aborted when the
 * core does not need it, and that must not remove the file the node's own
 * writer is about to publish. */
static void two_writers_of_the_same_snapshot_do_not_share_a_file(void **st) {
  (void)st;
  char *dir = th_mkdtemp();
  qraft_storage *s = open_ok(dir);
  append(s, 1, 10, 1);
  qraft_snapshot_meta meta = {.index = 5, .term = 1,
                              .conf_state = {.voters_n = 1, .voters = {1}}};
  qraft_snapshot_writer *own, *received;
  assert_int_equal(qraft_storage_snapshot_writer_open(s, &meta, &own, NULL), 0);
  assert_int_equal(qraft_snapshot_writer_write(own, "own state", 9, NULL), 0);
  assert_int_equal(
      qraft_storage_snapshot_writer_open(s, &meta, &received, NULL), 0);
  assert_int_equal(qraft_snapshot_writer_write(received, "leader's", 8, NULL), 0);
  qraft_snapshot_writer_abort(received);
  qraft_storage_write w = {.snapshot = own};
  assert_int_equal(write_sync(s, &w), 0);
  qraft_storage_close(s);
  assert_int_equal(th_count_files(dir, "snap-", ".tmp", NULL, 0), 0);
  s = open_ok(dir);
  qraft_snapshot_reader *r;
  assert_int_equal(qraft_storage_snapshot_reader_open(s, &r, NULL), 0);
  assert_int_equal(r->meta.index, 5);
  char buf[32];
  size_t n = 0;
  assert_int_equal(qraft_snapshot_reader_read(r, buf, sizeof buf, &n, NULL), 0);
  assert_int_equal(n, 9);
  assert_memory_equal(buf, "own state", 9);
  qraft_snapshot_reader_close(r);
  qraft_storage_close(s);
  th_rmdir(dir);
  free(dir);
}

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) {
    p[i] = (uint8_t)(v >> (8 * i));
  }
}

static void unknown_format_versions_are_refused(void **st) {
  (void)st;
  char *dir = th_mkdtemp();
  qraft_storage *s = open_ok(dir);
  append(s, 1, 10, 1);
  install_snapshot(s, 5, 1, 100);
  qraft_storage_close(s);
  char seg[512], name[256], snap[512];
  snprintf(seg, sizeof seg, "%s/wal-0000000000000001.seg", dir);
  size_t len;
  uint8_t *orig = slurp(seg, &len);
  uint8_t *b = malloc(len);
  memcpy(b, orig, len);
  put32(b + 8, 2);
  put32(b + 60, qraft_crc32c(0, b, 60));
  spill(seg, b, len);
  open_fails(dir, QRAFT_EVERSION, "format version 2");
  spill(seg, orig, len);
  free(b);
  free(orig);
  assert_int_equal(th_count_files(dir, "snap-", ".snap", name, sizeof name), 1);
  snprintf(snap, sizeof snap, "%s/%s", dir, name);
  orig = slurp(snap, &len);
  b = malloc(len);
  memcpy(b, orig, len);
  uint32_t hlen = le32(b + 12);
  put32(b + 8, 7);
  put32(b + hlen - 4, qraft_crc32c(0, b, hlen - 4));
  spill(snap, b, len);
  open_fails(dir, QRAFT_EVERSION, "format version 7");
  spill(snap, orig, len);
  s = open_ok(dir);
  qraft_storage_close(s);
  free(b);
  free(orig);
  th_rmdir(dir);
  free(dir);
}

static void compaction_deletes_old_segments(void **st) {
  (void)st;
  char *dir = th_mkdtemp();
  qraft_storage *s = open_ok(dir);
  uint64_t next = 1;
  fill(s, &next, 100);
  int before = th_count_files(dir, "wal-", ".seg", NULL, 0);
  assert_true(before >= 6);
  qraft_storage_write w = {.compact_index = next - 30};
  assert_int_equal(write_sync(s, &w), 0);
  int after = th_count_files(dir, "wal-", ".seg", NULL, 0);
  assert_true(after <= 3);
  qraft_storage_close(s);
  s = open_ok(dir);
  qraft_storage_state stt;
  qraft_storage_state_get(s, &stt, NULL);
  assert_int_equal(stt.first_index, next - 30);
  assert_int_equal(stt.last_index, next - 1);
  check_log(s, next - 30, next, 1);
  fill(s, &next, 10);
  qraft_storage_close(s);
  s = open_ok(dir);
  check_log(s, next - 230, next, 1);
  qraft_storage_close(s);
  th_rmdir(dir);
  free(dir);
}

typedef struct cb_log {
  int status[64];
  int n;
} cb_log;

static cb_log cbs;

static void record_cb(qraft_storage_write *w, int status) {
  (void)w;
  cbs.status[cbs.n++] = status;
}

static void failed_sync_fails_the_write_and_stops_the_store(void **st) {
  (void)st;
  qraft__fault_reset();
  char *dir = th_mkdtemp();
  qraft_storage *s = open_ok(dir);
  append(s, 1, 5, 1);
  qraft__fault_arm("wal.fdatasync", 0, -EIO, 1);
  th_entries t = th_make(6, 5, 1);
  qraft_storage_write w = {.entries = t.e, .entries_n = 5};
  assert_int_equal(write_sync(s, &w), -EIO);
  assert_int_equal(qraft__fault_fired("wal.fdatasync"), 1);
  /* Refused from now on, though the fault is gone: the kernel may have
   * dropped the pages, a retry cannot be trusted. */
  qraft_err err;
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_storage_submit(s, &w, &err), QRAFT_ESYNC);
  qraft_storage_close(s);
  s = open_ok(dir);
  qraft_storage_state stt;
  qraft_storage_state_get(s, &stt, NULL);
  assert_true(stt.last_index == 5 || stt.last_index == 10);
  check_log(s, 1, 6, 1);
  append(s, 6, 5, 1); /* reopened, it writes again */
  check_log(s, 1, 11, 1);
  qraft_storage_close(s);
  th_free(&t);
  th_rmdir(dir);
  free(dir);
}

static void failed_write_fails_every_write_submitted_before_its_callback(
    void **st) {
  (void)st;
  qraft__fault_reset();
  char *dir = th_mkdtemp();
  qraft_storage *s = open_ok(dir);
  append(s, 1, 5, 1);
  qraft__fault_arm("wal.pwrite", 0, -EIO, 1);
  th_entries t[3] = {th_make(6, 1, 1), th_make(7, 1, 1), th_make(8, 1, 1)};
  qraft_storage_write w[3];
  cbs.n = 0;
  int submitted = 0;
  for (int i = 0; i < 3; i++) {
    w[i] = (qraft_storage_write){.entries = t[i].e, .entries_n = 1,
                                 .cb = record_cb};
    int rc = qraft_storage_submit(s, &w[i], NULL);
    /* Once the writer has met the failure, submit refuses at once. */
    assert_true(rc == 0 || (i > 0 && rc == QRAFT_ESYNC));
    submitted += rc == 0;
  }
  while (cbs.n < submitted) {
    qraft_storage_wait(s, 1000);
    qraft_storage_poll(s);
  }
  assert_int_equal(qraft__fault_fired("wal.pwrite"), 1);
  assert_int_equal(cbs.status[0], -EIO);
  for (int i = 1; i < submitted; i++) {
    assert_true(cbs.status[i] == -EIO || cbs.status[i] == QRAFT_ESYNC);
  }
  qraft_storage_state stt;
  qraft_storage_state_get(s, &stt, NULL);
  assert_int_equal(stt.last_index, 5);
  qraft_storage_close(s);
  for (int i = 0; i < 3; i++) {
    th_free(&t[i]);
  }
  th_rmdir(dir);
  free(dir);
}

/* Writes batches of 20 entries from *next until one fails with -ENOSPC
 * (at most 100); *next is then the first index not written. */
static void write_until_no_room(qraft_storage *s, uint64_t *next) {
  int rc = 0;
  for (int i = 0; i < 100 && rc == 0; i++) {
    th_entries t = th_make(*next, 20, 1);
    qraft_storage_write w = {.entries = t.e, .entries_n = 20};
    rc = write_sync(s, &w);
    th_free(&t);
    if (rc == 0) {
      *next += 20;
    }
  }
  assert_int_equal(rc, -ENOSPC);
}

static void failed_segment_preparation_fails_writes_until_there_is_room(
    void **st) {
  (void)st;
  qraft__fault_reset();
  char *dir = th_mkdtemp();
  qraft_storage *s = open_ok(dir);
  uint64_t next = 1;
  fill(s, &next, 2);
  qraft__fault_arm("wal.prepare", 0, -ENOSPC, 0);
  write_until_no_room(s, &next);
  uint64_t acked = next - 1;
  assert_true(qraft__fault_fired("wal.prepare") >= 1);
  qraft_storage_state stt;
  qraft_storage_state_get(s, &stt, NULL);
  assert_int_equal(stt.last_index, acked);
  check_log(s, 1, next, 1);
  /* Still no room: fails again, does not stop the store. */
  th_entries t = th_make(next, 20, 1);
  qraft_storage_write w = {.entries = t.e, .entries_n = 20};
  assert_int_equal(write_sync(s, &w), -ENOSPC);
  /* Room again: the same write succeeds. */
  qraft__fault_reset();
  w = (qraft_storage_write){.entries = t.e, .entries_n = 20};
  assert_int_equal(write_sync(s, &w), 0);
  next += 20;
  th_free(&t);
  fill(s, &next, 10);
  qraft_storage_close(s);
  s = open_ok(dir);
  check_log(s, 1, next, 1);
  qraft_storage_close(s);
  th_rmdir(dir);
  free(dir);
}

/* A write that fails for lack of room before its snapshot was published
 * leaves the snapshot writer to the caller (qraft/storage.h), who submits
 * it again once there is room: the node's held writes rely on it. */
static void no_room_leaves_the_snapshot_writer_to_the_caller(void **st) {
  (void)st;
  qraft__fault_reset();
  char *dir = th_mkdtemp();
  qraft_storage *s = open_ok(dir);
  uint64_t next = 1;
  fill(s, &next, 2);
  qraft__fault_arm("wal.prepare", 0, -ENOSPC, 0);
  write_until_no_room(s, &next);
  /* a snapshot of the last entry, with entries that need a new segment */
  qraft_snapshot_meta meta = {.index = next - 1, .term = 1,
                              .conf_state = {.voters_n = 1, .voters = {1}}};
  qraft_snapshot_writer *sw = NULL;
  assert_int_equal(qraft_storage_snapshot_writer_open(s, &meta, &sw, NULL), 0);
  uint8_t buf[256];
  memset(buf, 7, sizeof buf);
  assert_int_equal(qraft_snapshot_writer_write(sw, buf, sizeof buf, NULL), 0);
  th_entries t = th_make(next, 20, 1);
  qraft_storage_write w = {.snapshot = sw, .entries = t.e, .entries_n = 20};
  assert_int_equal(write_sync(s, &w), -ENOSPC);
  assert_ptr_equal(w.snapshot, sw); /* kept, not used up */
  qraft_storage_state stt;
  qraft_storage_state_get(s, &stt, NULL);
  assert_int_equal(stt.snapshot.index, 0);
  assert_int_equal(stt.last_index, next - 1);
  /* room again: the same write lands, snapshot and entries */
  qraft__fault_reset();
  assert_int_equal(write_sync(s, &w), 0);
  assert_null(w.snapshot);
  th_free(&t);
  qraft_storage_close(s);
  s = open_ok(dir);
  qraft_storage_state_get(s, &stt, NULL);
  assert_int_equal(stt.snapshot.index, next - 1);
  assert_int_equal(stt.last_index, next + 19);
  check_log(s, next, next + 20, 1);
  qraft_storage_close(s);
  th_rmdir(dir);
  free(dir);
}

static void failed_snapshot_sync_stops_the_store_and_leaves_no_file(
    void **st) {
  (void)st;
  qraft__fault_reset();
  char *dir = th_mkdtemp();
  qraft_storage *s = open_ok(dir);
  append(s, 1, 10, 1);
  qraft__fault_arm("snap.fsync", 0, -EIO, 1);
  qraft_snapshot_meta meta = {.index = 5, .term = 1};
  qraft_snapshot_writer *sw;
  assert_int_equal(qraft_storage_snapshot_writer_open(s, &meta, &sw, NULL), 0);
  assert_int_equal(qraft_snapshot_writer_write(sw, "abc", 3, NULL), 0);
  qraft_storage_write w = {.snapshot = sw};
  assert_int_equal(write_sync(s, &w), -EIO);
  assert_int_equal(qraft__fault_fired("snap.fsync"), 1);
  w = (qraft_storage_write){.compact_index = 3};
  assert_int_equal(qraft_storage_submit(s, &w, NULL), QRAFT_ESYNC);
  qraft_storage_close(s);
  assert_int_equal(th_count_files(dir, "snap-", "", NULL, 0), 0);
  s = open_ok(dir);
  qraft_storage_state stt;
  qraft_storage_state_get(s, &stt, NULL);
  assert_int_equal(stt.snapshot.index, 0);
  check_log(s, 1, 11, 1);
  qraft_storage_close(s);
  th_rmdir(dir);
  free(dir);
}

static int unmount_teardown(void **st) {
  (void)st;
  for (int i = 0; i < 2; i++) {
    if (mounted_now[i] != NULL) {
      th_rmdir_contents(mounted_now[i]);
      umount(mounted_now[i]);
      rmdir(mounted_now[i]);
      mounted_now[i] = NULL;
    }
  }
  return 0;
}

/* A real full disk: a 1 MiB tmpfs. */
static void full_disk_fails_writes_then_recovers_when_room_is_made(
    void **st) {
  (void)st;
  qraft__fault_reset();
  char *mnt = th_mkdtemp();
  if (mount("tmpfs", mnt, "tmpfs", 0, "size=1m") != 0) {
    fprintf(stderr, "skipped: cannot mount a tmpfs (%s); the fault-point "
                    "tests cover a full disk instead\n",
            strerror(errno));
    rmdir(mnt);
    free(mnt);
    skip();
  }
  mounted_now[0] = mnt;
  char dir[512], filler[512];
  snprintf(dir, sizeof dir, "%s/node", mnt);
  snprintf(filler, sizeof filler, "%s/filler", mnt);
  qraft_storage *s = open_ok(dir);
  uint64_t next = 1;
  fill(s, &next, 2);
  /* Eat every free byte. */
  FILE *f = fopen(filler, "wb");
  assert_non_null(f);
  static uint8_t block[4096];
  while (fwrite(block, 1, sizeof block, f) == sizeof block) {
  }
  fclose(f);
  int rc = 0;
  for (int i = 0; i < 100 && rc == 0; i++) {
    th_entries t = th_make(next, 20, 1);
    qraft_storage_write w = {.entries = t.e, .entries_n = 20};
    rc = write_sync(s, &w);
    th_free(&t);
    if (rc == 0) {
      next += 20;
    }
  }
  assert_int_equal(rc, -ENOSPC);
  check_log(s, 1, next, 1);
  /* A snapshot streamed in now fails too, and leaves nothing behind. */
  qraft_snapshot_meta meta = {.index = next - 1, .term = 1};
  qraft_snapshot_writer *sw = NULL;
  assert_int_equal(qraft_storage_snapshot_writer_open(s, &meta, &sw, NULL), 0);
  rc = 0;
  for (int i = 0; i < 256 && rc == 0; i++) {
    rc = qraft_snapshot_writer_write(sw, block, sizeof block, NULL);
  }
  assert_int_equal(rc, -ENOSPC);
  qraft_snapshot_writer_abort(sw);
  assert_int_equal(th_count_files(dir, "snap-", "", NULL, 0), 0);
  unlink(filler);
  fill(s, &next, 5); /* room again */
  install_snapshot(s, next - 1, 1, 20000);
  qraft_storage_close(s);
  s = open_ok(dir);
  qraft_storage_state stt;
  qraft_storage_state_get(s, &stt, NULL);
  assert_int_equal(stt.snapshot.index, next - 1);
  assert_int_equal(stt.first_index, next);
  qraft_storage_close(s);
  th_rmdir(dir);
  mounted_now[0] = NULL;
  umount(mnt);
  rmdir(mnt);
  free(mnt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(second_open_of_a_directory_is_refused, unmount_teardown),
      cmocka_unit_test_teardown(torn_last_batch_at_every_offset_keeps_what_came_before, unmount_teardown),
      cmocka_unit_test_teardown(flipped_byte_in_a_sealed_segment_is_reported, unmount_teardown),
      cmocka_unit_test_teardown(bad_record_before_a_good_batch_is_not_a_torn_tail, unmount_teardown),
      cmocka_unit_test_teardown(flipped_byte_read_back_names_the_entry, unmount_teardown),
      cmocka_unit_test_teardown(flipped_byte_in_a_snapshot_is_reported, unmount_teardown),
      cmocka_unit_test_teardown(two_writers_of_the_same_snapshot_do_not_share_a_file, unmount_teardown),
      cmocka_unit_test_teardown(unknown_format_versions_are_refused, unmount_teardown),
      cmocka_unit_test_teardown(compaction_deletes_old_segments, unmount_teardown),
      cmocka_unit_test_teardown(failed_sync_fails_the_write_and_stops_the_store, unmount_teardown),
      cmocka_unit_test_teardown(failed_write_fails_every_write_submitted_before_its_callback, unmount_teardown),
      cmocka_unit_test_teardown(failed_segment_preparation_fails_writes_until_there_is_room, unmount_teardown),
      cmocka_unit_test_teardown(no_room_leaves_the_snapshot_writer_to_the_caller, unmount_teardown),
      cmocka_unit_test_teardown(failed_snapshot_sync_stops_the_store_and_leaves_no_file, unmount_teardown),
      cmocka_unit_test_teardown(full_disk_fails_writes_then_recovers_when_room_is_made, unmount_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

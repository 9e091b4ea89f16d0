/*
 * The storage conformance suite: one set of behaviours that every backend
 * must show, run against each (the in-memory store, the WAL; later the
 * simulator's disk). For backends that persist, every check is repeated
 * after closing and reopening the store.
 */
#include "cmocka_all.h"

#include "storage_helpers.h"

#include <qraft/storage.h>

typedef struct fx {
  const char *backend;
  char *dir;
  qraft_storage *s;
} fx;

static const char *fx_backend;

static void fx_open(fx *f) {
  qraft_err err;
  qraft_err_init(&err, 0);
  int rc;
  if (strcmp(f->backend, "mem") == 0) {
    rc = qraft_storage_mem_new(&f->s);
  } else {
    /* Small segments, so that the suite crosses segment boundaries. */
    qraft_wal_config cfg = {.segment_bytes = 64 << 10,
                            .snapshot_chunk_bytes = 1000};
    rc = qraft_storage_wal_open(f->dir, &cfg, &f->s, &err);
  }
  if (rc != 0) {
    qraft_err_print(&err, stderr);
  }
  assert_int_equal(rc, 0);
}

/* Closes and reopens a persistent store; a no-op for the in-memory one. */
static void fx_reopen(fx *f) {
  if (strcmp(f->backend, "mem") == 0) {
    return;
  }
  qraft_storage_close(f->s);
  f->s = NULL;
  fx_open(f);
}

static int fx_setup(void **st) {
  fx *f = calloc(1, sizeof *f);
  f->backend = fx_backend;
  f->dir = th_mkdtemp();
  fx_open(f);
  *st = f;
  return 0;
}

static int fx_teardown(void **st) {
  fx *f = *st;
  qraft_storage_close(f->s);
  th_rmdir(f->dir);
  free(f->dir);
  free(f);
  return 0;
}

static void must_write(qraft_storage *s, qraft_storage_write *w) {
  qraft_err err;
  qraft_err_init(&err, 0);
  int rc = qraft_storage_write_sync(s, w, &err);
  if (rc != 0) {
    qraft_err_print(&err, stderr);
  }
  assert_int_equal(rc, 0);
}

static void append(qraft_storage *s, uint64_t lo, size_t n, uint64_t term) {
  th_entries t = th_make(lo, n, term);
  qraft_storage_write w = {.entries = t.e, .entries_n = n};
  must_write(s, &w);
  th_free(&t);
}

static qraft_storage_state state_of(qraft_storage *s) {
  qraft_storage_state st;
  assert_int_equal(qraft_storage_state_get(s, &st, NULL), 0);
  return st;
}

/* Reads lo..hi-1 and checks each against th_make with terms from `term_of`. */
static void check_entries(qraft_storage *s, uint64_t lo, uint64_t hi,
                          uint64_t (*term_of)(uint64_t)) {
  qraft_entry out[64];
  while (lo < hi) {
    size_t n = 0;
    qraft_err err;
    qraft_err_init(&err, 0);
    int rc = qraft_storage_entries(s, lo, hi, UINT64_MAX, out, 64, &n, &err);
    if (rc != 0) {
      qraft_err_print(&err, stderr);
    }
    assert_int_equal(rc, 0);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) {
      uint64_t t;
      assert_int_equal(qraft_storage_term(s, lo + i, &t, NULL), 0);
      assert_int_equal(t, term_of(lo + i));
      assert_true(th_entry_ok(&out[i], lo + i, term_of(lo + i)));
    }
    qraft_storage_entries_release(out, n);
    lo += n;
  }
}

static uint64_t term_one(uint64_t i) {
  (void)i;
  return 1;
}

static void fresh_store_is_empty(void **st) {
  fx *f = *st;
  for (int round = 0; round < 2; round++) {
    qraft_storage_state s = state_of(f->s);
    assert_int_equal(s.first_index, 1);
    assert_int_equal(s.last_index, 0);
    assert_int_equal(s.prev_term, 0);
    assert_int_equal(s.hard_state.term, 0);
    assert_int_equal(s.snapshot.index, 0);
    uint64_t t = 99;
    assert_int_equal(qraft_storage_term(f->s, 0, &t, NULL), 0);
    assert_int_equal(t, 0);
    assert_int_equal(qraft_storage_term(f->s, 1, &t, NULL), QRAFT_EUNAVAILABLE);
    qraft_snapshot_reader *r = NULL;
    assert_int_equal(qraft_storage_snapshot_reader_open(f->s, &r, NULL),
                     QRAFT_ENOTFOUND);
    qraft_entry e;
    size_t n;
    assert_int_equal(qraft_storage_entries(f->s, 1, 2, UINT64_MAX, &e, 1, &n,
                                           NULL),
                     QRAFT_EUNAVAILABLE);
    fx_reopen(f);
  }
}

static void appended_entries_read_back_whole(void **st) {
  fx *f = *st;
  for (uint64_t lo = 1; lo <= 1000; lo += 50) {
    append(f->s, lo, 50, 1);
  }
  for (int round = 0; round < 2; round++) {
    qraft_storage_state s = state_of(f->s);
    assert_int_equal(s.first_index, 1);
    assert_int_equal(s.last_index, 1000);
    check_entries(f->s, 1, 1001, term_one);
    fx_reopen(f);
  }
}

static void entries_respect_byte_cap_and_bounds(void **st) {
  fx *f = *st;
  append(f->s, 1, 20, 1);
  qraft_entry out[20];
  size_t n = 0;
  /* A cap below the first entry still returns one. */
  assert_int_equal(qraft_storage_entries(f->s, 2, 21, 0, out, 20, &n, NULL), 0);
  assert_int_equal(n, 1);
  assert_true(th_entry_ok(&out[0], 2, 1));
  qraft_storage_entries_release(out, n);
  /* A cap of exactly three entries' bytes returns three. */
  uint64_t cap = 0;
  for (uint64_t i = 5; i < 8; i++) {
    cap += th_entry_len(i, 1) + (i % 3 == 0 ? 3 : 0);
  }
  assert_int_equal(qraft_storage_entries(f->s, 5, 21, cap, out, 20, &n, NULL),
                   0);
  assert_int_equal(n, 3);
  qraft_storage_entries_release(out, n);
  assert_int_equal(
      qraft_storage_entries(f->s, 5, 21, cap - 1, out, 20, &n, NULL), 0);
  assert_int_equal(n, 2);
  qraft_storage_entries_release(out, n);
  /* out_cap limits too. */
  assert_int_equal(
      qraft_storage_entries(f->s, 1, 21, UINT64_MAX, out, 4, &n, NULL), 0);
  assert_int_equal(n, 4);
  qraft_storage_entries_release(out, n);
  assert_int_equal(qraft_storage_entries(f->s, 1, 22, UINT64_MAX, out, 20, &n,
                                         NULL),
                   QRAFT_EUNAVAILABLE);
  assert_int_equal(
      qraft_storage_entries(f->s, 3, 3, UINT64_MAX, out, 20, &n, NULL),
      -EINVAL);
  assert_int_equal(
      qraft_storage_entries(f->s, 0, 3, UINT64_MAX, out, 20, &n, NULL),
      QRAFT_ECOMPACTED);
}

static uint64_t term_trunc(uint64_t i) { return i < 6 ? 1 : (i < 9 ? 2 : 3); }

static void append_truncates_conflicting_suffix(void **st) {
  fx *f = *st;
  append(f->s, 1, 10, 1);
  append(f->s, 6, 5, 2);  /* 6..10 replaced by term 2 */
  append(f->s, 9, 1, 3);  /* 9 replaced, 10 gone */
  for (int round = 0; round < 2; round++) {
    qraft_storage_state s = state_of(f->s);
    assert_int_equal(s.last_index, 9);
    check_entries(f->s, 1, 10, term_trunc);
    uint64_t t;
    assert_int_equal(qraft_storage_term(f->s, 10, &t, NULL), QRAFT_EUNAVAILABLE);
    fx_reopen(f);
  }
}

static void hard_state_and_configuration_persist(void **st) {
  fx *f = *st;
  qraft_hard_state hs = {.term = 7, .vote = 3, .commit = 0};
  qraft_conf_state cs = {.voters_n = 3, .voters = {1, 2, 3}, .learners_n = 1,
                         .learners = {9}, .auto_leave = true};
  qraft_storage_write w = {.hard_state = &hs, .conf_state = &cs};
  must_write(f->s, &w);
  append(f->s, 1, 3, 7);
  hs.commit = 2;
  qraft_storage_write w2 = {.hard_state = &hs};
  must_write(f->s, &w2);
  for (int round = 0; round < 2; round++) {
    qraft_storage_state s = state_of(f->s);
    assert_int_equal(s.hard_state.term, 7);
    assert_int_equal(s.hard_state.vote, 3);
    assert_int_equal(s.hard_state.commit, 2);
    assert_true(qraft_conf_state_equal(&s.conf_state, &cs));
    fx_reopen(f);
  }
}

static uint64_t term_by_tens(uint64_t i) { return 1 + (i - 1) / 10; }

static void compaction_drops_the_prefix_and_keeps_its_last_term(void **st) {
  fx *f = *st;
  for (uint64_t t = 1; t <= 50; t++) {
    append(f->s, (t - 1) * 10 + 1, 10, t);
  }
  qraft_storage_write w = {.compact_index = 235};
  must_write(f->s, &w);
  for (int round = 0; round < 2; round++) {
    qraft_storage_state s = state_of(f->s);
    assert_int_equal(s.first_index, 235);
    assert_int_equal(s.last_index, 500);
    assert_int_equal(s.prev_term, 24);
    uint64_t t;
    assert_int_equal(qraft_storage_term(f->s, 234, &t, NULL), 0);
    assert_int_equal(t, 24);
    assert_int_equal(qraft_storage_term(f->s, 233, &t, NULL), QRAFT_ECOMPACTED);
    qraft_entry e;
    size_t n;
    assert_int_equal(
        qraft_storage_entries(f->s, 234, 236, UINT64_MAX, &e, 1, &n, NULL),
        QRAFT_ECOMPACTED);
    check_entries(f->s, 235, 501, term_by_tens);
    fx_reopen(f);
  }
  /* Compact everything: the log is empty and restarts after it. */
  qraft_storage_write all = {.compact_index = 501};
  must_write(f->s, &all);
  append(f->s, 501, 5, 50);
  for (int round = 0; round < 2; round++) {
    qraft_storage_state s = state_of(f->s);
    assert_int_equal(s.first_index, 501);
    assert_int_equal(s.last_index, 505);
    assert_int_equal(s.prev_term, 50);
    fx_reopen(f);
  }
}

static void write_snapshot(qraft_storage *s, uint64_t index, uint64_t term,
                           size_t bytes, qraft_storage_write *w) {
  qraft_snapshot_meta meta = {.index = index, .term = term,
                              .conf_state = {.voters_n = 2, .voters = {4, 5}}};
  qraft_snapshot_writer *sw = NULL;
  assert_int_equal(qraft_storage_snapshot_writer_open(s, &meta, &sw, NULL), 0);
  uint8_t chunk[777];
  for (size_t off = 0; off < bytes;) {
    size_t n = bytes - off < sizeof chunk ? bytes - off : sizeof chunk;
    for (size_t k = 0; k < n; k++) {
      chunk[k] = (uint8_t)((off + k) * 29 + index);
    }
    assert_int_equal(qraft_snapshot_writer_write(sw, chunk, n, NULL), 0);
    off += n;
  }
  w->snapshot = sw;
}

static void check_snapshot(qraft_storage *s, uint64_t index, uint64_t term,
                           size_t bytes) {
  qraft_snapshot_reader *r = NULL;
  qraft_err err;
  qraft_err_init(&err, 0);
  int rc = qraft_storage_snapshot_reader_open(s, &r, &err);
  if (rc != 0) {
    qraft_err_print(&err, stderr);
  }
  assert_int_equal(rc, 0);
  assert_int_equal(r->meta.index, index);
  assert_int_equal(r->meta.term, term);
  assert_int_equal(r->bytes, bytes);
  assert_int_equal(r->meta.conf_state.voters_n, 2);
  uint8_t buf[500];
  size_t off = 0, n;
  do {
    assert_int_equal(qraft_snapshot_reader_read(r, buf, sizeof buf, &n, NULL),
                     0);
    for (size_t k = 0; k < n; k++) {
      assert_int_equal(buf[k], (uint8_t)((off + k) * 29 + index));
    }
    off += n;
  } while (n > 0);
  assert_int_equal(off, bytes);
  qraft_snapshot_reader_close(r);
}

static void snapshot_past_the_log_replaces_it(void **st) {
  fx *f = *st;
  append(f->s, 1, 10, 1);
  qraft_storage_write w = {0};
  write_snapshot(f->s, 20, 3, 5000, &w);
  must_write(f->s, &w);
  assert_null(w.snapshot);
  for (int round = 0; round < 2; round++) {
    qraft_storage_state s = state_of(f->s);
    assert_int_equal(s.first_index, 21);
    assert_int_equal(s.last_index, 20);
    assert_int_equal(s.prev_term, 3);
    assert_int_equal(s.snapshot.index, 20);
    assert_int_equal(s.conf_state.voters_n, 2);
    assert_int_equal(s.conf_state.voters[1], 5);
    check_snapshot(f->s, 20, 3, 5000);
    fx_reopen(f);
  }
  append(f->s, 21, 3, 4);
  assert_int_equal(state_of(f->s).last_index, 23);
}

static uint64_t term_snap_keep(uint64_t i) { return i <= 10 ? 1 : 2; }

static void snapshot_inside_the_log_keeps_the_suffix_on_term_match(void **st) {
  fx *f = *st;
  append(f->s, 1, 10, 1);
  append(f->s, 11, 10, 2);
  qraft_storage_write w = {0};
  write_snapshot(f->s, 15, 2, 0, &w);
  must_write(f->s, &w);
  /* A newer snapshot whose term disagrees with the log empties it. */
  for (int round = 0; round < 2; round++) {
    qraft_storage_state s = state_of(f->s);
    assert_int_equal(s.first_index, 16);
    assert_int_equal(s.last_index, 20);
    check_entries(f->s, 16, 21, term_snap_keep);
    check_snapshot(f->s, 15, 2, 0);
    fx_reopen(f);
  }
  qraft_storage_write w2 = {0};
  write_snapshot(f->s, 18, 5, 100, &w2);
  must_write(f->s, &w2);
  for (int round = 0; round < 2; round++) {
    qraft_storage_state s = state_of(f->s);
    assert_int_equal(s.first_index, 19);
    assert_int_equal(s.last_index, 18);
    assert_int_equal(s.prev_term, 5);
    check_snapshot(f->s, 18, 5, 100);
    fx_reopen(f);
  }
}

/* The same snapshot received twice, the second copy arriving while the
 * first is not yet published: neither copy's writer may damage the other's
 * file, whichever is published and whichever aborted. */
static void same_snapshot_written_twice_at_once(void **st) {
  fx *f = *st;
  append(f->s, 1, 10, 1);
  qraft_storage_write a = {0}, b = {0};
  write_snapshot(f->s, 20, 3, 5000, &a);
  write_snapshot(f->s, 20, 3, 5000, &b);
  must_write(f->s, &a);
  check_snapshot(f->s, 20, 3, 5000);
  qraft_snapshot_writer_abort(b.snapshot);
  check_snapshot(f->s, 20, 3, 5000);
  fx_reopen(f);
  check_snapshot(f->s, 20, 3, 5000);
  /* The other way round: the first copy is dropped, the second installed. */
  qraft_storage_write c = {0}, d = {0};
  write_snapshot(f->s, 30, 4, 7000, &c);
  write_snapshot(f->s, 30, 4, 7000, &d);
  qraft_snapshot_writer_abort(c.snapshot);
  must_write(f->s, &d);
  check_snapshot(f->s, 30, 4, 7000);
  fx_reopen(f);
  check_snapshot(f->s, 30, 4, 7000);
}

static void aborted_snapshot_changes_nothing(void **st) {
  fx *f = *st;
  qraft_storage_write w = {0};
  write_snapshot(f->s, 5, 1, 300, &w);
  qraft_snapshot_writer_abort(w.snapshot);
  fx_reopen(f);
  assert_int_equal(state_of(f->s).snapshot.index, 0);
  qraft_snapshot_reader *r = NULL;
  assert_int_equal(qraft_storage_snapshot_reader_open(f->s, &r, NULL),
                   QRAFT_ENOTFOUND);
}

static void bad_writes_are_refused(void **st) {
  fx *f = *st;
  append(f->s, 1, 5, 2);
  qraft_storage_write empty = {0};
  assert_int_equal(qraft_storage_submit(f->s, &empty, NULL), -EINVAL);
  th_entries gap = th_make(7, 2, 2);
  qraft_storage_write w = {.entries = gap.e, .entries_n = 2};
  assert_int_equal(qraft_storage_submit(f->s, &w, NULL), -EINVAL);
  th_free(&gap);
  th_entries lower = th_make(4, 2, 1); /* term 1 after term 2 */
  w = (qraft_storage_write){.entries = lower.e, .entries_n = 2};
  assert_int_equal(qraft_storage_submit(f->s, &w, NULL), -EINVAL);
  th_free(&lower);
  th_entries holes = th_make(6, 3, 2);
  holes.e[2].index = 9;
  w = (qraft_storage_write){.entries = holes.e, .entries_n = 3};
  assert_int_equal(qraft_storage_submit(f->s, &w, NULL), -EINVAL);
  th_free(&holes);
  w = (qraft_storage_write){.compact_index = 7};
  assert_int_equal(qraft_storage_submit(f->s, &w, NULL), -EINVAL);
  w = (qraft_storage_write){.compact_index = 1};
  assert_int_equal(qraft_storage_submit(f->s, &w, NULL), -EINVAL);
  w = (qraft_storage_write){.compact_index = 4};
  must_write(f->s, &w);
  th_entries old = th_make(2, 1, 2); /* before first */
  w = (qraft_storage_write){.entries = old.e, .entries_n = 1};
  assert_int_equal(qraft_storage_submit(f->s, &w, NULL), -EINVAL);
  th_free(&old);
  qraft_storage_state s = state_of(f->s);
  assert_int_equal(s.first_index, 4);
  assert_int_equal(s.last_index, 5);
}

typedef struct order_ctx {
  int next;
  int bad;
} order_ctx;

static order_ctx order;

static void order_cb(qraft_storage_write *w, int status) {
  int i = (int)(intptr_t)w->data;
  if (status != 0 || i != order.next) {
    order.bad++;
  }
  order.next++;
}

static void pipelined_writes_complete_in_order(void **st) {
  fx *f = *st;
  enum { N = 300 };
  static qraft_storage_write w[N];
  static th_entries t[N];
  static qraft_hard_state hs[N];
  order = (order_ctx){0};
  for (int i = 0; i < N; i++) {
    t[i] = th_make((uint64_t)i * 4 + 1, 4, 1 + (uint64_t)i / 50);
    hs[i] = (qraft_hard_state){.term = 1 + (uint64_t)i / 50, .vote = 1,
                               .commit = (uint64_t)i * 4};
    w[i] = (qraft_storage_write){.entries = t[i].e, .entries_n = 4,
                                 .hard_state = &hs[i], .cb = order_cb,
                                 .data = (void *)(intptr_t)i};
    assert_int_equal(qraft_storage_submit(f->s, &w[i], NULL), 0);
    if (i % 37 == 0) {
      qraft_storage_poll(f->s);
    }
  }
  while (order.next < N) {
    qraft_storage_wait(f->s, 1000);
    qraft_storage_poll(f->s);
  }
  assert_int_equal(order.bad, 0);
  for (int i = 0; i < N; i++) {
    th_free(&t[i]);
  }
  for (int round = 0; round < 2; round++) {
    qraft_storage_state s = state_of(f->s);
    assert_int_equal(s.last_index, N * 4);
    assert_int_equal(s.hard_state.commit, (N - 1) * 4);
    fx_reopen(f);
  }
}

static void all_parts_in_one_write_apply_in_order(void **st) {
  fx *f = *st;
  append(f->s, 1, 10, 1);
  /* snapshot at 10 (term 1, kept), entries 11..12, conf, hard state,
   * compaction to 12: all in one write. */
  qraft_storage_write w = {0};
  write_snapshot(f->s, 10, 1, 10, &w);
  th_entries t = th_make(11, 2, 2);
  qraft_conf_state cs = {.voters_n = 1, .voters = {8}};
  qraft_hard_state hs = {.term = 2, .vote = 8, .commit = 11};
  w.entries = t.e;
  w.entries_n = 2;
  w.conf_state = &cs;
  w.hard_state = &hs;
  w.compact_index = 12;
  must_write(f->s, &w);
  th_free(&t);
  for (int round = 0; round < 2; round++) {
    qraft_storage_state s = state_of(f->s);
    assert_int_equal(s.first_index, 12);
    assert_int_equal(s.last_index, 12);
    assert_int_equal(s.prev_term, 2);
    assert_int_equal(s.snapshot.index, 10);
    assert_true(qraft_conf_state_equal(&s.conf_state, &cs));
    assert_int_equal(s.hard_state.commit, 11);
    fx_reopen(f);
  }
}

static int busy_done;
static void busy_cb(qraft_storage_write *w, int status) {
  (void)w;
  assert_int_equal(status, 0);
  busy_done++;
}

static void pending_writes_are_limited(void **st) {
  fx *f = *st;
  enum { N = QRAFT_STORAGE_PENDING_MAX };
  qraft_storage_write *w = calloc(N + 1, sizeof *w);
  qraft_hard_state hs = {.term = 1, .vote = 1};
  busy_done = 0;
  for (int i = 0; i < N; i++) {
    w[i] = (qraft_storage_write){.hard_state = &hs, .cb = busy_cb};
    assert_int_equal(qraft_storage_submit(f->s, &w[i], NULL), 0);
  }
  w[N] = (qraft_storage_write){.hard_state = &hs, .cb = busy_cb};
  assert_int_equal(qraft_storage_submit(f->s, &w[N], NULL), QRAFT_EBUSY);
  while (busy_done < N) {
    qraft_storage_wait(f->s, 1000);
    qraft_storage_poll(f->s);
  }
  assert_int_equal(qraft_storage_submit(f->s, &w[N], NULL), 0);
  while (busy_done < N + 1) {
    qraft_storage_wait(f->s, 1000);
    qraft_storage_poll(f->s);
  }
  free(w);
}

static const struct CMUnitTest conformance_tests[] = {
    cmocka_unit_test_setup_teardown(pending_writes_are_limited, fx_setup,
                                    fx_teardown),
    cmocka_unit_test_setup_teardown(fresh_store_is_empty, fx_setup, fx_teardown),
    cmocka_unit_test_setup_teardown(appended_entries_read_back_whole, fx_setup,
                                    fx_teardown),
    cmocka_unit_test_setup_teardown(entries_respect_byte_cap_and_bounds,
                                    fx_setup, fx_teardown),
    cmocka_unit_test_setup_teardown(append_truncates_conflicting_suffix,
                                    fx_setup, fx_teardown),
    cmocka_unit_test_setup_teardown(hard_state_and_configuration_persist,
                                    fx_setup, fx_teardown),
    cmocka_unit_test_setup_teardown(
        compaction_drops_the_prefix_and_keeps_its_last_term, fx_setup,
        fx_teardown),
    cmocka_unit_test_setup_teardown(snapshot_past_the_log_replaces_it, fx_setup,
                                    fx_teardown),
    cmocka_unit_test_setup_teardown(
        snapshot_inside_the_log_keeps_the_suffix_on_term_match, fx_setup,
        fx_teardown),
    cmocka_unit_test_setup_teardown(same_snapshot_written_twice_at_once,
                                    fx_setup, fx_teardown),
    cmocka_unit_test_setup_teardown(aborted_snapshot_changes_nothing, fx_setup,
                                    fx_teardown),
    cmocka_unit_test_setup_teardown(bad_writes_are_refused, fx_setup,
                                    fx_teardown),
    cmocka_unit_test_setup_teardown(pipelined_writes_complete_in_order,
                                    fx_setup, fx_teardown),
    cmocka_unit_test_setup_teardown(all_parts_in_one_write_apply_in_order,
                                    fx_setup, fx_teardown),
};

int main(int argc, char **argv) {
  /* argv[1]: the backend ("mem" or "wal"); both when absent. */
  const char *backends[] = {"mem", "wal"};
  int failed = 0;
  for (int i = 0; i < 2; i++) {
    if (argc > 1 && strcmp(argv[1], backends[i]) != 0) {
      continue;
    }
    fx_backend = backends[i];
    char name[64];
    snprintf(name, sizeof name, "conformance_%s", backends[i]);
    failed += _cmocka_run_group_tests(
        name, conformance_tests,
        sizeof conformance_tests / sizeof conformance_tests[0], NULL, NULL);
  }
  return failed;
}

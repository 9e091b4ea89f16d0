/*
 * The linearizability checker: hand-written histories with known answers,
 * random histories of a simulated linearizable store (must pass) and the
 * same with a planted violation (must fail), a performance shape bounded by
 * search steps, and the JSON-lines round trip.
 *
 * Randomized tests print their seeds; QRAFT_LINCHECK_SEED=S runs only seed S,
 * QRAFT_LINCHECK_SEEDS=N runs seeds 1..N, and QRAFT_LINCHECK_DUMP=1 writes each history as JSON lines (a failing
 * one is always written).
 */
#include "cmocka_all.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qraft/prng.h>

#include "sim/lincheck.h"

#define PUT QRAFT_LINCHECK_PUT
#define GET QRAFT_LINCHECK_GET
#define CAS QRAFT_LINCHECK_CAS
#define DEL QRAFT_LINCHECK_DEL
#define MISSING QRAFT_LINCHECK_MISSING

/* ---------------------------------------------------------------- helpers */

static qraft__lincheck_history *hist(void) {
  qraft__lincheck_history *h;
  assert_int_equal(qraft__lincheck_history_new(&h), 0);
  return h;
}

static void inv(qraft__lincheck_history *h, uint64_t p, uint64_t t,
                qraft__lincheck_f f, uint64_t key, uint64_t v, uint64_t vn) {
  assert_int_equal(qraft__lincheck_invoke(h, p, t, f, key, v, vn, NULL), 0);
}

static void done(qraft__lincheck_history *h, uint64_t p, uint64_t t,
                 uint64_t result) {
  assert_int_equal(qraft__lincheck_complete(h, p, t, result, NULL), 0);
}

static void put(qraft__lincheck_history *h, uint64_t p, uint64_t key,
                uint64_t v, uint64_t t0, uint64_t t1) {
  inv(h, p, t0, PUT, key, v, 0);
  done(h, p, t1, 0);
}

static void get(qraft__lincheck_history *h, uint64_t p, uint64_t key,
                uint64_t out, uint64_t t0, uint64_t t1) {
  inv(h, p, t0, GET, key, 0, 0);
  done(h, p, t1, out);
}

static void cas(qraft__lincheck_history *h, uint64_t p, uint64_t key,
                uint64_t expected, uint64_t v, bool swapped, uint64_t t0,
                uint64_t t1) {
  inv(h, p, t0, CAS, key, expected, v);
  done(h, p, t1, swapped ? 1 : 0);
}

static void info(qraft__lincheck_history *h, uint64_t p, qraft__lincheck_f f,
                 uint64_t key, uint64_t v, uint64_t vn, uint64_t t0,
                 uint64_t t1) {
  inv(h, p, t0, f, key, v, vn);
  assert_int_equal(qraft__lincheck_info(h, p, t1, NULL), 0);
}

static qraft__lincheck_verdict verdict_of(const qraft__lincheck_history *h) {
  qraft__lincheck_result r;
  assert_int_equal(qraft__lincheck_check(h, NULL, &r, NULL), 0);
  qraft__lincheck_verdict v = r.verdict;
  if (v == QRAFT_LINCHECK_VIOLATION) {
    /* Every violation comes with a blocked operation on the named key. */
    assert_int_equal(qraft__lincheck_history_op(h, r.blocked)->key, r.key);
    for (size_t i = 0; i < r.prefix_n; i++) {
      assert_int_equal(qraft__lincheck_history_op(h, r.prefix[i])->key, r.key);
    }
  }
  qraft__lincheck_result_close(&r);
  return v;
}

#define assert_linearizable(h)                                                 \
  assert_int_equal(verdict_of(h), QRAFT_LINCHECK_LINEARIZABLE)
#define assert_violation(h)                                                    \
  assert_int_equal(verdict_of(h), QRAFT_LINCHECK_VIOLATION)

/* -------------------------------------------------- hand-written: basics */

static void empty_and_sequential_histories_are_linearizable(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  assert_linearizable(h);
  get(h, 1, 7, MISSING, 10, 20);
  put(h, 1, 7, 100, 30, 40);
  get(h, 2, 7, 100, 50, 60);
  cas(h, 2, 7, 100, 101, true, 70, 80);
  cas(h, 1, 7, 100, 102, false, 90, 95);
  get(h, 1, 7, 101, 100, 110);
  inv(h, 3, 120, DEL, 7, 0, 0);
  done(h, 3, 130, 0);
  get(h, 3, 7, MISSING, 140, 150);
  assert_linearizable(h);
  qraft__lincheck_history_free(h);
}

static void stale_read_is_a_violation_that_names_the_read(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  put(h, 1, 5, 100, 10, 20);       /* #0 */
  put(h, 2, 5, 200, 30, 40);       /* #1 */
  get(h, 3, 5, 100, 50, 60);       /* #2: stale */
  qraft__lincheck_result r;
  assert_int_equal(qraft__lincheck_check(h, NULL, &r, NULL), 0);
  assert_int_equal(r.verdict, QRAFT_LINCHECK_VIOLATION);
  assert_int_equal(r.key, 5);
  assert_int_equal(r.prefix_n, 2);
  assert_int_equal(r.prefix[0], 0);
  assert_int_equal(r.prefix[1], 1);
  assert_int_equal(r.prefix_value, 200);
  assert_int_equal(r.blocked, 2);
  /* The explanation names the read and the value it should have seen. */
  char *text = NULL;
  size_t text_n = 0;
  FILE *f = open_memstream(&text, &text_n);
  qraft__lincheck_result_print(h, &r, f);
  fclose(f);
  assert_non_null(strstr(text, "not linearizable: key 5"));
  assert_non_null(strstr(text, "value after it: 200"));
  assert_non_null(strstr(text, "#2 process 3 get 5: read 100 [50, 60]"));
  free(text);
  qraft__lincheck_result_close(&r);
  qraft__lincheck_history_free(h);
}

static void acknowledged_write_that_is_lost_is_a_violation(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  put(h, 1, 1, 100, 10, 20);
  get(h, 2, 1, MISSING, 30, 40);
  assert_violation(h);
  qraft__lincheck_history_free(h);
}

static void two_cas_from_the_same_value_cannot_both_succeed(void **st) {
  (void)st;
  /* Concurrent: one of them must have failed. */
  qraft__lincheck_history *h = hist();
  put(h, 1, 1, 100, 0, 5);
  cas(h, 1, 1, 100, 101, true, 10, 50);
  cas(h, 2, 1, 100, 102, true, 20, 60);
  assert_violation(h);
  qraft__lincheck_history_free(h);
  /* The same, with the second reported failed: fine. */
  h = hist();
  put(h, 1, 1, 100, 0, 5);
  cas(h, 1, 1, 100, 101, true, 10, 50);
  cas(h, 2, 1, 100, 102, false, 20, 60);
  assert_linearizable(h);
  qraft__lincheck_history_free(h);
}

static void cas_results_must_match_the_value(void **st) {
  (void)st;
  /* Swapped although the value was another. */
  qraft__lincheck_history *h = hist();
  put(h, 1, 1, 100, 0, 5);
  cas(h, 1, 1, 99, 101, true, 10, 20);
  assert_violation(h);
  qraft__lincheck_history_free(h);
  /* Failed although the value matched and nothing else ran. */
  h = hist();
  put(h, 1, 1, 100, 0, 5);
  cas(h, 1, 1, 100, 101, false, 10, 20);
  assert_violation(h);
  qraft__lincheck_history_free(h);
  /* Failed, with a concurrent write that explains it. */
  h = hist();
  put(h, 1, 1, 100, 0, 5);
  cas(h, 1, 1, 100, 101, false, 10, 20);
  put(h, 2, 1, 200, 12, 30);
  get(h, 2, 1, 200, 40, 50);
  assert_linearizable(h);
  qraft__lincheck_history_free(h);
  /* A cas expecting "missing" on an absent key. */
  h = hist();
  cas(h, 1, 1, MISSING, 100, true, 0, 5);
  get(h, 1, 1, 100, 10, 20);
  assert_linearizable(h);
  qraft__lincheck_history_free(h);
}

static void concurrent_operations_may_take_either_order(void **st) {
  (void)st;
  for (uint64_t seen = 0; seen <= 100; seen += 100) {
    /* A read overlapping a write may see either value. */
    qraft__lincheck_history *h = hist();
    inv(h, 1, 10, PUT, 1, 100, 0);
    get(h, 2, 1, seen, 20, 30);
    done(h, 1, 40, 0);
    assert_linearizable(h);
    qraft__lincheck_history_free(h);
  }
  /* Two overlapping writes; reads inside see 200 then 100: the writes took
   * effect in the order 200, 100. */
  qraft__lincheck_history *h = hist();
  inv(h, 1, 0, PUT, 1, 100, 0);
  inv(h, 2, 0, PUT, 1, 200, 0);
  get(h, 3, 1, 200, 10, 20);
  get(h, 3, 1, 100, 30, 40);
  done(h, 1, 50, 0);
  done(h, 2, 50, 0);
  get(h, 3, 1, 100, 60, 70);
  assert_linearizable(h);
  qraft__lincheck_history_free(h);
}

static void reads_flipping_back_between_two_writes_is_a_violation(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  inv(h, 1, 0, PUT, 1, 100, 0);
  inv(h, 2, 0, PUT, 1, 200, 0);
  get(h, 3, 1, 100, 10, 20);
  get(h, 3, 1, 200, 30, 40);
  get(h, 4, 1, 100, 45, 48); /* would need a third write */
  done(h, 1, 50, 0);
  done(h, 2, 50, 0);
  assert_violation(h);
  qraft__lincheck_history_free(h);
}

static void equal_times_count_as_concurrent(void **st) {
  (void)st;
  /* The read is invoked at the instant the write completes: they overlap,
   * so reading the old value is allowed. */
  qraft__lincheck_history *h = hist();
  put(h, 1, 1, 100, 0, 10);
  put(h, 1, 1, 200, 20, 30);
  get(h, 2, 1, 100, 30, 40);
  assert_linearizable(h);
  qraft__lincheck_history_free(h);
  /* One nanosecond later they do not. */
  h = hist();
  put(h, 1, 1, 100, 0, 10);
  put(h, 1, 1, 200, 20, 30);
  get(h, 2, 1, 100, 31, 40);
  assert_violation(h);
  qraft__lincheck_history_free(h);
}

static void delete_makes_the_key_missing(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  put(h, 1, 1, 100, 0, 10);
  inv(h, 1, 20, DEL, 1, 0, 0);
  done(h, 1, 30, 0);
  get(h, 2, 1, 100, 40, 50);
  assert_violation(h);
  qraft__lincheck_history_free(h);
}

/* ----------------------------------------------- info, fail and pending */

static void info_write_may_have_happened(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  info(h, 1, PUT, 1, 100, 0, 0, 10);
  get(h, 2, 1, 100, 500, 510); /* long after the timeout: still fine */
  assert_linearizable(h);
  qraft__lincheck_history_free(h);
}

static void info_write_may_not_have_happened(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  info(h, 1, PUT, 1, 100, 0, 0, 10);
  get(h, 2, 1, MISSING, 500, 510);
  assert_linearizable(h);
  qraft__lincheck_history_free(h);
}

static void info_write_takes_effect_once_and_not_before_invocation(
    void **st) {
  (void)st;
  /* Seen, then not seen: it cannot be undone. */
  qraft__lincheck_history *h = hist();
  info(h, 1, PUT, 1, 100, 0, 0, 10);
  get(h, 2, 1, 100, 20, 30);
  get(h, 2, 1, MISSING, 40, 50);
  assert_violation(h);
  qraft__lincheck_history_free(h);
  /* Seen before it was invoked. */
  h = hist();
  get(h, 2, 1, 100, 0, 10);
  info(h, 1, PUT, 1, 100, 0, 20, 30);
  assert_violation(h);
  qraft__lincheck_history_free(h);
  /* A later write overwrites it; it cannot be placed after the later write
   * and before a read that saw the later write... but it can be placed
   * after that read. */
  h = hist();
  info(h, 1, PUT, 1, 100, 0, 0, 10);
  put(h, 2, 1, 200, 20, 30);
  get(h, 2, 1, 200, 40, 50);
  get(h, 2, 1, 100, 60, 70);
  assert_linearizable(h);
  qraft__lincheck_history_free(h);
}

static void info_cas_happens_only_if_it_could_have_swapped(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  put(h, 1, 1, 100, 0, 10);
  info(h, 1, CAS, 1, 100, 101, 20, 30);
  get(h, 2, 1, 101, 40, 50);
  assert_linearizable(h);
  qraft__lincheck_history_free(h);
  h = hist();
  put(h, 1, 1, 100, 0, 10);
  info(h, 1, CAS, 1, 99, 101, 20, 30); /* expects a value never there */
  get(h, 2, 1, 101, 40, 50);
  assert_violation(h);
  qraft__lincheck_history_free(h);
}

/* A client that knows when an info write could last have taken effect
 * (qraft__lincheck_effect_by) rules out the orders that place it later. */
static void info_write_bound_rules_out_later_effects(void **st) {
  (void)st;
  /* Unbounded: the write may take effect after the read of "missing". */
  qraft__lincheck_history *h = hist();
  info(h, 1, PUT, 1, 100, 0, 0, 10);
  get(h, 2, 1, MISSING, 40, 50);
  get(h, 2, 1, 100, 60, 70);
  assert_linearizable(h);
  /* Took effect by 30, if at all: the read invoked at 40 must see it, and
   * the read at 60 then cannot have seen it without the one at 40. */
  assert_int_equal(qraft__lincheck_effect_by(h, 0, 30, NULL), 0);
  assert_violation(h);
  /* A later, looser bound does not undo the tighter one. */
  assert_int_equal(qraft__lincheck_effect_by(h, 0, 45, NULL), 0);
  assert_int_equal(qraft__lincheck_history_op(h, 0)->effect_by_ns, 30);
  assert_violation(h);
  qraft__lincheck_history_free(h);
  /* A bound is a bound, not a promise that it happened. */
  h = hist();
  info(h, 1, PUT, 1, 100, 0, 0, 10);
  assert_int_equal(qraft__lincheck_effect_by(h, 0, 30, NULL), 0);
  get(h, 2, 1, MISSING, 40, 50);
  get(h, 2, 1, MISSING, 60, 70);
  assert_linearizable(h);
  /* An operation invoked exactly at the bound may still follow it. */
  get(h, 3, 1, 100, 30, 35);
  assert_violation(h); /* 100 at 35, then missing at 40: not without it */
  qraft__lincheck_history_free(h);
  h = hist();
  info(h, 1, PUT, 1, 100, 0, 0, 10);
  assert_int_equal(qraft__lincheck_effect_by(h, 0, 30, NULL), 0);
  get(h, 3, 1, MISSING, 30, 35);
  get(h, 2, 1, 100, 40, 50);
  assert_linearizable(h); /* placed at 30, after the read invoked at 30 */
  qraft__lincheck_history_free(h);
  /* Bounds are for writes of unknown outcome, not before the invocation. */
  h = hist();
  put(h, 1, 1, 100, 0, 10);
  info(h, 1, CAS, 1, 100, 101, 20, 30);
  info(h, 2, GET, 1, 0, 0, 20, 30);
  inv(h, 3, 40, PUT, 1, 102, 0);
  assert_int_equal(qraft__lincheck_effect_by(h, 0, 50, NULL),
                   QRAFT_EMALFORMED); /* definite */
  assert_int_equal(qraft__lincheck_effect_by(h, 2, 50, NULL),
                   QRAFT_EMALFORMED); /* a read */
  assert_int_equal(qraft__lincheck_effect_by(h, 3, 50, NULL),
                   QRAFT_EMALFORMED); /* still pending */
  assert_int_equal(qraft__lincheck_effect_by(h, 1, 19, NULL),
                   QRAFT_EMALFORMED); /* before its invocation */
  assert_int_equal(qraft__lincheck_effect_by(h, 9, 50, NULL),
                   QRAFT_EMALFORMED); /* no such operation */
  assert_int_equal(qraft__lincheck_effect_by(h, 1, 20, NULL), 0);
  qraft__lincheck_history_free(h);
}

static void info_reads_are_ignored(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  put(h, 1, 1, 100, 0, 10);
  info(h, 2, GET, 1, 0, 0, 20, 30);
  assert_linearizable(h);
  qraft__lincheck_result r;
  assert_int_equal(qraft__lincheck_check(h, NULL, &r, NULL), 0);
  assert_int_equal(r.ops_checked, 1);
  qraft__lincheck_result_close(&r);
  qraft__lincheck_history_free(h);
}

static void failed_operations_did_not_happen(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  inv(h, 1, 0, PUT, 1, 100, 0);
  assert_int_equal(qraft__lincheck_fail(h, 1, 10, NULL), 0);
  get(h, 2, 1, MISSING, 20, 30);
  assert_linearizable(h);
  get(h, 2, 1, 100, 40, 50); /* the failed write cannot be seen */
  assert_violation(h);
  qraft__lincheck_history_free(h);
}

static void pending_operations_count_as_info(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  inv(h, 1, 0, PUT, 1, 100, 0); /* never completes */
  get(h, 2, 1, MISSING, 10, 20);
  get(h, 2, 1, 100, 30, 40);
  assert_linearizable(h);
  get(h, 2, 1, MISSING, 50, 60);
  assert_violation(h);
  qraft__lincheck_history_free(h);
}

/* ------------------------------------------------------- keys and budget */

static void keys_are_checked_apart_and_the_violation_names_its_key(
    void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  /* Interleaved in time across keys; only key 2 is wrong. */
  put(h, 1, 1, 100, 0, 10);
  put(h, 2, 2, 100, 5, 15);
  put(h, 3, 3, 300, 6, 16);
  get(h, 1, 1, 100, 20, 30);
  get(h, 2, 2, 300, 25, 35); /* 300 was written to key 3, not 2 */
  get(h, 3, 3, 300, 26, 36);
  qraft__lincheck_result r;
  assert_int_equal(qraft__lincheck_check(h, NULL, &r, NULL), 0);
  assert_int_equal(r.verdict, QRAFT_LINCHECK_VIOLATION);
  assert_int_equal(r.key, 2);
  assert_int_equal(r.blocked, 4);
  assert_int_equal(r.keys_n, 3);
  qraft__lincheck_result_close(&r);
  qraft__lincheck_history_free(h);
}

static void exhausted_budget_is_unknown_never_linearizable(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  for (uint64_t i = 0; i < 8; i++) {
    inv(h, i + 1, i, PUT, 1, 100 + i, 0);
  }
  for (uint64_t i = 0; i < 8; i++) {
    done(h, i + 1, 100, 0);
  }
  get(h, 1, 1, 100, 200, 210);
  qraft__lincheck_opts opts = {.steps_max = 3};
  qraft__lincheck_result r;
  assert_int_equal(qraft__lincheck_check(h, &opts, &r, NULL), 0);
  assert_int_equal(r.verdict, QRAFT_LINCHECK_UNKNOWN);
  assert_int_equal(r.limit, QRAFT_LINCHECK_LIMIT_STEPS);
  assert_int_equal(r.steps, 3);
  assert_int_equal(r.key, 1);
  qraft__lincheck_result_close(&r);
  /* A memo too small for even its first table. */
  opts = (qraft__lincheck_opts){.memo_bytes_max = 1000};
  assert_int_equal(qraft__lincheck_check(h, &opts, &r, NULL), 0);
  assert_int_equal(r.verdict, QRAFT_LINCHECK_UNKNOWN);
  assert_int_equal(r.limit, QRAFT_LINCHECK_LIMIT_MEMO);
  qraft__lincheck_result_close(&r);
  opts.memo_bytes_max = 0; /* the defaults are plenty */
  assert_int_equal(qraft__lincheck_check(h, &opts, &r, NULL), 0);
  assert_int_equal(r.verdict, QRAFT_LINCHECK_LINEARIZABLE);
  qraft__lincheck_result_close(&r);
  qraft__lincheck_history_free(h);
}

/* A key whose memo runs out does not hide a violation on a later key. */
static void memo_out_on_one_key_still_checks_the_others(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  /* Key 1: many concurrent puts, many configurations to remember. */
  for (uint64_t i = 0; i < 14; i++) {
    inv(h, i + 1, i, PUT, 1, 100 + i, 0);
  }
  for (uint64_t i = 0; i < 14; i++) {
    done(h, i + 1, 100, 0);
  }
  get(h, 1, 1, 999, 200, 210); /* no put wrote 999: forces the whole search */
  /* Key 2, after key 1 in the order of the check: a plain violation. */
  put(h, 20, 2, 100, 300, 310);
  get(h, 20, 2, 300, 320, 330);
  qraft__lincheck_opts opts = {.memo_bytes_max = 64 * 1024};
  qraft__lincheck_result r;
  assert_int_equal(qraft__lincheck_check(h, &opts, &r, NULL), 0);
  assert_int_equal(r.verdict, QRAFT_LINCHECK_VIOLATION);
  assert_int_equal(r.key, 2);
  assert_int_equal(r.keys_n, 2);
  qraft__lincheck_result_close(&r);
  /* Key 1 alone: the memo runs out, so unknown. */
  qraft__lincheck_history *h1 = hist();
  for (uint64_t i = 0; i < 14; i++) {
    inv(h1, i + 1, i, PUT, 1, 100 + i, 0);
  }
  for (uint64_t i = 0; i < 14; i++) {
    done(h1, i + 1, 100, 0);
  }
  get(h1, 1, 1, 999, 200, 210);
  put(h1, 20, 2, 100, 300, 310);
  get(h1, 20, 2, 100, 320, 330);
  assert_int_equal(qraft__lincheck_check(h1, &opts, &r, NULL), 0);
  assert_int_equal(r.verdict, QRAFT_LINCHECK_UNKNOWN);
  assert_int_equal(r.limit, QRAFT_LINCHECK_LIMIT_MEMO);
  assert_int_equal(r.key, 1);
  assert_int_equal(r.keys_checked, 1); /* key 2 was checked after key 1 */
  qraft__lincheck_result_close(&r);
  qraft__lincheck_history_free(h1);
  qraft__lincheck_history_free(h);
}

static void builder_rejects_malformed_sequences(void **st) {
  (void)st;
  qraft__lincheck_history *h = hist();
  qraft_err err;
  qraft_err_init(&err, 0);
  /* Completion with nothing pending. */
  assert_int_equal(qraft__lincheck_complete(h, 1, 10, 0, &err),
                   QRAFT_EMALFORMED);
  inv(h, 1, 10, PUT, 1, 100, 0);
  /* A second invocation while one is pending. */
  assert_int_equal(qraft__lincheck_invoke(h, 1, 20, GET, 1, 0, 0, &err),
                   QRAFT_EMALFORMED);
  /* Completion before invocation. */
  assert_int_equal(qraft__lincheck_complete(h, 1, 5, 0, &err),
                   QRAFT_EMALFORMED);
  /* A put result must be 0. */
  assert_int_equal(qraft__lincheck_complete(h, 1, 20, 7, &err),
                   QRAFT_EMALFORMED);
  /* put of "missing", get with a value, cas to "missing". */
  assert_int_equal(qraft__lincheck_invoke(h, 2, 0, PUT, 1, 0, 0, &err),
                   QRAFT_EMALFORMED);
  assert_int_equal(qraft__lincheck_invoke(h, 2, 0, GET, 1, 5, 0, &err),
                   QRAFT_EMALFORMED);
  assert_int_equal(qraft__lincheck_invoke(h, 2, 0, CAS, 1, 5, 0, &err),
                   QRAFT_EMALFORMED);
  assert_true(qraft_err_is_set(&err));
  assert_int_equal(qraft__lincheck_history_ops_n(h), 1);
  done(h, 1, 20, 0);
  qraft__lincheck_history_free(h);
}

/* ------------------------------------------------------------ randomized */

/*
 * A simulated linearizable store: each process runs operations one after
 * another; each operation takes effect atomically at a random instant
 * between its invocation and its completion, in the order of those
 * instants. The result is linearizable by construction.
 */
typedef struct gen_op {
  uint64_t process;
  uint64_t call, lin, ret;
  qraft__lincheck_f f;
  uint64_t key, value, value_new;
  qraft__lincheck_status status;
  bool took_effect; /* info: whether it was applied */
  uint64_t effect_by; /* info write: a bound, or 0 */
  uint64_t result;  /* as for qraft__lincheck_complete */
} gen_op;

typedef struct gen_params {
  size_t ops_n;
  uint64_t procs;
  uint64_t keys;
  uint64_t info_pct;
  uint64_t fail_pct;
  /* Share of the info writes that get a bound on when they took effect:
   * a random instant after the effect (or, for one that never took
   * effect, after the invocation). 0 draws nothing. */
  uint64_t bound_pct;
} gen_params;

static int gen_lin_cmp(const void *a, const void *b) {
  const gen_op *x = *(gen_op *const *)a;
  const gen_op *y = *(gen_op *const *)b;
  return x->lin < y->lin ? -1 : x->lin > y->lin;
}

static gen_op *gen_history(qraft_prng *rng, const gen_params *gp) {
  gen_op *ops = calloc(gp->ops_n, sizeof(*ops));
  assert_non_null(ops);
  /* Timing: processes run side by side, ops assigned round robin. */
  uint64_t *free_at = calloc(gp->procs, sizeof(*free_at));
  for (size_t i = 0; i < gp->ops_n; i++) {
    uint64_t p = i % gp->procs;
    gen_op *o = &ops[i];
    o->process = p + 1;
    o->call = free_at[p] + qraft_prng_between(rng, 1, 40);
    /* Distinct instants, so the construction order is unambiguous. */
    o->lin = (o->call + qraft_prng_between(rng, 1, 100)) * gp->ops_n + i;
    o->call *= gp->ops_n;
    o->ret = o->lin + qraft_prng_between(rng, 1, 100) * gp->ops_n;
    free_at[p] = o->ret / gp->ops_n + 1;
    o->key = qraft_prng_between(rng, 1, gp->keys);
  }
  free(free_at);
  /* Effects, in the order of their instants. */
  gen_op **by_lin = calloc(gp->ops_n, sizeof(*by_lin));
  for (size_t i = 0; i < gp->ops_n; i++) {
    by_lin[i] = &ops[i];
  }
  qsort(by_lin, gp->ops_n, sizeof(*by_lin), gen_lin_cmp);
  uint64_t store[16] = {0};
  assert_true(gp->keys < 16);
  uint64_t next_value = 1000;
  for (size_t i = 0; i < gp->ops_n; i++) {
    gen_op *o = by_lin[i];
    uint64_t *cell = &store[o->key];
    uint64_t dice = qraft_prng_below(rng, 100);
    o->f = dice < 30 ? PUT : dice < 70 ? GET : dice < 90 ? CAS : DEL;
    dice = qraft_prng_below(rng, 100);
    o->status = dice < gp->info_pct ? QRAFT_LINCHECK_INFO
                : dice < gp->info_pct + gp->fail_pct ? QRAFT_LINCHECK_FAIL
                                                    : QRAFT_LINCHECK_OK;
    bool apply = o->status == QRAFT_LINCHECK_OK ||
                 (o->status == QRAFT_LINCHECK_INFO &&
                  qraft_prng_chance(rng, 1, 2));
    o->took_effect = apply && o->status == QRAFT_LINCHECK_INFO;
    switch (o->f) {
    case PUT:
      o->value = next_value++;
      if (apply) {
        *cell = o->value;
      }
      break;
    case GET:
      o->result = *cell;
      break;
    case DEL:
      if (apply) {
        *cell = MISSING;
      }
      break;
    case CAS:
      o->value = qraft_prng_chance(rng, 1, 2)
                     ? *cell
                     : qraft_prng_below(rng, 3) == 0
                           ? MISSING
                           : qraft_prng_between(rng, 1000, next_value);
      o->value_new = next_value++;
      o->result = *cell == o->value;
      if (apply && o->result) {
        *cell = o->value_new;
      }
      break;
    }
  }
  free(by_lin);
  for (size_t i = 0; gp->bound_pct > 0 && i < gp->ops_n; i++) {
    gen_op *o = &ops[i];
    if (o->status == QRAFT_LINCHECK_INFO && o->f != GET &&
        qraft_prng_below(rng, 100) < gp->bound_pct) {
      /* Sound: at or after the instant of the effect (times are scaled by
       * ops_n above), and any instant after the invocation for a write
       * that never took effect. */
      uint64_t from = o->took_effect ? o->lin : o->call;
      o->effect_by = from + qraft_prng_below(rng, 200) * gp->ops_n;
    }
  }
  return ops;
}

static qraft__lincheck_history *gen_build(const gen_op *ops, size_t ops_n) {
  /* Ops are numbered per process in time order, so feeding all
   * invocations and completions sorted by time keeps each process's
   * sequence intact (instants are distinct). */
  qraft__lincheck_history *h = hist();
  typedef struct {
    uint64_t t;
    size_t i;
    bool completion;
  } ev;
  ev *evs = calloc(2 * ops_n, sizeof(*evs));
  for (size_t i = 0; i < ops_n; i++) {
    evs[2 * i] = (ev){ops[i].call, i, false};
    evs[2 * i + 1] = (ev){ops[i].ret, i, true};
  }
  for (size_t i = 1; i < 2 * ops_n; i++) { /* insertion sort: small */
    ev e = evs[i];
    size_t j = i;
    for (; j > 0 && evs[j - 1].t > e.t; j--) {
      evs[j] = evs[j - 1];
    }
    evs[j] = e;
  }
  size_t *number = calloc(ops_n ? ops_n : 1, sizeof(*number));
  assert_non_null(number);
  for (size_t k = 0; k < 2 * ops_n; k++) {
    const gen_op *o = &ops[evs[k].i];
    if (!evs[k].completion) {
      number[evs[k].i] = qraft__lincheck_history_ops_n(h);
      inv(h, o->process, o->call, o->f, o->key, o->value, o->value_new);
    } else if (o->status == QRAFT_LINCHECK_INFO) {
      assert_int_equal(qraft__lincheck_info(h, o->process, o->ret, NULL), 0);
    } else if (o->status == QRAFT_LINCHECK_FAIL) {
      assert_int_equal(qraft__lincheck_fail(h, o->process, o->ret, NULL), 0);
    } else {
      done(h, o->process, o->ret,
           o->f == GET || o->f == CAS ? o->result : 0);
    }
  }
  free(evs);
  for (size_t i = 0; i < ops_n; i++) {
    if (ops[i].effect_by != 0) {
      assert_int_equal(
          qraft__lincheck_effect_by(h, number[i], ops[i].effect_by, NULL), 0);
    }
  }
  free(number);
  return h;
}

/* The writer of a value, if one definite op wrote it. */
static bool gen_writes(const gen_op *o, uint64_t *value) {
  if (o->status != QRAFT_LINCHECK_OK) {
    return false;
  }
  if (o->f == PUT) {
    *value = o->value;
    return true;
  }
  if (o->f == CAS && o->result) {
    *value = o->value_new;
    return true;
  }
  return false;
}

/*
 * Plants a violation that no linearization can explain, and returns the
 * key it is on: a read that sees a value overwritten (in real time) before
 * it began, or, if the history has no such pattern, a read of a value that
 * nobody wrote.
 */
static uint64_t gen_plant(qraft_prng *rng, gen_op *ops, size_t ops_n,
                          const char **kind) {
  size_t start = qraft_prng_below(rng, ops_n);
  for (size_t n = 0; n < ops_n; n++) {
    gen_op *g = &ops[(start + n) % ops_n];
    if (g->f != GET || g->status != QRAFT_LINCHECK_OK) {
      continue;
    }
    for (size_t a = 0; a < ops_n; a++) {
      uint64_t va, vb;
      if (ops[a].key != g->key || !gen_writes(&ops[a], &va) ||
          va == g->result) {
        continue;
      }
      for (size_t b = 0; b < ops_n; b++) {
        if (ops[b].key == g->key && gen_writes(&ops[b], &vb) &&
            ops[a].ret < ops[b].call && ops[b].ret < g->call) {
          g->result = va; /* stale: a's value, after b overwrote it */
          *kind = "stale read";
          return g->key;
        }
      }
    }
  }
  for (size_t n = 0; n < ops_n; n++) {
    gen_op *g = &ops[(start + n) % ops_n];
    if (g->f == GET && g->status == QRAFT_LINCHECK_OK) {
      g->result = 999; /* values written start at 1000 */
      *kind = "read of a value never written";
      return g->key;
    }
  }
  fail_msg("no definite read to plant a violation in");
  return 0;
}

static bool seed_from_env(uint64_t *seed) {
  const char *s = getenv("QRAFT_LINCHECK_SEED");
  if (!s) {
    return false;
  }
  *seed = strtoull(s, NULL, 0);
  return true;
}

static void gen_params_draw(qraft_prng *rng, gen_params *gp) {
  gp->ops_n = qraft_prng_between(rng, 20, 250);
  gp->procs = qraft_prng_between(rng, 1, 8);
  gp->keys = qraft_prng_between(rng, 1, 3);
  gp->info_pct = qraft_prng_below(rng, 15);
  gp->fail_pct = qraft_prng_below(rng, 10);
}

#define RANDOM_SEEDS 300
#define RANDOM_SEEDS_ORDER 120

/* The performance shape below took 23975 steps when written (about six
 * per operation); four times that leaves room for a change of the
 * generator without hiding a search that has gone exponential. */
#define STEPS_BOUND 100000

static qraft__lincheck_verdict want_of(bool plant) {
  return plant ? QRAFT_LINCHECK_VIOLATION : QRAFT_LINCHECK_LINEARIZABLE;
}

/* Writes the history for a look with qraft-lincheck. */
static void dump_history(const qraft__lincheck_history *h, bool plant,
                         uint64_t seed) {
  char path[64];
  snprintf(path, sizeof(path), "lincheck-%s-%" PRIu64 ".jsonl",
           plant ? "planted" : "random", seed);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(qraft__lincheck_write_jsonl(h, f, NULL), 0);
  fclose(f);
  printf("history written to %s (qraft-lincheck %s)\n", path, path);
}

static void run_random_bounded(bool plant, qraft__lincheck_order order,
                               uint64_t seeds_n, uint64_t bound_pct) {
  uint64_t first = 1, last = seeds_n;
  uint64_t only;
  const char *seeds = getenv("QRAFT_LINCHECK_SEEDS");
  if (seeds) {
    last = strtoull(seeds, NULL, 0);
  }
  if (seed_from_env(&only)) {
    first = last = only;
  }
  static const char *const order_names[] = {"auto", "greedy",
                                             "definite-first"};
  printf("lincheck random %s, %s order: seeds %" PRIu64 "..%" PRIu64
         " (replay one: QRAFT_LINCHECK_SEED=S tests/unit_sim_lincheck)\n",
         plant ? "with planted violation" : "linearizable",
         order_names[order], first, last);
  qraft__lincheck_opts opts = {.order = order};
  uint64_t steps_total = 0, steps_most = 0, seed_most = 0;
  for (uint64_t seed = first; seed <= last; seed++) {
    qraft_prng rng;
    qraft_prng_init(&rng, seed);
    gen_params gp = {0};
    gen_params_draw(&rng, &gp);
    gp.bound_pct = bound_pct;
    gen_op *ops = gen_history(&rng, &gp);
    const char *kind = "none";
    uint64_t key = 0;
    if (plant) {
      key = gen_plant(&rng, ops, gp.ops_n, &kind);
    }
    qraft__lincheck_history *h = gen_build(ops, gp.ops_n);
    qraft__lincheck_result r;
    assert_int_equal(qraft__lincheck_check(h, &opts, &r, NULL), 0);
    if (getenv("QRAFT_LINCHECK_DUMP") || r.verdict != want_of(plant) ||
        (plant && r.key != key)) {
      dump_history(h, plant, seed);
    }
    qraft__lincheck_verdict want =
        plant ? QRAFT_LINCHECK_VIOLATION : QRAFT_LINCHECK_LINEARIZABLE;
    if (r.verdict != want || (plant && r.key != key)) {
      printf("FAILED seed %" PRIu64 " (%zu ops, %" PRIu64 " processes, %" PRIu64
             " keys, planted: %s on key %" PRIu64 "): verdict %d\n",
             seed, gp.ops_n, gp.procs, gp.keys, kind, key, (int)r.verdict);
      qraft__lincheck_result_print(h, &r, stdout);
      printf("replay: QRAFT_LINCHECK_SEED=%" PRIu64
             " tests/unit_sim_lincheck\n",
             seed);
      fail();
    }
    steps_total += r.steps;
    if (r.steps > steps_most) {
      steps_most = r.steps;
      seed_most = seed;
    }
    qraft__lincheck_result_close(&r);
    qraft__lincheck_history_free(h);
    free(ops);
  }
  printf("lincheck random %s, %s order: %" PRIu64
         " steps in all, at most %" PRIu64 " (seed %" PRIu64 ")\n",
         plant ? "with planted violation" : "linearizable",
         order_names[order], steps_total, steps_most, seed_most);
}

static void run_random(bool plant, qraft__lincheck_order order,
                       uint64_t seeds_n) {
  run_random_bounded(plant, order, seeds_n, 0);
}

static void random_linearizable_histories_pass(void **st) {
  (void)st;
  run_random(false, QRAFT_LINCHECK_ORDER_AUTO, RANDOM_SEEDS);
}

static void random_histories_with_a_planted_violation_fail(void **st) {
  (void)st;
  run_random(true, QRAFT_LINCHECK_ORDER_AUTO, RANDOM_SEEDS);
}

/* Each of the two searches alone gives the same answers: the automatic
 * order rarely lets the definite-first search see a correct history, nor
 * the greedy one finish a wrong one, so they are checked apart here. */
static void each_search_order_alone_gives_the_same_verdicts(void **st) {
  (void)st;
  run_random(false, QRAFT_LINCHECK_ORDER_DEFINITE_FIRST, RANDOM_SEEDS_ORDER);
  run_random(true, QRAFT_LINCHECK_ORDER_DEFINITE_FIRST, RANDOM_SEEDS_ORDER);
  run_random(false, QRAFT_LINCHECK_ORDER_GREEDY, RANDOM_SEEDS_ORDER);
  run_random(true, QRAFT_LINCHECK_ORDER_GREEDY, RANDOM_SEEDS_ORDER);
}

/* Sound bounds on the info writes keep correct histories correct and
 * planted violations violations, in either search order. */
static void random_histories_with_bounded_info_writes(void **st) {
  (void)st;
  run_random_bounded(false, QRAFT_LINCHECK_ORDER_AUTO, RANDOM_SEEDS, 80);
  run_random_bounded(true, QRAFT_LINCHECK_ORDER_AUTO, RANDOM_SEEDS, 80);
  run_random_bounded(false, QRAFT_LINCHECK_ORDER_DEFINITE_FIRST,
                     RANDOM_SEEDS_ORDER, 80);
  run_random_bounded(true, QRAFT_LINCHECK_ORDER_DEFINITE_FIRST,
                     RANDOM_SEEDS_ORDER, 80);
  run_random_bounded(false, QRAFT_LINCHECK_ORDER_GREEDY, RANDOM_SEEDS_ORDER,
                     80);
  run_random_bounded(true, QRAFT_LINCHECK_ORDER_GREEDY, RANDOM_SEEDS_ORDER,
                     80);
}

/* A few thousand operations on a few keys with up to ten processes: the
 * step count (not the wall clock) is the bound, so it holds on any
 * machine and under any sanitizer. */
static void large_history_checks_within_a_bounded_number_of_steps(
    void **st) {
  (void)st;
  qraft_prng rng;
  qraft_prng_init(&rng, 20261126);
  gen_params gp = {.ops_n = 4000, .procs = 10, .keys = 3, .info_pct = 3,
                   .fail_pct = 2};
  gen_op *ops = gen_history(&rng, &gp);
  qraft__lincheck_history *h = gen_build(ops, gp.ops_n);
  qraft__lincheck_result r;
  assert_int_equal(qraft__lincheck_check(h, NULL, &r, NULL), 0);
  printf("lincheck performance: %zu ops, %" PRIu64 " processes, %" PRIu64
         " keys: verdict %d, %" PRIu64 " steps, largest memo %" PRIu64 "\n",
         gp.ops_n, gp.procs, gp.keys, (int)r.verdict, r.steps,
         r.cache_entries_max);
  assert_int_equal(r.verdict, QRAFT_LINCHECK_LINEARIZABLE);
  assert_true(r.steps < STEPS_BOUND);
  qraft__lincheck_result_close(&r);
  qraft__lincheck_history_free(h);
  free(ops);
}

/* ------------------------------------------------------------------ JSON */

static char *write_text(const qraft__lincheck_history *h) {
  char *text = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&text, &n);
  assert_non_null(f);
  assert_int_equal(qraft__lincheck_write_jsonl(h, f, NULL), 0);
  fclose(f);
  return text;
}

static qraft__lincheck_history *load_text(const char *text, int want_rc,
                                          qraft_err *err) {
  qraft__lincheck_history *h = hist();
  FILE *f = fmemopen((void *)text, strlen(text), "r");
  assert_non_null(f);
  assert_int_equal(qraft__lincheck_load_jsonl(h, f, err), want_rc);
  fclose(f);
  return h;
}

static void assert_same_ops(const qraft__lincheck_history *a,
                            const qraft__lincheck_history *b) {
  assert_int_equal(qraft__lincheck_history_ops_n(a),
                   qraft__lincheck_history_ops_n(b));
  for (size_t i = 0; i < qraft__lincheck_history_ops_n(a); i++) {
    const qraft__lincheck_op *x = qraft__lincheck_history_op(a, i);
    const qraft__lincheck_op *y = qraft__lincheck_history_op(b, i);
    assert_int_equal(x->process, y->process);
    assert_int_equal(x->f, y->f);
    assert_int_equal(x->key, y->key);
    assert_int_equal(x->value, y->value);
    assert_int_equal(x->value_new, y->value_new);
    assert_int_equal(x->call_ns, y->call_ns);
    assert_int_equal(x->status, y->status);
    if (x->status != QRAFT_LINCHECK_PENDING) {
      assert_int_equal(x->ret_ns, y->ret_ns);
    }
    assert_int_equal(x->out, y->out);
    assert_int_equal(x->cas_swapped, y->cas_swapped);
    assert_int_equal(x->effect_by_ns, y->effect_by_ns);
  }
}

static const char history_text[] =
    "{\"process\":1,\"type\":\"invoke\",\"f\":\"put\",\"key\":\"x\","
    "\"value\":\"a\",\"time\":100}\n"
    "{\"process\":\"c2\",\"type\":\"invoke\",\"f\":\"get\",\"key\":\"x\","
    "\"time\":150}\n"
    "\n"
    "{\"process\":\"c2\",\"type\":\"ok\",\"f\":\"get\",\"key\":\"x\","
    "\"value\":null,\"time\":160}\n"
    "{\"process\":1,\"type\":\"ok\",\"f\":\"put\",\"key\":\"x\","
    "\"value\":\"a\",\"time\":200}\n"
    "{\"process\":1,\"type\":\"invoke\",\"f\":\"cas\",\"key\":\"x\","
    "\"value\":[\"a\",\"b\\\"q\"],\"time\":300}\n"
    "{\"process\":3,\"type\":\"invoke\",\"f\":\"cas\",\"key\":\"x\","
    "\"value\":[\"a\",7],\"time\":310}\n"
    "{\"process\":1,\"type\":\"ok\",\"f\":\"cas\",\"key\":\"x\","
    "\"value\":[\"a\",\"b\\\"q\"],\"result\":\"ok\",\"time\":400}\n"
    "{\"process\":3,\"type\":\"ok\",\"f\":\"cas\",\"key\":\"x\","
    "\"value\":[\"a\",7],\"result\":\"failed\",\"time\":410}\n"
    "{\"process\":4,\"type\":\"invoke\",\"f\":\"put\",\"key\":2,"
    "\"value\":\"7\",\"time\":420}\n"
    "{\"process\":4,\"type\":\"info\",\"effect_by\":950,\"time\":900}\n"
    "{\"process\":5,\"type\":\"invoke\",\"f\":\"del\",\"key\":\"x\","
    "\"value\":null,\"time\":1000}\n"
    "{\"process\":5,\"type\":\"fail\",\"f\":\"del\",\"time\":1100}\n"
    "{\"process\":5,\"type\":\"invoke\",\"f\":\"get\",\"key\":2,"
    "\"time\":1200}\n"
    "{\"process\":5,\"type\":\"ok\",\"f\":\"get\",\"key\":2,"
    "\"value\":\"7\",\"time\":1300}\n"
    "{\"process\":6,\"type\":\"invoke\",\"f\":\"put\",\"key\":2,"
    "\"value\":7,\"time\":1400}\n";

static void json_round_trip_keeps_every_operation(void **st) {
  (void)st;
  qraft__lincheck_history *h1 = load_text(history_text, 0, NULL);
  assert_int_equal(qraft__lincheck_history_ops_n(h1), 8);
  /* Strings and numbers are different values: "7" and 7. */
  const qraft__lincheck_op *put_str = qraft__lincheck_history_op(h1, 4);
  const qraft__lincheck_op *put_num = qraft__lincheck_history_op(h1, 7);
  assert_int_not_equal(put_str->value, put_num->value);
  assert_string_equal(
      qraft__lincheck_name(h1, QRAFT_LINCHECK_KIND_VALUE, put_num->value),
      "7");
  assert_int_equal(put_num->status, QRAFT_LINCHECK_PENDING);
  assert_int_equal(qraft__lincheck_history_op(h1, 4)->status,
                   QRAFT_LINCHECK_INFO);
  assert_int_equal(qraft__lincheck_history_op(h1, 4)->effect_by_ns, 950);
  assert_int_equal(qraft__lincheck_history_op(h1, 3)->cas_swapped, false);
  assert_linearizable(h1);

  char *text1 = write_text(h1);
  qraft__lincheck_history *h2 = load_text(text1, 0, NULL);
  assert_same_ops(h1, h2);
  char *text2 = write_text(h2);
  assert_string_equal(text1, text2);

  /* A history built with bare ids is written with integers, and reads back
   * as the same operations under the names it was written with. */
  qraft__lincheck_history *h3 = hist();
  put(h3, 11, 5, 100, 0, 10);
  cas(h3, 12, 5, 100, 101, false, 5, 20);
  info(h3, 13, DEL, 5, 0, 0, 6, 30);
  get(h3, 11, 6, MISSING, 40, 50);
  char *text3 = write_text(h3);
  qraft__lincheck_history *h4 = load_text(text3, 0, NULL);
  assert_int_equal(qraft__lincheck_history_ops_n(h4), 4);
  for (size_t i = 0; i < 4; i++) {
    const qraft__lincheck_op *x = qraft__lincheck_history_op(h3, i);
    const qraft__lincheck_op *y = qraft__lincheck_history_op(h4, i);
#define NAME_NUM(kind, id)                                                     \
  ((id) == 0 ? 0                                                               \
             : strtoull(qraft__lincheck_name(h4, kind, (id)), NULL, 10))
    assert_int_equal(NAME_NUM(QRAFT_LINCHECK_KIND_PROCESS, y->process),
                     x->process);
    assert_int_equal(NAME_NUM(QRAFT_LINCHECK_KIND_KEY, y->key), x->key);
    assert_int_equal(NAME_NUM(QRAFT_LINCHECK_KIND_VALUE, y->value), x->value);
    assert_int_equal(NAME_NUM(QRAFT_LINCHECK_KIND_VALUE, y->value_new),
                     x->value_new);
#undef NAME_NUM
    assert_int_equal(x->status, y->status);
    assert_int_equal(x->call_ns, y->call_ns);
    assert_int_equal(x->ret_ns, y->ret_ns);
    assert_int_equal(x->cas_swapped, y->cas_swapped);
  }
  free(text1);
  free(text2);
  free(text3);
  qraft__lincheck_history_free(h1);
  qraft__lincheck_history_free(h2);
  qraft__lincheck_history_free(h3);
  qraft__lincheck_history_free(h4);
}

static void json_errors_name_the_line_and_the_problem(void **st) {
  (void)st;
  static const struct {
    const char *text;
    const char *want;
  } cases[] = {
      {"{\"process\":1,\"type\":\"invoke\",\"f\":\"put\",\"key\":1,"
       "\"value\":1,\"time\":1}\n{oops\n",
       "line 2"},
      {"[1,2]\n", "not a JSON object"},
      {"{\"process\":1,\"type\":\"invoke\",\"f\":\"inc\",\"key\":1,"
       "\"time\":1}\n",
       "\"f\" must be"},
      {"{\"process\":1,\"type\":\"ok\",\"f\":\"put\",\"key\":1,\"time\":1}\n",
       "no pending invocation"},
      {"{\"process\":1,\"type\":\"invoke\",\"f\":\"put\",\"key\":1,"
       "\"value\":1,\"time\":-4}\n",
       "\"time\""},
      {"{\"process\":1,\"type\":\"invoke\",\"f\":\"cas\",\"key\":1,"
       "\"value\":1,\"time\":4}\n",
       "[expected, new]"},
      {"{\"process\":1,\"type\":\"invoke\",\"f\":\"get\",\"key\":1,"
       "\"time\":4}\n"
       "{\"process\":1,\"type\":\"ok\",\"f\":\"put\",\"key\":1,\"time\":5}\n",
       "not the invoked operation"},
      {"{\"process\":1,\"type\":\"invoke\",\"f\":\"put\",\"key\":1,"
       "\"value\":1,\"time\":4}\n"
       "{\"process\":1,\"type\":\"info\",\"effect_by\":3,\"time\":5}\n",
       "before its invocation"},
      {"{\"process\":1,\"type\":\"invoke\",\"f\":\"get\",\"key\":1,"
       "\"time\":4}\n"
       "{\"process\":1,\"type\":\"info\",\"effect_by\":9,\"time\":5}\n",
       "\"effect_by\" must be"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    qraft_err err;
    qraft_err_init(&err, 0);
    qraft__lincheck_history *h = load_text(cases[i].text, QRAFT_EMALFORMED,
                                           &err);
    char msg[512];
    qraft_err_format(&err, msg, sizeof(msg));
    if (!strstr(msg, cases[i].want)) {
      fail_msg("case %zu: '%s' does not say '%s'", i, msg, cases[i].want);
    }
    qraft__lincheck_history_free(h);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(empty_and_sequential_histories_are_linearizable),
      cmocka_unit_test(stale_read_is_a_violation_that_names_the_read),
      cmocka_unit_test(acknowledged_write_that_is_lost_is_a_violation),
      cmocka_unit_test(two_cas_from_the_same_value_cannot_both_succeed),
      cmocka_unit_test(cas_results_must_match_the_value),
      cmocka_unit_test(concurrent_operations_may_take_either_order),
      cmocka_unit_test(reads_flipping_back_between_two_writes_is_a_violation),
      cmocka_unit_test(equal_times_count_as_concurrent),
      cmocka_unit_test(delete_makes_the_key_missing),
      cmocka_unit_test(info_write_may_have_happened),
      cmocka_unit_test(info_write_may_not_have_happened),
      cmocka_unit_test(
          info_write_takes_effect_once_and_not_before_invocation),
      cmocka_unit_test(info_cas_happens_only_if_it_could_have_swapped),
      cmocka_unit_test(info_write_bound_rules_out_later_effects),
      cmocka_unit_test(info_reads_are_ignored),
      cmocka_unit_test(failed_operations_did_not_happen),
      cmocka_unit_test(pending_operations_count_as_info),
      cmocka_unit_test(
          keys_are_checked_apart_and_the_violation_names_its_key),
      cmocka_unit_test(exhausted_budget_is_unknown_never_linearizable),
      cmocka_unit_test(memo_out_on_one_key_still_checks_the_others),
      cmocka_unit_test(builder_rejects_malformed_sequences),
      cmocka_unit_test(random_linearizable_histories_pass),
      cmocka_unit_test(random_histories_with_a_planted_violation_fail),
      cmocka_unit_test(each_search_order_alone_gives_the_same_verdicts),
      cmocka_unit_test(random_histories_with_bounded_info_writes),
      cmocka_unit_test(large_history_checks_within_a_bounded_number_of_steps),
      cmocka_unit_test(json_round_trip_keeps_every_operation),
      cmocka_unit_test(json_errors_name_the_line_and_the_problem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

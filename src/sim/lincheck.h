/*
 * lincheck.h: a linearizability checker for key-value histories.
 *
 * The simulator's clients and the end-to-end tests record every operation
 * they send to a cluster as an invocation and a completion; this module
 * decides whether some total order of those operations, consistent with
 * real time, explains every result under a sequential key-value store.
 *
 * The model, per key: a value (uint64, 0 means "missing"), with
 *   put(v)          sets the value to v (v != 0)
 *   get() -> v      returns the value (0: missing)
 *   cas(e, n) -> ok sets the value to n if it is e, and says whether it did
 *   del()           sets the value to 0
 * Keys are independent, so the history is split per key and each part is
 * checked alone (P-compositionality, Herlihy and Wing 1990). Each part is
 * checked with the Wing-Gong-Lowe depth-first search, memoizing the pairs
 * (set of linearized operations, model state) already explored, the way
 * Porcupine (Athalye) does it, and, when that takes long on a key with
 * operations of unknown outcome, again in an order and with a memo made
 * for those. docs/lincheck.md explains the details.
 *
 * Completions:
 *   ok    a definite result; a cas that found another value is a definite
 *         result too ("failed"), and must be explained like any other.
 *   info  the outcome is unknown (a timeout): the operation may or may not
 *         have taken effect, at any time after its invocation. An info get
 *         says nothing and is ignored.
 *   fail  the operation definitely did not take effect: it is ignored.
 * An operation still pending when the history ends counts as info.
 *
 * Real time: operation A precedes B if A completed strictly before B was
 * invoked. Equal times count as concurrent.
 *
 * This module does no I/O except the explicit print functions, keeps no
 * global state, and is not thread-safe per history (distinct histories may
 * be used on distinct threads). The JSON-lines loader and writer are in
 * lincheck_json.c, declared at the end of this header.
 */
#ifndef QRAFT_SIM_LINCHECK_H
#define QRAFT_SIM_LINCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <qraft/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The operations of the model. */
typedef enum qraft__lincheck_f {
  QRAFT_LINCHECK_PUT = 1,
  QRAFT_LINCHECK_GET = 2,
  QRAFT_LINCHECK_CAS = 3,
  QRAFT_LINCHECK_DEL = 4,
} qraft__lincheck_f;

/* What became of an operation. */
typedef enum qraft__lincheck_status {
  QRAFT_LINCHECK_PENDING = 0, /* invoked, no completion (yet) */
  QRAFT_LINCHECK_OK = 1,      /* definite result */
  QRAFT_LINCHECK_INFO = 2,    /* unknown outcome */
  QRAFT_LINCHECK_FAIL = 3,    /* definitely did not happen */
} qraft__lincheck_status;

/* Value 0 is "missing" (a get of an absent key). */
#define QRAFT_LINCHECK_MISSING 0

/* One operation, as recorded. */
typedef struct qraft__lincheck_op {
  uint64_t process;
  qraft__lincheck_f f;
  uint64_t key;
  uint64_t value;     /* put: the value written; cas: the expected value */
  uint64_t value_new; /* cas: the new value; otherwise 0 */
  uint64_t call_ns;   /* invocation time */
  uint64_t ret_ns;    /* completion time (ok, info or fail); 0 if pending */
  qraft__lincheck_status status;
  uint64_t out;       /* ok get: the value read (0: missing) */
  bool cas_swapped;   /* ok cas: true if it swapped, false if it "failed" */
  /* info put, cas or del: if it took effect at all, it did so by this time
   * (0: no bound known). See qraft__lincheck_effect_by. */
  uint64_t effect_by_ns;
} qraft__lincheck_op;

/* Name tables the JSON loader fills, so that ids print as they were read. */
typedef enum qraft__lincheck_kind {
  QRAFT_LINCHECK_KIND_PROCESS = 0,
  QRAFT_LINCHECK_KIND_KEY = 1,
  QRAFT_LINCHECK_KIND_VALUE = 2,
  QRAFT_LINCHECK_KINDS = 3,
} qraft__lincheck_kind;

typedef struct qraft__lincheck_history qraft__lincheck_history;

/* ---------------------------------------------------------------- builder */

/*
 * Allocates an empty history into *out. The caller owns it and frees it
 * with qraft__lincheck_history_free.
 * Returns 0 on success, or one of these negative codes: -ENOMEM.
 */
int qraft__lincheck_history_new(qraft__lincheck_history **out);

/* Frees `h` and everything it owns (NULL is fine). Pointers returned by
 * the accessors below are invalid afterwards. */
void qraft__lincheck_history_free(qraft__lincheck_history *h);

/*
 * Records the invocation of an operation by `process` at `time_ns`.
 * `value` is the value put (must not be 0) or the value a cas expects;
 * `value_new` is the value a cas writes (must not be 0). For get and del
 * both must be 0. A process has at most one pending operation.
 * Operations are numbered 0, 1, ... in the order of their invocations; that
 * number is what the accessors and the result use.
 * Returns 0 on success, or one of these negative codes: QRAFT_EMALFORMED
 * (the process has a pending operation, or bad arguments; `err` says
 * which), -ENOMEM.
 */
int qraft__lincheck_invoke(qraft__lincheck_history *h, uint64_t process,
                           uint64_t time_ns, qraft__lincheck_f f, uint64_t key,
                           uint64_t value, uint64_t value_new, qraft_err *err);

/*
 * Records the definite completion of the pending operation of `process` at
 * `time_ns` (not before its invocation). `result` is, for a get, the value
 * read (0: missing); for a cas, 1 if it swapped and 0 if it found another
 * value; for put and del it must be 0.
 * Returns 0 on success, or one of these negative codes: QRAFT_EMALFORMED
 * (no pending operation, time before the invocation, bad result).
 */
int qraft__lincheck_complete(qraft__lincheck_history *h, uint64_t process,
                             uint64_t time_ns, uint64_t result,
                             qraft_err *err);

/* Records that the pending operation of `process` ended with an unknown
 * outcome (info). Same return codes as qraft__lincheck_complete. */
int qraft__lincheck_info(qraft__lincheck_history *h, uint64_t process,
                         uint64_t time_ns, qraft_err *err);

/* Records that the pending operation of `process` definitely did not take
 * effect (fail). Same return codes as qraft__lincheck_complete. */
int qraft__lincheck_fail(qraft__lincheck_history *h, uint64_t process,
                         uint64_t time_ns, qraft_err *err);

/*
 * Records that operation `op`, which ended with an unknown outcome (info),
 * took effect, if it ever did, by `time_ns` (not before its invocation). A
 * client that knows more than "it timed out" says so here, and the checker
 * then treats the operation as one that overlaps only the operations
 * invoked by that time, not everything after it. The simulator's clients
 * know it from their sessions: the state machine applies a client's
 * writes in sequence order and skips any with a lower sequence number than
 * one already applied (thesis 6.3), so once a later write of the same
 * client is known to have been applied (it completed), an earlier write
 * that timed out can no longer take effect. A later bound replaces an
 * earlier one only if it is earlier.
 * Returns 0 on success, or one of these negative codes: QRAFT_EMALFORMED
 * (no such operation, not an info write, or a time before its
 * invocation).
 */
int qraft__lincheck_effect_by(qraft__lincheck_history *h, size_t op,
                              uint64_t time_ns, qraft_err *err);

/* The number of the pending operation of `process` into *op.
 * Returns 0 on success, or QRAFT_EMALFORMED if it has none. */
int qraft__lincheck_pending_op(const qraft__lincheck_history *h,
                               uint64_t process, size_t *op);

/* Number of operations recorded. */
size_t qraft__lincheck_history_ops_n(const qraft__lincheck_history *h);

/* Operation `i` (< ops_n). The pointer stays valid until the next call
 * that records an operation, or until the history is freed. */
const qraft__lincheck_op *
qraft__lincheck_history_op(const qraft__lincheck_history *h, size_t i);

/*
 * Interns `text` (a NUL-terminated string, copied) as an id of `kind` and
 * stores the id in *id: the same text gives the same id, ids start at 1 and
 * follow the order of first appearance. Used by the JSON loader, whose
 * texts are the compact JSON encodings of the values it read.
 * Returns 0 on success, or one of these negative codes: -ENOMEM.
 */
int qraft__lincheck_intern(qraft__lincheck_history *h,
                           qraft__lincheck_kind kind, const char *text,
                           uint64_t *id);

/* The text interned as `id` of `kind`, or NULL if there is none (ids given
 * straight to the builder have none). Valid until the history is freed. */
const char *qraft__lincheck_name(const qraft__lincheck_history *h,
                                 qraft__lincheck_kind kind, uint64_t id);

/* Writes a one-line description of operation `i` to `f`, for example
 *   #12 process 3 cas "k" "a" -> "b": failed [1500, 2200]
 * using interned names where there are some. */
void qraft__lincheck_op_print(const qraft__lincheck_history *h, size_t i,
                              FILE *f);

/* ------------------------------------------------------------------ check */

typedef enum qraft__lincheck_verdict {
  QRAFT_LINCHECK_LINEARIZABLE = 0, /* every key has a linearization */
  QRAFT_LINCHECK_VIOLATION = 1,    /* some key has none */
  QRAFT_LINCHECK_UNKNOWN = 2,      /* the budget ran out first */
} qraft__lincheck_verdict;

/* Default step budget when opts->steps_max is 0. */
#define QRAFT_LINCHECK_STEPS_DEFAULT 50000000ULL
/* Default memo size limit when opts->memo_bytes_max is 0: 1 GiB. */
#define QRAFT_LINCHECK_MEMO_BYTES_DEFAULT (1ULL << 30)

/* Which limit ended a search whose verdict is UNKNOWN. */
typedef enum qraft__lincheck_limit {
  QRAFT_LINCHECK_LIMIT_NONE = 0,
  QRAFT_LINCHECK_LIMIT_STEPS = 1,
  QRAFT_LINCHECK_LIMIT_TIME = 2,
  QRAFT_LINCHECK_LIMIT_MEMO = 3,
} qraft__lincheck_limit;

/* The order in which the search tries candidates (docs/lincheck.md). */
typedef enum qraft__lincheck_order {
  /* Greedy with a quota, then definite-first: what callers want. */
  QRAFT_LINCHECK_ORDER_AUTO = 0,
  /* Only Wing and Gong's list order, with the plain memo. */
  QRAFT_LINCHECK_ORDER_GREEDY = 1,
  /* Only definite operations first, with the covering memo. */
  QRAFT_LINCHECK_ORDER_DEFINITE_FIRST = 2,
} qraft__lincheck_order;

typedef struct qraft__lincheck_opts {
  /* Search steps allowed over the whole check (one step: one attempt to
   * linearize an operation, or one backtrack). 0: the default above. */
  uint64_t steps_max;
  /* Wall-clock budget in milliseconds, 0 for none. With it the verdict of
   * a hard history may depend on the machine; the simulator leaves it 0. */
  uint64_t time_max_ms;
  /* Bytes the memo of one key may use (table and bitsets). 0: the default
   * above. */
  uint64_t memo_bytes_max;
  /* AUTO (0) unless comparing the two searches, as the tests do. */
  qraft__lincheck_order order;
} qraft__lincheck_opts;

typedef struct qraft__lincheck_result {
  qraft__lincheck_verdict verdict;
  qraft__lincheck_limit limit; /* unknown: which limit was hit */
  uint64_t steps;      /* search steps taken, over all keys */
  uint64_t keys_n;     /* keys in the history */
  uint64_t keys_checked; /* keys whose search finished */
  uint64_t ops_checked;  /* operations that took part (not fail, not info
                          * get) */
  uint64_t cache_entries_max; /* largest memo table of any key */
  /* Violation: the key that has no linearization (a violation on any key
   * wins over unknown on another: a key whose memo ran out does not stop
   * the keys after it from being checked). Unknown: the first key whose
   * search ran out of budget. */
  uint64_t key;
  /* Violation only: the longest prefix that the search could linearize
   * (operation numbers, in linearization order; owned by the result), the
   * model value after it, and the operation that could not be placed next:
   * it completed, so it had to be linearized before any operation still
   * left, and no order of the candidates allowed it. */
  size_t *prefix;
  size_t prefix_n;
  uint64_t prefix_value;
  size_t blocked;
} qraft__lincheck_result;

/*
 * Checks `h` and fills *result (the caller owns it; release it with
 * qraft__lincheck_result_close). `opts` may be NULL for the defaults. The
 * verdict is never LINEARIZABLE unless the search finished on every key.
 * The history is not changed and may be checked again.
 * Returns 0 on success (whatever the verdict), or one of these negative
 * codes: -ENOMEM.
 */
int qraft__lincheck_check(const qraft__lincheck_history *h,
                          const qraft__lincheck_opts *opts,
                          qraft__lincheck_result *result, qraft_err *err);

/* Frees what *result owns; it may be closed twice. */
void qraft__lincheck_result_close(qraft__lincheck_result *result);

/* Writes the verdict and, for a violation, the explanation (key, prefix,
 * value after it, the operation that could not be placed) to `f`. */
void qraft__lincheck_result_print(const qraft__lincheck_history *h,
                                  const qraft__lincheck_result *result,
                                  FILE *f);

/* ------------------------------------------- JSON lines (lincheck_json.c) */

/*
 * Reads a history in the JSON-lines format of docs/lincheck.md from `f`
 * and appends its events to `h` (normally empty). Keys, values and
 * processes are interned (qraft__lincheck_intern) by their compact JSON
 * text, so "a", 7 and "7" are three different values. Blank lines are
 * skipped.
 * Returns 0 on success, or one of these negative codes: QRAFT_EMALFORMED
 * (`err` names the line and the problem), -EIO, -ENOMEM.
 */
int qraft__lincheck_load_jsonl(qraft__lincheck_history *h, FILE *f,
                               qraft_err *err);

/* Opens `path` and loads it as above. Also returns -errno of fopen. */
int qraft__lincheck_load_jsonl_path(qraft__lincheck_history *h,
                                    const char *path, qraft_err *err);

/*
 * Writes `h` to `f` in the same format: one line per event (invocation and
 * completion), in time order (at equal times by operation number, an
 * invocation before its own completion). Ids with an interned name are written as that JSON
 * text, others as integers. Loading the output gives the same operations.
 * Returns 0 on success, or one of these negative codes: -EIO, -ENOMEM.
 */
int qraft__lincheck_write_jsonl(const qraft__lincheck_history *h, FILE *f,
                                qraft_err *err);

#ifdef __cplusplus
}
#endif
#endif

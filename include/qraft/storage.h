/*
 * qraft/storage.h: where a node keeps its Raft log, hard state,
 * configuration and snapshot.
 *
 * A store is a `qraft_storage`: a table of functions (`qraft_storage_ops`)
 * behind a handle, so that backends are interchangeable. qraft ships two:
 *
 *   - the write-ahead log (qraft_storage_wal_open), the default: a directory
 *     of preallocated segment files written by one writer thread with one
 *     sync per batch (group commit), snapshot files beside it;
 *   - an in-memory store (qraft_storage_mem_new) for tests and simulation.
 *
 * A simulated disk implements the same table.
 *
 * The read side follows raft-rs's `Storage`: initial state, entries in
 * [lo, hi) with a byte cap, term at an index, first and last index, the
 * current snapshot. The write side takes batches (`qraft_storage_write`):
 * install a snapshot, append entries (truncating a conflicting suffix), set
 * the configuration, save the hard state, compact the log. A write is
 * acknowledged asynchronously, once durable, by its callback.
 *
 * The log. Entries first_index..last_index are present (none when
 * last_index == first_index - 1). The term of entry first_index - 1 is also
 * known (the "previous term": that of the snapshot or of the last compacted
 * entry), so term(first_index - 1) answers; a fresh store has first_index 1,
 * last_index 0 and previous term 0.
 *
 * Threads. A store belongs to one thread at a time, its owner (a node's loop
 * thread): every function below except where stated must be called from it,
 * never concurrently. Write callbacks run on the owner, inside
 * qraft_storage_poll. A backend may use threads of its own (the WAL has a
 * writer and a segment preparer); they never call user code.
 *
 * Event loops. qraft_storage_fd returns a file descriptor that becomes
 * readable when completed writes wait for qraft_storage_poll (an eventfd;
 * with libuv, watch it with uv_poll_t and call qraft_storage_poll on
 * UV_READABLE). It returns -1 when the backend completes writes without
 * other threads (the in-memory store): then call qraft_storage_poll after
 * submitting, or whenever convenient. qraft_storage_wait blocks until a
 * completion is pending, for programs without a loop.
 *
 * Reads see every write whose callback has run; they may or may not see
 * writes submitted and not yet acknowledged.
 */
#ifndef QRAFT_STORAGE_H
#define QRAFT_STORAGE_H

#include <qraft/error.h>
#include <qraft/types.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qraft_storage qraft_storage;
typedef struct qraft_storage_ops qraft_storage_ops;
typedef struct qraft_storage_write qraft_storage_write;
typedef struct qraft_snapshot_writer qraft_snapshot_writer;
typedef struct qraft_snapshot_reader qraft_snapshot_reader;

/* Most entries in one write. */
#define QRAFT_STORAGE_WRITE_ENTRIES_MAX 65536u
/* Most entries the log may hold (last_index - first_index + 1); compact
 * before. A write that would exceed it is refused with QRAFT_ELIMIT. */
#define QRAFT_STORAGE_LOG_ENTRIES_MAX (1u << 24)
/* Most writes submitted and not yet completed (their callbacks not yet
 * run); one more is refused with QRAFT_EBUSY. */
#define QRAFT_STORAGE_PENDING_MAX 4096u

/* What a store holds, as read back on open (raft-rs's RaftState plus the
 * log bounds and the snapshot metadata). */
typedef struct qraft_storage_state {
  qraft_hard_state hard_state;
  /* The latest configuration: from the last conf_state write or the last
   * snapshot installed, whichever came later. */
  qraft_conf_state conf_state;
  /* The current snapshot; index 0 and term 0 when there is none. */
  qraft_snapshot_meta snapshot;
  uint64_t first_index;
  uint64_t last_index;
  uint64_t prev_term; /* term of entry first_index - 1 */
} qraft_storage_state;

/* Called on the owner thread, inside qraft_storage_poll, when write `w` is
 * durable (status 0) or failed (status < 0, see qraft_storage_submit). The
 * write and everything it points to belong to the caller again, and its
 * `snapshot` is NULL. The callback may submit more writes; it must not
 * block, poll or close the store. */
typedef void (*qraft_storage_write_cb)(qraft_storage_write *w, int status);

/*
 * One batch of changes, applied atomically and in this order: snapshot,
 * entries, conf_state, hard_state, compaction. After a crash a store holds
 * either all of a write or none of it, and writes are durable in the order
 * they were submitted.
 *
 * The caller allocates the write and fills the fields it wants (zero the
 * rest); the write and everything it points to (entries and their bytes,
 * hard and conf state) must stay valid and unchanged until the callback.
 */
struct qraft_storage_write {
  /* Install this snapshot (from qraft_storage_snapshot_writer_open, with all
   * its data written). Entries up to the snapshot's index are dropped; the
   * entries after it are kept only if the log holds an entry at the
   * snapshot's index with the snapshot's term (Raft paper, figure 13,
   * InstallSnapshot receiver steps 6 and 7); otherwise the log is emptied
   * and restarts at index + 1. The configuration becomes the snapshot's.
   * Ownership of the writer passes to the store when submit returns 0,
   * whatever the outcome; on a submit error the caller keeps it. The old
   * snapshot is removed once the new one is durable. NULL: none. */
  qraft_snapshot_writer *snapshot;
  /* Entries with consecutive indexes, entries[0].index in
   * [first_index, last_index + 1] (after the snapshot, if any). Entries at
   * and after entries[0].index are replaced (the conflicting suffix is
   * truncated, Raft paper figure 2, AppendEntries receiver step 3). */
  const qraft_entry *entries;
  size_t entries_n;
  const qraft_conf_state *conf_state; /* NULL: unchanged */
  const qraft_hard_state *hard_state; /* NULL: unchanged */
  /* Drop entries before compact_index (raft-rs's compact): first_index
   * becomes compact_index, which must be in (first_index, last_index + 1].
   * 0: no compaction. */
  uint64_t compact_index;

  qraft_storage_write_cb cb;
  void *data; /* for the caller */

  /* Private to the backend. */
  qraft_storage_write *next_;
  int status_;
  uint64_t epoch_;
  uint64_t bytes_;
};

/* Each backend implements these; the qraft_storage_* wrappers below
 * document them. */
struct qraft_storage_ops {
  const char *name;
  int (*state)(qraft_storage *s, qraft_storage_state *out, qraft_err *err);
  int (*entries)(qraft_storage *s, uint64_t lo, uint64_t hi, uint64_t bytes_max,
                 qraft_entry *out, size_t out_cap, size_t *out_n,
                 qraft_err *err);
  int (*term)(qraft_storage *s, uint64_t index, uint64_t *out, qraft_err *err);
  int (*snapshot_reader_open)(qraft_storage *s, qraft_snapshot_reader **out,
                              qraft_err *err);
  int (*snapshot_writer_open)(qraft_storage *s, const qraft_snapshot_meta *meta,
                              qraft_snapshot_writer **out, qraft_err *err);
  int (*submit)(qraft_storage *s, qraft_storage_write *w, qraft_err *err);
  int (*poll)(qraft_storage *s);
  int (*fd)(qraft_storage *s);
  int (*wait)(qraft_storage *s, int timeout_ms);
  void (*close)(qraft_storage *s);
};

struct qraft_storage {
  const qraft_storage_ops *ops;
};

/* The ops of snapshot readers and writers, one table per backend. */
typedef struct qraft_snapshot_writer_ops {
  int (*write)(qraft_snapshot_writer *w, const void *data, size_t len,
               qraft_err *err);
  void (*abort)(qraft_snapshot_writer *w);
} qraft_snapshot_writer_ops;

struct qraft_snapshot_writer {
  const qraft_snapshot_writer_ops *ops;
  qraft_snapshot_meta meta;
  uint64_t bytes; /* written so far */
};

typedef struct qraft_snapshot_reader_ops {
  int (*read)(qraft_snapshot_reader *r, void *buf, size_t cap, size_t *out_n,
              qraft_err *err);
  void (*close)(qraft_snapshot_reader *r);
} qraft_snapshot_reader_ops;

struct qraft_snapshot_reader {
  const qraft_snapshot_reader_ops *ops;
  qraft_snapshot_meta meta;
  uint64_t bytes; /* total length of the snapshot's data */
};

/* ---- Backends ---------------------------------------------------------- */

/* Creates an empty in-memory store (first_index 1, last_index 0). Writes
 * complete when qraft_storage_poll is next called; the store has no threads
 * and no file descriptor. Close with qraft_storage_close.
 * Returns 0 on success, or one of these negative codes: -ENOMEM. */
int qraft_storage_mem_new(qraft_storage **out);

typedef struct qraft_wal_config {
  /* Size of each segment file, preallocated and written through with zeros
   * before use. One write must fit in a segment. 0: 8 MiB. At least 64 KiB. */
  uint64_t segment_bytes;
  /* Most bytes of records written (and synced) as one group commit.
   * 0: 4 MiB. */
  uint64_t batch_bytes_max;
  /* Snapshot chunk size. 0: 1 MiB. */
  uint32_t snapshot_chunk_bytes;
} qraft_wal_config;

/*
 * Opens (creating it if needed) the write-ahead-log store in directory
 * `dir`, which it locks against other processes and other opens, and
 * recovers it: reads every segment, checks every record, drops a torn tail
 * (an incomplete last batch), removes files left over from an interrupted
 * operation. `config` may be NULL for the defaults; it is copied.
 *
 * Returns 0 on success, or one of these negative codes: QRAFT_ELOCKED
 * (another open holds the directory), QRAFT_ECORRUPT (a bad record that is
 * not at the tail, a bad segment or snapshot header; `err` names the file,
 * offset and index), QRAFT_EVERSION (a file of an unknown format version),
 * QRAFT_ECONFIG (bad config), -ENOMEM, or -errno from the file system.
 */
int qraft_storage_wal_open(const char *dir, const qraft_wal_config *config,
                           qraft_storage **out, qraft_err *err);

/* ---- The interface ----------------------------------------------------- */

/* Fills `out` with the hard state, configuration, snapshot metadata and log
 * bounds. Returns 0 on success, or one of these negative codes: none for
 * the shipped backends (a simulated disk may fail). */
static inline int qraft_storage_state_get(qraft_storage *s,
                                          qraft_storage_state *out,
                                          qraft_err *err) {
  return s->ops->state(s, out, err);
}

/*
 * Reads entries lo..hi-1 into out[0..], stopping before the entry that
 * would make the total of data and context bytes exceed `bytes_max`
 * (UINT64_MAX: no cap) but always returning at least one entry, and never
 * more than `out_cap`. `*out_n` is the number read. Each entry's data and
 * context are slices holding a reference on a buffer; release them with
 * qraft_storage_entries_release. Bytes are checked against their checksum.
 *
 * Returns 0 on success, or one of these negative codes: QRAFT_ECOMPACTED
 * (lo < first_index), QRAFT_EUNAVAILABLE (hi > last_index + 1), -EINVAL
 * (lo >= hi, out_cap 0), QRAFT_ECORRUPT (a record fails its checksum; `err`
 * names segment, offset and index), -ENOMEM, -errno from pread.
 */
static inline int qraft_storage_entries(qraft_storage *s, uint64_t lo,
                                        uint64_t hi, uint64_t bytes_max,
                                        qraft_entry *out, size_t out_cap,
                                        size_t *out_n, qraft_err *err) {
  return s->ops->entries(s, lo, hi, bytes_max, out, out_cap, out_n, err);
}

/* Releases the slices of entries read by qraft_storage_entries. */
void qraft_storage_entries_release(qraft_entry *entries, size_t n);

/* The term of entry `index`, which may be first_index - 1.
 * Returns 0 on success, or one of these negative codes: QRAFT_ECOMPACTED,
 * QRAFT_EUNAVAILABLE. */
static inline int qraft_storage_term(qraft_storage *s, uint64_t index,
                                     uint64_t *out, qraft_err *err) {
  return s->ops->term(s, index, out, err);
}

/*
 * Submits a write (see qraft_storage_write). It is checked against the
 * state all earlier submitted writes leave behind; on success the callback
 * runs exactly once, later, inside qraft_storage_poll. Callbacks run in
 * submission order.
 *
 * Failure after submit: the callback gets the code and the write had no
 * effect; every write submitted before that callback ran fails with the
 * same code, and the store's state is that of the last successful write.
 * After -ENOSPC (or -EDQUOT) the store accepts writes again (they fail
 * again until there is room); the write's snapshot writer, if the store
 * had not yet used it, is left in `snapshot` for the caller to submit again
 * or abort (NULL if it was used up). After a failed sync or write the store refuses every later
 * write with QRAFT_ESYNC until it is closed and reopened: Linux may have
 * dropped the dirty pages, so a retry could report durable what is not.
 *
 * Returns 0 on success, or one of these negative codes: -EINVAL (an empty
 * write, entries not consecutive or not in [first_index, last_index + 1],
 * compact_index out of range, terms decreasing), QRAFT_ELIMIT (too many
 * entries in the write or in the log, or a write larger than a segment),
 * QRAFT_EBUSY
 * (QRAFT_STORAGE_PENDING_MAX writes pending: poll first), QRAFT_ESYNC
 * (refusing writes, see above), QRAFT_ECLOSED.
 */
static inline int qraft_storage_submit(qraft_storage *s, qraft_storage_write *w,
                                       qraft_err *err) {
  return s->ops->submit(s, w, err);
}

/* Runs the callbacks of completed writes, in order, on the calling thread
 * (the owner). Returns how many ran. */
static inline int qraft_storage_poll(qraft_storage *s) {
  return s->ops->poll(s);
}

/* A descriptor that is readable while completions wait for poll, or -1 (see
 * the top of this file). Owned by the store; valid until close. */
static inline int qraft_storage_fd(qraft_storage *s) { return s->ops->fd(s); }

/* Blocks until a completion is pending or `timeout_ms` passed (-1: no
 * limit). Returns 1 if a completion is pending, 0 on timeout. */
static inline int qraft_storage_wait(qraft_storage *s, int timeout_ms) {
  return s->ops->wait(s, timeout_ms);
}

/* Submits `w` and waits for its callback (which runs, if set, as usual),
 * running the callbacks of any earlier writes on the way. For tools and
 * tests. Returns the write's status, or the submit error. */
int qraft_storage_write_sync(qraft_storage *s, qraft_storage_write *w,
                             qraft_err *err);

/* Waits for every submitted write to complete and closes the store: joins
 * its threads, releases its lock. Callbacks of writes still pending run
 * before it returns. NULL is ignored. */
static inline void qraft_storage_close(qraft_storage *s) {
  if (s != NULL) {
    s->ops->close(s);
  }
}

/* ---- Snapshots --------------------------------------------------------- */

/*
 * Starts a snapshot with metadata `meta` (index >= 1). Stream its data with
 * qraft_snapshot_writer_write, then install it by submitting a write with
 * `snapshot` set, or drop it with qraft_snapshot_writer_abort. Data is never
 * held whole in memory by the WAL (it goes to a temporary file).
 * Returns 0 on success, or one of these negative codes: -EINVAL (index 0),
 * -ENOMEM, -errno from the file system.
 */
static inline int qraft_storage_snapshot_writer_open(
    qraft_storage *s, const qraft_snapshot_meta *meta,
    qraft_snapshot_writer **out, qraft_err *err) {
  return s->ops->snapshot_writer_open(s, meta, out, err);
}

/* Appends `len` bytes of snapshot data. Returns 0 on success, or one of
 * these negative codes: -ENOSPC, -errno from the file system, -ENOMEM. */
static inline int qraft_snapshot_writer_write(qraft_snapshot_writer *w,
                                              const void *data, size_t len,
                                              qraft_err *err) {
  return w->ops->write(w, data, len, err);
}

/* Drops an unsubmitted snapshot writer and its temporary data. */
static inline void qraft_snapshot_writer_abort(qraft_snapshot_writer *w) {
  if (w != NULL) {
    w->ops->abort(w);
  }
}

/*
 * Opens the current snapshot for reading: `(*out)->meta` is its metadata
 * and `(*out)->bytes` its length. The reader stays valid and reads the same
 * snapshot even if a newer one is installed meanwhile. Close it with
 * qraft_snapshot_reader_close. Returns 0 on success, or one of these
 * negative codes: QRAFT_ENOTFOUND (no snapshot), QRAFT_ECORRUPT (bad
 * header), QRAFT_EVERSION, -ENOMEM, -errno.
 */
static inline int qraft_storage_snapshot_reader_open(qraft_storage *s,
                                                     qraft_snapshot_reader **out,
                                                     qraft_err *err) {
  return s->ops->snapshot_reader_open(s, out, err);
}

/* Reads up to `cap` bytes of data into `buf`; `*out_n` 0 means the end.
 * Each chunk is checked against its checksum before it is returned.
 * Returns 0 on success, or one of these negative codes: QRAFT_ECORRUPT
 * (naming file and offset), -errno. */
static inline int qraft_snapshot_reader_read(qraft_snapshot_reader *r,
                                             void *buf, size_t cap,
                                             size_t *out_n, qraft_err *err) {
  return r->ops->read(r, buf, cap, out_n, err);
}

/* Closes a reader; NULL is ignored. */
static inline void qraft_snapshot_reader_close(qraft_snapshot_reader *r) {
  if (r != NULL) {
    r->ops->close(r);
  }
}

/* ---- Helpers shared by backends ---------------------------------------- */

/* Equality of configurations (lists compared in order). */
bool qraft_conf_state_equal(const qraft_conf_state *a,
                            const qraft_conf_state *b);

#ifdef __cplusplus
}
#endif
#endif

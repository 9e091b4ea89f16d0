/*
 * simdisk.c: a simulated disk behind the storage interface, for the
 * full-stack simulator.
 *
 * The disk has a durable part (an in-memory store that outlives the node
 * using it) and a volatile part (writes submitted and not yet durable).
 * Each write becomes durable after a delay drawn from the env's generator,
 * in submission order; then its callback runs, from a timer on the env.
 * A crash fails every write not yet durable: it never reaches the durable
 * part. Reads see the durable part only, which the storage contract allows
 * (reads may or may not see writes not yet acknowledged).
 *
 * A full disk (qraft_simdisk_set_full) has no room: the write that reaches
 * the head of the queue fails with -ENOSPC instead of becoming durable, and
 * so does every write queued behind it (all were submitted before its
 * callback ran: qraft/storage.h, "Failure after submit"), in submission
 * order, after the callbacks of the writes that became durable before it.
 * The durable part is unchanged; a snapshot writer such a write carried
 * stays in it for the caller. Snapshot writers do not open, and open ones
 * do not take data, while the disk is full. Once it has room again, writes
 * succeed again.
 *
 * It must never: make a write durable before an earlier one, run a callback
 * before its write is durable, fail a write for lack of room while an
 * earlier one succeeds after it, or read the OS clock or randomness.
 */
#include <qraft/sim.h>

#include <qraft/assert.h>
#include <qraft/env.h>
#include <qraft/error.h>
#include <qraft/storage.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct sd_pending {
  struct sd_pending *next;
  qraft_storage_write *w;
  uint64_t ready_ns;
} sd_pending;

typedef struct sd_store {
  qraft_storage base;
  qraft_simdisk *disk;
} sd_store;

/* A snapshot writer of the disk: the durable store's, which it refuses
 * data while the disk is full. Unwrapped when its write becomes durable. */
typedef struct sd_writer {
  qraft_snapshot_writer base;
  qraft_simdisk *disk;
  qraft_snapshot_writer *inner; /* the durable store's */
} sd_writer;

struct qraft_simdisk {
  qraft_env *env;
  qraft_storage *durable; /* the in-memory store: what survives a crash */
  qraft_env_timer *timer;
  uint64_t delay_min_ns, delay_max_ns;
  sd_pending *head, *tail;
  uint64_t pending_n;
  uint64_t last_ready_ns;
  sd_store *open; /* the store handed out, or NULL */
  bool refusing;  /* after a crash, until the store is reopened */
  bool full;      /* no room: writes fail with -ENOSPC */
  qraft_simdisk_write_cb observer;
  void *observer_ud;
  qraft_simdisk_stats stats;
  char violation[256];
};

static uint64_t sd_delay(qraft_simdisk *d) {
  if (d->delay_max_ns <= d->delay_min_ns) {
    return d->delay_min_ns;
  }
  uint64_t r;
  qraft_env_random(d->env, &r, sizeof r);
  return d->delay_min_ns + r % (d->delay_max_ns - d->delay_min_ns + 1);
}

/* Moves the head write to the durable part. Its callback runs at the next
 * poll of the durable store. */
static void sd_make_durable_head(qraft_simdisk *d) {
  sd_pending *p = d->head;
  d->head = p->next;
  if (d->head == NULL) {
    d->tail = NULL;
  }
  d->pending_n--;
  qraft_storage_write *w = p->w;
  free(p);
  if (w->snapshot != NULL) {
    /* the durable store installs its own writer */
    sd_writer *sw = (sd_writer *)w->snapshot;
    w->snapshot = sw->inner;
    free(sw);
  }
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv = qraft_storage_submit(d->durable, w, &err);
  if (rv != 0) {
    /* The driver submitted a write that breaks the storage contract on the
     * state the earlier writes leave: record it for the checker and fail
     * the write as a real store would have at submit. */
    char line[200];
    qraft_err_format(&err, line, sizeof line);
    if (d->violation[0] == '\0') {
      snprintf(d->violation, sizeof d->violation, "invalid write: %s", line);
    }
    if (w->snapshot != NULL) {
      qraft_snapshot_writer_abort(w->snapshot);
      w->snapshot = NULL;
    }
    if (w->cb != NULL) {
      w->cb(w, rv);
    }
    return;
  }
  d->stats.writes_durable++;
  d->stats.entries_durable += w->entries_n;
}

/* No room for the head write: it fails with -ENOSPC, and so does every
 * write queued behind it, in submission order. Runs after the callbacks of
 * the writes that became durable (the caller polls the durable store
 * first): a write they submitted was submitted before these callbacks ran,
 * so it is in the queue and fails too; writes submitted from these
 * callbacks go to a new queue. The writes never reach the durable part; a
 * snapshot writer stays in its write, for the caller to submit again or
 * abort. */
static void sd_fail_nospace(qraft_simdisk *d) {
  sd_pending *p = d->head;
  d->head = d->tail = NULL;
  d->pending_n = 0;
  d->last_ready_ns = 0;
  while (p != NULL) {
    sd_pending *next = p->next;
    qraft_storage_write *w = p->w;
    free(p);
    d->stats.writes_nospace++;
    if (w->cb != NULL) {
      w->cb(w, -ENOSPC);
    }
    p = next;
  }
}

/* Completes every pending write now: durable, or failed if the disk is
 * full (after the callbacks of those already durable). */
static void sd_complete_all(qraft_simdisk *d) {
  while (d->head != NULL && !d->full) {
    sd_make_durable_head(d);
  }
  if (d->head != NULL) {
    qraft_storage_poll(d->durable);
    sd_fail_nospace(d);
  }
}

static void sd_arm(qraft_simdisk *d) {
  if (d->head != NULL) {
    qraft_env_timer_arm(d->timer, d->head->ready_ns);
  }
}

static void sd_timer_cb(void *ud) {
  qraft_simdisk *d = ud;
  uint64_t now = qraft_env_now_ns(d->env);
  while (d->head != NULL && d->head->ready_ns <= now && !d->full) {
    sd_make_durable_head(d);
  }
  /* Callbacks may submit more writes (appended to the queue). */
  qraft_storage_poll(d->durable);
  if (d->full && d->head != NULL && d->head->ready_ns <= now) {
    sd_fail_nospace(d);
  }
  sd_arm(d);
}

/* ---- the store ---- */

static qraft_simdisk *sd_of(qraft_storage *s) { return ((sd_store *)s)->disk; }

static int sd_state(qraft_storage *s, qraft_storage_state *out,
                    qraft_err *err) {
  return qraft_storage_state_get(sd_of(s)->durable, out, err);
}

static int sd_entries(qraft_storage *s, uint64_t lo, uint64_t hi,
                      uint64_t bytes_max, qraft_entry *out, size_t out_cap,
                      size_t *out_n, qraft_err *err) {
  return qraft_storage_entries(sd_of(s)->durable, lo, hi, bytes_max, out,
                               out_cap, out_n, err);
}

static int sd_term(qraft_storage *s, uint64_t index, uint64_t *out,
                   qraft_err *err) {
  return qraft_storage_term(sd_of(s)->durable, index, out, err);
}

static int sd_snapshot_reader_open(qraft_storage *s,
                                   qraft_snapshot_reader **out,
                                   qraft_err *err) {
  return qraft_storage_snapshot_reader_open(sd_of(s)->durable, out, err);
}

static int sd_writer_write(qraft_snapshot_writer *w, const void *data,
                           size_t len, qraft_err *err) {
  sd_writer *sw = (sd_writer *)w;
  if (sw->disk->full) {
    sw->disk->stats.snapshot_nospace++;
    return QRAFT_ERR(err, -ENOSPC, "simulated disk full");
  }
  int rv = qraft_snapshot_writer_write(sw->inner, data, len, err);
  w->bytes = sw->inner->bytes;
  return rv;
}

static void sd_writer_abort(qraft_snapshot_writer *w) {
  sd_writer *sw = (sd_writer *)w;
  qraft_snapshot_writer_abort(sw->inner);
  free(sw);
}

static const qraft_snapshot_writer_ops sd_writer_ops = {
    .write = sd_writer_write, .abort = sd_writer_abort};

static int sd_snapshot_writer_open(qraft_storage *s,
                                   const qraft_snapshot_meta *meta,
                                   qraft_snapshot_writer **out,
                                   qraft_err *err) {
  qraft_simdisk *d = sd_of(s);
  if (d->full) {
    d->stats.snapshot_nospace++;
    return QRAFT_ERR(err, -ENOSPC, "simulated disk full");
  }
  sd_writer *sw = calloc(1, sizeof *sw);
  if (sw == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "snapshot writer");
  }
  int rv = qraft_storage_snapshot_writer_open(d->durable, meta, &sw->inner,
                                              err);
  if (rv != 0) {
    free(sw);
    return rv;
  }
  sw->base.ops = &sd_writer_ops;
  sw->base.meta = sw->inner->meta;
  sw->base.bytes = sw->inner->bytes;
  sw->disk = d;
  *out = &sw->base;
  return 0;
}

static int sd_submit(qraft_storage *s, qraft_storage_write *w,
                     qraft_err *err) {
  qraft_simdisk *d = sd_of(s);
  if (d->refusing) {
    return QRAFT_ERR(err, QRAFT_ESYNC, "simulated disk crashed");
  }
  if (w->snapshot == NULL && w->entries_n == 0 && w->conf_state == NULL &&
      w->hard_state == NULL && w->compact_index == 0) {
    return QRAFT_ERR(err, -EINVAL, "empty write");
  }
  if (w->snapshot != NULL && w->snapshot->ops != &sd_writer_ops) {
    return QRAFT_ERR(err, -EINVAL, "a snapshot writer of another store");
  }
  if (d->pending_n >= QRAFT_STORAGE_PENDING_MAX) {
    return QRAFT_ERR(err, QRAFT_EBUSY, "%llu writes pending",
                     (unsigned long long)d->pending_n);
  }
  sd_pending *p = calloc(1, sizeof *p);
  if (p == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "write");
  }
  uint64_t now = qraft_env_now_ns(d->env);
  p->w = w;
  /* In order: never durable before the write ahead of it. */
  p->ready_ns = now + sd_delay(d);
  if (p->ready_ns < d->last_ready_ns) {
    p->ready_ns = d->last_ready_ns;
  }
  d->last_ready_ns = p->ready_ns;
  if (d->tail != NULL) {
    d->tail->next = p;
  } else {
    d->head = p;
    qraft_env_timer_arm(d->timer, p->ready_ns);
  }
  d->tail = p;
  d->pending_n++;
  d->stats.writes_submitted++;
  if (d->observer != NULL) {
    d->observer(d->observer_ud, w);
  }
  return 0;
}

static int sd_poll(qraft_storage *s) {
  return qraft_storage_poll(sd_of(s)->durable);
}

static int sd_fd(qraft_storage *s) {
  (void)s;
  return -1;
}

/* A blocking wait is a sync that takes no simulated time: every pending
 * write becomes durable now (or fails now, on a full disk, its callback
 * running here). Used by qraft_storage_write_sync (bootstrap). */
static int sd_wait(qraft_storage *s, int timeout_ms) {
  (void)timeout_ms;
  qraft_simdisk *d = sd_of(s);
  sd_complete_all(d);
  return qraft_storage_wait(d->durable, 0);
}

static void sd_close(qraft_storage *s) {
  qraft_simdisk *d = sd_of(s);
  /* A store closed with writes still pending (the owner did not flush or
   * crash the disk first) finishes them, as a real close would. */
  sd_complete_all(d);
  qraft_storage_poll(d->durable);
  d->open = NULL;
  free(s);
}

static const qraft_storage_ops sd_ops = {
    .name = "simdisk",
    .state = sd_state,
    .entries = sd_entries,
    .term = sd_term,
    .snapshot_reader_open = sd_snapshot_reader_open,
    .snapshot_writer_open = sd_snapshot_writer_open,
    .submit = sd_submit,
    .poll = sd_poll,
    .fd = sd_fd,
    .wait = sd_wait,
    .close = sd_close,
};

/* ---- the disk ---- */

int qraft_simdisk_new(qraft_env *env, uint64_t delay_min_ns,
                      uint64_t delay_max_ns, qraft_simdisk **out) {
  qraft_simdisk *d = calloc(1, sizeof *d);
  if (d == NULL) {
    return -ENOMEM;
  }
  d->env = env;
  d->delay_min_ns = delay_min_ns;
  d->delay_max_ns = delay_max_ns < delay_min_ns ? delay_min_ns : delay_max_ns;
  int rv = qraft_storage_mem_new(&d->durable);
  if (rv != 0) {
    goto err_free;
  }
  rv = qraft_env_timer_new(env, sd_timer_cb, d, &d->timer);
  if (rv != 0) {
    goto err_close;
  }
  *out = d;
  return 0;

err_close:
  qraft_storage_close(d->durable);
err_free:
  free(d);
  return rv;
}

int qraft_simdisk_open(qraft_simdisk *d, qraft_storage **out) {
  if (d->open != NULL) {
    return QRAFT_ESTATE;
  }
  sd_store *s = calloc(1, sizeof *s);
  if (s == NULL) {
    return -ENOMEM;
  }
  s->base.ops = &sd_ops;
  s->disk = d;
  d->open = s;
  d->refusing = false;
  *out = &s->base;
  return 0;
}

void qraft_simdisk_set_observer(qraft_simdisk *d, qraft_simdisk_write_cb cb,
                                void *ud) {
  d->observer = cb;
  d->observer_ud = ud;
}

void qraft_simdisk_set_delay(qraft_simdisk *d, uint64_t delay_min_ns,
                             uint64_t delay_max_ns) {
  d->delay_min_ns = delay_min_ns;
  d->delay_max_ns = delay_max_ns < delay_min_ns ? delay_min_ns : delay_max_ns;
}

void qraft_simdisk_set_full(qraft_simdisk *d, bool full) {
  if (full && !d->full) {
    d->stats.fulls++;
  }
  d->full = full;
}

bool qraft_simdisk_is_full(const qraft_simdisk *d) { return d->full; }

void qraft_simdisk_crash(qraft_simdisk *d) {
  qraft_env_timer_disarm(d->timer);
  /* Writes already durable but whose callbacks have not run stay durable;
   * their callbacks run (the store reports them) before the failures. */
  qraft_storage_poll(d->durable);
  d->refusing = true;
  while (d->head != NULL) {
    sd_pending *p = d->head;
    d->head = p->next;
    if (d->head == NULL) {
      d->tail = NULL;
    }
    d->pending_n--;
    d->stats.writes_lost++;
    d->stats.entries_lost += p->w->entries_n;
    qraft_storage_write *w = p->w;
    free(p);
    if (w->snapshot != NULL) {
      qraft_snapshot_writer_abort(w->snapshot);
      w->snapshot = NULL;
    }
    if (w->cb != NULL) {
      w->cb(w, QRAFT_ESYNC);
    }
  }
  d->last_ready_ns = 0;
  d->stats.crashes++;
}

void qraft_simdisk_flush(qraft_simdisk *d) {
  sd_complete_all(d);
  qraft_storage_poll(d->durable);
}

void qraft_simdisk_stats_get(const qraft_simdisk *d, qraft_simdisk_stats *out) {
  *out = d->stats;
}

const char *qraft_simdisk_violation(const qraft_simdisk *d) {
  return d->violation[0] != '\0' ? d->violation : NULL;
}

qraft_storage *qraft_simdisk_durable(qraft_simdisk *d) { return d->durable; }

void qraft_simdisk_free(qraft_simdisk *d) {
  if (d == NULL) {
    return;
  }
  QRAFT_ASSERTF(d->open == NULL, "simdisk freed with its store open");
  qraft_env_timer_free(d->timer);
  qraft_storage_close(d->durable);
  free(d);
}

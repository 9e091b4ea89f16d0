/*
 * log_view.h: the shape of a Raft log as storage sees it: first index, the
 * term before it, and one element per entry (its term first, then whatever
 * the backend keeps: a file location, an in-memory copy). Shared by the
 * backends so that every one applies a write by the same rules.
 *
 * Never does I/O; never frees what elements point to (drop_cb does).
 */
#ifndef QRAFT_STORAGE_LOG_VIEW_H
#define QRAFT_STORAGE_LOG_VIEW_H

#include <qraft/storage.h>

#include <stddef.h>
#include <stdint.h>

/* Called for each element removed from the view (truncated, compacted). */
typedef void (*qraft__logv_drop_cb)(void *elem, void *ud);

typedef struct qraft__logv {
  size_t elem_size; /* >= 8; the element's first 8 bytes are its term */
  uint64_t first;   /* index of the element at `start` */
  uint64_t prev_term;
  uint8_t *elems;
  size_t start; /* elements before `start` are free space */
  size_t n;     /* elements in use from `start` */
  size_t cap;   /* elements allocated */
  qraft__logv_drop_cb drop_cb;
  void *drop_ud;
} qraft__logv;

void qraft__logv_init(qraft__logv *v, size_t elem_size,
                      qraft__logv_drop_cb drop_cb, void *ud);
void qraft__logv_close(qraft__logv *v);

static inline uint64_t qraft__logv_last(const qraft__logv *v) {
  return v->first + v->n - 1;
}

/* Element of entry `index` (first..last), or NULL. */
void *qraft__logv_get(const qraft__logv *v, uint64_t index);

/* Term of `index` (first-1..last): 0 on success, QRAFT_ECOMPACTED or
 * QRAFT_EUNAVAILABLE. */
int qraft__logv_term(const qraft__logv *v, uint64_t index, uint64_t *out);

/* Drops entries index..last (index in first..last+1). */
void qraft__logv_truncate(qraft__logv *v, uint64_t index);

/* Appends the element of entry last+1 with `term`; returns it (zeroed past
 * the term), or NULL if memory is exhausted. */
void *qraft__logv_append(qraft__logv *v, uint64_t term);

/* Makes room for `extra` more elements, so that the next `extra` appends
 * cannot fail. Returns 0 or -ENOMEM. */
int qraft__logv_reserve(qraft__logv *v, size_t extra);

/* Drops entries before `index` (first < index <= last+1); the previous term
 * becomes that of index-1. */
void qraft__logv_compact(qraft__logv *v, uint64_t index);

/* Empties the view: it restarts at `first` with `prev_term`. */
void qraft__logv_reset(qraft__logv *v, uint64_t first, uint64_t prev_term);

/* Installs a snapshot (index, term) by the rule of figure 13 steps 6-7:
 * keeps the suffix after `index` if entry `index` has `term`, else empties
 * the log to restart at index+1. Returns true if the suffix was kept. */
bool qraft__logv_snapshot(qraft__logv *v, uint64_t index, uint64_t term);

/* Copies `src`'s terms into `dst` (which must have elem_size 8 and no
 * drop_cb). Returns 0 or -ENOMEM. */
int qraft__logv_copy_terms(qraft__logv *dst, const qraft__logv *src);

/* Applies the log part of write `w` (snapshot, entries, compaction; checked
 * before with qraft_storage_write_check) to a terms-only view. Returns 0 or
 * -ENOMEM. */
int qraft__logv_apply_terms(qraft__logv *v, const qraft_storage_write *w);

/* Checks `w` against the log `v` (terms of every submitted write): the
 * rules stated at qraft_storage_write and qraft_storage_submit. Returns 0,
 * -EINVAL or QRAFT_ELIMIT, with a frame in `err`. */
int qraft__storage_write_check(const qraft__logv *v,
                               const qraft_storage_write *w, qraft_err *err);

#endif

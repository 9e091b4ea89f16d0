/*
 * log_view.c: a Raft log's indexes and terms, shared by every backend so
 * that they apply writes by the same rules. No I/O.
 */
#include "storage/log_view.h"

#include <qraft/assert.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void qraft__logv_init(qraft__logv *v, size_t elem_size,
                      qraft__logv_drop_cb drop_cb, void *ud) {
  QRAFT_ASSERT(elem_size >= sizeof(uint64_t) && elem_size % 8 == 0);
  memset(v, 0, sizeof *v);
  v->elem_size = elem_size;
  v->first = 1;
  v->drop_cb = drop_cb;
  v->drop_ud = ud;
}

static uint8_t *logv_at(const qraft__logv *v, size_t i) {
  return v->elems + (v->start + i) * v->elem_size;
}

static uint64_t logv_elem_term(const qraft__logv *v, size_t i) {
  uint64_t t;
  memcpy(&t, logv_at(v, i), sizeof t);
  return t;
}

static void logv_drop(qraft__logv *v, size_t from, size_t to) {
  if (v->drop_cb == NULL) {
    return;
  }
  for (size_t i = from; i < to; i++) {
    v->drop_cb(logv_at(v, i), v->drop_ud);
  }
}

void qraft__logv_close(qraft__logv *v) {
  logv_drop(v, 0, v->n);
  free(v->elems);
  v->elems = NULL;
  v->n = v->cap = v->start = 0;
}

void *qraft__logv_get(const qraft__logv *v, uint64_t index) {
  if (index < v->first || index - v->first >= v->n) {
    return NULL;
  }
  return logv_at(v, (size_t)(index - v->first));
}

int qraft__logv_term(const qraft__logv *v, uint64_t index, uint64_t *out) {
  if (index + 1 < v->first) {
    return QRAFT_ECOMPACTED;
  }
  if (index + 1 == v->first) {
    *out = v->prev_term;
    return 0;
  }
  if (index - v->first >= v->n) {
    return QRAFT_EUNAVAILABLE;
  }
  *out = logv_elem_term(v, (size_t)(index - v->first));
  return 0;
}

void qraft__logv_truncate(qraft__logv *v, uint64_t index) {
  QRAFT_ASSERTF(index >= v->first && index <= v->first + v->n,
                "truncate %llu outside %llu..%llu", (unsigned long long)index,
                (unsigned long long)v->first,
                (unsigned long long)(v->first + v->n));
  size_t keep = (size_t)(index - v->first);
  logv_drop(v, keep, v->n);
  v->n = keep;
}

int qraft__logv_reserve(qraft__logv *v, size_t extra) {
  if (v->start + v->n + extra <= v->cap) {
    return 0;
  }
  if (v->start > 0) {
    memmove(v->elems, logv_at(v, 0), v->n * v->elem_size);
    v->start = 0;
    if (v->n + extra <= v->cap) {
      return 0;
    }
  }
  size_t cap = v->cap < 64 ? 64 : v->cap * 2;
  if (cap < v->n + extra) {
    cap = v->n + extra;
  }
  uint8_t *e = realloc(v->elems, cap * v->elem_size);
  if (e == NULL) {
    return -ENOMEM;
  }
  v->elems = e;
  v->cap = cap;
  return 0;
}

void *qraft__logv_append(qraft__logv *v, uint64_t term) {
  if (v->start + v->n == v->cap) {
    if (v->start > v->n) {
      /* Mostly free space at the front: slide down (amortized O(1)). */
      memmove(v->elems, logv_at(v, 0), v->n * v->elem_size);
      v->start = 0;
    } else {
      size_t cap = v->cap < 64 ? 64 : v->cap * 2;
      uint8_t *e = realloc(v->elems, cap * v->elem_size);
      if (e == NULL) {
        return NULL;
      }
      v->elems = e;
      v->cap = cap;
    }
  }
  uint8_t *el = logv_at(v, v->n);
  memset(el, 0, v->elem_size);
  memcpy(el, &term, sizeof term);
  v->n++;
  return el;
}

void qraft__logv_compact(qraft__logv *v, uint64_t index) {
  QRAFT_ASSERTF(index > v->first && index <= v->first + v->n,
                "compact %llu outside %llu..%llu", (unsigned long long)index,
                (unsigned long long)v->first,
                (unsigned long long)(v->first + v->n));
  size_t k = (size_t)(index - v->first);
  v->prev_term = logv_elem_term(v, k - 1);
  logv_drop(v, 0, k);
  v->start += k;
  v->n -= k;
  v->first = index;
  if (v->n == 0) {
    v->start = 0;
  }
}

void qraft__logv_reset(qraft__logv *v, uint64_t first, uint64_t prev_term) {
  logv_drop(v, 0, v->n);
  v->n = 0;
  v->start = 0;
  v->first = first;
  v->prev_term = prev_term;
}

bool qraft__logv_snapshot(qraft__logv *v, uint64_t index, uint64_t term) {
  uint64_t t;
  if (qraft__logv_term(v, index, &t) == 0 && t == term &&
      index >= v->first) {
    qraft__logv_compact(v, index + 1);
    return true;
  }
  if (index + 1 == v->first && v->prev_term == term) {
    return true; /* the same point: nothing to drop */
  }
  qraft__logv_reset(v, index + 1, term);
  return false;
}

int qraft__logv_copy_terms(qraft__logv *dst, const qraft__logv *src) {
  QRAFT_ASSERT(dst->elem_size == 8 && dst->drop_cb == NULL);
  qraft__logv_reset(dst, src->first, src->prev_term);
  for (size_t i = 0; i < src->n; i++) {
    if (qraft__logv_append(dst, logv_elem_term(src, i)) == NULL) {
      return -ENOMEM;
    }
  }
  return 0;
}

int qraft__logv_apply_terms(qraft__logv *v, const qraft_storage_write *w) {
  if (w->snapshot != NULL) {
    qraft__logv_snapshot(v, w->snapshot->meta.index, w->snapshot->meta.term);
  }
  if (w->entries_n > 0) {
    qraft__logv_truncate(v, w->entries[0].index);
    for (size_t i = 0; i < w->entries_n; i++) {
      if (qraft__logv_append(v, w->entries[i].term) == NULL) {
        return -ENOMEM;
      }
    }
  }
  if (w->compact_index != 0) {
    qraft__logv_compact(v, w->compact_index);
  }
  return 0;
}

int qraft__storage_write_check(const qraft__logv *v,
                               const qraft_storage_write *w, qraft_err *err) {
  if (w->snapshot == NULL && w->entries_n == 0 && w->conf_state == NULL &&
      w->hard_state == NULL && w->compact_index == 0) {
    return QRAFT_ERR(err, -EINVAL, "empty write");
  }
  uint64_t first = v->first;
  uint64_t last = qraft__logv_last(v);
  uint64_t prev_term = v->prev_term;
  if (w->snapshot != NULL) {
    const qraft_snapshot_meta *m = &w->snapshot->meta;
    uint64_t t;
    if (m->index == 0) {
      return QRAFT_ERR(err, -EINVAL, "snapshot at index 0");
    }
    if (m->index + 1 < first) {
      return QRAFT_ERR(err, -EINVAL,
                       "snapshot at %llu is older than the log's first %llu",
                       (unsigned long long)m->index,
                       (unsigned long long)first);
    }
    if (qraft__logv_term(v, m->index, &t) == 0 && t == m->term &&
        m->index >= first) {
      first = m->index + 1;
      prev_term = m->term;
    } else if (!(m->index + 1 == first && prev_term == m->term)) {
      first = m->index + 1;
      last = m->index;
      prev_term = m->term;
    }
  }
  if (w->entries_n > 0) {
    if (w->entries == NULL) {
      return QRAFT_ERR(err, -EINVAL, "entries_n %zu without entries",
                       w->entries_n);
    }
    if (w->entries_n > QRAFT_STORAGE_WRITE_ENTRIES_MAX) {
      return QRAFT_ERR(err, QRAFT_ELIMIT, "%zu entries in one write (max %u)",
                       w->entries_n, QRAFT_STORAGE_WRITE_ENTRIES_MAX);
    }
    uint64_t lo = w->entries[0].index;
    if (lo < first || lo > last + 1) {
      return QRAFT_ERR(err, -EINVAL,
                       "append at %llu outside log %llu..%llu+1",
                       (unsigned long long)lo, (unsigned long long)first,
                       (unsigned long long)last);
    }
    /* Terms never decrease along the log (Raft paper 5.3: an entry's term
     * is that of the leader that created it). */
    uint64_t before = prev_term;
    if (lo > first && w->snapshot == NULL) {
      int rc = qraft__logv_term(v, lo - 1, &before);
      QRAFT_ASSERT(rc == 0);
    }
    for (size_t i = 0; i < w->entries_n; i++) {
      const qraft_entry *e = &w->entries[i];
      if (e->index != lo + i) {
        return QRAFT_ERR(err, -EINVAL, "entry %zu has index %llu, want %llu",
                         i, (unsigned long long)e->index,
                         (unsigned long long)(lo + i));
      }
      if (e->term < before || e->term == 0) {
        return QRAFT_ERR(err, -EINVAL, "entry %llu has term %llu after %llu",
                         (unsigned long long)e->index,
                         (unsigned long long)e->term,
                         (unsigned long long)before);
      }
      if ((unsigned)e->type > QRAFT_ENTRY_TYPE_MAX) {
        return QRAFT_ERR(err, -EINVAL, "entry %llu has type %d",
                         (unsigned long long)e->index, (int)e->type);
      }
      if ((e->data.len > 0 && e->data.data == NULL) ||
          (e->context.len > 0 && e->context.data == NULL)) {
        return QRAFT_ERR(err, -EINVAL, "entry %llu: bytes without pointer",
                         (unsigned long long)e->index);
      }
      before = e->term;
    }
    last = lo + w->entries_n - 1;
  }
  if (w->conf_state != NULL) {
    const qraft_conf_state *c = w->conf_state;
    if (c->voters_n > QRAFT_CONF_NODES_MAX ||
        c->learners_n > QRAFT_CONF_NODES_MAX ||
        c->voters_outgoing_n > QRAFT_CONF_NODES_MAX ||
        c->learners_next_n > QRAFT_CONF_NODES_MAX) {
      return QRAFT_ERR(err, -EINVAL, "conf state lists too long");
    }
  }
  if (w->compact_index != 0 &&
      (w->compact_index <= first || w->compact_index > last + 1)) {
    return QRAFT_ERR(err, -EINVAL, "compact to %llu outside log %llu..%llu+1",
                     (unsigned long long)w->compact_index,
                     (unsigned long long)first, (unsigned long long)last);
  }
  if (w->compact_index != 0) {
    first = w->compact_index;
  }
  if (last + 1 - first > QRAFT_STORAGE_LOG_ENTRIES_MAX) {
    return QRAFT_ERR(err, QRAFT_ELIMIT, "log of %llu entries (max %u): compact",
                     (unsigned long long)(last + 1 - first),
                     QRAFT_STORAGE_LOG_ENTRIES_MAX);
  }
  return 0;
}

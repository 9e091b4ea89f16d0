/*
 * mem.c: the in-memory store, for tests and the simulator. Applies a write
 * when it is submitted and acknowledges it at the next poll; holds entry
 * bytes by reference (slices with an owner) or by copy. No threads, no I/O.
 */
#include <qraft/storage.h>

#include "storage/log_view.h"

#include <qraft/assert.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct mem_elem {
  uint64_t term; /* first, as log_view requires */
  qraft_entry entry;
} mem_elem;

typedef struct mem_store {
  qraft_storage base;
  qraft__logv log;
  qraft_hard_state hard_state;
  qraft_conf_state conf_state;
  qraft_snapshot_meta snap_meta;
  qraft_buf *snap_data; /* NULL: no snapshot */
  qraft_storage_write *done_head, *done_tail;
  uint64_t pending;
} mem_store;

typedef struct mem_snap_writer {
  qraft_snapshot_writer base;
  uint8_t *data;
  size_t cap;
} mem_snap_writer;

typedef struct mem_snap_reader {
  qraft_snapshot_reader base;
  qraft_buf *data;
  size_t off;
} mem_snap_reader;

static void mem_elem_drop(void *elem, void *ud) {
  (void)ud;
  mem_elem *e = elem;
  qraft_slice_release(&e->entry.data);
  qraft_slice_release(&e->entry.context);
}

/* A slice that keeps its bytes alive: a new reference to the owner, or a
 * copy when there is none. */
static int mem_hold(qraft_slice *dst, qraft_slice src) {
  if (src.len == 0) {
    *dst = (qraft_slice){0};
    return 0;
  }
  if (src.owner != NULL) {
    *dst = qraft_slice_ref(src);
    return 0;
  }
  qraft_buf *b = qraft_buf_copy(src.data, src.len);
  if (b == NULL) {
    return -ENOMEM;
  }
  *dst = qraft_slice_of(b, b->data, b->len);
  qraft_buf_unref(b);
  return 0;
}

static int mem_state(qraft_storage *s, qraft_storage_state *out,
                     qraft_err *err) {
  (void)err;
  mem_store *m = (mem_store *)s;
  out->hard_state = m->hard_state;
  out->conf_state = m->conf_state;
  out->snapshot = m->snap_meta;
  out->first_index = m->log.first;
  out->last_index = qraft__logv_last(&m->log);
  out->prev_term = m->log.prev_term;
  return 0;
}

static int mem_entries(qraft_storage *s, uint64_t lo, uint64_t hi,
                       uint64_t bytes_max, qraft_entry *out, size_t out_cap,
                       size_t *out_n, qraft_err *err) {
  mem_store *m = (mem_store *)s;
  *out_n = 0;
  if (lo >= hi || out_cap == 0) {
    return QRAFT_ERR(err, -EINVAL, "entries %llu..%llu cap %zu",
                     (unsigned long long)lo, (unsigned long long)hi, out_cap);
  }
  if (lo < m->log.first) {
    return QRAFT_ERR(err, QRAFT_ECOMPACTED, "entries from %llu, first %llu",
                     (unsigned long long)lo, (unsigned long long)m->log.first);
  }
  if (hi > qraft__logv_last(&m->log) + 1) {
    return QRAFT_ERR(err, QRAFT_EUNAVAILABLE, "entries to %llu, last %llu",
                     (unsigned long long)hi - 1,
                     (unsigned long long)qraft__logv_last(&m->log));
  }
  uint64_t bytes = 0;
  size_t n = 0;
  for (uint64_t i = lo; i < hi && n < out_cap; i++) {
    const mem_elem *e = qraft__logv_get(&m->log, i);
    uint64_t sz = e->entry.data.len + e->entry.context.len;
    if (n > 0 && (bytes + sz > bytes_max || bytes + sz < bytes)) {
      break;
    }
    bytes += sz;
    out[n] = e->entry;
    out[n].data = qraft_slice_ref(e->entry.data);
    out[n].context = qraft_slice_ref(e->entry.context);
    n++;
  }
  *out_n = n;
  return 0;
}

static int mem_term(qraft_storage *s, uint64_t index, uint64_t *out,
                    qraft_err *err) {
  mem_store *m = (mem_store *)s;
  int rc = qraft__logv_term(&m->log, index, out);
  if (rc != 0) {
    return QRAFT_ERR(err, rc, "term of %llu (log %llu..%llu)",
                     (unsigned long long)index,
                     (unsigned long long)m->log.first,
                     (unsigned long long)qraft__logv_last(&m->log));
  }
  return 0;
}

/* ---- snapshots ---- */

static int mem_snap_write(qraft_snapshot_writer *w, const void *data,
                          size_t len, qraft_err *err) {
  mem_snap_writer *mw = (mem_snap_writer *)w;
  if (w->bytes + len > mw->cap) {
    size_t cap = mw->cap < 4096 ? 4096 : mw->cap;
    while (cap < w->bytes + len) {
      cap *= 2;
    }
    uint8_t *d = realloc(mw->data, cap);
    if (d == NULL) {
      return QRAFT_ERR(err, -ENOMEM, "snapshot buffer of %zu bytes", cap);
    }
    mw->data = d;
    mw->cap = cap;
  }
  if (len > 0) {
    memcpy(mw->data + w->bytes, data, len);
  }
  w->bytes += len;
  return 0;
}

static void mem_snap_abort(qraft_snapshot_writer *w) {
  mem_snap_writer *mw = (mem_snap_writer *)w;
  free(mw->data);
  free(mw);
}

static const qraft_snapshot_writer_ops mem_snap_writer_ops = {
    .write = mem_snap_write, .abort = mem_snap_abort};

static int mem_snapshot_writer_open(qraft_storage *s,
                                    const qraft_snapshot_meta *meta,
                                    qraft_snapshot_writer **out,
                                    qraft_err *err) {
  (void)s;
  if (meta->index == 0) {
    return QRAFT_ERR(err, -EINVAL, "snapshot at index 0");
  }
  mem_snap_writer *mw = calloc(1, sizeof *mw);
  if (mw == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "snapshot writer");
  }
  mw->base.ops = &mem_snap_writer_ops;
  mw->base.meta = *meta;
  *out = &mw->base;
  return 0;
}

static int mem_snap_read(qraft_snapshot_reader *r, void *buf, size_t cap,
                         size_t *out_n, qraft_err *err) {
  (void)err;
  mem_snap_reader *mr = (mem_snap_reader *)r;
  size_t n = mr->data->len - mr->off;
  if (n > cap) {
    n = cap;
  }
  if (n > 0) {
    memcpy(buf, mr->data->data + mr->off, n);
  }
  mr->off += n;
  *out_n = n;
  return 0;
}

static void mem_snap_close(qraft_snapshot_reader *r) {
  mem_snap_reader *mr = (mem_snap_reader *)r;
  qraft_buf_unref(mr->data);
  free(mr);
}

static const qraft_snapshot_reader_ops mem_snap_reader_ops = {
    .read = mem_snap_read, .close = mem_snap_close};

static int mem_snapshot_reader_open(qraft_storage *s,
                                    qraft_snapshot_reader **out,
                                    qraft_err *err) {
  mem_store *m = (mem_store *)s;
  if (m->snap_data == NULL) {
    return QRAFT_ERR(err, QRAFT_ENOTFOUND, "no snapshot");
  }
  mem_snap_reader *mr = calloc(1, sizeof *mr);
  if (mr == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "snapshot reader");
  }
  mr->base.ops = &mem_snap_reader_ops;
  mr->base.meta = m->snap_meta;
  mr->base.bytes = m->snap_data->len;
  mr->data = qraft_buf_ref(m->snap_data);
  *out = &mr->base;
  return 0;
}

/* ---- writes ---- */

static int mem_submit(qraft_storage *s, qraft_storage_write *w,
                      qraft_err *err) {
  mem_store *m = (mem_store *)s;
  if (m->pending >= QRAFT_STORAGE_PENDING_MAX) {
    return QRAFT_ERR(err, QRAFT_EBUSY, "%llu writes pending",
                     (unsigned long long)m->pending);
  }
  int rc = qraft__storage_write_check(&m->log, w, err);
  if (rc != 0) {
    return rc;
  }
  /* Take everything that can fail first, so that the write is all or
   * nothing. */
  mem_elem *held = NULL;
  if (w->entries_n > 0) {
    held = calloc(w->entries_n, sizeof *held);
    if (held == NULL) {
      goto err_nomem;
    }
    for (size_t i = 0; i < w->entries_n; i++) {
      held[i].term = w->entries[i].term;
      held[i].entry = w->entries[i];
      held[i].entry.data = (qraft_slice){0};
      held[i].entry.context = (qraft_slice){0};
      if (mem_hold(&held[i].entry.data, w->entries[i].data) != 0 ||
          mem_hold(&held[i].entry.context, w->entries[i].context) != 0) {
        goto err_nomem;
      }
    }
    if (qraft__logv_reserve(&m->log, w->entries_n) != 0) {
      goto err_nomem;
    }
  }
  qraft_buf *snap = NULL;
  if (w->snapshot != NULL) {
    mem_snap_writer *mw = (mem_snap_writer *)w->snapshot;
    snap = qraft_buf_wrap(mw->data, mw->base.bytes, NULL, NULL);
    if (snap == NULL) {
      goto err_nomem;
    }
    mw->data = NULL;
  }
  if (w->snapshot != NULL) {
    mem_snap_writer *mw = (mem_snap_writer *)w->snapshot;
    m->snap_meta = mw->base.meta;
    qraft_buf_unref(m->snap_data);
    m->snap_data = snap;
    (void)snap;
    m->conf_state = m->snap_meta.conf_state;
    qraft__logv_snapshot(&m->log, m->snap_meta.index, m->snap_meta.term);
    free(mw);
    w->snapshot = NULL;
  }
  if (w->entries_n > 0) {
    qraft__logv_truncate(&m->log, w->entries[0].index);
    for (size_t i = 0; i < w->entries_n; i++) {
      mem_elem *e = qraft__logv_append(&m->log, held[i].term);
      QRAFT_ASSERT(e != NULL); /* room was reserved above */
      *e = held[i];
    }
    free(held);
  }
  if (w->conf_state != NULL) {
    m->conf_state = *w->conf_state;
  }
  if (w->hard_state != NULL) {
    m->hard_state = *w->hard_state;
  }
  if (w->compact_index != 0) {
    qraft__logv_compact(&m->log, w->compact_index);
  }
  w->status_ = 0;
  w->next_ = NULL;
  if (m->done_tail != NULL) {
    m->done_tail->next_ = w;
  } else {
    m->done_head = w;
  }
  m->done_tail = w;
  m->pending++;
  return 0;

err_nomem:
  if (held != NULL) {
    for (size_t i = 0; i < w->entries_n; i++) {
      mem_elem_drop(&held[i], NULL);
    }
    free(held);
  }
  return QRAFT_ERR(err, -ENOMEM, "write");
}

static int mem_poll(qraft_storage *s) {
  mem_store *m = (mem_store *)s;
  int n = 0;
  while (m->done_head != NULL) {
    qraft_storage_write *w = m->done_head;
    m->done_head = w->next_;
    if (m->done_head == NULL) {
      m->done_tail = NULL;
    }
    w->next_ = NULL;
    m->pending--;
    n++;
    if (w->cb != NULL) {
      w->cb(w, w->status_);
    }
  }
  return n;
}

static int mem_fd(qraft_storage *s) {
  (void)s;
  return -1;
}

static int mem_wait(qraft_storage *s, int timeout_ms) {
  (void)timeout_ms;
  return ((mem_store *)s)->done_head != NULL ? 1 : 0;
}

static void mem_close(qraft_storage *s) {
  mem_store *m = (mem_store *)s;
  mem_poll(s);
  qraft__logv_close(&m->log);
  qraft_buf_unref(m->snap_data);
  free(m);
}

static const qraft_storage_ops mem_ops = {
    .name = "mem",
    .state = mem_state,
    .entries = mem_entries,
    .term = mem_term,
    .snapshot_reader_open = mem_snapshot_reader_open,
    .snapshot_writer_open = mem_snapshot_writer_open,
    .submit = mem_submit,
    .poll = mem_poll,
    .fd = mem_fd,
    .wait = mem_wait,
    .close = mem_close,
};

int qraft_storage_mem_new(qraft_storage **out) {
  mem_store *m = calloc(1, sizeof *m);
  if (m == NULL) {
    return -ENOMEM;
  }
  m->base.ops = &mem_ops;
  qraft__logv_init(&m->log, sizeof(mem_elem), mem_elem_drop, NULL);
  *out = &m->base;
  return 0;
}

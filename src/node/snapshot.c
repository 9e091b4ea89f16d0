/*
 * snapshot.c: snapshots: the node's header before the state machine's
 * bytes, restoring from the store, taking one (installed once the state
 * machine's durable index reaches it), and reading one to send.
 */
#include "node_internal.h"

/* --- snapshots: the node's header, then the state machine's bytes ------------
 * header: magic u32, members u32, then per member its encoded address
 * (u16 length + bytes). */

typedef struct snap_out {
  qraft_snapshot_writer *w;
  qraft_err *err;
  uint64_t bytes;
} snap_out;

static int snap_out_write(void *ctx, const void *data, size_t len) {
  snap_out *o = ctx;
  o->bytes += len;
  return qraft_snapshot_writer_write(o->w, data, len, o->err);
}

static int node_snapshot_header(qraft_node *n, snap_out *o) {
  uint8_t hdr[8];
  uint32_t magic = htonl(NODE_SNAP_MAGIC), cnt = htonl(n->members_n);
  memcpy(hdr, &magic, 4);
  memcpy(hdr + 4, &cnt, 4);
  int rv = snap_out_write(o, hdr, 8);
  for (uint32_t i = 0; i < n->members_n && rv == 0; i++) {
    uint8_t buf[2 + QRAFT_KEY_BYTES + 1 + QRAFT_NODE_ADDRS_MAX * 19];
    size_t l = qraft__node_addr_encode(&n->members[i].addr, buf + 2);
    buf[0] = (uint8_t)(l >> 8);
    buf[1] = (uint8_t)l;
    rv = snap_out_write(o, buf, l + 2);
  }
  return rv;
}

typedef struct snap_in {
  qraft_snapshot_reader *r;
  qraft_err *err;
} snap_in;

static int snap_in_read(void *ctx, void *buf, size_t cap, size_t *got) {
  snap_in *in = ctx;
  return qraft_snapshot_reader_read(in->r, buf, cap, got, in->err);
}

static int snap_read_exact(snap_in *in, void *buf, size_t len) {
  uint8_t *p = buf;
  while (len > 0) {
    size_t got = 0;
    int rv = snap_in_read(in, p, len, &got);
    if (rv != 0) {
      return rv;
    }
    if (got == 0) {
      return QRAFT_ETRUNCATED;
    }
    p += got;
    len -= got;
  }
  return 0;
}

/* Reads the address book from the store's current snapshot and, with
 * `restore`, restores the state machine from it. *received tells whether
 * the snapshot came from a leader (its header says so) or was taken here. */
int qraft__node_restore_from_store(qraft_node *n, bool restore, bool *received,
                                   qraft_err *err) {
  qraft_snapshot_reader *r = NULL;
  int rv = qraft_storage_snapshot_reader_open(n->st, &r, err);
  if (rv != 0) {
    return rv;
  }
  snap_in in = {.r = r, .err = err};
  uint8_t hdr[8];
  rv = snap_read_exact(&in, hdr, 8);
  uint32_t magic = 0, cnt = 0;
  if (rv == 0) {
    memcpy(&magic, hdr, 4);
    memcpy(&cnt, hdr + 4, 4);
    magic = ntohl(magic);
    cnt = ntohl(cnt);
    if ((magic != NODE_SNAP_MAGIC && magic != NODE_SNAP_MAGIC_RECEIVED) ||
        cnt > NODE_ADDRS_MAX) {
      rv = QRAFT_ERR(err, QRAFT_ECORRUPT, "snapshot %" PRIu64 ": node header",
                     r->meta.index);
    }
  }
  if (received != NULL) {
    *received = magic == NODE_SNAP_MAGIC_RECEIVED;
  }
  for (uint32_t i = 0; i < cnt && rv == 0; i++) {
    uint8_t lb[2];
    uint8_t buf[QRAFT_KEY_BYTES + 1 + QRAFT_NODE_ADDRS_MAX * 19];
    rv = snap_read_exact(&in, lb, 2);
    size_t l = ((size_t)lb[0] << 8) | lb[1];
    if (rv == 0 && l > sizeof buf) {
      rv = QRAFT_ERR(err, QRAFT_ECORRUPT, "snapshot member %u", i);
    }
    if (rv == 0) {
      rv = snap_read_exact(&in, buf, l);
    }
    qraft_node_addr a;
    if (rv == 0 && qraft__node_addr_decode(buf, l, &a) == 0) {
      qraft__node_member_learn(n, &a);
    }
  }
  if (rv == 0 && restore) {
    rv = n->cfg.sm->restore(n->cfg.sm_ud, r->meta.index, snap_in_read, &in);
    if (rv == 0) {
      n->applied = r->meta.index;
      n->sm_index = r->meta.index;
    }
  }
  if (rv == 0) {
    n->snap_index = r->meta.index;
    n->conf = r->meta.conf_state;
  }
  qraft_snapshot_reader_close(r);
  return rv;
}

/* Reads the store's snapshot whole (bounded by snapshot_bytes_max) for a
 * MsgSnapshot. */
int qraft__node_read_snapshot(qraft_node *n, qraft_snapshot *out,
                              qraft_buf **buf_out) {
  qraft_err err;
  qraft_err_init(&err, 0);
  qraft_snapshot_reader *r = NULL;
  int rv = qraft_storage_snapshot_reader_open(n->st, &r, &err);
  if (rv != 0) {
    return rv;
  }
  if (r->bytes > n->cfg.snapshot_bytes_max) {
    qraft_snapshot_reader_close(r);
    return QRAFT_ELIMIT;
  }
  qraft_buf *b = qraft_buf_new(r->bytes);
  if (b == NULL) {
    qraft_snapshot_reader_close(r);
    return -ENOMEM;
  }
  size_t off = 0;
  while (off < r->bytes) {
    size_t got = 0;
    rv = qraft_snapshot_reader_read(r, b->data + off, r->bytes - off, &got,
                                    &err);
    if (rv != 0 || got == 0) {
      break;
    }
    off += got;
  }
  out->metadata = r->meta;
  qraft_snapshot_reader_close(r);
  if (rv != 0) {
    qraft_buf_unref(b);
    return rv;
  }
  b->len = off;
  out->data = (qraft_slice){.data = b->data, .len = off, .owner = NULL};
  *buf_out = b;
  return 0;
}

/* Takes a snapshot of the state machine when enough was applied since the
 * last one: written to the store, and the core compacts once it is durable
 * (rule 7). */
typedef struct compact_write {
  qraft_storage_write w;
  qraft_node *node;
  uint64_t index;
} compact_write;

static void node_compact_cb(qraft_storage_write *sw, int status) {
  compact_write *cw = sw->data;
  qraft_node *n = cw->node;
  if (n->freeing) {
    free(cw);
    return;
  }
  n->writes_inflight--;
  if (status == 0) {
    n->snap_index = cw->index;
    n->m_snapshots_taken++;
    (void)qraft_core_compact(n->core, cw->index);
  } else {
    QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "snapshot write failed; node stops",
              QRAFT_LOG_STR("error", qraft_strerror(status)));
    n->fatal = true;
    qraft__node_fail_all(n, status);
  }
  free(cw);
}

/* Installs a snapshot taken here in the store; the core compacts once it
 * is durable. */
static void node_submit_snapshot(qraft_node *n, qraft_snapshot_writer *w,
                                 uint64_t index) {
  compact_write *cw = calloc(1, sizeof *cw);
  if (cw == NULL) {
    qraft_snapshot_writer_abort(w); /* the next one comes later */
    return;
  }
  cw->node = n;
  cw->index = index;
  cw->w.snapshot = w;
  cw->w.cb = node_compact_cb;
  cw->w.data = cw;
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv = qraft_storage_submit(n->st, &cw->w, &err);
  if (rv != 0) {
    qraft_snapshot_writer_abort(w);
    free(cw);
    return;
  }
  n->writes_inflight++;
  qraft__node_kick_storage(n);
}

/* The durable-index contract (qraft/node.h): a snapshot taken here goes to
 * the store, which drops the log up to it, only once the state machine's
 * state is durable at that index, so that a restart always finds the log
 * from the state machine's durable index on. */
void qraft__node_submit_pending_snapshot(qraft_node *n) {
  if (n->snap_pending == NULL || n->fatal) {
    return;
  }
  uint64_t d = n->cfg.sm->durable_index(n->cfg.sm_ud);
  n->m_sm_durable = d;
#ifndef QRAFT_CANARY_NODE_COMPACT_PAST_DURABLE
  if (d < n->snap_pending_index) {
    return;
  }
#else
  /* Planted bug (make canaries): the snapshot is installed, and the log
   * dropped up to it, whatever the state machine holds durably. */
#endif
  qraft_snapshot_writer *w = n->snap_pending;
  n->snap_pending = NULL;
  node_submit_snapshot(n, w, n->snap_pending_index);
}

void qraft__node_maybe_snapshot(qraft_node *n) {
  /* Not while a received snapshot is being installed: the state machine
   * is about to be replaced, and a snapshot of the old state would land in
   * the store after the newer one. */
  if (n->applied < n->snap_index + n->cfg.snapshot_entries || n->fatal ||
      n->installing || n->snap_pending != NULL) {
    return;
  }
  qraft_core_status st;
  qraft_core_status_get(n->core, &st);
  if (n->applied > st.persisted) {
    return;
  }
  uint64_t term;
  if (qraft_core_term(n->core, n->applied, &term) != 0) {
    return;
  }
  qraft_snapshot_meta meta = {.index = n->applied, .term = term,
                              .conf_state = n->conf};
  qraft_err err;
  qraft_err_init(&err, 0);
  qraft_snapshot_writer *w = NULL;
  int rv = qraft_storage_snapshot_writer_open(n->st, &meta, &w, &err);
  if (rv != 0) {
    return;
  }
  snap_out o = {.w = w, .err = &err};
  uint64_t idx = 0;
  QRAFT_ASSERT(!n->installing);
  rv = node_snapshot_header(n, &o);
  if (rv == 0) {
    rv = n->cfg.sm->snapshot(n->cfg.sm_ud, &idx, snap_out_write, &o);
  }
  /* Configuration and empty entries do not reach the state machine, so its
   * index may be behind n->applied with the same state: the snapshot is the
   * state as of n->applied. An index ahead of it is a state machine bug. */
  if (rv != 0 || idx > n->applied) {
    qraft_snapshot_writer_abort(w);
    return;
  }
  n->snap_index = meta.index; /* no other before this one lands */
  if (n->cfg.sm->durable_index != NULL) {
    n->snap_pending = w;
    n->snap_pending_index = meta.index;
    qraft__node_submit_pending_snapshot(n);
    return;
  }
  node_submit_snapshot(n, w, meta.index);
}

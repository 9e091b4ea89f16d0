/*
 * snapshot.c: snapshots: the node's header before the state machine's
 * bytes, restoring from the store, taking one (installed once the state
 * machine's durable index reaches it), and streaming them out of the store
 * (or, for a stateless one, out of a view of the state machine) to peers
 * and from peers into the store.
 *
 * Stateless snapshots. A durable state machine with views (durable_index
 * and snapshot_begin/step/end) already holds its state on its own disk, so
 * compacting the log needs no copy of it: the node stores the header alone
 * at the applied index, which lands (and drops the log) once the state
 * machine is durable there, exactly as a snapshot with the state would.
 * The state's bytes are produced only when a peer needs them: the node
 * opens a view at its applied index A and streams it, as a snapshot of A
 * (term and configuration at A), which is at or beyond the stateless one
 * the core asked for (the core takes any acknowledgement at or beyond its
 * pending snapshot). A restart behind a stateless snapshot cannot rebuild
 * the state machine from it: that is refused, with what to do.
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

static int node_snapshot_header(qraft_node *n, uint32_t magic_host,
                                qraft_sm_write_fn write, void *wctx) {
  uint8_t hdr[8];
  uint32_t magic = htonl(magic_host), cnt = htonl(n->members_n);
  memcpy(hdr, &magic, 4);
  memcpy(hdr + 4, &cnt, 4);
  int rv = write(wctx, hdr, 8);
  for (uint32_t i = 0; i < n->members_n && rv == 0; i++) {
    uint8_t buf[2 + NODE_ADDR_ENC_MAX];
    size_t l = qraft__node_addr_encode(&n->members[i].addr, buf + 2);
    buf[0] = (uint8_t)(l >> 8);
    buf[1] = (uint8_t)l;
    rv = write(wctx, buf, l + 2);
  }
  return rv;
}

/* The log is compacted with stateless snapshots (the file's comment). */
static bool node_stateless(const qraft_node *n) {
  return n->cfg.sm->durable_index != NULL && n->cfg.sm->snapshot_begin != NULL;
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

/* Opens the store's current snapshot and reads the node's header: the
 * address book, learnt. *magic tells whether the snapshot came from a
 * leader (its header says so), was taken here, or is stateless. On success
 * the caller owns *out, positioned at the state machine's bytes. */
static int node_snap_open(qraft_node *n, qraft_snapshot_reader **out,
                          uint32_t *magic_out, qraft_err *err) {
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
    if ((magic != NODE_SNAP_MAGIC && magic != NODE_SNAP_MAGIC_RECEIVED &&
         magic != NODE_SNAP_MAGIC_STATELESS) ||
        cnt > NODE_ADDRS_MAX) {
      rv = QRAFT_ERR(err, QRAFT_ECORRUPT, "snapshot %" PRIu64 ": node header",
                     r->meta.index);
    }
  }
  if (magic_out != NULL) {
    *magic_out = magic;
  }
  for (uint32_t i = 0; i < cnt && rv == 0; i++) {
    uint8_t lb[2];
    uint8_t buf[NODE_ADDR_ENC_MAX];
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
  if (rv != 0) {
    qraft_snapshot_reader_close(r);
    return rv;
  }
  *out = r;
  return 0;
}

/* Reads the address book from the store's current snapshot and, with
 * `restore`, restores the state machine from it in one call. */
int qraft__node_restore_from_store(qraft_node *n, bool restore, bool *received,
                                   qraft_err *err) {
  qraft_snapshot_reader *r = NULL;
  uint32_t magic = 0;
  int rv = node_snap_open(n, &r, &magic, err);
  if (rv != 0) {
    return rv;
  }
  if (received != NULL) {
    *received = magic == NODE_SNAP_MAGIC_RECEIVED;
  }
  snap_in in = {.r = r, .err = err};
  if (restore && magic == NODE_SNAP_MAGIC_STATELESS) {
    /* The log was compacted there without a copy of the state because
     * the state machine reported its state durable there: it lost state
     * it reported durable (or is not a durable one any more). */
    rv = QRAFT_ERR(err, QRAFT_ECORRUPT,
                   "state machine behind stateless snapshot %" PRIu64
                   " (state lost): remove its data and add it to the "
                   "cluster again",
                   r->meta.index);
    restore = false;
  }
  if (restore) {
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

/* The magic of the store's current snapshot's header (0 if unreadable). */
static uint32_t node_snap_magic(qraft_node *n) {
  qraft_err err;
  qraft_err_init(&err, 0);
  qraft_snapshot_reader *r = NULL;
  if (qraft_storage_snapshot_reader_open(n->st, &r, &err) != 0) {
    return 0;
  }
  snap_in in = {.r = r, .err = &err};
  uint32_t magic = 0;
  if (snap_read_exact(&in, &magic, 4) != 0) {
    magic = 0;
  }
  qraft_snapshot_reader_close(r);
  return ntohl(magic);
}

/* --- restoring a received snapshot in steps (qraft_sm_ops.restore_begin):
 * the loop goes on between steps; committed entries wait in the backlog,
 * applied once the state is in place ------------------------------------- */

static void backlog_clear(qraft_node *n) {
  for (size_t i = 0; i < n->backlog_n; i++) {
    qraft_slice_release(&n->backlog[i].data);
    qraft_slice_release(&n->backlog[i].context);
  }
  n->backlog_n = 0;
  n->backlog_bytes = 0;
  n->apply_blocked = false; /* what was refused is in the new snapshot */
}

void qraft__node_backlog_add(qraft_node *n, const qraft_entry *es,
                             size_t n_es) {
  if (n->backlog_n + n_es > n->backlog_cap) {
    size_t cap = n->backlog_cap > 0 ? n->backlog_cap : 64;
    while (cap < n->backlog_n + n_es) {
      cap *= 2;
    }
    qraft_entry *b = realloc(n->backlog, cap * sizeof *b);
    QRAFT_ASSERT(b != NULL);
    n->backlog = b;
    n->backlog_cap = cap;
  }
  for (size_t i = 0; i < n_es; i++) {
    QRAFT_ASSERTF(n->backlog_n == 0 ||
                      es[i].index == n->backlog[n->backlog_n - 1].index + 1,
                  "backlog: entry %" PRIu64 " after %" PRIu64, es[i].index,
                  n->backlog[n->backlog_n - 1].index);
    qraft_entry *e = &n->backlog[n->backlog_n++];
    *e = es[i];
    e->data = qraft_slice_keep(es[i].data);
    e->context = qraft_slice_keep(es[i].context);
    n->backlog_bytes += es[i].data.len + es[i].context.len;
  }
  if (n->restore_ctx != NULL) {
    n->m_restore_waited += n_es;
  }
}

/* Drops a restore in steps (a newer snapshot is installed, the node stops):
 * the state machine's context and the store's reader. The backlog goes
 * with it only when `drop_backlog` (a newer snapshot covers it). */
static void node_restore_stop(qraft_node *n, bool drop_backlog) {
  if (n->restore_ctx != NULL) {
    n->cfg.sm->restore_end(n->cfg.sm_ud, n->restore_ctx);
    n->restore_ctx = NULL;
  }
  qraft_snapshot_reader_close(n->restore_r);
  n->restore_r = NULL;
  if (drop_backlog) {
    backlog_clear(n);
  }
}

void qraft__node_restore_abandon(qraft_node *n) {
  node_restore_stop(n, true);
  free(n->backlog);
  n->backlog = NULL;
  n->backlog_cap = 0;
}

/* A received snapshot is durable in the store: put it in the state
 * machine, in one call or (with restore_begin/step/end) in steps. */
int qraft__node_restore_received(qraft_node *n, qraft_err *err) {
  if (n->cfg.sm->restore_begin == NULL) {
    int rv = qraft__node_restore_from_store(n, true, NULL, err);
    if (rv == 0) {
      /* Entries that waited for the state machine (it refused them for
       * lack of space) are in the snapshot: the core installs one only
       * beyond its commit index. */
      if (n->backlog_n > 0) {
        QRAFT_ASSERTF(n->backlog[n->backlog_n - 1].index <= n->snap_index,
                      "backlog up to %" PRIu64 " beyond snapshot %" PRIu64,
                      n->backlog[n->backlog_n - 1].index, n->snap_index);
      }
      backlog_clear(n);
      n->m_snapshots_installed++;
      QRAFT_LOG(n->lg, QRAFT_LOG_INFO, "snapshot installed",
                QRAFT_LOG_U64("index", n->snap_index));
      qraft__node_sync_peers(n);
    }
    return rv;
  }
  qraft_snapshot_reader *r = NULL;
  int rv = node_snap_open(n, &r, NULL, err);
  if (rv != 0) {
    return rv;
  }
  /* A restore under way is of an older snapshot; every entry waiting for
   * it is committed, so at or below this one's index (the core installs a
   * snapshot only beyond its commit index). */
  if (n->backlog_n > 0) {
    QRAFT_ASSERTF(n->backlog[n->backlog_n - 1].index <= r->meta.index,
                  "backlog up to %" PRIu64 " beyond snapshot %" PRIu64,
                  n->backlog[n->backlog_n - 1].index, r->meta.index);
  }
  node_restore_stop(n, true);
  void *ctx = NULL;
  rv = n->cfg.sm->restore_begin(n->cfg.sm_ud, r->meta.index, &ctx);
  if (rv != 0) {
    qraft_snapshot_reader_close(r);
    return QRAFT_ERR(err, rv, "restore_begin of snapshot %" PRIu64,
                     r->meta.index);
  }
  n->restore_ctx = ctx;
  n->restore_r = r;
  n->snap_index = r->meta.index;
  n->conf = r->meta.conf_state;
  qraft__node_sync_peers(n);
  qraft_env_timer_arm(n->restore_timer, 0); /* after this turn of the loop */
  return 0;
}

/* The next step of a restore in steps: about snapshot_step_bytes, then the
 * loop goes on; after the last, the entries that waited are applied. */
void qraft__node_restore_step_cb(void *ud) {
  qraft_node *n = ud;
  if (n->restore_ctx == NULL) {
    return;
  }
  if (n->fatal || n->stopped) {
    node_restore_stop(n, true);
    return;
  }
  qraft__node_clock(n);
  qraft_err err;
  qraft_err_init(&err, 0);
  snap_in in = {.r = n->restore_r, .err = &err};
  uint64_t index = n->restore_r->meta.index;
  int rv = n->cfg.sm->restore_step(n->cfg.sm_ud, n->restore_ctx,
                                   n->cfg.snapshot_step_bytes, snap_in_read,
                                   &in);
  n->m_restore_steps++;
  if (rv == 1) {
    qraft_env_timer_arm(n->restore_timer, 0);
    return;
  }
  node_restore_stop(n, rv != 0);
  if (rv != 0) {
    char line[512];
    qraft_err_format(&err, line, sizeof line);
    QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "snapshot restore failed; node stops",
              QRAFT_LOG_U64("index", index),
              QRAFT_LOG_STR("error", qraft_strerror(rv)),
              QRAFT_LOG_STR("detail", line));
    n->fatal = true;
    qraft__node_fail_all(n, rv);
    return;
  }
  n->applied = index;
  n->sm_index = index;
  n->m_snapshots_installed++;
  QRAFT_LOG(n->lg, QRAFT_LOG_INFO, "snapshot installed",
            QRAFT_LOG_U64("index", index),
            QRAFT_LOG_U64("restore_steps", n->m_restore_steps));
  qraft__node_apply_backlog(n);
  qraft__node_serve_reads(n);
  qraft__node_drain(n);
}
/* --- sending: the store's snapshot, read a chunk at a time by the
 * transport as the connection's window opens ------------------------------ */

typedef struct node_send_src {
  qraft_node *n;
  qraft_snapshot_reader *r;
  uint64_t read;
} node_send_src;

static int send_src_read(void *ctx, void *buf, size_t cap, size_t *got) {
  node_send_src *s = ctx;
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv = qraft_snapshot_reader_read(s->r, buf, cap, got, &err);
  if (rv != 0) {
    char line[256];
    qraft_err_format(&err, line, sizeof line);
    QRAFT_LOG(s->n->lg, QRAFT_LOG_ERROR, "reading the snapshot to send",
              QRAFT_LOG_STR("error", line));
    return rv;
  }
  s->read += *got;
  s->n->m_snap_sent_bytes += *got;
  return 0;
}

static void send_src_close(void *ctx) {
  node_send_src *s = ctx;
  if (!s->n->freeing) {
    s->n->snap_sends--;
  }
  qraft_snapshot_reader_close(s->r);
  free(s);
}

/* --- sending a stateless snapshot: the state machine's view of its applied
 * index, read a step at a time into a small buffer as the transport asks
 * for chunks; the transport frames it (its length is not known ahead) --- */

typedef struct view_src {
  qraft_node *n;
  void *view;
  uint8_t *buf;
  size_t cap, len, off;
  bool done; /* the last step was taken */
  uint64_t index;
} view_src;

static int view_src_put(void *ctx, const void *data, size_t len) {
  view_src *s = ctx;
  if (s->len + len > s->cap) {
    size_t cap = s->cap > 0 ? s->cap : 64 * 1024;
    while (cap < s->len + len) {
      cap *= 2;
    }
    uint8_t *b = realloc(s->buf, cap);
    if (b == NULL) {
      return -ENOMEM;
    }
    s->buf = b;
    s->cap = cap;
  }
  memcpy(s->buf + s->len, data, len);
  s->len += len;
  return 0;
}

static int view_src_read(void *ctx, void *buf, size_t cap, size_t *got) {
  view_src *s = ctx;
  qraft_node *n = s->n;
  while (s->off == s->len && !s->done) {
    s->off = 0;
    s->len = 0;
    /* about the chunk the transport asks for (never 0: a step must
     * make progress) */
    size_t budget = cap > 4096 ? cap : 4096;
    int rv = n->cfg.sm->snapshot_step(n->cfg.sm_ud, s->view, budget,
                                      view_src_put, s);
    if (rv < 0) {
      QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "reading the state to send",
                QRAFT_LOG_U64("index", s->index),
                QRAFT_LOG_STR("error", qraft_strerror(rv)));
      return rv;
    }
    s->done = rv == 0;
  }
  size_t k = s->len - s->off < cap ? s->len - s->off : cap;
  memcpy(buf, s->buf + s->off, k);
  s->off += k;
  *got = k;
  n->m_snap_sent_bytes += k;
  return 0;
}

static void view_src_close(void *ctx) {
  view_src *s = ctx;
  if (!s->n->freeing) {
    s->n->snap_sends--;
  }
  s->n->cfg.sm->snapshot_end(s->n->cfg.sm_ud, s->view);
  free(s->buf);
  free(s);
}

/* The store's snapshot is stateless: MsgSnapshot `m` goes out as a
 * snapshot of the applied index, streamed from a view of the state. */
static void node_send_from_view(qraft_node *n, const qraft_message *m) {
  uint64_t term = 0, idx = 0;
  qraft_conf_state conf;
  view_src *src = NULL;
  int rv = n->restore_ctx != NULL ? QRAFT_ESTATE : 0;
  if (rv == 0) {
    rv = qraft_core_term(n->core, n->applied, &term);
  }
  if (rv == 0) {
    rv = qraft_core_conf_at(n->core, n->applied, &conf);
  }
  if (rv == 0) {
    src = calloc(1, sizeof *src);
    rv = src == NULL ? -ENOMEM : 0;
  }
  if (rv == 0) {
    src->n = n;
    src->index = n->applied;
    rv = node_snapshot_header(n, NODE_SNAP_MAGIC, view_src_put, src);
  }
  if (rv == 0) {
    rv = n->cfg.sm->snapshot_begin(n->cfg.sm_ud, &idx, &src->view);
    if (rv == 0 && idx > n->applied) {
      /* Configuration and empty entries do not reach the state machine,
       * so its index may be behind the applied index with the same state;
       * ahead of it is a state machine bug. */
      n->cfg.sm->snapshot_end(n->cfg.sm_ud, src->view);
      rv = QRAFT_ESTATE;
    }
    if (rv != 0) {
      src->view = NULL;
    }
  }
  if (rv != 0) {
    QRAFT_LOG(n->lg, QRAFT_LOG_WARN, "cannot send the state",
              QRAFT_LOG_U64("to", m->to), QRAFT_LOG_U64("index", n->applied),
              QRAFT_LOG_STR("error", qraft_strerror(rv)));
    if (src != NULL) {
      free(src->buf);
      free(src);
    }
    n->m_snap_sends_failed++;
    qraft__node_snap_report(n, m->to, false);
    return;
  }
  qraft_message sm = *m;
  qraft_snapshot snap = {
      .metadata = {.index = n->applied, .term = term, .conf_state = conf}};
#ifdef QRAFT_CANARY_NODE_STATE_SENT_AS_ASKED
  /* Planted bug (make canaries): the view of the applied index goes out
   * under the metadata the core asked for (the stateless snapshot's
   * index), older than the state it carries. */
  snap.metadata = m->snapshot->metadata;
#endif
  sm.snapshot = &snap;
  qraft_raft_snapshot_source s = {.bytes = QRAFT_RAFT_SNAPSHOT_BYTES_UNKNOWN,
                                  .read = view_src_read,
                                  .close = view_src_close,
                                  .ctx = src};
  uint64_t index = n->applied;
  n->snap_sends++;
  /* the transport may be done with the source before this returns */
  rv = qraft_raft_net_send_snapshot(n->net, &sm, &s, NULL);
  if (rv == 0) {
    n->m_snap_sends++;
    n->m_snap_sends_from_view++;
    QRAFT_LOG(n->lg, QRAFT_LOG_INFO, "sending the state as a snapshot",
              QRAFT_LOG_U64("to", m->to), QRAFT_LOG_U64("index", index),
              QRAFT_LOG_U64("asked", m->snapshot->metadata.index));
  } else {
    view_src_close(src);
    if (rv != QRAFT_EBUSY) {
      n->m_snap_sends_failed++;
    }
    qraft__node_snap_report(n, m->to, false);
  }
}

/* Sends the store's current snapshot for MsgSnapshot `m` (its metadata is
 * the store's, which may be newer than the core's), or the state from a
 * view when the store's is stateless. */
void qraft__node_send_snapshot(qraft_node *n, const qraft_message *m) {
  if (node_stateless(n) && node_snap_magic(n) == NODE_SNAP_MAGIC_STATELESS) {
    node_send_from_view(n, m);
    return;
  }
  qraft_err err;
  qraft_err_init(&err, 0);
  qraft_snapshot_reader *r = NULL;
  node_send_src *src = calloc(1, sizeof *src);
  int rv = src == NULL ? -ENOMEM
                       : qraft_storage_snapshot_reader_open(n->st, &r, &err);
  if (rv != 0) {
    free(src);
    n->m_snap_sends_failed++;
    qraft__node_snap_report(n, m->to, false);
    return;
  }
  src->n = n;
  src->r = r;
  qraft_message sm = *m;
  qraft_snapshot snap = {.metadata = r->meta};
  sm.snapshot = &snap;
  qraft_raft_snapshot_source s = {.bytes = r->bytes,
                                  .read = send_src_read,
                                  .close = send_src_close,
                                  .ctx = src};
  uint64_t index = r->meta.index, bytes = r->bytes;
  n->snap_sends++;
  /* the transport may be done with the source before this returns */
  rv = qraft_raft_net_send_snapshot(n->net, &sm, &s, NULL);
  if (rv == 0) {
    n->m_snap_sends++;
    QRAFT_LOG(n->lg, QRAFT_LOG_INFO, "sending a snapshot",
              QRAFT_LOG_U64("to", m->to), QRAFT_LOG_U64("index", index),
              QRAFT_LOG_U64("bytes", bytes));
  } else {
    send_src_close(src);
    if (rv != QRAFT_EBUSY) {
      n->m_snap_sends_failed++;
    }
    qraft__node_snap_report(n, m->to, false);
  }
}

/* --- receiving: the data goes into a store snapshot writer as it arrives;
 * the core sees the MsgSnapshot only once all of it is in and checked ---- */

typedef struct node_recv_sink {
  struct node_recv_sink *next, **prevp;
  qraft_node *n; /* NULL once the node is being freed */
  qraft_snapshot_writer *w;
  uint64_t off;
} node_recv_sink;

static void sink_unlink(node_recv_sink *k) {
  if (k->prevp != NULL) {
    *k->prevp = k->next;
    if (k->next != NULL) {
      k->next->prevp = k->prevp;
    }
    k->prevp = NULL;
  }
}

static int sink_write(void *ctx, const void *data, size_t len) {
  node_recv_sink *k = ctx;
  if (k->n == NULL || k->w == NULL) {
    return QRAFT_ECLOSED;
  }
  /* The node header's magic becomes "received": a restart tells a crash
   * during its install from a state machine that lost state. */
  uint8_t head[4];
  const uint8_t *p = data;
  if (k->off < 4) {
    uint32_t mr = htonl(NODE_SNAP_MAGIC_RECEIVED);
    size_t h = 4 - (size_t)k->off < len ? 4 - (size_t)k->off : len;
    memcpy(head, (const uint8_t *)&mr + k->off, h);
    qraft_err err;
    qraft_err_init(&err, 0);
    int rv = qraft_snapshot_writer_write(k->w, head, h, &err);
    if (rv != 0) {
      if (qraft__node_is_nospace(rv)) {
        qraft__node_snapshot_nospace(k->n, rv);
      }
      return rv;
    }
    k->off += h;
    p += h;
    len -= h;
    k->n->m_snap_recv_bytes += h;
  }
  if (len == 0) {
    return 0;
  }
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv = qraft_snapshot_writer_write(k->w, p, len, &err);
  if (rv != 0) {
    char line[256];
    qraft_err_format(&err, line, sizeof line);
    QRAFT_LOG(k->n->lg, QRAFT_LOG_WARN,
              "writing a received snapshot; dropped (the leader sends it "
              "again later)",
              QRAFT_LOG_STR("error", line));
    if (qraft__node_is_nospace(rv)) {
      qraft__node_snapshot_nospace(k->n, rv);
    }
    return rv;
  }
  k->off += len;
  k->n->m_snap_recv_bytes += len;
  return 0;
}

static void sink_abort(void *ctx) {
  node_recv_sink *k = ctx;
  if (k->n != NULL) {
    k->n->m_snap_recvs_aborted++;
  }
  qraft_snapshot_writer_abort(k->w);
  sink_unlink(k);
  free(k);
}

int qraft__node_snap_begin_cb(void *ud, qraft_id from, const qraft_message *m,
                              uint64_t bytes, qraft_raft_snapshot_sink *sink) {
  (void)from;
  qraft_node *n = ud;
  if (n->fatal || bytes < 8) {
    return QRAFT_EUNAVAILABLE;
  }
  node_recv_sink *k = calloc(1, sizeof *k);
  if (k == NULL) {
    return -ENOMEM;
  }
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv = qraft_storage_snapshot_writer_open(n->st, &m->snapshot->metadata,
                                              &k->w, &err);
  if (rv != 0) {
    char line[256];
    qraft_err_format(&err, line, sizeof line);
    QRAFT_LOG(n->lg, QRAFT_LOG_WARN, "cannot receive a snapshot",
              QRAFT_LOG_STR("error", line));
    if (qraft__node_is_nospace(rv)) {
      qraft__node_snapshot_nospace(n, rv);
    }
    free(k);
    return rv;
  }
  k->n = n;
  k->next = n->recv_sinks;
  if (k->next != NULL) {
    k->next->prevp = &k->next;
  }
  k->prevp = &n->recv_sinks;
  n->recv_sinks = k;
  *sink = (qraft_raft_snapshot_sink){
      .write = sink_write, .abort = sink_abort, .ctx = k};
  return 0;
}

void qraft__node_snap_recv_cb(void *ud, qraft_id from, qraft_wire_batch *batch,
                              void *sink_ctx) {
  qraft_node *n = ud;
  node_recv_sink *k = sink_ctx;
  qraft_snapshot_writer *w = k->w;
  k->w = NULL;
  sink_unlink(k);
  free(k);
  qraft_message *m = &batch->msgs[0];
  if (n->fatal || m->from != from) {
    qraft_snapshot_writer_abort(w);
    qraft_wire_batch_free(batch);
    return;
  }
  qraft__node_clock(n);
  n->m_messages_in++;
  /* Whole and checked: the core decides whether to install it. */
  qraft_snapshot_writer_abort(n->recv_writer);
  n->recv_writer = w;
  n->recv_index = m->snapshot->metadata.index;
  n->recv_term = m->snapshot->metadata.term;
  (void)qraft_core_step(n->core, m);
  qraft_wire_batch_free(batch);
  qraft__node_drain(n);
}

uint32_t qraft__node_snap_recvs_active(const qraft_node *n) {
  uint32_t k = 0;
  for (const node_recv_sink *s = n->recv_sinks; s != NULL; s = s->next) {
    k++;
  }
  return k;
}

/* qraft_node_free: the store closes before the transport, so the writers
 * of snapshots still streaming in go first; their sinks stay with the
 * transport, which frees them. */
void qraft__node_snap_sinks_detach(qraft_node *n) {
  while (n->recv_sinks != NULL) {
    node_recv_sink *k = n->recv_sinks;
    sink_unlink(k);
    qraft_snapshot_writer_abort(k->w);
    k->w = NULL;
    k->n = NULL;
  }
}

/* Takes a snapshot of the state machine when enough was applied since the
 * last one: written to the store, and the core compacts once it is durable
 * (rule 7). */
typedef struct compact_write {
  qraft_storage_write w;
  qraft_node *node;
  uint64_t index;
  bool stateless;
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
    QRAFT_LOG(n->lg, QRAFT_LOG_INFO, "snapshot taken; log compacted",
              QRAFT_LOG_U64("index", cw->index),
              QRAFT_LOG_STR("kind", cw->stateless ? "stateless" : "state"));
    qraft__node_snapshot_landed(n);
    n->m_snapshots_stateless += cw->stateless;
    (void)qraft_core_compact(n->core, cw->index);
  } else if (qraft__node_is_nospace(status)) {
    /* No room: the log stays as it is; a later snapshot tries again. */
    qraft_snapshot_writer_abort(cw->w.snapshot);
    QRAFT_LOG(n->lg, QRAFT_LOG_WARN, "no room for a snapshot; kept the log",
              QRAFT_LOG_U64("index", cw->index),
              QRAFT_LOG_STR("error", qraft_strerror(status)));
    qraft__node_snapshot_nospace(n, status);
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
                                 uint64_t index, bool stateless) {
  compact_write *cw = calloc(1, sizeof *cw);
  if (cw == NULL) {
    qraft_snapshot_writer_abort(w); /* the next one comes later */
    return;
  }
  cw->node = n;
  cw->index = index;
  cw->stateless = stateless;
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
  if (n->snap_pending == NULL || n->fatal || qraft__node_writes_held(n)) {
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
  node_submit_snapshot(n, w, n->snap_pending_index, n->snap_pending_stateless);
}

/* A snapshot taken here is written: it lands in the store now, or once
 * the state machine's durable index reaches it. */
static void node_snapshot_written(qraft_node *n, qraft_snapshot_writer *w,
                                  uint64_t index, bool stateless) {
  n->snap_index = index; /* no other before this one lands */
  if (n->cfg.sm->durable_index != NULL) {
    n->snap_pending = w;
    n->snap_pending_index = index;
    n->snap_pending_stateless = stateless;
    qraft__node_submit_pending_snapshot(n);
    return;
  }
  node_submit_snapshot(n, w, index, stateless);
}

/* Drops a snapshot being taken in steps (a received one is installed, the
 * node stops): its writer and the state machine's view. */
void qraft__node_snapshot_abandon(qraft_node *n) {
  if (n->snap_view == NULL && n->snap_steps_w == NULL) {
    return;
  }
  qraft_snapshot_writer_abort(n->snap_steps_w);
  n->snap_steps_w = NULL;
  n->cfg.sm->snapshot_end(n->cfg.sm_ud, n->snap_view);
  n->snap_view = NULL;
}

/* The next step of a snapshot in steps: about snapshot_step_bytes, then
 * the loop goes on (the timer fires again once it has looked at its
 * sockets and timers). */
void qraft__node_snapshot_step_cb(void *ud) {
  qraft_node *n = ud;
  if (n->snap_view == NULL) {
    return;
  }
  if (n->fatal || n->stopped) {
    qraft__node_snapshot_abandon(n);
    return;
  }
  qraft__node_clock(n);
  qraft_err err;
  qraft_err_init(&err, 0);
  snap_out o = {.w = n->snap_steps_w, .err = &err};
  int rv = n->cfg.sm->snapshot_step(n->cfg.sm_ud, n->snap_view,
                                    n->cfg.snapshot_step_bytes, snap_out_write,
                                    &o);
  n->m_snap_steps++;
  if (rv == 1) {
    qraft_env_timer_arm(n->snap_timer, 0);
    return;
  }
  if (rv != 0) {
    char line[256];
    qraft_err_format(&err, line, sizeof line);
    QRAFT_LOG(n->lg, QRAFT_LOG_WARN, "snapshot abandoned",
              QRAFT_LOG_U64("index", n->snap_steps_meta.index),
              QRAFT_LOG_STR("error", qraft_strerror(rv)),
              QRAFT_LOG_STR("detail", line));
    qraft__node_snapshot_abandon(n);
    return;
  }
  qraft_snapshot_writer *w = n->snap_steps_w;
  n->snap_steps_w = NULL;
  n->cfg.sm->snapshot_end(n->cfg.sm_ud, n->snap_view);
  n->snap_view = NULL;
  node_snapshot_written(n, w, n->snap_steps_meta.index, false);
  qraft__node_drain(n);
}

/* Where a stateless snapshot compacts the log: below the applied index by
 * half of what triggers a snapshot (snapshot_entries / 2 entries, at most
 * snapshot_log_bytes / 2 bytes), so that a follower a little behind (one
 * that acknowledged less than the quorum did) still gets entries rather
 * than the whole state; on a leader, lower still for an active follower
 * behind that, down to three quarters of the trigger (so the next
 * snapshot is a quarter of it away). A snapshot with the state has no such
 * choice: the state is the applied index's. */
static uint64_t node_stateless_index(qraft_node *n) {
  uint64_t half_n = n->cfg.snapshot_entries / 2;
  uint64_t half_bytes = n->cfg.snapshot_log_bytes / 2;
  uint64_t floor_n = n->cfg.snapshot_entries / 4 * 3;
  uint64_t floor_bytes = n->cfg.snapshot_log_bytes / 4 * 3;
  uint64_t bytes = 0, half = 0, idx = n->applied;
  for (uint64_t k = 0; idx > n->snap_index + 1; k++) {
    const qraft_entry *e = qraft_core_entry(n->core, idx);
    if (e == NULL) {
      break;
    }
    bytes += e->data.len + e->context.len + sizeof *e;
    if (half == 0 && (k >= half_n || bytes > half_bytes)) {
      half = idx;
    }
    if (k >= floor_n || bytes > floor_bytes) {
      break;
    }
    idx--;
  }
  uint64_t floor = idx, t = half != 0 ? half : idx;
  qraft_core_status cs;
  qraft_core_status_get(n->core, &cs);
  if (cs.role == QRAFT_ROLE_LEADER) {
    qraft_progress_info pr[NODE_ADDRS_MAX];
    size_t k = qraft_core_progress(n->core, pr, NODE_ADDRS_MAX);
    for (size_t i = 0; i < k && i < NODE_ADDRS_MAX; i++) {
      if (pr[i].id != n->id && pr[i].recent_active && pr[i].state != 2 &&
          pr[i].match > n->snap_index && pr[i].match < t) {
        t = pr[i].match > floor ? pr[i].match : floor;
      }
    }
  }
  return t;
}

void qraft__node_maybe_snapshot(qraft_node *n) {
  /* Not while a received snapshot is being installed: the state machine
   * is about to be replaced, and a snapshot of the old state would land in
   * the store after the newer one. */
  if (n->applied <= n->snap_index || n->fatal || n->installing ||
      qraft__node_writes_held(n) ||
      n->restore_ctx != NULL || n->snap_pending != NULL ||
      n->snap_view != NULL ||
      (n->cfg.sm->snapshot_begin != NULL && n->snap_timer == NULL)) {
    return;
  }
  qraft_core_status st;
  qraft_core_status_get(n->core, &st);
  if (n->applied > st.persisted ||
      (n->applied < n->snap_index + n->cfg.snapshot_entries &&
       st.log_applied_bytes < n->cfg.snapshot_log_bytes)) {
    return;
  }
  uint64_t term;
  qraft_snapshot_meta meta = {
      .index = node_stateless(n) ? node_stateless_index(n) : n->applied};
  if (qraft_core_term(n->core, meta.index, &term) != 0 ||
      qraft_core_conf_at(n->core, meta.index, &meta.conf_state) != 0) {
    return;
  }
  meta.term = term;
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
  if (node_stateless(n)) {
    /* The state machine holds the state durably: the header alone, landing
     * once its durable index reaches meta.index. */
    rv = node_snapshot_header(n, NODE_SNAP_MAGIC_STATELESS, snap_out_write, &o);
    if (rv != 0) {
      qraft_snapshot_writer_abort(w);
      return;
    }
    node_snapshot_written(n, w, meta.index, true);
    return;
  }
  rv = node_snapshot_header(n, NODE_SNAP_MAGIC, snap_out_write, &o);
  if (rv == 0 && n->cfg.sm->snapshot_begin != NULL) {
    /* In steps: the view is the state as of n->applied; the steps run
     * from the snapshot timer, the loop going on between them. */
    void *view = NULL;
    rv = n->cfg.sm->snapshot_begin(n->cfg.sm_ud, &idx, &view);
    if (rv != 0 || idx > n->applied) {
      if (rv == 0) {
        n->cfg.sm->snapshot_end(n->cfg.sm_ud, view);
      }
      qraft_snapshot_writer_abort(w);
      return;
    }
    n->snap_view = view;
    n->snap_steps_w = w;
    n->snap_steps_meta = meta;
    qraft_env_timer_arm(n->snap_timer, 0); /* after this turn of the loop */
    return;
  }
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
  node_snapshot_written(n, w, meta.index, false);
}

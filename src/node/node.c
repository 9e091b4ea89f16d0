/*
 * node.c: the driver. It turns the core's updates into storage writes,
 * messages and state-machine applies, in the order the durability contract
 * of qraft/core.h requires, and serves the public API of qraft/node.h.
 *
 * Everything below runs on the node's loop thread, except the functions
 * marked "any thread", which only touch the request queue and the status
 * copy under `mu`.
 *
 * It must never: send a message of messages_after_persist before the write
 * of its update is durable (asserted), apply an entry the core did not hand
 * out, or compact the log past a durable snapshot.
 */
#include <qraft/node.h>

#include <qraft/assert.h>
#include <qraft/histogram.h>
#include <qraft/wire.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* --- requests from any thread ------------------------------------------------ */

typedef enum req_kind {
  REQ_PROPOSE,
  REQ_READ,
  REQ_ADD_LEARNER,
  REQ_ADD_VOTER,
  REQ_PROMOTE,
  REQ_REMOVE,
  REQ_TRANSFER,
} req_kind;

typedef struct node_req {
  struct node_req *next;
  req_kind kind;
  qraft_buf *data;     /* propose */
  qraft_node_addr addr; /* add */
  qraft_id id;          /* promote, remove, transfer */
  qraft_propose_cb propose_cb;
  qraft_done_cb done_cb;
  void *ud;
  /* on the loop */
  uint64_t seq;      /* proposals and reads */
  uint64_t index;    /* conf changes: entry index; reads: read index */
  uint64_t deadline_ns;
  bool index_known;
  bool applied; /* a configuration change: applied, to complete */
  uint64_t tq_ns; /* proposals: qraft_node_propose was called */
  uint64_t t0_ns; /* taken by the loop */
} node_req;

/* The stages of a write, timed per proposal and exported as histograms
 * (docs/node.md, "Where the time of a write goes"): from the call to the
 * loop taking it, to its entry handed to the store (in the turn that also
 * sends it to the followers), to durable here, to committed (a quorum
 * acknowledged it), to applied, to the callback's return. */
enum {
  STAGE_QUEUED,   /* qraft_node_propose -> taken by the loop */
  STAGE_TO_WAL,   /* taken -> appended, sent and handed to the store */
  STAGE_WAL_SYNC, /* handed to the store -> durable here */
  STAGE_QUORUM,   /* durable here -> committed */
  STAGE_APPLY,    /* committed -> applied */
  STAGE_CALLBACK, /* applied -> the proposer's callback returned */
  STAGES
};
static const char *const stage_metric[STAGES] = {
    "qraft_write_queued_seconds",   "qraft_write_to_wal_seconds",
    "qraft_write_wal_sync_seconds", "qraft_write_quorum_seconds",
    "qraft_write_apply_seconds",    "qraft_write_callback_seconds"};

/* When each recent entry was handed to the store and became durable here,
 * by index (a slot holds the entry whose index it names). */
#define NODE_STAGE_RING 16384u
typedef struct stage_slot {
  uint64_t index;
  uint64_t submit_ns;
  uint64_t durable_ns;
} stage_slot;

/* --- storage writes -------------------------------------------------------------- */

typedef struct node_write {
  qraft_storage_write w;
  qraft_node *node;
  qraft_entry *ents;
  size_t ents_n;
  qraft_hard_state hs;
  qraft_message *msgs; /* after persist, deep-copied */
  size_t msgs_n;
  qraft_buf **msg_bufs; /* payload copies of ownerless slices */
  size_t msg_bufs_n;
  uint64_t persist_id;
  uint64_t submit_ns;
  bool restore_after; /* a received snapshot: restore the state machine */
  uint64_t restore_index;
} node_write;

/* --- the node --------------------------------------------------------------------- */

#define NODE_ADDRS_MAX (2 * QRAFT_CONF_NODES_MAX)
/* The node's header of a snapshot: taken here, or received from a leader
 * (a receiver rewrites the magic, so that a restart tells the two apart). */
#define NODE_SNAP_MAGIC 0x51524e53u          /* "QRNS" */
#define NODE_SNAP_MAGIC_RECEIVED 0x51524e52u /* "QRNR" */

typedef struct node_member {
  qraft_id id;
  qraft_node_addr addr;
  uint64_t refused_seen; /* the transport's count of its refusals of us */
} node_member;

struct qraft_node {
  qraft_node_config cfg;
  qraft_secret_key key;
  qraft_id id;
  qraft_logger *lg;

  qraft_env *env;
  bool own_env;
  pthread_t thread;
  bool thread_started;
  qraft_env_timer *tick_timer;
  qraft_env_timer *poll_timer;
  qraft_env_wake *wake;
  uint64_t tick_ns;
  uint64_t next_tick_ns;
  uint64_t ticked_ns;   /* when ticks were last counted */
  uint64_t leader_term; /* the term of the last leader we knew (metrics) */
  bool stalled;         /* ticks were missed since the tick timer last ran */

  qraft_storage *st;
  int st_fd;
  pthread_t bridge;
  bool bridge_started;
  int bridge_stop_fd;
  int bridge_go_fd; /* the loop polled the store: watch the fd again */
  atomic_bool bridge_waiting;

  qraft_endpoint *ep;
  qraft_raft_net *net;
  qraft_core *core;

  /* requests: queued by any thread, taken by the loop */
  pthread_mutex_t mu;
  node_req *q_head;
  node_req *q_tail;
  uint32_t pending_proposals; /* queued or in flight */
  uint64_t pending_bytes;
  uint32_t pending_reads;
  bool accepting;
  bool stop_requested;
  bool stopped;
  qraft_node_status status; /* copy for qraft_node_status_get */

  /* loop-thread state */
  node_req *inflight; /* proposals, reads and changes waiting */
  uint64_t next_seq;
  node_member members[NODE_ADDRS_MAX];
  uint32_t members_n;
  qraft_conf_state conf;
  uint64_t refused_transfer_ns; /* node_check_refused's last transfer */
  uint64_t applied;
  uint64_t sm_index; /* the last index the state machine was told of */
  uint64_t snap_index;
  /* With a durable state machine: a snapshot taken here, installed in the
   * store (which drops the log up to it) only once the state machine's
   * durable index reaches it. */
  qraft_snapshot_writer *snap_pending;
  uint64_t snap_pending_index;
  uint64_t writes_inflight;
  bool fatal;
  bool started;
  bool installing; /* a received snapshot is being written */
  /* a received snapshot waiting for the core to install it */
  qraft_snapshot_writer *recv_writer;
  uint64_t recv_index, recv_term;
  uint64_t persist_last; /* last persist id acknowledged, for the contract */
  /* a hard state whose commit index alone moved, not yet written */
  qraft_hard_state hs_lazy;
  bool hs_lazy_set;
  node_write *last_write; /* newest write not yet durable */

  /* counters: the loop thread adds, any thread reads (atomics) */
  _Atomic uint64_t m_proposals, m_proposals_failed, m_reads,
      m_applied_entries;
  _Atomic uint64_t m_elections, m_snapshots_taken, m_snapshots_installed;
  _Atomic uint64_t m_writes, m_write_entries;
  _Atomic uint64_t m_messages_out, m_messages_in;
  _Atomic uint64_t m_leader_changes;
  /* the state machine's durable index as last read, and the starts that
   * restored it from a snapshot: one received (a crash during its
   * install), or one taken here (the state machine lost durable state) */
  _Atomic uint64_t m_sm_durable, m_sm_rebuilds_received, m_sm_rebuilds_lost;
  _Atomic uint64_t m_election_timeouts;
  _Atomic uint64_t m_stepdowns[QRAFT_STEPDOWN_REASONS];
  /* transport counters, copied on the loop for readers on any thread */
  qraft_histogram h_write_us;      /* storage write: submit to durable */
  qraft_histogram h_write_entries; /* entries per storage write */
  qraft_histogram h_commit_us;     /* proposal: taken by the loop to applied */
  qraft_histogram h_stall_us;      /* gaps between tick countings that
                                      missed a tick (a stall) */
  qraft_histogram h_apply_entries; /* entries per apply batch */
  qraft_histogram h_stage_us[STAGES]; /* a write's stages (under mu) */
  stage_slot *stage_ring;             /* loop thread */
  uint64_t commit_seen_ns; /* when the committed entries being applied
                              were taken from the core */
  qraft_endpoint_metrics m_ep;
  uint32_t m_peers_n;
  qraft_peer_metrics m_peers[NODE_ADDRS_MAX];
};

static void node_drain(qraft_node *n);
static void node_fail_all(qraft_node *n, int code);
static void node_clock(qraft_node *n);

qraft_id qraft_node_raft_id(const qraft_node_id *key) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) {
    v = (v << 8) | key->bytes[i];
  }
  return v == 0 ? 1 : v;
}

qraft_id qraft_node_id_of(const qraft_node *n) { return n->id; }

void qraft_node_addr_of(const qraft_node *n, qraft_node_addr *out) {
  if (n->ep != NULL) {
    qraft_endpoint_addr(n->ep, out);
  } else {
    memset(out, 0, sizeof *out);
    out->id = n->key.public_key;
  }
}

/* --- addresses in configuration entries ----------------------------------------
 * The context of a ConfChange that adds a node is its address: the 32-byte
 * key, a count, then per address a family byte (4 or 6), the address bytes
 * and a big-endian port. */

static size_t addr_encode(const qraft_node_addr *a, uint8_t *out) {
  size_t o = 0;
  memcpy(out + o, a->id.bytes, QRAFT_KEY_BYTES);
  o += QRAFT_KEY_BYTES;
  out[o++] = (uint8_t)a->addrs_n;
  for (uint32_t i = 0; i < a->addrs_n; i++) {
    const struct sockaddr_storage *ss = &a->addrs[i];
    if (ss->ss_family == AF_INET) {
      const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
      out[o++] = 4;
      memcpy(out + o, &s4->sin_addr, 4);
      o += 4;
      memcpy(out + o, &s4->sin_port, 2);
      o += 2;
    } else {
      const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
      out[o++] = 6;
      memcpy(out + o, &s6->sin6_addr, 16);
      o += 16;
      memcpy(out + o, &s6->sin6_port, 2);
      o += 2;
    }
  }
  return o;
}

static int addr_decode(const uint8_t *p, size_t len, qraft_node_addr *a) {
  memset(a, 0, sizeof *a);
  if (len < QRAFT_KEY_BYTES + 1) {
    return QRAFT_EMALFORMED;
  }
  memcpy(a->id.bytes, p, QRAFT_KEY_BYTES);
  size_t o = QRAFT_KEY_BYTES;
  uint32_t n = p[o++];
  if (n > QRAFT_NODE_ADDRS_MAX) {
    return QRAFT_EMALFORMED;
  }
  for (uint32_t i = 0; i < n; i++) {
    if (o >= len) {
      return QRAFT_EMALFORMED;
    }
    uint8_t fam = p[o++];
    if (fam == 4 && len - o >= 6) {
      struct sockaddr_in *s4 = (struct sockaddr_in *)&a->addrs[i];
      s4->sin_family = AF_INET;
      memcpy(&s4->sin_addr, p + o, 4);
      memcpy(&s4->sin_port, p + o + 4, 2);
      o += 6;
    } else if (fam == 6 && len - o >= 18) {
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->addrs[i];
      s6->sin6_family = AF_INET6;
      memcpy(&s6->sin6_addr, p + o, 16);
      memcpy(&s6->sin6_port, p + o + 16, 2);
      o += 18;
    } else {
      return QRAFT_EMALFORMED;
    }
  }
  a->addrs_n = n;
  return 0;
}

static node_member *member_find(qraft_node *n, qraft_id id) {
  for (uint32_t i = 0; i < n->members_n; i++) {
    if (n->members[i].id == id) {
      return &n->members[i];
    }
  }
  return NULL;
}

static void member_learn(qraft_node *n, const qraft_node_addr *a) {
  qraft_id id = qraft_node_raft_id(&a->id);
  node_member *m = member_find(n, id);
  if (m == NULL) {
    if (n->members_n == NODE_ADDRS_MAX) {
      return;
    }
    m = &n->members[n->members_n++];
  }
  m->id = id;
  m->addr = *a;
}

static bool conf_has(const qraft_conf_state *cs, qraft_id id) {
  const qraft_id *lists[4] = {cs->voters, cs->voters_outgoing, cs->learners,
                              cs->learners_next};
  uint32_t ns[4] = {cs->voters_n, cs->voters_outgoing_n, cs->learners_n,
                    cs->learners_next_n};
  for (int l = 0; l < 4; l++) {
    for (uint32_t i = 0; i < ns[l]; i++) {
      if (lists[l][i] == id) {
        return true;
      }
    }
  }
  return false;
}

/* Tell the transport who the members are: dial every member but us, and
 * forget nodes that left. */
static void node_sync_peers(qraft_node *n) {
  if (n->net == NULL) {
    return;
  }
  for (uint32_t i = 0; i < n->members_n; i++) {
    node_member *m = &n->members[i];
    if (m->id == n->id) {
      continue;
    }
    if (conf_has(&n->conf, m->id)) {
      (void)qraft_raft_net_add_peer(n->net, m->id, &m->addr, true);
    } else {
      qraft_raft_net_remove_peer(n->net, m->id);
    }
  }
}

/* --- config ------------------------------------------------------------------------- */

void qraft_node_config_default(qraft_node_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->version = QRAFT_NODE_CONFIG_VERSION;
}

static int node_config_check(qraft_node_config *c, qraft_err *err) {
  if (c->version != QRAFT_NODE_CONFIG_VERSION) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "node config version %u, expected %u",
                     c->version, QRAFT_NODE_CONFIG_VERSION);
  }
  if ((c->data_dir == NULL) == (c->storage == NULL)) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "set exactly one of data_dir and storage");
  }
  if (c->key == NULL) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "key is required");
  }
  if (c->cluster_id == 0) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "cluster_id must not be 0");
  }
  if (c->bind_n == 0 || c->bind_n > 2) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "bind_n must be 1 or 2, not %u",
                     c->bind_n);
  }
  if (c->sm == NULL || c->sm->apply == NULL || c->sm->snapshot == NULL ||
      c->sm->restore == NULL) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "sm with apply, snapshot and restore is required");
  }
  if (c->tick_ms == 0) {
    c->tick_ms = 10;
  }
  /* Defaults: 1 s election timeout, 100 ms heartbeats (etcd's too). On a
   * shared 2-core machine under saturation a loop went 0.3 s without
   * running; the leader's must not be taken for dead (docs/node.md,
   * "Timing and stalls"). */
  if (c->election_ticks == 0) {
    c->election_ticks = (1000 + c->tick_ms - 1) / c->tick_ms;
    if (c->election_ticks < 10) {
      c->election_ticks = 10;
    }
  }
  if (c->heartbeat_ticks == 0) {
    c->heartbeat_ticks = c->election_ticks / 10;
    if (c->heartbeat_ticks < 1) {
      c->heartbeat_ticks = 1;
    }
  }
  if (c->election_ticks <= c->heartbeat_ticks) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "election_ticks (%u) must be greater than "
                     "heartbeat_ticks (%u)",
                     c->election_ticks, c->heartbeat_ticks);
  }
  if (c->lease_reads && c->disable_check_quorum) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "lease_reads need check-quorum");
  }
  if (c->pending_proposals_max == 0) {
    c->pending_proposals_max = 8192;
  }
  if (c->pending_bytes_max == 0) {
    c->pending_bytes_max = 64u << 20;
  }
  if (c->pending_reads_max == 0) {
    c->pending_reads_max = 4096;
  }
  if (c->proposal_timeout_ms == 0) {
    c->proposal_timeout_ms = 10 * c->election_ticks * c->tick_ms;
  }
  if (c->snapshot_entries == 0) {
    c->snapshot_entries = 10000;
  }
  /* a snapshot travels as one frame, with room for its metadata */
  uint64_t snap_max = QRAFT_WIRE_FRAME_BYTES_LIMIT - (1u << 20);
  if (c->snapshot_bytes_max == 0) {
    c->snapshot_bytes_max = snap_max;
  }
  if (c->snapshot_bytes_max > snap_max) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "snapshot_bytes_max %" PRIu64 " above %" PRIu64,
                     c->snapshot_bytes_max, snap_max);
  }
  return 0;
}

/* --- snapshots: the node's header, then the state machine's bytes ----------------
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
    size_t l = addr_encode(&n->members[i].addr, buf + 2);
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
static int node_restore_from_store(qraft_node *n, bool restore, bool *received,
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
    if (rv == 0 && addr_decode(buf, l, &a) == 0) {
      member_learn(n, &a);
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

/* --- requests: completion ----------------------------------------------------------- */

static void req_free(qraft_node *n, node_req *r) {
  pthread_mutex_lock(&n->mu);
  if (r->kind == REQ_PROPOSE) {
    n->pending_proposals--;
    n->pending_bytes -= r->data ? r->data->len : 0;
  } else if (r->kind == REQ_READ) {
    n->pending_reads--;
  }
  pthread_mutex_unlock(&n->mu);
  qraft_buf_unref(r->data);
  free(r);
}

static void req_complete(qraft_node *n, node_req *r, int status,
                         qraft_slice result) {
  qraft_id leader = 0;
  if (n->core != NULL) {
    qraft_core_status st;
    qraft_core_status_get(n->core, &st);
    leader = st.leader;
  }
  if (r->kind == REQ_PROPOSE) {
    if (status != 0) {
      n->m_proposals_failed++;
    } else if (r->t0_ns != 0) {
      uint64_t dt = (qraft_env_now_ns(n->env) - r->t0_ns) / 1000;
      pthread_mutex_lock(&n->mu);
      qraft_histogram_record(&n->h_commit_us, dt);
      pthread_mutex_unlock(&n->mu);
    }
    if (r->propose_cb) {
      r->propose_cb(r->ud, status, result, leader);
    }
  } else if (r->done_cb) {
    r->done_cb(r->ud, status, leader);
  }
  req_free(n, r);
}

static void inflight_remove(qraft_node *n, node_req *r) {
  for (node_req **pp = &n->inflight; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == r) {
      *pp = r->next;
      return;
    }
  }
}

static void inflight_add(qraft_node *n, node_req *r) {
  r->next = n->inflight;
  n->inflight = r;
}

/* --- storage writes -------------------------------------------------------------- */

static void write_free(node_write *w) {
  for (size_t i = 0; i < w->ents_n; i++) {
    qraft_slice_release(&w->ents[i].data);
    qraft_slice_release(&w->ents[i].context);
  }
  free(w->ents);
  for (size_t i = 0; i < w->msgs_n; i++) {
    qraft_message *m = &w->msgs[i];
    for (size_t k = 0; k < m->entries_n; k++) {
      qraft_slice_release(&((qraft_entry *)m->entries)[k].data);
      qraft_slice_release(&((qraft_entry *)m->entries)[k].context);
    }
    free((void *)m->entries);
    qraft_slice_release(&m->context);
    free(m->snapshot);
  }
  free(w->msgs);
  free(w);
}

static int msg_copy(qraft_message *dst, const qraft_message *src) {
  *dst = *src;
  dst->entries = NULL;
  dst->snapshot = NULL;
  dst->context = qraft_slice_keep(src->context);
  if (src->entries_n > 0) {
    qraft_entry *es = calloc(src->entries_n, sizeof *es);
    if (es == NULL) {
      return -ENOMEM;
    }
    for (size_t i = 0; i < src->entries_n; i++) {
      es[i] = src->entries[i];
      es[i].data = qraft_slice_keep(src->entries[i].data);
      es[i].context = qraft_slice_keep(src->entries[i].context);
    }
    dst->entries = es;
  }
  if (src->snapshot != NULL) {
    qraft_snapshot *sn = malloc(sizeof *sn);
    if (sn == NULL) {
      return -ENOMEM;
    }
    *sn = *src->snapshot;
    sn->data = (qraft_slice){0};
    dst->snapshot = sn;
  }
  return 0;
}

/* Reads the store's snapshot whole (bounded by snapshot_bytes_max) for a
 * MsgSnapshot. */
static int node_read_snapshot(qraft_node *n, qraft_snapshot *out,
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

static void node_send(qraft_node *n, const qraft_message *m) {
  if (n->net == NULL || m->to == n->id) {
    return;
  }
  n->m_messages_out++;
  if (m->type == QRAFT_MSG_SNAPSHOT) {
    qraft_message sm = *m;
    qraft_snapshot snap;
    qraft_buf *b = NULL;
    if (node_read_snapshot(n, &snap, &b) != 0) {
      qraft_core_report_snapshot(n->core, m->to, false);
      return;
    }
    snap.data.owner = b;
    sm.snapshot = &snap;
    int rv = qraft_raft_net_send(n->net, &sm, NULL);
    qraft_buf_unref(b);
    if (rv != 0) {
      qraft_core_report_snapshot(n->core, m->to, false);
    }
    return;
  }
  (void)qraft_raft_net_send(n->net, m, NULL);
}

static void node_write_cb(qraft_storage_write *sw, int status) {
  node_write *w = sw->data;
  qraft_node *n = w->node;
  node_clock(n);
  n->writes_inflight--;
  if (n->last_write == w) {
    n->last_write = NULL;
  }
  if (status != 0) {
    /* The store refuses writes from now on (a failed sync cannot be
     * retried safely): this node cannot go on. */
    QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "storage write failed; node stops",
              QRAFT_LOG_STR("error", qraft_strerror(status)));
    n->fatal = true;
    write_free(w);
    node_fail_all(n, status);
    return;
  }
  n->m_writes++;
  n->m_write_entries += w->ents_n;
  uint64_t durable_ns = qraft_env_now_ns(n->env);
  for (size_t i = 0; i < w->ents_n; i++) {
    stage_slot *sl = &n->stage_ring[w->ents[i].index % NODE_STAGE_RING];
    if (sl->index == w->ents[i].index) {
      sl->durable_ns = durable_ns;
    }
  }
  uint64_t wdt = (durable_ns - w->submit_ns) / 1000;
  pthread_mutex_lock(&n->mu);
  qraft_histogram_record(&n->h_write_us, wdt);
  qraft_histogram_record(&n->h_write_entries, w->ents_n);
  pthread_mutex_unlock(&n->mu);
  if (w->restore_after) {
    n->installing = false;
    qraft_err err;
    qraft_err_init(&err, 0);
    int rv = node_restore_from_store(n, true, NULL, &err);
    if (rv != 0) {
      char line[512];
      qraft_err_format(&err, line, sizeof line);
      QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "snapshot restore failed; node stops",
                QRAFT_LOG_STR("error", line));
      n->fatal = true;
      write_free(w);
      node_fail_all(n, rv);
      return;
    }
    n->m_snapshots_installed++;
    node_sync_peers(n);
  }
  /* Rule 3: now, and only now, the messages that waited for this write. */
  for (size_t i = 0; i < w->msgs_n; i++) {
    node_send(n, &w->msgs[i]);
  }
  if (w->persist_id != 0) {
    QRAFT_ASSERTF(w->persist_id > n->persist_last,
                  "writes acknowledged out of order (%" PRIu64 " after %" PRIu64
                  ")",
                  w->persist_id, n->persist_last);
    n->persist_last = w->persist_id;
    qraft_core_persisted(n->core, w->persist_id);
  }
  write_free(w);
  node_drain(n);
}

/* For backends without a file descriptor (the in-memory store): poll on
 * the next turn of the loop. */
static void node_poll_timer_cb(void *ud) {
  qraft_node *n = ud;
  qraft_storage_poll(n->st);
}

static void node_kick_storage(qraft_node *n) {
  if (n->st_fd < 0) {
    qraft_env_timer_arm(n->poll_timer, 0);
  }
}

/* --- applying ------------------------------------------------------------------------ */

/* Records the stages of our proposal `r`, whose entry `index` was applied
 * at `applied_ns` (docs/node.md, "Where the time of a write goes"). A
 * stage whose times are unknown here (the entry came in a snapshot, or its
 * slot was reused) is left out. */
static void node_stages(qraft_node *n, const node_req *r, uint64_t index,
                        uint64_t applied_ns) {
  uint64_t us[STAGES];
  bool known[STAGES] = {false};
  const stage_slot *sl = &n->stage_ring[index % NODE_STAGE_RING];
  bool have = sl->index == index && sl->submit_ns != 0 && sl->durable_ns != 0;
  uint64_t committed = n->commit_seen_ns;
#define STAGE(k, from, to)                                                     \
  do {                                                                         \
    us[k] = (to) > (from) ? ((to) - (from)) / 1000 : 0;                        \
    known[k] = true;                                                           \
  } while (0)
  if (r->tq_ns != 0 && r->t0_ns >= r->tq_ns) {
    STAGE(STAGE_QUEUED, r->tq_ns, r->t0_ns);
  }
  if (have && sl->submit_ns >= r->t0_ns) {
    STAGE(STAGE_TO_WAL, r->t0_ns, sl->submit_ns);
    STAGE(STAGE_WAL_SYNC, sl->submit_ns, sl->durable_ns);
    STAGE(STAGE_QUORUM, sl->durable_ns, committed);
  }
  STAGE(STAGE_APPLY, committed, applied_ns);
#undef STAGE
  pthread_mutex_lock(&n->mu);
  for (int k = 0; k < STAGES; k++) {
    if (known[k]) {
      qraft_histogram_record(&n->h_stage_us[k], us[k]);
    }
  }
  pthread_mutex_unlock(&n->mu);
}

static void node_apply(qraft_node *n, const qraft_entry *es, size_t n_es) {
  /* Normal entries go to the state machine in runs; configuration entries
   * are applied by the node (their addresses) and complete changes. */
  size_t i = 0;
  while (i < n_es) {
    if (es[i].type != QRAFT_ENTRY_NORMAL) {
      const qraft_entry *e = &es[i];
      qraft_conf_change_v2 cc;
      int rv = qraft_conf_change_entry_decode(e, &cc, NULL);
      qraft_node_addr a;
      if (rv == 0 && cc.context.len > 0 &&
          addr_decode(cc.context.data, cc.context.len, &a) == 0) {
        member_learn(n, &a);
      }
      n->applied = e->index;
      for (node_req *r = n->inflight; r != NULL; r = r->next) {
        if (r->kind >= REQ_ADD_LEARNER && r->kind <= REQ_REMOVE &&
            r->index_known && r->index == e->index) {
          r->applied = true; /* completed once the status shows it */
        }
      }
      i++;
      continue;
    }
    size_t j = i;
    while (j < n_es && es[j].type == QRAFT_ENTRY_NORMAL) {
      j++;
    }
    size_t run = j - i;
    qraft_slice results_local[64];
    qraft_slice *results = run <= 64 ? results_local
                                     : calloc(run, sizeof *results);
    QRAFT_ASSERT(results != NULL);
    memset(results, 0, run * sizeof *results);
    /* empty entries (a new leader's) count as applied but are not passed */
    size_t k = i;
    while (k < j) {
      size_t s = k;
      while (k < j && es[k].data.len > 0) {
        k++;
      }
      if (k > s) {
        n->cfg.sm->apply(n->cfg.sm_ud, &es[s], k - s, es[k - 1].index,
                         &results[s - i]);
        n->sm_index = es[k - 1].index;
      }
      while (k < j && es[k].data.len == 0) {
        k++;
      }
    }
    n->m_applied_entries += run;
    uint64_t applied_ns = qraft_env_now_ns(n->env);
    for (size_t x = i; x < j; x++) {
      const qraft_entry *e = &es[x];
      n->applied = e->index;
      /* our own proposals carry (our id, sequence) in their context */
      if (e->context.len == 16) {
        uint64_t origin = 0, seq = 0;
        for (int b = 0; b < 8; b++) {
          origin = (origin << 8) | e->context.data[b];
          seq = (seq << 8) | e->context.data[8 + b];
        }
        if (origin == n->id) {
          for (node_req *r = n->inflight; r != NULL; r = r->next) {
            if (r->kind == REQ_PROPOSE && r->seq == seq) {
              inflight_remove(n, r);
              node_stages(n, r, e->index, applied_ns);
              req_complete(n, r, 0, results[x - i]);
              uint64_t cb_us = (qraft_env_now_ns(n->env) - applied_ns) / 1000;
              pthread_mutex_lock(&n->mu);
              qraft_histogram_record(&n->h_stage_us[STAGE_CALLBACK], cb_us);
              pthread_mutex_unlock(&n->mu);
              applied_ns = qraft_env_now_ns(n->env); /* the next one's */
              break;
            }
          }
        }
      }
      qraft_slice_release(&results[x - i]);
    }
    if (results != results_local) {
      free(results);
    }
    i = j;
  }
  /* The batch ended with entries that carry nothing for the state machine
   * (configuration changes, a new leader's empty entry): tell it their
   * index, so that a durable state machine records where its state stands
   * and its durable index can reach every snapshot's. */
  if (n_es > 0 && n->sm_index < es[n_es - 1].index) {
    n->cfg.sm->apply(n->cfg.sm_ud, NULL, 0, es[n_es - 1].index, NULL);
    n->sm_index = es[n_es - 1].index;
  }
}

static void node_serve_reads(qraft_node *n) {
  for (node_req *r = n->inflight; r != NULL;) {
    node_req *next = r->next;
    if (r->kind == REQ_READ && r->index_known && n->applied >= r->index) {
      inflight_remove(n, r);
      req_complete(n, r, 0, (qraft_slice){0});
    }
    r = next;
  }
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
  n->writes_inflight--;
  if (status == 0) {
    n->snap_index = cw->index;
    n->m_snapshots_taken++;
    (void)qraft_core_compact(n->core, cw->index);
  } else {
    QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "snapshot write failed; node stops",
              QRAFT_LOG_STR("error", qraft_strerror(status)));
    n->fatal = true;
    node_fail_all(n, status);
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
  node_kick_storage(n);
}

/* The durable-index contract (qraft/node.h): a snapshot taken here goes to
 * the store, which drops the log up to it, only once the state machine's
 * state is durable at that index, so that a restart always finds the log
 * from the state machine's durable index on. */
static void node_submit_pending_snapshot(qraft_node *n) {
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

static void node_maybe_snapshot(qraft_node *n) {
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
    node_submit_pending_snapshot(n);
    return;
  }
  node_submit_snapshot(n, w, meta.index);
}

/* --- the update loop ------------------------------------------------------------------ */

static void node_publish_status(qraft_node *n) {
  qraft_node_status s;
  memset(&s, 0, sizeof s);
  qraft_core_status st;
  qraft_core_status_get(n->core, &st);
  s.id = n->id;
  s.role = st.role;
  s.leader = st.leader;
  s.term = st.term;
  s.commit = st.commit;
  s.applied = n->applied;
  s.last_index = st.last_index;
  s.snapshot_index = st.snapshot_index;
  s.joint = n->conf.voters_outgoing_n > 0;
  s.running = !n->stopped;
  if (n->cfg.sm->durable_index != NULL) {
    n->m_sm_durable = n->cfg.sm->durable_index(n->cfg.sm_ud);
  }
  s.sm_durable_index = n->m_sm_durable;
  s.sm_rebuilds_lost = n->m_sm_rebuilds_lost;
  n->m_election_timeouts = st.election_timeouts;
  for (int r = 0; r < QRAFT_STEPDOWN_REASONS; r++) {
    n->m_stepdowns[r] = st.stepdowns[r];
  }
  qraft_progress_info prs[QRAFT_NODE_MEMBERS_MAX * 2];
  size_t prs_n = qraft_core_progress(n->core, prs, QRAFT_NODE_MEMBERS_MAX * 2);
  for (uint32_t i = 0; i < n->members_n && s.members_n < QRAFT_NODE_MEMBERS_MAX;
       i++) {
    node_member *m = &n->members[i];
    if (!conf_has(&n->conf, m->id)) {
      continue;
    }
    qraft_member_status *ms = &s.members[s.members_n++];
    ms->id = m->id;
    ms->addr = m->addr;
    bool voter = false;
    for (uint32_t k = 0; k < n->conf.voters_n; k++) {
      voter = voter || n->conf.voters[k] == m->id;
    }
    for (uint32_t k = 0; k < n->conf.voters_outgoing_n; k++) {
      voter = voter || n->conf.voters_outgoing[k] == m->id;
    }
    ms->voter = voter;
    ms->learner = !voter;
    for (size_t k = 0; k < prs_n && k < QRAFT_NODE_MEMBERS_MAX * 2; k++) {
      if (prs[k].id == m->id) {
        ms->match = prs[k].match;
        ms->next = prs[k].next;
      }
    }
  }
  qraft_endpoint_metrics em;
  memset(&em, 0, sizeof em);
  qraft_peer_metrics pm[NODE_ADDRS_MAX];
  uint32_t pm_n = 0;
  if (n->ep != NULL && !n->stopped) {
    qraft_endpoint_metrics_get(n->ep, &em);
    for (uint32_t i = 0; i < n->members_n; i++) {
      if (n->members[i].id != n->id &&
          qraft_endpoint_peer_metrics(n->ep, &n->members[i].addr.id,
                                      QRAFT_RAFT_ALPN, &pm[pm_n]) == 0) {
        pm_n++;
      }
    }
  }
  pthread_mutex_lock(&n->mu);
  n->status = s;
  if (n->ep != NULL && !n->stopped) {
    n->m_ep = em;
    memcpy(n->m_peers, pm, pm_n * sizeof pm[0]);
    n->m_peers_n = pm_n;
  }
  pthread_mutex_unlock(&n->mu);
}

static void node_drain(qraft_node *n) {
  while (!n->fatal && qraft_core_has_update(n->core)) {
    qraft_update u;
    qraft_core_take_update(n->core, &u);
    if (u.soft_state_changed && u.role == QRAFT_ROLE_LEADER) {
      n->m_elections++;
      QRAFT_LOG(n->lg, QRAFT_LOG_INFO, "became leader",
                QRAFT_LOG_U64("term", u.hard_state_changed ? u.hard_state.term
                                                           : 0));
    }
    if (u.soft_state_changed && u.leader != QRAFT_ID_NONE) {
      qraft_core_status cs;
      qraft_core_status_get(n->core, &cs);
      if (cs.term > n->leader_term) {
        if (n->leader_term != 0) {
          n->m_leader_changes++; /* a new term has a leader */
        }
        n->leader_term = cs.term;
      }
    }
    /* the write of this update */
    node_write *w = NULL;
    bool has_write = u.persist_id != 0 || u.messages_after_persist_n > 0;
    if (has_write) {
      w = calloc(1, sizeof *w);
      QRAFT_ASSERT(w != NULL);
      w->node = n;
      w->persist_id = u.persist_id;
      if (u.truncate_from != 0) {
        QRAFT_ASSERTF(u.entries_n > 0 && u.entries[0].index == u.truncate_from,
                      "truncation at %" PRIu64 " without entries from there",
                      u.truncate_from);
      }
      if (u.entries_n > 0) {
        w->ents = calloc(u.entries_n, sizeof *w->ents);
        QRAFT_ASSERT(w->ents != NULL);
        for (size_t i = 0; i < u.entries_n; i++) {
          w->ents[i] = u.entries[i];
          w->ents[i].data = qraft_slice_keep(u.entries[i].data);
          w->ents[i].context = qraft_slice_keep(u.entries[i].context);
        }
        w->ents_n = u.entries_n;
        w->w.entries = w->ents;
        w->w.entries_n = w->ents_n;
      }
      if (u.hard_state_changed && !u.must_sync) {
        /* The commit index alone moved: written with the next write that
         * is synced anyway, not synced on its own (qraft/core.h,
         * must_sync). */
        n->hs_lazy = u.hard_state;
        n->hs_lazy_set = true;
      } else if (u.hard_state_changed) {
        w->hs = u.hard_state;
        w->w.hard_state = &w->hs;
        n->hs_lazy_set = false; /* this one is newer */
      }
      if (w->w.hard_state == NULL && n->hs_lazy_set &&
          (u.entries_n > 0 || u.snapshot != NULL)) {
        w->hs = n->hs_lazy;
        w->w.hard_state = &w->hs;
        n->hs_lazy_set = false;
      }
      if (u.snapshot != NULL) {
        QRAFT_ASSERTF(n->recv_writer != NULL &&
                          n->recv_index == u.snapshot->index &&
                          n->recv_term == u.snapshot->term,
                      "installing snapshot %" PRIu64 " that was not received",
                      u.snapshot->index);
        w->w.snapshot = n->recv_writer;
        n->recv_writer = NULL;
        /* a snapshot of our own waiting for durability is older */
        qraft_snapshot_writer_abort(n->snap_pending);
        n->snap_pending = NULL;
        w->restore_after = true;
        n->installing = true;
        w->restore_index = u.snapshot->index;
      }
      if (u.messages_after_persist_n > 0) {
        w->msgs = calloc(u.messages_after_persist_n, sizeof *w->msgs);
        QRAFT_ASSERT(w->msgs != NULL);
        for (size_t i = 0; i < u.messages_after_persist_n; i++) {
          QRAFT_ASSERT(msg_copy(&w->msgs[i], &u.messages_after_persist[i]) ==
                       0);
        }
        w->msgs_n = u.messages_after_persist_n;
      }
#ifdef QRAFT_CANARY_NODE_ACK_BEFORE_DURABLE
      /* Planted bug (make canaries): the messages that must wait for the
       * write (append acknowledgements, votes) leave at once, and again
       * when it is durable. */
      for (size_t i = 0; i < u.messages_after_persist_n; i++) {
        node_send(n, &u.messages_after_persist[i]);
      }
#endif
      w->w.cb = node_write_cb;
      w->w.data = w;
    }
    /* Rule 2: these go now, in parallel with the write. */
    for (size_t i = 0; i < u.messages_n; i++) {
      node_send(n, &u.messages[i]);
    }
    /* Rule 5: apply. */
    uint64_t last = 0;
    if (u.committed_n > 0) {
      pthread_mutex_lock(&n->mu);
      qraft_histogram_record(&n->h_apply_entries, u.committed_n);
      pthread_mutex_unlock(&n->mu);
      n->commit_seen_ns = qraft_env_now_ns(n->env);
      node_apply(n, u.committed, u.committed_n);
      last = u.committed[u.committed_n - 1].index;
    }
    if (u.conf_changed) {
      n->conf = *u.conf_state;
    }
    for (size_t i = 0; i < u.read_states_n; i++) {
      for (node_req *r = n->inflight; r != NULL; r = r->next) {
        if (r->kind == REQ_READ && r->seq == u.read_states[i].id) {
          r->index = u.read_states[i].index;
          r->index_known = true;
        }
      }
    }
    bool conf_changed = u.conf_changed;
    /* `u` is invalid from here: calls into the core follow. */
    if (w != NULL && w->w.snapshot == NULL && w->ents_n == 0 &&
        w->w.hard_state == NULL) {
      /* Nothing to write (or only a commit index, kept for later): these
       * messages, and this update's persist id, wait only for earlier
       * writes. They ride with the newest one still in flight (writes
       * complete in order, and acknowledging an id acknowledges the ones
       * before it), or go now if everything is durable. */
      node_write *last = n->last_write;
      if (w->persist_id != 0) {
        QRAFT_ASSERT(n->hs_lazy_set);
        if (last != NULL) {
          QRAFT_ASSERT(w->persist_id > last->persist_id);
          last->persist_id = w->persist_id;
        }
      }
      if (last == NULL) {
        for (size_t i = 0; i < w->msgs_n; i++) {
          node_send(n, &w->msgs[i]);
        }
        if (w->persist_id != 0) {
          QRAFT_ASSERT(w->persist_id > n->persist_last);
          n->persist_last = w->persist_id;
          qraft_core_persisted(n->core, w->persist_id);
        }
      } else if (w->msgs_n > 0) {
        qraft_message *m = realloc(last->msgs, (last->msgs_n + w->msgs_n) *
                                                   sizeof *m);
        QRAFT_ASSERT(m != NULL);
        memcpy(m + last->msgs_n, w->msgs, w->msgs_n * sizeof *m);
        last->msgs = m;
        last->msgs_n += w->msgs_n;
        w->msgs_n = 0; /* moved */
      }
      write_free(w);
      w = NULL;
    }
    if (w != NULL) {
      qraft_err err;
      qraft_err_init(&err, 0);
      w->submit_ns = qraft_env_now_ns(n->env);
      int rv = qraft_storage_submit(n->st, &w->w, &err);
      if (rv != 0) {
        QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "storage refused a write; node stops",
                  QRAFT_LOG_STR("error", qraft_strerror(rv)));
        if (w->w.snapshot != NULL) {
          qraft_snapshot_writer_abort(w->w.snapshot);
          w->w.snapshot = NULL;
        }
        write_free(w);
        n->fatal = true;
        node_fail_all(n, rv);
        return;
      }
      n->writes_inflight++;
      n->last_write = w;
      for (size_t i = 0; i < w->ents_n; i++) {
        stage_slot *sl = &n->stage_ring[w->ents[i].index % NODE_STAGE_RING];
        *sl = (stage_slot){.index = w->ents[i].index,
                           .submit_ns = w->submit_ns};
      }
      node_kick_storage(n);
    }
    if (last != 0) {
      qraft_core_applied(n->core, last);
    }
    if (conf_changed) {
      node_sync_peers(n);
    }
    node_serve_reads(n);
    node_maybe_snapshot(n);
  }
  node_submit_pending_snapshot(n);
  if (!n->fatal) {
    node_publish_status(n);
    /* configuration changes complete after the status shows them */
    for (node_req *r = n->inflight; r != NULL;) {
      node_req *next = r->next;
      if (r->applied) {
        inflight_remove(n, r);
        req_complete(n, r, 0, (qraft_slice){0});
      }
      r = next;
    }
  }
}

/* --- the loop: requests, ticks, transport ---------------------------------------------- */

static void node_take_requests(qraft_node *n) {
  pthread_mutex_lock(&n->mu);
  node_req *list = n->q_head;
  n->q_head = n->q_tail = NULL;
  pthread_mutex_unlock(&n->mu);
  uint64_t now = qraft_env_now_ns(n->env);
  while (list != NULL) {
    node_req *r = list;
    list = r->next;
    r->next = NULL;
    r->deadline_ns = now + (uint64_t)n->cfg.proposal_timeout_ms * 1000000u;
    r->t0_ns = now;
    if (n->fatal || n->stop_requested) {
      req_complete(n, r, QRAFT_ESHUTDOWN, (qraft_slice){0});
      continue;
    }
    int rv = 0;
    switch (r->kind) {
    case REQ_PROPOSE: {
      r->seq = ++n->next_seq;
      qraft_buf *ctx = qraft_buf_new(16);
      QRAFT_ASSERT(ctx != NULL);
      for (int b = 0; b < 8; b++) {
        ctx->data[b] = (uint8_t)(n->id >> (56 - 8 * b));
        ctx->data[8 + b] = (uint8_t)(r->seq >> (56 - 8 * b));
      }
      ctx->len = 16;
      qraft_entry e = {
          .type = QRAFT_ENTRY_NORMAL,
          .data = {.data = r->data->data, .len = r->data->len, .owner = r->data},
          .context = {.data = ctx->data, .len = 16, .owner = ctx}};
      rv = qraft_core_propose(n->core, &e, 1, NULL, NULL);
      qraft_buf_unref(ctx);
      n->m_proposals++;
      break;
    }
    case REQ_READ:
      r->seq = ++n->next_seq;
      rv = qraft_core_read_index(n->core, r->seq);
      n->m_reads++;
      break;
    case REQ_ADD_LEARNER:
    case REQ_ADD_VOTER:
    case REQ_PROMOTE:
    case REQ_REMOVE: {
      qraft_conf_change_v2 cc;
      memset(&cc, 0, sizeof cc);
      cc.changes_n = 1;
      uint8_t ctxbuf[QRAFT_KEY_BYTES + 1 + QRAFT_NODE_ADDRS_MAX * 19];
      if (r->kind == REQ_ADD_LEARNER || r->kind == REQ_ADD_VOTER) {
        cc.changes[0].node_id = qraft_node_raft_id(&r->addr.id);
        cc.changes[0].change_type = r->kind == REQ_ADD_VOTER
                                        ? QRAFT_CONF_ADD_NODE
                                        : QRAFT_CONF_ADD_LEARNER_NODE;
        size_t l = addr_encode(&r->addr, ctxbuf);
        cc.context = (qraft_slice){.data = ctxbuf, .len = l};
        /* the node being added must be able to connect before the change
         * is applied */
        member_learn(n, &r->addr);
        if (n->net != NULL) {
          (void)qraft_raft_net_add_peer(n->net, cc.changes[0].node_id, &r->addr,
                                        true);
        }
      } else {
        cc.changes[0].node_id = r->id;
        cc.changes[0].change_type = r->kind == REQ_PROMOTE
                                        ? QRAFT_CONF_ADD_NODE
                                        : QRAFT_CONF_REMOVE_NODE;
      }
      uint64_t index = 0;
      rv = qraft_core_propose_conf_change(n->core, &cc, &index, NULL);
      r->index = index;
      r->index_known = rv == 0;
      break;
    }
    case REQ_TRANSFER:
      rv = qraft_core_transfer_leader(n->core, r->id);
      r->deadline_ns = now + (uint64_t)n->cfg.election_ticks *
                                 n->cfg.tick_ms * 1000000u * 2;
      break;
    }
    if (rv != 0) {
      /* refused at once (QRAFT_EPROPOSAL_DROPPED, QRAFT_ENOTLEADER, ...):
       * never appended, unlike QRAFT_EDROPPED (lost, outcome unknown) */
      req_complete(n, r, rv,
                   (qraft_slice){0});
    } else {
      inflight_add(n, r);
    }
  }
  node_drain(n);
}

static void node_expire(qraft_node *n) {
  uint64_t now = qraft_env_now_ns(n->env);
  qraft_core_status st;
  qraft_core_status_get(n->core, &st);
  for (node_req *r = n->inflight; r != NULL;) {
    node_req *next = r->next;
    if (r->kind == REQ_TRANSFER && st.role == QRAFT_ROLE_FOLLOWER &&
        st.leader == r->id) {
      inflight_remove(n, r);
      req_complete(n, r, 0, (qraft_slice){0});
    } else if (r->kind == REQ_TRANSFER && st.role == QRAFT_ROLE_LEADER &&
               r->id == n->id) {
      inflight_remove(n, r);
      req_complete(n, r, 0, (qraft_slice){0});
    } else if (now >= r->deadline_ns) {
      inflight_remove(n, r);
      req_complete(n, r,
                   r->kind == REQ_PROPOSE ? QRAFT_EDROPPED : QRAFT_ETIMEDOUT,
                   (qraft_slice){0});
    }
    r = next;
  }
}

/*
 * A voter that refuses our connections as unauthorized does not know our
 * key: it missed the configuration entry that added us (it was down or cut
 * off) and cannot learn it from us, since it admits only keys its own
 * configuration names. If we lead, it would lag forever. So a leader that
 * a voter refuses hands leadership to another voter that holds the whole
 * log; a leader the lagging voter knows brings it up to date, after which
 * it admits us too. At most once per two election timeouts.
 */
static void node_check_refused(qraft_node *n) {
  qraft_core_status st;
  qraft_core_status_get(n->core, &st);
  bool refused = false;
  for (uint32_t i = 0; i < n->members_n; i++) {
    node_member *m = &n->members[i];
    qraft_peer_metrics pm;
    if (m->id == n->id ||
        qraft_endpoint_peer_metrics(n->ep, &m->addr.id, QRAFT_RAFT_ALPN,
                                    &pm) != 0 ||
        pm.refused == m->refused_seen) {
      continue;
    }
    m->refused_seen = pm.refused;
    for (uint32_t v = 0; v < n->conf.voters_n; v++) {
      refused |= n->conf.voters[v] == m->id;
    }
  }
  uint64_t now = qraft_env_now_ns(n->env);
  uint64_t gap = 2ull * n->cfg.election_ticks * n->tick_ns;
  if (!refused || st.role != QRAFT_ROLE_LEADER || st.lead_transferee != 0 ||
      (n->refused_transfer_ns != 0 && now - n->refused_transfer_ns < gap)) {
    return;
  }
  qraft_progress_info pr[NODE_ADDRS_MAX];
  size_t k = qraft_core_progress(n->core, pr, NODE_ADDRS_MAX);
  k = k < NODE_ADDRS_MAX ? k : NODE_ADDRS_MAX;
  qraft_id cand[NODE_ADDRS_MAX];
  size_t cand_n = 0;
  for (size_t i = 0; i < k; i++) {
    if (pr[i].id != n->id && !pr[i].is_learner && pr[i].recent_active &&
        pr[i].match == st.last_index && conf_has(&n->conf, pr[i].id)) {
      cand[cand_n++] = pr[i].id;
    }
  }
  if (cand_n == 0) {
    return;
  }
  uint64_t r;
  qraft_env_random(n->env, &r, sizeof r);
  qraft_id to = cand[r % cand_n];
  n->refused_transfer_ns = now;
  QRAFT_LOG(n->lg, QRAFT_LOG_INFO,
            "a voter refuses us (it has not seen us added); handing leadership "
            "to a voter it may know",
            QRAFT_LOG_U64("to", to));
  (void)qraft_core_transfer_leader(n->core, to);
}

/*
 * The clock. Every entry point of the loop calls this before it hands
 * anything to the core, so the core counts every tick that has gone by,
 * however long the loop was away (a lease read must see the time). The
 * decisions that a stall could make wrong wait for the tick timer, which
 * first reads what arrived meanwhile (node_tick_cb).
 */
static void node_clock(qraft_node *n) {
  uint64_t now = qraft_env_now_ns(n->env);
  if (n->core == NULL || n->next_tick_ns > now) {
    return;
  }
  uint64_t k = (now - n->next_tick_ns) / n->tick_ns + 1;
  qraft_core_elapse(n->core, k);
  n->next_tick_ns += k * n->tick_ns;
  if (k > 1) {
    n->stalled = true;
    pthread_mutex_lock(&n->mu);
    qraft_histogram_record(&n->h_stall_us, (now - n->ticked_ns) / 1000);
    pthread_mutex_unlock(&n->mu);
  }
  n->ticked_ns = now;
}

static void node_tick_cb(void *ud) {
  qraft_node *n = ud;
  if (n->fatal) {
    return;
  }
  node_clock(n);
#ifdef QRAFT_CANARY_NODE_TICKS_BEFORE_MESSAGES
  n->stalled = false; /* planted bug: decide before reading what arrived */
#endif
  if (n->stalled && n->ep != NULL) {
    /* A libuv loop runs its timers before it reads its sockets: after a
     * stall, what our peers sent meanwhile is still unread. Check-quorum
     * and the election timeout must see it, or a leader whose followers
     * answered steps down and a follower whose leader is alive campaigns.
     * (8192 datagrams a socket is more than its receive buffer holds.) */
    qraft_endpoint_poll(n->ep, 8192);
  }
  n->stalled = false;
  qraft_core_check_timeouts(n->core);
  node_expire(n);
  if (n->net != NULL) {
    node_check_refused(n);
  }
  node_drain(n);
  qraft_env_timer_arm(n->tick_timer, n->next_tick_ns);
}

static void node_shutdown_on_loop(qraft_node *n);

static void node_wake_cb(void *ud) {
  qraft_node *n = ud;
  if (n->stopped) {
    return;
  }
  if (n->st_fd >= 0) {
    qraft_storage_poll(n->st);
    if (atomic_exchange(&n->bridge_waiting, false)) {
      uint64_t one = 1;
      ssize_t wr = write(n->bridge_go_fd, &one, sizeof one);
      (void)wr;
    }
  }
  pthread_mutex_lock(&n->mu);
  bool stop = n->stop_requested;
  pthread_mutex_unlock(&n->mu);
  if (stop) {
    node_shutdown_on_loop(n);
    return;
  }
  node_clock(n);
  node_take_requests(n);
}

static void node_recv_cb(void *ud, qraft_id from, qraft_wire_batch *batch) {
  qraft_node *n = ud;
  if (n->fatal) {
    qraft_wire_batch_free(batch);
    return;
  }
  node_clock(n);
  for (size_t i = 0; i < batch->msgs_n; i++) {
    qraft_message *m = &batch->msgs[i];
    n->m_messages_in++;
    if (m->from != from) {
      continue;
    }
    if (m->type == QRAFT_MSG_SNAPSHOT && m->snapshot != NULL) {
      /* Store the data first; the core decides whether to install it. */
      qraft_snapshot_writer_abort(n->recv_writer);
      n->recv_writer = NULL;
      qraft_err err;
      qraft_err_init(&err, 0);
      qraft_snapshot_writer *w = NULL;
      /* the header says the snapshot was received (a restart tells a
       * crash during its install from a state machine that lost state) */
      const uint8_t *d = m->snapshot->data.data;
      size_t dl = m->snapshot->data.len;
      uint8_t magic[4];
      uint32_t mr = htonl(NODE_SNAP_MAGIC_RECEIVED);
      memcpy(magic, &mr, 4);
      if (dl < 8 ||
          qraft_storage_snapshot_writer_open(n->st, &m->snapshot->metadata, &w,
                                             &err) != 0 ||
          qraft_snapshot_writer_write(w, magic, 4, &err) != 0 ||
          qraft_snapshot_writer_write(w, d + 4, dl - 4, &err) != 0) {
        qraft_snapshot_writer_abort(w);
        continue;
      }
      n->recv_writer = w;
      n->recv_index = m->snapshot->metadata.index;
      n->recv_term = m->snapshot->metadata.term;
    }
    (void)qraft_core_step(n->core, m);
  }
  qraft_wire_batch_free(batch);
  node_drain(n);
}

static void node_peer_cb(void *ud, qraft_id peer, bool reachable) {
  qraft_node *n = ud;
  if (!reachable && n->core != NULL) {
    node_clock(n);
    qraft_core_report_unreachable(n->core, peer);
    node_drain(n);
  }
}

static void node_snapshot_sent_cb(void *ud, qraft_id to, int status) {
  qraft_node *n = ud;
  node_clock(n);
  qraft_core_report_snapshot(n->core, to, status == 0);
  node_drain(n);
}

static bool node_unknown_sender_cb(void *ud, qraft_id sender,
                                   const qraft_node_id *key) {
  qraft_node *n = ud;
  /* Accept a peer we do not know yet only while we are not a member of
   * any configuration (a node being added); the id must be its key's. */
  return n->conf.voters_n == 0 && qraft_node_raft_id(key) == sender;
}

static bool node_authorize_cb(void *ud, const qraft_node_id *peer,
                              const char *alpn) {
  qraft_node *n = ud;
  if (n->conf.voters_n == 0) {
    return true; /* a joining node accepts the cluster that adds it */
  }
  return qraft_raft_net_authorize_cb(n->net, peer, alpn);
}

/* --- the storage bridge: eventfd readable -> wake the loop ------------------------ */

/* The store signals completed writes on its eventfd; the env has no fd
 * watcher, so this thread turns "readable" into a wake-up of the loop, then
 * waits until the loop has polled the store (bridge_go_fd) before it
 * watches the fd again, so it never spins on a readable fd. */
static void *node_bridge_main(void *arg) {
  qraft_node *n = arg;
  pthread_setname_np(pthread_self(), "qraft-bridge");
  for (;;) {
    struct pollfd p[2] = {{.fd = n->st_fd, .events = POLLIN},
                          {.fd = n->bridge_stop_fd, .events = POLLIN}};
    int rv = poll(p, 2, -1);
    if (rv < 0 && errno == EINTR) {
      continue;
    }
    if (p[1].revents != 0) {
      return NULL;
    }
    if ((p[0].revents & POLLIN) == 0) {
      continue;
    }
    atomic_store(&n->bridge_waiting, true);
    qraft_env_wake_send(n->wake);
    struct pollfd q[2] = {{.fd = n->bridge_go_fd, .events = POLLIN},
                          {.fd = n->bridge_stop_fd, .events = POLLIN}};
    for (;;) {
      rv = poll(q, 2, -1);
      if (rv < 0 && errno == EINTR) {
        continue;
      }
      break;
    }
    if (q[1].revents != 0) {
      return NULL;
    }
    uint64_t v;
    ssize_t r = read(n->bridge_go_fd, &v, sizeof v);
    (void)r;
  }
}

/* --- lifecycle ------------------------------------------------------------------------ */

static int node_open_core(qraft_node *n, qraft_err *err) {
  qraft_storage_state ss;
  int rv = qraft_storage_state_get(n->st, &ss, err);
  if (rv != 0) {
    return rv;
  }
  n->applied = 0;
  n->sm_index = 0;
  n->snap_index = 0;
  /* Where the state machine stands: a durable one resumes from its durable
   * index and the node re-applies the log after it; one that keeps nothing,
   * or is behind the snapshot, is restored from the snapshot first. */
  bool durable = n->cfg.sm->durable_index != NULL;
  uint64_t d0 = durable ? n->cfg.sm->durable_index(n->cfg.sm_ud) : 0;
  n->m_sm_durable = d0;
  if (durable && d0 > ss.last_index && d0 > ss.snapshot.index) {
    return QRAFT_ERR(err, QRAFT_ECORRUPT,
                     "the state machine is durable at index %" PRIu64
                     ", beyond this log (last index %" PRIu64
                     "): its state belongs to another log",
                     d0, ss.last_index);
  }
  if (ss.snapshot.index > 0) {
    bool keep = durable && d0 >= ss.snapshot.index;
    bool received = false;
    rv = node_restore_from_store(n, !keep, &received, err);
    if (rv != 0) {
      return QRAFT_ERR(err, rv, "restore from snapshot %" PRIu64,
                       ss.snapshot.index);
    }
    if (durable && !keep && received) {
      n->m_sm_rebuilds_received++;
      QRAFT_LOG(n->lg, QRAFT_LOG_INFO,
                "state machine restored from a received snapshot whose "
                "install a crash interrupted",
                QRAFT_LOG_U64("durable_index", d0),
                QRAFT_LOG_U64("snapshot", ss.snapshot.index));
    } else if (durable && !keep) {
      /* The store installed this snapshot, and dropped the log up to it,
       * only once the state machine reported its state durable there: the
       * state machine lost state it had reported durable (or the log was
       * compacted past it). Rebuilt from the snapshot; nothing is lost. */
      n->m_sm_rebuilds_lost++;
      QRAFT_LOG(n->lg, QRAFT_LOG_ERROR,
                "durable-index contract broken: the state machine's durable "
                "state is behind a snapshot taken here (the log was compacted "
                "past it, or it lost state it had reported durable); "
                "restored it from the snapshot",
                QRAFT_LOG_U64("durable_index", d0),
                QRAFT_LOG_U64("snapshot", ss.snapshot.index));
    }
  }
  if (durable && d0 > n->applied) {
    n->applied = d0;
    n->sm_index = d0;
  }
  size_t cnt = ss.last_index >= ss.first_index
                   ? (size_t)(ss.last_index - ss.first_index + 1)
                   : 0;
  qraft_entry *es = NULL;
  if (cnt > 0) {
    es = calloc(cnt, sizeof *es);
    if (es == NULL) {
      return QRAFT_ERR(err, -ENOMEM, "reading %zu entries", cnt);
    }
    size_t got = 0;
    while (got < cnt) {
      size_t k = 0;
      rv = qraft_storage_entries(n->st, ss.first_index + got,
                                 ss.last_index + 1, UINT64_MAX, es + got,
                                 cnt - got, &k, err);
      if (rv != 0) {
        qraft_storage_entries_release(es, got);
        free(es);
        return QRAFT_ERR(err, rv, "reading the log back");
      }
      got += k;
    }
  }
  qraft_core_config cc;
  qraft_core_config_default(&cc);
  cc.id = n->id;
  qraft_env_random(n->env, &cc.seed, sizeof cc.seed);
  cc.election_ticks = n->cfg.election_ticks;
  cc.heartbeat_ticks = n->cfg.heartbeat_ticks;
  cc.pre_vote = !n->cfg.disable_pre_vote;
  cc.check_quorum = !n->cfg.disable_check_quorum;
  cc.read_only = n->cfg.lease_reads ? QRAFT_READ_ONLY_LEASE_BASED
                                    : QRAFT_READ_ONLY_SAFE;
  cc.pending_reads_max = n->cfg.pending_reads_max;
  qraft_snapshot_meta sm = ss.snapshot;
  if (sm.index == 0) {
    sm.term = ss.prev_term;
  }
  qraft_core_restore rs = {.hard_state = ss.hard_state,
                           .snapshot = sm,
                           .entries = es,
                           .entries_n = cnt,
                           .applied = n->applied};
  if (rs.hard_state.commit < n->applied) {
    rs.hard_state.commit = n->applied; /* what was applied was committed */
  }
  /* The addresses of the members added by the entries the state machine
   * kept (they are not applied again). */
  for (size_t i = 0; i < cnt && es[i].index <= n->applied; i++) {
    qraft_conf_change_v2 ccv;
    qraft_node_addr a;
    if (es[i].type != QRAFT_ENTRY_NORMAL &&
        qraft_conf_change_entry_decode(&es[i], &ccv, NULL) == 0 &&
        ccv.context.len > 0 &&
        addr_decode(ccv.context.data, ccv.context.len, &a) == 0) {
      member_learn(n, &a);
    }
  }
  rv = qraft_core_new(&cc, &rs, &n->core, err);
  qraft_storage_entries_release(es, cnt);
  free(es);
  if (rv != 0) {
    return rv;
  }
  n->conf = *qraft_core_conf_state(n->core);
  return 0;
}

int qraft_node_new(const qraft_node_config *cfg_in, qraft_node **out,
                   qraft_err *err) {
  *out = NULL;
  qraft_node_config cfg = *cfg_in;
  int rv = node_config_check(&cfg, err);
  if (rv != 0) {
    return rv;
  }
  qraft_node *n = calloc(1, sizeof *n);
  if (n == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "node");
  }
  n->cfg = cfg;
  n->key = *cfg.key;
  n->cfg.key = &n->key;
  n->id = qraft_node_raft_id(&n->key.public_key);
  n->lg = cfg.logger;
  n->st_fd = -1;
  n->bridge_stop_fd = -1;
  n->bridge_go_fd = -1;
  n->tick_ns = (uint64_t)cfg.tick_ms * 1000000u;
  n->accepting = true;
  n->stage_ring = calloc(NODE_STAGE_RING, sizeof *n->stage_ring);
  if (n->stage_ring == NULL) {
    free(n);
    return QRAFT_ERR(err, -ENOMEM, "node");
  }
  pthread_mutex_init(&n->mu, NULL);
  if (cfg.env != NULL) {
    n->env = cfg.env;
  } else {
    rv = qraft_env_uv_new(&n->env);
    if (rv != 0) {
      QRAFT_ERR(err, rv, "libuv env");
      goto err_free;
    }
    n->own_env = true;
  }
  /* Proposals carry (our id, seq) in their context and reads use seq as
   * their id; entries and read states of an earlier run of this node may
   * still come back after a restart, so a run's numbers must not start
   * where the last run's did (found by qraft-sim --full). */
  qraft_env_random(n->env, &n->next_seq, sizeof n->next_seq);
  n->next_seq &= (UINT64_C(1) << 62) - 1;
  if (cfg.storage != NULL) {
    n->st = cfg.storage;
  } else {
    rv = qraft_storage_wal_open(cfg.data_dir, NULL, &n->st, err);
    if (rv != 0) {
      QRAFT_ERR(err, rv, "open %s", cfg.data_dir);
      goto err_env;
    }
  }
  n->st_fd = qraft_storage_fd(n->st);
  rv = node_open_core(n, err);
  if (rv != 0) {
    goto err_storage;
  }
  *out = n;
  return 0;

err_storage:
  if (cfg.storage == NULL) {
    qraft_storage_close(n->st); /* a store given to us stays the caller's */
  }
err_env:
  if (n->own_env) {
    qraft_env_free(n->env);
  }
err_free:
  pthread_mutex_destroy(&n->mu);
  free(n->stage_ring);
  free(n);
  return rv;
}

int qraft_node_bootstrap(qraft_node *n, const qraft_node_addr *members,
                         size_t cnt, qraft_err *err) {
  if (n->started) {
    return QRAFT_ERR(err, QRAFT_ESTATE, "bootstrap after start");
  }
  qraft_storage_state ss;
  int rv = qraft_storage_state_get(n->st, &ss, err);
  if (rv != 0) {
    return rv;
  }
  if (ss.last_index != 0 || ss.snapshot.index != 0 ||
      ss.hard_state.term != 0) {
    return QRAFT_ERR(err, QRAFT_ESTATE, "bootstrap: the store is not empty");
  }
  if (cnt == 0 || cnt > QRAFT_CONF_NODES_MAX) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "bootstrap with %zu members", cnt);
  }
  bool self = false;
  qraft_conf_change ccs[QRAFT_CONF_NODES_MAX];
  uint8_t ctx[QRAFT_CONF_NODES_MAX][QRAFT_KEY_BYTES + 1 +
                                    QRAFT_NODE_ADDRS_MAX * 19];
  for (size_t i = 0; i < cnt; i++) {
    qraft_id id = qraft_node_raft_id(&members[i].id);
    self = self || id == n->id;
    size_t l = addr_encode(&members[i], ctx[i]);
    ccs[i] = (qraft_conf_change){.change_type = QRAFT_CONF_ADD_NODE,
                                 .node_id = id,
                                 .context = {.data = ctx[i], .len = l}};
  }
  if (!self) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "bootstrap: this node is not among the members");
  }
  qraft_entry es[QRAFT_CONF_NODES_MAX];
  rv = qraft_core_bootstrap_entries(ccs, cnt, es, err);
  if (rv != 0) {
    return rv;
  }
  qraft_hard_state hs = {.term = 1, .commit = cnt};
  qraft_storage_write w = {.entries = es, .entries_n = cnt, .hard_state = &hs};
  rv = qraft_storage_write_sync(n->st, &w, err);
  for (size_t i = 0; i < cnt; i++) {
    qraft_slice_release(&es[i].data);
  }
  if (rv != 0) {
    return QRAFT_ERR(err, rv, "bootstrap write");
  }
  /* reopen the core on the bootstrapped log */
  qraft_core_free(n->core);
  n->core = NULL;
  return node_open_core(n, err);
}

static bool node_loop_done(void *ud) { return ((qraft_node *)ud)->stopped; }

static void *node_thread_main(void *arg) {
  qraft_node *n = arg;
  pthread_setname_np(pthread_self(), "qraft-loop"); /* top -H, perf */
  (void)qraft_env_run(n->env, UINT64_MAX, node_loop_done, n);
  return NULL;
}

static void node_shutdown_on_loop(qraft_node *n);

static int node_start_on_loop(qraft_node *n) {
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv = qraft_env_timer_new(n->env, node_tick_cb, n, &n->tick_timer);
  if (rv == 0) {
    rv = qraft_env_timer_new(n->env, node_poll_timer_cb, n, &n->poll_timer);
  }
  if (rv == 0) {
    rv = qraft_env_wake_new(n->env, node_wake_cb, n, &n->wake);
  }
  if (rv != 0) {
    return rv;
  }
  qraft_endpoint_config ec;
  memset(&ec, 0, sizeof ec);
  ec.env = n->env;
  ec.key = &n->key;
  ec.bind_n = n->cfg.bind_n;
  memcpy(ec.bind, n->cfg.bind, sizeof ec.bind);
  ec.authorize_cb = node_authorize_cb;
  ec.authorize_ud = n;
  ec.logger = n->lg;
  rv = qraft_endpoint_new(&ec, &n->ep, &err);
  if (rv != 0) {
    char line[512];
    qraft_err_format(&err, line, sizeof line);
    QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "endpoint", QRAFT_LOG_STR("error", line));
    return rv;
  }
  qraft_raft_net_config nc;
  memset(&nc, 0, sizeof nc);
  nc.ep = n->ep;
  nc.cluster_id = n->cfg.cluster_id;
  nc.self_id = n->id;
  nc.group_id = 1;
  nc.snapshot_bytes_max = n->cfg.snapshot_bytes_max + (1u << 20);
  nc.recv_cb = node_recv_cb;
  nc.peer_cb = node_peer_cb;
  nc.snapshot_sent_cb = node_snapshot_sent_cb;
  nc.unknown_sender_cb = node_unknown_sender_cb;
  nc.ud = n;
  rv = qraft_raft_net_new(&nc, &n->net, &err);
  if (rv != 0) {
    char line[512];
    qraft_err_format(&err, line, sizeof line);
    QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "raft transport",
              QRAFT_LOG_STR("error", line));
    return rv;
  }
  node_drain(n); /* applies the log's configuration entries */
  node_sync_peers(n);
  n->ticked_ns = qraft_env_now_ns(n->env);
  n->next_tick_ns = n->ticked_ns + n->tick_ns;
  qraft_env_timer_arm(n->tick_timer, n->next_tick_ns);
  return 0;
}

int qraft_node_start(qraft_node *n) {
  if (n->started) {
    return QRAFT_ESTATE;
  }
  n->started = true;
  int rv = node_start_on_loop(n);
  if (rv != 0) {
    return rv;
  }
  if (n->st_fd >= 0) {
    n->bridge_stop_fd = eventfd(0, EFD_CLOEXEC);
    n->bridge_go_fd = eventfd(0, EFD_CLOEXEC);
    if (n->bridge_stop_fd < 0 || n->bridge_go_fd < 0) {
      return -errno;
    }
    if (pthread_create(&n->bridge, NULL, node_bridge_main, n) != 0) {
      return -EAGAIN;
    }
    n->bridge_started = true;
  }
  if (n->own_env) {
    if (pthread_create(&n->thread, NULL, node_thread_main, n) != 0) {
      return -EAGAIN;
    }
    n->thread_started = true;
  }
  return 0;
}

static void node_fail_all(qraft_node *n, int code) {
  while (n->inflight != NULL) {
    node_req *r = n->inflight;
    n->inflight = r->next;
    req_complete(n, r, code, (qraft_slice){0});
  }
  pthread_mutex_lock(&n->mu);
  node_req *list = n->q_head;
  n->q_head = n->q_tail = NULL;
  n->accepting = false;
  pthread_mutex_unlock(&n->mu);
  while (list != NULL) {
    node_req *r = list;
    list = r->next;
    req_complete(n, r, code, (qraft_slice){0});
  }
}

/* Runs on the loop: finish what can finish, fail the rest, close. */
static void node_shutdown_on_loop(qraft_node *n) {
  node_take_requests(n);
  /* let pending writes land (their callbacks send and apply) */
  for (int i = 0; i < 1000 && n->writes_inflight > 0 && !n->fatal; i++) {
    if (n->st_fd >= 0) {
      (void)qraft_storage_wait(n->st, 10);
    }
    qraft_storage_poll(n->st);
  }
  node_fail_all(n, QRAFT_ESHUTDOWN);
  qraft_env_timer_free(n->tick_timer);
  n->tick_timer = NULL;
  qraft_env_timer_free(n->poll_timer);
  n->poll_timer = NULL;
  if (n->ep != NULL) {
    qraft_endpoint_shutdown(n->ep);
  }
  n->stopped = true;
  node_publish_status(n);
}

void qraft_node_stop(qraft_node *n) {
  pthread_mutex_lock(&n->mu);
  bool already = n->stop_requested;
  n->stop_requested = true;
  n->accepting = false;
  pthread_mutex_unlock(&n->mu);
  if (already || !n->started) {
    return;
  }
  if (n->thread_started) {
    /* The loop thread shuts the node down in its wake callback and its run
     * ends (node_loop_done); then nothing else touches the node. */
    qraft_env_wake_send(n->wake);
    pthread_join(n->thread, NULL);
    n->thread_started = false;
  } else {
    /* The caller's env: we are on its loop thread. */
    node_shutdown_on_loop(n);
  }
  if (n->bridge_started) {
    uint64_t one = 1;
    ssize_t wr = write(n->bridge_stop_fd, &one, sizeof one);
    (void)wr;
    pthread_join(n->bridge, NULL);
    n->bridge_started = false;
  }
}

void qraft_node_free(qraft_node *n) {
  if (n == NULL) {
    return;
  }
  qraft_node_stop(n);
  qraft_snapshot_writer_abort(n->recv_writer);
  qraft_snapshot_writer_abort(n->snap_pending);
  qraft_raft_net_free(n->net);
  qraft_endpoint_free(n->ep);
  qraft_env_wake_free(n->wake);
  qraft_core_free(n->core);
  if (!(n->cfg.storage != NULL && n->cfg.storage_borrowed)) {
    qraft_storage_close(n->st);
  }
  if (n->bridge_stop_fd >= 0) {
    close(n->bridge_stop_fd);
  }
  if (n->bridge_go_fd >= 0) {
    close(n->bridge_go_fd);
  }
  if (n->own_env) {
    qraft_env_free(n->env);
  }
  pthread_mutex_destroy(&n->mu);
  free(n->stage_ring);
  free(n);
}

/* --- public requests (any thread) ------------------------------------------------------ */

static int node_enqueue(qraft_node *n, node_req *r) {
  pthread_mutex_lock(&n->mu);
  if (!n->accepting) {
    pthread_mutex_unlock(&n->mu);
    return QRAFT_ESHUTDOWN;
  }
  if (r->kind == REQ_PROPOSE) {
    size_t len = r->data->len;
    if (n->pending_proposals >= n->cfg.pending_proposals_max ||
        n->pending_bytes + len > n->cfg.pending_bytes_max) {
      pthread_mutex_unlock(&n->mu);
      return QRAFT_EBUSY;
    }
    n->pending_proposals++;
    n->pending_bytes += len;
  } else if (r->kind == REQ_READ) {
    if (n->pending_reads >= n->cfg.pending_reads_max) {
      pthread_mutex_unlock(&n->mu);
      return QRAFT_EBUSY;
    }
    n->pending_reads++;
  }
  r->next = NULL;
  if (n->q_tail != NULL) {
    n->q_tail->next = r;
  } else {
    n->q_head = r;
  }
  n->q_tail = r;
  pthread_mutex_unlock(&n->mu);
  if (n->wake != NULL) {
    qraft_env_wake_send(n->wake);
  }
  return 0;
}

int qraft_node_propose(qraft_node *n, const void *data, size_t len,
                       qraft_propose_cb cb, void *ud) {
  if (len > (1u << 20)) {
    return QRAFT_ELIMIT;
  }
  node_req *r = calloc(1, sizeof *r);
  if (r == NULL) {
    return -ENOMEM;
  }
  r->kind = REQ_PROPOSE;
  r->tq_ns = qraft_env_now_ns(n->env);
  r->data = qraft_buf_copy(data, len);
  if (r->data == NULL) {
    free(r);
    return -ENOMEM;
  }
  r->propose_cb = cb;
  r->ud = ud;
  int rv = node_enqueue(n, r);
  if (rv != 0) {
    qraft_buf_unref(r->data);
    free(r);
  }
  return rv;
}

static int node_simple_req(qraft_node *n, req_kind kind,
                           const qraft_node_addr *addr, qraft_id id,
                           qraft_done_cb cb, void *ud) {
  node_req *r = calloc(1, sizeof *r);
  if (r == NULL) {
    return -ENOMEM;
  }
  r->kind = kind;
  if (addr != NULL) {
    r->addr = *addr;
  }
  r->id = id;
  r->done_cb = cb;
  r->ud = ud;
  int rv = node_enqueue(n, r);
  if (rv != 0) {
    free(r);
  }
  return rv;
}

int qraft_node_read_barrier(qraft_node *n, qraft_done_cb cb, void *ud) {
  return node_simple_req(n, REQ_READ, NULL, 0, cb, ud);
}
int qraft_node_add_learner(qraft_node *n, const qraft_node_addr *addr,
                           qraft_done_cb cb, void *ud) {
  return node_simple_req(n, REQ_ADD_LEARNER, addr, 0, cb, ud);
}
int qraft_node_add_voter(qraft_node *n, const qraft_node_addr *addr,
                         qraft_done_cb cb, void *ud) {
  return node_simple_req(n, REQ_ADD_VOTER, addr, 0, cb, ud);
}
int qraft_node_promote(qraft_node *n, qraft_id id, qraft_done_cb cb,
                       void *ud) {
  return node_simple_req(n, REQ_PROMOTE, NULL, id, cb, ud);
}
int qraft_node_remove(qraft_node *n, qraft_id id, qraft_done_cb cb, void *ud) {
  return node_simple_req(n, REQ_REMOVE, NULL, id, cb, ud);
}
int qraft_node_transfer(qraft_node *n, qraft_id to, qraft_done_cb cb,
                        void *ud) {
  return node_simple_req(n, REQ_TRANSFER, NULL, to, cb, ud);
}

void qraft_node_status_get(qraft_node *n, qraft_node_status *out) {
  pthread_mutex_lock(&n->mu);
  *out = n->status;
  pthread_mutex_unlock(&n->mu);
}

/* snprintf into buf at *off, tracking the length the whole text needs. */
static void mt_put(char *buf, size_t size, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void mt_put(char *buf, size_t size, size_t *off, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(*off < size ? buf + *off : NULL,
                    *off < size ? size - *off : 0, fmt, ap);
  va_end(ap);
  if (k > 0) {
    *off += (size_t)k;
  }
}

static size_t node_transport_metrics(qraft_node *n, char *buf, size_t size) {
  size_t off = 0;
  pthread_mutex_lock(&n->mu);
  qraft_endpoint_metrics em = n->m_ep;
  uint32_t pn = n->m_peers_n;
  qraft_peer_metrics pm[NODE_ADDRS_MAX];
  memcpy(pm, n->m_peers, pn * sizeof pm[0]);
  pthread_mutex_unlock(&n->mu);
  mt_put(buf, size, &off, "# TYPE qraft_transport_connections gauge\n"
                          "qraft_transport_connections %" PRIu64 "\n",
         em.conns_up);
  mt_put(buf, size, &off,
         "# TYPE qraft_transport_handshake_failures_total counter\n");
  for (int r = 0; r < QRAFT_HS_FAIL_N; r++) {
    mt_put(buf, size, &off,
           "qraft_transport_handshake_failures_total{reason=\"%s\"} %" PRIu64
           "\n",
           qraft_handshake_failure_name((qraft_handshake_failure)r),
           em.handshake_failures[r]);
  }
  static const char *const names[] = {
      "bytes_out_total", "bytes_in_total", "messages_out_total",
      "messages_in_total", "lost_packets_total", "reconnects_total",
      "smoothed_rtt_seconds", "cwnd_bytes"};
  for (int k = 0; k < 8; k++) {
    bool gauge = k >= 6;
    mt_put(buf, size, &off, "# TYPE qraft_peer_%s %s\n", names[k],
           gauge ? "gauge" : "counter");
    for (uint32_t i = 0; i < pn; i++) {
      char hex[QRAFT_NODE_ID_HEX_SIZE];
      qraft_node_id_to_hex(&pm[i].peer, hex);
      hex[16] = '\0'; /* the Raft id part: enough to tell peers apart */
      uint64_t v[] = {pm[i].bytes_out,    pm[i].bytes_in,
                      pm[i].messages_out, pm[i].messages_in,
                      pm[i].lost_packets, pm[i].reconnects,
                      0,                  pm[i].cwnd_bytes};
      if (k == 6) {
        mt_put(buf, size, &off, "qraft_peer_%s{peer=\"%s\"} %.6f\n",
               names[k], hex, (double)pm[i].smoothed_rtt_ns / 1e9);
      } else {
        mt_put(buf, size, &off, "qraft_peer_%s{peer=\"%s\"} %" PRIu64 "\n",
               names[k], hex, v[k]);
      }
    }
  }
  return off;
}

size_t qraft_node_metrics_text(qraft_node *n, char *buf, size_t size) {
  qraft_node_status s;
  qraft_node_status_get(n, &s);
  uint64_t v[] = {n->m_elections,      n->m_proposals,
                  n->m_proposals_failed, n->m_reads,
                  n->m_applied_entries, n->m_snapshots_taken,
                  n->m_snapshots_installed, n->m_writes,
                  n->m_write_entries,   n->m_messages_out,
                  n->m_messages_in};
  size_t off = (size_t)snprintf(
      buf, size,
      "# TYPE qraft_term gauge\nqraft_term %" PRIu64 "\n"
      "# TYPE qraft_is_leader gauge\nqraft_is_leader %d\n"
      "# TYPE qraft_commit_index gauge\nqraft_commit_index %" PRIu64 "\n"
      "# TYPE qraft_applied_index gauge\nqraft_applied_index %" PRIu64 "\n"
      "# TYPE qraft_apply_lag gauge\nqraft_apply_lag %" PRIu64 "\n"
      "# TYPE qraft_elections_won_total counter\n"
      "qraft_elections_won_total %" PRIu64 "\n"
      "# TYPE qraft_proposals_total counter\nqraft_proposals_total %" PRIu64
      "\n"
      "# TYPE qraft_proposals_failed_total counter\n"
      "qraft_proposals_failed_total %" PRIu64 "\n"
      "# TYPE qraft_reads_total counter\nqraft_reads_total %" PRIu64 "\n"
      "# TYPE qraft_applied_entries_total counter\n"
      "qraft_applied_entries_total %" PRIu64 "\n"
      "# TYPE qraft_snapshots_taken_total counter\n"
      "qraft_snapshots_taken_total %" PRIu64 "\n"
      "# TYPE qraft_snapshots_installed_total counter\n"
      "qraft_snapshots_installed_total %" PRIu64 "\n"
      "# TYPE qraft_storage_writes_total counter\n"
      "qraft_storage_writes_total %" PRIu64 "\n"
      "# TYPE qraft_storage_entries_total counter\n"
      "qraft_storage_entries_total %" PRIu64 "\n"
      "# TYPE qraft_messages_out_total counter\nqraft_messages_out_total %" PRIu64
      "\n"
      "# TYPE qraft_messages_in_total counter\nqraft_messages_in_total %" PRIu64
      "\n",
      s.term, s.role == QRAFT_ROLE_LEADER, s.commit, s.applied,
      s.commit > s.applied ? s.commit - s.applied : 0, v[0], v[1], v[2], v[3],
      v[4], v[5], v[6], v[7], v[8], v[9], v[10]);
  mt_put(buf, size, &off,
      "# HELP qraft_leader_changes_total New terms with a leader after the "
      "first this member knew.\n"
      "# TYPE qraft_leader_changes_total counter\n"
      "qraft_leader_changes_total %" PRIu64 "\n"
      "# HELP qraft_election_timeouts_total Campaigns this member's election "
      "timeout started.\n"
      "# TYPE qraft_election_timeouts_total counter\n"
      "qraft_election_timeouts_total %" PRIu64 "\n"
      "# HELP qraft_leader_stepdowns_total Times this member stopped leading, "
      "by reason.\n"
      "# TYPE qraft_leader_stepdowns_total counter\n",
      (uint64_t)n->m_leader_changes, (uint64_t)n->m_election_timeouts);
  for (int r = 0; r < QRAFT_STEPDOWN_REASONS; r++) {
    mt_put(buf, size, &off,
        "qraft_leader_stepdowns_total{reason=\"%s\"} %" PRIu64 "\n",
        qraft_stepdown_reason_name((qraft_stepdown_reason)r),
        (uint64_t)n->m_stepdowns[r]);
  }
  if (n->cfg.sm->durable_index != NULL) {
    mt_put(buf, size, &off,
        "# HELP qraft_sm_durable_index The index the state machine's state "
        "is durable at; the log is kept after it.\n"
        "# TYPE qraft_sm_durable_index gauge\n"
        "qraft_sm_durable_index %" PRIu64 "\n"
        "# HELP qraft_sm_durable_lag Applied entries not yet durable in the "
        "state machine.\n"
        "# TYPE qraft_sm_durable_lag gauge\n"
        "qraft_sm_durable_lag %" PRIu64 "\n"
        "# HELP qraft_sm_rebuilds_total Starts that restored the state "
        "machine from a snapshot above its durable index: a received one "
        "whose install a crash interrupted, or one taken here (state_lost: "
        "the state machine lost state it had reported durable).\n"
        "# TYPE qraft_sm_rebuilds_total counter\n"
        "qraft_sm_rebuilds_total{reason=\"install_interrupted\"} %" PRIu64 "\n"
        "qraft_sm_rebuilds_total{reason=\"state_lost\"} %" PRIu64 "\n",
        s.sm_durable_index,
        s.applied > s.sm_durable_index ? s.applied - s.sm_durable_index : 0,
        (uint64_t)n->m_sm_rebuilds_received, (uint64_t)n->m_sm_rebuilds_lost);
  }
  off += node_transport_metrics(n, off < size ? buf + off : NULL,
                                off < size ? size - off : 0);
  pthread_mutex_lock(&n->mu);
  qraft_histogram hs[5] = {n->h_write_us, n->h_write_entries, n->h_commit_us,
                           n->h_apply_entries, n->h_stall_us};
  qraft_histogram stages[STAGES];
  memcpy(stages, n->h_stage_us, sizeof stages);
  pthread_mutex_unlock(&n->mu);
  mt_put(buf, size, &off,
         "# HELP qraft_write_queued_seconds The stages of this member's "
         "proposals: the call to the loop taking it (queued), to its entry "
         "appended, sent to the followers and handed to the store (to_wal), "
         "to durable here (wal_sync), to committed by a quorum (quorum), to "
         "applied (apply), to the callback's return (callback).\n");
  for (int k = 0; k < STAGES; k++) {
    off += qraft_histogram_prometheus(&stages[k], stage_metric[k], 1e6,
                                      off < size ? buf + off : NULL,
                                      off < size ? size - off : 0);
  }
  mt_put(buf, size, &off,
         "# HELP qraft_loop_stall_seconds_max The longest the loop went "
         "without counting ticks, among the gaps that missed a tick "
         "(qraft_loop_stall_seconds).\n"
         "# TYPE qraft_loop_stall_seconds_max gauge\n"
         "qraft_loop_stall_seconds_max %.6f\n",
         (double)hs[4].max / 1e6);
  static const char *const hn[5] = {"qraft_storage_write_seconds",
                                    "qraft_storage_write_entries",
                                    "qraft_commit_seconds",
                                    "qraft_apply_batch_entries",
                                    "qraft_loop_stall_seconds"};
  static const double hscale[5] = {1e6, 1, 1e6, 1, 1e6};
  for (int i = 0; i < 5; i++) {
    off += qraft_histogram_prometheus(&hs[i], hn[i], hscale[i],
                                      off < size ? buf + off : NULL,
                                      off < size ? size - off : 0);
  }
  return off;
}

/*
 * core_sim.c: the deterministic simulator of Raft cores (see qraft/sim.h).
 *
 * One thread, one seeded PRNG, a virtual clock that jumps from event to
 * event. Nodes are qraft cores driven exactly as a real driver must drive
 * them (the durability contract of qraft/core.h), over a simulated network
 * and simulated disks. Invariants are checked after every step; anything a
 * checker finds ends the run with the checker's name and what it saw.
 *
 * Never: wall-clock time, threads, global state, or iteration over anything
 * whose order is not determined by the seed.
 */
#include <qraft/sim.h>

#include <qraft/assert.h>
#include <qraft/core.h>
#include <qraft/prng.h>

#include "sim/lincheck.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define SIM_NODES_MAX 7
#define SIM_KEYS 5
#define SIM_CLIENTS_MAX 5
#define TICK_US 10000u /* one Raft tick is 10 ms of virtual time */
#define ELECTION_TICKS 10u
#define HEARTBEAT_TICKS 2u
#define LIVENESS_US (60u * ELECTION_TICKS * TICK_US)

/* --- small helpers ----------------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const void *data, size_t len) {
  const uint8_t *p = data;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Chain hash of a log prefix: h(i) = H(h(i-1), index, term, type, data).
 * Equal chain hashes at an index mean equal prefixes (log matching). */
static uint64_t chain_next(uint64_t prev, const qraft_entry *e) {
  uint64_t h = prev ^ 0xcbf29ce484222325ULL;
  uint64_t hdr[3] = {e->index, e->term, (uint64_t)e->type};
  h = fnv1a(h, hdr, sizeof hdr);
  h = fnv1a(h, e->data.data, e->data.len);
  return mix64(h);
}

/* --- the key-value state machine ------------------------------------------- */

enum { OP_PUT = 1, OP_CAS = 2 };
#define OP_BYTES 30

typedef struct kv_op {
  uint8_t kind;
  uint32_t client;
  uint32_t seq;
  uint8_t key;
  uint64_t v1; /* put: value; cas: expected */
  uint64_t v2; /* cas: new */
} kv_op;

static void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) {
    p[i] = (uint8_t)(v >> (8 * i));
  }
}

static uint64_t get_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) {
    v |= (uint64_t)p[i] << (8 * i);
  }
  return v;
}

static void op_encode(const kv_op *op, uint8_t out[OP_BYTES]) {
  out[0] = op->kind;
  put_le(out + 1, op->client, 4);
  put_le(out + 5, op->seq, 4);
  out[9] = op->key;
  put_le(out + 10, op->v1, 8);
  put_le(out + 18, op->v2, 8);
  put_le(out + 26, 0x51524654u, 4); /* "QRFT": a marker */
}

static bool op_decode(const qraft_entry *e, kv_op *op) {
  if (e->type != QRAFT_ENTRY_NORMAL || e->data.len != OP_BYTES) {
    return false;
  }
  const uint8_t *p = e->data.data;
  op->kind = p[0];
  op->client = (uint32_t)get_le(p + 1, 4);
  op->seq = (uint32_t)get_le(p + 5, 4);
  op->key = p[9];
  op->v1 = get_le(p + 10, 8);
  op->v2 = get_le(p + 18, 8);
  return (op->kind == OP_PUT || op->kind == OP_CAS) && op->key < SIM_KEYS &&
         get_le(p + 26, 4) == 0x51524654u;
}

typedef struct sm_state {
  uint64_t kv[SIM_KEYS];
  /* Client sessions (thesis 6.3): the last sequence number applied per
   * client, so that a proposal delivered twice (a duplicated MsgPropose, a
   * retry) is applied once. */
  uint32_t last_seq[SIM_CLIENTS_MAX];
  uint64_t chain; /* chain hash of the log prefix the state reflects */
  uint64_t index;
} sm_state;

/* --- messages ------------------------------------------------------------ */

typedef struct sim_msg {
  qraft_message m;
  qraft_entry *ents;
  bool has_snap;
  qraft_snapshot snap;
  sm_state snap_data;
  uint8_t ctx[32];
  uint64_t from_incarnation;
} sim_msg;

static void msg_free(sim_msg *sm) {
  if (sm == NULL) {
    return;
  }
  for (size_t i = 0; i < sm->m.entries_n; i++) {
    qraft_slice_release(&sm->ents[i].data);
    qraft_slice_release(&sm->ents[i].context);
  }
  free(sm->ents);
  free(sm);
}

static sim_msg *msg_copy(const qraft_message *m) {
  sim_msg *sm = calloc(1, sizeof *sm);
  if (sm == NULL) {
    return NULL;
  }
  sm->m = *m;
  if (m->entries_n > 0) {
    sm->ents = calloc(m->entries_n, sizeof *sm->ents);
    if (sm->ents == NULL) {
      free(sm);
      return NULL;
    }
    for (size_t i = 0; i < m->entries_n; i++) {
      sm->ents[i] = m->entries[i];
      sm->ents[i].data = qraft_slice_keep(m->entries[i].data);
      sm->ents[i].context = qraft_slice_keep(m->entries[i].context);
    }
  }
  sm->m.entries = sm->ents;
  if (m->context.len > 0) {
    QRAFT_ASSERT(m->context.len <= sizeof sm->ctx);
    memcpy(sm->ctx, m->context.data, m->context.len);
    sm->m.context = (qraft_slice){.data = sm->ctx, .len = m->context.len};
  }
  if (m->snapshot != NULL) {
    sm->has_snap = true;
    sm->snap = *m->snapshot;
    sm->snap.data = (qraft_slice){0};
    sm->m.snapshot = &sm->snap;
  }
  return sm;
}

/* --- events --------------------------------------------------------------- */

typedef enum ev_type {
  EV_TICK,
  EV_DELIVER,
  EV_DISK,
  EV_CLIENT,
  EV_CHAOS,
  EV_RESTART,
  EV_RESUME,
  EV_HEAL_LINK,
  EV_SNAP_REPORT,
  EV_STOP_NODE,
  EV_HEAL_ALL,
  EV_KILL,
  EV_ISOLATE,
  EV_LEASE_SPLIT,
} ev_type;

typedef struct sim_event {
  uint64_t time;
  uint64_t seq;
  ev_type type;
  int node;
  int node2;
  uint64_t incarnation;
  uint64_t x;
  sim_msg *msg;
} sim_event;

/* --- disks ------------------------------------------------------------------- */

typedef struct sim_write {
  uint64_t done_time;
  bool has_hs;
  qraft_hard_state hs;
  bool has_snap;
  qraft_snapshot_meta snap;
  sm_state snap_data;
  uint64_t truncate_from;
  qraft_entry *ents;
  uint64_t *chains;
  size_t ents_n;
  sim_msg **msgs; /* after-persist messages */
  size_t msgs_n;
  uint64_t persist_id;
} sim_write;

typedef struct sim_disk {
  qraft_hard_state hs;
  qraft_snapshot_meta snap;
  sm_state snap_data; /* the state machine snapshot (durable) */
  qraft_entry *ents;  /* (snap.index, snap.index + ents_n] */
  uint64_t *chains;
  size_t ents_n;
  size_t ents_cap;
} sim_disk;

/* --- clients ----------------------------------------------------------------- */

typedef struct sim_client {
  bool pending;
  bool is_read;
  int node;
  uint64_t node_incarnation;
  uint32_t seq;
  uint64_t read_id;
  uint64_t read_index; /* 0 until the read state arrives */
  uint8_t key;
  uint64_t deadline;
  uint64_t start;
  uint64_t process; /* lincheck process id */
  uint32_t generation;
  uint64_t last_seen[SIM_KEYS];
  /* Writes of this client that timed out and have no bound yet on when
   * they could take effect (client_end); beyond the array's size a write
   * simply keeps no bound. */
  size_t unbounded[32];
  size_t unbounded_n;
} sim_client;

/* --- nodes -------------------------------------------------------------------- */

typedef struct sim_node {
  qraft_id id;
  bool started;  /* has ever run */
  bool up;
  bool paused;
  bool retired;  /* removed from the cluster and stopped for good */
  bool joining;  /* started empty to be added; not a member yet */
  uint64_t incarnation;
  uint64_t resume_time;
  double tick_scale;
  qraft_core *core;
  sim_disk disk;
  sim_write *writes; /* FIFO of writes not yet durable */
  size_t writes_n;
  size_t writes_cap;
  /* the log as handed to storage: chain hashes of (hbase, hbase + hn] */
  uint64_t hbase_index;
  uint64_t hbase_chain;
  uint64_t *hchain;
  size_t hn;
  size_t hcap;
  sm_state sm;
  bool recv_snap_valid;
  sm_state recv_snap;
  uint64_t recv_snap_term;
  uint64_t max_term;
  uint64_t max_commit;
  uint32_t isolated_ticks;
  uint32_t missed_ticks; /* while paused */
  uint64_t last_conf_entry; /* index of the last configuration applied */
  qraft_conf_state conf_at_election; /* as leader: when it won */
  qraft_role role;
  uint64_t term;
} sim_node;

typedef struct map_slot {
  uint64_t index, term, chain;
} map_slot;

typedef struct sim {
  qraft_prng prng;
  uint64_t now;
  uint64_t seq;
  uint64_t end_time;
  uint64_t fault_end;
  bool healed;
  FILE *trace;
  qraft_sim_core_result *res;
  bool failed;

  /* swarm */
  int nodes_n; /* initial voters */
  bool pre_vote, check_quorum, lease, async_persist, snapshots, churn;
  /* Faults aimed at leader leases (drawn for half the seeds with lease
   * reads): a leader that started a transfer is cut off soon after, some
   * partitions put the leader with a minority of its configuration, and
   * clients that want "the leader" may talk to any node that believes it
   * leads, so that a stale leader's reads are tried while it has one. */
  bool lease_hunt;
  uint32_t drop_pm, dup_pm; /* per mille */
  uint32_t delay_min_us, delay_max_us;
  uint32_t disk_min_us, disk_max_us;
  uint32_t crash_pm, partition_pm, pause_pm, clog_pm, churn_pm, transfer_pm;
  uint32_t leader_kill_pm; /* a new leader crashes or is cut off at once */
  uint32_t append_entries_max;
  uint32_t inflight_max;
  double skew;
  uint64_t snap_threshold;

  sim_node nodes[SIM_NODES_MAX];
  bool blocked[SIM_NODES_MAX][SIM_NODES_MAX]; /* from -> to */
  uint64_t clog_until[SIM_NODES_MAX][SIM_NODES_MAX];

  sim_event *heap;
  size_t heap_n;
  size_t heap_cap;

  /* checkers' memory */
  uint64_t leader_of_term_n;
  struct {
    uint64_t term;
    qraft_id id;
  } *leaders;
  size_t leaders_cap;
  /* (index, term) -> chain */
  map_slot *map;
  size_t map_cap;
  size_t map_n;
  uint64_t *gcommit; /* chain of the committed prefix at index i */
  size_t gcommit_n;
  size_t gcommit_cap;
  /* the term in which a leader first committed index i, and the chain it
   * had there (leader completeness) */
  uint64_t *cterm;
  uint64_t *cchain;
  size_t c_n;
  size_t c_cap;
  uint64_t ack_max_index;
  uint64_t ack_max_chain;
  qraft_conf_state conf; /* latest applied configuration */
  uint64_t conf_index;
  /* every configuration seen, by the index of the entry that made it */
  struct conf_hist {
    uint64_t index;
    qraft_conf_state conf;
  } *confs;
  size_t confs_n;
  size_t confs_cap;
  qraft_id next_id;

  /* workload */
  int clients_n;
  sim_client clients[SIM_CLIENTS_MAX];
  qraft__lincheck_history *hist;
  uint64_t unique;
  uint64_t healed_ok_ops; /* ok operations invoked after the heal */
  /* the client whose read is being started: a read state for it in that
   * same call was answered without a round trip (a lease, or a single
   * voter), which the lease checker judges; -1 otherwise */
  int local_read_client;
  uint64_t heal_time;
} sim;

/* --- failure and trace --------------------------------------------------------- */

static void dump_ids(FILE *f, const char *name, const qraft_id *ids,
                     uint32_t n) {
  fprintf(f, " %s={", name);
  for (uint32_t i = 0; i < n; i++) {
    fprintf(f, "%s%" PRIu64, i ? "," : "", ids[i]);
  }
  fprintf(f, "}");
}

/* Every node's state, for the trace of a failed run: which nodes lag, and
 * which configuration each one believes in. */
static void sim_dump_nodes(sim *s) {
  for (int i = 0; i < SIM_NODES_MAX; i++) {
    sim_node *n = &s->nodes[i];
    if (!n->started) {
      continue;
    }
    fprintf(s->trace, "  n%d:%s%s%s", i + 1, n->up ? " up" : " down",
            n->paused ? " paused" : "", n->retired ? " retired" : "");
    if (n->up && n->core != NULL) {
      qraft_core_status st;
      qraft_core_status_get(n->core, &st);
      const qraft_conf_state *cs = qraft_core_conf_state(n->core);
      fprintf(s->trace,
              " %s term=%" PRIu64 " lead=%" PRIu64 " vote=%" PRIu64
              " commit=%" PRIu64 " applied=%" PRIu64 " persisted=%" PRIu64
              " last=%" PRIu64 " snap=%" PRIu64,
              qraft_role_name(st.role), st.term, st.leader, st.vote, st.commit,
              st.applied, st.persisted, st.last_index, st.snapshot_index);
      dump_ids(s->trace, "voters", cs->voters, cs->voters_n);
      if (cs->voters_outgoing_n > 0) {
        dump_ids(s->trace, "outgoing", cs->voters_outgoing,
                 cs->voters_outgoing_n);
      }
      dump_ids(s->trace, "learners", cs->learners, cs->learners_n);
    }
    fprintf(s->trace, "\n");
  }
}

static void sim_fail(sim *s, const char *checker, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void sim_fail(sim *s, const char *checker, const char *fmt, ...) {
  if (s->failed) {
    return;
  }
  s->failed = true;
  s->res->ok = false;
  snprintf(s->res->checker, sizeof s->res->checker, "%s", checker);
  va_list ap;
  va_start(ap, fmt);
  int n = snprintf(s->res->failure, sizeof s->res->failure,
                   "t=%" PRIu64 "us: ", s->now);
  if (n > 0 && (size_t)n < sizeof s->res->failure) {
    vsnprintf(s->res->failure + n, sizeof s->res->failure - (size_t)n, fmt,
              ap);
  }
  va_end(ap);
  if (s->trace) {
    fprintf(s->trace, "FAIL %s: %s\n", checker, s->res->failure);
    sim_dump_nodes(s);
  }
}

static void sim_event_hash(sim *s, const char *what, int node, uint64_t a,
                           uint64_t b, uint64_t c) {
  uint64_t rec[5] = {s->now, (uint64_t)node, a, b, c};
  s->res->trace_hash = fnv1a(s->res->trace_hash, what, strlen(what));
  s->res->trace_hash = fnv1a(s->res->trace_hash, rec, sizeof rec);
  s->res->events++;
  if (s->trace) {
    fprintf(s->trace, "%10" PRIu64 " n%-2d %-14s %" PRIu64 " %" PRIu64
                      " %" PRIu64 "\n",
            s->now, node + 1, what, a, b, c);
  }
}

/* --- the event heap -------------------------------------------------------------- */

static bool ev_less(const sim_event *a, const sim_event *b) {
  return a->time < b->time || (a->time == b->time && a->seq < b->seq);
}

static sim_event *sim_push(sim *s, uint64_t time, ev_type type, int node) {
  if (s->heap_n == s->heap_cap) {
    size_t cap = s->heap_cap ? s->heap_cap * 2 : 1024;
    sim_event *h = realloc(s->heap, cap * sizeof *h);
    QRAFT_ASSERT(h != NULL);
    s->heap = h;
    s->heap_cap = cap;
  }
  size_t i = s->heap_n++;
  sim_event ev = {.time = time, .seq = s->seq++, .type = type, .node = node};
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!ev_less(&ev, &s->heap[p])) {
      break;
    }
    s->heap[i] = s->heap[p];
    i = p;
  }
  s->heap[i] = ev;
  return &s->heap[i];
}

/* sim_push returns a pointer that the next push may move; fill at once. */
static void sim_push_ev(sim *s, sim_event ev) {
  sim_event *e = sim_push(s, ev.time, ev.type, ev.node);
  uint64_t seq = e->seq;
  *e = ev;
  e->seq = seq;
}

static sim_event sim_pop(sim *s) {
  sim_event top = s->heap[0];
  sim_event last = s->heap[--s->heap_n];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const sim_event *cand = &last;
    if (l < s->heap_n && ev_less(&s->heap[l], cand)) {
      m = l;
      cand = &s->heap[l];
    }
    if (r < s->heap_n && ev_less(&s->heap[r], cand)) {
      m = r;
    }
    if (m == i) {
      break;
    }
    s->heap[i] = s->heap[m];
    i = m;
  }
  if (s->heap_n > 0) {
    s->heap[i] = last;
  }
  return top;
}

static uint64_t rnd(sim *s, uint64_t lo, uint64_t hi) {
  return qraft_prng_between(&s->prng, lo, hi);
}

static bool chance_pm(sim *s, uint32_t pm) {
  return qraft_prng_chance(&s->prng, pm, 1000);
}

/* --- checkers' maps ------------------------------------------------------------ */

static void map_grow(sim *s) {
  size_t cap = s->map_cap ? s->map_cap * 2 : 4096;
  map_slot *o = s->map;
  size_t old_cap = s->map_cap;
  s->map = calloc(cap, sizeof *s->map);
  QRAFT_ASSERT(s->map != NULL);
  s->map_cap = cap;
  s->map_n = 0;
  for (size_t i = 0; i < old_cap; i++) {
    if (o[i].index != 0) {
      size_t h = mix64(o[i].index * 31 + o[i].term) & (cap - 1);
      while (s->map[h].index != 0) {
        h = (h + 1) & (cap - 1);
      }
      s->map[h] = o[i];
      s->map_n++;
    }
  }
  free(o);
}

/* Log matching (paper 5.3): one (index, term) names one prefix. */
static void check_log_matching(sim *s, int node, uint64_t index, uint64_t term,
                               uint64_t chain) {
  if (s->map_n * 2 >= s->map_cap) {
    map_grow(s);
  }
  size_t h = mix64(index * 31 + term) & (s->map_cap - 1);
  while (s->map[h].index != 0) {
    if (s->map[h].index == index && s->map[h].term == term) {
      if (s->map[h].chain != chain) {
        sim_fail(s, "log-matching",
                 "node %d has a different prefix at index %" PRIu64
                 " term %" PRIu64 " than another node",
                 node + 1, index, term);
      }
      return;
    }
    h = (h + 1) & (s->map_cap - 1);
  }
  s->map[h].index = index;
  s->map[h].term = term;
  s->map[h].chain = chain;
  s->map_n++;
}

static bool map_lookup(const sim *s, uint64_t index, uint64_t term,
                       uint64_t *chain) {
  if (s->map_cap == 0) {
    return false;
  }
  size_t h = mix64(index * 31 + term) & (s->map_cap - 1);
  while (s->map[h].index != 0) {
    if (s->map[h].index == index && s->map[h].term == term) {
      *chain = s->map[h].chain;
      return true;
    }
    h = (h + 1) & (s->map_cap - 1);
  }
  return false;
}

/* State machine safety (paper 5.4.3): every node applies the same prefix. */
static void check_applied(sim *s, int node, uint64_t index, uint64_t chain) {
  if (index == 0) {
    return;
  }
  if (index > s->gcommit_n) {
    while (s->gcommit_cap < index) {
      size_t cap = s->gcommit_cap ? s->gcommit_cap * 2 : 1024;
      uint64_t *g = realloc(s->gcommit, cap * sizeof *g);
      QRAFT_ASSERT(g != NULL);
      memset(g + s->gcommit_cap, 0, (cap - s->gcommit_cap) * sizeof *g);
      s->gcommit = g;
      s->gcommit_cap = cap;
    }
    s->gcommit_n = index;
  }
  uint64_t *slot = &s->gcommit[index - 1];
  if (*slot == 0) {
    *slot = chain;
  } else if (*slot != chain) {
    sim_fail(s, "state-machine-safety",
             "node %d applied a different entry at index %" PRIu64, node + 1,
             index);
  }
}

static bool hlog_chain(const sim_node *n, uint64_t index, uint64_t *chain);

/* A leader of `term` committed everything up to `commit`. */
static void record_leader_commit(sim *s, const sim_node *n, uint64_t term,
                                 uint64_t commit) {
  while (s->c_cap < commit) {
    size_t cap = s->c_cap ? s->c_cap * 2 : 1024;
    s->cterm = realloc(s->cterm, cap * sizeof *s->cterm);
    s->cchain = realloc(s->cchain, cap * sizeof *s->cchain);
    QRAFT_ASSERT(s->cterm && s->cchain);
    memset(s->cterm + s->c_cap, 0, (cap - s->c_cap) * sizeof *s->cterm);
    s->c_cap = cap;
  }
  for (uint64_t i = commit; i > 0 && (s->cterm[i - 1] == 0 ||
                                      s->cterm[i - 1] > term);
       i--) {
    uint64_t chain;
    if (!hlog_chain(n, i, &chain)) {
      break; /* compacted: recorded long ago */
    }
    s->cterm[i - 1] = term;
    s->cchain[i - 1] = chain;
  }
  if (commit > s->c_n) {
    s->c_n = commit;
  }
}

/* The highest index committed in a term before `term`, and its chain:
 * what every leader of `term` must have (leader completeness, paper 5.4). */
static bool committed_before(const sim *s, uint64_t term, uint64_t *index,
                             uint64_t *chain) {
  for (size_t i = s->c_n; i > 0; i--) {
    if (s->cterm[i - 1] != 0 && s->cterm[i - 1] < term) {
      *index = i;
      *chain = s->cchain[i - 1];
      return true;
    }
  }
  return false;
}

/* --- the handed-out log of a node ---------------------------------------------- */

static uint64_t hlog_last(const sim_node *n) { return n->hbase_index + n->hn; }

static bool hlog_chain(const sim_node *n, uint64_t index, uint64_t *chain) {
  if (index == n->hbase_index) {
    *chain = n->hbase_chain;
    return true;
  }
  if (index < n->hbase_index || index > hlog_last(n)) {
    return false;
  }
  *chain = n->hchain[index - n->hbase_index - 1];
  return true;
}

static void hlog_push(sim_node *n, uint64_t chain) {
  if (n->hn == n->hcap) {
    size_t cap = n->hcap ? n->hcap * 2 : 256;
    uint64_t *h = realloc(n->hchain, cap * sizeof *h);
    QRAFT_ASSERT(h != NULL);
    n->hchain = h;
    n->hcap = cap;
  }
  n->hchain[n->hn++] = chain;
}

static void hlog_reset(sim_node *n, uint64_t index, uint64_t chain) {
  n->hbase_index = index;
  n->hbase_chain = chain;
  n->hn = 0;
}

/* --- network -------------------------------------------------------------------- */

static bool link_ok(const sim *s, int from, int to) {
  return !s->blocked[from][to];
}

static int node_index(const sim *s, qraft_id id) {
  for (int i = 0; i < SIM_NODES_MAX; i++) {
    if (s->nodes[i].id == id) {
      return i;
    }
  }
  return -1;
}

static void sim_send(sim *s, int from, const qraft_message *m) {
  int to = node_index(s, m->to);
  s->res->messages++;
  sim_event_hash(s, qraft_msg_type_name(m->type), from, m->to, m->term,
                 m->index * 1000 + m->entries_n);
  if (to < 0) {
    return;
  }
  bool drop = !link_ok(s, from, to) || (!s->healed && chance_pm(s, s->drop_pm));
  if (drop) {
    s->res->messages_dropped++;
    if (m->type == QRAFT_MSG_SNAPSHOT) {
      sim_push_ev(s, (sim_event){.time = s->now + rnd(s, 1000, 50000),
                                 .type = EV_SNAP_REPORT,
                                 .node = from,
                                 .node2 = to,
                                 .incarnation = s->nodes[from].incarnation,
                                 .x = 0});
    }
    if (!link_ok(s, from, to) && chance_pm(s, 100) &&
        s->nodes[from].core != NULL) {
      qraft_core_report_unreachable(s->nodes[from].core, m->to);
    }
    return;
  }
  int copies = (!s->healed && chance_pm(s, s->dup_pm)) ? 2 : 1;
  for (int k = 0; k < copies; k++) {
    sim_msg *sm = msg_copy(m);
    QRAFT_ASSERT(sm != NULL);
    sm->from_incarnation = s->nodes[from].incarnation;
    if (sm->has_snap) {
      /* the snapshot data travels with the message (the transport streams
       * it); it is the sender's durable snapshot */
      const sim_disk *d = &s->nodes[from].disk;
      QRAFT_ASSERTF(d->snap.index == m->snapshot->metadata.index,
                    "snapshot %" PRIu64 " sent, disk has %" PRIu64,
                    m->snapshot->metadata.index, d->snap.index);
      sm->snap_data = d->snap_data;
    }
    uint64_t delay = rnd(s, s->delay_min_us, s->delay_max_us);
    if (k == 1) {
      delay += rnd(s, 0, 200000); /* a late duplicate: a replay */
    }
    if (s->clog_until[from][to] > s->now) {
      delay += s->clog_until[from][to] - s->now;
    }
    sim_push_ev(s, (sim_event){.time = s->now + delay,
                               .type = EV_DELIVER,
                               .node = to,
                               .node2 = from,
                               .msg = sm});
  }
}

/* --- client operations ------------------------------------------------------------- */

static void client_end(sim *s, int ci, int how, uint64_t result) {
  sim_client *c = &s->clients[ci];
  QRAFT_ASSERT(c->pending);
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv;
  if (how == QRAFT_LINCHECK_OK) {
    rv = qraft__lincheck_complete(s->hist, c->process, s->now * 1000, result,
                                  &err);
    if (rv == 0 && !c->is_read) {
      /* This write was applied, so every earlier write of this client that
       * timed out has either taken effect already or never will: the
       * state machine skips a client's writes with a lower sequence number
       * than one it applied (node_apply_committed). Tell the checker. */
      for (size_t i = 0; i < c->unbounded_n && rv == 0; i++) {
        rv = qraft__lincheck_effect_by(s->hist, c->unbounded[i],
                                       s->now * 1000, &err);
      }
      c->unbounded_n = 0;
    }
    s->res->ops_ok++;
    if (s->healed && c->start >= s->heal_time) {
      s->healed_ok_ops++;
    }
  } else if (how == QRAFT_LINCHECK_INFO) {
    size_t op = 0;
    rv = qraft__lincheck_pending_op(s->hist, c->process, &op);
    if (rv == 0) {
      rv = qraft__lincheck_info(s->hist, c->process, s->now * 1000, &err);
    }
    if (rv == 0 && !c->is_read &&
        c->unbounded_n < sizeof c->unbounded / sizeof c->unbounded[0]) {
      c->unbounded[c->unbounded_n++] = op;
    }
    s->res->ops_info++;
    /* an unknown outcome ends this process, as in Jepsen */
    c->generation++;
    c->process = (uint64_t)ci * 1000000 + c->generation;
  } else {
    rv = qraft__lincheck_fail(s->hist, c->process, s->now * 1000, &err);
    s->res->ops_fail++;
  }
  QRAFT_ASSERTF(rv == 0, "history: %d", rv);
  c->pending = false;
  sim_event_hash(s, "client-end", c->node, (uint64_t)ci, (uint64_t)how,
                 result);
}

/* --- node driving ------------------------------------------------------------------- */

static void node_drain(sim *s, int ni);

/* Is the entry at `index` (chain `chain`) durable on a quorum of `cs`
 * (and of both halves of a joint configuration)? */
static bool durable_on_quorum(const sim *s, const qraft_conf_state *cs,
                              uint64_t index, uint64_t chain, char *who,
                              size_t who_size) {
  const qraft_id *lists[2] = {cs->voters, cs->voters_outgoing};
  uint32_t ns[2] = {cs->voters_n, cs->voters_outgoing_n};
  size_t wl = 0;
  bool all = true;
  for (int l = 0; l < 2; l++) {
    if (ns[l] == 0) {
      continue;
    }
    uint32_t have = 0;
    for (uint32_t i = 0; i < ns[l]; i++) {
      int ni = node_index(s, lists[l][i]);
      if (ni < 0) {
        continue;
      }
      const sim_disk *d = &s->nodes[ni].disk;
      bool ok;
      if (d->snap.index >= index) {
        ok = true;
      } else {
        uint64_t k = index - d->snap.index;
        ok = k <= d->ents_n && d->chains[k - 1] == chain;
      }
      have += ok;
      if (who != NULL && wl < who_size) {
        wl += (size_t)snprintf(who + wl, who_size - wl,
                               " n%d(snap %" PRIu64 " last %" PRIu64 " %s)",
                               ni + 1, d->snap.index,
                               d->snap.index + d->ents_n, ok ? "has" : "lacks");
      }
    }
    if (have < ns[l] / 2 + 1) {
      all = false;
    }
  }
  return all;
}

/* Every acknowledged write is durable on a quorum of the configuration that
 * committed it. That configuration is one made by an entry before the write;
 * with one change in flight at a time it is among the last few such, so the
 * check accepts a quorum of any of the three newest configurations made
 * before the write, or of the current one. */
static void check_durable_quorum(sim *s) {
  if (s->ack_max_index == 0 || s->failed) {
    return;
  }
  uint64_t i = s->ack_max_index;
  if (durable_on_quorum(s, &s->conf, i, s->ack_max_chain, NULL, 0)) {
    return;
  }
  int tried = 0;
  for (size_t k = s->confs_n; k-- > 0 && tried < 3;) {
    if (s->confs[k].index >= i) {
      continue;
    }
    tried++;
    if (durable_on_quorum(s, &s->confs[k].conf, i, s->ack_max_chain, NULL,
                          0)) {
      return;
    }
  }
  char who[256] = "";
  durable_on_quorum(s, &s->conf, i, s->ack_max_chain, who, sizeof who);
  sim_fail(s, "durability",
           "acknowledged write at index %" PRIu64
           " is not durable on a quorum:%s",
           i, who);
}

static void node_apply_committed(sim *s, int ni, const qraft_entry *e) {
  sim_node *n = &s->nodes[ni];
  uint64_t chain;
  if (!hlog_chain(n, e->index, &chain)) {
    sim_fail(s, "driver", "node %d applies %" PRIu64 " not handed to storage",
             ni + 1, e->index);
    return;
  }
  QRAFT_ASSERTF(e->index == n->sm.index + 1, "apply %" PRIu64 " after %" PRIu64,
                e->index, n->sm.index);
  check_applied(s, ni, e->index, chain);
  n->sm.index = e->index;
  n->sm.chain = chain;
  if (e->type != QRAFT_ENTRY_NORMAL) {
    n->last_conf_entry = e->index;
  }
  kv_op op;
  if (!op_decode(e, &op) || op.client >= SIM_CLIENTS_MAX) {
    return;
  }
  if (op.seq <= n->sm.last_seq[op.client]) {
    return; /* a duplicate of an operation already applied */
  }
  n->sm.last_seq[op.client] = op.seq;
  uint64_t result = 0;
  if (op.kind == OP_PUT) {
    n->sm.kv[op.key] = op.v1;
  } else {
    if (n->sm.kv[op.key] == op.v1) {
      n->sm.kv[op.key] = op.v2;
      result = 1;
    }
  }
  /* complete the client operation that this node submitted */
  if (op.client < (uint32_t)s->clients_n) {
    sim_client *c = &s->clients[op.client];
    if (c->pending && !c->is_read && c->node == ni &&
        c->node_incarnation == n->incarnation && c->seq == op.seq) {
      if (e->index > s->ack_max_index) {
        s->ack_max_index = e->index;
        s->ack_max_chain = chain;
      }
      client_end(s, (int)op.client, QRAFT_LINCHECK_OK, result);
    }
  }
}

static void node_serve_reads(sim *s, int ni) {
  sim_node *n = &s->nodes[ni];
  for (int ci = 0; ci < s->clients_n; ci++) {
    sim_client *c = &s->clients[ci];
    if (c->pending && c->is_read && c->node == ni &&
        c->node_incarnation == n->incarnation && c->read_index != 0 &&
        n->sm.index >= c->read_index) {
      client_end(s, ci, QRAFT_LINCHECK_OK, n->sm.kv[c->key]);
    }
  }
}

static void disk_append(sim_disk *d, const qraft_entry *e, uint64_t chain) {
  if (d->ents_n == d->ents_cap) {
    size_t cap = d->ents_cap ? d->ents_cap * 2 : 256;
    d->ents = realloc(d->ents, cap * sizeof *d->ents);
    d->chains = realloc(d->chains, cap * sizeof *d->chains);
    QRAFT_ASSERT(d->ents != NULL && d->chains != NULL);
    d->ents_cap = cap;
  }
  d->ents[d->ents_n] = *e;
  d->ents[d->ents_n].data = qraft_slice_ref(e->data);
  d->ents[d->ents_n].context = qraft_slice_ref(e->context);
  d->chains[d->ents_n] = chain;
  d->ents_n++;
}

static void disk_truncate(sim_disk *d, uint64_t from) {
  /* drop entries with index >= from */
  while (d->ents_n > 0 && d->snap.index + d->ents_n >= from) {
    d->ents_n--;
    qraft_slice_release(&d->ents[d->ents_n].data);
    qraft_slice_release(&d->ents[d->ents_n].context);
  }
}

static void disk_compact(sim_disk *d, uint64_t index) {
  uint64_t drop = index > d->snap.index ? index - d->snap.index : 0;
  if (drop > d->ents_n) {
    drop = d->ents_n;
  }
  for (uint64_t i = 0; i < drop; i++) {
    qraft_slice_release(&d->ents[i].data);
    qraft_slice_release(&d->ents[i].context);
  }
  memmove(d->ents, d->ents + drop, (d->ents_n - drop) * sizeof *d->ents);
  memmove(d->chains, d->chains + drop, (d->ents_n - drop) * sizeof *d->chains);
  d->ents_n -= drop;
}

static void write_free(sim_write *w) {
  for (size_t i = 0; i < w->ents_n; i++) {
    qraft_slice_release(&w->ents[i].data);
    qraft_slice_release(&w->ents[i].context);
  }
  free(w->ents);
  free(w->chains);
  for (size_t i = 0; i < w->msgs_n; i++) {
    msg_free(w->msgs[i]);
  }
  free(w->msgs);
  memset(w, 0, sizeof *w);
}

/* The head write of node ni is durable: apply it to the disk, then send its
 * messages and tell the core (rules 1, 3 and 4). */
static void node_write_done(sim *s, int ni) {
  sim_node *n = &s->nodes[ni];
  QRAFT_ASSERT(n->writes_n > 0);
  sim_write w = n->writes[0];
  memmove(n->writes, n->writes + 1, (n->writes_n - 1) * sizeof *n->writes);
  n->writes_n--;
  sim_disk *d = &n->disk;
  if (w.has_snap) {
    disk_truncate(d, d->snap.index + 1);
    d->snap = w.snap;
    d->snap_data = w.snap_data;
  }
  if (w.truncate_from != 0) {
    disk_truncate(d, w.truncate_from);
  }
  for (size_t i = 0; i < w.ents_n; i++) {
    QRAFT_ASSERTF(w.ents[i].index == d->snap.index + d->ents_n + 1,
                  "node %d disk append %" PRIu64 " after %" PRIu64, ni + 1,
                  w.ents[i].index, d->snap.index + d->ents_n);
    disk_append(d, &w.ents[i], w.chains[i]);
  }
  if (w.has_hs) {
    if (w.hs.term < d->hs.term) {
      sim_fail(s, "monotonic-term", "node %d durable term %" PRIu64
               " after %" PRIu64, ni + 1, w.hs.term, d->hs.term);
    }
    d->hs = w.hs;
  }
  sim_event_hash(s, "durable", ni, w.persist_id, w.ents_n, w.msgs_n);
  for (size_t i = 0; i < w.msgs_n; i++) {
    sim_send(s, ni, &w.msgs[i]->m);
  }
  if (w.persist_id != 0 && n->core != NULL) {
    qraft_core_persisted(n->core, w.persist_id);
  }
  write_free(&w);
  node_drain(s, ni);
}

static void node_take_snapshot(sim *s, int ni) {
  sim_node *n = &s->nodes[ni];
  qraft_core_status st;
  qraft_core_status_get(n->core, &st);
  uint64_t at = n->sm.index;
  if (!s->snapshots || at < st.snapshot_index + s->snap_threshold ||
      at > st.persisted) {
    return;
  }
  if (qraft_core_compact(n->core, at) != 0) {
    return;
  }
  /* The snapshot file is written and synced before the log is compacted
   * (rule 7); the simulated disk does both at once. */
  qraft_snapshot_meta meta;
  qraft_core_snapshot_meta(n->core, &meta);
  QRAFT_ASSERT(meta.index == at);
  sim_disk *d = &n->disk;
  disk_compact(d, at);
  d->snap = meta;
  d->snap_data = n->sm;
  s->res->compactions++;
  sim_event_hash(s, "compact", ni, at, meta.term, 0);
}

/* The lease checker. A leader that answers a read at once, on its lease
 * (or as a single voter), claims that no other leader can exist: a quorum
 * answered its heartbeats within the lease, and each of those voters
 * refuses votes for an election timeout. A node leading a higher term
 * right now refutes the claim, whether or not a client could yet see the
 * difference. The simulator keeps clock skew under 5% with leases, well
 * inside the drift the lease allows (docs/core.md). */
static void check_local_read(sim *s, int ni) {
  const sim_node *n = &s->nodes[ni];
  for (int j = 0; j < SIM_NODES_MAX; j++) {
    const sim_node *o = &s->nodes[j];
    if (j != ni && o->up && o->core != NULL &&
        o->role == QRAFT_ROLE_LEADER && o->term > n->term) {
      sim_fail(s, "lease",
               "node %d answered a read from its lease in term %" PRIu64
               " while node %d leads term %" PRIu64,
               ni + 1, n->term, j + 1, o->term);
      return;
    }
  }
}

static void node_drain(sim *s, int ni) {
  sim_node *n = &s->nodes[ni];
  if (n->core == NULL) {
    return;
  }
  int rounds = 0;
  while (!s->failed && qraft_core_has_update(n->core)) {
    QRAFT_ASSERTF(++rounds < 1000, "node %d update loop", ni + 1);
    qraft_update u;
    qraft_core_take_update(n->core, &u);
    qraft_core_status st;
    qraft_core_status_get(n->core, &st);

    /* roles: election safety (paper 5.2) and leader completeness (5.4) */
    if (u.soft_state_changed) {
      sim_event_hash(s, qraft_role_name(u.role), ni, st.term, u.leader, 0);
      if (u.role == QRAFT_ROLE_LEADER) {
        s->res->elections_won++;
        n->conf_at_election = *qraft_core_conf_state(n->core);
        for (size_t i = 0; i < s->leader_of_term_n; i++) {
          if (s->leaders[i].term == st.term && s->leaders[i].id != n->id) {
            sim_fail(s, "election-safety",
                     "nodes %" PRIu64 " and %" PRIu64
                     " both leaders of term %" PRIu64,
                     s->leaders[i].id, n->id, st.term);
          }
        }
        if (s->leader_of_term_n == s->leaders_cap) {
          s->leaders_cap = s->leaders_cap ? s->leaders_cap * 2 : 64;
          s->leaders = realloc(s->leaders, s->leaders_cap * sizeof *s->leaders);
          QRAFT_ASSERT(s->leaders != NULL);
        }
        if (!s->healed && chance_pm(s, s->leader_kill_pm)) {
          /* Flaky leaders: the Figure 8 schedules of the Raft paper need a
           * leader that replicates an entry to a minority and dies. */
          uint64_t when = s->now + rnd(s, 500, 30000);
          if (chance_pm(s, 500)) {
            sim_push_ev(s, (sim_event){.time = when, .type = EV_KILL,
                                       .node = ni,
                                       .incarnation = n->incarnation});
          } else {
            sim_push_ev(s, (sim_event){.time = when, .type = EV_ISOLATE,
                                       .node = ni,
                                       .incarnation = n->incarnation});
          }
        }
        s->leaders[s->leader_of_term_n].term = st.term;
        s->leaders[s->leader_of_term_n].id = n->id;
        s->leader_of_term_n++;
        uint64_t gi, gc;
        if (committed_before(s, st.term, &gi, &gc)) {
          uint64_t t, c;
          bool ok;
          if (gi < st.first_index) {
            ok = gi <= st.snapshot_index; /* covered by its snapshot */
          } else if (qraft_core_term(n->core, gi, &t) != 0) {
            ok = false; /* the log ends before it */
          } else if (map_lookup(s, gi, t, &c)) {
            ok = c == gc;
          } else {
            ok = hlog_chain(n, gi, &c) && c == gc;
          }
          if (!ok) {
            sim_fail(s, "leader-completeness",
                     "node %d leads term %" PRIu64
                     " without committed entry %" PRIu64,
                     ni + 1, st.term, gi);
          }
        }
      }
      n->role = u.role;
    }
    if (st.term > s->res->max_term) {
      s->res->max_term = st.term;
    }
    if (st.term < n->max_term) {
      sim_fail(s, "monotonic-term", "node %d term %" PRIu64 " after %" PRIu64,
               ni + 1, st.term, n->max_term);
    }
    n->max_term = st.term;
    n->term = st.term;
    if (u.hard_state_changed) {
      if (u.role == QRAFT_ROLE_LEADER) {
        record_leader_commit(s, n, u.hard_state.term, u.hard_state.commit);
      }
      if (u.hard_state.commit < n->max_commit) {
        sim_fail(s, "monotonic-commit",
                 "node %d commit %" PRIu64 " after %" PRIu64, ni + 1,
                 u.hard_state.commit, n->max_commit);
      }
      n->max_commit = u.hard_state.commit;
      if (u.hard_state.commit > s->res->max_commit) {
        s->res->max_commit = u.hard_state.commit;
      }
    }

    /* the writes of this update */
    sim_write w;
    memset(&w, 0, sizeof w);
    if (u.snapshot != NULL) {
      if (!n->recv_snap_valid || n->recv_snap.index != u.snapshot->index ||
          n->recv_snap_term != u.snapshot->term) {
        sim_fail(s, "driver", "node %d installs snapshot %" PRIu64
                 " it did not receive", ni + 1, u.snapshot->index);
        return;
      }
      w.has_snap = true;
      w.snap = *u.snapshot;
      w.snap_data = n->recv_snap;
      /* the state machine is replaced now (rule 6) */
      check_applied(s, ni, n->recv_snap.index, n->recv_snap.chain);
      n->sm = n->recv_snap;
      n->last_conf_entry = u.snapshot->index;
      hlog_reset(n, u.snapshot->index, n->recv_snap.chain);
      sim_event_hash(s, "install-snap", ni, u.snapshot->index,
                     u.snapshot->term, 0);
    }
    if (u.truncate_from != 0) {
      if (u.role == QRAFT_ROLE_LEADER) {
        sim_fail(s, "leader-append-only",
                 "leader %d truncates its log at %" PRIu64, ni + 1,
                 u.truncate_from);
      }
      QRAFT_ASSERT(u.truncate_from > n->hbase_index);
      if (u.truncate_from <= hlog_last(n)) {
        n->hn = (size_t)(u.truncate_from - n->hbase_index - 1);
      }
      w.truncate_from = u.truncate_from;
    }
    if (u.entries_n > 0) {
      w.ents = calloc(u.entries_n, sizeof *w.ents);
      w.chains = calloc(u.entries_n, sizeof *w.chains);
      QRAFT_ASSERT(w.ents && w.chains);
      w.ents_n = u.entries_n;
      for (size_t i = 0; i < u.entries_n; i++) {
        const qraft_entry *e = &u.entries[i];
        if (e->index != hlog_last(n) + 1) {
          sim_fail(s, "driver", "node %d hands out %" PRIu64 " after %" PRIu64,
                   ni + 1, e->index, hlog_last(n));
          return;
        }
        uint64_t prev;
        QRAFT_ASSERT(hlog_chain(n, e->index - 1, &prev));
        uint64_t chain = chain_next(prev, e);
        hlog_push(n, chain);
        check_log_matching(s, ni, e->index, e->term, chain);
        w.ents[i] = *e;
        w.ents[i].data = qraft_slice_ref(e->data);
        w.ents[i].context = qraft_slice_ref(e->context);
        w.chains[i] = chain;
      }
    }
    if (u.hard_state_changed) {
      w.has_hs = true;
      w.hs = u.hard_state;
    }
    w.persist_id = u.persist_id;
    if (u.messages_after_persist_n > 0) {
      w.msgs = calloc(u.messages_after_persist_n, sizeof *w.msgs);
      QRAFT_ASSERT(w.msgs != NULL);
      for (size_t i = 0; i < u.messages_after_persist_n; i++) {
        w.msgs[i] = msg_copy(&u.messages_after_persist[i]);
        QRAFT_ASSERT(w.msgs[i] != NULL);
      }
      w.msgs_n = u.messages_after_persist_n;
    }
    /* rule 2: these go now, in parallel with the write */
    for (size_t i = 0; i < u.messages_n; i++) {
      sim_send(s, ni, &u.messages[i]);
    }
    /* rule 5: apply */
    uint64_t applied = 0;
    for (size_t i = 0; i < u.committed_n && !s->failed; i++) {
      node_apply_committed(s, ni, &u.committed[i]);
      applied = u.committed[i].index;
    }
    if (u.conf_changed && n->sm.index >= s->conf_index) {
      s->conf = *u.conf_state;
      s->conf_index = n->sm.index;
      s->res->conf_changes++;
      if (s->confs_n == 0 ||
          s->confs[s->confs_n - 1].index < n->last_conf_entry) {
        if (s->confs_n == s->confs_cap) {
          s->confs_cap = s->confs_cap ? s->confs_cap * 2 : 16;
          s->confs = realloc(s->confs, s->confs_cap * sizeof *s->confs);
          QRAFT_ASSERT(s->confs != NULL);
        }
        s->confs[s->confs_n].index = n->last_conf_entry;
        s->confs[s->confs_n].conf = *u.conf_state;
        s->confs_n++;
      }
    }
    for (size_t i = 0; i < u.read_states_n; i++) {
      for (int ci = 0; ci < s->clients_n; ci++) {
        sim_client *c = &s->clients[ci];
        if (c->pending && c->is_read && c->node == ni &&
            c->read_id == u.read_states[i].id) {
          c->read_index = u.read_states[i].index;
          if (c->read_index == 0) {
            c->read_index = 1; /* index 0: nothing to wait for */
          }
          if (s->local_read_client == ci && n->role == QRAFT_ROLE_LEADER) {
            check_local_read(s, ni);
          }
        }
      }
    }
    node_serve_reads(s, ni);
    /* u is invalid from here on: calls into the core follow */
    bool has_write = w.has_snap || w.truncate_from || w.ents_n || w.has_hs ||
                     w.msgs_n || w.persist_id;
    if (applied != 0) {
      qraft_core_applied(n->core, applied);
      node_take_snapshot(s, ni);
    }
    if (has_write) {
      if (n->writes_n == n->writes_cap) {
        n->writes_cap = n->writes_cap ? n->writes_cap * 2 : 16;
        n->writes = realloc(n->writes, n->writes_cap * sizeof *n->writes);
        QRAFT_ASSERT(n->writes != NULL);
      }
      uint64_t delay = s->async_persist ? rnd(s, s->disk_min_us, s->disk_max_us)
                                        : 0;
      uint64_t done = s->now + delay;
      if (n->writes_n > 0 && n->writes[n->writes_n - 1].done_time > done) {
        done = n->writes[n->writes_n - 1].done_time;
      }
      w.done_time = done;
      n->writes[n->writes_n++] = w;
      if (!s->async_persist) {
        node_write_done(s, ni);
        return; /* node_write_done drained */
      }
      sim_push_ev(s, (sim_event){.time = done,
                                 .type = EV_DISK,
                                 .node = ni,
                                 .incarnation = n->incarnation});
    }
  }
}

/* --- node lifecycle --------------------------------------------------------------- */

static void node_schedule_tick(sim *s, int ni) {
  sim_node *n = &s->nodes[ni];
  uint64_t d = (uint64_t)(TICK_US * n->tick_scale);
  sim_push_ev(s, (sim_event){.time = s->now + d,
                             .type = EV_TICK,
                             .node = ni,
                             .incarnation = n->incarnation});
}

static int node_boot(sim *s, int ni) {
  sim_node *n = &s->nodes[ni];
  qraft_core_config cfg;
  qraft_core_config_default(&cfg);
  cfg.id = n->id;
  cfg.seed = qraft_prng_next(&s->prng);
  cfg.election_ticks = ELECTION_TICKS;
  cfg.heartbeat_ticks = HEARTBEAT_TICKS;
  cfg.pre_vote = s->pre_vote;
  cfg.check_quorum = s->check_quorum;
  cfg.read_only = s->lease ? QRAFT_READ_ONLY_LEASE_BASED : QRAFT_READ_ONLY_SAFE;
  cfg.inflight_msgs_max = s->inflight_max;
  cfg.append_entries_max = s->append_entries_max;
  qraft_core_restore rs = {
      .hard_state = n->disk.hs,
      .snapshot = n->disk.snap,
      .entries = n->disk.ents,
      .entries_n = n->disk.ents_n,
      .applied = n->disk.snap.index,
  };
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv = qraft_core_new(&cfg, &rs, &n->core, &err);
  if (rv != 0) {
    char line[512];
    qraft_err_format(&err, line, sizeof line);
    sim_fail(s, "restart", "node %d cannot restart: %s", ni + 1, line);
    return rv;
  }
  n->up = true;
  n->paused = false;
  n->started = true;
  n->incarnation++;
  n->sm = n->disk.snap_data;
  n->recv_snap_valid = false;
  hlog_reset(n, n->disk.snap.index, n->disk.snap_data.chain);
  for (size_t i = 0; i < n->disk.ents_n; i++) {
    hlog_push(n, n->disk.chains[i]);
  }
  n->role = QRAFT_ROLE_FOLLOWER;
  n->isolated_ticks = 0;
  n->missed_ticks = 0;
  if (n->disk.hs.term < n->max_term) {
    n->max_term = n->disk.hs.term; /* what was not durable is gone */
  }
  n->max_commit = n->disk.hs.commit;
  sim_event_hash(s, "boot", ni, n->disk.hs.term, n->disk.snap.index,
                 n->disk.ents_n);
  node_schedule_tick(s, ni);
  node_drain(s, ni);
  return 0;
}

static void node_crash(sim *s, int ni) {
  sim_node *n = &s->nodes[ni];
  if (!n->up) {
    return;
  }
  sim_event_hash(s, "crash", ni, n->writes_n, 0, 0);
  s->res->crashes++;
  /* what was not durable is lost, with the messages that waited for it */
  for (size_t i = 0; i < n->writes_n; i++) {
    write_free(&n->writes[i]);
  }
  n->writes_n = 0;
  qraft_core_free(n->core);
  n->core = NULL;
  n->up = false;
  n->paused = false;
  n->incarnation++;
  for (int ci = 0; ci < s->clients_n; ci++) {
    sim_client *c = &s->clients[ci];
    if (c->pending && c->node == ni) {
      client_end(s, ci, c->is_read ? QRAFT_LINCHECK_FAIL : QRAFT_LINCHECK_INFO,
                 0);
    }
  }
  check_durable_quorum(s);
}

static bool conf_has(const qraft_conf_state *cs, qraft_id id, bool voters_only) {
  for (uint32_t i = 0; i < cs->voters_n; i++) {
    if (cs->voters[i] == id) {
      return true;
    }
  }
  for (uint32_t i = 0; i < cs->voters_outgoing_n; i++) {
    if (cs->voters_outgoing[i] == id) {
      return true;
    }
  }
  if (voters_only) {
    return false;
  }
  for (uint32_t i = 0; i < cs->learners_n; i++) {
    if (cs->learners[i] == id) {
      return true;
    }
  }
  for (uint32_t i = 0; i < cs->learners_next_n; i++) {
    if (cs->learners_next[i] == id) {
      return true;
    }
  }
  return false;
}

/* --- checkers that look at the whole cluster ------------------------------------- */

/* Check-quorum (thesis 6.2): a leader cut off from a quorum of voters by
 * the network steps down within two election timeouts of its own clock
 * after the last answer it received. */
static void check_quorum_step_down(sim *s, int ni) {
  sim_node *n = &s->nodes[ni];
  if (!s->check_quorum || n->core == NULL || n->role != QRAFT_ROLE_LEADER) {
    n->isolated_ticks = 0;
    return;
  }
  const qraft_conf_state *cs = qraft_core_conf_state(n->core);
  const qraft_id *lists[2] = {cs->voters, cs->voters_outgoing};
  uint32_t ns[2] = {cs->voters_n, cs->voters_outgoing_n};
  bool isolated = false;
  for (int l = 0; l < 2; l++) {
    if (ns[l] == 0) {
      continue;
    }
    uint32_t reach = 0;
    for (uint32_t i = 0; i < ns[l]; i++) {
      int p = node_index(s, lists[l][i]);
      if (p == ni) {
        reach++;
      } else if (p >= 0 && s->nodes[p].up && !s->nodes[p].paused &&
                 link_ok(s, ni, p) && link_ok(s, p, ni)) {
        reach++;
      }
    }
    if (reach < ns[l] / 2 + 1) {
      isolated = true;
    }
  }
  n->isolated_ticks = isolated ? n->isolated_ticks + 1 : 0;
  if (n->isolated_ticks > 2 * ELECTION_TICKS + 2) {
    sim_fail(s, "check-quorum",
             "leader %d kept leading %u ticks without a quorum", ni + 1,
             n->isolated_ticks);
  }
}

/* --- the workload --------------------------------------------------------------- */

static int pick_up_node(sim *s, bool prefer_leader) {
  int cands[SIM_NODES_MAX];
  int k = 0;
  int leader = -1;
  uint64_t best_term = 0;
  for (int i = 0; i < SIM_NODES_MAX; i++) {
    sim_node *n = &s->nodes[i];
    if (n->up && !n->retired) {
      cands[k++] = i;
      if (n->role == QRAFT_ROLE_LEADER && n->term >= best_term) {
        leader = i;
        best_term = n->term;
      }
    }
  }
  if (k == 0) {
    return -1;
  }
  if (prefer_leader && leader >= 0 && s->lease_hunt) {
    int leaders[SIM_NODES_MAX];
    int m = 0;
    for (int j = 0; j < k; j++) {
      if (s->nodes[cands[j]].role == QRAFT_ROLE_LEADER) {
        leaders[m++] = cands[j];
      }
    }
    return leaders[rnd(s, 0, (uint64_t)m - 1)];
  }
  if (prefer_leader && leader >= 0) {
    return leader;
  }
  return cands[rnd(s, 0, (uint64_t)k - 1)];
}

static void client_start(sim *s, int ci) {
  sim_client *c = &s->clients[ci];
  int ni = pick_up_node(s, chance_pm(s, 700));
  if (ni < 0 || s->nodes[ni].paused) {
    return;
  }
  sim_node *n = &s->nodes[ni];
  uint8_t key = (uint8_t)rnd(s, 0, SIM_KEYS - 1);
  uint32_t dice = (uint32_t)rnd(s, 0, 99);
  c->seq++;
  c->node = ni;
  c->node_incarnation = n->incarnation;
  c->key = key;
  c->start = s->now;
  c->deadline = s->now + rnd(s, 200000, 2000000);
  c->read_index = 0;
  qraft_err err;
  qraft_err_init(&err, 0);
  if (dice < 40) {
    c->is_read = true;
    c->read_id = ((uint64_t)ci << 32) | c->seq;
    int rv = qraft__lincheck_invoke(s->hist, c->process, s->now * 1000,
                                    QRAFT_LINCHECK_GET, key, 0, 0, &err);
    QRAFT_ASSERT(rv == 0);
    c->pending = true;
    sim_event_hash(s, "client-get", ni, (uint64_t)ci, key, 0);
    rv = qraft_core_read_index(n->core, c->read_id);
    if (rv != 0) {
      client_end(s, ci, QRAFT_LINCHECK_FAIL, 0);
    }
    s->local_read_client = ci;
    node_drain(s, ni);
    s->local_read_client = -1;
    return;
  }
  kv_op op = {.client = (uint32_t)ci, .seq = c->seq, .key = key};
  uint64_t v = ++s->unique;
  qraft__lincheck_f f;
  if (dice < 80) {
    op.kind = OP_PUT;
    op.v1 = v;
    f = QRAFT_LINCHECK_PUT;
  } else {
    op.kind = OP_CAS;
    op.v1 = c->last_seen[key];
    op.v2 = v;
    f = QRAFT_LINCHECK_CAS;
  }
  c->is_read = false;
  int rv = qraft__lincheck_invoke(s->hist, c->process, s->now * 1000, f, key,
                                  op.v1, op.kind == OP_CAS ? op.v2 : 0, &err);
  QRAFT_ASSERT(rv == 0);
  c->pending = true;
  sim_event_hash(s, op.kind == OP_PUT ? "client-put" : "client-cas", ni,
                 (uint64_t)ci, key, v);
  qraft_buf *b = qraft_buf_new(OP_BYTES);
  QRAFT_ASSERT(b != NULL);
  op_encode(&op, b->data);
  b->len = OP_BYTES;
  qraft_entry e = {.type = QRAFT_ENTRY_NORMAL,
                   .data = {.data = b->data, .len = OP_BYTES, .owner = b}};
  rv = qraft_core_propose(n->core, &e, 1, NULL, NULL);
  qraft_buf_unref(b);
  if (rv != 0) {
    client_end(s, ci, QRAFT_LINCHECK_FAIL, 0);
  }
  node_drain(s, ni);
}

static void client_event(sim *s, int ci) {
  sim_client *c = &s->clients[ci];
  if (c->pending && s->now >= c->deadline) {
    client_end(s, ci, c->is_read ? QRAFT_LINCHECK_FAIL : QRAFT_LINCHECK_INFO,
               0);
  }
  if (!c->pending && s->now < s->end_time - 100000) {
    client_start(s, ci);
  }
  uint64_t next = c->pending ? (c->deadline > s->now ? c->deadline - s->now
                                                     : 1000)
                             : rnd(s, 1000, 50000);
  if (c->pending && next > 50000) {
    next = 50000;
  }
  sim_push_ev(s, (sim_event){.time = s->now + next, .type = EV_CLIENT,
                             .node = ci});
}

/* --- faults ------------------------------------------------------------------------ */

static int leader_node(sim *s) {
  int leader = -1;
  uint64_t best = 0;
  for (int i = 0; i < SIM_NODES_MAX; i++) {
    sim_node *n = &s->nodes[i];
    if (n->up && !n->paused && n->role == QRAFT_ROLE_LEADER &&
        n->term >= best) {
      leader = i;
      best = n->term;
    }
  }
  return leader;
}

/* Is the learner within one replication window (append_entries_max entries
 * times inflight_max appends, at least 16 entries) of the leader's log? */
static bool learner_caught_up(sim *s, const sim_node *l, qraft_id lid) {
  qraft_progress_info prs[2 * QRAFT_CONF_NODES_MAX];
  size_t n = qraft_core_progress(l->core, prs, 2 * QRAFT_CONF_NODES_MAX);
  qraft_core_status st;
  qraft_core_status_get(l->core, &st);
  uint64_t window = (uint64_t)s->append_entries_max * s->inflight_max;
  if (window < 16) {
    window = 16;
  }
  for (size_t i = 0; i < n && i < 2 * QRAFT_CONF_NODES_MAX; i++) {
    if (prs[i].id == lid) {
      return prs[i].match + window >= st.last_index;
    }
  }
  return false;
}

/* A partition: isolate the leader (kind 0), split in two at random (1),
 * cut one way (2), or the leader with a minority of its configuration
 * (3, the lease hunt's). */
static void partition(sim *s, uint32_t kind) {
  int li = leader_node(s);
  bool side[SIM_NODES_MAX];
  for (int i = 0; i < SIM_NODES_MAX; i++) {
    side[i] = chance_pm(s, 500);
  }
  if (kind == 0 && li >= 0) {
    for (int i = 0; i < SIM_NODES_MAX; i++) {
      side[i] = i == li;
    }
  }
  if (kind == 3 && li >= 0) {
    /* Members the leader was elected with may go with it, those added
     * since stay on the other side: the split that a lease counted on an
     * old configuration would not survive. */
    const qraft_conf_state *cs = qraft_core_conf_state(s->nodes[li].core);
    const qraft_conf_state *old = &s->nodes[li].conf_at_election;
    uint32_t room = cs->voters_n > 0 ? (cs->voters_n - 1) / 2 : 0;
    if (room > old->voters_n / 2) {
      room = old->voters_n / 2; /* with the leader, a bare majority of it */
    }
    for (int i = 0; i < SIM_NODES_MAX; i++) {
      side[i] = i == li;
    }
    for (uint32_t v = 0; v < cs->voters_n && room > 0; v++) {
      int vi = node_index(s, cs->voters[v]);
      if (vi >= 0 && vi != li && conf_has(old, cs->voters[v], true) &&
          chance_pm(s, 800)) {
        side[vi] = true;
        room--;
      }
    }
  }
  for (int a = 0; a < SIM_NODES_MAX; a++) {
    for (int b = 0; b < SIM_NODES_MAX; b++) {
      if (side[a] != side[b] && (kind != 2 || side[a])) {
        s->blocked[a][b] = true;
      }
    }
  }
  s->res->partitions++;
  sim_event_hash(s, "partition", li, kind, 0, 0);
  sim_push_ev(s, (sim_event){.time = s->now + rnd(s, 50000, 3000000),
                             .type = EV_HEAL_LINK,
                             .node = -1});
}

static void chaos_membership(sim *s) {
  int li = leader_node(s);
  if (li < 0) {
    return;
  }
  sim_node *l = &s->nodes[li];
  const qraft_conf_state *cs = qraft_core_conf_state(l->core);
  qraft_conf_change_v2 cc;
  memset(&cc, 0, sizeof cc);
  if (cs->voters_outgoing_n > 0) {
    /* joint without auto-leave: leave it explicitly */
    if (cs->auto_leave) {
      return;
    }
  } else {
    uint32_t dice = (uint32_t)rnd(s, 0, 99);
    int spare = -1;
    for (int i = 0; i < SIM_NODES_MAX; i++) {
      if (!s->nodes[i].started && !s->nodes[i].retired) {
        spare = i;
        break;
      }
    }
    if (dice < 35 && spare >= 0) {
      /* add a learner: start the node empty first */
      cc.changes_n = 1;
      cc.changes[0].change_type = QRAFT_CONF_ADD_LEARNER_NODE;
      cc.changes[0].node_id = s->nodes[spare].id;
      if (node_boot(s, spare) != 0) {
        return;
      }
      s->nodes[spare].joining = true;
    } else if (dice < 65 && cs->learners_n > 0) {
      /* promote a learner, maybe replacing a voter through joint
       * consensus */
      qraft_id lid = cs->learners[rnd(s, 0, cs->learners_n - 1)];
      cc.changes[cc.changes_n].change_type = QRAFT_CONF_ADD_NODE;
      cc.changes[cc.changes_n++].node_id = lid;
      if (chance_pm(s, 500) && cs->voters_n >= 2) {
        qraft_id vid = cs->voters[rnd(s, 0, cs->voters_n - 1)];
        cc.changes[cc.changes_n].change_type = QRAFT_CONF_REMOVE_NODE;
        cc.changes[cc.changes_n++].node_id = vid;
        cc.transition = chance_pm(s, 300) ? QRAFT_CONF_TRANSITION_EXPLICIT
                                          : QRAFT_CONF_TRANSITION_AUTO;
      }
      if (!learner_caught_up(s, l, lid)) {
        /* As etcd's server refuses to promote a learner that lags: the
         * new quorum would need it, and a learner that is a whole log
         * behind can take longer to catch up than the liveness window
         * (seed 5072613: 1238 entries one at a time, batch=1
         * inflight=1, 10 ms a round trip, against 6 s). Raft itself
         * cannot do better, so the operator waits. */
        return;
      }
    } else if (cs->voters_n > 1 && (cs->voters_n > 3 || chance_pm(s, 300))) {
      /* remove a voter (possibly the leader), single-step or joint */
      qraft_id vid = cs->voters[rnd(s, 0, cs->voters_n - 1)];
      cc.changes[0].change_type = QRAFT_CONF_REMOVE_NODE;
      cc.changes[0].node_id = vid;
      cc.changes_n = 1;
      if (chance_pm(s, 400)) {
        cc.transition = QRAFT_CONF_TRANSITION_IMPLICIT;
      }
    } else {
      return;
    }
  }
  uint64_t index = 0;
  int rv = qraft_core_propose_conf_change(l->core, &cc, &index, NULL);
  sim_event_hash(s, "conf-change", li, cc.changes_n,
                 cc.changes_n ? cc.changes[0].node_id : 0, (uint64_t)(-rv));
  node_drain(s, li);
  bool grows = false;
  for (uint32_t i = 0; i < cc.changes_n; i++) {
    grows |= cc.changes[i].change_type == QRAFT_CONF_ADD_NODE;
  }
  if (rv == 0 && s->lease_hunt && grows && chance_pm(s, 700)) {
    /* once a new voter is in force, the leader with a minority of the
     * configuration (partition kind 3) */
    sim_push_ev(s, (sim_event){.time = s->now + rnd(s, 20000, 300000),
                               .type = EV_LEASE_SPLIT,
                               .node = -1});
  }
}

static void chaos(sim *s) {
  if (s->now >= s->fault_end) {
    return;
  }
  if (chance_pm(s, s->partition_pm)) {
    partition(s, (uint32_t)rnd(s, 0, s->lease_hunt ? 3 : 2));
  }
  if (chance_pm(s, s->crash_pm)) {
    int ni = chance_pm(s, 400) ? leader_node(s) : pick_up_node(s, false);
    if (ni >= 0) {
      node_crash(s, ni);
      sim_push_ev(s, (sim_event){.time = s->now + rnd(s, 10000, 3000000),
                                 .type = EV_RESTART,
                                 .node = ni});
    }
  }
  if (chance_pm(s, s->pause_pm)) {
    int ni = pick_up_node(s, chance_pm(s, 400));
    if (ni >= 0 && !s->nodes[ni].paused) {
      s->nodes[ni].paused = true;
      s->nodes[ni].resume_time = s->now + rnd(s, 10000, 1500000);
      sim_event_hash(s, "pause", ni, s->nodes[ni].resume_time, 0, 0);
      sim_push_ev(s, (sim_event){.time = s->nodes[ni].resume_time,
                                 .type = EV_RESUME,
                                 .node = ni,
                                 .incarnation = s->nodes[ni].incarnation});
    }
  }
  if (chance_pm(s, s->clog_pm)) {
    int a = (int)rnd(s, 0, SIM_NODES_MAX - 1);
    int b = (int)rnd(s, 0, SIM_NODES_MAX - 1);
    s->clog_until[a][b] = s->now + rnd(s, 10000, 500000);
    sim_event_hash(s, "clog", a, (uint64_t)b, s->clog_until[a][b], 0);
  }
  if (s->churn && chance_pm(s, s->churn_pm)) {
    chaos_membership(s);
  }
  if (chance_pm(s, s->transfer_pm)) {
    int li = leader_node(s);
    if (li >= 0) {
      const qraft_conf_state *cs = qraft_core_conf_state(s->nodes[li].core);
      if (cs->voters_n > 1) {
        qraft_id to = cs->voters[rnd(s, 0, cs->voters_n - 1)];
        if (to != s->nodes[li].id) {
          s->res->transfers++;
          int rv = qraft_core_transfer_leader(s->nodes[li].core, to);
          sim_event_hash(s, "transfer", li, to, (uint64_t)(-rv), 0);
          if (rv == 0 && s->lease_hunt && chance_pm(s, 500)) {
            /* cut the old leader off once its MsgTimeoutNow is out */
            sim_push_ev(s, (sim_event){.time = s->now + rnd(s, 500, 15000),
                                       .type = EV_ISOLATE,
                                       .node = li,
                                       .incarnation =
                                           s->nodes[li].incarnation});
          }
          node_drain(s, li);
        }
      }
    }
  }
}

/* A driver ticks from a monotonic clock: after a stall it delivers the ticks
 * it missed before anything else, or a leader lease would outlive the
 * stall (qraft/core.h, "Ticks"). */
static void node_catch_up_ticks(sim *s, int ni) {
  sim_node *n = &s->nodes[ni];
  while (n->missed_ticks > 0 && n->core != NULL && !s->failed) {
    n->missed_ticks--;
    qraft_core_tick(n->core);
    node_drain(s, ni);
    check_quorum_step_down(s, ni);
  }
  n->missed_ticks = 0;
}

static void heal_all(sim *s) {
  s->healed = true;
  s->heal_time = s->now;
  memset(s->blocked, 0, sizeof s->blocked);
  memset(s->clog_until, 0, sizeof s->clog_until);
  sim_event_hash(s, "heal", -1, 0, 0, 0);
  for (int i = 0; i < SIM_NODES_MAX; i++) {
    sim_node *n = &s->nodes[i];
    if (n->paused) {
      n->paused = false;
      node_catch_up_ticks(s, i);
    }
    if (n->started && !n->up && !n->retired) {
      node_boot(s, i);
    }
  }
}

/* A node removed from the configuration is stopped for good, as an operator
 * would, so that it does not disturb the cluster forever. */
static void retire_removed(sim *s) {
  if (s->conf_index == 0) {
    return;
  }
  for (int i = 0; i < SIM_NODES_MAX; i++) {
    sim_node *n = &s->nodes[i];
    if (conf_has(&s->conf, n->id, false)) {
      n->joining = false;
      continue;
    }
    if (n->started && !n->retired && !n->joining) {
      sim_push_ev(s, (sim_event){.time = s->now + 500000,
                                 .type = EV_STOP_NODE,
                                 .node = i,
                                 .x = s->conf_index});
    }
  }
}

/* Do all voters of the current configuration know, durably, that the entry
 * at `index` is committed? */
static bool voters_applied(const sim *s, uint64_t index) {
  const qraft_id *lists[2] = {s->conf.voters, s->conf.voters_outgoing};
  uint32_t ns[2] = {s->conf.voters_n, s->conf.voters_outgoing_n};
  for (int l = 0; l < 2; l++) {
    for (uint32_t i = 0; i < ns[l]; i++) {
      int ni = node_index(s, lists[l][i]);
      if (ni < 0) {
        continue;
      }
      const sim_disk *d = &s->nodes[ni].disk;
      if (d->hs.commit < index && d->snap.index < index) {
        return false;
      }
    }
  }
  return true;
}

/* --- the run ------------------------------------------------------------------------ */

static void sim_swarm(sim *s) {
  static const int sizes[] = {1, 2, 3, 3, 3, 4, 5, 5};
  s->nodes_n = sizes[rnd(s, 0, 7)];
  s->pre_vote = chance_pm(s, 600);
  s->check_quorum = chance_pm(s, 600);
  s->lease = s->check_quorum && chance_pm(s, 400);
  s->async_persist = chance_pm(s, 800);
  s->snapshots = chance_pm(s, 700);
  s->churn = chance_pm(s, 500);
  s->drop_pm = (uint32_t)rnd(s, 0, 100);
  s->dup_pm = (uint32_t)rnd(s, 0, 50);
  s->delay_min_us = (uint32_t)rnd(s, 50, 500);
  s->delay_max_us = s->delay_min_us + (uint32_t)rnd(s, 100, 20000);
  s->disk_min_us = (uint32_t)rnd(s, 20, 200);
  s->disk_max_us = s->disk_min_us + (uint32_t)rnd(s, 50, 5000);
  s->crash_pm = (uint32_t)rnd(s, 0, 30);
  s->partition_pm = (uint32_t)rnd(s, 0, 30);
  s->pause_pm = (uint32_t)rnd(s, 0, 20);
  s->clog_pm = (uint32_t)rnd(s, 0, 30);
  s->churn_pm = (uint32_t)rnd(s, 5, 40);
  s->transfer_pm = (uint32_t)rnd(s, 0, 15);
  s->leader_kill_pm = chance_pm(s, 300) ? (uint32_t)rnd(s, 100, 600) : 0;
  static const uint32_t batch[] = {1, 2, 4, 64, 64, 1024};
  s->append_entries_max = batch[rnd(s, 0, 5)];
  s->inflight_max = (uint32_t)rnd(s, 1, 32);
  if (chance_pm(s, 150)) {
    /* The Figure 8 family: five voters, leaders that die young, quick
     * restarts, no membership churn. */
    s->nodes_n = 5;
    s->leader_kill_pm = (uint32_t)rnd(s, 500, 900);
    s->churn = false;
    s->snapshots = chance_pm(s, 300);
    s->crash_pm = (uint32_t)rnd(s, 20, 60);
    s->partition_pm = (uint32_t)rnd(s, 0, 10);
    s->pause_pm = 0;
    s->transfer_pm = 0;
  }
  s->skew = (double)rnd(s, 0, s->lease ? 5 : 20) / 100.0;
  s->snap_threshold = rnd(s, 5, 200);
  s->clients_n = (int)rnd(s, 1, SIM_CLIENTS_MAX);
  s->lease_hunt = s->lease && chance_pm(s, 500);
  if (s->lease_hunt && s->churn) {
    /* configurations that grow under one leader, several times */
    s->churn_pm = (uint32_t)rnd(s, 100, 300);
    s->nodes_n = (int)rnd(s, 1, 3);
  }
  snprintf(s->res->swarm, sizeof s->res->swarm,
           "nodes=%d prevote=%d checkquorum=%d lease=%d async=%d snap=%d"
           "/%" PRIu64 " churn=%d drop=%u%% dup=%u%% delay=%u-%uus "
           "disk=%u-%uus crash=%u part=%u pause=%u clog=%u skew=%.0f%% "
           "flaky-leader=%u batch=%u inflight=%u clients=%d lease-hunt=%d",
           s->nodes_n, s->pre_vote, s->check_quorum, s->lease,
           s->async_persist, s->snapshots, s->snap_threshold, s->churn,
           s->drop_pm / 10, s->dup_pm / 10, s->delay_min_us, s->delay_max_us,
           s->disk_min_us, s->disk_max_us, s->crash_pm, s->partition_pm,
           s->pause_pm, s->clog_pm, s->skew * 100, s->leader_kill_pm,
           s->append_entries_max, s->inflight_max, s->clients_n,
           s->lease_hunt);
}

static int sim_bootstrap(sim *s) {
  qraft_conf_change members[SIM_NODES_MAX] = {{0}};
  for (int i = 0; i < SIM_NODES_MAX; i++) {
    s->nodes[i].id = (qraft_id)(i + 1);
    s->nodes[i].tick_scale = 1.0 + ((double)rnd(s, 0, 2000) / 1000.0 - 1.0) *
                                       s->skew;
  }
  for (int i = 0; i < s->nodes_n; i++) {
    members[i] = (qraft_conf_change){.change_type = QRAFT_CONF_ADD_NODE,
                                     .node_id = (qraft_id)(i + 1)};
  }
  qraft_entry boot[SIM_NODES_MAX];
  int rv = qraft_core_bootstrap_entries(members, (size_t)s->nodes_n, boot,
                                        NULL);
  if (rv != 0) {
    return rv;
  }
  for (int i = 0; i < s->nodes_n; i++) {
    sim_node *n = &s->nodes[i];
    n->disk.hs = (qraft_hard_state){.term = 1, .commit = (uint64_t)s->nodes_n};
    uint64_t chain = 0;
    for (int k = 0; k < s->nodes_n; k++) {
      chain = chain_next(chain, &boot[k]);
      disk_append(&n->disk, &boot[k], chain);
      check_log_matching(s, i, boot[k].index, boot[k].term, chain);
    }
  }
  for (int k = 0; k < s->nodes_n; k++) {
    qraft_slice_release(&boot[k].data);
  }
  for (int i = 0; i < s->nodes_n; i++) {
    if (node_boot(s, i) != 0) {
      return QRAFT_ECORRUPT;
    }
  }
  return 0;
}

static void sim_free(sim *s) {
  for (size_t i = 0; i < s->heap_n; i++) {
    msg_free(s->heap[i].msg);
  }
  free(s->heap);
  for (int i = 0; i < SIM_NODES_MAX; i++) {
    sim_node *n = &s->nodes[i];
    for (size_t k = 0; k < n->writes_n; k++) {
      write_free(&n->writes[k]);
    }
    free(n->writes);
    qraft_core_free(n->core);
    disk_truncate(&n->disk, 0);
    free(n->disk.ents);
    free(n->disk.chains);
    free(n->hchain);
  }
  free(s->leaders);
  free(s->map);
  free(s->gcommit);
  free(s->cterm);
  free(s->cchain);
  free(s->confs);
  qraft__lincheck_history_free(s->hist);
}

static void sim_step(sim *s, sim_event ev) {
  s->now = ev.time;
  sim_node *n = ev.node >= 0 && ev.node < SIM_NODES_MAX ? &s->nodes[ev.node]
                                                        : NULL;
  switch (ev.type) {
  case EV_TICK:
    if (!n->up || ev.incarnation != n->incarnation) {
      break;
    }
    if (!n->paused) {
      qraft_core_tick(n->core);
      node_drain(s, ev.node);
      check_quorum_step_down(s, ev.node);
    } else {
      n->missed_ticks++;
    }
    node_schedule_tick(s, ev.node);
    break;
  case EV_DELIVER: {
    sim_msg *sm = ev.msg;
    bool link_down = n->up && !link_ok(s, ev.node2, ev.node);
    if (!n->up || link_down) {
      /* the target is down, or a partition drops what is in flight; the
       * sender of a snapshot learns that it failed */
      if (link_down) {
        s->res->messages_dropped++;
      }
      if (sm->m.type == QRAFT_MSG_SNAPSHOT) {
        sim_push_ev(s, (sim_event){.time = s->now + 20000,
                                   .type = EV_SNAP_REPORT,
                                   .node = ev.node2,
                                   .node2 = ev.node,
                                   .incarnation = sm->from_incarnation,
                                   .x = 0});
      }
      msg_free(sm);
      break;
    }
    if (n->paused) {
      /* held in the socket buffer until the process runs again */
      sim_push_ev(s, (sim_event){.time = n->resume_time + 1,
                                 .type = EV_DELIVER,
                                 .node = ev.node,
                                 .node2 = ev.node2,
                                 .msg = sm});
      break;
    }
    sim_event_hash(s, "recv", ev.node, sm->m.type, sm->m.from, sm->m.term);
    if (sm->has_snap) {
      n->recv_snap_valid = true;
      n->recv_snap = sm->snap_data;
      n->recv_snap_term = sm->snap.metadata.term;
      sim_push_ev(s, (sim_event){.time = s->now,
                                 .type = EV_SNAP_REPORT,
                                 .node = ev.node2,
                                 .node2 = ev.node,
                                 .incarnation = sm->from_incarnation,
                                 .x = 1});
      s->res->snapshots_sent++;
    }
    if (sm->m.type == QRAFT_MSG_APPEND_RESPONSE ||
        sm->m.type == QRAFT_MSG_HEARTBEAT_RESPONSE) {
      /* an answer that arrived (perhaps late, through a clogged link) is
       * what check-quorum counts: restart the isolation count */
      n->isolated_ticks = 0;
    }
    (void)qraft_core_step(n->core, &sm->m);
    msg_free(sm);
    node_drain(s, ev.node);
    break;
  }
  case EV_DISK:
    if (!n->up || ev.incarnation != n->incarnation) {
      break;
    }
    node_write_done(s, ev.node);
    break;
  case EV_CLIENT:
    client_event(s, ev.node);
    break;
  case EV_CHAOS:
    chaos(s);
    if (s->now < s->fault_end) {
      sim_push_ev(s, (sim_event){.time = s->now + rnd(s, 10000, 100000),
                                 .type = EV_CHAOS,
                                 .node = -1});
    }
    break;
  case EV_RESTART:
    if (!n->up && !n->retired && !s->healed) {
      node_boot(s, ev.node);
    }
    break;
  case EV_RESUME:
    if (n->up && ev.incarnation == n->incarnation && n->paused &&
        s->now >= n->resume_time) {
      n->paused = false;
      sim_event_hash(s, "resume", ev.node, n->missed_ticks, 0, 0);
      node_catch_up_ticks(s, ev.node);
    }
    break;
  case EV_HEAL_LINK:
    memset(s->blocked, 0, sizeof s->blocked);
    sim_event_hash(s, "heal-links", -1, 0, 0, 0);
    break;
  case EV_SNAP_REPORT:
    if (n->up && ev.incarnation == n->incarnation && n->core != NULL) {
      qraft_core_report_snapshot(n->core, s->nodes[ev.node2].id, ev.x != 0);
      node_drain(s, ev.node);
    }
    break;
  case EV_STOP_NODE:
    if (!conf_has(&s->conf, n->id, false) && !n->retired && !n->joining &&
        !voters_applied(s, s->conf_index)) {
      /* An operator waits until the remaining members know of the removal:
       * a member that has not applied it may still need the removed node's
       * vote to elect a leader that tells it. */
      sim_push_ev(s, (sim_event){.time = s->now + 500000,
                                 .type = EV_STOP_NODE,
                                 .node = ev.node,
                                 .x = ev.x});
      break;
    }
    if (!conf_has(&s->conf, n->id, false) && !n->retired && !n->joining) {
      sim_event_hash(s, "retire", ev.node, ev.x, 0, 0);
      node_crash(s, ev.node);
      n->retired = true;
    }
    break;
  case EV_HEAL_ALL:
    heal_all(s);
    break;
  case EV_KILL:
    if (n->up && ev.incarnation == n->incarnation && !s->healed) {
      node_crash(s, ev.node);
      sim_push_ev(s, (sim_event){.time = s->now + rnd(s, 10000, 1000000),
                                 .type = EV_RESTART,
                                 .node = ev.node});
    }
    break;
  case EV_LEASE_SPLIT:
    if (!s->healed && s->now < s->fault_end) {
      partition(s, 3);
    }
    break;
  case EV_ISOLATE:
    if (n->up && ev.incarnation == n->incarnation && !s->healed) {
      for (int i = 0; i < SIM_NODES_MAX; i++) {
        if (i != ev.node) {
          s->blocked[ev.node][i] = true;
          s->blocked[i][ev.node] = true;
        }
      }
      s->res->partitions++;
      sim_event_hash(s, "isolate", ev.node, 0, 0, 0);
      sim_push_ev(s, (sim_event){.time = s->now + rnd(s, 50000, 1000000),
                                 .type = EV_HEAL_LINK,
                                 .node = -1});
    }
    break;
  }
}

int qraft_sim_core_run(const qraft_sim_core_opts *opts,
                       qraft_sim_core_result *res) {
  memset(res, 0, sizeof *res);
  res->ok = true;
  res->trace_hash = 0xcbf29ce484222325ULL;
  sim *s = calloc(1, sizeof *s);
  if (s == NULL) {
    return -ENOMEM;
  }
  s->res = res;
  s->trace = opts->trace;
  s->local_read_client = -1;
  qraft_prng_init(&s->prng, opts->seed);
  if (qraft__lincheck_history_new(&s->hist) != 0) {
    free(s);
    return -ENOMEM;
  }
  sim_swarm(s);
  uint64_t duration_us = opts->duration_ms
                             ? opts->duration_ms * 1000
                             : rnd(s, 20, 60) * 1000000;
  s->end_time = duration_us;
  s->fault_end = duration_us * 7 / 10;
  if (sim_bootstrap(s) != 0) {
    sim_fail(s, "bootstrap", "could not bootstrap");
  }
  for (int ci = 0; ci < s->clients_n; ci++) {
    s->clients[ci].process = (uint64_t)ci * 1000000;
    sim_push_ev(s, (sim_event){.time = rnd(s, 0, 100000), .type = EV_CLIENT,
                               .node = ci});
  }
  sim_push_ev(s, (sim_event){.time = rnd(s, 100000, 500000),
                             .type = EV_CHAOS,
                             .node = -1});
  sim_push_ev(s, (sim_event){.time = s->fault_end, .type = EV_HEAL_ALL,
                             .node = -1});
  uint64_t last_conf_index = 0;
  while (!s->failed && s->heap_n > 0) {
    sim_event ev = sim_pop(s);
    if (ev.time > s->end_time) {
      msg_free(ev.msg);
      break;
    }
    sim_step(s, ev);
    if (s->conf_index != last_conf_index) {
      last_conf_index = s->conf_index;
      retire_removed(s);
    }
    if (s->healed && !s->failed && s->healed_ok_ops == 0 &&
        s->now > s->heal_time + LIVENESS_US) {
      sim_fail(s, "liveness",
               "no write or read completed within %u ms of healing",
               LIVENESS_US / 1000);
    }
  }
  s->now = s->end_time;
  res->virtual_ms = s->now / 1000;
  if (!s->failed) {
    check_durable_quorum(s);
  }
  if (!s->failed && s->healed_ok_ops == 0) {
    sim_fail(s, "liveness", "nothing completed after healing");
  }
  if (!s->failed) {
    /* operations still pending at the end have unknown outcomes */
    for (int ci = 0; ci < s->clients_n; ci++) {
      if (s->clients[ci].pending) {
        client_end(s, ci,
                   s->clients[ci].is_read ? QRAFT_LINCHECK_FAIL
                                          : QRAFT_LINCHECK_INFO,
                   0);
      }
    }
    if (opts->history != NULL &&
        qraft__lincheck_write_jsonl(s->hist, opts->history, NULL) != 0) {
      sim_fail(s, "history", "cannot write the history");
    }
    qraft__lincheck_result lr;
    memset(&lr, 0, sizeof lr);
    qraft__lincheck_opts lo = {.steps_max = 20000000};
    int rv = qraft__lincheck_check(s->hist, &lo, &lr, NULL);
    if (rv != 0) {
      sim_fail(s, "linearizability", "checker error %d", rv);
    } else if (lr.verdict == QRAFT_LINCHECK_VIOLATION) {
      sim_fail(s, "linearizability",
               "key %" PRIu64 " has no linearization (%zu operations "
               "linearized, operation #%zu cannot be placed)",
               lr.key, lr.prefix_n, lr.blocked);
      if (s->trace) {
        qraft__lincheck_result_print(s->hist, &lr, s->trace);
      }
    } else if (lr.verdict == QRAFT_LINCHECK_UNKNOWN) {
      sim_fail(s, "linearizability",
               "checker budget exhausted on key %" PRIu64, lr.key);
    }
    qraft__lincheck_result_close(&lr);
  }
  sim_free(s);
  free(s);
  return 0;
}

/*
 * bench_core: the Raft core's cost per operation, in memory, no I/O, in the
 * workloads of etcd raft's own benchmarks, and the simulator's speed, beside
 * a baseline measured in the same run:
 *
 *   baseline        memcpy of the 128-byte payload into a 1 MiB ring
 *   one node        propose one 128-byte entry, take the update, "persist"
 *                   it in an in-memory log, qraft_core_persisted, apply the
 *                   committed entry, qraft_core_applied
 *   three nodes, 1  messages stepped directly between three cores (a FIFO
 *                   queue in memory), one proposal in flight, until all
 *                   three applied it
 *   three nodes, 64 the same with 64 proposals in flight
 *   simulator       qraft_sim_core_run over a fixed set of seeds: events per
 *                   second of wall time and runs per minute
 *
 * The driver persists synchronously (an update's writes are in its memory
 * log before its messages leave), never ticks during a measurement, and
 * compacts every node's core and log every 1024 applied entries, keeping
 * 512, as a server taking snapshots would; without compaction the core's
 * log would grow, and its array with it.
 *
 * Every workload runs a few times (a new cluster each time, warmed up with
 * WARMUP_OPS operations before the clock starts, which lets the core's log
 * array reach its size between compactions) and prints its median, with
 * the spread. Allocations are
 * counted by wrapping malloc, calloc, realloc, aligned_alloc and
 * posix_memalign at link time (see CMakeLists.txt); the library is linked
 * statically, so its calls are counted too. The driver itself allocates
 * nothing after setup: entry payloads are slices of one reference-counted
 * buffer, the in-memory log and the message queue are fixed rings, so every
 * allocation counted in a measured loop is the core's.
 *
 * The etcd raft 3.4 figures printed beside ours are reference figures from
 * PERFORMANCE.md, measured earlier on a machine of this kind, not in this
 * run; the memcpy baseline is what tells how fast this machine is now.
 *
 *   bench_core [--repeats R] [--scale X] [--seeds S] [--no-sim]
 *              [--trace-allocs N]
 *
 * --scale multiplies the operation counts; --trace-allocs N prints to
 * stderr a backtrace of the first N allocations inside each measured core
 * loop, as offsets: `addr2line -f -i -e build/bin/bench_core 0x...` names
 * the call sites. Build with -DWARMUP_OPS=0 to see the warm-up's too.
 */
#include <qraft/assert.h>
#include <qraft/core.h>
#include <qraft/sim.h>

#include <execinfo.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD_BYTES 128
#define REPEATS_DEFAULT 5
#define REPEATS_MAX 32
#define ONE_NODE_OPS 200000
#define THREE_NODES_OPS 50000
#define THREE_NODES_64_OPS 100000
#ifndef WARMUP_OPS
#define WARMUP_OPS 5000
#endif
#define INFLIGHT_MANY 64
#define SIM_SEEDS_DEFAULT 100
#define SIM_SEED_FIRST 1

/* The in-memory log of a node, a ring indexed by log index. The driver
 * compacts the core (and this log) every COMPACT_EVERY applied entries,
 * keeping the last COMPACT_KEEP, as a server taking snapshots would. */
#define STORE_CAP 8192
#define COMPACT_EVERY 1024
#define COMPACT_KEEP 512
_Static_assert((STORE_CAP & (STORE_CAP - 1)) == 0, "STORE_CAP: power of two");
_Static_assert(COMPACT_EVERY + COMPACT_KEEP + 2 * INFLIGHT_MANY < STORE_CAP,
               "the log ring holds everything between compactions");

/* The network: one FIFO ring of messages for the whole cluster. */
#define NET_MSGS_MAX 4096
#define NET_MSG_ENTRIES_MAX 64
#define NET_MSG_CONTEXT_MAX 64
#define NODES_MAX 3

/* ---- allocation counting (link-time wrappers) ---- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__real_aligned_alloc(size_t a, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);
void *__wrap_aligned_alloc(size_t a, size_t n);
int __wrap_posix_memalign(void **p, size_t a, size_t n);

static uint64_t allocs_n;
static uint64_t frees_n;
static int alloc_trace_left; /* backtraces still to print */

static void alloc_note(void) {
  allocs_n++;
  if (alloc_trace_left > 0) {
    alloc_trace_left--;
    void *frames[24];
    int k = backtrace(frames, 24);
    static const char head[] = "bench_core: allocation at\n";
    static const char tail[] = "--\n";
    ssize_t w = write(2, head, sizeof head - 1);
    backtrace_symbols_fd(frames, k, 2);
    w += write(2, tail, sizeof tail - 1);
    (void)w;
  }
}

void *__wrap_malloc(size_t n) {
  alloc_note();
  return __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n) {
  alloc_note();
  return __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n) {
  alloc_note();
  return __real_realloc(p, n);
}

void __wrap_free(void *p) {
  if (p != NULL) {
    frees_n++;
  }
  __real_free(p);
}

void *__wrap_aligned_alloc(size_t a, size_t n) {
  alloc_note();
  return __real_aligned_alloc(a, n);
}

int __wrap_posix_memalign(void **p, size_t a, size_t n) {
  alloc_note();
  return __real_posix_memalign(p, a, n);
}

/* ---- time ---- */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct sample {
  double ns_op;
  double allocs_op;
  uint64_t warmup_allocs; /* in the warm-up ops, before the clock starts */
  double msgs_op;         /* messages stepped per op */
} sample;

typedef struct summary {
  double median, min, max; /* ns/op */
  double allocs_op;        /* the median run's */
} summary;

static summary summarize(sample *s, int n) {
  double v[REPEATS_MAX];
  for (int i = 0; i < n; i++) {
    v[i] = s[i].ns_op;
  }
  qsort(v, (size_t)n, sizeof v[0], cmp_double);
  summary r = {.median = v[n / 2], .min = v[0], .max = v[n - 1]};
  for (int i = 0; i < n; i++) {
    if (s[i].ns_op == r.median) {
      r.allocs_op = s[i].allocs_op;
    }
  }
  return r;
}

/* ---- the payload ---- */

static qraft_buf *payload; /* every proposal is a slice of it */

static qraft_entry payload_entry(void) {
  return (qraft_entry){
      .type = QRAFT_ENTRY_NORMAL,
      .data = {.data = payload->data, .len = payload->len, .owner = payload}};
}

/* ---- the in-memory storage of a node ---- */

typedef struct mem_store {
  qraft_hard_state hs;
  uint64_t first; /* entries [first, last] are held */
  uint64_t last;
  qraft_entry ents[STORE_CAP];
} mem_store;

static qraft_entry *store_at(mem_store *s, uint64_t index) {
  return &s->ents[index & (STORE_CAP - 1)];
}

static void store_truncate(mem_store *s, uint64_t from) {
  for (; s->last >= from && s->last >= s->first; s->last--) {
    qraft_entry *e = store_at(s, s->last);
    qraft_slice_release(&e->data);
    qraft_slice_release(&e->context);
  }
}

static void store_append(mem_store *s, const qraft_entry *e) {
  if (e->index <= s->last) {
    store_truncate(s, e->index);
  }
  QRAFT_ASSERTF(e->index == s->last + 1, "append %" PRIu64 " after %" PRIu64,
                e->index, s->last);
  QRAFT_ASSERTF(e->index - s->first < STORE_CAP, "in-memory log full");
  qraft_entry *d = store_at(s, e->index);
  *d = *e;
  d->data = qraft_slice_ref(e->data);
  d->context = qraft_slice_ref(e->context);
  s->last = e->index;
}

static void store_compact(mem_store *s, uint64_t to) {
  for (; s->first <= to && s->first <= s->last; s->first++) {
    qraft_entry *e = store_at(s, s->first);
    qraft_slice_release(&e->data);
    qraft_slice_release(&e->context);
  }
}

/* ---- the cluster ---- */

typedef struct node {
  qraft_id id;
  qraft_core *core;
  mem_store store;
  uint64_t applied;
  uint64_t compacted; /* the core's snapshot index */
  uint64_t sm;        /* the state machine: a sum over applied payloads */
} node;

typedef struct net_msg {
  qraft_message m;
  qraft_entry ents[NET_MSG_ENTRIES_MAX];
  uint8_t ctx[NET_MSG_CONTEXT_MAX];
} net_msg;

typedef struct cluster {
  int n;
  node *nodes; /* ids 1..n */
  net_msg *q;  /* FIFO ring of NET_MSGS_MAX */
  size_t q_start, q_n;
  uint64_t delivered;
} cluster;

static void net_send(cluster *c, const qraft_message *m) {
  QRAFT_ASSERTF(c->q_n < NET_MSGS_MAX, "message queue full");
  QRAFT_ASSERTF(m->snapshot == NULL, "a snapshot was sent: compaction went "
                                     "past a follower");
  QRAFT_ASSERTF(m->entries_n <= NET_MSG_ENTRIES_MAX, "%zu entries in a message",
                m->entries_n);
  QRAFT_ASSERT(m->context.len <= NET_MSG_CONTEXT_MAX);
  QRAFT_ASSERT(m->to >= 1 && m->to <= (qraft_id)c->n);
  net_msg *nm = &c->q[(c->q_start + c->q_n) % NET_MSGS_MAX];
  c->q_n++;
  nm->m = *m;
  for (size_t i = 0; i < m->entries_n; i++) {
    nm->ents[i] = m->entries[i];
    nm->ents[i].data = qraft_slice_ref(m->entries[i].data);
    nm->ents[i].context = qraft_slice_ref(m->entries[i].context);
  }
  nm->m.entries = nm->ents;
  if (m->context.len > 0) {
    memcpy(nm->ctx, m->context.data, m->context.len);
    nm->m.context = (qraft_slice){.data = nm->ctx, .len = m->context.len};
  }
}

static void node_maybe_compact(node *n) {
  if (n->applied < n->compacted + COMPACT_EVERY + COMPACT_KEEP) {
    return;
  }
  uint64_t to = n->applied - COMPACT_KEEP;
  int rv = qraft_core_compact(n->core, to);
  QRAFT_ASSERTF(rv == 0, "compact to %" PRIu64 ": %d", to, rv);
  store_compact(&n->store, to);
  n->compacted = to;
}

/* Takes and carries out updates until the core has none: writes to the
 * in-memory log (durable at once), sends every message, applies, and
 * acknowledges. */
static void node_drain(cluster *c, node *n) {
  while (qraft_core_has_update(n->core)) {
    qraft_update u;
    qraft_core_take_update(n->core, &u);
    QRAFT_ASSERT(u.snapshot == NULL);
    if (u.truncate_from != 0) {
      store_truncate(&n->store, u.truncate_from);
    }
    for (size_t i = 0; i < u.entries_n; i++) {
      store_append(&n->store, &u.entries[i]);
    }
    if (u.hard_state_changed) {
      n->store.hs = u.hard_state;
    }
    for (size_t i = 0; i < u.messages_n; i++) {
      net_send(c, &u.messages[i]);
    }
    /* The writes above are durable already (rule 3). */
    for (size_t i = 0; i < u.messages_after_persist_n; i++) {
      net_send(c, &u.messages_after_persist[i]);
    }
    uint64_t applied = n->applied;
    for (size_t i = 0; i < u.committed_n; i++) {
      const qraft_entry *e = &u.committed[i];
      QRAFT_ASSERT(e->index == applied + 1);
      applied = e->index;
      if (e->data.len > 0) {
        n->sm += e->data.data[0] + e->data.data[e->data.len - 1];
      }
    }
    if (u.persist_id != 0) {
      qraft_core_persisted(n->core, u.persist_id);
    }
    if (applied != n->applied) {
      n->applied = applied;
      qraft_core_applied(n->core, applied);
      node_maybe_compact(n);
    }
  }
}

/* Delivers the oldest message and carries out the receiver's updates. */
static void net_deliver_one(cluster *c) {
  QRAFT_ASSERT(c->q_n > 0);
  net_msg *nm = &c->q[c->q_start];
  node *to = &c->nodes[nm->m.to - 1];
  int rv = qraft_core_step(to->core, &nm->m);
  QRAFT_ASSERTF(rv == 0, "step %s: %d", qraft_msg_type_name(nm->m.type), rv);
  for (size_t i = 0; i < nm->m.entries_n; i++) {
    qraft_slice_release(&nm->ents[i].data);
    qraft_slice_release(&nm->ents[i].context);
  }
  c->q_start = (c->q_start + 1) % NET_MSGS_MAX;
  c->q_n--;
  c->delivered++;
  node_drain(c, to);
}

static void net_deliver_all(cluster *c) {
  while (c->q_n > 0) {
    net_deliver_one(c);
  }
}

static void cluster_init(cluster *c, int voters) {
  QRAFT_ASSERT(voters >= 1 && voters <= NODES_MAX);
  memset(c, 0, sizeof *c);
  c->n = voters;
  c->nodes = calloc((size_t)voters, sizeof *c->nodes);
  c->q = calloc(NET_MSGS_MAX, sizeof *c->q);
  QRAFT_ASSERT(c->nodes != NULL && c->q != NULL);
  qraft_conf_change members[NODES_MAX];
  for (int i = 0; i < voters; i++) {
    members[i] = (qraft_conf_change){.change_type = QRAFT_CONF_ADD_NODE,
                                     .node_id = (qraft_id)(i + 1)};
  }
  qraft_entry boot[NODES_MAX];
  int rv = qraft_core_bootstrap_entries(members, (size_t)voters, boot, NULL);
  QRAFT_ASSERT(rv == 0);
  for (int i = 0; i < voters; i++) {
    node *n = &c->nodes[i];
    n->id = (qraft_id)(i + 1);
    n->store.hs = (qraft_hard_state){.term = 1, .commit = (uint64_t)voters};
    n->store.first = 1;
    for (int k = 0; k < voters; k++) {
      store_append(&n->store, &boot[k]);
    }
    qraft_core_config cfg;
    qraft_core_config_default(&cfg);
    cfg.id = n->id;
    cfg.seed = 1000 + n->id;
    cfg.election_ticks = 10;
    cfg.heartbeat_ticks = 1;
    qraft_core_restore rs = {.hard_state = n->store.hs,
                             .entries = store_at(&n->store, 1),
                             .entries_n = (size_t)voters};
    qraft_err err;
    qraft_err_init(&err, 0);
    rv = qraft_core_new(&cfg, &rs, &n->core, &err);
    QRAFT_ASSERTF(rv == 0, "qraft_core_new: %d", rv);
  }
  for (int k = 0; k < voters; k++) {
    qraft_slice_release(&boot[k].data);
  }
  for (int i = 0; i < voters; i++) {
    node_drain(c, &c->nodes[i]);
  }
  net_deliver_all(c);
  qraft_core_campaign(c->nodes[0].core);
  node_drain(c, &c->nodes[0]);
  net_deliver_all(c);
  qraft_core_status st;
  qraft_core_status_get(c->nodes[0].core, &st);
  QRAFT_ASSERTF(st.role == QRAFT_ROLE_LEADER, "node 1 is %s, not leader",
                qraft_role_name(st.role));
}

static void cluster_close(cluster *c) {
  while (c->q_n > 0) {
    net_msg *nm = &c->q[c->q_start];
    for (size_t i = 0; i < nm->m.entries_n; i++) {
      qraft_slice_release(&nm->ents[i].data);
      qraft_slice_release(&nm->ents[i].context);
    }
    c->q_start = (c->q_start + 1) % NET_MSGS_MAX;
    c->q_n--;
  }
  for (int i = 0; i < c->n; i++) {
    node *n = &c->nodes[i];
    qraft_core_free(n->core);
    n->core = NULL;
    store_compact(&n->store, n->store.last);
  }
  free(c->q);
  free(c->nodes);
  c->q = NULL;
  c->nodes = NULL;
}

static uint64_t cluster_min_applied(const cluster *c) {
  uint64_t m = UINT64_MAX;
  for (int i = 0; i < c->n; i++) {
    if (c->nodes[i].applied < m) {
      m = c->nodes[i].applied;
    }
  }
  return m;
}

static uint64_t leader_propose(cluster *c) {
  qraft_entry e = payload_entry();
  uint64_t index = 0;
  int rv = qraft_core_propose(c->nodes[0].core, &e, 1, &index, NULL);
  QRAFT_ASSERTF(rv == 0, "propose: %d", rv);
  node_drain(c, &c->nodes[0]);
  return index;
}

/* ---- the workloads ---- */

/* One op: propose, persist, apply, on a single-voter cluster. */
static void one_node_ops(cluster *c, size_t ops) {
  node *n = &c->nodes[0];
  for (size_t i = 0; i < ops; i++) {
    uint64_t index = leader_propose(c);
    QRAFT_ASSERTF(n->applied == index, "applied %" PRIu64 " of %" PRIu64,
                  n->applied, index);
  }
}

/* One op: a proposal on the leader, delivered, committed and applied by all
 * three before the next one. */
static void three_nodes_ops(cluster *c, size_t ops) {
  for (size_t i = 0; i < ops; i++) {
    uint64_t index = leader_propose(c);
    net_deliver_all(c);
    QRAFT_ASSERTF(cluster_min_applied(c) >= index,
                  "applied %" PRIu64 " of %" PRIu64, cluster_min_applied(c),
                  index);
  }
}

/* `ops` proposals, keeping `inflight` of them proposed but not yet applied
 * by all three; messages are delivered one at a time between proposals. */
static void three_nodes_pipelined_ops(cluster *c, size_t ops,
                                      uint64_t inflight) {
  uint64_t base = cluster_min_applied(c);
  QRAFT_ASSERT(base == c->nodes[0].applied); /* nothing in flight */
  uint64_t proposed = base, target = 0;
  size_t issued = 0;
  for (;;) {
    uint64_t done = cluster_min_applied(c);
    if (issued == ops && done >= target) {
      break;
    }
    while (issued < ops && proposed - done < inflight) {
      proposed = leader_propose(c);
      target = proposed;
      issued++;
    }
    QRAFT_ASSERTF(c->q_n > 0, "stalled: applied %" PRIu64 " of %" PRIu64,
                  done, proposed);
    net_deliver_one(c);
  }
}

typedef enum workload {
  ONE_NODE,
  THREE_NODES,
  THREE_NODES_64,
} workload;

static void run_ops(workload w, cluster *c, size_t ops) {
  switch (w) {
  case ONE_NODE:
    one_node_ops(c, ops);
    break;
  case THREE_NODES:
    three_nodes_ops(c, ops);
    break;
  case THREE_NODES_64:
    three_nodes_pipelined_ops(c, ops, INFLIGHT_MANY);
    break;
  }
}

static int trace_allocs; /* --trace-allocs */

static uint64_t setup_allocs; /* proof that the counting wrappers are live */

static sample run_workload(workload w, size_t ops) {
  cluster c;
  uint64_t s0 = allocs_n;
  cluster_init(&c, w == ONE_NODE ? 1 : 3);
  setup_allocs += allocs_n - s0;
  uint64_t w0 = allocs_n;
  run_ops(w, &c, WARMUP_OPS);
  uint64_t a0 = allocs_n;
  uint64_t d0 = c.delivered;
  alloc_trace_left = trace_allocs;
  uint64_t t0 = now_ns();
  run_ops(w, &c, ops);
  uint64_t t1 = now_ns();
  alloc_trace_left = 0;
  uint64_t a1 = allocs_n;
  uint64_t d1 = c.delivered;
  cluster_close(&c);
  return (sample){.ns_op = (double)(t1 - t0) / (double)ops,
                  .allocs_op = (double)(a1 - a0) / (double)ops,
                  .warmup_allocs = a0 - w0,
                  .msgs_op = (double)(d1 - d0) / (double)ops};
}

/* The baseline: a memcpy of the payload per op, into a 1 MiB ring. */
#define BASELINE_RING_BYTES (1u << 20)
static uint8_t baseline_ring[BASELINE_RING_BYTES];

static sample run_baseline(size_t ops) {
  /* fault the ring's pages in before the clock starts */
  memset(baseline_ring, 0, sizeof baseline_ring);
  size_t at = 0;
  uint64_t t0 = now_ns();
  for (size_t i = 0; i < ops; i++) {
    memcpy(baseline_ring + at, payload->data, PAYLOAD_BYTES);
    /* keep the copy: the compiler may not drop or merge it */
    __asm__ volatile("" : : "r"(baseline_ring + at) : "memory");
    at += PAYLOAD_BYTES;
    if (at + PAYLOAD_BYTES > BASELINE_RING_BYTES) {
      at = 0;
    }
  }
  uint64_t t1 = now_ns();
  return (sample){.ns_op = (double)(t1 - t0) / (double)ops};
}

/* The simulator: seeds SIM_SEED_FIRST.. over one wall-clock interval. */
typedef struct sim_sample {
  double events_s;
  double runs_min;
  uint64_t events;
  uint64_t allocs;
  int failed;
} sim_sample;

static sim_sample run_sim(int seeds) {
  sim_sample s = {0};
  uint64_t a0 = allocs_n;
  uint64_t t0 = now_ns();
  for (int i = 0; i < seeds; i++) {
    qraft_sim_core_opts opts = {.seed = (uint64_t)(SIM_SEED_FIRST + i)};
    qraft_sim_core_result res;
    int rv = qraft_sim_core_run(&opts, &res);
    QRAFT_ASSERTF(rv == 0, "qraft_sim_core_run: %d", rv);
    if (!res.ok) {
      fprintf(stderr, "bench_core: simulator seed %" PRIu64 " failed: %s: %s\n",
              opts.seed, res.checker, res.failure);
      s.failed++;
    }
    s.events += res.events;
  }
  double secs = (double)(now_ns() - t0) / 1e9;
  s.allocs = allocs_n - a0;
  s.events_s = (double)s.events / secs;
  s.runs_min = (double)seeds / secs * 60.0;
  return s;
}

/* ---- report ---- */

typedef struct reference {
  const char *key; /* for --only */
  const char *name;
  size_t ops;
  workload w;
  double etcd_ns;     /* etcd raft 3.4, PERFORMANCE.md */
  double etcd_allocs; /* < 0: not given */
  bool same_run;      /* etcd's figure was measured in this run (--etcd) */
} reference;

static const reference workloads[] = {
    {"one", "one node: propose..applied", ONE_NODE_OPS, ONE_NODE, 383, 3,
     false},
    {"three", "three nodes, 1 in flight", THREE_NODES_OPS, THREE_NODES, 3835,
     18, false},
    {"three64", "three nodes, 64 in flight", THREE_NODES_64_OPS,
     THREE_NODES_64, 2659, -1, false},
};
#define WORKLOADS_N (sizeof workloads / sizeof workloads[0])

static void usage(void) {
  fprintf(stderr, "usage: bench_core [--repeats R] [--scale X] [--seeds S] "
                  "[--no-sim] [--trace-allocs N]\n"
                  "                  [--only one|three|three64|sim] "
                  "[--etcd FILE]\n"
                  "  --etcd FILE: etcd raft's figures measured in this run, "
                  "lines of\n"
                  "  'rawnode WORKLOAD NS_MEDIAN NS_MIN NS_MAX ALLOCS' "
                  "(bench/etcd/rawnode.go)\n");
  exit(2);
}

/* Reads etcd raft's figures of this run (bench/etcd/rawnode.go) over the
 * reference ones; returns how many workloads it found, -1 if unreadable. */
static int read_etcd(const char *path, reference *refs) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    return -1;
  }
  char line[256], key[32];
  double med, lo, hi, allocs;
  int found = 0;
  while (fgets(line, sizeof line, f) != NULL) {
    if (sscanf(line, "rawnode %31s %lf %lf %lf %lf", key, &med, &lo, &hi,
               &allocs) != 5) {
      continue;
    }
    for (size_t w = 0; w < WORKLOADS_N; w++) {
      if (strcmp(refs[w].key, key) == 0 && med > 0) {
        refs[w].etcd_ns = med;
        refs[w].etcd_allocs = allocs;
        refs[w].same_run = true;
        found++;
      }
    }
  }
  fclose(f);
  return found;
}

int main(int argc, char **argv) {
  const char *etcd_file = NULL;
  int repeats = REPEATS_DEFAULT;
  double scale = 1.0;
  int seeds = SIM_SEEDS_DEFAULT;
  bool sim = true;
  bool selected[WORKLOADS_N];
  size_t selected_n = WORKLOADS_N;
  for (size_t w = 0; w < WORKLOADS_N; w++) {
    selected[w] = true;
  }
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--repeats") == 0 && i + 1 < argc) {
      repeats = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc) {
      scale = atof(argv[++i]);
    } else if (strcmp(argv[i], "--seeds") == 0 && i + 1 < argc) {
      seeds = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--etcd") == 0 && i + 1 < argc) {
      etcd_file = argv[++i];
    } else if (strcmp(argv[i], "--no-sim") == 0) {
      sim = false;
    } else if (strcmp(argv[i], "--trace-allocs") == 0 && i + 1 < argc) {
      trace_allocs = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      const char *key = argv[++i];
      bool known = strcmp(key, "sim") == 0;
      sim = known;
      selected_n = 0;
      for (size_t w = 0; w < WORKLOADS_N; w++) {
        selected[w] = strcmp(key, workloads[w].key) == 0;
        selected_n += selected[w];
        known = known || selected[w];
      }
      if (!known) {
        usage();
      }
    } else {
      usage();
    }
  }
  if (repeats < 1 || repeats > REPEATS_MAX || scale <= 0 || seeds < 1) {
    usage();
  }
  /* backtrace() loads its unwinder on first use: do it before measuring. */
  void *frame;
  (void)backtrace(&frame, 1);

  payload = qraft_buf_new(PAYLOAD_BYTES);
  QRAFT_ASSERT(payload != NULL);
  for (size_t i = 0; i < PAYLOAD_BYTES; i++) {
    payload->data[i] = (uint8_t)(i * 7 + 1);
  }
  payload->len = PAYLOAD_BYTES;

  /* Other work on the machine is the first suspect when numbers move. */
  char load[64] = "?";
  FILE *f = fopen("/proc/loadavg", "r");
  if (f != NULL) {
    if (fgets(load, sizeof load, f) != NULL) {
      /* the three averages, not the run queue and last pid */
      char *end = load;
      for (int k = 0; k < 3 && end != NULL; k++) {
        end = strchr(end + (k > 0), ' ');
      }
      if (end != NULL) {
        *end = '\0';
      }
    }
    fclose(f);
  }
  printf("bench_core: the Raft core in memory, %d-byte entries, median of %d "
         "runs (min..max), %d warm-up ops per run; %ld CPUs, load average "
         "%s\n",
         PAYLOAD_BYTES, repeats, WARMUP_OPS, sysconf(_SC_NPROCESSORS_ONLN),
         load);
  reference refs[WORKLOADS_N];
  memcpy(refs, workloads, sizeof refs);
  int etcd_found = etcd_file != NULL ? read_etcd(etcd_file, refs) : 0;
  if (etcd_file != NULL && etcd_found <= 0) {
    fprintf(stderr, "bench_core: no figures in %s; using the reference ones\n",
            etcd_file);
  }
  if (etcd_found > 0) {
    printf("  etcd = etcd raft 3.4's RawNode in the same workloads, measured "
           "IN THIS RUN just before (bench/etcd/rawnode.go; allocs: Go heap "
           "allocations); a figure marked * is the reference one of "
           "PERFORMANCE.md;\n");
  } else {
    printf("  etcd = etcd raft 3.4, a REFERENCE figure from PERFORMANCE.md, "
           "measured earlier on a machine of this kind, NOT in this run;\n");
  }
  printf("  goal = one tenth of etcd's time and no allocation per op; "
         "x base = ns/op over the memcpy baseline of this run\n\n");

  /* Workloads interleaved with the baseline, repeat by repeat, so that
   * machine noise touches them alike. */
  size_t base_ops = (size_t)(ONE_NODE_OPS * 100 * scale);
  sample base[REPEATS_MAX];
  sample res[WORKLOADS_N][REPEATS_MAX];
  for (int r = 0; r < repeats; r++) {
    base[r] = run_baseline(base_ops);
    for (size_t w = 0; w < WORKLOADS_N; w++) {
      if (!selected[w]) {
        continue;
      }
      size_t ops = (size_t)((double)workloads[w].ops * scale);
      if (ops < 1) {
        ops = 1;
      }
      res[w][r] = run_workload(workloads[w].w, ops);
    }
  }
  summary bs = summarize(base, repeats);
  printf("  %-28s %9.1f ns/op (%.1f..%.1f)\n",
         "baseline: memcpy 128 B", bs.median, bs.min, bs.max);
  if (selected_n > 0) {
    printf("\n  %-28s %9s %16s %9s %7s %12s %8s %8s %8s\n", "workload",
           "ns/op", "(min..max)", "allocs/op", "x base", "etcd ns, al",
           "vs etcd", "goal ns", "vs goal");
  }
  for (size_t w = 0; w < WORKLOADS_N; w++) {
    if (!selected[w]) {
      continue;
    }
    const reference *ref = &refs[w];
    summary s = summarize(res[w], repeats);
    char spread[40], etcd[32];
    snprintf(spread, sizeof spread, "(%.0f..%.0f)", s.min, s.max);
    if (ref->etcd_allocs >= 0) {
      snprintf(etcd, sizeof etcd, "%.0f, %.1f%s", ref->etcd_ns,
               ref->etcd_allocs, ref->same_run || etcd_found <= 0 ? "" : "*");
    } else {
      snprintf(etcd, sizeof etcd, "%.0f, -%s", ref->etcd_ns,
               ref->same_run || etcd_found <= 0 ? "" : "*");
    }
    double goal = ref->etcd_ns / 10.0;
    printf("  %-28s %9.1f %16s %9.3f %7.1f %12s %7.3fx %8.1f %7.2fx %s\n",
           ref->name, s.median, spread, s.allocs_op, s.median / bs.median, etcd,
           s.median / ref->etcd_ns, goal, s.median / goal,
           s.median <= goal && s.allocs_op == 0 ? "meets goal"
                                                : "misses goal");
  }
  if (selected_n > 0) {
    printf("  (vs etcd, vs goal: our time over theirs, lower is better; the "
           "goal is met at <= 1.00x with 0 allocs/op)\n");
    /* A counter that never moved would make every 0 above meaningless. */
    QRAFT_ASSERTF(setup_allocs > 0, "the allocation wrappers counted nothing");
    printf("  (allocations are counted: %" PRIu64 " in cluster setups; in the "
           "%d warm-up ops of the first run:",
           setup_allocs, WARMUP_OPS);
    const char *sep = " ";
    for (size_t w = 0; w < WORKLOADS_N; w++) {
      if (selected[w]) {
        printf("%s%s %" PRIu64, sep, workloads[w].key,
               res[w][0].warmup_allocs);
        sep = ", ";
      }
    }
    printf(")\n  (messages stepped per op:");
    sep = " ";
    for (size_t w = 0; w < WORKLOADS_N; w++) {
      if (selected[w]) {
        printf("%s%s %.2f", sep, workloads[w].key, res[w][0].msgs_op);
        sep = ", ";
      }
    }
    printf(")\n");
  }
  fflush(stdout);

  if (sim) {
    sim_sample ss[REPEATS_MAX];
    int sim_repeats = repeats < 3 ? repeats : 3;
    double ev[REPEATS_MAX], rm[REPEATS_MAX];
    int failed = 0;
    for (int r = 0; r < sim_repeats; r++) {
      ss[r] = run_sim(seeds);
      ev[r] = ss[r].events_s;
      rm[r] = ss[r].runs_min;
      failed += ss[r].failed;
    }
    qsort(ev, (size_t)sim_repeats, sizeof ev[0], cmp_double);
    qsort(rm, (size_t)sim_repeats, sizeof rm[0], cmp_double);
    double ev_med = ev[sim_repeats / 2];
    printf("\n  simulator: seeds %d..%d, median of %d passes%s\n",
           SIM_SEED_FIRST, SIM_SEED_FIRST + seeds - 1, sim_repeats,
           failed ? ", SOME SEEDS FAILED (see stderr)" : "");
    printf("  %12.0f events/s (%.0f..%.0f), %.1f runs/min, %.0f ns/event = "
           "%.1f x base\n",
           ev_med, ev[0], ev[sim_repeats - 1], rm[sim_repeats / 2],
           1e9 / ev_med, 1e9 / ev_med / bs.median);
    printf("  %12" PRIu64 " events per pass, %.2f allocs/event (simulator "
           "and core, under faults)\n",
           ss[0].events, (double)ss[0].allocs / (double)ss[0].events);
    printf("  (no reference figure for the simulator: etcd has none; an event "
           "is one step of the simulated cluster, every check included)\n");
  }

  uint32_t payload_refs = qraft_buf_refs(payload);
  QRAFT_ASSERTF(payload_refs == 1, "payload has %u references after the runs",
                payload_refs);
  qraft_buf_unref(payload);
  payload = NULL;
  (void)frees_n;
  return 0;
}

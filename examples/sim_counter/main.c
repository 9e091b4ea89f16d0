/*
 * sim_counter: your own state machine under qraft's simulator.
 *
 * A replicated counter ("add N" entries) runs on a simulated cluster of
 * three real qraft nodes (node driver, QUIC transport, simulated disks) in
 * one thread, from a seed. The story: write through the leader; isolate
 * the leader and check that a new one is elected and takes writes; crash a
 * follower (it loses what it had not synced) and restart it; heal; then
 * check the invariants of the counter: every node converges to the same
 * value, which is the sum of the acknowledged additions plus some of the
 * ones whose outcome is unknown.
 *
 * The counter is durable the way a database-backed state machine is
 * (qraft/node.h, "the durable-index contract"): applying only changes
 * memory; every CHECKPOINT_MS of (simulated) time it writes a checkpoint
 * (value and index) that survives a crash, and reports the checkpoint's
 * index as its durable index. The node keeps the log after it, so the
 * crashed follower comes back from its checkpoint and re-applies the rest
 * of the log; the run checks that no node had to be rebuilt from a
 * snapshot because its checkpoint was behind one of its own.
 *
 *   sim_counter [SEED...]     (default: seed 1); same seed, same run
 */
#include <qraft/sim.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the state machine: a counter ---- */

#define CHECKPOINT_MS 100

typedef struct counter {
  uint32_t node;
  uint64_t value;
  uint64_t index;     /* last index applied */
  uint64_t dirty_ms;  /* when it first applied past its checkpoint, or 0 */
} counter;

/* What survives a node's crash: its checkpoint (a file, in a real
 * program, written and fsynced off the loop thread). */
typedef struct checkpoint {
  uint64_t value;
  uint64_t index;
} checkpoint;

static checkpoint disk[3];
static qraft_sim_cluster *cluster; /* for the simulated clock */

static uint64_t now_ms(void) {
  return cluster != NULL ? qraft_sim_cluster_now_ms(cluster) : 0;
}

static void checkpoint_write(counter *c) {
  disk[c->node].value = c->value;
  disk[c->node].index = c->index;
  c->dirty_ms = 0;
}

static int counter_apply(void *ud, const qraft_entry *es, size_t n,
                          uint64_t last, qraft_slice *results) {
  counter *c = ud;
  for (size_t i = 0; i < n; i++) {
    results[i] = (qraft_slice){0};
    uint64_t add = 0;
    if (es[i].data.len == sizeof add) {
      memcpy(&add, es[i].data.data, sizeof add);
      c->value += add;
    }
  }
  if (c->dirty_ms == 0 && last > disk[c->node].index) {
    c->dirty_ms = now_ms() + 1; /* (never 0) */
  }
  c->index = last;
  return 0;
}

static int counter_snapshot(void *ud, uint64_t *index, qraft_sm_write_fn write,
                            void *wctx) {
  counter *c = ud;
  *index = c->index;
  return write(wctx, &c->value, sizeof c->value);
}

static int counter_restore(void *ud, uint64_t index, qraft_sm_read_fn read,
                           void *rctx) {
  counter *c = ud;
  size_t got = 0;
  int rv = read(rctx, &c->value, sizeof c->value, &got);
  if (rv != 0 || got != sizeof c->value) {
    return rv != 0 ? rv : QRAFT_ETRUNCATED;
  }
  c->index = index;
  checkpoint_write(c); /* restore is durable when it returns */
  return 0;
}

/* The node reads this on every turn of its loop; a real state machine
 * returns what its syncing thread last made durable. Here the checkpoint
 * is taken when it is due, CHECKPOINT_MS of simulated time after the
 * first apply it does not hold. */
static uint64_t counter_durable_index(void *ud) {
  counter *c = ud;
  if (c->dirty_ms != 0 && now_ms() + 1 - c->dirty_ms >= CHECKPOINT_MS) {
    checkpoint_write(c);
  }
  return disk[c->node].index;
}

static const qraft_sm_ops counter_ops = {
    .apply = counter_apply,
    .snapshot = counter_snapshot,
    .restore = counter_restore,
    .durable_index = counter_durable_index};

/* Opening the state machine: from its checkpoint. */
static void *counter_new(void *ud, uint32_t i) {
  (void)ud;
  counter *c = calloc(1, sizeof(counter));
  if (c != NULL) {
    c->node = i;
    c->value = disk[i].value;
    c->index = disk[i].index;
  }
  return c;
}

static void counter_free(void *ud, uint32_t i, void *sm) {
  (void)ud;
  (void)i;
  free(sm);
}

/* ---- the client side ---- */

typedef struct tally {
  uint64_t acked;   /* sum of additions acknowledged */
  uint64_t unknown; /* sum of additions with an unknown outcome */
  int pending;
} tally;

typedef struct add_req {
  tally *t;
  uint64_t add;
} add_req;

static void add_cb(void *ud, int status, qraft_slice result, qraft_id leader) {
  (void)result;
  (void)leader;
  add_req *r = ud;
  if (status == 0) {
    r->t->acked += r->add;
  } else {
    r->t->unknown += r->add; /* it may still commit */
  }
  r->t->pending--;
  free(r);
}

static bool none_pending(void *ud) { return ((tally *)ud)->pending == 0; }
static bool has_leader(void *ud) {
  return qraft_sim_cluster_leader(ud) >= 0;
}

/* Adds 1..k through whatever node leads now; waits for the answers. */
static void add_some(qraft_sim_cluster *c, tally *t, int k) {
  qraft_sim_cluster_run(c, 5000, has_leader, c);
  int l = qraft_sim_cluster_leader(c);
  if (l < 0) {
    return;
  }
  for (int i = 1; i <= k; i++) {
    add_req *r = malloc(sizeof *r);
    r->t = t;
    r->add = (uint64_t)i;
    if (qraft_node_propose(qraft_sim_cluster_node(c, (uint32_t)l), &r->add,
                           sizeof r->add, add_cb, r) == 0) {
      t->pending++;
    } else {
      free(r);
    }
  }
  qraft_sim_cluster_run(c, 10000, none_pending, t);
}

typedef struct converged {
  qraft_sim_cluster *c;
} converged;

static bool all_equal(void *ud) {
  qraft_sim_cluster *c = ud;
  counter *first = qraft_sim_cluster_sm(c, 0);
  for (uint32_t i = 0; i < qraft_sim_cluster_size(c); i++) {
    counter *x = qraft_sim_cluster_sm(c, i);
    if (x == NULL || first == NULL || x->value != first->value ||
        x->index != first->index) {
      return false;
    }
  }
  return true;
}

static int run(uint64_t seed) {
  qraft_sim_cluster_config cfg = {
      .seed = seed,
      .nodes = 3,
      .sm = &counter_ops,
      .sm_new = counter_new,
      .sm_free = counter_free,
      /* 1% loss, 0.5% duplicates, 0.1 to 3 ms of delay (reordering) */
      .faults = {.drop_ppm = 10000, .dup_ppm = 5000,
                 .delay_min_ns = 100000, .delay_max_ns = 3000000},
      .clock_skew_ppm_max = 10000, /* clocks up to 1% apart */
      .snapshot_entries = 20,
  };
  qraft_sim_cluster *c;
  memset(disk, 0, sizeof disk);
  cluster = NULL;
  int rv = qraft_sim_cluster_new(&cfg, &c);
  if (rv != 0) {
    fprintf(stderr, "cluster: %s\n", qraft_strerror(rv));
    return 1;
  }
  cluster = c;
  tally t = {0};
  add_some(c, &t, 10);

  /* Isolate the leader: the others elect a new one and take writes. */
  int old = qraft_sim_cluster_leader(c);
  qraft_sim_cluster_isolate(c, (uint32_t)old);
  qraft_sim_cluster_run(c, 2000, NULL, NULL);
  add_some(c, &t, 10);

  /* Crash a follower of the new leader: unsynced writes are lost. */
  int l = qraft_sim_cluster_leader(c);
  uint32_t victim = 0;
  while ((int)victim == l || (int)victim == old) {
    victim++;
  }
  /* Long enough for it to apply the writes, too short for its next
   * checkpoint: the crash loses applied state. */
  qraft_sim_cluster_run(c, 30, NULL, NULL);
  uint64_t applied_before = ((counter *)qraft_sim_cluster_sm(c, victim))->index;
  qraft_sim_cluster_crash(c, victim);
  qraft_sim_cluster_heal(c);
  qraft_sim_cluster_run(c, 500, NULL, NULL);
  if (qraft_sim_cluster_restart(c, victim) != 0) {
    fprintf(stderr, "seed %" PRIu64 ": restart failed\n", seed);
    qraft_sim_cluster_free(c);
    return 1;
  }
  /* It opened its checkpoint; the node re-applies the log after it. */
  uint64_t resumed = disk[victim].index;
  add_some(c, &t, 10);

  /* The invariants, once the cluster has settled. */
  bool settled = qraft_sim_cluster_run(c, 20000, all_equal, c);
  counter *v = qraft_sim_cluster_sm(c, 0);
  bool ok = settled && v->value >= t.acked && v->value <= t.acked + t.unknown;
  uint64_t rebuilt = 0;
  for (uint32_t i = 0; i < qraft_sim_cluster_size(c); i++) {
    qraft_node_status st;
    qraft_node_status_get(qraft_sim_cluster_node(c, i), &st);
    rebuilt += st.sm_rebuilds_lost;
  }
  ok = ok && rebuilt == 0;
  printf("seed %" PRIu64 ": counter %" PRIu64 " on every node (acknowledged "
         "%" PRIu64 ", unknown %" PRIu64 "); node %u crashed at index %" PRIu64
         ", resumed from its checkpoint at %" PRIu64
         "; %" PRIu64 " virtual ms: %s\n",
         seed, v != NULL ? v->value : 0, t.acked, t.unknown, victim,
         applied_before, resumed, qraft_sim_cluster_now_ms(c),
         ok ? "ok" : rebuilt ? "REBUILT FROM A SNAPSHOT" : "INVARIANT BROKEN");
  qraft_sim_cluster_free(c);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  int failed = 0;
  if (argc < 2) {
    return run(1);
  }
  for (int i = 1; i < argc; i++) {
    failed |= run(strtoull(argv[i], NULL, 0));
  }
  return failed;
}

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
 *   sim_counter [SEED...]     (default: seed 1); same seed, same run
 */
#include <qraft/sim.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the state machine: a counter ---- */

typedef struct counter {
  uint64_t value;
  uint64_t index; /* last index applied */
} counter;

static void counter_apply(void *ud, const qraft_entry *es, size_t n,
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
  c->index = last;
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
  return 0;
}

static const qraft_sm_ops counter_ops = {.apply = counter_apply,
                                         .snapshot = counter_snapshot,
                                         .restore = counter_restore};

static void *counter_new(void *ud, uint32_t i) {
  (void)ud;
  (void)i;
  return calloc(1, sizeof(counter));
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
  int rv = qraft_sim_cluster_new(&cfg, &c);
  if (rv != 0) {
    fprintf(stderr, "cluster: %s\n", qraft_strerror(rv));
    return 1;
  }
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
  qraft_sim_cluster_crash(c, victim);
  qraft_sim_cluster_heal(c);
  qraft_sim_cluster_run(c, 500, NULL, NULL);
  if (qraft_sim_cluster_restart(c, victim) != 0) {
    fprintf(stderr, "seed %" PRIu64 ": restart failed\n", seed);
    qraft_sim_cluster_free(c);
    return 1;
  }
  add_some(c, &t, 10);

  /* The invariants, once the cluster has settled. */
  bool settled = qraft_sim_cluster_run(c, 20000, all_equal, c);
  counter *v = qraft_sim_cluster_sm(c, 0);
  bool ok = settled && v->value >= t.acked && v->value <= t.acked + t.unknown;
  printf("seed %" PRIu64 ": counter %" PRIu64 " on every node (acknowledged "
         "%" PRIu64 ", unknown %" PRIu64 "), %" PRIu64 " virtual ms: %s\n",
         seed, v != NULL ? v->value : 0, t.acked, t.unknown,
         qraft_sim_cluster_now_ms(c), ok ? "ok" : "INVARIANT BROKEN");
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

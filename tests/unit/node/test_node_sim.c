/*
 * Nodes on the simulator env: the in-memory datagram network (qraft_simnet)
 * with a virtual clock, loss and reordering from a seed, and in-memory
 * stores. Everything runs on this one thread; the same seed gives the same
 * run (checked by running the scenario twice and comparing).
 */
#include "cmocka_all.h"

#include <qraft/node.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 4

typedef struct sm {
  uint64_t applied_n;
  uint64_t digest;
  uint64_t index;
  uint64_t restores;
  /* restores in steps: how many steps one takes, each busy for 10 ms */
  qraft_env *env;
  int restore_steps;
  bool restoring;
  int steps_done;
  uint64_t applied_while_restoring, out_of_order;
  /* durable with views (ops_durable_views) */
  struct disk *disk;
  int views_open;
} sm;

static int sm_apply(void *ud, const qraft_entry *es, size_t n, uint64_t last,
                     qraft_slice *results) {
  sm *s = ud;
  if (s->restoring) {
    s->applied_while_restoring += n;
  }
  if (n > 0 && es[0].index <= s->index) {
    s->out_of_order++;
  }
  for (size_t i = 0; i < n; i++) {
    for (size_t k = 0; k < es[i].data.len; k++) {
      s->digest = (s->digest ^ es[i].data.data[k]) * 0x100000001b3ULL;
    }
    s->applied_n++;
    results[i] = (qraft_slice){0};
  }
  s->index = last;
  return 0;
}

static int sm_snapshot(void *ud, uint64_t *index, qraft_sm_write_fn write,
                       void *wctx) {
  sm *s = ud;
  *index = s->index;
  uint64_t v[2] = {s->applied_n, s->digest};
  return write(wctx, v, sizeof v);
}

static int sm_restore(void *ud, uint64_t index, qraft_sm_read_fn read,
                      void *rctx) {
  sm *s = ud;
  uint64_t v[2];
  size_t off = 0;
  while (off < sizeof v) {
    size_t got = 0;
    int rv = read(rctx, (uint8_t *)v + off, sizeof v - off, &got);
    if (rv != 0 || got == 0) {
      return rv != 0 ? rv : QRAFT_ETRUNCATED;
    }
    off += got;
  }
  s->applied_n = v[0];
  s->digest = v[1];
  s->index = index;
  s->restores++;
  return 0;
}

static const qraft_sm_ops ops = {
    .apply = sm_apply, .snapshot = sm_snapshot, .restore = sm_restore};

/* In steps: restore_steps steps, each keeping its host busy for 10 ms of
 * virtual time; the last reads the snapshot (by sm_restore). */
static int sm_restore_begin(void *ud, uint64_t index, void **ctx) {
  sm *s = ud;
  s->restoring = true;
  s->steps_done = 0;
  *ctx = (void *)(uintptr_t)index;
  return 0;
}

static int sm_restore_step(void *ud, void *ctx, size_t budget,
                           qraft_sm_read_fn read, void *rctx) {
  (void)budget;
  sm *s = ud;
  if (++s->steps_done < s->restore_steps) {
    qraft_simnet_host_pause(s->env, qraft_env_now_ns(s->env) + 10000000u);
    return 1;
  }
  s->restoring = false;
  return sm_restore(ud, (uint64_t)(uintptr_t)ctx, read, rctx);
}

static void sm_restore_end(void *ud, void *ctx) {
  (void)ctx;
  ((sm *)ud)->restoring = false;
}

static const qraft_sm_ops ops_steps = {.apply = sm_apply,
                                       .snapshot = sm_snapshot,
                                       .restore = sm_restore,
                                       .restore_begin = sm_restore_begin,
                                       .restore_step = sm_restore_step,
                                       .restore_end = sm_restore_end};

/* A durable state machine with views (qraft/node.h): its "disk" is a copy
 * of the state made whenever the node asks for the durable index (so the
 * log is compacted statelessly as soon as a snapshot is due); a view is a
 * copy of the state, written in steps of DSTEP bytes: the state, then
 * DPAD bytes of filler drawn from it, so a snapshot spans many chunks. */
#define DPAD (300 * 1024)
#define DSTEP (16 * 1024)

typedef struct disk {
  uint64_t applied_n, digest, index;
} disk;

typedef struct dview {
  uint64_t v[3]; /* applied_n, digest, index */
  size_t off;    /* bytes written */
} dview;

static uint8_t dpad_byte(const uint64_t v[3], size_t off) {
  return (uint8_t)((v[1] >> ((off % 8) * 8)) ^ off ^ (off >> 8));
}

static uint64_t dsm_views_durable(void *ud);

static int sm_view_begin(void *ud, uint64_t *index, void **view) {
  sm *s = ud;
  dview *d = calloc(1, sizeof *d);
  if (d == NULL) {
    return -ENOMEM;
  }
  d->v[0] = s->applied_n;
  d->v[1] = s->digest;
  d->v[2] = s->index;
  *index = s->index;
  *view = d;
  s->views_open++;
  return 0;
}

static int sm_view_step(void *ud, void *view, size_t budget,
                        qraft_sm_write_fn write, void *wctx) {
  (void)ud;
  (void)budget;
  dview *d = view;
  int rv = 0;
  if (d->off == 0) {
    rv = write(wctx, d->v, 16); /* applied_n, digest */
    d->off = 16;
  }
  uint8_t b[DSTEP];
  size_t n = 0;
  while (n < DSTEP && d->off - 16 + n < DPAD) {
    b[n] = dpad_byte(d->v, d->off - 16 + n);
    n++;
  }
  if (rv == 0 && n > 0) {
    rv = write(wctx, b, n);
    d->off += n;
  }
  if (rv != 0) {
    return rv;
  }
  return d->off - 16 < DPAD ? 1 : 0;
}

static void sm_view_end(void *ud, void *view) {
  ((sm *)ud)->views_open--;
  free(view);
}

static int sm_view_snapshot(void *ud, uint64_t *index, qraft_sm_write_fn write,
                            void *wctx) {
  void *v = NULL;
  int rv = sm_view_begin(ud, index, &v);
  while (rv == 0 && (rv = sm_view_step(ud, v, SIZE_MAX, write, wctx)) == 1) {
  }
  sm_view_end(ud, v);
  return rv;
}

/* Reads what sm_view_step writes, checking every byte of the filler. */
static int sm_view_restore(void *ud, uint64_t index, qraft_sm_read_fn read,
                           void *rctx) {
  sm *s = ud;
  uint64_t v[3] = {0};
  uint8_t *p = (uint8_t *)v;
  size_t off = 0;
  int rv = 0;
  while (rv == 0 && off < 16 + DPAD) {
    uint8_t b[4096];
    size_t want = 16 + DPAD - off < sizeof b ? 16 + DPAD - off : sizeof b;
    size_t got = 0;
    rv = read(rctx, b, want, &got);
    if (rv == 0 && got == 0) {
      rv = QRAFT_ETRUNCATED;
    }
    for (size_t k = 0; rv == 0 && k < got; k++, off++) {
      if (off < 16) {
        p[off] = b[k];
      } else if (b[k] != dpad_byte(v, off - 16)) {
        rv = QRAFT_ECORRUPT;
      }
    }
  }
  size_t extra = 0;
  uint8_t t;
  if (rv == 0 && (rv = read(rctx, &t, 1, &extra)) == 0 && extra != 0) {
    rv = QRAFT_ECORRUPT;
  }
  if (rv != 0) {
    return rv;
  }
  s->applied_n = v[0];
  s->digest = v[1];
  s->index = index;
  s->restores++;
  (void)dsm_views_durable(s); /* durable before it returns */
  return 0;
}

static uint64_t dsm_views_durable(void *ud) {
  sm *s = ud;
  *s->disk = (disk){s->applied_n, s->digest, s->index};
  return s->index;
}

static const qraft_sm_ops ops_durable_views = {
    .apply = sm_apply,
    .snapshot = sm_view_snapshot,
    .restore = sm_view_restore,
    .durable_index = dsm_views_durable,
    .snapshot_begin = sm_view_begin,
    .snapshot_step = sm_view_step,
    .snapshot_end = sm_view_end};

typedef struct world {
  qraft_simnet *net;
  qraft_env *env[N];
  qraft_secret_key key[N];
  qraft_node_addr addr[N];
  qraft_node *node[N];
  qraft_storage *store[N]; /* kept across restarts */
  sm state[N];
  bool steps[N]; /* node i restores received snapshots in steps */
  bool durable[N]; /* node i's state machine is durable, with views */
  disk disks[N];
  /* a read on node 3: done, and what its state machine held then */
  bool read_done;
  uint64_t read_restores, read_applied;
  int ok, failed, calls;
} world;

static void on_propose(void *ud, int status, qraft_slice r, qraft_id leader) {
  (void)r;
  (void)leader;
  world *w = ud;
  w->calls++;
  if (status == 0) {
    w->ok++;
  } else {
    w->failed++;
  }
}

static void on_done(void *ud, int status, qraft_id leader) {
  on_propose(ud, status, (qraft_slice){0}, leader);
}

static int node_try_open(world *w, int i, qraft_err *err) {
  if (w->store[i] == NULL) {
    assert_int_equal(qraft_storage_mem_new(&w->store[i]), 0);
  }
  /* a restart rebuilds the state machine from the snapshot and the log,
   * or a durable one opens its disk */
  memset(&w->state[i], 0, sizeof w->state[i]);
  w->state[i].env = w->env[i];
  w->state[i].restore_steps = 30;
  w->state[i].disk = &w->disks[i];
  if (w->durable[i]) {
    w->state[i].applied_n = w->disks[i].applied_n;
    w->state[i].digest = w->disks[i].digest;
    w->state[i].index = w->disks[i].index;
  }
  qraft_node_config cfg;
  qraft_node_config_default(&cfg);
  cfg.storage = w->store[i];
  cfg.storage_borrowed = true;
  cfg.key = &w->key[i];
  cfg.cluster_id = 5;
  cfg.bind_n = 1;
  struct sockaddr_in *b = (struct sockaddr_in *)&cfg.bind[0];
  b->sin_family = AF_INET;
  b->sin_port = htons(7000);
  cfg.sm = w->durable[i] ? &ops_durable_views
           : w->steps[i] ? &ops_steps
                         : &ops;
  cfg.sm_ud = &w->state[i];
  cfg.env = w->env[i];
  cfg.snapshot_entries = 40;
  return qraft_node_new(&cfg, &w->node[i], err);
}

static void node_open(world *w, int i) {
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv = node_try_open(w, i, &err);
  if (rv != 0) {
    qraft_err_print(&err, stderr);
  }
  assert_int_equal(rv, 0);
}

typedef struct cond {
  world *w;
  int kind; /* 0: a leader, 1: calls >= x, 2: all applied == x */
  int x;
} cond;

static int leader_of(world *w) {
  for (int i = 0; i < N; i++) {
    if (w->node[i] == NULL) {
      continue;
    }
    qraft_node_status st;
    qraft_node_status_get(w->node[i], &st);
    if (st.role == QRAFT_ROLE_LEADER) {
      return i;
    }
  }
  return -1;
}

static bool cond_done(void *ud) {
  cond *c = ud;
  world *w = c->w;
  switch (c->kind) {
  case 0:
    return leader_of(w) >= 0;
  case 1:
    return w->calls >= c->x;
  case 4:
    return w->state[c->x].restoring;
  case 3: {
    int l = leader_of(w);
    if (l < 0) {
      return false;
    }
    qraft_id lid = qraft_node_id_of(w->node[l]);
    for (int i = 0; i < N; i++) {
      if (w->node[i] != NULL) {
        qraft_node_status st;
        qraft_node_status_get(w->node[i], &st);
        if (st.leader != lid) {
          return false;
        }
      }
    }
    return true;
  }
  default:
    for (int i = 0; i < N; i++) {
      if (w->node[i] != NULL && w->state[i].applied_n != (uint64_t)c->x) {
        return false;
      }
    }
    return true;
  }
}

static bool run_until(world *w, int kind, int x, uint64_t virtual_ms) {
  cond c = {.w = w, .kind = kind, .x = x};
  uint64_t end = qraft_env_now_ns(w->env[0]) + virtual_ms * 1000000u;
  (void)qraft_env_run(w->env[0], end, cond_done, &c);
  return cond_done(&c);
}

/* N hosts on the simulated network, with keys from `salt`. */
static void world_hosts(world *w, uint8_t salt) {
  for (int i = 0; i < N; i++) {
    assert_int_equal(qraft_simnet_env_new(w->net, &w->env[i]), 0);
    uint8_t s[32] = {0};
    s[0] = (uint8_t)(i + 1);
    s[1] = salt;
    qraft_secret_key_from_seed(&w->key[i], s);
    w->addr[i].id = w->key[i].public_key;
    w->addr[i].addrs_n = 1;
    struct sockaddr_in *a = (struct sockaddr_in *)&w->addr[i].addrs[0];
    a->sin_family = AF_INET;
    a->sin_port = htons(7000);
    a->sin_addr.s_addr = htonl(0x0a000000u + (uint32_t)(i + 1));
  }
}

static void world_free(world *w) {
  for (int i = 0; i < N; i++) {
    qraft_node_free(w->node[i]);
    qraft_storage_close(w->store[i]);
  }
  for (int i = 0; i < N; i++) {
    qraft_env_free(w->env[i]);
  }
  qraft_simnet_free(w->net);
  free(w);
}

/* The scenario; returns a digest of what happened, for determinism. */
static uint64_t scenario(uint64_t seed) {
  world *w = calloc(1, sizeof *w);
  assert_non_null(w);
  assert_int_equal(qraft_simnet_new(seed, &w->net), 0);
  qraft_simnet_faults faults = {.drop_ppm = 20000, .delay_min_ns = 100000,
                                .delay_max_ns = 2000000};
  qraft_simnet_set_faults(w->net, &faults);
  world_hosts(w, (uint8_t)seed);
  for (int i = 0; i < 3; i++) {
    node_open(w, i);
    assert_int_equal(qraft_node_bootstrap(w->node[i], w->addr, 3, NULL), 0);
    assert_int_equal(qraft_node_start(w->node[i]), 0);
  }
  assert_true(run_until(w, 3, 0, 10000)); /* every node knows the leader */
  int l = leader_of(w);
  for (int k = 0; k < 100; k++) {
    char buf[16];
    int len = snprintf(buf, sizeof buf, "p%d", k);
    /* every node takes proposals; followers forward them */
    int target = k % 3;
    int rv;
    while ((rv = qraft_node_propose(w->node[target], buf, (size_t)len,
                                    on_propose, w)) == QRAFT_EBUSY) {
      run_until(w, 1, w->calls + 1, 10);
    }
    assert_int_equal(rv, 0);
  }
  assert_true(run_until(w, 1, 100, 20000));
  int ok1 = w->ok;
  assert_int_equal(ok1, 100);
  assert_true(run_until(w, 2, ok1, 20000));

  /* a fourth node joins as a learner and catches up by snapshot */
  node_open(w, 3);
  assert_int_equal(qraft_node_start(w->node[3]), 0);
  int calls = w->calls;
  assert_int_equal(qraft_node_add_learner(w->node[l], &w->addr[3], on_done, w),
                   0);
  assert_true(run_until(w, 1, calls + 1, 20000));
  assert_true(run_until(w, 2, ok1, 30000));
  if (w->state[3].restores < 1) {
    for (int i = 0; i < N; i++) {
      qraft_node_status st;
      qraft_node_status_get(w->node[i], &st);
      fprintf(stderr, "n%d applied %llu snap %llu last %llu commit %llu\n", i,
              (unsigned long long)st.applied,
              (unsigned long long)st.snapshot_index,
              (unsigned long long)st.last_index,
              (unsigned long long)st.commit);
    }
    fail_msg("the learner did not come by snapshot");
  }

  /* stop the leader: another is elected and takes writes */
  qraft_node_free(w->node[l]);
  w->node[l] = NULL;
  assert_true(run_until(w, 0, 0, 20000));
  int l2 = leader_of(w);
  assert_true(l2 >= 0 && l2 != l);
  calls = w->calls;
  for (int k = 0; k < 10; k++) {
    assert_int_equal(qraft_node_propose(w->node[l2], "q", 1, on_propose, w),
                     0);
  }
  assert_true(run_until(w, 1, calls + 10, 20000));
  /* the old leader restarts on its store and catches up */
  node_open(w, l);
  assert_int_equal(qraft_node_start(w->node[l]), 0);
  assert_true(run_until(w, 2, ok1 + 10, 30000));
  /* a read barrier on a follower */
  int f = -1;
  for (int i = 0; i < 3 && f < 0; i++) {
    if (i != l2 && i != l && w->node[i] != NULL) {
      f = i;
    }
  }
  calls = w->calls;
  assert_int_equal(qraft_node_read_barrier(w->node[f], on_done, w), 0);
  assert_true(run_until(w, 1, calls + 1, 20000));
  assert_int_equal(w->failed, 0);

  /* leadership moves to the other live voter on request */
  calls = w->calls;
  assert_int_equal(qraft_node_transfer(w->node[l2], qraft_node_id_of(w->node[f]),
                                       on_done, w),
                   0);
  assert_true(run_until(w, 1, calls + 1, 20000));
  assert_true(run_until(w, 0, 0, 20000));
  assert_int_equal(leader_of(w), f);

  /* the learner is removed; it keeps running but can no longer connect */
  calls = w->calls;
  qraft_id gone = qraft_node_raft_id(&w->key[3].public_key);
  assert_int_equal(qraft_node_remove(w->node[f], gone, on_done, w), 0);
  assert_true(run_until(w, 1, calls + 1, 20000));
  assert_int_equal(w->failed, 0);
  qraft_node_status nst;
  qraft_node_status_get(w->node[f], &nst);
  for (uint32_t i = 0; i < nst.members_n; i++) {
    assert_int_not_equal(nst.members[i].id, gone);
  }
  cond idle = {.w = w, .kind = 1, .x = 1 << 30}; /* never true: run 3 s */
  (void)qraft_env_run(w->env[0], qraft_env_now_ns(w->env[0]) + 3000000000u,
                      cond_done, &idle);
  static char text[65536];
  qraft_node_metrics_text(w->node[3], text, sizeof text);
  const char *key = "handshake_failures_total{reason=\"unauthorized\"} ";
  const char *p = strstr(text, key);
  assert_non_null(p);
  assert_true(strtoull(p + strlen(key), NULL, 10) > 0);
  uint64_t digest = w->state[f].digest ^ (uint64_t)w->ok * 31 ^
                    (uint64_t)w->failed * 131;
  qraft_simnet_stats stats;
  qraft_simnet_stats_get(w->net, &stats);
  assert_true(stats.dropped > 0); /* the loss fault fired */
  digest ^= stats.events * 7919;
  world_free(w);
  return digest;
}

static void scenarios_on_the_simulated_network_replay_from_a_seed(void **st) {
  (void)st;
  uint64_t seed = 42;
  const char *env = getenv("QRAFT_SEED");
  if (env != NULL) {
    seed = strtoull(env, NULL, 0);
  }
  printf("seed %llu (replay: QRAFT_SEED=%llu tests/unit_node_sim)\n",
         (unsigned long long)seed, (unsigned long long)seed);
  uint64_t a = scenario(seed);
  uint64_t b = scenario(seed);
  assert_int_equal(a, b);
}

/* Three voters on a network with 0.1 to 1 ms of delay, bootstrapped (with
 * the world's flags as set), and 100 writes through the leader applied
 * everywhere; returns the leader. */
static int world_three_loaded(world *w, uint64_t seed, uint8_t salt) {
  assert_int_equal(qraft_simnet_new(seed, &w->net), 0);
  qraft_simnet_faults faults = {.delay_min_ns = 100000,
                                .delay_max_ns = 1000000};
  qraft_simnet_set_faults(w->net, &faults);
  world_hosts(w, salt);
  for (int i = 0; i < 3; i++) {
    node_open(w, i);
    assert_int_equal(qraft_node_bootstrap(w->node[i], w->addr, 3, NULL), 0);
    assert_int_equal(qraft_node_start(w->node[i]), 0);
  }
  assert_true(run_until(w, 3, 0, 10000));
  int l = leader_of(w);
  for (int k = 0; k < 100; k++) {
    char buf[16];
    int len = snprintf(buf, sizeof buf, "p%d", k);
    assert_int_equal(qraft_node_propose(w->node[l], buf, (size_t)len,
                                        on_propose, w),
                     0);
  }
  assert_true(run_until(w, 1, 100, 20000));
  assert_true(run_until(w, 2, 100, 20000));
  return l;
}

static void on_read3(void *ud, int status, qraft_id leader) {
  (void)leader;
  world *w = ud;
  assert_int_equal(status, 0);
  w->read_done = true;
  w->read_restores = w->state[3].restores;
  w->read_applied = w->state[3].applied_n;
}

/* A learner restores its snapshot in steps (30 of 10 ms each) while the
 * voters commit more: the loop goes on between steps (no election, the
 * heartbeats answered), nothing is applied until the last step, then the
 * entries that waited are applied in order, and a read on the learner is
 * answered only after them. */
static void a_snapshot_restored_in_steps_holds_back_applies_and_reads(
    void **st) {
  (void)st;
  world *w = calloc(1, sizeof *w);
  assert_non_null(w);
  w->steps[3] = true;
  int l = world_three_loaded(w, 7, 0);
  qraft_node_status before;
  qraft_node_status_get(w->node[l], &before);

  node_open(w, 3);
  assert_int_equal(qraft_node_start(w->node[3]), 0);
  int calls = w->calls;
  assert_int_equal(qraft_node_add_learner(w->node[l], &w->addr[3], on_done, w),
                   0);
  assert_true(run_until(w, 4, 3, 20000)); /* the learner starts restoring */
  /* meanwhile: 20 more writes commit, and a read on the learner waits */
  for (int k = 0; k < 20; k++) {
    assert_int_equal(qraft_node_propose(w->node[l], "during", 6, on_propose,
                                        w),
                     0);
  }
  assert_int_equal(qraft_node_read_barrier(w->node[3], on_read3, w), 0);
  assert_true(run_until(w, 1, calls + 1 + 20, 5000));
  assert_true(w->state[3].restoring); /* 300 ms of steps: not yet done */
  assert_int_equal(w->state[3].applied_n, 0);
  assert_false(w->read_done);
  /* the restore ends; the waiting entries and the read follow */
  assert_true(run_until(w, 2, 120, 20000));
  assert_true(w->read_done);
  assert_int_equal(w->read_restores, 1);
  assert_true(w->read_applied > 100); /* the read saw entries that waited */
  assert_int_equal(w->failed, 0);
  assert_int_equal(w->state[3].restores, 1);
  assert_int_equal(w->state[3].applied_while_restoring, 0);
  assert_int_equal(w->state[3].out_of_order, 0);
  assert_int_equal(w->state[3].digest, w->state[l].digest);
  qraft_node_status s3, sl;
  qraft_node_status_get(w->node[3], &s3);
  qraft_node_status_get(w->node[l], &sl);
  fprintf(stderr, "restore steps %llu, entries waited %llu\n",
          (unsigned long long)s3.snapshot_restore_steps,
          (unsigned long long)s3.restore_waited_entries);
  assert_int_equal(s3.snapshot_restore_steps, 30);
  assert_true(s3.restore_waited_entries > 0);
  assert_int_equal(s3.snapshots_installed, 1);
  /* the loop went on: no election while the learner restored */
  assert_int_equal(sl.term, before.term);
  assert_int_equal(leader_of(w), l);
  world_free(w);
}

/* A durable state machine with views: the log is compacted without a copy
 * of the state (the store's snapshot is the node's header alone), and a
 * learner that needs the state gets it streamed from a view of the
 * leader's state machine, as a snapshot of the leader's applied index
 * (past the stateless one the core asked for); its digest then matches.
 * Restarts resume from the durable state without a restore; a state
 * machine that lost its state behind a stateless snapshot is refused with
 * what to do. */
static void a_durable_state_machine_compacts_without_its_state(void **st) {
  (void)st;
  world *w = calloc(1, sizeof *w);
  assert_non_null(w);
  for (int i = 0; i < N; i++) {
    w->durable[i] = true;
  }
  int l = world_three_loaded(w, 11, 3);
  (void)run_until(w, 1, 1 << 30, 200); /* the compaction's write lands */
  qraft_node_status sl;
  qraft_node_status_get(w->node[l], &sl);
  assert_true(sl.snapshots_stateless >= 1);
  assert_int_equal(sl.snapshots_stateless, sl.snapshots_taken);
  assert_true(sl.snapshot_index >= 40);
  /* below the applied index by half of snapshot_entries: a follower a
   * little behind still gets entries */
  assert_true(sl.snapshot_index + 20 <= sl.applied);
  /* the store's snapshot: the node's header, not the state's 300 KiB */
  qraft_snapshot_reader *r = NULL;
  assert_int_equal(qraft_storage_snapshot_reader_open(w->store[l], &r, NULL),
                   0);
  assert_int_equal(r->meta.index, sl.snapshot_index);
  assert_true(r->bytes < 1024);
  qraft_snapshot_reader_close(r);
  uint64_t stateless_at = sl.snapshot_index;

  /* a learner joins: the state comes from a view, at the applied index */
  node_open(w, 3);
  assert_int_equal(qraft_node_start(w->node[3]), 0);
  int calls = w->calls;
  assert_int_equal(qraft_node_add_learner(w->node[l], &w->addr[3], on_done, w),
                   0);
  assert_true(run_until(w, 1, calls + 1, 20000));
  assert_true(run_until(w, 2, 100, 30000));
  assert_int_equal(w->failed, 0);
  assert_int_equal(w->state[3].restores, 1);
  assert_int_equal(w->state[3].digest, w->state[l].digest);
  qraft_node_status_get(w->node[l], &sl);
  qraft_node_status s3;
  qraft_node_status_get(w->node[3], &s3);
  fprintf(stderr, "stateless snapshot at %llu; sent the state at %llu "
          "(%llu bytes)\n", (unsigned long long)stateless_at,
          (unsigned long long)s3.snapshot_index,
          (unsigned long long)sl.snapshot_bytes_sent);
  assert_int_equal(sl.snapshot_sends_from_state, 1);
  assert_true(sl.snapshot_bytes_sent > DPAD);
  assert_true(s3.snapshot_index >= stateless_at);
  assert_int_equal(s3.snapshots_installed, 1);
  /* more writes, in rounds of 10: the learner follows with entries (the
   * leader compacts again, keeping the entries it may need) */
  for (int k = 0; k < 60; k++) {
    assert_int_equal(qraft_node_propose(w->node[l], "more", 4, on_propose, w),
                     0);
    if (k % 10 == 9) {
      assert_true(run_until(w, 2, 100 + k + 1, 20000));
    }
  }
  assert_true(run_until(w, 2, 160, 20000));
  assert_int_equal(w->state[3].digest, w->state[l].digest);
  qraft_node_status_get(w->node[l], &sl);
  assert_int_equal(sl.snapshot_sends_done, 1); /* acknowledged whole */
  assert_int_equal(sl.snapshot_sends_from_state, 1);
  assert_true(sl.snapshots_stateless >= 2);
  for (int i = 0; i < N; i++) {
    assert_int_equal(w->state[i].views_open, 0); /* every view released */
  }

  /* a restart opens the durable state: no restore, nothing applied twice */
  qraft_node_free(w->node[3]);
  node_open(w, 3);
  assert_int_equal(qraft_node_start(w->node[3]), 0);
  assert_true(run_until(w, 2, 160, 10000));
  assert_int_equal(w->state[3].restores, 0);
  assert_int_equal(w->state[3].out_of_order, 0);
  assert_int_equal(w->state[3].digest, w->state[l].digest);

  /* a member whose state machine lost its state behind a stateless
   * snapshot cannot be rebuilt from it: refused, saying what to do */
  int f = (l + 1) % 3;
  qraft_node_free(w->node[f]);
  w->node[f] = NULL;
  w->disks[f] = (disk){0};
  qraft_err err;
  qraft_err_init(&err, 0);
  assert_int_equal(node_try_open(w, f, &err), QRAFT_ECORRUPT);
  char line[1024];
  qraft_err_format(&err, line, sizeof line);
  fprintf(stderr, "refused: %s\n", line);
  assert_non_null(strstr(line, "remove its data and add it to the cluster"));
  w->node[f] = NULL;
  world_free(w);
}

/* ---- a durable state machine (qraft/node.h, the durable-index contract):
 * one node on the simulator, whose state machine's durable index the test
 * sets by hand, with a copy of the state at that index (its "disk"). ---- */

typedef struct dsm {
  uint64_t index, sum;          /* the state */
  uint64_t d_index, d_sum;      /* the durable copy */
  uint64_t first_applied;       /* the first index applied since opening */
  uint64_t restores;
} dsm;

static int dsm_apply(void *ud, const qraft_entry *es, size_t n, uint64_t last,
                      qraft_slice *results) {
  dsm *s = ud;
  for (size_t i = 0; i < n; i++) {
    if (s->first_applied == 0) {
      s->first_applied = es[i].index;
    }
    assert_true(es[i].index > s->index); /* never twice */
    s->sum += es[i].index;
    results[i] = (qraft_slice){0};
  }
  s->index = last;
  return 0;
}

static int dsm_snapshot(void *ud, uint64_t *index, qraft_sm_write_fn write,
                        void *wctx) {
  dsm *s = ud;
  *index = s->index;
  return write(wctx, &s->sum, sizeof s->sum);
}

static int dsm_restore(void *ud, uint64_t index, qraft_sm_read_fn read,
                       void *rctx) {
  dsm *s = ud;
  size_t got = 0;
  int rv = read(rctx, &s->sum, sizeof s->sum, &got);
  if (rv != 0 || got != sizeof s->sum) {
    return rv != 0 ? rv : QRAFT_ETRUNCATED;
  }
  s->index = index;
  s->d_index = index; /* durable when it returns */
  s->d_sum = s->sum;
  s->restores++;
  return 0;
}

static uint64_t dsm_durable(void *ud) { return ((dsm *)ud)->d_index; }

static const qraft_sm_ops dsm_ops = {.apply = dsm_apply,
                                     .snapshot = dsm_snapshot,
                                     .restore = dsm_restore,
                                     .durable_index = dsm_durable};

static void dsm_sync(dsm *s) {
  s->d_index = s->index;
  s->d_sum = s->sum;
}

/* A crash: the state machine opens its durable copy. */
static void dsm_crash(dsm *s) {
  s->index = s->d_index;
  s->sum = s->d_sum;
  s->first_applied = 0;
  s->restores = 0;
}

typedef struct one {
  qraft_simnet *net;
  qraft_env *env;
  qraft_secret_key key;
  qraft_node_addr addr;
  qraft_storage *store;
  qraft_node *node;
  dsm sm;
  int acked;
} one;

static int one_open(one *o) {
  qraft_node_config cfg;
  qraft_node_config_default(&cfg);
  cfg.storage = o->store;
  cfg.storage_borrowed = true;
  cfg.key = &o->key;
  cfg.cluster_id = 5;
  cfg.bind_n = 1;
  struct sockaddr_in *b = (struct sockaddr_in *)&cfg.bind[0];
  b->sin_family = AF_INET;
  b->sin_port = htons(7000);
  cfg.sm = &dsm_ops;
  cfg.sm_ud = &o->sm;
  cfg.env = o->env;
  cfg.snapshot_entries = 10;
  return qraft_node_new(&cfg, &o->node, NULL);
}

static void one_acked(void *ud, int status, qraft_slice r, qraft_id leader) {
  (void)r;
  (void)leader;
  assert_int_equal(status, 0);
  ((one *)ud)->acked++;
}

static bool one_all_acked(void *ud) { return ((one *)ud)->acked == 40; }
static bool never(void *ud) {
  (void)ud;
  return false;
}

static void one_run_ms(one *o, uint64_t ms) {
  (void)qraft_env_run(o->env, qraft_env_now_ns(o->env) + ms * 1000000u, never,
                      NULL);
}

static qraft_node_status one_status(one *o) {
  qraft_node_status st;
  qraft_node_status_get(o->node, &st);
  return st;
}

/* The log is kept after the state machine's durable index: a snapshot
 * taken at T reaches the store (which drops the log up to T) only once the
 * durable index is at T. A restart resumes from the durable index and
 * re-applies the log after it, without a restore; a state machine behind a
 * snapshot of the node's own is rebuilt from it and counted; a state
 * beyond the log is refused. */
static void a_durable_state_machine_keeps_the_log_after_its_durable_index(
    void **st) {
  (void)st;
  one *o = calloc(1, sizeof *o);
  assert_non_null(o);
  assert_int_equal(qraft_simnet_new(7, &o->net), 0);
  assert_int_equal(qraft_simnet_env_new(o->net, &o->env), 0);
  uint8_t seed[32] = {9};
  qraft_secret_key_from_seed(&o->key, seed);
  o->addr.id = o->key.public_key;
  o->addr.addrs_n = 1;
  struct sockaddr_in *a = (struct sockaddr_in *)&o->addr.addrs[0];
  a->sin_family = AF_INET;
  a->sin_port = htons(7000);
  a->sin_addr.s_addr = htonl(0x0a000001u);
  assert_int_equal(qraft_storage_mem_new(&o->store), 0);
  assert_int_equal(one_open(o), 0);
  assert_int_equal(qraft_node_bootstrap(o->node, &o->addr, 1, NULL), 0);
  assert_int_equal(qraft_node_start(o->node), 0);
  one_run_ms(o, 3000);
  for (int k = 0; k < 40; k++) {
    assert_int_equal(qraft_node_propose(o->node, "x", 1, one_acked, o), 0);
  }
  (void)qraft_env_run(o->env, qraft_env_now_ns(o->env) + 5000000000u,
                      one_all_acked, o);
  assert_int_equal(o->acked, 40);
  one_run_ms(o, 100);
  qraft_node_status s = one_status(o);
  uint64_t applied = s.applied;
  assert_true(applied >= 41);
  /* nothing durable: snapshots wait, the log is whole */
  assert_int_equal(s.snapshot_index, 0);
  assert_int_equal(s.sm_durable_index, 0);
  /* durable below the snapshot the node took (at 10 entries or more):
   * it still waits */
  o->sm.d_index = 5;
  one_run_ms(o, 100);
  s = one_status(o);
  assert_int_equal(s.snapshot_index, 0);
  assert_int_equal(s.sm_durable_index, 5);
  dsm_sync(&o->sm); /* durable at `applied`: it lands */
  one_run_ms(o, 200);
  s = one_status(o);
  assert_true(s.snapshot_index >= 10 && s.snapshot_index <= applied);
  uint64_t snap = s.snapshot_index;

  /* more writes, not synced; a crash loses them from the state machine */
  o->acked = 0;
  for (int k = 0; k < 40; k++) {
    assert_int_equal(qraft_node_propose(o->node, "y", 1, one_acked, o), 0);
  }
  (void)qraft_env_run(o->env, qraft_env_now_ns(o->env) + 5000000000u,
                      one_all_acked, o);
  assert_int_equal(o->acked, 40);
  one_run_ms(o, 100);
  s = one_status(o);
  assert_true(s.snapshot_index <= applied); /* kept after the durable index */
  uint64_t applied2 = s.applied, sum2 = o->sm.sum;
  qraft_node_free(o->node);
  dsm_crash(&o->sm);
  assert_int_equal(one_open(o), 0);
  assert_int_equal(qraft_node_start(o->node), 0);
  one_run_ms(o, 3000);
  s = one_status(o);
  assert_int_equal(o->sm.restores, 0);
  assert_int_equal(o->sm.first_applied, applied + 1);
  assert_true(s.applied >= applied2);
  assert_int_equal(o->sm.sum >= sum2, true);
  assert_int_equal(s.sm_rebuilds_lost, 0);

  /* the state machine loses state it reported durable: rebuilt from the
   * node's snapshot, counted */
  dsm_sync(&o->sm);
  one_run_ms(o, 200);
  s = one_status(o);
  assert_true(s.snapshot_index > snap);
  qraft_node_free(o->node);
  o->sm.d_index = 0;
  o->sm.d_sum = 0;
  dsm_crash(&o->sm);
  assert_int_equal(one_open(o), 0);
  assert_int_equal(o->sm.restores, 1);
  assert_int_equal(one_status(o).sm_rebuilds_lost, 0); /* (published once running) */
  assert_int_equal(qraft_node_start(o->node), 0);
  one_run_ms(o, 1000);
  assert_int_equal(one_status(o).sm_rebuilds_lost, 1);
  uint64_t final_applied = one_status(o).applied;
  qraft_node_free(o->node);

  /* a state beyond this log belongs to another one */
  o->sm.d_index = final_applied + 1000;
  dsm_crash(&o->sm);
  assert_int_equal(one_open(o), QRAFT_ECORRUPT);

  qraft_storage_close(o->store);
  qraft_env_free(o->env);
  qraft_simnet_free(o->net);
  free(o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_durable_state_machine_keeps_the_log_after_its_durable_index),
      cmocka_unit_test(scenarios_on_the_simulated_network_replay_from_a_seed),
      cmocka_unit_test(a_snapshot_restored_in_steps_holds_back_applies_and_reads),
      cmocka_unit_test(a_durable_state_machine_compacts_without_its_state),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

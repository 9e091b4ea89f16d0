/*
 * Nodes in one process over real loopback QUIC, each with its write-ahead
 * log in a temporary directory and its own loop thread (the libuv env).
 * The state machine is a log of applied payloads with a running digest.
 */
#include "cmocka_all.h"

#include <qraft/core.h>
#include <qraft/node.h>
#include <qraft/relay.h>
#include <qraft/storage.h>

#include "storage/fault.h"

#include <errno.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N_MAX 5

/* --- the state machine ---------------------------------------------------------- */

typedef struct sm {
  pthread_mutex_t mu;
  uint64_t applied_n; /* payloads applied */
  uint64_t digest;    /* FNV over the payloads, in order */
  uint64_t index;
  uint64_t restores;
} sm;

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    h = (h ^ p[i]) * 0x100000001b3ULL;
  }
  return h;
}

static int sm_apply(void *ud, const qraft_entry *es, size_t n, uint64_t last,
                     qraft_slice *results) {
  sm *s = ud;
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < n; i++) {
    s->digest = fnv(s->digest ^ 0x9e37, es[i].data.data, es[i].data.len);
    s->applied_n++;
    results[i] = (qraft_slice){0};
  }
  s->index = last;
  pthread_mutex_unlock(&s->mu);
  return 0;
}

static int sm_snapshot(void *ud, uint64_t *index, qraft_sm_write_fn write,
                       void *wctx) {
  sm *s = ud;
  pthread_mutex_lock(&s->mu);
  uint64_t v[3] = {s->applied_n, s->digest, s->index};
  *index = s->index;
  pthread_mutex_unlock(&s->mu);
  return write(wctx, v, sizeof v);
}

static int sm_restore(void *ud, uint64_t index, qraft_sm_read_fn read,
                      void *rctx) {
  sm *s = ud;
  uint64_t v[3];
  size_t off = 0;
  while (off < sizeof v) {
    size_t got = 0;
    int rv = read(rctx, (uint8_t *)v + off, sizeof v - off, &got);
    if (rv != 0) {
      return rv;
    }
    if (got == 0) {
      return QRAFT_ETRUNCATED;
    }
    off += got;
  }
  pthread_mutex_lock(&s->mu);
  s->applied_n = v[0];
  s->digest = v[1];
  s->index = index;
  s->restores++;
  pthread_mutex_unlock(&s->mu);
  return 0;
}

static const qraft_sm_ops sm_ops = {
    .apply = sm_apply, .snapshot = sm_snapshot, .restore = sm_restore};

/* --- a cluster ------------------------------------------------------------------- */

typedef struct member {
  qraft_secret_key key;
  char dir[200];
  uint16_t port;
  qraft_node *node;
  sm state;
  qraft_node_addr addr;
} member;

static member cl[N_MAX];
static char root[128];
/* When set, members reach each other through this relay, and know each
 * other by id only. */
static const qraft_relay_addr *members_relay;
static uint64_t snapshot_entries = 0;
static int port_round = 0; /* each cluster gets ports of its own */

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void member_init(int i) {
  member *m = &cl[i];
  memset(m, 0, sizeof *m);
  pthread_mutex_init(&m->state.mu, NULL);
  assert_int_equal(qraft_secret_key_generate(&m->key), 0);
  snprintf(m->dir, sizeof m->dir, "%s/n%d", root, i + 1);
  m->port = (uint16_t)(20000 + (getpid() % 1000) * 40 + port_round * 8 + i);
  m->addr.id = m->key.public_key;
  m->addr.addrs_n = 1;
  struct sockaddr_in *a = (struct sockaddr_in *)&m->addr.addrs[0];
  a->sin_family = AF_INET;
  a->sin_port = htons(m->port);
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

static void member_open(int i) {
  member *m = &cl[i];
  qraft_node_config cfg;
  qraft_node_config_default(&cfg);
  cfg.data_dir = m->dir;
  cfg.key = &m->key;
  cfg.cluster_id = 77;
  cfg.bind_n = 1;
  memcpy(&cfg.bind[0], &m->addr.addrs[0], sizeof(struct sockaddr_in));
  if (members_relay != NULL) {
    cfg.relays_n = 1;
    cfg.relays[0] = *members_relay;
  }
  cfg.sm = &sm_ops;
  cfg.sm_ud = &m->state;
  cfg.tick_ms = 10;
  cfg.snapshot_entries = snapshot_entries;
  /* a restart rebuilds the state machine from the snapshot and the log */
  pthread_mutex_lock(&m->state.mu);
  m->state.applied_n = 0;
  m->state.digest = 0;
  m->state.index = 0;
  pthread_mutex_unlock(&m->state.mu);
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv = qraft_node_new(&cfg, &m->node, &err);
  if (rv != 0) {
    qraft_err_print(&err, stderr);
  }
  assert_int_equal(rv, 0);
}

static void member_start(int i) { assert_int_equal(qraft_node_start(cl[i].node), 0); }

static void member_stop(int i) {
  qraft_node_free(cl[i].node);
  cl[i].node = NULL;
}

static int leader_of(int n) {
  for (int i = 0; i < n; i++) {
    if (cl[i].node == NULL) {
      continue;
    }
    qraft_node_status st;
    qraft_node_status_get(cl[i].node, &st);
    if (st.role == QRAFT_ROLE_LEADER) {
      return i;
    }
  }
  return -1;
}

static int wait_leader(int n, uint64_t ms) {
  uint64_t end = now_ms() + ms;
  while (now_ms() < end) {
    int l = leader_of(n);
    if (l >= 0) {
      return l;
    }
    usleep(5000);
  }
  return -1;
}

/* Waits until every running member of the first n knows leader l. */
static bool wait_known_leader(int n, int l, uint64_t ms) {
  qraft_id lid = qraft_node_id_of(cl[l].node);
  uint64_t end = now_ms() + ms;
  while (now_ms() < end) {
    bool all = true;
    for (int i = 0; i < n; i++) {
      if (cl[i].node == NULL) {
        continue;
      }
      qraft_node_status st;
      qraft_node_status_get(cl[i].node, &st);
      all = all && st.leader == lid;
    }
    if (all) {
      return true;
    }
    usleep(5000);
  }
  return false;
}

static void cluster_boot(int n) {
  port_round++;
  snprintf(root, sizeof root, "/tmp/qraft-node-test-XXXXXX");
  assert_non_null(mkdtemp(root));
  qraft_node_addr addrs[N_MAX];
  for (int i = 0; i < n; i++) {
    member_init(i);
    addrs[i] = cl[i].addr;
    if (members_relay != NULL) {
      /* the others know only its id and its relay */
      addrs[i].addrs_n = 0;
      addrs[i].relays_n = 1;
      addrs[i].relays[0] = *members_relay;
    }
  }
  for (int i = 0; i < n; i++) {
    member_open(i);
    qraft_err err;
    qraft_err_init(&err, 0);
    assert_int_equal(qraft_node_bootstrap(cl[i].node, addrs, (size_t)n, &err),
                     0);
  }
  for (int i = 0; i < n; i++) {
    member_start(i);
  }
}

static void cluster_free(int n) {
  for (int i = 0; i < n; i++) {
    if (cl[i].node != NULL) {
      member_stop(i);
    }
  }
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  assert_int_equal(system(cmd), 0);
}

/* --- proposals from many threads ----------------------------------------------- */

typedef struct done_ctr {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int ok, failed, calls;
  int status_last;
} done_ctr;

static void propose_done(void *ud, int status, qraft_slice result,
                         qraft_id leader) {
  (void)result;
  (void)leader;
  done_ctr *d = ud;
  pthread_mutex_lock(&d->mu);
  d->calls++;
  if (status == 0) {
    d->ok++;
  } else {
    d->failed++;
    d->status_last = status;
  }
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->mu);
}

static void done_cb(void *ud, int status, qraft_id leader) {
  (void)leader;
  propose_done(ud, status, (qraft_slice){0}, 0);
}

static void wait_calls(done_ctr *d, int calls, uint64_t ms) {
  uint64_t end = now_ms() + ms;
  pthread_mutex_lock(&d->mu);
  while (d->calls < calls && now_ms() < end) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 20 * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&d->cv, &d->mu, &ts);
  }
  pthread_mutex_unlock(&d->mu);
}

typedef struct thread_arg {
  int node;
  int count;
  int tid;
  done_ctr *d;
} thread_arg;

static void *proposer(void *p) {
  thread_arg *a = p;
  for (int k = 0; k < a->count; k++) {
    char buf[32];
    int len = snprintf(buf, sizeof buf, "t%d-%d", a->tid, k);
    int rv;
    while ((rv = qraft_node_propose(cl[a->node].node, buf, (size_t)len,
                                    propose_done, a->d)) == QRAFT_EBUSY) {
      usleep(1000);
    }
    assert_int_equal(rv, 0);
  }
  return NULL;
}

static bool wait_converged(int n, uint64_t want_applied, uint64_t ms) {
  uint64_t end = now_ms() + ms;
  while (now_ms() < end) {
    bool same = true;
    uint64_t d0 = 0;
    for (int i = 0; i < n && same; i++) {
      if (cl[i].node == NULL) {
        continue;
      }
      pthread_mutex_lock(&cl[i].state.mu);
      uint64_t a = cl[i].state.applied_n, d = cl[i].state.digest;
      pthread_mutex_unlock(&cl[i].state.mu);
      if (a != want_applied) {
        same = false;
      } else if (d0 == 0) {
        d0 = d;
      } else if (d != d0) {
        same = false;
      }
    }
    if (same) {
      return true;
    }
    usleep(10000);
  }
  return false;
}

static void proposals_from_8_threads_complete_once_and_apply_everywhere(
    void **st) {
  (void)st;
  cluster_boot(3);
  int l = wait_leader(3, 10000);
  assert_true(l >= 0);
  /* a follower that does not know the leader yet answers ENOTLEADER */
  assert_true(wait_known_leader(3, l, 5000));
  done_ctr d = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  pthread_t th[8];
  thread_arg args[8];
  for (int t = 0; t < 8; t++) {
    /* half the threads talk to followers, whose proposals are forwarded */
    args[t] = (thread_arg){.node = t % 3, .count = 50, .tid = t, .d = &d};
    assert_int_equal(pthread_create(&th[t], NULL, proposer, &args[t]), 0);
  }
  for (int t = 0; t < 8; t++) {
    pthread_join(th[t], NULL);
  }
  wait_calls(&d, 400, 20000);
  assert_int_equal(d.calls, 400); /* every callback exactly once */
  assert_int_equal(d.ok, 400);
  assert_true(wait_converged(3, 400, 10000));

  /* a read barrier on a follower sees everything acknowledged */
  int f = (l + 1) % 3;
  done_ctr r = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  assert_int_equal(qraft_node_read_barrier(cl[f].node, done_cb, &r), 0);
  wait_calls(&r, 1, 5000);
  assert_int_equal(r.ok, 1);
  pthread_mutex_lock(&cl[f].state.mu);
  assert_int_equal(cl[f].state.applied_n, 400);
  pthread_mutex_unlock(&cl[f].state.mu);

  static char text[65536];
  size_t need = qraft_node_metrics_text(cl[l].node, text, sizeof text);
  assert_true(need < sizeof text);
  assert_non_null(strstr(text, "qraft_is_leader 1"));
  /* the commit-latency histogram recorded the proposals made on the leader */
  const char *cc = strstr(text, "qraft_commit_seconds_count ");
  assert_non_null(cc);
  assert_true(strtoull(cc + strlen("qraft_commit_seconds_count "), NULL, 10) >
              0);
  assert_non_null(strstr(text, "qraft_storage_write_seconds_bucket"));
  cluster_free(3);
}

static void stopping_the_leader_elects_another_and_a_restart_catches_up(
    void **st) {
  (void)st;
  cluster_boot(3);
  int l = wait_leader(3, 10000);
  assert_true(l >= 0);
  done_ctr d = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  for (int k = 0; k < 20; k++) {
    assert_int_equal(qraft_node_propose(cl[l].node, "a", 1, propose_done, &d),
                     0);
  }
  wait_calls(&d, 20, 10000);
  assert_int_equal(d.ok, 20);
  member_stop(l);
  int l2 = wait_leader(3, 10000);
  assert_true(l2 >= 0 && l2 != l);
  for (int k = 0; k < 20; k++) {
    assert_int_equal(qraft_node_propose(cl[l2].node, "b", 1, propose_done, &d),
                     0);
  }
  wait_calls(&d, 40, 10000);
  assert_int_equal(d.ok, 40);
  /* reads across the leader change: a read barrier on every running node
   * sees all 40 acknowledged writes */
  for (int i = 0; i < 3; i++) {
    if (cl[i].node == NULL) {
      continue;
    }
    done_ctr r = {.mu = PTHREAD_MUTEX_INITIALIZER,
                  .cv = PTHREAD_COND_INITIALIZER};
    for (int attempt = 0; attempt < 5 && r.ok == 0; attempt++) {
      assert_int_equal(qraft_node_read_barrier(cl[i].node, done_cb, &r), 0);
      wait_calls(&r, attempt + 1, 5000);
    }
    assert_int_equal(r.ok, 1);
    pthread_mutex_lock(&cl[i].state.mu);
    assert_int_equal(cl[i].state.applied_n, 40);
    pthread_mutex_unlock(&cl[i].state.mu);
  }
  /* the old leader restarts from its write-ahead log and catches up */
  member_open(l);
  member_start(l);
  assert_true(wait_converged(3, 40, 10000));
  cluster_free(3);
}

static void a_new_member_catches_up_through_a_snapshot_and_one_is_removed(
    void **st) {
  (void)st;
  snapshot_entries = 50;
  cluster_boot(3);
  int l = wait_leader(3, 10000);
  assert_true(l >= 0);
  done_ctr d = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  for (int k = 0; k < 200; k++) {
    assert_int_equal(qraft_node_propose(cl[l].node, "x", 1, propose_done, &d),
                     0);
  }
  wait_calls(&d, 200, 10000);
  assert_int_equal(d.ok, 200);
  /* the fourth node starts empty and is added as a learner, then promoted */
  member_init(3);
  member_open(3);
  member_start(3);
  done_ctr c = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  assert_int_equal(qraft_node_add_learner(cl[l].node, &cl[3].addr, done_cb, &c),
                   0);
  wait_calls(&c, 1, 10000);
  assert_int_equal(c.ok, 1);
  if (!wait_converged(4, 200, 15000)) {
    for (int i = 0; i < 4; i++) {
      qraft_node_status st;
      qraft_node_status_get(cl[i].node, &st);
      fprintf(stderr,
              "n%d role %d term %llu leader %llx commit %llu applied %llu "
              "last %llu snap %llu members %u sm %llu restores %llu\n",
              i + 1, st.role, (unsigned long long)st.term,
              (unsigned long long)st.leader, (unsigned long long)st.commit,
              (unsigned long long)st.applied,
              (unsigned long long)st.last_index,
              (unsigned long long)st.snapshot_index, st.members_n,
              (unsigned long long)cl[i].state.applied_n,
              (unsigned long long)cl[i].state.restores);
    }
    fail_msg("the new member did not catch up");
  }
  assert_true(cl[3].state.restores >= 1); /* it came by snapshot */
  qraft_id id4 = qraft_node_id_of(cl[3].node);
  assert_int_equal(qraft_node_promote(cl[l].node, id4, done_cb, &c), 0);
  wait_calls(&c, 2, 10000);
  assert_int_equal(c.ok, 2);
  /* remove a follower; the cluster goes on without it */
  int gone = (l + 1) % 3;
  qraft_id gid = qraft_node_id_of(cl[gone].node);
  assert_int_equal(qraft_node_remove(cl[l].node, gid, done_cb, &c), 0);
  wait_calls(&c, 3, 10000);
  assert_int_equal(c.ok, 3);
  qraft_node_status s;
  qraft_node_status_get(cl[l].node, &s);
  for (uint32_t i = 0; i < s.members_n; i++) {
    assert_int_not_equal(s.members[i].id, gid);
  }
  /* the removed node, still running, can no longer connect: the members
   * refuse its handshakes */
  bool refused = false;
  for (int k = 0; k < 300 && !refused; k++) {
    static char text[65536];
    qraft_node_metrics_text(cl[gone].node, text, sizeof text);
    const char *p = strstr(text, "handshake_failures_total{reason=\"unauthorized\"} ");
    refused = p != NULL && strtoull(p + strlen("handshake_failures_total{reason=\"unauthorized\"} "), NULL, 10) > 0;
    usleep(10000);
  }
  assert_true(refused);
  member_stop(gone);
  for (int k = 0; k < 10; k++) {
    assert_int_equal(qraft_node_propose(cl[l].node, "y", 1, propose_done, &d),
                     0);
  }
  wait_calls(&d, 210, 10000);
  assert_int_equal(d.ok, 210);
  snapshot_entries = 0;
  cluster_free(4);
}

static void leadership_moves_on_request(void **st) {
  (void)st;
  cluster_boot(3);
  int l = wait_leader(3, 10000);
  assert_true(l >= 0);
  assert_true(wait_known_leader(3, l, 5000));
  int to = (l + 2) % 3;
  /* under load: proposals keep coming while leadership moves */
  done_ctr d = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  for (int k = 0; k < 200; k++) {
    assert_int_equal(qraft_node_propose(cl[l].node, "z", 1, propose_done, &d),
                     0);
  }
  /* A transfer that does not finish within an election timeout (a message
   * lost while connections settle) ends with QRAFT_ETIMEDOUT: try again. */
  done_ctr c = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  for (int attempt = 1; attempt <= 3 && c.ok == 0; attempt++) {
    assert_int_equal(qraft_node_transfer(cl[l].node,
                                         qraft_node_id_of(cl[to].node),
                                         done_cb, &c),
                     0);
    wait_calls(&c, attempt, 10000);
    if (c.ok == 0) {
      assert_int_equal(c.status_last, QRAFT_ETIMEDOUT);
    }
  }
  assert_int_equal(c.ok, 1);
  assert_int_equal(wait_leader(3, 5000), to);
  /* every proposal completed exactly once: applied, or dropped in the
   * leader change (QRAFT_EDROPPED) */
  wait_calls(&d, 200, 20000);
  assert_int_equal(d.calls, 200);
  assert_true(d.ok > 0);
  cluster_free(3);
}

/* --- out of space ----------------------------------------------------------- */

/* Prints the members' status (for a failing assertion). */
static void dump_status(int n, const char *what) {
  for (int i = 0; i < n; i++) {
    if (cl[i].node == NULL) {
      continue;
    }
    qraft_node_status s;
    qraft_node_status_get(cl[i].node, &s);
    fprintf(stderr,
            "%s: member %d role %d commit %llu applied %llu alarms %u why "
            "'%s' held %llu stopped_on %d\n",
            what, i, (int)s.role, (unsigned long long)s.commit,
            (unsigned long long)s.applied, s.alarms, s.alarm_why,
            (unsigned long long)s.writes_held, s.stopped_on);
  }
}

/* Out of space tests: the fault points are process-wide. */
static int faults_teardown(void **st) {
  (void)st;
  qraft__fault_reset();
  return 0;
}


/* Every member's log runs out of room for a new segment (the fault point,
 * process-wide): writes are held, the alarm rises, no node stops; once
 * there is room, the held writes land, the alarm clears, every proposal
 * has had its answer (applied, or refused with -ENOSPC: it did not happen)
 * and the members agree. */
static void a_full_log_holds_writes_until_there_is_room(void **st) {
  (void)st;
  cluster_boot(3);
  assert_true(wait_leader(3, 5000) >= 0);
  qraft__fault_reset();
  qraft__fault_arm("wal.prepare", 0, -ENOSPC, 0);
  enum { COUNT = 120, BYTES = 256 << 10 }; /* 30 MiB: past two segments */
  uint8_t *v = malloc(BYTES);
  assert_non_null(v);
  done_ctr d = {.mu = PTHREAD_MUTEX_INITIALIZER,
                .cv = PTHREAD_COND_INITIALIZER};
  int sent = 0;
  bool held = false;
  uint64_t end = now_ms() + 30000;
  while (!held && now_ms() < end) {
    int l = leader_of(3);
    if (l >= 0 && sent < COUNT) {
      memset(v, sent, BYTES);
      if (qraft_node_propose(cl[l].node, v, BYTES, propose_done, &d) == 0) {
        sent++;
      }
    } else {
      usleep(10000);
    }
    for (int i = 0; i < 3; i++) {
      qraft_node_status s;
      qraft_node_status_get(cl[i].node, &s);
      assert_int_equal(s.stopped_on, 0);
      held |= s.writes_held > 0 && (s.alarms & QRAFT_ALARM_NOSPACE) &&
              strstr(s.alarm_why, "log's store") != NULL;
    }
  }
  if (!held) {
    dump_status(3, "no write held");
  }
  assert_true(held);
  assert_true(qraft__fault_fired("wal.prepare") >= 1);
  usleep(300 * 1000); /* held a while: retried, still no room */
  for (int i = 0; i < 3; i++) {
    qraft_node_status s;
    qraft_node_status_get(cl[i].node, &s);
    assert_int_equal(s.stopped_on, 0);
    assert_true(s.running);
  }
  qraft__fault_reset(); /* room again */
  wait_calls(&d, sent, 30000);
  pthread_mutex_lock(&d.mu);
  if (d.calls != sent) {
    dump_status(3, "proposals unanswered");
  }
  assert_int_equal(d.calls, sent);
  int ok = d.ok;
  pthread_mutex_unlock(&d.mu);
  assert_true(ok > 0);
  /* the alarm clears and the members agree, with nobody stopped */
  end = now_ms() + 30000;
  bool agree = false;
  while (!agree && now_ms() < end) {
    usleep(20000);
    agree = true;
    uint64_t digest = 0, index = 0;
    for (int i = 0; i < 3; i++) {
      qraft_node_status s;
      qraft_node_status_get(cl[i].node, &s);
      assert_int_equal(s.stopped_on, 0);
      pthread_mutex_lock(&cl[i].state.mu);
      uint64_t dg = cl[i].state.digest, ix = cl[i].state.index;
      pthread_mutex_unlock(&cl[i].state.mu);
      if (i == 0) {
        digest = dg;
        index = ix;
      }
      agree = agree && s.alarms == 0 && s.writes_held == 0 && dg == digest &&
              ix == index && s.applied == s.commit;
    }
  }
  if (!agree) {
    dump_status(3, "members disagree");
  }
  assert_true(agree);
  free(v);
  cluster_free(3);
}

/* A failed sync of the log stops the node (a retry could report durable
 * what is not): its status says so, the others go on. */
static void a_failed_sync_stops_the_node_and_its_status_says_so(void **st) {
  (void)st;
  cluster_boot(3);
  assert_true(wait_leader(3, 5000) >= 0);
  qraft__fault_reset();
  qraft__fault_arm("wal.fdatasync", 0, -EIO, 1);
  done_ctr d = {.mu = PTHREAD_MUTEX_INITIALIZER,
                .cv = PTHREAD_COND_INITIALIZER};
  int stopped = -1;
  uint64_t end = now_ms() + 10000;
  while (stopped < 0 && now_ms() < end) {
    int l = leader_of(3);
    if (l >= 0) {
      (void)qraft_node_propose(cl[l].node, "x", 1, propose_done, &d);
    }
    usleep(5000);
    for (int i = 0; i < 3; i++) {
      qraft_node_status s;
      qraft_node_status_get(cl[i].node, &s);
      if (s.stopped_on != 0) {
        assert_int_equal(s.stopped_on, -EIO);
        assert_false(s.running);
        stopped = i;
      }
    }
  }
  if (stopped < 0) {
    dump_status(3, "nobody stopped");
  }
  assert_true(stopped >= 0);
  qraft__fault_reset();
  /* the other two still commit */
  int others[2], k = 0;
  for (int i = 0; i < 3; i++) {
    if (i != stopped) {
      others[k++] = i;
    }
  }
  end = now_ms() + 10000;
  bool committed = false;
  while (!committed && now_ms() < end) {
    for (int j = 0; j < 2 && !committed; j++) {
      qraft_node_status s;
      qraft_node_status_get(cl[others[j]].node, &s);
      if (s.role == QRAFT_ROLE_LEADER) {
        done_ctr e = {.mu = PTHREAD_MUTEX_INITIALIZER,
                      .cv = PTHREAD_COND_INITIALIZER};
        if (qraft_node_propose(cl[others[j]].node, "y", 1, propose_done,
                               &e) == 0) {
          wait_calls(&e, 1, 5000);
          committed = e.ok == 1;
        }
      }
    }
    usleep(20000);
  }
  if (!committed) {
    dump_status(3, "no commit");
  }
  assert_true(committed);
  cluster_free(3);
  /* callbacks of the stopped node's requests ran before it was freed */
  assert_int_equal(d.calls, d.ok + d.failed);
}

/* Two of three members are gone for good: the third, forced into a new
 * cluster, keeps every entry it held (the committed ones and five it never
 * got committed), elects itself, takes writes, and a new member joins. */
static void a_survivor_forced_into_a_new_cluster_keeps_its_log(void **st) {
  (void)st;
  cluster_boot(3);
  int l = wait_leader(3, 10000);
  assert_true(l >= 0);
  done_ctr d = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  for (int k = 0; k < 50; k++) {
    assert_int_equal(qraft_node_propose(cl[l].node, "a", 1, propose_done, &d),
                     0);
  }
  wait_calls(&d, 50, 10000);
  assert_int_equal(d.ok, 50);
  qraft_err err;
  qraft_err_init(&err, 0);
  /* refused once started */
  assert_int_equal(qraft_node_force_new_cluster(cl[l].node, NULL, NULL, &err),
                   QRAFT_ESTATE);
  for (int i = 0; i < 3; i++) {
    if (i != l) {
      member_stop(i);
    }
  }
  /* five more reach the survivor's log, never a quorum */
  qraft_node_status s0;
  qraft_node_status_get(cl[l].node, &s0);
  for (int k = 0; k < 5; k++) {
    assert_int_equal(qraft_node_propose(cl[l].node, "u", 1, propose_done, &d),
                     0);
  }
  qraft_node_status s1;
  for (int k = 0; k < 500; k++) {
    qraft_node_status_get(cl[l].node, &s1);
    if (s1.last_index >= s0.last_index + 5) {
      break;
    }
    usleep(10000);
  }
  assert_true(s1.last_index >= s0.last_index + 5);
  member_stop(l); /* the five fail (shut down): outcome unknown to a client */
  wait_calls(&d, 55, 10000);
  assert_int_equal(d.ok, 50);

  member_open(l);
  qraft_conf_state was;
  uint64_t last = 0;
  int rv = qraft_node_force_new_cluster(cl[l].node, &was, &last, &err);
  if (rv != 0) {
    qraft_err_print(&err, stderr);
  }
  assert_int_equal(rv, 0);
  assert_int_equal(was.voters_n, 3);
  assert_int_equal(last, s1.last_index + 2); /* two members removed */
  member_start(l);
  assert_int_equal(wait_leader(3, 10000), l);
  for (int k = 0; k < 10; k++) {
    assert_int_equal(qraft_node_propose(cl[l].node, "b", 1, propose_done, &d),
                     0);
  }
  wait_calls(&d, 65, 10000);
  assert_int_equal(d.ok, 60);
  done_ctr r = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  assert_int_equal(qraft_node_read_barrier(cl[l].node, done_cb, &r), 0);
  wait_calls(&r, 1, 5000);
  assert_int_equal(r.ok, 1);
  assert_true(wait_converged(3, 65, 5000));
  qraft_node_status s;
  qraft_node_status_get(cl[l].node, &s);
  assert_int_equal(s.members_n, 1);
  assert_int_equal(s.members[0].id, qraft_node_id_of(cl[l].node));

  /* a new member (empty, a new key) joins the new cluster */
  int j = (l + 1) % 3;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", cl[j].dir);
  assert_int_equal(system(cmd), 0);
  member_init(j);
  member_open(j);
  /* an empty store has nothing to force */
  assert_int_equal(qraft_node_force_new_cluster(cl[j].node, NULL, NULL, &err),
                   QRAFT_ESTATE);
  member_start(j);
  done_ctr c = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  assert_int_equal(qraft_node_add_voter(cl[l].node, &cl[j].addr, done_cb, &c),
                   0);
  wait_calls(&c, 1, 10000);
  assert_int_equal(c.ok, 1);
  assert_true(wait_converged(3, 65, 15000));
  cluster_free(3);
}

/* A node whose log ends in a joint configuration (A, B, C leaving for A,
 * B, D, left explicitly) is forced into a cluster of one: the changes
 * leave the joint configuration, then remove B and D; the configuration as
 * of the whole log is then A alone, every entry committed. */
static void forcing_from_a_joint_configuration_leaves_it_first(void **st) {
  (void)st;
  qraft_secret_key keys[4];
  qraft_id ids[4];
  qraft_conf_change ccs[3];
  uint8_t ctx[3][QRAFT_KEY_BYTES + 1 + QRAFT_NODE_ADDRS_MAX * 19];
  for (int i = 0; i < 4; i++) {
    assert_int_equal(qraft_secret_key_generate(&keys[i]), 0);
    ids[i] = qraft_node_raft_id(&keys[i].public_key);
  }
  for (int i = 0; i < 3; i++) {
    ccs[i] = (qraft_conf_change){.change_type = QRAFT_CONF_ADD_NODE,
                                 .node_id = ids[i],
                                 .context = {.data = ctx[i], .len = 0}};
  }
  qraft_entry es[4];
  qraft_err err;
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_core_bootstrap_entries(ccs, 3, es, &err), 0);
  qraft_conf_change_v2 v2 = {.transition = QRAFT_CONF_TRANSITION_EXPLICIT,
                             .changes_n = 2};
  v2.changes[0] = (qraft_conf_change_single){QRAFT_CONF_ADD_NODE, ids[3]};
  v2.changes[1] = (qraft_conf_change_single){QRAFT_CONF_REMOVE_NODE, ids[2]};
  qraft_buf *b = qraft_buf_new(qraft_conf_change_v2_size(&v2));
  b->len = qraft_conf_change_v2_encode(&v2, b->data);
  es[3] = (qraft_entry){.type = QRAFT_ENTRY_CONF_CHANGE_V2, .term = 1,
                        .index = 4,
                        .data = {.data = b->data, .len = b->len, .owner = b}};
  qraft_storage *store = NULL;
  assert_int_equal(qraft_storage_mem_new(&store), 0);
  qraft_hard_state hs = {.term = 1, .commit = 4};
  qraft_storage_write w = {.entries = es, .entries_n = 4, .hard_state = &hs};
  assert_int_equal(qraft_storage_write_sync(store, &w, &err), 0);
  for (int i = 0; i < 4; i++) {
    qraft_slice_release(&es[i].data);
  }

  sm state;
  memset(&state, 0, sizeof state);
  pthread_mutex_init(&state.mu, NULL);
  qraft_node_config cfg;
  qraft_node_config_default(&cfg);
  cfg.storage = store;
  cfg.storage_borrowed = true;
  cfg.key = &keys[0];
  cfg.cluster_id = 77;
  cfg.bind_n = 1;
  struct sockaddr_in *a = (struct sockaddr_in *)&cfg.bind[0];
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cfg.sm = &sm_ops;
  cfg.sm_ud = &state;
  qraft_node *node = NULL;
  assert_int_equal(qraft_node_new(&cfg, &node, &err), 0);
  qraft_conf_state was;
  uint64_t last = 0;
  int rv = qraft_node_force_new_cluster(node, &was, &last, &err);
  if (rv != 0) {
    qraft_err_print(&err, stderr);
  }
  assert_int_equal(rv, 0);
  assert_int_equal(was.voters_outgoing_n, 3); /* it was joint */
  assert_int_equal(was.voters_n, 3);
  assert_int_equal(last, 4 + 1 + 2); /* leave, remove B, remove D */
  qraft_node_free(node);

  /* the log as a restart reads it: everything committed, A alone */
  qraft_storage_state ss;
  assert_int_equal(qraft_storage_state_get(store, &ss, &err), 0);
  assert_int_equal(ss.last_index, 7);
  assert_int_equal(ss.hard_state.commit, 7);
  qraft_entry all[7];
  size_t got = 0;
  assert_int_equal(qraft_storage_entries(store, 1, 8, UINT64_MAX, all, 7, &got,
                                         &err),
                   0);
  assert_int_equal(got, 7);
  assert_int_equal(all[4].type, QRAFT_ENTRY_CONF_CHANGE_V2); /* leave */
  assert_int_equal(all[5].type, QRAFT_ENTRY_CONF_CHANGE);
  assert_int_equal(all[6].type, QRAFT_ENTRY_CONF_CHANGE);
  qraft_core_config cc;
  qraft_core_config_default(&cc);
  cc.id = ids[0];
  qraft_core_restore rs = {.hard_state = ss.hard_state, .entries = all,
                           .entries_n = 7, .applied = 7};
  qraft_core *core = NULL;
  assert_int_equal(qraft_core_new(&cc, &rs, &core, &err), 0);
  const qraft_conf_state *cs = qraft_core_conf_state(core);
  assert_int_equal(cs->voters_n, 1);
  assert_int_equal(cs->voters[0], ids[0]);
  assert_int_equal(cs->voters_outgoing_n, 0);
  assert_int_equal(cs->learners_n, 0);
  assert_int_equal(cs->learners_next_n, 0);
  qraft_core_free(core);
  qraft_storage_entries_release(all, got);
  qraft_storage_close(store);
}

/* --- members that know each other by id and a relay -------------------------------- */

typedef struct relay_thread {
  pthread_t th;
  qraft_env *env;
  qraft_endpoint *ep;
  qraft_relay_server *srv;
  qraft_relay_addr addr;
  atomic_bool ready, stop;
} relay_thread;

static bool relay_should_stop(void *ud) {
  return atomic_load(&((relay_thread *)ud)->stop);
}

static void *relay_main(void *p) {
  relay_thread *rt = p;
  qraft_secret_key key;
  assert_int_equal(qraft_secret_key_generate(&key), 0);
  assert_int_equal(qraft_env_uv_new(&rt->env), 0);
  qraft_endpoint_config ec = {.env = rt->env, .key = &key, .bind_n = 1};
  struct sockaddr_in *a = (struct sockaddr_in *)&ec.bind[0];
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(qraft_endpoint_new(&ec, &rt->ep, NULL), 0);
  qraft_relay_server_config rc = {.ep = rt->ep};
  assert_int_equal(qraft_relay_server_new(&rc, &rt->srv, NULL), 0);
  qraft_node_addr na;
  qraft_endpoint_addr(rt->ep, &na);
  rt->addr.id = key.public_key;
  rt->addr.addr = na.addrs[0];
  atomic_store(&rt->ready, true);
  /* the server's own timer wakes the loop to look at `stop` */
  qraft_env_run(rt->env, UINT64_MAX, relay_should_stop, rt);
  qraft_endpoint_shutdown(rt->ep);
  qraft_relay_server_free(rt->srv);
  qraft_endpoint_free(rt->ep);
  qraft_env_free(rt->env);
  return NULL;
}

static void members_that_know_only_ids_and_a_relay_form_a_cluster(void **st) {
  (void)st;
  relay_thread rt;
  memset(&rt, 0, sizeof rt);
  assert_int_equal(pthread_create(&rt.th, NULL, relay_main, &rt), 0);
  while (!atomic_load(&rt.ready)) {
    usleep(1000);
  }
  members_relay = &rt.addr;
  cluster_boot(3);
  int l = wait_leader(3, 15000);
  assert_true(l >= 0);
  assert_true(wait_known_leader(3, l, 10000));
  done_ctr d = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  pthread_t th[3];
  thread_arg args[3];
  for (int t = 0; t < 3; t++) {
    /* proposals on followers go to the leader through the relay too */
    args[t] = (thread_arg){.node = t, .count = 30, .tid = t, .d = &d};
    assert_int_equal(pthread_create(&th[t], NULL, proposer, &args[t]), 0);
  }
  for (int t = 0; t < 3; t++) {
    pthread_join(th[t], NULL);
  }
  wait_calls(&d, 90, 20000);
  assert_int_equal(d.ok, 90);
  assert_true(wait_converged(3, 90, 10000));
  /* Nobody knows a direct address: the members met through the relay,
   * told each other where the relay sees them (CALL_ME_MAYBE), and the
   * pings answered: direct paths (loopback), learned, not configured. */
  qraft_node_status s;
  bool all_direct = false;
  for (int k = 0; k < 100 && !all_direct; k++) {
    qraft_node_status_get(cl[l].node, &s);
    all_direct = s.members_n == 3;
    for (uint32_t i = 0; i < s.members_n; i++) {
      all_direct &= s.members[i].id == s.id ||
                    s.members[i].path == QRAFT_PATH_DIRECT;
    }
    if (!all_direct) {
      usleep(100000);
    }
  }
  assert_true(all_direct);
  for (uint32_t i = 0; i < s.members_n; i++) {
    if (s.members[i].id != s.id) {
      assert_true(s.members[i].connected);
      assert_int_equal(s.members[i].addr.addrs_n, 0);
      assert_int_equal(s.members[i].addr.relays_n, 1);
      assert_int_equal(s.members[i].direct_addr.ss_family, AF_INET);
      assert_true(s.members[i].time_to_direct_ns > 0);
      assert_true(s.members[i].path_pongs_in > 0);
    }
  }
  static char text[65536];
  size_t need = qraft_node_metrics_text(cl[l].node, text, sizeof text);
  assert_true(need < sizeof text);
  assert_non_null(strstr(text, "path=\"direct\"} 1"));
  assert_non_null(strstr(text, "qraft_peer_time_to_direct_seconds{peer="));
  assert_non_null(strstr(text, "qraft_transport_probes_total{result=\"ok\"}"));
  /* The leader goes: the other two elect through the relay. */
  member_stop(l);
  int l2 = wait_leader(3, 15000);
  assert_true(l2 >= 0 && l2 != l);
  for (int k = 0; k < 10; k++) {
    assert_int_equal(qraft_node_propose(cl[l2].node, "r", 1, propose_done, &d),
                     0);
  }
  wait_calls(&d, 100, 10000);
  assert_int_equal(d.ok, 100);
  /* and the old leader, back, catches up the same way */
  member_open(l);
  member_start(l);
  assert_true(wait_converged(3, 100, 15000));
  cluster_free(3);
  members_relay = NULL;
  atomic_store(&rt.stop, true);
  pthread_join(rt.th, NULL);
}

static void bad_configurations_are_refused(void **st) {
  (void)st;
  qraft_node_config cfg;
  qraft_node_config_default(&cfg);
  qraft_node *n = NULL;
  qraft_err err;
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_node_new(&cfg, &n, &err), QRAFT_ECONFIG);
  char line[256];
  qraft_err_format(&err, line, sizeof line);
  assert_non_null(strstr(line, "data_dir and storage"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(bad_configurations_are_refused),
      cmocka_unit_test(
          proposals_from_8_threads_complete_once_and_apply_everywhere),
      cmocka_unit_test(
          stopping_the_leader_elects_another_and_a_restart_catches_up),
      cmocka_unit_test(
          a_new_member_catches_up_through_a_snapshot_and_one_is_removed),
      cmocka_unit_test(leadership_moves_on_request),
      cmocka_unit_test(members_that_know_only_ids_and_a_relay_form_a_cluster),
      cmocka_unit_test(a_survivor_forced_into_a_new_cluster_keeps_its_log),
      cmocka_unit_test(forcing_from_a_joint_configuration_leaves_it_first),
      cmocka_unit_test_teardown(a_full_log_holds_writes_until_there_is_room,
                                faults_teardown),
      cmocka_unit_test_teardown(
          a_failed_sync_stops_the_node_and_its_status_says_so,
          faults_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

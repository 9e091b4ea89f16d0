/* The env implementations: timers, datagrams, wake-ups, and the simulated
 * network's faults and determinism. */
#include "cmocka_all.h"

#include <qraft/env.h>
#include <qraft/error.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct box {
  int fired;
  uint64_t at_ns;
  qraft_env *env;
  int recvd;
  uint8_t last[64];
  size_t last_len;
  uint64_t order_hash;
} box;

static void on_timer(void *ud) {
  box *b = ud;
  b->fired++;
  b->at_ns = qraft_env_now_ns(b->env);
}

static bool fired_once(void *ud) { return ((box *)ud)->fired >= 1; }

static void timers_fire_at_their_deadline(qraft_env *env) {
  box b = {.env = env};
  qraft_env_timer *t, *t2;
  assert_int_equal(qraft_env_timer_new(env, on_timer, &b, &t), 0);
  box b2 = {.env = env};
  assert_int_equal(qraft_env_timer_new(env, on_timer, &b2, &t2), 0);
  uint64_t start = qraft_env_now_ns(env);
  qraft_env_timer_arm(t, start + 3000000);
  qraft_env_timer_arm(t2, start + 1000000);
  qraft_env_timer_disarm(t2);
  assert_int_equal(qraft_env_run(env, start + 2000000000ull, fired_once, &b),
                   0);
  assert_true(b.at_ns >= start + 3000000);
  assert_int_equal(b2.fired, 0);
  /* A deadline in the past runs on this turn of the loop. */
  qraft_env_timer_arm(t, 0);
  assert_int_equal(qraft_env_run(env, qraft_env_now_ns(env) + 50000000ull,
                                 fired_once, &b2),
                   QRAFT_ETIMEDOUT);
  assert_int_equal(b.fired, 2);
  qraft_env_timer_free(t);
  qraft_env_timer_free(t2);
}

static void on_recv(void *ud, const struct sockaddr *from, const uint8_t *data,
                    size_t len) {
  (void)from;
  box *b = ud;
  b->recvd++;
  memcpy(b->last, data, len < sizeof b->last ? len : sizeof b->last);
  b->last_len = len;
  b->order_hash = b->order_hash * 31 + data[0];
}

static bool got_n(void *ud) { return ((box *)ud)->recvd >= 10; }

static void datagrams_arrive(qraft_env *env) {
  struct sockaddr_in any = {.sin_family = AF_INET};
  any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  box rb = {.env = env}, sb = {.env = env};
  qraft_env_udp *r, *s;
  assert_int_equal(
      qraft_env_udp_bind(env, (struct sockaddr *)&any, on_recv, &rb, &r), 0);
  assert_int_equal(
      qraft_env_udp_bind(env, (struct sockaddr *)&any, on_recv, &sb, &s), 0);
  struct sockaddr_storage raddr;
  assert_int_equal(qraft_env_udp_local_addr(r, &raddr), 0);
  assert_int_not_equal(((struct sockaddr_in *)&raddr)->sin_port, 0);
  for (uint8_t i = 0; i < 10; i++) {
    uint8_t msg[8] = {i, 'h', 'e', 'l', 'l', 'o'};
    assert_int_equal(qraft_env_udp_send(s, (struct sockaddr *)&raddr, msg, 6),
                     0);
  }
  uint8_t big[QRAFT_ENV_DGRAM_MAX + 1] = {0};
  assert_int_equal(
      qraft_env_udp_send(s, (struct sockaddr *)&raddr, big, sizeof big),
      -EMSGSIZE);
  assert_int_equal(qraft_env_run(env, qraft_env_now_ns(env) + 2000000000ull,
                                 got_n, &rb),
                   0);
  assert_int_equal(rb.last_len, 6);
  assert_memory_equal(rb.last + 1, "hello", 5);
  qraft_env_udp_close(r);
  qraft_env_udp_close(s);
}

static void uv_env_timers_and_datagrams(void **st) {
  (void)st;
  qraft_env *env;
  assert_int_equal(qraft_env_uv_new(&env), 0);
  timers_fire_at_their_deadline(env);
  datagrams_arrive(env);
  qraft_env_free(env);
}

static void sim_env_timers_and_datagrams(void **st) {
  (void)st;
  qraft_simnet *net;
  qraft_env *env;
  assert_int_equal(qraft_simnet_new(1, &net), 0);
  assert_int_equal(qraft_simnet_env_new(net, &env), 0);
  timers_fire_at_their_deadline(env);
  datagrams_arrive(env);
  qraft_env_free(env);
  qraft_simnet_free(net);
}

/* qraft_env_udp_poll reads what waits in the socket, in order, before it
 * returns, at most `max` at a time. */
static void uv_poll_reads_what_waits(void **st) {
  (void)st;
  qraft_env *env;
  assert_int_equal(qraft_env_uv_new(&env), 0);
  struct sockaddr_in any = {.sin_family = AF_INET};
  any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  box rb = {.env = env};
  qraft_env_udp *r;
  assert_int_equal(
      qraft_env_udp_bind(env, (struct sockaddr *)&any, on_recv, &rb, &r), 0);
  struct sockaddr_storage raddr;
  assert_int_equal(qraft_env_udp_local_addr(r, &raddr), 0);
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  assert_true(fd >= 0);
  uint64_t want = 0;
  for (uint8_t i = 1; i <= 5; i++) {
    uint8_t msg[6] = {i, 'h', 'e', 'l', 'l', 'o'};
    assert_int_equal(sendto(fd, msg, sizeof msg, 0, (struct sockaddr *)&raddr,
                            sizeof(struct sockaddr_in)),
                     (ssize_t)sizeof msg);
    want = want * 31 + i;
  }
  /* the loop has not run: nothing was read yet */
  assert_int_equal(rb.recvd, 0);
  assert_int_equal(qraft_env_udp_poll(r, 2), 2);
  assert_int_equal(rb.recvd, 2);
  assert_int_equal(qraft_env_udp_poll(r, 100), 3);
  assert_int_equal(rb.recvd, 5);
  assert_int_equal(rb.order_hash, want); /* in the order sent */
  assert_int_equal(qraft_env_udp_poll(r, 100), 0);
  close(fd);
  qraft_env_udp_close(r);
  qraft_env_free(env);
}

typedef struct poll_box {
  box rb;
  qraft_env_udp *r;
  bool poll;
  int seen_before, seen_after;
} poll_box;

static void poll_timer_cb(void *ud) {
  poll_box *p = ud;
  p->seen_before = p->rb.recvd;
  if (p->poll) {
    assert_int_equal(qraft_env_udp_poll(p->r, 100), 1);
  }
  p->seen_after = p->rb.recvd;
}

static bool got_one(void *ud) { return ((poll_box *)ud)->rb.recvd >= 1; }

/* A paused sim host runs its due timers before it reads what arrived
 * meanwhile (as libuv does after a stall); qraft_env_udp_poll reads it
 * first. */
static int sim_pause_then(bool poll, int *seen_after) {
  qraft_simnet *net;
  qraft_env *a, *b;
  assert_int_equal(qraft_simnet_new(3, &net), 0);
  assert_int_equal(qraft_simnet_env_new(net, &a), 0);
  assert_int_equal(qraft_simnet_env_new(net, &b), 0);
  struct sockaddr_in any = {.sin_family = AF_INET};
  poll_box p = {.rb = {.env = a}, .poll = poll};
  qraft_env_udp *s;
  box sb = {.env = b};
  assert_int_equal(
      qraft_env_udp_bind(a, (struct sockaddr *)&any, on_recv, &p.rb, &p.r), 0);
  assert_int_equal(
      qraft_env_udp_bind(b, (struct sockaddr *)&any, on_recv, &sb, &s), 0);
  struct sockaddr_storage raddr;
  assert_int_equal(qraft_env_udp_local_addr(p.r, &raddr), 0);
  uint64_t t0 = qraft_env_now_ns(a);
  qraft_env_timer *t;
  assert_int_equal(qraft_env_timer_new(a, poll_timer_cb, &p, &t), 0);
  qraft_env_timer_arm(t, t0 + 20000000); /* due at 20 ms, in the pause */
  qraft_simnet_host_pause(a, qraft_simnet_now_ns(net) + 50000000);
  uint8_t msg[1] = {7};
  assert_int_equal(qraft_env_udp_send(s, (struct sockaddr *)&raddr, msg, 1),
                   0); /* arrives within a millisecond, in the pause */
  assert_int_equal(
      qraft_env_run(a, qraft_env_now_ns(a) + 1000000000ull, got_one, &p), 0);
  qraft_env_run(a, qraft_env_now_ns(a) + 1000000ull, NULL, NULL);
  qraft_env_timer_free(t);
  qraft_env_udp_close(p.r);
  qraft_env_udp_close(s);
  qraft_env_free(a);
  qraft_env_free(b);
  qraft_simnet_free(net);
  *seen_after = p.seen_after;
  return p.seen_before;
}

static void sim_resumed_host_runs_timers_first_and_poll_reads(void **st) {
  (void)st;
  int after;
  assert_int_equal(sim_pause_then(false, &after), 0);
  assert_int_equal(after, 0); /* the datagram waits behind the timer */
  assert_int_equal(sim_pause_then(true, &after), 0);
  assert_int_equal(after, 1); /* polled inside the timer */
}

/* Work in steps: a timer that does a slice of work (busy 20 ms) and re-arms
 * itself for "now". The loop reads its sockets between two steps, so what
 * arrived during a step is seen before the next one. */
typedef struct stepper {
  qraft_env *env;
  qraft_env_timer *t;
  box rb;
  qraft_env_udp *r, *s;
  struct sockaddr_storage raddr;
  bool sim;
  int steps;
  int seen[6]; /* datagrams received when each step began */
} stepper;

static void step_cb(void *ud) {
  stepper *p = ud;
  p->seen[p->steps++] = p->rb.recvd;
  if (p->steps == 1) {
    uint8_t msg[1] = {9};
    assert_int_equal(
        qraft_env_udp_send(p->s, (struct sockaddr *)&p->raddr, msg, 1), 0);
  }
  uint64_t busy_until = qraft_env_now_ns(p->env) + 20000000;
  if (p->sim) {
    qraft_simnet_host_pause(p->env, busy_until);
  } else {
    while (qraft_env_now_ns(p->env) < busy_until) {
    }
  }
  if (p->steps < 6) {
    qraft_env_timer_arm(p->t, 0);
  }
}

static bool six_steps(void *ud) { return ((stepper *)ud)->steps >= 6; }

static void steps_let_datagrams_in(qraft_env *env, bool sim) {
  stepper *p = calloc(1, sizeof *p);
  assert_non_null(p);
  p->env = env;
  p->sim = sim;
  p->rb.env = env;
  struct sockaddr_in any = {.sin_family = AF_INET};
  any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(
      qraft_env_udp_bind(env, (struct sockaddr *)&any, on_recv, &p->rb, &p->r),
      0);
  box sb = {.env = env};
  assert_int_equal(
      qraft_env_udp_bind(env, (struct sockaddr *)&any, on_recv, &sb, &p->s), 0);
  assert_int_equal(qraft_env_udp_local_addr(p->r, &p->raddr), 0);
  assert_int_equal(qraft_env_timer_new(env, step_cb, p, &p->t), 0);
  qraft_env_timer_arm(p->t, 0);
  assert_int_equal(
      qraft_env_run(env, qraft_env_now_ns(env) + 5000000000ull, six_steps, p),
      0);
  /* sent in step 1, arrived during it: read before step 3 at the latest
   * (before step 2 when the kernel delivered it at once) */
  assert_int_equal(p->seen[0], 0);
  assert_int_equal(p->seen[2], 1);
  assert_int_equal(p->seen[5], 1);
  qraft_env_timer_free(p->t);
  qraft_env_udp_close(p->r);
  qraft_env_udp_close(p->s);
  free(p);
}

static void uv_steps_let_datagrams_in(void **st) {
  (void)st;
  qraft_env *env;
  assert_int_equal(qraft_env_uv_new(&env), 0);
  steps_let_datagrams_in(env, false);
  qraft_env_free(env);
}

static void sim_steps_let_datagrams_in(void **st) {
  (void)st;
  qraft_simnet *net;
  qraft_env *env;
  assert_int_equal(qraft_simnet_new(5, &net), 0);
  assert_int_equal(qraft_simnet_env_new(net, &env), 0);
  steps_let_datagrams_in(env, true);
  qraft_env_free(env);
  qraft_simnet_free(net);
}

static void on_wake(void *ud) { ((box *)ud)->fired++; }

static void *waker(void *arg) {
  qraft_env_wake_send(arg);
  return NULL;
}

static void uv_wake_from_another_thread(void **st) {
  (void)st;
  qraft_env *env;
  assert_int_equal(qraft_env_uv_new(&env), 0);
  box b = {.env = env};
  qraft_env_wake *w;
  assert_int_equal(qraft_env_wake_new(env, on_wake, &b, &w), 0);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, waker, w), 0);
  assert_int_equal(qraft_env_run(env, qraft_env_now_ns(env) + 5000000000ull,
                                 fired_once, &b),
                   0);
  pthread_join(th, NULL);
  qraft_env_wake_free(w);
  qraft_env_free(env);
}

typedef struct fd_box {
  int fd;
  int calls;
  uint64_t total;
} fd_box;

static void on_fd(void *ud) {
  fd_box *b = ud;
  b->calls++;
  uint64_t v = 0;
  if (read(b->fd, &v, sizeof v) == (ssize_t)sizeof v) {
    b->total += v;
  }
}

static bool fd_total_is_3(void *ud) { return ((fd_box *)ud)->total == 3; }

static void *fd_writer(void *arg) {
  int fd = *(int *)arg;
  for (int i = 0; i < 3; i++) {
    uint64_t one = 1;
    ssize_t w = write(fd, &one, sizeof one);
    (void)w;
    usleep(2000);
  }
  return NULL;
}

/* The libuv env watches a descriptor: an eventfd written by another thread
 * (as a store's writer thread does) calls back on the loop until it is
 * read; after unwatching, nothing more. The simulator's env has none. */
static void uv_watches_a_descriptor(void **st) {
  (void)st;
  qraft_env *env;
  assert_int_equal(qraft_env_uv_new(&env), 0);
  fd_box b = {.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
  assert_true(b.fd >= 0);
  qraft_env_fd *w = NULL;
  assert_int_equal(qraft_env_fd_watch(env, b.fd, on_fd, &b, &w), 0);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, fd_writer, &b.fd), 0);
  assert_int_equal(qraft_env_run(env, qraft_env_now_ns(env) + 5000000000ull,
                                 fd_total_is_3, &b),
                   0);
  pthread_join(th, NULL);
  assert_true(b.calls >= 1 && b.calls <= 3);
  qraft_env_fd_unwatch(w);
  uint64_t one = 1;
  assert_int_equal(write(b.fd, &one, sizeof one), (ssize_t)sizeof one);
  int calls = b.calls;
  (void)qraft_env_run(env, qraft_env_now_ns(env) + 20000000ull, NULL, NULL);
  assert_int_equal(b.calls, calls);
  close(b.fd);
  qraft_env_free(env);

  qraft_simnet *net;
  assert_int_equal(qraft_simnet_new(1, &net), 0);
  assert_int_equal(qraft_simnet_env_new(net, &env), 0);
  assert_int_equal(qraft_env_fd_watch(env, 0, on_fd, &b, &w), -ENOTSUP);
  qraft_env_free(env);
  qraft_simnet_free(net);
}

/* Runs 2000 datagrams through a faulty network and returns a hash of what
 * arrived, in order. */
static uint64_t faulty_run(uint64_t seed, qraft_simnet_stats *stats) {
  qraft_simnet *net;
  qraft_env *ea, *eb;
  assert_int_equal(qraft_simnet_new(seed, &net), 0);
  assert_int_equal(qraft_simnet_env_new(net, &ea), 0);
  assert_int_equal(qraft_simnet_env_new(net, &eb), 0);
  qraft_simnet_faults f = {.drop_ppm = 50000, .dup_ppm = 20000,
                           .delay_min_ns = 10000, .delay_max_ns = 500000};
  qraft_simnet_set_faults(net, &f);
  struct sockaddr_in any = {.sin_family = AF_INET};
  box rb = {.env = eb};
  qraft_env_udp *r, *s;
  assert_int_equal(
      qraft_env_udp_bind(eb, (struct sockaddr *)&any, on_recv, &rb, &r), 0);
  assert_int_equal(
      qraft_env_udp_bind(ea, (struct sockaddr *)&any, on_recv, &rb, &s), 0);
  struct sockaddr_storage raddr;
  qraft_env_udp_local_addr(r, &raddr);
  for (int i = 0; i < 2000; i++) {
    uint8_t msg[1] = {(uint8_t)i};
    qraft_env_udp_send(s, (struct sockaddr *)&raddr, msg, 1);
  }
  qraft_env_run(ea, UINT64_MAX, NULL, NULL);
  qraft_simnet_stats_get(net, stats);
  assert_int_equal(stats->delivered, (uint64_t)rb.recvd);
  qraft_env_udp_close(r);
  qraft_env_udp_close(s);
  qraft_env_free(ea);
  qraft_env_free(eb);
  qraft_simnet_free(net);
  return rb.order_hash;
}

static void simnet_faults_fire_and_replay_from_the_seed(void **st) {
  (void)st;
  qraft_simnet_stats s1, s2, s3;
  uint64_t h1 = faulty_run(42, &s1);
  uint64_t h2 = faulty_run(42, &s2);
  uint64_t h3 = faulty_run(43, &s3);
  assert_true(s1.dropped > 50);
  assert_true(s1.duplicated > 10);
  assert_true(s1.reordered > 100);
  assert_int_equal(s1.sent, 2000);
  assert_int_equal(s1.delivered, s1.sent - s1.dropped + s1.duplicated);
  assert_int_equal(h1, h2);
  assert_memory_equal(&s1, &s2, sizeof s1);
  assert_int_not_equal(h1, h3);
}

/* ---- the simulated NATs ---- */

typedef struct nat_box {
  int recvd;
  struct sockaddr_in from;
} nat_box;

static void nat_recv(void *ud, const struct sockaddr *from, const uint8_t *data,
                     size_t len) {
  (void)data, (void)len;
  nat_box *b = ud;
  b->recvd++;
  memcpy(&b->from, from, sizeof b->from);
}

static qraft_env_udp *nat_sock(qraft_env *env, nat_box *b,
                               struct sockaddr_in *addr) {
  struct sockaddr_in any = {.sin_family = AF_INET};
  qraft_env_udp *u;
  assert_int_equal(
      qraft_env_udp_bind(env, (struct sockaddr *)&any, nat_recv, b, &u), 0);
  struct sockaddr_storage ss;
  assert_int_equal(qraft_env_udp_local_addr(u, &ss), 0);
  memcpy(addr, &ss, sizeof *addr);
  return u;
}

/* Sends one datagram and runs the network; returns how many arrived at `b`
 * since. */
static int nat_send(qraft_env *env, qraft_env_udp *u,
                    const struct sockaddr_in *to, nat_box *b) {
  int before = b->recvd;
  uint8_t x = 0x40;
  assert_int_equal(qraft_env_udp_send(u, (const struct sockaddr *)to, &x, 1),
                   0);
  qraft_env_run(env, qraft_env_now_ns(env) + 1000000, NULL, NULL);
  return b->recvd - before;
}

/* Each NAT kind maps and filters as RFC 4787 says: what two outside hosts
 * see of one inside socket, what gets in from a third address, and what a
 * flush and the mapping timeout do. */
static void simnet_nats_map_and_filter(void **st) {
  (void)st;
  const qraft_simnet_nat kinds[] = {QRAFT_SIMNET_NAT_FULL_CONE,
                                    QRAFT_SIMNET_NAT_RESTRICTED,
                                    QRAFT_SIMNET_NAT_SYMMETRIC};
  for (int k = 0; k < 3; k++) {
    qraft_simnet *net;
    qraft_env *a, *b, *c;
    assert_int_equal(qraft_simnet_new(7, &net), 0);
    assert_int_equal(qraft_simnet_env_new(net, &a), 0);
    assert_int_equal(qraft_simnet_env_new(net, &b), 0);
    assert_int_equal(qraft_simnet_env_new(net, &c), 0);
    qraft_simnet_host_set_nat(a, kinds[k], 30000000000ull);
    nat_box ab = {0}, bb = {0}, cb = {0}, cb2 = {0};
    struct sockaddr_in aa, ba, ca, ca2;
    qraft_env_udp *au = nat_sock(a, &ab, &aa);
    qraft_env_udp *bu = nat_sock(b, &bb, &ba);
    qraft_env_udp *cu = nat_sock(c, &cb, &ca);
    qraft_env_udp *cu2 = nat_sock(c, &cb2, &ca2);
    /* Inside to outside: from the public address 10.1.0.1. */
    assert_int_equal(nat_send(a, au, &ba, &bb), 1);
    assert_int_equal(nat_send(a, au, &ca, &cb), 1);
    assert_int_equal(ntohl(bb.from.sin_addr.s_addr), (10u << 24) | (1u << 16) | 1);
    bool eim = kinds[k] != QRAFT_SIMNET_NAT_SYMMETRIC;
    assert_int_equal(bb.from.sin_port == cb.from.sin_port, eim);
    /* Replies through the mapping get in; the private address is out of
     * reach. */
    struct sockaddr_in toward_b = bb.from;
    assert_int_equal(nat_send(b, bu, &toward_b, &ab), 1);
    assert_int_equal(nat_send(b, bu, &aa, &ab), 0);
    /* From an address the mapping never sent to: a full cone only. */
    assert_int_equal(nat_send(c, cu2, &toward_b, &ab),
                     kinds[k] == QRAFT_SIMNET_NAT_FULL_CONE);
    /* A flush: the old mapping is gone, a new one has a new port. */
    qraft_simnet_nat_flush(a);
    assert_int_equal(nat_send(b, bu, &toward_b, &ab), 0);
    assert_int_equal(nat_send(a, au, &ba, &bb), 1);
    assert_int_not_equal(bb.from.sin_port, toward_b.sin_port);
    /* Quiet past the timeout: closed. */
    toward_b = bb.from;
    qraft_env_run(a, qraft_env_now_ns(a) + 31000000000ull, NULL, NULL);
    assert_int_equal(nat_send(b, bu, &toward_b, &ab), 0);
    qraft_simnet_stats sst;
    qraft_simnet_stats_get(net, &sst);
    assert_true(sst.nat_dropped >= 3);
    qraft_env_udp_close(au);
    qraft_env_udp_close(bu);
    qraft_env_udp_close(cu);
    qraft_env_udp_close(cu2);
    qraft_env_free(a);
    qraft_env_free(b);
    qraft_env_free(c);
    qraft_simnet_free(net);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(uv_env_timers_and_datagrams),
      cmocka_unit_test(uv_steps_let_datagrams_in),
      cmocka_unit_test(sim_steps_let_datagrams_in),
      cmocka_unit_test(sim_env_timers_and_datagrams),
      cmocka_unit_test(uv_wake_from_another_thread),
      cmocka_unit_test(uv_watches_a_descriptor),
      cmocka_unit_test(uv_poll_reads_what_waits),
      cmocka_unit_test(sim_resumed_host_runs_timers_first_and_poll_reads),
      cmocka_unit_test(simnet_faults_fire_and_replay_from_the_seed),
      cmocka_unit_test(simnet_nats_map_and_filter),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

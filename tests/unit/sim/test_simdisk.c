/*
 * The simulated disk (qraft_simdisk) and simnet's fault controls: writes
 * become durable in order after their delay, a crash loses exactly the
 * writes not yet durable, a full disk fails the head write and those behind
 * it with -ENOSPC and takes them once it has room again, and a blocked
 * link, a down host and a pause do what they say (counted).
 */
#include "cmocka_all.h"

#include <qraft/sim.h>

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

typedef struct done_log {
  int order[16];
  int status[16];
  int n;
} done_log;

typedef struct wctx {
  done_log *log;
  int id;
} wctx;

static void write_cb(qraft_storage_write *w, int status) {
  wctx *c = w->data;
  c->log->order[c->log->n] = c->id;
  c->log->status[c->log->n] = status;
  c->log->n++;
}

static void fill(qraft_storage_write *w, qraft_entry *e, uint64_t index,
                 wctx *c) {
  memset(w, 0, sizeof *w);
  memset(e, 0, sizeof *e);
  e->index = index;
  e->term = 1;
  e->type = QRAFT_ENTRY_NORMAL;
  w->entries = e;
  w->entries_n = 1;
  w->cb = write_cb;
  w->data = c;
}

static void writes_are_durable_in_order_and_a_crash_loses_the_rest(void **st) {
  (void)st;
  qraft_simnet *net;
  qraft_env *env;
  assert_int_equal(qraft_simnet_new(7, &net), 0);
  assert_int_equal(qraft_simnet_env_new(net, &env), 0);
  qraft_simdisk *d;
  assert_int_equal(qraft_simdisk_new(env, 1000000, 5000000, &d), 0);
  qraft_storage *s;
  assert_int_equal(qraft_simdisk_open(d, &s), 0);
  done_log log = {0};
  qraft_storage_write w[4];
  qraft_entry e[4];
  wctx c[4];
  for (int i = 0; i < 3; i++) {
    c[i] = (wctx){.log = &log, .id = i};
    fill(&w[i], &e[i], (uint64_t)i + 1, &c[i]);
    assert_int_equal(qraft_storage_submit(s, &w[i], NULL), 0);
  }
  /* nothing is durable before its delay */
  qraft_storage_poll(s);
  assert_int_equal(log.n, 0);
  qraft_storage_state ss;
  assert_int_equal(qraft_storage_state_get(s, &ss, NULL), 0);
  assert_int_equal(ss.last_index, 0);
  /* after the longest delay all three are, in order */
  (void)qraft_env_run(env, qraft_env_now_ns(env) + 20000000, NULL, NULL);
  assert_int_equal(log.n, 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(log.order[i], i);
    assert_int_equal(log.status[i], 0);
  }
  /* a fourth write, then a crash before its delay: it is lost */
  c[3] = (wctx){.log = &log, .id = 3};
  fill(&w[3], &e[3], 4, &c[3]);
  assert_int_equal(qraft_storage_submit(s, &w[3], NULL), 0);
  qraft_simdisk_crash(d);
  assert_int_equal(log.n, 4);
  assert_int_equal(log.status[3], QRAFT_ESYNC);
  qraft_storage_close(s);
  assert_int_equal(qraft_simdisk_open(d, &s), 0);
  assert_int_equal(qraft_storage_state_get(s, &ss, NULL), 0);
  assert_int_equal(ss.last_index, 3); /* the durable part survived */
  qraft_simdisk_stats stats;
  qraft_simdisk_stats_get(d, &stats);
  assert_int_equal(stats.writes_lost, 1);
  assert_int_equal(stats.writes_durable, 3);
  assert_null(qraft_simdisk_violation(d));
  qraft_storage_close(s);
  qraft_simdisk_free(d);
  qraft_env_free(env);
  qraft_simnet_free(net);
}

static void a_full_disk_fails_writes_in_order_until_it_has_room(void **st) {
  (void)st;
  qraft_simnet *net;
  qraft_env *env;
  assert_int_equal(qraft_simnet_new(11, &net), 0);
  assert_int_equal(qraft_simnet_env_new(net, &env), 0);
  qraft_simdisk *d;
  assert_int_equal(qraft_simdisk_new(env, 1000000, 5000000, &d), 0);
  qraft_storage *s;
  assert_int_equal(qraft_simdisk_open(d, &s), 0);
  done_log log = {0};
  qraft_storage_write w[3];
  qraft_entry e[3];
  wctx c[3];
  for (int i = 0; i < 3; i++) {
    c[i] = (wctx){.log = &log, .id = i};
  }
  fill(&w[0], &e[0], 1, &c[0]);
  assert_int_equal(qraft_storage_submit(s, &w[0], NULL), 0);
  (void)qraft_env_run(env, qraft_env_now_ns(env) + 20000000, NULL, NULL);
  assert_int_equal(log.n, 1);
  assert_int_equal(log.status[0], 0);
  /* a snapshot writer opened while there was room */
  qraft_snapshot_meta meta = {.index = 1, .term = 1};
  qraft_snapshot_writer *sw;
  assert_int_equal(qraft_storage_snapshot_writer_open(s, &meta, &sw, NULL), 0);
  assert_int_equal(qraft_snapshot_writer_write(sw, "abc", 3, NULL), 0);

  qraft_simdisk_set_full(d, true);
  assert_true(qraft_simdisk_is_full(d));
  qraft_snapshot_writer *sw2 = NULL;
  assert_int_equal(qraft_storage_snapshot_writer_open(s, &meta, &sw2, NULL),
                   -ENOSPC);
  assert_int_equal(qraft_snapshot_writer_write(sw, "d", 1, NULL), -ENOSPC);
  /* an append, then the snapshot: both fail, in order; nothing changed */
  fill(&w[1], &e[1], 2, &c[1]);
  memset(&w[2], 0, sizeof w[2]);
  w[2].snapshot = sw;
  w[2].cb = write_cb;
  w[2].data = &c[2];
  assert_int_equal(qraft_storage_submit(s, &w[1], NULL), 0);
  assert_int_equal(qraft_storage_submit(s, &w[2], NULL), 0);
  (void)qraft_env_run(env, qraft_env_now_ns(env) + 20000000, NULL, NULL);
  assert_int_equal(log.n, 3);
  assert_int_equal(log.order[1], 1);
  assert_int_equal(log.status[1], -ENOSPC);
  assert_int_equal(log.order[2], 2);
  assert_int_equal(log.status[2], -ENOSPC);
  assert_ptr_equal(w[2].snapshot, sw); /* not used up: the caller's */
  qraft_storage_state ss;
  assert_int_equal(qraft_storage_state_get(s, &ss, NULL), 0);
  assert_int_equal(ss.last_index, 1);
  assert_int_equal(ss.snapshot.index, 0);

  /* room again: the same writes, submitted again in order, land */
  qraft_simdisk_set_full(d, false);
  assert_int_equal(qraft_storage_submit(s, &w[1], NULL), 0);
  assert_int_equal(qraft_storage_submit(s, &w[2], NULL), 0);
  (void)qraft_env_run(env, qraft_env_now_ns(env) + 20000000, NULL, NULL);
  assert_int_equal(log.n, 5);
  assert_int_equal(log.order[3], 1);
  assert_int_equal(log.status[3], 0);
  assert_int_equal(log.order[4], 2);
  assert_int_equal(log.status[4], 0);
  assert_null(w[2].snapshot); /* used up */
  assert_int_equal(qraft_storage_state_get(s, &ss, NULL), 0);
  assert_int_equal(ss.last_index, 2);
  assert_int_equal(ss.snapshot.index, 1);
  qraft_snapshot_reader *r;
  assert_int_equal(qraft_storage_snapshot_reader_open(s, &r, NULL), 0);
  assert_int_equal(r->bytes, 3);
  qraft_snapshot_reader_close(r);

  qraft_simdisk_stats stats;
  qraft_simdisk_stats_get(d, &stats);
  assert_int_equal(stats.fulls, 1);
  assert_int_equal(stats.writes_nospace, 2);
  assert_int_equal(stats.snapshot_nospace, 2);
  assert_int_equal(stats.writes_durable, 3);
  assert_null(qraft_simdisk_violation(d));
  qraft_storage_close(s);
  qraft_simdisk_free(d);
  qraft_env_free(env);
  qraft_simnet_free(net);
}

typedef struct rx {
  int n;
} rx;

static void on_recv(void *ud, const struct sockaddr *from, const uint8_t *data,
                    size_t len) {
  (void)from;
  (void)data;
  (void)len;
  ((rx *)ud)->n++;
}

static void blocked_links_down_hosts_and_pauses(void **st) {
  (void)st;
  qraft_simnet *net;
  qraft_env *a, *b;
  assert_int_equal(qraft_simnet_new(9, &net), 0);
  assert_int_equal(qraft_simnet_env_new(net, &a), 0);
  assert_int_equal(qraft_simnet_env_new(net, &b), 0);
  struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = htons(9)};
  rx ra = {0}, rb = {0};
  qraft_env_udp *ua, *ub;
  assert_int_equal(qraft_env_udp_bind(a, (struct sockaddr *)&any, on_recv, &ra,
                                      &ua), 0);
  assert_int_equal(qraft_env_udp_bind(b, (struct sockaddr *)&any, on_recv, &rb,
                                      &ub), 0);
  struct sockaddr_storage to_b;
  assert_int_equal(qraft_env_udp_local_addr(ub, &to_b), 0);
  uint64_t t = qraft_env_now_ns(a);
  /* blocked one way */
  qraft_simnet_link_block(a, b, true);
  assert_int_equal(qraft_env_udp_send(ua, (struct sockaddr *)&to_b, "x", 1), 0);
  (void)qraft_env_run(a, t + 10000000, NULL, NULL);
  assert_int_equal(rb.n, 0);
  qraft_simnet_heal(net);
  assert_int_equal(qraft_env_udp_send(ua, (struct sockaddr *)&to_b, "x", 1), 0);
  (void)qraft_env_run(a, t + 20000000, NULL, NULL);
  assert_int_equal(rb.n, 1);
  /* a paused host receives only when the pause ends */
  uint64_t now = qraft_simnet_now_ns(net);
  qraft_simnet_host_pause(b, now + 50000000);
  assert_int_equal(qraft_env_udp_send(ua, (struct sockaddr *)&to_b, "x", 1), 0);
  (void)qraft_env_run(a, now + 40000000, NULL, NULL);
  assert_int_equal(rb.n, 1);
  (void)qraft_env_run(a, now + 60000000, NULL, NULL);
  assert_int_equal(rb.n, 2);
  /* a down host receives nothing */
  qraft_simnet_host_set_down(b, true);
  assert_int_equal(qraft_env_udp_send(ua, (struct sockaddr *)&to_b, "x", 1), 0);
  (void)qraft_env_run(a, now + 80000000, NULL, NULL);
  assert_int_equal(rb.n, 2);
  qraft_simnet_stats stats;
  qraft_simnet_stats_get(net, &stats);
  assert_int_equal(stats.blocked, 2);
  /* a skewed clock runs faster, and its timers follow it */
  qraft_simnet_host_set_clock(b, 0, 100000); /* 10% fast */
  uint64_t na = qraft_env_now_ns(a), nb = qraft_env_now_ns(b);
  (void)qraft_env_run(a, na + 1000000000, NULL, NULL);
  uint64_t da = qraft_env_now_ns(a) - na, db = qraft_env_now_ns(b) - nb;
  assert_true(db > da + da / 20);
  qraft_env_udp_close(ua);
  qraft_env_udp_close(ub);
  qraft_env_free(a);
  qraft_env_free(b);
  qraft_simnet_free(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(writes_are_durable_in_order_and_a_crash_loses_the_rest),
      cmocka_unit_test(a_full_disk_fails_writes_in_order_until_it_has_room),
      cmocka_unit_test(blocked_links_down_hosts_and_pauses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The relay server and the path layer: peers that know each other by id
 * only talk through a relay; a direct path is taken when one answers, lost
 * and regained under a partition without the connection noticing; the
 * relay's access control, duplicate ids, unknown ids, restarts. Over the
 * in-memory network (seeded) and over loopback. */
#include "cmocka_all.h"

#include <qraft/relay.h>
#include <qraft/transport.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALPN "test/0"
#define SEC 1000000000ull
#define N 5

typedef struct node {
  qraft_endpoint *ep;
  qraft_secret_key key;
  int ups;
  qraft_conn *conn;
  uint64_t rx_bytes;
  bool echo;
  uint16_t port;
} node;

typedef struct world {
  bool sim;
  qraft_simnet *net;
  qraft_env *env[N + 1];
  node nodes[N]; /* 0 is the relay */
  qraft_relay_server *relay;
  qraft_relay_addr relay_addr;
  bool allow[N]; /* the relay's allow-list, when `allowlist` */
  bool allowlist;
  bool relay_only; /* the nodes' endpoint config */
} world;

static void on_up(void *ud, qraft_conn *conn, bool dialed) {
  (void)dialed;
  node *n = ud;
  n->ups++;
  n->conn = conn;
}

static void on_down(void *ud, qraft_conn *conn, const qraft_close_info *why) {
  (void)why;
  node *n = ud;
  if (n->conn == conn) {
    n->conn = NULL;
  }
}

static void on_recv(void *ud, qraft_conn *conn, int64_t sid,
                    const uint8_t *data, size_t len, bool fin) {
  node *n = ud;
  n->rx_bytes += len;
  if (n->echo && len > 0) {
    assert_int_equal(
        qraft_conn_stream_send(conn, sid, qraft_slice_of(NULL, data, len), fin),
        0);
  }
}

static const qraft_protocol_ops ops = {
    .conn_up_cb = on_up, .conn_down_cb = on_down, .stream_recv_cb = on_recv};

static qraft_env *env_of(world *w, int i) {
  return w->sim ? w->env[i] : w->env[0];
}

static bool relay_authorize(void *ud, const qraft_node_id *peer,
                            const char *alpn) {
  world *w = ud;
  assert_string_equal(alpn, QRAFT_RELAY_ALPN);
  if (!w->allowlist) {
    return true;
  }
  for (int i = 1; i < N; i++) {
    if (w->allow[i] && qraft_node_id_eq(peer, &w->nodes[i].key.public_key)) {
      return true;
    }
  }
  return false;
}

static void world_init(world *w, bool sim, uint64_t seed) {
  memset(w, 0, sizeof *w);
  w->sim = sim;
  printf("# seed %llu (replay: this test with QRAFT_TEST_SEED=%llu)\n",
         (unsigned long long)seed, (unsigned long long)seed);
  if (sim) {
    assert_int_equal(qraft_simnet_new(seed, &w->net), 0);
    for (int i = 0; i < N; i++) {
      assert_int_equal(qraft_simnet_env_new(w->net, &w->env[i]), 0);
    }
  } else {
    assert_int_equal(qraft_env_uv_new(&w->env[0]), 0);
  }
  for (int i = 0; i < N; i++) {
    uint8_t s[QRAFT_KEY_BYTES];
    for (int j = 0; j < QRAFT_KEY_BYTES; j++) {
      s[j] = (uint8_t)(seed * 13 + (uint64_t)i * 41 + (uint64_t)j);
    }
    qraft_secret_key_from_seed(&w->nodes[i].key, s);
  }
}

static void bind_loopback(struct sockaddr_storage *ss, uint16_t port) {
  struct sockaddr_in *a = (struct sockaddr_in *)ss;
  memset(ss, 0, sizeof *ss);
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a->sin_port = htons(port);
}

static void relay_start(world *w) {
  node *n = &w->nodes[0];
  qraft_endpoint_config cfg = {.env = env_of(w, 0), .key = &n->key,
                               .bind_n = 1, .authorize_cb = relay_authorize,
                               .authorize_ud = w};
  bind_loopback(&cfg.bind[0], n->port);
  assert_int_equal(qraft_endpoint_new(&cfg, &n->ep, NULL), 0);
  qraft_relay_server_config rc = {.ep = n->ep, .ping_interval_ms = 2000,
                                  .ping_timeout_ms = 1000};
  assert_int_equal(qraft_relay_server_new(&rc, &w->relay, NULL), 0);
  qraft_node_addr a;
  qraft_endpoint_addr(n->ep, &a);
  w->relay_addr.id = n->key.public_key;
  w->relay_addr.addr = a.addrs[0];
  n->port = ntohs(((struct sockaddr_in *)&a.addrs[0])->sin_port);
}

static void relay_stop(world *w) {
  qraft_endpoint_shutdown(w->nodes[0].ep);
  qraft_relay_server_free(w->relay);
  w->relay = NULL;
  qraft_endpoint_free(w->nodes[0].ep);
  w->nodes[0].ep = NULL;
}

/* Node i with the relay as its home relay. */
static void node_start(world *w, int i) {
  node *n = &w->nodes[i];
  qraft_endpoint_config cfg = {.env = env_of(w, i), .key = &n->key,
                               .bind_n = 1, .relays_n = 1,
                               .relay_only = w->relay_only};
  cfg.relays[0] = w->relay_addr;
  bind_loopback(&cfg.bind[0], n->port);
  assert_int_equal(qraft_endpoint_new(&cfg, &n->ep, NULL), 0);
  assert_int_equal(qraft_endpoint_register(n->ep, ALPN, &ops, n), 0);
  qraft_node_addr a;
  qraft_endpoint_addr(n->ep, &a);
  n->port = ntohs(((struct sockaddr_in *)&a.addrs[0])->sin_port);
}

static void world_close(world *w) {
  for (int i = N - 1; i >= 0; i--) {
    if (i == 0 && w->relay != NULL) {
      relay_stop(w);
    } else if (w->nodes[i].ep != NULL) {
      qraft_endpoint_free(w->nodes[i].ep);
    }
  }
  if (w->sim) {
    qraft_env_run(w->env[0], qraft_env_now_ns(w->env[0]) + SEC, NULL, NULL);
    for (int i = 0; i < N; i++) {
      qraft_env_free(w->env[i]);
    }
    qraft_simnet_free(w->net);
  } else {
    qraft_env_free(w->env[0]);
  }
}

/* Node `from` dials node `to` by id only, or with its direct address. */
static void dial(world *w, int from, int to, bool direct) {
  qraft_node_addr a;
  memset(&a, 0, sizeof a);
  if (direct) {
    qraft_endpoint_addr(w->nodes[to].ep, &a);
  }
  a.id = w->nodes[to].key.public_key;
  assert_int_equal(qraft_endpoint_dial(w->nodes[from].ep, &a, ALPN), 0);
}

typedef struct waiter {
  world *w;
  bool (*pred)(world *w, void *arg);
  void *arg;
} waiter;

static bool waiter_done(void *ud) {
  waiter *wt = ud;
  return wt->pred(wt->w, wt->arg);
}

static bool run_until(world *w, bool (*pred)(world *, void *), void *arg,
                      uint64_t seconds) {
  waiter wt = {w, pred, arg};
  qraft_env *env = env_of(w, 0);
  return qraft_env_run(env, qraft_env_now_ns(env) + seconds * SEC, waiter_done,
                       &wt) == 0;
}

static void run_for_ms(world *w, uint64_t ms) {
  qraft_env *env = env_of(w, 0);
  qraft_env_run(env, qraft_env_now_ns(env) + ms * 1000000, NULL, NULL);
}

static bool pair_up(world *w, void *arg) {
  int *p = arg;
  return w->nodes[p[0]].conn != NULL && w->nodes[p[1]].conn != NULL;
}

static bool home_up(world *w, void *arg) {
  int i = *(int *)arg;
  qraft_relay_status st;
  return qraft_endpoint_relays(w->nodes[i].ep, &st, 1) == 1 && st.up &&
         st.observed_set;
}

/* Starts nodes 1 and 2 (2 echoes), waits for their home relay, and has
 * node 1 dial node 2, by id or at its address, until both are up. */
static void pair_start(world *w, bool direct) {
  node_start(w, 1);
  node_start(w, 2);
  w->nodes[2].echo = true;
  int one = 1, two = 2;
  assert_true(run_until(w, home_up, &one, 10));
  assert_true(run_until(w, home_up, &two, 10));
  dial(w, 1, 2, direct);
  int pair[2] = {1, 2};
  assert_true(run_until(w, pair_up, pair, 10));
}

static qraft_peer_metrics peer_metrics(world *w, int from, int to) {
  qraft_peer_metrics pm;
  assert_int_equal(qraft_endpoint_peer_metrics(w->nodes[from].ep,
                                               &w->nodes[to].key.public_key,
                                               ALPN, &pm),
                   0);
  return pm;
}

/* Sends `bytes` from `from` to its echoing peer and waits for them back. */
typedef struct echo_wait {
  int node;
  uint64_t want;
} echo_wait;

static bool echoed(world *w, void *arg) {
  echo_wait *e = arg;
  return w->nodes[e->node].rx_bytes >= e->want;
}

static void echo_through(world *w, int from, size_t bytes, uint64_t seconds) {
  node *n = &w->nodes[from];
  assert_non_null(n->conn);
  int64_t sid;
  assert_int_equal(qraft_conn_stream_open(n->conn, true, &sid), 0);
  uint8_t *buf = malloc(bytes);
  for (size_t i = 0; i < bytes; i++) {
    buf[i] = (uint8_t)(i * 7);
  }
  assert_int_equal(qraft_conn_stream_send(n->conn, sid,
                                          qraft_slice_of(NULL, buf, bytes),
                                          true),
                   0);
  free(buf);
  echo_wait e = {from, n->rx_bytes + bytes};
  assert_true(run_until(w, echoed, &e, seconds));
}

static uint64_t test_seed(uint64_t dflt) {
  const char *s = getenv("QRAFT_TEST_SEED");
  return s != NULL ? strtoull(s, NULL, 10) : dflt;
}

/* ---- scenarios ---- */

static bool path_is(world *w, void *arg) {
  int kind = *(int *)arg;
  return peer_metrics(w, 1, 2).path == kind &&
         peer_metrics(w, 2, 1).path == kind;
}

static uint16_t port_of(const struct sockaddr_storage *ss) {
  return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* Known by id only, the pair meets through the relay. Each sends its
 * candidates (the address the relay sees it at) through the relay in a
 * CALL_ME_MAYBE, pings the other's, and on the PONG goes direct: the same
 * connection, nothing more through the relay. */
static void ids_only_meet_through_the_relay_then_go_direct(bool sim) {
  world w;
  world_init(&w, sim, test_seed(1));
  relay_start(&w);
  pair_start(&w, false);
  /* The relay told each its address: the port it bound. */
  qraft_relay_status st;
  assert_int_equal(qraft_endpoint_relays(w.nodes[1].ep, &st, 1), 1);
  assert_true(st.home);
  assert_int_equal(port_of(&st.observed), w.nodes[1].port);
  qraft_conn *c1 = w.nodes[1].conn, *c2 = w.nodes[2].conn;
  echo_through(&w, 1, 20000, 20);
  int direct = QRAFT_PATH_DIRECT;
  assert_true(run_until(&w, path_is, &direct, 10));
  qraft_peer_metrics a = peer_metrics(&w, 1, 2), b = peer_metrics(&w, 2, 1);
  printf("# direct after %.1f ms (1 to 2), %.1f ms (2 to 1)\n",
         (double)a.path_first_direct_ns / 1e6,
         (double)b.path_first_direct_ns / 1e6);
  /* The handshake went through the relay; the candidates too. */
  assert_true(a.path_relay_bytes_out > 0);
  assert_true(a.path_call_me_maybe_out >= 1);
  assert_true(b.path_call_me_maybe_in >= 1);
  assert_true(a.path_pongs_in >= 1 && b.path_pongs_in >= 1);
  assert_true(a.path_pings_in >= 1 && b.path_pings_in >= 1);
  assert_true(a.path_first_direct_ns > 0 && b.path_first_direct_ns > 0);
  assert_int_equal(port_of(&a.path_direct_addr), w.nodes[2].port);
  assert_int_equal(port_of(&b.path_direct_addr), w.nodes[1].port);
  uint64_t relayed = a.path_relay_bytes_out;
  echo_through(&w, 1, 100000, 10);
  a = peer_metrics(&w, 1, 2);
  assert_int_equal(a.path_relay_bytes_out, relayed);
  assert_true(a.path_direct_bytes_out > 100000);
  assert_ptr_equal(w.nodes[1].conn, c1);
  assert_ptr_equal(w.nodes[2].conn, c2);
  assert_int_equal(w.nodes[1].ups, 1);
  qraft_endpoint_metrics m;
  qraft_endpoint_metrics_get(w.nodes[1].ep, &m);
  assert_int_equal(m.probes_bad, 0);
  world_close(&w);
}

static void sim_ids_only(void **st) {
  (void)st;
  ids_only_meet_through_the_relay_then_go_direct(true);
}

static void uv_ids_only(void **st) {
  (void)st;
  ids_only_meet_through_the_relay_then_go_direct(false);
}

/* No direct path between them (a firewall drops it both ways): the pair
 * talks through the relay only; its pings are never answered. */
static void sim_ids_only_no_direct_path(void **st) {
  (void)st;
  world w;
  world_init(&w, true, test_seed(11));
  relay_start(&w);
  qraft_simnet_link_block(w.env[1], w.env[2], true);
  qraft_simnet_link_block(w.env[2], w.env[1], true);
  pair_start(&w, false);
  echo_through(&w, 1, 200000, 20);
  run_for_ms(&w, 6000); /* a second round of pings */
  echo_through(&w, 1, 2000, 20);
  qraft_peer_metrics pm = peer_metrics(&w, 1, 2);
  assert_int_equal(pm.path, QRAFT_PATH_RELAY);
  assert_true(pm.path_relay_bytes_out > 200000);
  assert_true(pm.path_relay_bytes_in > 200000);
  assert_int_equal(pm.path_direct_bytes_out, 0);
  assert_true(pm.path_relay_rtt_ns > 0);
  assert_true(pm.path_pings_out >= 2);
  assert_int_equal(pm.path_pongs_in, 0);
  assert_int_equal(pm.path_first_direct_ns, 0);
  /* The accepting side answers through the relay it was reached by. */
  pm = peer_metrics(&w, 2, 1);
  assert_int_equal(pm.path, QRAFT_PATH_RELAY);
  struct sockaddr_storage ra;
  assert_false(qraft_conn_remote_addr(w.nodes[2].conn, &ra));
  qraft_relay_server_metrics rm;
  qraft_relay_server_metrics_get(w.relay, &rm);
  assert_int_equal(rm.clients, 2);
  assert_true(rm.datagrams_out > 100);
  assert_int_equal(rm.drops_no_peer, 0);
  world_close(&w);
}

/* What an attacker on the wire saw: one QUIC packet from node 2 to 1. */
typedef struct spy {
  struct sockaddr_in from, to;
  uint8_t pkt[1500];
  size_t len;
  bool armed, have;
} spy;

static void spy_tap(void *ud, const struct sockaddr *from,
                    const struct sockaddr *to, const uint8_t *data,
                    size_t len) {
  spy *s = ud;
  if (!s->armed || s->have || len < 100 || len > sizeof s->pkt ||
      (data[0] & 0xc0) != 0x40 ||
      memcmp(from, &s->from, sizeof s->from) != 0 ||
      memcmp(to, &s->to, sizeof s->to) != 0) {
    return;
  }
  memcpy(s->pkt, data, len);
  s->len = len;
  s->have = true;
}

static void spy_recv(void *ud, const struct sockaddr *from, const uint8_t *data,
                     size_t len) {
  (void)ud, (void)from, (void)data, (void)len;
}

/* A QUIC packet of the peer copied and sent from another address (the
 * attacker's) decrypts, but comes from an address no authenticated probe
 * vouched for: it is dropped, and the direct path stays where it was. */
static void sim_copied_packet_redirects_nothing(void **st) {
  (void)st;
  world w;
  world_init(&w, true, test_seed(12));
  relay_start(&w);
  pair_start(&w, false);
  echo_through(&w, 1, 20000, 20);
  int direct = QRAFT_PATH_DIRECT;
  assert_true(run_until(&w, path_is, &direct, 10));
  qraft_peer_metrics before = peer_metrics(&w, 1, 2);
  spy s;
  memset(&s, 0, sizeof s);
  memcpy(&s.from, &before.path_direct_addr, sizeof s.from);
  qraft_simnet_set_tap(w.net, spy_tap, &s);
  /* node 1's address as the network names it: host 1's */
  qraft_relay_status rs;
  assert_int_equal(qraft_endpoint_relays(w.nodes[1].ep, &rs, 1), 1);
  memcpy(&s.to, &rs.observed, sizeof s.to);
  s.armed = true;
  echo_through(&w, 1, 20000, 10);
  qraft_simnet_set_tap(w.net, NULL, NULL);
  assert_true(s.have);
  /* The attacker, on host 3, sends the copy (and again, later) to node 1. */
  qraft_env_udp *evil;
  struct sockaddr_storage any;
  bind_loopback(&any, 0);
  assert_int_equal(qraft_env_udp_bind(w.env[3], (struct sockaddr *)&any,
                                      spy_recv, NULL, &evil),
                   0);
  for (int i = 0; i < 3; i++) {
    qraft_env_udp_send(evil, (const struct sockaddr *)&s.to, s.pkt, s.len);
    run_for_ms(&w, 1500);
  }
  qraft_endpoint_metrics m;
  qraft_endpoint_metrics_get(w.nodes[1].ep, &m);
  assert_true(m.packets_unprobed >= 3);
  echo_through(&w, 1, 20000, 10);
  qraft_peer_metrics after = peer_metrics(&w, 1, 2);
  assert_memory_equal(&after.path_direct_addr, &before.path_direct_addr,
                      sizeof(struct sockaddr_in));
  assert_int_equal(after.path, QRAFT_PATH_DIRECT);
  qraft_env_udp_close(evil);
  world_close(&w);
}

/* A direct path is taken once it answers; blocked, the pair falls back to
 * the relay with the same connection; healed, it goes direct again. */
static void sim_direct_path_falls_back_and_upgrades(void **st) {
  (void)st;
  world w;
  world_init(&w, true, test_seed(2));
  relay_start(&w);
  pair_start(&w, true);
  echo_through(&w, 1, 10000, 10);
  int direct = QRAFT_PATH_DIRECT;
  assert_true(run_until(&w, path_is, &direct, 10));
  qraft_conn *c1 = w.nodes[1].conn, *c2 = w.nodes[2].conn;
  uint64_t relayed = peer_metrics(&w, 1, 2).path_relay_bytes_out;
  echo_through(&w, 1, 100000, 10);
  /* Direct only now: nothing more through the relay. */
  assert_int_equal(peer_metrics(&w, 1, 2).path_relay_bytes_out, relayed);

  qraft_simnet_link_block(w.env[1], w.env[2], true);
  qraft_simnet_link_block(w.env[2], w.env[1], true);
  echo_through(&w, 1, 100000, 30);
  int relay = QRAFT_PATH_RELAY;
  assert_true(run_until(&w, path_is, &relay, 20));
  qraft_peer_metrics pm = peer_metrics(&w, 1, 2);
  assert_true(pm.path_fallbacks >= 1);
  assert_true(pm.path_relay_bytes_out > relayed + 100000);
  /* The same connection carried on. */
  assert_ptr_equal(w.nodes[1].conn, c1);
  assert_ptr_equal(w.nodes[2].conn, c2);
  assert_int_equal(w.nodes[1].ups, 1);

  qraft_simnet_heal(w.net);
  uint64_t up_before = pm.path_upgrades;
  /* Traffic keeps the rounds of pings coming. */
  bool again = false;
  for (int i = 0; i < 20 && !again; i++) {
    echo_through(&w, 1, 2000, 10);
    again = run_until(&w, path_is, &direct, 1);
  }
  assert_true(again);
  assert_true(peer_metrics(&w, 1, 2).path_upgrades > up_before);
  assert_ptr_equal(w.nodes[1].conn, c1);
  world_close(&w);
}

static bool relay_refused(world *w, void *arg) {
  int i = *(int *)arg;
  qraft_endpoint_metrics m;
  qraft_endpoint_metrics_get(w->nodes[i].ep, &m);
  return m.handshake_failures[QRAFT_HS_FAIL_UNAUTHORIZED] > 0;
}

/* A client the relay does not allow is refused at the handshake; the
 * others' traffic goes on. */
static void sim_relay_allow_list(void **st) {
  (void)st;
  world w;
  world_init(&w, true, test_seed(3));
  w.allowlist = true;
  w.allow[1] = w.allow[2] = true;
  relay_start(&w);
  node_start(&w, 1);
  node_start(&w, 2);
  node_start(&w, 3);
  w.nodes[2].echo = true;
  int three = 3;
  assert_true(run_until(&w, relay_refused, &three, 10));
  qraft_relay_status rs;
  assert_int_equal(qraft_endpoint_relays(w.nodes[3].ep, &rs, 1), 1);
  assert_false(rs.up);
  dial(&w, 1, 2, false);
  dial(&w, 3, 2, false);
  int pair[2] = {1, 2};
  assert_true(run_until(&w, pair_up, pair, 10));
  echo_through(&w, 1, 50000, 10);
  run_for_ms(&w, 3000);
  assert_null(w.nodes[3].conn);
  qraft_relay_server_metrics rm;
  qraft_relay_server_metrics_get(w.relay, &rm);
  assert_int_equal(rm.clients, 2);
  world_close(&w);
}

static bool told_elsewhere(world *w, void *arg) {
  int i = *(int *)arg;
  qraft_relay_status rs;
  return qraft_endpoint_relays(w->nodes[i].ep, &rs, 1) == 1 && rs.elsewhere;
}

/* Two endpoints with one key: the newest gets the id's datagrams, the older
 * is told and kept, not flapped. */
static void sim_duplicate_id_is_told_not_flapped(void **st) {
  (void)st;
  world w;
  world_init(&w, true, test_seed(4));
  w.nodes[3].key = w.nodes[2].key;
  relay_start(&w);
  node_start(&w, 2);
  w.nodes[3].echo = true;
  int two = 2, three = 3;
  assert_true(run_until(&w, home_up, &two, 10));
  node_start(&w, 3);
  assert_true(run_until(&w, told_elsewhere, &two, 10));
  assert_false(told_elsewhere(&w, &three));
  node_start(&w, 1);
  dial(&w, 1, 2, false);
  int pair[2] = {1, 3};
  assert_true(run_until(&w, pair_up, pair, 10));
  echo_through(&w, 1, 20000, 10);
  run_for_ms(&w, 5000);
  assert_null(w.nodes[2].conn); /* the older got nothing */
  qraft_relay_server_metrics rm;
  qraft_relay_server_metrics_get(w.relay, &rm);
  assert_int_equal(rm.duplicate_ids, 1);
  assert_int_equal(rm.clients, 3);
  assert_int_equal(rm.clients_accepted, 3);
  /* The newest goes: the older is served again. */
  qraft_endpoint_free(w.nodes[3].ep);
  w.nodes[3].ep = NULL;
  qraft_relay_status rs;
  for (int i = 0; i < 100; i++) {
    run_for_ms(&w, 100);
    qraft_endpoint_relays(w.nodes[2].ep, &rs, 1);
    if (!rs.elsewhere) {
      break;
    }
  }
  assert_false(rs.elsewhere);
  world_close(&w);
}

static bool gone_told(world *w, void *arg) {
  (void)arg;
  qraft_relay_status rs;
  return qraft_endpoint_relays(w->nodes[1].ep, &rs, 1) == 1 &&
         rs.peer_gone > 0;
}

/* Dialing an id nobody serves: the relay says so, nothing comes up, nothing
 * breaks. */
static void sim_unknown_id(void **st) {
  (void)st;
  world w;
  world_init(&w, true, test_seed(5));
  relay_start(&w);
  node_start(&w, 1);
  qraft_node_addr a;
  memset(&a, 0, sizeof a);
  a.id = w.nodes[4].key.public_key; /* never started */
  assert_int_equal(qraft_endpoint_dial(w.nodes[1].ep, &a, ALPN), 0);
  assert_true(run_until(&w, gone_told, NULL, 10));
  run_for_ms(&w, 3000);
  assert_null(w.nodes[1].conn);
  qraft_relay_server_metrics rm;
  qraft_relay_server_metrics_get(w.relay, &rm);
  assert_true(rm.drops_no_peer > 0);
  world_close(&w);
}

static bool both_relays_up(world *w, void *arg) {
  (void)arg;
  int one = 1, two = 2;
  return home_up(w, &one) && home_up(w, &two);
}

/* The relay restarts at the same address: clients reconnect and the pair
 * talks again. */
static void sim_relay_restart(void **st) {
  (void)st;
  world w;
  world_init(&w, true, test_seed(6));
  relay_start(&w);
  node_start(&w, 1);
  node_start(&w, 2);
  w.nodes[2].echo = true;
  dial(&w, 1, 2, false);
  int pair[2] = {1, 2};
  assert_true(run_until(&w, pair_up, pair, 10));
  echo_through(&w, 1, 20000, 10);
  qraft_relay_server_restarting(w.relay, 100, 10000);
  run_for_ms(&w, 50);
  relay_stop(&w);
  run_for_ms(&w, 500);
  relay_start(&w);
  assert_true(run_until(&w, both_relays_up, NULL, 20));
  assert_true(run_until(&w, pair_up, pair, 30));
  echo_through(&w, 1, 20000, 30);
  world_close(&w);
}

/* A client that sends what only a relay sends is closed. */
static void sim_client_breaking_the_protocol_is_closed(void **st) {
  (void)st;
  world w;
  world_init(&w, true, test_seed(7));
  relay_start(&w);
  node *n = &w.nodes[1];
  qraft_endpoint_config cfg = {.env = w.env[1], .key = &n->key, .bind_n = 1};
  bind_loopback(&cfg.bind[0], 0);
  assert_int_equal(qraft_endpoint_new(&cfg, &n->ep, NULL), 0);
  /* A bare client: it speaks the relay ALPN itself. */
  assert_int_equal(qraft_endpoint_register(n->ep, QRAFT_RELAY_ALPN, &ops, n),
                   0);
  qraft_node_addr a;
  memset(&a, 0, sizeof a);
  a.id = w.relay_addr.id;
  a.addrs_n = 1;
  a.addrs[0] = w.relay_addr.addr;
  assert_int_equal(qraft_endpoint_dial(n->ep, &a, QRAFT_RELAY_ALPN), 0);
  int pair[2] = {1, 1};
  assert_true(run_until(&w, pair_up, pair, 10));
  int64_t sid;
  assert_int_equal(qraft_conn_stream_open(n->conn, true, &sid), 0);
  qraft_relay_frame f = {.type = QRAFT_RELAY_PEER_GONE,
                         .peer = n->key.public_key};
  uint8_t buf[64];
  size_t len = qraft_relay_frame_encode(&f, buf);
  assert_int_equal(qraft_conn_stream_send(n->conn, sid,
                                          qraft_slice_of(NULL, buf, len),
                                          false),
                   0);
  run_for_ms(&w, 1000);
  qraft_relay_server_metrics rm;
  qraft_relay_server_metrics_get(w.relay, &rm);
  assert_int_equal(rm.protocol_errors, 1);
  world_close(&w);
}

static bool relay_keep_only_1(void *ud, const qraft_node_id *id) {
  world *w = ud;
  return qraft_node_id_eq(id, &w->nodes[1].key.public_key);
}

static bool relay_clients_1(world *w, void *arg) {
  (void)arg;
  qraft_relay_server_metrics m;
  qraft_relay_server_metrics_get(w->relay, &m);
  return m.clients == 1;
}

/* A list that changes: the clients it now refuses are closed. */
static void sim_close_if_closes_the_refused(void **st) {
  (void)st;
  world w;
  world_init(&w, true, test_seed(8));
  relay_start(&w);
  node_start(&w, 1);
  node_start(&w, 2);
  int one = 1, two = 2;
  assert_true(run_until(&w, home_up, &one, 10));
  assert_true(run_until(&w, home_up, &two, 10));
  assert_int_equal(qraft_relay_server_close_if(w.relay, relay_keep_only_1, &w),
                   1);
  assert_true(run_until(&w, relay_clients_1, NULL, 5));
  qraft_relay_status rs;
  qraft_endpoint_relays(w.nodes[1].ep, &rs, 1);
  assert_true(rs.up);
  world_close(&w);
}

static bool queue_drops(world *w, void *arg) {
  (void)arg;
  qraft_relay_server_metrics m;
  qraft_relay_server_metrics_get(w->relay, &m);
  return m.drops_queue > 0;
}

static void ignore_recv(void *ud, qraft_conn *c, int64_t sid,
                        const uint8_t *d, size_t len, bool fin) {
  (void)ud;
  (void)c;
  (void)sid;
  (void)d;
  (void)len;
  (void)fin;
}

/* A client that makes the relay answer (PINGs, SENDs to nobody) and does
 * not read: what waits for it stays within its queue, the rest is dropped,
 * and it is closed after the write timeout. */
static void sim_a_client_that_does_not_read_is_bounded(void **st) {
  (void)st;
  world w;
  world_init(&w, true, test_seed(9));
  /* a small queue, so the answers to a congestion window of PINGs fill it */
  node *rn = &w.nodes[0];
  qraft_endpoint_config cfg = {.env = w.env[0], .key = &rn->key, .bind_n = 1};
  bind_loopback(&cfg.bind[0], 0);
  assert_int_equal(qraft_endpoint_new(&cfg, &rn->ep, NULL), 0);
  qraft_relay_server_config rc = {.ep = rn->ep, .queue_bytes_max = 2000,
                                  .write_timeout_ms = 1000};
  assert_int_equal(qraft_relay_server_new(&rc, &w.relay, NULL), 0);
  qraft_node_addr ra;
  qraft_endpoint_addr(rn->ep, &ra);
  node *n = &w.nodes[1];
  qraft_endpoint_config cc = {.env = w.env[1], .key = &n->key, .bind_n = 1,
                              .stream_window_bytes = 16384,
                              .conn_window_bytes = 16384};
  bind_loopback(&cc.bind[0], 0);
  assert_int_equal(qraft_endpoint_new(&cc, &n->ep, NULL), 0);
  qraft_protocol_ops deaf = ops;
  deaf.stream_recv_cb = ignore_recv;
  assert_int_equal(qraft_endpoint_register(n->ep, QRAFT_RELAY_ALPN, &deaf, n),
                   0);
  ra.id = rn->key.public_key;
  ra.addrs_n = 1;
  assert_int_equal(qraft_endpoint_dial(n->ep, &ra, QRAFT_RELAY_ALPN), 0);
  int pair[2] = {1, 1};
  assert_true(run_until(&w, pair_up, pair, 10));
  int64_t sid;
  assert_int_equal(qraft_conn_stream_open(n->conn, true, &sid), 0);
  uint8_t buf[64];
  qraft_relay_frame f = {.type = QRAFT_RELAY_PING};
  size_t len = qraft_relay_frame_encode(&f, buf);
  assert_int_equal(qraft_conn_stream_send(n->conn, sid,
                                          qraft_slice_of(NULL, buf, len),
                                          false),
                   0);
  run_for_ms(&w, 200); /* the relay knows the stream */
  /* From now on nothing the relay sends reaches the client (as a client
   * that stopped reading: no acknowledgement comes back), and the client
   * sends 20000 PINGs, whose PONGs (about 10 bytes each) would be 200 KB. */
  qraft_simnet_link_block(w.env[0], w.env[1], true);
  for (int k = 0; k < 20000; k++) {
    if (qraft_conn_stream_send(n->conn, sid, qraft_slice_of(NULL, buf, len),
                               false) != 0) {
      break;
    }
  }
  assert_true(run_until(&w, queue_drops, NULL, 10));
  /* the relay's queue stays full, and the client is closed */
  qraft_relay_server_metrics m;
  for (int i = 0; i < 100; i++) {
    run_for_ms(&w, 100);
    qraft_relay_server_metrics_get(w.relay, &m);
    if (m.write_timeouts > 0) {
      break;
    }
  }
  assert_int_equal(m.write_timeouts, 1);
  assert_int_equal(m.clients, 0);
  world_close(&w);
}

static bool r1_gone(world *w, void *arg) {
  (void)arg;
  qraft_relay_status rs[2];
  uint32_t n = qraft_endpoint_relays(w->nodes[1].ep, rs, 2);
  for (uint32_t k = 0; k < n && k < 2; k++) {
    if (qraft_node_id_eq(&rs[k].relay.id, &w->relay_addr.id) &&
        rs[k].peer_gone > 0) {
      return true;
    }
  }
  return false;
}

static bool two_relays_up(world *w, void *arg) {
  int i = *(int *)arg;
  qraft_relay_status rs[2];
  uint32_t n = qraft_endpoint_relays(w->nodes[i].ep, rs, 2);
  return n == 2 && rs[0].up && rs[1].up;
}

/* The peer names two relays and is connected to the second only (the
 * first's list refuses it): the first answers PEER_GONE, and the dialer
 * goes through the second. */
static void sim_a_relay_without_the_peer_is_passed_over(void **st) {
  (void)st;
  world w;
  world_init(&w, true, test_seed(10));
  w.allowlist = true;
  w.allow[1] = true; /* R1 admits node 1, not node 2 */
  relay_start(&w);
  /* R2, open to all, on node 4's host */
  node *r2n = &w.nodes[4];
  qraft_endpoint_config rcfg = {.env = w.env[4], .key = &r2n->key,
                                .bind_n = 1};
  bind_loopback(&rcfg.bind[0], 0);
  assert_int_equal(qraft_endpoint_new(&rcfg, &r2n->ep, NULL), 0);
  qraft_relay_server *r2;
  qraft_relay_server_config rc = {.ep = r2n->ep};
  assert_int_equal(qraft_relay_server_new(&rc, &r2, NULL), 0);
  qraft_node_addr r2a;
  qraft_endpoint_addr(r2n->ep, &r2a);
  qraft_relay_addr relays[2] = {w.relay_addr,
                                {.id = r2n->key.public_key,
                                 .addr = r2a.addrs[0]}};
  for (int i = 1; i <= 2; i++) {
    node *n = &w.nodes[i];
    qraft_endpoint_config cfg = {.env = w.env[i], .key = &n->key,
                                 .bind_n = 1, .relays_n = 2};
    cfg.relays[0] = relays[0];
    cfg.relays[1] = relays[1];
    bind_loopback(&cfg.bind[0], 0);
    assert_int_equal(qraft_endpoint_new(&cfg, &n->ep, NULL), 0);
    assert_int_equal(qraft_endpoint_register(n->ep, ALPN, &ops, n), 0);
  }
  w.nodes[2].echo = true;
  int one = 1;
  assert_true(run_until(&w, two_relays_up, &one, 10));
  run_for_ms(&w, 2000); /* node 2's dial of R1 is refused meanwhile */
  qraft_node_addr b;
  memset(&b, 0, sizeof b);
  b.id = w.nodes[2].key.public_key;
  b.relays_n = 2;
  b.relays[0] = relays[0];
  b.relays[1] = relays[1];
  assert_int_equal(qraft_endpoint_dial(w.nodes[1].ep, &b, ALPN), 0);
  int pair[2] = {1, 2};
  assert_true(run_until(&w, pair_up, pair, 10));
  assert_true(r1_gone(&w, NULL));
  echo_through(&w, 1, 20000, 10);
  qraft_endpoint_shutdown(r2n->ep);
  qraft_relay_server_free(r2);
  world_close(&w);
}


/* The NAT matrix in the simulated network: two members known by id only,
 * each behind a NAT of its kind (qraft_simnet_host_set_nat), the relay in
 * front. They end direct unless both NATs filter by address and port and
 * one of them also maps per destination (symmetric against symmetric or
 * against port-restricted): there they stay on the relay, their pings
 * unanswered. */
static void sim_nat_matrix(void **st) {
  (void)st;
  const qraft_simnet_nat kinds[] = {
      QRAFT_SIMNET_NAT_NONE, QRAFT_SIMNET_NAT_FULL_CONE,
      QRAFT_SIMNET_NAT_RESTRICTED, QRAFT_SIMNET_NAT_SYMMETRIC};
  for (int x = 0; x < 4; x++) {
    for (int y = x; y < 4; y++) {
      qraft_simnet_nat kx = kinds[x], ky = kinds[y];
      bool apdf_x = kx >= QRAFT_SIMNET_NAT_RESTRICTED;
      bool apdf_y = ky >= QRAFT_SIMNET_NAT_RESTRICTED;
      bool relay = apdf_x && apdf_y &&
                   (kx == QRAFT_SIMNET_NAT_SYMMETRIC ||
                    ky == QRAFT_SIMNET_NAT_SYMMETRIC);
      world w;
      world_init(&w, true, test_seed(20 + (uint64_t)(x * 4 + y)));
      relay_start(&w);
      qraft_simnet_host_set_nat(w.env[1], kx, 30 * SEC);
      qraft_simnet_host_set_nat(w.env[2], ky, 30 * SEC);
      pair_start(&w, false);
      echo_through(&w, 1, 20000, 20);
      int direct = QRAFT_PATH_DIRECT;
      bool went = false;
      for (int i = 0; i < 12 && !went; i++) {
        echo_through(&w, 1, 2000, 10);
        went = run_until(&w, path_is, &direct, 1);
      }
      qraft_peer_metrics a = peer_metrics(&w, 1, 2), b = peer_metrics(&w, 2, 1);
      printf("# %s - %s: %s", qraft_simnet_nat_name(kx),
             qraft_simnet_nat_name(ky), went ? "direct" : "relay");
      if (went) {
        printf(" after %.1f ms", (double)a.path_first_direct_ns / 1e6);
      }
      printf(" (%llu pings out, %llu pongs in)\n",
             (unsigned long long)a.path_pings_out,
             (unsigned long long)a.path_pongs_in);
      assert_int_equal(went, !relay);
      if (relay) {
        assert_int_equal(a.path_pongs_in, 0);
        assert_int_equal(b.path_pongs_in, 0);
        assert_true(a.path_pings_out >= 3 && b.path_pings_out >= 3);
        assert_int_equal(a.path, QRAFT_PATH_RELAY);
      } else {
        /* Behind a symmetric NAT, the peer reaches it at another port than
         * the relay sees (the mapping depends on the destination); behind
         * the others, at the same. */
        qraft_relay_status rs;
        assert_int_equal(qraft_endpoint_relays(w.nodes[2].ep, &rs, 1), 1);
        assert_int_equal(port_of(&a.path_direct_addr) == port_of(&rs.observed),
                         ky != QRAFT_SIMNET_NAT_SYMMETRIC);
        assert_int_equal(a.path_upgrades, 1);
      }
      world_close(&w);
    }
  }
}


/* A member behind a NAT whose mappings are flushed (conntrack -F): its
 * packets come from new ports. Its connection to the relay carries on (the
 * relay validates the new address and follows it), and so does its pair
 * on the relay, with no new connection. */
static void sim_nat_rebinding_keeps_connections(void **st) {
  (void)st;
  world w;
  world_init(&w, true, test_seed(40));
  relay_start(&w);
  qraft_simnet_host_set_nat(w.env[1], QRAFT_SIMNET_NAT_SYMMETRIC, 30 * SEC);
  qraft_simnet_host_set_nat(w.env[2], QRAFT_SIMNET_NAT_SYMMETRIC, 30 * SEC);
  pair_start(&w, false);
  echo_through(&w, 1, 20000, 20);
  qraft_conn *c1 = w.nodes[1].conn;
  qraft_simnet_nat_flush(w.env[1]);
  echo_through(&w, 1, 20000, 20);
  run_for_ms(&w, 3000);
  echo_through(&w, 1, 20000, 20);
  qraft_endpoint_metrics rm;
  qraft_endpoint_metrics_get(w.nodes[0].ep, &rm);
  assert_true(rm.migrations >= 1);
  qraft_relay_status rs;
  assert_int_equal(qraft_endpoint_relays(w.nodes[1].ep, &rs, 1), 1);
  assert_true(rs.up);
  assert_ptr_equal(w.nodes[1].conn, c1);
  assert_int_equal(w.nodes[1].ups, 1);
  assert_int_equal(peer_metrics(&w, 1, 2).path, QRAFT_PATH_RELAY);
  world_close(&w);
}


/* relay_only: a pair that could go direct (the same network) stays on the
 * relay; no probe goes out, and none is answered. */
static void sim_relay_only_never_goes_direct(void **st) {
  (void)st;
  world w;
  world_init(&w, true, test_seed(41));
  w.relay_only = true;
  relay_start(&w);
  pair_start(&w, false);
  for (int i = 0; i < 4; i++) {
    echo_through(&w, 1, 20000, 20);
    run_for_ms(&w, 2000);
  }
  qraft_peer_metrics a = peer_metrics(&w, 1, 2), b = peer_metrics(&w, 2, 1);
  assert_int_equal(a.path, QRAFT_PATH_RELAY);
  assert_int_equal(b.path, QRAFT_PATH_RELAY);
  assert_int_equal(a.path_pings_out + b.path_pings_out, 0);
  assert_int_equal(a.path_call_me_maybe_out + b.path_call_me_maybe_out, 0);
  assert_int_equal(a.path_direct_bytes_out + b.path_direct_bytes_out, 0);
  assert_true(a.path_relay_bytes_out > 80000);
  world_close(&w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(sim_ids_only),
      cmocka_unit_test(uv_ids_only),
      cmocka_unit_test(sim_ids_only_no_direct_path),
      cmocka_unit_test(sim_copied_packet_redirects_nothing),
      cmocka_unit_test(sim_nat_matrix),
      cmocka_unit_test(sim_nat_rebinding_keeps_connections),
      cmocka_unit_test(sim_relay_only_never_goes_direct),
      cmocka_unit_test(sim_direct_path_falls_back_and_upgrades),
      cmocka_unit_test(sim_relay_allow_list),
      cmocka_unit_test(sim_duplicate_id_is_told_not_flapped),
      cmocka_unit_test(sim_unknown_id),
      cmocka_unit_test(sim_relay_restart),
      cmocka_unit_test(sim_client_breaking_the_protocol_is_closed),
      cmocka_unit_test(sim_close_if_closes_the_refused),
      cmocka_unit_test(sim_a_client_that_does_not_read_is_bounded),
      cmocka_unit_test(sim_a_relay_without_the_peer_is_passed_over),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

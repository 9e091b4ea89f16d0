/*
 * bench_transport: QUIC transport over loopback against raw UDP measured in
 * the same run. The server runs on its own thread and libuv env; the client
 * on the main thread. Prints:
 *   - round trip of a 100-byte message echoed on a stream vs. a raw UDP
 *     ping-pong of 100-byte datagrams (p50, p99);
 *   - 100-byte and 4 KiB messages pipelined on one stream (messages/s and
 *     MB/s, until all are acknowledged) vs. a raw UDP send loop (100-byte
 *     and 1400-byte datagrams, counted as received);
 * and the ratios.
 *
 * Usage: bench_transport [seconds per throughput run, default 2] [rtt]
 * ("rtt": round trips only, for profiling)
 */
#include <qraft/transport.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALPN "bench/0"
#define RTT_ROUNDS 5000

/* ---- the server thread ---- */

typedef struct server {
  pthread_t thread;
  atomic_bool ready, stop;
  qraft_env *env;
  qraft_env_wake *wake;
  qraft_endpoint *ep;
  qraft_env_udp *udp; /* raw UDP echo / sink */
  qraft_secret_key key;
  qraft_node_addr addr;
  struct sockaddr_storage udp_addr;
  atomic_uint_fast64_t udp_rx, udp_rx_bytes;
  /* The Raft handler: the client's address arrives through the wake-up. */
  qraft_raft_net *net;
  qraft_node_addr client_addr;
  atomic_bool client_addr_ready;
  bool client_added;
  atomic_uint_fast64_t raft_rx;
} server;

static void srv_up(void *ud, qraft_conn *c, bool dialed) {
  (void)ud;
  (void)c;
  (void)dialed;
}

static void srv_recv(void *ud, qraft_conn *c, int64_t sid, const uint8_t *data,
                     size_t len, bool fin) {
  (void)ud;
  /* Echo on bidirectional streams; a sink on unidirectional ones. */
  if ((sid & 0x2) == 0) {
    qraft_conn_stream_send(c, sid, qraft_slice_of(NULL, data, len), fin);
  }
}

static void srv_udp_recv(void *ud, const struct sockaddr *from,
                         const uint8_t *data, size_t len) {
  server *s = ud;
  atomic_fetch_add(&s->udp_rx, 1);
  atomic_fetch_add(&s->udp_rx_bytes, len);
  if (data[0] == 'P') { /* ping: pong */
    qraft_env_udp_send(s->udp, from, data, len);
  }
}

static void srv_raft_recv(void *ud, qraft_id from, qraft_wire_batch *b) {
  (void)from;
  server *s = ud;
  atomic_fetch_add(&s->raft_rx, b->msgs_n);
  qraft_wire_batch_free(b);
}

static void srv_wake(void *ud) {
  server *s = ud;
  if (!s->client_added && atomic_load(&s->client_addr_ready)) {
    s->client_added = true;
    qraft_raft_net_add_peer(s->net, 1, &s->client_addr, false);
  }
}

static bool srv_done(void *ud) { return atomic_load(&((server *)ud)->stop); }

static void *server_main(void *arg) {
  server *s = arg;
  if (qraft_env_uv_new(&s->env) != 0 ||
      qraft_env_wake_new(s->env, srv_wake, s, &s->wake) != 0) {
    abort();
  }
  qraft_endpoint_config cfg = {.env = s->env, .key = &s->key, .bind_n = 1};
  struct sockaddr_in *a = (struct sockaddr_in *)&cfg.bind[0];
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  qraft_err err;
  qraft_err_init(&err, 0);
  if (qraft_endpoint_new(&cfg, &s->ep, &err) != 0) {
    qraft_err_print(&err, stderr);
    abort();
  }
  static const qraft_protocol_ops ops = {.conn_up_cb = srv_up,
                                         .stream_recv_cb = srv_recv};
  qraft_endpoint_register(s->ep, ALPN, &ops, s);
  qraft_raft_net_config rc = {.ep = s->ep, .cluster_id = 1, .self_id = 2,
                              .recv_cb = srv_raft_recv, .ud = s};
  if (qraft_raft_net_new(&rc, &s->net, NULL) != 0) {
    abort();
  }
  qraft_endpoint_addr(s->ep, &s->addr);
  if (qraft_env_udp_bind(s->env, (struct sockaddr *)&cfg.bind[0],
                         srv_udp_recv, s, &s->udp) != 0) {
    abort();
  }
  qraft_env_udp_local_addr(s->udp, &s->udp_addr);
  atomic_store(&s->ready, true);
  qraft_env_run(s->env, UINT64_MAX, srv_done, s);
  qraft_endpoint_shutdown(s->ep);
  qraft_raft_net_free(s->net);
  qraft_endpoint_free(s->ep);
  qraft_env_udp_close(s->udp);
  qraft_env_wake_free(s->wake);
  qraft_env_free(s->env);
  return NULL;
}

/* ---- the client ---- */

typedef struct client {
  qraft_env *env;
  qraft_endpoint *ep;
  qraft_conn *conn;
  uint64_t rx_bytes;
  uint64_t udp_rx;
} client;

static void cli_up(void *ud, qraft_conn *c, bool dialed) {
  (void)dialed;
  ((client *)ud)->conn = c;
}

static void cli_recv(void *ud, qraft_conn *c, int64_t sid, const uint8_t *data,
                     size_t len, bool fin) {
  (void)c;
  (void)sid;
  (void)data;
  (void)fin;
  ((client *)ud)->rx_bytes += len;
}

static void cli_udp_recv(void *ud, const struct sockaddr *from,
                         const uint8_t *data, size_t len) {
  (void)from;
  (void)data;
  (void)len;
  ((client *)ud)->udp_rx++;
}

static bool conn_up(void *ud) { return ((client *)ud)->conn != NULL; }

typedef struct want {
  client *c;
  uint64_t n;
} want;

static bool got_bytes(void *ud) {
  want *w = ud;
  return w->c->rx_bytes >= w->n;
}

static bool got_udp(void *ud) {
  want *w = ud;
  return w->c->udp_rx >= w->n;
}

static bool acked_all(void *ud) {
  client *c = ud;
  return c->conn == NULL || qraft_conn_unacked_bytes(c->conn) == 0;
}

static bool acked_half(void *ud) {
  client *c = ud;
  return c->conn == NULL || qraft_conn_unacked_bytes(c->conn) < (4u << 20);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t now_ns(client *c) { return qraft_env_now_ns(c->env); }

static void rtt_quic(client *c, uint64_t *p50, uint64_t *p99) {
  static uint64_t t[RTT_ROUNDS];
  int64_t sid;
  if (qraft_conn_stream_open(c->conn, true, &sid) != 0) {
    abort();
  }
  uint8_t msg[100] = {0};
  for (int i = -100; i < RTT_ROUNDS; i++) { /* 100 rounds of warm-up */
    uint64_t start = now_ns(c);
    want w = {c, c->rx_bytes + sizeof msg};
    qraft_conn_stream_send(c->conn, sid, qraft_slice_of(NULL, msg, sizeof msg),
                           false);
    if (qraft_env_run(c->env, start + 1000000000ull, got_bytes, &w) != 0) {
      fprintf(stderr, "quic round trip timed out\n");
      abort();
    }
    if (i >= 0) {
      t[i] = now_ns(c) - start;
    }
  }
  qsort(t, RTT_ROUNDS, sizeof t[0], cmp_u64);
  *p50 = t[RTT_ROUNDS / 2];
  *p99 = t[RTT_ROUNDS * 99 / 100];
}

static void rtt_udp(client *c, qraft_env_udp *u, server *s, uint64_t *p50,
                    uint64_t *p99) {
  static uint64_t t[RTT_ROUNDS];
  uint8_t msg[100] = {'P'};
  for (int i = -100; i < RTT_ROUNDS; i++) {
    uint64_t start = now_ns(c);
    want w = {c, c->udp_rx + 1};
    qraft_env_udp_send(u, (struct sockaddr *)&s->udp_addr, msg, sizeof msg);
    if (qraft_env_run(c->env, start + 1000000000ull, got_udp, &w) != 0) {
      fprintf(stderr, "udp round trip lost; retrying\n");
      i--;
      continue;
    }
    if (i >= 0) {
      t[i] = now_ns(c) - start;
    }
  }
  qsort(t, RTT_ROUNDS, sizeof t[0], cmp_u64);
  *p50 = t[RTT_ROUNDS / 2];
  *p99 = t[RTT_ROUNDS * 99 / 100];
}

/* Messages of `size` bytes pipelined on one unidirectional stream for about
 * `seconds`, until all are acknowledged. Returns messages per second. */
static double stream_rate(client *c, size_t size, double seconds) {
  int64_t sid;
  if (qraft_conn_stream_open(c->conn, false, &sid) != 0) {
    abort();
  }
  qraft_buf *b = qraft_buf_new(size);
  memset(b->data, 'x', size);
  b->len = size;
  qraft_slice msg = qraft_slice_of(b, b->data, size);
  uint64_t start = now_ns(c), sent = 0;
  uint64_t end = start + (uint64_t)(seconds * 1e9);
  while (now_ns(c) < end) {
    for (int i = 0; i < 256; i++) {
      int rv = qraft_conn_stream_send(c->conn, sid, msg, false);
      if (rv == QRAFT_EBUSY) {
        qraft_env_run(c->env, UINT64_MAX, acked_half, c);
        break;
      }
      if (rv != 0) {
        abort();
      }
      sent++;
    }
    qraft_env_run(c->env, 0, NULL, NULL); /* one turn of the loop */
  }
  qraft_env_run(c->env, UINT64_MAX, acked_all, c);
  double elapsed = (double)(now_ns(c) - start) / 1e9;
  qraft_slice_release(&msg);
  qraft_buf_unref(b);
  qraft_conn_stream_reset(c->conn, sid, 0);
  return (double)sent / elapsed;
}

/* Datagrams of `size` bytes sent as fast as the loop goes for `seconds`;
 * returns datagrams per second the server received. */
static double udp_rate(client *c, qraft_env_udp *u, server *s, size_t size,
                       double seconds) {
  uint8_t msg[1400] = {'S'};
  uint64_t rx0 = atomic_load(&s->udp_rx);
  uint64_t start = now_ns(c);
  uint64_t end = start + (uint64_t)(seconds * 1e9);
  while (now_ns(c) < end) {
    for (int i = 0; i < 64; i++) {
      qraft_env_udp_send(u, (struct sockaddr *)&s->udp_addr, msg, size);
    }
    qraft_env_run(c->env, 0, NULL, NULL);
  }
  double elapsed = (double)(now_ns(c) - start) / 1e9;
  /* Let the receiver drain. */
  qraft_env_run(c->env, now_ns(c) + 100000000ull, NULL, NULL);
  return (double)(atomic_load(&s->udp_rx) - rx0) / elapsed;
}

static void cli_raft_recv(void *ud, qraft_id from, qraft_wire_batch *b) {
  (void)ud;
  (void)from;
  qraft_wire_batch_free(b);
}

static void cli_raft_peer(void *ud, qraft_id peer, bool reachable) {
  (void)peer;
  *(bool *)ud = reachable;
}

static bool is_true(void *ud) { return *(bool *)ud; }

static bool raft_room(void *ud) {
  client *c = ud;
  return c->conn == NULL || qraft_conn_unacked_bytes(c->conn) < (2u << 20);
}

typedef struct raft_wait {
  server *s;
  uint64_t n;
} raft_wait;

static bool raft_all_in(void *ud) {
  raft_wait *w = ud;
  return atomic_load(&w->s->raft_rx) >= w->n;
}

/* MsgAppend with one 100-byte entry, through the Raft handler (framed,
 * batched) for about `seconds`, until the server has decoded them all.
 * Returns messages per second. */
static double raft_rate(client *c, qraft_raft_net *net, server *s,
                        double seconds) {
  uint8_t payload[100] = {0};
  uint64_t start = now_ns(c), sent = 0, index = 1;
  uint64_t end = start + (uint64_t)(seconds * 1e9);
  uint64_t rx0 = atomic_load(&s->raft_rx);
  while (now_ns(c) < end) {
    for (int i = 0; i < 256; i++) {
      qraft_entry e = {.term = 1, .index = index,
                       .data = qraft_slice_of(NULL, payload, sizeof payload)};
      qraft_message m = {.type = QRAFT_MSG_APPEND, .from = 1, .to = 2,
                         .term = 1, .index = index, .entries = &e,
                         .entries_n = 1};
      int rv = qraft_raft_net_send(net, &m, NULL);
      if (rv == QRAFT_EBUSY) {
        qraft_env_run(c->env, UINT64_MAX, raft_room, c);
        break;
      }
      if (rv != 0) {
        fprintf(stderr, "raft send: %s\n", qraft_strerror(rv));
        abort();
      }
      sent++;
      index++;
    }
    qraft_env_run(c->env, 0, NULL, NULL);
  }
  raft_wait w = {s, rx0 + sent};
  qraft_env_run(c->env, UINT64_MAX, raft_all_in, &w);
  return (double)sent / ((double)(now_ns(c) - start) / 1e9);
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 2.0;
  server s;
  memset(&s, 0, sizeof s);
  qraft_secret_key_generate(&s.key);
  pthread_create(&s.thread, NULL, server_main, &s);
  while (!atomic_load(&s.ready)) {
  }

  client c = {0};
  qraft_secret_key ckey;
  qraft_secret_key_generate(&ckey);
  if (qraft_env_uv_new(&c.env) != 0) {
    return 1;
  }
  qraft_endpoint_config cfg = {.env = c.env, .key = &ckey, .bind_n = 1};
  struct sockaddr_in *a = (struct sockaddr_in *)&cfg.bind[0];
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (qraft_endpoint_new(&cfg, &c.ep, NULL) != 0) {
    return 1;
  }
  static const qraft_protocol_ops ops = {.conn_up_cb = cli_up,
                                         .stream_recv_cb = cli_recv};
  qraft_endpoint_register(c.ep, ALPN, &ops, &c);
  qraft_env_udp *u;
  qraft_env_udp_bind(c.env, (struct sockaddr *)&cfg.bind[0], cli_udp_recv, &c,
                     &u);

  /* Handshakes. */
  uint64_t hs[21];
  for (int i = 0; i < 21; i++) {
    uint64_t t0 = now_ns(&c);
    qraft_endpoint_dial(c.ep, &s.addr, ALPN);
    if (qraft_env_run(c.env, t0 + 5000000000ull, conn_up, &c) != 0) {
      fprintf(stderr, "handshake timed out\n");
      return 1;
    }
    hs[i] = now_ns(&c) - t0;
    if (getenv("BENCH_VERBOSE")) fprintf(stderr, "hs %d %.1f us\n", i, hs[i] / 1e3);
    if (i < 20) {
      qraft_endpoint_undial(c.ep, &s.addr.id, ALPN);
      c.conn = NULL;
    }
  }
  qsort(hs, 21, sizeof hs[0], cmp_u64);

  uint64_t q50, q99, u50, u99;
  rtt_udp(&c, u, &s, &u50, &u99);
  rtt_quic(&c, &q50, &q99);
  if (argc > 2 && strcmp(argv[2], "rtt") == 0) {
    for (int i = 0; i < 20; i++) {
      rtt_quic(&c, &q50, &q99);
    }
    printf("round trip, 100 B: quic p50 %.1f us | raw udp p50 %.1f us\n",
           (double)q50 / 1e3, (double)u50 / 1e3);
    qraft_peer_metrics pm;
    qraft_endpoint_peer_metrics(c.ep, &s.addr.id, ALPN, &pm);
    printf("client packets out %llu in %llu for %d round trips\n",
           (unsigned long long)pm.packets_out,
           (unsigned long long)pm.packets_in, 21 * (RTT_ROUNDS + 100));
    return 0;
  }
  double udp100 = udp_rate(&c, u, &s, 100, seconds);
  double quic100 = stream_rate(&c, 100, seconds);
  double udp1400 = udp_rate(&c, u, &s, 1400, seconds);
  double quic4k = stream_rate(&c, 4096, seconds);

  /* The Raft handler, over a connection of its own ALPN. */
  bool raft_up = false;
  qraft_raft_net *net;
  qraft_raft_net_config rc = {.ep = c.ep, .cluster_id = 1, .self_id = 1,
                              .recv_cb = cli_raft_recv,
                              .peer_cb = cli_raft_peer, .ud = &raft_up};
  if (qraft_raft_net_new(&rc, &net, NULL) != 0) {
    return 1;
  }
  qraft_endpoint_addr(c.ep, &s.client_addr);
  atomic_store(&s.client_addr_ready, true);
  qraft_env_wake_send(s.wake);
  qraft_env_run(c.env, now_ns(&c) + 100000000ull, NULL, NULL);
  qraft_raft_net_add_peer(net, 2, &s.addr, true);
  if (qraft_env_run(c.env, now_ns(&c) + 5000000000ull, is_true, &raft_up) !=
      0) {
    fprintf(stderr, "raft connection did not come up\n");
    return 1;
  }
  qraft_conn *saved = c.conn;
  c.conn = qraft_endpoint_conn(c.ep, &s.addr.id, QRAFT_RAFT_ALPN);
  double raft100 = raft_rate(&c, net, &s, seconds);
  c.conn = saved;

  printf("handshake (mutual raw public keys, loopback): p50 %.1f us\n",
         (double)hs[10] / 1e3);
  printf("round trip, 100 B:   quic p50 %.1f us p99 %.1f us | raw udp p50 "
         "%.1f us p99 %.1f us | ratio p50 %.2fx\n",
         (double)q50 / 1e3, (double)q99 / 1e3, (double)u50 / 1e3,
         (double)u99 / 1e3, (double)q50 / (double)u50);
  printf("100 B on one stream: quic %.0f msg/s %.1f MB/s | raw udp send loop "
         "%.0f dgram/s %.1f MB/s | ratio %.2fx\n",
         quic100, quic100 * 100 / 1e6, udp100, udp100 * 100 / 1e6,
         quic100 / udp100);
  printf("4 KiB on one stream: quic %.0f msg/s %.1f MB/s | raw udp send loop "
         "(1400 B) %.0f dgram/s %.1f MB/s | ratio (MB/s) %.2fx\n",
         quic4k, quic4k * 4096 / 1e6, udp1400, udp1400 * 1400 / 1e6,
         (quic4k * 4096) / (udp1400 * 1400));

  printf("raft MsgAppend, one 100 B entry, via iroh-raft/0: %.0f msg/s | "
         "ratio to 100 B raw stream messages %.2fx\n",
         raft100, raft100 / quic100);
  qraft_endpoint_shutdown(c.ep);
  qraft_raft_net_free(net);
  qraft_endpoint_free(c.ep);
  qraft_env_udp_close(u);
  qraft_env_free(c.env);
  atomic_store(&s.stop, true);
  qraft_env_wake_send(s.wake);
  pthread_join(s.thread, NULL);
  qraft_secret_key_wipe(&ckey);
  return 0;
}

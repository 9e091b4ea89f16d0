/* The Raft protocol handler: framed batches between members, snapshots on
 * their own streams beside heartbeats, and a misbehaving peer closed alone. */
#include "cmocka_all.h"

#include <qraft/crc32c.h>
#include <qraft/transport.h>
#include <qraft/wire.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLUSTER 7
#define SEC 1000000000ull
#define MS 1000000ull

typedef struct rnode {
  qraft_id id;
  qraft_env *env;
  qraft_endpoint *ep;
  qraft_raft_net *net;
  qraft_secret_key key;
  /* what arrived */
  uint64_t msgs, appends, heartbeats, snapshots;
  uint64_t next_index; /* appends arrive in order: index == next_index */
  bool order_ok;
  uint64_t hb_latency_max_ns;
  uint64_t hb_before_snapshot;
  size_t snap_len;
  bool snap_ok;
  bool snap_gen_ok; /* into memory, of snap_byte's pattern */
  uint64_t snap_bytes_max; /* the handler's limit; 0: its default */
  uint64_t begin_bytes;    /* the length snapshot_begin_cb was told */
  bool reachable[8];
  int snap_status; /* 1: none yet */
  /* streamed snapshots: what the sink took */
  bool streaming;      /* snapshot_begin_cb and snapshot_recv_cb set */
  int refuse;          /* begin_cb returns this when not 0 */
  uint64_t sink_bytes; /* into the open sink */
  bool sink_pattern_ok;
  int sinks_open, sink_aborts, sink_delivered;
  uint64_t delivered_index, delivered_bytes;
  /* the evil peer's view */
  int downs;
  qraft_close_info last_down;
  qraft_conn *raw_conn;
} rnode;

typedef struct rworld {
  bool sim;
  qraft_simnet *net;
  qraft_env *uv;
  rnode nodes[4];
  int n;
} rworld;

/* A snapshot's bytes: a pattern of their offset. */
static uint8_t snap_byte(uint64_t off) {
  return (uint8_t)(off * 7 + (off >> 12));
}

static void on_batch(void *ud, qraft_id from, qraft_wire_batch *b) {
  rnode *r = ud;
  for (size_t i = 0; i < b->msgs_n; i++) {
    const qraft_message *m = &b->msgs[i];
    assert_int_equal(m->from, from);
    assert_int_equal(m->to, r->id);
    r->msgs++;
    if (m->type == QRAFT_MSG_APPEND) {
      if (m->index != r->next_index) {
        r->order_ok = false;
      }
      r->next_index++;
      assert_int_equal(m->entries_n, 2);
      char want[32];
      int len = snprintf(want, sizeof want, "entry-%llu",
                         (unsigned long long)m->index);
      assert_int_equal(m->entries[0].data.len, (size_t)len);
      assert_memory_equal(m->entries[0].data.data, want, (size_t)len);
      r->appends++;
    } else if (m->type == QRAFT_MSG_HEARTBEAT) {
      uint64_t lat = qraft_env_now_ns(r->env) - m->commit;
      if (lat > r->hb_latency_max_ns) {
        r->hb_latency_max_ns = lat;
      }
      r->heartbeats++;
      if (r->snapshots == 0) {
        r->hb_before_snapshot++;
      }
    } else if (m->type == QRAFT_MSG_SNAPSHOT) {
      r->snapshots++;
      r->snap_len = m->snapshot->data.len;
      r->snap_ok = true;
      r->snap_gen_ok = true;
      for (size_t k = 0; k < m->snapshot->data.len; k++) {
        if (m->snapshot->data.data[k] != snap_byte(k)) {
          r->snap_gen_ok = false;
        }
      }
      for (size_t k = 0; k < m->snapshot->data.len; k++) {
        if (m->snapshot->data.data[k] != (uint8_t)(k * 7)) {
          r->snap_ok = false;
          break;
        }
      }
    }
  }
  qraft_wire_batch_free(b);
}

static int sink_write(void *ctx, const void *data, size_t len) {
  rnode *r = ctx;
  const uint8_t *p = data;
  for (size_t i = 0; i < len; i++) {
    if (p[i] != snap_byte(r->sink_bytes + i)) {
      r->sink_pattern_ok = false;
    }
  }
  r->sink_bytes += len;
  return 0;
}

static void sink_abort(void *ctx) {
  rnode *r = ctx;
  r->sinks_open--;
  r->sink_aborts++;
}

static int on_snap_begin(void *ud, qraft_id from, const qraft_message *m,
                         uint64_t bytes, qraft_raft_snapshot_sink *sink) {
  rnode *r = ud;
  assert_int_equal(m->from, from);
  assert_int_equal(m->type, QRAFT_MSG_SNAPSHOT);
  assert_int_equal(m->snapshot->data.len, 0);
  r->begin_bytes = bytes;
  if (r->refuse != 0) {
    return r->refuse;
  }
  r->sinks_open++;
  r->sink_bytes = 0;
  r->sink_pattern_ok = true;
  *sink = (qraft_raft_snapshot_sink){
      .write = sink_write, .abort = sink_abort, .ctx = r};
  return 0;
}

static void on_snap_recv(void *ud, qraft_id from, qraft_wire_batch *b,
                         void *sink_ctx) {
  rnode *r = ud;
  assert_ptr_equal(sink_ctx, r);
  assert_int_equal(b->msgs_n, 1);
  assert_int_equal(b->msgs[0].from, from);
  r->sinks_open--;
  r->sink_delivered++;
  r->delivered_index = b->msgs[0].snapshot->metadata.index;
  r->delivered_bytes = r->sink_bytes;
  qraft_wire_batch_free(b);
}

/* A source of `bytes` bytes of the pattern; fails at `fail_at` if set. */
typedef struct gen_src {
  uint64_t off, bytes, fail_at;
  int closes;
  bool unknown; /* sent as of unknown length: 0 bytes read at the end */
} gen_src;

static int gen_read(void *ctx, void *buf, size_t cap, size_t *got) {
  gen_src *g = ctx;
  if (g->fail_at != 0 && g->off >= g->fail_at) {
    return -EIO;
  }
  size_t n = g->bytes - g->off < cap ? (size_t)(g->bytes - g->off) : cap;
  if (g->unknown && n > 0 && g->off % 3 == 0) {
    n = n > 100 ? 100 : n; /* shorter still: a chunk is not a read */
  }
  if (n > 5000) {
    n = 5000; /* short reads: the handler fills its chunks anyway */
  }
  uint8_t *p = buf;
  for (size_t i = 0; i < n; i++) {
    p[i] = snap_byte(g->off + i);
  }
  g->off += n;
  *got = n;
  return 0;
}

static void gen_close(void *ctx) {
  ((gen_src *)ctx)->closes++;
}

static void on_peer(void *ud, qraft_id peer, bool reachable) {
  ((rnode *)ud)->reachable[peer] = reachable;
}

static void on_snap_sent(void *ud, qraft_id to, int status) {
  (void)to;
  ((rnode *)ud)->snap_status = status;
}

static void rworld_init(rworld *w, bool sim, int n, uint64_t seed) {
  memset(w, 0, sizeof *w);
  w->sim = sim;
  w->n = n;
  if (sim) {
    assert_int_equal(qraft_simnet_new(seed, &w->net), 0);
  } else {
    assert_int_equal(qraft_env_uv_new(&w->uv), 0);
  }
  for (int i = 0; i < n; i++) {
    rnode *r = &w->nodes[i];
    r->id = (qraft_id)(i + 1);
    r->order_ok = true;
    r->next_index = 1;
    r->snap_status = 1;
    if (sim) {
      assert_int_equal(qraft_simnet_env_new(w->net, &r->env), 0);
    } else {
      r->env = w->uv;
    }
    uint8_t s[QRAFT_KEY_BYTES];
    for (int j = 0; j < QRAFT_KEY_BYTES; j++) {
      s[j] = (uint8_t)(seed + (uint64_t)i * 13 + (uint64_t)j);
    }
    qraft_secret_key_from_seed(&r->key, s);
    qraft_endpoint_config cfg = {.env = r->env, .key = &r->key, .bind_n = 1};
    struct sockaddr_in *a = (struct sockaddr_in *)&cfg.bind[0];
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(qraft_endpoint_new(&cfg, &r->ep, NULL), 0);
  }
}

/* Nodes [0, members) run the Raft handler and know each other (and every
 * node of the world, so the last one may play a member gone bad). */
static void rworld_members(rworld *w, int members) {
  for (int i = 0; i < members; i++) {
    rnode *r = &w->nodes[i];
    qraft_raft_net_config cfg = {
        .ep = r->ep, .cluster_id = CLUSTER, .self_id = r->id,
        .recv_cb = on_batch, .peer_cb = on_peer,
        .snapshot_sent_cb = on_snap_sent, .ud = r,
        .snapshot_bytes_max = r->snap_bytes_max};
    if (r->streaming) {
      cfg.snapshot_begin_cb = on_snap_begin;
      cfg.snapshot_recv_cb = on_snap_recv;
    }
    assert_int_equal(qraft_raft_net_new(&cfg, &r->net, NULL), 0);
    qraft_endpoint_set_authorize(r->ep, qraft_raft_net_authorize_cb, r->net);
  }
  for (int i = 0; i < members; i++) {
    for (int j = 0; j < w->n; j++) {
      if (i != j) {
        qraft_node_addr addr;
        qraft_endpoint_addr(w->nodes[j].ep, &addr);
        assert_int_equal(qraft_raft_net_add_peer(w->nodes[i].net,
                                                 w->nodes[j].id, &addr,
                                                 j < members),
                         0);
      }
    }
  }
}

static void rworld_close(rworld *w) {
  for (int i = 0; i < w->n; i++) {
    qraft_endpoint_shutdown(w->nodes[i].ep);
    qraft_raft_net_free(w->nodes[i].net);
    qraft_endpoint_free(w->nodes[i].ep);
  }
  if (w->sim) {
    for (int i = 0; i < w->n; i++) {
      qraft_env_free(w->nodes[i].env);
    }
    qraft_simnet_free(w->net);
  } else {
    qraft_env_free(w->uv);
  }
}

typedef struct rwait {
  rworld *w;
  bool (*pred)(rworld *, void *);
  void *arg;
} rwait;

static bool rwait_done(void *ud) {
  rwait *x = ud;
  return x->pred(x->w, x->arg);
}

static bool run_until(rworld *w, bool (*pred)(rworld *, void *), void *arg,
                      uint64_t seconds) {
  rwait x = {w, pred, arg};
  qraft_env *env = w->nodes[0].env;
  return qraft_env_run(env, qraft_env_now_ns(env) + seconds * SEC, rwait_done,
                       &x) == 0;
}

static bool reachable_12(rworld *w, void *arg) {
  (void)arg;
  return w->nodes[0].reachable[2] && w->nodes[1].reachable[1];
}

/* Both members dial each other: wait until the pool has settled on one
 * connection (the duplicate is closed), so nothing sent is lost to the
 * switch. */
static bool settled_12(rworld *w, void *arg) {
  (void)arg;
  qraft_conn *a = qraft_endpoint_conn(w->nodes[0].ep,
                                      &w->nodes[1].key.public_key,
                                      QRAFT_RAFT_ALPN);
  qraft_conn *b = qraft_endpoint_conn(w->nodes[1].ep,
                                      &w->nodes[0].key.public_key,
                                      QRAFT_RAFT_ALPN);
  return reachable_12(w, NULL) && a != NULL && b != NULL &&
         qraft_conn_dialed(a) != qraft_conn_dialed(b);
}

static void settle(rworld *w) {
  assert_true(run_until(w, settled_12, NULL, 10));
  qraft_env *env = w->nodes[0].env;
  qraft_env_run(env, qraft_env_now_ns(env) + 200 * MS, NULL, NULL);
  assert_true(settled_12(w, NULL));
}

static bool appends_in(rworld *w, void *arg) {
  return w->nodes[1].appends >= *(uint64_t *)arg;
}

static void send_appends(rworld *w, uint64_t from_index, uint64_t n) {
  for (uint64_t i = from_index; i < from_index + n; i++) {
    char payload[32];
    int len = snprintf(payload, sizeof payload, "entry-%llu",
                       (unsigned long long)i);
    qraft_entry e[2] = {
        {.term = 1, .index = i, .data = qraft_slice_of(NULL, payload, len)},
        {.term = 1, .index = i, .data = qraft_slice_of(NULL, "x", 1)}};
    qraft_message m = {.type = QRAFT_MSG_APPEND, .from = 1, .to = 2,
                       .term = 1, .index = i, .entries = e, .entries_n = 2};
    assert_int_equal(qraft_raft_net_send(w->nodes[0].net, &m, NULL), 0);
  }
}

static void messages_arrive_in_order(bool sim, uint32_t drop_ppm) {
  rworld w;
  rworld_init(&w, sim, 2, 1);
  if (drop_ppm > 0) {
    qraft_simnet_faults f = {.drop_ppm = drop_ppm, .dup_ppm = 10000,
                             .delay_min_ns = 100000, .delay_max_ns = 2 * MS};
    qraft_simnet_set_faults(w.net, &f);
  }
  rworld_members(&w, 2);
  settle(&w);
  uint64_t n = 2000;
  send_appends(&w, 1, n);
  bool ok = run_until(&w, appends_in, &n, 20);
  if (!ok) {
    fprintf(stderr, "appends %llu msgs %llu reachable %d %d\n",
            (unsigned long long)w.nodes[1].appends,
            (unsigned long long)w.nodes[1].msgs, w.nodes[0].reachable[2],
            w.nodes[1].reachable[1]);
  }
  assert_true(ok);
  assert_true(w.nodes[1].order_ok);
  assert_int_equal(w.nodes[1].msgs, n);
  if (drop_ppm > 0) {
    qraft_simnet_stats ss;
    qraft_simnet_stats_get(w.net, &ss);
    assert_true(ss.dropped > 0);
    assert_true(ss.duplicated > 0);
    assert_true(ss.reordered > 0);
  }
  qraft_peer_metrics pm;
  assert_int_equal(qraft_endpoint_peer_metrics(w.nodes[1].ep,
                                               &w.nodes[0].key.public_key,
                                               QRAFT_RAFT_ALPN, &pm),
                   0);
  assert_int_equal(pm.messages_in, n);
  assert_true(pm.frames_in >= 1 && pm.frames_in < n); /* batched */
  qraft_endpoint_peer_metrics(w.nodes[0].ep, &w.nodes[1].key.public_key,
                              QRAFT_RAFT_ALPN, &pm);
  assert_int_equal(pm.messages_out, n);
  /* An unknown member and an unreachable one. */
  qraft_message m = {.type = QRAFT_MSG_HEARTBEAT, .from = 1, .to = 9};
  assert_int_equal(qraft_raft_net_send(w.nodes[0].net, &m, NULL),
                   QRAFT_EUNKNOWN_NODE);
  rworld_close(&w);
}

/* Sending faster than the peer acknowledges ends in QRAFT_EBUSY, never in
 * a message accepted and then lost. */
static void sim_back_pressure_refuses_rather_than_drops(void **st) {
  (void)st;
  rworld w;
  rworld_init(&w, true, 2, 4);
  rworld_members(&w, 2);
  settle(&w);
  uint64_t accepted = 0;
  int rv = 0;
  static uint8_t big[4000];
  while (rv == 0 && accepted < 100000) {
    qraft_entry e[2] = {
        {.term = 1, .index = accepted + 1,
         .data = qraft_slice_of(NULL, "entry-", 6)},
        {.term = 1, .index = accepted + 1,
         .data = qraft_slice_of(NULL, big, sizeof big)}};
    char payload[32];
    int len = snprintf(payload, sizeof payload, "entry-%llu",
                       (unsigned long long)(accepted + 1));
    e[0].data = qraft_slice_of(NULL, payload, (size_t)len);
    qraft_message m = {.type = QRAFT_MSG_APPEND, .from = 1, .to = 2,
                       .term = 1, .index = accepted + 1, .entries = e,
                       .entries_n = 2};
    rv = qraft_raft_net_send(w.nodes[0].net, &m, NULL);
    if (rv == 0) {
      accepted++;
    }
  }
  assert_int_equal(rv, QRAFT_EBUSY);
  /* About 4 MiB of 4 KiB messages were taken. */
  assert_true(accepted > 500 && accepted < 1100);
  assert_true(run_until(&w, appends_in, &accepted, 20));
  assert_int_equal(w.nodes[1].appends, accepted);
  assert_true(w.nodes[1].order_ok);
  rworld_close(&w);
}

/* ---- a member gone bad: raw bytes on the Raft ALPN ---- */

static void evil_up(void *ud, qraft_conn *c, bool dialed) {
  (void)dialed;
  ((rnode *)ud)->raw_conn = c;
}

static void evil_down(void *ud, qraft_conn *c, const qraft_close_info *why) {
  (void)c;
  rnode *r = ud;
  r->downs++;
  r->last_down = *why;
  r->raw_conn = NULL;
}

static bool evil_connected(rworld *w, void *arg) {
  (void)arg;
  return w->nodes[2].raw_conn != NULL && settled_12(w, NULL);
}

static bool evil_closed(rworld *w, void *arg) {
  (void)arg;
  return w->nodes[2].downs > 0;
}

/* Node 2 speaks the Raft ALPN raw (no handler of ours) and dials node 0;
 * returns it once connected. */
static rnode *evil_connect(rworld *w) {
  rnode *evil = &w->nodes[2];
  static const qraft_protocol_ops raw = {.conn_up_cb = evil_up,
                                         .conn_down_cb = evil_down};
  assert_int_equal(qraft_endpoint_register(evil->ep, QRAFT_RAFT_ALPN, &raw,
                                           evil),
                   0);
  qraft_node_addr addr;
  qraft_endpoint_addr(w->nodes[0].ep, &addr);
  assert_int_equal(qraft_endpoint_dial(evil->ep, &addr, QRAFT_RAFT_ALPN), 0);
  assert_true(run_until(w, evil_connected, NULL, 10));
  return evil;
}

typedef enum { BAD_GARBAGE, BAD_OVERSIZED, BAD_CLUSTER, BAD_IMPERSONATE } bad;

static void bad_peer_is_closed_alone(bad kind, uint64_t want_code) {
  rworld w;
  rworld_init(&w, true, 3, 2);
  rworld_members(&w, 2);
  rnode *evil = evil_connect(&w);

  uint8_t bytes[64];
  size_t len = 0;
  qraft_wire_preamble_encode(kind == BAD_CLUSTER ? CLUSTER + 1 : CLUSTER,
                             kind == BAD_IMPERSONATE ? 2 : 3, bytes);
  len = QRAFT_WIRE_PREAMBLE_BYTES;
  bytes[len++] = QRAFT_RAFT_STREAM_MESSAGES;
  uint32_t body = kind == BAD_OVERSIZED ? 0x7fffffffu : 10;
  memcpy(bytes + len, &body, 4); /* little-endian length */
  len += 4;
  memset(bytes + len, 0xff, 10); /* not a protobuf frame */
  len += 10;
  int64_t sid;
  assert_int_equal(qraft_conn_stream_open(evil->raw_conn, false, &sid), 0);
  assert_int_equal(qraft_conn_stream_send(evil->raw_conn, sid,
                                          qraft_slice_of(NULL, bytes, len),
                                          false),
                   0);
  assert_true(run_until(&w, evil_closed, NULL, 10));
  assert_true(evil->last_down.remote);
  assert_true(evil->last_down.app);
  assert_int_equal(evil->last_down.app_code, want_code);
  /* Members 1 and 2 talk on. */
  uint64_t n = 10;
  send_appends(&w, 1, n);
  assert_true(run_until(&w, appends_in, &n, 10));
  assert_true(w.nodes[0].reachable[2]);
  rworld_close(&w);
}

/* ---- snapshots beside heartbeats ---- */

typedef struct beat {
  rworld *w;
  qraft_env_timer *t;
  uint64_t sent;
} beat;

static void beat_cb(void *ud) {
  beat *b = ud;
  rnode *r = &b->w->nodes[0];
  qraft_message m = {.type = QRAFT_MSG_HEARTBEAT, .from = 1, .to = 2,
                     .term = 1, .commit = qraft_env_now_ns(r->env)};
  if (qraft_raft_net_send(r->net, &m, NULL) == 0) {
    b->sent++;
  }
  qraft_env_timer_arm(b->t, qraft_env_now_ns(r->env) + MS);
}

static bool snapshot_done(rworld *w, void *arg) {
  (void)arg;
  return w->nodes[1].snapshots > 0 && w->nodes[0].snap_status != 1;
}

static void snapshot_streams_beside_heartbeats(void **st) {
  (void)st;
  rworld w;
  rworld_init(&w, true, 2, 3);
  /* 1 ms each way: the snapshot takes many round trips. */
  qraft_simnet_faults f = {.delay_min_ns = MS, .delay_max_ns = MS};
  qraft_simnet_set_faults(w.net, &f);
  rworld_members(&w, 2);
  settle(&w);
  size_t snap_bytes = 4u << 20;
  qraft_buf *data = qraft_buf_new(snap_bytes);
  for (size_t k = 0; k < snap_bytes; k++) {
    data->data[k] = (uint8_t)(k * 7);
  }
  data->len = snap_bytes;
  qraft_snapshot snap = {.data = qraft_slice_of(data, data->data, snap_bytes),
                         .metadata = {.index = 100, .term = 2}};
  qraft_message m = {.type = QRAFT_MSG_SNAPSHOT, .from = 1, .to = 2,
                     .term = 2, .snapshot = &snap};
  beat b = {.w = &w};
  assert_int_equal(qraft_env_timer_new(w.nodes[0].env, beat_cb, &b, &b.t), 0);
  beat_cb(&b);
  assert_int_equal(qraft_raft_net_send(w.nodes[0].net, &m, NULL), 0);
  assert_int_equal(qraft_raft_net_send(w.nodes[0].net, &m, NULL), QRAFT_EBUSY);
  qraft_slice_release(&snap.data);
  qraft_buf_unref(data);
  assert_true(run_until(&w, snapshot_done, NULL, 60));
  qraft_env_timer_free(b.t);
  rnode *r = &w.nodes[1];
  assert_int_equal(w.nodes[0].snap_status, 0);
  assert_int_equal(r->snap_len, snap_bytes);
  assert_true(r->snap_ok);
  /* Heartbeats kept flowing while the snapshot was on its way, and none
   * waited long behind it. */
  fprintf(stderr, "snapshot %zu bytes; %llu heartbeats before it, max "
          "heartbeat latency %.2f ms\n", r->snap_len,
          (unsigned long long)r->hb_before_snapshot,
          (double)r->hb_latency_max_ns / 1e6);
  assert_true(r->hb_before_snapshot >= 5);
  assert_true(r->hb_latency_max_ns < 20 * MS);
  rworld_close(&w);
}

/* ---- streamed snapshots: into a sink, cut midway, refused ---- */

static bool streamed(rworld *w, void *arg) {
  (void)arg;
  return w->nodes[1].sink_delivered > 0 && w->nodes[0].snap_status != 1;
}

static bool sink_holds(rworld *w, void *arg) {
  return w->nodes[1].sink_bytes >= *(uint64_t *)arg;
}

static bool sent_status(rworld *w, void *arg) {
  (void)arg;
  return w->nodes[0].snap_status != 1;
}

static void stream_world(rworld *w, uint64_t seed) {
  rworld_init(w, true, 2, seed);
  qraft_simnet_faults f = {.delay_min_ns = MS, .delay_max_ns = MS};
  qraft_simnet_set_faults(w->net, &f);
  w->nodes[1].streaming = true;
  rworld_members(w, 2);
  settle(w);
}

static int send_gen(rworld *w, gen_src *g) {
  qraft_snapshot snap = {.metadata = {.index = 100, .term = 2}};
  qraft_message m = {.type = QRAFT_MSG_SNAPSHOT, .from = 1, .to = 2,
                     .term = 2, .snapshot = &snap};
  qraft_raft_snapshot_source src = {
      .bytes = g->unknown ? QRAFT_RAFT_SNAPSHOT_BYTES_UNKNOWN : g->bytes,
      .read = gen_read, .close = gen_close, .ctx = g};
  w->nodes[0].snap_status = 1;
  return qraft_raft_net_send_snapshot(w->nodes[0].net, &m, &src, NULL);
}

/* 24 MiB go from a source to a sink while the sender never holds more than
 * its in-flight bound (1 MiB) and a chunk unacknowledged, and heartbeats
 * pass it. */
static void snapshot_streams_from_source_to_sink(void **st) {
  (void)st;
  rworld w;
  stream_world(&w, 5);
  gen_src g = {.bytes = 24u << 20};
  beat b = {.w = &w};
  assert_int_equal(qraft_env_timer_new(w.nodes[0].env, beat_cb, &b, &b.t), 0);
  beat_cb(&b);
  assert_int_equal(send_gen(&w, &g), 0);
  gen_src g2 = {.bytes = 10};
  assert_int_equal(send_gen(&w, &g2), QRAFT_EBUSY); /* one at a time */
  w.nodes[0].snap_status = 1;
  qraft_conn *c = qraft_endpoint_conn(w.nodes[0].ep,
                                      &w.nodes[1].key.public_key,
                                      QRAFT_RAFT_ALPN);
  uint64_t unacked_max = 0, snap_mem_max = 0;
  for (uint64_t want = 1u << 20; want <= g.bytes; want += 1u << 20) {
    assert_true(run_until(&w, sink_holds, &want, 30));
    uint64_t u = qraft_conn_unacked_bytes(c);
    unacked_max = u > unacked_max ? u : unacked_max;
    /* the handler's account: the snapshot's part of what it holds */
    qraft_raft_net_memory m;
    qraft_raft_net_memory_get(w.nodes[0].net, &m);
    assert_true(m.snapshot_out_bytes <= m.send_bytes);
    assert_true(m.send_bytes <= u + 64 * 1024 + 4096);
    snap_mem_max = m.snapshot_out_bytes > snap_mem_max ? m.snapshot_out_bytes
                                                       : snap_mem_max;
  }
  assert_true(run_until(&w, streamed, NULL, 30));
  assert_true(snap_mem_max > 0);
  assert_true(snap_mem_max <= (1u << 20) + 2 * 64 * 1024 + 4096);
  for (int i = 0; i < 2; i++) { /* received whole: nothing held for it */
    qraft_raft_net_memory m;
    qraft_raft_net_memory_get(w.nodes[i].net, &m);
    assert_int_equal(m.snapshot_in_bytes, 0);
  }
  qraft_env_timer_free(b.t);
  rnode *r = &w.nodes[1];
  fprintf(stderr, "streamed %llu bytes; unacked at most %llu; max heartbeat "
          "latency %.2f ms\n", (unsigned long long)r->delivered_bytes,
          (unsigned long long)unacked_max, (double)r->hb_latency_max_ns / 1e6);
  assert_int_equal(w.nodes[0].snap_status, 0);
  assert_int_equal(g.closes, 1);
  assert_int_equal(r->delivered_bytes, g.bytes);
  assert_int_equal(r->delivered_index, 100);
  assert_true(r->sink_pattern_ok);
  assert_int_equal(r->sink_aborts, 0);
  assert_int_equal(r->sinks_open, 0);
  assert_true(unacked_max <= (1u << 20) + 64 * 1024 + 4096);
  assert_true(r->hb_latency_max_ns < 20 * MS);
  rworld_close(&w);
}

/* A source that does not know its length ahead (a state machine's view)
 * streams in framed chunks: every size arrives whole into a sink, the
 * receiver told the length is unknown; a source that fails midway resets
 * the stream and nothing is delivered. */
static void unknown_length_snapshot_streams_in_chunks(void **st) {
  (void)st;
  rworld w;
  stream_world(&w, 12);
  uint64_t sizes[] = {0, 1, 64 * 1024, 64 * 1024 + 1, (3u << 20) + 17};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    gen_src g = {.bytes = sizes[i], .unknown = true};
    int delivered = w.nodes[1].sink_delivered;
    assert_int_equal(send_gen(&w, &g), 0);
    assert_true(run_until(&w, streamed, NULL, 30));
    rnode *r = &w.nodes[1];
    assert_int_equal(w.nodes[0].snap_status, 0);
    assert_int_equal(g.closes, 1);
    assert_int_equal(r->begin_bytes, QRAFT_RAFT_SNAPSHOT_BYTES_UNKNOWN);
    assert_int_equal(r->sink_delivered, delivered + 1);
    assert_int_equal(r->delivered_bytes, sizes[i]);
    assert_true(r->sink_pattern_ok);
    assert_int_equal(r->sink_aborts, 0);
    r->sink_delivered = delivered + 1;
  }
  gen_src g = {.bytes = 8u << 20, .fail_at = 3u << 20, .unknown = true};
  assert_int_equal(send_gen(&w, &g), 0);
  assert_true(run_until(&w, sent_status, NULL, 30));
  assert_int_equal(w.nodes[0].snap_status, -EIO);
  qraft_env_run(w.nodes[0].env, qraft_env_now_ns(w.nodes[0].env) + SEC, NULL,
                NULL);
  assert_int_equal(w.nodes[1].sink_aborts, 1);
  assert_int_equal(w.nodes[1].sinks_open, 0);
  assert_int_equal(w.nodes[1].sink_delivered,
                   (int)(sizeof sizes / sizeof *sizes));
  rworld_close(&w);
}

/* Without a sink, a snapshot of unknown length is received into memory,
 * grown as it comes, up to snapshot_bytes_max; past it the connection is
 * closed with QRAFT_CLOSE_LIMIT (nothing delivered) and the next snapshot,
 * within the limit, arrives whole on a new one. */
static void unknown_length_snapshot_into_memory_is_bounded(void **st) {
  (void)st;
  rworld w;
  rworld_init(&w, true, 2, 13);
  w.nodes[1].snap_bytes_max = 2u << 20;
  rworld_members(&w, 2);
  settle(&w);
  gen_src g = {.bytes = (2u << 20) + 1, .unknown = true};
  assert_int_equal(send_gen(&w, &g), 0);
  assert_true(run_until(&w, sent_status, NULL, 30));
  assert_int_equal(w.nodes[0].snap_status, QRAFT_ECLOSED);
  assert_int_equal(w.nodes[1].snapshots, 0);
  settle(&w);
  gen_src g2 = {.bytes = (1u << 20) + 3, .unknown = true};
  assert_int_equal(send_gen(&w, &g2), 0);
  assert_true(run_until(&w, snapshot_done, NULL, 30));
  assert_int_equal(w.nodes[0].snap_status, 0);
  assert_int_equal(w.nodes[1].snapshots, 1);
  assert_int_equal(w.nodes[1].snap_len, g2.bytes);
  assert_true(w.nodes[1].snap_gen_ok);
  qraft_raft_net_memory m;
  qraft_raft_net_memory_get(w.nodes[1].net, &m);
  assert_int_equal(m.snapshot_in_bytes, 0);
  rworld_close(&w);
}

/* A connection lost midway aborts the sink (nothing is delivered) and
 * fails the send; the next attempt goes through whole. */
static void snapshot_cut_midway_is_never_delivered(void **st) {
  (void)st;
  rworld w;
  stream_world(&w, 6);
  gen_src g = {.bytes = 8u << 20};
  assert_int_equal(send_gen(&w, &g), 0);
  uint64_t want = 2u << 20;
  assert_true(run_until(&w, sink_holds, &want, 30));
  qraft_conn *c = qraft_endpoint_conn(w.nodes[0].ep,
                                      &w.nodes[1].key.public_key,
                                      QRAFT_RAFT_ALPN);
  qraft_conn_close(c, QRAFT_CLOSE_UNWANTED, "test cuts the snapshot");
  assert_true(run_until(&w, sent_status, NULL, 10));
  assert_int_equal(w.nodes[0].snap_status, QRAFT_ECLOSED);
  assert_int_equal(g.closes, 1);
  rnode *r = &w.nodes[1];
  qraft_env_run(w.nodes[0].env, qraft_env_now_ns(w.nodes[0].env) + SEC, NULL,
                NULL);
  assert_int_equal(r->sink_aborts, 1);
  assert_int_equal(r->sink_delivered, 0);
  assert_int_equal(r->sinks_open, 0);
  /* The members dial again; the retry arrives whole. */
  settle(&w);
  gen_src g2 = {.bytes = 3u << 20};
  assert_int_equal(send_gen(&w, &g2), 0);
  assert_true(run_until(&w, streamed, NULL, 30));
  assert_int_equal(w.nodes[0].snap_status, 0);
  assert_int_equal(r->sink_delivered, 1);
  assert_int_equal(r->delivered_bytes, g2.bytes);
  assert_true(r->sink_pattern_ok);
  rworld_close(&w);
}

/* A source that fails midway resets the stream: the receiver aborts. */
static void snapshot_source_error_resets_the_stream(void **st) {
  (void)st;
  rworld w;
  stream_world(&w, 7);
  gen_src g = {.bytes = 8u << 20, .fail_at = 3u << 20};
  assert_int_equal(send_gen(&w, &g), 0);
  assert_true(run_until(&w, sent_status, NULL, 30));
  assert_int_equal(w.nodes[0].snap_status, -EIO);
  assert_int_equal(g.closes, 1);
  qraft_env_run(w.nodes[0].env, qraft_env_now_ns(w.nodes[0].env) + SEC, NULL,
                NULL);
  rnode *r = &w.nodes[1];
  assert_int_equal(r->sink_aborts, 1);
  assert_int_equal(r->sink_delivered, 0);
  /* The connection stays: messages flow. */
  uint64_t n = 10;
  send_appends(&w, 1, n);
  assert_true(run_until(&w, appends_in, &n, 10));
  rworld_close(&w);
}

/* A receiver that cannot take a snapshot stops its stream: the sender
 * learns it failed, and the connection serves on. */
static void refused_snapshot_stops_only_its_stream(void **st) {
  (void)st;
  rworld w;
  stream_world(&w, 8);
  w.nodes[1].refuse = -ENOSPC;
  gen_src g = {.bytes = 8u << 20};
  assert_int_equal(send_gen(&w, &g), 0);
  assert_true(run_until(&w, sent_status, NULL, 30));
  assert_int_equal(w.nodes[0].snap_status, QRAFT_ECLOSED);
  assert_int_equal(g.closes, 1);
  assert_true(g.off < g.bytes); /* stopped, not sent to the end */
  uint64_t n = 10;
  send_appends(&w, 1, n);
  assert_true(run_until(&w, appends_in, &n, 10));
  assert_int_equal(w.nodes[1].sink_delivered, 0);
  rworld_close(&w);
}

/* Many snapshots one after another on one connection: every stream is
 * closed on both sides, so the peer's stream limit (64) never runs out. */
static void many_snapshots_reuse_the_stream_budget(void **st) {
  (void)st;
  rworld w;
  stream_world(&w, 10);
  for (int i = 0; i < 150; i++) {
    gen_src g = {.bytes = 1000 + (uint64_t)i};
    int delivered = w.nodes[1].sink_delivered;
    assert_int_equal(send_gen(&w, &g), 0);
    assert_true(run_until(&w, streamed, NULL, 10));
    assert_int_equal(w.nodes[0].snap_status, 0);
    assert_int_equal(w.nodes[1].sink_delivered, delivered + 1);
    w.nodes[1].sink_delivered = delivered + 1;
  }
  rworld_close(&w);
}

/* Refused snapshots free their streams too: after 100 refusals (more than
 * the peer's stream budget of 64, and than snapshot_streams_max), the
 * next snapshot goes through on the same connection. */
static void many_refused_snapshots_leave_nothing_behind(void **st) {
  (void)st;
  rworld w;
  stream_world(&w, 11);
  w.nodes[1].refuse = -ENOSPC;
  for (int i = 0; i < 100; i++) {
    gen_src g = {.bytes = 1000 + (uint64_t)i * ((i % 2) ? 1 : 3000)};
    assert_int_equal(send_gen(&w, &g), 0);
    assert_true(run_until(&w, sent_status, NULL, 10));
    assert_int_equal(g.closes, 1);
  }
  w.nodes[1].refuse = 0;
  gen_src g = {.bytes = 5000};
  assert_int_equal(send_gen(&w, &g), 0);
  assert_true(run_until(&w, streamed, NULL, 10));
  assert_int_equal(w.nodes[0].snap_status, 0);
  assert_int_equal(w.nodes[1].sink_delivered, 1);
  assert_int_equal(w.nodes[1].delivered_bytes, 5000);
  qraft_peer_metrics pm;
  assert_int_equal(qraft_endpoint_peer_metrics(w.nodes[0].ep,
                                               &w.nodes[1].key.public_key,
                                               QRAFT_RAFT_ALPN, &pm),
                   0);
  assert_int_equal(pm.reconnects, 0); /* one connection all along */
  rworld_close(&w);
}

/* A member gone bad sends a snapshot stream by hand: kind 3 with a wrong
 * CRC-32C, or kind 2 (a snapshot whole in one frame, before streaming). */
static void evil_snapshot_is_closed(int kind, bool bad_crc) {
  rworld w;
  rworld_init(&w, true, 3, 9);
  w.nodes[0].streaming = true;
  rworld_members(&w, 2);
  rnode *evil = evil_connect(&w);

  uint8_t data[10];
  for (size_t i = 0; i < sizeof data; i++) {
    data[i] = snap_byte(i);
  }
  qraft_snapshot snap = {.metadata = {.index = 50, .term = 1}};
  if (kind == 2) {
    snap.data = qraft_slice_of(NULL, data, sizeof data);
  }
  qraft_message m = {.type = QRAFT_MSG_SNAPSHOT, .from = 3, .to = 1,
                     .term = 1, .snapshot = &snap};
  qraft_buf *frame = NULL;
  assert_int_equal(
      qraft_wire_frame_encode_buf(0, &m, 1, NULL, NULL, &frame, NULL), 0);
  uint8_t bytes[256];
  size_t len = 0;
  qraft_wire_preamble_encode(CLUSTER, 3, bytes);
  len = QRAFT_WIRE_PREAMBLE_BYTES;
  bytes[len++] = (uint8_t)kind;
  assert_true(frame->len + 22 + len < sizeof bytes);
  memcpy(bytes + len, frame->data, frame->len);
  len += frame->len;
  qraft_buf_unref(frame);
  if (kind == QRAFT_RAFT_STREAM_SNAPSHOT) {
    memset(bytes + len, 0, 8);
    bytes[len + 7] = sizeof data;
    len += 8;
    memcpy(bytes + len, data, sizeof data);
    len += sizeof data;
    uint32_t crc = qraft_crc32c(0, data, sizeof data) ^ (bad_crc ? 1u : 0u);
    for (int i = 0; i < 4; i++) {
      bytes[len++] = (uint8_t)(crc >> (24 - 8 * i));
    }
  }
  int64_t sid;
  assert_int_equal(qraft_conn_stream_open(evil->raw_conn, false, &sid), 0);
  assert_int_equal(qraft_conn_stream_send(evil->raw_conn, sid,
                                          qraft_slice_of(NULL, bytes, len),
                                          true),
                   0);
  assert_true(run_until(&w, evil_closed, NULL, 10));
  assert_int_equal(evil->last_down.app_code, QRAFT_CLOSE_PROTOCOL);
  rnode *r = &w.nodes[0];
  assert_int_equal(r->sink_delivered, 0);
  assert_int_equal(r->sinks_open, 0);
  assert_int_equal(r->sink_aborts, kind == QRAFT_RAFT_STREAM_SNAPSHOT ? 1 : 0);
  /* Members 1 and 2 talk on. */
  uint64_t n = 10;
  send_appends(&w, 1, n);
  assert_true(run_until(&w, appends_in, &n, 10));
  rworld_close(&w);
}

static void bad_snapshot_checksum_closes_the_peer(void **st) {
  (void)st;
  evil_snapshot_is_closed(QRAFT_RAFT_STREAM_SNAPSHOT, true);
}

static void whole_frame_snapshot_stream_is_refused(void **st) {
  (void)st;
  evil_snapshot_is_closed(2, false);
}

static void uv_messages(void **st) {
  (void)st;
  messages_arrive_in_order(false, 0);
}
static void sim_messages(void **st) {
  (void)st;
  messages_arrive_in_order(true, 0);
}
/* 5% loss, 1% duplication, reordering: every message once, in order. */
static void sim_messages_lossy(void **st) {
  (void)st;
  messages_arrive_in_order(true, 50000);
}
static void malformed_frame_closes_only_that_peer(void **st) {
  (void)st;
  bad_peer_is_closed_alone(BAD_GARBAGE, QRAFT_CLOSE_PROTOCOL);
}
static void oversized_frame_closes_only_that_peer(void **st) {
  (void)st;
  bad_peer_is_closed_alone(BAD_OVERSIZED, QRAFT_CLOSE_LIMIT);
}
static void other_cluster_is_closed(void **st) {
  (void)st;
  bad_peer_is_closed_alone(BAD_CLUSTER, QRAFT_CLOSE_PROTOCOL);
}
static void impersonation_is_closed(void **st) {
  (void)st;
  bad_peer_is_closed_alone(BAD_IMPERSONATE, QRAFT_CLOSE_PROTOCOL);
}

int main(int argc, char **argv) {
  if (argc > 1) {
    cmocka_set_test_filter(argv[1]);
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(uv_messages),
      cmocka_unit_test(sim_messages),
      cmocka_unit_test(sim_messages_lossy),
      cmocka_unit_test(sim_back_pressure_refuses_rather_than_drops),
      cmocka_unit_test(malformed_frame_closes_only_that_peer),
      cmocka_unit_test(oversized_frame_closes_only_that_peer),
      cmocka_unit_test(other_cluster_is_closed),
      cmocka_unit_test(impersonation_is_closed),
      cmocka_unit_test(snapshot_streams_beside_heartbeats),
      cmocka_unit_test(snapshot_streams_from_source_to_sink),
      cmocka_unit_test(unknown_length_snapshot_streams_in_chunks),
      cmocka_unit_test(unknown_length_snapshot_into_memory_is_bounded),
      cmocka_unit_test(snapshot_cut_midway_is_never_delivered),
      cmocka_unit_test(snapshot_source_error_resets_the_stream),
      cmocka_unit_test(refused_snapshot_stops_only_its_stream),
      cmocka_unit_test(bad_snapshot_checksum_closes_the_peer),
      cmocka_unit_test(many_snapshots_reuse_the_stream_budget),
      cmocka_unit_test(many_refused_snapshots_leave_nothing_behind),
      cmocka_unit_test(whole_frame_snapshot_stream_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

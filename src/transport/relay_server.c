/*
 * relay_server.c: the relay server (qraft/relay.h has what it does). It is
 * a protocol handler of an endpoint, built on the public transport API, so
 * the same code runs in qraft-relay and in the simulator.
 */
#include <qraft/assert.h>
#include <qraft/relay.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MS 1000000ull
#define TICK_MS 250u

typedef struct rs_client {
  struct rs_client *next;
  qraft_relay_server *srv;
  qraft_conn *conn;
  qraft_node_id id;
  int64_t sid; /* the client's stream, -1 until its first frame */
  bool active; /* gets the datagrams sent to its id */
  uint64_t seq;
  qraft_relay_reader rd;
  double tokens;
  uint64_t tokens_ns;
  uint64_t full_since_ns; /* 0: its queue is not full */
  uint64_t next_ping_ns;
  bool ping_out;
  uint8_t ping[8];
  uint64_t ping_sent_ns;
  uint64_t up_ns; /* when it connected */
  bool closing;
} rs_client;

struct qraft_relay_server {
  qraft_relay_server_config cfg;
  qraft_endpoint *ep;
  qraft_env *env;
  qraft_logger *log;
  rs_client *clients;
  uint64_t seq;
  qraft_env_timer *tick;
  qraft_relay_server_metrics m;
};

static uint64_t now_ns(qraft_relay_server *s) {
  return qraft_env_now_ns(s->env);
}

/* When to ping a client next: the interval plus up to a quarter more. */
static uint64_t next_ping(qraft_relay_server *s, uint64_t now) {
  uint64_t jitter;
  qraft_env_random(s->env, &jitter, sizeof jitter);
  return now + (s->cfg.ping_interval_ms +
                jitter % (s->cfg.ping_interval_ms / 4 + 1)) *
                   MS;
}

/* Queues a frame for `c`, within its bound: every frame (datagrams, and
 * the PONGs and PEER_GONEs a client makes the relay send) counts against
 * queue_bytes_max, so a client that does not read gets dropped frames and,
 * after write_timeout_ms of that, is closed. Returns QRAFT_EBUSY when the
 * queue is full. */
static int send_frame(rs_client *c, const qraft_relay_frame *f) {
  if (c->sid < 0 || c->closing) {
    return QRAFT_EUNAVAILABLE;
  }
  size_t need = qraft_relay_frame_size(f);
  if (need == 0) {
    return QRAFT_EMALFORMED;
  }
  qraft_relay_server *s = c->srv;
  if (qraft_conn_unacked_bytes(c->conn) + need > s->cfg.queue_bytes_max) {
    s->m.drops_queue++;
    if (c->full_since_ns == 0) {
      c->full_since_ns = now_ns(s);
    }
    return QRAFT_EBUSY;
  }
  return qraft_relay_frame_send(c->conn, c->sid, f);
}

static void close_client(rs_client *c, uint64_t code, const char *why) {
  if (c->closing) {
    return;
  }
  c->closing = true;
  qraft_conn_close(c->conn, code, why); /* may free c (conn_down) */
}

static rs_client *active_for(qraft_relay_server *s, const qraft_node_id *id) {
  for (rs_client *c = s->clients; c != NULL; c = c->next) {
    if (c->active && !c->closing && qraft_node_id_eq(&c->id, id)) {
      return c;
    }
  }
  return NULL;
}

static void send_status(rs_client *c, uint8_t status) {
  qraft_relay_frame f = {.type = QRAFT_RELAY_STATUS, .status = status};
  (void)send_frame(c, &f);
}

/* The first frame opened the client's stream: greet it. */
static void hello(rs_client *c) {
  qraft_relay_frame f = {.type = QRAFT_RELAY_OBSERVED_ADDR};
  if (qraft_conn_remote_addr(c->conn, &f.addr)) {
    (void)send_frame(c, &f);
  }
  send_status(c, c->active ? QRAFT_RELAY_STATUS_HEALTHY
                           : QRAFT_RELAY_STATUS_SAME_ID_ELSEWHERE);
}

static bool rate_ok(qraft_relay_server *s, rs_client *c, size_t bytes) {
  if (s->cfg.rx_bytes_per_s == 0) {
    return true;
  }
  uint64_t now = now_ns(s);
  double burst = (double)s->cfg.rx_burst_bytes;
  c->tokens += (double)(now - c->tokens_ns) * 1e-9 *
               (double)s->cfg.rx_bytes_per_s;
  if (c->tokens > burst) {
    c->tokens = burst;
  }
  c->tokens_ns = now;
  if (c->tokens < (double)bytes) {
    return false;
  }
  c->tokens -= (double)bytes;
  return true;
}

/* Forwards a datagram (or batch) from `from` to the client of its id. */
static void forward(qraft_relay_server *s, rs_client *from,
                    const qraft_relay_frame *f) {
  s->m.datagrams_in++;
  s->m.bytes_in += f->data_len;
  if (!rate_ok(s, from, f->data_len)) {
    s->m.drops_rate++;
    return;
  }
  rs_client *to = active_for(s, &f->peer);
  if (to == NULL || to->sid < 0) {
    bool any = false;
    for (rs_client *c = s->clients; c != NULL; c = c->next) {
      any |= qraft_node_id_eq(&c->id, &f->peer) && !c->closing;
    }
    if (any) {
      s->m.drops_inactive++;
      return;
    }
    s->m.drops_no_peer++;
    qraft_relay_frame gone = {.type = QRAFT_RELAY_PEER_GONE, .peer = f->peer};
    (void)send_frame(from, &gone);
    return;
  }
  qraft_relay_frame out = *f;
  out.type = f->type == QRAFT_RELAY_SEND ? QRAFT_RELAY_RECV
                                         : QRAFT_RELAY_RECV_BATCH;
  out.peer = from->id;
  if (send_frame(to, &out) == 0) { /* a full queue counts the drop */
    s->m.datagrams_out++;
    s->m.bytes_out += f->data_len;
  }
}

static int on_frame(void *ud, const qraft_relay_frame *f) {
  rs_client *c = ud;
  qraft_relay_server *s = c->srv;
  switch (f->type) {
  case QRAFT_RELAY_SEND:
  case QRAFT_RELAY_SEND_BATCH:
    forward(s, c, f);
    break;
  case QRAFT_RELAY_PING: {
    if (!rate_ok(s, c, 8)) {
      s->m.drops_rate++;
      break;
    }
    qraft_relay_frame pong = {.type = QRAFT_RELAY_PONG};
    memcpy(pong.ping, f->ping, sizeof pong.ping);
    (void)send_frame(c, &pong);
    break;
  }
  case QRAFT_RELAY_PONG:
    if (c->ping_out && memcmp(f->ping, c->ping, sizeof c->ping) == 0) {
      c->ping_out = false;
    }
    break;
  case QRAFT_RELAY_RECV:
  case QRAFT_RELAY_RECV_BATCH:
  case QRAFT_RELAY_PEER_GONE:
  case QRAFT_RELAY_RESTARTING:
  case QRAFT_RELAY_STATUS:
  case QRAFT_RELAY_OBSERVED_ADDR:
    /* Frames only a relay sends. */
    return QRAFT_EMALFORMED;
  default:
    break; /* HEALTH and unknown frames: skipped */
  }
  return c->closing ? QRAFT_ECLOSED : 0;
}

static void on_up(void *ud, qraft_conn *conn, bool dialed) {
  qraft_relay_server *s = ud;
  if (dialed) {
    qraft_conn_close(conn, QRAFT_CLOSE_UNWANTED, "a relay dials no one");
    return;
  }
  rs_client *c = calloc(1, sizeof *c);
  if (c == NULL) {
    qraft_conn_close(conn, QRAFT_CLOSE_LIMIT, "out of memory");
    return;
  }
  uint64_t now = now_ns(s);
  c->srv = s;
  c->conn = conn;
  c->id = *qraft_conn_peer(conn);
  c->sid = -1;
  c->seq = ++s->seq;
  c->tokens = (double)s->cfg.rx_burst_bytes;
  c->tokens_ns = now;
  c->up_ns = now;
  c->next_ping_ns = next_ping(s, now);
  rs_client *old = active_for(s, &c->id);
  if (old != NULL) {
    /* iroh >= 0.97: the newest serves the id; the old one is told. */
    old->active = false;
    send_status(old, QRAFT_RELAY_STATUS_SAME_ID_ELSEWHERE);
    s->m.duplicate_ids++;
    char hex[QRAFT_NODE_ID_HEX_SIZE];
    qraft_node_id_to_hex(&c->id, hex);
    QRAFT_LOG(s->log, QRAFT_LOG_WARN,
              "a second connection with the same id: the newest is served",
              QRAFT_LOG_STR("id", hex));
  }
  c->active = true;
  c->next = s->clients;
  s->clients = c;
  s->m.clients++;
  s->m.clients_accepted++;
}

static void on_down(void *ud, qraft_conn *conn, const qraft_close_info *why) {
  (void)why;
  qraft_relay_server *s = ud;
  for (rs_client **pp = &s->clients; *pp != NULL; pp = &(*pp)->next) {
    rs_client *c = *pp;
    if (c->conn != conn) {
      continue;
    }
    *pp = c->next;
    s->m.clients--;
    if (c->active) {
      /* The next newest connection of the id is served again. */
      rs_client *next = NULL;
      for (rs_client *x = s->clients; x != NULL; x = x->next) {
        if (!x->closing && qraft_node_id_eq(&x->id, &c->id) &&
            (next == NULL || x->seq > next->seq)) {
          next = x;
        }
      }
      if (next != NULL) {
        next->active = true;
        send_status(next, QRAFT_RELAY_STATUS_HEALTHY);
      }
    }
    qraft_relay_reader_free(&c->rd);
    free(c);
    return;
  }
}

static void on_recv(void *ud, qraft_conn *conn, int64_t sid,
                    const uint8_t *data, size_t len, bool fin) {
  qraft_relay_server *s = ud;
  rs_client *c = NULL;
  for (rs_client *x = s->clients; x != NULL; x = x->next) {
    if (x->conn == conn) {
      c = x;
    }
  }
  if (c == NULL || c->closing) {
    return;
  }
  if (c->sid < 0) {
    c->sid = sid;
    hello(c);
  } else if (sid != c->sid) {
    return; /* one stream per client; others are ignored */
  }
  int rv = qraft_relay_reader_feed(&c->rd, data, len, on_frame, c, NULL);
  if (rv == QRAFT_ECLOSED) {
    return;
  }
  if (rv != 0) {
    s->m.protocol_errors++;
    close_client(c, QRAFT_CLOSE_PROTOCOL, "bad relay frame");
    return;
  }
  if (fin) {
    close_client(c, QRAFT_CLOSE_NORMAL, "stream finished");
  }
}

static void on_acked(void *ud, qraft_conn *conn, uint64_t unacked) {
  qraft_relay_server *s = ud;
  for (rs_client *c = s->clients; c != NULL; c = c->next) {
    if (c->conn == conn && unacked < s->cfg.queue_bytes_max) {
      c->full_since_ns = 0;
    }
  }
}

static void tick_cb(void *ud) {
  qraft_relay_server *s = ud;
  uint64_t now = now_ns(s);
  rs_client *c = s->clients;
  while (c != NULL) {
    rs_client *next = c->next; /* closing may free c */
    if (c->closing) {
      c = next;
      continue;
    }
    if (c->sid < 0 && now - c->up_ns >= s->cfg.ping_timeout_ms * MS) {
      /* connected, and never opened its stream */
      s->m.ping_timeouts++;
      close_client(c, QRAFT_CLOSE_PROTOCOL, "no relay stream");
    } else if (c->full_since_ns != 0 &&
        now - c->full_since_ns >= s->cfg.write_timeout_ms * MS) {
      s->m.write_timeouts++;
      close_client(c, QRAFT_CLOSE_LIMIT, "write timeout");
    } else if (c->ping_out &&
               now - c->ping_sent_ns >= s->cfg.ping_timeout_ms * MS) {
      s->m.ping_timeouts++;
      close_client(c, QRAFT_CLOSE_LIMIT, "no pong");
    } else if (!c->ping_out && c->sid >= 0 && now >= c->next_ping_ns) {
      qraft_relay_frame ping = {.type = QRAFT_RELAY_PING};
      qraft_env_random(s->env, ping.ping, sizeof ping.ping);
      memcpy(c->ping, ping.ping, sizeof c->ping);
      if (send_frame(c, &ping) == 0) {
        c->ping_out = true;
        c->ping_sent_ns = now;
      }
      c->next_ping_ns = next_ping(s, now);
    }
    c = next;
  }
  qraft_env_timer_arm(s->tick, now + TICK_MS * MS);
}

int qraft_relay_server_new(const qraft_relay_server_config *cfg,
                           qraft_relay_server **out, qraft_err *err) {
  if (cfg->ep == NULL) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "relay server needs an endpoint");
  }
  qraft_relay_server *s = calloc(1, sizeof *s);
  if (s == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "relay server");
  }
  s->cfg = *cfg;
  if (s->cfg.queue_bytes_max == 0) {
    s->cfg.queue_bytes_max = 768u << 10;
  }
  if (s->cfg.write_timeout_ms == 0) {
    s->cfg.write_timeout_ms = 2000;
  }
  if (s->cfg.ping_interval_ms == 0) {
    s->cfg.ping_interval_ms = 15000;
  }
  if (s->cfg.ping_timeout_ms == 0) {
    s->cfg.ping_timeout_ms = 5000;
  }
  if (s->cfg.rx_burst_bytes == 0) {
    s->cfg.rx_burst_bytes = s->cfg.rx_bytes_per_s;
  }
  if (s->cfg.rx_bytes_per_s != 0 &&
      s->cfg.rx_burst_bytes < QRAFT_RELAY_DATAGRAM_MAX) {
    free(s);
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "rx_burst_bytes must hold the largest datagram (%u)",
                     QRAFT_RELAY_DATAGRAM_MAX);
  }
  s->ep = cfg->ep;
  s->env = qraft_endpoint_env(cfg->ep);
  s->log = cfg->logger;
  int rv = qraft_env_timer_new(s->env, tick_cb, s, &s->tick);
  if (rv != 0) {
    free(s);
    return QRAFT_ERR(err, rv, "relay server timer");
  }
  static const qraft_protocol_ops ops = {.conn_up_cb = on_up,
                                         .conn_down_cb = on_down,
                                         .stream_recv_cb = on_recv,
                                         .acked_cb = on_acked};
  rv = qraft_endpoint_register_unpooled(cfg->ep, QRAFT_RELAY_ALPN, &ops, s);
  if (rv != 0) {
    qraft_env_timer_free(s->tick);
    free(s);
    return QRAFT_ERR(err, rv, "register %s", QRAFT_RELAY_ALPN);
  }
  qraft_env_timer_arm(s->tick, now_ns(s) + TICK_MS * MS);
  *out = s;
  return 0;
}

void qraft_relay_server_free(qraft_relay_server *s) {
  if (s == NULL) {
    return;
  }
  while (s->clients != NULL) {
    rs_client *c = s->clients;
    s->clients = c->next;
    qraft_relay_reader_free(&c->rd);
    free(c);
  }
  qraft_env_timer_free(s->tick);
  free(s);
}

void qraft_relay_server_metrics_get(const qraft_relay_server *s,
                                    qraft_relay_server_metrics *out) {
  *out = s->m;
}

uint32_t qraft_relay_server_close_if(qraft_relay_server *s,
                                     bool (*keep)(void *ud,
                                                  const qraft_node_id *id),
                                     void *ud) {
  uint32_t closed = 0;
  rs_client *c = s->clients;
  while (c != NULL) {
    rs_client *next = c->next; /* closing frees c */
    if (!c->closing && !keep(ud, &c->id)) {
      closed++;
      close_client(c, QRAFT_CLOSE_UNAUTHORIZED, "no longer authorized");
    }
    c = next;
  }
  return closed;
}

void qraft_relay_server_restarting(qraft_relay_server *s,
                                   uint32_t reconnect_in_ms,
                                   uint32_t try_for_ms) {
  qraft_relay_frame f = {.type = QRAFT_RELAY_RESTARTING,
                         .reconnect_in_ms = reconnect_in_ms,
                         .try_for_ms = try_for_ms};
  for (rs_client *c = s->clients; c != NULL; c = c->next) {
    (void)send_frame(c, &f);
  }
}

/*
 * endpoint.c: the endpoint around the QUIC connections: sockets, the ALPN
 * router, authorization, the connection pool (one connection per peer pair
 * and ALPN, tie-break of simultaneous dials, redial with backoff and
 * jitter), shutdown and metrics.
 *
 * No ngtcp2 or GnuTLS here (see quic.c), and no OS calls (see env).
 */
#include "transport_int.h"

#include <qraft/assert.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MS 1000000ull

typedef struct udp_ctx {
  qraft_endpoint *ep;
  uint32_t index;
} udp_ctx;

/* ---- connections ---- */

qraft_conn *qraft__ep_conn_by_tag(qraft_endpoint *ep, uint32_t tag) {
  for (qraft_conn *c = ep->conns; c != NULL; c = c->next) {
    if (c->tag == tag) {
      return c;
    }
  }
  return NULL;
}

int qraft__ep_conn_new(qraft_endpoint *ep, bool dialed, qraft_conn **out) {
  qraft_conn *c = calloc(1, sizeof *c);
  if (c == NULL) {
    return -ENOMEM;
  }
  c->ep = ep;
  c->dialed = dialed;
  c->proto = -1;
  c->hs_fail = -1;
  do {
    qraft_env_random(ep->env, &c->tag, sizeof c->tag);
  } while (c->tag == 0 || qraft__ep_conn_by_tag(ep, c->tag) != NULL);
  int rv = qraft_env_timer_new(ep->env, qraft__ep_timer_cb, c, &c->timer);
  if (rv != 0) {
    free(c);
    return rv;
  }
  c->next = ep->conns;
  if (ep->conns != NULL) {
    ep->conns->prev = c;
  }
  ep->conns = c;
  ep->conns_n++;
  *out = c;
  return 0;
}

static void counters_add(qraft_peer_metrics *m, const qraft_conn *c) {
  m->bytes_in += c->bytes_in;
  m->bytes_out += c->bytes_out;
  m->packets_in += c->packets_in;
  m->packets_out += c->packets_out;
  m->frames_in += c->frames_in;
  m->frames_out += c->frames_out;
  m->messages_in += c->messages_in;
  m->messages_out += c->messages_out;
}

void qraft__ep_conn_free(qraft_conn *c) {
  qraft_endpoint *ep = c->ep;
  QRAFT_ASSERT(c->busy == 0);
  QRAFT_ASSERT(c->state == TP_DEAD || c->state == TP_CLOSING);
  if (c->peer != NULL) {
    QRAFT_ASSERT(c->peer->up != c && c->peer->dialing != c &&
                  c->peer->held != c);
    counters_add(&c->peer->closed, c);
    qraft_peer_metrics m = {0};
    qraft__quic_stats(c, &m);
    c->peer->closed.lost_packets += m.lost_packets;
  }
  if (c->dirty) {
    for (qraft_conn **pp = &ep->dirty_head; *pp != NULL;
         pp = &(*pp)->dirty_next) {
      if (*pp == c) {
        *pp = c->dirty_next;
        break;
      }
    }
  }
  if (c->prev != NULL) {
    c->prev->next = c->next;
  } else {
    ep->conns = c->next;
  }
  if (c->next != NULL) {
    c->next->prev = c->prev;
  }
  ep->conns_n--;
  qraft__path_conn_freed(c);
  qraft_env_timer_free(c->timer);
  qraft__quic_free(c);
  free(c);
}

static void flush_cb(void *ud) {
  qraft_endpoint *ep = ud;
  while (ep->dirty_head != NULL) {
    qraft_conn *c = ep->dirty_head;
    ep->dirty_head = c->dirty_next;
    c->dirty = false;
    c->dirty_next = NULL;
    qraft__quic_write(c);
  }
}

void qraft__ep_mark_dirty(qraft_conn *c) {
  if (c->dirty) {
    return;
  }
  qraft_endpoint *ep = c->ep;
  c->dirty = true;
  c->dirty_next = ep->dirty_head;
  ep->dirty_head = c;
  qraft_env_timer_arm(ep->flush_timer, 0);
}

/* ---- the pool ---- */

static tp_peer *peer_find(qraft_endpoint *ep, const qraft_node_id *id,
                          int proto) {
  for (tp_peer *p = ep->peers; p != NULL; p = p->next) {
    if (p->proto == proto && qraft_node_id_eq(&p->id, id)) {
      return p;
    }
  }
  return NULL;
}

static void redial_cb(void *ud);
static void hold_cb(void *ud);

static tp_peer *peer_get(qraft_endpoint *ep, const qraft_node_id *id,
                         int proto) {
  tp_peer *p = peer_find(ep, id, proto);
  if (p != NULL) {
    return p;
  }
  p = calloc(1, sizeof *p);
  if (p == NULL) {
    return NULL;
  }
  p->ep = ep;
  p->id = *id;
  p->proto = proto;
  p->addr.id = *id;
  p->closed.peer = *id;
  if (qraft_env_timer_new(ep->env, redial_cb, p, &p->redial_timer) != 0) {
    free(p);
    return NULL;
  }
  if (qraft_env_timer_new(ep->env, hold_cb, p, &p->hold_timer) != 0) {
    qraft_env_timer_free(p->redial_timer);
    qraft_env_timer_free(p->hold_timer);
    free(p);
    return NULL;
  }
  p->next = ep->peers;
  ep->peers = p;
  return p;
}

static void schedule_redial(qraft_endpoint *ep, tp_peer *p) {
  uint32_t d = p->backoff_ms ? p->backoff_ms : ep->cfg.redial_min_ms;
  uint64_t r;
  qraft_env_random(ep->env, &r, sizeof r);
  /* Jitter: uniform in [d/2, d], so peers that lost each other at the same
   * moment do not redial in lockstep. */
  uint64_t delay_ms = d / 2 + r % (d / 2 + 1);
  p->backoff_ms = d * 2 < ep->cfg.redial_max_ms ? d * 2 : ep->cfg.redial_max_ms;
  qraft_env_timer_arm(p->redial_timer,
                      qraft_env_now_ns(ep->env) + delay_ms * MS);
}

static void dial_now(qraft_endpoint *ep, tp_peer *p) {
  struct sockaddr_storage vaddr;
  const struct sockaddr_storage *to;
  int rv;
  if (qraft__path_wanted(ep, p)) {
    /* Through the path layer: QUIC sees the peer's virtual address, the
     * path layer picks direct addresses and relays under it. */
    rv = qraft__path_vaddr(ep, &p->addr, &vaddr);
    if (rv != 0) {
      QRAFT_LOG(ep->log, QRAFT_LOG_WARN, "dial failed",
                QRAFT_LOG_STR("error", qraft_strerror(rv)));
      schedule_redial(ep, p);
      return;
    }
    to = &vaddr;
  } else if (p->addr.addrs_n == 0) {
    return;
  } else {
    /* Each attempt tries the next direct address. */
    to = &p->addr.addrs[p->dial_attempts++ % p->addr.addrs_n];
  }
  qraft_conn *c;
  rv = qraft__quic_dial(ep, p, (const struct sockaddr *)to, &c);
  if (rv != 0) {
    QRAFT_LOG(ep->log, QRAFT_LOG_WARN, "dial failed",
              QRAFT_LOG_STR("error", qraft_strerror(rv)));
    ep->metrics.handshake_failures[QRAFT_HS_FAIL_OTHER]++;
    schedule_redial(ep, p);
    return;
  }
  p->dialing = c;
  ep->metrics.conns_dialed++;
}

static void redial_cb(void *ud) {
  tp_peer *p = ud;
  qraft_endpoint *ep = p->ep;
  if (p->wanted && !ep->shut_down && p->up == NULL && p->dialing == NULL) {
    dial_now(ep, p);
  }
}

static const char *alpn_of(const qraft_conn *c) {
  return c->ep->protocols[c->proto].alpn;
}

static void promote(qraft_conn *c);

static void promote_held(tp_peer *p) {
  qraft_conn *h = p->held;
  if (h == NULL) {
    return;
  }
  p->held = NULL;
  qraft_env_timer_disarm(p->hold_timer);
  promote(h);
}

/* Our dial did not resolve within the duplicate window: serve the held
 * connection (should our dial still come through, the window rule lets it
 * replace this one on both sides). */
static void hold_cb(void *ud) { promote_held(ud); }

void qraft__ep_conn_established(qraft_conn *c) {
  qraft_endpoint *ep = c->ep;
  QRAFT_ASSERT(c->state == TP_HANDSHAKE);
  QRAFT_ASSERT(c->peer_id_known && c->proto >= 0);
  if (!c->dialed && ep->cfg.authorize_cb != NULL &&
      !ep->cfg.authorize_cb(ep->cfg.authorize_ud, &c->peer_id, alpn_of(c))) {
    c->hs_fail = QRAFT_HS_FAIL_UNAUTHORIZED;
    qraft__quic_close(c, QRAFT_CLOSE_UNAUTHORIZED, "not authorized");
    return;
  }
  if (!qraft__path_conn_ok(c)) {
    /* A relay delivered it as from one id, and its key is another's. */
    qraft__quic_close(c, QRAFT_CLOSE_PROTOCOL, "id is not the relayed one");
    return;
  }
  if (!c->dialed && ep->protocols[c->proto].unpooled) {
    /* Not pooled: every connection goes to the handler. */
    c->established_ns = qraft_env_now_ns(ep->env);
    c->state = TP_UP;
    ep->metrics.conns_up++;
    const tp_protocol *proto = &ep->protocols[c->proto];
    proto->ops.conn_up_cb(proto->ud, c, false);
    return;
  }
  tp_peer *p = c->peer != NULL ? c->peer : peer_get(ep, &c->peer_id, c->proto);
  if (p == NULL) {
    qraft__quic_close(c, QRAFT_CLOSE_LIMIT, "out of memory");
    return;
  }
  c->peer = p;
  if (p->dialing == c) {
    p->dialing = NULL;
  }
  uint64_t now = qraft_env_now_ns(ep->env);
  c->established_ns = now;
  if (p->held != NULL) {
    /* Our own dial came through (it wins: that is why we held the inbound
     * one), or the peer dialed again: either way the held one goes. */
    qraft_conn *h = p->held;
    p->held = NULL;
    qraft_env_timer_disarm(p->hold_timer);
    h->state = TP_LOSER;
    qraft__quic_close(h, c->dialed ? QRAFT_CLOSE_DUPLICATE : QRAFT_CLOSE_REPLACED,
                      c->dialed ? "duplicate connection" : "replaced");
    if (h->state == TP_DEAD && h->busy == 0) {
      qraft__ep_conn_free(h);
    }
  }
  bool self_smaller = qraft_node_id_cmp(&ep->key.public_key, &p->id) < 0;
  if (!c->dialed && self_smaller && p->up == NULL && p->dialing != NULL) {
    /* A simultaneous dial: our own dial to this peer is under way and will
     * win the tie-break. Hold this inbound connection until it resolves (at
     * most duplicate_window_ms), so the handler does not see a connection
     * come up and go again. */
    c->state = TP_HELD;
    p->held = c;
    qraft_env_timer_arm(p->hold_timer,
                        now + ep->cfg.duplicate_window_ms * MS);
    return;
  }
  promote(c);
}

/* Resolves duplicates and hands the connection to its handler. */
static void promote(qraft_conn *c) {
  qraft_endpoint *ep = c->ep;
  tp_peer *p = c->peer;
  uint64_t now = qraft_env_now_ns(ep->env);
  qraft_conn *old = p->up;
  if (old != NULL) {
    /* One connection per peer pair and ALPN. Both sides apply the same
     * rule and so keep the same connection:
     * - two connections dialed the same way: the newer replaces the older
     *   (the peer restarted, or lost its side of the old one);
     * - dialed from both sides, the older established long enough ago
     *   (duplicate_window_ms): the newer replaces it, for the same reason;
     * - otherwise it was a simultaneous dial: keep the one dialed by the
     *   smaller node id. */
    bool keep_new;
    uint64_t code = QRAFT_CLOSE_REPLACED;
    if (old->dialed == c->dialed ||
        now - old->established_ns >= ep->cfg.duplicate_window_ms * MS) {
      keep_new = true;
    } else {
      bool self_smaller = qraft_node_id_cmp(&ep->key.public_key, &p->id) < 0;
      keep_new = c->dialed == self_smaller;
      code = QRAFT_CLOSE_DUPLICATE;
    }
    if (!keep_new) {
      c->state = TP_LOSER;
      qraft__quic_close(c, QRAFT_CLOSE_DUPLICATE, "duplicate connection");
      return;
    }
    p->up = NULL;
    old->state = TP_LOSER; /* its handler is told it went down */
    qraft__quic_close(old, code,
                      code == QRAFT_CLOSE_DUPLICATE ? "duplicate connection"
                                                    : "replaced");
    const tp_protocol *proto = &ep->protocols[old->proto];
    if (proto->ops.conn_down_cb != NULL) {
      qraft_close_info why = {.code = QRAFT_ECLOSED, .app = true,
                              .app_code = code};
      snprintf(why.reason, sizeof why.reason, "%s", "replaced");
      proto->ops.conn_down_cb(proto->ud, old, &why);
    }
    if (old->state == TP_DEAD && old->busy == 0) {
      qraft__ep_conn_free(old);
    }
  }
  p->up = c;
  c->state = TP_UP;
  if (p->ups++ > 0) {
    p->closed.reconnects++;
  }
  p->backoff_ms = 0;
  qraft_env_timer_disarm(p->redial_timer);
  ep->metrics.conns_up++;
  char hex[QRAFT_NODE_ID_HEX_SIZE];
  qraft_node_id_to_hex(&p->id, hex);
  QRAFT_LOG(ep->log, QRAFT_LOG_INFO, "peer connected",
            QRAFT_LOG_STR("peer", hex), QRAFT_LOG_STR("alpn", alpn_of(c)),
            QRAFT_LOG_U64("dialed", c->dialed));
  const tp_protocol *proto = &ep->protocols[c->proto];
  proto->ops.conn_up_cb(proto->ud, c, c->dialed);
  /* If it was held: what arrived meanwhile (may free c). */
  qraft__quic_held_deliver(c);
}

void qraft__ep_conn_ended(qraft_conn *c, const qraft_close_info *why) {
  qraft_endpoint *ep = c->ep;
  tp_conn_state was = c->state;
  c->state = TP_DEAD;
  c->why = *why;
  c->why_set = true;
  if (was == TP_HANDSHAKE) {
    int reason = c->hs_fail;
    if (reason < 0) {
      reason = why->code == QRAFT_ETIMEDOUT ? QRAFT_HS_FAIL_TIMEOUT
               : why->code == QRAFT_ETLS    ? QRAFT_HS_FAIL_TLS
                                            : QRAFT_HS_FAIL_OTHER;
    }
    ep->metrics.handshake_failures[reason]++;
    if (c->dialed && reason == QRAFT_HS_FAIL_UNAUTHORIZED && c->peer != NULL) {
      c->peer->closed.refused++;
    }
    QRAFT_LOG(ep->log, QRAFT_LOG_INFO, "handshake failed",
              QRAFT_LOG_STR("reason",
                            qraft_handshake_failure_name(
                                (qraft_handshake_failure)reason)),
              QRAFT_LOG_STR("detail", why->reason));
  }
  tp_peer *p = c->peer;
  if (p == NULL) {
    if (was == TP_UP && c->proto >= 0 && ep->protocols[c->proto].unpooled) {
      const tp_protocol *proto = &ep->protocols[c->proto];
      if (proto->ops.conn_down_cb != NULL) {
        proto->ops.conn_down_cb(proto->ud, c, why);
      }
    }
    return;
  }
  if (p->held == c) {
    p->held = NULL;
    qraft_env_timer_disarm(p->hold_timer);
  }
  if (p->dialing == c) {
    p->dialing = NULL;
    /* Our dial failed: the inbound connection we held is the one. */
    promote_held(p);
  }
  if (p->up == c) {
    p->up = NULL;
    char hex[QRAFT_NODE_ID_HEX_SIZE];
    qraft_node_id_to_hex(&p->id, hex);
    QRAFT_LOG(ep->log, QRAFT_LOG_INFO, "peer disconnected",
              QRAFT_LOG_STR("peer", hex), QRAFT_LOG_STR("reason", why->reason),
              QRAFT_LOG_STR("error", qraft_errname(why->code)));
    const tp_protocol *proto = &ep->protocols[c->proto];
    if (proto->ops.conn_down_cb != NULL) {
      proto->ops.conn_down_cb(proto->ud, c, why);
    }
  }
  if (p->wanted && !ep->shut_down && p->up == NULL && p->dialing == NULL) {
    schedule_redial(ep, p);
  }
}

/* ---- the public API ---- */

const char *qraft_handshake_failure_name(qraft_handshake_failure f) {
  switch (f) {
  case QRAFT_HS_FAIL_PEER_KEY:
    return "peer_key";
  case QRAFT_HS_FAIL_UNAUTHORIZED:
    return "unauthorized";
  case QRAFT_HS_FAIL_ALPN:
    return "alpn";
  case QRAFT_HS_FAIL_TIMEOUT:
    return "timeout";
  case QRAFT_HS_FAIL_TLS:
    return "tls";
  case QRAFT_HS_FAIL_OTHER:
    return "other";
  case QRAFT_HS_FAIL_N:
    break;
  }
  return "?";
}

static void recv_cb(void *ud, const struct sockaddr *from, const uint8_t *data,
                    size_t len) {
  udp_ctx *u = ud;
  qraft__ep_recv(u->ep, u->ep->udp[u->index], from, data, len);
}

/* The endpoint is allocated with room for the socket contexts after it. */
typedef struct ep_alloc {
  qraft_endpoint ep;
  udp_ctx udp_ctx[2];
} ep_alloc;

static void config_defaults(qraft_endpoint_config *c) {
#define DEF(field, value)                                                      \
  if (c->field == 0) {                                                         \
    c->field = (value);                                                        \
  }
  DEF(idle_timeout_ms, 10000);
  DEF(keep_alive_ms, c->idle_timeout_ms / 3);
  DEF(handshake_timeout_ms, 5000);
  DEF(ack_delay_max_ms, 2);
  DEF(redial_min_ms, 50);
  DEF(redial_max_ms, 5000);
  DEF(duplicate_window_ms, 1000);
  DEF(conns_max, 1024);
  DEF(streams_max, 64);
  DEF(stream_window_bytes, 1u << 20);
  DEF(conn_window_bytes, 4u << 20);
  DEF(send_buffer_bytes_max, 8u << 20);
  DEF(path_quiet_ms, 300);
  DEF(path_trust_ms, 6500);
  DEF(path_retry_ms, 5000);
  DEF(relay_queue_max, 512);
  DEF(relay_idle_ms, 60000);
#undef DEF
}

int qraft_endpoint_new(const qraft_endpoint_config *cfg, qraft_endpoint **out,
                       qraft_err *err) {
  if (cfg->env == NULL || cfg->key == NULL || cfg->bind_n == 0 ||
      cfg->bind_n > 2) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "endpoint needs an env, a key and 1 or 2 bind addresses");
  }
  if (cfg->relays_n > QRAFT_NODE_RELAYS_MAX) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "at most %u relays",
                     QRAFT_NODE_RELAYS_MAX);
  }
  for (uint32_t i = 0; i < cfg->relays_n; i++) {
    if (qraft_node_id_eq(&cfg->relays[i].id, &cfg->key->public_key)) {
      return QRAFT_ERR(err, QRAFT_ECONFIG, "a relay with our own id");
    }
  }
  ep_alloc *a = calloc(1, sizeof *a);
  if (a == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "endpoint");
  }
  qraft_endpoint *ep = &a->ep;
  ep->cfg = *cfg;
  config_defaults(&ep->cfg);
  if (ep->cfg.redial_min_ms > ep->cfg.redial_max_ms ||
      ep->cfg.keep_alive_ms >= ep->cfg.idle_timeout_ms ||
      ep->cfg.path_quiet_ms > ep->cfg.path_trust_ms) {
    free(a);
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "redial_min_ms > redial_max_ms, keep_alive_ms >= "
                     "idle_timeout_ms, or path_quiet_ms > path_trust_ms");
  }
  ep->env = cfg->env;
  ep->key = *cfg->key;
  ep->cfg.key = &ep->key;
  ep->log = cfg->logger;
  int rv = qraft__path_init(ep, err);
  if (rv != 0) {
    goto err_free;
  }
  rv = qraft__quic_ep_init(ep, err);
  if (rv != 0) {
    goto err_free;
  }
  rv = qraft_env_timer_new(ep->env, flush_cb, ep, &ep->flush_timer);
  if (rv != 0) {
    QRAFT_ERR(err, rv, "flush timer");
    goto err_tls;
  }
  for (uint32_t i = 0; i < cfg->bind_n; i++) {
    a->udp_ctx[i].ep = ep;
    a->udp_ctx[i].index = i;
    rv = qraft_env_udp_bind(ep->env, (const struct sockaddr *)&cfg->bind[i],
                            recv_cb, &a->udp_ctx[i], &ep->udp[i]);
    if (rv != 0) {
      QRAFT_ERR(err, rv, "bind UDP socket %u", i);
      goto err_sockets;
    }
    ep->udp_n++;
    qraft_env_udp_local_addr(ep->udp[i], &ep->udp_addr[i]);
  }
  rv = qraft__path_start_home(ep, err);
  if (rv != 0) {
    qraft_endpoint_free(ep); /* *out is left alone */
    return rv;
  }
  *out = ep;
  return 0;

err_sockets:
  for (uint32_t i = 0; i < ep->udp_n; i++) {
    qraft_env_udp_close(ep->udp[i]);
  }
  qraft_env_timer_free(ep->flush_timer);
err_tls:
  qraft__quic_ep_close(ep);
err_free:
  qraft__path_free(ep);
  qraft_secret_key_wipe(&ep->key);
  free(a);
  return rv;
}

static int ep_register(qraft_endpoint *ep, const char *alpn,
                       const qraft_protocol_ops *ops, void *ud,
                       bool unpooled);

int qraft_endpoint_register(qraft_endpoint *ep, const char *alpn,
                            const qraft_protocol_ops *ops, void *ud) {
  return ep_register(ep, alpn, ops, ud, false);
}

int qraft_endpoint_register_unpooled(qraft_endpoint *ep, const char *alpn,
                                     const qraft_protocol_ops *ops, void *ud) {
  return ep_register(ep, alpn, ops, ud, true);
}

static int ep_register(qraft_endpoint *ep, const char *alpn,
                       const qraft_protocol_ops *ops, void *ud,
                       bool unpooled) {
  size_t len = alpn != NULL ? strlen(alpn) : 0;
  if (ep->shut_down) {
    return QRAFT_ESHUTDOWN;
  }
  if (len == 0 || len > TP_ALPN_MAX || ops == NULL ||
      ops->conn_up_cb == NULL || ep->protocols_n == TP_PROTOCOLS_MAX) {
    return QRAFT_ECONFIG;
  }
  for (int i = 0; i < ep->protocols_n; i++) {
    if (strcmp(ep->protocols[i].alpn, alpn) == 0) {
      return QRAFT_ECONFIG;
    }
  }
  tp_protocol *p = &ep->protocols[ep->protocols_n++];
  memcpy(p->alpn, alpn, len + 1);
  p->alpn_len = len;
  p->ops = *ops;
  p->ud = ud;
  p->unpooled = unpooled;
  return 0;
}

static int proto_find(qraft_endpoint *ep, const char *alpn) {
  for (int i = 0; i < ep->protocols_n; i++) {
    if (strcmp(ep->protocols[i].alpn, alpn) == 0) {
      return i;
    }
  }
  return -1;
}

int qraft_endpoint_dial(qraft_endpoint *ep, const qraft_node_addr *addr,
                        const char *alpn) {
  if (ep->shut_down) {
    return QRAFT_ESHUTDOWN;
  }
  int proto = proto_find(ep, alpn);
  if (proto < 0 || ep->protocols[proto].unpooled ||
      !qraft_endpoint_reachable(ep, addr) ||
      addr->addrs_n > QRAFT_NODE_ADDRS_MAX ||
      addr->relays_n > QRAFT_NODE_RELAYS_MAX ||
      qraft_node_id_eq(&addr->id, &ep->key.public_key)) {
    return QRAFT_ECONFIG;
  }
  tp_peer *p = peer_get(ep, &addr->id, proto);
  if (p == NULL) {
    return -ENOMEM;
  }
  p->wanted = true;
  p->addr = *addr;
  if (p->up == NULL && p->dialing == NULL) {
    if (ep->conns_n >= ep->cfg.conns_max) {
      return QRAFT_ELIMIT;
    }
    dial_now(ep, p);
  }
  return 0;
}

bool qraft_endpoint_reachable(const qraft_endpoint *ep,
                              const qraft_node_addr *addr) {
  return addr->addrs_n > 0 || addr->relays_n > 0 || ep->cfg.relays_n > 0;
}

void qraft_endpoint_undial(qraft_endpoint *ep, const qraft_node_id *peer,
                           const char *alpn) {
  int proto = proto_find(ep, alpn);
  tp_peer *p = proto < 0 ? NULL : peer_find(ep, peer, proto);
  if (p == NULL) {
    return;
  }
  p->wanted = false;
  qraft_env_timer_disarm(p->redial_timer);
  if (p->dialing != NULL) {
    qraft_conn_close(p->dialing, QRAFT_CLOSE_UNWANTED, "unwanted");
  }
  if (p->up != NULL) {
    qraft_conn_close(p->up, QRAFT_CLOSE_UNWANTED, "unwanted");
  }
}

qraft_conn *qraft_endpoint_conn(qraft_endpoint *ep, const qraft_node_id *peer,
                                const char *alpn) {
  int proto = proto_find(ep, alpn);
  tp_peer *p = proto < 0 ? NULL : peer_find(ep, peer, proto);
  return p != NULL ? p->up : NULL;
}

void qraft_endpoint_set_authorize(qraft_endpoint *ep, qraft_authorize_cb cb,
                                  void *ud) {
  ep->cfg.authorize_cb = cb;
  ep->cfg.authorize_ud = ud;
}

qraft_env *qraft_endpoint_env(const qraft_endpoint *ep) { return ep->env; }

const qraft_node_id *qraft_endpoint_id(const qraft_endpoint *ep) {
  return &ep->key.public_key;
}

uint32_t qraft_endpoint_poll(qraft_endpoint *ep, uint32_t max) {
  uint32_t got = 0;
  for (uint32_t i = 0; i < ep->udp_n; i++) {
    if (ep->udp[i] != NULL) {
      int n = qraft_env_udp_poll(ep->udp[i], max);
      got += n > 0 ? (uint32_t)n : 0;
    }
  }
  return got;
}

void qraft_endpoint_addr(const qraft_endpoint *ep, qraft_node_addr *out) {
  memset(out, 0, sizeof *out);
  out->id = ep->key.public_key;
  for (uint32_t i = 0; i < ep->udp_n; i++) {
    out->addrs[out->addrs_n++] = ep->udp_addr[i];
  }
  out->relays_n = ep->cfg.relays_n;
  memcpy(out->relays, ep->cfg.relays, sizeof out->relays);
}

void qraft_endpoint_shutdown(qraft_endpoint *ep) {
  if (ep->shut_down) {
    return;
  }
  ep->shut_down = true;
  for (tp_peer *p = ep->peers; p != NULL; p = p->next) {
    qraft_env_timer_disarm(p->redial_timer);
    qraft_env_timer_disarm(p->hold_timer);
    p->held = NULL;
  }
  /* Close every connection: each handler is told, each close frame is
   * queued on the socket. */
  for (qraft_conn *c = ep->conns; c != NULL; c = c->next) {
    QRAFT_ASSERTF(c->busy == 0,
                  "qraft_endpoint_shutdown called from a connection callback");
    if (c->state == TP_HANDSHAKE || c->state == TP_UP ||
        c->state == TP_LOSER || c->state == TP_HELD) {
      qraft__quic_close(c, QRAFT_CLOSE_NORMAL, "shutdown");
    }
  }
  while (ep->conns != NULL) {
    ep->conns->state = TP_DEAD;
    qraft__ep_conn_free(ep->conns);
  }
  ep->dirty_head = NULL;
  qraft_env_timer_disarm(ep->flush_timer);
  qraft__path_shutdown(ep);
  /* Closing a socket hands its queued datagrams (the close frames) to the
   * network first. */
  for (uint32_t i = 0; i < ep->udp_n; i++) {
    qraft_env_udp_close(ep->udp[i]);
    ep->udp[i] = NULL;
  }
}

void qraft_endpoint_free(qraft_endpoint *ep) {
  if (ep == NULL) {
    return;
  }
  qraft_endpoint_shutdown(ep);
  while (ep->peers != NULL) {
    tp_peer *p = ep->peers;
    ep->peers = p->next;
    qraft_env_timer_free(p->redial_timer);
    qraft_env_timer_free(p->hold_timer);
    free(p);
  }
  qraft_env_timer_free(ep->flush_timer);
  qraft__path_free(ep);
  qraft__quic_ep_close(ep);
  qraft_secret_key_wipe(&ep->key);
  free((ep_alloc *)ep);
}

const qraft_node_id *qraft_conn_peer(const qraft_conn *conn) {
  return &conn->peer_id;
}

const char *qraft_conn_alpn(const qraft_conn *conn) { return alpn_of(conn); }

bool qraft_conn_dialed(const qraft_conn *conn) { return conn->dialed; }

bool qraft_conn_remote_addr(const qraft_conn *conn,
                            struct sockaddr_storage *out) {
  *out = conn->remote;
  return !qraft__path_is_vaddr((const struct sockaddr *)&conn->remote);
}

int qraft_conn_stream_open(qraft_conn *conn, bool bidi, int64_t *stream_id) {
  if (conn->state != TP_UP || conn->close_pending) {
    return QRAFT_ECLOSED;
  }
  return qraft__quic_stream_open(conn, bidi, stream_id);
}

int qraft_conn_stream_send(qraft_conn *conn, int64_t stream_id,
                           qraft_slice data, bool fin) {
  if (conn->state != TP_UP || conn->close_pending) {
    return QRAFT_ECLOSED;
  }
  return qraft__quic_stream_send(conn, stream_id, data, fin);
}

void qraft_conn_stream_reset(qraft_conn *conn, int64_t stream_id,
                             uint64_t app_code) {
  if (conn->state == TP_UP) {
    qraft__quic_stream_reset(conn, stream_id, app_code);
  }
}

uint64_t qraft_conn_unacked_bytes(const qraft_conn *conn) {
  return conn->unacked_bytes;
}

uint64_t qraft_conn_stream_unacked_bytes(const qraft_conn *conn,
                                         int64_t stream_id) {
  return conn->state == TP_UP ? qraft__quic_stream_unacked(conn, stream_id)
                              : 0;
}

void qraft_conn_close(qraft_conn *conn, uint64_t app_code, const char *reason) {
  qraft__quic_close(conn, app_code, reason);
  if (conn->state == TP_DEAD && conn->busy == 0) {
    qraft__ep_conn_free(conn);
  }
}

void qraft_conn_count_frames(qraft_conn *conn, bool out, uint64_t frames,
                             uint64_t messages) {
  if (out) {
    conn->frames_out += frames;
    conn->messages_out += messages;
  } else {
    conn->frames_in += frames;
    conn->messages_in += messages;
  }
}

void qraft_endpoint_metrics_get(const qraft_endpoint *ep,
                                qraft_endpoint_metrics *out) {
  *out = ep->metrics;
}

int qraft_endpoint_peer_metrics(qraft_endpoint *ep, const qraft_node_id *peer,
                                const char *alpn, qraft_peer_metrics *out) {
  int proto = proto_find(ep, alpn);
  tp_peer *p = proto < 0 ? NULL : peer_find(ep, peer, proto);
  if (p == NULL) {
    return QRAFT_ENOTFOUND;
  }
  *out = p->closed;
  out->peer = p->id;
  out->up = p->up != NULL;
  for (qraft_conn *c = ep->conns; c != NULL; c = c->next) {
    if (c->peer == p) {
      counters_add(out, c);
      if (c == p->up) {
        qraft__quic_stats(c, out);
      }
    }
  }
  qraft__path_peer_metrics(ep, peer, out);
  return 0;
}

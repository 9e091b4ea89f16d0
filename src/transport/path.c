/*
 * path.c: the path layer under QUIC, probes and hole punching, and the
 * endpoint's relay client.
 *
 * A peer dialed by id with relays in play (its address names relays, or
 * this endpoint has home relays) is given a virtual IPv6 address in
 * fd71:7261:6674::/48. QUIC (ngtcp2) only ever sees that address for the
 * peer: one fixed path. Underneath, each datagram to a virtual address goes
 *
 *   direct  to the peer's direct address, while a PONG to our PING or a
 *           decrypted packet came from it within path_quiet_ms;
 *   mixed   to that address and through a relay at once, after it has been
 *           quiet for path_quiet_ms and until path_trust_ms (and a PING to
 *           it, whose PONG makes it direct again);
 *   relay   through a relay only, with rounds of hole punching: a PING to
 *           each direct address known for the peer and our candidates to it
 *           through the relay (CALL_ME_MAYBE), so that both NATs open.
 *
 * An address becomes the direct path only on a PONG (signed by the peer,
 * answering a PING of ours with a fresh txid); QUIC from an address reaches
 * a peer's connection only if the address is configured for the peer, sent
 * an authenticated PING or answered one. Datagrams that a relay delivers
 * from a peer's id reach QUIC as coming from its virtual address. The
 * design is iroh 0.91's magicsock and disco
 * (../shared/research/iroh-connectivity.md, sections 2 and 5);
 * docs/connectivity.md describes the states, timers and the NATs crossed.
 *
 * The relay client: one connection per relay (ALPN QRAFT_RELAY_ALPN, kept
 * by the endpoint's pool), one bidirectional stream of relay frames
 * (qraft/relay.h). Datagrams that arrive from a relay are copied to a
 * bounded queue and handed to QUIC from a timer, never from inside the
 * relay connection's callbacks.
 *
 * No ngtcp2 or GnuTLS here.
 */
#include "transport_int.h"

#include <qraft/assert.h>
#include <qraft/probe.h>
#include <qraft/relay.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS 1000000ull
/* Direct addresses kept per peer (configured, called in, pinged from). */
#define PATH_CANDS_MAX 16u
/* Our own candidates sent in a CALL_ME_MAYBE: interface addresses at most
 * (iroh users saw Docker and VPN interfaces fill every slot). */
#define LOCAL_IFACES_MAX 4u
/* A PING is answered by its PONG within this, or not at all. */
#define PING_TIMEOUT_MS 5000u
/* Least time between two PINGs to one address (a PING that answers a PING,
 * a CALL_ME_MAYBE that repeats). */
#define PING_MIN_GAP_MS 250u
/* Probes the endpoint takes per second from the network, and in a burst;
 * more are dropped before their signature is checked. */
#define PROBE_RATE 2000u
#define PROBE_BURST 256u
/* Peers the path layer tracks at most (each costs a virtual address). */
#define PATHS_MAX 4096u
#define TICK_MS 1000u
/* Bytes a relay stream may hold unacknowledged before datagrams to it are
 * dropped (about 512 full-size ones, the relay server's own bound). */
#define RELAY_SEND_QUEUE_BYTES (768u << 10)

static const uint8_t vprefix[6] = {0xfd, 0x71, 0x72, 0x61, 0x66, 0x74};

typedef struct tp_relay {
  struct tp_relay *next;
  qraft_relay_addr addr;
  bool home;
  bool dialed;
  qraft_conn *conn;
  int64_t sid; /* our stream to it, -1 until opened */
  qraft_relay_reader rd;
  uint64_t last_used_ns;
  bool observed_set;
  struct sockaddr_storage observed;
  uint64_t datagrams_out, datagrams_in, drops, peer_gone;
  bool elsewhere;
} tp_relay;

/* A direct address of a peer, and what we know of it. */
typedef struct tp_cand {
  struct sockaddr_storage addr;
  bool config;          /* from the peer's node address */
  uint64_t seen_ns;     /* last learned or heard of */
  uint64_t ping_rx_ns;  /* last authenticated PING from it */
  uint64_t ping_tx_ns;  /* last PING we sent it */
  uint8_t txid[QRAFT_PROBE_TXID_BYTES]; /* that PING's */
  uint64_t pong_ns;     /* last PONG from it to a PING of ours */
  uint64_t rtt_ns;      /* of that PING */
} tp_cand;

typedef struct tp_path {
  struct tp_path *next;
  qraft_node_id id;
  struct sockaddr_storage vaddr;
  uint32_t cands_n;
  tp_cand cands[PATH_CANDS_MAX];
  uint32_t relays_n;
  qraft_relay_addr relays[QRAFT_NODE_RELAYS_MAX];
  uint64_t direct_ok_ns; /* last PONG on the direct path, or decrypted
                            packet from it */
  uint64_t gone_ns;      /* last PEER_GONE from a relay about it */
  tp_relay *gone_relay;  /* the relay that said so */
  tp_relay *rx_relay;    /* the relay its last relayed datagram came by */
  uint64_t active_ns;    /* last datagram to or from it */
  struct sockaddr_storage direct; /* the direct address in use */
  bool trusted;                   /* as of the last send */
  uint64_t round_ns;              /* last round of pings to it */
  uint32_t rounds;                /* rounds since it last had no direct
                                     path (the first come quicker) */
  uint64_t cmm_rx_ns;             /* last CALL_ME_MAYBE acted on */
  uint64_t cmm_tx_ns;             /* last CALL_ME_MAYBE sent */
  uint64_t created_ns, first_direct_ns;
  uint64_t direct_rtt_ns;
  int kind;                       /* qraft_path_kind of the last send */
  tp_relay *last_relay;           /* the relay used last */
  uint64_t direct_out, direct_in, relay_out, relay_in;
  uint64_t fallbacks, upgrades;
  uint64_t pings_out, pings_in, pongs_out, pongs_in, cmm_out, cmm_in;
} tp_path;

typedef struct rx_item {
  tp_path *path;
  tp_relay *relay;
  uint8_t *data;
  size_t len;
} rx_item;

struct tp_paths {
  qraft_endpoint *ep;
  int proto; /* the relay client's protocol index, -1 until registered */
  tp_path *paths;
  uint32_t paths_n;
  uint64_t next_vaddr;
  tp_relay *relays;
  rx_item *q;
  uint32_t q_head, q_n, q_cap;
  qraft_env_timer *drain_timer, *tick_timer;
  qraft_env_timer *round_timer; /* rounds for peers with no direct path */
  uint64_t round_due_ns;        /* when it is armed for (0: not armed) */
  /* probes taken from the network (a token bucket, in millitokens) */
  uint64_t probe_tokens, probe_refill_ns;
  /* our own candidates, refreshed now and then */
  uint32_t local_n;
  struct sockaddr_storage local[QRAFT_PROBE_ADDRS_MAX];
  uint64_t local_ns;
  /* The datagram being handed to QUIC: where it really came from. */
  tp_path *cur_path;
  bool cur_direct;
  struct sockaddr_storage cur_from;
};

bool qraft__sockaddr_eq(const struct sockaddr *a, const struct sockaddr *b) {
  if (a->sa_family != b->sa_family) {
    return false;
  }
  if (a->sa_family == AF_INET) {
    const struct sockaddr_in *x = (const struct sockaddr_in *)a;
    const struct sockaddr_in *y = (const struct sockaddr_in *)b;
    return x->sin_port == y->sin_port &&
           x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  if (a->sa_family == AF_INET6) {
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
    const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
  }
  return false;
}

static bool sa_eq(const struct sockaddr_storage *a, const struct sockaddr *b) {
  return qraft__sockaddr_eq((const struct sockaddr *)a, b);
}

static void sa_copy(struct sockaddr_storage *dst, const struct sockaddr *src) {
  memset(dst, 0, sizeof *dst);
  memcpy(dst, src,
         src->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                    : sizeof(struct sockaddr_in));
}

bool qraft__path_is_vaddr(const struct sockaddr *sa) {
  if (sa->sa_family != AF_INET6) {
    return false;
  }
  const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
  return memcmp(&s6->sin6_addr, vprefix, sizeof vprefix) == 0;
}

const char *qraft_path_kind_name(int kind) {
  switch (kind) {
  case QRAFT_PATH_DIRECT:
    return "direct";
  case QRAFT_PATH_MIXED:
    return "mixed";
  case QRAFT_PATH_RELAY:
    return "relay";
  default:
    return "none";
  }
}

/* ---- the relay client's frames ---- */

static tp_relay *relay_by_id(tp_paths *ps, const qraft_node_id *id) {
  for (tp_relay *r = ps->relays; r != NULL; r = r->next) {
    if (qraft_node_id_eq(&r->addr.id, id)) {
      return r;
    }
  }
  return NULL;
}

static int relay_send_frame(tp_relay *r, const qraft_relay_frame *f) {
  if (r->conn == NULL || r->sid < 0) {
    return QRAFT_EUNAVAILABLE;
  }
  return qraft_relay_frame_send(r->conn, r->sid, f);
}

int qraft_relay_frame_send(qraft_conn *conn, int64_t sid,
                           const qraft_relay_frame *f) {
  uint8_t buf[QRAFT_RELAY_HEADER_MAX + 64 + 1500];
  size_t need = qraft_relay_frame_size(f);
  if (need == 0) {
    return QRAFT_EMALFORMED;
  }
  uint8_t *out = need <= sizeof buf ? buf : malloc(need);
  if (out == NULL) {
    return -ENOMEM;
  }
  size_t n = qraft_relay_frame_encode(f, out);
  QRAFT_ASSERT(n == need);
  int rv = qraft_conn_stream_send(conn, sid, qraft_slice_of(NULL, out, n),
                                  false);
  if (out != buf) {
    free(out);
  }
  return rv;
}

static void relay_want(tp_paths *ps, tp_relay *r) {
  if (r->dialed || ps->ep->shut_down) {
    return;
  }
  qraft_node_addr a;
  memset(&a, 0, sizeof a);
  a.id = r->addr.id;
  a.addrs_n = 1;
  a.addrs[0] = r->addr.addr;
  if (qraft_endpoint_dial(ps->ep, &a, QRAFT_RELAY_ALPN) == 0) {
    r->dialed = true;
    r->last_used_ns = qraft_env_now_ns(ps->ep->env);
  }
}

static tp_relay *relay_get(tp_paths *ps, const qraft_relay_addr *ra,
                           bool home) {
  tp_relay *r = relay_by_id(ps, &ra->id);
  if (r == NULL) {
    r = calloc(1, sizeof *r);
    if (r == NULL) {
      return NULL;
    }
    r->addr = *ra;
    r->sid = -1;
    r->last_used_ns = qraft_env_now_ns(ps->ep->env);
    r->next = ps->relays;
    ps->relays = r;
  } else if (!sa_eq(&r->addr.addr, (const struct sockaddr *)&ra->addr)) {
    r->addr.addr = ra->addr;
    if (r->dialed) {
      r->dialed = false; /* dial again at the new address */
    }
  }
  r->home |= home;
  return r;
}

static void rx_push(tp_paths *ps, tp_path *p, tp_relay *r, const uint8_t *d,
                    size_t len) {
  qraft_endpoint *ep = ps->ep;
  if (ps->q_n == ps->q_cap) {
    ep->metrics.relay_drops++;
    r->drops++;
    return;
  }
  uint8_t *copy = malloc(len ? len : 1);
  if (copy == NULL) {
    ep->metrics.relay_drops++;
    return;
  }
  memcpy(copy, d, len);
  rx_item *it = &ps->q[(ps->q_head + ps->q_n) % ps->q_cap];
  it->path = p;
  p->active_ns = qraft_env_now_ns(ep->env);
  it->relay = r;
  it->data = copy;
  it->len = len;
  ps->q_n++;
  r->datagrams_in++;
  qraft_env_timer_arm(ps->drain_timer, 0);
}

static tp_path *path_get(tp_paths *ps, const qraft_node_id *id);
static tp_path *path_by_id(tp_paths *ps, const qraft_node_id *id);
static void probe_by_relay(tp_paths *ps, tp_path *p, tp_relay *r,
                           const uint8_t *data, size_t len);

static void relay_frame(tp_paths *ps, tp_relay *r, const qraft_relay_frame *f) {
  qraft_endpoint *ep = ps->ep;
  switch (f->type) {
  case QRAFT_RELAY_RECV:
  case QRAFT_RELAY_RECV_BATCH: {
    tp_path *p = path_get(ps, &f->peer);
    if (p == NULL) {
      ep->metrics.relay_drops++;
      return;
    }
    if (p->relays_n == 0) {
      p->relays[p->relays_n++] = r->addr; /* answer the way it came */
    }
    p->rx_relay = r;
    if (p->gone_relay == r) {
      p->gone_relay = NULL; /* it is there after all */
    }
    size_t seg = f->type == QRAFT_RELAY_RECV ? f->data_len : f->segment;
    if (seg == 0) {
      return;
    }
    for (size_t off = 0; off < f->data_len; off += seg) {
      size_t n = f->data_len - off < seg ? f->data_len - off : seg;
      if (qraft_probe_is(f->data + off, n)) {
        probe_by_relay(ps, p, r, f->data + off, n);
      } else {
        rx_push(ps, p, r, f->data + off, n);
      }
    }
    return;
  }
  case QRAFT_RELAY_PING: {
    qraft_relay_frame pong = {.type = QRAFT_RELAY_PONG};
    memcpy(pong.ping, f->ping, sizeof pong.ping);
    (void)relay_send_frame(r, &pong);
    return;
  }
  case QRAFT_RELAY_PEER_GONE: {
    r->peer_gone++;
    tp_path *p = path_by_id(ps, &f->peer);
    if (p != NULL) {
      p->gone_ns = qraft_env_now_ns(ep->env);
      p->gone_relay = r;
    }
    return;
  }
  case QRAFT_RELAY_OBSERVED_ADDR:
    if (!r->observed_set ||
        !sa_eq(&r->observed, (const struct sockaddr *)&f->addr)) {
      char host[64] = "?";
      uint16_t port = 0;
      if (f->addr.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&f->addr;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        port = ntohs(s4->sin_port);
      } else {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&f->addr;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        port = ntohs(s6->sin6_port);
      }
      QRAFT_LOG(ep->log, QRAFT_LOG_INFO, "relay sees us at",
                QRAFT_LOG_STR("host", host), QRAFT_LOG_U64("port", port));
    }
    if (!r->observed_set ||
        !sa_eq(&r->observed, (const struct sockaddr *)&f->addr)) {
      ps->local_ns = 0; /* our candidates changed */
    }
    r->observed = f->addr;
    r->observed_set = true;
    return;
  case QRAFT_RELAY_STATUS:
    r->elsewhere = f->status == QRAFT_RELAY_STATUS_SAME_ID_ELSEWHERE;
    if (r->elsewhere) {
      QRAFT_LOG(ep->log, QRAFT_LOG_ERROR,
                "the relay serves another connection with our id: this one "
                "gets nothing more (two processes share a key?)");
    }
    return;
  case QRAFT_RELAY_HEALTH: {
    char text[128];
    size_t n = f->data_len < sizeof text - 1 ? f->data_len : sizeof text - 1;
    memcpy(text, f->data, n);
    text[n] = '\0';
    QRAFT_LOG(ep->log, QRAFT_LOG_WARN, "relay health",
              QRAFT_LOG_STR("problem", text));
    return;
  }
  case QRAFT_RELAY_RESTARTING:
    QRAFT_LOG(ep->log, QRAFT_LOG_INFO, "relay restarting",
              QRAFT_LOG_U64("reconnect_in_ms", f->reconnect_in_ms));
    return;
  default:
    return; /* PONG, and frames we do not know: skipped */
  }
}

static void rc_up(void *ud, qraft_conn *conn, bool dialed) {
  tp_paths *ps = ud;
  tp_relay *r = relay_by_id(ps, qraft_conn_peer(conn));
  if (!dialed || r == NULL) {
    /* We are no relay: a client that takes us for one is turned away. */
    qraft_conn_close(conn, QRAFT_CLOSE_UNWANTED, "not a relay");
    return;
  }
  r->conn = conn;
  r->rd.len = 0;
  r->elsewhere = false;
  if (qraft_conn_stream_open(conn, true, &r->sid) != 0) {
    r->sid = -1;
    qraft_conn_close(conn, QRAFT_CLOSE_LIMIT, "no stream");
    return;
  }
  /* The relay learns of the stream from its first frame. */
  qraft_relay_frame ping = {.type = QRAFT_RELAY_PING};
  qraft_env_random(ps->ep->env, ping.ping, sizeof ping.ping);
  (void)relay_send_frame(r, &ping);
}

static void rc_down(void *ud, qraft_conn *conn, const qraft_close_info *why) {
  (void)why;
  tp_paths *ps = ud;
  for (tp_relay *r = ps->relays; r != NULL; r = r->next) {
    if (r->conn == conn) {
      r->conn = NULL;
      r->sid = -1;
      r->rd.len = 0;
    }
  }
}

typedef struct rc_ctx {
  tp_paths *ps;
  tp_relay *r;
} rc_ctx;

static int rc_frame(void *ud, const qraft_relay_frame *f) {
  rc_ctx *x = ud;
  relay_frame(x->ps, x->r, f);
  return 0;
}

static void rc_recv(void *ud, qraft_conn *conn, int64_t sid,
                    const uint8_t *data, size_t len, bool fin) {
  (void)fin;
  tp_paths *ps = ud;
  tp_relay *r = NULL;
  for (tp_relay *x = ps->relays; x != NULL; x = x->next) {
    if (x->conn == conn) {
      r = x;
    }
  }
  if (r == NULL || sid != r->sid) {
    return;
  }
  rc_ctx x = {ps, r};
  int rv = qraft_relay_reader_feed(&r->rd, data, len, rc_frame, &x, NULL);
  if (rv != 0) {
    QRAFT_LOG(ps->ep->log, QRAFT_LOG_WARN, "relay broke the protocol",
              QRAFT_LOG_STR("error", qraft_strerror(rv)));
    qraft_conn_close(conn, QRAFT_CLOSE_PROTOCOL, "bad relay frame");
  }
}

static const qraft_protocol_ops relay_client_ops = {
    .conn_up_cb = rc_up, .conn_down_cb = rc_down, .stream_recv_cb = rc_recv};

/* ---- paths ---- */

static tp_path *path_by_id(tp_paths *ps, const qraft_node_id *id) {
  for (tp_path *p = ps->paths; p != NULL; p = p->next) {
    if (qraft_node_id_eq(&p->id, id)) {
      return p;
    }
  }
  return NULL;
}

static tp_path *path_by_vaddr(tp_paths *ps, const struct sockaddr *sa) {
  for (tp_path *p = ps->paths; p != NULL; p = p->next) {
    if (sa_eq(&p->vaddr, sa)) {
      return p;
    }
  }
  return NULL;
}

/* True if a connection or a queued datagram refers to `p`. */
static bool path_in_use(tp_paths *ps, const tp_path *p) {
  if (p == ps->cur_path) {
    return true;
  }
  for (qraft_conn *c = ps->ep->conns; c != NULL; c = c->next) {
    if (sa_eq(&p->vaddr, (const struct sockaddr *)&c->remote)) {
      return true;
    }
  }
  for (uint32_t k = 0; k < ps->q_n; k++) {
    if (ps->q[(ps->q_head + k) % ps->q_cap].path == p) {
      return true;
    }
  }
  return false;
}

/* The table is full: forgets the path idle longest that nothing refers to
 * (ids a relay delivered from once, peers long gone), so a new peer can
 * always get one. Returns false if every path is in use. */
static bool path_evict(tp_paths *ps) {
  tp_path **victim = NULL;
  for (tp_path **pp = &ps->paths; *pp != NULL; pp = &(*pp)->next) {
    if ((victim == NULL || (*pp)->active_ns < (*victim)->active_ns) &&
        !path_in_use(ps, *pp)) {
      victim = pp;
    }
  }
  if (victim == NULL) {
    return false;
  }
  tp_path *p = *victim;
  *victim = p->next;
  ps->paths_n--;
  free(p);
  return true;
}

static tp_path *path_get(tp_paths *ps, const qraft_node_id *id) {
  tp_path *p = path_by_id(ps, id);
  if (p != NULL || qraft_node_id_eq(id, &ps->ep->key.public_key) ||
      (ps->paths_n >= PATHS_MAX && !path_evict(ps))) {
    return p;
  }
  p = calloc(1, sizeof *p);
  if (p == NULL) {
    return NULL;
  }
  p->id = *id;
  struct sockaddr_in6 *v = (struct sockaddr_in6 *)&p->vaddr;
  v->sin6_family = AF_INET6;
  v->sin6_port = htons(1);
  memcpy(&v->sin6_addr, vprefix, sizeof vprefix);
  uint64_t n = ++ps->next_vaddr;
  for (int i = 0; i < 8; i++) {
    v->sin6_addr.s6_addr[15 - i] = (uint8_t)(n >> (8 * i));
  }
  p->created_ns = qraft_env_now_ns(ps->ep->env);
  p->active_ns = p->created_ns;
  p->next = ps->paths;
  ps->paths = p;
  ps->paths_n++;
  return p;
}

/* ---- a peer's direct addresses ---- */

static uint16_t sa_port(const struct sockaddr_storage *a) {
  return a->ss_family == AF_INET
             ? ntohs(((const struct sockaddr_in *)a)->sin_port)
             : ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
}

/* An address a peer could be reached at: IPv4 or IPv6, a port, an address
 * that is not unspecified, multicast or broadcast, nor one of our virtual
 * ones. Anything else in a CALL_ME_MAYBE only wastes probes. */
static bool cand_addr_ok(const struct sockaddr *a) {
  if (a->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)a;
    uint32_t ip = ntohl(s4->sin_addr.s_addr);
    return s4->sin_port != 0 && ip != 0 && (ip >> 28) != 0xe &&
           ip != 0xffffffffu;
  }
  if (a->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)a;
    return s6->sin6_port != 0 && !IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr) &&
           !IN6_IS_ADDR_MULTICAST(&s6->sin6_addr) && !qraft__path_is_vaddr(a);
  }
  return false;
}

static tp_cand *cand_find(tp_path *p, const struct sockaddr *a) {
  for (uint32_t i = 0; i < p->cands_n; i++) {
    if (sa_eq(&p->cands[i].addr, a)) {
      return &p->cands[i];
    }
  }
  return NULL;
}

static uint64_t cand_last(const tp_cand *c) {
  uint64_t t = c->seen_ns;
  t = c->ping_rx_ns > t ? c->ping_rx_ns : t;
  return c->pong_ns > t ? c->pong_ns : t;
}

/* Finds or adds `a` as a direct address of `p`; a full table gives up the
 * unconfigured address heard of longest ago (never the one in use). NULL
 * if `a` is no address a peer could be at, or nothing could give way. */
static tp_cand *cand_add(tp_path *p, const struct sockaddr *a, uint64_t now) {
  tp_cand *c = cand_find(p, a);
  if (c != NULL) {
    c->seen_ns = now;
    return c;
  }
  if (!cand_addr_ok(a)) {
    return NULL;
  }
  if (p->cands_n == PATH_CANDS_MAX) {
    tp_cand *victim = NULL;
    for (uint32_t i = 0; i < p->cands_n; i++) {
      tp_cand *x = &p->cands[i];
      if (x->config || (p->direct_ok_ns != 0 &&
                        sa_eq(&p->direct, (const struct sockaddr *)&x->addr))) {
        continue;
      }
      if (victim == NULL || cand_last(x) < cand_last(victim)) {
        victim = x;
      }
    }
    if (victim == NULL) {
      return NULL;
    }
    c = victim;
  } else {
    c = &p->cands[p->cands_n++];
  }
  memset(c, 0, sizeof *c);
  sa_copy(&c->addr, a);
  c->seen_ns = now;
  return c;
}

/* QUIC from a direct address reaches a peer's connection only if the
 * address is configured for it, sent us an authenticated PING, or answered
 * one of ours. */
static bool cand_accepts(const tp_cand *c) {
  return c->config || c->ping_rx_ns != 0 || c->pong_ns != 0;
}

int qraft__path_init(qraft_endpoint *ep, qraft_err *err) {
  tp_paths *ps = calloc(1, sizeof *ps);
  if (ps == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "path layer");
  }
  ps->ep = ep;
  ps->proto = -1;
  ps->q_cap = ep->cfg.relay_queue_max;
  ps->q = calloc(ps->q_cap, sizeof *ps->q);
  if (ps->q == NULL) {
    free(ps);
    return QRAFT_ERR(err, -ENOMEM, "path layer");
  }
  ep->paths = ps;
  return 0;
}

static void drain_cb(void *ud);
static void tick_cb(void *ud);
static void round_cb(void *ud);

/* Registers the relay client on first need. */
static int paths_start(tp_paths *ps) {
  if (ps->proto >= 0) {
    return 0;
  }
  qraft_endpoint *ep = ps->ep;
  if (ps->drain_timer == NULL &&
      qraft_env_timer_new(ep->env, drain_cb, ps, &ps->drain_timer) != 0) {
    return -ENOMEM;
  }
  if (ps->tick_timer == NULL &&
      qraft_env_timer_new(ep->env, tick_cb, ps, &ps->tick_timer) != 0) {
    return -ENOMEM;
  }
  if (ps->round_timer == NULL &&
      qraft_env_timer_new(ep->env, round_cb, ps, &ps->round_timer) != 0) {
    return -ENOMEM;
  }
  int rv = qraft_endpoint_register(ep, QRAFT_RELAY_ALPN, &relay_client_ops, ps);
  if (rv != 0) {
    return rv; /* a relay server on this endpoint: no relay client */
  }
  ps->proto = ep->protocols_n - 1;
  qraft_env_timer_arm(ps->tick_timer,
                      qraft_env_now_ns(ep->env) + TICK_MS * MS);
  return 0;
}

int qraft__path_start_home(qraft_endpoint *ep, qraft_err *err) {
  tp_paths *ps = ep->paths;
  if (ep->cfg.relays_n == 0) {
    return 0;
  }
  int rv = paths_start(ps);
  if (rv != 0) {
    return QRAFT_ERR(err, rv, "relay client");
  }
  for (uint32_t i = 0; i < ep->cfg.relays_n; i++) {
    tp_relay *r = relay_get(ps, &ep->cfg.relays[i], true);
    if (r == NULL) {
      return QRAFT_ERR(err, -ENOMEM, "relay");
    }
    relay_want(ps, r);
  }
  return 0;
}

bool qraft__path_wanted(const qraft_endpoint *ep, const tp_peer *peer) {
  const tp_paths *ps = ep->paths;
  if (ps != NULL && ps->proto >= 0 && peer->proto == ps->proto) {
    return false; /* relays themselves are dialed directly */
  }
  return peer->addr.relays_n > 0 || ep->cfg.relays_n > 0;
}

int qraft__path_vaddr(qraft_endpoint *ep, const qraft_node_addr *addr,
                      struct sockaddr_storage *out) {
  tp_paths *ps = ep->paths;
  int rv = paths_start(ps);
  if (rv != 0) {
    return rv;
  }
  tp_path *p = path_get(ps, &addr->id);
  if (p == NULL) {
    return QRAFT_ELIMIT;
  }
  uint64_t now = qraft_env_now_ns(ep->env);
  for (uint32_t i = 0; i < p->cands_n; i++) {
    p->cands[i].config = false;
  }
  for (uint32_t i = 0; i < addr->addrs_n; i++) {
    tp_cand *c = cand_add(p, (const struct sockaddr *)&addr->addrs[i], now);
    if (c != NULL) {
      c->config = true;
    }
  }
  if (addr->relays_n > 0) {
    p->relays_n = addr->relays_n;
    memcpy(p->relays, addr->relays, sizeof p->relays);
  }
  *out = p->vaddr;
  return 0;
}

/* The relay to reach `p` through: one of its own that is up, else one of
 * ours; relays not yet connected are dialed for next time. */
static bool relay_usable(const tp_relay *r) {
  return r != NULL && r->conn != NULL && r->sid >= 0 && !r->elsewhere;
}

/* The relay to reach `p` through: the one its last datagram came by, else
 * one of its own, else one of ours; a relay that just said the peer is not
 * there is passed over while another will do. When none of the peer's own
 * relays is connected, they are dialed for next time. */
static tp_relay *relay_for(tp_paths *ps, tp_path *p, uint64_t now) {
  bool gone_lately = p->gone_relay != NULL &&
                     now - p->gone_ns < ps->ep->cfg.path_retry_ms * MS;
  tp_relay *avoid = gone_lately ? p->gone_relay : NULL;
  if (relay_usable(p->rx_relay) && p->rx_relay != avoid) {
    return p->rx_relay;
  }
  tp_relay *pick = NULL, *fallback = NULL;
  tp_relay *own[QRAFT_NODE_RELAYS_MAX] = {NULL};
  for (uint32_t i = 0; i < p->relays_n; i++) {
    own[i] = relay_get(ps, &p->relays[i], false);
    if (!relay_usable(own[i])) {
      continue;
    }
    if (own[i] == avoid) {
      fallback = own[i];
    } else if (pick == NULL) {
      pick = own[i];
    }
  }
  if (pick == NULL) {
    for (tp_relay *r = ps->relays; r != NULL && pick == NULL; r = r->next) {
      if (r->home && relay_usable(r)) {
        if (r == avoid) {
          fallback = fallback != NULL ? fallback : r;
        } else {
          pick = r;
        }
      }
    }
  }
  if (pick == NULL) {
    /* none of its own is up: dial them (a home relay is dialed already) */
    for (uint32_t i = 0; i < p->relays_n; i++) {
      if (own[i] != NULL && !relay_usable(own[i])) {
        relay_want(ps, own[i]);
      }
    }
  }
  return pick != NULL ? pick : fallback;
}

static void send_direct(qraft_endpoint *ep, const struct sockaddr_storage *to,
                        const uint8_t *data, size_t len) {
  for (uint32_t i = 0; i < ep->udp_n; i++) {
    if (ep->udp[i] != NULL && ep->udp_addr[i].ss_family == to->ss_family) {
      qraft_env_udp_send(ep->udp[i], (const struct sockaddr *)to, data, len);
      return;
    }
  }
}

/* How long ago a packet on the peer's direct path decrypted (UINT64_MAX:
 * never). */
static uint64_t direct_age(const tp_path *p, uint64_t now) {
  if (p->direct_ok_ns == 0) {
    return UINT64_MAX;
  }
#ifdef QRAFT_CANARY_TRANSPORT_PATH_STALE_DIRECT
  /* The planted bug: a direct path, once it answered, is trusted forever
   * (the path layer keeps sending on it after it stopped validating). */
  return 0;
#endif
  return now - p->direct_ok_ns;
}

static void relay_send(tp_path *p, tp_relay *r, const uint8_t *data,
                       size_t len, uint64_t now) {
  qraft_relay_frame f = {.type = QRAFT_RELAY_SEND,
                         .peer = p->id,
                         .data = data,
                         .data_len = len};
  /* A datagram that would wait behind this much in the relay stream is
   * late anyway: dropped, as a full UDP socket would, so the peers' QUIC
   * sees the loss instead of a growing delay. */
  if (qraft_conn_stream_unacked_bytes(r->conn, r->sid) + len >
      RELAY_SEND_QUEUE_BYTES) {
    r->drops++;
    return;
  }
  if (relay_send_frame(r, &f) == 0) {
    r->datagrams_out++;
    p->relay_out += len;
  } else {
    r->drops++;
  }
  r->last_used_ns = now;
  p->last_relay = r;
}

/* A handshake packet (long header) to a peer on a relay goes through the
 * relay only (unless the relay just said the peer is not there): sent both
 * ways, the peer would take the two copies for two connections (one from
 * our virtual address, one from a real address it cannot tie to us yet). */
static bool handshake_by_relay(const qraft_endpoint *ep, const tp_path *p,
                               const tp_relay *r, const uint8_t *data,
                               uint64_t now) {
  bool gone = p->gone_ns != 0 && p->gone_relay == r &&
              now - p->gone_ns < ep->cfg.path_retry_ms * MS;
  return (data[0] & 0x80) != 0 && r != NULL && p->relays_n > 0 && !gone;
}

/* ---- probes (qraft/probe.h) ---- */

static bool sa_wildcard(const struct sockaddr_storage *a) {
  if (a->ss_family == AF_INET) {
    return ((const struct sockaddr_in *)a)->sin_addr.s_addr == INADDR_ANY;
  }
  return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)a)->sin6_addr);
}

/* Interfaces of containers, bridges, VPNs and tunnels: their addresses are
 * seldom reachable from a peer, and each would cost a probe. */
static bool iface_virtual(const char *name) {
  static const char *const prefixes[] = {
      "docker", "br-",   "veth",  "virbr", "vnet", "tun",  "tap",
      "wg",     "tailscale", "zt", "utun", "cni",  "flannel", "cali",
      "vmnet",  "vboxnet", "lxc", "lxd",   "kube", "podman", "cilium",
      "weave",  "lo"};
  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
    if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0) {
      return true;
    }
  }
  return false;
}

static void local_put(tp_paths *ps, const struct sockaddr_storage *a) {
  if (ps->local_n >= QRAFT_PROBE_ADDRS_MAX ||
      !cand_addr_ok((const struct sockaddr *)a)) {
    return;
  }
  for (uint32_t i = 0; i < ps->local_n; i++) {
    if (sa_eq(&ps->local[i], (const struct sockaddr *)a)) {
      return;
    }
  }
  ps->local[ps->local_n++] = *a;
}

/* Our own candidates, for a CALL_ME_MAYBE: the addresses our relays see
 * us at (a NAT's mapping), then each bound address, or for a wildcard
 * bind the addresses of up to LOCAL_IFACES_MAX interfaces (loopback and
 * virtual ones skipped) with the bound port. */
static void local_refresh(tp_paths *ps, uint64_t now) {
  qraft_endpoint *ep = ps->ep;
  if (ps->local_ns != 0 && now - ps->local_ns < ep->cfg.path_retry_ms * MS) {
    return;
  }
  ps->local_ns = now;
  ps->local_n = 0;
  for (tp_relay *r = ps->relays; r != NULL; r = r->next) {
    if (r->observed_set && relay_usable(r)) {
      local_put(ps, &r->observed);
    }
  }
  qraft_env_ifaddr ifs[32];
  uint32_t ifs_n = 0;
  bool ifs_read = false;
  for (uint32_t u = 0; u < ep->udp_n; u++) {
    const struct sockaddr_storage *b = &ep->udp_addr[u];
    if (!sa_wildcard(b)) {
      local_put(ps, b);
      continue;
    }
    if (!ifs_read) {
      ifs_n = qraft_env_interfaces(ep->env, ifs, 32);
      ifs_read = true;
    }
    uint32_t taken = 0;
    for (uint32_t i = 0; i < ifs_n && taken < LOCAL_IFACES_MAX; i++) {
      if (ifs[i].loopback || iface_virtual(ifs[i].name) ||
          ifs[i].addr.ss_family != b->ss_family) {
        continue;
      }
      struct sockaddr_storage a = ifs[i].addr;
      if (a.ss_family == AF_INET) {
        ((struct sockaddr_in *)&a)->sin_port = htons(sa_port(b));
      } else {
        ((struct sockaddr_in6 *)&a)->sin6_port = htons(sa_port(b));
      }
      local_put(ps, &a);
      taken++;
    }
  }
}

static void probe_send(qraft_endpoint *ep, qraft_env_udp *udp,
                       const struct sockaddr_storage *to,
                       const qraft_probe *pr) {
  uint8_t buf[QRAFT_PROBE_MAX];
  size_t n = qraft_probe_encode(pr, &ep->key, buf, sizeof buf);
  if (n == 0) {
    return;
  }
  if (udp != NULL) {
    qraft_env_udp_send(udp, (const struct sockaddr *)to, buf, n);
  } else {
    send_direct(ep, to, buf, n);
  }
}

static void ping_send(tp_paths *ps, tp_path *p, tp_cand *c, uint64_t now) {
  qraft_probe pr;
  memset(&pr, 0, sizeof pr);
  pr.type = QRAFT_PROBE_PING;
  qraft_env_random(ps->ep->env, c->txid, sizeof c->txid);
  memcpy(pr.txid, c->txid, sizeof pr.txid);
  pr.addr = c->addr;
  probe_send(ps->ep, NULL, &c->addr, &pr);
  c->ping_tx_ns = now;
  p->pings_out++;
}

/* Our candidates to the peer through relay `r`, so that it pings them. */
static void cmm_send(tp_paths *ps, tp_path *p, tp_relay *r, uint64_t now) {
  local_refresh(ps, now);
  if (r == NULL || !relay_usable(r) || ps->local_n == 0) {
    return;
  }
  qraft_probe pr;
  memset(&pr, 0, sizeof pr);
  pr.type = QRAFT_PROBE_CALL_ME_MAYBE;
  pr.addrs_n = ps->local_n;
  memcpy(pr.addrs, ps->local, ps->local_n * sizeof pr.addrs[0]);
  uint8_t buf[QRAFT_PROBE_MAX];
  size_t n = qraft_probe_encode(&pr, &ps->ep->key, buf, sizeof buf);
  if (n == 0) {
    return;
  }
  qraft_relay_frame f = {
      .type = QRAFT_RELAY_SEND, .peer = p->id, .data = buf, .data_len = n};
  if (relay_send_frame(r, &f) == 0) {
    p->cmm_out++;
    p->cmm_tx_ns = now;
    r->last_used_ns = now;
  }
}

/* A round of hole punching: a PING to each direct address of the peer
 * (not pinged within PING_MIN_GAP_MS), and with `cmm` our own candidates
 * through the relay, so that the peer pings them at the same time and both
 * NATs open. */
static void path_round(tp_paths *ps, tp_path *p, tp_relay *r, bool cmm,
                       uint64_t now) {
  for (uint32_t i = 0; i < p->cands_n; i++) {
    tp_cand *c = &p->cands[i];
    if (c->ping_tx_ns == 0 || now - c->ping_tx_ns >= PING_MIN_GAP_MS * MS) {
      ping_send(ps, p, c, now);
    }
  }
  if (cmm) {
    cmm_send(ps, p, r, now);
  }
}

/* How long after a round the next one is due while there is no direct
 * path: 250 ms after the first, doubling up to path_retry_ms (the first
 * CALL_ME_MAYBE may go out before the relay knows the peer, or before it
 * told us where it sees us). */
static uint64_t round_gap_ns(const qraft_endpoint *ep, const tp_path *p) {
  uint64_t retry = (uint64_t)ep->cfg.path_retry_ms * MS;
  uint32_t k = p->rounds > 0 ? p->rounds - 1 : 0;
  uint64_t gap = k < 8 ? (uint64_t)PING_MIN_GAP_MS * MS << k : retry;
  return gap < retry ? gap : retry;
}

/* A PONG came from `c` for our PING: the address works both ways. It
 * becomes the direct path if there is none, if the one in use is quiet, or
 * if it is faster by a millisecond (the path in use is kept otherwise). */
static void path_validated(tp_paths *ps, tp_path *p, tp_cand *c,
                           uint64_t now) {
  qraft_endpoint *ep = ps->ep;
  uint64_t age = direct_age(p, now);
  bool same = p->direct_ok_ns != 0 &&
              sa_eq(&p->direct, (const struct sockaddr *)&c->addr);
  bool take = same || age >= ep->cfg.path_quiet_ms * MS ||
              c->rtt_ns + MS < p->direct_rtt_ns;
  if (!take) {
    return;
  }
  if (age >= ep->cfg.path_trust_ms * MS) {
    p->upgrades++; /* a direct path (again) */
  }
  if (p->first_direct_ns == 0) {
    p->first_direct_ns = now;
  }
  p->direct = c->addr;
  p->direct_ok_ns = now;
  p->direct_rtt_ns = c->rtt_ns;
  p->kind = QRAFT_PATH_DIRECT; /* what the next packet takes */
}

static bool probe_token(tp_paths *ps, uint64_t now) {
  uint64_t full = (uint64_t)PROBE_BURST * 1000u;
  if (ps->probe_refill_ns == 0) {
    ps->probe_tokens = full;
  } else {
    uint64_t add = (now - ps->probe_refill_ns) / (MS / PROBE_RATE);
    ps->probe_tokens = ps->probe_tokens + add > full ? full
                                                     : ps->probe_tokens + add;
  }
  ps->probe_refill_ns = now;
  if (ps->probe_tokens < 1000u) {
    return false;
  }
  ps->probe_tokens -= 1000u;
  return true;
}

/* A probe on the UDP socket. A PING is answered with a PONG from anyone
 * (it holds no state); one from a peer we have a path for also makes its
 * source address one QUIC of the peer is accepted from, and is pinged
 * back. A PONG validates the address it answers from, if it answers a
 * PING of ours sent within PING_TIMEOUT_MS. */
static void probe_recv(tp_paths *ps, qraft_env_udp *udp,
                       const struct sockaddr *from, const uint8_t *data,
                       size_t len) {
  qraft_endpoint *ep = ps->ep;
  uint64_t now = qraft_env_now_ns(ep->env);
  ep->metrics.probes_in++;
  if (ep->cfg.relay_only) {
    return; /* no direct path wanted: not answered */
  }
  if (!probe_token(ps, now)) {
    ep->metrics.probes_limited++;
    return;
  }
  qraft_probe pr;
  if (qraft_probe_decode(data, len, &pr, NULL) != 0 ||
      pr.type == QRAFT_PROBE_CALL_ME_MAYBE) {
    ep->metrics.probes_bad++; /* a CALL_ME_MAYBE comes by relay only */
    return;
  }
  if (qraft_node_id_eq(&pr.sender, &ep->key.public_key)) {
    return; /* our own, come back */
  }
  tp_path *p = path_by_id(ps, &pr.sender);
  if (pr.type == QRAFT_PROBE_PING) {
    qraft_probe pong;
    memset(&pong, 0, sizeof pong);
    pong.type = QRAFT_PROBE_PONG;
    memcpy(pong.txid, pr.txid, sizeof pong.txid);
    sa_copy(&pong.addr, from);
    probe_send(ep, udp, &pong.addr, &pong);
    if (p == NULL) {
      return;
    }
    p->pings_in++;
    p->pongs_out++;
    tp_cand *c = cand_add(p, from, now);
    if (c == NULL) {
      return;
    }
    c->ping_rx_ns = now;
    bool fresh = c->pong_ns != 0 && now - c->pong_ns < ep->cfg.path_quiet_ms * MS;
    if (!fresh &&
        (c->ping_tx_ns == 0 || now - c->ping_tx_ns >= PING_MIN_GAP_MS * MS)) {
      ping_send(ps, p, c, now);
    }
    return;
  }
  /* PONG */
  tp_cand *c = p != NULL ? cand_find(p, from) : NULL;
  if (c == NULL || c->ping_tx_ns == 0 ||
      now - c->ping_tx_ns >= PING_TIMEOUT_MS * MS ||
      memcmp(c->txid, pr.txid, sizeof c->txid) != 0) {
    ep->metrics.probes_stale++; /* not an answer to a PING of ours */
    return;
  }
  memset(c->txid, 0, sizeof c->txid); /* one PONG per PING */
  p->pongs_in++;
  c->pong_ns = now;
  c->rtt_ns = now - c->ping_tx_ns;
  path_validated(ps, p, c, now);
}

/* A probe a relay delivered from peer `p`: a CALL_ME_MAYBE (anything else
 * does not belong on a relay). Its addresses are added to the peer's, and
 * pinged at once; our own candidates go back unless we sent them within a
 * second (so two peers never trade them back and forth), and a peer that
 * knew none of ours pings us too. Our own rounds keep their schedule. */
static void probe_by_relay(tp_paths *ps, tp_path *p, tp_relay *r,
                           const uint8_t *data, size_t len) {
  qraft_endpoint *ep = ps->ep;
  uint64_t now = qraft_env_now_ns(ep->env);
  ep->metrics.probes_in++;
  if (ep->cfg.relay_only) {
    return;
  }
  qraft_probe pr;
  if (qraft_probe_decode(data, len, &pr, NULL) != 0 ||
      pr.type != QRAFT_PROBE_CALL_ME_MAYBE ||
      !qraft_node_id_eq(&pr.sender, &p->id)) {
    ep->metrics.probes_bad++;
    return;
  }
  p->cmm_in++;
  for (uint32_t i = 0; i < pr.addrs_n; i++) {
    (void)cand_add(p, (const struct sockaddr *)&pr.addrs[i], now);
  }
  if (p->cmm_rx_ns != 0 && now - p->cmm_rx_ns < PING_MIN_GAP_MS * MS) {
    return;
  }
  p->cmm_rx_ns = now;
  bool answer = p->cmm_tx_ns == 0 || now - p->cmm_tx_ns >= 1000u * MS;
  path_round(ps, p, r, answer, now);
}

/* True if QUIC from `from` may reach `p`'s connections. */
static bool path_accepts(const tp_path *p, const struct sockaddr *from) {
  if (p->direct_ok_ns != 0 && sa_eq(&p->direct, from)) {
    return true;
  }
  for (uint32_t i = 0; i < p->cands_n; i++) {
    if (sa_eq(&p->cands[i].addr, from)) {
      return cand_accepts(&p->cands[i]);
    }
  }
  return false;
}

/* ---- datagrams through the path layer ---- */

static void send_cands(qraft_endpoint *ep, tp_path *p, const uint8_t *data,
                       size_t len) {
  bool any = false;
  for (uint32_t i = 0; i < p->cands_n; i++) {
    if (cand_accepts(&p->cands[i])) {
      send_direct(ep, &p->cands[i].addr, data, len);
      any = true;
    }
  }
  if (any) {
    p->direct_out += len;
  }
}

/* Rounds do not wait for QUIC to send: a peer whose first datagrams were
 * lost (the relay did not have it yet) would otherwise get its next round
 * only with QUIC's retransmission, a second later. The round timer runs
 * the rounds due of the peers in use (a datagram to or from them within
 * ROUND_ACTIVE_MS) that have no direct path. */
#define ROUND_ACTIVE_MS 10000u

static void round_arm(tp_paths *ps, uint64_t at) {
  if (ps->round_timer == NULL || ps->ep->shut_down ||
      (ps->round_due_ns != 0 && ps->round_due_ns <= at)) {
    return;
  }
  ps->round_due_ns = at;
  qraft_env_timer_arm(ps->round_timer, at);
}

static void round_cb(void *ud) {
  tp_paths *ps = ud;
  qraft_endpoint *ep = ps->ep;
  ps->round_due_ns = 0;
  if (ep->shut_down || ep->cfg.relay_only) {
    return;
  }
  uint64_t now = qraft_env_now_ns(ep->env);
  uint64_t next = 0;
  for (tp_path *p = ps->paths; p != NULL; p = p->next) {
    if (p->round_ns == 0 || now - p->active_ns >= ROUND_ACTIVE_MS * MS ||
        direct_age(p, now) < ep->cfg.path_trust_ms * MS) {
      continue; /* never tried, not in use, or direct */
    }
    uint64_t due = p->round_ns + round_gap_ns(ep, p);
    if (due <= now) {
      p->rounds++;
      p->round_ns = now;
      path_round(ps, p, relay_for(ps, p, now), true, now);
      due = now + round_gap_ns(ep, p);
    }
    next = next == 0 || due < next ? due : next;
  }
  if (next != 0) {
    round_arm(ps, next);
  }
}

void qraft__ep_send(qraft_endpoint *ep, qraft_env_udp *udp,
                    const struct sockaddr *to, const uint8_t *data,
                    size_t len) {
  if (!qraft__path_is_vaddr(to)) {
    qraft_env_udp_send(udp, to, data, len);
    return;
  }
  tp_paths *ps = ep->paths;
  tp_path *p = path_by_vaddr(ps, to);
  if (p == NULL) {
    ep->metrics.packets_dropped++;
    return;
  }
  uint64_t now = qraft_env_now_ns(ep->env);
  p->active_ns = now;
  if (ep->cfg.relay_only) {
    tp_relay *r = relay_for(ps, p, now);
    if (r != NULL) {
      relay_send(p, r, data, len, now);
    } else {
      send_cands(ep, p, data, len); /* its configured addresses only */
    }
    p->kind = r != NULL ? QRAFT_PATH_RELAY : QRAFT_PATH_MIXED;
    return;
  }
  uint64_t age = direct_age(p, now);
  if (age < ep->cfg.path_quiet_ms * MS) {
    /* A PONG or a decrypted packet on the direct path lately: direct
     * only. */
    p->trusted = true;
    p->kind = QRAFT_PATH_DIRECT;
    send_direct(ep, &p->direct, data, len);
    p->direct_out += len;
    return;
  }
  bool trusted = age < ep->cfg.path_trust_ms * MS;
  if (p->trusted && !trusted) {
    /* The direct path stayed quiet too long: lost. Back to the relay,
     * with a round of pings at once. */
    p->trusted = false;
    p->fallbacks++;
    p->round_ns = 0;
    p->rounds = 0;
  }
  tp_relay *r = relay_for(ps, p, now);
  if (trusted) {
    /* Quiet for a while (outdated): both ways until it answers again or
     * its trust runs out, so a dead direct path costs no more than
     * path_quiet_ms of the peer's packets; and a PING, whose PONG makes it
     * direct again. Handshake packets go through the relay only, as
     * below. */
    tp_cand *c = cand_find(p, (const struct sockaddr *)&p->direct);
    if (c != NULL && now - c->ping_tx_ns >= 2u * PING_MIN_GAP_MS * MS) {
      ping_send(ps, p, c, now);
    }
    if (!handshake_by_relay(ep, p, r, data, now)) {
      send_direct(ep, &p->direct, data, len);
      p->direct_out += len;
    }
    if (r != NULL) {
      relay_send(p, r, data, len, now);
    }
    p->kind = QRAFT_PATH_MIXED;
    return;
  }
  if (p->round_ns == 0 || now - p->round_ns >= round_gap_ns(ep, p)) {
    p->rounds++;
    p->round_ns = now;
    path_round(ps, p, r, true, now);
    round_arm(ps, p->round_ns + round_gap_ns(ep, p));
  }
  /* No direct path: the relay. Where no relay will carry it (none, or the
   * one we have just said the peer is not there), the packet goes to every
   * direct address QUIC is accepted from too. */
  bool gone = r != NULL && p->gone_relay == r &&
              now - p->gone_ns < ep->cfg.path_retry_ms * MS;
  if (r == NULL || gone) {
    send_cands(ep, p, data, len);
  }
  if (r != NULL) {
    relay_send(p, r, data, len, now);
  }
  p->kind = r == NULL || gone ? QRAFT_PATH_MIXED : QRAFT_PATH_RELAY;
}

void qraft__ep_recv(qraft_endpoint *ep, qraft_env_udp *udp,
                    const struct sockaddr *from, const uint8_t *data,
                    size_t len) {
  tp_paths *ps = ep->paths;
  if (qraft_probe_is(data, len)) {
    probe_recv(ps, udp, from, data, len);
    return;
  }
  tp_path *p = NULL;
  if (ps->paths != NULL && len > 1 + TP_CID_LEN && (data[0] & 0x80) == 0) {
    /* A short-header packet: its connection id names its connection. One
     * of the path layer's gets it as from the peer's virtual address, if it
     * comes from an address the peer is accepted from; from any other it is
     * dropped (an address becomes one only by an authenticated probe: a
     * packet copied and sent from elsewhere redirects nothing). */
    uint32_t tag;
    memcpy(&tag, data + 1, 4);
    qraft_conn *c = qraft__ep_conn_by_tag(ep, tag);
    if (c != NULL &&
        qraft__path_is_vaddr((const struct sockaddr *)&c->remote)) {
      p = path_by_vaddr(ps, (const struct sockaddr *)&c->remote);
      if (p != NULL && !path_accepts(p, from)) {
#ifndef QRAFT_CANARY_TRANSPORT_PATH_UNPROBED
        ep->metrics.packets_unprobed++;
        return;
#endif
      }
    }
  } else if (ps->paths != NULL) {
    /* A long-header packet (a handshake): from an address a peer is
     * accepted from, it is that peer's. */
    for (tp_path *x = ps->paths; x != NULL && p == NULL; x = x->next) {
      if (path_accepts(x, from)) {
        p = x;
      }
    }
  }
  if (p == NULL) {
    qraft__quic_recv(ep, udp, from, data, len);
    return;
  }
  ps->cur_path = p;
  ps->cur_direct = true;
  sa_copy(&ps->cur_from, from);
  p->direct_in += len;
  p->active_ns = qraft_env_now_ns(ep->env);
  qraft__quic_recv(ep, udp, (const struct sockaddr *)&p->vaddr, data, len);
  ps->cur_path = NULL;
}

void qraft__path_authenticated(qraft_conn *c) {
  tp_paths *ps = c->ep->paths;
  tp_path *p = ps->cur_path;
  if (p == NULL || !ps->cur_direct || c->state != TP_UP ||
      !sa_eq(&p->vaddr, (const struct sockaddr *)&c->remote) ||
      !qraft_node_id_eq(&c->peer_id, &p->id)) {
    return;
  }
  uint64_t now = qraft_env_now_ns(c->ep->env);
#ifdef QRAFT_CANARY_TRANSPORT_PATH_UNPROBED
  /* The planted bug: a packet that decrypts makes its source the direct
   * path, probed or not (a copy sent from elsewhere redirects the peer). */
  if (!sa_eq(&p->direct, (const struct sockaddr *)&ps->cur_from)) {
    p->direct = ps->cur_from;
    p->direct_ok_ns = now;
  }
#endif
  /* A decrypted packet keeps the direct path in use trusted; it makes no
   * other address direct (only a PONG does). */
  if (p->direct_ok_ns != 0 &&
      sa_eq(&p->direct, (const struct sockaddr *)&ps->cur_from) &&
      direct_age(p, now) < c->ep->cfg.path_trust_ms * MS) {
    p->direct_ok_ns = now;
    p->kind = QRAFT_PATH_DIRECT; /* what the next packet takes */
  }
}

bool qraft__path_conn_ok(qraft_conn *c) {
  if (!qraft__path_is_vaddr((const struct sockaddr *)&c->remote)) {
    return true;
  }
  tp_path *p = path_by_vaddr(c->ep->paths, (const struct sockaddr *)&c->remote);
  return p != NULL && qraft_node_id_eq(&p->id, &c->peer_id);
}

static void drain_cb(void *ud) {
  tp_paths *ps = ud;
  qraft_endpoint *ep = ps->ep;
  /* What arrives while draining waits for the next turn. */
  uint32_t n = ps->q_n;
  while (n-- > 0 && ps->q_n > 0) {
    rx_item it = ps->q[ps->q_head];
    ps->q_head = (ps->q_head + 1) % ps->q_cap;
    ps->q_n--;
    if (!ep->shut_down && ep->udp_n > 0 && ep->udp[0] != NULL) {
      it.path->relay_in += it.len;
      ps->cur_path = it.path;
      ps->cur_direct = false;
      qraft__quic_recv(ep, ep->udp[0],
                       (const struct sockaddr *)&it.path->vaddr, it.data,
                       it.len);
      ps->cur_path = NULL;
    }
    free(it.data);
  }
  if (ps->q_n > 0) {
    qraft_env_timer_arm(ps->drain_timer, 0);
  }
}

static void tick_cb(void *ud) {
  tp_paths *ps = ud;
  qraft_endpoint *ep = ps->ep;
  if (ep->shut_down) {
    return;
  }
  uint64_t now = qraft_env_now_ns(ep->env);
  for (tp_relay *r = ps->relays; r != NULL; r = r->next) {
    if (!r->home && r->dialed &&
        now - r->last_used_ns >= ep->cfg.relay_idle_ms * MS) {
      r->dialed = false;
      qraft_endpoint_undial(ep, &r->addr.id, QRAFT_RELAY_ALPN);
    }
  }
  qraft_env_timer_arm(ps->tick_timer, now + TICK_MS * MS);
}

void qraft__path_conn_freed(qraft_conn *c) {
  tp_paths *ps = c->ep->paths;
  if (ps == NULL) {
    return;
  }
  for (tp_relay *r = ps->relays; r != NULL; r = r->next) {
    if (r->conn == c) {
      r->conn = NULL;
      r->sid = -1;
      r->rd.len = 0;
    }
  }
}

void qraft__path_shutdown(qraft_endpoint *ep) {
  tp_paths *ps = ep->paths;
  if (ps == NULL) {
    return;
  }
  qraft_env_timer_free(ps->drain_timer);
  ps->drain_timer = NULL;
  qraft_env_timer_free(ps->tick_timer);
  ps->tick_timer = NULL;
  qraft_env_timer_free(ps->round_timer);
  ps->round_timer = NULL;
  while (ps->q_n > 0) {
    free(ps->q[ps->q_head].data);
    ps->q_head = (ps->q_head + 1) % ps->q_cap;
    ps->q_n--;
  }
}

void qraft__path_free(qraft_endpoint *ep) {
  tp_paths *ps = ep->paths;
  if (ps == NULL) {
    return;
  }
  qraft__path_shutdown(ep);
  while (ps->paths != NULL) {
    tp_path *p = ps->paths;
    ps->paths = p->next;
    free(p);
  }
  while (ps->relays != NULL) {
    tp_relay *r = ps->relays;
    ps->relays = r->next;
    qraft_relay_reader_free(&r->rd);
    free(r);
  }
  free(ps->q);
  free(ps);
  ep->paths = NULL;
}

void qraft__path_peer_metrics(qraft_endpoint *ep, const qraft_node_id *id,
                              qraft_peer_metrics *out) {
  tp_path *p = path_by_id(ep->paths, id);
  if (p == NULL) {
    return;
  }
  uint64_t now = qraft_env_now_ns(ep->env);
  uint64_t age = direct_age(p, now);
  /* Quiet but trusted: mixed if a packet went out both ways since the
   * direct path last answered; direct if not (an idle pair: nothing says
   * its direct path is bad, and the next packet pings it). */
  bool trusted = age < ep->cfg.path_trust_ms * MS;
  out->path = age < ep->cfg.path_quiet_ms * MS ? QRAFT_PATH_DIRECT
              : trusted && p->kind == QRAFT_PATH_DIRECT ? QRAFT_PATH_DIRECT
              : trusted                                 ? QRAFT_PATH_MIXED
              : p->kind == QRAFT_PATH_DIRECT            ? QRAFT_PATH_MIXED
                                                        : p->kind;
  out->path_direct_bytes_out = p->direct_out;
  out->path_direct_bytes_in = p->direct_in;
  out->path_relay_bytes_out = p->relay_out;
  out->path_relay_bytes_in = p->relay_in;
  out->path_fallbacks = p->fallbacks;
  out->path_upgrades = p->upgrades;
  if (p->direct_ok_ns != 0) {
    out->path_direct_addr = p->direct;
    out->path_direct_rtt_ns = p->direct_rtt_ns;
  }
  out->path_first_direct_ns =
      p->first_direct_ns != 0 ? p->first_direct_ns - p->created_ns : 0;
  out->path_pings_out = p->pings_out;
  out->path_pings_in = p->pings_in;
  out->path_pongs_out = p->pongs_out;
  out->path_pongs_in = p->pongs_in;
  out->path_call_me_maybe_out = p->cmm_out;
  out->path_call_me_maybe_in = p->cmm_in;
  out->path_candidates = p->cands_n;
  if (p->last_relay != NULL && p->last_relay->conn != NULL) {
    qraft_peer_metrics rm;
    memset(&rm, 0, sizeof rm);
    qraft__quic_stats(p->last_relay->conn, &rm);
    out->path_relay_rtt_ns = rm.smoothed_rtt_ns;
  }
}

uint32_t qraft_endpoint_relays(qraft_endpoint *ep, qraft_relay_status *out,
                               uint32_t cap) {
  uint32_t n = 0;
  for (tp_relay *r = ep->paths->relays; r != NULL; r = r->next, n++) {
    if (n >= cap) {
      continue;
    }
    qraft_relay_status *s = &out[n];
    memset(s, 0, sizeof *s);
    s->relay = r->addr;
    s->home = r->home;
    s->up = r->conn != NULL && r->sid >= 0;
    s->observed_set = r->observed_set;
    s->observed = r->observed;
    if (r->conn != NULL) {
      qraft_peer_metrics rm;
      memset(&rm, 0, sizeof rm);
      qraft__quic_stats(r->conn, &rm);
      s->rtt_ns = rm.smoothed_rtt_ns;
    }
    s->datagrams_out = r->datagrams_out;
    s->datagrams_in = r->datagrams_in;
    s->drops = r->drops;
    s->peer_gone = r->peer_gone;
    s->elsewhere = r->elsewhere;
  }
  return n;
}

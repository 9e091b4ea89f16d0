/*
 * transport_int.h: what endpoint.c (pool, router, public API) and quic.c
 * (every ngtcp2 and GnuTLS call) share. Not installed.
 */
#ifndef QRAFT_TRANSPORT_INT_H
#define QRAFT_TRANSPORT_INT_H

#include <qraft/transport.h>

#include <stdbool.h>
#include <stdint.h>

#define TP_PROTOCOLS_MAX 8
#define TP_ALPN_MAX 255
/* Our connection ids: a 4-byte connection tag (routes packets to the
 * connection without a table) and 12 random bytes. */
#define TP_CID_LEN 16

typedef struct tp_quic tp_quic; /* ngtcp2 + GnuTLS state of a connection */
typedef struct tp_peer tp_peer;
typedef struct tp_paths tp_paths; /* the path layer and relay client */

typedef struct tp_protocol {
  char alpn[TP_ALPN_MAX + 1];
  size_t alpn_len;
  qraft_protocol_ops ops;
  void *ud;
  bool unpooled; /* every inbound connection to the handler (relay server) */
} tp_protocol;

typedef enum tp_conn_state {
  TP_HANDSHAKE = 0, /* TLS handshake under way */
  TP_UP,            /* established and handed to the handler */
  TP_LOSER,         /* established, lost the duplicate tie-break, closing */
  TP_HELD,          /* established inbound, held while our own dial to the
                       same peer (which wins the tie-break) is under way */
  TP_CLOSING,       /* our close frame sent; waiting out the closing period */
  TP_DEAD,          /* to be freed */
} tp_conn_state;

struct qraft_conn {
  qraft_endpoint *ep;
  qraft_conn *next, *prev; /* the endpoint's list */
  tp_quic *q;
  uint32_t tag;
  bool dialed;
  tp_conn_state state;
  int proto;                /* index in ep->protocols; -1 until known */
  qraft_node_id peer_id;
  bool peer_id_known;
  tp_peer *peer;            /* the pool entry, once the id is known */
  qraft_env_udp *udp;
  struct sockaddr_storage local, remote;
  qraft_env_timer *timer;
  bool dirty;
  qraft_conn *dirty_next;
  uint64_t established_ns;
  int busy;                 /* > 0: inside ngtcp2; defer frees and closes */
  bool close_pending;
  uint64_t close_pending_code;
  char close_pending_reason[48];
  int hs_fail;              /* qraft_handshake_failure, or -1 */
  qraft_close_info why;
  bool why_set;
  uint64_t unacked_bytes;
  /* counters of this connection */
  uint64_t bytes_in, bytes_out, packets_in, packets_out;
  uint64_t frames_in, frames_out, messages_in, messages_out;
};

struct tp_peer {
  tp_peer *next;
  qraft_endpoint *ep;
  qraft_node_id id;
  int proto;
  bool wanted;
  qraft_node_addr addr;
  uint32_t dial_attempts;
  qraft_conn *up;      /* the established connection, or NULL */
  qraft_conn *dialing; /* our outbound handshake in progress, or NULL */
  qraft_conn *held;    /* an inbound connection held (TP_HELD), or NULL */
  qraft_env_timer *redial_timer;
  qraft_env_timer *hold_timer;
  uint32_t backoff_ms;
  uint64_t ups;
  qraft_peer_metrics closed; /* counters of connections gone */
};

struct qraft_endpoint {
  qraft_endpoint_config cfg;
  qraft_env *env;
  qraft_secret_key key;
  qraft_logger *log;
  void *tls; /* endpoint-wide GnuTLS credentials and priorities (quic.c) */
  uint8_t reset_secret[32];
  qraft_env_udp *udp[2];
  struct sockaddr_storage udp_addr[2];
  uint32_t udp_n;
  tp_protocol protocols[TP_PROTOCOLS_MAX];
  int protocols_n;
  qraft_conn *conns;
  uint32_t conns_n;
  qraft_conn *dirty_head;
  qraft_env_timer *flush_timer;
  tp_peer *peers;
  bool shut_down;
  qraft_endpoint_metrics metrics;
  tp_paths *paths;
  /* discovery providers (qraft/discovery.h) */
  struct {
    const char *name;
    int (*resolve)(void *ud, const qraft_node_id *id, qraft_node_addr *out);
    void (*publish)(void *ud, const qraft_node_addr *self);
    void *ud;
  } disc[4];
  int disc_n;
};

/* ---- quic.c: the only file that calls ngtcp2 and GnuTLS ---- */

int qraft__quic_ep_init(qraft_endpoint *ep, qraft_err *err);
void qraft__quic_ep_close(qraft_endpoint *ep);
/* Routes a datagram to its connection, accepts a new one, or answers with a
 * stateless reset. */
void qraft__quic_recv(qraft_endpoint *ep, qraft_env_udp *udp,
                      const struct sockaddr *from, const uint8_t *data,
                      size_t len);
/* Starts a client connection to `peer` at `to`. */
int qraft__quic_dial(qraft_endpoint *ep, tp_peer *peer,
                     const struct sockaddr *to, qraft_conn **out);
/* Writes whatever the connection has to send, and re-arms its timer. */
void qraft__quic_write(qraft_conn *c);
/* Closes with an application close code (sends CONNECTION_CLOSE). */
void qraft__quic_close(qraft_conn *c, uint64_t app_code, const char *reason);
/* Frees the QUIC state. */
void qraft__quic_free(qraft_conn *c);
void qraft__quic_held_deliver(qraft_conn *c);
int qraft__quic_stream_open(qraft_conn *c, bool bidi, int64_t *id);
int qraft__quic_stream_send(qraft_conn *c, int64_t id, qraft_slice data,
                            bool fin);
void qraft__quic_stream_reset(qraft_conn *c, int64_t id, uint64_t app_code);
uint64_t qraft__quic_stream_unacked(const qraft_conn *c, int64_t id);
void qraft__quic_stats(qraft_conn *c, qraft_peer_metrics *m);

/* ---- endpoint.c: called back by quic.c ---- */

/* The handshake is confirmed (client) or completed (server) and the peer's
 * id and ALPN are known: authorize, resolve duplicates, hand to the
 * handler. */
void qraft__ep_conn_established(qraft_conn *c);
/* The connection ended (closed by either side, timed out or failed); `why`
 * says how. Updates the pool, tells the handler. Does not free. */
void qraft__ep_conn_ended(qraft_conn *c, const qraft_close_info *why);
/* Frees a connection that has ended. */
void qraft__ep_conn_free(qraft_conn *c);
/* Schedules a write of the connection before the loop waits. */
void qraft__ep_mark_dirty(qraft_conn *c);
/* Finds the connection by the tag of one of our connection ids. */
qraft_conn *qraft__ep_conn_by_tag(qraft_endpoint *ep, uint32_t tag);
/* Allocates a connection object with a fresh tag and a timer. */
int qraft__ep_conn_new(qraft_endpoint *ep, bool dialed, qraft_conn **out);
void qraft__ep_timer_cb(void *ud);

/* ---- path.c: the path layer under QUIC and the relay client ---- */

/* Same family, address and port (IPv4 or IPv6). */
bool qraft__sockaddr_eq(const struct sockaddr *a, const struct sockaddr *b);

int qraft__path_init(qraft_endpoint *ep, qraft_err *err);
/* Connects to the configured home relays (after the sockets are bound). */
int qraft__path_start_home(qraft_endpoint *ep, qraft_err *err);
void qraft__path_shutdown(qraft_endpoint *ep);
void qraft__path_free(qraft_endpoint *ep);
/* True if `peer` is dialed through the path layer (at a virtual address). */
bool qraft__path_wanted(const qraft_endpoint *ep, const tp_peer *peer);
/* The virtual address of the peer of `addr` (its path is created or its
 * addresses updated). */
int qraft__path_vaddr(qraft_endpoint *ep, const qraft_node_addr *addr,
                      struct sockaddr_storage *out);
bool qraft__path_is_vaddr(const struct sockaddr *sa);
/* Every datagram out of the endpoint: to a virtual address, the path layer
 * routes it; else it goes out of `udp`. */
void qraft__ep_send(qraft_endpoint *ep, qraft_env_udp *udp,
                    const struct sockaddr *to, const uint8_t *data,
                    size_t len);
/* Every datagram into the endpoint from its sockets. */
void qraft__ep_recv(qraft_endpoint *ep, qraft_env_udp *udp,
                    const struct sockaddr *from, const uint8_t *data,
                    size_t len);
/* The datagram being read was accepted by established connection `c`: if
 * it came on a direct path of the peer, that path is trusted anew. */
void qraft__path_authenticated(qraft_conn *c);
/* False if `c`'s virtual address belongs to another id than its peer's. */
bool qraft__path_conn_ok(qraft_conn *c);
/* `c` is being freed: forget it. */
void qraft__path_conn_freed(qraft_conn *c);
void qraft__path_peer_metrics(qraft_endpoint *ep, const qraft_node_id *id,
                              qraft_peer_metrics *out);

#endif

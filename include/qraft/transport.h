/*
 * qraft/transport.h: an Iroh-style endpoint. Peers are named by Ed25519
 * public keys, talk QUIC (ngtcp2) authenticated with TLS 1.3 raw public keys
 * both ways, and each connection is routed by its ALPN to the protocol
 * handler registered for it.
 *
 * Threads: an endpoint belongs to the loop thread of its env. Every
 * qraft_endpoint_* and qraft_conn_* function must be called on that thread,
 * and every callback runs there; a callback must not block. The identity
 * functions (qraft_secret_key_*, qraft_node_id_*) may be called from any
 * thread.
 *
 * See docs/transport.md for close codes, limits and metrics.
 */
#ifndef QRAFT_TRANSPORT_H
#define QRAFT_TRANSPORT_H

#include <qraft/buf.h>
#include <qraft/env.h>
#include <qraft/error.h>
#include <qraft/log.h>
#include <qraft/wire.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Identity ---- */

#define QRAFT_KEY_BYTES 32
/* 64 hex characters and a NUL. */
#define QRAFT_NODE_ID_HEX_SIZE 65
/* 52 base32hex characters, ".iroh.invalid" and a NUL. */
#define QRAFT_SERVER_NAME_SIZE 66

/* A node id: the 32-byte Ed25519 public key. */
typedef struct qraft_node_id {
  uint8_t bytes[QRAFT_KEY_BYTES];
} qraft_node_id;

/* An Ed25519 secret key: the 32-byte seed and the public key derived from
 * it. Plain data; wipe it with qraft_secret_key_wipe when done. */
typedef struct qraft_secret_key {
  uint8_t seed[QRAFT_KEY_BYTES];
  qraft_node_id public_key;
} qraft_secret_key;

/* Derives the key whose secret seed is `seed` (32 bytes). */
void qraft_secret_key_from_seed(qraft_secret_key *key,
                                const uint8_t seed[QRAFT_KEY_BYTES]);

/*
 * Generates a new key from the kernel's random generator (GnuTLS's key
 * generator).
 * Returns 0 on success, or one of these negative codes: QRAFT_EKEY.
 */
int qraft_secret_key_generate(qraft_secret_key *key);

/*
 * Writes the seed to `path` as 64 hex characters and a newline, in a file of
 * mode 0600 created next to it and renamed over it after an fsync, so a
 * crash leaves either the old file or the new one. `err` may be NULL.
 * Returns 0 on success, or one of these negative codes: -errno.
 */
int qraft_secret_key_save(const qraft_secret_key *key, const char *path,
                          qraft_err *err);

/*
 * Reads a key file written by qraft_secret_key_save (64 hex characters,
 * optional trailing newline; a raw 32-byte seed is also accepted). A file
 * that its group or others may read or write is refused: a secret key must
 * be private to its owner (chmod 600). `err` may be NULL.
 * Returns 0 on success, or one of these negative codes: QRAFT_EKEY (mode
 * wider than 0600, or malformed contents), -errno (cannot open or read).
 */
int qraft_secret_key_load(qraft_secret_key *key, const char *path,
                          qraft_err *err);

/* Overwrites the key's memory with zeros. */
void qraft_secret_key_wipe(qraft_secret_key *key);

/* Writes the id as 64 lowercase hex characters and a NUL. */
void qraft_node_id_to_hex(const qraft_node_id *id,
                          char out[QRAFT_NODE_ID_HEX_SIZE]);

/*
 * Parses a node id written as 64 hex characters (either case) or as 52
 * characters of RFC 4648 base32 without padding (either case), as iroh
 * accepts.
 * Returns 0 on success, or one of these negative codes: QRAFT_EMALFORMED.
 */
int qraft_node_id_parse(const char *text, qraft_node_id *out);

/* Writes the TLS server name iroh uses for the id: the key in lowercase
 * base32hex without padding, then ".iroh.invalid", and a NUL. */
void qraft_node_id_server_name(const qraft_node_id *id,
                               char out[QRAFT_SERVER_NAME_SIZE]);

/* True if the two ids are equal. */
bool qraft_node_id_eq(const qraft_node_id *a, const qraft_node_id *b);

/* Compares ids as big-endian numbers: <0, 0 or >0. */
int qraft_node_id_cmp(const qraft_node_id *a, const qraft_node_id *b);

/* ---- Addresses ---- */

#define QRAFT_NODE_ADDRS_MAX 4
#define QRAFT_NODE_RELAYS_MAX 2

/* A relay server (qraft-relay, see qraft/relay.h): its id and the UDP
 * address of its endpoint. */
typedef struct qraft_relay_addr {
  qraft_node_id id;
  struct sockaddr_storage addr;
} qraft_relay_addr;

/* Where to reach a node: its id, up to QRAFT_NODE_ADDRS_MAX direct UDP
 * addresses (IPv4 or IPv6) and up to QRAFT_NODE_RELAYS_MAX relays it keeps
 * a connection to. Any but the id may be empty. Plain data, copied by the
 * functions that take it. */
typedef struct qraft_node_addr {
  qraft_node_id id;
  uint32_t addrs_n;
  struct sockaddr_storage addrs[QRAFT_NODE_ADDRS_MAX];
  uint32_t relays_n;
  qraft_relay_addr relays[QRAFT_NODE_RELAYS_MAX];
} qraft_node_addr;

/* ---- Close codes (QUIC application error codes) ----
 * Sent in the CONNECTION_CLOSE frame of an application close; the peer sees
 * them in qraft_close_info.app_code. */
#define QRAFT_CLOSE_NORMAL 0x0       /* graceful: endpoint shut down, or the
                                        user closed the connection */
#define QRAFT_CLOSE_DUPLICATE 0x1    /* a second connection of the pair lost
                                        the simultaneous-dial tie-break */
#define QRAFT_CLOSE_REPLACED 0x2     /* a newer connection of the pair
                                        replaced this one */
#define QRAFT_CLOSE_UNAUTHORIZED 0x3 /* the authorization hook refused the
                                        client's id */
#define QRAFT_CLOSE_PROTOCOL 0x4     /* the peer broke the protocol of the
                                        ALPN (malformed frame, bad preamble)*/
#define QRAFT_CLOSE_LIMIT 0x5        /* the peer exceeded a configured limit */
#define QRAFT_CLOSE_UNWANTED 0x6     /* the dialer no longer wants the peer */

/* Why a connection ended, as its protocol handler is told. */
typedef struct qraft_close_info {
  int code;           /* QRAFT_ECLOSED (a close by either side),
                         QRAFT_ETIMEDOUT (idle or handshake timeout),
                         QRAFT_ETLS, QRAFT_EAUTH, QRAFT_EQUIC, QRAFT_EPEER */
  bool remote;        /* the peer closed it */
  bool app;           /* app_code is set (an application close) */
  uint64_t app_code;  /* QRAFT_CLOSE_* */
  uint64_t quic_code; /* QUIC transport error code when !app; 0x100 + TLS
                         alert for a TLS failure */
  char reason[64];    /* the peer's or our reason phrase, NUL-terminated */
} qraft_close_info;

/* ---- Endpoint ---- */

typedef struct qraft_endpoint qraft_endpoint;
typedef struct qraft_conn qraft_conn;

/*
 * Decides whether a client may talk to this endpoint. Called on the server
 * when the TLS handshake completes, before any stream is served: `peer` is
 * the id proven by the client's key, `alpn` the protocol it asked for. Return
 * false to refuse: the connection closes with QRAFT_CLOSE_UNAUTHORIZED.
 */
typedef bool (*qraft_authorize_cb)(void *ud, const qraft_node_id *peer,
                                   const char *alpn);

/* Handshake failures, counted by reason in qraft_endpoint_metrics. */
typedef enum qraft_handshake_failure {
  QRAFT_HS_FAIL_PEER_KEY = 0,  /* the server's key is not the dialed id */
  QRAFT_HS_FAIL_UNAUTHORIZED,  /* our hook refused the client, or the server
                                  refused us */
  QRAFT_HS_FAIL_ALPN,          /* no common ALPN */
  QRAFT_HS_FAIL_TIMEOUT,       /* no answer within the handshake timeout */
  QRAFT_HS_FAIL_TLS,           /* any other TLS failure */
  QRAFT_HS_FAIL_OTHER,         /* QUIC errors, resource limits */
  QRAFT_HS_FAIL_N
} qraft_handshake_failure;

typedef struct qraft_endpoint_config {
  qraft_env *env;               /* required; not owned */
  const qraft_secret_key *key;  /* required; copied */
  /* Addresses to bind (IPv4 and/or IPv6; port 0 picks one). At least one. */
  uint32_t bind_n;
  struct sockaddr_storage bind[2];
  qraft_authorize_cb authorize_cb; /* NULL: accept every client */
  void *authorize_ud;
  qraft_logger *logger;            /* NULL: the default logger */
  /* Timeouts and intervals; 0 picks the default in brackets. */
  uint32_t idle_timeout_ms;        /* [10000] no packet for this long: the
                                      connection is dead */
  uint32_t keep_alive_ms;          /* [idle_timeout_ms / 3] PING interval */
  uint32_t handshake_timeout_ms;   /* [5000] */
  uint32_t ack_delay_max_ms;       /* [2] QUIC max_ack_delay: bounds the
                                      loss-recovery timers */
  uint32_t redial_min_ms;          /* [50] first redial delay */
  uint32_t redial_max_ms;          /* [5000] backoff cap; each delay is
                                      drawn uniformly in [d/2, d] */
  uint32_t duplicate_window_ms;    /* [1000] see the tie-break rule in
                                      docs/transport.md */
  /* Limits; 0 picks the default in brackets. */
  uint32_t conns_max;              /* [1024] connections, all peers */
  uint32_t streams_max;            /* [64] streams the peer may open at
                                      once, per direction kind */
  uint64_t stream_window_bytes;    /* [1 MiB] initial flow-control window */
  uint64_t conn_window_bytes;      /* [4 MiB] */
  uint64_t send_buffer_bytes_max;  /* [8 MiB] bytes queued and not yet
                                      acknowledged, per connection */
  /* Home relays: the endpoint keeps a connection to each from the start,
   * reports them in qraft_endpoint_addr, and reaches through them any peer
   * whose address names no relay of its own. None: peers are dialed at
   * their direct addresses only, unless their address names relays. See
   * docs/connectivity.md. */
  uint32_t relays_n;
  qraft_relay_addr relays[QRAFT_NODE_RELAYS_MAX];
  uint32_t path_quiet_ms;          /* [300] a direct path alone carries
                                      the packets while a PONG or a
                                      decrypted packet came on it this
                                      recently; then the relay too */
  uint32_t path_trust_ms;          /* [6500] a direct path is trusted this
                                      long after a PONG or a decrypted
                                      packet on it; then it is lost */
  uint32_t path_retry_ms;          /* [5000] how often a peer without a
                                      direct path pings its direct
                                      addresses again (the first rounds
                                      come sooner: 250 ms, doubling) */
  uint32_t relay_queue_max;        /* [512] datagrams received from relays
                                      and not yet processed */
  uint32_t relay_idle_ms;          /* [60000] a relay that is not a home
                                      relay is left after this long unused */
  /* Peers reached through the path layer stay on the relay: no probe is
   * sent or answered and no direct path is taken (to measure the relay, or
   * where direct UDP between peers is unwanted). Off: hole punching. */
  bool relay_only;
} qraft_endpoint_config;

/* What a protocol handler is told. All callbacks are optional except
 * conn_up_cb. `conn` stays valid from conn_up_cb until conn_down_cb
 * returns. */
typedef struct qraft_protocol_ops {
  /* The connection is established (handshake confirmed, peer authorized,
   * duplicates resolved) and ready for streams. `dialed` is true if this
   * endpoint dialed it. */
  void (*conn_up_cb)(void *ud, qraft_conn *conn, bool dialed);
  /* The connection ended; `conn` is freed when this returns. */
  void (*conn_down_cb)(void *ud, qraft_conn *conn,
                       const qraft_close_info *why);
  /* Bytes arrived on a stream, in order; `data` is valid only during the
   * call. `fin`: the peer finished the stream. */
  void (*stream_recv_cb)(void *ud, qraft_conn *conn, int64_t stream_id,
                         const uint8_t *data, size_t len, bool fin);
  /* A stream is closed both ways (app_code: the reset code, or 0). */
  void (*stream_closed_cb)(void *ud, qraft_conn *conn, int64_t stream_id,
                           uint64_t app_code);
  /* The peer acknowledged data; `unacked_bytes` is what the connection
   * still holds. Use it to resume a sender held back by QRAFT_EBUSY. */
  void (*acked_cb)(void *ud, qraft_conn *conn, uint64_t unacked_bytes);
} qraft_protocol_ops;

/*
 * Creates an endpoint: binds its sockets on the env and serves. The caller
 * owns the endpoint until qraft_endpoint_free. `err` may be NULL.
 * Returns 0 on success, or one of these negative codes: QRAFT_ECONFIG,
 * QRAFT_ETLS (credentials), -ENOMEM, -errno from binding.
 */
int qraft_endpoint_new(const qraft_endpoint_config *cfg, qraft_endpoint **out,
                       qraft_err *err);

/*
 * As qraft_endpoint_register, for a protocol whose inbound connections are
 * not pooled: every connection a client makes is handed to the handler,
 * however many the same id has (the relay server serves each and decides).
 * Dialing such an ALPN is refused.
 */
int qraft_endpoint_register_unpooled(qraft_endpoint *ep, const char *alpn,
                                     const qraft_protocol_ops *ops, void *ud);

/*
 * Registers the handler for `alpn` (1..255 bytes, copied). A client asking
 * for an ALPN nobody registered fails the handshake (TLS alert
 * no_application_protocol). `ops` is copied; `ud` is passed to every
 * callback.
 * Returns 0 on success, or one of these negative codes: QRAFT_ECONFIG (bad
 * or duplicate ALPN, too many protocols), QRAFT_ESHUTDOWN.
 */
int qraft_endpoint_register(qraft_endpoint *ep, const char *alpn,
                            const qraft_protocol_ops *ops, void *ud);

/*
 * Keeps a connection to `addr` for protocol `alpn` (which must be
 * registered): dials now unless one is up or being dialed, and after every
 * loss re-dials with exponential backoff and jitter until
 * qraft_endpoint_undial. Inbound connections from the same peer for the same
 * ALPN count: there is one connection per peer pair and ALPN. Calling again
 * updates the addresses.
 * Returns 0 on success, or one of these negative codes: QRAFT_ECONFIG
 * (unknown ALPN, no address, own id), QRAFT_ESHUTDOWN, QRAFT_ELIMIT,
 * -ENOMEM.
 */
int qraft_endpoint_dial(qraft_endpoint *ep, const qraft_node_addr *addr,
                        const char *alpn);

/* True if qraft_endpoint_dial could try to reach `addr`: it has a direct
 * address or a relay, or this endpoint has home relays. */
bool qraft_endpoint_reachable(const qraft_endpoint *ep,
                              const qraft_node_addr *addr);

/* Stops keeping the connection to `peer` for `alpn`; a connection that is up
 * is closed with QRAFT_CLOSE_UNWANTED. Unknown peers are ignored. */
void qraft_endpoint_undial(qraft_endpoint *ep, const qraft_node_id *peer,
                           const char *alpn);

/* The established connection to `peer` for `alpn`, or NULL. Valid until its
 * conn_down_cb returns. */
qraft_conn *qraft_endpoint_conn(qraft_endpoint *ep, const qraft_node_id *peer,
                                const char *alpn);

/* Replaces the authorization hook of the configuration (NULL: accept every
 * client). Applies to handshakes that complete from now on. */
void qraft_endpoint_set_authorize(qraft_endpoint *ep, qraft_authorize_cb cb,
                                  void *ud);

/* The env the endpoint runs on. */
qraft_env *qraft_endpoint_env(const qraft_endpoint *ep);

/* This endpoint's id and bound addresses. */
const qraft_node_id *qraft_endpoint_id(const qraft_endpoint *ep);
void qraft_endpoint_addr(const qraft_endpoint *ep, qraft_node_addr *out);

/*
 * Reads now every datagram that has already arrived at the endpoint's
 * sockets (at most `max` a socket) and processes it as the loop would:
 * packets decrypted, stream data and messages handed to the handlers before
 * this returns. A driver whose timer must see what arrived before it fired
 * calls this first (qraft_env_udp_poll). Not from a connection's callback.
 * Returns the number of datagrams read.
 */
uint32_t qraft_endpoint_poll(qraft_endpoint *ep, uint32_t max);

/*
 * Graceful shutdown: stops accepting and dialing, closes every connection
 * with QRAFT_CLOSE_NORMAL (each handler gets conn_down_cb), sends the close
 * frames and closes the sockets. Idempotent. Must not be called from a
 * connection's callback (asserted). After it, only qraft_endpoint_free, the
 * getters and the metrics may be called.
 */
void qraft_endpoint_shutdown(qraft_endpoint *ep);

/* Shuts down if needed and frees the endpoint. NULL is ignored. */
void qraft_endpoint_free(qraft_endpoint *ep);

/* ---- Connections and streams ---- */

/* The peer's id, proven by its key. */
const qraft_node_id *qraft_conn_peer(const qraft_conn *conn);
/* The ALPN of the connection (NUL-terminated). */
const char *qraft_conn_alpn(const qraft_conn *conn);
/* True if this endpoint dialed the connection (it is the QUIC client). */
bool qraft_conn_dialed(const qraft_conn *conn);
/* The UDP address the connection's packets come from. For a peer reached
 * by the path layer (through a relay) this is its virtual address, in
 * fd71:7261:6674::/48; false is returned then, true for a real address. */
bool qraft_conn_remote_addr(const qraft_conn *conn,
                            struct sockaddr_storage *out);

/*
 * Opens a stream: unidirectional (only we send) or bidirectional.
 * Returns 0 on success, or one of these negative codes: QRAFT_ELIMIT (the
 * peer allows no more streams now), QRAFT_ECLOSED.
 */
int qraft_conn_stream_open(qraft_conn *conn, bool bidi, int64_t *stream_id);

/*
 * Queues `data` on a stream without copying: takes a reference to
 * data.owner (or, if owner is NULL, copies the bytes) and holds it until the
 * peer acknowledges them. `fin` finishes the stream after these bytes. The
 * bytes go out before the loop next waits.
 * Returns 0 on success, or one of these negative codes: QRAFT_EBUSY (the
 * connection already holds send_buffer_bytes_max unacknowledged bytes; wait
 * for acked_cb), QRAFT_ENOTFOUND (no such stream, or finished), QRAFT_ECLOSED,
 * -ENOMEM.
 */
int qraft_conn_stream_send(qraft_conn *conn, int64_t stream_id,
                           qraft_slice data, bool fin);

/* Resets a stream in both directions with `app_code`. */
void qraft_conn_stream_reset(qraft_conn *conn, int64_t stream_id,
                             uint64_t app_code);

/* Bytes queued on the connection and not yet acknowledged. */
uint64_t qraft_conn_unacked_bytes(const qraft_conn *conn);
/* Of those, the bytes of one stream (0 for a stream it does not hold). */
uint64_t qraft_conn_stream_unacked_bytes(const qraft_conn *conn,
                                         int64_t stream_id);

/*
 * Closes the connection with an application close (`app_code`, one of
 * QRAFT_CLOSE_*, and a short reason, sent to the peer). The handler's
 * conn_down_cb runs before this returns, or, when called from a callback of
 * this same connection, right after that callback returns; `conn` must not
 * be used after conn_down_cb. If the peer is dialed, the endpoint re-dials
 * it after the backoff.
 */
void qraft_conn_close(qraft_conn *conn, uint64_t app_code, const char *reason);

/* ---- Metrics ---- */

typedef struct qraft_peer_metrics {
  qraft_node_id peer;
  bool up;
  uint64_t bytes_out;      /* stream bytes handed to QUIC */
  uint64_t bytes_in;       /* stream bytes received */
  uint64_t packets_out;
  uint64_t packets_in;
  uint64_t frames_out;     /* protocol frames, counted by the handler */
  uint64_t frames_in;
  uint64_t messages_out;
  uint64_t messages_in;
  uint64_t smoothed_rtt_ns;
  uint64_t cwnd_bytes;
  uint64_t lost_packets;   /* packets declared lost (retransmitted) */
  uint64_t reconnects;     /* connections established after the first */
  uint64_t refused;        /* our dials it refused as not authorized (its
                            * hook does not admit our key, e.g. a member
                            * that has not yet seen us added) */
  /* The path layer (peers reached through relays; zero otherwise): which
   * path carries the traffic now, and the bytes of QUIC packets each path
   * carried, over every connection to the peer. */
  int path;                 /* qraft_path_kind */
  uint64_t path_direct_bytes_out, path_direct_bytes_in;
  uint64_t path_relay_bytes_out, path_relay_bytes_in;
  uint64_t path_relay_rtt_ns; /* smoothed RTT to the relay in use */
  uint64_t path_fallbacks;  /* direct paths lost (trust ran out) */
  uint64_t path_upgrades;   /* direct paths (re)gained */
  struct sockaddr_storage path_direct_addr; /* the direct address in use
                                               (family 0: none yet) */
  uint64_t path_direct_rtt_ns;  /* its last PING's round trip */
  uint64_t path_first_direct_ns; /* from the path's creation to its first
                                    direct path (0: none yet) */
  uint64_t path_pings_out, path_pings_in;   /* probes (qraft/probe.h) */
  uint64_t path_pongs_out, path_pongs_in;
  uint64_t path_call_me_maybe_out, path_call_me_maybe_in;
  uint32_t path_candidates; /* direct addresses known for the peer */
} qraft_peer_metrics;

/* The path a peer's packets take (qraft_peer_metrics.path). */
typedef enum qraft_path_kind {
  QRAFT_PATH_NONE = 0,  /* no path layer: the peer's direct address */
  QRAFT_PATH_DIRECT,    /* a direct address that answered lately */
  QRAFT_PATH_MIXED,     /* trying direct: each packet goes both ways */
  QRAFT_PATH_RELAY,     /* the relay only (direct retried now and then) */
} qraft_path_kind;

/* "none", "direct", "mixed", "relay". */
const char *qraft_path_kind_name(int kind);

/* A relay this endpoint talks to, as qraft_endpoint_relays reports it. */
typedef struct qraft_relay_status {
  qraft_relay_addr relay;
  bool home;                /* a home relay (configured) */
  bool up;                  /* connected */
  bool observed_set;        /* the relay told us our address */
  struct sockaddr_storage observed; /* the address the relay sees us from */
  uint64_t rtt_ns;
  uint64_t datagrams_out, datagrams_in;
  uint64_t drops;           /* datagrams not sent for want of room */
  uint64_t peer_gone;       /* PEER_GONE frames received */
  bool elsewhere;           /* the relay says our id connected elsewhere */
} qraft_relay_status;

/* Fills up to `cap` entries of `out` with the relays this endpoint knows;
 * returns how many there are. */
uint32_t qraft_endpoint_relays(qraft_endpoint *ep, qraft_relay_status *out,
                               uint32_t cap);

typedef struct qraft_endpoint_metrics {
  uint64_t conns_up;
  uint64_t conns_accepted;
  uint64_t conns_dialed;
  uint64_t handshake_failures[QRAFT_HS_FAIL_N];
  uint64_t stateless_resets_sent;
  uint64_t packets_dropped; /* unroutable or undecodable datagrams */
  uint64_t relay_drops;     /* datagrams from relays dropped: queue full,
                               unknown sender beyond the path table */
  uint64_t probes_in;       /* probes received (qraft/probe.h) */
  uint64_t probes_bad;      /* malformed, badly signed, or out of place */
  uint64_t probes_limited;  /* dropped unchecked: over the probe rate */
  uint64_t probes_stale;    /* PONGs to no PING of ours (late, replayed,
                               from another address) */
  uint64_t packets_unprobed; /* QUIC of a peer on the path layer from an
                                address no authenticated probe vouched
                                for: dropped */
  uint64_t migrations;      /* connections whose peer moved to a new
                               address (its NAT rebound it), validated */
} qraft_endpoint_metrics;

/* Copies the endpoint's counters. */
void qraft_endpoint_metrics_get(const qraft_endpoint *ep,
                                qraft_endpoint_metrics *out);

/*
 * Copies the counters of `peer` for `alpn` (summed over its connections; RTT
 * and window of the current one).
 * Returns 0 on success, or one of these negative codes: QRAFT_ENOTFOUND.
 */
int qraft_endpoint_peer_metrics(qraft_endpoint *ep, const qraft_node_id *peer,
                                const char *alpn, qraft_peer_metrics *out);

/* For protocol handlers: count frames and messages they sent or received on
 * `conn` into its peer's metrics. */
void qraft_conn_count_frames(qraft_conn *conn, bool out, uint64_t frames,
                             uint64_t messages);

/* Name of a handshake failure reason ("peer_key", "unauthorized", ...). */
const char *qraft_handshake_failure_name(qraft_handshake_failure f);

/* ---- The Raft protocol handler (ALPN "iroh-raft/0") ----
 *
 * Carries Raft messages between members of one cluster. Every stream starts
 * with the wire preamble (magic, version, cluster id, sender's Raft id) and
 * one byte naming its kind. Messages go on one long-lived unidirectional
 * stream per peer and direction, batched into frames; a MsgSnapshot goes on
 * a stream of its own: one frame with its metadata, then its data streamed
 * in chunks with at most snapshot_inflight_bytes_max unacknowledged, then a
 * CRC-32C of the data, so heartbeats never wait behind it (streams share
 * packets round-robin) and neither side holds more than a few chunks of it
 * in memory. A peer that sends a malformed frame, another cluster's or
 * version's preamble, or a Raft id that is not its key's, has its
 * connection closed with QRAFT_CLOSE_PROTOCOL; one that exceeds a limit,
 * with QRAFT_CLOSE_LIMIT. Everyone else is served on. */

#define QRAFT_RAFT_ALPN "iroh-raft/0"
/* The byte after the preamble. */
#define QRAFT_RAFT_STREAM_MESSAGES 1
/* A streamed snapshot (docs/transport.md). Kind 2, a snapshot sent whole as
 * one frame (before streaming), is refused as an unknown kind. */
#define QRAFT_RAFT_STREAM_SNAPSHOT 3
/* The application code with which a receiver stops a snapshot stream it
 * cannot take (its sink refused it or failed to write). */
#define QRAFT_RAFT_SNAPSHOT_REFUSED 0x51

typedef struct qraft_raft_net qraft_raft_net;

/* A frame arrived from member `from`. Ownership of `batch` passes to the
 * callee (free it with qraft_wire_batch_free); its payloads point into the
 * received buffer. */
typedef void (*qraft_raft_recv_cb)(void *ud, qraft_id from,
                                   qraft_wire_batch *batch);
/* A member became reachable (connection up) or unreachable (down). */
typedef void (*qraft_raft_peer_cb)(void *ud, qraft_id peer, bool reachable);
/* The snapshot sent to `to` was acknowledged by its transport (status 0)
 * or failed (QRAFT_ECLOSED: the connection went down). */
typedef void (*qraft_raft_snapshot_sent_cb)(void *ud, qraft_id to,
                                            int status);

/* The length of a snapshot source that does not know it ahead: its data
 * goes in framed chunks, up to the read that gives 0 bytes. */
#define QRAFT_RAFT_SNAPSHOT_BYTES_UNKNOWN UINT64_MAX

/* A snapshot's data for qraft_raft_net_send_snapshot, read in chunks as the
 * connection's window opens. */
typedef struct qraft_raft_snapshot_source {
  /* the data's length, or QRAFT_RAFT_SNAPSHOT_BYTES_UNKNOWN */
  uint64_t bytes;
  /* Fills `buf` with up to `cap` bytes (*got > 0 until `bytes` were read;
   * of unknown length, *got 0 once the data ended). A negative return
   * abandons the transfer: the stream is reset. */
  int (*read)(void *ctx, void *buf, size_t cap, size_t *got);
  /* Called once when the transfer ends, whichever way. */
  void (*close)(void *ctx);
  void *ctx;
} qraft_raft_snapshot_source;

/* Where a received snapshot's data goes, chunk by chunk. */
typedef struct qraft_raft_snapshot_sink {
  /* Takes the next `len` bytes; a negative return abandons the transfer
   * (abort follows, and the stream is stopped). */
  int (*write)(void *ctx, const void *data, size_t len);
  /* The transfer broke (connection or stream lost, checksum mismatch,
   * refused, shutdown): drop what was written. */
  void (*abort)(void *ctx);
  void *ctx;
} qraft_raft_snapshot_sink;

/* A snapshot stream from `from` begins: `m` is its MsgSnapshot (metadata;
 * m->snapshot->data is empty), `bytes` its data's length (or
 * QRAFT_RAFT_SNAPSHOT_BYTES_UNKNOWN: the sender streams it as it reads
 * it). Return 0 with
 * *sink filled to take the data, or a negative code to refuse it (the
 * stream is stopped with QRAFT_RAFT_SNAPSHOT_REFUSED). */
typedef int (*qraft_raft_snapshot_begin_cb)(void *ud, qraft_id from,
                                            const qraft_message *m,
                                            uint64_t bytes,
                                            qraft_raft_snapshot_sink *sink);
/* Every byte of a snapshot begun with snapshot_begin_cb arrived into its
 * sink, the CRC-32C matched and the stream ended: `batch` holds its
 * MsgSnapshot (data empty; ownership passes to the callee) and `sink_ctx`
 * is that sink's ctx, which the callee now owns (abort is not called). */
typedef void (*qraft_raft_snapshot_recv_cb)(void *ud, qraft_id from,
                                            qraft_wire_batch *batch,
                                            void *sink_ctx);

typedef struct qraft_raft_net_config {
  qraft_endpoint *ep; /* required; the handler registers QRAFT_RAFT_ALPN */
  uint64_t cluster_id; /* required, not 0 */
  qraft_id self_id;    /* required, not 0: our Raft id */
  uint64_t group_id;   /* frames' group */
  /* Frames sent and accepted; zero fields pick the wire defaults. */
  qraft_wire_limits limits;
  /* [256 MiB] the largest snapshot received into memory, when there is no
   * snapshot_begin_cb; with one, snapshots are not bounded here. */
  uint64_t snapshot_bytes_max;
  uint32_t snapshot_chunk_bytes;        /* [64 KiB] */
  uint64_t snapshot_inflight_bytes_max; /* [1 MiB] unacked on the conn */
  uint32_t snapshot_streams_max;        /* [2] inbound, per peer */
  /* [4 MiB] qraft_raft_net_send refuses (QRAFT_EBUSY) a message once the
   * connection's unacknowledged bytes plus the batch being built would pass
   * this; keep it at most the endpoint's send_buffer_bytes_max minus one
   * frame. */
  uint64_t send_buffer_bytes_max;
  qraft_raft_recv_cb recv_cb;           /* required */
  qraft_raft_peer_cb peer_cb;           /* optional */
  qraft_raft_snapshot_sent_cb snapshot_sent_cb; /* optional */
  /* Optional, together: received snapshots stream into sinks. Without
   * them a snapshot is received into memory (up to snapshot_bytes_max) and
   * delivered by recv_cb with its data. */
  qraft_raft_snapshot_begin_cb snapshot_begin_cb;
  qraft_raft_snapshot_recv_cb snapshot_recv_cb;
  /* A stream whose preamble names a sender that is not a member: return
   * true to admit it as a member reachable over this connection (the node
   * uses it to let a joining node answer a leader it has not heard of yet:
   * it checks that `sender` is the Raft id of `key`). NULL: refuse. */
  bool (*unknown_sender_cb)(void *ud, qraft_id sender,
                            const qraft_node_id *key);
  void *ud;
} qraft_raft_net_config;

/*
 * Creates the handler and registers it on the endpoint. The caller owns it
 * until qraft_raft_net_free, which must come before qraft_endpoint_free.
 * Returns 0 on success, or one of these negative codes: QRAFT_ECONFIG,
 * -ENOMEM.
 */
int qraft_raft_net_new(const qraft_raft_net_config *cfg, qraft_raft_net **out,
                       qraft_err *err);
/* Frees the handler. Shut the endpoint down first (qraft_endpoint_shutdown):
 * the handler stays registered on it. NULL is ignored. */
void qraft_raft_net_free(qraft_raft_net *net);

/*
 * Adds (or updates) member `id` reachable at `addr` (its key and direct
 * addresses, copied). With `dial`, the endpoint keeps a connection to it;
 * both members may dial: the pool keeps one connection.
 * Returns 0 on success, or one of these negative codes: QRAFT_ECONFIG,
 * QRAFT_ELIMIT, -ENOMEM, or what qraft_endpoint_dial returns.
 */
int qraft_raft_net_add_peer(qraft_raft_net *net, qraft_id id,
                            const qraft_node_addr *addr, bool dial);

/* Forgets member `id` and closes its connection. */
void qraft_raft_net_remove_peer(qraft_raft_net *net, qraft_id id);

/* True if `key` belongs to a member: use it in the endpoint's authorization
 * hook (see qraft_raft_net_authorize_cb). */
bool qraft_raft_net_authorize(const qraft_raft_net *net,
                              const qraft_node_id *key);

/* A qraft_authorize_cb whose `ud` is the qraft_raft_net: admits members on
 * QRAFT_RAFT_ALPN, everyone on other ALPNs. Install it with
 * qraft_endpoint_set_authorize. */
bool qraft_raft_net_authorize_cb(void *ud, const qraft_node_id *peer,
                                 const char *alpn);

/*
 * Sends `m` to member m->to. The message is encoded before this returns
 * (its memory may be reused); messages are batched and the frames go out
 * before the loop next waits. A MsgSnapshot goes on its own stream.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_EUNKNOWN_NODE  m->to is not a member;
 *   QRAFT_EUNAVAILABLE   no connection to it now (the message is dropped:
 *                        Raft retries);
 *   QRAFT_EBUSY          send_buffer_bytes_max is reached (wait for
 *                        the peer's acknowledgements), or a snapshot to
 *                        it is still in flight (dropped);
 *   QRAFT_ELIMIT         the message is larger than a frame may be;
 *   -ENOMEM.
 */
int qraft_raft_net_send(qraft_raft_net *net, const qraft_message *m,
                        qraft_err *err);

/*
 * Sends MsgSnapshot `m` (its metadata; m->snapshot->data is ignored) to
 * member m->to with its data read from `src`. On success the handler owns
 * the source and closes it when the transfer ends; snapshot_sent_cb
 * reports the outcome, perhaps before this returns (a source that fails
 * at once). On error the caller still owns it.
 * Returns 0 on success, or one of these negative codes: QRAFT_EUNKNOWN_NODE,
 * QRAFT_EUNAVAILABLE, QRAFT_EBUSY (a snapshot to it is still in flight, or
 * no stream can be opened now), QRAFT_ELIMIT, -ENOMEM.
 */
int qraft_raft_net_send_snapshot(qraft_raft_net *net, const qraft_message *m,
                                 const qraft_raft_snapshot_source *src,
                                 qraft_err *err);

/* What the handler holds in memory (bytes), for a node's metrics. */
typedef struct qraft_raft_net_memory {
  /* Stream bytes handed to QUIC and not yet acknowledged, and frames
   * batched for the next flush, over every peer: messages and snapshots. */
  uint64_t send_bytes;
  /* Of send_bytes, the snapshot streams' (each at most about
   * snapshot_inflight_bytes_max), plus the chunks read for them and
   * waiting for room. */
  uint64_t snapshot_out_bytes;
  /* Snapshots being received into memory (no snapshot_begin_cb). */
  uint64_t snapshot_in_bytes;
} qraft_raft_net_memory;

/* Fills `out`. On the handler's loop thread. */
void qraft_raft_net_memory_get(const qraft_raft_net *net,
                               qraft_raft_net_memory *out);

#ifdef __cplusplus
}
#endif
#endif

/*
 * The relay protocol: its frames, and the relay server (qraft-relay) that
 * forwards datagrams between clients named by their node ids. The client
 * side is the endpoint's path layer (qraft_endpoint_config.relays; see
 * docs/connectivity.md).
 *
 * A client and its relay speak over one bidirectional QUIC stream of the
 * ALPN QRAFT_RELAY_ALPN: the handshake's raw public keys already prove the
 * client's node id, so there is no handshake of frames. The stream carries
 * frames, each
 *
 *   type (QUIC varint) | length of the payload (QUIC varint) | payload
 *
 * with iroh-relay's frame numbers and payload layouts where they fit
 * (iroh 0.91 `iroh-relay/src/protos/relay.rs`; ../shared/research/
 * iroh-connectivity.md), and one frame of ours:
 *
 *   type  frame              payload
 *   4     SEND               destination id 32, ECN 1, datagram
 *   5     SEND_BATCH         destination id 32, ECN 1, segment size u16 BE,
 *                            datagrams of that size (the last may be shorter)
 *   6     RECV               source id 32, ECN 1, datagram
 *   7     RECV_BATCH         source id 32, ECN 1, segment size u16 BE, ...
 *   8     PEER_GONE          id 32 (a peer we sent to is not connected)
 *   9     PING               8 bytes, echoed by
 *   10    PONG               8 bytes
 *   11    HEALTH             UTF-8 text (a problem the relay reports)
 *   12    RESTARTING         reconnect in (ms) u32 BE, try for (ms) u32 BE
 *   13    STATUS             1 byte: 0 healthy, 1 this id is connected
 *                            elsewhere (this connection gets nothing more)
 *   63    OBSERVED_ADDR      (ours) the address the relay sees the client
 *                            from: family 4 or 6, the address (4 or 16
 *                            bytes), port u16 BE
 *
 * Datagrams are at most QRAFT_RELAY_DATAGRAM_MAX bytes (a batch's whole
 * run too); a frame's payload at most QRAFT_RELAY_PAYLOAD_MAX. A frame of
 * another type decodes as itself with its payload in `data`, so that a
 * peer may skip what it does not know. Varints may be of any of QUIC's
 * four lengths on input; we write the shortest.
 */
#ifndef QRAFT_RELAY_H
#define QRAFT_RELAY_H

#include <qraft/error.h>
#include <qraft/transport.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QRAFT_RELAY_ALPN "qraft/relay/1"
#define QRAFT_RELAY_DATAGRAM_MAX 65536u
#define QRAFT_RELAY_PAYLOAD_MAX (QRAFT_RELAY_DATAGRAM_MAX + 64u)
/* type and length, at most */
#define QRAFT_RELAY_HEADER_MAX 16u

typedef enum qraft_relay_frame_type {
  QRAFT_RELAY_SEND = 4,
  QRAFT_RELAY_SEND_BATCH = 5,
  QRAFT_RELAY_RECV = 6,
  QRAFT_RELAY_RECV_BATCH = 7,
  QRAFT_RELAY_PEER_GONE = 8,
  QRAFT_RELAY_PING = 9,
  QRAFT_RELAY_PONG = 10,
  QRAFT_RELAY_HEALTH = 11,
  QRAFT_RELAY_RESTARTING = 12,
  QRAFT_RELAY_STATUS = 13,
  QRAFT_RELAY_OBSERVED_ADDR = 63,
} qraft_relay_frame_type;

#define QRAFT_RELAY_STATUS_HEALTHY 0u
#define QRAFT_RELAY_STATUS_SAME_ID_ELSEWHERE 1u

typedef struct qraft_relay_frame {
  uint64_t type; /* a qraft_relay_frame_type, or another number */
  /* SEND*, RECV*: the other end; PEER_GONE: the peer */
  qraft_node_id peer;
  uint8_t ecn;      /* SEND*, RECV*: the datagram's ECN bits (0..3) */
  uint16_t segment; /* *_BATCH: the size of each datagram but the last */
  /* SEND*, RECV*: the datagram(s); HEALTH: the text; another type: its
   * payload. Points into the decoded bytes (or the caller's, to encode). */
  const uint8_t *data;
  size_t data_len;
  uint8_t ping[8];                 /* PING, PONG */
  uint32_t reconnect_in_ms;        /* RESTARTING */
  uint32_t try_for_ms;             /* RESTARTING */
  uint8_t status;                  /* STATUS */
  struct sockaddr_storage addr;    /* OBSERVED_ADDR (AF_INET or AF_INET6) */
} qraft_relay_frame;

/* The encoded size of `f` (header included), or 0 if `f` cannot be
 * encoded (a field out of range: see qraft_relay_frame_decode's checks). */
size_t qraft_relay_frame_size(const qraft_relay_frame *f);

/* Writes `f` at `out` (room for qraft_relay_frame_size(f) bytes); returns
 * the bytes written, or 0 as qraft_relay_frame_size. */
size_t qraft_relay_frame_encode(const qraft_relay_frame *f, uint8_t *out);

/*
 * Decodes the frame at the start of data[0..len). Returns 0 with the frame
 * in *f (pointing into `data`) and its size in *used, or:
 *   QRAFT_ETRUNCATED  the bytes end inside the frame (read more: *used is
 *                     then the frame's size when its header is complete,
 *                     else 0);
 *   QRAFT_ELIMIT      a payload longer than QRAFT_RELAY_PAYLOAD_MAX (close
 *                     the stream: the sender breaks the protocol);
 *   QRAFT_EMALFORMED  a known frame whose payload does not fit its layout.
 * `err` (may be NULL) says where and why.
 */
int qraft_relay_frame_decode(const uint8_t *data, size_t len,
                             qraft_relay_frame *f, size_t *used,
                             qraft_err *err);

/* Encodes `f` and queues it on stream `sid` of `conn` (copied). Returns 0,
 * QRAFT_EMALFORMED (f cannot be encoded), or what qraft_conn_stream_send
 * returns. On the connection's loop thread. */
int qraft_relay_frame_send(qraft_conn *conn, int64_t sid,
                           const qraft_relay_frame *f);

/* "SEND", "PING", ... or "UNKNOWN". */
const char *qraft_relay_frame_name(uint64_t type);

/* Reads frames off a stream that arrives in pieces: holds the start of a
 * frame that is not complete yet (at most one frame's bytes). Zero it to
 * start; free it with qraft_relay_reader_free. */
typedef struct qraft_relay_reader {
  uint8_t *buf;
  size_t len, cap;
} qraft_relay_reader;

/* Called for each frame; a nonzero return stops the reader and is returned
 * by qraft_relay_reader_feed. `f` points into bytes valid only during the
 * call. */
typedef int (*qraft_relay_frame_cb)(void *ud, const qraft_relay_frame *f);

/*
 * Feeds the next `len` bytes of the stream: calls `cb` for every frame they
 * complete, in order, and keeps the rest. After a nonzero return (the
 * callback's or an error) the bytes not yet read are dropped: the caller
 * is expected to close the stream.
 * Returns 0, the callback's nonzero return, or one of these negative codes:
 * QRAFT_ELIMIT, QRAFT_EMALFORMED (as qraft_relay_frame_decode: the peer
 * broke the protocol), -ENOMEM.
 */
int qraft_relay_reader_feed(qraft_relay_reader *r, const uint8_t *data,
                            size_t len, qraft_relay_frame_cb cb, void *ud,
                            qraft_err *err);
void qraft_relay_reader_free(qraft_relay_reader *r);

/* ---- The relay server ----
 *
 * Serves QRAFT_RELAY_ALPN on an endpoint of its own (register nothing else
 * of that ALPN on it). Every client connection is served; the client's id
 * is its key, proven by the handshake. Who may connect is the endpoint's
 * authorization hook (open, an allow-list, a deny-list: qraft-relay's
 * flags). The server
 *   - forwards SEND / SEND_BATCH to the client of the destination id as
 *     RECV / RECV_BATCH from the sender, or answers PEER_GONE when that id
 *     is not connected;
 *   - tells each client, in its first frames, OBSERVED_ADDR (the address it
 *     sees the client's packets come from) and STATUS healthy;
 *   - bounds what waits for each client (queue_bytes_max not acknowledged,
 *     every frame counted: beyond it frames are dropped and counted), and
 *     closes a client whose queue stays full for write_timeout_ms
 *     (QRAFT_CLOSE_LIMIT), or that opened no stream within
 *     ping_timeout_ms of connecting;
 *   - limits what each client may send (a token bucket of rx_bytes_per_s
 *     and rx_burst_bytes; excess datagrams are dropped and counted);
 *   - pings each client every ping_interval_ms (plus up to a quarter more,
 *     at random) and closes one that has not answered in ping_timeout_ms;
 *   - serves a second connection with the same id as iroh does since 0.97:
 *     the newest gets the id's datagrams, the older one is sent STATUS
 *     "same id elsewhere" and gets nothing more (it is not closed, so two
 *     processes with one key do not take turns evicting each other); when
 *     the newest goes, the next newest is served again.
 */

typedef struct qraft_relay_server qraft_relay_server;

typedef struct qraft_relay_server_config {
  qraft_endpoint *ep;        /* required; not owned */
  qraft_logger *logger;      /* NULL: the default logger */
  /* 0 picks the default in brackets. */
  uint64_t queue_bytes_max;  /* [768 KiB] about 512 full-size datagrams */
  uint32_t write_timeout_ms; /* [2000] */
  uint32_t ping_interval_ms; /* [15000] */
  uint32_t ping_timeout_ms;  /* [5000] */
  uint64_t rx_bytes_per_s;   /* [0: no limit] */
  uint64_t rx_burst_bytes;   /* [rx_bytes_per_s] */
} qraft_relay_server_config;

typedef struct qraft_relay_server_metrics {
  uint64_t clients;           /* connections served now */
  uint64_t clients_accepted;  /* connections served, ever */
  uint64_t datagrams_in;      /* datagrams clients sent */
  uint64_t datagrams_out;     /* datagrams forwarded */
  uint64_t bytes_in, bytes_out;
  uint64_t drops_no_peer;     /* to an id not connected */
  uint64_t drops_queue;       /* the destination's queue was full */
  uint64_t drops_rate;        /* the sender was over its rate */
  uint64_t drops_inactive;    /* to an id served by a newer connection */
  uint64_t duplicate_ids;     /* connections that displaced one of the same
                                 id */
  uint64_t ping_timeouts;
  uint64_t write_timeouts;
  uint64_t protocol_errors;   /* clients closed for bad frames */
} qraft_relay_server_metrics;

/*
 * Creates the server and registers QRAFT_RELAY_ALPN on cfg->ep. Free it with
 * qraft_relay_server_free after shutting the endpoint down.
 * Returns 0 on success, or one of these negative codes: QRAFT_ECONFIG,
 * -ENOMEM.
 */
int qraft_relay_server_new(const qraft_relay_server_config *cfg,
                           qraft_relay_server **out, qraft_err *err);
void qraft_relay_server_free(qraft_relay_server *s);
void qraft_relay_server_metrics_get(const qraft_relay_server *s,
                                    qraft_relay_server_metrics *out);
/* Closes (QRAFT_CLOSE_UNAUTHORIZED) every client whose id `keep` refuses,
 * e.g. after an allow-list changed: the hook only sees new handshakes.
 * Not from a callback of the relay's connections. Returns how many. */
uint32_t qraft_relay_server_close_if(qraft_relay_server *s,
                                     bool (*keep)(void *ud,
                                                  const qraft_node_id *id),
                                     void *ud);
/* Tells every client that the server restarts (RESTARTING: reconnect in
 * `reconnect_in_ms`, keep trying for `try_for_ms`). Call before a graceful
 * shutdown. */
void qraft_relay_server_restarting(qraft_relay_server *s,
                                   uint32_t reconnect_in_ms,
                                   uint32_t try_for_ms);

#ifdef __cplusplus
}
#endif

#endif

/*
 * raft_net.c: the Raft protocol handler (ALPN "iroh-raft/0") on top of the
 * endpoint: preambles, framed batches on one long-lived stream per peer and
 * direction, snapshots on streams of their own with back-pressure, and the
 * checks that close a misbehaving peer's connection without disturbing the
 * others.
 *
 * Stream layout (every unidirectional stream):
 *   preamble (QRAFT_WIRE_PREAMBLE_BYTES) | kind (1 byte) | frame | frame ...
 * A snapshot stream holds one frame (one MsgSnapshot, its data empty), the
 * data's length (u64, big-endian), the data, its CRC-32C (u32, big-endian)
 * and a FIN. A source that does not know its length ahead (the state
 * machine's view, streamed as it is read) sends the length
 * QRAFT_RAFT_SNAPSHOT_BYTES_UNKNOWN and the data in chunks, each a u32
 * length (not 0) and its bytes, ended by a u32 0; the CRC-32C covers the
 * data without the chunk lengths. Its data is never held whole: it goes from the sender's
 * source to the stream a chunk at a time as acknowledgements come back, and
 * from the stream into the receiver's sink as it arrives (QUIC flow control
 * slows the sender when the receiver's loop falls behind).
 *
 * No OS calls, no ngtcp2: the endpoint and the env do that.
 */
#include <qraft/assert.h>
#include <qraft/crc32c.h>
#include <qraft/transport.h>
#include <qraft/wire.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RN_HEADER_BYTES (QRAFT_WIRE_PREAMBLE_BYTES + 1)
#define RN_POOL_BUF_BYTES (64 * 1024)
#define RN_POOL_BUFS_MAX 256

typedef enum {
  IN_PREAMBLE,
  IN_FRAME_HEADER,
  IN_FRAME_BODY,
  IN_SNAP_LEN,  /* a snapshot's data length */
  IN_SNAP_CHUNK, /* a chunk's length, when the data's length is unknown */
  IN_SNAP_DATA, /* its data, into the sink */
  IN_SNAP_CRC,  /* its CRC-32C */
  IN_SNAP_END   /* only the FIN may follow */
} in_stage;

/* An inbound stream being parsed. */
typedef struct rn_in {
  struct rn_in *next;
  qraft_conn *conn;
  int64_t sid;
  in_stage stage;
  uint8_t hdr[RN_HEADER_BYTES];
  size_t hdr_n;
  int kind;
  qraft_id sender;
  qraft_buf *frame; /* the frame being received (header included) */
  size_t frame_bytes;
  /* A snapshot stream: its MsgSnapshot, and where its data goes. */
  qraft_wire_batch *snap_batch;
  uint64_t snap_len, snap_got;
  uint32_t snap_crc;
  bool snap_chunked;   /* snap_len unknown: the data comes in chunks */
  uint32_t chunk_left; /* of the chunk being received */
  bool sink_open;
  qraft_raft_snapshot_sink sink;
  qraft_buf *snap_mem; /* without snapshot_begin_cb: the data in memory */
} rn_in;

typedef struct rn_peer {
  struct rn_peer *next;
  qraft_id id;
  qraft_node_addr addr;
  bool dial;
  qraft_conn *conn; /* up, or NULL */
  int64_t msg_sid;  /* our message stream on conn, or -1 */
  qraft_wire_batcher batcher;
  bool flush_pending;
  uint64_t batched_bytes; /* encoded into the batcher since the last flush */
  /* The snapshot being sent, if any: its data comes from snap_src. */
  bool snap;
  qraft_raft_snapshot_source snap_src;
  uint64_t snap_off;     /* data bytes queued */
  qraft_buf *snap_chunk; /* read, not queued yet (the send buffer was full) */
  size_t snap_chunk_data; /* of snap_chunk's bytes, data (without framing) */
  bool snap_eof;          /* a source of unknown length has ended */
  uint32_t snap_crc;
  int64_t snap_sid;
  bool snap_fin_queued;
#ifdef QRAFT_CANARY_TRANSPORT_DUP_FRAME
  qraft_buf *canary_frame; /* the last frame with entries received */
  size_t canary_bytes;
#endif
} rn_peer;

struct qraft_raft_net {
  qraft_raft_net_config cfg;
  qraft_wire_limits snap_limits;
  qraft_endpoint *ep;
  qraft_env *env;
  qraft_wire_pool *pool;
  qraft_env_timer *flush_timer;
  rn_peer *peers;
  rn_in *ins;
  uint8_t header[RN_HEADER_BYTES];      /* our message stream's header */
  uint8_t snap_header[RN_HEADER_BYTES]; /* our snapshot streams' header */
};

static rn_peer *peer_by_id(qraft_raft_net *n, qraft_id id) {
  for (rn_peer *p = n->peers; p != NULL; p = p->next) {
    if (p->id == id) {
      return p;
    }
  }
  return NULL;
}

static rn_peer *peer_by_key(const qraft_raft_net *n, const qraft_node_id *key) {
  for (rn_peer *p = n->peers; p != NULL; p = p->next) {
    if (qraft_node_id_eq(&p->addr.id, key)) {
      return p;
    }
  }
  return NULL;
}

static rn_peer *peer_by_conn(qraft_raft_net *n, qraft_conn *c) {
  for (rn_peer *p = n->peers; p != NULL; p = p->next) {
    if (p->conn == c) {
      return p;
    }
  }
  return NULL;
}

bool qraft_raft_net_authorize(const qraft_raft_net *net,
                              const qraft_node_id *key) {
  return peer_by_key(net, key) != NULL;
}

bool qraft_raft_net_authorize_cb(void *ud, const qraft_node_id *peer,
                                 const char *alpn) {
  if (strcmp(alpn, QRAFT_RAFT_ALPN) != 0) {
    return true;
  }
  return qraft_raft_net_authorize(ud, peer);
}

/* ---- inbound ---- */

static void in_free(rn_in *in) {
  qraft_buf_unref(in->frame);
  if (in->sink_open) {
    in->sink_open = false;
    in->sink.abort(in->sink.ctx);
  }
  qraft_wire_batch_free(in->snap_batch);
  qraft_buf_unref(in->snap_mem);
  free(in);
}

static void ins_drop_conn(qraft_raft_net *n, qraft_conn *c) {
  for (rn_in **pp = &n->ins; *pp != NULL;) {
    if ((*pp)->conn == c) {
      rn_in *in = *pp;
      *pp = in->next;
      in_free(in);
    } else {
      pp = &(*pp)->next;
    }
  }
}

static void ins_drop(qraft_raft_net *n, rn_in *in) {
  for (rn_in **pp = &n->ins; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == in) {
      *pp = in->next;
      in_free(in);
      return;
    }
  }
}

/* Closes a misbehaving peer's connection; the others are not touched. */
static void reject(qraft_raft_net *n, qraft_conn *c, int code,
                   const char *what, qraft_err *err) {
  char reason[48];
  snprintf(reason, sizeof reason, "%s: %s", what, qraft_errname(code));
  char hex[QRAFT_NODE_ID_HEX_SIZE];
  qraft_node_id_to_hex(qraft_conn_peer(c), hex);
  char detail[160] = "";
  if (err != NULL) {
    qraft_err_format(err, detail, sizeof detail);
  }
  QRAFT_LOG(NULL, QRAFT_LOG_WARN, "closing a raft peer", QRAFT_LOG_STR("peer", hex),
            QRAFT_LOG_STR("reason", reason), QRAFT_LOG_STR("detail", detail));
  ins_drop_conn(n, c);
  qraft_conn_close(c,
                   code == QRAFT_ELIMIT ? QRAFT_CLOSE_LIMIT : QRAFT_CLOSE_PROTOCOL,
                   reason);
}

static int snapshot_streams(qraft_raft_net *n, qraft_conn *c) {
  int k = 0;
  for (rn_in *in = n->ins; in != NULL; in = in->next) {
    if (in->conn == c && in->kind == QRAFT_RAFT_STREAM_SNAPSHOT) {
      k++;
    }
  }
  return k;
}

/* The preamble and kind are in: check them against the connection. */
static bool in_header(qraft_raft_net *n, rn_in *in) {
  qraft_err err;
  qraft_err_init(&err, 0);
  qraft_wire_preamble pre;
  int rv = qraft_wire_preamble_decode(in->hdr, QRAFT_WIRE_PREAMBLE_BYTES,
                                      n->cfg.cluster_id, &pre, &err);
  if (rv != 0) {
    reject(n, in->conn, rv, "preamble", &err);
    return false;
  }
  rn_peer *p = peer_by_id(n, pre.sender_id);
  if (p == NULL && n->cfg.unknown_sender_cb != NULL &&
      n->cfg.unknown_sender_cb(n->cfg.ud, pre.sender_id,
                               qraft_conn_peer(in->conn))) {
    qraft_node_addr addr;
    memset(&addr, 0, sizeof addr);
    addr.id = *qraft_conn_peer(in->conn);
    if (qraft_raft_net_add_peer(n, pre.sender_id, &addr, false) == 0) {
      p = peer_by_id(n, pre.sender_id);
    }
  }
  if (p == NULL) {
    /* Admitted by the endpoint (e.g. while we were being added) but not a
     * member now. */
    reject(n, in->conn, QRAFT_EPEER, "sender is not a member", NULL);
    return false;
  }
  if (!qraft_node_id_eq(&p->addr.id, qraft_conn_peer(in->conn))) {
    /* A member may only speak for itself. */
    reject(n, in->conn, QRAFT_EPEER, "sender id is not this key's", NULL);
    return false;
  }
  in->sender = pre.sender_id;
  in->kind = in->hdr[QRAFT_WIRE_PREAMBLE_BYTES];
  if (in->kind != QRAFT_RAFT_STREAM_MESSAGES &&
      in->kind != QRAFT_RAFT_STREAM_SNAPSHOT) {
    reject(n, in->conn, QRAFT_EMALFORMED, "stream kind", NULL);
    return false;
  }
  if (in->kind == QRAFT_RAFT_STREAM_SNAPSHOT &&
      snapshot_streams(n, in->conn) > (int)n->cfg.snapshot_streams_max) {
    reject(n, in->conn, QRAFT_ELIMIT, "snapshot streams", NULL);
    return false;
  }
  in->stage = IN_FRAME_HEADER;
  in->hdr_n = 0;
  return true;
}

/* A whole frame is in: decode it and hand it over. */
static bool in_frame(qraft_raft_net *n, rn_in *in) {
  qraft_err err;
  qraft_err_init(&err, 0);
  const qraft_wire_limits *lim = in->kind == QRAFT_RAFT_STREAM_SNAPSHOT
                                     ? &n->snap_limits
                                     : &n->cfg.limits;
  qraft_wire_batch *batch = NULL;
  int rv = qraft_wire_frame_decode(in->frame, in->frame->data,
                                   in->frame_bytes, lim, &batch, &err);
#ifdef QRAFT_CANARY_TRANSPORT_DUP_FRAME
  /* Planted bug (make canaries): remember the last frame that carried
   * entries, to deliver it again when the peer reconnects. */
  rn_peer *cp = peer_by_id(n, in->sender);
  if (rv == 0 && cp != NULL && batch->entries_n > 0 &&
      in->kind != QRAFT_RAFT_STREAM_SNAPSHOT) {
    qraft_buf_unref(cp->canary_frame);
    cp->canary_frame = qraft_buf_ref(in->frame);
    cp->canary_bytes = in->frame_bytes;
  }
#endif
  qraft_buf_unref(in->frame); /* the batch's slices hold their references */
  in->frame = NULL;
  if (rv != 0) {
    reject(n, in->conn, rv, "frame", &err);
    return false;
  }
  for (size_t i = 0; i < batch->msgs_n; i++) {
    const qraft_message *m = &batch->msgs[i];
    if (m->from != in->sender || m->to != n->cfg.self_id ||
        (m->type == QRAFT_MSG_SNAPSHOT) !=
            (in->kind == QRAFT_RAFT_STREAM_SNAPSHOT && batch->msgs_n == 1)) {
      qraft_wire_batch_free(batch);
      reject(n, in->conn, QRAFT_EPEER, "message addressing", NULL);
      return false;
    }
  }
  qraft_conn_count_frames(in->conn, false, 1, batch->msgs_n);
  in->hdr_n = 0;
  if (in->kind == QRAFT_RAFT_STREAM_SNAPSHOT) {
    /* The metadata; the data follows the frame. */
    if (batch->msgs[0].snapshot == NULL ||
        batch->msgs[0].snapshot->data.len != 0) {
      qraft_wire_batch_free(batch);
      reject(n, in->conn, QRAFT_EMALFORMED, "snapshot frame with data", NULL);
      return false;
    }
    in->snap_batch = batch;
    in->stage = IN_SNAP_LEN;
    return true;
  }
  in->stage = IN_FRAME_HEADER;
  n->cfg.recv_cb(n->cfg.ud, in->sender, batch);
  /* The callback may have removed the sender, and with it this stream. */
  for (rn_in *x = n->ins; x != NULL; x = x->next) {
    if (x == in) {
      return true;
    }
  }
  return false;
}

static bool in_alive(qraft_raft_net *n, rn_in *in) {
  for (rn_in *x = n->ins; x != NULL; x = x->next) {
    if (x == in) {
      return true;
    }
  }
  return false;
}

/* Stops a snapshot stream we cannot take (STOP_SENDING): its sink is
 * aborted and `in` freed; QUIC hands us nothing more of that stream. */
static void in_refuse(qraft_raft_net *n, rn_in *in) {
  qraft_conn_stream_reset(in->conn, in->sid, QRAFT_RAFT_SNAPSHOT_REFUSED);
  ins_drop(n, in); /* aborts the sink */
}

static uint64_t get_be(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    v = (v << 8) | p[i];
  }
  return v;
}

static void put_be(uint8_t *p, uint64_t v, size_t n) {
  for (size_t i = n; i-- > 0;) {
    p[i] = (uint8_t)v;
    v >>= 8;
  }
}

/* The snapshot's length is in: open where its data goes. */
static bool in_snap_begin(qraft_raft_net *n, rn_in *in) {
  in->snap_len = get_be(in->hdr, 8);
  in->snap_got = 0;
  in->snap_crc = 0;
  in->hdr_n = 0;
  in->snap_chunked = in->snap_len == QRAFT_RAFT_SNAPSHOT_BYTES_UNKNOWN;
  in->stage = in->snap_chunked  ? IN_SNAP_CHUNK
              : in->snap_len > 0 ? IN_SNAP_DATA
                                 : IN_SNAP_CRC;
  if (n->cfg.snapshot_begin_cb == NULL) {
    if (!in->snap_chunked && in->snap_len > n->cfg.snapshot_bytes_max) {
      reject(n, in->conn, QRAFT_ELIMIT, "snapshot bytes", NULL);
      return false;
    }
    /* Of unknown length: grown as chunks come, up to snapshot_bytes_max. */
    size_t first = in->snap_chunked ? 64 * 1024
                   : in->snap_len > 0 ? (size_t)in->snap_len
                                      : 1;
    in->snap_mem = qraft_buf_new(first);
    if (in->snap_mem == NULL) {
      reject(n, in->conn, QRAFT_ELIMIT, "out of memory", NULL);
      return false;
    }
    return true;
  }
  qraft_raft_snapshot_sink sink = {0};
  int rv = n->cfg.snapshot_begin_cb(n->cfg.ud, in->sender,
                                    &in->snap_batch->msgs[0], in->snap_len,
                                    &sink);
  if (!in_alive(n, in)) {
    if (rv == 0) {
      sink.abort(sink.ctx);
    }
    return false;
  }
  if (rv != 0) {
    in_refuse(n, in);
    return false;
  }
  in->sink = sink;
  in->sink_open = true;
  return true;
}

/* A snapshot of unknown length received into memory: room for `take`
 * more bytes, within snapshot_bytes_max. */
static bool in_snap_mem_grow(qraft_raft_net *n, rn_in *in, size_t take) {
  qraft_buf *b = in->snap_mem;
  if (in->snap_got + take <= b->cap) {
    return true;
  }
  if (in->snap_got + take > n->cfg.snapshot_bytes_max) {
    reject(n, in->conn, QRAFT_ELIMIT, "snapshot bytes", NULL);
    return false;
  }
  uint64_t cap = (uint64_t)b->cap * 2;
  while (cap < in->snap_got + take) {
    cap *= 2;
  }
  if (cap > n->cfg.snapshot_bytes_max) {
    cap = n->cfg.snapshot_bytes_max;
  }
  qraft_buf *g = qraft_buf_new((size_t)cap);
  if (g == NULL) {
    reject(n, in->conn, QRAFT_ELIMIT, "out of memory", NULL);
    return false;
  }
  memcpy(g->data, b->data, (size_t)in->snap_got);
  g->len = (size_t)in->snap_got;
  qraft_buf_unref(b);
  in->snap_mem = g;
  return true;
}

/* Every byte, the checksum and the FIN are in: hand the snapshot over. */
static void in_snap_deliver(qraft_raft_net *n, rn_in *in) {
  qraft_wire_batch *b = in->snap_batch;
  qraft_id from = in->sender;
  in->snap_batch = NULL;
  if (in->sink_open) {
    void *ctx = in->sink.ctx;
    in->sink_open = false;
    ins_drop(n, in);
    n->cfg.snapshot_recv_cb(n->cfg.ud, from, b, ctx);
    return;
  }
  qraft_snapshot *sn = b->msgs[0].snapshot;
  qraft_slice_release(&sn->data);
  sn->data = qraft_slice_of(in->snap_mem, in->snap_mem->data,
                            (size_t)in->snap_got);
  ins_drop(n, in);
  n->cfg.recv_cb(n->cfg.ud, from, b);
}

static void on_recv(void *ud, qraft_conn *c, int64_t sid, const uint8_t *data,
                    size_t len, bool fin) {
  qraft_raft_net *n = ud;
  rn_in *in = NULL;
  for (rn_in *x = n->ins; x != NULL; x = x->next) {
    if (x->conn == c && x->sid == sid) {
      in = x;
      break;
    }
  }
  if (in == NULL) {
    if (len == 0 && fin) {
      return;
    }
    in = calloc(1, sizeof *in);
    if (in == NULL) {
      reject(n, c, QRAFT_ELIMIT, "out of memory", NULL);
      return;
    }
    in->conn = c;
    in->sid = sid;
    in->next = n->ins;
    n->ins = in;
  }
  while (len > 0) {
    size_t take;
    switch (in->stage) {
    case IN_PREAMBLE:
      take = RN_HEADER_BYTES - in->hdr_n;
      take = take < len ? take : len;
      memcpy(in->hdr + in->hdr_n, data, take);
      in->hdr_n += take;
      data += take;
      len -= take;
      if (in->hdr_n == RN_HEADER_BYTES && !in_header(n, in)) {
        return;
      }
      break;
    case IN_FRAME_HEADER: {
      take = QRAFT_WIRE_FRAME_HEADER_BYTES - in->hdr_n;
      take = take < len ? take : len;
      memcpy(in->hdr + in->hdr_n, data, take);
      in->hdr_n += take;
      data += take;
      len -= take;
      if (in->hdr_n < QRAFT_WIRE_FRAME_HEADER_BYTES) {
        break;
      }
      qraft_err err;
      qraft_err_init(&err, 0);
      const qraft_wire_limits *lim = in->kind == QRAFT_RAFT_STREAM_SNAPSHOT
                                         ? &n->snap_limits
                                         : &n->cfg.limits;
      int rv = qraft_wire_frame_peek(in->hdr, in->hdr_n, lim,
                                     &in->frame_bytes, &err);
      if (rv != 0) {
        reject(n, c, rv, "frame header", &err);
        return;
      }
      in->frame = qraft_buf_new(in->frame_bytes);
      if (in->frame == NULL) {
        reject(n, c, QRAFT_ELIMIT, "out of memory", NULL);
        return;
      }
      memcpy(in->frame->data, in->hdr, in->hdr_n);
      in->frame->len = in->hdr_n;
      in->stage = IN_FRAME_BODY;
      break;
    }
    case IN_FRAME_BODY:
      take = in->frame_bytes - in->frame->len;
      take = take < len ? take : len;
      memcpy(in->frame->data + in->frame->len, data, take);
      in->frame->len += take;
      data += take;
      len -= take;
      if (in->frame->len == in->frame_bytes && !in_frame(n, in)) {
        return;
      }
      break;
    case IN_SNAP_LEN:
    case IN_SNAP_CHUNK:
    case IN_SNAP_CRC: {
      size_t want = in->stage == IN_SNAP_LEN ? 8 : 4;
      take = want - in->hdr_n;
      take = take < len ? take : len;
      memcpy(in->hdr + in->hdr_n, data, take);
      in->hdr_n += take;
      data += take;
      len -= take;
      if (in->hdr_n < want) {
        break;
      }
      if (in->stage == IN_SNAP_LEN) {
        if (!in_snap_begin(n, in)) {
          return;
        }
        break;
      }
      if (in->stage == IN_SNAP_CHUNK) {
        in->chunk_left = (uint32_t)get_be(in->hdr, 4);
        in->hdr_n = 0;
        in->stage = in->chunk_left > 0 ? IN_SNAP_DATA : IN_SNAP_CRC;
        break;
      }
      if ((uint32_t)get_be(in->hdr, 4) != in->snap_crc) {
        /* QUIC protects the bytes in flight: a mismatch is the sender's
         * fault (or memory going bad), never a partial snapshot to use. */
        reject(n, c, QRAFT_ECORRUPT, "snapshot checksum", NULL);
        return;
      }
      in->stage = IN_SNAP_END;
      break;
    }
    case IN_SNAP_DATA: {
      uint64_t left = in->snap_chunked ? in->chunk_left
                                       : in->snap_len - in->snap_got;
      take = left < len ? (size_t)left : len;
      if (in->snap_mem != NULL && in->snap_chunked &&
          !in_snap_mem_grow(n, in, take)) {
        return;
      }
      in->snap_crc = qraft_crc32c(in->snap_crc, data, take);
      if (in->snap_mem != NULL) {
        memcpy(in->snap_mem->data + in->snap_got, data, take);
        in->snap_mem->len = (size_t)(in->snap_got + take);
      } else if (in->sink.write(in->sink.ctx, data, take) != 0) {
        in_refuse(n, in);
        return;
      }
      in->snap_got += take;
      data += take;
      len -= take;
      if (in->snap_chunked) {
        in->chunk_left -= (uint32_t)take;
        if (in->chunk_left == 0) {
          in->stage = IN_SNAP_CHUNK;
          in->hdr_n = 0;
        }
      } else if (in->snap_got == in->snap_len) {
        in->stage = IN_SNAP_CRC;
        in->hdr_n = 0;
      }
      break;
    }
    case IN_SNAP_END:
      reject(n, c, QRAFT_EMALFORMED, "bytes after a snapshot", NULL);
      return;
    }
  }
  if (fin) {
    if (in->stage == IN_SNAP_END) {
      in_snap_deliver(n, in);
      return;
    }
    if (in->stage != IN_FRAME_HEADER || in->hdr_n != 0 ||
        in->kind == QRAFT_RAFT_STREAM_SNAPSHOT) {
      reject(n, c, QRAFT_ETRUNCATED, "stream ends inside a frame", NULL);
      return;
    }
    ins_drop(n, in);
  }
}

/* ---- outbound ---- */

static int send_frame_cb(qraft_buf *frame, void *ud) {
  rn_peer *p = ud;
  int rv = QRAFT_EUNAVAILABLE;
  if (p->conn != NULL && p->msg_sid >= 0) {
    qraft_slice s = qraft_slice_of(frame, frame->data, frame->len);
    rv = qraft_conn_stream_send(p->conn, p->msg_sid, s, false);
    qraft_slice_release(&s);
    if (rv == 0) {
      qraft_conn_count_frames(p->conn, true, 1, 0);
    }
  }
  qraft_buf_unref(frame);
  return rv;
}

static void flush_cb(void *ud) {
  qraft_raft_net *n = ud;
  for (rn_peer *p = n->peers; p != NULL; p = p->next) {
    if (p->flush_pending) {
      p->flush_pending = false;
      p->batched_bytes = 0;
      /* send_raft_net's back-pressure check keeps the frame within the
       * connection's send buffer; should it not fit after all, it is
       * dropped, like a lost message (Raft retries). */
      qraft_wire_batcher_flush(&p->batcher);
    }
  }
}

static int msg_stream(qraft_raft_net *n, rn_peer *p) {
  if (p->msg_sid >= 0) {
    return 0;
  }
  int64_t sid;
  int rv = qraft_conn_stream_open(p->conn, false, &sid);
  if (rv != 0) {
    return rv == QRAFT_ELIMIT ? QRAFT_EBUSY : rv;
  }
  rv = qraft_conn_stream_send(p->conn, sid,
                              qraft_slice_of(NULL, n->header, RN_HEADER_BYTES),
                              false);
  if (rv != 0) {
    qraft_conn_stream_reset(p->conn, sid, 0);
    return rv;
  }
  p->msg_sid = sid;
  return 0;
}

static void snap_done(qraft_raft_net *n, rn_peer *p, int status) {
  if (!p->snap) {
    return;
  }
  p->snap = false;
  p->snap_sid = -1;
  qraft_buf_unref(p->snap_chunk);
  p->snap_chunk = NULL;
  p->snap_src.close(p->snap_src.ctx);
  if (n->cfg.snapshot_sent_cb != NULL) {
    n->cfg.snapshot_sent_cb(n->cfg.ud, p->id, status);
  }
}

/* A source of unknown length: the next chunk, framed by its u32 length, or
 * at the end (the source gave 0 bytes) snap_eof. */
static int snap_read_chunk_framed(qraft_raft_net *n, rn_peer *p) {
  size_t chunk = n->cfg.snapshot_chunk_bytes;
  qraft_buf *b = qraft_buf_new(4 + chunk);
  if (b == NULL) {
    return -ENOMEM;
  }
  b->len = 4;
  while (b->len < 4 + chunk) {
    size_t got = 0;
    int rv = p->snap_src.read(p->snap_src.ctx, b->data + b->len,
                              4 + chunk - b->len, &got);
    if (rv != 0) {
      qraft_buf_unref(b);
      return rv;
    }
    if (got == 0) {
      p->snap_eof = true;
      break;
    }
    b->len += got;
  }
  if (b->len == 4) {
    qraft_buf_unref(b);
    return 0;
  }
  put_be(b->data, b->len - 4, 4);
  p->snap_crc = qraft_crc32c(p->snap_crc, b->data + 4, b->len - 4);
  p->snap_chunk = b;
  p->snap_chunk_data = b->len - 4;
  return 0;
}

/* Every byte of the data was queued. */
static bool snap_data_done(const rn_peer *p) {
  if (p->snap_src.bytes == QRAFT_RAFT_SNAPSHOT_BYTES_UNKNOWN) {
    return p->snap_eof && p->snap_chunk == NULL;
  }
  return p->snap_off == p->snap_src.bytes;
}

/* Reads the next chunk of the snapshot being sent into p->snap_chunk. */
static int snap_read_chunk(qraft_raft_net *n, rn_peer *p) {
  if (p->snap_src.bytes == QRAFT_RAFT_SNAPSHOT_BYTES_UNKNOWN) {
    return snap_read_chunk_framed(n, p);
  }
  uint64_t left = p->snap_src.bytes - p->snap_off;
  size_t chunk = left < n->cfg.snapshot_chunk_bytes
                     ? (size_t)left
                     : n->cfg.snapshot_chunk_bytes;
  qraft_buf *b = qraft_buf_new(chunk);
  if (b == NULL) {
    return -ENOMEM;
  }
  while (b->len < chunk) {
    size_t got = 0;
    int rv = p->snap_src.read(p->snap_src.ctx, b->data + b->len,
                              chunk - b->len, &got);
    if (rv == 0 && got == 0) {
      rv = QRAFT_ETRUNCATED; /* shorter than it said */
    }
    if (rv != 0) {
      qraft_buf_unref(b);
      return rv;
    }
    b->len += got;
  }
  p->snap_crc = qraft_crc32c(p->snap_crc, b->data, b->len);
  p->snap_chunk = b;
  p->snap_chunk_data = b->len;
  return 0;
}

/* Queues snapshot chunks, read from the source one at a time, while the
 * connection holds less than snapshot_inflight_bytes_max unacknowledged:
 * the rest waits for acks. The stream holds each chunk's buffer until the
 * peer acknowledges it. */
static void snap_pump(qraft_raft_net *n, rn_peer *p) {
  while (p->snap && p->conn != NULL && !p->snap_fin_queued &&
         qraft_conn_unacked_bytes(p->conn) < n->cfg.snapshot_inflight_bytes_max) {
    int rv = 0;
    if (snap_data_done(p)) {
      /* the chunks' end (unknown length) and the CRC-32C */
      uint8_t tail[8] = {0};
      bool framed = p->snap_src.bytes == QRAFT_RAFT_SNAPSHOT_BYTES_UNKNOWN;
      put_be(tail + (framed ? 4 : 0), p->snap_crc, 4);
      rv = qraft_conn_stream_send(p->conn, p->snap_sid,
                                  qraft_slice_of(NULL, tail, framed ? 8 : 4),
                                  true);
      if (rv == 0) {
        p->snap_fin_queued = true;
        return;
      }
    } else {
      if (p->snap_chunk == NULL) {
        rv = snap_read_chunk(n, p);
        if (rv == 0 && p->snap_chunk == NULL) {
          continue; /* the source ended */
        }
      }
      if (rv == 0) {
        qraft_buf *b = p->snap_chunk;
        qraft_slice s = qraft_slice_of(b, b->data, b->len);
        rv = qraft_conn_stream_send(p->conn, p->snap_sid, s, false);
        qraft_slice_release(&s);
        if (rv == 0) {
          p->snap_off += p->snap_chunk_data;
          qraft_buf_unref(b);
          p->snap_chunk = NULL;
          continue;
        }
      }
    }
    if (rv == QRAFT_EBUSY) {
      return; /* the send buffer is full: again on the next ack */
    }
    QRAFT_LOG(NULL, QRAFT_LOG_WARN, "snapshot transfer abandoned",
              QRAFT_LOG_U64("to", p->id),
              QRAFT_LOG_STR("error", qraft_strerror(rv)));
    qraft_conn_stream_reset(p->conn, p->snap_sid, 0);
    snap_done(n, p, rv);
    return;
  }
}

/* A snapshot sent from memory (qraft_raft_net_send with its data). */
typedef struct mem_src {
  qraft_slice data;
  size_t off;
} mem_src;

static int mem_src_read(void *ctx, void *buf, size_t cap, size_t *got) {
  mem_src *m = ctx;
  size_t n = m->data.len - m->off < cap ? m->data.len - m->off : cap;
  memcpy(buf, m->data.data + m->off, n);
  m->off += n;
  *got = n;
  return 0;
}

static void mem_src_close(void *ctx) {
  mem_src *m = ctx;
  qraft_slice_release(&m->data);
  free(m);
}

int qraft_raft_net_send_snapshot(qraft_raft_net *n, const qraft_message *m,
                                 const qraft_raft_snapshot_source *src,
                                 qraft_err *err) {
  rn_peer *p = peer_by_id(n, m->to);
  if (p == NULL) {
    return QRAFT_ERR(err, QRAFT_EUNKNOWN_NODE, "send snapshot to %llu",
                     (unsigned long long)m->to);
  }
  if (m->type != QRAFT_MSG_SNAPSHOT || m->snapshot == NULL) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "not a MsgSnapshot");
  }
  if (p->conn == NULL) {
    return QRAFT_EUNAVAILABLE;
  }
  if (p->snap) {
    return QRAFT_EBUSY;
  }
  /* The frame carries the metadata only. */
  qraft_message meta = *m;
  qraft_snapshot sn = *m->snapshot;
  sn.data = (qraft_slice){0};
  meta.snapshot = &sn;
  qraft_buf *buf;
  int rv = qraft_wire_frame_encode_buf(n->cfg.group_id, &meta, 1,
                                       &n->snap_limits, NULL, &buf, err);
  if (rv != 0) {
    return rv;
  }
  int64_t sid;
  rv = qraft_conn_stream_open(p->conn, false, &sid);
  if (rv != 0) {
    qraft_buf_unref(buf);
    return rv == QRAFT_ELIMIT ? QRAFT_EBUSY : rv;
  }
  uint8_t len[8];
  put_be(len, src->bytes, 8);
  qraft_slice fs = qraft_slice_of(buf, buf->data, buf->len);
  rv = qraft_conn_stream_send(
      p->conn, sid, qraft_slice_of(NULL, n->snap_header, RN_HEADER_BYTES),
      false);
  if (rv == 0) {
    rv = qraft_conn_stream_send(p->conn, sid, fs, false);
  }
  if (rv == 0) {
    rv = qraft_conn_stream_send(p->conn, sid, qraft_slice_of(NULL, len, 8),
                                false);
  }
  qraft_slice_release(&fs);
  qraft_buf_unref(buf);
  if (rv != 0) {
    qraft_conn_stream_reset(p->conn, sid, 0);
    return rv;
  }
  qraft_conn_count_frames(p->conn, true, 1, 1);
  p->snap = true;
  p->snap_src = *src;
  p->snap_off = 0;
  p->snap_crc = 0;
  p->snap_chunk = NULL;
  p->snap_eof = false;
  p->snap_sid = sid;
  p->snap_fin_queued = false;
  snap_pump(n, p);
  return 0;
}

/* A MsgSnapshot with its data in memory: sent from there, in chunks. */
static int send_snapshot_mem(qraft_raft_net *n, const qraft_message *m,
                             qraft_err *err) {
  mem_src *ms = calloc(1, sizeof *ms);
  if (ms == NULL) {
    return -ENOMEM;
  }
  ms->data = qraft_slice_keep(m->snapshot->data);
  if (ms->data.len != m->snapshot->data.len) {
    free(ms);
    return -ENOMEM;
  }
  qraft_raft_snapshot_source src = {.bytes = m->snapshot->data.len,
                                    .read = mem_src_read,
                                    .close = mem_src_close,
                                    .ctx = ms};
  int rv = qraft_raft_net_send_snapshot(n, m, &src, err);
  if (rv != 0) {
    mem_src_close(ms);
  }
  return rv;
}

int qraft_raft_net_send(qraft_raft_net *n, const qraft_message *m,
                        qraft_err *err) {
  rn_peer *p = peer_by_id(n, m->to);
  if (p == NULL) {
    return QRAFT_ERR(err, QRAFT_EUNKNOWN_NODE, "send to %llu",
                     (unsigned long long)m->to);
  }
  if (p->conn == NULL) {
    return QRAFT_EUNAVAILABLE;
  }
  if (m->type == QRAFT_MSG_SNAPSHOT) {
    return send_snapshot_mem(n, m, err);
  }
  /* Back-pressure: what is unacknowledged plus what waits in the batcher
   * stays under send_buffer_bytes_max, so a flushed frame always fits the
   * connection's send buffer. */
  uint64_t size = qraft_wire_message_size(m);
  if (qraft_conn_unacked_bytes(p->conn) + p->batched_bytes + size >
          n->cfg.send_buffer_bytes_max &&
      p->batched_bytes + qraft_conn_unacked_bytes(p->conn) > 0) {
    return QRAFT_EBUSY;
  }
  int rv = msg_stream(n, p);
  if (rv != 0) {
    return rv;
  }
  rv = qraft_wire_batcher_add(&p->batcher, m, err);
  if (rv != 0) {
    return rv;
  }
  p->batched_bytes += size;
  qraft_conn_count_frames(p->conn, true, 0, 1);
  if (!p->flush_pending) {
    p->flush_pending = true;
    qraft_env_timer_arm(n->flush_timer, 0); /* before the loop waits */
  }
  return 0;
}

/* ---- connection events ---- */

static void on_up(void *ud, qraft_conn *c, bool dialed) {
  (void)dialed;
  qraft_raft_net *n = ud;
  rn_peer *p = peer_by_key(n, qraft_conn_peer(c));
  if (p == NULL && n->cfg.unknown_sender_cb != NULL) {
    /* Maybe a member we have not heard of yet: its first stream's preamble
     * decides (unknown_sender_cb). */
    return;
  }
  if (p == NULL) {
    /* Authorized by a hook that is not ours, but not a member. */
    qraft_conn_close(c, QRAFT_CLOSE_UNAUTHORIZED, "not a member");
    return;
  }
  p->conn = c;
  p->msg_sid = -1;
  if (n->cfg.peer_cb != NULL) {
    n->cfg.peer_cb(n->cfg.ud, p->id, true);
  }
#ifdef QRAFT_CANARY_TRANSPORT_DUP_FRAME
  /* Planted bug: the frame received last on the old connection arrives
   * again after the reconnect. */
  if (p->canary_frame != NULL) {
    qraft_buf *f = p->canary_frame;
    p->canary_frame = NULL;
    qraft_wire_batch *batch = NULL;
    if (qraft_wire_frame_decode(f, f->data, p->canary_bytes, &n->cfg.limits,
                                &batch, NULL) == 0) {
      n->cfg.recv_cb(n->cfg.ud, p->id, batch);
    }
    qraft_buf_unref(f);
  }
#endif
}

#ifdef QRAFT_CANARY_TRANSPORT_PARTIAL_SNAPSHOT
/* Planted bug (make canaries): a snapshot cut by a lost connection is
 * handed over as if it had arrived whole. */
static rn_in *canary_take_partial(qraft_raft_net *n, qraft_conn *c) {
  rn_in *out = NULL;
  for (rn_in **pp = &n->ins; *pp != NULL;) {
    rn_in *in = *pp;
    if (in->conn == c && in->sink_open && in->snap_got > 0) {
      *pp = in->next;
      in->next = out;
      out = in;
    } else {
      pp = &in->next;
    }
  }
  return out;
}

static void canary_deliver_partial(qraft_raft_net *n, rn_in *list) {
  while (list != NULL) {
    rn_in *in = list;
    list = in->next;
    qraft_wire_batch *b = in->snap_batch;
    void *ctx = in->sink.ctx;
    qraft_id from = in->sender;
    in->snap_batch = NULL;
    in->sink_open = false;
    in_free(in);
    n->cfg.snapshot_recv_cb(n->cfg.ud, from, b, ctx);
  }
}
#endif

static void on_down(void *ud, qraft_conn *c, const qraft_close_info *why) {
  (void)why;
  qraft_raft_net *n = ud;
#ifdef QRAFT_CANARY_TRANSPORT_PARTIAL_SNAPSHOT
  rn_in *partial = canary_take_partial(n, c);
#endif
  ins_drop_conn(n, c);
  rn_peer *p = peer_by_conn(n, c);
  if (p == NULL) {
#ifdef QRAFT_CANARY_TRANSPORT_PARTIAL_SNAPSHOT
    canary_deliver_partial(n, partial);
#endif
    return;
  }
  p->conn = NULL;
  p->msg_sid = -1;
  qraft_wire_batcher_close(&p->batcher);
  qraft_wire_batcher_init(&p->batcher, p->id, n->cfg.group_id, &n->cfg.limits,
                          n->pool, send_frame_cb, p);
  p->flush_pending = false;
  p->batched_bytes = 0;
  snap_done(n, p, QRAFT_ECLOSED);
  if (n->cfg.peer_cb != NULL) {
    n->cfg.peer_cb(n->cfg.ud, p->id, false);
  }
#ifdef QRAFT_CANARY_TRANSPORT_PARTIAL_SNAPSHOT
  canary_deliver_partial(n, partial);
#endif
}

static void on_stream_closed(void *ud, qraft_conn *c, int64_t sid,
                             uint64_t app_code) {
  qraft_raft_net *n = ud;
  for (rn_in *in = n->ins; in != NULL; in = in->next) {
    if (in->conn == c && in->sid == sid) {
      ins_drop(n, in);
      break;
    }
  }
  rn_peer *p = peer_by_conn(n, c);
  if (p != NULL && p->snap && p->snap_sid == sid) {
    /* Closed both ways: every byte and the FIN were acknowledged, unless
     * the peer reset it. */
    snap_done(n, p, app_code == 0 && p->snap_fin_queued ? 0 : QRAFT_ECLOSED);
  }
  if (p != NULL && p->msg_sid == sid) {
    p->msg_sid = -1;
  }
}

static void on_acked(void *ud, qraft_conn *c, uint64_t unacked) {
  (void)unacked;
  qraft_raft_net *n = ud;
  rn_peer *p = peer_by_conn(n, c);
  if (p != NULL) {
    snap_pump(n, p);
  }
}

/* ---- lifecycle ---- */

int qraft_raft_net_new(const qraft_raft_net_config *cfg, qraft_raft_net **out,
                       qraft_err *err) {
  if (cfg->ep == NULL || cfg->cluster_id == 0 || cfg->self_id == 0 ||
      cfg->recv_cb == NULL) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "raft net needs an endpoint, a cluster id, our id and "
                     "recv_cb");
  }
  qraft_raft_net *n = calloc(1, sizeof *n);
  if (n == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "raft net");
  }
  n->cfg = *cfg;
  qraft_wire_limits def = QRAFT_WIRE_LIMITS_DEFAULT;
  if (n->cfg.limits.frame_bytes_max == 0) {
    n->cfg.limits.frame_bytes_max = def.frame_bytes_max;
  }
  if (n->cfg.limits.frame_messages_max == 0) {
    n->cfg.limits.frame_messages_max = def.frame_messages_max;
  }
  if (n->cfg.limits.frame_entries_max == 0) {
    n->cfg.limits.frame_entries_max = def.frame_entries_max;
  }
  if (n->cfg.snapshot_bytes_max == 0) {
    n->cfg.snapshot_bytes_max = 256u << 20;
  }
  if (n->cfg.snapshot_chunk_bytes == 0) {
    n->cfg.snapshot_chunk_bytes = 64 * 1024;
  }
  if (n->cfg.snapshot_inflight_bytes_max == 0) {
    n->cfg.snapshot_inflight_bytes_max = 1u << 20;
  }
  if (n->cfg.snapshot_streams_max == 0) {
    n->cfg.snapshot_streams_max = 2;
  }
  if (n->cfg.send_buffer_bytes_max == 0) {
    n->cfg.send_buffer_bytes_max = 4u << 20;
  }
  int rv = qraft_wire_limits_check(&n->cfg.limits, err);
  if (rv != 0) {
    free(n);
    return rv;
  }
  if ((n->cfg.snapshot_begin_cb == NULL) != (n->cfg.snapshot_recv_cb == NULL)) {
    free(n);
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "snapshot_begin_cb and snapshot_recv_cb go together");
  }
  /* A snapshot's frame holds its metadata only. */
  n->snap_limits = n->cfg.limits;
  n->snap_limits.frame_messages_max = 1;
  n->ep = cfg->ep;
  n->env = qraft_endpoint_env(cfg->ep);
  qraft_wire_preamble_encode(cfg->cluster_id, cfg->self_id, n->header);
  n->header[QRAFT_WIRE_PREAMBLE_BYTES] = QRAFT_RAFT_STREAM_MESSAGES;
  memcpy(n->snap_header, n->header, QRAFT_WIRE_PREAMBLE_BYTES);
  n->snap_header[QRAFT_WIRE_PREAMBLE_BYTES] = QRAFT_RAFT_STREAM_SNAPSHOT;
  rv = qraft_wire_pool_new(RN_POOL_BUF_BYTES, RN_POOL_BUFS_MAX, &n->pool);
  if (rv != 0) {
    QRAFT_ERR(err, rv, "frame buffer pool");
    goto err_free;
  }
  rv = qraft_env_timer_new(n->env, flush_cb, n, &n->flush_timer);
  if (rv != 0) {
    QRAFT_ERR(err, rv, "flush timer");
    goto err_pool;
  }
  static const qraft_protocol_ops ops = {
      .conn_up_cb = on_up,
      .conn_down_cb = on_down,
      .stream_recv_cb = on_recv,
      .stream_closed_cb = on_stream_closed,
      .acked_cb = on_acked,
  };
  rv = qraft_endpoint_register(cfg->ep, QRAFT_RAFT_ALPN, &ops, n);
  if (rv != 0) {
    QRAFT_ERR(err, rv, "register %s", QRAFT_RAFT_ALPN);
    goto err_timer;
  }
  *out = n;
  return 0;

err_timer:
  qraft_env_timer_free(n->flush_timer);
err_pool:
  qraft_wire_pool_free(n->pool);
err_free:
  free(n);
  return rv;
}

int qraft_raft_net_add_peer(qraft_raft_net *n, qraft_id id,
                            const qraft_node_addr *addr, bool dial) {
  if (id == 0 || id == n->cfg.self_id) {
    return QRAFT_ECONFIG;
  }
  rn_peer *p = peer_by_id(n, id);
  if (p == NULL) {
    p = calloc(1, sizeof *p);
    if (p == NULL) {
      return -ENOMEM;
    }
    p->id = id;
    p->msg_sid = -1;
    p->snap_sid = -1;
    qraft_wire_batcher_init(&p->batcher, id, n->cfg.group_id, &n->cfg.limits,
                            n->pool, send_frame_cb, p);
    p->next = n->peers;
    n->peers = p;
  }
  p->addr = *addr;
  p->dial = dial;
  if (p->conn == NULL) {
    /* It may already be connected under another ALPN's handler: pick the
     * connection up if there is one. */
    qraft_conn *c = qraft_endpoint_conn(n->ep, &addr->id, QRAFT_RAFT_ALPN);
    if (c != NULL) {
      p->conn = c;
      p->msg_sid = -1;
    }
  }
  if (dial && qraft_endpoint_reachable(n->ep, addr)) {
    return qraft_endpoint_dial(n->ep, addr, QRAFT_RAFT_ALPN);
  }
  return 0;
}

static void peer_free(qraft_raft_net *n, rn_peer *p) {
#ifdef QRAFT_CANARY_TRANSPORT_DUP_FRAME
  qraft_buf_unref(p->canary_frame);
#endif
  snap_done(n, p, QRAFT_ECLOSED);
  qraft_wire_batcher_close(&p->batcher);
  free(p);
}

void qraft_raft_net_remove_peer(qraft_raft_net *n, qraft_id id) {
  for (rn_peer **pp = &n->peers; *pp != NULL; pp = &(*pp)->next) {
    if ((*pp)->id == id) {
      rn_peer *p = *pp;
      *pp = p->next;
      qraft_conn *c = p->conn;
      qraft_node_id key = p->addr.id;
      p->conn = NULL;
      peer_free(n, p);
      qraft_endpoint_undial(n->ep, &key, QRAFT_RAFT_ALPN);
      if (c != NULL) {
        ins_drop_conn(n, c);
        qraft_conn_close(c, QRAFT_CLOSE_UNWANTED, "removed from the cluster");
      }
      return;
    }
  }
}

void qraft_raft_net_memory_get(const qraft_raft_net *n,
                               qraft_raft_net_memory *out) {
  memset(out, 0, sizeof *out);
  for (const rn_peer *p = n->peers; p != NULL; p = p->next) {
    out->send_bytes += p->batched_bytes;
    if (p->snap_chunk != NULL) {
      out->send_bytes += p->snap_chunk->len;
      out->snapshot_out_bytes += p->snap_chunk->len;
    }
    if (p->conn == NULL) {
      continue;
    }
    out->send_bytes += qraft_conn_unacked_bytes(p->conn);
    if (p->snap) {
      out->snapshot_out_bytes +=
          qraft_conn_stream_unacked_bytes(p->conn, p->snap_sid);
    }
  }
  for (const rn_in *in = n->ins; in != NULL; in = in->next) {
    if (in->snap_mem != NULL) {
      out->snapshot_in_bytes += in->snap_mem->cap;
    }
  }
}

void qraft_raft_net_free(qraft_raft_net *n) {
  if (n == NULL) {
    return;
  }
  while (n->ins != NULL) {
    rn_in *in = n->ins;
    n->ins = in->next;
    in_free(in);
  }
  while (n->peers != NULL) {
    rn_peer *p = n->peers;
    n->peers = p->next;
    p->conn = NULL;
    peer_free(n, p);
  }
  qraft_env_timer_free(n->flush_timer);
  qraft_wire_pool_free(n->pool);
  free(n);
}

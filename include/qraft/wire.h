/*
 * qraft/wire.h: the wire codec. Raft messages in the protobuf wire format of
 * the eraftpb schema (docs/eraftpb.proto), frames that carry a batch of
 * messages for one Raft group, the stream preamble, and a per-peer batcher.
 * docs/wire.md describes the bytes.
 *
 * Encoding computes the exact size first and writes into a caller-provided
 * buffer or a pooled qraft_buf. Decoding is zero copy: byte fields (entry
 * data and context, message context, snapshot data) are qraft_slice views
 * into the input, each holding a reference to the input's qraft_buf, so the
 * received buffer lives until the last payload is released.
 *
 * Bad input is an error, never a crash: every decoder checks every length
 * against the bytes it has, and on failure returns a negative code and, if
 * given a qraft_err, records which field and at which offset (from the start
 * of the input) the problem is.
 *
 * Threads: the functions here keep no global state and may be called from
 * any thread. A batcher and a decoded batch belong to one thread at a time
 * (the slices taken out of a batch may be released on any thread); a pool
 * may be used from many threads at once.
 */
#ifndef QRAFT_WIRE_H
#define QRAFT_WIRE_H

#include <qraft/buf.h>
#include <qraft/error.h>
#include <qraft/types.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Limits
 * ------------------------------------------------------------------------ */

/* The protocol version this library speaks, sent in the preamble. */
#define QRAFT_WIRE_VERSION 1

/* Hard ceilings: no configuration may go above these. */
#define QRAFT_WIRE_FRAME_BYTES_LIMIT (256u << 20)
#define QRAFT_WIRE_FRAME_MESSAGES_LIMIT (1u << 16)
#define QRAFT_WIRE_FRAME_ENTRIES_LIMIT (1u << 20)

/* Defaults used when a function is given NULL limits. */
#define QRAFT_WIRE_FRAME_BYTES_MAX_DEFAULT (16u << 20)
#define QRAFT_WIRE_FRAME_MESSAGES_MAX_DEFAULT 1024u
#define QRAFT_WIRE_FRAME_ENTRIES_MAX_DEFAULT 65536u

/*
 * What a receiver accepts (and a batcher produces). They bound the memory a
 * peer can make us allocate: a decoded frame takes at most about
 * frame_messages_max * sizeof(qraft_message) + frame_entries_max *
 * sizeof(qraft_entry) + one qraft_snapshot per message, whatever its bytes.
 */
typedef struct qraft_wire_limits {
  /* Bytes of one frame body (the length prefix not counted); for a bare
   * message, the bytes of the message. 1..QRAFT_WIRE_FRAME_BYTES_LIMIT. */
  uint32_t frame_bytes_max;
  /* Messages in one frame. 1..QRAFT_WIRE_FRAME_MESSAGES_LIMIT. */
  uint32_t frame_messages_max;
  /* Entries in all messages of one frame together.
   * 1..QRAFT_WIRE_FRAME_ENTRIES_LIMIT. */
  uint32_t frame_entries_max;
} qraft_wire_limits;

#define QRAFT_WIRE_LIMITS_DEFAULT                                              \
  ((qraft_wire_limits){                                                        \
      .frame_bytes_max = QRAFT_WIRE_FRAME_BYTES_MAX_DEFAULT,                   \
      .frame_messages_max = QRAFT_WIRE_FRAME_MESSAGES_MAX_DEFAULT,             \
      .frame_entries_max = QRAFT_WIRE_FRAME_ENTRIES_MAX_DEFAULT})

/* The largest limits allowed: for tools that read captures. */
#define QRAFT_WIRE_LIMITS_LARGEST                                              \
  ((qraft_wire_limits){                                                        \
      .frame_bytes_max = QRAFT_WIRE_FRAME_BYTES_LIMIT,                         \
      .frame_messages_max = QRAFT_WIRE_FRAME_MESSAGES_LIMIT,                   \
      .frame_entries_max = QRAFT_WIRE_FRAME_ENTRIES_LIMIT})

/*
 * Checks that every limit is within its range. Functions that take limits
 * assert this; check configuration from users with it first.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ECONFIG  a limit is 0 or above its hard ceiling.
 */
int qraft_wire_limits_check(const qraft_wire_limits *limits, qraft_err *err);

/* ------------------------------------------------------------------------
 * Messages and the other eraftpb types
 *
 * For each type T: qraft_wire_T_size returns the exact encoded size;
 * qraft_wire_T_encode writes it. Encoding a value that breaks the schema
 * (an enum out of range, a list longer than its array) is a bug of the
 * caller and stops the process with an assertion.
 *
 * qraft_wire_T_encode(value, out, cap, &written): writes the encoding into
 * the `cap` bytes at `out` and its length into *written.
 * Returns 0 on success, or one of these negative codes:
 *   -ENOBUFS  cap is smaller than qraft_wire_T_size(value); nothing written.
 *
 * qraft_wire_T_decode(owner, data, len, &value, err): decodes the `len`
 * bytes at `data`. `owner` is the buffer holding them, or NULL if the caller
 * guarantees the bytes outlive the value. Every non-empty slice in the value
 * holds its own reference to `owner`; empty slices are {NULL, 0, NULL}.
 * The value is overwritten; on error it is left empty with no references.
 * Release a decoded Entry, Snapshot, ConfChange or ConfChangeV2 with
 * qraft_wire_T_release.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ETRUNCATED  a varint, length or fixed value runs past the input;
 *   QRAFT_EMALFORMED  a varint longer than 10 bytes, field number 0, a wrong
 *                     wire type for a known field, an unknown enum value,
 *                     a nested length past its enclosing message;
 *   QRAFT_ELIMIT      a ConfState list above QRAFT_CONF_NODES_MAX, a
 *                     ConfChangeV2 above QRAFT_CONF_CHANGES_MAX.
 * Unknown fields are skipped (including groups, up to 32 levels deep).
 * ------------------------------------------------------------------------ */

size_t qraft_wire_entry_size(const qraft_entry *e);
int qraft_wire_entry_encode(const qraft_entry *e, uint8_t *out, size_t cap,
                            size_t *written);
int qraft_wire_entry_decode(qraft_buf *owner, const uint8_t *data, size_t len,
                            qraft_entry *e, qraft_err *err);
/* Drops the references of e->data and e->context. */
void qraft_wire_entry_release(qraft_entry *e);

size_t qraft_wire_hard_state_size(const qraft_hard_state *hs);
int qraft_wire_hard_state_encode(const qraft_hard_state *hs, uint8_t *out,
                                 size_t cap, size_t *written);
int qraft_wire_hard_state_decode(const uint8_t *data, size_t len,
                                 qraft_hard_state *hs, qraft_err *err);

size_t qraft_wire_conf_state_size(const qraft_conf_state *cs);
int qraft_wire_conf_state_encode(const qraft_conf_state *cs, uint8_t *out,
                                 size_t cap, size_t *written);
int qraft_wire_conf_state_decode(const uint8_t *data, size_t len,
                                 qraft_conf_state *cs, qraft_err *err);

size_t qraft_wire_snapshot_meta_size(const qraft_snapshot_meta *meta);
int qraft_wire_snapshot_meta_encode(const qraft_snapshot_meta *meta,
                                    uint8_t *out, size_t cap, size_t *written);
int qraft_wire_snapshot_meta_decode(const uint8_t *data, size_t len,
                                    qraft_snapshot_meta *meta, qraft_err *err);

size_t qraft_wire_snapshot_size(const qraft_snapshot *snap);
int qraft_wire_snapshot_encode(const qraft_snapshot *snap, uint8_t *out,
                               size_t cap, size_t *written);
int qraft_wire_snapshot_decode(qraft_buf *owner, const uint8_t *data,
                               size_t len, qraft_snapshot *snap,
                               qraft_err *err);
void qraft_wire_snapshot_release(qraft_snapshot *snap);

size_t qraft_wire_conf_change_size(const qraft_conf_change *cc);
int qraft_wire_conf_change_encode(const qraft_conf_change *cc, uint8_t *out,
                                  size_t cap, size_t *written);
int qraft_wire_conf_change_decode(qraft_buf *owner, const uint8_t *data,
                                  size_t len, qraft_conf_change *cc,
                                  qraft_err *err);
void qraft_wire_conf_change_release(qraft_conf_change *cc);

size_t qraft_wire_conf_change_single_size(const qraft_conf_change_single *s);
int qraft_wire_conf_change_single_encode(const qraft_conf_change_single *s,
                                         uint8_t *out, size_t cap,
                                         size_t *written);
int qraft_wire_conf_change_single_decode(const uint8_t *data, size_t len,
                                         qraft_conf_change_single *s,
                                         qraft_err *err);

size_t qraft_wire_conf_change_v2_size(const qraft_conf_change_v2 *cc);
int qraft_wire_conf_change_v2_encode(const qraft_conf_change_v2 *cc,
                                     uint8_t *out, size_t cap,
                                     size_t *written);
int qraft_wire_conf_change_v2_decode(qraft_buf *owner, const uint8_t *data,
                                     size_t len, qraft_conf_change_v2 *cc,
                                     qraft_err *err);
void qraft_wire_conf_change_v2_release(qraft_conf_change_v2 *cc);

/* Message: m->entries (m->entries_n of them) and m->snapshot (NULL: absent,
 * not encoded; non-NULL: encoded even if empty) are read, never kept. */
size_t qraft_wire_message_size(const qraft_message *m);
int qraft_wire_message_encode(const qraft_message *m, uint8_t *out, size_t cap,
                              size_t *written);

/* ------------------------------------------------------------------------
 * Decoded batches
 *
 * Decoding a message or a frame allocates one block that holds the message
 * array, every entry array and every snapshot: a qraft_wire_batch. The batch
 * owns that block; each non-empty slice in it holds a reference to the input
 * buffer. The caller owns the batch and frees it with
 * qraft_wire_batch_free, which releases every slice still in it and the
 * block. To keep a payload longer (the core keeping entries in its log), take
 * a reference with qraft_slice_ref, or move the slice out and set the
 * batch's copy to (qraft_slice){0}. Pointers into the batch (msgs, entries,
 * snapshot) are valid until qraft_wire_batch_free.
 * ------------------------------------------------------------------------ */

typedef struct qraft_wire_batch {
  uint64_t group_id;   /* the frame's group; 0 for a bare message */
  qraft_message *msgs; /* msgs_n messages */
  size_t msgs_n;
  size_t entries_n;    /* entries in all messages */
} qraft_wire_batch;

/*
 * Decodes one protobuf-encoded eraftpb.Message of `len` bytes at `data`.
 * `owner`: as for qraft_wire_T_decode. `limits` (NULL: defaults) bounds the
 * message's bytes and entries. On success *out is a batch of one message,
 * owned by the caller; on error *out is NULL.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ETRUNCATED, QRAFT_EMALFORMED  as for qraft_wire_T_decode;
 *   QRAFT_ELIMIT   more bytes or entries than the limits allow, or a
 *                  ConfState list above QRAFT_CONF_NODES_MAX;
 *   -ENOMEM        out of memory.
 */
int qraft_wire_message_decode(qraft_buf *owner, const uint8_t *data,
                              size_t len, const qraft_wire_limits *limits,
                              qraft_wire_batch **out, qraft_err *err);

/* Releases every slice still held by the batch and frees it. NULL is
 * ignored. */
void qraft_wire_batch_free(qraft_wire_batch *batch);

/* ------------------------------------------------------------------------
 * Frames
 *
 * A frame is a 4-byte little-endian body length, then the body: an encoded
 * qraft.wire.Frame (docs/qraft_wire.proto) holding the group id (field 1)
 * and one or more eraftpb.Message (field 2). The body length is 1 to
 * frame_bytes_max.
 * ------------------------------------------------------------------------ */

#define QRAFT_WIRE_FRAME_HEADER_BYTES 4

/*
 * Reads a frame's length prefix from the `len` bytes at `data` (the start of
 * a frame on a stream) and stores the whole frame's size, prefix included,
 * in *frame_bytes, so that a reader can allocate a buffer of that size and
 * read the rest into it.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ETRUNCATED  fewer than QRAFT_WIRE_FRAME_HEADER_BYTES bytes;
 *   QRAFT_EMALFORMED  a zero-length frame;
 *   QRAFT_ELIMIT      a body longer than limits->frame_bytes_max.
 */
int qraft_wire_frame_peek(const uint8_t *data, size_t len,
                          const qraft_wire_limits *limits, size_t *frame_bytes,
                          qraft_err *err);

/* Size of the frame holding `msgs`, prefix included. */
size_t qraft_wire_frame_size(uint64_t group_id, const qraft_message *msgs,
                             size_t msgs_n);

/*
 * Encodes a frame of msgs_n (>= 1) messages for group `group_id` into the
 * `cap` bytes at `out`; *written is the frame's size.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ELIMIT  the frame would break `limits` (NULL: defaults): too many
 *                 messages or entries, or a body above frame_bytes_max;
 *   -ENOBUFS      cap is smaller than the frame.
 */
int qraft_wire_frame_encode(uint64_t group_id, const qraft_message *msgs,
                            size_t msgs_n, const qraft_wire_limits *limits,
                            uint8_t *out, size_t cap, size_t *written,
                            qraft_err *err);

/*
 * Decodes one whole frame (prefix included) of `len` bytes at `data`; the
 * prefix must announce exactly len - 4 bytes. `owner` and the result are as
 * for qraft_wire_message_decode; batch->group_id is the frame's group.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ETRUNCATED  the input ends before the announced length, or inside
 *                     a field;
 *   QRAFT_EMALFORMED  a zero-length frame, a frame without messages, bytes
 *                     after the announced length, or a malformed message;
 *   QRAFT_ELIMIT      more bytes, messages or entries than `limits` allow;
 *   -ENOMEM           out of memory.
 */
int qraft_wire_frame_decode(qraft_buf *owner, const uint8_t *data, size_t len,
                            const qraft_wire_limits *limits,
                            qraft_wire_batch **out, qraft_err *err);

/* ------------------------------------------------------------------------
 * Stream preamble
 *
 * The first QRAFT_WIRE_PREAMBLE_BYTES of every Raft stream: magic "QRFW",
 * version (u16 LE), reserved zero (u16), cluster id (u64 LE), sender node id
 * (u64 LE), CRC-32C of the previous 24 bytes (u32 LE).
 * ------------------------------------------------------------------------ */

#define QRAFT_WIRE_PREAMBLE_BYTES 28
#define QRAFT_WIRE_MAGIC "QRFW"

typedef struct qraft_wire_preamble {
  uint16_t version;    /* QRAFT_WIRE_VERSION when we send it */
  uint64_t cluster_id; /* not 0 */
  qraft_id sender_id;  /* the sender's Raft node id; not 0 */
} qraft_wire_preamble;

/* Writes the preamble for (cluster_id, sender_id) at this library's version.
 * Both ids must be nonzero (asserted). */
void qraft_wire_preamble_encode(uint64_t cluster_id, qraft_id sender_id,
                                uint8_t out[QRAFT_WIRE_PREAMBLE_BYTES]);

/*
 * Reads a preamble from the `len` bytes at `data` (the start of a stream).
 * `cluster_id` is ours: a preamble of another cluster is refused; 0 accepts
 * any cluster (for tools).
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ETRUNCATED  fewer bytes than the preamble (and what is there is
 *                     not already wrong);
 *   QRAFT_EMALFORMED  bad magic, bad checksum, reserved bits set, a zero
 *                     cluster or sender id;
 *   QRAFT_EVERSION    another protocol version (both versions in the
 *                     context; checked before the rest, whose layout may
 *                     differ between versions);
 *   QRAFT_ECLUSTER    another cluster (both ids in the context).
 */
int qraft_wire_preamble_decode(const uint8_t *data, size_t len,
                               uint64_t cluster_id, qraft_wire_preamble *out,
                               qraft_err *err);

/* ------------------------------------------------------------------------
 * Buffer pool
 *
 * Keeps up to bufs_max idle blocks of buf_bytes each, so that encoding a
 * frame does not call malloc for its bytes. A buffer from the pool is an
 * ordinary qraft_buf: when its last reference goes (on any thread), its
 * block returns to the pool, or is freed if the pool is full or freed.
 * ------------------------------------------------------------------------ */

typedef struct qraft_wire_pool qraft_wire_pool;

/*
 * Creates a pool; the caller owns it and frees it with qraft_wire_pool_free.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ECONFIG  buf_bytes or bufs_max is 0;
 *   -ENOMEM        out of memory.
 */
int qraft_wire_pool_new(size_t buf_bytes, uint32_t bufs_max,
                        qraft_wire_pool **out);

/* Gives up the caller's ownership. Idle blocks are freed now; buffers still
 * in use stay valid, and the pool's memory goes with the last of them. */
void qraft_wire_pool_free(qraft_wire_pool *pool);

/* A buffer with len 0 and cap >= bytes, holding one reference for the
 * caller; pooled if bytes <= buf_bytes. NULL if memory is exhausted.
 * Thread-safe. */
qraft_buf *qraft_wire_pool_get(qraft_wire_pool *pool, size_t bytes);

/* Blocks idle in the pool (for tests and metrics). Thread-safe. */
uint32_t qraft_wire_pool_idle(qraft_wire_pool *pool);

/*
 * Encodes a frame (as qraft_wire_frame_encode) into a buffer of exactly its
 * size, from `pool` (NULL: malloc). On success *out holds one reference for
 * the caller and (*out)->len is the frame's size.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ELIMIT  as for qraft_wire_frame_encode;
 *   -ENOMEM       out of memory.
 */
int qraft_wire_frame_encode_buf(uint64_t group_id, const qraft_message *msgs,
                                size_t msgs_n, const qraft_wire_limits *limits,
                                qraft_wire_pool *pool, qraft_buf **out,
                                qraft_err *err);

/* ------------------------------------------------------------------------
 * Batcher
 *
 * Groups the messages for one peer and one group into frames, up to the
 * limits. The event loop adds messages as the core produces them and calls
 * qraft_wire_batcher_flush at the end of each loop turn, so a message never
 * waits longer than the rest of its turn: batching adds no timer.
 * A message is encoded when it is added, so the caller may reuse its memory
 * at once.
 * ------------------------------------------------------------------------ */

/* Receives a finished frame. Ownership of `frame` (one reference; len is the
 * frame's size) passes to the callback. A nonzero return is passed back to
 * the caller of add or flush; the frame is the callback's either way. */
typedef int (*qraft_wire_send_cb)(qraft_buf *frame, void *ud);

/* Caller-allocated; fields are private. */
typedef struct qraft_wire_batcher {
  qraft_id peer_id;
  uint64_t group_id;
  qraft_wire_limits limits;
  qraft_wire_pool *pool;
  qraft_wire_send_cb send_cb;
  void *send_ud;
  qraft_buf *pending;     /* the frame being filled, or NULL */
  uint32_t pending_msgs;
  uint32_t pending_entries;
  uint64_t frames_sent;   /* statistics */
  uint64_t msgs_sent;
} qraft_wire_batcher;

/* Initializes a batcher for messages to `peer_id` in group `group_id`.
 * `limits` (NULL: defaults) are copied; `pool` (may be NULL) must outlive
 * the batcher. */
void qraft_wire_batcher_init(qraft_wire_batcher *b, qraft_id peer_id,
                             uint64_t group_id,
                             const qraft_wire_limits *limits,
                             qraft_wire_pool *pool, qraft_wire_send_cb send_cb,
                             void *ud);

/*
 * Encodes `m` (m->to must be the batcher's peer: asserted) into the pending
 * frame. If it does not fit within the limits, the pending frame is sent
 * first. Returns 0 on success, or one of these negative codes:
 *   QRAFT_ELIMIT  m alone is larger than a frame may be, or has more
 *                 entries than a frame may hold;
 *   -ENOMEM       out of memory;
 *   whatever send_cb returned, if it failed (m is then not added).
 */
int qraft_wire_batcher_add(qraft_wire_batcher *b, const qraft_message *m,
                           qraft_err *err);

/* Sends the pending frame, if any: call at the end of every event-loop
 * turn. The frame passes to send_cb whatever it returns.
 * Returns 0 on success, or one of these negative codes:
 *   whatever send_cb returned, if it failed. */
int qraft_wire_batcher_flush(qraft_wire_batcher *b);

/* True if messages wait for a flush. */
bool qraft_wire_batcher_pending(const qraft_wire_batcher *b);

/* Drops the pending frame unsent. The batcher may be initialized again. */
void qraft_wire_batcher_close(qraft_wire_batcher *b);

#ifdef __cplusplus
}
#endif
#endif

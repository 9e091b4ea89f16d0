/*
 * batcher.c: groups the outgoing messages for one peer and one group into
 * frames. Each message is encoded into the pending frame as it is added;
 * the event loop flushes at the end of its turn, so batching costs no
 * latency beyond the turn that produced the message. A frame never breaks
 * the limits the receiver enforces.
 */
#include "codec.h"

#include <qraft/assert.h>
#include <qraft/wire.h>

#include <errno.h>
#include <string.h>

/* First buffer of a frame when there is no pool. */
#define BATCHER_BUF_BYTES_INITIAL 4096

void qraft_wire_batcher_init(qraft_wire_batcher *b, qraft_id peer_id,
                             uint64_t group_id,
                             const qraft_wire_limits *limits,
                             qraft_wire_pool *pool, qraft_wire_send_cb send_cb,
                             void *ud) {
  QRAFT_ASSERT(send_cb != NULL);
  qraft_wire_limits storage;
  memset(b, 0, sizeof *b);
  b->peer_id = peer_id;
  b->group_id = group_id;
  b->limits = *qraft__wire_limits(limits, &storage);
  b->pool = pool;
  b->send_cb = send_cb;
  b->send_ud = ud;
}

bool qraft_wire_batcher_pending(const qraft_wire_batcher *b) {
  return b->pending != NULL;
}

void qraft_wire_batcher_close(qraft_wire_batcher *b) {
  qraft_buf_unref(b->pending);
  b->pending = NULL;
  b->pending_msgs = 0;
  b->pending_entries = 0;
}

int qraft_wire_batcher_flush(qraft_wire_batcher *b) {
  if (b->pending == NULL) {
    return 0;
  }
  qraft_buf *frame = b->pending;
  b->pending = NULL;
  size_t body = frame->len - QRAFT_WIRE_FRAME_HEADER_BYTES;
  QRAFT_ASSERT(b->pending_msgs >= 1 && body >= 1 &&
               body <= b->limits.frame_bytes_max);
  frame->data[0] = (uint8_t)body;
  frame->data[1] = (uint8_t)(body >> 8);
  frame->data[2] = (uint8_t)(body >> 16);
  frame->data[3] = (uint8_t)(body >> 24);
  b->frames_sent++;
  b->msgs_sent += b->pending_msgs;
  b->pending_msgs = 0;
  b->pending_entries = 0;
  return b->send_cb(frame, b->send_ud);
}

static qraft_buf *batcher_buf(qraft_wire_batcher *b, size_t bytes) {
  if (b->pool != NULL) {
    return qraft_wire_pool_get(b->pool, bytes);
  }
  return qraft_buf_new(bytes < BATCHER_BUF_BYTES_INITIAL
                           ? BATCHER_BUF_BYTES_INITIAL
                           : bytes);
}

int qraft_wire_batcher_add(qraft_wire_batcher *b, const qraft_message *m,
                           qraft_err *err) {
  QRAFT_ASSERTF(m->to == b->peer_id, "message to %llu in the batcher of %llu",
                (unsigned long long)m->to, (unsigned long long)b->peer_id);
  size_t msg = qraft_wire_message_size(m);
  size_t item = pb_len_size(2, msg);
  size_t head = pb_u64_size(1, b->group_id);
  if (head + item > b->limits.frame_bytes_max) {
    return QRAFT_ERR(err, QRAFT_ELIMIT,
                     "%s of %zu bytes to %llu: larger than a frame (%u)",
                     qraft_msg_type_name(m->type), msg,
                     (unsigned long long)m->to, b->limits.frame_bytes_max);
  }
  if (m->entries_n > b->limits.frame_entries_max) {
    return QRAFT_ERR(err, QRAFT_ELIMIT,
                     "%s with %zu entries to %llu: more than a frame holds "
                     "(%u)",
                     qraft_msg_type_name(m->type), m->entries_n,
                     (unsigned long long)m->to, b->limits.frame_entries_max);
  }
  if (b->pending != NULL &&
      (b->pending->len - QRAFT_WIRE_FRAME_HEADER_BYTES + item >
           b->limits.frame_bytes_max ||
       b->pending_msgs == b->limits.frame_messages_max ||
       b->pending_entries + m->entries_n > b->limits.frame_entries_max)) {
    int rc = qraft_wire_batcher_flush(b);
    if (rc != 0) {
      return QRAFT_ERR(err, rc, "send a full frame to %llu",
                       (unsigned long long)b->peer_id);
    }
  }
  if (b->pending == NULL) {
    qraft_buf *f = batcher_buf(b, QRAFT_WIRE_FRAME_HEADER_BYTES + head + item);
    if (f == NULL) {
      return QRAFT_ERR(err, -ENOMEM, "frame buffer for %llu",
                       (unsigned long long)b->peer_id);
    }
    uint8_t *p = f->data + QRAFT_WIRE_FRAME_HEADER_BYTES;
    p = pb_put_u64(p, 1, b->group_id);
    f->len = (size_t)(p - f->data);
    b->pending = f;
  }
  size_t need = b->pending->len + item;
  if (need > b->pending->cap) {
    /* Grow geometrically, never past the largest frame. */
    size_t cap = 2 * b->pending->cap;
    size_t frame_max =
        QRAFT_WIRE_FRAME_HEADER_BYTES + (size_t)b->limits.frame_bytes_max;
    if (cap > frame_max) {
      cap = frame_max;
    }
    if (cap < need) {
      cap = need;
    }
    qraft_buf *f = batcher_buf(b, cap);
    if (f == NULL) {
      return QRAFT_ERR(err, -ENOMEM, "frame buffer of %zu bytes for %llu",
                       cap, (unsigned long long)b->peer_id);
    }
    memcpy(f->data, b->pending->data, b->pending->len);
    f->len = b->pending->len;
    qraft_buf_unref(b->pending);
    b->pending = f;
  }
  uint8_t *p = b->pending->data + b->pending->len;
  p = pb_put_len(p, 2, msg);
  uint8_t *end = qraft__wire_message_put(p, m);
  QRAFT_ASSERTF((size_t)(end - p) == msg, "wrote %zu of %zu bytes",
                (size_t)(end - p), msg);
  b->pending->len = need;
  b->pending_msgs++;
  b->pending_entries += (uint32_t)m->entries_n;
  return 0;
}

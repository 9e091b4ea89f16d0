/* libFuzzer target: the frame decoder, under small limits, and the batcher.
 * A frame that decodes must re-encode to a frame that decodes to the same
 * messages, and re-batching its messages must deliver them in order within
 * the limits. */
#include "unit/wire/wire_fixtures.h"

#include <qraft/assert.h>
#include <qraft/wire.h>

#include <stdlib.h>

static const qraft_wire_limits limits = {
    .frame_bytes_max = 1 << 16, .frame_messages_max = 64,
    .frame_entries_max = 512};

typedef struct collected {
  qraft_buf *frames[1024];
  size_t n;
} collected;

static int on_send(qraft_buf *frame, void *ud) {
  collected *c = ud;
  QRAFT_ASSERT(c->n < 1024);
  c->frames[c->n++] = frame;
  return 0;
}

/* Feeds the messages addressed to the first one's peer through a batcher
 * with tighter limits and checks what comes out. */
static void rebatch(const qraft_wire_batch *batch) {
  static collected c;
  c.n = 0;
  qraft_wire_limits tight = {.frame_bytes_max = 512, .frame_messages_max = 3,
                             .frame_entries_max = 8};
  qraft_wire_batcher b;
  qraft_id peer = batch->msgs[0].to;
  qraft_wire_batcher_init(&b, peer, batch->group_id, &tight, NULL, on_send, &c);
  size_t added = 0;
  for (size_t i = 0; i < batch->msgs_n; i++) {
    if (batch->msgs[i].to != peer) {
      continue;
    }
    int rc = qraft_wire_batcher_add(&b, &batch->msgs[i], NULL);
    QRAFT_ASSERT(rc == 0 || rc == QRAFT_ELIMIT);
    added += rc == 0;
  }
  QRAFT_ASSERT(qraft_wire_batcher_flush(&b) == 0);
  size_t seen = 0;
  for (size_t f = 0; f < c.n; f++) {
    qraft_wire_batch *out = NULL;
    qraft_buf *fb = c.frames[f];
    QRAFT_ASSERT(qraft_wire_frame_decode(fb, fb->data, fb->len, &tight, &out,
                                         NULL) == 0);
    QRAFT_ASSERT(out->group_id == batch->group_id);
    seen += out->msgs_n;
    qraft_wire_batch_free(out);
    qraft_buf_unref(fb);
  }
  QRAFT_ASSERT(seen == added);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  qraft_buf *b = qraft_buf_copy(data, size);
  QRAFT_ASSERT(b != NULL);
  size_t frame_bytes = 0;
  int peek = qraft_wire_frame_peek(b->data, b->len, &limits, &frame_bytes, NULL);
  qraft_wire_batch *batch = NULL;
  qraft_err err;
  qraft_err_init(&err, 0);
  int rc = qraft_wire_frame_decode(b, b->data, b->len, &limits, &batch, &err);
  if (rc != 0) {
    QRAFT_ASSERTF(rc == QRAFT_ETRUNCATED || rc == QRAFT_EMALFORMED ||
                      rc == QRAFT_ELIMIT,
                  "unexpected code %d", rc);
    QRAFT_ASSERT(batch == NULL && err.frames_n > 0);
  } else {
    QRAFT_ASSERT(peek == 0 && frame_bytes == size && batch->msgs_n >= 1);
    size_t n = qraft_wire_frame_size(batch->group_id, batch->msgs, batch->msgs_n);
    uint8_t *out = malloc(n);
    size_t written = 0;
    QRAFT_ASSERT(qraft_wire_frame_encode(batch->group_id, batch->msgs,
                                         batch->msgs_n, &limits, out, n,
                                         &written, NULL) == 0);
    qraft_wire_batch *again = NULL;
    QRAFT_ASSERT(qraft_wire_frame_decode(NULL, out, written, &limits, &again,
                                         NULL) == 0);
    QRAFT_ASSERT(again->msgs_n == batch->msgs_n &&
                 again->group_id == batch->group_id);
    for (size_t i = 0; i < batch->msgs_n; i++) {
      QRAFT_ASSERT(fx_message_eq(&batch->msgs[i], &again->msgs[i]));
    }
    qraft_wire_batch_free(again);
    free(out);
    rebatch(batch);
    qraft_wire_batch_free(batch);
  }
  QRAFT_ASSERT(qraft_buf_refs(b) == 1);
  qraft_buf_unref(b);
  return 0;
}

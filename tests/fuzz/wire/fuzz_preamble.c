/* libFuzzer target: a stream as a receiver reads it, a preamble and then
 * frames until the bytes run out. A preamble that is accepted must be the
 * one the encoder writes for its ids. */
#include <qraft/assert.h>
#include <qraft/wire.h>

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  qraft_buf *b = qraft_buf_copy(data, size);
  QRAFT_ASSERT(b != NULL);
  qraft_wire_preamble pre;
  qraft_err err;
  qraft_err_init(&err, 0);
  int rc = qraft_wire_preamble_decode(b->data, b->len, 0, &pre, &err);
  if (rc != 0) {
    QRAFT_ASSERTF(rc == QRAFT_ETRUNCATED || rc == QRAFT_EMALFORMED ||
                      rc == QRAFT_EVERSION,
                  "unexpected code %d", rc);
    QRAFT_ASSERT(err.frames_n > 0);
    qraft_buf_unref(b);
    return 0;
  }
  uint8_t again[QRAFT_WIRE_PREAMBLE_BYTES];
  qraft_wire_preamble_encode(pre.cluster_id, pre.sender_id, again);
  QRAFT_ASSERT(memcmp(again, b->data, sizeof again) == 0);
  /* Our own cluster refuses every other. */
  rc = qraft_wire_preamble_decode(b->data, b->len, pre.cluster_id ^ 1, &pre,
                                  NULL);
  QRAFT_ASSERT(rc == QRAFT_ECLUSTER);

  size_t off = QRAFT_WIRE_PREAMBLE_BYTES;
  while (off < b->len) {
    size_t frame_bytes = 0;
    if (qraft_wire_frame_peek(b->data + off, b->len - off, NULL, &frame_bytes,
                              NULL) != 0 ||
        frame_bytes > b->len - off) {
      break;
    }
    qraft_wire_batch *batch = NULL;
    if (qraft_wire_frame_decode(b, b->data + off, frame_bytes, NULL, &batch,
                                NULL) != 0) {
      break;
    }
    qraft_wire_batch_free(batch);
    off += frame_bytes;
  }
  QRAFT_ASSERT(qraft_buf_refs(b) == 1);
  qraft_buf_unref(b);
  return 0;
}

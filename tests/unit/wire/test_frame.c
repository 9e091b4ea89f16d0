/* Frames and the stream preamble: round trips, limits, and bad input. */
#include "cmocka_all.h"
#include "wire_fixtures.h"

#include <qraft/crc32c.h>
#include <qraft/wire.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void err_contains(const qraft_err *err, const char *what) {
  char text[1024];
  qraft_err_format(err, text, sizeof text);
  if (strstr(text, what) == NULL) {
    fail_msg("error \"%s\" does not mention \"%s\"", text, what);
  }
}

static qraft_buf *encode_frame(uint64_t group, const qraft_message *msgs,
                               size_t n) {
  qraft_buf *b = NULL;
  assert_int_equal(qraft_wire_frame_encode_buf(group, msgs, n, NULL, NULL, &b,
                                               NULL), 0);
  assert_int_equal(b->len, qraft_wire_frame_size(group, msgs, n));
  return b;
}

static void frame_round_trips_a_batch(void **st) {
  (void)st;
  qraft_message msgs[3] = {fx_heartbeat(2), fx_full_message(), fx_heartbeat(2)};
  msgs[2].commit = 101;
  qraft_buf *b = encode_frame(77, msgs, 3);
  size_t frame_bytes = 0;
  assert_int_equal(qraft_wire_frame_peek(b->data, 4, NULL, &frame_bytes, NULL), 0);
  assert_int_equal(frame_bytes, b->len);
  qraft_wire_batch *batch = NULL;
  assert_int_equal(qraft_wire_frame_decode(b, b->data, b->len, NULL, &batch, NULL), 0);
  assert_int_equal(batch->group_id, 77);
  assert_int_equal(batch->msgs_n, 3);
  assert_int_equal(batch->entries_n, 3);
  for (int i = 0; i < 3; i++) {
    assert_true(fx_message_eq(&msgs[i], &batch->msgs[i]));
  }
  assert_null(batch->msgs[0].entries);
  qraft_wire_batch_free(batch);
  assert_int_equal(qraft_buf_refs(b), 1);
  /* The caller-buffer encoder writes the same bytes. */
  uint8_t out[1024];
  size_t n = 0;
  assert_int_equal(qraft_wire_frame_encode(77, msgs, 3, NULL, out, sizeof out,
                                           &n, NULL), 0);
  assert_int_equal(n, b->len);
  assert_memory_equal(out, b->data, n);
  assert_int_equal(qraft_wire_frame_encode(77, msgs, 3, NULL, out, n - 1, &n,
                                           NULL), -ENOBUFS);
  qraft_buf_unref(b);
}

static void frame_limits_are_enforced_both_ways(void **st) {
  (void)st;
  qraft_message msgs[4] = {fx_heartbeat(2), fx_heartbeat(2), fx_heartbeat(2),
                           fx_full_message()};
  qraft_wire_limits lim = QRAFT_WIRE_LIMITS_DEFAULT;
  lim.frame_messages_max = 3;
  uint8_t out[1024];
  size_t n = 0;
  qraft_err err;
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_wire_frame_encode(1, msgs, 4, &lim, out, sizeof out,
                                           &n, &err), QRAFT_ELIMIT);
  err_contains(&err, "4 messages, limit 3");
  assert_int_equal(qraft_wire_frame_encode(1, msgs, 4, NULL, out, sizeof out,
                                           &n, NULL), 0);
  qraft_wire_batch *batch = NULL;
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_wire_frame_decode(NULL, out, n, &lim, &batch, &err),
                   QRAFT_ELIMIT);
  err_contains(&err, "more than 3 messages");
  lim = QRAFT_WIRE_LIMITS_DEFAULT;
  lim.frame_entries_max = 2;
  assert_int_equal(qraft_wire_frame_decode(NULL, out, n, &lim, &batch, NULL),
                   QRAFT_ELIMIT);
  lim = QRAFT_WIRE_LIMITS_DEFAULT;
  lim.frame_bytes_max = (uint32_t)(n - 5);
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_wire_frame_decode(NULL, out, n, &lim, &batch, &err),
                   QRAFT_ELIMIT);
  err_contains(&err, "limit");
  size_t fb = 0;
  assert_int_equal(qraft_wire_frame_peek(out, n, &lim, &fb, NULL), QRAFT_ELIMIT);
  assert_int_equal(qraft_wire_frame_encode(1, msgs, 4, &lim, out, sizeof out,
                                           &n, NULL), QRAFT_ELIMIT);
  /* limits themselves are checked */
  lim.frame_bytes_max = 0;
  assert_int_equal(qraft_wire_limits_check(&lim, NULL), QRAFT_ECONFIG);
  lim = QRAFT_WIRE_LIMITS_LARGEST;
  assert_int_equal(qraft_wire_limits_check(&lim, NULL), 0);
  lim.frame_entries_max++;
  assert_int_equal(qraft_wire_limits_check(&lim, NULL), QRAFT_ECONFIG);
}

static void bad_frames_are_refused(void **st) {
  (void)st;
  qraft_wire_batch *batch = NULL;
  qraft_err err;
  size_t fb = 0;
  /* header cut short */
  assert_int_equal(qraft_wire_frame_peek((const uint8_t[]){1, 0}, 2, NULL, &fb,
                                         NULL), QRAFT_ETRUNCATED);
  /* zero-length frame */
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_wire_frame_decode(NULL, (const uint8_t[]){0, 0, 0, 0},
                                           4, NULL, &batch, &err),
                   QRAFT_EMALFORMED);
  err_contains(&err, "zero-length frame");
  /* a body with a group id and no message */
  assert_int_equal(qraft_wire_frame_decode(NULL,
                                           (const uint8_t[]){2, 0, 0, 0, 0x08, 0x05},
                                           6, NULL, &batch, NULL),
                   QRAFT_EMALFORMED);
  /* body shorter than announced, and bytes after it */
  qraft_message hb = fx_heartbeat(2);
  qraft_buf *b = encode_frame(1, &hb, 1);
  assert_int_equal(qraft_wire_frame_decode(NULL, b->data, b->len - 1, NULL,
                                           &batch, NULL), QRAFT_ETRUNCATED);
  uint8_t longer[64];
  memcpy(longer, b->data, b->len);
  longer[b->len] = 0;
  assert_int_equal(qraft_wire_frame_decode(NULL, longer, b->len + 1, NULL,
                                           &batch, NULL), QRAFT_EMALFORMED);
  /* a malformed message is named by its index in the frame */
  uint8_t bad[] = {8, 0, 0, 0, 0x12, 0x00, 0x12, 0x02, 0x08, 0x63,
                   0x12, 0x00};
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_wire_frame_decode(NULL, bad, sizeof bad, NULL, &batch,
                                           &err), QRAFT_EMALFORMED);
  err_contains(&err, "in Frame.messages[1] at offset 6");
  err_contains(&err, "unknown enum value 99");
  assert_null(batch);
  qraft_buf_unref(b);
}

static void every_truncated_or_corrupted_frame_is_safe(void **st) {
  (void)st;
  qraft_message msgs[2] = {fx_full_message(), fx_heartbeat(2)};
  qraft_buf *full = encode_frame(9, msgs, 2);
  for (size_t len = 0; len < full->len; len++) {
    qraft_buf *b = qraft_buf_copy(full->data, len);
    qraft_wire_batch *batch = NULL;
    int rc = qraft_wire_frame_decode(b, b->data, len, NULL, &batch, NULL);
    assert_true(rc == QRAFT_ETRUNCATED || rc == QRAFT_EMALFORMED);
    assert_int_equal(qraft_buf_refs(b), 1);
    qraft_buf_unref(b);
  }
  for (size_t i = 0; i < full->len; i++) {
    qraft_buf *b = qraft_buf_copy(full->data, full->len);
    b->data[i] ^= 0x55;
    qraft_wire_batch *batch = NULL;
    if (qraft_wire_frame_decode(b, b->data, b->len, NULL, &batch, NULL) == 0) {
      qraft_wire_batch_free(batch);
    }
    assert_int_equal(qraft_buf_refs(b), 1);
    qraft_buf_unref(b);
  }
  qraft_buf_unref(full);
}

static void preamble_round_trips(void **st) {
  (void)st;
  uint8_t pre[QRAFT_WIRE_PREAMBLE_BYTES];
  qraft_wire_preamble_encode(0xc0ffee, 3, pre);
  assert_memory_equal(pre, "QRFW\x01\x00\x00\x00", 8);
  qraft_wire_preamble p;
  assert_int_equal(qraft_wire_preamble_decode(pre, sizeof pre, 0xc0ffee, &p,
                                              NULL), 0);
  assert_int_equal(p.version, QRAFT_WIRE_VERSION);
  assert_int_equal(p.cluster_id, 0xc0ffee);
  assert_int_equal(p.sender_id, 3);
  assert_int_equal(qraft_wire_preamble_decode(pre, sizeof pre, 0, &p, NULL), 0);
}

static void preamble_of_another_version_or_cluster_is_refused(void **st) {
  (void)st;
  uint8_t pre[QRAFT_WIRE_PREAMBLE_BYTES];
  qraft_wire_preamble p;
  qraft_err err;
  qraft_wire_preamble_encode(0xc0ffee, 3, pre);
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_wire_preamble_decode(pre, sizeof pre, 0xbeef, &p,
                                              &err), QRAFT_ECLUSTER);
  err_contains(&err, "cluster 0000000000c0ffee, this node in 000000000000beef");

  pre[4] = 7; /* a future version: refused before its layout is read */
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_wire_preamble_decode(pre, 6, 0xc0ffee, &p, &err),
                   QRAFT_EVERSION);
  err_contains(&err, "peer speaks wire version 7, this node speaks version 1");
}

static void garbage_preambles_are_refused(void **st) {
  (void)st;
  uint8_t pre[QRAFT_WIRE_PREAMBLE_BYTES];
  qraft_wire_preamble p;
  qraft_err err;
  qraft_wire_preamble_encode(1, 3, pre);
  /* every prefix is truncated, not accepted */
  for (size_t len = 0; len < sizeof pre; len++) {
    assert_int_equal(qraft_wire_preamble_decode(pre, len, 1, &p, NULL),
                     QRAFT_ETRUNCATED);
  }
  /* garbage is refused as soon as the magic is wrong */
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_wire_preamble_decode((const uint8_t *)"GET ", 4, 1, &p,
                                              &err), QRAFT_EMALFORMED);
  err_contains(&err, "bad magic 47455420");
  assert_int_equal(qraft_wire_preamble_decode((const uint8_t *)"QX", 2, 1, &p,
                                              NULL), QRAFT_EMALFORMED);
  /* any flipped bit after the version is caught by the checksum */
  for (size_t i = 6; i < sizeof pre; i++) {
    uint8_t bad[sizeof pre];
    memcpy(bad, pre, sizeof pre);
    bad[i] ^= 0x10;
    assert_int_equal(qraft_wire_preamble_decode(bad, sizeof bad, 1, &p, NULL),
                     QRAFT_EMALFORMED);
  }
  /* reserved bits, with a checksum that matches */
  pre[6] = 1;
  uint32_t crc = qraft_crc32c(0, pre, 24);
  memcpy(pre + 24, (uint8_t[]){(uint8_t)crc, (uint8_t)(crc >> 8),
                               (uint8_t)(crc >> 16), (uint8_t)(crc >> 24)}, 4);
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_wire_preamble_decode(pre, sizeof pre, 1, &p, &err),
                   QRAFT_EMALFORMED);
  err_contains(&err, "reserved");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(frame_round_trips_a_batch),
      cmocka_unit_test(frame_limits_are_enforced_both_ways),
      cmocka_unit_test(bad_frames_are_refused),
      cmocka_unit_test(every_truncated_or_corrupted_frame_is_safe),
      cmocka_unit_test(preamble_round_trips),
      cmocka_unit_test(preamble_of_another_version_or_cluster_is_refused),
      cmocka_unit_test(garbage_preambles_are_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

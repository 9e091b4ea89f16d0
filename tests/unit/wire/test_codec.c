/* The message codec: round trips of every type, zero copy, protobuf's
 * decoding rules, and bad input answered with an error and its context. */
#include "cmocka_all.h"
#include "wire_fixtures.h"

#include <qraft/varint.h>
#include <qraft/wire.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Encodes m into a new qraft_buf of exactly its size. */
static qraft_buf *encode_message(const qraft_message *m) {
  size_t n = qraft_wire_message_size(m);
  qraft_buf *b = qraft_buf_new(n);
  assert_non_null(b);
  size_t written = 0;
  assert_int_equal(qraft_wire_message_encode(m, b->data, n, &written), 0);
  assert_int_equal(written, n);
  b->len = n;
  return b;
}

static void err_contains(const qraft_err *err, const char *what) {
  char text[1024];
  qraft_err_format(err, text, sizeof text);
  if (strstr(text, what) == NULL) {
    fail_msg("error \"%s\" does not mention \"%s\"", text, what);
  }
}

static void full_message_round_trips_without_copying(void **st) {
  (void)st;
  qraft_message m = fx_full_message();
  qraft_buf *b = encode_message(&m);
  qraft_wire_batch *batch = NULL;
  qraft_err err;
  qraft_err_init(&err, 0);
  assert_int_equal(
      qraft_wire_message_decode(b, b->data, b->len, NULL, &batch, &err), 0);
  assert_int_equal(batch->msgs_n, 1);
  assert_int_equal(batch->entries_n, 3);
  assert_true(fx_message_eq(&m, &batch->msgs[0]));
  /* Payloads are views into the received buffer, each holding a
   * reference: entries 0 (data, context), 1 (data), snapshot data, message
   * context. */
  const qraft_entry *e = &batch->msgs[0].entries[0];
  assert_true(e->data.data >= b->data && e->data.data < b->data + b->len);
  assert_ptr_equal(e->data.owner, b);
  assert_ptr_equal(batch->msgs[0].snapshot->data.owner, b);
  assert_int_equal(qraft_buf_refs(b), 1 + 5);
  /* Keep one payload past the batch. */
  qraft_slice kept = qraft_slice_ref(e->data);
  qraft_wire_batch_free(batch);
  assert_int_equal(qraft_buf_refs(b), 2);
  assert_memory_equal(kept.data, "put x=1", 7);
  qraft_slice_release(&kept);
  assert_int_equal(qraft_buf_refs(b), 1);
  qraft_buf_unref(b);
}

static void heartbeat_is_canonical_protobuf(void **st) {
  (void)st;
  qraft_message m = fx_heartbeat(2);
  uint8_t out[64];
  size_t n = 0;
  assert_int_equal(qraft_wire_message_encode(&m, out, sizeof out, &n), 0);
  /* msg_type=8, to=2, from=1, term=5, commit=100; ascending field order. */
  static const uint8_t want[] = {0x08, 0x08, 0x10, 0x02, 0x18, 0x01,
                                 0x20, 0x05, 0x40, 0x64};
  assert_int_equal(n, sizeof want);
  assert_memory_equal(out, want, sizeof want);
  assert_int_equal(qraft_wire_message_encode(&m, out, n - 1, &n), -ENOBUFS);
  /* Negative priority: int64 as a 10-byte varint, field 16 (2-byte tag). */
  m = (qraft_message){.priority = -1};
  assert_int_equal(qraft_wire_message_encode(&m, out, sizeof out, &n), 0);
  assert_int_equal(n, 12);
  assert_int_equal(out[0], 0x80);
  assert_int_equal(out[1], 0x01);
}

static void every_other_type_round_trips(void **st) {
  (void)st;
  uint8_t buf[2048];
  size_t n = 0;
  qraft_message full = fx_full_message();

  qraft_entry e;
  assert_int_equal(qraft_wire_entry_encode(&full.entries[0], buf, sizeof buf, &n), 0);
  assert_int_equal(qraft_wire_entry_decode(NULL, buf, n, &e, NULL), 0);
  assert_true(fx_entry_eq(&e, &full.entries[0]));
  assert_null(e.data.owner);
  qraft_wire_entry_release(&e);

  qraft_hard_state hs = {.term = 9, .vote = 3, .commit = (uint64_t)1 << 40}, hs2;
  assert_int_equal(qraft_wire_hard_state_encode(&hs, buf, sizeof buf, &n), 0);
  assert_int_equal(qraft_wire_hard_state_decode(buf, n, &hs2, NULL), 0);
  assert_memory_equal(&hs, &hs2, sizeof hs);

  qraft_conf_state cs;
  const qraft_conf_state *want_cs = &full.snapshot->metadata.conf_state;
  assert_int_equal(qraft_wire_conf_state_encode(want_cs, buf, sizeof buf, &n), 0);
  assert_int_equal(qraft_wire_conf_state_decode(buf, n, &cs, NULL), 0);
  assert_true(fx_conf_state_eq(&cs, want_cs));

  qraft_snapshot_meta meta;
  assert_int_equal(qraft_wire_snapshot_meta_encode(&full.snapshot->metadata,
                                                   buf, sizeof buf, &n), 0);
  assert_int_equal(qraft_wire_snapshot_meta_decode(buf, n, &meta, NULL), 0);
  assert_int_equal(meta.index, 40);
  assert_true(fx_conf_state_eq(&meta.conf_state, want_cs));

  qraft_snapshot snap;
  assert_int_equal(qraft_wire_snapshot_encode(full.snapshot, buf, sizeof buf, &n), 0);
  assert_int_equal(qraft_wire_snapshot_decode(NULL, buf, n, &snap, NULL), 0);
  assert_true(fx_snapshot_eq(&snap, full.snapshot));
  qraft_wire_snapshot_release(&snap);

  qraft_conf_change cc = {.id = 77, .change_type = QRAFT_CONF_ADD_LEARNER_NODE,
                          .node_id = 4, .context = fx_str("why")}, cc2;
  assert_int_equal(qraft_wire_conf_change_encode(&cc, buf, sizeof buf, &n), 0);
  assert_int_equal(qraft_wire_conf_change_decode(NULL, buf, n, &cc2, NULL), 0);
  assert_int_equal(cc2.id, 77);
  assert_int_equal(cc2.change_type, QRAFT_CONF_ADD_LEARNER_NODE);
  assert_int_equal(cc2.node_id, 4);
  assert_true(fx_slice_eq(cc2.context, cc.context));
  qraft_wire_conf_change_release(&cc2);

  qraft_conf_change_single s = {.change_type = QRAFT_CONF_REMOVE_NODE,
                                .node_id = 9}, s2;
  assert_int_equal(qraft_wire_conf_change_single_encode(&s, buf, sizeof buf, &n), 0);
  assert_int_equal(qraft_wire_conf_change_single_decode(buf, n, &s2, NULL), 0);
  assert_memory_equal(&s, &s2, sizeof s);

  static qraft_conf_change_v2 v2, v2b;
  v2.transition = QRAFT_CONF_TRANSITION_EXPLICIT;
  v2.changes_n = QRAFT_CONF_CHANGES_MAX;
  for (uint32_t i = 0; i < v2.changes_n; i++) {
    v2.changes[i] = (qraft_conf_change_single){
        .change_type = (qraft_conf_change_type)(i % 3), .node_id = i};
  }
  v2.context = fx_str("joint");
  assert_int_equal(qraft_wire_conf_change_v2_encode(&v2, buf, sizeof buf, &n), 0);
  assert_int_equal(qraft_wire_conf_change_v2_decode(NULL, buf, n, &v2b, NULL), 0);
  assert_int_equal(v2b.transition, v2.transition);
  assert_int_equal(v2b.changes_n, v2.changes_n);
  assert_memory_equal(v2b.changes, v2.changes, sizeof v2.changes);
  assert_true(fx_slice_eq(v2b.context, v2.context));
  qraft_wire_conf_change_v2_release(&v2b);
}

static void unknown_fields_are_skipped(void **st) {
  (void)st;
  qraft_message m = fx_heartbeat(2);
  uint8_t buf[256];
  size_t n = 0;
  assert_int_equal(qraft_wire_message_encode(&m, buf, sizeof buf, &n), 0);
  /* field 100 varint, 101 fixed64, 102 bytes, 103 fixed32, 104 a group
   * holding a nested group 105 and a varint. */
  uint8_t *p = buf + n;
  p += qraft_varint_encode(p, (100u << 3) | 0);
  p += qraft_varint_encode(p, 123456789);
  p += qraft_varint_encode(p, (101u << 3) | 1);
  memset(p, 0xab, 8), p += 8;
  p += qraft_varint_encode(p, (102u << 3) | 2);
  *p++ = 3, memcpy(p, "xyz", 3), p += 3;
  p += qraft_varint_encode(p, (103u << 3) | 5);
  memset(p, 0xcd, 4), p += 4;
  p += qraft_varint_encode(p, (104u << 3) | 3);
  p += qraft_varint_encode(p, (105u << 3) | 3);
  p += qraft_varint_encode(p, (1u << 3) | 0);
  *p++ = 7;
  p += qraft_varint_encode(p, (105u << 3) | 4);
  p += qraft_varint_encode(p, (104u << 3) | 4);
  /* and a known field after them */
  *p++ = 0x30, *p++ = 0x09; /* index = 9 */
  qraft_wire_batch *batch = NULL;
  assert_int_equal(qraft_wire_message_decode(NULL, buf, (size_t)(p - buf),
                                             NULL, &batch, NULL), 0);
  m.index = 9;
  assert_true(fx_message_eq(&m, &batch->msgs[0]));
  qraft_wire_batch_free(batch);
}

static void alarms_ride_as_field_100(void **st) {
  (void)st;
  /* qraft's own field: absent when 0 (a heartbeat's bytes are eraftpb's),
   * a varint under tag 100 otherwise, read back; a decoder that does not
   * know it skips it (unknown_fields_are_skipped). */
  qraft_message m;
  memset(&m, 0, sizeof m);
  m.type = QRAFT_MSG_HEARTBEAT_RESPONSE;
  m.to = 1;
  m.from = 2;
  m.term = 3;
  size_t plain = qraft_wire_message_size(&m);
  m.alarms = 1;
  size_t with = qraft_wire_message_size(&m);
  assert_int_equal(with, plain + 3);
  uint8_t buf[64];
  size_t n = 0;
  assert_int_equal(qraft_wire_message_encode(&m, buf, sizeof buf, &n), 0);
  assert_int_equal(n, with);
  assert_int_equal(buf[n - 3], 0xa0); /* (100 << 3) | 0 as a varint */
  assert_int_equal(buf[n - 2], 0x06);
  assert_int_equal(buf[n - 1], 0x01);
  qraft_wire_batch *batch = NULL;
  assert_int_equal(qraft_wire_message_decode(NULL, buf, n, NULL, &batch, NULL),
                   0);
  assert_int_equal(batch->msgs[0].alarms, 1);
  assert_int_equal(batch->msgs[0].term, 3);
  qraft_wire_batch_free(batch);
  /* the wrong wire type is malformed, with the field's name */
  uint8_t bad[] = {0xa2, 0x06, 0x00};
  qraft_err err;
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_wire_message_decode(NULL, bad, sizeof bad, NULL,
                                             &batch, &err),
                   QRAFT_EMALFORMED);
  assert_non_null(strstr(err.frames[0].msg, "alarms"));
}

static void protobuf_merge_rules_hold(void **st) {
  (void)st;
  /* term twice: the last wins. voters packed, then unpacked: appended.
   * snapshot twice: merged. */
  uint8_t buf[] = {
      0x20, 0x05, 0x20, 0x06,                   /* term 5, term 6 */
      0x4a, 0x08, 0x12, 0x06, 0x0a, 0x04,       /* snapshot{metadata{cs{ */
      0x0a, 0x02, 0x01, 0x02,                   /*   voters [1,2] }}} */
      0x4a, 0x06, 0x12, 0x04, 0x0a, 0x02, 0x08, 0x03, /* voters 3 */
  };
  qraft_wire_batch *batch = NULL;
  qraft_err err;
  qraft_err_init(&err, 0);
  int rc = qraft_wire_message_decode(NULL, buf, sizeof buf, NULL, &batch, &err);
  if (rc != 0) {
    qraft_err_print(&err, stderr);
  }
  assert_int_equal(rc, 0);
  const qraft_message *m = &batch->msgs[0];
  assert_int_equal(m->term, 6);
  assert_non_null(m->snapshot);
  const qraft_conf_state *cs = &m->snapshot->metadata.conf_state;
  assert_int_equal(cs->voters_n, 3);
  assert_int_equal(cs->voters[2], 3);
  qraft_wire_batch_free(batch);
}

/* Decoding `buf` fails with `code`, and the context mentions `what`. */
static void expect_message_error(const uint8_t *buf, size_t len, int code,
                                 const char *what) {
  qraft_wire_batch *batch = (qraft_wire_batch *)1;
  qraft_err err;
  qraft_err_init(&err, 0);
  int rc = qraft_wire_message_decode(NULL, buf, len, NULL, &batch, &err);
  if (rc != code) {
    qraft_err_print(&err, stderr);
  }
  assert_int_equal(rc, code);
  assert_null(batch);
  assert_int_equal(err.code, code);
  err_contains(&err, what);
}

static void bad_input_is_named_with_field_and_offset(void **st) {
  (void)st;
  /* unknown message type 19 */
  expect_message_error((const uint8_t[]){0x08, 0x13}, 2, QRAFT_EMALFORMED,
                       "Message.msg_type (field 1) at offset 0: unknown enum");
  /* term (field 4) as length-delimited */
  expect_message_error((const uint8_t[]){0x08, 0x01, 0x22, 0x00}, 4,
                       QRAFT_EMALFORMED,
                       "Message.term (field 4) at offset 2: wire type 2");
  /* context length past the end */
  expect_message_error((const uint8_t[]){0x62, 0x05, 'a', 'b'}, 4,
                       QRAFT_ETRUNCATED, "Message.context (field 12) at offset 0: length 5");
  /* an 11-byte varint */
  expect_message_error((const uint8_t[]){0x10, 0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
                       12, QRAFT_EMALFORMED, "longer than 10 bytes");
  /* input ends inside a varint */
  expect_message_error((const uint8_t[]){0x10, 0xff}, 2, QRAFT_ETRUNCATED,
                       "varint runs past the end of the input");
  /* field number 0 */
  expect_message_error((const uint8_t[]){0x00, 0x01}, 2, QRAFT_EMALFORMED,
                       "field number 0");
  /* an entry whose inner length overflows the entry */
  expect_message_error((const uint8_t[]){0x3a, 0x03, 0x22, 0x09, 'x', 0x08, 0x01},
                       7, QRAFT_EMALFORMED, "Entry.data (field 4) at offset 2");
  /* unknown entry type, and the context says which entry */
  expect_message_error((const uint8_t[]){0x3a, 0x00, 0x3a, 0x02, 0x08, 0x07}, 6,
                       QRAFT_EMALFORMED, "in Message.entries[1] at offset 2");
  /* unmatched end-group */
  expect_message_error((const uint8_t[]){0xa4, 0x06}, 2, QRAFT_EMALFORMED,
                       "wire type 4");
  /* group never closed */
  expect_message_error((const uint8_t[]){0xa3, 0x06, 0x08, 0x01}, 4,
                       QRAFT_ETRUNCATED, "not closed");
  /* fixed64 cut short */
  expect_message_error((const uint8_t[]){0xa1, 0x06, 1, 2, 3}, 5,
                       QRAFT_ETRUNCATED, "8-byte value");
  /* groups nested too deep */
  uint8_t deep[2 * 40];
  for (int i = 0; i < 40; i++) {
    deep[2 * i] = 0xa3, deep[2 * i + 1] = 0x06;
  }
  expect_message_error(deep, sizeof deep, QRAFT_EMALFORMED, "deeper than 32");
  /* wire type 7 */
  expect_message_error((const uint8_t[]){0xa7, 0x06}, 2, QRAFT_EMALFORMED,
                       "wire type 7");
}

static void conf_lists_and_entries_are_limited(void **st) {
  (void)st;
  /* 33 voters, packed, in a snapshot's metadata */
  uint8_t buf[128];
  uint8_t *p = buf;
  *p++ = 0x4a, *p++ = 39;          /* snapshot */
  *p++ = 0x12, *p++ = 37;          /* metadata */
  *p++ = 0x0a, *p++ = 35;          /* conf_state */
  *p++ = 0x0a, *p++ = 33;          /* voters, packed */
  for (int i = 0; i < 33; i++) {
    *p++ = (uint8_t)(i + 1);
  }
  expect_message_error(buf, (size_t)(p - buf), QRAFT_ELIMIT, "more than 32 ids");
  qraft_conf_state cs;
  assert_int_equal(qraft_wire_conf_state_decode(buf + 6, 35, &cs, NULL),
                   QRAFT_ELIMIT);
  buf[7] = 32; /* the same list, one id shorter */
  assert_int_equal(qraft_wire_conf_state_decode(buf + 6, 34, &cs, NULL), 0);
  assert_int_equal(cs.voters_n, 32);

  /* more entries than the limit allows */
  uint8_t many[10];
  for (int i = 0; i < 5; i++) {
    many[2 * i] = 0x3a, many[2 * i + 1] = 0;
  }
  qraft_wire_limits lim = QRAFT_WIRE_LIMITS_DEFAULT;
  lim.frame_entries_max = 4;
  qraft_wire_batch *batch = NULL;
  assert_int_equal(qraft_wire_message_decode(NULL, many, 10, &lim, &batch, NULL),
                   QRAFT_ELIMIT);
  lim.frame_entries_max = 5;
  assert_int_equal(qraft_wire_message_decode(NULL, many, 10, &lim, &batch, NULL), 0);
  assert_int_equal(batch->msgs[0].entries_n, 5);
  qraft_wire_batch_free(batch);
  lim.frame_bytes_max = 9;
  assert_int_equal(qraft_wire_message_decode(NULL, many, 10, &lim, &batch, NULL),
                   QRAFT_ELIMIT);

  /* ConfChangeV2 with 33 changes */
  uint8_t v2[70];
  for (int i = 0; i < 33; i++) {
    v2[2 * i] = 0x12, v2[2 * i + 1] = 0;
  }
  qraft_conf_change_v2 cc;
  assert_int_equal(qraft_wire_conf_change_v2_decode(NULL, v2, 66, &cc, NULL),
                   QRAFT_ELIMIT);
  assert_int_equal(qraft_wire_conf_change_v2_decode(NULL, v2, 64, &cc, NULL), 0);
  assert_int_equal(cc.changes_n, 32);
}

static void every_truncation_fails_cleanly(void **st) {
  (void)st;
  qraft_message m = fx_full_message();
  qraft_buf *full = encode_message(&m);
  for (size_t len = 0; len < full->len; len++) {
    /* A copy of exactly `len` bytes, so ASan sees any over-read. */
    qraft_buf *b = qraft_buf_copy(full->data, len);
    qraft_wire_batch *batch = NULL;
    int rc = qraft_wire_message_decode(b, b->data, len, NULL, &batch, NULL);
    /* A prefix that ends between fields is a valid, shorter message. */
    if (rc == 0) {
      qraft_wire_batch_free(batch);
    } else {
      assert_true(rc == QRAFT_ETRUNCATED || rc == QRAFT_EMALFORMED);
      assert_null(batch);
    }
    assert_int_equal(qraft_buf_refs(b), 1); /* nothing leaked a reference */
    qraft_buf_unref(b);
  }
  qraft_buf_unref(full);
}

static void every_single_byte_corruption_is_safe(void **st) {
  (void)st;
  qraft_message m = fx_full_message();
  qraft_buf *full = encode_message(&m);
  for (size_t i = 0; i < full->len; i++) {
    for (int bit = 0; bit < 8; bit++) {
      qraft_buf *b = qraft_buf_copy(full->data, full->len);
      b->data[i] ^= (uint8_t)(1u << bit);
      qraft_wire_batch *batch = NULL;
      if (qraft_wire_message_decode(b, b->data, b->len, NULL, &batch, NULL) == 0) {
        qraft_wire_batch_free(batch);
      }
      assert_int_equal(qraft_buf_refs(b), 1);
      qraft_buf_unref(b);
    }
  }
  qraft_buf_unref(full);
}

static void empty_input_is_an_empty_message(void **st) {
  (void)st;
  qraft_wire_batch *batch = NULL;
  assert_int_equal(qraft_wire_message_decode(NULL, NULL, 0, NULL, &batch, NULL), 0);
  qraft_message zero = {0};
  assert_true(fx_message_eq(&zero, &batch->msgs[0]));
  assert_null(batch->msgs[0].snapshot);
  qraft_wire_batch_free(batch);
  qraft_hard_state hs;
  assert_int_equal(qraft_wire_hard_state_decode(NULL, 0, &hs, NULL), 0);
  assert_int_equal(qraft_wire_frame_decode(NULL, NULL, 0, NULL, &batch, NULL),
                   QRAFT_ETRUNCATED);
  qraft_wire_preamble pre;
  assert_int_equal(qraft_wire_preamble_decode(NULL, 0, 0, &pre, NULL),
                   QRAFT_ETRUNCATED);
  size_t n = 99;
  assert_int_equal(qraft_wire_message_encode(&zero, NULL, 0, &n), 0);
  assert_int_equal(n, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(full_message_round_trips_without_copying),
      cmocka_unit_test(heartbeat_is_canonical_protobuf),
      cmocka_unit_test(every_other_type_round_trips),
      cmocka_unit_test(unknown_fields_are_skipped),
      cmocka_unit_test(alarms_ride_as_field_100),
      cmocka_unit_test(protobuf_merge_rules_hold),
      cmocka_unit_test(bad_input_is_named_with_field_and_offset),
      cmocka_unit_test(conf_lists_and_entries_are_limited),
      cmocka_unit_test(every_truncation_fails_cleanly),
      cmocka_unit_test(every_single_byte_corruption_is_safe),
      cmocka_unit_test(empty_input_is_an_empty_message),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

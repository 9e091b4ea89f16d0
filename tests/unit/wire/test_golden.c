/* The golden file: qraft's encoding of a fixed set of values must stay byte
 * for byte what tests/unit/wire/golden/golden.bin holds (and what protoc
 * decodes into golden.txt, checked by the golden_protoc test), and decoding
 * the file must give the values back. To regenerate after a deliberate
 * change: QRAFT_GOLDEN_WRITE=tests/unit/wire/golden/golden.bin
 * build/asan/tests/unit_wire_golden, then the protoc command in
 * CMakeLists.txt to rewrite golden.txt. */
#include "cmocka_all.h"
#include "wire_fixtures.h"

#include <qraft/varint.h>
#include <qraft/wire.h>

#include <stdio.h>
#include <stdlib.h>

static const char *golden_path;

typedef struct out {
  uint8_t data[16384];
  size_t len;
} out;

static void put_field(out *o, uint32_t field, const uint8_t *bytes, size_t n) {
  o->len += qraft_varint_encode(o->data + o->len, (uint64_t)field << 3 | 2);
  o->len += qraft_varint_encode(o->data + o->len, n);
  memcpy(o->data + o->len, bytes, n);
  o->len += n;
}

/* One message of each type, with fields that tell them apart. */
static qraft_message typed_message(int t) {
  return (qraft_message){.type = (qraft_msg_type)t, .to = (qraft_id)t + 1,
                         .from = 1, .term = 1000 + (uint64_t)t,
                         .index = (uint64_t)t * 7, .commit = (uint64_t)t};
}

static void golden_values(out *o) {
  uint8_t buf[4096];
  size_t n = 0;
  for (int t = 0; t <= QRAFT_MSG_TYPE_MAX; t++) {
    qraft_message m = typed_message(t);
    assert_int_equal(qraft_wire_message_encode(&m, buf, sizeof buf, &n), 0);
    put_field(o, 1, buf, n);
  }
  qraft_message full = fx_full_message();
  assert_int_equal(qraft_wire_message_encode(&full, buf, sizeof buf, &n), 0);
  put_field(o, 1, buf, n);
  qraft_snapshot empty = {0};
  qraft_message snap = {.type = QRAFT_MSG_SNAPSHOT, .to = 3, .snapshot = &empty};
  assert_int_equal(qraft_wire_message_encode(&snap, buf, sizeof buf, &n), 0);
  put_field(o, 1, buf, n);
  for (size_t i = 0; i < full.entries_n; i++) {
    assert_int_equal(qraft_wire_entry_encode(&full.entries[i], buf, sizeof buf, &n), 0);
    put_field(o, 2, buf, n);
  }
  qraft_hard_state hs = {.term = 8, .vote = 2, .commit = 39};
  assert_int_equal(qraft_wire_hard_state_encode(&hs, buf, sizeof buf, &n), 0);
  put_field(o, 3, buf, n);
  assert_int_equal(qraft_wire_conf_state_encode(&full.snapshot->metadata.conf_state,
                                                buf, sizeof buf, &n), 0);
  put_field(o, 4, buf, n);
  qraft_conf_change cc = {.id = 5, .change_type = QRAFT_CONF_REMOVE_NODE,
                          .node_id = 3, .context = fx_str("decommission")};
  assert_int_equal(qraft_wire_conf_change_encode(&cc, buf, sizeof buf, &n), 0);
  put_field(o, 5, buf, n);
  qraft_conf_change_v2 v2 = {.transition = QRAFT_CONF_TRANSITION_IMPLICIT,
                             .changes_n = 3,
                             .changes = {{QRAFT_CONF_ADD_NODE, 4},
                                         {QRAFT_CONF_ADD_LEARNER_NODE, 5},
                                         {QRAFT_CONF_REMOVE_NODE, 1}},
                             .context = fx_str("joint")};
  assert_int_equal(qraft_wire_conf_change_v2_encode(&v2, buf, sizeof buf, &n), 0);
  put_field(o, 6, buf, n);
  assert_int_equal(qraft_wire_conf_change_single_encode(&v2.changes[1], buf,
                                                        sizeof buf, &n), 0);
  put_field(o, 7, buf, n);
  assert_int_equal(qraft_wire_snapshot_encode(full.snapshot, buf, sizeof buf, &n), 0);
  put_field(o, 8, buf, n);
  assert_int_equal(qraft_wire_snapshot_meta_encode(&full.snapshot->metadata, buf,
                                                   sizeof buf, &n), 0);
  put_field(o, 9, buf, n);
  qraft_message batch[2] = {typed_message(QRAFT_MSG_HEARTBEAT), full};
  assert_int_equal(qraft_wire_frame_encode(42, batch, 2, NULL, buf, sizeof buf,
                                           &n, NULL), 0);
  put_field(o, 10, buf + QRAFT_WIRE_FRAME_HEADER_BYTES,
            n - QRAFT_WIRE_FRAME_HEADER_BYTES);
}

static void encoding_matches_the_golden_file(void **st) {
  (void)st;
  static out o;
  golden_values(&o);
  const char *write = getenv("QRAFT_GOLDEN_WRITE");
  if (write != NULL) {
    FILE *f = fopen(write, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(o.data, 1, o.len, f), o.len);
    fclose(f);
    return;
  }
  FILE *f = fopen(golden_path, "rb");
  assert_non_null(f);
  static uint8_t file[sizeof o.data];
  size_t n = fread(file, 1, sizeof file, f);
  fclose(f);
  assert_int_equal(n, o.len);
  assert_memory_equal(file, o.data, n);
}

/* Reads a field's bytes (tag and length) at *p. */
static void next_field(const uint8_t **p, uint32_t *field, const uint8_t **val,
                       size_t *len) {
  uint64_t tag = 0, n = 0;
  size_t used = 0;
  assert_int_equal(qraft_varint_decode(*p, 10, &tag, &used), 0);
  *p += used;
  assert_int_equal(qraft_varint_decode(*p, 10, &n, &used), 0);
  *p += used;
  *field = (uint32_t)(tag >> 3);
  *val = *p;
  *len = (size_t)n;
  *p += n;
}

static void golden_file_decodes_to_the_values(void **st) {
  (void)st;
  static out o;
  golden_values(&o);
  const uint8_t *p = o.data;
  const uint8_t *end = o.data + o.len;
  int msgs = 0;
  qraft_message full = fx_full_message();
  while (p < end) {
    uint32_t field = 0;
    const uint8_t *val = NULL;
    size_t len = 0;
    next_field(&p, &field, &val, &len);
    qraft_wire_batch *batch = NULL;
    if (field == 1) {
      assert_int_equal(qraft_wire_message_decode(NULL, val, len, NULL, &batch,
                                                 NULL), 0);
      if (msgs <= QRAFT_MSG_TYPE_MAX) {
        qraft_message want = typed_message(msgs);
        assert_true(fx_message_eq(&want, &batch->msgs[0]));
      } else if (msgs == QRAFT_MSG_TYPE_MAX + 1) {
        assert_true(fx_message_eq(&full, &batch->msgs[0]));
      } else {
        assert_non_null(batch->msgs[0].snapshot); /* present, though empty */
      }
      msgs++;
      qraft_wire_batch_free(batch);
    } else if (field == 10) {
      uint8_t frame[4096];
      frame[0] = (uint8_t)len, frame[1] = (uint8_t)(len >> 8);
      frame[2] = frame[3] = 0;
      memcpy(frame + 4, val, len);
      assert_int_equal(qraft_wire_frame_decode(NULL, frame, len + 4, NULL,
                                               &batch, NULL), 0);
      assert_int_equal(batch->group_id, 42);
      assert_true(fx_message_eq(&full, &batch->msgs[1]));
      qraft_wire_batch_free(batch);
    } else if (field == 6) {
      qraft_conf_change_v2 v2;
      assert_int_equal(qraft_wire_conf_change_v2_decode(NULL, val, len, &v2, NULL), 0);
      assert_int_equal(v2.changes_n, 3);
      assert_int_equal(v2.changes[2].change_type, QRAFT_CONF_REMOVE_NODE);
    }
  }
  assert_int_equal(msgs, QRAFT_MSG_TYPE_MAX + 3);
}

int main(int argc, char **argv) {
  assert_true(argc == 2);
  golden_path = argv[1];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(encoding_matches_the_golden_file),
      cmocka_unit_test(golden_file_decodes_to_the_values),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* libFuzzer target: every eraftpb decoder on the same bytes. Whatever
 * decodes must re-encode to bytes that decode to the same value, hold
 * references only while decoded, and fail only with the documented codes. */
#include "unit/wire/wire_fixtures.h"

#include <qraft/assert.h>
#include <qraft/wire.h>

#include <stdlib.h>

static void check_code(int rc) {
  QRAFT_ASSERTF(rc == QRAFT_ETRUNCATED || rc == QRAFT_EMALFORMED ||
                    rc == QRAFT_ELIMIT,
                "unexpected code %d", rc);
}

static void message(qraft_buf *b) {
  qraft_wire_batch *batch = NULL;
  qraft_err err;
  qraft_err_init(&err, 0);
  int rc = qraft_wire_message_decode(b, b->data, b->len, NULL, &batch, &err);
  if (rc != 0) {
    check_code(rc);
    QRAFT_ASSERT(batch == NULL && err.code == rc && err.frames_n > 0);
    return;
  }
  const qraft_message *m = &batch->msgs[0];
  size_t n = qraft_wire_message_size(m);
  uint8_t *out = malloc(n + 1);
  size_t written = 0;
  QRAFT_ASSERT(qraft_wire_message_encode(m, out, n, &written) == 0);
  QRAFT_ASSERT(written == n);
  qraft_wire_batch *again = NULL;
  QRAFT_ASSERT(qraft_wire_message_decode(NULL, out, n, NULL, &again, NULL) == 0);
  QRAFT_ASSERT(fx_message_eq(m, &again->msgs[0]));
  qraft_wire_batch_free(again);
  qraft_wire_batch_free(batch);
  free(out);
}

static void others(qraft_buf *b) {
  uint8_t out[8192];
  size_t n = 0;
  int rc;
  qraft_entry e;
  if ((rc = qraft_wire_entry_decode(b, b->data, b->len, &e, NULL)) == 0) {
    qraft_entry e2;
    if (qraft_wire_entry_encode(&e, out, sizeof out, &n) == 0) {
      QRAFT_ASSERT(qraft_wire_entry_decode(NULL, out, n, &e2, NULL) == 0);
      QRAFT_ASSERT(fx_entry_eq(&e, &e2));
    }
    qraft_wire_entry_release(&e);
  } else {
    check_code(rc);
  }
  qraft_snapshot s;
  if ((rc = qraft_wire_snapshot_decode(b, b->data, b->len, &s, NULL)) == 0) {
    qraft_snapshot s2;
    if (qraft_wire_snapshot_encode(&s, out, sizeof out, &n) == 0) {
      QRAFT_ASSERT(qraft_wire_snapshot_decode(NULL, out, n, &s2, NULL) == 0);
      QRAFT_ASSERT(fx_snapshot_eq(&s, &s2));
    }
    qraft_wire_snapshot_release(&s);
  } else {
    check_code(rc);
  }
  qraft_hard_state hs;
  rc = qraft_wire_hard_state_decode(b->data, b->len, &hs, NULL);
  if (rc != 0) {
    check_code(rc);
  }
  qraft_conf_change cc;
  if ((rc = qraft_wire_conf_change_decode(b, b->data, b->len, &cc, NULL)) == 0) {
    qraft_wire_conf_change_release(&cc);
  } else {
    check_code(rc);
  }
  qraft_conf_change_single single;
  rc = qraft_wire_conf_change_single_decode(b->data, b->len, &single, NULL);
  if (rc != 0) {
    check_code(rc);
  }
  static qraft_conf_change_v2 v2, v2b;
  if ((rc = qraft_wire_conf_change_v2_decode(b, b->data, b->len, &v2, NULL)) == 0) {
    if (qraft_wire_conf_change_v2_encode(&v2, out, sizeof out, &n) == 0) {
      QRAFT_ASSERT(qraft_wire_conf_change_v2_decode(NULL, out, n, &v2b, NULL) == 0);
      QRAFT_ASSERT(v2b.changes_n == v2.changes_n &&
                   memcmp(v2b.changes, v2.changes,
                          v2.changes_n * sizeof v2.changes[0]) == 0 &&
                   fx_slice_eq(v2.context, v2b.context));
    }
    qraft_wire_conf_change_v2_release(&v2);
  } else {
    check_code(rc);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size copy: ASan catches any read past the end. */
  qraft_buf *b = qraft_buf_copy(data, size);
  QRAFT_ASSERT(b != NULL);
  message(b);
  others(b);
  QRAFT_ASSERT(qraft_buf_refs(b) == 1);
  qraft_buf_unref(b);
  return 0;
}

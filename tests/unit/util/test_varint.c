/* Varints round-trip at every boundary and reject overlong or truncated
 * input. */
#include "cmocka_all.h"

#include <qraft/error.h>
#include <qraft/varint.h>

static void round_trips_at_every_7_bit_boundary(void **st) {
  (void)st;
  for (int bits = 0; bits <= 64; bits++) {
    uint64_t base = bits == 64 ? UINT64_MAX : ((uint64_t)1 << bits);
    uint64_t cands[] = {base - 1, base, base + 1};
    for (int c = 0; c < 3; c++) {
      uint64_t v = cands[c];
      uint8_t buf[QRAFT_VARINT_MAX + 4];
      size_t n = qraft_varint_encode(buf, v);
      assert_int_equal(n, qraft_varint_size(v));
      uint64_t back = 0;
      size_t used = 0;
      assert_int_equal(qraft_varint_decode(buf, n, &back, &used), 0);
      assert_int_equal(back, v);
      assert_int_equal(used, n);
      /* every shorter prefix is truncated */
      for (size_t k = 0; k < n; k++) {
        assert_int_equal(qraft_varint_decode(buf, k, &back, &used),
                         QRAFT_ETRUNCATED);
      }
    }
  }
}

static void sizes_match_protobuf(void **st) {
  (void)st;
  assert_int_equal(qraft_varint_size(0), 1);
  assert_int_equal(qraft_varint_size(127), 1);
  assert_int_equal(qraft_varint_size(128), 2);
  assert_int_equal(qraft_varint_size(16383), 2);
  assert_int_equal(qraft_varint_size(16384), 3);
  assert_int_equal(qraft_varint_size(UINT64_MAX), 10);
  uint8_t buf[10];
  assert_int_equal(qraft_varint_encode(buf, 300), 2);
  assert_int_equal(buf[0], 0xac);
  assert_int_equal(buf[1], 0x02);
}

static void rejects_overlong_and_overflowing_input(void **st) {
  (void)st;
  uint64_t v;
  size_t used;
  /* 11 bytes with continuation bits */
  uint8_t eleven[11] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                        0x80, 0x80, 0x80, 0x80, 0x00};
  assert_int_equal(qraft_varint_decode(eleven, 11, &v, &used),
                   QRAFT_EMALFORMED);
  /* 10th byte with a value above bit 63 */
  uint8_t over[10] = {0xff, 0xff, 0xff, 0xff, 0xff,
                      0xff, 0xff, 0xff, 0xff, 0x02};
  assert_int_equal(qraft_varint_decode(over, 10, &v, &used), QRAFT_EMALFORMED);
  /* 10th byte of exactly 1 is UINT64_MAX */
  over[9] = 0x01;
  assert_int_equal(qraft_varint_decode(over, 10, &v, &used), 0);
  assert_int_equal(v, UINT64_MAX);
  /* non-minimal but within 10 bytes is accepted, as protobuf does */
  uint8_t nonmin[3] = {0x81, 0x80, 0x00};
  assert_int_equal(qraft_varint_decode(nonmin, 3, &v, &used), 0);
  assert_int_equal(v, 1);
  assert_int_equal(used, 3);
  assert_int_equal(qraft_varint_decode(nonmin, 0, &v, &used), QRAFT_ETRUNCATED);
}

static void zigzag_round_trips(void **st) {
  (void)st;
  int64_t vals[] = {0, -1, 1, -2, INT64_MAX, INT64_MIN, 12345, -12345};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    assert_int_equal(qraft_zigzag_decode(qraft_zigzag_encode(vals[i])),
                     vals[i]);
  }
  assert_int_equal(qraft_zigzag_encode(-1), 1);
  assert_int_equal(qraft_zigzag_encode(1), 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(round_trips_at_every_7_bit_boundary),
      cmocka_unit_test(sizes_match_protobuf),
      cmocka_unit_test(rejects_overlong_and_overflowing_input),
      cmocka_unit_test(zigzag_round_trips),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

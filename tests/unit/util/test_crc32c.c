/* CRC-32C: standard check values, and hardware and table paths agree. */
#include "cmocka_all.h"

#include <qraft/crc32c.h>
#include <qraft/prng.h>

#include <string.h>

static void check_values_match_the_standard(void **st) {
  (void)st;
  assert_int_equal(qraft_crc32c(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(qraft__crc32c_sw(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(qraft_crc32c(0, "", 0), 0);
  /* RFC 3720 B.4: 32 bytes of zeros, and of 0xff */
  uint8_t z[32] = {0};
  assert_int_equal(qraft_crc32c(0, z, 32), 0x8A9136AAu);
  memset(z, 0xff, 32);
  assert_int_equal(qraft_crc32c(0, z, 32), 0x62A8AB43u);
}

static void incremental_equals_whole_and_paths_agree(void **st) {
  (void)st;
  uint8_t buf[4099];
  qraft_prng p;
  qraft_prng_init(&p, 3);
  for (size_t i = 0; i < sizeof buf; i++) {
    buf[i] = (uint8_t)qraft_prng_next(&p);
  }
  for (size_t len = 0; len < sizeof buf; len += 37) {
    uint32_t whole = qraft_crc32c(0, buf, len);
    assert_int_equal(whole, qraft__crc32c_sw(0, buf, len));
    size_t cut = len / 3;
    uint32_t part = qraft_crc32c(0, buf, cut);
    part = qraft_crc32c(part, buf + cut, len - cut);
    assert_int_equal(whole, part);
    /* unaligned start */
    if (len > 1) {
      assert_int_equal(qraft_crc32c(0, buf + 1, len - 1),
                       qraft__crc32c_sw(0, buf + 1, len - 1));
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(check_values_match_the_standard),
      cmocka_unit_test(incremental_equals_whole_and_paths_agree),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

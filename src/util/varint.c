/*
 * varint.c: strict varint decoding. Bounds-checked on every byte.
 */
#include <qraft/varint.h>

#include <qraft/error.h>

int qraft_varint_decode(const uint8_t *p, size_t len, uint64_t *out,
                        size_t *consumed) {
  uint64_t v = 0;
  for (size_t i = 0; i < QRAFT_VARINT_MAX; i++) {
    if (i >= len) {
      return QRAFT_ETRUNCATED;
    }
    uint8_t b = p[i];
    if (i == QRAFT_VARINT_MAX - 1 && b > 1) {
      /* the 10th byte carries only bit 63 */
      return QRAFT_EMALFORMED;
    }
    v |= (uint64_t)(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) {
      *out = v;
      *consumed = i + 1;
      return 0;
    }
  }
  return QRAFT_EMALFORMED;
}

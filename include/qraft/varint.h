/*
 * qraft/varint.h: base-128 varints as protobuf writes them (least significant
 * group first, high bit set on every byte but the last), at most 10 bytes for
 * a 64-bit value.
 */
#ifndef QRAFT_VARINT_H
#define QRAFT_VARINT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QRAFT_VARINT_MAX 10

/* Bytes needed to encode v (1..10). */
static inline size_t qraft_varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

/* Writes v at out (room for QRAFT_VARINT_MAX bytes); returns bytes written. */
static inline size_t qraft_varint_encode(uint8_t *out, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  out[n++] = (uint8_t)v;
  return n;
}

/*
 * Reads a varint from the `len` bytes at `p` into *out and the number of
 * bytes it took into *consumed.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ETRUNCATED  the input ends inside the varint;
 *   QRAFT_EMALFORMED  more than 10 bytes, or a 10th byte that overflows 64 bits.
 * Non-minimal encodings (trailing 0x80 groups) within 10 bytes are accepted,
 * as protobuf parsers do.
 */
int qraft_varint_decode(const uint8_t *p, size_t len, uint64_t *out,
                        size_t *consumed);

/* ZigZag mapping for signed values (sint64). */
static inline uint64_t qraft_zigzag_encode(int64_t v) {
  return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}
static inline int64_t qraft_zigzag_decode(uint64_t v) {
  return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

#ifdef __cplusplus
}
#endif
#endif

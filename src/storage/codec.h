/*
 * codec.h: little-endian fixed-width fields and the binary form of a
 * configuration, as the WAL and snapshot files store them. No I/O.
 */
#ifndef QRAFT_STORAGE_CODEC_H
#define QRAFT_STORAGE_CODEC_H

#include <qraft/types.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline void qraft__put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) {
    p[i] = (uint8_t)(v >> (8 * i));
  }
}
static inline void qraft__put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) {
    p[i] = (uint8_t)(v >> (8 * i));
  }
}
static inline uint32_t qraft__get32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    v |= (uint32_t)p[i] << (8 * i);
  }
  return v;
}
static inline uint64_t qraft__get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) {
    v |= (uint64_t)p[i] << (8 * i);
  }
  return v;
}

/* Encoded size of a configuration: 4 counts, auto_leave, 4 bytes of zero
 * padding, then the ids. */
static inline size_t qraft__conf_size(const qraft_conf_state *c) {
  return 24 + 8 * ((size_t)c->voters_n + c->learners_n + c->voters_outgoing_n +
                   c->learners_next_n);
}
/* The most bytes qraft__conf_encode writes. */
#define QRAFT__CONF_SIZE_MAX (24 + 8 * 4 * QRAFT_CONF_NODES_MAX)

/* Writes qraft__conf_size(c) bytes at p. */
size_t qraft__conf_encode(uint8_t *p, const qraft_conf_state *c);

/* Reads a configuration from `len` bytes; returns the bytes used, or 0 if
 * they do not hold a valid one. */
size_t qraft__conf_decode(const uint8_t *p, size_t len, qraft_conf_state *c);

#endif

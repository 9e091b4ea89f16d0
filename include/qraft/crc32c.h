/*
 * qraft/crc32c.h: CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected),
 * the checksum of the write-ahead log, snapshots and frames. Uses the SSE4.2
 * crc32 instruction when the CPU has it, a slicing-by-8 table otherwise; both
 * give the same values.
 */
#ifndef QRAFT_CRC32C_H
#define QRAFT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Extends `crc` (0 to start) over `len` bytes at `data`:
 *   qraft_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t qraft_crc32c(uint32_t crc, const void *data, size_t len);

/* The portable table implementation (exposed for tests). */
uint32_t qraft__crc32c_sw(uint32_t crc, const void *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif

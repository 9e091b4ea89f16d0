/*
 * crc32c.c: CRC-32C with a hardware path (x86-64 SSE4.2) and a portable
 * slicing-by-8 path whose tables are built once, thread-safely, on first use.
 */
#include <qraft/crc32c.h>

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#define CRC32C_POLY_REFLECTED 0x82F63B78u

static uint32_t crc32c_table[8][256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;
static bool crc32c_have_hw;

static void crc32c_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) {
      c = (c & 1) ? (c >> 1) ^ CRC32C_POLY_REFLECTED : c >> 1;
    }
    crc32c_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = crc32c_table[0][i];
    for (int t = 1; t < 8; t++) {
      c = crc32c_table[0][c & 0xff] ^ (c >> 8);
      crc32c_table[t][i] = c;
    }
  }
#if defined(__x86_64__)
  __builtin_cpu_init();
  crc32c_have_hw = __builtin_cpu_supports("sse4.2");
#endif
}

uint32_t qraft__crc32c_sw(uint32_t crc, const void *data, size_t len) {
  pthread_once(&crc32c_once, crc32c_init);
  const uint8_t *p = data;
  crc = ~crc;
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    w ^= crc; /* little-endian: the low 32 bits are the first 4 bytes */
    crc = crc32c_table[7][w & 0xff] ^ crc32c_table[6][(w >> 8) & 0xff] ^
          crc32c_table[5][(w >> 16) & 0xff] ^ crc32c_table[4][(w >> 24) & 0xff] ^
          crc32c_table[3][(w >> 32) & 0xff] ^ crc32c_table[2][(w >> 40) & 0xff] ^
          crc32c_table[1][(w >> 48) & 0xff] ^ crc32c_table[0][w >> 56];
    p += 8;
    len -= 8;
  }
  while (len-- > 0) {
    crc = crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  }
  return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t
crc32c_hw(uint32_t crc, const void *data, size_t len) {
  const uint8_t *p = data;
  uint64_t c = ~crc;
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    len -= 8;
  }
  uint32_t c32 = (uint32_t)c;
  while (len-- > 0) {
    c32 = __builtin_ia32_crc32qi(c32, *p++);
  }
  return ~c32;
}
#endif

uint32_t qraft_crc32c(uint32_t crc, const void *data, size_t len) {
  pthread_once(&crc32c_once, crc32c_init);
#if defined(__x86_64__)
  if (crc32c_have_hw) {
    return crc32c_hw(crc, data, len);
  }
#endif
  return qraft__crc32c_sw(crc, data, len);
}

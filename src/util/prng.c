/*
 * prng.c: xoshiro256** seeded by splitmix64. See qraft/prng.h.
 */
#include <qraft/prng.h>

#include <qraft/assert.h>

uint64_t qraft_splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void qraft_prng_init(qraft_prng *p, uint64_t seed) {
  uint64_t sm = seed;
  for (int i = 0; i < 4; i++) {
    p->s[i] = qraft_splitmix64(&sm);
  }
}

static inline uint64_t prng_rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

uint64_t qraft_prng_next(qraft_prng *p) {
  uint64_t *s = p->s;
  uint64_t result = prng_rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = prng_rotl(s[3], 45);
  return result;
}

uint64_t qraft_prng_below(qraft_prng *p, uint64_t n) {
  QRAFT_ASSERT(n > 0);
  /* Lemire, "Fast random integer generation in an interval" (2019). */
  unsigned __int128 m = (unsigned __int128)qraft_prng_next(p) * n;
  uint64_t low = (uint64_t)m;
  if (low < n) {
    uint64_t threshold = -n % n;
    while (low < threshold) {
      m = (unsigned __int128)qraft_prng_next(p) * n;
      low = (uint64_t)m;
    }
  }
  return (uint64_t)(m >> 64);
}

uint64_t qraft_prng_between(qraft_prng *p, uint64_t lo, uint64_t hi) {
  QRAFT_ASSERT(lo <= hi);
  if (lo == 0 && hi == UINT64_MAX) {
    return qraft_prng_next(p);
  }
  return lo + qraft_prng_below(p, hi - lo + 1);
}

double qraft_prng_double(qraft_prng *p) {
  return (double)(qraft_prng_next(p) >> 11) * 0x1.0p-53;
}

bool qraft_prng_chance(qraft_prng *p, uint64_t num, uint64_t den) {
  QRAFT_ASSERT(den > 0);
  if (num >= den) {
    return true;
  }
  if (num == 0) {
    return false;
  }
  return qraft_prng_below(p, den) < num;
}

/*
 * qraft/prng.h: a seeded pseudo-random generator, the same on every machine.
 *
 * Algorithm: xoshiro256** 1.0 (Blackman and Vigna, 2018), its 256-bit state
 * filled from the 64-bit seed by four successive outputs of splitmix64
 * (the seeding the authors recommend). The same seed gives the same
 * sequence on every platform and compiler; tests pin the first outputs.
 *
 * Not for cryptography. Not thread-safe: one generator per thread or per
 * simulated node.
 */
#ifndef QRAFT_PRNG_H
#define QRAFT_PRNG_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qraft_prng {
  uint64_t s[4];
} qraft_prng;

/* Seeds `p` from `seed` (any value, 0 included). */
void qraft_prng_init(qraft_prng *p, uint64_t seed);

/* The next 64 random bits. */
uint64_t qraft_prng_next(qraft_prng *p);

/* A uniform value in [0, n); n must be > 0. Unbiased (Lemire's method). */
uint64_t qraft_prng_below(qraft_prng *p, uint64_t n);

/* A uniform value in [lo, hi]; lo <= hi. */
uint64_t qraft_prng_between(qraft_prng *p, uint64_t lo, uint64_t hi);

/* A uniform double in [0, 1), 53 bits of precision. */
double qraft_prng_double(qraft_prng *p);

/* True with probability num/den (den > 0; num >= den is always true). */
bool qraft_prng_chance(qraft_prng *p, uint64_t num, uint64_t den);

/* splitmix64: advances *state and returns the next output. Useful to derive
 * independent seeds (per node, per component) from one run seed. */
uint64_t qraft_splitmix64(uint64_t *state);

#ifdef __cplusplus
}
#endif
#endif

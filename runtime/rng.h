/*
 * rng: a small seedable PRNG (xoshiro256**, seeded through splitmix64) so that jittered
 * delays are reproducible in tests. Not for anything secret.
 *
 * Contract:
 *  - rng_seed(r, s) fully determines the sequence: the same seed gives the same numbers.
 *  - rng_next_double() is uniform in [0, 1); rng_uniform(r, lo, hi) is in [lo, hi) (lo if equal).
 *  - rng_default() is a process-wide generator seeded from the clock and pid on first use,
 *    for callers that want jitter but did not bring their own generator.
 */
#ifndef SCIMRUN_RNG_H
#define SCIMRUN_RNG_H

#include <stdint.h>

typedef struct rng {
  uint64_t s[4];
} rng;

void rng_seed(rng *r, uint64_t seed);
uint64_t rng_next_u64(rng *r);
double rng_next_double(rng *r);
double rng_uniform(rng *r, double lo, double hi);
rng *rng_default(void);

#endif

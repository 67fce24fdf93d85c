/* rng.c: xoshiro256** (Blackman & Vigna, public domain) seeded with splitmix64 (see rng.h). */
#include "rng.h"

#include <time.h>
#include <unistd.h>

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void rng_seed(rng *r, uint64_t seed) {
  /* splitmix64 spreads any seed (even 0) over the 256-bit state, which must not be all zero. */
  for (int i = 0; i < 4; i++)
    r->s[i] = splitmix64(&seed);
}

uint64_t rng_next_u64(rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

/* The top 53 bits fill a double's mantissa exactly, so the result is never 1.0. */
double rng_next_double(rng *r) { return (double)(rng_next_u64(r) >> 11) * 0x1.0p-53; }

double rng_uniform(rng *r, double lo, double hi) {
  if (!(hi > lo))
    return lo;
  return lo + (hi - lo) * rng_next_double(r);
}

rng *rng_default(void) {
  static rng shared;
  static int seeded;
  if (!seeded) {
    /* Different processes must not jitter in lockstep, so mix the clock with the pid. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed =
        (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    rng_seed(&shared, seed);
    seeded = 1;
  }
  return &shared;
}

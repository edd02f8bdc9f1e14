/* rng.h - the one seeded random-number generator (xoshiro256** seeded through splitmix64):
 * sampling in the engine and the workloads of `tokenmill bench`. The same seed gives the
 * same stream on every machine; not for cryptography. */
#ifndef TM_RNG_H
#define TM_RNG_H

#include <stdint.h>

typedef struct tm_rng {
    uint64_t s[4]; /* xoshiro256** state, never all zero */
} tm_rng;

static inline uint64_t tm_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline void tm_rng_seed(tm_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = tm_splitmix64(&seed);
}

static inline uint64_t tm_rng_next(tm_rng *r) {
    uint64_t *s = r->s;
    const uint64_t out = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3] << 45 | s[3] >> 19;
    return out;
}

/* Uniform in [0, 1), 53 random bits. */
static inline double tm_rng_uniform(tm_rng *r) { return (double)(tm_rng_next(r) >> 11) * 0x1.0p-53; }

#endif

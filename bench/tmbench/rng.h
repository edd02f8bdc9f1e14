/* rng.h - the seeded random numbers of `tokenmill bench`: workload contents and arrival
 * times depend only on --seed, so two runs with one seed send the same requests at the
 * same offsets. xoshiro256** seeded through splitmix64; not for cryptography. */
#ifndef TM_BENCH_RNG_H
#define TM_BENCH_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_bench_rng {
    uint64_t s[4]; /* xoshiro256** state, never all zero */
} tm_bench_rng;

void tm_bench_rng_seed(tm_bench_rng *r, uint64_t seed);
uint64_t tm_bench_rng_next(tm_bench_rng *r);
/* Uniform in [0, 1), 53 random bits. */
double tm_bench_rng_uniform(tm_bench_rng *r);
/* Uniform integer in [lo, hi] (inclusive; lo <= hi). */
int64_t tm_bench_rng_range(tm_bench_rng *r, int64_t lo, int64_t hi);
/* Gamma(shape, scale) by Marsaglia and Tsang; shape 1 is the exponential distribution
 * with mean `scale`, the gaps of a Poisson process. shape > 0, scale > 0. */
double tm_bench_rng_gamma(tm_bench_rng *r, double shape, double scale);

#ifdef __cplusplus
}
#endif
#endif

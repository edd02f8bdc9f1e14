/* rng.h - the distributions `tokenmill bench` draws from common/rng.h's generator:
 * workload contents and arrival times depend only on --seed, so two runs with one seed
 * send the same requests at the same offsets. */
#ifndef TM_BENCH_RNG_H
#define TM_BENCH_RNG_H

#include <stdint.h>

#include "common/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Uniform integer in [lo, hi] (inclusive; lo <= hi). */
int64_t tm_bench_rng_range(tm_rng *r, int64_t lo, int64_t hi);
/* Gamma(shape, scale) by Marsaglia and Tsang; shape 1 is the exponential distribution
 * with mean `scale`, the gaps of a Poisson process. shape > 0, scale > 0. */
double tm_bench_rng_gamma(tm_rng *r, double shape, double scale);

#ifdef __cplusplus
}
#endif
#endif

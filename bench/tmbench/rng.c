/* rng.c - the few distributions the bench needs, over common/rng.h. */
#include "bench/tmbench/rng.h"

#include <math.h>

int64_t tm_bench_rng_range(tm_rng *r, int64_t lo, int64_t hi) {
    uint64_t span = (uint64_t)(hi - lo) + 1;
    if (span == 0) return (int64_t)tm_rng_next(r); /* the whole 64-bit range */
    /* rejection keeps every value equally likely */
    uint64_t limit = UINT64_MAX - UINT64_MAX % span, x;
    do x = tm_rng_next(r);
    while (x >= limit);
    return lo + (int64_t)(x % span);
}

static double normal(tm_rng *r) {
    /* Box-Muller; 1 - u keeps the logarithm's argument in (0, 1] */
    double u = 1.0 - tm_rng_uniform(r), v = tm_rng_uniform(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

double tm_bench_rng_gamma(tm_rng *r, double shape, double scale) {
    if (shape == 1.0) return -log(1.0 - tm_rng_uniform(r)) * scale;
    if (shape < 1.0) { /* boost: G(a) = G(a + 1) * U^(1/a) */
        double u = 1.0 - tm_rng_uniform(r);
        return tm_bench_rng_gamma(r, shape + 1.0, scale) * pow(u, 1.0 / shape);
    }
    const double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (int tries = 0; tries < 1000; tries++) { /* accepts with p > 0.95 per try */
        double x = normal(r), v = 1.0 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = 1.0 - tm_rng_uniform(r);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return d * v * scale;
    }
    return shape * scale; /* unreachable in practice: the mean */
}

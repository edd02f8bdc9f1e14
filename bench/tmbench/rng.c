/* rng.c - xoshiro256** with splitmix64 seeding, and the few distributions the bench needs. */
#include "bench/tmbench/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void tm_bench_rng_seed(tm_bench_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

uint64_t tm_bench_rng_next(tm_bench_rng *r) {
    uint64_t *s = r->s;
    const uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double tm_bench_rng_uniform(tm_bench_rng *r) { return (double)(tm_bench_rng_next(r) >> 11) * 0x1.0p-53; }

int64_t tm_bench_rng_range(tm_bench_rng *r, int64_t lo, int64_t hi) {
    uint64_t span = (uint64_t)(hi - lo) + 1;
    if (span == 0) return (int64_t)tm_bench_rng_next(r); /* the whole 64-bit range */
    /* rejection keeps every value equally likely */
    uint64_t limit = UINT64_MAX - UINT64_MAX % span, x;
    do x = tm_bench_rng_next(r);
    while (x >= limit);
    return lo + (int64_t)(x % span);
}

static double normal(tm_bench_rng *r) {
    /* Box-Muller; 1 - u keeps the logarithm's argument in (0, 1] */
    double u = 1.0 - tm_bench_rng_uniform(r), v = tm_bench_rng_uniform(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

double tm_bench_rng_gamma(tm_bench_rng *r, double shape, double scale) {
    if (shape == 1.0) return -log(1.0 - tm_bench_rng_uniform(r)) * scale;
    if (shape < 1.0) { /* boost: G(a) = G(a + 1) * U^(1/a) */
        double u = 1.0 - tm_bench_rng_uniform(r);
        return tm_bench_rng_gamma(r, shape + 1.0, scale) * pow(u, 1.0 / shape);
    }
    const double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (int tries = 0; tries < 1000; tries++) { /* accepts with p > 0.95 per try */
        double x = normal(r), v = 1.0 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = 1.0 - tm_bench_rng_uniform(r);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return d * v * scale;
    }
    return shape * scale; /* unreachable in practice: the mean */
}

/* bench_machine.c - what this machine allows: the ceilings the CPU kernels run against.
 *
 *   compute  zmm vpdpbusd and vfmadd231ps per second per thread, 10 independent chains,
 *            on 1 thread and then on N at once (N cores that are really separate keep the
 *            per-thread rate; two hyper-threads of one core halve it)
 *   memory   GB/s reading chunks of 2 KiB .. 64 KiB at random places in a buffer much
 *            larger than the caches (KV pages are 2 KiB per kv head at head_dim 64 and 16
 *            tokens a page), 1 thread and N; and sequentially, each thread streaming its
 *            own contiguous part of the buffer (a GEMV's weights: the decode ceiling)
 *   amx      ns per 16 x 16 x 32 int8 tile product, the shape of one 32-value block of
 *            16 weight rows against 16 tokens: the product alone, with its two operand
 *            loads, and with the store of its result; whether products overlap with
 *            zmm FMAs; and the core clock (a chain of
 *            dependent imuls) before and right after a burst of tile products or of zmm
 *            FMAs, since a core may slow down while it runs wide instructions
 *
 * usage: bench_machine [-t threads] [--mib buffer_MiB] */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/simd.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#if defined(__x86_64__)
#include <immintrin.h>

enum { COMPUTE_ITERS = 100000000 }; /* x 10 instructions per thread */

#define TM_TGT_VNNI __attribute__((target("avx512f,avx512vnni")))
#define DP(r) "vpdpbusd %%zmm9, %%zmm8, %%zmm" #r "\n\t"
#define FM(r) "vfmadd231ps %%zmm9, %%zmm8, %%zmm" #r "\n\t"
#define CLOBBER "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm10", "xmm11"

/* 10 chains of each instruction: enough in flight for 2 ports at latency 4-5. */
TM_TGT_VNNI static void *spin_dpbusd(void *out) {
    const double t0 = now_s();
    for (long i = 0; i < COMPUTE_ITERS; i++)
        __asm__ volatile(DP(0) DP(1) DP(2) DP(3) DP(4) DP(5) DP(6) DP(7) DP(10) DP(11) ::: CLOBBER);
    *(double *)out = 10.0 * COMPUTE_ITERS / (now_s() - t0) * 1e-9;
    return NULL;
}

TM_TGT_VNNI static void *spin_fma(void *out) {
    const double t0 = now_s();
    for (long i = 0; i < COMPUTE_ITERS; i++)
        __asm__ volatile(FM(0) FM(1) FM(2) FM(3) FM(4) FM(5) FM(6) FM(7) FM(10) FM(11) ::: CLOBBER);
    *(double *)out = 10.0 * COMPUTE_ITERS / (now_s() - t0) * 1e-9;
    return NULL;
}

/* GHz of this core now: a chain of dependent imul (3 cycles each on x86 cores since
 * Nehalem; dependent adds with an immediate can be folded at rename) for `seconds`. */
static double clock_ghz(double seconds) {
    uint64_t x = 3;
    long n = 0;
    double t;
    const double t0 = now_s();
    do {
        for (int i = 0; i < 10000; i++)
            __asm__ volatile("imul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0\n\t"
                             "imul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0"
                             : "+r"(x));
        n += 10000;
    } while ((t = now_s() - t0) < seconds);
    return 3.0 * 10.0 * (double)n / t * 1e-9;
}

/* Keeps the zmm FMA ports busy for `seconds`. */
TM_TGT_VNNI static void fma_burst(double seconds) {
    const double t0 = now_s();
    while (now_s() - t0 < seconds)
        for (int i = 0; i < 10000; i++)
            __asm__ volatile(FM(0) FM(1) FM(2) FM(3) FM(4) FM(5) FM(6) FM(7) FM(10) FM(11) ::: CLOBBER);
}

/* Runs fn on n threads at once; prints each thread's rate. */
static void run_threads(const char *what, void *(*fn)(void *), int n) {
    pthread_t th[64];
    double rate[64];
    for (int i = 0; i < n; i++) pthread_create(&th[i], NULL, fn, &rate[i]);
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    printf("  %-12s %d thread%s:", what, n, n > 1 ? "s" : " ");
    for (int i = 0; i < n; i++) printf(" %5.2f", rate[i]);
    printf("  G/s per thread\n");
}

/* ---- memory ---- */

typedef struct read_job {
    const char *buf;   /* the buffer */
    size_t n_chunks;   /* chunks of `chunk` bytes in it */
    size_t chunk;      /* bytes per read */
    size_t total;      /* bytes to read */
    uint64_t seed;     /* picks the chunks */
    size_t first;      /* sequential (seed 0): chunks first, first + 1, ... (mod n_chunks) */
    double gbs;        /* out */
    float sink;        /* out: keeps the reads */
} read_job;

TM_TGT_VNNI static void *read_chunks(void *arg) {
    read_job *j = arg;
    uint64_t x = j->seed;
    __m512 acc = _mm512_setzero_ps();
    const double t0 = now_s();
    size_t k = j->first;
    for (size_t done = 0; done < j->total; done += j->chunk, k++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const char *p = j->buf + (j->seed ? x % j->n_chunks : k % j->n_chunks) * j->chunk;
        for (size_t o = 0; o < j->chunk; o += 64) acc = _mm512_add_ps(acc, _mm512_load_ps((const float *)(p + o)));
    }
    j->gbs = (double)j->total / (now_s() - t0) * 1e-9;
    j->sink = _mm512_reduce_add_ps(acc);
    return NULL;
}

static void bench_memory(size_t buf_bytes, int n_threads) {
    char *buf = aligned_alloc(4096, buf_bytes);
    if (!buf) {
        printf("  memory: no %zu MiB buffer\n", buf_bytes >> 20);
        return;
    }
    memset(buf, 1, buf_bytes);
    static const size_t chunks[] = {2048, 16384, 65536, 0}; /* 0: sequential, in 64 KiB reads */
    for (int n = 1; n <= n_threads; n = n == n_threads ? n + 1 : n_threads) {
        for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
            read_job j[64];
            pthread_t th[64];
            const size_t chunk = chunks[c] ? chunks[c] : 65536, n_chunks = buf_bytes / chunk;
            for (int i = 0; i < n; i++) {
                j[i] = (read_job){.buf = buf, .n_chunks = n_chunks, .chunk = chunk, .total = (size_t)256 << 20,
                                  .seed = chunks[c] ? 88172645463325252ull + (uint64_t)i : 0,
                                  .first = n_chunks / (size_t)n * (size_t)i};
                pthread_create(&th[i], NULL, read_chunks, &j[i]);
            }
            double sum = 0;
            for (int i = 0; i < n; i++) {
                pthread_join(th[i], NULL);
                sum += j[i].gbs;
            }
            if (chunks[c])
                printf("  read %2zu KiB chunks, %d thread%s: %6.1f GB/s in all, %5.1f per thread\n",
                       chunks[c] >> 10, n, n > 1 ? "s" : " ", sum, sum / n);
            else
                printf("  read sequential,    %d thread%s: %6.1f GB/s in all, %5.1f per thread\n",
                       n, n > 1 ? "s" : " ", sum, sum / n);
        }
    }
    free(buf);
}

/* ---- AMX ---- */

#define TM_TGT_AMX __attribute__((target("amx-tile,amx-int8,avx512f")))
enum { AMX_REPS = 200000 };

/* ns per tile product of a 16 x 32 s8 A and a (8 x 64) u8 B into a 16 x 16 int32 C: alone
 * (4 independent C tiles), with A and B loaded from L1 each time, and with C stored too. */
TM_TGT_AMX static void bench_amx(void) {
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 4; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    for (int t = 4; t < 8; t += 2) cfg.colsb[t] = 32, cfg.rows[t] = 16, cfg.colsb[t + 1] = 64, cfg.rows[t + 1] = 8;
    _tile_loadconfig(&cfg);
    static _Alignas(64) int8_t a[2][16 * 32];
    static _Alignas(64) uint8_t b[2][8 * 64];
    static _Alignas(64) int32_t c[2][16 * 16];
    for (int i = 0; i < 16 * 32; i++) a[0][i] = a[1][i] = (int8_t)(i * 7), b[0][i] = b[1][i] = (uint8_t)i;
    _tile_loadd(4, a[0], 32);
    _tile_loadd(5, b[0], 64);
    _tile_loadd(6, a[1], 32);
    _tile_loadd(7, b[1], 64);
    double t0 = now_s();
    for (int i = 0; i < AMX_REPS; i++) {
        _tile_dpbsud(0, 4, 5);
        _tile_dpbsud(1, 6, 7);
        _tile_dpbsud(2, 4, 5);
        _tile_dpbsud(3, 6, 7);
    }
    const double alone = (now_s() - t0) / (4.0 * AMX_REPS) * 1e9;
    t0 = now_s();
    for (int i = 0; i < AMX_REPS; i++) {
        _tile_loadd(4, a[0], 32);
        _tile_loadd(5, b[0], 64);
        _tile_dpbsud(0, 4, 5);
        _tile_loadd(6, a[1], 32);
        _tile_loadd(7, b[1], 64);
        _tile_dpbsud(1, 6, 7);
    }
    const double loads = (now_s() - t0) / (2.0 * AMX_REPS) * 1e9;
    t0 = now_s();
    for (int i = 0; i < AMX_REPS; i++) {
        _tile_loadd(4, a[0], 32);
        _tile_loadd(5, b[0], 64);
        _tile_zero(0);
        _tile_dpbsud(0, 4, 5);
        _tile_stored(0, c[0], 64);
        _tile_loadd(6, a[1], 32);
        _tile_loadd(7, b[1], 64);
        _tile_zero(1);
        _tile_dpbsud(1, 6, 7);
        _tile_stored(1, c[1], 64);
    }
    const double stored = (now_s() - t0) / (2.0 * AMX_REPS) * 1e9;
    /* Do tile products and zmm FMAs overlap? 4 products (4 independent C tiles) and 120
     * independent FMAs per iteration, against each alone. */
    t0 = now_s();
    for (int i = 0; i < AMX_REPS; i++)
        __asm__ volatile(FM(0) FM(1) FM(2) FM(3) FM(4) FM(5) FM(6) FM(7) FM(10) FM(11) ::: CLOBBER);
    const double fma10 = (now_s() - t0) / AMX_REPS * 1e9;
    t0 = now_s();
    for (int i = 0; i < AMX_REPS; i++) {
        _tile_dpbsud(0, 4, 5);
        _tile_dpbsud(1, 6, 7);
        _tile_dpbsud(2, 4, 5);
        _tile_dpbsud(3, 6, 7);
        for (int k = 0; k < 12; k++)
            __asm__ volatile(FM(0) FM(1) FM(2) FM(3) FM(4) FM(5) FM(6) FM(7) FM(10) FM(11) ::: CLOBBER);
    }
    const double mixed = (now_s() - t0) / AMX_REPS * 1e9;
    /* the clock: idle-ish, right after 0.2 s of tile products, right after 0.2 s of FMAs */
    const double ghz_before = clock_ghz(0.001);
    t0 = now_s();
    while (now_s() - t0 < 0.2)
        for (int i = 0; i < 1000; i++) {
            _tile_dpbsud(0, 4, 5);
            _tile_dpbsud(1, 6, 7);
        }
    const double ghz_amx = clock_ghz(0.001);
    fma_burst(0.2);
    const double ghz_fma = clock_ghz(0.001);
    _tile_release();
    printf("  16x16x32 tile product: %.1f ns alone, %.1f with its operand loads, %.1f with the result stored"
           " (%d int32 checks %d)\n", alone, loads, stored, c[0][0], c[1][255]);
    printf("  4 tile products + 120 zmm FMAs: %.1f ns, against %.1f + %.1f apart (%.1f if they overlapped)\n",
           mixed, 4 * alone, 12 * fma10, 4 * alone > 12 * fma10 ? 4 * alone : 12 * fma10);
    printf("  core clock (dependent imuls, 1 ms): %.2f GHz before, %.2f right after 0.2 s of tile products,"
           " %.2f right after 0.2 s of zmm FMAs\n", ghz_before, ghz_amx, ghz_fma);
}
#endif

int main(int argc, char **argv) {
    int n_threads = 2;
    size_t mib = 1024;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) n_threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--mib") == 0 && i + 1 < argc) mib = (size_t)atol(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [-t threads] [--mib buffer_MiB]\n", argv[0]);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (n_threads < 1 || n_threads > 64 || mib < 16) {
        fprintf(stderr, "bench_machine: -t must be 1..64 and --mib at least 16\n");
        return 2;
    }
#if defined(__x86_64__)
    if (!tm_simd_supported(TM_SIMD_AVX512VNNI)) {
        printf("bench_machine: needs AVX-512 VNNI\n");
        return 0;
    }
    printf("compute (zmm, 10 independent chains):\n");
    for (int n = 1; n <= n_threads; n = n == n_threads ? n + 1 : n_threads) {
        run_threads("vpdpbusd", spin_dpbusd, n);
        run_threads("vfmadd231ps", spin_fma, n);
    }
    printf("memory (random chunks of a %zu MiB buffer, then each thread its own part in order):\n", mib);
    bench_memory(mib << 20, n_threads);
    printf("amx:\n");
    if (tm_simd_supported(TM_SIMD_AMX)) bench_amx();
    else printf("  not available\n");
#else
    (void)now_s;
    printf("bench_machine: x86-64 only\n");
#endif
    return 0;
}

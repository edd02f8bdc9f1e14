/* bench_ops.c - CPU backend micro-benchmarks: thread-pool run overhead, and paged
 * attention decode time vs context length (1 sequence, llama3-8b heads: 32 q / 8 kv,
 * head_dim 128), per SIMD level and thread count. Short by design (a few seconds).
 *
 * Usage: bench_ops [max_threads]   (default: online CPUs) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/threadpool.h"

static void tm_bench_nop(void *ctx, int ith, int nth) {
    (void)ctx, (void)ith, (void)nth;
}

static void tm_bench_pool(int max_threads) {
    printf("thread pool: empty run, back to back\n");
    for (int n = 1; n <= max_threads; n++) {
        tm_threadpool *p = tm_threadpool_create(n);
        if (!p) continue;
        for (int i = 0; i < 1000; i++) tm_threadpool_run(p, tm_bench_nop, NULL);
        const int runs = 20000;
        double t = tm_time_s();
        for (int i = 0; i < runs; i++) tm_threadpool_run(p, tm_bench_nop, NULL);
        t = tm_time_s() - t;
        printf("  %d threads: %.2f us/run\n", n, t / runs * 1e6);
        tm_threadpool_destroy(p);
    }
}

static void tm_bench_attention(int level, int n_threads) {
    const int n_heads = 32, n_kvh = 8, hd = 128, bs = 16, max_ctx = 8192;
    char err[256];
    tm_backend *be = tm_backend_cpu_create(n_threads, level, err, sizeof err);
    if (!be) {
        printf("  %s: %s\n", tm_simd_name(level), err);
        return;
    }
    const int n_blocks = max_ctx / bs;
    tm_kv_shape shape = {1, n_blocks, bs, n_kvh, hd};
    tm_kv_cache *kv = NULL;
    if (be->kv_create(be, &shape, &kv) != 0) goto done;
    /* Random-ish values; speed does not depend on them. Fill through kv_store. */
    {
        const int chunk = 256;
        float *k = be->alloc(be, (size_t)chunk * n_kvh * hd * sizeof(float));
        int32_t *slots = malloc(chunk * sizeof *slots);
        for (size_t i = 0; i < (size_t)chunk * n_kvh * hd; i++) k[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        for (int p0 = 0; p0 < max_ctx; p0 += chunk) {
            for (int i = 0; i < chunk; i++) slots[i] = p0 + i; /* identity block table */
            be->kv_store(be, kv, 0, k, k, slots, chunk);
        }
        be->free(be, k);
        free(slots);
    }
    int32_t *table = malloc(n_blocks * sizeof *table);
    for (int i = 0; i < n_blocks; i++) table[i] = i;
    float *q = be->alloc(be, (size_t)n_heads * hd * sizeof(float));
    float *out = be->alloc(be, (size_t)n_heads * hd * sizeof(float));
    for (int i = 0; i < n_heads * hd; i++) q[i] = (float)(i % 17) / 17.0f - 0.5f;
    printf("  %-10s %d thr:", tm_simd_name(level), n_threads);
    for (int ctx = 128; ctx <= max_ctx; ctx *= 4) {
        int32_t tok = 0, pos = ctx - 1, start[2] = {0, 1}, len = ctx, slot = ctx - 1;
        tm_batch b = {.n_tokens = 1, .n_seqs = 1, .tokens = &tok, .pos = &pos, .seq_start = start,
                      .ctx_len = &len, .block_table = table, .max_blocks = n_blocks, .slots = &slot};
        be->attention(be, out, q, kv, 0, &b, n_heads, 0.088f);
        /* as many calls as fit in ~0.15 s, at least 3 */
        int reps = 0;
        double t0 = tm_time_s(), t;
        do {
            be->attention(be, out, q, kv, 0, &b, n_heads, 0.088f);
            reps++;
        } while ((t = tm_time_s() - t0) < 0.15 || reps < 3);
        t /= reps;
        double gbs = (double)ctx * n_kvh * hd * 2 * 2 / t * 1e-9; /* K + V f16 bytes */
        printf("  ctx %5d %8.1f us (%5.1f GB/s)", ctx, t * 1e6, gbs);
    }
    printf("\n");
    free(table);
    be->free(be, q);
    be->free(be, out);
    be->kv_destroy(be, kv);
done:
    be->destroy(be);
}

int main(int argc, char **argv) {
    int max_threads = argc > 1 ? atoi(argv[1]) : tm_n_cpus();
    if (max_threads < 1) max_threads = 1;
    tm_bench_pool(max_threads);
    printf("attention decode, 1 sequence, 32 q heads / 8 kv heads, head_dim 128, f16 KV:\n");
    for (int level = TM_SIMD_SCALAR; level <= TM_SIMD_NEON; level++) {
        if (!tm_simd_supported(level)) continue;
        for (int n = 1; n <= max_threads; n *= 2) tm_bench_attention(level, n);
        if (max_threads > 1 && (max_threads & (max_threads - 1))) tm_bench_attention(level, max_threads);
    }
    return 0;
}

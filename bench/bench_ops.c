/* bench_ops.c - CPU backend micro-benchmarks: thread-pool run overhead; paged attention
 * decode time vs context length (1 sequence, llama3-8b heads: 32 q / 8 kv, head_dim 128);
 * and paged attention on engine-shaped batches with SmolLM2-135M's heads (9 q / 3 kv,
 * head_dim 64, 30 layers, pages scattered over the pool): 16 decodes of ~200 keys, and
 * one 256-token prefill. Per SIMD level and thread count. A few seconds per case.
 *
 * Usage: bench_ops [max_threads] [--case pool,long,decode16,prefill] [--simd LEVEL] [--kv-dtype f16|int8]
 *   max_threads  default: online CPUs; thread counts 1, 2, 4, .. up to it
 *   --case       cases to run (default: all)
 *   --simd       one level only (scalar, avx2, avx512vnni, neon; default: every supported)
 *   --kv-dtype   KV cache element type of the attention cases (default f16) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/threadpool.h"

static tm_kv_dtype g_kv_dtype = TM_KV_F16; /* --kv-dtype */

/* Cache bytes attention reads per key and kv head: K and V values (int8: and their scales). */
static double kv_bytes_per_key(int hd) {
    return g_kv_dtype == TM_KV_INT8 ? 2.0 * (hd + 4) : 2.0 * hd * 2;
}

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

/* Single-sequence decode at growing context lengths, identity block table. */
static void tm_bench_attention(int level, int n_threads) {
    const int n_heads = 32, n_kvh = 8, hd = 128, bs = 16, max_ctx = 8192;
    char err[256];
    tm_backend *be = tm_backend_cpu_create(n_threads, level, err, sizeof err);
    if (!be) {
        printf("  %s: %s\n", tm_simd_name(level), err);
        return;
    }
    const int n_blocks = max_ctx / bs;
    tm_kv_shape shape = {1, n_blocks, bs, n_kvh, hd, g_kv_dtype};
    tm_kv_cache *kv = NULL;
    if (be->kv_create(be, &shape, &kv, NULL, 0) != 0) goto done;
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
        be->attention(be, out, q, kv, 0, &b, n_heads, 0.088f, 0, 0.0f);
        /* as many calls as fit in ~0.15 s, at least 3 */
        int reps = 0;
        double t0 = tm_time_s(), t;
        do {
            be->attention(be, out, q, kv, 0, &b, n_heads, 0.088f, 0, 0.0f);
            reps++;
        } while ((t = tm_time_s() - t0) < 0.15 || reps < 3);
        t /= reps;
        double gbs = (double)ctx * n_kvh * kv_bytes_per_key(hd) / t * 1e-9;
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

/* Builds the KV cache of an engine-like batch with SmolLM2-135M's attention shape and
 * times one attention call per layer, cycling through the layers so that, as in a forward
 * pass, a layer's pages are not all still in cache. Sequence s has ctx[s] keys and its
 * last q_len[s] positions are the new rows. */
static void tm_bench_attention_batch(int level, int n_threads, const char *label, int n_seqs,
                                     const int *ctx, const int *q_len) {
    const int n_layers = 30, n_heads = 9, n_kvh = 3, hd = 64, bs = 16;
    char err[256];
    tm_backend *be = tm_backend_cpu_create(n_threads, level, err, sizeof err);
    if (!be) {
        printf("  %s: %s\n", tm_simd_name(level), err);
        return;
    }
    int max_blocks = 0, n_blocks = 0, n_tokens = 0, max_ctx = 0;
    for (int s = 0; s < n_seqs; s++) {
        max_blocks = TM_MAX(max_blocks, (ctx[s] + bs - 1) / bs);
        n_blocks += (ctx[s] + bs - 1) / bs;
        n_tokens += q_len[s];
        max_ctx = TM_MAX(max_ctx, ctx[s]);
    }
    n_blocks += 64; /* free pages in between, as in a pool that has seen other requests */
    /* Pages in a fixed pseudo-random order (Fisher-Yates on an LCG). */
    int32_t *pages = malloc(n_blocks * sizeof *pages);
    int32_t *table = malloc((size_t)n_seqs * max_blocks * sizeof *table);
    int32_t *tok = calloc(n_tokens, sizeof *tok), *pos = malloc(n_tokens * sizeof *pos);
    int32_t *slot = malloc(n_tokens * sizeof *slot), *start = malloc((n_seqs + 1) * sizeof *start);
    int32_t *fill = malloc(max_ctx * sizeof *fill);
    uint32_t rng = 12345;
    for (int i = 0; i < n_blocks; i++) pages[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        rng = rng * 1664525u + 1013904223u;
        int j = (int)((rng >> 8) % (uint32_t)(i + 1)), t = pages[i];
        pages[i] = pages[j];
        pages[j] = t;
    }
    tm_kv_shape shape = {n_layers, n_blocks, bs, n_kvh, hd, g_kv_dtype};
    tm_kv_cache *kv = NULL;
    float *k = be->alloc(be, (size_t)max_ctx * n_kvh * hd * sizeof(float));
    float *q = be->alloc(be, (size_t)n_tokens * n_heads * hd * sizeof(float));
    float *out = be->alloc(be, (size_t)n_tokens * n_heads * hd * sizeof(float));
    if (be->kv_create(be, &shape, &kv, NULL, 0) != 0) goto done;
    for (size_t i = 0; i < (size_t)max_ctx * n_kvh * hd; i++) k[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    for (int i = 0; i < n_tokens * n_heads * hd; i++) q[i] = (float)(i % 17) / 17.0f - 0.5f;
    start[0] = 0;
    for (int s = 0, next = 0; s < n_seqs; s++) {
        for (int b = 0; b < max_blocks; b++) table[s * max_blocks + b] = b * bs < ctx[s] ? pages[next++] : -1;
        for (int p = 0; p < ctx[s]; p++) fill[p] = table[s * max_blocks + p / bs] * bs + p % bs;
        for (int l = 0; l < n_layers; l++) be->kv_store(be, kv, l, k, k, fill, ctx[s]);
        start[s + 1] = start[s] + q_len[s];
        for (int i = 0; i < q_len[s]; i++) {
            pos[start[s] + i] = ctx[s] - q_len[s] + i;
            slot[start[s] + i] = fill[ctx[s] - q_len[s] + i];
        }
    }
    tm_batch b = {.n_tokens = n_tokens, .n_seqs = n_seqs, .tokens = tok, .pos = pos,
                  .seq_start = start, .ctx_len = ctx, .block_table = table,
                  .max_blocks = max_blocks, .slots = slot};
    for (int l = 0; l < n_layers; l++) be->attention(be, out, q, kv, l, &b, n_heads, 0.125f, 0, 0.0f);
    /* whole passes over the layers for ~0.3 s, at least 3 */
    int reps = 0;
    double t0 = tm_time_s(), t;
    do {
        for (int l = 0; l < n_layers; l++) be->attention(be, out, q, kv, l, &b, n_heads, 0.125f, 0, 0.0f);
        reps++;
    } while ((t = tm_time_s() - t0) < 0.3 || reps < 3);
    t /= (double)reps * n_layers;
    int64_t keys = 0;
    for (int s = 0; s < n_seqs; s++) keys += ctx[s];
    double gbs = (double)keys * n_kvh * kv_bytes_per_key(hd) / t * 1e-9;
    printf("  %-10s %d thr: %s %8.1f us per layer (%5.1f GB/s)\n", tm_simd_name(level), n_threads,
           label, t * 1e6, gbs);
done:
    if (kv) be->kv_destroy(be, kv);
    be->free(be, k);
    be->free(be, q);
    be->free(be, out);
    free(pages), free(table), free(tok), free(pos), free(slot), free(start), free(fill);
    be->destroy(be);
}

static void tm_bench_decode16(int level, int n_threads) {
    int ctx[16], q_len[16];
    for (int s = 0; s < 16; s++) ctx[s] = 185 + 2 * s, q_len[s] = 1; /* 185 .. 215 keys */
    tm_bench_attention_batch(level, n_threads, "16 x 1 row,  ctx 185..215", 16, ctx, q_len);
}

static void tm_bench_prefill(int level, int n_threads) {
    int ctx = 256, q_len = 256;
    tm_bench_attention_batch(level, n_threads, "1 x 256 rows, ctx 256   ", 1, &ctx, &q_len);
}

/* Runs case(level, n) for each selected level and thread counts 1, 2, 4, .., max. */
static void tm_bench_levels(void (*bench)(int, int), int only_level, int max_threads) {
    for (int level = TM_SIMD_SCALAR; level <= TM_SIMD_NEON; level++) {
        if (!tm_simd_supported(level) || (only_level >= 0 && level != only_level)) continue;
        for (int n = 1; n <= max_threads; n *= 2) bench(level, n);
        if (max_threads > 1 && (max_threads & (max_threads - 1))) bench(level, max_threads);
    }
}

static int tm_bench_want(const char *cases, const char *name) {
    if (!cases) return 1;
    size_t n = strlen(name);
    for (const char *c = cases; (c = strstr(c, name)) != NULL; c += n)
        if ((c == cases || c[-1] == ',') && (c[n] == '\0' || c[n] == ',')) return 1;
    return 0;
}

int main(int argc, char **argv) {
    int max_threads = tm_n_cpus(), level = -1;
    const char *cases = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--case") == 0 && i + 1 < argc) {
            cases = argv[++i];
        } else if (strcmp(argv[i], "--simd") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            level = -2;
            for (int l = TM_SIMD_SCALAR; l <= TM_SIMD_NEON; l++)
                if (strcmp(v, tm_simd_name(l)) == 0) level = l;
        } else if (strcmp(argv[i], "--kv-dtype") == 0 && i + 1 < argc) {
            const int t = tm_kv_dtype_from_name(argv[++i]);
            if (t < 0) level = -2;
            else g_kv_dtype = (tm_kv_dtype)t;
        } else if (argv[i][0] >= '0' && argv[i][0] <= '9') {
            max_threads = atoi(argv[i]);
        } else {
            level = -2;
        }
        if (level == -2) {
            fprintf(stderr, "usage: %s [max_threads] [--case pool,long,decode16,prefill] "
                            "[--simd scalar|avx2|avx512vnni|neon] [--kv-dtype f16|int8]\n", argv[0]);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (max_threads < 1) max_threads = 1;
    if (tm_bench_want(cases, "pool")) tm_bench_pool(max_threads);
    if (tm_bench_want(cases, "long")) {
        printf("attention decode, 1 sequence, 32 q heads / 8 kv heads, head_dim 128, %s KV:\n",
               tm_kv_dtype_name(g_kv_dtype));
        tm_bench_levels(tm_bench_attention, level, max_threads);
    }
    if (tm_bench_want(cases, "decode16")) {
        printf("attention, 9 q heads / 3 kv heads, head_dim 64, 30 layers, scattered pages of 16:\n");
        tm_bench_levels(tm_bench_decode16, level, max_threads);
    }
    if (tm_bench_want(cases, "prefill")) {
        if (!tm_bench_want(cases, "decode16"))
            printf("attention, 9 q heads / 3 kv heads, head_dim 64, 30 layers, scattered pages of 16:\n");
        tm_bench_levels(tm_bench_prefill, level, max_threads);
    }
    return 0;
}

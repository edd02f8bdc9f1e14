/* ops.c - the op drivers of the CPU backend: they run one kernel table (ops.h) over the
 * thread pool for rmsnorm, add, silu_mul, gelu_mul, scale, rope, kv_store, get_rows and argmax_rows; the
 * KV cache's memory and the backend's scratch. The scalar reference kernels are in
 * ops_scalar.c, the attention scheduler in attention.c. No intrinsics here. */
#include "kernels/cpu/ops.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/cpu/simd.h"

enum {
    TM_PAR_MIN = 8192,    /* below this many elements an op runs on the caller alone */
    TM_KV_STORE_RUN = 256, /* dims of one key converted to f16 at once by kv_store */
    TM_ALIGN = 64,
};

/* ---------------------------------------------------------------- kernel tables */

const tm_cpu_kernels *tm_cpu_kernels_get(int level) {
    switch (level) {
    case TM_SIMD_SCALAR: return tm_cpu_kernels_scalar();
#if defined(__x86_64__)
    case TM_SIMD_AVX2: return tm_cpu_kernels_avx2();
    case TM_SIMD_AVX512VNNI: return tm_cpu_kernels_avx512();
#endif
#if defined(__aarch64__)
    case TM_SIMD_NEON: return tm_cpu_kernels_neon();
#endif
    default: return NULL;
    }
}

/* ---------------------------------------------------------------- memory */

static void *tm_aligned_alloc(size_t n_bytes) {
    size_t n = (n_bytes + TM_ALIGN - 1) / TM_ALIGN * TM_ALIGN;
    return aligned_alloc(TM_ALIGN, n ? n : TM_ALIGN);
}

int tm_cpu_kv_init(struct tm_kv_cache *kv, const tm_kv_shape *s) {
    memset(kv, 0, sizeof *kv);
    if (s->n_layers <= 0 || s->n_blocks <= 0 || s->block_size <= 0 || s->n_kv_heads <= 0 ||
        s->head_dim <= 0 || !tm_kv_dtype_name(s->dtype) ||
        (s->dtype == TM_KV_INT8 && (s->head_dim > TM_KV_INT8_MAX_HEAD_DIM || s->head_dim % 4 != 0)))
        return TM_EINVAL;
    const size_t bytes = (size_t)s->n_layers * s->n_blocks * s->n_kv_heads * tm_kv_tile_bytes(s);
    kv->shape = *s;
    void *k = tm_alloc_huge(bytes), *v = tm_alloc_huge(bytes);
    if (s->dtype == TM_KV_INT8) kv->k8 = k, kv->v8 = v;
    else kv->k = k, kv->v = v;
    if (!k || !v) {
        tm_cpu_kv_deinit(kv);
        return TM_ENOMEM;
    }
    memset(k, 0, bytes);
    memset(v, 0, bytes);
    return TM_OK;
}

void tm_cpu_kv_deinit(struct tm_kv_cache *kv) {
    free(kv->k);
    free(kv->v);
    free(kv->k8);
    free(kv->v8);
    kv->k = kv->v = NULL;
    kv->k8 = kv->v8 = NULL;
}

void tm_cpu_scratch_free(tm_cpu_scratch *s) {
    free(s->data);
    s->data = NULL;
    s->n_bytes = 0;
}

int tm_cpu_scratch_reserve(tm_cpu_scratch *s, size_t n_bytes) {
    if (s->n_bytes >= n_bytes) return TM_OK;
    size_t cap = n_bytes + n_bytes / 2; /* headroom so a growing context does not realloc every step */
    void *p = tm_aligned_alloc(cap);
    if (!p) return TM_ENOMEM;
    free(s->data);
    s->data = p;
    s->n_bytes = cap;
    return TM_OK;
}

/* ---------------------------------------------------------------- drivers */

/* Runs fn on the pool when there is enough work to pay for waking it. */
static void tm_par(tm_threadpool *pool, int64_t work, tm_pool_fn fn, void *ctx) {
    if (!pool || tm_threadpool_size(pool) == 1 || work < TM_PAR_MIN) fn(ctx, 0, 1);
    else tm_threadpool_run(pool, fn, ctx);
}

typedef struct tm_ew_job {
    const tm_cpu_kernels *k; /* kernels */
    void (*binary)(float *out, const float *a, const float *b, int64_t n); /* tm_binary_fn's kernel */
    float *out;              /* (n) */
    float *x;                /* (n, dim) residual that add_rmsnorm updates in place */
    const float *a, *b;      /* (n) inputs */
    const float *w;          /* (dim) rmsnorm weight */
    int64_t n;               /* elements (rows for rmsnorm) */
    int dim;                 /* rmsnorm row length */
    float eps;               /* rmsnorm epsilon; scale's cap */
    float s;                 /* scale's factor */
} tm_ew_job;

/* add, silu_mul and gelu_mul: one element-wise kernel of two inputs, out = f(a, b). */
static void tm_binary_fn(void *ctx, int ith, int nth) {
    tm_ew_job *j = ctx;
    int64_t lo, hi;
    tm_cpu_share(j->n, ith, nth, 64, &lo, &hi);
    if (hi > lo) j->binary(j->out + lo, j->a + lo, j->b + lo, hi - lo);
}

static void tm_scale_fn(void *ctx, int ith, int nth) {
    tm_ew_job *j = ctx;
    int64_t lo, hi;
    tm_cpu_share(j->n, ith, nth, 64, &lo, &hi);
    if (hi > lo) j->k->scale(j->out + lo, j->a + lo, hi - lo, j->s, j->eps);
}

static void tm_rmsnorm_fn(void *ctx, int ith, int nth) {
    tm_ew_job *j = ctx;
    int64_t lo, hi;
    tm_cpu_share(j->n, ith, nth, 1, &lo, &hi);
    for (int64_t r = lo; r < hi; r++)
        j->k->rmsnorm(j->out + r * j->dim, j->a + r * j->dim, j->w, j->dim, j->eps);
}

/* Each row is added and normed while it is in cache: the same kernels as add then rmsnorm. */
static void tm_add_rmsnorm_fn(void *ctx, int ith, int nth) {
    tm_ew_job *j = ctx;
    int64_t lo, hi;
    tm_cpu_share(j->n, ith, nth, 1, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        float *xr = j->x + r * j->dim;
        j->k->add(xr, xr, j->b + r * j->dim, j->dim);
        j->k->rmsnorm(j->out + r * j->dim, xr, j->w, j->dim, j->eps);
    }
}

void tm_cpu_op_add_rmsnorm(const tm_cpu_kernels *k, tm_threadpool *pool, float *x, const float *r,
                           const float *w, float *out, int n, int dim, float eps) {
    tm_ew_job j = {.k = k, .out = out, .x = x, .b = r, .w = w, .n = n, .dim = dim, .eps = eps};
    tm_par(pool, n > 1 ? 2 * (int64_t)n * dim : 0, tm_add_rmsnorm_fn, &j);
}

void tm_cpu_op_add(const tm_cpu_kernels *k, tm_threadpool *pool, float *out, const float *a,
                   const float *b, int64_t n) {
    tm_ew_job j = {.k = k, .binary = k->add, .out = out, .a = a, .b = b, .n = n};
    tm_par(pool, n, tm_binary_fn, &j);
}

void tm_cpu_op_silu_mul(const tm_cpu_kernels *k, tm_threadpool *pool, float *out,
                        const float *gate, const float *up, int64_t n) {
    tm_ew_job j = {.k = k, .binary = k->silu_mul, .out = out, .a = gate, .b = up, .n = n};
    tm_par(pool, n * 4, tm_binary_fn, &j); /* exp makes each element ~4x an add */
}

void tm_cpu_op_gelu_mul(const tm_cpu_kernels *k, tm_threadpool *pool, float *out,
                        const float *gate, const float *up, int64_t n) {
    tm_ew_job j = {.k = k, .binary = k->gelu_mul, .out = out, .a = gate, .b = up, .n = n};
    tm_par(pool, n * 4, tm_binary_fn, &j); /* as silu_mul: an exp per element */
}

void tm_cpu_op_scale(const tm_cpu_kernels *k, tm_threadpool *pool, float *out, const float *x,
                     int64_t n, float s, float cap) {
    tm_ew_job j = {.k = k, .out = out, .a = x, .n = n, .s = s, .eps = cap};
    tm_par(pool, cap > 0.0f ? n * 4 : n, tm_scale_fn, &j);
}

void tm_cpu_op_rmsnorm(const tm_cpu_kernels *k, tm_threadpool *pool, float *out, const float *x,
                       const float *w, int n, int dim, float eps) {
    tm_ew_job j = {.k = k, .out = out, .a = x, .w = w, .n = n, .dim = dim, .eps = eps};
    tm_par(pool, n > 1 ? (int64_t)n * dim : 0, tm_rmsnorm_fn, &j);
}

void tm_cpu_op_get_rows(float *out, const float *x, const int32_t *rows, int n_rows, int dim) {
    for (int i = 0; i < n_rows; i++)
        memcpy(out + (int64_t)i * dim, x + (int64_t)rows[i] * dim, (size_t)dim * sizeof(float));
}

/* ---- argmax of rows (greedy sampling)
 *
 * Each thread scans its share of every row's columns: the output matmul computed the
 * logits tile by tile over the same threads, so mostly the lines in its own cache. The
 * shares are then combined in column order. */

typedef struct tm_argmax_job {
    const float *x;
    int n_rows, n_cols;
    float *m;     /* (threads, n_rows) largest value of a thread's share */
    int32_t *at;  /* (threads, n_rows) its first column, -1 if the share is all NaN */
    int nth_used; /* threads the job ran on */
} tm_argmax_job;

static void tm_argmax_fn(void *ctx, int ith, int nth) {
    tm_argmax_job *j = ctx;
    if (ith == 0) j->nth_used = nth;
    int64_t lo, hi;
    tm_cpu_share(j->n_cols, ith, nth, 16, &lo, &hi);
    for (int r = 0; r < j->n_rows; r++)
        tm_argmax_range(j->x + (int64_t)r * j->n_cols, lo, hi, &j->m[(int64_t)ith * j->n_rows + r],
                        &j->at[(int64_t)ith * j->n_rows + r]);
}

void tm_cpu_op_argmax_rows(tm_threadpool *pool, tm_cpu_scratch *scratch, const float *x, int n_rows,
                           int n_cols, int32_t *out) {
    if (n_rows <= 0) return;
    const int nth = pool ? tm_threadpool_size(pool) : 1;
    const size_t part = ((size_t)nth * n_rows * sizeof(float) + TM_ALIGN - 1) / TM_ALIGN * TM_ALIGN;
    tm_argmax_job j = {.x = x, .n_rows = n_rows, .n_cols = n_cols};
    const int grown = tm_cpu_scratch_reserve(scratch, 2 * part) == TM_OK;
    if (grown) {
        j.m = scratch->data;
        j.at = (int32_t *)(void *)((char *)scratch->data + part);
        tm_par(pool, (int64_t)n_rows * n_cols, tm_argmax_fn, &j);
    }
    for (int r = 0; r < n_rows; r++) {
        float m = -INFINITY;
        int32_t at = -1;
        if (grown) { /* in column order; a later share wins only with a larger value */
            for (int t = 0; t < j.nth_used; t++) {
                const int64_t k = (int64_t)t * n_rows + r;
                if (j.at[k] >= 0 && (at < 0 || j.m[k] > m)) m = j.m[k], at = j.at[k];
            }
        } else {
            tm_argmax_range(x + (int64_t)r * n_cols, 0, n_cols, &m, &at);
        }
        out[r] = at < 0 ? 0 : at;
    }
}

/* ---- rope */

typedef struct tm_rope_job {
    const tm_cpu_kernels *k;  /* kernels */
    float *q, *kk;            /* (n, n_heads, head_dim), (n, n_kv_heads, head_dim) */
    const int32_t *pos;       /* (n) */
    int n, n_heads, n_kv_heads, head_dim, n_dims, neox;
    const double *inv_freq;   /* (n_dims / 2) freq_scale * theta^(-2i/n_dims) / factor_i */
    float *tables;            /* (n, n_dims): per token cos then sin, or NULL (per call) */
    int fill;                 /* 1: compute tables first; 0: they hold these positions */
} tm_rope_job;

static void tm_rope_fn(void *ctx, int ith, int nth) {
    tm_rope_job *j = ctx;
    float local[TM_ROPE_MAX_DIMS];
    const int half = j->n_dims / 2;
    int64_t lo, hi;
    tm_cpu_share(j->n, ith, nth, 1, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        float *cos_t = j->tables ? j->tables + t * j->n_dims : local, *sin_t = cos_t + half;
        /* angles in double: at position 1e5 a float angle is already off by ~1e-2 rad */
        if (j->fill || !j->tables)
            for (int i = 0; i < half; i++) {
                double a = (double)j->pos[t] * j->inv_freq[i];
                cos_t[i] = (float)cos(a);
                sin_t[i] = (float)sin(a);
            }
        if (j->q)
            j->k->rope(j->q + t * j->n_heads * j->head_dim, j->n_heads, j->head_dim, j->n_dims,
                       j->neox, cos_t, sin_t);
        if (j->kk)
            j->k->rope(j->kk + t * j->n_kv_heads * j->head_dim, j->n_kv_heads, j->head_dim,
                       j->n_dims, j->neox, cos_t, sin_t);
    }
}

/* The cached tables for these positions: *fill = 0 if they hold them already, 1 if the
 * caller must compute them. NULL when there is no cache or no memory for it. */
static float *tm_rope_tables(tm_cpu_rope_cache *cache, const int32_t *pos, int n, const tm_rope *rope, int *fill) {
    *fill = 1;
    if (!cache) return NULL;
    const size_t pos_bytes = (size_t)n * sizeof(int32_t), pad = (pos_bytes + 63) & ~(size_t)63;
    const size_t factor_bytes = (size_t)(rope->n_dims / 2) * sizeof(float);
    const uint64_t now = ++cache->calls;
    tm_cpu_rope_tables *c = NULL;
    for (int i = 0; i < 2; i++) {
        tm_cpu_rope_tables *t = &cache->set[i];
        if (t->valid && t->n == n && t->n_dims == rope->n_dims && t->theta == rope->theta &&
            t->freq_scale == rope->freq_scale && t->has_factors == (rope->freq_factors != NULL) &&
            (!rope->freq_factors || memcmp(t->factors, rope->freq_factors, factor_bytes) == 0) &&
            memcmp(t->mem.data, pos, pos_bytes) == 0) {
            t->used = now;
            *fill = 0;
            return (float *)((uint8_t *)t->mem.data + pad);
        }
        if (!c || t->used < c->used) c = t; /* the least recently used set is refilled */
    }
    c->used = now;
    c->valid = 0;
    if (tm_cpu_scratch_reserve(&c->mem, pad + (size_t)n * (size_t)rope->n_dims * sizeof(float))) return NULL;
    memcpy(c->mem.data, pos, pos_bytes);
    c->n = n, c->n_dims = rope->n_dims, c->theta = rope->theta, c->freq_scale = rope->freq_scale;
    c->has_factors = rope->freq_factors != NULL;
    if (c->has_factors) memcpy(c->factors, rope->freq_factors, factor_bytes);
    c->valid = 1;
    return (float *)((uint8_t *)c->mem.data + pad);
}

void tm_cpu_op_rope(const tm_cpu_kernels *k, tm_threadpool *pool, tm_cpu_rope_cache *cache, float *q,
                    float *kk, const int32_t *pos, int n, int n_heads, int n_kv_heads, int head_dim,
                    const tm_rope *rope) {
    assert(rope->n_dims > 0 && rope->n_dims % 2 == 0 && rope->n_dims <= head_dim &&
           rope->n_dims <= TM_ROPE_MAX_DIMS);
    tm_rope_job j = {.k = k, .q = q, .kk = kk, .pos = pos, .n = n, .n_heads = n_heads,
                     .n_kv_heads = n_kv_heads, .head_dim = head_dim, .n_dims = rope->n_dims,
                     .neox = rope->neox};
    j.tables = tm_rope_tables(cache, pos, n, rope, &j.fill);
    double inv_freq[TM_ROPE_MAX_DIMS / 2];
    if (j.fill) { /* the tables are computed: a pow per frequency */
        for (int i = 0; i < rope->n_dims / 2; i++) {
            double f = pow((double)rope->theta, -2.0 * i / rope->n_dims) * rope->freq_scale;
            if (rope->freq_factors) f /= rope->freq_factors[i];
            inv_freq[i] = f;
        }
        j.inv_freq = inv_freq;
    }
    /* sin/cos cost about as much as rotating a dozen heads: count them as work too */
    const int64_t work = (int64_t)n * (n_heads + n_kv_heads + (j.fill ? 16 : 0)) * rope->n_dims;
    tm_par(pool, n > 1 ? work : 0, tm_rope_fn, &j);
}

/* ---- kv_store */

typedef struct tm_kv_store_job {
    const tm_cpu_kernels *k;  /* kernels */
    struct tm_kv_cache *kv;   /* destination */
    int layer;                /* layer to write */
    const float *kk, *v;      /* (n, n_kv_heads, head_dim) f32 */
    const int32_t *slots;     /* (n) */
    int n;                    /* tokens */
} tm_kv_store_job;

static void tm_kv_store_fn(void *ctx, int ith, int nth) {
    tm_kv_store_job *j = ctx;
    const tm_kv_shape *s = &j->kv->shape;
    const size_t tile_bytes = tm_kv_tile_bytes(s), scale_off = tm_kv_tile_scale_offset(s);
    int64_t lo, hi;
    tm_cpu_share(j->n, ith, nth, 1, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        int32_t slot = j->slots[t];
        if (slot < 0) continue; /* padding */
        int block = slot / s->block_size, off = slot % s->block_size;
        assert(block < s->n_blocks);
        for (int h = 0; h < s->n_kv_heads; h++) {
            int64_t src = (t * s->n_kv_heads + h) * s->head_dim;
            if (s->dtype == TM_KV_INT8) {
                /* K down column off of its dim-major tile, V along row off; scales after the values */
                const size_t tile = tm_cpu_kv_tile(s, j->layer, block, h) * tile_bytes;
                uint8_t *kt = j->kv->k8 + tile, *vt = j->kv->v8 + tile;
                int8_t kq[TM_KV_INT8_MAX_HEAD_DIM];
                j->k->kv_quantize(j->kk + src, s->head_dim, kq, (float *)(void *)(kt + scale_off) + off);
                for (int d = 0; d < s->head_dim; d += 4) /* 4 dims of key off, stored + 128 */
                    for (int e = 0; e < 4; e++)
                        kt[((size_t)d * s->block_size + 4 * off) + e] = (uint8_t)(kq[d + e] + 128);
                j->k->kv_quantize(j->v + src, s->head_dim, (int8_t *)vt + (size_t)off * s->head_dim,
                                  (float *)(void *)(vt + scale_off) + off);
                continue;
            }
            size_t tile = tm_cpu_kv_offset(s, j->layer, block, h);
            j->k->f32_to_f16(j->kv->v + tile + (size_t)off * s->head_dim, j->v + src, s->head_dim);
            /* K is dim-major in the page: convert a run of dims, then scatter it down column off */
            uint16_t *kcol = j->kv->k + tile + off;
            for (int d0 = 0; d0 < s->head_dim; d0 += TM_KV_STORE_RUN) {
                uint16_t run[TM_KV_STORE_RUN];
                int n = TM_MIN(TM_KV_STORE_RUN, s->head_dim - d0);
                j->k->f32_to_f16(run, j->kk + src + d0, n);
                for (int d = 0; d < n; d++) kcol[(size_t)(d0 + d) * s->block_size] = run[d];
            }
        }
    }
}

void tm_cpu_op_kv_store(const tm_cpu_kernels *k, tm_threadpool *pool, struct tm_kv_cache *kv,
                        int layer, const float *kk, const float *v, const int32_t *slots, int n) {
    tm_kv_store_job j = {.k = k, .kv = kv, .layer = layer, .kk = kk, .v = v, .slots = slots, .n = n};
    tm_par(pool, n > 1 ? (int64_t)n * kv->shape.n_kv_heads * kv->shape.head_dim * 4 : 0,
           tm_kv_store_fn, &j);
}

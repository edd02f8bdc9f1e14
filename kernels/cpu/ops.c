/* ops.c - scalar reference kernels of the CPU backend and the op drivers that partition
 * every op over the thread pool. No intrinsics here: this file is the readable reference
 * the SIMD files are tested against. */
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
    TM_ATTN_ROWS = 16,    /* query rows per attention work item (at most) */
    TM_ATTN_CLAIMS_PER_THREAD = 4, /* claims each thread gets at least, when items go by kv heads */
    TM_KV_STORE_RUN = 256, /* dims of one key converted to f16 at once by kv_store */
    TM_ALIGN = 64,
};

/* ---------------------------------------------------------------- scalar kernels */

static void tm_rmsnorm_scalar(float *out, const float *x, const float *w, int dim, float eps) {
    double ss = 0.0; /* double: the reference should not lose bits over long rows */
    for (int i = 0; i < dim; i++) ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / dim + eps));
    for (int i = 0; i < dim; i++) out[i] = x[i] * r * w[i];
}

static void tm_add_scalar(float *out, const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static void tm_silu_mul_scalar(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static void tm_rope_scalar(float *x, int n_heads, int head_dim, int n_dims, int neox,
                           const float *cos_t, const float *sin_t) {
    int half = n_dims / 2;
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (int64_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            /* neox rotates (i, i + half); llama GGUF rotates adjacent pairs (2i, 2i + 1). */
            int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
            float x0 = xh[i0], x1 = xh[i1];
            xh[i0] = x0 * cos_t[i] - x1 * sin_t[i];
            xh[i1] = x0 * sin_t[i] + x1 * cos_t[i];
        }
    }
}

static void tm_f32_to_f16_scalar(uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = tm_f32_to_f16(src[i]);
}

void tm_cpu_attn_chunk_scalar(const tm_attn_chunk *a) {
    const int hd = a->head_dim;
    for (int i = 0; i < a->nq; i++) {
        const float *qi = a->q + (int64_t)(i / a->n_group) * a->q_row_stride + (i % a->n_group) * hd;
        float *s = a->scores + (int64_t)i * TM_ATTN_CHUNK;
        const int nv = a->n_vis[i];
        if (nv == 0) {
            a->m[i] = -INFINITY;
            a->l[i] = 0.0f;
            continue;
        }
        /* scores of the visible keys, segment by segment */
        for (int seg = 0, j0 = 0; seg < a->n_seg && j0 < nv; j0 += a->seg_len[seg++]) {
            for (int j = 0; j < a->seg_len[seg] && j0 + j < nv; j++) {
                float dot = 0.0f;
                if (a->k8) { /* ops.h: u8 in groups of 4 dims, and int8 queries */
                    const uint8_t *kj = a->k8[seg] + 4 * j;
                    const int8_t *q8 = a->q8 + (int64_t)i * hd;
                    int32_t idot = -128 * a->q8sum[i];
                    for (int d = 0; d < hd; d++) idot += q8[d] * kj[(int64_t)(d / 4) * 4 * a->k_dim_stride + d % 4];
                    dot = a->ks[seg][j] * (a->q8s[i] * (float)idot);
                } else {
                    const uint16_t *kj = a->k[seg] + j;
                    for (int d = 0; d < hd; d++) dot += qi[d] * tm_f16_to_f32(kj[(int64_t)d * a->k_dim_stride]);
                }
                s[j0 + j] = a->scale * dot;
            }
        }
        float mx = -INFINITY;
        for (int j = 0; j < nv; j++) mx = s[j] > mx ? s[j] : mx;
        float l = 0.0f;
        for (int j = 0; j < nv; j++) {
            s[j] = expf(s[j] - mx);
            l += s[j];
        }
        /* o = sum_j p_j v_j, accumulated in f32 */
        float *o = a->o + (int64_t)i * hd;
        for (int d = 0; d < hd; d++) o[d] = 0.0f;
        for (int seg = 0, j0 = 0; seg < a->n_seg && j0 < nv; j0 += a->seg_len[seg++]) {
            for (int j = 0; j < a->seg_len[seg] && j0 + j < nv; j++) {
                if (a->v8) {
                    const int8_t *vj = a->v8[seg] + (int64_t)j * hd;
                    const float p = s[j0 + j] * a->vs[seg][j];
                    for (int d = 0; d < hd; d++) o[d] += p * (float)vj[d];
                    continue;
                }
                const uint16_t *vj = a->v[seg] + (int64_t)j * hd;
                for (int d = 0; d < hd; d++) o[d] += s[j0 + j] * tm_f16_to_f32(vj[d]);
            }
        }
        a->m[i] = mx;
        a->l[i] = l;
    }
}

void tm_cpu_attn_weigh_values(const tm_attn_chunk *a, int i) {
    float *p = a->scores + (int64_t)i * TM_ATTN_CHUNK;
    for (int seg = 0, j0 = 0; seg < a->n_seg && j0 < a->n_vis[i]; j0 += a->seg_len[seg++])
        for (int j = 0; j < TM_MIN(a->seg_len[seg], a->n_vis[i] - j0); j++) p[j0 + j] *= a->vs[seg][j];
}

static const tm_cpu_kernels tm_kernels_scalar = {
    .level = TM_SIMD_SCALAR,
    .rmsnorm = tm_rmsnorm_scalar,
    .add = tm_add_scalar,
    .silu_mul = tm_silu_mul_scalar,
    .rope = tm_rope_scalar,
    .f32_to_f16 = tm_f32_to_f16_scalar,
    .attn_chunk = tm_cpu_attn_chunk_scalar,
    .kv_quantize = tm_cpu_kv_quantize,
};

const tm_cpu_kernels *tm_cpu_kernels_scalar(void) { return &tm_kernels_scalar; }

const tm_cpu_kernels *tm_cpu_kernels_get(int level) {
    switch (level) {
    case TM_SIMD_SCALAR: return &tm_kernels_scalar;
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

void tm_cpu_kv_quantize(const float *x, int n, int8_t *q, float *scale) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (!(ax <= amax) && amax == amax) amax = ax; /* a NaN sticks */
    }
    const float d = amax / 127.0f;
    if (!(d < INFINITY)) { /* NaN or inf in x: a NaN scale, so reads are NaN as with f16 */
        for (int i = 0; i < n; i++) q[i] = 0;
        *scale = NAN;
        return;
    }
    /* a zero vector, or one so small (max < ~4e-37) that 1 / d overflows: all q = 0 */
    const float id = d != 0.0f && 1.0f / d < INFINITY ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++) q[i] = (int8_t)lrintf(x[i] * id); /* |x * id| <= 127 */
    *scale = d;
}

void tm_cpu_scratch_free(tm_cpu_scratch *s) {
    free(s->data);
    s->data = NULL;
    s->n_bytes = 0;
}

/* Ensures capacity n_bytes; old contents are not kept. Returns 0 or TM_ENOMEM. */
static int tm_scratch_reserve(tm_cpu_scratch *s, size_t n_bytes) {
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

/* [*lo, *hi) = thread ith's share of [0, n), boundaries rounded to `align`. */
static void tm_share(int64_t n, int ith, int nth, int64_t align, int64_t *lo, int64_t *hi) {
    int64_t blocks = (n + align - 1) / align;
    *lo = TM_MIN(n, blocks * ith / nth * align);
    *hi = TM_MIN(n, blocks * (ith + 1) / nth * align);
}

typedef struct tm_ew_job {
    const tm_cpu_kernels *k; /* kernels */
    float *out;              /* (n) */
    const float *a, *b;      /* (n) inputs */
    const float *w;          /* (dim) rmsnorm weight */
    int64_t n;               /* elements (rows for rmsnorm) */
    int dim;                 /* rmsnorm row length */
    float eps;               /* rmsnorm epsilon */
} tm_ew_job;

static void tm_add_fn(void *ctx, int ith, int nth) {
    tm_ew_job *j = ctx;
    int64_t lo, hi;
    tm_share(j->n, ith, nth, 64, &lo, &hi);
    if (hi > lo) j->k->add(j->out + lo, j->a + lo, j->b + lo, hi - lo);
}

static void tm_silu_mul_fn(void *ctx, int ith, int nth) {
    tm_ew_job *j = ctx;
    int64_t lo, hi;
    tm_share(j->n, ith, nth, 64, &lo, &hi);
    if (hi > lo) j->k->silu_mul(j->out + lo, j->a + lo, j->b + lo, hi - lo);
}

static void tm_rmsnorm_fn(void *ctx, int ith, int nth) {
    tm_ew_job *j = ctx;
    int64_t lo, hi;
    tm_share(j->n, ith, nth, 1, &lo, &hi);
    for (int64_t r = lo; r < hi; r++)
        j->k->rmsnorm(j->out + r * j->dim, j->a + r * j->dim, j->w, j->dim, j->eps);
}

void tm_cpu_op_add(const tm_cpu_kernels *k, tm_threadpool *pool, float *out, const float *a,
                   const float *b, int64_t n) {
    tm_ew_job j = {.k = k, .out = out, .a = a, .b = b, .n = n};
    tm_par(pool, n, tm_add_fn, &j);
}

void tm_cpu_op_silu_mul(const tm_cpu_kernels *k, tm_threadpool *pool, float *out,
                        const float *gate, const float *up, int64_t n) {
    tm_ew_job j = {.k = k, .out = out, .a = gate, .b = up, .n = n};
    tm_par(pool, n * 4, tm_silu_mul_fn, &j); /* exp makes each element ~4x an add */
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
    tm_share(j->n_cols, ith, nth, 16, &lo, &hi);
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
    const int grown = tm_scratch_reserve(scratch, 2 * part) == TM_OK;
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
    tm_share(j->n, ith, nth, 1, &lo, &hi);
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
static float *tm_rope_tables(tm_cpu_rope_cache *c, const int32_t *pos, int n, const tm_rope *rope, int *fill) {
    *fill = 1;
    if (!c) return NULL;
    const size_t pos_bytes = (size_t)n * sizeof(int32_t), pad = (pos_bytes + 63) & ~(size_t)63;
    const size_t factor_bytes = (size_t)(rope->n_dims / 2) * sizeof(float);
    if (c->valid && c->n == n && c->n_dims == rope->n_dims && c->theta == rope->theta &&
        c->freq_scale == rope->freq_scale && c->has_factors == (rope->freq_factors != NULL) &&
        (!rope->freq_factors || memcmp(c->factors, rope->freq_factors, factor_bytes) == 0) &&
        memcmp(c->mem.data, pos, pos_bytes) == 0) {
        *fill = 0;
        return (float *)((uint8_t *)c->mem.data + pad);
    }
    c->valid = 0;
    if (tm_scratch_reserve(&c->mem, pad + (size_t)n * (size_t)rope->n_dims * sizeof(float))) return NULL;
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
    tm_share(j->n, ith, nth, 1, &lo, &hi);
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

/* ---- attention
 *
 * Work items are (sequence, kv head, up to TM_ATTN_ROWS query rows, a range of key
 * chunks). Each item handles all n_group query heads of its kv head, so K and V are read
 * once per group. A row's result is the left fold, in chunk order, of per-chunk softmax
 * partials (tm_attn_fold). When there are too few items to keep every thread busy (one
 * long decode), the big items are split into one item per chunk ("split-KV", as in
 * flash-decoding); each writes its partial to scratch and the last one to finish folds
 * them in chunk order, the same arithmetic as the unsplit path. */

typedef struct tm_attn_item {
    int seq;    /* sequence index */
    int head;   /* kv head */
    int t0, t1; /* batch token rows [t0, t1) */
    int c0, c1; /* key chunks [c0, c1) */
    int group;  /* split group, or -1 when this item covers all chunks of its rows */
} tm_attn_item;

/* A run of items claimed in order: a thread's own, those of the rows it gave to kv_store
 * (tm_share of the tokens), so the page tiles it just wrote, and read the step before,
 * are in its cache; or the split chunks, which every thread takes last. */
typedef struct tm_attn_slice {
    _Alignas(64) atomic_int next; /* first unclaimed item */
    int end;                      /* one past the slice's last item */
} tm_attn_slice;

typedef struct tm_attn_group {
    atomic_int n_done; /* chunk items finished; the one that makes it n_chunks merges */
    int n_chunks;      /* chunk items in the group (chunk c0 + i writes partial i) */
    float *part;       /* (n_chunks, nq, head_dim + 2) partial: o, then m, l */
} tm_attn_group;

typedef struct tm_attn_job {
    const tm_cpu_kernels *k;        /* kernels */
    const struct tm_kv_cache *kv;   /* cache */
    const tm_batch *b;              /* batch */
    float *out;                     /* (n_tokens, n_heads, head_dim) */
    const float *q;                 /* (n_tokens, n_heads, head_dim) */
    int layer, n_heads, n_group;    /* layer; query heads; query heads per kv head */
    float scale;                    /* softmax scale */
    tm_attn_item *items;            /* (n_items) */
    int n_items;                    /* work items */
    tm_attn_slice *slices;          /* (n_slices + 1) each thread's run of whole-row items,
                                     * then one of the split chunks that all share */
    int n_slices;                   /* the pool's threads (a run on fewer takes them all) */
    tm_attn_group *groups;          /* split groups */
    char *thread_mem;               /* (nth, thread_bytes) per-thread scratch */
    size_t thread_bytes;            /* bytes per thread */
} tm_attn_job;

/* (M, L, O) = fold of the running state with one chunk's partial (m, l, o). */
static void tm_attn_fold(float *M, float *L, float *O, float m, float l, const float *o, int hd) {
    if (l == 0.0f) return; /* chunk had no visible key */
    if (*L == 0.0f) {
        *M = m;
        *L = l;
        memcpy(O, o, (size_t)hd * sizeof(float));
        return;
    }
    float mn = m > *M ? m : *M;
    float a = expf(*M - mn), c = expf(m - mn);
    *L = *L * a + l * c;
    for (int d = 0; d < hd; d++) O[d] = O[d] * a + o[d] * c;
    *M = mn;
}

static void tm_attn_write(const tm_attn_job *j, const tm_attn_item *it, int i, const float *O,
                          float L) {
    int hd = j->kv->shape.head_dim;
    int t = it->t0 + i / j->n_group, h = it->head * j->n_group + i % j->n_group;
    float *dst = j->out + ((int64_t)t * j->n_heads + h) * hd;
    float r = 1.0f / L;
    for (int d = 0; d < hd; d++) dst[d] = O[d] * r;
}

/* Per-thread scratch layout, for nq_max queries. */
typedef struct tm_attn_tmem {
    float *scores, *m, *l, *o;       /* chunk outputs: (nq, CHUNK), (nq), (nq), (nq, hd) */
    float *kv_f32;                   /* (2 * TM_ATTN_SUB * hd) kernel scratch */
    float *M, *L, *O;                /* running fold state: (nq), (nq), (nq, hd) */
    int *n_vis, *seg_len;            /* (nq), (CHUNK + 1) */
    const uint16_t **kseg, **vseg;   /* (CHUNK + 1) f16 segments */
    const uint8_t **k8seg;           /* (CHUNK + 1) int8 segments */
    const int8_t **v8seg;
    const float **kscale, **vscale;  /* (CHUNK + 1) their scales */
    int8_t *q8;                      /* (nq, hd) int8 queries */
    float *q8s;                      /* (nq) */
    int32_t *q8sum;                  /* (nq) */
} tm_attn_tmem;

static size_t tm_attn_tmem_layout(int nq, int hd, char *base, tm_attn_tmem *t) {
    size_t off = 0;
#define TM_CARVE(field, type, count)                                          \
    do {                                                                      \
        if (t) t->field = (type *)(void *)(base + off);                      \
        off += ((size_t)(count) * sizeof(type) + TM_ALIGN - 1) / TM_ALIGN * TM_ALIGN; \
    } while (0)
    TM_CARVE(scores, float, (size_t)nq * TM_ATTN_CHUNK);
    TM_CARVE(kv_f32, float, 2 * TM_ATTN_SUB * hd);
    TM_CARVE(m, float, nq);
    TM_CARVE(l, float, nq);
    TM_CARVE(o, float, (size_t)nq * hd);
    TM_CARVE(M, float, nq);
    TM_CARVE(L, float, nq);
    TM_CARVE(O, float, (size_t)nq * hd);
    TM_CARVE(n_vis, int, nq);
    TM_CARVE(seg_len, int, TM_ATTN_CHUNK + 1);
    TM_CARVE(kseg, const uint16_t *, TM_ATTN_CHUNK + 1);
    TM_CARVE(vseg, const uint16_t *, TM_ATTN_CHUNK + 1);
    TM_CARVE(k8seg, const uint8_t *, TM_ATTN_CHUNK + 1);
    TM_CARVE(v8seg, const int8_t *, TM_ATTN_CHUNK + 1);
    TM_CARVE(kscale, const float *, TM_ATTN_CHUNK + 1);
    TM_CARVE(vscale, const float *, TM_ATTN_CHUNK + 1);
    TM_CARVE(q8, int8_t, (size_t)nq * hd);
    TM_CARVE(q8s, float, nq);
    TM_CARVE(q8sum, int32_t, nq);
#undef TM_CARVE
    return off;
}

/* Runs chunk c of item `it` into tm->m, l, o. */
static void tm_attn_run_chunk(const tm_attn_job *j, const tm_attn_item *it, int c, tm_attn_tmem *tm) {
    const tm_kv_shape *s = &j->kv->shape;
    const tm_batch *b = j->b;
    const int hd = s->head_dim, bs = s->block_size, G = j->n_group;
    const int nq = (it->t1 - it->t0) * G;
    const int k0 = c * TM_ATTN_CHUNK;
    const int kmax = b->pos[it->t1 - 1] + 1; /* positions ascend within a sequence */
    const int n_keys = TM_MIN(TM_ATTN_CHUNK, kmax - k0);
    const int32_t *table = b->block_table + (int64_t)it->seq * b->max_blocks;
    const int i8 = s->dtype == TM_KV_INT8;
    const size_t tile_bytes = tm_kv_tile_bytes(s), scale_off = tm_kv_tile_scale_offset(s);
    int n_seg = 0;
    for (int key = k0; key < k0 + n_keys;) {
        int blk = key / bs, off = key % bs, len = TM_MIN(bs - off, k0 + n_keys - key);
        assert(blk < b->max_blocks && table[blk] >= 0 && table[blk] < s->n_blocks);
        if (i8) {
            const size_t tile = tm_cpu_kv_tile(s, j->layer, table[blk], it->head) * tile_bytes;
            const uint8_t *kt = j->kv->k8 + tile, *vt = j->kv->v8 + tile;
            tm->k8seg[n_seg] = kt + 4 * off;
            tm->v8seg[n_seg] = (const int8_t *)vt + (size_t)off * hd;
            tm->kscale[n_seg] = (const float *)(const void *)(kt + scale_off) + off;
            tm->vscale[n_seg] = (const float *)(const void *)(vt + scale_off) + off;
        } else {
            size_t tile = tm_cpu_kv_offset(s, j->layer, table[blk], it->head);
            tm->kseg[n_seg] = j->kv->k + tile + off;
            tm->vseg[n_seg] = j->kv->v + tile + (size_t)off * hd;
        }
        tm->seg_len[n_seg++] = len;
        key += len;
    }
    for (int i = 0; i < nq; i++) {
        int vis = b->pos[it->t0 + i / G] + 1 - k0; /* causal: token t sees keys 0..pos[t] */
        tm->n_vis[i] = vis < 0 ? 0 : TM_MIN(vis, n_keys);
    }
    tm_attn_chunk a = {
        .q = j->q + ((int64_t)it->t0 * j->n_heads + (int64_t)it->head * G) * hd,
        .q_row_stride = (int64_t)j->n_heads * hd, .n_group = G, .nq = nq, .n_vis = tm->n_vis,
        .n_keys = n_keys, .n_seg = n_seg, .k = i8 ? NULL : tm->kseg, .k_dim_stride = bs,
        .v = i8 ? NULL : tm->vseg, .k8 = i8 ? tm->k8seg : NULL, .v8 = i8 ? tm->v8seg : NULL,
        .ks = i8 ? tm->kscale : NULL, .vs = i8 ? tm->vscale : NULL, .q8 = tm->q8, .q8s = tm->q8s,
        .q8sum = tm->q8sum,
        .seg_len = tm->seg_len, .head_dim = hd, .scale = j->scale, .scores = tm->scores,
        .kv_f32 = tm->kv_f32, .m = tm->m, .l = tm->l, .o = tm->o,
    };
    j->k->attn_chunk(&a);
}

/* The item's queries as int8 (an int8 cache quantizes them too, ops.h), once for all its chunks. */
static void tm_attn_quantize_queries(const tm_attn_job *j, const tm_attn_item *it, tm_attn_tmem *tm) {
    const int hd = j->kv->shape.head_dim, G = j->n_group, nq = (it->t1 - it->t0) * G;
    const float *q = j->q + ((int64_t)it->t0 * j->n_heads + (int64_t)it->head * G) * hd;
    for (int i = 0; i < nq; i++) {
        int8_t *q8 = tm->q8 + (int64_t)i * hd;
        j->k->kv_quantize(q + (int64_t)(i / G) * j->n_heads * hd + (int64_t)(i % G) * hd, hd, q8, &tm->q8s[i]);
        int32_t sum = 0;
        for (int d = 0; d < hd; d++) sum += q8[d];
        tm->q8sum[i] = sum;
    }
}

static void tm_attn_run_item(tm_attn_job *j, const tm_attn_item *it, tm_attn_tmem *tm) {
    const int hd = j->kv->shape.head_dim;
    const int nq = (it->t1 - it->t0) * j->n_group;
    if (j->kv->shape.dtype == TM_KV_INT8) tm_attn_quantize_queries(j, it, tm);
    if (it->group < 0) {
        for (int i = 0; i < nq; i++) tm->L[i] = 0.0f;
        for (int c = it->c0; c < it->c1; c++) {
            tm_attn_run_chunk(j, it, c, tm);
            for (int i = 0; i < nq; i++)
                tm_attn_fold(&tm->M[i], &tm->L[i], tm->O + (int64_t)i * hd, tm->m[i], tm->l[i],
                             tm->o + (int64_t)i * hd, hd);
        }
        for (int i = 0; i < nq; i++) tm_attn_write(j, it, i, tm->O + (int64_t)i * hd, tm->L[i]);
        return;
    }
    tm_attn_group *g = &j->groups[it->group];
    const int64_t part_floats = (int64_t)nq * (hd + 2);
    tm_attn_run_chunk(j, it, it->c0, tm);
    float *part = g->part + (int64_t)it->c0 * part_floats; /* a group's chunks start at 0 */
    for (int i = 0; i < nq; i++) {
        memcpy(part + (int64_t)i * (hd + 2), tm->o + (int64_t)i * hd, (size_t)hd * sizeof(float));
        part[(int64_t)i * (hd + 2) + hd] = tm->m[i];
        part[(int64_t)i * (hd + 2) + hd + 1] = tm->l[i];
    }
    /* acq_rel: publishes this partial; the last one sees everyone's */
    if (atomic_fetch_add_explicit(&g->n_done, 1, memory_order_acq_rel) != g->n_chunks - 1) return;
    for (int i = 0; i < nq; i++) {
        tm->L[i] = 0.0f;
        for (int c = 0; c < g->n_chunks; c++) {
            const float *pc = g->part + c * part_floats + (int64_t)i * (hd + 2);
            tm_attn_fold(&tm->M[i], &tm->L[i], tm->O + (int64_t)i * hd, pc[hd], pc[hd + 1], pc, hd);
        }
        tm_attn_write(j, it, i, tm->O + (int64_t)i * hd, tm->L[i]);
    }
}

static void tm_attn_fn(void *ctx, int ith, int nth) {
    tm_attn_job *j = ctx;
    tm_attn_tmem tm;
    tm_attn_tmem_layout(TM_ATTN_ROWS * j->n_group, j->kv->shape.head_dim,
                        j->thread_mem + (size_t)ith * j->thread_bytes, &tm);
    /* With items enough, they are claimed a kv head count at a time: the items of one row
     * tile, one per kv head, then run on one thread in a row, and their K (and V) tiles
     * lie side by side in each page, so the reads continue one stream instead of starting
     * 2 KiB runs on two cores (bench_ops --case decode16: 12-18% faster). */
    const int per = j->n_items >= TM_ATTN_CLAIMS_PER_THREAD * j->kv->shape.n_kv_heads * nth
                        ? j->kv->shape.n_kv_heads : 1;
    /* its own slice first, then what is left of the others', then the split chunks */
    for (int k = 0; k <= j->n_slices; k++) {
        tm_attn_slice *sl = &j->slices[k < j->n_slices ? (ith + k) % j->n_slices : j->n_slices];
        for (;;) {
            const int i0 = atomic_fetch_add_explicit(&sl->next, per, memory_order_relaxed);
            if (i0 >= sl->end) break;
            for (int i = i0; i < TM_MIN(i0 + per, sl->end); i++) tm_attn_run_item(j, &j->items[i], &tm);
        }
    }
}

/* Does the tile [t0, t1) get split into its chunks? */
static int tm_attn_split(const tm_batch *b, int t0, int t1, int64_t split_cost) {
    int kmax = b->pos[t1 - 1] + 1;
    return kmax > TM_ATTN_CHUNK && (int64_t)(t1 - t0) * kmax > split_cost;
}

/* Counts the base items (one per sequence, kv head and row tile) for a tile height, and
 * their total cost in (row, key) pairs. */
static int tm_attn_count(const tm_batch *b, int n_kv_heads, int rows, int64_t *cost) {
    int n = 0;
    *cost = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        for (int t0 = b->seq_start[s]; t0 < b->seq_start[s + 1]; t0 += rows) {
            int t1 = TM_MIN(t0 + rows, b->seq_start[s + 1]);
            n += n_kv_heads;
            *cost += (int64_t)n_kv_heads * (t1 - t0) * (b->pos[t1 - 1] + 1);
        }
    }
    return n;
}

void tm_cpu_op_attention(const tm_cpu_kernels *k, tm_threadpool *pool, tm_cpu_scratch *scratch,
                         float *out, const float *q, const struct tm_kv_cache *kv, int layer,
                         const tm_batch *b, int n_heads, float scale) {
    const tm_kv_shape *s = &kv->shape;
    const int n_kvh = s->n_kv_heads, hd = s->head_dim;
    assert(n_heads % n_kvh == 0 && layer >= 0 && layer < s->n_layers);
    const int G = n_heads / n_kvh;
    const int nth = pool ? tm_threadpool_size(pool) : 1;
    if (b->n_tokens == 0) return;

    /* Shorter row tiles until there are a couple of items per thread (rows are
     * independent, so the tile height never changes a result). */
    int rows = TM_ATTN_ROWS;
    int64_t cost;
    int n_base = tm_attn_count(b, n_kvh, rows, &cost);
    while (rows > 1 && n_base < 2 * nth) n_base = tm_attn_count(b, n_kvh, rows /= 2, &cost);

    /* Split the items that alone exceed half a thread's fair share into their chunks. */
    int64_t split_cost = nth > 1 ? cost / (2 * nth) : INT64_MAX;
    int n_items = 0, n_groups = 0, n_split_items = 0;
    size_t part_floats = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) split_cost = INT64_MAX; /* the split layout did not fit: go without */
        n_items = n_groups = n_split_items = 0;
        part_floats = 0;
        for (int sq = 0; sq < b->n_seqs; sq++)
            for (int t0 = b->seq_start[sq]; t0 < b->seq_start[sq + 1]; t0 += rows) {
                int t1 = TM_MIN(t0 + rows, b->seq_start[sq + 1]);
                int kmax = b->pos[t1 - 1] + 1;
                int n_chunks = (kmax + TM_ATTN_CHUNK - 1) / TM_ATTN_CHUNK;
                int split = tm_attn_split(b, t0, t1, split_cost);
                n_items += n_kvh * (split ? n_chunks : 1);
                if (split) {
                    n_groups += n_kvh;
                    n_split_items += n_kvh * n_chunks;
                    part_floats += (size_t)n_kvh * n_chunks * (t1 - t0) * G * (hd + 2);
                }
            }
        size_t thread_bytes = tm_attn_tmem_layout(TM_ATTN_ROWS * G, hd, NULL, NULL);
        size_t need = ((size_t)n_items * sizeof(tm_attn_item) + TM_ALIGN) +
                      ((size_t)(nth + 1) * sizeof(tm_attn_slice) + TM_ALIGN) +
                      ((size_t)n_groups * sizeof(tm_attn_group) + TM_ALIGN) +
                      (part_floats * sizeof(float) + TM_ALIGN) + (size_t)nth * thread_bytes;
        if (tm_scratch_reserve(scratch, need) == TM_OK) break;
        if (pass == 1) {
            TM_ERRORF("attention: out of memory for %zu bytes of scratch", need);
            for (int64_t i = 0; i < (int64_t)b->n_tokens * n_heads * hd; i++) out[i] = NAN;
            return;
        }
    }

    /* Carve the scratch and fill in the items: unsplit (big) items first, then chunks. */
    char *base = scratch->data;
    size_t thread_bytes = tm_attn_tmem_layout(TM_ATTN_ROWS * G, hd, NULL, NULL);
    tm_attn_job j = {.k = k, .kv = kv, .b = b, .out = out, .q = q, .layer = layer,
                     .n_heads = n_heads, .n_group = G, .scale = scale, .thread_bytes = thread_bytes};
    size_t off = 0;
    j.items = (tm_attn_item *)(void *)(base + off);
    off += ((size_t)n_items * sizeof(tm_attn_item) + TM_ALIGN - 1) / TM_ALIGN * TM_ALIGN;
    j.slices = (tm_attn_slice *)(void *)(base + off);
    off += ((size_t)(nth + 1) * sizeof(tm_attn_slice) + TM_ALIGN - 1) / TM_ALIGN * TM_ALIGN;
    j.groups = (tm_attn_group *)(void *)(base + off);
    off += ((size_t)n_groups * sizeof(tm_attn_group) + TM_ALIGN - 1) / TM_ALIGN * TM_ALIGN;
    float *parts = (float *)(void *)(base + off);
    off += (part_floats * sizeof(float) + TM_ALIGN - 1) / TM_ALIGN * TM_ALIGN;
    j.thread_mem = base + off;

    int next_big = 0, next_chunk = n_items - n_split_items, gi = 0;
    for (int sq = 0; sq < b->n_seqs; sq++)
        for (int t0 = b->seq_start[sq]; t0 < b->seq_start[sq + 1]; t0 += rows) {
            int t1 = TM_MIN(t0 + rows, b->seq_start[sq + 1]);
            int kmax = b->pos[t1 - 1] + 1;
            int n_chunks = (kmax + TM_ATTN_CHUNK - 1) / TM_ATTN_CHUNK;
            int split = tm_attn_split(b, t0, t1, split_cost);
            for (int h = 0; h < n_kvh; h++) {
                if (!split) {
                    j.items[next_big++] = (tm_attn_item){sq, h, t0, t1, 0, n_chunks, -1};
                    continue;
                }
                tm_attn_group *g = &j.groups[gi];
                atomic_init(&g->n_done, 0);
                g->n_chunks = n_chunks;
                g->part = parts;
                parts += (size_t)n_chunks * (t1 - t0) * G * (hd + 2);
                for (int c = 0; c < n_chunks; c++)
                    j.items[next_chunk++] = (tm_attn_item){sq, h, t0, t1, c, c + 1, gi};
                gi++;
            }
        }
    assert(next_big == n_items - n_split_items && next_chunk == n_items && gi == n_groups);
    j.n_items = n_items;
    j.n_slices = nth;
    /* slice i: the whole-row items (in row order) that start in thread i's share of the
     * tokens; the split chunks are claimed after every slice */
    for (int i = 0, it = 0; i < nth; i++) {
        int64_t lo, hi;
        tm_share(b->n_tokens, i, nth, 1, &lo, &hi);
        atomic_init(&j.slices[i].next, it);
        while (it < next_big && j.items[it].t0 < hi) it++;
        j.slices[i].end = i == nth - 1 ? next_big : it;
    }
    atomic_init(&j.slices[nth].next, next_big);
    j.slices[nth].end = n_items;
    if (pool && nth > 1 && n_items > 1) tm_threadpool_run(pool, tm_attn_fn, &j);
    else tm_attn_fn(&j, 0, 1);
}

/* matmul.c - weight preparation, the scalar reference matmul and the driver that picks a
 * SIMD kernel and splits the work over the thread pool. Layouts: matmul_impl.h.
 * Baseline x86-64 / portable C only: intrinsics live in matmul_<level>.c. */
#include "kernels/cpu/matmul.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/simd.h"

#if defined(__x86_64__) || defined(_M_X64)
#define TM_MM_X86 1
#else
#define TM_MM_X86 0
#endif

/* One thread's slice of a job's units, claimed a chunk at a time: by its owner first,
 * then by threads that finished their own slice. On its own cache line, since the owner
 * claims from it while the others may too. */
typedef struct tm_mm_slice {
    _Alignas(64) atomic_llong next; /* first unclaimed unit */
    int64_t end;                    /* one past the slice's last unit */
} tm_mm_slice;

/* Packed weights are carved from 2 MiB-aligned chunks advised for transparent huge
 * pages (tm_alloc_huge): a weight stream on 4 KiB pages misses the TLB every 4 KiB, and
 * one allocation per tensor could not use huge pages (most tensors are under 2 MiB).
 * Single-sequence decode, which streams all weights per token, ran ~9% faster
 * (bench_engine, 4 alternating pairs). A chunk is freed when it is
 * no longer the one being filled and its last weight is gone, so weights may outlive
 * their tm_cpu_matmul. */
typedef struct tm_mm_chunk {
    uint8_t *base;
    size_t size, used;
    int live;    /* weights carved from it and not yet deinitialized */
    int retired; /* no longer filled: freed with its last weight */
} tm_mm_chunk;

enum { TM_MM_CHUNK_BYTES = 64 << 20 };

struct tm_cpu_matmul {
    tm_threadpool *pool; /* borrowed; NULL = run everything on the caller */
    int simd;            /* concrete level */
    void *scratch;       /* quantized activations, 64-B aligned, grown on demand */
    size_t scratch_bytes;
    tm_mm_slice *slices; /* (pool size) reset by every job */
    tm_mm_chunk *chunk;  /* the chunk packed weights are carved from, or NULL */
};

static void tm_mm_chunk_release(tm_mm_chunk *c) {
    if (c->live > 0) return;
    if (!c->retired) { /* still being filled: start over (a model unloaded and loaded again) */
        c->used = 0;
        return;
    }
    free(c->base);
    free(c);
}

static void tm_mm_chunk_retire(tm_mm_chunk *c) {
    if (!c) return;
    c->retired = 1;
    tm_mm_chunk_release(c);
}

static tm_mm_chunk *tm_mm_chunk_new(size_t size) {
    tm_mm_chunk *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->size = size;
    c->base = tm_alloc_huge(size);
    if (!c->base) {
        free(c);
        return NULL;
    }
    return c;
}

/* n bytes (64-B aligned) for a packed weight; *chunk_out gets the chunk to release. A
 * weight of a quarter chunk or more gets a chunk of its own (retired at once), so it
 * does not cut short the one being filled. */
static void *tm_mm_weight_alloc(tm_cpu_matmul *mm, size_t n, tm_mm_chunk **chunk_out) {
    n = (n + 63) / 64 * 64;
    tm_mm_chunk *c = mm->chunk;
    if (n >= TM_MM_CHUNK_BYTES / 4) {
        if (!(c = tm_mm_chunk_new(n))) return NULL;
        c->retired = 1;
    } else if (!c || c->size - c->used < n) {
        if (!(c = tm_mm_chunk_new(TM_MM_CHUNK_BYTES))) return NULL;
        tm_mm_chunk_retire(mm->chunk);
        mm->chunk = c;
    }
    void *p = c->base + c->used;
    c->used += n;
    c->live++;
    *chunk_out = c;
    return p;
}

static void *tm_mm_aligned_alloc(size_t n_bytes) {
    return aligned_alloc(64, (n_bytes + 63) / 64 * 64);
}

tm_cpu_matmul *tm_cpu_matmul_create(tm_threadpool *pool, int simd) {
    if (simd == TM_SIMD_AUTO || !tm_simd_supported(simd)) return NULL;
    tm_cpu_matmul *mm = calloc(1, sizeof(*mm));
    if (!mm) return NULL;
    mm->pool = pool;
    mm->simd = simd;
    const int nth = pool ? tm_threadpool_size(pool) : 1;
    mm->slices = aligned_alloc(64, (size_t)nth * sizeof *mm->slices);
    if (!mm->slices) {
        free(mm);
        return NULL;
    }
    return mm;
}

void tm_cpu_matmul_destroy(tm_cpu_matmul *mm) {
    if (!mm) return;
    free(mm->slices);
    free(mm->scratch);
    tm_mm_chunk_retire(mm->chunk);
    free(mm);
}

/* Does this level have a kernel for dtype? If not, the scalar kernel runs. */
static int tm_mm_level_supports(int simd, tm_dtype t) {
#if TM_MM_X86
    if (simd == TM_SIMD_AVX512VNNI || simd == TM_SIMD_AMX) return tm_mm_avx512_supports(t);
    if (simd == TM_SIMD_AVX2) return tm_mm_avx2_supports(t);
#endif
#if defined(__aarch64__)
    if (simd == TM_SIMD_NEON) return tm_mm_neon_supports(t);
#endif
    (void)simd, (void)t;
    return 0;
}

/* ---- packing --------------------------------------------------------------------- */

static size_t tm_mm_pad64(size_t n) { return (n + 63) / 64 * 64; }

/* Fills tile ti of pw from GGUF rows; rows past n_rows stay zero (calloc'd). */
static void tm_mm_pack_tile(tm_mm_weight *pw, tm_dtype t, int64_t n_rows, int64_t n_cols,
                            int64_t ti) {
    uint8_t *tile = pw->packed + (size_t)ti * pw->tile_bytes;
    const int64_t row_bytes = tm_dtype_row_bytes(t, n_cols), nb = n_cols / TM_QK;
    for (int r = 0; r < TM_MM_TILE; r++) {
        const int64_t row = ti * TM_MM_TILE + r;
        if (row >= n_rows) break;
        const uint8_t *src = (const uint8_t *)pw->src + row * row_bytes;
        uint16_t *dsec = (uint16_t *)(tile + pw->d_off), *msec = (uint16_t *)(tile + pw->m_off);
        switch (t) {
        case TM_DTYPE_Q4_0:
        case TM_DTYPE_Q4_1:
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *qs;
                if (t == TM_DTYPE_Q4_0) {
                    const tm_block_q4_0 *blk = (const tm_block_q4_0 *)src + b;
                    dsec[b * TM_MM_TILE + r] = blk->d;
                    qs = blk->qs;
                } else {
                    const tm_block_q4_1 *blk = (const tm_block_q4_1 *)src + b;
                    dsec[b * TM_MM_TILE + r] = blk->d;
                    msec[b * TM_MM_TILE + r] = blk->m;
                    qs = blk->qs;
                }
                for (int k = 0; k < 4; k++)
                    memcpy(tile + b * 256 + k * 64 + 4 * r, qs + 4 * k, 4);
            }
            break;
        case TM_DTYPE_Q8_0:
            for (int64_t b = 0; b < nb; b++) {
                const tm_block_q8_0 *blk = (const tm_block_q8_0 *)src + b;
                dsec[b * TM_MM_TILE + r] = blk->d;
                for (int k = 0; k < 8; k++)
                    for (int i = 0; i < 4; i++)
                        tile[b * 512 + k * 64 + 4 * r + i] = (uint8_t)(blk->qs[4 * k + i] + 128);
            }
            break;
        case TM_DTYPE_F16:
        case TM_DTYPE_BF16: {
            const uint16_t *s = (const uint16_t *)src;
            uint16_t *dst = (uint16_t *)tile;
            for (int64_t k = 0; k < n_cols; k++) dst[k * TM_MM_TILE + r] = s[k];
            break;
        }
        case TM_DTYPE_F32: {
            const float *s = (const float *)src;
            float *dst = (float *)tile;
            for (int64_t k = 0; k < n_cols; k++) dst[k * TM_MM_TILE + r] = s[k];
            break;
        }
        default:
            break;
        }
    }
}

static int tm_mm_pack(tm_cpu_matmul *mm, tm_mm_weight *pw, tm_dtype t, int64_t n_rows, int64_t n_cols) {
    const int64_t nb = n_cols / TM_QK;
    const size_t scales = tm_mm_pad64((size_t)nb * TM_MM_TILE * 2);
    size_t qs_bytes;
    switch (t) {
    case TM_DTYPE_Q4_0: qs_bytes = (size_t)nb * 256; pw->d_off = qs_bytes; pw->m_off = qs_bytes; pw->tile_bytes = qs_bytes + scales; break;
    case TM_DTYPE_Q4_1: qs_bytes = (size_t)nb * 256; pw->d_off = qs_bytes; pw->m_off = qs_bytes + scales; pw->tile_bytes = qs_bytes + 2 * scales; break;
    case TM_DTYPE_Q8_0: qs_bytes = (size_t)nb * 512; pw->d_off = qs_bytes; pw->m_off = qs_bytes; pw->tile_bytes = qs_bytes + scales; break;
    case TM_DTYPE_F16:
    case TM_DTYPE_BF16: pw->tile_bytes = tm_mm_pad64((size_t)n_cols * TM_MM_TILE * 2); break;
    case TM_DTYPE_F32: pw->tile_bytes = (size_t)n_cols * TM_MM_TILE * 4; break;
    default: return TM_EUNSUPPORTED;
    }
    pw->n_tiles = (n_rows + TM_MM_TILE - 1) / TM_MM_TILE;
    const size_t total = (size_t)pw->n_tiles * pw->tile_bytes;
    pw->packed = tm_mm_weight_alloc(mm, total, &pw->chunk);
    if (!pw->packed) return TM_ENOMEM;
    memset(pw->packed, 0, total);
    for (int64_t ti = 0; ti < pw->n_tiles; ti++) tm_mm_pack_tile(pw, t, n_rows, n_cols, ti);
    return TM_OK;
}

int tm_cpu_weight_init(tm_cpu_matmul *mm, tm_weight *w, tm_dtype dtype, int64_t n_rows,
                       int64_t n_cols, const void *src, char *err, size_t err_len) {
    memset(w, 0, sizeof(*w));
    switch (dtype) {
    case TM_DTYPE_F32: case TM_DTYPE_F16: case TM_DTYPE_BF16: case TM_DTYPE_Q4_0:
    case TM_DTYPE_Q4_1: case TM_DTYPE_Q8_0: case TM_DTYPE_Q4_K: case TM_DTYPE_Q6_K:
        break;
    default:
        return tm_fail(err, err_len, TM_EUNSUPPORTED, "cpu matmul: unsupported weight dtype %s",
                       tm_dtype_name(dtype));
    }
    if (n_rows <= 0 || n_cols <= 0 || tm_dtype_row_bytes(dtype, n_cols) < 0 || !src)
        return tm_fail(err, err_len, TM_EINVAL, "cpu matmul: bad %s weight shape %lld x %lld",
                       tm_dtype_name(dtype), (long long)n_rows, (long long)n_cols);
    tm_mm_weight *pw = calloc(1, sizeof(*pw));
    if (!pw) return tm_fail(err, err_len, TM_ENOMEM, "cpu matmul: out of memory");
    pw->src = src;
    if (mm && tm_mm_level_supports(mm->simd, dtype)) {
        const int rc = tm_mm_pack(mm, pw, dtype, n_rows, n_cols);
        if (rc) {
            free(pw);
            return tm_fail(err, err_len, rc, "cpu matmul: cannot repack %lld x %lld %s weight",
                           (long long)n_rows, (long long)n_cols, tm_dtype_name(dtype));
        }
    }
    w->dtype = dtype;
    w->n_rows = n_rows;
    w->n_cols = n_cols;
    w->data = pw->packed ? (void *)pw->packed : (void *)src;
    w->aux = pw;
    return TM_OK;
}

void tm_cpu_weight_deinit(tm_weight *w) {
    if (!w || !w->aux) return;
    tm_mm_weight *pw = w->aux;
    if (pw->chunk) {
        pw->chunk->live--;
        tm_mm_chunk_release(pw->chunk);
    }
    free(pw);
    memset(w, 0, sizeof(*w));
}

void tm_cpu_weight_row(const tm_weight *w, int64_t r, float *out) {
    const tm_mm_weight *pw = w->aux;
    const int64_t row_bytes = tm_dtype_row_bytes(w->dtype, w->n_cols);
    tm_dequantize_row(w->dtype, (const uint8_t *)pw->src + r * row_bytes, out, w->n_cols);
}

/* ---- scalar reference -------------------------------------------------------------- */

void tm_mm_quantize_act_scalar(const float *x, int64_t n_cols, int64_t stride, int8_t *q,
                               float *d, int32_t *sum, float *s) {
    for (int64_t b = 0; b < n_cols / TM_QK; b++, x += TM_QK, q += TM_QK * stride) {
        float amax = 0.0f;
        for (int j = 0; j < TM_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        /* 0 for a zero block, or one so small (max < ~4e-37) that 1 / db overflows */
        const float db = amax / 127.0f, id = db != 0.0f && 1.0f / db < INFINITY ? 1.0f / db : 0.0f;
        int32_t acc = 0;
        for (int j = 0; j < TM_QK; j++) {
            q[j] = (int8_t)lrintf(x[j] * id); /* half-even, as the SIMD conversions */
            acc += q[j];
        }
        d[b] = db;
        sum[b] = acc;
        s[b] = db * (float)acc;
    }
}

static int32_t tm_mm_dot_i8(const int8_t *a, const int8_t *b, int n) {
    int32_t acc = 0;
    for (int j = 0; j < n; j++) acc += a[j] * b[j];
    return acc;
}

/* One weight row (GGUF blocks) . one token's quantized activations. */
static float tm_mm_dot_row_scalar(const tm_mm_args *a, const void *row, int t) {
    const int64_t nb = a->n_cols / TM_QK;
    const int8_t *q = a->act ? a->act->q + (int64_t)t * a->n_cols : NULL;
    const float *ad = a->act ? a->act->d + (int64_t)t * nb : NULL;
    const int32_t *asum = a->act ? a->act->sum + (int64_t)t * nb : NULL;
    const float *as = a->act ? a->act->s + (int64_t)t * nb : NULL;
    const float *x = a->x + (int64_t)t * a->n_cols;
    float acc = 0.0f;
    switch (a->dtype) {
    case TM_DTYPE_F32: {
        const float *w = row;
        for (int64_t k = 0; k < a->n_cols; k++) acc += w[k] * x[k];
        break;
    }
    case TM_DTYPE_F16: {
        const uint16_t *w = row;
        for (int64_t k = 0; k < a->n_cols; k++) acc += tm_f16_to_f32(w[k]) * x[k];
        break;
    }
    case TM_DTYPE_BF16: {
        const uint16_t *w = row;
        for (int64_t k = 0; k < a->n_cols; k++) acc += tm_bf16_to_f32(w[k]) * x[k];
        break;
    }
    case TM_DTYPE_Q4_0: /* sum((q - 8) * a) = sum(q * a) - 8 * sum(a) */
        for (int64_t b = 0; b < nb; b++) {
            const tm_block_q4_0 *blk = (const tm_block_q4_0 *)row + b;
            int32_t dot = -8 * asum[b];
            for (int j = 0; j < 16; j++)
                dot += (blk->qs[j] & 15) * q[32 * b + j] + (blk->qs[j] >> 4) * q[32 * b + j + 16];
            acc += (float)dot * (tm_f16_to_f32(blk->d) * ad[b]);
        }
        break;
    case TM_DTYPE_Q4_1: /* sum((q * d + m) * a * da) = d * da * sum(q * a) + m * s */
        for (int64_t b = 0; b < nb; b++) {
            const tm_block_q4_1 *blk = (const tm_block_q4_1 *)row + b;
            int32_t dot = 0;
            for (int j = 0; j < 16; j++)
                dot += (blk->qs[j] & 15) * q[32 * b + j] + (blk->qs[j] >> 4) * q[32 * b + j + 16];
            acc += (float)dot * (tm_f16_to_f32(blk->d) * ad[b]) + tm_f16_to_f32(blk->m) * as[b];
        }
        break;
    case TM_DTYPE_Q8_0:
        for (int64_t b = 0; b < nb; b++) {
            const tm_block_q8_0 *blk = (const tm_block_q8_0 *)row + b;
            const int32_t dot = tm_mm_dot_i8(blk->qs, q + 32 * b, 32);
            acc += (float)dot * (tm_f16_to_f32(blk->d) * ad[b]);
        }
        break;
    case TM_DTYPE_Q4_K: {
        const tm_block_q8_k *y = (const tm_block_q8_k *)a->act->q8k + (int64_t)t * (a->n_cols / TM_QK_K);
        for (int64_t i = 0; i < a->n_cols / TM_QK_K; i++) {
            const tm_block_q4_k *blk = (const tm_block_q4_k *)row + i;
            int32_t sumi = 0, summ = 0;
            for (int j = 0; j < 8; j++) {
                int sc, m;
                const uint8_t *s = blk->scales;
                if (j < 4) {
                    sc = s[j] & 63, m = s[j + 4] & 63;
                } else {
                    sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
                    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
                }
                /* sub-block j: chunk j/2, low nibbles if j even */
                const uint8_t *qs = blk->qs + 32 * (j / 2);
                const int8_t *aq = y[i].qs + 32 * j;
                int32_t dot = 0;
                for (int l = 0; l < 32; l++) dot += ((j & 1) ? qs[l] >> 4 : qs[l] & 15) * aq[l];
                sumi += sc * dot;
                summ += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
            }
            acc += y[i].d * (tm_f16_to_f32(blk->d) * (float)sumi - tm_f16_to_f32(blk->dmin) * (float)summ);
        }
        break;
    }
    case TM_DTYPE_Q6_K: {
        const tm_block_q8_k *y = (const tm_block_q8_k *)a->act->q8k + (int64_t)t * (a->n_cols / TM_QK_K);
        for (int64_t i = 0; i < a->n_cols / TM_QK_K; i++) {
            const tm_block_q6_k *blk = (const tm_block_q6_k *)row + i;
            int8_t v[TM_QK_K]; /* unpacked 6-bit values minus 32 */
            for (int h = 0; h < 2; h++) {
                const uint8_t *ql = blk->ql + 64 * h, *qh = blk->qh + 32 * h;
                int8_t *o = v + 128 * h;
                for (int l = 0; l < 32; l++) {
                    o[l] = (int8_t)(((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32);
                    o[l + 32] = (int8_t)(((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32);
                    o[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                    o[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                }
            }
            /* scale g covers values 16g..16g+15 (is = l/16 over the half's 4 rows of 32) */
            int32_t sumi = 0;
            for (int g = 0; g < 16; g++) sumi += blk->scales[g] * tm_mm_dot_i8(v + 16 * g, y[i].qs + 16 * g, 16);
            acc += y[i].d * tm_f16_to_f32(blk->d) * (float)sumi;
        }
        break;
    }
    default:
        acc = NAN;
        break;
    }
    return acc;
}

void tm_mm_rows_scalar(const tm_mm_args *a, int64_t r0, int64_t r1) {
    const int64_t row_bytes = tm_dtype_row_bytes(a->dtype, a->n_cols);
    for (int64_t r = r0; r < r1; r++) {
        const void *row = (const uint8_t *)a->w->src + r * row_bytes;
        const float b = a->bias ? a->bias[r] : 0.0f;
        for (int t = 0; t < a->n; t++)
            a->out[(int64_t)t * a->n_rows + r] = tm_mm_dot_row_scalar(a, row, t) + b;
    }
}

/* ---- driver ---------------------------------------------------------------------- */

enum { TM_MM_MAX_FUSED = 4 };        /* weights one job can share */
enum { TM_MM_CHUNKS_PER_SLICE = 16 }; /* claims a thread's slice is cut into (finer: a shorter tail) */

typedef struct {
    const tm_mm_args *a; /* (n_w) one per weight; all share dtype, n_cols, x and act */
    int n_w;
    int simd;            /* level whose kernel runs */
    int use_tiles;       /* 1: packed tiles on a SIMD level; 0: rows on the GGUF blocks */
    int level;           /* the matmul's level: picks the K-quant row kernel (use_tiles = 0) */
    tm_mm_slice *slices; /* (nth) each thread's slice of the units */
    int64_t chunk;       /* units per claim */
    int prepare;         /* 1: the threads first quantize their share of the activations */
    tm_pool_barrier *prepared; /* ... and meet here before computing */
    uint8_t *group_scales;     /* non-NULL: each thread then copies the scales grouped here */
    size_t group_scales_bytes; /* ... this many bytes per thread */
} tm_mm_job;

static int tm_mm_is_dense(tm_dtype t) {
    return t == TM_DTYPE_F32 || t == TM_DTYPE_F16 || t == TM_DTYPE_BF16;
}

/* Activations are prepared in column units: one quant block (32), one Q8_K superblock
 * (256) or, for dense weights, one column. */
static int64_t tm_mm_prep_unit(tm_dtype t) {
    if (tm_mm_is_dense(t)) return 1;
    return t == TM_DTYPE_Q4_K || t == TM_DTYPE_Q6_K ? TM_QK_K : TM_QK;
}

/* Prepares units [u0, u1) of token t0 + i of the group [t0, t0 + nt) (see matmul_impl.h). */
static void tm_mm_prepare_token(int simd, int level, const tm_mm_args *a, int t0, int nt, int i,
                                int64_t u0, int64_t u1) {
    const int64_t nb = a->n_cols / TM_QK, cols = a->n_cols;
    const int t = t0 + i;
    const float *x = a->x + (int64_t)t * cols;
    if (tm_mm_is_dense(a->dtype)) { /* interleave the group's tokens: xp[k * nt + i] */
        float *xp = a->act->xp + (int64_t)t0 * cols + i;
        for (int64_t k = u0; k < u1; k++) xp[k * nt] = x[k];
        return;
    }
    if (a->dtype == TM_DTYPE_Q4_K || a->dtype == TM_DTYPE_Q6_K) {
        tm_block_q8_k *y = (tm_block_q8_k *)a->act->q8k + (int64_t)t * (cols / TM_QK_K);
        (void)level;
#if TM_MM_X86
        if (level == TM_SIMD_AVX512VNNI || level == TM_SIMD_AMX) {
            tm_mm_quantize_q8k_avx512(x + u0 * TM_QK_K, y + u0, u1 - u0);
            return;
        }
        if (level == TM_SIMD_AVX2) {
            tm_mm_quantize_q8k_avx2(x + u0 * TM_QK_K, y + u0, u1 - u0);
            return;
        }
#endif
        tm_quantize_row(TM_DTYPE_Q8_K, x + u0 * TM_QK_K, y + u0, (u1 - u0) * TM_QK_K);
        return;
    }
    x += u0 * TM_QK;
    const int64_t n = (u1 - u0) * TM_QK;
    int8_t *q = a->act->q + (int64_t)t0 * cols + (int64_t)i * TM_QK + u0 * nt * TM_QK;
    const int64_t si = (int64_t)(t0 + i) * nb + u0; /* scales: row-major (matmul_impl.h) */
    float *d = a->act->d + si, *s = a->act->s + si;
    int32_t *sum = a->act->sum + si;
#if TM_MM_X86
    if (simd == TM_SIMD_AVX512VNNI || simd == TM_SIMD_AMX) { tm_mm_quantize_act_avx512(x, n, nt, q, d, sum, s); return; }
    if (simd == TM_SIMD_AVX2) { tm_mm_quantize_act_avx2(x, n, nt, q, d, sum, s); return; }
#endif
#if defined(__aarch64__)
    if (simd == TM_SIMD_NEON) { tm_mm_quantize_act_neon(x, n, nt, q, d, sum, s); return; }
#endif
    tm_mm_quantize_act_scalar(x, n, nt, q, d, sum, s);
}

/* Units [u0, u1) of tokens [t_lo, t_hi). */
static void tm_mm_prepare(int simd, int level, const tm_mm_args *a, int t_lo, int t_hi, int64_t u0, int64_t u1) {
    if (u0 >= u1) return;
    for (int t0 = 0; t0 < t_hi;) {
        const int nt = tm_mm_group_size(a->max_nt, a->n - t0);
        for (int i = TM_MAX(0, t_lo - t0); i < nt && t0 + i < t_hi; i++)
            tm_mm_prepare_token(simd, level, a, t0, nt, i, u0, u1);
        t0 += nt;
    }
}

static void tm_mm_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}

/* Quantized types: thread ith quantizes tokens [n * ith / nth, n * (ith + 1) / nth), the
 * rows the elementwise ops before a matmul (rmsnorm, silu, add) wrote on that thread, so
 * it reads them from its own cache; the grouped quants and row-major scales of different
 * tokens share no cache line. Dense weights interleave tokens per column (xp), so there
 * the threads split the columns. */
static void tm_mm_quantize_job(void *ctx, int ith, int nth) {
    const tm_mm_job *job = ctx;
    int64_t lo, hi;
    const tm_mm_args *a = &job->a[0];
    const int64_t units = a->n_cols / tm_mm_prep_unit(a->dtype);
    if (tm_mm_is_dense(a->dtype)) {
        tm_mm_split(units, ith, nth, &lo, &hi);
        tm_mm_prepare(job->simd, job->level, a, 0, a->n, lo, hi);
    } else {
        tm_mm_split(a->n, ith, nth, &lo, &hi);
        tm_mm_prepare(job->simd, job->level, a, (int)lo, (int)hi, 0, units);
    }
}

/* Bytes of one thread's grouped copy of the scales of n tokens: d, then s or sum. */
static size_t tm_mm_group_scales_bytes(int64_t n_cols, int n) {
    return 2 * tm_mm_pad64((size_t)n * (size_t)(n_cols / TM_QK) * 4);
}

/* The levels whose kernels read the grouped copies (matmul_impl.h). */
static int tm_mm_reads_group_scales(int simd, tm_dtype t) {
    return (simd == TM_SIMD_AVX512VNNI || simd == TM_SIMD_AMX) &&
           (t == TM_DTYPE_Q4_0 || t == TM_DTYPE_Q4_1 || t == TM_DTYPE_Q8_0);
}

/* dst = src plus gd and, as the dtype's kernels need them, gs (Q4_1) or gsum (Q4_0,
 * Q8_0): the scales of src copied into buf in the quants' grouped order. Each thread
 * makes its own after the quantization barrier, so the quantizing threads still write
 * only their own tokens' lines. */
static void tm_mm_group_scales(const tm_mm_args *a, const tm_mm_act *src, tm_mm_act *dst, uint8_t *buf) {
    const int64_t nb = a->nb;
    const size_t part = tm_mm_pad64((size_t)a->n * (size_t)nb * 4);
    const int with_s = a->dtype == TM_DTYPE_Q4_1;
    float *gd = (float *)buf, *gs = (float *)(buf + part);
    int32_t *gsum = (int32_t *)(buf + part); /* the same place: a dtype reads one of them */
    for (int t0 = 0; t0 < a->n;) {
        const int nt = tm_mm_group_size(a->max_nt, a->n - t0);
        for (int i = 0; i < nt; i++) {
            const int64_t r = (int64_t)(t0 + i) * nb, g = (int64_t)t0 * nb + i;
            for (int64_t b = 0; b < nb; b++) gd[g + b * nt] = src->d[r + b];
            if (with_s)
                for (int64_t b = 0; b < nb; b++) gs[g + b * nt] = src->s[r + b];
            else
                for (int64_t b = 0; b < nb; b++) gsum[g + b * nt] = src->sum[r + b];
        }
        t0 += nt;
    }
    *dst = *src;
    dst->gd = gd;
    dst->gs = with_s ? gs : NULL;
    dst->gsum = with_s ? NULL : gsum;
}

/* Units of work: tiles (or scalar rows) of all the job's weights, end to end; each
 * thread takes an equal slice of that sequence (all weights share n_cols, so units
 * cost the same). */
static int64_t tm_mm_units(const tm_mm_job *job, const tm_mm_args *a) {
    return job->use_tiles ? a->w->n_tiles : a->n_rows;
}

/* Rows [r0, r1) on the GGUF blocks: the level's K-quant kernel if it has one, else the
 * scalar reference (K-quants on other levels, unpacked weights from another level). */
static void tm_mm_rows(int level, const tm_mm_args *a, int64_t r0, int64_t r1) {
#if TM_MM_X86
    if (a->dtype == TM_DTYPE_Q4_K || a->dtype == TM_DTYPE_Q6_K) {
        if (level == TM_SIMD_AVX512VNNI || level == TM_SIMD_AMX) { tm_mm_rows_kquant_avx512(a, r0, r1); return; }
        if (level == TM_SIMD_AVX2) { tm_mm_rows_kquant_avx2(a, r0, r1); return; }
    }
#endif
#if defined(__aarch64__)
    if ((a->dtype == TM_DTYPE_Q4_K || a->dtype == TM_DTYPE_Q6_K) && level == TM_SIMD_NEON) {
        tm_mm_rows_kquant_neon(a, r0, r1);
        return;
    }
#endif
    (void)level;
    tm_mm_rows_scalar(a, r0, r1);
}

/* Units [lo, hi) of the job's unit sequence; args: the job's, or a thread's copies. */
static void tm_mm_compute_units(const tm_mm_job *job, const tm_mm_args *args, int64_t lo, int64_t hi) {
    int64_t base = 0;
    for (int k = 0; k < job->n_w && lo < hi; k++) {
        const tm_mm_args *a = &args[k];
        const int64_t units = tm_mm_units(job, a);
        const int64_t u0 = TM_MAX(lo, base) - base, u1 = TM_MIN(hi, base + units) - base;
        base += units;
        if (u0 >= u1) continue;
        if (!job->use_tiles) {
            tm_mm_rows(job->level, a, u0, u1);
            continue;
        }
#if TM_MM_X86
        if (job->simd == TM_SIMD_AMX) tm_mm_tiles_amx(a, u0, u1);
        else if (job->simd == TM_SIMD_AVX512VNNI) tm_mm_tiles_avx512(a, u0, u1);
        else tm_mm_tiles_avx2(a, u0, u1);
#endif
#if defined(__aarch64__)
        if (job->simd == TM_SIMD_NEON) tm_mm_tiles_neon(a, u0, u1);
#endif
    }
}

/* Each thread works through its own slice in order (one stream of weights, the same
 * tiles on the same core every call), then takes the unclaimed chunks of the others'
 * slices: a thread the machine slows down (other processes, a late wake-up) no longer
 * holds the rest up. Which thread computes a unit never changes its result. */
static void tm_mm_compute_job(void *ctx, int ith, int nth) {
    const tm_mm_job *job = ctx;
    if (job->prepare) {
        tm_mm_quantize_job(ctx, ith, nth);
        tm_pool_barrier_wait(job->prepared, nth);
    }
    const tm_mm_args *args = job->a;
    tm_mm_args own[TM_MM_MAX_FUSED];
    tm_mm_act own_act;
    if (job->group_scales) {
        tm_mm_group_scales(&job->a[0], job->a[0].act, &own_act,
                           job->group_scales + (size_t)ith * job->group_scales_bytes);
        for (int k = 0; k < job->n_w; k++) own[k] = job->a[k], own[k].act = &own_act;
        args = own;
    }
    for (int k = 0; k < nth; k++) {
        tm_mm_slice *sl = &job->slices[(ith + k) % nth];
        for (;;) {
            /* The owner claims half of what is left of its slice (at least a chunk), others
             * one chunk: fewer locked adds, each of which waits for the store buffer to
             * drain, and a tail as fine as before (bench/ab matmul A/B at 16 tokens:
             * new/old 0.986-0.991). */
            int64_t n = job->chunk;
            if (k == 0) n = TM_MAX(n, (sl->end - atomic_load_explicit(&sl->next, memory_order_relaxed)) / 2);
            const int64_t lo = atomic_fetch_add_explicit(&sl->next, n, memory_order_relaxed);
            if (lo >= sl->end) break;
            tm_mm_compute_units(job, args, lo, TM_MIN(lo + n, sl->end));
        }
    }
}

static void tm_mm_parallel(tm_cpu_matmul *mm, tm_pool_fn fn, tm_mm_job *job) {
    if (mm->pool) tm_threadpool_run(mm->pool, fn, job);
    else fn(job, 0, 1);
}

/* Carves the activation arrays for n tokens from the scratch, growing it if needed, and
 * after them `extra` bytes (returned in *extra_at). */
static int tm_mm_scratch(tm_cpu_matmul *mm, tm_mm_act *act, tm_dtype t, int64_t n_cols, int n, size_t extra,
                         uint8_t **extra_at) {
    const size_t nb = (size_t)(n_cols / TM_QK), nt = (size_t)n;
    size_t need;
    const int kq = t == TM_DTYPE_Q4_K || t == TM_DTYPE_Q6_K;
    if (tm_mm_is_dense(t))
        need = nt * (size_t)n_cols * sizeof(float);
    else if (kq)
        need = nt * (size_t)(n_cols / TM_QK_K) * sizeof(tm_block_q8_k);
    else
        need = tm_mm_pad64(nt * (size_t)n_cols) + 3 * tm_mm_pad64(nt * nb * 4);
    const size_t base = need;
    need += extra;
    if (need > mm->scratch_bytes) {
        void *p = tm_mm_aligned_alloc(need);
        if (!p) return TM_ENOMEM;
        free(mm->scratch);
        mm->scratch = p;
        mm->scratch_bytes = need;
    }
    uint8_t *p = mm->scratch;
    *extra_at = p + base;
    memset(act, 0, sizeof(*act));
    if (tm_mm_is_dense(t)) {
        act->xp = (float *)p;
        return TM_OK;
    }
    if (kq) {
        act->q8k = p;
        return TM_OK;
    }
    act->q = (int8_t *)p, p += tm_mm_pad64(nt * (size_t)n_cols);
    act->d = (float *)p, p += tm_mm_pad64(nt * nb * 4);
    act->sum = (int32_t *)p, p += tm_mm_pad64(nt * nb * 4);
    act->s = (float *)p;
    return TM_OK;
}

/* Runs outs[k] = x @ ws[k]^T (+ biases[k]) for weights that share dtype, n_cols and
 * kernel path: the activations are prepared once and all tiles form one job. */
static void tm_mm_run_fused(tm_cpu_matmul *mm, int n_w, float *const outs[], const float *x,
                            const tm_weight *const ws[], const float *const biases[], int n) {
    assert(n_w >= 1 && n_w <= TM_MM_MAX_FUSED);
    const tm_weight *w0 = ws[0];
    const tm_mm_weight *pw0 = w0->aux;
    const int use_tiles = pw0->packed && tm_mm_level_supports(mm->simd, w0->dtype);
    int max_nt = 1;
#if TM_MM_X86
    if (use_tiles) max_nt = mm->simd == TM_SIMD_AVX2 ? TM_MM_NT_AVX2 : TM_MM_NT_AVX512;
#endif
#if defined(__aarch64__)
    if (use_tiles) max_nt = TM_MM_NT_NEON;
#endif
    tm_mm_act act;
    tm_mm_args a[TM_MM_MAX_FUSED];
    for (int k = 0; k < n_w; k++)
        a[k] = (tm_mm_args){
            .dtype = w0->dtype, .n_rows = ws[k]->n_rows, .n_cols = w0->n_cols, .nb = w0->n_cols / TM_QK,
            .w = ws[k]->aux, .x = x, .act = &act, .bias = biases ? biases[k] : NULL, .out = outs[k],
            .n = n, .max_nt = max_nt,
        };
    tm_mm_job job = {.a = a, .n_w = n_w, .simd = use_tiles ? mm->simd : TM_SIMD_SCALAR, .use_tiles = use_tiles,
                     .level = mm->simd, .slices = mm->slices};
    const int nth = mm->pool ? tm_threadpool_size(mm->pool) : 1;
    {
        int64_t total = 0;
        for (int k = 0; k < n_w; k++) total += tm_mm_units(&job, &a[k]);
        job.chunk = TM_MAX(1, total / (TM_MM_CHUNKS_PER_SLICE * nth));
        for (int i = 0; i < nth; i++) {
            int64_t lo, hi;
            tm_mm_split(total, i, nth, &lo, &hi);
            atomic_store_explicit(&mm->slices[i].next, lo, memory_order_relaxed);
            mm->slices[i].end = hi;
        }
    }
    /* Scalar dense reads x directly; SIMD dense with n = 1 too (a group of one is x). */
    const int prepare = !tm_mm_is_dense(w0->dtype) || (use_tiles && n >= 2);
    const int group_scales = use_tiles && n >= TM_MM_GROUP_SCALES_MIN_NT && tm_mm_reads_group_scales(mm->simd, w0->dtype);
    if (group_scales) job.group_scales_bytes = tm_mm_group_scales_bytes(w0->n_cols, n);
    if (prepare) {
        uint8_t *extra;
        if (tm_mm_scratch(mm, &act, w0->dtype, w0->n_cols, n, (size_t)nth * job.group_scales_bytes, &extra)) {
            /* No memory for the scratch: poison rather than return stale data. */
            for (int k = 0; k < n_w; k++)
                for (int64_t i = 0; i < (int64_t)n * ws[k]->n_rows; i++) outs[k][i] = NAN;
            TM_ERRORF("cpu matmul: out of memory for %d activation rows", n);
            return;
        }
        /* A few tokens are cheaper to quantize here than to split; more are split over
         * the threads at the start of the compute run. */
        if (n < 4) tm_mm_prepare(job.simd, job.level, &a[0], 0, n, 0, w0->n_cols / tm_mm_prep_unit(w0->dtype));
        else job.prepare = 1;
        if (group_scales) job.group_scales = extra;
    }
    tm_pool_barrier prepared = {0};
    job.prepared = &prepared;
    tm_mm_parallel(mm, tm_mm_compute_job, &job);
}

void tm_cpu_matmul_run(tm_cpu_matmul *mm, float *out, const float *x, const tm_weight *w,
                       const float *bias, int n) {
    if (n <= 0) return;
    tm_mm_run_fused(mm, 1, &out, x, &w, &bias, n);
}

void tm_cpu_matmul_run_multi(tm_cpu_matmul *mm, int n_w, float *const outs[], const float *x,
                             const tm_weight *const ws[], const float *const biases[], int n) {
    if (n <= 0) return;
    for (int k0 = 0; k0 < n_w;) {
        /* the longest run of weights from k0 that can share one job */
        const tm_weight *w0 = ws[k0];
        const int tiles0 = ((const tm_mm_weight *)w0->aux)->packed && tm_mm_level_supports(mm->simd, w0->dtype);
        int k1 = k0 + 1;
        while (k1 < n_w && k1 - k0 < TM_MM_MAX_FUSED && ws[k1]->dtype == w0->dtype && ws[k1]->n_cols == w0->n_cols &&
               (((const tm_mm_weight *)ws[k1]->aux)->packed != NULL) == tiles0)
            k1++;
        tm_mm_run_fused(mm, k1 - k0, outs + k0, x, ws + k0, biases ? biases + k0 : NULL, n);
        k0 = k1;
    }
}

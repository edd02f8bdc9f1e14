/* ops.h - private to the CPU backend: the KV-cache layout, the per-SIMD-level inner
 * kernels and the whole-op drivers that split work over the thread pool.
 *
 * Two layers:
 * - tm_cpu_kernels: one table per SIMD level (ops_scalar.c = the scalar reference,
 *   ops_avx2.c, ops_avx512.c, ops_neon.c). Single-threaded, on one row / one attention
 *   chunk.
 * - tm_cpu_op_*: the ops of kernels/backend.h, written once on top of a kernel table;
 *   they partition the work and run it on the pool (pool may be NULL: caller only).
 *   attention.c holds tm_cpu_op_attention (the paged-attention scheduler), ops.c the
 *   others. */
#ifndef TM_CPU_OPS_H
#define TM_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/cpu/threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The CPU KV cache. K is dim-major inside each page, V key-major:
 *   f16  k: (n_layers, n_blocks, n_kv_heads, head_dim, block_size)
 *        v: (n_layers, n_blocks, n_kv_heads, block_size, head_dim)
 *   int8 the same order of tiles, each tile_bytes (tm_kv_tile_bytes): its values, then at
 *        tm_kv_tile_scale_offset the block_size f32 scales (value = scale * q, one scale
 *        per key or value vector). V's values are s8 (block_size, head_dim); K's are
 *        q + 128 as u8 in groups of four dims, (head_dim / 4, block_size, 4), so one
 *        vpdpbusd multiplies 4 dims of 16 keys (head_dim % 4 == 0).
 * so one (block, kv head) is a contiguous tile of head_dim * block_size values in each.
 * Attention scores a page of keys with keys in SIMD lanes (broadcast q[d] times row d of
 * the K tile, no horizontal sums); P.V broadcasts p[j] over row j of the V tile. Token
 * slot = block * block_size + offset. Zeroed at creation, so unwritten slots hold 0,
 * never NaN. */
struct tm_kv_cache {
    tm_kv_shape shape; /* dimensions and element type */
    uint16_t *k;       /* f16: (n_layers, n_blocks, n_kv_heads, head_dim, block_size) */
    uint16_t *v;       /* f16: (n_layers, n_blocks, n_kv_heads, block_size, head_dim) */
    uint8_t *k8, *v8;  /* int8: tiles of tm_kv_tile_bytes, same order */
};

/* Allocates and zeroes kv (64-byte aligned). TM_EINVAL for a bad shape, TM_ENOMEM. */
int tm_cpu_kv_init(struct tm_kv_cache *kv, const tm_kv_shape *shape);
void tm_cpu_kv_deinit(struct tm_kv_cache *kv);
/* Index of the (layer, block, head) tile, in tiles. */
static inline size_t tm_cpu_kv_tile(const tm_kv_shape *s, int layer, int block, int head) {
    return ((size_t)layer * s->n_blocks + block) * s->n_kv_heads + head;
}
/* Element offset of the (layer, block, head) tile in the f16 k or v (its key 0, dim 0). */
static inline size_t tm_cpu_kv_offset(const tm_kv_shape *s, int layer, int block, int head) {
    return tm_cpu_kv_tile(s, layer, block, head) * s->block_size * s->head_dim;
}

/* int8 K or V vector of n values (the kv_store rounding): scale = max|x| / 127, q[i] =
 * nearest-even(x[i] * (1 / scale)), 0 when 1 / scale is 0 or overflows (a zero or a tiny
 * vector). A NaN or inf in x gives scale NaN: reads of the whole vector are NaN (f16
 * poisons only that value). The scalar reference; every level's kv_quantize writes the
 * same bytes. */
void tm_cpu_kv_quantize(const float *x, int n, int8_t *q, float *scale);

/* Keys per attention chunk. Softmax partials are formed per chunk and merged in chunk
 * order whether or not the chunks ran on different threads, so a row's result is
 * bitwise the same alone, in any batch, and at any thread count. 256 rather than 128:
 * a decode of up to 256 keys is one pass with no merge (in-engine A/B, 16 decodes of
 * 128-256 keys: attention 0.941, 0.946, 0.939); 512 gained 1-2% more at 400-500 keys
 * but a prefill tile's scores (48 rows) would then overflow L1. */
enum { TM_ATTN_CHUNK = 256 };
/* Keys per piece: the keys inside one page that a SIMD kernel converts to f32 at once (one
 * zmm of lanes) and shares among every query of the group. */
enum { TM_ATTN_SUB = 16 };

/* One attention chunk: nq query vectors of one kv head (query i is row i / n_group, head
 * i % n_group of the group) against up to TM_ATTN_CHUNK keys, given as segments that each
 * lie inside one cache block. Produces per query the unnormalized softmax partial: m (max
 * of scaled scores), l = sum exp(s - m), o = sum exp(s - m) v. Query i sees the first
 * n_vis[i] keys; n_vis[i] == 0 gives m = -inf, l = 0 and leaves o untouched. */
typedef struct tm_attn_chunk {
    const float *q;              /* query of row r, head g at q + r * q_row_stride + g * head_dim, f32 */
    int64_t q_row_stride;        /* floats between rows of q */
    int n_group;                 /* query heads per kv head (GQA ratio) */
    int nq;                      /* query vectors: rows * n_group */
    const int *n_vis;            /* (nq) keys of this chunk each query sees */
    const int *n_skip;           /* (nq) of those, the first ones outside a sliding window
                                  * (masked; n_skip >= n_vis: none seen), or NULL: none */
    int n_keys;                  /* keys in the chunk (<= TM_ATTN_CHUNK) */
    int n_seg;                   /* segments */
    const uint16_t *const *k;    /* (n_seg) f16 keys, dim-major: segment s's key j, dim d at k[s][d * k_dim_stride + j] */
    int k_dim_stride;            /* elements between dims of one key in k (the block size) */
    const uint16_t *const *v;    /* (n_seg) -> (seg_len[s], head_dim) f16 values, key-major */
    /* An int8 cache instead (k and v NULL). Key j of segment s, dim d is the u8
     * k8[s][(d / 4) * 4 * k_dim_stride + 4 * j + d % 4] - 128, scaled by ks[s][j]; values
     * are s8 rows v8[s] (key-major, as v) scaled by vs[s][j]. Queries are int8 too
     * (tm_cpu_kv_quantize of each query vector: q8, its scale q8s and sum q8sum), and
     * score = scale * (ks * (q8s * dot)) with dot = sum_d q8[d] k[d] exactly; p_j * vs_j
     * weights value row j. Levels without an int8 kernel run the scalar one. */
    const uint8_t *const *k8;
    const int8_t *const *v8;
    const float *const *ks, *const *vs;
    const int8_t *q8;            /* (nq, head_dim) quantized queries (query i as q above) */
    const float *q8s;            /* (nq) their scales */
    const int32_t *q8sum;        /* (nq) sum of each one's values */
    const int *seg_len;          /* (n_seg) keys per segment, sum = n_keys */
    int head_dim;                /* dims per head */
    float scale;                 /* score = scale * q.k */
    float softcap;               /* > 0: score = softcap * tanh(score / softcap) (Gemma 2) */
    float *scores;               /* scratch (nq, TM_ATTN_CHUNK) f32 */
    float *kv_f32;               /* scratch (2 * TM_ATTN_SUB * head_dim) f32: two pieces of K or V */
    float *m;                    /* out (nq) */
    float *l;                    /* out (nq) */
    float *o;                    /* out (nq, head_dim) f32 */
} tm_attn_chunk;

/* Inner kernels of one SIMD level. All single-threaded. */
typedef struct tm_cpu_kernels {
    int level; /* TM_SIMD_* */
    /* out (dim) = x / sqrt(mean(x^2) + eps) * w; out may alias x. */
    void (*rmsnorm)(float *out, const float *x, const float *w, int dim, float eps);
    /* out (n) = a + b; out may alias a or b. */
    void (*add)(float *out, const float *a, const float *b, int64_t n);
    /* out (n) = silu(gate) * up; out may alias gate or up. */
    void (*silu_mul)(float *out, const float *gate, const float *up, int64_t n);
    /* out (n) = gelu_tanh(gate) * up (backend.h); out may alias gate or up. */
    void (*gelu_mul)(float *out, const float *gate, const float *up, int64_t n);
    /* out (n) = x * s, or cap * tanh(x * s / cap) when cap > 0; out may alias x. */
    void (*scale)(float *out, const float *x, int64_t n, float s, float cap);
    /* Rotates the first n_dims dims of each of n_heads heads (n_heads, head_dim) of one
     * token: pair i (i < n_dims / 2) by angle with cos_t[i], sin_t[i]. */
    void (*rope)(float *x, int n_heads, int head_dim, int n_dims, int neox, const float *cos_t,
                 const float *sin_t);
    /* dst (n) f16 = src (n) f32, round to nearest even. */
    void (*f32_to_f16)(uint16_t *dst, const float *src, int64_t n);
    /* See tm_attn_chunk. */
    void (*attn_chunk)(const tm_attn_chunk *a);
    /* See tm_cpu_kv_quantize (same bytes). */
    void (*kv_quantize)(const float *x, int n, int8_t *q, float *scale);
} tm_cpu_kernels;

/* Kernel table for a level, or NULL when this build has none for it. */
const tm_cpu_kernels *tm_cpu_kernels_get(int level);
const tm_cpu_kernels *tm_cpu_kernels_scalar(void);
#if defined(__x86_64__)
const tm_cpu_kernels *tm_cpu_kernels_avx2(void);
const tm_cpu_kernels *tm_cpu_kernels_avx512(void);
#endif
#if defined(__aarch64__)
const tm_cpu_kernels *tm_cpu_kernels_neon(void);
#endif

/* Scalar helpers the SIMD files share for tails (ops_scalar.c). */
void tm_cpu_attn_chunk_scalar(const tm_attn_chunk *a);
/* Query i's scores before its softmax: the keys outside its window (n_skip) become -inf
 * and the rest are soft-capped (softcap). Returns 0 when no visible key is left: it has
 * then set m = -inf, l = 0 (as for n_vis == 0), zeroed o and the scores, and the kernel
 * skips the softmax. Every level calls it, so the masking and the tanh are the
 * reference's. */
int tm_cpu_attn_shape_scores(const tm_attn_chunk *a, int i);
/* int8 cache, after query i's softmax sum: p_j *= vs_j over its visible keys, the product
 * the scalar kernel weighs value row j by, so P.V needs one number per key. */
void tm_cpu_attn_weigh_values(const tm_attn_chunk *a, int i);

/* Growable scratch owned by the caller of tm_cpu_op_attention (the backend). Grows on
 * demand; if growth fails attention runs without split-KV (same result, fewer threads). */
typedef struct tm_cpu_scratch {
    void *data;     /* 64-byte aligned, n_bytes */
    size_t n_bytes; /* capacity */
} tm_cpu_scratch;
/* Ensures capacity n_bytes (with headroom, so a growing context does not reallocate
 * every step); old contents are not kept. TM_OK, or TM_ENOMEM with s unchanged. */
int tm_cpu_scratch_reserve(tm_cpu_scratch *s, size_t n_bytes);
void tm_cpu_scratch_free(tm_cpu_scratch *s);

/* [*lo, *hi) = thread ith of nth's share of [0, n), boundaries rounded to `align`. */
static inline void tm_cpu_share(int64_t n, int ith, int nth, int64_t align, int64_t *lo, int64_t *hi) {
    const int64_t blocks = (n + align - 1) / align, a = blocks * ith / nth * align,
                  b = blocks * (ith + 1) / nth * align;
    *lo = a < n ? a : n;
    *hi = b < n ? b : n;
}

enum { TM_ROPE_MAX_DIMS = 1024 }; /* rotated dims per head that tm_cpu_op_rope takes */

/* The sin/cos tables of one rope parameter set at the last positions it rotated. */
typedef struct tm_cpu_rope_tables {
    tm_cpu_scratch mem;         /* pos (n) int32, then per token cos, sin (n_dims / 2 each) */
    int valid, n, n_dims, has_factors;
    float theta, freq_scale;
    float factors[TM_ROPE_MAX_DIMS / 2]; /* a copy: the caller's array may change or go */
    uint64_t used;              /* the call count when last used (least recently used goes) */
} tm_cpu_rope_tables;

/* Tables reused while the positions and frequencies stay the same: every layer of a step
 * rotates the same positions. Two sets, because Gemma's sliding-window and global layers
 * alternate between two bases. Owned by the backend; zero-initialized is empty. */
typedef struct tm_cpu_rope_cache {
    tm_cpu_rope_tables set[2]; /* the two most recently used parameter sets */
    uint64_t calls;            /* rope calls so far */
} tm_cpu_rope_cache;

/* Whole ops with the semantics of the same-named members of tm_backend. */
void tm_cpu_op_rmsnorm(const tm_cpu_kernels *k, tm_threadpool *pool, float *out, const float *x,
                       const float *w, int n, int dim, float eps);
void tm_cpu_op_add_rmsnorm(const tm_cpu_kernels *k, tm_threadpool *pool, float *x, const float *r,
                           const float *w, float *out, int n, int dim, float eps);
void tm_cpu_op_add(const tm_cpu_kernels *k, tm_threadpool *pool, float *out, const float *a,
                   const float *b, int64_t n);
void tm_cpu_op_silu_mul(const tm_cpu_kernels *k, tm_threadpool *pool, float *out,
                        const float *gate, const float *up, int64_t n);
void tm_cpu_op_gelu_mul(const tm_cpu_kernels *k, tm_threadpool *pool, float *out,
                        const float *gate, const float *up, int64_t n);
void tm_cpu_op_scale(const tm_cpu_kernels *k, tm_threadpool *pool, float *out, const float *x,
                     int64_t n, float s, float cap);
/* cache may be NULL (tables computed every call). */
void tm_cpu_op_rope(const tm_cpu_kernels *k, tm_threadpool *pool, tm_cpu_rope_cache *cache, float *q,
                    float *kk, const int32_t *pos, int n, int n_heads, int n_kv_heads, int head_dim,
                    const tm_rope *rope);
void tm_cpu_op_kv_store(const tm_cpu_kernels *k, tm_threadpool *pool, struct tm_kv_cache *kv,
                        int layer, const float *kk, const float *v, const int32_t *slots, int n);
void tm_cpu_op_get_rows(float *out, const float *x, const int32_t *rows, int n_rows, int dim);
/* See tm_backend.argmax_rows. scratch holds the per-thread partials; if it cannot grow, the
 * caller's thread does all of it (same result). */
void tm_cpu_op_argmax_rows(tm_threadpool *pool, tm_cpu_scratch *scratch, const float *x, int n_rows,
                           int n_cols, int32_t *out);
void tm_cpu_op_attention(const tm_cpu_kernels *k, tm_threadpool *pool, tm_cpu_scratch *scratch,
                         float *out, const float *q, const struct tm_kv_cache *kv, int layer,
                         const tm_batch *batch, int n_heads, float scale, int window, float softcap);

#ifdef __cplusplus
}
#endif
#endif

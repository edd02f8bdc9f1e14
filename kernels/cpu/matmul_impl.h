/* matmul_impl.h - private to kernels/cpu/matmul*.c: the repacked weight layout, the
 * quantized-activation format and the per-level kernel entry points.
 *
 * Packed weights (SIMD levels). Rows are grouped in tiles of TM_MM_TILE = 16 rows; the
 * last tile is zero-padded (zero quants and zero scales, so padded rows compute 0 and
 * are never stored). One tile is one contiguous, 64-byte aligned byte range:
 *
 *   Q4_0 / Q4_1  [qs: nb x 256 B][d: nb x 16 f16][m (Q4_1 only): nb x 16 f16]
 *                per block, 4 chunks of 64 B; in chunk k, bytes 4r..4r+3 belong to row r
 *                and byte 4r+i holds value 4k+i in its low nibble and 16+4k+i in its high
 *                nibble. So one 64-byte chunk is one zmm whose 32-bit lane r is row r,
 *                and (chunk & 0xF) / (chunk >> 4 & 0xF) are ready for vpdpbusd against a
 *                broadcast of 4 activation bytes.
 *   Q8_0         [qs: nb x 512 B][d: nb x 16 f16]; 8 chunks of 64 B, byte 4r+i of chunk k
 *                = value 4k+i of row r, plus 128 (stored unsigned so vpdpbusd needs no
 *                sign trick; the -128 * sum(a) correction seeds the accumulator).
 *   F16 / BF16   [K x 16 u16]: element (k, r) at 16k + r (k-major, ready for broadcast-FMA)
 *   F32          [K x 16 f32], same order.
 * Each scale section is padded to a multiple of 64 B. Q4_K and Q6_K are not packed: every
 * level reads their GGUF blocks in place (scalar rows, or the AVX2 / AVX-512 / NEON row
 * kernels).
 *
 * Quantized activations (legacy block types), our own Q8 format: per block of 32 values
 * d = amax / 127 (f32), q = round-half-even(x / d) (int8), sum = sum(q), s = d * sum.
 * Round-half-even (not llama.cpp's roundf) because SIMD conversions round that way, so
 * every level quantizes bit-identically. K-quants use Q8_K from tm_quantize_row.
 *
 * Token groups. Kernels multiply a tile by groups of NT tokens (NT = tm_mm_group_size:
 * the largest power of two <= min(max_nt, tokens left)), and each group's activations are
 * stored interleaved so that one pointer plus constant offsets reaches all NT tokens:
 *   quantized  group at t0: block b of its token i at q + t0*n_cols + (b*NT + i)*32,
 *              d/sum/s at index (t0 + i)*nb + b (row-major, so threads that quantize
 *              different tokens never write the same cache line of scales), and for
 *              the AVX-512 / AMX kernels a per-thread copy in the quants' order;
 *   dense      (n >= 2) x packed as xp + t0*n_cols + k*NT + i.
 * With max_nt = 1 (the scalar level) this is the plain row-major layout. */
#ifndef TM_CPU_MATMUL_IMPL_H
#define TM_CPU_MATMUL_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/dtype.h"

enum { TM_MM_TILE = 16 }; /* weight rows per packed tile */

/* A prepared weight; lives in tm_weight.aux. */
typedef struct tm_mm_weight {
    const void *src;    /* GGUF-layout data (n_rows rows), borrowed: scalar path and weight_row */
    uint8_t *packed;    /* (n_tiles, tile_bytes) packed tiles, 64-B aligned; NULL if not packed */
    struct tm_mm_chunk *chunk; /* where packed was carved from (matmul.c) */
    int64_t n_tiles;    /* ceil(n_rows / TM_MM_TILE) */
    size_t tile_bytes;  /* bytes per tile, a multiple of 64 */
    size_t d_off;       /* offset of the d section inside a tile (quantized types) */
    size_t m_off;       /* offset of the m section inside a tile (Q4_1) */
} tm_mm_weight;

/* Activations quantized for one call, carved from tm_cpu_matmul's scratch. */
typedef struct tm_mm_act {
    int8_t *q;      /* (n * n_cols) int8 quants, grouped as above */
    float *d;       /* (n * nb) block scales, row-major per token */
    int32_t *sum;   /* (n * nb) sum of each block's quants, row-major */
    float *s;       /* (n * nb) d * sum, row-major */
    /* The same d, and s (Q4_1) or sum (Q4_0, Q8_0), in the quants' grouped order (block
     * b of token i of the group at t0: index t0*nb + b*NT + i): one private copy per
     * thread, made after the quantization (tm_mm_group_scales in matmul.c); NULL where no
     * kernel reads it. */
    const float *gd, *gs;
    const int32_t *gsum;
    float *xp;      /* (n * n_cols) f32 activations grouped for dense weights (n >= 2) */
    void *q8k;      /* (n, n_cols / 256) tm_block_q8_k, for Q4_K / Q6_K */
} tm_mm_act;

/* Everything a kernel needs for one call. */
typedef struct tm_mm_args {
    tm_dtype dtype;           /* weight dtype */
    int64_t n_rows, n_cols;   /* weight shape */
    int64_t nb;               /* blocks per row (n_cols / 32 for legacy quants) */
    const tm_mm_weight *w;    /* prepared weight */
    const float *x;           /* (n, n_cols) f32 activations */
    const tm_mm_act *act;     /* quantized activations (quantized dtypes) */
    const float *bias;        /* (n_rows) or NULL */
    float *out;               /* (n, n_rows) */
    int n;                    /* tokens */
    int max_nt;               /* largest token group of the level's kernels */
} tm_mm_args;

/* Kernels of the AVX-512 / AMX levels read the grouped scale copies for groups of this
 * many tokens or more (their per-block epilogue then finds a group's scales at constant
 * offsets instead of nb apart). */
enum { TM_MM_GROUP_SCALES_MIN_NT = 4 };

/* Size of the token group that starts with `left` tokens remaining. */
static inline int tm_mm_group_size(int max_nt, int left) {
    int nt = 1;
    while (nt * 2 <= max_nt && nt * 2 <= left) nt *= 2;
    return nt;
}

/* Prefetches share `part` of n_parts of the part of the tile after `tile` that goes with
 * block b of nb: the tiles of a thread's range are one sequential stream, and a tile's
 * compute per block is long enough (many tokens, or the half-tile passes of AVX2) for the
 * hardware prefetcher to fall behind. Spreading the next tile's bytes evenly over this
 * tile's blocks, and a block's lines over its token groups, keeps a steady number of
 * lines in flight. Kernels call it on their first pass over a tile. */
static inline void tm_mm_prefetch_next_tile(const tm_mm_weight *pw, const uint8_t *tile, int64_t b,
                                            int64_t nb, int part, int n_parts) {
    const size_t step = (pw->tile_bytes / (size_t)nb + 63) & ~(size_t)63;
    const uint8_t *p = tile + pw->tile_bytes + (size_t)b * step;
    for (size_t o = (size_t)part * 64; o < step; o += 64 * (size_t)n_parts) __builtin_prefetch(p + o, 0, 3);
}

/* Dense weights and one token: runs tiles [t0, t1) in runs of up to `per` tiles (a
 * level's gemv keeps one FMA chain per row and hides the latency with several tiles in
 * flight) and returns 1; returns 0 for any other call. */
static inline int tm_mm_dense_gemv_runs(const tm_mm_args *a, int64_t t0, int64_t t1, int per,
                                        void (*run)(const tm_mm_args *a, int64_t ti, int nt)) {
    const tm_dtype t = a->dtype;
    if (a->n != 1 || !(t == TM_DTYPE_F16 || t == TM_DTYPE_BF16 || t == TM_DTYPE_F32)) return 0;
    for (int64_t ti = t0; ti < t1; ti += per) run(a, ti, t1 - ti < per ? (int)(t1 - ti) : per);
    return 1;
}

/* Scalar (reference) kernels. */
/* One token: block b goes to q + b*stride*32 (stride = its group's NT) and d/sum/s[b]. */
void tm_mm_quantize_act_scalar(const float *x, int64_t n_cols, int64_t stride, int8_t *q,
                               float *d, int32_t *sum, float *s);
/* Rows [r0, r1) for all tokens, reading the GGUF blocks in w->src. */
void tm_mm_rows_scalar(const tm_mm_args *a, int64_t r0, int64_t r1);

/* Per-level kernels. *_supports: does the level have a kernel for dtype (on packed
 * weights)? tiles: tiles [t0, t1) for all tokens. quantize_act: same output as scalar,
 * bit for bit. */
int tm_mm_avx2_supports(tm_dtype t);
void tm_mm_tiles_avx2(const tm_mm_args *a, int64_t t0, int64_t t1);
void tm_mm_quantize_act_avx2(const float *x, int64_t n_cols, int64_t stride, int8_t *q,
                             float *d, int32_t *sum, float *s);
void tm_mm_quantize_q8k_avx2(const float *x, tm_block_q8_k *y, int64_t nb);
int tm_mm_avx512_supports(tm_dtype t);
void tm_mm_tiles_avx512(const tm_mm_args *a, int64_t t0, int64_t t1);
void tm_mm_quantize_act_avx512(const float *x, int64_t n_cols, int64_t stride, int8_t *q,
                               float *d, int32_t *sum, float *s);
/* nb Q8_K blocks of x, bit-identical to tm_quantize_row(TM_DTYPE_Q8_K). */
void tm_mm_quantize_q8k_avx512(const float *x, tm_block_q8_k *y, int64_t nb);
/* One token group [t0, t0 + nt) x tile ti of a Q4_0 / Q4_1 / Q8_0 weight. */
void tm_mm_group_avx512(const tm_mm_args *a, int64_t ti, int t0, int nt);
/* Rows [r0, r1) of a Q4_K / Q6_K weight (GGUF blocks in w->src) for all tokens, against
 * act->q8k: the integer sums of tm_mm_rows_scalar, so the same results to f32 rounding. */
void tm_mm_rows_kquant_avx2(const tm_mm_args *a, int64_t r0, int64_t r1);
void tm_mm_rows_kquant_avx512(const tm_mm_args *a, int64_t r0, int64_t r1);
/* AMX: same packing, activations and results as AVX-512 (matmul_amx.c). */
int tm_mm_amx_supports(tm_dtype t);
void tm_mm_tiles_amx(const tm_mm_args *a, int64_t t0, int64_t t1);
enum { TM_MM_NT_AVX512 = 16, TM_MM_NT_AVX2 = 4 }; /* max token group per level (AMX: AVX-512's) */
#if defined(__aarch64__)
int tm_mm_neon_supports(tm_dtype t);
void tm_mm_tiles_neon(const tm_mm_args *a, int64_t t0, int64_t t1);
void tm_mm_quantize_act_neon(const float *x, int64_t n_cols, int64_t stride, int8_t *q,
                             float *d, int32_t *sum, float *s);
void tm_mm_rows_kquant_neon(const tm_mm_args *a, int64_t r0, int64_t r1);
enum { TM_MM_NT_NEON = 8 }; /* max token group: must equal TM_NT_MAX in matmul_neon.c */
#endif

#endif

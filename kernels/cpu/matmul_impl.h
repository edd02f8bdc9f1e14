/* matmul_impl.h - private to kernels/cpu/matmul*.c: the repacked weight layouts, the
 * quantized-activation formats and the kernel table each ISA fills (tm_mm_kernels).
 *
 * Files: matmul.c is the driver (weights, activations, threads), written once against a
 * kernel table; matmul_pack.c fills the packed layouts below; matmul_scalar.c is the
 * readable reference and its table; matmul_avx2.c, matmul_avx512.c, matmul_amx.c and
 * matmul_neon.c each end with their table.
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
 *   Q5_0 / Q5_1  [qs: nb x 256 B][qh: nb x 64 B][d][m (Q5_1 only)]: qs as Q4's, and per
 *                block 64 bytes of fifth bits: byte 4r+i holds, in bit k (k < 4), the fifth
 *                bit of value 4k+i of row r (the low nibble of chunk k) and in bit 4+k that
 *                of value 16+4k+i (its high nibble). So chunk k's fifth bits are
 *                (qh << (4-k)) & 0x10 and (qh >> k) & 0x10, lane for lane.
 *   Q8_0         [qs: nb x 512 B][d: nb x 16 f16]; 8 chunks of 64 B, byte 4r+i of chunk k
 *                = value 4k+i of row r, plus 128 (stored unsigned so vpdpbusd needs no
 *                sign trick; the -128 * sum(a) correction seeds the accumulator).
 *   Q4_K / Q5_K  per super-block s (256 values), TM_MM_KQ4_SB / TM_MM_KQ5_SB bytes at s * that:
 *                [qs: 32 chunks of 64 B][sc: 8 x 16 u8][mn: 4 x 16 x 2 u8][d: 16 f16][dmin: 16 f16];
 *                Q5_K's 8 qh chunks of 64 B sit between qs chunks 0-7, qh chunk k right after
 *                qs chunk k (tm_mm_kq_qs / tm_mm_kq_qh): the kernels read qs chunk k with qh
 *                chunk k first, so the super-block is one forward stream, as Q6_K's.
 *                Chunk 8c + k, byte 4r+i = byte 32c + 4k + i of row
 *                r's qs: value 64c + 4k + i in its low nibble (sub-block 2c), 64c + 32 +
 *                4k + i in its high one (2c + 1). sc[j][r] = scale of sub-block j (6-bit
 *                field decoded); mn[q][r] = the mins of sub-blocks 2q, 2q + 1 (a word pair
 *                per row once widened: vpdpwssd against the activation's two 32-value sums).
 *                qh chunk k, byte 4r+i = row r's qh[4k + i], whose bit 2c / 2c + 1 is the
 *                fifth bit of the low / high nibble of chunk 8c + k.
 *   Q6_K         per super-block s, TM_MM_KQ6_SB bytes at s * that:
 *                [sc: 16 x 16 s8][d: 16 f16, 64 B][48 chunks of 64 B, in the order the
 *                kernel reads them: for h < 2, k < 8 the triple qh(h, k), ql(h, 0, k),
 *                ql(h, 1, k)]. One forward stream, which the hardware prefetcher follows
 *                (separate ql and qh sections, qh read twice, ran at 19 GB/s from DRAM
 *                without software prefetch). ql(h, p, k), byte 4r+i = row r's
 *                ql[64h + 32p + 4k + i] (low nibble: value 128h + 32p + 4k + i, high: that
 *                + 64); qh(h, k), byte 4r+i = row r's qh[32h + 4k + i], bits 2p..2p+1 the
 *                high bits of the low nibble of ql(h, p, k), bits 4+2p..5+2p of its high
 *                nibble. sc[g][r] = scale of values 16g..16g+15.
 *   F16 / BF16   [K x 16 u16]: element (k, r) at 16k + r (k-major, ready for broadcast-FMA)
 *   F32          [K x 16 f32], same order.
 * Each scale section is padded to a multiple of 64 B. The other K-quants (and Q4_K / Q5_K
 * on levels without a tile kernel for them) are read in their GGUF blocks in place, by
 * the table's row kernels.
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

struct tm_mm_packing;

/* A prepared weight; lives in tm_weight.aux. */
typedef struct tm_mm_weight {
    const void *src;    /* GGUF-layout data (n_rows rows), borrowed: row kernels and weight_row */
    uint8_t *packed;    /* (n_tiles, tile_bytes) packed tiles, 64-B aligned; NULL if not packed */
    const struct tm_mm_packing *pack; /* the layout of packed; NULL if not packed */
    struct tm_mm_chunk *chunk; /* where packed was carved from (matmul.c) */
    int64_t n_tiles;    /* ceil(n_rows / TM_MM_TILE) */
    size_t tile_bytes;  /* bytes per tile, a multiple of 64 */
    size_t d_off;       /* offset of the d section inside a tile (quantized types) */
    size_t m_off;       /* offset of the m section inside a tile (Q4_1, Q5_1) */
    size_t h_off;       /* offset of the fifth-bit section inside a tile (Q5_0, Q5_1) */
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
    void *q8k;      /* (n, n_cols / 256) tm_block_q8_k, for the K-quants */
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
    int max_nt;               /* largest token group: the table's max_nt for tiles, else 1 */
} tm_mm_args;

/* ---- the kernel table ---------------------------------------------------------------- */

/* What the kernels of a weight type read as activations; the driver prepares it. */
typedef enum tm_mm_act_kind {
    TM_MM_ACT_NONE = 0, /* an empty table entry: the dtype is not multiplied */
    TM_MM_ACT_F32,      /* dense weights: x itself, or for tiles and n >= 2 grouped into xp */
    TM_MM_ACT_Q8,       /* our Q8 per 32 values: q, d, sum, s (above); Q8_0 / Q8_1 pairings */
    TM_MM_ACT_Q8K,      /* Q8_K per 256 values (tm_block_q8_k in q8k): the K-quant pairing */
} tm_mm_act_kind;

/* A packed tile layout (matmul_pack.c). Weights are packed at load by the layout of the
 * level's table entry, and its tile kernel runs on them only if they carry that same
 * layout (pw->pack); any other weight runs the row kernel on its GGUF blocks. */
typedef struct tm_mm_packing {
    /* Sets pw's tile_bytes (a multiple of 64), d_off and m_off for rows of n_cols values. */
    void (*layout)(tm_mm_weight *pw, int64_t n_cols);
    /* Fills tile ti of pw (zeroed by the caller) from the GGUF rows in pw->src; rows past
     * n_rows stay zero, so they compute 0 and are never stored. */
    void (*fill)(const tm_mm_weight *pw, int64_t n_rows, int64_t n_cols, int64_t ti);
} tm_mm_packing;

extern const tm_mm_packing tm_mm_pack_q4_0, tm_mm_pack_q4_1, tm_mm_pack_q8_0, tm_mm_pack_q5_0, tm_mm_pack_q5_1;
extern const tm_mm_packing tm_mm_pack_q4_k, tm_mm_pack_q5_k, tm_mm_pack_q6_k;
/* Bytes of one super-block of a packed Q4_K / Q5_K / Q6_K tile. */
enum { TM_MM_KQ4_SB = 2048 + 128 + 128 + 64, TM_MM_KQ5_SB = TM_MM_KQ4_SB + 512, TM_MM_KQ6_SB = 2048 + 1024 + 256 + 64 };
enum { TM_MM_KQ6_CHUNKS = 256 + 64 }; /* offset of a packed Q6_K super-block's chunks */
/* Offsets inside a packed Q4_K (q5 = 0) / Q5_K (q5 = 1) super-block: qs chunk j, qh chunk
 * k (Q5_K), and the scale sections (sc, then mn at + 128, d at + 256, dmin at + 288). */
static inline size_t tm_mm_kq_qs(int j, int q5) { return (size_t)64 * (size_t)(q5 ? (j < 8 ? 2 * j : j + 8) : j); }
static inline size_t tm_mm_kq_qh(int k) { return (size_t)64 * (size_t)(2 * k + 1); }
static inline size_t tm_mm_kq_sc(int q5) { return q5 ? 2560 : 2048; }
extern const tm_mm_packing tm_mm_pack_u16; /* F16 and BF16: the 16-bit words as they are */
extern const tm_mm_packing tm_mm_pack_f32;

/* Tiles [t0, t1) of a packed weight, or rows [r0, r1) of its GGUF blocks (w->src), for
 * all a->n tokens. Single-threaded; the driver gives each thread its own ranges. */
typedef void (*tm_mm_tiles_fn)(const tm_mm_args *a, int64_t t0, int64_t t1);
typedef void (*tm_mm_rows_fn)(const tm_mm_args *a, int64_t r0, int64_t r1);

/* How one ISA multiplies one weight dtype. */
typedef struct tm_mm_type {
    tm_mm_act_kind act;        /* activations both kernels read */
    const tm_mm_packing *pack; /* layout the tile kernel reads; NULL: not packed, rows only */
    tm_mm_tiles_fn tiles;      /* on weights packed with `pack` (NULL when pack is) */
    tm_mm_rows_fn rows;        /* on the GGUF blocks: weights packed otherwise or not at all */
    int group_scales;          /* tiles read act's grouped scale copies (gd, gs, gsum) in
                                * calls of TM_MM_GROUP_SCALES_MIN_NT tokens or more */
} tm_mm_type;

/* tm_dtype values (GGML ids) are below this; types[] is indexed by them. */
enum { TM_MM_N_DTYPES = TM_DTYPE_BF16 + 1 };

/* One ISA's matmul: a table per SIMD level, looked up once when a tm_cpu_matmul is
 * created. A new weight type is one types[] entry per table; a new ISA is one table. */
typedef struct tm_mm_kernels {
    int level;  /* TM_SIMD_* */
    int max_nt; /* tile width in tokens: the largest token group the tile kernels take
                 * (a power of two; the activations are grouped for it) */
    /* TM_MM_ACT_Q8 of one token: block b goes to q + b*stride*32 (stride = its group's
     * NT) and d/sum/s[b]. Every table's is bit-identical to the scalar reference. */
    void (*quantize_q8)(const float *x, int64_t n_cols, int64_t stride, int8_t *q, float *d,
                        int32_t *sum, float *s);
    /* TM_MM_ACT_Q8K: nb blocks of x, bit-identical to tm_quantize_row(TM_DTYPE_Q8_K). */
    void (*quantize_q8k)(const float *x, tm_block_q8_k *y, int64_t nb);
    tm_mm_type types[TM_MM_N_DTYPES]; /* by weight dtype; act NONE: not multiplied */
} tm_mm_kernels;

/* The table of a level, or NULL when this build has none for it (matmul.c). */
const tm_mm_kernels *tm_mm_kernels_get(int level);
/* Entry for dtype t, or NULL when the table does not multiply t. */
static inline const tm_mm_type *tm_mm_kernels_type(const tm_mm_kernels *k, tm_dtype t) {
    if ((int)t < 0 || (int)t >= TM_MM_N_DTYPES || k->types[t].act == TM_MM_ACT_NONE) return NULL;
    return &k->types[t];
}

/* Each ISA's table, defined at the end of its file. */
const tm_mm_kernels *tm_mm_kernels_scalar(void);
#if defined(__x86_64__) || defined(_M_X64)
const tm_mm_kernels *tm_mm_kernels_avx2(void);
const tm_mm_kernels *tm_mm_kernels_avx512(void);
const tm_mm_kernels *tm_mm_kernels_amx(void);
#endif
#if defined(__aarch64__)
const tm_mm_kernels *tm_mm_kernels_neon(void);
#endif

/* The scalar reference kernels (matmul_scalar.c), which other tables name where they
 * have no kernel of their own. */
void tm_mm_quantize_q8_scalar(const float *x, int64_t n_cols, int64_t stride, int8_t *q,
                              float *d, int32_t *sum, float *s);
void tm_mm_quantize_q8k_scalar(const float *x, tm_block_q8_k *y, int64_t nb);
/* Rows [r0, r1) of any dtype the scalar table has, for all tokens, reading the GGUF
 * blocks in w->src and the activations laid out with max_nt = 1. */
void tm_mm_rows_scalar(const tm_mm_args *a, int64_t r0, int64_t r1);

/* ---- helpers the kernels share ------------------------------------------------------- */

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
 * lines in flight. Kernels call it on their first pass over a tile.
 * The lines go to L2, not L1 (locality 2: prefetcht1): a tile is 10-30 KB, so the next
 * one prefetched into L1 evicted the current one from a 32-48 KB L1 before its last
 * token group read it. bench_matmul -S 128256x2048 on a 2-core EPYC, weights from DRAM:
 * Q6_K 17 -> 30 GB/s, Q4_K 24 -> 31, Q8_0 26 -> 30; 1B Q4_K_M decode 28 -> 49 tok/s.
 * Layouts that are one forward stream (the K-quant super-blocks) skip it for one token,
 * where the hardware prefetcher keeps up on its own. */
static inline void tm_mm_prefetch_next_tile(const tm_mm_weight *pw, const uint8_t *tile, int64_t b,
                                            int64_t nb, int part, int n_parts) {
    const size_t step = (pw->tile_bytes / (size_t)nb + 63) & ~(size_t)63;
    const uint8_t *p = tile + pw->tile_bytes + (size_t)b * step;
    for (size_t o = (size_t)part * 64; o < step; o += 64 * (size_t)n_parts) __builtin_prefetch(p + o, 0, 2);
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

#endif

/* matmul_amx.c - AMX-INT8 for groups of 16 tokens on the AVX-512 packed weights.
 *
 * The packed Q4_0 / Q4_1 / Q8_0 tiles of matmul_impl.h are already in AMX's B layout: a
 * block's chunk k is 16 dwords, dword r = 4 consecutive values of weight row r. So for
 * one 32-value block of one 16-row tile and 16 tokens:
 *   B (8 rows x 64 B, u8)  the block's 8 chunks (Q4: its 4 chunks' low then high nibbles)
 *   A (16 rows x 32 B, s8) the 16 tokens' quantized block: the grouped activation layout
 *   C (16 x 16 int32)      one TDPBSUD: token t, weight row r
 * C holds the exact integer sums the VNNI kernel forms with 128 vpdpbusd, and the float
 * epilogue is that kernel's (matmul_avx512_q.h), so results are bit-identical to it: a
 * token gets the same bits in a group of 16 (here) as in a smaller group (AVX-512).
 * Groups of fewer than 16 tokens run the AVX-512 kernel, and the table at the end of the
 * file names the AVX-512 kernels for the other dtypes. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/matmul_avx512_q.h"
#include "kernels/cpu/simd.h"

enum { TM_AMX_NT = 16 }; /* tokens per AMX group = rows of the A and C tiles */
/* Tiles (the _tile_* macros need literal numbers): 0-3 are C of blocks b % 4, 4/6 A and
 * 5/7 B of even/odd blocks, so products of later blocks need not wait for the store of
 * an earlier C. */
enum { TM_AMX_RING = 4 }; /* C tiles (and buffers) in flight, one per block */
/* Q4 blocks are unpacked this many blocks ahead of their tile product: a tile load of
 * bytes just stored waits for the stores to reach L1, which stalls the AMX pipeline. */
enum { TM_AMX_UNPACK_AHEAD = 8, TM_AMX_BQ_RING = 16 };

/* The tile shapes; configuration is per thread, so each pool worker loads it on its
 * first call (no code here releases it). */
static _Thread_local int tm_amx_configured;

static void tm_amx_configure(void) {
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int t = 0; t < 4; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16; /* C: 16 tokens x 16 int32 */
    for (int t = 4; t < 8; t += 2) {
        cfg.colsb[t] = 32, cfg.rows[t] = 16;         /* A: 16 tokens x 32 s8 */
        cfg.colsb[t + 1] = 64, cfg.rows[t + 1] = 8;  /* B: 8 value quads x 16 rows x 4 u8 */
    }
    _tile_loadconfig(&cfg);
    tm_amx_configured = 1;
}

/* Q4 block b of a tile as its B operand: low nibbles of the 4 chunks, then high. */
TM_AI void tm_amx_unpack(const int kind, const uint8_t *tile, int64_t b, uint8_t *out) {
    if (kind == TM_KIND_Q8_0) return; /* stored as B already */
    __m512i w[8];
    tm_q4_unpack(tile, b, w);
    for (int j = 0; j < 8; j++) _mm512_store_si512(out + 64 * j, w[j]);
}

/* Tokens [t0, t0 + 16) x tile ti. */
TM_AI void tm_amx_group(const tm_mm_args *a, int64_t ti, int t0, const int kind) {
    const tm_mm_weight *pw = a->w;
    const int64_t nb = a->nb;
    const tm_q_group_in g = tm_q_group_in_of(a, ti, t0);
    _Alignas(64) uint8_t bq[TM_AMX_BQ_RING][8 * 64];     /* unpacked Q4 blocks: B tiles */
    _Alignas(64) int32_t c[TM_AMX_RING][TM_AMX_NT * 16]; /* stored C tiles */
    __m512 acc[TM_AMX_NT];
    for (int i = 0; i < TM_AMX_NT; i++) acc[i] = _mm512_setzero_ps();

    /* B operand of block b (Q4: unpacked into the ring slot b % RING). */
#define TM_AMX_B(b_) (kind == TM_KIND_Q8_0 ? g.tile + (b_) * 512 : bq[(b_) % TM_AMX_BQ_RING])
#define TM_AMX_ISSUE(c_, a_, b_, blk_)                                                    \
    do {                                                                                  \
        _tile_loadd(a_, g.aq + (blk_) * TM_AMX_NT * 32, 32);                              \
        _tile_loadd(b_, TM_AMX_B(blk_), 64);                                              \
        _tile_zero(c_);                                                                   \
        _tile_dpbsud(c_, a_, b_);                                                         \
        _tile_stored(c_, c[(blk_) % TM_AMX_RING], 64);                                    \
    } while (0)
    /* Block b's tile product goes to C tile b % 4 (literal numbers, hence the switch). */
#define TM_AMX_PRODUCT(blk_)                                                              \
    switch ((blk_) % TM_AMX_RING) {                                                       \
    case 0: TM_AMX_ISSUE(0, 4, 5, blk_); break;                                           \
    case 1: TM_AMX_ISSUE(1, 6, 7, blk_); break;                                           \
    case 2: TM_AMX_ISSUE(2, 4, 5, blk_); break;                                           \
    default: TM_AMX_ISSUE(3, 6, 7, blk_); break;                                          \
    }

    /* Software pipeline: while block b's epilogue runs on the vector units, block b+2's
     * tile product runs on the AMX unit and a later block's nibbles are unpacked. */
    for (int64_t b = 0; b < nb && b < TM_AMX_UNPACK_AHEAD + 2; b++) tm_amx_unpack(kind, g.tile, b, bq[b % TM_AMX_BQ_RING]);
    for (int64_t b = 0; b < nb && b < 2; b++) TM_AMX_PRODUCT(b)
    for (int64_t b = 0; b < nb; b++) {
        if (t0 == 0) tm_mm_prefetch_next_tile(pw, g.tile, b, nb, 0, 1);
        if (b + 2 < nb) TM_AMX_PRODUCT(b + 2)
        if (b + TM_AMX_UNPACK_AHEAD + 2 < nb)
            tm_amx_unpack(kind, g.tile, b + TM_AMX_UNPACK_AHEAD + 2, bq[(b + TM_AMX_UNPACK_AHEAD + 2) % TM_AMX_BQ_RING]);

        /* per token, blocks in order: the same float sequence as the VNNI kernel */
        __m512 dw, mw;
        tm_q_block_scales(pw, g.tile, b, kind, &dw, &mw);
        const int32_t *cb = c[b % TM_AMX_RING];
#pragma GCC unroll 16
        for (int i = 0; i < TM_AMX_NT; i++) {
            __m512i ci = _mm512_load_si512(cb + 16 * i);
            /* the zero-point correction the VNNI kernel seeds its accumulator with */
            const int64_t is = b * TM_AMX_NT + i; /* token i's scales: grouped */
            if (kind == TM_KIND_Q4_0) ci = _mm512_add_epi32(ci, _mm512_set1_epi32(-8 * g.gsum[is]));
            if (kind == TM_KIND_Q8_0) ci = _mm512_add_epi32(ci, _mm512_set1_epi32(-128 * g.gsum[is]));
            acc[i] = tm_q_block_acc(acc[i], ci, dw, mw, g.gd[is], kind == TM_KIND_Q4_1 ? g.gs[is] : 0.0f, kind);
        }
    }
#undef TM_AMX_PRODUCT
#undef TM_AMX_ISSUE
#undef TM_AMX_B

    tm_q_store(a, ti, t0, TM_AMX_NT, acc);
}

static void tm_amx_tile(const tm_mm_args *a, int64_t ti) {
    for (int t = 0; t < a->n;) {
        const int nt = tm_mm_group_size(a->max_nt, a->n - t);
        if (nt != TM_AMX_NT) tm_mm_group_avx512(a, ti, t, nt);
        else if (a->dtype == TM_DTYPE_Q4_1) tm_amx_group(a, ti, t, TM_KIND_Q4_1);
        else if (a->dtype == TM_DTYPE_Q8_0) tm_amx_group(a, ti, t, TM_KIND_Q8_0);
        else tm_amx_group(a, ti, t, TM_KIND_Q4_0);
        t += nt;
    }
}

/* Q4_0 / Q4_1 / Q8_0 tiles [t0, t1) x all tokens. */
static void tm_amx_tiles(const tm_mm_args *a, int64_t t0, int64_t t1) {
    if (a->n >= TM_AMX_NT && !tm_amx_configured) tm_amx_configure();
    for (int64_t ti = t0; ti < t1; ti++) tm_amx_tile(a, ti);
}

/* ---- the table ------------------------------------------------------------------------ */

/* The AVX-512 table with AMX tiles for the three types whose packing is AMX's B layout. */
static const tm_mm_kernels tm_mm_amx = {
    .level = TM_SIMD_AMX,
    .max_nt = TM_MM_NT_AVX512, /* a full group is one AMX product */
    .quantize_q8 = tm_mm_quantize_q8_avx512,
    .quantize_q8k = tm_mm_quantize_q8k_avx512,
    .types = {
        /*                 activations    packing           tiles                     rows (GGUF blocks)   group scales */
        [TM_DTYPE_F32]  = {TM_MM_ACT_F32, &tm_mm_pack_f32,  tm_mm_tiles_dense_avx512, tm_mm_rows_scalar,     0},
        [TM_DTYPE_F16]  = {TM_MM_ACT_F32, &tm_mm_pack_u16,  tm_mm_tiles_dense_avx512, tm_mm_rows_scalar,     0},
        [TM_DTYPE_BF16] = {TM_MM_ACT_F32, &tm_mm_pack_u16,  tm_mm_tiles_dense_avx512, tm_mm_rows_scalar,     0},
        [TM_DTYPE_Q4_0] = {TM_MM_ACT_Q8,  &tm_mm_pack_q4_0, tm_amx_tiles,             tm_mm_rows_scalar,     1},
        [TM_DTYPE_Q4_1] = {TM_MM_ACT_Q8,  &tm_mm_pack_q4_1, tm_amx_tiles,             tm_mm_rows_scalar,     1},
        [TM_DTYPE_Q8_0] = {TM_MM_ACT_Q8,  &tm_mm_pack_q8_0, tm_amx_tiles,             tm_mm_rows_scalar,     1},
        /* Q5: the VNNI kernel for every group (no AMX unpack of the fifth bits yet) */
        [TM_DTYPE_Q5_0] = {TM_MM_ACT_Q8,  &tm_mm_pack_q5_0, tm_mm_tiles_q_avx512,     tm_mm_rows_scalar,     1},
        [TM_DTYPE_Q5_1] = {TM_MM_ACT_Q8,  &tm_mm_pack_q5_1, tm_mm_tiles_q_avx512,     tm_mm_rows_scalar,     1},
        [TM_DTYPE_Q4_K] = {TM_MM_ACT_Q8K, &tm_mm_pack_q4_k, tm_mm_tiles_q4k_avx512,   tm_mm_rows_q4k_avx512, 0},
        [TM_DTYPE_Q6_K] = {TM_MM_ACT_Q8K, &tm_mm_pack_q6_k, tm_mm_tiles_q6k_avx512,   tm_mm_rows_q6k_avx512, 0},
        [TM_DTYPE_Q2_K] = {TM_MM_ACT_Q8K, NULL,             NULL,                     tm_mm_rows_q2k_avx512, 0},
        [TM_DTYPE_Q3_K] = {TM_MM_ACT_Q8K, NULL,             NULL,                     tm_mm_rows_q3k_avx512, 0},
        [TM_DTYPE_Q5_K] = {TM_MM_ACT_Q8K, &tm_mm_pack_q5_k, tm_mm_tiles_q5k_avx512,   tm_mm_rows_q5k_avx512, 0},
    },
};

const tm_mm_kernels *tm_mm_kernels_amx(void) { return &tm_mm_amx; }

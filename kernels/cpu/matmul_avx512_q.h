/* matmul_avx512_q.h - private to matmul_avx512.c and matmul_amx.c (both built with the
 * AVX-512 flags): the AVX-512 kernels the AMX table borrows, and the per-block float work
 * of the Q4_0 / Q4_1 / Q8_0 tile kernels. The VNNI and AMX kernels form the same integer
 * sums and must turn them into the same bits, so this part exists once. */
#ifndef TM_CPU_MATMUL_AVX512_Q_H
#define TM_CPU_MATMUL_AVX512_Q_H

#include <immintrin.h>

#include "kernels/cpu/matmul_impl.h"

#define TM_AI static inline __attribute__((always_inline))

enum { TM_KIND_Q4_0, TM_KIND_Q4_1, TM_KIND_Q8_0, TM_KIND_Q5_0, TM_KIND_Q5_1 };
/* Kinds whose blocks carry a min m (value = q*d + m): its term is m_w * s_a. */
#define TM_KIND_HAS_M(kind) ((kind) == TM_KIND_Q4_1 || (kind) == TM_KIND_Q5_1)
/* The zero point of the unsigned stored values (their -z * sum(a) correction), or 0. */
#define TM_KIND_ZERO(kind) ((kind) == TM_KIND_Q4_0 ? 8 : (kind) == TM_KIND_Q5_0 ? 16 : (kind) == TM_KIND_Q8_0 ? 128 : 0)
enum { TM_MM_NT_AVX512 = 16 }; /* the largest token group of both levels (their max_nt) */

/* matmul_avx512.c's kernels that the AMX table names too (AMX runs them for the dtypes and
 * the token groups its tiles do not take). */
void tm_mm_quantize_q8_avx512(const float *x, int64_t n_cols, int64_t stride, int8_t *q, float *d,
                              int32_t *sum, float *s);
void tm_mm_quantize_q8k_avx512(const float *x, tm_block_q8_k *y, int64_t nb);
/* One token group [t0, t0 + nt) x tile ti of a Q4_0 / Q4_1 / Q8_0 / Q5_0 / Q5_1 weight. */
void tm_mm_group_avx512(const tm_mm_args *a, int64_t ti, int t0, int nt);
/* Q4_0 / Q4_1 / Q8_0 / Q5_0 / Q5_1 tiles [t0, t1) x all tokens, in groups of up to 16. */
void tm_mm_tiles_q_avx512(const tm_mm_args *a, int64_t t0, int64_t t1);
/* Q4_K / Q5_K tiles (matmul_impl.h's super-block layout) [t0, t1) x all tokens. */
void tm_mm_tiles_q4k_avx512(const tm_mm_args *a, int64_t t0, int64_t t1);
void tm_mm_tiles_q5k_avx512(const tm_mm_args *a, int64_t t0, int64_t t1);
void tm_mm_tiles_q6k_avx512(const tm_mm_args *a, int64_t t0, int64_t t1);
/* Rows [r0, r1) of a Q2_K / Q3_K / Q5_K weight x all tokens (as the Q4_K / Q6_K ones). */
void tm_mm_rows_q2k_avx512(const tm_mm_args *a, int64_t r0, int64_t r1);
void tm_mm_rows_q3k_avx512(const tm_mm_args *a, int64_t r0, int64_t r1);
void tm_mm_rows_q5k_avx512(const tm_mm_args *a, int64_t r0, int64_t r1);
/* F32 / F16 / BF16 tiles [t0, t1) x all tokens. */
void tm_mm_tiles_dense_avx512(const tm_mm_args *a, int64_t t0, int64_t t1);
/* Rows [r0, r1) of a Q4_K / Q6_K weight x all tokens: the integer sums of the scalar
 * reference, so the same results to f32 rounding. */
void tm_mm_rows_q4k_avx512(const tm_mm_args *a, int64_t r0, int64_t r1);
void tm_mm_rows_q6k_avx512(const tm_mm_args *a, int64_t r0, int64_t r1);

/* What a kernel reads for tokens [t0, ..) of tile ti: the tile and the group's
 * quantized activations (grouped layout, matmul_impl.h). */
typedef struct tm_q_group_in {
    const uint8_t *tile;
    const int8_t *aq;          /* quants */
    const float *ad, *as;      /* block scales, scaled sums */
    const int32_t *asum;       /* block sums */
    const float *gd, *gs;      /* the same, grouped (NT >= TM_MM_GROUP_SCALES_MIN_NT; gs for */
    const int32_t *gsum;       /* Q4_1 only, gsum for the others): block b of token i at b*NT + i */
} tm_q_group_in;

TM_AI tm_q_group_in tm_q_group_in_of(const tm_mm_args *a, int64_t ti, int t0) {
    const int64_t nb = a->nb;
    return (tm_q_group_in){
        .tile = a->w->packed + (size_t)ti * a->w->tile_bytes,
        .aq = a->act->q + (int64_t)t0 * a->n_cols,
        .ad = a->act->d + (int64_t)t0 * nb,
        .as = a->act->s + (int64_t)t0 * nb,
        .asum = a->act->sum + (int64_t)t0 * nb,
        .gd = a->act->gd ? a->act->gd + (int64_t)t0 * nb : NULL,
        .gs = a->act->gs ? a->act->gs + (int64_t)t0 * nb : NULL,
        .gsum = a->act->gsum ? a->act->gsum + (int64_t)t0 * nb : NULL,
    };
}

/* Q4 block b of a tile as 8 value groups: w[k] the low nibbles of chunk k (values
 * 4k..4k+3 of each row), w[k + 4] the high ones (values 16 + 4k..). */
TM_AI void tm_q4_unpack(const uint8_t *tile, int64_t b, __m512i w[8]) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i *p = (const __m512i *)(tile + b * 256);
    for (int k = 0; k < 4; k++) {
        const __m512i v = _mm512_load_si512(p + k);
        w[k] = _mm512_and_si512(v, m4);
        w[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    }
}

/* Q5 block b: adds the fifth bits (matmul_impl.h's qh section) to tm_q4_unpack's w. */
TM_AI void tm_q5_add_high(const tm_mm_weight *pw, const uint8_t *tile, int64_t b, __m512i w[8]) {
    const __m512i h = _mm512_load_si512((const __m512i *)(tile + pw->h_off + b * 64)), m10 = _mm512_set1_epi8(0x10);
    /* bit k -> bit 4 (16-bit shifts: the bits that cross into the next byte are masked off) */
    w[0] = _mm512_ternarylogic_epi64(w[0], _mm512_slli_epi16(h, 4), m10, 0xF8); /* w | (h' & 0x10) */
    w[1] = _mm512_ternarylogic_epi64(w[1], _mm512_slli_epi16(h, 3), m10, 0xF8);
    w[2] = _mm512_ternarylogic_epi64(w[2], _mm512_slli_epi16(h, 2), m10, 0xF8);
    w[3] = _mm512_ternarylogic_epi64(w[3], _mm512_slli_epi16(h, 1), m10, 0xF8);
    w[4] = _mm512_ternarylogic_epi64(w[4], h, m10, 0xF8); /* bit 4 + k -> bit 4 */
    w[5] = _mm512_ternarylogic_epi64(w[5], _mm512_srli_epi16(h, 1), m10, 0xF8);
    w[6] = _mm512_ternarylogic_epi64(w[6], _mm512_srli_epi16(h, 2), m10, 0xF8);
    w[7] = _mm512_ternarylogic_epi64(w[7], _mm512_srli_epi16(h, 3), m10, 0xF8);
}

/* Block b's scales of the 16 rows: d, and m (Q4_1 / Q5_1; else 0). */
TM_AI void tm_q_block_scales(const tm_mm_weight *pw, const uint8_t *tile, int64_t b, const int kind,
                             __m512 *dw, __m512 *mw) {
    *dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)((const uint16_t *)(tile + pw->d_off) + b * TM_MM_TILE)));
    *mw = TM_KIND_HAS_M(kind)
              ? _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)((const uint16_t *)(tile + pw->m_off) + b * TM_MM_TILE)))
              : _mm512_setzero_ps();
}

/* acc += one block's integer sums c (zero-point correction included) of one token with
 * activation scale ad and scaled sum as: the float sequence both kernels share. */
TM_AI __m512 tm_q_block_acc(__m512 acc, __m512i c, __m512 dw, __m512 mw, float ad, float as, const int kind) {
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), _mm512_mul_ps(dw, _mm512_set1_ps(ad)), acc);
    if (TM_KIND_HAS_M(kind)) acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(as), acc);
    return acc;
}

/* out rows of tile ti for tokens [t0, t0 + nt) = acc + bias. */
TM_AI void tm_q_store(const tm_mm_args *a, int64_t ti, int t0, int nt, const __m512 *acc) {
    const int64_t r0 = ti * TM_MM_TILE;
    const int64_t left = a->n_rows - r0;
    const __mmask16 mask = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    const __m512 bias = a->bias ? _mm512_maskz_loadu_ps(mask, a->bias + r0) : _mm512_setzero_ps();
    for (int i = 0; i < nt; i++)
        _mm512_mask_storeu_ps(a->out + (int64_t)(t0 + i) * a->n_rows + r0, mask, _mm512_add_ps(acc[i], bias));
}

#endif

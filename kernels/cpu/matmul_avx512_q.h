/* matmul_avx512_q.h - private to matmul_avx512.c and matmul_amx.c (both built with the
 * AVX-512 flags): the per-block float work of the Q4_0 / Q4_1 / Q8_0 tile kernels. The
 * VNNI and AMX kernels form the same integer sums and must turn them into the same bits,
 * so this part exists once. */
#ifndef TM_CPU_MATMUL_AVX512_Q_H
#define TM_CPU_MATMUL_AVX512_Q_H

#include <immintrin.h>

#include "kernels/cpu/matmul_impl.h"

#define TM_AI static inline __attribute__((always_inline))

enum { TM_KIND_Q4_0, TM_KIND_Q4_1, TM_KIND_Q8_0 };

/* Block b's scales of the 16 rows: d, and m (Q4_1; else 0). */
TM_AI void tm_q_block_scales(const tm_mm_weight *pw, const uint8_t *tile, int64_t b, const int kind,
                             __m512 *dw, __m512 *mw) {
    *dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)((const uint16_t *)(tile + pw->d_off) + b * TM_MM_TILE)));
    *mw = kind == TM_KIND_Q4_1
              ? _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)((const uint16_t *)(tile + pw->m_off) + b * TM_MM_TILE)))
              : _mm512_setzero_ps();
}

/* acc += one block's integer sums c (zero-point correction included) of one token with
 * activation scale ad and scaled sum as: the float sequence both kernels share. */
TM_AI __m512 tm_q_block_acc(__m512 acc, __m512i c, __m512 dw, __m512 mw, float ad, float as, const int kind) {
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), _mm512_mul_ps(dw, _mm512_set1_ps(ad)), acc);
    if (kind == TM_KIND_Q4_1) acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(as), acc);
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

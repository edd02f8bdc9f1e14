/* matmul_avx512.c - AVX-512 + VNNI kernels on the packed tiles of matmul_impl.h.
 *
 * One zmm holds one value group of 16 weight rows (lane r = row r), so a tile is
 * multiplied against a broadcast activation with no horizontal reduction, and each
 * unpacked weight block stays in registers while up to TM_NT_MAX tokens use it:
 *   quantized  per 32-value block: 8 vpdpbusd (u8 weights x s8 activations) into an
 *              int32 accumulator seeded with the zero-point correction (-8 or -128 times
 *              the activation block sum), then one FMA with d_w * d_a (and for Q4_1 one
 *              FMA with m_w * s_a).
 *   dense      F16/BF16 are widened to an f32 panel of 256 columns (16 KiB, stays in L1)
 *              that all tokens reuse; n = 1 reads the tiles directly, 4 tiles side by side.
 *   Q5_0/Q5_1  the Q4 kernel with the packed fifth bits ternlog'ed into the nibbles.
 *   Q4_K/Q5_K/Q6_K  packed super-block tiles (matmul_impl.h): vpdpbusd per 32 (16) values
 *              into int32, vpmulld by the rows' sub-block scales, the mins / zero point
 *              from the Q8_K activation sums.
 * Q2_K and Q3_K are not packed: their row kernels read the GGUF blocks in place (as the
 * Q4_K/Q5_K/Q6_K row kernels do for weights packed for another level). The file ends with
 * the level's kernel table; matmul_amx.c's table borrows what matmul_avx512_q.h declares. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/matmul_avx512_q.h"
#include "kernels/cpu/simd.h"
enum { TM_NT_MAX = TM_MM_NT_AVX512, TM_KC = 256 };

/* ---- activation quantization (bit-identical to matmul_scalar.c) ------------------- */

/* Lane j of the result = op over the 16 lanes of v[j] (op: float max, else int32 add):
 * a transpose-and-reduce in four halving rounds, 45 ops for 16 vectors where 16 separate
 * reductions take 128. It combines lanes in another order than a left fold, so only for
 * exact ops. v is clobbered. */
TM_AI __m512i tm_hop16(__m512i a, __m512i b, const int is_max) {
    return is_max ? _mm512_castps_si512(_mm512_max_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b)))
                  : _mm512_add_epi32(a, b);
}
TM_AI __m512i tm_shuf32(__m512i a, __m512i b, const int imm) {
    return _mm512_castps_si512(_mm512_shuffle_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b), imm));
}
TM_AI __m512i tm_hreduce16(__m512i *v, const int is_max) {
    for (int i = 0; i < 8; i++) /* lanes 0-7 from v[2i], 8-15 from v[2i + 1] */
        v[i] = tm_hop16(_mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                        _mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)), is_max);
    for (int i = 0; i < 4; i++) /* 128-bit lane k: one vector's 4 partials */
        v[i] = tm_hop16(_mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                        _mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)), is_max);
    for (int i = 0; i < 2; i++)
        v[i] = tm_hop16(tm_shuf32(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                        tm_shuf32(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)), is_max);
    const __m512i z = tm_hop16(tm_shuf32(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                               tm_shuf32(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)), is_max);
    /* lane 4k + m of z is vector 4m + k */
    return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), z);
}

/* Up to 16 blocks at a time, so the per-block max and sum are vertical ops over a
 * transposed group and the scales one division for all, instead of two horizontal
 * reductions and two divisions per block (16 tokens x 816 columns, hot: 3.9 -> 2.9 us). */
void tm_mm_quantize_q8_avx512(const float *x, int64_t n_cols, int64_t stride, int8_t *q,
                              float *d, int32_t *sum, float *s) {
    const int64_t nb = n_cols / TM_QK;
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {
        const int g = nb - b0 < 16 ? (int)(nb - b0) : 16;
        const float *xb = x + b0 * TM_QK;
        __m512i m[16];
        for (int j = 0; j < 16; j++)
            m[j] = j < g ? _mm512_castps_si512(_mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(xb + TM_QK * j)),
                                                             _mm512_abs_ps(_mm512_loadu_ps(xb + TM_QK * j + 16))))
                         : _mm512_setzero_si512();
        const __m512 db = _mm512_div_ps(_mm512_castsi512_ps(tm_hreduce16(m, 1)), _mm512_set1_ps(127.0f));
        __m512 id = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(db, _mm512_setzero_ps(), _CMP_NEQ_OQ),
                                        _mm512_set1_ps(1.0f), db);
        /* a block so small (max < ~4e-37) that 1 / d overflows quantizes to 0, as in the reference */
        id = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(id, _mm512_set1_ps(INFINITY), _CMP_LT_OQ), id);
        _Alignas(64) float ids[16], dbs[16], ss[16];
        _Alignas(64) int32_t sums[16];
        _mm512_store_ps(ids, id);
        __m512i c[16];
        for (int j = 0; j < 16; j++) {
            if (j >= g) {
                c[j] = _mm512_setzero_si512();
                continue;
            }
            const __m512 vid = _mm512_set1_ps(ids[j]);
            const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + TM_QK * j), vid)); /* MXCSR: half-even */
            const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + TM_QK * j + 16), vid));
            int8_t *qj = q + (b0 + j) * TM_QK * stride;
            _mm_storeu_si128((__m128i *)qj, _mm512_cvtsepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)(qj + 16), _mm512_cvtsepi32_epi8(q1));
            c[j] = _mm512_add_epi32(q0, q1);
        }
        const __m512i acc = tm_hreduce16(c, 0);
        _mm512_store_ps(dbs, db);
        _mm512_store_si512(sums, acc);
        _mm512_store_ps(ss, _mm512_mul_ps(db, _mm512_cvtepi32_ps(acc)));
        for (int j = 0; j < g; j++) {
            d[b0 + j] = dbs[j];
            sum[b0 + j] = sums[j];
            s[b0 + j] = ss[j];
        }
    }
}

/* Q8_K for the K-quant rows, bit-identical to tm_quantize_row(TM_DTYPE_Q8_K): the
 * signed max is the first value of largest magnitude, and the same f32 products are
 * rounded half-even (lrintf there, the MXCSR default here). */
void tm_mm_quantize_q8k_avx512(const float *x, tm_block_q8_k *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += TM_QK_K) {
        __m512 vmax = _mm512_setzero_ps();
        for (int c = 0; c < TM_QK_K / 16; c++) /* (|x|, vmax): a NaN |x| is skipped, as there */
            vmax = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + 16 * c)), vmax);
        const float amax = _mm512_reduce_max_ps(vmax);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        float max = 0.0f;
        for (int c = 0; c < TM_QK_K / 16; c++) {
            const __mmask16 m = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + 16 * c)), _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (m) {
                max = x[16 * c + __builtin_ctz(m)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        if (isinf(iscale)) { /* |max| below ~3.7e-37: too small to invert; zero, as the GPU does */
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        const __m512 vs = _mm512_set1_ps(iscale);
        for (int c = 0; c < TM_QK_K / 16; c++) {
            __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(vs, _mm512_loadu_ps(x + 16 * c)));
            v = _mm512_min_epi32(v, _mm512_set1_epi32(127));
            _mm_storeu_si128((__m128i *)(y[i].qs + 16 * c), _mm512_cvtsepi32_epi8(v));
            y[i].bsums[c] = (int16_t)_mm512_reduce_add_epi32(v);
        }
        y[i].d = 1.0f / iscale;
    }
}

/* ---- quantized tiles ------------------------------------------------------------- */

TM_AI __m512i tm_bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* c += w . broadcast(4 bytes at p), with the broadcast folded into vpdpbusd ({1to16}):
 * one fused uop instead of a separate broadcast load (GCC does not fold it itself). */
TM_AI __m512i tm_dpbusd_bc(__m512i c, __m512i w, const int8_t *p) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(c) : "v"(w), "m"(*(const int32_t *)p));
    return c;
}

/* Tokens [t0, t0 + NT) x tile ti; kind and NT are compile-time constants after inlining. */
TM_AI void tm_q_group(const tm_mm_args *a, int64_t ti, int t0, const int NT, const int kind) {
    const tm_mm_weight *pw = a->w;
    const int64_t nb = a->nb;
    const tm_q_group_in g = tm_q_group_in_of(a, ti, t0);
    __m512 acc[TM_NT_MAX];
    for (int i = 0; i < NT; i++) acc[i] = _mm512_setzero_ps();

    for (int64_t b = 0; b < nb; b++) {
        if (t0 == 0 && NT < 4) tm_mm_prefetch_next_tile(pw, g.tile, b, nb, 0, 1);
        __m512i w[8]; /* w[j]: values 4j..4j+3 of each row (j = 0..7) */
        if (kind == TM_KIND_Q8_0) {
            const __m512i *p = (const __m512i *)(g.tile + b * 512);
            for (int j = 0; j < 8; j++) w[j] = _mm512_load_si512(p + j);
        } else {
            tm_q4_unpack(g.tile, b, w);
            if (kind == TM_KIND_Q5_0 || kind == TM_KIND_Q5_1) tm_q5_add_high(pw, g.tile, b, w);
        }
        __m512 dw, mw;
        tm_q_block_scales(pw, g.tile, b, kind, &dw, &mw);
        if (NT >= TM_MM_GROUP_SCALES_MIN_NT) {
            /* G tokens at a time, interleaved so G independent dpbusd chains are in
             * flight (in-engine A/B of the 16-token calls, 8 vs 4 chains: 0.966, 0.972,
             * 0.977; 16 spill: 1.25). (Two chains per token cost an add per block and
             * token: 2-5% slower.) */
            const int G = NT >= 8 ? 8 : 4;
#pragma GCC unroll 4
            for (int i0 = 0; i0 < NT; i0 += G) {
                const int64_t ib = b * NT + i0;
                /* a share of the next tile's lines per group of G tokens (in-engine
                 * A/B at 16 tokens: 2-3% faster than all of them at the block's start) */
                if (t0 == 0) tm_mm_prefetch_next_tile(pw, g.tile, b, nb, i0 / G, NT / G);
                const int8_t *qa = g.aq + ib * 32;
                __m512i c[8];
                for (int u = 0; u < G; u++) {
                    const int64_t is = ib + u; /* its scales: grouped */
                    if (TM_KIND_ZERO(kind)) c[u] = _mm512_set1_epi32(-TM_KIND_ZERO(kind) * g.gsum[is]);
                    else c[u] = _mm512_setzero_si512();
                }
                for (int j = 0; j < 8; j++)
                    for (int u = 0; u < G; u++) c[u] = tm_dpbusd_bc(c[u], w[j], qa + u * 32 + 4 * j);
                for (int u = 0; u < G; u++) {
                    const int64_t is = ib + u;
                    acc[i0 + u] = tm_q_block_acc(acc[i0 + u], c[u], dw, mw, g.gd[is], TM_KIND_HAS_M(kind) ? g.gs[is] : 0.0f, kind);
                }
            }
            continue;
        }
#pragma GCC unroll 16
        for (int i = 0; i < NT; i++) {
            const int8_t *qa = g.aq + (b * NT + i) * 32; /* grouped layout: matmul_impl.h */
            const int64_t is = i * nb + b; /* its scales: row-major */
            __m512i c0, c1 = _mm512_setzero_si512();
            if (TM_KIND_ZERO(kind)) c0 = _mm512_set1_epi32(-TM_KIND_ZERO(kind) * g.asum[is]);
            else c0 = _mm512_setzero_si512();
            /* Two chains when few tokens, so one block's 8 dpbusd do not serialize. */
            for (int j = 0; j < 8; j++) {
                if (NT < 4 && (j & 1)) c1 = _mm512_dpbusd_epi32(c1, w[j], tm_bcast4(qa + 4 * j));
                else c0 = _mm512_dpbusd_epi32(c0, w[j], tm_bcast4(qa + 4 * j));
            }
            if (NT < 4) c0 = _mm512_add_epi32(c0, c1);
            acc[i] = tm_q_block_acc(acc[i], c0, dw, mw, g.ad[is], g.as[is], kind);
        }
    }

    tm_q_store(a, ti, t0, NT, acc);
}

void tm_mm_group_avx512(const tm_mm_args *a, int64_t ti, int t0, int nt) {
    const int kind = a->dtype == TM_DTYPE_Q4_1 ? TM_KIND_Q4_1 : a->dtype == TM_DTYPE_Q8_0 ? TM_KIND_Q8_0
                     : a->dtype == TM_DTYPE_Q5_0 ? TM_KIND_Q5_0 : a->dtype == TM_DTYPE_Q5_1 ? TM_KIND_Q5_1 : TM_KIND_Q4_0;
#define TM_Q_GROUP_NT(k_)                                                                 \
    switch (nt) {                                                                         \
    case 16: tm_q_group(a, ti, t0, 16, k_); break;                                        \
    case 8: tm_q_group(a, ti, t0, 8, k_); break;                                          \
    case 4: tm_q_group(a, ti, t0, 4, k_); break;                                          \
    case 2: tm_q_group(a, ti, t0, 2, k_); break;                                          \
    default: tm_q_group(a, ti, t0, 1, k_); break;                                         \
    }
    if (kind == TM_KIND_Q4_1) { TM_Q_GROUP_NT(TM_KIND_Q4_1) }
    else if (kind == TM_KIND_Q8_0) { TM_Q_GROUP_NT(TM_KIND_Q8_0) }
    else if (kind == TM_KIND_Q5_0) { TM_Q_GROUP_NT(TM_KIND_Q5_0) }
    else if (kind == TM_KIND_Q5_1) { TM_Q_GROUP_NT(TM_KIND_Q5_1) }
    else { TM_Q_GROUP_NT(TM_KIND_Q4_0) }
#undef TM_Q_GROUP_NT
}

/* ---- dense tiles ----------------------------------------------------------------- */

/* 16 weights (one k, 16 rows) of a dense tile as f32. */
TM_AI __m512 tm_dense_load(const uint8_t *tile, int64_t k, tm_dtype t) {
    if (t == TM_DTYPE_F32) return _mm512_load_ps((const float *)tile + k * TM_MM_TILE);
    const __m256i h = _mm256_load_si256((const __m256i *)((const uint16_t *)tile + k * TM_MM_TILE));
    if (t == TM_DTYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); /* bf16 */
}

TM_AI __mmask16 tm_tile_mask(const tm_mm_args *a, int64_t r0) {
    const int64_t left = a->n_rows - r0;
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* n = 1, tiles [ti, ti + nt), nt <= TM_GEMV_TILES. Each row is one FMA chain over k with
 * the operations of a batch (tm_dense_group: a panel's sum is stored plus 0, then
 * continued), so a token gets the same bits alone as in a batch; the tiles run side by
 * side to hide the FMA latency. */
enum { TM_GEMV_TILES = 4 };
TM_AI void tm_dense_gemv(const tm_mm_args *a, int64_t ti, int nt, const tm_dtype t) {
    const float *x = a->x;
    const __m512 zero = _mm512_setzero_ps();
    const uint8_t *tile[TM_GEMV_TILES];
    __m512 acc[TM_GEMV_TILES];
    for (int j = 0; j < TM_GEMV_TILES; j++) {
        tile[j] = a->w->packed + (size_t)(ti + (j < nt ? j : 0)) * a->w->tile_bytes;
        acc[j] = zero;
    }
    for (int64_t k0 = 0; k0 < a->n_cols; k0 += TM_KC) {
        const int64_t k1 = a->n_cols - k0 < TM_KC ? a->n_cols : k0 + TM_KC;
        if (k0 > 0)
            for (int j = 0; j < TM_GEMV_TILES; j++) acc[j] = _mm512_add_ps(acc[j], zero);
        for (int64_t k = k0; k < k1; k++) {
            const __m512 xv = _mm512_set1_ps(x[k]);
            for (int j = 0; j < TM_GEMV_TILES; j++) acc[j] = _mm512_fmadd_ps(tm_dense_load(tile[j], k, t), xv, acc[j]);
        }
    }
    for (int j = 0; j < nt; j++) {
        const int64_t r0 = (ti + j) * TM_MM_TILE;
        const __mmask16 mask = tm_tile_mask(a, r0);
        const __m512 bias = a->bias ? _mm512_maskz_loadu_ps(mask, a->bias + r0) : zero;
        _mm512_mask_storeu_ps(a->out + r0, mask, _mm512_add_ps(acc[j], bias));
    }
}

/* Tokens [t0, t0 + NT) x columns [k0, k0 + kc) of one tile, from an f32 panel (kc, 16).
 * first: start from zero (else from out); last: add the bias. */
TM_AI void tm_dense_group(const tm_mm_args *a, const float *panel, int64_t r0, int64_t k0,
                          int64_t kc, int t0, const int NT, int first, int last) {
    const __mmask16 mask = tm_tile_mask(a, r0);
    __m512 acc[TM_NT_MAX];
    for (int i = 0; i < NT; i++)
        acc[i] = first ? _mm512_setzero_ps()
                       : _mm512_maskz_loadu_ps(mask, a->out + (int64_t)(t0 + i) * a->n_rows + r0);
    const float *x = a->act->xp + (int64_t)t0 * a->n_cols + k0 * NT; /* grouped: x[k * NT + i] */
    for (int64_t k = 0; k < kc; k++) {
        const __m512 w = _mm512_load_ps(panel + k * TM_MM_TILE);
#pragma GCC unroll 16
        for (int i = 0; i < NT; i++) acc[i] = _mm512_fmadd_ps(w, _mm512_set1_ps(x[k * NT + i]), acc[i]);
    }
    const __m512 bias = last && a->bias ? _mm512_maskz_loadu_ps(mask, a->bias + r0) : _mm512_setzero_ps();
    for (int i = 0; i < NT; i++)
        _mm512_mask_storeu_ps(a->out + (int64_t)(t0 + i) * a->n_rows + r0, mask, _mm512_add_ps(acc[i], bias));
}

static void tm_dense_tile(const tm_mm_args *a, int64_t ti) {
    const tm_dtype t = a->dtype;
    const uint8_t *tile = a->w->packed + (size_t)ti * a->w->tile_bytes;
    const int64_t r0 = ti * TM_MM_TILE;
    _Alignas(64) float panel[TM_KC * TM_MM_TILE];
    for (int64_t k0 = 0; k0 < a->n_cols; k0 += TM_KC) {
        const int64_t kc = a->n_cols - k0 < TM_KC ? a->n_cols - k0 : TM_KC;
        const float *p = panel;
        if (t == TM_DTYPE_F32) {
            p = (const float *)tile + k0 * TM_MM_TILE; /* already f32 */
        } else if (t == TM_DTYPE_F16) {
            for (int64_t k = 0; k < kc; k++) _mm512_store_ps(panel + k * TM_MM_TILE, tm_dense_load(tile, k0 + k, TM_DTYPE_F16));
        } else {
            for (int64_t k = 0; k < kc; k++) _mm512_store_ps(panel + k * TM_MM_TILE, tm_dense_load(tile, k0 + k, TM_DTYPE_BF16));
        }
        const int first = k0 == 0, last = k0 + kc >= a->n_cols;
        for (int tk = 0; tk < a->n;) {
            const int nt = tm_mm_group_size(TM_NT_MAX, a->n - tk);
            switch (nt) {
            case 16: tm_dense_group(a, p, r0, k0, kc, tk, 16, first, last); break;
            case 8: tm_dense_group(a, p, r0, k0, kc, tk, 8, first, last); break;
            case 4: tm_dense_group(a, p, r0, k0, kc, tk, 4, first, last); break;
            case 2: tm_dense_group(a, p, r0, k0, kc, tk, 2, first, last); break;
            default: tm_dense_group(a, p, r0, k0, kc, tk, 1, first, last); break;
            }
            tk += nt;
        }
    }
}

static void tm_dense_gemv_run(const tm_mm_args *a, int64_t ti, int nt) {
    if (a->dtype == TM_DTYPE_F16) tm_dense_gemv(a, ti, nt, TM_DTYPE_F16);
    else if (a->dtype == TM_DTYPE_BF16) tm_dense_gemv(a, ti, nt, TM_DTYPE_BF16);
    else tm_dense_gemv(a, ti, nt, TM_DTYPE_F32);
}

void tm_mm_tiles_dense_avx512(const tm_mm_args *a, int64_t t0, int64_t t1) {
    if (tm_mm_dense_gemv_runs(a, t0, t1, TM_GEMV_TILES, tm_dense_gemv_run)) return;
    for (int64_t ti = t0; ti < t1; ti++) tm_dense_tile(a, ti);
}

void tm_mm_tiles_q_avx512(const tm_mm_args *a, int64_t t0, int64_t t1) {
    for (int64_t ti = t0; ti < t1; ti++)
        for (int t = 0; t < a->n;) { /* token groups as the driver laid them out */
            const int nt = tm_mm_group_size(TM_NT_MAX, a->n - t);
            tm_mm_group_avx512(a, ti, t, nt);
            t += nt;
        }
}

/* ---- K-quant rows (GGUF blocks read in place, no packing) ----------------------------
 *
 * Per 256-value superblock, row and token: the same integer sums as tm_mm_dot_row_scalar,
 * then its float formula. Weights are unpacked to u8 (Q4_K nibbles, Q6_K 6-bit values
 * 0..63), multiplied with the s8 activations by maddubs (no int16 saturation: |pair| <=
 * 2 * 63 * 128) and weighted by their sub-block scales with vpdpwssd. Q6_K's -32 offset
 * is -32 * sum(scale * bsum). A pass covers 4 rows x up to 4 tokens: the horizontal sums
 * of the 4 rows share one hadd tree and the float formula runs on 4 rows at once (the
 * same operations per lane whatever the lane, so results do not depend on how rows are
 * grouped or split over threads). */

enum { TM_KQ_ROWS = 4, TM_KQ_NT = 4 };

/* Q4_K's 12 packed scale bytes (read as 16; the 4 past them are the block's own qs) ->
 * bytes 0-7 the sub-block scales, 8-15 the mins: KERNELS.md's bit layout, with four
 * sub-blocks per 32-bit lane. */
TM_AI __m128i tm_q4k_scales_mins(const uint8_t *s) {
    const __m128i v = _mm_loadu_si128((const __m128i *)s);
    const __m128i a = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)); /* s0-3 s8-11 s4-7 s8-11 */
    const __m128i b = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0)); /* s0-3 s0-3 s4-7 s4-7 */
    const __m128i lo6 = _mm_and_si128(a, _mm_set1_epi8(0x3f)); /* scales 0-3, mins 0-3 */
    const __m128i nib = _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)), _mm_set1_epi8(0x0f));
    const __m128i top = _mm_and_si128(_mm_srli_epi32(b, 2), _mm_set1_epi8(0x30)); /* bits 6-7 -> 4-5 */
    return _mm_blend_epi32(lo6, _mm_or_si128(nib, top), 0xa);         /* scales 4-7, mins 4-7 */
}

/* Lane i of the result = sum of the 8 lanes of v[i] (pairs v[2j], v[2j+1] may be given
 * as one hadd of their halves, see tm_kq_pass). */
TM_AI __m128i tm_hsum4x8(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

TM_AI __m256i tm_fold512(__m512i v) {
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

enum { TM_KQ2, TM_KQ3, TM_KQ4, TM_KQ5, TM_KQ6 };
/* type-1 kinds subtract dmin * sum(m * bsum); the others have a zero point instead */
#define TM_KQ_HAS_MIN(kind) ((kind) == TM_KQ2 || (kind) == TM_KQ4 || (kind) == TM_KQ5)

/* Bits b (per byte, b < 8) of v moved to bit `to` and masked there: 16-bit shifts, whose
 * bits crossing into the next byte fall outside the mask. */
TM_AI __m256i tm_bit_to(__m256i v, int b, int to) {
    const __m256i m = _mm256_set1_epi8((char)(1 << to));
    if (b < to) return _mm256_and_si256(_mm256_slli_epi16(v, to - b), m);
    if (b > to) return _mm256_and_si256(_mm256_srli_epi16(v, b - to), m);
    return _mm256_and_si256(v, m);
}

TM_AI __m512i tm_join256(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

/* One super-block of one row, unpacked for the token loop of tm_kq_pass:
 *   w[c]   values 64c..64c+63 as u8 (Q3_K / Q6_K: plus their zero point 4 / 32)
 *   scv[c] the int16 scale of each maddubs pair of w[c]
 *   sc16   the 16 sub-block scales (zero-point correction), mp the 16 mins per bsums
 *          group (type-1), d and dmin the f16 scales. */
typedef struct tm_kq_unpacked {
    __m512i w[4], scv[4];
    __m256i sc16, mp;
    float d, dmin;
} tm_kq_unpacked;

/* Q2_K / Q3_K: the 2-bit field of value 128n + 32j + l is bits 2j of qs[32n + l]. */
TM_AI void tm_kq_unpack23(const uint8_t *qs, const uint8_t *hmask, tm_kq_unpacked *u) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i hm = hmask ? _mm256_loadu_si256((const __m256i *)hmask) : _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        const int n = c / 2, j0 = 2 * (c % 2);
        const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * n));
        __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j0), m3);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j0 + 2), m3);
        if (hmask) { /* the third bit: bit 4n + j of hmask[l] -> bit 2 */
            lo = _mm256_or_si256(lo, tm_bit_to(hm, 4 * n + j0, 2));
            hi = _mm256_or_si256(hi, tm_bit_to(hm, 4 * n + j0 + 1, 2));
        }
        u->w[c] = tm_join256(lo, hi);
    }
}

/* Scale words for scales per 16 values: word w of zmm c covers values 64c + 2w. */
TM_AI void tm_kq_scv16(__m256i sc16, const __m512i idx[4], __m512i scv[4]) {
    for (int c = 0; c < 4; c++) scv[c] = _mm512_permutexvar_epi16(idx[c], _mm512_castsi256_si512(sc16));
}

TM_AI void tm_kq_unpack(const uint8_t *row, int64_t i, const int kind, const __m512i idx[4], tm_kq_unpacked *u) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    const __m256i idxm = _mm256_setr_epi16(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    u->mp = u->sc16 = _mm256_setzero_si256();
    u->dmin = 0.0f;
    if (kind == TM_KQ4 || kind == TM_KQ5) {
        const uint8_t *scales = kind == TM_KQ4 ? ((const tm_block_q4_k *)row + i)->scales : ((const tm_block_q5_k *)row + i)->scales;
        const uint8_t *qs = kind == TM_KQ4 ? ((const tm_block_q4_k *)row + i)->qs : ((const tm_block_q5_k *)row + i)->qs;
        const uint16_t *dd = (const uint16_t *)(row + i * (kind == TM_KQ4 ? sizeof(tm_block_q4_k) : sizeof(tm_block_q5_k)));
        const __m256i sm16 = _mm256_cvtepu8_epi16(tm_q4k_scales_mins(scales)); /* 8 scales, 8 mins */
        u->mp = _mm256_permutexvar_epi16(idxm, sm16);
        __m256i qh = _mm256_setzero_si256();
        if (kind == TM_KQ5) qh = _mm256_loadu_si256((const __m256i *)((const tm_block_q5_k *)row + i)->qh);
        for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m512i w = _mm512_and_si512(tm_join256(q, _mm256_srli_epi16(q, 4)), m4);
            if (kind == TM_KQ5) /* fifth bits: bit 2c of qh[l] for values 64c + l, 2c + 1 for the next 32 */
                w = _mm512_or_si512(w, tm_join256(tm_bit_to(qh, 2 * c, 4), tm_bit_to(qh, 2 * c + 1, 4)));
            u->w[c] = w;
            u->scv[c] = _mm512_permutexvar_epi16(idx[4 + c], _mm512_castsi256_si512(sm16));
        }
        u->d = _cvtsh_ss(dd[0]), u->dmin = _cvtsh_ss(dd[1]);
    } else if (kind == TM_KQ6) {
        const tm_block_q6_k *b = (const tm_block_q6_k *)row + i;
        for (int h = 0; h < 2; h++) {
            const __m512i ql = _mm512_loadu_si512(b->ql + 64 * h);
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
            /* bytes 0-31: qh, 32-63: qh >> 2; bits 4-5 of each byte are then the high
             * bits of the low-nibble values, bits 0-1 (shifted up) of the high-nibble ones */
            const __m512i qhz = tm_join256(qh, _mm256_srli_epi16(qh, 2));
            u->w[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_slli_epi16(qhz, 4), m30));
            u->w[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), _mm512_and_si512(qhz, m30));
        }
        u->sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        tm_kq_scv16(u->sc16, idx, u->scv);
        u->d = _cvtsh_ss(b->d);
    } else if (kind == TM_KQ2) {
        const tm_block_q2_k *b = (const tm_block_q2_k *)row + i;
        tm_kq_unpack23(b->qs, NULL, u);
        const __m128i s = _mm_loadu_si128((const __m128i *)b->scales);
        const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(s, _mm_set1_epi8(15)));
        u->mp = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), _mm_set1_epi8(15)));
        tm_kq_scv16(sc16, idx, u->scv);
        u->d = _cvtsh_ss(b->d), u->dmin = _cvtsh_ss(b->dmin);
    } else { /* TM_KQ3 */
        const tm_block_q3_k *b = (const tm_block_q3_k *)row + i;
        tm_kq_unpack23(b->qs, b->hmask, u);
        _Alignas(32) int16_t sc[16]; /* the 6-bit scales, by the reference unpacker's rule */
        for (int g = 0; g < 16; g++) {
            const int lo = g < 8 ? b->scales[g] & 15 : b->scales[g - 8] >> 4;
            sc[g] = (int16_t)((lo | (((b->scales[8 + g % 4] >> (2 * (g / 4))) & 3) << 4)) - 32);
        }
        u->sc16 = _mm256_load_si256((const __m256i *)sc);
        tm_kq_scv16(u->sc16, idx, u->scv);
        u->d = _cvtsh_ss(b->d);
    }
}

/* Rows r + i (i < 4; rows past r_last repeat r_last and are not stored) x tokens
 * [t0, t0 + NT) of a K-quant weight; NT and kind are constants after inlining. */
TM_AI void tm_kq_pass(const tm_mm_args *a, int64_t r, int64_t r_last, int t0, const int NT, const int kind) {
    const int64_t nsb = a->n_cols / TM_QK_K;
    const int64_t row_bytes = tm_dtype_row_bytes(a->dtype, a->n_cols);
    const uint8_t *rows[TM_KQ_ROWS];
    for (int i = 0; i < TM_KQ_ROWS; i++)
        rows[i] = (const uint8_t *)a->w->src + (r + i < r_last ? r + i : r_last) * row_bytes;
    const tm_block_q8_k *y0 = (const tm_block_q8_k *)a->act->q8k + (int64_t)t0 * nsb;
    /* idx[c] (scales per 16 values): word w of zmm c covers values 64c + 2w, so scale
     * 4c + w / 8. idx[4 + c] (Q4_K / Q5_K, per 32): zmm c holds sub-blocks 2c (words
     * 0-15) and 2c+1 (16-31). */
    __m512i idx[8];
    for (int c = 0; c < 4; c++) {
        const __m256i base = _mm256_add_epi16(_mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                              _mm256_set1_epi16((short)(4 * c)));
        idx[c] = tm_join256(base, _mm256_add_epi16(base, _mm256_set1_epi16(2)));
        idx[4 + c] = tm_join256(_mm256_set1_epi16((short)(2 * c)), _mm256_set1_epi16((short)(2 * c + 1)));
    }
    const int zero = kind == TM_KQ3 ? 4 : kind == TM_KQ6 ? 32 : 0; /* type-0 zero points */
    __m128 acc[TM_KQ_NT];
    for (int k = 0; k < NT; k++) acc[k] = _mm_setzero_ps();
    for (int64_t i = 0; i < nsb; i++) {
        __m256i part[TM_KQ_NT][TM_KQ_ROWS]; /* per token and row: 8 partial sums (type-1: sumi and summ, hadd'ed) */
        float dr[TM_KQ_ROWS], dminr[TM_KQ_ROWS];
        for (int rr = 0; rr < TM_KQ_ROWS; rr++) {
            tm_kq_unpacked u;
            tm_kq_unpack(rows[rr], i, kind, idx, &u);
            dr[rr] = u.d, dminr[rr] = u.dmin;
            for (int k = 0; k < NT; k++) {
                const tm_block_q8_k *y = y0 + k * nsb + i;
                const __m256i bs = _mm256_loadu_si256((const __m256i *)y->bsums);
                __m512i sv = _mm512_setzero_si512();
                if (zero) /* sum((v - z) * a * sc) = sum(v * a * sc) - z * sum(sc * bsum) */
                    sv = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(),
                                                                 _mm256_slli_epi32(_mm256_madd_epi16(bs, u.sc16), zero == 4 ? 2 : 5)));
                for (int c = 0; c < 4; c++)
                    sv = _mm512_dpwssd_epi32(sv, _mm512_maddubs_epi16(u.w[c], _mm512_loadu_si512(y->qs + 64 * c)), u.scv[c]);
                /* type-1: [sumi 01 23, summ 01 23 | sumi 45 67, summ 45 67] */
                part[k][rr] = TM_KQ_HAS_MIN(kind) ? _mm256_hadd_epi32(tm_fold512(sv), _mm256_madd_epi16(bs, u.mp)) : tm_fold512(sv);
            }
        }
        const __m128 d4 = _mm_setr_ps(dr[0], dr[1], dr[2], dr[3]);
        for (int k = 0; k < NT; k++) {
            const __m128 yd = _mm_set1_ps(y0[k * nsb + i].d);
            if (TM_KQ_HAS_MIN(kind)) {
                /* rows 0,1: [sumi0 summ0 sumi1 summ1], rows 2,3 likewise */
                const __m256i h01 = _mm256_hadd_epi32(part[k][0], part[k][1]);
                const __m256i h23 = _mm256_hadd_epi32(part[k][2], part[k][3]);
                const __m128 s01 = _mm_cvtepi32_ps(_mm_add_epi32(_mm256_castsi256_si128(h01), _mm256_extracti128_si256(h01, 1)));
                const __m128 s23 = _mm_cvtepi32_ps(_mm_add_epi32(_mm256_castsi256_si128(h23), _mm256_extracti128_si256(h23, 1)));
                const __m128 sumi = _mm_shuffle_ps(s01, s23, _MM_SHUFFLE(2, 0, 2, 0));
                const __m128 summ = _mm_shuffle_ps(s01, s23, _MM_SHUFFLE(3, 1, 3, 1));
                const __m128 dmin4 = _mm_setr_ps(dminr[0], dminr[1], dminr[2], dminr[3]);
                /* y.d * (d * sumi - dmin * summ), as the scalar reference */
                acc[k] = _mm_fmadd_ps(yd, _mm_fmsub_ps(d4, sumi, _mm_mul_ps(dmin4, summ)), acc[k]);
            } else {
                const __m128 sumi = _mm_cvtepi32_ps(tm_hsum4x8(part[k][0], part[k][1], part[k][2], part[k][3]));
                acc[k] = _mm_fmadd_ps(_mm_mul_ps(yd, d4), sumi, acc[k]); /* y.d * d * sumi */
            }
        }
    }
    const int n_store = r_last - r + 1 < TM_KQ_ROWS ? (int)(r_last - r + 1) : TM_KQ_ROWS;
    const __mmask8 mask = (__mmask8)((1u << n_store) - 1);
    const __m128 bias = a->bias ? _mm_maskz_loadu_ps(mask, a->bias + r) : _mm_setzero_ps();
    for (int k = 0; k < NT; k++) _mm_mask_storeu_ps(a->out + (int64_t)(t0 + k) * a->n_rows + r, mask, _mm_add_ps(acc[k], bias));
}

/* ---- Q4_K / Q5_K tiles (packed at load, matmul_impl.h) -----------------------------
 *
 * One zmm holds 4 consecutive values of each of the 16 rows, so per super-block and token
 * a sub-block's dot is 8 vpdpbusd against broadcast activation bytes, exact in int32; it
 * is weighted by the rows' sub-block scales (vpmulld) into sumi, and the mins term summ
 * is 4 vpdpwssd of the rows' min pairs against the token's 32-value sums. The float step
 * is the row kernels' y.d * (d * sumi - dmin * summ). Each unpacked chunk serves
 * TM_KT_NT tokens. */

enum { TM_KT_NT = 4 };

/* Tokens [t0, t0 + NT) x tile ti; NT and q5 are constants after inlining. */
TM_AI void tm_kt_group(const tm_mm_args *a, int64_t ti, int t0, const int NT, const int q5) {
    const tm_mm_weight *pw = a->w;
    const int64_t nsb = a->n_cols / TM_QK_K;
    const size_t sb_bytes = q5 ? TM_MM_KQ5_SB : TM_MM_KQ4_SB;
    const uint8_t *tile = pw->packed + (size_t)ti * pw->tile_bytes;
    const tm_block_q8_k *y0 = (const tm_block_q8_k *)a->act->q8k + (int64_t)t0 * nsb;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512 acc[TM_KT_NT];
    for (int u = 0; u < NT; u++) acc[u] = _mm512_setzero_ps();
    for (int64_t s = 0; s < nsb; s++) {
        const uint8_t *sb = tile + s * sb_bytes;
        __m512i sumi[TM_KT_NT], summ[TM_KT_NT];
        for (int u = 0; u < NT; u++) sumi[u] = summ[u] = _mm512_setzero_si512();
        /* one token: the super-block is one forward stream and the hardware prefetcher
         * keeps up (software prefetch cost 10%); more tokens: it falls behind (Q4_K at 4
         * tokens: 21 GB/s without, 35 with) */
        if (t0 == 0 && a->n > 1) tm_mm_prefetch_next_tile(pw, tile, s, nsb, 0, 1);
        for (int c = 0; c < 4; c++) {
            __m512i lo[TM_KT_NT], hi[TM_KT_NT];
            for (int u = 0; u < NT; u++) lo[u] = hi[u] = _mm512_setzero_si512();
            for (int k = 0; k < 8; k++) {
                const __m512i v = _mm512_load_si512((const __m512i *)(sb + tm_mm_kq_qs(8 * c + k, q5)));
                __m512i wl = _mm512_and_si512(v, m4), wh = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                if (q5) { /* bits 2c and 2c + 1 of the rows' qh bytes -> bit 4 */
                    const __m512i h = _mm512_load_si512((const __m512i *)(sb + tm_mm_kq_qh(k)));
                    const __m512i m10 = _mm512_set1_epi8(0x10);
                    const __m512i hl = 2 * c <= 4 ? _mm512_slli_epi16(h, 4 - 2 * c) : _mm512_srli_epi16(h, 2 * c - 4);
                    const __m512i hh = 2 * c + 1 <= 4 ? _mm512_slli_epi16(h, 3 - 2 * c) : _mm512_srli_epi16(h, 2 * c - 3);
                    wl = _mm512_ternarylogic_epi64(wl, hl, m10, 0xF8);
                    wh = _mm512_ternarylogic_epi64(wh, hh, m10, 0xF8);
                }
                for (int u = 0; u < NT; u++) {
                    const int8_t *q = y0[u * nsb + s].qs + 64 * c + 4 * k;
                    lo[u] = tm_dpbusd_bc(lo[u], wl, q);
                    hi[u] = tm_dpbusd_bc(hi[u], wh, q + 32);
                }
            }
            const __m512i sc0 = _mm512_cvtepu8_epi32(_mm_load_si128((const __m128i *)(sb + tm_mm_kq_sc(q5) + 32 * c)));
            const __m512i sc1 = _mm512_cvtepu8_epi32(_mm_load_si128((const __m128i *)(sb + tm_mm_kq_sc(q5) + 32 * c + 16)));
            for (int u = 0; u < NT; u++)
                sumi[u] = _mm512_add_epi32(sumi[u], _mm512_add_epi32(_mm512_mullo_epi32(lo[u], sc0), _mm512_mullo_epi32(hi[u], sc1)));
        }
        for (int q = 0; q < 4; q++) { /* mins of sub-blocks 2q, 2q + 1 against their 32-value sums */
            const __m512i mp = _mm512_cvtepu8_epi16(_mm256_load_si256((const __m256i *)(sb + tm_mm_kq_sc(q5) + 128 + 32 * q)));
            for (int u = 0; u < NT; u++) {
                const int16_t *bs = y0[u * nsb + s].bsums + 4 * q;
                const uint32_t pair = (uint16_t)(bs[0] + bs[1]) | (uint32_t)(uint16_t)(bs[2] + bs[3]) << 16;
                summ[u] = _mm512_dpwssd_epi32(summ[u], mp, _mm512_set1_epi32((int32_t)pair));
            }
        }
        const __m512 d = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(sb + tm_mm_kq_sc(q5) + 256)));
        const __m512 dmin = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(sb + tm_mm_kq_sc(q5) + 256 + 32)));
        for (int u = 0; u < NT; u++) { /* y.d * (d * sumi - dmin * summ), as the row kernels */
            const __m512 t = _mm512_fmsub_ps(d, _mm512_cvtepi32_ps(sumi[u]), _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(summ[u])));
            acc[u] = _mm512_fmadd_ps(_mm512_set1_ps(y0[u * nsb + s].d), t, acc[u]);
        }
    }
    tm_q_store(a, ti, t0, NT, acc);
}

/* Q6_K tile, tokens [t0, t0 + NT): per chunk triple (h, k) of the packed stream, the qh
 * chunk completes the two ql chunks p = 0, 1; each ql chunk gives a low- and a high-nibble
 * operand. Four 16-value groups (p = 0, 1 x low, high) accumulate 4 vpdpbusd each,
 * seeded with -32 * the group's activation sum (the zero point), then are weighted by the
 * rows' scales (vpmulld). Float step as the row kernel: (y.d * d) * sumi. */
TM_AI void tm_kt6_group(const tm_mm_args *a, int64_t ti, int t0, const int NT) {
    const tm_mm_weight *pw = a->w;
    const int64_t nsb = a->n_cols / TM_QK_K;
    const uint8_t *tile = pw->packed + (size_t)ti * pw->tile_bytes;
    const tm_block_q8_k *y0 = (const tm_block_q8_k *)a->act->q8k + (int64_t)t0 * nsb;
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    __m512 acc[TM_KT_NT];
    for (int u = 0; u < NT; u++) acc[u] = _mm512_setzero_ps();
    for (int64_t s = 0; s < nsb; s++) {
        const uint8_t *sb = tile + s * TM_MM_KQ6_SB;
        __m512i sumi[TM_KT_NT];
        for (int u = 0; u < NT; u++) sumi[u] = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++)
            for (int e = 0; e < 2; e++) { /* chunks k = 4e..4e+3: group g = 8h + 2p + e (low nibbles), g + 4 (high) */
                /* a quarter of the super-block's share of the next tile per pass: its 53
                 * lines at once filled the miss buffers and stalled */
                if (t0 == 0 && a->n > 1) tm_mm_prefetch_next_tile(pw, tile, s, nsb, 2 * h + e, 4);
                __m512i dg[4][TM_KT_NT]; /* [2p + (high nibble)][token] */
                for (int u = 0; u < NT; u++) {
                    const int16_t *bs = y0[u * nsb + s].bsums;
                    for (int p = 0; p < 2; p++) {
                        dg[2 * p][u] = _mm512_set1_epi32(-32 * bs[8 * h + 2 * p + e]);
                        dg[2 * p + 1][u] = _mm512_set1_epi32(-32 * bs[8 * h + 2 * p + e + 4]);
                    }
                }
                for (int k = 4 * e; k < 4 * e + 4; k++) {
                    const uint8_t *c = sb + TM_MM_KQ6_CHUNKS + 3 * 64 * (8 * h + k);
                    const __m512i qh = _mm512_load_si512((const __m512i *)c);
                    for (int p = 0; p < 2; p++) {
                        const __m512i v = _mm512_load_si512((const __m512i *)(c + 64 * (1 + p)));
                        const __m512i hl = p ? _mm512_slli_epi16(qh, 2) : _mm512_slli_epi16(qh, 4);
                        const __m512i hh = p ? _mm512_srli_epi16(qh, 2) : qh;
                        const __m512i wl = _mm512_ternarylogic_epi64(_mm512_and_si512(v, m4), hl, m30, 0xF8);
                        const __m512i wh = _mm512_ternarylogic_epi64(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4), hh, m30, 0xF8);
                        for (int u = 0; u < NT; u++) {
                            const int8_t *q = y0[u * nsb + s].qs + 128 * h + 32 * p + 4 * k;
                            dg[2 * p][u] = tm_dpbusd_bc(dg[2 * p][u], wl, q);
                            dg[2 * p + 1][u] = tm_dpbusd_bc(dg[2 * p + 1][u], wh, q + 64);
                        }
                    }
                }
                for (int p = 0; p < 2; p++) {
                    const int g = 8 * h + 2 * p + e;
                    const __m512i scl = _mm512_cvtepi8_epi32(_mm_load_si128((const __m128i *)(sb + 16 * g)));
                    const __m512i sch = _mm512_cvtepi8_epi32(_mm_load_si128((const __m128i *)(sb + 16 * (g + 4))));
                    for (int u = 0; u < NT; u++)
                        sumi[u] = _mm512_add_epi32(sumi[u], _mm512_add_epi32(_mm512_mullo_epi32(dg[2 * p][u], scl),
                                                                             _mm512_mullo_epi32(dg[2 * p + 1][u], sch)));
                }
            }
        const __m512 d = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(sb + 256)));
        for (int u = 0; u < NT; u++) /* (y.d * d) * sumi, as the row kernels */
            acc[u] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(y0[u * nsb + s].d), d), _mm512_cvtepi32_ps(sumi[u]), acc[u]);
    }
    tm_q_store(a, ti, t0, NT, acc);
}

void tm_mm_tiles_q6k_avx512(const tm_mm_args *a, int64_t t0, int64_t t1) {
    for (int64_t ti = t0; ti < t1; ti++)
        for (int t = 0; t < a->n; t += TM_KT_NT) {
            const int nt = a->n - t < TM_KT_NT ? a->n - t : TM_KT_NT;
            if (nt == 4) tm_kt6_group(a, ti, t, 4);
            else if (nt == 3) tm_kt6_group(a, ti, t, 3);
            else if (nt == 2) tm_kt6_group(a, ti, t, 2);
            else tm_kt6_group(a, ti, t, 1);
        }
}

TM_AI void tm_kt_tiles(const tm_mm_args *a, int64_t t0, int64_t t1, const int q5) {
    for (int64_t ti = t0; ti < t1; ti++)
        for (int t = 0; t < a->n; t += TM_KT_NT) {
            const int nt = a->n - t < TM_KT_NT ? a->n - t : TM_KT_NT;
            if (nt == 4) tm_kt_group(a, ti, t, 4, q5);
            else if (nt == 3) tm_kt_group(a, ti, t, 3, q5);
            else if (nt == 2) tm_kt_group(a, ti, t, 2, q5);
            else tm_kt_group(a, ti, t, 1, q5);
        }
}
void tm_mm_tiles_q4k_avx512(const tm_mm_args *a, int64_t t0, int64_t t1) { tm_kt_tiles(a, t0, t1, 0); }
void tm_mm_tiles_q5k_avx512(const tm_mm_args *a, int64_t t0, int64_t t1) { tm_kt_tiles(a, t0, t1, 1); }

/* Rows [r0, r1) x all tokens, 4 rows x 4 tokens a pass; kind is a constant after inlining. */
TM_AI void tm_kq_rows(const tm_mm_args *a, int64_t r0, int64_t r1, const int kind) {
    for (int64_t r = r0; r < r1; r += TM_KQ_ROWS)
        for (int t = 0; t < a->n; t += TM_KQ_NT) {
            const int nt = a->n - t < TM_KQ_NT ? a->n - t : TM_KQ_NT;
            if (nt == 4) tm_kq_pass(a, r, r1 - 1, t, 4, kind);
            else if (nt == 3) tm_kq_pass(a, r, r1 - 1, t, 3, kind);
            else if (nt == 2) tm_kq_pass(a, r, r1 - 1, t, 2, kind);
            else tm_kq_pass(a, r, r1 - 1, t, 1, kind);
        }
}
void tm_mm_rows_q4k_avx512(const tm_mm_args *a, int64_t r0, int64_t r1) { tm_kq_rows(a, r0, r1, TM_KQ4); }
void tm_mm_rows_q6k_avx512(const tm_mm_args *a, int64_t r0, int64_t r1) { tm_kq_rows(a, r0, r1, TM_KQ6); }
void tm_mm_rows_q2k_avx512(const tm_mm_args *a, int64_t r0, int64_t r1) { tm_kq_rows(a, r0, r1, TM_KQ2); }
void tm_mm_rows_q3k_avx512(const tm_mm_args *a, int64_t r0, int64_t r1) { tm_kq_rows(a, r0, r1, TM_KQ3); }
void tm_mm_rows_q5k_avx512(const tm_mm_args *a, int64_t r0, int64_t r1) { tm_kq_rows(a, r0, r1, TM_KQ5); }

/* ---- the table ------------------------------------------------------------------------ */

static const tm_mm_kernels tm_mm_avx512 = {
    .level = TM_SIMD_AVX512VNNI,
    .max_nt = TM_NT_MAX,
    .quantize_q8 = tm_mm_quantize_q8_avx512,
    .quantize_q8k = tm_mm_quantize_q8k_avx512,
    .types = {
        /*                 activations    packing           tiles                     rows (GGUF blocks)   group scales */
        [TM_DTYPE_F32]  = {TM_MM_ACT_F32, &tm_mm_pack_f32,  tm_mm_tiles_dense_avx512, tm_mm_rows_scalar,     0},
        [TM_DTYPE_F16]  = {TM_MM_ACT_F32, &tm_mm_pack_u16,  tm_mm_tiles_dense_avx512, tm_mm_rows_scalar,     0},
        [TM_DTYPE_BF16] = {TM_MM_ACT_F32, &tm_mm_pack_u16,  tm_mm_tiles_dense_avx512, tm_mm_rows_scalar,     0},
        [TM_DTYPE_Q4_0] = {TM_MM_ACT_Q8,  &tm_mm_pack_q4_0, tm_mm_tiles_q_avx512,     tm_mm_rows_scalar,     1},
        [TM_DTYPE_Q4_1] = {TM_MM_ACT_Q8,  &tm_mm_pack_q4_1, tm_mm_tiles_q_avx512,     tm_mm_rows_scalar,     1},
        [TM_DTYPE_Q8_0] = {TM_MM_ACT_Q8,  &tm_mm_pack_q8_0, tm_mm_tiles_q_avx512,     tm_mm_rows_scalar,     1},
        [TM_DTYPE_Q5_0] = {TM_MM_ACT_Q8,  &tm_mm_pack_q5_0, tm_mm_tiles_q_avx512,     tm_mm_rows_scalar,     1},
        [TM_DTYPE_Q5_1] = {TM_MM_ACT_Q8,  &tm_mm_pack_q5_1, tm_mm_tiles_q_avx512,     tm_mm_rows_scalar,     1},
        [TM_DTYPE_Q4_K] = {TM_MM_ACT_Q8K, &tm_mm_pack_q4_k, tm_mm_tiles_q4k_avx512,   tm_mm_rows_q4k_avx512, 0},
        [TM_DTYPE_Q6_K] = {TM_MM_ACT_Q8K, &tm_mm_pack_q6_k, tm_mm_tiles_q6k_avx512,   tm_mm_rows_q6k_avx512, 0},
        [TM_DTYPE_Q2_K] = {TM_MM_ACT_Q8K, NULL,             NULL,                     tm_mm_rows_q2k_avx512, 0},
        [TM_DTYPE_Q3_K] = {TM_MM_ACT_Q8K, NULL,             NULL,                     tm_mm_rows_q3k_avx512, 0},
        [TM_DTYPE_Q5_K] = {TM_MM_ACT_Q8K, &tm_mm_pack_q5_k, tm_mm_tiles_q5k_avx512,   tm_mm_rows_q5k_avx512, 0},
    },
};

const tm_mm_kernels *tm_mm_kernels_avx512(void) { return &tm_mm_avx512; }

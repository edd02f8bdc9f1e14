/* matmul_avx2.c - AVX2 + FMA + F16C kernels on the packed tiles of matmul_impl.h.
 *
 * A ymm holds 8 rows (lane r = row r), so a 16-row tile is two halves processed one
 * after the other. Without VNNI the int8 products go through vpmaddubsw (u8 x s8 -> i16
 * pairs) and vpmaddwd with ones (-> i32):
 *   Q4_0/Q4_1  nibbles are <= 15, so the eight i16 partial sums of a block cannot
 *              overflow (8 * 2 * 15 * 127 = 30480) and are added before one vpmaddwd.
 *   Q5_0/Q5_1  the Q4 nibbles with their fifth bits or'ed in (matmul_impl.h): values <= 31,
 *              so only 4 partial sums fit in int16 (4 * 2 * 31 * 127 = 31496): two vpmaddwd.
 *   Q8_0       the +128 bias is removed again and the sign trick |w| * sign(a, w) keeps
 *              vpmaddubsw exact (2 * 128 * 127 = 32512); one vpmaddwd per 4-value group.
 *   dense      as the AVX-512 file: f32 panel of 256 columns reused by all tokens.
 * Q4_K, Q5_K (tm_kt_group) and Q6_K (tm_kt6_group) are packed super-block tiles; the
 * row kernels of Q2_K and Q3_K (and of those three, for weights packed for another level)
 * read the GGUF blocks in place. The file ends with the level's kernel table. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/simd.h"

#define TM_AI static inline __attribute__((always_inline))

enum { TM_KIND_Q4_0, TM_KIND_Q4_1, TM_KIND_Q8_0, TM_KIND_Q5_0, TM_KIND_Q5_1 };
enum { TM_NT_MAX = 4, TM_KC = 256 }; /* largest token group (the table's max_nt); panel columns */

TM_AI float tm_hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

TM_AI int32_t tm_hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* ---- activation quantization (bit-identical to matmul_scalar.c) ------------------- */

static inline int32_t tm_hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* Q8_K for the K-quant rows, bit-identical to tm_quantize_row(TM_DTYPE_Q8_K): see
 * tm_mm_quantize_q8k_avx512. */
static void tm_quantize_q8k(const float *x, tm_block_q8_k *y, int64_t nb) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t i = 0; i < nb; i++, x += TM_QK_K) {
        __m256 vmax = _mm256_setzero_ps();
        for (int c = 0; c < TM_QK_K / 8; c++) /* (|x|, vmax): a NaN |x| is skipped, as there */
            vmax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + 8 * c), abs_mask), vmax);
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
        const float amax = _mm_cvtss_f32(m4);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        float max = 0.0f;
        for (int c = 0; c < TM_QK_K / 8; c++) {
            const __m256 ax = _mm256_and_ps(_mm256_loadu_ps(x + 8 * c), abs_mask);
            const int m = _mm256_movemask_ps(_mm256_cmp_ps(ax, _mm256_set1_ps(amax), _CMP_EQ_OQ));
            if (m) {
                max = x[8 * c + __builtin_ctz((unsigned)m)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        if (isinf(iscale)) { /* |max| below ~3.7e-37: too small to invert; zero, as the GPU does */
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i lim = _mm256_set1_epi32(127);
        for (int g = 0; g < TM_QK_K / 16; g++) {
            const __m256i v0 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + 16 * g))), lim);
            const __m256i v1 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + 16 * g + 8))), lim);
            /* packs interleaves 128-bit lanes; the permute puts v0's 8 before v1's 8 */
            const __m256i p16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(v0, v1), 0xd8);
            const __m128i p8 = _mm_packs_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1));
            _mm_storeu_si128((__m128i *)(y[i].qs + 16 * g), p8);
            y[i].bsums[g] = (int16_t)tm_hsum_epi32(_mm256_add_epi32(v0, v1));
        }
        y[i].d = 1.0f / iscale;
    }
}

static void tm_quantize_q8(const float *x, int64_t n_cols, int64_t stride, int8_t *q, float *d,
                           int32_t *sum, float *s) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < n_cols / TM_QK; b++, x += TM_QK, q += TM_QK * stride) {
        __m256 v[4];
        for (int j = 0; j < 4; j++) v[j] = _mm256_loadu_ps(x + 8 * j);
        const __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], absmask), _mm256_and_ps(v[1], absmask)),
                                       _mm256_max_ps(_mm256_and_ps(v[2], absmask), _mm256_and_ps(v[3], absmask)));
        const float amax = tm_hmax8(m);
        const float db = amax / 127.0f, id = db != 0.0f && 1.0f / db < INFINITY ? 1.0f / db : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
        __m256i iq[4];
        for (int j = 0; j < 4; j++) iq[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], vid)); /* half-even */
        /* packs work per 128-bit lane; the permute restores element order */
        const __m256i p16a = _mm256_packs_epi32(iq[0], iq[1]), p16b = _mm256_packs_epi32(iq[2], iq[3]);
        const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b),
                                                       _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)q, p8);
        const int32_t acc = tm_hsum8i(_mm256_add_epi32(_mm256_add_epi32(iq[0], iq[1]), _mm256_add_epi32(iq[2], iq[3])));
        d[b] = db;
        sum[b] = acc;
        s[b] = db * (float)acc;
    }
}

/* ---- tile helpers ------------------------------------------------------------------ */

TM_AI __m256i tm_bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* Lanes whose row exists: all-ones for rows < n_rows. */
TM_AI __m256i tm_row_mask(const tm_mm_args *a, int64_t r0) {
    const int64_t left = a->n_rows - r0;
    const int l = left >= 8 ? 8 : (left <= 0 ? 0 : (int)left);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(l), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* ---- quantized tiles ------------------------------------------------------------- */

/* Tokens [t0, t0 + NT) x half h (rows 8h..8h+7) of tile ti. */
TM_AI void tm_q_group(const tm_mm_args *a, int64_t ti, int h, int t0, const int NT, const int kind) {
    const tm_mm_weight *pw = a->w;
    const uint8_t *tile = pw->packed + (size_t)ti * pw->tile_bytes;
    const uint16_t *dsec = (const uint16_t *)(tile + pw->d_off) + 8 * h;
    const uint16_t *msec = (const uint16_t *)(tile + pw->m_off) + 8 * h;
    const int64_t nb = a->nb, cols = a->n_cols;
    const int8_t *aq = a->act->q + (int64_t)t0 * cols;
    const float *ad = a->act->d + (int64_t)t0 * nb, *as = a->act->s + (int64_t)t0 * nb;
    const int32_t *asum = a->act->sum + (int64_t)t0 * nb;
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    const __m256i x80 = _mm256_set1_epi8((char)0x80);
    __m256 acc[TM_NT_MAX];
    for (int i = 0; i < NT; i++) acc[i] = _mm256_setzero_ps();

    for (int64_t b = 0; b < nb; b++) {
        if (h == 0 && t0 == 0) tm_mm_prefetch_next_tile(pw, tile, b, nb, 0, 1);
        __m256i w[8], wabs[8]; /* w[j]: values 4j..4j+3 of each row */
        if (kind == TM_KIND_Q8_0) {
            const uint8_t *p = tile + b * 512 + 32 * h;
            for (int j = 0; j < 8; j++) {
                w[j] = _mm256_xor_si256(_mm256_load_si256((const __m256i *)(p + 64 * j)), x80); /* signed */
                wabs[j] = _mm256_abs_epi8(w[j]);
            }
        } else {
            const uint8_t *p = tile + b * 256 + 32 * h;
            for (int k = 0; k < 4; k++) {
                const __m256i v = _mm256_load_si256((const __m256i *)(p + 64 * k));
                w[k] = _mm256_and_si256(v, m4);
                w[k + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            }
            if (kind == TM_KIND_Q5_0 || kind == TM_KIND_Q5_1) { /* bit k -> 4 and bit 4 + k -> 4 */
                const __m256i hb = _mm256_load_si256((const __m256i *)(tile + pw->h_off + b * 64 + 32 * h));
                const __m256i m10 = _mm256_set1_epi8(0x10);
                w[0] = _mm256_or_si256(w[0], _mm256_and_si256(_mm256_slli_epi16(hb, 4), m10));
                w[1] = _mm256_or_si256(w[1], _mm256_and_si256(_mm256_slli_epi16(hb, 3), m10));
                w[2] = _mm256_or_si256(w[2], _mm256_and_si256(_mm256_slli_epi16(hb, 2), m10));
                w[3] = _mm256_or_si256(w[3], _mm256_and_si256(_mm256_slli_epi16(hb, 1), m10));
                w[4] = _mm256_or_si256(w[4], _mm256_and_si256(hb, m10));
                w[5] = _mm256_or_si256(w[5], _mm256_and_si256(_mm256_srli_epi16(hb, 1), m10));
                w[6] = _mm256_or_si256(w[6], _mm256_and_si256(_mm256_srli_epi16(hb, 2), m10));
                w[7] = _mm256_or_si256(w[7], _mm256_and_si256(_mm256_srli_epi16(hb, 3), m10));
            }
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(dsec + b * TM_MM_TILE)));
        __m256 mw = _mm256_setzero_ps();
        if (kind == TM_KIND_Q4_1 || kind == TM_KIND_Q5_1) mw = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(msec + b * TM_MM_TILE)));
        for (int i = 0; i < NT; i++) {
            const int8_t *qa = aq + (b * NT + i) * 32; /* grouped layout: matmul_impl.h */
            const int64_t ib = i * nb + b;             /* its scales: row-major */
            __m256i c;
            if (kind == TM_KIND_Q8_0) {
                c = _mm256_setzero_si256();
                for (int j = 0; j < 8; j++) {
                    const __m256i p = _mm256_maddubs_epi16(wabs[j], _mm256_sign_epi8(tm_bcast4(qa + 4 * j), w[j]));
                    c = _mm256_add_epi32(c, _mm256_madd_epi16(p, ones));
                }
            } else if (kind == TM_KIND_Q5_0 || kind == TM_KIND_Q5_1) {
                __m256i p0 = _mm256_maddubs_epi16(w[0], tm_bcast4(qa)), p1 = _mm256_maddubs_epi16(w[4], tm_bcast4(qa + 16));
                for (int j = 1; j < 4; j++) {
                    p0 = _mm256_add_epi16(p0, _mm256_maddubs_epi16(w[j], tm_bcast4(qa + 4 * j)));
                    p1 = _mm256_add_epi16(p1, _mm256_maddubs_epi16(w[j + 4], tm_bcast4(qa + 16 + 4 * j)));
                }
                c = _mm256_add_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones));
                if (kind == TM_KIND_Q5_0) c = _mm256_add_epi32(c, _mm256_set1_epi32(-16 * asum[ib]));
            } else {
                __m256i p = _mm256_maddubs_epi16(w[0], tm_bcast4(qa));
                for (int j = 1; j < 8; j++) p = _mm256_add_epi16(p, _mm256_maddubs_epi16(w[j], tm_bcast4(qa + 4 * j)));
                c = _mm256_madd_epi16(p, ones);
                if (kind == TM_KIND_Q4_0) c = _mm256_add_epi32(c, _mm256_set1_epi32(-8 * asum[ib]));
            }
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c), _mm256_mul_ps(dw, _mm256_set1_ps(ad[ib])), acc[i]);
            if (kind == TM_KIND_Q4_1 || kind == TM_KIND_Q5_1) acc[i] = _mm256_fmadd_ps(mw, _mm256_set1_ps(as[ib]), acc[i]);
        }
    }

    const int64_t r0 = ti * TM_MM_TILE + 8 * h;
    const __m256i mask = tm_row_mask(a, r0);
    const __m256 bias = a->bias ? _mm256_maskload_ps(a->bias + r0, mask) : _mm256_setzero_ps();
    for (int i = 0; i < NT; i++)
        _mm256_maskstore_ps(a->out + (int64_t)(t0 + i) * a->n_rows + r0, mask, _mm256_add_ps(acc[i], bias));
}

/* Tiles [t0, t1) x all tokens; kind is a constant after inlining. */
TM_AI void tm_q_tiles(const tm_mm_args *a, int64_t t0, int64_t t1, const int kind) {
    for (int64_t ti = t0; ti < t1; ti++)
        for (int h = 0; h < 2; h++) {
            if (ti * TM_MM_TILE + 8 * h >= a->n_rows) break;
            for (int t = 0; t < a->n;) {
                const int nt = tm_mm_group_size(TM_NT_MAX, a->n - t);
                if (nt == 4) tm_q_group(a, ti, h, t, 4, kind);
                else if (nt == 2) tm_q_group(a, ti, h, t, 2, kind);
                else tm_q_group(a, ti, h, t, 1, kind);
                t += nt;
            }
        }
}
static void tm_q4_0_tiles(const tm_mm_args *a, int64_t t0, int64_t t1) { tm_q_tiles(a, t0, t1, TM_KIND_Q4_0); }
static void tm_q4_1_tiles(const tm_mm_args *a, int64_t t0, int64_t t1) { tm_q_tiles(a, t0, t1, TM_KIND_Q4_1); }
static void tm_q8_0_tiles(const tm_mm_args *a, int64_t t0, int64_t t1) { tm_q_tiles(a, t0, t1, TM_KIND_Q8_0); }
static void tm_q5_0_tiles(const tm_mm_args *a, int64_t t0, int64_t t1) { tm_q_tiles(a, t0, t1, TM_KIND_Q5_0); }
static void tm_q5_1_tiles(const tm_mm_args *a, int64_t t0, int64_t t1) { tm_q_tiles(a, t0, t1, TM_KIND_Q5_1); }

/* ---- dense tiles ----------------------------------------------------------------- */

/* 8 weights (one k, rows 8h..8h+7) of a dense tile as f32. */
TM_AI __m256 tm_dense_load(const uint8_t *tile, int64_t k, int h, tm_dtype t) {
    if (t == TM_DTYPE_F32) return _mm256_load_ps((const float *)tile + k * TM_MM_TILE + 8 * h);
    const __m128i v = _mm_load_si128((const __m128i *)((const uint16_t *)tile + k * TM_MM_TILE + 8 * h));
    if (t == TM_DTYPE_F16) return _mm256_cvtph_ps(v);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16)); /* bf16 */
}

TM_AI void tm_store2(const tm_mm_args *a, float *dst, int64_t r0, __m256 lo, __m256 hi, int use_bias) {
    const __m256i m0 = tm_row_mask(a, r0), m1 = tm_row_mask(a, r0 + 8);
    if (use_bias && a->bias) {
        lo = _mm256_add_ps(lo, _mm256_maskload_ps(a->bias + r0, m0));
        hi = _mm256_add_ps(hi, _mm256_maskload_ps(a->bias + r0 + 8, m1));
    }
    _mm256_maskstore_ps(dst, m0, lo);
    _mm256_maskstore_ps(dst + 8, m1, hi);
}

/* n = 1, tiles [ti, ti + nt), nt <= TM_GEMV_TILES. Each row is one FMA chain over k with
 * the operations of a batch (tm_dense_group: a panel's sum is stored and continued), so
 * a token gets the same bits alone as in a batch; tiles and halves run side by side. */
enum { TM_GEMV_TILES = 4 };
TM_AI void tm_dense_gemv(const tm_mm_args *a, int64_t ti, int nt, const tm_dtype t) {
    const float *x = a->x;
    const uint8_t *tile[TM_GEMV_TILES];
    __m256 lo[TM_GEMV_TILES], hi[TM_GEMV_TILES];
    for (int j = 0; j < TM_GEMV_TILES; j++) {
        tile[j] = a->w->packed + (size_t)(ti + (j < nt ? j : 0)) * a->w->tile_bytes;
        lo[j] = hi[j] = _mm256_setzero_ps();
    }
    for (int64_t k = 0; k < a->n_cols; k++) {
        const __m256 xv = _mm256_set1_ps(x[k]);
        for (int j = 0; j < TM_GEMV_TILES; j++) {
            lo[j] = _mm256_fmadd_ps(tm_dense_load(tile[j], k, 0, t), xv, lo[j]);
            hi[j] = _mm256_fmadd_ps(tm_dense_load(tile[j], k, 1, t), xv, hi[j]);
        }
    }
    for (int j = 0; j < nt; j++) {
        const int64_t r0 = (ti + j) * TM_MM_TILE;
        tm_store2(a, a->out + r0, r0, lo[j], hi[j], 1);
    }
}

/* Tokens [t0, t0 + NT) x columns [k0, k0 + kc) from an f32 panel (kc, 16). */
TM_AI void tm_dense_group(const tm_mm_args *a, const float *panel, int64_t r0, int64_t k0,
                          int64_t kc, int t0, const int NT, int first, int last) {
    __m256 lo[TM_NT_MAX], hi[TM_NT_MAX];
    const __m256i m0 = tm_row_mask(a, r0), m1 = tm_row_mask(a, r0 + 8);
    for (int i = 0; i < NT; i++) {
        float *o = a->out + (int64_t)(t0 + i) * a->n_rows + r0;
        lo[i] = first ? _mm256_setzero_ps() : _mm256_maskload_ps(o, m0);
        hi[i] = first ? _mm256_setzero_ps() : _mm256_maskload_ps(o + 8, m1);
    }
    const float *x = a->act->xp + (int64_t)t0 * a->n_cols + k0 * NT; /* grouped: x[k * NT + i] */
    for (int64_t k = 0; k < kc; k++) {
        const __m256 w0 = _mm256_load_ps(panel + k * TM_MM_TILE), w1 = _mm256_load_ps(panel + k * TM_MM_TILE + 8);
        for (int i = 0; i < NT; i++) {
            const __m256 xv = _mm256_broadcast_ss(x + k * NT + i);
            lo[i] = _mm256_fmadd_ps(w0, xv, lo[i]);
            hi[i] = _mm256_fmadd_ps(w1, xv, hi[i]);
        }
    }
    for (int i = 0; i < NT; i++)
        tm_store2(a, a->out + (int64_t)(t0 + i) * a->n_rows + r0, r0, lo[i], hi[i], last);
}

static void tm_dense_tile(const tm_mm_args *a, int64_t ti) {
    const tm_dtype t = a->dtype;
    const uint8_t *tile = a->w->packed + (size_t)ti * a->w->tile_bytes;
    const int64_t r0 = ti * TM_MM_TILE;
    _Alignas(32) float panel[TM_KC * TM_MM_TILE];
    for (int64_t k0 = 0; k0 < a->n_cols; k0 += TM_KC) {
        const int64_t kc = a->n_cols - k0 < TM_KC ? a->n_cols - k0 : TM_KC;
        const float *p = panel;
        if (t == TM_DTYPE_F32) {
            p = (const float *)tile + k0 * TM_MM_TILE;
        } else {
            for (int64_t k = 0; k < kc; k++)
                for (int h = 0; h < 2; h++)
                    _mm256_store_ps(panel + k * TM_MM_TILE + 8 * h,
                                    t == TM_DTYPE_F16 ? tm_dense_load(tile, k0 + k, h, TM_DTYPE_F16)
                                                      : tm_dense_load(tile, k0 + k, h, TM_DTYPE_BF16));
        }
        const int first = k0 == 0, last = k0 + kc >= a->n_cols;
        for (int tk = 0; tk < a->n;) {
            const int nt = tm_mm_group_size(TM_NT_MAX, a->n - tk);
            if (nt == 4) tm_dense_group(a, p, r0, k0, kc, tk, 4, first, last);
            else if (nt == 2) tm_dense_group(a, p, r0, k0, kc, tk, 2, first, last);
            else tm_dense_group(a, p, r0, k0, kc, tk, 1, first, last);
            tk += nt;
        }
    }
}

static void tm_dense_gemv_run(const tm_mm_args *a, int64_t ti, int nt) {
    if (a->dtype == TM_DTYPE_F16) tm_dense_gemv(a, ti, nt, TM_DTYPE_F16);
    else if (a->dtype == TM_DTYPE_BF16) tm_dense_gemv(a, ti, nt, TM_DTYPE_BF16);
    else tm_dense_gemv(a, ti, nt, TM_DTYPE_F32);
}

/* F32 / F16 / BF16 tiles [t0, t1) x all tokens. */
static void tm_dense_tiles(const tm_mm_args *a, int64_t t0, int64_t t1) {
    if (tm_mm_dense_gemv_runs(a, t0, t1, TM_GEMV_TILES, tm_dense_gemv_run)) return;
    for (int64_t ti = t0; ti < t1; ti++) tm_dense_tile(a, ti);
}

/* ---- K-quant rows (GGUF blocks read in place, no packing) ----------------------------
 *
 * As in matmul_avx512.c, with ymm: per 256-value superblock, row and token the integer
 * sums of tm_mm_dot_row_scalar (u8-unpacked weights x s8 activations by maddubs, no
 * int16 saturation as |pair| <= 2 * 63 * 128; sub-block scales by madd; Q6_K's -32 as
 * -32 * sum(scale * bsum)), then its float formula. A pass covers 4 rows x up to 4
 * tokens: one hadd tree for the 4 rows' sums, the float formula on 4 rows in one xmm
 * with the same operations in every lane, so results do not depend on row grouping. */

enum { TM_KQ_ROWS = 4, TM_KQ_NT = 4 };
enum { TM_KQ2, TM_KQ3, TM_KQ4, TM_KQ5, TM_KQ6 };
/* type-1 kinds subtract dmin * sum(m * bsum); the others have a zero point instead */
#define TM_KQ_HAS_MIN(kind) ((kind) == TM_KQ2 || (kind) == TM_KQ4 || (kind) == TM_KQ5)

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

/* Bit b of every byte of v moved to bit `to` and masked there (16-bit shifts: bits that
 * cross into the next byte fall outside the mask). */
TM_AI __m256i tm_bit_to(__m256i v, int b, int to) {
    const __m256i m = _mm256_set1_epi8((char)(1 << to));
    if (b < to) return _mm256_and_si256(_mm256_slli_epi16(v, to - b), m);
    if (b > to) return _mm256_and_si256(_mm256_srli_epi16(v, b - to), m);
    return _mm256_and_si256(v, m);
}

/* One super-block of one row for the token loop of tm_kq_pass: w[j] values 32j..32j+31
 * as u8 (Q3_K / Q6_K plus their zero point 4 / 32), scv[j] the int16 scale of each of
 * its maddubs pairs, sc16 the 16 scales per 16 values (zero-point correction), mp the
 * mins per bsums group (type-1), d and dmin. */
typedef struct tm_kq_unpacked {
    __m256i w[8], scv[8];
    __m256i sc16, mp;
    float d, dmin;
} tm_kq_unpacked;

/* scv[j] from scales per 16 values: words 0-7 scale 2j, 8-15 scale 2j + 1. */
TM_AI void tm_kq_scv16(__m256i sc16, __m256i scv[8]) {
    const __m256i pat = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
                                         2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    for (int j = 0; j < 8; j++) scv[j] = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(j)), pat);
}

/* Q2_K / Q3_K: value 128n + 32jj + l is bits 2jj of qs[32n + l]; Q3_K's third bit is bit
 * 4n + jj of hmask[l]. */
TM_AI void tm_kq_unpack23(const uint8_t *qs, const uint8_t *hmask, __m256i w[8]) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i hm = hmask ? _mm256_loadu_si256((const __m256i *)hmask) : _mm256_setzero_si256();
    for (int n = 0; n < 2; n++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * n));
        for (int jj = 0; jj < 4; jj++) {
            __m256i v = _mm256_and_si256(_mm256_srli_epi16(q, 2 * jj), m3);
            if (hmask) v = _mm256_or_si256(v, tm_bit_to(hm, 4 * n + jj, 2));
            w[4 * n + jj] = v;
        }
    }
}

TM_AI void tm_kq_unpack(const uint8_t *row, int64_t i, const int kind, tm_kq_unpacked *u) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    /* Q4_K: word g = min of sub-block g / 2 (bsums g covers 16 values) */
    const __m128i mins_pat = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    u->mp = u->sc16 = _mm256_setzero_si256();
    u->dmin = 0.0f;
    if (kind == TM_KQ4 || kind == TM_KQ5) {
        const size_t bb = kind == TM_KQ4 ? sizeof(tm_block_q4_k) : sizeof(tm_block_q5_k);
        const uint8_t *blk = row + i * bb;
        const uint8_t *scales = blk + 4, *qs = blk + (kind == TM_KQ4 ? 16 : 48), *qhp = blk + 16;
        const __m128i sm = tm_q4k_scales_mins(scales);
        u->mp = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, mins_pat));
        const __m256i s16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm)); /* 8 scales, twice */
        const __m256i qh = kind == TM_KQ5 ? _mm256_loadu_si256((const __m256i *)qhp) : _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            u->w[2 * c] = _mm256_and_si256(q, m4);
            u->w[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        }
        if (kind == TM_KQ5) /* fifth bit of value 32j + l: bit j of qh[l] */
            for (int j = 0; j < 8; j++) u->w[j] = _mm256_or_si256(u->w[j], tm_bit_to(qh, j, 4));
        for (int j = 0; j < 8; j++) /* broadcast word j: bytes 2j, 2j + 1 */
            u->scv[j] = _mm256_shuffle_epi8(s16, _mm256_set1_epi16((short)(0x0100 + 0x0202 * j)));
        uint16_t dd[2];
        memcpy(dd, blk, 4);
        u->d = _cvtsh_ss(dd[0]), u->dmin = _cvtsh_ss(dd[1]);
    } else if (kind == TM_KQ6) {
        const tm_block_q6_k *b = (const tm_block_q6_k *)row + i;
        for (int h = 0; h < 2; h++) {
            const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
            const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
            /* bits 2q..2q+1 of qh are the high bits of quarter q: moved to bits 4-5 */
            u->w[4 * h] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
            u->w[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
            u->w[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30));
            u->w[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                              _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
        }
        u->sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        tm_kq_scv16(u->sc16, u->scv);
        u->d = _cvtsh_ss(b->d);
    } else if (kind == TM_KQ2) {
        const tm_block_q2_k *b = (const tm_block_q2_k *)row + i;
        tm_kq_unpack23(b->qs, NULL, u->w);
        const __m128i s = _mm_loadu_si128((const __m128i *)b->scales);
        tm_kq_scv16(_mm256_cvtepu8_epi16(_mm_and_si128(s, _mm_set1_epi8(15))), u->scv);
        u->mp = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), _mm_set1_epi8(15)));
        u->d = _cvtsh_ss(b->d), u->dmin = _cvtsh_ss(b->dmin);
    } else { /* TM_KQ3 */
        const tm_block_q3_k *b = (const tm_block_q3_k *)row + i;
        tm_kq_unpack23(b->qs, b->hmask, u->w);
        _Alignas(32) int16_t sc[16]; /* the 6-bit scales, by the reference unpacker's rule */
        for (int g = 0; g < 16; g++) {
            const int lo = g < 8 ? b->scales[g] & 15 : b->scales[g - 8] >> 4;
            sc[g] = (int16_t)((lo | (((b->scales[8 + g % 4] >> (2 * (g / 4))) & 3) << 4)) - 32);
        }
        u->sc16 = _mm256_load_si256((const __m256i *)sc);
        tm_kq_scv16(u->sc16, u->scv);
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
    const int zero_shift = kind == TM_KQ3 ? 2 : kind == TM_KQ6 ? 5 : 0; /* zero points 4, 32 */
    __m128 acc[TM_KQ_NT];
    for (int k = 0; k < NT; k++) acc[k] = _mm_setzero_ps();
    for (int64_t i = 0; i < nsb; i++) {
        __m256i part[TM_KQ_NT][TM_KQ_ROWS]; /* per token and row: 8 partial sums (type-1: sumi and summ, hadd'ed) */
        float dr[TM_KQ_ROWS], dminr[TM_KQ_ROWS];
        for (int rr = 0; rr < TM_KQ_ROWS; rr++) {
            tm_kq_unpacked u;
            tm_kq_unpack(rows[rr], i, kind, &u);
            dr[rr] = u.d, dminr[rr] = u.dmin;
            for (int k = 0; k < NT; k++) {
                const tm_block_q8_k *y = y0 + k * nsb + i;
                const __m256i bs = _mm256_loadu_si256((const __m256i *)y->bsums);
                __m256i sv = _mm256_setzero_si256();
                if (zero_shift) /* sum((v - z) * a * sc) = sum(v * a * sc) - z * sum(sc * bsum) */
                    sv = _mm256_sub_epi32(sv, _mm256_slli_epi32(_mm256_madd_epi16(bs, u.sc16), zero_shift));
                for (int j = 0; j < 8; j++) {
                    const __m256i p = _mm256_maddubs_epi16(u.w[j], _mm256_loadu_si256((const __m256i *)(y->qs + 32 * j)));
                    sv = _mm256_add_epi32(sv, _mm256_madd_epi16(p, u.scv[j]));
                }
                /* type-1: [sumi 01 23, summ 01 23 | sumi 45 67, summ 45 67] */
                part[k][rr] = TM_KQ_HAS_MIN(kind) ? _mm256_hadd_epi32(sv, _mm256_madd_epi16(bs, u.mp)) : sv;
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
                const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(part[k][0], part[k][1]),
                                                    _mm256_hadd_epi32(part[k][2], part[k][3]));
                const __m128 sumi = _mm_cvtepi32_ps(_mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
                acc[k] = _mm_fmadd_ps(_mm_mul_ps(yd, d4), sumi, acc[k]); /* y.d * d * sumi */
            }
        }
    }
    const int n_store = r_last - r + 1 < TM_KQ_ROWS ? (int)(r_last - r + 1) : TM_KQ_ROWS;
    const __m128i mask = _mm_cmpgt_epi32(_mm_set1_epi32(n_store), _mm_setr_epi32(0, 1, 2, 3));
    const __m128 bias = a->bias ? _mm_maskload_ps(a->bias + r, mask) : _mm_setzero_ps();
    for (int k = 0; k < NT; k++) _mm_maskstore_ps(a->out + (int64_t)(t0 + k) * a->n_rows + r, mask, _mm_add_ps(acc[k], bias));
}

/* ---- Q4_K / Q5_K tiles (packed at load, matmul_impl.h) -----------------------------
 *
 * A ymm is half a packed chunk: 4 values of each of 8 rows. Per sub-block and token the
 * 8 chunks' vpmaddubsw sums are added in int16 (Q4_K: 8 * 2 * 15 * 127 = 30480; Q5_K's
 * values up to 31 take two sums of 4) and one vpmaddwd with the rows' scale (in both
 * words of a row's dword) gives sc * dot per row in int32; the mins are a vpmaddwd of the
 * rows' min pairs with the token's 32-value sums. Float step as everywhere. */

enum { TM_KT_NT = 4 };

/* Rows 8h..8h+7 of tile ti for tokens [t0, t0 + nt): acc plus the bias; rows past n_rows
 * are not stored. */
TM_AI void tm_kt_store(const tm_mm_args *a, int64_t ti, int h, int t0, int nt, const __m256 *acc) {
    const int64_t r0 = ti * TM_MM_TILE + 8 * h;
    const __m256i mask = tm_row_mask(a, r0);
    const __m256 bias = a->bias ? _mm256_maskload_ps(a->bias + r0, mask) : _mm256_setzero_ps();
    for (int u = 0; u < nt; u++)
        _mm256_maskstore_ps(a->out + (int64_t)(t0 + u) * a->n_rows + r0, mask, _mm256_add_ps(acc[u], bias));
}

/* Tokens [t0, t0 + NT) x rows 8h..8h+7 of tile ti; NT and q5 are constants after inlining. */
TM_AI void tm_kt_group(const tm_mm_args *a, int64_t ti, int h, int t0, const int NT, const int q5) {
    const tm_mm_weight *pw = a->w;
    const int64_t nsb = a->n_cols / TM_QK_K;
    const size_t sb_bytes = q5 ? TM_MM_KQ5_SB : TM_MM_KQ4_SB;
    const uint8_t *tile = pw->packed + (size_t)ti * pw->tile_bytes;
    const tm_block_q8_k *y0 = (const tm_block_q8_k *)a->act->q8k + (int64_t)t0 * nsb;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256 acc[TM_KT_NT];
    for (int u = 0; u < NT; u++) acc[u] = _mm256_setzero_ps();
    for (int64_t s = 0; s < nsb; s++) {
        const uint8_t *sb = tile + s * sb_bytes;
        if (h == 0 && t0 == 0) tm_mm_prefetch_next_tile(pw, tile, s, nsb, 0, 1);
        __m256i sumi[TM_KT_NT];
        for (int u = 0; u < NT; u++) sumi[u] = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            /* the rows' scales of sub-blocks 2c, 2c + 1, in both words of each row's dword */
            const __m256i s0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(sb + tm_mm_kq_sc(q5) + 32 * c + 8 * h)));
            const __m256i s1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(sb + tm_mm_kq_sc(q5) + 32 * c + 16 + 8 * h)));
            const __m256i sc0 = _mm256_or_si256(s0, _mm256_slli_epi32(s0, 16)), sc1 = _mm256_or_si256(s1, _mm256_slli_epi32(s1, 16));
            for (int half = 0; half < (q5 ? 2 : 1); half++) { /* Q5_K: chunks 0-3 and 4-7 apart */
                __m256i lo[TM_KT_NT], hi[TM_KT_NT];
                for (int u = 0; u < NT; u++) lo[u] = hi[u] = _mm256_setzero_si256();
                for (int k = q5 ? 4 * half : 0; k < (q5 ? 4 * half + 4 : 8); k++) {
                    const __m256i v = _mm256_load_si256((const __m256i *)(sb + tm_mm_kq_qs(8 * c + k, q5) + 32 * h));
                    __m256i wl = _mm256_and_si256(v, m4), wh = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                    if (q5) {
                        const __m256i qh = _mm256_load_si256((const __m256i *)(sb + tm_mm_kq_qh(k) + 32 * h));
                        wl = _mm256_or_si256(wl, tm_bit_to(qh, 2 * c, 4));
                        wh = _mm256_or_si256(wh, tm_bit_to(qh, 2 * c + 1, 4));
                    }
                    for (int u = 0; u < NT; u++) {
                        const int8_t *q = y0[u * nsb + s].qs + 64 * c + 4 * k;
                        lo[u] = _mm256_add_epi16(lo[u], _mm256_maddubs_epi16(wl, tm_bcast4(q)));
                        hi[u] = _mm256_add_epi16(hi[u], _mm256_maddubs_epi16(wh, tm_bcast4(q + 32)));
                    }
                }
                for (int u = 0; u < NT; u++)
                    sumi[u] = _mm256_add_epi32(sumi[u], _mm256_add_epi32(_mm256_madd_epi16(lo[u], sc0), _mm256_madd_epi16(hi[u], sc1)));
            }
        }
        const __m256 d = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(sb + tm_mm_kq_sc(q5) + 256 + 16 * h)));
        const __m256 dmin = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(sb + tm_mm_kq_sc(q5) + 256 + 32 + 16 * h)));
        for (int u = 0; u < NT; u++) {
            const int16_t *bs = y0[u * nsb + s].bsums;
            __m256i summ = _mm256_setzero_si256();
            for (int q = 0; q < 4; q++) { /* mins of sub-blocks 2q, 2q + 1 against their 32-value sums */
                const __m256i mp = _mm256_cvtepu8_epi16(_mm_load_si128((const __m128i *)(sb + tm_mm_kq_sc(q5) + 128 + 32 * q + 16 * h)));
                const uint32_t pair = (uint16_t)(bs[4 * q] + bs[4 * q + 1]) | (uint32_t)(uint16_t)(bs[4 * q + 2] + bs[4 * q + 3]) << 16;
                summ = _mm256_add_epi32(summ, _mm256_madd_epi16(mp, _mm256_set1_epi32((int32_t)pair)));
            }
            /* y.d * (d * sumi - dmin * summ), as the row kernels */
            const __m256 t = _mm256_fmsub_ps(d, _mm256_cvtepi32_ps(sumi[u]), _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(summ)));
            acc[u] = _mm256_fmadd_ps(_mm256_set1_ps(y0[u * nsb + s].d), t, acc[u]);
        }
    }
    tm_kt_store(a, ti, h, t0, NT, acc);
}

/* ---- Q6_K tiles (packed at load, matmul_impl.h) --------------------------------------
 *
 * Per chunk triple (h, k) of the packed stream, half a qh chunk completes half of each ql
 * chunk p = 0, 1 (rows 8rh..8rh+7). Values are 0..63, so two chunks' vpmaddubsw sums fit
 * in int16 (2 * 2 * 63 * 128 = 32256) and a 16-value group (4 chunks) is two vpmaddwd with
 * the rows' scale in both words of their dwords. The zero point is -32 * (sc_g * bsum_g +
 * sc_g+4 * bsum_g+4) per row: one vpmaddwd of the rows' scale pairs with the token's two
 * group sums. The integer sums are the row kernels'; float step (y.d * d) * sumi. */
TM_AI void tm_kt6_group(const tm_mm_args *a, int64_t ti, int rh, int t0, const int NT) {
    const tm_mm_weight *pw = a->w;
    const int64_t nsb = a->n_cols / TM_QK_K;
    const uint8_t *tile = pw->packed + (size_t)ti * pw->tile_bytes;
    const tm_block_q8_k *y0 = (const tm_block_q8_k *)a->act->q8k + (int64_t)t0 * nsb;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    __m256 acc[TM_KT_NT];
    for (int u = 0; u < NT; u++) acc[u] = _mm256_setzero_ps();
    for (int64_t s = 0; s < nsb; s++) {
        const uint8_t *sb = tile + s * TM_MM_KQ6_SB;
        if (rh == 0 && t0 == 0) tm_mm_prefetch_next_tile(pw, tile, s, nsb, 0, 1);
        __m256i sumi[TM_KT_NT];
        for (int u = 0; u < NT; u++) sumi[u] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++)
            for (int e = 0; e < 2; e++)
                for (int p = 0; p < 2; p++) { /* groups g (low nibbles of chunks 4e..4e+3) and g + 4 (high) */
                    const int g = 8 * h + 2 * p + e;
                    const __m256i sl = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(sb + 16 * g + 8 * rh)));
                    const __m256i sh = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(sb + 16 * (g + 4) + 8 * rh)));
                    const __m256i scl = _mm256_blend_epi16(sl, _mm256_slli_epi32(sl, 16), 0xAA); /* sc_g, sc_g */
                    const __m256i sch = _mm256_blend_epi16(sh, _mm256_slli_epi32(sh, 16), 0xAA);
                    const __m256i zp = _mm256_blend_epi16(sl, _mm256_slli_epi32(sh, 16), 0xAA);  /* sc_g, sc_g+4 */
                    for (int j = 0; j < 2; j++) { /* chunks 4e + 2j, 4e + 2j + 1 in int16 */
                        __m256i lo[TM_KT_NT], hi[TM_KT_NT];
                        for (int u = 0; u < NT; u++) lo[u] = hi[u] = _mm256_setzero_si256();
                        for (int k = 4 * e + 2 * j; k < 4 * e + 2 * j + 2; k++) {
                            const uint8_t *c = sb + TM_MM_KQ6_CHUNKS + 3 * 64 * (8 * h + k) + 32 * rh;
                            const __m256i qh = _mm256_load_si256((const __m256i *)c);
                            const __m256i v = _mm256_load_si256((const __m256i *)(c + 64 * (1 + p)));
                            const __m256i hl = p ? _mm256_slli_epi16(qh, 2) : _mm256_slli_epi16(qh, 4);
                            const __m256i hh = p ? _mm256_srli_epi16(qh, 2) : qh;
                            const __m256i wl = _mm256_or_si256(_mm256_and_si256(v, m4), _mm256_and_si256(hl, m30));
                            const __m256i wh = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), _mm256_and_si256(hh, m30));
                            for (int u = 0; u < NT; u++) {
                                const int8_t *q = y0[u * nsb + s].qs + 128 * h + 32 * p + 4 * k;
                                lo[u] = _mm256_add_epi16(lo[u], _mm256_maddubs_epi16(wl, tm_bcast4(q)));
                                hi[u] = _mm256_add_epi16(hi[u], _mm256_maddubs_epi16(wh, tm_bcast4(q + 64)));
                            }
                        }
                        for (int u = 0; u < NT; u++)
                            sumi[u] = _mm256_add_epi32(sumi[u], _mm256_add_epi32(_mm256_madd_epi16(lo[u], scl), _mm256_madd_epi16(hi[u], sch)));
                    }
                    for (int u = 0; u < NT; u++) {
                        const int16_t *bs = y0[u * nsb + s].bsums;
                        const uint32_t pair = (uint16_t)bs[g] | (uint32_t)(uint16_t)bs[g + 4] << 16;
                        sumi[u] = _mm256_sub_epi32(sumi[u], _mm256_slli_epi32(_mm256_madd_epi16(zp, _mm256_set1_epi32((int32_t)pair)), 5));
                    }
                }
        const __m256 d = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(sb + 256 + 16 * rh)));
        for (int u = 0; u < NT; u++) /* (y.d * d) * sumi, as the row kernels */
            acc[u] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(y0[u * nsb + s].d), d), _mm256_cvtepi32_ps(sumi[u]), acc[u]);
    }
    tm_kt_store(a, ti, rh, t0, NT, acc);
}

/* Tiles [t0, t1) x all tokens, half a tile and up to 4 tokens a pass; kind (TM_KQ4,
 * TM_KQ5 or TM_KQ6) is a constant after inlining. */
TM_AI void tm_kt_tiles(const tm_mm_args *a, int64_t t0, int64_t t1, const int kind) {
    for (int64_t ti = t0; ti < t1; ti++)
        for (int h = 0; h < 2; h++) {
            if (ti * TM_MM_TILE + 8 * h >= a->n_rows) break;
            for (int t = 0; t < a->n; t += TM_KT_NT) {
                const int nt = a->n - t < TM_KT_NT ? a->n - t : TM_KT_NT;
#define TM_KT_CALL(NT) (kind == TM_KQ6 ? tm_kt6_group(a, ti, h, t, NT) : tm_kt_group(a, ti, h, t, NT, kind == TM_KQ5))
                if (nt == 4) TM_KT_CALL(4);
                else if (nt == 3) TM_KT_CALL(3);
                else if (nt == 2) TM_KT_CALL(2);
                else TM_KT_CALL(1);
#undef TM_KT_CALL
            }
        }
}
static void tm_q4k_tiles(const tm_mm_args *a, int64_t t0, int64_t t1) { tm_kt_tiles(a, t0, t1, TM_KQ4); }
static void tm_q5k_tiles(const tm_mm_args *a, int64_t t0, int64_t t1) { tm_kt_tiles(a, t0, t1, TM_KQ5); }
static void tm_q6k_tiles(const tm_mm_args *a, int64_t t0, int64_t t1) { tm_kt_tiles(a, t0, t1, TM_KQ6); }

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
static void tm_q4k_rows(const tm_mm_args *a, int64_t r0, int64_t r1) { tm_kq_rows(a, r0, r1, TM_KQ4); }
static void tm_q6k_rows(const tm_mm_args *a, int64_t r0, int64_t r1) { tm_kq_rows(a, r0, r1, TM_KQ6); }
static void tm_q2k_rows(const tm_mm_args *a, int64_t r0, int64_t r1) { tm_kq_rows(a, r0, r1, TM_KQ2); }
static void tm_q3k_rows(const tm_mm_args *a, int64_t r0, int64_t r1) { tm_kq_rows(a, r0, r1, TM_KQ3); }
static void tm_q5k_rows(const tm_mm_args *a, int64_t r0, int64_t r1) { tm_kq_rows(a, r0, r1, TM_KQ5); }

/* ---- the table ------------------------------------------------------------------------ */

static const tm_mm_kernels tm_mm_avx2 = {
    .level = TM_SIMD_AVX2,
    .max_nt = TM_NT_MAX,
    .quantize_q8 = tm_quantize_q8,
    .quantize_q8k = tm_quantize_q8k,
    .types = {
        /*                 activations    packing           tiles           rows (GGUF blocks) */
        [TM_DTYPE_F32]  = {TM_MM_ACT_F32, &tm_mm_pack_f32,  tm_dense_tiles, tm_mm_rows_scalar},
        [TM_DTYPE_F16]  = {TM_MM_ACT_F32, &tm_mm_pack_u16,  tm_dense_tiles, tm_mm_rows_scalar},
        [TM_DTYPE_BF16] = {TM_MM_ACT_F32, &tm_mm_pack_u16,  tm_dense_tiles, tm_mm_rows_scalar},
        [TM_DTYPE_Q4_0] = {TM_MM_ACT_Q8,  &tm_mm_pack_q4_0, tm_q4_0_tiles,  tm_mm_rows_scalar},
        [TM_DTYPE_Q4_1] = {TM_MM_ACT_Q8,  &tm_mm_pack_q4_1, tm_q4_1_tiles,  tm_mm_rows_scalar},
        [TM_DTYPE_Q8_0] = {TM_MM_ACT_Q8,  &tm_mm_pack_q8_0, tm_q8_0_tiles,  tm_mm_rows_scalar},
        [TM_DTYPE_Q5_0] = {TM_MM_ACT_Q8,  &tm_mm_pack_q5_0, tm_q5_0_tiles,  tm_mm_rows_scalar},
        [TM_DTYPE_Q5_1] = {TM_MM_ACT_Q8,  &tm_mm_pack_q5_1, tm_q5_1_tiles,  tm_mm_rows_scalar},
        [TM_DTYPE_Q4_K] = {TM_MM_ACT_Q8K, &tm_mm_pack_q4_k, tm_q4k_tiles,   tm_q4k_rows},
        [TM_DTYPE_Q6_K] = {TM_MM_ACT_Q8K, &tm_mm_pack_q6_k, tm_q6k_tiles,   tm_q6k_rows},
        [TM_DTYPE_Q2_K] = {TM_MM_ACT_Q8K, NULL,             NULL,           tm_q2k_rows},
        [TM_DTYPE_Q3_K] = {TM_MM_ACT_Q8K, NULL,             NULL,           tm_q3k_rows},
        [TM_DTYPE_Q5_K] = {TM_MM_ACT_Q8K, &tm_mm_pack_q5_k, tm_q5k_tiles,   tm_q5k_rows},
    },
};

const tm_mm_kernels *tm_mm_kernels_avx2(void) { return &tm_mm_avx2; }

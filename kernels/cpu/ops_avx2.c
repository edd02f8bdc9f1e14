/* ops_avx2.c - AVX2 + FMA + F16C versions of the CPU inner kernels (see ops.h). Compiled
 * with -mavx2 -mfma -mf16c; only reached after run-time detection. Each kernel matches the
 * scalar reference in ops_scalar.c within the tolerances of tests/kernels/test_ops.cc
 * and test_attention.cc. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "common/common.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/attn_prefetch.h"
#include "kernels/cpu/simd.h"

/* exp(x) for x in [-87.3, 88.3] (clamped outside), ~2 ulp: Cephes' polynomial on
 * r = x - n ln2, then scaled by 2^n through the exponent bits. */
static inline __m256 tm_exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 y = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static inline float tm_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 tm_load_f16x8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
}

static void tm_rmsnorm_avx2(float *out, const float *x, const float *w, int dim, float eps) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int i = 0;
    for (; i + 32 <= dim; i += 32)
        for (int u = 0; u < 4; u++) {
            __m256 v = _mm256_loadu_ps(x + i + 8 * u);
            acc[u] = _mm256_fmadd_ps(v, v, acc[u]);
        }
    for (; i + 8 <= dim; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        acc[0] = _mm256_fmadd_ps(v, v, acc[0]);
    }
    float ss = tm_hsum8(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < dim; i++) ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / dim + eps);
    __m256 rv = _mm256_set1_ps(r);
    for (i = 0; i + 8 <= dim; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), rv),
                                                _mm256_loadu_ps(w + i)));
    for (; i < dim; i++) out[i] = x[i] * r * w[i];
}

static void tm_add_avx2(float *out, const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < n; i++) out[i] = a[i] + b[i];
}

static void tm_silu_mul_avx2(float *out, const float *gate, const float *up, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 e = tm_exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

/* gelu_tanh(g) = g / 2 (1 + tanh(u)) = g * sigmoid(2u): one exp, as in silu, and no
 * cancellation where 1 + tanh(u) is tiny. u = sqrt(2 / pi) (g + 0.044715 g^3). */
static void tm_gelu_mul_avx2(float *out, const float *gate, const float *up, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), m2c = _mm256_set1_ps(-2.0f * 0.7978845608028654f),
                 k = _mm256_set1_ps(0.044715f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 inner = _mm256_fmadd_ps(_mm256_mul_ps(k, g), _mm256_mul_ps(g, g), g); /* g + k g^3 */
        __m256 e = tm_exp8(_mm256_mul_ps(m2c, inner));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-2.0f * 0.7978845608028654f * (g + 0.044715f * g * g * g))) * up[i];
    }
}

/* x * s, or cap * tanh(y) with y = x s / cap and tanh(y) = sign(y) (1 - e) / (1 + e),
 * e = exp(-2 |y|) (never overflows; absolute error ~1e-7, times cap). */
static void tm_scale_avx2(float *out, const float *x, int64_t n, float s, float cap) {
    int64_t i = 0;
    if (cap > 0.0f) {
        const __m256 k = _mm256_set1_ps(s / cap), c = _mm256_set1_ps(cap), one = _mm256_set1_ps(1.0f),
                     sign = _mm256_set1_ps(-0.0f), m2 = _mm256_set1_ps(-2.0f);
        for (; i + 8 <= n; i += 8) {
            __m256 y = _mm256_mul_ps(_mm256_loadu_ps(x + i), k);
            __m256 e = tm_exp8(_mm256_mul_ps(m2, _mm256_andnot_ps(sign, y)));
            __m256 t = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
            _mm256_storeu_ps(out + i, _mm256_mul_ps(c, _mm256_or_ps(t, _mm256_and_ps(sign, y))));
        }
        for (; i < n; i++) out[i] = cap * tanhf(x[i] * (s / cap));
        return;
    }
    const __m256 sv = _mm256_set1_ps(s);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), sv));
    for (; i < n; i++) out[i] = x[i] * s;
}

static void tm_rope_avx2(float *x, int n_heads, int head_dim, int n_dims, int neox,
                         const float *cos_t, const float *sin_t) {
    const int half = n_dims / 2;
    if (neox) {
        for (int h = 0; h < n_heads; h++) {
            float *x0p = x + (int64_t)h * head_dim, *x1p = x0p + half;
            int i = 0;
            for (; i + 8 <= half; i += 8) {
                __m256 x0 = _mm256_loadu_ps(x0p + i), x1 = _mm256_loadu_ps(x1p + i);
                __m256 c = _mm256_loadu_ps(cos_t + i), s = _mm256_loadu_ps(sin_t + i);
                _mm256_storeu_ps(x0p + i, _mm256_fmsub_ps(x0, c, _mm256_mul_ps(x1, s)));
                _mm256_storeu_ps(x1p + i, _mm256_fmadd_ps(x0, s, _mm256_mul_ps(x1, c)));
            }
            for (; i < half; i++) {
                float a = x0p[i], b = x1p[i];
                x0p[i] = a * cos_t[i] - b * sin_t[i];
                x1p[i] = a * sin_t[i] + b * cos_t[i];
            }
        }
        return;
    }
    /* Adjacent pairs: out = x * (c, c) + swap_pairs(x) * (-s, s), tables built once per token. */
    float cd[512], sd[512];
    int nd = n_dims <= 512 ? n_dims / 8 * 8 : 0;
    for (int i = 0; i < nd / 2; i++) {
        cd[2 * i] = cd[2 * i + 1] = cos_t[i];
        sd[2 * i] = -sin_t[i];
        sd[2 * i + 1] = sin_t[i];
    }
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (int64_t)h * head_dim;
        int i = 0;
        for (; i < nd; i += 8) {
            __m256 v = _mm256_loadu_ps(xh + i);
            __m256 sw = _mm256_permute_ps(v, 0xB1); /* (x1, x0, x3, x2, ...) */
            _mm256_storeu_ps(xh + i, _mm256_fmadd_ps(v, _mm256_loadu_ps(cd + i),
                                                     _mm256_mul_ps(sw, _mm256_loadu_ps(sd + i))));
        }
        for (i /= 2; i < half; i++) {
            float a = xh[2 * i], b = xh[2 * i + 1];
            xh[2 * i] = a * cos_t[i] - b * sin_t[i];
            xh[2 * i + 1] = a * sin_t[i] + b * cos_t[i];
        }
    }
}

static void tm_f32_to_f16_avx2(uint16_t *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(void *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = tm_f32_to_f16(src[i]);
}

/* Softmax of s[0..nv) in place (s <- exp(s - max)); returns the max, *l = sum. */
static float tm_softmax_avx2(float *s, int nv, float *l) {
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= nv; j += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + j));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mx = _mm_cvtss_f32(m4);
    for (; j < nv; j++) mx = s[j] > mx ? s[j] : mx;
    __m256 mxv = _mm256_set1_ps(mx), sum = _mm256_setzero_ps();
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (j = 0; j < nv; j += 8) {
        /* the last vector may run past nv (scores has TM_ATTN_CHUNK room): zero those lanes */
        __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(nv - j), lane));
        __m256 p = _mm256_and_ps(tm_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), mxv)), keep);
        _mm256_storeu_ps(s + j, p);
        sum = _mm256_add_ps(sum, p);
    }
    *l = tm_hsum8(sum);
    return mx;
}

/* acc (nk keys) o[0..w) += p_j * vf_j[0..w) for one query; w = 8 * NR dims from d0. */
#define TM_PV_TILE(NR)                                                                     \
    do {                                                                                   \
        __m256 acc[NR];                                                                    \
        for (int r = 0; r < NR; r++) acc[r] = _mm256_loadu_ps(o + d0 + 8 * r);            \
        for (int j = 0; j < nk; j++) {                                                     \
            __m256 pj = _mm256_set1_ps(p[j]);                                              \
            const float *vj = vf + (int64_t)j * hd + d0;                                   \
            for (int r = 0; r < NR; r++) acc[r] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8 * r), acc[r]); \
        }                                                                                  \
        for (int r = 0; r < NR; r++) _mm256_storeu_ps(o + d0 + 8 * r, acc[r]);            \
    } while (0)

/* Converts n rows of f16 (n, hd) to f32, prefetching as many lines from pf as it reads
 * (one per 32 values). */
static void tm_rows_f16_to_f32(float *dst, const uint16_t *src, int64_t n, tm_pf_stream *pf) {
    for (int64_t i = 0; i < n; i += 8) {
        if ((i & 31) == 0) tm_pf_step(pf, 1);
        _mm256_storeu_ps(dst + i, tm_load_f16x8(src + i));
    }
}

/* kt (hd, 16) f32 = a piece of n <= 16 keys of dim-major K, dim d at k + d * k_dim_stride,
 * keys in lanes; lanes past n are 0. A short piece goes through a zeroed copy of each row
 * so that nothing past it is read. */
static void tm_kt_f16_to_f32(float *kt, const uint16_t *k, int64_t k_dim_stride, int n, int hd,
                             tm_pf_stream *pf, int pf_lines) {
    if (n == 16) {
        for (int d = 0; d < hd; d++) {
            tm_pf_step(pf, (d + 1) * pf_lines / hd - d * pf_lines / hd); /* pf_lines over the hd rows */
            _mm256_storeu_ps(kt + 16 * d, tm_load_f16x8(k + d * k_dim_stride));
            _mm256_storeu_ps(kt + 16 * d + 8, tm_load_f16x8(k + d * k_dim_stride + 8));
        }
        return;
    }
    uint16_t row[16] = {0};
    tm_pf_step(pf, pf_lines);
    for (int d = 0; d < hd; d++) {
        memcpy(row, k + d * k_dim_stride, (size_t)n * sizeof row[0]);
        _mm256_storeu_ps(kt + 16 * d, tm_load_f16x8(row));
        _mm256_storeu_ps(kt + 16 * d + 8, tm_load_f16x8(row + 8));
    }
}

/* int8 cache (ops.h): kt (hd, 16) f32 = the piece's keys as the integers they are (u8 -
 * 128), from 4-dim groups: the dword of key j in group g holds dims 4g..4g+3. */
static void tm_kt_i8_to_f32(float *kt, const uint8_t *k, int64_t k_dim_stride, int n, int hd,
                            tm_pf_stream *pf, int pf_lines) {
    uint8_t row[64] = {0}; /* a short piece's group, zero-padded: nothing past it is read */
    tm_pf_step(pf, pf_lines);
    const __m256i low = _mm256_set1_epi32(0xff), off = _mm256_set1_epi32(128);
    for (int d = 0; d < hd; d += 4) {
        const uint8_t *g = k + (int64_t)d * k_dim_stride; /* group d / 4: 4 * k_dim_stride bytes apart */
        if (n < 16) g = memcpy(row, g, (size_t)n * 4);
        for (int h = 0; h < 2; h++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(g + 32 * h));
            for (int e = 0; e < 4; e++)
                _mm256_storeu_ps(kt + 16 * (d + e) + 8 * h,
                                 _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(v, 8 * e), low), off)));
        }
    }
}

/* Scores of the nt <= 3 queries i0.. against the n keys of kt (hd, 16) f32, which are
 * keys jp.. of the chunk: s[j] = scale * sum_d q[d] kt[d][j], one key per lane in nh
 * halves of 8 (nh = 1 when n <= 8), so no horizontal sums. Every lane sums d = 0, 1, .. in
 * order, as the scalar reference does, whatever nt and nh are, so a row's bits do not
 * depend on the rows it shares a call with. With i8 (an int8 cache) the queries are the
 * int8 ones and kt holds integers, so the sums are the exact integer dots (|dot| < 2^24),
 * and s[j] = scale * (ks[j] * (q8s * dot)) as in the scalar kernel. Inlined with nt, nh
 * and i8 constant. */
static inline __attribute__((always_inline)) void
tm_scores_tile(const tm_attn_chunk *a, const float *kt, const float *ks, int i0, int nt, int nh, int jp,
               int n, const int i8) {
    const int hd = a->head_dim;
    const float *q[3];
    const int8_t *q8[3];
    __m256 acc[3][2]; /* query, half */
    for (int r = 0; r < nt; r++) {
        const int i = i0 + r;
        q[r] = a->q + (int64_t)(i / a->n_group) * a->q_row_stride + (i % a->n_group) * hd;
        q8[r] = i8 ? a->q8 + (int64_t)i * hd : NULL;
        for (int h = 0; h < nh; h++) acc[r][h] = _mm256_setzero_ps();
    }
    for (int d = 0; d < hd; d++) {
        __m256 qd[3]; /* once for both halves (an int8 query's value takes a conversion) */
        for (int r = 0; r < nt; r++) qd[r] = _mm256_set1_ps(i8 ? (float)q8[r][d] : q[r][d]);
        for (int h = 0; h < nh; h++) {
            const __m256 kd = _mm256_loadu_ps(kt + 16 * d + 8 * h);
            for (int r = 0; r < nt; r++) acc[r][h] = _mm256_fmadd_ps(qd[r], kd, acc[r][h]);
        }
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int r = 0; r < nt; r++) {
        const int nk = TM_MIN(n, a->n_vis[i0 + r] - jp);
        float *s = a->scores + (int64_t)(i0 + r) * TM_ATTN_CHUNK + jp;
        for (int h = 0; h < nh && nk > 8 * h; h++) {
            const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(nk - 8 * h), lane);
            __m256 dot = acc[r][h];
            if (i8)
                dot = _mm256_mul_ps(_mm256_maskload_ps(ks + 8 * h, keep),
                                    _mm256_mul_ps(_mm256_set1_ps(a->q8s[i0 + r]), dot));
            _mm256_maskstore_ps(s + 8 * h, keep, _mm256_mul_ps(_mm256_set1_ps(a->scale), dot));
        }
    }
}

/* Scores of every query that sees any of the n keys jp.. held in kt (int8: ks their scales). */
static inline __attribute__((always_inline)) void
tm_scores_piece(const tm_attn_chunk *a, const float *kt, const float *ks, int jp, int n, const int i8) {
    const int two = n > 8;
    for (int i0 = 0; i0 < a->nq; i0 += 3) {
        const int nt = TM_MIN(3, a->nq - i0);
        int sees = 0;
        for (int r = 0; r < nt; r++) sees |= a->n_vis[i0 + r] > jp;
        if (!sees) continue; /* later causal rows of a prefill chunk */
        switch (nt * 2 + two) {
        case 7: tm_scores_tile(a, kt, ks, i0, 3, 2, jp, n, i8); break;
        case 6: tm_scores_tile(a, kt, ks, i0, 3, 1, jp, n, i8); break;
        case 5: tm_scores_tile(a, kt, ks, i0, 2, 2, jp, n, i8); break;
        case 4: tm_scores_tile(a, kt, ks, i0, 2, 1, jp, n, i8); break;
        case 3: tm_scores_tile(a, kt, ks, i0, 1, 2, jp, n, i8); break;
        default: tm_scores_tile(a, kt, ks, i0, 1, 1, jp, n, i8); break;
        }
    }
}

/* int8 cache: n values of s8 rows (key-major) to f32, prefetching a line per 64. */
static void tm_rows_i8_to_f32(float *dst, const int8_t *src, int64_t n, tm_pf_stream *pf) {
    for (int64_t i = 0; i < n; i += 8) {
        if ((i & 63) == 0) tm_pf_step(pf, 1);
        int64_t v;
        memcpy(&v, src + i, 8);
        _mm256_storeu_ps(dst + i, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(v))));
    }
}

/* Keys are processed in pieces of up to TM_ATTN_SUB inside one page, converted to f32
 * once and reused by every query of the group (n_group * rows of them). An int8 cache
 * (i8, a constant after inlining) converts its integers, and scores and weights take the
 * scales as the scalar kernel does (ops.h). */
static inline __attribute__((always_inline)) void tm_attn_chunk_avx2_el(const tm_attn_chunk *a, const int i8) {
    const int hd = a->head_dim, nq = a->nq;
    float *kf = a->kv_f32, *vf = a->kv_f32 + TM_ATTN_SUB * hd;
    int nv_max = 0;
    for (int i = 0; i < nq; i++) nv_max = TM_MAX(nv_max, a->n_vis[i]);

    /* 1. scores; the first piece's K is fetched at once, then each piece's conversion
     * fetches the next one's lines (attn_prefetch.h) */
    tm_pf_stream pf;
    tm_pf_init(&pf, a, nv_max);
    const int k_lines = tm_pf_k_lines(a, TM_ATTN_SUB);
    tm_pf_step(&pf, k_lines);
    for (int seg = 0, j0 = 0; seg < a->n_seg && j0 < nv_max; j0 += a->seg_len[seg++]) {
        for (int s0 = 0; s0 < a->seg_len[seg] && j0 + s0 < nv_max; s0 += TM_ATTN_SUB) {
            const int n = TM_MIN(TM_MIN(TM_ATTN_SUB, a->seg_len[seg] - s0), nv_max - j0 - s0);
            if (i8) {
                tm_kt_i8_to_f32(kf, a->k8[seg] + 4 * s0, a->k_dim_stride, n, hd, &pf, k_lines);
                tm_scores_piece(a, kf, a->ks[seg] + s0, j0 + s0, n, 1);
            } else {
                tm_kt_f16_to_f32(kf, a->k[seg] + s0, a->k_dim_stride, n, hd, &pf, k_lines);
                tm_scores_piece(a, kf, NULL, j0 + s0, n, 0);
            }
        }
    }
    /* 2. softmax per query */
    for (int i = 0; i < nq; i++) {
        if (a->n_vis[i] == 0) {
            a->m[i] = -INFINITY;
            a->l[i] = 0.0f;
            continue;
        }
        if (!tm_cpu_attn_shape_scores(a, i)) continue; /* window mask, soft-cap */
        a->m[i] = tm_softmax_avx2(a->scores + (int64_t)i * TM_ATTN_CHUNK, a->n_vis[i], &a->l[i]);
        for (int d = 0; d < hd; d += 8) _mm256_storeu_ps(a->o + (int64_t)i * hd + d, _mm256_setzero_ps());
        if (i8) tm_cpu_attn_weigh_values(a, i);
    }
    /* 3. o += p V, in f32 */
    for (int seg = 0, j0 = 0; seg < a->n_seg && j0 < nv_max; j0 += a->seg_len[seg++]) {
        for (int s0 = 0; s0 < a->seg_len[seg] && j0 + s0 < nv_max; s0 += TM_ATTN_SUB) {
            const int n = TM_MIN(TM_MIN(TM_ATTN_SUB, a->seg_len[seg] - s0), nv_max - j0 - s0);
            if (i8) tm_rows_i8_to_f32(vf, a->v8[seg] + (int64_t)s0 * hd, (int64_t)n * hd, &pf);
            else tm_rows_f16_to_f32(vf, a->v[seg] + (int64_t)s0 * hd, (int64_t)n * hd, &pf);
            for (int i = 0; i < nq; i++) {
                const int nk = TM_MIN(n, a->n_vis[i] - j0 - s0);
                if (nk <= 0) continue;
                const float *p = a->scores + (int64_t)i * TM_ATTN_CHUNK + j0 + s0;
                float *o = a->o + (int64_t)i * hd;
                int d0 = 0;
                for (; d0 + 64 <= hd; d0 += 64) TM_PV_TILE(8);
                for (; d0 + 32 <= hd; d0 += 32) TM_PV_TILE(4);
                for (; d0 < hd; d0 += 8) TM_PV_TILE(1);
            }
        }
    }
}
#undef TM_PV_TILE

static void tm_attn_chunk_avx2(const tm_attn_chunk *a) {
    if (a->head_dim % 8 != 0) tm_cpu_attn_chunk_scalar(a);
    else if (a->k8) tm_attn_chunk_avx2_el(a, 1);
    else tm_attn_chunk_avx2_el(a, 0);
}

/* tm_cpu_kv_quantize, 8 values at a time (same bytes, see the AVX-512 one). */
static void tm_kv_quantize_avx2(const float *x, int n, int8_t *q, float *scale) {
    if (n % 8 != 0) {
        tm_cpu_kv_quantize(x, n, q, scale);
        return;
    }
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 mx = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    const float d = _mm_cvtss_f32(m4) / 127.0f;
    if (_mm256_movemask_ps(bad) || !(d < INFINITY)) {
        tm_cpu_kv_quantize(x, n, q, scale);
        return;
    }
    const __m256 id = _mm256_set1_ps(d != 0.0f && 1.0f / d < INFINITY ? 1.0f / d : 0.0f);
    for (int i = 0; i < n; i += 8) {
        const __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), id));
        const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        _mm_storel_epi64((__m128i *)(void *)(q + i), _mm_packs_epi16(w, w));
    }
    *scale = d;
}

static const tm_cpu_kernels tm_kernels_avx2 = {
    .level = TM_SIMD_AVX2,
    .rmsnorm = tm_rmsnorm_avx2,
    .add = tm_add_avx2,
    .silu_mul = tm_silu_mul_avx2,
    .gelu_mul = tm_gelu_mul_avx2,
    .scale = tm_scale_avx2,
    .rope = tm_rope_avx2,
    .f32_to_f16 = tm_f32_to_f16_avx2,
    .attn_chunk = tm_attn_chunk_avx2,
    .kv_quantize = tm_kv_quantize_avx2,
};

const tm_cpu_kernels *tm_cpu_kernels_avx2(void) { return &tm_kernels_avx2; }

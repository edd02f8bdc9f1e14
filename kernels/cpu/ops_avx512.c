/* ops_avx512.c - AVX-512 (F/BW/VL/DQ) versions of the CPU inner kernels (see ops.h).
 * Only reached after run-time detection of TM_SIMD_AVX512VNNI. Each kernel matches the
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
 * r = x - n ln2, then scaled by 2^n (scalef). */
static inline __m512 tm_exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 y = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

static inline __m512 tm_load_f16x16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
}

static void tm_rmsnorm_avx512(float *out, const float *x, const float *w, int dim, float eps) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 64 <= dim; i += 64) {
        __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
        __m512 v2 = _mm512_loadu_ps(x + i + 32), v3 = _mm512_loadu_ps(x + i + 48);
        a0 = _mm512_fmadd_ps(v0, v0, a0);
        a1 = _mm512_fmadd_ps(v1, v1, a1);
        a2 = _mm512_fmadd_ps(v2, v2, a2);
        a3 = _mm512_fmadd_ps(v3, v3, a3);
    }
    for (; i < dim; i += 16) {
        __mmask16 m = (__mmask16)(dim - i >= 16 ? 0xFFFF : (1u << (dim - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        a0 = _mm512_fmadd_ps(v, v, a0);
    }
    float ss = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    __m512 rv = _mm512_set1_ps(1.0f / sqrtf(ss / dim + eps));
    for (i = 0; i < dim; i += 16) {
        __mmask16 m = (__mmask16)(dim - i >= 16 ? 0xFFFF : (1u << (dim - i)) - 1);
        __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), rv),
                                 _mm512_maskz_loadu_ps(m, w + i));
        _mm512_mask_storeu_ps(out + i, m, v);
    }
}

static void tm_add_avx512(float *out, const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(out + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i),
                                                        _mm512_maskz_loadu_ps(m, b + i)));
    }
}

static void tm_silu_mul_avx512(float *out, const float *gate, const float *up, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1);
        __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
        __m512 e = tm_exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
        __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, up + i)));
    }
}

/* As ops_avx2.c: gelu_tanh(g) = g * sigmoid(2u). */
static void tm_gelu_mul_avx512(float *out, const float *gate, const float *up, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f), m2c = _mm512_set1_ps(-2.0f * 0.7978845608028654f),
                 k = _mm512_set1_ps(0.044715f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1);
        __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
        __m512 inner = _mm512_fmadd_ps(_mm512_mul_ps(k, g), _mm512_mul_ps(g, g), g);
        __m512 e = tm_exp16(_mm512_mul_ps(m2c, inner));
        _mm512_mask_storeu_ps(out + i, m,
                              _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, up + i)));
    }
}

/* As ops_avx2.c: tanh(y) = sign(y) (1 - e) / (1 + e), e = exp(-2 |y|). */
static void tm_scale_avx512(float *out, const float *x, int64_t n, float s, float cap) {
    const __m512 k = _mm512_set1_ps(cap > 0.0f ? s / cap : s), c = _mm512_set1_ps(cap), one = _mm512_set1_ps(1.0f),
                 m2 = _mm512_set1_ps(-2.0f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1);
        __m512 y = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), k);
        if (cap > 0.0f) {
            __m512i yi = _mm512_castps_si512(y);
            __m512 e = tm_exp16(_mm512_mul_ps(m2, _mm512_castsi512_ps(_mm512_andnot_si512(sign, yi))));
            __m512 t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
            t = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), _mm512_and_si512(sign, yi)));
            y = _mm512_mul_ps(c, t);
        }
        _mm512_mask_storeu_ps(out + i, m, y);
    }
}

static void tm_rope_avx512(float *x, int n_heads, int head_dim, int n_dims, int neox,
                           const float *cos_t, const float *sin_t) {
    const int half = n_dims / 2;
    if (neox) {
        for (int h = 0; h < n_heads; h++) {
            float *x0p = x + (int64_t)h * head_dim, *x1p = x0p + half;
            for (int i = 0; i < half; i += 16) {
                __mmask16 m = (__mmask16)(half - i >= 16 ? 0xFFFF : (1u << (half - i)) - 1);
                __m512 x0 = _mm512_maskz_loadu_ps(m, x0p + i), x1 = _mm512_maskz_loadu_ps(m, x1p + i);
                __m512 c = _mm512_maskz_loadu_ps(m, cos_t + i), s = _mm512_maskz_loadu_ps(m, sin_t + i);
                _mm512_mask_storeu_ps(x0p + i, m, _mm512_fmsub_ps(x0, c, _mm512_mul_ps(x1, s)));
                _mm512_mask_storeu_ps(x1p + i, m, _mm512_fmadd_ps(x0, s, _mm512_mul_ps(x1, c)));
            }
        }
        return;
    }
    /* Adjacent pairs: out = x * (c, c) + swap_pairs(x) * (-s, s), tables built once per token. */
    float cd[1024], sd[1024];
    for (int i = 0; i < half; i++) {
        cd[2 * i] = cd[2 * i + 1] = cos_t[i];
        sd[2 * i] = -sin_t[i];
        sd[2 * i + 1] = sin_t[i];
    }
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (int64_t)h * head_dim;
        for (int i = 0; i < n_dims; i += 16) {
            __mmask16 m = (__mmask16)(n_dims - i >= 16 ? 0xFFFF : (1u << (n_dims - i)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(m, xh + i);
            __m512 sw = _mm512_permute_ps(v, 0xB1); /* (x1, x0, x3, x2, ...) */
            __m512 r = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m, cd + i),
                                       _mm512_mul_ps(sw, _mm512_maskz_loadu_ps(m, sd + i)));
            _mm512_mask_storeu_ps(xh + i, m, r);
        }
    }
}

static void tm_f32_to_f16_avx512(uint16_t *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(void *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = tm_f32_to_f16(src[i]);
}

/* Softmax of s[0..nv) in place (s <- exp(s - max)); returns the max, *l = sum. */
static float tm_softmax_avx512(float *s, int nv, float *l) {
    __m512 mv = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < nv; j += 16) {
        __mmask16 m = (__mmask16)(nv - j >= 16 ? 0xFFFF : (1u << (nv - j)) - 1);
        mv = _mm512_mask_max_ps(mv, m, mv, _mm512_maskz_loadu_ps(m, s + j));
    }
    float mx = _mm512_reduce_max_ps(mv);
    __m512 mxv = _mm512_set1_ps(mx), sum = _mm512_setzero_ps();
    for (int j = 0; j < nv; j += 16) {
        __mmask16 m = (__mmask16)(nv - j >= 16 ? 0xFFFF : (1u << (nv - j)) - 1);
        __m512 p = _mm512_maskz_mov_ps(m, tm_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), mxv)));
        _mm512_mask_storeu_ps(s + j, m, p);
        sum = _mm512_add_ps(sum, p);
    }
    *l = _mm512_reduce_add_ps(sum);
    return mx;
}

/* 16 int8 values as f32 (exact). */
static inline __m512 tm_load_i8x16(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)p)));
}

/* Element kinds of the cache the attention kernel reads (compile-time after inlining). */
enum { TM_EL_F16, TM_EL_I8 };

/* Converts n values (n a multiple of 16) of the cache to f32. */
static void tm_rows_to_f32(float *dst, const void *src, int64_t n, const int el) {
    for (int64_t i = 0; i < n; i += 16)
        _mm512_storeu_ps(dst + i, el == TM_EL_I8 ? tm_load_i8x16((const int8_t *)src + i)
                                                 : tm_load_f16x16((const uint16_t *)src + i));
}


/* Lanes 0..15 of the rows of kt (hd rows, row stride 32) f32 = a piece of n <= 16 keys
 * of dim-major K, dim d at k + d * k_dim_stride; lanes past n are 0. The masked load
 * reads nothing past the piece. */
static void tm_kt_f16_to_f32(float *kt, const uint16_t *k, int64_t k_dim_stride, int n, int hd) {
    const __mmask16 m = (__mmask16)((1u << n) - 1);
    for (int d = 0; d < hd; d++)
        _mm512_storeu_ps(kt + 32 * d, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, k + d * k_dim_stride)));
}

/* A piece: up to TM_ATTN_SUB keys inside one segment, keys jp .. jp + n of the chunk. */
typedef struct tm_piece {
    const void *k;         /* key 0, dim 0 of the piece in the cache (f16: dim d at k + d * k_dim_stride) */
    const void *v;         /* (n, head_dim) values in the cache */
    const float *ks;       /* int8 cache: the keys' scales */
    int jp, n;             /* first key in the chunk, keys (n == 0: no piece) */
} tm_piece;

/* Walks the pieces of the first nv_max keys of a chunk, in key order. */
typedef struct tm_pieces {
    const tm_attn_chunk *a; /* chunk */
    int nv_max;             /* keys to cover */
    int seg, j0, s0;        /* next piece starts at key s0 of segment seg (key j0 + s0) */
} tm_pieces;

/* The next piece into *p, or 0 when there is none (then *p is empty: n = 0, k and v NULL). */
static inline int tm_pieces_next(tm_pieces *it, tm_piece *p) {
    const tm_attn_chunk *a = it->a;
    while (it->seg < a->n_seg && it->s0 >= a->seg_len[it->seg]) {
        it->j0 += a->seg_len[it->seg++];
        it->s0 = 0;
    }
    *p = (tm_piece){.k = NULL, .v = NULL, .jp = it->nv_max, .n = 0};
    if (it->seg >= a->n_seg || it->j0 + it->s0 >= it->nv_max) return 0;
    if (a->k8) {
        p->k = a->k8[it->seg] + 4 * it->s0;
        p->v = a->v8[it->seg] + (int64_t)it->s0 * a->head_dim;
        p->ks = a->ks[it->seg] + it->s0;
    } else {
        p->k = a->k[it->seg] + it->s0;
        p->v = a->v[it->seg] + (int64_t)it->s0 * a->head_dim;
    }
    p->jp = it->j0 + it->s0;
    p->n = TM_MIN(TM_MIN(TM_ATTN_SUB, a->seg_len[it->seg] - it->s0), it->nv_max - p->jp);
    it->s0 += TM_ATTN_SUB;
    return 1;
}

/* Scores of the nt <= 4 queries i0.. against two pieces (pc[1] may be empty), one key per
 * lane: s[j] = scale * sum_d q[d] K[d][j], so no horizontal sums; each broadcast q[d]
 * feeds two FMAs and 2 * nt FMA chains are in flight. K rows come from kt (hd rows of 32
 * lanes, piece h in lanes 16h..16h+15), or, with from_f16, straight from the cache (when
 * one tile covers every query, converting in registers saves a store and a load per row).
 * Every lane sums d = 0, 1, .. in order, as the scalar reference does, whatever the tile
 * is, so a row's bits do not depend on the rows it shares a call with. Inlined with nt and
 * from_f16 constant; the loops over r outside the d loop are unrolled by pragma, else
 * GCC 12 keeps acc on the stack and stores it on every d. */
static inline __attribute__((always_inline)) void
tm_scores_tile(const tm_attn_chunk *a, const float *kt, const tm_piece *pc, int i0, int nt,
               int from_f16, tm_pf_stream *pf) {
    const int hd = a->head_dim;
    const int64_t ks = a->k_dim_stride;
    const __mmask16 km[2] = {(__mmask16)((1u << pc[0].n) - 1), (__mmask16)((1u << pc[1].n) - 1)};
    const uint16_t *kh[2] = {pc[0].k, pc[1].n ? pc[1].k : pc[0].k}; /* mask 0: reads nothing */
    const float *q[4];
    __m512 acc[4][2]; /* query, piece */
#pragma GCC unroll 4
    for (int r = 0; r < nt; r++) {
        const int i = i0 + r;
        q[r] = a->q + (int64_t)(i / a->n_group) * a->q_row_stride + (i % a->n_group) * hd;
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    }
    for (int d = 0; d < hd; d++) {
        if (from_f16) tm_pf_step(pf, 1);
        __m512 kd[2];
        for (int h = 0; h < 2; h++)
            kd[h] = from_f16 ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(km[h], kh[h] + d * ks))
                             : _mm512_loadu_ps(kt + 32 * d + 16 * h);
        for (int r = 0; r < nt; r++) {
            const __m512 qd = _mm512_set1_ps(q[r][d]);
            for (int h = 0; h < 2; h++) acc[r][h] = _mm512_fmadd_ps(qd, kd[h], acc[r][h]);
        }
    }
    const __m512 scale = _mm512_set1_ps(a->scale);
#pragma GCC unroll 4
    for (int r = 0; r < nt; r++) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const int nk = TM_MIN(pc[h].n, a->n_vis[i0 + r] - pc[h].jp);
            if (nk <= 0) continue;
            _mm512_mask_storeu_ps(a->scores + (int64_t)(i0 + r) * TM_ATTN_CHUNK + pc[h].jp,
                                  (__mmask16)((1u << nk) - 1), _mm512_mul_ps(acc[r][h], scale));
        }
    }
}

/* Scores of every query that sees a key of the pieces pc[0..2): one tile reading the cache
 * when there are at most 4 queries (a decode), else K converted once into kt and tiles of 4. */
static void tm_scores_pieces(const tm_attn_chunk *a, float *kt, const tm_piece *pc, tm_pf_stream *pf) {
    switch (a->nq) {
    case 1: tm_scores_tile(a, NULL, pc, 0, 1, 1, pf); return;
    case 2: tm_scores_tile(a, NULL, pc, 0, 2, 1, pf); return;
    case 3: tm_scores_tile(a, NULL, pc, 0, 3, 1, pf); return;
    case 4: tm_scores_tile(a, NULL, pc, 0, 4, 1, pf); return;
    }
    tm_pf_step(pf, a->head_dim); /* the next pair's K: the tiles below have work enough to cover it */
    for (int h = 0; h < 2; h++) /* an empty piece gives zero lanes */
        tm_kt_f16_to_f32(kt + 16 * h, pc[h].n ? pc[h].k : pc[0].k, a->k_dim_stride, pc[h].n, a->head_dim);
    for (int i0 = 0; i0 < a->nq; i0 += 4) {
        const int nt = TM_MIN(4, a->nq - i0);
        int sees = 0;
        for (int r = 0; r < nt; r++) sees |= a->n_vis[i0 + r] > pc[0].jp;
        if (!sees) continue; /* later causal rows of a prefill chunk */
        switch (nt) {
        case 4: tm_scores_tile(a, kt, pc, i0, 4, 0, NULL); break;
        case 3: tm_scores_tile(a, kt, pc, i0, 3, 0, NULL); break;
        case 2: tm_scores_tile(a, kt, pc, i0, 2, 0, NULL); break;
        default: tm_scores_tile(a, kt, pc, i0, 1, 0, NULL); break;
        }
    }
}

/* int8 cache: the scores of the nt <= 4 queries i0.. against two pieces, keys in lanes as
 * above, but with vpdpbusd: a lane's dword is 4 dims of its key (u8, + 128) times 4 dims
 * of the query (s8, broadcast), so one instruction does 4 dims of 16 keys. The integer
 * sums are exact, so they match the scalar kernel's; then the same float steps:
 * scale * (ks * (q8s * dot)). The first tile of a pair fetches the pair's next K (two
 * lines per group of 4 dims). */
static inline __attribute__((always_inline)) void
tm_scores_i8_tile(const tm_attn_chunk *a, const tm_piece *pc, int i0, const int nt, tm_pf_stream *pf) {
    const int hd = a->head_dim;
    const int64_t quad = 4 * (int64_t)a->k_dim_stride; /* bytes between groups of 4 dims */
    const __mmask16 km[2] = {(__mmask16)((1u << pc[0].n) - 1), (__mmask16)((1u << pc[1].n) - 1)};
    const uint8_t *kh[2] = {pc[0].k, pc[1].n ? pc[1].k : pc[0].k}; /* mask 0: reads nothing */
    const int8_t *q8[4];
    __m512i acc[4][2];
    for (int r = 0; r < nt; r++) {
        q8[r] = a->q8 + (int64_t)(i0 + r) * hd;
        acc[r][0] = acc[r][1] = _mm512_set1_epi32(-128 * a->q8sum[i0 + r]);
    }
    for (int d = 0; d < hd; d += 4) {
        if (pf) tm_pf_step(pf, 2);
        __m512i kd[2];
        for (int h = 0; h < 2; h++) kd[h] = _mm512_maskz_loadu_epi32(km[h], kh[h] + d / 4 * quad);
        for (int r = 0; r < nt; r++) {
            int32_t q4;
            memcpy(&q4, q8[r] + d, 4);
            const __m512i qd = _mm512_set1_epi32(q4);
            for (int h = 0; h < 2; h++) acc[r][h] = _mm512_dpbusd_epi32(acc[r][h], kd[h], qd);
        }
    }
    const __m512 scale = _mm512_set1_ps(a->scale);
    for (int r = 0; r < nt; r++) {
        const __m512 qs = _mm512_set1_ps(a->q8s[i0 + r]);
        for (int h = 0; h < 2; h++) {
            const int nk = TM_MIN(pc[h].n, a->n_vis[i0 + r] - pc[h].jp);
            if (nk <= 0) continue;
            const __m512 dot = _mm512_mul_ps(_mm512_maskz_loadu_ps(km[h], pc[h].ks),
                                             _mm512_mul_ps(qs, _mm512_cvtepi32_ps(acc[r][h])));
            _mm512_mask_storeu_ps(a->scores + (int64_t)(i0 + r) * TM_ATTN_CHUNK + pc[h].jp,
                                  (__mmask16)((1u << nk) - 1), _mm512_mul_ps(scale, dot));
        }
    }
}

static void tm_scores_pieces_i8(const tm_attn_chunk *a, const tm_piece *pc, tm_pf_stream *pf) {
    for (int i0 = 0; i0 < a->nq; i0 += 4) {
        const int nt = TM_MIN(4, a->nq - i0);
        int sees = 0;
        for (int r = 0; r < nt; r++) sees |= a->n_vis[i0 + r] > pc[0].jp;
        if (!sees && i0 > 0) continue; /* later causal rows of a prefill chunk (the first fetches) */
        tm_pf_stream *f = i0 == 0 ? pf : NULL;
        switch (nt) {
        case 4: tm_scores_i8_tile(a, pc, i0, 4, f); break;
        case 3: tm_scores_i8_tile(a, pc, i0, 3, f); break;
        case 2: tm_scores_i8_tile(a, pc, i0, 2, f); break;
        default: tm_scores_i8_tile(a, pc, i0, 1, f); break;
        }
    }
}

/* o[d0 .. d0 + 16 nr) += sum_j p_j V_j[d0 ..] over the first nk keys of a piece, for the
 * nt <= 4 queries i0.., which all see those nk keys: each V row is loaded once for the
 * tile, from vf (n, hd) f32 or, with from_f16, from the cache (vh, element kind el; int8
 * scores hold p_j * vs_j already, tm_cpu_attn_weigh_values). Per query the sum runs over j
 * in order as if it were alone.
 * Inlined with nt, nr, from_f16 and el constant. */
static inline __attribute__((always_inline)) void
tm_pv_tile(const tm_attn_chunk *a, const float *vf, const void *vh, int i0, int nt,
           int d0, int nr, int jp, int nk, int from_f16, const int el, tm_pf_stream *pf) {
    const int hd = a->head_dim;
    const float *p[4];
    float *o[4];
    __m512 acc[4][4]; /* query, 16 dims */
    for (int r = 0; r < nt; r++) {
        p[r] = a->scores + (int64_t)(i0 + r) * TM_ATTN_CHUNK + jp;
        o[r] = a->o + (int64_t)(i0 + r) * hd + d0;
        for (int c = 0; c < nr; c++) acc[r][c] = _mm512_loadu_ps(o[r] + 16 * c);
    }
    for (int j = 0; j < nk; j++) {
        if (from_f16) tm_pf_step(pf, el == TM_EL_I8 ? (nr + 3) / 4 : (nr + 1) / 2); /* a V row of 16 nr dims */
        __m512 vj[4];
        for (int c = 0; c < nr; c++) {
            const int64_t off = (int64_t)j * hd + d0 + 16 * c;
            vj[c] = !from_f16 ? _mm512_loadu_ps(vf + off)
                    : el == TM_EL_I8 ? tm_load_i8x16((const int8_t *)vh + off)
                                     : tm_load_f16x16((const uint16_t *)vh + off);
        }
        for (int r = 0; r < nt; r++) {
            const __m512 pj = _mm512_set1_ps(p[r][j]); /* int8: p_j * vs_j already */
            for (int c = 0; c < nr; c++) acc[r][c] = _mm512_fmadd_ps(pj, vj[c], acc[r][c]);
        }
    }
    for (int r = 0; r < nt; r++)
        for (int c = 0; c < nr; c++) _mm512_storeu_ps(o[r] + 16 * c, acc[r][c]);
}

/* o += p V over the dims of one tile of queries (see tm_pv_tile). */
static inline __attribute__((always_inline)) void
tm_pv_tile_dims(const tm_attn_chunk *a, const float *vf, const void *vh, int i0,
                int nt, int jp, int nk, int from_f16, const int el, tm_pf_stream *pf) {
    /* nt and from_f16 as constants, 64 dims at a time, then 16 */
#define TM_PV_CALL(NT, NR, F16) tm_pv_tile(a, vf, vh, i0, NT, d0, NR, jp, nk, F16, el, pf)
#define TM_PV_DIMS(NT, F16)                                                                \
    do {                                                                                   \
        int d0 = 0;                                                                        \
        for (; d0 + 64 <= a->head_dim; d0 += 64) TM_PV_CALL(NT, 4, F16);                   \
        for (; d0 < a->head_dim; d0 += 16) TM_PV_CALL(NT, 1, F16);                         \
    } while (0)
    switch (nt * 2 + from_f16) {
    case 9: TM_PV_DIMS(4, 1); break;
    case 8: TM_PV_DIMS(4, 0); break;
    case 7: TM_PV_DIMS(3, 1); break;
    case 6: TM_PV_DIMS(3, 0); break;
    case 5: TM_PV_DIMS(2, 1); break;
    case 4: TM_PV_DIMS(2, 0); break;
    case 3: TM_PV_DIMS(1, 1); break;
    default: TM_PV_DIMS(1, 0); break;
    }
#undef TM_PV_DIMS
#undef TM_PV_CALL
}

/* o += p V over one piece, for every query, in tiles of up to 4 consecutive queries that
 * see the same keys of it (a row's n_group heads, or rows that see the whole piece). A
 * single tile reads the cache directly; several share V converted once into vf. */
static inline __attribute__((always_inline)) void
tm_pv_piece(const tm_attn_chunk *a, float *vf, const tm_piece *pc, const int el, tm_pf_stream *pf) {
    int converted = 0;
    for (int i0 = 0, nt; i0 < a->nq; i0 += nt) {
        const int nk = TM_MIN(pc->n, a->n_vis[i0] - pc->jp);
        for (nt = 1; nt < 4 && i0 + nt < a->nq && TM_MIN(pc->n, a->n_vis[i0 + nt] - pc->jp) == nk;) nt++;
        if (nk <= 0) continue;
        if (i0 == 0 && nt == a->nq) {
            tm_pv_tile_dims(a, NULL, pc->v, 0, nt, pc->jp, nk, 1, el, pf);
            return;
        }
        if (!converted) {
            tm_pf_step(pf, pc->n * a->head_dim / (el == TM_EL_I8 ? 64 : 32)); /* the next piece's V */
            tm_rows_to_f32(vf, pc->v, (int64_t)pc->n * a->head_dim, el);
            converted = 1;
        }
        tm_pv_tile_dims(a, vf, NULL, i0, nt, pc->jp, nk, 0, el, pf);
    }
}

/* Keys are processed in pieces of up to TM_ATTN_SUB inside one page; the scores take
 * them two at a time. With more than one tile of queries (prefill) each piece is
 * converted to f32 once and reused by every query of the group (n_group * rows). */
static inline __attribute__((always_inline)) void tm_attn_chunk_el(const tm_attn_chunk *a, const int el) {
    const int hd = a->head_dim, nq = a->nq;
    float *kt = a->kv_f32, *vf = a->kv_f32 + TM_ATTN_SUB * hd;
    int nv_max = 0;
    for (int i = 0; i < nq; i++) nv_max = TM_MAX(nv_max, a->n_vis[i]);

    /* 1. scores, two pieces at a time (kt, hd rows of 32 lanes, holds both); the first
     * pair's K is fetched at once, then each pair fetches the next (one line per dim) */
    tm_pf_stream pf;
    tm_pf_init(&pf, a, nv_max);
    tm_pf_step(&pf, 2 * tm_pf_k_lines(a, TM_ATTN_SUB));
    tm_pieces it = {.a = a, .nv_max = nv_max};
    tm_piece pc[2];
    while (tm_pieces_next(&it, &pc[0])) {
        tm_pieces_next(&it, &pc[1]);
        if (el == TM_EL_I8) tm_scores_pieces_i8(a, pc, &pf);
        else tm_scores_pieces(a, kt, pc, &pf);
    }
    /* 2. softmax per query */
    for (int i = 0; i < nq; i++) {
        if (a->n_vis[i] == 0) {
            a->m[i] = -INFINITY;
            a->l[i] = 0.0f;
            continue;
        }
        if (!tm_cpu_attn_shape_scores(a, i)) continue; /* window mask, soft-cap */
        a->m[i] = tm_softmax_avx512(a->scores + (int64_t)i * TM_ATTN_CHUNK, a->n_vis[i], &a->l[i]);
        for (int d = 0; d < hd; d += 16) _mm512_storeu_ps(a->o + (int64_t)i * hd + d, _mm512_setzero_ps());
        if (el == TM_EL_I8) tm_cpu_attn_weigh_values(a, i);
    }
    /* 3. o += p V, in f32 */
    it = (tm_pieces){.a = a, .nv_max = nv_max};
    while (tm_pieces_next(&it, &pc[0])) tm_pv_piece(a, vf, &pc[0], el, &pf);
}

static void tm_attn_chunk_avx512(const tm_attn_chunk *a) {
    if (a->head_dim % 16 != 0) tm_cpu_kernels_avx2()->attn_chunk(a);
    else if (a->k8) tm_attn_chunk_el(a, TM_EL_I8);
    else tm_attn_chunk_el(a, TM_EL_F16);
}

/* tm_cpu_kv_quantize, 16 values at a time: the same max, division, product and
 * half-even rounding (MXCSR), so the same bytes. */
static void tm_kv_quantize_avx512(const float *x, int n, int8_t *q, float *scale) {
    if (n % 16 != 0) {
        tm_cpu_kv_quantize(x, n, q, scale);
        return;
    }
    __m512 mx = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int i = 0; i < n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        bad |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        mx = _mm512_max_ps(mx, _mm512_abs_ps(v));
    }
    const float d = _mm512_reduce_max_ps(mx) / 127.0f;
    if (bad || !(d < INFINITY)) {
        tm_cpu_kv_quantize(x, n, q, scale); /* the rare poisoned vector */
        return;
    }
    const __m512 id = _mm512_set1_ps(d != 0.0f && 1.0f / d < INFINITY ? 1.0f / d : 0.0f);
    for (int i = 0; i < n; i += 16)
        _mm_storeu_si128((__m128i *)(void *)(q + i),
                         _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), id))));
    *scale = d;
}

static const tm_cpu_kernels tm_kernels_avx512 = {
    .level = TM_SIMD_AVX512VNNI,
    .rmsnorm = tm_rmsnorm_avx512,
    .add = tm_add_avx512,
    .silu_mul = tm_silu_mul_avx512,
    .gelu_mul = tm_gelu_mul_avx512,
    .scale = tm_scale_avx512,
    .rope = tm_rope_avx512,
    .f32_to_f16 = tm_f32_to_f16_avx512,
    .attn_chunk = tm_attn_chunk_avx512,
    .kv_quantize = tm_kv_quantize_avx512,
};

const tm_cpu_kernels *tm_cpu_kernels_avx512(void) { return &tm_kernels_avx512; }

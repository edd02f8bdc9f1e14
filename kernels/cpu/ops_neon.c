/* ops_neon.c - arm64 NEON versions of the CPU inner kernels (see ops.h). Compiled with
 * -march=armv8.2-a+dotprod+fp16; only reached after run-time detection. Each kernel
 * matches the scalar reference in ops_scalar.c within the tolerances of
 * tests/kernels/test_ops.cc and test_attention.cc. f16 <-> f32 uses FCVTL/FCVTN
 * (base AArch64, round to nearest even under the default FPCR), so no fp16 arithmetic
 * is needed. */
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#include "common/common.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

/* exp(x) for x in [-87.3, 88.3] (clamped outside), ~2 ulp: the same Cephes polynomial as
 * ops_avx2.c on r = x - n ln2, then scaled by 2^n through the exponent bits. */
static inline float32x4_t tm_exp4(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.3f)), vdupq_n_f32(88.3f));
    const float32x4_t n = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f)); /* x - n * c */
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    const float32x4_t y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), vmulq_f32(p, r), r);
    /* n is integral and in [-126, 128), so the truncating conversion is exact */
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(y, vreinterpretq_f32_s32(e));
}

static inline float32x4_t tm_load_f16x4(const uint16_t *p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

static void tm_rmsnorm_neon(float *out, const float *x, const float *w, int dim, float eps) {
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    int i = 0;
    for (; i + 16 <= dim; i += 16)
        for (int u = 0; u < 4; u++) {
            const float32x4_t v = vld1q_f32(x + i + 4 * u);
            acc[u] = vfmaq_f32(acc[u], v, v);
        }
    for (; i + 4 <= dim; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        acc[0] = vfmaq_f32(acc[0], v, v);
    }
    float ss = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
    for (; i < dim; i++) ss += x[i] * x[i];
    const float r = 1.0f / sqrtf(ss / dim + eps);
    for (i = 0; i + 4 <= dim; i += 4)
        vst1q_f32(out + i, vmulq_f32(vmulq_n_f32(vld1q_f32(x + i), r), vld1q_f32(w + i)));
    for (; i < dim; i++) out[i] = x[i] * r * w[i];
}

static void tm_add_neon(float *out, const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vaddq_f32(vld1q_f32(a + i), vld1q_f32(b + i)));
    for (; i < n; i++) out[i] = a[i] + b[i];
}

static void tm_silu_mul_neon(float *out, const float *gate, const float *up, int64_t n) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t g = vld1q_f32(gate + i);
        const float32x4_t s = vdivq_f32(g, vaddq_f32(one, tm_exp4(vnegq_f32(g))));
        vst1q_f32(out + i, vmulq_f32(s, vld1q_f32(up + i)));
    }
    for (; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

/* As ops_avx2.c: gelu_tanh(g) = g * sigmoid(2u). */
static void tm_gelu_mul_neon(float *out, const float *gate, const float *up, int64_t n) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    const float m2c = -2.0f * 0.7978845608028654f;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t g = vld1q_f32(gate + i);
        const float32x4_t inner = vfmaq_f32(g, vmulq_n_f32(g, 0.044715f), vmulq_f32(g, g));
        const float32x4_t s = vdivq_f32(g, vaddq_f32(one, tm_exp4(vmulq_n_f32(inner, m2c))));
        vst1q_f32(out + i, vmulq_f32(s, vld1q_f32(up + i)));
    }
    for (; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(m2c * (g + 0.044715f * g * g * g))) * up[i];
    }
}

/* As ops_avx2.c: tanh(y) = sign(y) (1 - e) / (1 + e), e = exp(-2 |y|). */
static void tm_scale_neon(float *out, const float *x, int64_t n, float s, float cap) {
    int64_t i = 0;
    if (cap > 0.0f) {
        const float k = s / cap;
        const float32x4_t one = vdupq_n_f32(1.0f);
        const uint32x4_t sign = vdupq_n_u32(0x80000000u);
        for (; i + 4 <= n; i += 4) {
            const float32x4_t y = vmulq_n_f32(vld1q_f32(x + i), k);
            const float32x4_t e = tm_exp4(vmulq_n_f32(vabsq_f32(y), -2.0f));
            const float32x4_t t = vdivq_f32(vsubq_f32(one, e), vaddq_f32(one, e));
            const uint32x4_t ts = vorrq_u32(vreinterpretq_u32_f32(t), vandq_u32(vreinterpretq_u32_f32(y), sign));
            vst1q_f32(out + i, vmulq_n_f32(vreinterpretq_f32_u32(ts), cap));
        }
        for (; i < n; i++) out[i] = cap * tanhf(x[i] * k);
        return;
    }
    for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vmulq_n_f32(vld1q_f32(x + i), s));
    for (; i < n; i++) out[i] = x[i] * s;
}

static void tm_rope_neon(float *x, int n_heads, int head_dim, int n_dims, int neox,
                         const float *cos_t, const float *sin_t) {
    const int half = n_dims / 2;
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (int64_t)h * head_dim;
        int i = 0;
        if (neox) { /* pairs (i, i + half): two contiguous halves */
            float *x0p = xh, *x1p = xh + half;
            for (; i + 4 <= half; i += 4) {
                const float32x4_t x0 = vld1q_f32(x0p + i), x1 = vld1q_f32(x1p + i);
                const float32x4_t c = vld1q_f32(cos_t + i), s = vld1q_f32(sin_t + i);
                vst1q_f32(x0p + i, vfmsq_f32(vmulq_f32(x0, c), x1, s));
                vst1q_f32(x1p + i, vfmaq_f32(vmulq_f32(x1, c), x0, s));
            }
            for (; i < half; i++) {
                const float a = x0p[i], b = x1p[i];
                x0p[i] = a * cos_t[i] - b * sin_t[i];
                x1p[i] = a * sin_t[i] + b * cos_t[i];
            }
        } else { /* adjacent pairs (2i, 2i + 1): ld2/st2 de- and re-interleave them */
            for (; i + 4 <= half; i += 4) {
                float32x4x2_t v = vld2q_f32(xh + 2 * i);
                const float32x4_t c = vld1q_f32(cos_t + i), s = vld1q_f32(sin_t + i);
                const float32x4_t x0 = v.val[0], x1 = v.val[1];
                v.val[0] = vfmsq_f32(vmulq_f32(x0, c), x1, s);
                v.val[1] = vfmaq_f32(vmulq_f32(x1, c), x0, s);
                vst2q_f32(xh + 2 * i, v);
            }
            for (; i < half; i++) {
                const float a = xh[2 * i], b = xh[2 * i + 1];
                xh[2 * i] = a * cos_t[i] - b * sin_t[i];
                xh[2 * i + 1] = a * sin_t[i] + b * cos_t[i];
            }
        }
    }
}

static void tm_f32_to_f16_neon(uint16_t *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
    for (; i < n; i++) dst[i] = tm_f32_to_f16(src[i]);
}

/* Softmax of s[0..nv) in place (s <- exp(s - max)); returns the max, *l = sum. */
static float tm_softmax_neon(float *s, int nv, float *l) {
    float32x4_t mv = vdupq_n_f32(-INFINITY);
    int j = 0;
    for (; j + 4 <= nv; j += 4) mv = vmaxq_f32(mv, vld1q_f32(s + j));
    float mx = vmaxvq_f32(mv);
    for (; j < nv; j++) mx = s[j] > mx ? s[j] : mx;
    const float32x4_t mxv = vdupq_n_f32(mx);
    const int32x4_t lane = {0, 1, 2, 3};
    float32x4_t sum = vdupq_n_f32(0.0f);
    for (j = 0; j < nv; j += 4) {
        /* the last vector may run past nv (scores has TM_ATTN_CHUNK room): zero those lanes */
        const uint32x4_t keep = vcgtq_s32(vdupq_n_s32(nv - j), lane);
        const float32x4_t p = vreinterpretq_f32_u32(
            vandq_u32(vreinterpretq_u32_f32(tm_exp4(vsubq_f32(vld1q_f32(s + j), mxv))), keep));
        vst1q_f32(s + j, p);
        sum = vaddq_f32(sum, p);
    }
    *l = vaddvq_f32(sum);
    return mx;
}

/* Converts n values of f16 to f32 (n a multiple of 4). */
static void tm_rows_f16_to_f32(float *dst, const uint16_t *src, int64_t n) {
    for (int64_t i = 0; i < n; i += 4) vst1q_f32(dst + i, tm_load_f16x4(src + i));
}

/* o[d0 .. d0 + 4 NR) += sum_j p_j vf_j[d0 ..] over the nk keys of a sub-tile. */
#define TM_PV_TILE(NR)                                                                     \
    do {                                                                                   \
        float32x4_t acc[NR];                                                               \
        for (int r = 0; r < NR; r++) acc[r] = vld1q_f32(o + d0 + 4 * r);                   \
        for (int j = 0; j < nk; j++) {                                                     \
            const float pj = p[j];                                                         \
            const float *vj = vf + (int64_t)j * hd + d0;                                   \
            for (int r = 0; r < NR; r++) acc[r] = vfmaq_n_f32(acc[r], vld1q_f32(vj + 4 * r), pj); \
        }                                                                                  \
        for (int r = 0; r < NR; r++) vst1q_f32(o + d0 + 4 * r, acc[r]);                    \
    } while (0)

/* kt (hd, 16) f32 = a piece of n <= 16 keys of dim-major K, dim d at k + d * k_dim_stride,
 * keys in lanes; lanes past n are 0. A short piece goes through a zeroed copy of each row
 * so that nothing past it is read. */
static void tm_kt_f16_to_f32(float *kt, const uint16_t *k, int64_t k_dim_stride, int n, int hd) {
    uint16_t row[16] = {0};
    for (int d = 0; d < hd; d++) {
        const uint16_t *src = k + d * k_dim_stride;
        if (n < 16) {
            memcpy(row, src, (size_t)n * sizeof row[0]);
            src = row;
        }
        for (int h = 0; h < 16; h += 4) vst1q_f32(kt + 16 * d + h, tm_load_f16x4(src + h));
    }
}

/* int8 cache (ops.h): kt (hd, 16) f32 = the piece's keys as the integers they are (u8 -
 * 128); vld4q_u8 splits each 4-dim group of 16 keys into its 4 dims. */
static void tm_kt_i8_to_f32(float *kt, const uint8_t *k, int64_t k_dim_stride, int n, int hd) {
    uint8_t row[64] = {0}; /* a short piece's group, zero-padded: nothing past it is read */
    for (int d = 0; d < hd; d += 4) {
        const uint8_t *g = k + (int64_t)d * k_dim_stride; /* group d / 4: 4 * k_dim_stride bytes apart */
        if (n < 16) g = memcpy(row, g, (size_t)n * 4);
        const uint8x16x4_t v = vld4q_u8(g);
        for (int e = 0; e < 4; e++) {
            const int16x8_t lo = vreinterpretq_s16_u16(vsubq_u16(vmovl_u8(vget_low_u8(v.val[e])), vdupq_n_u16(128)));
            const int16x8_t hi = vreinterpretq_s16_u16(vsubq_u16(vmovl_u8(vget_high_u8(v.val[e])), vdupq_n_u16(128)));
            float *row_f = kt + 16 * (d + e);
            vst1q_f32(row_f, vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))));
            vst1q_f32(row_f + 4, vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))));
            vst1q_f32(row_f + 8, vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))));
            vst1q_f32(row_f + 12, vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi))));
        }
    }
}

/* int8 cache: n values of s8 rows (key-major) to f32 (n a multiple of 4). */
static void tm_rows_i8_to_f32(float *dst, const int8_t *src, int64_t n) {
    for (int64_t i = 0; i < n; i += 4) {
        int8_t b[8] = {0};
        memcpy(b, src + i, 4);
        vst1q_f32(dst + i, vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vld1_s8(b))))));
    }
}

/* Scores of the nt <= 4 queries i0.. against the n keys of kt (hd, 16) f32, which are
 * keys jp.. of the chunk: s[j] = scale * sum_d q[d] kt[d][j], one key per lane in four
 * quads, so no pairwise reductions and 4 * nt FMA chains. Each lane sums its dims in
 * order, whatever nt is. With i8 (an int8 cache) the queries are the int8 ones and kt
 * holds integers, so the sums are the exact integer dots, and s[j] = scale * (ks[j] *
 * (q8s * dot)) as in the scalar kernel. Inlined with nt and i8 constant. */
static inline __attribute__((always_inline)) void
tm_scores_tile(const tm_attn_chunk *a, const float *kt, const float *ks, int i0, int nt, int jp, int n,
               const int i8) {
    const int hd = a->head_dim;
    const float *q[4];
    const int8_t *q8[4];
    float32x4_t acc[4][4]; /* query, quad of keys */
    for (int r = 0; r < nt; r++) {
        const int i = i0 + r;
        q[r] = a->q + (int64_t)(i / a->n_group) * a->q_row_stride + (i % a->n_group) * hd;
        q8[r] = i8 ? a->q8 + (int64_t)i * hd : NULL;
        for (int h = 0; h < 4; h++) acc[r][h] = vdupq_n_f32(0.0f);
    }
    for (int d = 0; d < hd; d++) {
        float32x4_t kd[4];
        for (int h = 0; h < 4; h++) kd[h] = vld1q_f32(kt + 16 * d + 4 * h);
        for (int r = 0; r < nt; r++) {
            const float qd = i8 ? (float)q8[r][d] : q[r][d];
            for (int h = 0; h < 4; h++) acc[r][h] = vfmaq_n_f32(acc[r][h], kd[h], qd);
        }
    }
    float kss[16] = {0};
    if (i8) memcpy(kss, ks, (size_t)n * sizeof kss[0]);
    for (int r = 0; r < nt; r++) {
        const int nk = TM_MIN(n, a->n_vis[i0 + r] - jp);
        if (nk <= 0) continue;
        float s[16];
        for (int h = 0; h < 4; h++) {
            float32x4_t dot = acc[r][h];
            if (i8) dot = vmulq_f32(vld1q_f32(kss + 4 * h), vmulq_n_f32(dot, a->q8s[i0 + r]));
            vst1q_f32(s + 4 * h, vmulq_n_f32(dot, a->scale));
        }
        memcpy(a->scores + (int64_t)(i0 + r) * TM_ATTN_CHUNK + jp, s, (size_t)nk * sizeof s[0]);
    }
}

/* Scores of every query that sees any of the n keys jp.. held in kt (int8: ks their scales). */
static inline __attribute__((always_inline)) void
tm_scores_piece(const tm_attn_chunk *a, const float *kt, const float *ks, int jp, int n, const int i8) {
    for (int i0 = 0; i0 < a->nq; i0 += 4) {
        const int nt = TM_MIN(4, a->nq - i0);
        int sees = 0;
        for (int r = 0; r < nt; r++) sees |= a->n_vis[i0 + r] > jp;
        if (!sees) continue; /* later causal rows of a prefill chunk */
        switch (nt) {
        case 4: tm_scores_tile(a, kt, ks, i0, 4, jp, n, i8); break;
        case 3: tm_scores_tile(a, kt, ks, i0, 3, jp, n, i8); break;
        case 2: tm_scores_tile(a, kt, ks, i0, 2, jp, n, i8); break;
        default: tm_scores_tile(a, kt, ks, i0, 1, jp, n, i8); break;
        }
    }
}

/* Keys are processed in pieces of up to TM_ATTN_SUB inside one page, converted to f32
 * once and reused by every query of the group (n_group * rows of them), as in ops_avx2.c,
 * whose int8 path (i8, a constant after inlining) this one follows too. */
static inline __attribute__((always_inline)) void tm_attn_chunk_neon_el(const tm_attn_chunk *a, const int i8) {
    const int hd = a->head_dim, nq = a->nq;
    float *kf = a->kv_f32, *vf = a->kv_f32 + TM_ATTN_SUB * hd;
    int nv_max = 0;
    for (int i = 0; i < nq; i++) nv_max = TM_MAX(nv_max, a->n_vis[i]);

    /* 1. scores */
    for (int seg = 0, j0 = 0; seg < a->n_seg && j0 < nv_max; j0 += a->seg_len[seg++]) {
        for (int s0 = 0; s0 < a->seg_len[seg] && j0 + s0 < nv_max; s0 += TM_ATTN_SUB) {
            const int n = TM_MIN(TM_MIN(TM_ATTN_SUB, a->seg_len[seg] - s0), nv_max - j0 - s0);
            if (i8) {
                tm_kt_i8_to_f32(kf, a->k8[seg] + 4 * s0, a->k_dim_stride, n, hd);
                tm_scores_piece(a, kf, a->ks[seg] + s0, j0 + s0, n, 1);
            } else {
                tm_kt_f16_to_f32(kf, a->k[seg] + s0, a->k_dim_stride, n, hd);
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
        a->m[i] = tm_softmax_neon(a->scores + (int64_t)i * TM_ATTN_CHUNK, a->n_vis[i], &a->l[i]);
        for (int d = 0; d < hd; d += 4) vst1q_f32(a->o + (int64_t)i * hd + d, vdupq_n_f32(0.0f));
        if (i8) tm_cpu_attn_weigh_values(a, i);
    }
    /* 3. o += p V, in f32 */
    for (int seg = 0, j0 = 0; seg < a->n_seg && j0 < nv_max; j0 += a->seg_len[seg++]) {
        for (int s0 = 0; s0 < a->seg_len[seg] && j0 + s0 < nv_max; s0 += TM_ATTN_SUB) {
            const int n = TM_MIN(TM_MIN(TM_ATTN_SUB, a->seg_len[seg] - s0), nv_max - j0 - s0);
            if (i8) tm_rows_i8_to_f32(vf, a->v8[seg] + (int64_t)s0 * hd, (int64_t)n * hd);
            else tm_rows_f16_to_f32(vf, a->v[seg] + (int64_t)s0 * hd, (int64_t)n * hd);
            for (int i = 0; i < nq; i++) {
                const int nk = TM_MIN(n, a->n_vis[i] - j0 - s0);
                if (nk <= 0) continue;
                const float *p = a->scores + (int64_t)i * TM_ATTN_CHUNK + j0 + s0;
                float *o = a->o + (int64_t)i * hd;
                int d0 = 0;
                for (; d0 + 64 <= hd; d0 += 64) TM_PV_TILE(16);
                for (; d0 + 16 <= hd; d0 += 16) TM_PV_TILE(4);
                for (; d0 < hd; d0 += 4) TM_PV_TILE(1);
            }
        }
    }
}
#undef TM_PV_TILE

static void tm_attn_chunk_neon(const tm_attn_chunk *a) {
    if (a->head_dim % 4 != 0) tm_cpu_attn_chunk_scalar(a);
    else if (a->k8) tm_attn_chunk_neon_el(a, 1);
    else tm_attn_chunk_neon_el(a, 0);
}

/* tm_cpu_kv_quantize, 4 values at a time: the same max, division and product, and FCVTNS
 * rounds to nearest even as lrintf does under the default FPCR, so the same bytes. A NaN
 * or inf anywhere, or a length with a tail, takes the scalar path. */
static void tm_kv_quantize_neon(const float *x, int n, int8_t *q, float *scale) {
    if (n % 8 != 0) {
        tm_cpu_kv_quantize(x, n, q, scale);
        return;
    }
    float32x4_t mx = vdupq_n_f32(0.0f);
    uint32x4_t ok = vdupq_n_u32(~0u);
    for (int i = 0; i < n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        ok = vandq_u32(ok, vceqq_f32(v, v)); /* false for NaN */
        mx = vmaxq_f32(mx, vabsq_f32(v));
    }
    const float d = vmaxvq_f32(mx) / 127.0f;
    if (vminvq_u32(ok) == 0 || !(d < INFINITY)) {
        tm_cpu_kv_quantize(x, n, q, scale);
        return;
    }
    const float32x4_t id = vdupq_n_f32(d != 0.0f && 1.0f / d < INFINITY ? 1.0f / d : 0.0f);
    for (int i = 0; i < n; i += 8) { /* |x * id| <= 127: the narrowing never saturates */
        const int32x4_t a = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + i), id));
        const int32x4_t b = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + i + 4), id));
        vst1_s8(q + i, vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b))));
    }
    *scale = d;
}

static const tm_cpu_kernels tm_kernels_neon = {
    .level = TM_SIMD_NEON,
    .rmsnorm = tm_rmsnorm_neon,
    .add = tm_add_neon,
    .silu_mul = tm_silu_mul_neon,
    .gelu_mul = tm_gelu_mul_neon,
    .scale = tm_scale_neon,
    .rope = tm_rope_neon,
    .f32_to_f16 = tm_f32_to_f16_neon,
    .attn_chunk = tm_attn_chunk_neon,
    .kv_quantize = tm_kv_quantize_neon,
};

const tm_cpu_kernels *tm_cpu_kernels_neon(void) { return &tm_kernels_neon; }

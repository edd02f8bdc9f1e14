/* quant_k.c - the K-quant quantizers (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K).
 *
 * A super-block of 256 values is stored as integer values q, one integer scale sc (and
 * for the "type-1" formats Q2_K/Q4_K/Q5_K one integer min m) per sub-block of 16 or 32
 * values, and f16 super-block scales d (and dmin): value = d*sc*q - dmin*m (tm_kblock).
 * We minimise the plain squared error of the dequantized values in three steps:
 *   1. each sub-block alone: a float scale (and offset <= 0) by a search over candidate
 *      step sizes around the range / levels, each refitted by least squares for its
 *      rounding, then a few alternations of re-rounding and refitting;
 *   2. d (and dmin) from the largest float scale (and min), and per sub-block the integer
 *      scale (and min) among the roundings up and down that gives the least error once
 *      its values are re-rounded to the integer grid;
 *   3. d (and dmin) refitted by least squares for those integers, rounded to f16, and the
 *      integers chosen again; kept while the super-block's error falls.
 * llama.cpp's quantizers minimise an error weighted by |x| + rms(x) instead and search
 * fewer candidates; tests/kernels/test_dtype.cc bounds ours, scripts/quant-error compares
 * the two on real weights. */
#include "kernels/quant_k.h"

#include <math.h>
#include <string.h>

#include "common/common.h"

/* The integer ranges of one K-quant type. */
typedef struct tm_kq_format {
    int sub;          /* values per sub-block: 16 or 32 */
    int qmin, qmax;   /* value range */
    int scmin, scmax; /* sub-block scale range */
    int mmax;         /* sub-block min range [0, mmax]; 0 for type-0 formats (no min) */
} tm_kq_format;

static tm_kq_format tm_kq_format_of(tm_dtype t) {
    switch (t) {
    case TM_DTYPE_Q2_K: return (tm_kq_format){16, 0, 3, 0, 15, 15};
    case TM_DTYPE_Q3_K: return (tm_kq_format){16, -4, 3, -32, 31, 0};
    case TM_DTYPE_Q4_K: return (tm_kq_format){32, 0, 15, 0, 63, 63};
    case TM_DTYPE_Q5_K: return (tm_kq_format){32, 0, 31, 0, 63, 63};
    default: return (tm_kq_format){16, -32, 31, -128, 127, 0}; /* Q6_K */
    }
}

static int tm_kq_clamp(long v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : (int)v; }

/* Round v to the nearest integer in [lo, hi] (ties to even); NaN gives lo. Adding and
 * subtracting 1.5 * 2^23 rounds a float of magnitude < 2^22 in the FPU's mode, without
 * the libm call lrintf is without -fno-math-errno (the search's hottest line). */
static int tm_kq_round(float v, int lo, int hi) {
    if (!(v >= (float)lo)) return lo;
    if (v >= (float)hi) return hi;
    return (int)((v + 12582912.0f) - 12582912.0f); /* IEEE order kept: no -ffast-math here */
}

/* ---- step 1: one sub-block in floats ------------------------------------------------ */

/* Least squares (s, b) for x ~ s*q + b over n values, with s >= 0 and b <= 0 (the format
 * subtracts dmin*m with both >= 0). Returns the squared error, from the sums (sxx: the
 * sub-block's sum of x^2) in double, where the cancellation costs no candidate its rank.
 * The integer sums are exact in f32 (n <= 32, q <= 31). */
static float tm_kq_fit1(const float *x, const int *q, int n, double sxx, float *s_out, float *b_out) {
    float sx = 0.0f, sxq = 0.0f;
    int sq = 0, sqq = 0;
    for (int i = 0; i < n; i++) sx += x[i], sxq += x[i] * (float)q[i], sq += q[i], sqq += q[i] * q[i];
    const float den = (float)n * (float)sqq - (float)sq * (float)sq;
    float s = 0.0f, b = sx / (float)n;
    if (den > 0.0f) {
        s = ((float)n * sxq - (float)sq * sx) / den;
        b = ((float)sqq * sx - (float)sq * sxq) / den;
    }
    if (b > 0.0f) b = 0.0f, s = sqq > 0 ? sxq / (float)sqq : 0.0f;
    if (s < 0.0f) s = 0.0f, b = TM_MIN(0.0f, sx / (float)n);
    /* sum (s q + b - x)^2 expanded */
    const double ds = s, db = b;
    const double err = sxx - 2.0 * ds * sxq - 2.0 * db * sx + ds * ds * sqq + 2.0 * ds * db * sq + (double)n * db * db;
    *s_out = s, *b_out = b;
    return (float)TM_MAX(0.0, err);
}

/* Type-1 sub-block: x ~ s*q + b, q in [0, qmax]. */
static void tm_kq_sub1(const tm_kq_format *f, const float *x, float *s_out, float *b_out) {
    const int n = f->sub;
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) lo = TM_MIN(lo, x[i]), hi = TM_MAX(hi, x[i]);
    if (lo > 0.0f) lo = 0.0f;
    *s_out = 0.0f, *b_out = lo;
    if (!(hi > lo)) return; /* constant (or NaN): the offset says it all */
    double sxx = 0.0;
    for (int i = 0; i < n; i++) sxx += (double)x[i] * x[i];
    int q[32];
    float best = INFINITY, bs = 0.0f, bb = lo;
    /* steps (qmax - 1 .. qmax + 1) / range: clipping an outlier may pay */
    for (int k = 0; k <= 20; k++) {
        const float is = ((float)f->qmax - 1.0f + 0.1f * (float)k) / (hi - lo);
        for (int i = 0; i < n; i++) q[i] = tm_kq_round((x[i] - lo) * is, 0, f->qmax);
        float s, b;
        const float err = tm_kq_fit1(x, q, n, sxx, &s, &b);
        if (err < best) best = err, bs = s, bb = b;
    }
    for (int it = 0; it < 4 && bs > 0.0f; it++) { /* re-round with the fit, refit */
        const float ibs = 1.0f / bs;
        for (int i = 0; i < n; i++) q[i] = tm_kq_round((x[i] - bb) * ibs, 0, f->qmax);
        float s, b;
        const float err = tm_kq_fit1(x, q, n, sxx, &s, &b);
        if (!(err < best)) break;
        best = err, bs = s, bb = b;
    }
    *s_out = bs, *b_out = bb;
}

/* Least-squares s for x ~ s*q; returns the squared error sxx - sxq^2 / sqq (in double). */
static float tm_kq_fit0(const float *x, const int *q, int n, double sxx, float *s_out) {
    float sxq = 0.0f;
    int sqq = 0;
    for (int i = 0; i < n; i++) sxq += x[i] * (float)q[i], sqq += q[i] * q[i];
    *s_out = sqq > 0 ? sxq / (float)sqq : 0.0f;
    return (float)TM_MAX(0.0, sqq > 0 ? sxx - (double)sxq * sxq / sqq : sxx);
}

/* Type-0 sub-block: x ~ s*q, q in [qmin, qmax] (qmin = -qmax - 1). The value of largest
 * magnitude goes to either end of the range (its sign picks the sign of s). */
static void tm_kq_sub0(const tm_kq_format *f, const float *x, float *s_out) {
    const int n = f->sub;
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    *s_out = 0.0f;
    if (!(amax > 0.0f)) return;
    double sxx = 0.0;
    for (int i = 0; i < n; i++) sxx += (double)x[i] * x[i];
    int q[32];
    float best = INFINITY, bs = 0.0f;
    for (int side = 0; side < 2; side++)
        for (int k = -9; k <= 9; k++) {
            const float t = side ? (float)f->qmax + 0.1f * (float)k : (float)f->qmin - 0.1f * (float)k;
            const float is = t / max;
            for (int i = 0; i < n; i++) q[i] = tm_kq_round(x[i] * is, f->qmin, f->qmax);
            float s;
            const float err = tm_kq_fit0(x, q, n, sxx, &s);
            if (err < best) best = err, bs = s;
        }
    for (int it = 0; it < 4 && bs != 0.0f; it++) {
        const float ibs = 1.0f / bs;
        for (int i = 0; i < n; i++) q[i] = tm_kq_round(x[i] * ibs, f->qmin, f->qmax);
        float s;
        const float err = tm_kq_fit0(x, q, n, sxx, &s);
        if (!(err < best)) break;
        best = err, bs = s;
    }
    *s_out = bs;
}

/* ---- steps 2 and 3: the integer grid ------------------------------------------------ */

/* Values of one sub-block rounded for integer scale sc and min m under d, dmin, with the
 * dequantizer's arithmetic (dl = d*sc, ml = dmin*m, y = dl*q - ml); returns the error. */
static float tm_kq_requant(const tm_kq_format *f, const float *x, float d, float dmin, int sc, int m, int8_t *q) {
    const float dl = d * (float)sc, ml = dmin * (float)m, idl = dl != 0.0f ? 1.0f / dl : 0.0f;
    float err = 0.0f;
    for (int i = 0; i < f->sub; i++) {
        /* the error below is the dequantizer's own, so a rounding by 1/dl loses nothing */
        const int v = dl != 0.0f ? tm_kq_round((x[i] + ml) * idl, f->qmin, f->qmax) : 0;
        const float e = dl * (float)v - ml - x[i];
        q[i] = (int8_t)v;
        err += e * e;
    }
    return err;
}

/* Sub-block j's integers for d, dmin: the scale and min next to s/d and -b/dmin with the
 * least error. Fills k's sc, m (per 16 values) and q; returns the error. */
static float tm_kq_pick(const tm_kq_format *f, const float *x, float d, float dmin, float s, float b, int j,
                        tm_kblock *k) {
    const long c0 = d != 0.0f && isfinite(s / d) ? lrintf(s / d) : 0;
    const long m0 = f->mmax && dmin != 0.0f && isfinite(b / dmin) ? lrintf(-b / dmin) : 0;
    int8_t tmp[32];
    float best = INFINITY;
    for (int dc = -1; dc <= 1; dc++)
        for (int dm = f->mmax ? -1 : 0; dm <= (f->mmax ? 1 : 0); dm++) {
            const int sc = tm_kq_clamp(c0 + dc, f->scmin, f->scmax), m = tm_kq_clamp(m0 + dm, 0, f->mmax);
            const float err = tm_kq_requant(f, x, d, dmin, sc, m, tmp);
            if (!(err < best) && best != INFINITY) continue;
            best = err;
            memcpy(k->q + j * f->sub, tmp, (size_t)f->sub);
            for (int g = j * f->sub / 16; g < (j + 1) * f->sub / 16; g++) k->sc[g] = (int16_t)sc, k->m[g] = (int16_t)m;
        }
    return best;
}

/* All sub-blocks for d, dmin (rounded to f16 here, as stored); returns the total error. */
static float tm_kq_pick_all(const tm_kq_format *f, const float *x, float d, float dmin, const float *s,
                            const float *b, tm_kblock *k) {
    k->d = tm_f16_to_f32(tm_f32_to_f16(d));
    k->dmin = tm_f16_to_f32(tm_f32_to_f16(dmin));
    float err = 0.0f;
    for (int j = 0; j < TM_QK_K / f->sub; j++) err += tm_kq_pick(f, x + j * f->sub, k->d, k->dmin, s[j], b[j], j, k);
    return err;
}

/* Least-squares d (and dmin) for k's integers: x ~ d*(sc*q) - dmin*m. Returns 0 if the
 * system is degenerate or gives a negative dmin, leaving d, dmin unchanged. */
static int tm_kq_refit(const tm_kq_format *f, const float *x, const tm_kblock *k, float *d, float *dmin) {
    double aa = 0, ab = 0, bb = 0, ax = 0, bx = 0;
    for (int i = 0; i < TM_QK_K; i++) {
        const double a = (double)k->sc[i / 16] * k->q[i], m = k->m[i / 16];
        aa += a * a, ab += a * m, bb += m * m, ax += a * x[i], bx += m * x[i];
    }
    if (!f->mmax) {
        if (!(aa > 0)) return 0;
        *d = (float)(ax / aa);
        return 1;
    }
    if (!(bb > 0)) { /* every min 0: d alone */
        if (!(aa > 0)) return 0;
        *d = (float)(ax / aa);
        return 1;
    }
    /* minimise sum (d*a - e*m - x)^2: [aa -ab; -ab bb] [d; e] = [ax; -bx] */
    const double det = aa * bb - ab * ab;
    if (!(det > 1e-12 * aa * bb) || !(aa > 0)) return 0;
    const double nd = (ax * bb - ab * bx) / det, ne = (ax * ab - aa * bx) / det;
    if (!(nd > 0) || !(ne >= 0)) return 0;
    *d = (float)nd, *dmin = (float)ne;
    return 1;
}

static void tm_kq_superblock(const tm_kq_format *f, const float *x, tm_kblock *best) {
    const int nsub = TM_QK_K / f->sub;
    float s[16], b[16];
    for (int j = 0; j < nsub; j++) {
        b[j] = 0.0f;
        if (f->mmax) tm_kq_sub1(f, x + j * f->sub, &s[j], &b[j]);
        else tm_kq_sub0(f, x + j * f->sub, &s[j]);
    }
    /* d maps the largest scale to the end of the scale range: type-1 scales are >= 0;
     * a type-0 one may go to either end (its sign then gives d's). */
    float smax = 0.0f, mmax = 0.0f;
    for (int j = 0; j < nsub; j++) {
        if (fabsf(s[j]) > fabsf(smax)) smax = s[j];
        mmax = TM_MAX(mmax, -b[j]);
    }
    memset(best, 0, sizeof *best);
    float best_err = INFINITY;
    tm_kblock k;
    memset(&k, 0, sizeof k);
    for (int side = 0; side < (f->mmax ? 1 : 2); side++) {
        float d = smax / (float)(side ? f->scmin : f->scmax);
        float dmin = f->mmax ? mmax / (float)f->mmax : 0.0f;
        for (int it = 0; it < 3; it++) {
            const float err = tm_kq_pick_all(f, x, d, dmin, s, b, &k);
            if (err < best_err) best_err = err, *best = k;
            else if (it > 0) break;
            if (!tm_kq_refit(f, x, &k, &d, &dmin)) break;
        }
    }
}

/* ---- packing ------------------------------------------------------------------------- */

/* Q2_K / Q3_K: the 2 low bits of value 128n + 32j + l go to bits 2j of qs[32n + l]. */
static void tm_kq_pack2(const int *u, uint8_t *qs) {
    memset(qs, 0, 64);
    for (int n = 0; n < 2; n++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) qs[32 * n + l] |= (uint8_t)((u[128 * n + 32 * j + l] & 3) << (2 * j));
}

/* Q4_K / Q5_K scales: the inverse of tm_q4_k_scale_min (dtype.c). */
static void tm_kq_pack_scales6(const tm_kblock *k, uint8_t *s) {
    for (int j = 0; j < 4; j++) {
        const int sc0 = k->sc[2 * j], m0 = k->m[2 * j], sc1 = k->sc[2 * j + 8], m1 = k->m[2 * j + 8];
        s[j] = (uint8_t)(sc0 | ((sc1 >> 4) << 6));
        s[j + 4] = (uint8_t)(m0 | ((m1 >> 4) << 6));
        s[j + 8] = (uint8_t)((sc1 & 15) | ((m1 & 15) << 4));
    }
}

/* Q4_K / Q5_K values: chunk c of qs holds 64c + l (low nibble) and 64c + 32 + l (high). */
static void tm_kq_pack_nibbles(const int8_t *q, uint8_t *qs) {
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) qs[32 * c + l] = (uint8_t)((q[64 * c + l] & 15) | ((q[64 * c + 32 + l] & 15) << 4));
}

void tm_kblock_pack(tm_dtype t, const tm_kblock *k, void *block) {
    int u[TM_QK_K];
    switch (t) {
    case TM_DTYPE_Q2_K: {
        tm_block_q2_k *b = block;
        for (int i = 0; i < TM_QK_K; i++) u[i] = k->q[i];
        tm_kq_pack2(u, b->qs);
        for (int g = 0; g < 16; g++) b->scales[g] = (uint8_t)((k->sc[g] & 15) | ((k->m[g] & 15) << 4));
        b->d = tm_f32_to_f16(k->d), b->dmin = tm_f32_to_f16(k->dmin);
        break;
    }
    case TM_DTYPE_Q3_K: {
        tm_block_q3_k *b = block;
        memset(b->hmask, 0, sizeof b->hmask);
        for (int i = 0; i < TM_QK_K; i++) {
            u[i] = k->q[i] + 4; /* 0..7: bit 2 set means "no -4" */
            const int n = i / 128, j = (i / 32) % 4, l = i % 32;
            b->hmask[l] |= (uint8_t)(((u[i] >> 2) & 1) << (4 * n + j));
        }
        tm_kq_pack2(u, b->qs);
        memset(b->scales, 0, sizeof b->scales);
        for (int g = 0; g < 16; g++) {
            const int v = k->sc[g] + 32;
            b->scales[g < 8 ? g : g - 8] |= (uint8_t)((v & 15) << (g < 8 ? 0 : 4));
            b->scales[8 + g % 4] |= (uint8_t)(((v >> 4) & 3) << (2 * (g / 4)));
        }
        b->d = tm_f32_to_f16(k->d);
        break;
    }
    case TM_DTYPE_Q4_K: {
        tm_block_q4_k *b = block;
        tm_kq_pack_scales6(k, b->scales);
        tm_kq_pack_nibbles(k->q, b->qs);
        b->d = tm_f32_to_f16(k->d), b->dmin = tm_f32_to_f16(k->dmin);
        break;
    }
    case TM_DTYPE_Q5_K: {
        tm_block_q5_k *b = block;
        tm_kq_pack_scales6(k, b->scales);
        tm_kq_pack_nibbles(k->q, b->qs);
        memset(b->qh, 0, sizeof b->qh);
        for (int i = 0; i < TM_QK_K; i++) b->qh[i % 32] |= (uint8_t)(((k->q[i] >> 4) & 1) << (i / 32));
        b->d = tm_f32_to_f16(k->d), b->dmin = tm_f32_to_f16(k->dmin);
        break;
    }
    case TM_DTYPE_Q6_K: { /* KERNELS.md section 1, inverted */
        tm_block_q6_k *b = block;
        for (int i = 0; i < TM_QK_K; i++) u[i] = k->q[i] + 32;
        for (int h = 0; h < 2; h++) {
            const int *v = u + 128 * h;
            for (int l = 0; l < 32; l++) {
                b->ql[64 * h + l] = (uint8_t)((v[l] & 15) | ((v[l + 64] & 15) << 4));
                b->ql[64 * h + l + 32] = (uint8_t)((v[l + 32] & 15) | ((v[l + 96] & 15) << 4));
                b->qh[32 * h + l] = (uint8_t)((v[l] >> 4) | ((v[l + 32] >> 4) << 2) | ((v[l + 64] >> 4) << 4) |
                                              ((v[l + 96] >> 4) << 6));
            }
        }
        for (int g = 0; g < 16; g++) b->scales[g] = (int8_t)k->sc[g];
        b->d = tm_f32_to_f16(k->d);
        break;
    }
    default:
        break;
    }
}

void tm_quantize_k_row(tm_dtype t, const float *src, void *dst, int64_t n) {
    const tm_kq_format f = tm_kq_format_of(t);
    const int64_t bb = tm_dtype_block_bytes(t);
    for (int64_t i = 0; i < n / TM_QK_K; i++) {
        tm_kblock k;
        tm_kq_superblock(&f, src + i * TM_QK_K, &k);
        tm_kblock_pack(t, &k, (uint8_t *)dst + i * bb);
    }
}

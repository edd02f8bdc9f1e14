/* matmul_neon.c - arm64 NEON + dotprod kernels on the packed tiles of matmul_impl.h.
 * Compiled with -march=armv8.2-a+dotprod+fp16; only reached when tm_simd_supported says
 * TM_SIMD_NEON (HWCAP_ASIMDDP, FPHP and ASIMDHP).
 *
 * A q register holds 4 rows (lane r = row r of a quarter), so a 16-row tile is four
 * quarters, one after the other. The packed format is the x86 one, unchanged:
 *   Q4_0/Q4_1/Q8_0  bytes 4r..4r+3 of a 16-byte slice of chunk k are 4 values of row r,
 *              which is exactly what sdot's lane form wants: vdotq_laneq_s32(acc, w, a,
 *              l) adds to lane r the dot of w's 4 bytes of row r with bytes 4l..4l+3 of
 *              a. Chunk k (Q4 low nibbles, Q8) holds values 4k..4k+3 and Q4's high
 *              nibbles 16+4k..16+4k+3, so the block's activations are two registers
 *              (values 0..15, 16..31) and chunk k uses lane k & 3 of one of them.
 *              sdot is signed x signed: Q8_0's +128 bias is removed by one xor, Q4
 *              nibbles (0..15) are already valid int8, Q4_0's -8 is -8 * sum(a) as in
 *              the scalar reference. Every integer dot is exact.
 *   Q5_0/Q5_1  Q4's nibbles with their fifth bits (matmul_impl.h) or'ed in by byte shifts;
 *              values 0..31 are valid int8 too, Q5_0's -16 is -16 * sum(a).
 *   dense      f32 FMA over a (KC, 16) f32 panel (f16/bf16 widened once per panel) that
 *              all tokens reuse; n = 1 streams the tile directly.
 * Token groups (matmul_impl.h) are up to TM_NT_MAX = 8 tokens; dense groups are worked
 * in sub-groups of 4 tokens (16 accumulators). The K-quants are not packed: their row
 * kernels (tm_q4k_rows, tm_q6k_rows, tm_kq_rows) read the GGUF blocks in place. The file
 * ends with the level's kernel table (its only symbol outside, declared in matmul_impl.h). */
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/simd.h"

#define TM_AI static inline __attribute__((always_inline))

enum { TM_KIND_Q4_0, TM_KIND_Q4_1, TM_KIND_Q8_0, TM_KIND_Q5_0, TM_KIND_Q5_1 };
enum { TM_NT_MAX = 8, TM_KC = 256 }; /* largest token group (the table's max_nt); panel columns */

/* ---- activation quantization (bit-identical to matmul_scalar.c) ------------------- */

static void tm_quantize_q8(const float *x, int64_t n_cols, int64_t stride, int8_t *q, float *d,
                           int32_t *sum, float *s) {
    for (int64_t b = 0; b < n_cols / TM_QK; b++, x += TM_QK, q += TM_QK * stride) {
        float32x4_t v[8];
        for (int j = 0; j < 8; j++) v[j] = vld1q_f32(x + 4 * j);
        float32x4_t m = vabsq_f32(v[0]);
        for (int j = 1; j < 8; j++) m = vmaxq_f32(m, vabsq_f32(v[j]));
        const float amax = vmaxvq_f32(m);
        /* same scalar division and reciprocal as the reference, so d and id match bitwise */
        const float db = amax / 127.0f, id = db != 0.0f && 1.0f / db < INFINITY ? 1.0f / db : 0.0f;
        int32x4_t iq[8], acc = vdupq_n_s32(0);
        for (int j = 0; j < 8; j++) {
            iq[j] = vcvtnq_s32_f32(vmulq_n_f32(v[j], id)); /* half-even, as lrintf */
            acc = vaddq_s32(acc, iq[j]);
        }
        for (int j = 0; j < 4; j++) {
            const int16x8_t p16 = vcombine_s16(vqmovn_s32(iq[2 * j]), vqmovn_s32(iq[2 * j + 1]));
            vst1_s8(q + 8 * j, vqmovn_s16(p16));
        }
        const int32_t total = vaddvq_s32(acc);
        d[b] = db;
        sum[b] = total;
        s[b] = db * (float)total;
    }
}

/* ---- row-masked loads and stores of one quarter (4 rows) ------------------------- */

TM_AI int tm_rows_left(const tm_mm_args *a, int64_t r0) {
    const int64_t left = a->n_rows - r0;
    return left >= 4 ? 4 : (left <= 0 ? 0 : (int)left);
}

TM_AI float32x4_t tm_load_rows(const float *p, int nr) {
    if (nr == 4) return vld1q_f32(p);
    float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    memcpy(tmp, p, (size_t)nr * sizeof(float));
    return vld1q_f32(tmp);
}

TM_AI void tm_store_rows(float *p, float32x4_t v, int nr) {
    if (nr == 4) {
        vst1q_f32(p, v);
        return;
    }
    float tmp[4];
    vst1q_f32(tmp, v);
    memcpy(p, tmp, (size_t)nr * sizeof(float));
}

/* ---- quantized tiles ------------------------------------------------------------- */

/* Tokens [t0, t0 + NT) x quarter g (rows 4g..4g+3) of tile ti. */
TM_AI void tm_q_group(const tm_mm_args *a, int64_t ti, int g, int t0, const int NT, const int kind) {
    const tm_mm_weight *pw = a->w;
    const uint8_t *tile = pw->packed + (size_t)ti * pw->tile_bytes;
    const uint16_t *dsec = (const uint16_t *)(tile + pw->d_off) + 4 * g;
    const uint16_t *msec = (const uint16_t *)(tile + pw->m_off) + 4 * g;
    const int64_t nb = a->nb, cols = a->n_cols;
    const int8_t *aq = a->act->q + (int64_t)t0 * cols;
    const float *ad = a->act->d + (int64_t)t0 * nb, *as = a->act->s + (int64_t)t0 * nb;
    const int32_t *asum = a->act->sum + (int64_t)t0 * nb;
    const uint8x16_t m4 = vdupq_n_u8(0x0f), x80 = vdupq_n_u8(0x80);
    float32x4_t acc[TM_NT_MAX];
    for (int i = 0; i < NT; i++) acc[i] = vdupq_n_f32(0.0f);

    for (int64_t b = 0; b < nb; b++) {
        if (g == 0 && t0 == 0) tm_mm_prefetch_next_tile(pw, tile, b, nb, 0, 1);
        int8x16_t w[8]; /* w[j]: 4 values of each of the 4 rows, j < 4: 4j.., j >= 4: 16+4(j-4).. */
        if (kind == TM_KIND_Q8_0) {
            const uint8_t *p = tile + b * 512 + 16 * g;
            for (int j = 0; j < 8; j++) w[j] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p + 64 * j), x80));
        } else {
            const uint8_t *p = tile + b * 256 + 16 * g;
            for (int k = 0; k < 4; k++) {
                const uint8x16_t v = vld1q_u8(p + 64 * k);
                w[k] = vreinterpretq_s8_u8(vandq_u8(v, m4));
                w[k + 4] = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
            }
            if (kind == TM_KIND_Q5_0 || kind == TM_KIND_Q5_1) { /* bit k -> 4, bit 4 + k -> 4 */
                const uint8x16_t h = vld1q_u8(tile + pw->h_off + b * 64 + 16 * g), m10 = vdupq_n_u8(0x10);
                const uint8x16_t hs[8] = {vshlq_n_u8(h, 4), vshlq_n_u8(h, 3), vshlq_n_u8(h, 2), vshlq_n_u8(h, 1),
                                          h, vshrq_n_u8(h, 1), vshrq_n_u8(h, 2), vshrq_n_u8(h, 3)};
                for (int j = 0; j < 8; j++) w[j] = vreinterpretq_s8_u8(vorrq_u8(vreinterpretq_u8_s8(w[j]), vandq_u8(hs[j], m10)));
            }
        }
        const float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dsec + b * TM_MM_TILE)));
        float32x4_t mw = vdupq_n_f32(0.0f);
        if (kind == TM_KIND_Q4_1 || kind == TM_KIND_Q5_1) mw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(msec + b * TM_MM_TILE)));
        for (int i = 0; i < NT; i++) {
            const int8_t *qa = aq + (b * NT + i) * 32; /* grouped layout: matmul_impl.h */
            const int64_t ib = i * nb + b;             /* its scales: row-major */
            const int8x16_t a0 = vld1q_s8(qa), a1 = vld1q_s8(qa + 16);
            /* two chains so the sdots of one token overlap */
            const int zero = kind == TM_KIND_Q4_0 ? 8 : kind == TM_KIND_Q5_0 ? 16 : 0;
            int32x4_t c0 = vdupq_n_s32(-zero * asum[ib]), c1 = vdupq_n_s32(0);
            c0 = vdotq_laneq_s32(c0, w[0], a0, 0);
            c1 = vdotq_laneq_s32(c1, w[1], a0, 1);
            c0 = vdotq_laneq_s32(c0, w[2], a0, 2);
            c1 = vdotq_laneq_s32(c1, w[3], a0, 3);
            c0 = vdotq_laneq_s32(c0, w[4], a1, 0);
            c1 = vdotq_laneq_s32(c1, w[5], a1, 1);
            c0 = vdotq_laneq_s32(c0, w[6], a1, 2);
            c1 = vdotq_laneq_s32(c1, w[7], a1, 3);
            const int32x4_t c = vaddq_s32(c0, c1);
            acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(c), vmulq_n_f32(dw, ad[ib]));
            if (kind == TM_KIND_Q4_1 || kind == TM_KIND_Q5_1) acc[i] = vfmaq_n_f32(acc[i], mw, as[ib]);
        }
    }

    const int64_t r0 = ti * TM_MM_TILE + 4 * g;
    const int nr = tm_rows_left(a, r0);
    const float32x4_t bias = a->bias ? tm_load_rows(a->bias + r0, nr) : vdupq_n_f32(0.0f);
    for (int i = 0; i < NT; i++)
        tm_store_rows(a->out + (int64_t)(t0 + i) * a->n_rows + r0, vaddq_f32(acc[i], bias), nr);
}

/* Tiles [t0, t1) x all tokens; kind is a constant after inlining. */
TM_AI void tm_q_tiles(const tm_mm_args *a, int64_t t0, int64_t t1, const int kind) {
    for (int64_t ti = t0; ti < t1; ti++)
        for (int g = 0; g < 4; g++) {
            if (ti * TM_MM_TILE + 4 * g >= a->n_rows) break;
            for (int t = 0; t < a->n;) {
                const int nt = tm_mm_group_size(a->max_nt, a->n - t);
                if (nt == 8) tm_q_group(a, ti, g, t, 8, kind);
                else if (nt == 4) tm_q_group(a, ti, g, t, 4, kind);
                else if (nt == 2) tm_q_group(a, ti, g, t, 2, kind);
                else tm_q_group(a, ti, g, t, 1, kind);
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

/* The 16 weights of column k (rows 0..15 of the tile) as 4 f32 quarters. */
TM_AI void tm_dense_load(const uint8_t *tile, int64_t k, tm_dtype t, float32x4_t w[4]) {
    if (t == TM_DTYPE_F32) {
        const float *p = (const float *)tile + k * TM_MM_TILE;
        for (int q = 0; q < 4; q++) w[q] = vld1q_f32(p + 4 * q);
        return;
    }
    const uint16_t *p = (const uint16_t *)tile + k * TM_MM_TILE;
    const uint16x8_t lo = vld1q_u16(p), hi = vld1q_u16(p + 8);
    if (t == TM_DTYPE_F16) {
        w[0] = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(lo)));
        w[1] = vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(lo)));
        w[2] = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(hi)));
        w[3] = vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(hi)));
    } else { /* bf16 is the top half of an f32 */
        w[0] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(lo), 16));
        w[1] = vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(lo), 16));
        w[2] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(hi), 16));
        w[3] = vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(hi), 16));
    }
}

/* Adds the bias (if wanted) and stores the 4 quarters of one token's 16 outputs. */
TM_AI void tm_store_tile_row(const tm_mm_args *a, float *dst, int64_t r0, float32x4_t v[4], int use_bias) {
    for (int q = 0; q < 4; q++) {
        const int nr = tm_rows_left(a, r0 + 4 * q);
        if (nr == 0) break;
        float32x4_t o = v[q];
        if (use_bias && a->bias) o = vaddq_f32(o, tm_load_rows(a->bias + r0 + 4 * q, nr));
        tm_store_rows(dst + 4 * q, o, nr);
    }
}

/* n = 1, tiles [ti, ti + nt), nt <= TM_GEMV_TILES. Each row is one FMA chain over k with
 * the operations of a batch (tm_dense_sub: a panel's sum is stored and continued), so a
 * token gets the same bits alone as in a batch; tiles and quarters run side by side. */
enum { TM_GEMV_TILES = 2 };
TM_AI void tm_dense_gemv(const tm_mm_args *a, int64_t ti, int nt, const tm_dtype t) {
    const float *x = a->x;
    const uint8_t *tile[TM_GEMV_TILES];
    float32x4_t acc[TM_GEMV_TILES][4], w[4];
    for (int j = 0; j < TM_GEMV_TILES; j++) {
        tile[j] = a->w->packed + (size_t)(ti + (j < nt ? j : 0)) * a->w->tile_bytes;
        for (int q = 0; q < 4; q++) acc[j][q] = vdupq_n_f32(0.0f);
    }
    for (int64_t k = 0; k < a->n_cols; k++)
        for (int j = 0; j < TM_GEMV_TILES; j++) {
            tm_dense_load(tile[j], k, t, w);
            for (int q = 0; q < 4; q++) acc[j][q] = vfmaq_n_f32(acc[j][q], w[q], x[k]);
        }
    for (int j = 0; j < nt; j++) {
        const int64_t r0 = (ti + j) * TM_MM_TILE;
        tm_store_tile_row(a, a->out + r0, r0, acc[j], 1);
    }
}

/* Tokens t0+i0 .. t0+i0+NS-1 of the group at t0 (NT tokens) x columns [k0, k0 + kc),
 * from an f32 panel (kc, 16). first: start from 0, else from the partial sums in out;
 * last: add the bias. */
TM_AI void tm_dense_sub(const tm_mm_args *a, const float *panel, int64_t r0, int64_t k0, int64_t kc,
                        int t0, int NT, int i0, const int NS, int first, int last) {
    float32x4_t acc[4][4]; /* [token][quarter] */
    for (int s = 0; s < NS; s++) {
        const float *o = a->out + (int64_t)(t0 + i0 + s) * a->n_rows + r0;
        for (int q = 0; q < 4; q++)
            acc[s][q] = first ? vdupq_n_f32(0.0f) : tm_load_rows(o + 4 * q, tm_rows_left(a, r0 + 4 * q));
    }
    const float *x = a->act->xp + (int64_t)t0 * a->n_cols + k0 * NT + i0; /* grouped: x[k * NT + i] */
    for (int64_t k = 0; k < kc; k++) {
        const float *pk = panel + k * TM_MM_TILE;
        const float32x4_t w0 = vld1q_f32(pk), w1 = vld1q_f32(pk + 4), w2 = vld1q_f32(pk + 8),
                          w3 = vld1q_f32(pk + 12);
        const float *xk = x + k * NT;
        for (int s = 0; s < NS; s++) {
            const float xv = xk[s];
            acc[s][0] = vfmaq_n_f32(acc[s][0], w0, xv);
            acc[s][1] = vfmaq_n_f32(acc[s][1], w1, xv);
            acc[s][2] = vfmaq_n_f32(acc[s][2], w2, xv);
            acc[s][3] = vfmaq_n_f32(acc[s][3], w3, xv);
        }
    }
    for (int s = 0; s < NS; s++)
        tm_store_tile_row(a, a->out + (int64_t)(t0 + i0 + s) * a->n_rows + r0, r0, acc[s], last);
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
            p = (const float *)tile + k0 * TM_MM_TILE;
        } else {
            float32x4_t w[4];
            for (int64_t k = 0; k < kc; k++) {
                if (t == TM_DTYPE_F16) tm_dense_load(tile, k0 + k, TM_DTYPE_F16, w);
                else tm_dense_load(tile, k0 + k, TM_DTYPE_BF16, w);
                for (int q = 0; q < 4; q++) vst1q_f32(panel + k * TM_MM_TILE + 4 * q, w[q]);
            }
        }
        const int first = k0 == 0, last = k0 + kc >= a->n_cols;
        for (int tk = 0; tk < a->n;) {
            const int nt = tm_mm_group_size(a->max_nt, a->n - tk);
            int i = 0;
            for (; i + 4 <= nt; i += 4) tm_dense_sub(a, p, r0, k0, kc, tk, nt, i, 4, first, last);
            if (nt - i == 2) tm_dense_sub(a, p, r0, k0, kc, tk, nt, i, 2, first, last);
            else if (nt - i == 1) tm_dense_sub(a, p, r0, k0, kc, tk, nt, i, 1, first, last);
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
 * Per 256-value superblock, row and token: the integer sums of tm_mm_dot_row_scalar, then
 * its float formula. sdot is signed x signed, so Q4_K nibbles (0..15) and Q6_K values
 * minus 32 (-32..31) are used as int8 directly; each sdot result (4 lanes) is weighted
 * by its sub-block scale with one vmla, and the lanes are added once per superblock.
 * One unpacked superblock serves up to TM_KQ_NT tokens. */

enum { TM_KQ_NT = 4 };

TM_AI float tm_kq_f16(const uint16_t *p) {
    __fp16 h;
    memcpy(&h, p, 2);
    return (float)h;
}

/* Row r x tokens [t0, t0 + nt) of a Q4_K weight. */
static void tm_q4k_row(const tm_mm_args *a, int64_t r, int t0, int nt) {
    const int64_t nsb = a->n_cols / TM_QK_K;
    const tm_block_q4_k *blk =
        (const tm_block_q4_k *)((const uint8_t *)a->w->src + r * tm_dtype_row_bytes(TM_DTYPE_Q4_K, a->n_cols));
    const tm_block_q8_k *y0 = (const tm_block_q8_k *)a->act->q8k + (int64_t)t0 * nsb;
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    float acc[TM_KQ_NT] = {0};
    for (int64_t i = 0; i < nsb; i++) {
        const tm_block_q4_k *b = blk + i;
        const uint8_t *s = b->scales;
        int32_t sc[8];
        int16_t mn[8];
        for (int j = 0; j < 4; j++) {
            sc[j] = s[j] & 63;
            sc[j + 4] = (s[j + 8] & 15) | ((s[j] >> 6) << 4);
            mn[j] = (int16_t)(s[j + 4] & 63);
            mn[j + 4] = (int16_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
        }
        const int16x8_t mv = vld1q_s16(mn);
        int8x16_t w[8][2]; /* w[j]: sub-block j (values 32j..32j+31) */
        for (int c = 0; c < 4; c++)
            for (int hlf = 0; hlf < 2; hlf++) {
                const uint8x16_t q = vld1q_u8(b->qs + 32 * c + 16 * hlf);
                w[2 * c][hlf] = vreinterpretq_s8_u8(vandq_u8(q, m4));
                w[2 * c + 1][hlf] = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
            }
        const float d = tm_kq_f16(&b->d), dmin = tm_kq_f16(&b->dmin);
        for (int k = 0; k < nt; k++) {
            const tm_block_q8_k *y = y0 + k * nsb + i;
            int32x4_t sv = vdupq_n_s32(0);
            for (int j = 0; j < 8; j++) {
                int32x4_t dj = vdotq_s32(vdupq_n_s32(0), w[j][0], vld1q_s8(y->qs + 32 * j));
                dj = vdotq_s32(dj, w[j][1], vld1q_s8(y->qs + 32 * j + 16));
                sv = vmlaq_n_s32(sv, dj, sc[j]);
            }
            const int32_t sumi = vaddvq_s32(sv);
            /* bsums per sub-block (2 x 16 values), times its min */
            const int16x8_t bs = vpaddq_s16(vld1q_s16(y->bsums), vld1q_s16(y->bsums + 8));
            const int32_t summ = vaddvq_s32(vmlal_high_s16(vmull_s16(vget_low_s16(bs), vget_low_s16(mv)), bs, mv));
            acc[k] += y->d * (d * (float)sumi - dmin * (float)summ);
        }
    }
    const float bias = a->bias ? a->bias[r] : 0.0f;
    for (int k = 0; k < nt; k++) a->out[(int64_t)(t0 + k) * a->n_rows + r] = acc[k] + bias;
}

/* Row r x tokens [t0, t0 + nt) of a Q6_K weight. */
static void tm_q6k_row(const tm_mm_args *a, int64_t r, int t0, int nt) {
    const int64_t nsb = a->n_cols / TM_QK_K;
    const tm_block_q6_k *blk =
        (const tm_block_q6_k *)((const uint8_t *)a->w->src + r * tm_dtype_row_bytes(TM_DTYPE_Q6_K, a->n_cols));
    const tm_block_q8_k *y0 = (const tm_block_q8_k *)a->act->q8k + (int64_t)t0 * nsb;
    const uint8x16_t m4 = vdupq_n_u8(0x0f), m3 = vdupq_n_u8(3);
    const int8x16_t m32 = vdupq_n_s8(32);
    float acc[TM_KQ_NT] = {0};
    for (int64_t i = 0; i < nsb; i++) {
        const tm_block_q6_k *b = blk + i;
        int8x16_t w[16]; /* w[g]: values 16g..16g+15 minus 32 (scale g) */
        for (int h = 0; h < 2; h++)
            for (int p = 0; p < 2; p++) { /* values 128h + 16p + {0, 32, 64, 96} + 0..15 */
                const uint8x16_t ql0 = vld1q_u8(b->ql + 64 * h + 16 * p);
                const uint8x16_t ql1 = vld1q_u8(b->ql + 64 * h + 32 + 16 * p);
                const uint8x16_t qh = vld1q_u8(b->qh + 32 * h + 16 * p);
                const uint8x16_t v0 = vorrq_u8(vandq_u8(ql0, m4), vshlq_n_u8(vandq_u8(qh, m3), 4));
                const uint8x16_t v1 = vorrq_u8(vandq_u8(ql1, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 2), m3), 4));
                const uint8x16_t v2 = vorrq_u8(vshrq_n_u8(ql0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 4), m3), 4));
                const uint8x16_t v3 = vorrq_u8(vshrq_n_u8(ql1, 4), vshlq_n_u8(vshrq_n_u8(qh, 6), 4));
                w[8 * h + p] = vsubq_s8(vreinterpretq_s8_u8(v0), m32);
                w[8 * h + 2 + p] = vsubq_s8(vreinterpretq_s8_u8(v1), m32);
                w[8 * h + 4 + p] = vsubq_s8(vreinterpretq_s8_u8(v2), m32);
                w[8 * h + 6 + p] = vsubq_s8(vreinterpretq_s8_u8(v3), m32);
            }
        const float d = tm_kq_f16(&b->d);
        for (int k = 0; k < nt; k++) {
            const tm_block_q8_k *y = y0 + k * nsb + i;
            int32x4_t sv = vdupq_n_s32(0);
            for (int g = 0; g < 16; g++)
                sv = vmlaq_n_s32(sv, vdotq_s32(vdupq_n_s32(0), w[g], vld1q_s8(y->qs + 16 * g)), b->scales[g]);
            const int32_t sumi = vaddvq_s32(sv);
            acc[k] += y->d * d * (float)sumi;
        }
    }
    const float bias = a->bias ? a->bias[r] : 0.0f;
    for (int k = 0; k < nt; k++) a->out[(int64_t)(t0 + k) * a->n_rows + r] = acc[k] + bias;
}

/* Row r x tokens [t0, t0 + nt) of a Q2_K / Q3_K / Q5_K weight: each super-block unpacked
 * to signed values per 16 (Q5_K's nibbles and fifth bits here; Q2_K and Q3_K, rare, by
 * the scalar reference's tm_kblock_unpack), then sdot per 16 values weighted by its scale. */
static void tm_kq_row(const tm_mm_args *a, int64_t r, int t0, int nt) {
    const int64_t nsb = a->n_cols / TM_QK_K, bb = tm_dtype_block_bytes(a->dtype);
    const uint8_t *row = (const uint8_t *)a->w->src + r * tm_dtype_row_bytes(a->dtype, a->n_cols);
    const tm_block_q8_k *y0 = (const tm_block_q8_k *)a->act->q8k + (int64_t)t0 * nsb;
    const int type1 = a->dtype != TM_DTYPE_Q3_K;
    const uint8x16_t m4 = vdupq_n_u8(0x0f), m10 = vdupq_n_u8(0x10);
    float acc[TM_KQ_NT] = {0};
    for (int64_t i = 0; i < nsb; i++) {
        const uint8_t *blk = row + i * bb;
        int8x16_t w[16];
        int32_t sc[16];
        int16_t mn[16];
        float d, dmin;
        if (a->dtype == TM_DTYPE_Q5_K) {
            const tm_block_q5_k *b = (const tm_block_q5_k *)blk;
            const uint8_t *s = b->scales;
            for (int j = 0; j < 4; j++) { /* KERNELS.md's 6-bit packing, sub-blocks j and j + 4 */
                sc[2 * j] = sc[2 * j + 1] = s[j] & 63;
                sc[2 * j + 8] = sc[2 * j + 9] = (s[j + 8] & 15) | ((s[j] >> 6) << 4);
                mn[2 * j] = mn[2 * j + 1] = (int16_t)(s[j + 4] & 63);
                mn[2 * j + 8] = mn[2 * j + 9] = (int16_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
            }
            for (int hlf = 0; hlf < 2; hlf++) {
                const uint8x16_t qh = vld1q_u8(b->qh + 16 * hlf);
                for (int c = 0; c < 4; c++) { /* values 64c + 16 hlf (+32): bits 2c, 2c + 1 of qh */
                    const uint8x16_t q = vld1q_u8(b->qs + 32 * c + 16 * hlf);
                    const uint8x16_t hlo = vandq_u8(vshlq_u8(qh, vdupq_n_s8((int8_t)(4 - 2 * c))), m10);
                    const uint8x16_t hhi = vandq_u8(vshlq_u8(qh, vdupq_n_s8((int8_t)(3 - 2 * c))), m10);
                    w[4 * c + hlf] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, m4), hlo));
                    w[4 * c + 2 + hlf] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q, 4), hhi));
                }
            }
            d = tm_kq_f16(&b->d), dmin = tm_kq_f16(&b->dmin);
        } else {
            tm_kblock k;
            tm_kblock_unpack(a->dtype, blk, &k);
            for (int g = 0; g < 16; g++) w[g] = vld1q_s8(k.q + 16 * g), sc[g] = k.sc[g], mn[g] = k.m[g];
            d = k.d, dmin = k.dmin;
        }
        const int16x8_t m0 = vld1q_s16(mn), m1 = vld1q_s16(mn + 8);
        for (int k = 0; k < nt; k++) {
            const tm_block_q8_k *y = y0 + k * nsb + i;
            int32x4_t sv = vdupq_n_s32(0);
            for (int g = 0; g < 16; g++) sv = vmlaq_n_s32(sv, vdotq_s32(vdupq_n_s32(0), w[g], vld1q_s8(y->qs + 16 * g)), sc[g]);
            const int32_t sumi = vaddvq_s32(sv);
            if (type1) {
                const int16x8_t b0 = vld1q_s16(y->bsums), b1 = vld1q_s16(y->bsums + 8);
                int32x4_t mm = vmull_s16(vget_low_s16(b0), vget_low_s16(m0));
                mm = vmlal_high_s16(mm, b0, m0);
                mm = vmlal_s16(mm, vget_low_s16(b1), vget_low_s16(m1));
                mm = vmlal_high_s16(mm, b1, m1);
                acc[k] += y->d * (d * (float)sumi - dmin * (float)vaddvq_s32(mm));
            } else {
                acc[k] += y->d * d * (float)sumi;
            }
        }
    }
    const float bias = a->bias ? a->bias[r] : 0.0f;
    for (int k = 0; k < nt; k++) a->out[(int64_t)(t0 + k) * a->n_rows + r] = acc[k] + bias;
}

static void tm_kq_rows(const tm_mm_args *a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++)
        for (int t0 = 0; t0 < a->n; t0 += TM_KQ_NT) tm_kq_row(a, r, t0, a->n - t0 < TM_KQ_NT ? a->n - t0 : TM_KQ_NT);
}

/* Rows [r0, r1) x all tokens, up to TM_KQ_NT tokens per unpacked superblock. */
static void tm_q4k_rows(const tm_mm_args *a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++)
        for (int t0 = 0; t0 < a->n; t0 += TM_KQ_NT) tm_q4k_row(a, r, t0, a->n - t0 < TM_KQ_NT ? a->n - t0 : TM_KQ_NT);
}

static void tm_q6k_rows(const tm_mm_args *a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++)
        for (int t0 = 0; t0 < a->n; t0 += TM_KQ_NT) tm_q6k_row(a, r, t0, a->n - t0 < TM_KQ_NT ? a->n - t0 : TM_KQ_NT);
}

/* ---- the table ------------------------------------------------------------------------ */

static const tm_mm_kernels tm_mm_neon = {
    .level = TM_SIMD_NEON,
    .max_nt = TM_NT_MAX,
    .quantize_q8 = tm_quantize_q8,
    .quantize_q8k = tm_mm_quantize_q8k_scalar,
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
        [TM_DTYPE_Q4_K] = {TM_MM_ACT_Q8K, NULL,             NULL,           tm_q4k_rows},
        [TM_DTYPE_Q6_K] = {TM_MM_ACT_Q8K, NULL,             NULL,           tm_q6k_rows},
        [TM_DTYPE_Q2_K] = {TM_MM_ACT_Q8K, NULL,             NULL,           tm_kq_rows},
        [TM_DTYPE_Q3_K] = {TM_MM_ACT_Q8K, NULL,             NULL,           tm_kq_rows},
        [TM_DTYPE_Q5_K] = {TM_MM_ACT_Q8K, NULL,             NULL,           tm_kq_rows},
    },
};

const tm_mm_kernels *tm_mm_kernels_neon(void) { return &tm_mm_neon; }

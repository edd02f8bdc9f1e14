/* matmul_scalar.c - the scalar reference matmul: activation quantizers, one weight row
 * times one token's activations for every dtype the CPU multiplies, and the table that
 * runs them (no packing: every weight is read in its GGUF blocks). Portable C only; the
 * SIMD tables are tested against this one (tests/kernels/test_matmul.cc). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/common.h"
#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/simd.h"
#include "kernels/dtype.h"

void tm_mm_quantize_q8_scalar(const float *x, int64_t n_cols, int64_t stride, int8_t *q,
                              float *d, int32_t *sum, float *s) {
    for (int64_t b = 0; b < n_cols / TM_QK; b++, x += TM_QK, q += TM_QK * stride) {
        float amax = 0.0f;
        for (int j = 0; j < TM_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        /* 0 for a zero block, or one so small (max < ~4e-37) that 1 / db overflows */
        const float db = amax / 127.0f, id = db != 0.0f && 1.0f / db < INFINITY ? 1.0f / db : 0.0f;
        int32_t acc = 0;
        for (int j = 0; j < TM_QK; j++) {
            q[j] = (int8_t)lrintf(x[j] * id); /* half-even, as the SIMD conversions */
            acc += q[j];
        }
        d[b] = db;
        sum[b] = acc;
        s[b] = db * (float)acc;
    }
}

void tm_mm_quantize_q8k_scalar(const float *x, tm_block_q8_k *y, int64_t nb) {
    tm_quantize_row(TM_DTYPE_Q8_K, x, y, nb * TM_QK_K);
}

static int32_t tm_mm_dot_i8(const int8_t *a, const int8_t *b, int n) {
    int32_t acc = 0;
    for (int j = 0; j < n; j++) acc += a[j] * b[j];
    return acc;
}

static int32_t tm_mm_dot_u8_i8(const uint8_t *a, const int8_t *b, int n) {
    int32_t acc = 0;
    for (int j = 0; j < n; j++) acc += a[j] * b[j];
    return acc;
}

/* One weight row (GGUF blocks) . one token's quantized activations (not K-quants). */
static float tm_mm_dot_row_scalar(const tm_mm_args *a, const void *row, int t) {
    const int64_t nb = a->n_cols / TM_QK;
    const int8_t *q = a->act ? a->act->q + (int64_t)t * a->n_cols : NULL;
    const float *ad = a->act ? a->act->d + (int64_t)t * nb : NULL;
    const int32_t *asum = a->act ? a->act->sum + (int64_t)t * nb : NULL;
    const float *as = a->act ? a->act->s + (int64_t)t * nb : NULL;
    const float *x = a->x + (int64_t)t * a->n_cols;
    float acc = 0.0f;
    switch (a->dtype) {
    case TM_DTYPE_F32: {
        const float *w = row;
        for (int64_t k = 0; k < a->n_cols; k++) acc += w[k] * x[k];
        break;
    }
    case TM_DTYPE_F16: {
        const uint16_t *w = row;
        for (int64_t k = 0; k < a->n_cols; k++) acc += tm_f16_to_f32(w[k]) * x[k];
        break;
    }
    case TM_DTYPE_BF16: {
        const uint16_t *w = row;
        for (int64_t k = 0; k < a->n_cols; k++) acc += tm_bf16_to_f32(w[k]) * x[k];
        break;
    }
    case TM_DTYPE_Q4_0: /* sum((q - 8) * a) = sum(q * a) - 8 * sum(a) */
        for (int64_t b = 0; b < nb; b++) {
            const tm_block_q4_0 *blk = (const tm_block_q4_0 *)row + b;
            int32_t dot = -8 * asum[b];
            for (int j = 0; j < 16; j++)
                dot += (blk->qs[j] & 15) * q[32 * b + j] + (blk->qs[j] >> 4) * q[32 * b + j + 16];
            acc += (float)dot * (tm_f16_to_f32(blk->d) * ad[b]);
        }
        break;
    case TM_DTYPE_Q4_1: /* sum((q * d + m) * a * da) = d * da * sum(q * a) + m * s */
        for (int64_t b = 0; b < nb; b++) {
            const tm_block_q4_1 *blk = (const tm_block_q4_1 *)row + b;
            int32_t dot = 0;
            for (int j = 0; j < 16; j++)
                dot += (blk->qs[j] & 15) * q[32 * b + j] + (blk->qs[j] >> 4) * q[32 * b + j + 16];
            acc += (float)dot * (tm_f16_to_f32(blk->d) * ad[b]) + tm_f16_to_f32(blk->m) * as[b];
        }
        break;
    case TM_DTYPE_Q5_0: /* as Q4_0 with a fifth bit and -16 */
        for (int64_t b = 0; b < nb; b++) {
            const tm_block_q5_0 *blk = (const tm_block_q5_0 *)row + b;
            uint8_t u[TM_QK];
            tm_q5_unpack(blk->qs, blk->qh, u);
            const int32_t dot = tm_mm_dot_u8_i8(u, q + 32 * b, TM_QK) - 16 * asum[b];
            acc += (float)dot * (tm_f16_to_f32(blk->d) * ad[b]);
        }
        break;
    case TM_DTYPE_Q5_1: /* as Q4_1 with a fifth bit */
        for (int64_t b = 0; b < nb; b++) {
            const tm_block_q5_1 *blk = (const tm_block_q5_1 *)row + b;
            uint8_t u[TM_QK];
            tm_q5_unpack(blk->qs, blk->qh, u);
            const int32_t dot = tm_mm_dot_u8_i8(u, q + 32 * b, TM_QK);
            acc += (float)dot * (tm_f16_to_f32(blk->d) * ad[b]) + tm_f16_to_f32(blk->m) * as[b];
        }
        break;
    case TM_DTYPE_Q8_0:
        for (int64_t b = 0; b < nb; b++) {
            const tm_block_q8_0 *blk = (const tm_block_q8_0 *)row + b;
            const int32_t dot = tm_mm_dot_i8(blk->qs, q + 32 * b, 32);
            acc += (float)dot * (tm_f16_to_f32(blk->d) * ad[b]);
        }
        break;
    default:
        acc = NAN;
        break;
    }
    return acc;
}

/* Rows [r0, r1) of a K-quant weight x all tokens: each super-block is unpacked once and
 * used by every token, whose sum runs over the super-blocks in order in out. Per block:
 *   type-1 (Q2_K, Q4_K, Q5_K)  y.d * (d * sum(sc * q.a) - dmin * sum(m * bsum))
 *   type-0 (Q3_K, Q6_K)        (y.d * d) * sum(sc * q.a)
 * with exact integer sums over the 16-value sub-blocks. */
static void tm_mm_rows_kquant_scalar(const tm_mm_args *a, int64_t r0, int64_t r1) {
    const int64_t row_bytes = tm_dtype_row_bytes(a->dtype, a->n_cols), nsb = a->n_cols / TM_QK_K;
    const int64_t bb = tm_dtype_block_bytes(a->dtype);
    const int type1 = a->dtype == TM_DTYPE_Q2_K || a->dtype == TM_DTYPE_Q4_K || a->dtype == TM_DTYPE_Q5_K;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)a->w->src + r * row_bytes;
        for (int t = 0; t < a->n; t++) a->out[(int64_t)t * a->n_rows + r] = 0.0f;
        for (int64_t i = 0; i < nsb; i++) {
            tm_kblock k;
            tm_kblock_unpack(a->dtype, row + i * bb, &k);
            for (int t = 0; t < a->n; t++) {
                const tm_block_q8_k *y = (const tm_block_q8_k *)a->act->q8k + (int64_t)t * nsb + i;
                int32_t sumi = 0, summ = 0;
                for (int g = 0; g < 16; g++) {
                    sumi += k.sc[g] * tm_mm_dot_i8(k.q + 16 * g, y->qs + 16 * g, 16);
                    summ += k.m[g] * y->bsums[g];
                }
                float *o = &a->out[(int64_t)t * a->n_rows + r];
                if (type1) *o += y->d * (k.d * (float)sumi - k.dmin * (float)summ);
                else *o += y->d * k.d * (float)sumi;
            }
        }
        if (a->bias)
            for (int t = 0; t < a->n; t++) a->out[(int64_t)t * a->n_rows + r] += a->bias[r];
    }
}

void tm_mm_rows_scalar(const tm_mm_args *a, int64_t r0, int64_t r1) {
    if (tm_dtype_is_kquant(a->dtype)) {
        tm_mm_rows_kquant_scalar(a, r0, r1);
        return;
    }
    const int64_t row_bytes = tm_dtype_row_bytes(a->dtype, a->n_cols);
    for (int64_t r = r0; r < r1; r++) {
        const void *row = (const uint8_t *)a->w->src + r * row_bytes;
        const float b = a->bias ? a->bias[r] : 0.0f;
        for (int t = 0; t < a->n; t++)
            a->out[(int64_t)t * a->n_rows + r] = tm_mm_dot_row_scalar(a, row, t) + b;
    }
}

/* Every dtype the CPU multiplies; a dtype missing here is refused by tm_cpu_weight_init. */
static const tm_mm_kernels tm_mm_scalar = {
    .level = TM_SIMD_SCALAR,
    .max_nt = 1,
    .quantize_q8 = tm_mm_quantize_q8_scalar,
    .quantize_q8k = tm_mm_quantize_q8k_scalar,
    .types = {
        /*                 activations    packing tiles rows */
        [TM_DTYPE_F32]  = {TM_MM_ACT_F32, NULL, NULL, tm_mm_rows_scalar},
        [TM_DTYPE_F16]  = {TM_MM_ACT_F32, NULL, NULL, tm_mm_rows_scalar},
        [TM_DTYPE_BF16] = {TM_MM_ACT_F32, NULL, NULL, tm_mm_rows_scalar},
        [TM_DTYPE_Q4_0] = {TM_MM_ACT_Q8,  NULL, NULL, tm_mm_rows_scalar},
        [TM_DTYPE_Q4_1] = {TM_MM_ACT_Q8,  NULL, NULL, tm_mm_rows_scalar},
        [TM_DTYPE_Q5_0] = {TM_MM_ACT_Q8,  NULL, NULL, tm_mm_rows_scalar},
        [TM_DTYPE_Q5_1] = {TM_MM_ACT_Q8,  NULL, NULL, tm_mm_rows_scalar},
        [TM_DTYPE_Q8_0] = {TM_MM_ACT_Q8,  NULL, NULL, tm_mm_rows_scalar},
        [TM_DTYPE_Q2_K] = {TM_MM_ACT_Q8K, NULL, NULL, tm_mm_rows_scalar},
        [TM_DTYPE_Q3_K] = {TM_MM_ACT_Q8K, NULL, NULL, tm_mm_rows_scalar},
        [TM_DTYPE_Q4_K] = {TM_MM_ACT_Q8K, NULL, NULL, tm_mm_rows_scalar},
        [TM_DTYPE_Q5_K] = {TM_MM_ACT_Q8K, NULL, NULL, tm_mm_rows_scalar},
        [TM_DTYPE_Q6_K] = {TM_MM_ACT_Q8K, NULL, NULL, tm_mm_rows_scalar},
    },
};

const tm_mm_kernels *tm_mm_kernels_scalar(void) { return &tm_mm_scalar; }

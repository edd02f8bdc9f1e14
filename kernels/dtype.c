/* dtype.c - dtype table and the scalar reference (de)quantizers.
 *
 * The quantizers round the way llama.cpp's reference quantizers do, so a row quantized
 * here matches a row quantized by ggml bit for bit (tests rely on the exact rules):
 *   Q4_0  d = max / -8 (max = signed value of largest magnitude), q = min(15, (int)(x/d + 8.5))
 *   Q4_1  d = (max - min) / 15, m = min, q = min(15, (int)((x - min)/d + 0.5))
 *   Q8_0  d = amax / 127, q = roundf(x / d)
 *   Q8_1  as Q8_0, plus s = d * sum(q)
 *   Q8_K  iscale = -127 / max (signed), q = min(127, nearest(x * iscale)), d = 1 / iscale
 *   Q5_0  d = max / -16, q = min(31, (int)(x/d + 16.5))
 *   Q5_1  d = (max - min) / 31, m = min, q = min(31, (int)((x - min)/d + 0.5))
 * The K-quants search their scales instead (kernels/quant_k.c).
 * Block layouts: shared/KERNELS.md section 1. */
#include "kernels/dtype.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/quant_k.h"

typedef struct {
    tm_dtype type;
    const char *name;
    int64_t block_size;  /* values per block */
    int64_t block_bytes; /* bytes per block */
} tm_dtype_info;

static const tm_dtype_info tm_dtype_table[] = {
    {TM_DTYPE_F32, "f32", 1, 4},
    {TM_DTYPE_F16, "f16", 1, 2},
    {TM_DTYPE_Q4_0, "q4_0", TM_QK, sizeof(tm_block_q4_0)},
    {TM_DTYPE_Q4_1, "q4_1", TM_QK, sizeof(tm_block_q4_1)},
    {TM_DTYPE_Q5_0, "q5_0", TM_QK, sizeof(tm_block_q5_0)},
    {TM_DTYPE_Q5_1, "q5_1", TM_QK, sizeof(tm_block_q5_1)},
    {TM_DTYPE_Q8_0, "q8_0", TM_QK, sizeof(tm_block_q8_0)},
    {TM_DTYPE_Q8_1, "q8_1", TM_QK, sizeof(tm_block_q8_1)},
    {TM_DTYPE_Q2_K, "q2_k", TM_QK_K, sizeof(tm_block_q2_k)},
    {TM_DTYPE_Q3_K, "q3_k", TM_QK_K, sizeof(tm_block_q3_k)},
    {TM_DTYPE_Q4_K, "q4_k", TM_QK_K, sizeof(tm_block_q4_k)},
    {TM_DTYPE_Q5_K, "q5_k", TM_QK_K, sizeof(tm_block_q5_k)},
    {TM_DTYPE_Q6_K, "q6_k", TM_QK_K, sizeof(tm_block_q6_k)},
    {TM_DTYPE_Q8_K, "q8_k", TM_QK_K, sizeof(tm_block_q8_k)},
    {TM_DTYPE_BF16, "bf16", 1, 2},
};

/* The structs must have the GGUF sizes; a padded struct would corrupt every file read. */
_Static_assert(sizeof(tm_block_q4_0) == 18, "q4_0 block size");
_Static_assert(sizeof(tm_block_q4_1) == 20, "q4_1 block size");
_Static_assert(sizeof(tm_block_q5_0) == 22, "q5_0 block size");
_Static_assert(sizeof(tm_block_q5_1) == 24, "q5_1 block size");
_Static_assert(sizeof(tm_block_q2_k) == 84, "q2_k block size");
_Static_assert(sizeof(tm_block_q3_k) == 110, "q3_k block size");
_Static_assert(sizeof(tm_block_q5_k) == 176, "q5_k block size");
_Static_assert(sizeof(tm_block_q8_0) == 34, "q8_0 block size");
_Static_assert(sizeof(tm_block_q8_1) == 36, "q8_1 block size");
_Static_assert(sizeof(tm_block_q4_k) == 144, "q4_k block size");
_Static_assert(sizeof(tm_block_q6_k) == 210, "q6_k block size");
_Static_assert(sizeof(tm_block_q8_k) == 292, "q8_k block size");

static const tm_dtype_info *tm_dtype_find(int type_id) {
    for (size_t i = 0; i < TM_ARRAY_LEN(tm_dtype_table); i++)
        if ((int)tm_dtype_table[i].type == type_id) return &tm_dtype_table[i];
    return NULL;
}

int tm_dtype_valid(int type_id) { return tm_dtype_find(type_id) != NULL; }

const char *tm_dtype_name(tm_dtype t) {
    const tm_dtype_info *info = tm_dtype_find((int)t);
    return info ? info->name : "unknown";
}

int tm_dtype_from_name(const char *name) {
    if (!name) return -1;
    for (size_t i = 0; i < TM_ARRAY_LEN(tm_dtype_table); i++) {
        const char *a = tm_dtype_table[i].name, *b = name;
        while (*a && *b) {
            char c = *b;
            if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
            if (c != *a) break;
            a++, b++;
        }
        if (!*a && !*b) return (int)tm_dtype_table[i].type;
    }
    return -1;
}

int64_t tm_dtype_block_size(tm_dtype t) {
    const tm_dtype_info *info = tm_dtype_find((int)t);
    return info ? info->block_size : 0;
}

int64_t tm_dtype_block_bytes(tm_dtype t) {
    const tm_dtype_info *info = tm_dtype_find((int)t);
    return info ? info->block_bytes : 0;
}

int64_t tm_dtype_row_bytes(tm_dtype t, int64_t n) {
    const tm_dtype_info *info = tm_dtype_find((int)t);
    if (!info || n < 0 || n % info->block_size) return -1;
    int64_t blocks = n / info->block_size;
    if (blocks > INT64_MAX / info->block_bytes) return -1; /* untrusted sizes from files */
    return blocks * info->block_bytes;
}

/* ---- dequantization ---------------------------------------------------------------- */

int tm_dtype_is_kquant(tm_dtype t) {
    return t == TM_DTYPE_Q2_K || t == TM_DTYPE_Q3_K || t == TM_DTYPE_Q4_K || t == TM_DTYPE_Q5_K ||
           t == TM_DTYPE_Q6_K;
}

/* Q4_K and Q5_K pack 8 six-bit (scale, min) pairs into 12 bytes; see KERNELS.md section 1. */
static void tm_q4_k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q4_K / Q5_K: sub-block j (32 values) is chunk j / 2 of qs, low nibbles if j is even;
 * Q5_K's fifth bit of value 32j + l is bit j of qh[l]. */
static void tm_unpack_q45_k(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, tm_kblock *o) {
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        tm_q4_k_scale_min(j, scales, &sc, &m);
        o->sc[2 * j] = o->sc[2 * j + 1] = sc;
        o->m[2 * j] = o->m[2 * j + 1] = m;
        const uint8_t *q = qs + 32 * (j / 2);
        for (int l = 0; l < 32; l++) {
            int v = (j & 1) ? q[l] >> 4 : q[l] & 15;
            if (qh) v |= ((qh[l] >> j) & 1) << 4;
            o->q[32 * j + l] = (int8_t)v;
        }
    }
}

/* Q2_K / Q3_K: value 128n + 32j + l (n < 2, j < 4, l < 32) is bits 2j..2j+1 of
 * qs[32n + l]; Q3_K subtracts 4 unless bit 4n + j of hmask[l] is set. */
static void tm_unpack_q23_k(const uint8_t *qs, const uint8_t *hmask, tm_kblock *o) {
    for (int n = 0; n < 2; n++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) {
                int v = (qs[32 * n + l] >> (2 * j)) & 3;
                if (hmask && !((hmask[l] >> (4 * n + j)) & 1)) v -= 4;
                o->q[128 * n + 32 * j + l] = (int8_t)v;
            }
}

void tm_kblock_unpack(tm_dtype t, const void *block, tm_kblock *o) {
    memset(o->m, 0, sizeof o->m);
    o->dmin = 0.0f;
    switch (t) {
    case TM_DTYPE_Q2_K: {
        const tm_block_q2_k *b = block;
        tm_unpack_q23_k(b->qs, NULL, o);
        for (int k = 0; k < 16; k++) o->sc[k] = b->scales[k] & 15, o->m[k] = b->scales[k] >> 4;
        o->d = tm_f16_to_f32(b->d), o->dmin = tm_f16_to_f32(b->dmin);
        break;
    }
    case TM_DTYPE_Q3_K: {
        const tm_block_q3_k *b = block;
        tm_unpack_q23_k(b->qs, b->hmask, o);
        /* scale k: 4 low bits from the nibbles of bytes 0-7 (low for k < 8, high after),
         * 2 high bits from bytes 8-11: bits 2(k/4).. of byte 8 + k%4 */
        for (int k = 0; k < 16; k++) {
            const int lo = k < 8 ? b->scales[k] & 15 : b->scales[k - 8] >> 4;
            const int hi = (b->scales[8 + k % 4] >> (2 * (k / 4))) & 3;
            o->sc[k] = (int16_t)((lo | (hi << 4)) - 32);
        }
        o->d = tm_f16_to_f32(b->d);
        break;
    }
    case TM_DTYPE_Q4_K: {
        const tm_block_q4_k *b = block;
        tm_unpack_q45_k(b->scales, b->qs, NULL, o);
        o->d = tm_f16_to_f32(b->d), o->dmin = tm_f16_to_f32(b->dmin);
        break;
    }
    case TM_DTYPE_Q5_K: {
        const tm_block_q5_k *b = block;
        tm_unpack_q45_k(b->scales, b->qs, b->qh, o);
        o->d = tm_f16_to_f32(b->d), o->dmin = tm_f16_to_f32(b->dmin);
        break;
    }
    case TM_DTYPE_Q6_K: { /* KERNELS.md section 1: two halves of 128 values */
        const tm_block_q6_k *b = block;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
            int8_t *q = o->q + 128 * h;
            for (int l = 0; l < 32; l++) {
                q[l] = (int8_t)(((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32);
                q[l + 32] = (int8_t)(((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32);
                q[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        }
        for (int k = 0; k < 16; k++) o->sc[k] = b->scales[k];
        o->d = tm_f16_to_f32(b->d);
        break;
    }
    default:
        memset(o, 0, sizeof *o);
        o->d = NAN;
        break;
    }
}

/* y = d * sc * q - dmin * m per value, with d * sc and dmin * m rounded to f32 first,
 * which is the order of ggml's dequantizers. */
static void tm_dequant_k(tm_dtype t, const void *block, float *y) {
    tm_kblock k;
    tm_kblock_unpack(t, block, &k);
    for (int g = 0; g < 16; g++) {
        const float dl = k.d * (float)k.sc[g], ml = k.dmin * (float)k.m[g];
        for (int l = 0; l < 16; l++) y[16 * g + l] = dl * (float)k.q[16 * g + l] - ml;
    }
}

/* Value j: the low nibble (j < 16) or high nibble of qs[j % 16], with bit j of qh (a
 * little-endian u32) as its fifth bit. */
void tm_q5_unpack(const uint8_t qs[16], const uint8_t qh4[4], uint8_t out[32]) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    for (int j = 0; j < 16; j++) {
        out[j] = (uint8_t)((qs[j] & 15) | (((qh >> j) & 1) << 4));
        out[j + 16] = (uint8_t)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
    }
}

void tm_dequantize_row(tm_dtype t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case TM_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case TM_DTYPE_F16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = tm_f16_to_f32(s[i]);
        break;
    }
    case TM_DTYPE_BF16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = tm_bf16_to_f32(s[i]);
        break;
    }
    case TM_DTYPE_Q4_0: {
        const tm_block_q4_0 *b = src;
        for (int64_t i = 0; i < n / TM_QK; i++, b++, dst += TM_QK) {
            const float d = tm_f16_to_f32(b->d);
            for (int j = 0; j < 16; j++) {
                dst[j] = ((b->qs[j] & 0x0f) - 8) * d;
                dst[j + 16] = ((b->qs[j] >> 4) - 8) * d;
            }
        }
        break;
    }
    case TM_DTYPE_Q4_1: {
        const tm_block_q4_1 *b = src;
        for (int64_t i = 0; i < n / TM_QK; i++, b++, dst += TM_QK) {
            const float d = tm_f16_to_f32(b->d), m = tm_f16_to_f32(b->m);
            for (int j = 0; j < 16; j++) {
                dst[j] = (b->qs[j] & 0x0f) * d + m;
                dst[j + 16] = (b->qs[j] >> 4) * d + m;
            }
        }
        break;
    }
    case TM_DTYPE_Q5_0: {
        const tm_block_q5_0 *b = src;
        for (int64_t i = 0; i < n / TM_QK; i++, b++, dst += TM_QK) {
            const float d = tm_f16_to_f32(b->d);
            uint8_t u[TM_QK];
            tm_q5_unpack(b->qs, b->qh, u);
            for (int j = 0; j < TM_QK; j++) dst[j] = (u[j] - 16) * d;
        }
        break;
    }
    case TM_DTYPE_Q5_1: {
        const tm_block_q5_1 *b = src;
        for (int64_t i = 0; i < n / TM_QK; i++, b++, dst += TM_QK) {
            const float d = tm_f16_to_f32(b->d), m = tm_f16_to_f32(b->m);
            uint8_t u[TM_QK];
            tm_q5_unpack(b->qs, b->qh, u);
            for (int j = 0; j < TM_QK; j++) dst[j] = u[j] * d + m;
        }
        break;
    }
    case TM_DTYPE_Q8_0: {
        const tm_block_q8_0 *b = src;
        for (int64_t i = 0; i < n / TM_QK; i++, b++, dst += TM_QK) {
            const float d = tm_f16_to_f32(b->d);
            for (int j = 0; j < TM_QK; j++) dst[j] = b->qs[j] * d;
        }
        break;
    }
    case TM_DTYPE_Q8_1: {
        const tm_block_q8_1 *b = src;
        for (int64_t i = 0; i < n / TM_QK; i++, b++, dst += TM_QK) {
            const float d = tm_f16_to_f32(b->d);
            for (int j = 0; j < TM_QK; j++) dst[j] = b->qs[j] * d;
        }
        break;
    }
    case TM_DTYPE_Q2_K:
    case TM_DTYPE_Q3_K:
    case TM_DTYPE_Q4_K:
    case TM_DTYPE_Q5_K:
    case TM_DTYPE_Q6_K: {
        const int64_t bb = tm_dtype_block_bytes(t);
        for (int64_t i = 0; i < n / TM_QK_K; i++) tm_dequant_k(t, (const uint8_t *)src + i * bb, dst + i * TM_QK_K);
        break;
    }
    case TM_DTYPE_Q8_K: {
        const tm_block_q8_k *b = src;
        for (int64_t i = 0; i < n / TM_QK_K; i++, b++, dst += TM_QK_K)
            for (int j = 0; j < TM_QK_K; j++) dst[j] = b->d * b->qs[j];
        break;
    }
    default:
        /* Unknown type: leave NaN so a caller's mistake cannot pass silently. */
        for (int64_t i = 0; i < n; i++) dst[i] = NAN;
        break;
    }
}

/* ---- quantization (reference) ------------------------------------------------------ */

static void tm_quant_q4_0(const float *x, tm_block_q4_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += TM_QK) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < TM_QK; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
        const float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = tm_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            const int q0 = TM_MIN(15, (int)(int8_t)(x[j] * id + 8.5f));
            const int q1 = TM_MIN(15, (int)(int8_t)(x[j + 16] * id + 8.5f));
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void tm_quant_q4_1(const float *x, tm_block_q4_1 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += TM_QK) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < TM_QK; j++) min = TM_MIN(min, x[j]), max = TM_MAX(max, x[j]);
        const float d = (max - min) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = tm_f32_to_f16(d);
        y[i].m = tm_f32_to_f16(min);
        for (int j = 0; j < 16; j++) {
            const int q0 = TM_MIN(15, (int)(int8_t)((x[j] - min) * id + 0.5f));
            const int q1 = TM_MIN(15, (int)(int8_t)((x[j + 16] - min) * id + 0.5f));
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* The fifth bits of a Q5 block's values, as its qh bytes (bit j = value j). */
static void tm_q5_store(const int *q, uint8_t *qs, uint8_t *qh4) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 15) | ((q[j + 16] & 15) << 4));
        qh |= (uint32_t)((q[j] >> 4) & 1) << j;
        qh |= (uint32_t)((q[j + 16] >> 4) & 1) << (j + 16);
    }
    memcpy(qh4, &qh, 4);
}

static void tm_quant_q5_0(const float *x, tm_block_q5_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += TM_QK) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < TM_QK; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
        const float d = max / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = tm_f32_to_f16(d);
        int q[TM_QK];
        for (int j = 0; j < TM_QK; j++) q[j] = TM_MIN(31, (int)(int8_t)(x[j] * id + 16.5f));
        tm_q5_store(q, y[i].qs, y[i].qh);
    }
}

static void tm_quant_q5_1(const float *x, tm_block_q5_1 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += TM_QK) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < TM_QK; j++) min = TM_MIN(min, x[j]), max = TM_MAX(max, x[j]);
        const float d = (max - min) / 31.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = tm_f32_to_f16(d);
        y[i].m = tm_f32_to_f16(min);
        int q[TM_QK];
        for (int j = 0; j < TM_QK; j++) q[j] = TM_MIN(31, (int)(int8_t)((x[j] - min) * id + 0.5f));
        tm_q5_store(q, y[i].qs, y[i].qh);
    }
}

/* Q8_0 and Q8_1 share the rounding; Q8_1 also stores s = d * sum(q). */
static float tm_quant_8bit_block(const float *x, int8_t *q, int *sum) {
    float amax = 0.0f;
    for (int j = 0; j < TM_QK; j++) amax = TM_MAX(amax, fabsf(x[j]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    int s = 0;
    for (int j = 0; j < TM_QK; j++) {
        q[j] = (int8_t)roundf(x[j] * id);
        s += q[j];
    }
    *sum = s;
    return d;
}

static void tm_quant_q8_k(const float *x, tm_block_q8_k *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += TM_QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < TM_QK_K; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        /* Signed scale: the largest-magnitude value maps to exactly -127, so the other
         * sign may round to +128 and is clamped. */
        const float iscale = -127.0f / max;
        if (isinf(iscale)) { /* |max| below ~3.7e-37: too small to invert; zero, as the GPU does */
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        for (int j = 0; j < TM_QK_K; j++) {
            const long v = lrintf(iscale * x[j]);
            y[i].qs[j] = (int8_t)TM_MIN(127, v);
        }
        for (int g = 0; g < TM_QK_K / 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += y[i].qs[16 * g + j];
            y[i].bsums[g] = (int16_t)s;
        }
        y[i].d = 1.0f / iscale;
    }
}

int tm_quantize_row(tm_dtype t, const float *src, void *dst, int64_t n) {
    if (!tm_dtype_valid((int)t)) return TM_EUNSUPPORTED;
    if (n % tm_dtype_block_size(t)) return TM_EINVAL;
    if (tm_dtype_is_kquant(t)) {
        tm_quantize_k_row(t, src, dst, n);
        return TM_OK;
    }
    switch (t) {
    case TM_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return TM_OK;
    case TM_DTYPE_F16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = tm_f32_to_f16(src[i]);
        return TM_OK;
    }
    case TM_DTYPE_BF16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = tm_f32_to_bf16(src[i]);
        return TM_OK;
    }
    case TM_DTYPE_Q4_0:
        tm_quant_q4_0(src, dst, n / TM_QK);
        return TM_OK;
    case TM_DTYPE_Q4_1:
        tm_quant_q4_1(src, dst, n / TM_QK);
        return TM_OK;
    case TM_DTYPE_Q5_0:
        tm_quant_q5_0(src, dst, n / TM_QK);
        return TM_OK;
    case TM_DTYPE_Q5_1:
        tm_quant_q5_1(src, dst, n / TM_QK);
        return TM_OK;
    case TM_DTYPE_Q8_0: {
        tm_block_q8_0 *y = dst;
        for (int64_t i = 0; i < n / TM_QK; i++) {
            int sum;
            y[i].d = tm_f32_to_f16(tm_quant_8bit_block(src + i * TM_QK, y[i].qs, &sum));
        }
        return TM_OK;
    }
    case TM_DTYPE_Q8_1: {
        tm_block_q8_1 *y = dst;
        for (int64_t i = 0; i < n / TM_QK; i++) {
            int sum;
            const float d = tm_quant_8bit_block(src + i * TM_QK, y[i].qs, &sum);
            y[i].d = tm_f32_to_f16(d);
            y[i].s = tm_f32_to_f16(d * (float)sum);
        }
        return TM_OK;
    }
    case TM_DTYPE_Q8_K:
        tm_quant_q8_k(src, dst, n / TM_QK_K);
        return TM_OK;
    default:
        return TM_EUNSUPPORTED;
    }
}

/* ---- KV cache element types (kernels/backend.h) ---- */

static const char *const tm_kv_dtype_names[] = {[TM_KV_F16] = "f16", [TM_KV_INT8] = "int8"};

const char *tm_kv_dtype_name(tm_kv_dtype t) {
    return (unsigned)t < TM_ARRAY_LEN(tm_kv_dtype_names) ? tm_kv_dtype_names[t] : NULL;
}

int tm_kv_dtype_from_name(const char *name) {
    for (size_t i = 0; name && i < TM_ARRAY_LEN(tm_kv_dtype_names); i++)
        if (!strcmp(name, tm_kv_dtype_names[i])) return (int)i;
    return -1;
}

/* dtype.c - dtype table and the scalar reference (de)quantizers.
 *
 * The quantizers round the way llama.cpp's reference quantizers do, so a row quantized
 * here matches a row quantized by ggml bit for bit (tests rely on the exact rules):
 *   Q4_0  d = max / -8 (max = signed value of largest magnitude), q = min(15, (int)(x/d + 8.5))
 *   Q4_1  d = (max - min) / 15, m = min, q = min(15, (int)((x - min)/d + 0.5))
 *   Q8_0  d = amax / 127, q = roundf(x / d)
 *   Q8_1  as Q8_0, plus s = d * sum(q)
 *   Q8_K  iscale = -127 / max (signed), q = min(127, nearest(x * iscale)), d = 1 / iscale
 * Block layouts: shared/KERNELS.md section 1. */
#include "kernels/dtype.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/common.h"
#include "kernels/backend.h"

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
    {TM_DTYPE_Q8_0, "q8_0", TM_QK, sizeof(tm_block_q8_0)},
    {TM_DTYPE_Q8_1, "q8_1", TM_QK, sizeof(tm_block_q8_1)},
    {TM_DTYPE_Q4_K, "q4_k", TM_QK_K, sizeof(tm_block_q4_k)},
    {TM_DTYPE_Q6_K, "q6_k", TM_QK_K, sizeof(tm_block_q6_k)},
    {TM_DTYPE_Q8_K, "q8_k", TM_QK_K, sizeof(tm_block_q8_k)},
    {TM_DTYPE_BF16, "bf16", 1, 2},
};

/* The structs must have the GGUF sizes; a padded struct would corrupt every file read. */
_Static_assert(sizeof(tm_block_q4_0) == 18, "q4_0 block size");
_Static_assert(sizeof(tm_block_q4_1) == 20, "q4_1 block size");
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

/* Q4_K packs 8 six-bit (scale, min) pairs into 12 bytes; see KERNELS.md section 1. */
static void tm_q4_k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void tm_dequant_q4_k(const tm_block_q4_k *b, float *y) {
    const float d = tm_f16_to_f32(b->d), dmin = tm_f16_to_f32(b->dmin);
    for (int c = 0; c < 4; c++) { /* chunk c: 32 bytes -> values 64c..64c+63 */
        const uint8_t *q = b->qs + 32 * c;
        uint8_t sc, m;
        tm_q4_k_scale_min(2 * c, b->scales, &sc, &m);
        const float d1 = d * sc, m1 = dmin * m;
        tm_q4_k_scale_min(2 * c + 1, b->scales, &sc, &m);
        const float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++) y[64 * c + l] = d1 * (q[l] & 0x0f) - m1;
        for (int l = 0; l < 32; l++) y[64 * c + 32 + l] = d2 * (q[l] >> 4) - m2;
    }
}

static void tm_dequant_q6_k(const tm_block_q6_k *b, float *y) {
    const float d = tm_f16_to_f32(b->d);
    const uint8_t *ql = b->ql, *qh = b->qh;
    const int8_t *sc = b->scales;
    for (int half = 0; half < 2; half++) {
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int q1 = (int)((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = (int)((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
        y += 128, ql += 64, qh += 32, sc += 8;
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
    case TM_DTYPE_Q4_K: {
        const tm_block_q4_k *b = src;
        for (int64_t i = 0; i < n / TM_QK_K; i++) tm_dequant_q4_k(b + i, dst + i * TM_QK_K);
        break;
    }
    case TM_DTYPE_Q6_K: {
        const tm_block_q6_k *b = src;
        for (int64_t i = 0; i < n / TM_QK_K; i++) tm_dequant_q6_k(b + i, dst + i * TM_QK_K);
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
    if (t == TM_DTYPE_Q4_K || t == TM_DTYPE_Q6_K || !tm_dtype_valid((int)t)) return TM_EUNSUPPORTED;
    if (n % tm_dtype_block_size(t)) return TM_EINVAL;
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

/* ops_scalar.c - the scalar reference kernels of the CPU ops and their table: rmsnorm,
 * add, silu_mul, gelu_mul, scale, rope, f32 -> f16, the int8 KV quantization and one attention chunk.
 * Portable C, written for reading: every SIMD table (ops_avx2.c, ops_avx512.c,
 * ops_neon.c) is tested against this one (tests/kernels/test_ops.cc and
 * test_attention.cc). The drivers that run a table over the thread pool are ops.c
 * and attention.c. */
#include <math.h>
#include <stdint.h>

#include "common/common.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

static void tm_rmsnorm_scalar(float *out, const float *x, const float *w, int dim, float eps) {
    double ss = 0.0; /* double: the reference should not lose bits over long rows */
    for (int i = 0; i < dim; i++) ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / dim + eps));
    for (int i = 0; i < dim; i++) out[i] = x[i] * r * w[i];
}

static void tm_add_scalar(float *out, const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static void tm_silu_mul_scalar(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* GELU's tanh form, as its definition reads (Gemma's feed-forward). */
static void tm_gelu_mul_scalar(float *out, const float *gate, const float *up, int64_t n) {
    const float c = 0.7978845608028654f; /* sqrt(2 / pi) */
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = 0.5f * g * (1.0f + tanhf(c * (g + 0.044715f * g * g * g))) * up[i];
    }
}

static void tm_scale_scalar(float *out, const float *x, int64_t n, float s, float cap) {
    if (cap > 0.0f) {
        const float k = s / cap;
        for (int64_t i = 0; i < n; i++) out[i] = cap * tanhf(x[i] * k);
        return;
    }
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * s;
}

static void tm_rope_scalar(float *x, int n_heads, int head_dim, int n_dims, int neox,
                           const float *cos_t, const float *sin_t) {
    int half = n_dims / 2;
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (int64_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            /* neox rotates (i, i + half); llama GGUF rotates adjacent pairs (2i, 2i + 1). */
            int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
            float x0 = xh[i0], x1 = xh[i1];
            xh[i0] = x0 * cos_t[i] - x1 * sin_t[i];
            xh[i1] = x0 * sin_t[i] + x1 * cos_t[i];
        }
    }
}

static void tm_f32_to_f16_scalar(uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = tm_f32_to_f16(src[i]);
}

void tm_cpu_attn_chunk_scalar(const tm_attn_chunk *a) {
    const int hd = a->head_dim;
    for (int i = 0; i < a->nq; i++) {
        const float *qi = a->q + (int64_t)(i / a->n_group) * a->q_row_stride + (i % a->n_group) * hd;
        float *s = a->scores + (int64_t)i * TM_ATTN_CHUNK;
        const int nv = a->n_vis[i];
        if (nv == 0) {
            a->m[i] = -INFINITY;
            a->l[i] = 0.0f;
            continue;
        }
        /* scores of the visible keys, segment by segment */
        for (int seg = 0, j0 = 0; seg < a->n_seg && j0 < nv; j0 += a->seg_len[seg++]) {
            for (int j = 0; j < a->seg_len[seg] && j0 + j < nv; j++) {
                float dot = 0.0f;
                if (a->k8) { /* ops.h: u8 in groups of 4 dims, and int8 queries */
                    const uint8_t *kj = a->k8[seg] + 4 * j;
                    const int8_t *q8 = a->q8 + (int64_t)i * hd;
                    int32_t idot = -128 * a->q8sum[i];
                    for (int d = 0; d < hd; d++) idot += q8[d] * kj[(int64_t)(d / 4) * 4 * a->k_dim_stride + d % 4];
                    dot = a->ks[seg][j] * (a->q8s[i] * (float)idot);
                } else {
                    const uint16_t *kj = a->k[seg] + j;
                    for (int d = 0; d < hd; d++) dot += qi[d] * tm_f16_to_f32(kj[(int64_t)d * a->k_dim_stride]);
                }
                s[j0 + j] = a->scale * dot;
            }
        }
        if (!tm_cpu_attn_shape_scores(a, i)) continue; /* every visible key is outside the window */
        float mx = -INFINITY;
        for (int j = 0; j < nv; j++) mx = s[j] > mx ? s[j] : mx;
        float l = 0.0f;
        for (int j = 0; j < nv; j++) {
            s[j] = expf(s[j] - mx);
            l += s[j];
        }
        /* o = sum_j p_j v_j, accumulated in f32 */
        float *o = a->o + (int64_t)i * hd;
        for (int d = 0; d < hd; d++) o[d] = 0.0f;
        for (int seg = 0, j0 = 0; seg < a->n_seg && j0 < nv; j0 += a->seg_len[seg++]) {
            for (int j = 0; j < a->seg_len[seg] && j0 + j < nv; j++) {
                if (a->v8) {
                    const int8_t *vj = a->v8[seg] + (int64_t)j * hd;
                    const float p = s[j0 + j] * a->vs[seg][j];
                    for (int d = 0; d < hd; d++) o[d] += p * (float)vj[d];
                    continue;
                }
                const uint16_t *vj = a->v[seg] + (int64_t)j * hd;
                for (int d = 0; d < hd; d++) o[d] += s[j0 + j] * tm_f16_to_f32(vj[d]);
            }
        }
        a->m[i] = mx;
        a->l[i] = l;
    }
}

int tm_cpu_attn_shape_scores(const tm_attn_chunk *a, int i) {
    float *s = a->scores + (int64_t)i * TM_ATTN_CHUNK;
    const int nv = a->n_vis[i], lo = a->n_skip ? TM_MIN(a->n_skip[i], nv) : 0;
    /* exp(-inf - m) is exactly 0: the masked keys add nothing to l or o, so a row's bits
     * do not depend on how many masked keys share its chunk */
    if (lo == nv) { /* nothing left: report no keys, and give P.V zeros to add */
        for (int j = 0; j < nv; j++) s[j] = 0.0f;
        for (int d = 0; d < a->head_dim; d++) a->o[(int64_t)i * a->head_dim + d] = 0.0f;
        a->m[i] = -INFINITY;
        a->l[i] = 0.0f;
        return 0;
    }
    for (int j = 0; j < lo; j++) s[j] = -INFINITY;
    if (a->softcap > 0.0f) {
        const float k = 1.0f / a->softcap;
        for (int j = lo; j < nv; j++) s[j] = a->softcap * tanhf(s[j] * k);
    }
    return 1;
}

void tm_cpu_attn_weigh_values(const tm_attn_chunk *a, int i) {
    float *p = a->scores + (int64_t)i * TM_ATTN_CHUNK;
    for (int seg = 0, j0 = 0; seg < a->n_seg && j0 < a->n_vis[i]; j0 += a->seg_len[seg++])
        for (int j = 0; j < TM_MIN(a->seg_len[seg], a->n_vis[i] - j0); j++) p[j0 + j] *= a->vs[seg][j];
}

void tm_cpu_kv_quantize(const float *x, int n, int8_t *q, float *scale) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (!(ax <= amax) && amax == amax) amax = ax; /* a NaN sticks */
    }
    const float d = amax / 127.0f;
    if (!(d < INFINITY)) { /* NaN or inf in x: a NaN scale, so reads are NaN as with f16 */
        for (int i = 0; i < n; i++) q[i] = 0;
        *scale = NAN;
        return;
    }
    /* a zero vector, or one so small (max < ~4e-37) that 1 / d overflows: all q = 0 */
    const float id = d != 0.0f && 1.0f / d < INFINITY ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++) q[i] = (int8_t)lrintf(x[i] * id); /* |x * id| <= 127 */
    *scale = d;
}

static const tm_cpu_kernels tm_kernels_scalar = {
    .level = TM_SIMD_SCALAR,
    .rmsnorm = tm_rmsnorm_scalar,
    .add = tm_add_scalar,
    .silu_mul = tm_silu_mul_scalar,
    .gelu_mul = tm_gelu_mul_scalar,
    .scale = tm_scale_scalar,
    .rope = tm_rope_scalar,
    .f32_to_f16 = tm_f32_to_f16_scalar,
    .attn_chunk = tm_cpu_attn_chunk_scalar,
    .kv_quantize = tm_cpu_kv_quantize,
};

const tm_cpu_kernels *tm_cpu_kernels_scalar(void) { return &tm_kernels_scalar; }

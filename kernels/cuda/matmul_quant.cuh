/* matmul_quant.cuh - activations quantized to 8 bits for the integer matmul kernels.
 * Part of the matmul family (matmul.cuh).
 *
 * The formats are the CPU reference's (kernels/cpu/matmul.c), bit for bit, so that the
 * GPU multiplies the same integers as the CPU and the two differ only in the order of the
 * f32 sums:
 *   legacy (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights): per block of 32 values d = amax / 127 (f32, 0 for
 *     a zero block or one too small to invert), q = round-half-even(x / d), sum = sum(q);
 *   K (Q4_K, Q5_K, Q6_K weights), the CPU's Q8_K: per super-block of 256 values the signed
 *     value of largest magnitude max (the first one, in index order), iscale = -127 / max,
 *     q = min(127, round-half-even(x * iscale)), d = 1 / iscale (all 0 for a zero block,
 *     or one too small to invert); the sums per 32.
 * Layout (tm_mm_act), for n tokens of K values, nb = K / 32 blocks, nbp = nb rounded up to
 * 8 (so that a 256-value step's scales are one aligned 32-byte run):
 *   q   (n, K)   int8, row t at q + t K (16-byte aligned: K is a multiple of 32)
 *   d   (n, nbp) f32, per 32 values (K: the super-block's d, repeated 8 times)
 *   sum (n, nbp) int32, per 32 values */
#ifndef TM_CUDA_MATMUL_QUANT_CUH
#define TM_CUDA_MATMUL_QUANT_CUH

#include <math.h>

#include "kernels/cuda/backend_cuda.cuh"

/* Quantized activations as the kernels see them (by value). */
typedef struct tm_mm_act {
    const int8_t *q;  /* (n, n_cols) */
    const float *d;   /* (n, nbp) */
    const int *sum;   /* (n, nbp) */
    int64_t n_cols;   /* K */
    int nbp;          /* row stride of d and sum */
} tm_mm_act;

/* Device bytes of the three arrays for n tokens, each part 256-byte aligned. */
static size_t tm_mm_act_bytes(int n, int64_t n_cols, size_t *q_bytes, size_t *s_bytes) {
    const int64_t nbp = (n_cols / TM_QK + 7) / 8 * 8;
    *q_bytes = ((size_t)n * n_cols + 255) / 256 * 256;
    *s_bytes = ((size_t)n * nbp * 4 + 255) / 256 * 256;
    return *q_bytes + 2 * *s_bytes;
}

__device__ __forceinline__ uint32_t tm_mm_pack_s8x4(int a, int b, int c, int e) {
    return (uint32_t)(a & 0xff) | (uint32_t)(b & 0xff) << 8 | (uint32_t)(c & 0xff) << 16 | (uint32_t)(e & 0xff) << 24;
}

/* x[0..3], one 16-byte load when x16 (the activations are 16-byte aligned). */
__device__ __forceinline__ float4 tm_mm_load4(const float *x, bool x16) {
    if (x16) return *(const float4 *)x;
    return make_float4(x[0], x[1], x[2], x[3]);
}

/* Legacy blocks of 32: 8 lanes per block, 4 values (one float4) per lane. Every lane of a
 * warp runs the shuffles (lanes past the end carry zeros) so that the full masks hold. */
static __global__ void tm_mm_quantize_kernel(int8_t *q, float *d, int *sum, const float *x, int n, int64_t n_cols,
                                             int nbp, bool x16) {
    const int64_t nb = n_cols / 32;
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t blk = gid >> 3, tok = blk / nb, b = blk % nb;
    const int j = (int)(gid & 7);
    const bool live = tok < n;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (live) v = tm_mm_load4(x + tok * n_cols + 32 * b + 4 * j, x16);
    float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
    for (int o = 4; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float db = amax / 127.0f, inv = 1.0f / db;
    const float id = db != 0.0f && inv < INFINITY ? inv : 0.0f;
    const int q0 = __float2int_rn(v.x * id), q1 = __float2int_rn(v.y * id);
    const int q2 = __float2int_rn(v.z * id), q3 = __float2int_rn(v.w * id);
    int s = q0 + q1 + q2 + q3;
    for (int o = 4; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (!live) return;
    *(uint32_t *)(q + tok * n_cols + 32 * b + 4 * j) = tm_mm_pack_s8x4(q0, q1, q2, q3);
    if (j == 0) {
        d[tok * nbp + b] = db;
        sum[tok * nbp + b] = s;
    }
}

/* Q8_K super-blocks of 256: one warp each, 8 consecutive values per lane. */
static __global__ void tm_mm_quantize_k_kernel(int8_t *q, float *d, int *sum, const float *x, int n, int64_t n_cols,
                                               int nbp, bool x16) {
    const int64_t nsb = n_cols / 256;
    const int64_t sbg = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; /* one per warp */
    const int lane = threadIdx.x & 31;
    if (sbg >= (int64_t)n * nsb) return; /* the whole warp */
    const int64_t tok = sbg / nsb, sb = sbg % nsb;
    const float *xs = x + tok * n_cols + 256 * sb + 8 * lane;
    const float4 v0 = tm_mm_load4(xs, x16), v1 = tm_mm_load4(xs + 4, x16);
    const float v[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
    /* the first value of largest magnitude (a NaN never compares larger) */
    float amax = 0.0f, max = 0.0f;
    int idx = 1 << 30;
    for (int i = 0; i < 8; i++)
        if (amax < fabsf(v[i])) amax = fabsf(v[i]), max = v[i], idx = 8 * lane + i;
    for (int o = 16; o > 0; o >>= 1) {
        const float oa = __shfl_xor_sync(0xffffffffu, amax, o), om = __shfl_xor_sync(0xffffffffu, max, o);
        const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (oa > amax || (oa == amax && oi < idx)) amax = oa, max = om, idx = oi;
    }
    int qv[8], s = 0;
    float db = 0.0f;
    const float iscale = -127.0f / max;
    /* A zero block gives zeros. So does one whose max is too small to invert (below
     * ~3.7e-37, iscale infinite): the CPU's lrintf of an infinite product gives a quant
     * byte 0 and d = 1 / iscale = -0 there, so the block adds nothing on either side. */
    if (amax != 0.0f && fabsf(iscale) < INFINITY) {
        for (int i = 0; i < 8; i++) {
            const int t = __float2int_rn(iscale * v[i]);
            qv[i] = t < 127 ? t : 127;
            s += qv[i];
        }
        db = 1.0f / iscale;
    } else {
        for (int i = 0; i < 8; i++) qv[i] = 0;
    }
    /* lanes 4c .. 4c + 3 hold the 32 values of block c */
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    uint2 packed = make_uint2(tm_mm_pack_s8x4(qv[0], qv[1], qv[2], qv[3]), tm_mm_pack_s8x4(qv[4], qv[5], qv[6], qv[7]));
    *(uint2 *)(q + tok * n_cols + 256 * sb + 8 * lane) = packed;
    if ((lane & 3) == 0) {
        d[tok * nbp + 8 * sb + (lane >> 2)] = db;
        sum[tok * nbp + 8 * sb + (lane >> 2)] = s;
    }
}

/* Quantizes x (n, n_cols) f32 into the scratch: the legacy format (kq = 0) or Q8_K
 * (kq = 1, n_cols a multiple of 256). *act describes the result. */
static cudaError_t tm_mm_quantize(const tm_cuda_ctx *ctx, tm_mm_act *act, const float *x, int n, int64_t n_cols,
                                  int kq) {
    size_t q_bytes, s_bytes;
    const size_t bytes = tm_mm_act_bytes(n, n_cols, &q_bytes, &s_bytes);
    void *scratch;
    CUDA_TRY(tm_cuda_scratch_get(ctx, bytes, &scratch));
    uint8_t *p = (uint8_t *)scratch;
    int8_t *q = (int8_t *)p;
    float *d = (float *)(p + q_bytes);
    int *sum = (int *)(p + q_bytes + s_bytes);
    const int nbp = (int)((n_cols / TM_QK + 7) / 8 * 8);
    const int threads = 256;
    const bool x16 = ((uintptr_t)x & 15) == 0;
    if (kq) {
        const int64_t warps = (int64_t)n * (n_cols / 256);
        CUDA_TRY(TM_LAUNCH(tm_mm_quantize_k_kernel, tm_cdiv(warps * 32, threads), threads, 0, ctx->stream, q, d, sum, x,
                           n, n_cols, nbp, x16));
    } else {
        const int64_t lanes = (int64_t)n * (n_cols / 32) * 8;
        CUDA_TRY(TM_LAUNCH(tm_mm_quantize_kernel, tm_cdiv(lanes, threads), threads, 0, ctx->stream, q, d, sum, x, n,
                           n_cols, nbp, x16));
    }
    *act = tm_mm_act{q, d, sum, n_cols, nbp};
    return cudaSuccess;
}

#endif

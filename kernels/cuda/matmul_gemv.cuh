/* matmul_gemv.cuh - quantized matmul for a few tokens (decode): int8 dot products
 * (__dp4a) of the weights, unpacked in registers, against activations quantized to 8
 * bits (matmul_quant.cuh), f32 accumulation. Part of the matmul family (matmul.cuh).
 *
 * Work item: 32 values of one weight row, read with one 16-byte load (two for Q8_0, one
 * of ql and one of qh for Q6_K and Q5_K; plus the block's 4 bytes of fifth bits for Q5_0,
 * Q5_1): a legacy block, or for the K-quants the two 16-value
 * halves that one 16-byte run of quants holds (low and high nibbles); and the matching
 * activation bytes of each token (two 16-byte loads). The lanes of a block take consecutive items,
 * so a warp reads 512 contiguous bytes of a row per load. A block computes R rows for NT
 * tokens: each thread loads an item's activations once and uses them for its R rows.
 * Launch (after llama.cpp's MMVQ, KERNELS.md section 2): 1-4 tokens: 4 warps; 5-8 tokens:
 * 2 warps; fewer when a row has too few items to give every lane one. R = 2 rows per
 * block at every token count (MMVQ takes 1 at one token): the activations of a block are
 * read from L2 once per R rows, and at one token they are already twice the bytes of a
 * Q4 row. */
#ifndef TM_CUDA_MATMUL_GEMV_CUH
#define TM_CUDA_MATMUL_GEMV_CUH

#include "kernels/cuda/matmul_quant.cuh"
#include "kernels/cuda/matmul_weight.cuh"

enum { TM_MM_GEMV_MAX_NT = 8, TM_MM_GEMV_MAX_WARPS = 4 };

/* Four bits (h & 15, bit i for byte i) moved to bit 4 of each byte: the product holds
 * copies of h at bits 0, 7, 14 and 21, which do not overlap, so bit i lands on bit 8 i. */
__device__ __forceinline__ uint32_t tm_mm_bit4(uint32_t h) { return ((h & 15u) * 0x00204081u & 0x01010101u) << 4; }

/* Four 4-bit quants, the low nibbles of v's bytes (the high ones are masked off), as the
 * int8 the dot products take; for Q5_0 / Q5_1 with their fifth bits h (bit i for byte i,
 * higher bits ignored). Q4_0 q - 8 and Q5_0 q - 16 are signed (no byte carries: each
 * byte stays below 0x90 before the xor); Q4_1, Q5_1 and Q4_K q as is (0..15, 0..31). */
template <tm_dtype T>
__device__ __forceinline__ int tm_mm_nib4(uint32_t v, uint32_t h) {
    uint32_t q = v & 0x0f0f0f0fu;
    if constexpr (tm_mm_is_q5(T)) q |= tm_mm_bit4(h);
    if constexpr (T == TM_DTYPE_Q4_0) return (int)((q + 0x78787878u) ^ 0x80808080u);
    else if constexpr (T == TM_DTYPE_Q5_0) return (int)((q + 0x70707070u) ^ 0x80808080u);
    else return (int)q;
}
/* Four 6-bit values (0..63) per byte minus 32. */
__device__ __forceinline__ int tm_mm_s6(uint32_t v) { return (int)((v + 0x60606060u) ^ 0x80808080u); }

/* sum over the 16 bytes of w and a as int8 x int8 */
__device__ __forceinline__ int tm_mm_dot16(const int w[4], const int4 &a) {
    int s = __dp4a(w[0], a.x, 0);
    s = __dp4a(w[1], a.y, s);
    s = __dp4a(w[2], a.z, s);
    return __dp4a(w[3], a.w, s);
}

/* Byte offsets in a token's activation row of item it's two 16-value halves: "lo" goes
 * with the weights' low nibbles (or first 16 bytes), "hi" with the high ones. */
template <tm_dtype T>
__device__ __forceinline__ void tm_mm_item_offsets(int it, int *lo, int *hi) {
    if constexpr (T == TM_DTYPE_Q4_K || T == TM_DTYPE_Q5_K) { /* 16 bytes at 16 j of super-block sb: chunk j / 2 */
        const int sb = it >> 3, j = it & 7;
        *lo = 256 * sb + 64 * (j >> 1) + 16 * (j & 1);
        *hi = *lo + 32;
    } else if constexpr (T == TM_DTYPE_Q6_K) { /* ql bytes 16 i of half h: values 16 i and 64 + 16 i */
        const int sb = it >> 3, h = (it >> 2) & 1, i = it & 3;
        *lo = 256 * sb + 128 * h + 16 * i;
        *hi = *lo + 64;
    } else {
        *lo = 32 * it;
        *hi = *lo + 16;
    }
}

/* Adds item it of row r, dotted with each token's activations a_lo/a_hi, to acc[0..NT). */
template <tm_dtype T, int NT>
__device__ __forceinline__ void tm_mm_gemv_item(const tm_mm_qw &w, const tm_mm_act &a, int64_t r, int it,
                                                const int4 (&alo)[NT], const int4 (&ahi)[NT], float *acc) {
    int wl[4], wh[4];
    const uint8_t *q = w.qs + r * w.row_qs;
    if constexpr (T == TM_DTYPE_Q8_0) {
        const int4 v0 = *(const int4 *)(q + 32 * it), v1 = *(const int4 *)(q + 32 * it + 16);
        wl[0] = v0.x, wl[1] = v0.y, wl[2] = v0.z, wl[3] = v0.w;
        wh[0] = v1.x, wh[1] = v1.y, wh[2] = v1.z, wh[3] = v1.w;
    } else if constexpr (T == TM_DTYPE_Q6_K) {
        const int sb = it >> 3, h = (it >> 2) & 1, i = it & 3, sh = 2 * (i >> 1);
        const int4 l4 = *(const int4 *)(q + 192 * sb + 64 * h + 16 * i);
        const int4 h4 = *(const int4 *)(q + 192 * sb + 128 + 32 * h + 16 * (i & 1));
        const uint32_t l[4] = {(uint32_t)l4.x, (uint32_t)l4.y, (uint32_t)l4.z, (uint32_t)l4.w};
        const uint32_t hb[4] = {(uint32_t)h4.x, (uint32_t)h4.y, (uint32_t)h4.z, (uint32_t)h4.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            wl[k] = tm_mm_s6((l[k] & 0x0f0f0f0fu) | (((hb[k] >> sh) & 0x03030303u) << 4));
            wh[k] = tm_mm_s6(((l[k] >> 4) & 0x0f0f0f0fu) | (((hb[k] >> (sh + 4)) & 0x03030303u) << 4));
        }
    } else if constexpr (T == TM_DTYPE_Q5_K) {
        /* Q4_K's 16 bytes of nibbles (sub-blocks 2c and 2c + 1), and the 16 qh bytes of the
         * same positions l, whose bits 2c and 2c + 1 are the fifth bits */
        const int sb = it >> 3, j = it & 7, c = j >> 1;
        const int4 l4 = *(const int4 *)(q + 160 * sb + 16 * j);
        const int4 h4 = *(const int4 *)(q + 160 * sb + 128 + 16 * (j & 1));
        const uint32_t l[4] = {(uint32_t)l4.x, (uint32_t)l4.y, (uint32_t)l4.z, (uint32_t)l4.w};
        const uint32_t hb[4] = {(uint32_t)h4.x, (uint32_t)h4.y, (uint32_t)h4.z, (uint32_t)h4.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            wl[k] = (int)((l[k] & 0x0f0f0f0fu) | ((hb[k] >> (2 * c)) & 0x01010101u) << 4);
            wh[k] = (int)(((l[k] >> 4) & 0x0f0f0f0fu) | ((hb[k] >> (2 * c + 1)) & 0x01010101u) << 4);
        }
    } else { /* Q4_0, Q4_1, Q5_0, Q5_1, Q4_K: 16 bytes, low nibbles with lo, high with hi */
        const int4 v = *(const int4 *)(q + 16 * it);
        const uint32_t u[4] = {(uint32_t)v.x, (uint32_t)v.y, (uint32_t)v.z, (uint32_t)v.w};
        const uint32_t h = tm_mm_is_q5(T) ? w.qh[r * w.row_qh + it] : 0; /* bit j: value j */
#pragma unroll
        for (int k = 0; k < 4; k++) { /* values 4k .. 4k + 3 and 16 + 4k .. */
            wl[k] = tm_mm_nib4<T>(u[k], h >> (4 * k));
            wh[k] = tm_mm_nib4<T>(u[k] >> 4, h >> (16 + 4 * k));
        }
    }
    const uint8_t *s = w.sd + r * w.row_sd;
    if constexpr (T == TM_DTYPE_Q4_0 || T == TM_DTYPE_Q5_0 || T == TM_DTYPE_Q8_0) {
        const float dw = __half2float(((const __half *)s)[it]);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const int dot = tm_mm_dot16(wl, alo[t]) + tm_mm_dot16(wh, ahi[t]);
            acc[t] += (float)dot * (dw * a.d[t * a.nbp + it]);
        }
    } else if constexpr (tm_mm_has_min(T)) { /* Q4_1, Q5_1 */
        const __half2 dm = ((const __half2 *)s)[it];
        const float dw = __low2float(dm), mw = __high2float(dm);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const int dot = tm_mm_dot16(wl, alo[t]) + tm_mm_dot16(wh, ahi[t]);
            const float da = a.d[t * a.nbp + it];
            acc[t] += (float)dot * (dw * da) + mw * (da * (float)a.sum[t * a.nbp + it]);
        }
    } else if constexpr (T == TM_DTYPE_Q4_K || T == TM_DTYPE_Q5_K) {
        /* sub-blocks 2c (low nibbles) and 2c + 1; the lane with the chunk's first half adds
         * both sub-blocks' min terms (the activation sums are per 32) */
        const int sb = it >> 3, c = (it & 7) >> 1, first = !(it & 1);
        const uint4 hd = *(const uint4 *)(s + 16 * sb);
        const uint32_t sc3[3] = {hd.y, hd.z, hd.w};
        uint32_t u[4];
        tm_mm_q4k_unpack(sc3, u);
        const __half2 dd = *(const __half2 *)(s + 16 * sb); /* d, dmin: the record's first word */
        const float d = __low2float(dd), dmin = __high2float(dd);
        const int sc0 = tm_mm_byte8(u, 2 * c), sc1 = tm_mm_byte8(u, 2 * c + 1);
        const int m0 = first ? tm_mm_byte8(u + 2, 2 * c) : 0, m1 = first ? tm_mm_byte8(u + 2, 2 * c + 1) : 0;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const int sumi = sc0 * tm_mm_dot16(wl, alo[t]) + sc1 * tm_mm_dot16(wh, ahi[t]);
            const int *as = a.sum + t * a.nbp + 8 * sb + 2 * c;
            const int summ = m0 * as[0] + m1 * as[1];
            acc[t] += a.d[t * a.nbp + 8 * sb] * (d * (float)sumi - dmin * (float)summ);
        }
    } else if constexpr (T == TM_DTYPE_Q6_K) {
        const int sb = it >> 3, h = (it >> 2) & 1, i = it & 3;
        const int8_t *sc = (const int8_t *)(s + 16 * sb);
        const int sl = sc[8 * h + i], shi = sc[8 * h + 4 + i];
        const float d = __half2float(w.d6[r * w.row_d6 + sb]);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const int sumi = sl * tm_mm_dot16(wl, alo[t]) + shi * tm_mm_dot16(wh, ahi[t]);
            acc[t] += (a.d[t * a.nbp + 8 * sb] * d) * (float)sumi;
        }
    }
}

/* Sums each of v[0..M) over the warp with M - 1 + log2(32 / M) shuffles instead of 5 M:
 * each step sends half of the values to the partner lane and keeps the other half, so
 * after log2(M) steps a lane holds one index (*idx), and plain xor steps over the
 * remaining lane bits finish the sum. Lanes with lane % (32 / M) == 0 hold the M
 * distinct indices. M a power of two <= 32. */
template <int M>
__device__ __forceinline__ float tm_mm_warp_sum_many(float (&v)[M], int *idx) {
    const int lane = threadIdx.x & 31;
    int base = 0;
#pragma unroll
    for (int half = M / 2, o = 16; half >= 1; half /= 2, o /= 2) {
        const bool upper = (lane & o) != 0;
#pragma unroll
        for (int i = 0; i < half; i++) {
            const float send = upper ? v[i] : v[i + half];
            const float keep = upper ? v[i + half] : v[i];
            v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
        }
        if (upper) base += half;
    }
    float s = v[0];
#pragma unroll
    for (int o = 16 / M; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    *idx = base;
    return s;
}

template <int x>
struct tm_mm_pow2_ceil {
    static constexpr int value = x <= 1 ? 1 : 2 * tm_mm_pow2_ceil<(x + 1) / 2>::value;
};
template <>
struct tm_mm_pow2_ceil<1> {
    static constexpr int value = 1;
};

/* out (NT, n_rows) rows [R blockIdx.x, +R) = w . activations of tokens 0..NT-1 (+ bias). */
template <tm_dtype T, int NT, int R>
static __global__ void tm_mm_gemv_kernel(float *out, tm_mm_qw w, tm_mm_act a, const float *bias) {
    constexpr int M = tm_mm_pow2_ceil<NT * R>::value;
    const int64_t row0 = (int64_t)blockIdx.x * R;
    int64_t rows[R];
#pragma unroll
    for (int r = 0; r < R; r++) rows[r] = row0 + r < w.n_rows ? row0 + r : w.n_rows - 1;
    float acc[M];
#pragma unroll
    for (int i = 0; i < M; i++) acc[i] = 0.0f;
    for (int it = threadIdx.x; it < w.nb; it += blockDim.x) {
        int lo, hi;
        tm_mm_item_offsets<T>(it, &lo, &hi);
        int4 alo[NT], ahi[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) {
            alo[t] = *(const int4 *)(a.q + t * a.n_cols + lo);
            ahi[t] = *(const int4 *)(a.q + t * a.n_cols + hi);
        }
#pragma unroll
        for (int r = 0; r < R; r++) tm_mm_gemv_item<T, NT>(w, a, rows[r], it, alo, ahi, acc + r * NT);
    }
    /* one value per (row, token) left in each warp; then across the block's warps */
    __shared__ float part[TM_MM_GEMV_MAX_WARPS][M];
    int idx;
    const float s = tm_mm_warp_sum_many<M>(acc, &idx);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    if (lane % (32 / M) == 0) part[warp][idx] = s;
    __syncthreads();
    if (threadIdx.x < NT * R) {
        const int r = threadIdx.x / NT, t = threadIdx.x % NT;
        float v = 0.0f;
        for (int k = 0; k < nwarps; k++) v += part[k][r * NT + t];
        if (row0 + r < w.n_rows) out[(int64_t)t * w.n_rows + row0 + r] = v + (bias ? bias[row0 + r] : 0.0f);
    }
}

template <tm_dtype T, int NT>
static cudaError_t tm_mm_gemv_launch(const tm_cuda_ctx *ctx, float *out, const tm_mm_qw &w, const tm_mm_act &a,
                                     const float *bias) {
    constexpr int R = 2;
    int warps = NT <= 4 ? 4 : 2;
    while (warps > 1 && (warps / 2) * 32 >= w.nb) warps /= 2; /* every lane an item, if possible */
    CUDA_TRY(TM_LAUNCH((tm_mm_gemv_kernel<T, NT, R>), tm_cdiv(w.n_rows, R), 32 * warps, 0, ctx->stream, out, w, a,
                       bias));
    return cudaSuccess;
}

/* out (n, n_rows) = w . a for n <= TM_MM_GEMV_MAX_NT tokens. */
template <tm_dtype T>
static cudaError_t tm_mm_gemv(const tm_cuda_ctx *ctx, float *out, const tm_mm_qw &w, const tm_mm_act &a,
                              const float *bias, int n) {
    switch (n) {
    case 1: return tm_mm_gemv_launch<T, 1>(ctx, out, w, a, bias);
    case 2: return tm_mm_gemv_launch<T, 2>(ctx, out, w, a, bias);
    case 3: return tm_mm_gemv_launch<T, 3>(ctx, out, w, a, bias);
    case 4: return tm_mm_gemv_launch<T, 4>(ctx, out, w, a, bias);
    case 5: return tm_mm_gemv_launch<T, 5>(ctx, out, w, a, bias);
    case 6: return tm_mm_gemv_launch<T, 6>(ctx, out, w, a, bias);
    case 7: return tm_mm_gemv_launch<T, 7>(ctx, out, w, a, bias);
    case 8: return tm_mm_gemv_launch<T, 8>(ctx, out, w, a, bias);
    default: return cudaErrorInvalidValue;
    }
}

#endif

/* elementwise.cuh - add, silu * mul, gelu * mul, scale (soft-capping) and row gathers.
 * Kernels first, then launchers. */
#ifndef TM_CUDA_ELEMENTWISE_CUH
#define TM_CUDA_ELEMENTWISE_CUH

#include "kernels/cuda/backend_cuda.cuh"

/* out = a + b over n4 float4s; out may alias a or b. */
static __global__ void tm_add_kernel(float4 *out, const float4 *a, const float4 *b, int64_t n4) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
        float4 x = a[i], y = b[i];
        out[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
    }
}

static __global__ void tm_add_tail_kernel(float *out, const float *a, const float *b, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

/* The gated feed-forward's activations: act(g) * u. */
enum { TM_CUDA_ACT_SILU = 0, TM_CUDA_ACT_GELU = 1 };

template <int ACT>
static __device__ __forceinline__ float tm_gated1(float g, float u) {
    if (ACT == TM_CUDA_ACT_SILU) return g / (1.0f + expf(-g)) * u;
    /* GELU's tanh form, as the CPU reference writes it */
    return 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g))) * u;
}

/* out = act(gate) * up over n4 float4s; out may alias gate or up. */
template <int ACT>
static __global__ void tm_gated_kernel(float4 *out, const float4 *gate, const float4 *up, int64_t n4) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
        float4 g = gate[i], u = up[i];
        out[i] = make_float4(tm_gated1<ACT>(g.x, u.x), tm_gated1<ACT>(g.y, u.y), tm_gated1<ACT>(g.z, u.z),
                             tm_gated1<ACT>(g.w, u.w));
    }
}

template <int ACT>
static __global__ void tm_gated_tail_kernel(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = tm_gated1<ACT>(gate[i], up[i]);
}

/* out = x * s, or cap * tanh(x * k) with k = s / cap when cap > 0; out may alias x. */
static __global__ void tm_scale_kernel(float *out, const float *x, int64_t n, float s, float cap, float k) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = cap > 0.0f ? cap * tanhf(x[i] * k) : x[i] * s;
}

/* One block per output row: out[i] = x[rows[i]]. */
static __global__ void tm_get_rows_kernel(float *out, const float *x, const int32_t *rows, int dim) {
    const float *src = x + (size_t)rows[blockIdx.x] * dim;
    float *dst = out + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
}

/* Grid for a grid-stride loop over n items: enough blocks to fill the device twice over. */
static unsigned tm_elementwise_blocks(const tm_cuda_ctx *ctx, int64_t n, int threads) {
    long long want = (n + threads - 1) / threads, cap = 4LL * ctx->n_sm;
    return (unsigned)(want < 1 ? 1 : want < cap ? want : cap);
}

static int tm_aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* out (n) = a + b. */
static cudaError_t tm_cuda_add(const tm_cuda_ctx *ctx, float *out, const float *a, const float *b, int64_t n) {
    if (n <= 0) return cudaSuccess;
    int64_t n4 = tm_aligned16(out) && tm_aligned16(a) && tm_aligned16(b) ? n / 4 : 0;
    if (n4)
        CUDA_TRY(TM_LAUNCH(tm_add_kernel, tm_elementwise_blocks(ctx, n4, 256), 256, 0, ctx->stream,
                           (float4 *)out, (const float4 *)a, (const float4 *)b, n4));
    if (n > 4 * n4)
        CUDA_TRY(TM_LAUNCH(tm_add_tail_kernel, tm_elementwise_blocks(ctx, n - 4 * n4, 256), 256, 0, ctx->stream,
                           out + 4 * n4, a + 4 * n4, b + 4 * n4, n - 4 * n4));
    return cudaSuccess;
}

/* out (n) = act(gate) * up. */
template <int ACT>
static cudaError_t tm_cuda_gated_mul(const tm_cuda_ctx *ctx, float *out, const float *gate, const float *up,
                                     int64_t n) {
    if (n <= 0) return cudaSuccess;
    int64_t n4 = tm_aligned16(out) && tm_aligned16(gate) && tm_aligned16(up) ? n / 4 : 0;
    if (n4)
        CUDA_TRY(TM_LAUNCH((tm_gated_kernel<ACT>), tm_elementwise_blocks(ctx, n4, 256), 256, 0, ctx->stream,
                           (float4 *)out, (const float4 *)gate, (const float4 *)up, n4));
    if (n > 4 * n4)
        CUDA_TRY(TM_LAUNCH((tm_gated_tail_kernel<ACT>), tm_elementwise_blocks(ctx, n - 4 * n4, 256), 256, 0,
                           ctx->stream, out + 4 * n4, gate + 4 * n4, up + 4 * n4, n - 4 * n4));
    return cudaSuccess;
}

/* out (n) = silu(gate) * up. */
static cudaError_t tm_cuda_silu_mul(const tm_cuda_ctx *ctx, float *out, const float *gate, const float *up,
                                    int64_t n) {
    return tm_cuda_gated_mul<TM_CUDA_ACT_SILU>(ctx, out, gate, up, n);
}

/* out (n) = gelu_tanh(gate) * up. */
static cudaError_t tm_cuda_gelu_mul(const tm_cuda_ctx *ctx, float *out, const float *gate, const float *up,
                                    int64_t n) {
    return tm_cuda_gated_mul<TM_CUDA_ACT_GELU>(ctx, out, gate, up, n);
}

/* out (n) = x * s, or cap * tanh(x * s / cap) when cap > 0 (tm_backend.scale). */
static cudaError_t tm_cuda_scale(const tm_cuda_ctx *ctx, float *out, const float *x, int64_t n, float s, float cap) {
    if (n <= 0) return cudaSuccess;
    CUDA_TRY(TM_LAUNCH(tm_scale_kernel, tm_elementwise_blocks(ctx, n, 256), 256, 0, ctx->stream, out, x, n, s, cap,
                       cap > 0.0f ? s / cap : 0.0f));
    return cudaSuccess;
}

/* out (n_rows, dim) = rows[i] (device int32) of x (., dim). */
static cudaError_t tm_cuda_get_rows(const tm_cuda_ctx *ctx, float *out, const float *x, const int32_t *rows,
                                    int n_rows, int dim) {
    if (n_rows <= 0) return cudaSuccess;
    CUDA_TRY(TM_LAUNCH(tm_get_rows_kernel, n_rows, dim >= 512 ? 256 : 64, 0, ctx->stream, out, x, rows, dim));
    return cudaSuccess;
}

#endif

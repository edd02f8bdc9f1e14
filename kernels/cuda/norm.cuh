/* norm.cuh - RMSNorm. Kernels first, then launchers. */
#ifndef TM_CUDA_NORM_CUH
#define TM_CUDA_NORM_CUH

#include "kernels/cuda/backend_cuda.cuh"

/* The block's sum of v (blockDim.x a multiple of 32, at most 1024), returned to every
 * thread. red holds 32 floats of shared memory. */
static __device__ float tm_block_sum(float v, float *red) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    v = tm_warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < n_warps ? red[lane] : 0.0f;
    v = tm_warp_sum(v);
    __syncthreads(); /* red may be reused right after */
    return v;
}

/* One block per row: out = x / sqrt(mean(x^2) + eps) * w. out may alias x (each element is
 * read and written by the same thread). */
static __global__ void tm_rmsnorm_kernel(float *out, const float *x, const float *w, int dim, float eps) {
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *yr = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = tm_block_sum(ss, red);
    const float r = 1.0f / sqrtf(ss / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * r * w[i];
}

/* One block per row: x += r, then out = x / sqrt(mean(x^2) + eps) * w. out may alias r:
 * every read of r comes before the barrier inside tm_block_sum, every write of out after. */
static __global__ void tm_add_rmsnorm_kernel(float *x, const float *r, const float *w, float *out, int dim,
                                             float eps) {
    __shared__ float red[32];
    float *xr = x + (size_t)blockIdx.x * dim;
    const float *rr = r + (size_t)blockIdx.x * dim;
    float *yr = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = xr[i] + rr[i];
        xr[i] = v;
        ss += v * v;
    }
    ss = tm_block_sum(ss, red);
    const float s = 1.0f / sqrtf(ss / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * s * w[i];
}

static int tm_norm_threads(int dim) { return dim >= 1024 ? 256 : dim >= 256 ? 128 : 64; }

/* x (n, dim) += r; out (n, dim) = rmsnorm(x) * w: the residual step and the next norm in
 * one pass (tm_backend.add_rmsnorm). */
static cudaError_t tm_cuda_add_rmsnorm(const tm_cuda_ctx *ctx, float *x, const float *r, const float *w, float *out,
                                       int n, int dim, float eps) {
    if (n <= 0) return cudaSuccess;
    CUDA_TRY(TM_LAUNCH(tm_add_rmsnorm_kernel, n, tm_norm_threads(dim), 0, ctx->stream, x, r, w, out, dim, eps));
    return cudaSuccess;
}

/* out (n, dim) = rmsnorm of each row of x (n, dim) with weight w (dim); the semantics of
 * tm_backend.rmsnorm. */
static cudaError_t tm_cuda_rmsnorm(const tm_cuda_ctx *ctx, float *out, const float *x, const float *w, int n,
                                   int dim, float eps) {
    if (n <= 0) return cudaSuccess;
    CUDA_TRY(TM_LAUNCH(tm_rmsnorm_kernel, n, tm_norm_threads(dim), 0, ctx->stream, out, x, w, dim, eps));
    return cudaSuccess;
}

#endif

/* matmul_dense.cuh - F32, F16 and BF16 weights through cuBLAS (cublasGemmEx, f32
 * accumulation). Part of the matmul family (matmul.cuh).
 *
 * cublasGemmEx wants A and B of one type, so for F16/BF16 weights x is first rounded to
 * the weight's type in the scratch; that rounding (2^-11 relative for f16, 2^-8 for bf16)
 * is the difference from the CPU, which multiplies the f32 x. F32 weights use
 * CUBLAS_COMPUTE_32F (no TF32), the CPU's arithmetic up to the order of the sums. */
#ifndef TM_CUDA_MATMUL_DENSE_CUH
#define TM_CUDA_MATMUL_DENSE_CUH

#include <cuda_bf16.h>

#include "kernels/cuda/matmul_weight.cuh"

__device__ __forceinline__ void tm_mm_round_to(__half *y, float v) { *y = __float2half_rn(v); }
__device__ __forceinline__ void tm_mm_round_to(__nv_bfloat16 *y, float v) { *y = __float2bfloat16_rn(v); }

/* y (n) = x (n) rounded to nearest f16 or bf16 */
template <typename H>
static __global__ void tm_mm_convert_kernel(H *y, const float *x, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        tm_mm_round_to(y + i, x[i]);
}

/* out (n, n_rows) += bias (n_rows) */
static __global__ void tm_mm_bias_kernel(float *out, const float *bias, int64_t n_rows, int64_t total) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        out[i] += bias[i % n_rows];
}

/* A cuBLAS failure as a cudaError_t for CUDA_TRY (the closest runtime code), recorded
 * with the cuBLAS status in the expression text. */
static cudaError_t tm_mm_cublas_error(cublasStatus_t st) {
    switch (st) {
    case CUBLAS_STATUS_SUCCESS: return cudaSuccess;
    case CUBLAS_STATUS_ALLOC_FAILED: return cudaErrorMemoryAllocation;
    case CUBLAS_STATUS_INVALID_VALUE: return cudaErrorInvalidValue;
    case CUBLAS_STATUS_NOT_SUPPORTED: return cudaErrorNotSupported;
    case CUBLAS_STATUS_ARCH_MISMATCH: return cudaErrorInvalidDevice;
    default: return cudaErrorUnknown;
    }
}

static int tm_mm_grid(int64_t n, int threads) {
    const int64_t b = (n + threads - 1) / threads;
    return (int)(b < 4096 ? b : 4096);
}

/* out (n, n_rows) = x (n, n_cols) @ w^T (+ bias): in cuBLAS's column-major terms,
 * out^T (n_rows x n) = W^T' (W stored as n_cols x n_rows, transposed) . x^T (n_cols x n). */
static cudaError_t tm_mm_dense(const tm_cuda_ctx *ctx, float *out, const float *x, const tm_weight *w,
                               const float *bias, int n) {
    const tm_mm_qw &v = *tm_mm_view(w);
    const int64_t k = w->n_cols, total_x = (int64_t)n * k;
    const void *b = x;
    cudaDataType_t type = CUDA_R_32F;
    if (w->dtype != TM_DTYPE_F32) {
        void *xh;
        CUDA_TRY(tm_cuda_scratch_get(ctx, (size_t)total_x * 2, &xh));
        const int th = 256;
        if (w->dtype == TM_DTYPE_F16) {
            type = CUDA_R_16F;
            CUDA_TRY(TM_LAUNCH(tm_mm_convert_kernel<__half>, tm_mm_grid(total_x, th), th, 0, ctx->stream, (__half *)xh,
                               x, total_x));
        } else {
            type = CUDA_R_16BF;
            CUDA_TRY(TM_LAUNCH(tm_mm_convert_kernel<__nv_bfloat16>, tm_mm_grid(total_x, th), th, 0, ctx->stream,
                               (__nv_bfloat16 *)xh, x, total_x));
        }
        b = xh;
    }
    const float alpha = 1.0f, beta = 0.0f;
    CUDA_TRY(tm_mm_cublas_error(cublasGemmEx(ctx->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)w->n_rows, n, (int)k, &alpha,
                                             v.qs, type, (int)k, b, type, (int)k, &beta, out, CUDA_R_32F,
                                             (int)w->n_rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)));
    if (bias) {
        const int64_t total = (int64_t)n * w->n_rows;
        CUDA_TRY(TM_LAUNCH(tm_mm_bias_kernel, tm_mm_grid(total, 256), 256, 0, ctx->stream, out, bias, w->n_rows, total));
    }
    return cudaSuccess;
}

#endif

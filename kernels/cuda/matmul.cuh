/* matmul.cuh - the matmul op family of the CUDA backend: quantized and dense matrix
 * multiply, weight upload and repack, embedding rows. backend_cuda.cu includes this one
 * header; the kernels live in
 *   matmul_weight.cuh  device layout of the weights, tm_cuda_weight_init/_deinit, and
 *                      tm_cuda_weight_rows (embedding)
 *   matmul_quant.cuh   activations quantized to 8 bits (the CPU reference's formats)
 *   matmul_gemv.cuh    decode: <= 8 tokens, __dp4a dot products
 *   matmul_mma.cuh     prefill: int8 tensor-core tiles (mma.sync m16n8k32)
 *   matmul_dense.cuh   F32/F16/BF16 weights through cuBLAS
 *
 * Exported (static) to the backend, as the contract (notes/cuda-contract.md) names them:
 *   tm_cuda_weight_init, tm_cuda_weight_deinit, tm_cuda_matmul, tm_cuda_matmul_multi,
 *   tm_cuda_weight_rows; and tm_cuda_matmul_path, which tests use to force a kernel. */
#ifndef TM_CUDA_MATMUL_CUH
#define TM_CUDA_MATMUL_CUH

#include "kernels/cuda/matmul_dense.cuh"
#include "kernels/cuda/matmul_gemv.cuh"
#include "kernels/cuda/matmul_mma.cuh"
#include "kernels/cuda/matmul_quant.cuh"
#include "kernels/cuda/matmul_weight.cuh"

/* Which quantized kernel runs: AUTO picks the GEMV up to TM_MM_GEMV_MAX_NT tokens and the
 * tensor-core tiles above; GEMV runs more tokens in groups of TM_MM_GEMV_MAX_NT. Dense
 * weights always go to cuBLAS. */
typedef enum tm_mm_path { TM_MM_PATH_AUTO = 0, TM_MM_PATH_GEMV = 1, TM_MM_PATH_MMA = 2 } tm_mm_path;

template <tm_dtype T>
static cudaError_t tm_mm_run_t(const tm_cuda_ctx *ctx, float *out, const tm_mm_qw &w, const tm_mm_act &a,
                               const float *bias, int n, tm_mm_path path) {
    if (path == TM_MM_PATH_MMA || (path == TM_MM_PATH_AUTO && n > TM_MM_GEMV_MAX_NT))
        return tm_mm_mma<T>(ctx, out, w, a, bias, n);
    for (int t0 = 0; t0 < n; t0 += TM_MM_GEMV_MAX_NT) {
        const int nt = n - t0 < TM_MM_GEMV_MAX_NT ? n - t0 : TM_MM_GEMV_MAX_NT;
        const tm_mm_act at = {a.q + (int64_t)t0 * a.n_cols, a.d + (int64_t)t0 * a.nbp, a.sum + (int64_t)t0 * a.nbp,
                              a.n_cols, a.nbp};
        const cudaError_t rc = tm_mm_gemv<T>(ctx, out + (int64_t)t0 * w.n_rows, w, at, bias, nt);
        if (rc != cudaSuccess) return rc;
    }
    return cudaSuccess;
}

/* out (n, w.n_rows) = quantized activations a . w^T (+ bias), a from tm_mm_quantize in
 * the format w's dtype wants (tm_mm_is_kquant). */
static cudaError_t tm_mm_run(const tm_cuda_ctx *ctx, float *out, const tm_weight *w, const tm_mm_act &a,
                             const float *bias, int n, tm_mm_path path) {
    const tm_mm_qw &v = *tm_mm_view(w);
    switch (w->dtype) {
    case TM_DTYPE_Q4_0: return tm_mm_run_t<TM_DTYPE_Q4_0>(ctx, out, v, a, bias, n, path);
    case TM_DTYPE_Q4_1: return tm_mm_run_t<TM_DTYPE_Q4_1>(ctx, out, v, a, bias, n, path);
    case TM_DTYPE_Q5_0: return tm_mm_run_t<TM_DTYPE_Q5_0>(ctx, out, v, a, bias, n, path);
    case TM_DTYPE_Q5_1: return tm_mm_run_t<TM_DTYPE_Q5_1>(ctx, out, v, a, bias, n, path);
    case TM_DTYPE_Q8_0: return tm_mm_run_t<TM_DTYPE_Q8_0>(ctx, out, v, a, bias, n, path);
    case TM_DTYPE_Q4_K: return tm_mm_run_t<TM_DTYPE_Q4_K>(ctx, out, v, a, bias, n, path);
    case TM_DTYPE_Q5_K: return tm_mm_run_t<TM_DTYPE_Q5_K>(ctx, out, v, a, bias, n, path);
    case TM_DTYPE_Q6_K: return tm_mm_run_t<TM_DTYPE_Q6_K>(ctx, out, v, a, bias, n, path);
    default: CUDA_TRY(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

/* tm_cuda_matmul with the kernel chosen by path (tests force each one). */
static cudaError_t tm_cuda_matmul_path(const tm_cuda_ctx *ctx, float *out, const float *x, const tm_weight *w,
                                       const float *bias, int n, tm_mm_path path) {
    if (n <= 0) return cudaSuccess;
    if (tm_mm_is_dense(w->dtype)) return tm_mm_dense(ctx, out, x, w, bias, n);
    tm_mm_act a;
    CUDA_TRY(tm_mm_quantize(ctx, &a, x, n, w->n_cols, tm_mm_is_kquant(w->dtype)));
    return tm_mm_run(ctx, out, w, a, bias, n, path);
}

/* out (n, w->n_rows) = x (n, w->n_cols) @ w^T (+ bias (n_rows) f32 if not NULL); device
 * pointers, ordered on ctx->stream. Uses the scratch for the quantized x. */
static cudaError_t tm_cuda_matmul(const tm_cuda_ctx *ctx, float *out, const float *x, const tm_weight *w,
                                  const float *bias, int n) {
    return tm_cuda_matmul_path(ctx, out, x, w, bias, n, TM_MM_PATH_AUTO);
}

/* outs[k] = x @ ws[k]^T (+ biases[k]) for k < n_w (biases may be NULL): the same results
 * as n_w tm_cuda_matmul calls, but consecutive quantized weights of one activation format
 * and width (q/k/v, gate/up) share one quantization of x. */
static cudaError_t tm_cuda_matmul_multi(const tm_cuda_ctx *ctx, int n_w, float *const outs[], const float *x,
                                        const tm_weight *const ws[], const float *const biases[], int n) {
    if (n <= 0) return cudaSuccess;
    for (int k = 0; k < n_w;) {
        const tm_weight *w0 = ws[k];
        if (tm_mm_is_dense(w0->dtype)) {
            CUDA_TRY(tm_mm_dense(ctx, outs[k], x, w0, biases ? biases[k] : NULL, n));
            k++;
            continue;
        }
        tm_mm_act a;
        CUDA_TRY(tm_mm_quantize(ctx, &a, x, n, w0->n_cols, tm_mm_is_kquant(w0->dtype)));
        do {
            CUDA_TRY(tm_mm_run(ctx, outs[k], ws[k], a, biases ? biases[k] : NULL, n, TM_MM_PATH_AUTO));
            k++;
        } while (k < n_w && !tm_mm_is_dense(ws[k]->dtype) && ws[k]->n_cols == w0->n_cols &&
                 tm_mm_is_kquant(ws[k]->dtype) == tm_mm_is_kquant(w0->dtype));
    }
    return cudaSuccess;
}

#endif

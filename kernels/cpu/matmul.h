/* matmul.h - quantized and dense matrix multiply on the CPU, and the weight storage it
 * reads. Activations are quantized per block (Q8_0 / Q8_1 / Q8_K as KERNELS.md pairs
 * them) and multiplied with integer dot products. Each SIMD level has one kernel table
 * (matmul_impl.h): the scalar reference, AVX2, AVX-512-VNNI, AMX and NEON. */
#ifndef TM_CPU_MATMUL_H
#define TM_CPU_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/cpu/threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_cpu_matmul tm_cpu_matmul; /* scratch for quantized activations, per backend */

/* simd: a concrete level (not AUTO). NULL on allocation failure. */
tm_cpu_matmul *tm_cpu_matmul_create(tm_threadpool *pool, int simd);
void tm_cpu_matmul_destroy(tm_cpu_matmul *mm);

/* Prepares w from GGUF-layout src (may reference src in place or repack it). Repacked
 * tiles come from mm's huge-page chunks, so weight_init and weight_deinit of one mm's
 * weights must not run concurrently. w may outlive mm. TM_EUNSUPPORTED with err for a
 * dtype the CPU cannot multiply. */
int tm_cpu_weight_init(tm_cpu_matmul *mm, tm_weight *w, tm_dtype dtype, int64_t n_rows,
                       int64_t n_cols, const void *src, char *err, size_t err_len);
void tm_cpu_weight_deinit(tm_weight *w);
/* out (n_cols) f32 = row r of w, dequantized (used by embed). */
void tm_cpu_weight_row(const tm_weight *w, int64_t r, float *out);

/* out (n, w.n_rows) = x (n, w.n_cols) @ w^T (+ bias). Runs on the pool. */
void tm_cpu_matmul_run(tm_cpu_matmul *mm, float *out, const float *x, const tm_weight *w,
                       const float *bias, int n);
/* outs[k] (n, ws[k].n_rows) = x @ ws[k]^T (+ biases[k]) for k < n_w (biases may be NULL).
 * Same results, bit for bit, as n_w calls of tm_cpu_matmul_run, but weights of one dtype
 * and width share one activation quantization and one pool job (q/k/v, gate/up). */
void tm_cpu_matmul_run_multi(tm_cpu_matmul *mm, int n_w, float *const outs[], const float *x,
                             const tm_weight *const ws[], const float *const biases[], int n);

#ifdef __cplusplus
}
#endif
#endif

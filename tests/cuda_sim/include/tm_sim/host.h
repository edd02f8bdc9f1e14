/* tm_sim/host.h - the CUDA runtime API for the CPU harness: device memory is aligned host
 * memory (so AddressSanitizer checks kernels' global accesses), streams and events are
 * host objects and every operation runs when it is issued, and the one device is a fake
 * "cuda-sim" sm_90 with H100-like limits. */
#ifndef TM_SIM_HOST_H
#define TM_SIM_HOST_H

#include <cstddef>
#include <type_traits>

#include "tm_sim/types.h"

namespace tm_sim {

/* The detail of the last failing call of this host thread (a refusal names the kernel,
 * block and thread); "" when none failed yet. Not cleared by cudaGetLastError. */
const char *last_error();

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
/* For the code of this thread's last failure, the generic text plus its detail. */
const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device);
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaDeviceReset();
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);

cudaError_t cudaMalloc(void **p, size_t n_bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t n_bytes);
cudaError_t cudaHostAlloc(void **p, size_t n_bytes, unsigned int flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaHostRegister(void *p, size_t n_bytes, unsigned int flags);
cudaError_t cudaHostUnregister(void *p);
template <class T> static inline cudaError_t cudaMalloc(T **p, size_t n) { return cudaMalloc((void **)p, n); }
template <class T> static inline cudaError_t cudaMallocHost(T **p, size_t n) { return cudaMallocHost((void **)p, n); }
template <class T> static inline cudaError_t cudaHostAlloc(T **p, size_t n, unsigned int f) {
    return cudaHostAlloc((void **)p, n, f);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n_bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n_bytes, cudaMemcpyKind kind, cudaStream_t s = 0);
cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                         cudaMemcpyKind kind);
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t s = 0);
cudaError_t cudaMemset(void *p, int value, size_t n_bytes);
cudaError_t cudaMemsetAsync(void *p, int value, size_t n_bytes, cudaStream_t s = 0);
/* __constant__ and __device__ variables are host globals here. */
template <class T>
static inline cudaError_t cudaMemcpyToSymbol(T &symbol, const void *src, size_t n_bytes, size_t offset = 0,
                                             cudaMemcpyKind kind = cudaMemcpyHostToDevice) {
    if (offset + n_bytes > sizeof(T) || kind == cudaMemcpyDeviceToHost) return cudaErrorInvalidValue;
    return cudaMemcpy((char *)&symbol + offset, src, n_bytes, cudaMemcpyHostToHost);
}
template <class T>
static inline cudaError_t cudaMemcpyFromSymbol(void *dst, const T &symbol, size_t n_bytes, size_t offset = 0,
                                               cudaMemcpyKind kind = cudaMemcpyDeviceToHost) {
    if (offset + n_bytes > sizeof(T) || kind == cudaMemcpyHostToDevice) return cudaErrorInvalidValue;
    return cudaMemcpy(dst, (const char *)&symbol + offset, n_bytes, cudaMemcpyHostToHost);
}

cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags = 0);

cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);

/* Per-kernel attributes, keyed by the kernel function's address. */
cudaError_t func_set_attribute(const void *kernel, cudaFuncAttribute attr, int value);
cudaError_t func_get_attributes(cudaFuncAttributes *attr, const void *kernel);
template <class F> static inline cudaError_t cudaFuncSetAttribute(F *kernel, cudaFuncAttribute attr, int value) {
    return func_set_attribute(reinterpret_cast<const void *>(kernel), attr, value);
}
template <class F> static inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, F *kernel) {
    return func_get_attributes(attr, reinterpret_cast<const void *>(kernel));
}
/* A plausible figure from the thread and shared-memory limits alone (no registers). */
cudaError_t occupancy_blocks_per_sm(int *n, int block_size, size_t dyn_smem);
template <class F>
static inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, F *, int block_size, size_t dyn_smem) {
    return occupancy_blocks_per_sm(n, block_size, dyn_smem);
}

/* ---- launches ---------------------------------------------------------------------- */
typedef void (*body_fn)(void *ctx);
/* Runs body(ctx) once per thread of every block (blocks one after another, the threads
 * of a block as fibers); kernel is the key of cudaFuncSetAttribute (NULL: unknown). Returns
 * cudaSuccess or the error of the first refusal, whose detail last_error() gives. */
cudaError_t launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   body_fn body, void *ctx);

/* What TM_LAUNCH (kernels/cuda/common.cuh) expands to under TM_CUDA_SIM. */
template <class K, class F>
static inline cudaError_t tm_sim_launch(const char *name, K *kernel, dim3 grid, dim3 block, size_t smem,
                                        cudaStream_t stream, F &&body) {
    typedef typename std::remove_reference<F>::type B;
    return launch(name, reinterpret_cast<const void *>(kernel), grid, block, smem, stream,
                  [](void *c) { (*static_cast<B *>(c))(); }, (void *)&body);
}
template <class F>
static inline cudaError_t tm_sim_launch(const char *name, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                                        F &&body) {
    typedef typename std::remove_reference<F>::type B;
    return launch(name, nullptr, grid, block, smem, stream, [](void *c) { (*static_cast<B *>(c))(); },
                  (void *)&body);
}

} // namespace tm_sim

#endif

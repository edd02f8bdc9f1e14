/* backend_cuda.cuh - types the CUDA op families share with backend_cuda.cu.
 *
 * Build: backend_cuda.cu is the one translation unit. It includes this header and one
 * header per op family (norm.cuh, elementwise.cuh, rope.cuh, argmax.cuh, matmul.cuh,
 * attention.cuh), each with its kernels first and its launchers after, as llm.c's llmc/
 * does. Kernels and launchers are static; the only exported symbol is
 * tm_backend_cuda_create. The CPU test harness compiles the same file with the host C++
 * compiler (tests/cuda_sim/).
 *
 * Launchers take device pointers and a tm_cuda_ctx, return cudaError_t, and wrap every
 * CUDA call and launch in CUDA_TRY (common.cuh); the op table turns a failure into an
 * error that names the op.
 *
 * Device KV cache (f16), one pool per layer for K and one for V:
 *   k, v: (n_layers, n_blocks, n_kv_heads, block_size, head_dim) f16
 * so one (layer, page, kv head) is a contiguous block_size x head_dim tile; token slot =
 * block * block_size + offset (slot < 0: padding, skipped). */
#ifndef TM_CUDA_BACKEND_CUH
#define TM_CUDA_BACKEND_CUH

#include <cublas_v2.h>

#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/backend.h"
}

/* Device memory an op may use for the duration of one launch sequence (quantized
 * activations, split-KV partials, ...). Grown between launches: growth waits for the
 * stream, so no kernel still reads the old buffer. Not preserved across ops. */
typedef struct tm_cuda_scratch {
    void *data;     /* device memory, 256-byte aligned */
    size_t n_bytes; /* capacity */
} tm_cuda_scratch;

/* What every launcher needs besides its operands. */
typedef struct tm_cuda_ctx {
    cudaStream_t stream;      /* every launch and copy of the backend goes here */
    cublasHandle_t cublas;    /* bound to stream; dense (f16/bf16/f32) weights */
    tm_cuda_scratch *scratch; /* see tm_cuda_scratch */
    int device;               /* CUDA device id (per-device state, e.g. tm_cuda_smem_opt_in) */
    int n_sm;                 /* streaming multiprocessors of the device */
    int cc;                   /* compute capability, 10 * major + minor (80, 89, 90) */
    size_t max_smem;          /* dynamic shared memory a block may opt into, bytes */
} tm_cuda_ctx;

/* *p = at least n_bytes of scratch. Fails with the failing call's error: the wait for the
 * stream (which reports a fault of an earlier kernel as that fault, not as "out of memory")
 * or the allocation. */
static cudaError_t tm_cuda_scratch_get(const tm_cuda_ctx *ctx, size_t n_bytes, void **p) {
    tm_cuda_scratch *s = ctx->scratch;
    *p = NULL;
    if (n_bytes > s->n_bytes) {
        size_t cap = s->n_bytes ? s->n_bytes : (size_t)1 << 20;
        while (cap < n_bytes) cap *= 2;
        CUDA_TRY(cudaStreamSynchronize(ctx->stream)); /* no queued kernel still reads the old buffer */
        if (s->data) cudaFree(s->data);
        s->data = NULL;
        s->n_bytes = 0;
        CUDA_TRY(cudaMalloc(&s->data, cap));
        s->n_bytes = cap;
    }
    *p = s->data;
    return cudaSuccess;
}

/* Lets kernel launch with bytes (> 48 KiB) of dynamic shared memory. The attribute belongs
 * to the kernel's copy on one device, so it is set once per device, not once per process:
 * done is the caller's static mask of the devices done (one per kernel instance; devices
 * from 32 on set it every time). */
static cudaError_t tm_cuda_smem_opt_in(const tm_cuda_ctx *ctx, const void *kernel, size_t bytes, unsigned *done) {
    const unsigned bit = ctx->device >= 0 && ctx->device < 32 ? 1u << ctx->device : 0u;
    if (bit && (__atomic_load_n(done, __ATOMIC_ACQUIRE) & bit)) return cudaSuccess;
    CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    __atomic_fetch_or(done, bit, __ATOMIC_RELEASE);
    return cudaSuccess;
}

/* The step's batch: the host description and device copies of its index arrays, uploaded
 * once per forward (tm_backend.set_batch) and read by every layer's ops. */
typedef struct tm_cuda_batch {
    const tm_batch *host;  /* host memory, valid for the step */
    uint64_t step;         /* increments with every set_batch: per-step caches key on it */
    int32_t *tokens;       /* (n_tokens) device */
    int32_t *pos;          /* (n_tokens) device */
    int32_t *seq_start;    /* (n_seqs + 1) device */
    int32_t *ctx_len;      /* (n_seqs) device */
    int32_t *block_table;  /* (n_seqs, max_blocks) device */
    int32_t *slots;        /* (n_tokens) device */
    int32_t *logit_rows;   /* (n_logits) device */
} tm_cuda_batch;

/* The device KV pool (tm_kv_cache is opaque outside the backend). */
struct tm_kv_cache {
    tm_kv_shape shape; /* dimensions; dtype is always TM_KV_F16 here */
    __half *k;         /* (n_layers, n_blocks, n_kv_heads, block_size, head_dim) */
    __half *v;         /* same */
};

/* Element offset of layer l's pool in k or v. */
static inline size_t tm_cuda_kv_layer_offset(const tm_kv_shape *s, int layer) {
    return (size_t)layer * s->n_blocks * s->n_kv_heads * s->block_size * s->head_dim;
}

#endif

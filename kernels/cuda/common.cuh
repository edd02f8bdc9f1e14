/* common.cuh - what every CUDA op family shares: the error check, the launch helper,
 * dynamic shared memory, warp reductions, and the few PTX instructions the kernels use
 * (tensor-core MMA, ldmatrix, cp.async) behind small inline wrappers.
 *
 * The same sources also build with the host C++ compiler inside the CPU test harness
 * (tests/cuda_sim/, which defines TM_CUDA_SIM and supplies cuda_runtime.h). There each
 * wrapper below is one call into the harness, which runs it as a warp collective with the
 * PTX ISA's fragment layouts. Kernels use only what this header and the CUDA runtime
 * headers offer, so that both builds compile the same text. */
#ifndef TM_CUDA_COMMON_CUH
#define TM_CUDA_COMMON_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* ---- errors and launches ----------------------------------------------------------- */

/* Where the first failing CUDA call was; the backend turns it into one line that names
 * the op (tm_cuda_fail in backend_cuda.cu). */
typedef struct tm_cuda_where {
    cudaError_t rc;   /* the first error, cudaSuccess while none */
    const char *file; /* its source file */
    int line;         /* and line */
    const char *expr; /* the call, as written */
} tm_cuda_where;

/* Set by CUDA_TRY on the first error of a launcher; read (and cleared) by the backend. */
static tm_cuda_where tm_cuda_last_where __attribute__((unused));

/* Evaluates a cudaError_t expression; on failure records where and returns the error from
 * the enclosing function (which returns cudaError_t). */
#define CUDA_TRY(expr)                                                                  \
    do {                                                                                \
        cudaError_t tm_rc_ = (expr);                                                    \
        if (tm_rc_ != cudaSuccess) {                                                    \
            if (tm_cuda_last_where.rc == cudaSuccess)                                   \
                tm_cuda_last_where = tm_cuda_where{tm_rc_, __FILE__, __LINE__, #expr};   \
            return tm_rc_;                                                              \
        }                                                                               \
    } while (0)

/* Launches kernel on (grid, block) with smem bytes of dynamic shared memory on stream and
 * evaluates to the launch's cudaError_t. A templated kernel goes in parentheses:
 * TM_LAUNCH((k<T, 4>), ...). On the GPU this is <<<>>>; in the harness, one block after
 * another, each thread a fiber. */
#ifdef TM_CUDA_SIM
/* What the GPU branch's cudaGetLastError after <<<>>> gives: the launch's own error, else
 * one that an earlier call left unread (which the GPU pins on this launch); read, so
 * cleared, either way. */
static inline cudaError_t tm_sim_launch_status(cudaError_t launch_rc) {
    const cudaError_t last = cudaGetLastError();
    return launch_rc != cudaSuccess ? launch_rc : last;
}
#define TM_LAUNCH(kernel, grid, block, smem, stream, ...)                                                       \
    tm_sim_launch_status(tm_sim_launch(#kernel, kernel, dim3(grid), dim3(block), (size_t)(smem), (stream), \
                                       [&]() { kernel(__VA_ARGS__); }))
#else
#define TM_LAUNCH(kernel, grid, block, smem, stream, ...) \
    (kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__), cudaGetLastError())
#endif

static inline unsigned tm_cdiv(long long a, long long b) { return (unsigned)((a + b - 1) / b); }

/* ---- device helpers ---------------------------------------------------------------- */

/* The launch's dynamic shared memory as T*. (extern __shared__ is declared once here so
 * that kernels with different T do not clash, and so that the harness can bound it.) */
template <typename T>
__device__ __forceinline__ T *tm_dyn_smem() {
#ifdef TM_CUDA_SIM
    return reinterpret_cast<T *>(tm_sim_dyn_smem());
#else
    extern __shared__ __align__(16) unsigned char tm_dyn_smem_bytes[];
    return reinterpret_cast<T *>(tm_dyn_smem_bytes);
#endif
}

__device__ __forceinline__ float tm_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float tm_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* ---- tensor cores and async copies (sm_80+) ---------------------------------------- */

/* d = a * b + c with a 16x16 (row) f16, b 16x8 (col) f16, c and d 16x8 f32, one warp.
 * Fragments (g = lane / 4, t = lane % 4): a[0] row g cols 2t..2t+1, a[1] row g+8 same
 * cols, a[2] row g cols 2t+8..2t+9, a[3] row g+8 those cols; b[0] k 2t..2t+1 and b[1]
 * k 2t+8..2t+9, both at n = g; c/d [0..1] row g cols 2t..2t+1, [2..3] row g+8. */
__device__ __forceinline__ void tm_mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                    const float c[4]) {
#ifdef TM_CUDA_SIM
    tm_sim_mma_m16n8k16_f16(d, a, b, c);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
          "f"(c[2]), "f"(c[3]));
#endif
}

/* d = a * b + c with a 16x32 (row) s8, b 32x8 (col) s8, c and d 16x8 s32, one warp.
 * Fragments: a[0] row g k 4t..4t+3, a[1] row g+8 same k, a[2] row g k 4t+16..4t+19,
 * a[3] row g+8 those k; b[0] k 4t..4t+3 and b[1] k 4t+16..4t+19, both at n = g; c/d as
 * in the f16 MMA. */
__device__ __forceinline__ void tm_mma_m16n8k32_s8(int d[4], const uint32_t a[4], const uint32_t b[2],
                                                   const int c[4]) {
#ifdef TM_CUDA_SIM
    tm_sim_mma_m16n8k32_s8(d, a, b, c);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]),
          "r"(c[2]), "r"(c[3]));
#endif
}

/* ldmatrix.x4: four 8x8 b16 matrices from shared memory; lanes 8i..8i+7 give the 16-byte
 * row addresses of matrix i, and r[i] receives this lane's part of matrix i (row lane / 4,
 * elements 2 (lane % 4) and +1). trans: each matrix is transposed on the way. */
__device__ __forceinline__ void tm_ldmatrix_x4(uint32_t r[4], const void *smem_row) {
#ifdef TM_CUDA_SIM
    tm_sim_ldmatrix(r, 4, 0, smem_row);
#else
    unsigned a = (unsigned)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#endif
}

__device__ __forceinline__ void tm_ldmatrix_x4_trans(uint32_t r[4], const void *smem_row) {
#ifdef TM_CUDA_SIM
    tm_sim_ldmatrix(r, 4, 1, smem_row);
#else
    unsigned a = (unsigned)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#endif
}

/* ldmatrix.x2: two matrices; lanes 0..15 give the row addresses (lanes 16..31 must pass a
 * valid address too, which is ignored). */
__device__ __forceinline__ void tm_ldmatrix_x2(uint32_t r[2], const void *smem_row) {
#ifdef TM_CUDA_SIM
    tm_sim_ldmatrix(r, 2, 0, smem_row);
#else
    unsigned a = (unsigned)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
#endif
}

__device__ __forceinline__ void tm_ldmatrix_x2_trans(uint32_t r[2], const void *smem_row) {
#ifdef TM_CUDA_SIM
    tm_sim_ldmatrix(r, 2, 1, smem_row);
#else
    unsigned a = (unsigned)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(a));
#endif
}

/* 16 bytes global -> shared without passing through registers; both addresses 16-byte
 * aligned. Visible after tm_cp_async_wait and a barrier. */
__device__ __forceinline__ void tm_cp_async_16(void *smem, const void *gmem) {
#ifdef TM_CUDA_SIM
    tm_sim_cp_async(smem, gmem, 16);
#else
    unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(gmem));
#endif
}

__device__ __forceinline__ void tm_cp_async_commit() {
#ifdef TM_CUDA_SIM
    tm_sim_cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

/* Waits until at most n committed groups of this thread are still in flight. */
template <int n>
__device__ __forceinline__ void tm_cp_async_wait() {
#ifdef TM_CUDA_SIM
    tm_sim_cp_async_wait(n);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(n));
#endif
}

/* Two floats as one f16x2 register (lo in the low half), the unit of MMA fragments. */
__device__ __forceinline__ uint32_t tm_pack_half2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}

#endif

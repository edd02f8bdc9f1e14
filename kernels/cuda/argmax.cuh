/* argmax.cuh - the greedy pick of each logits row on the device, so that only the token
 * ids cross to the host. Kernels first, then launchers. */
#ifndef TM_CUDA_ARGMAX_CUH
#define TM_CUDA_ARGMAX_CUH

#include "kernels/cuda/backend_cuda.cuh"

/* A candidate: value and column; at < 0 means none yet. */
typedef struct tm_argmax_pair {
    float v;
    int32_t at;
} tm_argmax_pair;

/* Does (v, at) beat (bv, bat)? The larger value, the lower column on a tie; NaN never wins
 * (the rule of tm_argmax in common/common.h). */
static __device__ __forceinline__ bool tm_argmax_better(float v, int32_t at, float bv, int32_t bat) {
    if (at < 0 || v != v) return false;
    return bat < 0 || v > bv || (v == bv && at < bat);
}

/* The block's best pair, valid in thread 0. red holds 32 pairs of shared memory. */
static __device__ tm_argmax_pair tm_argmax_block(tm_argmax_pair p, tm_argmax_pair *red) {
    for (int o = 16; o > 0; o >>= 1) {
        float v = __shfl_xor_sync(0xffffffffu, p.v, o);
        int32_t at = __shfl_xor_sync(0xffffffffu, p.at, o);
        if (tm_argmax_better(v, at, p.v, p.at)) p.v = v, p.at = at;
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) red[warp] = p;
    __syncthreads();
    if (warp == 0) {
        p = lane < (int)blockDim.x / 32 ? red[lane] : tm_argmax_pair{0.0f, -1};
        for (int o = 16; o > 0; o >>= 1) {
            float v = __shfl_xor_sync(0xffffffffu, p.v, o);
            int32_t at = __shfl_xor_sync(0xffffffffu, p.at, o);
            if (tm_argmax_better(v, at, p.v, p.at)) p.v = v, p.at = at;
        }
    }
    return p;
}

/* Block (row r, chunk c): the best pair of columns [c * chunk, (c + 1) * chunk) of row r,
 * to part[r * gridDim.y + c]; with one chunk per row, the answer straight to out[r]. Rows
 * go on x, whose limit is 2^31 - 1 blocks (y and z stop at 65535, and a step may ask for
 * more logits rows than that). */
static __global__ void tm_argmax_chunk_kernel(tm_argmax_pair *part, int32_t *out, const float *x, int n_cols,
                                              int chunk) {
    __shared__ tm_argmax_pair red[32];
    const float *row = x + (size_t)blockIdx.x * n_cols;
    const int lo = blockIdx.y * chunk, hi = min(n_cols, lo + chunk);
    tm_argmax_pair p = {0.0f, -1};
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) /* ascending: '>' keeps the first */
        if (tm_argmax_better(row[i], i, p.v, p.at)) p.v = row[i], p.at = i;
    p = tm_argmax_block(p, red);
    if (threadIdx.x != 0) return;
    if (gridDim.y == 1)
        out[blockIdx.x] = p.at < 0 ? 0 : p.at;
    else
        part[(size_t)blockIdx.x * gridDim.y + blockIdx.y] = p;
}

/* Block r: merges row r's n_chunks partials into out[r] (0 when the row is all NaN). */
static __global__ void tm_argmax_merge_kernel(int32_t *out, const tm_argmax_pair *part, int n_chunks) {
    __shared__ tm_argmax_pair red[32];
    tm_argmax_pair p = {0.0f, -1};
    for (int c = threadIdx.x; c < n_chunks; c += blockDim.x) {
        tm_argmax_pair q = part[(size_t)blockIdx.x * n_chunks + c];
        if (tm_argmax_better(q.v, q.at, p.v, p.at)) p = q;
    }
    p = tm_argmax_block(p, red);
    if (threadIdx.x == 0) out[blockIdx.x] = p.at < 0 ? 0 : p.at;
}

/* out (n_rows, device int32) = argmax of each row of x (n_rows, n_cols). A 128k row in one
 * block would leave most SMs idle at small batches, so rows are split into chunks of at
 * least 2048 columns, enough of them to give every SM about two blocks; at 2 x SMs rows
 * or more, one chunk per row and no merge. */
static cudaError_t tm_cuda_argmax_rows(const tm_cuda_ctx *ctx, int32_t *out, const float *x, int n_rows,
                                       int n_cols) {
    if (n_rows <= 0) return cudaSuccess;
    int n_chunks = (2 * ctx->n_sm + n_rows - 1) / n_rows;
    const int max_chunks = n_cols > 2048 ? (n_cols + 2047) / 2048 : 1; /* 0 columns: one empty chunk, out 0 */
    n_chunks = n_chunks < 1 ? 1 : n_chunks > max_chunks ? max_chunks : n_chunks;
    const int chunk = (n_cols + n_chunks - 1) / n_chunks;
    void *scratch = NULL;
    if (n_chunks > 1) CUDA_TRY(tm_cuda_scratch_get(ctx, sizeof(tm_argmax_pair) * (size_t)n_rows * n_chunks, &scratch));
    tm_argmax_pair *part = (tm_argmax_pair *)scratch;
    const int threads = chunk >= 256 ? 256 : chunk > 32 ? (chunk + 31) / 32 * 32 : 32; /* short rows: no idle warps */
    CUDA_TRY(TM_LAUNCH(tm_argmax_chunk_kernel, dim3(n_rows, n_chunks), threads, 0, ctx->stream, part, out, x,
                       n_cols, chunk));
    if (n_chunks > 1) CUDA_TRY(TM_LAUNCH(tm_argmax_merge_kernel, n_rows, 32, 0, ctx->stream, out, part, n_chunks));
    return cudaSuccess;
}

#endif

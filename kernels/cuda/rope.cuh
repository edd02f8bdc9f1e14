/* rope.cuh - rotary position embedding and the KV-cache store. Kernels first, then
 * launchers. */
#ifndef TM_CUDA_ROPE_CUH
#define TM_CUDA_ROPE_CUH

#include "kernels/cuda/backend_cuda.cuh"

/* Rotated pairs per head the rope op takes (head_dim up to 1024, as on the CPU). */
enum { TM_ROPE_MAX_FACTORS = 512 };

/* One block per token: rotates pair i of every head of q (n_heads) and k (n_kv_heads) by
 * pos * inv_freq[i]. The angle is formed and reduced to [-pi, pi] in double, as the CPU
 * reference forms it (a float angle at position 1e5 is off by ~1e-2 rad); sin and cos of
 * the reduced angle are then exact enough in float. */
static __global__ void tm_rope_kernel(float *q, float *k, const int32_t *pos, int n_heads, int n_kv_heads,
                                      int head_dim, int n_dims, int neox, const double *inv_freq) {
    const int t = blockIdx.x, half = n_dims / 2;
    const double two_pi = 6.283185307179586;
    const int n_pairs = (n_heads + n_kv_heads) * half;
    for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) {
        const int h = p / half, i = p % half;
        float *xh = h < n_heads ? q + ((size_t)t * n_heads + h) * head_dim
                                : k + ((size_t)t * n_kv_heads + (h - n_heads)) * head_dim;
        double a = (double)pos[t] * inv_freq[i];
        a -= two_pi * rint(a / two_pi);
        float s, c;
        sincosf((float)a, &s, &c);
        /* neox rotates (i, i + half); llama GGUF rotates adjacent pairs (2i, 2i + 1) */
        const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
        const float x0 = xh[i0], x1 = xh[i1];
        xh[i0] = x0 * c - x1 * s;
        xh[i1] = x0 * s + x1 * c;
    }
}

/* One block per token: K and V of every kv head into the token's page slot as f16. */
static __global__ void tm_kv_store_kernel(__half *k_pool, __half *v_pool, const float *k, const float *v,
                                          const int32_t *slots, int n_kv_heads, int head_dim, int block_size) {
    const int t = blockIdx.x, slot = slots[t];
    if (slot < 0) return; /* padding */
    const int block = slot / block_size, off = slot % block_size;
    const int row = n_kv_heads * head_dim;
    for (int e = threadIdx.x; e < row; e += blockDim.x) {
        const int h = e / head_dim, d = e % head_dim;
        const size_t dst = (((size_t)block * n_kv_heads + h) * block_size + off) * head_dim + d;
        k_pool[dst] = __float2half_rn(k[(size_t)t * row + e]);
        v_pool[dst] = __float2half_rn(v[(size_t)t * row + e]);
    }
}

/* Rotates q (n, n_heads, head_dim) and k (n, n_kv_heads, head_dim) in place at pos (n,
 * device); inv_freq (n_dims / 2) device doubles, the per-pair frequency with freq_scale and
 * freq_factors folded in (the backend computes them on the host, as the CPU does). */
static cudaError_t tm_cuda_rope(const tm_cuda_ctx *ctx, float *q, float *k, const int32_t *pos, int n, int n_heads,
                                int n_kv_heads, int head_dim, int n_dims, int neox, const double *inv_freq) {
    if (n <= 0) return cudaSuccess;
    const int pairs = (n_heads + n_kv_heads) * (n_dims / 2);
    const int threads = pairs >= 256 ? 256 : (pairs + 31) / 32 * 32;
    CUDA_TRY(TM_LAUNCH(tm_rope_kernel, n, threads, 0, ctx->stream, q, k, pos, n_heads, n_kv_heads, head_dim,
                       n_dims, neox, inv_freq));
    return cudaSuccess;
}

/* Writes k, v (n, n_kv_heads, head_dim) f32 of layer into the pool at slots (n, device). */
static cudaError_t tm_cuda_kv_store(const tm_cuda_ctx *ctx, struct tm_kv_cache *kv, int layer, const float *k,
                                    const float *v, const int32_t *slots, int n) {
    if (n <= 0) return cudaSuccess;
    const tm_kv_shape *s = &kv->shape;
    const size_t off = tm_cuda_kv_layer_offset(s, layer);
    const int row = s->n_kv_heads * s->head_dim;
    CUDA_TRY(TM_LAUNCH(tm_kv_store_kernel, n, row >= 256 ? 256 : (row + 31) / 32 * 32, 0, ctx->stream,
                       kv->k + off, kv->v + off, k, v, slots, s->n_kv_heads, s->head_dim, s->block_size));
    return cudaSuccess;
}

#endif

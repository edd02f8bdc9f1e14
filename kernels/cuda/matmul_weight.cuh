/* matmul_weight.cuh - weights on the device: the layout the matmul kernels read, its
 * upload at load (tm_cuda_weight_init / tm_cuda_weight_deinit), and embedding rows
 * (tm_cuda_weight_rows). Part of the matmul family (matmul.cuh).
 *
 * GGUF blocks are 18, 20, 22, 24, 34, 144, 176 or 210 bytes, so inside a row they are only 2-byte
 * aligned and no 16-byte load can read them (KERNELS.md section 1). At upload each
 * quantized weight is split into separate arrays, each row of each a multiple of 16 bytes:
 *
 *   qs  (n_rows, row_qs) the quants, the bytes in GGUF order within each block:
 *         Q4_0, Q4_1, nb x 16 B  (byte j: value j low nibble, value j + 16 high nibble;
 *         Q5_0, Q5_1             for Q5 the low 4 bits of the values)
 *         Q8_0        nb x 32 B  (int8)
 *         Q4_K        nsb x 128 B (the block's qs[128])
 *         Q5_K        nsb x 160 B (the block's qs[128] then qh[32])
 *         Q6_K        nsb x 192 B (the block's ql[128] then qh[64])
 *   sd  (n_rows, row_sd) the scales:
 *         Q4_0, Q5_0, Q8_0  nbp x f16 d
 *         Q4_1, Q5_1        nbp x (f16 d, f16 m)
 *         Q4_K, Q5_K  nsb x 16 B (the block's d, dmin and 12 bytes of 6-bit scales/mins)
 *         Q6_K        nsb x 16 B (the block's int8 scales[16])
 *   d6  (n_rows, nsbp) f16, Q6_K only: the super-block scale d
 *   qh  (n_rows, nbp) u32, Q5_0 and Q5_1 only: each block's qh, the fifth bits (bit j:
 *         value j), so that a 256-value step's are two aligned 16-byte chunks
 * with nb = n_cols / 32 blocks and nsb = n_cols / 256 super-blocks per row, and nbp, nsbp
 * those rounded up to a multiple of 8, so that the scales of 8 consecutive blocks (one
 * 256-value step of the tiled kernel) are one aligned 16-byte chunk; the padding is zero.
 * Each array starts 256-byte aligned in one device allocation. Dequantizing this layout
 * gives tm_dequantize_row's values bit for bit (same operations in the same order).
 *
 * F32, F16 and BF16 weights are stored as they are (row-major), which is what cuBLAS
 * reads. */
#ifndef TM_CUDA_MATMUL_WEIGHT_CUH
#define TM_CUDA_MATMUL_WEIGHT_CUH

#include <cuda_bf16.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/backend_cuda.cuh"

extern "C" {
#include "common/common.h"
}

/* A weight as the kernels see it (passed to them by value). */
typedef struct tm_mm_qw {
    const uint8_t *qs; /* (n_rows, row_qs) quants; dense types: the row-major elements */
    const uint8_t *sd; /* (n_rows, row_sd) scales, per dtype as above; NULL for dense */
    const __half *d6;  /* (n_rows, row_d6) Q6_K super-block scales; NULL otherwise */
    const uint32_t *qh; /* (n_rows, row_qh) Q5_0 / Q5_1 fifth bits per block; NULL otherwise */
    int64_t n_rows;    /* output features */
    int64_t n_cols;    /* input features */
    int nb;            /* 32-value blocks per row (n_cols / 32); dense: unused */
    int row_qs;        /* bytes per row of qs (dense: n_cols * element size) */
    int row_sd;        /* bytes per row of sd */
    int row_d6;        /* f16 elements per row of d6 */
    int row_qh;        /* u32 elements per row of qh */
} tm_mm_qw;

/* What tm_weight.aux points to (host memory); tm_weight.data is the device allocation. */
typedef struct tm_cuda_wstore {
    tm_mm_qw view;  /* device pointers into the allocation */
    size_t n_bytes; /* size of the allocation */
} tm_cuda_wstore;

static inline int tm_mm_is_dense(tm_dtype t) {
    return t == TM_DTYPE_F32 || t == TM_DTYPE_F16 || t == TM_DTYPE_BF16;
}

static inline int tm_mm_is_kquant(tm_dtype t) { return t == TM_DTYPE_Q4_K || t == TM_DTYPE_Q5_K || t == TM_DTYPE_Q6_K; }

/* The legacy 5-bit types: Q4_0 / Q4_1 plus a fifth bit per value (qh). */
static __host__ __device__ constexpr bool tm_mm_is_q5(tm_dtype t) { return t == TM_DTYPE_Q5_0 || t == TM_DTYPE_Q5_1; }
/* Legacy types with a min per block (value = d q + m), the others are value = d q. */
static __host__ __device__ constexpr bool tm_mm_has_min(tm_dtype t) { return t == TM_DTYPE_Q4_1 || t == TM_DTYPE_Q5_1; }

static inline int tm_mm_supported(tm_dtype t) {
    return tm_mm_is_dense(t) || t == TM_DTYPE_Q4_0 || t == TM_DTYPE_Q4_1 || tm_mm_is_q5(t) || t == TM_DTYPE_Q8_0 ||
           tm_mm_is_kquant(t);
}

static inline int64_t tm_mm_round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

/* Row sizes of the layout for a dtype and row length (n_cols valid for the dtype). */
static void tm_mm_layout(tm_dtype t, int64_t n_cols, tm_mm_qw *v) {
    const int nb = (int)(n_cols / TM_QK), nsb = (int)(n_cols / TM_QK_K);
    const int nbp = (int)tm_mm_round_up(nb, 8), nsbp = (int)tm_mm_round_up(nsb, 8);
    v->n_cols = n_cols;
    v->nb = nb;
    v->row_sd = v->row_d6 = v->row_qh = 0;
    switch (t) {
    case TM_DTYPE_F32: v->row_qs = (int)(n_cols * 4); break;
    case TM_DTYPE_F16:
    case TM_DTYPE_BF16: v->row_qs = (int)(n_cols * 2); break;
    case TM_DTYPE_Q4_0: v->row_qs = nb * 16, v->row_sd = nbp * 2; break;
    case TM_DTYPE_Q4_1: v->row_qs = nb * 16, v->row_sd = nbp * 4; break;
    case TM_DTYPE_Q5_0: v->row_qs = nb * 16, v->row_sd = nbp * 2, v->row_qh = nbp; break;
    case TM_DTYPE_Q5_1: v->row_qs = nb * 16, v->row_sd = nbp * 4, v->row_qh = nbp; break;
    case TM_DTYPE_Q8_0: v->row_qs = nb * 32, v->row_sd = nbp * 2; break;
    case TM_DTYPE_Q4_K: v->row_qs = nsb * 128, v->row_sd = nsb * 16; break;
    case TM_DTYPE_Q5_K: v->row_qs = nsb * 160, v->row_sd = nsb * 16; break;
    case TM_DTYPE_Q6_K: v->row_qs = nsb * 192, v->row_sd = nsb * 16, v->row_d6 = nsbp; break;
    default: v->row_qs = 0; break;
    }
}

/* One GGUF row -> its rows of qs, sd, d6 and qh (sd, d6 and qh zeroed by the caller:
 * padding). */
static void tm_mm_repack_row(tm_dtype t, const uint8_t *src, int64_t n_cols, uint8_t *qs, uint8_t *sd, uint8_t *d6,
                             uint8_t *qh) {
    const int64_t nb = n_cols / TM_QK, nsb = n_cols / TM_QK_K;
    switch (t) {
    case TM_DTYPE_Q4_0:
        for (int64_t b = 0; b < nb; b++, src += sizeof(tm_block_q4_0)) {
            memcpy(sd + 2 * b, src, 2);
            memcpy(qs + 16 * b, src + 2, 16);
        }
        break;
    case TM_DTYPE_Q4_1:
        for (int64_t b = 0; b < nb; b++, src += sizeof(tm_block_q4_1)) {
            memcpy(sd + 4 * b, src, 4);
            memcpy(qs + 16 * b, src + 4, 16);
        }
        break;
    case TM_DTYPE_Q5_0: /* d, qh[4], qs[16] */
        for (int64_t b = 0; b < nb; b++, src += sizeof(tm_block_q5_0)) {
            memcpy(sd + 2 * b, src, 2);
            memcpy(qh + 4 * b, src + 2, 4);
            memcpy(qs + 16 * b, src + 6, 16);
        }
        break;
    case TM_DTYPE_Q5_1: /* d, m, qh[4], qs[16] */
        for (int64_t b = 0; b < nb; b++, src += sizeof(tm_block_q5_1)) {
            memcpy(sd + 4 * b, src, 4);
            memcpy(qh + 4 * b, src + 4, 4);
            memcpy(qs + 16 * b, src + 8, 16);
        }
        break;
    case TM_DTYPE_Q8_0:
        for (int64_t b = 0; b < nb; b++, src += sizeof(tm_block_q8_0)) {
            memcpy(sd + 2 * b, src, 2);
            memcpy(qs + 32 * b, src + 2, 32);
        }
        break;
    case TM_DTYPE_Q4_K:
        for (int64_t b = 0; b < nsb; b++, src += sizeof(tm_block_q4_k)) {
            memcpy(sd + 16 * b, src, 16);
            memcpy(qs + 128 * b, src + 16, 128);
        }
        break;
    case TM_DTYPE_Q5_K: /* d, dmin, scales[12], qh[32], qs[128] */
        for (int64_t b = 0; b < nsb; b++, src += sizeof(tm_block_q5_k)) {
            memcpy(sd + 16 * b, src, 16);
            memcpy(qs + 160 * b, src + 48, 128);
            memcpy(qs + 160 * b + 128, src + 16, 32);
        }
        break;
    case TM_DTYPE_Q6_K:
        for (int64_t b = 0; b < nsb; b++, src += sizeof(tm_block_q6_k)) {
            memcpy(qs + 192 * b, src, 192);
            memcpy(sd + 16 * b, src + 192, 16);
            memcpy(d6 + 2 * b, src + 208, 2);
        }
        break;
    default:
        break;
    }
}

/* Turns a failed CUDA call of the upload into err; an allocation failure is TM_ENOMEM. */
static int tm_mm_upload_fail(cudaError_t rc, const char *what, tm_dtype t, int64_t n_rows, int64_t n_cols,
                             size_t n_bytes, char *err, size_t err_len) {
    (void)cudaGetLastError(); /* clear it, so that the next launch's check does not see it */
    if (rc == cudaErrorMemoryAllocation)
        return tm_fail(err, err_len, TM_ENOMEM, "cuda matmul: out of device memory for a %lld x %lld %s weight (%.1f MiB)",
                       (long long)n_rows, (long long)n_cols, tm_dtype_name(t), (double)n_bytes / (1 << 20));
    return tm_fail(err, err_len, TM_EIO, "cuda matmul: %s of a %lld x %lld %s weight failed: %s", what,
                   (long long)n_rows, (long long)n_cols, tm_dtype_name(t), cudaGetErrorString(rc));
}

/* Repacks rows in chunks through a host staging buffer of about this size. */
enum { TM_MM_STAGING_BYTES = 8 << 20 };

/* Copies GGUF-layout rows from host_src into the device arrays of v, row chunk by row
 * chunk. Returns cudaSuccess or the failing call's error; *what names the call. */
static cudaError_t tm_mm_upload(const tm_cuda_ctx *ctx, tm_dtype t, const tm_mm_qw *v, const uint8_t *host_src,
                                const char **what) {
    const int64_t src_row = tm_dtype_row_bytes(t, v->n_cols);
    const size_t row_all = (size_t)v->row_qs + v->row_sd + 2 * (size_t)v->row_d6 + 4 * (size_t)v->row_qh;
    const int64_t chunk = row_all >= TM_MM_STAGING_BYTES ? 1 : (int64_t)(TM_MM_STAGING_BYTES / row_all);
    const int64_t rows = chunk < v->n_rows ? chunk : v->n_rows;
    uint8_t *stage = (uint8_t *)malloc((size_t)rows * row_all);
    if (!stage) {
        *what = "host staging allocation";
        return cudaErrorMemoryAllocation;
    }
    uint8_t *qs = stage, *sd = qs + (size_t)rows * v->row_qs, *d6 = sd + (size_t)rows * v->row_sd;
    uint8_t *qh = d6 + (size_t)rows * 2 * v->row_d6;
    cudaError_t rc = cudaSuccess;
    for (int64_t r0 = 0; r0 < v->n_rows && rc == cudaSuccess; r0 += rows) {
        const int64_t m = v->n_rows - r0 < rows ? v->n_rows - r0 : rows;
        memset(sd, 0, (size_t)m * v->row_sd);
        memset(d6, 0, (size_t)m * 2 * v->row_d6);
        memset(qh, 0, (size_t)m * 4 * v->row_qh);
        for (int64_t r = 0; r < m; r++)
            tm_mm_repack_row(t, host_src + (r0 + r) * src_row, v->n_cols, qs + r * v->row_qs, sd + r * v->row_sd,
                             d6 + r * 2 * v->row_d6, qh + r * 4 * v->row_qh);
        *what = "copy to the device";
        rc = cudaMemcpyAsync((uint8_t *)v->qs + r0 * v->row_qs, qs, (size_t)m * v->row_qs, cudaMemcpyHostToDevice,
                             ctx->stream);
        if (rc == cudaSuccess)
            rc = cudaMemcpyAsync((uint8_t *)v->sd + r0 * v->row_sd, sd, (size_t)m * v->row_sd,
                                 cudaMemcpyHostToDevice, ctx->stream);
        if (rc == cudaSuccess && v->row_d6)
            rc = cudaMemcpyAsync((uint8_t *)v->d6 + r0 * v->row_d6, d6, (size_t)m * 2 * v->row_d6,
                                 cudaMemcpyHostToDevice, ctx->stream);
        if (rc == cudaSuccess && v->row_qh)
            rc = cudaMemcpyAsync((uint8_t *)(v->qh + r0 * v->row_qh), qh, (size_t)m * 4 * v->row_qh,
                                 cudaMemcpyHostToDevice, ctx->stream);
        /* the staging buffer is refilled next round: wait for the copies to read it */
        if (rc == cudaSuccess) rc = cudaStreamSynchronize(ctx->stream);
    }
    free(stage);
    return rc;
}

/* Uploads (and repacks) a GGUF-layout weight: w->data is the device allocation, w->aux a
 * host tm_cuda_wstore. host_src is borrowed for the call only. Fails with
 * TM_EUNSUPPORTED for a dtype the kernels cannot multiply, TM_EINVAL for a bad shape,
 * TM_ENOMEM when the device (or host staging) is out of memory, TM_EIO for another CUDA
 * failure; w is left zeroed then. Caller thread only (uses ctx->stream). */
static int tm_cuda_weight_init(const tm_cuda_ctx *ctx, tm_weight *w, tm_dtype dtype, int64_t n_rows, int64_t n_cols,
                               const void *host_src, char *err, size_t err_len) {
    memset(w, 0, sizeof(*w));
    if (!tm_mm_supported(dtype))
        return tm_fail(err, err_len, TM_EUNSUPPORTED,
                       "cuda matmul: unsupported weight dtype %s (id %d): the CUDA kernels take f32, f16, bf16, "
                       "q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k and q6_k (the CPU backend, --device cpu, "
                       "takes q2_k and q3_k too)",
                       tm_dtype_name(dtype), (int)dtype);
    const int64_t src_row = tm_dtype_row_bytes(dtype, n_cols);
    /* kernels index rows and columns with int (row bytes, blocks), so bound them */
    if (n_rows <= 0 || n_cols <= 0 || src_row < 0 || n_cols > ((int64_t)1 << 26) || !host_src)
        return tm_fail(err, err_len, TM_EINVAL, "cuda matmul: bad %s weight shape %lld x %lld", tm_dtype_name(dtype),
                       (long long)n_rows, (long long)n_cols);
    tm_cuda_wstore *st = (tm_cuda_wstore *)calloc(1, sizeof(*st));
    if (!st) return tm_fail(err, err_len, TM_ENOMEM, "cuda matmul: out of host memory");
    tm_mm_qw *v = &st->view;
    tm_mm_layout(dtype, n_cols, v);
    v->n_rows = n_rows;
    const size_t qs_bytes = (size_t)tm_mm_round_up(n_rows * v->row_qs, 256);
    const size_t sd_bytes = (size_t)tm_mm_round_up(n_rows * v->row_sd, 256);
    const size_t d6_bytes = (size_t)tm_mm_round_up(n_rows * 2 * v->row_d6, 256);
    const size_t n_bytes = qs_bytes + sd_bytes + d6_bytes + (size_t)n_rows * 4 * v->row_qh;
    st->n_bytes = n_bytes;
    void *dev = NULL;
    cudaError_t rc = cudaMalloc(&dev, n_bytes);
    if (rc != cudaSuccess) {
        free(st);
        return tm_mm_upload_fail(rc, "allocation", dtype, n_rows, n_cols, n_bytes, err, err_len);
    }
    v->qs = (const uint8_t *)dev;
    const char *what = "copy to the device";
    if (tm_mm_is_dense(dtype)) {
        rc = cudaMemcpyAsync(dev, host_src, (size_t)n_rows * v->row_qs, cudaMemcpyHostToDevice, ctx->stream);
        if (rc == cudaSuccess) rc = cudaStreamSynchronize(ctx->stream);
    } else {
        v->sd = v->qs + qs_bytes;
        v->d6 = v->row_d6 ? (const __half *)(v->sd + sd_bytes) : NULL;
        v->qh = v->row_qh ? (const uint32_t *)(v->sd + sd_bytes + d6_bytes) : NULL;
        rc = tm_mm_upload(ctx, dtype, v, (const uint8_t *)host_src, &what);
    }
    if (rc != cudaSuccess) {
        cudaFree(dev);
        free(st);
        return tm_mm_upload_fail(rc, what, dtype, n_rows, n_cols, n_bytes, err, err_len);
    }
    w->dtype = dtype;
    w->n_rows = n_rows;
    w->n_cols = n_cols;
    w->data = dev;
    w->aux = st;
    return TM_OK;
}

/* Frees what tm_cuda_weight_init made; a zeroed w is a no-op. The device must not still
 * be reading it (the caller synchronizes first). */
static void tm_cuda_weight_deinit(tm_weight *w) {
    if (!w) return;
    if (w->data) cudaFree(w->data);
    free(w->aux);
    memset(w, 0, sizeof(*w));
}

static inline const tm_mm_qw *tm_mm_view(const tm_weight *w) { return &((const tm_cuda_wstore *)w->aux)->view; }

/* ---- dequantization (kernels) ------------------------------------------------------ */

/* The 8 six-bit scales and 8 mins of a Q4_K super-block, from its 12 packed bytes held as
 * three little-endian words s[0..2] (KERNELS.md section 1), as bytes of four words:
 * u[0], u[1] scales 0-3, 4-7; u[2], u[3] mins 0-3, 4-7. For j >= 4 the top two bits come
 * from bits 6-7 of byte j - 4 (scales) or j (mins): (b >> 2) & 0x30 per byte. */
__device__ __forceinline__ void tm_mm_q4k_unpack(const uint32_t s[3], uint32_t u[4]) {
    u[0] = s[0] & 0x3f3f3f3fu;
    u[1] = (s[2] & 0x0f0f0f0fu) | ((s[0] >> 2) & 0x30303030u);
    u[2] = s[1] & 0x3f3f3f3fu;
    u[3] = ((s[2] >> 4) & 0x0f0f0f0fu) | ((s[1] >> 2) & 0x30303030u);
}
/* byte j (0..7) of the pair u[0], u[1] (scales) or u[2], u[3] (mins) */
__device__ __forceinline__ int tm_mm_byte8(const uint32_t *u, int j) {
    return (int)(((j & 4) ? u[1] : u[0]) >> (8 * (j & 3))) & 0xff; /* a select, not an indexed (local) load */
}

/* Values it*32 .. it*32+31 of row r as f32, in the order and with the rounding of
 * tm_dequantize_row (products and sums rounded separately: __fmul_rn / __fadd_rn keep
 * the compiler from fusing them). */
template <tm_dtype T>
__device__ void tm_mm_dequant32(const tm_mm_qw &w, int64_t r, int it, float y[32]) {
    if constexpr (T == TM_DTYPE_Q4_0 || T == TM_DTYPE_Q4_1 || tm_mm_is_q5(T)) {
        const uint8_t *q = w.qs + r * w.row_qs + 16 * it;
        const __half *s = (const __half *)(w.sd + r * w.row_sd);
        const float d = __half2float(s[tm_mm_has_min(T) ? 2 * it : it]);
        const float m = tm_mm_has_min(T) ? __half2float(s[2 * it + 1]) : 0.0f;
        const uint32_t h = tm_mm_is_q5(T) ? w.qh[r * w.row_qh + it] : 0; /* Q4: no fifth bits */
        const int zero = T == TM_DTYPE_Q4_0 ? 8 : 16;                    /* of the types without a min */
        for (int j = 0; j < 16; j++) {
            const int lo = (q[j] & 15) | ((h >> j) & 1) << 4, hi = (q[j] >> 4) | ((h >> (j + 16)) & 1) << 4;
            if (!tm_mm_has_min(T)) {
                y[j] = __fmul_rn((float)(lo - zero), d);
                y[j + 16] = __fmul_rn((float)(hi - zero), d);
            } else {
                y[j] = __fadd_rn(__fmul_rn((float)lo, d), m);
                y[j + 16] = __fadd_rn(__fmul_rn((float)hi, d), m);
            }
        }
    } else if constexpr (T == TM_DTYPE_Q8_0) {
        const int8_t *q = (const int8_t *)(w.qs + r * w.row_qs + 32 * it);
        const float d = __half2float(((const __half *)(w.sd + r * w.row_sd))[it]);
        for (int j = 0; j < 32; j++) y[j] = __fmul_rn((float)q[j], d);
    } else if constexpr (T == TM_DTYPE_Q4_K || T == TM_DTYPE_Q5_K) {
        /* item it: sub-block j = it % 8 of super-block it / 8, values 64c + 32 (j & 1) + l
         * in chunk c = j / 2: low nibbles for even j, high for odd; Q5_K: bit j of qh[l] */
        constexpr int QB = T == TM_DTYPE_Q5_K ? 160 : 128; /* quant bytes per super-block */
        const int sb = it >> 3, j = it & 7;
        const uint8_t *h = w.sd + r * w.row_sd + 16 * sb;
        const uint8_t *q = w.qs + r * w.row_qs + QB * sb + 32 * (j >> 1);
        const uint8_t *qh = w.qs + r * w.row_qs + QB * sb + 128; /* Q5_K only */
        const uint32_t s[3] = {*(const uint32_t *)(h + 4), *(const uint32_t *)(h + 8), *(const uint32_t *)(h + 12)};
        uint32_t u[4];
        tm_mm_q4k_unpack(s, u);
        const float d = __half2float(*(const __half *)h), dmin = __half2float(*(const __half *)(h + 2));
        const float d1 = __fmul_rn(d, (float)tm_mm_byte8(u, j)), m1 = __fmul_rn(dmin, (float)tm_mm_byte8(u + 2, j));
        for (int l = 0; l < 32; l++) {
            int v = (j & 1) ? q[l] >> 4 : q[l] & 15;
            if (T == TM_DTYPE_Q5_K) v |= ((qh[l] >> j) & 1) << 4;
            y[l] = __fsub_rn(__fmul_rn(d1, (float)v), m1);
        }
    } else if constexpr (T == TM_DTYPE_Q6_K) {
        /* item it: values 32 s .. 32 s + 31 of half h (s = it % 4, h = it / 4 % 2) */
        const int sb = it >> 3, h = (it >> 2) & 1, s = it & 3;
        const uint8_t *ql = w.qs + r * w.row_qs + 192 * sb + 64 * h + 32 * (s & 1);
        const uint8_t *qh = w.qs + r * w.row_qs + 192 * sb + 128 + 32 * h;
        const int8_t *sc = (const int8_t *)(w.sd + r * w.row_sd + 16 * sb);
        const float d = __half2float(w.d6[r * w.row_d6 + sb]);
        for (int l = 0; l < 32; l++) {
            const int v = (((ql[l] >> (4 * (s >> 1))) & 15) | (((qh[l] >> (2 * s)) & 3) << 4)) - 32;
            y[l] = __fmul_rn(__fmul_rn(d, (float)sc[8 * h + 2 * s + (l >> 4)]), (float)v);
        }
    }
}

/* out (n, n_cols) = rows ids[0..n) of w as f32; one block per id. An id outside
 * [0, n_rows) gives a row of NaN (a kernel cannot return an error; NaN shows). */
template <tm_dtype T>
static __global__ void tm_mm_rows_kernel(float *out, tm_mm_qw w, const int32_t *ids) {
    const int32_t id = ids[blockIdx.x];
    float *o = out + (int64_t)blockIdx.x * w.n_cols;
    if (id < 0 || id >= w.n_rows) {
        for (int64_t k = threadIdx.x; k < w.n_cols; k += blockDim.x) o[k] = NAN;
        return;
    }
    if constexpr (T == TM_DTYPE_F32 || T == TM_DTYPE_F16 || T == TM_DTYPE_BF16) {
        const uint8_t *row = w.qs + (int64_t)id * w.row_qs;
        for (int64_t k = threadIdx.x; k < w.n_cols; k += blockDim.x) {
            if (T == TM_DTYPE_F32) o[k] = ((const float *)row)[k];
            if (T == TM_DTYPE_F16) o[k] = __half2float(((const __half *)row)[k]);
            if (T == TM_DTYPE_BF16) o[k] = __bfloat162float(((const __nv_bfloat16 *)row)[k]);
        }
    } else {
        for (int it = threadIdx.x; it < w.nb; it += blockDim.x) {
            float y[32];
            tm_mm_dequant32<T>(w, id, it, y);
            if (((uintptr_t)o & 15) == 0) {
                float4 *o4 = (float4 *)(o + 32 * it);
#pragma unroll
                for (int j = 0; j < 8; j++) o4[j] = make_float4(y[4 * j], y[4 * j + 1], y[4 * j + 2], y[4 * j + 3]);
            } else {
                for (int j = 0; j < 32; j++) o[32 * it + j] = y[j];
            }
        }
    }
}

/* out (n, w->n_cols) f32 = rows ids[0..n) (device int32) of w: the embedding. */
static cudaError_t tm_cuda_weight_rows(const tm_cuda_ctx *ctx, float *out, const tm_weight *w, const int32_t *ids,
                                       int n) {
    if (n <= 0) return cudaSuccess;
    const tm_mm_qw v = *tm_mm_view(w);
    const int threads = 128;
    switch (w->dtype) {
    case TM_DTYPE_F32: CUDA_TRY(TM_LAUNCH(tm_mm_rows_kernel<TM_DTYPE_F32>, n, threads, 0, ctx->stream, out, v, ids)); break;
    case TM_DTYPE_F16: CUDA_TRY(TM_LAUNCH(tm_mm_rows_kernel<TM_DTYPE_F16>, n, threads, 0, ctx->stream, out, v, ids)); break;
    case TM_DTYPE_BF16: CUDA_TRY(TM_LAUNCH(tm_mm_rows_kernel<TM_DTYPE_BF16>, n, threads, 0, ctx->stream, out, v, ids)); break;
    case TM_DTYPE_Q4_0: CUDA_TRY(TM_LAUNCH(tm_mm_rows_kernel<TM_DTYPE_Q4_0>, n, threads, 0, ctx->stream, out, v, ids)); break;
    case TM_DTYPE_Q4_1: CUDA_TRY(TM_LAUNCH(tm_mm_rows_kernel<TM_DTYPE_Q4_1>, n, threads, 0, ctx->stream, out, v, ids)); break;
    case TM_DTYPE_Q5_0: CUDA_TRY(TM_LAUNCH(tm_mm_rows_kernel<TM_DTYPE_Q5_0>, n, threads, 0, ctx->stream, out, v, ids)); break;
    case TM_DTYPE_Q5_1: CUDA_TRY(TM_LAUNCH(tm_mm_rows_kernel<TM_DTYPE_Q5_1>, n, threads, 0, ctx->stream, out, v, ids)); break;
    case TM_DTYPE_Q8_0: CUDA_TRY(TM_LAUNCH(tm_mm_rows_kernel<TM_DTYPE_Q8_0>, n, threads, 0, ctx->stream, out, v, ids)); break;
    case TM_DTYPE_Q4_K: CUDA_TRY(TM_LAUNCH(tm_mm_rows_kernel<TM_DTYPE_Q4_K>, n, threads, 0, ctx->stream, out, v, ids)); break;
    case TM_DTYPE_Q5_K: CUDA_TRY(TM_LAUNCH(tm_mm_rows_kernel<TM_DTYPE_Q5_K>, n, threads, 0, ctx->stream, out, v, ids)); break;
    case TM_DTYPE_Q6_K: CUDA_TRY(TM_LAUNCH(tm_mm_rows_kernel<TM_DTYPE_Q6_K>, n, threads, 0, ctx->stream, out, v, ids)); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}

#endif

/* backend.h - the op interface. The forward pass in models/ is written once against this
 * table; each backend (cpu/, cuda/) fills it in and keeps its state private.
 *
 * Conventions
 * - Buffers passed to ops live in the backend's memory (host memory for the CPU backend,
 *   device memory for CUDA); get them from be->alloc and fill them with be->upload.
 * - Activations are f32, row-major, one row per token: x (n_tokens, dim).
 * - Ops are called from one thread (the engine thread). A backend may run an op on its
 *   own worker threads but returns only when the result is ready (CPU) or ordered on its
 *   stream (CUDA; be->synchronize waits).
 * - The batch description (tm_batch) and the index arrays ops take (ids, pos, slots,
 *   rows) always live in host memory; a device backend copies what it needs. */
#ifndef TM_BACKEND_H
#define TM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A 2-D weight matrix: n_rows output features, each row n_cols input features long.
 * The data layout is the backend's private business (it may repack GGUF blocks). */
typedef struct tm_weight {
    tm_dtype dtype;  /* element type of the source (GGUF) data */
    int64_t n_rows;  /* output features */
    int64_t n_cols;  /* input features (row length, multiple of the dtype's block) */
    void *data;      /* backend-private storage */
    void *aux;       /* backend-private extra (scales, repack info); may be NULL */
} tm_weight;

/* Element type of a KV cache (--kv-cache-dtype). */
typedef enum tm_kv_dtype {
    TM_KV_F16 = 0,  /* fp16, the default */
    TM_KV_INT8 = 1, /* symmetric int8 with one f32 scale per key or value vector (token, kv
                     * head): about half the bytes, so twice the tokens and less to read per
                     * step; attention results move by the rounding (a few 1e-3 relative) */
} tm_kv_dtype;

/* Shapes an int8 cache takes: head_dim a multiple of 4 (keys are packed 4 dims to a
 * 32-bit group) and at most 1024 (a dot of that many s8 x s8 products, < 2^24, is exact
 * in f32 as well as in int32, so every kernel forms the same sum). */
enum { TM_KV_INT8_MAX_HEAD_DIM = 1024 };

/* "f16" / "int8"; NULL for an unknown value. */
const char *tm_kv_dtype_name(tm_kv_dtype t);
/* TM_KV_* for a name, or -1. */
int tm_kv_dtype_from_name(const char *name);

/* Shape of a paged KV cache: n_blocks pages, each holding block_size tokens of every
 * layer. Each backend documents its memory layout next to its kv_create. */
typedef struct tm_kv_shape {
    int n_layers;      /* transformer layers */
    int n_blocks;      /* pages in the pool */
    int block_size;    /* tokens per page */
    int n_kv_heads;    /* key/value heads */
    int head_dim;      /* dims per head */
    tm_kv_dtype dtype; /* element type (zero: f16) */
} tm_kv_shape;

/* Bytes of one (layer, page, kv head) tile of K or of V. int8: the values, then the
 * block_size f32 scales at byte tm_kv_tile_scale_offset, each part padded to 64 bytes. */
static inline size_t tm_kv_tile_scale_offset(const tm_kv_shape *s) {
    return ((size_t)s->block_size * s->head_dim + 63) / 64 * 64;
}
static inline size_t tm_kv_tile_bytes(const tm_kv_shape *s) {
    if (s->dtype == TM_KV_INT8) return tm_kv_tile_scale_offset(s) + ((size_t)s->block_size * 4 + 63) / 64 * 64;
    return s->dtype == TM_KV_F16 ? (size_t)s->block_size * s->head_dim * 2 : 0; /* 0: unknown dtype */
}
/* Bytes of one page: K and V of every layer and kv head. */
static inline size_t tm_kv_page_bytes(const tm_kv_shape *s) {
    return 2 * (size_t)s->n_layers * s->n_kv_heads * tm_kv_tile_bytes(s);
}

typedef struct tm_kv_cache tm_kv_cache; /* opaque, per backend */

/* Rotary position embedding parameters. */
typedef struct tm_rope {
    int n_dims;                 /* dims rotated per head (<= head_dim, even) */
    int neox;                   /* 1: pairs (i, i + n_dims/2) (NeoX/Qwen2); 0: pairs (2i, 2i+1) (llama GGUF) */
    float theta;                /* base frequency */
    float freq_scale;           /* linear position scale (1 / factor), 1.0 = none */
    const float *freq_factors;  /* (n_dims/2) host f32 divisors of each frequency (Llama 3.1 "rope_freqs"), or NULL */
} tm_rope;

/* One engine step: n_tokens flattened tokens from n_seqs sequences. A decode is a
 * sequence contributing 1 token; a prefill chunk contributes many. Within a sequence the
 * tokens are consecutive positions ending at ctx_len[s] - 1. Host memory. */
typedef struct tm_batch {
    int n_tokens;               /* tokens in this step */
    int n_seqs;                 /* sequences in this step */
    const int32_t *tokens;      /* (n_tokens) token ids */
    const int32_t *pos;         /* (n_tokens) position of each token in its sequence */
    const int32_t *seq_start;   /* (n_seqs + 1) sequence s owns tokens [seq_start[s], seq_start[s+1]) */
    const int32_t *ctx_len;     /* (n_seqs) sequence length after this step (cached + new) */
    const int32_t *block_table; /* (n_seqs, max_blocks) page ids of each sequence, in order */
    int max_blocks;             /* row stride of block_table */
    const int32_t *slots;       /* (n_tokens) KV slot = page * block_size + offset; < 0: skip */
    int n_logits;               /* rows that need logits */
    const int32_t *logit_rows;  /* (n_logits) token indices, ascending */
} tm_batch;

typedef struct tm_backend tm_backend;

struct tm_backend {
    const char *name;        /* "cpu", "cuda" */
    const char *description; /* one line for the startup log: the device, its memory, threads */
    void *impl;              /* private state */
    int host_memory;         /* 1: its buffers are host memory, so an op may write a caller's
                                host buffer directly instead of a copy through download */

    void (*destroy)(tm_backend *be);

    /* Memory. alloc returns NULL on failure. upload/download copy host<->backend. */
    void *(*alloc)(tm_backend *be, size_t n_bytes);
    void (*free)(tm_backend *be, void *p);
    void (*upload)(tm_backend *be, void *dst, const void *src, size_t n_bytes);
    void (*download)(tm_backend *be, void *dst, const void *src, size_t n_bytes);
    /* Waits until every queued op is done. Returns 0, or the first error an op (or a copy)
     * met since the last call, with one line in err that names the op; the backend stays
     * usable only if the error says so (a CUDA fault poisons its context). Ops themselves
     * return nothing: a device backend learns of most faults only here. */
    int (*synchronize)(tm_backend *be, char *err, size_t err_len);
    /* Free and total bytes of the backend's memory (the device's, for CUDA). NULL op: the
     * backend has no fixed pool (host memory). */
    int (*memory_info)(tm_backend *be, size_t *free_bytes, size_t *total_bytes);

    /* Announces the batch of the ops that follow until the next call (one forward step). A
     * device backend copies the batch's index arrays to its memory once here; the ops of
     * the step then pass those same host arrays (b->tokens, b->pos, b->slots, ...) and the
     * backend uses its copies. NULL op: nothing to prepare. */
    void (*set_batch)(tm_backend *be, const tm_batch *b);

    /* Weights. src is GGUF-layout data in host memory (often the mmap'd file) that stays
     * valid until weight_deinit; the backend may reference it in place or copy/repack.
     * Fails with TM_EUNSUPPORTED (and a message) for a dtype it cannot multiply. */
    int (*weight_init)(tm_backend *be, tm_weight *w, tm_dtype dtype, int64_t n_rows,
                       int64_t n_cols, const void *src, char *err, size_t err_len);
    void (*weight_deinit)(tm_backend *be, tm_weight *w);

    /* KV cache pool. TM_EINVAL for a bad shape, TM_EUNSUPPORTED for one the backend's
     * attention cannot take, TM_ENOMEM; with one line in err (err may be NULL). */
    int (*kv_create)(tm_backend *be, const tm_kv_shape *shape, tm_kv_cache **out, char *err, size_t err_len);
    void (*kv_destroy)(tm_backend *be, tm_kv_cache *kv);

    /* out (n, table.n_cols) = rows ids[0..n) of table, as f32. */
    void (*embed)(tm_backend *be, float *out, const tm_weight *table, const int32_t *ids, int n);
    /* out (n, dim) = x / rms(x) * w; w (dim) f32. out may alias x. */
    void (*rmsnorm)(tm_backend *be, float *out, const float *x, const float *w, int n, int dim,
                    float eps);
    /* The residual step and the next norm in one pass: x (n, dim) += r, then out (n, dim) =
     * rmsnorm(x) * w. Results equal add then rmsnorm. out may alias r, not x. NULL op:
     * callers run add and rmsnorm. */
    void (*add_rmsnorm)(tm_backend *be, float *x, const float *r, const float *w, float *out, int n, int dim,
                        float eps);
    /* out (n) = a + b elementwise. out may alias a or b. */
    void (*add)(tm_backend *be, float *out, const float *a, const float *b, int64_t n);
    /* out (n, w.n_rows) = x (n, w.n_cols) @ w^T (+ bias (w.n_rows) f32 if not NULL). */
    void (*matmul)(tm_backend *be, float *out, const float *x, const tm_weight *w,
                   const float *bias, int n);
    /* outs[k] = x @ ws[k]^T (+ biases[k]) for k < n_w: one input, several weights (q/k/v,
     * gate/up), so the backend can prepare x once and run them as one job. Results equal
     * n_w matmul calls. biases may be NULL. NULL op: callers loop over matmul. */
    void (*matmul_multi)(tm_backend *be, int n_w, float *const outs[], const float *x,
                         const tm_weight *const ws[], const float *const biases[], int n);
    /* Rotates q (n, n_heads, head_dim) and k (n, n_kv_heads, head_dim) in place at pos (n). */
    void (*rope)(tm_backend *be, float *q, float *k, const int32_t *pos, int n, int n_heads,
                 int n_kv_heads, int head_dim, const tm_rope *rope);
    /* Writes k, v (n, n_kv_heads, head_dim) of layer into the cache at slots (n); slot < 0 skipped. */
    void (*kv_store)(tm_backend *be, tm_kv_cache *kv, int layer, const float *k, const float *v,
                     const int32_t *slots, int n);
    /* Causal paged attention for the ragged batch: out (n_tokens, n_heads, head_dim) from
     * q (n_tokens, n_heads, head_dim) against the cached keys/values of each sequence
     * (positions [0, ctx_len) through its block table; the new tokens must already be
     * stored). Token t of sequence s sees keys 0..pos[t], or with window > 0 (a sliding-
     * window layer) only keys pos[t] - window + 1..pos[t]. GQA: head h uses kv head
     * h / (n_heads / n_kv_heads). softmax(s) with s = q.k * scale, soft-capped to
     * softcap * tanh(s / softcap) when softcap > 0 (Gemma 2). */
    void (*attention)(tm_backend *be, float *out, const float *q, const tm_kv_cache *kv,
                      int layer, const tm_batch *batch, int n_heads, float scale, int window,
                      float softcap);
    /* out (n) = silu(gate) * up. out may alias gate or up. */
    void (*silu_mul)(tm_backend *be, float *out, const float *gate, const float *up, int64_t n);
    /* out (n) = gelu(gate) * up with GELU's tanh form, gelu(g) = g / 2 * (1 + tanh(
     * sqrt(2 / pi) * (g + 0.044715 g^3))) (Gemma's feed-forward). out may alias gate or up. */
    void (*gelu_mul)(tm_backend *be, float *out, const float *gate, const float *up, int64_t n);
    /* out (n) = x * s, or with cap > 0 cap * tanh(x * s / cap) (soft-capping: Gemma's final
     * logits; with s = sqrt(dim) and cap 0, Gemma's embedding scale). out may alias x. */
    void (*scale)(tm_backend *be, float *out, const float *x, int64_t n, float s, float cap);
    /* out (n_rows, dim) = x[rows[i]] rows gathered (for the logits of selected tokens). */
    void (*get_rows)(tm_backend *be, float *out, const float *x, const int32_t *rows, int n_rows,
                     int dim);
    /* out[r] (host memory) = the lowest column of the largest value of row r of x (n_rows,
     * n_cols) in backend memory, such as the logits forward leaves there; NaN never wins,
     * and an all-NaN row gives 0 (tm_argmax in common/common.h, the greedy pick). Returns
     * when out is filled. NULL op: callers download the rows and loop themselves. */
    void (*argmax_rows)(tm_backend *be, const float *x, int n_rows, int n_cols, int32_t *out);
};

/* CPU backend with n_threads workers (<= 0: one per online CPU). simd: TM_SIMD_AUTO or a
 * forced level from kernels/cpu/simd.h (tests use TM_SIMD_SCALAR for the reference).
 * Returns NULL and fills err on failure (e.g. a forced level this CPU lacks).
 * Caller thread only; destroy with be->destroy(be). */
tm_backend *tm_backend_cpu_create(int n_threads, int simd, char *err, size_t err_len);

/* CUDA backend on device_id. NULL and err ("no CUDA device", ...) when unavailable,
 * including builds without CUDA. */
tm_backend *tm_backend_cuda_create(int device_id, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif

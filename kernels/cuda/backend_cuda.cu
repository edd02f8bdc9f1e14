/* backend_cuda.cu - the CUDA backend: the op table, device memory, the KV pool, the stream
 * and the step's index arrays. The kernels live in one header per op family (see
 * backend_cuda.cuh); this file only binds them to kernels/backend.h and turns a failed
 * CUDA call into an error that names the op.
 *
 * Errors: an op that fails records the first failure (op, CUDA's message, file:line) and
 * later ops of the step are skipped; synchronize reports it. A fault on the device (an
 * illegal address) surfaces at the next synchronize, named after the last op queued. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/backend_cuda.cuh"

#include "kernels/cuda/argmax.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/matmul.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/rope.cuh"

extern "C" {
#include "common/common.h"
}

/* Rope frequencies of one parameter set on the device. */
typedef struct tm_cuda_rope_set {
    double *inv_freq;         /* (TM_ROPE_MAX_FACTORS) device */
    int valid, n_dims;        /* the parameters inv_freq was computed for */
    float theta, freq_scale;
    int has_factors;
    float factors[TM_ROPE_MAX_FACTORS];
    uint64_t used;            /* rope call count when last used: the older set is replaced */
} tm_cuda_rope_set;

/* Index arrays of one step packed in one buffer: 7 int32 arrays, each 64-byte aligned. */
enum { TM_CUDA_BATCH_ARRAYS = 7 };

typedef struct tm_cuda_backend {
    tm_backend be;            /* the public table; first so impl casts are trivial */
    int device;               /* CUDA device id */
    tm_cuda_ctx ctx;          /* stream, cuBLAS, scratch, device limits: what launchers get */
    tm_cuda_scratch scratch;  /* ctx.scratch points here */
    tm_cuda_batch batch;      /* the step's index arrays on the device; batch.host NULL: none */
    int32_t *batch_dev;       /* device memory behind batch's arrays */
    int32_t *batch_pinned;    /* pinned host staging of the same */
    size_t batch_cap;         /* int32s both hold */
    cudaEvent_t batch_copied; /* recorded after the staging buffer's copy: reuse waits on it */
    int32_t *index_dev;       /* device copy of an index array that is not the step's */
    size_t index_cap;         /* int32s it holds */
    tm_cuda_attn_state attn;  /* attention's per-step plan */
    tm_cuda_rope_set rope[2]; /* two sets: Gemma's sliding-window and global layers alternate */
    uint64_t rope_calls;      /* rope calls so far */
    int32_t *argmax_pinned;   /* (argmax_cap) pinned host landing of argmax results */
    int argmax_cap;
    int failed;               /* an op failed since the last synchronize: skip the rest */
    int fail_code;            /* its TM_E* code */
    char fail_msg[256];       /* and its line */
    char description[320];    /* "cuda:0 NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90, 132 SMs" */
} tm_cuda_backend;

static tm_cuda_backend *tm_cuda(tm_backend *be) { return (tm_cuda_backend *)be->impl; }

/* tm_cuda, for the entry points a thread may call first (memory, weights, the cache, a
 * step's set_batch, synchronize): makes the backend's device the calling thread's current
 * one. The current device is per host thread, and the engine thread is not the one that
 * created the backend; the ops of a step run on the thread of its set_batch. */
static tm_cuda_backend *tm_cuda_enter(tm_backend *be) {
    tm_cuda_backend *c = tm_cuda(be);
    cudaSetDevice(c->device); /* a failure shows in the call that follows */
    return c;
}

/* ---- errors ------------------------------------------------------------------------ */

/* Records op's failure rc (first one wins); where it happened comes from CUDA_TRY. Reads
 * the runtime's last error too: a failure that is not sticky (an allocation, a launch
 * configuration) would otherwise stay there for the next launch's cudaGetLastError to
 * pin on that launch, a later op of a later step. */
static void tm_cuda_fail(tm_cuda_backend *c, const char *op, cudaError_t rc) {
    (void)cudaGetLastError();
    tm_cuda_where w = tm_cuda_last_where;
    tm_cuda_last_where = tm_cuda_where{cudaSuccess, NULL, 0, NULL};
    if (c->failed) return;
    c->failed = 1;
    c->fail_code = rc == cudaErrorMemoryAllocation ? TM_ENOMEM : TM_EIO;
    if (w.file)
        snprintf(c->fail_msg, sizeof c->fail_msg, "%s: %s (%s:%d: %s)", op, cudaGetErrorString(rc), w.file, w.line,
                 w.expr);
    else
        snprintf(c->fail_msg, sizeof c->fail_msg, "%s: %s", op, cudaGetErrorString(rc));
}

/* Runs one launcher of op unless an earlier op of the step failed. */
#define TM_CUDA_OP(c, op, call)                                  \
    do {                                                         \
        if ((c)->failed) break;                                  \
        cudaError_t tm_op_rc_ = (call);                          \
        if (tm_op_rc_ != cudaSuccess) tm_cuda_fail((c), (op), tm_op_rc_); \
    } while (0)

/* ---- memory ------------------------------------------------------------------------ */

static void *tm_cuda_alloc(tm_backend *be, size_t n_bytes) {
    tm_cuda_enter(be);
    void *p = NULL;
    if (cudaMalloc(&p, n_bytes ? n_bytes : 256) != cudaSuccess) {
        (void)cudaGetLastError(); /* an allocation failure is not sticky: clear it */
        return NULL;
    }
    return p;
}

/* Waits for the stream first, so that a buffer the queued ops still read is not freed
 * under them (cudaFree's own wait for the device is not documented). A fault it meets is
 * sticky: synchronize reports it. */
static void tm_cuda_free(tm_backend *be, void *p) {
    if (!p) return;
    tm_cuda_backend *c = tm_cuda_enter(be);
    cudaStreamSynchronize(c->ctx.stream);
    const cudaError_t rc = cudaFree(p);
    if (rc != cudaSuccess) tm_cuda_fail(c, "free", rc); /* reported by synchronize, not by the next launch */
}

static void tm_cuda_upload(tm_backend *be, void *dst, const void *src, size_t n_bytes) {
    tm_cuda_backend *c = tm_cuda_enter(be);
    TM_CUDA_OP(c, "upload", cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyHostToDevice, c->ctx.stream));
}

/* The step's device copies are valid until the host looks at results: after that the
 * caller may refill the same host arrays for the next step. */
static void tm_cuda_end_batch(tm_cuda_backend *c) { c->batch.host = NULL; }

static void tm_cuda_download(tm_backend *be, void *dst, const void *src, size_t n_bytes) {
    tm_cuda_backend *c = tm_cuda_enter(be);
    TM_CUDA_OP(c, "download", cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyDeviceToHost, c->ctx.stream));
    TM_CUDA_OP(c, "download", cudaStreamSynchronize(c->ctx.stream));
    tm_cuda_end_batch(c);
}

static int tm_cuda_synchronize(tm_backend *be, char *err, size_t err_len) {
    tm_cuda_backend *c = tm_cuda_enter(be);
    cudaError_t rc = cudaStreamSynchronize(c->ctx.stream);
    if (rc != cudaSuccess) tm_cuda_fail(c, "a kernel queued before synchronize", rc);
    tm_cuda_end_batch(c);
    if (!c->failed) return TM_OK;
    int code = c->fail_code;
    tm_fail(err, err_len, code, "%s", c->fail_msg);
    c->failed = 0;
    return code;
}

static int tm_cuda_memory_info(tm_backend *be, size_t *free_bytes, size_t *total_bytes) {
    tm_cuda_enter(be);
    if (cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) return TM_EIO;
    return TM_OK;
}

/* ---- the step's index arrays ------------------------------------------------------- */

/* Grows a device int32 array to at least n. The old one is freed only after the stream has
 * drained (queued kernels may still read it); on failure *p is NULL and *cap 0. */
static cudaError_t tm_cuda_grow(cudaStream_t stream, int32_t **p, size_t *cap, size_t n) {
    if (n <= *cap) return cudaSuccess;
    size_t want = *cap ? *cap : 1024;
    while (want < n) want *= 2;
    CUDA_TRY(cudaStreamSynchronize(stream));
    if (*p) cudaFree(*p);
    *p = NULL;
    *cap = 0;
    CUDA_TRY(cudaMalloc((void **)p, want * sizeof(int32_t)));
    *cap = want;
    return cudaSuccess;
}

static size_t tm_cuda_pad16(size_t n) { return (n + 15) / 16 * 16; }

static cudaError_t tm_cuda_batch_upload(tm_cuda_backend *c, const tm_batch *b) {
    const size_t n_t = (size_t)b->n_tokens, n_s = (size_t)b->n_seqs;
    const int32_t *src[TM_CUDA_BATCH_ARRAYS] = {b->tokens,  b->pos,   b->seq_start,  b->ctx_len,
                                                b->block_table, b->slots, b->logit_rows};
    const size_t len[TM_CUDA_BATCH_ARRAYS] = {n_t, n_t, n_s + 1, n_s, n_s * (size_t)b->max_blocks, n_t,
                                              (size_t)b->n_logits};
    size_t total = 0;
    for (int i = 0; i < TM_CUDA_BATCH_ARRAYS; i++) total += tm_cuda_pad16(len[i]);
    if (total > c->batch_cap) {
        /* batch_cap covers both buffers: 0 until both exist again, so that a failure here
         * leaves no half-grown pair for the next step to write into */
        size_t cap = c->batch_cap;
        c->batch_cap = 0;
        CUDA_TRY(tm_cuda_grow(c->ctx.stream, &c->batch_dev, &cap, total)); /* drains the stream */
        if (c->batch_pinned) cudaFreeHost(c->batch_pinned);
        c->batch_pinned = NULL;
        CUDA_TRY(cudaMallocHost((void **)&c->batch_pinned, cap * sizeof(int32_t)));
        c->batch_cap = cap;
    }
    CUDA_TRY(cudaEventSynchronize(c->batch_copied)); /* the previous copy has left the staging */
    int32_t *dst[TM_CUDA_BATCH_ARRAYS];
    size_t off = 0;
    for (int i = 0; i < TM_CUDA_BATCH_ARRAYS; i++) {
        if (len[i] && src[i]) memcpy(c->batch_pinned + off, src[i], len[i] * sizeof(int32_t));
        dst[i] = c->batch_dev + off;
        off += tm_cuda_pad16(len[i]);
    }
    CUDA_TRY(cudaMemcpyAsync(c->batch_dev, c->batch_pinned, off * sizeof(int32_t), cudaMemcpyHostToDevice,
                             c->ctx.stream));
    CUDA_TRY(cudaEventRecord(c->batch_copied, c->ctx.stream));
    c->batch = tm_cuda_batch{b,      c->batch.step + 1, dst[0], dst[1], dst[2],
                             dst[3], dst[4],            dst[5], dst[6]};
    return cudaSuccess;
}

static void tm_cuda_set_batch(tm_backend *be, const tm_batch *b) {
    tm_cuda_backend *c = tm_cuda_enter(be);
    TM_CUDA_OP(c, "set_batch", tm_cuda_batch_upload(c, b));
}

/* The device copy of n host int32s: the step's own copy when host is one of its arrays
 * (set_batch), else a fresh upload into index_dev (stream order keeps it intact until the
 * op that reads it has run). That upload is from pageable memory, which the driver stages
 * before cudaMemcpyAsync returns, so the caller may reuse host at once (a test runs two
 * queued get_rows through one host array to show it on a GPU). */
static cudaError_t tm_cuda_index(tm_cuda_backend *c, const int32_t *host, size_t n, const int32_t **dev) {
    const tm_cuda_batch *bt = &c->batch;
    if (bt->host) {
        const tm_batch *b = bt->host;
        const int32_t *const hosts[] = {b->tokens, b->pos, b->slots, b->logit_rows};
        const int32_t *const devs[] = {bt->tokens, bt->pos, bt->slots, bt->logit_rows};
        const size_t lens[] = {(size_t)b->n_tokens, (size_t)b->n_tokens, (size_t)b->n_tokens, (size_t)b->n_logits};
        for (int i = 0; i < 4; i++)
            if (host == hosts[i] && n <= lens[i]) {
                *dev = devs[i];
                return cudaSuccess;
            }
    }
    CUDA_TRY(tm_cuda_grow(c->ctx.stream, &c->index_dev, &c->index_cap, n));
    CUDA_TRY(cudaMemcpyAsync(c->index_dev, host, n * sizeof(int32_t), cudaMemcpyHostToDevice, c->ctx.stream));
    *dev = c->index_dev;
    return cudaSuccess;
}

/* ---- weights and the KV pool ------------------------------------------------------- */

static int tm_cuda_weight_init_op(tm_backend *be, tm_weight *w, tm_dtype dtype, int64_t n_rows, int64_t n_cols,
                                  const void *src, char *err, size_t err_len) {
    return tm_cuda_weight_init(&tm_cuda_enter(be)->ctx, w, dtype, n_rows, n_cols, src, err, err_len);
}

static void tm_cuda_weight_deinit_op(tm_backend *be, tm_weight *w) {
    cudaStreamSynchronize(tm_cuda_enter(be)->ctx.stream); /* queued matmuls may still read it */
    tm_cuda_weight_deinit(w);
}

static int tm_cuda_kv_create(tm_backend *be, const tm_kv_shape *shape, tm_kv_cache **out, char *err,
                             size_t err_len) {
    *out = NULL;
    if (shape->n_layers <= 0 || shape->n_blocks <= 0 || shape->block_size <= 0 || shape->n_kv_heads <= 0 ||
        shape->head_dim <= 0)
        return tm_fail(err, err_len, TM_EINVAL, "bad cache shape");
    const int supported = tm_cuda_attention_supports(&tm_cuda_enter(be)->ctx, shape, err, err_len);
    if (supported) return supported;
    tm_kv_cache *kv = (tm_kv_cache *)calloc(1, sizeof *kv);
    if (!kv) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    kv->shape = *shape;
    const size_t n_bytes = tm_cuda_kv_layer_offset(shape, shape->n_layers) * sizeof(__half);
    cudaStream_t stream = tm_cuda(be)->ctx.stream;
    cudaError_t rc = cudaMalloc((void **)&kv->k, n_bytes);
    if (rc == cudaSuccess) rc = cudaMalloc((void **)&kv->v, n_bytes);
    const int oom = rc != cudaSuccess;
    /* zeroed on the backend's stream: a plain cudaMemset runs on the legacy default stream,
     * which the (non-blocking) stream does not wait for, so the first kv_store could land
     * before the zeros and be wiped by them */
    if (rc == cudaSuccess) rc = cudaMemsetAsync(kv->k, 0, n_bytes, stream);
    if (rc == cudaSuccess) rc = cudaMemsetAsync(kv->v, 0, n_bytes, stream);
    if (rc == cudaSuccess) rc = cudaStreamSynchronize(stream);
    if (rc != cudaSuccess) {
        (void)cudaGetLastError();
        if (kv->k) cudaFree(kv->k);
        if (kv->v) cudaFree(kv->v);
        free(kv);
        if (oom)
            return tm_fail(err, err_len, TM_ENOMEM, "out of device memory for %d pages (%.1f MiB)", shape->n_blocks,
                           2.0 * n_bytes / 1048576.0);
        return tm_fail(err, err_len, TM_EIO, "zeroing the KV pool: %s", cudaGetErrorString(rc));
    }
    *out = kv;
    return TM_OK;
}

static void tm_cuda_kv_destroy(tm_backend *be, tm_kv_cache *kv) {
    if (!kv) return;
    cudaStreamSynchronize(tm_cuda_enter(be)->ctx.stream); /* queued ops may still read the pool */
    cudaFree(kv->k);
    cudaFree(kv->v);
    free(kv);
}

/* ---- ops --------------------------------------------------------------------------- */

static void tm_cuda_embed(tm_backend *be, float *out, const tm_weight *table, const int32_t *ids, int n) {
    tm_cuda_backend *c = tm_cuda(be);
    const int32_t *d_ids = NULL;
    TM_CUDA_OP(c, "embed", tm_cuda_index(c, ids, (size_t)n, &d_ids));
    TM_CUDA_OP(c, "embed", tm_cuda_weight_rows(&c->ctx, out, table, d_ids, n));
}

static void tm_cuda_rmsnorm_op(tm_backend *be, float *out, const float *x, const float *w, int n, int dim,
                               float eps) {
    tm_cuda_backend *c = tm_cuda(be);
    TM_CUDA_OP(c, "rmsnorm", tm_cuda_rmsnorm(&c->ctx, out, x, w, n, dim, eps));
}

static void tm_cuda_add_rmsnorm_op(tm_backend *be, float *x, const float *r, const float *w, float *out, int n,
                                   int dim, float eps) {
    tm_cuda_backend *c = tm_cuda(be);
    TM_CUDA_OP(c, "add_rmsnorm", tm_cuda_add_rmsnorm(&c->ctx, x, r, w, out, n, dim, eps));
}

static void tm_cuda_add_op(tm_backend *be, float *out, const float *a, const float *b, int64_t n) {
    tm_cuda_backend *c = tm_cuda(be);
    TM_CUDA_OP(c, "add", tm_cuda_add(&c->ctx, out, a, b, n));
}

static void tm_cuda_matmul_op(tm_backend *be, float *out, const float *x, const tm_weight *w, const float *bias,
                              int n) {
    tm_cuda_backend *c = tm_cuda(be);
    TM_CUDA_OP(c, "matmul", tm_cuda_matmul(&c->ctx, out, x, w, bias, n));
}

static void tm_cuda_matmul_multi_op(tm_backend *be, int n_w, float *const outs[], const float *x,
                                    const tm_weight *const ws[], const float *const biases[], int n) {
    tm_cuda_backend *c = tm_cuda(be);
    TM_CUDA_OP(c, "matmul", tm_cuda_matmul_multi(&c->ctx, n_w, outs, x, ws, biases, n));
}

/* *inv_freq = these rope parameters' frequencies on the device, computed in double on the
 * host exactly as the CPU reference computes them; recomputed only when neither of the two
 * cached sets holds them. */
static cudaError_t tm_cuda_rope_freqs(tm_cuda_backend *c, const tm_rope *r, const double **inv_freq) {
    const int half = r->n_dims / 2;
    const int has = r->freq_factors != NULL;
    const uint64_t now = ++c->rope_calls;
    if (half > TM_ROPE_MAX_FACTORS) CUDA_TRY(cudaErrorInvalidValue);
    tm_cuda_rope_set *set = NULL;
    for (int i = 0; i < 2; i++) {
        tm_cuda_rope_set *t = &c->rope[i];
        if (t->valid && t->n_dims == r->n_dims && t->theta == r->theta && t->freq_scale == r->freq_scale &&
            t->has_factors == has && (!has || memcmp(t->factors, r->freq_factors, (size_t)half * sizeof(float)) == 0)) {
            t->used = now;
            *inv_freq = t->inv_freq;
            return cudaSuccess;
        }
        if (!set || t->used < set->used) set = t;
    }
    double f[TM_ROPE_MAX_FACTORS];
    for (int i = 0; i < half; i++) {
        f[i] = pow((double)r->theta, -2.0 * i / r->n_dims) * r->freq_scale;
        if (has) f[i] /= r->freq_factors[i];
    }
    set->valid = 0; /* until the copy has landed */
    if (!set->inv_freq) CUDA_TRY(cudaMalloc((void **)&set->inv_freq, TM_ROPE_MAX_FACTORS * sizeof(double)));
    /* On the stream, after the rope launches of earlier parameters and before this one's.
     * (cudaMemcpy would run on the legacy default stream, which the non-blocking stream
     * does not wait for, and may return before its DMA lands.) The wait keeps f, on this
     * stack frame, alive until the copy has read it; parameters change rarely. */
    CUDA_TRY(cudaMemcpyAsync(set->inv_freq, f, (size_t)half * sizeof(double), cudaMemcpyHostToDevice,
                             c->ctx.stream));
    CUDA_TRY(cudaStreamSynchronize(c->ctx.stream));
    set->valid = 1, set->n_dims = r->n_dims, set->theta = r->theta, set->freq_scale = r->freq_scale;
    set->has_factors = has;
    if (has) memcpy(set->factors, r->freq_factors, (size_t)half * sizeof(float));
    set->used = now;
    *inv_freq = set->inv_freq;
    return cudaSuccess;
}

static void tm_cuda_rope_op(tm_backend *be, float *q, float *k, const int32_t *pos, int n, int n_heads,
                            int n_kv_heads, int head_dim, const tm_rope *rope) {
    tm_cuda_backend *c = tm_cuda(be);
    const int32_t *d_pos = NULL;
    const double *inv_freq = NULL;
    TM_CUDA_OP(c, "rope", tm_cuda_rope_freqs(c, rope, &inv_freq));
    TM_CUDA_OP(c, "rope", tm_cuda_index(c, pos, (size_t)n, &d_pos));
    TM_CUDA_OP(c, "rope", tm_cuda_rope(&c->ctx, q, k, d_pos, n, n_heads, n_kv_heads, head_dim, rope->n_dims,
                                       rope->neox, inv_freq));
}

static void tm_cuda_kv_store_op(tm_backend *be, tm_kv_cache *kv, int layer, const float *k, const float *v,
                                const int32_t *slots, int n) {
    tm_cuda_backend *c = tm_cuda(be);
    const int32_t *d_slots = NULL;
    TM_CUDA_OP(c, "kv_store", tm_cuda_index(c, slots, (size_t)n, &d_slots));
    TM_CUDA_OP(c, "kv_store", tm_cuda_kv_store(&c->ctx, kv, layer, k, v, d_slots, n));
}

static void tm_cuda_attention_op(tm_backend *be, float *out, const float *q, const tm_kv_cache *kv, int layer,
                                 const tm_batch *batch, int n_heads, float scale, int window, float softcap) {
    tm_cuda_backend *c = tm_cuda(be);
    if (c->batch.host != batch) TM_CUDA_OP(c, "attention", tm_cuda_batch_upload(c, batch)); /* no set_batch */
    TM_CUDA_OP(c, "attention", tm_cuda_attention(&c->ctx, &c->attn, out, q, kv, layer, &c->batch, n_heads, scale,
                                                 window, softcap));
}

static void tm_cuda_silu_mul_op(tm_backend *be, float *out, const float *gate, const float *up, int64_t n) {
    tm_cuda_backend *c = tm_cuda(be);
    TM_CUDA_OP(c, "silu_mul", tm_cuda_silu_mul(&c->ctx, out, gate, up, n));
}

static void tm_cuda_gelu_mul_op(tm_backend *be, float *out, const float *gate, const float *up, int64_t n) {
    tm_cuda_backend *c = tm_cuda(be);
    TM_CUDA_OP(c, "gelu_mul", tm_cuda_gelu_mul(&c->ctx, out, gate, up, n));
}

static void tm_cuda_scale_op(tm_backend *be, float *out, const float *x, int64_t n, float s, float cap) {
    tm_cuda_backend *c = tm_cuda(be);
    TM_CUDA_OP(c, "scale", tm_cuda_scale(&c->ctx, out, x, n, s, cap));
}

static void tm_cuda_get_rows_op(tm_backend *be, float *out, const float *x, const int32_t *rows, int n_rows,
                                int dim) {
    tm_cuda_backend *c = tm_cuda(be);
    const int32_t *d_rows = NULL;
    TM_CUDA_OP(c, "get_rows", tm_cuda_index(c, rows, (size_t)n_rows, &d_rows));
    TM_CUDA_OP(c, "get_rows", tm_cuda_get_rows(&c->ctx, out, x, d_rows, n_rows, dim));
}

/* The result lands in pinned memory and is copied out after the stream is drained: out
 * is the caller's pageable memory. */
static cudaError_t tm_cuda_argmax_to_host(tm_cuda_backend *c, const float *x, int n_rows, int n_cols, int32_t *out) {
    if (n_rows > c->argmax_cap) {
        if (c->argmax_pinned) cudaFreeHost(c->argmax_pinned);
        c->argmax_pinned = NULL;
        c->argmax_cap = 0;
        CUDA_TRY(cudaMallocHost((void **)&c->argmax_pinned, (size_t)n_rows * sizeof(int32_t)));
        c->argmax_cap = n_rows;
    }
    CUDA_TRY(tm_cuda_grow(c->ctx.stream, &c->index_dev, &c->index_cap, (size_t)n_rows));
    CUDA_TRY(tm_cuda_argmax_rows(&c->ctx, c->index_dev, x, n_rows, n_cols));
    CUDA_TRY(cudaMemcpyAsync(c->argmax_pinned, c->index_dev, (size_t)n_rows * sizeof(int32_t),
                             cudaMemcpyDeviceToHost, c->ctx.stream));
    CUDA_TRY(cudaStreamSynchronize(c->ctx.stream));
    memcpy(out, c->argmax_pinned, (size_t)n_rows * sizeof(int32_t));
    return cudaSuccess;
}

static void tm_cuda_argmax_rows_op(tm_backend *be, const float *x, int n_rows, int n_cols, int32_t *out) {
    tm_cuda_backend *c = tm_cuda_enter(be);
    TM_CUDA_OP(c, "argmax_rows", tm_cuda_argmax_to_host(c, x, n_rows, n_cols, out));
}

/* ---- creation ---------------------------------------------------------------------- */

static void tm_cuda_destroy(tm_backend *be) {
    if (!be) return;
    tm_cuda_backend *c = tm_cuda(be);
    cudaSetDevice(c->device);
    if (c->ctx.stream) cudaStreamSynchronize(c->ctx.stream);
    tm_cuda_attn_state_free(&c->attn);
    if (c->scratch.data) cudaFree(c->scratch.data);
    if (c->batch_dev) cudaFree(c->batch_dev);
    if (c->batch_pinned) cudaFreeHost(c->batch_pinned);
    if (c->index_dev) cudaFree(c->index_dev);
    for (int i = 0; i < 2; i++)
        if (c->rope[i].inv_freq) cudaFree(c->rope[i].inv_freq);
    if (c->argmax_pinned) cudaFreeHost(c->argmax_pinned);
    if (c->batch_copied) cudaEventDestroy(c->batch_copied);
    if (c->ctx.cublas) cublasDestroy(c->ctx.cublas);
    if (c->ctx.stream) cudaStreamDestroy(c->ctx.stream);
    free(c);
}

extern "C" tm_backend *tm_backend_cuda_create(int device_id, char *err, size_t err_len) {
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess || n == 0) {
        tm_fail(err, err_len, TM_ENODEV, "no CUDA device (%s)",
                rc != cudaSuccess ? cudaGetErrorString(rc) : "device count is 0");
        return NULL;
    }
    if (device_id < 0 || device_id >= n) {
        tm_fail(err, err_len, TM_ENODEV, "CUDA device %d does not exist (found %d)", device_id, n);
        return NULL;
    }
    cudaDeviceProp prop;
    if ((rc = cudaGetDeviceProperties(&prop, device_id)) != cudaSuccess || (rc = cudaSetDevice(device_id))) {
        tm_fail(err, err_len, TM_ENODEV, "CUDA device %d: %s", device_id, cudaGetErrorString(rc));
        return NULL;
    }
    if (prop.major < 8) {
        tm_fail(err, err_len, TM_EUNSUPPORTED,
                "CUDA device %d (%s) has compute capability %d.%d; tokenmill's kernels need 8.0 or newer",
                device_id, prop.name, prop.major, prop.minor);
        return NULL;
    }
    tm_cuda_backend *c = (tm_cuda_backend *)calloc(1, sizeof *c);
    if (!c) {
        tm_fail(err, err_len, TM_ENOMEM, "cuda backend: out of memory");
        return NULL;
    }
    c->device = device_id;
    c->be.impl = c; /* tm_cuda_destroy works from here on */
    const char *what = "creating a stream";
    if ((rc = cudaStreamCreateWithFlags(&c->ctx.stream, cudaStreamNonBlocking)) != cudaSuccess) goto fail;
    what = "creating an event";
    if ((rc = cudaEventCreateWithFlags(&c->batch_copied, cudaEventDisableTiming)) != cudaSuccess) goto fail;
    if (cublasCreate(&c->ctx.cublas) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(c->ctx.cublas, c->ctx.stream) != CUBLAS_STATUS_SUCCESS) {
        tm_fail(err, err_len, TM_ENODEV, "CUDA device %d: cuBLAS could not be initialized", device_id);
        tm_cuda_destroy(&c->be);
        return NULL;
    }
    c->ctx.scratch = &c->scratch;
    c->ctx.device = device_id;
    c->ctx.n_sm = prop.multiProcessorCount;
    c->ctx.cc = 10 * prop.major + prop.minor;
    c->ctx.max_smem = prop.sharedMemPerBlockOptin;
    snprintf(c->description, sizeof c->description, "cuda:%d %s, %.1f GiB, sm_%d, %d SMs", device_id, prop.name,
             prop.totalGlobalMem / 1073741824.0, c->ctx.cc, prop.multiProcessorCount);
    c->be = tm_backend{};
    c->be.name = "cuda";
    c->be.description = c->description;
    c->be.impl = c;
    c->be.host_memory = 0;
    c->be.destroy = tm_cuda_destroy;
    c->be.alloc = tm_cuda_alloc;
    c->be.free = tm_cuda_free;
    c->be.upload = tm_cuda_upload;
    c->be.download = tm_cuda_download;
    c->be.synchronize = tm_cuda_synchronize;
    c->be.memory_info = tm_cuda_memory_info;
    c->be.set_batch = tm_cuda_set_batch;
    c->be.weight_init = tm_cuda_weight_init_op;
    c->be.weight_deinit = tm_cuda_weight_deinit_op;
    c->be.kv_create = tm_cuda_kv_create;
    c->be.kv_destroy = tm_cuda_kv_destroy;
    c->be.embed = tm_cuda_embed;
    c->be.rmsnorm = tm_cuda_rmsnorm_op;
    c->be.add_rmsnorm = tm_cuda_add_rmsnorm_op;
    c->be.add = tm_cuda_add_op;
    c->be.matmul = tm_cuda_matmul_op;
    c->be.matmul_multi = tm_cuda_matmul_multi_op;
    c->be.rope = tm_cuda_rope_op;
    c->be.kv_store = tm_cuda_kv_store_op;
    c->be.attention = tm_cuda_attention_op;
    c->be.silu_mul = tm_cuda_silu_mul_op;
    c->be.gelu_mul = tm_cuda_gelu_mul_op;
    c->be.scale = tm_cuda_scale_op;
    c->be.get_rows = tm_cuda_get_rows_op;
    c->be.argmax_rows = tm_cuda_argmax_rows_op;
    return &c->be;
fail:
    tm_fail(err, err_len, TM_ENODEV, "CUDA device %d: %s: %s", device_id, what, cudaGetErrorString(rc));
    tm_cuda_destroy(&c->be);
    return NULL;
}

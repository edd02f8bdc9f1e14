/* backend_cpu.c - the CPU backend: host memory, the thread pool, the matmul of
 * kernels/cpu/matmul.h and the ops of ops.h behind the tm_backend table.
 *
 * KV cache layout (see struct tm_kv_cache in ops.h), f16 or int8, zeroed at creation:
 *   k (n_layers, n_blocks, n_kv_heads, head_dim, block_size): dim-major inside a page,
 *   v (n_layers, n_blocks, n_kv_heads, block_size, head_dim),
 * slot = block * block_size + offset; int8 tiles add their scales (ops.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/threadpool.h"

typedef struct tm_cpu_backend {
    tm_backend be;                /* the public table; first so impl casts are trivial */
    tm_threadpool *pool;          /* n_threads workers (caller is thread 0) */
    tm_cpu_matmul *mm;            /* matmul scratch, bound to pool */
    const tm_cpu_kernels *k;      /* op kernels of the chosen level (scalar if none for it) */
    int simd;                     /* chosen TM_SIMD_* level */
    tm_cpu_scratch attn_scratch;  /* attention work items, split-KV partials, per-thread tiles */
    tm_cpu_rope_cache rope_cache; /* sin/cos of the step's positions, shared by its layers */
    tm_cpu_scratch argmax_scratch; /* per-thread partials of argmax_rows */
    char description[64];         /* "cpu: N threads, <simd level>" */
} tm_cpu_backend;

static tm_cpu_backend *tm_cpu(tm_backend *be) { return be->impl; }

static void tm_cpu_destroy(tm_backend *be) {
    if (!be) return;
    tm_cpu_backend *c = tm_cpu(be);
    tm_cpu_matmul_destroy(c->mm);
    tm_threadpool_destroy(c->pool);
    tm_cpu_scratch_free(&c->attn_scratch);
    for (int i = 0; i < 2; i++) tm_cpu_scratch_free(&c->rope_cache.set[i].mem);
    tm_cpu_scratch_free(&c->argmax_scratch);
    free(c);
}

static void *tm_cpu_alloc(tm_backend *be, size_t n_bytes) {
    (void)be;
    /* 64-byte aligned so SIMD rows never straddle a cache line needlessly */
    size_t n = (n_bytes + 63) / 64 * 64;
    return aligned_alloc(64, n ? n : 64);
}

static void tm_cpu_free(tm_backend *be, void *p) {
    (void)be;
    free(p);
}

static void tm_cpu_copy(tm_backend *be, void *dst, const void *src, size_t n_bytes) {
    (void)be;
    if (n_bytes) memcpy(dst, src, n_bytes);
}

static int tm_cpu_synchronize(tm_backend *be, char *err, size_t err_len) {
    (void)be, (void)err, (void)err_len;
    return TM_OK; /* every op returns when done, and none fails */
}

static int tm_cpu_weight_init_op(tm_backend *be, tm_weight *w, tm_dtype dtype, int64_t n_rows,
                                 int64_t n_cols, const void *src, char *err, size_t err_len) {
    return tm_cpu_weight_init(tm_cpu(be)->mm, w, dtype, n_rows, n_cols, src, err, err_len);
}

static void tm_cpu_weight_deinit_op(tm_backend *be, tm_weight *w) {
    (void)be;
    tm_cpu_weight_deinit(w);
}

static int tm_cpu_kv_create(tm_backend *be, const tm_kv_shape *shape, tm_kv_cache **out, char *err,
                            size_t err_len) {
    (void)be;
    *out = NULL;
    tm_kv_cache *kv = malloc(sizeof *kv);
    if (!kv) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    int rc = tm_cpu_kv_init(kv, shape);
    if (rc != TM_OK) {
        free(kv);
        return tm_fail(err, err_len, rc,
                       rc == TM_ENOMEM ? "out of memory for %d pages" : "bad cache shape (%d pages)",
                       shape->n_blocks);
    }
    *out = kv;
    return TM_OK;
}

static void tm_cpu_kv_destroy(tm_backend *be, tm_kv_cache *kv) {
    (void)be;
    if (!kv) return;
    tm_cpu_kv_deinit(kv);
    free(kv);
}

static void tm_cpu_embed(tm_backend *be, float *out, const tm_weight *table, const int32_t *ids,
                         int n) {
    (void)be;
    for (int i = 0; i < n; i++) tm_cpu_weight_row(table, ids[i], out + (int64_t)i * table->n_cols);
}

static void tm_cpu_rmsnorm(tm_backend *be, float *out, const float *x, const float *w, int n,
                           int dim, float eps) {
    tm_cpu_backend *c = tm_cpu(be);
    tm_cpu_op_rmsnorm(c->k, c->pool, out, x, w, n, dim, eps);
}

static void tm_cpu_add_rmsnorm(tm_backend *be, float *x, const float *r, const float *w, float *out, int n,
                               int dim, float eps) {
    tm_cpu_backend *c = tm_cpu(be);
    tm_cpu_op_add_rmsnorm(c->k, c->pool, x, r, w, out, n, dim, eps);
}

static void tm_cpu_add(tm_backend *be, float *out, const float *a, const float *b, int64_t n) {
    tm_cpu_backend *c = tm_cpu(be);
    tm_cpu_op_add(c->k, c->pool, out, a, b, n);
}

static void tm_cpu_matmul_op(tm_backend *be, float *out, const float *x, const tm_weight *w,
                             const float *bias, int n) {
    tm_cpu_matmul_run(tm_cpu(be)->mm, out, x, w, bias, n);
}

static void tm_cpu_matmul_multi_op(tm_backend *be, int n_w, float *const outs[], const float *x,
                                   const tm_weight *const ws[], const float *const biases[], int n) {
    tm_cpu_matmul_run_multi(tm_cpu(be)->mm, n_w, outs, x, ws, biases, n);
}

static void tm_cpu_rope(tm_backend *be, float *q, float *k, const int32_t *pos, int n,
                        int n_heads, int n_kv_heads, int head_dim, const tm_rope *rope) {
    tm_cpu_backend *c = tm_cpu(be);
    tm_cpu_op_rope(c->k, c->pool, &c->rope_cache, q, k, pos, n, n_heads, n_kv_heads, head_dim, rope);
}

static void tm_cpu_kv_store(tm_backend *be, tm_kv_cache *kv, int layer, const float *k,
                            const float *v, const int32_t *slots, int n) {
    tm_cpu_backend *c = tm_cpu(be);
    tm_cpu_op_kv_store(c->k, c->pool, kv, layer, k, v, slots, n);
}

static void tm_cpu_attention(tm_backend *be, float *out, const float *q, const tm_kv_cache *kv,
                             int layer, const tm_batch *batch, int n_heads, float scale, int window,
                             float softcap) {
    tm_cpu_backend *c = tm_cpu(be);
    tm_cpu_op_attention(c->k, c->pool, &c->attn_scratch, out, q, kv, layer, batch, n_heads, scale, window,
                        softcap);
}

static void tm_cpu_silu_mul(tm_backend *be, float *out, const float *gate, const float *up,
                            int64_t n) {
    tm_cpu_backend *c = tm_cpu(be);
    tm_cpu_op_silu_mul(c->k, c->pool, out, gate, up, n);
}

static void tm_cpu_gelu_mul(tm_backend *be, float *out, const float *gate, const float *up,
                            int64_t n) {
    tm_cpu_backend *c = tm_cpu(be);
    tm_cpu_op_gelu_mul(c->k, c->pool, out, gate, up, n);
}

static void tm_cpu_scale(tm_backend *be, float *out, const float *x, int64_t n, float s, float cap) {
    tm_cpu_backend *c = tm_cpu(be);
    tm_cpu_op_scale(c->k, c->pool, out, x, n, s, cap);
}

static void tm_cpu_argmax_rows(tm_backend *be, const float *x, int n_rows, int n_cols, int32_t *out) {
    tm_cpu_backend *c = tm_cpu(be);
    tm_cpu_op_argmax_rows(c->pool, &c->argmax_scratch, x, n_rows, n_cols, out);
}

static void tm_cpu_get_rows(tm_backend *be, float *out, const float *x, const int32_t *rows,
                            int n_rows, int dim) {
    (void)be;
    tm_cpu_op_get_rows(out, x, rows, n_rows, dim);
}

tm_backend *tm_backend_cpu_create(int n_threads, int simd, char *err, size_t err_len) {
    if (simd == TM_SIMD_AUTO) {
        simd = tm_simd_detect();
    } else if (simd < TM_SIMD_SCALAR || simd > TM_SIMD_LAST || !tm_simd_supported(simd)) {
        tm_fail(err, err_len, TM_EUNSUPPORTED, "simd level %d (%s) is not supported by this CPU/build",
                simd, simd >= TM_SIMD_SCALAR && simd <= TM_SIMD_LAST ? tm_simd_name(simd) : "?");
        return NULL;
    }
    if (n_threads <= 0) n_threads = tm_n_cpus();

    tm_cpu_backend *c = calloc(1, sizeof *c);
    if (!c) goto oom;
    c->simd = simd;
    c->k = tm_cpu_kernels_get(simd == TM_SIMD_AMX ? TM_SIMD_AVX512VNNI : simd); /* AMX is matmul only */
    if (!c->k) c->k = tm_cpu_kernels_scalar(); /* no op kernels for this level: matmul still uses it */
    c->pool = tm_threadpool_create(n_threads);
    if (!c->pool) goto oom;
    c->mm = tm_cpu_matmul_create(c->pool, simd);
    if (!c->mm) goto oom;

    snprintf(c->description, sizeof c->description, "cpu: %d threads, %s", n_threads, tm_simd_name(simd));
    c->be = (tm_backend){
        .name = "cpu",
        .description = c->description,
        .impl = c,
        .host_memory = 1,
        .destroy = tm_cpu_destroy,
        .alloc = tm_cpu_alloc,
        .free = tm_cpu_free,
        .upload = tm_cpu_copy,
        .download = tm_cpu_copy,
        .synchronize = tm_cpu_synchronize,
        .weight_init = tm_cpu_weight_init_op,
        .weight_deinit = tm_cpu_weight_deinit_op,
        .kv_create = tm_cpu_kv_create,
        .kv_destroy = tm_cpu_kv_destroy,
        .embed = tm_cpu_embed,
        .rmsnorm = tm_cpu_rmsnorm,
        .add_rmsnorm = tm_cpu_add_rmsnorm,
        .add = tm_cpu_add,
        .matmul = tm_cpu_matmul_op,
        .matmul_multi = tm_cpu_matmul_multi_op,
        .rope = tm_cpu_rope,
        .kv_store = tm_cpu_kv_store,
        .attention = tm_cpu_attention,
        .silu_mul = tm_cpu_silu_mul,
        .gelu_mul = tm_cpu_gelu_mul,
        .scale = tm_cpu_scale,
        .get_rows = tm_cpu_get_rows,
        .argmax_rows = tm_cpu_argmax_rows,
    };
    TM_DEBUGF("cpu backend: %d threads, simd %s", n_threads, tm_simd_name(simd));
    return &c->be;
oom:
    if (c) {
        tm_threadpool_destroy(c->pool);
        free(c);
    }
    tm_fail(err, err_len, TM_ENOMEM, "cpu backend: out of memory creating %d threads", n_threads);
    return NULL;
}

/* convert.c - GGUF to GGUF dtype conversion, streamed in batches of rows through f32.
 *
 * The mixes follow llama.cpp's llama_tensor_get_type for its Q4_K_M / Q5_K_M / Q6_K
 * ftypes (checked against files its llama_model_quantize wrote for the default model:
 * the same type for every tensor):
 *   - output.weight, or token_embd.weight when the model has no output.weight (tied):
 *     Q6_K, or Q8_0 when its rows are not a multiple of 256;
 *   - attn_v.weight and ffn_down: Q6_K in layer i of n (the tensor's "blk.i." number,
 *     not its place in the file: llama.cpp walks the layers in order, whatever the file's
 *     order) when use_more_bits: i < n/8, i >= 7n/8, or (i - n/8) % 3 == 2;
 *   - attn_qkv.weight (fused): Q5_K in Q4_K_M, Q6_K in Q5_K_M;
 *   - a K-quant row length that is not a multiple of 256 falls back: Q4_K -> Q5_0,
 *     Q5_K -> Q5_1, Q6_K -> Q8_0 (and to F16 if that does not fit either). */
#define _GNU_SOURCE
#include "models/convert.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/common.h"
#include "kernels/cpu/threadpool.h"
#include "models/gguf.h"

#define FILE_TYPE_KEY "general.file_type"

int tm_convert_ftype(tm_dtype target) {
    switch (target) {
    case TM_DTYPE_F32: return 0;
    case TM_DTYPE_F16: return 1;
    case TM_DTYPE_Q4_0: return 2;
    case TM_DTYPE_Q4_1: return 3;
    case TM_DTYPE_Q8_0: return 7;
    case TM_DTYPE_Q5_0: return 8;
    case TM_DTYPE_Q5_1: return 9;
    case TM_DTYPE_Q2_K: return 10;
    case TM_DTYPE_Q3_K: return 11;
    case TM_DTYPE_Q4_K: return 14;
    case TM_DTYPE_Q5_K: return 16;
    case TM_DTYPE_Q6_K: return 18;
    case TM_DTYPE_BF16: return 32;
    default: return -1;
    }
}

static const char k_target_names[] =
    "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, q4_k_m, q5_k_m";

const char *tm_convert_target_names(void) { return k_target_names; }

int tm_convert_target_from_name(const char *name, tm_convert_target *out) {
    if (!name) return TM_EINVAL;
    if (!strcasecmp(name, "q4_k_m") || !strcasecmp(name, "q5_k_m")) {
        const int q4 = !strcasecmp(name, "q4_k_m");
        *out = (tm_convert_target){q4 ? TM_DTYPE_Q4_K : TM_DTYPE_Q5_K, 1, q4 ? 15u : 17u};
        return 0;
    }
    const int t = tm_dtype_from_name(name);
    if (t < 0 || tm_convert_ftype((tm_dtype)t) < 0) return TM_EINVAL;
    *out = (tm_convert_target){(tm_dtype)t, 0, (uint32_t)tm_convert_ftype((tm_dtype)t)};
    return 0;
}

/* What a row length that does not split into t's blocks gets instead (llama.cpp's rule
 * for K-quants; it uses IQ4_NL for Q2_K / Q3_K, which we do not have: Q4_0, as large). */
static tm_dtype fallback_type(tm_dtype t) {
    switch (t) {
    case TM_DTYPE_Q4_K: return TM_DTYPE_Q5_0;
    case TM_DTYPE_Q5_K: return TM_DTYPE_Q5_1;
    case TM_DTYPE_Q6_K: return TM_DTYPE_Q8_0;
    case TM_DTYPE_Q2_K:
    case TM_DTYPE_Q3_K: return TM_DTYPE_Q4_0;
    default: return TM_DTYPE_F16;
    }
}

/* What the recipe needs to know about the whole file. */
typedef struct recipe_state {
    int n_attn_v, n_ffn_down; /* tensors of each kind in the file */
    int i_attn_v, i_ffn_down; /* ... seen so far: the layer of a tensor without "blk.N." */
    int has_output;           /* the file has output.weight (else token_embd is the output) */
} recipe_state;

/* The layer of a "blk.N." tensor, else *counter (the tensors of that kind seen so far). */
static int layer_of(const tm_gguf_tensor *t, int *counter) {
    int layer;
    const int i = (*counter)++;
    return sscanf(t->name, "blk.%d.", &layer) == 1 ? layer : i;
}

static int use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* The type of a matrix of rows of row_len values named name, in layer `layer` of n (for
 * attn_v / ffn_down), when has_output says whether the model has an output.weight: the
 * target or what the mix picks, then the fallback if its rows do not split into that
 * type's blocks. */
static tm_dtype matrix_type(const tm_convert_target *tg, const char *name, int64_t row_len, int layer, int n,
                            int has_output) {
    tm_dtype type = tg->type;
    if (tg->mix_m) {
        const int is_output = !strcmp(name, "output.weight") || (!has_output && !strcmp(name, "token_embd.weight"));
        if (is_output) {
            type = row_len % tm_dtype_block_size(tg->type) ? TM_DTYPE_Q8_0 : TM_DTYPE_Q6_K;
        } else if (strstr(name, "attn_v.weight") || strstr(name, "ffn_down")) {
            if (use_more_bits(layer, n)) type = TM_DTYPE_Q6_K;
        } else if (strstr(name, "attn_qkv.weight")) {
            type = tg->type == TM_DTYPE_Q4_K ? TM_DTYPE_Q5_K : TM_DTYPE_Q6_K;
        }
    }
    if (tm_dtype_row_bytes(type, row_len) < 0) type = fallback_type(type);
    if (tm_dtype_row_bytes(type, row_len) < 0) type = TM_DTYPE_F16;
    return type;
}

tm_dtype tm_convert_tensor_type(const tm_convert_target *tg, const char *name, int n_dims, int64_t row_len,
                                int n_layers, int has_output) {
    if (n_dims < 2) return TM_DTYPE_F32;
    int layer = 0;
    if (sscanf(name, "blk.%d.", &layer) != 1) layer = 0;
    return matrix_type(tg, name, row_len, layer, n_layers, has_output);
}

/* Output type of tensor t, the next in file order: vectors stay f32 (tiny and
 * precision-sensitive), matrices as matrix_type says. */
static tm_dtype out_type(const tm_gguf_tensor *t, const tm_convert_target *tg, recipe_state *st) {
    if (t->n_dims < 2) return TM_DTYPE_F32;
    int layer = 0, n = 0;
    if (tg->mix_m && strstr(t->name, "attn_v.weight")) layer = layer_of(t, &st->i_attn_v), n = st->n_attn_v;
    else if (tg->mix_m && strstr(t->name, "ffn_down")) layer = layer_of(t, &st->i_ffn_down), n = st->n_ffn_down;
    return matrix_type(tg, t->name, t->ne[0], layer, n, st->has_output);
}

/* Is t a block's tensor ("blk.N.*") of a layer the output drops (N >= max_layers > 0)? */
static int dropped(const tm_gguf_tensor *t, int max_layers) {
    int layer;
    return max_layers > 0 && sscanf(t->name, "blk.%d.", &layer) == 1 && layer >= max_layers;
}

static int copy_metadata(const tm_gguf *src, tm_gguf_writer *w, uint32_t ftype, int max_layers,
                         char *err, size_t err_len) {
    int have_ftype = 0, rc;
    char block_count[160] = "";
    const char *arch;
    size_t arch_len;
    if (max_layers > 0 && tm_gguf_get_str(src, "general.architecture", &arch, &arch_len) == 0)
        snprintf(block_count, sizeof block_count, "%.*s.block_count", (int)arch_len, arch);
    for (int64_t i = 0; i < tm_gguf_n_keys(src); i++) {
        const char *name = tm_gguf_key_name(src, i);
        const void *raw;
        size_t n;
        uint32_t n_layers;
        if (!strcmp(name, FILE_TYPE_KEY)) {
            rc = tm_gguf_writer_add_u32(w, FILE_TYPE_KEY, ftype);
            have_ftype = 1;
        } else if (*block_count && !strcmp(name, block_count) && tm_gguf_get_u32(src, name, &n_layers) == 0) {
            rc = tm_gguf_writer_add_u32(w, name, TM_MIN(n_layers, (uint32_t)max_layers));
        } else if (!(rc = tm_gguf_key_raw(src, i, &raw, &n))) {
            rc = tm_gguf_writer_add_raw_kv(w, raw, n);
        }
        if (rc) return tm_fail(err, err_len, rc, "key '%s': cannot copy (%s)", name,
                               tm_strerror(rc));
    }
    if (!have_ftype &&
        (rc = tm_gguf_writer_add_u32(w, FILE_TYPE_KEY, ftype)))
        return tm_fail(err, err_len, rc, "cannot add %s (%s)", FILE_TYPE_KEY, tm_strerror(rc));
    return 0;
}

enum { BATCH_BYTES = 4 << 20 }; /* f32 bytes of the rows quantized per batch */

/* One batch of rows for the pool: each thread converts a share. */
typedef struct convert_batch {
    const tm_gguf_tensor *t;
    tm_dtype type;       /* output type */
    const uint8_t *src;  /* first source row of the batch */
    int64_t n_rows;      /* rows in the batch */
    uint8_t *dst;        /* (n_rows, dst row bytes) */
    float *f32;          /* (threads, ne0) scratch */
    int rc[64];          /* per thread: first tm_quantize_row error */
} convert_batch;

static void convert_rows(void *ctx, int ith, int nth) {
    convert_batch *b = ctx;
    const int64_t ne0 = b->t->ne[0];
    const int64_t src_row = tm_dtype_row_bytes(b->t->type, ne0), dst_row = tm_dtype_row_bytes(b->type, ne0);
    float *f32 = b->f32 + (size_t)ith * (size_t)ne0;
    b->rc[ith] = 0;
    for (int64_t r = b->n_rows * ith / nth; r < b->n_rows * (ith + 1) / nth; r++) {
        tm_dequantize_row(b->t->type, b->src + r * src_row, f32, ne0);
        const int rc = tm_quantize_row(b->type, f32, b->dst + r * dst_row, ne0);
        if (rc && !b->rc[ith]) b->rc[ith] = rc;
    }
}

/* Streams tensor t, converted to type, into w: batches of rows quantized on the pool.
 * f32 holds one row per thread, buf one batch of output rows. */
static int convert_tensor(const tm_gguf_tensor *t, tm_dtype type, tm_gguf_writer *w, tm_threadpool *pool,
                          float *f32, void *buf, int64_t batch_rows, char *err, size_t err_len) {
    if (type == t->type) /* same type: copy bit for bit, no requantization loss */
        return tm_gguf_writer_append(w, t->data, (size_t)t->n_bytes, err, err_len);
    const int64_t src_row = tm_dtype_row_bytes(t->type, t->ne[0]);
    const int64_t dst_row = tm_dtype_row_bytes(type, t->ne[0]);
    const int64_t n_rows = (int64_t)(t->n_bytes / (uint64_t)src_row);
    convert_batch b = {.t = t, .type = type, .dst = buf, .f32 = f32};
    int rc;
    for (int64_t r0 = 0; r0 < n_rows; r0 += batch_rows) {
        b.src = (const uint8_t *)t->data + r0 * src_row;
        b.n_rows = TM_MIN(batch_rows, n_rows - r0);
        tm_threadpool_run(pool, convert_rows, &b);
        for (int i = 0; i < tm_threadpool_size(pool); i++)
            if (b.rc[i])
                return tm_fail(err, err_len, b.rc[i], "tensor '%s': cannot quantize to %s", t->name,
                               tm_dtype_name(type));
        if ((rc = tm_gguf_writer_append(w, buf, (size_t)(b.n_rows * dst_row), err, err_len))) return rc;
    }
    return 0;
}

int tm_convert_file(const char *in_path, const char *out_path, tm_dtype target, char *err,
                    size_t err_len) {
    return tm_convert_file_layers(in_path, out_path, target, 0, err, err_len);
}

int tm_convert_file_layers(const char *in_path, const char *out_path, tm_dtype target, int max_layers,
                           char *err, size_t err_len) {
    if (tm_convert_ftype(target) < 0)
        return tm_fail(err, err_len, TM_EUNSUPPORTED, "cannot convert to %s (targets: %s)", tm_dtype_name(target),
                       k_target_names);
    const tm_convert_target tg = {target, 0, (uint32_t)tm_convert_ftype(target)};
    return tm_convert_file_target(in_path, out_path, &tg, max_layers, 0, err, err_len);
}

int tm_convert_file_target(const char *in_path, const char *out_path, const tm_convert_target *target,
                           int max_layers, int n_threads, char *err, size_t err_len) {
    tm_gguf *src = NULL;
    tm_gguf_writer *w = NULL;
    tm_threadpool *pool = NULL;
    tm_dtype *types = NULL;
    char *tmp = NULL;
    float *f32 = NULL;
    void *buf = NULL;
    int rc;
    if (tm_convert_ftype(target->type) < 0)
        return tm_fail(err, err_len, TM_EUNSUPPORTED, "cannot convert to %s (targets: %s)",
                       tm_dtype_name(target->type), k_target_names);
    if (n_threads <= 0) n_threads = (int)TM_MAX(1, TM_MIN(64, sysconf(_SC_NPROCESSORS_ONLN)));
    n_threads = TM_MIN(n_threads, 64);
    if ((rc = tm_gguf_open(in_path, &src, err, err_len))) goto fail;
    if (asprintf(&tmp, "%s.tmp", out_path) < 0) {
        tmp = NULL;
        rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory");
        goto fail;
    }
    w = tm_gguf_writer_create((uint32_t)tm_gguf_alignment(src));
    pool = tm_threadpool_create(n_threads);
    types = calloc((size_t)TM_MAX(1, tm_gguf_n_tensors(src)), sizeof *types);
    if (!w || !pool || !types) {
        rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = copy_metadata(src, w, target->ftype, max_layers, err, err_len))) goto fail;

    recipe_state st = {0};
    for (int64_t i = 0; i < tm_gguf_n_tensors(src); i++) {
        const tm_gguf_tensor *t = tm_gguf_tensor_at(src, i);
        if (dropped(t, max_layers)) continue;
        if (strstr(t->name, "attn_v.weight") || strstr(t->name, "attn_qkv.weight") || strstr(t->name, "attn_kv_b.weight"))
            st.n_attn_v++;
        if (strstr(t->name, "ffn_down")) st.n_ffn_down++;
        if (!strcmp(t->name, "output.weight")) st.has_output = 1;
    }
    int64_t max_ne0 = 1, max_row = 1;
    for (int64_t i = 0; i < tm_gguf_n_tensors(src); i++) {
        const tm_gguf_tensor *t = tm_gguf_tensor_at(src, i);
        if (dropped(t, max_layers)) continue;
        const tm_dtype type = types[i] = out_type(t, target, &st);
        if ((rc = tm_gguf_writer_add_tensor_info(w, t->name, t->n_dims, t->ne, type))) {
            rc = tm_fail(err, err_len, rc, "tensor '%s': cannot declare as %s (%s)", t->name,
                         tm_dtype_name(type), tm_strerror(rc));
            goto fail;
        }
        max_ne0 = TM_MAX(max_ne0, t->ne[0]);
        max_row = TM_MAX(max_row, tm_dtype_row_bytes(type, t->ne[0]));
    }
    /* ne[0] * 4 cannot overflow: the reader bounded every tensor by the file size */
    const int64_t batch_rows = TM_MAX(1, BATCH_BYTES / (max_ne0 * 4));
    f32 = malloc((size_t)n_threads * (size_t)max_ne0 * sizeof *f32);
    buf = malloc((size_t)(batch_rows * max_row));
    if (!f32 || !buf) {
        rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory for rows of %" PRId64 " values", max_ne0);
        goto fail;
    }

    if ((rc = tm_gguf_writer_begin(w, tmp, err, err_len))) goto fail;
    for (int64_t i = 0; i < tm_gguf_n_tensors(src); i++) {
        const tm_gguf_tensor *t = tm_gguf_tensor_at(src, i);
        if (dropped(t, max_layers)) continue;
        if ((rc = convert_tensor(t, types[i], w, pool, f32, buf, batch_rows, err, err_len))) goto fail;
    }
    if ((rc = tm_gguf_writer_finish(w, err, err_len))) goto fail;
    if (rename(tmp, out_path) < 0) {
        rc = tm_fail(err, err_len, TM_EIO, "%s: cannot rename to %s: %s", tmp, out_path,
                     strerror(errno));
        remove(tmp);
        goto fail;
    }
    rc = 0;
fail:
    tm_gguf_writer_destroy(w); /* removes tmp if it was begun and not finished */
    tm_gguf_close(src);
    tm_threadpool_destroy(pool);
    free(types);
    free(tmp);
    free(f32);
    free(buf);
    return rc;
}

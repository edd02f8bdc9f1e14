/* convert.c - GGUF to GGUF dtype conversion, streamed row by row through f32. */
#define _GNU_SOURCE
#include "models/convert.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/gguf.h"

#define FILE_TYPE_KEY "general.file_type"

int tm_convert_ftype(tm_dtype target) {
    switch (target) {
    case TM_DTYPE_F32: return 0;
    case TM_DTYPE_F16: return 1;
    case TM_DTYPE_Q4_0: return 2;
    case TM_DTYPE_Q4_1: return 3;
    case TM_DTYPE_Q8_0: return 7;
    default: return -1;
    }
}

/* Output type of one tensor: vectors stay f32 (they are tiny and precision-sensitive);
 * matrices whose rows do not split into blocks fall back to f16. */
static tm_dtype out_type(const tm_gguf_tensor *t, tm_dtype target) {
    if (t->n_dims < 2) return TM_DTYPE_F32;
    if (tm_dtype_row_bytes(target, t->ne[0]) < 0) return TM_DTYPE_F16;
    return target;
}

/* Is t a block's tensor ("blk.N.*") of a layer the output drops (N >= max_layers > 0)? */
static int dropped(const tm_gguf_tensor *t, int max_layers) {
    int layer;
    return max_layers > 0 && sscanf(t->name, "blk.%d.", &layer) == 1 && layer >= max_layers;
}

static int copy_metadata(const tm_gguf *src, tm_gguf_writer *w, tm_dtype target, int max_layers,
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
            rc = tm_gguf_writer_add_u32(w, FILE_TYPE_KEY, (uint32_t)tm_convert_ftype(target));
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
        (rc = tm_gguf_writer_add_u32(w, FILE_TYPE_KEY, (uint32_t)tm_convert_ftype(target))))
        return tm_fail(err, err_len, rc, "cannot add %s (%s)", FILE_TYPE_KEY, tm_strerror(rc));
    return 0;
}

/* Streams tensor t's rows, converted to type, into w. f32 and buf hold one row. */
static int convert_tensor(const tm_gguf_tensor *t, tm_dtype type, tm_gguf_writer *w,
                          float *f32, void *buf, char *err, size_t err_len) {
    const int64_t src_row = tm_dtype_row_bytes(t->type, t->ne[0]);
    const int64_t dst_row = tm_dtype_row_bytes(type, t->ne[0]);
    const int64_t n_rows = (int64_t)(t->n_bytes / (uint64_t)src_row);
    const uint8_t *src = t->data;
    int rc;
    for (int64_t r = 0; r < n_rows; r++, src += src_row) {
        const void *row = src;
        if (type != t->type) { /* same type: copy bit for bit, no requantization loss */
            tm_dequantize_row(t->type, src, f32, t->ne[0]);
            if ((rc = tm_quantize_row(type, f32, buf, t->ne[0])))
                return tm_fail(err, err_len, rc, "tensor '%s': cannot quantize to %s",
                               t->name, tm_dtype_name(type));
            row = buf;
        }
        if ((rc = tm_gguf_writer_append(w, row, (size_t)dst_row, err, err_len))) return rc;
    }
    return 0;
}

int tm_convert_file(const char *in_path, const char *out_path, tm_dtype target, char *err,
                    size_t err_len) {
    return tm_convert_file_layers(in_path, out_path, target, 0, err, err_len);
}

int tm_convert_file_layers(const char *in_path, const char *out_path, tm_dtype target, int max_layers,
                           char *err, size_t err_len) {
    tm_gguf *src = NULL;
    tm_gguf_writer *w = NULL;
    char *tmp = NULL;
    float *f32 = NULL;
    void *buf = NULL;
    int rc;
    if (tm_convert_ftype(target) < 0)
        return tm_fail(err, err_len, TM_EUNSUPPORTED,
                       "cannot convert to %s (targets: f32, f16, q8_0, q4_0, q4_1)",
                       tm_dtype_name(target));
    if ((rc = tm_gguf_open(in_path, &src, err, err_len))) goto fail;
    if (asprintf(&tmp, "%s.tmp", out_path) < 0) {
        tmp = NULL;
        rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory");
        goto fail;
    }
    w = tm_gguf_writer_create((uint32_t)tm_gguf_alignment(src));
    if (!w) {
        rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = copy_metadata(src, w, target, max_layers, err, err_len))) goto fail;

    int64_t max_ne0 = 1, max_row = 1;
    for (int64_t i = 0; i < tm_gguf_n_tensors(src); i++) {
        const tm_gguf_tensor *t = tm_gguf_tensor_at(src, i);
        if (dropped(t, max_layers)) continue;
        tm_dtype type = out_type(t, target);
        if ((rc = tm_gguf_writer_add_tensor_info(w, t->name, t->n_dims, t->ne, type))) {
            rc = tm_fail(err, err_len, rc, "tensor '%s': cannot declare as %s (%s)", t->name,
                         tm_dtype_name(type), tm_strerror(rc));
            goto fail;
        }
        max_ne0 = TM_MAX(max_ne0, t->ne[0]);
        max_row = TM_MAX(max_row, tm_dtype_row_bytes(type, t->ne[0]));
    }
    /* ne[0] * 4 cannot overflow: the reader bounded every tensor by the file size */
    f32 = malloc((size_t)max_ne0 * sizeof *f32);
    buf = malloc((size_t)max_row);
    if (!f32 || !buf) {
        rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory for a row of %" PRId64 " values",
                     max_ne0);
        goto fail;
    }

    if ((rc = tm_gguf_writer_begin(w, tmp, err, err_len))) goto fail;
    for (int64_t i = 0; i < tm_gguf_n_tensors(src); i++) {
        const tm_gguf_tensor *t = tm_gguf_tensor_at(src, i);
        if (dropped(t, max_layers)) continue;
        if ((rc = convert_tensor(t, out_type(t, target), w, f32, buf, err, err_len))) goto fail;
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
    free(tmp);
    free(f32);
    free(buf);
    return rc;
}

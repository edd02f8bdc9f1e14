/* gguf.c - GGUF v2/v3 reader.
 *
 * Layout (ggml docs/gguf.md), all little-endian:
 *   "GGUF" u32 version u64 n_tensors u64 n_kv
 *   n_kv x   { string key, u32 type, value }      string = u64 len + bytes (no NUL)
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset }
 *   padding to `alignment` (general.alignment, default 32), then the data section;
 *   tensor offsets are relative to it and multiples of the alignment.
 *
 * The parser trusts nothing: every read goes through a cursor that checks the bytes
 * left, counts are checked against the bytes they would need before anything is sized
 * by them, and products use overflow-checked multiplication. Arrays of arrays are
 * validated (nesting up to TM_GGUF_MAX_NEST levels) and kept as raw bytes: get_arr
 * reports elem_type TM_GGUF_ARRAY and points at the serialized elements.
 *
 * Strings in the file are not NUL-terminated, so names and string values are copied into
 * one pool; the pool grows while parsing, so entries keep offsets and get pointers once
 * parsing is done. Assumes a little-endian host (x86-64, arm64). */
#define _GNU_SOURCE
#include "models/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "models/gguf_internal.h"

#define TM_GGUF_MAX_NEST 8 /* array-of-array depth we accept */

/* --- bounded reading -------------------------------------------------------------- */

typedef struct cursor {
    const uint8_t *p;
    uint64_t size, pos;
    char *err;
    size_t err_len;
} cursor;

static uint64_t left(const cursor *c) { return c->size - c->pos; }

static int need(cursor *c, uint64_t n, const char *what) {
    if (n <= left(c)) return 0;
    return tm_fail(c->err, c->err_len, TM_EFORMAT,
                   "truncated: %s needs %" PRIu64 " bytes at offset %" PRIu64
                   " but the file has %" PRIu64 " left",
                   what, n, c->pos, left(c));
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    int rc = need(c, 4, what);
    if (rc) return rc;
    memcpy(v, c->p + c->pos, 4);
    c->pos += 4;
    return 0;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    int rc = need(c, 8, what);
    if (rc) return rc;
    memcpy(v, c->p + c->pos, 8);
    c->pos += 8;
    return 0;
}

/* A string: its bytes stay in the file; off and len say where. */
static int rd_str(cursor *c, uint64_t *off, uint64_t *len, const char *what) {
    int rc = rd_u64(c, len, what);
    if (rc) return rc;
    if (*len > left(c))
        return tm_fail(c->err, c->err_len, TM_EFORMAT,
                       "%s: string length %" PRIu64 " at offset %" PRIu64
                       " runs past end of file (%" PRIu64 " bytes left)",
                       what, *len, c->pos - 8, left(c));
    *off = c->pos;
    c->pos += *len;
    return 0;
}

/* --- string pool ------------------------------------------------------------------ */

static int pool_add(tm_gguf *g, const uint8_t *s, uint64_t len, size_t *off) {
    /* len <= file size, so len + 1 cannot overflow */
    if (g->pool_cap - g->pool_len < len + 1) {
        size_t cap = g->pool_cap ? g->pool_cap : 4096;
        while (cap - g->pool_len < len + 1) cap *= 2;
        char *p = realloc(g->pool, cap);
        if (!p) return TM_ENOMEM;
        g->pool = p;
        g->pool_cap = cap;
    }
    *off = g->pool_len;
    memcpy(g->pool + g->pool_len, s, len);
    g->pool[g->pool_len + len] = '\0';
    g->pool_len += len + 1;
    return 0;
}

static int str_idx_add(tm_gguf *g, uint64_t v) {
    if (g->n_str_idx == g->str_idx_cap) {
        size_t cap = g->str_idx_cap ? 2 * g->str_idx_cap : 256;
        uint64_t *p = realloc(g->str_idx, cap * sizeof *p);
        if (!p) return TM_ENOMEM;
        g->str_idx = p;
        g->str_idx_cap = cap;
    }
    g->str_idx[g->n_str_idx++] = v;
    return 0;
}

/* --- metadata values -------------------------------------------------------------- */

/* Bytes of a fixed-size type; 0 for string/array; -1 for an unknown type. */
static int type_size(uint32_t t) {
    switch (t) {
    case TM_GGUF_UINT8: case TM_GGUF_INT8: case TM_GGUF_BOOL: return 1;
    case TM_GGUF_UINT16: case TM_GGUF_INT16: return 2;
    case TM_GGUF_UINT32: case TM_GGUF_INT32: case TM_GGUF_FLOAT32: return 4;
    case TM_GGUF_UINT64: case TM_GGUF_INT64: case TM_GGUF_FLOAT64: return 8;
    case TM_GGUF_STRING: case TM_GGUF_ARRAY: return 0;
    default: return -1;
    }
}

/* Smallest serialized size of one element, so a count can be checked before use. */
static uint64_t min_size(uint32_t t) {
    if (t == TM_GGUF_STRING) return 8;
    if (t == TM_GGUF_ARRAY) return 12;
    return (uint64_t)type_size(t);
}

/* Validates one value of type t; ctx names the entry for messages. Nested arrays are
 * walked (not stored), so g may be NULL here. */
static int skip_value(cursor *c, uint32_t t, int depth, const char *ctx) {
    uint64_t off, len, n;
    uint32_t et;
    int rc, sz = type_size(t);
    if (sz < 0)
        return tm_fail(c->err, c->err_len, TM_EFORMAT, "%s: bad value type %" PRIu32, ctx, t);
    if (sz > 0) {
        if ((rc = need(c, (uint64_t)sz, ctx))) return rc;
        c->pos += (uint64_t)sz;
        return 0;
    }
    if (t == TM_GGUF_STRING) return rd_str(c, &off, &len, ctx);
    if (depth >= TM_GGUF_MAX_NEST)
        return tm_fail(c->err, c->err_len, TM_EFORMAT,
                       "%s: arrays nested deeper than %d levels", ctx, TM_GGUF_MAX_NEST);
    if ((rc = rd_u32(c, &et, ctx)) || (rc = rd_u64(c, &n, ctx))) return rc;
    if (type_size(et) < 0)
        return tm_fail(c->err, c->err_len, TM_EFORMAT, "%s: bad array element type %" PRIu32,
                       ctx, et);
    if (n > left(c) / min_size(et))
        return tm_fail(c->err, c->err_len, TM_EFORMAT,
                       "%s: array count %" PRIu64 " does not fit in the %" PRIu64
                       " bytes left",
                       ctx, n, left(c));
    if (type_size(et) > 0) {
        c->pos += n * (uint64_t)type_size(et);
        return 0;
    }
    for (uint64_t i = 0; i < n; i++)
        if ((rc = skip_value(c, et, depth + 1, ctx))) return rc;
    return 0;
}

/* Parses the value of e (type already read), recording where it lies. */
static int parse_value(cursor *c, tm_gguf *g, tm_gguf_kv *e, const char *ctx) {
    uint64_t off, len;
    uint32_t et;
    int rc;
    if (type_size(e->type) < 0)
        return tm_fail(c->err, c->err_len, TM_EFORMAT, "%s: bad value type %u", ctx,
                       (unsigned)e->type);
    e->val_off = c->pos;
    if (e->type == TM_GGUF_STRING) {
        size_t poff;
        if ((rc = rd_str(c, &off, &len, ctx))) return rc;
        if ((rc = pool_add(g, c->p + off, len, &poff))) goto nomem;
        e->n = len;
        e->str = poff;
        return 0;
    }
    if (e->type != TM_GGUF_ARRAY) return skip_value(c, e->type, 0, ctx);

    if ((rc = rd_u32(c, &et, ctx)) || (rc = rd_u64(c, &e->n, ctx))) return rc;
    if (type_size(et) < 0)
        return tm_fail(c->err, c->err_len, TM_EFORMAT, "%s: bad array element type %" PRIu32,
                       ctx, et);
    if (e->n > left(c) / min_size(et))
        return tm_fail(c->err, c->err_len, TM_EFORMAT,
                       "%s: array count %" PRIu64 " does not fit in the %" PRIu64
                       " bytes left",
                       ctx, e->n, left(c));
    e->elem_type = (tm_gguf_type)et;
    e->val_off = c->pos;
    if (type_size(et) > 0) { /* packed numbers: the count check above covers them */
        c->pos += e->n * (uint64_t)type_size(et);
        return 0;
    }
    if (et == TM_GGUF_ARRAY) {
        for (uint64_t i = 0; i < e->n; i++)
            if ((rc = skip_value(c, et, 1, ctx))) return rc;
        return 0;
    }
    e->str = g->n_str_idx;
    for (uint64_t i = 0; i < e->n; i++) {
        size_t poff;
        if ((rc = rd_str(c, &off, &len, ctx))) return rc;
        if ((rc = pool_add(g, c->p + off, len, &poff)) || (rc = str_idx_add(g, poff)))
            goto nomem;
    }
    if ((rc = str_idx_add(g, g->pool_len))) goto nomem;
    return 0;
nomem:
    return tm_fail(c->err, c->err_len, TM_ENOMEM, "%s: out of memory", ctx);
}

/* A key or tensor name: nonempty, no NUL (we hand out C strings) and no other control
 * byte (names go into one-line error messages and logs). */
static int check_name(cursor *c, uint64_t off, uint64_t len, const char *what) {
    if (len == 0) return tm_fail(c->err, c->err_len, TM_EFORMAT, "%s: empty name", what);
    for (uint64_t i = 0; i < len; i++) {
        uint8_t ch = c->p[off + i];
        if (ch == 0)
            return tm_fail(c->err, c->err_len, TM_EFORMAT, "%s: name contains a NUL byte", what);
        if (ch < 0x20 || ch == 0x7f)
            return tm_fail(c->err, c->err_len, TM_EFORMAT,
                           "%s: name contains control byte 0x%02x", what, ch);
    }
    return 0;
}

static int parse_kvs(cursor *c, tm_gguf *g) {
    char ctx[160];
    int rc;
    for (int64_t i = 0; i < g->n_kv; i++) {
        tm_gguf_kv *e = &g->kv[i];
        uint64_t off, len;
        uint32_t t;
        e->raw_off = c->pos;
        snprintf(ctx, sizeof ctx, "key %" PRId64 " name", i);
        if ((rc = rd_str(c, &off, &len, ctx)) || (rc = check_name(c, off, len, ctx))) return rc;
        if ((rc = pool_add(g, c->p + off, len, &e->name_off)))
            return tm_fail(c->err, c->err_len, rc, "out of memory");
        snprintf(ctx, sizeof ctx, "key %" PRId64 " '%.100s'", i, g->pool + e->name_off);
        if ((rc = rd_u32(c, &t, ctx))) return rc;
        e->type = (tm_gguf_type)t;
        if ((rc = parse_value(c, g, e, ctx))) return rc;
        e->raw_bytes = c->pos - e->raw_off;
    }
    return 0;
}

/* --- tensors ---------------------------------------------------------------------- */

static int mul_ok(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0 || (b != 0 && a > INT64_MAX / b)) return 0;
    *out = a * b;
    return 1;
}

/* Reads and checks one tensor info (everything that does not need the data section). */
static int parse_tensor(cursor *c, tm_gguf *g, int64_t i) {
    tm_gguf_tensor *t = &g->tensors[i];
    char ctx[160];
    uint64_t off, len, ne;
    uint32_t n_dims, type;
    int rc;
    snprintf(ctx, sizeof ctx, "tensor %" PRId64 " name", i);
    if ((rc = rd_str(c, &off, &len, ctx)) || (rc = check_name(c, off, len, ctx))) return rc;
    if ((rc = pool_add(g, c->p + off, len, &g->tensor_name_off[i])))
        return tm_fail(c->err, c->err_len, rc, "out of memory");
    snprintf(ctx, sizeof ctx, "tensor '%.100s'", g->pool + g->tensor_name_off[i]);

    if ((rc = rd_u32(c, &n_dims, ctx))) return rc;
    if (n_dims < 1 || n_dims > TM_GGUF_MAX_DIMS)
        return tm_fail(c->err, c->err_len, TM_EFORMAT, "%s: n_dims %" PRIu32 " not in 1..%d",
                       ctx, n_dims, TM_GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    int64_t n_elems = 1;
    for (int d = 0; d < TM_GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims) continue;
        if ((rc = rd_u64(c, &ne, ctx))) return rc;
        if (ne == 0 || ne > (uint64_t)INT64_MAX)
            return tm_fail(c->err, c->err_len, TM_EFORMAT, "%s: dimension %d is %" PRIu64,
                           ctx, d, ne);
        t->ne[d] = (int64_t)ne;
        if (!mul_ok(n_elems, t->ne[d], &n_elems))
            return tm_fail(c->err, c->err_len, TM_EFORMAT,
                           "%s: element count overflows (ne[%d] = %" PRIu64 ")", ctx, d, ne);
    }
    if ((rc = rd_u32(c, &type, ctx))) return rc;
    if (type > INT32_MAX || !tm_dtype_valid((int)type))
        return tm_fail(c->err, c->err_len, TM_EUNSUPPORTED, "%s: unknown tensor type %" PRIu32,
                       ctx, type);
    t->type = (tm_dtype)type;
    /* row bytes computed here, overflow-checked, rather than by tm_dtype_row_bytes */
    const int64_t bs = tm_dtype_block_size(t->type);
    if (t->ne[0] % bs)
        return tm_fail(c->err, c->err_len, TM_EFORMAT,
                       "%s: row length %" PRId64 " is not a multiple of the %s block size %" PRId64,
                       ctx, t->ne[0], tm_dtype_name(t->type), bs);
    int64_t n_bytes;
    if (!mul_ok(t->ne[0] / bs, tm_dtype_block_bytes(t->type), &n_bytes))
        return tm_fail(c->err, c->err_len, TM_EFORMAT, "%s: byte size overflows", ctx);
    for (int d = 1; d < TM_GGUF_MAX_DIMS; d++)
        if (!mul_ok(n_bytes, t->ne[d], &n_bytes))
            return tm_fail(c->err, c->err_len, TM_EFORMAT, "%s: byte size overflows", ctx);
    t->n_bytes = (uint64_t)n_bytes;
    if ((rc = rd_u64(c, &t->offset, ctx))) return rc;
    if (t->offset % g->alignment)
        return tm_fail(c->err, c->err_len, TM_EFORMAT,
                       "%s: data offset %" PRIu64 " is not a multiple of the alignment %" PRIu64,
                       ctx, t->offset, g->alignment);
    return 0;
}

static int cmp_kv(const void *a, const void *b) {
    return strcmp((*(tm_gguf_kv *const *)a)->name, (*(tm_gguf_kv *const *)b)->name);
}
static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(tm_gguf_tensor *const *)a)->name, (*(tm_gguf_tensor *const *)b)->name);
}
static int cmp_tensor_off(const void *a, const void *b) {
    uint64_t x = (*(tm_gguf_tensor *const *)a)->offset, y = (*(tm_gguf_tensor *const *)b)->offset;
    return x < y ? -1 : x > y;
}

/* Data ranges: inside the file and disjoint. Uses tensors_sorted as scratch. */
static int check_data(cursor *c, tm_gguf *g) {
    if (g->n_tensors == 0) return 0;
    if (g->data_start > g->size)
        return tm_fail(c->err, c->err_len, TM_EFORMAT,
                       "truncated: data section starts at %" PRIu64 " past end of file (%" PRIu64
                       " bytes)",
                       g->data_start, g->size);
    uint64_t data_size = g->size - g->data_start;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        tm_gguf_tensor *t = &g->tensors[i];
        if (t->offset > data_size || t->n_bytes > data_size - t->offset)
            return tm_fail(c->err, c->err_len, TM_EFORMAT,
                           "tensor '%.100s': data [%" PRIu64 ", +%" PRIu64
                           ") past end of file (data section is %" PRIu64 " bytes)",
                           t->name, t->offset, t->n_bytes, data_size);
        t->data = g->base + g->data_start + t->offset;
        g->tensors_sorted[i] = t;
    }
    qsort(g->tensors_sorted, (size_t)g->n_tensors, sizeof *g->tensors_sorted, cmp_tensor_off);
    for (int64_t i = 1; i < g->n_tensors; i++) {
        const tm_gguf_tensor *a = g->tensors_sorted[i - 1], *b = g->tensors_sorted[i];
        if (b->offset < a->offset + a->n_bytes)
            return tm_fail(c->err, c->err_len, TM_EFORMAT,
                           "tensors '%.80s' and '%.80s' overlap in the data section", a->name,
                           b->name);
    }
    return 0;
}

/* general.alignment, if present, must be a u32 power of two. */
static int read_alignment(cursor *c, tm_gguf *g) {
    g->alignment = TM_GGUF_DEFAULT_ALIGNMENT;
    int64_t i = tm_gguf_find_key(g, TM_GGUF_ALIGNMENT_KEY);
    if (i < 0) return 0;
    const tm_gguf_kv *e = &g->kv[i];
    if (e->type != TM_GGUF_UINT32)
        return tm_fail(c->err, c->err_len, TM_EFORMAT, "%s has type %s, expected u32",
                       TM_GGUF_ALIGNMENT_KEY, tm_gguf_type_name(e->type));
    uint32_t a;
    memcpy(&a, g->base + e->val_off, 4);
    if (a == 0 || (a & (a - 1)))
        return tm_fail(c->err, c->err_len, TM_EFORMAT, "%s = %" PRIu32 " is not a power of two",
                       TM_GGUF_ALIGNMENT_KEY, a);
    g->alignment = a;
    return 0;
}

static int parse_header(cursor *c, tm_gguf *g) {
    int rc;
    if (c->size < 4 || memcmp(c->p, TM_GGUF_MAGIC, 4))
        return tm_fail(c->err, c->err_len, TM_EFORMAT, "bad magic: not a GGUF file");
    c->pos = 4;
    if ((rc = rd_u32(c, &g->version, "version"))) return rc;
    if (g->version == 1)
        return tm_fail(c->err, c->err_len, TM_EFORMAT,
                       "GGUF version 1 is not supported (only versions 2 and 3)");
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return tm_fail(c->err, c->err_len, TM_EFORMAT, "big-endian GGUF is not supported");
    if (g->version != 2 && g->version != 3)
        return tm_fail(c->err, c->err_len, TM_EFORMAT,
                       "unknown GGUF version %" PRIu32 " (only versions 2 and 3)", g->version);
    uint64_t n_tensors, n_kv;
    if ((rc = rd_u64(c, &n_tensors, "n_tensors")) || (rc = rd_u64(c, &n_kv, "n_kv"))) return rc;
    /* A key takes >= 13 bytes and a tensor info >= 33: refuse counts the file cannot
     * hold before sizing anything by them. */
    if (n_kv > left(c) / 13)
        return tm_fail(c->err, c->err_len, TM_EFORMAT,
                       "n_kv %" PRIu64 " is impossible in a %" PRIu64 "-byte file", n_kv, c->size);
    if (n_tensors > left(c) / 33 || n_tensors * 33 > left(c) - n_kv * 13)
        return tm_fail(c->err, c->err_len, TM_EFORMAT,
                       "n_tensors %" PRIu64 " is impossible in a %" PRIu64 "-byte file",
                       n_tensors, c->size);
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    return 0;
}

static int parse(cursor *c, tm_gguf *g) {
    int rc;
    if ((rc = parse_header(c, g))) return rc;
    size_t nk = (size_t)g->n_kv + 1, nt = (size_t)g->n_tensors + 1;
    g->kv = calloc(nk, sizeof *g->kv);
    g->kv_sorted = calloc(nk, sizeof *g->kv_sorted);
    g->tensors = calloc(nt, sizeof *g->tensors);
    g->tensor_name_off = calloc(nt, sizeof *g->tensor_name_off);
    g->tensors_sorted = calloc(nt, sizeof *g->tensors_sorted);
    if (!g->kv || !g->kv_sorted || !g->tensors || !g->tensor_name_off || !g->tensors_sorted)
        return tm_fail(c->err, c->err_len, TM_ENOMEM, "out of memory for %" PRId64
                       " keys and %" PRId64 " tensors", g->n_kv, g->n_tensors);

    if ((rc = parse_kvs(c, g))) return rc;
    for (int64_t i = 0; i < g->n_kv; i++) {
        g->kv[i].name = g->pool + g->kv[i].name_off;
        g->kv_sorted[i] = &g->kv[i];
    }
    qsort(g->kv_sorted, (size_t)g->n_kv, sizeof *g->kv_sorted, cmp_kv);
    for (int64_t i = 1; i < g->n_kv; i++)
        if (!strcmp(g->kv_sorted[i - 1]->name, g->kv_sorted[i]->name))
            return tm_fail(c->err, c->err_len, TM_EFORMAT, "duplicate key '%.100s'",
                           g->kv_sorted[i]->name);
    if ((rc = read_alignment(c, g))) return rc;

    for (int64_t i = 0; i < g->n_tensors; i++)
        if ((rc = parse_tensor(c, g, i))) return rc;
    /* the pool is final now: hand out pointers */
    for (int64_t i = 0; i < g->n_kv; i++) g->kv[i].name = g->pool + g->kv[i].name_off;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        g->tensors[i].name = g->pool + g->tensor_name_off[i];
        g->tensors_sorted[i] = &g->tensors[i];
    }
    qsort(g->tensors_sorted, (size_t)g->n_tensors, sizeof *g->tensors_sorted, cmp_tensor_name);
    for (int64_t i = 1; i < g->n_tensors; i++)
        if (!strcmp(g->tensors_sorted[i - 1]->name, g->tensors_sorted[i]->name))
            return tm_fail(c->err, c->err_len, TM_EFORMAT, "duplicate tensor name '%.100s'",
                           g->tensors_sorted[i]->name);

    uint64_t pad = (g->alignment - c->pos % g->alignment) % g->alignment;
    g->data_start = c->pos + pad; /* pos <= size < 2^63 and pad < 2^32: no overflow */
    if ((rc = check_data(c, g))) return rc;
    /* check_data used tensors_sorted as scratch: restore the by-name order */
    for (int64_t i = 0; i < g->n_tensors; i++) g->tensors_sorted[i] = &g->tensors[i];
    qsort(g->tensors_sorted, (size_t)g->n_tensors, sizeof *g->tensors_sorted, cmp_tensor_name);
    return 0;
}

/* --- open / close ----------------------------------------------------------------- */

static int open_common(const void *data, size_t size, void *map, tm_gguf **out, char *err,
                       size_t err_len) {
    int rc;
    tm_gguf *g = calloc(1, sizeof *g);
    if (!g) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    g->base = data;
    g->size = size;
    cursor c = {.p = data, .size = size, .pos = 0, .err = err, .err_len = err_len};
    if ((rc = parse(&c, g))) goto fail;
    g->map = map; /* set last so a failed parse leaves the mapping to the caller */
    *out = g;
    return 0;
fail:
    tm_gguf_close(g);
    return rc;
}

int tm_gguf_open_memory(const void *data, size_t size, tm_gguf **out, char *err,
                        size_t err_len) {
    *out = NULL;
    if (!data && size) return tm_fail(err, err_len, TM_EINVAL, "NULL buffer");
    if (size > (uint64_t)INT64_MAX) return tm_fail(err, err_len, TM_EINVAL, "buffer too large");
    return open_common(data, size, NULL, out, err, err_len);
}

int tm_gguf_open_owned_mapping(void *map, size_t size, tm_gguf **out, char *err, size_t err_len) {
    *out = NULL;
    int rc = open_common(map, size, map, out, err, err_len);
    if (rc) munmap(map, size);
    return rc;
}

int tm_gguf_open(const char *path, tm_gguf **out, char *err, size_t err_len) {
    int fd = -1, rc;
    void *map = NULL;
    struct stat st;
    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = tm_fail(err, err_len, TM_EIO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        rc = tm_fail(err, err_len, TM_EIO, "%s: not a regular file", path);
        goto fail;
    }
    if (st.st_size < 4) {
        rc = tm_fail(err, err_len, TM_EFORMAT, "%s: truncated: %lld bytes is too short for GGUF",
                     path, (long long)st.st_size);
        goto fail;
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        map = NULL;
        rc = tm_fail(err, err_len, TM_EIO, "%s: mmap failed: %s", path, strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;
    if ((rc = open_common(map, (size_t)st.st_size, map, out, err, err_len))) goto fail;
    return 0;
fail:
    if (map) munmap(map, (size_t)st.st_size);
    if (fd >= 0) close(fd);
    return rc;
}

void tm_gguf_close(tm_gguf *g) {
    if (!g) return;
    if (g->map) munmap(g->map, (size_t)g->size);
    free(g->kv);
    free(g->kv_sorted);
    free(g->tensors);
    free(g->tensor_name_off);
    free(g->tensors_sorted);
    free(g->pool);
    free(g->str_idx);
    free(g);
}

/* --- raw entries (for the writer) -------------------------------------------------- */

int tm_gguf_check_raw_kv(const void *raw, size_t n_bytes, const char **key, size_t *key_len,
                         tm_gguf_type *type, const void **value, char *err, size_t err_len) {
    cursor c = {.p = raw, .size = n_bytes, .pos = 0, .err = err, .err_len = err_len};
    uint64_t off, len;
    uint32_t t;
    int rc;
    if ((rc = rd_str(&c, &off, &len, "raw key")) || (rc = check_name(&c, off, len, "raw key")) ||
        (rc = rd_u32(&c, &t, "raw key type")))
        return rc;
    *value = c.p + c.pos;
    if ((rc = skip_value(&c, t, 0, "raw key value"))) return rc;
    if (c.pos != n_bytes)
        return tm_fail(err, err_len, TM_EFORMAT, "raw key: %" PRIu64 " trailing bytes",
                       n_bytes - c.pos);
    *key = (const char *)c.p + off;
    *key_len = (size_t)len;
    *type = (tm_gguf_type)t;
    return 0;
}

/* gguf_query.c - lookups and typed getters over a parsed tm_gguf (see gguf.c for how
 * entries are laid out). Values are read with memcpy: the file packs them unaligned. */
#include <string.h>

#include "common/common.h"
#include "models/gguf.h"
#include "models/gguf_internal.h"

uint32_t tm_gguf_version(const tm_gguf *g) { return g->version; }
uint64_t tm_gguf_alignment(const tm_gguf *g) { return g->alignment; }
int64_t tm_gguf_n_keys(const tm_gguf *g) { return g->n_kv; }
int64_t tm_gguf_n_tensors(const tm_gguf *g) { return g->n_tensors; }

int64_t tm_gguf_find_key(const tm_gguf *g, const char *key) {
    int64_t lo = 0, hi = g->n_kv;
    while (lo < hi) { /* binary search over kv_sorted */
        int64_t mid = lo + (hi - lo) / 2;
        int r = strcmp(g->kv_sorted[mid]->name, key);
        if (r == 0) return g->kv_sorted[mid] - g->kv;
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

const char *tm_gguf_key_name(const tm_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kv[i].name : NULL;
}

tm_gguf_type tm_gguf_key_type(const tm_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kv[i].type : (tm_gguf_type)-1;
}

int tm_gguf_key_raw(const tm_gguf *g, int64_t i, const void **data, size_t *n_bytes) {
    if (i < 0 || i >= g->n_kv) return TM_ENOTFOUND;
    *data = g->base + g->kv[i].raw_off;
    *n_bytes = (size_t)g->kv[i].raw_bytes;
    return 0;
}

const tm_gguf_tensor *tm_gguf_tensor_at(const tm_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const tm_gguf_tensor *tm_gguf_find_tensor(const tm_gguf *g, const char *name) {
    int64_t lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int r = strcmp(g->tensors_sorted[mid]->name, name);
        if (r == 0) return g->tensors_sorted[mid];
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *tm_gguf_type_name(tm_gguf_type t) {
    static const char *names[] = {"u8",  "i8",   "u16",    "i16",   "u32", "i32", "f32",
                                  "bool", "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < TM_ARRAY_LEN(names) ? names[t] : "unknown";
}

static const tm_gguf_kv *lookup(const tm_gguf *g, const char *key) {
    int64_t i = tm_gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kv[i];
}

/* An integer value as sign + magnitude-ish pair: *neg set for negative values. */
static int get_int(const tm_gguf *g, const char *key, int *neg, uint64_t *u, int64_t *s) {
    const tm_gguf_kv *e = lookup(g, key);
    if (!e) return TM_ENOTFOUND;
    const uint8_t *p = g->base + e->val_off;
    uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
    *neg = 0;
    switch (e->type) {
    case TM_GGUF_UINT8: memcpy(&u8, p, 1); *u = u8; break;
    case TM_GGUF_UINT16: memcpy(&u16, p, 2); *u = u16; break;
    case TM_GGUF_UINT32: memcpy(&u32, p, 4); *u = u32; break;
    case TM_GGUF_UINT64: memcpy(u, p, 8); break;
    case TM_GGUF_INT8: memcpy(&i8, p, 1); *s = i8; goto sgn;
    case TM_GGUF_INT16: memcpy(&i16, p, 2); *s = i16; goto sgn;
    case TM_GGUF_INT32: memcpy(&i32, p, 4); *s = i32; goto sgn;
    case TM_GGUF_INT64: memcpy(s, p, 8); goto sgn;
    default: return TM_EFORMAT;
    }
    *s = *u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)*u;
    return 0;
sgn:
    *neg = *s < 0;
    *u = *neg ? 0 : (uint64_t)*s;
    return 0;
}

int tm_gguf_get_u32(const tm_gguf *g, const char *key, uint32_t *out) {
    int neg;
    uint64_t u;
    int64_t s;
    int rc = get_int(g, key, &neg, &u, &s);
    if (rc) return rc;
    if (neg || u > UINT32_MAX) return TM_EFORMAT;
    *out = (uint32_t)u;
    return 0;
}

int tm_gguf_get_i64(const tm_gguf *g, const char *key, int64_t *out) {
    int neg;
    uint64_t u;
    int64_t s;
    int rc = get_int(g, key, &neg, &u, &s);
    if (rc) return rc;
    if (!neg && u > (uint64_t)INT64_MAX) return TM_EFORMAT;
    *out = s;
    return 0;
}

int tm_gguf_get_f32(const tm_gguf *g, const char *key, float *out) {
    const tm_gguf_kv *e = lookup(g, key);
    if (!e) return TM_ENOTFOUND;
    if (e->type == TM_GGUF_FLOAT32) {
        memcpy(out, g->base + e->val_off, 4);
    } else if (e->type == TM_GGUF_FLOAT64) {
        double d;
        memcpy(&d, g->base + e->val_off, 8);
        *out = (float)d;
    } else {
        return TM_EFORMAT;
    }
    return 0;
}

int tm_gguf_get_bool(const tm_gguf *g, const char *key, int *out) {
    const tm_gguf_kv *e = lookup(g, key);
    if (!e) return TM_ENOTFOUND;
    if (e->type != TM_GGUF_BOOL) return TM_EFORMAT;
    *out = g->base[e->val_off] != 0;
    return 0;
}

int tm_gguf_get_str(const tm_gguf *g, const char *key, const char **out, size_t *len) {
    const tm_gguf_kv *e = lookup(g, key);
    if (!e) return TM_ENOTFOUND;
    if (e->type != TM_GGUF_STRING) return TM_EFORMAT;
    *out = g->pool + e->str;
    if (len) *len = (size_t)e->n;
    return 0;
}

int tm_gguf_get_arr(const tm_gguf *g, const char *key, tm_gguf_type *elem_type, uint64_t *n,
                    const void **data) {
    const tm_gguf_kv *e = lookup(g, key);
    if (!e) return TM_ENOTFOUND;
    if (e->type != TM_GGUF_ARRAY) return TM_EFORMAT;
    *elem_type = e->elem_type;
    *n = e->n;
    if (data) *data = g->base + e->val_off; /* strings/arrays: the serialized elements */
    return 0;
}

int tm_gguf_get_arr_str(const tm_gguf *g, const char *key, uint64_t i, const char **out,
                        size_t *len) {
    const tm_gguf_kv *e = lookup(g, key);
    if (!e) return TM_ENOTFOUND;
    if (e->type != TM_GGUF_ARRAY || e->elem_type != TM_GGUF_STRING) return TM_EFORMAT;
    if (i >= e->n) return TM_ERANGE;
    uint64_t a = g->str_idx[e->str + i], b = g->str_idx[e->str + i + 1];
    *out = g->pool + a;
    if (len) *len = (size_t)(b - a - 1);
    return 0;
}


/* gguf_writer.c - GGUF v3 writer.
 *
 * Metadata is serialized as it is added (one growing byte buffer), so raw entries
 * copied from another file and typed ones go through the same path. Tensors are laid out
 * as they are declared: each one's offset is the running total of the previous ones,
 * each padded to the alignment. general.alignment is written automatically when the
 * alignment is not the default 32; an explicit one must agree with the writer's.
 *
 * Output goes to a file (begin) or to one anonymous mapping sized for the whole image
 * (begin_memory), through the same out(): the two differ only in where bytes land. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/common.h"
#include "models/gguf.h"
#include "models/gguf_internal.h"

typedef struct wtensor {
    char *name;        /* owned copy */
    int n_dims;        /* 1..4 */
    int64_t ne[4];     /* unused dims = 1 */
    tm_dtype type;
    uint64_t n_bytes;  /* data size, unpadded */
    uint64_t offset;   /* in the data section, multiple of the alignment */
    void *data;        /* owned copy, or NULL when streamed with append */
} wtensor;

struct tm_gguf_writer {
    uint32_t alignment;     /* power of two */
    int has_alignment_key;  /* general.alignment was added explicitly */
    uint8_t *kv;            /* serialized metadata entries */
    size_t kv_len, kv_cap;
    char **keys;            /* (n_kv) owned key names, for duplicate checks */
    size_t n_kv, keys_cap;
    wtensor *t;             /* (n_t) in declaration order */
    size_t n_t, t_cap;
    uint64_t data_bytes;    /* data section size so far, padded */
    /* streaming state, between begin and finish */
    FILE *f;                /* file output, or NULL */
    uint8_t *mem;           /* memory output: an anonymous mapping of mem_size bytes, or NULL */
    size_t mem_size, mem_pos;
    char *path;             /* owned; the partial file to remove on failure, or NULL */
    size_t cur;             /* tensor being appended */
    uint64_t cur_done;      /* bytes of it written */
};

static void abandon(tm_gguf_writer *w);

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return TM_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static int put(tm_gguf_writer *w, const void *src, size_t n) {
    if (n > SIZE_MAX - w->kv_len) return TM_ENOMEM;
    if (grow((void **)&w->kv, &w->kv_cap, w->kv_len + n, 1)) return TM_ENOMEM;
    if (n) memcpy(w->kv + w->kv_len, src, n);
    w->kv_len += n;
    return 0;
}
static int put_u32(tm_gguf_writer *w, uint32_t v) { return put(w, &v, 4); }
static int put_u64(tm_gguf_writer *w, uint64_t v) { return put(w, &v, 8); }
static int put_str(tm_gguf_writer *w, const char *s, size_t len) {
    int rc = put_u64(w, len);
    return rc ? rc : put(w, s, len);
}

tm_gguf_writer *tm_gguf_writer_create(uint32_t alignment) {
    if (alignment == 0 || (alignment & (alignment - 1))) return NULL;
    tm_gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = alignment;
    return w;
}

void tm_gguf_writer_destroy(tm_gguf_writer *w) {
    if (!w) return;
    if (w->f || w->mem) abandon(w); /* begun, never finished: the output is incomplete */
    free(w->path);
    for (size_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    free(w->kv);
    free(w);
}

/* A key we may add: nonempty, new, and a general.alignment that agrees with ours. */
static int check_key(const tm_gguf_writer *w, const char *key, size_t len, tm_gguf_type type,
                     const void *value) {
    if (w->f || w->mem || len == 0 || memchr(key, '\0', len)) return TM_EINVAL;
    for (size_t i = 0; i < w->n_kv; i++)
        if (strlen(w->keys[i]) == len && !memcmp(w->keys[i], key, len)) return TM_EINVAL;
    if (len == strlen(TM_GGUF_ALIGNMENT_KEY) && !memcmp(key, TM_GGUF_ALIGNMENT_KEY, len)) {
        uint32_t a;
        if (type != TM_GGUF_UINT32) return TM_EINVAL;
        memcpy(&a, value, 4);
        if (a != w->alignment) return TM_EINVAL;
    }
    return 0;
}

/* Remembers a key whose entry is now in the buffer; on failure the caller rolls back. */
static int keep_key(tm_gguf_writer *w, const char *key, size_t len) {
    if (grow((void **)&w->keys, &w->keys_cap, w->n_kv + 1, sizeof *w->keys)) return TM_ENOMEM;
    char *copy = strndup(key, len);
    if (!copy) return TM_ENOMEM;
    w->keys[w->n_kv++] = copy;
    if (len == strlen(TM_GGUF_ALIGNMENT_KEY) && !memcmp(key, TM_GGUF_ALIGNMENT_KEY, len))
        w->has_alignment_key = 1;
    return 0;
}

/* Checks the key and appends key and type; the caller appends the value, then calls
 * end_kv, which keeps the entry or rolls the buffer back to mark. */
static int begin_kv(tm_gguf_writer *w, const char *key, tm_gguf_type type, const void *value) {
    if (!key) return TM_EINVAL;
    size_t len = strlen(key);
    int rc = check_key(w, key, len, type, value);
    if (rc) return rc;
    if ((rc = put_str(w, key, len)) || (rc = put_u32(w, (uint32_t)type))) return rc;
    return 0;
}

static int end_kv(tm_gguf_writer *w, const char *key, size_t mark, int rc) {
    if (!rc) rc = keep_key(w, key, strlen(key));
    if (rc) w->kv_len = mark;
    return rc;
}

static int add_scalar(tm_gguf_writer *w, const char *key, tm_gguf_type type, const void *v,
                      size_t n) {
    size_t mark = w->kv_len;
    int rc = begin_kv(w, key, type, v);
    if (!rc) rc = put(w, v, n);
    return end_kv(w, key, mark, rc);
}

int tm_gguf_writer_add_u32(tm_gguf_writer *w, const char *key, uint32_t v) {
    return add_scalar(w, key, TM_GGUF_UINT32, &v, 4);
}
int tm_gguf_writer_add_f32(tm_gguf_writer *w, const char *key, float v) {
    return add_scalar(w, key, TM_GGUF_FLOAT32, &v, 4);
}
int tm_gguf_writer_add_bool(tm_gguf_writer *w, const char *key, int v) {
    uint8_t b = v != 0;
    return add_scalar(w, key, TM_GGUF_BOOL, &b, 1);
}

int tm_gguf_writer_add_str(tm_gguf_writer *w, const char *key, const char *v) {
    if (!v) return TM_EINVAL;
    size_t mark = w->kv_len;
    int rc = begin_kv(w, key, TM_GGUF_STRING, NULL);
    if (!rc) rc = put_str(w, v, strlen(v));
    return end_kv(w, key, mark, rc);
}

static int elem_size(tm_gguf_type t) {
    switch (t) {
    case TM_GGUF_UINT8: case TM_GGUF_INT8: case TM_GGUF_BOOL: return 1;
    case TM_GGUF_UINT16: case TM_GGUF_INT16: return 2;
    case TM_GGUF_UINT32: case TM_GGUF_INT32: case TM_GGUF_FLOAT32: return 4;
    case TM_GGUF_UINT64: case TM_GGUF_INT64: case TM_GGUF_FLOAT64: return 8;
    default: return 0; /* strings use add_arr_str; nested arrays only via add_raw_kv */
    }
}

int tm_gguf_writer_add_arr(tm_gguf_writer *w, const char *key, tm_gguf_type elem_type,
                           const void *data, uint64_t n) {
    int sz = elem_size(elem_type);
    if (!sz || (n && !data) || n > SIZE_MAX / (size_t)sz) return TM_EINVAL;
    size_t mark = w->kv_len;
    int rc = begin_kv(w, key, TM_GGUF_ARRAY, NULL);
    if (!rc && !(rc = put_u32(w, (uint32_t)elem_type)) && !(rc = put_u64(w, n)))
        rc = put(w, data, (size_t)n * (size_t)sz);
    return end_kv(w, key, mark, rc);
}

int tm_gguf_writer_add_arr_str(tm_gguf_writer *w, const char *key, const char *const *v,
                               uint64_t n) {
    if (n && !v) return TM_EINVAL;
    for (uint64_t i = 0; i < n; i++)
        if (!v[i]) return TM_EINVAL;
    size_t mark = w->kv_len;
    int rc = begin_kv(w, key, TM_GGUF_ARRAY, NULL);
    if (!rc && !(rc = put_u32(w, TM_GGUF_STRING)) && !(rc = put_u64(w, n)))
        for (uint64_t i = 0; i < n && !rc; i++) rc = put_str(w, v[i], strlen(v[i]));
    return end_kv(w, key, mark, rc);
}

int tm_gguf_writer_add_raw_kv(tm_gguf_writer *w, const void *raw, size_t n_bytes) {
    const char *key;
    size_t key_len;
    tm_gguf_type type;
    const void *value;
    if (!raw || tm_gguf_check_raw_kv(raw, n_bytes, &key, &key_len, &type, &value, NULL, 0))
        return TM_EINVAL;
    size_t mark = w->kv_len;
    int rc = check_key(w, key, key_len, type, value);
    if (rc) return rc;
    if (!(rc = put(w, raw, n_bytes))) rc = keep_key(w, key, key_len);
    if (rc) w->kv_len = mark;
    return rc;
}

static int add_tensor(tm_gguf_writer *w, const char *name, int n_dims, const int64_t *ne,
                      tm_dtype type, const void *data, uint64_t n_bytes, int check_bytes) {
    if (w->f || w->mem || !name || !*name || !ne || n_dims < 1 || n_dims > TM_GGUF_MAX_DIMS ||
        !tm_dtype_valid((int)type))
        return TM_EINVAL;
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return TM_EINVAL;
    wtensor t = {.n_dims = n_dims, .type = type, .ne = {1, 1, 1, 1}};
    if (ne[0] > INT64_MAX / 8) return TM_EINVAL; /* keeps row_bytes from overflowing */
    int64_t bytes = tm_dtype_row_bytes(type, ne[0]);
    if (bytes <= 0) return TM_EINVAL;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 1) return TM_EINVAL;
        t.ne[d] = ne[d];
        if (d > 0) {
            if (bytes > INT64_MAX / ne[d]) return TM_EINVAL;
            bytes *= ne[d];
        }
    }
    if (check_bytes && ((uint64_t)bytes != n_bytes || !data)) return TM_EINVAL;
    uint64_t padded = ((uint64_t)bytes + w->alignment - 1) / w->alignment * w->alignment;
    if (padded > (uint64_t)INT64_MAX - w->data_bytes) return TM_EINVAL;
    if (grow((void **)&w->t, &w->t_cap, w->n_t + 1, sizeof *w->t)) return TM_ENOMEM;
    t.n_bytes = (uint64_t)bytes;
    t.offset = w->data_bytes;
    t.name = strdup(name);
    if (!t.name) return TM_ENOMEM;
    if (data) {
        if ((uint64_t)bytes > SIZE_MAX || !(t.data = malloc((size_t)bytes))) {
            free(t.name);
            return TM_ENOMEM;
        }
        memcpy(t.data, data, (size_t)bytes);
    }
    w->t[w->n_t++] = t;
    w->data_bytes += padded;
    return 0;
}

int tm_gguf_writer_add_tensor(tm_gguf_writer *w, const char *name, int n_dims,
                              const int64_t *ne, tm_dtype type, const void *data,
                              uint64_t n_bytes) {
    return add_tensor(w, name, n_dims, ne, type, data, n_bytes, 1);
}

int tm_gguf_writer_add_tensor_info(tm_gguf_writer *w, const char *name, int n_dims,
                                   const int64_t *ne, tm_dtype type) {
    return add_tensor(w, name, n_dims, ne, type, NULL, 0, 0);
}

/* --- output ----------------------------------------------------------------------- */

static int out(tm_gguf_writer *w, const void *p, size_t n) {
    if (w->mem) { /* sized by begin_memory; append checks every count first */
        if (n > w->mem_size - w->mem_pos) return TM_EIO;
        if (n) memcpy(w->mem + w->mem_pos, p, n);
        w->mem_pos += n;
        return 0;
    }
    return n && fwrite(p, 1, n, w->f) != n ? TM_EIO : 0;
}

static int pad_to(tm_gguf_writer *w, uint64_t n_written) {
    static const uint8_t zeros[256];
    uint64_t pad = (w->alignment - n_written % w->alignment) % w->alignment;
    int rc = 0;
    while (pad && !rc) {
        size_t k = (size_t)TM_MIN(pad, sizeof zeros);
        rc = out(w, zeros, k);
        pad -= k;
    }
    return rc;
}

/* Bytes of the header, metadata and tensor infos, padded to the alignment: where the
 * data section starts. */
static uint64_t header_bytes(const tm_gguf_writer *w) {
    uint64_t n = 24 + w->kv_len;
    if (!w->has_alignment_key && w->alignment != TM_GGUF_DEFAULT_ALIGNMENT)
        n += 16 + strlen(TM_GGUF_ALIGNMENT_KEY);
    for (size_t i = 0; i < w->n_t; i++)
        n += 8 + strlen(w->t[i].name) + 4 + 8 * (uint64_t)w->t[i].n_dims + 4 + 8;
    return (n + w->alignment - 1) / w->alignment * w->alignment;
}

uint64_t tm_gguf_writer_total_bytes(const tm_gguf_writer *w) {
    return header_bytes(w) + w->data_bytes;
}

static int write_header(tm_gguf_writer *w) {
    uint32_t version = 3;
    uint64_t n_t = w->n_t, n_kv = w->n_kv;
    uint8_t auto_kv[64]; /* general.alignment, when we add it ourselves */
    size_t auto_len = 0;
    if (!w->has_alignment_key && w->alignment != TM_GGUF_DEFAULT_ALIGNMENT) {
        uint64_t klen = strlen(TM_GGUF_ALIGNMENT_KEY);
        uint32_t type = TM_GGUF_UINT32;
        memcpy(auto_kv, &klen, 8);
        memcpy(auto_kv + 8, TM_GGUF_ALIGNMENT_KEY, klen);
        memcpy(auto_kv + 8 + klen, &type, 4);
        memcpy(auto_kv + 12 + klen, &w->alignment, 4);
        auto_len = 16 + klen;
        n_kv++;
    }
    uint64_t pos = 24 + w->kv_len + auto_len;
    int rc;
    if ((rc = out(w, TM_GGUF_MAGIC, 4)) || (rc = out(w, &version, 4)) ||
        (rc = out(w, &n_t, 8)) || (rc = out(w, &n_kv, 8)) || (rc = out(w, w->kv, w->kv_len)) ||
        (rc = out(w, auto_kv, auto_len)))
        return rc;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        uint64_t len = strlen(t->name);
        uint32_t n_dims = (uint32_t)t->n_dims, type = (uint32_t)t->type;
        if ((rc = out(w, &len, 8)) || (rc = out(w, t->name, len)) || (rc = out(w, &n_dims, 4)) ||
            (rc = out(w, t->ne, 8 * (size_t)t->n_dims)) || (rc = out(w, &type, 4)) ||
            (rc = out(w, &t->offset, 8)))
            return rc;
        pos += 8 + len + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
    }
    return pad_to(w, pos);
}

/* Drops a half-written file or image after a failure. */
static void abandon(tm_gguf_writer *w) {
    if (w->mem) { /* never a file at the same time */
        munmap(w->mem, w->mem_size);
        w->mem = NULL;
        return;
    }
    if (w->f) fclose(w->f);
    w->f = NULL;
    if (w->path) remove(w->path);
}

/* Where errors say the output is. */
static const char *out_name(const tm_gguf_writer *w) { return w->path ? w->path : "in-memory GGUF"; }

int tm_gguf_writer_begin(tm_gguf_writer *w, const char *path, char *err, size_t err_len) {
    if (w->f || w->mem) return tm_fail(err, err_len, TM_EINVAL, "%s: writer already begun", path);
    if (!(w->path = strdup(path))) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    w->f = fopen(path, "wb");
    if (!w->f) {
        int rc = tm_fail(err, err_len, TM_EIO, "%s: cannot create: %s", path, strerror(errno));
        free(w->path);
        w->path = NULL;
        return rc;
    }
    w->cur = 0;
    w->cur_done = 0;
    if (write_header(w)) {
        int rc = tm_fail(err, err_len, TM_EIO, "%s: write failed: %s", path, strerror(errno));
        abandon(w);
        return rc;
    }
    return 0;
}

int tm_gguf_writer_append(tm_gguf_writer *w, const void *data, size_t n_bytes, char *err,
                          size_t err_len) {
    if (!w->f && !w->mem) return tm_fail(err, err_len, TM_EINVAL, "append before begin");
    if (n_bytes == 0) return 0;
    if (w->cur >= w->n_t)
        return tm_fail(err, err_len, TM_EINVAL, "%s: append after the last tensor", out_name(w));
    wtensor *t = &w->t[w->cur];
    if (n_bytes > t->n_bytes - w->cur_done)
        return tm_fail(err, err_len, TM_EINVAL,
                       "tensor '%s': append of %zu bytes runs past its %" PRIu64 " bytes",
                       t->name, n_bytes, t->n_bytes);
    if (out(w, data, n_bytes) || (w->cur_done + n_bytes == t->n_bytes && pad_to(w, t->n_bytes))) {
        int rc = tm_fail(err, err_len, TM_EIO, "%s: write failed: %s", out_name(w),
                         w->mem ? "past the image" : strerror(errno));
        abandon(w);
        return rc;
    }
    w->cur_done += n_bytes;
    if (w->cur_done == t->n_bytes) {
        w->cur++;
        w->cur_done = 0;
    }
    return 0;
}

/* Every declared tensor byte came. */
static int check_complete(const tm_gguf_writer *w, char *err, size_t err_len) {
    if (w->cur < w->n_t)
        return tm_fail(err, err_len, TM_EINVAL, "tensor '%s': only %" PRIu64 " of %" PRIu64
                       " bytes written", w->t[w->cur].name, w->cur_done, w->t[w->cur].n_bytes);
    return 0;
}

int tm_gguf_writer_finish(tm_gguf_writer *w, char *err, size_t err_len) {
    if (!w->f) return tm_fail(err, err_len, TM_EINVAL, "finish before begin");
    int rc = check_complete(w, err, err_len);
    if (rc) return rc;
    int bad = fflush(w->f) != 0 || ferror(w->f);
    bad |= fclose(w->f) != 0;
    w->f = NULL;
    if (bad) {
        rc = tm_fail(err, err_len, TM_EIO, "%s: write failed: %s", w->path, strerror(errno));
        abandon(w);
        return rc;
    }
    return 0;
}

int tm_gguf_writer_begin_memory(tm_gguf_writer *w, char *err, size_t err_len) {
    if (w->f || w->mem) return tm_fail(err, err_len, TM_EINVAL, "writer already begun");
    uint64_t total = tm_gguf_writer_total_bytes(w);
    if (total > SIZE_MAX / 2)
        return tm_fail(err, err_len, TM_ENOMEM, "a %" PRIu64 "-byte image does not fit in memory", total);
    void *p = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return tm_fail(err, err_len, TM_ENOMEM, "cannot map %.1f MiB for an in-memory GGUF: %s",
                       (double)total / (1 << 20), strerror(errno));
#ifdef MADV_HUGEPAGE
    (void)madvise(p, (size_t)total, MADV_HUGEPAGE); /* advice only: fewer TLB misses in matmuls */
#endif
    w->mem = p;
    w->mem_size = (size_t)total;
    w->mem_pos = 0;
    w->cur = 0;
    w->cur_done = 0;
    int rc = write_header(w);
    if (rc) {
        abandon(w);
        return tm_fail(err, err_len, rc, "in-memory GGUF: header does not fit its own size");
    }
    return 0;
}

int tm_gguf_writer_finish_memory(tm_gguf_writer *w, tm_gguf **out, char *err, size_t err_len) {
    *out = NULL;
    if (!w->mem) return tm_fail(err, err_len, TM_EINVAL, "finish_memory before begin_memory");
    int rc = check_complete(w, err, err_len);
    if (rc) return rc;
    uint8_t *image = w->mem;
    size_t size = w->mem_size;
    w->mem = NULL; /* the tm_gguf owns it now, or it is gone */
    return tm_gguf_open_owned_mapping(image, size, out, err, err_len);
}

int tm_gguf_writer_write(tm_gguf_writer *w, const char *path, char *err, size_t err_len) {
    int rc;
    for (size_t i = 0; i < w->n_t; i++)
        if (!w->t[i].data)
            return tm_fail(err, err_len, TM_EINVAL,
                           "tensor '%s' was declared without data; use append", w->t[i].name);
    if ((rc = tm_gguf_writer_begin(w, path, err, err_len))) return rc;
    for (size_t i = 0; i < w->n_t; i++)
        if ((rc = tm_gguf_writer_append(w, w->t[i].data, (size_t)w->t[i].n_bytes, err, err_len))) {
            abandon(w);
            return rc;
        }
    return tm_gguf_writer_finish(w, err, err_len);
}

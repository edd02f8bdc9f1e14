/* gguf_internal.h - what gguf.c (parser), gguf_query.c (getters) and gguf_writer.c
 * share; not a public header. */
#ifndef TM_GGUF_INTERNAL_H
#define TM_GGUF_INTERNAL_H

#include "models/gguf.h"

#define TM_GGUF_MAGIC "GGUF"
#define TM_GGUF_DEFAULT_ALIGNMENT 32u
#define TM_GGUF_MAX_DIMS 4
#define TM_GGUF_ALIGNMENT_KEY "general.alignment"

/* One metadata entry, as located by the parser. */
typedef struct tm_gguf_kv {
    const char *name;      /* into pool, NUL-terminated (set after parsing) */
    size_t name_off;       /* pool offset of name while parsing */
    tm_gguf_type type;     /* value type */
    uint64_t raw_off;      /* whole entry (key, type, value) in the file */
    uint64_t raw_bytes;
    uint64_t val_off;      /* scalars: the value; arrays: first element */
    tm_gguf_type elem_type;/* arrays only */
    uint64_t n;            /* arrays: element count; strings: length */
    uint64_t str;          /* string: pool offset; string array: first index in str_idx */
} tm_gguf_kv;

/* Invariants once open succeeds: every offset and length lies inside [0, size); key and
 * tensor names are unique; tensor data ranges are inside the data section and disjoint;
 * name pointers point into pool. Read-only from then on. */
struct tm_gguf {
    const uint8_t *base;   /* the file bytes (mapping or caller's buffer) */
    uint64_t size;         /* bytes at base */
    void *map;             /* our mmap, or NULL for open_memory */
    uint32_t version;      /* 2 or 3 */
    uint64_t alignment;    /* power of two */
    uint64_t data_start;   /* file offset of the data section */
    int64_t n_kv;
    tm_gguf_kv *kv;          /* (n_kv) in file order */
    tm_gguf_kv **kv_sorted;  /* (n_kv) by name, for lookup and duplicate checks */
    int64_t n_tensors;
    tm_gguf_tensor *tensors;         /* (n_tensors) in file order */
    size_t *tensor_name_off;         /* (n_tensors) pool offsets while parsing */
    tm_gguf_tensor **tensors_sorted; /* (n_tensors) by name */
    char *pool;            /* NUL-terminated copies of every string */
    size_t pool_len, pool_cap;
    uint64_t *str_idx;     /* pool offsets of string-array elements; one extra at each
                              array's end so element i spans [idx[i], idx[i+1]-1) */
    size_t n_str_idx, str_idx_cap;
};

/* Checks that raw[0..n_bytes) is exactly one well-formed metadata entry (key string,
 * u32 type, value) and returns where its key and value lie. 0 or TM_EFORMAT with err. */
int tm_gguf_check_raw_kv(const void *raw, size_t n_bytes, const char **key, size_t *key_len,
                         tm_gguf_type *type, const void **value, char *err, size_t err_len);

/* tm_gguf_open_memory over an anonymous mapping of size bytes that the tm_gguf takes
 * over: tm_gguf_close unmaps it, and so does a failed open. For the writer's images. */
int tm_gguf_open_owned_mapping(void *map, size_t size, tm_gguf **out, char *err, size_t err_len);

#endif

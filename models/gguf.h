/* gguf.h - GGUF v2/v3 reader (mmap'd, every offset/size/count bounds-checked) and writer.
 *
 * A tm_gguf is read-only after open; any thread may read it. Strings returned point into
 * storage owned by the tm_gguf and live until tm_gguf_close. */
#ifndef TM_GGUF_H
#define TM_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kernels/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Metadata value types, as numbered in the GGUF spec. */
typedef enum tm_gguf_type {
    TM_GGUF_UINT8 = 0,
    TM_GGUF_INT8 = 1,
    TM_GGUF_UINT16 = 2,
    TM_GGUF_INT16 = 3,
    TM_GGUF_UINT32 = 4,
    TM_GGUF_INT32 = 5,
    TM_GGUF_FLOAT32 = 6,
    TM_GGUF_BOOL = 7,
    TM_GGUF_STRING = 8,
    TM_GGUF_ARRAY = 9,
    TM_GGUF_UINT64 = 10,
    TM_GGUF_INT64 = 11,
    TM_GGUF_FLOAT64 = 12,
} tm_gguf_type;

typedef struct tm_gguf_tensor {
    const char *name;   /* NUL-terminated */
    int n_dims;         /* 1..4 */
    int64_t ne[4];      /* elements per dim, ne[0] fastest (row length); unused dims = 1 */
    tm_dtype type;      /* element type */
    uint64_t offset;    /* from the start of the data section */
    uint64_t n_bytes;   /* size of the data */
    const void *data;   /* into the mapping (aligned as the file says) */
} tm_gguf_tensor;

typedef struct tm_gguf tm_gguf; /* opaque */

/* Opens and validates path (mmap). On error returns a TM_E* code and one line in err that
 * names the problem (e.g. "tensor 'blk.0.attn_q.weight': data [..) past end of file"). */
int tm_gguf_open(const char *path, tm_gguf **out, char *err, size_t err_len);
/* Same over a caller's buffer, which must outlive the tm_gguf (tests, fuzzing). */
int tm_gguf_open_memory(const void *data, size_t size, tm_gguf **out, char *err, size_t err_len);
void tm_gguf_close(tm_gguf *g); /* NULL is a no-op */

uint32_t tm_gguf_version(const tm_gguf *g);
uint64_t tm_gguf_alignment(const tm_gguf *g);

/* Metadata: keys are indexed 0..n_keys-1. */
int64_t tm_gguf_n_keys(const tm_gguf *g);
int64_t tm_gguf_find_key(const tm_gguf *g, const char *key); /* index or -1 */
const char *tm_gguf_key_name(const tm_gguf *g, int64_t i);
tm_gguf_type tm_gguf_key_type(const tm_gguf *g, int64_t i);

/* Typed getters by key. Return 0, TM_ENOTFOUND if the key is missing, or TM_EFORMAT if
 * its type does not fit (integers convert between widths when the value fits; f32 and
 * f64 convert to each other). */
int tm_gguf_get_u32(const tm_gguf *g, const char *key, uint32_t *out);
int tm_gguf_get_i64(const tm_gguf *g, const char *key, int64_t *out);
int tm_gguf_get_f32(const tm_gguf *g, const char *key, float *out);
int tm_gguf_get_bool(const tm_gguf *g, const char *key, int *out);
/* String value: NUL-terminated copy owned by g (embedded NULs are kept; see len). */
int tm_gguf_get_str(const tm_gguf *g, const char *key, const char **out, size_t *len);
/* Array: element type and count. For numeric element types *data points at the packed
 * little-endian values; for strings use tm_gguf_get_arr_str. */
int tm_gguf_get_arr(const tm_gguf *g, const char *key, tm_gguf_type *elem_type, uint64_t *n,
                    const void **data);
/* Element i of a string array (NUL-terminated copy owned by g). */
int tm_gguf_get_arr_str(const tm_gguf *g, const char *key, uint64_t i, const char **out,
                        size_t *len);
/* Raw serialized bytes of metadata entry i (key, type and value as in the file), for
 * copying entries verbatim into a new file. */
int tm_gguf_key_raw(const tm_gguf *g, int64_t i, const void **data, size_t *n_bytes);

/* Tensors: indexed 0..n_tensors-1 in file order. */
int64_t tm_gguf_n_tensors(const tm_gguf *g);
const tm_gguf_tensor *tm_gguf_tensor_at(const tm_gguf *g, int64_t i);
const tm_gguf_tensor *tm_gguf_find_tensor(const tm_gguf *g, const char *name); /* or NULL */

/* Human-readable name of a metadata type ("u32", "string", "array"). */
const char *tm_gguf_type_name(tm_gguf_type t);

/* --- Writer (used by `tokenmill quantize` and by tests that build files) ------------ */
typedef struct tm_gguf_writer tm_gguf_writer;

/* Starts a GGUF v3 file with the given tensor data alignment (power of two). */
tm_gguf_writer *tm_gguf_writer_create(uint32_t alignment);
void tm_gguf_writer_destroy(tm_gguf_writer *w);
/* Metadata; each copies what it is given. */
int tm_gguf_writer_add_raw_kv(tm_gguf_writer *w, const void *raw, size_t n_bytes);
int tm_gguf_writer_add_u32(tm_gguf_writer *w, const char *key, uint32_t v);
int tm_gguf_writer_add_f32(tm_gguf_writer *w, const char *key, float v);
int tm_gguf_writer_add_bool(tm_gguf_writer *w, const char *key, int v);
int tm_gguf_writer_add_str(tm_gguf_writer *w, const char *key, const char *v);
int tm_gguf_writer_add_arr(tm_gguf_writer *w, const char *key, tm_gguf_type elem_type,
                           const void *data, uint64_t n);
int tm_gguf_writer_add_arr_str(tm_gguf_writer *w, const char *key, const char *const *v,
                               uint64_t n);
/* Tensor; data (n_bytes = row_bytes(type, ne[0]) * rows) is copied. */
int tm_gguf_writer_add_tensor(tm_gguf_writer *w, const char *name, int n_dims,
                              const int64_t *ne, tm_dtype type, const void *data,
                              uint64_t n_bytes);
/* Writes the whole file. Returns 0 or TM_EIO with err. */
int tm_gguf_writer_write(tm_gguf_writer *w, const char *path, char *err, size_t err_len);

/* Streaming, for files too large to hold in memory (the converter): declare tensors
 * without data, then begin (writes header, metadata and tensor infos), append each
 * tensor's bytes in declaration order (any number of calls per tensor; a call may not
 * run past the current tensor), and finish (checks every byte came, closes). A writer
 * destroyed between begin and finish removes the partial file. Errors: TM_EINVAL (wrong
 * order or byte count), TM_EIO, each with err. */
int tm_gguf_writer_add_tensor_info(tm_gguf_writer *w, const char *name, int n_dims,
                                   const int64_t *ne, tm_dtype type);
int tm_gguf_writer_begin(tm_gguf_writer *w, const char *path, char *err, size_t err_len);
int tm_gguf_writer_append(tm_gguf_writer *w, const void *data, size_t n_bytes, char *err,
                          size_t err_len);
int tm_gguf_writer_finish(tm_gguf_writer *w, char *err, size_t err_len);

/* Bytes the whole file will take with the metadata and tensors declared so far. */
uint64_t tm_gguf_writer_total_bytes(const tm_gguf_writer *w);

/* The same streaming into memory instead of a file, for models built at startup (`serve
 * --synthetic`): begin_memory maps one anonymous region of tm_gguf_writer_total_bytes
 * and writes the header into it; append fills it as it would a file; finish_memory
 * checks every byte came and opens the image as a tm_gguf that owns the region (it is
 * unmapped by tm_gguf_close, or at once if the open fails). A writer destroyed between
 * the two unmaps it. Errors: TM_ENOMEM (cannot map), TM_EINVAL (order, byte count), the
 * reader's codes, each with err. */
int tm_gguf_writer_begin_memory(tm_gguf_writer *w, char *err, size_t err_len);
int tm_gguf_writer_finish_memory(tm_gguf_writer *w, tm_gguf **out, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif

/* gguf_internal.h - what gguf.c shares with gguf_writer.c; not a public header. */
#ifndef TM_GGUF_INTERNAL_H
#define TM_GGUF_INTERNAL_H

#include "models/gguf.h"

#define TM_GGUF_MAGIC "GGUF"
#define TM_GGUF_DEFAULT_ALIGNMENT 32u
#define TM_GGUF_MAX_DIMS 4
#define TM_GGUF_ALIGNMENT_KEY "general.alignment"

/* Checks that raw[0..n_bytes) is exactly one well-formed metadata entry (key string,
 * u32 type, value) and returns where its key and value lie. 0 or TM_EFORMAT with err. */
int tm_gguf_check_raw_kv(const void *raw, size_t n_bytes, const char **key, size_t *key_len,
                         tm_gguf_type *type, const void **value, char *err, size_t err_len);

#endif

/* dtype.h - element types of weights and activations, and their scalar reference
 * (de)quantization. Values equal the GGML type ids so GGUF tensor types map directly.
 * Block layouts: ../shared/KERNELS.md section 1. Implemented in kernels/dtype.c. */
#ifndef TM_DTYPE_H
#define TM_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tm_dtype {
    TM_DTYPE_F32 = 0,
    TM_DTYPE_F16 = 1,
    TM_DTYPE_Q4_0 = 2,
    TM_DTYPE_Q4_1 = 3,
    TM_DTYPE_Q8_0 = 8,
    TM_DTYPE_Q8_1 = 9,  /* activations only */
    TM_DTYPE_Q4_K = 12,
    TM_DTYPE_Q6_K = 14,
    TM_DTYPE_Q8_K = 15, /* activations only */
    TM_DTYPE_BF16 = 30,
} tm_dtype;

enum { TM_QK = 32, TM_QK_K = 256 }; /* values per block: legacy quants, k-quants */

/* Block structs, exactly as in GGUF files (scales are IEEE half unless noted). */
typedef struct { uint16_t d; uint8_t qs[16]; } tm_block_q4_0;                 /* 18 B */
typedef struct { uint16_t d, m; uint8_t qs[16]; } tm_block_q4_1;              /* 20 B */
typedef struct { uint16_t d; int8_t qs[32]; } tm_block_q8_0;                  /* 34 B */
typedef struct { uint16_t d, s; int8_t qs[32]; } tm_block_q8_1;               /* 36 B, s = d * sum(qs) */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } tm_block_q4_k; /* 144 B */
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } tm_block_q6_k; /* 210 B */
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } tm_block_q8_k;  /* 292 B, f32 d */

/* Is this a GGML type id we know (any of the above)? */
int tm_dtype_valid(int type_id);
/* "q4_1", "f16", ...; "unknown" for anything else. */
const char *tm_dtype_name(tm_dtype t);
/* Parses "q4_1"/"Q4_1"/"f16"...; -1 if unknown. */
int tm_dtype_from_name(const char *name);
/* Values per block (1 for float types) and bytes per block. */
int64_t tm_dtype_block_size(tm_dtype t);
int64_t tm_dtype_block_bytes(tm_dtype t);
/* Bytes of a row of n values; -1 if n is not a multiple of the block size or overflows. */
int64_t tm_dtype_row_bytes(tm_dtype t, int64_t n);

/* Scalar reference: src (n values of type t) -> dst (n) f32. n multiple of the block. */
void tm_dequantize_row(tm_dtype t, const void *src, float *dst, int64_t n);
/* Scalar reference: src (n) f32 -> dst (n values of type t), round to nearest.
 * Supported targets: F32, F16, BF16, Q8_0, Q8_1, Q4_0, Q4_1, Q8_K. Returns 0, or
 * TM_EUNSUPPORTED for other targets (Q4_K, Q6_K: we only read them). */
int tm_quantize_row(tm_dtype t, const float *src, void *dst, int64_t n);

#ifdef __cplusplus
}
#endif
#endif

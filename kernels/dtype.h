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
    TM_DTYPE_Q5_0 = 6,
    TM_DTYPE_Q5_1 = 7,
    TM_DTYPE_Q8_0 = 8,
    TM_DTYPE_Q8_1 = 9,  /* activations only */
    TM_DTYPE_Q2_K = 10,
    TM_DTYPE_Q3_K = 11,
    TM_DTYPE_Q4_K = 12,
    TM_DTYPE_Q5_K = 13,
    TM_DTYPE_Q6_K = 14,
    TM_DTYPE_Q8_K = 15, /* activations only */
    TM_DTYPE_BF16 = 30,
} tm_dtype;

enum { TM_QK = 32, TM_QK_K = 256 }; /* values per block: legacy quants, k-quants */

/* Block structs, exactly as in GGUF files (scales are IEEE half unless noted). */
typedef struct { uint16_t d; uint8_t qs[16]; } tm_block_q4_0;                 /* 18 B */
typedef struct { uint16_t d, m; uint8_t qs[16]; } tm_block_q4_1;              /* 20 B */
/* Q5_0 / Q5_1: qs as Q4_0 / Q4_1 (4 low bits), qh = bit 4 of value j at bit j (LE u32). */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } tm_block_q5_0;    /* 22 B */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } tm_block_q5_1; /* 24 B */
typedef struct { uint16_t d; int8_t qs[32]; } tm_block_q8_0;                  /* 34 B */
typedef struct { uint16_t d, s; int8_t qs[32]; } tm_block_q8_1;               /* 36 B, s = d * sum(qs) */
/* Q2_K: 16 sub-blocks of 16; scales[j] = scale (low nibble) and min (high nibble) of
 * sub-block j; 2-bit values, 4 per byte (layout: dtype.c). */
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } tm_block_q2_k; /* 84 B */
/* Q3_K: 16 sub-blocks of 16 with 6-bit scales (minus 32) packed in 12 bytes; 2 low bits
 * in qs, the third bit in hmask (set = no -4 offset). */
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } tm_block_q3_k; /* 110 B */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } tm_block_q4_k; /* 144 B */
/* Q5_K: Q4_K plus qh (bit 2c of qh[l] is the 5th bit of value 64c + l, bit 2c+1 of 64c+32+l). */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } tm_block_q5_k; /* 176 B */
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } tm_block_q6_k; /* 210 B */
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } tm_block_q8_k;  /* 292 B, f32 d */

/* A K-quant super-block (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) as integers, one scale and min per
 * 16 values (Q4_K / Q5_K repeat theirs per 32): value i = d * sc[i / 16] * q[i] -
 * dmin * m[i / 16]. The scalar reference dequantizes and multiplies through this, so each
 * type's bit layout lives in one function (tm_kblock_unpack). */
typedef struct tm_kblock {
    int8_t q[256];  /* Q2_K 0..3, Q3_K -4..3, Q4_K 0..15, Q5_K 0..31, Q6_K -32..31 */
    int16_t sc[16]; /* sub-block scales: Q2_K 0..15, Q4_K/Q5_K 0..63, Q3_K -32..31, Q6_K int8 */
    int16_t m[16];  /* sub-block mins (Q2_K, Q4_K, Q5_K); 0 for Q3_K and Q6_K */
    float d, dmin;  /* super-block scales; dmin 0 for Q3_K and Q6_K */
} tm_kblock;

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

/* Is t a K-quant weight type (Q2_K..Q6_K; not the Q8_K activations)? */
int tm_dtype_is_kquant(tm_dtype t);
/* Unpacks one super-block of K-quant type t (tm_dtype_is_kquant) into out. */
void tm_kblock_unpack(tm_dtype t, const void *block, tm_kblock *out);

/* The 32 five-bit values (0..31) of a Q5_0 / Q5_1 block from its qs and qh. */
void tm_q5_unpack(const uint8_t qs[16], const uint8_t qh[4], uint8_t out[32]);

/* Scalar reference: src (n values of type t) -> dst (n) f32. n multiple of the block. */
void tm_dequantize_row(tm_dtype t, const void *src, float *dst, int64_t n);
/* Scalar reference: src (n) f32 -> dst (n values of type t). Every type above is a
 * target. F16/BF16/Q8_0/Q8_1/Q8_K round to nearest; Q4_0, Q4_1, Q5_0 and Q5_1 round as
 * ggml's reference quantizers do (bit for bit); the K-quants (Q2_K..Q6_K) search each
 * sub-block's scale (and min) for the least squared error (kernels/quant_k.c). Returns
 * 0, TM_EINVAL if n is not a multiple of the block, TM_EUNSUPPORTED for an unknown t. */
int tm_quantize_row(tm_dtype t, const float *src, void *dst, int64_t n);

#ifdef __cplusplus
}
#endif
#endif

/* quant_k.h - private to kernels/dtype.c: the K-quant quantizers (Q2_K, Q3_K, Q4_K, Q5_K,
 * Q6_K) behind tm_quantize_row, and the packer that is the inverse of tm_kblock_unpack. */
#ifndef TM_QUANT_K_H
#define TM_QUANT_K_H

#include <stdint.h>

#include "kernels/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* src (n) f32 -> dst (n / 256 super-blocks of type t). t is a K-quant (tm_dtype_is_kquant)
 * and n a multiple of 256 (the caller checks both). Each super-block is searched for the
 * scales (and mins) with the least squared error; see quant_k.c. Any thread. */
void tm_quantize_k_row(tm_dtype t, const float *src, void *dst, int64_t n);

/* The inverse of tm_kblock_unpack: k (within its type's ranges, see tm_kblock) -> one
 * super-block of type t. d and dmin are stored as f16. */
void tm_kblock_pack(tm_dtype t, const tm_kblock *k, void *block);

#ifdef __cplusplus
}
#endif
#endif

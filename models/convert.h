/* convert.h - the converter behind `tokenmill quantize IN OUT TYPE`: rewrites a GGUF
 * model's weights in another element type, one row at a time (memory stays bounded by
 * the longest row, whatever the model size). */
#ifndef TM_CONVERT_H
#define TM_CONVERT_H

#include <stddef.h>

#include "kernels/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Reads in_path (any GGUF we can open) and writes out_path as GGUF v3 with the same
 * alignment: every metadata entry is copied verbatim except general.file_type, which
 * becomes the llama.cpp ftype of target (added if absent). Tensors with 2 or more dims
 * are converted to target (F32, F16, Q8_0, Q4_0 or Q4_1), or to F16 when their row
 * length is not a multiple of target's block; 1-D tensors (norms, biases) become F32.
 * A tensor already in its output type is copied bit for bit. The output is written to
 * "<out_path>.tmp" and renamed at the end, so a failure leaves no partial file and
 * in_path == out_path works. Errors: TM_EUNSUPPORTED (target), the reader's codes,
 * TM_EIO, TM_ENOMEM, each with one line in err. Any thread; no shared state. */
int tm_convert_file(const char *in_path, const char *out_path, tm_dtype target, char *err,
                    size_t err_len);

/* tm_convert_file that keeps only the first max_layers transformer blocks (tensors
 * "blk.N.*" with N >= max_layers are dropped and <arch>.block_count is lowered): a small,
 * real model for tests. max_layers <= 0 keeps them all. */
int tm_convert_file_layers(const char *in_path, const char *out_path, tm_dtype target, int max_layers,
                           char *err, size_t err_len);

/* llama.cpp's general.file_type id for a converter target (F32=0, F16=1, Q4_0=2, Q4_1=3,
 * Q8_0=7), or -1 if target is not one. */
int tm_convert_ftype(tm_dtype target);

#ifdef __cplusplus
}
#endif
#endif

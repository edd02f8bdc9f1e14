/* convert.h - the converter behind `tokenmill quantize IN OUT TYPE`: rewrites a GGUF
 * model's weights in another element type, a batch of rows at a time (memory stays bounded
 * by a few rows, whatever the model size), quantizing a batch on several threads. */
#ifndef TM_CONVERT_H
#define TM_CONVERT_H

#include <stddef.h>

#include "kernels/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A target of `tokenmill quantize`: a type for the matrices, and for the llama.cpp mixes
 * (q4_k_m, q5_k_m) the recipe that gives some tensors a larger type. */
typedef struct tm_convert_target {
    tm_dtype type;  /* type of the matrices the recipe does not pick otherwise */
    int mix_m;      /* 1: llama.cpp's _M recipe (models/convert.c) */
    uint32_t ftype; /* llama.cpp's general.file_type for the output */
} tm_convert_target;

/* Names: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k (every
 * matrix that type; rows that do not split into its blocks fall back as llama.cpp does:
 * Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0 (llama.cpp: IQ4_NL, which
 * we do not have), legacy types -> F16), q4_k_m and q5_k_m (llama.cpp's mixes: output (or
 * a tied token_embd) Q6_K, attn_v and ffn_down Q6_K in the layers its use_more_bits picks,
 * a fused attn_qkv one step up, the rest Q4_K / Q5_K, with the same fallbacks). q6_k is
 * also llama.cpp's Q6_K mix. Returns 0, or TM_EINVAL for an unknown name. */
int tm_convert_target_from_name(const char *name, tm_convert_target *out);
/* The type tm_convert_file_target gives a tensor named name (n_dims, rows of row_len
 * values) of a model of n_layers blocks ("blk.N." names give the layer), which has an
 * output.weight or not (has_output): f32 for vectors, else the target, or the mix's pick,
 * or the fallback. For files written whole in a mix (models/synth.c). */
tm_dtype tm_convert_tensor_type(const tm_convert_target *t, const char *name, int n_dims, int64_t row_len,
                                int n_layers, int has_output);
/* "f32, f16, ..., q5_k_m": the names above, for messages. */
const char *tm_convert_target_names(void);

/* Reads in_path (any GGUF we can open) and writes out_path as GGUF v3 with the same
 * alignment: every metadata entry is copied verbatim except general.file_type, which
 * becomes the llama.cpp ftype of target (added if absent). Tensors with 2 or more dims
 * are converted to target (any type tm_convert_ftype knows), or to its fallback when
 * their row length is not a multiple of target's block (see tm_convert_target_from_name);
 * 1-D tensors (norms, biases) become F32.
 * A tensor already in its output type is copied bit for bit. The output is written to
 * "<out_path>.tmp" and renamed at the end, so a failure leaves no partial file and
 * in_path == out_path works. Errors: TM_EUNSUPPORTED (target), the reader's codes,
 * TM_EIO, TM_ENOMEM, each with one line in err. Any thread; no shared state. */
int tm_convert_file(const char *in_path, const char *out_path, tm_dtype target, char *err,
                    size_t err_len);

/* tm_convert_file for any target, keeping only the first max_layers transformer blocks
 * when max_layers > 0 (see tm_convert_file_layers). n_threads >= 1 quantize rows (0: one
 * per CPU). */
int tm_convert_file_target(const char *in_path, const char *out_path, const tm_convert_target *target,
                           int max_layers, int n_threads, char *err, size_t err_len);

/* tm_convert_file that keeps only the first max_layers transformer blocks (tensors
 * "blk.N.*" with N >= max_layers are dropped and <arch>.block_count is lowered): a small,
 * real model for tests. max_layers <= 0 keeps them all. */
int tm_convert_file_layers(const char *in_path, const char *out_path, tm_dtype target, int max_layers,
                           char *err, size_t err_len);

/* llama.cpp's general.file_type id for a file of mostly `target` (F32=0, F16=1, Q4_0=2,
 * Q4_1=3, Q8_0=7, Q5_0=8, Q5_1=9, Q2_K=10, Q3_K=11 (its Q3_K_S), Q4_K=14 (Q4_K_S),
 * Q5_K=16 (Q5_K_S), Q6_K=18, BF16=32), or -1 if target is not a converter type. */
int tm_convert_ftype(tm_dtype target);

#ifdef __cplusplus
}
#endif
#endif

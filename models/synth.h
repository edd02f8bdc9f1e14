/* synth.h - synthetic models: GGUF files (or in-memory images) of a real model's shape
 * with seeded random weights, for shapes nobody can download here (`tokenmill synth`,
 * `serve --synthetic`). Their answers are meaningless; their speed and their agreement
 * with llama.cpp on the same file are not.
 *
 * What a synthetic model holds:
 * - metadata of the preset's architecture and shape, and tokenmill.synth ("PRESET:TYPE
 *   seed N"), which marks the file as synthetic;
 * - the tokenizer.* metadata of another GGUF (the default model's unless told), its
 *   vocabulary padded with unused tokens up to the preset's n_vocab, so that the
 *   embedding and output matrices have their real shape;
 * - weights drawn from a counter-based generator keyed by (seed, tensor name, row): the
 *   same seed gives the same bytes on any machine and thread count, and a tensor does not
 *   depend on which others exist (--layers 2 holds the full model's first two blocks).
 *   Matrices have standard deviation ~1/sqrt(fan_in) (embedding and output 3/sqrt(dim),
 *   so logits spread like a trained model's; the residual projections also / sqrt(2 *
 *   the preset's layers)); norm weights are 1 +- 0.1. Quantized types are drawn directly
 *   as valid random blocks (uniform quants, scales near the target spread), since our
 *   quantizer does not write every type.
 * Matrices are in the asked type (token embedding and output included), or with a mix
 * (q4_k_m, q5_k_m) in the type llama.cpp's recipe gives each (models/convert.h); norms, biases and
 * rope frequency factors are f32. Any thread; nothing is shared. */
#ifndef TM_SYNTH_H
#define TM_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/dtype.h"
#include "models/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One model shape. The architecture decides the tensors beyond llama's (qwen2: q/k/v
 * biases; qwen3: q/k norms; phi3: fused attn_qkv and gate/up; gemma2: post-norms; gemma3:
 * post-norms and q/k norms); a new shape of a known architecture is one more row in
 * synth.c's table. */
typedef struct tm_synth_preset {
    const char *name;        /* "llama3-8b" */
    const char *arch;        /* general.architecture: llama, qwen2, qwen3, phi3, gemma2, gemma3 */
    int n_layers;            /* transformer blocks */
    int dim;                 /* embedding width */
    int ffn_dim;             /* feed-forward hidden width */
    int n_heads;             /* query heads */
    int n_kv_heads;          /* key/value heads */
    int head_dim;            /* dims per head */
    int n_vocab;             /* rows of token_embd and output */
    float rope_theta;        /* rope.freq_base */
    int n_ctx;               /* context_length */
    int tied;                /* 1: no output.weight, the output reuses token_embd */
    float rms_eps;           /* attention.layer_norm_rms_epsilon */
    float rope_llama3_factor;/* > 0: Llama 3.1-style rope_freqs.weight with this factor
                                (low 1, high 4, original context 8192); 0: none */
    int window;              /* > 0: attention.sliding_window (Gemma; its layer pattern is the
                                architecture's default) */
    float attn_softcap;      /* > 0: attn_logit_softcapping (Gemma 2) */
    float final_softcap;     /* > 0: final_logit_softcapping (Gemma 2) */
} tm_synth_preset;

/* The table: index 0..tm_synth_n_presets()-1; find returns NULL for an unknown name. */
int tm_synth_n_presets(void);
const tm_synth_preset *tm_synth_preset_at(int i);
const tm_synth_preset *tm_synth_find_preset(const char *name);

/* Is t a weight type synth writes (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k,
 * q6_k)? */
int tm_synth_type_ok(tm_dtype t);

typedef struct tm_synth_options {
    const tm_synth_preset *preset; /* shape (borrowed) */
    tm_dtype type;                 /* type of every weight matrix, or the mix's base type */
    int mix_m;                     /* 1: llama.cpp's _M mix on type (Q4_K: q4_k_m, Q5_K: q5_k_m):
                                      each matrix in the type tm_convert_tensor_type gives it */
    uint64_t seed;                 /* same seed, same bytes */
    int n_layers;                  /* 0: the preset's; else this many blocks of its shape */
    const char *tokenizer_from;    /* GGUF whose tokenizer is copied; NULL: the default model */
    int n_threads;                 /* generator threads; <= 0: one per CPU */
} tm_synth_options;

/* "q4_k", or the mix's name ("q4_k_m") when o->mix_m. */
const char *tm_synth_type_name(const tm_synth_options *o);

/* Options for "PRESET:TYPE" (seed 0, the preset's layers, default tokenizer). Errors:
 * TM_EINVAL with a line that lists the presets or the types. */
int tm_synth_parse(const char *spec, tm_synth_options *o, char *err, size_t err_len);
/* Fills o for a preset name and a type name, with the same errors as tm_synth_parse. */
int tm_synth_options_init(tm_synth_options *o, const char *preset, const char *type, char *err,
                          size_t err_len);

/* Writes the model to path (through "<path>.tmp", renamed at the end; no partial file is
 * left). Errors, each with one line in err: TM_EINVAL (options; a type whose blocks do
 * not divide a row length), the tokenizer source's open errors, TM_EFORMAT (it has no
 * usable tokenizer, or more tokens than the preset's n_vocab), TM_EIO, TM_ENOMEM. */
int tm_synth_write(const tm_synth_options *o, const char *path, char *err, size_t err_len);

/* The same model as an in-memory GGUF image, opened: *out owns the image (tm_gguf_close
 * frees it) and can be handed to tm_model_load_gguf. Same errors as tm_synth_write. */
int tm_synth_build(const tm_synth_options *o, tm_gguf **out, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif

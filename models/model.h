/* model.h - a loaded model: configuration from GGUF metadata, weights on a backend,
 * tokenizer, and one forward pass over a ragged batch (kernels/backend.h tm_batch).
 *
 * Architectures (models/arch.h): llama (Llama 2/3, Mistral, SmolLM2), mistral3, qwen2,
 * qwen3, phi3, gemma2, gemma3. They share one forward pass; what differs between them is
 * data in tm_model_config (flags, scales, per-layer windows) and which optional tensors
 * the file has. The model is used by one thread at a time (the engine thread); tokenizer
 * and config are immutable and may be read from any thread. */
#ifndef TM_MODEL_H
#define TM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "models/gguf.h"
#include "models/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The gated feed-forward's activation: down(act(gate) * up). */
typedef enum tm_ffn_act {
    TM_ACT_SILU = 0, /* llama family */
    TM_ACT_GELU = 1, /* GELU, tanh form (Gemma) */
} tm_ffn_act;

typedef struct tm_model_config {
    char arch[32];        /* general.architecture */
    char name[128];       /* general.name, or the file name */
    int n_layers;         /* transformer blocks */
    int dim;              /* embedding width */
    int n_heads;          /* query heads */
    int n_kv_heads;       /* key/value heads (GQA when < n_heads) */
    int head_dim;         /* dims per head */
    int ffn_dim;          /* feed-forward hidden width */
    int n_vocab;          /* vocabulary size (rows of the output matrix) */
    int n_ctx_train;      /* context length the model was trained for */
    float rms_eps;        /* RMSNorm epsilon */
    tm_rope rope;         /* rotary parameters (freq_factors owned by the model) */
    int tied_embeddings;  /* output matrix is token_embd */
    int qkv_bias;         /* q/k/v projections have biases (qwen2) */
    tm_ffn_act act;       /* feed-forward activation */
    float embed_scale;    /* token embeddings are multiplied by this (Gemma: sqrt(dim)), else 1 */
    float attn_scale;     /* softmax(q.k * attn_scale): 1/sqrt(head_dim) unless the architecture
                             says otherwise (Gemma 27B: 1/sqrt(dim / n_heads)) */
    float attn_softcap;   /* > 0: attention scores soft-capped at this (Gemma 2) */
    float final_softcap;  /* > 0: logits soft-capped at this (Gemma 2) */
    int sliding_window;   /* keys a sliding-window layer sees (its own and window - 1 before);
                             0: no sliding-window layers */
    const uint8_t *swa_layers; /* (n_layers) 1 for a sliding-window layer, or NULL (owned by the model) */
    tm_rope rope_swa;     /* rotary parameters of the sliding-window layers (Gemma 3: base 10000) */
    int qk_norm;          /* per-head RMSNorm of q and k before rope (Qwen3, Gemma 3) */
    int post_norms;       /* RMSNorm of each block's output before the residual add (Gemma) */
    int fused_qkv;        /* q/k/v came from one attn_qkv tensor (Phi-3), split into views */
    int fused_gate_up;    /* gate and up came from one ffn_up tensor of 2 ffn_dim rows (Phi-3) */
} tm_model_config;

typedef struct tm_model tm_model;

/* The default model's path, ~/.cache/tokenmill/models/SmolLM2-135M-Instruct.Q4_1.gguf
 * (scripts/fetch-model puts it there), written into buf. Returns buf. */
const char *tm_model_default_path(char *buf, size_t len);

/* Loads path onto be (borrowed; must outlive the model). Errors: TM_EIO, TM_EFORMAT,
 * TM_EUNSUPPORTED (architecture, dtype), TM_ENOTFOUND (missing tensor), each with one
 * line in err. */
int tm_model_load(const char *path, tm_backend *be, tm_model **out, char *err, size_t err_len);

/* Called on the loading thread after each transformer block's weights are loaded:
 * done blocks of total so far (done == total at the end). */
typedef void (*tm_load_progress_fn)(void *arg, int done, int total);

/* tm_model_load with a progress callback (progress may be NULL; arg is passed through). */
int tm_model_load_ex(const char *path, tm_backend *be, tm_load_progress_fn progress, void *arg,
                     tm_model **out, char *err, size_t err_len);
/* tm_model_load_ex over a GGUF already open, e.g. an image built in memory
 * (tm_gguf_writer_finish_memory): the model takes g over and closes it at destroy, or at
 * once when loading fails. name stands in for the file name (general.name's fallback). */
int tm_model_load_gguf(tm_gguf *g, const char *name, tm_backend *be, tm_load_progress_fn progress,
                       void *arg, tm_model **out, char *err, size_t err_len);
void tm_model_destroy(tm_model *m); /* NULL is a no-op */

const tm_model_config *tm_model_get_config(const tm_model *m);
const tm_tokenizer *tm_model_tokenizer(const tm_model *m);
const tm_gguf *tm_model_gguf(const tm_model *m);
tm_backend *tm_model_backend(const tm_model *m);

/* Bytes one KV page of block_size tokens takes for all layers (K and V of dtype). */
size_t tm_model_kv_bytes_per_block(const tm_model *m, int block_size, tm_kv_dtype dtype);
/* TM_EINVAL for a bad size or dtype; the backend's kv_create error otherwise (e.g. an int8
 * cache on CUDA), with one line in err (which may be NULL). */
int tm_model_kv_create(tm_model *m, int n_blocks, int block_size, tm_kv_dtype dtype, tm_kv_cache **out, char *err,
                       size_t err_len);
void tm_model_kv_destroy(tm_model *m, tm_kv_cache *kv);

/* Sizes activation buffers for batches up to max_tokens tokens and max_logits logit
 * rows, so forward never allocates for batches within that size. */
int tm_model_reserve(tm_model *m, int max_tokens, int max_logits);

/* One forward step over batch (new tokens' K/V are written at batch->slots). The logits of
 * the batch's logit rows, (batch->n_logits, n_vocab) f32, stay in the model's buffer in
 * backend memory until the next forward (read them with the two functions below); when
 * logits is not NULL they are also copied there (host memory). Grows the buffers first if
 * the batch exceeds the reserve. A failure of the backend (a device fault) is returned with
 * the op it happened in. Engine thread only. */
int tm_model_forward(tm_model *m, tm_kv_cache *kv, const tm_batch *batch, float *logits,
                     char *err, size_t err_len);

/* The last forward's logits (n_logits, n_vocab) in host memory: the buffer itself on a
 * host-memory backend, else a host copy made now. The caller may modify the rows; they
 * stay valid until the next forward. NULL if the copy failed. Engine thread only. */
float *tm_model_logits_host(tm_model *m);

/* out[r] = tm_argmax of row r < n_rows of the last forward's logits, on the backend (the
 * greedy path: a device backend copies n_rows ints to the host, never the rows). 0, or
 * TM_EINVAL when n_rows exceeds the rows forward wrote, or the backend's error. */
int tm_model_logits_argmax(tm_model *m, int n_rows, int32_t *out);

#ifdef __cplusplus
}
#endif
#endif

/* arch.h - the architectures tm_model serves, and how a GGUF file's metadata becomes a
 * tm_model_config (models/model.h). Private to models/: model.c loads through it.
 *
 * One forward pass (model.c) serves every architecture here; what differs between them
 * is data in the config, filled from an architecture table and the file's own keys:
 *   llama, mistral3  adjacent-pair rope; Mistral files say "llama" (mistral3: without its
 *                    YaRN and attention-temperature keys)
 *   qwen2            NeoX rope, q/k/v biases
 *   qwen3            NeoX rope, per-head RMSNorm of q and k before rope
 *   phi3             NeoX rope, fused attn_qkv and gate/up tensors (split into views at load)
 *   gemma2, gemma3   NeoX rope, embeddings times sqrt(dim), RMSNorm after attention and
 *                    after the feed-forward block too, GELU (tanh) gate, sliding-window
 *                    layers (a pattern and a window from the metadata), a local rope base
 *                    (gemma3), soft-capped attention scores (gemma2) and logits, q/k
 *                    norms (gemma3), and llama.cpp's query scale rule.
 * Facts from llama.cpp's loaders (llama-model.cpp, models/<arch>.cpp, llama-arch.cpp); the
 * code is ours. */
#ifndef TM_ARCH_H
#define TM_ARCH_H

#include <stddef.h>
#include <stdint.h>

#include "models/gguf.h"
#include "models/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills c from g's metadata (name: general.name's fallback, the file name). *swa_layers
 * gets a malloc'd (n_layers) array, 1 for a sliding-window layer, or NULL when there are
 * none; c->swa_layers points at it and the caller frees it. The tensor-dependent fields
 * (n_vocab, tied_embeddings, fused_*) are left for the loader; qkv_bias and qk_norm say
 * what the architecture requires (the loader sets qkv_bias when a file has biases). Errors:
 * TM_EFORMAT (missing or bad keys), TM_EUNSUPPORTED (architecture, rope scaling, head
 * dims), TM_ENOMEM; one line in err. */
int tm_arch_read_config(const tm_gguf *g, const char *name, tm_model_config *c, uint8_t **swa_layers,
                        char *err, size_t err_len);

/* "llama, mistral3, qwen2, ..." for messages. */
const char *tm_arch_names(void);

#ifdef __cplusplus
}
#endif
#endif

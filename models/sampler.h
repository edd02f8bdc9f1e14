/* sampler.h - turns one row of logits into a token: greedy, temperature, top-k, top-p,
 * min-p, repetition / presence / frequency penalties, and a per-request seed so the same
 * seed gives the same text. Also log-probabilities for the API's logprobs. */
#ifndef TM_SAMPLER_H
#define TM_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "common/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_sampling_params {
    float temperature;        /* below 1e-5: greedy */
    int top_k;                /* <= 0: off */
    float top_p;              /* >= 1: off */
    float min_p;              /* <= 0: off */
    float repetition_penalty; /* 1: off; over prompt + output (llama.cpp / HF style) */
    float presence_penalty;   /* 0: off; over output tokens (OpenAI style) */
    float frequency_penalty;  /* 0: off; over output tokens (OpenAI style) */
    uint64_t seed;            /* RNG seed */
} tm_sampling_params;

/* Defaults: temperature 1, everything else off, seed 0. */
void tm_sampling_params_default(tm_sampling_params *p);

/* A per-request logit processor: the one hook through which logit_bias, grammar masks and
 * anything like them change a sequence's row of logits before it is sampled. The sampler
 * calls apply once per generated token, before penalties and temperature, on the engine
 * thread; the engine calls it for every sequence whose sampler holds processors.
 *   apply(ctx, logits, n_vocab, output, n_output): change logits (n_vocab, f32, host
 *     memory) for the token after output[0..n_output) (the tokens generated so far): add
 *     a bias, or set -INFINITY to forbid a token. Returns 0, or a negative TM_E* that ends
 *     the request.
 *   destroy(ctx): frees ctx when the request ends (may be NULL).
 *   allows(ctx, token, output, n_output): optional, for processors that only forbid
 *     (a mask): 1 when apply would leave token's logit as it is. Then a greedy sequence may
 *     take the batched argmax of the raw row when every processor allows it (the argmax of
 *     the raw row, if allowed, is the argmax of the masked one), and apply runs only when
 *     one refuses. NULL: the sequence always samples from its processed row.
 * A processor zero-initialized and then filled (or built by a _create function) leaves
 * the optional members NULL. */
typedef struct tm_logit_processor {
    int (*apply)(void *ctx, float *logits, int n_vocab, const int32_t *output, int n_output);
    void (*destroy)(void *ctx);
    void *ctx; /* the processor's state, owned by it */
    int (*allows)(void *ctx, int32_t token, const int32_t *output, int n_output);
} tm_logit_processor;

enum { TM_SAMPLER_MAX_PROCESSORS = 4 };

typedef struct tm_sampler {
    tm_sampling_params params; /* copied at init */
    tm_rng rng;                /* from the seed */
    tm_logit_processor procs[TM_SAMPLER_MAX_PROCESSORS]; /* (n_procs) applied in order */
    int n_procs;
} tm_sampler;

void tm_sampler_init(tm_sampler *s, const tm_sampling_params *p);
/* Destroys the processors the sampler holds. */
void tm_sampler_deinit(tm_sampler *s);
/* Takes over p (destroyed by tm_sampler_deinit). TM_ERANGE when the sampler holds
 * TM_SAMPLER_MAX_PROCESSORS already: then p stays the caller's. */
int tm_sampler_add_processor(tm_sampler *s, const tm_logit_processor *p);

/* Picks the next token from logits (n_vocab, f32; modified in place): processors, then
 * penalties, then the sampling parameters. prompt/output are the sequence so far.
 * scratch: tm_sampler_scratch_bytes(n_vocab) bytes owned by the caller (the sampler
 * allocates nothing). Greedy ties break toward the lower id. Returns the token, or a
 * negative TM_E*: a processor failed, or TM_EINVAL when the processors forbade every
 * token. */
int32_t tm_sampler_sample(tm_sampler *s, float *logits, int n_vocab, const int32_t *prompt,
                          int n_prompt, const int32_t *output, int n_output, void *scratch);

/* A processor that adds bias[i] to the logit of ids[i] (OpenAI's logit_bias). Copies the
 * n entries (ids within the vocabulary, checked by the caller). TM_ENOMEM. */
int tm_logit_bias_create(const int32_t *ids, const float *bias, int n, tm_logit_processor *out);
/* Bytes of scratch tm_sampler_sample needs for n_vocab. */
size_t tm_sampler_scratch_bytes(int n_vocab);

/* 1 when tm_sampler_sample returns tm_argmax (common/common.h) of the logits as given
 * (greedy, no penalty, no processor), so a caller may take the token from a batched argmax
 * instead (tm_model_logits_argmax). */
int tm_sampler_is_argmax(const tm_sampler *s);
/* 1 when the sampler is greedy without penalties and every processor it holds has
 * allows: a batched argmax token t may be taken when tm_sampler_allows says so (else the
 * row is sampled with tm_sampler_sample). Also 1 whenever tm_sampler_is_argmax is. */
int tm_sampler_is_checked_argmax(const tm_sampler *s);
/* 1 when every processor allows token after output[0..n_output) (see allows). */
int tm_sampler_allows(tm_sampler *s, int32_t token, const int32_t *output, int n_output);

/* log-softmax of the raw logits (call before tm_sampler_sample, which modifies them): logprob of token and the top n_top (ids, logprobs) in
 * descending order. */
float tm_logprob_of(const float *logits, int n_vocab, int32_t token);
void tm_logprobs_top(const float *logits, int n_vocab, int n_top, int32_t *ids, float *lps);

#ifdef __cplusplus
}
#endif
#endif

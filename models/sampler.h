/* sampler.h - turns one row of logits into a token: greedy, temperature, top-k, top-p,
 * min-p, repetition / presence / frequency penalties, and a per-request seed so the same
 * seed gives the same text. Also log-probabilities for the API's logprobs. */
#ifndef TM_SAMPLER_H
#define TM_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

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

typedef struct tm_sampler {
    tm_sampling_params params; /* copied at init */
    uint64_t rng[4];           /* xoshiro256** state from the seed */
} tm_sampler;

void tm_sampler_init(tm_sampler *s, const tm_sampling_params *p);

/* Picks the next token from logits (n_vocab, f32; modified in place). prompt/output are
 * the sequence so far, for penalties. scratch: tm_sampler_scratch_bytes(n_vocab) bytes owned
 * by the caller (the sampler allocates nothing). Greedy ties break toward the lower id. */
int32_t tm_sampler_sample(tm_sampler *s, float *logits, int n_vocab, const int32_t *prompt,
                          int n_prompt, const int32_t *output, int n_output, void *scratch);
/* Bytes of scratch tm_sampler_sample needs for n_vocab. */
size_t tm_sampler_scratch_bytes(int n_vocab);

/* 1 when tm_sampler_sample returns tm_argmax (common/common.h) of the logits as given
 * (greedy, no penalty), so a caller may take the token from a batched argmax instead
 * (tm_model_logits_argmax). */
int tm_sampler_is_argmax(const tm_sampler *s);

/* log-softmax of the raw logits (call before tm_sampler_sample, which modifies them): logprob of token and the top n_top (ids, logprobs) in
 * descending order. */
float tm_logprob_of(const float *logits, int n_vocab, int32_t token);
void tm_logprobs_top(const float *logits, int n_vocab, int n_top, int32_t *ids, float *lps);

#ifdef __cplusplus
}
#endif
#endif

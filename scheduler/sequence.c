/* sequence.c - building and freeing a tm_seq from a request (at submit, caller's thread). */
#include "scheduler/sequence.h"

#include <stdlib.h>
#include <string.h>

#include "common/common.h"

int tm_seq_create(const tm_request *req, const tm_tokenizer *tok, size_t max_piece,
                  int block_size, tm_seq **out) {
    *out = NULL;
    tm_seq *s = calloc(1, sizeof *s);
    if (!s) return TM_ENOMEM;
    s->user = req->user;
    s->priority = req->priority;
    s->n_prompt = req->n_prompt;
    s->n_tokens = req->n_prompt;
    s->max_tokens = req->max_tokens;
    s->cap_tokens = req->n_prompt + req->max_tokens;
    s->cap_blocks = (s->cap_tokens + block_size - 1) / block_size;
    s->tokens = malloc((size_t)s->cap_tokens * sizeof *s->tokens);
    s->block_table = malloc((size_t)s->cap_blocks * sizeof *s->block_table);
    s->hashes = malloc((size_t)s->cap_blocks * sizeof *s->hashes);
    if (!s->tokens || !s->block_table || !s->hashes) goto nomem;
    memcpy(s->tokens, req->prompt, (size_t)req->n_prompt * sizeof *s->tokens);
    s->salt = tm_bm_salt_key(req->cache_salt);
    tm_sampler_init(&s->sampler, &req->sampling);
    s->logprobs = req->logprobs || req->top_logprobs > 0;
    s->top_logprobs = req->top_logprobs;
    int rc = tm_output_init(&s->out, tok, max_piece, req->stop, req->n_stop, req->stop_ids,
                            req->n_stop_ids, req->ignore_eos, req->max_tokens);
    if (rc != TM_OK) {
        tm_seq_destroy(s);
        return rc;
    }
    s->delta = malloc(tm_output_delta_cap(&s->out));
    if (!s->delta) goto nomem;
    /* last, so that no failure above destroys processors the caller still owns */
    for (int i = 0; i < req->n_processors; i++) tm_sampler_add_processor(&s->sampler, &req->processors[i]);
    *out = s;
    return TM_OK;
nomem:
    tm_seq_destroy(s);
    return TM_ENOMEM;
}

void tm_seq_destroy(tm_seq *s) {
    if (!s) return;
    tm_sampler_deinit(&s->sampler);
    tm_output_deinit(&s->out); /* safe on the zeroed state too */
    free(s->tokens);
    free(s->block_table);
    free(s->hashes);
    free(s->delta);
    free(s);
}

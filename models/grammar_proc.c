/* grammar_proc.c - a grammar as a logit processor (models/sampler.h): tokens the grammar
 * does not allow get -INFINITY, and allows() answers for one token so a greedy sequence
 * keeps the batched argmax when the grammar agrees with it.
 *
 * The processor follows the sequence through the output it is handed: before answering
 * it accepts the tokens generated since its last call, whichever path picked them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/grammar_impl.h"

typedef struct gproc {
    tm_grammar_matcher *m; /* owned */
    int n_synced;          /* output tokens the matcher has accepted */
    uint32_t *mask;        /* (mask words) the last mask */
    int n_vocab;           /* the grammar vocabulary's size */
} gproc;

static int sync_output(gproc *g, const int32_t *output, int n_output) {
    while (g->n_synced < n_output) {
        int rc = tm_grammar_matcher_accept_token(g->m, output[g->n_synced]);
        if (rc) return rc; /* a token the mask forbade: the request ends */
        g->n_synced++;
    }
    return 0;
}

static int gproc_apply(void *ctx, float *logits, int n_vocab, const int32_t *output, int n_output) {
    gproc *g = ctx;
    int rc = sync_output(g, output, n_output);
    if (rc) return rc;
    int n = tm_grammar_matcher_fill_mask(g->m, g->mask);
    if (n < 0) return n;
    if (n == 0) return TM_EINVAL; /* the vocabulary cannot continue the text */
    int n_words = (int)tm_grammar_mask_words(g->n_vocab < n_vocab ? g->n_vocab : n_vocab);
    for (int w = 0; w < n_words; w++) {
        uint32_t bits = g->mask[w];
        if (bits == 0xFFFFFFFFu) continue;
        int base = w * 32, end = base + 32 < n_vocab ? base + 32 : n_vocab;
        for (int i = base; i < end; i++)
            if (!(bits >> (i - base) & 1)) logits[i] = -INFINITY;
    }
    for (int i = g->n_vocab; i < n_vocab; i++) logits[i] = -INFINITY; /* rows past the tokenizer */
    return 0;
}

static int gproc_allows(void *ctx, int32_t token, const int32_t *output, int n_output) {
    gproc *g = ctx;
    if (sync_output(g, output, n_output)) return 0;
    return tm_grammar_matcher_allows(g->m, token);
}

static void gproc_destroy(void *ctx) {
    gproc *g = ctx;
    if (!g) return;
    tm_grammar_matcher_destroy(g->m);
    free(g->mask);
    free(g);
}

int tm_grammar_processor_create(tm_grammar_compiled *c, tm_logit_processor *out) {
    memset(out, 0, sizeof *out);
    gproc *g = calloc(1, sizeof *g);
    if (!g) return TM_ENOMEM;
    g->n_vocab = tm_grammar_vocab_n_vocab(c->v);
    g->mask = malloc(tm_grammar_mask_words(g->n_vocab) * sizeof *g->mask);
    int rc = g->mask ? tm_grammar_matcher_create(c, &g->m) : TM_ENOMEM;
    if (rc) {
        gproc_destroy(g);
        return rc;
    }
    out->apply = gproc_apply;
    out->allows = gproc_allows;
    out->destroy = gproc_destroy;
    out->ctx = g;
    return 0;
}

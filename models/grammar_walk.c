/* grammar_walk.c - simulating many tokens in byte order, each shared prefix once.
 *
 * Level k holds the stack tops after a token's first k bytes. The next token in sorted
 * order shares some prefix with this one, so it keeps those levels and only builds the
 * rest; the nodes of dropped levels are removed newest first. When a level dies every
 * token extending that prefix ends the same way, which the caller uses to skip them. */
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/grammar_impl.h"

int tm_gwalk_init(tm_gwalk *w, const tm_grammar *g, tm_gstack *st, int32_t max_len) {
    memset(w, 0, sizeof *w);
    w->g = g;
    w->st = st;
    w->max_len = max_len;
    w->start = malloc(((size_t)max_len + 2) * sizeof *w->start);
    w->ckpt = malloc(((size_t)max_len + 2) * sizeof *w->ckpt);
    w->flags = malloc((size_t)max_len + 1);
    w->pending = malloc((size_t)max_len + 1);
    if (!w->start || !w->ckpt || !w->flags || !w->pending) {
        tm_gwalk_deinit(w);
        return TM_ENOMEM;
    }
    return 0;
}

void tm_gwalk_deinit(tm_gwalk *w) {
    free(w->tops.v);
    free(w->start);
    free(w->ckpt);
    free(w->flags);
    free(w->pending);
    memset(w, 0, sizeof *w);
}

int tm_gwalk_reset(tm_gwalk *w, const int32_t *tops, int n, int flags) {
    w->tops.n = 0;
    if (tm_gbuf_reserve(&w->tops, n)) return TM_ENOMEM;
    memcpy(w->tops.v, tops, (size_t)n * sizeof *tops);
    w->tops.n = n;
    w->start[0] = 0;
    w->start[1] = n;
    w->flags[0] = (uint8_t)flags;
    w->pending[0] = 0;
    w->depth = 0;
    return 0;
}

int tm_gwalk_token(tm_gwalk *w, const uint8_t *s, int32_t len, int32_t shared, int32_t *dead_len) {
    *dead_len = 0;
    if (len > w->max_len) return TM_EINVAL;
    int32_t d = shared < w->depth ? shared : w->depth;
    if (d > len) d = len;
    if (w->depth > d) { /* drop levels d+1.. and the nodes made for them */
        tm_gstack_truncate(w->st, w->ckpt[d + 1]);
        w->tops.n = w->start[d + 1];
        w->depth = d;
    }
    for (int32_t k = d; k < len; k++) {
        int32_t n_in = w->start[k + 1] - w->start[k];
        const int lf = w->flags[k];
        if (n_in == 0 && !(lf & (TM_GSET_EXIT | TM_GSET_END))) {
            /* Level k is dead: tokens extending this prefix of k bytes end here. */
            *dead_len = k;
            return w->pending[k] ? TM_GWALK_UNCERTAIN : TM_GWALK_REJECT;
        }
        w->ckpt[k + 1] = w->st->n;
        int fl = 0;
        /* advance reads its input before it appends, so in may point into tops */
        int rc = tm_gstack_advance(w->g, w->st, w->tops.v + w->start[k], n_in, s[k], &w->tops, &fl);
        if (rc) return rc;
        w->start[k + 2] = w->tops.n;
        w->flags[k + 1] = (uint8_t)fl;
        /* A rule returned into the unknown context after k >= 1 bytes, and byte s[k] could
         * follow it somewhere: the stack below decides (level 0's returns are the
         * context's own tops, simulated on their own). */
        w->pending[k + 1] = w->pending[k] ||
                            (w->follow && k >= 1 && (lf & TM_GSET_EXIT) && tm_gbytes_has(w->follow, s[k]));
        w->depth = k + 1;
    }
    int32_t n_last = w->start[len + 1] - w->start[len];
    if (n_last > 0 || (w->flags[len] & (TM_GSET_EXIT | TM_GSET_END))) return TM_GWALK_ACCEPT;
    *dead_len = len;
    return w->pending[len] ? TM_GWALK_UNCERTAIN : TM_GWALK_REJECT;
}

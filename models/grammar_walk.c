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
    w->single = malloc((size_t)max_len + 1);
    w->single_state = malloc(((size_t)max_len + 1) * sizeof *w->single_state);
    w->single_parent = malloc(((size_t)max_len + 1) * sizeof *w->single_parent);
    if (!w->start || !w->ckpt || !w->flags || !w->pending || !w->single || !w->single_state ||
        !w->single_parent) {
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
    free(w->single);
    free(w->single_state);
    free(w->single_parent);
    memset(w, 0, sizeof *w);
}

int tm_gwalk_reset(tm_gwalk *w, const int32_t *tops, int n, int flags) {
    w->tops.n = 0;
    if (tm_gbuf_reserve(&w->tops, n)) return TM_ENOMEM;
    if (n) memcpy(w->tops.v, tops, (size_t)n * sizeof *tops);
    w->tops.n = n;
    w->start[0] = 0;
    w->start[1] = n;
    w->flags[0] = (uint8_t)flags;
    w->pending[0] = 0;
    w->single[0] = 0;
    w->depth = 0;
    return 0;
}

/* Level k+1 from level k over byte b. A single top that stays inside its rule (the target
 * neither calls nor may return) stays a bare (state, parent) pair; anything else goes
 * through the node store and the closure. */
static int next_level(tm_gwalk *w, int32_t k, uint8_t b, int *fl) {
    tm_gstack *st = w->st;
    const tm_grammar *g = w->g;
    int rc = 0;
    w->single[k + 1] = 0;
    if (w->single[k]) {
        int32_t t = tm_grammar_step(g, w->single_state[k], b), p = w->single_parent[k];
        if (t >= 0) {
            const tm_gstate *gs = &g->states[t];
            if (gs->n_call == 0 && !gs->final) {
                w->single[k + 1] = 1, w->single_state[k + 1] = t, w->single_parent[k + 1] = p;
            } else {
                int32_t x = tm_gstack_intern(st, t, p);
                rc = x < 0 ? x : tm_gstack_closure(g, st, &x, 1, &w->tops, fl);
            }
        }
    } else {
        /* advance reads its input before it appends, so in may point into tops */
        rc = tm_gstack_advance(g, st, w->tops.v + w->start[k], w->start[k + 1] - w->start[k], b, &w->tops, fl);
        int32_t at = w->start[k + 1];
        if (!rc && w->tops.n - at == 1 && *fl == 0) { /* one top left: hold it bare */
            int32_t x = w->tops.v[at];
            const tm_gstate *gs = &g->states[st->state[x]];
            if (gs->n_call == 0 && !gs->final) {
                w->single[k + 1] = 1, w->single_state[k + 1] = st->state[x], w->single_parent[k + 1] = st->parent[x];
                w->tops.n = at;
            }
        }
    }
    w->start[k + 2] = w->tops.n;
    return rc;
}

static int32_t level_size(const tm_gwalk *w, int32_t k) {
    return w->single[k] ? 1 : w->start[k + 1] - w->start[k];
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
        int32_t n_in = level_size(w, k);
        const int lf = w->flags[k];
        if (n_in == 0 && !(lf & (TM_GSET_EXIT | TM_GSET_END))) {
            /* Level k is dead: tokens extending this prefix of k bytes end here. */
            *dead_len = k;
            return w->pending[k] ? TM_GWALK_UNCERTAIN : TM_GWALK_REJECT;
        }
        w->ckpt[k + 1] = w->st->n;
        int fl = 0;
        int rc = next_level(w, k, s[k], &fl);
        if (rc) return rc;
        w->flags[k + 1] = (uint8_t)fl;
        /* A rule returned into the unknown context after k >= 1 bytes, and byte s[k] could
         * follow it somewhere: the stack below decides (level 0's returns are the
         * context's own tops, simulated on their own). */
        w->pending[k + 1] = w->pending[k] ||
                            (w->follow && k >= 1 && (lf & TM_GSET_EXIT) && tm_gbytes_has(w->follow, s[k]));
        w->depth = k + 1;
    }
    int32_t n_last = level_size(w, len);
    if (n_last > 0 || (w->flags[len] & (TM_GSET_EXIT | TM_GSET_END))) return TM_GWALK_ACCEPT;
    *dead_len = len;
    return w->pending[len] ? TM_GWALK_UNCERTAIN : TM_GWALK_REJECT;
}

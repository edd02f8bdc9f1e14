/* grammar_masks.c - the adaptive token-mask cache (after xgrammar): for every state some
 * stack can hold, the tokens accepted whatever the stack below, and the uncertain ones
 * that run past the state's rule into a context only the matcher knows.
 *
 * A state is simulated alone, its rule returning into an UNKNOWN parent. A token is
 *   accepted  if some path consumes all its bytes (the rules it enters are pushed by the
 *             simulation itself, so the path exists under any stack);
 *   uncertain if no path does but one returns from the rule with bytes left whose next
 *             byte is in the rule's FOLLOW set;
 *   rejected  otherwise.
 * Each state walks only the tokens whose first byte it can take (vocabulary buckets), in
 * sorted order, sharing prefixes (grammar_walk.c). */
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/grammar_impl.h"

typedef struct builder {
    int32_t *ids;       /* growing pool of the entries' lists */
    uint16_t *lcp;      /* parallel: for uncertain lists, prefix shared with the previous */
    int64_t n, cap;
    uint8_t *cls;       /* (n_text) one state's class per sorted position (TM_GWALK_*) */
    tm_gbuf acc;        /* its accepted token ids */
    tm_gbuf unc;        /* its uncertain tokens' sorted positions */
    tm_gbuf unc_lcp;    /* and their shared prefixes */
} builder;

static int pool_reserve(builder *b, int64_t more) {
    if (b->n + more <= b->cap) return 0;
    int64_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + more) cap *= 2;
    int32_t *ids = realloc(b->ids, (size_t)cap * sizeof *ids);
    if (!ids) return TM_ENOMEM;
    b->ids = ids;
    uint16_t *lcp = realloc(b->lcp, (size_t)cap * sizeof *lcp);
    if (!lcp) return TM_ENOMEM;
    b->lcp = lcp;
    b->cap = cap;
    return 0;
}

/* Classifies every text token for state s: b->cls per sorted position, the accepted ids
 * in b->acc, the uncertain positions in b->unc. */
static int classify_state(const tm_grammar *g, const tm_grammar_vocab *v, tm_gstack *st,
                          tm_gwalk *w, int32_t s, builder *b) {
    b->acc.n = b->unc.n = b->unc_lcp.n = 0;
    memset(b->cls, TM_GWALK_REJECT, (size_t)v->n_text);
    tm_gstack_truncate(st, 0);
    int32_t x = tm_gstack_intern(st, s, TM_GNODE_UNKNOWN);
    if (x < 0) return x;
    tm_gbuf level0 = {0};
    int flags = 0;
    int rc = tm_gstack_closure(g, st, &x, 1, &level0, &flags);
    if (!rc) rc = tm_gwalk_reset(w, level0.v, level0.n, flags);
    /* First bytes the level-0 tops take: other buckets stay rejected unvisited. */
    tm_gbytes first = {{0}};
    for (int32_t i = 0; i < level0.n && !rc; i++) {
        const tm_gstate *gs = &g->states[st->state[level0.v[i]]];
        for (int32_t k = gs->tr; k < gs->tr + gs->n_tr; k++)
            for (int c = g->trans[k].lo; c <= g->trans[k].hi; c++) first.w[c >> 6] |= 1ull << (c & 63);
    }
    free(level0.v);
    w->follow = &g->follow[g->states[s].rule];
    int32_t unc_min = 0; /* shared prefix since the last uncertain token */
    int have_unc = 0;
    for (int c = 0; c < 256 && !rc; c++) {
        int32_t lo = v->first_lo[c], hi = v->first_lo[c + 1];
        if (lo == hi) continue;
        if (!tm_gbytes_has(&first, (uint8_t)c)) {
            unc_min = 0;
            continue;
        }
        int32_t dead_len = 0, dead_class = 0;
        for (int32_t i = lo; i < hi && !rc; i++) {
            int32_t shared = i == lo ? 0 : v->lcp[i], len, cls;
            if (shared < unc_min || i == lo) unc_min = i == lo ? 0 : shared;
            const uint8_t *p = tm_gvocab_sorted_piece(v, i, &len);
            if (dead_len > 0 && shared >= dead_len) {
                cls = dead_class;
            } else {
                int32_t dl;
                cls = tm_gwalk_token(w, p, len, shared, &dl);
                if (cls < 0) {
                    rc = cls;
                    break;
                }
                dead_len = dl, dead_class = cls;
            }
            b->cls[i] = (uint8_t)cls;
            if (cls == TM_GWALK_ACCEPT) {
                rc = tm_gbuf_push(&b->acc, v->sorted[i]);
            } else if (cls == TM_GWALK_UNCERTAIN) {
                rc = tm_gbuf_push(&b->unc, i);
                if (!rc) rc = tm_gbuf_push(&b->unc_lcp, have_unc ? unc_min : 0);
                have_unc = 1;
                unc_min = len; /* the next uncertain token shares at most this much */
            }
        }
    }
    tm_gstack_truncate(st, 0);
    return rc;
}

/* Stores the shorter of the accepted and rejected lists, then the uncertain one. */
static int store_entry(const tm_grammar_vocab *v, builder *b, tm_gmask_entry *e) {
    int32_t n_rej = v->n_text - b->acc.n - b->unc.n;
    int rejected = n_rej < b->acc.n;
    int rc = pool_reserve(b, (int64_t)(rejected ? n_rej : b->acc.n) + b->unc.n);
    if (rc) return rc;
    e->acc = b->n;
    e->acc_rejected = (uint8_t)rejected;
    if (rejected) {
        for (int32_t i = 0; i < v->n_text; i++)
            if (b->cls[i] == TM_GWALK_REJECT) b->ids[b->n++] = v->sorted[i];
    } else {
        memcpy(b->ids + b->n, b->acc.v, (size_t)b->acc.n * sizeof *b->acc.v);
        b->n += b->acc.n;
    }
    e->n_acc = (int32_t)(b->n - e->acc);
    memset(b->lcp + e->acc, 0, (size_t)e->n_acc * sizeof *b->lcp);
    e->unc = b->n;
    e->n_unc = b->unc.n;
    memcpy(b->ids + b->n, b->unc.v, (size_t)b->unc.n * sizeof *b->unc.v);
    for (int32_t i = 0; i < b->unc.n; i++) b->lcp[b->n + i] = (uint16_t)b->unc_lcp.v[i];
    b->n += b->unc.n;
    return 0;
}

int tm_grammar_compile(tm_grammar *g, tm_grammar_vocab *v, tm_grammar_compiled **out,
                       char *err, size_t err_len) {
    *out = NULL;
    tm_grammar_compiled *c = calloc(1, sizeof *c);
    if (!c) {
        tm_grammar_destroy(g);
        return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    }
    atomic_init(&c->refs, 1);
    c->g = g;
    c->v = tm_grammar_vocab_retain(v);
    c->entry = calloc((size_t)g->n_states, sizeof *c->entry);
    builder b = {0};
    tm_gstack st;
    tm_gwalk w;
    b.cls = malloc((size_t)v->n_text + 1);
    int rc = c->entry && b.cls ? 0 : TM_ENOMEM;
    int st_ok = 0, w_ok = 0;
    if (!rc && !(rc = tm_gstack_init(&st))) st_ok = 1;
    if (!rc && !(rc = tm_gwalk_init(&w, g, &st, v->max_len))) w_ok = 1;
    for (int32_t s = 0; s < g->n_states && !rc; s++) {
        if (!g->reachable[s] || g->states[s].n_tr == 0) continue;
        rc = classify_state(g, v, &st, &w, s, &b);
        if (!rc) rc = store_entry(v, &b, &c->entry[s]);
    }
    if (w_ok) tm_gwalk_deinit(&w);
    if (st_ok) tm_gstack_deinit(&st);
    free(b.acc.v);
    free(b.cls);
    free(b.unc.v);
    free(b.unc_lcp.v);
    c->ids = b.ids;
    c->unc_lcp = b.lcp;
    c->n_ids = b.n;
    if (rc) {
        tm_grammar_compiled_release(c);
        return tm_fail(err, err_len, rc, "compiling the grammar's token masks: %s", tm_strerror(rc));
    }
    *out = c;
    return 0;
}

tm_grammar_compiled *tm_grammar_compiled_retain(tm_grammar_compiled *c) {
    atomic_fetch_add(&c->refs, 1);
    return c;
}

void tm_grammar_compiled_release(tm_grammar_compiled *c) {
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1) return;
    tm_grammar_destroy(c->g);
    tm_grammar_vocab_destroy(c->v);
    free(c->entry);
    free(c->ids);
    free(c->unc_lcp);
    free(c);
}

const tm_grammar *tm_grammar_compiled_grammar(const tm_grammar_compiled *c) { return c->g; }

size_t tm_grammar_compiled_bytes(const tm_grammar_compiled *c) {
    return (size_t)c->n_ids * (sizeof *c->ids + sizeof *c->unc_lcp) +
           (size_t)c->g->n_states * sizeof *c->entry;
}

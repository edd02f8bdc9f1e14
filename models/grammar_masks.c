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
#include <pthread.h>
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
        if (b->acc.n) memcpy(b->ids + b->n, b->acc.v, (size_t)b->acc.n * sizeof *b->acc.v);
        b->n += b->acc.n;
    }
    e->n_acc = (int32_t)(b->n - e->acc);
    if (e->n_acc) memset(b->lcp + e->acc, 0, (size_t)e->n_acc * sizeof *b->lcp);
    e->unc = b->n;
    e->n_unc = b->unc.n;
    if (b->unc.n) memcpy(b->ids + b->n, b->unc.v, (size_t)b->unc.n * sizeof *b->unc.v);
    for (int32_t i = 0; i < b->unc.n; i++) b->lcp[b->n + i] = (uint16_t)b->unc_lcp.v[i];
    b->n += b->unc.n;
    return 0;
}

/* One compile thread: every n_workers-th state that needs an entry, from `first` (states
 * next to each other cost alike, so interleaving balances the threads). Its lists go to its
 * own pool; entry offsets are into that pool until the merge. */
typedef struct worker {
    const tm_grammar *g;
    const tm_grammar_vocab *v;
    tm_gmask_entry *entry; /* (g->n_states) shared; each state is written by one worker */
    int first, n_workers;
    builder b;             /* its pool */
    int rc;
} worker;

static void *compile_worker(void *arg) {
    worker *k = arg;
    tm_gstack st;
    tm_gwalk w;
    k->b.cls = malloc((size_t)k->v->n_text + 1);
    int rc = k->b.cls ? 0 : TM_ENOMEM, st_ok = 0, w_ok = 0;
    if (!rc && !(rc = tm_gstack_init(&st))) st_ok = 1;
    if (!rc && !(rc = tm_gwalk_init(&w, k->g, &st, k->v->max_len))) w_ok = 1;
    for (int32_t s = 0, seen = 0; s < k->g->n_states && !rc; s++) {
        if (!k->g->reachable[s] || k->g->states[s].n_tr == 0) continue;
        if (seen++ % k->n_workers != k->first) continue;
        rc = classify_state(k->g, k->v, &st, &w, s, &k->b);
        if (!rc) rc = store_entry(k->v, &k->b, &k->entry[s]);
    }
    if (w_ok) tm_gwalk_deinit(&w);
    if (st_ok) tm_gstack_deinit(&st);
    free(k->b.acc.v);
    free(k->b.cls);
    free(k->b.unc.v);
    free(k->b.unc_lcp.v);
    k->rc = rc;
    return NULL;
}

/* Threads for a compile: one per CPU up to this many, and only for grammars with enough
 * states to share out. */
#define TM_GRAMMAR_COMPILE_THREADS 8
#define TM_GRAMMAR_STATES_PER_THREAD 64

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
    int rc = c->entry ? 0 : TM_ENOMEM;
    int32_t n_work = 0;
    for (int32_t s = 0; s < g->n_states; s++) n_work += g->reachable[s] && g->states[s].n_tr > 0;
    int n = TM_MIN(TM_MIN(tm_n_cpus(), TM_GRAMMAR_COMPILE_THREADS), 1 + n_work / TM_GRAMMAR_STATES_PER_THREAD);
    worker k[TM_GRAMMAR_COMPILE_THREADS];
    pthread_t th[TM_GRAMMAR_COMPILE_THREADS];
    int started[TM_GRAMMAR_COMPILE_THREADS] = {0};
    memset(k, 0, sizeof k);
    for (int i = 0; i < n && !rc; i++) {
        k[i] = (worker){g, v, c->entry, i, n, {0}, 0};
        /* worker 0 runs here; a thread that cannot start is done here too */
        if (i > 0 && pthread_create(&th[i], NULL, compile_worker, &k[i]) == 0) started[i] = 1;
    }
    if (!rc) {
        compile_worker(&k[0]);
        for (int i = 1; i < n; i++) {
            if (started[i]) pthread_join(th[i], NULL);
            else compile_worker(&k[i]);
        }
    }
    /* Merge the pools; move each state's offsets into the merged one. */
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (k[i].rc && !rc) rc = k[i].rc;
        total += k[i].b.n;
    }
    if (!rc) {
        c->ids = malloc(((size_t)total + 1) * sizeof *c->ids);
        c->unc_lcp = malloc(((size_t)total + 1) * sizeof *c->unc_lcp);
        if (!c->ids || !c->unc_lcp) rc = TM_ENOMEM;
    }
    int64_t base[TM_GRAMMAR_COMPILE_THREADS], at = 0;
    for (int i = 0; i < n && !rc; i++) {
        base[i] = at;
        if (k[i].b.n == 0) continue;
        memcpy(c->ids + at, k[i].b.ids, (size_t)k[i].b.n * sizeof *c->ids);
        memcpy(c->unc_lcp + at, k[i].b.lcp, (size_t)k[i].b.n * sizeof *c->unc_lcp);
        at += k[i].b.n;
    }
    for (int32_t s = 0, seen = 0; s < g->n_states && !rc; s++) {
        if (!g->reachable[s] || g->states[s].n_tr == 0) continue;
        int64_t off = base[seen++ % n];
        c->entry[s].acc += off;
        c->entry[s].unc += off;
    }
    c->n_ids = total;
    for (int i = 0; i < n; i++) {
        free(k[i].b.ids);
        free(k[i].b.lcp);
    }
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

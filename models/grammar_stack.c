/* grammar_stack.c - the pushdown automaton's stacks as interned nodes, and the closure
 * that enters called rules and returns from finished ones.
 *
 * A stack is its top node; a node is (state, parent). Interning makes equal stacks the
 * same id, so a set of live stacks deduplicates by id and two paths that reach the same
 * stack merge. Nodes are only ever removed newest first, which is what a speculative
 * simulation needs (try a token, roll back). */
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/grammar_impl.h"

/* Nodes one stack store may hold: a matcher over a long generation stays far below. */
#define TM_GSTACK_MAX_NODES (1 << 24)

int tm_gbuf_reserve(tm_gbuf *b, int32_t n) {
    if (b->n + n <= b->cap) return 0;
    int64_t cap = b->cap ? b->cap : 64;
    while (cap < (int64_t)b->n + n) cap *= 2;
    if (cap > INT32_MAX) return TM_ENOMEM;
    int32_t *v = realloc(b->v, (size_t)cap * sizeof *v);
    if (!v) return TM_ENOMEM;
    b->v = v;
    b->cap = (int32_t)cap;
    return 0;
}

int tm_gbuf_push(tm_gbuf *b, int32_t x) {
    if (b->n == b->cap && tm_gbuf_reserve(b, 1)) return TM_ENOMEM;
    b->v[b->n++] = x;
    return 0;
}

static uint32_t node_hash(int32_t state, int32_t parent) {
    uint64_t h = ((uint64_t)(uint32_t)state << 32 | (uint32_t)parent) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32);
}

int tm_gstack_init(tm_gstack *st) {
    memset(st, 0, sizeof *st);
    st->gen = 1;
    st->slot_mask = 1023;
    st->slots = malloc(1024 * sizeof *st->slots);
    if (!st->slots) return TM_ENOMEM;
    memset(st->slots, 0xff, 1024 * sizeof *st->slots);
    return 0;
}

void tm_gstack_deinit(tm_gstack *st) {
    free(st->state);
    free(st->parent);
    free(st->mark);
    free(st->slots);
    free(st->work.v);
    free(st->seeds.v);
    memset(st, 0, sizeof *st);
}

static int grow_nodes(tm_gstack *st) {
    if (st->cap >= TM_GSTACK_MAX_NODES) return TM_ERANGE;
    int32_t cap = st->cap ? 2 * st->cap : 256;
    int32_t *s = realloc(st->state, (size_t)cap * sizeof *s);
    if (!s) return TM_ENOMEM;
    st->state = s;
    int32_t *p = realloc(st->parent, (size_t)cap * sizeof *p);
    if (!p) return TM_ENOMEM;
    st->parent = p;
    uint32_t *m = realloc(st->mark, (size_t)cap * sizeof *m);
    if (!m) return TM_ENOMEM;
    memset(m + st->cap, 0, (size_t)(cap - st->cap) * sizeof *m);
    st->mark = m;
    st->cap = cap;
    if ((uint32_t)cap * 2 > st->slot_mask + 1) { /* keep the table at most half full */
        uint32_t ns = (st->slot_mask + 1) * 2;
        while (ns < (uint32_t)cap * 2) ns *= 2;
        int32_t *slots = malloc(ns * sizeof *slots);
        if (!slots) return TM_ENOMEM;
        memset(slots, 0xff, ns * sizeof *slots);
        /* Reinserting in id order keeps removal newest-first exact. */
        for (int32_t i = 0; i < st->n; i++) {
            uint32_t h = node_hash(st->state[i], st->parent[i]) & (ns - 1);
            while (slots[h] >= 0) h = (h + 1) & (ns - 1);
            slots[h] = i;
        }
        free(st->slots);
        st->slots = slots;
        st->slot_mask = ns - 1;
    }
    return 0;
}

int32_t tm_gstack_intern(tm_gstack *st, int32_t state, int32_t parent) {
    uint32_t h = node_hash(state, parent) & st->slot_mask;
    for (; st->slots[h] >= 0; h = (h + 1) & st->slot_mask) {
        int32_t i = st->slots[h];
        if (st->state[i] == state && st->parent[i] == parent) return i;
    }
    if (st->n == st->cap) {
        int rc = grow_nodes(st);
        if (rc) return rc;
        /* the table may have been rebuilt: find the empty slot again */
        h = node_hash(state, parent) & st->slot_mask;
        while (st->slots[h] >= 0) h = (h + 1) & st->slot_mask;
    }
    int32_t id = st->n++;
    st->state[id] = state;
    st->parent[id] = parent;
    st->mark[id] = 0;
    st->slots[h] = id;
    return id;
}

void tm_gstack_truncate(tm_gstack *st, int32_t n) {
    /* Newest first: each removed node sat in the first free slot of its probe sequence
     * when it was added, and everything added after it is already gone. */
    while (st->n > n) {
        int32_t id = --st->n;
        uint32_t h = node_hash(st->state[id], st->parent[id]) & st->slot_mask;
        while (st->slots[h] != id) h = (h + 1) & st->slot_mask;
        st->slots[h] = -1;
    }
}

static int visit(tm_gstack *st, int32_t id) {
    if (st->mark[id] == st->gen) return 0;
    st->mark[id] = st->gen;
    return tm_gbuf_push(&st->work, id);
}

int tm_gstack_closure(const tm_grammar *g, tm_gstack *st, const int32_t *seeds, int n_seeds,
                      tm_gbuf *out, int *flags) {
    if (++st->gen == 0) { /* the stamps wrapped: clear them once */
        memset(st->mark, 0, (size_t)st->cap * sizeof *st->mark);
        st->gen = 1;
    }
    st->work.n = 0;
    int rc = 0;
    for (int i = 0; i < n_seeds && !rc; i++) rc = visit(st, seeds[i]);
    while (st->work.n > 0 && !rc) {
        int32_t x = st->work.v[--st->work.n];
        int32_t s = st->state[x], p = st->parent[x];
        const tm_gstate *gs = &g->states[s];
        if (gs->n_tr > 0 && (rc = tm_gbuf_push(out, x))) break;
        for (int32_t c = gs->call; c < gs->call + gs->n_call && !rc; c++) {
            /* Enter the rule: below it, the node that resumes at the call's target. */
            int32_t below = tm_gstack_intern(st, g->calls[c].to, p);
            int32_t top = below < 0 ? below : tm_gstack_intern(st, g->rule_start[g->calls[c].rule], below);
            rc = top < 0 ? top : visit(st, top);
        }
        if (rc || !gs->final) continue;
        /* The rule may return: the parent node becomes a top. */
        if (p == TM_GNODE_ROOT) *flags |= TM_GSET_END;
        else if (p == TM_GNODE_UNKNOWN) *flags |= TM_GSET_EXIT;
        else rc = visit(st, p);
    }
    return rc;
}

int tm_gstack_advance(const tm_grammar *g, tm_gstack *st, const int32_t *in, int n, uint8_t b,
                      tm_gbuf *out, int *flags) {
    st->seeds.n = 0;
    int rc = tm_gbuf_reserve(&st->seeds, n);
    for (int i = 0; i < n && !rc; i++) {
        int32_t t = tm_grammar_step(g, st->state[in[i]], b);
        if (t < 0) continue;
        int32_t x = tm_gstack_intern(st, t, st->parent[in[i]]);
        if (x < 0) return x;
        st->seeds.v[st->seeds.n++] = x;
    }
    if (rc || st->seeds.n == 0) return rc;
    if (st->seeds.n == 1) { /* the common case inside a rule: nothing to enter or return from */
        int32_t x = st->seeds.v[0];
        const tm_gstate *gs = &g->states[st->state[x]];
        if (gs->n_call == 0 && !gs->final) return tm_gbuf_push(out, x); /* productive: it has bytes */
    }
    return tm_gstack_closure(g, st, st->seeds.v, st->seeds.n, out, flags);
}

int tm_gstack_compact(tm_gstack *st, int32_t *tops, int n) {
    int32_t *map = malloc(((size_t)st->n + 1) * sizeof *map);
    if (!map) return TM_ENOMEM;
    for (int32_t i = 0; i < st->n; i++) map[i] = -1;
    for (int i = 0; i < n; i++) /* mark every node on the tops' stacks */
        for (int32_t x = tops[i]; x >= 0 && map[x] < 0; x = st->parent[x]) map[x] = 0;
    int32_t m = 0;
    for (int32_t i = 0; i < st->n; i++) { /* parents come first, so this compacts in place */
        if (map[i] < 0) continue;
        int32_t p = st->parent[i];
        st->state[m] = st->state[i];
        st->parent[m] = p < 0 ? p : map[p];
        map[i] = m++;
    }
    for (int i = 0; i < n; i++) tops[i] = map[tops[i]];
    free(map);
    st->n = m;
    memset(st->slots, 0xff, ((size_t)st->slot_mask + 1) * sizeof *st->slots);
    memset(st->mark, 0, (size_t)st->cap * sizeof *st->mark);
    st->gen = 1;
    for (int32_t i = 0; i < m; i++) {
        uint32_t h = node_hash(st->state[i], st->parent[i]) & st->slot_mask;
        while (st->slots[h] >= 0) h = (h + 1) & st->slot_mask;
        st->slots[h] = i;
    }
    return 0;
}

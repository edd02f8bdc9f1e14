/* grammar_nfa.c - syntax tree -> one deterministic automaton per rule.
 *
 * Each rule's body becomes a Thompson NFA over bytes (character classes become their
 * UTF-8 byte sequences) whose edges may also call another rule; the subset construction
 * then makes it deterministic over bytes and calls alike, so inside a rule the matcher
 * follows one path and only rule boundaries can fork a stack.
 *
 * Small rules that are not recursive are inlined where they are used: a token that runs
 * across the boundary of a called rule is "uncertain" in the mask cache and must be
 * checked against the stack at every step, while inside one rule it is settled at compile
 * time. */
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/grammar_impl.h"

/* Rules whose expanded body is at most this many syntax units are inlined. */
#define TM_GRAMMAR_INLINE_COST 64

/* ---- the NFA of one rule ---- */

typedef struct nedge {
    int32_t to;     /* target state */
    int32_t next;   /* next edge of the same source, or -1 */
    int32_t rule;   /* >= 0: a call of that rule; else a byte range or epsilon */
    int16_t lo, hi; /* byte range lo..hi; lo < 0: epsilon */
} nedge;

typedef struct nfa {
    int32_t *head;       /* (cap) first edge of each state, -1 */
    int32_t n, cap;      /* states */
    nedge *e;            /* (cap_e) */
    int32_t n_e, cap_e;  /* edges */
    const tm_gast *ast;  /* tree being built */
    const uint8_t *inl;  /* (n_rules) 1: inline the rule */
    int depth;           /* inlining depth (bounded by the rule count: no cycles inline) */
    char *err;
    size_t err_len;
} nfa;

static int32_t nfa_state(nfa *a) {
    if (a->n >= TM_GRAMMAR_MAX_STATES)
        return tm_fail(a->err, a->err_len, TM_ERANGE, "grammar: more than %d automaton states",
                       TM_GRAMMAR_MAX_STATES);
    if (a->n == a->cap) {
        int32_t cap = a->cap ? 2 * a->cap : 64;
        int32_t *h = realloc(a->head, (size_t)cap * sizeof *h);
        if (!h) return TM_ENOMEM;
        a->head = h;
        a->cap = cap;
    }
    a->head[a->n] = -1;
    return a->n++;
}

static int nfa_edge(nfa *a, int32_t from, int32_t to, int lo, int hi, int32_t rule) {
    if (a->n_e == a->cap_e) {
        int32_t cap = a->cap_e ? 2 * a->cap_e : 128;
        if (cap > INT32_MAX / 2) return TM_ERANGE;
        nedge *e = realloc(a->e, (size_t)cap * sizeof *e);
        if (!e) return TM_ENOMEM;
        a->e = e;
        a->cap_e = cap;
    }
    a->e[a->n_e] = (nedge){to, a->head[from], rule, (int16_t)lo, (int16_t)hi};
    a->head[from] = a->n_e++;
    return 0;
}

static int eps(nfa *a, int32_t from, int32_t to) { return nfa_edge(a, from, to, -1, -1, -1); }

/* One UTF-8 byte sequence from s to e: byte k in lo[k]..hi[k]. */
static int byte_chain(nfa *a, int32_t s, int32_t e, const uint8_t *lo, const uint8_t *hi, int n) {
    for (int k = 0; k < n; k++) {
        int32_t t = k == n - 1 ? e : nfa_state(a);
        if (t < 0) return t;
        int rc = nfa_edge(a, s, t, lo[k], hi[k], -1);
        if (rc) return rc;
        s = t;
    }
    return 0;
}

static int utf8_encode(uint32_t cp, uint8_t *b) {
    if (cp < 0x80) return b[0] = (uint8_t)cp, 1;
    if (cp < 0x800) return b[0] = (uint8_t)(0xC0 | cp >> 6), b[1] = (uint8_t)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000)
        return b[0] = (uint8_t)(0xE0 | cp >> 12), b[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)),
               b[2] = (uint8_t)(0x80 | (cp & 0x3F)), 3;
    return b[0] = (uint8_t)(0xF0 | cp >> 18), b[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F)),
           b[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)), b[3] = (uint8_t)(0x80 | (cp & 0x3F)), 4;
}

/* Code points lo..hi (no surrogates inside) as byte-range sequences from s to e. The
 * range is split until every byte position of the sequence is a full range: first at the
 * encoding-length boundaries, then where lo and hi differ above a continuation byte that
 * does not span 80..BF. */
static int utf8_range(nfa *a, int32_t s, int32_t e, uint32_t lo, uint32_t hi) {
    static const uint32_t len_max[] = {0x7F, 0x7FF, 0xFFFF};
    for (int k = 0; k < 3; k++)
        if (lo <= len_max[k] && hi > len_max[k]) {
            int rc = utf8_range(a, s, e, lo, len_max[k]);
            return rc ? rc : utf8_range(a, s, e, len_max[k] + 1, hi);
        }
    uint8_t bl[4], bh[4];
    int n = utf8_encode(lo, bl);
    for (int i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if ((lo & m) != 0) {
                int rc = utf8_range(a, s, e, lo, lo | m);
                return rc ? rc : utf8_range(a, s, e, (lo | m) + 1, hi);
            }
            if ((hi & m) != m) {
                int rc = utf8_range(a, s, e, lo, (hi & ~m) - 1);
                return rc ? rc : utf8_range(a, s, e, hi & ~m, hi);
            }
        }
    }
    utf8_encode(hi, bh);
    return byte_chain(a, s, e, bl, bh, n);
}

static int cmp_u32_pair(const void *x, const void *y) {
    const uint32_t *a = x, *b = y;
    return a[0] < b[0] ? -1 : a[0] > b[0];
}

/* A character class: sorted, merged, complemented when negated, surrogates removed. */
static int32_t emit_class(nfa *a, const tm_gx *x, int32_t s) {
    const tm_gast *t = a->ast;
    int32_t n = x->n;
    uint32_t *r = malloc(((size_t)n + 2) * 2 * sizeof *r);
    if (!r) return TM_ENOMEM;
    if (n) memcpy(r, t->ranges + 2 * (size_t)x->a, (size_t)n * 2 * sizeof *r); /* [] has no ranges (NULL) */
    qsort(r, (size_t)n, 2 * sizeof *r, cmp_u32_pair);
    int32_t m = 0; /* merge overlapping or adjacent */
    for (int32_t i = 0; i < n; i++) {
        if (m > 0 && r[2 * i] <= r[2 * (m - 1) + 1] + 1) {
            if (r[2 * i + 1] > r[2 * (m - 1) + 1]) r[2 * (m - 1) + 1] = r[2 * i + 1];
        } else {
            r[2 * m] = r[2 * i], r[2 * m + 1] = r[2 * i + 1];
            m++;
        }
    }
    if (x->min) { /* complement within 0..10FFFF */
        uint32_t *c = malloc(((size_t)m + 1) * 2 * sizeof *c);
        if (!c) {
            free(r);
            return TM_ENOMEM;
        }
        int32_t k = 0;
        uint32_t next = 0;
        for (int32_t i = 0; i < m; i++) {
            if (r[2 * i] > next) c[2 * k] = next, c[2 * k + 1] = r[2 * i] - 1, k++;
            next = r[2 * i + 1] + 1;
        }
        if (next <= 0x10FFFF) c[2 * k] = next, c[2 * k + 1] = 0x10FFFF, k++;
        free(r);
        r = c;
        m = k;
    }
    int32_t e = nfa_state(a);
    int rc = e < 0 ? e : 0;
    for (int32_t i = 0; i < m && !rc; i++) {
        uint32_t lo = r[2 * i], hi = r[2 * i + 1];
        if (lo <= 0xD7FF && hi >= 0xE000) { /* split around the surrogates */
            rc = utf8_range(a, s, e, lo, 0xD7FF);
            if (!rc) rc = utf8_range(a, s, e, 0xE000, hi);
        } else if (!(lo >= 0xD800 && hi <= 0xDFFF)) {
            if (lo >= 0xD800 && lo <= 0xDFFF) lo = 0xE000;
            if (hi >= 0xD800 && hi <= 0xDFFF) hi = 0xD7FF;
            if (lo <= hi) rc = utf8_range(a, s, e, lo, hi);
        }
    }
    free(r);
    return rc ? rc : e;
}

/* Emits node's fragment starting at state s; returns the state where it ends. */
static int32_t emit(nfa *a, int32_t node, int32_t s) {
    const tm_gx *x = &a->ast->nodes[node];
    switch (x->kind) {
    case TM_GX_EMPTY:
        return s;
    case TM_GX_LIT:
        for (int32_t k = 0; k < x->n; k++) {
            int32_t t = nfa_state(a);
            if (t < 0) return t;
            uint8_t b = a->ast->bytes[x->a + k];
            int rc = nfa_edge(a, s, t, b, b, -1);
            if (rc) return rc;
            s = t;
        }
        return s;
    case TM_GX_CLASS:
        return emit_class(a, x, s);
    case TM_GX_SEQ:
        for (int32_t k = 0; k < x->n && s >= 0; k++) s = emit(a, a->ast->kids[x->a + k], s);
        return s;
    case TM_GX_ALT: {
        /* Each alternative starts at a fresh state: a loop back to a shared start would
         * let one alternative's repetition run into another. */
        int32_t e = nfa_state(a);
        for (int32_t k = 0; k < x->n && e >= 0; k++) {
            int32_t f = nfa_state(a), rc;
            if (f < 0) return f;
            if ((rc = eps(a, s, f))) return rc;
            int32_t y = emit(a, a->ast->kids[x->a + k], f);
            if (y < 0) return y;
            if ((rc = eps(a, y, e))) return rc;
        }
        return e;
    }
    case TM_GX_REF: {
        int32_t t = nfa_state(a);
        if (t < 0) return t;
        /* Past a depth of inlining the rule is called instead: same language, and the C
         * stack stays bounded. */
        if (!a->inl[x->a] || a->depth >= 32) return nfa_edge(a, s, t, 0, 0, x->a) ? TM_ENOMEM : t;
        int rc = eps(a, s, t);
        if (rc) return rc;
        a->depth++;
        int32_t y = emit(a, a->ast->rule_body[x->a], t);
        a->depth--;
        return y;
    }
    case TM_GX_REPEAT: {
        for (int32_t k = 0; k < x->min && s >= 0; k++) {
            int32_t f = nfa_state(a);
            if (f < 0 || eps(a, s, f)) return f < 0 ? f : TM_ENOMEM;
            s = emit(a, x->a, f);
        }
        if (s < 0) return s;
        if (x->max < 0) { /* loop: l -kid-> y -eps-> l */
            int32_t l = nfa_state(a), f = l < 0 ? l : nfa_state(a);
            if (f < 0) return f;
            if (eps(a, s, l) || eps(a, l, f)) return TM_ENOMEM;
            int32_t y = emit(a, x->a, f);
            if (y < 0) return y;
            return eps(a, y, l) ? TM_ENOMEM : l;
        }
        /* kid{0,k} nested: after each copy the repetition may stop. */
        int32_t e = nfa_state(a);
        if (e < 0) return e;
        for (int32_t k = x->min; k < x->max; k++) {
            int32_t f = nfa_state(a);
            if (f < 0 || eps(a, s, e) || eps(a, s, f)) return f < 0 ? f : TM_ENOMEM;
            s = emit(a, x->a, f);
            if (s < 0) return s;
        }
        return eps(a, s, e) ? TM_ENOMEM : e;
    }
    }
    return TM_EINVAL;
}

/* ---- inlining decisions ---- */

/* Cost of a node's expansion, saturating at limit. */
static int64_t cost_of(const tm_gast *t, int32_t node, const int64_t *rule_cost, const uint8_t *inl,
                       int64_t limit) {
    const tm_gx *x = &t->nodes[node];
    int64_t c = 0;
    switch (x->kind) {
    case TM_GX_EMPTY: return 0;
    case TM_GX_LIT: return x->n;
    case TM_GX_CLASS: return 1;
    case TM_GX_REF: return inl[x->a] ? rule_cost[x->a] : 1; /* else a call */
    case TM_GX_SEQ:
    case TM_GX_ALT:
        for (int32_t k = 0; k < x->n && c <= limit; k++) c += cost_of(t, t->kids[x->a + k], rule_cost, inl, limit);
        return c;
    case TM_GX_REPEAT: {
        int64_t kid = cost_of(t, x->a, rule_cost, inl, limit), times = x->max < 0 ? x->min + 1 : x->max;
        return kid * (times > 0 ? times : 1);
    }
    }
    return limit + 1;
}

/* Appends the rules node uses directly to out. */
static int refs_of(const tm_gast *t, int32_t node, tm_gbuf *out) {
    const tm_gx *x = &t->nodes[node];
    if (x->kind == TM_GX_REF) return tm_gbuf_push(out, x->a);
    if (x->kind == TM_GX_REPEAT) return refs_of(t, x->a, out);
    if (x->kind == TM_GX_SEQ || x->kind == TM_GX_ALT)
        for (int32_t k = 0; k < x->n; k++) {
            int rc = refs_of(t, t->kids[x->a + k], out);
            if (rc) return rc;
        }
    return 0;
}

/* inl[r] = 1 for rules that are not recursive, not the root, and cheap once expanded.
 * Recursion comes from the strongly connected components of the rule graph (Tarjan,
 * iterative); a component is emitted after every component it uses, so costs are
 * computed bottom-up as components come out. */
static int decide_inline(const tm_gast *t, int32_t root, uint8_t *inl) {
    int32_t n = t->n_rules;
    tm_gbuf adj = {0}, stack = {0}, frames = {0};
    int32_t *adj_off = malloc(((size_t)n + 1) * sizeof *adj_off);
    int32_t *index = malloc((size_t)n * sizeof *index), *low = malloc((size_t)n * sizeof *low);
    int64_t *cost = malloc((size_t)n * sizeof *cost);
    uint8_t *on_stack = calloc((size_t)n, 1);
    int rc = adj_off && index && low && cost && on_stack ? 0 : TM_ENOMEM;
    for (int32_t r = 0; r < n && !rc; r++) {
        adj_off[r] = adj.n;
        rc = refs_of(t, t->rule_body[r], &adj);
        index[r] = -1;
        cost[r] = -1;
        inl[r] = 0;
    }
    if (!rc) adj_off[n] = adj.n;
    int32_t next_index = 0;
    for (int32_t v0 = 0; v0 < n && !rc; v0++) {
        if (index[v0] >= 0) continue;
        /* frames: pairs (rule, next edge) */
        if ((rc = tm_gbuf_push(&frames, v0)) || (rc = tm_gbuf_push(&frames, -1))) break;
        while (frames.n > 0 && !rc) {
            int32_t v = frames.v[frames.n - 2], *it = &frames.v[frames.n - 1];
            if (*it < 0) {
                index[v] = low[v] = next_index++;
                if ((rc = tm_gbuf_push(&stack, v))) break;
                on_stack[v] = 1;
                *it = adj_off[v];
            }
            if (*it < adj_off[v + 1]) {
                int32_t w = adj.v[(*it)++];
                if (index[w] < 0) {
                    if ((rc = tm_gbuf_push(&frames, w)) || (rc = tm_gbuf_push(&frames, -1))) break;
                } else if (on_stack[w] && index[w] < low[v]) {
                    low[v] = index[w];
                }
                continue;
            }
            frames.n -= 2;
            if (frames.n > 0) {
                int32_t u = frames.v[frames.n - 2];
                if (low[v] < low[u]) low[u] = low[v];
            }
            if (low[v] != index[v]) continue;
            int32_t size = 0, w;
            do {
                w = stack.v[--stack.n];
                on_stack[w] = 0;
                size++;
            } while (w != v);
            int self = 0;
            for (int32_t k = adj_off[v]; k < adj_off[v + 1]; k++) self |= adj.v[k] == v;
            if (size == 1 && !self) {
                cost[v] = cost_of(t, t->rule_body[v], cost, inl, TM_GRAMMAR_INLINE_COST);
                inl[v] = v != root && cost[v] <= TM_GRAMMAR_INLINE_COST;
            }
        }
    }
    free(adj.v);
    free(stack.v);
    free(frames.v);
    free(adj_off);
    free(index);
    free(low);
    free(cost);
    free(on_stack);
    return rc;
}

/* ---- subset construction ---- */

/* Sorted NFA state sets, interned. */
typedef struct setmap {
    int32_t *pool;      /* sets back to back */
    int64_t n_pool, cap_pool;
    int64_t *off;       /* (n + 1) set i is pool[off[i] .. off[i+1]) */
    int32_t n, cap;     /* sets */
    int32_t *slots;     /* hash slots: set index or -1 */
    uint32_t mask;
} setmap;

static uint64_t hash_set(const int32_t *v, int32_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    for (int32_t i = 0; i < n; i++) h = (h ^ (uint32_t)v[i]) * 0x100000001B3ull, h ^= h >> 29;
    return h;
}

static int setmap_grow_slots(setmap *m) {
    uint32_t ns = m->mask ? 2 * (m->mask + 1) : 256;
    int32_t *slots = malloc(ns * sizeof *slots);
    if (!slots) return TM_ENOMEM;
    memset(slots, 0xff, ns * sizeof *slots);
    for (int32_t i = 0; i < m->n; i++) {
        uint32_t h = (uint32_t)hash_set(m->pool + m->off[i], (int32_t)(m->off[i + 1] - m->off[i])) & (ns - 1);
        while (slots[h] >= 0) h = (h + 1) & (ns - 1);
        slots[h] = i;
    }
    free(m->slots);
    m->slots = slots;
    m->mask = ns - 1;
    return 0;
}

/* Index of set v[0..n) (sorted), adding it when new (*added = 1). */
static int32_t setmap_get(setmap *m, const int32_t *v, int32_t n, int *added) {
    *added = 0;
    if ((uint32_t)(m->n + 1) * 2 > m->mask + 1 || !m->slots)
        if (setmap_grow_slots(m)) return TM_ENOMEM;
    uint32_t h = (uint32_t)hash_set(v, n) & m->mask;
    for (; m->slots[h] >= 0; h = (h + 1) & m->mask) {
        int32_t i = m->slots[h];
        if (m->off[i + 1] - m->off[i] == n && !memcmp(m->pool + m->off[i], v, (size_t)n * sizeof *v))
            return i;
    }
    if (m->n + 1 >= m->cap) {
        int32_t cap = m->cap ? 2 * m->cap : 64;
        int64_t *off = realloc(m->off, ((size_t)cap + 1) * sizeof *off);
        if (!off) return TM_ENOMEM;
        m->off = off;
        m->cap = cap;
        if (m->n == 0) m->off[0] = 0;
    }
    if (m->n_pool + n > m->cap_pool) {
        int64_t cap = m->cap_pool ? 2 * m->cap_pool : 1024;
        while (cap < m->n_pool + n) cap *= 2;
        int32_t *p = realloc(m->pool, (size_t)cap * sizeof *p);
        if (!p) return TM_ENOMEM;
        m->pool = p;
        m->cap_pool = cap;
    }
    if (n) memcpy(m->pool + m->n_pool, v, (size_t)n * sizeof *v);
    m->n_pool += n;
    m->off[m->n + 1] = m->n_pool;
    m->slots[h] = m->n;
    *added = 1;
    return m->n++;
}

static void setmap_free(setmap *m) {
    free(m->pool);
    free(m->off);
    free(m->slots);
}

static int cmp_i32(const void *x, const void *y) {
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return a < b ? -1 : a > b;
}

/* Scratch of the subset construction. */
typedef struct subset {
    nfa *a;
    int32_t *mark;      /* (a->n) stamp per NFA state */
    int32_t stamp;
    tm_gbuf set;        /* the set being built */
    tm_gbuf stack;      /* closure DFS */
} subset;

/* Epsilon closure of sub->set, sorted. */
static int close_set(subset *sub) {
    nfa *a = sub->a;
    sub->stamp++;
    sub->stack.n = 0;
    for (int32_t i = 0; i < sub->set.n; i++) {
        int32_t q = sub->set.v[i];
        if (sub->mark[q] == sub->stamp) continue;
        sub->mark[q] = sub->stamp;
        if (tm_gbuf_push(&sub->stack, q)) return TM_ENOMEM;
    }
    sub->set.n = 0;
    while (sub->stack.n > 0) {
        int32_t q = sub->stack.v[--sub->stack.n];
        if (tm_gbuf_push(&sub->set, q)) return TM_ENOMEM;
        for (int32_t e = a->head[q]; e >= 0; e = a->e[e].next)
            if (a->e[e].rule < 0 && a->e[e].lo < 0 && sub->mark[a->e[e].to] != sub->stamp) {
                sub->mark[a->e[e].to] = sub->stamp;
                if (tm_gbuf_push(&sub->stack, a->e[e].to)) return TM_ENOMEM;
            }
    }
    if (sub->set.n) qsort(sub->set.v, (size_t)sub->set.n, sizeof *sub->set.v, cmp_i32);
    return 0;
}

/* Appends to g the deterministic automaton of NFA a (start state 0, accepting state
 * accept) as rule r's states. */
static int determinize(tm_grammar *g, nfa *a, int32_t accept, int32_t r, int32_t *cap_states,
                       int32_t *cap_trans, int32_t *cap_calls) {
    setmap m = {0};
    subset sub = {a, calloc((size_t)a->n, sizeof(int32_t)), 0, {0}, {0}};
    int32_t base = g->n_states;
    int rc = sub.mark ? 0 : TM_ENOMEM, added;
    if (!rc) rc = tm_gbuf_push(&sub.set, 0);
    if (!rc) rc = close_set(&sub);
    if (!rc && setmap_get(&m, sub.set.v, sub.set.n, &added) < 0) rc = TM_ENOMEM;
    int32_t cuts[258];
    for (int32_t d = 0; d < m.n && !rc; d++) {
        if (base + d >= TM_GRAMMAR_MAX_STATES) {
            rc = tm_fail(a->err, a->err_len, TM_ERANGE, "grammar: more than %d automaton states",
                         TM_GRAMMAR_MAX_STATES);
            break;
        }
        if (g->n_states == *cap_states) {
            int32_t cap = *cap_states ? 2 * *cap_states : 256;
            tm_gstate *s = realloc(g->states, (size_t)cap * sizeof *s);
            if (!s) { rc = TM_ENOMEM; break; }
            g->states = s;
            *cap_states = cap;
        }
        tm_gstate *st = &g->states[g->n_states++];
        *st = (tm_gstate){r, g->n_trans, 0, 0, 0, 0};
        /* Members are re-read from the pool each time: the pool moves as sets are added. */
        int32_t n_mem = (int32_t)(m.off[d + 1] - m.off[d]);
        uint8_t is_cut[257] = {0};
        is_cut[0] = is_cut[256] = 1;
        for (int32_t i = 0; i < n_mem; i++) {
            int32_t q = m.pool[m.off[d] + i];
            if (q == accept) st->final = 1;
            for (int32_t e = a->head[q]; e >= 0; e = a->e[e].next)
                if (a->e[e].rule < 0 && a->e[e].lo >= 0) is_cut[a->e[e].lo] = is_cut[a->e[e].hi + 1] = 1;
        }
        int n_cuts = 0;
        for (int c = 0; c <= 256; c++)
            if (is_cut[c]) cuts[n_cuts++] = c;
        /* Elementary byte intervals [cuts[k], cuts[k+1]). */
        for (int k = 0; k + 1 < n_cuts && !rc; k++) {
            int lo = cuts[k], hi = cuts[k + 1] - 1;
            if (hi < lo) continue;
            sub.set.n = 0;
            for (int32_t i = 0; i < n_mem && !rc; i++) {
                int32_t q = m.pool[m.off[d] + i];
                for (int32_t e = a->head[q]; e >= 0 && !rc; e = a->e[e].next)
                    if (a->e[e].rule < 0 && a->e[e].lo >= 0 && a->e[e].lo <= lo && a->e[e].hi >= hi)
                        rc = tm_gbuf_push(&sub.set, a->e[e].to);
            }
            if (rc || sub.set.n == 0) continue;
            if ((rc = close_set(&sub))) break;
            int32_t to = setmap_get(&m, sub.set.v, sub.set.n, &added);
            if (to < 0) { rc = to; break; }
            st = &g->states[base + d];
            tm_gtrans *prev = st->n_tr ? &g->trans[st->tr + st->n_tr - 1] : NULL;
            if (prev && prev->to == base + to && prev->hi + 1 == lo) {
                prev->hi = (uint8_t)hi;
                continue;
            }
            if (g->n_trans == *cap_trans) {
                int32_t cap = *cap_trans ? 2 * *cap_trans : 1024;
                tm_gtrans *tr = realloc(g->trans, (size_t)cap * sizeof *tr);
                if (!tr) { rc = TM_ENOMEM; break; }
                g->trans = tr;
                *cap_trans = cap;
            }
            g->trans[g->n_trans++] = (tm_gtrans){(uint8_t)lo, (uint8_t)hi, base + to};
            st->n_tr++;
        }
        /* Calls, grouped by rule. */
        st = &g->states[base + d];
        st->call = g->n_calls;
        for (int32_t i = 0; i < n_mem && !rc; i++) {
            int32_t q = m.pool[m.off[d] + i];
            for (int32_t e = a->head[q]; e >= 0 && !rc; e = a->e[e].next) {
                int32_t rule = a->e[e].rule, dup = 0;
                if (rule < 0) continue;
                for (int32_t c = st->call; c < st->call + st->n_call; c++) dup |= g->calls[c].rule == rule;
                if (dup) continue;
                sub.set.n = 0;
                for (int32_t j = 0; j < n_mem && !rc; j++) {
                    int32_t q2 = m.pool[m.off[d] + j];
                    for (int32_t e2 = a->head[q2]; e2 >= 0 && !rc; e2 = a->e[e2].next)
                        if (a->e[e2].rule == rule) rc = tm_gbuf_push(&sub.set, a->e[e2].to);
                }
                if (rc || (rc = close_set(&sub))) break;
                int32_t to = setmap_get(&m, sub.set.v, sub.set.n, &added);
                if (to < 0) { rc = to; break; }
                if (g->n_calls == *cap_calls) {
                    int32_t cap = *cap_calls ? 2 * *cap_calls : 256;
                    tm_gcall *c = realloc(g->calls, (size_t)cap * sizeof *c);
                    if (!c) { rc = TM_ENOMEM; break; }
                    g->calls = c;
                    *cap_calls = cap;
                }
                g->calls[g->n_calls++] = (tm_gcall){rule, base + to};
                st = &g->states[base + d];
                st->n_call++;
            }
        }
    }
    setmap_free(&m);
    free(sub.mark);
    free(sub.set.v);
    free(sub.stack.v);
    return rc;
}

/* Builds every rule's automaton into g (states, trans, calls, rule_start). */
int tm_grammar_build_automata(tm_grammar *g, const tm_gast *ast, int32_t root, char *err,
                              size_t err_len);

int tm_grammar_build_automata(tm_grammar *g, const tm_gast *ast, int32_t root, char *err,
                              size_t err_len) {
    int32_t n_rules = ast->n_rules, cap_states = 0, cap_trans = 0, cap_calls = 0;
    uint8_t *inl = calloc((size_t)n_rules, 1);
    g->rule_start = malloc((size_t)n_rules * sizeof *g->rule_start);
    if (!inl || !g->rule_start) {
        free(inl);
        return TM_ENOMEM;
    }
    int rc = decide_inline(ast, root, inl);
    nfa a = {0};
    a.ast = ast;
    a.inl = inl;
    a.err = err;
    a.err_len = err_len;
    for (int32_t r = 0; r < n_rules && !rc; r++) {
        /* Inlined rules are built too: past the inlining depth they are called. */
        a.n = a.n_e = 0;
        int32_t s = nfa_state(&a);
        int32_t end = s < 0 ? s : emit(&a, ast->rule_body[r], s);
        if (end < 0) {
            rc = end;
            break;
        }
        g->rule_start[r] = g->n_states;
        rc = determinize(g, &a, end, r, &cap_states, &cap_trans, &cap_calls);
    }
    free(a.head);
    free(a.e);
    free(inl);
    return rc;
}

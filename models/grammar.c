/* grammar.c - tm_grammar_parse: the syntax tree's automata (grammar_nfa.c), then the
 * analyses the matcher and the mask cache rely on:
 *   - nullable and productive states and rules (fixpoints);
 *   - pruning: edges into states that cannot finish their rule and calls of rules that
 *     match nothing are removed, so every stack the matcher holds can still complete;
 *   - left recursion is refused (a pushdown automaton would push forever), including
 *     recursion behind rules that can match the empty string;
 *   - FOLLOW byte sets per rule, which settle at compile time many tokens that run past a
 *     rule's end (their next byte can follow the rule nowhere);
 *   - which states some stack can hold (only those get a mask cache entry). */
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/grammar_impl.h"

int tm_grammar_build_automata(tm_grammar *g, const tm_gast *ast, int32_t root, char *err,
                              size_t err_len);

static void bytes_or(tm_gbytes *d, const tm_gbytes *s, int *changed) {
    for (int k = 0; k < 4; k++) {
        uint64_t w = d->w[k] | s->w[k];
        if (w != d->w[k]) d->w[k] = w, *changed = 1;
    }
}

static void bytes_add_range(tm_gbytes *d, int lo, int hi) {
    for (int b = lo; b <= hi; b++) d->w[b >> 6] |= 1ull << (b & 63);
}

/* nullable_state[s]: the rule can return from s without a byte. */
static void find_nullable(const tm_grammar *g, uint8_t *ns, uint8_t *nr) {
    for (int32_t s = 0; s < g->n_states; s++) ns[s] = g->states[s].final;
    for (int32_t r = 0; r < g->n_rules; r++) nr[r] = ns[g->rule_start[r]];
    for (int changed = 1; changed;) {
        changed = 0;
        for (int32_t s = g->n_states - 1; s >= 0; s--) {
            const tm_gstate *st = &g->states[s];
            for (int32_t c = st->call; c < st->call + st->n_call && !ns[s]; c++)
                if (nr[g->calls[c].rule] && ns[g->calls[c].to]) ns[s] = 1, changed = 1;
            if (ns[s] && !nr[st->rule] && g->rule_start[st->rule] == s) nr[st->rule] = 1, changed = 1;
        }
    }
}

/* productive_state[s]: some string takes s to its rule's return. */
static void find_productive(const tm_grammar *g, uint8_t *ps, uint8_t *pr) {
    for (int32_t s = 0; s < g->n_states; s++) ps[s] = g->states[s].final;
    memset(pr, 0, (size_t)g->n_rules);
    for (int changed = 1; changed;) {
        changed = 0;
        for (int32_t s = g->n_states - 1; s >= 0; s--) {
            const tm_gstate *st = &g->states[s];
            for (int32_t k = st->tr; k < st->tr + st->n_tr && !ps[s]; k++)
                if (ps[g->trans[k].to]) ps[s] = 1, changed = 1;
            for (int32_t c = st->call; c < st->call + st->n_call && !ps[s]; c++)
                if (pr[g->calls[c].rule] && ps[g->calls[c].to]) ps[s] = 1, changed = 1;
        }
        for (int32_t r = 0; r < g->n_rules; r++)
            if (!pr[r] && ps[g->rule_start[r]]) pr[r] = 1, changed = 1;
    }
}

/* Drops transitions into unproductive states and calls that cannot complete. */
static void prune(tm_grammar *g, const uint8_t *ps, const uint8_t *pr) {
    int32_t nt = 0, nc = 0;
    for (int32_t s = 0; s < g->n_states; s++) {
        tm_gstate *st = &g->states[s];
        int32_t tr = nt, call = nc;
        for (int32_t k = st->tr; k < st->tr + st->n_tr; k++)
            if (ps[g->trans[k].to]) g->trans[nt++] = g->trans[k];
        for (int32_t c = st->call; c < st->call + st->n_call; c++)
            if (pr[g->calls[c].rule] && ps[g->calls[c].to]) g->calls[nc++] = g->calls[c];
        st->tr = tr, st->n_tr = nt - tr;
        st->call = call, st->n_call = nc - call;
    }
    g->n_trans = nt;
    g->n_calls = nc;
}

static int find_reachable(tm_grammar *g) {
    g->reachable = calloc((size_t)g->n_states, 1);
    int32_t *queue = malloc((size_t)g->n_states * sizeof *queue);
    if (!g->reachable || !queue) {
        free(queue);
        return TM_ENOMEM;
    }
    int32_t head = 0, tail = 0;
#define VISIT(x) do { if (!g->reachable[x]) g->reachable[x] = 1, queue[tail++] = (x); } while (0)
    VISIT(g->rule_start[g->root]);
    while (head < tail) {
        const tm_gstate *st = &g->states[queue[head++]];
        for (int32_t k = st->tr; k < st->tr + st->n_tr; k++) VISIT(g->trans[k].to);
        for (int32_t c = st->call; c < st->call + st->n_call; c++) {
            VISIT(g->rule_start[g->calls[c].rule]);
            VISIT(g->calls[c].to);
        }
    }
#undef VISIT
    free(queue);
    return 0;
}

/* Left recursion: rule R calls S before any byte (through calls of rules that can match
 * nothing). A cycle among such calls, in the rules a stack can enter, is an error. */
static int check_left_recursion(const tm_grammar *g, const uint8_t *nr, char *err, size_t err_len) {
    int32_t nrule = g->n_rules;
    tm_gbuf adj = {0}, queue = {0}, frames = {0};
    int32_t *off = malloc(((size_t)nrule + 1) * sizeof *off);
    int32_t *seen = malloc((size_t)g->n_states * sizeof *seen);
    uint8_t *color = calloc((size_t)nrule, 1); /* 0 new, 1 on the DFS path, 2 done */
    int rc = off && seen && color ? 0 : TM_ENOMEM;
    int32_t bad = -1;
    for (int32_t s = 0; s < g->n_states && !rc; s++) seen[s] = -1;
    for (int32_t r = 0; r < nrule && !rc; r++) {
        off[r] = adj.n;
        if (!g->reachable[g->rule_start[r]]) continue;
        queue.n = 0;
        rc = tm_gbuf_push(&queue, g->rule_start[r]);
        seen[g->rule_start[r]] = r;
        for (int32_t qi = 0; qi < queue.n && !rc; qi++) {
            const tm_gstate *st = &g->states[queue.v[qi]];
            for (int32_t c = st->call; c < st->call + st->n_call && !rc; c++) {
                rc = tm_gbuf_push(&adj, g->calls[c].rule);
                int32_t t = g->calls[c].to;
                if (!rc && nr[g->calls[c].rule] && seen[t] != r) seen[t] = r, rc = tm_gbuf_push(&queue, t);
            }
        }
    }
    if (!rc) off[nrule] = adj.n;
    for (int32_t r0 = 0; r0 < nrule && !rc && bad < 0; r0++) {
        if (color[r0]) continue;
        if ((rc = tm_gbuf_push(&frames, r0)) || (rc = tm_gbuf_push(&frames, off[r0]))) break;
        color[r0] = 1;
        while (frames.n > 0 && !rc && bad < 0) {
            int32_t v = frames.v[frames.n - 2], *it = &frames.v[frames.n - 1];
            if (*it < off[v + 1]) {
                int32_t w = adj.v[(*it)++];
                if (color[w] == 1) bad = w;
                else if (color[w] == 0) {
                    color[w] = 1;
                    if ((rc = tm_gbuf_push(&frames, w)) || (rc = tm_gbuf_push(&frames, off[w]))) break;
                }
            } else {
                color[v] = 2;
                frames.n -= 2;
            }
        }
    }
    free(adj.v);
    free(queue.v);
    free(frames.v);
    free(off);
    free(seen);
    free(color);
    if (!rc && bad >= 0)
        rc = tm_fail(err, err_len, TM_EINVAL,
                     "grammar: rule '%s' is left-recursive (it can reach itself before matching a "
                     "character); rewrite it with repetition, e.g. a ::= b (\"+\" b)*",
                     g->rule_name[bad]);
    return rc;
}

static int find_follow(tm_grammar *g, const uint8_t *ns, const uint8_t *nr) {
    tm_gbytes *first = calloc((size_t)g->n_states, sizeof *first);
    g->follow = calloc((size_t)g->n_rules, sizeof *g->follow);
    if (!first || !g->follow) {
        free(first);
        return TM_ENOMEM;
    }
    for (int32_t s = 0; s < g->n_states; s++) {
        const tm_gstate *st = &g->states[s];
        for (int32_t k = st->tr; k < st->tr + st->n_tr; k++)
            bytes_add_range(&first[s], g->trans[k].lo, g->trans[k].hi);
    }
    for (int changed = 1; changed;) {
        changed = 0;
        for (int32_t s = g->n_states - 1; s >= 0; s--) {
            const tm_gstate *st = &g->states[s];
            for (int32_t c = st->call; c < st->call + st->n_call; c++) {
                const tm_gcall *call = &g->calls[c];
                bytes_or(&first[s], &first[g->rule_start[call->rule]], &changed);
                if (nr[call->rule]) bytes_or(&first[s], &first[call->to], &changed);
                bytes_or(&g->follow[call->rule], &first[call->to], &changed);
                if (ns[call->to]) bytes_or(&g->follow[call->rule], &g->follow[st->rule], &changed);
            }
        }
    }
    free(first);
    return 0;
}

/* States with many byte ranges (a character class, JSON string content) step through a
 * 256-entry table instead of a binary search: the token walks spend most of their time
 * stepping such states. */
#define TM_GRAMMAR_DENSE_MIN_RANGES 4

static int build_dense(tm_grammar *g) {
    g->dense = malloc((size_t)g->n_states * sizeof *g->dense);
    if (!g->dense) return TM_ENOMEM;
    int32_t n_dense = 0;
    for (int32_t s = 0; s < g->n_states; s++)
        n_dense += g->reachable[s] && g->states[s].n_tr >= TM_GRAMMAR_DENSE_MIN_RANGES;
    g->dense_pool = malloc(((size_t)n_dense * 256 + 1) * sizeof *g->dense_pool);
    if (!g->dense_pool) return TM_ENOMEM;
    int32_t at = 0;
    for (int32_t s = 0; s < g->n_states; s++) {
        const tm_gstate *st = &g->states[s];
        g->dense[s] = -1;
        if (!g->reachable[s] || st->n_tr < TM_GRAMMAR_DENSE_MIN_RANGES) continue;
        int32_t *t = g->dense_pool + at;
        for (int b = 0; b < 256; b++) t[b] = -1;
        for (int32_t k = st->tr; k < st->tr + st->n_tr; k++)
            for (int b = g->trans[k].lo; b <= g->trans[k].hi; b++) t[b] = g->trans[k].to;
        g->dense[s] = at;
        at += 256;
    }
    return 0;
}

int tm_grammar_build(tm_grammar *g, const tm_gast *ast, int32_t root, char *err, size_t err_len) {
    memset(g, 0, sizeof *g);
    g->n_rules = ast->n_rules;
    g->root = root;
    g->rule_name = calloc((size_t)ast->n_rules, sizeof *g->rule_name);
    if (!g->rule_name) return TM_ENOMEM;
    for (int32_t r = 0; r < ast->n_rules; r++)
        if (!(g->rule_name[r] = strdup(ast->rule_name[r]))) return TM_ENOMEM;
    int rc = tm_grammar_build_automata(g, ast, root, err, err_len);
    if (rc) return rc;
    uint8_t *ns = malloc((size_t)g->n_states), *nr = malloc((size_t)g->n_rules);
    uint8_t *ps = malloc((size_t)g->n_states), *pr = malloc((size_t)g->n_rules);
    if (!ns || !nr || !ps || !pr) rc = TM_ENOMEM;
    if (!rc) {
        find_productive(g, ps, pr);
        if (!pr[root])
            rc = tm_fail(err, err_len, TM_EINVAL, "grammar: rule '%s' matches no string (every "
                         "alternative recurses without end)", g->rule_name[root]);
    }
    if (!rc) {
        prune(g, ps, pr);
        find_nullable(g, ns, nr);
        rc = find_reachable(g);
    }
    if (!rc) rc = check_left_recursion(g, nr, err, err_len);
    if (!rc) rc = find_follow(g, ns, nr);
    if (!rc) rc = build_dense(g);
    free(ns);
    free(nr);
    free(ps);
    free(pr);
    return rc;
}

void tm_grammar_free_fields(tm_grammar *g) {
    for (int32_t r = 0; g->rule_name && r < g->n_rules; r++) free(g->rule_name[r]);
    free(g->rule_name);
    free(g->states);
    free(g->trans);
    free(g->calls);
    free(g->rule_start);
    free(g->follow);
    free(g->reachable);
    free(g->dense);
    free(g->dense_pool);
}

/* ---- public ---- */

int tm_grammar_parse(const char *text, size_t len, const char *root, tm_grammar **out, char *err,
                     size_t err_len) {
    *out = NULL;
    if (err && err_len) err[0] = 0;
    tm_gast ast;
    int rc = tm_gast_parse(&ast, text, len, err, err_len);
    int32_t root_id = -1;
    if (!root) root = "root";
    for (int32_t r = 0; !rc && r < ast.n_rules; r++)
        if (!strcmp(ast.rule_name[r], root)) root_id = r;
    if (!rc && root_id < 0)
        rc = tm_fail(err, err_len, TM_EINVAL, "grammar: no rule named '%s' (the start rule)", root);
    tm_grammar *g = NULL;
    if (!rc && !(g = calloc(1, sizeof *g))) rc = TM_ENOMEM;
    if (!rc) rc = tm_grammar_build(g, &ast, root_id, err, err_len);
    tm_gast_deinit(&ast);
    if (rc) {
        if (rc == TM_ENOMEM) tm_fail(err, err_len, rc, "grammar: out of memory");
        tm_grammar_destroy(g);
        return rc;
    }
    *out = g;
    return 0;
}

void tm_grammar_destroy(tm_grammar *g) {
    if (!g) return;
    tm_grammar_free_fields(g);
    free(g);
}

int tm_grammar_n_states(const tm_grammar *g) { return g->n_states; }

int tm_grammar_accepts(const tm_grammar *g, const char *s, size_t n) {
    tm_gstack st;
    tm_gbuf a = {0}, b = {0};
    int flags = 0, ok = 0;
    if (tm_gstack_init(&st)) return 0;
    int32_t top = tm_gstack_intern(&st, g->rule_start[g->root], TM_GNODE_ROOT);
    if (top >= 0 && !tm_gstack_closure(g, &st, &top, 1, &a, &flags)) {
        ok = 1;
        for (size_t i = 0; i < n && ok; i++) {
            b.n = 0;
            flags = 0;
            if (tm_gstack_advance(g, &st, a.v, a.n, (uint8_t)s[i], &b, &flags) ||
                (b.n == 0 && !(flags & TM_GSET_END)))
                ok = 0;
            tm_gbuf t = a;
            a = b;
            b = t;
        }
        ok = ok && (flags & TM_GSET_END);
    }
    free(a.v);
    free(b.v);
    tm_gstack_deinit(&st);
    return ok;
}

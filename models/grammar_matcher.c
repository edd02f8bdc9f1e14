/* grammar_matcher.c - one generation's position in a compiled grammar: the set of live
 * stacks after the text so far, the allowed-token mask, and advancing over tokens.
 *
 * The mask of a step is the union over the live stack tops of each top state's accepted
 * tokens (from the cache), plus the top's uncertain tokens that survive a simulation on
 * the real stack. End-of-generation tokens are allowed exactly when the start rule can
 * return. */
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/grammar_impl.h"

/* Compact the node store when it holds this many times the live nodes (and is large). */
#define TM_GMATCH_COMPACT_RATIO 4
#define TM_GMATCH_COMPACT_MIN 4096

struct tm_grammar_matcher {
    tm_grammar_compiled *c;    /* holds a reference */
    const tm_grammar *g;       /* c's grammar */
    const tm_grammar_vocab *v; /* c's vocabulary */
    tm_gstack st;              /* stack nodes */
    tm_gbuf tops;              /* live stack tops after the text so far */
    tm_gbuf next;              /* scratch: tops after one more byte */
    int flags;                 /* closure flags of tops (TM_GSET_END: may end here) */
    int ended;                 /* an end-of-generation token was accepted */
    int n_tokens;              /* tokens accepted (the first may drop a leading space) */
    int32_t n_live;            /* nodes kept by the last compaction */
    tm_gwalk walk;             /* uncertain tokens' simulation */
    uint32_t *tmp;             /* (mask words) scratch mask */
    int32_t *done;             /* (n_states) stamp: top state already ORed in this fill */
    int32_t fill_stamp;        /* current stamp */
};

int tm_grammar_matcher_create(tm_grammar_compiled *c, tm_grammar_matcher **out) {
    *out = NULL;
    tm_grammar_matcher *m = calloc(1, sizeof *m);
    if (!m) return TM_ENOMEM;
    m->c = tm_grammar_compiled_retain(c);
    m->g = c->g;
    m->v = c->v;
    int rc = tm_gstack_init(&m->st);
    if (!rc) rc = tm_gwalk_init(&m->walk, m->g, &m->st, m->v->max_len);
    m->tmp = malloc(tm_grammar_mask_words(m->v->n_vocab) * sizeof *m->tmp);
    m->done = calloc((size_t)m->g->n_states, sizeof *m->done);
    if (!rc && (!m->tmp || !m->done)) rc = TM_ENOMEM;
    if (!rc) {
        int32_t x = tm_gstack_intern(&m->st, m->g->rule_start[m->g->root], TM_GNODE_ROOT);
        rc = x < 0 ? x : tm_gstack_closure(m->g, &m->st, &x, 1, &m->tops, &m->flags);
    }
    if (rc) {
        tm_grammar_matcher_destroy(m);
        return rc;
    }
    *out = m;
    return 0;
}

void tm_grammar_matcher_destroy(tm_grammar_matcher *m) {
    if (!m) return;
    tm_gwalk_deinit(&m->walk);
    tm_gstack_deinit(&m->st);
    free(m->tops.v);
    free(m->next.v);
    free(m->tmp);
    free(m->done);
    tm_grammar_compiled_release(m->c);
    free(m);
}

static inline void set_bit(uint32_t *mask, int32_t id) { mask[id >> 5] |= 1u << (id & 31); }
static inline int get_bit(const uint32_t *mask, int32_t id) { return (int)(mask[id >> 5] >> (id & 31) & 1); }

/* The bytes token id stands for at this point: its piece, without the leading space the
 * detokenizer drops from a first token. */
static const uint8_t *token_bytes(const tm_grammar_matcher *m, int32_t id, int32_t *len) {
    const uint8_t *p = tm_gvocab_piece(m->v, id, len);
    if (m->n_tokens == 0 && m->v->strip_first_space && *len > 0 && p[0] == ' ') p++, (*len)--;
    return p;
}

static int is_eog(const tm_grammar_vocab *v, int32_t id) {
    for (int32_t i = 0; i < v->n_eog; i++)
        if (v->eog[i] == id) return 1;
    return 0;
}

/* ORs the cached accepted tokens of state s into mask. */
static void or_accepted(tm_grammar_matcher *m, int32_t s, uint32_t *mask) {
    const tm_gmask_entry *e = &m->c->entry[s];
    const int32_t *ids = m->c->ids + e->acc;
    size_t words = tm_grammar_mask_words(m->v->n_vocab);
    if (!e->acc_rejected) {
        for (int32_t i = 0; i < e->n_acc; i++) set_bit(mask, ids[i]);
        return;
    }
    /* accepted = text tokens - rejected - uncertain */
    memcpy(m->tmp, m->v->text_mask, words * sizeof *m->tmp);
    for (int32_t i = 0; i < e->n_acc; i++) m->tmp[ids[i] >> 5] &= ~(1u << (ids[i] & 31));
    const int32_t *unc = m->c->ids + e->unc;
    for (int32_t i = 0; i < e->n_unc; i++) {
        int32_t id = m->v->sorted[unc[i]];
        m->tmp[id >> 5] &= ~(1u << (id & 31));
    }
    for (size_t k = 0; k < words; k++) mask[k] |= m->tmp[k];
}

/* Sets the bits of top x's uncertain tokens that its real stack accepts. */
static int check_uncertain(tm_grammar_matcher *m, int32_t x, uint32_t *mask) {
    const tm_gmask_entry *e = &m->c->entry[m->st.state[x]];
    if (e->n_unc == 0) return 0;
    const int32_t *unc = m->c->ids + e->unc;
    const uint16_t *lcp = m->c->unc_lcp + e->unc;
    int32_t base = m->st.n, dead_len = 0, shared_run = 0;
    int rc = tm_gwalk_reset(&m->walk, &x, 1, 0);
    for (int32_t i = 0; i < e->n_unc && !rc; i++) {
        int32_t id = m->v->sorted[unc[i]], len;
        /* the prefix shared with the last token walked: the least lcp since then */
        int32_t shared = i == 0 ? 0 : (lcp[i] < shared_run ? lcp[i] : shared_run);
        shared_run = shared;
        if (get_bit(mask, id)) continue;
        if (dead_len > 0 && shared >= dead_len) continue; /* dies where the last one did */
        const uint8_t *p = tm_gvocab_sorted_piece(m->v, unc[i], &len);
        int cls = tm_gwalk_token(&m->walk, p, len, shared, &dead_len);
        if (cls < 0) rc = cls;
        else if (cls == TM_GWALK_ACCEPT) set_bit(mask, id);
        shared_run = len;
    }
    tm_gstack_truncate(&m->st, base);
    return rc;
}

/* First token of an SPM vocabulary: tokens starting with a space stand for their piece
 * without it. Recomputes their bits by walking them from the live tops. */
static int fix_first_space(tm_grammar_matcher *m, uint32_t *mask) {
    const tm_grammar_vocab *v = m->v;
    int32_t lo = v->first_lo[' '], hi = v->first_lo[' ' + 1], base = m->st.n, dead_len = 0;
    int rc = tm_gwalk_reset(&m->walk, m->tops.v, m->tops.n, m->flags);
    for (int32_t i = lo; i < hi && !rc; i++) {
        int32_t id = v->sorted[i], len;
        const uint8_t *p = tm_gvocab_sorted_piece(v, i, &len);
        int32_t shared = i == lo ? 0 : v->lcp[i] - 1; /* all share the space */
        mask[id >> 5] &= ~(1u << (id & 31));
        if (dead_len > 0 && shared >= dead_len) continue;
        int cls = tm_gwalk_token(&m->walk, p + 1, len - 1, shared, &dead_len);
        if (cls < 0) rc = cls;
        else if (cls == TM_GWALK_ACCEPT) set_bit(mask, id);
    }
    tm_gstack_truncate(&m->st, base);
    return rc;
}

static int popcount_mask(const uint32_t *mask, size_t words) {
    int n = 0;
    for (size_t k = 0; k < words; k++) n += __builtin_popcount(mask[k]);
    return n;
}

int tm_grammar_matcher_fill_mask(tm_grammar_matcher *m, uint32_t *mask) {
    const tm_grammar_vocab *v = m->v;
    size_t words = tm_grammar_mask_words(v->n_vocab);
    memset(mask, 0, words * sizeof *mask);
    if (m->ended) {
        for (int32_t i = 0; i < v->n_eog; i++) set_bit(mask, v->eog[i]);
        return v->n_eog;
    }
    if (++m->fill_stamp == 0) {
        memset(m->done, 0, (size_t)m->g->n_states * sizeof *m->done);
        m->fill_stamp = 1;
    }
    int rc = 0;
    for (int32_t i = 0; i < m->tops.n && !rc; i++) {
        int32_t x = m->tops.v[i], s = m->st.state[x];
        if (m->done[s] != m->fill_stamp) {
            m->done[s] = m->fill_stamp;
            or_accepted(m, s, mask);
        }
        rc = check_uncertain(m, x, mask);
    }
    if (!rc && m->n_tokens == 0 && v->strip_first_space) rc = fix_first_space(m, mask);
    if (rc) return rc;
    if (m->flags & TM_GSET_END)
        for (int32_t i = 0; i < v->n_eog; i++) set_bit(mask, v->eog[i]);
    return popcount_mask(mask, words);
}

int tm_grammar_matcher_allows(tm_grammar_matcher *m, int32_t token) {
    if (token < 0 || token >= m->v->n_vocab) return 0;
    if (is_eog(m->v, token)) return m->ended || (m->flags & TM_GSET_END);
    if (m->ended || !get_bit(m->v->text_mask, token)) return 0;
    int32_t len, dead, base = m->st.n;
    const uint8_t *p = token_bytes(m, token, &len);
    int cls = tm_gwalk_reset(&m->walk, m->tops.v, m->tops.n, m->flags);
    if (!cls) cls = tm_gwalk_token(&m->walk, p, len, 0, &dead);
    tm_gstack_truncate(&m->st, base);
    return cls == TM_GWALK_ACCEPT;
}

/* Advances the live tops over s[0..n); on failure nothing changes. */
static int advance_bytes(tm_grammar_matcher *m, const uint8_t *s, size_t n) {
    int32_t base = m->st.n;
    tm_gbuf cur = {0};
    int flags = m->flags, rc = tm_gbuf_reserve(&cur, m->tops.n);
    if (!rc) {
        if (m->tops.n) memcpy(cur.v, m->tops.v, (size_t)m->tops.n * sizeof *cur.v);
        cur.n = m->tops.n;
    }
    for (size_t i = 0; i < n && !rc; i++) {
        m->next.n = 0;
        flags = 0;
        rc = tm_gstack_advance(m->g, &m->st, cur.v, cur.n, s[i], &m->next, &flags);
        if (!rc && m->next.n == 0 && !(flags & TM_GSET_END)) rc = TM_EINVAL;
        tm_gbuf t = cur;
        cur = m->next;
        m->next = t;
    }
    if (rc) {
        free(cur.v);
        tm_gstack_truncate(&m->st, base);
        return rc;
    }
    free(m->tops.v);
    m->tops = cur;
    m->flags = flags;
    /* Nodes of dropped paths pile up over a long generation; keep the store near the
     * live size. */
    if (m->st.n > TM_GMATCH_COMPACT_MIN && m->st.n > TM_GMATCH_COMPACT_RATIO * m->n_live &&
        tm_gstack_compact(&m->st, m->tops.v, m->tops.n) == 0)
        m->n_live = m->st.n;
    return 0;
}

int tm_grammar_matcher_accept_token(tm_grammar_matcher *m, int32_t token) {
    if (token < 0 || token >= m->v->n_vocab) return TM_EINVAL;
    if (is_eog(m->v, token)) {
        if (!m->ended && !(m->flags & TM_GSET_END)) return TM_EINVAL;
        m->ended = 1;
        m->n_tokens++;
        return 0;
    }
    if (m->ended || !get_bit(m->v->text_mask, token)) return TM_EINVAL;
    int32_t len;
    const uint8_t *p = token_bytes(m, token, &len);
    int rc = advance_bytes(m, p, (size_t)len);
    if (!rc) m->n_tokens++;
    return rc;
}

int tm_grammar_matcher_accept_bytes(tm_grammar_matcher *m, const char *s, size_t n) {
    if (m->ended) return n ? TM_EINVAL : 0;
    return advance_bytes(m, (const uint8_t *)s, n);
}

int tm_grammar_matcher_can_end(const tm_grammar_matcher *m) {
    return m->ended || (m->flags & TM_GSET_END) != 0;
}

int tm_grammar_matcher_ended(const tm_grammar_matcher *m) { return m->ended; }

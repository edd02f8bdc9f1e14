/* grammar_impl.h - private to models/grammar*.c: the grammar's syntax tree, its
 * automaton, the interned stack nodes of the pushdown automaton, the vocabulary and the
 * token-mask cache. Not a public header. */
#ifndef TM_GRAMMAR_IMPL_H
#define TM_GRAMMAR_IMPL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "models/grammar.h"

/* ---- syntax tree (grammar_parse.c) ---- */

typedef enum tm_gx_kind {
    TM_GX_EMPTY,  /* matches "" */
    TM_GX_SEQ,    /* kids in order */
    TM_GX_ALT,    /* one of the kids */
    TM_GX_LIT,    /* bytes (valid UTF-8) */
    TM_GX_CLASS,  /* one code point in the ranges (negated: outside them) */
    TM_GX_REF,    /* another rule */
    TM_GX_REPEAT, /* kid between min and max times */
} tm_gx_kind;

typedef struct tm_gx {
    tm_gx_kind kind; /* what the node is */
    int32_t a;       /* SEQ/ALT: first index in kids; LIT: offset in bytes; CLASS: first pair
                        in ranges; REF: rule id; REPEAT: the repeated node */
    int32_t n;       /* SEQ/ALT: kid count; LIT: byte count; CLASS: pair count */
    int32_t min;     /* REPEAT: least count; CLASS: 1 when negated */
    int32_t max;     /* REPEAT: most count, -1 for unbounded */
} tm_gx;

/* Invariants: every index in nodes/kids/bytes/ranges is in bounds; rule_body[r] >= 0
 * for every rule after a successful parse (references to undefined rules are errors). */
typedef struct tm_gast {
    tm_gx *nodes;        /* (n_nodes) */
    int32_t n_nodes, cap_nodes;
    int32_t *kids;       /* (n_kids) node ids, children of SEQ/ALT */
    int32_t n_kids, cap_kids;
    uint8_t *bytes;      /* (n_bytes) literal bytes */
    int32_t n_bytes, cap_bytes;
    uint32_t *ranges;    /* (2 * n_ranges) code point pairs lo, hi (inclusive) */
    int32_t n_ranges, cap_ranges;
    char **rule_name;    /* (n_rules) malloc'd names */
    int32_t *rule_body;  /* (n_rules) node id, -1 while only referenced */
    int32_t *rule_line;  /* (n_rules) line of the first reference or definition */
    int32_t n_rules, cap_rules;
} tm_gast;

int tm_gast_parse(tm_gast *ast, const char *text, size_t len, char *err, size_t err_len);
void tm_gast_deinit(tm_gast *ast);

/* ---- automaton (grammar_automaton.c) ---- */

/* A byte-range transition. */
typedef struct tm_gtrans {
    uint8_t lo, hi; /* bytes lo..hi inclusive */
    int32_t to;     /* target state */
} tm_gtrans;

/* A call: enter rule, and when it returns continue at state to. */
typedef struct tm_gcall {
    int32_t rule; /* rule id */
    int32_t to;   /* state after the rule */
} tm_gcall;

/* One state of a rule's deterministic automaton. Transitions are sorted by lo and
 * disjoint; calls go to distinct rules. */
typedef struct tm_gstate {
    int32_t rule;   /* rule the state belongs to */
    int32_t tr;     /* first transition in trans */
    int32_t n_tr;   /* transitions */
    int32_t call;   /* first call in calls */
    int32_t n_call; /* calls */
    uint8_t final;  /* the rule may return here */
} tm_gstate;

/* 256-bit byte set. */
typedef struct tm_gbytes {
    uint64_t w[4]; /* bit b of w[b >> 6] */
} tm_gbytes;

static inline int tm_gbytes_has(const tm_gbytes *s, uint8_t b) { return (int)((s->w[b >> 6] >> (b & 63)) & 1); }

/* Invariants: every state can reach a final state of its rule (dead states are pruned),
 * every called rule is productive, no rule is left-recursive. */
struct tm_grammar {
    tm_gstate *states;    /* (n_states) */
    int32_t n_states;
    tm_gtrans *trans;     /* (n_trans) */
    int32_t n_trans;
    tm_gcall *calls;      /* (n_calls) */
    int32_t n_calls;
    int32_t *rule_start;  /* (n_rules) start state of each rule */
    char **rule_name;     /* (n_rules) names (for messages) */
    tm_gbytes *follow;    /* (n_rules) bytes that can come right after the rule returns */
    uint8_t *reachable;   /* (n_states) 1 if some stack can hold the state */
    int32_t *dense;       /* (n_states) for states with many ranges: offset of their 256
                             targets in dense_pool (-1: binary search the ranges) */
    int32_t *dense_pool;  /* 256 targets (or -1) per dense state */
    int32_t n_rules;
    int32_t root;         /* start rule */
};

/* Builds g's automaton from ast (which stays owned by the caller). */
int tm_grammar_build(tm_grammar *g, const tm_gast *ast, int32_t root, char *err, size_t err_len);
void tm_grammar_free_fields(tm_grammar *g);

/* The state after byte b from s, or -1. */
static inline int32_t tm_grammar_step(const tm_grammar *g, int32_t s, uint8_t b) {
    if (g->dense[s] >= 0) return g->dense_pool[g->dense[s] + b];
    const tm_gstate *st = &g->states[s];
    int32_t lo = st->tr, hi = st->tr + st->n_tr;
    while (lo < hi) { /* first range with hi >= b */
        int32_t mid = (lo + hi) >> 1;
        if (g->trans[mid].hi < b) lo = mid + 1; else hi = mid;
    }
    if (lo < st->tr + st->n_tr && g->trans[lo].lo <= b) return g->trans[lo].to;
    return -1;
}

/* ---- stack nodes and the closure (grammar_stack.c) ---- */

/* Parents that are not nodes: the bottom of a real stack, and the unknown context of a
 * state simulated alone while building the mask cache. */
enum { TM_GNODE_ROOT = -1, TM_GNODE_UNKNOWN = -2 };

/* Closure flags. */
enum {
    TM_GSET_END = 1,  /* the start rule returned: the text so far is a sentence */
    TM_GSET_EXIT = 2, /* a rule returned into an UNKNOWN parent */
};

/* Growable list of node ids. */
typedef struct tm_gbuf {
    int32_t *v;  /* (cap) ids */
    int32_t n;   /* used */
    int32_t cap; /* allocated */
} tm_gbuf;

int tm_gbuf_push(tm_gbuf *b, int32_t x); /* 0 or TM_ENOMEM */
int tm_gbuf_reserve(tm_gbuf *b, int32_t n); /* room for n more */

/* Interned stack nodes: a node is (state, parent), so a stack is its top node and equal
 * stacks are the same id. For the top, state is where the automaton is; for a node below,
 * it is the state to resume at when the rule above returns.
 * Invariants: (state, parent) pairs are unique; parent < id; the hash table holds
 * exactly the ids below n. Removal is last-in first-out only (tm_gstack_truncate), which
 * restores linear probing's table exactly. */
typedef struct tm_gstack {
    int32_t *state;    /* (cap) */
    int32_t *parent;   /* (cap) node id, TM_GNODE_ROOT or TM_GNODE_UNKNOWN */
    uint32_t *mark;    /* (cap) closure visit stamps */
    int32_t n, cap;    /* nodes, allocated */
    int32_t *slots;    /* (slot_mask + 1) node id or -1 */
    uint32_t slot_mask;/* slots - 1, a power of two at least 2 * cap */
    uint32_t gen;      /* stamp of the current closure */
    tm_gbuf work;      /* closure work list */
    tm_gbuf seeds;     /* advance's seeds */
} tm_gstack;

int tm_gstack_init(tm_gstack *st);
void tm_gstack_deinit(tm_gstack *st);
/* Id of the node (state, parent), created when new. TM_ENOMEM or TM_ERANGE (over the
 * node limit). */
int32_t tm_gstack_intern(tm_gstack *st, int32_t state, int32_t parent);
/* Removes the nodes with ids >= n (those created after n was read). */
void tm_gstack_truncate(tm_gstack *st, int32_t n);

/* Keeps only the nodes on the stacks of tops[0..n), renumbered (parents first), and
 * rewrites tops to the new ids. 0 or TM_ENOMEM (nothing changed). */
int tm_gstack_compact(tm_gstack *st, int32_t *tops, int n);
/* Appends to out the closure of seeds (node ids): each node reachable without a byte by
 * entering called rules and returning from finished ones, kept when its state consumes
 * bytes, each once. Sets TM_GSET_* bits in *flags. 0 or a negative TM_E*. */
int tm_gstack_closure(const tm_grammar *g, tm_gstack *st, const int32_t *seeds, int n_seeds,
                      tm_gbuf *out, int *flags);
/* The tops in[0..n) over byte b, closed, appended to out. */
int tm_gstack_advance(const tm_grammar *g, tm_gstack *st, const int32_t *in, int n, uint8_t b,
                      tm_gbuf *out, int *flags);

/* ---- vocabulary (grammar_vocab.c) ---- */

/* Invariants: sorted holds each text token once, ordered by its bytes (memcmp, shorter
 * first on a tie); lcp[i] is the common prefix of sorted[i-1] and sorted[i] (0 for i=0);
 * text_mask has exactly the text tokens' bits. */
struct tm_grammar_vocab {
    atomic_int refs;       /* the creator's and one per compiled grammar */
    int32_t n_vocab;       /* ids 0..n_vocab-1 */
    char *bytes;           /* pieces back to back */
    uint32_t *off;         /* (n_vocab + 1) token i's bytes are [off[i], off[i+1]) */
    int32_t *sorted;       /* (n_text) text tokens in byte order */
    char *sorted_bytes;    /* their pieces back to back in that order (walked in sequence) */
    uint32_t *sorted_off;  /* (n_text + 1) sorted token i's bytes are [sorted_off[i], sorted_off[i+1]) */
    uint16_t *lcp;         /* (n_text) */
    int32_t n_text;        /* text tokens */
    int32_t first_lo[257]; /* tokens whose first byte is b are sorted[first_lo[b] .. first_lo[b+1]) */
    uint32_t *text_mask;   /* (mask words) bit set for text tokens */
    int32_t *eog;          /* (n_eog) end-of-generation token ids */
    int32_t n_eog;
    int32_t max_len;       /* longest text piece in bytes */
    int strip_first_space; /* the detokenizer drops a leading space of the first token */
};

static inline const uint8_t *tm_gvocab_piece(const tm_grammar_vocab *v, int32_t id, int32_t *len) {
    *len = (int32_t)(v->off[id + 1] - v->off[id]);
    return (const uint8_t *)v->bytes + v->off[id];
}

/* The piece of the token at sorted position i (sequential in memory along the order). */
static inline const uint8_t *tm_gvocab_sorted_piece(const tm_grammar_vocab *v, int32_t i, int32_t *len) {
    *len = (int32_t)(v->sorted_off[i + 1] - v->sorted_off[i]);
    return (const uint8_t *)v->sorted_bytes + v->sorted_off[i];
}

/* ---- walking sorted tokens with shared prefixes (grammar_walk.c) ---- */

/* The simulation of one token after another in sorted order: level k holds the tops
 * after the token's first k bytes, so a token reuses the levels of the prefix it shares
 * with the previous one. */
typedef struct tm_gwalk {
    const tm_grammar *g;  /* borrowed */
    tm_gstack *st;        /* borrowed: where the nodes live */
    tm_gbuf tops;         /* every level's tops back to back */
    int32_t *start;       /* (max_len + 2) level k is tops.v[start[k] .. start[k+1]) */
    int32_t *ckpt;        /* (max_len + 2) st->n before level k was built */
    uint8_t *flags;       /* (max_len + 1) closure flags of level k */
    uint8_t *pending;     /* (max_len + 1) an exit before level k matters (mask compile) */
    uint8_t *single;      /* (max_len + 1) level k is one top held as (single_state, single_parent)
                             without a node: inside a rule, where no call or return happens,
                             the walk then needs no node store at all */
    int32_t *single_state;  /* (max_len + 1) that top's state */
    int32_t *single_parent; /* (max_len + 1) and its parent */
    int32_t depth;        /* levels 0..depth are valid */
    int32_t max_len;      /* longest token */
    const tm_gbytes *follow; /* bytes that may follow an exit, NULL: exits are not tracked */
} tm_gwalk;

int tm_gwalk_init(tm_gwalk *w, const tm_grammar *g, tm_gstack *st, int32_t max_len);
void tm_gwalk_deinit(tm_gwalk *w);
/* Level 0 := tops[0..n) (already closed) with flags; forgets the deeper levels. Their
 * nodes are the caller's to remove (tm_gstack_truncate to its own checkpoint). */
int tm_gwalk_reset(tm_gwalk *w, const int32_t *tops, int n, int flags);
/* Outcome of one token. */
enum { TM_GWALK_REJECT = 0, TM_GWALK_ACCEPT = 1, TM_GWALK_UNCERTAIN = 2 };
/* Runs token s[0..len) whose first `shared` bytes equal the previous token's. Returns
 * TM_GWALK_* or a negative TM_E*. *dead_len: when the token died inside, the prefix
 * length at which it died (every token extending that prefix ends the same way), else 0. */
int tm_gwalk_token(tm_gwalk *w, const uint8_t *s, int32_t len, int32_t shared, int32_t *dead_len);

/* ---- the compiled grammar and its mask cache (grammar_masks.c) ---- */

/* Token classes of one state (for states that consume bytes). */
typedef struct tm_gmask_entry {
    int64_t acc;          /* first index in ids of the accepted (or rejected) token ids */
    int32_t n_acc;        /* count */
    uint8_t acc_rejected; /* 1: the list holds the rejected ones (it was shorter) */
    int64_t unc;          /* first index in ids of the uncertain tokens' sorted positions */
    int32_t n_unc;        /* count */
} tm_gmask_entry;

struct tm_grammar_compiled {
    atomic_int refs;          /* references */
    tm_grammar *g;            /* owned */
    tm_grammar_vocab *v;      /* holds a reference */
    tm_gmask_entry *entry;    /* (g->n_states) */
    int32_t *ids;             /* (n_ids) the entries' lists */
    int64_t n_ids;
    uint16_t *unc_lcp;        /* (n_ids) for uncertain lists: prefix shared with the previous one */
};

#endif

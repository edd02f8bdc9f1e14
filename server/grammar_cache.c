/* grammar_cache.c - compiled grammars by hash of their text, least recently used out. */
#include "server/grammar_cache.h"

#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "common/common.h"

/* Invariant: the list runs from most to least recently used; bytes is the sum of its
 * entries' sizes. */
typedef struct entry {
    XXH128_hash_t key;           /* hash of text */
    char *text;                  /* the grammar text (compared on a hit) */
    size_t len;                  /* its length */
    tm_grammar_compiled *g;      /* one reference held by the cache */
    size_t bytes;                /* the grammar's size, for the budget */
    struct entry *prev, *next;   /* recency list */
} entry;

struct tm_grammar_cache {
    tm_grammar_vocab *v;         /* holds a reference */
    size_t max_bytes;            /* budget */
    entry *head, *tail;          /* most / least recently used */
    tm_grammar_cache_stats st;   /* counters */
};

int tm_grammar_cache_create(tm_grammar_vocab *v, size_t max_bytes, tm_grammar_cache **out) {
    tm_grammar_cache *c = calloc(1, sizeof *c);
    if (!c) return TM_ENOMEM;
    c->v = tm_grammar_vocab_retain(v);
    c->max_bytes = max_bytes;
    *out = c;
    return 0;
}

static void unlink_entry(tm_grammar_cache *c, entry *e) {
    if (e->prev) e->prev->next = e->next; else c->head = e->next;
    if (e->next) e->next->prev = e->prev; else c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(tm_grammar_cache *c, entry *e) {
    e->next = c->head;
    e->prev = NULL;
    if (c->head) c->head->prev = e; else c->tail = e;
    c->head = e;
}

static void drop(tm_grammar_cache *c, entry *e) {
    unlink_entry(c, e);
    c->st.bytes -= e->bytes;
    c->st.n_entries--;
    tm_grammar_compiled_release(e->g);
    free(e->text);
    free(e);
}

void tm_grammar_cache_destroy(tm_grammar_cache *c) {
    if (!c) return;
    while (c->head) drop(c, c->head);
    tm_grammar_vocab_destroy(c->v);
    free(c);
}

static entry *find_entry(const tm_grammar_cache *c, const char *text, size_t len) {
    XXH128_hash_t key = XXH3_128bits(text, len);
    for (entry *e = c->head; e; e = e->next)
        if (XXH128_isEqual(e->key, key) && e->len == len && !memcmp(e->text, text, len)) return e;
    return NULL;
}

int tm_grammar_cache_has(const tm_grammar_cache *c, const char *text, size_t len) {
    return find_entry(c, text, len) != NULL;
}

/* The cached grammar of text (a new reference, counted as a hit), or NULL. */
static tm_grammar_compiled *cache_find(tm_grammar_cache *c, const char *text, size_t len) {
    entry *e = find_entry(c, text, len);
    if (!e) return NULL;
    unlink_entry(c, e);
    push_front(c, e);
    c->st.hits++;
    return tm_grammar_compiled_retain(e->g);
}

int tm_grammar_cache_compile(tm_grammar_vocab *v, const char *text, size_t len,
                             tm_grammar_compiled **out, char *err, size_t err_len) {
    *out = NULL;
    tm_grammar *g = NULL;
    int rc = tm_grammar_parse(text, len, NULL, &g, err, err_len);
    if (!rc) rc = tm_grammar_compile(g, v, out, err, err_len);
    return rc;
}

tm_grammar_vocab *tm_grammar_cache_vocab(tm_grammar_cache *c) { return c->v; }

void tm_grammar_cache_put(tm_grammar_cache *c, const char *text, size_t len, tm_grammar_compiled *g,
                          double compile_s) {
    c->st.misses++;
    c->st.compile_s += compile_s;
    entry *e = find_entry(c, text, len) ? NULL : calloc(1, sizeof *e);
    char *copy = e ? malloc(len + 1) : NULL;
    if (!e || !copy) { /* already there, or no memory: served uncached */
        free(e);
        tm_grammar_compiled_release(g);
        return;
    }
    memcpy(copy, text, len);
    copy[len] = 0;
    e->key = XXH3_128bits(text, len);
    e->text = copy;
    e->len = len;
    e->g = g;
    e->bytes = tm_grammar_compiled_bytes(g) + len;
    push_front(c, e);
    c->st.bytes += e->bytes;
    c->st.n_entries++;
    /* Over budget: the least recently used go (never the one just added). */
    while (c->st.bytes > c->max_bytes && c->tail != e) drop(c, c->tail);
}

int tm_grammar_cache_get(tm_grammar_cache *c, const char *text, size_t len,
                         tm_grammar_compiled **out, int *hit, char *err, size_t err_len) {
    *hit = (*out = cache_find(c, text, len)) != NULL;
    if (*hit) return 0;
    double t0 = tm_time_s();
    tm_grammar_compiled *g = NULL;
    int rc = tm_grammar_cache_compile(c->v, text, len, &g, err, err_len);
    if (rc) {
        c->st.misses++;
        c->st.compile_s += tm_time_s() - t0;
        return rc;
    }
    *out = tm_grammar_compiled_retain(g); /* the caller's; put takes the other */
    tm_grammar_cache_put(c, text, len, g, tm_time_s() - t0);
    return 0;
}

void tm_grammar_cache_get_stats(const tm_grammar_cache *c, tm_grammar_cache_stats *out) { *out = c->st; }

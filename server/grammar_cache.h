/* grammar_cache.h - compiled grammars for structured output, kept between requests.
 *
 * Compiling a grammar against the vocabulary (its token-mask cache) is the expensive
 * step, and applications send the same schema over and over. Entries are keyed by a
 * 128-bit hash of the grammar text, which the front ends derive deterministically from
 * the schema (or regex, choices, grammar) and its options, and checked against the full
 * text on a hit. Least recently used entries go when the cache exceeds its byte budget.
 * One thread (the server's loop thread), except tm_grammar_cache_compile, which any
 * thread may run; the compiled grammars it hands out are reference counted and may be
 * used anywhere. */
#ifndef TM_GRAMMAR_CACHE_H
#define TM_GRAMMAR_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "models/grammar.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_grammar_cache tm_grammar_cache;

typedef struct tm_grammar_cache_stats {
    uint64_t hits;        /* lookups served from the cache */
    uint64_t misses;      /* lookups that compiled */
    int n_entries;        /* grammars held */
    size_t bytes;         /* their mask caches */
    double compile_s;     /* seconds spent compiling, all misses */
} tm_grammar_cache_stats;

/* A cache over vocabulary v (the cache holds a reference) holding up to max_bytes of
 * compiled grammars. TM_ENOMEM. */
int tm_grammar_cache_create(tm_grammar_vocab *v, size_t max_bytes, tm_grammar_cache **out);
void tm_grammar_cache_destroy(tm_grammar_cache *c); /* NULL is a no-op */

/* The compiled grammar of text[0..len) (a new reference the caller releases), from the
 * cache or compiled now (*hit says which). Compile errors (tm_grammar_parse's) with err. */
int tm_grammar_cache_get(tm_grammar_cache *c, const char *text, size_t len,
                         tm_grammar_compiled **out, int *hit, char *err, size_t err_len);

/* The same in steps, for compiling away from the cache's thread: */
/* whether text is cached (counts nothing, moves nothing); */
int tm_grammar_cache_has(const tm_grammar_cache *c, const char *text, size_t len);
/* parse and compile text over v, touching no cache (any thread; v is the cache's
 * tm_grammar_cache_vocab, whose reference the caller holds while this runs); */
int tm_grammar_cache_compile(tm_grammar_vocab *v, const char *text, size_t len,
                             tm_grammar_compiled **out, char *err, size_t err_len);
tm_grammar_vocab *tm_grammar_cache_vocab(tm_grammar_cache *c);
/* keep g (compiled from text in compile_s seconds, counted as a miss); takes the
 * caller's reference. An entry for text that arrived meanwhile stays, and g is released. */
void tm_grammar_cache_put(tm_grammar_cache *c, const char *text, size_t len, tm_grammar_compiled *g,
                          double compile_s);
void tm_grammar_cache_get_stats(const tm_grammar_cache *c, tm_grammar_cache_stats *out);

#ifdef __cplusplus
}
#endif
#endif

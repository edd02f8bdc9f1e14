/* grammar.h - constrained decoding: a context-free grammar over bytes, compiled against a
 * tokenizer's vocabulary into per-position token masks.
 *
 * Input is grammar text in the GBNF form documented in docs/grammar.md (rules
 * `name ::= expr`, "literals", [classes], (groups), | * + ? {m,n}); the front ends in
 * server/ (JSON Schema, regex, choice) emit it. Each rule becomes a deterministic
 * automaton over bytes whose edges also call other rules; a matcher runs the pushdown
 * automaton over the bytes of the tokens generated so far (UTF-8 and tokens that span
 * several terminals need nothing special: everything is bytes).
 *
 * The token mask follows xgrammar's adaptive token-mask cache: at compile time every
 * automaton state classifies every token as accepted (the token is consumed inside the
 * state's own rule, whatever the stack below), rejected, or uncertain (it runs past the
 * rule's end, so the stack decides). At run time a step ORs the accepted sets of the
 * states on top of the live stacks and checks only the uncertain tokens against the full
 * stack. End-of-generation tokens are allowed exactly when the grammar can accept.
 *
 * Lifetimes and threads: tm_grammar_vocab is built once per tokenizer and is immutable;
 * tm_grammar_compiled is immutable after compile and reference counted, so a cache and
 * any number of matchers on other threads may share it; a matcher belongs to one thread
 * at a time. */
#ifndef TM_GRAMMAR_H
#define TM_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>

#include "models/sampler.h"
#include "models/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits that keep a hostile grammar from taking unbounded memory or time. */
enum {
    TM_GRAMMAR_MAX_TEXT = 4 << 20,      /* bytes of grammar text */
    TM_GRAMMAR_MAX_REPEAT = 1000,       /* m and n of x{m,n} */
    TM_GRAMMAR_MAX_STATES = 1 << 20,    /* automaton states after expansion */
    TM_GRAMMAR_MAX_NESTING = 200,       /* parentheses */
};

typedef struct tm_grammar tm_grammar;
typedef struct tm_grammar_vocab tm_grammar_vocab;
typedef struct tm_grammar_compiled tm_grammar_compiled;
typedef struct tm_grammar_matcher tm_grammar_matcher;

/* Parses GBNF text (len bytes) and builds its automaton; root names the start rule
 * (NULL: "root"). TM_EINVAL with the line and column in err for a syntax error, an
 * undefined rule, left recursion, or a grammar that matches nothing; TM_ERANGE past a
 * limit above; TM_ENOMEM. Any thread. */
int tm_grammar_parse(const char *text, size_t len, const char *root, tm_grammar **out,
                     char *err, size_t err_len);
void tm_grammar_destroy(tm_grammar *g); /* NULL is a no-op */
int tm_grammar_n_states(const tm_grammar *g); /* automaton states (for reports) */

/* Reference check, no vocabulary: 1 if the grammar accepts exactly the bytes s[0..n),
 * 0 if not (the slow path every token mask is tested against). Any thread. */
int tm_grammar_accepts(const tm_grammar *g, const char *s, size_t n);

/* The vocabulary as the grammar sees it: each token's bytes (its decoded piece), sorted
 * so tokens sharing a prefix are simulated once. Control tokens, tokens that decode to
 * nothing, and end-of-generation tokens are never text; the last are allowed only at the
 * end. tok is borrowed for the call only. */
int tm_grammar_vocab_create(const tm_tokenizer *tok, tm_grammar_vocab **out, char *err,
                            size_t err_len);
/* The same from raw pieces (tests, synthetic vocabularies): token i stands for
 * pieces[i][0..lens[i]) when is_text[i]; eog[0..n_eog) end generation; strip_first_space
 * as tm_tokenizer_strips_first_space. Everything is copied. */
int tm_grammar_vocab_create_pieces(int32_t n_vocab, const char *const *pieces, const size_t *lens,
                                   const uint8_t *is_text, const int32_t *eog, int32_t n_eog,
                                   int strip_first_space, tm_grammar_vocab **out, char *err,
                                   size_t err_len);
/* Drops a reference (the creator holds one; each compiled grammar holds its own, so the
 * vocabulary lives as long as any grammar compiled over it). NULL is a no-op. */
void tm_grammar_vocab_destroy(tm_grammar_vocab *v);
tm_grammar_vocab *tm_grammar_vocab_retain(tm_grammar_vocab *v); /* atomic: any thread */
int tm_grammar_vocab_n_vocab(const tm_grammar_vocab *v);

/* Builds the token-mask cache of g over v. Takes g over (also on failure) and holds a
 * reference to v. The result has one reference. TM_ENOMEM. Any thread; the expensive
 * step (time grows with states x vocabulary prefixes). */
int tm_grammar_compile(tm_grammar *g, tm_grammar_vocab *v, tm_grammar_compiled **out,
                       char *err, size_t err_len);
/* Reference counting (atomic: any thread). Release of the last reference frees. */
tm_grammar_compiled *tm_grammar_compiled_retain(tm_grammar_compiled *c);
void tm_grammar_compiled_release(tm_grammar_compiled *c); /* NULL is a no-op */
const tm_grammar *tm_grammar_compiled_grammar(const tm_grammar_compiled *c);
/* Bytes held by the mask cache (for the compile cache's budget and reports). */
size_t tm_grammar_compiled_bytes(const tm_grammar_compiled *c);

/* A matcher: one generation's position in the grammar. Holds a reference to c. */
int tm_grammar_matcher_create(tm_grammar_compiled *c, tm_grammar_matcher **out);
void tm_grammar_matcher_destroy(tm_grammar_matcher *m); /* NULL is a no-op */

/* Words of a token bitmask: bit (id & 31) of word (id >> 5) is token id. */
static inline size_t tm_grammar_mask_words(int n_vocab) { return ((size_t)n_vocab + 31) / 32; }

/* Fills mask (tm_grammar_mask_words(n_vocab) words) with the tokens allowed next: text
 * tokens that keep the grammar alive, end-of-generation tokens when it can accept. After
 * the end was accepted only end-of-generation tokens stay allowed. Returns the number of
 * allowed tokens, or TM_ENOMEM. */
int tm_grammar_matcher_fill_mask(tm_grammar_matcher *m, uint32_t *mask);
/* 1 if token is allowed next (one token's simulation: the fast check for an argmax). */
int tm_grammar_matcher_allows(tm_grammar_matcher *m, int32_t token);
/* Advances over token: TM_EINVAL (state unchanged) when it is not allowed, TM_ENOMEM. An
 * end-of-generation token, allowed when the grammar can accept, ends the matcher. */
int tm_grammar_matcher_accept_token(tm_grammar_matcher *m, int32_t token);
/* Advances over raw bytes (tests, forced text): TM_EINVAL (state unchanged) if they
 * leave the grammar. */
int tm_grammar_matcher_accept_bytes(tm_grammar_matcher *m, const char *s, size_t n);
/* 1 if the text so far is a complete sentence of the grammar. */
int tm_grammar_matcher_can_end(const tm_grammar_matcher *m);
/* 1 once an end-of-generation token was accepted. */
int tm_grammar_matcher_ended(const tm_grammar_matcher *m);

/* A logit processor (models/sampler.h) over its own matcher of c (it holds a reference):
 * tokens the grammar does not allow get -INFINITY, end-of-generation tokens only when it
 * can end, and allows() lets a greedy sequence keep the batched argmax when the grammar
 * accepts it. A request whose vocabulary cannot continue the text ends (apply fails).
 * TM_ENOMEM. */
int tm_grammar_processor_create(tm_grammar_compiled *c, tm_logit_processor *out);

#ifdef __cplusplus
}
#endif
#endif

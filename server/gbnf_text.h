/* gbnf_text.h - what the structured-output front ends (JSON Schema, regex, choice) share
 * to write grammar text (docs/grammar.md): a growable buffer, GBNF literals and character
 * classes with their escapes, and sets of code points.
 *
 * Allocation failures are sticky: the buffer records them and every later write is a
 * no-op, so writers check once at the end (tm_gtext_take). */
#ifndef TM_GBNF_TEXT_H
#define TM_GBNF_TEXT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_gtext {
    char *s;    /* text, NUL-terminated when non-NULL */
    size_t n;   /* bytes used */
    size_t cap; /* bytes allocated */
    int oom;    /* an allocation failed; the text is incomplete */
} tm_gtext;

void tm_gtext_puts(tm_gtext *b, const char *s);
void tm_gtext_put(tm_gtext *b, const char *s, size_t n);
void tm_gtext_printf(tm_gtext *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A quoted GBNF literal of the bytes s[0..n) (valid UTF-8), escaped. */
void tm_gtext_literal(tm_gtext *b, const char *s, size_t n);
/* Returns the text (caller frees) or NULL after an allocation failure; b is reset. */
char *tm_gtext_take(tm_gtext *b);
void tm_gtext_free(tm_gtext *b);

/* A set of code points as sorted, disjoint, non-adjacent inclusive ranges. */
typedef struct tm_cset {
    uint32_t (*r)[2]; /* (n) ranges lo, hi */
    int n, cap;       /* used, allocated */
    int oom;          /* an allocation failed */
} tm_cset;

void tm_cset_add(tm_cset *c, uint32_t lo, uint32_t hi);
void tm_cset_add_set(tm_cset *c, const tm_cset *o);
/* Complement within U+0000..U+10FFFF. */
void tm_cset_negate(tm_cset *c);
/* Keeps only code points in lo..hi. */
void tm_cset_clip(tm_cset *c, uint32_t lo, uint32_t hi);
int tm_cset_has(const tm_cset *c, uint32_t cp);
void tm_cset_free(tm_cset *c);
/* The set as a GBNF class ("[...]"), or nothing when it is empty (returns 0 then). */
int tm_gtext_class(tm_gtext *b, const tm_cset *c);

#ifdef __cplusplus
}
#endif
#endif

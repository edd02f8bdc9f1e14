/* regex_gbnf.h - a regular expression (the syntax of Python's re, which vLLM's `regex`
 * and JSON Schema's `pattern` are checked with) as a GBNF expression for the grammar
 * engine.
 *
 * The expression matches the whole text (the anchors ^ $ \A \Z are accepted at the ends
 * and mean nothing more). What it generates always matches the regex in Python; where
 * Python's meaning is Unicode-wide and the grammar's is not, the grammar takes the ASCII
 * part: \d is [0-9], \w is [A-Za-z0-9_], \s the ASCII spaces, and \D, \W, \S and negated
 * classes holding one of them are limited to ASCII.
 *
 * Refused with TM_EUNSUPPORTED and the feature named: lookaround, backreferences,
 * conditionals, inline flags, word boundaries, anchors inside the pattern, possessive
 * quantifiers, \N{...}. TM_EINVAL for a malformed regex. Pure functions; any thread. */
#ifndef TM_REGEX_GBNF_H
#define TM_REGEX_GBNF_H

#include <stddef.h>

#include "server/gbnf_text.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Appends the expression for re[0..len) to out. json_string: the text will sit inside a
 * JSON string literal, so characters JSON escapes (" \ and U+0000..U+001F) are written
 * in their escaped form and the expression matches the JSON-encoded text. */
int tm_regex_to_gbnf(const char *re, size_t len, int json_string, tm_gtext *out, char *err,
                     size_t err_len);

/* Appends the GBNF expression for one code-point set inside a JSON string (or plainly
 * when !json_string); what the JSON Schema front end uses for its own classes. */
void tm_gbnf_json_set(tm_gtext *out, const tm_cset *set, int json_string);

#ifdef __cplusplus
}
#endif
#endif

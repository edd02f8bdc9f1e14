/* structured.h - a request's structured-output constraint, from the fields OpenAI and
 * vLLM define, turned into grammar text (docs/grammar.md) by the front ends:
 *
 *   response_format: {"type": "json_object"}                      any JSON object
 *   response_format: {"type": "json_schema", "json_schema": {"schema": ..., "strict": ...}}
 *   structured_outputs: {"json" | "regex" | "choice" | "grammar" | "json_object": ...,
 *                        "disable_any_whitespace": bool}           vLLM (current)
 *   guided_json, guided_regex, guided_choice, guided_grammar       vLLM (before 0.12)
 *
 * One constraint per request. A constraint that cannot be honoured is an error naming
 * the field and the feature; a request is never served unconstrained instead. Pure
 * functions (no engine, no sockets); any thread. */
#ifndef TM_STRUCTURED_H
#define TM_STRUCTURED_H

#include <stddef.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tm_so_kind {
    TM_SO_NONE = 0,        /* no constraint */
    TM_SO_JSON_OBJECT = 1, /* any JSON object */
    TM_SO_JSON_SCHEMA = 2, /* instances of a JSON schema */
    TM_SO_REGEX = 3,       /* text matching a regex */
    TM_SO_CHOICE = 4,      /* one of a list of strings */
    TM_SO_GRAMMAR = 5,     /* a GBNF grammar given by the client */
} tm_so_kind;

typedef struct tm_so_spec {
    tm_so_kind kind; /* which constraint */
    char *gbnf;      /* its grammar text, malloc'd (NULL for TM_SO_NONE) */
    const char *param; /* the request field it came from (static string) */
} tm_so_spec;

/* Reads the constraint fields of request object root into out. TM_EINVAL with err and
 * *param (the field) for a malformed or contradictory field, TM_EUNSUPPORTED for a
 * feature the front ends refuse (named in err), TM_ENOMEM. out needs tm_so_spec_free
 * whatever the result. */
int tm_structured_parse(const json_t *root, tm_so_spec *out, const char **param, char *err,
                        size_t err_len);
void tm_so_spec_free(tm_so_spec *s);

/* Grammar text for one tool call, for `strict: true` functions or a forced tool_choice:
 * prefix, then {"name": "<function>", "arguments": <its parameters>}, then suffix, where
 * the function is the one named `only` or, when only is NULL, any of tools (OpenAI's
 * [{"type": "function", "function": {"name", "parameters"}}]). prefix and suffix are the
 * chat format's markup around a call (Hermes: "<tool_call>\n" and "\n</tool_call>"); they
 * must be text the vocabulary can spell, not control tokens. $refs inside each function's
 * parameters keep working. TM_EINVAL (malformed tools, unknown name), TM_EUNSUPPORTED (a
 * parameters schema outside the subset, named in err), TM_ENOMEM. */
int tm_structured_tool_gbnf(const json_t *tools, const char *only, const char *prefix,
                            const char *suffix, char **gbnf, char *err, size_t err_len);
const char *tm_so_kind_name(tm_so_kind k); /* "json_schema", ... for logs and metrics */

#ifdef __cplusplus
}
#endif
#endif

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

#include "server/tool_parser.h"

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
    TM_SO_TOOL_CALL = 6,   /* tool calls (a forced tool_choice, or strict functions) */
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

/* How a tool-call grammar treats the text around the calls. */
typedef enum tm_tool_grammar_mode {
    TM_TOOL_GRAMMAR_FORCED = 0,   /* the reply is calls only: one, or several when the
                                     markup has a separator (tool_choice "required") */
    TM_TOOL_GRAMMAR_OPTIONAL = 1, /* free text that never spells the markup's trigger, then
                                     optionally the calls (tool_choice "auto" with a
                                     `strict: true` function) */
} tm_tool_grammar_mode;

/* Grammar text for tool calls written in markup m (tool_parser.h):
 *   prefix call (sep call)* suffix
 * where a call is {"<args_key>" ...} as the parser reads it: {"name": "<function>",
 * "<args_key>": <instance of its parameters>}, for the function named `only` or, when only
 * is NULL, any of tools (OpenAI's [{"type": "function", "function": {"name", "parameters",
 * "strict"}}]). In TM_TOOL_GRAMMAR_OPTIONAL mode the calls may follow free text or be
 * absent, and only functions with "strict": true are held to their parameters (the others
 * take any JSON object); it needs m->trigger. $refs inside parameters keep working.
 * TM_EINVAL (malformed tools, unknown name, no trigger), TM_EUNSUPPORTED (a parameters
 * schema outside the subset: err names the feature and the function), TM_ENOMEM. */
int tm_structured_tool_gbnf(const json_t *tools, const char *only, const tm_tool_markup *m,
                            tm_tool_grammar_mode mode, char **gbnf, char *err, size_t err_len);
/* Grammar text for the arguments of function `name` alone: instances of its parameters
 * schema (a forced tool_choice, answered as vLLM does: the reply is the arguments).
 * Errors as above. */
int tm_structured_tool_args_gbnf(const json_t *tools, const char *name, char **gbnf, char *err,
                                 size_t err_len);
/* 1 when some function in tools has "strict": true. */
int tm_structured_tools_strict(const json_t *tools);
const char *tm_so_kind_name(tm_so_kind k); /* "json_schema", ... for logs and metrics */

#ifdef __cplusplus
}
#endif
#endif

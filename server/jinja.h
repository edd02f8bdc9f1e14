/* jinja.h - an interpreter for the Jinja subset that chat templates use.
 *
 * It renders a model's own `tokenizer.chat_template` the way Hugging Face transformers
 * (and so vLLM) do: jinja2's ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks
 * and the loopcontrols extension, `tojson` as Python's json.dumps (ensure_ascii off), and
 * the globals raise_exception and strftime_now. Supported:
 *   statements   if/elif/else, for (loop.*, `if` filter, else, break, continue), set (names,
 *                tuples, namespace attributes, blocks), macro, with, filter, raw, generation
 *   expressions  Python's literals, operators, calls, subscripts, slices, conditionals,
 *                filters and tests (see jinja_builtins.c for the list), str/list/dict methods
 * Values print as Python prints them (None, True, 1.0, ['a'], {'k': 1}).
 *
 * Hostile templates are expected (a GGUF file or --chat-template from anyone): parsing and
 * rendering are bounded in steps, output, memory and nesting, never crash, and report
 * every failure as an error. */
#ifndef TM_JINJA_H
#define TM_JINJA_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_jinja_limits {
    uint64_t max_steps;      /* evaluation steps: nodes visited plus builtin work per 64 bytes */
    size_t max_output_bytes; /* the rendered text, and any captured block or macro output */
    size_t max_memory_bytes; /* all values made while rendering (or the tree while parsing) */
    int max_depth;           /* nesting of the template's syntax, and of macro calls */
} tm_jinja_limits;

/* 4M steps, 16 MiB output, 256 MiB memory, depth 64. */
void tm_jinja_limits_default(tm_jinja_limits *l);

typedef struct tm_jinja tm_jinja; /* a parsed template; immutable, so renders may share it */

/* Parses src (len bytes; NUL bytes allowed). lim may be NULL for the defaults. Fails with
 * TM_EINVAL and a message naming the line ("line 3: unexpected '}'"), TM_ERANGE when the
 * template nests deeper than lim->max_depth, TM_ENOMEM. */
int tm_jinja_parse(const char *src, size_t len, const tm_jinja_limits *lim, tm_jinja **out,
                   char *err, size_t err_len);
void tm_jinja_destroy(tm_jinja *t);

typedef enum tm_jinja_failure {
    TM_JINJA_OK = 0,
    TM_JINJA_RAISED = 1, /* the template called raise_exception(message): err is message */
    TM_JINJA_ERROR = 2,  /* a runtime error (undefined, type, unsafe attribute, ...) */
    TM_JINJA_LIMIT = 3,  /* a limit was reached */
} tm_jinja_failure;

/* Renders t with the variables of vars (a JSON object, borrowed for the call: messages,
 * tools, add_generation_prompt, bos_token, ...). now is the time strftime_now formats
 * (NULL: the local time at the call). On success *out is a malloc'd, NUL-terminated text
 * of *out_len bytes (it may hold NUL bytes from the inputs). On failure returns TM_EINVAL
 * (TM_ERANGE for a limit, TM_ENOMEM), err holds the message, and *failure (may be NULL)
 * says which kind. Any thread; t is only read. */
int tm_jinja_render(const tm_jinja *t, const json_t *vars, const tm_jinja_limits *lim,
                    const struct tm *now, char **out, size_t *out_len,
                    tm_jinja_failure *failure, char *err, size_t err_len);

/* json.dumps(v, ensure_ascii=False) as Python writes it (", " and ": " separators, floats
 * as repr): what vLLM sends for values it re-serializes, e.g. tool call arguments. *out is
 * malloc'd (*len bytes). TM_EINVAL (too deep), TM_ENOMEM. */
int tm_jinja_json_dumps(const json_t *v, char **out, size_t *len);

#ifdef __cplusplus
}
#endif
#endif

/* tool_parser.h - a model's generated text -> content and OpenAI tool calls.
 *
 * Formats (vLLM's --tool-call-parser names):
 *   hermes       <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>, repeated
 *                (Qwen2.5, Qwen3, Hermes); text before the first call is content
 *   llama3_json  {"name": ..., "parameters": {...}} as the whole output, optionally after
 *                <|python_tag|>, several separated by ';' (Llama 3.1/3.2)
 *   mistral      [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...] (Mistral v3), or
 *                [TOOL_CALLS]name[ARGS]{...} (later Mistral tokenizers)
 * The format is chosen by --tool-call-parser or recognised from the chat template.
 *
 * The parser is incremental: text deltas go in as the engine produces them; content
 * deltas and tool-call deltas come out, so that a stream never shows tool-call markup as
 * content. Text that may be the start of a marker is held back until it is decided. A
 * call's arguments are re-serialized as Python's json.dumps writes them (what vLLM sends).
 * Output that looks like a call but does not parse is content, as vLLM treats it. */
#ifndef TM_TOOL_PARSER_H
#define TM_TOOL_PARSER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tm_tool_format {
    TM_TOOLS_NONE = 0,
    TM_TOOLS_HERMES,
    TM_TOOLS_LLAMA3_JSON,
    TM_TOOLS_MISTRAL,
} tm_tool_format;

/* "hermes", "llama3_json", "mistral" -> format; TM_ENOTFOUND otherwise. */
int tm_tool_format_from_name(const char *name, tm_tool_format *out);
const char *tm_tool_format_name(tm_tool_format f);
/* The format a chat template asks its model to write, from its markers, or NONE. */
tm_tool_format tm_tool_format_detect(const char *template_text, size_t len);

/* How a format writes its calls, as text the parser reads back: what structured output
 * constrains a forced tool call to (server/structured.h). Static strings. */
typedef struct tm_tool_markup {
    const char *prefix;   /* before the first call ("<tool_call>\n") */
    const char *sep;      /* between two calls, or NULL when a reply holds one call */
    const char *suffix;   /* after the last call ("\n</tool_call>") */
    const char *args_key; /* key of a call's arguments: "arguments", or Llama's "parameters" */
    const char *trigger;  /* the text that starts the calls, for free text before them to
                             avoid ("<tool_call>"); NULL when a call cannot follow text */
} tm_tool_markup;

/* The markup of format f; TM_EINVAL for TM_TOOLS_NONE. */
int tm_tool_format_markup(tm_tool_format f, tm_tool_markup *out);

/* One piece of output. A call comes as one delta with its name and all its arguments, or,
 * when it is fed in pieces (streaming), as a first delta with its name and then deltas of
 * the same index with name NULL carrying further argument text: the concatenated
 * arguments are the same text either way. */
typedef struct tm_tool_delta {
    int is_call;         /* 0: content; 1: a tool call, or more of one */
    char *text;          /* content bytes (malloc'd), or NULL */
    size_t text_len;
    int index;           /* call: its position among the request's calls */
    char id[48];         /* call: its id ("chatcmpl-tool-..." or 9 characters for mistral) */
    char *name;          /* call: function name (malloc'd) on a call's first delta, else NULL */
    char *arguments;     /* call: arguments as JSON text, or the next piece of it (malloc'd) */
} tm_tool_delta;

void tm_tool_delta_free(tm_tool_delta *d); /* the fields, not d */

typedef struct tm_tool_parser tm_tool_parser;

/* id_seed makes the call ids (distinct per request). TM_ENOMEM. */
int tm_tool_parser_create(tm_tool_format f, uint64_t id_seed, tm_tool_parser **out);
void tm_tool_parser_destroy(tm_tool_parser *p);

/* Feeds n bytes of generated text (final: the generation ended, decide everything held).
 * Appends what is now decided to *out (a malloc'd array grown as needed, *n_out entries;
 * free each with tm_tool_delta_free and the array with free). TM_ENOMEM. */
int tm_tool_parser_feed(tm_tool_parser *p, const char *text, size_t n, int final,
                        tm_tool_delta **out, int *n_out);
/* Calls emitted so far. */
int tm_tool_parser_n_calls(const tm_tool_parser *p);

#ifdef __cplusplus
}
#endif
#endif

/* api_parse.h - OpenAI request bodies -> validated plain data.
 *
 * Pure functions (no engine, no sockets), so every validation rule is unit-tested
 * (tests/server/test_api_parse.cc). Unknown fields are ignored, as OpenAI-compatible
 * servers do; known fields with the wrong type or an out-of-range value are a 400 that
 * names the field in `param`, and so are OpenAI fields for features tokenmill lacks
 * (tools, logit_bias, suffix, echo) unless they hold the default. Structured-output
 * fields become grammar text here (server/structured.h). */
#ifndef TM_API_PARSE_H
#define TM_API_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "models/sampler.h"
#include "scheduler/engine.h"
#include "server/structured.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tm_api_kind {
    TM_API_COMPLETION = 0, /* POST /v1/completions */
    TM_API_CHAT = 1,       /* POST /v1/chat/completions */
} tm_api_kind;

typedef enum tm_api_role {
    TM_ROLE_SYSTEM = 0, /* "system" or "developer" */
    TM_ROLE_USER = 1,
    TM_ROLE_ASSISTANT = 2,
    TM_ROLE_TOOL = 3,   /* a tool's result, answering an assistant tool call */
} tm_api_role;

typedef enum tm_api_tool_choice {
    TM_TOOL_NONE = 0,     /* no tool calls parsed out of the output */
    TM_TOOL_AUTO = 1,     /* the model decides; tool calls are parsed */
    TM_TOOL_REQUIRED = 2, /* the model should call one (or more) tools */
    TM_TOOL_NAMED = 3,    /* the model should call tool_choice_name */
} tm_api_tool_choice;

typedef struct tm_api_message {
    tm_api_role role; /* who speaks */
    char *content;    /* text (text parts concatenated), malloc'd, NUL-terminated */
} tm_api_message;

enum { TM_API_MAX_N = 128 }; /* most choices per request (OpenAI's limit) */

typedef struct tm_api_params {
    tm_api_kind kind;           /* which endpoint */
    int n;                      /* choices (1..TM_API_MAX_N) */
    char *model;                /* requested model name, or NULL when absent */
    char *prompt;               /* completions: prompt text, or NULL */
    size_t prompt_len;          /* its bytes (it may hold NUL characters) */
    int32_t *prompt_ids;        /* completions: prompt as token ids, or NULL */
    int n_prompt_ids;           /* entries in prompt_ids */
    tm_api_message *messages;   /* chat: (n_messages) role and text, for the C renderers */
    int n_messages;
    json_t *conversation;       /* chat: the messages as the Jinja template sees them (owned) */
    json_t *tools;              /* chat: tools as passed to the template (owned), or NULL */
    json_t *tool_specs;         /* chat: tools as the request gave them, validated (with
                                   `strict`), for tool-call grammars (owned), or NULL */
    json_t *template_kwargs;    /* chat: chat_template_kwargs (owned), or NULL */
    tm_api_tool_choice tool_choice; /* chat: what to do with tool calls */
    char *tool_choice_name;     /* TM_TOOL_NAMED: the function */
    int parallel_tool_calls;    /* chat: a reply may hold several calls (default 1) */
    int32_t *bias_ids;          /* logit_bias: (n_bias) token ids, not yet checked against the vocabulary */
    float *bias_vals;           /* (n_bias) biases in [-100, 100] */
    int n_bias;
    int max_tokens;             /* -1 when not given */
    tm_sampling_params sampling;/* temperature, top_p, top_k, min_p, penalties, seed */
    int has_seed;               /* seed was given (otherwise the server picks one) */
    char *stop[TM_MAX_STOP];    /* stop strings, malloc'd */
    int n_stop;
    int ignore_eos;             /* keep generating past end-of-generation tokens */
    int logprobs;               /* report the chosen tokens' logprobs */
    int top_logprobs;           /* alternatives per token (0..TM_MAX_TOP_LOGPROBS) */
    int stream;                 /* SSE response */
    int include_usage;          /* stream_options.include_usage */
    char *cache_salt;           /* prefix-cache tenant separation, or NULL */
    tm_so_spec so;              /* structured output: response_format, structured_outputs, guided_* */
    char *suffix;               /* completions: text after the insertion (fill in the middle), or NULL */
    size_t suffix_len;
} tm_api_params;

/* Parses and validates body. On failure returns TM_EINVAL, a message in err and the
 * offending field's name in param (a static string, or "" when no single field is at
 * fault). out is always safe to pass to tm_api_params_free afterwards. */
int tm_api_parse(tm_api_kind kind, const char *body, size_t len, tm_api_params *out,
                 const char **param, char *err, size_t err_len);
void tm_api_params_free(tm_api_params *p);

#ifdef __cplusplus
}
#endif
#endif

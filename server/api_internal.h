/* api_internal.h - state shared by api.c (routing, submission) and api_output.c (turning
 * engine events into SSE chunks and JSON bodies). Not a public header. */
#ifndef TM_API_INTERNAL_H
#define TM_API_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "server/api.h"
#include "server/api_error.h"
#include "server/api_parse.h"
#include "server/grammar_cache.h"
#include "server/metrics.h"
#include "server/tool_parser.h"

/* Bytes of compiled grammars kept for structured output (least recently used go first). */
#define TM_API_GRAMMAR_CACHE_BYTES ((size_t)512 << 20)
struct tm_job;

/* The choices of one request with n > 1: one engine request (a job) per choice. The first
 * is submitted alone; the rest follow when its first token comes, so that they find the
 * prompt's pages in the prefix cache instead of computing them again. The request is
 * answered when the last choice ends; usage counts the prompt once.
 * Invariant: n_finished <= n_submitted <= n; the group is freed with its last job. */
typedef struct tm_group {
    int n;                      /* choices */
    int n_submitted;            /* handed to the engine (or ended without it) */
    int n_finished;             /* whose last event came */
    struct tm_job **jobs;       /* (n) members, NULL once freed */
    json_t *choices;            /* non-stream: (n) finished choices (JSON null until then) */
    int completion_tokens;      /* summed over the finished choices */
    int prompt_tokens, cached_tokens; /* of the first choice */
    int n_aborted;              /* choices that ended with finish abort */
    /* what the followers are submitted with; req's pointers point into these */
    tm_request req;             /* the first choice's request */
    int32_t *prompt;            /* (req.n_prompt) */
    char *stop[TM_MAX_STOP];    /* (req.n_stop) */
    char *salt;                 /* or NULL */
    int32_t *bias_ids;          /* (n_bias) logit_bias, one processor per choice */
    float *bias_vals;
    int n_bias;
    tm_grammar_compiled *grammar; /* structured output (a reference), or NULL */
} tm_group;

/* One generation request from submit to its last engine event.
 * Invariant: on api->jobs exactly while the engine may still send events for it;
 * req is NULL once the client is gone (then events are consumed and dropped), and once
 * the response has ended. */
typedef struct tm_job {
    tm_api *api;                /* owner */
    struct tm_job *prev, *next; /* api->jobs list */
    tm_http_request *req;       /* the HTTP layer's request (answer on req->conn), or NULL */
    uint64_t engine_id;         /* from tm_engine_submit */
    tm_api_kind kind;           /* completion or chat */
    char id[48];                /* "cmpl-..." / "chatcmpl-..." */
    long long created;          /* unix seconds */
    int stream;                 /* SSE response */
    int include_usage;          /* send the usage chunk */
    int logprobs;               /* report logprobs */
    int top_logprobs;           /* alternatives per token */
    int n_prompt;               /* prompt tokens */
    int n_tokens;               /* tokens received so far */
    double t_start;             /* request's first byte */
    double t_first;             /* first token (0 until then) */
    double t_last;              /* latest token */
    char *text;                 /* non-stream: text so far (malloc'd) */
    size_t text_len, text_cap;
    json_t *lp;                 /* non-stream logprobs accumulated (object), or NULL */
    tm_tool_parser *tools;      /* chat with tools: splits the output into content and
                                   tool calls (NULL otherwise) */
    char *tool_named;           /* tool_choice named this function: the output is its
                                   arguments (NULL otherwise) */
    int tool_finish;            /* a tool call was sent: finish_reason "tool_calls" */
    int index;                  /* choice index (0 unless n > 1) */
    tm_group *group;            /* n > 1: the request's choices, or NULL */
} tm_job;

struct tm_api {
    tm_engine *engine;           /* borrowed */
    const tm_model *model;       /* engine's model */
    const tm_tokenizer *tok;     /* model's tokenizer */
    int n_ctx;                   /* context length (prompt + completion), the engine's */
    size_t max_token_bytes;      /* most bytes of prompt text one token stands for */
    char *model_name;            /* served name */
    char *api_key;               /* or NULL */
    tm_chat_template chat;       /* chat rendering */
    tm_grammar_vocab *gvocab;    /* the vocabulary as structured output's grammars see it */
    tm_grammar_cache *gcache;    /* compiled grammars by hash of their text */
    tm_tool_format tool_format;  /* parser of the model's tool calls, or NONE */
    int32_t chat_stop_ids[4];    /* token ids of the template's end tokens */
    int n_chat_stop_ids;
    const char *fim[3];          /* fill-in-the-middle token texts (prefix, suffix, middle),
                                    NULL when the vocabulary has none */
    tm_metrics metrics;          /* counters and histograms */
    tm_job *jobs;                /* in flight */
    int n_jobs;
    uv_loop_t *loop;             /* borrowed; NULL: grammars compile on the loop thread */
    struct tm_compile_wait *compiling; /* grammars compiling, each with its requests */
    int n_compiling;             /* requests waiting for them */
    int draining;                /* refuse new generation work */
    uint64_t next_seq;           /* for ids and default seeds */
    long long started;           /* unix seconds at create (model "created") */
};

/* One access log line. Never holds prompt text, message content or the key. */
typedef struct tm_access {
    const char *id;             /* "cmpl-...", "chatcmpl-...", "req-N", or "-" */
    const char *method;         /* "POST", ... or "-" when the request did not parse */
    const char *path;           /* URL path, or "-" */
    int status;                 /* HTTP status sent; 499 when the client left first */
    int prompt, cached, completion; /* tokens (0 for requests without generation) */
    double ttft;                /* seconds from first byte to first token; < 0: no token */
    double total;               /* seconds from first byte to the end of the response */
    const char *finish;         /* finish reason, or NULL */
} tm_access;

/* api_output.c */
/* One engine event for job; frees job (and unlinks it) after its last event. */
void tm_job_on_event(tm_job *job, const tm_event *ev);
/* Sends the first chunk of a chat stream (role) - right after submit. */
void tm_job_stream_start(tm_job *job);
void tm_job_free(tm_job *job);
/* Ends a member of a group that the engine never had (its submit failed or was never
 * made): it finishes with finish abort. */
void tm_job_end_unsubmitted(tm_job *job);

/* api.c */
/* Submits the group's choices after the first (on the first choice's first token, or
 * when it ends). */
void tm_group_submit_rest(tm_group *g);
void tm_group_free(tm_group *g);
/* Writes e as one "access:" line to stderr: the one place every request is logged. */
void tm_api_access_log(const tm_access *e);
/* Sends an OpenAI error object as the response on c and counts it; the caller logs. */
void tm_api_send_error(tm_api *a, tm_http_conn *c, int status, const char *msg,
                       const char *param, const char *code);

#endif

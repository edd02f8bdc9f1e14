/* workloads.h - the requests of a benchmark run, as `vllm bench serve` names its datasets:
 *
 *   random   prompts of --random-input-len token ids (or a length drawn uniformly from
 *            [len * (1 - r), len * (1 + r)] with --random-range-ratio r), optionally after a
 *            --random-prefix-len prefix shared by all, --random-output-len tokens out.
 *            The ids are real tokens of the served tokenizer: a fixed English text is sent
 *            to the server's /tokenize once and prompts are drawn from its distinct ids.
 *   prefix   --prefix-repetition-num-prefixes groups; each has one shared prefix of
 *            --prefix-repetition-prefix-len ids and num_prompts / groups requests, each
 *            adding its own --prefix-repetition-suffix-len ids (prompt caching); shuffled.
 *   chat     conversations of --chat-num-turns turns on /v1/chat/completions: each turn
 *            resends the history (the earlier user turns and the server's own answers)
 *            plus a new user message of --random-input-len tokens' text. A turn is sent
 *            when the previous one has been answered.
 *   file     a JSONL file of {"prompt": text or token ids, "output_tokens": N} lines
 *            ("output_len" and "max_tokens" are read as well; default --custom-output-len).
 *
 * Synthetic workloads set ignore_eos so every request generates its full length.
 * On the chat endpoint, token-id prompts become text through the server's /detokenize.
 * Single-threaded; builds everything before the run. */
#ifndef TM_BENCH_WORKLOADS_H
#define TM_BENCH_WORKLOADS_H

#include <stddef.h>
#include <stdint.h>

#include "bench/tmbench/client.h"
#include "bench/tmbench/loadgen.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tm_bench_dataset {
    TM_BENCH_RANDOM = 0,
    TM_BENCH_PREFIX = 1,
    TM_BENCH_CHAT = 2,
    TM_BENCH_FILE = 3,
} tm_bench_dataset;

typedef struct tm_bench_workload_opts {
    tm_bench_dataset dataset;
    int chat_api;            /* bodies for /v1/chat/completions */
    const char *model;       /* the "model" field */
    int num_prompts;         /* requests in all (chat: turns in all) */
    int input_len, output_len;    /* random and chat */
    double range_ratio;      /* random: spread of the lengths, [0, 1) */
    int random_prefix_len;   /* random: ids shared by every prompt */
    int prefix_len, suffix_len, num_prefixes, prefix_output_len; /* prefix */
    int chat_turns;          /* chat: turns per conversation */
    const char *path;        /* file: the JSONL */
    int custom_output_len;   /* file: when a line names none */
    int shuffle;             /* prefix and file: shuffle the requests */
    int ignore_eos;          /* file: send ignore_eos (always on for the synthetic ones) */
    uint64_t seed;           /* contents depend only on this */
    const char *extra_json;  /* a JSON object merged into every body (sampling, --extra-body) */
    double call_timeout_s;   /* for /tokenize and /detokenize */
} tm_bench_workload_opts;

typedef struct tm_bench_workload {
    tm_bench_spec *specs;    /* (n_total,) the first n_initial filled; chat appends turns */
    int n_initial, n_total;
    int chat_api;            /* bodies are chat requests */
    /* chat conversations */
    int n_conv, turns;       /* conversations, turns per full conversation */
    int *conv_turns;         /* (n_conv,) turns of each (the last may be shorter) */
    char **user_text;        /* (n_conv * turns,) owned */
    char **answer;           /* (n_conv * turns,) the server's answers so far, owned */
    void *base;              /* json_t*: the fields every chat body carries */
} tm_bench_workload;

/* Builds the requests; talks to t for /tokenize and /detokenize where needed. Returns 0
 * or a TM_E* code with err saying what went wrong (a file that does not exist, a bad
 * JSONL line, a server without /tokenize). */
int tm_bench_workload_build(const tm_bench_workload_opts *o, const tm_bench_target *t,
                            tm_bench_workload *w, char *err, size_t err_len);
/* The tm_bench_followup_fn of the chat workload (user = the workload). */
int tm_bench_workload_followup(void *user, int idx, const tm_bench_spec *spec,
                               const tm_bench_record *rec, tm_bench_spec *next);
/* Frees the specs (follow-ups too: pass how many the run made) and the chat state. */
void tm_bench_workload_free(tm_bench_workload *w, int n_specs);

#ifdef __cplusplus
}
#endif
#endif

/* engine.h - the narrow, thread-safe engine API the server talks to.
 *
 * The engine runs its own thread: each step it admits waiting requests (prefix-cache
 * lookup, KV pages), builds a ragged batch (decodes first, then prefill chunks within the
 * token budget), runs the model, samples, detokenizes and checks stop conditions. It
 * sleeps while nothing is queued. Results leave through one outbox of events; after
 * pushing events the engine calls config.on_event (the server hooks uv_async_send), and
 * the consumer drains with tm_engine_poll. */
#ifndef TM_ENGINE_H
#define TM_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "models/model.h"
#include "models/sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_engine_config {
    size_t kv_cache_bytes;      /* KV pool size (--kv-cache-mem) */
    int block_size;             /* tokens per KV page (16) */
    tm_kv_dtype kv_dtype;       /* KV element type (--kv-cache-dtype, f16) */
    int max_num_seqs;           /* cap on running sequences */
    int max_num_batched_tokens; /* token budget per step */
    int max_queue;              /* requests that may wait beyond max_num_seqs: submit is
                                   TM_EBUSY while max_num_seqs + max_queue are in flight */
    int enable_prefix_cache;    /* reuse cached prompt pages */
    void (*on_event)(void *arg);/* called from the engine thread after events are queued */
    void *on_event_arg;
} tm_engine_config;

/* Defaults: 256 MiB KV, block 16, 64 seqs, 2048 tokens, queue 1024, prefix cache on. */
void tm_engine_config_default(tm_engine_config *c);

enum { TM_MAX_STOP = 4, TM_MAX_TOP_LOGPROBS = 20 };

typedef struct tm_request {
    const int32_t *prompt;       /* (n_prompt) token ids; copied at submit */
    int n_prompt;
    int max_tokens;              /* tokens to generate at most (>= 1) */
    tm_sampling_params sampling; /* copied */
    const char *stop[TM_MAX_STOP]; /* stop strings (NULL-terminated list or n_stop); copied */
    int n_stop;
    const int32_t *stop_ids;     /* extra stop token ids (e.g. the chat template's end); copied */
    int n_stop_ids;
    int ignore_eos;              /* do not stop at the model's end-of-generation tokens */
    int logprobs;                /* report the chosen token's logprob */
    int top_logprobs;            /* and this many alternatives (0..TM_MAX_TOP_LOGPROBS) */
    const char *cache_salt;      /* separates prefix-cache entries between tenants; NULL = none */
    int priority;                /* 0 interactive, 1 batch (lower runs first) */
    const tm_logit_processor *processors; /* (n_processors) applied before sampling, in
                                   order; a successful submit takes them over (the engine
                                   destroys them with the request), a failed one leaves them
                                   to the caller */
    int n_processors;            /* 0..TM_SAMPLER_MAX_PROCESSORS */
    void *user;                  /* opaque, handed back in every event */
} tm_request;

typedef enum tm_finish {
    TM_FINISH_NONE = 0,
    TM_FINISH_STOP = 1,   /* stop string, stop token or EOS */
    TM_FINISH_LENGTH = 2, /* max_tokens or context full */
    TM_FINISH_ABORT = 3,  /* tm_engine_abort, engine shutdown, or a logit processor failed */
} tm_finish;

typedef struct tm_event {
    uint64_t id;            /* request id from submit */
    void *user;             /* the request's user pointer */
    char *text;             /* text delta (malloc'd, NUL-terminated, may be ""); tm_event_free */
    size_t text_len;
    int32_t token;          /* sampled token, or -1 on a finish-only event */
    float logprob;          /* of token, when requested */
    int n_top;              /* alternatives filled */
    int32_t top_ids[TM_MAX_TOP_LOGPROBS];
    float top_logprobs[TM_MAX_TOP_LOGPROBS];
    tm_finish finish;       /* != NONE on the request's last event */
    int prompt_tokens;      /* usage, valid on the last event */
    int completion_tokens;
    int cached_tokens;
    /* The request's life in engine time (tm_time_s), valid on the last event; 0 for a
     * phase it never reached: submitted, first scheduled, first and last token. */
    double t_arrival, t_scheduled, t_first_token, t_last_token;
} tm_event;

void tm_event_free(tm_event *ev); /* frees ev->text; not ev itself */

typedef struct tm_engine_stats {
    int n_running;               /* sequences in the running set */
    int n_waiting;               /* queued, not yet admitted (incl. preempted) */
    int n_blocks_total;          /* KV pages in the pool */
    int n_blocks_used;           /* pages referenced by a sequence */
    int n_blocks_cached;         /* free pages still holding a cached prefix */
    uint64_t prefix_queries;     /* prompt tokens looked up in the prefix cache */
    uint64_t prefix_hits;        /* of those, tokens found */
    uint64_t prompt_tokens;      /* prompt tokens prefilled (computed) */
    uint64_t generation_tokens;  /* tokens generated */
    uint64_t n_preemptions;      /* sequences preempted */
} tm_engine_stats;

typedef struct tm_engine tm_engine;

/* Starts the engine thread over model (borrowed; outlives the engine). */
int tm_engine_create(tm_model *model, const tm_engine_config *config, tm_engine **out,
                     char *err, size_t err_len);
/* Aborts everything in flight (each gets a TM_FINISH_ABORT event), joins the thread. */
void tm_engine_destroy(tm_engine *e);

/* Any thread. Copies the request. Fails at once, with err, when the request can never
 * run: TM_ERANGE (prompt + max_tokens over the context, or more pages than exist),
 * TM_EINVAL (empty prompt, bad ids or parameters); or when it cannot run now: TM_EBUSY
 * (max_num_seqs + max_queue requests are in flight, i.e. submitted and their last event
 * not yet queued). */
int tm_engine_submit(tm_engine *e, const tm_request *req, uint64_t *id, char *err,
                     size_t err_len);
/* Any thread. The request finishes with TM_FINISH_ABORT; its pages are freed at the next
 * step. Unknown or finished ids are ignored. */
void tm_engine_abort(tm_engine *e, uint64_t id);
/* Any thread. Moves up to max queued events into out; returns how many. */
int tm_engine_poll(tm_engine *e, tm_event *out, int max);
/* Any thread. A consistent snapshot. */
void tm_engine_get_stats(tm_engine *e, tm_engine_stats *out);
const tm_model *tm_engine_model(const tm_engine *e);
/* Any thread. The longest prompt + max_tokens a request may ask for (the model's
 * training context, or 2048 when the file gives none). */
int tm_engine_n_ctx(const tm_engine *e);
/* Any thread. The most bytes of text one token detokenizes to. */
size_t tm_engine_max_piece_bytes(const tm_engine *e);

#ifdef __cplusplus
}
#endif
#endif

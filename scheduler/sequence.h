/* sequence.h - one request's state inside the engine. Plain data: the block manager
 * owns page ids, the scheduler owns the queues, output.c owns the text; this struct only
 * holds what they share. Engine thread only, after submit hands it over. */
#ifndef TM_SEQUENCE_H
#define TM_SEQUENCE_H

#include <stdint.h>

#include "scheduler/block_manager.h"
#include "scheduler/engine.h"
#include "scheduler/output.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tm_seq_status {
    TM_SEQ_WAITING = 0,  /* in the waiting queue (new or preempted) */
    TM_SEQ_RUNNING = 1,  /* in the running set; holds pages */
    TM_SEQ_FINISHED = 2, /* done; holds no pages, in no queue */
} tm_seq_status;

/* Invariants:
 * - 0 <= n_computed <= n_tokens <= cap_tokens, n_prompt <= n_tokens.
 * - n_blocks * block_size >= n_computed; pages hold tokens [0, n_blocks * block_size).
 * - n_hashed <= n_blocks, and pages [0, n_hashed) are full, computed and registered in
 *   the prefix cache (their hashes are in hashes[]).
 * - status WAITING or FINISHED implies n_blocks == 0 and n_computed == 0 (recompute). */
typedef struct tm_seq {
    uint64_t id;              /* request id from submit */
    void *user;               /* the request's user pointer */
    int priority;             /* 0 interactive, 1 batch (lower runs first) */
    tm_seq_status status;     /* which queue, if any */

    int32_t *tokens;          /* (cap_tokens) prompt then generated ids */
    int n_prompt;             /* prompt tokens */
    int n_tokens;             /* prompt + generated so far */
    int cap_tokens;           /* n_prompt + max_tokens */
    int max_tokens;           /* generated tokens allowed */
    int n_computed;           /* tokens whose K/V are in the pages */
    int n_cached;             /* prompt tokens served by the prefix cache at first admission */
    int admitted_once;        /* n_cached is final once the sequence ran */

    int32_t *block_table;     /* (cap_blocks) page ids, in token order */
    int n_blocks;             /* pages held */
    int cap_blocks;           /* ceil(cap_tokens / block_size) */
    tm_hash128 *hashes;       /* (cap_blocks) prefix-cache key of each registered page */
    int n_hashed;             /* leading pages registered in the prefix cache */
    tm_hash128 salt;          /* key of the cache salt ((0, 0) when none) */

    tm_sampler sampler;       /* per-request RNG and parameters */
    int logprobs;             /* report the chosen token's logprob */
    int top_logprobs;         /* and this many alternatives */
    tm_output out;            /* detokenizer, stop conditions, held-back text */
    char *delta;              /* (tm_output_delta_cap) this step's text delta */

    double t_arrival;         /* tm_time_s at submit */
    double t_scheduled;       /* first scheduled (0 until then) */
    double t_first_token;     /* first token sampled (0 until then) */
    double t_last_token;      /* latest token sampled */
    int aborted;              /* abort requested; acted on at the next step */
    struct tm_seq *prev;      /* waiting-queue links (NULL when not queued) */
    struct tm_seq *next;
} tm_seq;

/* Builds a WAITING sequence from req (copies everything it needs, and takes over
 * req->processors when it succeeds; the id is set by the caller). tok is borrowed;
 * max_piece is the tokenizer's longest piece in bytes. Any thread. TM_EINVAL (bad stop
 * strings), TM_ENOMEM. */
int tm_seq_create(const tm_request *req, const tm_tokenizer *tok, size_t max_piece,
                  int block_size, tm_seq **out);
void tm_seq_destroy(tm_seq *s); /* NULL is a no-op */

#ifdef __cplusplus
}
#endif
#endif

/* output.h - per-request output processing: incremental detokenization, stop strings
 * (scheduler/stop.h, with hold-back), stop token ids, end-of-generation tokens unless
 * ignore_eos, and max_tokens.
 *
 * tm_output is caller-owned: _init allocates its buffers (at submit), nothing after. */
#ifndef TM_OUTPUT_H
#define TM_OUTPUT_H

#include <stddef.h>
#include <stdint.h>

#include "models/tokenizer.h"
#include "scheduler/engine.h"
#include "scheduler/stop.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Invariants: n_generated <= max_tokens; once finished is set every push emits nothing;
 * the detokenizer holds only an incomplete UTF-8 character, stop the rest of the
 * unreleased text. */
typedef struct tm_output {
    const tm_tokenizer *tok;  /* borrowed, immutable */
    tm_detok detok;           /* incremental detokenizer state */
    tm_stop stop;             /* stop strings and held-back text */
    char *piece;              /* (stop.max_chunk) detokenizer output before it joins stop */
    int32_t *stop_ids;        /* (n_stop_ids) owned copy of the extra stop token ids */
    int n_stop_ids;           /* extra stop tokens */
    int ignore_eos;           /* end-of-generation tokens do not stop */
    int max_tokens;           /* finish with LENGTH after this many tokens */
    int n_generated;          /* tokens pushed */
    int finished;             /* a finish reason was returned */
} tm_output;

/* Sets up o over tok (borrowed). max_piece: the longest token piece in bytes. Copies
 * stop strings and stop_ids. TM_EINVAL for an empty stop string, TM_ENOMEM. On failure
 * o needs no deinit. */
int tm_output_init(tm_output *o, const tm_tokenizer *tok, size_t max_piece,
                   const char *const *stop, int n_stop, const int32_t *stop_ids,
                   int n_stop_ids, int ignore_eos, int max_tokens);
void tm_output_deinit(tm_output *o);

/* Bytes a delta buffer passed to tm_output_push_token must hold. */
size_t tm_output_delta_cap(const tm_output *o);

/* Processes one sampled token. Writes the text delta to out (NUL-terminated) and returns
 * its length; *finish says whether this token ends the request: STOP for a stop string
 * (text before it is emitted, the string dropped), a stop token id or an
 * end-of-generation token (its own text is not emitted; held text is released); LENGTH
 * at max_tokens (all held text released). */
size_t tm_output_push_token(tm_output *o, int32_t token, char *out, tm_finish *finish);

#ifdef __cplusplus
}
#endif
#endif

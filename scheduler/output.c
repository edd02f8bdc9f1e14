/* output.c - detokenization, stop tokens, max_tokens; stop strings via stop.c. */
#include "scheduler/output.h"

#include <stdlib.h>
#include <string.h>

#include "common/common.h"

enum { FLUSH_ROOM = 64 }; /* a detokenizer flush: <= 8 pending bytes as U+FFFD each */

int tm_output_init(tm_output *o, const tm_tokenizer *tok, size_t max_piece,
                   const char *const *stop, int n_stop, const int32_t *stop_ids,
                   int n_stop_ids, int ignore_eos, int max_tokens) {
    memset(o, 0, sizeof *o);
    if (n_stop_ids < 0 || max_tokens < 1) return TM_EINVAL;
    /* tm_detok_push's stated bound; a flush goes through the same push. */
    size_t max_chunk = TM_MAX(64 + max_piece, (size_t)FLUSH_ROOM);
    int rc = tm_stop_init(&o->stop, stop, n_stop, max_chunk);
    if (rc != TM_OK) return rc;
    o->piece = malloc(max_chunk);
    if (n_stop_ids > 0) o->stop_ids = malloc((size_t)n_stop_ids * sizeof *o->stop_ids);
    if (!o->piece || (n_stop_ids > 0 && !o->stop_ids)) {
        tm_output_deinit(o);
        return TM_ENOMEM;
    }
    if (n_stop_ids > 0) memcpy(o->stop_ids, stop_ids, (size_t)n_stop_ids * sizeof *o->stop_ids);
    o->tok = tok;
    tm_detok_init(&o->detok);
    o->n_stop_ids = n_stop_ids;
    o->ignore_eos = ignore_eos;
    o->max_tokens = max_tokens;
    return TM_OK;
}

void tm_output_deinit(tm_output *o) {
    tm_stop_deinit(&o->stop);
    free(o->piece);
    free(o->stop_ids);
    memset(o, 0, sizeof *o);
}

/* Held text plus one chunk, plus a flush after it. */
size_t tm_output_delta_cap(const tm_output *o) { return tm_stop_out_cap(&o->stop) + FLUSH_ROOM; }

static int is_stop_token(const tm_output *o, int32_t token) {
    for (int i = 0; i < o->n_stop_ids; i++)
        if (o->stop_ids[i] == token) return 1;
    return !o->ignore_eos && tm_tokenizer_is_eog(o->tok, token);
}

/* Releases everything: the detokenizer's pending bytes (as U+FFFD), then all held
 * text. A stop string completed by the flushed bytes still cuts the text. */
static size_t release_all(tm_output *o, char *out, int *stopped) {
    size_t n_tail = tm_detok_flush(&o->detok, o->piece, o->stop.max_chunk);
    long n = tm_stop_push(&o->stop, o->piece, n_tail, out, stopped);
    if (n < 0) n = 0;
    if (*stopped) return (size_t)n;
    return (size_t)n + tm_stop_flush(&o->stop, out + n);
}

size_t tm_output_push_token(tm_output *o, int32_t token, char *out, tm_finish *finish) {
    *finish = TM_FINISH_NONE;
    out[0] = '\0';
    if (o->finished) return 0;
    o->n_generated++;
    int stopped = 0;
    size_t n = 0;
    if (is_stop_token(o, token)) {
        n = release_all(o, out, &stopped);
        *finish = TM_FINISH_STOP;
    } else {
        size_t n_piece = tm_detok_push(&o->detok, o->tok, token, o->piece, o->stop.max_chunk);
        long r = tm_stop_push(&o->stop, o->piece, n_piece, out, &stopped);
        n = r < 0 ? 0 : (size_t)r;
        if (stopped) {
            *finish = TM_FINISH_STOP;
        } else if (o->n_generated >= o->max_tokens) {
            n += release_all(o, out + n, &stopped);
            *finish = stopped ? TM_FINISH_STOP : TM_FINISH_LENGTH;
        }
    }
    if (*finish != TM_FINISH_NONE) o->finished = 1;
    out[n] = '\0';
    return n;
}

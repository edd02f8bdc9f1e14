/* stop.h - stop strings over a stream of text, with hold-back.
 *
 * Text goes in in chunks and comes out in deltas that never contain part of a stop
 * string: while the end of the text could still grow into a stop string it is held
 * back, and an incomplete UTF-8 character is never emitted either (a chunk may end in
 * the middle of a multi-byte character). On a match the text before the stop string is
 * emitted and the stop string itself is dropped, as the OpenAI API does.
 *
 * tm_stop is caller-owned: _init allocates its buffer, nothing after. */
#ifndef TM_STOP_H
#define TM_STOP_H

#include <stddef.h>

#include "scheduler/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Invariants: n_held <= cap_held; between pushes held[0..n_held) contains no stop
 * string and is a proper prefix of a stop string and/or an incomplete trailing UTF-8
 * character, so it is shorter than max(longest stop, 4). */
typedef struct tm_stop {
    char *str[TM_MAX_STOP];      /* owned copies of the stop strings */
    size_t len[TM_MAX_STOP];     /* their byte lengths (>= 1) */
    int n;                       /* stop strings */
    size_t max_chunk;            /* most bytes one push may add */
    char *held;                  /* (cap_held + 1) text not emitted yet */
    size_t n_held;               /* bytes in held */
    size_t cap_held;             /* longest stop + 4 + max_chunk */
} tm_stop;

/* Copies the n strings (n <= TM_MAX_STOP; empty or NULL strings are TM_EINVAL).
 * TM_ENOMEM. On failure s needs no deinit. */
int tm_stop_init(tm_stop *s, const char *const *strs, int n, size_t max_chunk);
void tm_stop_deinit(tm_stop *s);
/* Bytes an out buffer must hold (including the NUL). */
size_t tm_stop_out_cap(const tm_stop *s);

/* Appends len (<= max_chunk) bytes; writes what can be emitted to out (NUL-terminated)
 * and returns its length, or TM_ERANGE when len > max_chunk. *stopped = 1 on a match:
 * out holds the text before it, and the rest is dropped. */
long tm_stop_push(tm_stop *s, const char *text, size_t len, char *out, int *stopped);
/* End of stream without a match: writes all held text (NUL-terminated). */
size_t tm_stop_flush(tm_stop *s, char *out);

#ifdef __cplusplus
}
#endif
#endif

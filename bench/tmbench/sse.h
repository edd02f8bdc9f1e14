/* sse.h - an incremental parser for a text/event-stream body (the WHATWG event-stream
 * format as OpenAI-compatible servers send it). Bytes go in as they arrive, split
 * anywhere; each complete event's data (its "data:" lines joined by "\n") comes out
 * through a callback. Comment lines (":...") and other fields are skipped; lines may end
 * in "\n", "\r\n" or "\r". One parser per response; single-threaded. */
#ifndef TM_BENCH_SSE_H
#define TM_BENCH_SSE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Called once per event with its data (not NUL-terminated, valid during the call).
 * Returning nonzero stops the parser; tm_sse_feed then returns that value. */
typedef int (*tm_sse_event_fn)(void *user, const char *data, size_t len);

typedef struct tm_sse {
    char *line;          /* the current, unfinished line, owned */
    size_t line_len, line_cap;
    char *data;          /* the current event's data so far, owned */
    size_t data_len, data_cap;
    int has_data;        /* the current event has at least one data line */
    int skip_lf;         /* the last byte was '\r': a following '\n' ends nothing */
    size_t max_bytes;    /* longest line or event accepted */
    tm_sse_event_fn fn;  /* event callback */
    void *user;          /* its argument */
} tm_sse;

/* max_bytes bounds one line and one event (a server that never ends a line cannot grow
 * the client without limit). */
void tm_sse_init(tm_sse *p, size_t max_bytes, tm_sse_event_fn fn, void *user);
void tm_sse_deinit(tm_sse *p);
/* Forgets any partial line or event (the parser is reused for the next response). */
void tm_sse_reset(tm_sse *p);
/* Parses buf[0..len). Returns 0, the callback's nonzero value, TM_ENOMEM, or TM_ERANGE
 * when a line or an event passes max_bytes. */
int tm_sse_feed(tm_sse *p, const char *buf, size_t len);
/* The body ended: an event whose blank line never came is dispatched if it holds data
 * (some servers close right after "data: [DONE]"). Returns as tm_sse_feed. */
int tm_sse_finish(tm_sse *p);

#ifdef __cplusplus
}
#endif
#endif

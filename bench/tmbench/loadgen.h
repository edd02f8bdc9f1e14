/* loadgen.h - the load generator: sends streamed requests to an OpenAI-compatible
 * server on one libuv loop (one thread, one core), at a fixed concurrency and/or with
 * Poisson (or gamma) arrivals, and records each request's timeline (metrics.h).
 *
 * Timing: a request's clock starts when it leaves the client's queue and is sent
 * (connect if no idle keep-alive connection, then write), not when its arrival came up;
 * every chunk read in one socket read gets that read's time. A request fails, and is
 * counted so, on a connection error, a non-200 answer, malformed HTTP or SSE, an error
 * object in the stream, a stream with no output, or after timeout_s; none can hang the
 * run. Connections are kept alive and reused. */
#ifndef TM_BENCH_LOADGEN_H
#define TM_BENCH_LOADGEN_H

#include <stddef.h>
#include <stdint.h>

#include "bench/tmbench/client.h"
#include "bench/tmbench/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One request to send. */
typedef struct tm_bench_spec {
    char *body;         /* JSON request body, owned */
    size_t body_len;    /* bytes in body */
    int prompt_tokens;  /* the workload's count; usage.prompt_tokens wins when reported */
    int conv, turn;     /* chat workload: conversation and turn; -1 otherwise */
} tm_bench_spec;

/* Called when request idx has finished (rec filled). It may append a follow-up request
 * (the next turn of a conversation) by filling *next and returning 1; that request
 * arrives at once. Returns 0 for none, < 0 to give up on the follow-up. */
typedef int (*tm_bench_followup_fn)(void *user, int idx, const tm_bench_spec *spec,
                                    const tm_bench_record *rec, tm_bench_spec *next);

typedef struct tm_bench_load {
    const tm_bench_target *target; /* where to send */
    const char *path;              /* e.g. "/v1/completions" (the target's prefix goes first) */
    int chat;                      /* 1: read choices[0].delta.content, else choices[0].text */
    int max_concurrency;           /* requests in flight at most; 0: no limit */
    double request_rate;           /* arrivals per second; <= 0 or inf: all at time 0 */
    double burstiness;             /* gamma shape of the gaps; 1 = Poisson */
    uint64_t seed;                 /* arrival times depend only on this (and rate, n) */
    double timeout_s;              /* per request, from sending to the last byte */
    int progress;                  /* draw a progress bar on stderr */
    int keep_text;                 /* keep each request's generated text in its record */
    tm_bench_followup_fn followup; /* or NULL */
    void *followup_user;           /* its argument */
} tm_bench_load;

/* Arrival offsets (s from the start) of n requests, as `vllm bench serve` draws them:
 * gaps from Gamma(burstiness, 1 / (rate * burstiness)) (exponential when burstiness is
 * 1), cumulated and then scaled so that the last arrival falls at n / rate. rate <= 0 or
 * inf: all 0. Deterministic in (n, rate, burstiness, seed). */
void tm_bench_arrivals(int n, double rate, double burstiness, uint64_t seed, double *out);

/* Runs the requests: specs[0..n_initial) arrive by the schedule above; follow-ups are
 * appended to specs (capacity n_total) as the callback makes them. recs (n_total) are
 * filled; *n_done tells how many specs were run and *duration_s the wall time from the
 * first arrival to the last completion. Takes no ownership of specs (the caller frees
 * their bodies, follow-ups included). Returns 0 (individual failures are in recs), or
 * TM_ENOMEM / TM_EIO when the loop itself cannot run. */
int tm_bench_load_run(const tm_bench_load *cfg, tm_bench_spec *specs, int n_initial, int n_total,
                      tm_bench_record *recs, int *n_done, double *duration_s, char *err,
                      size_t err_len);

#ifdef __cplusplus
}
#endif
#endif

/* metrics.h - what one benchmark request measured, and the summary over a run, defined
 * as `vllm bench serve` defines them:
 *
 *   TTFT   time from sending the request to the first chunk that carries output text
 *   ITL    the gaps between successive output-carrying chunks (one per chunk, however
 *          many tokens a chunk holds), pooled over all requests
 *   TPOT   per request (E2EL - TTFT) / (output_tokens - 1), for requests with > 1 token
 *   E2EL   time from sending the request to its last chunk with a choice in it
 *   goodput  requests per second whose TTFT, TPOT and E2EL all meet the --goodput SLOs
 *            (a request of one token has TPOT 0 there)
 *   peak concurrency  the largest number of requests in flight at one instant, over
 *            the half-open intervals [start, start + E2EL) of completed requests
 *
 * Percentiles interpolate linearly between order statistics (numpy's default): the
 * p-th of n sorted values is at rank p/100 * (n - 1). The standard deviation is the
 * population one. A metric without samples reads 0, as vLLM writes it.
 * Pure functions of their inputs; any thread. */
#ifndef TM_BENCH_METRICS_H
#define TM_BENCH_METRICS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TM_BENCH_MAX_PCTS 8

/* One request's timeline. Times are seconds; start_s is relative to the run's start. */
typedef struct tm_bench_record {
    int ok;             /* 1: answered 200 and streamed at least one output chunk */
    double arrival_s;   /* when the workload scheduled it (before any client queueing) */
    double start_s;     /* when it was sent: TTFT and E2EL count from here */
    double ttft_s;      /* first output chunk - start_s */
    double latency_s;   /* E2EL: last chunk with a choice - start_s */
    double *itl_s;      /* (n_itl,) gaps between output chunks, owned */
    int n_itl, cap_itl; /* entries used / allocated in itl_s */
    int n_chunks;       /* output-carrying chunks received */
    int prompt_tokens;  /* usage.prompt_tokens, else the workload's own count */
    int output_tokens;  /* usage.completion_tokens, else n_chunks */
    int cached_tokens;  /* usage.prompt_tokens_details.cached_tokens; -1: not reported */
    char *error;        /* why it failed (owned), NULL when ok */
    char *text;         /* generated text (owned), kept only when asked (chat history) */
    size_t text_len;    /* bytes in text */
} tm_bench_record;

/* Appends one ITL gap; returns 0 or TM_ENOMEM. */
int tm_bench_record_add_itl(tm_bench_record *r, double gap_s);
/* Frees what a record owns and zeroes it. */
void tm_bench_record_clear(tm_bench_record *r);

/* Service-level objectives for goodput, in ms; a value < 0 is no objective. */
typedef struct tm_bench_slo {
    double ttft_ms, tpot_ms, e2el_ms;
} tm_bench_slo;

/* Mean, median, std and the requested percentiles of one metric, in ms. */
typedef struct tm_bench_dist {
    int n;                           /* samples */
    double mean, median, std;        /* ms */
    double pct[TM_BENCH_MAX_PCTS];   /* ms, one per requested percentile */
} tm_bench_dist;

typedef struct tm_bench_summary {
    int completed, failed;           /* requests */
    long long total_input;           /* prompt tokens of completed requests */
    long long total_output;          /* output tokens of completed requests */
    long long total_cached;          /* cached prompt tokens where reported */
    long long input_with_cache_info; /* prompt tokens of the requests that reported them */
    double duration_s;               /* the run's wall time */
    double request_throughput;       /* completed / duration, req/s */
    double request_goodput;          /* good / duration, req/s (0 without SLOs) */
    int n_good;                      /* completed requests meeting every SLO */
    int has_slo;                     /* any SLO was set */
    double output_throughput;        /* total_output / duration, tok/s */
    double total_token_throughput;   /* (total_input + total_output) / duration, tok/s */
    double max_output_tokens_per_s;  /* most output chunks in one 1-s bucket of the run */
    int max_concurrent_requests;     /* peak requests in flight (completed ones) */
    double prefix_cache_hit_rate;    /* total_cached / input_with_cache_info; < 0 unknown */
    int n_pcts;                      /* percentiles requested */
    double pcts[TM_BENCH_MAX_PCTS];  /* e.g. 90, 99 */
    tm_bench_dist ttft, tpot, itl, e2el;
} tm_bench_summary;

/* Linear-interpolation percentile p in [0, 100] of sorted[0..n); 0 when n == 0. */
double tm_bench_percentile(const double *sorted, int n, double p);

/* Summarizes n records of a run that lasted duration_s. pcts: n_pcts percentiles in
 * [0, 100] (n_pcts <= TM_BENCH_MAX_PCTS). Returns 0, TM_EINVAL or TM_ENOMEM. */
int tm_bench_summarize(const tm_bench_record *recs, int n, double duration_s, const double *pcts,
                       int n_pcts, const tm_bench_slo *slo, tm_bench_summary *out);

#ifdef __cplusplus
}
#endif
#endif

/* metrics.h - Prometheus text exposition for /metrics.
 *
 * Names follow vLLM's with the `tokenmill:` prefix, so dashboards written for vLLM need
 * only the prefix changed. Counters and histograms are fed by the loop thread from engine
 * events; gauges come from a tm_engine_stats snapshot taken at scrape time. Loop thread
 * only (no locking). */
#ifndef TM_METRICS_H
#define TM_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "scheduler/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { TM_HIST_MAX_BUCKETS = 24 };

typedef struct tm_histogram {
    const double *bounds;                /* (n_bounds) upper bounds, ascending; +Inf implied */
    int n_bounds;
    uint64_t counts[TM_HIST_MAX_BUCKETS];/* per bucket (not cumulative); last is +Inf */
    double sum;                          /* of observed values */
    uint64_t count;                      /* observations */
} tm_histogram;

typedef struct tm_metrics {
    tm_histogram ttft;          /* time_to_first_token_seconds */
    tm_histogram itl;           /* inter_token_latency_seconds */
    tm_histogram e2e;           /* e2e_request_latency_seconds */
    /* vLLM's per-request phases (engine time): waiting, first scheduling to first token,
     * first to last token, first scheduling to last token; and token counts. */
    tm_histogram queue;         /* request_queue_time_seconds */
    tm_histogram prefill;       /* request_prefill_time_seconds */
    tm_histogram decode;        /* request_decode_time_seconds */
    tm_histogram inference;     /* request_inference_time_seconds */
    tm_histogram prompt_tokens; /* request_prompt_tokens */
    tm_histogram gen_tokens;    /* request_generation_tokens */
    double token_bounds[TM_HIST_MAX_BUCKETS - 1]; /* 1, 2, 5, 10, ... up to max_model_len */
    uint64_t success[4];        /* request_success_total by tm_finish (stop, length, abort) */
    uint64_t http_errors;       /* requests answered with an error status */
    /* structured output's grammar cache, copied from its stats at scrape time */
    uint64_t grammar_compiles;  /* grammar_compiles_total: grammars compiled (cache misses) */
    uint64_t grammar_hits;      /* grammar_cache_hits_total */
    double grammar_compile_s;   /* grammar_compile_seconds_total */
} tm_metrics;

void tm_metrics_init(tm_metrics *m);
/* Token-count buckets 1-2-5 up to max_model_len (vLLM's build_1_2_5_buckets). */
void tm_metrics_set_max_model_len(tm_metrics *m, int max_model_len);
/* Observes a finished request's phases and token counts from its last event. */
void tm_metrics_observe_request(tm_metrics *m, const tm_event *last);
void tm_histogram_observe(tm_histogram *h, double v);

/* Renders the exposition text (malloc'd) for model_name with the engine snapshot st. */
char *tm_metrics_render(const tm_metrics *m, const tm_engine_stats *st, const char *model_name,
                        size_t *len);

#ifdef __cplusplus
}
#endif
#endif

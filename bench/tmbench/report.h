/* report.h - the outputs of a run: the table on the terminal and the JSON result, whose
 * keys are `vllm bench serve`'s wherever it has the same notion (duration, completed,
 * failed, total_input_tokens, total_output_tokens, request_throughput, request_goodput,
 * output_throughput, total_token_throughput, max_output_tokens_per_s,
 * max_concurrent_requests, {mean,median,std,pNN}_{ttft,tpot,itl,e2el}_ms, and with
 * --save-detailed input_lens, output_lens, ttfts, itls, start_times, errors). */
#ifndef TM_BENCH_REPORT_H
#define TM_BENCH_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "bench/tmbench/cost.h"
#include "bench/tmbench/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { TM_BENCH_M_TTFT = 1, TM_BENCH_M_TPOT = 2, TM_BENCH_M_ITL = 4, TM_BENCH_M_E2EL = 8 };

/* What was run, as the report names it. Strings are borrowed. */
typedef struct tm_bench_run_info {
    const char *backend;      /* openai | openai-chat */
    const char *endpoint;     /* /v1/completions ... */
    const char *base_url;
    const char *model;
    const char *dataset;      /* random | prefix | chat | file */
    const char *label;        /* or NULL */
    int num_prompts;
    double request_rate;      /* inf: all at once */
    double burstiness;
    int max_concurrency;      /* 0: none */
    uint64_t seed;
    unsigned metrics;         /* TM_BENCH_M_* whose statistics are reported */
    tm_bench_slo slo;         /* goodput objectives */
} tm_bench_run_info;

/* The "Serving Benchmark Result" table. */
void tm_bench_report_print(FILE *f, const tm_bench_run_info *info, const tm_bench_summary *s);

/* The result object (a jansson json_t*, returned as void* so this header needs no
 * jansson); NULL when out of memory. Caller owns it. */
void *tm_bench_report_json(const tm_bench_run_info *info, const tm_bench_summary *s);
/* Adds the per-request arrays (--save-detailed) for recs[0..n). */
void tm_bench_report_add_detail(void *result, const tm_bench_record *recs, int n);
/* Adds result["cost"][key] = the cost figures and each price row's comparison. */
void tm_bench_report_add_cost(void *result, const char *key, const char *host_label, const tm_bench_cost *c,
                              const tm_bench_prices *prices);

#ifdef __cplusplus
}
#endif
#endif

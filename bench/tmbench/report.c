/* report.c - the terminal table and the JSON result of a run (see report.h). */
#include "bench/tmbench/report.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

static const struct {
    unsigned bit;
    const char *key, *name, *header;
    size_t off;
} METRICS[] = {
    {TM_BENCH_M_TTFT, "ttft", "TTFT", "Time to First Token", offsetof(tm_bench_summary, ttft)},
    {TM_BENCH_M_TPOT, "tpot", "TPOT", "Time per Output Token (excl. 1st token)", offsetof(tm_bench_summary, tpot)},
    {TM_BENCH_M_ITL, "itl", "ITL", "Inter-token Latency", offsetof(tm_bench_summary, itl)},
    {TM_BENCH_M_E2EL, "e2el", "E2EL", "End-to-end Latency", offsetof(tm_bench_summary, e2el)},
};

/* "99" for 99, "99.9" for 99.9, as vLLM names its keys */
static void pct_word(double p, char *out, size_t n) {
    if (p == floor(p)) snprintf(out, n, "%d", (int)p);
    else snprintf(out, n, "%g", p);
}

static void rule(FILE *f, const char *title, char c) {
    int len = (int)strlen(title), left = (50 - len) / 2, right = 50 - len - left;
    for (int i = 0; i < left; i++) fputc(c, f);
    fputs(title, f);
    for (int i = 0; i < right; i++) fputc(c, f);
    fputc('\n', f);
}

void tm_bench_report_print(FILE *f, const tm_bench_run_info *in, const tm_bench_summary *s) {
    rule(f, " Serving Benchmark Result ", '=');
    fprintf(f, "%-40s %d\n", "Successful requests:", s->completed);
    fprintf(f, "%-40s %d\n", "Failed requests:", s->failed);
    if (in->max_concurrency > 0) fprintf(f, "%-40s %d\n", "Maximum request concurrency:", in->max_concurrency);
    if (!isinf(in->request_rate)) fprintf(f, "%-40s %-10.2f\n", "Request rate configured (RPS):", in->request_rate);
    fprintf(f, "%-40s %-10.2f\n", "Benchmark duration (s):", s->duration_s);
    fprintf(f, "%-40s %lld\n", "Total input tokens:", s->total_input);
    fprintf(f, "%-40s %lld\n", "Total generated tokens:", s->total_output);
    fprintf(f, "%-40s %-10.2f\n", "Request throughput (req/s):", s->request_throughput);
    if (s->has_slo) fprintf(f, "%-40s %-10.2f\n", "Request goodput (req/s):", s->request_goodput);
    fprintf(f, "%-40s %-10.2f\n", "Output token throughput (tok/s):", s->output_throughput);
    fprintf(f, "%-40s %-10.2f\n", "Peak output token throughput (tok/s):", s->max_output_tokens_per_s);
    fprintf(f, "%-40s %d\n", "Peak concurrent requests:", s->max_concurrent_requests);
    fprintf(f, "%-40s %-10.2f\n", "Total token throughput (tok/s):", s->total_token_throughput);
    if (s->prefix_cache_hit_rate >= 0)
        fprintf(f, "%-40s %-10.4f (%lld of %lld prompt tokens)\n", "Prefix cache hit rate:",
                s->prefix_cache_hit_rate, s->total_cached, s->input_with_cache_info);
    else
        fprintf(f, "%-40s %s\n", "Prefix cache hit rate:", "- (the server reported no cached tokens)");
    for (size_t m = 0; m < sizeof METRICS / sizeof *METRICS; m++) {
        if (!(in->metrics & METRICS[m].bit)) continue;
        const tm_bench_dist *d = (const tm_bench_dist *)((const char *)s + METRICS[m].off);
        char label[64], w[16];
        rule(f, METRICS[m].header, '-');
        snprintf(label, sizeof label, "Mean %s (ms):", METRICS[m].name);
        fprintf(f, "%-40s %-10.2f\n", label, d->mean);
        snprintf(label, sizeof label, "Median %s (ms):", METRICS[m].name);
        fprintf(f, "%-40s %-10.2f\n", label, d->median);
        for (int i = 0; i < s->n_pcts; i++) {
            pct_word(s->pcts[i], w, sizeof w);
            snprintf(label, sizeof label, "P%s %s (ms):", w, METRICS[m].name);
            fprintf(f, "%-40s %-10.2f\n", label, d->pct[i]);
        }
    }
    rule(f, "", '=');
}

void *tm_bench_report_json(const tm_bench_run_info *in, const tm_bench_summary *s) {
    char date[32];
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    strftime(date, sizeof date, "%Y%m%d-%H%M%S", &tmv);
    json_t *r = json_object();
    if (!r) return NULL;
    json_object_set_new(r, "date", json_string(date));
    json_object_set_new(r, "tool", json_string("tokenmill bench"));
    json_object_set_new(r, "backend", json_string(in->backend));
    json_object_set_new(r, "endpoint_type", json_string(in->backend));
    json_object_set_new(r, "endpoint", json_string(in->endpoint));
    json_object_set_new(r, "base_url", json_string(in->base_url));
    json_object_set_new(r, "label", in->label ? json_string(in->label) : json_null());
    json_object_set_new(r, "model_id", json_string(in->model ? in->model : ""));
    json_object_set_new(r, "tokenizer_id", json_null());
    json_object_set_new(r, "dataset_name", json_string(in->dataset));
    json_object_set_new(r, "num_prompts", json_integer(in->num_prompts));
    json_object_set_new(r, "seed", json_integer((json_int_t)in->seed));
    json_object_set_new(r, "request_rate", isinf(in->request_rate) ? json_string("inf") : json_real(in->request_rate));
    json_object_set_new(r, "burstiness", json_real(in->burstiness));
    json_object_set_new(r, "max_concurrency", in->max_concurrency > 0 ? json_integer(in->max_concurrency) : json_null());
    json_object_set_new(r, "duration", json_real(s->duration_s));
    json_object_set_new(r, "completed", json_integer(s->completed));
    json_object_set_new(r, "failed", json_integer(s->failed));
    json_object_set_new(r, "total_input_tokens", json_integer(s->total_input));
    json_object_set_new(r, "total_output_tokens", json_integer(s->total_output));
    json_object_set_new(r, "request_throughput", json_real(s->request_throughput));
    json_object_set_new(r, "request_goodput", s->has_slo ? json_real(s->request_goodput) : json_null());
    json_object_set_new(r, "output_throughput", json_real(s->output_throughput));
    json_object_set_new(r, "total_token_throughput", json_real(s->total_token_throughput));
    json_object_set_new(r, "max_output_tokens_per_s", json_real(s->max_output_tokens_per_s));
    json_object_set_new(r, "max_concurrent_requests", json_integer(s->max_concurrent_requests));
    json_object_set_new(r, "total_cached_tokens", json_integer(s->total_cached));
    json_object_set_new(r, "prefix_cache_hit_rate",
                        s->prefix_cache_hit_rate >= 0 ? json_real(s->prefix_cache_hit_rate) : json_null());
    if (s->has_slo) {
        json_t *g = json_object();
        if (in->slo.ttft_ms >= 0) json_object_set_new(g, "ttft", json_real(in->slo.ttft_ms));
        if (in->slo.tpot_ms >= 0) json_object_set_new(g, "tpot", json_real(in->slo.tpot_ms));
        if (in->slo.e2el_ms >= 0) json_object_set_new(g, "e2el", json_real(in->slo.e2el_ms));
        json_object_set_new(r, "goodput_slos_ms", g);
        json_object_set_new(r, "good_requests", json_integer(s->n_good));
    }
    for (size_t m = 0; m < sizeof METRICS / sizeof *METRICS; m++) {
        if (!(in->metrics & METRICS[m].bit)) continue;
        const tm_bench_dist *d = (const tm_bench_dist *)((const char *)s + METRICS[m].off);
        char key[64], w[16];
        snprintf(key, sizeof key, "mean_%s_ms", METRICS[m].key);
        json_object_set_new(r, key, json_real(d->mean));
        snprintf(key, sizeof key, "median_%s_ms", METRICS[m].key);
        json_object_set_new(r, key, json_real(d->median));
        snprintf(key, sizeof key, "std_%s_ms", METRICS[m].key);
        json_object_set_new(r, key, json_real(d->std));
        for (int i = 0; i < s->n_pcts; i++) {
            pct_word(s->pcts[i], w, sizeof w);
            snprintf(key, sizeof key, "p%s_%s_ms", w, METRICS[m].key);
            json_object_set_new(r, key, json_real(d->pct[i]));
        }
    }
    return r;
}

void tm_bench_report_add_detail(void *result, const tm_bench_record *recs, int n) {
    json_t *r = result;
    json_t *in = json_array(), *out = json_array(), *ttft = json_array(), *itls = json_array(),
           *lat = json_array(), *start = json_array(), *arr = json_array(), *cached = json_array(),
           *errs = json_array();
    for (int i = 0; i < n; i++) {
        const tm_bench_record *x = &recs[i];
        json_array_append_new(in, json_integer(x->prompt_tokens));
        json_array_append_new(out, json_integer(x->ok ? x->output_tokens : 0));
        json_array_append_new(ttft, json_real(x->ok ? x->ttft_s : 0));
        json_t *g = json_array();
        for (int k = 0; x->ok && k < x->n_itl; k++) json_array_append_new(g, json_real(x->itl_s[k]));
        json_array_append_new(itls, g);
        json_array_append_new(lat, json_real(x->ok ? x->latency_s : 0));
        json_array_append_new(start, json_real(x->start_s));
        json_array_append_new(arr, json_real(x->arrival_s));
        json_array_append_new(cached, x->cached_tokens >= 0 ? json_integer(x->cached_tokens) : json_null());
        json_array_append_new(errs, json_string(x->error ? x->error : ""));
    }
    json_object_set_new(r, "input_lens", in);
    json_object_set_new(r, "output_lens", out);
    json_object_set_new(r, "ttfts", ttft);
    json_object_set_new(r, "itls", itls);
    json_object_set_new(r, "latencies", lat);
    json_object_set_new(r, "start_times", start);
    json_object_set_new(r, "arrival_times", arr);
    json_object_set_new(r, "cached_tokens", cached);
    json_object_set_new(r, "errors", errs);
}

static json_t *num_or_null(double v) { return v >= 0 ? json_real(v) : json_null(); }

void tm_bench_report_add_cost(void *result, const char *key, const char *host_label, const tm_bench_cost *c,
                              const tm_bench_prices *prices) {
    json_t *r = result, *cost = json_object_get(r, "cost");
    if (!cost) {
        cost = json_object();
        json_object_set_new(r, "cost", cost);
    }
    json_t *o = json_object();
    json_object_set_new(o, "host", json_string(host_label));
    json_object_set_new(o, "usd_per_hour", json_real(c->usd_per_hour));
    json_object_set_new(o, "input_tokens_per_s", json_real(c->input_tok_per_s));
    json_object_set_new(o, "output_tokens_per_s", json_real(c->output_tok_per_s));
    json_object_set_new(o, "usd_per_mtok_output", num_or_null(c->usd_per_mtok_output));
    json_object_set_new(o, "usd_per_mtok_input", num_or_null(c->usd_per_mtok_input));
    json_object_set_new(o, "input_per_output_token", json_real(c->input_per_output));
    json_object_set_new(o, "hours_per_month", json_real(TM_BENCH_HOURS_PER_MONTH));
    json_object_set_new(o, "usd_per_month", json_real(c->monthly_usd));
    json_object_set_new(o, "output_tokens_per_month_capacity", json_real(c->monthly_capacity_output));
    if (prices) {
        json_object_set_new(o, "prices_file", json_string(prices->path));
        json_object_set_new(o, "prices_as_of", json_string(prices->as_of));
        json_t *tiers = json_array();
        for (int i = 0; i < prices->n; i++) {
            const tm_bench_price *p = &prices->rows[i];
            double be = tm_bench_cost_breakeven_output(c, p);
            json_array_append_new(tiers, json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:o}", "tier", p->tier, "model",
                                                   p->model, "input_usd_per_mtok", num_or_null(p->in_usd),
                                                   "output_usd_per_mtok", num_or_null(p->out_usd),
                                                   "api_usd_per_mtok_output_at_mix",
                                                   num_or_null(tm_bench_cost_api_mix_usd(c, p)),
                                                   "breakeven_output_tokens_per_month", num_or_null(be),
                                                   "breakeven_within_capacity",
                                                   be >= 0 ? json_boolean(be <= c->monthly_capacity_output)
                                                           : json_null()));
        }
        json_object_set_new(o, "tiers", tiers);
    }
    json_object_set_new(cost, key, o);
}

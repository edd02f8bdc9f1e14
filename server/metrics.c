/* metrics.c - Prometheus text format 0.0.4 rendering. See metrics.h. */
#include "server/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

/* vLLM's bucket bounds for the same histograms. */
static const double k_ttft[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double k_itl[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                               0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double k_e2e[] = {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0,
                               20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0};

static void hist_init(tm_histogram *h, const double *b, int n) {
    memset(h, 0, sizeof *h);
    h->bounds = b;
    h->n_bounds = n;
}

void tm_metrics_init(tm_metrics *m) {
    memset(m, 0, sizeof *m);
    hist_init(&m->ttft, k_ttft, (int)TM_ARRAY_LEN(k_ttft));
    hist_init(&m->itl, k_itl, (int)TM_ARRAY_LEN(k_itl));
    hist_init(&m->e2e, k_e2e, (int)TM_ARRAY_LEN(k_e2e));
    hist_init(&m->queue, k_e2e, (int)TM_ARRAY_LEN(k_e2e));
    hist_init(&m->prefill, k_e2e, (int)TM_ARRAY_LEN(k_e2e));
    hist_init(&m->decode, k_e2e, (int)TM_ARRAY_LEN(k_e2e));
    hist_init(&m->inference, k_e2e, (int)TM_ARRAY_LEN(k_e2e));
    tm_metrics_set_max_model_len(m, 8192);
}

void tm_metrics_set_max_model_len(tm_metrics *m, int max_model_len) {
    static const int mant[] = {1, 2, 5};
    int n = 0;
    for (double p = 1; n < TM_HIST_MAX_BUCKETS - 1; p *= 10) {
        int done = 0;
        for (int k = 0; k < 3 && n < TM_HIST_MAX_BUCKETS - 1; k++) {
            double v = mant[k] * p;
            if (v > max_model_len) {
                done = 1;
                break;
            }
            m->token_bounds[n++] = v;
        }
        if (done) break;
    }
    hist_init(&m->prompt_tokens, m->token_bounds, n);
    hist_init(&m->gen_tokens, m->token_bounds, n);
}

void tm_metrics_observe_request(tm_metrics *m, const tm_event *ev) {
    if (ev->t_scheduled > 0 && ev->t_arrival > 0)
        tm_histogram_observe(&m->queue, ev->t_scheduled - ev->t_arrival);
    if (ev->t_first_token > 0) {
        tm_histogram_observe(&m->prefill, ev->t_first_token - ev->t_scheduled);
        tm_histogram_observe(&m->decode, ev->t_last_token - ev->t_first_token);
        tm_histogram_observe(&m->inference, ev->t_last_token - ev->t_scheduled);
    }
    tm_histogram_observe(&m->prompt_tokens, ev->prompt_tokens);
    tm_histogram_observe(&m->gen_tokens, ev->completion_tokens);
}

void tm_histogram_observe(tm_histogram *h, double v) {
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

typedef struct out {
    char *p;
    size_t n, cap;
    int oom;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...) {
    if (o->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->n, o->cap - o->n, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < o->cap - o->n) {
            o->n += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)(n > 0 ? n : 0);
        char *q = realloc(o->p, cap);
        if (!q) {
            o->oom = 1;
            return;
        }
        o->p = q;
        o->cap = cap;
    }
}

static void put_head(out *o, const char *name, const char *type, const char *help) {
    put(o, "# HELP tokenmill:%s %s\n# TYPE tokenmill:%s %s\n", name, help, name, type);
}

static void put_hist(out *o, const char *name, const char *help, const tm_histogram *h,
                     const char *lbl) {
    put_head(o, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        put(o, "tokenmill:%s_bucket{%s,le=\"%g\"} %llu\n", name, lbl, h->bounds[i],
            (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    put(o, "tokenmill:%s_bucket{%s,le=\"+Inf\"} %llu\n", name, lbl, (unsigned long long)cum);
    put(o, "tokenmill:%s_sum{%s} %.9g\n", name, lbl, h->sum);
    put(o, "tokenmill:%s_count{%s} %llu\n", name, lbl, (unsigned long long)h->count);
}

/* Prometheus label values escape \, " and newline. */
static void escape_label(const char *s, char *dst, size_t cap) {
    size_t n = 0;
    for (; *s && n + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') dst[n++] = '\\', dst[n++] = *s;
        else if (*s == '\n') dst[n++] = '\\', dst[n++] = 'n';
        else dst[n++] = *s;
    }
    dst[n] = 0;
}

char *tm_metrics_render(const tm_metrics *m, const tm_engine_stats *st, const char *model_name,
                        size_t *len) {
    out o = {malloc(8192), 0, 8192, 0};
    if (!o.p) return NULL;
    char name[300], lbl[320];
    escape_label(model_name, name, sizeof name);
    snprintf(lbl, sizeof lbl, "model_name=\"%s\"", name);
    double usage = st->n_blocks_total > 0 ? (double)st->n_blocks_used / st->n_blocks_total : 0;

    put_head(&o, "num_requests_running", "gauge", "Requests in the running batch.");
    put(&o, "tokenmill:num_requests_running{%s} %d\n", lbl, st->n_running);
    put_head(&o, "num_requests_waiting", "gauge", "Requests waiting to be admitted.");
    put(&o, "tokenmill:num_requests_waiting{%s} %d\n", lbl, st->n_waiting);
    put_head(&o, "kv_cache_usage_perc", "gauge", "Fraction of KV-cache pages in use (0..1).");
    put(&o, "tokenmill:kv_cache_usage_perc{%s} %.6g\n", lbl, usage);
    put_head(&o, "kv_cache_blocks_used", "gauge", "KV-cache pages referenced by a sequence.");
    put(&o, "tokenmill:kv_cache_blocks_used{%s} %d\n", lbl, st->n_blocks_used);
    put_head(&o, "kv_cache_blocks_total", "gauge", "KV-cache pages in the pool.");
    put(&o, "tokenmill:kv_cache_blocks_total{%s} %d\n", lbl, st->n_blocks_total);
    put_head(&o, "kv_cache_blocks_cached", "gauge", "Free pages still holding a cached prefix.");
    put(&o, "tokenmill:kv_cache_blocks_cached{%s} %d\n", lbl, st->n_blocks_cached);
    put_head(&o, "prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.");
    put(&o, "tokenmill:prefix_cache_queries_total{%s} %llu\n", lbl,
        (unsigned long long)st->prefix_queries);
    put_head(&o, "prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.");
    put(&o, "tokenmill:prefix_cache_hits_total{%s} %llu\n", lbl,
        (unsigned long long)st->prefix_hits);
    put_head(&o, "prompt_tokens_total", "counter", "Prompt tokens prefilled.");
    put(&o, "tokenmill:prompt_tokens_total{%s} %llu\n", lbl, (unsigned long long)st->prompt_tokens);
    put_head(&o, "generation_tokens_total", "counter", "Tokens generated.");
    put(&o, "tokenmill:generation_tokens_total{%s} %llu\n", lbl,
        (unsigned long long)st->generation_tokens);
    put_head(&o, "num_preemptions_total", "counter", "Sequences preempted for lack of KV pages.");
    put(&o, "tokenmill:num_preemptions_total{%s} %llu\n", lbl,
        (unsigned long long)st->n_preemptions);
    put_head(&o, "request_success_total", "counter", "Finished requests by finish reason.");
    static const char *reasons[] = {"", "stop", "length", "abort"};
    for (int r = 1; r <= 3; r++)
        put(&o, "tokenmill:request_success_total{%s,finished_reason=\"%s\"} %llu\n", lbl,
            reasons[r], (unsigned long long)m->success[r]);
    put_head(&o, "http_request_errors_total", "counter", "Requests answered with an error status.");
    put(&o, "tokenmill:http_request_errors_total{%s} %llu\n", lbl,
        (unsigned long long)m->http_errors);
    put_head(&o, "grammar_compiles_total", "counter", "Structured-output grammars compiled (grammar cache misses).");
    put(&o, "tokenmill:grammar_compiles_total{%s} %llu\n", lbl, (unsigned long long)m->grammar_compiles);
    put_head(&o, "grammar_cache_hits_total", "counter", "Structured-output grammars found in the grammar cache.");
    put(&o, "tokenmill:grammar_cache_hits_total{%s} %llu\n", lbl, (unsigned long long)m->grammar_hits);
    put_head(&o, "grammar_compile_seconds_total", "counter", "Seconds spent compiling grammars (thread pool).");
    put(&o, "tokenmill:grammar_compile_seconds_total{%s} %.6f\n", lbl, m->grammar_compile_s);
    put_hist(&o, "time_to_first_token_seconds", "Time to first token, from the request's first byte.",
             &m->ttft, lbl);
    put_hist(&o, "inter_token_latency_seconds", "Time between consecutive tokens.", &m->itl, lbl);
    put_hist(&o, "e2e_request_latency_seconds", "Request latency, first byte to last token.",
             &m->e2e, lbl);
    put_hist(&o, "request_queue_time_seconds", "Time the request waited to be scheduled.",
             &m->queue, lbl);
    put_hist(&o, "request_prefill_time_seconds", "First scheduling to the first token.",
             &m->prefill, lbl);
    put_hist(&o, "request_decode_time_seconds", "First token to the last token.", &m->decode, lbl);
    put_hist(&o, "request_inference_time_seconds", "First scheduling to the last token.",
             &m->inference, lbl);
    put_hist(&o, "request_prompt_tokens", "Prompt tokens of each finished request.",
             &m->prompt_tokens, lbl);
    put_hist(&o, "request_generation_tokens", "Tokens generated by each finished request.",
             &m->gen_tokens, lbl);
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    *len = o.n;
    return o.p;
}

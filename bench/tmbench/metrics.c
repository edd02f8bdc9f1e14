/* metrics.c - the summary statistics of a benchmark run (definitions in metrics.h). */
#include "bench/tmbench/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

int tm_bench_record_add_itl(tm_bench_record *r, double gap_s) {
    if (r->n_itl == r->cap_itl) {
        int cap = r->cap_itl ? r->cap_itl * 2 : 64;
        double *p = realloc(r->itl_s, sizeof *p * (size_t)cap);
        if (!p) return TM_ENOMEM;
        r->itl_s = p;
        r->cap_itl = cap;
    }
    r->itl_s[r->n_itl++] = gap_s;
    return 0;
}

void tm_bench_record_clear(tm_bench_record *r) {
    free(r->itl_s);
    free(r->error);
    free(r->text);
    memset(r, 0, sizeof *r);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double tm_bench_percentile(const double *sorted, int n, double p) {
    if (n <= 0) return 0.0;
    double rank = p / 100.0 * (n - 1);
    int lo = (int)floor(rank);
    if (lo < 0) lo = 0;
    if (lo >= n - 1) return sorted[n - 1];
    double frac = rank - lo;
    return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * frac;
}

/* Fills d from n values in seconds (sorted in place), reporting ms. */
static void dist_of(double *v, int n, const double *pcts, int n_pcts, tm_bench_dist *d) {
    memset(d, 0, sizeof *d);
    d->n = n;
    if (n == 0) return;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double sum = 0, sq = 0;
    for (int i = 0; i < n; i++) sum += v[i];
    double mean = sum / n;
    for (int i = 0; i < n; i++) sq += (v[i] - mean) * (v[i] - mean);
    d->mean = mean * 1e3;
    d->std = sqrt(sq / n) * 1e3;
    d->median = tm_bench_percentile(v, n, 50) * 1e3;
    for (int i = 0; i < n_pcts; i++) d->pct[i] = tm_bench_percentile(v, n, pcts[i]) * 1e3;
}

typedef struct edge {
    double t;  /* when */
    int delta; /* +1 a request starts, -1 it ends */
} edge;

static int cmp_edge(const void *a, const void *b) {
    const edge *x = a, *y = b;
    if (x->t != y->t) return (x->t > y->t) - (x->t < y->t);
    return x->delta - y->delta; /* an end before a start at the same instant: half-open */
}

/* Peak of requests in flight over the completed ones' [start, start + E2EL). */
static int peak_concurrency(const tm_bench_record *recs, int n, int completed) {
    edge *e = malloc(sizeof *e * (size_t)(2 * completed + 1));
    if (!e) return -1;
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (!recs[i].ok) continue;
        e[m++] = (edge){recs[i].start_s, +1};
        e[m++] = (edge){recs[i].start_s + recs[i].latency_s, -1};
    }
    qsort(e, (size_t)m, sizeof *e, cmp_edge);
    int cur = 0, peak = 0;
    for (int i = 0; i < m; i++) {
        cur += e[i].delta;
        if (cur > peak) peak = cur;
    }
    free(e);
    return peak;
}

/* Most output chunks in one 1-s bucket counted from the earliest start. */
static double peak_chunks_per_s(const tm_bench_record *recs, int n) {
    double t0 = INFINITY, t1 = -INFINITY;
    for (int i = 0; i < n; i++)
        if (recs[i].ok) {
            t0 = fmin(t0, recs[i].start_s);
            t1 = fmax(t1, recs[i].start_s + recs[i].latency_s);
        }
    if (!(t1 >= t0)) return 0.0;
    long nb = (long)ceil(t1 - t0) + 1;
    if (nb > (1L << 26)) return 0.0; /* a run of two years: refuse to count */
    double *b = calloc((size_t)nb, sizeof *b);
    if (!b) return 0.0;
    for (int i = 0; i < n; i++) {
        if (!recs[i].ok) continue;
        double t = recs[i].start_s + recs[i].ttft_s;
        for (int k = -1; k < recs[i].n_itl; k++) {
            if (k >= 0) t += recs[i].itl_s[k];
            long at = (long)(t - t0);
            if (at >= 0 && at < nb) b[at] += 1;
        }
    }
    double best = 0;
    for (long i = 0; i < nb; i++) best = fmax(best, b[i]);
    free(b);
    return best;
}

int tm_bench_summarize(const tm_bench_record *recs, int n, double duration_s, const double *pcts,
                       int n_pcts, const tm_bench_slo *slo, tm_bench_summary *out) {
    memset(out, 0, sizeof *out);
    if (n < 0 || n_pcts < 0 || n_pcts > TM_BENCH_MAX_PCTS || !(duration_s > 0)) return TM_EINVAL;
    for (int i = 0; i < n_pcts; i++)
        if (!(pcts[i] >= 0 && pcts[i] <= 100)) return TM_EINVAL;
    out->n_pcts = n_pcts;
    memcpy(out->pcts, pcts, sizeof *pcts * (size_t)n_pcts);
    out->duration_s = duration_s;
    out->has_slo = slo && (slo->ttft_ms >= 0 || slo->tpot_ms >= 0 || slo->e2el_ms >= 0);

    long n_itl = 0;
    for (int i = 0; i < n; i++)
        if (recs[i].ok) n_itl += recs[i].n_itl;
    double *ttft = malloc(sizeof(double) * (size_t)(n + 1));
    double *tpot = malloc(sizeof(double) * (size_t)(n + 1));
    double *e2el = malloc(sizeof(double) * (size_t)(n + 1));
    double *itl = malloc(sizeof(double) * (size_t)(n_itl + 1));
    int rc = TM_ENOMEM;
    if (!ttft || !tpot || !e2el || !itl) goto done;

    int n_tpot = 0;
    long k = 0;
    for (int i = 0; i < n; i++) {
        const tm_bench_record *r = &recs[i];
        if (!r->ok) {
            out->failed++;
            continue;
        }
        double t = 0; /* TPOT; 0 for one token, which then meets any TPOT SLO */
        if (r->output_tokens > 1) {
            t = (r->latency_s - r->ttft_s) / (r->output_tokens - 1);
            tpot[n_tpot++] = t;
        }
        ttft[out->completed] = r->ttft_s;
        e2el[out->completed] = r->latency_s;
        out->completed++;
        out->total_input += r->prompt_tokens;
        out->total_output += r->output_tokens;
        if (r->cached_tokens >= 0) {
            out->total_cached += r->cached_tokens;
            out->input_with_cache_info += r->prompt_tokens;
        }
        for (int j = 0; j < r->n_itl; j++) itl[k++] = r->itl_s[j];
        if (out->has_slo && (slo->ttft_ms < 0 || r->ttft_s * 1e3 <= slo->ttft_ms) &&
            (slo->tpot_ms < 0 || t * 1e3 <= slo->tpot_ms) &&
            (slo->e2el_ms < 0 || r->latency_s * 1e3 <= slo->e2el_ms))
            out->n_good++;
    }
    out->request_throughput = out->completed / duration_s;
    out->request_goodput = out->n_good / duration_s;
    out->output_throughput = (double)out->total_output / duration_s;
    out->total_token_throughput = (double)(out->total_input + out->total_output) / duration_s;
    out->prefix_cache_hit_rate =
        out->input_with_cache_info > 0 ? (double)out->total_cached / (double)out->input_with_cache_info
                                       : -1.0;
    out->max_concurrent_requests = peak_concurrency(recs, n, out->completed);
    if (out->max_concurrent_requests < 0) goto done;
    out->max_output_tokens_per_s = peak_chunks_per_s(recs, n);
    dist_of(ttft, out->completed, pcts, n_pcts, &out->ttft);
    dist_of(tpot, n_tpot, pcts, n_pcts, &out->tpot);
    dist_of(itl, (int)k, pcts, n_pcts, &out->itl);
    dist_of(e2el, out->completed, pcts, n_pcts, &out->e2el);
    rc = 0;
done:
    free(ttft);
    free(tpot);
    free(e2el);
    free(itl);
    return rc;
}

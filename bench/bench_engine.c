/* bench_engine.c - drives the engine directly (no HTTP) on a real GGUF model.
 *
 * Reports aggregate decode tok/s at 1, 4, 8, 16 and 32 concurrent sequences (128-token
 * prompts, 128 generated, greedy, ignore_eos) and the time to first token of a
 * 1,000-token prompt with a cold and a warm prefix cache.
 *
 * With --reps N the list of levels runs N times in rounds (the machine's speed drifts
 * between runs, so each level gets runs spread over the whole time) and the table shows
 * per level the median with its range, and the ratio to the first level: of the
 * medians, and its range over the rounds (each round's levels run back to back).
 *
 * usage: bench_engine [--model PATH | --synthetic PRESET:TYPE] [--device cpu|cuda|auto]
 *                     [--threads N] [--prompt N] [--gen N] [--seqs 1,4,8,16,32]
 *                     [--ttft-prompt N] [--reps N] [--kv-cache-dtype f16|int8]
 * --synthetic builds a random model of a real shape in memory (models/synth.h); --device
 * defaults to cpu so results stay comparable with earlier runs. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "models/model.h"
#include "scheduler/engine.h"
#include "server/cli_backend.h"

typedef struct bench_waiter {
    pthread_mutex_t mu; /* guards signals */
    pthread_cond_t cv;  /* signalled by on_event */
    int signals;        /* on_event calls so far */
} bench_waiter;

static void on_event(void *arg) {
    bench_waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->signals++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void wait_events(bench_waiter *w, int *seen) {
    pthread_mutex_lock(&w->mu);
    while (w->signals == *seen) pthread_cond_wait(&w->cv, &w->mu);
    *seen = w->signals;
    pthread_mutex_unlock(&w->mu);
}

static void make_prompt(int32_t *p, int n, uint32_t seed, int n_vocab) {
    uint32_t x = seed * 2654435761u + 99u;
    for (int i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        p[i] = 100 + (int32_t)((x >> 8) % (uint32_t)(n_vocab - 200));
    }
}

static tm_request greedy(const int32_t *prompt, int n, int max_tokens) {
    tm_request r;
    memset(&r, 0, sizeof r);
    r.prompt = prompt;
    r.n_prompt = n;
    r.max_tokens = max_tokens;
    tm_sampling_params_default(&r.sampling);
    r.sampling.temperature = 0;
    r.ignore_eos = 1;
    return r;
}

/* Runs n_seqs requests together; returns aggregate decode tok/s (tokens generated after
 * the last sequence got its first token, over the time since then). */
static double run_decode(tm_engine *e, bench_waiter *w, int *seen, int n_seqs, int n_prompt,
                         int n_gen, uint32_t seed, int n_vocab) {
    int32_t *prompts = malloc((size_t)n_seqs * n_prompt * sizeof *prompts);
    int *got = calloc((size_t)n_seqs, sizeof *got);
    uint64_t *ids = malloc((size_t)n_seqs * sizeof *ids);
    char err[256];
    for (int i = 0; i < n_seqs; i++) {
        make_prompt(prompts + (size_t)i * n_prompt, n_prompt, seed + (uint32_t)i, n_vocab);
        tm_request r = greedy(prompts + (size_t)i * n_prompt, n_prompt, n_gen);
        if (tm_engine_submit(e, &r, &ids[i], err, sizeof err) != TM_OK) {
            fprintf(stderr, "submit: %s\n", err);
            exit(1);
        }
    }
    uint64_t first_id = ids[0];
    int n_first = 0, n_done = 0;
    long after = 0;
    double t0 = 0, t_end = 0;
    tm_event evs[256];
    while (n_done < n_seqs) {
        int n = tm_engine_poll(e, evs, 256);
        if (n == 0) {
            wait_events(w, seen);
            continue;
        }
        double now = tm_time_s();
        for (int i = 0; i < n; i++) {
            int k = (int)(evs[i].id - first_id);
            if (evs[i].token >= 0) {
                if (got[k]++ == 0) {
                    if (++n_first == n_seqs) t0 = now;
                } else if (n_first == n_seqs) {
                    after++;
                }
            }
            if (evs[i].finish != TM_FINISH_NONE) n_done++;
            tm_event_free(&evs[i]);
        }
        t_end = now;
    }
    free(prompts);
    free(got);
    free(ids);
    return t_end > t0 ? (double)after / (t_end - t0) : 0.0;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts a copy); n <= TM_BENCH_MAX_REPS. */
enum { TM_BENCH_MAX_REPS = 64 };
static double median(const double *v, int n) {
    double c[TM_BENCH_MAX_REPS];
    memcpy(c, v, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, cmp_double);
    return n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
}

static void min_max(const double *v, int n, double *lo, double *hi) {
    *lo = *hi = v[0];
    for (int i = 1; i < n; i++) *lo = TM_MIN(*lo, v[i]), *hi = TM_MAX(*hi, v[i]);
}

/* Time from submit to the first token of one request. */
static double run_ttft(tm_engine *e, bench_waiter *w, int *seen, const int32_t *prompt, int n,
                       int *cached) {
    char err[256];
    tm_request r = greedy(prompt, n, 1);
    uint64_t id;
    double t = tm_time_s(), ttft = -1;
    if (tm_engine_submit(e, &r, &id, err, sizeof err) != TM_OK) {
        fprintf(stderr, "submit: %s\n", err);
        exit(1);
    }
    tm_event ev;
    for (;;) {
        if (tm_engine_poll(e, &ev, 1) == 0) {
            wait_events(w, seen);
            continue;
        }
        if (ttft < 0 && ev.token >= 0) ttft = tm_time_s() - t;
        int fin = ev.finish != TM_FINISH_NONE;
        if (fin) *cached = ev.cached_tokens;
        tm_event_free(&ev);
        if (fin) break;
    }
    return ttft;
}

int main(int argc, char **argv) {
    char path[1024];
    const char *model_path = tm_model_default_path(path, sizeof path);
    const char *synthetic = NULL, *device = "cpu";
    int threads = 0, n_prompt = 128, n_gen = 128, ttft_prompt = 1000, reps = 1, kv_dtype = TM_KV_F16;
    int seqs[16] = {1, 4, 8, 16, 32}, n_levels = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model_path = argv[++i];
        else if (!strcmp(argv[i], "--synthetic") && i + 1 < argc) synthetic = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc && tm_cli_device_ok(argv[i + 1])) device = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) n_prompt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gen") && i + 1 < argc) n_gen = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ttft-prompt") && i + 1 < argc) ttft_prompt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--kv-cache-dtype") && i + 1 < argc) kv_dtype = tm_kv_dtype_from_name(argv[++i]);
        else if (!strcmp(argv[i], "--seqs") && i + 1 < argc) {
            n_levels = 0;
            for (char *s = strtok(argv[++i], ","); s && n_levels < 16; s = strtok(NULL, ","))
                seqs[n_levels++] = atoi(s);
        } else {
            fprintf(stderr, "usage: %s [--model PATH | --synthetic PRESET:TYPE] [--device cpu|cuda|auto] "
                            "[--threads N] [--prompt N] [--gen N] [--seqs 1,4,8,16,32] [--ttft-prompt N] "
                            "[--reps N] [--kv-cache-dtype f16|int8]\n",
                    argv[0]);
            return 2;
        }
    }
    if (kv_dtype < 0) {
        fprintf(stderr, "bench_engine: --kv-cache-dtype must be f16 or int8\n");
        return 2;
    }
    if (reps < 1 || reps > TM_BENCH_MAX_REPS || n_levels < 1 || n_prompt < 1 || n_gen < 2 || ttft_prompt < 1) {
        fprintf(stderr, "bench_engine: --reps must be 1..%d; --seqs, --prompt and --ttft-prompt at "
                        "least 1, --gen at least 2\n", TM_BENCH_MAX_REPS);
        return 2;
    }
    for (int i = 0; i < n_levels; i++)
        if (seqs[i] < 1) {
            fprintf(stderr, "bench_engine: --seqs takes positive counts\n");
            return 2;
        }
    char err[512] = "";
    tm_backend *be = tm_cli_backend_create("bench_engine", device, threads, 1);
    if (!be) return 1;
    tm_model *model;
    if (tm_cli_model_open("bench_engine", synthetic ? NULL : model_path, synthetic, be, NULL, NULL, &model,
                          err, sizeof err) != TM_OK) {
        fprintf(stderr, "model: %s\n", err);
        return 1;
    }
    int n_vocab = tm_model_get_config(model)->n_vocab;
    int max_seqs = 1;
    for (int i = 0; i < n_levels; i++) max_seqs = TM_MAX(max_seqs, seqs[i]);

    bench_waiter w;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    w.signals = 0;
    int seen = 0;
    tm_engine_config c;
    tm_engine_config_default(&c);
    c.max_num_seqs = max_seqs;
    c.max_num_batched_tokens = TM_MAX(2048, max_seqs);
    c.kv_dtype = (tm_kv_dtype)kv_dtype;
    size_t need = (size_t)max_seqs * (n_prompt + n_gen) + 4 * (size_t)ttft_prompt;
    c.kv_cache_bytes = TM_MAX(c.kv_cache_bytes,
                              (need / 16 + 64) * tm_model_kv_bytes_per_block(model, 16, c.kv_dtype));
    c.on_event = on_event;
    c.on_event_arg = &w;
    tm_engine *e;
    if (tm_engine_create(model, &c, &e, err, sizeof err) != TM_OK) {
        fprintf(stderr, "engine: %s\n", err);
        return 1;
    }
    printf("model %s, backend %s (simd %s), %d threads on %d CPUs, prompt %d, generate %d, %s KV\n",
           tm_model_get_config(model)->name, be->name, tm_simd_name(tm_simd_detect()), threads,
           tm_n_cpus(), n_prompt, n_gen, tm_kv_dtype_name(c.kv_dtype));
    if (reps == 1) {
        printf("%6s %14s %9s\n", "seqs", "decode tok/s", "vs 1 seq");
        double base = 0;
        for (int i = 0; i < n_levels; i++) {
            double r = run_decode(e, &w, &seen, seqs[i], n_prompt, n_gen, 1000u * (uint32_t)(i + 1), n_vocab);
            if (i == 0) base = r;
            printf("%6d %14.1f %8.2fx\n", seqs[i], r, base > 0 ? r / base : 0.0);
            fflush(stdout);
        }
    } else {
        static double rate[16][TM_BENCH_MAX_REPS], ratio[16][TM_BENCH_MAX_REPS];
        for (int r = 0; r < reps; r++)
            for (int i = 0; i < n_levels; i++) {
                rate[i][r] = run_decode(e, &w, &seen, seqs[i], n_prompt, n_gen, 1000u * (uint32_t)(i + 1), n_vocab);
                ratio[i][r] = rate[0][r] > 0 ? rate[i][r] / rate[0][r] : 0.0;
            }
        /* "per round": each round's own ratio to the first level, whose levels ran minutes
         * apart at most, so a host that drifts between rounds moves it less */
        printf("%6s %14s %17s %10s %11s %15s   (%d rounds)\n", "seqs", "median tok/s", "range", "vs first",
               "per round", "range", reps);
        const double base = median(rate[0], reps);
        for (int i = 0; i < n_levels; i++) {
            double lo, hi, rlo, rhi;
            min_max(rate[i], reps, &lo, &hi);
            min_max(ratio[i], reps, &rlo, &rhi);
            printf("%6d %14.1f %8.1f-%-8.1f %9.2fx %10.2fx %6.2f-%-8.2f\n", seqs[i], median(rate[i], reps), lo, hi,
                   base > 0 ? median(rate[i], reps) / base : 0.0, median(ratio[i], reps), rlo, rhi);
        }
        fflush(stdout);
    }

    int32_t *p = malloc((size_t)ttft_prompt * sizeof *p);
    double cold[2], warm[2];
    int cached_cold = 0, cached_warm = 0;
    for (int rep = 0; rep < 2; rep++) {
        make_prompt(p, ttft_prompt, 777u + (uint32_t)rep, n_vocab);
        cold[rep] = run_ttft(e, &w, &seen, p, ttft_prompt, &cached_cold);
        warm[rep] = run_ttft(e, &w, &seen, p, ttft_prompt, &cached_warm);
    }
    double c_best = TM_MIN(cold[0], cold[1]), w_best = TM_MIN(warm[0], warm[1]);
    printf("TTFT %d-token prompt: cold %.1f ms (cached %d), warm %.1f ms (cached %d), "
           "warm/cold %.3f\n", ttft_prompt, 1e3 * c_best, cached_cold, 1e3 * w_best,
           cached_warm, w_best / c_best);
    tm_engine_stats st;
    tm_engine_get_stats(e, &st);
    printf("stats: prefix hits %llu of %llu prompt tokens, preemptions %llu, pages %d\n",
           (unsigned long long)st.prefix_hits, (unsigned long long)st.prefix_queries,
           (unsigned long long)st.n_preemptions, st.n_blocks_total);
    free(p);
    tm_engine_destroy(e);
    tm_model_destroy(model);
    be->destroy(be);
    return 0;
}

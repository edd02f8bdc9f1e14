/* bench_engine_latency.c - the engine's own TTFT and inter-token latency, without HTTP.
 *
 * Submits n_streams requests at once straight to tm_engine (greedy, ignore_eos,
 * max_tokens each) and times submit -> first token event and the gaps between token
 * events, as seen by a consumer thread woken by on_event (the same hand-off the server
 * uses). bench/bench_server.py runs it next to the same workload through HTTP.
 *
 * usage: bench_engine_latency MODEL N_STREAMS MAX_TOKENS PREFIX [THREADS]
 * Prints one JSON object: {"ttft_ms":[...], "itl_ms_mean":..., ...}. Prompt i is
 * "PREFIX i: <fixed text>", encoded as the server encodes a completion prompt. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "models/model.h"
#include "scheduler/engine.h"

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_signalled;

static void on_event(void *arg) {
    (void)arg;
    pthread_mutex_lock(&g_mu);
    g_signalled = 1;
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static const char *k_text =
    "Write a detailed essay about the history of bread, from the first flatbreads baked on "
    "hot stones to modern industrial bakeries, covering grains, yeast and ovens.";

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL N_STREAMS MAX_TOKENS PREFIX [THREADS]\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[2]), max_tokens = atoi(argv[3]), threads = argc > 5 ? atoi(argv[5]) : 0;
    if (n < 1 || n > 1024 || max_tokens < 1) return 2;
    char err[512];
    tm_backend *be = tm_backend_cpu_create(threads, TM_SIMD_AUTO, err, sizeof err);
    tm_model *m = NULL;
    if (!be || tm_model_load(argv[1], be, &m, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    tm_engine_config ec;
    tm_engine_config_default(&ec);
    ec.on_event = on_event;
    tm_engine *e = NULL;
    if (tm_engine_create(m, &ec, &e, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    double *t_submit = calloc(n, sizeof *t_submit), *t_first = calloc(n, sizeof *t_first);
    double *t_last = calloc(n, sizeof *t_last), itl_sum = 0;
    long itl_n = 0;
    int done = 0;
    for (int i = 0; i < n; i++) {
        char prompt[1024];
        snprintf(prompt, sizeof prompt, "%s %d: %s", argv[4], i, k_text);
        int32_t *ids = NULL;
        int n_ids = 0;
        tm_tokenizer_encode(tm_model_tokenizer(m), prompt, strlen(prompt), 1, 1, &ids, &n_ids);
        tm_request r = {0};
        r.prompt = ids;
        r.n_prompt = n_ids;
        r.max_tokens = max_tokens;
        tm_sampling_params_default(&r.sampling);
        r.sampling.temperature = 0;
        r.ignore_eos = 1;
        r.user = (void *)(intptr_t)i;
        uint64_t id;
        t_submit[i] = tm_time_s();
        if (tm_engine_submit(e, &r, &id, err, sizeof err)) {
            fprintf(stderr, "submit: %s\n", err);
            return 1;
        }
        free(ids);
    }
    tm_event evs[64];
    double deadline = tm_time_s() + 600;
    while (done < n && tm_time_s() < deadline) {
        pthread_mutex_lock(&g_mu);
        while (!g_signalled) pthread_cond_wait(&g_cv, &g_mu);
        g_signalled = 0;
        pthread_mutex_unlock(&g_mu);
        int k;
        while ((k = tm_engine_poll(e, evs, 64)) > 0) {
            double now = tm_time_s();
            for (int j = 0; j < k; j++) {
                int i = (int)(intptr_t)evs[j].user;
                if (evs[j].token >= 0) {
                    if (t_first[i] == 0) t_first[i] = now;
                    else itl_sum += now - t_last[i], itl_n++;
                    t_last[i] = now;
                }
                if (evs[j].finish != TM_FINISH_NONE) done++;
                tm_event_free(&evs[j]);
            }
        }
    }
    printf("{\"n_streams\":%d,\"max_tokens\":%d,\"ttft_ms\":[", n, max_tokens);
    for (int i = 0; i < n; i++) printf("%s%.3f", i ? "," : "", (t_first[i] - t_submit[i]) * 1e3);
    printf("],\"itl_ms_mean\":%.4f,\"completed\":%d}\n", itl_n ? itl_sum / itl_n * 1e3 : 0.0, done);
    tm_engine_destroy(e);
    tm_model_destroy(m);
    be->destroy(be);
    free(t_submit), free(t_first), free(t_last);
    return done == n ? 0 : 1;
}

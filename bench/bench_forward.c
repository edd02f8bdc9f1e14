/* bench_forward.c - tokenmill's counterpart of llama.cpp's llama-bench: the raw speed of
 * the model's forward pass on the CPU backend, without scheduler or server.
 *
 *   bench_forward -m MODEL [-t THREADS] [-p 512] [-n 128] [-r 3] [--simd scalar|avx2|...]
 *
 * pp: one tm_model_forward over -p tokens of one sequence (positions 0..p-1, logits of the
 *     last token only), as llama-bench's pp test does.
 * tg: -n single-token forwards from an empty cache (positions 0..n-1, logits every step),
 *     as llama-bench's tg test does.
 * Token ids are random with a fixed seed (the speed does not depend on them). One warm-up
 * run of each precedes the timed reps. The last line is machine-readable:
 *   RESULT model=<file> threads=<t> simd=<level> pp=<p> pp_tps=<mean> pp_sd=<sd>
 *          tg=<n> tg_tps=<mean> tg_sd=<sd> reps=<r>
 * (tok/s mean and sample standard deviation over the reps). Exit status 0 or 1. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "models/model.h"

enum { TM_BENCH_BLOCK = 16, TM_BENCH_MAX_REPS = 100 };

typedef struct tm_bench_args {
    const char *model; /* GGUF path */
    int n_threads;     /* CPU workers (<= 0: all CPUs) */
    int n_prompt;      /* tokens in the pp batch */
    int n_gen;         /* tokens in the tg run */
    int n_reps;        /* timed repetitions of each */
    int simd;          /* TM_SIMD_* level */
} tm_bench_args;

/* Everything one run needs, sized once so the timed loops never allocate. */
typedef struct tm_bench {
    tm_model *model;
    tm_kv_cache *kv;
    int n_vocab;
    int n_blocks;          /* pages for max(pp, tg) tokens */
    int32_t *tokens;       /* (max(pp, tg)) random ids */
    int32_t *pos;          /* (max(pp, tg)) 0, 1, 2, ... */
    int32_t *slots;        /* (max(pp, tg)) KV slot of each position */
    int32_t *block_table;  /* (n_blocks) 0, 1, 2, ... */
    float *logits;         /* (n_vocab) */
} tm_bench;

static double tm_bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t tm_bench_rand(uint64_t *s) { /* xorshift64*: fixed sequence per seed */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* One forward over tokens [start, start + n) of the sequence; logits of the last one. */
static int tm_bench_step(tm_bench *b, int start, int n) {
    int32_t seq_start[2] = {0, n};
    int32_t ctx_len[1] = {start + n};
    int32_t row[1] = {n - 1};
    tm_batch batch = {
        .n_tokens = n,
        .n_seqs = 1,
        .tokens = b->tokens + start,
        .pos = b->pos + start,
        .seq_start = seq_start,
        .ctx_len = ctx_len,
        .block_table = b->block_table,
        .max_blocks = b->n_blocks,
        .slots = b->slots + start,
        .n_logits = 1,
        .logit_rows = row,
    };
    char err[256] = "";
    int rc = tm_model_forward(b->model, b->kv, &batch, b->logits, err, sizeof err);
    if (rc != 0) fprintf(stderr, "bench_forward: forward failed (%d): %s\n", rc, err);
    return rc;
}

/* Seconds for one pp run (one batch of n tokens). Writing the same positions again
 * overwrites the cache, so no reset is needed between reps. */
static double tm_bench_pp(tm_bench *b, int n) {
    double t0 = tm_bench_now();
    if (tm_bench_step(b, 0, n) != 0) return -1;
    return tm_bench_now() - t0;
}

/* Seconds for one tg run: n single-token steps from position 0 (an empty context). */
static double tm_bench_tg(tm_bench *b, int n) {
    double t0 = tm_bench_now();
    for (int i = 0; i < n; i++)
        if (tm_bench_step(b, i, 1) != 0) return -1;
    return tm_bench_now() - t0;
}

static void tm_bench_stats(const double *tps, int n, double *mean, double *sd) {
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++) s += tps[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) ss += (tps[i] - *mean) * (tps[i] - *mean);
    *sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
}

static int tm_bench_parse_simd(const char *s) {
    for (int l = TM_SIMD_SCALAR; l <= TM_SIMD_LAST; l++)
        if (strcmp(s, tm_simd_name(l)) == 0) return l;
    return strcmp(s, "auto") == 0 ? TM_SIMD_AUTO : -2;
}

static int tm_bench_usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s -m MODEL [-t THREADS] [-p N_PROMPT] [-n N_GEN] [-r REPS] "
            "[--simd auto|scalar|avx2|avx512vnni|amx|neon]\n",
            argv0);
    return 1;
}

static int tm_bench_parse(int argc, char **argv, tm_bench_args *a) {
    *a = (tm_bench_args){NULL, 0, 512, 128, 3, TM_SIMD_AUTO};
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return -1;
        if (strcmp(argv[i], "-m") == 0) a->model = v;
        else if (strcmp(argv[i], "-t") == 0) a->n_threads = atoi(v);
        else if (strcmp(argv[i], "-p") == 0) a->n_prompt = atoi(v);
        else if (strcmp(argv[i], "-n") == 0) a->n_gen = atoi(v);
        else if (strcmp(argv[i], "-r") == 0) a->n_reps = atoi(v);
        else if (strcmp(argv[i], "--simd") == 0) a->simd = tm_bench_parse_simd(v);
        else return -1;
        i++;
    }
    if (!a->model || a->n_prompt < 1 || a->n_gen < 1 || a->n_reps < 1 ||
        a->n_reps > TM_BENCH_MAX_REPS || a->simd == -2)
        return -1;
    return 0;
}

int main(int argc, char **argv) {
    tm_bench_args a;
    if (tm_bench_parse(argc, argv, &a) != 0) return tm_bench_usage(argv[0]);

    int ret = 1;
    char err[256] = "";
    tm_bench b = {0};
    tm_backend *be = tm_backend_cpu_create(a.n_threads, a.simd, err, sizeof err);
    if (!be) {
        fprintf(stderr, "bench_forward: cpu backend: %s\n", err);
        return 1;
    }
    if (tm_model_load(a.model, be, &b.model, err, sizeof err) != 0) {
        fprintf(stderr, "bench_forward: %s\n", err); /* err names the file */
        goto done;
    }
    int n_max = a.n_prompt > a.n_gen ? a.n_prompt : a.n_gen;
    b.n_vocab = tm_model_get_config(b.model)->n_vocab;
    b.n_blocks = (n_max + TM_BENCH_BLOCK - 1) / TM_BENCH_BLOCK;
    b.tokens = malloc(sizeof(int32_t) * n_max);
    b.pos = malloc(sizeof(int32_t) * n_max);
    b.slots = malloc(sizeof(int32_t) * n_max);
    b.block_table = malloc(sizeof(int32_t) * b.n_blocks);
    b.logits = malloc(sizeof(float) * b.n_vocab);
    if (!b.tokens || !b.pos || !b.slots || !b.block_table || !b.logits) {
        fprintf(stderr, "bench_forward: out of memory\n");
        goto done;
    }
    uint64_t seed = 0x746f6b656e6d696cull; /* fixed: every run feeds the same ids */
    for (int i = 0; i < n_max; i++) {
        b.tokens[i] = (int32_t)(tm_bench_rand(&seed) % (uint64_t)b.n_vocab);
        b.pos[i] = i;
        b.slots[i] = i; /* block_table is the identity, so slot = position */
    }
    for (int i = 0; i < b.n_blocks; i++) b.block_table[i] = i;
    if (tm_model_kv_create(b.model, b.n_blocks, TM_BENCH_BLOCK, TM_KV_F16, &b.kv, NULL, 0) != 0 ||
        tm_model_reserve(b.model, n_max, 1) != 0) {
        fprintf(stderr, "bench_forward: cannot size the KV cache / buffers for %d tokens\n", n_max);
        goto done;
    }

    /* Warm-up: page in the weights, spin up the workers, fill caches. */
    if (tm_bench_pp(&b, a.n_prompt) < 0 || tm_bench_tg(&b, a.n_gen < 16 ? a.n_gen : 16) < 0)
        goto done;

    double pp[TM_BENCH_MAX_REPS], tg[TM_BENCH_MAX_REPS];
    for (int r = 0; r < a.n_reps; r++) {
        double t = tm_bench_pp(&b, a.n_prompt);
        if (t < 0) goto done;
        pp[r] = a.n_prompt / t;
    }
    for (int r = 0; r < a.n_reps; r++) {
        double t = tm_bench_tg(&b, a.n_gen);
        if (t < 0) goto done;
        tg[r] = a.n_gen / t;
    }
    double pp_mean, pp_sd, tg_mean, tg_sd;
    tm_bench_stats(pp, a.n_reps, &pp_mean, &pp_sd);
    tm_bench_stats(tg, a.n_reps, &tg_mean, &tg_sd);

    const char *file = strrchr(a.model, '/');
    file = file ? file + 1 : a.model;
    int simd = a.simd == TM_SIMD_AUTO ? tm_simd_detect() : a.simd;
    printf("%s: pp%d %.2f ± %.2f tok/s, tg%d %.2f ± %.2f tok/s (%d threads, %s, %d reps)\n",
           file, a.n_prompt, pp_mean, pp_sd, a.n_gen, tg_mean, tg_sd, a.n_threads,
           tm_simd_name(simd), a.n_reps);
    printf("RESULT model=%s threads=%d simd=%s pp=%d pp_tps=%.3f pp_sd=%.3f tg=%d tg_tps=%.3f "
           "tg_sd=%.3f reps=%d\n",
           file, a.n_threads, tm_simd_name(simd), a.n_prompt, pp_mean, pp_sd, a.n_gen, tg_mean,
           tg_sd, a.n_reps);
    ret = 0;

done:
    if (b.kv) tm_model_kv_destroy(b.model, b.kv);
    tm_model_destroy(b.model);
    free(b.tokens);
    free(b.pos);
    free(b.slots);
    free(b.block_table);
    free(b.logits);
    be->destroy(be);
    return ret;
}

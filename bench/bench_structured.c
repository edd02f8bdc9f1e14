/* bench_structured.c - what structured output costs.
 *
 *  1. Schema compile time (JSON Schema -> grammar -> token-mask cache) for every supported
 *     schema of the corpus (tests/server/data/schema_corpus.json).
 *  2. Mask time per step, p50 and p99: three random walks of up to 64 tokens through
 *     each compiled grammar (each step fills the mask, then takes a random allowed
 *     token), and the one-token check that keeps the batched argmax for greedy rows.
 *  Both on the model's vocabulary (the default model: SmolLM2, 49,152 tokens) and on a
 *  synthetic 128,256-token vocabulary (Llama 3's size): the model's pieces plus
 *  concatenations of two of them, so prefixes are shared the way a larger BPE's are;
 *  with --vocab GGUF also on that file's tokenizer (Gemma 3's has 262,144 tokens).
 *  3. With --tpot: time per output token of constrained against unconstrained decoding at
 *     1 and 16 streams, greedy and sampled, through the engine (no HTTP). The grammar is a
 *     schema that cannot end within the generated tokens (an array of at least 64
 *     objects), so every token is generated under the mask; both sides use ignore_eos.
 *
 * usage: bench_structured [--model PATH] [--threads N] [--corpus FILE] [--limit N]
 *                         [--no-128k] [--vocab GGUF] [--tpot] [--gen N] [--reps N] */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/common.h"
#include "kernels/backend.h"
#include "models/gguf.h"
#include "models/grammar.h"
#include "models/model.h"
#include "scheduler/engine.h"
#include "server/cli_backend.h"
#include "server/json_schema.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return rng_state;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p) {
    if (n == 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)ceil(p / 100.0 * n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* ---- vocabularies ---- */

/* The model's pieces plus two-piece concatenations up to n_target tokens. */
static tm_grammar_vocab *synthetic_vocab(const tm_tokenizer *tok, int n_target) {
    int n = tm_tokenizer_n_vocab(tok);
    const char **pieces = malloc((size_t)n_target * sizeof *pieces);
    size_t *lens = malloc((size_t)n_target * sizeof *lens);
    uint8_t *text = malloc((size_t)n_target);
    int32_t *eog = malloc((size_t)n * sizeof *eog), n_eog = 0;
    int32_t *texts = malloc((size_t)n * sizeof *texts), n_texts = 0;
    char *pool = malloc((size_t)(n_target - n) * 40 + 1);
    for (int id = 0; id < n; id++) {
        pieces[id] = tm_tokenizer_piece(tok, id, &lens[id]);
        text[id] = (uint8_t)tm_tokenizer_is_text(tok, id);
        if (tm_tokenizer_is_eog(tok, id)) eog[n_eog++] = id;
        else if (text[id] && lens[id] > 0) texts[n_texts++] = id;
    }
    size_t at = 0;
    for (int id = n; id < n_target; id++) {
        size_t la, lb;
        const char *a, *b;
        do {
            a = tm_tokenizer_piece(tok, texts[rng_next() % (uint64_t)n_texts], &la);
            b = tm_tokenizer_piece(tok, texts[rng_next() % (uint64_t)n_texts], &lb);
        } while (la + lb > 32);
        memcpy(pool + at, a, la);
        memcpy(pool + at + la, b, lb);
        pieces[id] = pool + at;
        lens[id] = la + lb;
        text[id] = 1;
        at += la + lb;
    }
    tm_grammar_vocab *v = NULL;
    char err[256];
    if (tm_grammar_vocab_create_pieces(n_target, pieces, lens, text, eog, n_eog, 0, &v, err, sizeof err))
        fprintf(stderr, "synthetic vocabulary: %s\n", err);
    free(pieces), free(lens), free(text), free(eog), free(texts), free(pool);
    return v;
}

/* ---- compile and mask times ---- */

typedef struct times {
    double *compile_ms; int n_compile; /* per schema */
    double *mask_us; int n_mask, cap_mask; /* per step */
    double *check_us; int n_check, cap_check; /* the one-token check, per step */
    int n_states_max;
} times;

static void push(double **v, int *n, int *cap, double x) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 1024;
        *v = realloc(*v, (size_t)*cap * sizeof **v);
    }
    (*v)[(*n)++] = x;
}

static void walk(tm_grammar_compiled *c, int n_vocab, times *t) {
    uint32_t *mask = malloc(tm_grammar_mask_words(n_vocab) * sizeof *mask);
    int32_t *allowed = malloc((size_t)n_vocab * sizeof *allowed);
    for (int w = 0; w < 3; w++) {
        tm_grammar_matcher *m;
        if (tm_grammar_matcher_create(c, &m)) break;
        for (int step = 0; step < 64 && !tm_grammar_matcher_ended(m); step++) {
            double t0 = tm_time_s();
            int n = tm_grammar_matcher_fill_mask(m, mask);
            double t1 = tm_time_s();
            push(&t->mask_us, &t->n_mask, &t->cap_mask, (t1 - t0) * 1e6);
            if (getenv("TM_BENCH_SLOW") && (t1 - t0) > 1e-3)
                fprintf(stderr, "slow mask: %.2f ms at step %d (allowed %d)\n", (t1 - t0) * 1e3, step, n);
            if (n <= 0) break;
            int k = 0;
            for (int id = 0; id < n_vocab; id++)
                if (mask[id >> 5] >> (id & 31) & 1) allowed[k++] = id;
            int32_t tok = allowed[rng_next() % (uint64_t)k];
            double t2 = tm_time_s();
            int ok = tm_grammar_matcher_allows(m, tok);
            push(&t->check_us, &t->n_check, &t->cap_check, (tm_time_s() - t2) * 1e6);
            if (!ok || tm_grammar_matcher_accept_token(m, tok)) {
                fprintf(stderr, "bench_structured: the mask allowed a token the matcher refuses\n");
                exit(1);
            }
        }
        tm_grammar_matcher_destroy(m);
    }
    free(mask);
    free(allowed);
}

static void corpus_times(json_t *corpus, tm_grammar_vocab *v, int limit, times *t) {
    size_t i;
    json_t *e;
    int done = 0;
    json_array_foreach(json_object_get(corpus, "schemas"), i, e) {
        if (strcmp(json_string_value(json_object_get(e, "expect")), "ok") != 0) continue;
        if (limit > 0 && done >= limit) break;
        char *gbnf = NULL, err[512];
        double t0 = tm_time_s();
        tm_grammar *g = NULL;
        tm_grammar_compiled *c = NULL;
        if (tm_json_schema_gbnf(json_object_get(e, "schema"), 0, &gbnf, err, sizeof err) ||
            tm_grammar_parse(gbnf, strlen(gbnf), NULL, &g, err, sizeof err)) {
            fprintf(stderr, "%s: %s\n", json_string_value(json_object_get(e, "name")), err);
            free(gbnf);
            continue;
        }
        int n_states = tm_grammar_n_states(g);
        if (tm_grammar_compile(g, v, &c, err, sizeof err)) {
            fprintf(stderr, "%s: %s\n", json_string_value(json_object_get(e, "name")), err);
            free(gbnf);
            continue;
        }
        t->compile_ms[t->n_compile++] = (tm_time_s() - t0) * 1e3;
        if (getenv("TM_BENCH_SLOW") && t->compile_ms[t->n_compile - 1] > 300)
            fprintf(stderr, "slow compile: %s %.0f ms, %d states\n", json_string_value(json_object_get(e, "name")),
                    t->compile_ms[t->n_compile - 1], n_states);
        if (n_states > t->n_states_max) t->n_states_max = n_states;
        free(gbnf);
        walk(c, tm_grammar_vocab_n_vocab(v), t);
        tm_grammar_compiled_release(c);
        done++;
    }
}

static void report(const char *name, times *t) {
    double total = 0;
    for (int i = 0; i < t->n_compile; i++) total += t->compile_ms[i];
    int nc = t->n_compile, nm = t->n_mask, nk = t->n_check;
    double c50 = pct(t->compile_ms, nc, 50), c90 = pct(t->compile_ms, nc, 90), c100 = pct(t->compile_ms, nc, 100);
    double m50 = pct(t->mask_us, nm, 50), m99 = pct(t->mask_us, nm, 99), m100 = pct(t->mask_us, nm, 100);
    double k50 = pct(t->check_us, nk, 50), k99 = pct(t->check_us, nk, 99);
    printf("| %s | %d | %.0f / %.0f / %.0f ms (total %.1f s) | %d | %.0f / %.0f us (max %.0f) | %.1f / %.1f us |\n",
           name, nc, c50, c90, c100, total / 1e3, nm, m50, m99, m100, k50, k99);
}

/* ---- TPOT through the engine ---- */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int signals;
} waiter;

static void on_event(void *arg) {
    waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->signals++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Median TPOT (ms) of n_streams requests generating n_gen tokens each. */
static double run_tpot(tm_engine *e, waiter *w, const int32_t *prompt, int n_prompt, int n_streams, int n_gen,
                       int constrained, float temperature, tm_grammar_compiled *g) {
    double first[64], last[64];
    int got[64] = {0};
    uint64_t ids[64];
    char err[256];
    for (int s = 0; s < n_streams; s++) {
        tm_request r;
        memset(&r, 0, sizeof r);
        r.prompt = prompt;
        r.n_prompt = n_prompt;
        r.max_tokens = n_gen;
        tm_sampling_params_default(&r.sampling);
        r.sampling.temperature = temperature;
        r.sampling.seed = 1000u + (uint64_t)s;
        r.ignore_eos = 1;
        tm_logit_processor p;
        if (constrained) {
            if (tm_grammar_processor_create(g, &p)) exit(1);
            r.processors = &p;
            r.n_processors = 1;
        }
        if (tm_engine_submit(e, &r, &ids[s], err, sizeof err)) {
            fprintf(stderr, "submit: %s\n", err);
            exit(1);
        }
    }
    int done = 0, seen = 0;
    tm_event evs[64];
    while (done < n_streams) {
        pthread_mutex_lock(&w->mu);
        while (w->signals == seen) pthread_cond_wait(&w->cv, &w->mu);
        seen = w->signals;
        pthread_mutex_unlock(&w->mu);
        int n;
        while ((n = tm_engine_poll(e, evs, 64)) > 0)
            for (int i = 0; i < n; i++) {
                int s = 0;
                while (s < n_streams && ids[s] != evs[i].id) s++;
                double now = tm_time_s();
                if (evs[i].token >= 0) {
                    if (got[s]++ == 0) first[s] = now;
                    last[s] = now;
                }
                if (evs[i].finish != TM_FINISH_NONE) {
                    if (evs[i].finish != TM_FINISH_LENGTH) fprintf(stderr, "warning: a request ended early\n");
                    done++;
                }
                tm_event_free(&evs[i]);
            }
    }
    double tpot[64];
    for (int s = 0; s < n_streams; s++) tpot[s] = got[s] > 1 ? (last[s] - first[s]) * 1e3 / (got[s] - 1) : 0;
    return pct(tpot, n_streams, 50);
}

static const char *k_tpot_schema =
    "{\"type\":\"object\",\"properties\":{\"items\":{\"type\":\"array\",\"minItems\":64,\"items\":"
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"qty\":{\"type\":\"integer\","
    "\"minimum\":0},\"note\":{\"type\":\"string\"}},\"required\":[\"name\",\"qty\",\"note\"],"
    "\"additionalProperties\":false}}},\"required\":[\"items\"],\"additionalProperties\":false}";

static void tpot_bench(tm_model *model, tm_grammar_vocab *v, int n_gen, int reps) {
    char err[512];
    json_t *schema = json_loads(k_tpot_schema, 0, NULL);
    char *gbnf = NULL;
    tm_grammar *g = NULL;
    tm_grammar_compiled *c = NULL;
    if (tm_json_schema_gbnf(schema, 0, &gbnf, err, sizeof err) ||
        tm_grammar_parse(gbnf, strlen(gbnf), NULL, &g, err, sizeof err) || tm_grammar_compile(g, v, &c, err, sizeof err)) {
        fprintf(stderr, "tpot grammar: %s\n", err);
        exit(1);
    }
    json_decref(schema);
    free(gbnf);
    const char *text = "List 64 shopping items as JSON, each with a name, a quantity and a note:";
    int32_t *prompt = NULL;
    int n_prompt = 0;
    tm_tokenizer_encode(tm_model_tokenizer(model), text, strlen(text), 1, 1, &prompt, &n_prompt);
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    tm_engine_config cfg;
    tm_engine_config_default(&cfg);
    cfg.max_num_seqs = 16;
    cfg.kv_cache_bytes = (size_t)(16 * (n_prompt + n_gen) / 16 + 64) * tm_model_kv_bytes_per_block(model, 16, TM_KV_F16);
    cfg.on_event = on_event;
    cfg.on_event_arg = &w;
    tm_engine *e;
    if (tm_engine_create(model, &cfg, &e, err, sizeof err)) {
        fprintf(stderr, "engine: %s\n", err);
        exit(1);
    }
    static const int streams[] = {1, 16};
    static const float temps[] = {0.0f, 1.0f};
    printf("\nTPOT, median over streams and %d rounds (ms per output token; %d generated tokens, prompt %d)\n",
           reps, n_gen, n_prompt);
    printf("| streams | sampling | unconstrained | constrained | ratio | per-round ratios |\n|---|---|---|---|---|---|\n");
    for (int si = 0; si < 2; si++)
        for (int ti = 0; ti < 2; ti++) {
            double u[16], k[16], ratio[16];
            for (int r = 0; r < reps; r++) { /* alternate, so a drifting machine hits both */
                if (r % 2 == 0) {
                    u[r] = run_tpot(e, &w, prompt, n_prompt, streams[si], n_gen, 0, temps[ti], c);
                    k[r] = run_tpot(e, &w, prompt, n_prompt, streams[si], n_gen, 1, temps[ti], c);
                } else {
                    k[r] = run_tpot(e, &w, prompt, n_prompt, streams[si], n_gen, 1, temps[ti], c);
                    u[r] = run_tpot(e, &w, prompt, n_prompt, streams[si], n_gen, 0, temps[ti], c);
                }
                ratio[r] = k[r] / u[r];
            }
            char rounds[256] = "";
            for (int r = 0; r < reps; r++)
                snprintf(rounds + strlen(rounds), sizeof rounds - strlen(rounds), "%s%.3f", r ? ", " : "", ratio[r]);
            double mu = pct(u, reps, 50), mk = pct(k, reps, 50);
            printf("| %d | %s | %.2f | %.2f | %.3f | %s |\n", streams[si], ti ? "temperature 1" : "greedy", mu, mk,
                   mk / mu, rounds);
            fflush(stdout);
        }
    tm_engine_destroy(e);
    tm_grammar_compiled_release(c);
    free(prompt);
}

int main(int argc, char **argv) {
    char path[1024], corpus_path[1024];
    const char *model_path = tm_model_default_path(path, sizeof path);
    snprintf(corpus_path, sizeof corpus_path, "tests/server/data/schema_corpus.json"); /* from the checkout's root */
    int threads = 0, limit = 0, big = 1, tpot = 0, n_gen = 64, reps = 3;
    const char *vocab_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model_path = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--corpus") && i + 1 < argc) snprintf(corpus_path, sizeof corpus_path, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc) limit = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-128k")) big = 0;
        else if (!strcmp(argv[i], "--vocab") && i + 1 < argc) vocab_path = argv[++i];
        else if (!strcmp(argv[i], "--tpot")) tpot = 1;
        else if (!strcmp(argv[i], "--gen") && i + 1 < argc) n_gen = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--model PATH] [--threads N] [--corpus FILE] [--limit N] [--no-128k] "
                            "[--vocab GGUF] [--tpot] [--gen N] [--reps N]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > 16 || n_gen < 2) {
        fprintf(stderr, "bench_structured: --reps 1..16, --gen at least 2\n");
        return 2;
    }
    char err[512];
    tm_backend *be = tm_cli_backend_create("bench_structured", "cpu", threads, 0);
    tm_model *model;
    if (!be || tm_cli_model_open("bench_structured", model_path, NULL, be, NULL, NULL, &model, err, sizeof err)) {
        fprintf(stderr, "model: %s\n", err);
        return 1;
    }
    json_error_t je;
    json_t *corpus = json_load_file(corpus_path, 0, &je);
    if (!corpus) {
        fprintf(stderr, "%s: %s\n", corpus_path, je.text);
        return 1;
    }
    const tm_tokenizer *tok = tm_model_tokenizer(model);
    tm_grammar_vocab *v49 = NULL;
    if (tm_grammar_vocab_create(tok, &v49, err, sizeof err)) {
        fprintf(stderr, "vocabulary: %s\n", err);
        return 1;
    }
    printf("bench_structured: %s, %d CPUs; corpus %s\n", tm_model_get_config(model)->name, tm_n_cpus(), corpus_path);
    printf("| vocabulary | schemas | compile p50 / p90 / max | steps | mask p50 / p99 | one-token check p50 / p99 |\n");
    printf("|---|---|---|---|---|---|\n");
    times t49 = {0};
    t49.compile_ms = calloc(1024, sizeof(double));
    corpus_times(corpus, v49, limit, &t49);
    report("SmolLM2 (49,152)", &t49);
    fflush(stdout);
    if (big) {
        tm_grammar_vocab *v128 = synthetic_vocab(tok, 128256);
        times t128 = {0};
        t128.compile_ms = calloc(1024, sizeof(double));
        corpus_times(corpus, v128, limit, &t128);
        report("synthetic (128,256)", &t128);
        tm_grammar_vocab_destroy(v128);
    }
    if (vocab_path) {
        tm_gguf *f = NULL;
        tm_tokenizer *other = NULL;
        tm_grammar_vocab *vo = NULL;
        if (tm_gguf_open(vocab_path, &f, err, sizeof err) || tm_tokenizer_create(f, &other, err, sizeof err) ||
            tm_grammar_vocab_create(other, &vo, err, sizeof err)) {
            fprintf(stderr, "%s: %s\n", vocab_path, err);
            return 1;
        }
        times to = {0};
        to.compile_ms = calloc(1024, sizeof(double));
        char name[64];
        const char *base = strrchr(vocab_path, '/');
        snprintf(name, sizeof name, "%.40s (%d)", base ? base + 1 : vocab_path, tm_tokenizer_n_vocab(other));
        corpus_times(corpus, vo, limit, &to);
        report(name, &to);
        tm_grammar_vocab_destroy(vo);
        tm_tokenizer_destroy(other);
        tm_gguf_close(f);
    }
    if (tpot) tpot_bench(model, v49, n_gen, reps);
    tm_grammar_vocab_destroy(v49);
    json_decref(corpus);
    tm_model_destroy(model);
    be->destroy(be);
    return 0;
}

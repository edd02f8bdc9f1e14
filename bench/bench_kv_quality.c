/* bench_kv_quality.c - what an int8 KV cache costs in accuracy, on a real model and text.
 *
 * Feeds the same text (teacher-forced, in prefill chunks) through the model twice, with an
 * f16 and with an int8 KV cache, and compares the next-token distributions at every
 * position: perplexity of the text under each, how often the top token is the same, the
 * mean and largest KL(f16 || int8), and the largest logit difference.
 *
 * The floor to read them against: the same f16 run on the kernels of another SIMD level
 * (--floor-simd, default avx2 when the best level is higher). The matmuls round their
 * activations to 8 bits, so any change of the float order, however small, re-rolls that
 * rounding; the figures of two f16 runs that differ only there are what noise looks like.
 *
 * usage: bench_kv_quality [--model PATH] [--text FILE] [--tokens N] [--chunk N] [--threads N]
 *                         [--floor-simd LEVEL|none]
 *   defaults: the default model, README.md, 2048 tokens (repeating the text if short), chunks of 256 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "models/model.h"
#include "models/tokenizer.h"

enum { TM_KVQ_BLOCK = 16 };

/* log-softmax of n logits into out (double for the sums). */
static void log_softmax(const float *x, int n, double *out) {
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++) sum += exp(x[i] - mx);
    const double lse = mx + log(sum);
    for (int i = 0; i < n; i++) out[i] = x[i] - lse;
}

/* Next-token statistics of logits b against logits a over positions [0, n - 1). */
typedef struct kvq_stats {
    double ppl_a, ppl_b, kl_mean, kl_max, dlogit_max, top1_agree;
} kvq_stats;

static kvq_stats compare(const float *la, const float *lb, const int32_t *ids, int n, int V, double *pa, double *pb) {
    double nll_a = 0, nll_b = 0, kl_sum = 0;
    kvq_stats st = {0};
    int same_top = 0;
    for (int t = 0; t + 1 < n; t++) {
        const float *a = la + (size_t)t * V, *b = lb + (size_t)t * V;
        log_softmax(a, V, pa);
        log_softmax(b, V, pb);
        nll_a -= pa[ids[t + 1]];
        nll_b -= pb[ids[t + 1]];
        double kl = 0;
        int top_a = 0, top_b = 0;
        for (int i = 0; i < V; i++) {
            kl += exp(pa[i]) * (pa[i] - pb[i]);
            st.dlogit_max = fmax(st.dlogit_max, fabs((double)a[i] - b[i]));
            if (a[i] > a[top_a]) top_a = i;
            if (b[i] > b[top_b]) top_b = i;
        }
        kl_sum += kl;
        st.kl_max = fmax(st.kl_max, kl);
        same_top += top_a == top_b;
    }
    st.ppl_a = exp(nll_a / (n - 1));
    st.ppl_b = exp(nll_b / (n - 1));
    st.kl_mean = kl_sum / (n - 1);
    st.top1_agree = (double)same_top / (n - 1);
    return st;
}

/* All-position logits (n, n_vocab) of ids under a fresh cache of dtype; 0 or an error code. */
static int run_text(tm_model *m, tm_kv_dtype dtype, const int32_t *ids, int n, int chunk, float *logits) {
    const int n_vocab = tm_model_get_config(m)->n_vocab;
    const int n_blocks = (n + TM_KVQ_BLOCK - 1) / TM_KVQ_BLOCK;
    tm_kv_cache *kv = NULL;
    int rc = tm_model_kv_create(m, n_blocks, TM_KVQ_BLOCK, dtype, &kv, NULL, 0);
    int32_t *table = malloc(sizeof(int32_t) * (size_t)n_blocks), *pos = malloc(sizeof(int32_t) * (size_t)chunk);
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)chunk);
    if (rc || !table || !pos || !rows) {
        rc = rc ? rc : TM_ENOMEM;
        fprintf(stderr, "bench_kv_quality: %s KV cache of %d pages: %s\n", tm_kv_dtype_name(dtype), n_blocks,
                tm_strerror(rc));
        goto done;
    }
    for (int i = 0; i < n_blocks; i++) table[i] = i;
    for (int start = 0; start < n && !rc; start += chunk) {
        const int len = TM_MIN(chunk, n - start);
        for (int i = 0; i < len; i++) pos[i] = start + i, rows[i] = i;
        int32_t seq_start[2] = {0, len}, ctx_len[1] = {start + len};
        tm_batch b = {.n_tokens = len, .n_seqs = 1, .tokens = ids + start, .pos = pos, .seq_start = seq_start,
                      .ctx_len = ctx_len, .block_table = table, .max_blocks = n_blocks, .slots = pos,
                      .n_logits = len, .logit_rows = rows};
        char err[256];
        rc = tm_model_forward(m, kv, &b, logits + (size_t)start * n_vocab, err, sizeof err);
        if (rc) fprintf(stderr, "forward: %s\n", err);
    }
done:
    tm_model_kv_destroy(m, kv);
    free(table), free(pos), free(rows);
    return rc;
}

int main(int argc, char **argv) {
    char model_path[1024];
    const char *mp = tm_model_default_path(model_path, sizeof model_path), *text_path = "README.md", *floor_name = NULL;
    int n_tokens = 2048, chunk = 256, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) mp = argv[++i];
        else if (!strcmp(argv[i], "--text") && i + 1 < argc) text_path = argv[++i];
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) n_tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc) chunk = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--floor-simd") && i + 1 < argc) floor_name = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--model PATH] [--text FILE] [--tokens N] [--chunk N] [--threads N] "
                            "[--floor-simd LEVEL|none]\n", argv[0]);
            return 2;
        }
    }
    int floor_level = -1; /* none */
    if (!floor_name) {
        if (tm_simd_detect() > TM_SIMD_AVX2 && tm_simd_supported(TM_SIMD_AVX2)) floor_level = TM_SIMD_AVX2;
    } else if (strcmp(floor_name, "none") != 0) {
        for (int l = TM_SIMD_SCALAR; l <= TM_SIMD_LAST; l++)
            if (!strcmp(floor_name, tm_simd_name(l))) floor_level = l;
        if (floor_level < 0 || !tm_simd_supported(floor_level)) {
            fprintf(stderr, "bench_kv_quality: --floor-simd %s: not a level this CPU has\n", floor_name);
            return 2;
        }
    }
    if (n_tokens < 2 || chunk < 1) {
        fprintf(stderr, "bench_kv_quality: --tokens needs at least 2, --chunk at least 1\n");
        return 2;
    }
    FILE *f = fopen(text_path, "rb");
    if (!f) {
        fprintf(stderr, "bench_kv_quality: cannot open %s\n", text_path);
        return 1;
    }
    char *text = NULL;
    size_t text_len = 0, cap = 0, got;
    char buf[65536];
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        if (text_len + got > cap && !(text = realloc(text, cap = 2 * (text_len + got)))) return 1;
        memcpy(text + text_len, buf, got);
        text_len += got;
    }
    fclose(f);

    char err[512] = "";
    tm_backend *be = tm_backend_cpu_create(threads, TM_SIMD_AUTO, err, sizeof err);
    tm_model *m = NULL;
    if (!be || tm_model_load(mp, be, &m, err, sizeof err) != TM_OK) {
        fprintf(stderr, "bench_kv_quality: %s\n", err);
        return 1;
    }
    const tm_model_config *c = tm_model_get_config(m);
    n_tokens = TM_MIN(n_tokens, c->n_ctx_train);
    int32_t *text_ids = NULL, *ids = malloc(sizeof(int32_t) * (size_t)n_tokens);
    int n_text = 0;
    if (!ids || tm_tokenizer_encode(tm_model_tokenizer(m), text, text_len, 1, 0, &text_ids, &n_text) || n_text < 2) {
        fprintf(stderr, "bench_kv_quality: the text gives too few tokens\n");
        return 1;
    }
    for (int i = 0; i < n_tokens; i++) ids[i] = text_ids[i % n_text]; /* repeats a short text */

    const int V = c->n_vocab;
    float *lf = malloc(sizeof(float) * (size_t)n_tokens * V), *lq = malloc(sizeof(float) * (size_t)n_tokens * V);
    double *pf = malloc(sizeof(double) * (size_t)V), *pq = malloc(sizeof(double) * (size_t)V);
    if (!lf || !lq || !pf || !pq) return 1;
    if (tm_model_reserve(m, chunk, chunk) || run_text(m, TM_KV_F16, ids, n_tokens, chunk, lf) ||
        run_text(m, TM_KV_INT8, ids, n_tokens, chunk, lq))
        return 1;

    const kvq_stats q = compare(lf, lq, ids, n_tokens, V, pf, pq);
    const int n_pred = n_tokens - 1;
    printf("model %s, text %s (%d tokens, %d used), chunks of %d, simd %s\n", c->name, text_path, n_text, n_tokens,
           chunk, tm_simd_name(tm_simd_detect()));
    printf("%-28s %10s %10s %9s %11s %10s %10s\n", "", "ppl", "ppl (f16)", "top1 same", "KL mean", "KL max",
           "max dlogit");
    printf("%-28s %10.4f %10.4f %8.2f%% %11.2e %10.2e %10.4f\n", "int8 KV vs f16 KV", q.ppl_b, q.ppl_a,
           100.0 * q.top1_agree, q.kl_mean, q.kl_max, q.dlogit_max);
    kvq_stats fl = {0};
    if (floor_level >= 0) { /* f16 again, on another level's kernels: the same model, another float order */
        tm_backend *be2 = tm_backend_cpu_create(threads, floor_level, err, sizeof err);
        tm_model *m2 = NULL;
        if (!be2 || tm_model_load(mp, be2, &m2, err, sizeof err) != TM_OK || tm_model_reserve(m2, chunk, chunk) ||
            run_text(m2, TM_KV_F16, ids, n_tokens, chunk, lq)) {
            fprintf(stderr, "bench_kv_quality: floor run: %s\n", err);
            return 1;
        }
        fl = compare(lf, lq, ids, n_tokens, V, pf, pq);
        char what[64];
        snprintf(what, sizeof what, "floor: f16 on %s kernels", tm_simd_name(floor_level));
        printf("%-28s %10.4f %10.4f %8.2f%% %11.2e %10.2e %10.4f\n", what, fl.ppl_b, fl.ppl_a, 100.0 * fl.top1_agree,
               fl.kl_mean, fl.kl_max, fl.dlogit_max);
        tm_model_destroy(m2);
        be2->destroy(be2);
    }
    printf("RESULT positions=%d ppl_f16=%.4f ppl_int8=%.4f top1_agree=%.4f kl_mean=%.3e kl_max=%.3e "
           "floor_top1_agree=%.4f floor_kl_mean=%.3e\n", n_pred, q.ppl_a, q.ppl_b, q.top1_agree, q.kl_mean, q.kl_max,
           fl.top1_agree, fl.kl_mean);
    free(lf), free(lq), free(pf), free(pq), free(ids), free(text_ids), free(text);
    tm_model_destroy(m);
    be->destroy(be);
    return 0;
}

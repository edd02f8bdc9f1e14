/* bench_kv_quality.c - what an int8 KV cache costs in accuracy, on a real model and text.
 *
 * Feeds the same text (teacher-forced, in prefill chunks) through the model twice, with an
 * f16 and with an int8 KV cache, and compares the next-token distributions at every
 * position: perplexity of the text under each, how often the top token is the same, the
 * mean and largest KL(f16 || int8), and the largest logit difference.
 *
 * usage: bench_kv_quality [--model PATH] [--text FILE] [--tokens N] [--chunk N] [--threads N]
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

/* All-position logits (n, n_vocab) of ids under a fresh cache of dtype; 0 or an error code. */
static int run_text(tm_model *m, tm_kv_dtype dtype, const int32_t *ids, int n, int chunk, float *logits) {
    const int n_vocab = tm_model_get_config(m)->n_vocab;
    const int n_blocks = (n + TM_KVQ_BLOCK - 1) / TM_KVQ_BLOCK;
    tm_kv_cache *kv = NULL;
    int rc = tm_model_kv_create(m, n_blocks, TM_KVQ_BLOCK, dtype, &kv);
    int32_t *table = malloc(sizeof(int32_t) * (size_t)n_blocks), *pos = malloc(sizeof(int32_t) * (size_t)chunk);
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)chunk);
    if (rc || !table || !pos || !rows) {
        rc = rc ? rc : TM_ENOMEM;
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
    const char *home = getenv("HOME");
    char model_path[1024];
    snprintf(model_path, sizeof model_path, "%s/.cache/tokenmill/models/SmolLM2-135M-Instruct.Q4_1.gguf",
             home ? home : "");
    const char *mp = model_path, *text_path = "README.md";
    int n_tokens = 2048, chunk = 256, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) mp = argv[++i];
        else if (!strcmp(argv[i], "--text") && i + 1 < argc) text_path = argv[++i];
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) n_tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc) chunk = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--model PATH] [--text FILE] [--tokens N] [--chunk N] [--threads N]\n", argv[0]);
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

    double nll_f = 0, nll_q = 0, kl_sum = 0, kl_max = 0, dlogit_max = 0;
    int same_top = 0;
    for (int t = 0; t + 1 < n_tokens; t++) {
        const float *a = lf + (size_t)t * V, *b = lq + (size_t)t * V;
        log_softmax(a, V, pf);
        log_softmax(b, V, pq);
        nll_f -= pf[ids[t + 1]];
        nll_q -= pq[ids[t + 1]];
        double kl = 0;
        int top_a = 0, top_b = 0;
        for (int i = 0; i < V; i++) {
            kl += exp(pf[i]) * (pf[i] - pq[i]);
            dlogit_max = fmax(dlogit_max, fabs((double)a[i] - b[i]));
            if (a[i] > a[top_a]) top_a = i;
            if (b[i] > b[top_b]) top_b = i;
        }
        kl_sum += kl;
        kl_max = fmax(kl_max, kl);
        same_top += top_a == top_b;
    }
    const int n_pred = n_tokens - 1;
    printf("model %s, text %s (%d tokens, %d used), chunks of %d\n", c->name, text_path, n_text, n_tokens, chunk);
    printf("perplexity      f16 %.4f   int8 %.4f   (%+.3f%%)\n", exp(nll_f / n_pred), exp(nll_q / n_pred),
           100.0 * (exp((nll_q - nll_f) / n_pred) - 1.0));
    printf("same top token  %d of %d positions (%.2f%%)\n", same_top, n_pred, 100.0 * same_top / n_pred);
    printf("KL(f16 || int8) mean %.2e, max %.2e nats; largest logit difference %.4f\n", kl_sum / n_pred, kl_max,
           dlogit_max);
    printf("RESULT ppl_f16=%.4f ppl_int8=%.4f top1_agree=%.4f kl_mean=%.3e kl_max=%.3e\n", exp(nll_f / n_pred),
           exp(nll_q / n_pred), (double)same_top / n_pred, kl_sum / n_pred, kl_max);
    free(lf), free(lq), free(pf), free(pq), free(ids), free(text_ids), free(text);
    tm_model_destroy(m);
    be->destroy(be);
    return 0;
}

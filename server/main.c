/* main.c - the tokenmill command line: generate, info, quantize, serve. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "kernels/backend.h"
#include "models/convert.h"
#include "models/model.h"
#include "models/sampler.h"
#include "server/cli_args.h"
#include "server/cli_backend.h"
#include "server/serve.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: tokenmill <command> [options]\n"
            "\n"
            "commands:\n"
            "  generate [-m MODEL] -p TEXT [-n N] [--temp T] [--top-p P] [--top-k K]\n"
            "           [--min-p P] [--repeat-penalty R] [--seed S] [--threads N]\n"
            "      stream a continuation of TEXT to stdout; stats go to stderr\n"
            "  info MODEL              architecture, shapes, tensor types, tokenizer\n"
            "  quantize IN OUT TYPE    convert a GGUF to f16, q8_0, q4_0 or q4_1\n"
            "  serve [MODEL] [...]     OpenAI-compatible HTTP server (serve --help)\n"
            "\n"
            "Without -m/MODEL the default model is used:\n"
            "  ~/.cache/tokenmill/models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-model)\n");
}

/* Runs prompt + up to n_predict tokens for one sequence on a private KV cache. */
static int generate(tm_model *m, const char *prompt, int n_predict, const tm_sampling_params *sp) {
    const tm_model_config *c = tm_model_get_config(m);
    const tm_tokenizer *tok = tm_model_tokenizer(m);
    int32_t *ids = NULL;
    int n_prompt = 0, rc = 1;
    float *logits = NULL;
    int32_t *tokens = NULL, *pos = NULL, *slots = NULL, *table = NULL;
    void *scratch = NULL;
    tm_kv_cache *kv = NULL;

    if (tm_tokenizer_encode(tok, prompt, strlen(prompt), 1, 1, &ids, &n_prompt) || n_prompt == 0) {
        fprintf(stderr, "tokenmill: the prompt is empty after tokenization\n");
        goto done;
    }
    int n_ctx = n_prompt + n_predict;
    if (n_ctx > c->n_ctx_train) {
        fprintf(stderr, "tokenmill: prompt (%d tokens) + -n %d exceeds the context of %d tokens\n",
                n_prompt, n_predict, c->n_ctx_train);
        goto done;
    }
    const int block = 16, chunk = 512;
    int n_blocks = (n_ctx + block - 1) / block;
    char err[512];
    if (tm_model_kv_create(m, n_blocks, block, TM_KV_F16, &kv)) {
        fprintf(stderr, "tokenmill: out of memory for the KV cache\n");
        goto done;
    }
    table = malloc(sizeof(int32_t) * (size_t)n_blocks);
    tokens = malloc(sizeof(int32_t) * chunk);
    pos = malloc(sizeof(int32_t) * chunk);
    slots = malloc(sizeof(int32_t) * chunk);
    logits = malloc(sizeof(float) * (size_t)c->n_vocab);
    scratch = malloc(tm_sampler_scratch_bytes(c->n_vocab));
    int32_t *out_ids = malloc(sizeof(int32_t) * (size_t)(n_predict + 1));
    if (!table || !tokens || !pos || !slots || !logits || !scratch || !out_ids) {
        free(out_ids);
        fprintf(stderr, "tokenmill: out of memory\n");
        goto done;
    }
    for (int i = 0; i < n_blocks; i++) table[i] = i;
    tm_sampler sampler;
    tm_sampler_init(&sampler, sp);
    tm_detok detok;
    tm_detok_init(&detok);

    /* One sequence: feed tokens [start, start + len) and get the last row's logits. */
    int32_t seq_start[2], ctx_len[1], logit_row[1];
    tm_batch b = {.n_seqs = 1, .tokens = tokens, .pos = pos, .seq_start = seq_start,
                  .ctx_len = ctx_len, .block_table = table, .max_blocks = n_blocks,
                  .slots = slots, .n_logits = 1, .logit_rows = logit_row};
    double t0 = tm_time_s();
    for (int start = 0; start < n_prompt; start += chunk) {
        int len = TM_MIN(chunk, n_prompt - start);
        for (int i = 0; i < len; i++) {
            tokens[i] = ids[start + i];
            pos[i] = slots[i] = start + i;
        }
        seq_start[0] = 0;
        seq_start[1] = b.n_tokens = len;
        ctx_len[0] = start + len;
        logit_row[0] = len - 1;
        if (tm_model_forward(m, kv, &b, logits, err, sizeof err)) {
            fprintf(stderr, "tokenmill: forward: %s\n", err);
            free(out_ids);
            goto done;
        }
    }
    double t1 = tm_time_s();
    int n_out = 0;
    char text[512];
    while (n_out < n_predict) {
        int32_t next = tm_sampler_sample(&sampler, logits, c->n_vocab, ids, n_prompt, out_ids, n_out,
                                         scratch);
        if (tm_tokenizer_is_eog(tok, next)) break;
        out_ids[n_out++] = next;
        size_t nb = tm_detok_push(&detok, tok, next, text, sizeof text);
        fwrite(text, 1, nb, stdout);
        fflush(stdout);
        if (n_out == n_predict) break;
        int p = n_prompt + n_out - 1;
        tokens[0] = next;
        pos[0] = slots[0] = p;
        seq_start[1] = b.n_tokens = 1;
        ctx_len[0] = p + 1;
        logit_row[0] = 0;
        if (tm_model_forward(m, kv, &b, logits, err, sizeof err)) {
            fprintf(stderr, "\ntokenmill: forward: %s\n", err);
            free(out_ids);
            goto done;
        }
    }
    size_t nb = tm_detok_flush(&detok, text, sizeof text);
    fwrite(text, 1, nb, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    double t2 = tm_time_s();
    fprintf(stderr, "tokenmill: prompt %d tokens in %.3f s (%.1f tok/s), generated %d tokens in %.3f s (%.1f tok/s)\n",
            n_prompt, t1 - t0, n_prompt / (t1 - t0 + 1e-12), n_out, t2 - t1,
            n_out > 1 ? (n_out - 1) / (t2 - t1 + 1e-12) : 0.0);
    free(out_ids);
    rc = 0;
done:
    tm_model_kv_destroy(m, kv);
    free(ids);
    free(logits);
    free(tokens);
    free(pos);
    free(slots);
    free(table);
    free(scratch);
    return rc;
}

static int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL;
    long n_predict = 128, threads = 0, top_k = 40;
    tm_sampling_params sp;
    tm_sampling_params_default(&sp);
    sp.temperature = 0.8f;
    sp.top_p = 0.95f;
    sp.min_p = 0.05f;
    sp.seed = (uint64_t)time(NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = strcmp(a, "-h") && strcmp(a, "--help");
        if (takes && !v) {
            fprintf(stderr, "tokenmill generate: %s needs a value\n", a);
            return 2;
        }
        long lv;
        if (!takes) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            prompt = v;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (tm_cli_long("generate", a, v, 1, 1 << 20, &n_predict)) return 2;
        } else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
            if (tm_cli_long("generate", a, v, 1, 1024, &threads)) return 2;
        } else if (!strcmp(a, "--temp")) {
            if (tm_cli_float("generate", a, v, 0.0f, 100.0f, &sp.temperature)) return 2;
        } else if (!strcmp(a, "--top-p")) {
            if (tm_cli_float("generate", a, v, 0.0f, 1.0f, &sp.top_p)) return 2;
        } else if (!strcmp(a, "--min-p")) {
            if (tm_cli_float("generate", a, v, 0.0f, 1.0f, &sp.min_p)) return 2;
        } else if (!strcmp(a, "--top-k")) {
            if (tm_cli_long("generate", a, v, 0, 1 << 24, &top_k)) return 2;
        } else if (!strcmp(a, "--repeat-penalty")) {
            if (tm_cli_float("generate", a, v, 0.01f, 100.0f, &sp.repetition_penalty)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (tm_cli_long("generate", a, v, 0, 0x7fffffffL, &lv)) return 2;
            sp.seed = (uint64_t)lv;
        } else {
            fprintf(stderr, "tokenmill generate: unknown option '%s' (see tokenmill --help)\n", a);
            return 2;
        }
        i++;
    }
    if (!prompt) {
        fprintf(stderr, "tokenmill generate: -p TEXT is required\n");
        return 2;
    }
    sp.top_k = (int)top_k;
    tm_backend *be = tm_cli_backend_create("generate", "cpu", (int)threads);
    if (!be) return 1;
    tm_model *m = tm_cli_model_load(model, be);
    int rc = 1;
    if (m) rc = generate(m, prompt, (int)n_predict, &sp);
    tm_model_destroy(m);
    be->destroy(be);
    return rc;
}

static int cmd_info(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: tokenmill info MODEL\n");
        return 2;
    }
    tm_backend *be = tm_cli_backend_create("info", "cpu", 1);
    if (!be) return 1;
    tm_model *m = tm_cli_model_load(argv[1], be);
    if (!m) {
        be->destroy(be);
        return 1;
    }
    const tm_model_config *c = tm_model_get_config(m);
    const tm_gguf *g = tm_model_gguf(m);
    const tm_tokenizer *t = tm_model_tokenizer(m);
    printf("file:          %s (GGUF v%u)\n", argv[1], tm_gguf_version(g));
    printf("name:          %s\n", c->name);
    printf("architecture:  %s\n", c->arch);
    printf("layers:        %d\n", c->n_layers);
    printf("dim:           %d\n", c->dim);
    printf("ffn_dim:       %d\n", c->ffn_dim);
    printf("heads:         %d (kv %d, head_dim %d)\n", c->n_heads, c->n_kv_heads, c->head_dim);
    printf("vocab:         %d\n", c->n_vocab);
    printf("context:       %d\n", c->n_ctx_train);
    printf("rms_eps:       %g\n", c->rms_eps);
    printf("rope:          %s, theta %g, dims %d, freq_scale %g%s\n", c->rope.neox ? "neox" : "normal",
           c->rope.theta, c->rope.n_dims, c->rope.freq_scale, c->rope.freq_factors ? ", freq factors" : "");
    printf("tied output:   %s\n", c->tied_embeddings ? "yes" : "no");
    printf("qkv bias:      %s\n", c->qkv_bias ? "yes" : "no");
    printf("tokenizer:     %s (pre %s), %d tokens, bos %d, eos %d, add_bos %d\n", tm_tokenizer_kind(t),
           tm_tokenizer_pre(t), tm_tokenizer_n_vocab(t), tm_tokenizer_bos(t), tm_tokenizer_eos(t),
           tm_tokenizer_add_bos(t));
    /* tensor type histogram */
    int64_t count[64] = {0}, bytes[64] = {0};
    int64_t nt = tm_gguf_n_tensors(g);
    for (int64_t i = 0; i < nt; i++) {
        const tm_gguf_tensor *ti = tm_gguf_tensor_at(g, i);
        if ((int)ti->type >= 0 && (int)ti->type < 64) {
            count[ti->type]++;
            bytes[ti->type] += (int64_t)ti->n_bytes;
        }
    }
    printf("tensors:       %lld\n", (long long)nt);
    for (int ty = 0; ty < 64; ty++)
        if (count[ty])
            printf("  %-6s %4lld tensors, %8.2f MiB\n", tm_dtype_name((tm_dtype)ty), (long long)count[ty],
                   bytes[ty] / 1048576.0);
    tm_model_destroy(m);
    be->destroy(be);
    return 0;
}

static int cmd_quantize(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: tokenmill quantize IN OUT TYPE   (TYPE: f16, q8_0, q4_0, q4_1)\n");
        return 2;
    }
    int t = tm_dtype_from_name(argv[3]);
    if (t != TM_DTYPE_F16 && t != TM_DTYPE_Q8_0 && t != TM_DTYPE_Q4_0 && t != TM_DTYPE_Q4_1) {
        fprintf(stderr, "tokenmill quantize: unsupported target type '%s' (f16, q8_0, q4_0, q4_1)\n", argv[3]);
        return 2;
    }
    char err[512];
    double t0 = tm_time_s();
    if (tm_convert_file(argv[1], argv[2], (tm_dtype)t, err, sizeof err)) {
        fprintf(stderr, "tokenmill quantize: %s\n", err);
        return 1;
    }
    fprintf(stderr, "tokenmill quantize: wrote %s (%s) in %.1f s\n", argv[2], tm_dtype_name((tm_dtype)t),
            tm_time_s() - t0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "quantize")) return cmd_quantize(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve")) return tm_serve_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "tokenmill: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}

/* main.c - the tokenmill command line: generate, info, quantize, serve, synth, bench. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/tmbench/bench.h"
#include "common/common.h"
#include "kernels/backend.h"
#include "models/convert.h"
#include "models/model.h"
#include "models/synth.h"
#include "server/cli_args.h"
#include "server/cli_backend.h"
#include "server/generate.h"
#include "server/serve.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: tokenmill <command> [options]\n"
            "\n"
            "commands:\n"
            "  generate [-m MODEL] -p TEXT [-n N] [--stop STR] [--temp T] [--top-p P]\n"
            "           [--top-k K] [--min-p P] [--repeat-penalty R] [--seed S] [--threads N]\n"
            "      stream a continuation of TEXT to stdout; stats go to stderr (generate --help)\n"
            "  info MODEL              architecture, shapes, tensor types, tokenizer\n"
            "  quantize IN OUT TYPE    convert a GGUF to f16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k..q6_k,\n"
            "                          or llama.cpp's mixes q4_k_m, q5_k_m\n"
            "  synth PRESET TYPE OUT   write a model of a real shape with random weights\n"
            "                          (synth --help lists the presets and types)\n"
            "  serve [MODEL] [...]     OpenAI-compatible HTTP server (serve --help)\n"
            "  bench [...]             load generator for an OpenAI-compatible server (bench --help)\n"
            "\n"
            "Without -m/MODEL the default model is used:\n"
            "  ~/.cache/tokenmill/models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-model)\n");
}

static int cmd_info(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: tokenmill info MODEL\n");
        return 2;
    }
    tm_backend *be = tm_cli_backend_create("info", "cpu", 1, 0);
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
    printf("feed-forward:  %s%s\n", c->act == TM_ACT_GELU ? "gelu (tanh)" : "silu",
           c->fused_gate_up ? ", gate and up fused" : "");
    printf("norms:         %s%s%s\n", c->qk_norm ? "q/k per head, " : "", c->post_norms ? "post-block, " : "",
           "pre-block");
    if (c->fused_qkv) printf("qkv:           fused (split into views at load)\n");
    if (c->embed_scale != 1.0f) printf("embed scale:   %g\n", c->embed_scale);
    printf("attn scale:    %g\n", c->attn_scale);
    if (c->attn_softcap > 0 || c->final_softcap > 0)
        printf("soft-caps:     attention %g, logits %g\n", c->attn_softcap, c->final_softcap);
    if (c->sliding_window > 0) {
        int n_swa = 0;
        for (int l = 0; l < c->n_layers; l++) n_swa += c->swa_layers[l];
        printf("sliding window: %d keys on %d of %d layers (their rope theta %g)\n", c->sliding_window, n_swa,
               c->n_layers, c->rope_swa.theta);
    }
    if (tm_cli_model_synthetic(m))
        printf("synthetic:     %s (random weights: answers are meaningless)\n", tm_cli_model_synthetic(m));
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
        fprintf(stderr, "usage: tokenmill quantize IN OUT TYPE   (TYPE: %s)\n", tm_convert_target_names());
        return 2;
    }
    tm_convert_target target;
    if (tm_convert_target_from_name(argv[3], &target)) {
        fprintf(stderr, "tokenmill quantize: unsupported target type '%s' (%s)\n", argv[3], tm_convert_target_names());
        return 2;
    }
    char err[512];
    double t0 = tm_time_s();
    if (tm_convert_file_target(argv[1], argv[2], &target, 0, 0, err, sizeof err)) {
        fprintf(stderr, "tokenmill quantize: %s\n", err);
        return 1;
    }
    fprintf(stderr, "tokenmill quantize: wrote %s (%s) in %.1f s\n", argv[2], argv[3], tm_time_s() - t0);
    return 0;
}

static void synth_usage(FILE *f) {
    fprintf(f,
            "usage: tokenmill synth PRESET TYPE OUT.gguf [options]\n"
            "  writes a GGUF of PRESET's shape with seeded random weights (every matrix in TYPE;\n"
            "  norms and biases f32) and the default model's tokenizer padded to the preset's\n"
            "  vocabulary. llama.cpp loads it too. Its answers are meaningless.\n"
            "  --seed N                 weights seed (0)\n"
            "  --layers N               transformer blocks (the preset's)\n"
            "  --tokenizer-from GGUF    take the tokenizer from this file instead\n"
            "  --threads N              generator threads (one per CPU)\n"
            "TYPE: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, or the mixes q4_k_m,\n"
            "      q5_k_m (llama.cpp's recipe, as tokenmill quantize writes them)\n"
            "PRESET       arch   layers   dim    ffn  heads kv head_dim  vocab   rope theta  context tied window\n");
    for (int i = 0; i < tm_synth_n_presets(); i++) {
        const tm_synth_preset *p = tm_synth_preset_at(i);
        fprintf(f, "%-12s %-6s %6d %5d %6d %5d %3d %8d %7d %12.0f %8d %-4s %d\n", p->name, p->arch, p->n_layers,
                p->dim, p->ffn_dim, p->n_heads, p->n_kv_heads, p->head_dim, p->n_vocab, p->rope_theta,
                p->n_ctx, p->tied ? "yes" : "no", p->window);
    }
}

static int cmd_synth(int argc, char **argv) {
    const char *pos[3];
    int n_pos = 0;
    long seed = 0, layers = 0, threads = 0;
    const char *tok_from = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            synth_usage(stdout);
            return 0;
        }
        if (a[0] != '-') {
            if (n_pos == 3) {
                fprintf(stderr, "tokenmill synth: unexpected argument '%s'\n", a);
                return 2;
            }
            pos[n_pos++] = a;
            continue;
        }
        if (!v) {
            fprintf(stderr, "tokenmill synth: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--seed")) {
            if (tm_cli_long("synth", a, v, 0, 0x7fffffffL, &seed)) return 2;
        } else if (!strcmp(a, "--layers")) {
            if (tm_cli_long("synth", a, v, 1, 4096, &layers)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (tm_cli_long("synth", a, v, 1, 64, &threads)) return 2;
        } else if (!strcmp(a, "--tokenizer-from")) {
            tok_from = v;
        } else {
            fprintf(stderr, "tokenmill synth: unknown option '%s' (see tokenmill synth --help)\n", a);
            return 2;
        }
        i++;
    }
    if (n_pos != 3) {
        synth_usage(stderr);
        return 2;
    }
    tm_synth_options o;
    char err[512];
    if (tm_synth_options_init(&o, pos[0], pos[1], err, sizeof err)) {
        fprintf(stderr, "tokenmill synth: %s\n", err);
        return 2;
    }
    o.seed = (uint64_t)seed;
    o.n_layers = (int)layers;
    o.n_threads = (int)threads;
    o.tokenizer_from = tok_from;
    double t0 = tm_time_s();
    if (tm_synth_write(&o, pos[2], err, sizeof err)) {
        fprintf(stderr, "tokenmill synth: %s\n", err);
        return 1;
    }
    fprintf(stderr, "tokenmill synth: wrote %s (%s %s, %d layers, seed %ld) in %.1f s\n", pos[2], o.preset->name,
            tm_synth_type_name(&o), layers ? (int)layers : o.preset->n_layers, seed, tm_time_s() - t0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "generate")) return tm_generate_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "quantize")) return cmd_quantize(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve")) return tm_serve_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return tm_bench_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "synth")) return cmd_synth(argc - 1, argv + 1);
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "tokenmill: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}

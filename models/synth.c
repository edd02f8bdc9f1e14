/* synth.c - synthetic models (synth.h): the preset table, the random row generators (one
 * per weight type), and the GGUF layout (metadata, tokenizer, tensors) streamed into a
 * file or an in-memory image. */
#define _GNU_SOURCE
#include "models/synth.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/common.h"
#include "models/convert.h"
#include "models/model.h"

/* Published shapes (the models' config.json). The tiny-* rows are ours, for tests: one
 * per architecture, every row length a multiple of 256 so that every type fits, a
 * vocabulary 256 tokens larger than the default tokenizer's so that padding is exercised,
 * and each architecture's quirks at a size llama.cpp checks in seconds: tiny-mistral's
 * heads are wider than its embedding (n_heads * head_dim = 2 dim, as Mistral Nemo's), the
 * Gemma windows (4 keys) are shorter than the comparison's 8 tokens and their soft-caps
 * low enough to bend. */
static const tm_synth_preset k_presets[] = {
    /* name          arch      layers dim   ffn   heads kv  hd   vocab   theta       ctx    tied eps    llama3 window attn  final */
    {"tiny",         "llama",   4,    256,  768,  4,    2,  64,  49408,  10000.0f,   4096,  0,   1e-5f, 0.0f,  0,     0.0f, 0.0f},
    {"tiny-qwen2",   "qwen2",   2,    256,  768,  4,    2,  64,  49408,  1000000.0f, 4096,  1,   1e-6f, 0.0f,  0,     0.0f, 0.0f},
    {"tiny-mistral", "llama",   3,    256,  768,  4,    1,  128, 49408,  1000000.0f, 4096,  0,   1e-5f, 0.0f,  0,     0.0f, 0.0f},
    {"tiny-qwen3",   "qwen3",   3,    256,  768,  4,    2,  128, 49408,  1000000.0f, 4096,  1,   1e-6f, 0.0f,  0,     0.0f, 0.0f},
    {"tiny-phi3",    "phi3",    3,    256,  768,  4,    4,  64,  49408,  10000.0f,   4096,  0,   1e-5f, 0.0f,  0,     0.0f, 0.0f},
    {"tiny-gemma2",  "gemma2",  4,    256,  768,  4,    2,  64,  49408,  10000.0f,   4096,  1,   1e-6f, 0.0f,  4,     2.0f, 4.0f},
    {"tiny-gemma3",  "gemma3",  6,    256,  768,  4,    1,  128, 49408,  1000000.0f, 32768, 1,   1e-6f, 0.0f,  4,     0.0f, 0.0f},
    {"llama3-1b",    "llama",   16,   2048, 8192, 32,   8,  64,  128256, 500000.0f,  131072, 1,  1e-5f, 32.0f, 0,     0.0f, 0.0f},
    {"llama3-8b",    "llama",   32,   4096, 14336, 32,  8,  128, 128256, 500000.0f,  8192,  0,   1e-5f, 0.0f,  0,     0.0f, 0.0f},
    {"qwen2.5-7b",   "qwen2",   28,   3584, 18944, 28,  4,  128, 152064, 1000000.0f, 32768, 0,   1e-6f, 0.0f,  0,     0.0f, 0.0f},
};

/* Weight types, with llama.cpp's general.file_type for a file that is all of that type. */
static const struct { tm_dtype type; uint32_t ftype; } k_types[] = {
    {TM_DTYPE_F32, 0},   {TM_DTYPE_F16, 1},   {TM_DTYPE_BF16, 32}, {TM_DTYPE_Q8_0, 7},
    {TM_DTYPE_Q4_0, 2},  {TM_DTYPE_Q4_1, 3},  {TM_DTYPE_Q5_0, 8},  {TM_DTYPE_Q5_1, 9},
    {TM_DTYPE_Q4_K, 14}, {TM_DTYPE_Q5_K, 16}, {TM_DTYPE_Q6_K, 18},
};
#define TYPE_NAMES "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q4_k_m, q5_k_m"

int tm_synth_n_presets(void) { return (int)TM_ARRAY_LEN(k_presets); }

const tm_synth_preset *tm_synth_preset_at(int i) {
    return i >= 0 && i < tm_synth_n_presets() ? &k_presets[i] : NULL;
}

const tm_synth_preset *tm_synth_find_preset(const char *name) {
    for (int i = 0; name && i < tm_synth_n_presets(); i++)
        if (!strcmp(k_presets[i].name, name)) return &k_presets[i];
    return NULL;
}

const char *tm_synth_type_name(const tm_synth_options *o) {
    if (o->mix_m) return o->type == TM_DTYPE_Q4_K ? "q4_k_m" : "q5_k_m";
    return tm_dtype_name(o->type);
}

int tm_synth_type_ok(tm_dtype t) {
    for (size_t i = 0; i < TM_ARRAY_LEN(k_types); i++)
        if (k_types[i].type == t) return 1;
    return 0;
}

static uint32_t ftype_of(tm_dtype t) {
    for (size_t i = 0; i < TM_ARRAY_LEN(k_types); i++)
        if (k_types[i].type == t) return k_types[i].ftype;
    return 0;
}

int tm_synth_options_init(tm_synth_options *o, const char *preset, const char *type, char *err,
                          size_t err_len) {
    memset(o, 0, sizeof *o);
    o->preset = tm_synth_find_preset(preset);
    if (!o->preset) {
        char names[256] = "";
        for (int i = 0; i < tm_synth_n_presets(); i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                     k_presets[i].name);
        return tm_fail(err, err_len, TM_EINVAL, "unknown preset '%s' (presets: %s)", preset, names);
    }
    tm_convert_target mix;
    if (type && (!strcasecmp(type, "q4_k_m") || !strcasecmp(type, "q5_k_m")) &&
        tm_convert_target_from_name(type, &mix) == 0) {
        o->type = mix.type;
        o->mix_m = 1;
        return 0;
    }
    int t = tm_dtype_from_name(type);
    if (t < 0 || !tm_synth_type_ok((tm_dtype)t))
        return tm_fail(err, err_len, TM_EINVAL, "unknown weight type '%s' (types: " TYPE_NAMES ")",
                       type);
    o->type = (tm_dtype)t;
    return 0;
}

int tm_synth_parse(const char *spec, tm_synth_options *o, char *err, size_t err_len) {
    const char *colon = spec ? strchr(spec, ':') : NULL;
    if (!colon)
        return tm_fail(err, err_len, TM_EINVAL, "'%s' is not PRESET:TYPE (e.g. llama3-8b:q4_0)",
                       spec ? spec : "");
    char preset[64];
    snprintf(preset, sizeof preset, "%.*s", (int)TM_MIN((size_t)(colon - spec), sizeof preset - 1), spec);
    return tm_synth_options_init(o, preset, colon + 1, err, err_len);
}

/* --- random rows ----------------------------------------------------------------------
 * splitmix64's output function over a counter: word i of a stream with key k is
 * fin(k + (i + 1) * golden). Each row has its own key, so rows are independent of each
 * other and of the thread that draws them. */

static inline uint64_t fin64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct rng {
    uint64_t key; /* the row's key */
    uint64_t i;   /* words drawn */
} rng;

static inline uint64_t next64(rng *r) { return fin64(r->key + ++r->i * 0x9E3779B97F4A7C15ull); }
/* Uniform in [0, 1) from 8 bits. */
static inline float unit8(uint64_t bits) { return (float)(bits & 255) / 256.0f; }

typedef enum tensor_kind {
    KIND_MATRIX,     /* weight matrix in the asked type, mean 0 */
    KIND_VECTOR,     /* f32 vector: center +- half_width (norms, biases) */
    KIND_ROPE_FREQS, /* f32 Llama 3.1 frequency divisors, computed */
} tensor_kind;

typedef struct synth_tensor {
    char name[64];     /* GGUF tensor name */
    int n_dims;        /* 1 or 2 */
    int64_t ne[2];     /* ne[0] row length, ne[1] rows (1 for vectors) */
    tm_dtype type;     /* element type in the file */
    tensor_kind kind;
    float sigma;       /* KIND_MATRIX: standard deviation */
    float center;      /* KIND_VECTOR: mean */
    float half_width;  /* KIND_VECTOR: values in center +- half_width */
} synth_tensor;

/* What one tensor's rows are drawn from, fixed before the rows. */
typedef struct row_gen {
    const synth_tensor *t;
    uint64_t key;            /* the tensor's key: seed and name */
    float d0;                /* quantized types: block scale before its jitter */
    uint32_t grid[4096];     /* float types: 4096 evenly spaced values, as the type's bits */
    const float *freqs;      /* KIND_ROPE_FREQS: the values */
} row_gen;

/* Block scale: d0 times a jitter in [0.75, 1.25) so blocks differ, as f16. */
static inline uint16_t jittered(float d0, uint64_t bits) {
    return tm_f32_to_f16(d0 * (0.75f + 0.5f * unit8(bits)));
}

static void fill_bytes(rng *r, uint8_t *dst, int n) {
    for (int i = 0; i < n; i += 8) {
        uint64_t w = next64(r);
        memcpy(dst + i, &w, (size_t)TM_MIN(8, n - i));
    }
}

/* Row r of a quantized matrix: uniform quants and jittered scales in valid blocks. */
static void gen_quant_row(const row_gen *g, rng *r, uint8_t *dst, int64_t n_blocks) {
    switch (g->t->type) {
    case TM_DTYPE_Q8_0:
        for (int64_t b = 0; b < n_blocks; b++) {
            tm_block_q8_0 *q = (tm_block_q8_0 *)dst + b;
            q->d = jittered(g->d0, next64(r));
            fill_bytes(r, (uint8_t *)q->qs, 32);
            for (int i = 0; i < 32; i++) /* -128 is no value our quantizers (or ggml's) make */
                if (q->qs[i] == -128) q->qs[i] = -127;
        }
        break;
    case TM_DTYPE_Q4_0:
        for (int64_t b = 0; b < n_blocks; b++) {
            tm_block_q4_0 *q = (tm_block_q4_0 *)dst + b;
            /* quants d * (q - 8) average -d/2: a random sign of d (ggml's quantizer makes
             * both) keeps that from adding up into one direction every row shares */
            uint64_t w = next64(r);
            q->d = (uint16_t)(jittered(g->d0, w) | ((w >> 8) & 1) << 15);
            fill_bytes(r, q->qs, 16);
        }
        break;
    case TM_DTYPE_Q4_1:
        for (int64_t b = 0; b < n_blocks; b++) {
            tm_block_q4_1 *q = (tm_block_q4_1 *)dst + b;
            uint64_t w = next64(r);
            q->d = jittered(g->d0, w);
            /* quants average 7.5: a min of about -7.5 d centers the block on 0 */
            q->m = tm_f32_to_f16(-tm_f16_to_f32(q->d) * (7.0f + unit8(w >> 8)));
            fill_bytes(r, q->qs, 16);
        }
        break;
    case TM_DTYPE_Q5_0:
        for (int64_t b = 0; b < n_blocks; b++) {
            tm_block_q5_0 *q = (tm_block_q5_0 *)dst + b;
            /* d * (q - 16), q in 0..31: a random sign of d as for q4_0 */
            uint64_t w = next64(r);
            q->d = (uint16_t)(jittered(g->d0, w) | ((w >> 8) & 1) << 15);
            fill_bytes(r, q->qh, 4);
            fill_bytes(r, q->qs, 16);
        }
        break;
    case TM_DTYPE_Q5_1:
        for (int64_t b = 0; b < n_blocks; b++) {
            tm_block_q5_1 *q = (tm_block_q5_1 *)dst + b;
            uint64_t w = next64(r);
            q->d = jittered(g->d0, w);
            /* quants average 15.5: a min of about -15.5 d centers the block on 0 */
            q->m = tm_f32_to_f16(-tm_f16_to_f32(q->d) * (15.0f + unit8(w >> 8)));
            fill_bytes(r, q->qh, 4);
            fill_bytes(r, q->qs, 16);
        }
        break;
    case TM_DTYPE_Q5_K:
        for (int64_t b = 0; b < n_blocks; b++) {
            tm_block_q5_k *q = (tm_block_q5_k *)dst + b;
            q->d = jittered(g->d0, next64(r));
            /* as q4_k with q in 0..31: dmin = 16 d and m ~ 31/32 sc center each sub-block */
            q->dmin = tm_f32_to_f16(16.0f * tm_f16_to_f32(q->d));
            uint64_t w = next64(r);
            uint8_t sc[8], m[8];
            for (int j = 0; j < 8; j++, w >>= 7) {
                sc[j] = (uint8_t)(16 + (w & 31));
                m[j] = (uint8_t)TM_MIN(63, (31 * sc[j] + 16) / 32 + (int)((w >> 5) & 3) % 3 - 1);
            }
            for (int j = 0; j < 4; j++) {
                q->scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
                q->scales[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
                q->scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
            }
            fill_bytes(r, q->qh, 32);
            fill_bytes(r, q->qs, 128);
        }
        break;
    case TM_DTYPE_Q4_K:
        for (int64_t b = 0; b < n_blocks; b++) {
            tm_block_q4_k *q = (tm_block_q4_k *)dst + b;
            q->d = jittered(g->d0, next64(r));
            /* value = d * sc * q - dmin * m with q in 0..15: dmin = 8 d and m ~ 15/16 sc
             * center each sub-block on 0 (m moves by -1..1 so the centers differ a little) */
            q->dmin = tm_f32_to_f16(8.0f * tm_f16_to_f32(q->d));
            uint64_t w = next64(r);
            uint8_t sc[8], m[8];
            for (int j = 0; j < 8; j++, w >>= 7) {
                sc[j] = (uint8_t)(16 + (w & 31));
                m[j] = (uint8_t)TM_MIN(63, (15 * sc[j] + 8) / 16 + (int)((w >> 5) & 3) % 3 - 1);
            }
            /* the 12-byte packing tm_dequantize_row reads (KERNELS.md section 1) */
            for (int j = 0; j < 4; j++) {
                q->scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
                q->scales[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
                q->scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
            }
            fill_bytes(r, q->qs, 128);
        }
        break;
    case TM_DTYPE_Q6_K:
        for (int64_t b = 0; b < n_blocks; b++) {
            tm_block_q6_k *q = (tm_block_q6_k *)dst + b;
            q->d = jittered(g->d0, next64(r));
            /* 16 signed sub-block scales of magnitude 8..23 (ggml's quantizer makes both signs) */
            uint64_t w = next64(r), w2 = next64(r);
            for (int j = 0; j < 16; j++) {
                uint64_t bits = j < 12 ? w >> (5 * j) : w2 >> (5 * (j - 12));
                int mag = 8 + (int)(bits & 15);
                q->scales[j] = (int8_t)((bits & 16) ? -mag : mag);
            }
            fill_bytes(r, q->ql, 128);
            fill_bytes(r, q->qh, 64);
        }
        break;
    default:
        break;
    }
}

/* Row r of tensor g->t into dst (its row bytes). */
static void gen_row(const row_gen *g, int64_t row, uint8_t *dst) {
    const synth_tensor *t = g->t;
    const int64_t n = t->ne[0];
    rng r = {.key = fin64(g->key + (uint64_t)(row + 1) * 0xD1B54A32D192ED03ull), .i = 0};
    if (t->kind == KIND_ROPE_FREQS) {
        memcpy(dst, g->freqs, sizeof(float) * (size_t)n);
        return;
    }
    switch (t->type) {
    case TM_DTYPE_F32: case TM_DTYPE_F16: case TM_DTYPE_BF16: {
        const int size = t->type == TM_DTYPE_F32 ? 4 : 2;
        uint64_t w = 0;
        for (int64_t j = 0; j < n; j++) { /* 12 bits pick one of the grid's values */
            if (j % 5 == 0) w = next64(&r);
            uint32_t v = g->grid[w & 4095];
            w >>= 12;
            if (size == 4) {
                memcpy(dst + 4 * j, &v, 4);
            } else {
                uint16_t h = (uint16_t)v;
                memcpy(dst + 2 * j, &h, 2);
            }
        }
        break;
    }
    default:
        gen_quant_row(g, &r, dst, n / tm_dtype_block_size(t->type));
        break;
    }
}

/* Root-mean-square of one quant (times d, before jitter) in each type, so that d0 =
 * sigma / this gives the matrix the wanted spread. Measured by the formulas in
 * gen_quant_row: q4_0 (q - 8) for q uniform in 0..15, q5_0 (q - 16) for q in 0..31, q8_0
 * uniform in -127..127, q4_k / q5_k sub-block scales 16..47 times quants spread 4.61 /
 * 9.23, q6_k scales 8..23 times (q - 32) for q in 0..63. */
static float quant_rms(tm_dtype t) {
    switch (t) {
    case TM_DTYPE_Q8_0: return 73.6f;
    case TM_DTYPE_Q4_0: return 4.64f;
    case TM_DTYPE_Q4_1: return 4.61f;
    case TM_DTYPE_Q5_0: return 9.25f;
    case TM_DTYPE_Q5_1: return 9.23f;
    case TM_DTYPE_Q4_K: return 33.0f * 4.61f;
    case TM_DTYPE_Q5_K: return 33.0f * 9.23f;
    case TM_DTYPE_Q6_K: return 16.2f * 18.5f;
    default: return 1.0f;
    }
}

static void row_gen_init(row_gen *g, const synth_tensor *t, uint64_t seed, const float *freqs) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a of the name */
    for (const char *c = t->name; *c; c++) h = (h ^ (uint8_t)*c) * 0x100000001b3ull;
    g->t = t;
    g->key = fin64(seed * 0x9E3779B97F4A7C15ull ^ h);
    g->freqs = freqs;
    g->d0 = t->sigma / quant_rms(t->type);
    float center = t->kind == KIND_VECTOR ? t->center : 0.0f;
    float half = t->kind == KIND_VECTOR ? t->half_width : sqrtf(3.0f) * t->sigma; /* uniform */
    for (int k = 0; k < 4096; k++) {
        float v = center + half * ((float)(2 * k + 1 - 4096) / 4096.0f);
        uint32_t bits;
        if (t->type == TM_DTYPE_F16) {
            bits = tm_f32_to_f16(v);
        } else if (t->type == TM_DTYPE_BF16) {
            bits = tm_f32_to_bf16(v);
        } else {
            memcpy(&bits, &v, 4);
        }
        g->grid[k] = bits;
    }
}

/* --- threads: a chunk of rows split evenly ------------------------------------------- */

typedef struct gen_job {
    const row_gen *g;
    int64_t row0, row1; /* rows [row0, row1) */
    uint8_t *dst;       /* row row0's bytes */
    int64_t row_bytes;
} gen_job;

static void *gen_worker(void *arg) {
    gen_job *j = arg;
    for (int64_t r = j->row0; r < j->row1; r++) gen_row(j->g, r, j->dst + (r - j->row0) * j->row_bytes);
    return NULL;
}

enum { MAX_THREADS = 64 };

static void gen_rows(const row_gen *g, int64_t row0, int64_t n_rows, int64_t row_bytes, uint8_t *dst,
                     int n_threads) {
    if ((int64_t)n_threads > n_rows) n_threads = (int)n_rows;
    if (n_rows * row_bytes < (1 << 20)) n_threads = 1; /* not worth a thread */
    gen_job jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int k = 0; k < n_threads; k++) {
        int64_t a = n_rows * k / n_threads, b = n_rows * (k + 1) / n_threads;
        jobs[k] = (gen_job){g, row0 + a, row0 + b, dst + a * row_bytes, row_bytes};
        if (k > 0) started[k] = pthread_create(&tid[k], NULL, gen_worker, &jobs[k]) == 0;
    }
    gen_worker(&jobs[0]);
    for (int k = 1; k < n_threads; k++) {
        if (started[k]) pthread_join(tid[k], NULL);
        else gen_worker(&jobs[k]); /* no thread to be had: this one does it */
    }
}

/* --- the model's tensors ---------------------------------------------------------------- */

static void add_t(synth_tensor *ts, int *n, const char *name, int64_t cols, int64_t rows,
                  tm_dtype type, tensor_kind kind, float sigma, float center, float half) {
    synth_tensor *t = &ts[(*n)++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = rows > 0 ? 2 : 1;
    t->ne[0] = cols;
    t->ne[1] = rows > 0 ? rows : 1;
    t->type = type;
    t->kind = kind;
    t->sigma = sigma;
    t->center = center;
    t->half_width = half;
}

/* Tensors per layer at most (gemma3: 4 norms, 2 post-norms, 7 matrices). */
enum { MAX_LAYER_TENSORS = 16 };

/* Fills ts (room for 4 + MAX_LAYER_TENSORS per layer) in llama.cpp's order; returns the count. */
static int list_tensors(const tm_synth_options *o, int n_layers, synth_tensor *ts) {
    const tm_synth_preset *p = o->preset;
    const int64_t qd = (int64_t)p->n_heads * p->head_dim, kvd = (int64_t)p->n_kv_heads * p->head_dim;
    const float s_dim = 1.0f / sqrtf((float)p->dim);
    const float s_res = 1.0f / sqrtf(2.0f * (float)p->n_layers); /* residual branches; the preset's
                                                                     depth, so --layers keeps bytes */
    const float s_logit = 3.0f * s_dim; /* logits of std ~3, as trained models spread them */
    const int qkv_bias = !strcmp(p->arch, "qwen2");
    const int qk_norm = !strcmp(p->arch, "qwen3") || !strcmp(p->arch, "gemma3");
    const int post_norms = !strncmp(p->arch, "gemma", 5);
    const int fused = !strcmp(p->arch, "phi3"); /* attn_qkv, and ffn_up holding gate then up */
    int n = 0;
    char name[64];
    add_t(ts, &n, "token_embd.weight", p->dim, p->n_vocab, o->type, KIND_MATRIX, s_logit, 0, 0);
    if (p->rope_llama3_factor > 0)
        add_t(ts, &n, "rope_freqs.weight", p->head_dim / 2, 0, TM_DTYPE_F32, KIND_ROPE_FREQS, 0, 0, 0);
    add_t(ts, &n, "output_norm.weight", p->dim, 0, TM_DTYPE_F32, KIND_VECTOR, 0, 1.0f, 0.1f);
    if (!p->tied) add_t(ts, &n, "output.weight", p->dim, p->n_vocab, o->type, KIND_MATRIX, s_logit, 0, 0);
    for (int l = 0; l < n_layers; l++) {
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, l), name)
        add_t(ts, &n, NAME("attn_norm.weight"), p->dim, 0, TM_DTYPE_F32, KIND_VECTOR, 0, 1.0f, 0.1f);
        if (fused) {
            add_t(ts, &n, NAME("attn_qkv.weight"), p->dim, qd + 2 * kvd, o->type, KIND_MATRIX, s_dim, 0, 0);
        } else {
            add_t(ts, &n, NAME("attn_q.weight"), p->dim, qd, o->type, KIND_MATRIX, s_dim, 0, 0);
            add_t(ts, &n, NAME("attn_k.weight"), p->dim, kvd, o->type, KIND_MATRIX, s_dim, 0, 0);
            add_t(ts, &n, NAME("attn_v.weight"), p->dim, kvd, o->type, KIND_MATRIX, s_dim, 0, 0);
        }
        if (qkv_bias) {
            add_t(ts, &n, NAME("attn_q.bias"), qd, 0, TM_DTYPE_F32, KIND_VECTOR, 0, 0.0f, 0.5f);
            add_t(ts, &n, NAME("attn_k.bias"), kvd, 0, TM_DTYPE_F32, KIND_VECTOR, 0, 0.0f, 0.5f);
            add_t(ts, &n, NAME("attn_v.bias"), kvd, 0, TM_DTYPE_F32, KIND_VECTOR, 0, 0.0f, 0.5f);
        }
        if (qk_norm) {
            add_t(ts, &n, NAME("attn_q_norm.weight"), p->head_dim, 0, TM_DTYPE_F32, KIND_VECTOR, 0, 1.0f, 0.1f);
            add_t(ts, &n, NAME("attn_k_norm.weight"), p->head_dim, 0, TM_DTYPE_F32, KIND_VECTOR, 0, 1.0f, 0.1f);
        }
        add_t(ts, &n, NAME("attn_output.weight"), qd, p->dim, o->type, KIND_MATRIX,
              s_res / sqrtf((float)qd), 0, 0);
        if (post_norms)
            add_t(ts, &n, NAME("post_attention_norm.weight"), p->dim, 0, TM_DTYPE_F32, KIND_VECTOR, 0, 1.0f, 0.1f);
        add_t(ts, &n, NAME("ffn_norm.weight"), p->dim, 0, TM_DTYPE_F32, KIND_VECTOR, 0, 1.0f, 0.1f);
        if (fused) {
            add_t(ts, &n, NAME("ffn_up.weight"), p->dim, 2 * (int64_t)p->ffn_dim, o->type, KIND_MATRIX, s_dim, 0, 0);
        } else {
            add_t(ts, &n, NAME("ffn_gate.weight"), p->dim, p->ffn_dim, o->type, KIND_MATRIX, s_dim, 0, 0);
            add_t(ts, &n, NAME("ffn_up.weight"), p->dim, p->ffn_dim, o->type, KIND_MATRIX, s_dim, 0, 0);
        }
        add_t(ts, &n, NAME("ffn_down.weight"), p->ffn_dim, p->dim, o->type, KIND_MATRIX,
              s_res / sqrtf((float)p->ffn_dim), 0, 0);
        if (post_norms)
            add_t(ts, &n, NAME("post_ffw_norm.weight"), p->dim, 0, TM_DTYPE_F32, KIND_VECTOR, 0, 1.0f, 0.1f);
#undef NAME
    }
    return n;
}

/* Llama 3.1 rope scaling as frequency divisors (what rope_freqs.weight holds): long
 * wavelengths are slowed by factor, short ones kept, the band between blended. */
static void llama3_freqs(const tm_synth_preset *p, float *out) {
    const float low = 1.0f, high = 4.0f, orig_ctx = 8192.0f, factor = p->rope_llama3_factor;
    for (int i = 0; i < p->head_dim / 2; i++) {
        float freq = 1.0f / powf(p->rope_theta, (float)(2 * i) / (float)p->head_dim);
        float wavelen = 2.0f * (float)M_PI / freq;
        if (wavelen < orig_ctx / high) out[i] = 1.0f;
        else if (wavelen > orig_ctx / low) out[i] = factor;
        else {
            float smooth = (orig_ctx / wavelen - low) / (high - low);
            out[i] = 1.0f / ((1.0f - smooth) / factor + smooth);
        }
    }
}

/* --- metadata --------------------------------------------------------------------------- */

/* tokenizer.* of src, with tokens / token_type / scores padded to n_vocab. */
static int copy_tokenizer(const tm_gguf *src, const char *src_path, int n_vocab, tm_gguf_writer *w,
                          char *err, size_t err_len) {
    tm_gguf_type et;
    uint64_t n_src;
    const void *types = NULL, *scores = NULL;
    if (tm_gguf_get_arr(src, "tokenizer.ggml.tokens", &et, &n_src, NULL) || et != TM_GGUF_STRING)
        return tm_fail(err, err_len, TM_EFORMAT, "%s: no tokenizer (tokenizer.ggml.tokens)", src_path);
    if (n_src > (uint64_t)n_vocab)
        return tm_fail(err, err_len, TM_EFORMAT, "%s: its %" PRIu64 " tokens do not fit the preset's "
                       "vocabulary of %d", src_path, n_src, n_vocab);
    uint64_t n_types = 0, n_scores = 0;
    if (tm_gguf_get_arr(src, "tokenizer.ggml.token_type", &et, &n_types, &types) == 0 &&
        (et != TM_GGUF_INT32 || n_types != n_src))
        return tm_fail(err, err_len, TM_EFORMAT, "%s: tokenizer.ggml.token_type is not %" PRIu64
                       " int32", src_path, n_src);
    if (tm_gguf_get_arr(src, "tokenizer.ggml.scores", &et, &n_scores, &scores) == 0 &&
        (et != TM_GGUF_FLOAT32 || n_scores != n_src))
        return tm_fail(err, err_len, TM_EFORMAT, "%s: tokenizer.ggml.scores is not %" PRIu64 " f32",
                       src_path, n_src);

    int rc = 0;
    for (int64_t i = 0; i < tm_gguf_n_keys(src) && !rc; i++) {
        const char *key = tm_gguf_key_name(src, i);
        const void *raw;
        size_t n;
        if (strncmp(key, "tokenizer.", 10) || !strcmp(key, "tokenizer.ggml.tokens") ||
            !strcmp(key, "tokenizer.ggml.token_type") || !strcmp(key, "tokenizer.ggml.scores"))
            continue;
        if (!(rc = tm_gguf_key_raw(src, i, &raw, &n))) rc = tm_gguf_writer_add_raw_kv(w, raw, n);
    }
    const char **tokens = malloc(sizeof(char *) * (size_t)n_vocab);
    int32_t *ttype = malloc(sizeof(int32_t) * (size_t)n_vocab);
    float *tscore = scores ? malloc(sizeof(float) * (size_t)n_vocab) : NULL;
    char *pads = malloc((size_t)(n_vocab - n_src) * 32 + 1);
    if (!tokens || !ttype || (scores && !tscore) || !pads) rc = TM_ENOMEM;
    for (int64_t i = 0; i < n_vocab && !rc; i++) {
        if ((uint64_t)i < n_src) {
            rc = tm_gguf_get_arr_str(src, "tokenizer.ggml.tokens", (uint64_t)i, &tokens[i], NULL);
            if (types) memcpy(&ttype[i], (const char *)types + 4 * i, 4);
            else ttype[i] = 1; /* normal */
            if (tscore) memcpy(&tscore[i], (const char *)scores + 4 * i, 4);
        } else { /* padding: type 5 is "unused", which no text encodes to and none prints */
            char *s = pads + (i - (int64_t)n_src) * 32;
            snprintf(s, 32, "<|synth_unused_%" PRId64 "|>", i);
            tokens[i] = s;
            ttype[i] = 5;
            if (tscore) tscore[i] = 0.0f;
        }
    }
    if (!rc) rc = tm_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", tokens, (uint64_t)n_vocab);
    if (!rc) rc = tm_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", TM_GGUF_INT32, ttype, (uint64_t)n_vocab);
    if (!rc && tscore)
        rc = tm_gguf_writer_add_arr(w, "tokenizer.ggml.scores", TM_GGUF_FLOAT32, tscore, (uint64_t)n_vocab);
    free(tokens);
    free(ttype);
    free(tscore);
    free(pads);
    if (rc) return tm_fail(err, err_len, rc, "%s: cannot copy its tokenizer (%s)", src_path, tm_strerror(rc));
    return 0;
}

static int add_metadata(const tm_synth_options *o, int n_layers, tm_gguf_writer *w) {
    const tm_synth_preset *p = o->preset;
    char key[128], text[160];
    int rc = 0;
#define KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, p->arch), key)
    if (!rc) rc = tm_gguf_writer_add_str(w, "general.architecture", p->arch);
    /* no preset in the name: llama.cpp sets token attributes by general.name (a name with
     * "phi3" in it looks up Phi-3's special tokens, which the copied tokenizer lacks); the
     * preset is in tokenmill.synth */
    if (!rc) rc = tm_gguf_writer_add_str(w, "general.name", "tokenmill synthetic model");
    if (!rc) rc = tm_gguf_writer_add_u32(w, "general.file_type", o->mix_m ? (o->type == TM_DTYPE_Q4_K ? 15u : 17u)
                                                                           : ftype_of(o->type));
    if (!rc) rc = tm_gguf_writer_add_u32(w, "general.quantization_version", 2);
    snprintf(text, sizeof text, "%s:%s seed %" PRIu64 " layers %d", p->name, tm_synth_type_name(o),
             o->seed, n_layers);
    if (!rc) rc = tm_gguf_writer_add_str(w, "tokenmill.synth", text);
    if (!rc) rc = tm_gguf_writer_add_u32(w, KEY("block_count"), (uint32_t)n_layers);
    if (!rc) rc = tm_gguf_writer_add_u32(w, KEY("context_length"), (uint32_t)p->n_ctx);
    if (!rc) rc = tm_gguf_writer_add_u32(w, KEY("embedding_length"), (uint32_t)p->dim);
    if (!rc) rc = tm_gguf_writer_add_u32(w, KEY("feed_forward_length"), (uint32_t)p->ffn_dim);
    if (!rc) rc = tm_gguf_writer_add_u32(w, KEY("attention.head_count"), (uint32_t)p->n_heads);
    if (!rc) rc = tm_gguf_writer_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)p->n_kv_heads);
    if (!rc) rc = tm_gguf_writer_add_u32(w, KEY("attention.key_length"), (uint32_t)p->head_dim);
    if (!rc) rc = tm_gguf_writer_add_u32(w, KEY("attention.value_length"), (uint32_t)p->head_dim);
    if (!rc) rc = tm_gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), p->rms_eps);
    if (!rc) rc = tm_gguf_writer_add_f32(w, KEY("rope.freq_base"), p->rope_theta);
    if (!rc) rc = tm_gguf_writer_add_u32(w, KEY("rope.dimension_count"), (uint32_t)p->head_dim);
    if (!rc) rc = tm_gguf_writer_add_u32(w, KEY("vocab_size"), (uint32_t)p->n_vocab);
    if (!rc && p->window > 0) rc = tm_gguf_writer_add_u32(w, KEY("attention.sliding_window"), (uint32_t)p->window);
    if (!rc && p->attn_softcap > 0) rc = tm_gguf_writer_add_f32(w, KEY("attn_logit_softcapping"), p->attn_softcap);
    if (!rc && p->final_softcap > 0) rc = tm_gguf_writer_add_f32(w, KEY("final_logit_softcapping"), p->final_softcap);
#undef KEY
    return rc;
}

/* --- writing ----------------------------------------------------------------------------- */

enum { CHUNK_BYTES = 32 << 20 }; /* rows drawn per append: memory stays bounded */

/* Declares everything in w, then streams the tensors into path (a file) or, when path is
 * NULL, into an image opened as *image. */
static int synth_run(const tm_synth_options *o, const char *path, tm_gguf **image, char *err,
                     size_t err_len) {
    const tm_synth_preset *p = o->preset;
    if (!p || !tm_synth_type_ok(o->type))
        return tm_fail(err, err_len, TM_EINVAL, "synth: no preset or an unsupported type");
    const int n_layers = o->n_layers > 0 ? o->n_layers : p->n_layers;
    if (n_layers > 4096 || p->head_dim > 1024 || p->head_dim % 2 || p->n_kv_heads <= 0 ||
        p->n_heads % p->n_kv_heads || p->dim <= 0 || p->ffn_dim <= 0 || p->n_vocab <= 0)
        return tm_fail(err, err_len, TM_EINVAL, "synth: preset '%s' or %d layers out of range",
                       p->name, n_layers);
    int n_threads = o->n_threads > 0 ? o->n_threads : tm_n_cpus();
    n_threads = TM_MAX(1, TM_MIN(n_threads, MAX_THREADS));
    synth_tensor *ts = calloc(4 + MAX_LAYER_TENSORS * (size_t)n_layers, sizeof *ts);
    tm_gguf_writer *w = tm_gguf_writer_create(32);
    tm_gguf *tok = NULL;
    uint8_t *buf = NULL;
    row_gen *g = malloc(sizeof *g);
    float freqs[512]; /* (head_dim / 2) */
    char tok_path[1024], msg[512];
    int rc;
    if (!ts || !w || !g) {
        rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory");
        goto done;
    }
    int n_t = list_tensors(o, n_layers, ts);
    if (o->mix_m) { /* each matrix in the type the recipe gives it */
        tm_convert_target mix = {o->type, 1, 0};
        for (int i = 0; i < n_t; i++)
            if (ts[i].kind == KIND_MATRIX)
                ts[i].type = tm_convert_tensor_type(&mix, ts[i].name, ts[i].n_dims, ts[i].ne[0], n_layers, !p->tied);
    }
    int64_t max_row = 0;
    for (int i = 0; i < n_t; i++) {
        int64_t rb = tm_dtype_row_bytes(ts[i].type, ts[i].ne[0]);
        if (rb < 0) {
            rc = tm_fail(err, err_len, TM_EINVAL, "%s needs rows of a multiple of %" PRId64 " values; "
                         "%s of %s has rows of %" PRId64, tm_dtype_name(ts[i].type),
                         tm_dtype_block_size(ts[i].type), ts[i].name, p->name, ts[i].ne[0]);
            goto done;
        }
        max_row = TM_MAX(max_row, rb);
    }
    if (p->rope_llama3_factor > 0) llama3_freqs(p, freqs);

    const char *tp = o->tokenizer_from ? o->tokenizer_from : tm_model_default_path(tok_path, sizeof tok_path);
    if ((rc = tm_gguf_open(tp, &tok, msg, sizeof msg))) {
        rc = tm_fail(err, err_len, rc, "tokenizer source: %s", msg);
        goto done;
    }
    if ((rc = add_metadata(o, n_layers, w))) {
        rc = tm_fail(err, err_len, rc, "cannot add metadata (%s)", tm_strerror(rc));
        goto done;
    }
    if ((rc = copy_tokenizer(tok, tp, p->n_vocab, w, err, err_len))) goto done;
    tm_gguf_close(tok);
    tok = NULL;
    for (int i = 0; i < n_t; i++)
        if ((rc = tm_gguf_writer_add_tensor_info(w, ts[i].name, ts[i].n_dims, ts[i].ne, ts[i].type))) {
            rc = tm_fail(err, err_len, rc, "tensor '%s': cannot declare it", ts[i].name);
            goto done;
        }

    /* a chunk is CHUNK_BYTES of whole rows, or one row when a row is larger */
    if (!(buf = malloc((size_t)(CHUNK_BYTES + max_row)))) {
        rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory");
        goto done;
    }
    if (path) rc = tm_gguf_writer_begin(w, path, err, err_len);
    else rc = tm_gguf_writer_begin_memory(w, err, err_len);
    if (rc) goto done;
    for (int i = 0; i < n_t && !rc; i++) {
        const int64_t rb = tm_dtype_row_bytes(ts[i].type, ts[i].ne[0]);
        const int64_t chunk_rows = TM_MAX(1, CHUNK_BYTES / rb);
        row_gen_init(g, &ts[i], o->seed, freqs);
        for (int64_t r = 0; r < ts[i].ne[1] && !rc; r += chunk_rows) {
            int64_t k = TM_MIN(chunk_rows, ts[i].ne[1] - r);
            gen_rows(g, r, k, rb, buf, n_threads);
            rc = tm_gguf_writer_append(w, buf, (size_t)(k * rb), err, err_len);
        }
    }
    if (rc) goto done;
    if (path) rc = tm_gguf_writer_finish(w, err, err_len);
    else rc = tm_gguf_writer_finish_memory(w, image, err, err_len);
done:
    tm_gguf_writer_destroy(w); /* removes a partial file, unmaps a partial image */
    tm_gguf_close(tok);
    free(ts);
    free(g);
    free(buf);
    return rc;
}

int tm_synth_write(const tm_synth_options *o, const char *path, char *err, size_t err_len) {
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", path) < 0) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    int rc = synth_run(o, tmp, NULL, err, err_len);
    if (!rc && rename(tmp, path) < 0) {
        rc = tm_fail(err, err_len, TM_EIO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        remove(tmp);
    }
    free(tmp);
    return rc;
}

int tm_synth_build(const tm_synth_options *o, tm_gguf **out, char *err, size_t err_len) {
    *out = NULL;
    return synth_run(o, NULL, out, err, err_len);
}

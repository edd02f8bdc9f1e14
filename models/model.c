/* model.c - the models of models/arch.h: weights on a backend, and the forward pass
 * written once against the op table in kernels/backend.h. Every architecture runs the same
 * steps; what differs is data: the config (activation, scales, soft-caps, per-layer
 * windows and rope parameters) and which optional tensors a layer has (q/k biases, q/k
 * norms, post-norms). Fused tensors (Phi-3's attn_qkv, its gate/up) are split into views
 * at load, so the forward pass never sees them. */
#include "models/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/arch.h"

typedef struct tm_layer {
    const float *attn_norm;     /* (dim) f32, backend memory */
    tm_weight wq;               /* (n_heads * head_dim, dim) */
    tm_weight wk;               /* (n_kv_heads * head_dim, dim) */
    tm_weight wv;               /* (n_kv_heads * head_dim, dim) */
    tm_weight wo;               /* (dim, n_heads * head_dim) */
    const float *bq;            /* (n_heads * head_dim) f32 or NULL (qwen2 has q/k/v biases) */
    const float *bk;            /* (n_kv_heads * head_dim) f32 or NULL */
    const float *bv;            /* (n_kv_heads * head_dim) f32 or NULL */
    const float *q_norm;        /* (head_dim) f32 or NULL: RMSNorm of each q head before rope */
    const float *k_norm;        /* (head_dim) f32 or NULL: the same for k */
    const float *attn_post_norm;/* (dim) f32 or NULL: RMSNorm of the attention output (Gemma) */
    const float *ffn_norm;      /* (dim) f32 */
    tm_weight w_gate;           /* (ffn_dim, dim) */
    tm_weight w_up;             /* (ffn_dim, dim) */
    tm_weight w_down;           /* (dim, ffn_dim) */
    const float *ffn_post_norm; /* (dim) f32 or NULL: RMSNorm of the feed-forward output (Gemma) */
    int window;                 /* > 0: sliding-window layer seeing this many keys; 0: all */
    const tm_rope *rope;        /* its rotary parameters: config.rope or config.rope_swa */
} tm_layer;

/* Activation buffers, carved from one allocation in backend memory (buf) sized for
 * cap_tokens tokens / cap_logits rows, so a step never allocates. */
typedef struct tm_activations {
    void *buf;       /* the one backend allocation the pointers below point into */
    int cap_tokens;  /* tokens the buffers hold */
    int cap_logits;  /* logit rows the buffers hold */
    float *x;        /* (cap_tokens, dim) residual stream */
    float *xb;       /* (cap_tokens, dim) normed input / projection output */
    float *q;        /* (cap_tokens, n_heads * head_dim) */
    float *k;        /* (cap_tokens, n_kv_heads * head_dim) */
    float *v;        /* (cap_tokens, n_kv_heads * head_dim) */
    float *att;      /* (cap_tokens, n_heads * head_dim) attention output */
    float *hb;       /* (cap_tokens, ffn_dim) gate, then silu(gate) * up */
    float *hb2;      /* (cap_tokens, ffn_dim) up */
    float *xl;       /* (cap_logits, dim) rows that need logits */
    float *logits;   /* (cap_logits, n_vocab) the last forward's logits */
    float *host_logits; /* (cap_logits, n_vocab) host copy for a device backend, else NULL */
    int n_logits;    /* rows of logits the last forward wrote */
} tm_activations;

struct tm_model {
    tm_model_config config;  /* read-only after load */
    tm_gguf *gguf;           /* the mapped file; weights may point into it */
    tm_tokenizer *tokenizer; /* vocabulary */
    tm_backend *be;          /* borrowed */
    tm_weight token_embd;    /* (n_vocab, dim) */
    tm_weight output;        /* (n_vocab, dim); a second view of token_embd when tied */
    const float *out_norm;   /* (dim) f32 */
    tm_layer *layers;        /* (n_layers) */
    float *freq_factors;     /* (head_dim / 2) host copy of rope_freqs, or NULL */
    uint8_t *swa_layers;     /* (n_layers) which layers slide (config.swa_layers), or NULL */
    void **owned;            /* backend buffers to free at destroy */
    int n_owned, cap_owned;
    tm_activations act;      /* grown by tm_model_reserve */
};

const char *tm_model_default_path(char *buf, size_t len) {
    const char *home = getenv("HOME");
    snprintf(buf, len, "%s/.cache/tokenmill/models/SmolLM2-135M-Instruct.Q4_1.gguf",
             home && *home ? home : ".");
    return buf;
}

/* --- loading ------------------------------------------------------------------------ */

static int track(tm_model *m, void *p) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **o = realloc(m->owned, sizeof(void *) * (size_t)cap);
        if (!o) return TM_ENOMEM;
        m->owned = o;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return 0;
}

/* Finds name and checks its shape is (rows, cols) (GGUF ne = {cols, rows}). cols = 0
 * means a 1-D tensor of rows elements. */
static const tm_gguf_tensor *want(const tm_model *m, const char *name, int64_t rows, int64_t cols,
                                  int optional, int *rc, char *err, size_t err_len) {
    const tm_gguf_tensor *t = tm_gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (!optional) *rc = tm_fail(err, err_len, TM_ENOTFOUND, "missing tensor '%s'", name);
        return NULL;
    }
    int ok = cols ? (t->n_dims == 2 && t->ne[0] == cols && t->ne[1] == rows)
                  : (t->n_dims == 1 && t->ne[0] == rows);
    if (!ok) {
        *rc = tm_fail(err, err_len, TM_EFORMAT,
                      "tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", name,
                      (long long)t->ne[0], (long long)(t->n_dims > 1 ? t->ne[1] : 1),
                      (long long)(cols ? cols : rows), (long long)(cols ? rows : 1));
        return NULL;
    }
    return t;
}

/* Rows [row0, row0 + rows) of tensor t (cols each) as a weight on the backend: the whole
 * tensor, or a view of a fused one (its rows are contiguous in the file). */
static int init_rows(tm_model *m, tm_weight *w, const tm_gguf_tensor *t, int64_t row0, int64_t rows,
                     int64_t cols, char *err, size_t err_len) {
    const int64_t row_bytes = tm_dtype_row_bytes(t->type, cols);
    if (row_bytes < 0)
        return tm_fail(err, err_len, TM_EFORMAT, "tensor '%s': %s rows of %lld values do not split into blocks",
                       t->name, tm_dtype_name(t->type), (long long)cols);
    char msg[256] = "";
    int rc = m->be->weight_init(m->be, w, t->type, rows, cols, (const uint8_t *)t->data + row0 * row_bytes, msg,
                                sizeof msg);
    if (rc) return tm_fail(err, err_len, rc, "tensor '%s' (%s): %s", t->name, tm_dtype_name(t->type), msg);
    return 0;
}

static int load_weight(tm_model *m, tm_weight *w, const char *name, int64_t rows, int64_t cols,
                       char *err, size_t err_len) {
    int rc = 0;
    const tm_gguf_tensor *t = want(m, name, rows, cols, 0, &rc, err, err_len);
    if (!t) return rc;
    return init_rows(m, w, t, 0, rows, cols, err, err_len);
}

/* A 1-D f32 vector (norm weight or bias), uploaded to the backend. */
static int load_vector(tm_model *m, const float **out, const char *name, int64_t n, int optional,
                       char *err, size_t err_len) {
    int rc = 0;
    *out = NULL;
    const tm_gguf_tensor *t = want(m, name, n, 0, optional, &rc, err, err_len);
    if (!t) return rc;
    if (t->type != TM_DTYPE_F32)
        return tm_fail(err, err_len, TM_EUNSUPPORTED, "tensor '%s' must be f32, is %s", name,
                       tm_dtype_name(t->type));
    float *buf = m->be->alloc(m->be, sizeof(float) * (size_t)n);
    if (!buf || track(m, buf)) return tm_fail(err, err_len, TM_ENOMEM, "out of memory for '%s'", name);
    m->be->upload(m->be, buf, t->data, sizeof(float) * (size_t)n);
    *out = buf;
    return 0;
}

/* q, k, v of layer l: three tensors, or views of Phi-3's fused attn_qkv (rows q, k, v). */
static int load_qkv(tm_model *m, tm_layer *L, int l, char *err, size_t err_len) {
    tm_model_config *c = &m->config;
    const int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    char name[96];
    int rc = 0;
    snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", l);
    if (tm_gguf_find_tensor(m->gguf, name)) {
        const tm_gguf_tensor *t = want(m, name, qd + 2 * kvd, c->dim, 0, &rc, err, err_len);
        if (!t) return rc;
        c->fused_qkv = 1;
        if ((rc = init_rows(m, &L->wq, t, 0, qd, c->dim, err, err_len)) ||
            (rc = init_rows(m, &L->wk, t, qd, kvd, c->dim, err, err_len)) ||
            (rc = init_rows(m, &L->wv, t, qd + kvd, kvd, c->dim, err, err_len)))
            return rc;
        const float *b = NULL;
        snprintf(name, sizeof name, "blk.%d.attn_qkv.bias", l);
        if ((rc = load_vector(m, &b, name, qd + 2 * kvd, 1, err, err_len))) return rc;
        if (c->qkv_bias && !b) return tm_fail(err, err_len, TM_ENOTFOUND, "missing tensor '%s'", name);
        if (b) L->bq = b, L->bk = b + qd, L->bv = b + qd + kvd, c->qkv_bias = 1; /* views of one buffer */
        return 0;
    }
#define TM_NAME(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, l), name)
    if ((rc = load_weight(m, &L->wq, TM_NAME("attn_q.weight"), qd, c->dim, err, err_len))) return rc;
    if ((rc = load_weight(m, &L->wk, TM_NAME("attn_k.weight"), kvd, c->dim, err, err_len))) return rc;
    if ((rc = load_weight(m, &L->wv, TM_NAME("attn_v.weight"), kvd, c->dim, err, err_len))) return rc;
    /* biases: required where the architecture has them (qwen2), taken where a file has them */
    const int opt = !c->qkv_bias;
    if ((rc = load_vector(m, &L->bq, TM_NAME("attn_q.bias"), qd, opt, err, err_len))) return rc;
    if ((rc = load_vector(m, &L->bk, TM_NAME("attn_k.bias"), kvd, opt, err, err_len))) return rc;
    if ((rc = load_vector(m, &L->bv, TM_NAME("attn_v.bias"), kvd, opt, err, err_len))) return rc;
#undef TM_NAME
    if (L->bq || L->bk || L->bv) c->qkv_bias = 1; /* later layers must have them too */
    return 0;
}

/* gate and up of layer l: two tensors, or Phi-3's ffn_up of 2 ffn_dim rows (gate first)
 * and no ffn_gate. */
static int load_gate_up(tm_model *m, tm_layer *L, int l, char *err, size_t err_len) {
    tm_model_config *c = &m->config;
    char gate[96], up[96];
    int rc = 0;
    snprintf(gate, sizeof gate, "blk.%d.ffn_gate.weight", l);
    snprintf(up, sizeof up, "blk.%d.ffn_up.weight", l);
    const tm_gguf_tensor *u = tm_gguf_find_tensor(m->gguf, up);
    if (!tm_gguf_find_tensor(m->gguf, gate) && u && u->n_dims == 2 && u->ne[1] == 2 * (int64_t)c->ffn_dim) {
        if (!want(m, up, 2 * (int64_t)c->ffn_dim, c->dim, 0, &rc, err, err_len)) return rc;
        c->fused_gate_up = 1;
        if ((rc = init_rows(m, &L->w_gate, u, 0, c->ffn_dim, c->dim, err, err_len))) return rc;
        return init_rows(m, &L->w_up, u, c->ffn_dim, c->ffn_dim, c->dim, err, err_len);
    }
    if ((rc = load_weight(m, &L->w_gate, gate, c->ffn_dim, c->dim, err, err_len))) return rc;
    return load_weight(m, &L->w_up, up, c->ffn_dim, c->dim, err, err_len);
}

static int load_layer(tm_model *m, int l, char *err, size_t err_len) {
    const tm_model_config *c = &m->config;
    tm_layer *L = &m->layers[l];
    const int64_t qd = (int64_t)c->n_heads * c->head_dim;
    char name[96];
    int rc;
#define TM_NAME(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, l), name)
    if ((rc = load_vector(m, &L->attn_norm, TM_NAME("attn_norm.weight"), c->dim, 0, err, err_len))) return rc;
    if ((rc = load_qkv(m, L, l, err, err_len))) return rc;
    if ((rc = load_weight(m, &L->wo, TM_NAME("attn_output.weight"), c->dim, qd, err, err_len))) return rc;
    /* the optional parts are the architecture's (llama.cpp loads them for those only) */
    if (c->qk_norm &&
        ((rc = load_vector(m, &L->q_norm, TM_NAME("attn_q_norm.weight"), c->head_dim, 0, err, err_len)) ||
         (rc = load_vector(m, &L->k_norm, TM_NAME("attn_k_norm.weight"), c->head_dim, 0, err, err_len))))
        return rc;
    if (c->post_norms &&
        (rc = load_vector(m, &L->attn_post_norm, TM_NAME("post_attention_norm.weight"), c->dim, 0, err, err_len)))
        return rc;
    if ((rc = load_vector(m, &L->ffn_norm, TM_NAME("ffn_norm.weight"), c->dim, 0, err, err_len))) return rc;
    if ((rc = load_gate_up(m, L, l, err, err_len))) return rc;
    if ((rc = load_weight(m, &L->w_down, TM_NAME("ffn_down.weight"), c->dim, c->ffn_dim, err, err_len))) return rc;
    if (c->post_norms &&
        (rc = load_vector(m, &L->ffn_post_norm, TM_NAME("post_ffw_norm.weight"), c->dim, 0, err, err_len)))
        return rc;
#undef TM_NAME
    const int swa = c->swa_layers && c->swa_layers[l];
    L->window = swa ? c->sliding_window : 0;
    L->rope = swa ? &c->rope_swa : &c->rope;
    return 0;
}

static int load_weights(tm_model *m, tm_load_progress_fn progress, void *arg, char *err,
                        size_t err_len) {
    const tm_model_config *c = &m->config;
    int rc;

    const tm_gguf_tensor *emb = tm_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!emb) return tm_fail(err, err_len, TM_ENOTFOUND, "missing tensor 'token_embd.weight'");
    m->config.n_vocab = emb->n_dims == 2 ? (int)emb->ne[1] : 0;
    if ((rc = load_weight(m, &m->token_embd, "token_embd.weight", c->n_vocab, c->dim, err, err_len)))
        return rc;
    /* Gemma 2's output is always the embedding (llama.cpp ignores an output.weight there) */
    if (tm_gguf_find_tensor(m->gguf, "output.weight") && strcmp(c->arch, "gemma2")) {
        if ((rc = load_weight(m, &m->output, "output.weight", c->n_vocab, c->dim, err, err_len))) return rc;
    } else {
        m->config.tied_embeddings = 1;
        m->output = m->token_embd;
    }
    if ((rc = load_vector(m, &m->out_norm, "output_norm.weight", c->dim, 0, err, err_len))) return rc;

    /* Phi-3's LongRoPE (128k variants): per-frequency factors chosen by context length and
     * an attention factor the rope op does not take */
    if (tm_gguf_find_tensor(m->gguf, "rope_factors_long.weight"))
        return tm_fail(err, err_len, TM_EUNSUPPORTED, "LongRoPE (rope_factors_long/short) is not supported");
    /* Llama 3.1 style frequency factors (the global layers' rope) */
    const tm_gguf_tensor *ff = tm_gguf_find_tensor(m->gguf, "rope_freqs.weight");
    if (ff) {
        int64_t n = c->rope.n_dims / 2;
        if (ff->type != TM_DTYPE_F32 || ff->n_dims != 1 || ff->ne[0] != n)
            return tm_fail(err, err_len, TM_EFORMAT, "tensor 'rope_freqs.weight' must be f32 [%lld]",
                           (long long)n);
        m->freq_factors = malloc(sizeof(float) * (size_t)n);
        if (!m->freq_factors) return TM_ENOMEM;
        memcpy(m->freq_factors, ff->data, sizeof(float) * (size_t)n);
        m->config.rope.freq_factors = m->freq_factors;
    }

    m->layers = calloc((size_t)c->n_layers, sizeof(tm_layer));
    if (!m->layers) return TM_ENOMEM;
    for (int l = 0; l < c->n_layers; l++) {
        if ((rc = load_layer(m, l, err, err_len))) return rc;
        if (progress) progress(arg, l + 1, c->n_layers);
    }
    return 0;
}

int tm_model_load(const char *path, tm_backend *be, tm_model **out, char *err, size_t err_len) {
    return tm_model_load_ex(path, be, NULL, NULL, out, err, err_len);
}

int tm_model_load_ex(const char *path, tm_backend *be, tm_load_progress_fn progress, void *arg,
                     tm_model **out, char *err, size_t err_len) {
    *out = NULL;
    tm_gguf *g = NULL;
    char msg[512] = "";
    int rc = tm_gguf_open(path, &g, msg, sizeof msg);
    if (rc) {
        /* open errors already name the file; format errors do not */
        if (strncmp(msg, path, strlen(path)) == 0) return tm_fail(err, err_len, rc, "%s", msg);
        return tm_fail(err, err_len, rc, "%s: %s", path, msg);
    }
    return tm_model_load_gguf(g, path, be, progress, arg, out, err, err_len);
}

int tm_model_load_gguf(tm_gguf *g, const char *name, tm_backend *be, tm_load_progress_fn progress,
                       void *arg, tm_model **out, char *err, size_t err_len) {
    *out = NULL;
    tm_model *m = calloc(1, sizeof *m);
    if (!m) {
        tm_gguf_close(g);
        return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    }
    m->be = be;
    m->gguf = g;
    char msg[512] = "";
    int rc;
    if ((rc = tm_arch_read_config(m->gguf, name, &m->config, &m->swa_layers, err, err_len))) goto fail;
    if ((rc = tm_tokenizer_create(m->gguf, &m->tokenizer, msg, sizeof msg))) {
        tm_fail(err, err_len, rc, "tokenizer: %s", msg);
        goto fail;
    }
    if ((rc = load_weights(m, progress, arg, err, err_len))) goto fail;
    if (tm_tokenizer_n_vocab(m->tokenizer) > m->config.n_vocab) {
        rc = tm_fail(err, err_len, TM_EFORMAT, "vocabulary has %d tokens but token_embd only %d rows",
                     tm_tokenizer_n_vocab(m->tokenizer), m->config.n_vocab);
        goto fail;
    }
    if ((rc = tm_model_reserve(m, 64, 1))) {
        tm_fail(err, err_len, rc, "out of memory for activations");
        goto fail;
    }
    *out = m;
    return 0;
fail:
    tm_model_destroy(m); /* closes g */
    return rc;
}

static void free_activations(tm_model *m) {
    tm_activations *a = &m->act;
    if (a->buf) m->be->free(m->be, a->buf);
    free(a->host_logits);
    memset(a, 0, sizeof *a);
}

void tm_model_destroy(tm_model *m) {
    if (!m) return;
    if (m->be) {
        free_activations(m);
        for (int i = 0; i < m->n_owned; i++) m->be->free(m->be, m->owned[i]);
        if (m->layers) {
            for (int l = 0; l < m->config.n_layers; l++) {
                tm_layer *L = &m->layers[l];
                tm_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
                for (size_t i = 0; i < TM_ARRAY_LEN(ws); i++)
                    if (ws[i]->data || ws[i]->aux) m->be->weight_deinit(m->be, ws[i]);
            }
        }
        if (!m->config.tied_embeddings && (m->output.data || m->output.aux))
            m->be->weight_deinit(m->be, &m->output);
        if (m->token_embd.data || m->token_embd.aux) m->be->weight_deinit(m->be, &m->token_embd);
    }
    free(m->owned);
    free(m->layers);
    free(m->freq_factors);
    free(m->swa_layers);
    tm_tokenizer_destroy(m->tokenizer);
    tm_gguf_close(m->gguf);
    free(m);
}

const tm_model_config *tm_model_get_config(const tm_model *m) { return &m->config; }
const tm_tokenizer *tm_model_tokenizer(const tm_model *m) { return m->tokenizer; }
const tm_gguf *tm_model_gguf(const tm_model *m) { return m->gguf; }
tm_backend *tm_model_backend(const tm_model *m) { return m->be; }

/* --- KV cache and buffers ------------------------------------------------------------ */

static tm_kv_shape tm_model_kv_shape(const tm_model *m, int n_blocks, int block_size, tm_kv_dtype dtype) {
    return (tm_kv_shape){
        .n_layers = m->config.n_layers,
        .n_blocks = n_blocks,
        .block_size = block_size,
        .n_kv_heads = m->config.n_kv_heads,
        .head_dim = m->config.head_dim,
        .dtype = dtype,
    };
}

size_t tm_model_kv_bytes_per_block(const tm_model *m, int block_size, tm_kv_dtype dtype) {
    const tm_kv_shape shape = tm_model_kv_shape(m, 1, block_size, dtype);
    return tm_kv_page_bytes(&shape);
}

int tm_model_kv_create(tm_model *m, int n_blocks, int block_size, tm_kv_dtype dtype, tm_kv_cache **out, char *err,
                       size_t err_len) {
    if (n_blocks <= 0 || block_size <= 0 || !tm_kv_dtype_name(dtype))
        return tm_fail(err, err_len, TM_EINVAL, "bad KV cache size or type");
    const tm_kv_shape shape = tm_model_kv_shape(m, n_blocks, block_size, dtype);
    return m->be->kv_create(m->be, &shape, out, err, err_len);
}

void tm_model_kv_destroy(tm_model *m, tm_kv_cache *kv) {
    if (kv) m->be->kv_destroy(m->be, kv);
}

int tm_model_reserve(tm_model *m, int max_tokens, int max_logits) {
    tm_activations *a = &m->act;
    if (max_tokens <= a->cap_tokens && max_logits <= a->cap_logits) return 0;
    max_tokens = TM_MAX(max_tokens, a->cap_tokens);
    max_logits = TM_MAX(max_logits, a->cap_logits);
    free_activations(m);
    const tm_model_config *c = &m->config;
    size_t T = (size_t)max_tokens, L = (size_t)max_logits;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    struct { float **p; size_t n; } bufs[] = {
        {&a->x, T * c->dim},  {&a->xb, T * c->dim},  {&a->q, T * qd},          {&a->k, T * kvd},
        {&a->v, T * kvd},     {&a->att, T * qd},     {&a->hb, T * c->ffn_dim}, {&a->hb2, T * c->ffn_dim},
        {&a->xl, L * c->dim}, {&a->logits, L * c->n_vocab},
    };
    /* each buffer starts on a 256-byte boundary (the widest load any kernel issues) */
    size_t total = 0;
    for (size_t i = 0; i < TM_ARRAY_LEN(bufs); i++) total += (bufs[i].n * sizeof(float) + 255) / 256 * 256;
    a->buf = m->be->alloc(m->be, total);
    if (!a->buf) return TM_ENOMEM;
    size_t off = 0;
    for (size_t i = 0; i < TM_ARRAY_LEN(bufs); i++) {
        *bufs[i].p = (float *)((char *)a->buf + off);
        off += (bufs[i].n * sizeof(float) + 255) / 256 * 256;
    }
    if (!m->be->host_memory) {
        a->host_logits = malloc(L * c->n_vocab * sizeof(float));
        if (!a->host_logits) {
            free_activations(m);
            return TM_ENOMEM;
        }
    }
    a->cap_tokens = max_tokens;
    a->cap_logits = max_logits;
    return 0;
}

/* --- forward ------------------------------------------------------------------------- */

/* Several weights applied to one input: one fused op where the backend has it. */
static void tm_matmul_shared_input(tm_backend *be, int n_w, float *const outs[], const float *x,
                                   const tm_weight *const ws[], const float *const biases[], int n) {
    if (be->matmul_multi) {
        be->matmul_multi(be, n_w, outs, x, ws, biases, n);
        return;
    }
    for (int k = 0; k < n_w; k++) be->matmul(be, outs[k], x, ws[k], biases ? biases[k] : NULL, n);
}

/* x += r, out = rmsnorm(x) * w: one pass over the rows where the backend fuses them. */
static void tm_residual_norm(tm_backend *be, float *x, const float *r, const float *w, float *out, int n, int dim,
                             float eps) {
    if (be->add_rmsnorm) {
        be->add_rmsnorm(be, x, r, w, out, n, dim, eps);
        return;
    }
    be->add(be, x, x, r, (int64_t)n * dim);
    be->rmsnorm(be, out, x, w, n, dim, eps);
}

static int check_batch(const tm_model *m, const tm_batch *b, char *err, size_t err_len) {
    if (b->n_tokens <= 0 || b->n_seqs <= 0 || b->n_logits < 0 || b->n_logits > b->n_tokens)
        return tm_fail(err, err_len, TM_EINVAL, "empty or inconsistent batch");
    if (b->seq_start[0] != 0 || b->seq_start[b->n_seqs] != b->n_tokens)
        return tm_fail(err, err_len, TM_EINVAL, "seq_start does not cover the batch");
    for (int i = 0; i < b->n_tokens; i++)
        if (b->tokens[i] < 0 || b->tokens[i] >= m->config.n_vocab)
            return tm_fail(err, err_len, TM_EINVAL, "token id %d out of range [0, %d)", b->tokens[i],
                           m->config.n_vocab);
    for (int i = 0; i < b->n_logits; i++)
        if (b->logit_rows[i] < 0 || b->logit_rows[i] >= b->n_tokens)
            return tm_fail(err, err_len, TM_EINVAL, "logit row %d out of range", b->logit_rows[i]);
    return 0;
}

int tm_model_forward(tm_model *m, tm_kv_cache *kv, const tm_batch *b, float *logits, char *err,
                     size_t err_len) {
    int rc = check_batch(m, b, err, err_len);
    if (rc) return rc;
    if ((rc = tm_model_reserve(m, b->n_tokens, TM_MAX(b->n_logits, 1))))
        return tm_fail(err, err_len, rc, "out of memory for a batch of %d tokens", b->n_tokens);
    const tm_model_config *c = &m->config;
    tm_backend *be = m->be;
    tm_activations *a = &m->act;
    const int n = b->n_tokens, dim = c->dim;
    a->n_logits = 0;

    if (be->set_batch) be->set_batch(be, b);
    be->embed(be, a->x, &m->token_embd, b->tokens, n); /* x (n, dim) */
    if (c->embed_scale != 1.0f) be->scale(be, a->x, a->x, (int64_t)n * dim, c->embed_scale, 0.0f);
    be->rmsnorm(be, a->xb, a->x, m->layers[0].attn_norm, n, dim, c->rms_eps);
    for (int l = 0; l < c->n_layers; l++) {
        const tm_layer *L = &m->layers[l];
        /* attention block: x += post_norm(Wo · attn(rope(Wq·xb), rope(Wk·xb), Wv·xb)), xb = norm(x) */
        { /* q (n, qd), k (n, kvd), v (n, kvd) */
            float *const outs[] = {a->q, a->k, a->v};
            const tm_weight *const ws[] = {&L->wq, &L->wk, &L->wv};
            const float *const biases[] = {L->bq, L->bk, L->bv};
            tm_matmul_shared_input(be, 3, outs, a->xb, ws, biases, n);
        }
        if (L->q_norm) { /* each head of q and k normed on its own (rows of head_dim) */
            be->rmsnorm(be, a->q, a->q, L->q_norm, n * c->n_heads, c->head_dim, c->rms_eps);
            be->rmsnorm(be, a->k, a->k, L->k_norm, n * c->n_kv_heads, c->head_dim, c->rms_eps);
        }
        be->rope(be, a->q, a->k, b->pos, n, c->n_heads, c->n_kv_heads, c->head_dim, L->rope);
        be->kv_store(be, kv, l, a->k, a->v, b->slots, n);
        be->attention(be, a->att, a->q, kv, l, b, c->n_heads, c->attn_scale, L->window,
                      c->attn_softcap);                           /* att (n, qd) */
        be->matmul(be, a->xb, a->att, &L->wo, NULL, n);             /* xb (n, dim) */
        if (L->attn_post_norm) be->rmsnorm(be, a->xb, a->xb, L->attn_post_norm, n, dim, c->rms_eps);
        tm_residual_norm(be, a->x, a->xb, L->ffn_norm, a->xb, n, dim, c->rms_eps);
        /* feed-forward block: x += post_norm(Wdown · (act(Wgate·xb) * Wup·xb)), then the next
         * layer's norm */
        { /* hb (n, ffn) = gate, hb2 (n, ffn) = up */
            float *const outs[] = {a->hb, a->hb2};
            const tm_weight *const ws[] = {&L->w_gate, &L->w_up};
            tm_matmul_shared_input(be, 2, outs, a->xb, ws, NULL, n);
        }
        if (c->act == TM_ACT_GELU) be->gelu_mul(be, a->hb, a->hb, a->hb2, (int64_t)n * c->ffn_dim);
        else be->silu_mul(be, a->hb, a->hb, a->hb2, (int64_t)n * c->ffn_dim);
        be->matmul(be, a->xb, a->hb, &L->w_down, NULL, n); /* xb (n, dim) */
        if (L->ffn_post_norm) be->rmsnorm(be, a->xb, a->xb, L->ffn_post_norm, n, dim, c->rms_eps);
        if (l + 1 < c->n_layers)
            tm_residual_norm(be, a->x, a->xb, m->layers[l + 1].attn_norm, a->xb, n, dim, c->rms_eps);
        else
            be->add(be, a->x, a->x, a->xb, (int64_t)n * dim);
    }
    if (b->n_logits > 0) {
        /* only the rows that need logits go through the final norm and the output matrix */
        be->get_rows(be, a->xl, a->x, b->logit_rows, b->n_logits, dim);
        be->rmsnorm(be, a->xl, a->xl, m->out_norm, b->n_logits, dim, c->rms_eps);
        be->matmul(be, a->logits, a->xl, &m->output, NULL, b->n_logits); /* (n_logits, n_vocab) */
        if (c->final_softcap > 0.0f)
            be->scale(be, a->logits, a->logits, (int64_t)b->n_logits * c->n_vocab, 1.0f, c->final_softcap);
    }
    char msg[256] = "";
    if ((rc = be->synchronize(be, msg, sizeof msg)))
        return tm_fail(err, err_len, rc, "%s backend: %s", be->name, msg);
    a->n_logits = b->n_logits;
    if (logits && b->n_logits > 0) {
        const float *host = tm_model_logits_host(m);
        if (!host) return tm_fail(err, err_len, TM_EIO, "%s backend: copying the logits failed", be->name);
        memcpy(logits, host, sizeof(float) * (size_t)b->n_logits * (size_t)c->n_vocab);
    }
    return 0;
}

float *tm_model_logits_host(tm_model *m) {
    tm_activations *a = &m->act;
    if (m->be->host_memory) return a->logits;
    size_t n_bytes = sizeof(float) * (size_t)a->n_logits * (size_t)m->config.n_vocab;
    m->be->download(m->be, a->host_logits, a->logits, n_bytes);
    if (m->be->synchronize(m->be, NULL, 0)) return NULL;
    return a->host_logits;
}

int tm_model_logits_argmax(tm_model *m, int n_rows, int32_t *out) {
    const int n_vocab = m->config.n_vocab;
    if (n_rows > m->act.n_logits) return TM_EINVAL;
    if (m->be->argmax_rows) {
        m->be->argmax_rows(m->be, m->act.logits, n_rows, n_vocab, out);
        return m->be->synchronize(m->be, NULL, 0);
    }
    const float *logits = tm_model_logits_host(m);
    if (!logits) return TM_EIO;
    for (int r = 0; r < n_rows; r++) out[r] = tm_argmax(logits + (size_t)r * n_vocab, n_vocab);
    return 0;
}

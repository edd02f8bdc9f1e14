/* arch.c - the architecture table and GGUF metadata -> tm_model_config (arch.h). */
#include "models/arch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

/* What an architecture fixes that its files do not say. Defaults from llama.cpp's
 * loaders; a key in the file wins where one exists. */
typedef struct tm_arch {
    const char *name;      /* general.architecture */
    int neox;              /* rope pairs (i, i + n/2) rather than (2i, 2i + 1) */
    int gemma;             /* embeddings * sqrt(dim), GELU, post-norms, the 27B query scale */
    int swa_pattern;       /* sliding-window pattern when the file has none: every n-th layer
                              (the last of each n) is global; 0: no windows unless the file
                              says */
    int swa_window;        /* window when the file names none; 0: no sliding window then */
    float attn_softcap;    /* attention soft-cap when the file names none (0: none) */
    float final_softcap;   /* logit soft-cap when the file names none (0: none) */
    int layers_27b;        /* block count of the 27B model, whose query scale is
                              1/sqrt(dim / n_heads) (0: always 1/sqrt(head_dim)) */
    float swa_theta;       /* rope base of the sliding-window layers when the file names none,
                              and those layers rotate unscaled; 0: as the global layers */
    int qkv_bias;          /* q/k/v biases required (other files may have them too) */
    int qk_norm;           /* per-head q and k norms required (others never have them) */
} tm_arch;

static const tm_arch k_archs[] = {
    /* name      neox gemma pattern window attn cap final cap 27B layers local base bias qk norm */
    {"llama",     0,   0,    0,      0,     0.0f,    0.0f,     0,         0.0f,      0,   0},
    {"mistral3",  0,   0,    0,      0,     0.0f,    0.0f,     0,         0.0f,      0,   0},
    {"qwen2",     1,   0,    0,      0,     0.0f,    0.0f,     0,         0.0f,      1,   0},
    {"qwen3",     1,   0,    0,      0,     0.0f,    0.0f,     0,         0.0f,      0,   1},
    {"phi3",      1,   0,    0,      0,     0.0f,    0.0f,     0,         0.0f,      0,   0},
    {"gemma2",    1,   1,    2,      4096,  50.0f,   30.0f,    46,        0.0f,      0,   0},
    {"gemma3",    1,   1,    6,      0,     0.0f,    0.0f,     62,        10000.0f,  0,   1},
};

const char *tm_arch_names(void) { return "llama, mistral3, qwen2, qwen3, phi3, gemma2, gemma3"; }

static int meta_u32(const tm_gguf *g, const char *arch, const char *suffix, int required,
                    uint32_t def, int *out, char *err, size_t err_len) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint32_t v = def;
    int rc = tm_gguf_get_u32(g, key, &v);
    if (rc == TM_ENOTFOUND && !required) rc = 0;
    if (rc == TM_ENOTFOUND) return tm_fail(err, err_len, TM_EFORMAT, "missing metadata key '%s'", key);
    if (rc) return tm_fail(err, err_len, TM_EFORMAT, "metadata key '%s' is not an unsigned integer", key);
    if (v > (1u << 30)) return tm_fail(err, err_len, TM_EFORMAT, "metadata key '%s' = %u is out of range", key, v);
    *out = (int)v;
    return 0;
}

static int meta_f32(const tm_gguf *g, const char *arch, const char *suffix, float def,
                    float *out, char *err, size_t err_len) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    float v = def;
    int rc = tm_gguf_get_f32(g, key, &v);
    if (rc && rc != TM_ENOTFOUND)
        return tm_fail(err, err_len, TM_EFORMAT, "metadata key '%s' is not a float", key);
    if (!isfinite(v)) return tm_fail(err, err_len, TM_EFORMAT, "metadata key '%s' is not finite", key);
    *out = v;
    return 0;
}

static int has_key(const tm_gguf *g, const char *arch, const char *suffix) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return tm_gguf_find_key(g, key) >= 0;
}

/* Which layers slide: the file's attention.sliding_window_pattern, a per-layer array of
 * flags or a period n (layer l slides unless l % n == n - 1; n = 0: all slide), else the
 * architecture's period. Fills swa (n_layers). */
static int read_swa_pattern(const tm_gguf *g, const char *arch, int def_pattern, int n_layers, uint8_t *swa,
                            char *err, size_t err_len) {
    char key[128];
    snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", arch);
    tm_gguf_type et;
    uint64_t n;
    const void *data;
    if (tm_gguf_get_arr(g, key, &et, &n, &data) == 0) {
        if ((et != TM_GGUF_BOOL && et != TM_GGUF_UINT8 && et != TM_GGUF_INT8) || n != (uint64_t)n_layers)
            return tm_fail(err, err_len, TM_EFORMAT, "'%s' must be %d per-layer flags", key, n_layers);
        for (int l = 0; l < n_layers; l++) swa[l] = ((const uint8_t *)data)[l] != 0;
        return 0;
    }
    int pattern = def_pattern;
    int rc = meta_u32(g, arch, "attention.sliding_window_pattern", 0, (uint32_t)def_pattern, &pattern, err, err_len);
    if (rc) return rc;
    for (int l = 0; l < n_layers; l++) swa[l] = pattern == 0 || l % pattern < pattern - 1;
    return 0;
}

static int read_rope(const tm_gguf *g, const char *arch, const tm_arch *a, tm_model_config *c, char *err,
                     size_t err_len) {
    tm_rope *r = &c->rope;
    int rc;
    r->neox = a->neox;
    r->freq_scale = 1.0f;
    if ((rc = meta_f32(g, arch, "rope.freq_base", 10000.0f, &r->theta, err, err_len))) return rc;
    if ((rc = meta_u32(g, arch, "rope.dimension_count", 0, (uint32_t)c->head_dim, &r->n_dims, err, err_len)))
        return rc;
    if (r->n_dims <= 0 || r->n_dims > c->head_dim || r->n_dims % 2 || r->theta <= 0.0f)
        return tm_fail(err, err_len, TM_EFORMAT, "rope.dimension_count %d (head_dim %d) or freq_base %g is bad",
                       r->n_dims, c->head_dim, r->theta);
    char key[128];
    size_t len;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    const char *scaling;
    if (tm_gguf_get_str(g, key, &scaling, &len) == 0 && strcmp(scaling, "none")) {
        if (strcmp(scaling, "linear"))
            return tm_fail(err, err_len, TM_EUNSUPPORTED, "rope scaling '%s' is not supported", scaling);
        float factor = 1.0f;
        if ((rc = meta_f32(g, arch, "rope.scaling.factor", 1.0f, &factor, err, err_len))) return rc;
        if (factor > 0) r->freq_scale = 1.0f / factor;
    }
    /* sliding-window layers may rotate with their own base (Gemma 3: 10000 against 1e6 for
     * the global ones, unscaled where the global ones are scaled) */
    c->rope_swa = *r;
    if (a->swa_theta > 0.0f) {
        c->rope_swa.theta = a->swa_theta;
        c->rope_swa.freq_scale = 1.0f;
    }
    if ((rc = meta_f32(g, arch, "rope.freq_base_swa", c->rope_swa.theta, &c->rope_swa.theta, err, err_len)))
        return rc;
    if (c->rope_swa.theta <= 0.0f) return tm_fail(err, err_len, TM_EFORMAT, "rope.freq_base_swa must be > 0");
    return 0;
}

int tm_arch_read_config(const tm_gguf *g, const char *path, tm_model_config *c, uint8_t **swa_layers,
                        char *err, size_t err_len) {
    *swa_layers = NULL;
    const char *arch;
    size_t len;
    if (tm_gguf_get_str(g, "general.architecture", &arch, &len))
        return tm_fail(err, err_len, TM_EFORMAT, "missing metadata key 'general.architecture'");
    const tm_arch *a = NULL;
    for (size_t i = 0; i < TM_ARRAY_LEN(k_archs); i++)
        if (!strcmp(arch, k_archs[i].name)) a = &k_archs[i];
    if (!a)
        return tm_fail(err, err_len, TM_EUNSUPPORTED, "unsupported architecture '%s' (supported: %s)", arch,
                       tm_arch_names());
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    const char *name;
    if (tm_gguf_get_str(g, "general.name", &name, &len) == 0) {
        snprintf(c->name, sizeof c->name, "%s", name);
    } else {
        const char *base = strrchr(path, '/');
        snprintf(c->name, sizeof c->name, "%s", base ? base + 1 : path);
    }

    int rc;
    if ((rc = meta_u32(g, arch, "block_count", 1, 0, &c->n_layers, err, err_len))) return rc;
    if ((rc = meta_u32(g, arch, "embedding_length", 1, 0, &c->dim, err, err_len))) return rc;
    if ((rc = meta_u32(g, arch, "feed_forward_length", 1, 0, &c->ffn_dim, err, err_len))) return rc;
    if ((rc = meta_u32(g, arch, "attention.head_count", 1, 0, &c->n_heads, err, err_len))) return rc;
    if ((rc = meta_u32(g, arch, "attention.head_count_kv", 0, (uint32_t)c->n_heads, &c->n_kv_heads,
                       err, err_len)))
        return rc;
    if ((rc = meta_u32(g, arch, "context_length", 0, 4096, &c->n_ctx_train, err, err_len))) return rc;
    if (c->n_layers <= 0 || c->dim <= 0 || c->ffn_dim <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->n_heads % c->n_kv_heads != 0)
        return tm_fail(err, err_len, TM_EFORMAT,
                       "bad shape: layers %d dim %d ffn %d heads %d kv_heads %d", c->n_layers,
                       c->dim, c->ffn_dim, c->n_heads, c->n_kv_heads);
    if ((rc = meta_u32(g, arch, "attention.key_length", 0, (uint32_t)(c->dim / c->n_heads),
                       &c->head_dim, err, err_len)))
        return rc;
    int value_length;
    if ((rc = meta_u32(g, arch, "attention.value_length", 0, (uint32_t)c->head_dim, &value_length,
                       err, err_len)))
        return rc;
    if (value_length != c->head_dim || c->head_dim <= 0 || c->head_dim % 2)
        return tm_fail(err, err_len, TM_EUNSUPPORTED, "head dims k=%d v=%d not supported",
                       c->head_dim, value_length);
    if ((rc = meta_f32(g, arch, "attention.layer_norm_rms_epsilon", 1e-5f, &c->rms_eps, err, err_len)))
        return rc;
    if ((rc = read_rope(g, arch, a, c, err, err_len))) return rc;
    if (!strcmp(arch, "mistral3") && has_key(g, arch, "attention.temperature_scale"))
        return tm_fail(err, err_len, TM_EUNSUPPORTED, "mistral3 attention temperature scaling is not supported");

    /* Gemma conventions; the query scale follows llama.cpp (GGUF carries no
     * query_pre_attn_scalar: it is head_dim for every Gemma but the 27B ones, where it is
     * dim / n_heads, and llama.cpp picks by the block count) */
    c->qkv_bias = a->qkv_bias;
    c->qk_norm = a->qk_norm;
    c->act = a->gemma ? TM_ACT_GELU : TM_ACT_SILU;
    c->embed_scale = a->gemma ? sqrtf((float)c->dim) : 1.0f;
    c->post_norms = a->gemma;
    c->attn_scale = 1.0f / sqrtf((float)c->head_dim);
    if (a->layers_27b && c->n_layers == a->layers_27b) c->attn_scale = 1.0f / sqrtf((float)(c->dim / c->n_heads));
    if ((rc = meta_f32(g, arch, "attn_logit_softcapping", a->attn_softcap, &c->attn_softcap, err, err_len)))
        return rc;
    if ((rc = meta_f32(g, arch, "final_logit_softcapping", a->final_softcap, &c->final_softcap, err, err_len)))
        return rc;
    if (!a->gemma) c->attn_softcap = c->final_softcap = 0.0f; /* llama.cpp reads them only for Gemma */
    if (strcmp(arch, "gemma2")) c->attn_softcap = 0.0f;       /* Gemma 3 dropped the attention cap */
    if (c->attn_softcap < 0.0f || c->final_softcap < 0.0f)
        return tm_fail(err, err_len, TM_EFORMAT, "negative soft-capping");

    /* sliding windows: Gemma only (llama.cpp turns Phi-3's off, and the llama family has
     * none) */
    c->sliding_window = 0;
    if (a->gemma && (rc = meta_u32(g, arch, "attention.sliding_window", 0, (uint32_t)a->swa_window,
                                   &c->sliding_window, err, err_len)))
        return rc;
    if (c->sliding_window > 0) {
        uint8_t *swa = calloc((size_t)c->n_layers, 1);
        if (!swa) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
        if ((rc = read_swa_pattern(g, arch, a->swa_pattern, c->n_layers, swa, err, err_len))) {
            free(swa);
            return rc;
        }
        *swa_layers = swa;
        c->swa_layers = swa;
    }
    return 0;
}

// test_arch.cc - the architectures of models/arch.h as a loaded model sees them: what each
// one's metadata and tensors become in tm_model_config (flags, scales, per-layer windows,
// rope bases, fused tensors), keys in a file that override the defaults, and clear errors
// for files that lack what their architecture needs. The logits of every architecture are
// checked against llama.cpp in test_synth_golden.cc; this file checks the loader.
//
// Models are `synth` images (models/synth.h) of the tiny-* presets, copied with a tensor
// dropped or metadata changed where a test needs a broken or unusual file. The tokenizer
// comes from the default model (scripts/fetch-model); without it the tests skip.

#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "models/model.h"
#include "models/synth.h"
}

namespace {

bool have_tokenizer_source() {
    char buf[1024];
    return access(tm_model_default_path(buf, sizeof buf), R_OK) == 0;
}

#define NEED_TOKENIZER() \
    if (!have_tokenizer_source()) GTEST_SKIP() << "default model not fetched (scripts/fetch-model)"

tm_gguf *synth(const char *preset, int n_layers = 0, const char *type = "f16") {
    tm_synth_options o;
    char err[512] = "";
    EXPECT_EQ(tm_synth_options_init(&o, preset, type, err, sizeof err), 0) << err;
    o.seed = 3;
    o.n_layers = n_layers;
    tm_gguf *g = nullptr;
    EXPECT_EQ(tm_synth_build(&o, &g, err, sizeof err), 0) << err;
    return g;
}

// A copy of src in memory: metadata entries whose key drop_key accepts are left out and
// extra() may add some; tensors named drop_tensor are left out. src stays open.
tm_gguf *copy(const tm_gguf *src, std::function<bool(const char *)> drop_key,
              std::function<void(tm_gguf_writer *)> extra, const char *drop_tensor = nullptr) {
    tm_gguf_writer *w = tm_gguf_writer_create(32);
    for (int64_t i = 0; i < tm_gguf_n_keys(src); i++) {
        if (drop_key && drop_key(tm_gguf_key_name(src, i))) continue;
        const void *raw;
        size_t n;
        EXPECT_EQ(tm_gguf_key_raw(src, i, &raw, &n), 0);
        EXPECT_EQ(tm_gguf_writer_add_raw_kv(w, raw, n), 0);
    }
    if (extra) extra(w);
    std::vector<const tm_gguf_tensor *> keep;
    for (int64_t i = 0; i < tm_gguf_n_tensors(src); i++) {
        const tm_gguf_tensor *t = tm_gguf_tensor_at(src, i);
        if (drop_tensor && !strcmp(t->name, drop_tensor)) continue;
        keep.push_back(t);
        EXPECT_EQ(tm_gguf_writer_add_tensor_info(w, t->name, t->n_dims, t->ne, t->type), 0);
    }
    char err[256] = "";
    tm_gguf *out = nullptr;
    EXPECT_EQ(tm_gguf_writer_begin_memory(w, err, sizeof err), 0) << err;
    for (const tm_gguf_tensor *t : keep) EXPECT_EQ(tm_gguf_writer_append(w, t->data, t->n_bytes, err, sizeof err), 0);
    EXPECT_EQ(tm_gguf_writer_finish_memory(w, &out, err, sizeof err), 0) << err;
    tm_gguf_writer_destroy(w);
    return out;
}

// A model loaded on a CPU backend; load() takes g over.
struct Loaded {
    tm_backend *be = nullptr;
    tm_model *m = nullptr;
    std::string err;
    int rc = 0;
    explicit Loaded(tm_gguf *g) {
        char e[512] = "";
        be = tm_backend_cpu_create(1, TM_SIMD_AUTO, e, sizeof e);
        rc = tm_model_load_gguf(g, "test", be, nullptr, nullptr, &m, e, sizeof e);
        err = e;
    }
    ~Loaded() {
        tm_model_destroy(m);
        if (be) be->destroy(be);
    }
    const tm_model_config *c() const { return tm_model_get_config(m); }
};

std::vector<int> swa_of(const tm_model_config *c) {
    std::vector<int> v;
    for (int l = 0; l < c->n_layers; l++) v.push_back(c->swa_layers ? c->swa_layers[l] : 0);
    return v;
}

TEST(Arch, LlamaFamilyDefaults) {
    NEED_TOKENIZER();
    for (const char *p : {"tiny", "tiny-mistral", "tiny-qwen2", "tiny-qwen3", "tiny-phi3"}) {
        SCOPED_TRACE(p);
        Loaded L(synth(p));
        ASSERT_EQ(L.rc, 0) << L.err;
        const tm_model_config *c = L.c();
        EXPECT_EQ(c->act, TM_ACT_SILU);
        EXPECT_EQ(c->embed_scale, 1.0f);
        EXPECT_FLOAT_EQ(c->attn_scale, 1.0f / std::sqrt((float)c->head_dim));
        EXPECT_EQ(c->attn_softcap, 0.0f);
        EXPECT_EQ(c->final_softcap, 0.0f);
        EXPECT_EQ(c->sliding_window, 0);
        EXPECT_EQ(c->swa_layers, nullptr);
        EXPECT_EQ(c->post_norms, 0);
        EXPECT_EQ(c->rope.neox, strcmp(c->arch, "llama") != 0); // adjacent pairs for llama only
    }
    Loaded mistral(synth("tiny-mistral"));
    EXPECT_EQ(mistral.c()->head_dim, 128); // attention.key_length: heads wider than dim / n_heads
    EXPECT_EQ(mistral.c()->n_heads * mistral.c()->head_dim, 2 * mistral.c()->dim);
    Loaded qwen2(synth("tiny-qwen2"));
    EXPECT_TRUE(qwen2.c()->qkv_bias);
    EXPECT_FALSE(qwen2.c()->qk_norm);
    Loaded qwen3(synth("tiny-qwen3"));
    EXPECT_TRUE(qwen3.c()->qk_norm);
    EXPECT_FALSE(qwen3.c()->qkv_bias);
    Loaded phi3(synth("tiny-phi3"));
    EXPECT_TRUE(phi3.c()->fused_qkv);
    EXPECT_TRUE(phi3.c()->fused_gate_up);
    Loaded llama(synth("tiny"));
    EXPECT_FALSE(llama.c()->fused_qkv);
    EXPECT_FALSE(llama.c()->fused_gate_up);
}

TEST(Arch, Gemma3) {
    NEED_TOKENIZER();
    Loaded L(synth("tiny-gemma3"));
    ASSERT_EQ(L.rc, 0) << L.err;
    const tm_model_config *c = L.c();
    EXPECT_EQ(c->act, TM_ACT_GELU);
    EXPECT_FLOAT_EQ(c->embed_scale, 16.0f); // sqrt(256)
    EXPECT_FLOAT_EQ(c->attn_scale, 1.0f / std::sqrt(128.0f));
    EXPECT_TRUE(c->qk_norm && c->post_norms && c->tied_embeddings);
    EXPECT_EQ(c->attn_softcap, 0.0f);
    EXPECT_EQ(c->final_softcap, 0.0f);
    EXPECT_EQ(c->sliding_window, 4);
    // no pattern key: every 6th layer global, the others slide
    EXPECT_EQ(swa_of(c), (std::vector<int>{1, 1, 1, 1, 1, 0}));
    EXPECT_EQ(c->rope.theta, 1e6f);
    EXPECT_EQ(c->rope_swa.theta, 10000.0f); // the local base when the file names none
    EXPECT_TRUE(c->rope.neox && c->rope_swa.neox);

    // the file's keys win: a pattern of 3, a local base, a final soft-cap
    tm_gguf *src = synth("tiny-gemma3");
    Loaded K(copy(src, nullptr, [](tm_gguf_writer *w) {
        tm_gguf_writer_add_u32(w, "gemma3.attention.sliding_window_pattern", 3);
        tm_gguf_writer_add_f32(w, "gemma3.rope.freq_base_swa", 5000.0f);
        tm_gguf_writer_add_f32(w, "gemma3.final_logit_softcapping", 30.0f);
    }));
    ASSERT_EQ(K.rc, 0) << K.err;
    EXPECT_EQ(swa_of(K.c()), (std::vector<int>{1, 1, 0, 1, 1, 0}));
    EXPECT_EQ(K.c()->rope_swa.theta, 5000.0f);
    EXPECT_EQ(K.c()->final_softcap, 30.0f);
    // a per-layer array of flags
    const uint8_t flags[6] = {0, 1, 0, 1, 1, 1};
    Loaded A(copy(src, nullptr, [&](tm_gguf_writer *w) {
        tm_gguf_writer_add_arr(w, "gemma3.attention.sliding_window_pattern", TM_GGUF_BOOL, flags, 6);
    }));
    ASSERT_EQ(A.rc, 0) << A.err;
    EXPECT_EQ(swa_of(A.c()), (std::vector<int>{0, 1, 0, 1, 1, 1}));
    // no sliding_window key: no windows at all (llama.cpp's rule for gemma3)
    Loaded N(copy(src, [](const char *k) { return !strcmp(k, "gemma3.attention.sliding_window"); }, nullptr));
    ASSERT_EQ(N.rc, 0) << N.err;
    EXPECT_EQ(N.c()->sliding_window, 0);
    EXPECT_EQ(N.c()->swa_layers, nullptr);
    tm_gguf_close(src);
}

TEST(Arch, Gemma2) {
    NEED_TOKENIZER();
    Loaded L(synth("tiny-gemma2"));
    ASSERT_EQ(L.rc, 0) << L.err;
    const tm_model_config *c = L.c();
    EXPECT_EQ(c->act, TM_ACT_GELU);
    EXPECT_FALSE(c->qk_norm);
    EXPECT_TRUE(c->post_norms);
    EXPECT_EQ(c->attn_softcap, 2.0f);
    EXPECT_EQ(c->final_softcap, 4.0f);
    EXPECT_EQ(swa_of(c), (std::vector<int>{1, 0, 1, 0})); // every other layer slides
    EXPECT_EQ(c->rope_swa.theta, c->rope.theta);           // one base for both

    // Gemma 2's defaults where the file names nothing: window 4096, caps 50 and 30
    tm_gguf *src = synth("tiny-gemma2");
    Loaded D(copy(src, [](const char *k) {
        return !strcmp(k, "gemma2.attention.sliding_window") || strstr(k, "softcapping") != nullptr;
    }, nullptr));
    ASSERT_EQ(D.rc, 0) << D.err;
    EXPECT_EQ(D.c()->sliding_window, 4096);
    EXPECT_EQ(D.c()->attn_softcap, 50.0f);
    EXPECT_EQ(D.c()->final_softcap, 30.0f);
    tm_gguf_close(src);
}

// The 27B Gemma models scale queries by 1/sqrt(dim / n_heads), not 1/sqrt(head_dim): llama.cpp
// picks by the block count (62 for Gemma 3, 46 for Gemma 2), as GGUF has no
// query_pre_attn_scalar. tiny-gemma3 has head_dim 128 = 2 * dim / n_heads.
TEST(Arch, Gemma27BQueryScale) {
    NEED_TOKENIZER();
    for (int layers : {61, 62}) {
        Loaded L(synth("tiny-gemma3", layers, "q4_0"));
        ASSERT_EQ(L.rc, 0) << L.err;
        const float want = layers == 62 ? 1.0f / std::sqrt(256.0f / 4) : 1.0f / std::sqrt(128.0f);
        EXPECT_FLOAT_EQ(L.c()->attn_scale, want) << layers << " layers";
    }
}

struct Broken {
    const char *preset, *drop_tensor, *needle;
    int rc;
};

TEST(Arch, MissingTensorsAreClearErrors) {
    NEED_TOKENIZER();
    const Broken cases[] = {
        {"tiny-gemma3", "blk.2.post_attention_norm.weight", "missing tensor 'blk.2.post_attention_norm.weight'",
         TM_ENOTFOUND},
        {"tiny-gemma3", "blk.0.post_ffw_norm.weight", "missing tensor 'blk.0.post_ffw_norm.weight'", TM_ENOTFOUND},
        {"tiny-gemma3", "blk.1.attn_k_norm.weight", "missing tensor 'blk.1.attn_k_norm.weight'", TM_ENOTFOUND},
        {"tiny-qwen3", "blk.0.attn_q_norm.weight", "missing tensor 'blk.0.attn_q_norm.weight'", TM_ENOTFOUND},
        {"tiny-qwen2", "blk.1.attn_v.bias", "missing tensor 'blk.1.attn_v.bias'", TM_ENOTFOUND},
        // no fused tensor and no separate ones either
        {"tiny-phi3", "blk.0.attn_qkv.weight", "missing tensor 'blk.0.attn_q.weight'", TM_ENOTFOUND},
        {"tiny-phi3", "blk.2.ffn_up.weight", "blk.2.ffn_gate.weight", TM_ENOTFOUND},
    };
    for (const Broken &b : cases) {
        SCOPED_TRACE(std::string(b.preset) + " without " + b.drop_tensor);
        tm_gguf *src = synth(b.preset);
        Loaded L(copy(src, nullptr, nullptr, b.drop_tensor));
        EXPECT_EQ(L.rc, b.rc) << L.err;
        EXPECT_NE(L.err.find(b.needle), std::string::npos) << L.err;
        tm_gguf_close(src);
    }
}

TEST(Arch, UnsupportedFilesSayWhy) {
    NEED_TOKENIZER();
    tm_gguf *src = synth("tiny-phi3");
    // Phi-3's LongRoPE (128k variants)
    std::vector<float> factors(32, 1.0f);
    tm_gguf *g = copy(src, nullptr, nullptr);
    {
        tm_gguf_writer *w = tm_gguf_writer_create(32);
        for (int64_t i = 0; i < tm_gguf_n_keys(g); i++) {
            const void *raw;
            size_t n;
            tm_gguf_key_raw(g, i, &raw, &n);
            tm_gguf_writer_add_raw_kv(w, raw, n);
        }
        const int64_t ne[1] = {32};
        for (int64_t i = 0; i < tm_gguf_n_tensors(g); i++) {
            const tm_gguf_tensor *t = tm_gguf_tensor_at(g, i);
            tm_gguf_writer_add_tensor(w, t->name, t->n_dims, t->ne, t->type, t->data, t->n_bytes);
        }
        tm_gguf_writer_add_tensor(w, "rope_factors_long.weight", 1, ne, TM_DTYPE_F32, factors.data(), 128);
        const std::string path = ::testing::TempDir() + "/longrope.gguf";
        char err[256] = "";
        ASSERT_EQ(tm_gguf_writer_write(w, path.c_str(), err, sizeof err), 0) << err;
        tm_gguf_writer_destroy(w);
        tm_gguf *f = nullptr;
        ASSERT_EQ(tm_gguf_open(path.c_str(), &f, err, sizeof err), 0) << err;
        Loaded L(f);
        EXPECT_EQ(L.rc, TM_EUNSUPPORTED);
        EXPECT_NE(L.err.find("LongRoPE"), std::string::npos) << L.err;
        remove(path.c_str());
    }
    tm_gguf_close(g);
    // an architecture we do not run
    Loaded U(copy(src, [](const char *k) { return !strcmp(k, "general.architecture"); },
                  [](tm_gguf_writer *w) { tm_gguf_writer_add_str(w, "general.architecture", "mamba"); }));
    EXPECT_EQ(U.rc, TM_EUNSUPPORTED);
    EXPECT_NE(U.err.find("unsupported architecture 'mamba' (supported: llama, mistral3, qwen2, qwen3, phi3, "
                         "gemma2, gemma3)"), std::string::npos) << U.err;
    // a pattern array of the wrong length
    tm_gguf *gem = synth("tiny-gemma3");
    const uint8_t flags[2] = {1, 0};
    Loaded P(copy(gem, nullptr, [&](tm_gguf_writer *w) {
        tm_gguf_writer_add_arr(w, "gemma3.attention.sliding_window_pattern", TM_GGUF_BOOL, flags, 2);
    }));
    EXPECT_EQ(P.rc, TM_EFORMAT);
    EXPECT_NE(P.err.find("must be 6 per-layer flags"), std::string::npos) << P.err;
    tm_gguf_close(gem);
    tm_gguf_close(src);
}

}  // namespace

// test_convert.cc - the GGUF converter (models/convert.c): every target type matches its
// source within the type's tolerance, unsupported targets, bad input, in-place conversion.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "gguf_test_util.h"

extern "C" {
#include "common/common.h"
#include "kernels/dtype.h"
#include "models/convert.h"
#include "models/gguf.h"
}

namespace {

struct SrcTensor {
    const char *name;
    int n_dims;
    int64_t ne[4];
    tm_dtype type;
};

// Tolerance of quantizing a block x to type (absolute, per value).
double block_tolerance(tm_dtype type, const float *x, int n) {
    float amax = 0, mn = x[0], mx = x[0];
    for (int i = 0; i < n; i++) {
        amax = std::max(amax, std::fabs(x[i]));
        mn = std::min(mn, x[i]);
        mx = std::max(mx, x[i]);
    }
    switch (type) {
    case TM_DTYPE_F32: return 0;
    case TM_DTYPE_F16: return amax * 1e-3 + 1e-7;
    case TM_DTYPE_Q8_0: return amax / 127 * 0.6 + 1e-7;
    case TM_DTYPE_Q4_0: return amax / 8 * 1.05 + 1e-7;  // +8 clamps to 7: up to one step
    case TM_DTYPE_Q4_1: return (mx - mn) / 15 * 0.6 + std::fabs(mn) * 1e-3 + 1e-7;
    case TM_DTYPE_Q5_0: return amax / 16 * 1.05 + 1e-7;  // +16 clamps to 15: up to one step
    case TM_DTYPE_Q5_1: return (mx - mn) / 31 * 0.6 + std::fabs(mn) * 1e-3 + 1e-7;
    default: return -1;
    }
}

// RMS error bound of a K-quant row relative to the row's RMS, for these Gaussian rows:
// about 1.7x what the quantizer reaches (a broken bit layout gives errors near 1).
double kquant_rel_rms(tm_dtype type) {
    switch (type) {
    case TM_DTYPE_Q2_K: return 0.45;
    case TM_DTYPE_Q3_K: return 0.25;
    case TM_DTYPE_Q4_K: return 0.12;
    case TM_DTYPE_Q5_K: return 0.06;
    case TM_DTYPE_Q6_K: return 0.03;
    default: return -1;
    }
}

// What a matrix of row length ne0 becomes for a plain target (llama.cpp's fallbacks for
// K-quants, with Q4_0 where it uses IQ4_NL; F16 for the legacy types).
tm_dtype plain_type(tm_dtype target, int64_t ne0) {
    if (ne0 % tm_dtype_block_size(target) == 0) return target;
    tm_dtype fb = TM_DTYPE_F16;
    if (target == TM_DTYPE_Q4_K) fb = TM_DTYPE_Q5_0;
    if (target == TM_DTYPE_Q5_K) fb = TM_DTYPE_Q5_1;
    if (target == TM_DTYPE_Q6_K) fb = TM_DTYPE_Q8_0;
    if (target == TM_DTYPE_Q2_K || target == TM_DTYPE_Q3_K) fb = TM_DTYPE_Q4_0;
    return ne0 % tm_dtype_block_size(fb) == 0 ? fb : TM_DTYPE_F16;
}

class Convert : public testing::TestWithParam<tm_dtype> {};

TEST_P(Convert, MatchesSourceWithinTolerance) {
    const tm_dtype target = GetParam();
    const std::vector<SrcTensor> src = {
        {"token_embd.weight", 2, {64, 5, 1, 1}, TM_DTYPE_F32},
        {"blk.0.attn_norm.weight", 1, {64, 1, 1, 1}, TM_DTYPE_F32},
        {"blk.0.attn_q.weight", 2, {64, 3, 1, 1}, TM_DTYPE_Q8_0},
        {"blk.0.ffn_up.weight", 2, {32, 4, 1, 1}, TM_DTYPE_Q4_1},
        {"blk.0.ffn_down.weight", 2, {512, 3, 1, 1}, TM_DTYPE_F16},  // K-quants fit
        {"blk.0.odd.weight", 2, {48, 2, 1, 1}, TM_DTYPE_F32},  // 48 % 32 != 0: f16 fallback
        {"blk.0.bias", 1, {16, 1, 1, 1}, TM_DTYPE_F16},
        {"blk.0.cube", 3, {32, 2, 2, 1}, TM_DTYPE_F16},
    };
    // source file, alignment 64 so we see it carried over
    tm_gguf_writer *w = tm_gguf_writer_create(64);
    ASSERT_EQ(tm_gguf_writer_add_str(w, "general.architecture", "llama"), 0);
    ASSERT_EQ(tm_gguf_writer_add_u32(w, "general.file_type", 0), 0);
    const char *toks[] = {"<s>", "a", "b"};
    ASSERT_EQ(tm_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 3), 0);
    ASSERT_EQ(tm_gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f), 0);
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (const SrcTensor &t : src) {
        int64_t n = t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3];
        std::vector<float> v((size_t)n);
        for (auto &x : v) x = nd(rng) * 0.1f + (t.n_dims == 1 ? 1.0f : 0.0f);
        int64_t row = tm_dtype_row_bytes(t.type, t.ne[0]);
        Bytes q((size_t)(row * (n / t.ne[0])));
        for (int64_t r = 0; r < n / t.ne[0]; r++)
            ASSERT_EQ(tm_quantize_row(t.type, v.data() + r * t.ne[0], q.data() + r * row, t.ne[0]), 0);
        if (t.type == TM_DTYPE_Q8_0) {
            // blocks our quantizer would not produce (|q| <= 25, not 127), so a
            // requantizing "copy" would change the bytes
            for (size_t b = 0; b < q.size() / sizeof(tm_block_q8_0); b++) {
                tm_block_q8_0 blk;
                blk.d = tm_f32_to_f16(0.01f * (float)(b + 1));
                for (int j = 0; j < 32; j++) blk.qs[j] = (int8_t)((j * 7 + (int)b) % 51 - 25);
                memcpy(q.data() + b * sizeof blk, &blk, sizeof blk);
            }
        }
        ASSERT_EQ(tm_gguf_writer_add_tensor(w, t.name, t.n_dims, t.ne, t.type, q.data(), q.size()), 0);
    }
    std::string in = tmp_path("conv_in.gguf"), outp = tmp_path("conv_out.gguf");
    char err[256];
    ASSERT_EQ(tm_gguf_writer_write(w, in.c_str(), err, sizeof err), 0) << err;
    tm_gguf_writer_destroy(w);

    ASSERT_EQ(tm_convert_file(in.c_str(), outp.c_str(), target, err, sizeof err), 0) << err;
    EXPECT_NE(access((outp + ".tmp").c_str(), F_OK), 0) << "temporary file renamed away";
    tm_gguf *a, *b;
    ASSERT_EQ(tm_gguf_open(in.c_str(), &a, err, sizeof err), 0) << err;
    ASSERT_EQ(tm_gguf_open(outp.c_str(), &b, err, sizeof err), 0) << err;
    EXPECT_EQ(tm_gguf_alignment(b), 64u);

    // metadata: same keys in the same order, verbatim except general.file_type
    ASSERT_EQ(tm_gguf_n_keys(b), tm_gguf_n_keys(a));
    for (int64_t i = 0; i < tm_gguf_n_keys(a); i++) {
        ASSERT_STREQ(tm_gguf_key_name(b, i), tm_gguf_key_name(a, i));
        if (!strcmp(tm_gguf_key_name(a, i), "general.file_type")) continue;
        const void *ra, *rb;
        size_t na, nb;
        ASSERT_EQ(tm_gguf_key_raw(a, i, &ra, &na), 0);
        ASSERT_EQ(tm_gguf_key_raw(b, i, &rb, &nb), 0);
        EXPECT_EQ(Bytes((const uint8_t *)ra, (const uint8_t *)ra + na), Bytes((const uint8_t *)rb, (const uint8_t *)rb + nb))
            << tm_gguf_key_name(a, i);
    }
    uint32_t ftype;
    ASSERT_EQ(tm_gguf_get_u32(b, "general.file_type", &ftype), 0);
    int want_ftype = -1;  // llama.cpp's LLAMA_FTYPE_MOSTLY_* ids
    switch (target) {
    case TM_DTYPE_F16: want_ftype = 1; break;
    case TM_DTYPE_Q4_0: want_ftype = 2; break;
    case TM_DTYPE_Q4_1: want_ftype = 3; break;
    case TM_DTYPE_Q8_0: want_ftype = 7; break;
    case TM_DTYPE_Q5_0: want_ftype = 8; break;
    case TM_DTYPE_Q5_1: want_ftype = 9; break;
    case TM_DTYPE_Q2_K: want_ftype = 10; break;
    case TM_DTYPE_Q3_K: want_ftype = 11; break;  // Q3_K_S
    case TM_DTYPE_Q4_K: want_ftype = 14; break;  // Q4_K_S
    case TM_DTYPE_Q5_K: want_ftype = 16; break;  // Q5_K_S
    case TM_DTYPE_Q6_K: want_ftype = 18; break;
    default: break;
    }
    EXPECT_EQ((int)ftype, want_ftype);
    EXPECT_EQ(tm_convert_ftype(target), want_ftype);

    ASSERT_EQ(tm_gguf_n_tensors(b), (int64_t)src.size());
    for (size_t i = 0; i < src.size(); i++) {
        const tm_gguf_tensor *ta = tm_gguf_tensor_at(a, (int64_t)i), *tb = tm_gguf_tensor_at(b, (int64_t)i);
        ASSERT_STREQ(tb->name, ta->name);
        EXPECT_EQ(tb->n_dims, ta->n_dims);
        for (int d = 0; d < 4; d++) EXPECT_EQ(tb->ne[d], ta->ne[d]);
        tm_dtype want = ta->n_dims == 1 ? TM_DTYPE_F32 : plain_type(target, ta->ne[0]);
        EXPECT_EQ(tb->type, want) << ta->name;
        if (tb->type == ta->type) {  // same type: copied bit for bit
            ASSERT_EQ(tb->n_bytes, ta->n_bytes);
            EXPECT_EQ(memcmp(tb->data, ta->data, ta->n_bytes), 0) << ta->name;
            continue;
        }
        const int64_t ne0 = ta->ne[0], rows = ta->ne[1] * ta->ne[2] * ta->ne[3];
        const int64_t ra = tm_dtype_row_bytes(ta->type, ne0), rb = tm_dtype_row_bytes(tb->type, ne0);
        ASSERT_EQ(tb->n_bytes, (uint64_t)(rb * rows));
        std::vector<float> xa((size_t)ne0), xb((size_t)ne0, NAN);
        for (int64_t r = 0; r < rows; r++) {
            tm_dequantize_row(ta->type, (const uint8_t *)ta->data + r * ra, xa.data(), ne0);
            tm_dequantize_row(tb->type, (const uint8_t *)tb->data + r * rb, xb.data(), ne0);
            if (tm_dtype_is_kquant(tb->type)) {
                double e = 0, x2 = 0;
                for (int64_t j = 0; j < ne0; j++) e += (xb[j] - xa[j]) * (xb[j] - xa[j]), x2 += xa[j] * xa[j];
                EXPECT_LE(std::sqrt(e / x2), kquant_rel_rms(tb->type)) << ta->name << " row " << r;
                continue;
            }
            const int blk = tm_dtype_block_size(tb->type) > 1 ? 32 : (int)ne0;
            for (int64_t j0 = 0; j0 < ne0; j0 += blk) {
                double tol = block_tolerance(tb->type, xa.data() + j0, blk);
                for (int64_t j = j0; j < j0 + blk; j++)
                    ASSERT_LE(std::fabs((double)xb[j] - xa[j]), tol)
                        << ta->name << " row " << r << " col " << j << " as " << tm_dtype_name(tb->type);
            }
        }
    }
    tm_gguf_close(a);
    tm_gguf_close(b);
    remove(in.c_str());
    remove(outp.c_str());
}

INSTANTIATE_TEST_SUITE_P(Targets, Convert,
                         testing::Values(TM_DTYPE_F16, TM_DTYPE_Q8_0, TM_DTYPE_Q4_0, TM_DTYPE_Q4_1,
                                         TM_DTYPE_Q5_0, TM_DTYPE_Q5_1, TM_DTYPE_Q2_K, TM_DTYPE_Q3_K,
                                         TM_DTYPE_Q4_K, TM_DTYPE_Q5_K, TM_DTYPE_Q6_K),
                         [](const testing::TestParamInfo<tm_dtype> &p) { return std::string(tm_dtype_name(p.param)); });

TEST(ConvertErrors, UnsupportedTargetAndBadInput) {
    char err[256];
    std::string outp = tmp_path("conv_err.gguf");
    EXPECT_EQ(tm_convert_file("/nonexistent.gguf", outp.c_str(), TM_DTYPE_Q8_K, err, sizeof err), TM_EUNSUPPORTED);
    EXPECT_NE(strstr(err, "q8_k"), nullptr) << err;
    tm_convert_target tg;
    EXPECT_EQ(tm_convert_target_from_name("q4_k_s", &tg), TM_EINVAL);
    EXPECT_EQ(tm_convert_target_from_name("q8_1", &tg), TM_EINVAL);
    EXPECT_EQ(tm_convert_target_from_name(nullptr, &tg), TM_EINVAL);
    ASSERT_EQ(tm_convert_target_from_name("Q5_K_M", &tg), 0);
    EXPECT_EQ(tg.type, TM_DTYPE_Q5_K);
    EXPECT_EQ(tg.mix_m, 1);
    EXPECT_EQ(tg.ftype, 17u);
    ASSERT_EQ(tm_convert_target_from_name("q6_k", &tg), 0);
    EXPECT_EQ(tg.mix_m, 0);
    EXPECT_EQ(tg.ftype, 18u);
    EXPECT_EQ(tm_convert_file("/nonexistent.gguf", outp.c_str(), TM_DTYPE_Q8_0, err, sizeof err), TM_EIO);
    std::string bad = tmp_path("conv_bad.gguf");
    Bytes f = build(small_spec());
    f.resize(f.size() - 1);
    std::ofstream(bad, std::ios::binary).write((const char *)f.data(), (std::streamsize)f.size());
    EXPECT_EQ(tm_convert_file(bad.c_str(), outp.c_str(), TM_DTYPE_Q8_0, err, sizeof err), TM_EFORMAT);
    EXPECT_NE(strstr(err, "past end"), nullptr) << err;
    EXPECT_NE(access(outp.c_str(), F_OK), 0);
    EXPECT_NE(access((outp + ".tmp").c_str(), F_OK), 0);
    remove(bad.c_str());
}

// llama.cpp's _M recipes, tensor by tensor, on a 16-layer model with tied and untied
// output: the layers its use_more_bits picks (i < 2, i >= 14, (i - 2) % 3 == 2) are
// written out here. Our q4_k_m / q5_k_m / q6_k of the default model have the same type in
// every tensor as the files llama.cpp's llama_model_quantize made (bench/RESULTS.md).
TEST(ConvertMix, FollowsLlamaCppRecipes) {
    const std::vector<int> more = {0, 1, 4, 7, 10, 13, 14, 15};
    struct MixCase { const char *name; uint32_t ftype; tm_dtype base, base_fallback; bool mix; };
    const MixCase cases[] = {
        {"q4_k_m", 15, TM_DTYPE_Q4_K, TM_DTYPE_Q5_0, true},
        {"q5_k_m", 17, TM_DTYPE_Q5_K, TM_DTYPE_Q5_1, true},
        {"q6_k", 18, TM_DTYPE_Q6_K, TM_DTYPE_Q8_0, false},
    };
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0.0f, 0.1f);
    for (bool tied : {true, false}) {
        tm_gguf_writer *w = tm_gguf_writer_create(32);
        ASSERT_EQ(tm_gguf_writer_add_str(w, "general.architecture", "llama"), 0);
        auto add = [&](const std::string &name, int n_dims, int64_t ne0, int64_t ne1) {
            const int64_t ne[4] = {ne0, ne1, 1, 1};
            std::vector<float> v((size_t)(ne0 * ne1));
            for (auto &x : v) x = nd(rng);
            ASSERT_EQ(tm_gguf_writer_add_tensor(w, name.c_str(), n_dims, ne, TM_DTYPE_F32, v.data(), v.size() * 4), 0);
        };
        add("token_embd.weight", 2, 256, 8);
        // layers in name order (0, 1, 10, 11, ..., 15, 2, ...), as llama.cpp writes files:
        // the recipe goes by the layer number, not by the place in the file
        std::vector<std::string> layers;
        for (int i = 0; i < 16; i++) layers.push_back(std::to_string(i));
        std::sort(layers.begin(), layers.end());
        for (const std::string &li : layers) {
            const std::string b = "blk." + li + ".";
            add(b + "attn_norm.weight", 1, 256, 1);
            add(b + "attn_q.weight", 2, 96, 4);
            add(b + "attn_v.weight", 2, 256, 4);
            add(b + "ffn_down.weight", 2, 512, 4);
        }
        if (!tied) add("output.weight", 2, 96, 8);
        const std::string in = tmp_path("mix_in.gguf"), outp = tmp_path("mix_out.gguf");
        char err[256];
        ASSERT_EQ(tm_gguf_writer_write(w, in.c_str(), err, sizeof err), 0) << err;
        tm_gguf_writer_destroy(w);
        for (const MixCase &mc : cases) {
            SCOPED_TRACE(std::string(mc.name) + (tied ? " tied" : " untied"));
            tm_convert_target tg;
            ASSERT_EQ(tm_convert_target_from_name(mc.name, &tg), 0);
            ASSERT_EQ(tm_convert_file_target(in.c_str(), outp.c_str(), &tg, 0, 2, err, sizeof err), 0) << err;
            tm_gguf *g;
            ASSERT_EQ(tm_gguf_open(outp.c_str(), &g, err, sizeof err), 0) << err;
            uint32_t ftype;
            ASSERT_EQ(tm_gguf_get_u32(g, "general.file_type", &ftype), 0);
            EXPECT_EQ(ftype, mc.ftype);
            auto type_of = [&](const std::string &name) { return tm_gguf_find_tensor(g, name.c_str())->type; };
            // the output (a tied token_embd) is Q6_K, or Q8_0 for rows not a multiple of 256
            EXPECT_EQ(type_of("token_embd.weight"), tied || !mc.mix ? TM_DTYPE_Q6_K : mc.base);
            if (!tied) {
                EXPECT_EQ(type_of("output.weight"), TM_DTYPE_Q8_0);
            }
            for (int i = 0; i < 16; i++) {
                const std::string b = "blk." + std::to_string(i) + ".";
                const bool bump = mc.mix && std::find(more.begin(), more.end(), i) != more.end();
                EXPECT_EQ(type_of(b + "attn_norm.weight"), TM_DTYPE_F32);
                EXPECT_EQ(type_of(b + "attn_q.weight"), mc.base_fallback) << i;
                EXPECT_EQ(type_of(b + "attn_v.weight"), bump ? TM_DTYPE_Q6_K : mc.base) << i;
                EXPECT_EQ(type_of(b + "ffn_down.weight"), bump ? TM_DTYPE_Q6_K : mc.base) << i;
            }
            tm_gguf_close(g);
        }
        remove(in.c_str());
        remove(outp.c_str());
    }
}

// Rows are quantized in batches over a thread pool: the bytes must not depend on the
// thread count (each row is one thread's, written to its own place).
TEST(ConvertMix, ThreadCountDoesNotChangeTheFile) {
    tm_gguf_writer *w = tm_gguf_writer_create(32);
    ASSERT_EQ(tm_gguf_writer_add_str(w, "general.architecture", "llama"), 0);
    std::mt19937 rng(9);
    std::normal_distribution<float> nd(0.0f, 0.05f);
    const int64_t ne[4] = {512, 37, 1, 1}, ne2[4] = {96, 41, 1, 1};
    std::vector<float> v(512 * 37), v2(96 * 41);
    for (auto &x : v) x = nd(rng);
    for (auto &x : v2) x = nd(rng);
    ASSERT_EQ(tm_gguf_writer_add_tensor(w, "blk.0.ffn_down.weight", 2, ne, TM_DTYPE_F32, v.data(), v.size() * 4), 0);
    ASSERT_EQ(tm_gguf_writer_add_tensor(w, "blk.0.attn_q.weight", 2, ne2, TM_DTYPE_F32, v2.data(), v2.size() * 4), 0);
    const std::string in = tmp_path("thr_in.gguf"), a = tmp_path("thr_a.gguf"), b = tmp_path("thr_b.gguf");
    char err[256];
    ASSERT_EQ(tm_gguf_writer_write(w, in.c_str(), err, sizeof err), 0) << err;
    tm_gguf_writer_destroy(w);
    tm_convert_target tg;
    ASSERT_EQ(tm_convert_target_from_name("q4_k_m", &tg), 0);
    ASSERT_EQ(tm_convert_file_target(in.c_str(), a.c_str(), &tg, 0, 1, err, sizeof err), 0) << err;
    ASSERT_EQ(tm_convert_file_target(in.c_str(), b.c_str(), &tg, 0, 3, err, sizeof err), 0) << err;
    std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
    const std::string sa((std::istreambuf_iterator<char>(fa)), {}), sb((std::istreambuf_iterator<char>(fb)), {});
    EXPECT_GT(sa.size(), 512u * 37 / 2);
    EXPECT_TRUE(sa == sb) << "q4_k_m output differs between 1 and 3 threads";
    for (const std::string &p : {in, a, b}) remove(p.c_str());
}

TEST(ConvertErrors, InPlaceConversionWorks) {
    // in == out: the source stays mapped while the output goes to a temporary file
    std::string p = tmp_path("conv_inplace.gguf");
    Bytes f = build(small_spec());
    std::ofstream(p, std::ios::binary).write((const char *)f.data(), (std::streamsize)f.size());
    char err[256];
    ASSERT_EQ(tm_convert_file(p.c_str(), p.c_str(), TM_DTYPE_F16, err, sizeof err), 0) << err;
    tm_gguf *g;
    ASSERT_EQ(tm_gguf_open(p.c_str(), &g, err, sizeof err), 0) << err;
    EXPECT_EQ(tm_gguf_find_tensor(g, "b")->type, TM_DTYPE_F16);
    EXPECT_EQ(tm_gguf_find_tensor(g, "a")->type, TM_DTYPE_F32);
    uint32_t ft;
    EXPECT_EQ(tm_gguf_get_u32(g, "general.file_type", &ft), 0);  // added: the source had none
    EXPECT_EQ(ft, 1u);
    tm_gguf_close(g);
    remove(p.c_str());
}

}  // namespace

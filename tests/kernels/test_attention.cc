// Paged attention of the CPU backend (kernels/cpu/attention.c and each level's chunk
// kernel), with and without sliding windows and soft-capping: the scalar reference against a naive double-precision attention over dense
// K/V written here, every SIMD level this CPU supports against the scalar reference, and
// invariance: each sequence alone vs inside a batch, and 1 vs 2 vs 3 threads (with and
// without split-KV), bitwise. Fresh random inputs from fixed seeds, pages shuffled over
// the pool, every unused slot and another layer filled with NaN, outputs poisoned.
//
// Tolerances (absolute; V in [-1, 1], so outputs too): scalar vs naive 3e-5; SIMD vs
// scalar 3e-5. An int8 cache: the same, the naive reference reading the dequantized
// values (keys, values and, as the kernels quantize them, queries).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

extern "C" {
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
}
#include "tests/kernels/cpu_ops_helpers.h"
#include "tests/kernels/paged_batch.h"

namespace {

using namespace tm_test;

using Seq = PagedSeq;

struct AttnCase {
    int n_kv_heads, group, head_dim, block_size;
    std::vector<Seq> seqs;
    uint32_t seed;
    tm_kv_dtype dtype = TM_KV_F16;
    int window = 0;       // > 0: sliding window (row sees keys pos - window + 1..pos)
    float softcap = 0.0f; // > 0: scores soft-capped
};

// Everything one attention call needs, with dense per-sequence K/V for the naive reference.
struct AttnData : PagedBatch {
    AttnCase c;
    int n_heads = 0;
    const int n_layers = 2, layer = 1; // layer 0 is all NaN: a wrong layer offset shows
    std::vector<std::vector<float>> K, V; // per seq (ctx, n_kv_heads, head_dim), f16-exact
    std::vector<std::vector<float>> Kc, Vc; // what the cache holds: K, V (f16) or dequantized int8
    std::vector<float> q;                 // (n_tokens, n_heads, head_dim)
    std::vector<float> qc;                // q as the kernel multiplies it: q, or int8 (ops.h) for an int8 cache
    float scale = 0;

    // three spare pages hold NaN
    explicit AttnData(const AttnCase &cs) : PagedBatch(cs.seqs, cs.block_size, 3, cs.seed), c(cs) {
        n_heads = c.n_kv_heads * c.group;
        for (const Seq &sq : c.seqs) {
            size_t n = (size_t)sq.ctx * c.n_kv_heads * c.head_dim;
            K.push_back(f16_round(randu(n, g())));
            V.push_back(f16_round(randu(n, g())));
            Kc.push_back(c.dtype == TM_KV_INT8 ? int8_round(K.back(), c.head_dim).deq : K.back());
            Vc.push_back(c.dtype == TM_KV_INT8 ? int8_round(V.back(), c.head_dim).deq : V.back());
        }
        // Scores of a few units so the softmax is neither flat nor one-hot.
        q = randu((size_t)n_tokens * n_heads * c.head_dim, g(), -3.0f, 3.0f);
        qc = c.dtype == TM_KV_INT8 ? int8_round(q, c.head_dim).deq : q;
        scale = 1.0f / std::sqrt((float)c.head_dim);
    }

    // Naive reference: dense K/V, softmax in double.
    std::vector<float> naive() const {
        const int hd = c.head_dim;
        std::vector<float> out((size_t)n_tokens * n_heads * hd);
        for (size_t s = 0; s < c.seqs.size(); s++)
            for (int t = seq_start[s]; t < seq_start[s + 1]; t++)
                for (int h = 0; h < n_heads; h++) {
                    int kh = h / c.group, n_keys = pos[t] + 1;
                    int first = c.window > 0 ? std::max(0, pos[t] - c.window + 1) : 0;
                    const float *qv = &qc[((size_t)t * n_heads + h) * hd];
                    std::vector<double> sc(n_keys);
                    double mx = -INFINITY, sum = 0;
                    for (int j = 0; j < n_keys; j++) {
                        const float *kv = &Kc[s][((size_t)j * c.n_kv_heads + kh) * hd];
                        double d = 0;
                        for (int i = 0; i < hd; i++) d += (double)qv[i] * kv[i];
                        sc[j] = d * scale;
                        if (c.softcap > 0) sc[j] = c.softcap * std::tanh(sc[j] / c.softcap);
                        if (j < first) sc[j] = -INFINITY;
                        mx = std::max(mx, sc[j]);
                    }
                    for (int j = 0; j < n_keys; j++) sum += (sc[j] = std::exp(sc[j] - mx));
                    for (int i = 0; i < hd; i++) {
                        double o = 0;
                        for (int j = 0; j < n_keys; j++) o += sc[j] * Vc[s][((size_t)j * c.n_kv_heads + kh) * hd + i];
                        out[((size_t)t * n_heads + h) * hd + i] = (float)(o / sum);
                    }
                }
        return out;
    }
};

// Fills a fresh cache through be->kv_store: every position of every sequence, and NaN in
// every other slot of the layer (spare pages, the tail of last pages) and in layer 0.
tm_kv_cache *fill_cache(Backend &B, const AttnData &d) {
    const AttnCase &c = d.c;
    tm_kv_shape shape = {d.n_layers, d.n_blocks, c.block_size, c.n_kv_heads, c.head_dim, c.dtype};
    tm_kv_cache *kv = nullptr;
    EXPECT_EQ(B.be->kv_create(B.be, &shape, &kv, NULL, 0), 0);
    const size_t row = (size_t)c.n_kv_heads * c.head_dim;
    std::vector<char> used((size_t)d.n_blocks * c.block_size, 0);
    for (size_t s = 0; s < c.seqs.size(); s++) {
        int ctx = c.seqs[s].ctx;
        std::vector<int32_t> slots(ctx);
        for (int p = 0; p < ctx; p++) {
            slots[p] = d.slot(s, p);
            used[slots[p]] = 1;
        }
        float *pk = B.up(d.K[s]), *pv = B.up(d.V[s]);
        B.be->kv_store(B.be, kv, d.layer, pk, pv, slots.data(), ctx);
        B.be->free(B.be, pk), B.be->free(B.be, pv);
    }
    std::vector<int32_t> nan_slots, all_slots;
    for (size_t i = 0; i < used.size(); i++) {
        if (!used[i]) nan_slots.push_back((int32_t)i);
        all_slots.push_back((int32_t)i);
    }
    std::vector<float> nan_rows(used.size() * row, kNaN);
    float *pn = B.up(nan_rows);
    if (!nan_slots.empty()) B.be->kv_store(B.be, kv, d.layer, pn, pn, nan_slots.data(), (int)nan_slots.size());
    B.be->kv_store(B.be, kv, 0, pn, pn, all_slots.data(), (int)all_slots.size());
    B.be->free(B.be, pn);
    return kv;
}

std::vector<float> run_attention(Backend &B, tm_kv_cache *kv, const AttnData &d, const tm_batch &b,
                                 const float *q_host) {
    size_t n = (size_t)b.n_tokens * d.n_heads * d.c.head_dim;
    float *pq = B.up(std::vector<float>(q_host, q_host + n));
    float *po = B.poisoned(n);
    B.be->attention(B.be, po, pq, kv, d.layer, &b, d.n_heads, d.scale, d.c.window, d.c.softcap);
    auto out = B.down(po, n);
    B.be->free(B.be, pq), B.be->free(B.be, po);
    return out;
}

// Scalar vs naive, every level vs scalar, each sequence alone vs in the batch (bitwise),
// and 1 vs 3 threads (bitwise).
void check_attention(const AttnCase &c) {
    AttnData d(c);
    const auto naive = d.naive();
    const tm_batch b = d.batch();
    std::vector<float> ref;
    for (int l : levels()) {
        SCOPED_TRACE("level " + std::string(tm_simd_name(l)));
        Backend B(2, l);
        tm_kv_cache *kv = fill_cache(B, d);
        auto got = run_attention(B, kv, d, b, d.q.data());
        if (l == TM_SIMD_SCALAR) {
            EXPECT_TRUE(close(got, naive, 3e-5, 0)) << "scalar vs naive";
            ref = got;
        } else {
            EXPECT_TRUE(close(got, ref, 3e-5, 0)) << "vs scalar";
        }
        // Each sequence alone: same block-table row, same cache -> bitwise the same rows.
        const size_t tok = (size_t)d.n_heads * c.head_dim;
        for (size_t s = 0; s < c.seqs.size() && c.seqs.size() > 1; s++) {
            tm_batch one = b;
            int t0 = d.seq_start[s], t1 = d.seq_start[s + 1];
            int32_t starts[2] = {0, t1 - t0};
            one.n_tokens = t1 - t0;
            one.n_seqs = 1;
            one.tokens = b.tokens + t0;
            one.pos = b.pos + t0;
            one.seq_start = starts;
            one.ctx_len = b.ctx_len + s;
            one.block_table = b.block_table + s * b.max_blocks;
            one.slots = b.slots + t0;
            auto alone = run_attention(B, kv, d, one, d.q.data() + t0 * tok);
            std::vector<float> rows(got.begin() + t0 * tok, got.begin() + t1 * tok);
            EXPECT_TRUE(bitwise_equal(alone, rows)) << "sequence " << s << " alone differs from batch";
        }
        // Another thread count (1 thread: no split-KV at all) gives the same bits.
        for (int nth : {1, 3}) {
            Backend B2(nth, l);
            tm_kv_cache *kv2 = fill_cache(B2, d);
            EXPECT_TRUE(bitwise_equal(run_attention(B2, kv2, d, b, d.q.data()), got)) << nth << " threads";
            B2.be->kv_destroy(B2.be, kv2);
        }
        B.be->kv_destroy(B.be, kv);
    }
}

class Attention : public ::testing::TestWithParam<std::tuple<int, int>> {}; // (group, head_dim)

TEST_P(Attention, SingleDecode) {
    auto [group, hd] = GetParam();
    for (int ctx : {1, 15, 16, 17, 1000}) {
        SCOPED_TRACE("ctx " + std::to_string(ctx));
        check_attention({3, group, hd, 16, {{ctx, 1}}, (uint32_t)(ctx * 13 + group + hd)});
    }
}

TEST_P(Attention, SinglePrefillChunk) {
    auto [group, hd] = GetParam();
    for (int len : {1, 15, 16, 17, 150}) {
        SCOPED_TRACE("len " + std::to_string(len));
        check_attention({2, group, hd, 16, {{len, len}}, (uint32_t)(len * 7 + group + hd)});
    }
}

TEST_P(Attention, PrefillContinuingCachedPrefix) {
    auto [group, hd] = GetParam();
    // bottom-right causal alignment: query i of the chunk sees keys 0..ctx - q_len + i
    check_attention({2, group, hd, 16, {{1000, 37}}, (uint32_t)(group * 3 + hd)});
    check_attention({1, group, hd, 16, {{33, 17}}, (uint32_t)(group * 5 + hd)});
}

TEST_P(Attention, RaggedBatch) {
    auto [group, hd] = GetParam();
    // 3 decodes, then 2 prefill chunks (one continuing a cached prefix), shuffled pages
    check_attention({2, group, hd, 16, {{1000, 1}, {1, 1}, {17, 1}, {300, 45}, {33, 33}},
                     (uint32_t)(group * 11 + hd)});
}

INSTANTIATE_TEST_SUITE_P(GqaHeadDim, Attention,
                         ::testing::Combine(::testing::Values(1, 3, 4), ::testing::Values(64, 128)),
                         [](const auto &info) {
                             return "g" + std::to_string(std::get<0>(info.param)) + "_d" +
                                    std::to_string(std::get<1>(info.param));
                         });

TEST(AttentionShapes, PiecesShorterThanPage) {
    // Pages of 20 keys split into pieces of 16 + 4 (the second starting mid-page), and
    // chunks of TM_ATTN_CHUNK (256) that end mid-page; pages of 32 hold two full pieces.
    // Shuffled pages.
    for (int bs : {20, 32}) {
        SCOPED_TRACE("block_size " + std::to_string(bs));
        check_attention({3, 3, 64, bs, {{403, 1}, {21, 1}, {280, 30}, {4, 1}}, (uint32_t)(bs * 31)});
        check_attention({2, 4, 128, bs, {{600, 1}, {257, 1}}, (uint32_t)(bs * 37)});
    }
}

TEST(AttentionShapes, DecodeBatch) {
    // The decode-heavy engine step: 16 sequences of one new token each, ~200 keys, SmolLM2's
    // heads (9 q / 3 kv, head_dim 64), pages scattered over the pool.
    std::vector<Seq> seqs;
    for (int s = 0; s < 16; s++) seqs.push_back({190 + 7 * s, 1});
    check_attention({3, 3, 64, 16, seqs, 2024});
}

// The int8 cache through the same checks: scalar vs the naive reference on the
// dequantized values, each level vs scalar, batch and thread-count invariance.
TEST(AttentionInt8, DecodesPrefillsAndRaggedBatches) {
    for (int group : {1, 3}) {
        SCOPED_TRACE("group " + std::to_string(group));
        for (int ctx : {1, 17, 1000}) check_attention({3, group, 64, 16, {{ctx, 1}}, (uint32_t)(ctx + group), TM_KV_INT8});
        check_attention({2, group, 64, 16, {{150, 150}}, (uint32_t)(9 + group), TM_KV_INT8});
        check_attention({2, group, 128, 16, {{1000, 37}}, (uint32_t)(10 + group), TM_KV_INT8});
        check_attention({2, group, 64, 16, {{1000, 1}, {1, 1}, {17, 1}, {300, 45}, {33, 33}},
                         (uint32_t)(11 + group), TM_KV_INT8});
    }
    std::vector<Seq> seqs;
    for (int s = 0; s < 16; s++) seqs.push_back({190 + 7 * s, 1});
    check_attention({3, 3, 64, 16, seqs, 2025, TM_KV_INT8});
    check_attention({3, 3, 64, 20, {{203, 1}, {21, 1}, {140, 30}, {4, 1}}, 2026, TM_KV_INT8}); // pieces mid-page
    check_attention({2, 2, 40, 7, {{300, 1}, {50, 20}}, 2027, TM_KV_INT8});                   // odd shapes
    check_attention({2, 4, 12, 3, {{70, 1}, {20, 9}}, 2028, TM_KV_INT8}); // head_dim % 8 = 4, pages of 3
    check_attention({1, 8, 64, 16, {{300, 1}, {40, 2}}, 2029, TM_KV_INT8}); // 8 query heads per kv head
    check_attention({1, 2, 1024, 16, {{40, 1}, {20, 5}}, 2030, TM_KV_INT8}); // the head_dim limit
}

// Sliding windows (Gemma's local layers): each row sees keys pos - window + 1..pos. Windows
// shorter than a page, than a chunk (256) and longer than one, so items skip whole chunks
// and rows of one tile start their windows in different chunks; split-KV decodes over a
// long context; int8. Against the naive reference, across levels, alone vs in the batch
// and across thread counts, bitwise, as every other case.
TEST(AttentionWindow, DecodesPrefillsAndRaggedBatches) {
    for (int window : {1, 5, 100, 256, 300}) {
        SCOPED_TRACE("window " + std::to_string(window));
        AttnCase c = {2, 3, 64, 16, {{1000, 1}, {1, 1}, {17, 1}, {300, 45}, {33, 33}, {700, 20}},
                      (uint32_t)(5000 + window)};
        c.window = window;
        check_attention(c);
    }
    AttnCase d = {1, 4, 128, 16, {{2000, 1}}, 5100}; // one long decode: split into chunks
    d.window = 512;
    check_attention(d);
    AttnCase p = {2, 2, 64, 20, {{600, 120}}, 5101}; // a prefill whose tile's windows span chunks
    p.window = 200;
    check_attention(p);
    AttnCase i8 = {2, 3, 64, 16, {{1000, 1}, {300, 45}, {700, 20}}, 5102, TM_KV_INT8};
    i8.window = 100;
    check_attention(i8);
}

// A window at least as long as the context is no window: the same bits as window 0.
TEST(AttentionWindow, LongWindowEqualsNone) {
    AttnCase c = {2, 3, 64, 16, {{300, 1}, {100, 40}}, 5200};
    AttnData d0(c);
    c.window = 300;
    AttnData d1(c);
    Backend B(2, tm_simd_detect());
    tm_kv_cache *kv = fill_cache(B, d0);
    const tm_batch b = d0.batch();
    EXPECT_TRUE(bitwise_equal(run_attention(B, kv, d0, b, d0.q.data()), run_attention(B, kv, d1, b, d1.q.data())));
    B.be->kv_destroy(B.be, kv);
}

// Soft-capped scores (Gemma 2), alone and with a window; q spread wide so the cap bends.
TEST(AttentionSoftcap, AgainstNaive) {
    for (float cap : {0.5f, 2.0f, 50.0f}) {
        SCOPED_TRACE("softcap " + std::to_string(cap));
        AttnCase c = {2, 3, 64, 16, {{1000, 1}, {17, 1}, {300, 45}}, (uint32_t)(5300 + cap * 10)};
        c.softcap = cap;
        check_attention(c);
        c.window = 64;
        check_attention(c);
    }
}

TEST(AttentionShapes, OddBlockSizeAndHeadDim) {
    // block_size not dividing the chunk, head_dim not a multiple of the vector width
    check_attention({2, 2, 40, 7, {{300, 1}, {50, 20}}, 4242});
    check_attention({1, 1, 24, 32, {{200, 3}}, 4343});
}

} // namespace

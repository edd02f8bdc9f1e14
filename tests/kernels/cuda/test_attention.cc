// CUDA paged attention (kernels/cuda/attention.cuh), compiled for the CPU test harness,
// against the CPU backend's scalar attention on the same keys, values and queries.
//
// Each case builds a ragged batch (decodes, prefill chunks from empty and after a cached
// prefix) over shuffled, non-contiguous pages; stores every position's K/V in the CPU
// cache through its kv_store and in the device pool (the CUDA layout, written here); puts
// NaN in every other slot of the pool (spare pages, the tails of last pages, the other
// layer) and in the outputs before the run.
//
// Tolerance: ||out - ref|| / ||ref|| <= 1e-3 (kBound). Keys and values are f16 on both
// sides, so the difference is what the tensor cores round: Q is converted to f16 (unit
// roundoff u = 2^-11, so a score moves by about scale |q| |k| u / sqrt(3), ~0.6 u with
// q in [-3, 3] and k in [-1, 1]) and P is rounded to f16 before P.V (u per weight). Both
// errors are random in sign across keys and dims, so the output moves by a few 1e-4 of
// its norm: measured 1.2e-4 to 2.7e-4 on every case here. The bound leaves 4x for other
// accumulation orders (a GPU's MMA sums in its own order) without hiding a real bug: a
// mask off by one key, a wrong GQA head or a lost rescale each give 1e-2 or more.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/attention.cuh"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function" // for kv_store only: rope's launcher goes unused
#include "kernels/cuda/rope.cuh"
#pragma GCC diagnostic pop

extern "C" {
#include "kernels/cpu/simd.h"
}
#include "tests/kernels/paged_batch.h"

namespace {

const double kBound = 1e-3;
const uint16_t kHalfNaN = 0x7e00;

using tm_test::PagedBatch;
using Seq = tm_test::PagedSeq;

struct Case {
    int n_kv_heads, group, head_dim, block_size;
    std::vector<Seq> seqs;
    uint32_t seed;
    int n_sm = 132;           // SMs the plan fills: few force split-KV
    bool both_layers = false; // also run layer 0 in the same step (the plan is reused)
    bool split = false;       // the plan must split keys (and merge)
    int window = 0;           // > 0: sliding-window attention (Gemma's local layers)
    float softcap = 0.0f;     // > 0: soft-capped scores (Gemma 2)
};

std::vector<float> randu(size_t n, std::mt19937 &g, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto &x : v) x = d(g);
    return v;
}

template <class T>
T *to_device(const std::vector<T> &v) {
    T *p = nullptr;
    EXPECT_EQ(cudaMalloc((void **)&p, std::max<size_t>(v.size(), 1) * sizeof(T)), cudaSuccess);
    if (!v.empty()) {
        EXPECT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    }
    return p;
}

// One batch step: the sequences' pages, K/V of both layers, queries, index arrays.
struct Data : PagedBatch {
    Case c;
    int n_heads = 0;
    static const int n_layers = 2;
    std::vector<std::vector<float>> K[n_layers], V[n_layers]; // [layer][seq] (ctx, n_kv_heads, head_dim)
    std::vector<float> q;                                     // (n_tokens, n_heads, head_dim)
    float scale = 0;
    int window = 0;
    float softcap = 0.0f;

    // three spare pages stay NaN
    explicit Data(const Case &cs)
        : PagedBatch(cs.seqs, cs.block_size, 3, cs.seed), c(cs), window(cs.window), softcap(cs.softcap) {
        n_heads = c.n_kv_heads * c.group;
        for (const Seq &sq : c.seqs) {
            const size_t n = (size_t)sq.ctx * c.n_kv_heads * c.head_dim;
            for (int l = 0; l < n_layers; l++) {
                K[l].push_back(randu(n, g, -1.0f, 1.0f));
                V[l].push_back(randu(n, g, -1.0f, 1.0f));
            }
        }
        // scores of a few units: the softmax is neither flat nor one-hot
        q = randu((size_t)n_tokens * n_heads * c.head_dim, g, -3.0f, 3.0f);
        scale = 1.0f / std::sqrt((float)c.head_dim);
    }

    tm_kv_shape shape() const { return {n_layers, n_blocks, c.block_size, c.n_kv_heads, c.head_dim, TM_KV_F16}; }

    // The CPU scalar backend's attention of layer l.
    std::vector<float> reference(int layer) const {
        char err[256] = "";
        tm_backend *be = tm_backend_cpu_create(1, TM_SIMD_SCALAR, err, sizeof err);
        EXPECT_NE(be, nullptr) << err;
        tm_kv_shape sh = shape();
        tm_kv_cache *kv = nullptr;
        EXPECT_EQ(be->kv_create(be, &sh, &kv, NULL, 0), 0);
        for (size_t s = 0; s < c.seqs.size(); s++) {
            std::vector<int32_t> sl(c.seqs[s].ctx);
            for (int p = 0; p < c.seqs[s].ctx; p++) sl[p] = slot(s, p);
            be->kv_store(be, kv, layer, K[layer][s].data(), V[layer][s].data(), sl.data(), (int)sl.size());
        }
        std::vector<float> out((size_t)n_tokens * n_heads * c.head_dim, NAN);
        tm_batch b = batch();
        be->attention(be, out.data(), q.data(), kv, layer, &b, n_heads, scale, window, softcap);
        be->kv_destroy(be, kv);
        be->destroy(be);
        return out;
    }

    // The device pool (n_layers, n_blocks, n_kv_heads, block_size, head_dim) f16 of K or
    // V: every sequence position of both layers, NaN everywhere else.
    std::vector<uint16_t> pool(bool values) const {
        const int hd = c.head_dim, bs = c.block_size, nkv = c.n_kv_heads;
        const size_t layer_elems = (size_t)n_blocks * nkv * bs * hd;
        std::vector<uint16_t> p(n_layers * layer_elems, kHalfNaN);
        for (int l = 0; l < n_layers; l++)
            for (size_t s = 0; s < c.seqs.size(); s++)
                for (int t = 0; t < c.seqs[s].ctx; t++)
                    for (int h = 0; h < nkv; h++)
                        for (int i = 0; i < hd; i++) {
                            const int sl = slot(s, t);
                            const size_t dst = l * layer_elems + (((size_t)(sl / bs) * nkv + h) * bs + sl % bs) * hd + i;
                            const auto &src = values ? V[l][s] : K[l][s];
                            p[dst] = tm_f32_to_f16(src[((size_t)t * nkv + h) * hd + i]);
                        }
        return p;
    }
};

double rel_err(const std::vector<float> &got, const std::vector<float> &ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        if (!std::isfinite(got[i])) return INFINITY;
        num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return std::sqrt(num / den);
}

// One plan state and step counter for the whole binary, as one backend has: every case
// after the first re-plans in a state that held another batch's plan.
tm_cuda_attn_state g_state;
uint64_t g_step;

struct Device {
    cudaStream_t stream = nullptr;
    tm_cuda_scratch scratch = {nullptr, 0};
    tm_cuda_ctx ctx = {};
    explicit Device(int n_sm) {
        EXPECT_EQ(cudaStreamCreate(&stream), cudaSuccess);
        ctx.stream = stream;
        ctx.cublas = nullptr;
        ctx.scratch = &scratch;
        ctx.n_sm = n_sm;
        ctx.cc = 90;
        ctx.max_smem = 227 * 1024;
    }
    ~Device() {
        if (scratch.data) cudaFree(scratch.data);
        cudaStreamDestroy(stream);
    }
};

// Runs the case's step on the device (layer 1, then layer 0 in the same step if asked)
// and compares each layer with the CPU reference. Returns the worst relative error.
double check(const Case &c) {
    Data d(c);
    Device dev(c.n_sm);
    const tm_batch hb = d.batch();
    tm_cuda_batch cb = {};
    cb.host = &hb;
    cb.step = ++g_step;
    cb.tokens = to_device(d.tokens);
    cb.pos = to_device(d.pos);
    cb.seq_start = to_device(d.seq_start);
    cb.ctx_len = to_device(d.ctx_len);
    cb.block_table = to_device(d.table);
    cb.slots = to_device(d.slots);
    struct tm_kv_cache kv;
    kv.shape = d.shape();
    kv.k = (__half *)to_device(d.pool(false));
    kv.v = (__half *)to_device(d.pool(true));
    float *q = to_device(d.q);
    const size_t n_out = d.q.size();
    float *out = to_device(std::vector<float>(n_out, NAN));

    double worst = 0;
    for (int layer : {1, 0}) {
        if (layer == 0 && !c.both_layers) break;
        SCOPED_TRACE("layer " + std::to_string(layer));
        EXPECT_EQ(cudaMemcpy(out, std::vector<float>(n_out, NAN).data(), n_out * sizeof(float), cudaMemcpyHostToDevice),
                  cudaSuccess);
        EXPECT_EQ(tm_cuda_attention(&dev.ctx, &g_state, out, q, &kv, layer, &cb, d.n_heads, d.scale, d.window, d.softcap), cudaSuccess);
        EXPECT_EQ(cudaStreamSynchronize(dev.stream), cudaSuccess);
        std::vector<float> got(n_out);
        EXPECT_EQ(cudaMemcpy(got.data(), out, n_out * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
        if (c.split) {
            EXPECT_GT(g_state.n_merge, 0) << "expected split-KV";
        }
        const double err = rel_err(got, d.reference(layer));
        EXPECT_LE(err, kBound);
        worst = std::max(worst, err);
    }
    for (void *p : {(void *)cb.tokens, (void *)cb.pos, (void *)cb.seq_start, (void *)cb.ctx_len,
                    (void *)cb.block_table, (void *)cb.slots, (void *)kv.k, (void *)kv.v, (void *)q, (void *)out})
        cudaFree(p);
    return worst;
}

void run(const char *what, const Case &c) {
    SCOPED_TRACE(what);
    const double err = check(c);
    printf("  %-48s kvh %d g %d hd %3d bs %2d sm %3d: rel err %.2e\n", what, c.n_kv_heads, c.group, c.head_dim,
           c.block_size, c.n_sm, err);
}

class CudaAttention : public ::testing::Test {
  protected:
    static void TearDownTestSuite() { tm_cuda_attn_state_free(&g_state); }
};

TEST_F(CudaAttention, OneToken) {
    run("one token, empty cache", {3, 3, 64, 16, {{1, 1}}, 1});
}

TEST_F(CudaAttention, DecodeBatch) {
    run("decodes at page edges", {3, 3, 64, 16, {{1, 1}, {15, 1}, {16, 1}, {17, 1}, {200, 1}, {333, 1}}, 2});
    run("decodes, group 4, head dim 128", {2, 4, 128, 16, {{5, 1}, {64, 1}, {65, 1}, {190, 1}}, 3});
}

TEST_F(CudaAttention, PrefillFromEmpty) {
    run("prefill 70 tokens, group 3", {3, 3, 64, 16, {{70, 70}}, 4});
    run("prefill 40 tokens, group 1, head dim 128", {2, 1, 128, 16, {{40, 40}}, 5});
}

TEST_F(CudaAttention, PrefillAfterCachedPrefix) {
    // bottom-right causal alignment: query i sees keys 0..ctx - q_len + i
    run("chunk of 37 after 263 cached", {3, 3, 64, 16, {{300, 37}}, 6});
    run("chunk of 17 after 16 cached, group 7", {1, 7, 128, 16, {{33, 17}}, 7});
}

TEST_F(CudaAttention, LongContextsSplit) {
    // few SMs: the decode's keys split 6 ways, the chunk's 64-row tiles too
    run("decode over 2000 keys, 4 SMs", {2, 4, 128, 16, {{2000, 1}}, 8, 4, false, true});
    run("chunk of 20 after 1480 cached, 4 SMs", {2, 4, 64, 16, {{1500, 20}}, 9, 4, false, true});
}

TEST_F(CudaAttention, MixedRaggedBatch) {
    // decodes and prefill chunks in one call, scattered pages, splits, both layers
    run("mixed batch, both layers, 8 SMs",
        {2, 3, 64, 16,
         {{1000, 1}, {1, 1}, {17, 1}, {300, 45}, {33, 33}, {5, 2}, {129, 3}, {64, 1}, {700, 16}, {48, 7}, {2, 2}, {400, 1}},
         10, 8, true, true});
}

TEST_F(CudaAttention, RealModelShapes) {
    // the default model (9 heads over 3 kv heads, head dim 64), Llama 3 8B (32 / 8, 128)
    // and Qwen2.5-7B (28 / 4, 128): decodes and chunks, some split
    const std::vector<Seq> seqs = {{900, 1}, {3, 1}, {260, 1}, {130, 24}, {64, 64}, {40, 3}};
    run("SmolLM2-135M shape, 16 SMs", {3, 3, 64, 16, seqs, 50, 16, false, true});
    run("Llama 3 8B shape, 16 SMs", {8, 4, 128, 16, seqs, 51, 16, false, true});
    run("Qwen2.5-7B shape, 16 SMs", {4, 7, 128, 16, seqs, 52, 16, false, true});
}

TEST_F(CudaAttention, HeadDims) {
    run("head dim 256, group 2, split", {1, 2, 256, 16, {{600, 1}, {60, 20}}, 11, 2, false, true});
    run("head dim 96 (padded to 128)", {2, 2, 96, 16, {{90, 1}, {50, 30}}, 12});
    run("head dim 36 (padded to 64, unaligned rows)", {2, 3, 36, 16, {{90, 1}, {50, 30}}, 13});
    run("head dim 200 (padded to 256)", {1, 3, 200, 16, {{90, 1}, {40, 12}}, 14});
}

TEST_F(CudaAttention, GroupSizes) {
    for (int g : {1, 3, 4, 7, 16}) {
        std::string what = "group " + std::to_string(g);
        run(what.c_str(), {2, g, 64, 16, {{150, 1}, {40, 3}, {30, 30}}, 20u + g});
    }
}

TEST_F(CudaAttention, BlockSizes) {
    run("block size 32", {2, 3, 64, 32, {{150, 1}, {100, 40}}, 30});
    run("block size 7", {2, 3, 64, 7, {{150, 1}, {100, 40}}, 31});
}

// Sliding windows: each row sees keys pos - window + 1..pos. Windows that cut a page, a
// 64-key tile and a split; a decode whose window starts past every tile of the plan's
// first splits (those splits see nothing and must merge as empty); prefill rows whose
// windows start at different keys inside one tile. A window longer than the context
// changes nothing (checked against the plain run's reference by the CPU tests).
TEST_F(CudaAttention, SlidingWindow) {
    Case c = {3, 3, 64, 16, {{200, 1}, {17, 1}, {70, 70}, {300, 37}}, 60};
    c.window = 40;
    run("window 40: decodes, prefill, chunk", c);
    Case s = {2, 4, 128, 16, {{2000, 1}, {1500, 20}}, 61, 4, false, true};
    s.window = 512;
    run("window 512, long contexts split, 4 SMs", s);
    Case t = {1, 2, 256, 16, {{600, 1}, {60, 20}}, 62, 2, true, true};
    t.window = 7;
    run("window 7, head dim 256, both layers", t);
}

// Soft-capped scores (cap 2; the scores spread about 1, so the large ones bend), alone
// and with a window.
TEST_F(CudaAttention, SoftCap) {
    Case c = {3, 3, 64, 16, {{200, 1}, {70, 70}, {300, 37}}, 70};
    c.softcap = 2.0f;
    run("softcap 2", c);
    c.window = 33;
    c.seed = 71;
    run("softcap 2, window 33", c);
}

TEST(CudaAttentionShapes, SupportsOrRefusesAtKvCreate) {
    Device dev(132);
    char err[256];
    tm_kv_shape s = {2, 8, 16, 2, 64, TM_KV_F16};
    for (int hd : {2, 36, 64, 96, 128, 200, 256}) {
        s.head_dim = hd;
        EXPECT_EQ(tm_cuda_attention_supports(&dev.ctx, &s, err, sizeof err), 0) << hd;
    }
    for (int hd : {0, 63, 258, 512}) {
        s.head_dim = hd;
        err[0] = 0;
        EXPECT_EQ(tm_cuda_attention_supports(&dev.ctx, &s, err, sizeof err), TM_EUNSUPPORTED) << hd;
        EXPECT_NE(std::string(err).find("head_dim"), std::string::npos) << err;
    }
    s.head_dim = 64;
    s.dtype = TM_KV_INT8;
    EXPECT_EQ(tm_cuda_attention_supports(&dev.ctx, &s, err, sizeof err), TM_EUNSUPPORTED);
    s.dtype = TM_KV_F16;
    s.head_dim = 256;
    dev.ctx.max_smem = 48 * 1024; // a device without the opt-in shared memory
    EXPECT_EQ(tm_cuda_attention_supports(&dev.ctx, &s, err, sizeof err), TM_EUNSUPPORTED);
}

TEST(CudaAttentionShapes, HeadsNotAMultipleOfKvHeadsFail) {
    Device dev(132);
    Data d({2, 2, 64, 16, {{3, 1}}, 40});
    const tm_batch hb = d.batch();
    tm_cuda_batch cb = {};
    cb.host = &hb;
    cb.step = ++g_step;
    struct tm_kv_cache kv;
    kv.shape = d.shape();
    kv.k = kv.v = nullptr;
    tm_cuda_attn_state st = {};
    EXPECT_EQ(tm_cuda_attention(&dev.ctx, &st, nullptr, nullptr, &kv, 0, &cb, 3, 1.0f, 0, 0.0f), cudaErrorInvalidValue);
    tm_cuda_last_where = tm_cuda_where{}; // the recorded failure was this test's
    tm_cuda_attn_state_free(&st);
}


// A pool of real size: each layer of K (and of V) holds more than 2^31 elements, as a
// small model's cache does on a 141 GB GPU, and the sequences sit in the last pages of
// layer 1. So the layer's offset and the offset inside the layer both pass 2^31 elements,
// and an int32 product anywhere on the way (the host's layer offset, kv_store's slot
// address, attention's page loads) lands elsewhere. The pool is address space only
// (MAP_NORESERVE): the few pages the test touches are all it costs. kv_store (the kernel)
// writes K and V; one element of each sequence is read back at the offset computed here
// in 64 bits (a store and a load that wrapped the same way would still agree with each
// other), and attention (a decode, and a chunk on the prefill kernel) is compared with
// the CPU reference over a small pool holding the same values.
TEST_F(CudaAttention, PoolPastInt32Offsets) {
    const int n_kv = 8, group = 4, hd = 128, bs = 16, n_layers = 2, layer = 1, n_heads = n_kv * group;
    const int n_blocks = (int)(((size_t)1 << 31) / ((size_t)n_kv * bs * hd)) + 64;
    const tm_kv_shape shape = {n_layers, n_blocks, bs, n_kv, hd, TM_KV_F16};
    const size_t layer_elems = tm_cuda_kv_layer_offset(&shape, 1);
    ASSERT_GT(layer_elems, (size_t)INT32_MAX);
    const size_t pool_bytes = tm_cuda_kv_layer_offset(&shape, n_layers) * sizeof(__half);
    void *kp = mmap(nullptr, pool_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void *vp = mmap(nullptr, pool_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(kp, MAP_FAILED);
    ASSERT_NE(vp, MAP_FAILED);
    struct tm_kv_cache kv;
    kv.shape = shape;
    kv.k = (__half *)kp;
    kv.v = (__half *)vp;

    // sequence 0: 40 positions, a chunk of 8 new (32 rows: the prefill kernel); sequence 1:
    // 20 positions, a decode. Pages from the top of the pool, out of order; the reference
    // pool numbers the same pages 0..4.
    const std::vector<Seq> seqs = {{40, 8}, {20, 1}};
    const int max_blocks = 3;
    const std::vector<int32_t> high = {n_blocks - 1, n_blocks - 3, n_blocks - 2, n_blocks - 4, n_blocks - 5, -1};
    const std::vector<int32_t> low = {0, 1, 2, 3, 4, -1};
    std::mt19937 g(77);
    std::vector<float> K, V;
    std::vector<int32_t> all_high, all_low; // slots of every position of both sequences
    std::vector<int32_t> pos, slots, low_slots, seq_start = {0}, ctx_len;
    for (size_t s = 0; s < seqs.size(); s++) {
        for (int p = 0; p < seqs[s].ctx; p++) {
            all_high.push_back(high[s * max_blocks + p / bs] * bs + p % bs);
            all_low.push_back(low[s * max_blocks + p / bs] * bs + p % bs);
        }
        for (int p = seqs[s].ctx - seqs[s].q_len; p < seqs[s].ctx; p++) {
            pos.push_back(p);
            slots.push_back(high[s * max_blocks + p / bs] * bs + p % bs);
            low_slots.push_back(low[s * max_blocks + p / bs] * bs + p % bs);
        }
        seq_start.push_back((int)pos.size());
        ctx_len.push_back(seqs[s].ctx);
    }
    const int n_tokens = (int)pos.size(), n_pos = (int)all_high.size();
    K = randu((size_t)n_pos * n_kv * hd, g, -1.0f, 1.0f);
    V = randu((size_t)n_pos * n_kv * hd, g, -1.0f, 1.0f);
    const std::vector<float> q = randu((size_t)n_tokens * n_heads * hd, g, -3.0f, 3.0f);
    const float scale = 1.0f / std::sqrt((float)hd);

    Device dev(132);
    float *dk = to_device(K), *dv = to_device(V), *dq = to_device(q);
    int32_t *d_all = to_device(all_high);
    ASSERT_EQ(tm_cuda_kv_store(&dev.ctx, &kv, layer, dk, dv, d_all, n_pos), cudaSuccess) << tm_sim::last_error();
    ASSERT_EQ(cudaStreamSynchronize(dev.stream), cudaSuccess);
    for (int p : {0, n_pos - 1}) { // the first and the last position stored
        const int sl = all_high[p], h = n_kv - 1, i = hd - 1;
        const size_t at = layer_elems * layer + (((size_t)(sl / bs) * n_kv + h) * bs + sl % bs) * hd + i;
        const size_t from = ((size_t)p * n_kv + h) * hd + i;
        EXPECT_EQ(tm_f16_to_f32(((const uint16_t *)kp)[at]), tm_f16_to_f32(tm_f32_to_f16(K[from]))) << "K of position " << p;
        EXPECT_EQ(tm_f16_to_f32(((const uint16_t *)vp)[at]), tm_f16_to_f32(tm_f32_to_f16(V[from]))) << "V of position " << p;
    }

    std::vector<int32_t> tokens(n_tokens, 0);
    tm_batch hb = {};
    hb.n_tokens = n_tokens;
    hb.n_seqs = (int)seqs.size();
    hb.tokens = tokens.data();
    hb.pos = pos.data();
    hb.seq_start = seq_start.data();
    hb.ctx_len = ctx_len.data();
    hb.block_table = high.data();
    hb.max_blocks = max_blocks;
    hb.slots = slots.data();
    tm_cuda_batch cb = {};
    cb.host = &hb;
    cb.step = ++g_step;
    cb.pos = to_device(pos);
    cb.seq_start = to_device(seq_start);
    cb.ctx_len = to_device(ctx_len);
    cb.block_table = to_device(high);
    cb.slots = to_device(slots);
    const size_t n_out = q.size();
    float *out = to_device(std::vector<float>(n_out, NAN));
    ASSERT_EQ(tm_cuda_attention(&dev.ctx, &g_state, out, dq, &kv, layer, &cb, n_heads, scale, 0, 0.0f), cudaSuccess)
        << tm_sim::last_error();
    ASSERT_EQ(cudaStreamSynchronize(dev.stream), cudaSuccess);
    std::vector<float> got(n_out);
    ASSERT_EQ(cudaMemcpy(got.data(), out, n_out * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);

    // the reference: the CPU scalar backend over a 5-page pool holding the same values
    char err[256] = "";
    tm_backend *be = tm_backend_cpu_create(1, TM_SIMD_SCALAR, err, sizeof err);
    ASSERT_NE(be, nullptr) << err;
    tm_kv_shape small = shape;
    small.n_blocks = 5;
    tm_kv_cache *ref_kv = nullptr;
    ASSERT_EQ(be->kv_create(be, &small, &ref_kv, NULL, 0), 0);
    be->kv_store(be, ref_kv, layer, K.data(), V.data(), all_low.data(), n_pos);
    tm_batch rb = hb;
    rb.block_table = low.data();
    rb.slots = low_slots.data();
    std::vector<float> want(n_out, NAN);
    be->attention(be, want.data(), q.data(), ref_kv, layer, &rb, n_heads, scale, 0, 0.0f);
    be->kv_destroy(be, ref_kv);
    be->destroy(be);
    const double e = rel_err(got, want);
    printf("  pool of %d pages (%.1f GiB per layer of K), last pages of layer 1: rel err %.2e\n", n_blocks,
           layer_elems * 2.0 / (1 << 30), e);
    EXPECT_LE(e, kBound);

    for (void *p : {(void *)dk, (void *)dv, (void *)dq, (void *)d_all, (void *)cb.pos, (void *)cb.seq_start,
                    (void *)cb.ctx_len, (void *)cb.block_table, (void *)cb.slots, (void *)out})
        cudaFree(p);
    munmap(kp, pool_bytes);
    munmap(vp, pool_bytes);
}

} // namespace

// Backend conformance: every op of the op table (kernels/backend.h) on every backend this
// binary can create, against the CPU scalar reference on fresh random inputs.
//
// Backends: the CPU at each SIMD level this machine supports (and the scalar path on 3
// threads, which checks the work split); the CUDA backend compiled for the CPU test
// harness (tests/cuda_sim/) when the build has it; the CUDA backend on a GPU when there is
// one (otherwise its cases skip with "no CUDA device").
//
// Every output buffer is poisoned with NaN before the op runs. Results are compared as
// ||out - ref|| / ||ref||, with the bound stated per op and weight type next to the case.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "kernels/dtype.h"
#include "models/convert.h"
#include "models/model.h"
#include "models/synth.h"
#ifdef TM_HAVE_CUDA_SIM
tm_backend *tm_backend_cuda_sim_create(int device_id, char *err, size_t err_len);
#endif
}

#include "tests/kernels/paged_batch.h"
#include "tests/test_env.h"

namespace {

// ---- backends -----------------------------------------------------------------------

struct BackendSpec {
    std::string name;                                  // test-name suffix
    std::function<tm_backend *(std::string *why)> make; // NULL + why: skip
};
void PrintTo(const BackendSpec &b, std::ostream *os) { *os << b.name; }

struct BackendDeleter {
    void operator()(tm_backend *be) const {
        if (be) be->destroy(be);
    }
};
using BackendPtr = std::unique_ptr<tm_backend, BackendDeleter>;

tm_backend *make_cpu(int threads, int simd, std::string *why) {
    char err[256] = "";
    tm_backend *be = tm_backend_cpu_create(threads, simd, err, sizeof err);
    if (!be) *why = err;
    return be;
}

std::vector<BackendSpec> all_backends() {
    std::vector<BackendSpec> v;
    v.push_back({"cpu_scalar_3threads", [](std::string *why) { return make_cpu(3, TM_SIMD_SCALAR, why); }});
    for (int level = TM_SIMD_SCALAR + 1; level <= TM_SIMD_LAST; level++) {
        if (!tm_simd_supported(level)) continue;
        v.push_back({std::string("cpu_") + tm_simd_name(level),
                     [level](std::string *why) { return make_cpu(2, level, why); }});
    }
#ifdef TM_HAVE_CUDA_SIM
    v.push_back({"cuda_sim", [](std::string *why) {
                     char err[256] = "";
                     tm_backend *be = tm_backend_cuda_sim_create(0, err, sizeof err);
                     if (!be) *why = err;
                     return be;
                 }});
#endif
    v.push_back({"cuda_gpu", [](std::string *why) {
                     char err[256] = "";
                     tm_backend *be = tm_backend_cuda_create(0, err, sizeof err);
                     if (!be) *why = std::string("CUDA: ") + err;
                     return be;
                 }});
    return v;
}

// A buffer in a backend's memory, filled from and read into host vectors.
class DevBuf {
  public:
    DevBuf(tm_backend *be, size_t n_bytes) : be_(be), n_bytes_(n_bytes) {
        p_ = be->alloc(be, n_bytes ? n_bytes : 4);
    }
    ~DevBuf() {
        if (p_) be_->free(be_, p_);
    }
    DevBuf(const DevBuf &) = delete;
    DevBuf &operator=(const DevBuf &) = delete;
    template <typename T>
    static std::unique_ptr<DevBuf> of(tm_backend *be, const std::vector<T> &host) {
        auto b = std::make_unique<DevBuf>(be, host.size() * sizeof(T));
        if (!host.empty()) be->upload(be, b->p_, host.data(), host.size() * sizeof(T));
        return b;
    }
    // n floats of NaN: an op that leaves any of them unwritten fails its comparison.
    static std::unique_ptr<DevBuf> poisoned(tm_backend *be, size_t n) {
        return of(be, std::vector<float>(n, NAN));
    }
    std::vector<float> floats() const {
        std::vector<float> h(n_bytes_ / sizeof(float));
        be_->download(be_, h.data(), p_, h.size() * sizeof(float));
        return h;
    }
    float *f() const { return static_cast<float *>(p_); }
    void *get() const { return p_; }

  private:
    tm_backend *be_;
    size_t n_bytes_;
    void *p_;
};

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto &x : v) x = d(rng);
    return v;
}

// ||a - b|| / ||b||; infinite when a has a NaN where b has none.
double rel_err(const std::vector<float> &a, const std::vector<float> &b) {
    EXPECT_EQ(a.size(), b.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < std::min(a.size(), b.size()); i++) {
        if (std::isnan(a[i]) != std::isnan(b[i])) return INFINITY;
        if (std::isnan(b[i])) continue;
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// rel_err, printed for the record (the figures the bounds were set against).
double measured(const char *backend, const std::string &what, const std::vector<float> &a, const std::vector<float> &b) {
    double e = rel_err(a, b);
    std::printf("[   info   ] %-12s %-48s rel err %.3g\n", backend, what.c_str(), e);
    return e;
}

int first_nan(const std::vector<float> &v) {
    for (size_t i = 0; i < v.size(); i++)
        if (std::isnan(v[i])) return (int)i;
    return -1;
}

// ---- weights ------------------------------------------------------------------------

// GGUF rows of type t for an (n_rows, n_cols) matrix: quantized from random floats where
// our quantizer writes the type, else random valid blocks (K-quants) with sane scales.
std::vector<uint8_t> random_weight(tm_dtype t, int64_t n_rows, int64_t n_cols, uint32_t seed) {
    const int64_t row_bytes = tm_dtype_row_bytes(t, n_cols);
    std::vector<uint8_t> data((size_t)(row_bytes * n_rows));
    std::mt19937 rng(seed);
    const float scale = 1.0f / std::sqrt((float)n_cols);
    if (t == TM_DTYPE_Q4_K || t == TM_DTYPE_Q6_K) {
        for (auto &b : data) b = (uint8_t)rng();
        std::uniform_real_distribution<float> u(0.5f, 1.5f);
        const int64_t n_blocks = n_rows * n_cols / TM_QK_K;
        for (int64_t i = 0; i < n_blocks; i++) {
            if (t == TM_DTYPE_Q4_K) {
                auto *b = reinterpret_cast<tm_block_q4_k *>(data.data()) + i;
                b->d = tm_f32_to_f16(u(rng) * scale / 32.0f);
                b->dmin = tm_f32_to_f16(u(rng) * scale / 16.0f);
            } else {
                auto *b = reinterpret_cast<tm_block_q6_k *>(data.data()) + i;
                for (auto &s : b->scales) s = (int8_t)((int)(rng() % 64) - 32);
                b->d = tm_f32_to_f16(u(rng) * scale / 256.0f);
            }
        }
        return data;
    }
    std::vector<float> f = randn((size_t)n_cols, 0);
    for (int64_t r = 0; r < n_rows; r++) {
        f = randn((size_t)n_cols, seed * 7919u + (uint32_t)r, scale);
        EXPECT_EQ(tm_quantize_row(t, f.data(), data.data() + r * row_bytes, n_cols), 0) << tm_dtype_name(t);
    }
    return data;
}

struct Weight {
    tm_backend *be = nullptr;
    tm_weight w{};
    std::vector<uint8_t> src; // GGUF rows; the CPU may reference them in place
    Weight(tm_backend *b, tm_dtype t, int64_t rows, int64_t cols, const std::vector<uint8_t> &data) : be(b), src(data) {
        char err[256] = "";
        int rc = be->weight_init(be, &w, t, rows, cols, src.data(), err, sizeof err);
        EXPECT_EQ(rc, 0) << be->name << " weight_init " << tm_dtype_name(t) << ": " << err;
        if (rc) be = nullptr;
    }
    ~Weight() {
        if (be) be->weight_deinit(be, &w);
    }
};

// ---- the fixture --------------------------------------------------------------------

class Conformance : public ::testing::TestWithParam<BackendSpec> {
  protected:
    void SetUp() override {
        std::string why;
        be_.reset(GetParam().make(&why));
        if (!be_) GTEST_SKIP() << GetParam().name << " unavailable: " << why;
        char err[256] = "";
        ref_.reset(tm_backend_cpu_create(1, TM_SIMD_SCALAR, err, sizeof err));
        ASSERT_TRUE(ref_) << err;
    }
    // Waits for the backend and fails the test on an op error.
    void sync(tm_backend *be) {
        char err[512] = "";
        ASSERT_EQ(be->synchronize(be, err, sizeof err), 0) << be->name << ": " << err;
    }
    BackendPtr be_, ref_;
};

TEST_P(Conformance, RmsNorm) {
    const int shapes[][2] = {{1, 1}, {1, 7}, {3, 576}, {5, 1000}, {17, 4096}};
    for (auto &s : shapes) {
        const int n = s[0], dim = s[1];
        auto x = randn((size_t)n * dim, 11 + dim, 3.0f), w = randn((size_t)dim, 12 + dim);
        std::vector<float> want((size_t)n * dim);
        ref_->rmsnorm(ref_.get(), want.data(), x.data(), w.data(), n, dim, 1e-5f);
        auto dx = DevBuf::of(be_.get(), x), dw = DevBuf::of(be_.get(), w);
        auto out = DevBuf::poisoned(be_.get(), x.size());
        be_->rmsnorm(be_.get(), out->f(), dx->f(), dw->f(), n, dim, 1e-5f);
        be_->rmsnorm(be_.get(), dx->f(), dx->f(), dw->f(), n, dim, 1e-5f); // in place
        sync(be_.get());
        // f32 sums in another order (the reference sums in double)
        EXPECT_LT(rel_err(out->floats(), want), 1e-6) << n << "x" << dim;
        EXPECT_LT(rel_err(dx->floats(), want), 1e-6) << n << "x" << dim << " in place";
    }
}

// The fused residual step equals add then rmsnorm on the reference, including out == r
// (how the model calls it).
TEST_P(Conformance, AddRmsNormFused) {
    if (!be_->add_rmsnorm) GTEST_SKIP() << "no add_rmsnorm op";
    const int shapes[][2] = {{1, 7}, {3, 576}, {9, 4096}};
    for (auto &s : shapes) {
        const int n = s[0], dim = s[1];
        auto x = randn((size_t)n * dim, 91 + dim, 2.0f), r = randn((size_t)n * dim, 92 + dim), w = randn((size_t)dim, 93);
        std::vector<float> want_x((size_t)n * dim), want((size_t)n * dim);
        ref_->add(ref_.get(), want_x.data(), x.data(), r.data(), (int64_t)n * dim);
        ref_->rmsnorm(ref_.get(), want.data(), want_x.data(), w.data(), n, dim, 1e-5f);
        auto dx = DevBuf::of(be_.get(), x), dr = DevBuf::of(be_.get(), r), dw = DevBuf::of(be_.get(), w);
        auto out = DevBuf::poisoned(be_.get(), x.size());
        be_->add_rmsnorm(be_.get(), dx->f(), dr->f(), dw->f(), out->f(), n, dim, 1e-5f);
        auto dx2 = DevBuf::of(be_.get(), x);
        be_->add_rmsnorm(be_.get(), dx2->f(), dr->f(), dw->f(), dr->f(), n, dim, 1e-5f); // out aliases r
        sync(be_.get());
        EXPECT_EQ(rel_err(dx->floats(), want_x), 0.0) << n << "x" << dim; // one f32 add: exact
        EXPECT_LT(rel_err(out->floats(), want), 1e-6) << n << "x" << dim;
        EXPECT_EQ(rel_err(dx2->floats(), want_x), 0.0) << n << "x" << dim << " out == r";
        EXPECT_LT(rel_err(dr->floats(), want), 1e-6) << n << "x" << dim << " out == r";
    }
}

TEST_P(Conformance, AddAndSiluMul) {
    for (int64_t n : {1, 3, 1000, 1027, 65537}) {
        auto a = randn((size_t)n, 21 + (uint32_t)n, 4.0f), b = randn((size_t)n, 22 + (uint32_t)n, 4.0f);
        std::vector<float> sum((size_t)n), prod((size_t)n);
        ref_->add(ref_.get(), sum.data(), a.data(), b.data(), n);
        ref_->silu_mul(ref_.get(), prod.data(), a.data(), b.data(), n);
        auto da = DevBuf::of(be_.get(), a), db = DevBuf::of(be_.get(), b);
        auto o1 = DevBuf::poisoned(be_.get(), (size_t)n), o2 = DevBuf::poisoned(be_.get(), (size_t)n);
        be_->add(be_.get(), o1->f(), da->f(), db->f(), n);
        be_->silu_mul(be_.get(), o2->f(), da->f(), db->f(), n);
        be_->add(be_.get(), da->f(), da->f(), db->f(), n); // in place
        sync(be_.get());
        EXPECT_EQ(rel_err(o1->floats(), sum), 0.0) << "add n=" << n; // one rounding, exact everywhere
        EXPECT_EQ(rel_err(da->floats(), sum), 0.0) << "add in place n=" << n;
        EXPECT_LT(rel_err(o2->floats(), prod), 1e-6) << "silu_mul n=" << n; // expf's last bit
    }
}

// Gemma's ops: GELU (tanh form) times up, the embedding scale, soft-capped logits.
TEST_P(Conformance, GeluMulAndScale) {
    for (int64_t n : {1, 3, 1000, 1027, 65537}) {
        auto a = randn((size_t)n, 23 + (uint32_t)n, 4.0f), b = randn((size_t)n, 24 + (uint32_t)n, 4.0f);
        auto x = randn((size_t)n, 25 + (uint32_t)n, 30.0f);
        std::vector<float> prod((size_t)n), scaled((size_t)n), capped((size_t)n);
        ref_->gelu_mul(ref_.get(), prod.data(), a.data(), b.data(), n);
        ref_->scale(ref_.get(), scaled.data(), x.data(), n, 25.3f, 0.0f);
        ref_->scale(ref_.get(), capped.data(), x.data(), n, 1.0f, 30.0f);
        auto da = DevBuf::of(be_.get(), a), db = DevBuf::of(be_.get(), b), dx = DevBuf::of(be_.get(), x);
        auto o1 = DevBuf::poisoned(be_.get(), (size_t)n), o2 = DevBuf::poisoned(be_.get(), (size_t)n);
        auto o3 = DevBuf::poisoned(be_.get(), (size_t)n);
        be_->gelu_mul(be_.get(), o1->f(), da->f(), db->f(), n);
        be_->scale(be_.get(), o2->f(), dx->f(), n, 25.3f, 0.0f);
        be_->scale(be_.get(), o3->f(), dx->f(), n, 1.0f, 30.0f);
        be_->scale(be_.get(), dx->f(), dx->f(), n, 1.0f, 30.0f); // in place
        sync(be_.get());
        // GELU: tanhf or an exp-based sigmoid; relative to the whole vector
        EXPECT_LT(rel_err(o1->floats(), prod), 1e-6) << "gelu_mul n=" << n;
        EXPECT_EQ(rel_err(o2->floats(), scaled), 0.0) << "scale n=" << n; // one rounding
        EXPECT_LT(rel_err(o3->floats(), capped), 1e-6) << "softcap n=" << n;
        EXPECT_LT(rel_err(dx->floats(), capped), 1e-6) << "softcap in place n=" << n;
    }
}

TEST_P(Conformance, GetRows) {
    const int dim = 37, n_x = 11;
    auto x = randn((size_t)n_x * dim, 31);
    std::vector<int32_t> rows = {10, 0, 3, 3, 7};
    std::vector<float> want(rows.size() * dim);
    ref_->get_rows(ref_.get(), want.data(), x.data(), rows.data(), (int)rows.size(), dim);
    auto dx = DevBuf::of(be_.get(), x);
    auto out = DevBuf::poisoned(be_.get(), want.size());
    be_->get_rows(be_.get(), out->f(), dx->f(), rows.data(), (int)rows.size(), dim);
    sync(be_.get());
    EXPECT_EQ(rel_err(out->floats(), want), 0.0);
}

TEST_P(Conformance, ArgmaxRows) {
    if (!be_->argmax_rows) GTEST_SKIP() << "no argmax_rows op";
    for (int n_cols : {1, 5, 3000, 49152}) {
        const int n_rows = 6;
        std::vector<float> x = randn((size_t)n_rows * n_cols, 41 + n_cols);
        auto row = [&](int r) { return x.data() + (size_t)r * n_cols; };
        if (n_cols > 1) {
            row(1)[n_cols - 1] = row(1)[n_cols / 2] = 50.0f; // a tie: the lower column wins
            row(2)[0] = NAN;                                  // NaN never wins
            row(2)[n_cols - 1] = 60.0f;
        }
        std::fill(row(3), row(3) + n_cols, NAN);       // all NaN: 0
        std::fill(row(4), row(4) + n_cols, -INFINITY); // all -inf: the first
        row(5)[n_cols - 1] = INFINITY;
        std::vector<int32_t> want(n_rows);
        for (int r = 0; r < n_rows; r++) want[r] = tm_argmax(row(r), n_cols);
        auto dx = DevBuf::of(be_.get(), x);
        std::vector<int32_t> got(n_rows, -7);
        be_->argmax_rows(be_.get(), dx->f(), n_rows, n_cols, got.data());
        sync(be_.get());
        EXPECT_EQ(got, want) << "n_cols " << n_cols;
    }
}

// More rows than a grid's y or z dimension takes (65535): a step may ask for the logits of
// every token of a long prompt. Few columns keep it cheap.
TEST_P(Conformance, ArgmaxRowsManyRows) {
    if (!be_->argmax_rows) GTEST_SKIP() << "no argmax_rows op";
    const int n_rows = 70000, n_cols = 5;
    std::vector<float> x = randn((size_t)n_rows * n_cols, 43);
    std::vector<int32_t> want(n_rows);
    for (int r = 0; r < n_rows; r++) want[r] = tm_argmax(x.data() + (size_t)r * n_cols, n_cols);
    auto dx = DevBuf::of(be_.get(), x);
    std::vector<int32_t> got(n_rows, -7);
    be_->argmax_rows(be_.get(), dx->f(), n_rows, n_cols, got.data());
    sync(be_.get());
    EXPECT_EQ(got, want);
}

// Bound of ||out - ref|| / ||ref|| for a matmul of this weight type against the scalar
// reference, and why.
double matmul_bound(tm_dtype t) {
    switch (t) {
    case TM_DTYPE_F16: return 1e-3;  // the GPU rounds x to f16 for cuBLAS (measured 2.2e-4)
    case TM_DTYPE_BF16: return 1e-2; // and to bf16, 8 significant bits: 1.3e-3 to 1.7e-3 on
                                     // the larger shapes, 4.3e-3 on 7 outputs (few samples)
    default:
        // F32, and quantized weights: every backend quantizes x exactly as the reference
        // does (the same 8-bit blocks), so the integer dot products are equal and only the
        // order of the f32 sums differs (measured 0 to 1.2e-7).
        return 1e-5;
    }
}

TEST_P(Conformance, MatmulEveryTypeAndShape) {
    const tm_dtype types[] = {TM_DTYPE_F32,  TM_DTYPE_F16,  TM_DTYPE_BF16, TM_DTYPE_Q8_0, TM_DTYPE_Q4_0,
                              TM_DTYPE_Q4_1, TM_DTYPE_Q5_0, TM_DTYPE_Q5_1, TM_DTYPE_Q4_K, TM_DTYPE_Q5_K,
                              TM_DTYPE_Q6_K};
    // (rows, cols, tokens): odd row counts, 1 token, the decode sizes and a prefill tile.
    const int shapes[][3] = {{7, 256, 1}, {33, 512, 3}, {64, 256, 8}, {129, 512, 9}, {96, 768, 40}};
    for (tm_dtype t : types) {
        for (auto &s : shapes) {
            const int rows = s[0], cols = s[1], n = s[2];
            SCOPED_TRACE(std::string(tm_dtype_name(t)) + " " + std::to_string(rows) + "x" + std::to_string(cols) +
                         " n=" + std::to_string(n));
            auto data = random_weight(t, rows, cols, 100 + rows);
            auto x = randn((size_t)n * cols, 200 + n);
            auto bias = randn((size_t)rows, 300 + rows);
            Weight wr(ref_.get(), t, rows, cols, data), wb(be_.get(), t, rows, cols, data);
            if (!wb.be) continue;
            std::vector<float> want((size_t)n * rows), want_b((size_t)n * rows);
            ref_->matmul(ref_.get(), want.data(), x.data(), &wr.w, nullptr, n);
            ref_->matmul(ref_.get(), want_b.data(), x.data(), &wr.w, bias.data(), n);
            auto dx = DevBuf::of(be_.get(), x), db = DevBuf::of(be_.get(), bias);
            auto o1 = DevBuf::poisoned(be_.get(), want.size()), o2 = DevBuf::poisoned(be_.get(), want.size());
            be_->matmul(be_.get(), o1->f(), dx->f(), &wb.w, nullptr, n);
            be_->matmul(be_.get(), o2->f(), dx->f(), &wb.w, db->f(), n);
            sync(be_.get());
            const double bound = matmul_bound(t);
            const std::string what = std::string("matmul ") + tm_dtype_name(t) + " " + std::to_string(rows) + "x" +
                                     std::to_string(cols) + " n=" + std::to_string(n);
            EXPECT_LT(measured(be_->name, what, o1->floats(), want), bound);
            EXPECT_LT(rel_err(o2->floats(), want_b), bound) << "with bias";
        }
    }
}

TEST_P(Conformance, MatmulMultiEqualsMatmul) {
    if (!be_->matmul_multi) GTEST_SKIP() << "no matmul_multi op";
    const int cols = 512, n = 5, rows[3] = {64, 16, 16};
    auto x = randn((size_t)n * cols, 51);
    auto dx = DevBuf::of(be_.get(), x);
    for (tm_dtype t : {TM_DTYPE_Q4_1, TM_DTYPE_Q8_0, TM_DTYPE_F16}) {
        std::vector<std::unique_ptr<Weight>> ws;
        std::vector<std::unique_ptr<DevBuf>> single, multi;
        for (int k = 0; k < 3; k++) {
            ws.push_back(std::make_unique<Weight>(be_.get(), t, rows[k], cols, random_weight(t, rows[k], cols, 60 + k)));
            single.push_back(DevBuf::poisoned(be_.get(), (size_t)n * rows[k]));
            multi.push_back(DevBuf::poisoned(be_.get(), (size_t)n * rows[k]));
            be_->matmul(be_.get(), single[k]->f(), dx->f(), &ws[k]->w, nullptr, n);
        }
        float *const outs[] = {multi[0]->f(), multi[1]->f(), multi[2]->f()};
        const tm_weight *const wp[] = {&ws[0]->w, &ws[1]->w, &ws[2]->w};
        be_->matmul_multi(be_.get(), 3, outs, dx->f(), wp, nullptr, n);
        sync(be_.get());
        for (int k = 0; k < 3; k++) EXPECT_EQ(rel_err(multi[k]->floats(), single[k]->floats()), 0.0) << tm_dtype_name(t);
    }
}

TEST_P(Conformance, EmbedEveryType) {
    const int n_vocab = 19, dim = 512;
    std::vector<int32_t> ids = {0, 18, 5, 5, 11};
    for (tm_dtype t : {TM_DTYPE_F32, TM_DTYPE_F16, TM_DTYPE_BF16, TM_DTYPE_Q8_0, TM_DTYPE_Q4_0, TM_DTYPE_Q4_1,
                       TM_DTYPE_Q5_0, TM_DTYPE_Q5_1, TM_DTYPE_Q4_K, TM_DTYPE_Q5_K, TM_DTYPE_Q6_K}) {
        auto data = random_weight(t, n_vocab, dim, 70);
        Weight wr(ref_.get(), t, n_vocab, dim, data), wb(be_.get(), t, n_vocab, dim, data);
        if (!wb.be) continue;
        std::vector<float> want(ids.size() * dim);
        ref_->embed(ref_.get(), want.data(), &wr.w, ids.data(), (int)ids.size());
        auto out = DevBuf::poisoned(be_.get(), want.size());
        be_->embed(be_.get(), out->f(), &wb.w, ids.data(), (int)ids.size());
        sync(be_.get());
        EXPECT_LT(rel_err(out->floats(), want), 1e-7) << tm_dtype_name(t); // d * q products, maybe fused
    }
}

TEST_P(Conformance, RopeBothPairingsAndFactors) {
    const int n = 5, n_heads = 6, n_kv = 2, head_dim = 64;
    std::vector<int32_t> pos = {0, 1, 17, 4095, 100000};
    std::vector<float> factors(24);
    for (size_t i = 0; i < factors.size(); i++) factors[i] = 1.0f + 0.25f * (float)i;
    for (int neox : {0, 1})
        for (int n_dims : {64, 48})
            for (bool with_factors : {false, true}) {
                tm_rope r = {n_dims, neox, 500000.0f, 0.5f, with_factors && n_dims == 48 ? factors.data() : nullptr};
                auto q = randn((size_t)n * n_heads * head_dim, 81), k = randn((size_t)n * n_kv * head_dim, 82);
                std::vector<float> wq = q, wk = k;
                ref_->rope(ref_.get(), wq.data(), wk.data(), pos.data(), n, n_heads, n_kv, head_dim, &r);
                auto dq = DevBuf::of(be_.get(), q), dk = DevBuf::of(be_.get(), k);
                be_->rope(be_.get(), dq->f(), dk->f(), pos.data(), n, n_heads, n_kv, head_dim, &r);
                sync(be_.get());
                // float sin/cos of angles formed in double on both sides
                EXPECT_LT(rel_err(dq->floats(), wq), 1e-6) << "neox " << neox << " dims " << n_dims;
                EXPECT_LT(rel_err(dk->floats(), wk), 1e-6) << "neox " << neox << " dims " << n_dims;
            }
}

// ---- attention over a paged cache ----------------------------------------------------

// One sequence of a ragged batch: cached tokens already in the cache, new tokens this step.
struct SeqSpec {
    int cached, fresh;
};

// Builds a batch of seqs over pages handed out in a scattered order, stores the K/V of
// every position (the cached prefix in an earlier call, as a real prefix hit would have
// left it), and runs attention for the fresh tokens. Returns out (n_tokens, n_heads,
// head_dim).
std::vector<float> run_attention(tm_backend *be, const std::vector<SeqSpec> &seqs, int n_heads, int n_kv,
                                 int head_dim, int block_size, uint32_t seed, std::string *fail, int window = 0,
                                 float softcap = 0.0f) {
    const int n_seqs = (int)seqs.size();
    std::vector<tm_test::PagedSeq> layout;
    for (auto &s : seqs) layout.push_back({s.cached + s.fresh, s.fresh});
    const tm_test::PagedBatch pb(layout, block_size, 3, seed); // three pages nobody uses, poisoned below
    const int n_blocks = pb.n_blocks, n_tokens = pb.n_tokens;
    const int kvd = n_kv * head_dim, qd = n_heads * head_dim;

    tm_kv_shape shape = {1, n_blocks, block_size, n_kv, head_dim, TM_KV_F16};
    tm_kv_cache *kv = nullptr;
    if (be->kv_create(be, &shape, &kv, NULL, 0) != 0) {
        *fail = "kv_create failed";
        return {};
    }
    // Every position of every sequence, in two store calls: the cached prefixes first.
    for (int pass = 0; pass < 2; pass++) {
        std::vector<int32_t> slots;
        for (int s = 0; s < n_seqs; s++) {
            int lo = pass == 0 ? 0 : seqs[s].cached, hi = pass == 0 ? seqs[s].cached : pb.ctx_len[s];
            for (int p = lo; p < hi; p++) slots.push_back(pb.slot(s, p));
        }
        if (slots.empty()) continue;
        auto k = randn(slots.size() * kvd, seed + 10 + pass), v = randn(slots.size() * kvd, seed + 20 + pass);
        auto dk = DevBuf::of(be, k), dv = DevBuf::of(be, v);
        be->kv_store(be, kv, 0, dk->f(), dv->f(), slots.data(), (int)slots.size());
        char err[256] = "";
        if (be->synchronize(be, err, sizeof err)) *fail = err;
    }
    // The unused pages, and the slots past each sequence's end in its last page, hold NaN:
    // nothing may read them (0 * NaN is NaN).
    {
        std::vector<int32_t> slots;
        for (int b = n_blocks - 3; b < n_blocks; b++)
            for (int o = 0; o < block_size; o++) slots.push_back(pb.pages[b] * block_size + o);
        for (int s = 0; s < n_seqs; s++)
            for (int p = pb.ctx_len[s]; p % block_size; p++) slots.push_back(pb.slot(s, p));
        std::vector<float> nan(slots.size() * kvd, NAN);
        auto dn = DevBuf::of(be, nan);
        be->kv_store(be, kv, 0, dn->f(), dn->f(), slots.data(), (int)slots.size());
    }
    const tm_batch b = pb.batch();
    auto q = randn((size_t)n_tokens * qd, seed + 30);
    auto dq = DevBuf::of(be, q);
    auto out = DevBuf::poisoned(be, (size_t)n_tokens * qd);
    if (be->set_batch) be->set_batch(be, &b);
    be->attention(be, out->f(), dq->f(), kv, 0, &b, n_heads, 1.0f / std::sqrt((float)head_dim), window, softcap);
    char err[256] = "";
    if (be->synchronize(be, err, sizeof err)) *fail = err;
    std::vector<float> r = out->floats();
    be->kv_destroy(be, kv);
    return r;
}

TEST_P(Conformance, AttentionRaggedPagedBatch) {
    struct Case {
        const char *what;
        std::vector<SeqSpec> seqs;
        int n_heads, n_kv, head_dim;
        int window = 0;       // sliding window (Gemma's local layers)
        float softcap = 0.0f; // soft-capped scores (Gemma 2)
    };
    const bool slow = tm_test_sanitized();
    const std::vector<Case> cases = {
        {"one token", {{0, 1}}, 9, 3, 64},
        {"decodes", {{5, 1}, {16, 1}, {33, 1}, {100, 1}}, 9, 3, 64},
        {"prefill from empty", {{0, 37}}, 8, 2, 128},
        {"chunk after a cached prefix", {{48, 21}}, 8, 8, 64},
        {"ragged mix over scattered pages",
         {{0, 1}, {70, 1}, {16, 33}, {0, 17}, {250, 1}, {31, slow ? 9 : 40}, {300, 1}},
         28,
         4,
         128},
        {"long context decode", {{slow ? 600 : 2000, 1}, {1500, 1}}, 32, 8, 128},
        {"head dim 256", {{20, 5}, {9, 1}}, 4, 1, 256},
        {"sliding window 40", {{0, 1}, {70, 1}, {16, 33}, {250, 1}, {31, 40}, {300, 1}}, 8, 2, 64, 40},
        {"window 512, long decode", {{slow ? 600 : 2000, 1}, {700, 30}}, 4, 1, 256, 512},
        {"soft-capped scores", {{5, 1}, {100, 1}, {16, 33}}, 8, 2, 128, 0, 1.5f},
        {"window and soft-cap", {{100, 1}, {16, 33}, {250, 1}}, 8, 2, 64, 20, 1.5f},
    };
    for (const auto &c : cases) {
        std::string fail_ref, fail;
        auto want = run_attention(ref_.get(), c.seqs, c.n_heads, c.n_kv, c.head_dim, 16, 1234, &fail_ref, c.window,
                                  c.softcap);
        auto got = run_attention(be_.get(), c.seqs, c.n_heads, c.n_kv, c.head_dim, 16, 1234, &fail, c.window,
                                 c.softcap);
        ASSERT_EQ(fail_ref, "") << c.what;
        ASSERT_EQ(fail, "") << c.what;
        ASSERT_EQ(first_nan(want), -1) << c.what << ": the reference read a poisoned page";
        // Both caches hold the same f16 K/V; the GPU rounds q and the softmax weights to f16
        // for its tensor-core products (~1e-3), the CPU levels only sum in another order.
        const double bound = std::string(be_->name) == "cpu" ? 1e-5 : 1e-3;
        EXPECT_EQ(first_nan(got), -1) << c.what;
        EXPECT_LT(measured(be_->name, std::string("attention ") + c.what, got, want), bound) << c.what;
    }
}

// ---- stream discipline ---------------------------------------------------------------

// A device backend's ops only queue work, so the caller may refill the host arrays it
// passed while earlier ops have not run yet. run_queued_steps queues several steps through
// the same host arrays and synchronizes once at the end, after queueing work that keeps a
// GPU busy for a while (so that a copy that read a host array late would see a later
// step's values there). Returns every step's output in order.
std::vector<std::vector<float>> run_queued_steps(tm_backend *be, std::string *fail) {
    char err[512] = "";
    std::vector<std::vector<float>> results;
    const int dim = 64, n_x = 9;
    auto x = randn((size_t)n_x * dim, 51);
    auto dx = DevBuf::of(be, x);
    const int64_t n_busy = (int64_t)1 << 23; // 4 adds of 8M floats: ~0.2 ms on a GPU
    auto busy_a = DevBuf::of(be, std::vector<float>((size_t)n_busy, 1.0f));
    auto busy_b = DevBuf::of(be, std::vector<float>((size_t)n_busy, 1.0f));
    auto keep_busy = [&] {
        for (int i = 0; i < 4; i++) be->add(be, busy_a->f(), busy_a->f(), busy_b->f(), n_busy);
    };
    const std::vector<std::vector<int32_t>> picks = {{5, 1, 7}, {0, 8, 2}, {4, 4, 3}};
    std::vector<std::unique_ptr<DevBuf>> outs; // allocated up front: an allocation may wait for the device
    for (size_t i = 0; i < 2 * picks.size(); i++) outs.push_back(DevBuf::poisoned(be, 3 * (size_t)dim));

    // 1. an index array that is no step's own: each get_rows copies it
    std::vector<int32_t> rows(3);
    keep_busy();
    for (size_t i = 0; i < picks.size(); i++) {
        std::copy(picks[i].begin(), picks[i].end(), rows.begin());
        be->get_rows(be, outs[i]->f(), dx->f(), rows.data(), 3, dim);
    }
    // 2. the step's arrays (set_batch): the logit rows refilled in place for each step
    std::vector<int32_t> tokens(n_x, 0), pos(n_x), slots(n_x), seq_start = {0, n_x}, ctx = {n_x}, table = {0}, lr(3);
    std::iota(pos.begin(), pos.end(), 0);
    std::iota(slots.begin(), slots.end(), 0);
    tm_batch b = {n_x, 1, tokens.data(), pos.data(), seq_start.data(), ctx.data(), table.data(), 1, slots.data(), 3,
                  lr.data()};
    keep_busy();
    for (size_t i = 0; i < picks.size(); i++) {
        std::copy(picks[i].begin(), picks[i].end(), lr.begin());
        if (be->set_batch) be->set_batch(be, &b);
        be->get_rows(be, outs[picks.size() + i]->f(), dx->f(), b.logit_rows, 3, dim);
    }
    if (be->synchronize(be, err, sizeof err)) *fail = err;
    for (auto &o : outs) results.push_back(o->floats());

    // 3. attention decodes of two sequences through one tm_batch and its arrays; the long
    //    one is split across blocks (its partials and the step's plan are per step)
    const int n_heads = 4, n_kv = 2, hd = 64, bs = 16;
    const int lens[2] = {600, 10};
    const int pages0 = (lens[0] + bs - 1) / bs, n_blocks = pages0 + 1, max_blocks = pages0;
    std::vector<int32_t> tables((size_t)2 * max_blocks, -1);
    for (int p = 0; p < pages0; p++) tables[p] = n_blocks - 1 - p; // scattered: descending
    tables[max_blocks] = 0;
    tm_kv_shape shape = {1, n_blocks, bs, n_kv, hd, TM_KV_F16};
    tm_kv_cache *kv = nullptr;
    if (be->kv_create(be, &shape, &kv, err, sizeof err)) {
        *fail = err;
        return results;
    }
    std::vector<int32_t> all_slots;
    for (int s = 0; s < 2; s++)
        for (int p = 0; p < lens[s]; p++) all_slots.push_back(tables[(size_t)s * max_blocks + p / bs] * bs + p % bs);
    auto k = randn(all_slots.size() * n_kv * hd, 52), v = randn(all_slots.size() * n_kv * hd, 53);
    auto dk = DevBuf::of(be, k), dv = DevBuf::of(be, v);
    be->kv_store(be, kv, 0, dk->f(), dv->f(), all_slots.data(), (int)all_slots.size());
    const int steps[][2] = {{0, 599}, {1, 9}, {0, 300}, {1, 4}}; // (sequence, position)
    const int n_steps = 4;
    std::vector<std::unique_ptr<DevBuf>> qs, att;
    for (int i = 0; i < n_steps; i++) {
        qs.push_back(DevBuf::of(be, randn((size_t)n_heads * hd, 54 + (uint32_t)i)));
        att.push_back(DevBuf::poisoned(be, (size_t)n_heads * hd));
    }
    std::vector<int32_t> one_pos(1), one_slot(1), one_start = {0, 1}, one_ctx(1), one_table(max_blocks);
    tm_batch d = {1, 1, tokens.data(), one_pos.data(), one_start.data(), one_ctx.data(), one_table.data(), max_blocks,
                  one_slot.data(), 0, nullptr};
    keep_busy();
    for (int i = 0; i < n_steps; i++) {
        const int s = steps[i][0], p = steps[i][1];
        one_pos[0] = p;
        one_ctx[0] = p + 1;
        std::copy(tables.begin() + (size_t)s * max_blocks, tables.begin() + (size_t)(s + 1) * max_blocks,
                  one_table.begin());
        one_slot[0] = one_table[p / bs] * bs + p % bs;
        if (be->set_batch) be->set_batch(be, &d);
        be->attention(be, att[i]->f(), qs[i]->f(), kv, 0, &d, n_heads, 0.125f, 0, 0.0f);
    }
    if (be->synchronize(be, err, sizeof err)) *fail = err;
    for (auto &o : att) results.push_back(o->floats());
    be->kv_destroy(be, kv);
    return results;
}

TEST_P(Conformance, QueuedStepsReuseHostArrays) {
    std::string fail_ref, fail;
    auto want = run_queued_steps(ref_.get(), &fail_ref);
    auto got = run_queued_steps(be_.get(), &fail);
    ASSERT_EQ(fail_ref, "");
    ASSERT_EQ(fail, "");
    ASSERT_EQ(got.size(), want.size());
    ASSERT_EQ(want.size(), 10u);
    for (size_t i = 0; i < 6; i++) EXPECT_EQ(rel_err(got[i], want[i]), 0.0) << "get_rows step " << i;
    // attention: f16 q and softmax weights on the GPU (see AttentionRaggedPagedBatch)
    const double bound = std::string(be_->name) == "cpu" ? 1e-5 : 1e-3;
    for (size_t i = 6; i < 10; i++) {
        EXPECT_EQ(first_nan(got[i]), -1) << "attention step " << i - 6;
        EXPECT_LT(rel_err(got[i], want[i]), bound) << "attention step " << i - 6;
    }
}

// A set_batch whose index arrays do not fit in device memory fails with an error that
// names it, and the next step works (the staging buffers are not left half grown).
TEST_P(Conformance, SetBatchOutOfMemoryRecovers) {
    if (!be_->set_batch || !be_->memory_info) GTEST_SKIP() << "no device memory to exhaust";
    size_t free_b = 0, total_b = 0;
    ASSERT_EQ(be_->memory_info(be_.get(), &free_b, &total_b), 0);
    const int dim = 16, n_x = 5;
    auto x = randn((size_t)n_x * dim, 61);
    auto dx = DevBuf::of(be_.get(), x);
    std::vector<int32_t> tokens(n_x, 0), pos = {0, 1, 2, 3, 4}, slots = pos, start = {0, n_x}, ctx = {n_x},
                         table = {0}, lr = {4, 1};
    tm_batch b = {n_x, 1, tokens.data(), pos.data(), start.data(), ctx.data(), table.data(), 1, slots.data(), 2,
                  lr.data()};
    auto step = [&](const char *what) {
        auto out = DevBuf::poisoned(be_.get(), 2 * (size_t)dim);
        be_->set_batch(be_.get(), &b);
        be_->get_rows(be_.get(), out->f(), dx->f(), b.logit_rows, 2, dim);
        sync(be_.get());
        std::vector<float> want(x.begin() + 4 * dim, x.begin() + 5 * dim);
        want.insert(want.end(), x.begin() + dim, x.begin() + 2 * dim);
        EXPECT_EQ(rel_err(out->floats(), want), 0.0) << what;
    };
    step("before");
    // a block table of more int32s than the device has bytes / 4: its copy cannot be
    // allocated, so the host arrays are never read past their end
    const int n_seqs = 64;
    std::vector<int32_t> big_start(n_seqs + 1, 0), big_ctx(n_seqs, 0), big_table(1, 0);
    tm_batch big = b;
    big.n_seqs = n_seqs;
    big.seq_start = big_start.data();
    big.ctx_len = big_ctx.data();
    big.block_table = big_table.data();
    big.max_blocks = (int)std::min<size_t>(total_b / 4 / n_seqs + 1, INT32_MAX);
    ASSERT_GT((size_t)n_seqs * big.max_blocks * 4, total_b);
    be_->set_batch(be_.get(), &big);
    char err[512] = "";
    EXPECT_NE(be_->synchronize(be_.get(), err, sizeof err), 0);
    EXPECT_NE(std::string(err).find("set_batch"), std::string::npos) << err;
    step("after");
}

// ---- the whole model ----------------------------------------------------------------

// Two engine steps of a model on be, their logits in order: step 1 two prompts (9 and 20
// tokens), step 2 a decode of each and a third prompt, over scattered pages. open() makes
// the model on be (a file or a synthetic image).
void two_steps(tm_backend *be, const std::function<int(tm_backend *, tm_model **, char *, size_t)> &open,
               std::vector<float> *logits) {
    tm_model *m = nullptr;
    char e[512] = "";
    ASSERT_EQ(open(be, &m, e, sizeof e), 0) << e;
    tm_kv_cache *kv = nullptr;
    ASSERT_EQ(tm_model_kv_create(m, 8, 16, TM_KV_F16, &kv, NULL, 0), 0);
    const std::vector<int32_t> toks = {1, 504, 3458, 282, 4193, 314, 2997, 30, 216, 17, 42, 7, 9, 1000,
                                       2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 11000, 12000,
                                       13000, 14000, 15000, 16000};
    std::vector<int32_t> table = {0, 1, -1, 2, 3, -1, 4, -1, -1};
    auto slot = [&](int s, int p) { return table[(size_t)s * 3 + p / 16] * 16 + p % 16; };
    std::vector<int32_t> pos, slots, seq_start = {0, 9, 29}, ctx = {9, 20}, rows = {8, 28};
    for (int p = 0; p < 9; p++) pos.push_back(p), slots.push_back(slot(0, p));
    for (int p = 0; p < 20; p++) pos.push_back(p), slots.push_back(slot(1, p));
    tm_batch b = {29, 2, toks.data(), pos.data(), seq_start.data(), ctx.data(), table.data(), 3, slots.data(), 2,
                  rows.data()};
    std::vector<float> l1(2 * (size_t)tm_model_get_config(m)->n_vocab);
    ASSERT_EQ(tm_model_forward(m, kv, &b, l1.data(), e, sizeof e), 0) << e;
    const std::vector<int32_t> toks2 = {77, 88, 5, 6, 7};
    std::vector<int32_t> pos2 = {9, 20, 0, 1, 2}, slots2 = {slot(0, 9), slot(1, 20), slot(2, 0), slot(2, 1), slot(2, 2)};
    std::vector<int32_t> start2 = {0, 1, 2, 5}, ctx2 = {10, 21, 3}, rows2 = {0, 1, 4};
    tm_batch b2 = {5, 3, toks2.data(), pos2.data(), start2.data(), ctx2.data(), table.data(), 3, slots2.data(), 3,
                   rows2.data()};
    std::vector<float> l2(3 * (size_t)tm_model_get_config(m)->n_vocab);
    ASSERT_EQ(tm_model_forward(m, kv, &b2, l2.data(), e, sizeof e), 0) << e;
    logits->assign(l1.begin(), l1.end());
    logits->insert(logits->end(), l2.begin(), l2.end());
    tm_model_kv_destroy(m, kv);
    tm_model_destroy(m);
}

// The default model cut to 2 layers by our converter: a real forward pass (every op in its
// place) on a short ragged batch, logits against the CPU scalar reference.
TEST_P(Conformance, TwoLayerModelForward) {
    char path[512];
    tm_model_default_path(path, sizeof path);
    FILE *f = fopen(path, "rb");
    if (!f) GTEST_SKIP() << "default model not found at " << path << " (scripts/fetch-model)";
    fclose(f);
    const std::string cut = ::testing::TempDir() + "/conformance-2layers.gguf";
    char err[512] = "";
    ASSERT_EQ(tm_convert_file_layers(path, cut.c_str(), TM_DTYPE_Q4_1, 2, err, sizeof err), 0) << err;
    auto open = [&](tm_backend *be, tm_model **m, char *e, size_t n) {
        int rc = tm_model_load(cut.c_str(), be, m, e, n);
        if (!rc) {
            EXPECT_EQ(tm_model_get_config(*m)->n_layers, 2);
        }
        return rc;
    };
    std::vector<float> want, got;
    two_steps(ref_.get(), open, &want);
    two_steps(be_.get(), open, &got);
    ASSERT_EQ(want.size(), got.size());
    ASSERT_EQ(first_nan(want), -1);
    // 2 layers of Q4_1 matmuls with 8-bit activations. On the CPU levels a last-bit
    // difference in x (summation order) can flip the rounding of an 8-bit activation, which
    // the next layers carry on (measured 1.3e-3 for AVX2 and AVX-512 against scalar). The
    // GPU's matmuls form the same integers; it rounds q and the softmax weights to f16 in
    // attention (2e-4 per call), which the layers carry on the same way: 5.6e-3 measured.
    const double bound = std::string(be_->name) == "cpu" ? 5e-3 : 2e-2;
    EXPECT_LT(measured(be_->name, "2-layer model logits", got, want), bound);
    remove(cut.c_str());
}

// Every architecture's forward pass on this backend (synthetic F16 models, models/synth.h):
// Gemma 2 and 3 (GELU, post-norms, q/k norms, sliding windows of 4 keys over these 21-token
// sequences, soft-caps, the embedding scale), Phi-3 (fused tensors split into views at
// load). Qwen3's q/k norms are Gemma 3's.
// F16 rather than a quantized type: 8-bit activations turn a last-bit difference into a
// flipped rounding that the layers carry (Q8_0 measured 1.2e-2 for AVX2 against scalar on
// tiny-qwen3), and that noise would hide the small errors this test is for.
TEST_P(Conformance, SyntheticArchitecturesForward) {
    char path[512];
    tm_model_default_path(path, sizeof path);
    FILE *f = fopen(path, "rb");
    if (!f) GTEST_SKIP() << "no tokenizer for synthetic models: " << path << " (scripts/fetch-model)";
    fclose(f);
    // the reference's logits once per process: every backend's case compares with them
    static std::map<std::string, std::vector<float>> ref_logits;
    for (const char *preset : {"tiny-gemma2", "tiny-gemma3", "tiny-phi3"}) {
        SCOPED_TRACE(preset);
        auto open = [&](tm_backend *be, tm_model **m, char *e, size_t n) {
            tm_synth_options o;
            int rc = tm_synth_options_init(&o, preset, "f16", e, n);
            tm_gguf *g = nullptr;
            if (!rc) rc = tm_synth_build(&o, &g, e, n);
            if (!rc) rc = tm_model_load_gguf(g, preset, be, nullptr, nullptr, m, e, n);
            return rc;
        };
        std::vector<float> &want = ref_logits[preset], got;
        if (want.empty()) two_steps(ref_.get(), open, &want);
        two_steps(be_.get(), open, &got);
        ASSERT_EQ(want.size(), got.size());
        ASSERT_EQ(first_nan(want), -1);
        // measured: CPU levels 2.6e-5 to 5.9e-5 (the order of f32 sums); CUDA 4.3e-4 to
        // 7.3e-4 (cuBLAS rounds x to f16, attention rounds q and P to f16)
        const double bound = std::string(be_->name) == "cpu" ? 5e-4 : 5e-3;
        EXPECT_LT(measured(be_->name, std::string(preset) + " logits", got, want), bound);
    }
}

std::string backend_name(const ::testing::TestParamInfo<BackendSpec> &info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(AllBackends, Conformance, ::testing::ValuesIn(all_backends()), backend_name);

} // namespace

// CPU backend ops: the scalar reference against naive double-precision implementations
// written here, and every SIMD level this CPU supports against the scalar reference.
// Fresh random inputs from fixed seeds; outputs poisoned with NaN before each run.
//
// Tolerances (absolute unless said):
//   add, get_rows, embed(f32), kv_store: exact (bitwise)
//   rmsnorm:  scalar vs naive 2e-6 rel; SIMD vs scalar 1e-5 rel
//   silu_mul: scalar vs naive 1e-6 rel; SIMD vs scalar 1e-5 rel (polynomial exp)
//   rope:     scalar vs naive 2e-5; SIMD vs scalar 2e-6 (inputs in [-1, 1])
//   attention (V in [-1, 1], so outputs too): scalar vs naive 3e-5; SIMD vs scalar 3e-5;
//             a sequence alone vs inside a batch, and 1 vs 2 vs 3 threads: bitwise.
//             An int8 cache: the same, the naive reference reading the dequantized values
//             (keys, values and, as the kernels quantize them, queries).
//   int8 kv_store: the quantization rule exactly, the same bytes on every level.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"
}

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> randu(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
    std::mt19937 g(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto &x : v) x = d(g);
    return v;
}

// Rounds through f16 so that values stored in the KV cache are exact.
std::vector<float> f16_round(std::vector<float> v) {
    for (auto &x : v) x = tm_f16_to_f32(tm_f32_to_f16(x));
    return v;
}

// What an int8 cache holds for each vector of hd values of v: the rule of ops.h
// (scale = max|x| / 127, q = nearest-even(x * (1 / scale))), written out here, and the
// values it stands for (scale * q).
struct Int8Rows {
    std::vector<int8_t> q;
    std::vector<float> scale, deq;
};
Int8Rows int8_round(const std::vector<float> &v, int hd) {
    Int8Rows r;
    r.q.resize(v.size());
    r.deq.resize(v.size());
    for (size_t i0 = 0; i0 < v.size(); i0 += hd) {
        float amax = 0;
        for (int i = 0; i < hd; i++) amax = std::max(amax, std::fabs(v[i0 + i]));
        const float d = amax / 127.0f, id = d != 0.0f && 1.0f / d < INFINITY ? 1.0f / d : 0.0f;
        for (int i = 0; i < hd; i++) {
            r.q[i0 + i] = (int8_t)std::nearbyint(v[i0 + i] * id);
            r.deq[i0 + i] = d * r.q[i0 + i];
        }
        r.scale.push_back(d);
    }
    return r;
}

// got vs want: |got - want| <= abs_tol + rel_tol * |want|, and got is never NaN.
::testing::AssertionResult close(const std::vector<float> &got, const std::vector<float> &want,
                                 double abs_tol, double rel_tol) {
    if (got.size() != want.size()) return ::testing::AssertionFailure() << "size mismatch";
    size_t bad = 0, first = 0;
    double worst = 0;
    for (size_t i = 0; i < got.size(); i++) {
        double err = std::fabs((double)got[i] - want[i]);
        bool ok = !std::isnan(got[i]) && err <= abs_tol + rel_tol * std::fabs((double)want[i]);
        if (!ok && bad++ == 0) first = i;
        if (!std::isnan(err)) worst = std::max(worst, err);
    }
    if (bad == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << bad << " of " << got.size() << " off; first at " << first
                                         << ": got " << got[first] << " want " << want[first]
                                         << " (max abs err " << worst << ")";
}

bool bitwise_equal(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// SIMD levels this CPU and build support (scalar first).
std::vector<int> levels() {
    std::vector<int> v;
    for (int l : {(int)TM_SIMD_SCALAR, (int)TM_SIMD_AVX2, (int)TM_SIMD_AVX512VNNI, (int)TM_SIMD_NEON})
        if (tm_simd_supported(l)) v.push_back(l);
    return v;
}

struct Backend {
    tm_backend *be = nullptr;
    Backend(int n_threads, int simd) {
        char err[256] = "";
        be = tm_backend_cpu_create(n_threads, simd, err, sizeof err);
        EXPECT_NE(be, nullptr) << err;
    }
    ~Backend() {
        if (be) be->destroy(be);
    }
    // Host vectors in and out of backend buffers (the CPU backend's are host memory, but
    // going through alloc/upload/download keeps the tests honest about the interface).
    float *up(const std::vector<float> &v) {
        float *p = (float *)be->alloc(be, v.size() * sizeof(float) + 4);
        be->upload(be, p, v.data(), v.size() * sizeof(float));
        return p;
    }
    std::vector<float> down(const float *p, size_t n) {
        std::vector<float> v(n);
        be->download(be, v.data(), p, n * sizeof(float));
        return v;
    }
    float *poisoned(size_t n) { return up(std::vector<float>(n, kNaN)); }
};

// argmax_rows is the greedy pick of models/sampler.c (tm_argmax): the lowest column of the
// largest value, NaN never wins, an all-NaN row gives 0. Rows are split over the threads by
// columns, so ties and NaN sit on both sides of a split.
TEST(CpuBackend, ArgmaxRowsIsTheLowestColumnOfTheMax) {
    const auto reference = [](const float *x, int n) {
        int at = -1;
        for (int i = 0; i < n; i++)
            if (!std::isnan(x[i]) && (at < 0 || x[i] > x[at])) at = i;
        return at < 0 ? 0 : at;
    };
    for (int n_cols : {1, 5, 16, 37, 100, 49152}) {
        std::vector<std::vector<float>> rows;
        for (uint32_t s = 0; s < 3; s++) rows.push_back(randu((size_t)n_cols, 900 + s, -5.0f, 5.0f));
        std::vector<float> tie = randu((size_t)n_cols, 910, -5.0f, 5.0f);
        tie[n_cols - 1] = 9.0f, tie[n_cols / 2] = 9.0f, tie[n_cols / 3] = 9.0f; // the lowest wins
        rows.push_back(tie);
        std::vector<float> nans = randu((size_t)n_cols, 911, -5.0f, 5.0f);
        for (int i = 0; i < n_cols; i += 3) nans[i] = kNaN;
        rows.push_back(nans);
        rows.push_back(std::vector<float>(n_cols, -INFINITY));
        rows.push_back(std::vector<float>(n_cols, kNaN));
        std::vector<float> late(n_cols, kNaN);
        late[n_cols - 1] = -INFINITY; // NaN everywhere but a -inf at the end
        rows.push_back(late);
        std::vector<float> x;
        for (auto &r : rows) x.insert(x.end(), r.begin(), r.end());
        const int n_rows = (int)rows.size();
        for (int threads : {1, 2, 3}) {
            Backend b(threads, tm_simd_detect());
            ASSERT_NE(b.be->argmax_rows, nullptr);
            std::vector<int32_t> got(n_rows + 1, -7);
            b.be->argmax_rows(b.be, x.data(), n_rows, n_cols, got.data());
            for (int r = 0; r < n_rows; r++)
                EXPECT_EQ(got[r], reference(rows[r].data(), n_cols)) << n_cols << " cols, row " << r << ", " << threads << " threads";
            EXPECT_EQ(got[n_rows], -7) << "wrote past the rows";
        }
    }
}

TEST(CpuBackend, CreateLevels) {
    char err[256];
    tm_backend *be = tm_backend_cpu_create(2, TM_SIMD_AUTO, err, sizeof err);
    ASSERT_NE(be, nullptr) << err;
    EXPECT_STREQ(be->name, "cpu");
    be->destroy(be);
    for (int l : {(int)TM_SIMD_SCALAR, (int)TM_SIMD_AVX2, (int)TM_SIMD_AVX512VNNI, (int)TM_SIMD_NEON, 7, -5}) {
        err[0] = 0;
        be = tm_backend_cpu_create(1, l, err, sizeof err);
        bool supported = l >= TM_SIMD_SCALAR && l <= TM_SIMD_NEON && tm_simd_supported(l);
        EXPECT_EQ(be != nullptr, supported) << "level " << l;
        if (be) be->destroy(be);
        else EXPECT_NE(err[0], 0) << "level " << l << ": no error message";
    }
}

// ------------------------------------------------------------------ elementwise ops

TEST(CpuOps, Add) {
    for (int64_t n : {1, 7, 16, 100, 20000, 100003}) {
        auto a = randu(n, 1 + n), b = randu(n, 2 + n);
        std::vector<float> want(n);
        for (int64_t i = 0; i < n; i++) want[i] = a[i] + b[i];
        for (int l : levels()) {
            Backend B(2, l);
            float *pa = B.up(a), *pb = B.up(b), *po = B.poisoned(n);
            B.be->add(B.be, po, pa, pb, n);
            EXPECT_TRUE(bitwise_equal(B.down(po, n), want)) << "n=" << n << " level " << l;
            B.be->add(B.be, pa, pa, pb, n); // out aliases a
            EXPECT_TRUE(bitwise_equal(B.down(pa, n), want)) << "aliased, n=" << n << " level " << l;
            B.be->free(B.be, pa), B.be->free(B.be, pb), B.be->free(B.be, po);
        }
    }
}

TEST(CpuOps, SiluMul) {
    for (int64_t n : {1, 9, 64, 1000, 50001}) {
        auto g = randu(n, 10 + n, -12.0f, 12.0f), u = randu(n, 20 + n);
        if (n > 4) g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f, g[3] = -87.5f;
        std::vector<float> naive(n), ref;
        for (int64_t i = 0; i < n; i++) naive[i] = (float)(g[i] / (1.0 + std::exp(-(double)g[i])) * u[i]);
        for (int l : levels()) {
            Backend B(2, l);
            float *pg = B.up(g), *pu = B.up(u), *po = B.poisoned(n);
            B.be->silu_mul(B.be, po, pg, pu, n);
            auto got = B.down(po, n);
            if (l == TM_SIMD_SCALAR) {
                EXPECT_TRUE(close(got, naive, 1e-30, 1e-6)) << "n=" << n;
                ref = got;
            } else {
                EXPECT_TRUE(close(got, ref, 1e-30, 1e-5)) << "n=" << n << " level " << l;
            }
            B.be->silu_mul(B.be, pu, pg, pu, n); // out aliases up
            EXPECT_TRUE(bitwise_equal(B.down(pu, n), got)) << "aliased, level " << l;
            B.be->free(B.be, pg), B.be->free(B.be, pu), B.be->free(B.be, po);
        }
    }
}

TEST(CpuOps, Rmsnorm) {
    const float eps = 1e-5f;
    for (int dim : {1, 7, 64, 576, 4099}) {
        for (int n : {1, 3, 40}) {
            auto x = randu((size_t)n * dim, dim * 31 + n, -3.0f, 3.0f), w = randu(dim, dim + 5);
            std::vector<float> naive((size_t)n * dim), ref;
            for (int r = 0; r < n; r++) {
                double ss = 0;
                for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
                double s = 1.0 / std::sqrt(ss / dim + eps);
                for (int i = 0; i < dim; i++) naive[r * dim + i] = (float)(x[r * dim + i] * s * w[i]);
            }
            for (int l : levels()) {
                Backend B(2, l);
                float *px = B.up(x), *pw = B.up(w), *po = B.poisoned(x.size());
                B.be->rmsnorm(B.be, po, px, pw, n, dim, eps);
                auto got = B.down(po, x.size());
                if (l == TM_SIMD_SCALAR) {
                    EXPECT_TRUE(close(got, naive, 1e-7, 2e-6)) << "dim=" << dim << " n=" << n;
                    ref = got;
                } else {
                    EXPECT_TRUE(close(got, ref, 1e-7, 1e-5)) << "dim=" << dim << " n=" << n << " level " << l;
                }
                B.be->rmsnorm(B.be, px, px, pw, n, dim, eps); // in place
                EXPECT_TRUE(bitwise_equal(B.down(px, x.size()), got)) << "in place, level " << l;
                B.be->free(B.be, px), B.be->free(B.be, pw), B.be->free(B.be, po);
            }
        }
    }
}

TEST(CpuOps, GetRows) {
    const int dim = 37, n_src = 50;
    auto x = randu((size_t)n_src * dim, 77);
    std::vector<int32_t> rows = {49, 0, 3, 3, 17};
    Backend B(2, TM_SIMD_AUTO);
    float *px = B.up(x), *po = B.poisoned(rows.size() * dim);
    B.be->get_rows(B.be, po, px, rows.data(), (int)rows.size(), dim);
    auto got = B.down(po, rows.size() * dim);
    std::vector<float> want;
    for (int r : rows) want.insert(want.end(), x.begin() + (size_t)r * dim, x.begin() + (size_t)(r + 1) * dim);
    EXPECT_TRUE(bitwise_equal(got, want));
    B.be->free(B.be, px), B.be->free(B.be, po);
}

TEST(CpuOps, EmbedF32AndF16) {
    const int n_vocab = 40, dim = 64;
    auto table = randu((size_t)n_vocab * dim, 99);
    std::vector<uint16_t> table16(table.size());
    for (size_t i = 0; i < table.size(); i++) table16[i] = tm_f32_to_f16(table[i]);
    std::vector<int32_t> ids = {5, 39, 0, 5, 12, 7};
    for (int l : levels()) {
        Backend B(2, l);
        for (int f16 = 0; f16 < 2; f16++) {
            tm_weight w;
            char err[256] = "";
            int rc = B.be->weight_init(B.be, &w, f16 ? TM_DTYPE_F16 : TM_DTYPE_F32, n_vocab, dim,
                                       f16 ? (const void *)table16.data() : (const void *)table.data(),
                                       err, sizeof err);
            ASSERT_EQ(rc, 0) << err;
            float *po = B.poisoned(ids.size() * dim);
            B.be->embed(B.be, po, &w, ids.data(), (int)ids.size());
            auto got = B.down(po, ids.size() * dim);
            std::vector<float> want;
            for (int id : ids)
                for (int i = 0; i < dim; i++)
                    want.push_back(f16 ? tm_f16_to_f32(table16[(size_t)id * dim + i]) : table[(size_t)id * dim + i]);
            EXPECT_TRUE(bitwise_equal(got, want)) << "f16=" << f16 << " level " << l;
            B.be->weight_deinit(B.be, &w);
            B.be->free(B.be, po);
        }
    }
}

// ------------------------------------------------------------------ rope

struct RopeCase {
    int head_dim, n_dims, neox;
    float theta, freq_scale;
    bool factors;
};

TEST(CpuOps, Rope) {
    const int n_heads = 5, n_kv_heads = 2;
    const RopeCase cases[] = {
        {64, 64, 0, 10000.0f, 1.0f, false},   {64, 64, 1, 10000.0f, 1.0f, false},
        {128, 128, 0, 500000.0f, 1.0f, true}, {128, 96, 1, 1000000.0f, 0.25f, false},
        {64, 32, 0, 10000.0f, 0.5f, true},    {80, 40, 1, 10000.0f, 1.0f, true},
        {48, 24, 0, 10000.0f, 1.0f, false},   {36, 20, 0, 10000.0f, 1.0f, false},
        {36, 20, 1, 10000.0f, 1.0f, true}, // n_dims not a multiple of the vector width
    };
    for (const RopeCase &c : cases) {
        SCOPED_TRACE("head_dim " + std::to_string(c.head_dim) + " n_dims " + std::to_string(c.n_dims) +
                     " neox " + std::to_string(c.neox));
        std::vector<int32_t> pos = {0, 1, 2, 15, 16, 17, 999, 4095, 70000};
        const int n = (int)pos.size();
        auto q = randu((size_t)n * n_heads * c.head_dim, c.head_dim + c.n_dims);
        auto k = randu((size_t)n * n_kv_heads * c.head_dim, c.head_dim * 7 + c.n_dims);
        auto ff = randu(c.n_dims / 2, 5, 1.0f, 8.0f);
        tm_rope rope = {c.n_dims, c.neox, c.theta, c.freq_scale, c.factors ? ff.data() : nullptr};

        auto naive = [&](std::vector<float> x, int nh) {
            for (int t = 0; t < n; t++)
                for (int h = 0; h < nh; h++) {
                    float *xh = &x[((size_t)t * nh + h) * c.head_dim];
                    for (int i = 0; i < c.n_dims / 2; i++) {
                        double f = std::pow((double)c.theta, -2.0 * i / c.n_dims) * c.freq_scale;
                        if (c.factors) f /= ff[i];
                        double a = pos[t] * f, cs = std::cos(a), sn = std::sin(a);
                        int i0 = c.neox ? i : 2 * i, i1 = c.neox ? i + c.n_dims / 2 : 2 * i + 1;
                        double x0 = xh[i0], x1 = xh[i1];
                        xh[i0] = (float)(x0 * cs - x1 * sn);
                        xh[i1] = (float)(x0 * sn + x1 * cs);
                    }
                }
            return x;
        };
        auto nq = naive(q, n_heads), nk = naive(k, n_kv_heads);
        std::vector<float> rq, rk;
        for (int l : levels()) {
            Backend B(2, l);
            float *pq = B.up(q), *pk = B.up(k);
            B.be->rope(B.be, pq, pk, pos.data(), n, n_heads, n_kv_heads, c.head_dim, &rope);
            auto gq = B.down(pq, q.size()), gk = B.down(pk, k.size());
            // dims past n_dims are never touched
            for (size_t i = 0; i < q.size(); i++)
                if ((int)(i % c.head_dim) >= c.n_dims) {
                    ASSERT_EQ(gq[i], q[i]) << "unrotated dim changed at " << i;
                }
            if (l == TM_SIMD_SCALAR) {
                EXPECT_TRUE(close(gq, nq, 2e-5, 0));
                EXPECT_TRUE(close(gk, nk, 2e-5, 0));
                rq = gq, rk = gk;
            } else {
                EXPECT_TRUE(close(gq, rq, 2e-6, 0)) << "level " << l;
                EXPECT_TRUE(close(gk, rk, 2e-6, 0)) << "level " << l;
            }
            B.be->free(B.be, pq), B.be->free(B.be, pk);
        }
    }
}

// The backend keeps the sin/cos tables of the last call for the next layers of a step:
// a call must give the bits a fresh backend gives, whatever calls came before it.
TEST(CpuOps, RopeTablesFollowPositionsAndFrequencies) {
    const int n_heads = 3, n_kv_heads = 1, head_dim = 64;
    std::vector<int32_t> pa = {5, 6, 7, 200}, pb = {5, 6, 8, 200};
    auto ff = randu(32, 9, 1.0f, 8.0f);
    const tm_rope r1 = {64, 0, 10000.0f, 1.0f, nullptr}, r2 = {64, 0, 500000.0f, 1.0f, nullptr};
    const tm_rope r3 = {64, 0, 10000.0f, 0.5f, nullptr}, r4 = {32, 0, 10000.0f, 1.0f, ff.data()};
    struct Call { const std::vector<int32_t> *pos; int n; const tm_rope *rope; };
    // each change of one thing: positions, theta, freq_scale, n, n_dims and factors
    const Call calls[] = {{&pa, 4, &r1}, {&pa, 4, &r1}, {&pb, 4, &r1}, {&pa, 4, &r1}, {&pa, 4, &r2},
                          {&pa, 4, &r1}, {&pa, 4, &r3}, {&pa, 3, &r3}, {&pa, 4, &r4}, {&pa, 4, &r4},
                          {&pa, 1, &r4}};
    auto q = randu((size_t)4 * n_heads * head_dim, 31), k = randu((size_t)4 * n_kv_heads * head_dim, 32);
    const size_t n_calls = sizeof calls / sizeof calls[0];
    for (int l : levels()) {
        Backend warm(2, l);
        for (size_t c = 0; c <= n_calls; c++) {
            SCOPED_TRACE("level " + std::to_string(l) + " call " + std::to_string(c));
            // the last call: the same factors array as the one before, with new contents
            if (c == n_calls) ff[3] *= 2.0f;
            const Call &cl = c < n_calls ? calls[c] : calls[n_calls - 1];
            Backend fresh(2, l);
            std::vector<float> got[2], want[2];
            for (int b = 0; b < 2; b++) {
                Backend &B = b ? fresh : warm;
                float *pq = B.up(q), *pk = B.up(k);
                B.be->rope(B.be, pq, pk, cl.pos->data(), cl.n, n_heads, n_kv_heads, head_dim, cl.rope);
                (b ? want : got)[0] = B.down(pq, q.size()), (b ? want : got)[1] = B.down(pk, k.size());
                B.be->free(B.be, pq), B.be->free(B.be, pk);
            }
            EXPECT_TRUE(bitwise_equal(got[0], want[0]));
            EXPECT_TRUE(bitwise_equal(got[1], want[1]));
        }
    }
}

// ------------------------------------------------------------------ kv_store

TEST(CpuOps, KvStoreLayout) {
    tm_kv_shape shape = {3, 10, 16, 2, 64, TM_KV_F16};
    const int n = 40, layer = 1, hd = shape.head_dim, nkv = shape.n_kv_heads;
    auto k = randu((size_t)n * nkv * hd, 3), v = randu((size_t)n * nkv * hd, 4);
    std::vector<int32_t> slots(n);
    std::mt19937 g(5);
    std::vector<int32_t> all(shape.n_blocks * shape.block_size);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), g);
    for (int t = 0; t < n; t++) slots[t] = t % 7 == 3 ? -1 : all[t]; // some padding slots
    for (int l : levels()) {
        Backend B(2, l);
        tm_kv_cache *kv = nullptr;
        ASSERT_EQ(B.be->kv_create(B.be, &shape, &kv), 0);
        float *pk = B.up(k), *pv = B.up(v);
        B.be->kv_store(B.be, kv, layer, pk, pv, slots.data(), n);
        // The documented layout (ops.h), f16: K dim-major in the page,
        // (n_layers, n_blocks, n_kv_heads, head_dim, block_size), so key `off`, dim d of a
        // page is at d * block_size + off; V key-major, (..., block_size, head_dim).
        const int bs = shape.block_size;
        std::vector<uint16_t> want_k((size_t)shape.n_layers * shape.n_blocks * nkv * bs * hd, 0);
        std::vector<uint16_t> want_v(want_k.size(), 0);
        for (int t = 0; t < n; t++) {
            if (slots[t] < 0) continue;
            int blk = slots[t] / bs, off = slots[t] % bs;
            for (int h = 0; h < nkv; h++)
                for (int d = 0; d < hd; d++) {
                    size_t tile = (((size_t)layer * shape.n_blocks + blk) * nkv + h) * bs * hd;
                    want_k[tile + (size_t)d * bs + off] = tm_f32_to_f16(k[((size_t)t * nkv + h) * hd + d]);
                    want_v[tile + (size_t)off * hd + d] = tm_f32_to_f16(v[((size_t)t * nkv + h) * hd + d]);
                }
        }
        EXPECT_EQ(0, std::memcmp(kv->k, want_k.data(), want_k.size() * 2)) << "level " << l;
        EXPECT_EQ(0, std::memcmp(kv->v, want_v.data(), want_v.size() * 2)) << "level " << l;
        B.be->kv_destroy(B.be, kv);
        B.be->free(B.be, pk), B.be->free(B.be, pv);
    }
}

TEST(CpuOps, KvStoreInt8Layout) {
    tm_kv_shape shape = {3, 10, 16, 2, 64, TM_KV_INT8};
    const int n = 40, layer = 1, hd = shape.head_dim, nkv = shape.n_kv_heads, bs = shape.block_size;
    auto k = randu((size_t)n * nkv * hd, 13, -3.0f, 3.0f), v = randu((size_t)n * nkv * hd, 14);
    for (int i = 0; i < hd; i++) k[(size_t)5 * hd + i] = 0.0f; // an all-zero vector: scale 0, q 0
    std::vector<int32_t> slots(n);
    std::mt19937 g(15);
    std::vector<int32_t> all(shape.n_blocks * bs);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), g);
    for (int t = 0; t < n; t++) slots[t] = t % 7 == 3 ? -1 : all[t];
    const Int8Rows kq = int8_round(k, hd), vq = int8_round(v, hd);
    // The documented layout (ops.h, backend.h): tiles of tm_kv_tile_bytes in the f16
    // order; inside, K as u8 (q + 128) in groups of 4 dims, (head_dim / 4, block_size, 4),
    // V key-major s8, and the block_size scales after the values.
    const size_t tile_bytes = tm_kv_tile_bytes(&shape), scale_off = tm_kv_tile_scale_offset(&shape);
    ASSERT_EQ(tile_bytes, 1088u); // 1024 values + 16 scales, each padded to 64 bytes
    const size_t total = (size_t)shape.n_layers * shape.n_blocks * nkv * tile_bytes;
    std::vector<uint8_t> want_k(total, 0), want_v(total, 0);
    for (int t = 0; t < n; t++) {
        if (slots[t] < 0) continue;
        int blk = slots[t] / bs, off = slots[t] % bs;
        for (int h = 0; h < nkv; h++) {
            const size_t tile = (((size_t)layer * shape.n_blocks + blk) * nkv + h) * tile_bytes;
            const size_t src = ((size_t)t * nkv + h) * hd;
            for (int d = 0; d < hd; d++) {
                want_k[tile + (size_t)(d / 4) * bs * 4 + 4 * off + d % 4] = (uint8_t)(kq.q[src + d] + 128);
                want_v[tile + (size_t)off * hd + d] = (uint8_t)vq.q[src + d];
            }
            std::memcpy(&want_k[tile + scale_off + 4 * off], &kq.scale[src / hd], 4);
            std::memcpy(&want_v[tile + scale_off + 4 * off], &vq.scale[src / hd], 4);
        }
    }
    for (int l : levels()) {
        Backend B(2, l);
        tm_kv_cache *kv = nullptr;
        ASSERT_EQ(B.be->kv_create(B.be, &shape, &kv), 0);
        ASSERT_EQ(kv->k, nullptr); // no f16 arrays
        float *pk = B.up(k), *pv = B.up(v);
        B.be->kv_store(B.be, kv, layer, pk, pv, slots.data(), n);
        EXPECT_EQ(0, std::memcmp(kv->k8, want_k.data(), total)) << "level " << l;
        EXPECT_EQ(0, std::memcmp(kv->v8, want_v.data(), total)) << "level " << l;
        B.be->kv_destroy(B.be, kv);
        B.be->free(B.be, pk), B.be->free(B.be, pv);
    }
}

TEST(CpuOps, KvInt8RefusesShapesItCannotHold) {
    Backend B(1, TM_SIMD_SCALAR);
    tm_kv_cache *kv = nullptr;
    for (int hd : {30, 1028}) { // not a multiple of 4; past TM_KV_INT8_MAX_HEAD_DIM
        tm_kv_shape shape = {1, 4, 16, 1, hd, TM_KV_INT8};
        EXPECT_EQ(B.be->kv_create(B.be, &shape, &kv), TM_EINVAL) << hd;
    }
    tm_kv_shape bad_dtype = {1, 4, 16, 1, 64, (tm_kv_dtype)5};
    EXPECT_EQ(B.be->kv_create(B.be, &bad_dtype, &kv), TM_EINVAL);
}

TEST(CpuOps, KvInt8QuantizeRoundTrip) {
    // Within half a step of each value; the largest magnitude maps to +-127 exactly.
    auto x = randu(64, 21, -50.0f, 50.0f);
    int8_t q[64];
    float d = 0;
    tm_cpu_kv_quantize(x.data(), 64, q, &d);
    float amax = 0;
    int qmax = 0;
    for (int i = 0; i < 64; i++) {
        amax = std::max(amax, std::fabs(x[i]));
        qmax = std::max(qmax, std::abs((int)q[i]));
        EXPECT_LE(std::fabs(d * q[i] - x[i]), 0.5f * d * 1.0001f) << i;
    }
    EXPECT_EQ(d, amax / 127.0f);
    EXPECT_EQ(qmax, 127);
    // A NaN or an inf in the vector poisons its scale (reads give NaN, as with f16).
    for (float bad : {kNaN, std::numeric_limits<float>::infinity()}) {
        auto y = x;
        y[7] = bad;
        tm_cpu_kv_quantize(y.data(), 64, q, &d);
        EXPECT_TRUE(std::isnan(d)) << bad;
    }
}

TEST(CpuOps, KvInt8QuantizeSameBytesOnEveryLevel) {
    // Lengths with and without a SIMD tail, halfway values (x * (1 / scale) = k + 0.5 after
    // rounding), zeros, NaN and inf.
    std::vector<std::vector<float>> cases;
    for (int n : {8, 16, 24, 40, 64, 128, 7}) cases.push_back(randu((size_t)n, 30 + n, -4.0f, 4.0f));
    std::vector<float> half(64);
    for (int i = 0; i < 64; i++) half[i] = (float)(i - 32) + 0.5f; // amax 31.5: id 127 / 31.5
    half[0] = 127.0f / 4, half[1] = -127.0f / 8;
    cases.push_back(half);
    cases.push_back(std::vector<float>(64, 0.0f));
    auto nan = randu(64, 40), inf = randu(64, 41);
    nan[63] = kNaN, inf[0] = -std::numeric_limits<float>::infinity();
    cases.push_back(nan), cases.push_back(inf);
    for (float tiny : {1e-38f, 3e-37f, 1e-40f, 1e-45f}) { // 1 / scale overflows: all zeros
        auto t = randu(64, 42);
        for (auto &v : t) v *= tiny;
        t[5] = tiny;
        cases.push_back(t);
    }
    for (int l : levels()) {
        const tm_cpu_kernels *k = tm_cpu_kernels_get(l);
        ASSERT_NE(k, nullptr);
        for (size_t c = 0; c < cases.size(); c++) {
            const int n = (int)cases[c].size();
            std::vector<int8_t> want(n), got(n, 99);
            float dw = 0, dg = 1;
            tm_cpu_kv_quantize(cases[c].data(), n, want.data(), &dw);
            k->kv_quantize(cases[c].data(), n, got.data(), &dg);
            EXPECT_EQ(want, got) << "level " << l << " case " << c;
            EXPECT_EQ(0, std::memcmp(&dw, &dg, 4)) << "level " << l << " case " << c;
        }
    }
}

// ------------------------------------------------------------------ attention

struct Seq {
    int ctx, q_len; // context after the step; new tokens (the last q_len positions)
};

struct AttnCase {
    int n_kv_heads, group, head_dim, block_size;
    std::vector<Seq> seqs;
    uint32_t seed;
    tm_kv_dtype dtype = TM_KV_F16;
};

// Everything one attention call needs, with dense per-sequence K/V for the naive reference.
struct AttnData {
    AttnCase c;
    int n_heads = 0, n_tokens = 0, n_blocks = 0, max_blocks = 0;
    const int n_layers = 2, layer = 1; // layer 0 is all NaN: a wrong layer offset shows
    std::vector<std::vector<float>> K, V; // per seq (ctx, n_kv_heads, head_dim), f16-exact
    std::vector<std::vector<float>> Kc, Vc; // what the cache holds: K, V (f16) or dequantized int8
    std::vector<float> q;                 // (n_tokens, n_heads, head_dim)
    std::vector<float> qc;                // q as the kernel multiplies it: q, or int8 (ops.h) for an int8 cache
    std::vector<int32_t> tokens, pos, seq_start, ctx_len, table, slots;
    float scale = 0;

    explicit AttnData(const AttnCase &cs) : c(cs) {
        std::mt19937 g(c.seed);
        n_heads = c.n_kv_heads * c.group;
        int total_blocks = 0;
        for (const Seq &s : c.seqs) {
            int nb = (s.ctx + c.block_size - 1) / c.block_size;
            total_blocks += nb;
            max_blocks = std::max(max_blocks, nb + 1); // one spare column, filled with -1
        }
        n_blocks = total_blocks + 3; // spare pages hold NaN
        std::vector<int32_t> pages(n_blocks);
        std::iota(pages.begin(), pages.end(), 0);
        std::shuffle(pages.begin(), pages.end(), g); // non-contiguous, out-of-order tables
        table.assign(c.seqs.size() * max_blocks, -1);
        int next_page = 0;
        seq_start.push_back(0);
        for (size_t s = 0; s < c.seqs.size(); s++) {
            const Seq &sq = c.seqs[s];
            for (int b = 0; b * c.block_size < sq.ctx; b++) table[s * max_blocks + b] = pages[next_page++];
            size_t n = (size_t)sq.ctx * c.n_kv_heads * c.head_dim;
            K.push_back(f16_round(randu(n, g())));
            V.push_back(f16_round(randu(n, g())));
            Kc.push_back(c.dtype == TM_KV_INT8 ? int8_round(K.back(), c.head_dim).deq : K.back());
            Vc.push_back(c.dtype == TM_KV_INT8 ? int8_round(V.back(), c.head_dim).deq : V.back());
            for (int i = 0; i < sq.q_len; i++) {
                int p = sq.ctx - sq.q_len + i;
                pos.push_back(p);
                tokens.push_back(0);
                slots.push_back(table[s * max_blocks + p / c.block_size] * c.block_size + p % c.block_size);
            }
            ctx_len.push_back(sq.ctx);
            n_tokens += sq.q_len;
            seq_start.push_back(n_tokens);
        }
        // Scores of a few units so the softmax is neither flat nor one-hot.
        q = randu((size_t)n_tokens * n_heads * c.head_dim, g(), -3.0f, 3.0f);
        qc = c.dtype == TM_KV_INT8 ? int8_round(q, c.head_dim).deq : q;
        scale = 1.0f / std::sqrt((float)c.head_dim);
    }

    tm_batch batch() const {
        tm_batch b = {};
        b.n_tokens = n_tokens;
        b.n_seqs = (int)c.seqs.size();
        b.tokens = tokens.data();
        b.pos = pos.data();
        b.seq_start = seq_start.data();
        b.ctx_len = ctx_len.data();
        b.block_table = table.data();
        b.max_blocks = max_blocks;
        b.slots = slots.data();
        return b;
    }

    // Naive reference: dense K/V, softmax in double.
    std::vector<float> naive() const {
        const int hd = c.head_dim;
        std::vector<float> out((size_t)n_tokens * n_heads * hd);
        for (size_t s = 0; s < c.seqs.size(); s++)
            for (int t = seq_start[s]; t < seq_start[s + 1]; t++)
                for (int h = 0; h < n_heads; h++) {
                    int kh = h / c.group, n_keys = pos[t] + 1;
                    const float *qv = &qc[((size_t)t * n_heads + h) * hd];
                    std::vector<double> sc(n_keys);
                    double mx = -INFINITY, sum = 0;
                    for (int j = 0; j < n_keys; j++) {
                        const float *kv = &Kc[s][((size_t)j * c.n_kv_heads + kh) * hd];
                        double d = 0;
                        for (int i = 0; i < hd; i++) d += (double)qv[i] * kv[i];
                        sc[j] = d * scale;
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
    EXPECT_EQ(B.be->kv_create(B.be, &shape, &kv), 0);
    const size_t row = (size_t)c.n_kv_heads * c.head_dim;
    std::vector<char> used((size_t)d.n_blocks * c.block_size, 0);
    for (size_t s = 0; s < c.seqs.size(); s++) {
        int ctx = c.seqs[s].ctx;
        std::vector<int32_t> slots(ctx);
        for (int p = 0; p < ctx; p++) {
            slots[p] = d.table[s * d.max_blocks + p / c.block_size] * c.block_size + p % c.block_size;
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
    B.be->attention(B.be, po, pq, kv, d.layer, &b, d.n_heads, d.scale);
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

TEST(AttentionShapes, OddBlockSizeAndHeadDim) {
    // block_size not dividing the chunk, head_dim not a multiple of the vector width
    check_attention({2, 2, 40, 7, {{300, 1}, {50, 20}}, 4242});
    check_attention({1, 1, 24, 32, {{200, 3}}, 4343});
}

} // namespace

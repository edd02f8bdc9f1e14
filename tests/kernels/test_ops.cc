// CPU backend ops: the scalar reference against naive double-precision implementations
// written here, and every SIMD level this CPU supports against the scalar reference.
// Fresh random inputs from fixed seeds; outputs poisoned with NaN before each run.
// Attention has its own file, test_attention.cc; the helpers both use are in
// cpu_ops_helpers.h.
//
// Tolerances (absolute unless said):
//   add, get_rows, embed(f32), kv_store: exact (bitwise)
//   rmsnorm:  scalar vs naive 2e-6 rel; SIMD vs scalar 1e-5 rel
//   silu_mul: scalar vs naive 1e-6 rel; SIMD vs scalar 1e-5 rel (polynomial exp)
//   gelu_mul: scalar vs naive 2e-6 abs + 2e-6 rel; SIMD vs scalar 2e-6 abs + 1e-5 rel
//   scale:    exact without a cap; with one 1e-6 of the cap (abs) + a few ulp
//   rope:     scalar vs naive 2e-5; SIMD vs scalar 2e-6 (inputs in [-1, 1])
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
#include "tests/kernels/cpu_ops_helpers.h"

namespace {

using namespace tm_test;

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

// GELU's tanh form times up (Gemma). The SIMD levels compute g * sigmoid(2u), the same
// function without tanh's cancellation where 1 + tanh(u) is tiny; the scalar reference
// loses ~|g| * 2^-24 absolutely there, hence the absolute part of the bounds.
TEST(CpuOps, GeluMul) {
    for (int64_t n : {1, 9, 64, 1000, 50001}) {
        auto g = randu(n, 30 + n, -12.0f, 12.0f), u = randu(n, 40 + n);
        if (n > 4) g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f, g[3] = -1e20f;
        std::vector<float> naive(n), ref;
        for (int64_t i = 0; i < n; i++) {
            const double x = g[i];
            naive[i] = (float)(0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))) * u[i]);
        }
        for (int l : levels()) {
            Backend B(2, l);
            float *pg = B.up(g), *pu = B.up(u), *po = B.poisoned(n);
            B.be->gelu_mul(B.be, po, pg, pu, n);
            auto got = B.down(po, n);
            if (l == TM_SIMD_SCALAR) {
                EXPECT_TRUE(close(got, naive, 2e-6, 2e-6)) << "n=" << n;
                ref = got;
            } else {
                EXPECT_TRUE(close(got, ref, 2e-6, 1e-5)) << "n=" << n << " level " << l;
            }
            B.be->gelu_mul(B.be, pu, pg, pu, n); // out aliases up
            EXPECT_TRUE(bitwise_equal(B.down(pu, n), got)) << "aliased, level " << l;
            B.be->free(B.be, pg), B.be->free(B.be, pu), B.be->free(B.be, po);
        }
    }
}

// x * s (exact: one rounding), and soft-capping cap * tanh(x * s / cap): the SIMD levels
// form tanh from one exp, absolute error ~1e-7 of the cap.
TEST(CpuOps, ScaleAndSoftcap) {
    for (int64_t n : {1, 9, 64, 1000, 50001}) {
        auto x = randu(n, 50 + n, -100.0f, 100.0f);
        if (n > 4) x[0] = 0.0f, x[1] = -0.0f, x[2] = 1e30f, x[3] = -1e-30f;
        for (float cap : {0.0f, 30.0f, 0.5f}) {
            const float s = cap > 0 ? 1.0f : 25.298f; /* sqrt(640): Gemma 3 270M's embedding scale */
            std::vector<float> naive(n), ref;
            for (int64_t i = 0; i < n; i++)
                naive[i] = cap > 0 ? (float)(cap * std::tanh((double)x[i] * s / cap)) : x[i] * s;
            for (int l : levels()) {
                Backend B(2, l);
                float *px = B.up(x), *po = B.poisoned(n);
                B.be->scale(B.be, po, px, n, s, cap);
                auto got = B.down(po, n);
                if (cap == 0) {
                    EXPECT_TRUE(bitwise_equal(got, naive)) << "n=" << n << " level " << l;
                } else if (l == TM_SIMD_SCALAR) {
                    EXPECT_TRUE(close(got, naive, 1e-6 * cap, 2e-7)) << "n=" << n << " cap " << cap;
                    ref = got;
                } else {
                    EXPECT_TRUE(close(got, ref, 1e-6 * cap, 1e-6)) << "n=" << n << " cap " << cap << " level " << l;
                }
                B.be->scale(B.be, px, px, n, s, cap); // in place
                EXPECT_TRUE(bitwise_equal(B.down(px, n), got)) << "in place, level " << l;
                B.be->free(B.be, px), B.be->free(B.be, po);
            }
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
        ASSERT_EQ(B.be->kv_create(B.be, &shape, &kv, NULL, 0), 0);
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
        ASSERT_EQ(B.be->kv_create(B.be, &shape, &kv, NULL, 0), 0);
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
        EXPECT_EQ(B.be->kv_create(B.be, &shape, &kv, NULL, 0), TM_EINVAL) << hd;
    }
    tm_kv_shape bad_dtype = {1, 4, 16, 1, 64, (tm_kv_dtype)5};
    EXPECT_EQ(B.be->kv_create(B.be, &bad_dtype, &kv, NULL, 0), TM_EINVAL);
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

} // namespace

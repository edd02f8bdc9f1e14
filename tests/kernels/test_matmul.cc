// test_matmul.cc - CPU matmul: the scalar reference against a plain f64 matmul on the
// dequantized weights (bounded by the activation quantization error), and every SIMD
// level of every dtype against the scalar reference on fresh random inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <cstring>
#include <random>
#include <vector>

#include "common/common.h"
#include "kernels/cpu/matmul.h"
extern "C" {
#include "kernels/cpu/matmul_impl.h" // private kernel tables, C linkage
}
#include "kernels/cpu/simd.h"
#include "kernels/cpu/threadpool.h"
#include "kernels/dtype.h"

namespace {

const tm_dtype kTypes[] = {TM_DTYPE_F32,  TM_DTYPE_F16,  TM_DTYPE_BF16, TM_DTYPE_Q4_0, TM_DTYPE_Q4_1,
                           TM_DTYPE_Q5_0, TM_DTYPE_Q5_1, TM_DTYPE_Q8_0, TM_DTYPE_Q2_K, TM_DTYPE_Q3_K,
                           TM_DTYPE_Q4_K, TM_DTYPE_Q5_K, TM_DTYPE_Q6_K};
const int kTokens[] = {1, 2, 3, 7, 16, 33};

bool is_kquant(tm_dtype t) { return tm_dtype_is_kquant(t); }
bool is_dense(tm_dtype t) { return t == TM_DTYPE_F32 || t == TM_DTYPE_F16 || t == TM_DTYPE_BF16; }

// GGUF-layout weight plus its dequantized copy.
struct Weight {
    tm_dtype t;
    int64_t rows, cols;
    std::vector<uint8_t> raw;
    std::vector<float> deq; // (rows, cols)
};

Weight make_weight(tm_dtype t, int64_t rows, int64_t cols, uint32_t seed) {
    Weight w{t, rows, cols, {}, {}};
    const int64_t rb = tm_dtype_row_bytes(t, cols);
    EXPECT_GT(rb, 0);
    w.raw.resize(rows * rb);
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    if (is_kquant(t)) {
        // Random bytes are valid K-quant blocks; only the f16 scales need sane values
        // (d signed where the format's scales are, dmin >= 0).
        for (auto &b : w.raw) b = (uint8_t)rng();
        std::uniform_real_distribution<float> ud(0.001f, 0.02f);
        int d_off = 0, dmin_off = 2;
        bool d_signed = false;
        switch (t) {
        case TM_DTYPE_Q2_K: d_off = 80, dmin_off = 82; break;
        case TM_DTYPE_Q3_K: d_off = 108, dmin_off = -1, d_signed = true; break;
        case TM_DTYPE_Q6_K: d_off = 208, dmin_off = -1, d_signed = true; break;
        default: break; // Q4_K, Q5_K: d, dmin first
        }
        for (int64_t i = 0; i < rows * cols / TM_QK_K; i++) {
            uint8_t *blk = w.raw.data() + i * tm_dtype_block_bytes(t);
            const uint16_t d = tm_f32_to_f16(ud(rng) * (d_signed && (rng() & 1) ? -1 : 1));
            std::memcpy(blk + d_off, &d, 2);
            if (dmin_off >= 0) {
                const uint16_t dmin = tm_f32_to_f16(ud(rng));
                std::memcpy(blk + dmin_off, &dmin, 2);
            }
        }
    } else {
        std::vector<float> f(cols);
        for (int64_t r = 0; r < rows; r++) {
            const float scale = 0.05f * (1 + r % 5);
            const float shift = (r % 3 == 0) ? 0.03f : 0.0f; // Q4_1 mins away from -max
            for (int64_t k = 0; k < cols; k++) f[k] = nd(rng) * scale + shift;
            EXPECT_EQ(tm_quantize_row(t, f.data(), w.raw.data() + r * rb, cols), 0);
        }
    }
    w.deq.resize(rows * cols);
    for (int64_t r = 0; r < rows; r++)
        tm_dequantize_row(t, w.raw.data() + r * rb, w.deq.data() + r * cols, cols);
    return w;
}

std::vector<float> make_x(int n, int64_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(n * cols);
    for (int t = 0; t < n; t++)
        for (int64_t k = 0; k < cols; k++) x[t * cols + k] = nd(rng) * (1.0f + t % 4);
    if (n > 2) // an all-zero activation block exercises d = 0
        for (int64_t k = 0; k < std::min<int64_t>(cols, 32); k++) x[2 * cols + k] = 0.0f;
    return x;
}

struct Mm {
    tm_threadpool *pool = nullptr;
    tm_cpu_matmul *mm = nullptr;
    Mm(int simd, int threads) {
        if (threads > 1) pool = tm_threadpool_create(threads);
        mm = tm_cpu_matmul_create(pool, simd);
    }
    ~Mm() {
        tm_cpu_matmul_destroy(mm);
        tm_threadpool_destroy(pool);
    }
};

// Runs the matmul into a NaN-poisoned buffer with a guard region after it; checks that
// the guard is untouched and returns (n, rows).
std::vector<float> run(Mm &m, const Weight &wt, const std::vector<float> &x,
                       const std::vector<float> *bias, int n, tm_weight *prepared = nullptr) {
    tm_weight w;
    char err[256] = "";
    if (!prepared) {
        EXPECT_EQ(tm_cpu_weight_init(m.mm, &w, wt.t, wt.rows, wt.cols, wt.raw.data(), err, sizeof(err)), 0) << err;
    }
    const int64_t guard = 64;
    std::vector<float> out(n * wt.rows + guard, NAN);
    for (int64_t i = 0; i < guard; i++) out[n * wt.rows + i] = 12345.0f;
    tm_cpu_matmul_run(m.mm, out.data(), x.data(), prepared ? prepared : &w, bias ? bias->data() : nullptr, n);
    for (int64_t i = 0; i < guard; i++) EXPECT_EQ(out[n * wt.rows + i], 12345.0f) << "wrote past the output";
    if (!prepared) tm_cpu_weight_deinit(&w);
    out.resize(n * wt.rows);
    return out;
}

// sum_k |w_k x_k| per output: the scale of float rounding errors.
double absdot(const Weight &wt, const std::vector<float> &x, int t, int64_t r) {
    double s = 0;
    for (int64_t k = 0; k < wt.cols; k++) s += std::fabs((double)wt.deq[r * wt.cols + k] * x[t * wt.cols + k]);
    return s;
}

TEST(Matmul, ScalarReferenceVsF64OnDequantized) {
    Mm m(TM_SIMD_SCALAR, 1);
    ASSERT_NE(m.mm, nullptr);
    for (tm_dtype t : kTypes) {
        const int64_t rows = 21, cols = is_kquant(t) ? 512 : 320;
        const Weight wt = make_weight(t, rows, cols, 100 + t);
        for (int n : {1, 5}) {
            const std::vector<float> x = make_x(n, cols, 200 + n);
            std::vector<float> bias(rows);
            for (int64_t r = 0; r < rows; r++) bias[r] = 0.25f * (float)r - 2.0f;
            const std::vector<float> out = run(m, wt, x, &bias, n);
            const int bs = is_kquant(t) ? TM_QK_K : TM_QK;
            for (int tk = 0; tk < n; tk++) {
                // Activation quantization error per element is at most half a step,
                // d / 2 = amax(block) / 254; dense weights see no quantization.
                std::vector<double> half_step(cols, 0.0);
                if (!is_dense(t))
                    for (int64_t b = 0; b < cols; b += bs) {
                        double amax = 0;
                        for (int64_t k = b; k < b + bs; k++) amax = std::max(amax, (double)std::fabs(x[tk * cols + k]));
                        for (int64_t k = b; k < b + bs; k++) half_step[k] = amax / 254.0 * 1.0001;
                    }
                for (int64_t r = 0; r < rows; r++) {
                    double ref = bias[r], qerr = 0;
                    for (int64_t k = 0; k < cols; k++) {
                        ref += (double)wt.deq[r * cols + k] * x[tk * cols + k];
                        qerr += std::fabs(wt.deq[r * cols + k]) * half_step[k];
                    }
                    const double tol = qerr + (cols + 8) * 1.2e-7 * (absdot(wt, x, tk, r) + qerr) + 1e-6;
                    EXPECT_NEAR(out[tk * rows + r], ref, tol) << tm_dtype_name(t) << " n=" << n << " t=" << tk << " r=" << r;
                }
            }
        }
    }
}

// The bound above is loose enough to pass for any activation rounding; make sure the
// quantized paths do round the activations (a float shortcut would be a different op).
TEST(Matmul, ScalarQuantizesActivations) {
    Mm m(TM_SIMD_SCALAR, 1);
    const Weight wt = make_weight(TM_DTYPE_Q8_0, 4, 32, 5);
    std::vector<float> x(32, 0.0f);
    x[0] = 127.0f, x[1] = 0.5f, x[2] = 1.5f; // d = 1: 0.5 -> 0 and 1.5 -> 2 (half-even)
    const std::vector<float> out = run(m, wt, x, nullptr, 1);
    for (int r = 0; r < 4; r++) {
        const double want = 127.0 * wt.deq[r * 32] + 0.0 * wt.deq[r * 32 + 1] + 2.0 * wt.deq[r * 32 + 2];
        EXPECT_NEAR(out[r], want, 1e-4 * std::fabs(want) + 1e-6) << r;
    }
}

// The SIMD Q8_K quantizers (K-quant activations) must equal the reference bit for bit:
// the K-quant row kernels are only compared with a tolerance.
TEST(Matmul, SimdQ8kQuantizersEqualReference) {
#if defined(__x86_64__)
    if (!tm_simd_supported(TM_SIMD_AVX2)) GTEST_SKIP() << "no AVX2 on this CPU";
    const int nb = 7;
    std::vector<float> x = make_x(1, nb * TM_QK_K, 77);
    for (int j = 0; j < TM_QK_K; j++) x[TM_QK_K + j] = 0.0f;                 // block 1: all zero
    x[2 * TM_QK_K + 5] = 9.0f, x[2 * TM_QK_K + 200] = -9.0f;                  // block 2: |max| tie, + first
    x[3 * TM_QK_K + 7] = -9.0f, x[3 * TM_QK_K + 100] = 9.0f;                  // block 3: |max| tie, - first
    for (int j = 0; j < TM_QK_K; j++) x[4 * TM_QK_K + j] = 0.5f * (float)(j % 7) - 1.5f; // halves
    x[4 * TM_QK_K + 3] = -127.0f;                                               // d = 1: .5 ties round to even
    for (int j = 0; j < TM_QK_K; j++) x[6 * TM_QK_K + j] = 1e-38f * (float)(j % 5 - 2); // too small to invert
    std::vector<tm_block_q8_k> want(nb);
    std::memset(want.data(), 0x5a, nb * sizeof(tm_block_q8_k));
    ASSERT_EQ(tm_quantize_row(TM_DTYPE_Q8_K, x.data(), want.data(), nb * TM_QK_K), 0);
    tm_block_q8_k zero;
    std::memset(&zero, 0, sizeof zero);
    EXPECT_EQ(std::memcmp(&want[6], &zero, sizeof zero), 0) << "a block whose 1/scale overflows quantizes to zero";
    for (int level : {TM_SIMD_AVX2, TM_SIMD_AVX512VNNI}) {
        if (!tm_simd_supported(level)) continue;
        std::vector<tm_block_q8_k> got(nb);
        std::memset(got.data(), 0x5a, nb * sizeof(tm_block_q8_k));
        tm_mm_kernels_get(level)->quantize_q8k(x.data(), got.data(), nb);
        for (int b = 0; b < nb; b++)
            EXPECT_EQ(std::memcmp(&want[b], &got[b], sizeof(tm_block_q8_k)), 0) << tm_simd_name(level) << " block " << b;
    }
#else
    GTEST_SKIP() << "x86 only";
#endif
}

// The SIMD activation quantizers (Q4/Q8 weights) must equal the reference bit for bit:
// quants (at the strides of token groups), scale, sum and scaled sum of every block, for
// block counts on both sides of the AVX-512 kernel's groups of 16.
TEST(Matmul, SimdActivationQuantizersEqualReference) {
    bool any = false;
    for (int nb : {1, 15, 16, 17, 18, 33, 48}) {
        std::vector<float> x = make_x(1, nb * TM_QK, 91 + nb);
        for (int j = 0; j < TM_QK && nb > 2; j++) x[TM_QK + j] = 0.0f;        // block 1: all zero
        if (nb > 3) {
            for (int j = 0; j < TM_QK; j++) x[2 * TM_QK + j] = 0.5f * (float)(j % 7) - 1.5f;
            x[2 * TM_QK + 3] = -127.0f;                                          // d = 1: .5 ties to even
        }
        if (nb > 4) // block 3: so small that 1 / d overflows: quants 0
            for (int j = 0; j < TM_QK; j++) x[3 * TM_QK + j] = 1e-38f * (float)(j % 5 - 2);
        for (int stride : {1, 4, 16}) {
            SCOPED_TRACE("nb " + std::to_string(nb) + " stride " + std::to_string(stride));
            const size_t nq = (size_t)nb * TM_QK * stride, ns = (size_t)nb * stride;
            std::vector<int8_t> wq(nq, 0x5a);
            std::vector<float> wd(ns, -1.0f), ws(ns, -1.0f);
            std::vector<int32_t> wsum(ns, -1);
            tm_mm_kernels_get(TM_SIMD_SCALAR)->quantize_q8(x.data(), nb * TM_QK, stride, wq.data(), wd.data(), wsum.data(), ws.data());
            for (int level : {TM_SIMD_AVX2, TM_SIMD_AVX512VNNI, TM_SIMD_NEON}) {
                if (!tm_simd_supported(level)) continue;
                any = true;
                std::vector<int8_t> q(nq, 0x5a);
                std::vector<float> d(ns, -1.0f), s(ns, -1.0f);
                std::vector<int32_t> sum(ns, -1);
                tm_mm_kernels_get(level)->quantize_q8(x.data(), nb * TM_QK, stride, q.data(), d.data(), sum.data(), s.data());
                EXPECT_EQ(q, wq) << tm_simd_name(level);
                EXPECT_EQ(std::memcmp(d.data(), wd.data(), ns * sizeof(float)), 0) << tm_simd_name(level);
                EXPECT_EQ(sum, wsum) << tm_simd_name(level);
                EXPECT_EQ(std::memcmp(s.data(), ws.data(), ns * sizeof(float)), 0) << tm_simd_name(level);
            }
        }
    }
    if (!any) GTEST_SKIP() << "no SIMD level on this CPU";
}

TEST(Matmul, SimdMatchesScalar) {
    std::vector<int> levels;
    for (int l : {TM_SIMD_AVX2, TM_SIMD_AVX512VNNI, TM_SIMD_AMX, TM_SIMD_NEON})
        if (tm_simd_supported(l)) levels.push_back(l);
        else std::printf("[ info ] simd level %s not supported here, not tested\n", tm_simd_name(l));
    if (levels.empty()) GTEST_SKIP() << "no SIMD level on this CPU";
    Mm ref(TM_SIMD_SCALAR, 2);
    uint32_t seed = 1000;
    for (int level : levels) {
        Mm m(level, 2);
        ASSERT_NE(m.mm, nullptr) << tm_simd_name(level);
        for (tm_dtype t : kTypes) {
            struct { int64_t rows, cols; } shapes[] = {{37, 544}, {16, 64}, {70, 96}};
            if (is_kquant(t)) shapes[0] = {37, 512}, shapes[1] = {16, 256}, shapes[2] = {19, 768};
            for (auto s : shapes) {
                const Weight wt = make_weight(t, s.rows, s.cols, seed++);
                std::vector<float> bias(s.rows);
                for (int64_t r = 0; r < s.rows; r++) bias[r] = 0.1f * (float)(r % 7) - 0.3f;
                for (int n : kTokens) {
                    const std::vector<float> x = make_x(n, s.cols, seed++);
                    const bool with_bias = n % 2 == 1;
                    const std::vector<float> want = run(ref, wt, x, with_bias ? &bias : nullptr, n);
                    const std::vector<float> got = run(m, wt, x, with_bias ? &bias : nullptr, n);
                    // Same integer dot products (bit-identical activation quantization)
                    // and f32 sums in another order: 1e-5 of sum |w x| is ~100x the
                    // rounding seen, while one activation quant off by one step would
                    // exceed it.
                    int bad = 0;
                    for (int tk = 0; tk < n && bad < 5; tk++)
                        for (int64_t r = 0; r < s.rows && bad < 5; r++) {
                            const double tol = 1e-5 * absdot(wt, x, tk, r) + 1e-6;
                            const float g = got[tk * s.rows + r], e = want[tk * s.rows + r];
                            if (!(std::fabs((double)g - e) <= tol)) {
                                bad++;
                                ADD_FAILURE() << tm_simd_name(level) << " " << tm_dtype_name(t) << " " << s.rows << "x"
                                              << s.cols << " n=" << n << " t=" << tk << " r=" << r << ": got " << g
                                              << " want " << e << " tol " << tol;
                            }
                        }
                }
            }
        }
    }
}

// Work split over threads must not change a single bit of any output.
TEST(Matmul, ThreadsDoNotChangeResults) {
    const int level = tm_simd_detect();
    for (tm_dtype t : {TM_DTYPE_Q4_1, TM_DTYPE_F16, TM_DTYPE_Q4_K, TM_DTYPE_Q6_K}) {
        const int64_t rows = 83, cols = is_kquant(t) ? 256 : 128;
        const Weight wt = make_weight(t, rows, cols, 77);
        for (int n : {1, 9}) {
            const std::vector<float> x = make_x(n, cols, 78);
            Mm one(level, 1), two(level, 2);
            const std::vector<float> a = run(one, wt, x, nullptr, n), b = run(two, wt, x, nullptr, n);
            ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << tm_dtype_name(t) << " n=" << n;
        }
    }
}

// The engine's batch invariance rests on this: a token's output must not depend on which
// other tokens share the call (token groups of 16/8/4/2/1, 4-token K-quant passes, AMX for
// full groups), so each row of a batched call equals that token's call alone, bit for bit.
TEST(Matmul, TokenResultDoesNotDependOnTheBatch) {
    std::vector<int> levels = {TM_SIMD_SCALAR};
    for (int l : {TM_SIMD_AVX2, TM_SIMD_AVX512VNNI, TM_SIMD_AMX, TM_SIMD_NEON})
        if (tm_simd_supported(l)) levels.push_back(l);
    uint32_t seed = 1300;
    for (int level : levels) {
        Mm m(level, 2);
        for (tm_dtype t : kTypes) {
            const int64_t rows = 21, cols = is_kquant(t) ? 512 : 320;
            const Weight wt = make_weight(t, rows, cols, seed++);
            const int n = 23; // groups 16 + 4 + 2 + 1
            const std::vector<float> x = make_x(n, cols, seed++);
            const std::vector<float> all = run(m, wt, x, nullptr, n);
            for (int tk : {0, 15, 16, 19, 20, 22}) {
                const std::vector<float> one_x(x.begin() + tk * cols, x.begin() + (tk + 1) * cols);
                const std::vector<float> one = run(m, wt, one_x, nullptr, 1);
                EXPECT_EQ(std::memcmp(one.data(), all.data() + tk * rows, rows * sizeof(float)), 0)
                    << tm_simd_name(level) << " " << tm_dtype_name(t) << " token " << tk;
            }
        }
    }
}

// run_multi shares one activation preparation and one pool job between weights of one
// dtype; each output must equal its own single-weight run bit for bit, including runs of
// mixed dtypes (split into sub-jobs) and token counts that leave partial token groups.
TEST(Matmul, MultiWeightRunEqualsSeparateRuns) {
    std::vector<int> levels = {TM_SIMD_SCALAR};
    for (int l : {TM_SIMD_AVX2, TM_SIMD_AVX512VNNI, TM_SIMD_AMX, TM_SIMD_NEON})
        if (tm_simd_supported(l)) levels.push_back(l);
    const int64_t cols = 256;
    const struct { tm_dtype t; int64_t rows; } specs[] = {
        {TM_DTYPE_Q4_1, 37}, {TM_DTYPE_Q4_1, 16}, {TM_DTYPE_Q4_1, 70}, {TM_DTYPE_Q8_0, 5},
        {TM_DTYPE_Q8_0, 21}, {TM_DTYPE_F16, 33}, {TM_DTYPE_F16, 3}, {TM_DTYPE_Q4_K, 18},
        {TM_DTYPE_Q4_1, 50}, {TM_DTYPE_Q5_0, 23}, {TM_DTYPE_Q5_K, 9}, {TM_DTYPE_Q5_K, 40},
    };
    std::vector<Weight> wts;
    uint32_t seed = 500;
    for (auto sp : specs) wts.push_back(make_weight(sp.t, sp.rows, cols, seed++));
    for (int level : levels) {
        Mm m(level, 2);
        ASSERT_NE(m.mm, nullptr) << tm_simd_name(level);
        std::vector<tm_weight> w(wts.size());
        std::vector<const tm_weight *> wp;
        char err[128];
        for (size_t k = 0; k < wts.size(); k++) {
            ASSERT_EQ(tm_cpu_weight_init(m.mm, &w[k], wts[k].t, wts[k].rows, cols, wts[k].raw.data(), err, sizeof(err)), 0) << err;
            wp.push_back(&w[k]);
        }
        for (int n : {1, 5, 16, 19}) {
            const std::vector<float> x = make_x(n, cols, seed++);
            std::vector<std::vector<float>> bias(wts.size()), got(wts.size());
            std::vector<float *> outs;
            std::vector<const float *> bp;
            for (size_t k = 0; k < wts.size(); k++) {
                bias[k].resize(wts[k].rows);
                for (int64_t r = 0; r < wts[k].rows; r++) bias[k][r] = 0.01f * (float)(r + k);
                got[k].assign(n * wts[k].rows, NAN);
                outs.push_back(got[k].data());
                bp.push_back(k % 2 ? bias[k].data() : nullptr);
            }
            tm_cpu_matmul_run_multi(m.mm, (int)wts.size(), outs.data(), x.data(), wp.data(), bp.data(), n);
            for (size_t k = 0; k < wts.size(); k++) {
                const std::vector<float> want = run(m, wts[k], x, k % 2 ? &bias[k] : nullptr, n, &w[k]);
                EXPECT_EQ(std::memcmp(got[k].data(), want.data(), want.size() * sizeof(float)), 0)
                    << tm_simd_name(level) << " weight " << k << " (" << tm_dtype_name(wts[k].t) << ") n=" << n;
            }
        }
        for (auto &wk : w) tm_cpu_weight_deinit(&wk);
    }
}

// AMX forms the same integer sums as the VNNI kernel and the same float epilogue, so it
// must agree bit for bit; this is also what keeps a token's result independent of whether
// it falls in a 16-token group (AMX) or a smaller one (AVX-512).
TEST(Matmul, AmxEqualsAvx512Bitwise) {
    if (!tm_simd_supported(TM_SIMD_AMX)) GTEST_SKIP() << "no AMX-INT8 on this CPU/OS";
    Mm amx(TM_SIMD_AMX, 2), vnni(TM_SIMD_AVX512VNNI, 2);
    uint32_t seed = 900;
    for (tm_dtype t : {TM_DTYPE_Q4_0, TM_DTYPE_Q4_1, TM_DTYPE_Q8_0, TM_DTYPE_F16, TM_DTYPE_Q6_K}) {
        const int64_t rows = 45, cols = is_kquant(t) ? 512 : 576;
        const Weight wt = make_weight(t, rows, cols, seed++);
        std::vector<float> bias(rows);
        for (int64_t r = 0; r < rows; r++) bias[r] = 0.05f * (float)r;
        for (int n : {15, 16, 17, 32, 53}) {
            const std::vector<float> x = make_x(n, cols, seed++);
            const std::vector<float> a = run(amx, wt, x, &bias, n), b = run(vnni, wt, x, &bias, n);
            EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << tm_dtype_name(t) << " n=" << n;
        }
    }
}

// A weight prepared by a SIMD matmul still runs correctly on the scalar one, and
// weight_row returns the dequantized GGUF row whatever the packing.
TEST(Matmul, WeightRowAndCrossLevel) {
    const int level = tm_simd_detect();
    Mm simd(level, 1), scalar(TM_SIMD_SCALAR, 1);
    for (tm_dtype t : kTypes) {
        const int64_t rows = 19, cols = is_kquant(t) ? 256 : 96;
        const Weight wt = make_weight(t, rows, cols, 300 + t);
        tm_weight w;
        char err[128];
        ASSERT_EQ(tm_cpu_weight_init(simd.mm, &w, t, rows, cols, wt.raw.data(), err, sizeof(err)), 0) << err;
        EXPECT_EQ(w.dtype, t);
        EXPECT_EQ(w.n_rows, rows);
        EXPECT_EQ(w.n_cols, cols);
        std::vector<float> row(cols);
        for (int64_t r : {(int64_t)0, (int64_t)7, rows - 1}) {
            std::fill(row.begin(), row.end(), NAN);
            tm_cpu_weight_row(&w, r, row.data());
            EXPECT_EQ(std::memcmp(row.data(), wt.deq.data() + r * cols, cols * sizeof(float)), 0) << tm_dtype_name(t);
        }
        const std::vector<float> x = make_x(3, cols, 9);
        const std::vector<float> a = run(scalar, wt, x, nullptr, 3, &w), b = run(scalar, wt, x, nullptr, 3);
        EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << tm_dtype_name(t);
        tm_cpu_weight_deinit(&w);
    }
}

// Packed weights are carved from shared 64 MiB chunks (matmul.c): a weight of a quarter
// chunk or more gets its own, the others fill one chunk after another, and a chunk whose
// weights are all gone is refilled from its start. Every weight still computes the
// reference result, also after its tm_cpu_matmul is gone (ASan checks that no chunk is
// leaked or freed early).
TEST(Matmul, PackedWeightsShareChunksAndOutliveTheirContext) {
    const int level = tm_simd_detect();
    if (level == TM_SIMD_SCALAR) GTEST_SKIP() << "the scalar level packs no weights";
    auto simd = std::make_unique<Mm>(level, 1);
    Mm scalar(TM_SIMD_SCALAR, 1);
    char err[128] = "";
    const auto check = [&](Mm &m, const Weight &wt, tm_weight *w, uint32_t seed) {
        const std::vector<float> x = make_x(3, wt.cols, seed);
        const std::vector<float> got = run(m, wt, x, nullptr, 3, w);
        const std::vector<float> want = run(scalar, wt, x, nullptr, 3);
        for (size_t k = 0; k < got.size(); k++)
            ASSERT_NEAR(got[k], want[k], 1e-4 * (1 + std::fabs(want[k]))) << "seed " << seed << " output " << k;
    };
    { // the only weight of the chunk being filled goes; the next one reuses the chunk
        const Weight a = make_weight(TM_DTYPE_Q4_1, 19, 96, 500), b = make_weight(TM_DTYPE_Q8_0, 21, 64, 499);
        tm_weight wa, wb;
        ASSERT_EQ(tm_cpu_weight_init(simd->mm, &wa, a.t, a.rows, a.cols, a.raw.data(), err, sizeof(err)), 0) << err;
        tm_cpu_weight_deinit(&wa);
        ASSERT_EQ(tm_cpu_weight_init(simd->mm, &wb, b.t, b.rows, b.cols, b.raw.data(), err, sizeof(err)), 0) << err;
        check(*simd, b, &wb, 19);
        tm_cpu_weight_deinit(&wb);
    }
    std::vector<Weight> wts;
    wts.push_back(make_weight(TM_DTYPE_Q4_1, 19, 96, 501));
    wts.push_back(make_weight(TM_DTYPE_F32, 2050, 8192, 502)); // 67 MB: a chunk of its own
    for (int i = 0; i < 5; i++) wts.push_back(make_weight(TM_DTYPE_F32, 480, 8192, 503 + i)); // 15.7 MB each: 2 chunks
    wts.push_back(make_weight(TM_DTYPE_Q8_0, 40, 64, 510));
    std::vector<tm_weight> w(wts.size());
    for (size_t i = 0; i < wts.size(); i++) {
        ASSERT_EQ(tm_cpu_weight_init(simd->mm, &w[i], wts[i].t, wts[i].rows, wts[i].cols, wts[i].raw.data(), err,
                                     sizeof(err)), 0) << err;
        ASSERT_NE(w[i].data, (const void *)wts[i].raw.data()) << "weight " << i << " was not packed";
    }
    for (size_t i = 0; i < wts.size(); i++) check(*simd, wts[i], &w[i], 20 + i);
    simd.reset();
    Mm other(level, 1); // the weights work without the context that packed them
    for (size_t i : {0, 1, 4, 7}) check(other, wts[i], &w[i], 40 + i);
    for (size_t i : {3, 1, 0, 7, 2, 6, 4, 5}) tm_cpu_weight_deinit(&w[i]);
}

TEST(Matmul, RejectsBadWeights) {
    Mm m(TM_SIMD_SCALAR, 1);
    std::vector<uint8_t> raw(4096);
    tm_weight w;
    char err[128] = "";
    EXPECT_EQ(tm_cpu_weight_init(m.mm, &w, TM_DTYPE_Q8_1, 2, 32, raw.data(), err, sizeof(err)), TM_EUNSUPPORTED);
    EXPECT_NE(std::strlen(err), 0u);
    EXPECT_EQ(tm_cpu_weight_init(m.mm, &w, TM_DTYPE_Q4_0, 2, 48, raw.data(), err, sizeof(err)), TM_EINVAL);
    EXPECT_EQ(tm_cpu_weight_init(m.mm, &w, TM_DTYPE_Q4_K, 2, 128, raw.data(), err, sizeof(err)), TM_EINVAL);
    EXPECT_EQ(tm_cpu_matmul_create(nullptr, TM_SIMD_AUTO), nullptr);
}

} // namespace

// test_matmul.cc - the CUDA matmul family (kernels/cuda/matmul*.cuh), compiled under the
// CPU harness (tests/cuda_sim) and checked against the CPU scalar reference:
//  - the upload's repack: the device arrays put back into GGUF blocks equal the file's
//    bytes, and the embedding kernel's rows equal tm_dequantize_row bit for bit;
//  - every weight type through both quantized kernels (GEMV and the tensor-core tiles,
//    forced by tm_cuda_matmul_path) at odd shapes, with and without bias, outputs
//    poisoned with NaN first; weights and activations with extreme scales;
//  - matmul_multi equals separate calls; bad dtypes and shapes are refused.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/matmul.cuh"

extern "C" {
#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "kernels/dtype.h"
}

namespace {

const tm_dtype kQuant[] = {TM_DTYPE_Q4_0, TM_DTYPE_Q4_1, TM_DTYPE_Q5_0, TM_DTYPE_Q5_1,
                          TM_DTYPE_Q8_0, TM_DTYPE_Q4_K, TM_DTYPE_Q5_K, TM_DTYPE_Q6_K};
const tm_dtype kDense[] = {TM_DTYPE_F32, TM_DTYPE_F16, TM_DTYPE_BF16};

bool is_kquant(tm_dtype t) { return t == TM_DTYPE_Q4_K || t == TM_DTYPE_Q5_K || t == TM_DTYPE_Q6_K; }

// Bound on ||out - ref|| / ||ref|| against the CPU scalar backend, per weight type.
//  - Quantized types: both sides quantize the activations identically (the GPU kernels use
//    the CPU's formats bit for bit: Q8 blocks of 32 for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, Q8_K for
//    Q4_K/Q5_K/Q6_K)
//    and form the same integer dot products per block; only the order of the f32 sums of
//    the scaled block products differs (and FMA contraction on a GPU): ~1e-7 per term.
//  - F32: cuBLAS in f32 (no TF32): the order of the sums only.
//  - F16 / BF16: cuBLAS wants x in the weight's type, so x is rounded to f16 (2^-11
//    relative) or bf16 (2^-8) while the CPU multiplies the f32 x; a dot of random terms
//    then differs by about that rounding / sqrt(3): measured 2.2e-4 and 1.7e-3.
// Measured in the harness: quantized 0 (tiles: the CPU's order exactly) to 1.2e-7 (GEMV),
// F32 0. The bounds leave room for FMA contraction and other sum orders on a GPU.
double bound(tm_dtype t) {
    switch (t) {
    case TM_DTYPE_F16: return 1e-3;
    case TM_DTYPE_BF16: return 5e-3;
    default: return 1e-5;
    }
}

// A GGUF-layout weight: random values quantized by the reference quantizer, or for the
// K-quants random bytes with sane f16 scales (every bit pattern of the quants, the
// 6-bit scales and Q5_K's fifth bits).
struct Weight {
    tm_dtype t;
    int64_t rows, cols;
    std::vector<uint8_t> raw;
};

Weight make_weight(tm_dtype t, int64_t rows, int64_t cols, uint32_t seed) {
    Weight w{t, rows, cols, {}};
    const int64_t rb = tm_dtype_row_bytes(t, cols);
    EXPECT_GT(rb, 0);
    w.raw.resize(rows * rb);
    std::mt19937 rng(seed);
    if (is_kquant(t)) {
        for (auto &b : w.raw) b = (uint8_t)rng();
        std::uniform_real_distribution<float> ud(0.001f, 0.02f);
        for (int64_t i = 0; i < rows * cols / TM_QK_K; i++) {
            uint8_t *blk = w.raw.data() + i * tm_dtype_block_bytes(t);
            if (t == TM_DTYPE_Q4_K || t == TM_DTYPE_Q5_K) {
                const uint16_t d = tm_f32_to_f16(ud(rng)), dmin = tm_f32_to_f16(ud(rng));
                std::memcpy(blk, &d, 2);
                std::memcpy(blk + 2, &dmin, 2);
            } else {
                const uint16_t d = tm_f32_to_f16(ud(rng) * ((rng() & 1) ? 1 : -1));
                std::memcpy(blk + 208, &d, 2);
            }
        }
        return w;
    }
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> f(cols);
    for (int64_t r = 0; r < rows; r++) {
        const float scale = 0.05f * (1 + r % 5), shift = (r % 3 == 0) ? 0.03f : 0.0f;
        for (int64_t k = 0; k < cols; k++) f[k] = nd(rng) * scale + shift;
        EXPECT_EQ(tm_quantize_row(t, f.data(), w.raw.data() + r * rb, cols), 0);
    }
    return w;
}

std::vector<float> make_x(int n, int64_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x((size_t)n * cols);
    for (int t = 0; t < n; t++)
        for (int64_t k = 0; k < cols; k++) x[t * cols + k] = nd(rng) * (1.0f + t % 4);
    return x;
}

double rel_err(const std::vector<float> &out, const std::vector<float> &ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < out.size(); i++) {
        const double d = (double)out[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return std::sqrt(num / (den > 0 ? den : 1));
}

// A device buffer of T, uploaded from / downloaded to a vector.
template <class T>
struct Dev {
    T *p = nullptr;
    size_t n = 0;
    explicit Dev(size_t count) : n(count) { EXPECT_EQ(cudaMalloc(&p, count * sizeof(T) + 16), cudaSuccess); }
    explicit Dev(const std::vector<T> &v) : Dev(v.size()) {
        EXPECT_EQ(cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    }
    ~Dev() { cudaFree(p); }
    std::vector<T> get() const {
        std::vector<T> v(n);
        EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
        return v;
    }
    void poison() { EXPECT_EQ(cudaMemset(p, 0xff, n * sizeof(T)), cudaSuccess); } // NaN for floats
};

// The context a launcher needs: stream, cuBLAS, scratch, and the device's limits.
class CudaMatmul : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_EQ(cudaStreamCreate(&ctx_.stream), cudaSuccess);
        ASSERT_EQ(cublasCreate(&ctx_.cublas), CUBLAS_STATUS_SUCCESS);
        ASSERT_EQ(cublasSetStream(ctx_.cublas, ctx_.stream), CUBLAS_STATUS_SUCCESS);
        ctx_.scratch = &scratch_;
        int v = 0;
        ASSERT_EQ(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
        ctx_.n_sm = v;
        int major = 0, minor = 0;
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
        ctx_.cc = 10 * major + minor;
        ASSERT_EQ(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0), cudaSuccess);
        ctx_.max_smem = (size_t)v;
        char err[256] = "";
        cpu_ = tm_backend_cpu_create(1, TM_SIMD_SCALAR, err, sizeof err);
        ASSERT_NE(cpu_, nullptr) << err;
    }
    void TearDown() override {
        if (cpu_) cpu_->destroy(cpu_);
        cudaFree(scratch_.data);
        cublasDestroy(ctx_.cublas);
        cudaStreamDestroy(ctx_.stream);
    }

    void upload(tm_weight *w, const Weight &h) {
        char err[256] = "";
        ASSERT_EQ(tm_cuda_weight_init(&ctx_, w, h.t, h.rows, h.cols, h.raw.data(), err, sizeof err), 0) << err;
    }

    // The CPU scalar backend's out (n, rows) for x (n, cols).
    std::vector<float> reference(const Weight &h, const std::vector<float> &x, const float *bias, int n) {
        tm_weight w;
        char err[256] = "";
        EXPECT_EQ(cpu_->weight_init(cpu_, &w, h.t, h.rows, h.cols, h.raw.data(), err, sizeof err), 0) << err;
        std::vector<float> out((size_t)n * h.rows);
        cpu_->matmul(cpu_, out.data(), x.data(), &w, bias, n);
        cpu_->weight_deinit(cpu_, &w);
        return out;
    }

    // GPU out for x through path, with outputs poisoned first.
    std::vector<float> run(const tm_weight &w, const std::vector<float> &x, const std::vector<float> *bias, int n,
                           tm_mm_path path) {
        Dev<float> dx(x), dout((size_t)n * w.n_rows);
        Dev<float> db(bias ? *bias : std::vector<float>(1));
        dout.poison();
        tm_cuda_last_where = tm_cuda_where{};
        const cudaError_t rc = tm_cuda_matmul_path(&ctx_, dout.p, dx.p, &w, bias ? db.p : nullptr, n, path);
        EXPECT_EQ(rc, cudaSuccess) << cudaGetErrorString(rc) << " at " << (tm_cuda_last_where.expr ? tm_cuda_last_where.expr : "?");
        EXPECT_EQ(cudaStreamSynchronize(ctx_.stream), cudaSuccess);
        return dout.get();
    }

    tm_cuda_scratch scratch_{};
    tm_cuda_ctx ctx_{};
    tm_backend *cpu_ = nullptr;
};

const char *path_name(tm_mm_path p) { return p == TM_MM_PATH_GEMV ? "gemv" : p == TM_MM_PATH_MMA ? "mma" : "auto"; }

// The device arrays of a quantized weight, put back into GGUF blocks (the layout in
// matmul_weight.cuh's header comment, read independently of the kernels).
std::vector<uint8_t> unpack_device(const tm_weight &w) {
    const tm_mm_qw &v = *tm_mm_view(&w);
    std::vector<uint8_t> qs((size_t)w.n_rows * v.row_qs), sd((size_t)w.n_rows * v.row_sd), d6((size_t)w.n_rows * 2 * v.row_d6);
    std::vector<uint8_t> qh((size_t)w.n_rows * 4 * v.row_qh);
    EXPECT_EQ(cudaMemcpy(qs.data(), v.qs, qs.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    if (v.row_sd) {
        EXPECT_EQ(cudaMemcpy(sd.data(), v.sd, sd.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    if (v.row_d6) {
        EXPECT_EQ(cudaMemcpy(d6.data(), v.d6, d6.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    if (v.row_qh) {
        EXPECT_EQ(cudaMemcpy(qh.data(), v.qh, qh.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    if (tm_mm_is_dense(w.dtype)) return qs;
    const int64_t bs = tm_dtype_block_size(w.dtype), bb = tm_dtype_block_bytes(w.dtype), nb = w.n_cols / bs;
    std::vector<uint8_t> out((size_t)(w.n_rows * nb * bb));
    for (int64_t r = 0; r < w.n_rows; r++) {
        const uint8_t *q = qs.data() + r * v.row_qs, *s = sd.data() + r * v.row_sd, *e = d6.data() + r * 2 * v.row_d6;
        const uint8_t *h = qh.data() + r * 4 * v.row_qh;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *o = out.data() + (r * nb + b) * bb;
            switch (w.dtype) {
            case TM_DTYPE_Q4_0: std::memcpy(o, s + 2 * b, 2), std::memcpy(o + 2, q + 16 * b, 16); break;
            case TM_DTYPE_Q4_1: std::memcpy(o, s + 4 * b, 4), std::memcpy(o + 4, q + 16 * b, 16); break;
            case TM_DTYPE_Q5_0:
                std::memcpy(o, s + 2 * b, 2), std::memcpy(o + 2, h + 4 * b, 4), std::memcpy(o + 6, q + 16 * b, 16);
                break;
            case TM_DTYPE_Q5_1:
                std::memcpy(o, s + 4 * b, 4), std::memcpy(o + 4, h + 4 * b, 4), std::memcpy(o + 8, q + 16 * b, 16);
                break;
            case TM_DTYPE_Q8_0: std::memcpy(o, s + 2 * b, 2), std::memcpy(o + 2, q + 32 * b, 32); break;
            case TM_DTYPE_Q4_K: std::memcpy(o, s + 16 * b, 16), std::memcpy(o + 16, q + 128 * b, 128); break;
            case TM_DTYPE_Q5_K:
                std::memcpy(o, s + 16 * b, 16), std::memcpy(o + 16, q + 160 * b + 128, 32);
                std::memcpy(o + 48, q + 160 * b, 128);
                break;
            case TM_DTYPE_Q6_K:
                std::memcpy(o, q + 192 * b, 192), std::memcpy(o + 192, s + 16 * b, 16), std::memcpy(o + 208, e + 2 * b, 2);
                break;
            default: ADD_FAILURE(); break;
            }
        }
        // the padding of the scale rows (a step's 8 blocks are one chunk) is zero
        const bool with_min = w.dtype == TM_DTYPE_Q4_1 || w.dtype == TM_DTYPE_Q5_1;
        const bool legacy = with_min || w.dtype == TM_DTYPE_Q4_0 || w.dtype == TM_DTYPE_Q5_0 || w.dtype == TM_DTYPE_Q8_0;
        const int used = with_min ? 4 * (int)nb : legacy ? 2 * (int)nb : v.row_sd;
        for (int i = used; i < v.row_sd; i++) EXPECT_EQ(s[i], 0) << "row " << r << " scale padding byte " << i;
        for (int i = 4 * (int)nb; i < 4 * v.row_qh; i++) EXPECT_EQ(h[i], 0) << "row " << r << " qh padding byte " << i;
        for (int i = 2 * (int)nb; w.dtype == TM_DTYPE_Q6_K && i < 2 * v.row_d6; i++) EXPECT_EQ(e[i], 0);
    }
    return out;
}

TEST_F(CudaMatmul, RepackRoundTripsAndEmbeddingRowsEqualTheReference) {
    const int64_t rows = 37;
    for (tm_dtype t : {TM_DTYPE_Q4_0, TM_DTYPE_Q4_1, TM_DTYPE_Q5_0, TM_DTYPE_Q5_1, TM_DTYPE_Q8_0, TM_DTYPE_Q4_K,
                       TM_DTYPE_Q5_K, TM_DTYPE_Q6_K, TM_DTYPE_F32, TM_DTYPE_F16, TM_DTYPE_BF16}) {
        for (int64_t cols : {(int64_t)256, is_kquant(t) ? (int64_t)768 : (int64_t)576}) {
            SCOPED_TRACE(std::string(tm_dtype_name(t)) + " cols " + std::to_string(cols));
            const Weight h = make_weight(t, rows, cols, 11 + (uint32_t)t);
            tm_weight w;
            upload(&w, h);
            EXPECT_EQ(w.dtype, t);
            EXPECT_TRUE(unpack_device(w) == h.raw);

            // every row, in a shuffled order, plus one id out of range (-> NaN)
            std::vector<int32_t> ids;
            for (int i = 0; i < rows; i++) ids.push_back((int32_t)((i * 17 + 5) % rows));
            ids.push_back((int32_t)rows);
            Dev<int32_t> did(ids);
            Dev<float> dout(ids.size() * cols);
            dout.poison();
            ASSERT_EQ(tm_cuda_weight_rows(&ctx_, dout.p, &w, did.p, (int)ids.size()), cudaSuccess);
            ASSERT_EQ(cudaStreamSynchronize(ctx_.stream), cudaSuccess);
            const std::vector<float> out = dout.get();
            std::vector<float> ref(cols);
            const int64_t rb = tm_dtype_row_bytes(t, cols);
            for (int i = 0; i < rows; i++) {
                tm_dequantize_row(t, h.raw.data() + ids[i] * rb, ref.data(), cols);
                ASSERT_EQ(std::memcmp(out.data() + i * cols, ref.data(), cols * sizeof(float)), 0) << "id " << ids[i];
            }
            for (int64_t k = 0; k < cols; k++) ASSERT_TRUE(std::isnan(out[rows * cols + k]));
            tm_cuda_weight_deinit(&w);
            EXPECT_EQ(w.data, nullptr);
        }
    }
}

TEST_F(CudaMatmul, QuantizedTypesBothKernelsOddShapes) {
    // 197 rows: not a multiple of the 64-row tiles nor of the GEMV's 2 rows per block.
    // 576 columns (the default model's width): 18 blocks, so the tiles' last 256-value
    // step is partial and a GEMV warp has idle lanes; 768 for the K-quants.
    for (tm_dtype t : kQuant) {
        const int64_t cols = is_kquant(t) ? 768 : 576;
        const Weight h = make_weight(t, 197, cols, 100 + (uint32_t)t);
        tm_weight w;
        upload(&w, h);
        for (tm_mm_path path : {TM_MM_PATH_GEMV, TM_MM_PATH_MMA}) {
            for (int n : {1, 3, 7, 8, 9, 33, 100}) {
                if (path == TM_MM_PATH_GEMV && n > 33) continue; // 13 launches of 8; the tiles cover it
                SCOPED_TRACE(std::string(tm_dtype_name(t)) + " " + path_name(path) + " n " + std::to_string(n));
                const std::vector<float> x = make_x(n, cols, 7 * n + (uint32_t)t);
                std::vector<float> bias(h.rows);
                for (int64_t r = 0; r < h.rows; r++) bias[r] = 0.01f * (float)(r % 13) - 0.05f;
                const bool with_bias = n % 2 == 1;
                const std::vector<float> out = run(w, x, with_bias ? &bias : nullptr, n, path);
                const std::vector<float> ref = reference(h, x, with_bias ? bias.data() : nullptr, n);
                for (size_t i = 0; i < out.size(); i++) ASSERT_FALSE(std::isnan(out[i])) << "output " << i << " not written";
                const double e = rel_err(out, ref);
                EXPECT_LE(e, bound(t));
                char buf[32];
                snprintf(buf, sizeof buf, "%.2e", e);
                RecordProperty(std::string(tm_dtype_name(t)) + "_" + path_name(path) + "_" + std::to_string(n), buf);
            }
        }
        tm_cuda_weight_deinit(&w);
    }
}

TEST_F(CudaMatmul, LongRowsGiveLanesSeveralItems) {
    // 2304 columns = 72 blocks: with 5-8 tokens the GEMV runs 2 warps, so some lanes take
    // two items; the tiles run 9 full steps through both stages.
    for (tm_dtype t : kQuant) {
        const Weight h = make_weight(t, 67, 2304, 300 + (uint32_t)t);
        tm_weight w;
        upload(&w, h);
        for (int n : {1, 6, 40}) {
            for (tm_mm_path path : {TM_MM_PATH_GEMV, TM_MM_PATH_MMA}) {
                if (path == TM_MM_PATH_GEMV && n > 8) continue;
                SCOPED_TRACE(std::string(tm_dtype_name(t)) + " " + path_name(path) + " n " + std::to_string(n));
                const std::vector<float> x = make_x(n, h.cols, 5 * n + 1);
                const double e = rel_err(run(w, x, nullptr, n, path), reference(h, x, nullptr, n));
                EXPECT_LE(e, bound(t));
            }
        }
        tm_cuda_weight_deinit(&w);
    }
}

TEST_F(CudaMatmul, Q5FifthBitsInEveryPatternAtGemmaWidth) {
    // Q5_0 / Q5_1 are what a Q4_K_M file holds for rows that are not a multiple of 256
    // (Gemma 3 270M: 640 columns, 20 blocks, so the tiles' last step has 4). Random qs and
    // qh bytes with sane scales: every fifth bit is 0 or 1 independently of its nibble
    // (a quantizer's output sets it only for the larger values), so a fifth bit read from
    // the wrong position or shifted to the wrong place changes the result.
    for (tm_dtype t : {TM_DTYPE_Q5_0, TM_DTYPE_Q5_1}) {
        const int64_t rows = 130, cols = 640;
        Weight h{t, rows, cols, std::vector<uint8_t>(rows * tm_dtype_row_bytes(t, cols))};
        std::mt19937 rng(900 + (uint32_t)t);
        for (auto &b : h.raw) b = (uint8_t)rng();
        std::uniform_real_distribution<float> ud(0.001f, 0.02f);
        const int64_t bb = tm_dtype_block_bytes(t);
        for (int64_t i = 0; i < rows * cols / TM_QK; i++) {
            const uint16_t d = tm_f32_to_f16(ud(rng)), m = tm_f32_to_f16(-16.0f * ud(rng));
            std::memcpy(h.raw.data() + i * bb, &d, 2);
            if (t == TM_DTYPE_Q5_1) std::memcpy(h.raw.data() + i * bb + 2, &m, 2);
        }
        tm_weight w;
        upload(&w, h);
        EXPECT_TRUE(unpack_device(w) == h.raw);
        std::vector<float> bias(rows);
        for (int64_t r = 0; r < rows; r++) bias[r] = 0.02f * (float)(r % 7) - 0.06f;
        for (tm_mm_path path : {TM_MM_PATH_GEMV, TM_MM_PATH_MMA}) {
            for (int n : {1, 2, 8, 13}) {
                SCOPED_TRACE(std::string(tm_dtype_name(t)) + " " + path_name(path) + " n " + std::to_string(n));
                const std::vector<float> x = make_x(n, cols, 13 * n + (uint32_t)t);
                const std::vector<float> *b = n % 2 ? nullptr : &bias;
                const std::vector<float> out = run(w, x, b, n, path);
                EXPECT_LE(rel_err(out, reference(h, x, b ? b->data() : nullptr, n)), bound(t));
            }
        }
        tm_cuda_weight_deinit(&w);
    }
}

TEST_F(CudaMatmul, TinyShapesAndUnalignedActivations) {
    // 1 and 3 rows (every row of a tile or block clamped but the first ones), one block
    // per row; x placed one float past an aligned address, so no 16-byte loads of it.
    for (tm_dtype t : kQuant) {
        for (int64_t rows : {1, 3}) {
            const int64_t cols = is_kquant(t) ? 256 : 32;
            const Weight h = make_weight(t, rows, cols, 500 + (uint32_t)(t + rows));
            tm_weight w;
            upload(&w, h);
            for (int n : {1, 2, 9}) {
                for (tm_mm_path path : {TM_MM_PATH_GEMV, TM_MM_PATH_MMA}) {
                    SCOPED_TRACE(std::string(tm_dtype_name(t)) + " " + path_name(path) + " rows " +
                                 std::to_string(rows) + " n " + std::to_string(n));
                    const std::vector<float> x = make_x(n, cols, 11 * n);
                    std::vector<float> xs(x.size() + 1);
                    std::copy(x.begin(), x.end(), xs.begin() + 1);
                    Dev<float> dx(xs), dout((size_t)n * rows);
                    dout.poison();
                    ASSERT_EQ(tm_cuda_matmul_path(&ctx_, dout.p, dx.p + 1, &w, nullptr, n, path), cudaSuccess);
                    ASSERT_EQ(cudaStreamSynchronize(ctx_.stream), cudaSuccess);
                    EXPECT_LE(rel_err(dout.get(), reference(h, x, nullptr, n)), bound(t));
                }
            }
            // embedding rows into an unaligned output
            std::vector<int32_t> ids(rows);
            for (int i = 0; i < rows; i++) ids[i] = (int32_t)(rows - 1 - i);
            Dev<int32_t> did(ids);
            Dev<float> dout(rows * cols + 1);
            dout.poison();
            ASSERT_EQ(tm_cuda_weight_rows(&ctx_, dout.p + 1, &w, did.p, (int)rows), cudaSuccess);
            ASSERT_EQ(cudaStreamSynchronize(ctx_.stream), cudaSuccess);
            const std::vector<float> out = dout.get();
            std::vector<float> ref(cols);
            for (int i = 0; i < rows; i++) {
                tm_dequantize_row(t, h.raw.data() + ids[i] * tm_dtype_row_bytes(t, cols), ref.data(), cols);
                EXPECT_EQ(std::memcmp(out.data() + 1 + i * cols, ref.data(), cols * sizeof(float)), 0);
            }
            tm_cuda_weight_deinit(&w);
        }
    }
}

TEST_F(CudaMatmul, DenseTypesThroughCublas) {
    for (tm_dtype t : kDense) {
        const Weight h = make_weight(t, 197, 576, 200 + (uint32_t)t);
        tm_weight w;
        upload(&w, h);
        for (int n : {1, 3, 9, 33}) {
            SCOPED_TRACE(std::string(tm_dtype_name(t)) + " n " + std::to_string(n));
            const std::vector<float> x = make_x(n, h.cols, 3 * n);
            std::vector<float> bias(h.rows, 0.25f);
            const float *b = n % 2 ? bias.data() : nullptr;
            const std::vector<float> out = run(w, x, n % 2 ? &bias : nullptr, n, TM_MM_PATH_AUTO);
            const double e = rel_err(out, reference(h, x, b, n));
            EXPECT_LE(e, bound(t));
            char buf[32];
            snprintf(buf, sizeof buf, "%.2e", e);
            RecordProperty(std::string(tm_dtype_name(t)) + "_" + std::to_string(n), buf);
        }
        tm_cuda_weight_deinit(&w);
    }
}

// Scales at the ends of f16's range: the largest finite (65504), the smallest subnormal,
// zero; activations scaled by 1e4, by 1e-39 (too small to invert, so quantized to zero
// blocks as on the CPU) and all-zero blocks. Integer dot products with f32 scales must
// neither overflow nor lose the small rows: compared row by row (each weight row's
// outputs against their own norm).
TEST_F(CudaMatmul, ExtremeScales) {
    const uint16_t scales[] = {0x7bff, 0x0001, 0x0000, 0x3c00}; // 65504, 2^-24, 0, 1
    for (tm_dtype t : kQuant) {
        const int64_t rows = 70, cols = is_kquant(t) ? 512 : 320;
        Weight h = make_weight(t, rows, cols, 400 + (uint32_t)t);
        const int64_t bb = tm_dtype_block_bytes(t), nb = cols / tm_dtype_block_size(t);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t b = 0; b < nb; b++) {
                uint8_t *blk = h.raw.data() + (r * nb + b) * bb;
                // rows 0-3 mod 4: one scale for the whole row; others: a mix per block
                const uint16_t s = scales[(r % 8 < 4 ? r : r + b) % 4];
                const int off = t == TM_DTYPE_Q6_K ? 208 : 0;
                std::memcpy(blk + off, &s, 2);
                if (t == TM_DTYPE_Q4_1 || t == TM_DTYPE_Q5_1 || t == TM_DTYPE_Q4_K || t == TM_DTYPE_Q5_K)
                    std::memcpy(blk + 2, &scales[(r + b + 1) % 4], 2); // the min (dmin)
            }
        tm_weight w;
        upload(&w, h);
        const int n = 12;
        std::vector<float> x = make_x(n, cols, 9);
        for (int tk = 0; tk < n; tk++)
            for (int64_t k = 0; k < cols; k++) {
                float &v = x[tk * cols + k];
                if (tk % 4 == 1) v *= 1e4f;
                if (tk % 4 == 2) v *= 1e-39f;
                if (tk % 4 == 3 && (k / 32) % 3 == 0) v = 0.0f;
            }
        for (tm_mm_path path : {TM_MM_PATH_GEMV, TM_MM_PATH_MMA}) {
            SCOPED_TRACE(std::string(tm_dtype_name(t)) + " " + path_name(path));
            const std::vector<float> out = run(w, x, nullptr, n, path);
            const std::vector<float> ref = reference(h, x, nullptr, n);
            for (int64_t r = 0; r < rows; r++) {
                double num = 0, den = 0;
                for (int tk = 0; tk < n; tk++) {
                    const double o = out[tk * rows + r], e = ref[tk * rows + r];
                    ASSERT_TRUE(std::isfinite(o)) << "row " << r << " token " << tk;
                    num += (o - e) * (o - e), den += e * e;
                }
                if (den == 0) {
                    EXPECT_EQ(num, 0) << "row " << r;
                } else {
                    EXPECT_LE(std::sqrt(num / den), bound(t)) << "row " << r;
                }
            }
        }
        tm_cuda_weight_deinit(&w);
    }
}

TEST_F(CudaMatmul, MultiEqualsSeparateCalls) {
    // q/k/v-like: three weights of one width sharing x, then a K-quant and a dense one
    // (each starts a new shared quantization or none), with biases on some.
    const int64_t cols = 512;
    const Weight hs[] = {make_weight(TM_DTYPE_Q4_0, 96, cols, 1), make_weight(TM_DTYPE_Q4_1, 32, cols, 2),
                         make_weight(TM_DTYPE_Q8_0, 40, cols, 3), make_weight(TM_DTYPE_Q4_K, 64, cols, 4),
                         make_weight(TM_DTYPE_F16, 24, cols, 5)};
    const int n_w = 5;
    tm_weight ws[n_w];
    for (int k = 0; k < n_w; k++) upload(&ws[k], hs[k]);
    for (int n : {2, 17}) {
        const std::vector<float> x = make_x(n, cols, 77);
        Dev<float> dx(x);
        std::vector<Dev<float> *> outs, singles;
        std::vector<float> bias(96, 0.5f);
        Dev<float> db(bias);
        float *outp[n_w];
        const tm_weight *wp[n_w];
        const float *bp[n_w];
        for (int k = 0; k < n_w; k++) {
            outs.push_back(new Dev<float>((size_t)n * ws[k].n_rows));
            singles.push_back(new Dev<float>((size_t)n * ws[k].n_rows));
            outs[k]->poison(), singles[k]->poison();
            outp[k] = outs[k]->p, wp[k] = &ws[k], bp[k] = k % 2 ? nullptr : db.p;
        }
        ASSERT_EQ(tm_cuda_matmul_multi(&ctx_, n_w, outp, dx.p, wp, bp, n), cudaSuccess);
        for (int k = 0; k < n_w; k++) ASSERT_EQ(tm_cuda_matmul(&ctx_, singles[k]->p, dx.p, &ws[k], bp[k], n), cudaSuccess);
        ASSERT_EQ(cudaStreamSynchronize(ctx_.stream), cudaSuccess);
        for (int k = 0; k < n_w; k++) {
            const std::vector<float> a = outs[k]->get(), b = singles[k]->get();
            EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << "weight " << k << " n " << n;
            EXPECT_FALSE(std::isnan(a[0]));
            delete outs[k], delete singles[k];
        }
    }
    for (int k = 0; k < n_w; k++) tm_cuda_weight_deinit(&ws[k]);
}

TEST_F(CudaMatmul, BadWeightsAreRefusedWithAReason) {
    char err[256] = "";
    tm_weight w;
    std::vector<uint8_t> src(4096);
    EXPECT_EQ(tm_cuda_weight_init(&ctx_, &w, TM_DTYPE_Q8_1, 4, 32, src.data(), err, sizeof err), TM_EUNSUPPORTED);
    EXPECT_NE(std::string(err).find("unsupported weight dtype q8_1"), std::string::npos) << err;
    // types the CPU multiplies but these kernels do not (yet): refused, and the message
    // says where they do run
    for (tm_dtype t : {TM_DTYPE_Q2_K, TM_DTYPE_Q3_K}) {
        const int64_t cols = tm_dtype_block_size(t) == 32 ? 64 : 256;
        std::vector<uint8_t> blocks(4 * tm_dtype_row_bytes(t, cols));
        EXPECT_EQ(tm_cuda_weight_init(&ctx_, &w, t, 4, cols, blocks.data(), err, sizeof err), TM_EUNSUPPORTED);
        EXPECT_NE(std::string(err).find(std::string("unsupported weight dtype ") + tm_dtype_name(t)), std::string::npos) << err;
        EXPECT_NE(std::string(err).find("--device cpu"), std::string::npos) << err;
    }
    EXPECT_EQ(w.data, nullptr);
    EXPECT_EQ(tm_cuda_weight_init(&ctx_, &w, (tm_dtype)77, 4, 32, src.data(), err, sizeof err), TM_EUNSUPPORTED);
    EXPECT_EQ(tm_cuda_weight_init(&ctx_, &w, TM_DTYPE_Q4_0, 4, 48, src.data(), err, sizeof err), TM_EINVAL);
    EXPECT_NE(std::string(err).find("bad q4_0 weight shape 4 x 48"), std::string::npos) << err;
    EXPECT_EQ(tm_cuda_weight_init(&ctx_, &w, TM_DTYPE_Q4_K, 4, 512 + 32, src.data(), err, sizeof err), TM_EINVAL);
    EXPECT_EQ(tm_cuda_weight_init(&ctx_, &w, TM_DTYPE_F16, 0, 32, src.data(), err, sizeof err), TM_EINVAL);
    tm_cuda_weight_deinit(&w); // a zeroed weight: no-op
}

TEST_F(CudaMatmul, DeviceOutOfMemoryIsTmEnomem) {
    size_t free_b = 0, total_b = 0;
    ASSERT_EQ(cudaMemGetInfo(&free_b, &total_b), cudaSuccess);
    // A Q8_0 weight larger than the whole device; its source is never read (the
    // allocation fails first).
    const int64_t rows = (int64_t)(total_b / 34) + 1;
    std::vector<uint8_t> src(64);
    char err[256] = "";
    tm_weight w;
    EXPECT_EQ(tm_cuda_weight_init(&ctx_, &w, TM_DTYPE_Q8_0, rows, 32, src.data(), err, sizeof err), TM_ENOMEM);
    EXPECT_NE(std::string(err).find("out of device memory for a " + std::to_string(rows) + " x 32 q8_0 weight"),
              std::string::npos)
        << err;
    EXPECT_EQ(w.data, nullptr);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess); // cleared, so the next launch check is not confused
    // and the device still works
    const Weight h = make_weight(TM_DTYPE_Q8_0, 8, 64, 1);
    upload(&w, h);
    const std::vector<float> x = make_x(1, 64, 2);
    EXPECT_LE(rel_err(run(w, x, nullptr, 1, TM_MM_PATH_AUTO), reference(h, x, nullptr, 1)), bound(TM_DTYPE_Q8_0));
    tm_cuda_weight_deinit(&w);
}

// A real-size embedding: Qwen2.5-7B's token_embd (152064 x 3584) in F32 is 2.2 GB, so its
// last rows start past 2^31 bytes and an int32 row offset would read another row (or
// fault; llama3-8b's 128256 x 4096 stays just below). The table is address space only (MAP_NORESERVE), with the rows the test reads
// written; the view is built by hand, as tm_cuda_weight_init would lay it out.
TEST_F(CudaMatmul, EmbeddingRowsPastInt32Bytes) {
    const int64_t rows = 152064, cols = 3584;
    tm_cuda_wstore st = {};
    tm_mm_layout(TM_DTYPE_F32, cols, &st.view);
    st.view.n_rows = rows;
    st.n_bytes = (size_t)rows * st.view.row_qs;
    ASSERT_GT((rows - 1) * st.view.row_qs, (int64_t)INT32_MAX);
    void *table = mmap(nullptr, st.n_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(table, MAP_FAILED);
    st.view.qs = (const uint8_t *)table;
    tm_weight w = {TM_DTYPE_F32, rows, cols, table, &st};
    const std::vector<int32_t> ids = {(int32_t)rows - 1, 0, (int32_t)rows - 2, 1 << 16};
    std::vector<float> want;
    for (size_t i = 0; i < ids.size(); i++) {
        const std::vector<float> row = make_x(1, cols, 90 + (uint32_t)i);
        std::memcpy((uint8_t *)table + (size_t)ids[i] * st.view.row_qs, row.data(), cols * sizeof(float));
        want.insert(want.end(), row.begin(), row.end());
    }
    Dev<int32_t> did(ids);
    Dev<float> dout(ids.size() * cols);
    dout.poison();
    ASSERT_EQ(tm_cuda_weight_rows(&ctx_, dout.p, &w, did.p, (int)ids.size()), cudaSuccess) << tm_sim::last_error();
    ASSERT_EQ(cudaStreamSynchronize(ctx_.stream), cudaSuccess);
    EXPECT_TRUE(dout.get() == want);
    munmap(table, st.n_bytes);
}

} // namespace

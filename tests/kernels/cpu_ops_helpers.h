// cpu_ops_helpers.h - what the tests of the CPU backend's ops share (test_ops.cc,
// test_attention.cc): seeded random vectors, the f16 and int8 cache roundings written
// out, tolerance and bitwise comparisons, the SIMD levels to test, and a backend whose
// buffers go through its own alloc/upload/download.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

extern "C" {
#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
}

namespace tm_test {

inline const float kNaN = std::numeric_limits<float>::quiet_NaN();

inline std::vector<float> randu(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
    std::mt19937 g(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto &x : v) x = d(g);
    return v;
}

// Rounds through f16 so that values stored in the KV cache are exact.
inline std::vector<float> f16_round(std::vector<float> v) {
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
inline Int8Rows int8_round(const std::vector<float> &v, int hd) {
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
inline ::testing::AssertionResult close(const std::vector<float> &got, const std::vector<float> &want,
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

inline bool bitwise_equal(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// SIMD levels this CPU and build support (scalar first).
inline std::vector<int> levels() {
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

} // namespace tm_test

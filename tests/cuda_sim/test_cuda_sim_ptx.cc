/* test_cuda_sim_ptx.cc - the harness's tensor-core and async-copy instructions against
 * plain matrix products: mma.m16n8k16 (f16) and mma.m16n8k32 (s8) fed with fragments
 * built from the PTX ISA's layout formulas, the same MMA fed by ldmatrix (.x4 for A,
 * .x2.trans for B, the usual addressing), ldmatrix alone, and cp.async groups. Every
 * element holds a different value, so a wrong lane mapping fails. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kernels/cuda/common.cuh"

namespace {

/* A[i][k] and B[k][n] for the f16 MMA: 256 and 128 distinct values, exact in f16, whose
 * products and sums are exact in float, so the result must match exactly. */
float a_f16(int i, int k) { return (float)(i * 16 + k - 128) / 64.0f; }
float b_f16(int k, int n) { return (float)(k * 8 + n - 64) / 32.0f; }
float c_f32(int i, int n) { return (float)(i * 8 + n) * 0.125f - 3.0f; }

static uint32_t pack2(__half lo, __half hi) {
    return (uint32_t)__half_as_ushort(lo) | (uint32_t)__half_as_ushort(hi) << 16;
}

/* Fragments straight from the formulas (g = lane / 4, t = lane % 4). */
static __global__ void k_mma_f16(float *d_out, const __half *A, const __half *B, const float *C) {
    int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    uint32_t a[4], b[2];
    a[0] = pack2(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]);
    a[1] = pack2(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]);
    a[2] = pack2(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]);
    a[3] = pack2(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9]);
    b[0] = pack2(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]);
    b[1] = pack2(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g]);
    float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    float d[4];
    tm_mma_m16n8k16_f16(d, a, b, c);
    d_out[g * 8 + 2 * t] = d[0];
    d_out[g * 8 + 2 * t + 1] = d[1];
    d_out[(g + 8) * 8 + 2 * t] = d[2];
    d_out[(g + 8) * 8 + 2 * t + 1] = d[3];
}

/* The same product with A and B staged in shared memory and loaded by ldmatrix, as a
 * kernel would: A row-major 16x16, lane l at &A[l % 16][(l / 16) * 8] (.x4); B row-major
 * (k, n) 16x8, lane l at &B[l % 16][0] (.x2.trans). The accumulator aliases c and d. */
static __global__ void k_mma_f16_ldmatrix(float *d_out, const __half *A, const __half *B, const float *C) {
    __shared__ __align__(16) __half sa[16 * 16];
    __shared__ __align__(16) __half sb[16 * 8];
    int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    for (int i = lane; i < 256; i += 32) sa[i] = A[i];
    for (int i = lane; i < 128; i += 32) sb[i] = B[i];
    __syncwarp();
    uint32_t a[4], b[2];
    tm_ldmatrix_x4(a, &sa[(lane % 16) * 16 + (lane / 16) * 8]);
    tm_ldmatrix_x2_trans(b, &sb[(lane % 16) * 8]);
    float acc[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    tm_mma_m16n8k16_f16(acc, a, b, acc);
    d_out[g * 8 + 2 * t] = acc[0];
    d_out[g * 8 + 2 * t + 1] = acc[1];
    d_out[(g + 8) * 8 + 2 * t] = acc[2];
    d_out[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

struct f16_case {
    std::vector<__half> A, B;
    std::vector<float> C, want;
    f16_case() : A(256), B(128), C(128), want(128) {
        for (int i = 0; i < 16; i++)
            for (int k = 0; k < 16; k++) A[i * 16 + k] = __float2half(a_f16(i, k));
        for (int k = 0; k < 16; k++)
            for (int n = 0; n < 8; n++) B[k * 8 + n] = __float2half(b_f16(k, n));
        for (int i = 0; i < 16; i++)
            for (int n = 0; n < 8; n++) {
                double s = c_f32(i, n);
                for (int k = 0; k < 16; k++) s += (double)a_f16(i, k) * b_f16(k, n);
                C[i * 8 + n] = c_f32(i, n);
                want[i * 8 + n] = (float)s;
            }
    }
};

template <class T> T *to_device(const std::vector<T> &h) {
    T *p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, h.size() * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    return p;
}

template <class T> std::vector<T> to_host(const T *p, size_t n) {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
}

TEST(CudaSimPtx, MmaF16MatchesAMatrixProduct) {
    f16_case m;
    __half *A = to_device(m.A), *B = to_device(m.B);
    float *C = to_device(m.C), *D;
    ASSERT_EQ(cudaMalloc(&D, 128 * 4), cudaSuccess);
    for (int via_ldmatrix = 0; via_ldmatrix < 2; via_ldmatrix++) {
        ASSERT_EQ(cudaMemset(D, 0xff, 128 * 4), cudaSuccess);
        cudaError_t e = via_ldmatrix ? TM_LAUNCH(k_mma_f16_ldmatrix, 1, 32, 0, 0, D, A, B, C)
                                     : TM_LAUNCH(k_mma_f16, 1, 32, 0, 0, D, A, B, C);
        ASSERT_EQ(e, cudaSuccess) << tm_sim::last_error();
        auto d = to_host(D, 128);
        for (int i = 0; i < 128; i++) ASSERT_EQ(d[i], m.want[i]) << "via ldmatrix " << via_ldmatrix << " at " << i;
    }
    cudaFree(A), cudaFree(B), cudaFree(C), cudaFree(D);
}

/* s8: A (16, 32), B (32, 8) with a different value at every position of a fragment. */
int8_t a_s8(int i, int k) { return (int8_t)((i * 37 + k * 11 + 5) % 255 - 127); }
int8_t b_s8(int k, int n) { return (int8_t)((k * 13 + n * 29 + 3) % 251 - 125); }

static uint32_t pack4(const int8_t *p, int stride) {
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) r |= (uint32_t)(uint8_t)p[i * stride] << 8 * i;
    return r;
}

static __global__ void k_mma_s8(int *d_out, const int8_t *A, const int8_t *B, const int *C) {
    int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    uint32_t a[4] = {pack4(&A[g * 32 + 4 * t], 1), pack4(&A[(g + 8) * 32 + 4 * t], 1),
                     pack4(&A[g * 32 + 4 * t + 16], 1), pack4(&A[(g + 8) * 32 + 4 * t + 16], 1)};
    uint32_t b[2] = {pack4(&B[(4 * t) * 8 + g], 8), pack4(&B[(4 * t + 16) * 8 + g], 8)};
    int c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    int d[4];
    tm_mma_m16n8k32_s8(d, a, b, c);
    d_out[g * 8 + 2 * t] = d[0];
    d_out[g * 8 + 2 * t + 1] = d[1];
    d_out[(g + 8) * 8 + 2 * t] = d[2];
    d_out[(g + 8) * 8 + 2 * t + 1] = d[3];
}

TEST(CudaSimPtx, MmaS8MatchesAMatrixProduct) {
    std::vector<int8_t> A(16 * 32), B(32 * 8);
    std::vector<int> C(128), want(128);
    for (int i = 0; i < 16; i++)
        for (int k = 0; k < 32; k++) A[i * 32 + k] = a_s8(i, k);
    for (int k = 0; k < 32; k++)
        for (int n = 0; n < 8; n++) B[k * 8 + n] = b_s8(k, n);
    for (int i = 0; i < 16; i++)
        for (int n = 0; n < 8; n++) {
            C[i * 8 + n] = (i * 8 + n) * 1000 - 50000;
            int s = C[i * 8 + n];
            for (int k = 0; k < 32; k++) s += a_s8(i, k) * b_s8(k, n);
            want[i * 8 + n] = s;
        }
    int8_t *dA = to_device(A), *dB = to_device(B);
    int *dC = to_device(C), *dD;
    ASSERT_EQ(cudaMalloc(&dD, 128 * 4), cudaSuccess);
    ASSERT_EQ(TM_LAUNCH(k_mma_s8, 1, 32, 0, 0, dD, dA, dB, dC), cudaSuccess) << tm_sim::last_error();
    auto d = to_host(dD, 128);
    for (int i = 0; i < 128; i++) ASSERT_EQ(d[i], want[i]) << i;
    cudaFree(dA), cudaFree(dB), cudaFree(dC), cudaFree(dD);
}

/* ldmatrix alone: four 8x8 matrices with distinct 16-bit values in a padded shared tile
 * (rows 24 elements apart, so row addresses are not contiguous), every shape. */
static __global__ void k_ldmatrix(uint32_t *out, int n_mats, int trans) {
    __shared__ __align__(16) uint16_t tile[4][8][24];
    int lane = threadIdx.x;
    for (int i = lane; i < 4 * 8 * 24; i += 32) (&tile[0][0][0])[i] = (uint16_t)(i < 768 ? 0x1000 + i : 0);
    __syncwarp();
    int m = lane / 8 % n_mats, row = lane % 8;
    uint32_t r[4] = {0, 0, 0, 0};
    const void *addr = &tile[m][row][8];
    if (n_mats == 4) trans ? tm_ldmatrix_x4_trans(r, addr) : tm_ldmatrix_x4(r, addr);
    else if (n_mats == 2) trans ? tm_ldmatrix_x2_trans(r, addr) : tm_ldmatrix_x2(r, addr);
    for (int i = 0; i < 4; i++) out[lane * 4 + i] = r[i];
}

TEST(CudaSimPtx, LdmatrixEveryShape) {
    uint32_t *out;
    ASSERT_EQ(cudaMalloc(&out, 128 * 4), cudaSuccess);
    for (int n_mats : {2, 4})
        for (int trans : {0, 1}) {
            ASSERT_EQ(TM_LAUNCH(k_ldmatrix, 1, 32, 0, 0, out, n_mats, trans), cudaSuccess) << tm_sim::last_error();
            auto h = to_host(out, 128);
            auto elem = [](int m, int r, int c) { return (uint32_t)(0x1000 + (m * 8 + r) * 24 + 8 + c); };
            for (int lane = 0; lane < 32; lane++)
                for (int m = 0; m < n_mats; m++) {
                    int r = lane / 4, c = 2 * (lane % 4);
                    uint32_t lo = trans ? elem(m, c, r) : elem(m, r, c);
                    uint32_t hi = trans ? elem(m, c + 1, r) : elem(m, r, c + 1);
                    ASSERT_EQ(h[lane * 4 + m], lo | hi << 16) << n_mats << " " << trans << " " << lane << " " << m;
                }
        }
    cudaFree(out);
}

/* cp.async: two commit groups; wait<1> makes the first visible, not the second. */
static __global__ void k_cp_async(float *out, const float *src) {
    __shared__ __align__(16) float s[2][128];
    int t = threadIdx.x;
    tm_cp_async_16(&s[0][4 * t], &src[4 * t]);
    tm_cp_async_commit();
    tm_cp_async_16(&s[1][4 * t], &src[128 + 4 * t]);
    tm_cp_async_commit();
    tm_cp_async_wait<1>();
    __syncthreads();
    out[t] = s[0][(t * 5) % 128];   /* group 0: done */
    out[32 + t] = s[1][t];          /* group 1: still in flight, the poison */
    __syncthreads();
    tm_cp_async_wait<0>();
    __syncthreads();
    out[64 + t] = s[1][(t * 7) % 128];
}

TEST(CudaSimPtx, CpAsyncGroupsBecomeVisibleAtTheirWait) {
    std::vector<float> src(256);
    for (int i = 0; i < 256; i++) src[i] = (float)i + 0.5f;
    float *d_src = to_device(src), *d_out;
    ASSERT_EQ(cudaMalloc(&d_out, 96 * 4), cudaSuccess);
    ASSERT_EQ(TM_LAUNCH(k_cp_async, 1, 32, 0, 0, d_out, d_src), cudaSuccess) << tm_sim::last_error();
    auto h = to_host(d_out, 96);
    for (int t = 0; t < 32; t++) {
        EXPECT_EQ(h[t], src[(t * 5) % 128]) << t;
        EXPECT_TRUE(std::isnan(h[32 + t])) << t << " " << h[32 + t];
        EXPECT_EQ(h[64 + t], src[128 + (t * 7) % 128]) << t;
    }
    cudaFree(d_src), cudaFree(d_out);
}

static __global__ void k_ldmatrix_global(uint32_t *out, const uint16_t *g) {
    uint32_t r[4];
    tm_ldmatrix_x4(r, &g[threadIdx.x * 8]);
    out[threadIdx.x] = r[0];
}

static __global__ void k_mma_half_warp(float *out) {
    if (threadIdx.x >= 16) return;
    uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
    float c[4] = {0, 0, 0, 0}, d[4];
    tm_mma_m16n8k16_f16(d, a, b, c);
    out[threadIdx.x] = d[0];
}

TEST(CudaSimPtxRefuses, LdmatrixFromGlobalMemory) {
    uint16_t *g;
    uint32_t *out;
    ASSERT_EQ(cudaMalloc(&g, 32 * 16), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&out, 32 * 4), cudaSuccess);
    cudaError_t e = TM_LAUNCH(k_ldmatrix_global, 1, 32, 0, 0, out, g);
    EXPECT_EQ(e, cudaErrorIllegalAddress);
    EXPECT_NE(std::string(tm_sim::last_error()).find("not inside shared memory"), std::string::npos)
        << tm_sim::last_error();
    cudaFree(g), cudaFree(out);
}

TEST(CudaSimPtxRefuses, MmaWithHalfTheWarpExited) {
    float *out;
    ASSERT_EQ(cudaMalloc(&out, 32 * 4), cudaSuccess);
    cudaError_t e = TM_LAUNCH(k_mma_half_warp, 1, 32, 0, 0, out);
    EXPECT_EQ(e, cudaErrorLaunchFailure);
    EXPECT_NE(std::string(tm_sim::last_error()).find("mma.m16n8k16"), std::string::npos) << tm_sim::last_error();
    cudaFree(out);
}

} // namespace

/* test_cuda_sim_api.cc - the harness's host side: half/bfloat16 rounding against the
 * project's own conversions (common/), the memory API's checks, events, device
 * attributes, per-kernel attributes on a templated kernel, and cublasGemmEx against a
 * plain column-major product. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/common.cuh"

extern "C" {
#include "common/common.h"
}

namespace {

float bits_to_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

TEST(CudaSimHalf, ConversionsMatchTheProjectsRounding) {
    /* every 251st float bit pattern, both signs, covers normals, subnormals, ties, inf, NaN */
    for (uint64_t u = 0; u <= 0xffffffffull; u += 251) {
        float f = bits_to_f((uint32_t)u);
        uint16_t want = tm_f32_to_f16(f), got = __half_as_ushort(__float2half(f));
        if (std::isnan(f)) {
            ASSERT_TRUE(std::isnan(__half2float(__ushort_as_half(got)))) << std::hex << u;
            continue;
        }
        ASSERT_EQ(got, want) << std::hex << u;
        ASSERT_EQ(__bfloat16_as_ushort(__float2bfloat16(f)), tm_f32_to_bf16(f)) << std::hex << u;
    }
    for (uint32_t h = 0; h < 65536; h++) { /* every half converts back exactly */
        float f = __half2float(__ushort_as_half((uint16_t)h));
        if (std::isnan(f)) continue;
        ASSERT_EQ(f, tm_f16_to_f32((uint16_t)h)) << h;
        ASSERT_EQ(__half_as_ushort(__float2half(f)), h) << h;
        ASSERT_EQ(__bfloat162float(__ushort_as_bfloat16((uint16_t)h)), tm_bf16_to_f32((uint16_t)h)) << h;
    }
}

/* Half arithmetic is the exact result rounded once: check against double rounded by the
 * project's conversion, over random pairs including subnormals and large values. */
TEST(CudaSimHalf, ArithmeticIsCorrectlyRounded) {
    std::mt19937 rng(7);
    auto rnd_half = [&] {
        uint16_t b;
        do b = (uint16_t)rng();
        while ((b & 0x7c00) == 0x7c00);
        return __ushort_as_half(b);
    };
    for (int i = 0; i < 200000; i++) {
        __half a = rnd_half(), b = rnd_half(), c = rnd_half();
        double x = __half2float(a), y = __half2float(b), z = __half2float(c);
        /* x + y and x * y are exact in double; float rounding of them could double-round,
         * so compare with the direct double -> half rounding of __double2half */
        ASSERT_EQ(__half_as_ushort(__hadd(a, b)), __half_as_ushort(__double2half(x + y))) << x << " " << y;
        ASSERT_EQ(__half_as_ushort(__hmul(a, b)), __half_as_ushort(__double2half(x * y))) << x << " " << y;
        ASSERT_EQ(__half_as_ushort(__hfma(a, b, c)), __half_as_ushort(__double2half(x * y + z)))
            << x << " " << y << " " << z;
        __half2 p = __hmul2(__halves2half2(a, b), __halves2half2(b, c));
        ASSERT_EQ(__half_as_ushort(__low2half(p)), __half_as_ushort(__hmul(a, b)));
        ASSERT_EQ(__half_as_ushort(__high2half(p)), __half_as_ushort(__hmul(b, c)));
    }
    /* __double2half rounds once: 1 + 2^-11 + 2^-40 is just above a tie and must round up,
     * where rounding to float first would land on the tie and round to even (down) */
    double d = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
    EXPECT_EQ(__half_as_ushort(__double2half(d)), 0x3c01);
    EXPECT_EQ(__half_as_ushort(__float2half((float)d)), 0x3c00);
}

TEST(CudaSimHalf, PairsAndIntrinsics) {
    __half2 h = __floats2half2_rn(1.5f, -2.25f);
    EXPECT_EQ(__low2float(h), 1.5f);
    EXPECT_EQ(__high2float(h), -2.25f);
    float2 f = __half22float2(__lowhigh2highlow(h));
    EXPECT_EQ(f.x, -2.25f);
    EXPECT_EQ(f.y, 1.5f);
    EXPECT_EQ(__half2float(__hmax(__float2half(NAN), __float2half(3.0f))), 3.0f);
    EXPECT_TRUE(__hisnan(__hmax_nan(__float2half(NAN), __float2half(3.0f))));
    EXPECT_EQ(__half2float(__habs(__float2half(-0.5f))), 0.5f);
    EXPECT_EQ(sizeof(__half2), 4u);
    EXPECT_EQ(alignof(__half2), 4u);
    EXPECT_EQ(alignof(float4), 16u);
    EXPECT_EQ(alignof(int2), 8u);
    EXPECT_EQ(tm_pack_half2(1.0f, -1.0f), 0xbc003c00u);
    __nv_bfloat162 b = __floats2bfloat162_rn(3.0f, 0.1f);
    EXPECT_EQ(__low2float(b), 3.0f);
    EXPECT_EQ(__bfloat16_as_ushort(b.y), tm_f32_to_bf16(0.1f));
}

TEST(CudaSimIntrinsics, IntegerHelpers) {
    EXPECT_EQ(__dp4a((int)0x80ff7f01, (int)0x02030405, 10), 10 + 1 * 5 + 127 * 4 + (-1) * 3 + (-128) * 2);
    EXPECT_EQ(__dp4a(0x80ff7f01u, 0x02030405u, 10u), 10u + 1 * 5 + 127 * 4 + 255 * 3 + 128 * 2);
    EXPECT_EQ(__vsub4(0x01020304u, 0x02020202u), 0xff000102u);
    EXPECT_EQ(__vsubss4(0x807f0000u, 0x01ff0000u), 0x807f0000u);
    EXPECT_EQ(__byte_perm(0x33221100u, 0x77665544u, 0x5140u), 0x55114400u);
    EXPECT_EQ(__popc(0xf0f0u), 8);
    EXPECT_EQ(__clz(1), 31);
    EXPECT_EQ(__clz(0), 32);
    EXPECT_EQ(__ffs(0x10), 5);
    EXPECT_EQ(__ffs(0), 0);
    EXPECT_EQ(__float2int_rn(2.5f), 2);
    EXPECT_EQ(__float2int_rn(-3.5f), -4);
    EXPECT_EQ(__float2int_rn(1e20f), 2147483647);
    EXPECT_EQ(__float2int_rn(NAN), 0);
    EXPECT_EQ(__float2int_rz(-2.7f), -2);
    EXPECT_EQ(__float_as_uint(1.0f), 0x3f800000u);
    EXPECT_EQ(__saturatef(NAN), 0.0f);
    EXPECT_EQ(__saturatef(1.5f), 1.0f);
    EXPECT_EQ(max(3, 5u), 5u);
    EXPECT_EQ(min(-1.0f, 2.0f), -1.0f);
    EXPECT_EQ(__umulhi(0x80000000u, 4u), 2u);
}

/* ---- memory and streams ----------------------------------------------------------------- */

TEST(CudaSimMemory, CopiesAreChecked) {
    size_t free0, total;
    ASSERT_EQ(cudaMemGetInfo(&free0, &total), cudaSuccess);
    float *d;
    ASSERT_EQ(cudaMalloc(&d, 64 * sizeof(float)), cudaSuccess);
    size_t free1;
    ASSERT_EQ(cudaMemGetInfo(&free1, &total), cudaSuccess);
    EXPECT_EQ(free0 - free1, 64 * sizeof(float));
    EXPECT_EQ((uintptr_t)d % 256, 0u);
    std::vector<float> h(64, 1.0f);
    EXPECT_EQ(cudaMemcpy(d, h.data(), 64 * 4, cudaMemcpyHostToDevice), cudaSuccess);
    /* swapped arguments, a range past the allocation, a host pointer as device */
    EXPECT_EQ(cudaMemcpy(h.data(), d, 64 * 4, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    EXPECT_NE(std::string(tm_sim::last_error()).find("not inside one device allocation"), std::string::npos)
        << tm_sim::last_error();
    EXPECT_EQ(cudaMemcpy(d + 1, h.data(), 64 * 4, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    EXPECT_EQ(cudaMemcpy(h.data(), d, 64 * 4, cudaMemcpyDeviceToDevice), cudaErrorInvalidValue);
    EXPECT_EQ(cudaMemset(h.data(), 0, 4), cudaErrorInvalidValue);
    EXPECT_EQ(cudaMemcpy(d, d + 32, 32 * 4, cudaMemcpyDeviceToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemset(d + 63, 0, 4), cudaSuccess);
    EXPECT_EQ(cudaMemset(d + 63, 0, 8), cudaErrorInvalidValue);
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    int x = 0;
    EXPECT_EQ(cudaFree(&x), cudaErrorInvalidValue);
    EXPECT_EQ(cudaFree(d), cudaSuccess);
    EXPECT_EQ(cudaFree(nullptr), cudaSuccess);
    void *too_much;
    EXPECT_EQ(cudaMalloc(&too_much, total + 1), cudaErrorMemoryAllocation);
    float *pinned;
    ASSERT_EQ(cudaMallocHost(&pinned, 16), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(pinned, h.data(), 16, cudaMemcpyHostToHost), cudaSuccess);
    EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
}

TEST(CudaSimMemory, StreamsEventsAndDevice) {
    cudaStream_t s;
    ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    cudaEvent_t a, b;
    ASSERT_EQ(cudaEventCreate(&a), cudaSuccess);
    ASSERT_EQ(cudaEventCreate(&b), cudaSuccess);
    float ms = -1;
    EXPECT_EQ(cudaEventElapsedTime(&ms, a, b), cudaErrorInvalidResourceHandle);
    ASSERT_EQ(cudaEventRecord(a, s), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(b, s), cudaSuccess);
    ASSERT_EQ(cudaEventSynchronize(b), cudaSuccess);
    ASSERT_EQ(cudaEventElapsedTime(&ms, a, b), cudaSuccess);
    EXPECT_GE(ms, 0.0f);
    EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    EXPECT_EQ(cudaEventDestroy(a), cudaSuccess);
    EXPECT_EQ(cudaEventDestroy(b), cudaSuccess);
    EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
    int n = 0, v = 0;
    EXPECT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
    EXPECT_EQ(n, 1);
    EXPECT_EQ(cudaSetDevice(1), cudaErrorInvalidDevice);
    cudaDeviceProp p;
    ASSERT_EQ(cudaGetDeviceProperties(&p, 0), cudaSuccess);
    EXPECT_STREQ(p.name, "cuda-sim");
    EXPECT_EQ(p.major * 10 + p.minor, 90);
    ASSERT_EQ(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
    EXPECT_EQ(v, 132);
    ASSERT_EQ(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0), cudaSuccess);
    EXPECT_EQ(v, 227 * 1024);
    ASSERT_EQ(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0), cudaSuccess);
    EXPECT_EQ(v, 228 * 1024);
}

/* A templated kernel launched as TM_LAUNCH((k<...>), ...) with its own shared-memory opt-in. */
template <typename T, int N>
static __global__ void k_fill(T *out, T v) {
    T *s = tm_dyn_smem<T>();
    for (int i = threadIdx.x; i < N; i += blockDim.x) s[i] = v + (T)i;
    __syncthreads();
    for (int i = threadIdx.x; i < N; i += blockDim.x) out[i] = s[N - 1 - i];
}

TEST(CudaSimMemory, TemplatedKernelAndItsSharedMemoryAttribute) {
    const int n = 16384; /* 64 KiB of int */
    int *out;
    ASSERT_EQ(cudaMalloc(&out, n * 4), cudaSuccess);
    EXPECT_EQ(TM_LAUNCH((k_fill<int, n>), 1, 256, n * 4, 0, out, 3), cudaErrorInvalidValue);
    EXPECT_EQ(cudaFuncSetAttribute(k_fill<int, n>, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 * 1024),
              cudaErrorInvalidValue);
    ASSERT_EQ(cudaFuncSetAttribute(k_fill<int, n>, cudaFuncAttributeMaxDynamicSharedMemorySize, n * 4), cudaSuccess);
    /* the attribute belongs to that instantiation only */
    EXPECT_EQ(TM_LAUNCH((k_fill<float, n>), 1, 256, n * 4, 0, (float *)out, 3.0f), cudaErrorInvalidValue);
    ASSERT_EQ(TM_LAUNCH((k_fill<int, n>), 1, 256, n * 4, 0, out, 3), cudaSuccess) << tm_sim::last_error();
    std::vector<int> h(n);
    ASSERT_EQ(cudaMemcpy(h.data(), out, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int i = 0; i < n; i++) ASSERT_EQ(h[i], 3 + n - 1 - i) << i;
    EXPECT_EQ(TM_LAUNCH((k_fill<int, n>), 1, 1025, 0, 0, out, 3), cudaErrorInvalidConfiguration);
    EXPECT_EQ(TM_LAUNCH((k_fill<int, n>), dim3(1, 65536), 32, 0, 0, out, 3), cudaErrorInvalidConfiguration);
    cudaFree(out);
}

/* ---- cuBLAS ------------------------------------------------------------------------------- */

/* C (m x n) = alpha op(A) op(B) + beta C in column-major storage, element by element. */
template <class T>
void gemm_case(cudaDataType_t type, T (*from_f)(float), cublasOperation_t ta, cublasOperation_t tb) {
    const int m = 5, n = 3, k = 7, lda = 9, ldb = 8, ldc = 6;
    int a_cols = ta == CUBLAS_OP_N ? k : m, b_cols = tb == CUBLAS_OP_N ? n : k;
    std::vector<T> A((size_t)lda * a_cols), B((size_t)ldb * b_cols);
    std::vector<float> C((size_t)ldc * n), want;
    std::vector<float> Af(A.size()), Bf(B.size());
    for (size_t i = 0; i < A.size(); i++) Af[i] = (float)((int)(i * 7 % 31) - 15) / 8.0f, A[i] = from_f(Af[i]);
    for (size_t i = 0; i < B.size(); i++) Bf[i] = (float)((int)(i * 5 % 29) - 14) / 4.0f, B[i] = from_f(Bf[i]);
    for (size_t i = 0; i < C.size(); i++) C[i] = (float)i * 0.5f;
    want = C;
    float alpha = 1.5f, beta = -0.5f;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int l = 0; l < k; l++) {
                float a = ta == CUBLAS_OP_N ? Af[i + (size_t)l * lda] : Af[l + (size_t)i * lda];
                float b = tb == CUBLAS_OP_N ? Bf[l + (size_t)j * ldb] : Bf[j + (size_t)l * ldb];
                s += (double)a * b;
            }
            want[i + (size_t)j * ldc] = (float)(alpha * s + beta * C[i + (size_t)j * ldc]);
        }
    T *dA, *dB;
    float *dC;
    ASSERT_EQ(cudaMalloc(&dA, A.size() * sizeof(T)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&dB, B.size() * sizeof(T)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&dC, C.size() * 4), cudaSuccess);
    cudaMemcpy(dA, A.data(), A.size() * sizeof(T), cudaMemcpyHostToDevice);
    cudaMemcpy(dB, B.data(), B.size() * sizeof(T), cudaMemcpyHostToDevice);
    cudaMemcpy(dC, C.data(), C.size() * 4, cudaMemcpyHostToDevice);
    cublasHandle_t h;
    ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasGemmEx(h, ta, tb, m, n, k, &alpha, dA, type, lda, dB, type, ldb, &beta, dC, CUDA_R_32F, ldc,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_SUCCESS);
    std::vector<float> got(C.size());
    cudaMemcpy(got.data(), dC, C.size() * 4, cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < got.size(); i++) ASSERT_NEAR(got[i], want[i], 1e-4f) << i << " ta " << ta << " tb " << tb;
    EXPECT_EQ(cublasGemmEx(h, ta, tb, m, n, k, &alpha, dA, type, 2, dB, type, ldb, &beta, dC, CUDA_R_32F, ldc,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_INVALID_VALUE);
    cublasDestroy(h);
    cudaFree(dA), cudaFree(dB), cudaFree(dC);
}

TEST(CudaSimCublas, GemmExColumnMajorEveryTypeAndTranspose) {
    for (cublasOperation_t ta : {CUBLAS_OP_N, CUBLAS_OP_T})
        for (cublasOperation_t tb : {CUBLAS_OP_N, CUBLAS_OP_T}) {
            gemm_case<__half>(CUDA_R_16F, [](float f) { return __float2half(f); }, ta, tb);
            gemm_case<__nv_bfloat16>(CUDA_R_16BF, [](float f) { return __float2bfloat16(f); }, ta, tb);
            gemm_case<float>(CUDA_R_32F, [](float f) { return f; }, ta, tb);
        }
}

} // namespace

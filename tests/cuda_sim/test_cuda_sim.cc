/* test_cuda_sim.cc - the CPU harness itself (tests/cuda_sim): launches, barriers, warp
 * collectives, shared memory poisoning, atomics, and each refusal on a deliberately wrong
 * kernel. Compiled in sim mode (-DTM_CUDA_SIM=1, the fake CUDA headers). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/common.cuh"

extern "C" {
#include "common/common.h"
}

namespace {

/* Device buffer of n T, freed at scope exit. */
template <class T> struct dbuf {
    T *p = nullptr;
    size_t n;
    explicit dbuf(size_t n_) : n(n_) { EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess); }
    ~dbuf() { cudaFree(p); }
    std::vector<T> get() const {
        std::vector<T> h(n);
        EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
        return h;
    }
    void put(const std::vector<T> &h) {
        ASSERT_EQ(h.size(), n);
        ASSERT_EQ(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    }
};

std::string err_text(cudaError_t e) { return cudaGetErrorString(e); }

/* ---- kernels that are right ------------------------------------------------------------ */

static __global__ void k_index(int *out) {
    int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int n = blockDim.x * blockDim.y * blockDim.z;
    out[b * n + t] = b * 100000 + t * 10 + (int)(gridDim.x * gridDim.y * gridDim.z == 12);
}

/* Each round, every thread writes its slot and reads its neighbour's after a barrier;
 * without a working barrier the neighbour's slot holds the previous round's value. */
static __global__ void k_rounds(int *out, int n_rounds) {
    __shared__ int slot[1024];
    int t = threadIdx.x, n = blockDim.x, acc = 0;
    for (int r = 0; r < n_rounds; r++) {
        slot[t] = r * 1000 + t;
        __syncthreads();
        acc += slot[(t + 1) % n] - r * 1000;
        __syncthreads();
    }
    out[blockIdx.x * n + t] = acc;
}

static __global__ void k_bar_reduce(int *out, int seed) {
    int t = threadIdx.x;
    int pred = ((t * 7 + seed) % 5) == 0;
    int c = __syncthreads_count(pred);
    int a = __syncthreads_and(t >= 0);
    int o = __syncthreads_or(t == (int)blockDim.x - 1 && seed == 3);
    if (t == 0) out[0] = c, out[1] = a, out[2] = o;
}

/* Every shuffle kind and width on distinct values; out[t][k] for test k. */
static __global__ void k_shuffles(int *out, int width) {
    int lane = threadIdx.x % 32;
    int v = 1000 * (int)threadIdx.x + 7;
    int *o = out + threadIdx.x * 8;
    o[0] = __shfl_sync(0xffffffffu, v, (lane * 5 + 3) % 32, width);
    o[1] = __shfl_up_sync(0xffffffffu, v, 3, width);
    o[2] = __shfl_down_sync(0xffffffffu, v, 5, width);
    o[3] = __shfl_xor_sync(0xffffffffu, v, 6, width);
    float f = __shfl_xor_sync(0xffffffffu, (float)v * 0.5f, 1, width);
    o[4] = (int)(f * 2.0f);
    double d = __shfl_sync(0xffffffffu, (double)v + 0.25, 0, width);
    o[5] = (int)(d * 4.0);
    __half2 h = __shfl_down_sync(0xffffffffu, __floats2half2_rn((float)lane, (float)-lane), 1, width);
    o[6] = (int)__low2float(h) * 100 + (int)-__high2float(h);
    long long ll = __shfl_up_sync(0xffffffffu, (long long)v << 33, 1, width);
    o[7] = (int)(ll >> 33);
}

static int shfl_ref(int kind, int lane, int arg, int width) {
    int base = lane / width * width, j;
    switch (kind) {
    case 0: return base + arg % width;
    case 1: j = lane - arg; return j >= base ? j : lane;
    case 2: j = lane + arg; return j < base + width ? j : lane;
    default: j = lane ^ arg; return j < base + width ? j : lane;
    }
}

static __global__ void k_votes(unsigned *out) {
    int lane = threadIdx.x % 32;
    unsigned b = __ballot_sync(0xffffffffu, lane % 3 == 0 || threadIdx.x == 40);
    int any = __any_sync(0xffffffffu, threadIdx.x == 33);
    int all = __all_sync(0xffffffffu, threadIdx.x < 32);
    unsigned half = 0;
    if (lane < 16) half = __ballot_sync(0x0000ffffu, lane & 1);
    else half = __ballot_sync(0xffff0000u, lane & 2);
    unsigned match = __match_any_sync(0xffffffffu, lane / 4);
    unsigned sum = __reduce_add_sync(0xffffffffu, (unsigned)lane);
    int mx = __reduce_max_sync(0xffffffffu, lane == 7 ? 5 : -lane);
    __syncwarp();
    unsigned *o = out + threadIdx.x * 7;
    o[0] = b, o[1] = (unsigned)any, o[2] = (unsigned)all, o[3] = half, o[4] = match, o[5] = sum, o[6] = (unsigned)mx;
}

static __global__ void k_atomics(int *count, float *fsum, unsigned *mx, int *cas_winner) {
    atomicAdd(count, 1);
    atomicAdd(fsum, 0.5f);
    atomicMax(mx, (unsigned)(blockIdx.x * 1000 + threadIdx.x));
    atomicCAS(cas_winner, -1, (int)(blockIdx.x * blockDim.x + threadIdx.x));
}

/* Reads shared memory before anything wrote it: the harness's poison. */
static __global__ void k_read_static_first(unsigned *out) {
    __shared__ unsigned buf[64];
    out[blockIdx.x * 64 + threadIdx.x] = buf[threadIdx.x];
    __syncthreads();
    buf[threadIdx.x] = 12345; /* the next block must not see this */
}

static __global__ void k_read_dyn_first(unsigned *out, int n) {
    unsigned *buf = tm_dyn_smem<unsigned>();
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[blockIdx.x * n + i] = buf[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = 777;
}

static __global__ void k_dyn_big(int *out, int n) {
    int *buf = tm_dyn_smem<int>();
    for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = i;
    __syncthreads();
    int s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += buf[n - 1 - i];
    atomicAdd(out, s);
}

static __global__ void k_barriers(int n_bar) {
    for (int i = 0; i < n_bar; i++) __syncthreads();
}

/* ---- kernels that are wrong ------------------------------------------------------------- */

static __global__ void k_early_exit(int *out) {
    if (threadIdx.x == 37) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

static __global__ void k_exit_first(int *out) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

static __global__ void k_two_barriers(int *out) {
    if (threadIdx.x < 64) {
        out[threadIdx.x] = 1;
        __syncthreads();
    } else {
        out[threadIdx.x] = 2;
        __syncthreads();
    }
}

static __global__ void k_barrier_vs_warp(int *out) {
    int v = threadIdx.x;
    if (threadIdx.x == 5) __syncthreads();
    else v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

static __global__ void k_mask_without_self(int *out) {
    int v = __shfl_sync(0x0000fffeu, (int)threadIdx.x, 1); /* lane 0 calls it too */
    out[threadIdx.x] = v;
}

static __global__ void k_lane_exited(int *out) {
    if (threadIdx.x == 9) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

static __global__ void k_different_masks(int *out) {
    int v;
    if (threadIdx.x < 8) v = __shfl_xor_sync(0x0000ffffu, (int)threadIdx.x, 1);
    else v = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
    out[threadIdx.x] = v;
}

static __global__ void k_different_collectives(int *out) {
    int v;
    if (threadIdx.x % 2) v = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
    else v = (int)__ballot_sync(0xffffffffu, 1);
    out[threadIdx.x] = v;
}

static __global__ void k_partial_warp(int *out) {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1); /* block of 48 threads */
}

static __global__ void k_dyn_overflow(float *out, int n) {
    float *buf = tm_dyn_smem<float>();
    for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = 1.0f;
    __syncthreads();
    if (threadIdx.x == 21) out[0] = buf[n]; /* one past the end */
}

static __global__ void k_dyn_write_past(int n) {
    float *buf = tm_dyn_smem<float>();
    if (threadIdx.x == 2) buf[n + 300] = 1.0f; /* well past: the guard page */
}

static __device__ int deep(int depth) {
    volatile char frame[1024];
    frame[depth % 1024] = (char)depth;
    return depth == 0 ? frame[0] : deep(depth - 1) + frame[depth % 1024];
}

static __global__ void k_stack_overflow(int *out) {
    out[threadIdx.x] = threadIdx.x == 4 ? deep(100000) : 0;
}

static __global__ void k_wild_pointer(int *out) {
    static volatile uintptr_t wild = 0x10; /* volatile: the compiler cannot see the address */
    if (threadIdx.x == 6) *(volatile int *)wild = 1;
    out[threadIdx.x] = 1;
}

TEST(CudaSim, IndicesOverA3DGrid) {
    dim3 grid(3, 2, 2), block(4, 3, 5);
    int n = 12 * 60;
    dbuf<int> out(n);
    ASSERT_EQ(TM_LAUNCH(k_index, grid, block, 0, 0, out.p), cudaSuccess);
    auto h = out.get();
    for (int b = 0; b < 12; b++)
        for (int t = 0; t < 60; t++) ASSERT_EQ(h[b * 60 + t], b * 100000 + t * 10 + 1) << b << " " << t;
}

TEST(CudaSim, BarriersAcrossManyWarps) {
    for (int threads : {1, 31, 32, 96, 1024}) {
        dbuf<int> out(2 * threads);
        ASSERT_EQ(TM_LAUNCH(k_rounds, 2, threads, 0, 0, out.p, 5), cudaSuccess) << last_error();
        auto h = out.get();
        for (int i = 0; i < 2 * threads; i++) ASSERT_EQ(h[i], 5 * ((i % threads + 1) % threads)) << threads;
    }
}

TEST(CudaSim, BarrierReductions) {
    for (int seed : {0, 3}) {
        dbuf<int> out(3);
        ASSERT_EQ(TM_LAUNCH(k_bar_reduce, 1, 200, 0, 0, out.p, seed), cudaSuccess) << last_error();
        int want = 0;
        for (int t = 0; t < 200; t++) want += ((t * 7 + seed) % 5) == 0;
        auto h = out.get();
        EXPECT_EQ(h[0], want);
        EXPECT_EQ(h[1], 1);
        EXPECT_EQ(h[2], seed == 3);
    }
}

TEST(CudaSim, EveryShuffleKindAndWidth) {
    for (int width : {1, 2, 4, 8, 16, 32}) {
        dbuf<int> out(64 * 8);
        ASSERT_EQ(TM_LAUNCH(k_shuffles, 1, 64, 0, 0, out.p, width), cudaSuccess) << last_error();
        auto h = out.get();
        for (int t = 0; t < 64; t++) {
            int lane = t % 32, w = t / 32 * 32;
            const int *o = &h[t * 8];
            auto val = [&](int l) { return 1000 * (w + l) + 7; };
            EXPECT_EQ(o[0], val(shfl_ref(0, lane, (lane * 5 + 3) % 32, width))) << width << " " << t;
            EXPECT_EQ(o[1], val(shfl_ref(1, lane, 3, width))) << width << " " << t;
            EXPECT_EQ(o[2], val(shfl_ref(2, lane, 5, width))) << width << " " << t;
            EXPECT_EQ(o[3], val(shfl_ref(3, lane, 6, width))) << width << " " << t;
            EXPECT_EQ(o[4], val(shfl_ref(3, lane, 1, width))) << width << " " << t;
            EXPECT_EQ(o[5], 4 * val(shfl_ref(0, lane, 0, width)) + 1) << width << " " << t;
            int s = shfl_ref(2, lane, 1, width);
            EXPECT_EQ(o[6], s * 100 + s) << width << " " << t;
            EXPECT_EQ(o[7], val(shfl_ref(1, lane, 1, width))) << width << " " << t;
        }
    }
}

TEST(CudaSim, VotesMatchAndReduce) {
    dbuf<unsigned> out(64 * 7);
    ASSERT_EQ(TM_LAUNCH(k_votes, 1, 64, 0, 0, out.p), cudaSuccess) << last_error();
    auto h = out.get();
    unsigned thirds = 0;
    for (int l = 0; l < 32; l += 3) thirds |= 1u << l;
    for (int t = 0; t < 64; t++) {
        const unsigned *o = &h[t * 7];
        int lane = t % 32;
        EXPECT_EQ(o[0], t < 32 ? thirds : thirds | (1u << 8)) << t;
        EXPECT_EQ(o[1], t >= 32 ? 1u : 0u) << t;
        EXPECT_EQ(o[2], t < 32 ? 1u : 0u) << t;
        EXPECT_EQ(o[3], lane < 16 ? 0xaaaau : 0xccccu << 16) << t;
        EXPECT_EQ(o[4], 0xfu << (lane / 4 * 4)) << t;
        EXPECT_EQ(o[5], 496u) << t;
        EXPECT_EQ((int)o[6], 5) << t;
    }
}

TEST(CudaSim, AtomicsFromManyThreads) {
    dbuf<int> count(1), winner(1);
    dbuf<float> fsum(1);
    dbuf<unsigned> mx(1);
    ASSERT_EQ(cudaMemset(count.p, 0, 4), cudaSuccess);
    ASSERT_EQ(cudaMemset(fsum.p, 0, 4), cudaSuccess);
    ASSERT_EQ(cudaMemset(mx.p, 0, 4), cudaSuccess);
    ASSERT_EQ(cudaMemset(winner.p, 0xff, 4), cudaSuccess);
    ASSERT_EQ(TM_LAUNCH(k_atomics, 7, 160, 0, 0, count.p, fsum.p, mx.p, winner.p), cudaSuccess) << last_error();
    EXPECT_EQ(count.get()[0], 7 * 160);
    EXPECT_EQ(fsum.get()[0], 7 * 160 * 0.5f);
    EXPECT_EQ(mx.get()[0], 6000u + 159u);
    int w = winner.get()[0];
    EXPECT_TRUE(w >= 0 && w < 7 * 160) << w;
}

TEST(CudaSim, StaticSharedIsPoisonedEachBlock) {
    dbuf<unsigned> out(3 * 64);
    ASSERT_EQ(TM_LAUNCH(k_read_static_first, 3, 64, 0, 0, out.p), cudaSuccess) << last_error();
    for (unsigned v : out.get()) ASSERT_EQ(v, 0xffffffffu);
}

TEST(CudaSim, DynamicSharedIsPoisonedAndSized) {
    dbuf<unsigned> out(2 * 100);
    ASSERT_EQ(TM_LAUNCH(k_read_dyn_first, 2, 32, 100 * sizeof(unsigned), 0, out.p, 100), cudaSuccess)
        << last_error();
    for (unsigned v : out.get()) ASSERT_EQ(v, 0xffffffffu);
    float f;
    unsigned u = 0xffffffffu;
    memcpy(&f, &u, 4);
    EXPECT_TRUE(std::isnan(f)); /* the poison reads as NaN in float kernels */
}

TEST(CudaSim, DynamicSharedAbove48KiBNeedsTheAttribute) {
    int n = 60000 / 4;
    dbuf<int> out(1);
    cudaError_t e = TM_LAUNCH(k_dyn_big, 1, 128, n * 4, 0, out.p, n);
    ASSERT_EQ(e, cudaErrorInvalidValue);
    EXPECT_NE(err_text(e).find("cudaFuncSetAttribute"), std::string::npos) << err_text(e);
    ASSERT_EQ(cudaFuncSetAttribute(k_dyn_big, cudaFuncAttributeMaxDynamicSharedMemorySize, n * 4), cudaSuccess);
    ASSERT_EQ(cudaMemset(out.p, 0, 4), cudaSuccess);
    ASSERT_EQ(TM_LAUNCH(k_dyn_big, 1, 128, n * 4, 0, out.p, n), cudaSuccess) << last_error();
    EXPECT_EQ(out.get()[0], n * (n - 1) / 2);
}

/* ---- refusals ---------------------------------------------------------------------------- */

/* Launches a wrong kernel, expects the refusal with these words, then checks that the
 * next launch still works. */
#define EXPECT_REFUSED(launch, code, ...)                                                   \
    do {                                                                                   \
        cudaError_t e_ = (launch);                                                          \
        EXPECT_EQ(e_, code) << last_error();                                                \
        std::string m_ = err_text(e_);                                                      \
        for (const char *w_ : {__VA_ARGS__}) EXPECT_NE(m_.find(w_), std::string::npos) << m_; \
        EXPECT_EQ(cudaGetLastError(), cudaSuccess); /* TM_LAUNCH read it, as on the GPU */  \
        dbuf<int> ok_(64);                                                                  \
        EXPECT_EQ(TM_LAUNCH(k_rounds, 2, 32, 0, 0, ok_.p, 2), cudaSuccess) << last_error(); \
    } while (0)

TEST(CudaSimRefuses, ThreadExitsWhileOthersWaitAtABarrier) {
    dbuf<int> out(128);
    EXPECT_REFUSED(TM_LAUNCH(k_early_exit, 2, 128, 0, 0, out.p), cudaErrorLaunchFailure, "kernel 'k_early_exit'",
                   "block (0,0,0)", "thread (37,0,0)", "exited", "__syncthreads");
    EXPECT_REFUSED(TM_LAUNCH(k_exit_first, 1, 64, 0, 0, out.p), cudaErrorLaunchFailure, "kernel 'k_exit_first'",
                   "thread (1,0,0)", "thread (0,0,0) has exited");
}

TEST(CudaSimRefuses, ThreadsAtDifferentBarriers) {
    dbuf<int> out(128);
    EXPECT_REFUSED(TM_LAUNCH(k_two_barriers, 1, 128, 0, 0, out.p), cudaErrorLaunchFailure, "k_two_barriers",
                   "thread (64,0,0)", "test_cuda_sim.cc", "same barrier");
}

TEST(CudaSimRefuses, BarrierAgainstAWarpCollective) {
    dbuf<int> out(64);
    EXPECT_REFUSED(TM_LAUNCH(k_barrier_vs_warp, 1, 64, 0, 0, out.p), cudaErrorLaunchFailure, "k_barrier_vs_warp",
                   "deadlock", "__shfl_xor_sync");
}

TEST(CudaSimRefuses, CollectiveMaskWithoutTheCaller) {
    dbuf<int> out(32);
    EXPECT_REFUSED(TM_LAUNCH(k_mask_without_self, 1, 32, 0, 0, out.p), cudaErrorLaunchFailure,
                   "thread (0,0,0)", "__shfl_sync", "does not include the calling lane 0");
}

TEST(CudaSimRefuses, CollectiveWaitingForAnExitedLane) {
    dbuf<int> out(32);
    EXPECT_REFUSED(TM_LAUNCH(k_lane_exited, 1, 32, 0, 0, out.p), cudaErrorLaunchFailure, "k_lane_exited",
                   "thread (9,0,0)", "exited", "__shfl_xor_sync");
}

TEST(CudaSimRefuses, LanesWithDifferentMasks) {
    dbuf<int> out(32);
    EXPECT_REFUSED(TM_LAUNCH(k_different_masks, 1, 32, 0, 0, out.p), cudaErrorLaunchFailure, "thread (8,0,0)",
                   "0xffffffff", "0xffff", "same mask");
}

TEST(CudaSimRefuses, LanesInDifferentCollectives) {
    dbuf<int> out(32);
    EXPECT_REFUSED(TM_LAUNCH(k_different_collectives, 1, 32, 0, 0, out.p), cudaErrorLaunchFailure,
                   "__ballot_sync", "__shfl_xor_sync", "same collective");
}

TEST(CudaSimRefuses, FullMaskInAPartialWarp) {
    dbuf<int> out(48);
    EXPECT_REFUSED(TM_LAUNCH(k_partial_warp, 1, 48, 0, 0, out.p), cudaErrorLaunchFailure, "thread (32,0,0)",
                   "do not exist", "48 threads");
}

TEST(CudaSimRefuses, DynamicSharedMemoryBeyondTheLaunch) {
    dbuf<float> out(1);
    EXPECT_REFUSED(TM_LAUNCH(k_dyn_overflow, 1, 64, 256 * 4, 0, out.p, 256), cudaErrorIllegalAddress,
                   "thread (21,0,0)", "byte 1024 of dynamic shared memory", "beyond the 1024 bytes");
    EXPECT_REFUSED(TM_LAUNCH(k_dyn_write_past, 3, 32, 64 * 4, 0, 64), cudaErrorIllegalAddress, "thread (2,0,0)",
                   "byte 1456 of dynamic shared memory", "beyond the 256 bytes");
#if defined(__x86_64__) /* the fault's error code says which; elsewhere it may say "accesses" */
    EXPECT_REFUSED(TM_LAUNCH(k_dyn_overflow, 1, 64, 256 * 4, 0, out.p, 256), cudaErrorIllegalAddress, "reads byte 1024");
    EXPECT_REFUSED(TM_LAUNCH(k_dyn_write_past, 1, 32, 64 * 4, 0, 64), cudaErrorIllegalAddress, "writes byte 1456");
#endif
}

TEST(CudaSimRefuses, StackOverflowAndWildPointers) {
    dbuf<int> out(32);
    EXPECT_REFUSED(TM_LAUNCH(k_stack_overflow, 1, 32, 0, 0, out.p), cudaErrorLaunchOutOfResources,
                   "thread (4,0,0)", "stack overflow");
    EXPECT_REFUSED(TM_LAUNCH(k_wild_pointer, 1, 32, 0, 0, out.p), cudaErrorIllegalAddress, "thread (6,0,0)",
                   "address 0x10");
}

TEST(CudaSim, LaunchesAreIsolated) {
    /* the second launch of a kernel sees the poison, not what the first left in shared memory */
    for (int round = 0; round < 2; round++) {
        dbuf<unsigned> out(64);
        ASSERT_EQ(TM_LAUNCH(k_read_static_first, 1, 64, 0, 0, out.p), cudaSuccess) << last_error();
        for (unsigned v : out.get()) ASSERT_EQ(v, 0xffffffffu) << round;
        dbuf<unsigned> dyn(100);
        ASSERT_EQ(TM_LAUNCH(k_read_dyn_first, 1, 32, 100 * sizeof(unsigned), 0, dyn.p, 100), cudaSuccess);
        for (unsigned v : dyn.get()) ASSERT_EQ(v, 0xffffffffu) << round;
    }
}

TEST(CudaSim, LaunchCost) {
    /* 200 blocks x 256 threads x 20 barriers: the size of a unit test's launches */
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(TM_LAUNCH(k_barriers, 200, 256, 0, 0, 20), cudaSuccess) << last_error();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("launch 200 x 256 threads x 20 barriers: %.1f ms (%.0f ns per thread-barrier)\n", s * 1e3,
           s * 1e9 / (200.0 * 256 * 21));
}

} // namespace

/* bench_cuda_attention.cu - paged attention on a GPU (kernels/cuda/attention.cuh).
 *
 *   1. check: a mixed ragged batch (decodes, prefill chunks after cached prefixes, pages
 *      shuffled) on llama3-8b's and SmolLM2-135M's shapes against the CPU scalar
 *      reference; ||out - ref|| / ||ref|| must stay under 1e-3 (test_attention.cc says why).
 *   2. copy: device-to-device cudaMemcpy bandwidth (bytes read + written per second), the
 *      yardstick for the memory-bound decode.
 *   3. decode: batch 1, 16, 64 at contexts 512..8192 on llama3-8b's attention shape (32
 *      heads, 8 kv heads, head_dim 128, 16-token pages, shuffled): time per call and the
 *      KV bytes it must read per second, as a fraction of the copy bandwidth. Calls cycle
 *      through enough layers (at least 256 MiB of KV) that L2 cannot hold what they read.
 *   4. prefill: one sequence of 1k and 4k tokens from empty, and a 512-token chunk after
 *      3584 cached, in TFLOP/s (4 flops per visible (query, key) pair per head dim).
 *
 * Usage: bench_cuda_attention [--quick]   (--quick: fewer configurations and repeats)
 * Exit status 1 if the check fails or a CUDA call does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cuda/attention.cuh"

extern "C" {
#include "kernels/cpu/simd.h"
}

#define CHECK(x)                                                                                        \
    do {                                                                                                \
        cudaError_t e_ = (x);                                                                           \
        if (e_ != cudaSuccess) {                                                                        \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));         \
            exit(1);                                                                                    \
        }                                                                                               \
    } while (0)

/* Uniform values in [-1, 1) from a hash of the index: fills gigabytes in milliseconds. */
static __global__ void bench_fill_half(__half *p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        p[i] = __float2half((float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
    }
}

static __global__ void bench_fill_float(float *p, size_t n, uint32_t seed, float amp) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        p[i] = amp * ((float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
    }
}

template <class T>
static T *dev_copy(const std::vector<T> &v) {
    T *p;
    CHECK(cudaMalloc((void **)&p, std::max<size_t>(v.size(), 1) * sizeof(T)));
    if (!v.empty()) CHECK(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return p;
}

/* A step's batch in host and device memory. */
struct Batch {
    std::vector<int32_t> tokens, pos, seq_start, ctx_len, table, slots;
    int max_blocks = 0;
    tm_batch host = {};
    tm_cuda_batch dev = {};

    /* seqs: (ctx, q_len); pages dealt from `pages` in order */
    Batch(const std::vector<std::pair<int, int>> &seqs, int bs, const std::vector<int32_t> &pages, uint64_t step) {
        for (auto &s : seqs) max_blocks = std::max(max_blocks, (s.first + bs - 1) / bs);
        table.assign(seqs.size() * max_blocks, -1);
        size_t next = 0;
        seq_start.push_back(0);
        for (size_t i = 0; i < seqs.size(); i++) {
            const int ctx = seqs[i].first, q_len = seqs[i].second;
            for (int b = 0; b * bs < ctx; b++) table[i * max_blocks + b] = pages[next++];
            for (int j = 0; j < q_len; j++) {
                const int p = ctx - q_len + j;
                pos.push_back(p);
                tokens.push_back(0);
                slots.push_back(table[i * max_blocks + p / bs] * bs + p % bs);
            }
            ctx_len.push_back(ctx);
            seq_start.push_back((int32_t)pos.size());
        }
        host.n_tokens = (int)pos.size();
        host.n_seqs = (int)seqs.size();
        host.tokens = tokens.data();
        host.pos = pos.data();
        host.seq_start = seq_start.data();
        host.ctx_len = ctx_len.data();
        host.block_table = table.data();
        host.max_blocks = max_blocks;
        host.slots = slots.data();
        dev.host = &host;
        dev.step = step;
        dev.tokens = dev_copy(tokens);
        dev.pos = dev_copy(pos);
        dev.seq_start = dev_copy(seq_start);
        dev.ctx_len = dev_copy(ctx_len);
        dev.block_table = dev_copy(table);
        dev.slots = dev_copy(slots);
    }
    ~Batch() {
        for (void *p : {(void *)dev.tokens, (void *)dev.pos, (void *)dev.seq_start, (void *)dev.ctx_len,
                        (void *)dev.block_table, (void *)dev.slots})
            cudaFree(p);
    }
};

static std::vector<int32_t> shuffled_pages(int n, uint32_t seed) {
    std::vector<int32_t> p(n);
    std::iota(p.begin(), p.end(), 0);
    std::shuffle(p.begin(), p.end(), std::mt19937(seed));
    return p;
}

static uint64_t g_step = 1;

/* Correctness on the device: out vs the CPU scalar backend on the same f16 K/V. */
static bool check_case(const tm_cuda_ctx *ctx, tm_cuda_attn_state *st, int n_heads, int n_kvh, int hd,
                       const std::vector<std::pair<int, int>> &seqs) {
    const int bs = 16;
    int n_blocks = 2;
    for (auto &s : seqs) n_blocks += (s.first + bs - 1) / bs;
    Batch b(seqs, bs, shuffled_pages(n_blocks, 7), g_step++);
    std::mt19937 g(11);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const size_t row = (size_t)n_kvh * hd, layer_elems = (size_t)n_blocks * row * bs;
    std::vector<uint16_t> kpool(layer_elems, 0x7e00), vpool(layer_elems, 0x7e00); /* NaN where unused */

    char err[256] = "";
    tm_backend *be = tm_backend_cpu_create(0, TM_SIMD_SCALAR, err, sizeof err);
    if (!be) {
        fprintf(stderr, "cpu backend: %s\n", err);
        return false;
    }
    tm_kv_shape shape = {1, n_blocks, bs, n_kvh, hd, TM_KV_F16};
    tm_kv_cache *ckv = NULL;
    if (be->kv_create(be, &shape, &ckv, NULL, 0) != 0) return false;
    for (size_t s = 0; s < seqs.size(); s++) {
        const int ctx_len = seqs[s].first;
        std::vector<float> k(ctx_len * row), v(ctx_len * row);
        std::vector<int32_t> sl(ctx_len);
        for (auto &x : k) x = u(g);
        for (auto &x : v) x = u(g);
        for (int p = 0; p < ctx_len; p++) {
            sl[p] = b.table[s * b.max_blocks + p / bs] * bs + p % bs;
            for (int h = 0; h < n_kvh; h++)
                for (int i = 0; i < hd; i++) {
                    size_t dst = (((size_t)(sl[p] / bs) * n_kvh + h) * bs + sl[p] % bs) * hd + i;
                    kpool[dst] = tm_f32_to_f16(k[p * row + h * hd + i]);
                    vpool[dst] = tm_f32_to_f16(v[p * row + h * hd + i]);
                }
        }
        be->kv_store(be, ckv, 0, k.data(), v.data(), sl.data(), ctx_len);
    }
    const size_t n_out = (size_t)b.host.n_tokens * n_heads * hd;
    std::vector<float> q(n_out), ref(n_out), got(n_out, NAN);
    std::uniform_real_distribution<float> uq(-3.0f, 3.0f);
    for (auto &x : q) x = uq(g);
    const float scale = 1.0f / sqrtf((float)hd);
    be->attention(be, ref.data(), q.data(), ckv, 0, &b.host, n_heads, scale, 0, 0.0f);
    be->kv_destroy(be, ckv);
    be->destroy(be);

    struct tm_kv_cache kv;
    kv.shape = shape;
    kv.k = (__half *)dev_copy(kpool);
    kv.v = (__half *)dev_copy(vpool);
    float *dq = dev_copy(q), *dout = dev_copy(got);
    CHECK(tm_cuda_attention(ctx, st, dout, dq, &kv, 0, &b.dev, n_heads, scale, 0, 0.0f));
    CHECK(cudaMemcpy(got.data(), dout, n_out * sizeof(float), cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    for (size_t i = 0; i < n_out; i++) {
        num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    const double rel = std::isfinite(num) ? sqrt(num / den) : INFINITY;
    const bool ok = rel <= 1e-3;
    printf("check  heads %2d/%d hd %3d, %zu seqs, %d tokens: rel err %.2e %s (splits: %d merges)\n", n_heads, n_kvh,
           hd, seqs.size(), b.host.n_tokens, rel, ok ? "PASS" : "FAIL", st->n_merge);
    for (void *p : {(void *)kv.k, (void *)kv.v, (void *)dq, (void *)dout}) cudaFree(p);
    return ok;
}

/* Device-to-device copy bandwidth, bytes read + written per second. */
static double copy_bandwidth(cudaStream_t stream, void *a, void *b, size_t n) {
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    CHECK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, stream));
    const int iters = 10;
    CHECK(cudaEventRecord(e0, stream));
    for (int i = 0; i < iters; i++) CHECK(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, n, cudaMemcpyDeviceToDevice, stream));
    CHECK(cudaEventRecord(e1, stream));
    CHECK(cudaEventSynchronize(e1));
    float ms;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return 2.0 * n * iters / (ms * 1e-3);
}

/* Mean seconds per tm_cuda_attention call of one step, cycling layers. */
static double time_attention(const tm_cuda_ctx *ctx, tm_cuda_attn_state *st, float *out, const float *q,
                             const struct tm_kv_cache *kv, const tm_cuda_batch *b, int n_heads, int iters) {
    const float scale = 1.0f / sqrtf((float)kv->shape.head_dim);
    for (int i = 0; i < 3; i++) CHECK(tm_cuda_attention(ctx, st, out, q, kv, i % kv->shape.n_layers, b, n_heads, scale, 0, 0.0f));
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    CHECK(cudaEventRecord(e0, ctx->stream));
    for (int i = 0; i < iters; i++)
        CHECK(tm_cuda_attention(ctx, st, out, q, kv, i % kv->shape.n_layers, b, n_heads, scale, 0, 0.0f));
    CHECK(cudaEventRecord(e1, ctx->stream));
    CHECK(cudaEventSynchronize(e1));
    float ms;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return ms * 1e-3 / iters;
}

int main(int argc, char **argv) {
    const bool quick = argc > 1 && !strcmp(argv[1], "--quick");
    int dev = 0, n_sm = 0, smem_optin = 0, major = 0, minor = 0;
    CHECK(cudaSetDevice(dev));
    CHECK(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev));
    CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, dev));
    printf("device %s, %d SMs, cc %d.%d, %d KiB shared memory per block\n", prop.name, n_sm, major, minor,
           smem_optin / 1024);

    tm_cuda_scratch scratch = {NULL, 0};
    tm_cuda_ctx ctx = {};
    CHECK(cudaStreamCreate(&ctx.stream));
    ctx.scratch = &scratch;
    ctx.n_sm = n_sm;
    ctx.cc = 10 * major + minor;
    ctx.max_smem = (size_t)smem_optin;
    tm_cuda_attn_state st = {};

    /* 1. check */
    bool ok = true;
    const std::vector<std::pair<int, int>> mixed = {{1, 1},     {17, 1},    {700, 1}, {2100, 1}, {300, 45},
                                                     {160, 160}, {1200, 64}, {33, 2},  {5000, 1}, {90, 7}};
    ok &= check_case(&ctx, &st, 32, 8, 128, mixed);
    ok &= check_case(&ctx, &st, 9, 3, 64, mixed);
    ok &= check_case(&ctx, &st, 28, 4, 128, {{3000, 1}, {400, 100}});
    ok &= check_case(&ctx, &st, 8, 4, 256, {{2000, 1}, {300, 50}});
    ok &= check_case(&ctx, &st, 9, 3, 64, {{8000, 1}}); /* one long decode: many splits */

    /* 2. copy bandwidth */
    const size_t copy_bytes = (size_t)1 << 30;
    void *ca, *cb;
    CHECK(cudaMalloc(&ca, copy_bytes));
    CHECK(cudaMalloc(&cb, copy_bytes));
    const double copy_bw = copy_bandwidth(ctx.stream, ca, cb, copy_bytes);
    CHECK(cudaFree(ca));
    CHECK(cudaFree(cb));
    printf("copy   %.0f GB/s (device to device, read + write)\n", copy_bw / 1e9);

    /* 3. decode, llama3-8b: one KV pool big enough for the largest case, reused */
    const int n_heads = 32, n_kvh = 8, hd = 128, bs = 16;
    const size_t token_bytes = (size_t)n_kvh * hd * 2; /* of K, and of V */
    const size_t pool_tokens = (size_t)64 * 8192;
    const size_t pool_elems = pool_tokens * n_kvh * hd;
    __half *kpool, *vpool;
    CHECK(cudaMalloc((void **)&kpool, pool_elems * 2));
    CHECK(cudaMalloc((void **)&vpool, pool_elems * 2));
    CHECK(TM_LAUNCH(bench_fill_half, 4 * n_sm, 256, 0, ctx.stream, kpool, pool_elems, 1u));
    CHECK(TM_LAUNCH(bench_fill_half, 4 * n_sm, 256, 0, ctx.stream, vpool, pool_elems, 2u));
    const size_t max_q = (size_t)4096 * n_heads * hd;
    float *q, *out;
    CHECK(cudaMalloc((void **)&q, max_q * 4));
    CHECK(cudaMalloc((void **)&out, max_q * 4));
    CHECK(TM_LAUNCH(bench_fill_float, 4 * n_sm, 256, 0, ctx.stream, q, max_q, 3u, 3.0f));

    const std::vector<int> batches = quick ? std::vector<int>{1, 64} : std::vector<int>{1, 16, 64};
    const std::vector<int> ctxs = quick ? std::vector<int>{1024, 8192} : std::vector<int>{512, 1024, 2048, 4096, 8192};
    printf("decode llama3-8b (32/8 heads, hd 128, 16-token pages, shuffled)\n");
    printf("  %5s %6s %10s %10s %9s %8s\n", "batch", "ctx", "us/call", "KV MB", "GB/s", "of copy");
    for (int B : batches)
        for (int C : ctxs) {
            const int pages_per_layer = B * C / bs;
            const size_t layer_bytes = (size_t)B * C * token_bytes * 2;
            int n_layers = (int)std::min<size_t>(std::max<size_t>((256u << 20) / layer_bytes, 1),
                                                 pool_tokens / ((size_t)B * C));
            struct tm_kv_cache kv;
            kv.shape = {n_layers, pages_per_layer, bs, n_kvh, hd, TM_KV_F16};
            kv.k = kpool;
            kv.v = vpool;
            Batch b(std::vector<std::pair<int, int>>(B, {C, 1}), bs, shuffled_pages(pages_per_layer, B + C), g_step++);
            const double t = time_attention(&ctx, &st, out, q, &kv, &b.dev, n_heads, quick ? 20 : 50);
            const double bw = layer_bytes / t;
            printf("  %5d %6d %10.1f %10.1f %9.0f %7.0f%%   (items %d, merges %d)\n", B, C, t * 1e6,
                   layer_bytes / 1e6, bw / 1e9, 100.0 * bw / copy_bw, st.n_dec, st.n_merge);
        }

    /* 4. prefill, llama3-8b */
    printf("prefill llama3-8b (causal; 4 flops per visible query-key pair and head dim)\n");
    printf("  %-28s %10s %9s\n", "case", "ms/call", "TFLOP/s");
    struct Pre {
        const char *name;
        int ctx, q_len;
    };
    const std::vector<Pre> pre = {{"1k tokens from empty", 1024, 1024},
                                  {"4k tokens from empty", 4096, 4096},
                                  {"512 after 3584 cached", 4096, 512}};
    for (const Pre &c : pre) {
        const int pages = (c.ctx + bs - 1) / bs;
        struct tm_kv_cache kv;
        kv.shape = {1, pages, bs, n_kvh, hd, TM_KV_F16};
        kv.k = kpool;
        kv.v = vpool;
        Batch b({{c.ctx, c.q_len}}, bs, shuffled_pages(pages, c.ctx), g_step++);
        const double t = time_attention(&ctx, &st, out, q, &kv, &b.dev, n_heads, quick ? 5 : 20);
        double pairs = 0;
        for (int i = 0; i < c.q_len; i++) pairs += c.ctx - c.q_len + i + 1;
        const double flops = 4.0 * n_heads * hd * pairs;
        printf("  %-28s %10.3f %9.1f   (items %d, merges %d)\n", c.name, t * 1e3, flops / t / 1e12, st.n_pre,
               st.n_merge);
    }

    tm_cuda_attn_state_free(&st);
    for (void *p : {(void *)kpool, (void *)vpool, (void *)q, (void *)out}) cudaFree(p);
    if (scratch.data) cudaFree(scratch.data);
    cudaStreamDestroy(ctx.stream);
    printf("%s\n", ok ? "check PASS" : "check FAIL");
    return ok ? 0 : 1;
}

/* bench_cuda_matmul.cu - the CUDA matmul kernels on a real device: decode GEMV bandwidth
 * as a fraction of a measured device-to-device copy, for llama3-8b-sized weights in q4_0
 * (our dp4a GEMV) and f16 (cuBLAS), and prefill throughput of the int8 tensor-core tiles.
 *
 *   bench_cuda_matmul [--quick] [--types q4_0,f16,...] [--tokens 1,2,4,8] [--prefill 512]
 *
 * Copy bandwidth counts bytes read plus bytes written (2 x size / time), as device
 * bandwidth is usually quoted; a GEMV's figure is the bytes of its weight (as stored on
 * the device) / time. Each timing is the median of --reps runs of --iters back-to-back
 * launches, timed with events. Exit 0 with "no CUDA device" when there is none, so a
 * GPU-less dry run passes. Weights are random (values irrelevant to speed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "kernels/cuda/matmul.cuh"

namespace {

#define BENCH_CHECK(expr)                                                                         \
    do {                                                                                          \
        cudaError_t rc_ = (expr);                                                                 \
        if (rc_ != cudaSuccess) {                                                                 \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(rc_)); \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

struct Opts {
    bool quick = false;
    std::vector<tm_dtype> types = {TM_DTYPE_Q4_0, TM_DTYPE_F16};
    std::vector<int> tokens = {1, 2, 4, 8};
    int prefill = 512;
    int iters = 20, reps = 5;
};

struct Shape {
    const char *name;
    int64_t rows, cols;
};

/* llama3-8b: dim 4096, 8 kv heads of 128, ffn 14336, vocab 128256. */
const Shape kShapes[] = {
    {"attn_q/o", 4096, 4096}, {"attn_k/v", 1024, 4096}, {"ffn_gate/up", 14336, 4096},
    {"ffn_down", 4096, 14336}, {"output", 128256, 4096},
};

uint64_t rng_state = 0x9e3779b97f4a7c15ull;
uint64_t rng_next() {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return rng_state;
}

/* Random GGUF-layout bytes with every f16 scale (and every f16 weight) a small finite
 * value, so no NaN or inf slows anything down. */
std::vector<uint8_t> random_weight(tm_dtype t, int64_t rows, int64_t cols) {
    const int64_t bytes = rows * tm_dtype_row_bytes(t, cols);
    std::vector<uint8_t> raw((size_t)bytes);
    for (int64_t i = 0; i + 8 <= bytes; i += 8) {
        const uint64_t v = rng_next();
        memcpy(raw.data() + i, &v, 8);
    }
    const uint16_t small = tm_f32_to_f16(0.01f);
    const int64_t bb = tm_dtype_block_bytes(t), nblk = bytes / bb;
    for (int64_t b = 0; b < nblk; b++) {
        uint8_t *p = raw.data() + b * bb;
        switch (t) {
        case TM_DTYPE_F16:
        case TM_DTYPE_BF16: {
            const uint16_t v = (uint16_t)((t == TM_DTYPE_F16 ? 0x2000 : 0x3c00) | (p[0] & 0x3ff)) ^ (p[1] & 0x80) << 8;
            memcpy(p, &v, 2);
            break;
        }
        case TM_DTYPE_F32: {
            const float v = (float)(p[0] - 128) / 1024.0f;
            memcpy(p, &v, 4);
            break;
        }
        case TM_DTYPE_Q6_K: memcpy(p + 208, &small, 2); break;
        case TM_DTYPE_Q4_1:
        case TM_DTYPE_Q5_1:
        case TM_DTYPE_Q4_K:
        case TM_DTYPE_Q5_K: memcpy(p, &small, 2), memcpy(p + 2, &small, 2); break;
        default: memcpy(p, &small, 2); break;
        }
    }
    return raw;
}

/* Median milliseconds per call of fn over reps x iters launches. */
template <class F>
double time_ms(const tm_cuda_ctx *ctx, const Opts &o, F fn) {
    cudaEvent_t a, b;
    BENCH_CHECK(cudaEventCreate(&a));
    BENCH_CHECK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) BENCH_CHECK(fn()); /* warm-up (and cudaFuncSetAttribute) */
    std::vector<double> ms;
    for (int r = 0; r < o.reps; r++) {
        BENCH_CHECK(cudaEventRecord(a, ctx->stream));
        for (int i = 0; i < o.iters; i++) BENCH_CHECK(fn());
        BENCH_CHECK(cudaEventRecord(b, ctx->stream));
        BENCH_CHECK(cudaEventSynchronize(b));
        float t = 0;
        BENCH_CHECK(cudaEventElapsedTime(&t, a, b));
        ms.push_back((double)t / o.iters);
    }
    cudaEventDestroy(a), cudaEventDestroy(b);
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

/* Device-to-device copy bandwidth (read + write), GB/s, on a buffer far larger than L2. */
double copy_bandwidth(const tm_cuda_ctx *ctx, const Opts &o) {
    const size_t bytes = (size_t)(o.quick ? 256 : 1024) << 20;
    void *src = NULL, *dst = NULL;
    BENCH_CHECK(cudaMalloc(&src, bytes));
    BENCH_CHECK(cudaMalloc(&dst, bytes));
    BENCH_CHECK(cudaMemset(src, 1, bytes));
    const double ms = time_ms(ctx, o, [&] { return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx->stream); });
    cudaFree(src), cudaFree(dst);
    return 2.0 * (double)bytes / (ms * 1e6);
}

void parse(int argc, char **argv, Opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quick")) {
            o->quick = true, o->iters = 5, o->reps = 3;
        } else if (!strcmp(a, "--types") && v) {
            o->types.clear();
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *s = strtok(buf, ","); s; s = strtok(NULL, ",")) {
                const int t = tm_dtype_from_name(s);
                if (t < 0 || !tm_mm_supported((tm_dtype)t)) {
                    fprintf(stderr, "unknown weight type %s\n", s);
                    exit(2);
                }
                o->types.push_back((tm_dtype)t);
            }
            i++;
        } else if (!strcmp(a, "--tokens") && v) {
            o->tokens.clear();
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *s = strtok(buf, ","); s; s = strtok(NULL, ",")) o->tokens.push_back(atoi(s) > 0 ? atoi(s) : 1);
            i++;
        } else if (!strcmp(a, "--prefill") && v) {
            o->prefill = atoi(v), i++;
        } else {
            fprintf(stderr, "usage: %s [--quick] [--types q4_0,f16] [--tokens 1,2,4,8] [--prefill 512]\n", argv[0]);
            exit(2);
        }
    }
}

} // namespace

int main(int argc, char **argv) {
    Opts o;
    parse(argc, argv, &o);
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        printf("no CUDA device: nothing to measure\n");
        return 0;
    }
    cudaDeviceProp prop;
    BENCH_CHECK(cudaGetDeviceProperties(&prop, 0));
    tm_cuda_scratch scratch = {NULL, 0};
    tm_cuda_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    BENCH_CHECK(cudaStreamCreate(&ctx.stream));
    if (cublasCreate(&ctx.cublas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(ctx.cublas, ctx.stream) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cublas init failed\n");
        return 1;
    }
    ctx.scratch = &scratch;
    ctx.n_sm = prop.multiProcessorCount;
    ctx.cc = 10 * prop.major + prop.minor;
    int smem = 0;
    BENCH_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    ctx.max_smem = (size_t)smem;

    const double copy_bw = copy_bandwidth(&ctx, o);
    printf("device: %s, %d SMs, cc %d, %.1f GiB\n", prop.name, ctx.n_sm, ctx.cc, (double)prop.totalGlobalMem / (1 << 30));
    printf("device-to-device copy: %.0f GB/s (read + write)\n", copy_bw);
    printf("%-6s %-12s %7s %6s %4s %10s %9s %8s %s\n", "type", "weight", "rows", "cols", "n", "us/call", "GB/s", "of copy",
           "kernel");

    const int64_t max_cols = 14336;
    const int max_n = std::max(o.prefill, *std::max_element(o.tokens.begin(), o.tokens.end()));
    std::vector<float> hx((size_t)max_n * max_cols);
    for (auto &v : hx) v = (float)((int)(rng_next() % 2001) - 1000) / 1000.0f;
    float *x = NULL, *out = NULL;
    BENCH_CHECK(cudaMalloc(&x, hx.size() * sizeof(float)));
    BENCH_CHECK(cudaMemcpy(x, hx.data(), hx.size() * sizeof(float), cudaMemcpyHostToDevice));
    BENCH_CHECK(cudaMalloc(&out, (size_t)max_n * 128256 * sizeof(float)));

    for (tm_dtype t : o.types) {
        for (const Shape &s : kShapes) {
            if (o.quick && s.rows == 128256) continue;
            std::vector<uint8_t> raw = random_weight(t, s.rows, s.cols);
            tm_weight w;
            char err[256];
            if (tm_cuda_weight_init(&ctx, &w, t, s.rows, s.cols, raw.data(), err, sizeof err)) {
                fprintf(stderr, "%s\n", err);
                return 1;
            }
            raw.clear(), raw.shrink_to_fit();
            const size_t wbytes = (size_t)s.rows * (tm_mm_view(&w)->row_qs + tm_mm_view(&w)->row_sd +
                                                    2 * (size_t)tm_mm_view(&w)->row_d6);
            /* quantized: the GEMV (what decode runs) and, to place the switch-over, the tiles */
            const tm_mm_path paths[2] = {TM_MM_PATH_GEMV, TM_MM_PATH_MMA};
            for (int n : o.tokens) {
                for (int p = 0; p < (tm_mm_is_dense(t) ? 1 : 2); p++) {
                    const double ms =
                        time_ms(&ctx, o, [&] { return tm_cuda_matmul_path(&ctx, out, x, &w, NULL, n, paths[p]); });
                    const double gbs = (double)wbytes / (ms * 1e6);
                    printf("%-6s %-12s %7lld %6lld %4d %10.1f %9.0f %7.1f%% %s\n", tm_dtype_name(t), s.name,
                           (long long)s.rows, (long long)s.cols, n, ms * 1e3, gbs, 100.0 * gbs / copy_bw,
                           tm_mm_is_dense(t) ? "cublas" : p == 0 ? "gemv" : "mma");
                }
            }
            if (o.prefill > 0) {
                const int n = o.prefill;
                const double ms = time_ms(&ctx, o, [&] { return tm_cuda_matmul(&ctx, out, x, &w, NULL, n); });
                printf("%-6s %-12s %7lld %6lld %4d %10.1f %9s %8s %s, %.0f TFLOP/s\n", tm_dtype_name(t), s.name,
                       (long long)s.rows, (long long)s.cols, n, ms * 1e3, "-", "-", tm_mm_is_dense(t) ? "cublas" : "mma",
                       2.0 * s.rows * s.cols * n / (ms * 1e9));
            }
            BENCH_CHECK(cudaStreamSynchronize(ctx.stream));
            tm_cuda_weight_deinit(&w);
        }
    }
    cudaFree(x), cudaFree(out), cudaFree(scratch.data);
    cublasDestroy(ctx.cublas);
    cudaStreamDestroy(ctx.stream);
    return 0;
}

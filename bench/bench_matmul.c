/* bench_matmul.c - CPU matmul micro-benchmark on the SmolLM2-135M shapes.
 *
 * For each (dtype, SIMD level, shape, tokens) prints the time per call, the weight
 * bytes streamed per second (GGUF bytes of W / time: the decode figure of merit) and
 * GFLOP/s (2 * n * rows * cols / time: the prefill one).
 *
 *   bench_matmul [-t threads] [-d q4_1,q8_0,f16] [-s amx,avx512vnni,avx2,scalar] [-n 1,8,16,512]
 *                [-m max_seconds_per_case] [-S ROWSxCOLS,...]
 * Defaults: all threads, Q4_1/Q8_0/F16 (+ the other dtypes with -d all), every SIMD level
 * this CPU has, n = 1, 8, 16, 512, the SmolLM2 shapes (-S names others, e.g. the 1B
 * model's 128256x2048 output). The scalar level only runs n <= 16 unless -s names it.
 * The util column is process CPU time / (wall time * threads): well below 1 means other
 * processes took the cores and the wall-clock rates understate the kernels. */
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/threadpool.h"
#include "kernels/dtype.h"

typedef struct { int64_t rows, cols; const char *what; } bench_shape;

static const bench_shape k_smollm2_shapes[] = {
    {576, 576, "q/o"}, {192, 576, "k/v"}, {1536, 576, "gate/up"}, {576, 1536, "down"},
    {49152, 576, "lm_head"},
};

static uint32_t rng_state = 12345;
static float rnd(void) { /* xorshift, uniform in [-1, 1) */
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 17, rng_state ^= rng_state << 5;
    return (float)(rng_state >> 8) / (float)(1u << 23) - 1.0f;
}

/* Rows cycle through 61 distinct random rows: the speed does not depend on the values. */
static void *make_weight(tm_dtype t, int64_t rows, int64_t cols) {
    const int64_t rb = tm_dtype_row_bytes(t, cols);
    uint8_t *w = malloc((size_t)(rows * rb));
    float *f = malloc((size_t)cols * sizeof(float));
    if (!w || !f) return NULL;
    enum { DISTINCT = 61 };
    for (int64_t r = 0; r < rows; r++) {
        if (r >= DISTINCT) {
            memcpy(w + r * rb, w + (r % DISTINCT) * rb, (size_t)rb);
            continue;
        }
        if (t == TM_DTYPE_Q4_K || t == TM_DTYPE_Q6_K) { /* random bytes, sane f16 scales */
            for (int64_t i = 0; i < rb; i++) w[r * rb + i] = (uint8_t)(rnd() * 128 + 128);
            for (int64_t b = 0; b < cols / TM_QK_K; b++) {
                uint8_t *blk = w + r * rb + b * tm_dtype_block_bytes(t);
                const uint16_t d = tm_f32_to_f16(0.01f);
                memcpy(t == TM_DTYPE_Q4_K ? blk : blk + 208, &d, 2);
                if (t == TM_DTYPE_Q4_K) memcpy(blk + 2, &d, 2);
            }
            continue;
        }
        for (int64_t k = 0; k < cols; k++) f[k] = 0.1f * rnd();
        tm_quantize_row(t, f, w + r * rb, cols);
    }
    free(f);
    return w;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int parse_list(const char *s, int *out, int max, int (*conv)(const char *)) {
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *tok = strtok(buf, ","); tok && n < max; tok = strtok(NULL, ",")) {
        const int v = conv(tok);
        if (v < 0) {
            fprintf(stderr, "bench_matmul: unknown value '%s'\n", tok);
            exit(2);
        }
        out[n++] = v;
    }
    return n;
}

static int conv_int(const char *s) { return atoi(s); }
static int conv_simd(const char *s) {
    for (int l = TM_SIMD_SCALAR; l <= TM_SIMD_LAST; l++)
        if (!strcmp(s, tm_simd_name(l))) return l;
    return -1;
}

int main(int argc, char **argv) {
    int n_threads = tm_n_cpus();
    int dtypes[16], n_dtypes = 0, levels[8], n_levels = 0, ns[16], n_ns = 0, levels_given = 0;
    double max_s = 0.3;
    bench_shape shapes[16];
    size_t n_shapes = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-t")) n_threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-d")) {
            if (!strcmp(argv[i + 1], "all")) {
                const int all[] = {TM_DTYPE_Q4_1, TM_DTYPE_Q8_0, TM_DTYPE_F16, TM_DTYPE_Q4_0,
                                   TM_DTYPE_Q4_K, TM_DTYPE_Q6_K, TM_DTYPE_BF16, TM_DTYPE_F32};
                memcpy(dtypes, all, sizeof(all));
                n_dtypes = 8;
            } else {
                n_dtypes = parse_list(argv[i + 1], dtypes, 16, tm_dtype_from_name);
            }
        } else if (!strcmp(argv[i], "-s")) n_levels = parse_list(argv[i + 1], levels, 8, conv_simd), levels_given = 1;
        else if (!strcmp(argv[i], "-n")) n_ns = parse_list(argv[i + 1], ns, 16, conv_int);
        else if (!strcmp(argv[i], "-m")) max_s = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-S")) {
            char buf[256];
            snprintf(buf, sizeof(buf), "%s", argv[i + 1]);
            for (char *tok = strtok(buf, ","); tok && n_shapes < TM_ARRAY_LEN(shapes); tok = strtok(NULL, ",")) {
                long long r = 0, c = 0;
                if (sscanf(tok, "%lldx%lld", &r, &c) != 2 || r < 1 || c < 1 || r > (1 << 20) || c > (1 << 16)) {
                    fprintf(stderr, "bench_matmul: bad shape '%s' (want ROWSxCOLS)\n", tok);
                    return 2;
                }
                shapes[n_shapes++] = (bench_shape){r, c, "-S"};
            }
        } else {
            fprintf(stderr, "usage: %s [-t threads] [-d dtypes|all] [-s levels] [-n tokens] [-m seconds] [-S RxC,...]\n", argv[0]);
            return 2;
        }
    }
    if (!n_dtypes) dtypes[0] = TM_DTYPE_Q4_1, dtypes[1] = TM_DTYPE_Q8_0, dtypes[2] = TM_DTYPE_F16, n_dtypes = 3;
    if (!n_levels)
        for (int l = TM_SIMD_LAST; l >= TM_SIMD_SCALAR; l--)
            if (tm_simd_supported(l)) levels[n_levels++] = l;
    if (!n_shapes)
        for (; n_shapes < TM_ARRAY_LEN(k_smollm2_shapes); n_shapes++) shapes[n_shapes] = k_smollm2_shapes[n_shapes];
    int64_t max_rows = 1, max_cols = 1;
    for (size_t i = 0; i < n_shapes; i++) max_rows = TM_MAX(max_rows, shapes[i].rows), max_cols = TM_MAX(max_cols, shapes[i].cols);
    if (!n_ns) ns[0] = 1, ns[1] = 8, ns[2] = 16, ns[3] = 512, n_ns = 4;
    int max_n = 1;
    for (int i = 0; i < n_ns; i++) max_n = TM_MAX(max_n, ns[i]);

    tm_threadpool *pool = tm_threadpool_create(n_threads);
    float *x = malloc((size_t)(max_n * max_cols) * sizeof(float));
    float *out = malloc((size_t)(max_n * max_rows) * sizeof(float));
    if (!pool || !x || !out) return 1;
    for (int64_t i = 0; i < (int64_t)max_n * max_cols; i++) x[i] = rnd();

    printf("threads %d, best simd %s\n", n_threads, tm_simd_name(tm_simd_detect()));
    printf("%-6s %-10s %-15s %5s %11s %9s %9s %5s\n", "dtype", "simd", "shape", "n", "us/call", "GB/s", "GFLOP/s", "util");
    for (int di = 0; di < n_dtypes; di++) {
        const tm_dtype t = (tm_dtype)dtypes[di];
        for (size_t si = 0; si < n_shapes; si++) {
            const bench_shape *sh = &shapes[si];
            if (tm_dtype_row_bytes(t, sh->cols) < 0) continue; /* K-quants need cols % 256 */
            void *wsrc = make_weight(t, sh->rows, sh->cols);
            if (!wsrc) return 1;
            const double w_bytes = (double)(sh->rows * tm_dtype_row_bytes(t, sh->cols));
            for (int li = 0; li < n_levels; li++) {
                if (!tm_simd_supported(levels[li])) continue;
                tm_cpu_matmul *mm = tm_cpu_matmul_create(pool, levels[li]);
                tm_weight w;
                char err[256];
                if (!mm || tm_cpu_weight_init(mm, &w, t, sh->rows, sh->cols, wsrc, err, sizeof(err))) {
                    fprintf(stderr, "bench_matmul: %s\n", err);
                    return 1;
                }
                for (int ni = 0; ni < n_ns; ni++) {
                    const int n = ns[ni];
                    if (levels[li] == TM_SIMD_SCALAR && n > 16 && !levels_given) continue;
                    tm_cpu_matmul_run(mm, out, x, &w, NULL, n); /* warm-up */
                    int reps = 0;
                    const double t0 = tm_time_s(), c0 = cpu_seconds();
                    double el = 0;
                    do {
                        tm_cpu_matmul_run(mm, out, x, &w, NULL, n);
                        reps++;
                        el = tm_time_s() - t0;
                    } while (el < max_s && reps < 100000);
                    const double per = el / reps, util = (cpu_seconds() - c0) / (el * n_threads);
                    char shape[40];
                    snprintf(shape, sizeof(shape), "%lldx%lld", (long long)sh->rows, (long long)sh->cols);
                    printf("%-6s %-10s %-15s %5d %11.1f %9.2f %9.1f %5.2f\n", tm_dtype_name(t), tm_simd_name(levels[li]),
                           shape, n, per * 1e6, w_bytes / per * 1e-9, 2.0 * n * sh->rows * sh->cols / per * 1e-9, util);
                    fflush(stdout);
                }
                tm_cpu_weight_deinit(&w);
                tm_cpu_matmul_destroy(mm);
            }
            free(wsrc);
        }
    }
    free(x);
    free(out);
    tm_threadpool_destroy(pool);
    return 0;
}

/* bench_quant.c - error and speed of our quantizers (tm_quantize_row) on a model's weights.
 *
 * For each matrix of a GGUF file (any type we read; F16/BF16/F32 sources give the real
 * error) and each target type, quantizes the weights and prints one tab-separated line:
 *   tensor  type  n_values  rows_as  rms_error  rms_weight  seconds
 * rows_as is "rows" when the tensor's own rows split into the type's blocks, else
 * "flat": its values end to end in rows of 256 (so K-quants can be measured on every
 * matrix; llama.cpp itself stores such tensors in another type). scripts/quant-error runs
 * llama.cpp's quantizers on the same values and compares.
 *
 *   bench_quant MODEL.gguf TYPE[,TYPE...] [NAME_SUBSTRING]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "kernels/dtype.h"
#include "models/gguf.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Quantizes x (n values, rows of `row`) to t and back; returns the summed squared error. */
static double roundtrip(tm_dtype t, const float *x, int64_t n, int64_t row, void *buf, float *y, double *secs) {
    const int64_t rb = tm_dtype_row_bytes(t, row);
    double t0 = now_s();
    for (int64_t r = 0; r < n / row; r++) tm_quantize_row(t, x + r * row, (uint8_t *)buf + r * rb, row);
    *secs = now_s() - t0;
    double e = 0;
    for (int64_t r = 0; r < n / row; r++) {
        tm_dequantize_row(t, (uint8_t *)buf + r * rb, y, row);
        for (int64_t i = 0; i < row; i++) {
            const double d = (double)y[i] - x[r * row + i];
            e += d * d;
        }
    }
    return e;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_quant MODEL.gguf TYPE[,TYPE...] [NAME_SUBSTRING]\n");
        return 2;
    }
    tm_dtype types[16];
    int n_types = 0;
    char *list = strdup(argv[2]);
    for (char *tok = strtok(list, ","); tok && n_types < 16; tok = strtok(NULL, ",")) {
        const int t = tm_dtype_from_name(tok);
        if (t < 0) {
            fprintf(stderr, "bench_quant: unknown type '%s'\n", tok);
            return 2;
        }
        types[n_types++] = (tm_dtype)t;
    }
    free(list);
    char err[256];
    tm_gguf *g;
    if (tm_gguf_open(argv[1], &g, err, sizeof err)) {
        fprintf(stderr, "bench_quant: %s\n", err);
        return 1;
    }
    printf("tensor\ttype\tn_values\trows_as\trms_error\trms_weight\tseconds\n");
    for (int64_t i = 0; i < tm_gguf_n_tensors(g); i++) {
        const tm_gguf_tensor *t = tm_gguf_tensor_at(g, i);
        if (t->n_dims < 2 || (argc > 3 && !strstr(t->name, argv[3]))) continue;
        const int64_t ne0 = t->ne[0], n = ne0 * t->ne[1] * t->ne[2] * t->ne[3];
        float *x = malloc((size_t)n * sizeof(float)), *y = malloc((size_t)TM_MAX(ne0, 256) * sizeof(float));
        void *buf = malloc((size_t)n * 4);
        if (!x || !y || !buf) return 1;
        const int64_t src_row = tm_dtype_row_bytes(t->type, ne0);
        for (int64_t r = 0; r < n / ne0; r++) tm_dequantize_row(t->type, (const uint8_t *)t->data + r * src_row, x + r * ne0, ne0);
        double energy = 0;
        for (int64_t k = 0; k < n; k++) energy += (double)x[k] * x[k];
        for (int k = 0; k < n_types; k++) {
            const int64_t bs = tm_dtype_block_size(types[k]);
            const int own = ne0 % bs == 0;
            const int64_t row = own ? ne0 : 256;
            if (n % row) continue;
            double secs;
            const double e = roundtrip(types[k], x, n, row, buf, y, &secs);
            printf("%s\t%s\t%lld\t%s\t%.6g\t%.6g\t%.3f\n", t->name, tm_dtype_name(types[k]), (long long)n,
                   own ? "rows" : "flat", sqrt(e / (double)n), sqrt(energy / (double)n), secs);
            fflush(stdout);
        }
        free(x), free(y), free(buf);
    }
    tm_gguf_close(g);
    return 0;
}

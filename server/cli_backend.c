/* cli_backend.c - backend choice and model loading for the subcommands. */
#include "server/cli_backend.h"

#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "kernels/cpu/simd.h"

tm_backend *tm_cli_backend_create(const char *cmd, const char *device, int threads) {
    char err[256] = "";
    if (strcmp(device, "cpu") != 0) {
        tm_backend *be = tm_backend_cuda_create(0, err, sizeof err);
        if (be) {
            TM_INFOF("%s: using CUDA device 0", cmd);
            return be;
        }
        if (!strcmp(device, "cuda")) {
            fprintf(stderr, "tokenmill %s: --device cuda: %s\n", cmd, err);
            return NULL;
        }
        TM_INFOF("%s: no CUDA device (%s); using the CPU backend", cmd, err);
    }
    tm_backend *be = tm_backend_cpu_create(threads, TM_SIMD_AUTO, err, sizeof err);
    if (!be) fprintf(stderr, "tokenmill %s: cpu backend: %s\n", cmd, err);
    return be;
}

tm_model *tm_cli_model_load(const char *path, tm_backend *be) {
    char buf[1024];
    if (!path) path = tm_model_default_path(buf, sizeof buf);
    char err[512];
    tm_model *m = NULL;
    int rc = tm_model_load(path, be, &m, err, sizeof err);
    if (rc) {
        fprintf(stderr, "tokenmill: %s\n", err);
        if (rc == TM_EIO && path == buf)
            fprintf(stderr, "tokenmill: fetch the default model with scripts/fetch-model\n");
        return NULL;
    }
    return m;
}

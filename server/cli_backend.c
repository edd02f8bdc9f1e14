/* cli_backend.c - backend choice and model loading for the subcommands. */
#include "server/cli_backend.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "kernels/cpu/simd.h"
#include "models/synth.h"

int tm_cli_device_ok(const char *device) {
    return device && (!strcmp(device, "cpu") || !strcmp(device, "cuda") || !strcmp(device, "auto"));
}

/* "<description>, X GiB free of Y GiB": the backend's memory, or the host's for the CPU. */
static void describe(tm_backend *be, char *buf, size_t len) {
    const double gib = 1024.0 * 1024.0 * 1024.0;
    size_t free_b = 0, total_b = 0;
    const char *what = "device memory";
    if (!be->memory_info || be->memory_info(be, &free_b, &total_b) != 0) {
        long page = sysconf(_SC_PAGESIZE), pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES);
        free_b = page > 0 && avail > 0 ? (size_t)page * (size_t)avail : 0;
        total_b = page > 0 && pages > 0 ? (size_t)page * (size_t)pages : 0;
        what = "host memory";
    }
    snprintf(buf, len, "%s; %s %.1f GiB free of %.1f GiB", be->description ? be->description : be->name,
             what, (double)free_b / gib, (double)total_b / gib);
}

tm_backend *tm_cli_backend_create(const char *cmd, const char *device, int threads, int announce) {
    char err[256] = "", why[300] = "", desc[256];
    if (strcmp(device, "cpu") != 0) {
        tm_backend *be = tm_backend_cuda_create(0, err, sizeof err);
        if (be) {
            describe(be, desc, sizeof desc);
            if (announce) TM_INFOF("%s: device cuda (CUDA device 0): %s", cmd, desc);
            return be;
        }
        if (!strcmp(device, "cuda")) {
            fprintf(stderr, "tokenmill %s: --device cuda: %s\n", cmd, err);
            return NULL;
        }
        snprintf(why, sizeof why, " (auto: no usable CUDA device: %s)", err);
    }
    tm_backend *be = tm_backend_cpu_create(threads, TM_SIMD_AUTO, err, sizeof err);
    if (!be) {
        fprintf(stderr, "tokenmill %s: cpu backend: %s\n", cmd, err);
        return NULL;
    }
    describe(be, desc, sizeof desc);
    if (announce) TM_INFOF("%s: device cpu%s: %s", cmd, why, desc);
    return be;
}

const char *tm_cli_model_synthetic(const tm_model *m) {
    const char *s = NULL;
    size_t len;
    return tm_gguf_get_str(tm_model_gguf(m), "tokenmill.synth", &s, &len) == 0 ? s : NULL;
}

/* A synthetic model: built in memory, then loaded as a file's image. */
static int open_synthetic(const char *cmd, const char *spec, tm_backend *be, tm_load_progress_fn progress,
                          void *arg, tm_model **out, char *err, size_t err_len) {
    tm_synth_options so;
    char msg[512];
    int rc = tm_synth_parse(spec, &so, msg, sizeof msg);
    if (rc) return tm_fail(err, err_len, rc, "--synthetic: %s", msg);
    double t0 = tm_time_s();
    TM_INFOF("%s: building synthetic %s in host memory", cmd, spec);
    tm_gguf *g = NULL;
    if ((rc = tm_synth_build(&so, &g, msg, sizeof msg))) return tm_fail(err, err_len, rc, "--synthetic %s: %s", spec, msg);
    TM_INFOF("%s: built synthetic %s in %.1f s", cmd, spec, tm_time_s() - t0);
    return tm_model_load_gguf(g, spec, be, progress, arg, out, err, err_len);
}

int tm_cli_model_open(const char *cmd, const char *path, const char *synthetic, tm_backend *be,
                      tm_load_progress_fn progress, void *arg, tm_model **out, char *err,
                      size_t err_len) {
    char buf[1024];
    int rc;
    *out = NULL;
    if (synthetic && path)
        return tm_fail(err, err_len, TM_EINVAL, "give a model file or --synthetic, not both");
    if (synthetic) {
        rc = open_synthetic(cmd, synthetic, be, progress, arg, out, err, err_len);
    } else {
        const char *p = path ? path : tm_model_default_path(buf, sizeof buf);
        rc = tm_model_load_ex(p, be, progress, arg, out, err, err_len);
    }
    if (!rc && tm_cli_model_synthetic(*out))
        TM_WARNF("%s: synthetic model (%s): random weights, its answers are meaningless", cmd,
                 tm_cli_model_synthetic(*out));
    return rc;
}

void tm_cli_model_hint(int rc, const char *path, const char *synthetic) {
    if (rc == TM_EIO && !path && !synthetic)
        fprintf(stderr, "tokenmill: fetch the default model with scripts/fetch-model\n");
}

tm_model *tm_cli_model_load(const char *path, tm_backend *be) {
    char err[512];
    tm_model *m = NULL;
    int rc = tm_cli_model_open("info", path, NULL, be, NULL, NULL, &m, err, sizeof err);
    if (rc) {
        fprintf(stderr, "tokenmill: %s\n", err);
        tm_cli_model_hint(rc, path, NULL);
        return NULL;
    }
    return m;
}

int tm_cli_model_source_check(const char *cmd, const char *path_flag, const char *path,
                              const char *synthetic) {
    if (path && synthetic) {
        fprintf(stderr, "tokenmill %s: give %s or --synthetic, not both\n", cmd, path_flag);
        return 2;
    }
    if (synthetic) {
        tm_synth_options so;
        char err[512];
        if (tm_synth_parse(synthetic, &so, err, sizeof err)) {
            fprintf(stderr, "tokenmill %s: --synthetic: %s\n", cmd, err);
            return 2;
        }
    }
    return 0;
}

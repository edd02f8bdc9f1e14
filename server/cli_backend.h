/* cli_backend.h - the backend and model a subcommand runs on. serve, generate and info
 * create them here, so a device option (or a new kind of backend) is added in one place
 * and means the same thing to every subcommand. */
#ifndef TM_CLI_BACKEND_H
#define TM_CLI_BACKEND_H

#include "kernels/backend.h"
#include "models/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* device: "cpu", "cuda" or "auto" (CUDA device 0 when there is one, else the CPU).
 * threads: CPU backend workers, 0 = one per CPU. On failure prints
 * "tokenmill <cmd>: ..." to stderr and returns NULL. The caller destroys the backend. */
tm_backend *tm_cli_backend_create(const char *cmd, const char *device, int threads);

/* Loads path (NULL: the default model) onto be. On failure prints the reason to stderr
 * (and, for a missing default model, how to fetch it) and returns NULL. */
tm_model *tm_cli_model_load(const char *path, tm_backend *be);

#ifdef __cplusplus
}
#endif
#endif

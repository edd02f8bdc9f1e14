/* cli_backend.h - the backend and model a subcommand runs on. serve, generate and info
 * create them here, so a device option (or a new kind of backend) is added in one place
 * and means the same thing to every subcommand. */
#ifndef TM_CLI_BACKEND_H
#define TM_CLI_BACKEND_H

#include <stddef.h>

#include "kernels/backend.h"
#include "models/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* device: "cpu", "cuda" or "auto" (CUDA device 0 when it can be used, else the CPU).
 * threads: CPU backend workers, 0 = one per CPU. announce: log one line that says which
 * device was chosen (and why, for auto), its description and its memory (serve and
 * generate do; info, which only reads the file, does not). On failure prints
 * one line "tokenmill <cmd>: ..." to stderr and returns NULL (--device cuda without a
 * usable GPU gives the backend's reason). The caller destroys the backend. */
tm_backend *tm_cli_backend_create(const char *cmd, const char *device, int threads, int announce);

/* Is device one of "cpu", "cuda", "auto"? */
int tm_cli_device_ok(const char *device);

/* Usage check of a subcommand's model source, before anything loads: not both a path and
 * --synthetic (path_flag names the path's option in the message), and a synthetic name
 * that parses. Prints "tokenmill <cmd>: ..." and returns 2 (the usage exit status), or 0. */
int tm_cli_model_source_check(const char *cmd, const char *path_flag, const char *path,
                              const char *synthetic);

/* The model a subcommand runs, loaded onto be with progress (may be NULL): the GGUF at
 * path (NULL: the default model) or, when synthetic is "PRESET:TYPE" (path must be NULL),
 * a synthetic model (models/synth.h: seed 0, the default model's tokenizer) built as a
 * GGUF image in host memory and loaded from it as a file would be, so a device backend
 * uploads its weights from there. A model marked synthetic (a `tokenmill synth` file too)
 * gets a warning that its answers are meaningless. Returns 0, or an error code with one
 * line in err. */
int tm_cli_model_open(const char *cmd, const char *path, const char *synthetic, tm_backend *be,
                      tm_load_progress_fn progress, void *arg, tm_model **out, char *err,
                      size_t err_len);

/* After tm_cli_model_open failed with rc: for a missing default model, prints how to
 * fetch it; otherwise nothing. */
void tm_cli_model_hint(int rc, const char *path, const char *synthetic);

/* Loads path (NULL: the default model) onto be. On failure prints the reason to stderr
 * (and, for a missing default model, how to fetch it) and returns NULL. */
tm_model *tm_cli_model_load(const char *path, tm_backend *be);

/* The model's tokenmill.synth description ("llama3-8b:q4_0 seed 0 layers 32") when it is
 * a synthetic model, else NULL. Owned by the model. */
const char *tm_cli_model_synthetic(const tm_model *m);

#ifdef __cplusplus
}
#endif
#endif

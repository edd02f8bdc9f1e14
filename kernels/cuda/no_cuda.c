/* no_cuda.c - the CUDA backend entry point in builds without nvcc. */
#include "common/common.h"
#include "kernels/backend.h"

tm_backend *tm_backend_cuda_create(int device_id, char *err, size_t err_len) {
    (void)device_id;
    tm_fail(err, err_len, TM_ENODEV, "no CUDA device: this build of tokenmill has no CUDA support (nvcc was not found)");
    return NULL;
}

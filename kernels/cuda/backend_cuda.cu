/* backend_cuda.cu - CUDA backend entry point.
 *
 * The CUDA op table is not written yet (issue: CUDA kernels). Creation reports whether a
 * device exists, so that `--device cuda` and the CUDA tests fail or skip with a reason
 * instead of silently falling back. */
#include <cuda_runtime.h>

extern "C" {
#include "common/common.h"
#include "kernels/backend.h"
}

extern "C" tm_backend *tm_backend_cuda_create(int device_id, char *err, size_t err_len) {
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess || n == 0) {
        tm_fail(err, err_len, TM_ENODEV, "no CUDA device (%s)",
                rc != cudaSuccess ? cudaGetErrorString(rc) : "device count is 0");
        return NULL;
    }
    if (device_id < 0 || device_id >= n) {
        tm_fail(err, err_len, TM_ENODEV, "CUDA device %d does not exist (found %d)", device_id, n);
        return NULL;
    }
    tm_fail(err, err_len, TM_EUNSUPPORTED, "the CUDA backend's ops are not implemented yet");
    return NULL;
}

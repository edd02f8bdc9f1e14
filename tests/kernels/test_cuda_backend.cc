// CUDA backend entry point: without a device (or without nvcc at build time) creation
// fails with a reason, which the CUDA tests report as their skip message.
#include <gtest/gtest.h>

#include <string>

extern "C" {
#include "common/common.h"
#include "kernels/backend.h"
}

TEST(CudaBackend, CreationReportsWhyItIsUnavailable) {
    char err[256] = "";
    tm_backend *be = tm_backend_cuda_create(0, err, sizeof err);
    if (be) {
        be->destroy(be);
        SUCCEED() << "CUDA device present";
        return;
    }
    std::string why = err;
    EXPECT_FALSE(why.empty());
    GTEST_SKIP() << "CUDA backend unavailable: " << why;
}

TEST(CudaBackend, BadDeviceIdIsRefused) {
    char err[256] = "";
    tm_backend *be = tm_backend_cuda_create(1 << 20, err, sizeof err);
    EXPECT_EQ(be, nullptr);
    EXPECT_NE(std::string(err), "");
}

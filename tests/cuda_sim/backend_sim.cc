/* backend_sim.cc - the CUDA backend compiled in sim mode (host compiler, the harness's
 * fake CUDA headers, -Dtm_backend_cuda_create=tm_backend_cuda_sim_create), so the
 * conformance test can run every op of the CUDA op table on the CPU harness next to the
 * real CUDA backend. */
#include "kernels/cuda/backend_cuda.cu"

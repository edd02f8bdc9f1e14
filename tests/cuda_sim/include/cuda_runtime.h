/* cuda_runtime.h for the CPU harness (tests/cuda_sim): lets a .cu/.cuh file compile with
 * the host C++ compiler and run its kernels on fibers. Compile with -DTM_CUDA_SIM=1 and
 * this directory first on the include path; link tm_cuda_sim. No CUDA toolkit needed.
 * What is supported and what is refused: tests/cuda_sim/README.md. */
#ifndef TM_SIM_CUDA_RUNTIME_H
#define TM_SIM_CUDA_RUNTIME_H

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tm_sim/device.h"
#include "tm_sim/host.h"
#include "tm_sim/types.h"

#define CUDART_VERSION 13000

/* Function qualifiers: every function is a host function here. */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __constant__
#define __grid_constant__

/* Static __shared__ storage is one static per array (blocks run one after another), each
 * in its own section tm_sim_shared_<n> so that the same-named sections of inline and of
 * static functions do not conflict; tests/cuda_sim/shared.ld gathers them between
 * tm_sim_shared_begin and _end, and the harness poisons that range before every block. */
#define TM_SIM_STR2(x) #x
#define TM_SIM_STR(x) TM_SIM_STR2(x)
#define __shared__ static __attribute__((section("tm_sim_shared_" TM_SIM_STR(__COUNTER__))))

using namespace tm_sim;

#endif

/* tm_sim/types.h - the CUDA runtime's plain types for the CPU harness: dim3, the vector
 * types (int4, float2, ...) with CUDA's sizes and alignments, cudaError_t and the enums
 * the runtime API takes. Everything is in namespace tm_sim, so that a test binary can
 * also link libcudart (whose names are global) without a clash; the fake cuda_runtime.h
 * makes the names visible with `using namespace tm_sim`. */
#ifndef TM_SIM_TYPES_H
#define TM_SIM_TYPES_H

#include <cstddef>
#include <cstdint>

namespace tm_sim {

/* ---- vector types (vector_types.h): alignment as CUDA declares it ------------------- */

#define TM_SIM_VEC1(T, N, A) \
    struct __attribute__((aligned(A))) N##1 { T x; };
#define TM_SIM_VEC2(T, N, A) \
    struct __attribute__((aligned(A))) N##2 { T x, y; };
#define TM_SIM_VEC3(T, N) \
    struct N##3 { T x, y, z; };
#define TM_SIM_VEC4(T, N, A) \
    struct __attribute__((aligned(A))) N##4 { T x, y, z, w; };
#define TM_SIM_VEC_ALL(T, N, A1, A2, A4) \
    TM_SIM_VEC1(T, N, A1) TM_SIM_VEC2(T, N, A2) TM_SIM_VEC3(T, N) TM_SIM_VEC4(T, N, A4)     \
    static inline N##1 make_##N##1(T x) { return N##1{x}; }                                  \
    static inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }                          \
    static inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }                 \
    static inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }

TM_SIM_VEC_ALL(signed char, char, 1, 2, 4)
TM_SIM_VEC_ALL(unsigned char, uchar, 1, 2, 4)
TM_SIM_VEC_ALL(short, short, 2, 4, 8)
TM_SIM_VEC_ALL(unsigned short, ushort, 2, 4, 8)
TM_SIM_VEC_ALL(int, int, 4, 8, 16)
TM_SIM_VEC_ALL(unsigned int, uint, 4, 8, 16)
TM_SIM_VEC_ALL(long long, longlong, 8, 16, 16)
TM_SIM_VEC_ALL(unsigned long long, ulonglong, 8, 16, 16)
TM_SIM_VEC_ALL(float, float, 4, 8, 16)
TM_SIM_VEC_ALL(double, double, 8, 16, 16)

#undef TM_SIM_VEC1
#undef TM_SIM_VEC2
#undef TM_SIM_VEC3
#undef TM_SIM_VEC4
#undef TM_SIM_VEC_ALL

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

/* ---- errors (values as in driver_types.h) ------------------------------------------ */

enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidSymbol = 13,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorAssert = 710,
    cudaErrorIllegalInstruction = 715,
    cudaErrorMisalignedAddress = 716,
    cudaErrorLaunchFailure = 719,
    cudaErrorNotSupported = 801,
    cudaErrorUnknown = 999,
};
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};

enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMaxBlockDimX = 2,
    cudaDevAttrMaxBlockDimY = 3,
    cudaDevAttrMaxBlockDimZ = 4,
    cudaDevAttrMaxGridDimX = 5,
    cudaDevAttrMaxGridDimY = 6,
    cudaDevAttrMaxGridDimZ = 7,
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrTotalConstantMemory = 9,
    cudaDevAttrWarpSize = 10,
    cudaDevAttrMaxRegistersPerBlock = 12,
    cudaDevAttrClockRate = 13,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrMemoryClockRate = 36,
    cudaDevAttrGlobalMemoryBusWidth = 37,
    cudaDevAttrL2CacheSize = 38,
    cudaDevAttrMaxThreadsPerMultiProcessor = 39,
    cudaDevAttrUnifiedAddressing = 41,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
    cudaDevAttrMaxRegistersPerMultiprocessor = 82,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

/* The fields of cudaDeviceProp that code commonly reads (a subset of CUDA's). */
struct cudaDeviceProp {
    char name[256];                    /* "cuda-sim" */
    size_t totalGlobalMem;             /* bytes */
    size_t sharedMemPerBlock;          /* 48 KiB without opt-in */
    int regsPerBlock;                  /* 65536 */
    int warpSize;                      /* 32 */
    int maxThreadsPerBlock;            /* 1024 */
    int maxThreadsDim[3];              /* 1024, 1024, 64 */
    int maxGridSize[3];                /* 2^31 - 1, 65535, 65535 */
    size_t totalConstMem;              /* 64 KiB */
    int major, minor;                  /* 9, 0 */
    int multiProcessorCount;           /* 132 */
    int l2CacheSize;                   /* bytes */
    int maxThreadsPerMultiProcessor;   /* 2048 */
    size_t sharedMemPerMultiprocessor; /* 228 KiB */
    int regsPerMultiprocessor;         /* 65536 */
    size_t sharedMemPerBlockOptin;     /* 227 KiB */
    int memoryBusWidth;                /* bits */
    int clockRate;                     /* kHz */
    int memoryClockRate;               /* kHz */
    int unifiedAddressing;             /* 1 */
    int pciBusID, pciDeviceID, pciDomainID; /* 0 */
    int concurrentKernels;             /* 1 */
    int asyncEngineCount;              /* 2 */
};

struct cudaFuncAttributes {
    size_t sharedSizeBytes;        /* static shared memory (unknown here: 0) */
    size_t constSizeBytes;         /* 0 */
    size_t localSizeBytes;         /* 0 */
    int maxThreadsPerBlock;        /* 1024 */
    int numRegs;                   /* 32 */
    int ptxVersion, binaryVersion; /* 90 */
    int maxDynamicSharedSizeBytes; /* as set by cudaFuncSetAttribute, default 48 KiB */
};

/* Streams and events are host objects in the harness; work runs when it is issued. */
struct tm_sim_stream;
struct tm_sim_event;
typedef tm_sim_stream *cudaStream_t;
typedef tm_sim_event *cudaEvent_t;

#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaEventDefault 0x00
#define cudaEventBlockingSync 0x01
#define cudaEventDisableTiming 0x02
#define cudaHostAllocDefault 0x00
#define cudaHostAllocPortable 0x01
#define cudaHostAllocMapped 0x02
#define cudaHostAllocWriteCombined 0x04
#define cudaHostRegisterDefault 0x00
#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)

/* library_types.h */
enum cudaDataType_t {
    CUDA_R_32F = 0,
    CUDA_R_64F = 1,
    CUDA_R_16F = 2,
    CUDA_R_8I = 3,
    CUDA_R_32I = 10,
    CUDA_R_16BF = 14,
};
typedef cudaDataType_t cudaDataType;

} // namespace tm_sim

#endif

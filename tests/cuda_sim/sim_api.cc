/* sim_api.cc - the CUDA runtime API of the CPU harness: errors, the fake device, memory,
 * streams, events and per-kernel attributes.
 *
 * Device memory is posix_memalign'd host memory of exactly the requested size (so that
 * AddressSanitizer bounds kernels' global accesses); allocations are tracked so that
 * copies and memsets can check that their device side lies inside one, and that their
 * host side is not device memory (a swapped copy fails here as it would on the GPU). */
#include <sys/time.h>
#include <time.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "sim_internal.h"

namespace tm_sim {

/* ---- errors -------------------------------------------------------------------------- */

static thread_local cudaError_t t_last = cudaSuccess; /* what cudaGetLastError returns */
static thread_local cudaError_t t_detail_code = cudaSuccess;
static thread_local char t_detail[1200];
static thread_local char t_errstr[1400];

void set_error(cudaError_t code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_detail, sizeof t_detail, fmt, ap);
    va_end(ap);
    t_last = code;
    t_detail_code = code;
}

#define FAIL(code, ...)              \
    do {                             \
        set_error(code, __VA_ARGS__); \
        return code;                 \
    } while (0)

const char *last_error() { return t_detail; }

cudaError_t cudaGetLastError() {
    cudaError_t e = t_last;
    t_last = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError() { return t_last; }

static const char *generic_string(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidSymbol: return "invalid device symbol";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorAssert: return "device-side assert triggered";
    case cudaErrorIllegalInstruction: return "an illegal instruction was encountered";
    case cudaErrorMisalignedAddress: return "misaligned address";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    default: return "unknown error";
    }
}

const char *cudaGetErrorString(cudaError_t e) {
    if (e == cudaSuccess || e != t_detail_code || !t_detail[0]) return generic_string(e);
    snprintf(t_errstr, sizeof t_errstr, "%s (cuda-sim: %s)", generic_string(e), t_detail);
    return t_errstr;
}

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorUnknown";
    }
}

/* ---- the device ------------------------------------------------------------------------- */

static const size_t k_total_mem = (size_t)4 << 30; /* the fake device's memory */
static const int k_n_sm = 132;
static const size_t k_smem_default = (size_t)48 << 10, k_smem_optin = (size_t)227 << 10,
                    k_smem_sm = (size_t)228 << 10;

static std::mutex mem_mu;
static std::map<uintptr_t, size_t> dev_allocs;  /* start -> bytes */
static std::map<uintptr_t, size_t> host_allocs; /* cudaMallocHost / registered */
static size_t dev_used;
static std::set<tm_sim_stream *> streams;
static std::set<tm_sim_event *> events;
static std::map<const void *, int> func_smem; /* kernel -> max dynamic shared memory */

cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (device != 0) FAIL(cudaErrorInvalidDevice, "cudaSetDevice(%d): the harness has one device, 0", device);
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    if (device != 0) FAIL(cudaErrorInvalidDevice, "cudaGetDeviceProperties(%d): the harness has one device", device);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuda-sim");
    p->totalGlobalMem = k_total_mem;
    p->sharedMemPerBlock = k_smem_default;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = 1024, p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 2147483647, p->maxGridSize[1] = 65535, p->maxGridSize[2] = 65535;
    p->totalConstMem = 65536;
    p->major = 9, p->minor = 0;
    p->multiProcessorCount = k_n_sm;
    p->l2CacheSize = 50 << 20;
    p->maxThreadsPerMultiProcessor = 2048;
    p->sharedMemPerMultiprocessor = k_smem_sm;
    p->regsPerMultiprocessor = 65536;
    p->sharedMemPerBlockOptin = k_smem_optin;
    p->memoryBusWidth = 5120;
    p->clockRate = 1980000;
    p->memoryClockRate = 2619000;
    p->unifiedAddressing = 1;
    p->concurrentKernels = 1;
    p->asyncEngineCount = 2;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr attr, int device) {
    if (device != 0) FAIL(cudaErrorInvalidDevice, "cudaDeviceGetAttribute: device %d does not exist", device);
    cudaDeviceProp p;
    cudaGetDeviceProperties(&p, 0);
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *v = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *v = p.maxThreadsDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *v = p.maxThreadsDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *v = p.maxThreadsDim[2]; break;
    case cudaDevAttrMaxGridDimX: *v = p.maxGridSize[0]; break;
    case cudaDevAttrMaxGridDimY: *v = p.maxGridSize[1]; break;
    case cudaDevAttrMaxGridDimZ: *v = p.maxGridSize[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = (int)p.sharedMemPerBlock; break;
    case cudaDevAttrTotalConstantMemory: *v = (int)p.totalConstMem; break;
    case cudaDevAttrWarpSize: *v = 32; break;
    case cudaDevAttrMaxRegistersPerBlock: *v = p.regsPerBlock; break;
    case cudaDevAttrClockRate: *v = p.clockRate; break;
    case cudaDevAttrMultiProcessorCount: *v = p.multiProcessorCount; break;
    case cudaDevAttrMemoryClockRate: *v = p.memoryClockRate; break;
    case cudaDevAttrGlobalMemoryBusWidth: *v = p.memoryBusWidth; break;
    case cudaDevAttrL2CacheSize: *v = p.l2CacheSize; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *v = p.maxThreadsPerMultiProcessor; break;
    case cudaDevAttrUnifiedAddressing: *v = 1; break;
    case cudaDevAttrComputeCapabilityMajor: *v = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *v = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *v = (int)p.sharedMemPerMultiprocessor; break;
    case cudaDevAttrMaxRegistersPerMultiprocessor: *v = p.regsPerMultiprocessor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = (int)p.sharedMemPerBlockOptin; break;
    default: FAIL(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute %d is not simulated", (int)attr);
    }
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaDeviceReset() { return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int *v) {
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = 13000;
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    std::lock_guard<std::mutex> lock(mem_mu);
    *free_bytes = k_total_mem - dev_used;
    *total_bytes = k_total_mem;
    return cudaSuccess;
}

/* ---- memory ------------------------------------------------------------------------------- */

/* The allocation of map m that holds [p, p + n), or false. */
static bool inside(const std::map<uintptr_t, size_t> &m, const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p;
    auto it = m.upper_bound(a);
    if (it == m.begin()) return false;
    --it;
    return a >= it->first && a + n <= it->first + it->second && a + n >= a;
}

cudaError_t cudaMalloc(void **p, size_t n) {
    *p = nullptr;
    if (n == 0) return cudaSuccess;
    std::lock_guard<std::mutex> lock(mem_mu);
    if (n > k_total_mem - dev_used)
        FAIL(cudaErrorMemoryAllocation, "cudaMalloc(%zu): %zu of the device's %zu bytes are free", n,
             k_total_mem - dev_used, k_total_mem);
    void *m = nullptr;
    if (posix_memalign(&m, 256, n) != 0) FAIL(cudaErrorMemoryAllocation, "cudaMalloc(%zu): host out of memory", n);
    dev_allocs[(uintptr_t)m] = n;
    dev_used += n;
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    std::lock_guard<std::mutex> lock(mem_mu);
    auto it = dev_allocs.find((uintptr_t)p);
    if (it == dev_allocs.end()) FAIL(cudaErrorInvalidValue, "cudaFree(%p): not a cudaMalloc allocation", p);
    dev_used -= it->second;
    dev_allocs.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t n) { return cudaHostAlloc(p, n, 0); }

cudaError_t cudaHostAlloc(void **p, size_t n, unsigned int) {
    *p = nullptr;
    void *m = nullptr;
    if (posix_memalign(&m, 256, n ? n : 1) != 0) FAIL(cudaErrorMemoryAllocation, "cudaHostAlloc(%zu)", n);
    std::lock_guard<std::mutex> lock(mem_mu);
    host_allocs[(uintptr_t)m] = n;
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p) {
    if (!p) return cudaSuccess;
    std::lock_guard<std::mutex> lock(mem_mu);
    auto it = host_allocs.find((uintptr_t)p);
    if (it == host_allocs.end()) FAIL(cudaErrorInvalidValue, "cudaFreeHost(%p): not a cudaMallocHost allocation", p);
    host_allocs.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaHostRegister(void *p, size_t n, unsigned int) {
    std::lock_guard<std::mutex> lock(mem_mu);
    host_allocs[(uintptr_t)p] = n;
    return cudaSuccess;
}

cudaError_t cudaHostUnregister(void *p) {
    std::lock_guard<std::mutex> lock(mem_mu);
    if (!host_allocs.erase((uintptr_t)p)) FAIL(cudaErrorInvalidValue, "cudaHostUnregister(%p): not registered", p);
    return cudaSuccess;
}

/* The start of an allocation of m that holds p, or false. */
static bool starts_in(const std::map<uintptr_t, size_t> &m, const void *p) { return inside(m, p, 1); }

/* Device side of a copy: inside one device allocation (or pinned host memory, which the
 * device can address). Host side: not device memory (a swapped copy). */
static cudaError_t check_side(const char *op, const char *which, const void *p, size_t n, bool device) {
    std::lock_guard<std::mutex> lock(mem_mu);
    if (device && !inside(dev_allocs, p, n) && !inside(host_allocs, p, n))
        FAIL(cudaErrorInvalidValue, "%s: %s [%p, +%zu) is not inside one device allocation", op, which, p, n);
    if (!device && starts_in(dev_allocs, p))
        FAIL(cudaErrorInvalidValue, "%s: %s %p is device memory, but the copy's kind says host", op, which, p);
    return cudaSuccess;
}

static cudaError_t copy(const char *op, void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    if (n == 0) return cudaSuccess;
    if (!dst || !src) FAIL(cudaErrorInvalidValue, "%s: NULL pointer", op);
    if ((int)kind < 0 || (int)kind > 4) FAIL(cudaErrorInvalidMemcpyDirection, "%s: kind %d", op, (int)kind);
    if (kind != cudaMemcpyDefault) {
        cudaError_t e = check_side(op, "destination", dst, n, kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice);
        if (e != cudaSuccess) return e;
        e = check_side(op, "source", src, n, kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice);
        if (e != cudaSuccess) return e;
    }
    memmove(dst, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    return copy("cudaMemcpy", dst, src, n, kind);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t) {
    return copy("cudaMemcpyAsync", dst, src, n, kind);
}

cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                         cudaMemcpyKind kind) {
    if (width > dpitch || width > spitch) FAIL(cudaErrorInvalidValue, "cudaMemcpy2D: width %zu above a pitch", width);
    for (size_t r = 0; r < height; r++) {
        cudaError_t e = copy("cudaMemcpy2D", (char *)dst + r * dpitch, (const char *)src + r * spitch, width, kind);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t) {
    return cudaMemcpy2D(dst, dpitch, src, spitch, width, height, kind);
}

cudaError_t cudaMemset(void *p, int value, size_t n) {
    if (n == 0) return cudaSuccess;
    cudaError_t e = check_side("cudaMemset", "destination", p, n, true);
    if (e != cudaSuccess) return e;
    memset(p, value, n);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t) { return cudaMemset(p, value, n); }

/* ---- streams and events: work is done when issued ------------------------------------------ */

struct tm_sim_stream {
    unsigned int flags; /* as created */
};

struct tm_sim_event {
    unsigned int flags; /* as created */
    bool recorded;      /* cudaEventRecord was called */
    double t;           /* host time of the last record, seconds */
};

static bool stream_ok(cudaStream_t s) {
    if (!s || s == cudaStreamLegacy || s == cudaStreamPerThread) return true;
    std::lock_guard<std::mutex> lock(mem_mu);
    return streams.count(s) != 0;
}

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    *s = new tm_sim_stream{flags};
    std::lock_guard<std::mutex> lock(mem_mu);
    streams.insert(*s);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    std::lock_guard<std::mutex> lock(mem_mu);
    if (!streams.erase(s)) FAIL(cudaErrorInvalidResourceHandle, "cudaStreamDestroy(%p): not a stream", (void *)s);
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    if (!stream_ok(s)) FAIL(cudaErrorInvalidResourceHandle, "cudaStreamSynchronize(%p): not a stream", (void *)s);
    return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t, unsigned int) { return cudaStreamSynchronize(s); }

static double now_s() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
    *e = new tm_sim_event{flags, false, 0.0};
    std::lock_guard<std::mutex> lock(mem_mu);
    events.insert(*e);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    std::lock_guard<std::mutex> lock(mem_mu);
    if (!events.erase(e)) FAIL(cudaErrorInvalidResourceHandle, "cudaEventDestroy(%p): not an event", (void *)e);
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
    e->recorded = true;
    e->t = now_s();
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!start->recorded || !end->recorded)
        FAIL(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event was never recorded");
    if ((start->flags | end->flags) & cudaEventDisableTiming)
        FAIL(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event was created with cudaEventDisableTiming");
    *ms = (float)((end->t - start->t) * 1e3);
    return cudaSuccess;
}

/* ---- kernel attributes ---------------------------------------------------------------------- */

cudaError_t func_set_attribute(const void *kernel, cudaFuncAttribute attr, int value) {
    if (!kernel) FAIL(cudaErrorInvalidDeviceFunction, "cudaFuncSetAttribute: NULL kernel");
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || (size_t)value > k_smem_optin)
            FAIL(cudaErrorInvalidValue, "cudaFuncSetAttribute: %d bytes of dynamic shared memory (at most %zu)",
                 value, k_smem_optin);
        std::lock_guard<std::mutex> lock(mem_mu);
        func_smem[kernel] = value;
        return cudaSuccess;
    }
    if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) {
        if (value < -1 || value > 100) FAIL(cudaErrorInvalidValue, "cudaFuncSetAttribute: carveout %d", value);
        return cudaSuccess;
    }
    FAIL(cudaErrorInvalidValue, "cudaFuncSetAttribute: attribute %d is not simulated", (int)attr);
}

size_t func_max_dyn_smem(const void *kernel) {
    std::lock_guard<std::mutex> lock(mem_mu);
    auto it = func_smem.find(kernel);
    return it == func_smem.end() || !kernel ? k_smem_default : (size_t)it->second;
}

cudaError_t func_get_attributes(cudaFuncAttributes *a, const void *kernel) {
    if (!kernel) FAIL(cudaErrorInvalidDeviceFunction, "cudaFuncGetAttributes: NULL kernel");
    memset(a, 0, sizeof *a);
    a->maxThreadsPerBlock = 1024;
    a->numRegs = 32;
    a->ptxVersion = a->binaryVersion = 90;
    a->maxDynamicSharedSizeBytes = (int)func_max_dyn_smem(kernel);
    return cudaSuccess;
}

cudaError_t occupancy_blocks_per_sm(int *n, int block_size, size_t dyn_smem) {
    if (block_size <= 0 || block_size > 1024) FAIL(cudaErrorInvalidValue, "occupancy: block size %d", block_size);
    int by_threads = 2048 / block_size;
    int by_smem = dyn_smem ? (int)(k_smem_sm / (dyn_smem + 1024)) : 32;
    int r = by_threads < by_smem ? by_threads : by_smem;
    *n = r < 32 ? r : 32;
    return cudaSuccess;
}

} // namespace tm_sim

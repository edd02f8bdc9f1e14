/* tm_sim/device.h - what kernel code calls, for the CPU harness: the thread indices, the
 * block barrier and the warp collectives (which switch between the block's fibers, see
 * tests/cuda_sim/README.md), atomics, integer intrinsics and fast math.
 *
 * Barriers and collectives take the caller's file and line as default arguments
 * (__builtin_FILE/LINE are evaluated at the call site), so a refusal can say which
 * __syncthreads or __shfl_sync it is about without any macro. */
#ifndef TM_SIM_DEVICE_H
#define TM_SIM_DEVICE_H

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "tm_sim/types.h"

namespace tm_sim {

/* ---- thread indices: set by the scheduler before it switches to a thread's fiber ---- */
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;
constexpr int warpSize = 32;

/* ---- block barrier --------------------------------------------------------------- */
enum { TM_SIM_BAR_SYNC, TM_SIM_BAR_COUNT, TM_SIM_BAR_AND, TM_SIM_BAR_OR };
/* Waits until every thread of the block has arrived at the same call site; returns the
 * reduction of pred for the _count/_and/_or forms. Refuses (ends the launch with an
 * error) a barrier that some thread can never reach. */
int sync_block(int kind, int pred, const char *file, int line);

static inline void __syncthreads(const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    sync_block(TM_SIM_BAR_SYNC, 0, file, line);
}
static inline int __syncthreads_count(int pred, const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return sync_block(TM_SIM_BAR_COUNT, pred, file, line);
}
static inline int __syncthreads_and(int pred, const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return sync_block(TM_SIM_BAR_AND, pred, file, line);
}
static inline int __syncthreads_or(int pred, const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return sync_block(TM_SIM_BAR_OR, pred, file, line);
}

/* ---- warp collectives ------------------------------------------------------------ */
enum tm_sim_coll_kind {
    TM_SIM_SYNCWARP,
    TM_SIM_SHFL_IDX,
    TM_SIM_SHFL_UP,
    TM_SIM_SHFL_DOWN,
    TM_SIM_SHFL_XOR,
    TM_SIM_BALLOT,
    TM_SIM_ANY,
    TM_SIM_ALL,
    TM_SIM_MATCH_ANY,
    TM_SIM_MATCH_ALL,
    TM_SIM_REDUCE_ADD,
    TM_SIM_REDUCE_MIN_U,
    TM_SIM_REDUCE_MAX_U,
    TM_SIM_REDUCE_MIN_S,
    TM_SIM_REDUCE_MAX_S,
    TM_SIM_REDUCE_AND,
    TM_SIM_REDUCE_OR,
    TM_SIM_REDUCE_XOR,
    TM_SIM_MMA_F16,
    TM_SIM_MMA_S8,
    TM_SIM_LDMATRIX,
    TM_SIM_N_COLL_KINDS
};

/* One lane's part of a scalar collective: its input, its operand (source lane, delta,
 * lane mask) and, once every lane of the mask has arrived, its result. */
struct lane_val {
    uint64_t in;  /* the value this lane contributes */
    uint64_t out; /* the value this lane receives */
    int arg;      /* per-lane operand (shuffles) */
};

/* Blocks this lane until every lane of mask has arrived at a collective of the same kind
 * and variant (for shuffles: width), then the lane that completes the set computes every
 * lane's result into its payload. Refuses a mask without the caller, a mask with a lane
 * that has exited, lanes that disagree on mask or kind, and a collective that can never
 * complete. */
void warp_collective(int kind, int variant, unsigned mask, void *payload, const char *file, int line);

static inline uint32_t tm_sim_coll32(int kind, unsigned mask, uint32_t v, int arg, int width, const char *file,
                                     int line) {
    lane_val p{v, 0, arg};
    warp_collective(kind, width, mask, &p, file, line);
    return (uint32_t)p.out;
}

template <class T>
static inline T tm_sim_shfl(int kind, unsigned mask, T var, int arg, int width, const char *file, int line) {
    static_assert(std::is_trivially_copyable<T>::value, "a shuffled value must be trivially copyable");
    constexpr int n = (int)((sizeof(T) + 3) / 4);
    uint32_t w[n] = {};
    std::memcpy(w, &var, sizeof(T));
    for (int i = 0; i < n; i++) w[i] = tm_sim_coll32(kind, mask, w[i], arg, width, file, line);
    std::memcpy(&var, w, sizeof(T));
    return var;
}

template <class T>
static inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize,
                            const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return tm_sim_shfl(TM_SIM_SHFL_IDX, mask, var, srcLane, width, file, line);
}
template <class T>
static inline T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,
                               const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return tm_sim_shfl(TM_SIM_SHFL_UP, mask, var, (int)delta, width, file, line);
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,
                                 const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return tm_sim_shfl(TM_SIM_SHFL_DOWN, mask, var, (int)delta, width, file, line);
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,
                                const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return tm_sim_shfl(TM_SIM_SHFL_XOR, mask, var, laneMask, width, file, line);
}

static inline void __syncwarp(unsigned mask = 0xffffffffu, const char *file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
    tm_sim_coll32(TM_SIM_SYNCWARP, mask, 0, 0, 0, file, line);
}
static inline unsigned __ballot_sync(unsigned mask, int pred, const char *file = __builtin_FILE(),
                                     int line = __builtin_LINE()) {
    return tm_sim_coll32(TM_SIM_BALLOT, mask, pred != 0, 0, 0, file, line);
}
static inline int __any_sync(unsigned mask, int pred, const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return (int)tm_sim_coll32(TM_SIM_ANY, mask, pred != 0, 0, 0, file, line);
}
static inline int __all_sync(unsigned mask, int pred, const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return (int)tm_sim_coll32(TM_SIM_ALL, mask, pred != 0, 0, 0, file, line);
}
template <class T>
static inline unsigned __match_any_sync(unsigned mask, T value, const char *file = __builtin_FILE(),
                                        int line = __builtin_LINE()) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "__match_any_sync takes 32- or 64-bit values");
    lane_val p{0, 0, 0};
    std::memcpy(&p.in, &value, sizeof(T));
    warp_collective(TM_SIM_MATCH_ANY, (int)sizeof(T), mask, &p, file, line);
    return (unsigned)p.out;
}
template <class T>
static inline unsigned __match_all_sync(unsigned mask, T value, int *pred, const char *file = __builtin_FILE(),
                                        int line = __builtin_LINE()) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "__match_all_sync takes 32- or 64-bit values");
    lane_val p{0, 0, 0};
    std::memcpy(&p.in, &value, sizeof(T));
    warp_collective(TM_SIM_MATCH_ALL, (int)sizeof(T), mask, &p, file, line);
    *pred = p.out != 0;
    return p.out ? mask : 0;
}
#define TM_SIM_REDUCE(name, kind, T)                                                                     \
    static inline T name(unsigned mask, T v, const char *file = __builtin_FILE(), int line = __builtin_LINE()) { \
        return (T)tm_sim_coll32(kind, mask, (uint32_t)v, 0, 0, file, line);                              \
    }
TM_SIM_REDUCE(__reduce_add_sync, TM_SIM_REDUCE_ADD, unsigned)
TM_SIM_REDUCE(__reduce_add_sync, TM_SIM_REDUCE_ADD, int)
TM_SIM_REDUCE(__reduce_min_sync, TM_SIM_REDUCE_MIN_U, unsigned)
TM_SIM_REDUCE(__reduce_min_sync, TM_SIM_REDUCE_MIN_S, int)
TM_SIM_REDUCE(__reduce_max_sync, TM_SIM_REDUCE_MAX_U, unsigned)
TM_SIM_REDUCE(__reduce_max_sync, TM_SIM_REDUCE_MAX_S, int)
TM_SIM_REDUCE(__reduce_and_sync, TM_SIM_REDUCE_AND, unsigned)
TM_SIM_REDUCE(__reduce_or_sync, TM_SIM_REDUCE_OR, unsigned)
TM_SIM_REDUCE(__reduce_xor_sync, TM_SIM_REDUCE_XOR, unsigned)
#undef TM_SIM_REDUCE

/* The lanes of this warp that exist and have not exited (fibers have no notion of
 * divergence, so this is every live lane, not only the converged ones). */
unsigned active_mask();
static inline unsigned __activemask() { return active_mask(); }

/* A kernel's __trap(): the launch ends with cudaErrorLaunchFailure. */
[[noreturn]] void trap(const char *file, int line);
static inline void __trap(const char *file = __builtin_FILE(), int line = __builtin_LINE()) { trap(file, line); }

/* ---- shared memory and PTX wrappers (kernels/cuda/common.cuh calls these) -------- */
void *tm_sim_dyn_smem();
int is_shared(const void *p);
static inline unsigned __isShared(const void *p) { return (unsigned)is_shared(p); }
static inline size_t __cvta_generic_to_shared(const void *p) { return (size_t)(uintptr_t)p; }

void tm_sim_mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]);
void tm_sim_mma_m16n8k32_s8(int d[4], const uint32_t a[4], const uint32_t b[2], const int c[4]);
void tm_sim_ldmatrix(uint32_t *r, int n_mats, int trans, const void *row_addr);
void tm_sim_cp_async(void *smem, const void *gmem, int n_bytes);
void tm_sim_cp_async_commit();
void tm_sim_cp_async_wait(int n_pending);

/* ---- memory fences: one OS thread runs every fiber, so memory is always coherent ---- */
static inline void __threadfence() { std::atomic_signal_fence(std::memory_order_seq_cst); }
static inline void __threadfence_block() { std::atomic_signal_fence(std::memory_order_seq_cst); }
static inline void __threadfence_system() { std::atomic_signal_fence(std::memory_order_seq_cst); }
static inline void __nanosleep(unsigned) {}

/* ---- loads and stores with cache hints: plain accesses here ---------------------- */
template <class T> static inline T __ldg(const T *p) { return *p; }
template <class T> static inline T __ldcg(const T *p) { return *p; }
template <class T> static inline T __ldca(const T *p) { return *p; }
template <class T> static inline T __ldcs(const T *p) { return *p; }
template <class T> static inline T __ldlu(const T *p) { return *p; }
template <class T> static inline T __ldcv(const T *p) { return *p; }
template <class T> static inline void __stcg(T *p, T v) { *p = v; }
template <class T> static inline void __stcs(T *p, T v) { *p = v; }
template <class T> static inline void __stwb(T *p, T v) { *p = v; }
template <class T> static inline void __stwt(T *p, T v) { *p = v; }

/* ---- atomics: every fiber runs on one OS thread and none is preempted, so a plain
 * read-modify-write is atomic with respect to the others ---------------------------- */
#define TM_SIM_ATOMIC(name, T, expr)                   \
    static inline T name(T *address, T val) {          \
        T old = *address;                              \
        *address = (expr);                             \
        return old;                                    \
    }
TM_SIM_ATOMIC(atomicAdd, int, old + val)
TM_SIM_ATOMIC(atomicAdd, unsigned int, old + val)
TM_SIM_ATOMIC(atomicAdd, unsigned long long, old + val)
TM_SIM_ATOMIC(atomicAdd, float, old + val)
TM_SIM_ATOMIC(atomicAdd, double, old + val)
TM_SIM_ATOMIC(atomicSub, int, old - val)
TM_SIM_ATOMIC(atomicSub, unsigned int, old - val)
TM_SIM_ATOMIC(atomicExch, int, val)
TM_SIM_ATOMIC(atomicExch, unsigned int, val)
TM_SIM_ATOMIC(atomicExch, unsigned long long, val)
TM_SIM_ATOMIC(atomicExch, float, val)
TM_SIM_ATOMIC(atomicMax, int, old > val ? old : val)
TM_SIM_ATOMIC(atomicMax, unsigned int, old > val ? old : val)
TM_SIM_ATOMIC(atomicMax, long long, old > val ? old : val)
TM_SIM_ATOMIC(atomicMax, unsigned long long, old > val ? old : val)
TM_SIM_ATOMIC(atomicMin, int, old < val ? old : val)
TM_SIM_ATOMIC(atomicMin, unsigned int, old < val ? old : val)
TM_SIM_ATOMIC(atomicMin, long long, old < val ? old : val)
TM_SIM_ATOMIC(atomicMin, unsigned long long, old < val ? old : val)
TM_SIM_ATOMIC(atomicAnd, int, old & val)
TM_SIM_ATOMIC(atomicAnd, unsigned int, old & val)
TM_SIM_ATOMIC(atomicAnd, unsigned long long, old & val)
TM_SIM_ATOMIC(atomicOr, int, old | val)
TM_SIM_ATOMIC(atomicOr, unsigned int, old | val)
TM_SIM_ATOMIC(atomicOr, unsigned long long, old | val)
TM_SIM_ATOMIC(atomicXor, int, old ^ val)
TM_SIM_ATOMIC(atomicXor, unsigned int, old ^ val)
TM_SIM_ATOMIC(atomicXor, unsigned long long, old ^ val)
TM_SIM_ATOMIC(atomicInc, unsigned int, old >= val ? 0u : old + 1)
TM_SIM_ATOMIC(atomicDec, unsigned int, (old == 0 || old > val) ? val : old - 1)
#undef TM_SIM_ATOMIC
#define TM_SIM_ATOMIC_CAS(T)                                      \
    static inline T atomicCAS(T *address, T compare, T val) {     \
        T old = *address;                                         \
        if (old == compare) *address = val;                       \
        return old;                                               \
    }
TM_SIM_ATOMIC_CAS(int)
TM_SIM_ATOMIC_CAS(unsigned int)
TM_SIM_ATOMIC_CAS(unsigned long long)
TM_SIM_ATOMIC_CAS(unsigned short)
#undef TM_SIM_ATOMIC_CAS

/* ---- integer intrinsics ------------------------------------------------------------ */
static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> 8 * i) * (int)(int8_t)(b >> 8 * i);
    return c;
}
static inline unsigned int __dp4a(unsigned int a, unsigned int b, unsigned int c) {
    for (int i = 0; i < 4; i++) c += ((a >> 8 * i) & 0xffu) * ((b >> 8 * i) & 0xffu);
    return c;
}
static inline int __dp4a(char4 a, char4 b, int c) {
    int ia, ib;
    std::memcpy(&ia, &a, 4);
    std::memcpy(&ib, &b, 4);
    return __dp4a(ia, ib, c);
}
static inline unsigned int __dp4a(uchar4 a, uchar4 b, unsigned int c) {
    unsigned int ia, ib;
    std::memcpy(&ia, &a, 4);
    std::memcpy(&ib, &b, 4);
    return __dp4a(ia, ib, c);
}
/* __dp2a_lo/hi: two 16-bit values of a times two bytes of b (low or high pair). */
static inline int __dp2a_lo(int a, int b, int c) {
    return c + (int)(int16_t)a * (int)(int8_t)b + (int)(int16_t)(a >> 16) * (int)(int8_t)(b >> 8);
}
static inline int __dp2a_hi(int a, int b, int c) {
    return c + (int)(int16_t)a * (int)(int8_t)(b >> 16) + (int)(int16_t)(a >> 16) * (int)(int8_t)(b >> 24);
}
/* per-byte SIMD: a and b hold four bytes each */
static inline unsigned int tm_sim_bytewise(unsigned int a, unsigned int b, int op) {
    unsigned int r = 0;
    for (int i = 0; i < 4; i++) {
        int x = (int)((a >> 8 * i) & 0xffu), y = (int)((b >> 8 * i) & 0xffu), v;
        int sx = (int)(int8_t)x, sy = (int)(int8_t)y;
        switch (op) {
        case 0: v = x + y; break;                                     /* __vadd4 */
        case 1: v = x - y; break;                                     /* __vsub4 */
        case 2: v = sx + sy; v = v > 127 ? 127 : v < -128 ? -128 : v; break; /* __vaddss4 */
        case 3: v = sx - sy; v = v > 127 ? 127 : v < -128 ? -128 : v; break; /* __vsubss4 */
        case 4: v = x + y; v = v > 255 ? 255 : v; break;              /* __vaddus4 */
        case 5: v = x - y; v = v < 0 ? 0 : v; break;                  /* __vsubus4 */
        case 6: v = x > y ? x - y : y - x; break;                     /* __vabsdiffu4 */
        case 7: v = sx > sy ? sx : sy; break;                         /* __vmaxs4 */
        case 8: v = sx < sy ? sx : sy; break;                         /* __vmins4 */
        case 9: v = x > y ? x : y; break;                             /* __vmaxu4 */
        default: v = x < y ? x : y; break;                            /* __vminu4 */
        }
        r |= ((unsigned int)v & 0xffu) << 8 * i;
    }
    return r;
}
static inline unsigned int __vadd4(unsigned int a, unsigned int b) { return tm_sim_bytewise(a, b, 0); }
static inline unsigned int __vsub4(unsigned int a, unsigned int b) { return tm_sim_bytewise(a, b, 1); }
static inline unsigned int __vaddss4(unsigned int a, unsigned int b) { return tm_sim_bytewise(a, b, 2); }
static inline unsigned int __vsubss4(unsigned int a, unsigned int b) { return tm_sim_bytewise(a, b, 3); }
static inline unsigned int __vaddus4(unsigned int a, unsigned int b) { return tm_sim_bytewise(a, b, 4); }
static inline unsigned int __vsubus4(unsigned int a, unsigned int b) { return tm_sim_bytewise(a, b, 5); }
static inline unsigned int __vabsdiffu4(unsigned int a, unsigned int b) { return tm_sim_bytewise(a, b, 6); }
static inline unsigned int __vmaxs4(unsigned int a, unsigned int b) { return tm_sim_bytewise(a, b, 7); }
static inline unsigned int __vmins4(unsigned int a, unsigned int b) { return tm_sim_bytewise(a, b, 8); }
static inline unsigned int __vmaxu4(unsigned int a, unsigned int b) { return tm_sim_bytewise(a, b, 9); }
static inline unsigned int __vminu4(unsigned int a, unsigned int b) { return tm_sim_bytewise(a, b, 10); }
/* result byte n = byte ((s >> 4n) & 7) of the eight bytes {y:x} */
static inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
    uint64_t v = ((uint64_t)y << 32) | x;
    unsigned int r = 0;
    for (int n = 0; n < 4; n++) r |= (unsigned int)((v >> 8 * ((s >> 4 * n) & 7)) & 0xffu) << 8 * n;
    return r;
}
static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned int)x); }
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned int __brev(unsigned int x) {
    unsigned int r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
static inline unsigned int __funnelshift_l(unsigned int lo, unsigned int hi, unsigned int s) {
    return (unsigned int)(((((uint64_t)hi << 32) | lo) << (s & 31)) >> 32);
}
static inline unsigned int __funnelshift_r(unsigned int lo, unsigned int hi, unsigned int s) {
    return (unsigned int)((((uint64_t)hi << 32) | lo) >> (s & 31));
}
static inline int __mulhi(int a, int b) { return (int)(((int64_t)a * b) >> 32); }
static inline unsigned int __umulhi(unsigned int a, unsigned int b) { return (unsigned int)(((uint64_t)a * b) >> 32); }
static inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline int __mul24(int a, int b) { return (int)((int64_t)((a << 8) >> 8) * ((b << 8) >> 8)); }
static inline unsigned int __umul24(unsigned int a, unsigned int b) { return (a & 0xffffffu) * (b & 0xffffffu); }
static inline unsigned int __sad(int x, int y, unsigned int z) { return z + (unsigned int)(x > y ? x - y : y - x); }
static inline unsigned int __usad(unsigned int x, unsigned int y, unsigned int z) { return z + (x > y ? x - y : y - x); }

static inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
static inline unsigned int __float_as_uint(float f) { unsigned int i; std::memcpy(&i, &f, 4); return i; }
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline float __uint_as_float(unsigned int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline long long __double_as_longlong(double d) { long long i; std::memcpy(&i, &d, 8); return i; }
static inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }

/* float -> integer: rounding as named, saturating and NaN -> 0 as cvt does */
static inline int tm_sim_f2i(float r) {
    if (r != r) return 0;
    if (r >= 2147483648.0f) return 2147483647;
    if (r < -2147483648.0f) return -2147483647 - 1;
    return (int)r;
}
static inline unsigned int tm_sim_f2u(float r) {
    if (r != r || r <= 0.0f) return 0;
    if (r >= 4294967296.0f) return 4294967295u;
    return (unsigned int)r;
}
static inline long long tm_sim_f2ll(double r) {
    if (r != r) return 0;
    if (r >= 9223372036854775808.0) return 9223372036854775807LL;
    if (r < -9223372036854775808.0) return -9223372036854775807LL - 1;
    return (long long)r;
}
static inline int __float2int_rn(float f) { return tm_sim_f2i(std::nearbyint(f)); }
static inline int __float2int_rz(float f) { return tm_sim_f2i(std::trunc(f)); }
static inline int __float2int_rd(float f) { return tm_sim_f2i(std::floor(f)); }
static inline int __float2int_ru(float f) { return tm_sim_f2i(std::ceil(f)); }
static inline unsigned int __float2uint_rn(float f) { return tm_sim_f2u(std::nearbyint(f)); }
static inline unsigned int __float2uint_rz(float f) { return tm_sim_f2u(std::trunc(f)); }
static inline unsigned int __float2uint_rd(float f) { return tm_sim_f2u(std::floor(f)); }
static inline unsigned int __float2uint_ru(float f) { return tm_sim_f2u(std::ceil(f)); }
static inline long long __float2ll_rn(float f) { return tm_sim_f2ll(std::nearbyint((double)f)); }
static inline long long __float2ll_rz(float f) { return tm_sim_f2ll(std::trunc((double)f)); }
static inline int __double2int_rn(double d) { return (int)tm_sim_f2ll(std::nearbyint(d)); }
static inline float __int2float_rn(int i) { return (float)i; }
static inline float __uint2float_rn(unsigned int i) { return (float)i; }
static inline float __ll2float_rn(long long i) { return (float)i; }

/* ---- float math the host library lacks (expf, exp2f, fmaxf, ... come from libm, and so
 * do glibc's __expf, __logf, __powf, __sinf, __cosf, __log2f, __exp10f, which CUDA's fast
 * intrinsics name the same; here they are the exact functions) ---------------------- */
static inline float __fdividef(float a, float b) { return a / b; }
static inline float fdividef(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
static inline double rsqrt(double a) { return 1.0 / std::sqrt(a); }
static inline float __frsqrt_rn(float a) { return 1.0f / std::sqrt(a); }
static inline float __fsqrt_rn(float a) { return std::sqrt(a); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
static inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
static inline float __saturatef(float a) { return a >= 1.0f ? 1.0f : a > 0.0f ? a : 0.0f; } /* NaN -> 0 */

/* min and max as CUDA overloads them (math_functions.h) */
#define TM_SIM_MINMAX(T)                                              \
    static inline T min(T a, T b) { return a < b ? a : b; }           \
    static inline T max(T a, T b) { return a > b ? a : b; }
TM_SIM_MINMAX(int)
TM_SIM_MINMAX(unsigned int)
TM_SIM_MINMAX(long)
TM_SIM_MINMAX(unsigned long)
TM_SIM_MINMAX(long long)
TM_SIM_MINMAX(unsigned long long)
#undef TM_SIM_MINMAX
static inline unsigned int min(int a, unsigned int b) { return min((unsigned int)a, b); }
static inline unsigned int min(unsigned int a, int b) { return min(a, (unsigned int)b); }
static inline unsigned int max(int a, unsigned int b) { return max((unsigned int)a, b); }
static inline unsigned int max(unsigned int a, int b) { return max(a, (unsigned int)b); }
static inline float min(float a, float b) { return std::fmin(a, b); }
static inline float max(float a, float b) { return std::fmax(a, b); }
static inline double min(double a, double b) { return std::fmin(a, b); }
static inline double max(double a, double b) { return std::fmax(a, b); }
static inline double min(float a, double b) { return std::fmin((double)a, b); }
static inline double min(double a, float b) { return std::fmin(a, (double)b); }
static inline double max(float a, double b) { return std::fmax((double)a, b); }
static inline double max(double a, float b) { return std::fmax(a, (double)b); }

} // namespace tm_sim

#endif

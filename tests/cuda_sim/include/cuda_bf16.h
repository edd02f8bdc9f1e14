/* cuda_bf16.h for the CPU harness (tests/cuda_sim): __nv_bfloat16 and __nv_bfloat162,
 * round to nearest even as on the GPU. Needs no CUDA toolkit. */
#ifndef TM_SIM_CUDA_BF16_H
#define TM_SIM_CUDA_BF16_H

#include "cuda_fp16.h"
#include "tm_sim/convert.h"
#include "tm_sim/half_ops.h"
#include "tm_sim/types.h"

namespace tm_sim {

struct __nv_bfloat16_raw {
    unsigned short x; /* bfloat16 bits */
};
struct __nv_bfloat162_raw {
    unsigned short x, y; /* low, high */
};

struct __attribute__((aligned(2))) __nv_bfloat16 {
    unsigned short __x; /* bfloat16 bits */
    __nv_bfloat16() = default;
    constexpr __nv_bfloat16(const __nv_bfloat16_raw &r) : __x(r.x) {}
    __nv_bfloat16(float f) : __x(f32_to_bf16_rn(f)) {}
    __nv_bfloat16(double d) : __x(f32_to_bf16_rn(tm_sim_round_f64_for_16(d))) {}
    __nv_bfloat16(int i) : __x(f32_to_bf16_rn(tm_sim_round_f64_for_16((double)i))) {}
    __nv_bfloat16(unsigned int i) : __x(f32_to_bf16_rn(tm_sim_round_f64_for_16((double)i))) {}
    __nv_bfloat16 &operator=(const __nv_bfloat16_raw &r) { __x = r.x; return *this; }
    __nv_bfloat16 &operator=(float f) { __x = f32_to_bf16_rn(f); return *this; }
    operator float() const { return bf16_to_f32(__x); }
    operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
};

struct __attribute__((aligned(4))) __nv_bfloat162 {
    __nv_bfloat16 x, y; /* low, high */
    __nv_bfloat162() = default;
    constexpr __nv_bfloat162(const __nv_bfloat16 &a, const __nv_bfloat16 &b) : x(a), y(b) {}
    constexpr __nv_bfloat162(const __nv_bfloat162_raw &r)
        : x(__nv_bfloat16_raw{r.x}), y(__nv_bfloat16_raw{r.y}) {}
    operator __nv_bfloat162_raw() const { return __nv_bfloat162_raw{x.__x, y.__x}; }
};

typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

TM_SIM_HALF_OPS(__nv_bfloat16, __nv_bfloat162, f32_to_bf16_rn, bf16_to_f32)

static inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
static inline __nv_bfloat16 __float2bfloat16_rz(float f) { return __nv_bfloat16_raw{f32_to_bf16_rz(f)}; }
static inline float __bfloat162float(__nv_bfloat16 h) { return bf16_to_f32(h.__x); }
static inline __nv_bfloat162 __float2bfloat162_rn(float f) { return __nv_bfloat162(f, f); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
    return __nv_bfloat162(__nv_bfloat16(lo), __nv_bfloat16(hi));
}
static inline __nv_bfloat162 __float22bfloat162_rn(float2 f) {
    return __nv_bfloat162(__nv_bfloat16(f.x), __nv_bfloat16(f.y));
}
static inline float2 __bfloat1622float2(__nv_bfloat162 h) { return tm_sim_tof2(h); }
static inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 h) { return h.x; }
static inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 h) { return h.y; }
static inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 lo, __nv_bfloat16 hi) { return __nv_bfloat162(lo, hi); }
static inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 h) { return __nv_bfloat162(h, h); }
static inline __nv_bfloat162 __lows2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) { return __nv_bfloat162(a.x, b.x); }
static inline __nv_bfloat162 __highs2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) { return __nv_bfloat162(a.y, b.y); }
static inline __nv_bfloat162 make_bfloat162(__nv_bfloat16 x, __nv_bfloat16 y) { return __nv_bfloat162(x, y); }
static inline short __bfloat16_as_short(__nv_bfloat16 h) { return (short)h.__x; }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
static inline __nv_bfloat16 __short_as_bfloat16(short s) { return __nv_bfloat16_raw{(unsigned short)s}; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short s) { return __nv_bfloat16_raw{s}; }

} // namespace tm_sim

using namespace tm_sim;

#endif

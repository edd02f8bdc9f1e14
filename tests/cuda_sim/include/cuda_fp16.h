/* cuda_fp16.h for the CPU harness (tests/cuda_sim): __half and __half2 with the
 * conversions and intrinsics that kernels use, exact IEEE round-to-nearest-even as on
 * the GPU. Needs no CUDA toolkit. */
#ifndef TM_SIM_CUDA_FP16_H
#define TM_SIM_CUDA_FP16_H

#include "tm_sim/convert.h"
#include "tm_sim/half_ops.h"
#include "tm_sim/types.h"

namespace tm_sim {

struct __half_raw {
    unsigned short x; /* binary16 bits */
};
struct __half2_raw {
    unsigned short x, y; /* low, high */
};

struct __attribute__((aligned(2))) __half {
    unsigned short __x; /* binary16 bits */
    __half() = default;
    constexpr __half(const __half_raw &r) : __x(r.x) {}
    __half(float f) : __x(f32_to_f16_rn(f)) {}
    __half(double d) : __x(f64_to_f16_rn(d)) {}
    __half(int i) : __x(f64_to_f16_rn((double)i)) {}
    __half(unsigned int i) : __x(f64_to_f16_rn((double)i)) {}
    __half(long i) : __x(f64_to_f16_rn((double)i)) {}
    __half(unsigned long i) : __x(f64_to_f16_rn((double)i)) {}
    __half(long long i) : __x(f64_to_f16_rn((double)i)) {}
    __half(unsigned long long i) : __x(f64_to_f16_rn((double)i)) {}
    __half(short i) : __x(f32_to_f16_rn((float)i)) {}
    __half(unsigned short i) : __x(f32_to_f16_rn((float)i)) {}
    __half &operator=(const __half_raw &r) { __x = r.x; return *this; }
    __half &operator=(float f) { __x = f32_to_f16_rn(f); return *this; }
    __half &operator=(double d) { __x = f64_to_f16_rn(d); return *this; }
    operator float() const { return f16_to_f32(__x); }
    operator __half_raw() const { return __half_raw{__x}; }
};

struct __attribute__((aligned(4))) __half2 {
    __half x, y; /* low, high */
    __half2() = default;
    constexpr __half2(const __half &a, const __half &b) : x(a), y(b) {}
    constexpr __half2(const __half2_raw &r) : x(__half_raw{r.x}), y(__half_raw{r.y}) {}
    __half2 &operator=(const __half2_raw &r) { x = __half_raw{r.x}; y = __half_raw{r.y}; return *this; }
    operator __half2_raw() const { return __half2_raw{x.__x, y.__x}; }
};

typedef __half half;
typedef __half2 half2;

TM_SIM_HALF_OPS(__half, __half2, f32_to_f16_rn, f16_to_f32)

static inline __half __float2half(float f) { return __half(f); }
static inline __half __float2half_rn(float f) { return __half(f); }
static inline __half __float2half_rz(float f) { return __half_raw{f32_to_f16_rz(f)}; }
static inline __half __double2half(double d) { return __half(d); }
static inline float __half2float(__half h) { return f16_to_f32(h.__x); }
static inline __half2 __float2half2_rn(float f) { return __half2(__half(f), __half(f)); }
static inline __half2 __floats2half2_rn(float lo, float hi) { return __half2(__half(lo), __half(hi)); }
static inline __half2 __float22half2_rn(float2 f) { return __half2(__half(f.x), __half(f.y)); }
static inline float2 __half22float2(__half2 h) { return tm_sim_tof2(h); }
static inline __half __low2half(__half2 h) { return h.x; }
static inline __half __high2half(__half2 h) { return h.y; }
static inline __half2 __halves2half2(__half lo, __half hi) { return __half2(lo, hi); }
static inline __half2 __half2half2(__half h) { return __half2(h, h); }
static inline __half2 __low2half2(__half2 h) { return __half2(h.x, h.x); }
static inline __half2 __high2half2(__half2 h) { return __half2(h.y, h.y); }
static inline __half2 __lows2half2(__half2 a, __half2 b) { return __half2(a.x, b.x); }
static inline __half2 __highs2half2(__half2 a, __half2 b) { return __half2(a.y, b.y); }
static inline __half2 make_half2(__half x, __half y) { return __half2(x, y); }
static inline short __half_as_short(__half h) { return (short)h.__x; }
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
static inline __half __short_as_half(short s) { return __half_raw{(unsigned short)s}; }
static inline __half __ushort_as_half(unsigned short s) { return __half_raw{s}; }
static inline __half __int2half_rn(int i) { return __half(i); }
static inline __half __uint2half_rn(unsigned int i) { return __half(i); }
static inline __half __short2half_rn(short i) { return __half(i); }
static inline __half __ushort2half_rn(unsigned short i) { return __half(i); }
/* float -> int with the GPU's saturation (NaN gives 0) */
static inline int tm_sim_f2i_sat(float r) {
    if (r != r) return 0;
    if (r >= 2147483648.0f) return 2147483647;
    if (r < -2147483648.0f) return (-2147483647 - 1);
    return (int)r;
}
static inline int __half2int_rn(__half h) { return tm_sim_f2i_sat(__builtin_nearbyintf(__half2float(h))); }
static inline int __half2int_rz(__half h) { return tm_sim_f2i_sat(__builtin_truncf(__half2float(h))); }
static inline int __half2int_rd(__half h) { return tm_sim_f2i_sat(__builtin_floorf(__half2float(h))); }
static inline int __half2int_ru(__half h) { return tm_sim_f2i_sat(__builtin_ceilf(__half2float(h))); }
static inline __half hexp(__half h) { return __half(__builtin_expf(__half2float(h))); }
static inline __half hlog(__half h) { return __half(__builtin_logf(__half2float(h))); }
static inline __half hsqrt(__half h) { return __half(__builtin_sqrtf(__half2float(h))); }
static inline __half hrsqrt(__half h) { return __half(1.0f / __builtin_sqrtf(__half2float(h))); }
static inline __half hrcp(__half h) { return __half(1.0f / __half2float(h)); }
static inline __half2 h2exp(__half2 h) { return __half2(hexp(h.x), hexp(h.y)); }
static inline __half2 h2sqrt(__half2 h) { return __half2(hsqrt(h.x), hsqrt(h.y)); }
static inline __half2 h2rcp(__half2 h) { return __half2(hrcp(h.x), hrcp(h.y)); }

} // namespace tm_sim

using namespace tm_sim;

#endif

/* tm_sim/half_ops.h - operators and intrinsics shared by __half and __nv_bfloat16 (and
 * their pairs): each is computed in float (double for fma) and rounded once to the
 * 16-bit type, which gives the correctly rounded result since float carries more than
 * twice the 16-bit types' precision plus two bits. */
#ifndef TM_SIM_HALF_OPS_H
#define TM_SIM_HALF_OPS_H

#include "tm_sim/convert.h"

/* H: the scalar type, H2: the pair, F2H: float -> H bits, H2F: H bits -> float. */
#define TM_SIM_HALF_OPS(H, H2, F2H, H2F)                                                          \
    static inline float tm_sim_tof(H a) { return H2F(a.__x); }                                    \
    static inline H tm_sim_fromf_##H(float f) { H r; r.__x = F2H(f); return r; }                  \
    static inline H operator+(const H &a, const H &b) { return tm_sim_fromf_##H(tm_sim_tof(a) + tm_sim_tof(b)); } \
    static inline H operator-(const H &a, const H &b) { return tm_sim_fromf_##H(tm_sim_tof(a) - tm_sim_tof(b)); } \
    static inline H operator*(const H &a, const H &b) { return tm_sim_fromf_##H(tm_sim_tof(a) * tm_sim_tof(b)); } \
    static inline H operator/(const H &a, const H &b) { return tm_sim_fromf_##H(tm_sim_tof(a) / tm_sim_tof(b)); } \
    static inline H &operator+=(H &a, const H &b) { return a = a + b; }                           \
    static inline H &operator-=(H &a, const H &b) { return a = a - b; }                           \
    static inline H &operator*=(H &a, const H &b) { return a = a * b; }                           \
    static inline H &operator/=(H &a, const H &b) { return a = a / b; }                           \
    static inline H operator-(const H &a) { H r = a; r.__x ^= 0x8000u; return r; }                \
    static inline H operator+(const H &a) { return a; }                                           \
    static inline bool operator==(const H &a, const H &b) { return tm_sim_tof(a) == tm_sim_tof(b); } \
    static inline bool operator!=(const H &a, const H &b) { return tm_sim_tof(a) != tm_sim_tof(b); } \
    static inline bool operator<(const H &a, const H &b) { return tm_sim_tof(a) < tm_sim_tof(b); } \
    static inline bool operator>(const H &a, const H &b) { return tm_sim_tof(a) > tm_sim_tof(b); } \
    static inline bool operator<=(const H &a, const H &b) { return tm_sim_tof(a) <= tm_sim_tof(b); } \
    static inline bool operator>=(const H &a, const H &b) { return tm_sim_tof(a) >= tm_sim_tof(b); } \
    static inline H __hadd(H a, H b) { return a + b; }                                            \
    static inline H __hsub(H a, H b) { return a - b; }                                            \
    static inline H __hmul(H a, H b) { return a * b; }                                            \
    static inline H __hdiv(H a, H b) { return a / b; }                                            \
    static inline H __hneg(H a) { return -a; }                                                    \
    static inline H __habs(H a) { H r = a; r.__x &= 0x7fffu; return r; }                          \
    static inline H __hfma(H a, H b, H c) {                                                       \
        return tm_sim_fromf_##H(tm_sim_round_f64_for_16((double)tm_sim_tof(a) * tm_sim_tof(b) + tm_sim_tof(c))); \
    }                                                                                             \
    static inline bool __hisnan(H a) { return tm_sim_tof(a) != tm_sim_tof(a); }                    \
    static inline int __hisinf(H a) {                                                             \
        float f = tm_sim_tof(a);                                                                  \
        return f == __builtin_inff() ? 1 : f == -__builtin_inff() ? -1 : 0;                       \
    }                                                                                             \
    static inline H __hmax(H a, H b) {                                                            \
        if (__hisnan(a)) return __hisnan(b) ? tm_sim_fromf_##H(__builtin_nanf("")) : b;            \
        if (__hisnan(b)) return a;                                                                \
        return tm_sim_tof(a) >= tm_sim_tof(b) ? a : b;                                            \
    }                                                                                             \
    static inline H __hmin(H a, H b) {                                                            \
        if (__hisnan(a)) return __hisnan(b) ? tm_sim_fromf_##H(__builtin_nanf("")) : b;            \
        if (__hisnan(b)) return a;                                                                \
        return tm_sim_tof(a) <= tm_sim_tof(b) ? a : b;                                            \
    }                                                                                             \
    static inline H __hmax_nan(H a, H b) { return __hisnan(a) ? a : __hisnan(b) ? b : __hmax(a, b); } \
    static inline H __hmin_nan(H a, H b) { return __hisnan(a) ? a : __hisnan(b) ? b : __hmin(a, b); } \
    static inline bool __heq(H a, H b) { return a == b; }                                         \
    static inline bool __hne(H a, H b) { return a != b; }                                         \
    static inline bool __hlt(H a, H b) { return a < b; }                                          \
    static inline bool __hle(H a, H b) { return a <= b; }                                         \
    static inline bool __hgt(H a, H b) { return a > b; }                                          \
    static inline bool __hge(H a, H b) { return a >= b; }                                         \
    static inline H2 operator+(const H2 &a, const H2 &b) { return H2(a.x + b.x, a.y + b.y); }     \
    static inline H2 operator-(const H2 &a, const H2 &b) { return H2(a.x - b.x, a.y - b.y); }     \
    static inline H2 operator*(const H2 &a, const H2 &b) { return H2(a.x * b.x, a.y * b.y); }     \
    static inline H2 operator/(const H2 &a, const H2 &b) { return H2(a.x / b.x, a.y / b.y); }     \
    static inline H2 &operator+=(H2 &a, const H2 &b) { return a = a + b; }                        \
    static inline H2 &operator-=(H2 &a, const H2 &b) { return a = a - b; }                        \
    static inline H2 &operator*=(H2 &a, const H2 &b) { return a = a * b; }                        \
    static inline H2 &operator/=(H2 &a, const H2 &b) { return a = a / b; }                        \
    static inline H2 operator-(const H2 &a) { return H2(-a.x, -a.y); }                            \
    static inline bool operator==(const H2 &a, const H2 &b) { return a.x == b.x && a.y == b.y; }  \
    static inline bool operator!=(const H2 &a, const H2 &b) { return a.x != b.x && a.y != b.y; }  \
    static inline H2 __hadd2(H2 a, H2 b) { return a + b; }                                        \
    static inline H2 __hsub2(H2 a, H2 b) { return a - b; }                                        \
    static inline H2 __hmul2(H2 a, H2 b) { return a * b; }                                        \
    static inline H2 __h2div(H2 a, H2 b) { return a / b; }                                        \
    static inline H2 __hneg2(H2 a) { return -a; }                                                 \
    static inline H2 __habs2(H2 a) { return H2(__habs(a.x), __habs(a.y)); }                       \
    static inline H2 __hfma2(H2 a, H2 b, H2 c) { return H2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)); } \
    static inline H2 __hmax2(H2 a, H2 b) { return H2(__hmax(a.x, b.x), __hmax(a.y, b.y)); }       \
    static inline H2 __hmin2(H2 a, H2 b) { return H2(__hmin(a.x, b.x), __hmin(a.y, b.y)); }       \
    static inline bool __hbeq2(H2 a, H2 b) { return a.x == b.x && a.y == b.y; }                   \
    static inline float __low2float(H2 a) { return tm_sim_tof(a.x); }                             \
    static inline float __high2float(H2 a) { return tm_sim_tof(a.y); }                            \
    static inline H2 __lowhigh2highlow(H2 a) { return H2(a.y, a.x); }                             \
    static inline float2 tm_sim_tof2(H2 a) { return float2{tm_sim_tof(a.x), tm_sim_tof(a.y)}; }

namespace tm_sim {
/* A double that float rounding then 16-bit rounding take to the same 16-bit value as
 * one rounding of d would (round to odd in float; see f64_to_f16_rn). */
static inline float tm_sim_round_f64_for_16(double d) {
    float f = (float)d;
    if ((double)f == d || d != d) return f;
    uint32_t u = f32_bits(f);
    double af = f < 0 ? -(double)f : (double)f, ad = d < 0 ? -d : d;
    if (af > ad) u -= 1;
    return bits_f32(u | 1);
}
} // namespace tm_sim

#endif

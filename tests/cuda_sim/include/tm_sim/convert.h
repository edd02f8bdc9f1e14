/* tm_sim/convert.h - IEEE binary16 and bfloat16 conversions, round to nearest even as the
 * GPU's cvt.rn does, for the harness's cuda_fp16.h and cuda_bf16.h. */
#ifndef TM_SIM_CONVERT_H
#define TM_SIM_CONVERT_H

#include <cstdint>
#include <cstring>

namespace tm_sim {

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

/* float -> binary16, round to nearest even; NaN stays NaN (quiet), overflow gives inf. */
static inline uint16_t f32_to_f16_rn(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to 65520 or more */
    if (a < 0x38800000u) {                                    /* below 2^-14: subnormal or zero */
        if (a < 0x33000000u) return (uint16_t)sign;           /* below 2^-25: rounds to zero */
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* value = m * 2^(e-150), unit 2^-24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t h = (a >> 13) - ((127 - 15) << 10), rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

/* float -> binary16 toward zero (__float2half_rz). */
static inline uint16_t f32_to_f16_rz(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x47800000u) return (uint16_t)(sign | (a == 0x7f800000u ? 0x7c00u : 0x7bffu));
    if (a < 0x38800000u) {
        if (a < 0x33800000u) return (uint16_t)sign;
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        return (uint16_t)(sign | (m >> (126 - e)));
    }
    return (uint16_t)(sign | ((a >> 13) - ((127 - 15) << 10)));
}

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        if (m == 0) return bits_f32(sign);
        float v = (float)m * (1.0f / 16777216.0f); /* m * 2^-24, exact */
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

/* double -> binary16 in one rounding (__double2half): via float when that is exact
 * enough, which it is unless the double has more than float's bits in the half range. */
static inline uint16_t f64_to_f16_rn(double d) {
    float f = (float)d;
    if ((double)f == d || d != d) return f32_to_f16_rn(f);
    /* Round to odd instead: t = d truncated to float, with its last bit set. Every half
     * and every tie between halves is a float whose last 13 bits are zero, so none lies
     * between t|1 and d, and both round to the same half. */
    uint32_t u = f32_bits(f);
    double af = f < 0 ? -(double)f : (double)f, ad = d < 0 ? -d : d;
    if (af > ad) u -= 1; /* f was rounded away from zero: step back to the truncation */
    u |= 1;
    return f32_to_f16_rn(bits_f32(u));
}

static inline uint16_t f32_to_bf16_rn(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static inline uint16_t f32_to_bf16_rz(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)(x >> 16);
}

static inline float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

} // namespace tm_sim

#endif

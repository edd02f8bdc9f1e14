// test_dtype.cc - dtype table, F16/BF16 conversions, hand-built blocks of every layout,
// llama.cpp rounding rules of the reference quantizers and round-trip error bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/common.h"
#include "kernels/dtype.h"
#include "kernels/quant_k.h"

namespace {

uint16_t h(float f) { return tm_f32_to_f16(f); }

float deq1(tm_dtype t, uint16_t bits) {
    float out;
    tm_dequantize_row(t, &bits, &out, 1);
    return out;
}

uint16_t q1(tm_dtype t, float v) {
    uint16_t out;
    EXPECT_EQ(tm_quantize_row(t, &v, &out, 1), 0);
    return out;
}

TEST(Dtype, Table) {
    EXPECT_STREQ(tm_dtype_name(TM_DTYPE_Q4_1), "q4_1");
    EXPECT_STREQ(tm_dtype_name(TM_DTYPE_BF16), "bf16");
    EXPECT_STREQ(tm_dtype_name((tm_dtype)7), "q5_1");
    EXPECT_STREQ(tm_dtype_name((tm_dtype)5), "unknown"); // Q4_3: removed from ggml
    EXPECT_EQ(tm_dtype_from_name("Q4_K"), TM_DTYPE_Q4_K);
    EXPECT_EQ(tm_dtype_from_name("f16"), TM_DTYPE_F16);
    EXPECT_EQ(tm_dtype_from_name("q4"), -1);
    EXPECT_EQ(tm_dtype_from_name("q4_11"), -1);
    EXPECT_TRUE(tm_dtype_valid(14));
    EXPECT_TRUE(tm_dtype_valid(13));
    EXPECT_FALSE(tm_dtype_valid(4));
    EXPECT_FALSE(tm_dtype_valid(16));
    EXPECT_EQ(tm_dtype_from_name("Q5_K"), TM_DTYPE_Q5_K);
    struct { tm_dtype t; int64_t bs, bb; } want[] = {
        {TM_DTYPE_F32, 1, 4}, {TM_DTYPE_F16, 1, 2}, {TM_DTYPE_BF16, 1, 2},
        {TM_DTYPE_Q4_0, 32, 18}, {TM_DTYPE_Q4_1, 32, 20}, {TM_DTYPE_Q8_0, 32, 34},
        {TM_DTYPE_Q8_1, 32, 36}, {TM_DTYPE_Q4_K, 256, 144}, {TM_DTYPE_Q6_K, 256, 210},
        {TM_DTYPE_Q8_K, 256, 292}, {TM_DTYPE_Q5_0, 32, 22}, {TM_DTYPE_Q5_1, 32, 24},
        {TM_DTYPE_Q2_K, 256, 84}, {TM_DTYPE_Q3_K, 256, 110}, {TM_DTYPE_Q5_K, 256, 176},
    };
    for (auto &w : want) {
        EXPECT_EQ(tm_dtype_block_size(w.t), w.bs) << tm_dtype_name(w.t);
        EXPECT_EQ(tm_dtype_block_bytes(w.t), w.bb) << tm_dtype_name(w.t);
        EXPECT_EQ(tm_dtype_row_bytes(w.t, 4 * w.bs * 2), 8 * w.bb);
    }
    EXPECT_EQ(tm_dtype_row_bytes(TM_DTYPE_Q4_0, 48), -1);
    EXPECT_EQ(tm_dtype_row_bytes(TM_DTYPE_Q6_K, 128), -1);
}

TEST(Dtype, F16Exact) {
    EXPECT_EQ(deq1(TM_DTYPE_F16, 0x3c00), 1.0f);
    EXPECT_EQ(deq1(TM_DTYPE_F16, 0xc000), -2.0f);
    EXPECT_EQ(deq1(TM_DTYPE_F16, 0x7bff), 65504.0f);
    EXPECT_EQ(deq1(TM_DTYPE_F16, 0x0001), std::ldexp(1.0f, -24)); // smallest subnormal
    EXPECT_EQ(deq1(TM_DTYPE_F16, 0x03ff), std::ldexp(1023.0f, -24)); // largest subnormal
    EXPECT_EQ(deq1(TM_DTYPE_F16, 0x0400), std::ldexp(1.0f, -14));    // smallest normal
    EXPECT_EQ(deq1(TM_DTYPE_F16, 0x8001), -std::ldexp(1.0f, -24));
    EXPECT_TRUE(std::signbit(deq1(TM_DTYPE_F16, 0x8000)));
    EXPECT_EQ(deq1(TM_DTYPE_F16, 0x8000), 0.0f);
    EXPECT_EQ(deq1(TM_DTYPE_F16, 0x7c00), INFINITY);
    EXPECT_EQ(deq1(TM_DTYPE_F16, 0xfc00), -INFINITY);
    EXPECT_TRUE(std::isnan(deq1(TM_DTYPE_F16, 0x7e00)));
    EXPECT_TRUE(std::isnan(deq1(TM_DTYPE_F16, 0x7c01)));

    EXPECT_EQ(q1(TM_DTYPE_F16, 1.0f), 0x3c00);
    EXPECT_EQ(q1(TM_DTYPE_F16, 65504.0f), 0x7bff);
    EXPECT_EQ(q1(TM_DTYPE_F16, 65519.0f), 0x7bff); // below the halfway point to 65536
    EXPECT_EQ(q1(TM_DTYPE_F16, 65520.0f), 0x7c00); // halfway rounds (to even) to inf
    EXPECT_EQ(q1(TM_DTYPE_F16, 1e30f), 0x7c00);
    EXPECT_EQ(q1(TM_DTYPE_F16, -INFINITY), 0xfc00);
    EXPECT_EQ(q1(TM_DTYPE_F16, 1.0f + std::ldexp(1.0f, -11)), 0x3c00); // tie -> even
    EXPECT_EQ(q1(TM_DTYPE_F16, 1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02); // tie -> even (up)
    EXPECT_EQ(q1(TM_DTYPE_F16, std::ldexp(1.0f, -24)), 0x0001);
    EXPECT_EQ(q1(TM_DTYPE_F16, std::ldexp(1.0f, -25)), 0x0000);      // tie -> even (0)
    EXPECT_EQ(q1(TM_DTYPE_F16, std::ldexp(1.5f, -25)), 0x0001);
    EXPECT_EQ(q1(TM_DTYPE_F16, std::ldexp(3.0f, -25)), 0x0002);      // 1.5 units -> 2
    EXPECT_EQ(q1(TM_DTYPE_F16, std::ldexp(1023.0f, -24)), 0x03ff);
    EXPECT_EQ(q1(TM_DTYPE_F16, -std::ldexp(1.0f, -14)), 0x8400);
    EXPECT_EQ(q1(TM_DTYPE_F16, 1e-10f), 0x0000);
    const uint16_t n = q1(TM_DTYPE_F16, NAN);
    EXPECT_EQ(n & 0x7c00, 0x7c00);
    EXPECT_NE(n & 0x03ff, 0);
}

TEST(Dtype, Bf16Exact) {
    EXPECT_EQ(deq1(TM_DTYPE_BF16, 0x3f80), 1.0f);
    EXPECT_EQ(deq1(TM_DTYPE_BF16, 0xc040), -3.0f);
    EXPECT_EQ(deq1(TM_DTYPE_BF16, 0x0001), std::ldexp(1.0f, -133)); // subnormal
    EXPECT_EQ(deq1(TM_DTYPE_BF16, 0x7f80), INFINITY);
    EXPECT_TRUE(std::isnan(deq1(TM_DTYPE_BF16, 0x7fc0)));
    EXPECT_EQ(q1(TM_DTYPE_BF16, 1.0f), 0x3f80);
    EXPECT_EQ(q1(TM_DTYPE_BF16, 1.0f + std::ldexp(1.0f, -8)), 0x3f80);     // tie -> even
    EXPECT_EQ(q1(TM_DTYPE_BF16, 1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82); // tie -> even
    EXPECT_EQ(q1(TM_DTYPE_BF16, 1.0f + std::ldexp(1.0f, -7) + std::ldexp(1.0f, -9)), 0x3f81);
    EXPECT_EQ(q1(TM_DTYPE_BF16, -INFINITY), 0xff80);
    EXPECT_EQ(q1(TM_DTYPE_BF16, std::ldexp(1.0f, -133)), 0x0001);
    const uint16_t n = q1(TM_DTYPE_BF16, NAN);
    EXPECT_EQ(n & 0x7f80, 0x7f80);
    EXPECT_NE(n & 0x007f, 0); // stays a NaN, does not round to inf
}

TEST(Dtype, Q4_0Block) {
    tm_block_q4_0 b;
    b.d = h(0.5f);
    for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    float y[32];
    tm_dequantize_row(TM_DTYPE_Q4_0, &b, y, 32);
    for (int j = 0; j < 16; j++) {
        EXPECT_EQ(y[j], (j - 8) * 0.5f) << j;
        EXPECT_EQ(y[j + 16], (7 - j) * 0.5f) << j;
    }
}

TEST(Dtype, Q4_1AndQ8Blocks) {
    tm_block_q4_1 b;
    b.d = h(0.25f);
    b.m = h(-1.0f);
    for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)((j * 7 % 16) | (j << 4));
    float y[32];
    tm_dequantize_row(TM_DTYPE_Q4_1, &b, y, 32);
    for (int j = 0; j < 16; j++) {
        EXPECT_EQ(y[j], (j * 7 % 16) * 0.25f - 1.0f);
        EXPECT_EQ(y[j + 16], j * 0.25f - 1.0f);
    }
    tm_block_q8_0 c;
    c.d = h(2.0f);
    for (int j = 0; j < 32; j++) c.qs[j] = (int8_t)(j * 8 - 128);
    tm_dequantize_row(TM_DTYPE_Q8_0, &c, y, 32);
    for (int j = 0; j < 32; j++) EXPECT_EQ(y[j], 2.0f * (j * 8 - 128));
    tm_block_q8_k k;
    std::memset(&k, 0, sizeof(k));
    k.d = -0.125f;
    for (int j = 0; j < 256; j++) k.qs[j] = (int8_t)(j - 128);
    float z[256];
    tm_dequantize_row(TM_DTYPE_Q8_K, &k, z, 256);
    for (int j = 0; j < 256; j++) EXPECT_EQ(z[j], -0.125f * (j - 128));
}

// Q4_K: packs eight 6-bit (scale, min) pairs the way llama.cpp does, independently of
// the unpacking rule in dtype.c, so a wrong bit in either shows up.
TEST(Dtype, Q4_KBlock) {
    const int sc[8] = {1, 63, 17, 32, 45, 2, 60, 33};
    const int mn[8] = {5, 0, 63, 48, 16, 31, 1, 62};
    tm_block_q4_k b;
    b.d = h(0.5f);
    b.dmin = h(0.25f);
    for (int j = 0; j < 4; j++) {
        b.scales[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        b.scales[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
        b.scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    std::mt19937 rng(7);
    int q[256];
    for (int i = 0; i < 256; i++) q[i] = (int)(rng() % 16);
    // value e: chunk c = e / 64; first 32 are low nibbles of qs[32c..], next 32 high.
    std::memset(b.qs, 0, sizeof(b.qs));
    for (int e = 0; e < 256; e++) {
        const int c = e / 64, w = e % 64;
        if (w < 32) b.qs[32 * c + w] |= (uint8_t)q[e];
        else b.qs[32 * c + w - 32] |= (uint8_t)(q[e] << 4);
    }
    float y[256];
    tm_dequantize_row(TM_DTYPE_Q4_K, &b, y, 256);
    for (int e = 0; e < 256; e++) {
        const int sub = e / 32; // sub-blocks of 32 in value order
        EXPECT_EQ(y[e], 0.5f * sc[sub] * q[e] - 0.25f * mn[sub]) << "value " << e;
    }
}

// Q6_K: 6-bit values packed by the layout in KERNELS.md; d is the last field.
TEST(Dtype, Q6_KBlockDLast) {
    std::mt19937 rng(11);
    int q[256];
    for (int i = 0; i < 256; i++) q[i] = (int)(rng() % 64);
    q[0] = 0, q[1] = 63;
    uint8_t raw[210];
    std::memset(raw, 0, sizeof(raw));
    uint8_t *ql = raw, *qh = raw + 128;
    int8_t *scales = (int8_t *)(raw + 192);
    for (int half = 0; half < 2; half++) {
        const int *v = q + 128 * half;
        uint8_t *l8 = ql + 64 * half, *h8 = qh + 32 * half;
        for (int l = 0; l < 32; l++) {
            l8[l] = (uint8_t)((v[l] & 15) | ((v[l + 64] & 15) << 4));
            l8[l + 32] = (uint8_t)((v[l + 32] & 15) | ((v[l + 96] & 15) << 4));
            h8[l] = (uint8_t)((v[l] >> 4) | ((v[l + 32] >> 4) << 2) | ((v[l + 64] >> 4) << 4) |
                              ((v[l + 96] >> 4) << 6));
        }
    }
    const int8_t sc[16] = {1, -2, 3, -4, 127, -128, 7, 8, 9, 10, -11, 12, 13, 14, 15, -16};
    std::memcpy(scales, sc, 16);
    const uint16_t d = h(0.125f);
    std::memcpy(raw + 208, &d, 2);
    float y[256];
    tm_dequantize_row(TM_DTYPE_Q6_K, raw, y, 256);
    for (int e = 0; e < 256; e++)
        EXPECT_EQ(y[e], 0.125f * sc[e / 16] * (q[e] - 32)) << "value " << e;
}

// Q5_0 / Q5_1: qs as Q4 (value j low nibble of byte j, j+16 high), the fifth bit of value
// j is bit j of qh read as a little-endian u32. Packed here byte by byte.
TEST(Dtype, Q5Blocks) {
    std::mt19937 rng(5);
    int q[32];
    for (int j = 0; j < 32; j++) q[j] = (int)(rng() % 32);
    q[0] = 31, q[1] = 0, q[16] = 16, q[31] = 31;
    uint8_t qs[16], qh[4] = {0, 0, 0, 0};
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 15) | ((q[j + 16] & 15) << 4));
    for (int j = 0; j < 32; j++) qh[j / 8] |= (uint8_t)(((q[j] >> 4) & 1) << (j % 8));
    tm_block_q5_0 a;
    a.d = h(0.5f);
    std::memcpy(a.qh, qh, 4);
    std::memcpy(a.qs, qs, 16);
    tm_block_q5_1 b;
    b.d = h(0.25f);
    b.m = h(-1.5f);
    std::memcpy(b.qh, qh, 4);
    std::memcpy(b.qs, qs, 16);
    float ya[32], yb[32];
    tm_dequantize_row(TM_DTYPE_Q5_0, &a, ya, 32);
    tm_dequantize_row(TM_DTYPE_Q5_1, &b, yb, 32);
    for (int j = 0; j < 32; j++) {
        EXPECT_EQ(ya[j], 0.5f * (q[j] - 16)) << j;
        EXPECT_EQ(yb[j], 0.25f * q[j] - 1.5f) << j;
    }
}

// Q2_K: scales[g] = scale (low nibble) | min << 4 per 16 values; value 128n + 32j + l is
// bits 2j..2j+1 of qs[32n + l]; d and dmin come last.
TEST(Dtype, Q2_KBlock) {
    std::mt19937 rng(21);
    tm_block_q2_k b;
    int q[256];
    for (int g = 0; g < 16; g++) b.scales[g] = (uint8_t)rng();
    std::memset(b.qs, 0, sizeof b.qs);
    for (int e = 0; e < 256; e++) {
        q[e] = (int)(rng() % 4);
        const int n = e / 128, j = (e % 128) / 32, l = e % 32;
        b.qs[32 * n + l] |= (uint8_t)(q[e] << (2 * j));
    }
    b.d = h(0.5f);
    b.dmin = h(0.25f);
    float y[256];
    tm_dequantize_row(TM_DTYPE_Q2_K, &b, y, 256);
    for (int e = 0; e < 256; e++) {
        const int sc = b.scales[e / 16] & 15, m = b.scales[e / 16] >> 4;
        EXPECT_EQ(y[e], 0.5f * sc * q[e] - 0.25f * m) << e;
    }
}

// Q3_K: hmask, qs, 12 bytes of 6-bit scales (stored + 32), d. The third bit of value
// 128n + 32j + l is bit 4n + j of hmask[l]; clear means -4. Scale k (0..15): low 4 bits
// in the low (k < 8) or high nibble of byte k % 8, high 2 bits at bits 2(k / 4) of byte
// 8 + k % 4.
TEST(Dtype, Q3_KBlock) {
    std::mt19937 rng(31);
    tm_block_q3_k b;
    std::memset(&b, 0, sizeof b);
    int v[256], sc[16];
    for (int k = 0; k < 16; k++) {
        sc[k] = k == 3 ? 0 : k == 12 ? 63 : (int)(rng() % 64);
        b.scales[k % 8] |= (uint8_t)((sc[k] & 15) << (k < 8 ? 0 : 4));
        b.scales[8 + k % 4] |= (uint8_t)((sc[k] >> 4) << (2 * (k / 4)));
    }
    for (int e = 0; e < 256; e++) {
        const int lo = (int)(rng() % 4), hi = (int)(rng() % 2);
        const int n = e / 128, j = (e % 128) / 32, l = e % 32;
        b.qs[32 * n + l] |= (uint8_t)(lo << (2 * j));
        b.hmask[l] |= (uint8_t)(hi << (4 * n + j));
        v[e] = lo - (hi ? 0 : 4);
    }
    b.d = h(-0.125f);
    float y[256];
    tm_dequantize_row(TM_DTYPE_Q3_K, &b, y, 256);
    for (int e = 0; e < 256; e++) EXPECT_EQ(y[e], -0.125f * (sc[e / 16] - 32) * v[e]) << e;
}

// Q5_K: Q4_K's scales and nibbles, plus qh: bit j of qh[l] is the fifth bit of value 32j + l.
TEST(Dtype, Q5_KBlock) {
    const int sc[8] = {63, 1, 17, 32, 0, 2, 60, 33};
    const int mn[8] = {5, 63, 0, 48, 16, 31, 1, 62};
    tm_block_q5_k b;
    b.d = h(0.5f);
    b.dmin = h(-0.25f); // a negative dmin is representable and must be honoured
    for (int j = 0; j < 4; j++) {
        b.scales[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        b.scales[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
        b.scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    std::mt19937 rng(8);
    int q[256];
    std::memset(b.qs, 0, sizeof b.qs);
    std::memset(b.qh, 0, sizeof b.qh);
    for (int e = 0; e < 256; e++) {
        q[e] = (int)(rng() % 32);
        const int c = e / 64, w = e % 64;
        if (w < 32) b.qs[32 * c + w] |= (uint8_t)(q[e] & 15);
        else b.qs[32 * c + w - 32] |= (uint8_t)((q[e] & 15) << 4);
        b.qh[e % 32] |= (uint8_t)((q[e] >> 4) << (e / 32));
    }
    float y[256];
    tm_dequantize_row(TM_DTYPE_Q5_K, &b, y, 256);
    for (int e = 0; e < 256; e++) EXPECT_EQ(y[e], 0.5f * sc[e / 32] * q[e] - -0.25f * mn[e / 32]) << e;
}

const tm_dtype kKquants[] = {TM_DTYPE_Q2_K, TM_DTYPE_Q3_K, TM_DTYPE_Q4_K, TM_DTYPE_Q5_K, TM_DTYPE_Q6_K};

// Integer ranges of each K-quant's tm_kblock (dtype.h): values, scales, mins, and the
// sub-block length (Q4_K / Q5_K repeat a scale over 32 values).
struct KRange { int qlo, qhi, slo, shi, mhi, sub; };
KRange krange(tm_dtype t) {
    switch (t) {
    case TM_DTYPE_Q2_K: return {0, 3, 0, 15, 15, 16};
    case TM_DTYPE_Q3_K: return {-4, 3, -32, 31, 0, 16};
    case TM_DTYPE_Q4_K: return {0, 15, 0, 63, 63, 32};
    case TM_DTYPE_Q5_K: return {0, 31, 0, 63, 63, 32};
    default: return {-32, 31, -128, 127, 0, 16};
    }
}

tm_kblock random_kblock(tm_dtype t, std::mt19937 &rng) {
    const KRange r = krange(t);
    tm_kblock k;
    for (int i = 0; i < 256; i++) k.q[i] = (int8_t)(r.qlo + (int)(rng() % (r.qhi - r.qlo + 1)));
    for (int g = 0; g < 16; g += r.sub / 16) {
        const int s = r.slo + (int)(rng() % (r.shi - r.slo + 1)), m = r.mhi ? (int)(rng() % (r.mhi + 1)) : 0;
        for (int u = 0; u < r.sub / 16; u++) k.sc[g + u] = (int16_t)s, k.m[g + u] = (int16_t)m;
    }
    k.q[0] = (int8_t)r.qlo, k.q[255] = (int8_t)r.qhi; // both ends of the range
    for (int u = 0; u < r.sub / 16; u++) k.sc[u] = (int16_t)r.slo;
    k.d = tm_f16_to_f32(h(0.01f + 0.001f * (float)(rng() % 100)));
    k.dmin = r.mhi ? tm_f16_to_f32(h(0.002f * (float)(rng() % 10))) : 0.0f;
    return k;
}

// tm_kblock_pack is the inverse of tm_kblock_unpack for every K-quant and any integers in
// range (the hand-built blocks above pin the layouts themselves).
TEST(Dtype, KblockPackUnpackRoundTrip) {
    std::mt19937 rng(77);
    for (tm_dtype t : kKquants)
        for (int rep = 0; rep < 50; rep++) {
            const tm_kblock k = random_kblock(t, rng);
            std::vector<uint8_t> raw(tm_dtype_block_bytes(t), 0xa5);
            tm_kblock_pack(t, &k, raw.data());
            tm_kblock back;
            tm_kblock_unpack(t, raw.data(), &back);
            ASSERT_EQ(std::memcmp(back.q, k.q, sizeof k.q), 0) << tm_dtype_name(t);
            ASSERT_EQ(std::memcmp(back.sc, k.sc, sizeof k.sc), 0) << tm_dtype_name(t);
            ASSERT_EQ(std::memcmp(back.m, k.m, sizeof k.m), 0) << tm_dtype_name(t);
            ASSERT_EQ(back.d, k.d) << tm_dtype_name(t);
            ASSERT_EQ(back.dmin, k.dmin) << tm_dtype_name(t);
        }
}

// Squared error of quantizing x (n values) to t and back.
double sq_error(tm_dtype t, const std::vector<float> &x) {
    std::vector<uint8_t> buf(tm_dtype_row_bytes(t, (int64_t)x.size()));
    EXPECT_EQ(tm_quantize_row(t, x.data(), buf.data(), (int64_t)x.size()), 0);
    std::vector<float> y(x.size());
    tm_dequantize_row(t, buf.data(), y.data(), (int64_t)x.size());
    double e = 0;
    for (size_t i = 0; i < x.size(); i++) e += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
    return e;
}

// Values a K-quant can represent exactly come back (almost) exactly: the search finds
// the grid they lie on. A quantizer that only looked at the range would miss blocks
// whose sub-blocks do not reach both ends of their range.
TEST(Dtype, KquantFindsRepresentableGrid) {
    std::mt19937 rng(99);
    for (tm_dtype t : kKquants) {
        double err = 0, energy = 0;
        for (int rep = 0; rep < 20; rep++) {
            const tm_kblock k = random_kblock(t, rng);
            std::vector<uint8_t> raw(tm_dtype_block_bytes(t));
            tm_kblock_pack(t, &k, raw.data());
            std::vector<float> x(256);
            tm_dequantize_row(t, raw.data(), x.data(), 256);
            err += sq_error(t, x);
            for (float v : x) energy += (double)v * v;
        }
        EXPECT_LT(std::sqrt(err / energy), 0.02) << tm_dtype_name(t);
    }
}

// The exact rounding rules of llama.cpp's reference quantizers.
TEST(Dtype, ReferenceRounding) {
    float x[32];
    // Q8_0: d = amax / 127, roundf (half away from zero).
    for (int j = 0; j < 32; j++) x[j] = 0.0f;
    x[0] = 127.0f, x[1] = 0.5f, x[2] = -0.5f, x[3] = 2.5f, x[4] = -126.5f, x[5] = 3.49f;
    tm_block_q8_0 a;
    ASSERT_EQ(tm_quantize_row(TM_DTYPE_Q8_0, x, &a, 32), 0);
    EXPECT_EQ(tm_f16_to_f32(a.d), 1.0f);
    EXPECT_EQ(a.qs[0], 127);
    EXPECT_EQ(a.qs[1], 1);
    EXPECT_EQ(a.qs[2], -1);
    EXPECT_EQ(a.qs[3], 3);
    EXPECT_EQ(a.qs[4], -127);
    EXPECT_EQ(a.qs[5], 3);
    // Q8_1: same quants, s = d * sum(q).
    tm_block_q8_1 a1;
    ASSERT_EQ(tm_quantize_row(TM_DTYPE_Q8_1, x, &a1, 32), 0);
    EXPECT_EQ(std::memcmp(a1.qs, a.qs, 32), 0);
    EXPECT_EQ(tm_f16_to_f32(a1.s), 1.0f * (127 + 1 - 1 + 3 - 127 + 3));

    // Q4_0: d = max / -8 with the signed largest-magnitude value.
    for (int j = 0; j < 32; j++) x[j] = 0.0f;
    x[0] = 8.0f, x[1] = -7.0f, x[2] = -8.0f, x[17] = 1.0f, x[18] = 0.5f;
    tm_block_q4_0 b;
    ASSERT_EQ(tm_quantize_row(TM_DTYPE_Q4_0, x, &b, 32), 0);
    EXPECT_EQ(tm_f16_to_f32(b.d), -1.0f);
    EXPECT_EQ(b.qs[0] & 15, 0);  // 8 / -1 + 8.5 = 0.5 -> 0
    EXPECT_EQ(b.qs[1] & 15, 15); // 15.5 -> 15
    EXPECT_EQ(b.qs[2] & 15, 15); // 16.5 clamps to 15
    EXPECT_EQ(b.qs[1] >> 4, 7);  // x[17] = 1: -1 + 8.5 = 7.5 -> 7 (truncation)
    EXPECT_EQ(b.qs[2] >> 4, 8);  // x[18] = 0.5: 8.0 -> 8
    EXPECT_EQ(b.qs[5] & 15, 8);  // zero -> 8

    // Q4_1: d = (max - min) / 15, m = min, +0.5 then truncate.
    for (int j = 0; j < 32; j++) x[j] = 1.0f + j * 0.5f; // min 1, max 16.5: d = 1.03333
    tm_block_q4_1 c;
    ASSERT_EQ(tm_quantize_row(TM_DTYPE_Q4_1, x, &c, 32), 0);
    EXPECT_EQ(tm_f16_to_f32(c.m), 1.0f);
    EXPECT_EQ(c.d, h(15.5f / 15.0f));
    const float id = 1.0f / (15.5f / 15.0f);
    for (int j = 0; j < 16; j++) {
        EXPECT_EQ(c.qs[j] & 15, std::min(15, (int)((x[j] - 1.0f) * id + 0.5f))) << j;
        EXPECT_EQ(c.qs[j] >> 4, std::min(15, (int)((x[j + 16] - 1.0f) * id + 0.5f))) << j;
    }
    EXPECT_EQ(c.qs[15] >> 4, 15);
    EXPECT_EQ(c.qs[0] & 15, 0);
}

TEST(Dtype, Q8_KSignedScale) {
    std::vector<float> x(256, 0.0f);
    for (int j = 0; j < 256; j++) x[j] = (float)(j % 50) - 20.0f; // -20..29
    x[3] = -127.0f;                                               // largest magnitude: negative
    tm_block_q8_k k;
    ASSERT_EQ(tm_quantize_row(TM_DTYPE_Q8_K, x.data(), &k, 256), 0);
    EXPECT_EQ(k.d, 1.0f); // -127 / -127
    EXPECT_EQ(k.qs[3], -127);
    for (int j = 0; j < 256; j++) EXPECT_EQ(k.qs[j], (int)x[j]) << j;
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int j = 0; j < 16; j++) s += k.qs[16 * g + j];
        EXPECT_EQ(k.bsums[g], s);
    }
    x[3] = 127.0f; // largest magnitude positive: d negative, quants flip sign
    ASSERT_EQ(tm_quantize_row(TM_DTYPE_Q8_K, x.data(), &k, 256), 0);
    EXPECT_EQ(k.d, -1.0f);
    EXPECT_EQ(k.qs[3], -127);
    EXPECT_EQ(k.qs[0], 20);
    std::vector<float> z(256, 0.0f);
    ASSERT_EQ(tm_quantize_row(TM_DTYPE_Q8_K, z.data(), &k, 256), 0);
    EXPECT_EQ(k.d, 0.0f);
    for (int g = 0; g < 16; g++) EXPECT_EQ(k.bsums[g], 0);
}

TEST(Dtype, QuantizeRejects) {
    float x[256] = {0};
    uint8_t buf[512];
    EXPECT_EQ(tm_quantize_row((tm_dtype)4, x, buf, 256), TM_EUNSUPPORTED);
    EXPECT_EQ(tm_quantize_row((tm_dtype)99, x, buf, 256), TM_EUNSUPPORTED);
    EXPECT_EQ(tm_quantize_row(TM_DTYPE_Q8_0, x, buf, 48), TM_EINVAL);
    EXPECT_EQ(tm_quantize_row(TM_DTYPE_Q4_K, x, buf, 128), TM_EINVAL);
    EXPECT_EQ(tm_quantize_row(TM_DTYPE_Q5_0, x, buf, 48), TM_EINVAL);
}

// Round trip on random rows (mixed scales, an all-zero block, a constant block) with the
// error bound each format guarantees, including the f16 rounding of its scales.
TEST(Dtype, RoundTripBounds) {
    const int n = 1024;
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(n), y(n);
    for (int i = 0; i < n; i++) x[i] = nd(rng) * (1.0f + (i / 256) * 10.0f);
    for (int i = 256; i < 288; i++) x[i] = 0.0f;  // zero block (and Q8_K sub-range)
    for (int i = 320; i < 352; i++) x[i] = 3.25f; // constant block
    std::vector<uint8_t> buf(n * 4);
    const float u = std::ldexp(1.0f, -11); // f16 relative rounding of scales
    const tm_dtype types[] = {TM_DTYPE_F32,  TM_DTYPE_F16,  TM_DTYPE_BF16, TM_DTYPE_Q8_0, TM_DTYPE_Q8_1,
                              TM_DTYPE_Q4_0, TM_DTYPE_Q4_1, TM_DTYPE_Q8_K, TM_DTYPE_Q5_0, TM_DTYPE_Q5_1};
    for (tm_dtype t : types) {
        ASSERT_EQ(tm_quantize_row(t, x.data(), buf.data(), n), 0) << tm_dtype_name(t);
        std::fill(y.begin(), y.end(), NAN);
        tm_dequantize_row(t, buf.data(), y.data(), n);
        const int bs = t == TM_DTYPE_Q8_K ? 256 : 32;
        for (int b0 = 0; b0 < n; b0 += bs) {
            float amax = 0, mx = -INFINITY, mn = INFINITY;
            for (int i = b0; i < b0 + bs; i++)
                amax = std::max(amax, std::fabs(x[i])), mx = std::max(mx, x[i]), mn = std::min(mn, x[i]);
            for (int i = b0; i < b0 + bs; i++) {
                float bound;
                switch (t) {
                case TM_DTYPE_F32: bound = 0; break;
                case TM_DTYPE_F16: bound = std::fabs(x[i]) * u + 1e-7f; break;
                case TM_DTYPE_BF16: bound = std::fabs(x[i]) * std::ldexp(1.0f, -8); break;
                case TM_DTYPE_Q8_0:
                case TM_DTYPE_Q8_1: bound = amax / 254.0f + amax * u * 1.01f; break;
                case TM_DTYPE_Q8_K: bound = amax / 254.0f * 1.0001f; break;
                case TM_DTYPE_Q4_0: bound = amax / 16.0f + amax * u; break; // half a step
                case TM_DTYPE_Q4_1: bound = (mx - mn) / 30.0f + ((mx - mn) + std::fabs(mn)) * u * 1.01f + 1e-6f; break;
                case TM_DTYPE_Q5_0: bound = amax / 32.0f + amax * u; break;
                case TM_DTYPE_Q5_1: bound = (mx - mn) / 62.0f + ((mx - mn) + std::fabs(mn)) * u * 1.01f + 1e-6f; break;
                default: bound = 0;
                }
                // Q4_0's and Q5_0's one clamped end (-max maps to 16 -> 15, 32 -> 31) is off by a full step.
                if (t == TM_DTYPE_Q4_0 && std::fabs(x[i]) > amax * 15.0f / 16.0f) bound = amax / 8.0f * (1 + u);
                if (t == TM_DTYPE_Q5_0 && std::fabs(x[i]) > amax * 31.0f / 32.0f) bound = amax / 16.0f * (1 + u);
                EXPECT_LE(std::fabs(y[i] - x[i]), bound) << tm_dtype_name(t) << " i=" << i;
            }
        }
    }
}

} // namespace

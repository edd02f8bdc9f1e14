/* common.c - error strings, logging, clocks and fp16/bf16 conversion. */
#define _GNU_SOURCE
#include "common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

const char *tm_strerror(int code) {
    switch (code) {
    case TM_OK: return "TM_OK";
    case TM_EINVAL: return "TM_EINVAL";
    case TM_ENOMEM: return "TM_ENOMEM";
    case TM_EIO: return "TM_EIO";
    case TM_EFORMAT: return "TM_EFORMAT";
    case TM_EUNSUPPORTED: return "TM_EUNSUPPORTED";
    case TM_ENOTFOUND: return "TM_ENOTFOUND";
    case TM_ERANGE: return "TM_ERANGE";
    case TM_EBUSY: return "TM_EBUSY";
    case TM_ENODEV: return "TM_ENODEV";
    default: return "TM_E?";
    }
}

int tm_fail(char *err, size_t err_len, int code, const char *fmt, ...) {
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int log_level(void) {
    static int level = -1;
    if (level < 0) {
        const char *s = getenv("TM_LOG");
        level = TM_LOG_INFO;
        if (s) {
            if (!strcmp(s, "error")) level = TM_LOG_ERROR;
            else if (!strcmp(s, "warn")) level = TM_LOG_WARN;
            else if (!strcmp(s, "debug")) level = TM_LOG_DEBUG;
        }
    }
    return level;
}

void tm_log(int level, const char *fmt, ...) {
    if (level > log_level()) return;
    static const char *names[] = {"error", "warn", "info", "debug"};
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "tokenmill %s: %s\n", names[level & 3], line);
}

double tm_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

float tm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: renormalize */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            u = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000 | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t tm_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffff;
    if (absx >= 0x7f800000) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000 ? 0x200 : 0));
    if (absx >= 0x477ff000) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00);
    if (absx < 0x38800000) { /* result is subnormal or zero */
        if (absx < 0x33000000) return (uint16_t)sign;
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14 + (113 - e) - ... */
        uint32_t r = m >> (shift - 0);
        /* value = m * 2^(e-150); half subnormal unit = 2^-24 -> h = m >> (126 - e) */
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t h = ((absx >> 13) - ((127 - 15) << 10));
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

uint16_t tm_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

int tm_n_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int tm_utf8_need(uint8_t c, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80, *hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) {
        if (c == 0xE0) *lo = 0xA0;
        if (c == 0xED) *hi = 0x9F;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (c == 0xF0) *lo = 0x90;
        if (c == 0xF4) *hi = 0x8F;
        return 4;
    }
    return 0;
}

size_t tm_utf8_char_len(const uint8_t *s, size_t n) {
    uint8_t lo, hi;
    const int need = n ? tm_utf8_need(s[0], &lo, &hi) : 0;
    if (need == 0 || (size_t)need > n) return 0;
    if (need > 1 && (s[1] < lo || s[1] > hi)) return 0;
    for (int k = 2; k < need; k++)
        if ((s[k] & 0xC0) != 0x80) return 0;
    return (size_t)need;
}

void *tm_alloc_huge(size_t n_bytes) {
    const size_t huge = (size_t)2 << 20;
    if (n_bytes > SIZE_MAX - huge) return NULL; /* the rounding below would wrap */
    size_t n = (n_bytes + huge - 1) / huge * huge;
    void *p = aligned_alloc(huge, n ? n : huge);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (p) (void)madvise(p, n ? n : huge, MADV_HUGEPAGE); /* advice only: 4 KiB pages still work */
#endif
    return p;
}

/* tm_argmax_range: one pass over 16 lanes (GCC vectors: SSE2 or NEON, which the baseline build
 * has), each lane keeping its max and where it first appeared: a strictly larger value
 * moves it. The lanes are merged by value, ties to the lower index. A value must beat
 * -inf to move a lane, so a range whose max is -inf is searched again for its first -inf. */
typedef float tm_v4f __attribute__((vector_size(16)));
typedef int32_t tm_v4i __attribute__((vector_size(16)));

void tm_argmax_range(const float *x, int64_t lo, int64_t hi, float *m_out, int32_t *at_out) {
    enum { LANES = 16, V = 4 };
    tm_v4f mv[V];
    tm_v4i av[V];
    for (int k = 0; k < V; k++) {
        mv[k] = (tm_v4f){-INFINITY, -INFINITY, -INFINITY, -INFINITY};
        av[k] = (tm_v4i){-1, -1, -1, -1};
    }
    int64_t i = lo;
    for (; i + LANES <= hi; i += LANES) /* indices fit in int32: callers pass int lengths */
        for (int k = 0; k < V; k++) {
            tm_v4f v;
            memcpy(&v, x + i + 4 * k, sizeof v);
            const tm_v4i gt = v > mv[k]; /* all ones where v beats the lane (never for NaN) */
            const int32_t c = (int32_t)i + 4 * k;
            const tm_v4i col = (tm_v4i){c, c + 1, c + 2, c + 3};
            mv[k] = (tm_v4f)(((tm_v4i)v & gt) | ((tm_v4i)mv[k] & ~gt));
            av[k] = (col & gt) | (av[k] & ~gt);
        }
    float lane[LANES];
    int32_t at_lane[LANES];
    memcpy(lane, mv, sizeof lane);
    memcpy(at_lane, av, sizeof at_lane);
    for (; i < hi; i++)
        if (x[i] > lane[0]) lane[0] = x[i], at_lane[0] = (int32_t)i;
    float m = -INFINITY;
    int32_t at = -1;
    for (int j = 0; j < LANES; j++)
        if (at_lane[j] >= 0 && (at < 0 || lane[j] > m || (lane[j] == m && at_lane[j] < at)))
            m = lane[j], at = at_lane[j];
    if (at < 0) /* nothing above -inf: the first -inf, if any */
        for (i = lo; i < hi; i++)
            if (x[i] == -INFINITY) {
                at = (int32_t)i;
                break;
            }
    *m_out = m;
    *at_out = at;
}

int32_t tm_argmax(const float *x, int n) {
    float m;
    int32_t at;
    tm_argmax_range(x, 0, n, &m, &at);
    return at < 0 ? 0 : at;
}

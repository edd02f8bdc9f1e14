/* simd.c - run-time detection of the SIMD level.
 *
 * x86: a feature is usable only if the CPU has it (cpuid) and the OS saves its register
 * state on context switches (OSXSAVE + XCR0 via xgetbv): ymm needs XCR0 bits 1-2, zmm
 * additionally bits 5-7 (opmask, upper zmm0-15, zmm16-31), AMX tiles bits 17-18 (and a
 * permission request). AMX is only chosen automatically with TM_AMX=1 in the
 * environment; tests and benchmarks can always ask for it. arm64: getauxval(AT_HWCAP).
 * A level is also only usable if this build compiled its kernels (the per-file flags in
 * CMakeLists.txt exist only on the matching architecture). */
#include "kernels/cpu/simd.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

static uint64_t tm_xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static int tm_simd_detect_x86(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return TM_SIMD_SCALAR;
    const int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1,
              avx = (c >> 28) & 1;
    if (!osxsave || !avx) return TM_SIMD_SCALAR;
    const uint64_t xcr0 = tm_xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return TM_SIMD_SCALAR; /* OS does not save xmm/ymm */
    if (__get_cpuid_max(0, 0) < 7) return TM_SIMD_SCALAR;
    __cpuid_count(7, 0, a, b, c, d);
    const int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1,
              avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
    if (!(avx2 && fma && f16c)) return TM_SIMD_SCALAR;
    const int zmm_os = (xcr0 & 0xe6) == 0xe6; /* opmask + zmm_hi256 + hi16_zmm */
    if (!(zmm_os && avx512f && avx512dq && avx512bw && avx512vl && vnni)) return TM_SIMD_AVX2;
    /* AMX: tile state is off until the process asks Linux for it (arch_prctl), and the
     * OS must then save it (XCR0 bits 17-18). */
    const int amx_tile = (d >> 24) & 1, amx_int8 = (d >> 25) & 1;
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    if (amx_tile && amx_int8 &&
        syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 &&
        (tm_xgetbv0() & 0x60000) == 0x60000)
        return TM_SIMD_AMX;
    return TM_SIMD_AVX512VNNI;
}
#endif

#if defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP_FPHP
#define HWCAP_FPHP (1 << 9)
#endif
#ifndef HWCAP_ASIMDHP
#define HWCAP_ASIMDHP (1 << 10)
#endif
#endif

/* Best level the hardware, the OS and this build allow. */
static int tm_simd_hardware_best(void) {
    static int cached = -2; /* every thread computes the same value; atomics keep it race-free */
    const int seen = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (seen != -2) return seen;
    int level = TM_SIMD_SCALAR;
#if defined(__x86_64__) || defined(_M_X64)
    level = tm_simd_detect_x86();
#elif defined(__aarch64__)
    const unsigned long hw = getauxval(AT_HWCAP);
    /* sdot needs dotprod; the NEON files are built with +fp16 (scalar and vector) */
    if ((hw & HWCAP_ASIMDDP) && (hw & HWCAP_FPHP) && (hw & HWCAP_ASIMDHP)) level = TM_SIMD_NEON;
#endif
    __atomic_store_n(&cached, level, __ATOMIC_RELAXED);
    return level;
}

int tm_simd_detect(void) {
    const int best = tm_simd_hardware_best();
    /* AMX is opt-in: faster than VNNI in matmul micro-benchmarks, slower in the engine on
     * the machine it was measured on (bench/RESULTS.md). */
    if (best == TM_SIMD_AMX) {
        const char *env = getenv("TM_AMX");
        if (!env || !*env || !strcmp(env, "0")) return TM_SIMD_AVX512VNNI;
    }
    return best;
}

int tm_simd_supported(int level) {
    const int best = tm_simd_hardware_best();
    switch (level) {
    case TM_SIMD_SCALAR:
        return 1;
    case TM_SIMD_AVX2:
        return best == TM_SIMD_AVX2 || best == TM_SIMD_AVX512VNNI || best == TM_SIMD_AMX;
    case TM_SIMD_AVX512VNNI:
        return best == TM_SIMD_AVX512VNNI || best == TM_SIMD_AMX;
    case TM_SIMD_AMX:
        return best == TM_SIMD_AMX;
    case TM_SIMD_NEON:
        return best == TM_SIMD_NEON;
    default:
        return 0;
    }
}

const char *tm_simd_name(int level) {
    switch (level) {
    case TM_SIMD_AUTO: return "auto";
    case TM_SIMD_SCALAR: return "scalar";
    case TM_SIMD_AVX2: return "avx2";
    case TM_SIMD_AVX512VNNI: return "avx512vnni";
    case TM_SIMD_NEON: return "neon";
    case TM_SIMD_AMX: return "amx";
    default: return "unknown";
    }
}

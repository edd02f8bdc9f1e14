/* simd.h - SIMD levels of the CPU backend, picked at run time. */
#ifndef TM_CPU_SIMD_H
#define TM_CPU_SIMD_H

#ifdef __cplusplus
extern "C" {
#endif

enum {
    TM_SIMD_AUTO = -1,      /* best the CPU supports */
    TM_SIMD_SCALAR = 0,     /* portable C: the reference */
    TM_SIMD_AVX2 = 1,       /* AVX2 + FMA + F16C */
    TM_SIMD_AVX512VNNI = 2, /* AVX-512 F/BW/VL + VNNI */
    TM_SIMD_NEON = 3,       /* arm64 NEON + dotprod */
    TM_SIMD_AMX = 4,        /* AVX512VNNI + AMX-INT8 tiles for 16-token matmul groups */
    TM_SIMD_LAST = TM_SIMD_AMX,
};

/* Default level: the best this CPU and build support, except that AMX (TM_SIMD_AMX)
 * is used only with TM_AMX=1 in the environment. */
int tm_simd_detect(void);
/* Is level usable here (AMX: whether or not TM_AMX is set)? */
int tm_simd_supported(int level);
/* "scalar", "avx2", "avx512vnni", "neon", "amx". */
const char *tm_simd_name(int level);

#ifdef __cplusplus
}
#endif
#endif

/* common.h - error codes, logging and small numeric helpers shared by every module.
 *
 * Functions that can fail return int: 0 (TM_OK) or a negative TM_E* code. Where the
 * detail matters they also fill a caller's `char *err, size_t err_len` with one line. */
#ifndef TM_COMMON_H
#define TM_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    TM_OK = 0,
    TM_EINVAL = -1,      /* bad argument or malformed input */
    TM_ENOMEM = -2,      /* allocation failed */
    TM_EIO = -3,         /* open/read/mmap failed */
    TM_EFORMAT = -4,     /* file is corrupt, truncated or of an unknown version */
    TM_EUNSUPPORTED = -5,/* valid input we do not handle (architecture, dtype, ...) */
    TM_ENOTFOUND = -6,   /* missing key, tensor or model */
    TM_ERANGE = -7,      /* value out of range (context too long, ...) */
    TM_EBUSY = -8,       /* queue full / no capacity right now */
    TM_ENODEV = -9,      /* no such device (e.g. no CUDA GPU) */
};

/* Short name of a TM_E* code ("TM_EFORMAT"); never NULL. */
const char *tm_strerror(int code);

/* Formats into err (if non-NULL) and returns code; lets a failing function write
 * `return tm_fail(err, err_len, TM_EFORMAT, "tensor %s: ...", name);`. */
int tm_fail(char *err, size_t err_len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Logging to stderr. Level from TM_LOG (error|warn|info|debug), default info. */
enum { TM_LOG_ERROR = 0, TM_LOG_WARN = 1, TM_LOG_INFO = 2, TM_LOG_DEBUG = 3 };
void tm_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define TM_ERRORF(...) tm_log(TM_LOG_ERROR, __VA_ARGS__)
#define TM_WARNF(...) tm_log(TM_LOG_WARN, __VA_ARGS__)
#define TM_INFOF(...) tm_log(TM_LOG_INFO, __VA_ARGS__)
#define TM_DEBUGF(...) tm_log(TM_LOG_DEBUG, __VA_ARGS__)

/* Monotonic clock in seconds. */
double tm_time_s(void);

/* IEEE half and bfloat16 conversions (round to nearest even). */
float tm_f16_to_f32(uint16_t h);
uint16_t tm_f32_to_f16(float f);
static inline float tm_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
uint16_t tm_f32_to_bf16(float f);

/* The greedy pick over x[lo, hi): *m the largest value (NaN never wins), *at the lowest
 * index holding it, -1 when every value is NaN. tm_argmax: the same over x[0, n), 0 for
 * an all-NaN x. The sampler and the CPU backend's argmax_rows both use it. */
void tm_argmax_range(const float *x, int64_t lo, int64_t hi, float *m, int32_t *at);
int32_t tm_argmax(const float *x, int n);

/* Large buffers read in scattered runs (the KV cache): n_bytes rounded up to
 * 2 MiB, 2 MiB aligned, and on Linux advised to use transparent huge pages, so a step's
 * reads do not miss the TLB once per 4 KiB. Free with free(). NULL when out of memory. */
void *tm_alloc_huge(size_t n_bytes);

/* Strict UTF-8. tm_utf8_need: bytes the character led by c has in all (0: c leads no
 * valid character), and the range its second byte must be in, which rules out overlong
 * forms, surrogates and code points past U+10FFFF. tm_utf8_char_len: length of the valid
 * character at s (n bytes left), 0 if there is none. */
int tm_utf8_need(uint8_t c, uint8_t *lo, uint8_t *hi);
size_t tm_utf8_char_len(const uint8_t *s, size_t n);

/* Number of online CPUs (>= 1). */
int tm_n_cpus(void);

#define TM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TM_MAX(a, b) ((a) > (b) ? (a) : (b))
#define TM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#ifdef __cplusplus
}
#endif
#endif

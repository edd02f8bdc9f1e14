/* cli_args.c - number parsing for the command line. */
#include "server/cli_args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int tm_cli_long(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out) {
    char *end = NULL;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "tokenmill %s: %s expects an integer in [%ld, %ld], got '%s'\n", cmd, opt, lo,
                hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

int tm_cli_float(const char *cmd, const char *opt, const char *s, float lo, float hi, float *out) {
    char *end = NULL;
    errno = 0;
    float v = s ? strtof(s, &end) : 0.0f;
    if (!s || errno || *end || end == s || !(v >= lo && v <= hi)) {
        fprintf(stderr, "tokenmill %s: %s expects a number in [%g, %g], got '%s'\n", cmd, opt, lo, hi,
                s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

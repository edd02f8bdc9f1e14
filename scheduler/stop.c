/* stop.c - stop-string matching with hold-back of partial matches. */
#define _GNU_SOURCE /* memmem */
#include "scheduler/stop.h"

#include <stdlib.h>
#include <string.h>

#include "common/common.h"

int tm_stop_init(tm_stop *s, const char *const *strs, int n, size_t max_chunk) {
    memset(s, 0, sizeof *s);
    if (n < 0 || n > TM_MAX_STOP) return TM_EINVAL;
    size_t longest = 0;
    for (int i = 0; i < n; i++) {
        size_t len = strs[i] ? strlen(strs[i]) : 0;
        if (len == 0) {
            tm_stop_deinit(s);
            return TM_EINVAL;
        }
        s->str[i] = malloc(len + 1);
        if (!s->str[i]) {
            tm_stop_deinit(s);
            return TM_ENOMEM;
        }
        memcpy(s->str[i], strs[i], len + 1);
        s->len[i] = len;
        s->n = i + 1;
        longest = TM_MAX(longest, len);
    }
    s->max_chunk = max_chunk;
    s->cap_held = longest + 4 + max_chunk;
    s->held = malloc(s->cap_held + 1);
    if (!s->held) {
        tm_stop_deinit(s);
        return TM_ENOMEM;
    }
    return TM_OK;
}

void tm_stop_deinit(tm_stop *s) {
    for (int i = 0; i < s->n; i++) free(s->str[i]);
    free(s->held);
    memset(s, 0, sizeof *s);
}

size_t tm_stop_out_cap(const tm_stop *s) { return s->cap_held + 1; }

/* Length of the UTF-8 sequence a lead byte starts (1 for ASCII or an invalid byte). */
static size_t utf8_len(unsigned char c) {
    if (c >= 0xF8) return 1;
    if (c >= 0xF0) return 4;
    if (c >= 0xE0) return 3;
    if (c >= 0xC0) return 2;
    return 1;
}

/* Largest n <= len such that s[0..n) does not end inside an incomplete character. */
static size_t utf8_complete(const char *s, size_t len) {
    size_t i = len;
    /* Step back over at most 3 continuation bytes to the last lead byte. */
    for (int k = 0; k < 3 && i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80; k++) i--;
    if (i == 0) return len;
    unsigned char lead = (unsigned char)s[i - 1];
    if (lead < 0xC0) return len; /* ASCII or stray continuation bytes: nothing to wait for */
    return (i - 1) + utf8_len(lead) > len ? i - 1 : len;
}

/* Earliest position of any stop string in held, or -1. */
static long find_stop(const tm_stop *s) {
    long best = -1;
    for (int i = 0; i < s->n; i++) {
        const char *p = memmem(s->held, s->n_held, s->str[i], s->len[i]);
        if (p && (best < 0 || p - s->held < best)) best = p - s->held;
    }
    return best;
}

/* Length of the longest suffix of held that is a proper prefix of a stop string. */
static size_t partial_stop(const tm_stop *s) {
    size_t best = 0;
    for (int i = 0; i < s->n; i++) {
        size_t k = TM_MIN(s->n_held, s->len[i] - 1);
        for (; k > best; k--)
            if (memcmp(s->held + s->n_held - k, s->str[i], k) == 0) break;
        best = TM_MAX(best, k);
    }
    return best;
}

static size_t emit(tm_stop *s, size_t n, char *out) {
    memcpy(out, s->held, n);
    out[n] = '\0';
    memmove(s->held, s->held + n, s->n_held - n);
    s->n_held -= n;
    return n;
}

long tm_stop_push(tm_stop *s, const char *text, size_t len, char *out, int *stopped) {
    *stopped = 0;
    out[0] = '\0';
    if (len > s->max_chunk) return (long)TM_ERANGE;
    memcpy(s->held + s->n_held, text, len);
    s->n_held += len;
    long at = find_stop(s);
    if (at >= 0) {
        *stopped = 1;
        size_t n = emit(s, (size_t)at, out);
        s->n_held = 0; /* the stop string and anything after it are dropped */
        return (long)n;
    }
    size_t keep = partial_stop(s);
    return (long)emit(s, utf8_complete(s->held, s->n_held - keep), out);
}

size_t tm_stop_flush(tm_stop *s, char *out) { return emit(s, s->n_held, out); }

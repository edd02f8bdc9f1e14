/* gbnf_text.c - grammar text writing for the structured-output front ends. */
#include "server/gbnf_text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int reserve(tm_gtext *b, size_t more) {
    if (b->oom) return -1;
    if (b->n + more + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = 1;
        return -1;
    }
    b->s = s;
    b->cap = cap;
    return 0;
}

void tm_gtext_put(tm_gtext *b, const char *s, size_t n) {
    if (reserve(b, n)) return;
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

void tm_gtext_puts(tm_gtext *b, const char *s) { tm_gtext_put(b, s, strlen(s)); }

void tm_gtext_printf(tm_gtext *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        tm_gtext_put(b, small, (size_t)n);
        return;
    }
    if (reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

/* One code point inside a literal (quote '"') or a class (quote ']'). */
static void put_cp(tm_gtext *b, uint32_t cp, int in_class) {
    char tmp[16];
    if (cp == '\\' || cp == '"' || (in_class && (cp == ']' || cp == '[' || cp == '-' || cp == '^'))) {
        tmp[0] = '\\', tmp[1] = (char)cp;
        tm_gtext_put(b, tmp, 2);
    } else if (cp < 0x20 || cp == 0x7F) {
        snprintf(tmp, sizeof tmp, "\\x%02X", cp);
        tm_gtext_puts(b, tmp);
    } else if (cp < 0x80) {
        tmp[0] = (char)cp;
        tm_gtext_put(b, tmp, 1);
    } else {
        snprintf(tmp, sizeof tmp, cp > 0xFFFF ? "\\U%08X" : "\\u%04X", cp);
        tm_gtext_puts(b, tmp);
    }
}

void tm_gtext_literal(tm_gtext *b, const char *s, size_t n) {
    tm_gtext_put(b, "\"", 1);
    size_t run = 0; /* bytes copied as they are: UTF-8 above ASCII needs no escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80 || (c >= 0x20 && c != 0x7F && c != '\\' && c != '"')) continue;
        tm_gtext_put(b, s + run, i - run);
        put_cp(b, c, 0);
        run = i + 1;
    }
    tm_gtext_put(b, s + run, n - run);
    tm_gtext_put(b, "\"", 1);
}

char *tm_gtext_take(tm_gtext *b) {
    char *s = NULL;
    if (!b->oom) s = b->s ? b->s : calloc(1, 1);
    else free(b->s);
    memset(b, 0, sizeof *b);
    return s;
}

void tm_gtext_free(tm_gtext *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

/* ---- code point sets ---- */

static void cset_insert(tm_cset *c, int at, uint32_t lo, uint32_t hi) {
    if (c->oom) return;
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 8;
        void *r = realloc(c->r, (size_t)cap * sizeof *c->r);
        if (!r) {
            c->oom = 1;
            return;
        }
        c->r = r;
        c->cap = cap;
    }
    memmove(c->r + at + 1, c->r + at, (size_t)(c->n - at) * sizeof *c->r);
    c->r[at][0] = lo, c->r[at][1] = hi;
    c->n++;
}

void tm_cset_add(tm_cset *c, uint32_t lo, uint32_t hi) {
    if (hi < lo) return;
    int i = 0;
    while (i < c->n && c->r[i][1] + 1 < lo) i++; /* first range touching or after lo */
    if (i == c->n || c->r[i][0] > hi + 1) {
        cset_insert(c, i, lo, hi);
        return;
    }
    if (lo < c->r[i][0]) c->r[i][0] = lo;
    if (hi > c->r[i][1]) c->r[i][1] = hi;
    int j = i + 1; /* swallow the ranges the grown one now touches */
    while (j < c->n && c->r[j][0] <= c->r[i][1] + 1) {
        if (c->r[j][1] > c->r[i][1]) c->r[i][1] = c->r[j][1];
        j++;
    }
    memmove(c->r + i + 1, c->r + j, (size_t)(c->n - j) * sizeof *c->r);
    c->n -= j - i - 1;
}

void tm_cset_add_set(tm_cset *c, const tm_cset *o) {
    for (int i = 0; i < o->n; i++) tm_cset_add(c, o->r[i][0], o->r[i][1]);
    c->oom |= o->oom;
}

void tm_cset_negate(tm_cset *c) {
    tm_cset out = {0};
    uint32_t next = 0;
    for (int i = 0; i < c->n; i++) {
        if (c->r[i][0] > next) tm_cset_add(&out, next, c->r[i][0] - 1);
        next = c->r[i][1] + 1;
    }
    if (next <= 0x10FFFF) tm_cset_add(&out, next, 0x10FFFF);
    out.oom |= c->oom;
    free(c->r);
    *c = out;
}

void tm_cset_clip(tm_cset *c, uint32_t lo, uint32_t hi) {
    int m = 0;
    for (int i = 0; i < c->n; i++) {
        uint32_t a = c->r[i][0] > lo ? c->r[i][0] : lo, z = c->r[i][1] < hi ? c->r[i][1] : hi;
        if (a <= z) c->r[m][0] = a, c->r[m][1] = z, m++;
    }
    c->n = m;
}

int tm_cset_has(const tm_cset *c, uint32_t cp) {
    for (int i = 0; i < c->n; i++)
        if (cp >= c->r[i][0] && cp <= c->r[i][1]) return 1;
    return 0;
}

void tm_cset_free(tm_cset *c) {
    free(c->r);
    memset(c, 0, sizeof *c);
}

static void put_range(tm_gtext *b, uint32_t lo, uint32_t hi) {
    put_cp(b, lo, 1);
    if (hi != lo) {
        tm_gtext_put(b, "-", 1);
        put_cp(b, hi, 1);
    }
}

int tm_gtext_class(tm_gtext *b, const tm_cset *c) {
    int any = 0;
    for (int i = 0; i < c->n && !any; i++) /* surrogates are no characters */
        any = c->r[i][0] < 0xD800 || c->r[i][1] > 0xDFFF;
    if (!any) return 0;
    tm_gtext_put(b, "[", 1);
    for (int i = 0; i < c->n; i++) {
        uint32_t lo = c->r[i][0], hi = c->r[i][1];
        if (lo < 0xD800) put_range(b, lo, hi < 0xD800 ? hi : 0xD7FF);
        if (hi > 0xDFFF) put_range(b, lo > 0xDFFF ? lo : 0xE000, hi);
    }
    tm_gtext_put(b, "]", 1);
    return 1;
}

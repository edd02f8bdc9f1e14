/* json_schema_num.c - JSON numbers within bounds, as GBNF (json_schema.c's numeric part).
 *
 * Integers: the exact language of the decimal integers in [lo, hi] (either end open),
 * by the classic digit-range split: [123, 4567] = 12[3-9] | 1[3-9][0-9] | [2-9][0-9]{2}
 * | [1-3][0-9]{3} | 4[0-4][0-9]{2} | 45[0-5][0-9] | 456[0-7].
 *
 * Numbers with bounds: a subset that is always inside them. Integer values in range,
 * plus "i.f" (up to 6 fraction digits) for integer parts i with [i, i+1) inside the
 * range, plus the bounds themselves when inclusive (so a range with no integer still has
 * members). Integer parts stay below 10^9, so i.f has at most 15 significant digits and
 * parses to a double below i + 1. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/gbnf_text.h"
#include "server/json_schema_internal.h"

#define TM_DEC_INT_MAX 999999999LL /* integer parts of decimals below 10^9 */

static int n_digits(uint64_t v) {
    int n = 1;
    while (v >= 10) v /= 10, n++;
    return n;
}

static uint64_t pow10u(int k) {
    uint64_t p = 1;
    while (k-- > 0) p *= 10;
    return p;
}

/* Alternatives for a..b, same digit count, appended with " | " between them. */
static void same_len(tm_gtext *out, uint64_t a, uint64_t b, int *alts) {
    int n = n_digits(a);
    /* Split at the first digit where a and b differ, by how much of the tail is full. */
    char sa[24], sb[24];
    snprintf(sa, sizeof sa, "%0*llu", n, (unsigned long long)a);
    snprintf(sb, sizeof sb, "%0*llu", n, (unsigned long long)b);
    int k = 0;
    while (k < n && sa[k] == sb[k]) k++;
    if (k == n) {
        tm_gtext_printf(out, "%s\"%s\"", (*alts)++ ? " | " : "", sa);
        return;
    }
    int tail = n - k - 1;
    uint64_t unit = pow10u(tail);
    int all0 = 1, all9 = 1;
    for (int i = k + 1; i < n; i++) all0 &= sa[i] == '0', all9 &= sb[i] == '9';
    if (!all0) { /* a .. a's block end, then the rest */
        uint64_t end = (a / unit + 1) * unit - 1;
        same_len(out, a, end, alts);
        same_len(out, end + 1, b, alts);
        return;
    }
    if (!all9) {
        uint64_t start = (b / unit) * unit;
        same_len(out, a, start - 1, alts);
        same_len(out, start, b, alts);
        return;
    }
    /* prefix, one digit range, then full tails */
    tm_gtext_printf(out, "%s(", (*alts)++ ? " | " : "");
    if (k) tm_gtext_printf(out, "\"%.*s\" ", k, sa);
    if (sa[k] == sb[k]) tm_gtext_printf(out, "\"%c\"", sa[k]);
    else tm_gtext_printf(out, "[%c-%c]", sa[k], sb[k]);
    if (tail) tm_gtext_printf(out, " [0-9]{%d}", tail);
    tm_gtext_puts(out, ")");
}

/* Alternatives for the non-negative integers a..b (b = UINT64_MAX: unbounded). */
static void uint_range(tm_gtext *out, uint64_t a, uint64_t b, int *alts) {
    if (a > b) return;
    if (a == 0) {
        tm_gtext_printf(out, "%s\"0\"", (*alts)++ ? " | " : "");
        if (b == 0) return;
        a = 1;
    }
    int na = n_digits(a), nb = b == UINT64_MAX ? 0 : n_digits(b);
    for (int d = na; b == UINT64_MAX ? d <= 19 : d <= nb; d++) {
        uint64_t lo = d == na ? a : pow10u(d - 1);
        uint64_t hi = (b != UINT64_MAX && d == nb) ? b : pow10u(d) - 1;
        if (b == UINT64_MAX && d > na && d >= 3) { /* open above: every longer number */
            tm_gtext_printf(out, "%s([1-9] [0-9]{%d,17})", (*alts)++ ? " | " : "", d - 1);
            return;
        }
        same_len(out, lo, hi, alts);
    }
}

void tm_schema_int_range(tm_gtext *out, int64_t lo, int has_lo, int64_t hi, int has_hi) {
    int alts = 0;
    tm_gtext_puts(out, "(");
    /* negatives: "-" then the magnitudes */
    if (!has_lo || lo < 0) {
        uint64_t mlo = has_hi && hi < 0 ? (uint64_t)(-(hi + 1)) + 1 : 1;
        uint64_t mhi = has_lo ? (uint64_t)(-(lo + 1)) + 1 : UINT64_MAX;
        if (mlo <= mhi) {
            tm_gtext_printf(out, "%s\"-\" (", alts++ ? " | " : "");
            int inner = 0;
            uint_range(out, mlo, mhi, &inner);
            tm_gtext_puts(out, ")");
        }
    }
    if (!has_hi || hi >= 0) {
        uint64_t a = has_lo && lo > 0 ? (uint64_t)lo : 0;
        uint64_t b = has_hi ? (uint64_t)hi : UINT64_MAX;
        uint_range(out, a, b, &alts);
    }
    if (!alts) tm_gtext_puts(out, "\"\"");
    tm_gtext_puts(out, ")");
}

/* The shortest decimal text of v that reads back as v. */
static void put_double(tm_gtext *out, double v, int *alts) {
    char buf[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    /* JSON has no leading '+', no "inf"; %g gives neither for finite v */
    tm_gtext_printf(out, "%s\"%s\"", (*alts)++ ? " | " : "", buf);
}

/* Integer parts i for "i.f" decimals: [i, i+1) inside [lo, hi]; appended as "digits ." */
static void decimal_part(tm_gtext *out, int64_t ilo, int64_t ihi, int negative, int *alts) {
    if (ilo > ihi) return;
    tm_gtext_printf(out, "%s(%s", (*alts)++ ? " | " : "", negative ? "\"-\" " : "");
    int inner = 0;
    tm_gtext_puts(out, "(");
    uint_range(out, (uint64_t)ilo, (uint64_t)ihi, &inner);
    tm_gtext_puts(out, ") \".\" [0-9]{1,6})");
}

int tm_schema_num_range(tm_gtext *out, double lo, int lo_set, int lo_excl, double hi, int hi_set,
                        int hi_excl) {
    if (lo_set && hi_set && (lo > hi || (lo == hi && (lo_excl || hi_excl)))) return TM_EINVAL;
    int alts = 0;
    tm_gtext_puts(out, "(");
    /* Integer values. */
    double ilo = !lo_set ? -1e18 : lo_excl ? floor(lo) + 1 : ceil(lo);
    double ihi = !hi_set ? 1e18 : hi_excl ? ceil(hi) - 1 : floor(hi);
    if (ilo <= ihi) {
        tm_gtext_printf(out, "%s", alts++ ? " | " : "");
        tm_schema_int_range(out, (int64_t)ilo, lo_set, (int64_t)ihi, hi_set);
    }
    /* Non-negative decimals i.f: i >= lo (i > lo if exclusive), i + 1 <= hi. */
    double dlo = !lo_set || lo < 0 ? 0 : lo_excl ? floor(lo) + 1 : ceil(lo);
    double dhi = !hi_set ? (double)TM_DEC_INT_MAX : floor(hi) - 1;
    if (dhi > TM_DEC_INT_MAX) dhi = TM_DEC_INT_MAX;
    decimal_part(out, (int64_t)dlo, (int64_t)dhi, 0, &alts);
    /* Negative decimals -i.f lie in (-(i+1), -i]: need -(i+1) >= lo and -i <= hi. */
    if (!lo_set || lo < 0) {
        double nlo = !hi_set || hi >= 0 ? 0 : hi_excl ? floor(-hi) + 1 : ceil(-hi);
        double nhi = !lo_set ? (double)TM_DEC_INT_MAX : floor(-lo) - 1;
        if (nhi > TM_DEC_INT_MAX) nhi = TM_DEC_INT_MAX;
        /* "-0.0" reads as 0, which an exclusive maximum of 0 leaves out */
        if (nlo == 0 && hi_set && hi_excl && hi == 0) nlo = 1;
        decimal_part(out, (int64_t)nlo, (int64_t)nhi, 1, &alts);
    }
    if (lo_set && !lo_excl && fabs(lo) < 1e15) put_double(out, lo, &alts);
    if (hi_set && !hi_excl && fabs(hi) < 1e15) put_double(out, hi, &alts);
    if (!alts && lo_set && hi_set) put_double(out, (lo + hi) / 2, &alts);
    if (!alts) {
        tm_gtext_puts(out, "\"\")");
        return TM_EINVAL;
    }
    tm_gtext_puts(out, ")");
    return 0;
}

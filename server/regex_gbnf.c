/* regex_gbnf.c - regular expression -> GBNF expression. See regex_gbnf.h.
 *
 * Recursive descent that writes as it parses: every atom becomes one GBNF item (a
 * literal, a class or a parenthesized group) so a quantifier can follow it. */
#include "server/regex_gbnf.h"

#include <stdio.h>
#include <string.h>

#include "common/common.h"

#define TM_REGEX_MAX_DEPTH 100
#define TM_REGEX_MAX_REPEAT 1000

typedef struct rx {
    const char *s;
    size_t n, i;   /* pattern, length, position */
    int json;      /* write JSON-escaped text */
    int depth;     /* open groups */
    tm_gtext *out;
    char *err;
    size_t err_len;
} rx;

static int unsupported(rx *x, const char *what) {
    return tm_fail(x->err, x->err_len, TM_EUNSUPPORTED, "regex feature not supported: %s (at offset %zu)",
                   what, x->i);
}

static int malformed(rx *x, const char *what) {
    return tm_fail(x->err, x->err_len, TM_EINVAL, "malformed regex at offset %zu: %s", x->i, what);
}

/* ---- characters ---- */

static size_t utf8_encode(uint32_t cp, char *buf) {
    if (cp < 0x80) return buf[0] = (char)cp, 1;
    if (cp < 0x800) return buf[0] = (char)(0xC0 | cp >> 6), buf[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000)
        return buf[0] = (char)(0xE0 | cp >> 12), buf[1] = (char)(0x80 | (cp >> 6 & 0x3F)),
               buf[2] = (char)(0x80 | (cp & 0x3F)), 3;
    return buf[0] = (char)(0xF0 | cp >> 18), buf[1] = (char)(0x80 | (cp >> 12 & 0x3F)),
           buf[2] = (char)(0x80 | (cp >> 6 & 0x3F)), buf[3] = (char)(0x80 | (cp & 0x3F)), 4;
}

/* The JSON text of code point cp inside a string literal (escaped where JSON requires). */
static size_t json_char(uint32_t cp, char *buf) {
    static const char short_esc[] = {['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't'};
    if (cp == '"' || cp == '\\') return buf[0] = '\\', buf[1] = (char)cp, 2;
    if (cp < 0x20) {
        if (cp < sizeof short_esc && short_esc[cp]) return buf[0] = '\\', buf[1] = short_esc[cp], 2;
        return (size_t)snprintf(buf, 8, "\\u%04x", cp);
    }
    return utf8_encode(cp, buf);
}

/* One character as a GBNF literal: its JSON text inside a string, else itself. */
static void put_char(tm_gtext *out, uint32_t cp, int json) {
    char buf[8];
    size_t n = json ? json_char(cp, buf) : utf8_encode(cp, buf);
    tm_gtext_literal(out, buf, n);
}

void tm_gbnf_json_set(tm_gtext *out, const tm_cset *set, int json) {
    if (!json) {
        if (!tm_gtext_class(out, set)) tm_gtext_puts(out, "[^\\x00-\\U0010FFFF]"); /* never: sets are checked non-empty */
        return;
    }
    /* Inside a JSON string " \ and controls are written escaped; the rest as it is.
     * kept := set minus those, intersecting range by range with their complement. */
    tm_cset raw = {0};
    tm_cset_add(&raw, 0, 0x1F);
    tm_cset_add(&raw, '"', '"');
    tm_cset_add(&raw, '\\', '\\');
    tm_cset_negate(&raw);
    tm_cset kept = {0};
    for (int i = 0; i < set->n; i++)
        for (int j = 0; j < raw.n; j++) {
            uint32_t lo = set->r[i][0] > raw.r[j][0] ? set->r[i][0] : raw.r[j][0];
            uint32_t hi = set->r[i][1] < raw.r[j][1] ? set->r[i][1] : raw.r[j][1];
            if (lo <= hi) tm_cset_add(&kept, lo, hi);
        }
    int n_ctl = 0, alts = 0;
    for (uint32_t c = 0; c < 0x20; c++) n_ctl += tm_cset_has(set, c);
    int has_quote = tm_cset_has(set, '"'), has_bs = tm_cset_has(set, '\\');
    int simple = !n_ctl && !has_quote && !has_bs;
    if (!simple) tm_gtext_puts(out, "(");
    if (kept.n) alts += tm_gtext_class(out, &kept);
    if (has_quote) tm_gtext_puts(out, alts++ ? " | " : ""), put_char(out, '"', 1);
    if (has_bs) tm_gtext_puts(out, alts++ ? " | " : ""), put_char(out, '\\', 1);
    if (n_ctl == 32) { /* every \u00XX, and the short forms a JSON writer prefers */
        tm_gtext_puts(out, alts++ ? " | " : "");
        tm_gtext_puts(out, "\"\\\\u00\" [01] [0-9a-fA-F] | \"\\\\\" [bfnrt]");
    } else {
        for (uint32_t c = 0; c < 0x20; c++)
            if (tm_cset_has(set, c)) tm_gtext_puts(out, alts++ ? " | " : ""), put_char(out, c, 1);
    }
    if (!simple) tm_gtext_puts(out, ")");
    tm_cset_free(&raw);
    tm_cset_free(&kept);
}

/* ---- escapes ---- */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex(rx *x, int digits, uint32_t *cp) {
    uint32_t v = 0;
    for (int k = 0; k < digits; k++) {
        int h = x->i < x->n ? hexval(x->s[x->i]) : -1;
        if (h < 0) return malformed(x, "escape needs hex digits");
        v = v << 4 | (uint32_t)h;
        x->i++;
    }
    if (v > 0x10FFFF) return malformed(x, "code point above U+10FFFF");
    *cp = v;
    return 0;
}

/* Shorthand classes, their ASCII parts (see the header). */
static int shorthand(char e, tm_cset *set) {
    switch (e) {
    case 'd': tm_cset_add(set, '0', '9'); return 1;
    case 'w':
        tm_cset_add(set, '0', '9'), tm_cset_add(set, 'A', 'Z'), tm_cset_add(set, 'a', 'z');
        tm_cset_add(set, '_', '_');
        return 1;
    case 's': tm_cset_add(set, '\t', '\r'), tm_cset_add(set, 0x1C, ' '); return 1;
    case 'D': case 'W': case 'S': {
        tm_cset pos = {0};
        shorthand((char)(e + ('a' - 'A')), &pos);
        tm_cset_negate(&pos);
        tm_cset_clip(&pos, 0, 0x7F);
        tm_cset_add_set(set, &pos);
        tm_cset_free(&pos);
        return 1;
    }
    }
    return 0;
}

/* After a backslash: one character (*cp) or a shorthand added to set (*is_set = 1).
 * in_class: \b is a backspace there, not a word boundary. */
static int escape(rx *x, int in_class, uint32_t *cp, tm_cset *set, int *is_set) {
    if (x->i >= x->n) return malformed(x, "a trailing backslash");
    char e = x->s[x->i++];
    *is_set = 0;
    if (shorthand(e, set)) return *is_set = 1, 0;
    switch (e) {
    case 'n': *cp = '\n'; return 0;
    case 't': *cp = '\t'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 'f': *cp = '\f'; return 0;
    case 'v': *cp = '\v'; return 0;
    case 'a': *cp = 7; return 0;
    case '0': *cp = 0; return 0;
    case 'x': return read_hex(x, 2, cp);
    case 'u': return read_hex(x, 4, cp);
    case 'U': return read_hex(x, 8, cp);
    case 'b':
        if (in_class) return *cp = 8, 0;
        return unsupported(x, "word boundary \\b");
    case 'B': return unsupported(x, "word boundary \\B");
    case 'N': return unsupported(x, "named characters \\N{...}");
    case 'A': case 'Z': case 'z': return unsupported(x, "anchor inside the pattern");
    }
    if (e >= '1' && e <= '9') return unsupported(x, "backreference");
    if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) {
        char what[32];
        snprintf(what, sizeof what, "unknown escape \\%c", e);
        return malformed(x, what);
    }
    if ((unsigned char)e >= 0x80) return malformed(x, "escaped non-ASCII character");
    *cp = (unsigned char)e;
    return 0;
}

/* One UTF-8 character of the pattern. */
static int literal_char(rx *x, uint32_t *cp) {
    size_t k = tm_utf8_char_len((const uint8_t *)x->s + x->i, x->n - x->i);
    if (k == 0) return malformed(x, "invalid UTF-8");
    const uint8_t *u = (const uint8_t *)x->s + x->i;
    *cp = k == 1 ? u[0]
          : k == 2 ? (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F)
          : k == 3 ? (uint32_t)(u[0] & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F)
                   : (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 |
                         (uint32_t)(u[2] & 0x3F) << 6 | (u[3] & 0x3F);
    x->i += k;
    return 0;
}

/* [...] after the '['. */
static int parse_class(rx *x, tm_cset *set) {
    int negated = x->i < x->n && x->s[x->i] == '^';
    if (negated) x->i++;
    int shorthands = 0, first = 1;
    for (;;) {
        if (x->i >= x->n) return malformed(x, "unterminated character class");
        if (x->s[x->i] == ']' && !first) {
            x->i++;
            break;
        }
        first = 0;
        uint32_t lo = 0, hi;
        int is_set = 0, rc;
        if (x->s[x->i] == '\\') {
            x->i++;
            if ((rc = escape(x, 1, &lo, set, &is_set))) return rc;
            if (is_set) {
                shorthands = 1;
                continue;
            }
        } else if ((rc = literal_char(x, &lo))) {
            return rc;
        }
        hi = lo;
        if (x->i + 1 < x->n && x->s[x->i] == '-' && x->s[x->i + 1] != ']') {
            x->i++;
            if (x->s[x->i] == '\\') {
                x->i++;
                tm_cset tmp = {0};
                rc = escape(x, 1, &hi, &tmp, &is_set);
                tm_cset_free(&tmp);
                if (rc) return rc;
                if (is_set) return malformed(x, "a class shorthand cannot end a range");
            } else if ((rc = literal_char(x, &hi))) {
                return rc;
            }
            if (hi < lo) return malformed(x, "character range out of order");
        }
        tm_cset_add(set, lo, hi);
    }
    if (negated) {
        tm_cset_negate(set);
        if (shorthands) tm_cset_clip(set, 0, 0x7F);
    }
    return 0;
}

/* ---- structure ---- */

static int parse_alt(rx *x);

static int read_count(rx *x, int *out) {
    size_t at = x->i;
    long v = 0;
    while (x->i < x->n && x->s[x->i] >= '0' && x->s[x->i] <= '9') {
        v = v * 10 + (x->s[x->i++] - '0');
        if (v > TM_REGEX_MAX_REPEAT)
            return tm_fail(x->err, x->err_len, TM_EUNSUPPORTED,
                           "regex feature not supported: a repetition count above %d", TM_REGEX_MAX_REPEAT);
    }
    *out = x->i > at ? (int)v : -1;
    return 0;
}

/* A quantifier after an atom, written as a GBNF postfix. A '{' that starts no valid
 * repetition is a literal in Python: 0 is returned with *none = 1 and x->i unmoved. */
static int parse_quant(rx *x, int *none) {
    *none = 0;
    if (x->i >= x->n) return *none = 1, 0;
    char c = x->s[x->i];
    size_t at = x->i;
    if (c == '*' || c == '+' || c == '?') {
        x->i++;
        char q[2] = {c, 0};
        tm_gtext_puts(x->out, q);
    } else if (c == '{') {
        x->i++;
        int lo = -1, hi = -1;
        int rc = read_count(x, &lo);
        if (rc) return rc;
        if (x->i < x->n && x->s[x->i] == ',') {
            x->i++;
            if ((rc = read_count(x, &hi))) return rc;
        } else {
            hi = lo;
        }
        if (x->i >= x->n || x->s[x->i] != '}' || (lo < 0 && hi < 0)) {
            x->i = at; /* not a repetition: '{' is a literal */
            return *none = 1, 0;
        }
        x->i++;
        if (lo < 0) lo = 0;
        if (hi >= 0 && hi < lo) return malformed(x, "repetition {m,n} with n < m");
        if (hi < 0) tm_gtext_printf(x->out, "{%d,}", lo);
        else tm_gtext_printf(x->out, "{%d,%d}", lo, hi);
    } else {
        return *none = 1, 0;
    }
    if (x->i < x->n && x->s[x->i] == '?') x->i++; /* lazy: the same strings */
    else if (x->i < x->n && x->s[x->i] == '+') return unsupported(x, "possessive quantifier");
    if (x->i < x->n && (x->s[x->i] == '*' || x->s[x->i] == '+' || x->s[x->i] == '?'))
        return malformed(x, "multiple repeat");
    return 0;
}

/* One atom; *empty = 1 when it matched nothing (an anchor) and takes no quantifier. */
static int parse_atom(rx *x, int at_start, int *empty) {
    *empty = 0;
    char c = x->s[x->i];
    tm_gtext *out = x->out;
    if (c == '(') {
        x->i++;
        if (x->i < x->n && x->s[x->i] == '?') {
            const char *p = x->s + x->i + 1;
            size_t left = x->n - x->i - 1;
            if (left >= 1 && p[0] == ':') x->i += 2;
            else if (left >= 2 && p[0] == 'P' && p[1] == '<') {
                const char *e = memchr(p, '>', left);
                if (!e) return malformed(x, "unterminated group name");
                x->i = (size_t)(e - x->s) + 1;
            } else if (left >= 2 && p[0] == '<' && p[1] != '=' && p[1] != '!') {
                const char *e = memchr(p, '>', left);
                if (!e) return malformed(x, "unterminated group name");
                x->i = (size_t)(e - x->s) + 1;
            } else if (left >= 1 && (p[0] == '=' || p[0] == '!' || p[0] == '<')) {
                return unsupported(x, "lookaround");
            } else if (left >= 2 && p[0] == 'P' && p[1] == '=') {
                return unsupported(x, "backreference");
            } else if (left >= 1 && p[0] == '(') {
                return unsupported(x, "conditional group");
            } else if (left >= 1 && p[0] == '#') {
                const char *e = memchr(p, ')', left);
                if (!e) return malformed(x, "unterminated comment");
                x->i = (size_t)(e - x->s) + 1;
                return *empty = 1, 0;
            } else {
                return unsupported(x, "inline flags");
            }
        }
        if (++x->depth > TM_REGEX_MAX_DEPTH) return unsupported(x, "groups nested over 100 deep");
        tm_gtext_puts(out, "(");
        int rc = parse_alt(x);
        if (rc) return rc;
        if (x->i >= x->n || x->s[x->i] != ')') return malformed(x, "missing )");
        x->i++;
        x->depth--;
        tm_gtext_puts(out, ")");
        return 0;
    }
    if (c == '[') {
        x->i++;
        tm_cset set = {0};
        int rc = parse_class(x, &set);
        if (!rc && set.n == 0) rc = unsupported(x, "a character class that matches nothing");
        if (!rc) tm_gbnf_json_set(out, &set, x->json);
        tm_cset_free(&set);
        return rc;
    }
    if (c == '.') {
        x->i++;
        tm_cset set = {0};
        tm_cset_add(&set, '\n', '\n');
        tm_cset_negate(&set);
        tm_gbnf_json_set(out, &set, x->json);
        tm_cset_free(&set);
        return 0;
    }
    if (c == '^' || c == '$') {
        /* ^ opening an alternative at the top, $ closing one: full-match anchors. */
        int ok = x->depth == 0 && (c == '^' ? at_start
                                            : x->i + 1 == x->n || x->s[x->i + 1] == '|');
        if (!ok) return unsupported(x, "anchor inside the pattern");
        x->i++;
        return *empty = 1, 0;
    }
    if (c == '*' || c == '+' || c == '?') return malformed(x, "nothing to repeat");
    if (c == ')') return malformed(x, "unbalanced )");
    uint32_t cp;
    int rc;
    if (c == '\\') {
        x->i++;
        if (x->i < x->n && (x->s[x->i] == 'A' || x->s[x->i] == 'Z' || x->s[x->i] == 'z')) {
            char k = x->s[x->i];
            int ok = x->depth == 0 && (k == 'A' ? at_start : x->i + 1 == x->n || x->s[x->i + 1] == '|');
            if (!ok) return unsupported(x, "anchor inside the pattern");
            x->i++;
            return *empty = 1, 0;
        }
        tm_cset set = {0};
        int is_set;
        rc = escape(x, 0, &cp, &set, &is_set);
        if (!rc && is_set) tm_gbnf_json_set(out, &set, x->json);
        tm_cset_free(&set);
        if (rc || is_set) return rc;
    } else if ((rc = literal_char(x, &cp))) {
        return rc;
    }
    put_char(out, cp, x->json);
    return 0;
}

static int parse_seq(rx *x) {
    size_t n_items = 0;
    int at_start = 1;
    tm_gtext_puts(x->out, "(");
    while (x->i < x->n && x->s[x->i] != '|' && x->s[x->i] != ')') {
        tm_gtext_puts(x->out, " ");
        int empty, none, rc = parse_atom(x, at_start, &empty);
        if (rc) return rc;
        at_start = 0;
        if (empty) continue;
        n_items++;
        /* a '{' that is no repetition is left for the next atom: a literal */
        if ((rc = parse_quant(x, &none))) return rc;
    }
    tm_gtext_puts(x->out, n_items ? " )" : " \"\" )");
    return 0;
}

static int parse_alt(rx *x) {
    for (;;) {
        int rc = parse_seq(x);
        if (rc) return rc;
        if (x->i < x->n && x->s[x->i] == '|') {
            x->i++;
            tm_gtext_puts(x->out, " | ");
            continue;
        }
        return 0;
    }
}

int tm_regex_to_gbnf(const char *re, size_t len, int json_string, tm_gtext *out, char *err,
                     size_t err_len) {
    rx x = {re, len, 0, json_string, 0, out, err, err_len};
    tm_gtext_puts(out, "(");
    int rc = parse_alt(&x);
    if (!rc && x.i < x.n) rc = malformed(&x, "unbalanced )");
    tm_gtext_puts(out, ")");
    if (!rc && out->oom) rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    return rc;
}

/* jinja_value.c - the arena, and values that behave as Python's do: equality, ordering,
 * truth, str() and repr(), json.dumps, float repr. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/jinja_internal.h"

/* ---- arena ---- */

typedef struct jblock {
    struct jblock *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} jblock;

void ja_init(jarena *a, size_t cap) {
    memset(a, 0, sizeof *a);
    a->cap = cap;
}

void ja_free(jarena *a) {
    for (jblock *b = a->head, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    a->head = NULL;
    a->used = 0;
}

void *ja_alloc(jarena *a, size_t n) {
    if (a->oom) return NULL;
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (n > a->cap || a->used > a->cap - n) {
        a->oom = 1;
        return NULL;
    }
    jblock *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = TM_MAX(n, (size_t)64 << 10);
        b = malloc(sizeof *b + cap);
        if (!b) {
            a->oom = 1;
            return NULL;
        }
        b->cap = cap;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    a->used += n;
    memset(p, 0, n);
    return p;
}

char *ja_strdup(jarena *a, const char *s, size_t n) {
    char *p = ja_alloc(a, n + 1);
    if (p) {
        if (n) memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

/* ---- constructors ---- */

jv jv_undef(const char *hint) { jv v = {.t = JV_UNDEF}; v.u.s.p = hint; v.u.s.n = hint ? strlen(hint) : 0; return v; }
jv jv_none(void) { jv v = {.t = JV_NONE}; return v; }
jv jv_bool(int b) { jv v = {.t = JV_BOOL}; v.u.i = b != 0; return v; }
jv jv_int(int64_t i) { jv v = {.t = JV_INT}; v.u.i = i; return v; }
jv jv_float(double f) { jv v = {.t = JV_FLOAT}; v.u.f = f; return v; }
jv jv_str(const char *p, size_t n) { jv v = {.t = JV_STR}; v.u.s.p = p; v.u.s.n = n; return v; }
jv jv_cstr(const char *s) { return jv_str(s, strlen(s)); }
jv jv_list(jlist *l, int tuple) { jv v = {.t = JV_LIST, .flags = tuple ? JVF_TUPLE : 0}; v.u.l = l; return v; }
jv jv_gen(jlist *l) { jv v = {.t = JV_LIST, .flags = JVF_GEN}; v.u.l = l; return v; }
jv jv_dict(jdict *d) { jv v = {.t = JV_DICT}; v.u.d = d; return v; }

jlist *jv_list_new(jctx *x, size_t n) {
    if (n > x->lim->max_memory_bytes / sizeof(jv)) {
        jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template made a list too large");
        return NULL;
    }
    jlist *l = ja_alloc(&x->arena, sizeof *l);
    jv *items = l ? ja_alloc(&x->arena, n * sizeof *items) : NULL;
    if (!items) {
        jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template used more than %zu bytes of memory",
                x->lim->max_memory_bytes);
        return NULL;
    }
    l->items = items;
    l->n = n;
    return l;
}

jdict *jv_dict_new(jctx *x, size_t cap) {
    jdict *d = ja_alloc(&x->arena, sizeof *d);
    if (d && cap) {
        d->keys = ja_alloc(&x->arena, cap * sizeof(jv));
        d->vals = ja_alloc(&x->arena, cap * sizeof(jv));
        d->cap = d->keys && d->vals ? cap : 0;
        if (!d->cap) d = NULL;
    }
    if (!d) jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template used more than %zu bytes of memory",
                    x->lim->max_memory_bytes);
    return d;
}

jv *jv_dict_get(jctx *x, const jdict *d, jv key) {
    if (x && jx_steps(x, d->n / 32)) return NULL;
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(&d->keys[i], &key)) return &d->vals[i];
    return NULL;
}

jv *jv_dict_get_str(const jdict *d, const char *k, size_t n) {
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].t == JV_STR && d->keys[i].u.s.n == n && !memcmp(d->keys[i].u.s.p, k, n))
            return &d->vals[i];
    return NULL;
}

int jv_dict_set(jctx *x, jdict *d, jv key, jv val) {
    jv *old = jv_dict_get(x, d, key);
    if (x->failed) return x->code;
    if (old) {
        *old = val;
        return 0;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 8;
        jv *k = ja_alloc(&x->arena, cap * sizeof *k), *v = ja_alloc(&x->arena, cap * sizeof *v);
        if (!k || !v)
            return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template used more than %zu bytes "
                           "of memory", x->lim->max_memory_bytes);
        if (d->n) {
            memcpy(k, d->keys, d->n * sizeof *k);
            memcpy(v, d->vals, d->n * sizeof *v);
        }
        d->keys = k, d->vals = v, d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n] = val;
    d->n++;
    return 0;
}

/* ---- UTF-8 and Python's whitespace ---- */

size_t jv_u8len(const char *p, const char *end) {
    size_t n = tm_utf8_char_len((const uint8_t *)p, (size_t)(end - p));
    return n ? n : 1;
}

size_t jv_u8count(const char *p, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)p[i] & 0xC0) != 0x80;
    return c;
}

static uint32_t decode(const char *p, size_t k) {
    if (k == 1) return (unsigned char)*p;
    uint32_t v = (unsigned char)*p & (0xFF >> (k + 1));
    for (size_t j = 1; j < k; j++) v = (v << 6) | ((unsigned char)p[j] & 0x3F);
    return v;
}

size_t jv_space_len(const char *p, const char *end) {
    unsigned char c = (unsigned char)*p;
    if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) ? 1 : 0;
    size_t k = tm_utf8_char_len((const uint8_t *)p, (size_t)(end - p));
    if (k < 2) return 0;
    uint32_t v = decode(p, k);
    int sp = v == 0x85 || v == 0xA0 || v == 0x1680 || (v >= 0x2000 && v <= 0x200A) ||
             v == 0x2028 || v == 0x2029 || v == 0x202F || v == 0x205F || v == 0x3000;
    return sp ? k : 0;
}

/* str.isprintable() for a non-ASCII code point (an approximation of the Unicode tables:
 * separators, format characters, private use and surrogates are not printable). */
static int printable(uint32_t v) {
    if (v <= 0xA0 || v == 0xAD) return 0;
    if ((v >= 0x600 && v <= 0x605) || v == 0x61C || v == 0x6DD || v == 0x70F || v == 0x180E)
        return 0;
    if (v == 0x1680 || (v >= 0x2000 && v <= 0x200F) || (v >= 0x2028 && v <= 0x202F) ||
        (v >= 0x205F && v <= 0x206F) || v == 0x3000)
        return 0;
    if ((v >= 0xD800 && v <= 0xF8FF) || v == 0xFEFF || (v >= 0xFFF9 && v <= 0xFFFB) ||
        (v >= 0xFFFE && v <= 0xFFFF))
        return 0;
    if (v >= 0xE0000) return 0;
    return 1;
}

/* ---- buffers ---- */

int jbuf_add(jctx *x, jbuf *b, const char *s, size_t n) {
    if (x->failed) return x->code;
    if (b->n + n > x->lim->max_output_bytes)
        return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template's output passed %zu bytes",
                       x->lim->max_output_bytes);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) return jx_fail(x, TM_JINJA_LIMIT, TM_ENOMEM, "out of memory");
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static int add_s(jctx *x, jbuf *b, const char *s) { return jbuf_add(x, b, s, strlen(s)); }

void jbuf_free(jbuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

int jbuf_take(jctx *x, jbuf *b, jv *out) {
    char *p = x->failed ? NULL : ja_strdup(&x->arena, b->p ? b->p : "", b->n);
    size_t n = b->n;
    jbuf_free(b);
    if (!p) {
        if (x->failed) return x->code;
        return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template used more than %zu bytes of "
                       "memory", x->lim->max_memory_bytes);
    }
    *out = jv_str(p, n);
    return 0;
}

/* ---- Python semantics ---- */

const char *jv_type_name(const jv *v) {
    switch (v->t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v->flags & JVF_GEN ? "generator" : v->flags & JVF_TUPLE ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_FUNC: return "builtin_function_or_method";
    case JV_MACRO: return "Macro";
    case JV_LOOP: return "LoopContext";
    default: return "object";
    }
}

int jv_truthy(const jv *v) {
    switch (v->t) {
    case JV_UNDEF:
    case JV_NONE: return 0;
    case JV_BOOL:
    case JV_INT: return v->u.i != 0;
    case JV_FLOAT: return v->u.f != 0.0;
    case JV_STR: return v->u.s.n != 0;
    case JV_LIST: return (v->flags & JVF_GEN) || v->u.l->n != 0;
    case JV_DICT: return v->u.d->n != 0;
    default: return 1;
    }
}

int jv_is_number(const jv *v) { return v->t == JV_BOOL || v->t == JV_INT || v->t == JV_FLOAT; }
double jv_num(const jv *v) { return v->t == JV_FLOAT ? v->u.f : (double)v->u.i; }

static int nesting_ok(int depth) { return depth < 4096; }

static int equal_at(const jv *a, const jv *b, int depth) {
    if (jv_is_number(a) && jv_is_number(b)) {
        if (a->t != JV_FLOAT && b->t != JV_FLOAT) return a->u.i == b->u.i;
        return jv_num(a) == jv_num(b);
    }
    if (a->t != b->t) return 0;
    switch (a->t) {
    case JV_UNDEF:
    case JV_NONE: return 1;
    case JV_STR: return a->u.s.n == b->u.s.n && !memcmp(a->u.s.p, b->u.s.p, a->u.s.n);
    case JV_LIST:
        if ((a->flags | b->flags) & JVF_GEN) return a->u.l == b->u.l;
        if ((a->flags & JVF_TUPLE) != (b->flags & JVF_TUPLE) || a->u.l->n != b->u.l->n) return 0;
        if (a->u.l == b->u.l) return 1;
        if (!nesting_ok(depth)) return 0;
        for (size_t i = 0; i < a->u.l->n; i++)
            if (!equal_at(&a->u.l->items[i], &b->u.l->items[i], depth + 1)) return 0;
        return 1;
    case JV_DICT: {
        const jdict *x = a->u.d, *y = b->u.d;
        if (x == y) return 1;
        if (x->n != y->n || !nesting_ok(depth)) return 0;
        for (size_t i = 0; i < x->n; i++) {
            const jv *w = NULL;
            for (size_t j = 0; j < y->n && !w; j++)
                if (equal_at(&x->keys[i], &y->keys[j], depth + 1)) w = &y->vals[j];
            if (!w || !equal_at(&x->vals[i], w, depth + 1)) return 0;
        }
        return 1;
    }
    case JV_FUNC: return a->u.b == b->u.b && a->u.i == b->u.i;
    default: return a->u.d == b->u.d; /* namespaces, macros, loops: identity */
    }
}

int jv_equal(const jv *a, const jv *b) { return equal_at(a, b, 0); }

static int compare_at(jctx *x, const jv *a, const jv *b, int *cmp, int depth) {
    if (jv_is_number(a) && jv_is_number(b)) {
        if (a->t != JV_FLOAT && b->t != JV_FLOAT) *cmp = (a->u.i > b->u.i) - (a->u.i < b->u.i);
        else *cmp = (jv_num(a) > jv_num(b)) - (jv_num(a) < jv_num(b));
        return 0;
    }
    if (a->t == JV_STR && b->t == JV_STR) {
        size_t n = TM_MIN(a->u.s.n, b->u.s.n);
        int c = n ? memcmp(a->u.s.p, b->u.s.p, n) : 0;
        *cmp = c ? (c > 0) - (c < 0) : (a->u.s.n > b->u.s.n) - (a->u.s.n < b->u.s.n);
        return 0;
    }
    if (a->t == JV_LIST && b->t == JV_LIST && a->flags == b->flags && !(a->flags & JVF_GEN) &&
        nesting_ok(depth)) {
        size_t n = TM_MIN(a->u.l->n, b->u.l->n);
        for (size_t i = 0; i < n; i++) {
            if (jv_equal(&a->u.l->items[i], &b->u.l->items[i])) continue;
            return compare_at(x, &a->u.l->items[i], &b->u.l->items[i], cmp, depth + 1);
        }
        *cmp = (a->u.l->n > b->u.l->n) - (a->u.l->n < b->u.l->n);
        return 0;
    }
    return JX_ERR(x, "'<' not supported between instances of '%s' and '%s'", jv_type_name(a),
                  jv_type_name(b));
}

int jv_compare(jctx *x, const jv *a, const jv *b, int *cmp) { return compare_at(x, a, b, cmp, 0); }

/* ---- float repr ---- */

size_t jv_float_repr(double f, char *buf) {
    if (isnan(f)) return (size_t)sprintf(buf, "nan");
    if (isinf(f)) return (size_t)sprintf(buf, f < 0 ? "-inf" : "inf");
    if (f == 0) return (size_t)sprintf(buf, signbit(f) ? "-0.0" : "0.0");
    char tmp[48];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f) break;
    }
    /* tmp: [-]d[.ddd]e(+|-)XX -> sign, digits, decimal exponent */
    const char *p = tmp;
    char digits[32];
    int nd = 0, neg = *p == '-';
    if (neg) p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int decpt = exp10 + 1;
    char *w = buf;
    if (neg) *w++ = '-';
    if (decpt <= -4 || decpt > 16) {
        *w++ = digits[0];
        if (nd > 1) {
            *w++ = '.';
            memcpy(w, digits + 1, (size_t)nd - 1), w += nd - 1;
        }
        w += sprintf(w, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    } else if (decpt <= 0) {
        *w++ = '0', *w++ = '.';
        for (int i = 0; i < -decpt; i++) *w++ = '0';
        memcpy(w, digits, (size_t)nd), w += nd;
    } else if (decpt >= nd) {
        memcpy(w, digits, (size_t)nd), w += nd;
        for (int i = nd; i < decpt; i++) *w++ = '0';
        *w++ = '.', *w++ = '0';
    } else {
        memcpy(w, digits, (size_t)decpt), w += decpt;
        *w++ = '.';
        memcpy(w, digits + decpt, (size_t)(nd - decpt)), w += nd - decpt;
    }
    *w = 0;
    return (size_t)(w - buf);
}

/* ---- str() and repr() ---- */

static int repr_at(jctx *x, jbuf *b, const jv *v, int depth);

static int str_repr(jctx *x, jbuf *b, const char *s, size_t n) {
    const char *end = s + n;
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    if (jbuf_add(x, b, &q, 1)) return x->code;
    for (const char *p = s; p < end;) {
        size_t k = jv_u8len(p, end);
        unsigned char c = (unsigned char)*p;
        char esc[16];
        const char *out = p;
        size_t len = k;
        if (c == (unsigned char)q || c == '\\') esc[0] = '\\', esc[1] = (char)c, out = esc, len = 2;
        else if (c == '\t') out = "\\t", len = 2;
        else if (c == '\n') out = "\\n", len = 2;
        else if (c == '\r') out = "\\r", len = 2;
        else if (c < 0x20 || c == 0x7f) len = (size_t)sprintf(esc, "\\x%02x", c), out = esc;
        else if (c >= 0x80) {
            uint32_t cp = k > 1 ? decode(p, k) : c;
            if (k == 1 || !printable(cp))
                len = (size_t)sprintf(esc, cp < 0x100 ? "\\x%02x" : cp < 0x10000 ? "\\u%04x" : "\\U%08x", cp),
                out = esc;
        }
        if (jbuf_add(x, b, out, len)) return x->code;
        p += k;
    }
    return jbuf_add(x, b, &q, 1);
}

static int seq_repr(jctx *x, jbuf *b, const jv *v, int depth, int as_str) {
    const jlist *l = v->u.l;
    int tuple = v->flags & JVF_TUPLE;
    if (add_s(x, b, tuple ? "(" : "[")) return x->code;
    for (size_t i = 0; i < l->n; i++) {
        if (i && add_s(x, b, ", ")) return x->code;
        if (repr_at(x, b, &l->items[i], depth + 1)) return x->code;
    }
    if (tuple && l->n == 1 && add_s(x, b, ",")) return x->code;
    (void)as_str;
    return add_s(x, b, tuple ? ")" : "]");
}

static int dict_repr(jctx *x, jbuf *b, const jdict *d, int depth) {
    if (add_s(x, b, "{")) return x->code;
    for (size_t i = 0; i < d->n; i++) {
        if (i && add_s(x, b, ", ")) return x->code;
        if (repr_at(x, b, &d->keys[i], depth + 1) || add_s(x, b, ": ") ||
            repr_at(x, b, &d->vals[i], depth + 1))
            return x->code;
    }
    return add_s(x, b, "}");
}

/* str() when as_str, else repr(). */
static int show(jctx *x, jbuf *b, const jv *v, int depth, int as_str) {
    char num[64];
    if (jx_steps(x, 1)) return x->code;
    if (!nesting_ok(depth))
        return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "a value nests too deeply to print");
    switch (v->t) {
    case JV_UNDEF: return as_str ? 0 : add_s(x, b, "Undefined");
    case JV_NONE: return add_s(x, b, "None");
    case JV_BOOL: return add_s(x, b, v->u.i ? "True" : "False");
    case JV_INT: return jbuf_add(x, b, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)v->u.i));
    case JV_FLOAT: return jbuf_add(x, b, num, jv_float_repr(v->u.f, num));
    case JV_STR:
        if (jx_steps(x, v->u.s.n / 64)) return x->code;
        return as_str ? jbuf_add(x, b, v->u.s.p, v->u.s.n) : str_repr(x, b, v->u.s.p, v->u.s.n);
    case JV_LIST:
        if (v->flags & JVF_GEN) return add_s(x, b, "<generator object>");
        return seq_repr(x, b, v, depth, as_str);
    case JV_DICT: return dict_repr(x, b, v->u.d, depth);
    case JV_NS:
        if (add_s(x, b, "<Namespace ") || dict_repr(x, b, v->u.d, depth)) return x->code;
        return add_s(x, b, ">");
    case JV_MACRO: return add_s(x, b, "<Macro>");
    case JV_LOOP: return add_s(x, b, "<LoopContext>");
    default: return add_s(x, b, "<built-in function>");
    }
}

static int repr_at(jctx *x, jbuf *b, const jv *v, int depth) { return show(x, b, v, depth, 0); }
int jv_str_to(jctx *x, jbuf *b, const jv *v) { return show(x, b, v, 0, 1); }
int jv_repr_to(jctx *x, jbuf *b, const jv *v) { return show(x, b, v, 0, 0); }

int jv_to_str(jctx *x, const jv *v, jv *out) {
    if (v->t == JV_STR) {
        *out = *v;
        return 0;
    }
    jbuf b = {0};
    if (jv_str_to(x, &b, v)) {
        jbuf_free(&b);
        return x->code;
    }
    return jbuf_take(x, &b, out);
}

/* ---- json.dumps ---- */

typedef struct jsonopt {
    int ascii;            /* ensure_ascii */
    const char *indent;   /* NULL: one line */
    const char *item_sep; /* ", " or "," */
    const char *key_sep;  /* ": " */
    int sort;             /* sort_keys */
} jsonopt;

static int json_str(jctx *x, jbuf *b, const char *s, size_t n, int ascii) {
    const char *end = s + n;
    if (jx_steps(x, n / 64) || add_s(x, b, "\"")) return x->code;
    for (const char *p = s; p < end;) {
        size_t k = jv_u8len(p, end);
        unsigned char c = (unsigned char)*p;
        char esc[16];
        const char *out = p;
        size_t len = k;
        switch (c) {
        case '"': out = "\\\"", len = 2; break;
        case '\\': out = "\\\\", len = 2; break;
        case '\n': out = "\\n", len = 2; break;
        case '\r': out = "\\r", len = 2; break;
        case '\t': out = "\\t", len = 2; break;
        case '\b': out = "\\b", len = 2; break;
        case '\f': out = "\\f", len = 2; break;
        default:
            if (c < 0x20 || (ascii && c == 0x7f)) {
                len = (size_t)sprintf(esc, "\\u%04x", c), out = esc;
            } else if (ascii && c >= 0x80) {
                uint32_t cp = k > 1 ? decode(p, k) : 0xFFFD;
                if (cp >= 0x10000) {
                    cp -= 0x10000;
                    len = (size_t)sprintf(esc, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
                } else {
                    len = (size_t)sprintf(esc, "\\u%04x", cp);
                }
                out = esc;
            }
        }
        if (jbuf_add(x, b, out, len)) return x->code;
        p += k;
    }
    return add_s(x, b, "\"");
}

static int json_newline(jctx *x, jbuf *b, const jsonopt *o, int level) {
    if (add_s(x, b, "\n")) return x->code;
    for (int i = 0; i < level; i++)
        if (add_s(x, b, o->indent)) return x->code;
    return 0;
}

static int json_at(jctx *x, jbuf *b, const jv *v, const jsonopt *o, int level);

/* A dict key as json.dumps writes it (str, or a number, bool or None turned into text). */
static int json_key(jctx *x, jbuf *b, const jv *k, const jsonopt *o) {
    char num[64];
    switch (k->t) {
    case JV_STR: return json_str(x, b, k->u.s.p, k->u.s.n, o->ascii);
    case JV_NONE: return add_s(x, b, "\"null\"");
    case JV_BOOL: return add_s(x, b, k->u.i ? "\"true\"" : "\"false\"");
    case JV_INT: snprintf(num, sizeof num, "\"%lld\"", (long long)k->u.i); return add_s(x, b, num);
    case JV_FLOAT: {
        char f[40];
        jv_float_repr(k->u.f, f);
        snprintf(num, sizeof num, "\"%s\"", f);
        return add_s(x, b, num);
    }
    default:
        return JX_ERR(x, "keys must be str, int, float, bool or None, not %s", jv_type_name(k));
    }
}

static int json_dict(jctx *x, jbuf *b, const jdict *d, const jsonopt *o, int level) {
    if (d->n == 0) return add_s(x, b, "{}");
    size_t *order = ja_alloc(&x->arena, d->n * sizeof *order);
    if (!order) return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "out of template memory");
    for (size_t i = 0; i < d->n; i++) order[i] = i;
    if (o->sort) { /* insertion sort: stable, and dicts in templates are small */
        if (jx_steps(x, d->n * d->n / 64)) return x->code;
        for (size_t i = 1; i < d->n; i++) {
            size_t k = order[i], j = i;
            for (; j > 0; j--) {
                int c = 0;
                if (jv_compare(x, &d->keys[order[j - 1]], &d->keys[k], &c)) return x->code;
                if (c <= 0) break;
                order[j] = order[j - 1];
            }
            order[j] = k;
        }
    }
    if (add_s(x, b, "{")) return x->code;
    for (size_t i = 0; i < d->n; i++) {
        if (i && add_s(x, b, o->item_sep)) return x->code;
        if (o->indent && json_newline(x, b, o, level + 1)) return x->code;
        if (json_key(x, b, &d->keys[order[i]], o) || add_s(x, b, o->key_sep) ||
            json_at(x, b, &d->vals[order[i]], o, level + 1))
            return x->code;
    }
    if (o->indent && json_newline(x, b, o, level)) return x->code;
    return add_s(x, b, "}");
}

static int json_at(jctx *x, jbuf *b, const jv *v, const jsonopt *o, int level) {
    char num[64];
    if (jx_steps(x, 1)) return x->code;
    if (!nesting_ok(level)) return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "a value nests too deeply");
    switch (v->t) {
    case JV_NONE: return add_s(x, b, "null");
    case JV_BOOL: return add_s(x, b, v->u.i ? "true" : "false");
    case JV_INT: snprintf(num, sizeof num, "%lld", (long long)v->u.i); return add_s(x, b, num);
    case JV_FLOAT:
        if (isnan(v->u.f)) return add_s(x, b, "NaN");
        if (isinf(v->u.f)) return add_s(x, b, v->u.f < 0 ? "-Infinity" : "Infinity");
        return jbuf_add(x, b, num, jv_float_repr(v->u.f, num));
    case JV_STR: return json_str(x, b, v->u.s.p, v->u.s.n, o->ascii);
    case JV_LIST: {
        const jlist *l = v->u.l;
        if (v->flags & JVF_GEN) return JX_ERR(x, "Object of type generator is not JSON serializable");
        if (l->n == 0) return add_s(x, b, "[]");
        if (add_s(x, b, "[")) return x->code;
        for (size_t i = 0; i < l->n; i++) {
            if (i && add_s(x, b, o->item_sep)) return x->code;
            if (o->indent && json_newline(x, b, o, level + 1)) return x->code;
            if (json_at(x, b, &l->items[i], o, level + 1)) return x->code;
        }
        if (o->indent && json_newline(x, b, o, level)) return x->code;
        return add_s(x, b, "]");
    }
    case JV_DICT: return json_dict(x, b, v->u.d, o, level);
    default:
        return JX_ERR(x, "Object of type %s is not JSON serializable", jv_type_name(v));
    }
}

int jv_json_to(jctx *x, jbuf *b, const jv *v, int ensure_ascii, int indent, const char *item_sep,
               const char *key_sep, int sort_keys) {
    char spaces[64];
    jsonopt o = {.ascii = ensure_ascii, .sort = sort_keys};
    if (indent >= 0) {
        int n = TM_MIN(indent, (int)sizeof spaces - 1);
        memset(spaces, ' ', (size_t)n);
        spaces[n] = 0;
        o.indent = spaces;
    }
    o.item_sep = item_sep ? item_sep : indent >= 0 ? "," : ", ";
    o.key_sep = key_sep ? key_sep : ": ";
    return json_at(x, b, v, &o, 0);
}

/* ---- from JSON ---- */

int jv_from_json(jctx *x, const json_t *j, jv *out, int depth) {
    if (jx_steps(x, 1)) return x->code;
    if (!nesting_ok(depth)) return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the variables nest too deeply");
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        jdict *d = jv_dict_new(x, json_object_size(j));
        if (!d) return x->code;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            jv val;
            if (jv_from_json(x, v, &val, depth + 1)) return x->code;
            /* keys are unique in a jansson object: append without a lookup */
            d->keys[d->n] = jv_str(k, strlen(k));
            d->vals[d->n++] = val;
        }
        *out = jv_dict(d);
        return 0;
    }
    case JSON_ARRAY: {
        jlist *l = jv_list_new(x, json_array_size(j));
        if (!l) return x->code;
        for (size_t i = 0; i < l->n; i++)
            if (jv_from_json(x, json_array_get(j, i), &l->items[i], depth + 1)) return x->code;
        *out = jv_list(l, 0);
        return 0;
    }
    case JSON_STRING: *out = jv_str(json_string_value(j), json_string_length(j)); return 0;
    case JSON_INTEGER: *out = jv_int(json_integer_value(j)); return 0;
    case JSON_REAL: *out = jv_float(json_real_value(j)); return 0;
    case JSON_TRUE: *out = jv_bool(1); return 0;
    case JSON_FALSE: *out = jv_bool(0); return 0;
    default: *out = jv_none(); return 0;
    }
}

#define _GNU_SOURCE /* memmem */
/* jinja_builtins.c - filters, tests, global functions and the str / dict / list methods
 * that chat templates call, with the behaviour of jinja2 3.1 and Python 3 (as Hugging Face
 * transformers configures them: tojson is json.dumps with ensure_ascii off; the sandbox
 * refuses methods that mutate; range() is capped at 100000 items).
 *
 * Known differences: upper/lower/title/capitalize change ASCII letters only; the
 * filters batch-less jinja2 filters (format, truncate, wordwrap, urlize, groupby, slice,
 * random, pprint, striptags, xmlattr, filesizeformat, urlencode) are absent, so a
 * template naming one fails to parse with "no filter named". */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/jinja_internal.h"

enum {
    /* filters */
    F_ABS = 1, F_ATTR, F_BATCH, F_CAPITALIZE, F_CENTER, F_COUNT, F_DEFAULT, F_DICTSORT,
    F_ESCAPE, F_FIRST, F_FLOAT, F_INDENT, F_INT, F_ITEMS, F_JOIN, F_LAST, F_LIST, F_LOWER,
    F_MAP, F_MAX, F_MIN, F_REJECT, F_REJECTATTR, F_REPLACE, F_REVERSE, F_ROUND, F_SAFE,
    F_SELECT, F_SELECTATTR, F_SORT, F_STRING, F_SUM, F_TITLE, F_TOJSON, F_TRIM, F_UNIQUE,
    F_UPPER, F_WORDCOUNT,
    /* tests */
    T_BOOLEAN = 100, T_CALLABLE, T_DEFINED, T_DIVISIBLEBY, T_EQ, T_ESCAPED, T_EVEN, T_FALSE,
    T_FILTER, T_FLOAT, T_GE, T_GT, T_IN, T_INTEGER, T_ITERABLE, T_LE, T_LOWER, T_LT,
    T_MAPPING, T_NE, T_NONE, T_NUMBER, T_ODD, T_SAMEAS, T_SEQUENCE, T_STRING, T_TEST, T_TRUE,
    T_UNDEFINED, T_UPPER,
    /* global functions */
    G_RANGE = 200, G_NAMESPACE, G_DICT, G_RAISE, G_STRFTIME,
    /* methods */
    M_STRIP = 300, M_LSTRIP, M_RSTRIP, M_SPLIT, M_RSPLIT, M_SPLITLINES, M_STARTSWITH,
    M_ENDSWITH, M_UPPER, M_LOWER, M_TITLE, M_CAPITALIZE, M_REPLACE, M_FIND, M_RFIND, M_COUNT,
    M_JOIN, M_ISDIGIT, M_ISALPHA, M_ISALNUM, M_ISSPACE, M_ISLOWER, M_ISUPPER,
    M_REMOVEPREFIX, M_REMOVESUFFIX, M_ITEMS, M_KEYS, M_VALUES, M_GET, M_INDEX, M_CYCLE,
};

static const struct {
    const char *name;
    int kind, id;
} k_names[] = {
    {"abs", JB_KIND_FILTER, F_ABS}, {"attr", JB_KIND_FILTER, F_ATTR},
    {"batch", JB_KIND_FILTER, F_BATCH}, {"capitalize", JB_KIND_FILTER, F_CAPITALIZE},
    {"center", JB_KIND_FILTER, F_CENTER}, {"count", JB_KIND_FILTER, F_COUNT},
    {"d", JB_KIND_FILTER, F_DEFAULT}, {"default", JB_KIND_FILTER, F_DEFAULT},
    {"dictsort", JB_KIND_FILTER, F_DICTSORT}, {"e", JB_KIND_FILTER, F_ESCAPE},
    {"escape", JB_KIND_FILTER, F_ESCAPE}, {"first", JB_KIND_FILTER, F_FIRST},
    {"float", JB_KIND_FILTER, F_FLOAT}, {"indent", JB_KIND_FILTER, F_INDENT},
    {"int", JB_KIND_FILTER, F_INT}, {"items", JB_KIND_FILTER, F_ITEMS},
    {"join", JB_KIND_FILTER, F_JOIN}, {"last", JB_KIND_FILTER, F_LAST},
    {"length", JB_KIND_FILTER, F_COUNT}, {"list", JB_KIND_FILTER, F_LIST},
    {"lower", JB_KIND_FILTER, F_LOWER}, {"map", JB_KIND_FILTER, F_MAP},
    {"max", JB_KIND_FILTER, F_MAX}, {"min", JB_KIND_FILTER, F_MIN},
    {"reject", JB_KIND_FILTER, F_REJECT}, {"rejectattr", JB_KIND_FILTER, F_REJECTATTR},
    {"replace", JB_KIND_FILTER, F_REPLACE}, {"reverse", JB_KIND_FILTER, F_REVERSE},
    {"round", JB_KIND_FILTER, F_ROUND}, {"safe", JB_KIND_FILTER, F_SAFE},
    {"select", JB_KIND_FILTER, F_SELECT}, {"selectattr", JB_KIND_FILTER, F_SELECTATTR},
    {"sort", JB_KIND_FILTER, F_SORT}, {"string", JB_KIND_FILTER, F_STRING},
    {"sum", JB_KIND_FILTER, F_SUM}, {"title", JB_KIND_FILTER, F_TITLE},
    {"tojson", JB_KIND_FILTER, F_TOJSON}, {"trim", JB_KIND_FILTER, F_TRIM},
    {"unique", JB_KIND_FILTER, F_UNIQUE}, {"upper", JB_KIND_FILTER, F_UPPER},
    {"wordcount", JB_KIND_FILTER, F_WORDCOUNT},
    {"boolean", JB_KIND_TEST, T_BOOLEAN}, {"callable", JB_KIND_TEST, T_CALLABLE},
    {"defined", JB_KIND_TEST, T_DEFINED}, {"divisibleby", JB_KIND_TEST, T_DIVISIBLEBY},
    {"eq", JB_KIND_TEST, T_EQ}, {"equalto", JB_KIND_TEST, T_EQ}, {"==", JB_KIND_TEST, T_EQ},
    {"escaped", JB_KIND_TEST, T_ESCAPED}, {"even", JB_KIND_TEST, T_EVEN},
    {"false", JB_KIND_TEST, T_FALSE}, {"filter", JB_KIND_TEST, T_FILTER},
    {"float", JB_KIND_TEST, T_FLOAT}, {"ge", JB_KIND_TEST, T_GE}, {">=", JB_KIND_TEST, T_GE},
    {"gt", JB_KIND_TEST, T_GT}, {"greaterthan", JB_KIND_TEST, T_GT}, {">", JB_KIND_TEST, T_GT},
    {"in", JB_KIND_TEST, T_IN}, {"integer", JB_KIND_TEST, T_INTEGER},
    {"iterable", JB_KIND_TEST, T_ITERABLE}, {"le", JB_KIND_TEST, T_LE}, {"<=", JB_KIND_TEST, T_LE},
    {"lower", JB_KIND_TEST, T_LOWER}, {"lt", JB_KIND_TEST, T_LT},
    {"lessthan", JB_KIND_TEST, T_LT}, {"<", JB_KIND_TEST, T_LT},
    {"mapping", JB_KIND_TEST, T_MAPPING}, {"ne", JB_KIND_TEST, T_NE}, {"!=", JB_KIND_TEST, T_NE},
    {"none", JB_KIND_TEST, T_NONE}, {"number", JB_KIND_TEST, T_NUMBER},
    {"odd", JB_KIND_TEST, T_ODD}, {"sameas", JB_KIND_TEST, T_SAMEAS},
    {"sequence", JB_KIND_TEST, T_SEQUENCE}, {"string", JB_KIND_TEST, T_STRING},
    {"test", JB_KIND_TEST, T_TEST}, {"true", JB_KIND_TEST, T_TRUE},
    {"undefined", JB_KIND_TEST, T_UNDEFINED}, {"upper", JB_KIND_TEST, T_UPPER},
};

int jb_lookup(int kind, const char *name, size_t n) {
    for (size_t i = 0; i < TM_ARRAY_LEN(k_names); i++)
        if (k_names[i].kind == kind && strlen(k_names[i].name) == n && !memcmp(k_names[i].name, name, n))
            return k_names[i].id;
    return -1;
}

/* Functions are values pointing at a jbound; globals are bound to nothing. */
static const jbound k_globals[] = {
    {{.t = JV_UNDEF}, G_RANGE}, {{.t = JV_UNDEF}, G_NAMESPACE}, {{.t = JV_UNDEF}, G_DICT},
    {{.t = JV_UNDEF}, G_RAISE}, {{.t = JV_UNDEF}, G_STRFTIME},
};
static const char *const k_global_names[] = {"range", "namespace", "dict", "raise_exception",
                                             "strftime_now"};

static jv func(const jbound *b) {
    jv v = {.t = JV_FUNC};
    v.u.b = (jbound *)b;
    return v;
}

int jb_global(const char *name, size_t n, jv *out) {
    for (size_t i = 0; i < TM_ARRAY_LEN(k_globals); i++)
        if (strlen(k_global_names[i]) == n && !memcmp(k_global_names[i], name, n)) {
            *out = func(&k_globals[i]);
            return 1;
        }
    return 0;
}

static const struct {
    const char *name;
    int id;
} k_str_methods[] = {
    {"strip", M_STRIP}, {"lstrip", M_LSTRIP}, {"rstrip", M_RSTRIP}, {"split", M_SPLIT},
    {"rsplit", M_RSPLIT}, {"splitlines", M_SPLITLINES}, {"startswith", M_STARTSWITH},
    {"endswith", M_ENDSWITH}, {"upper", M_UPPER}, {"lower", M_LOWER}, {"title", M_TITLE},
    {"capitalize", M_CAPITALIZE}, {"replace", M_REPLACE}, {"find", M_FIND}, {"rfind", M_RFIND},
    {"count", M_COUNT}, {"join", M_JOIN}, {"isdigit", M_ISDIGIT}, {"isalpha", M_ISALPHA},
    {"isalnum", M_ISALNUM}, {"isspace", M_ISSPACE}, {"islower", M_ISLOWER},
    {"isupper", M_ISUPPER}, {"removeprefix", M_REMOVEPREFIX}, {"removesuffix", M_REMOVESUFFIX},
    {"index", M_FIND},
}, k_dict_methods[] = {
    {"items", M_ITEMS}, {"keys", M_KEYS}, {"values", M_VALUES}, {"get", M_GET},
}, k_list_methods[] = {
    {"index", M_INDEX}, {"count", M_COUNT},
};
static const char *const k_unsafe_list[] = {"append", "extend", "insert", "pop", "remove",
                                            "reverse", "sort", "clear"};
static const char *const k_unsafe_dict[] = {"pop", "popitem", "setdefault", "update", "clear"};

#define NAME_IS(s, n, lit) ((n) == strlen(lit) && !memcmp((s), (lit), (n)))

static int bind_method(jctx *x, const jv *self, int id, jv *out) {
    jbound *b = ja_alloc(&x->arena, sizeof *b);
    if (!b) {
        jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template used too much memory");
        return 1;
    }
    b->self = *self;
    b->id = id;
    *out = func(b);
    return 1;
}

static int unsafe(jctx *x, const char *attr, size_t n, const char *type, jv *out) {
    char buf[160];
    snprintf(buf, sizeof buf, "access to attribute '%.*s' of '%s' object is unsafe.", (int)n, attr, type);
    char *s = ja_strdup(&x->arena, buf, strlen(buf));
    *out = jv_undef(s ? s : "unsafe attribute");
    return 1;
}

int jb_method(jctx *x, const jv *v, const char *attr, size_t n, jv *out) {
    if (n >= 2 && attr[0] == '_' && attr[1] == '_') /* the sandbox hides dunder attributes */
        return unsafe(x, attr, n, jv_type_name(v), out);
    if (v->t == JV_STR) {
        for (size_t i = 0; i < TM_ARRAY_LEN(k_str_methods); i++)
            if (NAME_IS(attr, n, k_str_methods[i].name)) return bind_method(x, v, k_str_methods[i].id, out);
    } else if (v->t == JV_DICT) {
        for (size_t i = 0; i < TM_ARRAY_LEN(k_dict_methods); i++)
            if (NAME_IS(attr, n, k_dict_methods[i].name)) return bind_method(x, v, k_dict_methods[i].id, out);
        for (size_t i = 0; i < TM_ARRAY_LEN(k_unsafe_dict); i++)
            if (NAME_IS(attr, n, k_unsafe_dict[i])) return unsafe(x, attr, n, "dict", out);
    } else if (v->t == JV_LIST) {
        for (size_t i = 0; i < TM_ARRAY_LEN(k_list_methods); i++)
            if (NAME_IS(attr, n, k_list_methods[i].name)) return bind_method(x, v, k_list_methods[i].id, out);
        for (size_t i = 0; i < TM_ARRAY_LEN(k_unsafe_list); i++)
            if (NAME_IS(attr, n, k_unsafe_list[i]) && !(v->flags & JVF_TUPLE))
                return unsafe(x, attr, n, "list", out);
    } else if (v->t == JV_LOOP) {
        if (NAME_IS(attr, n, "cycle")) return bind_method(x, v, M_CYCLE, out);
    }
    return 0;
}

/* ---- arguments ---- */

/* Binds args to params (names, in order): out[i] is the value or NULL. Fails on too many
 * positional arguments or an unknown keyword, as Python would. */
static int bind(jctx *x, const char *fname, const jargs *a, const char *const *params, int n,
                const jv **out) {
    if (a->n_pos > n)
        return JX_ERR(x, "%s() takes at most %d argument(s) (%d given)", fname, n, a->n_pos);
    for (int i = 0; i < n; i++) out[i] = i < a->n_pos ? &a->pos[i] : NULL;
    for (int k = 0; k < a->n_kw; k++) {
        int i = 0;
        while (i < n && !NAME_IS(a->kw[k], a->kw_len[k], params[i])) i++;
        if (i == n)
            return JX_ERR(x, "%s() got an unexpected keyword argument '%.*s'", fname,
                          (int)a->kw_len[k], a->kw[k]);
        out[i] = &a->kw_val[k];
    }
    return 0;
}

static int want_str(jctx *x, const jv *v, const char *what) {
    if (v->t != JV_STR) return JX_ERR(x, "%s must be a string, not %s", what, jv_type_name(v));
    return 0;
}

static int want_int(jctx *x, const jv *v, const char *what, int64_t *out) {
    if (v->t != JV_INT && v->t != JV_BOOL)
        return JX_ERR(x, "%s must be an integer, not %s", what, jv_type_name(v));
    *out = v->u.i;
    return 0;
}

static int mem(jctx *x) {
    return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template used more than %zu bytes of memory",
                   x->lim->max_memory_bytes);
}

static int newstr(jctx *x, size_t n, char **p) {
    if (n > x->lim->max_output_bytes)
        return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template made a string too large");
    if (jx_steps(x, n / 64)) return x->code;
    *p = ja_alloc(&x->arena, n + 1);
    return *p ? 0 : mem(x);
}

/* ---- string helpers (Python semantics, code points) ---- */

static int in_chars(const char *p, size_t k, const jv *chars) {
    const char *c = chars->u.s.p, *end = c + chars->u.s.n;
    while (c < end) {
        size_t m = jv_u8len(c, end);
        if (m == k && !memcmp(c, p, k)) return 1;
        c += m;
    }
    return 0;
}

/* str.strip / lstrip / rstrip with chars NULL (whitespace) or a string. */
static int do_strip(jctx *x, const jv *s, const jv *chars, int left, int right, jv *out) {
    if (chars && chars->t == JV_NONE) chars = NULL;
    if (chars && want_str(x, chars, "strip argument")) return x->code;
    const char *p = s->u.s.p, *e = p + s->u.s.n;
    if (jx_steps(x, s->u.s.n / 64)) return x->code;
    if (left) {
        while (p < e) {
            size_t k = chars ? jv_u8len(p, e) : jv_space_len(p, e);
            if (!k || (chars && !in_chars(p, k, chars))) break;
            p += k;
        }
    }
    if (right) {
        const char *keep = p;
        for (const char *q = p; q < e;) {
            size_t k = jv_u8len(q, e);
            int strip = chars ? in_chars(q, k, chars) : jv_space_len(q, e) == k;
            q += k;
            if (!strip) keep = q;
        }
        e = keep;
    }
    *out = jv_str(p, (size_t)(e - p));
    return 0;
}

typedef enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAPITALIZE } case_mode;

static int do_case(jctx *x, const jv *s, case_mode m, jv *out) {
    char *w = NULL;
    if (newstr(x, s->u.s.n, &w)) return x->code;
    int prev_cased = 0;
    for (size_t i = 0; i < s->u.s.n; i++) {
        unsigned char c = (unsigned char)s->u.s.p[i];
        int up;
        switch (m) {
        case CASE_UPPER: up = 1; break;
        case CASE_LOWER: up = 0; break;
        case CASE_TITLE: up = !prev_cased; break;
        default: up = i == 0; break;
        }
        w[i] = c < 0x80 ? (char)(up ? toupper(c) : tolower(c)) : (char)c;
        prev_cased = c < 0x80 ? isalpha(c) != 0 : (c & 0xC0) == 0x80 ? prev_cased : 1;
    }
    *out = jv_str(w, s->u.s.n);
    return 0;
}

static const char *find_bytes(const char *h, size_t hn, const char *n, size_t nn) {
    if (nn == 0) return h;
    if (nn > hn) return NULL;
    return memmem(h, hn, n, nn);
}

static const char *rfind_bytes(const char *h, size_t hn, const char *n, size_t nn) {
    if (nn > hn) return NULL;
    for (size_t i = hn - nn + 1; i-- > 0;)
        if (!memcmp(h + i, n, nn)) return h + i;
    return NULL;
}

static int push_item(jctx *x, jlist **l, size_t *cap, jv v) {
    if ((*l)->n == *cap) {
        size_t c = *cap ? 2 * *cap : 8;
        jlist *m = jv_list_new(x, c);
        if (!m) return x->code;
        memcpy(m->items, (*l)->items, (*l)->n * sizeof(jv));
        m->n = (*l)->n;
        *l = m;
        *cap = c;
    }
    (*l)->items[(*l)->n++] = v;
    return 0;
}

/* str.split(sep, maxsplit) / rsplit. */
static int do_split(jctx *x, const jv *s, const jv *sep, const jv *maxv, int from_right, jv *out) {
    int64_t max = -1;
    if (sep && sep->t == JV_NONE) sep = NULL;
    if (sep && want_str(x, sep, "separator")) return x->code;
    if (sep && sep->u.s.n == 0) return JX_ERR(x, "empty separator");
    if (maxv && want_int(x, maxv, "maxsplit", &max)) return x->code;
    if (jx_steps(x, s->u.s.n / 32)) return x->code;
    jlist *l = jv_list_new(x, 0);
    size_t cap = 0;
    if (!l) return x->code;
    const char *p = s->u.s.p, *e = p + s->u.s.n;
    if (!from_right) {
        if (!sep) {
            for (;;) {
                while (p < e && jv_space_len(p, e)) p += jv_space_len(p, e);
                if (p >= e) break;
                const char *q = p;
                if (max >= 0 && (int64_t)l->n >= max) {
                    /* the rest, with trailing whitespace removed */
                    jv rest;
                    if (do_strip(x, &(jv){.t = JV_STR, .u.s = {p, (size_t)(e - p)}}, NULL, 0, 1, &rest) ||
                        push_item(x, &l, &cap, rest))
                        return x->code;
                    break;
                }
                while (q < e && !jv_space_len(q, e)) q += jv_u8len(q, e);
                if (push_item(x, &l, &cap, jv_str(p, (size_t)(q - p)))) return x->code;
                p = q;
            }
        } else {
            for (;;) {
                const char *q = (max < 0 || (int64_t)l->n < max)
                                    ? find_bytes(p, (size_t)(e - p), sep->u.s.p, sep->u.s.n) : NULL;
                if (!q) {
                    if (push_item(x, &l, &cap, jv_str(p, (size_t)(e - p)))) return x->code;
                    break;
                }
                if (push_item(x, &l, &cap, jv_str(p, (size_t)(q - p)))) return x->code;
                p = q + sep->u.s.n;
            }
        }
    } else {
        /* collect from the right, then reverse */
        if (!sep) {
            for (;;) {
                while (e > p && jv_space_len(e - 1, e)) e--;
                if (e <= p) break;
                if (max >= 0 && (int64_t)l->n >= max) {
                    const char *q = p;
                    while (q < e && jv_space_len(q, e)) q += jv_space_len(q, e);
                    if (push_item(x, &l, &cap, jv_str(q, (size_t)(e - q)))) return x->code;
                    break;
                }
                const char *q = e;
                while (q > p && !jv_space_len(q - 1, e)) q--;
                if (push_item(x, &l, &cap, jv_str(q, (size_t)(e - q)))) return x->code;
                e = q;
            }
        } else {
            for (;;) {
                const char *q = (max < 0 || (int64_t)l->n < max)
                                    ? rfind_bytes(p, (size_t)(e - p), sep->u.s.p, sep->u.s.n) : NULL;
                if (!q) {
                    if (push_item(x, &l, &cap, jv_str(p, (size_t)(e - p)))) return x->code;
                    break;
                }
                if (push_item(x, &l, &cap, jv_str(q + sep->u.s.n, (size_t)(e - q - sep->u.s.n))))
                    return x->code;
                e = q;
            }
        }
        for (size_t i = 0; i < l->n / 2; i++) {
            jv t = l->items[i];
            l->items[i] = l->items[l->n - 1 - i];
            l->items[l->n - 1 - i] = t;
        }
    }
    *out = jv_list(l, 0);
    return 0;
}

/* Python's str.splitlines line boundaries: the length of the one at p, or 0. */
static size_t line_break(const char *p, const char *e) {
    unsigned char c = (unsigned char)*p;
    if (c == '\r') return p + 1 < e && p[1] == '\n' ? 2 : 1;
    if (c == '\n' || c == '\v' || c == '\f' || (c >= 0x1C && c <= 0x1E)) return 1;
    if (e - p >= 2 && !memcmp(p, "\xC2\x85", 2)) return 2;
    if (e - p >= 3 && (!memcmp(p, "\xE2\x80\xA8", 3) || !memcmp(p, "\xE2\x80\xA9", 3))) return 3;
    return 0;
}

static int do_splitlines(jctx *x, const char *p, size_t n, int keepends, jlist **out) {
    jlist *l = jv_list_new(x, 0);
    size_t cap = 0;
    if (!l || jx_steps(x, n / 32)) return x->code;
    const char *e = p + n, *start = p;
    while (p < e) {
        size_t k = line_break(p, e);
        if (!k) {
            p += jv_u8len(p, e);
            continue;
        }
        if (push_item(x, &l, &cap, jv_str(start, (size_t)(p - start) + (keepends ? k : 0)))) return x->code;
        p += k;
        start = p;
    }
    if (start < e && push_item(x, &l, &cap, jv_str(start, (size_t)(e - start)))) return x->code;
    *out = l;
    return 0;
}

static int do_replace(jctx *x, const jv *s, const jv *old, const jv *new_, const jv *countv, jv *out) {
    int64_t count = -1;
    if (want_str(x, old, "replace() argument 1") || want_str(x, new_, "replace() argument 2")) return x->code;
    if (countv && countv->t != JV_NONE && want_int(x, countv, "count", &count)) return x->code;
    jbuf b = {0};
    const char *p = s->u.s.p, *e = p + s->u.s.n;
    int64_t done = 0;
    if (jx_steps(x, s->u.s.n / 32)) return x->code;
    if (old->u.s.n == 0) { /* inserts new_ between code points and at both ends */
        while (count < 0 || done < count) {
            if (jbuf_add(x, &b, new_->u.s.p, new_->u.s.n)) goto fail;
            done++;
            if (p >= e) break;
            size_t k = jv_u8len(p, e);
            if (jbuf_add(x, &b, p, k)) goto fail;
            p += k;
        }
        if (jbuf_add(x, &b, p, (size_t)(e - p))) goto fail;
        return jbuf_take(x, &b, out);
    }
    for (;;) {
        const char *q = count < 0 || done < count ? find_bytes(p, (size_t)(e - p), old->u.s.p, old->u.s.n) : NULL;
        if (!q) break;
        if (jbuf_add(x, &b, p, (size_t)(q - p)) || jbuf_add(x, &b, new_->u.s.p, new_->u.s.n)) goto fail;
        p = q + old->u.s.n;
        done++;
    }
    if (jbuf_add(x, &b, p, (size_t)(e - p))) goto fail;
    return jbuf_take(x, &b, out);
fail:
    jbuf_free(&b);
    return x->code;
}

/* prefix (a string or a tuple of strings) matches the start (or end) of s. */
static int do_affix(jctx *x, const jv *s, const jv *affix, int at_end, jv *out) {
    if (affix->t == JV_LIST && (affix->flags & JVF_TUPLE)) {
        for (size_t i = 0; i < affix->u.l->n; i++) {
            if (do_affix(x, s, &affix->u.l->items[i], at_end, out)) return x->code;
            if (out->u.i) return 0;
        }
        *out = jv_bool(0);
        return 0;
    }
    if (affix->t != JV_STR)
        return JX_ERR(x, "%s first arg must be str or a tuple of str, not %s",
                      at_end ? "endswith" : "startswith", jv_type_name(affix));
    size_t n = affix->u.s.n;
    int ok = n <= s->u.s.n && !memcmp(at_end ? s->u.s.p + s->u.s.n - n : s->u.s.p, affix->u.s.p, n);
    *out = jv_bool(ok);
    return 0;
}

static int classify(const jv *s, int id) {
    const char *p = s->u.s.p, *e = p + s->u.s.n;
    int any_cased = 0, ok = s->u.s.n > 0;
    for (; p < e && ok; p++) {
        unsigned char c = (unsigned char)*p;
        switch (id) {
        case M_ISDIGIT: ok = isdigit(c) != 0; break;
        case M_ISALPHA: ok = isalpha(c) != 0; break;
        case M_ISALNUM: ok = isalnum(c) != 0; break;
        case M_ISSPACE: ok = jv_space_len(p, e) > 0; break;
        case M_ISLOWER: ok = !isupper(c), any_cased |= islower(c) != 0; break;
        default: ok = !islower(c), any_cased |= isupper(c) != 0; break;
        }
    }
    if (id == M_ISLOWER || id == M_ISUPPER) return s->u.s.n > 0 && ok && any_cased;
    return ok;
}

static int64_t cp_index(const char *base, const char *at) { return (int64_t)jv_u8count(base, (size_t)(at - base)); }

static int str_join(jctx *x, const jv *sep, const jv *iterable, int str_items, jv *out) {
    jlist *items = NULL;
    if (je_iterate(x, iterable, &items)) return x->code;
    jbuf b = {0};
    for (size_t i = 0; i < items->n; i++) {
        if (i && jbuf_add(x, &b, sep->u.s.p, sep->u.s.n)) goto fail;
        const jv *it = &items->items[i];
        if (!str_items && it->t != JV_STR) {
            JX_ERR(x, "sequence item %zu: expected str instance, %s found", i, jv_type_name(it));
            goto fail;
        }
        if (jv_str_to(x, &b, it)) goto fail;
    }
    return jbuf_take(x, &b, out);
fail:
    jbuf_free(&b);
    return x->code;
}

/* ---- methods ---- */

static int call_method(jctx *x, const jbound *b, const jargs *a, jv *out) {
    const jv *s = &b->self;
    const jv *p[3];
    static const char *const two[] = {"a", "b", "c"};
    if (b->id == M_CYCLE) {
        if (a->n_pos == 0) return JX_ERR(x, "no items for cycling given");
        *out = a->pos[s->u.lp->index0 % (size_t)a->n_pos]; /* the loop's index picks the item */
        return 0;
    }
    if (a->n_kw) return JX_ERR(x, "this method takes no keyword arguments");
    if (bind(x, "method", a, two, 3, p)) return x->code;
    switch (b->id) {
    case M_STRIP: return do_strip(x, s, p[0], 1, 1, out);
    case M_LSTRIP: return do_strip(x, s, p[0], 1, 0, out);
    case M_RSTRIP: return do_strip(x, s, p[0], 0, 1, out);
    case M_SPLIT: return do_split(x, s, p[0], p[1], 0, out);
    case M_RSPLIT: return do_split(x, s, p[0], p[1], 1, out);
    case M_SPLITLINES: {
        jlist *l = NULL;
        if (do_splitlines(x, s->u.s.p, s->u.s.n, p[0] && jv_truthy(p[0]), &l)) return x->code;
        *out = jv_list(l, 0);
        return 0;
    }
    case M_STARTSWITH:
    case M_ENDSWITH:
        if (!p[0]) return JX_ERR(x, "startswith/endswith takes at least 1 argument");
        if (p[1]) return JX_ERR(x, "start and end arguments of startswith/endswith are not supported");
        return do_affix(x, s, p[0], b->id == M_ENDSWITH, out);
    case M_UPPER: return do_case(x, s, CASE_UPPER, out);
    case M_LOWER: return do_case(x, s, CASE_LOWER, out);
    case M_TITLE: return do_case(x, s, CASE_TITLE, out);
    case M_CAPITALIZE: return do_case(x, s, CASE_CAPITALIZE, out);
    case M_REPLACE:
        if (!p[0] || !p[1]) return JX_ERR(x, "replace() takes at least 2 arguments");
        return do_replace(x, s, p[0], p[1], p[2], out);
    case M_FIND:
    case M_RFIND: {
        if (!p[0]) return JX_ERR(x, "find() takes at least 1 argument");
        if (want_str(x, p[0], "find() argument")) return x->code;
        if (p[1]) return JX_ERR(x, "start and end arguments of find are not supported");
        if (jx_steps(x, s->u.s.n / 32)) return x->code;
        const char *at = b->id == M_FIND ? find_bytes(s->u.s.p, s->u.s.n, p[0]->u.s.p, p[0]->u.s.n)
                                         : rfind_bytes(s->u.s.p, s->u.s.n, p[0]->u.s.p, p[0]->u.s.n);
        *out = jv_int(at ? cp_index(s->u.s.p, at) : -1);
        return 0;
    }
    case M_COUNT: {
        if (!p[0]) return JX_ERR(x, "count() takes exactly one argument");
        if (s->t == JV_LIST) {
            int64_t c = 0;
            for (size_t i = 0; i < s->u.l->n; i++) c += jv_equal(&s->u.l->items[i], p[0]);
            *out = jv_int(c);
            return 0;
        }
        if (want_str(x, p[0], "count() argument")) return x->code;
        if (jx_steps(x, s->u.s.n / 32)) return x->code;
        if (p[0]->u.s.n == 0) {
            *out = jv_int((int64_t)jv_u8count(s->u.s.p, s->u.s.n) + 1);
            return 0;
        }
        int64_t c = 0;
        const char *q = s->u.s.p, *e = q + s->u.s.n;
        while ((q = find_bytes(q, (size_t)(e - q), p[0]->u.s.p, p[0]->u.s.n))) c++, q += p[0]->u.s.n;
        *out = jv_int(c);
        return 0;
    }
    case M_JOIN:
        if (!p[0]) return JX_ERR(x, "join() takes exactly one argument");
        return str_join(x, s, p[0], 0, out);
    case M_ISDIGIT: case M_ISALPHA: case M_ISALNUM: case M_ISSPACE: case M_ISLOWER: case M_ISUPPER:
        *out = jv_bool(classify(s, b->id));
        return 0;
    case M_REMOVEPREFIX:
    case M_REMOVESUFFIX: {
        if (!p[0]) return JX_ERR(x, "removeprefix/removesuffix take exactly one argument");
        if (want_str(x, p[0], "argument")) return x->code;
        jv hit;
        do_affix(x, s, p[0], b->id == M_REMOVESUFFIX, &hit);
        size_t k = hit.u.i ? p[0]->u.s.n : 0;
        *out = jv_str(s->u.s.p + (b->id == M_REMOVEPREFIX ? k : 0), s->u.s.n - k);
        return 0;
    }
    case M_ITEMS:
    case M_KEYS:
    case M_VALUES: {
        const jdict *d = s->u.d;
        jlist *l = jv_list_new(x, d->n);
        if (!l) return x->code;
        for (size_t i = 0; i < d->n; i++) {
            if (b->id == M_KEYS) l->items[i] = d->keys[i];
            else if (b->id == M_VALUES) l->items[i] = d->vals[i];
            else {
                jlist *pair = jv_list_new(x, 2);
                if (!pair) return x->code;
                pair->items[0] = d->keys[i], pair->items[1] = d->vals[i];
                l->items[i] = jv_list(pair, 1);
            }
        }
        *out = jv_list(l, 0);
        return 0;
    }
    case M_GET: {
        if (!p[0]) return JX_ERR(x, "get expected at least 1 argument");
        const jv *v = jv_dict_get(x, s->u.d, *p[0]);
        if (x->failed) return x->code;
        *out = v ? *v : p[1] ? *p[1] : jv_none();
        return 0;
    }
    case M_INDEX:
        if (!p[0]) return JX_ERR(x, "index() takes at least 1 argument");
        for (size_t i = 0; i < s->u.l->n; i++)
            if (jv_equal(&s->u.l->items[i], p[0])) {
                *out = jv_int((int64_t)i);
                return 0;
            }
        return JX_ERR(x, "value is not in list");
    default: return JX_ERR(x, "unknown method");
    }
}

/* ---- global functions ---- */

static int strftime_now(jctx *x, const jv *fmt, jv *out) {
    if (want_str(x, fmt, "strftime_now format")) return x->code;
    /* only the conversions C and Python share; glibc's flags (-, _, 0, ^, #) allowed */
    const char *p = fmt->u.s.p, *e = p + fmt->u.s.n;
    if (fmt->u.s.n > 256 || memchr(p, 0, fmt->u.s.n)) return JX_ERR(x, "strftime_now: format too long");
    for (; p < e; p++) {
        if (*p != '%') continue;
        if (++p >= e) return JX_ERR(x, "strftime_now: format ends with '%%'");
        while (p < e && strchr("-_0^#", *p)) p++;
        if (p >= e || !strchr("aAbBcdDeFHIjmMpSTUwWxXyYzZn%tRhCGguV", *p))
            return JX_ERR(x, "strftime_now: unsupported conversion in the format");
    }
    char f[260], buf[1024];
    memcpy(f, fmt->u.s.p, fmt->u.s.n);
    f[fmt->u.s.n] = 0;
    size_t n = fmt->u.s.n ? strftime(buf, sizeof buf, f, &x->now) : 0;
    char *s = ja_strdup(&x->arena, buf, n);
    if (!s) return mem(x);
    *out = jv_str(s, n);
    return 0;
}

static int call_global(jctx *x, int id, const jargs *a, jv *out) {
    switch (id) {
    case G_RANGE: {
        if (a->n_kw || a->n_pos < 1 || a->n_pos > 3) return JX_ERR(x, "range expected 1 to 3 integer arguments");
        int64_t v[3] = {0, 0, 1};
        for (int i = 0; i < a->n_pos; i++)
            if (want_int(x, &a->pos[i], "range() argument", &v[a->n_pos == 1 ? 1 : i])) return x->code;
        if (v[2] == 0) return JX_ERR(x, "range() arg 3 must not be zero");
        double count = v[2] > 0 ? ceil(((double)v[1] - (double)v[0]) / (double)v[2])
                                : ceil(((double)v[0] - (double)v[1]) / -(double)v[2]);
        if (count < 0) count = 0;
        if (count > 100000)
            return JX_ERR(x, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
        jlist *l = jv_list_new(x, (size_t)count);
        if (!l || jx_steps(x, (uint64_t)count / 16)) return x->code;
        for (size_t i = 0; i < l->n; i++) l->items[i] = jv_int(v[0] + (int64_t)i * v[2]);
        *out = jv_list(l, 0);
        return 0;
    }
    case G_NAMESPACE:
    case G_DICT: {
        jdict *d = jv_dict_new(x, 0);
        if (!d) return x->code;
        if (a->n_pos > 1) return JX_ERR(x, "namespace() and dict() take at most one positional argument");
        if (a->n_pos == 1) {
            const jv *src = &a->pos[0];
            if (src->t != JV_DICT && src->t != JV_NS)
                return JX_ERR(x, "cannot convert %s to a dictionary", jv_type_name(src));
            for (size_t i = 0; i < src->u.d->n; i++)
                if (jv_dict_set(x, d, src->u.d->keys[i], src->u.d->vals[i])) return x->code;
        }
        for (int k = 0; k < a->n_kw; k++)
            if (jv_dict_set(x, d, jv_str(a->kw[k], a->kw_len[k]), a->kw_val[k])) return x->code;
        *out = jv_dict(d);
        if (id == G_NAMESPACE) out->t = JV_NS;
        return 0;
    }
    case G_RAISE: {
        jbuf b = {0};
        if (a->n_pos >= 1 && jv_str_to(x, &b, &a->pos[0])) {
            jbuf_free(&b);
            return x->code;
        }
        int rc = jx_fail(x, TM_JINJA_RAISED, TM_EINVAL, "%s", b.p ? b.p : "");
        jbuf_free(&b);
        return rc;
    }
    case G_STRFTIME:
        if (a->n_pos != 1 || a->n_kw) return JX_ERR(x, "strftime_now() takes one argument");
        return strftime_now(x, &a->pos[0], out);
    default: return JX_ERR(x, "unknown function");
    }
}

int jb_call(jctx *x, const jv *fn, const jargs *args, jv *out) {
    const jbound *b = fn->u.b;
    *out = jv_undef("the call gave no value");
    if (b->id >= G_RANGE && b->id < M_STRIP) return call_global(x, b->id, args, out);
    return call_method(x, b, args, out);
}

/* ---- tests ---- */

static int is_iterable(const jv *v) {
    return v->t == JV_STR || v->t == JV_LIST || v->t == JV_DICT || v->t == JV_UNDEF;
}

static int test_compare(jctx *x, int op, const jv *v, const jv *o, int *out) {
    if (op == T_EQ) {
        *out = jv_equal(v, o);
        return 0;
    }
    if (op == T_NE) {
        *out = !jv_equal(v, o);
        return 0;
    }
    int c;
    if (v->t == JV_UNDEF || o->t == JV_UNDEF) return JX_ERR(x, "cannot compare an undefined value");
    if (jv_compare(x, v, o, &c)) return x->code;
    *out = op == T_LT ? c < 0 : op == T_LE ? c <= 0 : op == T_GT ? c > 0 : c >= 0;
    return 0;
}

int jb_test(jctx *x, int id, const jv *v, const jargs *a, int *out) {
    const jv *o = a->n_pos ? &a->pos[0] : a->n_kw ? &a->kw_val[0] : NULL;
    if (jx_steps(x, 1)) return x->code;
    switch (id) {
    case T_DEFINED: *out = v->t != JV_UNDEF; return 0;
    case T_UNDEFINED: *out = v->t == JV_UNDEF; return 0;
    case T_NONE: *out = v->t == JV_NONE; return 0;
    case T_BOOLEAN: *out = v->t == JV_BOOL; return 0;
    case T_TRUE: *out = v->t == JV_BOOL && v->u.i; return 0;
    case T_FALSE: *out = v->t == JV_BOOL && !v->u.i; return 0;
    case T_INTEGER: *out = v->t == JV_INT; return 0;
    case T_FLOAT: *out = v->t == JV_FLOAT; return 0;
    case T_NUMBER: *out = jv_is_number(v); return 0;
    case T_STRING: *out = v->t == JV_STR; return 0;
    case T_MAPPING: *out = v->t == JV_DICT; return 0;
    case T_ITERABLE: *out = is_iterable(v); return 0;
    case T_SEQUENCE: *out = is_iterable(v) && !(v->flags & JVF_GEN); return 0;
    case T_CALLABLE: *out = v->t == JV_FUNC || v->t == JV_MACRO; return 0;
    case T_ESCAPED: *out = 0; return 0;
    case T_LOWER:
    case T_UPPER: {
        jv s;
        if (jv_to_str(x, v, &s)) return x->code;
        *out = classify(&s, id == T_LOWER ? M_ISLOWER : M_ISUPPER);
        return 0;
    }
    case T_ODD:
    case T_EVEN:
    case T_DIVISIBLEBY: {
        if (!jv_is_number(v)) return JX_ERR(x, "the %s test needs a number", id == T_DIVISIBLEBY ? "divisibleby" : "odd/even");
        jv m, d = id == T_DIVISIBLEBY ? (o ? *o : jv_none()) : jv_int(2);
        if (!jv_is_number(&d)) return JX_ERR(x, "divisibleby needs a number");
        if (jv_num(&d) == 0) return JX_ERR(x, "modulo by zero");
        if (v->t == JV_FLOAT || d.t == JV_FLOAT) {
            double r = fmod(jv_num(v), jv_num(&d));
            if (r != 0 && ((r < 0) != (jv_num(&d) < 0))) r += jv_num(&d);
            m = jv_float(r);
        } else {
            int64_t q = d.u.i, r = q == -1 ? 0 : v->u.i % q;
            if (r != 0 && ((r < 0) != (q < 0))) r += q;
            m = jv_int(r);
        }
        *out = id == T_ODD ? jv_num(&m) == 1 : jv_num(&m) == 0;
        return 0;
    }
    case T_SAMEAS:
        if (!o) return JX_ERR(x, "sameas needs an argument");
        if (v->t != o->t) *out = 0;
        else if (v->t == JV_NONE) *out = 1;
        else if (v->t == JV_BOOL) *out = v->u.i == o->u.i;
        else if (v->t == JV_INT) *out = v->u.i == o->u.i && v->u.i >= -5 && v->u.i <= 256;
        else if (v->t == JV_STR) *out = v->u.s.p == o->u.s.p && v->u.s.n == o->u.s.n;
        else if (v->t == JV_UNDEF || v->t == JV_FLOAT) *out = 0;
        else *out = v->u.l == o->u.l;
        return 0;
    case T_EQ: case T_NE: case T_LT: case T_LE: case T_GT: case T_GE:
        if (!o) return JX_ERR(x, "this test needs an argument");
        return test_compare(x, id, v, o, out);
    case T_IN: {
        if (!o) return JX_ERR(x, "the in test needs an argument");
        if (o->t == JV_STR) {
            if (v->t != JV_STR) return JX_ERR(x, "'in <string>' requires string as left operand");
            *out = find_bytes(o->u.s.p, o->u.s.n, v->u.s.p, v->u.s.n) != NULL;
            return 0;
        }
        jlist *items = NULL;
        if (o->t == JV_DICT) {
            *out = jv_dict_get(x, o->u.d, *v) != NULL;
            return x->failed ? x->code : 0;
        }
        if (je_iterate(x, o, &items)) return x->code;
        *out = 0;
        for (size_t i = 0; i < items->n && !*out; i++) *out = jv_equal(v, &items->items[i]);
        return 0;
    }
    case T_FILTER:
    case T_TEST:
        *out = v->t == JV_STR && jb_lookup(id == T_FILTER ? JB_KIND_FILTER : JB_KIND_TEST, v->u.s.p, v->u.s.n) >= 0;
        return 0;
    default: return JX_ERR(x, "unknown test");
    }
}

/* ---- filters ---- */

/* jinja2's make_attrgetter: "a.b.0" looks up a, then b, then item 0. */
static int attr_path(jctx *x, const jv *item, const jv *path, jv *out) {
    if (path->t == JV_INT) return je_getitem(x, item, path, out);
    if (path->t != JV_STR) return JX_ERR(x, "attribute must be a string");
    jv cur = *item;
    const char *p = path->u.s.p, *e = p + path->u.s.n;
    for (;;) {
        const char *dot = memchr(p, '.', (size_t)(e - p));
        const char *end = dot ? dot : e;
        jv key = jv_str(p, (size_t)(end - p));
        int digits = end > p;
        for (const char *q = p; q < end; q++) digits &= isdigit((unsigned char)*q) != 0;
        if (digits && end - p < 18) key = jv_int(strtoll(p, NULL, 10));
        if (je_getitem(x, &cur, &key, &cur)) return x->code;
        if (!dot) break;
        p = dot + 1;
    }
    *out = cur;
    return 0;
}

/* select / reject / selectattr / rejectattr: args after the attribute are a test name and
 * its arguments. */
static int do_select(jctx *x, const jv *seq, const jargs *a, int by_attr, int keep_if, jv *out) {
    jlist *items = NULL;
    if (je_iterate(x, seq, &items)) return x->code;
    int first = by_attr ? 1 : 0;
    if (by_attr && a->n_pos < 1) return JX_ERR(x, "selectattr/rejectattr need an attribute");
    int test = -1;
    if (a->n_pos > first) {
        const jv *name = &a->pos[first];
        if (want_str(x, name, "test name")) return x->code;
        if ((test = jb_lookup(JB_KIND_TEST, name->u.s.p, name->u.s.n)) < 0)
            return JX_ERR(x, "no test named '%.*s'", (int)TM_MIN(name->u.s.n, 40), name->u.s.p);
    }
    jargs rest = {.pos = a->n_pos > first + 1 ? a->pos + first + 1 : NULL,
                  .n_pos = TM_MAX(a->n_pos - first - 1, 0)};
    jlist *l = jv_list_new(x, items->n);
    if (!l) return x->code;
    size_t k = 0;
    for (size_t i = 0; i < items->n; i++) {
        jv v = items->items[i];
        if (by_attr && attr_path(x, &items->items[i], &a->pos[0], &v)) return x->code;
        int r;
        if (test < 0) r = jv_truthy(&v);
        else if (jb_test(x, test, &v, &rest, &r)) return x->code;
        if (r == keep_if) l->items[k++] = items->items[i];
    }
    l->n = k;
    *out = jv_gen(l);
    return 0;
}

static int do_map(jctx *x, const jv *seq, const jargs *a, jv *out) {
    jlist *items = NULL;
    if (je_iterate(x, seq, &items)) return x->code;
    const jv *attr = NULL, *dflt = NULL;
    for (int k = 0; k < a->n_kw; k++) {
        if (NAME_IS(a->kw[k], a->kw_len[k], "attribute")) attr = &a->kw_val[k];
        else if (NAME_IS(a->kw[k], a->kw_len[k], "default")) dflt = &a->kw_val[k];
    }
    int filter = -1;
    jargs rest = {0};
    if (!attr) {
        if (a->n_pos < 1 || want_str(x, &a->pos[0], "map filter name"))
            return x->failed ? x->code : JX_ERR(x, "map needs a filter name or attribute=");
        if ((filter = jb_lookup(JB_KIND_FILTER, a->pos[0].u.s.p, a->pos[0].u.s.n)) < 0)
            return JX_ERR(x, "no filter named '%.*s'", (int)TM_MIN(a->pos[0].u.s.n, 40), a->pos[0].u.s.p);
        rest = *a;
        rest.pos++, rest.n_pos--;
    }
    jlist *l = jv_list_new(x, items->n);
    if (!l) return x->code;
    for (size_t i = 0; i < items->n; i++) {
        if (attr) {
            if (attr_path(x, &items->items[i], attr, &l->items[i])) return x->code;
            if (l->items[i].t == JV_UNDEF && dflt) l->items[i] = *dflt;
        } else if (jb_filter(x, filter, &items->items[i], &rest, &l->items[i])) {
            return x->code;
        }
    }
    *out = jv_gen(l);
    return 0;
}

/* The key a sort, min, max or unique compares: the attribute, lowercased unless
 * case-sensitive. */
static int sort_key(jctx *x, const jv *item, const jv *attr, int case_sensitive, jv *out) {
    *out = *item;
    if (attr && attr->t != JV_NONE && attr_path(x, item, attr, out)) return x->code;
    if (!case_sensitive && out->t == JV_STR) return do_case(x, out, CASE_LOWER, out);
    return 0;
}

/* Stable merge sort of items by keys (Python's sorted is stable). */
static int sort_items(jctx *x, jv *items, jv *keys, size_t n, int reverse) {
    if (n < 2) return 0;
    jv *ti = ja_alloc(&x->arena, n * sizeof *ti), *tk = ja_alloc(&x->arena, n * sizeof *tk);
    if (!ti || !tk) return mem(x);
    for (size_t w = 1; w < n; w *= 2) {
        if (jx_steps(x, n / 8 + 1)) return x->code;
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = TM_MIN(lo + w, n), hi = TM_MIN(lo + 2 * w, n), i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                int c;
                if (jv_compare(x, &keys[j], &keys[i], &c)) return x->code;
                int take_right = reverse ? c > 0 : c < 0;
                if (take_right) ti[k] = items[j], tk[k++] = keys[j++];
                else ti[k] = items[i], tk[k++] = keys[i++];
            }
            while (i < mid) ti[k] = items[i], tk[k++] = keys[i++];
            while (j < hi) ti[k] = items[j], tk[k++] = keys[j++];
        }
        memcpy(items, ti, n * sizeof *items);
        memcpy(keys, tk, n * sizeof *keys);
    }
    return 0;
}

static int copy_items(jctx *x, const jv *seq, jlist **out) {
    jlist *items = NULL;
    if (je_iterate(x, seq, &items)) return x->code;
    jlist *l = jv_list_new(x, items->n);
    if (!l) return x->code;
    memcpy(l->items, items->items, items->n * sizeof *l->items);
    *out = l;
    return 0;
}

static int do_sort(jctx *x, const jv *seq, const jv *reverse, const jv *cs, const jv *attr, jv *out) {
    jlist *l = NULL;
    if (copy_items(x, seq, &l)) return x->code;
    jv *keys = ja_alloc(&x->arena, (l->n + 1) * sizeof *keys);
    if (!keys) return mem(x);
    for (size_t i = 0; i < l->n; i++)
        if (sort_key(x, &l->items[i], attr, cs && jv_truthy(cs), &keys[i])) return x->code;
    if (sort_items(x, l->items, keys, l->n, reverse && jv_truthy(reverse))) return x->code;
    *out = jv_list(l, 0);
    return 0;
}

static int do_minmax(jctx *x, const jv *seq, const jv *cs, const jv *attr, int want_max, jv *out) {
    jlist *items = NULL;
    if (je_iterate(x, seq, &items)) return x->code;
    if (items->n == 0) {
        *out = jv_undef(want_max ? "No aggregated item, sequence was empty." : "No aggregated item, sequence was empty.");
        return 0;
    }
    size_t best = 0;
    jv bk;
    if (sort_key(x, &items->items[0], attr, cs && jv_truthy(cs), &bk)) return x->code;
    for (size_t i = 1; i < items->n; i++) {
        jv k;
        int c;
        if (sort_key(x, &items->items[i], attr, cs && jv_truthy(cs), &k) || jv_compare(x, &k, &bk, &c))
            return x->code;
        if (want_max ? c > 0 : c < 0) best = i, bk = k;
    }
    *out = items->items[best];
    return 0;
}

static int do_unique(jctx *x, const jv *seq, const jv *cs, const jv *attr, jv *out) {
    jlist *items = NULL;
    if (je_iterate(x, seq, &items)) return x->code;
    jlist *l = jv_list_new(x, items->n);
    jv *keys = ja_alloc(&x->arena, (items->n + 1) * sizeof *keys);
    if (!l || !keys) return x->failed ? x->code : mem(x);
    size_t k = 0;
    if (jx_steps(x, items->n * items->n / 64)) return x->code;
    for (size_t i = 0; i < items->n; i++) {
        jv key;
        if (sort_key(x, &items->items[i], attr, cs && jv_truthy(cs), &key)) return x->code;
        int seen = 0;
        for (size_t j = 0; j < k && !seen; j++) seen = jv_equal(&keys[j], &key);
        if (!seen) keys[k] = key, l->items[k++] = items->items[i];
    }
    l->n = k;
    *out = jv_gen(l);
    return 0;
}

static int do_indent(jctx *x, const jv *s, const jv *width, const jv *first, const jv *blank, jv *out) {
    jv ind = jv_str("    ", 4);
    if (width && width->t == JV_STR) ind = *width;
    else if (width) {
        int64_t w = 0;
        if (want_int(x, width, "indent width", &w)) return x->code;
        if (w < 0) w = 0;
        char *p = NULL;
        if (newstr(x, (size_t)w, &p)) return x->code;
        memset(p, ' ', (size_t)w);
        ind = jv_str(p, (size_t)w);
    }
    /* s + "\n", split into lines, rejoined with the indentation after each newline */
    jbuf t = {0}, b = {0};
    jlist *lines;
    if (jbuf_add(x, &t, s->u.s.p, s->u.s.n) || jbuf_add(x, &t, "\n", 1) ||
        do_splitlines(x, t.p, t.n, 0, &lines))
        goto fail;
    for (size_t i = 0; i < lines->n; i++) {
        const jv *ln = &lines->items[i];
        if (i && jbuf_add(x, &b, "\n", 1)) goto fail;
        int pad = (i == 0 && first && jv_truthy(first)) ||
                  (i > 0 && (ln->u.s.n > 0 || (blank && jv_truthy(blank))));
        if (pad && jbuf_add(x, &b, ind.u.s.p, ind.u.s.n)) goto fail;
        if (jbuf_add(x, &b, ln->u.s.p, ln->u.s.n)) goto fail;
    }
    if (lines->n == 0 && first && jv_truthy(first) && jbuf_add(x, &b, ind.u.s.p, ind.u.s.n)) goto fail;
    /* the lines point into t: copy out before freeing it */
    {
        int rc = jbuf_take(x, &b, out);
        jbuf_free(&t);
        return rc;
    }
fail:
    jbuf_free(&t);
    jbuf_free(&b);
    return x->code;
}

/* Python's int(str, 10) / float(str): whitespace around, underscores between digits. */
static int parse_int(const jv *s, int64_t *out) {
    char buf[80];
    size_t k = 0;
    const char *p = s->u.s.p, *e = p + s->u.s.n;
    while (p < e && jv_space_len(p, e)) p += jv_space_len(p, e);
    while (e > p && jv_space_len(e - 1, e)) e--;
    if (e - p == 0 || e - p >= (long)sizeof buf) return -1;
    for (const char *q = p; q < e; q++) {
        if (*q == '_' && q > p && q + 1 < e && isdigit((unsigned char)q[-1]) && isdigit((unsigned char)q[1])) continue;
        buf[k++] = *q;
    }
    buf[k] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (*end || errno || !isdigit((unsigned char)buf[k - 1])) return -1;
    if (buf[0] != '+' && buf[0] != '-' && !isdigit((unsigned char)buf[0])) return -1;
    *out = v;
    return 0;
}

static int parse_float(const jv *s, double *out) {
    char buf[80];
    const char *p = s->u.s.p, *e = p + s->u.s.n;
    while (p < e && jv_space_len(p, e)) p += jv_space_len(p, e);
    while (e > p && jv_space_len(e - 1, e)) e--;
    if (e - p == 0 || e - p >= (long)sizeof buf) return -1;
    size_t k = 0;
    for (const char *q = p; q < e; q++)
        if (*q != '_') buf[k++] = *q;
    buf[k] = 0;
    for (size_t i = 0; i < k; i++)
        if (buf[i] == 'x' || buf[i] == 'X' || buf[i] == 'p' || buf[i] == 'P') return -1; /* no hex floats */
    char *end;
    *out = strtod(buf, &end);
    return *end ? -1 : 0;
}

static int do_escape(jctx *x, const jv *v, jv *out) {
    jv s;
    if (jv_to_str(x, v, &s)) return x->code;
    jbuf b = {0};
    for (size_t i = 0; i < s.u.s.n; i++) {
        const char *r = NULL;
        switch (s.u.s.p[i]) {
        case '&': r = "&amp;"; break;
        case '<': r = "&lt;"; break;
        case '>': r = "&gt;"; break;
        case '"': r = "&#34;"; break;
        case '\'': r = "&#39;"; break;
        }
        if (r ? jbuf_add(x, &b, r, strlen(r)) : jbuf_add(x, &b, s.u.s.p + i, 1)) {
            jbuf_free(&b);
            return x->code;
        }
    }
    return jbuf_take(x, &b, out);
}

static int length_of(jctx *x, const jv *v, int64_t *n) {
    switch (v->t) {
    case JV_UNDEF: *n = 0; return 0;
    case JV_STR: *n = (int64_t)jv_u8count(v->u.s.p, v->u.s.n); return jx_steps(x, v->u.s.n / 64);
    case JV_LIST:
        if (v->flags & JVF_GEN) return JX_ERR(x, "object of type 'generator' has no len()");
        *n = (int64_t)v->u.l->n;
        return 0;
    case JV_DICT:
    case JV_NS: *n = (int64_t)v->u.d->n; return 0;
    default: return JX_ERR(x, "object of type '%s' has no len()", jv_type_name(v));
    }
}

static int do_tojson(jctx *x, const jv *v, const jargs *a, jv *out) {
    static const char *const names[] = {"ensure_ascii", "indent", "separators", "sort_keys"};
    const jv *p[4];
    if (bind(x, "tojson", a, names, 4, p)) return x->code;
    int64_t indent = -1;
    const char *item_sep = NULL, *key_sep = NULL;
    if (p[1] && p[1]->t != JV_NONE && want_int(x, p[1], "indent", &indent)) return x->code;
    if (indent > 32) indent = 32;
    if (p[2] && p[2]->t != JV_NONE) {
        if (p[2]->t != JV_LIST || p[2]->u.l->n != 2 || p[2]->u.l->items[0].t != JV_STR ||
            p[2]->u.l->items[1].t != JV_STR)
            return JX_ERR(x, "separators must be a pair of strings");
        item_sep = ja_strdup(&x->arena, p[2]->u.l->items[0].u.s.p, p[2]->u.l->items[0].u.s.n);
        key_sep = ja_strdup(&x->arena, p[2]->u.l->items[1].u.s.p, p[2]->u.l->items[1].u.s.n);
        if (!item_sep || !key_sep) return mem(x);
    }
    jbuf b = {0};
    if (jv_json_to(x, &b, v, p[0] && jv_truthy(p[0]), (int)indent, item_sep, key_sep,
                   p[3] && jv_truthy(p[3]))) {
        jbuf_free(&b);
        return x->code;
    }
    return jbuf_take(x, &b, out);
}

int jb_filter(jctx *x, int id, const jv *v, const jargs *a, jv *out) {
    const jv *p[4];
    *out = jv_undef("the filter gave no value");
    if (jx_steps(x, 1)) return x->code;
    switch (id) {
    case F_TOJSON: return do_tojson(x, v, a, out);
    case F_SELECT: return do_select(x, v, a, 0, 1, out);
    case F_REJECT: return do_select(x, v, a, 0, 0, out);
    case F_SELECTATTR: return do_select(x, v, a, 1, 1, out);
    case F_REJECTATTR: return do_select(x, v, a, 1, 0, out);
    case F_MAP: return do_map(x, v, a, out);
    default: break;
    }
    /* the rest have fixed signatures */
    static const char *const s_default[] = {"default_value", "boolean"};
    static const char *const s_trim[] = {"chars"};
    static const char *const s_join[] = {"d", "attribute"};
    static const char *const s_replace[] = {"old", "new", "count"};
    static const char *const s_sort[] = {"reverse", "case_sensitive", "attribute"};
    static const char *const s_minmax[] = {"case_sensitive", "attribute"};
    static const char *const s_indent[] = {"width", "first", "blank"};
    static const char *const s_int[] = {"default", "base"};
    static const char *const s_round[] = {"precision", "method"};
    static const char *const s_sum[] = {"attribute", "start"};
    static const char *const s_center[] = {"width"};
    static const char *const s_attr[] = {"name"};
    static const char *const s_batch[] = {"linecount", "fill_with"};
    static const char *const s_dictsort[] = {"case_sensitive", "by", "reverse"};
    static const char *const none[] = {NULL};
    jv s;
    switch (id) {
    case F_DEFAULT:
        if (bind(x, "default", a, s_default, 2, p)) return x->code;
        if (v->t == JV_UNDEF || (p[1] && jv_truthy(p[1]) && !jv_truthy(v))) *out = p[0] ? *p[0] : jv_str("", 0);
        else *out = *v;
        return 0;
    case F_TRIM:
        if (bind(x, "trim", a, s_trim, 1, p) || jv_to_str(x, v, &s)) return x->code;
        return do_strip(x, &s, p[0], 1, 1, out);
    case F_UPPER: case F_LOWER: case F_TITLE: case F_CAPITALIZE:
        if (bind(x, "filter", a, none, 0, p) || jv_to_str(x, v, &s)) return x->code;
        return do_case(x, &s, id == F_UPPER ? CASE_UPPER : id == F_LOWER ? CASE_LOWER
                              : id == F_TITLE ? CASE_TITLE : CASE_CAPITALIZE, out);
    case F_STRING:
    case F_SAFE:
        if (bind(x, "string", a, none, 0, p)) return x->code;
        return jv_to_str(x, v, out);
    case F_ESCAPE: return do_escape(x, v, out);
    case F_COUNT: {
        int64_t n = 0;
        if (bind(x, "length", a, none, 0, p) || length_of(x, v, &n)) return x->code;
        *out = jv_int(n);
        return 0;
    }
    case F_ITEMS: {
        if (v->t == JV_UNDEF) return (*out = jv_gen(jv_list_new(x, 0))).u.l ? 0 : x->code;
        if (v->t != JV_DICT) return JX_ERR(x, "Can only get item pairs from a mapping.");
        jbound b = {*v, M_ITEMS};
        jargs none_args = {0};
        if (call_method(x, &b, &none_args, out)) return x->code;
        out->flags = JVF_GEN;
        return 0;
    }
    case F_LIST: {
        jlist *l = NULL;
        if (copy_items(x, v, &l)) return x->code;
        *out = jv_list(l, 0);
        return 0;
    }
    case F_FIRST:
    case F_LAST: {
        jlist *items = NULL;
        if (je_iterate(x, v, &items)) return x->code;
        if (items->n == 0) *out = jv_undef(id == F_FIRST ? "No first item, sequence was empty."
                                                         : "No last item, sequence was empty.");
        else *out = items->items[id == F_FIRST ? 0 : items->n - 1];
        return 0;
    }
    case F_JOIN: {
        if (bind(x, "join", a, s_join, 2, p)) return x->code;
        jv sep = jv_str("", 0);
        if (p[0] && jv_to_str(x, p[0], &sep)) return x->code;
        jv seq = *v;
        if (p[1]) {
            jargs ma = {.kw = (const char *[]){"attribute"}, .kw_len = (size_t[]){9},
                        .kw_val = (jv *)p[1], .n_kw = 1};
            if (do_map(x, v, &ma, &seq)) return x->code;
        }
        return str_join(x, &sep, &seq, 1, out);
    }
    case F_REPLACE:
        if (bind(x, "replace", a, s_replace, 3, p) || jv_to_str(x, v, &s)) return x->code;
        if (!p[0] || !p[1]) return JX_ERR(x, "replace needs old and new strings");
        return do_replace(x, &s, p[0], p[1], p[2], out);
    case F_REVERSE: {
        if (v->t == JV_STR) {
            jlist *cps = NULL;
            char *w = NULL;
            if (je_iterate(x, v, &cps) || newstr(x, v->u.s.n, &w)) return x->code;
            size_t k = 0;
            for (size_t i = cps->n; i-- > 0;) {
                memcpy(w + k, cps->items[i].u.s.p, cps->items[i].u.s.n);
                k += cps->items[i].u.s.n;
            }
            *out = jv_str(w, k);
            return 0;
        }
        jlist *l = NULL;
        if (copy_items(x, v, &l)) return x->code;
        for (size_t i = 0; i < l->n / 2; i++) {
            jv t = l->items[i];
            l->items[i] = l->items[l->n - 1 - i];
            l->items[l->n - 1 - i] = t;
        }
        *out = jv_gen(l);
        return 0;
    }
    case F_SORT:
        if (bind(x, "sort", a, s_sort, 3, p)) return x->code;
        return do_sort(x, v, p[0], p[1], p[2], out);
    case F_DICTSORT: {
        if (bind(x, "dictsort", a, s_dictsort, 3, p)) return x->code;
        if (v->t != JV_DICT) return JX_ERR(x, "dictsort needs a mapping");
        int by_value = p[1] && p[1]->t == JV_STR && p[1]->u.s.n == 5 && !memcmp(p[1]->u.s.p, "value", 5);
        jbound b = {*v, M_ITEMS};
        jargs none_args = {0};
        jv items;
        if (call_method(x, &b, &none_args, &items)) return x->code;
        jv *keys = ja_alloc(&x->arena, (items.u.l->n + 1) * sizeof *keys);
        if (!keys) return mem(x);
        for (size_t i = 0; i < items.u.l->n; i++) {
            jv k = items.u.l->items[i].u.l->items[by_value];
            if (sort_key(x, &k, NULL, p[0] && jv_truthy(p[0]), &keys[i])) return x->code;
        }
        if (sort_items(x, items.u.l->items, keys, items.u.l->n, p[2] && jv_truthy(p[2]))) return x->code;
        *out = items;
        return 0;
    }
    case F_MIN:
    case F_MAX:
        if (bind(x, "min/max", a, s_minmax, 2, p)) return x->code;
        return do_minmax(x, v, p[0], p[1], id == F_MAX, out);
    case F_UNIQUE:
        if (bind(x, "unique", a, s_minmax, 2, p)) return x->code;
        return do_unique(x, v, p[0], p[1], out);
    case F_INDENT:
        if (bind(x, "indent", a, s_indent, 3, p) || jv_to_str(x, v, &s)) return x->code;
        return do_indent(x, &s, p[0], p[1], p[2], out);
    case F_INT: {
        if (bind(x, "int", a, s_int, 2, p)) return x->code;
        if (p[1] && !(p[1]->t == JV_INT && p[1]->u.i == 10)) return JX_ERR(x, "int: only base 10 is supported");
        int64_t i;
        double f;
        if (v->t == JV_INT || v->t == JV_BOOL) *out = jv_int(v->u.i);
        else if (v->t == JV_STR && parse_int(v, &i) == 0) *out = jv_int(i);
        else if ((v->t == JV_FLOAT && (f = v->u.f, 1)) || (v->t == JV_STR && parse_float(v, &f) == 0)) {
            if (!isfinite(f) || fabs(f) >= 9.2e18) *out = p[0] ? *p[0] : jv_int(0);
            else *out = jv_int((int64_t)f);
        } else {
            *out = p[0] ? *p[0] : jv_int(0);
        }
        return 0;
    }
    case F_FLOAT: {
        if (bind(x, "float", a, s_int, 1, p)) return x->code;
        double f;
        if (jv_is_number(v)) *out = jv_float(jv_num(v));
        else if (v->t == JV_STR && parse_float(v, &f) == 0) *out = jv_float(f);
        else *out = p[0] ? *p[0] : jv_float(0.0);
        return 0;
    }
    case F_ABS:
        if (v->t == JV_FLOAT) *out = jv_float(fabs(v->u.f));
        else if (v->t == JV_INT || v->t == JV_BOOL) {
            if (v->u.i == INT64_MIN) return JX_ERR(x, "integer overflow in abs");
            *out = jv_int(v->u.i < 0 ? -v->u.i : v->u.i);
        } else return JX_ERR(x, "bad operand type for abs(): '%s'", jv_type_name(v));
        return 0;
    case F_ROUND: {
        if (bind(x, "round", a, s_round, 2, p)) return x->code;
        int64_t prec = 0;
        if (p[0] && want_int(x, p[0], "precision", &prec)) return x->code;
        if (!jv_is_number(v)) return JX_ERR(x, "round needs a number");
        const char *m = p[1] && p[1]->t == JV_STR ? p[1]->u.s.p : "common";
        size_t mn = p[1] && p[1]->t == JV_STR ? p[1]->u.s.n : 6;
        double scale = pow(10.0, (double)TM_MAX(TM_MIN(prec, 300), -300)), d = jv_num(v) * scale;
        if (NAME_IS(m, mn, "common") && prec >= 0 && isfinite(jv_num(v))) {
            /* Python rounds the exact binary value, half to even: so does printf */
            char buf[400];
            snprintf(buf, sizeof buf, "%.*f", (int)TM_MIN(prec, 300), jv_num(v));
            *out = v->t == JV_FLOAT ? jv_float(strtod(buf, NULL)) : *v;
            return 0;
        }
        if (NAME_IS(m, mn, "common")) d = nearbyint(d);
        else if (NAME_IS(m, mn, "ceil")) d = ceil(d);
        else if (NAME_IS(m, mn, "floor")) d = floor(d);
        else return JX_ERR(x, "method must be common, ceil or floor");
        *out = jv_float(d / scale);
        if (v->t != JV_FLOAT && NAME_IS(m, mn, "common") && prec >= 0) *out = *v; /* round(int) is the int */
        return 0;
    }
    case F_SUM: {
        if (bind(x, "sum", a, s_sum, 2, p)) return x->code;
        jlist *items = NULL;
        if (je_iterate(x, v, &items)) return x->code;
        jv acc = p[1] ? *p[1] : jv_int(0);
        for (size_t i = 0; i < items->n; i++) {
            jv it = items->items[i];
            if (p[0] && attr_path(x, &items->items[i], p[0], &it)) return x->code;
            if (!jv_is_number(&acc) || !jv_is_number(&it))
                return JX_ERR(x, "unsupported operand type(s) for +: '%s' and '%s'", jv_type_name(&acc), jv_type_name(&it));
            int64_t r;
            if (acc.t != JV_FLOAT && it.t != JV_FLOAT && !__builtin_add_overflow(acc.u.i, it.u.i, &r)) acc = jv_int(r);
            else acc = jv_float(jv_num(&acc) + jv_num(&it));
        }
        *out = acc;
        return 0;
    }
    case F_CENTER: {
        if (bind(x, "center", a, s_center, 1, p) || jv_to_str(x, v, &s)) return x->code;
        int64_t w = 80;
        if (p[0] && want_int(x, p[0], "width", &w)) return x->code;
        int64_t len = (int64_t)jv_u8count(s.u.s.p, s.u.s.n);
        if (w <= len) {
            *out = s;
            return 0;
        }
        if (w > (int64_t)x->lim->max_output_bytes) return JX_ERR(x, "center width too large");
        /* Python: left = pad // 2 + (pad & width & 1) */
        int64_t pad = w - len, left = pad / 2 + (pad & w & 1);
        char *o = NULL;
        if (newstr(x, s.u.s.n + (size_t)pad, &o)) return x->code;
        memset(o, ' ', (size_t)left);
        memcpy(o + left, s.u.s.p, s.u.s.n);
        memset(o + left + s.u.s.n, ' ', (size_t)(pad - left));
        *out = jv_str(o, s.u.s.n + (size_t)pad);
        return 0;
    }
    case F_WORDCOUNT: {
        if (jv_to_str(x, v, &s)) return x->code;
        int64_t n = 0;
        int in = 0;
        for (size_t i = 0; i < s.u.s.n; i++) {
            unsigned char c = (unsigned char)s.u.s.p[i];
            int w = isalnum(c) || c == '_' || c >= 0x80;
            n += w && !in;
            in = w;
        }
        *out = jv_int(n);
        return 0;
    }
    case F_ATTR:
        if (bind(x, "attr", a, s_attr, 1, p)) return x->code;
        if (!p[0]) return JX_ERR(x, "attr needs an argument: the attribute name");
        if (want_str(x, p[0], "attribute name")) return x->code;
        if (v->t == JV_DICT) { /* attribute only, never an item */
            if (!jb_method(x, v, p[0]->u.s.p, p[0]->u.s.n, out)) *out = jv_undef("no such attribute");
            return x->failed ? x->code : 0;
        }
        return je_getattr(x, v, p[0]->u.s.p, p[0]->u.s.n, out);
    case F_BATCH: {
        if (bind(x, "batch", a, s_batch, 2, p)) return x->code;
        int64_t n = 0;
        if (!p[0]) return JX_ERR(x, "batch needs an argument: the line count");
        if (want_int(x, p[0], "linecount", &n)) return x->code;
        if (n <= 0) return JX_ERR(x, "batch size must be positive");
        jlist *items = NULL;
        if (je_iterate(x, v, &items)) return x->code;
        size_t groups = (items->n + (size_t)n - 1) / (size_t)n;
        jlist *l = jv_list_new(x, groups);
        if (!l) return x->code;
        for (size_t g = 0; g < groups; g++) {
            size_t lo = g * (size_t)n, cnt = TM_MIN((size_t)n, items->n - lo);
            jlist *b = jv_list_new(x, p[1] ? (size_t)n : cnt);
            if (!b) return x->code;
            for (size_t i = 0; i < b->n; i++) b->items[i] = i < cnt ? items->items[lo + i] : *p[1];
            l->items[g] = jv_list(b, 0);
        }
        *out = jv_gen(l);
        return 0;
    }
    default: return JX_ERR(x, "unknown filter");
    }
}

/* jinja_builtins.c - the builtins' names (filters and tests resolved at parse time), call
 * arguments, the global functions (range, namespace, dict, raise_exception, strftime_now)
 * and the tests, with the behaviour of jinja2 3.1 and Python 3 as Hugging Face
 * transformers configures them (the sandbox refuses what mutates; range() is capped at
 * 100000 items). Methods are in jinja_strings.c, filters in jinja_filters.c.
 *
 * Known differences: upper/lower/title/capitalize change ASCII letters only; the jinja2
 * filters format, truncate, wordwrap, urlize, groupby, slice, random, pprint, striptags,
 * xmlattr, filesizeformat and urlencode are absent, so a template naming one fails to
 * parse with "no filter named". */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/jinja_builtins.h"

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

int jb_global(const char *name, size_t n, jv *out) {
    for (size_t i = 0; i < TM_ARRAY_LEN(k_globals); i++)
        if (strlen(k_global_names[i]) == n && !memcmp(k_global_names[i], name, n)) {
            *out = jb_func(&k_globals[i]);
            return 1;
        }
    return 0;
}

/* ---- arguments ---- */

/* Binds args to params (names, in order): out[i] is the value or NULL. Fails on too many
 * positional arguments or an unknown keyword, as Python would. */
int jb_bind(jctx *x, const char *fname, const jargs *a, const char *const *params, int n,
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

int jb_want_str(jctx *x, const jv *v, const char *what) {
    if (v->t != JV_STR) return JX_ERR(x, "%s must be a string, not %s", what, jv_type_name(v));
    return 0;
}

int jb_want_int(jctx *x, const jv *v, const char *what, int64_t *out) {
    if (v->t != JV_INT && v->t != JV_BOOL)
        return JX_ERR(x, "%s must be an integer, not %s", what, jv_type_name(v));
    *out = v->u.i;
    return 0;
}

int jb_mem(jctx *x) {
    return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template used more than %zu bytes of memory",
                   x->lim->max_memory_bytes);
}

int jb_newstr(jctx *x, size_t n, char **p) {
    if (n > x->lim->max_output_bytes)
        return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template made a string too large");
    if (jx_steps(x, n / 64)) return x->code;
    *p = ja_alloc(&x->arena, n + 1);
    return *p ? 0 : jb_mem(x);
}

/* ---- global functions ---- */

static int strftime_now(jctx *x, const jv *fmt, jv *out) {
    if (jb_want_str(x, fmt, "strftime_now format")) return x->code;
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
    if (!s) return jb_mem(x);
    *out = jv_str(s, n);
    return 0;
}

static int call_global(jctx *x, int id, const jargs *a, jv *out) {
    switch (id) {
    case G_RANGE: {
        if (a->n_kw || a->n_pos < 1 || a->n_pos > 3) return JX_ERR(x, "range expected 1 to 3 integer arguments");
        int64_t v[3] = {0, 0, 1};
        for (int i = 0; i < a->n_pos; i++)
            if (jb_want_int(x, &a->pos[i], "range() argument", &v[a->n_pos == 1 ? 1 : i])) return x->code;
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
    return jb_call_method(x, b, args, out);
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
        *out = jb_classify(&s, id == T_LOWER ? M_ISLOWER : M_ISUPPER);
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
            *out = jb_find_bytes(o->u.s.p, o->u.s.n, v->u.s.p, v->u.s.n) != NULL;
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


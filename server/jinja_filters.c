#define _GNU_SOURCE
/* jinja_filters.c - jinja2's filters (trim, tojson, map, selectattr, sort, ...) as jinja2
 * 3.1 behaves, tojson as Hugging Face transformers overrides it (Python's json.dumps,
 * ensure_ascii off). select, reject, map, items, unique, batch and reverse give lazy
 * iterators (JVF_GEN), as jinja2's generators: always true, iterable once. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/jinja_builtins.h"

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
        if (jb_want_str(x, name, "test name")) return x->code;
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
        if (a->n_pos < 1 || jb_want_str(x, &a->pos[0], "map filter name"))
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
    if (!case_sensitive && out->t == JV_STR) return jb_case(x, out, CASE_LOWER, out);
    return 0;
}

/* Stable merge sort of items by keys (Python's sorted is stable). */
static int sort_items(jctx *x, jv *items, jv *keys, size_t n, int reverse) {
    if (n < 2) return 0;
    jv *ti = ja_alloc(&x->arena, n * sizeof *ti), *tk = ja_alloc(&x->arena, n * sizeof *tk);
    if (!ti || !tk) return jb_mem(x);
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
    if (!keys) return jb_mem(x);
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
    if (!l || !keys) return x->failed ? x->code : jb_mem(x);
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
        if (jb_want_int(x, width, "indent width", &w)) return x->code;
        if (w < 0) w = 0;
        char *p = NULL;
        if (jb_newstr(x, (size_t)w, &p)) return x->code;
        memset(p, ' ', (size_t)w);
        ind = jv_str(p, (size_t)w);
    }
    /* s + "\n", split into lines, rejoined with the indentation after each newline */
    jbuf t = {0}, b = {0};
    jlist *lines;
    if (jbuf_add(x, &t, s->u.s.p, s->u.s.n) || jbuf_add(x, &t, "\n", 1) ||
        jb_splitlines(x, t.p, t.n, 0, &lines))
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
    if (jb_bind(x, "tojson", a, names, 4, p)) return x->code;
    int64_t indent = -1;
    const char *item_sep = NULL, *key_sep = NULL;
    if (p[1] && p[1]->t != JV_NONE && jb_want_int(x, p[1], "indent", &indent)) return x->code;
    if (indent > 32) indent = 32;
    if (p[2] && p[2]->t != JV_NONE) {
        if (p[2]->t != JV_LIST || p[2]->u.l->n != 2 || p[2]->u.l->items[0].t != JV_STR ||
            p[2]->u.l->items[1].t != JV_STR)
            return JX_ERR(x, "separators must be a pair of strings");
        item_sep = ja_strdup(&x->arena, p[2]->u.l->items[0].u.s.p, p[2]->u.l->items[0].u.s.n);
        key_sep = ja_strdup(&x->arena, p[2]->u.l->items[1].u.s.p, p[2]->u.l->items[1].u.s.n);
        if (!item_sep || !key_sep) return jb_mem(x);
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
        if (jb_bind(x, "default", a, s_default, 2, p)) return x->code;
        if (v->t == JV_UNDEF || (p[1] && jv_truthy(p[1]) && !jv_truthy(v))) *out = p[0] ? *p[0] : jv_str("", 0);
        else *out = *v;
        return 0;
    case F_TRIM:
        if (jb_bind(x, "trim", a, s_trim, 1, p) || jv_to_str(x, v, &s)) return x->code;
        return jb_strip(x, &s, p[0], 1, 1, out);
    case F_UPPER: case F_LOWER: case F_TITLE: case F_CAPITALIZE:
        if (jb_bind(x, "filter", a, none, 0, p) || jv_to_str(x, v, &s)) return x->code;
        return jb_case(x, &s, id == F_UPPER ? CASE_UPPER : id == F_LOWER ? CASE_LOWER
                              : id == F_TITLE ? CASE_TITLE : CASE_CAPITALIZE, out);
    case F_STRING:
    case F_SAFE:
        if (jb_bind(x, "string", a, none, 0, p)) return x->code;
        return jv_to_str(x, v, out);
    case F_ESCAPE: return do_escape(x, v, out);
    case F_COUNT: {
        int64_t n = 0;
        if (jb_bind(x, "length", a, none, 0, p) || length_of(x, v, &n)) return x->code;
        *out = jv_int(n);
        return 0;
    }
    case F_ITEMS: {
        if (v->t == JV_UNDEF) return (*out = jv_gen(jv_list_new(x, 0))).u.l ? 0 : x->code;
        if (v->t != JV_DICT) return JX_ERR(x, "Can only get item pairs from a mapping.");
        jbound b = {*v, M_ITEMS};
        jargs none_args = {0};
        if (jb_call_method(x, &b, &none_args, out)) return x->code;
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
        if (jb_bind(x, "join", a, s_join, 2, p)) return x->code;
        jv sep = jv_str("", 0);
        if (p[0] && jv_to_str(x, p[0], &sep)) return x->code;
        jv seq = *v;
        if (p[1]) {
            jargs ma = {.kw = (const char *[]){"attribute"}, .kw_len = (size_t[]){9},
                        .kw_val = (jv *)p[1], .n_kw = 1};
            if (do_map(x, v, &ma, &seq)) return x->code;
        }
        return jb_join(x, &sep, &seq, 1, out);
    }
    case F_REPLACE:
        if (jb_bind(x, "replace", a, s_replace, 3, p) || jv_to_str(x, v, &s)) return x->code;
        if (!p[0] || !p[1]) return JX_ERR(x, "replace needs old and new strings");
        return jb_replace(x, &s, p[0], p[1], p[2], out);
    case F_REVERSE: {
        if (v->t == JV_STR) {
            jlist *cps = NULL;
            char *w = NULL;
            if (je_iterate(x, v, &cps) || jb_newstr(x, v->u.s.n, &w)) return x->code;
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
        if (jb_bind(x, "sort", a, s_sort, 3, p)) return x->code;
        return do_sort(x, v, p[0], p[1], p[2], out);
    case F_DICTSORT: {
        if (jb_bind(x, "dictsort", a, s_dictsort, 3, p)) return x->code;
        if (v->t != JV_DICT) return JX_ERR(x, "dictsort needs a mapping");
        int by_value = p[1] && p[1]->t == JV_STR && p[1]->u.s.n == 5 && !memcmp(p[1]->u.s.p, "value", 5);
        jbound b = {*v, M_ITEMS};
        jargs none_args = {0};
        jv items;
        if (jb_call_method(x, &b, &none_args, &items)) return x->code;
        jv *keys = ja_alloc(&x->arena, (items.u.l->n + 1) * sizeof *keys);
        if (!keys) return jb_mem(x);
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
        if (jb_bind(x, "min/max", a, s_minmax, 2, p)) return x->code;
        return do_minmax(x, v, p[0], p[1], id == F_MAX, out);
    case F_UNIQUE:
        if (jb_bind(x, "unique", a, s_minmax, 2, p)) return x->code;
        return do_unique(x, v, p[0], p[1], out);
    case F_INDENT:
        if (jb_bind(x, "indent", a, s_indent, 3, p) || jv_to_str(x, v, &s)) return x->code;
        return do_indent(x, &s, p[0], p[1], p[2], out);
    case F_INT: {
        if (jb_bind(x, "int", a, s_int, 2, p)) return x->code;
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
        if (jb_bind(x, "float", a, s_int, 1, p)) return x->code;
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
        if (jb_bind(x, "round", a, s_round, 2, p)) return x->code;
        int64_t prec = 0;
        if (p[0] && jb_want_int(x, p[0], "precision", &prec)) return x->code;
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
        if (jb_bind(x, "sum", a, s_sum, 2, p)) return x->code;
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
        if (jb_bind(x, "center", a, s_center, 1, p) || jv_to_str(x, v, &s)) return x->code;
        int64_t w = 80;
        if (p[0] && jb_want_int(x, p[0], "width", &w)) return x->code;
        int64_t len = (int64_t)jv_u8count(s.u.s.p, s.u.s.n);
        if (w <= len) {
            *out = s;
            return 0;
        }
        if (w > (int64_t)x->lim->max_output_bytes) return JX_ERR(x, "center width too large");
        /* Python: left = pad // 2 + (pad & width & 1) */
        int64_t pad = w - len, left = pad / 2 + (pad & w & 1);
        char *o = NULL;
        if (jb_newstr(x, s.u.s.n + (size_t)pad, &o)) return x->code;
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
        if (jb_bind(x, "attr", a, s_attr, 1, p)) return x->code;
        if (!p[0]) return JX_ERR(x, "attr needs an argument: the attribute name");
        if (jb_want_str(x, p[0], "attribute name")) return x->code;
        if (v->t == JV_DICT) { /* attribute only, never an item */
            if (!jb_method(x, v, p[0]->u.s.p, p[0]->u.s.n, out)) *out = jv_undef("no such attribute");
            return x->failed ? x->code : 0;
        }
        return je_getattr(x, v, p[0]->u.s.p, p[0]->u.s.n, out);
    case F_BATCH: {
        if (jb_bind(x, "batch", a, s_batch, 2, p)) return x->code;
        int64_t n = 0;
        if (!p[0]) return JX_ERR(x, "batch needs an argument: the line count");
        if (jb_want_int(x, p[0], "linecount", &n)) return x->code;
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


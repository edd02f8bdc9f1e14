#define _GNU_SOURCE /* memmem */
/* jinja_strings.c - the methods of str, dict and list values ("a b".split(), d.items(),
 * ...) and the Python string operations filters share (strip, case, split, replace,
 * join), with Python's semantics over code points; mutating methods are refused as the
 * sandbox refuses them. */
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

static int bind_method(jctx *x, const jv *self, int id, jv *out) {
    jbound *b = ja_alloc(&x->arena, sizeof *b);
    if (!b) {
        jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template used too much memory");
        return 1;
    }
    b->self = *self;
    b->id = id;
    *out = jb_func(b);
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
int jb_strip(jctx *x, const jv *s, const jv *chars, int left, int right, jv *out) {
    if (chars && chars->t == JV_NONE) chars = NULL;
    if (chars && jb_want_str(x, chars, "strip argument")) return x->code;
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

int jb_case(jctx *x, const jv *s, case_mode m, jv *out) {
    char *w = NULL;
    if (jb_newstr(x, s->u.s.n, &w)) return x->code;
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

const char *jb_find_bytes(const char *h, size_t hn, const char *n, size_t nn) {
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
    if (sep && jb_want_str(x, sep, "separator")) return x->code;
    if (sep && sep->u.s.n == 0) return JX_ERR(x, "empty separator");
    if (maxv && jb_want_int(x, maxv, "maxsplit", &max)) return x->code;
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
                    if (jb_strip(x, &(jv){.t = JV_STR, .u.s = {p, (size_t)(e - p)}}, NULL, 0, 1, &rest) ||
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
                                    ? jb_find_bytes(p, (size_t)(e - p), sep->u.s.p, sep->u.s.n) : NULL;
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

int jb_splitlines(jctx *x, const char *p, size_t n, int keepends, jlist **out) {
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

int jb_replace(jctx *x, const jv *s, const jv *old, const jv *new_, const jv *countv, jv *out) {
    int64_t count = -1;
    if (jb_want_str(x, old, "replace() argument 1") || jb_want_str(x, new_, "replace() argument 2")) return x->code;
    if (countv && countv->t != JV_NONE && jb_want_int(x, countv, "count", &count)) return x->code;
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
        const char *q = count < 0 || done < count ? jb_find_bytes(p, (size_t)(e - p), old->u.s.p, old->u.s.n) : NULL;
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

int jb_classify(const jv *s, int id) {
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

int jb_join(jctx *x, const jv *sep, const jv *iterable, int str_items, jv *out) {
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

int jb_call_method(jctx *x, const jbound *b, const jargs *a, jv *out) {
    const jv *s = &b->self;
    const jv *p[3];
    static const char *const two[] = {"a", "b", "c"};
    if (b->id == M_CYCLE) {
        if (a->n_pos == 0) return JX_ERR(x, "no items for cycling given");
        *out = a->pos[s->u.lp->index0 % (size_t)a->n_pos]; /* the loop's index picks the item */
        return 0;
    }
    if (a->n_kw) return JX_ERR(x, "this method takes no keyword arguments");
    if (jb_bind(x, "method", a, two, 3, p)) return x->code;
    switch (b->id) {
    case M_STRIP: return jb_strip(x, s, p[0], 1, 1, out);
    case M_LSTRIP: return jb_strip(x, s, p[0], 1, 0, out);
    case M_RSTRIP: return jb_strip(x, s, p[0], 0, 1, out);
    case M_SPLIT: return do_split(x, s, p[0], p[1], 0, out);
    case M_RSPLIT: return do_split(x, s, p[0], p[1], 1, out);
    case M_SPLITLINES: {
        jlist *l = NULL;
        if (jb_splitlines(x, s->u.s.p, s->u.s.n, p[0] && jv_truthy(p[0]), &l)) return x->code;
        *out = jv_list(l, 0);
        return 0;
    }
    case M_STARTSWITH:
    case M_ENDSWITH:
        if (!p[0]) return JX_ERR(x, "startswith/endswith takes at least 1 argument");
        if (p[1]) return JX_ERR(x, "start and end arguments of startswith/endswith are not supported");
        return do_affix(x, s, p[0], b->id == M_ENDSWITH, out);
    case M_UPPER: return jb_case(x, s, CASE_UPPER, out);
    case M_LOWER: return jb_case(x, s, CASE_LOWER, out);
    case M_TITLE: return jb_case(x, s, CASE_TITLE, out);
    case M_CAPITALIZE: return jb_case(x, s, CASE_CAPITALIZE, out);
    case M_REPLACE:
        if (!p[0] || !p[1]) return JX_ERR(x, "replace() takes at least 2 arguments");
        return jb_replace(x, s, p[0], p[1], p[2], out);
    case M_FIND:
    case M_RFIND: {
        if (!p[0]) return JX_ERR(x, "find() takes at least 1 argument");
        if (jb_want_str(x, p[0], "find() argument")) return x->code;
        if (p[1]) return JX_ERR(x, "start and end arguments of find are not supported");
        if (jx_steps(x, s->u.s.n / 32)) return x->code;
        const char *at = b->id == M_FIND ? jb_find_bytes(s->u.s.p, s->u.s.n, p[0]->u.s.p, p[0]->u.s.n)
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
        if (jb_want_str(x, p[0], "count() argument")) return x->code;
        if (jx_steps(x, s->u.s.n / 32)) return x->code;
        if (p[0]->u.s.n == 0) {
            *out = jv_int((int64_t)jv_u8count(s->u.s.p, s->u.s.n) + 1);
            return 0;
        }
        int64_t c = 0;
        const char *q = s->u.s.p, *e = q + s->u.s.n;
        while ((q = jb_find_bytes(q, (size_t)(e - q), p[0]->u.s.p, p[0]->u.s.n))) c++, q += p[0]->u.s.n;
        *out = jv_int(c);
        return 0;
    }
    case M_JOIN:
        if (!p[0]) return JX_ERR(x, "join() takes exactly one argument");
        return jb_join(x, s, p[0], 0, out);
    case M_ISDIGIT: case M_ISALPHA: case M_ISALNUM: case M_ISSPACE: case M_ISLOWER: case M_ISUPPER:
        *out = jv_bool(jb_classify(s, b->id));
        return 0;
    case M_REMOVEPREFIX:
    case M_REMOVESUFFIX: {
        if (!p[0]) return JX_ERR(x, "removeprefix/removesuffix take exactly one argument");
        if (jb_want_str(x, p[0], "argument")) return x->code;
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


#define _GNU_SOURCE /* memmem */
/* jinja_eval.c - renders a parsed template: statements, expressions and scoping as
 * jinja2 has them.
 *
 * Scoping: the caller's variables, then the top-level scope; a for loop gives each
 * iteration a fresh scope over the enclosing one (a `set` inside does not leak out, which
 * is why namespaces exist); a macro call gets a scope over the scope the macro was defined
 * in, read at call time; `if` makes no scope. Undefined names are values until used in a
 * way that needs them (arithmetic, attributes, calls), as jinja2's default Undefined.
 * Every node visited is a step; builtins add steps for the bytes they touch. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/jinja_internal.h"

enum { FLOW_BREAK = 1, FLOW_CONTINUE = 2 }; /* statement results besides 0 and errors */

struct jscope {
    jscope *parent;    /* enclosing scope, NULL at the top */
    size_t n, cap;     /* variables */
    const char **name; /* (cap) */
    size_t *len;       /* (cap) */
    jv *val;           /* (cap) */
    int captured;      /* a macro closes over it: never reuse it */
};

typedef struct jmacro {
    const jnode *def;  /* S_MACRO */
    jscope *closure;   /* where it was defined */
} jmacro;

/* ---- context ---- */

int jx_fail(jctx *x, int failure, int code, const char *fmt, ...) {
    if (x->failed) return x->code;
    x->failed = failure;
    x->code = code;
    if (x->err && x->err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err, x->err_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

int jx_steps(jctx *x, uint64_t n) {
    if (x->failed) return x->code;
    x->steps += n;
    if (x->steps > x->lim->max_steps)
        return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template ran more than %llu steps",
                       (unsigned long long)x->lim->max_steps);
    return 0;
}

int jx_emit(jctx *x, const char *s, size_t n) { return jbuf_add(x, x->out, s, n); }

static int mem_fail(jctx *x) {
    return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template used more than %zu bytes of memory",
                   x->lim->max_memory_bytes);
}

static const char *hintf(jctx *x, const char *fmt, const char *name, size_t n) {
    char buf[160];
    snprintf(buf, sizeof buf, fmt, (int)TM_MIN(n, 80), name);
    char *s = ja_strdup(&x->arena, buf, strlen(buf));
    return s ? s : "undefined value";
}

/* The error for using an undefined value where a value is needed. */
static int undefined_error(jctx *x, const jv *v) {
    if (!v->u.s.p || !v->u.s.n) return JX_ERR(x, "undefined value");
    return JX_ERR(x, "%.*s", (int)TM_MIN(v->u.s.n, 200), v->u.s.p);
}

/* ---- scopes ---- */

static jscope *scope_new(jctx *x, jscope *parent) {
    jscope *s = ja_alloc(&x->arena, sizeof *s);
    if (!s) return mem_fail(x), NULL;
    s->parent = parent;
    return s;
}

static int scope_set(jctx *x, jscope *s, const char *name, size_t n, jv v) {
    for (size_t i = 0; i < s->n; i++)
        if (s->len[i] == n && !memcmp(s->name[i], name, n)) {
            s->val[i] = v;
            return 0;
        }
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4;
        const char **nm = ja_alloc(&x->arena, cap * sizeof *nm);
        size_t *ln = ja_alloc(&x->arena, cap * sizeof *ln);
        jv *vl = ja_alloc(&x->arena, cap * sizeof *vl);
        if (!nm || !ln || !vl) return mem_fail(x);
        if (s->n) {
            memcpy(nm, s->name, s->n * sizeof *nm);
            memcpy(ln, s->len, s->n * sizeof *ln);
            memcpy(vl, s->val, s->n * sizeof *vl);
        }
        s->name = nm, s->len = ln, s->val = vl, s->cap = cap;
    }
    s->name[s->n] = name;
    s->len[s->n] = n;
    s->val[s->n] = v;
    s->n++;
    return 0;
}

static jv lookup(jctx *x, const jscope *s, const char *name, size_t n) {
    for (; s; s = s->parent)
        for (size_t i = s->n; i-- > 0;)
            if (s->len[i] == n && !memcmp(s->name[i], name, n)) return s->val[i];
    const jv *v = jv_dict_get_str(x->vars, name, n);
    if (v) return *v;
    jv g;
    if (jb_global(name, n, &g)) return g;
    return jv_undef(hintf(x, "'%.*s' is undefined", name, n));
}

/* ---- attribute and item access ---- */

static int loop_attr(jctx *x, const jv *obj, const char *a, size_t n, jv *out) {
    const jloop *lp = obj->u.lp;
    size_t len = lp->items->n, i = lp->index0;
#define IS(s) (n == sizeof(s) - 1 && !memcmp(a, s, n))
    if (IS("index")) *out = jv_int((int64_t)i + 1);
    else if (IS("index0")) *out = jv_int((int64_t)i);
    else if (IS("revindex")) *out = jv_int((int64_t)(len - i));
    else if (IS("revindex0")) *out = jv_int((int64_t)(len - i - 1));
    else if (IS("first")) *out = jv_bool(i == 0);
    else if (IS("last")) *out = jv_bool(i + 1 == len);
    else if (IS("length")) *out = jv_int((int64_t)len);
    else if (IS("depth")) *out = jv_int(1);
    else if (IS("depth0")) *out = jv_int(0);
    else if (IS("previtem")) *out = i > 0 ? lp->items->items[i - 1] : jv_undef("there is no previous item");
    else if (IS("nextitem")) *out = i + 1 < len ? lp->items->items[i + 1] : jv_undef("there is no next item");
    else if (!jb_method(x, obj, a, n, out))
        *out = jv_undef(hintf(x, "'LoopContext object' has no attribute '%.*s'", a, n));
#undef IS
    return x->failed ? x->code : 0;
}

static const char *object_name(const jv *v) {
    switch (v->t) {
    case JV_NONE: return "'None'";
    case JV_STR: return "'str object'";
    case JV_LIST: return v->flags & JVF_TUPLE ? "'tuple object'" : "'list object'";
    case JV_DICT: return "'dict object'";
    case JV_INT: return "'int object'";
    case JV_FLOAT: return "'float object'";
    case JV_BOOL: return "'bool object'";
    default: return "'object'";
    }
}

static jv no_attr(jctx *x, const jv *obj, const char *a, size_t n) {
    char fmt[96];
    snprintf(fmt, sizeof fmt, "%s has no attribute '%%.*s'", object_name(obj));
    return jv_undef(hintf(x, fmt, a, n));
}

int je_getattr(jctx *x, const jv *obj, const char *a, size_t n, jv *out) {
    if (jx_steps(x, 1)) return x->code;
    switch (obj->t) {
    case JV_UNDEF: return undefined_error(x, obj);
    case JV_LOOP: return loop_attr(x, obj, a, n, out);
    case JV_NS: {
        const jv *v = jv_dict_get_str(obj->u.d, a, n);
        *out = v ? *v : jv_undef(hintf(x, "'Namespace object' has no attribute '%.*s'", a, n));
        return 0;
    }
    case JV_DICT: {
        if (jb_method(x, obj, a, n, out)) return x->failed ? x->code : 0;
        if (jx_steps(x, obj->u.d->n / 32)) return x->code;
        const jv *v = jv_dict_get_str(obj->u.d, a, n);
        *out = v ? *v : no_attr(x, obj, a, n);
        return 0;
    }
    default:
        if (!jb_method(x, obj, a, n, out)) *out = no_attr(x, obj, a, n);
        return x->failed ? x->code : 0;
    }
}

/* Byte offset of code point i in s (i <= count), walking from the start. */
static size_t u8_offset(const char *p, size_t n, size_t i) {
    size_t off = 0;
    for (; i > 0 && off < n; i--) off += jv_u8len(p + off, p + n);
    return off;
}

static int seq_len(jctx *x, const jv *v, size_t *len) {
    if (v->flags & JVF_GEN) return JX_ERR(x, "'generator' object is not subscriptable");
    if (v->t == JV_STR) {
        if (jx_steps(x, v->u.s.n / 64)) return x->code;
        *len = jv_u8count(v->u.s.p, v->u.s.n);
    } else {
        *len = v->u.l->n;
    }
    return 0;
}

int je_getitem(jctx *x, const jv *obj, const jv *key, jv *out) {
    if (jx_steps(x, 1)) return x->code;
    if (obj->t == JV_UNDEF) return undefined_error(x, obj);
    if (obj->t == JV_DICT) {
        const jv *v = jv_dict_get(x, obj->u.d, *key);
        if (x->failed) return x->code;
        if (v) {
            *out = *v;
            return 0;
        }
    } else if ((obj->t == JV_LIST || obj->t == JV_STR) && !(obj->flags & JVF_GEN) &&
               (key->t == JV_INT || key->t == JV_BOOL)) {
        size_t len = 0;
        if (seq_len(x, obj, &len)) return x->code;
        int64_t i = key->u.i;
        if (i < 0) i += (int64_t)len;
        if (i < 0 || (uint64_t)i >= len) {
            *out = jv_undef(obj->t == JV_STR ? "string index out of range" : "list index out of range");
            return 0;
        }
        if (obj->t == JV_LIST) {
            *out = obj->u.l->items[i];
        } else {
            size_t off = u8_offset(obj->u.s.p, obj->u.s.n, (size_t)i);
            *out = jv_str(obj->u.s.p + off, jv_u8len(obj->u.s.p + off, obj->u.s.p + obj->u.s.n));
        }
        return 0;
    }
    if (key->t == JV_STR && obj->t != JV_DICT) return je_getattr(x, obj, key->u.s.p, key->u.s.n, out);
    if (key->t == JV_STR && jb_method(x, obj, key->u.s.p, key->u.s.n, out)) return x->failed ? x->code : 0;
    if (key->t == JV_STR) *out = no_attr(x, obj, key->u.s.p, key->u.s.n);
    else *out = jv_undef(hintf(x, "%.*s has no item for this key", object_name(obj), strlen(object_name(obj))));
    return 0;
}

/* Python's slice.indices(len) for one bound. */
static int64_t slice_bound(int has, int64_t v, int64_t len, int64_t step, int is_start) {
    if (!has) return step < 0 ? (is_start ? len - 1 : -1) : (is_start ? 0 : len);
    if (v < 0) {
        v += len;
        if (v < 0) v = step < 0 ? -1 : 0;
    } else if (v >= len) {
        v = step < 0 ? len - 1 : len;
    }
    return v;
}

static int slice(jctx *x, const jv *obj, const jv *b[3], jv *out) {
    if (obj->t == JV_UNDEF) return undefined_error(x, obj);
    if ((obj->t != JV_LIST && obj->t != JV_STR) || (obj->flags & JVF_GEN)) {
        /* jinja2 turns the TypeError of obj[slice] into an undefined value */
        *out = jv_undef("this object cannot be sliced");
        return 0;
    }
    int64_t v[3] = {0, 0, 1};
    int has[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) {
        if (!b[k] || b[k]->t == JV_NONE) continue;
        if (b[k]->t != JV_INT && b[k]->t != JV_BOOL)
            return JX_ERR(x, "slice indices must be integers or None");
        v[k] = b[k]->u.i, has[k] = 1;
    }
    if (v[2] == 0) return JX_ERR(x, "slice step cannot be zero");
    if (v[2] == INT64_MIN) v[2] = INT64_MIN + 1;
    size_t len = 0;
    if (seq_len(x, obj, &len)) return x->code;
    int64_t start = slice_bound(has[0], v[0], (int64_t)len, v[2], 1);
    int64_t stop = slice_bound(has[1], v[1], (int64_t)len, v[2], 0);
    int64_t step = v[2];
    size_t count = step > 0 ? (stop > start ? (size_t)((stop - start - 1) / step + 1) : 0)
                            : (start > stop ? (size_t)((start - stop - 1) / -step + 1) : 0);
    if (jx_steps(x, count / 16)) return x->code;
    if (obj->t == JV_LIST) {
        jlist *l = jv_list_new(x, count);
        if (!l) return x->code;
        for (size_t i = 0; i < count; i++) l->items[i] = obj->u.l->items[start + (int64_t)i * step];
        *out = jv_list(l, obj->flags & JVF_TUPLE);
        return 0;
    }
    const char *p = obj->u.s.p;
    size_t n = obj->u.s.n;
    if (step == 1) { /* a view into the same bytes */
        size_t a = u8_offset(p, n, (size_t)start), e = a + u8_offset(p + a, n - a, count);
        *out = jv_str(p + a, e - a);
        return 0;
    }
    /* code point offsets, then pick */
    size_t *offs = ja_alloc(&x->arena, (len + 1) * sizeof *offs);
    char *w = offs ? ja_alloc(&x->arena, n + 1) : NULL;
    if (!w) return mem_fail(x);
    for (size_t i = 0, off = 0; i <= len; i++) {
        offs[i] = off;
        if (off < n) off += jv_u8len(p + off, p + n);
    }
    size_t m = 0;
    for (size_t i = 0; i < count; i++) {
        size_t c = (size_t)(start + (int64_t)i * step);
        memcpy(w + m, p + offs[c], offs[c + 1] - offs[c]);
        m += offs[c + 1] - offs[c];
    }
    *out = jv_str(w, m);
    return 0;
}

int je_iterate(jctx *x, const jv *v, jlist **out) {
    switch (v->t) {
    case JV_UNDEF: return (*out = jv_list_new(x, 0)) ? 0 : x->code;
    case JV_LIST:
        if (v->flags & JVF_GEN) { /* one pass: later ones see an exhausted iterator */
            if (v->u.l->used) return (*out = jv_list_new(x, 0)) ? 0 : x->code;
            v->u.l->used = 1;
        }
        *out = v->u.l;
        return 0;
    case JV_DICT: {
        jlist *l = jv_list_new(x, v->u.d->n);
        if (!l) return x->code;
        if (v->u.d->n) memcpy(l->items, v->u.d->keys, v->u.d->n * sizeof *l->items);
        *out = l;
        return 0;
    }
    case JV_STR: {
        size_t len = 0;
        if (seq_len(x, v, &len)) return x->code;
        jlist *l = jv_list_new(x, len);
        if (!l) return x->code;
        const char *p = v->u.s.p, *end = p + v->u.s.n;
        for (size_t i = 0; i < len; i++) {
            size_t k = jv_u8len(p, end);
            l->items[i] = jv_str(p, k);
            p += k;
        }
        *out = l;
        return 0;
    }
    default: return JX_ERR(x, "'%s' object is not iterable", jv_type_name(v));
    }
}

/* ---- arithmetic ---- */

static int type_error(jctx *x, const char *op, const jv *a, const jv *b) {
    return JX_ERR(x, "unsupported operand type(s) for %s: '%s' and '%s'", op, jv_type_name(a),
                  jv_type_name(b));
}

static int concat(jctx *x, const jv *a, const jv *b, jv *out) {
    jbuf buf = {0};
    if (jv_str_to(x, &buf, a) || jv_str_to(x, &buf, b)) {
        jbuf_free(&buf);
        return x->code;
    }
    return jbuf_take(x, &buf, out);
}

/* seq * count for a string or list. */
static int repeat(jctx *x, const jv *seq, int64_t count, jv *out) {
    if (count < 0) count = 0;
    if (seq->t == JV_STR) {
        if (seq->u.s.n && (uint64_t)count > x->lim->max_output_bytes / seq->u.s.n)
            return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "the template made a string too large");
        size_t n = seq->u.s.n * (size_t)count;
        if (jx_steps(x, n / 64)) return x->code;
        char *p = ja_alloc(&x->arena, n + 1);
        if (!p) return mem_fail(x);
        for (int64_t i = 0; i < count; i++) memcpy(p + (size_t)i * seq->u.s.n, seq->u.s.p, seq->u.s.n);
        *out = jv_str(p, n);
        return 0;
    }
    const jlist *l = seq->u.l;
    if (l->n && (uint64_t)count > x->lim->max_memory_bytes / sizeof(jv) / l->n) return mem_fail(x);
    size_t n = l->n * (size_t)count;
    if (jx_steps(x, n / 16)) return x->code;
    jlist *r = jv_list_new(x, n);
    if (!r) return x->code;
    for (size_t i = 0; i < n; i++) r->items[i] = l->items[i % l->n];
    *out = jv_list(r, seq->flags & JVF_TUPLE);
    return 0;
}

static int int_pow(jctx *x, int64_t b, int64_t e, jv *out) {
    int64_t r = 1;
    while (e > 0) {
        if ((e & 1) && __builtin_mul_overflow(r, b, &r)) goto overflow;
        e >>= 1;
        if (e && __builtin_mul_overflow(b, b, &b)) goto overflow;
    }
    *out = jv_int(r);
    return 0;
overflow:
    return JX_ERR(x, "integer overflow in **");
}

static int binop(jctx *x, int op, const jv *a, const jv *b, jv *out) {
    const char *name = jl_op_text(op);
    if (op == OP_TILDE) return concat(x, a, b, out);
    if (a->t == JV_UNDEF) return undefined_error(x, a);
    if (b->t == JV_UNDEF) return undefined_error(x, b);
    int ints = (a->t == JV_INT || a->t == JV_BOOL) && (b->t == JV_INT || b->t == JV_BOOL);
    int nums = jv_is_number(a) && jv_is_number(b);
    int64_t r;
    switch (op) {
    case OP_ADD:
        if (ints) {
            if (__builtin_add_overflow(a->u.i, b->u.i, &r)) return JX_ERR(x, "integer overflow in +");
            *out = jv_int(r);
        } else if (nums) {
            *out = jv_float(jv_num(a) + jv_num(b));
        } else if (a->t == JV_STR && b->t == JV_STR) {
            return concat(x, a, b, out);
        } else if (a->t == JV_LIST && b->t == JV_LIST && (a->flags & JVF_TUPLE) == (b->flags & JVF_TUPLE)) {
            jlist *l = jv_list_new(x, a->u.l->n + b->u.l->n);
            if (!l || jx_steps(x, l->n / 16)) return x->code;
            if (a->u.l->n) memcpy(l->items, a->u.l->items, a->u.l->n * sizeof *l->items);
            if (b->u.l->n) memcpy(l->items + a->u.l->n, b->u.l->items, b->u.l->n * sizeof *l->items);
            *out = jv_list(l, a->flags & JVF_TUPLE);
        } else {
            return type_error(x, name, a, b);
        }
        return 0;
    case OP_SUB:
        if (ints) {
            if (__builtin_sub_overflow(a->u.i, b->u.i, &r)) return JX_ERR(x, "integer overflow in -");
            *out = jv_int(r);
        } else if (nums) {
            *out = jv_float(jv_num(a) - jv_num(b));
        } else {
            return type_error(x, name, a, b);
        }
        return 0;
    case OP_MUL:
        if (ints) {
            if (__builtin_mul_overflow(a->u.i, b->u.i, &r)) return JX_ERR(x, "integer overflow in *");
            *out = jv_int(r);
            return 0;
        }
        if (nums) {
            *out = jv_float(jv_num(a) * jv_num(b));
            return 0;
        }
        if ((a->t == JV_STR || a->t == JV_LIST) && (b->t == JV_INT || b->t == JV_BOOL))
            return repeat(x, a, b->u.i, out);
        if ((b->t == JV_STR || b->t == JV_LIST) && (a->t == JV_INT || a->t == JV_BOOL))
            return repeat(x, b, a->u.i, out);
        return type_error(x, name, a, b);
    case OP_DIV:
        if (!nums) return type_error(x, name, a, b);
        if (jv_num(b) == 0) return JX_ERR(x, "division by zero");
        *out = jv_float(jv_num(a) / jv_num(b));
        return 0;
    case OP_FLOORDIV:
    case OP_MOD:
        if (a->t == JV_STR && op == OP_MOD)
            return JX_ERR(x, "printf-style formatting with %% is not supported");
        if (!nums) return type_error(x, name, a, b);
        if (jv_num(b) == 0) return JX_ERR(x, op == OP_MOD ? "modulo by zero" : "division by zero");
        if (ints) {
            int64_t p = a->u.i, q = b->u.i;
            if (p == INT64_MIN && q == -1) return JX_ERR(x, "integer overflow in %s", name);
            int64_t d = p / q, m = p % q;
            if (m != 0 && ((m < 0) != (q < 0))) d--, m += q; /* floor, as Python */
            *out = jv_int(op == OP_MOD ? m : d);
        } else {
            double p = jv_num(a), q = jv_num(b), m = fmod(p, q);
            if (m != 0 && ((m < 0) != (q < 0))) m += q;
            *out = jv_float(op == OP_MOD ? m : floor(p / q));
        }
        return 0;
    case OP_POW:
        if (ints && b->u.i >= 0) return int_pow(x, a->u.i, b->u.i, out);
        if (!nums) return type_error(x, name, a, b);
        if (jv_num(a) == 0 && jv_num(b) < 0) return JX_ERR(x, "0.0 cannot be raised to a negative power");
        *out = jv_float(pow(jv_num(a), jv_num(b)));
        return 0;
    default: return JX_ERR(x, "unknown operator");
    }
}

static int contains(jctx *x, const jv *item, const jv *seq, int *out) {
    switch (seq->t) {
    case JV_UNDEF: *out = 0; return 0;
    case JV_STR:
        if (item->t != JV_STR)
            return JX_ERR(x, "'in <string>' requires string as left operand, not %s", jv_type_name(item));
        if (jx_steps(x, seq->u.s.n / 64)) return x->code;
        *out = item->u.s.n == 0 || (item->u.s.n <= seq->u.s.n &&
                                    memmem(seq->u.s.p, seq->u.s.n, item->u.s.p, item->u.s.n) != NULL);
        return 0;
    case JV_LIST:
        if (jx_steps(x, seq->u.l->n / 16)) return x->code;
        *out = 0;
        for (size_t i = 0; i < seq->u.l->n && !*out; i++) *out = jv_equal(item, &seq->u.l->items[i]);
        return 0;
    case JV_DICT:
    case JV_NS:
        *out = jv_dict_get(x, seq->u.d, *item) != NULL;
        return x->failed ? x->code : 0;
    default: return JX_ERR(x, "argument of type '%s' is not iterable", jv_type_name(seq));
    }
}

static int compare_op(jctx *x, int op, const jv *a, const jv *b, int *out) {
    int c = 0;
    switch (op) {
    case OP_EQ: *out = jv_equal(a, b); return 0;
    case OP_NE: *out = !jv_equal(a, b); return 0;
    case OP_IN: return contains(x, a, b, out);
    case OP_NOTIN:
        if (contains(x, a, b, out)) return x->code;
        *out = !*out;
        return 0;
    default:
        if (a->t == JV_UNDEF) return undefined_error(x, a);
        if (b->t == JV_UNDEF) return undefined_error(x, b);
        if (jv_compare(x, a, b, &c)) return x->code;
        *out = op == OP_LT ? c < 0 : op == OP_LE ? c <= 0 : op == OP_GT ? c > 0 : c >= 0;
        return 0;
    }
}

/* ---- expressions ---- */

static int eval(jctx *x, jscope *s, const jnode *n, jv *out);
static int exec_body(jctx *x, jscope *s, jnode *const *body, int n);

static int eval_args(jctx *x, jscope *s, const jnode *n, jargs *a) {
    memset(a, 0, sizeof *a);
    if (n->n == 0) return 0;
    a->pos = ja_alloc(&x->arena, (size_t)n->n * sizeof *a->pos);
    a->kw = ja_alloc(&x->arena, (size_t)n->n * sizeof *a->kw);
    a->kw_len = ja_alloc(&x->arena, (size_t)n->n * sizeof *a->kw_len);
    a->kw_val = ja_alloc(&x->arena, (size_t)n->n * sizeof *a->kw_val);
    if (!a->pos || !a->kw || !a->kw_len || !a->kw_val) return mem_fail(x);
    for (int i = 0; i < n->n; i++) {
        const jnode *arg = n->list[i];
        if (arg->kind == N_KWARG) {
            a->kw[a->n_kw] = arg->name;
            a->kw_len[a->n_kw] = arg->name_len;
            if (eval(x, s, arg->a, &a->kw_val[a->n_kw++])) return x->code;
        } else if (eval(x, s, arg, &a->pos[a->n_pos++])) {
            return x->code;
        }
    }
    return 0;
}

static int call_macro(jctx *x, const jmacro *m, const jargs *args, jv *out) {
    const jnode *def = m->def;
    if (x->depth >= x->lim->max_depth)
        return jx_fail(x, TM_JINJA_LIMIT, TM_ERANGE, "macro calls nest deeper than %d", x->lim->max_depth);
    jscope *s = scope_new(x, m->closure);
    if (!s) return x->code;
    int n_params = def->n2;
    if (args->n_pos > n_params)
        return JX_ERR(x, "macro '%.*s' takes not more than %d argument(s)", (int)def->name_len,
                      def->name, n_params);
    for (int i = 0; i < n_params; i++) {
        const jnode *p = def->list2[i];
        jv v;
        int have = 0;
        if (i < args->n_pos) v = args->pos[i], have = 1;
        for (int k = 0; k < args->n_kw && !have; k++)
            if (args->kw_len[k] == p->name_len && !memcmp(args->kw[k], p->name, p->name_len))
                v = args->kw_val[k], have = 1;
        if (!have) {
            if (p->kind == N_KWARG) {
                if (eval(x, s, p->a, &v)) return x->code;
            } else {
                v = jv_undef(hintf(x, "parameter '%.*s' was not provided", p->name, p->name_len));
            }
        }
        if (scope_set(x, s, p->name, p->name_len, v)) return x->code;
    }
    for (int k = 0; k < args->n_kw; k++) {
        int known = 0;
        for (int i = 0; i < n_params; i++)
            known |= args->kw_len[k] == def->list2[i]->name_len &&
                     !memcmp(args->kw[k], def->list2[i]->name, args->kw_len[k]);
        if (!known)
            return JX_ERR(x, "macro '%.*s' takes no keyword argument '%.*s'", (int)def->name_len,
                          def->name, (int)args->kw_len[k], args->kw[k]);
    }
    jbuf buf = {0}, *saved = x->out;
    x->out = &buf;
    x->depth++;
    int rc = exec_body(x, s, def->list, def->n);
    x->depth--;
    x->out = saved;
    if (rc < 0 || x->failed) {
        jbuf_free(&buf);
        return x->failed ? x->code : rc;
    }
    return jbuf_take(x, &buf, out);
}

int je_call(jctx *x, const jv *fn, const jargs *args, jv *out) {
    if (jx_steps(x, 1)) return x->code;
    switch (fn->t) {
    case JV_MACRO: return call_macro(x, fn->u.m, args, out);
    case JV_FUNC: return jb_call(x, fn, args, out);
    case JV_UNDEF: return undefined_error(x, fn);
    default: return JX_ERR(x, "'%s' object is not callable", jv_type_name(fn));
    }
}

/* node is a filter chain whose innermost subject is NULL (a filter block); applies it. */
static int apply_filters(jctx *x, jscope *s, const jnode *f, const jv *subject, jv *out) {
    jv in = *subject;
    if (f->a && apply_filters(x, s, f->a, subject, &in)) return x->code;
    jargs args;
    if (eval_args(x, s, f, &args)) return x->code;
    return jb_filter(x, f->builtin, &in, &args, out);
}

static int eval_seq(jctx *x, jscope *s, const jnode *n, jv *out) {
    jlist *l = jv_list_new(x, (size_t)n->n);
    if (!l) return x->code;
    for (int i = 0; i < n->n; i++)
        if (eval(x, s, n->list[i], &l->items[i])) return x->code;
    *out = jv_list(l, n->kind == N_TUPLE);
    return 0;
}

static int eval(jctx *x, jscope *s, const jnode *n, jv *out) {
    if (jx_steps(x, 1)) return x->code;
    jv a, b;
    switch (n->kind) {
    case N_CONST: *out = n->v; return 0;
    case N_NAME: *out = lookup(x, s, n->name, n->name_len); return 0;
    case N_GETATTR:
        if (eval(x, s, n->a, &a)) return x->code;
        return je_getattr(x, &a, n->name, n->name_len, out);
    case N_GETITEM:
        if (eval(x, s, n->a, &a) || eval(x, s, n->b, &b)) return x->code;
        return je_getitem(x, &a, &b, out);
    case N_SLICE: {
        if (!n->a) return JX_ERR(x, "line %d: a slice outside a subscript", n->line);
        jv parts[3];
        const jv *bounds[3] = {NULL, NULL, NULL};
        const jnode *pn[3] = {n->b, n->c, n->d};
        if (eval(x, s, n->a, &a)) return x->code;
        for (int k = 0; k < 3; k++) {
            if (!pn[k]) continue;
            if (eval(x, s, pn[k], &parts[k])) return x->code;
            bounds[k] = &parts[k];
        }
        return slice(x, &a, bounds, out);
    }
    case N_CALL: {
        jargs args;
        if (eval(x, s, n->a, &a) || eval_args(x, s, n, &args)) return x->code;
        return je_call(x, &a, &args, out);
    }
    case N_FILTER: {
        jargs args;
        if (eval(x, s, n->a, &a) || eval_args(x, s, n, &args)) return x->code;
        return jb_filter(x, n->builtin, &a, &args, out);
    }
    case N_TEST: {
        jargs args;
        int r = 0;
        if (eval(x, s, n->a, &a) || eval_args(x, s, n, &args) || jb_test(x, n->builtin, &a, &args, &r))
            return x->code;
        *out = jv_bool(n->op ? !r : r);
        return 0;
    }
    case N_UNARY:
        if (eval(x, s, n->a, &a)) return x->code;
        if (a.t == JV_UNDEF) return undefined_error(x, &a);
        if (!jv_is_number(&a))
            return JX_ERR(x, "bad operand type for unary %s: '%s'", n->op == OP_NEG ? "-" : "+",
                          jv_type_name(&a));
        if (n->op == OP_POS) *out = a.t == JV_BOOL ? jv_int(a.u.i) : a;
        else if (a.t == JV_FLOAT) *out = jv_float(-a.u.f);
        else if (a.u.i == INT64_MIN) return JX_ERR(x, "integer overflow in unary -");
        else *out = jv_int(-a.u.i);
        return 0;
    case N_NOT:
        if (eval(x, s, n->a, &a)) return x->code;
        *out = jv_bool(!jv_truthy(&a));
        return 0;
    case N_AND:
    case N_OR:
        if (eval(x, s, n->a, &a)) return x->code;
        if (jv_truthy(&a) == (n->kind == N_OR)) {
            *out = a;
            return 0;
        }
        return eval(x, s, n->b, out);
    case N_BINARY:
        if (eval(x, s, n->a, &a) || eval(x, s, n->b, &b)) return x->code;
        return binop(x, n->op, &a, &b, out);
    case N_COMPARE: {
        if (eval(x, s, n->a, &a)) return x->code;
        for (int i = 0; i < n->n; i++) {
            int r = 0;
            if (eval(x, s, n->list[i]->a, &b) || compare_op(x, n->list[i]->op, &a, &b, &r))
                return x->code;
            if (!r) {
                *out = jv_bool(0);
                return 0;
            }
            a = b;
        }
        *out = jv_bool(1);
        return 0;
    }
    case N_COND:
        if (eval(x, s, n->a, &a)) return x->code;
        if (jv_truthy(&a)) return eval(x, s, n->b, out);
        if (n->c) return eval(x, s, n->c, out);
        *out = jv_undef("the inline if-expression evaluated to false and no else section was defined");
        return 0;
    case N_LIST:
    case N_TUPLE: return eval_seq(x, s, n, out);
    case N_DICT: {
        jdict *d = jv_dict_new(x, (size_t)n->n);
        if (!d) return x->code;
        for (int i = 0; i < n->n; i++) {
            if (eval(x, s, n->list[i]->a, &a) || eval(x, s, n->list[i]->b, &b) ||
                jv_dict_set(x, d, a, b))
                return x->code;
        }
        *out = jv_dict(d);
        return 0;
    }
    default: return JX_ERR(x, "line %d: not an expression", n->line);
    }
}

/* ---- statements ---- */

/* Binds target (a name or a tuple of names) to v in s. */
static int assign(jctx *x, jscope *s, const jnode *target, const jv *v) {
    if (target->kind == N_NAME) return scope_set(x, s, target->name, target->name_len, *v);
    jlist *items = NULL;
    if (v->t == JV_UNDEF) return undefined_error(x, v);
    if (je_iterate(x, v, &items)) return x->code;
    if ((int)items->n != target->n)
        return JX_ERR(x, "%s values to unpack (expected %d, got %zu)",
                      (int)items->n > target->n ? "too many" : "not enough", target->n, items->n);
    for (int i = 0; i < target->n; i++)
        if (scope_set(x, s, target->list[i]->name, target->list[i]->name_len, items->items[i]))
            return x->code;
    return 0;
}

static int exec_set(jctx *x, jscope *s, const jnode *target, const jv *v) {
    if (target->kind != N_GETATTR) return assign(x, s, target, v);
    jv ns = lookup(x, s, target->a->name, target->a->name_len);
    if (ns.t != JV_NS) return JX_ERR(x, "cannot assign attribute on non-namespace object");
    return jv_dict_set(x, ns.u.d, jv_str(target->name, target->name_len), *v);
}

/* Runs body into a fresh buffer; the text as a value. */
static int capture(jctx *x, jscope *s, jnode *const *body, int n, jv *out) {
    jbuf buf = {0}, *saved = x->out;
    x->out = &buf;
    int rc = exec_body(x, s, body, n);
    x->out = saved;
    if (rc < 0 || x->failed) {
        jbuf_free(&buf);
        return x->failed ? x->code : rc;
    }
    return jbuf_take(x, &buf, out);
}

static int exec_for(jctx *x, jscope *s, const jnode *n) {
    jv seq;
    jlist *items = NULL;
    if (eval(x, s, n->b, &seq) || je_iterate(x, &seq, &items)) return x->code;
    if (n->c) { /* `for x in xs if cond`: filter first; loop.* counts what is left */
        jlist *kept = jv_list_new(x, items->n);
        jscope *t = scope_new(x, s);
        if (!kept || !t) return x->code;
        size_t k = 0;
        for (size_t i = 0; i < items->n; i++) {
            jv ok;
            t->n = 0;
            if (assign(x, t, n->a, &items->items[i]) || eval(x, t, n->c, &ok)) return x->code;
            if (jv_truthy(&ok)) kept->items[k++] = items->items[i];
        }
        kept->n = k;
        items = kept;
    }
    if (items->n == 0) return exec_body(x, s, n->list2, n->n2);
    jloop *lp = ja_alloc(&x->arena, sizeof *lp);
    if (!lp) return mem_fail(x);
    lp->items = items;
    jv loop = {.t = JV_LOOP};
    loop.u.lp = lp;
    jscope *it = NULL;
    for (size_t i = 0; i < items->n; i++) {
        if (!it || it->captured) {
            if (!(it = scope_new(x, s))) return x->code;
        }
        it->n = 0; /* a fresh iteration scope over s */
        lp->index0 = i;
        if (scope_set(x, it, "loop", 4, loop) || assign(x, it, n->a, &items->items[i])) return x->code;
        int rc = exec_body(x, it, n->list, n->n);
        if (rc < 0) return rc;
        if (rc == FLOW_BREAK) break;
    }
    return 0;
}

static int exec_stmt(jctx *x, jscope *s, const jnode *n) {
    jv v;
    if (jx_steps(x, 1)) return x->code;
    switch (n->kind) {
    case S_DATA: return jx_emit(x, n->v.u.s.p, n->v.u.s.n);
    case S_OUTPUT:
        if (eval(x, s, n->a, &v)) return x->code;
        return jv_str_to(x, x->out, &v);
    case S_IF:
        if (eval(x, s, n->a, &v)) return x->code;
        return jv_truthy(&v) ? exec_body(x, s, n->list, n->n) : exec_body(x, s, n->list2, n->n2);
    case S_FOR: return exec_for(x, s, n);
    case S_SET:
        if (eval(x, s, n->b, &v)) return x->code;
        return exec_set(x, s, n->a, &v);
    case S_SETBLOCK:
        if (capture(x, s, n->list, n->n, &v)) return x->code;
        if (n->c && apply_filters(x, s, n->c, &v, &v)) return x->code;
        return exec_set(x, s, n->a, &v);
    case S_FILTER: {
        jscope *t = scope_new(x, s);
        if (!t || capture(x, t, n->list, n->n, &v) || apply_filters(x, s, n->c, &v, &v))
            return x->code;
        return jv_str_to(x, x->out, &v);
    }
    case S_WITH: {
        jscope *t = scope_new(x, s);
        if (!t) return x->code;
        for (int i = 0; i < n->n2; i++) {
            if (eval(x, s, n->list2[i]->a, &v) ||
                scope_set(x, t, n->list2[i]->name, n->list2[i]->name_len, v))
                return x->code;
        }
        return exec_body(x, t, n->list, n->n);
    }
    case S_MACRO: {
        jmacro *m = ja_alloc(&x->arena, sizeof *m);
        if (!m) return mem_fail(x);
        m->def = n;
        m->closure = s;
        s->captured = 1;
        v.t = JV_MACRO;
        v.flags = 0;
        v.u.m = m;
        return scope_set(x, s, n->name, n->name_len, v);
    }
    case S_BREAK: return FLOW_BREAK;
    case S_CONTINUE: return FLOW_CONTINUE;
    default: return JX_ERR(x, "line %d: not a statement", n->line);
    }
}

/* 0, FLOW_BREAK / FLOW_CONTINUE from a loop control inside (not inside a nested loop),
 * or a negative error. */
static int exec_body(jctx *x, jscope *s, jnode *const *body, int n) {
    for (int i = 0; i < n; i++) {
        int rc = exec_stmt(x, s, body[i]);
        if (rc) return x->failed ? x->code : rc;
    }
    return 0;
}

/* ---- public ---- */

int tm_jinja_render(const tm_jinja *t, const json_t *vars, const tm_jinja_limits *lim,
                    const struct tm *now, char **out, size_t *out_len,
                    tm_jinja_failure *failure, char *err, size_t err_len) {
    *out = NULL;
    if (out_len) *out_len = 0;
    if (failure) *failure = TM_JINJA_OK;
    tm_jinja_limits dl;
    if (!lim) tm_jinja_limits_default(&dl), lim = &dl;
    jctx x = {.lim = lim, .err = err, .err_len = err_len};
    ja_init(&x.arena, lim->max_memory_bytes);
    if (now) {
        x.now = *now;
    } else {
        time_t tt = time(NULL);
        localtime_r(&tt, &x.now);
    }
    jbuf buf = {0};
    x.out = &buf;
    int rc = 0;
    jv v;
    if (vars && !json_is_object(vars)) {
        rc = JX_ERR(&x, "the template variables must be an object");
    } else if (vars) {
        if (!(rc = jv_from_json(&x, vars, &v, 0))) x.vars = v.u.d;
    } else if (!(x.vars = jv_dict_new(&x, 0))) {
        rc = x.code;
    }
    jscope *top = rc ? NULL : scope_new(&x, NULL);
    if (!rc && top) {
        rc = exec_body(&x, top, t->body, t->n_body);
        if (rc > 0 && !x.failed) rc = 0; /* break/continue outside a loop: jinja2 refuses at compile time */
    }
    if (x.failed) rc = x.code;
    if (!rc && !buf.p) rc = jbuf_add(&x, &buf, "", 0);
    if (rc) {
        if (!x.failed) jx_fail(&x, TM_JINJA_ERROR, rc, "rendering failed");
        if (failure) *failure = (tm_jinja_failure)x.failed;
        jbuf_free(&buf);
    } else {
        *out = buf.p;
        if (out_len) *out_len = buf.n;
    }
    ja_free(&x.arena);
    return rc;
}

int tm_jinja_json_dumps(const json_t *v, char **out, size_t *len) {
    tm_jinja_limits lim;
    tm_jinja_limits_default(&lim);
    jctx x = {.lim = &lim};
    ja_init(&x.arena, lim.max_memory_bytes);
    jbuf buf = {0};
    jv val;
    int rc = jv_from_json(&x, v, &val, 0);
    if (!rc) rc = jv_json_to(&x, &buf, &val, 0, -1, NULL, NULL, 0);
    if (!rc && !buf.p) rc = jbuf_add(&x, &buf, "", 0);
    ja_free(&x.arena);
    if (rc) {
        jbuf_free(&buf);
        return rc == TM_ENOMEM ? TM_ENOMEM : TM_EINVAL;
    }
    *out = buf.p;
    *len = buf.n;
    return 0;
}

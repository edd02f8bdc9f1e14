/* jinja_parse.c - tokens -> syntax tree, following jinja2's parser rule by rule (the
 * precedence climb condexpr > or > and > not > compare > + - > ~ > * / // % > ** > unary,
 * postfix, then filters and tests), so that a template means what it means to jinja2.
 * Recursion is bounded by max_depth; unknown tags, filters and tests fail at parse time,
 * as jinja2's compiler makes them fail. Also tm_jinja_parse (source normalization). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/jinja_internal.h"

typedef struct parser {
    jarena *a;
    const jtok *t; /* (n) tokens, ending with JT_EOF */
    int n, i;      /* count, current */
    int depth, max_depth;
    int rc;        /* first error */
    char *err;
    size_t err_len;
} parser;

/* A growable array of nodes in the arena (a doubling copy wastes at most half). */
typedef struct nvec {
    jnode **p;
    int n, cap;
} nvec;

static const jtok *cur(parser *P) { return &P->t[P->i]; }
static const jtok *look(parser *P, int k) { return &P->t[TM_MIN(P->i + k, P->n - 1)]; }
static void next(parser *P) { if (P->i < P->n - 1) P->i++; }

static int is_op(const jtok *t, int op) { return t->type == JT_OP && t->op == op; }
static int is_name(const jtok *t, const char *s) {
    return t->type == JT_NAME && t->n == strlen(s) && !memcmp(t->s, s, t->n);
}

static const char *describe(const jtok *t, char *buf, size_t cap) {
    switch (t->type) {
    case JT_EOF: return "end of template";
    case JT_DATA: return "template data";
    case JT_VAR_BEGIN: return "'{{'";
    case JT_VAR_END: return "end of print statement";
    case JT_BLOCK_BEGIN: return "'{%'";
    case JT_BLOCK_END: return "end of statement block";
    case JT_NAME: snprintf(buf, cap, "'%.*s'", (int)TM_MIN(t->n, 40), t->s); return buf;
    case JT_STRING: return "string";
    case JT_INT: return "integer";
    case JT_FLOAT: return "float";
    default: snprintf(buf, cap, "'%s'", jl_op_text(t->op)); return buf;
    }
}

static jnode *failp(parser *P, const char *fmt, const char *arg) {
    if (!P->rc) {
        char msg[200];
        snprintf(msg, sizeof msg, fmt, arg);
        P->rc = tm_fail(P->err, P->err_len, TM_EINVAL, "line %d: %s", cur(P)->line, msg);
    }
    return NULL;
}

static jnode *unexpected(parser *P) {
    char buf[64];
    return failp(P, "unexpected %s", describe(cur(P), buf, sizeof buf));
}

static jnode *oom(parser *P) {
    if (!P->rc) P->rc = tm_fail(P->err, P->err_len, TM_ENOMEM, "the template is too large");
    return NULL;
}

static jnode *mk(parser *P, int kind, int line) {
    jnode *n = ja_alloc(P->a, sizeof *n);
    if (!n) return oom(P);
    n->kind = (uint8_t)kind;
    n->line = line;
    return n;
}

static int push(parser *P, nvec *v, jnode *n) {
    if (!n) return -1;
    if (v->n == v->cap) {
        int cap = v->cap ? 2 * v->cap : 4;
        jnode **q = ja_alloc(P->a, (size_t)cap * sizeof *q);
        if (!q) return oom(P), -1;
        if (v->n) memcpy(q, v->p, (size_t)v->n * sizeof *q);
        v->p = q;
        v->cap = cap;
    }
    v->p[v->n++] = n;
    return 0;
}

static int expect_op(parser *P, int op) {
    if (P->rc) return -1;
    if (!is_op(cur(P), op)) {
        char buf[64], want[16];
        snprintf(want, sizeof want, "'%s'", jl_op_text(op));
        char msg[160];
        snprintf(msg, sizeof msg, "expected %s, got %s", want, describe(cur(P), buf, sizeof buf));
        failp(P, "%s", msg);
        return -1;
    }
    next(P);
    return 0;
}

static int enter(parser *P) {
    if (P->rc) return -1;
    if (++P->depth > P->max_depth) {
        P->rc = tm_fail(P->err, P->err_len, TM_ERANGE, "line %d: the template nests deeper than %d",
                        cur(P)->line, P->max_depth);
        return -1;
    }
    return 0;
}
static jnode *leave(parser *P, jnode *n) {
    P->depth--;
    return P->rc ? NULL : n;
}

static jnode *parse_expression(parser *P, int with_condexpr);
static jnode *parse_unary(parser *P, int with_filter);
static jnode *parse_primary(parser *P);
static jnode *parse_postfix(parser *P, jnode *node);
static jnode *parse_filter(parser *P, jnode *node, int start_inline);

/* ---- expressions ---- */

static jnode *set_name(jnode *n, const jtok *t) {
    if (n) n->name = t->s, n->name_len = t->n;
    return n;
}

/* Arguments of a call, filter or test: "(" [expr | name=expr] {"," ...} ")". */
static int parse_args(parser *P, nvec *args) {
    if (expect_op(P, OP_LPAREN)) return -1;
    int seen_kw = 0;
    while (!P->rc && !is_op(cur(P), OP_RPAREN)) {
        if (args->n && expect_op(P, OP_COMMA)) return -1;
        if (is_op(cur(P), OP_RPAREN)) break;
        if (is_op(cur(P), OP_MUL) || is_op(cur(P), OP_POW))
            return failp(P, "%s", "*args and **kwargs in calls are not supported"), -1;
        if (cur(P)->type == JT_NAME && is_op(look(P, 1), OP_ASSIGN)) {
            jnode *kw = set_name(mk(P, N_KWARG, cur(P)->line), cur(P));
            next(P), next(P);
            if (kw) kw->a = parse_expression(P, 1);
            if (!kw || !kw->a || push(P, args, kw)) return -1;
            seen_kw = 1;
        } else {
            if (seen_kw) return failp(P, "%s", "invalid syntax for function call expression"), -1;
            if (push(P, args, parse_expression(P, 1))) return -1;
        }
    }
    return expect_op(P, OP_RPAREN);
}

static jnode *parse_tuple(parser *P, int simplified, int with_condexpr, const char *extra_end,
                          int explicit_parens) {
    int line = cur(P)->line, is_tuple = 0;
    nvec items = {0};
    for (;;) {
        if (items.n && expect_op(P, OP_COMMA)) return NULL;
        const jtok *t = cur(P);
        if (t->type == JT_VAR_END || t->type == JT_BLOCK_END || is_op(t, OP_RPAREN) ||
            (extra_end && is_name(t, extra_end)))
            break;
        jnode *e = simplified ? parse_primary(P) : parse_expression(P, with_condexpr);
        if (push(P, &items, e)) return NULL;
        if (is_op(cur(P), OP_COMMA)) is_tuple = 1;
        else break;
    }
    if (!is_tuple) {
        if (items.n) return items.p[0];
        if (!explicit_parens) return unexpected(P);
    }
    jnode *n = mk(P, N_TUPLE, line);
    if (n) n->list = items.p, n->n = items.n;
    return n;
}

static jnode *parse_list(parser *P) {
    jnode *n = mk(P, N_LIST, cur(P)->line);
    nvec items = {0};
    if (!n || expect_op(P, OP_LBRACKET)) return NULL;
    while (!P->rc && !is_op(cur(P), OP_RBRACKET)) {
        if (items.n && expect_op(P, OP_COMMA)) return NULL;
        if (is_op(cur(P), OP_RBRACKET)) break;
        if (push(P, &items, parse_expression(P, 1))) return NULL;
    }
    if (expect_op(P, OP_RBRACKET)) return NULL;
    n->list = items.p, n->n = items.n;
    return n;
}

static jnode *parse_dict(parser *P) {
    jnode *n = mk(P, N_DICT, cur(P)->line);
    nvec items = {0};
    if (!n || expect_op(P, OP_LBRACE)) return NULL;
    while (!P->rc && !is_op(cur(P), OP_RBRACE)) {
        if (items.n && expect_op(P, OP_COMMA)) return NULL;
        if (is_op(cur(P), OP_RBRACE)) break;
        jnode *pair = mk(P, N_PAIR, cur(P)->line);
        if (!pair || !(pair->a = parse_expression(P, 1)) || expect_op(P, OP_COLON) ||
            !(pair->b = parse_expression(P, 1)) || push(P, &items, pair))
            return NULL;
    }
    if (expect_op(P, OP_RBRACE)) return NULL;
    n->list = items.p, n->n = items.n;
    return n;
}

static jnode *constant(parser *P, int line, jv v) {
    jnode *n = mk(P, N_CONST, line);
    if (n) n->v = v;
    return n;
}

static jnode *parse_primary(parser *P) {
    if (enter(P)) return NULL;
    const jtok *t = cur(P);
    jnode *n = NULL;
    if (t->type == JT_NAME) {
        if (is_name(t, "true") || is_name(t, "True")) n = constant(P, t->line, jv_bool(1));
        else if (is_name(t, "false") || is_name(t, "False")) n = constant(P, t->line, jv_bool(0));
        else if (is_name(t, "none") || is_name(t, "None")) n = constant(P, t->line, jv_none());
        else n = set_name(mk(P, N_NAME, t->line), t);
        next(P);
    } else if (t->type == JT_STRING) {
        /* adjacent literals join: 'a' "b" */
        size_t total = 0;
        int k = P->i;
        while (P->t[k].type == JT_STRING) total += P->t[k++].n;
        char *s = ja_alloc(P->a, total + 1), *w = s;
        if (!s) return leave(P, oom(P));
        while (cur(P)->type == JT_STRING) {
            memcpy(w, cur(P)->s, cur(P)->n);
            w += cur(P)->n;
            next(P);
        }
        n = constant(P, t->line, jv_str(s, total));
    } else if (t->type == JT_INT) {
        n = constant(P, t->line, jv_int(t->i));
        next(P);
    } else if (t->type == JT_FLOAT) {
        n = constant(P, t->line, jv_float(t->f));
        next(P);
    } else if (is_op(t, OP_LPAREN)) {
        next(P);
        n = parse_tuple(P, 0, 1, NULL, 1);
        if (expect_op(P, OP_RPAREN)) n = NULL;
    } else if (is_op(t, OP_LBRACKET)) {
        n = parse_list(P);
    } else if (is_op(t, OP_LBRACE)) {
        n = parse_dict(P);
    } else {
        n = unexpected(P);
    }
    return leave(P, n);
}

/* Inside [ ]: an expression or a slice a:b:c with any part missing. */
static jnode *parse_subscribed(parser *P) {
    int line = cur(P)->line;
    jnode *start = NULL;
    if (!is_op(cur(P), OP_COLON)) {
        start = parse_expression(P, 1);
        if (!start || !is_op(cur(P), OP_COLON)) return start;
    }
    next(P); /* the first colon */
    jnode *s = mk(P, N_SLICE, line);
    if (!s) return NULL;
    s->b = start;
    if (!is_op(cur(P), OP_RBRACKET) && !is_op(cur(P), OP_COMMA) && !is_op(cur(P), OP_COLON))
        if (!(s->c = parse_expression(P, 1))) return NULL;
    if (is_op(cur(P), OP_COLON)) {
        next(P);
        if (!is_op(cur(P), OP_RBRACKET) && !is_op(cur(P), OP_COMMA))
            if (!(s->d = parse_expression(P, 1))) return NULL;
    }
    return s;
}

static jnode *parse_subscript(parser *P, jnode *node) {
    const jtok *t = cur(P);
    if (is_op(t, OP_DOT)) {
        next(P);
        const jtok *a = cur(P);
        if (a->type == JT_NAME) {
            jnode *n = set_name(mk(P, N_GETATTR, a->line), a);
            next(P);
            if (n) n->a = node;
            return n;
        }
        if (a->type != JT_INT) return failp(P, "%s", "expected a name or number after '.'");
        jnode *n = mk(P, N_GETITEM, a->line);
        if (n) n->a = node, n->b = constant(P, a->line, jv_int(a->i));
        next(P);
        return n && n->b ? n : NULL;
    }
    /* '[' */
    next(P);
    nvec args = {0};
    while (!P->rc && !is_op(cur(P), OP_RBRACKET)) {
        if (args.n && expect_op(P, OP_COMMA)) return NULL;
        if (push(P, &args, parse_subscribed(P))) return NULL;
    }
    if (expect_op(P, OP_RBRACKET)) return NULL;
    if (args.n == 0) return failp(P, "%s", "expected a subscript");
    for (int i = 0; args.n > 1 && i < args.n; i++)
        if (args.p[i]->kind == N_SLICE) return failp(P, "%s", "a slice inside a tuple subscript is not supported");
    jnode *key = args.p[0];
    if (args.n > 1) {
        key = mk(P, N_TUPLE, t->line);
        if (!key) return NULL;
        key->list = args.p, key->n = args.n;
    }
    if (key->kind == N_SLICE) {
        key->a = node;
        return key;
    }
    jnode *n = mk(P, N_GETITEM, t->line);
    if (n) n->a = node, n->b = key;
    return n;
}

static jnode *parse_call(parser *P, jnode *node) {
    jnode *n = mk(P, N_CALL, cur(P)->line);
    nvec args = {0};
    if (!n || parse_args(P, &args)) return NULL;
    n->a = node;
    n->list = args.p, n->n = args.n;
    return n;
}

static jnode *parse_postfix(parser *P, jnode *node) {
    while (node && !P->rc) {
        if (is_op(cur(P), OP_DOT) || is_op(cur(P), OP_LBRACKET)) node = parse_subscript(P, node);
        else if (is_op(cur(P), OP_LPAREN)) node = parse_call(P, node);
        else break;
    }
    return P->rc ? NULL : node;
}

/* A filter or test name, possibly dotted ("a.b"), resolved to a builtin. */
static jnode *named(parser *P, int kind, int node_kind, jnode *subject) {
    const jtok *t = cur(P);
    if (t->type != JT_NAME) return failp(P, "%s", kind == JB_KIND_FILTER ? "expected a filter name"
                                                                        : "expected a test name");
    jnode *n = set_name(mk(P, node_kind, t->line), t);
    next(P);
    if (!n) return NULL;
    if (is_op(cur(P), OP_DOT))
        return failp(P, "%s", "dotted filter and test names are not supported");
    n->a = subject;
    n->builtin = jb_lookup(kind, n->name, n->name_len);
    if (n->builtin < 0) {
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)TM_MIN(n->name_len, 40), n->name);
        return failp(P, kind == JB_KIND_FILTER ? "no filter named '%s'" : "no test named '%s'", name);
    }
    return n;
}

static jnode *parse_filter(parser *P, jnode *node, int start_inline) {
    while (!P->rc && (is_op(cur(P), OP_PIPE) || start_inline)) {
        if (!start_inline) next(P);
        start_inline = 0;
        jnode *f = named(P, JB_KIND_FILTER, N_FILTER, node);
        if (!f) return NULL;
        if (is_op(cur(P), OP_LPAREN)) {
            nvec args = {0};
            if (parse_args(P, &args)) return NULL;
            f->list = args.p, f->n = args.n;
        }
        node = f;
    }
    return P->rc ? NULL : node;
}

static jnode *parse_test(parser *P, jnode *node) {
    next(P); /* 'is' */
    int negated = 0;
    if (is_name(cur(P), "not")) next(P), negated = 1;
    jnode *t = named(P, JB_KIND_TEST, N_TEST, node);
    if (!t) return NULL;
    t->op = (uint8_t)negated;
    const jtok *c = cur(P);
    nvec args = {0};
    if (is_op(c, OP_LPAREN)) {
        if (parse_args(P, &args)) return NULL;
    } else if ((c->type == JT_NAME || c->type == JT_STRING || c->type == JT_INT ||
                c->type == JT_FLOAT || is_op(c, OP_LBRACKET) || is_op(c, OP_LBRACE)) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is")) return failp(P, "%s", "you cannot chain multiple tests with is");
        if (push(P, &args, parse_postfix(P, parse_primary(P)))) return NULL;
    }
    t->list = args.p, t->n = args.n;
    return t;
}

static jnode *parse_filter_expr(parser *P, jnode *node) {
    while (node && !P->rc) {
        if (is_op(cur(P), OP_PIPE)) node = parse_filter(P, node, 0);
        else if (is_name(cur(P), "is")) node = parse_test(P, node);
        else if (is_op(cur(P), OP_LPAREN)) node = parse_call(P, node);
        else break;
    }
    return P->rc ? NULL : node;
}

static jnode *parse_unary(parser *P, int with_filter) {
    if (enter(P)) return NULL;
    const jtok *t = cur(P);
    jnode *node;
    if (is_op(t, OP_SUB) || is_op(t, OP_ADD)) {
        next(P);
        node = mk(P, N_UNARY, t->line);
        if (node) node->op = t->op == OP_SUB ? OP_NEG : OP_POS, node->a = parse_unary(P, 0);
        if (node && !node->a) node = NULL;
    } else {
        node = parse_primary(P);
    }
    node = parse_postfix(P, node);
    if (with_filter) node = parse_filter_expr(P, node);
    return leave(P, node);
}

static jnode *binary(parser *P, int kind, int op, jnode *a, jnode *b, int line) {
    if (!a || !b) return NULL;
    jnode *n = mk(P, kind, line);
    if (n) n->op = (uint8_t)op, n->a = a, n->b = b;
    return n;
}

static jnode *parse_pow(parser *P) {
    jnode *left = parse_unary(P, 1);
    while (left && is_op(cur(P), OP_POW)) {
        int line = cur(P)->line;
        next(P);
        left = binary(P, N_BINARY, OP_POW, left, parse_unary(P, 1), line);
    }
    return left;
}

static jnode *parse_math2(parser *P) {
    jnode *left = parse_pow(P);
    while (left && (is_op(cur(P), OP_MUL) || is_op(cur(P), OP_DIV) ||
                    is_op(cur(P), OP_FLOORDIV) || is_op(cur(P), OP_MOD))) {
        int op = cur(P)->op, line = cur(P)->line;
        next(P);
        left = binary(P, N_BINARY, op, left, parse_pow(P), line);
    }
    return left;
}

static jnode *parse_concat(parser *P) {
    jnode *left = parse_math2(P);
    while (left && is_op(cur(P), OP_TILDE)) {
        int line = cur(P)->line;
        next(P);
        left = binary(P, N_BINARY, OP_TILDE, left, parse_math2(P), line);
    }
    return left;
}

static jnode *parse_math1(parser *P) {
    jnode *left = parse_concat(P);
    while (left && (is_op(cur(P), OP_ADD) || is_op(cur(P), OP_SUB))) {
        int op = cur(P)->op, line = cur(P)->line;
        next(P);
        left = binary(P, N_BINARY, op, left, parse_concat(P), line);
    }
    return left;
}

static jnode *parse_compare(parser *P) {
    int line = cur(P)->line;
    jnode *expr = parse_math1(P);
    nvec ops = {0};
    while (expr && !P->rc) {
        const jtok *t = cur(P);
        int op = 0;
        if (t->type == JT_OP && t->op >= OP_EQ && t->op <= OP_LE) op = t->op, next(P);
        else if (is_name(t, "in")) op = OP_IN, next(P);
        else if (is_name(t, "not") && is_name(look(P, 1), "in")) op = OP_NOTIN, next(P), next(P);
        else break;
        jnode *o = mk(P, N_OPERAND, t->line);
        if (!o) return NULL;
        o->op = (uint8_t)op;
        if (!(o->a = parse_math1(P)) || push(P, &ops, o)) return NULL;
    }
    if (!expr || !ops.n) return expr;
    jnode *n = mk(P, N_COMPARE, line);
    if (n) n->a = expr, n->list = ops.p, n->n = ops.n;
    return n;
}

static jnode *parse_not(parser *P) {
    if (is_name(cur(P), "not")) {
        int line = cur(P)->line;
        next(P);
        if (enter(P)) return NULL;
        jnode *n = mk(P, N_NOT, line);
        if (n && !(n->a = parse_not(P))) n = NULL;
        return leave(P, n);
    }
    return parse_compare(P);
}

static jnode *parse_and(parser *P) {
    jnode *left = parse_not(P);
    while (left && is_name(cur(P), "and")) {
        int line = cur(P)->line;
        next(P);
        left = binary(P, N_AND, 0, left, parse_not(P), line);
    }
    return left;
}

static jnode *parse_or(parser *P) {
    jnode *left = parse_and(P);
    while (left && is_name(cur(P), "or")) {
        int line = cur(P)->line;
        next(P);
        left = binary(P, N_OR, 0, left, parse_and(P), line);
    }
    return left;
}

static jnode *parse_expression(parser *P, int with_condexpr) {
    if (enter(P)) return NULL;
    jnode *expr = parse_or(P);
    while (with_condexpr && expr && is_name(cur(P), "if")) {
        int line = cur(P)->line;
        next(P);
        jnode *n = mk(P, N_COND, line);
        if (!n || !(n->a = parse_or(P))) return leave(P, NULL);
        n->b = expr;
        if (is_name(cur(P), "else")) {
            next(P);
            if (!(n->c = parse_expression(P, 1))) return leave(P, NULL);
        }
        expr = n;
    }
    return leave(P, expr);
}

/* ---- statements ---- */

static int parse_body(parser *P, nvec *body, const char *const *ends, int *which);

static int end_block(parser *P) {
    if (P->rc) return -1;
    if (cur(P)->type != JT_BLOCK_END) {
        unexpected(P);
        return -1;
    }
    next(P);
    return 0;
}

/* Assignment target: a name, names separated by commas, or (with_ns) name.attr. */
static jnode *parse_target(parser *P, int with_ns, const char *extra_end) {
    const jtok *t = cur(P);
    if (with_ns && t->type == JT_NAME && is_op(look(P, 1), OP_DOT) && look(P, 2)->type == JT_NAME) {
        jnode *ref = set_name(mk(P, N_GETATTR, t->line), look(P, 2));
        jnode *ns = set_name(mk(P, N_NAME, t->line), t);
        if (!ref || !ns) return NULL;
        ref->a = ns;
        next(P), next(P), next(P);
        return ref;
    }
    jnode *target = parse_tuple(P, 1, 1, extra_end, 0);
    if (!target) return NULL;
    if (target->kind == N_NAME) return target;
    if (target->kind == N_TUPLE) {
        for (int i = 0; i < target->n; i++)
            if (target->list[i]->kind != N_NAME) return failp(P, "%s", "can only assign to names");
        return target;
    }
    return failp(P, "%s", "can only assign to names");
}

static jnode *parse_if(parser *P, int line) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    static const char *const endif[] = {"endif", NULL};
    jnode *n = mk(P, S_IF, line);
    if (!n || !(n->a = parse_tuple(P, 0, 0, NULL, 0)) || end_block(P)) return NULL;
    nvec body = {0}, other = {0};
    int which;
    if (parse_body(P, &body, ends, &which)) return NULL;
    n->list = body.p, n->n = body.n;
    if (which == 0) { /* elif: the rest is an if inside the else branch */
        next(P);
        if (push(P, &other, parse_if(P, cur(P)->line))) return NULL;
    } else if (which == 1) {
        next(P);
        if (end_block(P) || parse_body(P, &other, endif, &which)) return NULL;
        next(P);
        if (end_block(P)) return NULL;
    } else {
        next(P);
        if (end_block(P)) return NULL;
    }
    n->list2 = other.p, n->n2 = other.n;
    return n;
}

static jnode *parse_for(parser *P, int line) {
    static const char *const ends[] = {"endfor", "else", NULL};
    static const char *const endfor[] = {"endfor", NULL};
    jnode *n = mk(P, S_FOR, line);
    if (!n || !(n->a = parse_target(P, 0, "in"))) return NULL;
    if (!is_name(cur(P), "in")) return failp(P, "%s", "expected 'in' in a for loop");
    next(P);
    if (!(n->b = parse_tuple(P, 0, 0, "recursive", 0))) return NULL;
    if (is_name(cur(P), "if")) {
        next(P);
        if (!(n->c = parse_expression(P, 1))) return NULL;
    }
    if (is_name(cur(P), "recursive")) return failp(P, "%s", "recursive for loops are not supported");
    if (end_block(P)) return NULL;
    nvec body = {0}, other = {0};
    int which;
    if (parse_body(P, &body, ends, &which)) return NULL;
    next(P);
    if (end_block(P)) return NULL;
    if (which == 1) {
        if (parse_body(P, &other, endfor, &which)) return NULL;
        next(P);
        if (end_block(P)) return NULL;
    }
    n->list = body.p, n->n = body.n, n->list2 = other.p, n->n2 = other.n;
    return n;
}

static jnode *parse_set(parser *P, int line) {
    static const char *const ends[] = {"endset", NULL};
    jnode *target = parse_target(P, 1, NULL);
    if (!target) return NULL;
    if (is_op(cur(P), OP_ASSIGN)) {
        next(P);
        jnode *n = mk(P, S_SET, line);
        if (!n || !(n->b = parse_tuple(P, 0, 1, NULL, 0)) || end_block(P)) return NULL;
        n->a = target;
        return n;
    }
    if (target->kind != N_NAME && target->kind != N_GETATTR)
        return failp(P, "%s", "a block set assigns one name");
    jnode *n = mk(P, S_SETBLOCK, line);
    if (!n) return NULL;
    n->a = target;
    if (is_op(cur(P), OP_PIPE) && !(n->c = parse_filter(P, NULL, 0))) return NULL;
    nvec body = {0};
    int which;
    if (end_block(P) || parse_body(P, &body, ends, &which)) return NULL;
    next(P);
    if (end_block(P)) return NULL;
    n->list = body.p, n->n = body.n;
    return n;
}

static jnode *parse_macro(parser *P, int line) {
    static const char *const ends[] = {"endmacro", NULL};
    const jtok *t = cur(P);
    if (t->type != JT_NAME) return failp(P, "%s", "expected a macro name");
    jnode *n = set_name(mk(P, S_MACRO, line), t);
    next(P);
    nvec params = {0}, body = {0};
    if (!n || expect_op(P, OP_LPAREN)) return NULL;
    while (!P->rc && !is_op(cur(P), OP_RPAREN)) {
        if (params.n && expect_op(P, OP_COMMA)) return NULL;
        const jtok *a = cur(P);
        if (a->type != JT_NAME) return failp(P, "%s", "expected a parameter name");
        jnode *p = set_name(mk(P, N_NAME, a->line), a);
        next(P);
        if (p && is_op(cur(P), OP_ASSIGN)) {
            next(P);
            p->kind = N_KWARG;
            if (!(p->a = parse_expression(P, 1))) return NULL;
        }
        if (push(P, &params, p)) return NULL;
    }
    int which;
    if (expect_op(P, OP_RPAREN) || end_block(P) || parse_body(P, &body, ends, &which)) return NULL;
    next(P);
    if (end_block(P)) return NULL;
    n->list = body.p, n->n = body.n, n->list2 = params.p, n->n2 = params.n;
    return n;
}

/* {% filter f|g %}, {% with a=1 %}, {% generation %}: a body and a wrapper. */
static jnode *parse_wrapped(parser *P, int line, const char *tag) {
    const char *const filter_ends[] = {"endfilter", NULL}, *const with_ends[] = {"endwith", NULL},
                      *const gen_ends[] = {"endgeneration", NULL};
    int is_filter = !strcmp(tag, "filter"), is_with = !strcmp(tag, "with");
    jnode *n = mk(P, is_filter ? S_FILTER : S_WITH, line);
    nvec binds = {0}, body = {0};
    if (!n) return NULL;
    if (is_filter && !(n->c = parse_filter(P, NULL, 1))) return NULL;
    while (is_with && !P->rc && cur(P)->type != JT_BLOCK_END) {
        if (binds.n && expect_op(P, OP_COMMA)) return NULL;
        const jtok *a = cur(P);
        if (a->type != JT_NAME) return failp(P, "%s", "expected a name in 'with'");
        jnode *b = set_name(mk(P, N_KWARG, a->line), a);
        next(P);
        if (!b || expect_op(P, OP_ASSIGN) || !(b->a = parse_expression(P, 1)) || push(P, &binds, b))
            return NULL;
    }
    int which;
    if (end_block(P) ||
        parse_body(P, &body, is_filter ? filter_ends : is_with ? with_ends : gen_ends, &which))
        return NULL;
    next(P);
    if (end_block(P)) return NULL;
    n->list = body.p, n->n = body.n, n->list2 = binds.p, n->n2 = binds.n;
    return n;
}

/* After "{%": one statement. */
static jnode *parse_statement(parser *P) {
    const jtok *t = cur(P);
    int line = t->line;
    if (t->type != JT_NAME) return failp(P, "%s", "tag name expected");
    jnode *n = NULL;
    if (enter(P)) return NULL;
    if (is_name(t, "if")) next(P), n = parse_if(P, line);
    else if (is_name(t, "for")) next(P), n = parse_for(P, line);
    else if (is_name(t, "set")) next(P), n = parse_set(P, line);
    else if (is_name(t, "macro")) next(P), n = parse_macro(P, line);
    else if (is_name(t, "filter") || is_name(t, "with") || is_name(t, "generation")) {
        char tag[16];
        snprintf(tag, sizeof tag, "%.*s", (int)t->n, t->s);
        next(P);
        n = parse_wrapped(P, line, tag);
    } else if (is_name(t, "break") || is_name(t, "continue")) {
        n = mk(P, is_name(t, "break") ? S_BREAK : S_CONTINUE, line);
        next(P);
        if (end_block(P)) n = NULL;
    } else {
        char name[48];
        snprintf(name, sizeof name, "%.*s", (int)TM_MIN(t->n, 40), t->s);
        static const char *const known[] = {"call", "include", "import", "from", "extends",
                                            "block", "do", "autoescape", "trans"};
        int is_known = 0;
        for (size_t i = 0; i < TM_ARRAY_LEN(known); i++) is_known |= is_name(t, known[i]);
        n = failp(P, is_known ? "the '%s' tag is not supported" : "encountered unknown tag '%s'", name);
    }
    return leave(P, n);
}

/* Statements up to "{% <one of ends>": leaves cur at that name, sets *which. ends NULL:
 * the top level, up to the end of the template. */
static int parse_body(parser *P, nvec *body, const char *const *ends, int *which) {
    if (enter(P)) return -1;
    for (;;) {
        const jtok *t = cur(P);
        if (P->rc) break;
        if (t->type == JT_EOF) {
            if (ends) {
                char msg[120];
                snprintf(msg, sizeof msg, "unexpected end of template; '%s' was expected", ends[0]);
                failp(P, "%s", msg);
            }
            break;
        }
        if (t->type == JT_DATA) {
            jnode *n = mk(P, S_DATA, t->line);
            if (n) n->v = jv_str(t->s, t->n);
            next(P);
            if (push(P, body, n)) break;
        } else if (t->type == JT_VAR_BEGIN) {
            next(P);
            jnode *n = mk(P, S_OUTPUT, t->line);
            if (!n || !(n->a = parse_tuple(P, 0, 1, NULL, 0))) break;
            if (cur(P)->type != JT_VAR_END) {
                unexpected(P);
                break;
            }
            next(P);
            if (push(P, body, n)) break;
        } else if (t->type == JT_BLOCK_BEGIN) {
            next(P);
            int found = -1;
            for (int k = 0; ends && ends[k]; k++)
                if (is_name(cur(P), ends[k])) found = k;
            if (found >= 0) {
                *which = found;
                P->depth--;
                return 0;
            }
            static const char *const closers[] = {"endif", "endfor", "endset", "endmacro", "elif",
                                                  "else", "endfilter", "endwith", "endgeneration"};
            for (size_t k = 0; k < TM_ARRAY_LEN(closers); k++)
                if (is_name(cur(P), closers[k])) {
                    failp(P, "unexpected '%s'", closers[k]);
                    break;
                }
            if (P->rc || push(P, body, parse_statement(P))) break;
        } else {
            unexpected(P);
            break;
        }
    }
    P->depth--;
    return P->rc ? -1 : 0;
}

int jp_parse(jarena *a, const jtok *toks, int n_toks, int max_depth, jnode ***body, int *n_body,
             char *err, size_t err_len) {
    parser P = {.a = a, .t = toks, .n = n_toks, .max_depth = max_depth, .err = err, .err_len = err_len};
    nvec top = {0};
    int which;
    if (parse_body(&P, &top, NULL, &which)) return P.rc ? P.rc : TM_EINVAL;
    *body = top.p;
    *n_body = top.n;
    return 0;
}

/* ---- public ---- */

void tm_jinja_limits_default(tm_jinja_limits *l) {
    l->max_steps = 4u << 20;
    l->max_output_bytes = (size_t)16 << 20;
    l->max_memory_bytes = (size_t)256 << 20;
    l->max_depth = 64;
}

int tm_jinja_parse(const char *src, size_t len, const tm_jinja_limits *lim, tm_jinja **out,
                   char *err, size_t err_len) {
    *out = NULL;
    tm_jinja_limits dl;
    if (!lim) tm_jinja_limits_default(&dl), lim = &dl;
    tm_jinja *t = calloc(1, sizeof *t);
    if (!t) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    t->limits = *lim;
    /* The tree is a bounded multiple of the source; the memory limit caps it too. */
    ja_init(&t->arena, TM_MIN(lim->max_memory_bytes, len * 64 + ((size_t)1 << 20)));
    /* jinja2 reads the source with newlines normalized and one trailing newline dropped */
    char *norm = ja_alloc(&t->arena, len + 1);
    size_t n = 0;
    int rc = 0;
    if (!norm) {
        rc = tm_fail(err, err_len, TM_ENOMEM, "the template is too large");
        goto fail;
    }
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            norm[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            norm[n++] = src[i];
        }
    }
    if (n && norm[n - 1] == '\n') n--;
    jtok *toks = NULL;
    int n_toks = 0;
    if ((rc = jl_lex(&t->arena, norm, n, &toks, &n_toks, err, err_len))) goto fail;
    if ((rc = jp_parse(&t->arena, toks, n_toks, lim->max_depth, &t->body, &t->n_body, err, err_len)))
        goto fail;
    if (t->arena.oom) {
        rc = tm_fail(err, err_len, TM_ENOMEM, "the template is too large");
        goto fail;
    }
    *out = t;
    return 0;
fail:
    tm_jinja_destroy(t);
    return rc;
}

void tm_jinja_destroy(tm_jinja *t) {
    if (!t) return;
    ja_free(&t->arena);
    free(t);
}

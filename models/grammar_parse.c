/* grammar_parse.c - GBNF text -> syntax tree (docs/grammar.md has the syntax).
 *
 * A rule's body runs until the next `name ::=` or the end, so newlines are plain
 * whitespace. Recursive descent; nesting is bounded so a hostile grammar cannot exhaust
 * the C stack. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/grammar_impl.h"

typedef struct pstate {
    tm_gast *ast;
    const char *s;   /* text */
    size_t n, i;     /* length, position */
    int depth;       /* open parentheses */
    char *err;
    size_t err_len;
} pstate;

static int fail_at(pstate *p, size_t at, const char *msg, const char *arg) {
    int line = 1, col = 1;
    for (size_t k = 0; k < at && k < p->n; k++) {
        if (p->s[k] == '\n') line++, col = 1;
        else col++;
    }
    return tm_fail(p->err, p->err_len, TM_EINVAL, "grammar line %d column %d: %s%s", line, col,
                   msg, arg ? arg : "");
}

/* ---- growable arrays ---- */

static int grow(void **p, int32_t *cap, int32_t need, size_t elem) {
    if (need <= *cap) return 0;
    int64_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    if (c > INT32_MAX / 2) return TM_ERANGE;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return TM_ENOMEM;
    *p = q;
    *cap = (int32_t)c;
    return 0;
}

static int32_t new_node(pstate *p, tm_gx_kind kind, int32_t a, int32_t n) {
    tm_gast *t = p->ast;
    if (t->n_nodes >= TM_GRAMMAR_MAX_STATES)
        return tm_fail(p->err, p->err_len, TM_ERANGE, "grammar: more than %d syntax nodes",
                       TM_GRAMMAR_MAX_STATES);
    int rc = grow((void **)&t->nodes, &t->cap_nodes, t->n_nodes + 1, sizeof *t->nodes);
    if (rc) return rc;
    t->nodes[t->n_nodes] = (tm_gx){kind, a, n, 0, 0};
    return t->n_nodes++;
}

static int32_t rule_id(pstate *p, const char *name, size_t len) {
    tm_gast *t = p->ast;
    for (int32_t r = 0; r < t->n_rules; r++)
        if (strlen(t->rule_name[r]) == len && !memcmp(t->rule_name[r], name, len)) return r;
    if (t->n_rules == t->cap_rules) { /* the three arrays share one capacity */
        int32_t cap = t->cap_rules ? 2 * t->cap_rules : 16;
        char **a = realloc(t->rule_name, (size_t)cap * sizeof *a);
        if (!a) return TM_ENOMEM;
        t->rule_name = a;
        int32_t *b = realloc(t->rule_body, (size_t)cap * sizeof *b);
        if (!b) return TM_ENOMEM;
        t->rule_body = b;
        int32_t *c = realloc(t->rule_line, (size_t)cap * sizeof *c);
        if (!c) return TM_ENOMEM;
        t->rule_line = c;
        t->cap_rules = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return TM_ENOMEM;
    memcpy(copy, name, len);
    copy[len] = 0;
    int line = 1;
    for (size_t k = 0; k < p->i && k < p->n; k++) line += p->s[k] == '\n';
    t->rule_name[t->n_rules] = copy;
    t->rule_body[t->n_rules] = -1;
    t->rule_line[t->n_rules] = line;
    return t->n_rules++;
}

/* ---- lexing ---- */

static void skip_space(pstate *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            p->i++;
        } else if (c == '#') {
            while (p->i < p->n && p->s[p->i] != '\n') p->i++;
        } else {
            break;
        }
    }
}

static int is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static size_t name_len(const pstate *p, size_t at) {
    size_t k = at;
    while (k < p->n && is_name_char(p->s[k])) k++;
    return k - at;
}

/* Is a `name ::=` (the start of the next rule) at the position? */
static int at_rule_start(pstate *p) {
    size_t save = p->i, len = name_len(p, p->i);
    if (len == 0) return 0;
    p->i += len;
    skip_space(p);
    int yes = p->i + 3 <= p->n && !memcmp(p->s + p->i, "::=", 3);
    p->i = save;
    return yes;
}

static int hex_val(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads one character (a code point) of a literal or class, escapes decoded. */
static int read_char(pstate *p, uint32_t *cp) {
    size_t at = p->i;
    if (p->i >= p->n) return fail_at(p, at, "unexpected end of grammar", NULL);
    uint8_t c = (uint8_t)p->s[p->i];
    if (c != '\\') {
        size_t k = tm_utf8_char_len((const uint8_t *)p->s + p->i, p->n - p->i);
        if (k == 0) return fail_at(p, at, "invalid UTF-8", NULL);
        const uint8_t *u = (const uint8_t *)p->s + p->i;
        *cp = k == 1 ? u[0]
              : k == 2 ? (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F)
              : k == 3 ? (uint32_t)(u[0] & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F)
                       : (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 |
                             (uint32_t)(u[2] & 0x3F) << 6 | (u[3] & 0x3F);
        p->i += k;
        return 0;
    }
    if (p->i + 1 >= p->n) return fail_at(p, at, "unfinished escape", NULL);
    char e = p->s[p->i + 1];
    p->i += 2;
    int digits = 0;
    switch (e) {
    case 'n': *cp = '\n'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 't': *cp = '\t'; return 0;
    case 'f': *cp = '\f'; return 0;
    case 'v': *cp = '\v'; return 0;
    case 'b': *cp = '\b'; return 0;
    case '0': *cp = 0; return 0;
    case '\\': case '"': case '\'': case '[': case ']': case '-': case '^': case '/': case '.':
    case '(': case ')': case '|': case '*': case '+': case '?': case '{': case '}':
        *cp = (uint8_t)e;
        return 0;
    case 'x': digits = 2; break;
    case 'u': digits = 4; break;
    case 'U': digits = 8; break;
    default: {
        char what[4] = {'\\', e, 0, 0};
        return fail_at(p, at, "unknown escape ", what);
    }
    }
    uint32_t v = 0;
    for (int k = 0; k < digits; k++) {
        int h = p->i < p->n ? hex_val(p->s[p->i]) : -1;
        if (h < 0) return fail_at(p, at, "escape needs hex digits", NULL);
        v = v << 4 | (uint32_t)h;
        p->i++;
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return fail_at(p, at, "escape is not a Unicode scalar value", NULL);
    *cp = v;
    return 0;
}

static int put_utf8(tm_gast *t, uint32_t cp) {
    uint8_t b[4];
    int n;
    if (cp < 0x80) b[0] = (uint8_t)cp, n = 1;
    else if (cp < 0x800) b[0] = (uint8_t)(0xC0 | cp >> 6), b[1] = (uint8_t)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        b[0] = (uint8_t)(0xE0 | cp >> 12), b[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)),
        b[2] = (uint8_t)(0x80 | (cp & 0x3F)), n = 3;
    else
        b[0] = (uint8_t)(0xF0 | cp >> 18), b[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F)),
        b[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)), b[3] = (uint8_t)(0x80 | (cp & 0x3F)), n = 4;
    int rc = grow((void **)&t->bytes, &t->cap_bytes, t->n_bytes + n, 1);
    if (rc) return rc;
    memcpy(t->bytes + t->n_bytes, b, (size_t)n);
    t->n_bytes += n;
    return 0;
}

/* ---- parsing ---- */

static int32_t parse_alt(pstate *p);

static int32_t parse_literal(pstate *p) {
    char quote = p->s[p->i++];
    int32_t start = p->ast->n_bytes;
    while (p->i < p->n && p->s[p->i] != quote) {
        uint32_t cp;
        int rc = read_char(p, &cp);
        if (!rc) rc = put_utf8(p->ast, cp);
        if (rc) return rc;
    }
    if (p->i >= p->n) return fail_at(p, p->i, "unterminated string literal", NULL);
    p->i++;
    int32_t len = p->ast->n_bytes - start;
    return len ? new_node(p, TM_GX_LIT, start, len) : new_node(p, TM_GX_EMPTY, 0, 0);
}

static int32_t parse_class(pstate *p) {
    size_t at = p->i++;
    int negated = p->i < p->n && p->s[p->i] == '^';
    if (negated) p->i++;
    tm_gast *t = p->ast;
    int32_t first = t->n_ranges;
    while (p->i < p->n && p->s[p->i] != ']') {
        uint32_t lo, hi;
        int rc = read_char(p, &lo);
        if (rc) return rc;
        hi = lo;
        if (p->i + 1 < p->n && p->s[p->i] == '-' && p->s[p->i + 1] != ']') {
            p->i++;
            if ((rc = read_char(p, &hi))) return rc;
            if (hi < lo) return fail_at(p, at, "character range out of order", NULL);
        }
        if ((rc = grow((void **)&t->ranges, &t->cap_ranges, 2 * (t->n_ranges + 1), sizeof *t->ranges)))
            return rc;
        t->ranges[2 * t->n_ranges] = lo;
        t->ranges[2 * t->n_ranges + 1] = hi;
        t->n_ranges++;
    }
    if (p->i >= p->n) return fail_at(p, at, "unterminated character class", NULL);
    p->i++;
    if (t->n_ranges == first && !negated) return fail_at(p, at, "empty character class", NULL);
    int32_t id = new_node(p, TM_GX_CLASS, first, t->n_ranges - first);
    if (id >= 0) t->nodes[id].min = negated;
    return id;
}

static int read_int(pstate *p, int32_t *out) {
    size_t at = p->i;
    int64_t v = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        v = v * 10 + (p->s[p->i++] - '0');
        if (v > TM_GRAMMAR_MAX_REPEAT)
            return tm_fail(p->err, p->err_len, TM_ERANGE, "grammar: repetition count above %d",
                           TM_GRAMMAR_MAX_REPEAT);
    }
    *out = p->i > at ? (int32_t)v : -1;
    return 0;
}

/* x* x+ x? x{m} x{m,} x{,n} x{m,n} */
static int32_t parse_postfix(pstate *p, int32_t item) {
    for (int n_ops = 0;; n_ops++) {
        skip_space(p);
        if (p->i >= p->n) return item;
        char c = p->s[p->i];
        int32_t min = 0, max = 0;
        size_t at = p->i;
        if (c == '*') min = 0, max = -1, p->i++;
        else if (c == '+') min = 1, max = -1, p->i++;
        else if (c == '?') min = 0, max = 1, p->i++;
        else if (c == '{') {
            p->i++;
            skip_space(p);
            int rc = read_int(p, &min);
            if (rc) return rc;
            skip_space(p);
            if (p->i < p->n && p->s[p->i] == ',') {
                p->i++;
                skip_space(p);
                if ((rc = read_int(p, &max))) return rc;
                if (min < 0) min = 0;
            } else {
                if (min < 0) return fail_at(p, at, "repetition needs a count", NULL);
                max = min;
            }
            skip_space(p);
            if (p->i >= p->n || p->s[p->i] != '}') return fail_at(p, at, "expected '}'", NULL);
            p->i++;
            if (max >= 0 && max < min) return fail_at(p, at, "repetition {m,n} with n < m", NULL);
        } else {
            return item;
        }
        if (n_ops >= 8) return fail_at(p, at, "too many repetition operators in a row", NULL);
        int32_t r = new_node(p, TM_GX_REPEAT, item, 0);
        if (r < 0) return r;
        p->ast->nodes[r].min = min;
        p->ast->nodes[r].max = max;
        item = r;
    }
}

/* Collects node ids of one SEQ or ALT before they are copied into kids. */
typedef struct idlist {
    int32_t *v;
    int32_t n, cap;
} idlist;

static int32_t finish_list(pstate *p, idlist *l, tm_gx_kind kind) {
    if (l->n == 1) {
        int32_t only = l->v[0];
        free(l->v);
        return only;
    }
    if (l->n == 0) {
        free(l->v);
        return new_node(p, TM_GX_EMPTY, 0, 0);
    }
    tm_gast *t = p->ast;
    int rc = grow((void **)&t->kids, &t->cap_kids, t->n_kids + l->n, sizeof *t->kids);
    if (rc) {
        free(l->v);
        return rc;
    }
    if (l->n) memcpy(t->kids + t->n_kids, l->v, (size_t)l->n * sizeof *l->v);
    int32_t id = new_node(p, kind, t->n_kids, l->n);
    t->n_kids += l->n;
    free(l->v);
    return id;
}

static int list_push(idlist *l, int32_t x) {
    int rc = grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v);
    if (!rc) l->v[l->n++] = x;
    return rc;
}

static int32_t parse_seq(pstate *p) {
    idlist l = {0};
    for (;;) {
        skip_space(p);
        if (p->i >= p->n) break;
        char c = p->s[p->i];
        if (c == '|' || c == ')') break;
        int32_t item;
        size_t at = p->i;
        if (c == '"' || c == '\'') {
            item = parse_literal(p);
        } else if (c == '[') {
            item = parse_class(p);
        } else if (c == '.') {
            p->i++;
            item = new_node(p, TM_GX_CLASS, 0, 0); /* [^] : any character */
            if (item >= 0) p->ast->nodes[item].min = 1;
        } else if (c == '(') {
            if (++p->depth > TM_GRAMMAR_MAX_NESTING) {
                free(l.v);
                return fail_at(p, at, "parentheses nested too deeply", NULL);
            }
            p->i++;
            item = parse_alt(p);
            if (item >= 0) {
                skip_space(p);
                if (p->i >= p->n || p->s[p->i] != ')') item = fail_at(p, at, "unclosed '('", NULL);
                else p->i++;
            }
            p->depth--;
        } else if (is_name_char(c)) {
            if (at_rule_start(p)) break; /* the next rule begins */
            size_t len = name_len(p, p->i);
            int32_t r = rule_id(p, p->s + p->i, len);
            p->i += len;
            item = r < 0 ? r : new_node(p, TM_GX_REF, r, 0);
        } else {
            char what[2] = {c, 0};
            free(l.v);
            return fail_at(p, at, "unexpected character ", what);
        }
        if (item >= 0) item = parse_postfix(p, item);
        if (item >= 0 && list_push(&l, item)) item = TM_ENOMEM;
        if (item < 0) {
            free(l.v);
            return item;
        }
    }
    return finish_list(p, &l, TM_GX_SEQ);
}

static int32_t parse_alt(pstate *p) {
    idlist l = {0};
    for (;;) {
        int32_t s = parse_seq(p);
        if (s < 0 || list_push(&l, s)) {
            free(l.v);
            return s < 0 ? s : TM_ENOMEM;
        }
        skip_space(p);
        if (p->i < p->n && p->s[p->i] == '|') {
            p->i++;
            continue;
        }
        return finish_list(p, &l, TM_GX_ALT);
    }
}

int tm_gast_parse(tm_gast *ast, const char *text, size_t len, char *err, size_t err_len) {
    memset(ast, 0, sizeof *ast);
    if (len > TM_GRAMMAR_MAX_TEXT)
        return tm_fail(err, err_len, TM_ERANGE, "grammar of %zu bytes is over the limit of %d", len,
                       TM_GRAMMAR_MAX_TEXT);
    pstate p = {ast, text, len, 0, 0, err, err_len};
    int n_defined = 0;
    for (;;) {
        skip_space(&p);
        if (p.i >= p.n) break;
        size_t at = p.i, nl = name_len(&p, p.i);
        if (nl == 0) return fail_at(&p, at, "expected a rule name", NULL);
        int32_t r = rule_id(&p, p.s + p.i, nl);
        if (r < 0) return r;
        p.i += nl;
        skip_space(&p);
        if (p.i + 3 > p.n || memcmp(p.s + p.i, "::=", 3) != 0)
            return fail_at(&p, p.i, "expected '::=' after rule name ", ast->rule_name[r]);
        p.i += 3;
        if (ast->rule_body[r] >= 0) return fail_at(&p, at, "rule defined twice: ", ast->rule_name[r]);
        int32_t body = parse_alt(&p);
        if (body < 0) return body;
        skip_space(&p);
        if (p.i < p.n && !at_rule_start(&p)) {
            char what[2] = {p.s[p.i], 0};
            return fail_at(&p, p.i, "unexpected character ", what);
        }
        ast->rule_body[r] = body;
        n_defined++;
    }
    if (n_defined == 0) return tm_fail(err, err_len, TM_EINVAL, "grammar: no rules");
    for (int32_t r = 0; r < ast->n_rules; r++)
        if (ast->rule_body[r] < 0)
            return tm_fail(err, err_len, TM_EINVAL, "grammar line %d: rule '%s' is used but never defined",
                           ast->rule_line[r], ast->rule_name[r]);
    return 0;
}

void tm_gast_deinit(tm_gast *ast) {
    for (int32_t r = 0; r < ast->n_rules; r++) free(ast->rule_name[r]);
    free(ast->rule_name);
    free(ast->rule_body);
    free(ast->rule_line);
    free(ast->nodes);
    free(ast->kids);
    free(ast->bytes);
    free(ast->ranges);
    memset(ast, 0, sizeof *ast);
}

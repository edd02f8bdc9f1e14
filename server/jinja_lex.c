/* jinja_lex.c - template source -> tokens, as jinja2's lexer does it with trim_blocks and
 * lstrip_blocks on:
 *   - `{%-`, `{{-`, `{#-` strip all whitespace before the tag; `-%}`, `-}}`, `-#}` all
 *     whitespace after it;
 *   - trim_blocks: a block or comment tag eats the one newline that follows it (not
 *     with `+%}`);
 *   - lstrip_blocks: spaces and tabs from the start of a line up to a block or comment tag
 *     are dropped (not with `{%+`);
 *   - `{% raw %}...{% endraw %}` is text;
 *   - while brackets are open, `}}` and `%}` do not end a tag (as in `{{ {'a': {}}}}`).
 * "Whitespace" is Python's (Unicode) \s. The source is already normalized (\r\n -> \n, one
 * trailing newline dropped) by the caller. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/jinja_internal.h"

typedef struct lexer {
    jarena *a;
    const char *src, *end;
    const char *p;   /* current position */
    int line;        /* line of p */
    jtok *toks;      /* malloc'd while lexing; moved to the arena at the end */
    int n, cap;
    char *err;
    size_t err_len;
} lexer;

static const struct {
    const char *text;
    int op;
} k_ops[] = {
    /* two-character operators first, so the longest wins */
    {"//", OP_FLOORDIV}, {"**", OP_POW}, {"==", OP_EQ}, {"!=", OP_NE}, {">=", OP_GE},
    {"<=", OP_LE}, {"+", OP_ADD}, {"-", OP_SUB}, {"/", OP_DIV}, {"*", OP_MUL}, {"%", OP_MOD},
    {"~", OP_TILDE}, {"[", OP_LBRACKET}, {"]", OP_RBRACKET}, {"(", OP_LPAREN},
    {")", OP_RPAREN}, {"{", OP_LBRACE}, {"}", OP_RBRACE}, {">", OP_GT}, {"<", OP_LT},
    {"=", OP_ASSIGN}, {".", OP_DOT}, {":", OP_COLON}, {"|", OP_PIPE}, {",", OP_COMMA},
    {";", OP_SEMICOLON},
};

const char *jl_op_text(int op) {
    for (size_t i = 0; i < TM_ARRAY_LEN(k_ops); i++)
        if (k_ops[i].op == op) return k_ops[i].text;
    return "?";
}

static int fail(lexer *L, int line, const char *fmt, const char *arg) {
    char msg[160];
    snprintf(msg, sizeof msg, fmt, arg);
    return tm_fail(L->err, L->err_len, TM_EINVAL, "line %d: %s", line, msg);
}

static int push(lexer *L, jtok t) {
    if (L->n == L->cap) {
        int cap = L->cap ? 2 * L->cap : 256;
        jtok *q = realloc(L->toks, (size_t)cap * sizeof *q);
        if (!q) return tm_fail(L->err, L->err_len, TM_ENOMEM, "out of memory");
        L->toks = q;
        L->cap = cap;
    }
    L->toks[L->n++] = t;
    return 0;
}

static void advance(lexer *L, const char *to) {
    for (const char *q = L->p; q < to; q++) L->line += *q == '\n';
    L->p = to;
}

static const char *skip_space(const char *p, const char *end) {
    size_t k;
    while (p < end && (k = jv_space_len(p, end)) > 0) p += k;
    return p;
}

/* Python's text.rstrip(): the end of text without trailing whitespace. */
static const char *rstrip(const char *s, const char *e) {
    const char *keep = s;
    for (const char *p = s; p < e;) {
        size_t k = jv_space_len(p, e);
        if (k) {
            p += k;
            continue;
        }
        p += jv_u8len(p, e);
        keep = p;
    }
    return keep;
}

static int emit_data(lexer *L, const char *s, const char *e, int line) {
    if (e <= s) return 0;
    jtok t = {.type = JT_DATA, .line = line, .s = s, .n = (size_t)(e - s)};
    return push(L, t);
}

/* The earliest "{{", "{%" or "{#" at or after p, or NULL. */
static const char *next_tag(const char *p, const char *end) {
    for (; p + 1 < end; p++) {
        p = memchr(p, '{', (size_t)(end - p - 1));
        if (!p) return NULL;
        if (p[1] == '{' || p[1] == '%' || p[1] == '#') return p;
    }
    return NULL;
}

/* At q (just after "{%" and its sign): `\s*raw\s*(-%}\s*|%})`? Sets *after. */
static int match_raw_begin(const char *q, const char *end, const char **after) {
    q = skip_space(q, end);
    if (end - q < 3 || memcmp(q, "raw", 3) != 0) return 0;
    q = skip_space(q + 3, end);
    if (end - q >= 3 && !memcmp(q, "-%}", 3)) {
        *after = skip_space(q + 3, end);
        return 1;
    }
    if (end - q >= 2 && !memcmp(q, "%}", 2)) {
        *after = q + 2;
        return 1;
    }
    return 0;
}

/* Raw text up to `{%[-+]? endraw (+%}|-%}\s*|%}\n?)`; emits it, moves past the end tag. */
static int lex_raw(lexer *L, int line) {
    for (const char *q = L->p; (q = next_tag(q, L->end)); q++) {
        if (q[1] != '%') continue;
        const char *r = q + 2;
        char sign = r < L->end && (*r == '-' || *r == '+') ? *r++ : 0;
        r = skip_space(r, L->end);
        if (L->end - r < 6 || memcmp(r, "endraw", 6) != 0) continue;
        r = skip_space(r + 6, L->end);
        const char *after = NULL;
        if (L->end - r >= 3 && !memcmp(r, "+%}", 3)) after = r + 3;
        else if (L->end - r >= 3 && !memcmp(r, "-%}", 3)) after = skip_space(r + 3, L->end);
        else if (L->end - r >= 2 && !memcmp(r, "%}", 2))
            after = r + 2 + (r + 2 < L->end && r[2] == '\n');
        if (!after) continue;
        const char *text_end = sign == '-' ? rstrip(L->p, q) : q;
        int rc = emit_data(L, L->p, text_end, line);
        advance(L, after);
        return rc;
    }
    return fail(L, line, "%s", "missing end of raw directive");
}

/* A string literal at L->p (quote char), decoded as Python's unicode-escape does after
 * jinja2 escapes non-ASCII characters with backslashreplace. */
static int lex_string(lexer *L, jtok *t) {
    const char quote = *L->p;
    const char *q = L->p + 1;
    /* find the closing quote first: the decoded text is never longer than the source */
    const char *close = q;
    while (close < L->end && *close != quote) close += *close == '\\' ? 2 : 1;
    if (close >= L->end) return fail(L, L->line, "%s", "unexpected end of string literal");
    char *buf = ja_alloc(L->a, (size_t)(close - q) * 2 + 1), *w = buf;
    if (!buf) return tm_fail(L->err, L->err_len, TM_ENOMEM, "template too large");
    while (q < close) {
        if (*q != '\\') {
            *w++ = *q++;
            continue;
        }
        q++;
        char c = *q++;
        uint32_t cp = 0;
        int nhex = 0;
        switch (c) {
        case '\n': break; /* line continuation */
        case '\\': *w++ = '\\'; break;
        case '\'': *w++ = '\''; break;
        case '"': *w++ = '"'; break;
        case 'a': *w++ = '\a'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'v': *w++ = '\v'; break;
        case 'x': nhex = 2; break;
        case 'u': nhex = 4; break;
        case 'U': nhex = 8; break;
        case 'N': return fail(L, t->line, "%s", "\\N{...} escapes are not supported");
        default:
            if (c >= '0' && c <= '7') {
                cp = (uint32_t)(c - '0');
                for (int k = 0; k < 2 && q < close && *q >= '0' && *q <= '7'; k++)
                    cp = cp * 8 + (uint32_t)(*q++ - '0');
                nhex = -1;
            } else if ((unsigned char)c >= 0x80) {
                /* backslashreplace turned this character into \xNN, \uNNNN or \UNNNNNNNN;
                 * our backslash then escapes that one's backslash */
                const char *s = q - 1;
                size_t k = jv_u8len(s, close);
                uint32_t v = (unsigned char)*s;
                if (k > 1) {
                    v = (unsigned char)*s & (0xFF >> (k + 1));
                    for (size_t j = 1; j < k; j++) v = (v << 6) | ((unsigned char)s[j] & 0x3F);
                }
                q = s + k;
                w += sprintf(w, v < 0x100 ? "\\x%02x" : v < 0x10000 ? "\\u%04x" : "\\U%08x", v);
            } else {
                *w++ = '\\'; /* unknown escapes stay as they are */
                *w++ = c;
            }
        }
        if (nhex > 0) {
            for (int k = 0; k < nhex; k++, q++) {
                if (q >= close || !isxdigit((unsigned char)*q))
                    return fail(L, t->line, "%s", "truncated \\x, \\u or \\U escape");
                cp = cp * 16 + (uint32_t)(isdigit((unsigned char)*q) ? *q - '0'
                                                                    : (tolower(*q) - 'a' + 10));
            }
        }
        if (nhex != 0) {
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return fail(L, t->line, "%s", "escape outside the Unicode range");
            if (cp < 0x80) *w++ = (char)cp;
            else if (cp < 0x800) *w++ = (char)(0xC0 | cp >> 6), *w++ = (char)(0x80 | (cp & 0x3F));
            else if (cp < 0x10000)
                *w++ = (char)(0xE0 | cp >> 12), *w++ = (char)(0x80 | ((cp >> 6) & 0x3F)),
                *w++ = (char)(0x80 | (cp & 0x3F));
            else
                *w++ = (char)(0xF0 | cp >> 18), *w++ = (char)(0x80 | ((cp >> 12) & 0x3F)),
                *w++ = (char)(0x80 | ((cp >> 6) & 0x3F)), *w++ = (char)(0x80 | (cp & 0x3F));
        }
    }
    *w = 0;
    t->type = JT_STRING;
    t->s = buf;
    t->n = (size_t)(w - buf);
    advance(L, close + 1);
    return 0;
}

/* digits with single underscores between them: `\d+(_\d+)*`; returns the end. */
static const char *digits(const char *p, const char *end) {
    if (p >= end || !isdigit((unsigned char)*p)) return p;
    while (p < end && isdigit((unsigned char)*p)) {
        p++;
        if (p + 1 < end && *p == '_' && isdigit((unsigned char)p[1])) p++;
    }
    return p;
}

static int lex_number(lexer *L, jtok *t) {
    const char *s = L->p, *e = digits(s, L->end), *f = e;
    int is_float = 0;
    /* a float needs digits after the dot, or an exponent; not right after a '.' (x.0.1) */
    int after_dot = s > L->src && s[-1] == '.';
    if (!after_dot) {
        if (f + 1 < L->end && *f == '.' && isdigit((unsigned char)f[1])) {
            f = digits(f + 1, L->end);
            is_float = 1;
        }
        if (f < L->end && (*f == 'e' || *f == 'E')) {
            const char *g = f + 1;
            if (g < L->end && (*g == '+' || *g == '-')) g++;
            const char *h = digits(g, L->end);
            if (h > g) f = h, is_float = 1;
        }
    }
    if (is_float) e = f;
    char buf[128];
    size_t k = 0;
    for (const char *q = s; q < e && k + 1 < sizeof buf; q++)
        if (*q != '_') buf[k++] = *q;
    buf[k] = 0;
    if (e - s >= (long)sizeof buf) return fail(L, t->line, "%s", "number literal too long");
    errno = 0;
    if (is_float) {
        t->type = JT_FLOAT;
        t->f = strtod(buf, NULL);
    } else {
        t->type = JT_INT;
        t->i = strtoll(buf, NULL, 10);
        if (errno == ERANGE) return fail(L, t->line, "%s", "integer literal too large");
    }
    advance(L, e);
    return 0;
}

/* Tokens of one {{ }} or {% %} tag, up to and including its end. */
static int lex_tag(lexer *L, int is_block) {
    char stack[64]; /* open brackets */
    int depth = 0, line0 = L->line;
    for (;;) {
        L->p = skip_space(L->p, L->end), advance(L, L->p);
        if (L->p >= L->end) return fail(L, line0, "%s", "unexpected end of template (unclosed tag)");
        const char *p = L->p, *end = L->end;
        jtok t = {.line = L->line};
        if (depth == 0) {
            const char *after = NULL;
            if (is_block) {
                if (end - p >= 3 && !memcmp(p, "-%}", 3)) after = skip_space(p + 3, end);
                else if (end - p >= 3 && !memcmp(p, "+%}", 3)) after = p + 3;
                else if (end - p >= 2 && !memcmp(p, "%}", 2)) after = p + 2 + (p + 2 < end && p[2] == '\n');
            } else {
                if (end - p >= 3 && !memcmp(p, "-}}", 3)) after = skip_space(p + 3, end);
                else if (end - p >= 2 && !memcmp(p, "}}", 2)) after = p + 2;
            }
            if (after) {
                t.type = is_block ? JT_BLOCK_END : JT_VAR_END;
                advance(L, after);
                return push(L, t);
            }
        }
        int rc;
        unsigned char c = (unsigned char)*p;
        if (isdigit(c)) {
            rc = lex_number(L, &t);
        } else if (isalpha(c) || c == '_') {
            const char *e = p;
            while (e < end && (isalnum((unsigned char)*e) || *e == '_')) e++;
            t.type = JT_NAME;
            t.s = p;
            t.n = (size_t)(e - p);
            advance(L, e);
            rc = 0;
        } else if (c == '\'' || c == '"') {
            rc = lex_string(L, &t);
        } else {
            size_t i = 0;
            for (; i < TM_ARRAY_LEN(k_ops); i++) {
                size_t k = strlen(k_ops[i].text);
                if ((size_t)(end - p) >= k && !memcmp(p, k_ops[i].text, k)) break;
            }
            if (i == TM_ARRAY_LEN(k_ops)) {
                char ch[8];
                snprintf(ch, sizeof ch, c >= 0x20 && c < 0x7f ? "%c" : "\\x%02x", c);
                return fail(L, L->line, "unexpected char '%s'", ch);
            }
            t.type = JT_OP;
            t.op = (uint8_t)k_ops[i].op;
            char open = t.op == OP_LPAREN ? ')' : t.op == OP_LBRACKET ? ']' : t.op == OP_LBRACE ? '}' : 0;
            char close = t.op == OP_RPAREN ? ')' : t.op == OP_RBRACKET ? ']' : t.op == OP_RBRACE ? '}' : 0;
            if (open) {
                if (depth == (int)sizeof stack) return fail(L, L->line, "%s", "brackets nested too deeply");
                stack[depth++] = open;
            } else if (close) {
                char want[2] = {close, 0};
                if (depth == 0) return fail(L, L->line, "unexpected '%s'", want);
                if (stack[--depth] != close) return fail(L, L->line, "unexpected '%s'", want);
            }
            advance(L, p + strlen(k_ops[i].text));
            rc = 0;
        }
        if (rc || (rc = push(L, t))) return rc;
    }
}

/* {# ... #}: finds the first "#}" (with its - or + sign), moves past it. */
static int lex_comment(lexer *L, int line) {
    for (const char *q = L->p; q + 1 < L->end; q++) {
        if (q[0] == '-' && q + 2 < L->end && q[1] == '#' && q[2] == '}') {
            advance(L, skip_space(q + 3, L->end));
            return 0;
        }
        if (q[0] == '+' && q + 2 < L->end && q[1] == '#' && q[2] == '}') {
            advance(L, q + 3);
            return 0;
        }
        if (q[0] == '#' && q[1] == '}') {
            advance(L, q + 2 + (q + 2 < L->end && q[2] == '\n'));
            return 0;
        }
    }
    return fail(L, line, "%s", "missing end of comment tag");
}

int jl_lex(jarena *a, const char *src, size_t n, jtok **toks, int *n_toks, char *err,
           size_t err_len) {
    lexer L = {.a = a, .src = src, .end = src + n, .p = src, .line = 1, .err = err, .err_len = err_len};
    int rc = 0;
    while (!rc && L.p < L.end) {
        const char *text = L.p, *tag = next_tag(L.p, L.end);
        const int line = L.line;
        if (!tag) {
            rc = emit_data(&L, text, L.end, line);
            advance(&L, L.end);
            break;
        }
        const char kind = tag[1]; /* '{', '%' or '#' */
        const char *q = tag + 2;
        const char sign = q < L.end && (*q == '-' || *q == '+') ? *q++ : 0;
        const char *text_end = tag;
        if (sign == '-') {
            text_end = rstrip(text, tag);
        } else if (sign != '+' && kind != '{') {
            /* lstrip_blocks: whitespace alone between the line start and the tag goes */
            const char *l = tag;
            while (l > text && l[-1] != '\n') l--;
            int line_start = l > text || text == L.src || text[-1] == '\n';
            if (line_start && l < tag && skip_space(l, tag) == tag) text_end = l;
        }
        const char *raw_after = NULL;
        if (kind == '%' && match_raw_begin(q, L.end, &raw_after)) {
            if ((rc = emit_data(&L, text, text_end, line))) break;
            advance(&L, raw_after);
            rc = lex_raw(&L, L.line);
            continue;
        }
        if ((rc = emit_data(&L, text, text_end, line))) break;
        advance(&L, q);
        if (kind == '#') {
            rc = lex_comment(&L, L.line);
            continue;
        }
        jtok t = {.type = kind == '%' ? JT_BLOCK_BEGIN : JT_VAR_BEGIN, .line = L.line};
        if (!(rc = push(&L, t))) rc = lex_tag(&L, kind == '%');
    }
    jtok eof = {.type = JT_EOF, .line = L.line};
    if (!rc) rc = push(&L, eof);
    if (!rc) {
        *toks = ja_alloc(a, (size_t)L.n * sizeof **toks);
        if (!*toks) rc = tm_fail(err, err_len, TM_ENOMEM, "template too large");
        else memcpy(*toks, L.toks, (size_t)L.n * sizeof **toks), *n_toks = L.n;
    }
    free(L.toks);
    return rc;
}

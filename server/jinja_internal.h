/* jinja_internal.h - types shared by the Jinja interpreter's files: the arena, tokens
 * (jinja_lex.c), the syntax tree (jinja_parse.c), values and their Python behaviour
 * (jinja_value.c), the evaluator (jinja_eval.c) and the builtins (jinja_builtins.c).
 * Not a public header. */
#ifndef TM_JINJA_INTERNAL_H
#define TM_JINJA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "server/jinja.h"

/* ---- arena: everything of a parse or a render is freed at once ---- */

/* Invariant: used <= cap; once oom is set every alloc returns NULL. */
typedef struct jarena {
    struct jblock *head; /* newest block first */
    size_t used;         /* bytes handed out, all blocks */
    size_t cap;          /* limit on used */
    int oom;             /* the limit (or malloc) failed once */
} jarena;

void ja_init(jarena *a, size_t cap);
void ja_free(jarena *a);
void *ja_alloc(jarena *a, size_t n); /* 16-byte aligned, zeroed; NULL past the cap */
char *ja_strdup(jarena *a, const char *s, size_t n); /* n bytes + NUL */

/* ---- tokens ---- */

typedef enum jtok_type {
    JT_EOF = 0,
    JT_DATA,        /* template text (s, n) */
    JT_VAR_BEGIN,   /* {{ */
    JT_VAR_END,     /* }} */
    JT_BLOCK_BEGIN, /* {% */
    JT_BLOCK_END,   /* %} */
    JT_NAME,        /* identifier (s, n) */
    JT_STRING,      /* decoded literal (s, n) */
    JT_INT,         /* i */
    JT_FLOAT,       /* f */
    JT_OP,          /* op */
} jtok_type;

typedef enum jop {
    OP_ADD = 1, OP_SUB, OP_DIV, OP_FLOORDIV, OP_MUL, OP_MOD, OP_POW, OP_TILDE,
    OP_LBRACKET, OP_RBRACKET, OP_LPAREN, OP_RPAREN, OP_LBRACE, OP_RBRACE,
    OP_EQ, OP_NE, OP_GT, OP_GE, OP_LT, OP_LE, OP_ASSIGN, OP_DOT, OP_COLON, OP_PIPE,
    OP_COMMA, OP_SEMICOLON,
    /* not tokens: operators of the tree */
    OP_IN, OP_NOTIN, OP_NEG, OP_POS,
} jop;

typedef struct jtok {
    uint8_t type;  /* jtok_type */
    uint8_t op;    /* jop for JT_OP */
    int line;      /* 1-based source line */
    const char *s; /* JT_DATA, JT_NAME, JT_STRING text (in the template's arena) */
    size_t n;      /* its length */
    int64_t i;     /* JT_INT */
    double f;      /* JT_FLOAT */
} jtok;

/* Splits normalized source into tokens (array in a; whitespace control, trim_blocks and
 * lstrip_blocks already applied to the data). TM_EINVAL with "line N: ..." in err. */
int jl_lex(jarena *a, const char *src, size_t n, jtok **toks, int *n_toks, char *err,
           size_t err_len);
const char *jl_op_text(int op);

/* ---- values ---- */

typedef enum jtype {
    JV_UNDEF = 0, /* s: the name or hint for the error when it is used */
    JV_NONE,
    JV_BOOL,      /* i: 0 or 1 */
    JV_INT,       /* i */
    JV_FLOAT,     /* f */
    JV_STR,       /* s (bytes, UTF-8, may hold NUL) */
    JV_LIST,      /* l; flags JVF_TUPLE for a tuple */
    JV_DICT,      /* d (insertion ordered) */
    JV_NS,        /* d: a namespace(), the one mutable object */
    JV_FUNC,      /* i: builtin function id; p: bound object for methods (jbound) */
    JV_MACRO,     /* m */
    JV_LOOP,      /* lp */
} jtype;

/* JVF_GEN: a lazy iterator (what jinja2's select, map, items, unique, batch and reverse
 * return): always true, no len() or subscript, and iterable once. */
enum { JVF_TUPLE = 1, JVF_GEN = 2 };

struct jlist;
struct jdict;
struct jmacro;
struct jloop;
struct jbound;

typedef struct jv {
    uint8_t t;     /* jtype */
    uint8_t flags; /* JVF_* */
    union {
        int64_t i;
        double f;
        struct {
            const char *p; /* bytes (not NUL-terminated in general) */
            size_t n;      /* length */
        } s;
        struct jlist *l;
        struct jdict *d;
        struct jmacro *m;
        struct jloop *lp;
        struct jbound *b;
    } u;
} jv;

typedef struct jlist {
    jv *items; /* (n) */
    size_t n;
    int used;  /* JVF_GEN: already iterated (a second pass sees nothing) */
} jlist;

/* Keys are any values (compared with Python ==); lookups are linear. */
typedef struct jdict {
    jv *keys;   /* (n) */
    jv *vals;   /* (n) */
    size_t n;   /* entries */
    size_t cap; /* allocated entries (namespaces grow) */
} jdict;

/* The `loop` of a for loop: the current iteration over the items. */
typedef struct jloop {
    size_t index0;      /* current iteration */
    const jlist *items; /* what is iterated */
} jloop;

/* A builtin method bound to its object ("abc".upper, d.items, loop.cycle). */
typedef struct jbound {
    jv self; /* the object */
    int id;  /* builtin id */
} jbound;

/* ---- syntax tree ---- */

typedef enum jnode_kind {
    /* expressions */
    N_CONST = 1, /* v */
    N_NAME,      /* name */
    N_GETATTR,   /* a.name */
    N_GETITEM,   /* a[b] */
    N_SLICE,     /* a[b:c:d] (missing parts NULL) */
    N_CALL,      /* a(list: positional and N_KWARG) */
    N_KWARG,     /* name=a */
    N_FILTER,    /* a|name(list); a NULL in a filter block */
    N_TEST,      /* a is [not] name(list); op 1 = negated */
    N_UNARY,     /* op a (OP_NEG, OP_POS) */
    N_NOT,       /* not a */
    N_BINARY,    /* a op b (arithmetic, ~) */
    N_AND,       /* a and b */
    N_OR,        /* a or b */
    N_COMPARE,   /* a, then list of N_OPERAND (op, a) */
    N_OPERAND,   /* op a */
    N_COND,      /* b if a else c (c may be NULL) */
    N_LIST,      /* [list] */
    N_TUPLE,     /* (list) */
    N_DICT,      /* {list: N_PAIR} */
    N_PAIR,      /* a: b */
    /* statements */
    S_DATA,      /* text v */
    S_OUTPUT,    /* {{ a }} */
    S_IF,        /* if a: list else list2 */
    S_FOR,       /* for a in b if c: list else list2 */
    S_SET,       /* a = b (a: N_NAME, N_TUPLE of names, N_GETATTR on a name) */
    S_SETBLOCK,  /* a = rendered list, through filter c (or NULL) */
    S_MACRO,     /* name(list2: N_NAME or N_KWARG defaults): list */
    S_BREAK,
    S_CONTINUE,
    S_FILTER,    /* rendered list through filter c */
    S_WITH,      /* list2 of N_KWARG bindings, then list */
} jnode_kind;

typedef struct jnode {
    uint8_t kind;         /* jnode_kind */
    uint8_t op;           /* jop, or the negation flag of N_TEST */
    int line;             /* source line */
    struct jnode *a, *b, *c, *d;
    struct jnode **list;  /* (n) children: arguments, items, body */
    int n;
    struct jnode **list2; /* (n2) else body, macro parameters, with bindings */
    int n2;
    const char *name;     /* identifier, filter, test or attribute name */
    size_t name_len;
    jv v;                 /* N_CONST value, S_DATA text */
    int builtin;          /* N_FILTER / N_TEST: builtin id resolved at parse time */
} jnode;

struct tm_jinja {
    jarena arena;      /* tokens' text, nodes, constants */
    jnode **body;      /* (n_body) top-level statements */
    int n_body;
    tm_jinja_limits limits; /* as parsed (max_depth also bounds render nesting) */
};

int jp_parse(jarena *a, const jtok *toks, int n_toks, int max_depth, jnode ***body,
             int *n_body, char *err, size_t err_len);

/* ---- rendering context ---- */

typedef struct jbuf {
    char *p;     /* malloc'd */
    size_t n;    /* used */
    size_t cap;  /* allocated */
} jbuf;

typedef struct jscope jscope;

typedef struct jctx {
    jarena arena;              /* values made while rendering */
    const tm_jinja_limits *lim;
    uint64_t steps;            /* counted against lim->max_steps */
    int depth;                 /* macro call nesting */
    jbuf *out;                 /* where output goes now */
    jdict *vars;               /* the caller's variables */
    struct tm now;             /* for strftime_now */
    int failed;                /* tm_jinja_failure once an error is recorded */
    int code;                  /* its TM_E* code */
    char *err;                 /* message buffer */
    size_t err_len;
} jctx;

/* Records the first error (later ones are ignored); returns code. */
int jx_fail(jctx *x, int failure, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define JX_ERR(x, ...) jx_fail((x), TM_JINJA_ERROR, -1 /* TM_EINVAL */, __VA_ARGS__)
/* Counts n steps; fails past the limit. */
int jx_steps(jctx *x, uint64_t n);
/* Appends bytes to the current output; fails past the output limit. */
int jx_emit(jctx *x, const char *s, size_t n);

/* ---- values (jinja_value.c) ---- */

jv jv_undef(const char *hint);
jv jv_none(void);
jv jv_bool(int b);
jv jv_int(int64_t i);
jv jv_float(double f);
jv jv_str(const char *p, size_t n);
jv jv_cstr(const char *s);
jv jv_list(jlist *l, int tuple);
jv jv_gen(jlist *l); /* a lazy iterator over l's items */
jv jv_dict(jdict *d);

jlist *jv_list_new(jctx *x, size_t n);             /* n items, all undefined */
jdict *jv_dict_new(jctx *x, size_t cap);
int jv_dict_set(jctx *x, jdict *d, jv key, jv val); /* insert or replace */
/* Value of key, or NULL. */
jv *jv_dict_get(jctx *x, const jdict *d, jv key);
jv *jv_dict_get_str(const jdict *d, const char *k, size_t n);

const char *jv_type_name(const jv *v); /* Python's: 'str', 'int', 'NoneType', ... */
int jv_truthy(const jv *v);
int jv_is_number(const jv *v); /* bool, int, float */
double jv_num(const jv *v);
/* Python ==. */
int jv_equal(const jv *a, const jv *b);
/* Python ordering: sets *cmp to -1/0/1; TypeError (fails) for incomparable types. */
int jv_compare(jctx *x, const jv *a, const jv *b, int *cmp);

/* str(v) and repr(v) appended to b; fail only on limits. */
int jv_str_to(jctx *x, jbuf *b, const jv *v);
int jv_repr_to(jctx *x, jbuf *b, const jv *v);
/* str(v) as a string value (strings are returned as they are). */
int jv_to_str(jctx *x, const jv *v, jv *out);
/* json.dumps(v, ensure_ascii, indent (<0: none), separators, sort_keys). */
int jv_json_to(jctx *x, jbuf *b, const jv *v, int ensure_ascii, int indent,
               const char *item_sep, const char *key_sep, int sort_keys);
/* A JSON tree as values; strings are borrowed from the tree. */
int jv_from_json(jctx *x, const json_t *j, jv *out, int depth);

int jbuf_add(jctx *x, jbuf *b, const char *s, size_t n);
/* The buffer's text as an arena string value; frees the buffer. */
int jbuf_take(jctx *x, jbuf *b, jv *out);
void jbuf_free(jbuf *b);

/* Python float repr into buf (at least 32 bytes); returns its length. */
size_t jv_float_repr(double f, char *buf);
/* Python's str.isspace for the code point at p (bytes up to end): its byte length, or 0. */
size_t jv_space_len(const char *p, const char *end);
/* Length of the UTF-8 sequence at p, 1 for an invalid byte. */
size_t jv_u8len(const char *p, const char *end);
/* Code points in s. */
size_t jv_u8count(const char *p, size_t n);

/* ---- builtins (jinja_builtins.c) ---- */

/* Builtin ids: filters, tests, functions and methods, resolved by name at parse time. */
enum { JB_KIND_FILTER = 1, JB_KIND_TEST = 2 };
/* The id of the filter or test called name, or -1. */
int jb_lookup(int kind, const char *name, size_t n);
/* A global function (range, namespace, dict, raise_exception, strftime_now) by name. */
int jb_global(const char *name, size_t n, jv *out);
/* The method attr of v (str, dict, list methods; loop.cycle), or 0 when none exists.
 * Unsafe (mutating) methods give a value whose call fails as the sandbox does. */
int jb_method(jctx *x, const jv *v, const char *attr, size_t n, jv *out);

/* Arguments of a call: positional then keyword. */
typedef struct jargs {
    jv *pos;             /* (n_pos) */
    int n_pos;
    const char **kw;     /* (n_kw) names */
    size_t *kw_len;
    jv *kw_val;          /* (n_kw) */
    int n_kw;
} jargs;

int jb_filter(jctx *x, int id, const jv *subject, const jargs *args, jv *out);
int jb_test(jctx *x, int id, const jv *subject, const jargs *args, int *out);
/* Calls a JV_FUNC value (builtin function or bound method). */
int jb_call(jctx *x, const jv *fn, const jargs *args, jv *out);

/* ---- evaluator hooks the builtins need (jinja_eval.c) ---- */

int je_getattr(jctx *x, const jv *obj, const char *name, size_t n, jv *out);
int je_getitem(jctx *x, const jv *obj, const jv *key, jv *out);
/* Items of an iterable (list, tuple, dict keys, string characters; undefined: none). */
int je_iterate(jctx *x, const jv *v, jlist **out);
/* Calls any callable (macro or builtin). */
int je_call(jctx *x, const jv *fn, const jargs *args, jv *out);

#endif

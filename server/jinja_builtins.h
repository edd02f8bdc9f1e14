/* jinja_builtins.h - shared by the builtins' files: jinja_builtins.c (names, arguments,
 * global functions, tests), jinja_strings.c (str/dict/list methods, Python's string
 * operations) and jinja_filters.c. Not a public header. */
#ifndef TM_JINJA_BUILTINS_H
#define TM_JINJA_BUILTINS_H

#include <string.h>

#include "server/jinja_internal.h"

/* Builtin ids: filters, tests, global functions, methods. */
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


#define NAME_IS(s, n, lit) ((n) == strlen(lit) && !memcmp((s), (lit), (n)))

/* A function value for a bound method or a global (b is not copied). */
static inline jv jb_func(const jbound *b) {
    jv v = {.t = JV_FUNC};
    v.u.b = (jbound *)b;
    return v;
}

/* ---- arguments (jinja_builtins.c) ---- */

/* Binds args to params (names, in order): out[i] is the value or NULL. Fails on too many
 * positional arguments or an unknown keyword, as Python would. */
int jb_bind(jctx *x, const char *fname, const jargs *a, const char *const *params, int n,
            const jv **out);
int jb_want_str(jctx *x, const jv *v, const char *what);
int jb_want_int(jctx *x, const jv *v, const char *what, int64_t *out);
int jb_mem(jctx *x);                         /* the memory-limit failure */
int jb_newstr(jctx *x, size_t n, char **p);  /* n bytes (+ NUL) in the arena, counted */

/* ---- strings and methods (jinja_strings.c) ---- */

typedef enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAPITALIZE } case_mode;

/* str.strip / lstrip / rstrip with chars NULL (whitespace) or a string. */
int jb_strip(jctx *x, const jv *s, const jv *chars, int left, int right, jv *out);
int jb_case(jctx *x, const jv *s, case_mode m, jv *out);
const char *jb_find_bytes(const char *h, size_t hn, const char *n, size_t nn);
int jb_splitlines(jctx *x, const char *p, size_t n, int keepends, jlist **out);
int jb_replace(jctx *x, const jv *s, const jv *old, const jv *new_, const jv *countv, jv *out);
/* str.isdigit, isalpha, ... for the M_IS* ids. */
int jb_classify(const jv *s, int id);
/* sep.join(iterable); str_items: items become str() (the join filter) instead of a
 * TypeError for non-strings (str.join). */
int jb_join(jctx *x, const jv *sep, const jv *iterable, int str_items, jv *out);
int jb_call_method(jctx *x, const jbound *b, const jargs *a, jv *out);

#endif

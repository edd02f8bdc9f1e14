/* api_parse_internal.h - shared by api_parse.c and api_parse_chat.c. Not a public header. */
#ifndef TM_API_PARSE_INTERNAL_H
#define TM_API_PARSE_INTERNAL_H

#include <jansson.h>

#include "server/api_parse.h"

/* Parser context: the object, where failures are reported. */
typedef struct pctx {
    json_t *root;       /* the request object */
    const char **param; /* failing field */
    char *err;
    size_t err_len;
} pctx;

#define FAIL(ctx, field, ...) \
    (*(ctx)->param = (field), tm_fail((ctx)->err, (ctx)->err_len, TM_EINVAL, __VA_ARGS__))

/* Field lookup where JSON null counts as absent. */
static inline json_t *get(pctx *x, const char *key) {
    json_t *v = json_object_get(x->root, key);
    return json_is_null(v) ? NULL : v;
}

/* api_parse_chat.c */
int tm_api_parse_messages(pctx *x, tm_api_params *p);
int tm_api_parse_tools(pctx *x, tm_api_params *p);
int tm_api_parse_template_kwargs(pctx *x, tm_api_params *p);

#endif

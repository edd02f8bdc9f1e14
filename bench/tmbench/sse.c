/* sse.c - the event-stream parser (see sse.h). */
#include "bench/tmbench/sse.h"

#include <stdlib.h>
#include <string.h>

#include "common/common.h"

void tm_sse_init(tm_sse *p, size_t max_bytes, tm_sse_event_fn fn, void *user) {
    memset(p, 0, sizeof *p);
    p->max_bytes = max_bytes;
    p->fn = fn;
    p->user = user;
}

void tm_sse_deinit(tm_sse *p) {
    free(p->line);
    free(p->data);
    memset(p, 0, sizeof *p);
}

void tm_sse_reset(tm_sse *p) {
    p->line_len = p->data_len = 0;
    p->has_data = p->skip_lf = 0;
}

static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n, size_t max) {
    if (*len + n > max) return TM_ERANGE;
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n) c *= 2;
        char *b = realloc(*buf, c);
        if (!b) return TM_ENOMEM;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    return 0;
}

static int dispatch(tm_sse *p) {
    if (!p->has_data) return 0;
    size_t n = p->data_len;
    p->data_len = 0;
    p->has_data = 0;
    return p->fn(p->user, p->data ? p->data : "", n);
}

/* One complete line (without its terminator). */
static int on_line(tm_sse *p, const char *s, size_t n) {
    if (n == 0) return dispatch(p);
    if (s[0] == ':') return 0; /* comment, e.g. a keep-alive ping */
    const char *colon = memchr(s, ':', n);
    size_t name_len = colon ? (size_t)(colon - s) : n;
    if (name_len != 4 || memcmp(s, "data", 4) != 0) return 0; /* event:, id:, retry: */
    const char *v = colon ? colon + 1 : s + n;
    if (v < s + n && *v == ' ') v++;
    size_t vn = (size_t)(s + n - v);
    int rc = 0;
    if (p->has_data) rc = append(&p->data, &p->data_len, &p->data_cap, "\n", 1, p->max_bytes);
    if (!rc) rc = append(&p->data, &p->data_len, &p->data_cap, v, vn, p->max_bytes);
    p->has_data = 1;
    return rc;
}

int tm_sse_feed(tm_sse *p, const char *buf, size_t len) {
    size_t i = 0;
    if (len && p->skip_lf && buf[0] == '\n') i = 1;
    p->skip_lf = 0;
    while (i < len) {
        /* find the next line end, '\n' or '\r' */
        const char *s = buf + i;
        size_t rest = len - i, k = 0;
        while (k < rest && s[k] != '\n' && s[k] != '\r') k++;
        if (k == rest) { /* no end yet: keep the partial line */
            return append(&p->line, &p->line_len, &p->line_cap, s, k, p->max_bytes);
        }
        int rc;
        if (p->line_len) { /* the line began in an earlier buffer */
            rc = append(&p->line, &p->line_len, &p->line_cap, s, k, p->max_bytes);
            if (!rc) rc = on_line(p, p->line, p->line_len);
            p->line_len = 0;
        } else {
            rc = on_line(p, s, k);
        }
        if (rc) return rc;
        i += k + 1;
        if (s[k] == '\r') {
            if (i < len && buf[i] == '\n') i++;
            else if (i == len) p->skip_lf = 1;
        }
    }
    return 0;
}

int tm_sse_finish(tm_sse *p) {
    int rc = 0;
    if (p->line_len) rc = on_line(p, p->line, p->line_len);
    p->line_len = 0;
    if (!rc) rc = dispatch(p);
    return rc;
}

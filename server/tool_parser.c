/* tool_parser.c - incremental tool-call parsing. See tool_parser.h.
 *
 * The whole generated text is kept (it is bounded by max_tokens). Before a marker, text is
 * content, except a tail that may still become a marker. From the marker on, calls are
 * taken out one complete JSON value at a time (jansson reads one value and says where it
 * ended, or that the input ended too early: then we wait for more). */
#define _GNU_SOURCE /* memmem */
#include "server/tool_parser.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/common.h"
#include "server/jinja.h"

struct tm_tool_parser {
    tm_tool_format f;      /* the format */
    uint64_t seed;         /* for call ids */
    char *buf;             /* (cap) all text so far, NUL-terminated */
    size_t n, cap;
    size_t done;           /* bytes before this are decided (content sent or call taken) */
    int in_calls;          /* a marker was found at calls_at */
    size_t calls_at;       /* start of the call section */
    int stopped;           /* the call section stopped parsing (junk after the calls) */
    int n_calls;           /* calls emitted (or begun) */
    /* A call streamed as it is written: its head (id, name) went out when its name and
     * the arguments key were read; its arguments go out a JSON token at a time, each
     * re-serialized as json.dumps writes it, so that the fragments add up to the text a
     * whole call gets. */
    int cur_open;          /* the call at cur_at is streaming */
    size_t cur_at;         /* where its JSON object starts */
    size_t args_raw;       /* raw argument bytes before this are sent */
    int args_depth;        /* nesting of [ and { inside the arguments */
    int args_done;         /* the arguments value ended, or stopped lexing */
    char *sent;            /* (sent_cap) the argument text sent so far */
    size_t sent_len, sent_cap;
};

static const struct {
    const char *name;
    tm_tool_format f;
} k_formats[] = {{"hermes", TM_TOOLS_HERMES}, {"llama3_json", TM_TOOLS_LLAMA3_JSON},
                 {"mistral", TM_TOOLS_MISTRAL}};

int tm_tool_format_from_name(const char *name, tm_tool_format *out) {
    for (size_t i = 0; i < TM_ARRAY_LEN(k_formats); i++)
        if (!strcmp(k_formats[i].name, name)) {
            *out = k_formats[i].f;
            return 0;
        }
    return TM_ENOTFOUND;
}

const char *tm_tool_format_name(tm_tool_format f) {
    for (size_t i = 0; i < TM_ARRAY_LEN(k_formats); i++)
        if (k_formats[i].f == f) return k_formats[i].name;
    return "none";
}

tm_tool_format tm_tool_format_detect(const char *t, size_t len) {
    if (!t) return TM_TOOLS_NONE;
    if (memmem(t, len, "<tool_call>", 11)) return TM_TOOLS_HERMES;
    if (memmem(t, len, "[TOOL_CALLS]", 12)) return TM_TOOLS_MISTRAL;
    if (memmem(t, len, "<|python_tag|>", 14) || memmem(t, len, "Environment: ipython", 20))
        return TM_TOOLS_LLAMA3_JSON;
    return TM_TOOLS_NONE;
}

int tm_tool_format_markup(tm_tool_format f, tm_tool_markup *out) {
    /* what each family's own template shows its model, and what take_calls accepts */
    static const tm_tool_markup hermes = {"<tool_call>\n", "\n</tool_call>\n<tool_call>\n",
                                          "\n</tool_call>", "arguments", "<tool_call>"};
    static const tm_tool_markup mistral = {"[TOOL_CALLS][", ", ", "]", "arguments", "[TOOL_CALLS]"};
    /* Llama 3.1: the reply is the JSON call itself (<|python_tag|> is a control token,
     * which grammars never spell), several separated by "; " */
    static const tm_tool_markup llama3 = {"", "; ", "", "parameters", NULL};
    switch (f) {
    case TM_TOOLS_HERMES: *out = hermes; return 0;
    case TM_TOOLS_MISTRAL: *out = mistral; return 0;
    case TM_TOOLS_LLAMA3_JSON: *out = llama3; return 0;
    default: return TM_EINVAL;
    }
}

void tm_tool_delta_free(tm_tool_delta *d) {
    free(d->text);
    free(d->name);
    free(d->arguments);
    memset(d, 0, sizeof *d);
}

int tm_tool_parser_create(tm_tool_format f, uint64_t id_seed, tm_tool_parser **out) {
    tm_tool_parser *p = calloc(1, sizeof *p);
    if (!p) return TM_ENOMEM;
    p->f = f;
    p->seed = id_seed;
    *out = p;
    return 0;
}

void tm_tool_parser_destroy(tm_tool_parser *p) {
    if (!p) return;
    free(p->buf);
    free(p->sent);
    free(p);
}

int tm_tool_parser_n_calls(const tm_tool_parser *p) { return p->n_calls; }

/* ---- output ---- */

static tm_tool_delta *push(tm_tool_delta **out, int *n) {
    tm_tool_delta *q = realloc(*out, (size_t)(*n + 1) * sizeof *q);
    if (!q) return NULL;
    *out = q;
    memset(&q[*n], 0, sizeof q[*n]);
    return &q[(*n)++];
}

static int emit_content(tm_tool_parser *p, size_t from, size_t to, tm_tool_delta **out, int *n) {
    if (to <= from) return 0;
    tm_tool_delta *d = push(out, n);
    if (!d || !(d->text = malloc(to - from + 1))) return TM_ENOMEM;
    memcpy(d->text, p->buf + from, to - from);
    d->text[to - from] = 0;
    d->text_len = to - from;
    return 0;
}

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void call_id(const tm_tool_parser *p, int index, char *id, size_t cap) {
    uint64_t a = mix(p->seed ^ (uint64_t)index * 0x1000193u), b = mix(a);
    if (p->f == TM_TOOLS_MISTRAL) { /* Mistral templates require 9 alphanumerics */
        static const char k[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        for (int i = 0; i < 9; i++, a /= 62) id[i] = k[a % 62];
        id[9] = 0;
        return;
    }
    snprintf(id, cap, "chatcmpl-tool-%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
}

/* One call from a parsed object {"name": ..., "arguments"|"parameters": ...}; 0 when it
 * is one, TM_EINVAL when the object is not a call. */
static int emit_call(tm_tool_parser *p, json_t *obj, tm_tool_delta **out, int *n) {
    json_t *name = json_object_get(obj, "name"), *args = json_object_get(obj, "arguments");
    if (!args) args = json_object_get(obj, "parameters");
    if (!json_is_object(obj) || !json_is_string(name)) return TM_EINVAL;
    char *text = NULL;
    size_t len = 0;
    json_t *empty = NULL;
    if (!args) args = empty = json_object();
    int rc = tm_jinja_json_dumps(args, &text, &len);
    json_decref(empty);
    if (rc) return rc;
    if (p->cur_open) { /* its head went out: the rest of its arguments */
        p->cur_open = 0;
        /* the fragments sent are a prefix of the whole text unless the object repeated
         * a key (then the client has what was sent) */
        size_t from = p->sent_len <= len && (!p->sent_len || !memcmp(text, p->sent, p->sent_len)) ? p->sent_len : len;
        tm_tool_delta *d = push(out, n);
        if (!d || !(d->arguments = strdup(text + from))) {
            free(text);
            return TM_ENOMEM;
        }
        free(text);
        d->is_call = 1;
        d->index = p->n_calls - 1;
        call_id(p, d->index, d->id, sizeof d->id);
        return 0;
    }
    tm_tool_delta *d = push(out, n);
    if (!d || !(d->name = strdup(json_string_value(name)))) {
        free(text);
        return TM_ENOMEM;
    }
    d->is_call = 1;
    d->index = p->n_calls++;
    d->arguments = text;
    call_id(p, d->index, d->id, sizeof d->id);
    return 0;
}

/* ---- markers ---- */

static const char *marker(tm_tool_format f) {
    switch (f) {
    case TM_TOOLS_HERMES: return "<tool_call>";
    case TM_TOOLS_MISTRAL: return "[TOOL_CALLS]";
    case TM_TOOLS_LLAMA3_JSON: return "<|python_tag|>";
    default: return NULL;
    }
}

static size_t skip_ws(const char *s, size_t i, size_t n) {
    while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++;
    return i;
}

/* Longest tail of s[from, n) that is a proper prefix of m. */
static size_t partial_tail(const char *s, size_t from, size_t n, const char *m) {
    size_t k = strlen(m);
    for (size_t len = TM_MIN(k - 1, n - from); len > 0; len--)
        if (!memcmp(s + n - len, m, len)) return len;
    return 0;
}

/* ---- the call section ---- */

/* Parses one JSON value at p->buf + at. 1 and *end when complete, 0 when the input ended
 * too early, -1 when it is not JSON. */
static int json_at(tm_tool_parser *p, size_t at, json_t **v, size_t *end) {
    json_error_t je;
    *v = json_loadb(p->buf + at, p->n - at, JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (*v) {
        *end = at + (size_t)je.position;
        return 1;
    }
    return json_error_code(&je) == json_error_premature_end_of_input ? 0 : -1;
}

/* ---- a call streamed as it is written ---- */

/* End of the JSON string that starts at i (the index after its closing quote), or 0
 * when it is not complete yet. */
static size_t string_end(const char *s, size_t i, size_t n) {
    for (size_t j = i + 1; j < n; j++) {
        if (s[j] == '\\') j++;
        else if (s[j] == '"') return j + 1;
    }
    return 0;
}

/* Appends the json.dumps text of the JSON scalar at [i, j) to frag; -1 when it is not one. */
static int put_scalar(tm_tool_parser *p, size_t i, size_t j, char **frag, size_t *flen) {
    json_error_t je;
    json_t *v = json_loadb(p->buf + i, j - i, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    char *t = NULL;
    size_t len = 0;
    int rc = v ? tm_jinja_json_dumps(v, &t, &len) : -1;
    json_decref(v);
    if (rc) return rc == TM_ENOMEM ? rc : -1;
    char *q = realloc(*frag, *flen + len + 1);
    if (!q) {
        free(t);
        return TM_ENOMEM;
    }
    memcpy(q + *flen, t, len);
    *flen += len;
    q[*flen] = 0;
    *frag = q;
    free(t);
    return 0;
}

/* The call object at `at` so far: when it reads {"name": "<name>", "arguments" (or
 * "parameters"): and the call is not open yet, opens it (sends its head). */
static int open_call(tm_tool_parser *p, size_t at, tm_tool_delta **out, int *n) {
    const char *s = p->buf;
    size_t i = skip_ws(s, at + 1, p->n);
    static const char key[] = "\"name\"";
    if (s[at] != '{' || p->n - i < sizeof key - 1 || memcmp(s + i, key, sizeof key - 1)) return 0;
    i = skip_ws(s, i + sizeof key - 1, p->n);
    if (i >= p->n || s[i] != ':') return 0;
    size_t ns = skip_ws(s, i + 1, p->n), ne;
    if (ns >= p->n || s[ns] != '"' || !(ne = string_end(s, ns, p->n))) return 0;
    i = skip_ws(s, ne, p->n);
    if (i >= p->n || s[i] != ',') return 0;
    i = skip_ws(s, i + 1, p->n);
    size_t klen = p->n - i >= 11 && !memcmp(s + i, "\"arguments\"", 11)    ? 11
                  : p->n - i >= 12 && !memcmp(s + i, "\"parameters\"", 12) ? 12 : 0;
    if (!klen) return 0;
    i = skip_ws(s, i + klen, p->n);
    if (i >= p->n || s[i] != ':') return 0;
    json_error_t je;
    json_t *name = json_loadb(s + ns, ne - ns, JSON_DECODE_ANY, &je);
    if (!json_is_string(name)) {
        json_decref(name);
        return 0;
    }
    tm_tool_delta *d = push(out, n);
    if (!d || !(d->name = strdup(json_string_value(name))) || !(d->arguments = strdup(""))) {
        json_decref(name);
        return TM_ENOMEM;
    }
    json_decref(name);
    d->is_call = 1;
    d->index = p->n_calls++;
    call_id(p, d->index, d->id, sizeof d->id);
    p->cur_open = 1;
    p->cur_at = at;
    p->args_raw = i + 1;
    p->args_depth = 0;
    p->args_done = 0;
    p->sent_len = 0;
    return 0;
}

/* Sends what is decided of the open call's arguments: complete JSON tokens, each as
 * json.dumps writes it. A string or number waits until it ends. */
static int stream_args(tm_tool_parser *p, tm_tool_delta **out, int *n) {
    char *frag = NULL;
    size_t flen = 0;
    int rc = 0;
    const char *s = p->buf;
    while (!p->args_done && !rc) {
        size_t i = skip_ws(s, p->args_raw, p->n), j;
        if (i >= p->n) break;
        const char *put = NULL;
        char c = s[i];
        if (c == '{' || c == '[') {
            put = c == '{' ? "{" : "[";
            p->args_depth++;
            j = i + 1;
        } else if (c == '}' || c == ']' || c == ',' || c == ':') {
            if (p->args_depth == 0) { /* not inside the arguments: stop lexing */
                p->args_done = 1;
                break;
            }
            put = c == '}' ? "}" : c == ']' ? "]" : c == ',' ? ", " : ": ";
            if (c == '}' || c == ']') p->args_depth--;
            j = i + 1;
        } else if (c == '"') {
            if (!(j = string_end(s, i, p->n))) break;
        } else { /* a number or literal ends at a delimiter */
            for (j = i; j < p->n && s[j] && strchr("+-.0123456789eEtruefalsn", s[j]); j++) continue;
            if (j == i) {
                p->args_done = 1;
                break;
            }
            if (j >= p->n) break;
        }
        if (put) {
            size_t k = strlen(put);
            char *q = realloc(frag, flen + k + 1);
            if (!q) rc = TM_ENOMEM;
            else memcpy(q + flen, put, k + 1), flen += k, frag = q;
        } else if ((rc = put_scalar(p, i, j, &frag, &flen)) < 0 && rc != TM_ENOMEM) {
            rc = 0; /* not JSON: the whole call decides */
            p->args_done = 1;
            break;
        }
        p->args_raw = j;
        if (p->args_depth == 0) p->args_done = 1; /* the value ended */
    }
    if (!rc && flen) {
        if (p->sent_len + flen + 1 > p->sent_cap) {
            size_t cap = TM_MAX(p->sent_cap * 2, p->sent_len + flen + 1);
            char *q = realloc(p->sent, cap);
            if (!q) rc = TM_ENOMEM;
            else p->sent = q, p->sent_cap = cap;
        }
        tm_tool_delta *d = rc ? NULL : push(out, n);
        if (!rc && !d) rc = TM_ENOMEM;
        if (!rc) {
            memcpy(p->sent + p->sent_len, frag, flen);
            p->sent_len += flen;
            d->is_call = 1;
            d->index = p->n_calls - 1;
            call_id(p, d->index, d->id, sizeof d->id);
            d->arguments = frag;
            frag = NULL;
        }
    }
    free(frag);
    return rc;
}

/* While the call at `at` is incomplete: its head and the arguments decided so far. */
static int stream_call(tm_tool_parser *p, size_t at, tm_tool_delta **out, int *n) {
    if (!p->cur_open) {
        int rc = open_call(p, at, out, n);
        if (rc || !p->cur_open) return rc;
    }
    return p->cur_at == at ? stream_args(p, out, n) : 0;
}

static int take_calls(tm_tool_parser *p, int final, tm_tool_delta **out, int *n) {
    const char *m = marker(p->f);
    size_t mlen = strlen(m);
    while (!p->stopped) {
        size_t at = skip_ws(p->buf, p->done, p->n);
        if (p->f == TM_TOOLS_LLAMA3_JSON) {
            while (at < p->n && p->buf[at] == ';') at = skip_ws(p->buf, at + 1, p->n);
        }
        if (p->f == TM_TOOLS_HERMES) { /* the closing tag of the call before */
            static const char close[] = "</tool_call>";
            if (p->n - at < sizeof close - 1 && !memcmp(p->buf + at, close, p->n - at)) return 0;
            if (p->n - at >= sizeof close - 1 && !memcmp(p->buf + at, close, sizeof close - 1))
                at = skip_ws(p->buf, at + sizeof close - 1, p->n);
        }
        if (at >= p->n) return 0;
        if (p->n - at < mlen && !memcmp(p->buf + at, m, p->n - at)) return 0; /* a marker, maybe */
        int has_marker = p->n - at >= mlen && !memcmp(p->buf + at, m, mlen);
        if (has_marker) at = skip_ws(p->buf, at + mlen, p->n);
        else if (p->f != TM_TOOLS_LLAMA3_JSON) {
            p->stopped = 1; /* text after the calls: not ours to show */
            return 0;
        }
        if (at >= p->n) return 0;
        json_t *v = NULL;
        size_t end = 0;
        int r;
        if (p->f == TM_TOOLS_MISTRAL && p->buf[at] != '[' && p->buf[at] != '{') {
            /* name[ARGS]{...} */
            char *args = memmem(p->buf + at, p->n - at, "[ARGS]", 6);
            if (!args) return final ? (p->stopped = 1, 0) : 0;
            r = json_at(p, (size_t)(args - p->buf) + 6, &v, &end);
            if (r == 1) {
                json_t *call = json_pack("{s:s%, s:o}", "name", p->buf + at, (size_t)(args - p->buf) - at,
                                         "arguments", v);
                r = call && emit_call(p, call, out, n) == 0 ? 1 : -1;
                json_decref(call);
                v = NULL;
            }
        } else {
            r = json_at(p, at, &v, &end);
        }
        /* jansson cannot always tell a cut value from a wrong one: until the end, wait */
        if (r == 0 || (r < 0 && !final)) return final ? 0 : stream_call(p, at, out, n);
        if (r < 0) {
            p->stopped = 1;
            return 0;
        }
        int rc = 0;
        if (json_is_array(v)) {
            size_t i;
            json_t *c;
            json_array_foreach(v, i, c) if (!rc) rc = emit_call(p, c, out, n);
        } else if (v) {
            rc = emit_call(p, v, out, n);
        }
        json_decref(v);
        if (rc == TM_ENOMEM) return rc;
        if (rc) {
            p->stopped = 1;
            return 0;
        }
        p->done = end;
    }
    return 0;
}

int tm_tool_parser_feed(tm_tool_parser *p, const char *text, size_t n, int final,
                        tm_tool_delta **out, int *n_out) {
    if (p->n + n + 1 > p->cap) {
        size_t cap = p->cap ? p->cap : 256;
        while (cap < p->n + n + 1) cap *= 2;
        char *q = realloc(p->buf, cap);
        if (!q) return TM_ENOMEM;
        p->buf = q;
        p->cap = cap;
    }
    if (n) memcpy(p->buf + p->n, text, n);
    p->n += n;
    p->buf[p->n] = 0;
    const char *m = marker(p->f);
    if (!m) {
        if (emit_content(p, p->done, p->n, out, n_out)) return TM_ENOMEM;
        p->done = p->n;
        return 0;
    }
    if (!p->in_calls) {
        size_t start = skip_ws(p->buf, 0, p->n);
        const char *hit = memmem(p->buf + p->done, p->n - p->done, m, strlen(m));
        size_t at = hit ? (size_t)(hit - p->buf) : p->n;
        /* llama3_json: a call may also be the whole output, a JSON object */
        if (p->f == TM_TOOLS_LLAMA3_JSON && start < p->n && p->buf[start] == '{' && start < at) at = start;
        if (at < p->n) {
            if (emit_content(p, p->done, at, out, n_out)) return TM_ENOMEM;
            p->in_calls = 1;
            p->calls_at = p->done = at;
        } else {
            size_t hold = final ? 0 : partial_tail(p->buf, p->done, p->n, m);
            /* llama3_json: leading whitespace waits to see whether a '{' follows */
            if (!final && p->f == TM_TOOLS_LLAMA3_JSON && start == p->n) hold = p->n - p->done;
            if (emit_content(p, p->done, p->n - hold, out, n_out)) return TM_ENOMEM;
            p->done = p->n - hold;
            return 0;
        }
    }
    int rc = take_calls(p, final, out, n_out);
    if (rc) return rc;
    if (final && p->n_calls == 0) { /* it looked like a call but was not one: content */
        if (emit_content(p, p->calls_at, p->n, out, n_out)) return TM_ENOMEM;
        p->done = p->n;
        p->stopped = 1;
    }
    return 0;
}

/* api.c - routing, auth, validation and submission of OpenAI requests. See api.h.
 * Responses built from engine events live in api_output.c. */
#include "server/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/common.h"
#include "models/model.h"
#include "models/tokenizer.h"
#include "server/api_error.h"
#include "server/api_internal.h"

/* ---- helpers ---- */

void tm_api_access_log(const tm_access *e) {
    char ttft[32] = "-";
    if (e->ttft >= 0) snprintf(ttft, sizeof ttft, "%.3fs", e->ttft);
    TM_INFOF("access: %s %s %s %d prompt=%d cached=%d completion=%d ttft=%s total=%.3fs%s%s",
             e->id, e->method, e->path, e->status, e->prompt, e->cached, e->completion, ttft,
             e->total, e->finish ? " finish=" : "", e->finish ? e->finish : "");
}

/* The access line of a request answered while it is routed; a generation's job logs its
 * own when it ends. The request stays intact after its response is sent (http.h). */
static void log_answered(const tm_http_request *req, int status) {
    char id[32]; /* "req-N": a request answered without the engine */
    snprintf(id, sizeof id, "req-%llu", (unsigned long long)req->seq);
    tm_access e = {.id = id, .method = req->method, .path = req->path, .status = status,
                   .ttft = -1, .total = tm_time_s() - req->t_start};
    tm_api_access_log(&e);
}

/* Every response sent while routing goes through respond or reply_error. */
static void respond(tm_http_request *req, int status, const char *ctype, const char *extra,
                    const char *body, size_t len) {
    tm_http_respond(req->conn, status, ctype, extra, body, len);
    log_answered(req, status);
}

static void send_json(tm_http_request *req, int status, json_t *body) {
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!s) {
        respond(req, 500, "application/json", "", "{}", 2);
        return;
    }
    respond(req, status, "application/json", "", s, strlen(s));
    free(s);
}

void tm_api_send_error(tm_api *a, tm_http_conn *c, int status, const char *msg,
                       const char *param, const char *code) {
    char *body = tm_api_error_json(status, msg, param && *param ? param : NULL, code);
    const char *extra = status == 503 || status == 429 ? "Retry-After: 1\r\n"
                        : status == 401 ? "WWW-Authenticate: Bearer\r\n" : "";
    a->metrics.http_errors++;
    tm_http_respond(c, status, "application/json", extra, body ? body : "{}",
                    body ? strlen(body) : 2);
    free(body);
}

static void reply_error(tm_api *a, tm_http_request *req, int status, const char *msg,
                        const char *param, const char *code) {
    tm_api_send_error(a, req->conn, status, msg, param, code);
    log_answered(req, status);
}

/* An error the HTTP layer answers itself (malformed request, 408, 413, too many
 * connections): counted and logged here, as it never reaches on_request. */
static char *error_body_cb(void *arg, int status, const char *msg) {
    tm_api *a = arg;
    a->metrics.http_errors++;
    tm_access e = {.id = "-", .method = "-", .path = "-", .status = status, .ttft = -1};
    tm_api_access_log(&e);
    return tm_api_error_json(status, msg, NULL, NULL);
}

/* Constant-time comparison of the Authorization header with "Bearer <key>". */
static int auth_ok(const tm_api *a, const char *header) {
    if (!a->api_key) return 1;
    if (!header || strncasecmp(header, "Bearer ", 7) != 0) return 0; /* schemes ignore case */
    const char *got = header + 7;
    size_t ng = strlen(got), nk = strlen(a->api_key);
    unsigned diff = (unsigned)(ng ^ nk);
    for (size_t i = 0; i < nk; i++) diff |= (unsigned char)a->api_key[i] ^ (unsigned char)(i < ng ? got[i] : 0);
    return diff == 0;
}


/* ---- simple endpoints ---- */

static json_t *model_object(const tm_api *a) {
    return json_pack("{s:s, s:s, s:I, s:s, s:i}", "id", a->model_name, "object", "model",
                     "created", (json_int_t)a->started, "owned_by", "tokenmill",
                     "max_model_len", a->n_ctx);
}

static void handle_models(tm_api *a, tm_http_request *req) {
    const char *path = req->path;
    if (!strcmp(path, "/v1/models")) {
        json_t *data = json_array();
        json_array_append_new(data, model_object(a));
        send_json(req, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
        return;
    }
    const char *id = path + strlen("/v1/models/");
    if (strcmp(id, a->model_name) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "The model '%.300s' does not exist", id);
        reply_error(a, req, 404, msg, "model", "model_not_found");
        return;
    }
    send_json(req, 200, model_object(a));
}

static void handle_metrics(tm_api *a, tm_http_request *req) {
    tm_engine_stats st;
    tm_engine_get_stats(a->engine, &st);
    tm_grammar_cache_stats gs;
    tm_grammar_cache_get_stats(a->gcache, &gs);
    a->metrics.grammar_compiles = gs.misses;
    a->metrics.grammar_hits = gs.hits;
    a->metrics.grammar_compile_s = gs.compile_s;
    size_t len = 0;
    char *text = tm_metrics_render(&a->metrics, &st, a->model_name, &len);
    if (!text) {
        reply_error(a, req, 500, "out of memory", NULL, NULL);
        return;
    }
    respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", "", text, len);
    free(text);
}

static json_t *load_object(tm_api *a, tm_http_request *req) {
    json_error_t je;
    json_t *root = req->body_len
                       ? json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je)
                       : NULL;
    if (!json_is_object(root)) {
        char msg[256];
        snprintf(msg, sizeof msg, "the body must be a JSON object%s%s", root ? "" : ": ",
                 root ? "" : req->body_len ? je.text : "empty body");
        json_decref(root);
        reply_error(a, req, 400, msg, NULL, NULL);
        return NULL;
    }
    return root;
}

static void handle_tokenize(tm_api *a, tm_http_request *req) {
    json_t *root = load_object(a, req);
    if (!root) return;
    json_t *prompt = json_object_get(root, "prompt"), *ads = json_object_get(root, "add_special_tokens");
    if (json_is_null(ads)) ads = NULL; /* null means absent, as in generation requests */
    if (!json_is_string(prompt) || (ads && !json_is_boolean(ads))) {
        json_decref(root);
        reply_error(a, req, 400, "'prompt' must be a string (and 'add_special_tokens' a "
                               "boolean)", "prompt", NULL);
        return;
    }
    int32_t *ids = NULL;
    int n = 0;
    int rc = tm_tokenizer_encode(a->tok, json_string_value(prompt), json_string_length(prompt),
                                 ads ? json_is_true(ads) : 1, 1, &ids, &n);
    json_decref(root);
    if (rc) {
        reply_error(a, req, 500, "tokenization failed", NULL, NULL);
        return;
    }
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
    free(ids);
    send_json(req, 200, json_pack("{s:o, s:i, s:i}", "tokens", arr, "count", n,
                                  "max_model_len", a->n_ctx));
}

static void handle_detokenize(tm_api *a, tm_http_request *req) {
    json_t *root = load_object(a, req);
    if (!root) return;
    json_t *toks = json_object_get(root, "tokens");
    size_t n = json_is_array(toks) ? json_array_size(toks) : 0;
    int32_t *ids = malloc((n + 1) * sizeof *ids);
    int bad = !json_is_array(toks) || !ids;
    for (size_t i = 0; !bad && i < n; i++) {
        json_t *e = json_array_get(toks, i);
        bad = !json_is_integer(e) || json_integer_value(e) < 0 ||
              json_integer_value(e) >= tm_tokenizer_n_vocab(a->tok);
        if (!bad) ids[i] = (int32_t)json_integer_value(e);
    }
    json_decref(root);
    if (bad) {
        free(ids);
        reply_error(a, req, 400, "'tokens' must be a list of token ids within the vocabulary",
                    "tokens", NULL);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = tm_tokenizer_decode(a->tok, ids, (int)n, &text, &len);
    free(ids);
    if (rc) {
        reply_error(a, req, 500, "detokenization failed", NULL, NULL);
        return;
    }
    send_json(req, 200, json_pack("{s:o}", "prompt", tm_json_text(text, len)));
    free(text);
}

/* ---- generation ---- */

/* Prompt ids of a validated request: the token list, the encoded prompt text, or the
 * rendered chat. TM_ERANGE: the text cannot fit the context. */
static int build_prompt(tm_api *a, const tm_api_params *p, int32_t **ids, int *n, char *err,
                        size_t err_len) {
    if (p->prompt_ids) {
        int nv = tm_tokenizer_n_vocab(a->tok);
        for (int i = 0; i < p->n_prompt_ids; i++)
            if (p->prompt_ids[i] >= nv)
                return tm_fail(err, err_len, TM_EINVAL, "prompt token id %d is outside the "
                               "vocabulary (%d tokens)", p->prompt_ids[i], nv);
        *ids = malloc((size_t)p->n_prompt_ids * sizeof **ids);
        if (!*ids) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
        memcpy(*ids, p->prompt_ids, (size_t)p->n_prompt_ids * sizeof **ids);
        *n = p->n_prompt_ids;
        return 0;
    }
    char *text = p->prompt;
    size_t len = p->prompt_len;
    if (p->suffix) { /* fill in the middle: <prefix>prompt<suffix>suffix<middle> */
        if (!a->fim[0])
            return tm_fail(err, err_len, TM_EUNSUPPORTED, "this model has no fill-in-the-middle "
                           "tokens, so 'suffix' cannot be served");
        if (!p->prompt) return tm_fail(err, err_len, TM_EINVAL, "'suffix' needs a text prompt");
        size_t n0 = strlen(a->fim[0]), n1 = strlen(a->fim[1]), n2 = strlen(a->fim[2]);
        if (!(text = malloc(n0 + len + n1 + p->suffix_len + n2 + 1)))
            return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
        char *w = text;
        memcpy(w, a->fim[0], n0), w += n0;
        memcpy(w, p->prompt, len), w += len;
        memcpy(w, a->fim[1], n1), w += n1;
        memcpy(w, p->suffix, p->suffix_len), w += p->suffix_len;
        memcpy(w, a->fim[2], n2), w += n2;
        *w = 0;
        len = (size_t)(w - text);
    }
    if (p->kind == TM_API_CHAT) {
        int rc = tm_chat_template_render_conversation(&a->chat, p->messages, p->n_messages,
                                                      p->conversation, p->tools, p->template_kwargs,
                                                      &text, &len, NULL, err, err_len);
        if (rc) return rc;
    }
    /* No token stands for more than max_token_bytes of text, so a text longer than the
     * context at that rate is refused untokenized: megabytes would hold the loop thread,
     * and every stream on it, for seconds. */
    if (len > (size_t)a->n_ctx * a->max_token_bytes) {
        if (text != p->prompt) free(text);
        const char *what = p->kind == TM_API_CHAT ? "messages" : "prompt";
        return tm_fail(err, err_len, TM_ERANGE, "This model's maximum context length is %d tokens. "
                       "However, your %s is %zu bytes long, which is at least %zu tokens. Please "
                       "reduce the length of the %s.", a->n_ctx, what, len,
                       (len + a->max_token_bytes - 1) / a->max_token_bytes, what);
    }
    /* A Jinja template writes the BOS token itself when its model wants one; vLLM then
     * encodes without special tokens (add_special_tokens is false for chat). */
    const int add_special = !(p->kind == TM_API_CHAT && a->chat.jinja);
    int rc = tm_tokenizer_encode(a->tok, text, len, add_special, 1, ids, n);
    if (text != p->prompt) free(text);
    if (rc) return tm_fail(err, err_len, rc, "tokenization failed");
    if (*n == 0) return tm_fail(err, err_len, TM_EINVAL, "the prompt encodes to no tokens");
    return 0;
}

static tm_job *job_new(tm_api *a, const tm_api_params *p, tm_http_request *req) {
    tm_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->api = a;
    j->req = req;
    j->kind = p->kind;
    snprintf(j->id, sizeof j->id, "%s-%016llx%08llx", p->kind == TM_API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)a->started * 2654435761ull, (unsigned long long)++a->next_seq);
    j->created = (long long)time(NULL);
    j->stream = p->stream;
    j->include_usage = p->include_usage;
    j->logprobs = p->logprobs;
    j->top_logprobs = p->top_logprobs;
    j->t_start = req->t_start;
    return j;
}

/* Generation requests whose grammar compiles on the loop's thread pool (a schema can take
 * seconds over a large vocabulary, and the loop thread keeps serving every other connection
 * meanwhile). Requests that bring the same grammar while it compiles wait for that one
 * compile. When it is done the grammar goes into the cache and each request is handled
 * again from the start, now a cache hit. */
typedef struct tm_compile_waiter {
    tm_http_request *req;           /* NULL once the client has gone (on_gone) */
    tm_api_kind kind;               /* the route */
    char *param;                    /* the request field the grammar came from, for errors */
    struct tm_compile_waiter *next;
} tm_compile_waiter;

typedef struct tm_compile_wait {
    uv_work_t work;
    tm_api *a;
    char *text;                   /* the grammar, a copy */
    size_t len;
    tm_compile_waiter *waiters;   /* one or more requests */
    tm_grammar_vocab *v;          /* a reference, for the worker */
    tm_grammar_compiled *g;       /* out: one reference */
    double seconds;               /* out: compile time */
    int rc;                       /* out */
    char err[512];                /* out */
    struct tm_compile_wait *next; /* a->compiling */
} tm_compile_wait;

static void handle_generate(tm_api *a, tm_http_request *req, tm_api_kind kind, int may_defer);

static void compile_work(uv_work_t *w) { /* a thread-pool thread */
    tm_compile_wait *cw = w->data;
    const double t0 = tm_time_s();
    cw->rc = tm_grammar_cache_compile(cw->v, cw->text, cw->len, &cw->g, cw->err, sizeof cw->err);
    cw->seconds = tm_time_s() - t0;
}

static void compile_done(uv_work_t *w, int status) {
    tm_compile_wait *cw = w->data;
    tm_api *a = cw->a;
    for (tm_compile_wait **pp = &a->compiling; *pp; pp = &(*pp)->next)
        if (*pp == cw) {
            *pp = cw->next;
            break;
        }
    if (status == 0 && !cw->rc) tm_grammar_cache_put(a->gcache, cw->text, cw->len, cw->g, cw->seconds);
    while (cw->waiters) {
        tm_compile_waiter *wt = cw->waiters;
        cw->waiters = wt->next;
        a->n_compiling--;
        if (wt->req && status != 0)
            reply_error(a, wt->req, 503, "the server is shutting down", NULL, NULL);
        else if (wt->req && cw->rc)
            reply_error(a, wt->req, cw->rc == TM_ENOMEM ? 500 : 400, cw->err, wt->param, NULL);
        else if (wt->req)
            handle_generate(a, wt->req, wt->kind, 0); /* compiles inline if the cache let it go */
        free(wt->param);
        free(wt);
    }
    tm_grammar_vocab_destroy(cw->v);
    free(cw->text);
    free(cw);
}

/* Starts compiling p's grammar off the loop thread when it is not cached, or joins the
 * compile of the same grammar under way; 1 when it did (the request is handled again when
 * the grammar is compiled), 0 to go on here (cached, no loop, or out of memory). */
static int compile_elsewhere(tm_api *a, tm_http_request *req, tm_api_kind kind, const tm_api_params *p) {
    const size_t len = strlen(p->so.gbnf);
    if (!a->loop || tm_grammar_cache_has(a->gcache, p->so.gbnf, len)) return 0;
    tm_compile_waiter *wt = calloc(1, sizeof *wt);
    if (!wt || !(wt->param = strdup(p->so.param ? p->so.param : ""))) {
        free(wt);
        return 0;
    }
    wt->req = req, wt->kind = kind;
    tm_compile_wait *cw = a->compiling;
    while (cw && !(cw->len == len && !memcmp(cw->text, p->so.gbnf, len))) cw = cw->next;
    if (!cw) {
        if (!(cw = calloc(1, sizeof *cw)) || !(cw->text = malloc(len + 1))) {
            free(cw);
            free(wt->param);
            free(wt);
            return 0;
        }
        memcpy(cw->text, p->so.gbnf, len + 1);
        cw->len = len;
        cw->a = a;
        cw->v = tm_grammar_vocab_retain(tm_grammar_cache_vocab(a->gcache));
        cw->work.data = cw;
        if (uv_queue_work(a->loop, &cw->work, compile_work, compile_done) != 0) {
            tm_grammar_vocab_destroy(cw->v);
            free(cw->text);
            free(cw);
            free(wt->param);
            free(wt);
            return 0;
        }
        cw->next = a->compiling;
        a->compiling = cw;
    }
    wt->next = cw->waiters;
    cw->waiters = wt;
    a->n_compiling++;
    return 1;
}

/* The grammar of a structured-output request as a logit processor, from the cache or
 * (without a loop, or when the cache could not keep it) compiled here. */
static int structured_processor(tm_api *a, const tm_api_params *p, tm_logit_processor *out,
                                char *err, size_t err_len) {
    tm_grammar_compiled *g = NULL;
    int hit = 0;
    int rc = tm_grammar_cache_get(a->gcache, p->so.gbnf, strlen(p->so.gbnf), &g, &hit, err, err_len);
    if (rc) return rc;
    rc = tm_grammar_processor_create(g, out);
    tm_grammar_compiled_release(g); /* the processor holds its own reference */
    if (rc) return tm_fail(err, err_len, rc, "out of memory");
    return 0;
}

/* The grammar a chat request's tools impose, put in p->so (replacing response_format, as
 * vLLM clears it when a tool call is forced):
 *   a named tool_choice   the reply is that function's arguments (vLLM's shape);
 *   "required"            the reply is calls of listed functions in the parser's markup
 *                         (one when parallel_tool_calls is false);
 *   "auto" with a function marked strict   free text, then optionally such calls, the
 *                         strict functions held to their parameters (vLLM's structural tag).
 * Otherwise nothing. TM_EUNSUPPORTED / TM_EINVAL with err and *param, TM_ENOMEM. */
static int tool_constraint(const tm_api *a, tm_api_params *p, const char **param, char *err,
                           size_t err_len) {
    if (p->kind != TM_API_CHAT || !p->tool_specs || p->tool_choice == TM_TOOL_NONE) return 0;
    int strict_auto = p->tool_choice == TM_TOOL_AUTO && tm_structured_tools_strict(p->tool_specs);
    if (p->tool_choice == TM_TOOL_AUTO && !strict_auto) return 0;
    *param = "tools";
    if (strict_auto && p->so.kind != TM_SO_NONE)
        return tm_fail(err, err_len, TM_EINVAL, "'%s' and a function with \"strict\": true under tool_choice "
                       "\"auto\" cannot both constrain one reply", p->so.param);
    char *gbnf = NULL;
    int rc;
    if (p->tool_choice == TM_TOOL_NAMED) {
        rc = tm_structured_tool_args_gbnf(p->tool_specs, p->tool_choice_name, &gbnf, err, err_len);
    } else {
        tm_tool_markup m;
        if (tm_tool_format_markup(a->tool_format, &m)) return 0; /* refused by the caller */
        if (!p->parallel_tool_calls) m.sep = NULL; /* one call */
        if (strict_auto && !m.trigger)
            return tm_fail(err, err_len, TM_EUNSUPPORTED, "\"strict\": true under tool_choice \"auto\" is not "
                           "supported with the %s tool-call parser (its calls do not follow text); use "
                           "tool_choice \"required\" or a named function", tm_tool_format_name(a->tool_format));
        rc = tm_structured_tool_gbnf(p->tool_specs, NULL, &m, strict_auto ? TM_TOOL_GRAMMAR_OPTIONAL
                                     : TM_TOOL_GRAMMAR_FORCED, &gbnf, err, err_len);
    }
    if (rc) return rc;
    if (p->ignore_eos) {
        free(gbnf);
        *param = "ignore_eos";
        return tm_fail(err, err_len, TM_EINVAL, "'ignore_eos' cannot be combined with a constrained tool call");
    }
    tm_so_spec_free(&p->so);
    p->so.kind = TM_SO_TOOL_CALL;
    p->so.gbnf = gbnf;
    p->so.param = "tools";
    return 0;
}

/* ---- n > 1: a group of choices ---- */

void tm_group_free(tm_group *g) {
    if (!g) return;
    free(g->prompt);
    for (int i = 0; i < TM_MAX_STOP; i++) free(g->stop[i]);
    free(g->salt);
    free(g->bias_ids);
    free(g->bias_vals);
    json_decref(g->choices);
    if (g->grammar) tm_grammar_compiled_release(g->grammar);
    free(g->jobs);
    free(g);
}

/* The tool-call state of one choice (each parses its own output). */
static int job_tools(tm_api *a, tm_job *j, const tm_api_params *p, uint64_t seed) {
    if (p->kind != TM_API_CHAT) return 0;
    if (p->tool_choice == TM_TOOL_NAMED) return (j->tool_named = strdup(p->tool_choice_name)) ? 0 : TM_ENOMEM;
    if (p->tool_choice == TM_TOOL_NONE) return 0;
    return tm_tool_parser_create(a->tool_format, seed, &j->tools);
}

static void job_discard(tm_job *j) {
    if (!j) return;
    tm_tool_parser_destroy(j->tools);
    free(j->tool_named);
    free(j);
}

/* Keeps what the choices after the first are submitted with: r's data, copied. */
static tm_group *group_new(const tm_request *r, const tm_api_params *p) {
    tm_group *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->n = p->n;
    g->jobs = calloc((size_t)p->n, sizeof *g->jobs);
    g->choices = json_array();
    g->prompt = malloc((size_t)r->n_prompt * sizeof *g->prompt);
    int ok = g->jobs && g->choices && g->prompt;
    for (int i = 0; ok && i < p->n; i++) ok = json_array_append_new(g->choices, json_null()) == 0;
    g->req = *r;
    g->req.processors = NULL, g->req.n_processors = 0, g->req.user = NULL;
    if (ok) memcpy(g->prompt, r->prompt, (size_t)r->n_prompt * sizeof *g->prompt), g->req.prompt = g->prompt;
    for (int i = 0; ok && i < r->n_stop; i++) ok = (g->req.stop[i] = g->stop[i] = strdup(r->stop[i])) != NULL;
    if (ok && r->cache_salt) ok = (g->req.cache_salt = g->salt = strdup(r->cache_salt)) != NULL;
    if (ok && p->n_bias > 0) {
        g->bias_ids = malloc((size_t)p->n_bias * sizeof *g->bias_ids);
        g->bias_vals = malloc((size_t)p->n_bias * sizeof *g->bias_vals);
        ok = g->bias_ids && g->bias_vals;
        if (ok) {
            memcpy(g->bias_ids, p->bias_ids, (size_t)p->n_bias * sizeof *g->bias_ids);
            memcpy(g->bias_vals, p->bias_vals, (size_t)p->n_bias * sizeof *g->bias_vals);
            g->n_bias = p->n_bias;
        }
    }
    if (!ok) {
        tm_group_free(g);
        return NULL;
    }
    return g;
}

static void job_link(tm_api *a, tm_job *j) {
    j->prev = NULL;
    j->next = a->jobs;
    if (a->jobs) a->jobs->prev = j;
    a->jobs = j;
    a->n_jobs++;
}

void tm_group_submit_rest(tm_group *g) {
    while (g->n_submitted < g->n) {
        tm_job *j = g->jobs[g->n_submitted++];
        if (!j) continue;
        tm_api *a = j->api;
        tm_request r = g->req;
        /* each choice its own stream of random numbers: seed + index, as vLLM does */
        r.sampling.seed += (uint64_t)j->index;
        tm_logit_processor procs[2] = {{0}, {0}};
        int n_procs = 0;
        if (g->n_bias > 0 && tm_logit_bias_create(g->bias_ids, g->bias_vals, g->n_bias, &procs[n_procs++])) {
            tm_job_end_unsubmitted(j);
            continue;
        }
        /* structured output: each choice walks the grammar on its own */
        if (g->grammar && tm_grammar_processor_create(g->grammar, &procs[n_procs++])) {
            if (procs[0].destroy) procs[0].destroy(procs[0].ctx);
            tm_job_end_unsubmitted(j);
            continue;
        }
        r.processors = n_procs ? procs : NULL;
        r.n_processors = n_procs;
        r.user = j;
        char err[256];
        if (tm_engine_submit(a->engine, &r, &j->engine_id, err, sizeof err) != 0) {
            TM_WARNF("api: choice %d of %s was not submitted: %s", j->index, j->id, err);
            for (int k = 0; k < n_procs; k++)
                if (procs[k].destroy) procs[k].destroy(procs[k].ctx);
            tm_job_end_unsubmitted(j);
            continue;
        }
        job_link(a, j);
    }
}

/* may_defer: a grammar not yet cached compiles off the loop thread (compile_elsewhere). */
static void handle_generate(tm_api *a, tm_http_request *req, tm_api_kind kind, int may_defer) {
    char err[512];
    const char *param = "";
    tm_logit_processor grammar = {0};
    tm_api_params p;
    int32_t *ids = NULL;
    int n_ids = 0;
    int rc = tm_api_parse(kind, req->body, req->body_len, &p, &param, err, sizeof err);
    if (rc) {
        reply_error(a, req, rc == TM_ENOMEM ? 500 : 400, err, param, NULL);
        goto done;
    }
    if (p.model && strcmp(p.model, a->model_name) != 0) {
        snprintf(err, sizeof err, "The model '%.300s' does not exist", p.model);
        reply_error(a, req, 404, err, "model", "model_not_found");
        goto done;
    }
    if (a->draining) {
        reply_error(a, req, 503, "the server is shutting down", NULL, NULL);
        goto done;
    }
    if ((rc = build_prompt(a, &p, &ids, &n_ids, err, sizeof err))) {
        if (rc == TM_EUNSUPPORTED) /* suffix without fill-in-the-middle tokens */
            reply_error(a, req, 400, err, "suffix", NULL);
        else
            reply_error(a, req, tm_api_status_of(rc), err, kind == TM_API_CHAT ? "messages" : "prompt",
                        rc == TM_ERANGE ? "context_length_exceeded" : NULL);
        goto done;
    }
    int max_tokens = p.max_tokens > 0 ? p.max_tokens
                     : kind == TM_API_COMPLETION ? TM_MIN(16, a->n_ctx - n_ids) : a->n_ctx - n_ids;
    /* 64-bit: max_tokens may be up to INT32_MAX, and the sum must not overflow */
    long long n_total = (long long)n_ids + TM_MAX(max_tokens, 1);
    if (n_total > a->n_ctx) {
        snprintf(err, sizeof err, "This model's maximum context length is %d tokens. However, you "
                 "requested %lld tokens (%d in the %s, %d for the completion). Please reduce the "
                 "length of the %s or the completion.", a->n_ctx, n_total,
                 n_ids, kind == TM_API_CHAT ? "messages" : "prompt", TM_MAX(max_tokens, 1),
                 kind == TM_API_CHAT ? "messages" : "prompt");
        reply_error(a, req, 400, err, kind == TM_API_CHAT ? "messages" : "prompt",
                    "context_length_exceeded");
        goto done;
    }
    if (kind == TM_API_CHAT && (p.tool_choice == TM_TOOL_AUTO || p.tool_choice == TM_TOOL_REQUIRED) &&
        a->tool_format == TM_TOOLS_NONE) {
        reply_error(a, req, 400, "\"auto\" and \"required\" tool choice need a tool call parser: this "
                    "model's chat template shows none; start the server with --tool-call-parser "
                    "hermes|llama3_json|mistral", "tool_choice", NULL);
        goto done;
    }
    if ((rc = tool_constraint(a, &p, &param, err, sizeof err))) {
        reply_error(a, req, rc == TM_ENOMEM ? 500 : 400, err, param, NULL);
        goto done;
    }
    tm_logit_processor bias = {0};
    if (p.n_bias > 0) {
        int nv = tm_tokenizer_n_vocab(a->tok), bad = -1;
        for (int i = 0; i < p.n_bias && bad < 0; i++)
            if (p.bias_ids[i] >= nv) bad = p.bias_ids[i];
        if (bad >= 0) {
            snprintf(err, sizeof err, "token_id %d in logit_bias is out of the vocabulary (%d tokens)", bad, nv);
            reply_error(a, req, 400, err, "logit_bias", NULL);
            goto done;
        }
        if (tm_logit_bias_create(p.bias_ids, p.bias_vals, p.n_bias, &bias)) {
            reply_error(a, req, 500, "out of memory", NULL, NULL);
            goto done;
        }
    }
    tm_request r = {0};
    r.prompt = ids;
    r.n_prompt = n_ids;
    r.max_tokens = max_tokens;
    r.sampling = p.sampling;
    if (!p.has_seed) /* distinct streams for unseeded requests */
        r.sampling.seed = (uint64_t)a->next_seq * 0x9E3779B97F4A7C15ull ^ (uint64_t)time(NULL);
    for (int i = 0; i < p.n_stop; i++) r.stop[i] = p.stop[i];
    r.n_stop = p.n_stop;
    if (kind == TM_API_CHAT && !p.ignore_eos) {
        r.stop_ids = a->chat_stop_ids;
        r.n_stop_ids = a->n_chat_stop_ids;
    }
    r.ignore_eos = p.ignore_eos;
    r.logprobs = p.logprobs;
    r.top_logprobs = p.top_logprobs;
    r.cache_salt = p.cache_salt;
    if (p.so.kind != TM_SO_NONE && may_defer && compile_elsewhere(a, req, kind, &p)) {
        if (bias.destroy) bias.destroy(bias.ctx);
        goto done; /* handled again when the grammar is compiled */
    }
    if (p.so.kind != TM_SO_NONE && (rc = structured_processor(a, &p, &grammar, err, sizeof err))) {
        if (bias.destroy) bias.destroy(bias.ctx);
        reply_error(a, req, rc == TM_ENOMEM ? 500 : 400, err, p.so.param, NULL);
        goto done;
    }
    /* the request's processors, in order: logit_bias, then the grammar (which must see
     * the biased row to mask what it forbids) */
    tm_logit_processor procs[2];
    int n_procs = 0;
    if (bias.apply) procs[n_procs++] = bias;
    if (p.so.kind != TM_SO_NONE) procs[n_procs++] = grammar;
    r.processors = n_procs ? procs : NULL;
    r.n_processors = n_procs;
    tm_job *job = job_new(a, &p, req);
    if (!job) {
        if (bias.destroy) bias.destroy(bias.ctx);
        reply_error(a, req, 500, "out of memory", NULL, NULL);
        goto done;
    }
    job->n_prompt = n_ids;
    tm_group *g = NULL;
    rc = job_tools(a, job, &p, r.sampling.seed ^ a->next_seq);
    if (!rc && p.n > 1) { /* the other choices, submitted once the first has the prompt cached */
        if (!(g = group_new(&r, &p))) rc = TM_ENOMEM;
        int hit = 0;
        if (!rc && p.so.kind != TM_SO_NONE)
            rc = tm_grammar_cache_get(a->gcache, p.so.gbnf, strlen(p.so.gbnf), &g->grammar, &hit, err, sizeof err);
        for (int i = 1; !rc && i < p.n; i++) {
            tm_job *m = job_new(a, &p, req);
            if (!m) {
                rc = TM_ENOMEM;
                break;
            }
            memcpy(m->id, job->id, sizeof m->id); /* the choices of one response */
            m->index = i;
            m->group = g;
            m->n_prompt = n_ids;
            g->jobs[i] = m;
            rc = job_tools(a, m, &p, (r.sampling.seed ^ a->next_seq) + (uint64_t)i);
        }
        if (g) g->jobs[0] = job, job->group = g, g->n_submitted = 1;
    }
    r.user = job;
    if (!rc) rc = tm_engine_submit(a->engine, &r, &job->engine_id, err, sizeof err);
    else snprintf(err, sizeof err, "out of memory");
    if (rc) {
        for (int i = 1; g && i < g->n; i++) job_discard(g->jobs[i]);
        job_discard(job);
        tm_group_free(g);
        if (bias.destroy) bias.destroy(bias.ctx); /* a failed submit leaves it to us */
        reply_error(a, req, tm_api_status_of(rc), err, NULL, NULL);
        goto done;
    }
    grammar.destroy = NULL; /* the engine owns the processor now */
    job_link(a, job); /* from here the job answers and logs this request */
    req->user = job;
    if (job->stream) tm_job_stream_start(job);
done:
    if (grammar.destroy) grammar.destroy(grammar.ctx);
    free(ids);
    tm_api_params_free(&p);
}

/* ---- routing ---- */

static void on_request(void *arg, tm_http_request *req) {
    tm_api *a = arg;
    const char *path = req->path, *m = req->method;
    /* HEAD is GET without the body (the HTTP layer leaves the body out) */
    int is_get = !strcmp(m, "GET") || !strcmp(m, "HEAD"), is_post = !strcmp(m, "POST");
    enum { R_NONE, R_GET, R_POST } want = R_NONE;
    int auth = 1;
    if (!strcmp(path, "/health") || !strcmp(path, "/metrics")) want = R_GET, auth = 0;
    else if (!strcmp(path, "/v1/models") || !strncmp(path, "/v1/models/", 11)) want = R_GET;
    else if (!strcmp(path, "/v1/completions") || !strcmp(path, "/v1/chat/completions") ||
             !strcmp(path, "/tokenize") || !strcmp(path, "/detokenize"))
        want = R_POST;
    if (want == R_NONE) {
        char msg[300];
        snprintf(msg, sizeof msg, "unknown route %.200s", path);
        reply_error(a, req, 404, msg, NULL, "not_found");
    } else if ((want == R_GET && !is_get) || (want == R_POST && !is_post)) {
        char msg[300];
        snprintf(msg, sizeof msg, "method %.16s is not allowed for %.200s (use %s)", m, path,
                 want == R_GET ? "GET" : "POST");
        reply_error(a, req, 405, msg, NULL, NULL);
    } else if (auth && !auth_ok(a, req->authorization)) {
        reply_error(a, req, 401, req->authorization ? "Incorrect API key provided"
                    : "Missing API key: send 'Authorization: Bearer <key>'", NULL,
                    "invalid_api_key");
    } else if (!strcmp(path, "/health")) {
        respond(req, 200, "application/json", "", "{\"status\":\"ok\"}", 15);
    } else if (!strcmp(path, "/metrics")) {
        handle_metrics(a, req);
    } else if (!strncmp(path, "/v1/models", 10)) {
        handle_models(a, req);
    } else if (!strcmp(path, "/tokenize")) {
        handle_tokenize(a, req);
    } else if (!strcmp(path, "/detokenize")) {
        handle_detokenize(a, req);
    } else {
        handle_generate(a, req, !strcmp(path, "/v1/completions") ? TM_API_COMPLETION : TM_API_CHAT, 1);
    }
}

static void on_gone(void *arg, tm_http_request *req) {
    tm_api *a = arg;
    for (tm_compile_wait *cw = a->compiling; cw; cw = cw->next)
        for (tm_compile_waiter *wt = cw->waiters; wt; wt = wt->next)
            if (wt->req == req) { /* the grammar still goes into the cache */
                wt->req = NULL;
                return;
            }
    tm_job *job = req->user;
    if (!job) return;
    tm_group *g = job->group;
    for (int i = 0; i < (g ? g->n : 1); i++) {
        tm_job *m = g ? g->jobs[i] : job;
        if (!m) continue;
        m->req = NULL; /* the rest of its events are dropped; the last one frees it */
        if (!g || i < g->n_submitted) tm_engine_abort(a->engine, m->engine_id);
    }
    req->user = NULL;
}

void tm_api_http_handlers(tm_api *a, tm_http_handlers *h) {
    h->on_request = on_request;
    h->on_gone = on_gone;
    h->error_body = error_body_cb;
    h->arg = a;
}

/* ---- lifecycle ---- */

int tm_api_create(tm_engine *engine, const tm_api_config *cfg, tm_api **out, char *err,
                  size_t err_len) {
    tm_api *a = calloc(1, sizeof *a);
    if (!a) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    a->engine = engine;
    a->model = tm_engine_model(engine);
    a->tok = tm_model_tokenizer(a->model);
    a->n_ctx = tm_engine_n_ctx(engine);
    /* A token stands for at most its piece of input text, and an unknown character
     * (<unk>) for up to 4 bytes of it whatever its piece. */
    a->max_token_bytes = TM_MAX(tm_engine_max_piece_bytes(engine), (size_t)4);
    a->model_name = strdup(cfg->served_model_name);
    a->api_key = cfg->api_key && *cfg->api_key ? strdup(cfg->api_key) : NULL;
    a->chat = cfg->chat;
    a->tool_format = cfg->tool_format;
    a->loop = cfg->loop;
    /* fill-in-the-middle tokens, as StarCoder, Qwen2.5-Coder and Code Llama spell them */
    static const char *const fim[][3] = {{"<fim_prefix>", "<fim_suffix>", "<fim_middle>"},
                                         {"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"},
                                         {"<PRE>", "<SUF>", "<MID>"}};
    for (size_t i = 0; i < TM_ARRAY_LEN(fim) && !a->fim[0]; i++)
        if (tm_tokenizer_find(a->tok, fim[i][0]) >= 0 && tm_tokenizer_find(a->tok, fim[i][1]) >= 0 &&
            tm_tokenizer_find(a->tok, fim[i][2]) >= 0)
            memcpy(a->fim, fim[i], sizeof a->fim);
    a->started = (long long)time(NULL);
    tm_metrics_init(&a->metrics);
    tm_metrics_set_max_model_len(&a->metrics, a->n_ctx);
    for (const char *const *t = tm_chat_template_end_tokens(a->chat.format); *t; t++) {
        int32_t id = tm_tokenizer_find(a->tok, *t);
        if (id >= 0 && a->n_chat_stop_ids < (int)TM_ARRAY_LEN(a->chat_stop_ids))
            a->chat_stop_ids[a->n_chat_stop_ids++] = id;
        else if (id < 0)
            TM_WARNF("chat template end token %s is not in the vocabulary", *t);
    }
    /* Structured output: the vocabulary sorted once, and compiled grammars kept. */
    int rc = tm_grammar_vocab_create(a->tok, &a->gvocab, err, err_len);
    if (!rc && (rc = tm_grammar_cache_create(a->gvocab, TM_API_GRAMMAR_CACHE_BYTES, &a->gcache)))
        tm_fail(err, err_len, rc, "out of memory");
    if (rc) {
        tm_api_destroy(a);
        return rc;
    }
    *out = a;
    return 0;
}

void tm_api_destroy(tm_api *a) {
    if (!a) return;
    while (a->jobs) tm_job_free(a->jobs);
    tm_grammar_cache_destroy(a->gcache);
    tm_grammar_vocab_destroy(a->gvocab);
    free(a->model_name);
    free(a->api_key);
    free(a);
}

void tm_api_drain(tm_api *a) {
    tm_event evs[64];
    int n;
    while ((n = tm_engine_poll(a->engine, evs, (int)TM_ARRAY_LEN(evs))) > 0) {
        for (int i = 0; i < n; i++) {
            tm_job_on_event(evs[i].user, &evs[i]);
            tm_event_free(&evs[i]);
        }
    }
}

int tm_api_n_inflight(const tm_api *a) { return a->n_jobs + a->n_compiling; }
void tm_api_set_draining(tm_api *a) { a->draining = 1; }

void tm_api_abort_all(tm_api *a) {
    for (tm_job *j = a->jobs; j; j = j->next) tm_engine_abort(a->engine, j->engine_id);
}

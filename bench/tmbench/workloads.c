/* workloads.c - building the requests of each dataset (see workloads.h). */
#include "bench/tmbench/workloads.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bench/tmbench/rng.h"
#include "common/common.h"

/* Text whose tokens make the prompts: plain English with numbers and punctuation, so the
 * pool holds the kind of ids real prompts are made of. */
static const char SEED_TEXT[] =
    "The river town woke early. Bakers lit their ovens before five, and by six the smell of "
    "rye and caraway drifted over the bridge where fishermen checked their nets. In 1894 a "
    "flood carried away the old mill; the new one, built of brick and iron, still stands, "
    "although its wheel has not turned since the power station opened upstream. Visitors "
    "ask about the clock on the church tower, which runs seven minutes fast on purpose: the "
    "ferry captain once complained that passengers always arrived late. Children learn to "
    "swim in the shallow bay south of the harbour, where the water is warm in August and "
    "clear enough to count pebbles. Every autumn the market fills with apples, pumpkins, "
    "honey, wool, copper pans and second-hand books; prices are written in chalk and "
    "nobody bargains. A small museum keeps maps, letters, photographs and a ledger listing "
    "every ship that docked between 1820 and 1961, with its cargo, tonnage and crew. "
    "Researchers from three universities have studied the sediment, the birds, the dialect "
    "and the weather records, which show winters growing milder by about 0.4 degrees per "
    "decade. Questions remain: why did the salt trade stop so suddenly, who painted the "
    "blue doors on Quay Street, and what happened to the second bell?";

static int fail_call(char *err, size_t err_len, const char *what, int status, const char *body) {
    char msg[300];
    tm_bench_error_text(body, body ? strlen(body) : 0, msg, sizeof msg);
    return tm_fail(err, err_len, TM_EUNSUPPORTED, "%s answered HTTP %d (%s); the random, prefix and "
                   "chat workloads need the server's /tokenize and /detokenize (use --dataset-name "
                   "file otherwise)", what, status, msg);
}

/* The distinct ids of SEED_TEXT in the served tokenizer. */
static int fetch_pool(const tm_bench_target *t, double timeout, int32_t **ids, int *n, char *err,
                      size_t err_len) {
    /* "prompt"/"add_special_tokens" for vLLM and tokenmill, "content"/"add_special" for
     * llama.cpp's server; each ignores the other's fields */
    json_t *req = json_pack("{s:s, s:s, s:b, s:b}", "prompt", SEED_TEXT, "content", SEED_TEXT,
                            "add_special_tokens", 0, "add_special", 0);
    char *body = json_dumps(req, JSON_COMPACT), *resp = NULL;
    json_decref(req);
    if (!body) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    int status = 0;
    int rc = tm_bench_http_call(t, "POST", "/tokenize", body, strlen(body), timeout, &status, &resp, NULL,
                                err, err_len);
    free(body);
    if (rc) return rc;
    if (status != 200) {
        rc = fail_call(err, err_len, "POST /tokenize", status, resp);
        free(resp);
        return rc;
    }
    json_t *j = json_loads(resp, 0, NULL), *toks = json_object_get(j, "tokens");
    free(resp);
    size_t m = json_array_size(toks);
    *ids = malloc(sizeof(int32_t) * (m + 1));
    *n = 0;
    if (!*ids) {
        json_decref(j);
        return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < m; i++) {
        json_t *e = json_array_get(toks, i);
        if (json_is_object(e)) e = json_object_get(e, "id"); /* {"id", "piece"} forms */
        if (!json_is_integer(e)) continue;
        int32_t id = (int32_t)json_integer_value(e);
        int dup = 0;
        for (int k = 0; k < *n && !dup; k++) dup = (*ids)[k] == id;
        if (!dup) (*ids)[(*n)++] = id;
    }
    json_decref(j);
    if (*n < 16) {
        free(*ids);
        *ids = NULL;
        return tm_fail(err, err_len, TM_EFORMAT, "POST /tokenize gave %d distinct token ids for a "
                       "paragraph of text; expected a list under \"tokens\"", *n);
    }
    return 0;
}

/* The text of ids[0..n) through /detokenize (caller frees). */
static int ids_to_text(const tm_bench_target *t, double timeout, const int32_t *ids, int n, char **out,
                       char *err, size_t err_len) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
    json_t *req = json_pack("{s:o}", "tokens", arr);
    char *body = json_dumps(req, JSON_COMPACT), *resp = NULL;
    json_decref(req);
    if (!body) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    int status = 0;
    int rc = tm_bench_http_call(t, "POST", "/detokenize", body, strlen(body), timeout, &status, &resp,
                                NULL, err, err_len);
    free(body);
    if (rc) return rc;
    if (status != 200) {
        rc = fail_call(err, err_len, "POST /detokenize", status, resp);
        free(resp);
        return rc;
    }
    json_t *j = json_loads(resp, 0, NULL), *s = json_object_get(j, "prompt");
    if (!json_is_string(s)) s = json_object_get(j, "content");
    free(resp);
    rc = json_is_string(s) ? 0 : TM_EFORMAT;
    *out = rc ? NULL : strdup(json_string_value(s));
    json_decref(j);
    if (rc) return tm_fail(err, err_len, rc, "POST /detokenize: no \"prompt\" or \"content\" string");
    return *out ? 0 : tm_fail(err, err_len, TM_ENOMEM, "out of memory");
}

static void draw_ids(tm_rng *rng, const int32_t *pool, int n_pool, int32_t *out, int n) {
    for (int i = 0; i < n; i++) out[i] = pool[tm_bench_rng_range(rng, 0, n_pool - 1)];
}

/* The fields every body carries: model, stream with usage, extras. */
static json_t *base_body(const tm_bench_workload_opts *o, int ignore_eos, char *err, size_t err_len) {
    json_t *b = json_pack("{s:b, s:{s:b}}", "stream", 1, "stream_options", "include_usage", 1);
    if (o->model) json_object_set_new(b, "model", json_string(o->model));
    if (ignore_eos) json_object_set_new(b, "ignore_eos", json_true());
    if (o->extra_json && *o->extra_json) {
        json_error_t je;
        json_t *x = json_loads(o->extra_json, 0, &je);
        if (!json_is_object(x)) {
            json_decref(x);
            json_decref(b);
            tm_fail(err, err_len, TM_EINVAL, "--extra-body must be a JSON object (%s)", je.text);
            return NULL;
        }
        json_object_update(b, x);
        json_decref(x);
    }
    return b;
}

/* Serializes body into spec (takes the reference). */
static int set_body(tm_bench_spec *s, json_t *body, int prompt_tokens) {
    char *txt = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!txt) return TM_ENOMEM;
    s->body = txt;
    s->body_len = strlen(txt);
    s->prompt_tokens = prompt_tokens;
    s->conv = s->turn = -1;
    return 0;
}

static json_t *ids_json(const int32_t *ids, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

/* One request from token ids (a completion) or their text (a chat message). */
static int add_ids_request(const tm_bench_workload_opts *o, const tm_bench_target *t, json_t *base,
                           tm_bench_spec *s, const int32_t *ids, int n, int max_tokens, char *err,
                           size_t err_len) {
    json_t *b = json_deep_copy(base);
    if (o->chat_api) {
        char *text = NULL;
        int rc = ids_to_text(t, o->call_timeout_s, ids, n, &text, err, err_len);
        if (rc) {
            json_decref(b);
            return rc;
        }
        json_object_set_new(b, "messages", json_pack("[{s:s, s:s}]", "role", "user", "content", text));
        free(text);
        json_object_set_new(b, "max_completion_tokens", json_integer(max_tokens));
    } else {
        json_object_set_new(b, "prompt", ids_json(ids, n));
    }
    json_object_set_new(b, "max_tokens", json_integer(max_tokens));
    return set_body(s, b, n) ? tm_fail(err, err_len, TM_ENOMEM, "out of memory") : 0;
}

static void shuffle_specs(tm_bench_spec *s, int n, tm_rng *rng) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)tm_bench_rng_range(rng, 0, i);
        tm_bench_spec tmp = s[i];
        s[i] = s[j];
        s[j] = tmp;
    }
}

static int len_in_range(tm_rng *rng, int len, double r) {
    int lo = (int)floor(len * (1 - r)), hi = (int)ceil(len * (1 + r));
    if (lo < 1) lo = 1;
    if (hi < lo) hi = lo;
    return (int)tm_bench_rng_range(rng, lo, hi);
}

static int build_random(const tm_bench_workload_opts *o, const tm_bench_target *t, json_t *base,
                        const int32_t *pool, int n_pool, tm_rng *rng, tm_bench_workload *w,
                        char *err, size_t err_len) {
    int max_in = (int)ceil(o->input_len * (1 + o->range_ratio)) + o->random_prefix_len + 1;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)max_in);
    if (!ids) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    draw_ids(rng, pool, n_pool, ids, o->random_prefix_len);
    int rc = 0;
    for (int i = 0; i < o->num_prompts && !rc; i++) {
        int in = len_in_range(rng, o->input_len, o->range_ratio);
        int out = len_in_range(rng, o->output_len, o->range_ratio);
        draw_ids(rng, pool, n_pool, ids + o->random_prefix_len, in);
        rc = add_ids_request(o, t, base, &w->specs[i], ids, o->random_prefix_len + in, out, err, err_len);
        if (!rc) w->n_initial = i + 1;
    }
    free(ids);
    return rc;
}

static int build_prefix(const tm_bench_workload_opts *o, const tm_bench_target *t, json_t *base,
                        const int32_t *pool, int n_pool, tm_rng *rng, tm_bench_workload *w,
                        char *err, size_t err_len) {
    int per = o->num_prompts / o->num_prefixes;
    if (per == 0)
        return tm_fail(err, err_len, TM_EINVAL, "--num-prompts (%d) must be at least "
                       "--prefix-repetition-num-prefixes (%d)", o->num_prompts, o->num_prefixes);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(o->prefix_len + o->suffix_len + 1));
    if (!ids) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    int rc = 0, k = 0;
    for (int g = 0; g < o->num_prefixes && !rc; g++) {
        draw_ids(rng, pool, n_pool, ids, o->prefix_len);
        for (int i = 0; i < per && !rc; i++) {
            draw_ids(rng, pool, n_pool, ids + o->prefix_len, o->suffix_len);
            rc = add_ids_request(o, t, base, &w->specs[k], ids, o->prefix_len + o->suffix_len,
                                 o->prefix_output_len, err, err_len);
            if (!rc) w->n_initial = ++k;
        }
    }
    free(ids);
    if (!rc && o->shuffle) shuffle_specs(w->specs, w->n_initial, rng);
    return rc;
}

/* The chat body of conversation c up to (and with) the user message of turn `turn`. */
static int chat_body(tm_bench_workload *w, int c, int turn, tm_bench_spec *s) {
    json_t *b = json_deep_copy((json_t *)w->base), *msgs = json_array();
    for (int k = 0; k <= turn; k++) {
        json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", w->user_text[c * w->turns + k]));
        if (k < turn) {
            const char *a = w->answer[c * w->turns + k];
            json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "assistant", "content", a ? a : ""));
        }
    }
    json_object_set_new(b, "messages", msgs);
    if (set_body(s, b, 0)) return TM_ENOMEM;
    s->conv = c;
    s->turn = turn;
    return 0;
}

static int build_chat(const tm_bench_workload_opts *o, const tm_bench_target *t, json_t *base,
                      const int32_t *pool, int n_pool, tm_rng *rng, tm_bench_workload *w,
                      char *err, size_t err_len) {
    w->turns = o->chat_turns;
    w->n_conv = (o->num_prompts + w->turns - 1) / w->turns;
    size_t cells = (size_t)w->n_conv * (size_t)w->turns;
    w->conv_turns = calloc((size_t)w->n_conv, sizeof(int));
    w->user_text = calloc(cells, sizeof(char *));
    w->answer = calloc(cells, sizeof(char *));
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(o->input_len + 1));
    int rc = 0;
    if (!w->conv_turns || !w->user_text || !w->answer || !ids) rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    json_object_set_new(base, "max_completion_tokens", json_integer(o->output_len));
    json_object_set_new(base, "max_tokens", json_integer(o->output_len));
    w->base = json_incref(base);
    for (int c = 0; c < w->n_conv && !rc; c++) {
        int left = o->num_prompts - c * w->turns;
        w->conv_turns[c] = left < w->turns ? left : w->turns;
        for (int k = 0; k < w->conv_turns[c] && !rc; k++) {
            draw_ids(rng, pool, n_pool, ids, o->input_len);
            rc = ids_to_text(t, o->call_timeout_s, ids, o->input_len, &w->user_text[c * w->turns + k], err, err_len);
        }
        if (!rc && chat_body(w, c, 0, &w->specs[c])) rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory");
        if (!rc) w->n_initial = c + 1;
    }
    free(ids);
    return rc;
}

int tm_bench_workload_followup(void *user, int idx, const tm_bench_spec *spec, const tm_bench_record *rec,
                               tm_bench_spec *next) {
    tm_bench_workload *w = user;
    if (spec->conv < 0 || spec->conv >= w->n_conv) return 0;
    const int c = spec->conv, k = spec->turn;
    char **a = &w->answer[c * w->turns + k];
    free(*a);
    *a = rec->text ? strdup(rec->text) : NULL; /* a failed turn leaves an empty answer */
    if (k + 1 >= w->conv_turns[c]) return 0;
    return chat_body(w, c, k + 1, next) ? -1 : 1;
}

static int build_file(const tm_bench_workload_opts *o, const tm_bench_target *t, json_t *base,
                      tm_rng *rng, tm_bench_workload *w, char *err, size_t err_len) {
    FILE *f = fopen(o->path, "r");
    if (!f) return tm_fail(err, err_len, TM_EIO, "cannot open the dataset %s: %s", o->path, strerror(errno));
    size_t cap = 0;
    char *line = NULL;
    ssize_t len;
    int lineno = 0, rc = 0, n_lines = 0;
    while (!rc && w->n_initial < w->n_total && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len) continue;
        n_lines++;
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)len, 0, &je);
        json_t *p = json_object_get(j, "prompt");
        int out = o->custom_output_len;
        const char *keys[] = {"output_tokens", "output_len", "max_tokens"};
        for (int i = 0; i < 3; i++) {
            json_t *v = json_object_get(j, keys[i]);
            if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) < (1 << 30)) {
                out = (int)json_integer_value(v);
                break;
            }
        }
        int is_ids = json_is_array(p) && json_array_size(p) > 0;
        for (size_t i = 0; is_ids && i < json_array_size(p); i++) is_ids = json_is_integer(json_array_get(p, i));
        if (!j || !(json_is_string(p) || is_ids)) {
            rc = tm_fail(err, err_len, TM_EFORMAT, "%s:%d: each line must be a JSON object with a "
                         "\"prompt\" string or token-id list%s%s", o->path, lineno, j ? "" : ": ",
                         j ? "" : je.text);
            json_decref(j);
            break;
        }
        json_t *b = json_deep_copy(base);
        tm_bench_spec *s = &w->specs[w->n_initial];
        int n_ids = is_ids ? (int)json_array_size(p) : 0;
        if (o->chat_api) {
            char *text = NULL;
            if (is_ids) {
                int32_t *ids = malloc(sizeof(int32_t) * (size_t)n_ids);
                if (!ids) rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory");
                for (int i = 0; !rc && i < n_ids; i++) ids[i] = (int32_t)json_integer_value(json_array_get(p, i));
                if (!rc) rc = ids_to_text(t, o->call_timeout_s, ids, n_ids, &text, err, err_len);
                free(ids);
            }
            if (!rc) json_object_set_new(b, "messages", json_pack("[{s:s, s:s}]", "role", "user", "content",
                                                                 text ? text : json_string_value(p)));
            free(text);
            json_object_set_new(b, "max_completion_tokens", json_integer(out));
        } else {
            json_object_set(b, "prompt", p);
        }
        json_object_set_new(b, "max_tokens", json_integer(out));
        json_decref(j);
        if (rc) {
            json_decref(b);
            break;
        }
        if (set_body(s, b, n_ids)) rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory");
        else w->n_initial++;
    }
    free(line);
    fclose(f);
    if (!rc && n_lines == 0) rc = tm_fail(err, err_len, TM_EFORMAT, "%s: no prompts in the file", o->path);
    if (rc) return rc;
    if (o->shuffle) shuffle_specs(w->specs, w->n_initial, rng);
    /* fewer lines than requests: send them again, in order, as vLLM oversamples */
    for (int i = w->n_initial, k = 0; i < w->n_total; i++, k++) {
        tm_bench_spec *s = &w->specs[i];
        *s = w->specs[k];
        if (!(s->body = strdup(s->body))) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
        w->n_initial = i + 1;
    }
    return 0;
}

int tm_bench_workload_build(const tm_bench_workload_opts *o, const tm_bench_target *t,
                            tm_bench_workload *w, char *err, size_t err_len) {
    memset(w, 0, sizeof *w);
    if (o->num_prompts < 1) return tm_fail(err, err_len, TM_EINVAL, "--num-prompts must be at least 1");
    w->n_total = o->num_prompts;
    w->chat_api = o->chat_api;
    w->specs = calloc((size_t)w->n_total, sizeof *w->specs);
    if (!w->specs) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    tm_rng rng;
    tm_rng_seed(&rng, o->seed);
    json_t *base = base_body(o, o->dataset != TM_BENCH_FILE || o->ignore_eos, err, err_len);
    if (!base) return TM_EINVAL;
    int32_t *pool = NULL;
    int n_pool = 0, rc = 0;
    if (o->dataset != TM_BENCH_FILE) rc = fetch_pool(t, o->call_timeout_s, &pool, &n_pool, err, err_len);
    if (!rc) {
        switch (o->dataset) {
        case TM_BENCH_RANDOM: rc = build_random(o, t, base, pool, n_pool, &rng, w, err, err_len); break;
        case TM_BENCH_PREFIX: rc = build_prefix(o, t, base, pool, n_pool, &rng, w, err, err_len); break;
        case TM_BENCH_CHAT: rc = build_chat(o, t, base, pool, n_pool, &rng, w, err, err_len); break;
        case TM_BENCH_FILE: rc = build_file(o, t, base, &rng, w, err, err_len); break;
        }
    }
    free(pool);
    json_decref(base);
    if (rc) tm_bench_workload_free(w, w->n_initial);
    return rc;
}

void tm_bench_workload_free(tm_bench_workload *w, int n_specs) {
    if (!w) return;
    for (int i = 0; w->specs && i < n_specs; i++) free(w->specs[i].body);
    free(w->specs);
    size_t cells = (size_t)w->n_conv * (size_t)w->turns;
    for (size_t i = 0; i < cells; i++) {
        if (w->user_text) free(w->user_text[i]);
        if (w->answer) free(w->answer[i]);
    }
    free(w->user_text);
    free(w->answer);
    free(w->conv_turns);
    json_decref((json_t *)w->base);
    memset(w, 0, sizeof *w);
}

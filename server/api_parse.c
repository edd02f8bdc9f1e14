/* api_parse.c - request validation for /v1/completions and /v1/chat/completions.
 *
 * Ranges follow OpenAI's documented limits where it has them (temperature [0, 2],
 * top_p [0, 1], penalties [-2, 2], up to 4 stop strings, top_logprobs <= 20) and vLLM's
 * for the extensions (top_k, min_p, repetition_penalty, ignore_eos, cache_salt). */
#include "server/api_parse.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/common.h"
#include "server/api_parse_internal.h"

static int get_bool(pctx *x, const char *key, int *out) {
    json_t *v = get(x, key);
    if (!v) return 0;
    if (!json_is_boolean(v)) return FAIL(x, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

static int get_int(pctx *x, const char *key, long long lo, long long hi, int *out) {
    json_t *v = get(x, key);
    if (!v) return 0;
    if (!json_is_integer(v)) return FAIL(x, key, "'%s' must be an integer", key);
    long long i = json_integer_value(v);
    if (i < lo || i > hi)
        return FAIL(x, key, "'%s' must be between %lld and %lld, got %lld", key, lo, hi, i);
    *out = (int)i;
    return 0;
}

static int get_float(pctx *x, const char *key, double lo, double hi, float *out) {
    json_t *v = get(x, key);
    if (!v) return 0;
    if (!json_is_number(v)) return FAIL(x, key, "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi))
        return FAIL(x, key, "'%s' must be between %g and %g, got %g", key, lo, hi, d);
    /* a positive value below float's range stays positive: top_p and repetition_penalty
     * treat 0 as "off", and 1e-300 is a valid (greedy) top_p */
    *out = d > 0 && (float)d == 0.0f ? FLT_TRUE_MIN : (float)d;
    return 0;
}

static int get_str(pctx *x, const char *key, char **out) {
    json_t *v = get(x, key);
    if (!v) return 0;
    if (!json_is_string(v)) return FAIL(x, key, "'%s' must be a string", key);
    *out = strdup(json_string_value(v));
    return *out ? 0 : TM_ENOMEM;
}

static int parse_stop(pctx *x, tm_api_params *p) {
    json_t *v = get(x, "stop");
    if (!v) return 0;
    if (json_is_string(v)) {
        if (json_string_length(v) == 0) return 0;
        p->stop[p->n_stop++] = strdup(json_string_value(v));
        return 0;
    }
    if (!json_is_array(v)) return FAIL(x, "stop", "'stop' must be a string or a list of strings");
    if (json_array_size(v) > TM_MAX_STOP)
        return FAIL(x, "stop", "'stop' allows at most %d sequences", TM_MAX_STOP);
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s) {
        if (!json_is_string(s))
            return FAIL(x, "stop", "'stop' must be a string or a list of strings");
        if (json_string_length(s) == 0) continue;
        p->stop[p->n_stop++] = strdup(json_string_value(s));
    }
    return 0;
}

static int parse_prompt(pctx *x, tm_api_params *p) {
    json_t *v = get(x, "prompt");
    if (!v) return FAIL(x, "prompt", "'prompt' is required");
    /* A one-element list holds the same prompt as its element. */
    if (json_is_array(v) && json_array_size(v) == 1 && !json_is_integer(json_array_get(v, 0)))
        v = json_array_get(v, 0);
    if (json_is_string(v)) {
        size_t n = json_string_length(v); /* "\u0000" is text too: keep the length */
        if (n == 0) return FAIL(x, "prompt", "'prompt' must not be empty");
        if (!(p->prompt = malloc(n + 1))) return TM_ENOMEM;
        memcpy(p->prompt, json_string_value(v), n + 1);
        p->prompt_len = n;
        return 0;
    }
    if (!json_is_array(v))
        return FAIL(x, "prompt", "'prompt' must be a string or a list of token ids");
    size_t n = json_array_size(v);
    if (n == 0) return FAIL(x, "prompt", "'prompt' must not be empty");
    p->prompt_ids = malloc(n * sizeof *p->prompt_ids);
    if (!p->prompt_ids) return TM_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (json_is_string(e) || json_is_array(e))
            return FAIL(x, "prompt", "batched prompts (a list of several prompts) are not "
                                     "supported; send one request per prompt");
        if (!json_is_integer(e) || json_integer_value(e) < 0 ||
            json_integer_value(e) > INT32_MAX)
            return FAIL(x, "prompt", "'prompt' token ids must be non-negative integers");
        p->prompt_ids[i] = (int32_t)json_integer_value(e);
    }
    p->n_prompt_ids = (int)n;
    return 0;
}

/* logit_bias: {"<token id>": bias}; biases are clamped to [-100, 100] as vLLM does. The
 * ids are checked against the vocabulary by the caller. */
static int parse_logit_bias(pctx *x, tm_api_params *p) {
    json_t *v = get(x, "logit_bias");
    if (!v) return 0;
    if (!json_is_object(v)) return FAIL(x, "logit_bias", "'logit_bias' must be an object of token ids to biases");
    size_t n = json_object_size(v);
    if (n == 0) return 0;
    if (n > 65536) return FAIL(x, "logit_bias", "'logit_bias' has more than 65536 entries");
    p->bias_ids = malloc(n * sizeof *p->bias_ids);
    p->bias_vals = malloc(n * sizeof *p->bias_vals);
    if (!p->bias_ids || !p->bias_vals) return TM_ENOMEM;
    const char *k;
    json_t *b;
    json_object_foreach(v, k, b) {
        char *end;
        long long id = strtoll(k, &end, 10);
        if (!*k || *end || id < 0 || id > INT32_MAX)
            return FAIL(x, "logit_bias", "'logit_bias' keys must be token ids, got '%.40s'", k);
        if (!json_is_number(b)) return FAIL(x, "logit_bias", "'logit_bias' values must be numbers");
        double d = json_number_value(b);
        p->bias_ids[p->n_bias] = (int32_t)id;
        p->bias_vals[p->n_bias++] = (float)(d < -100 ? -100 : d > 100 ? 100 : d);
    }
    return 0;
}

static int parse_logprobs(pctx *x, tm_api_params *p) {
    json_t *v = get(x, "logprobs");
    if (p->kind == TM_API_COMPLETION) { /* legacy: an integer count of alternatives */
        if (v && json_is_boolean(v)) {
            p->logprobs = json_is_true(v);
            return 0;
        }
        int n = -1;
        if (get_int(x, "logprobs", 0, TM_MAX_TOP_LOGPROBS, &n)) return TM_EINVAL;
        if (n >= 0) p->logprobs = 1, p->top_logprobs = n;
        return 0;
    }
    if (get_bool(x, "logprobs", &p->logprobs)) return TM_EINVAL;
    if (get_int(x, "top_logprobs", 0, TM_MAX_TOP_LOGPROBS, &p->top_logprobs)) return TM_EINVAL;
    if (p->top_logprobs > 0 && !p->logprobs)
        return FAIL(x, "top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
    return 0;
}

/* Fields that ask for behaviour tokenmill does not have (legacy functions). Ignoring
 * them like other unknown fields would answer a different question than the one asked,
 * so a value that is not the default is a 400. */
static int refuse_unsupported(pctx *x) {
    static const char *const names[] = {"functions", "function_call"};
    for (size_t i = 0; i < TM_ARRAY_LEN(names); i++) {
        json_t *v = get(x, names[i]);
        int is_default = !v || (json_is_array(v) && json_array_size(v) == 0) ||
                         (json_is_object(v) && json_object_size(v) == 0) ||
                         (json_is_string(v) && json_string_length(v) == 0);
        if (!strcmp(names[i], "function_call") && json_is_string(v))
            is_default |= !strcmp(json_string_value(v), "none") ||
                          !strcmp(json_string_value(v), "auto");
        if (!is_default) return FAIL(x, names[i], "'%s' is not supported", names[i]);
    }
    return 0;
}

static int parse_fields(pctx *x, tm_api_params *p) {
    int rc;
    if ((rc = get_str(x, "model", &p->model))) return rc;
    if (p->kind == TM_API_COMPLETION ? (rc = parse_prompt(x, p)) : (rc = tm_api_parse_messages(x, p)))
        return rc;
    if (p->kind == TM_API_CHAT && ((rc = tm_api_parse_tools(x, p)) || (rc = tm_api_parse_template_kwargs(x, p))))
        return rc;
    if ((rc = parse_logit_bias(x, p))) return rc;
    int n = 1, max_tokens = -1, mct = -1;
    if (get_int(x, "n", 1, TM_API_MAX_N, &n)) return TM_EINVAL;
    p->n = n;
    if (get_int(x, "best_of", 1, 1, &n)) return TM_EINVAL;
    if (get_int(x, "max_tokens", 1, INT32_MAX, &max_tokens)) return TM_EINVAL;
    if (get_int(x, "max_completion_tokens", 1, INT32_MAX, &mct)) return TM_EINVAL;
    p->max_tokens = mct > 0 ? mct : max_tokens;
    tm_sampling_params *s = &p->sampling;
    if (get_float(x, "temperature", 0, 2, &s->temperature)) return TM_EINVAL;
    if (get_float(x, "top_p", 0, 1, &s->top_p)) return TM_EINVAL;
    if (get(x, "top_p") && s->top_p <= 0) return FAIL(x, "top_p", "'top_p' must be > 0");
    if (get_int(x, "top_k", -1, INT32_MAX, &s->top_k)) return TM_EINVAL;
    if (get_float(x, "min_p", 0, 1, &s->min_p)) return TM_EINVAL;
    if (get_float(x, "presence_penalty", -2, 2, &s->presence_penalty)) return TM_EINVAL;
    if (get_float(x, "frequency_penalty", -2, 2, &s->frequency_penalty)) return TM_EINVAL;
    if (get_float(x, "repetition_penalty", 0, 2, &s->repetition_penalty)) return TM_EINVAL;
    if (get(x, "repetition_penalty") && s->repetition_penalty <= 0)
        return FAIL(x, "repetition_penalty", "'repetition_penalty' must be > 0");
    json_t *seed = get(x, "seed");
    if (seed) {
        if (!json_is_integer(seed)) return FAIL(x, "seed", "'seed' must be an integer");
        s->seed = (uint64_t)json_integer_value(seed);
        p->has_seed = 1;
    }
    if ((rc = parse_stop(x, p))) return rc;
    if (get_bool(x, "ignore_eos", &p->ignore_eos)) return TM_EINVAL;
    if ((rc = parse_logprobs(x, p))) return rc;
    if (get_bool(x, "stream", &p->stream)) return TM_EINVAL;
    json_t *so = get(x, "stream_options");
    if (so) {
        if (!json_is_object(so))
            return FAIL(x, "stream_options", "'stream_options' must be an object");
        if (!p->stream)
            return FAIL(x, "stream_options", "'stream_options' is only allowed when 'stream' is true");
        json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_null(iu) && !json_is_boolean(iu))
            return FAIL(x, "stream_options", "'stream_options.include_usage' must be a boolean");
        p->include_usage = json_is_true(iu);
    }
    if (refuse_unsupported(x)) return TM_EINVAL;
    /* an unsupported schema feature is a 400 like any other bad field */
    if ((rc = tm_structured_parse(x->root, &p->so, x->param, x->err, x->err_len)))
        return rc == TM_ENOMEM ? rc : TM_EINVAL;
    if (p->so.kind != TM_SO_NONE && p->ignore_eos) /* the grammar's end could never end it */
        return FAIL(x, "ignore_eos", "'ignore_eos' cannot be combined with structured output");
    json_t *suffix = get(x, "suffix");
    if (suffix && !json_is_string(suffix)) return FAIL(x, "suffix", "'suffix' must be a string");
    if (suffix && p->kind == TM_API_CHAT && json_string_length(suffix) > 0)
        return FAIL(x, "suffix", "'suffix' is not supported by chat completions (it is for /v1/completions)");
    if (suffix && json_string_length(suffix) > 0) {
        p->suffix_len = json_string_length(suffix);
        if (!(p->suffix = malloc(p->suffix_len + 1))) return TM_ENOMEM;
        memcpy(p->suffix, json_string_value(suffix), p->suffix_len + 1);
    }
    int echo = 0;
    if (get_bool(x, "echo", &echo)) return TM_EINVAL;
    if (echo) return FAIL(x, "echo", "'echo' is not supported");
    char *user = NULL;
    rc = get_str(x, "user", &user);
    free(user);
    if (rc) return rc;
    json_t *salt = get(x, "cache_salt");
    if (salt && (!json_is_string(salt) || json_string_length(salt) == 0))
        return FAIL(x, "cache_salt", "Parameter 'cache_salt' must be a non-empty string if provided.");
    return get_str(x, "cache_salt", &p->cache_salt);
}

int tm_api_parse(tm_api_kind kind, const char *body, size_t len, tm_api_params *out,
                 const char **param, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->max_tokens = -1;
    out->n = 1;
    tm_sampling_params_default(&out->sampling);
    static const char *no_param;
    if (!param) param = &no_param;
    *param = "";
    if (len == 0)
        return tm_fail(err, err_len, TM_EINVAL, "request body is empty (a JSON object is "
                                               "required, sent with Content-Length)");
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root)
        return tm_fail(err, err_len, TM_EINVAL, "malformed JSON at line %d column %d: %s",
                       je.line, je.column, je.text);
    pctx x = {root, param, err, err_len};
    int rc = json_is_object(root) ? parse_fields(&x, out)
                                  : tm_fail(err, err_len, TM_EINVAL, "the body must be a JSON object");
    json_decref(root);
    if (rc == TM_ENOMEM) tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    return rc;
}

void tm_api_params_free(tm_api_params *p) {
    free(p->model);
    free(p->prompt);
    free(p->prompt_ids);
    for (int i = 0; i < p->n_messages; i++) free(p->messages[i].content);
    free(p->messages);
    for (int i = 0; i < p->n_stop; i++) free(p->stop[i]);
    free(p->cache_salt);
    tm_so_spec_free(&p->so);
    free(p->suffix);
    json_decref(p->conversation);
    json_decref(p->tools);
    json_decref(p->tool_specs);
    json_decref(p->template_kwargs);
    free(p->tool_choice_name);
    free(p->bias_ids);
    free(p->bias_vals);
    memset(p, 0, sizeof *p);
}

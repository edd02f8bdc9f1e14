/* structured.c - the structured-output fields of a request -> grammar text. See
 * structured.h. */
#include "server/structured.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/gbnf_text.h"
#include "server/json_schema.h"
#include "server/regex_gbnf.h"

static json_t *get(const json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

static int fail(const char **param, const char *field, char *err, size_t err_len, int code,
                const char *fmt, const char *arg) {
    *param = field;
    char msg[512];
    snprintf(msg, sizeof msg, fmt, arg ? arg : "");
    return tm_fail(err, err_len, code, "%s", msg);
}

/* A schema given as an object, or as a string holding JSON (vLLM's `json` accepts both). */
static int schema_grammar(const json_t *v, int compact, const char *field, char **gbnf,
                          const char **param, char *err, size_t err_len) {
    json_t *owned = NULL;
    if (json_is_string(v)) {
        json_error_t je;
        owned = json_loadb(json_string_value(v), json_string_length(v), JSON_DECODE_ANY, &je);
        if (!owned) return fail(param, field, err, err_len, TM_EINVAL, "'%s' is not valid JSON", field);
        v = owned;
    }
    char sub[400];
    int rc = tm_json_schema_gbnf(v, compact, gbnf, sub, sizeof sub);
    json_decref(owned);
    if (rc == TM_ENOMEM) return rc;
    if (rc) {
        *param = field;
        return tm_fail(err, err_len, rc, "%s (in '%s')", sub, field);
    }
    return 0;
}

static int regex_grammar(const json_t *v, const char *field, char **gbnf, const char **param,
                         char *err, size_t err_len) {
    if (!json_is_string(v)) return fail(param, field, err, err_len, TM_EINVAL, "'%s' must be a string", field);
    tm_gtext t = {0};
    tm_gtext_puts(&t, "root ::= ");
    char sub[300];
    int rc = tm_regex_to_gbnf(json_string_value(v), json_string_length(v), 0, &t, sub, sizeof sub);
    tm_gtext_puts(&t, "\n");
    if (rc) {
        tm_gtext_free(&t);
        if (rc == TM_ENOMEM) return rc;
        *param = field;
        return tm_fail(err, err_len, rc, "%s (in '%s')", sub, field);
    }
    *gbnf = tm_gtext_take(&t);
    return *gbnf ? 0 : TM_ENOMEM;
}

static int choice_grammar(const json_t *v, const char *field, char **gbnf, const char **param,
                          char *err, size_t err_len) {
    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail(param, field, err, err_len, TM_EINVAL, "'%s' must be a non-empty list of strings", field);
    tm_gtext t = {0};
    tm_gtext_puts(&t, "root ::= ");
    size_t i;
    json_t *c;
    json_array_foreach(v, i, c) {
        if (!json_is_string(c)) {
            tm_gtext_free(&t);
            return fail(param, field, err, err_len, TM_EINVAL, "'%s' must be a non-empty list of strings", field);
        }
        if (i) tm_gtext_puts(&t, " | ");
        tm_gtext_literal(&t, json_string_value(c), json_string_length(c));
    }
    tm_gtext_puts(&t, "\n");
    *gbnf = tm_gtext_take(&t);
    return *gbnf ? 0 : TM_ENOMEM;
}

static int grammar_text(const json_t *v, const char *field, char **gbnf, const char **param,
                        char *err, size_t err_len) {
    if (!json_is_string(v) || json_string_length(v) == 0)
        return fail(param, field, err, err_len, TM_EINVAL, "'%s' must be a non-empty string", field);
    *gbnf = strdup(json_string_value(v));
    return *gbnf ? 0 : TM_ENOMEM;
}

/* response_format */
static int parse_response_format(const json_t *rf, tm_so_spec *out, const char **param, char *err,
                                 size_t err_len) {
    const char *f = "response_format";
    if (!json_is_object(rf)) return fail(param, f, err, err_len, TM_EINVAL, "'%s' must be an object", f);
    json_t *type = get(rf, "type");
    if (!json_is_string(type))
        return fail(param, f, err, err_len, TM_EINVAL, "'%s' needs a string 'type'", f);
    const char *t = json_string_value(type);
    if (!strcmp(t, "text")) return 0;
    if (!strcmp(t, "json_object")) {
        out->kind = TM_SO_JSON_OBJECT;
        out->param = f;
        int rc = tm_json_object_gbnf(0, &out->gbnf, err, err_len);
        if (rc) *param = f;
        return rc;
    }
    if (!strcmp(t, "json_schema")) {
        json_t *js = get(rf, "json_schema");
        if (!json_is_object(js))
            return fail(param, f, err, err_len, TM_EINVAL, "'%s.json_schema' must be an object", f);
        json_t *strict = get(js, "strict");
        if (strict && !json_is_boolean(strict))
            return fail(param, f, err, err_len, TM_EINVAL, "'%s.json_schema.strict' must be a boolean", f);
        json_t *schema = get(js, "schema");
        if (!schema)
            return fail(param, f, err, err_len, TM_EINVAL, "'%s.json_schema.schema' is required", f);
        out->kind = TM_SO_JSON_SCHEMA;
        out->param = f;
        /* strict or not, the output is constrained: the grammar is the guarantee */
        return schema_grammar(schema, 0, "response_format.json_schema.schema", &out->gbnf, param, err, err_len);
    }
    return fail(param, f, err, err_len, TM_EUNSUPPORTED,
                "'response_format' type '%.60s' is not supported (use text, json_object or json_schema)", t);
}

/* structured_outputs (vLLM 0.12+) */
static int parse_structured_outputs(const json_t *so, tm_so_spec *out, const char **param,
                                    char *err, size_t err_len) {
    const char *f = "structured_outputs";
    if (!json_is_object(so)) return fail(param, f, err, err_len, TM_EINVAL, "'%s' must be an object", f);
    static const char *const kinds[] = {"json", "regex", "choice", "grammar", "json_object", "structural_tag"};
    const char *which = NULL;
    int n = 0;
    for (size_t i = 0; i < TM_ARRAY_LEN(kinds); i++) {
        json_t *v = get(so, kinds[i]);
        if (!v || (!strcmp(kinds[i], "json_object") && json_is_false(v))) continue;
        which = kinds[i];
        n++;
    }
    if (n > 1)
        return fail(param, f, err, err_len, TM_EINVAL,
                    "'%s' takes one constraint (json, regex, choice, grammar or json_object)", f);
    json_t *ws = get(so, "whitespace_pattern");
    if (ws) return fail(param, f, err, err_len, TM_EUNSUPPORTED, "'%s.whitespace_pattern' is not supported", f);
    json_t *daw = get(so, "disable_any_whitespace"), *dap = get(so, "disable_additional_properties");
    if ((daw && !json_is_boolean(daw)) || (dap && !json_is_boolean(dap)))
        return fail(param, f, err, err_len, TM_EINVAL, "'%s' options must be booleans", f);
    int compact = json_is_true(daw);
    if (!which) return 0;
    json_t *v = get(so, which);
    out->param = f;
    if (!strcmp(which, "json")) {
        out->kind = TM_SO_JSON_SCHEMA;
        return schema_grammar(v, compact, "structured_outputs.json", &out->gbnf, param, err, err_len);
    }
    if (!strcmp(which, "json_object")) {
        if (!json_is_boolean(v)) return fail(param, f, err, err_len, TM_EINVAL, "'%s.json_object' must be a boolean", f);
        out->kind = TM_SO_JSON_OBJECT;
        int rc = tm_json_object_gbnf(compact, &out->gbnf, err, err_len);
        if (rc) *param = f;
        return rc;
    }
    if (!strcmp(which, "regex")) {
        out->kind = TM_SO_REGEX;
        return regex_grammar(v, "structured_outputs.regex", &out->gbnf, param, err, err_len);
    }
    if (!strcmp(which, "choice")) {
        out->kind = TM_SO_CHOICE;
        return choice_grammar(v, "structured_outputs.choice", &out->gbnf, param, err, err_len);
    }
    if (!strcmp(which, "grammar")) {
        out->kind = TM_SO_GRAMMAR;
        return grammar_text(v, "structured_outputs.grammar", &out->gbnf, param, err, err_len);
    }
    return fail(param, f, err, err_len, TM_EUNSUPPORTED, "'%s.structural_tag' is not supported", f);
}

int tm_structured_parse(const json_t *root, tm_so_spec *out, const char **param, char *err,
                        size_t err_len) {
    memset(out, 0, sizeof *out);
    static const char *const legacy[] = {"guided_json", "guided_regex", "guided_choice", "guided_grammar"};
    const char *given[8];
    int n = 0;
    json_t *rf = get(root, "response_format"), *so = get(root, "structured_outputs");
    int rf_set = 0;
    if (rf) { /* {"type": "text"} asks for nothing */
        json_t *t = json_object_get(rf, "type");
        rf_set = !(json_is_string(t) && !strcmp(json_string_value(t), "text"));
        if (rf_set || !json_is_object(rf)) given[n++] = "response_format";
    }
    if (so) given[n++] = "structured_outputs";
    for (size_t i = 0; i < TM_ARRAY_LEN(legacy); i++)
        if (get(root, legacy[i])) given[n++] = legacy[i];
    json_t *gws = get(root, "guided_whitespace_pattern");
    if (gws) return fail(param, "guided_whitespace_pattern", err, err_len, TM_EUNSUPPORTED,
                         "'%s' is not supported", "guided_whitespace_pattern");
    if (n > 1) {
        char msg[200];
        snprintf(msg, sizeof msg, "'%s' and '%s'", given[0], given[1]);
        return fail(param, given[1], err, err_len, TM_EINVAL,
                    "one structured output constraint per request: %s were both given", msg);
    }
    if (rf && (rf_set || !json_is_object(rf))) return parse_response_format(rf, out, param, err, err_len);
    if (so) return parse_structured_outputs(so, out, param, err, err_len);
    json_t *v;
    if ((v = get(root, "guided_json"))) {
        out->kind = TM_SO_JSON_SCHEMA;
        out->param = "guided_json";
        return schema_grammar(v, 0, "guided_json", &out->gbnf, param, err, err_len);
    }
    if ((v = get(root, "guided_regex"))) {
        out->kind = TM_SO_REGEX;
        out->param = "guided_regex";
        return regex_grammar(v, "guided_regex", &out->gbnf, param, err, err_len);
    }
    if ((v = get(root, "guided_choice"))) {
        out->kind = TM_SO_CHOICE;
        out->param = "guided_choice";
        return choice_grammar(v, "guided_choice", &out->gbnf, param, err, err_len);
    }
    if ((v = get(root, "guided_grammar"))) {
        out->kind = TM_SO_GRAMMAR;
        out->param = "guided_grammar";
        return grammar_text(v, "guided_grammar", &out->gbnf, param, err, err_len);
    }
    return 0;
}

void tm_so_spec_free(tm_so_spec *s) {
    free(s->gbnf);
    memset(s, 0, sizeof *s);
}

const char *tm_so_kind_name(tm_so_kind k) {
    static const char *const names[] = {"none", "json_object", "json_schema", "regex", "choice", "grammar",
                                        "tool_call"};
    return (unsigned)k < TM_ARRAY_LEN(names) ? names[k] : "none";
}

/* ---- tool calls ---- */

/* Rewrites every "$ref": "#..." under v to point below base (the place v now sits). */
static int rebase_refs(json_t *v, const char *base) {
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) if (rebase_refs(e, base)) return TM_ENOMEM;
        return 0;
    }
    if (!json_is_object(v)) return 0;
    const char *k;
    json_t *e;
    json_object_foreach(v, k, e) {
        if (!strcmp(k, "$ref") && json_is_string(e) && json_string_value(e)[0] == '#') {
            size_t n = strlen(base) + json_string_length(e) + 1;
            char *r = malloc(n);
            if (!r) return TM_ENOMEM;
            snprintf(r, n, "%s%s", base, json_string_value(e) + 1);
            int rc = json_string_set(e, r);
            free(r);
            if (rc) return TM_ENOMEM;
        } else if (rebase_refs(e, base)) {
            return TM_ENOMEM;
        }
    }
    return 0;
}

static const char *function_name(const json_t *tool) {
    return json_string_value(json_object_get(json_object_get(tool, "function"), "name"));
}

int tm_structured_tools_strict(const json_t *tools) {
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
        if (json_is_true(json_object_get(json_object_get(t, "function"), "strict"))) return 1;
    return 0;
}

/* A function's parameters schema (borrowed; NULL when it has none), checked against the
 * subset on its own so that an error names the function. */
static int tool_params(const json_t *tool, const json_t **params, char *err, size_t err_len) {
    json_t *p = json_object_get(json_object_get(tool, "function"), "parameters");
    *params = json_is_null(p) ? NULL : p;
    if (!*params) return 0;
    char *g = NULL, sub[400] = "";
    int rc = tm_json_schema_gbnf(*params, 0, &g, sub, sizeof sub);
    free(g);
    if (rc == TM_ENOMEM) return rc;
    if (rc) return tm_fail(err, err_len, rc, "%s (in the parameters of tool '%.100s')", sub, function_name(tool));
    return 0;
}

int tm_structured_tool_args_gbnf(const json_t *tools, const char *name, char **gbnf, char *err,
                                 size_t err_len) {
    *gbnf = NULL;
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const char *n = function_name(t);
        if (!n || strcmp(n, name) != 0) continue;
        const json_t *params;
        int rc = tool_params(t, &params, err, err_len);
        if (rc) return rc;
        if (!params) return tm_json_object_gbnf(0, gbnf, err, err_len);
        return tm_json_schema_gbnf(params, 0, gbnf, err, err_len);
    }
    return tm_fail(err, err_len, TM_EINVAL, "no function named '%.100s' in 'tools'", name);
}

/* A rule `free` for any text that never contains trigger, whose first character occurs
 * in it once ("<tool_call>", "[TOOL_CALLS]"): the text splits at that character into
 * pieces, and no piece after one may begin with the rest of the trigger. */
static int free_text_rule(tm_gtext *g, const char *trigger, char *err, size_t err_len) {
    size_t k = strlen(trigger);
    if (k < 2 || memchr(trigger + 1, trigger[0], k - 1))
        return tm_fail(err, err_len, TM_EINVAL, "tool-call trigger '%s' cannot bound free text", trigger);
    unsigned char c0 = (unsigned char)trigger[0];
    tm_gtext_printf(g, "free ::= [^\\x%02x]* (\"\\x%02x\" rest)*\n", c0, c0);
    tm_gtext_puts(g, "rest ::= ");
    /* ( [^t1 c0] [^c0]* | "t1" ( [^t2 c0] [^c0]* | "t2" ( ... ) )? )?; the last character
     * of the trigger may not follow the rest of it */
    for (size_t j = 1; j < k; j++) {
        unsigned char c = (unsigned char)trigger[j];
        tm_gtext_printf(g, "([^\\x%02x\\x%02x] [^\\x%02x]*", c, c0, c0);
        if (j + 1 < k) tm_gtext_printf(g, " | \"\\x%02x\" ", c);
    }
    for (size_t j = 1; j < k; j++) tm_gtext_puts(g, ")?");
    tm_gtext_puts(g, "\n");
    return 0;
}

int tm_structured_tool_gbnf(const json_t *tools, const char *only, const tm_tool_markup *m,
                            tm_tool_grammar_mode mode, char **gbnf, char *err, size_t err_len) {
    *gbnf = NULL;
    if (!json_is_array(tools) || json_array_size(tools) == 0)
        return tm_fail(err, err_len, TM_EINVAL, "'tools' must be a non-empty list");
    if (mode == TM_TOOL_GRAMMAR_OPTIONAL && !m->trigger)
        return tm_fail(err, err_len, TM_EINVAL, "this tool-call format cannot follow free text");
    /* One schema for the call: anyOf over {"name": const, "<args_key>": parameters}. */
    json_t *alts = json_array(), *call = json_pack("{s:o}", "anyOf", alts);
    if (!call) return TM_ENOMEM;
    int rc = 0;
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        json_t *fn = json_object_get(t, "function"), *name = json_object_get(fn, "name");
        if (!json_is_object(fn) || !json_is_string(name)) {
            rc = tm_fail(err, err_len, TM_EINVAL, "each tool needs a function with a string name");
            break;
        }
        if (only && strcmp(only, json_string_value(name)) != 0) continue;
        const json_t *params = NULL;
        int held = mode == TM_TOOL_GRAMMAR_FORCED || json_is_true(json_object_get(fn, "strict"));
        if (held && (rc = tool_params(t, &params, err, err_len))) break;
        json_t *args = params ? json_deep_copy(params) : json_pack("{s:s}", "type", "object");
        char base[64];
        snprintf(base, sizeof base, "#/anyOf/%zu/properties/%s", json_array_size(alts), m->args_key);
        if (!args || rebase_refs(args, base)) {
            json_decref(args);
            rc = TM_ENOMEM;
            break;
        }
        json_t *one = json_pack("{s:s, s:{s:{s:O}, s:o}, s:[s,s], s:b}", "type", "object", "properties", "name",
                                "const", name, m->args_key, args, "required", "name", m->args_key,
                                "additionalProperties", 0);
        if (!one || json_array_append_new(alts, one)) {
            rc = TM_ENOMEM;
            break;
        }
    }
    if (!rc && json_array_size(alts) == 0)
        rc = tm_fail(err, err_len, TM_EINVAL, "no function named '%.100s' in 'tools'", only ? only : "");
    char *body = NULL, sub[400] = "";
    if (!rc && (rc = tm_json_schema_gbnf_rule(call, 0, "call", &body, sub, sizeof sub)))
        tm_fail(err, err_len, rc, "%s (in a tool's parameters)", sub);
    json_decref(call);
    if (rc) return rc;
    tm_gtext g = {0};
    tm_gtext_puts(&g, mode == TM_TOOL_GRAMMAR_OPTIONAL ? "root ::= free calls?\n" : "root ::= calls\n");
    tm_gtext_puts(&g, "calls ::= ");
    tm_gtext_literal(&g, m->prefix, strlen(m->prefix));
    tm_gtext_puts(&g, " call ");
    if (m->sep) {
        tm_gtext_puts(&g, "(");
        tm_gtext_literal(&g, m->sep, strlen(m->sep));
        tm_gtext_puts(&g, " call)* ");
    }
    tm_gtext_literal(&g, m->suffix, strlen(m->suffix));
    tm_gtext_puts(&g, "\n");
    if (mode == TM_TOOL_GRAMMAR_OPTIONAL && (rc = free_text_rule(&g, m->trigger, err, err_len))) {
        tm_gtext_free(&g);
        free(body);
        return rc;
    }
    tm_gtext_puts(&g, body);
    free(body);
    *gbnf = tm_gtext_take(&g);
    return *gbnf ? 0 : TM_ENOMEM;
}

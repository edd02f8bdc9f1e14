/* json_schema.c - JSON Schema -> GBNF. See json_schema.h.
 *
 * Each schema becomes a GBNF expression written into the caller's buffer; rules are
 * written only where they pay: a $ref target (so recursion works and a definition is
 * compiled once), an object's "rest of the properties" choices when some are optional,
 * array items that repeat, and the shared JSON pieces (string, number, any value). */
#include "server/json_schema.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/gbnf_text.h"
#include "server/json_schema_internal.h"
#include "server/regex_gbnf.h"

#define TM_SCHEMA_MAX_DEPTH 64
#define WS_LOOSE "[ \\t\\n]{0,16}"

/* Shared rules, written at the end when used. */
enum { USE_STRING = 1, USE_NUMBER = 2, USE_INTEGER = 4, USE_VALUE = 8 };

typedef struct ref_rule {
    char *ptr;            /* the $ref string */
    const json_t *target; /* what it points at */
    int id;               /* rule "d<id>" */
} ref_rule;

typedef struct js {
    const json_t *root;   /* the whole document, for $ref */
    int compact;          /* no optional whitespace */
    tm_gtext rules;       /* rule definitions written so far */
    int next_id;          /* fresh rule numbers */
    ref_rule *refs;       /* (n_refs) $refs met, each one rule */
    int n_refs, cap_refs;
    unsigned uses;        /* USE_* */
    int depth;            /* nesting of emit */
    char *err;
    size_t err_len;
} js;

static int emit(js *c, const json_t *s, tm_gtext *out);

static const char *ws(const js *c) { return c->compact ? "" : " " WS_LOOSE " "; }
static const char *colon(const js *c) { return c->compact ? " \":\" " : " \":\" \" \"? "; }

static int unsupported(js *c, const char *fmt, const char *what) {
    char msg[200];
    snprintf(msg, sizeof msg, fmt, what);
    return tm_fail(c->err, c->err_len, TM_EUNSUPPORTED, "JSON schema: %s is not supported", msg);
}

static int invalid(js *c, const char *fmt, const char *what) {
    char msg[200];
    snprintf(msg, sizeof msg, fmt, what);
    return tm_fail(c->err, c->err_len, TM_EINVAL, "JSON schema: %s", msg);
}

/* ---- keywords ---- */

/* Keywords that constrain instances in ways this front end does not generate. */
static const char *const k_refused[] = {
    "not", "if", "then", "else", "dependentRequired", "dependentSchemas", "dependencies",
    "patternProperties", "propertyNames", "unevaluatedProperties", "unevaluatedItems",
    "contains", "minContains", "maxContains", "minProperties", "maxProperties",
    "$dynamicRef", "$recursiveRef", "contentSchema",
};

static int check_refused(js *c, const json_t *s) {
    for (size_t i = 0; i < TM_ARRAY_LEN(k_refused); i++)
        if (json_object_get(s, k_refused[i])) return unsupported(c, "the keyword '%s'", k_refused[i]);
    json_t *u = json_object_get(s, "uniqueItems");
    if (u && !json_is_false(u)) return unsupported(c, "the keyword '%s'", "uniqueItems");
    return 0;
}

static int get_count(js *c, const json_t *s, const char *key, long long *out) {
    json_t *v = json_object_get(s, key);
    if (!v) return 0;
    double d = json_is_integer(v) ? (double)json_integer_value(v) : json_is_real(v) ? json_real_value(v) : -1;
    if (d < 0 || d != floor(d) || d > 1e9) return invalid(c, "'%s' must be a non-negative integer", key);
    *out = (long long)d;
    return 0;
}

/* ---- literals ---- */

/* A JSON scalar's text as a GBNF literal. */
static int put_scalar_literal(js *c, const json_t *v, tm_gtext *out) {
    if (json_is_real(v)) { /* the shortest text that reads back as the same double */
        char buf[40];
        for (int p = 1; p <= 17; p++) {
            snprintf(buf, sizeof buf, "%.*g", p, json_real_value(v));
            if (strtod(buf, NULL) == json_real_value(v)) break;
        }
        if (!strchr(buf, '.') && !strchr(buf, 'e') && !strchr(buf, 'n')) strcat(buf, ".0");
        tm_gtext_literal(out, buf, strlen(buf));
        return 0;
    }
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) return TM_ENOMEM;
    tm_gtext_literal(out, text, strlen(text));
    free(text);
    return 0;
}

/* A JSON value (const, enum member) as an expression: scalars literally, arrays and
 * objects with the same whitespace as everything else, members in their order. */
static int put_json_literal(js *c, const json_t *v, tm_gtext *out) {
    if (!json_is_object(v) && !json_is_array(v)) return put_scalar_literal(c, v, out);
    if (++c->depth > TM_SCHEMA_MAX_DEPTH) return unsupported(c, "%s", "values nested over 64 deep");
    int rc = 0;
    if (json_is_array(v)) {
        tm_gtext_printf(out, "( \"[\"%s", ws(c));
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (i) tm_gtext_printf(out, " \",\"%s", ws(c));
            if ((rc = put_json_literal(c, e, out))) break;
        }
        tm_gtext_printf(out, "%s\"]\" )", ws(c));
    } else {
        tm_gtext_printf(out, "( \"{\"%s", ws(c));
        const char *k;
        json_t *e;
        int first = 1;
        json_object_foreach((json_t *)v, k, e) {
            if (!first) tm_gtext_printf(out, " \",\"%s", ws(c));
            first = 0;
            json_t *key = json_string(k);
            rc = key ? put_scalar_literal(c, key, out) : TM_ENOMEM;
            json_decref(key);
            if (rc) break;
            tm_gtext_puts(out, colon(c));
            if ((rc = put_json_literal(c, e, out))) break;
        }
        tm_gtext_printf(out, "%s\"}\" )", ws(c));
    }
    c->depth--;
    return rc;
}

static int emit_enum(js *c, const json_t *values, tm_gtext *out) {
    if (!json_is_array(values) || json_array_size(values) == 0)
        return invalid(c, "'%s' must be a non-empty list", "enum");
    tm_gtext_puts(out, "(");
    size_t i;
    json_t *v;
    json_array_foreach(values, i, v) {
        if (i) tm_gtext_puts(out, " | ");
        int rc = put_json_literal(c, v, out);
        if (rc) return rc;
    }
    tm_gtext_puts(out, ")");
    return 0;
}

/* ---- strings ---- */

/* One character of a JSON string, escapes included (no surrogate \u escapes: a pair
 * would count as two characters here and one in a validator). */
#define STR_CHAR "( [^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" ( [0-9a-cA-Ce-fE-F] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} ) ) )"

static const struct {
    const char *name;
    const char *regex;
} k_formats[] = {
#define DATE "[1-9][0-9]{3}-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)"
#define TIME "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
    {"date-time", DATE "T" TIME},
    {"date", DATE},
    {"time", TIME},
    {"duration", "P(([0-9]{1,4}Y([0-9]{1,4}M)?([0-9]{1,4}D)?|[0-9]{1,4}M([0-9]{1,4}D)?|[0-9]{1,4}D)"
                 "(T([0-9]{1,4}H([0-9]{1,4}M)?([0-9]{1,4}S)?|[0-9]{1,4}M([0-9]{1,4}S)?|[0-9]{1,4}S))?"
                 "|[0-9]{1,4}W|T([0-9]{1,4}H([0-9]{1,4}M)?([0-9]{1,4}S)?|[0-9]{1,4}M([0-9]{1,4}S)?|[0-9]{1,4}S))"},
    /* email and uri are bounded: unbounded runs let a small model loop inside one for
     * hundreds of tokens (what a validator accepts is far wider; these are a subset) */
    {"email", "[a-zA-Z0-9._%+-]{1,32}@[a-zA-Z0-9-]{1,24}(\\.[a-zA-Z0-9-]{1,24}){0,2}\\.[a-zA-Z]{2,10}"},
    {"hostname", "[a-zA-Z0-9]{1,16}(-[a-zA-Z0-9]{1,16})?(\\.[a-zA-Z0-9]{1,16}(-[a-zA-Z0-9]{1,16})?){0,3}"},
    {"ipv4", "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}"},
    {"ipv6", "[0-9a-f]{1,4}(:[0-9a-f]{1,4}){7}"},
    {"uuid", "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"},
    {"uri", "https?://[a-z0-9-]{1,24}(\\.[a-z0-9-]{1,24}){0,3}(/[a-zA-Z0-9._~-]{0,24}){0,4}"},
#undef DATE
#undef TIME
};

static int emit_string(js *c, const json_t *s, tm_gtext *out) {
    json_t *fmt = json_object_get(s, "format"), *pat = json_object_get(s, "pattern");
    long long lo = 0, hi = -1;
    int rc;
    if ((rc = get_count(c, s, "minLength", &lo)) || (rc = get_count(c, s, "maxLength", &hi))) return rc;
    int lengths = json_object_get(s, "minLength") || json_object_get(s, "maxLength");
    if (fmt && !json_is_string(fmt)) return invalid(c, "'%s' must be a string", "format");
    if (pat && !json_is_string(pat)) return invalid(c, "'%s' must be a string", "pattern");
    if ((fmt || pat) && lengths)
        return unsupported(c, "%s together with minLength/maxLength", fmt ? "'format'" : "'pattern'");
    if (fmt && pat) return unsupported(c, "%s", "'format' together with 'pattern'");
    const char *regex = NULL;
    if (fmt) {
        for (size_t i = 0; i < TM_ARRAY_LEN(k_formats) && !regex; i++)
            if (!strcmp(json_string_value(fmt), k_formats[i].name)) regex = k_formats[i].regex;
        if (!regex) {
            char what[96];
            snprintf(what, sizeof what, "the string format '%.60s'", json_string_value(fmt));
            return unsupported(c, "%s", what);
        }
    }
    if (regex || pat) {
        const char *re = regex ? regex : json_string_value(pat);
        size_t n = regex ? strlen(regex) : json_string_length(pat);
        tm_gtext_puts(out, "( \"\\\"\" ");
        char sub[256];
        rc = tm_regex_to_gbnf(re, n, 1, out, sub, sizeof sub);
        if (rc) return tm_fail(c->err, c->err_len, rc, "JSON schema 'pattern': %s", sub);
        tm_gtext_puts(out, " \"\\\"\" )");
        return 0;
    }
    if (lengths) {
        if (hi >= 0 && hi < lo) return invalid(c, "%s", "maxLength is below minLength");
        if (lo > TM_SCHEMA_MAX_LEN) {
            char what[64];
            snprintf(what, sizeof what, "minLength above %d", TM_SCHEMA_MAX_LEN);
            return unsupported(c, "%s", what);
        }
        if (hi < 0 || hi > TM_SCHEMA_MAX_LEN) hi = hi < 0 && lo <= 1 ? -1 : TM_SCHEMA_MAX_LEN;
        if (hi < 0) tm_gtext_printf(out, "( \"\\\"\" " STR_CHAR "{%lld,} \"\\\"\" )", lo);
        else tm_gtext_printf(out, "( \"\\\"\" " STR_CHAR "{%lld,%lld} \"\\\"\" )", lo, hi);
        return 0;
    }
    c->uses |= USE_STRING;
    tm_gtext_puts(out, "string");
    return 0;
}

/* ---- numbers ---- */

static int emit_number(js *c, const json_t *s, int integer, tm_gtext *out) {
    double lo = 0, hi = 0;
    int lo_set = 0, hi_set = 0, lo_excl = 0, hi_excl = 0, rc;
    json_t *v;
    if ((v = json_object_get(s, "minimum"))) {
        if (!json_is_number(v)) return invalid(c, "'%s' must be a number", "minimum");
        lo = json_number_value(v), lo_set = 1;
    }
    if ((v = json_object_get(s, "exclusiveMinimum"))) {
        if (json_is_boolean(v)) return unsupported(c, "%s", "a boolean 'exclusiveMinimum' (draft 4)");
        if (!json_is_number(v)) return invalid(c, "'%s' must be a number", "exclusiveMinimum");
        double d = json_number_value(v);
        if (!lo_set || d >= lo) lo = d, lo_set = 1, lo_excl = 1;
    }
    if ((v = json_object_get(s, "maximum"))) {
        if (!json_is_number(v)) return invalid(c, "'%s' must be a number", "maximum");
        hi = json_number_value(v), hi_set = 1;
    }
    if ((v = json_object_get(s, "exclusiveMaximum"))) {
        if (json_is_boolean(v)) return unsupported(c, "%s", "a boolean 'exclusiveMaximum' (draft 4)");
        if (!json_is_number(v)) return invalid(c, "'%s' must be a number", "exclusiveMaximum");
        double d = json_number_value(v);
        if (!hi_set || d <= hi) hi = d, hi_set = 1, hi_excl = 1;
    }
    json_t *mult = json_object_get(s, "multipleOf");
    if (mult) {
        if (!json_is_number(mult) || json_number_value(mult) <= 0)
            return invalid(c, "'%s' must be a positive number", "multipleOf");
        double m = json_number_value(mult);
        if (m != floor(m) || m > 1000)
            return unsupported(c, "%s", "'multipleOf' other than an integer up to 1000");
        if (lo_set || hi_set) return unsupported(c, "%s", "'multipleOf' together with bounds");
        /* Multiples of m in decimal: the remainder after each digit, one rule each. */
        int k = (int)m, base = c->next_id;
        c->next_id += k;
        for (int r = 0; r < k; r++) {
            tm_gtext_printf(&c->rules, "m%d ::= %s", base + r, r == 0 ? "\"\" | " : "");
            for (int d = 0; d < 10; d++) tm_gtext_printf(&c->rules, "%s\"%d\" m%d", d ? " | " : "", d, base + (r * 10 + d) % k);
            tm_gtext_puts(&c->rules, "\n");
        }
        tm_gtext_puts(out, "( \"-\"? ( \"0\" | ");
        for (int d = 1; d <= 9; d++) tm_gtext_printf(out, "%s\"%d\" m%d", d > 1 ? " | " : "", d, base + d % k);
        tm_gtext_puts(out, " ) )");
        return 0;
    }
    if (!lo_set && !hi_set) {
        c->uses |= integer ? USE_INTEGER : USE_NUMBER;
        tm_gtext_puts(out, integer ? "integer" : "number");
        return 0;
    }
    if (integer) {
        double ilo = !lo_set ? 0 : lo_excl ? floor(lo) + 1 : ceil(lo);
        double ihi = !hi_set ? 0 : hi_excl ? ceil(hi) - 1 : floor(hi);
        if (lo_set && hi_set && ilo > ihi) return invalid(c, "%s", "the bounds leave no integer");
        if (fabs(ilo) > 9e18 || fabs(ihi) > 9e18) return unsupported(c, "%s", "integer bounds beyond 64 bits");
        tm_schema_int_range(out, (int64_t)ilo, lo_set, (int64_t)ihi, hi_set);
        return 0;
    }
    rc = tm_schema_num_range(out, lo, lo_set, lo_excl, hi, hi_set, hi_excl);
    return rc ? invalid(c, "%s", "the bounds leave no number") : 0;
}

/* ---- objects ---- */

typedef struct prop {
    char *key;      /* the key as a GBNF literal of its JSON text */
    char *value;    /* the value's expression */
    int required;   /* must appear */
} prop;

static void props_free(prop *p, int n) {
    for (int i = 0; i < n; i++) free(p[i].key), free(p[i].value);
    free(p);
}

static int in_required(const json_t *req, const char *name) {
    size_t i;
    json_t *r;
    json_array_foreach(req, i, r) if (json_is_string(r) && !strcmp(json_string_value(r), name)) return 1;
    return 0;
}

/* "key": value, for one property */
static void put_pair(js *c, const prop *p, tm_gtext *out) {
    tm_gtext_printf(out, "%s%s%s", p->key, colon(c), p->value);
}

/* Objects with optional properties: rule o<id>-<k> is what may follow property k (k = n:
 * before the first). Each picks the next present property: any later one whose
 * predecessors since k are all optional. */
static void object_rules(js *c, int id, const prop *p, int n) {
    for (int k = n; k >= 0; k--) {
        int first = k == n; /* the rule before the first property */
        int from = first ? 0 : k + 1;
        tm_gtext_printf(&c->rules, "o%d-%d ::= ", id, k);
        int alts = 0;
        for (int j = from; j < n; j++) {
            tm_gtext_printf(&c->rules, "%s(%s", alts++ ? " | " : "", first ? "" : " \",\"");
            if (!first) tm_gtext_puts(&c->rules, ws(c));
            put_pair(c, &p[j], &c->rules);
            tm_gtext_printf(&c->rules, " o%d-%d )", id, j);
            if (p[j].required) break; /* a required property cannot be skipped */
        }
        int rest_optional = 1;
        for (int j = from; j < n; j++) rest_optional &= !p[j].required;
        if (rest_optional) tm_gtext_puts(&c->rules, alts++ ? " | \"\"" : "\"\"");
        tm_gtext_puts(&c->rules, "\n");
    }
}

static int emit_object(js *c, const json_t *s, tm_gtext *out) {
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    json_t *addl = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props)) return invalid(c, "'%s' must be an object", "properties");
    if (req && !json_is_array(req)) return invalid(c, "'%s' must be a list", "required");
    size_t n_props = props ? json_object_size(props) : 0, n_req = req ? json_array_size(req) : 0;
    prop *p = calloc(n_props + n_req + 1, sizeof *p);
    if (!p) return TM_ENOMEM;
    int n = 0, rc = 0;
    const char *name;
    json_t *sub;
    json_object_foreach(props, name, sub) {
        int required = req && in_required(req, name);
        if (json_is_false(sub)) {
            if (required) {
                rc = invalid(c, "required property '%s' has the schema false", name);
                break;
            }
            continue;
        }
        tm_gtext key = {0}, val = {0};
        json_t *k = json_string(name);
        rc = k ? put_json_literal(c, k, &key) : TM_ENOMEM;
        json_decref(k);
        if (!rc) rc = emit(c, sub, &val);
        p[n].key = tm_gtext_take(&key);
        p[n].value = tm_gtext_take(&val);
        p[n].required = required;
        n++;
        if (!rc && (!p[n - 1].key || !p[n - 1].value)) rc = TM_ENOMEM;
        if (rc) break;
    }
    /* Required names without a schema: any value, unless extra properties are banned. */
    for (size_t i = 0; !rc && i < n_req; i++) {
        json_t *r = json_array_get(req, i);
        if (!json_is_string(r)) {
            rc = invalid(c, "'%s' must list strings", "required");
            break;
        }
        if (props && json_object_get(props, json_string_value(r))) continue;
        if (json_is_false(addl)) {
            rc = invalid(c, "required property '%s' is not in 'properties' and additionalProperties is false",
                         json_string_value(r));
            break;
        }
        tm_gtext key = {0};
        rc = put_json_literal(c, r, &key);
        p[n].key = tm_gtext_take(&key);
        p[n].value = strdup("value");
        p[n].required = 1;
        c->uses |= USE_VALUE;
        if (!rc && (!p[n].key || !p[n].value)) rc = TM_ENOMEM;
        n++;
    }
    if (rc) {
        props_free(p, n);
        return rc;
    }
    if (n == 0 && !json_is_false(addl)) {
        /* A map: keys are any strings, values follow additionalProperties. */
        tm_gtext val = {0};
        if (addl && !json_is_true(addl)) rc = emit(c, addl, &val);
        else tm_gtext_puts(&val, "value"), c->uses |= USE_VALUE;
        char *v = tm_gtext_take(&val);
        if (!rc && !v) rc = TM_ENOMEM;
        if (!rc) {
            c->uses |= USE_STRING;
            tm_gtext_printf(out, "( \"{\"%s( string%s%s ( \",\"%sstring%s%s )* )?%s\"}\" )", ws(c), colon(c), v,
                            ws(c), colon(c), v, ws(c));
        }
        free(v);
        props_free(p, n);
        return rc;
    }
    int all_required = 1;
    for (int i = 0; i < n; i++) all_required &= p[i].required;
    tm_gtext_printf(out, "( \"{\"%s", ws(c));
    if (all_required) {
        for (int i = 0; i < n; i++) {
            if (i) tm_gtext_printf(out, " \",\"%s", ws(c));
            put_pair(c, &p[i], out);
        }
    } else {
        /* A property that can follow several others is written in several of the rules
         * below; a large value then becomes one rule of its own, compiled once. */
        for (int j = 0; j < n; j++) {
            int places = 0;
            for (int k = j - 1, skip_ok = 1; k >= -1 && skip_ok; k--) {
                places++; /* right after property k (k = -1: first) */
                if (k >= 0) skip_ok = !p[k].required;
            }
            if (places < 2 || strlen(p[j].value) < 64) continue;
            int vid = c->next_id++;
            tm_gtext_printf(&c->rules, "v%d ::= %s\n", vid, p[j].value);
            char name[24];
            snprintf(name, sizeof name, "v%d", vid);
            char *v = strdup(name);
            if (!v) {
                props_free(p, n);
                return TM_ENOMEM;
            }
            free(p[j].value);
            p[j].value = v;
        }
        int id = c->next_id++;
        object_rules(c, id, p, n);
        tm_gtext_printf(out, "o%d-%d", id, n);
    }
    tm_gtext_printf(out, "%s\"}\" )", ws(c));
    props_free(p, n);
    return 0;
}

/* ---- arrays ---- */

/* An item expression that is repeated: a rule, so copies cost one call each. */
static int item_rule(js *c, const json_t *items, char *name, size_t name_len) {
    if (!items || json_is_true(items)) {
        c->uses |= USE_VALUE;
        snprintf(name, name_len, "value");
        return 0;
    }
    tm_gtext body = {0};
    int rc = emit(c, items, &body);
    if (rc) {
        tm_gtext_free(&body);
        return rc;
    }
    /* An item that is already one rule (a $ref, string, ...) is used as it is. */
    int bare = body.s && body.n < name_len && strspn(body.s, "abcdefghijklmnopqrstuvwxyz0123456789-") == body.n;
    if (bare) {
        snprintf(name, name_len, "%s", body.s);
    } else {
        int id = c->next_id++;
        snprintf(name, name_len, "a%d", id);
        tm_gtext_printf(&c->rules, "a%d ::= %s\n", id, body.s ? body.s : "\"\"");
    }
    tm_gtext_free(&body);
    return 0;
}

static int emit_array(js *c, const json_t *s, tm_gtext *out) {
    json_t *items = json_object_get(s, "items"), *prefix = json_object_get(s, "prefixItems");
    long long lo = 0, hi = -1;
    int rc;
    if ((rc = get_count(c, s, "minItems", &lo)) || (rc = get_count(c, s, "maxItems", &hi))) return rc;
    if (hi >= 0 && hi < lo) return invalid(c, "%s", "maxItems is below minItems");
    if (prefix && !json_is_array(prefix)) return invalid(c, "'%s' must be a list", "prefixItems");
    if (json_is_array(items)) return unsupported(c, "%s", "'items' as a list (draft 4 tuples; use prefixItems)");
    long long k = prefix ? (long long)json_array_size(prefix) : 0;
    if (json_is_false(items)) hi = hi < 0 || hi > k ? k : hi;
    if (lo > TM_SCHEMA_MAX_LEN) {
        char what[48];
        snprintf(what, sizeof what, "minItems above %d", TM_SCHEMA_MAX_LEN);
        return unsupported(c, "%s", what);
    }
    if (hi > TM_SCHEMA_MAX_LEN) hi = TM_SCHEMA_MAX_LEN; /* a subset: at most this many */
    if (hi >= 0 && lo > hi) return invalid(c, "%s", "no array length satisfies the bounds");
    char item[32] = "";
    if (!json_is_false(items) && (hi < 0 || hi > k) && (rc = item_rule(c, items, item, sizeof item))) return rc;
    /* Elements 1..: prefix ones first, then items. Element i (0-based) is mandatory when
     * i < lo; each optional element closes one nested group. */
    tm_gtext_printf(out, "( \"[\"%s", ws(c));
    int open = 0;
    long long limit = hi < 0 ? k : hi < k ? hi : k;
    for (long long i = 0; i < limit; i++) {
        if (i >= lo) tm_gtext_puts(out, "("), open++;
        if (i) tm_gtext_printf(out, " \",\"%s", ws(c));
        tm_gtext_puts(out, " ");
        if ((rc = emit(c, json_array_get(prefix, (size_t)i), out))) return rc;
        tm_gtext_puts(out, " ");
    }
    if (item[0]) {
        long long need = lo > k ? lo - k : 0; /* items after the prefix */
        long long most = hi < 0 ? -1 : hi - k;
        if (k == 0) { /* the first element carries no comma */
            if (need == 0) tm_gtext_puts(out, "("), open++;
            tm_gtext_printf(out, " %s", item);
            if (need > 0) need--;
            if (most > 0) most--;
            if (most < 0) tm_gtext_printf(out, " ( \",\"%s%s ){%lld,}", ws(c), item, need);
            else if (most > 0 || need > 0) tm_gtext_printf(out, " ( \",\"%s%s ){%lld,%lld}", ws(c), item, need, most);
        } else {
            if (most < 0) tm_gtext_printf(out, " ( \",\"%s%s ){%lld,}", ws(c), item, need);
            else if (most > 0) tm_gtext_printf(out, " ( \",\"%s%s ){%lld,%lld}", ws(c), item, need, most);
        }
    }
    for (int i = 0; i < open; i++) tm_gtext_puts(out, ")?");
    tm_gtext_printf(out, "%s\"]\" )", ws(c));
    return 0;
}

/* ---- combinators and dispatch ---- */

/* The JSON types a schema's instances can have, as bits (object, array, string, number,
 * boolean, null); integer counts as number. 0x3F when unknown. */
static unsigned types_of(const json_t *s) {
    static const char *const names[] = {"object", "array", "string", "number", "boolean", "null", "integer"};
    json_t *t = json_object_get(s, "type"), *e = json_object_get(s, "enum"), *k = json_object_get(s, "const");
    unsigned bits = 0;
    if (k || e) {
        json_t *list = k ? NULL : e;
        size_t n = k ? 1 : json_array_size(list);
        for (size_t i = 0; i < n; i++) {
            json_t *v = k ? k : json_array_get(list, i);
            bits |= json_is_object(v) ? 1 : json_is_array(v) ? 2 : json_is_string(v) ? 4 : json_is_number(v) ? 8
                    : json_is_boolean(v) ? 16 : 32;
        }
        return bits;
    }
    if (!t) return 0x3F;
    size_t n = json_is_array(t) ? json_array_size(t) : 1;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_is_array(t) ? json_array_get(t, i) : t;
        for (int j = 0; j < 7; j++)
            if (json_is_string(x) && !strcmp(json_string_value(x), names[j])) bits |= 1u << (j == 6 ? 3 : j);
    }
    return bits;
}

/* A required property that is const (or a one-value enum) in every branch, with distinct
 * values, makes object branches disjoint (a tagged union). */
static int tagged_union(const json_t *branches) {
    const json_t *b0 = json_array_get(branches, 0);
    json_t *props0 = json_object_get(b0, "properties");
    const char *tag;
    json_t *ts;
    json_object_foreach(props0, tag, ts) {
        int ok = 1;
        for (size_t i = 0; i < json_array_size(branches) && ok; i++) {
            json_t *bi = json_array_get(branches, i);
            json_t *pi = json_object_get(json_object_get(bi, "properties"), tag);
            json_t *v = json_object_get(pi, "const");
            json_t *e = json_object_get(pi, "enum");
            if (!v && json_is_array(e) && json_array_size(e) == 1) v = json_array_get(e, 0);
            ok = v && in_required(json_object_get(bi, "required"), tag);
            for (size_t j = 0; j < i && ok; j++) {
                json_t *pj = json_object_get(json_object_get(json_array_get(branches, j), "properties"), tag);
                json_t *w = json_object_get(pj, "const");
                if (!w) w = json_array_get(json_object_get(pj, "enum"), 0);
                ok = !json_equal(v, w);
            }
        }
        if (ok) return 1;
    }
    return 0;
}

static int emit_alternatives(js *c, const json_t *list, const char *kw, tm_gtext *out) {
    if (!json_is_array(list) || json_array_size(list) == 0) return invalid(c, "'%s' must be a non-empty list", kw);
    tm_gtext_puts(out, "(");
    size_t i;
    json_t *b;
    json_array_foreach(list, i, b) {
        if (i) tm_gtext_puts(out, " | ");
        int rc = emit(c, b, out);
        if (rc) return rc;
    }
    tm_gtext_puts(out, ")");
    return 0;
}

/* $ref: a rule per distinct target, written later (so recursion only names it). */
static int emit_ref(js *c, const json_t *ref, tm_gtext *out) {
    if (!json_is_string(ref)) return invalid(c, "'%s' must be a string", "$ref");
    const char *r = json_string_value(ref);
    for (int i = 0; i < c->n_refs; i++)
        if (!strcmp(c->refs[i].ptr, r)) {
            tm_gtext_printf(out, "d%d", c->refs[i].id);
            return 0;
        }
    if (r[0] != '#') return unsupported(c, "$ref to another document ('%.80s')", r);
    /* JSON pointer: /-separated, ~1 is '/', ~0 is '~' */
    const json_t *t = c->root;
    const char *p = r + 1;
    while (*p == '/' && t) {
        p++;
        char seg[256];
        size_t n = 0;
        while (*p && *p != '/' && n + 1 < sizeof seg) {
            if (p[0] == '~' && p[1] == '1') seg[n++] = '/', p += 2;
            else if (p[0] == '~' && p[1] == '0') seg[n++] = '~', p += 2;
            else seg[n++] = *p++;
        }
        seg[n] = 0;
        if (json_is_array(t)) t = json_array_get(t, (size_t)strtoul(seg, NULL, 10));
        else t = json_object_get(t, seg);
    }
    if (!t || *p) return invalid(c, "$ref '%.80s' points at nothing", r);
    if (c->n_refs == c->cap_refs) {
        int cap = c->cap_refs ? 2 * c->cap_refs : 8;
        ref_rule *rr = realloc(c->refs, (size_t)cap * sizeof *rr);
        if (!rr) return TM_ENOMEM;
        c->refs = rr;
        c->cap_refs = cap;
    }
    ref_rule *e = &c->refs[c->n_refs++];
    e->ptr = strdup(r);
    e->target = t;
    e->id = c->next_id++;
    if (!e->ptr) return TM_ENOMEM;
    tm_gtext_printf(out, "d%d", e->id);
    return 0;
}

/* Annotations and keywords that belong to other types are fine beside a combinator;
 * these would add a constraint the combinator's output does not honour. */
static int check_siblings(js *c, const json_t *s, const char *kw) {
    static const char *const constraining[] = {"type", "properties", "items", "enum", "const", "anyOf",
                                               "oneOf", "allOf", "$ref", "pattern", "format", "minimum",
                                               "maximum", "minLength", "maxLength", "required"};
    for (size_t i = 0; i < TM_ARRAY_LEN(constraining); i++)
        if (strcmp(constraining[i], kw) && json_object_get(s, constraining[i])) {
            if (!strcmp(constraining[i], "type") && types_of(s) == 0x3F) continue;
            char what[96];
            snprintf(what, sizeof what, "'%s' together with '%s'", kw, constraining[i]);
            return unsupported(c, "%s", what);
        }
    return 0;
}

static int emit_typed(js *c, const json_t *s, const char *type, tm_gtext *out) {
    if (!strcmp(type, "string")) return emit_string(c, s, out);
    if (!strcmp(type, "integer")) return emit_number(c, s, 1, out);
    if (!strcmp(type, "number")) return emit_number(c, s, 0, out);
    if (!strcmp(type, "boolean")) return tm_gtext_puts(out, "( \"true\" | \"false\" )"), 0;
    if (!strcmp(type, "null")) return tm_gtext_puts(out, "\"null\""), 0;
    if (!strcmp(type, "object")) return emit_object(c, s, out);
    if (!strcmp(type, "array")) return emit_array(c, s, out);
    return invalid(c, "unknown type '%.60s'", type);
}

/* Without "type", the keywords say which types are constrained; the others are free. */
static int emit_untyped(js *c, const json_t *s, tm_gtext *out) {
    static const char *const obj[] = {"properties", "required", "additionalProperties"};
    static const char *const arr[] = {"items", "prefixItems", "minItems", "maxItems"};
    static const char *const str[] = {"pattern", "format", "minLength", "maxLength"};
    static const char *const num[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"};
    int has[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < TM_ARRAY_LEN(obj); i++) has[0] |= json_object_get(s, obj[i]) != NULL;
    for (size_t i = 0; i < TM_ARRAY_LEN(arr); i++) has[1] |= json_object_get(s, arr[i]) != NULL;
    for (size_t i = 0; i < TM_ARRAY_LEN(str); i++) has[2] |= json_object_get(s, str[i]) != NULL;
    for (size_t i = 0; i < TM_ARRAY_LEN(num); i++) has[3] |= json_object_get(s, num[i]) != NULL;
    if (!has[0] && !has[1] && !has[2] && !has[3]) {
        c->uses |= USE_VALUE;
        tm_gtext_puts(out, "value");
        return 0;
    }
    /* Only the constrained types are generated: a subset of the valid instances. */
    static const char *const names[] = {"object", "array", "string", "number"};
    tm_gtext_puts(out, "(");
    for (int i = 0, alts = 0; i < 4; i++) {
        if (!has[i]) continue;
        if (alts++) tm_gtext_puts(out, " | ");
        int rc = emit_typed(c, s, names[i], out);
        if (rc) return rc;
    }
    tm_gtext_puts(out, ")");
    return 0;
}

static int emit(js *c, const json_t *s, tm_gtext *out) {
    if (json_is_true(s)) {
        c->uses |= USE_VALUE;
        tm_gtext_puts(out, "value");
        return 0;
    }
    if (json_is_false(s)) return invalid(c, "%s", "a schema 'false' admits no value here");
    if (!json_is_object(s)) return invalid(c, "%s", "a schema must be an object or a boolean");
    if (++c->depth > TM_SCHEMA_MAX_DEPTH) return unsupported(c, "%s", "schemas nested over 64 deep");
    int rc = check_refused(c, s);
    json_t *v;
    if (rc) {
    } else if ((v = json_object_get(s, "$ref"))) {
        rc = check_siblings(c, s, "$ref");
        if (!rc) rc = emit_ref(c, v, out);
    } else if ((v = json_object_get(s, "allOf"))) {
        if (!json_is_array(v) || json_array_size(v) != 1)
            rc = unsupported(c, "%s", "'allOf' with more than one schema");
        else if (!(rc = check_siblings(c, s, "allOf")))
            rc = emit(c, json_array_get(v, 0), out);
    } else if ((v = json_object_get(s, "anyOf"))) {
        if (!(rc = check_siblings(c, s, "anyOf"))) rc = emit_alternatives(c, v, "anyOf", out);
    } else if ((v = json_object_get(s, "oneOf"))) {
        /* oneOf is anyOf when no instance can match two branches. */
        unsigned seen = 0;
        int disjoint = json_is_array(v);
        for (size_t i = 0; disjoint && i < json_array_size(v); i++) {
            unsigned t = types_of(json_array_get(v, i));
            disjoint = !(t & seen);
            seen |= t;
        }
        if (!disjoint && json_is_array(v) && (types_of(json_array_get(v, 0)) & 1) && tagged_union(v)) disjoint = 1;
        if (!disjoint) rc = unsupported(c, "%s", "'oneOf' whose branches can overlap (use anyOf)");
        else if (!(rc = check_siblings(c, s, "oneOf"))) rc = emit_alternatives(c, v, "oneOf", out);
    } else if ((v = json_object_get(s, "const"))) {
        rc = put_json_literal(c, v, out);
    } else if ((v = json_object_get(s, "enum"))) {
        rc = emit_enum(c, v, out);
    } else if ((v = json_object_get(s, "type"))) {
        if (json_is_string(v)) {
            rc = emit_typed(c, s, json_string_value(v), out);
        } else if (json_is_array(v) && json_array_size(v) > 0) {
            tm_gtext_puts(out, "(");
            for (size_t i = 0; i < json_array_size(v) && !rc; i++) {
                json_t *t = json_array_get(v, i);
                if (!json_is_string(t)) rc = invalid(c, "%s", "'type' must name types");
                else {
                    if (i) tm_gtext_puts(out, " | ");
                    rc = emit_typed(c, s, json_string_value(t), out);
                }
            }
            tm_gtext_puts(out, ")");
        } else {
            rc = invalid(c, "%s", "'type' must be a string or a non-empty list");
        }
    } else {
        rc = emit_untyped(c, s, out);
    }
    c->depth--;
    return rc;
}

/* ---- the document ---- */

static void shared_rules(js *c, tm_gtext *g) {
    if (c->uses & USE_VALUE) c->uses |= USE_STRING | USE_NUMBER;
    if (c->uses & USE_STRING) tm_gtext_puts(g, "string ::= \"\\\"\" " STR_CHAR "* \"\\\"\"\n");
    if (c->uses & USE_NUMBER)
        tm_gtext_puts(g, "number ::= \"-\"? ( \"0\" | [1-9] [0-9]{0,14} ) ( \".\" [0-9]{1,15} )? "
                         "( [eE] [-+]? [0-9]{1,2} )?\n");
    if (c->uses & USE_INTEGER) tm_gtext_puts(g, "integer ::= \"-\"? ( \"0\" | [1-9] [0-9]{0,14} )\n");
    if (c->uses & USE_VALUE) {
        tm_gtext_printf(g, "value ::= object | array | string | number | \"true\" | \"false\" | \"null\"\n");
        tm_gtext_printf(g, "object ::= \"{\"%s( string%svalue ( \",\"%sstring%svalue )* )?%s\"}\"\n", ws(c),
                        colon(c), ws(c), colon(c), ws(c));
        tm_gtext_printf(g, "array ::= \"[\"%s( value ( \",\"%svalue )* )?%s\"]\"\n", ws(c), ws(c), ws(c));
    }
}

int tm_json_schema_gbnf(const json_t *schema, int compact, char **gbnf, char *err, size_t err_len) {
    return tm_json_schema_gbnf_rule(schema, compact, "root", gbnf, err, err_len);
}

int tm_json_schema_gbnf_rule(const json_t *schema, int compact, const char *rule, char **gbnf, char *err,
                             size_t err_len) {
    *gbnf = NULL;
    js c;
    memset(&c, 0, sizeof c);
    c.root = schema;
    c.compact = compact;
    c.err = err;
    c.err_len = err_len;
    tm_gtext root = {0};
    tm_gtext_printf(&root, "%s ::= ", rule);
    int rc = emit(&c, schema, &root);
    tm_gtext_puts(&root, "\n");
    /* $ref targets, including those met while writing other targets. */
    for (int i = 0; i < c.n_refs && !rc; i++) {
        tm_gtext body = {0};
        rc = emit(&c, c.refs[i].target, &body);
        if (!rc) tm_gtext_printf(&c.rules, "d%d ::= %s\n", c.refs[i].id, body.s ? body.s : "\"\"");
        tm_gtext_free(&body);
    }
    if (!rc) {
        shared_rules(&c, &c.rules);
        tm_gtext_put(&root, c.rules.s ? c.rules.s : "", c.rules.n);
        if (root.oom || c.rules.oom) rc = TM_ENOMEM;
    }
    for (int i = 0; i < c.n_refs; i++) free(c.refs[i].ptr);
    free(c.refs);
    tm_gtext_free(&c.rules);
    if (rc) {
        tm_gtext_free(&root);
        if (rc == TM_ENOMEM) tm_fail(err, err_len, rc, "out of memory");
        return rc;
    }
    *gbnf = tm_gtext_take(&root);
    return *gbnf ? 0 : tm_fail(err, err_len, TM_ENOMEM, "out of memory");
}

int tm_json_object_gbnf(int compact, char **gbnf, char *err, size_t err_len) {
    json_t *s = json_pack("{s:s}", "type", "object");
    if (!s) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    int rc = tm_json_schema_gbnf(s, compact, gbnf, err, err_len);
    json_decref(s);
    return rc;
}

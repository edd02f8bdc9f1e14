/* json_schema.h - JSON Schema -> GBNF grammar text (docs/grammar.md) for structured
 * output: `response_format: json_schema`, vLLM's `structured_outputs.json`, and
 * `json_object` (any JSON object).
 *
 * Supported (OpenAI's structured-outputs subset and a little more): type (one or a
 * list), object properties / required / additionalProperties, arrays with items,
 * prefixItems, minItems / maxItems, enum, const, string / number / integer / boolean /
 * null, anyOf, oneOf whose branches cannot overlap, allOf of one schema, $ref into the
 * document ($defs, definitions, any JSON pointer; recursion allowed), string pattern,
 * format (date-time, date, time, duration, email, hostname, ipv4, ipv6, uuid, uri),
 * minLength / maxLength, minimum / maximum / exclusive bounds, integer multipleOf.
 * Annotations (title, description, default, examples, ...) are ignored.
 *
 * The output always validates against the schema; the grammar's language is a subset of
 * the valid instances: properties come in the schema's order, extra properties are not
 * generated unless the object has no named properties, whitespace is limited (at most
 * 16 characters of [ \t\n] after { [ , and before } ], one optional space after :),
 * numbers have at most 15 integer and 15 fraction digits, bounded decimals at most 6
 * fraction digits, strings and arrays at most TM_SCHEMA_MAX_LEN characters / items when
 * maxLength / maxItems is larger, \u escapes are not surrogates.
 *
 * Anything else that constrains an instance is refused with TM_EUNSUPPORTED and the
 * keyword in err (the API's 400), never ignored. Pure functions; any thread. */
#ifndef TM_JSON_SCHEMA_H
#define TM_JSON_SCHEMA_H

#include <stddef.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest string (characters) and array (items) the grammar spells out exactly. */
#define TM_SCHEMA_MAX_LEN 64

/* GBNF for instances of schema (borrowed). compact: no optional whitespace at all (vLLM's
 * disable_any_whitespace). *gbnf is malloc'd. TM_EUNSUPPORTED (a feature outside the
 * subset, named in err), TM_EINVAL (not a valid schema: wrong keyword types, dangling
 * $ref, a schema no value satisfies), TM_ENOMEM. */
int tm_json_schema_gbnf(const json_t *schema, int compact, char **gbnf, char *err, size_t err_len);

/* The same with the start rule named rule instead of "root" (to embed the schema in a
 * larger grammar: its other rules are named d<N>, o<N>-<K>, a<N>, m<N>, v<N>, string, number,
 * integer, value, object, array). */
int tm_json_schema_gbnf_rule(const json_t *schema, int compact, const char *rule, char **gbnf,
                             char *err, size_t err_len);

/* GBNF for any JSON object (response_format json_object). */
int tm_json_object_gbnf(int compact, char **gbnf, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif

/* JSON Schema to GBNF: response_format {"type": "json_schema"} becomes a
 * grammar (grammar.h) whose every sentence is a JSON document the schema
 * accepts. What can be enforced is compiled; what cannot is refused with a
 * message naming the keyword and where it is, never dropped quietly.
 *
 * Compiled: type (one or a list), properties with required (properties in
 * the schema's order; optional ones may be left out; no other properties
 * are generated, which every additionalProperties allows), enum, const,
 * anyOf, oneOf whose branches cannot both match (different types, or
 * distinct constants), allOf of one schema, items with minItems / maxItems,
 * minLength / maxLength, format date, time, date-time and uuid, integer
 * minimum / maximum (exclusive too) as a range of at most 2,000 values or a
 * lower bound of 0 or 1, number minimum 0, $ref to #/$defs/... or
 * #/definitions/... (recursive schemas included), true and {}.
 * Annotations (title, description, default, examples, $schema, $id,
 * $comment, strict) are ignored. Anything else is an error: pattern,
 * multipleOf, uniqueItems, prefixItems, contains, patternProperties,
 * min/maxProperties, not, if/then/else, dependent*, propertyNames, other
 * formats, wider numeric bounds, counts over 1,000, unknown keywords. */
#ifndef HERD_SAMPLING_JSON_SCHEMA_H
#define HERD_SAMPLING_JSON_SCHEMA_H

#include <jansson.h>

#include "herd/status.h"

/* Nesting of schemas (objects in arrays in ...) a schema may have. */
#define HERD_JSON_SCHEMA_MAX_DEPTH 64

/* Writes the GBNF of schema to *out (malloc'd, NUL-terminated; the caller
 * frees it). On error *out is NULL and err names the keyword and its path
 * ("properties.age.minimum: ..."). */
enum herd_status herd_json_schema_to_gbnf(const json_t *schema, char **out, struct herd_error *err);

/* The same schema as rules only, for a grammar that holds several (tool
 * calls): every rule name starts with prefix ([a-z0-9-], at most 16
 * characters), the schema's own rule is "<prefix>root", and the shared
 * rules they use (string, number, value, ws, ...) are not included: add
 * herd_json_schema_primitives() once. */
enum herd_status herd_json_schema_rules(const json_t *schema, const char *prefix, char **out, struct herd_error *err);
const char *herd_json_schema_primitives(void);

#endif

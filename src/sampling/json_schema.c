/* JSON Schema to GBNF (json_schema.h). Each schema becomes one rule "rN";
 * shared rules for strings, numbers, any value and whitespace are written
 * once at the end. Values carry no whitespace of their own: containers put
 * ws between their parts, and the root ends right after its value, so a
 * generation stops as soon as the document is complete. */
#include "sampling/json_schema.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

/* Bounds of what is compiled: repetition counts the grammar can hold, and
 * the integer ranges written out value by value. */
#define SCHEMA_MAX_COUNT     1000
#define SCHEMA_MAX_INT_RANGE 2000
#define SCHEMA_MAX_REFS      256
#define SCHEMA_MAX_BYTES     (4u << 20)

struct ref_rule {
    const char *ref; /* "#/$defs/x", into the schema */
    uint32_t rule;
};

struct conv {
    struct herd_buf out; /* the rules */
    const char *prefix;  /* of every rule name, so several schemas share a grammar */
    const json_t *root;
    char path[512]; /* where in the schema, for messages */
    uint32_t n_rules;
    struct ref_rule refs[SCHEMA_MAX_REFS];
    uint32_t n_refs;
    int depth;
    struct herd_error *err;
    enum herd_status rc;
};

static bool failf(struct conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool failf(struct conv *c, const char *fmt, ...) {
    if (c->rc != HERD_OK) return false;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->rc = herd_error_set(c->err, HERD_E_UNSUPPORTED, "json_schema%s%s: %s", c->path[0] ? " at " : "", c->path, msg);
    return false;
}

static bool put(struct herd_buf *b, const char *s) { return herd_buf_append(b, s, strlen(s)); }

static bool putf(struct herd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool putf(struct herd_buf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < sizeof tmp && herd_buf_append(b, tmp, (size_t)n);
}

/* bytes as a GBNF string literal: quotes, backslashes and control bytes
 * escaped; other UTF-8 as it is. */
static bool put_literal(struct herd_buf *b, const char *s, size_t n) {
    bool ok = put(b, "\"");
    for (size_t i = 0; ok && i < n; i++) {
        const unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            ok = putf(b, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7F)
            ok = putf(b, "\\x%02X", ch);
        else
            ok = herd_buf_append(b, s + i, 1);
    }
    return ok && put(b, "\"");
}

/* A JSON value's compact text as a literal (enum, const, property names). */
static bool put_json_literal(struct conv *c, struct herd_buf *b, const json_t *v) {
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) return failf(c, "out of memory");
    bool ok = put_literal(b, text, strlen(text));
    free(text);
    return ok;
}

/* Adds "rN ::= body" and returns N. */
static uint32_t new_rule(struct conv *c) { return c->n_rules++; }

static bool define(struct conv *c, uint32_t rule, const struct herd_buf *body) {
    if (!putf(&c->out, "%sr%u ::= ", c->prefix, rule) || !herd_buf_append(&c->out, body->data, body->len) ||
        !put(&c->out, "\n"))
        return failf(c, "the grammar grows past %u bytes", SCHEMA_MAX_BYTES);
    return true;
}

/* Keywords that only annotate: ignored wherever they are. */
static bool annotation(const char *k) {
    static const char *const names[] = {"title",    "description", "default",    "examples", "$schema",
                                        "$id",      "$comment",    "strict",     "$defs",    "definitions",
                                        "readOnly", "writeOnly",   "deprecated", NULL};
    for (int i = 0; names[i]; i++)
        if (strcmp(k, names[i]) == 0) return true;
    return false;
}

static bool in_list(const char *k, const char *const *list) {
    for (int i = 0; list[i]; i++)
        if (strcmp(k, list[i]) == 0) return true;
    return false;
}

/* Every keyword of s is an annotation or in allowed; else an error naming
 * the first other one. */
static bool only(struct conv *c, const json_t *s, const char *const *allowed, const char *what) {
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)s, k, v) {
        (void)v;
        if (!annotation(k) && !in_list(k, allowed)) {
            static const char *const known[] = {"pattern",
                                                "multipleOf",
                                                "uniqueItems",
                                                "prefixItems",
                                                "contains",
                                                "patternProperties",
                                                "minProperties",
                                                "maxProperties",
                                                "not",
                                                "if",
                                                "then",
                                                "else",
                                                "dependentRequired",
                                                "dependentSchemas",
                                                "dependencies",
                                                "propertyNames",
                                                "unevaluatedProperties",
                                                "unevaluatedItems",
                                                "minContains",
                                                "maxContains",
                                                "contentEncoding",
                                                "contentMediaType",
                                                NULL};
            if (in_list(k, known)) return failf(c, "'%s' cannot be enforced while generating (%s)", k, what);
            return failf(c, "unknown or unsupported keyword '%s' (%s)", k, what);
        }
    }
    return true;
}

/* Appends seg (".items", ".anyOf[2]") to the path; returns where it was
 * cut, to put back after the call. */
static size_t path_push(struct conv *c, const char *seg) {
    const size_t at = strlen(c->path);
    snprintf(c->path + at, sizeof c->path - at, "%s", seg);
    return at;
}

static bool schema(struct conv *c, const json_t *s, uint32_t *rule);

/* ------------------------------------------------------------ primitives */

static const char PRIMITIVES[] =
    "ws ::= ([ \\t] | \"\\n\" [ \\t]{0,20})?\n"
    "char ::= [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n"
    "string ::= \"\\\"\" char* \"\\\"\"\n"
    "integer ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15})\n"
    "number ::= integer (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?\n"
    "nonneg-integer ::= \"0\" | [1-9] [0-9]{0,15}\n"
    "pos-integer ::= [1-9] [0-9]{0,15}\n"
    "nonneg-number ::= nonneg-integer (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?\n"
    "boolean ::= \"true\" | \"false\"\n"
    "null ::= \"null\"\n"
    "value ::= object | array | string | number | boolean | null\n"
    "object ::= \"{\" ws ( string ws \":\" ws value ws (\",\" ws string ws \":\" ws value ws)* )? \"}\"\n"
    "array ::= \"[\" ws ( value ws (\",\" ws value ws)* )? \"]\"\n"
    "date ::= [0-9]{4} \"-\" (\"0\" [1-9] | \"1\" [0-2]) \"-\" (\"0\" [1-9] | [12] [0-9] | \"3\" [01])\n"
    "time ::= ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9] \":\" [0-5] [0-9] (\".\" [0-9]{1,6})? "
    "(\"Z\" | [+-] ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9])\n"
    "hex ::= [0-9a-fA-F]\n"
    "uuid ::= hex{8} \"-\" hex{4} \"-\" hex{4} \"-\" hex{4} \"-\" hex{12}\n";

/* ---------------------------------------------------------------- types */

static bool get_count(struct conv *c, const json_t *s, const char *key, long long *v, long long dflt) {
    const json_t *j = json_object_get(s, key);
    *v = dflt;
    if (!j) return true;
    if (!json_is_integer(j) || json_integer_value(j) < 0) return failf(c, "'%s' must be a non-negative integer", key);
    *v = json_integer_value(j);
    if (*v > SCHEMA_MAX_COUNT)
        return failf(c, "'%s' %lld: counts above %d are not enforced", key, *v, SCHEMA_MAX_COUNT);
    return true;
}

static bool type_string(struct conv *c, const json_t *s, struct herd_buf *b) {
    static const char *const kw[] = {"type", "minLength", "maxLength", "format", NULL};
    if (!only(c, s, kw, "string")) return false;
    long long lo, hi;
    if (!get_count(c, s, "minLength", &lo, 0) || !get_count(c, s, "maxLength", &hi, -1)) return false;
    if (hi >= 0 && hi < lo) return failf(c, "maxLength %lld is below minLength %lld", hi, lo);
    const json_t *f = json_object_get(s, "format");
    if (f) {
        if (!json_is_string(f)) return failf(c, "'format' must be a string");
        const char *fmt = json_string_value(f);
        if (json_object_get(s, "minLength") || json_object_get(s, "maxLength"))
            return failf(c, "a 'format' with minLength / maxLength is not enforced");
        if (strcmp(fmt, "date") == 0) return put(b, "\"\\\"\" date \"\\\"\"");
        if (strcmp(fmt, "time") == 0) return put(b, "\"\\\"\" time \"\\\"\"");
        if (strcmp(fmt, "date-time") == 0) return put(b, "\"\\\"\" date \"T\" time \"\\\"\"");
        if (strcmp(fmt, "uuid") == 0) return put(b, "\"\\\"\" uuid \"\\\"\"");
        return failf(c, "format '%s' is not enforced (date, time, date-time, uuid are)", fmt);
    }
    if (lo == 0 && hi < 0) return put(b, "string");
    if (hi < 0) return putf(b, "\"\\\"\" char{%lld,} \"\\\"\"", lo);
    return putf(b, "\"\\\"\" char{%lld,%lld} \"\\\"\"", lo, hi);
}

/* An integer bound: minimum / maximum and their exclusive forms, as the
 * integers allowed. */
static bool int_bounds(struct conv *c, const json_t *s, bool *has_lo, long long *lo, bool *has_hi, long long *hi) {
    static const struct {
        const char *key;
        bool upper, exclusive;
    } b[] = {{"minimum", false, false},
             {"exclusiveMinimum", false, true},
             {"maximum", true, false},
             {"exclusiveMaximum", true, true}};
    *has_lo = *has_hi = false;
    for (size_t i = 0; i < 4; i++) {
        const json_t *j = json_object_get(s, b[i].key);
        if (!j) continue;
        if (!json_is_number(j)) return failf(c, "'%s' must be a number", b[i].key);
        const double v = json_number_value(j);
        if (fabs(v) > 1e15) return failf(c, "'%s' %g is beyond the integers herd writes", b[i].key, v);
        long long x;
        if (b[i].upper)
            x = b[i].exclusive ? (long long)ceil(v) - 1 : (long long)floor(v);
        else
            x = b[i].exclusive ? (long long)floor(v) + 1 : (long long)ceil(v);
        if (b[i].upper) {
            if (!*has_hi || x < *hi) *hi = x;
            *has_hi = true;
        } else {
            if (!*has_lo || x > *lo) *lo = x;
            *has_lo = true;
        }
    }
    return true;
}

static bool type_integer(struct conv *c, const json_t *s, struct herd_buf *b) {
    static const char *const kw[] = {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", NULL};
    if (!only(c, s, kw, "integer")) return false;
    bool has_lo, has_hi;
    long long lo = 0, hi = 0;
    if (!int_bounds(c, s, &has_lo, &lo, &has_hi, &hi)) return false;
    if (!has_lo && !has_hi) return put(b, "integer");
    if (has_lo && has_hi) {
        if (hi < lo) return failf(c, "no integer lies between the minimum and the maximum");
        if (hi - lo > SCHEMA_MAX_INT_RANGE)
            return failf(c,
                         "an integer range of %lld values is not enforced (at most %d, or a minimum of 0 or 1 alone)",
                         hi - lo + 1, SCHEMA_MAX_INT_RANGE);
        bool ok = put(b, "(");
        for (long long v = lo; ok && v <= hi; v++) ok = putf(b, "%s\"%lld\"", v == lo ? "" : " | ", v);
        return ok && put(b, ")");
    }
    if (has_lo && lo == 0) return put(b, "nonneg-integer");
    if (has_lo && lo == 1) return put(b, "pos-integer");
    return failf(c, "an integer bound other than a range or a minimum of 0 or 1 is not enforced");
}

static bool type_number(struct conv *c, const json_t *s, struct herd_buf *b) {
    static const char *const bounds[] = {"maximum", "exclusiveMinimum", "exclusiveMaximum", NULL};
    for (int i = 0; bounds[i]; i++)
        if (json_object_get(s, bounds[i]))
            return failf(c, "'%s' on a number is not enforced (a minimum of 0 is; or use an integer range)", bounds[i]);
    static const char *const kw[] = {"type", "minimum", NULL};
    if (!only(c, s, kw, "number")) return false;
    const json_t *m = json_object_get(s, "minimum");
    if (!m) return put(b, "number");
    if (!json_is_number(m) || json_number_value(m) != 0)
        return failf(c, "a number minimum other than 0 is not enforced (use an integer range)");
    return put(b, "nonneg-number");
}

static bool type_array(struct conv *c, const json_t *s, struct herd_buf *b) {
    static const char *const kw[] = {"type", "items", "minItems", "maxItems", NULL};
    if (!only(c, s, kw, "array")) return false;
    long long lo, hi;
    if (!get_count(c, s, "minItems", &lo, 0) || !get_count(c, s, "maxItems", &hi, -1)) return false;
    if (hi >= 0 && hi < lo) return failf(c, "maxItems %lld is below minItems %lld", hi, lo);
    char item[32] = "value";
    const json_t *it = json_object_get(s, "items");
    if (it) {
        if (!json_is_object(it) && !json_is_boolean(it)) return failf(c, "'items' must be a schema");
        uint32_t r = 0;
        const size_t at = path_push(c, ".items");
        bool ok = schema(c, it, &r);
        c->path[at] = 0;
        if (!ok) return false;
        snprintf(item, sizeof item, "%.16sr%u", c->prefix, r);
    }
    if (hi == 0) return put(b, "\"[\" ws \"]\"");
    char more[64];
    if (hi < 0)
        snprintf(more, sizeof more, "{%lld,}", lo > 0 ? lo - 1 : 0);
    else
        snprintf(more, sizeof more, "{%lld,%lld}", lo > 0 ? lo - 1 : 0, hi - 1);
    if (lo == 0) return putf(b, "\"[\" ws ( %s ws (\",\" ws %s ws)%s )? \"]\"", item, item, more);
    return putf(b, "\"[\" ws %s ws (\",\" ws %s ws)%s \"]\"", item, item, more);
}

/* Objects: the properties in order, required ones always, optional ones
 * maybe, commas between. s_i_f / s_i_n are "properties i.. with nothing /
 * something written before" (two rules per property: linear size). */
static bool type_object(struct conv *c, const json_t *s, struct herd_buf *b) {
    static const char *const kw[] = {"type", "properties", "required", "additionalProperties", NULL};
    if (!only(c, s, kw, "object")) return false;
    const json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    const json_t *add = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props)) return failf(c, "'properties' must be an object");
    if (req && !json_is_array(req)) return failf(c, "'required' must be an array of names");
    if (add && !json_is_boolean(add) && !json_is_object(add))
        return failf(c, "'additionalProperties' must be a schema");
    /* the keys in order: properties, then required names not among them */
    const size_t n_props = props ? json_object_size(props) : 0, n_req = req ? json_array_size(req) : 0;
    if (n_props + n_req > SCHEMA_MAX_COUNT) return failf(c, "more than %d properties", SCHEMA_MAX_COUNT);
    if (!props && !req && !add) return put(b, "object");
    if (!props && !req) {
        if (json_is_true(add) || (json_is_object(add) && json_object_size(add) == 0)) return put(b, "object");
        /* additionalProperties false (or a schema) and no properties: {} is valid for both */
        return put(b, "\"{\" ws \"}\"");
    }
    const size_t n = n_props + n_req;
    const char **keys = calloc(n ? n : 1, sizeof *keys);
    bool *required = calloc(n ? n : 1, sizeof *required);
    uint32_t *value = calloc(n ? n : 1, sizeof *value);
    bool ok = keys && required && value;
    size_t k = 0;
    if (ok && props) {
        const char *key;
        const json_t *ps;
        json_object_foreach((json_t *)props, key, ps) keys[k++] = key;
    }
    for (size_t i = 0; ok && i < n_req; i++) {
        const json_t *name = json_array_get(req, i);
        if (!json_is_string(name)) {
            ok = failf(c, "'required' must be an array of names");
            break;
        }
        size_t j = 0;
        while (j < k && strcmp(keys[j], json_string_value(name)) != 0) j++;
        if (j == k) keys[k++] = json_string_value(name);
        required[j] = true;
    }
    /* each key's value schema */
    for (size_t i = 0; ok && i < k; i++) {
        const json_t *ps = props ? json_object_get(props, keys[i]) : NULL;
        if (!ps) {
            value[i] = UINT32_MAX; /* required but not described: any value */
            continue;
        }
        if (!json_is_object(ps) && !json_is_boolean(ps)) {
            ok = failf(c, "property '%s' must be a schema", keys[i]);
            break;
        }
        char seg[160];
        snprintf(seg, sizeof seg, ".properties.%.140s", keys[i] ? keys[i] : "");
        const size_t at = path_push(c, seg);
        ok = schema(c, ps, &value[i]);
        c->path[at] = 0;
    }
    /* the chain of rules, from the last property back */
    const uint32_t base = c->n_rules;
    c->n_rules += 2 * (uint32_t)(k + 1);
    for (size_t j = k + 1; ok && j > 0; j--) {
        const size_t i = j - 1;
        for (int first = 0; ok && first < 2; first++) {
            struct herd_buf body;
            herd_buf_init(&body, SCHEMA_MAX_BYTES);
            const uint32_t me = base + 2 * (uint32_t)i + (uint32_t)first;
            if (i == k) {
                ok = put(&body, "\"\"");
            } else {
                /* this property, then the rest with something before */
                struct herd_buf kv;
                herd_buf_init(&kv, SCHEMA_MAX_BYTES);
                json_t *ks = json_string(keys[i]);
                char *key = ks ? json_dumps(ks, JSON_ENCODE_ANY) : NULL;
                json_decref(ks);
                ok = key && put(&kv, first ? "" : "\",\" ws ") && put_literal(&kv, key, strlen(key)) &&
                     (value[i] == UINT32_MAX ? put(&kv, " ws \":\" ws value ws")
                                             : putf(&kv, " ws \":\" ws %sr%u ws", c->prefix, value[i])) &&
                     putf(&kv, " %sr%u", c->prefix, base + 2 * (uint32_t)(i + 1));
                free(key);
                if (ok && required[i]) {
                    ok = herd_buf_append(&body, kv.data, kv.len);
                } else if (ok) {
                    /* present, or skipped with the rest as it was */
                    ok = put(&body, "(") && herd_buf_append(&body, kv.data, kv.len) &&
                         putf(&body, ") | %sr%u", c->prefix, base + 2 * (uint32_t)(i + 1) + (uint32_t)first);
                }
                herd_buf_cleanup(&kv);
            }
            ok = ok && define(c, me, &body);
            herd_buf_cleanup(&body);
        }
    }
    ok = ok && putf(b, "\"{\" ws %sr%u \"}\"", c->prefix, base + 1);
    if (!ok && c->rc == HERD_OK) failf(c, "out of memory");
    free(keys);
    free(required);
    free(value);
    return ok;
}

static bool type_named(struct conv *c, const json_t *s, const char *t, struct herd_buf *b) {
    if (strcmp(t, "string") == 0) return type_string(c, s, b);
    if (strcmp(t, "integer") == 0) return type_integer(c, s, b);
    if (strcmp(t, "number") == 0) return type_number(c, s, b);
    if (strcmp(t, "boolean") == 0)
        return only(c, s, (const char *const[]){"type", NULL}, "boolean") && put(b, "boolean");
    if (strcmp(t, "null") == 0) return only(c, s, (const char *const[]){"type", NULL}, "null") && put(b, "null");
    if (strcmp(t, "array") == 0) return type_array(c, s, b);
    if (strcmp(t, "object") == 0) return type_object(c, s, b);
    return failf(c, "unknown type '%s'", t);
}

/* The schema's type when it gives none, from its keywords; NULL: any. */
static const char *implied_type(struct conv *c, const json_t *s, bool *ok) {
    static const char *const obj[] = {"properties", "required", "additionalProperties", NULL};
    static const char *const arr[] = {"items", "minItems", "maxItems", NULL};
    static const char *const str[] = {"minLength", "maxLength", "format", NULL};
    static const char *const num[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", NULL};
    static const char *const *const groups[] = {obj, arr, str, num};
    static const char *const names[] = {"object", "array", "string", "number"};
    const char *found = NULL;
    *ok = true;
    for (int g = 0; g < 4; g++)
        for (int i = 0; groups[g][i]; i++)
            if (json_object_get(s, groups[g][i])) {
                if (found && found != names[g]) {
                    *ok = failf(c, "keywords of several types without a 'type'");
                    return NULL;
                }
                found = names[g];
            }
    return found;
}

/* ------------------------------------------------------------ combinators */

static bool alternatives(struct conv *c, const json_t *list, const char *kw, struct herd_buf *b) {
    if (!json_is_array(list) || json_array_size(list) == 0) return failf(c, "'%s' must be a non-empty array", kw);
    bool ok = put(b, "(");
    for (size_t i = 0; ok && i < json_array_size(list); i++) {
        uint32_t r = 0;
        char seg[64];
        snprintf(seg, sizeof seg, ".%s[%zu]", kw, i);
        const size_t at = path_push(c, seg);
        ok = schema(c, json_array_get(list, i), &r);
        c->path[at] = 0;
        ok = ok && putf(b, "%s%sr%u", i ? " | " : "", c->prefix, r);
    }
    return ok && put(b, ")");
}

/* oneOf is anyOf when no document can match two branches: here, when the
 * branches have distinct single types (integer and number overlap), or
 * are all distinct constants. */
static bool one_of_disjoint(const json_t *list) {
    const size_t n = json_array_size(list);
    bool types = true, consts = true;
    for (size_t i = 0; i < n; i++) {
        const json_t *a = json_array_get(list, i);
        const json_t *ta = json_is_object(a) ? json_object_get(a, "type") : NULL;
        const json_t *ca = json_is_object(a) ? json_object_get(a, "const") : NULL;
        if (!json_is_string(ta)) types = false;
        if (!ca) consts = false;
        for (size_t j = 0; j < i; j++) {
            const json_t *b = json_array_get(list, j);
            const json_t *tb = json_object_get(b, "type"), *cb = json_object_get(b, "const");
            if (types && json_is_string(tb)) {
                const char *x = json_string_value(ta), *y = json_string_value(tb);
                const bool numeric = (strcmp(x, "integer") == 0 || strcmp(x, "number") == 0) &&
                                     (strcmp(y, "integer") == 0 || strcmp(y, "number") == 0);
                if (strcmp(x, y) == 0 || numeric) types = false;
            }
            if (consts && cb && json_equal((json_t *)ca, (json_t *)cb)) consts = false;
        }
    }
    return types || consts;
}

static const json_t *resolve_ref(struct conv *c, const char *ref) {
    if (strcmp(ref, "#") == 0) return c->root;
    static const char *const prefixes[] = {"#/$defs/", "#/definitions/"};
    for (int i = 0; i < 2; i++) {
        const size_t n = strlen(prefixes[i]);
        if (strncmp(ref, prefixes[i], n) == 0) {
            const json_t *defs = json_object_get(c->root, i == 0 ? "$defs" : "definitions");
            const json_t *d = defs ? json_object_get(defs, ref + n) : NULL;
            if (d) return d;
        }
    }
    failf(c, "'$ref' %s does not name an entry of #/$defs or #/definitions", ref);
    return NULL;
}

/* -------------------------------------------------------------- a schema */

static bool schema_body(struct conv *c, const json_t *s, struct herd_buf *b) {
    if (json_is_true(s)) return put(b, "value");
    if (json_is_false(s)) return failf(c, "the schema 'false' allows nothing");
    if (!json_is_object(s)) return failf(c, "a schema must be an object or a boolean");
    const json_t *ref = json_object_get(s, "$ref");
    if (ref) {
        static const char *const kw[] = {"$ref", NULL};
        if (!json_is_string(ref)) return failf(c, "'$ref' must be a string");
        if (!only(c, s, kw, "beside '$ref'")) return false;
        for (uint32_t i = 0; i < c->n_refs; i++)
            if (strcmp(c->refs[i].ref, json_string_value(ref)) == 0)
                return putf(b, "%sr%u", c->prefix, c->refs[i].rule);
        const json_t *target = resolve_ref(c, json_string_value(ref));
        if (!target) return false;
        if (c->n_refs == SCHEMA_MAX_REFS) return failf(c, "more than %d distinct '$ref's", SCHEMA_MAX_REFS);
        /* registered before compiling, so a recursive reference finds it */
        const uint32_t r = new_rule(c);
        c->refs[c->n_refs++] = (struct ref_rule){json_string_value(ref), r};
        struct herd_buf body;
        herd_buf_init(&body, SCHEMA_MAX_BYTES);
        bool ok = schema_body(c, target, &body) && define(c, r, &body);
        herd_buf_cleanup(&body);
        return ok && putf(b, "%sr%u", c->prefix, r);
    }
    static const char *const combinators[] = {"anyOf", "oneOf", "allOf"};
    for (int i = 0; i < 3; i++) {
        const json_t *list = json_object_get(s, combinators[i]);
        if (!list) continue;
        const char *const kw[] = {combinators[i], NULL};
        if (!only(c, s, kw, "beside a combinator: put them inside its branches")) return false;
        if (i == 1 && !one_of_disjoint(list))
            return failf(c, "'oneOf' whose branches may overlap is not enforced (branches of distinct types or "
                            "distinct consts are; use anyOf)");
        if (i == 2) {
            if (!json_is_array(list) || json_array_size(list) != 1)
                return failf(c, "'allOf' of more than one schema is not enforced");
            return schema_body(c, json_array_get(list, 0), b);
        }
        return alternatives(c, list, combinators[i], b);
    }
    const json_t *cst = json_object_get(s, "const"), *en = json_object_get(s, "enum");
    if (cst || en) {
        static const char *const kw[] = {"const", "enum", "type", NULL};
        if (!only(c, s, kw, "beside const / enum")) return false;
        if (cst && en) return failf(c, "'const' and 'enum' together");
        if (cst) return put_json_literal(c, b, cst);
        if (!json_is_array(en) || json_array_size(en) == 0) return failf(c, "'enum' must be a non-empty array");
        if (json_array_size(en) > SCHEMA_MAX_COUNT) return failf(c, "'enum' of more than %d values", SCHEMA_MAX_COUNT);
        bool ok = put(b, "(");
        for (size_t i = 0; ok && i < json_array_size(en); i++)
            ok = put(b, i ? " | " : "") && put_json_literal(c, b, json_array_get(en, i));
        return ok && put(b, ")");
    }
    const json_t *type = json_object_get(s, "type");
    if (!type) {
        bool ok;
        const char *t = implied_type(c, s, &ok);
        if (!ok) return false;
        if (!t) return only(c, s, (const char *const[]){NULL}, "schema") && put(b, "value");
        return type_named(c, s, t, b);
    }
    if (json_is_string(type)) return type_named(c, s, json_string_value(type), b);
    if (!json_is_array(type) || json_array_size(type) == 0)
        return failf(c, "'type' must be a name or a non-empty array of names");
    bool ok = put(b, "(");
    for (size_t i = 0; ok && i < json_array_size(type); i++) {
        const json_t *t = json_array_get(type, i);
        if (!json_is_string(t)) return failf(c, "'type' must be a name or a non-empty array of names");
        ok = put(b, i ? " | " : "") && type_named(c, s, json_string_value(t), b);
    }
    return ok && put(b, ")");
}

static bool schema(struct conv *c, const json_t *s, uint32_t *rule) {
    if (++c->depth > HERD_JSON_SCHEMA_MAX_DEPTH) {
        c->depth--;
        return failf(c, "nested deeper than %d", HERD_JSON_SCHEMA_MAX_DEPTH);
    }
    *rule = new_rule(c);
    struct herd_buf body;
    herd_buf_init(&body, SCHEMA_MAX_BYTES);
    bool ok = schema_body(c, s, &body) && define(c, *rule, &body);
    if (!ok && c->rc == HERD_OK) failf(c, "the grammar grows past %u bytes", SCHEMA_MAX_BYTES);
    herd_buf_cleanup(&body);
    c->depth--;
    return ok;
}

const char *herd_json_schema_primitives(void) { return PRIMITIVES; }

enum herd_status herd_json_schema_rules(const json_t *s, const char *prefix, char **out, struct herd_error *err) {
    *out = NULL;
    struct conv c = {.root = s, .prefix = prefix, .err = err, .rc = HERD_OK};
    herd_buf_init(&c.out, SCHEMA_MAX_BYTES);
    uint32_t r = 0;
    if (schema(&c, s, &r)) {
        if (!putf(&c.out, "%sroot ::= %sr%u\n", prefix, prefix, r) || !herd_buf_append(&c.out, "", 1))
            failf(&c, "the grammar grows past %u bytes", SCHEMA_MAX_BYTES);
    }
    if (c.rc == HERD_OK) {
        *out = (char *)c.out.data;
        c.out.data = NULL;
    }
    herd_buf_cleanup(&c.out);
    return c.rc;
}

enum herd_status herd_json_schema_to_gbnf(const json_t *s, char **out, struct herd_error *err) {
    char *rules = NULL;
    enum herd_status rc = herd_json_schema_rules(s, "s-", &rules, err);
    *out = NULL;
    if (rc != HERD_OK) return rc;
    const size_t n = strlen(rules) + strlen(PRIMITIVES) + 32;
    if (!(*out = malloc(n))) {
        free(rules);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    snprintf(*out, n, "root ::= s-root\n%s%s", rules, PRIMITIVES);
    free(rules);
    return HERD_OK;
}

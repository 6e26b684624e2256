/* JSON Schema to GBNF: each compiled schema's grammar takes documents the
 * schema accepts and refuses ones it does not (checked by hand-written
 * cases per keyword), and every keyword that cannot be enforced is an
 * error naming it and where it is (under ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampling/grammar.h"
#include "sampling/json_schema.h"
#include "test_util.h"

static struct herd_grammar *compile(const char *schema_text) {
    json_error_t je;
    json_t *s = json_loads(schema_text, JSON_DECODE_ANY, &je);
    if (!s) fprintf(stderr, "bad test schema: %s\n", je.text);
    assert_non_null(s);
    char *gbnf = NULL;
    struct herd_error err = {0};
    enum herd_status rc = herd_json_schema_to_gbnf(s, &gbnf, &err);
    if (rc != HERD_OK) fprintf(stderr, "schema %s: %s\n", schema_text, err.msg);
    assert_int_equal(rc, HERD_OK);
    struct herd_grammar *g = NULL;
    rc = herd_grammar_parse(gbnf, strlen(gbnf), &g, &err);
    if (rc != HERD_OK) fprintf(stderr, "grammar of %s does not parse: %s\n%s\n", schema_text, err.msg, gbnf);
    assert_int_equal(rc, HERD_OK);
    free(gbnf);
    json_decref(s);
    return g;
}

static bool matches(const struct herd_grammar *g, const char *text) {
    struct herd_error err = {0};
    struct herd_grammar_state *st = herd_grammar_state_create(g, &err);
    bool ok = herd_grammar_accept(st, text, strlen(text), &err) == HERD_OK && herd_grammar_can_end(st);
    herd_grammar_state_destroy(st);
    return ok;
}

/* schema, then documents: a leading '+' must match, '-' must not. */
static void check(const char *schema_text, const char *const *docs) {
    struct herd_grammar *g = compile(schema_text);
    for (size_t i = 0; docs[i]; i++) {
        const bool want = docs[i][0] == '+';
        const bool got = matches(g, docs[i] + 1);
        if (want != got)
            fprintf(stderr, "schema %s, document %s: want %d got %d\n", schema_text, docs[i] + 1, want, got);
        assert_int_equal(want, got);
    }
    herd_grammar_destroy(g);
}

static void test_types(void **state) {
    (void)state;
    check("{\"type\": \"string\"}", (const char *[]){"+\"abc\"", "+\"\"", "+\"a\\\"b\\u00e9\"", "-abc", "-1", NULL});
    check("{\"type\": \"integer\"}", (const char *[]){"+0", "+-12", "+123", "-1.5", "-01", "-\"1\"", NULL});
    check("{\"type\": \"number\"}", (const char *[]){"+1.5", "+-2e10", "+0", "-.5", "-1.", NULL});
    check("{\"type\": \"boolean\"}", (const char *[]){"+true", "+false", "-True", "-1", NULL});
    check("{\"type\": \"null\"}", (const char *[]){"+null", "-nil", NULL});
    check("{\"type\": [\"string\", \"null\"]}", (const char *[]){"+\"x\"", "+null", "-1", NULL});
    check("{}", (const char *[]){"+1", "+\"x\"", "+{\"a\": [1, {}]}", "+null", "-", NULL});
    check("true", (const char *[]){"+[true]", NULL});
}

static void test_strings(void **state) {
    (void)state;
    check("{\"type\": \"string\", \"minLength\": 2, \"maxLength\": 3}",
          (const char *[]){"+\"ab\"", "+\"abc\"", "+\"a\\nb\"", "-\"a\"", "-\"abcd\"", NULL});
    check("{\"type\": \"string\", \"format\": \"date\"}",
          (const char *[]){"+\"2026-12-04\"", "-\"2026-13-01\"", "-\"2026-1-01\"", "-\"x\"", NULL});
    check("{\"type\": \"string\", \"format\": \"date-time\"}",
          (const char *[]){"+\"2026-12-04T09:30:00Z\"", "+\"2026-12-04T23:59:59.5+01:00\"", "-\"2026-12-04 09:30\"",
                           NULL});
    check("{\"type\": \"string\", \"format\": \"uuid\"}",
          (const char *[]){"+\"123e4567-e89b-12d3-a456-426614174000\"", "-\"123e4567\"", NULL});
}

static void test_numbers(void **state) {
    (void)state;
    check("{\"type\": \"integer\", \"minimum\": 1, \"maximum\": 12}",
          (const char *[]){"+1", "+12", "+7", "-0", "-13", "--1", NULL});
    check("{\"type\": \"integer\", \"minimum\": -3, \"exclusiveMaximum\": 3}",
          (const char *[]){"+-3", "+2", "-3", "--4", NULL});
    check("{\"type\": \"integer\", \"minimum\": 0}", (const char *[]){"+0", "+120", "--1", NULL});
    check("{\"type\": \"integer\", \"exclusiveMinimum\": 0}", (const char *[]){"+1", "-0", NULL});
    check("{\"type\": \"number\", \"minimum\": 0}", (const char *[]){"+0.5", "+3", "--0.5", NULL});
}

static void test_enum_const(void **state) {
    (void)state;
    check("{\"enum\": [\"red\", \"green\", 3, null, {\"a\": 1}]}",
          (const char *[]){"+\"red\"", "+3", "+null", "+{\"a\":1}", "-\"blue\"", "-4", NULL});
    check("{\"const\": \"x\\\"y\"}", (const char *[]){"+\"x\\\"y\"", "-\"xy\"", NULL});
}

static void test_arrays(void **state) {
    (void)state;
    check("{\"type\": \"array\", \"items\": {\"type\": \"integer\"}, \"minItems\": 1, \"maxItems\": 3}",
          (const char *[]){"+[1]", "+[1, 2, 3]", "+[ 1,2 ]", "-[]", "-[1,2,3,4]", "-[\"a\"]", NULL});
    check("{\"type\": \"array\", \"items\": {\"type\": \"string\"}}",
          (const char *[]){"+[]", "+[\"a\", \"b\"]", "-[1]", NULL});
    check("{\"type\": \"array\", \"maxItems\": 0}", (const char *[]){"+[]", "-[1]", NULL});
}

static void test_objects(void **state) {
    (void)state;
    const char *person = "{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\"}, "
                         "\"age\": {\"type\": \"integer\"}, \"email\": {\"type\": \"string\"}}, "
                         "\"required\": [\"name\"], \"additionalProperties\": false}";
    check(person,
          (const char *[]){"+{\"name\": \"a\"}", "+{\"name\": \"a\", \"age\": 3}",
                           "+{\"name\": \"a\", \"email\": \"e\"}", "+{\"name\":\"a\",\"age\":3,\"email\":\"e\"}", "-{}",
                           "-{\"age\": 3}", "-{\"name\": \"a\", \"x\": 1}", "-{\"name\": 1}",
                           "-{\"age\": 3, \"name\": \"a\"}", /* order: as in the schema */
                           NULL});
    /* only optional properties: no leading comma, any subset in order */
    check("{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\"}, \"b\": {\"type\": \"integer\"}}}",
          (const char *[]){"+{}", "+{\"a\": 1}", "+{\"b\": 2}", "+{\"a\": 1, \"b\": 2}", "-{,\"b\": 2}", NULL});
    /* required names not among the properties take any value */
    check("{\"type\": \"object\", \"required\": [\"k\"]}", (const char *[]){"+{\"k\": [1]}", "-{}", NULL});
    check("{\"type\": \"object\"}", (const char *[]){"+{}", "+{\"x\": {\"y\": null}}", "-[]", NULL});
}

static void test_combinators_refs(void **state) {
    (void)state;
    check("{\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"string\", \"maxLength\": 1}]}",
          (const char *[]){"+1", "+\"a\"", "-\"ab\"", NULL});
    check("{\"oneOf\": [{\"type\": \"boolean\"}, {\"type\": \"null\"}]}", (const char *[]){"+true", "+null", NULL});
    check("{\"oneOf\": [{\"const\": 1}, {\"const\": 2}]}", (const char *[]){"+1", "+2", "-3", NULL});
    check("{\"allOf\": [{\"type\": \"integer\"}]}", (const char *[]){"+4", NULL});
    /* a recursive tree through $defs */
    const char *tree = "{\"$defs\": {\"node\": {\"type\": \"object\", \"properties\": {\"v\": {\"type\": \"integer\"}, "
                       "\"kids\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/$defs/node\"}}}, "
                       "\"required\": [\"v\"]}}, \"$ref\": \"#/$defs/node\"}";
    check(tree, (const char *[]){"+{\"v\": 1}", "+{\"v\": 1, \"kids\": [{\"v\": 2}, {\"v\": 3, \"kids\": []}]}",
                                 "-{\"v\": 1, \"kids\": [{}]}", NULL});
    check("{\"definitions\": {\"x\": {\"type\": \"null\"}}, \"type\": \"array\", \"items\": {\"$ref\": "
          "\"#/definitions/x\"}}",
          (const char *[]){"+[null, null]", "-[1]", NULL});
}

static void refused(const char *schema_text, const char *words) {
    json_error_t je;
    json_t *s = json_loads(schema_text, JSON_DECODE_ANY, &je);
    assert_non_null(s);
    char *gbnf = (char *)1;
    struct herd_error err = {0};
    assert_int_not_equal(herd_json_schema_to_gbnf(s, &gbnf, &err), HERD_OK);
    assert_null(gbnf);
    if (!strstr(err.msg, words)) fprintf(stderr, "'%s' lacks '%s'\n", err.msg, words);
    assert_non_null(strstr(err.msg, words));
    json_decref(s);
}

static void test_refused(void **state) {
    (void)state;
    refused("{\"type\": \"string\", \"pattern\": \"^a+$\"}", "'pattern' cannot be enforced");
    refused("{\"type\": \"number\", \"multipleOf\": 3}", "'multipleOf'");
    refused("{\"type\": \"array\", \"uniqueItems\": true}", "'uniqueItems'");
    refused("{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"string\", \"format\": \"email\"}}}",
            "at .properties.a: format 'email'");
    refused("{\"type\": \"integer\", \"minimum\": 0, \"maximum\": 100000}", "range of 100001 values");
    refused("{\"type\": \"number\", \"maximum\": 5}", "not enforced");
    refused("{\"type\": \"string\", \"maxLength\": 5000}", "counts above 1000");
    refused("{\"oneOf\": [{\"type\": \"string\"}, {\"type\": \"string\", \"maxLength\": 2}]}", "'oneOf'");
    refused("{\"allOf\": [{\"type\": \"string\"}, {\"maxLength\": 2}]}", "'allOf'");
    refused("{\"$ref\": \"#/$defs/missing\"}", "does not name");
    refused("{\"$ref\": \"https://example.com/s.json\"}", "does not name");
    refused("{\"type\": \"strin\"}", "unknown type 'strin'");
    refused("{\"type\": \"object\", \"frobnicate\": 1}", "unknown or unsupported keyword 'frobnicate'");
    refused("false", "allows nothing");
    refused("{\"minLength\": 1, \"minimum\": 2}", "several types");
    refused("{\"type\": \"integer\", \"minimum\": 5, \"maximum\": 4}", "no integer");
    refused("{\"anyOf\": [{\"type\": \"string\"}], \"type\": \"string\"}", "beside a combinator");
    /* nested past the depth limit */
    char deep[4096] = "";
    for (int i = 0; i < 70; i++) strcat(deep, "{\"type\": \"array\", \"items\": ");
    strcat(deep, "{}");
    for (int i = 0; i < 70; i++) strcat(deep, "}");
    refused(deep, "nested deeper than 64");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_enum_const),
        cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_objects),
        cmocka_unit_test(test_combinators_refs),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

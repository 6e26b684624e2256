/* Tool calls read back from a model's text in each family's format, what
 * is not a call left as content, and the streamed hold-back test (under
 * ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "api/api.h"
#include "test_util.h"

/* The calls in text as "name(args)|name(args)", or "" for none; content
 * length in *content. */
static const char *calls(enum herd_tool_format f, const char *text, size_t *content) {
    static char out[1024];
    out[0] = 0;
    json_t *c = herd_api_tool_calls(f, text, strlen(text), 7, content);
    if (!c) return out;
    size_t i;
    json_t *call;
    json_array_foreach(c, i, call) {
        json_t *fn = json_object_get(call, "function");
        assert_string_equal(json_string_value(json_object_get(call, "type")), "function");
        const char *id = json_string_value(json_object_get(call, "id"));
        assert_true(strlen(id) == (f == HERD_TOOLS_MISTRAL ? 9 : 29));
        snprintf(out + strlen(out), sizeof out - strlen(out), "%s%s(%s)", i ? "|" : "",
                 json_string_value(json_object_get(fn, "name")), json_string_value(json_object_get(fn, "arguments")));
    }
    json_decref(c);
    return out;
}

static void test_hermes(void **state) {
    (void)state;
    size_t content;
    assert_string_equal(
        calls(HERD_TOOLS_HERMES, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>", &content),
        "f({\"a\":1})");
    assert_int_equal(content, 0);
    const char *two = "Let me look.\n<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>\n"
                      "<tool_call>{\"name\": \"g\", \"arguments\": \"{\\\"x\\\":2}\"}</tool_call>";
    assert_string_equal(calls(HERD_TOOLS_HERMES, two, &content), "f({})|g({\"x\":2})");
    assert_int_equal(content, strlen("Let me look."));
    /* not calls: no closing tag, no name, not JSON */
    assert_string_equal(calls(HERD_TOOLS_HERMES, "<tool_call>{\"name\": \"f\", \"arguments\": {}}", &content), "");
    assert_int_equal(content, strlen("<tool_call>{\"name\": \"f\", \"arguments\": {}}"));
    assert_string_equal(calls(HERD_TOOLS_HERMES, "<tool_call>{\"arguments\": {}}</tool_call>", &content), "");
    assert_string_equal(calls(HERD_TOOLS_HERMES, "just words", &content), "");
}

static void test_json_formats(void **state) {
    (void)state;
    size_t content;
    assert_string_equal(
        calls(HERD_TOOLS_LLAMA3, " {\"name\": \"add\", \"parameters\": {\"a\": 2, \"b\": 3}}", &content),
        "add({\"a\":2,\"b\":3})");
    assert_int_equal(content, 0);
    assert_string_equal(calls(HERD_TOOLS_MISTRAL,
                              "[{\"name\": \"f\", \"arguments\": {}}, {\"name\": \"g\", \"arguments\": {\"y\": null}}]",
                              &content),
                        "f({})|g({\"y\":null})");
    assert_string_equal(calls(HERD_TOOLS_MISTRAL, "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}]", &content),
                        "f({})");
    assert_string_equal(calls(HERD_TOOLS_GENERIC, "{\"name\": \"f\", \"arguments\": {\"q\": \"x\"}}\n", &content),
                        "f({\"q\":\"x\"})");
    /* a JSON answer that is not a call, text after the call, a broken array */
    assert_string_equal(calls(HERD_TOOLS_GENERIC, "{\"answer\": 42}", &content), "");
    assert_int_equal(content, strlen("{\"answer\": 42}"));
    assert_string_equal(calls(HERD_TOOLS_LLAMA3, "{\"name\": \"f\", \"parameters\": {}} and more", &content), "");
    assert_string_equal(calls(HERD_TOOLS_MISTRAL, "[{\"name\": \"f\", \"arguments\": {}}, 3]", &content), "");
}

static void test_possible(void **state) {
    (void)state;
    assert_true(herd_api_tool_call_possible(HERD_TOOLS_HERMES, "", 0));
    assert_true(herd_api_tool_call_possible(HERD_TOOLS_HERMES, " <tool", 6));
    assert_true(herd_api_tool_call_possible(HERD_TOOLS_HERMES, "<tool_call>{\"na", 15));
    assert_false(herd_api_tool_call_possible(HERD_TOOLS_HERMES, "Hello", 5));
    assert_true(herd_api_tool_call_possible(HERD_TOOLS_LLAMA3, "  {", 3));
    assert_false(herd_api_tool_call_possible(HERD_TOOLS_LLAMA3, "[", 1));
    assert_true(herd_api_tool_call_possible(HERD_TOOLS_MISTRAL, "[", 1));
    assert_false(herd_api_tool_call_possible(HERD_TOOLS_GENERIC, "The", 3));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hermes),
        cmocka_unit_test(test_json_formats),
        cmocka_unit_test(test_possible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

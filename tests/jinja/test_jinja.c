/* The Jinja engine and chat templates against Jinja2 itself:
 * - every case of the chat-template fixture (33 real templates x 8
 *   conversations, rendered by Jinja2 the way Hugging Face does; a copy is
 *   in tests/data, ../shared's is used when present);
 * - tests/data/jinja-cases.json, small templates for what the fixture does
 *   not reach (written by make_jinja_cases.py with Jinja2);
 * - the limits (output, memory, steps, depth) and error positions;
 * - template selection: the model's, a named one in the model, built-in,
 *   a file, the ChatML fallback. */
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "herd/gguf.h"
#include "jinja/jinja.h"
#include "test_util.h"
#include "tokenizer/chat_template.h"

/* 2026-07-26 00:00 UTC, the date the fixture's strftime_now returns */
#define FIXTURE_NOW ((time_t)1785024000)

static json_t *load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) fail_msg("%s: %s", path, je.text);
    return j;
}

/* Renders src with vars; returns the output (malloc'd) or NULL with err. */
static char *render(const char *src, const json_t *vars, const struct herd_jinja_limits *lim, struct herd_error *err) {
    struct herd_jinja_template *t = NULL;
    if (herd_jinja_parse(src, strlen(src), &t, err) != HERD_OK) return NULL;
    char *out = NULL;
    size_t len = 0;
    enum herd_status rc = herd_jinja_render(t, vars, FIXTURE_NOW, lim, &out, &len, err);
    herd_jinja_destroy(t);
    if (rc != HERD_OK) return NULL;
    assert_int_equal(strlen(out), len);
    return out;
}

static void first_difference(const char *want, const char *got) {
    size_t i = 0;
    while (want[i] && want[i] == got[i]) i++;
    size_t from = i > 40 ? i - 40 : 0;
    fprintf(stderr, "  first difference at byte %zu\n  want: %.80s\n  got:  %.80s\n", i, want + from, got + from);
}

static void test_fixture_templates(void **state) {
    (void)state;
    char path[512];
    if (!test_shared_path("fixtures/chat/templates.json", path, sizeof path))
        test_data_path("chat-templates.json", path, sizeof path);
    json_t *root = load_json(path);
    json_t *templates = json_object_get(root, "templates");
    size_t ti, n_ok = 0, n_cases = 0;
    json_t *tj;
    json_array_foreach(templates, ti, tj) {
        const char *name = json_string_value(json_object_get(tj, "name"));
        const char *src = json_string_value(json_object_get(tj, "template"));
        struct herd_chat_template *ct = NULL;
        struct herd_error err = {0};
        /* through the chat layer, as the server renders: from a file */
        char tf[512];
        test_tmp_path("tmpl.jinja", tf, sizeof tf);
        FILE *f = fopen(tf, "wb");
        fwrite(src, 1, strlen(src), f);
        fclose(f);
        if (herd_chat_template_load(NULL, NULL, tf, &ct, &err) != HERD_OK) fail_msg("%s: %s", name, err.msg);
        unlink(tf);
        size_t ci;
        json_t *c;
        json_array_foreach(json_object_get(tj, "cases"), ci, c) {
            n_cases++;
            json_t *tools = json_object_get(c, "tools");
            struct herd_chat_render_params p = {
                .messages = json_object_get(c, "messages"),
                .tools = json_is_null(tools) ? NULL : tools,
                .add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
                .bos_token = json_string_value(json_object_get(c, "bos_token")),
                .eos_token = json_string_value(json_object_get(c, "eos_token")),
                .now = FIXTURE_NOW,
            };
            char *out = NULL;
            size_t len = 0;
            enum herd_status rc = herd_chat_template_render(ct, &p, &out, &len, &err);
            const char *want = json_string_value(json_object_get(c, "expected"));
            const char *want_err = json_string_value(json_object_get(c, "error"));
            bool ok = want ? rc == HERD_OK && len == strlen(want) && memcmp(out, want, len) == 0
                           : rc != HERD_OK && strstr(err.msg, want_err) != NULL;
            if (ok) {
                n_ok++;
            } else {
                fprintf(stderr, "%s case %zu: %s\n", name, ci, rc == HERD_OK ? "output differs" : err.msg);
                if (want && out) first_difference(want, out);
                if (want_err) fprintf(stderr, "  wanted error containing: %s\n", want_err);
            }
            free(out);
        }
        herd_chat_template_destroy(ct);
    }
    fprintf(stderr, "chat templates: %zu / %zu cases identical to Jinja2\n", n_ok, n_cases);
    assert_true(n_cases >= 264);
    assert_int_equal(n_ok, n_cases);
    json_decref(root);
}

static void test_jinja_cases(void **state) {
    (void)state;
    char path[512];
    json_t *root = load_json(test_data_path("jinja-cases.json", path, sizeof path));
    json_t *vars = json_object_get(root, "vars");
    size_t i, n_ok = 0;
    json_t *c;
    json_array_foreach(json_object_get(root, "cases"), i, c) {
        const char *src = json_string_value(json_object_get(c, "template"));
        const char *want = json_string_value(json_object_get(c, "expected"));
        const char *want_err = json_string_value(json_object_get(c, "error"));
        const char *kind = json_string_value(json_object_get(c, "error_kind"));
        struct herd_error err = {0};
        char *out = render(src, vars, NULL, &err);
        bool ok;
        if (want) {
            ok = out && strcmp(out, want) == 0;
        } else if (kind && strcmp(kind, "syntax") == 0) {
            /* Jinja2 words syntax errors its own way; herd must refuse the
             * template and say where */
            ok = !out && strncmp(err.msg, "line ", 5) == 0;
        } else {
            ok = !out && (strstr(err.msg, want_err) || strstr(src, "include"));
        }
        if (ok) {
            n_ok++;
        } else {
            fprintf(stderr, "case %zu: %s\n  template: %s\n", i, out ? "output differs" : err.msg, src);
            if (want && out) first_difference(want, out);
            if (want_err) fprintf(stderr, "  wanted error: %s\n", want_err);
        }
        free(out);
    }
    fprintf(stderr, "jinja cases: %zu / %zu as Jinja2\n", n_ok, json_array_size(json_object_get(root, "cases")));
    assert_int_equal(n_ok, json_array_size(json_object_get(root, "cases")));
    json_decref(root);
}

static void expect_error(const char *src, const struct herd_jinja_limits *lim, enum herd_status code,
                         const char *needle) {
    struct herd_error err = {0};
    char *out = render(src, NULL, lim, &err);
    if (out) fail_msg("rendered where an error was expected: %s", src);
    if (!strstr(err.msg, needle)) fail_msg("error '%s' lacks '%s'", err.msg, needle);
    assert_int_equal(err.code, code);
}

static void test_limits(void **state) {
    (void)state;
    struct herd_jinja_limits lim;
    herd_jinja_default_limits(&lim);
    /* a billion iterations stop at the step budget */
    expect_error("{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{% endfor %}{% endfor "
                 "%}{% endfor %}",
                 &lim, HERD_E_NOMEM, "loop iterations");
    /* unbounded recursion stops at the depth limit */
    expect_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", &lim, HERD_E_NOMEM, "nest deeper");
    /* output */
    lim.max_output_bytes = 1000;
    expect_error("{% for i in range(100) %}{{ 'x' * 20 }}{% endfor %}", &lim, HERD_E_NOMEM, "output exceeds");
    herd_jinja_default_limits(&lim);
    /* memory: a string doubled 40 times */
    expect_error(
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s "
        "| length }}",
        &lim, HERD_E_NOMEM, "");
    /* nesting in the source is refused at parse time, without recursion
     * past the bound */
    char deep[5000];
    memset(deep, 0, sizeof deep);
    strcpy(deep, "{{ ");
    for (int i = 0; i < 2000; i++) strcat(deep, "(");
    strcat(deep, "1");
    for (int i = 0; i < 2000; i++) strcat(deep, ")");
    strcat(deep, " }}");
    struct herd_error err = {0};
    struct herd_jinja_template *t = NULL;
    assert_int_equal(herd_jinja_parse(deep, strlen(deep), &t, &err), HERD_E_FORMAT);
    assert_non_null(strstr(err.msg, "deeper"));
}

/* Work that is not a loop iteration: each of these ran for seconds to
 * hours inside a budget that counted only loop iterations and macro calls
 * (fuzz_jinja's limits, which these use), or overflowed the C stack. Now
 * each byte scanned or written and each expression or item compared is
 * charged to the step budget, and nesting is bounded. */
static void test_work_limits(void **state) {
    (void)state;
    const struct herd_jinja_limits lim = {
        .max_output_bytes = 1 << 20, .max_memory_bytes = 32 << 20, .max_steps = 20000, .max_depth = 32};
    struct herd_error err = {0};
    /* the CI finding: an empty string (an undefined name through indent)
     * repeated 449012345678 times made 449 billion empty copies */
    char *out =
        render("{{ nune | indent(2) * 449012345678 }}|{{ [] * 449012345678 }}|{{ 'ab' * 2 }}", NULL, &lim, &err);
    assert_non_null(out);
    assert_string_equal(out, "|[]|abab");
    free(out);
    /* a megabyte string scanned 19,000 times */
    static const char *const scans[] = {"s | length",     "s[999999]",    "'b' in s",        "s is in s",
                                        "s.count('b')",   "s.find('b')",  "s.strip() ~ 'x'", "s.isspace()",
                                        "s == s ~ ''",    "s < s ~ ' '",  "s.endswith(s)",   "s.split('b') | length",
                                        "[s] | join('')", "s | wordcount"};
    char src[512];
    for (size_t i = 0; i < sizeof scans / sizeof *scans; i++) {
        snprintf(src, sizeof src,
                 "{%% set s = ' ' * 1000000 %%}{%% for i in range(19000) %%}{%% set x = %s %%}{%% endfor %%}",
                 scans[i]);
        expect_error(src, &lim, HERD_E_NOMEM, "steps");
    }
    /* a 100,000-item list compared or visited 19,000 times, and once
     * pairwise */
    static const char *const visits[] = {"a == b", "a < b", "-1 in a", "a | max", "a | sum", "a | join"};
    for (size_t i = 0; i < sizeof visits / sizeof *visits; i++) {
        snprintf(src, sizeof src,
                 "{%% set a = range(99999) %%}{%% set b = range(99999) %%}{%% for i in range(19000) %%}{{ %s }}"
                 "{%% endfor %%}",
                 visits[i]);
        expect_error(src, &lim, HERD_E_NOMEM, "steps");
    }
    expect_error("{{ range(99999) | unique | length }}", &lim, HERD_E_NOMEM, "steps");
    /* 2**60 comparisons of two lists that share their halves */
    expect_error("{% set ns = namespace(a=1, b=1) %}{% for i in range(60) %}{% set ns.a = [ns.a, ns.a] %}"
                 "{% set ns.b = [ns.b, ns.b] %}{% endfor %}{{ ns.a == ns.b }}",
                 &lim, HERD_E_NOMEM, "steps");
    /* PCRE2 checked the whole rest of the string once per word */
    out = render("{{ ('a b ' * 100000) | wordcount }}", NULL, &lim, &err);
    assert_non_null(out);
    assert_string_equal(out, "200000");
    free(out);
    expect_error("{% set s = '1 ' * 400000 %}{% for i in range(100) %}{% set x = s | wordcount %}{% endfor %}", &lim,
                 HERD_E_NOMEM, "steps");
    /* O(len(s) * len(chars)) in one call */
    expect_error("{% set s = 'ab' * 400000 %}{{ s.strip('b' * 200000 ~ 'a') | length }}", &lim, HERD_E_NOMEM, "steps");
    /* 2,000 expressions per iteration */
    char *chain = malloc(20000);
    assert_non_null(chain);
    strcpy(chain, "{% for i in range(19000) %}{% if 1");
    for (int i = 0; i < 2000; i++) strcat(chain, " and 1");
    strcat(chain, " and 0 %}{% endif %}{% endfor %}");
    expect_error(chain, &lim, HERD_E_NOMEM, "steps");
    free(chain);
    /* rfind was a memcmp at each position: O(len(s) * len(sub)) */
    out = render("{{ ('a' * 1000000).rfind('a' * 500000 ~ 'b') }} {{ ('ab' * 1000).rfind('ba') }}", NULL, &lim, &err);
    assert_non_null(out);
    assert_string_equal(out, "-1 1997");
    free(out);
    /* 300 levels of nesting, built one per iteration: equality, ordering,
     * repr, startswith and tojson recursed once per level */
    static const char *const deep[] = {"ns.a == ns.b", "ns.a < ns.b", "ns.a", "'x'.startswith(ns.a)", "ns.a | tojson"};
    for (size_t i = 0; i < sizeof deep / sizeof *deep; i++) {
        snprintf(src, sizeof src,
                 "{%% set ns = namespace(a='x', b='x') %%}{%% for i in range(300) %%}{%% set ns.a = [ns.a] %%}"
                 "{%% set ns.b = [ns.b] %%}{%% endfor %%}\n{{ %s }}",
                 deep[i]);
        expect_error(src, &lim, HERD_E_INVALID, "deeper than 256");
    }
    /* repr() has no node of its own: the error names the statement */
    assert_null(render("{% set ns = namespace(a=1) %}{% for i in range(300) %}{% set ns.a = [ns.a] %}{% endfor %}\n"
                       "{{ ns.a }}",
                       NULL, &lim, &err));
    assert_true(strncmp(err.msg, "line 2, column ", 15) == 0);
    /* a namespace holding itself: repr() stops at {...}, == is identity */
    out = render("{% set ns = namespace() %}{% set ns.x = ns %}{{ ns }} {{ ns == ns }}", NULL, &lim, &err);
    assert_non_null(out);
    assert_string_equal(out, "<Namespace {'x': <Namespace {...}>}> True");
    free(out);
    /* index arithmetic near INT64_MAX (UBSan findings) */
    expect_error("{{ range(-9223372036854775807, 9223372036854775807) | length }}", &lim, HERD_E_INVALID,
                 "Range too big");
    out = render("{{ [1, 2][1::9223372036854775807] }} {{ range(0, 9223372036854775807, 2**62) | list }}", NULL, &lim,
                 &err);
    assert_non_null(out);
    assert_string_equal(out, "[2] [0, 4611686018427387904]");
    free(out);
}

static void test_error_positions(void **state) {
    (void)state;
    struct herd_error err = {0};
    assert_null(render("line one\n{% if true %}\n  {{ 1 + }}\n{% endif %}", NULL, NULL, &err));
    assert_string_equal(err.msg, "line 3, column 10: unexpected '}}' in an expression");
    assert_null(render("a\nb {{ messages[0].content.upper() }}", NULL, NULL, &err));
    assert_true(strncmp(err.msg, "line 2, column ", 15) == 0);
    assert_non_null(strstr(err.msg, "'messages' is undefined"));
    json_t *vars = json_pack("{s:[i]}", "x", 1);
    assert_null(
        render("{% for m in x %}\n{{ raise_exception('Roles must alternate') }}{% endfor %}", vars, NULL, &err));
    json_decref(vars);
    assert_string_equal(err.msg, "line 2, column 4: Roles must alternate");
    assert_null(render("{% if true %}no end", NULL, NULL, &err));
    assert_non_null(strstr(err.msg, "missing {% endif %}"));
    assert_null(render("{{ 'é\\u12' }}", NULL, NULL, &err));
    assert_true(strncmp(err.msg, "line 1, column", 14) == 0);
}

struct thread_arg {
    const struct herd_jinja_template *t;
    json_t *vars;
    const char *want;
    int failures;
};

static void *render_many(void *p) {
    struct thread_arg *a = p;
    for (int i = 0; i < 200; i++) {
        char *out = NULL;
        size_t len;
        struct herd_error err = {0};
        if (herd_jinja_render(a->t, a->vars, FIXTURE_NOW, NULL, &out, &len, &err) != HERD_OK || strcmp(out, a->want))
            a->failures++;
        free(out);
    }
    return NULL;
}

/* One parsed template, rendered by several threads at once (the server
 * shares the model's template between its HTTP threads). */
static void test_concurrent_renders(void **state) {
    (void)state;
    const char *src = "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                      "<{{ m.role }}>{{ m.content | trim }}{% endfor %}{{ ns.n }}";
    struct herd_jinja_template *t = NULL;
    struct herd_error err = {0};
    assert_int_equal(herd_jinja_parse(src, strlen(src), &t, &err), HERD_OK);
    json_t *vars = json_pack("{s:[{s:s,s:s},{s:s,s:s}]}", "messages", "role", "user", "content", " hi ", "role",
                             "assistant", "content", "yo");
    struct thread_arg args[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){t, vars, "<user>hi<assistant>yo2", 0};
        pthread_create(&th[i], NULL, render_many, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    json_decref(vars);
    herd_jinja_destroy(t);
}

static char *render_chat(const struct herd_chat_template *ct, const char *messages_json, bool gen) {
    json_t *m = json_loads(messages_json, 0, NULL);
    assert_non_null(m);
    struct herd_chat_render_params p = {.messages = m, .add_generation_prompt = gen, .now = FIXTURE_NOW};
    char *out = NULL;
    size_t len;
    struct herd_error err = {0};
    if (herd_chat_template_render(ct, &p, &out, &len, &err) != HERD_OK) fail_msg("%s", err.msg);
    json_decref(m);
    return out;
}

static void test_template_selection(void **state) {
    (void)state;
    struct herd_error err = {0};
    struct herd_chat_template *ct = NULL;
    const char *msgs = "[{\"role\":\"user\",\"content\":\"Hi\"},"
                       "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Yo\"}]}]";
    /* no model, no override: ChatML */
    assert_int_equal(herd_chat_template_load(NULL, NULL, NULL, &ct, &err), HERD_OK);
    char *out = render_chat(ct, msgs, true);
    assert_string_equal(out,
                        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n<|im_start|>assistant\n");
    assert_non_null(strstr(ct->origin, "chatml"));
    free(out);
    herd_chat_template_destroy(ct);

    /* a model with its own template, a named one, and BOS/EOS */
    char path[512];
    test_tmp_path("tmpl.gguf", path, sizeof path);
    struct herd_gguf_writer *w = herd_gguf_writer_create();
    const char *tokens[] = {"<unk>", "<s>", "</s>"};
    uint64_t lens[] = {5, 3, 4};
    float scores[] = {0, 0, 0};
    int32_t types[] = {2, 3, 3};
    assert_int_equal(herd_gguf_writer_add_string(w, "tokenizer.ggml.model", "llama", &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_string_array(w, "tokenizer.ggml.tokens", 3, tokens, lens, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_array(w, "tokenizer.ggml.scores", HERD_GGUF_VTYPE_F32, 3, scores, &err),
                     HERD_OK);
    assert_int_equal(herd_gguf_writer_add_array(w, "tokenizer.ggml.token_type", HERD_GGUF_VTYPE_I32, 3, types, &err),
                     HERD_OK);
    assert_int_equal(herd_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_add_string(
                         w, "tokenizer.chat_template",
                         "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{% endfor %}{{ eos_token }}", &err),
                     HERD_OK);
    assert_int_equal(
        herd_gguf_writer_add_string(w, "tokenizer.chat_template.tool_use", "TOOLS{{ tools is defined }}", &err),
        HERD_OK);
    assert_int_equal(herd_gguf_writer_begin(w, path, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_finish(w, &err), HERD_OK);
    herd_gguf_writer_destroy(w);
    struct herd_gguf *g = NULL;
    struct herd_vocab *v = NULL;
    if (herd_gguf_open_file(path, &g, &err) != HERD_OK || herd_vocab_load(g, &v, &err) != HERD_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(herd_chat_template_load(g, v, NULL, &ct, &err), HERD_OK);
    out = render_chat(ct, msgs, false);
    assert_string_equal(out, "<s>[user][assistant]</s>");
    free(out);
    herd_chat_template_destroy(ct);
    assert_int_equal(herd_chat_template_load(g, v, "tool_use", &ct, &err), HERD_OK);
    out = render_chat(ct, msgs, false);
    assert_string_equal(out, "TOOLSFalse");
    assert_string_equal(ct->origin, "model:tool_use");
    free(out);
    herd_chat_template_destroy(ct);
    /* built-in names */
    assert_int_equal(herd_chat_template_load(g, v, "llama3", &ct, &err), HERD_OK);
    out = render_chat(ct, "[{\"role\":\"user\",\"content\":\" Hi \"}]", true);
    assert_string_equal(
        out,
        "<s><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    free(out);
    herd_chat_template_destroy(ct);
    /* an unknown name that is no file either */
    assert_int_equal(herd_chat_template_load(g, v, "no-such-template", &ct, &err), HERD_E_NOT_FOUND);
    assert_non_null(strstr(err.msg, "chatml"));
    /* a template that does not parse names its origin and position */
    char bad[512];
    test_tmp_path("bad.jinja", bad, sizeof bad);
    FILE *f = fopen(bad, "wb");
    fputs("ok\n{% for %}", f);
    fclose(f);
    assert_int_equal(herd_chat_template_load(g, v, bad, &ct, &err), HERD_E_FORMAT);
    assert_non_null(strstr(err.msg, bad));
    assert_non_null(strstr(err.msg, "line 2, column"));
    unlink(bad);
    herd_vocab_destroy(v);
    herd_gguf_destroy(g);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_templates),
        cmocka_unit_test(test_jinja_cases),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_work_limits),
        cmocka_unit_test(test_error_positions),
        cmocka_unit_test(test_concurrent_renders),
        cmocka_unit_test(test_template_selection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

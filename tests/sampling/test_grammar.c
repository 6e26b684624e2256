/* GBNF grammars: parsing and its errors, the matcher on texts it must take
 * and refuse (a JSON grammar, repetitions, UTF-8 split over tokens), and
 * the vocabulary mask equal to trying every token by hand at every step of
 * several texts (under ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampling/grammar.h"
#include "test_util.h"

static struct herd_grammar *parse_ok(const char *text) {
    struct herd_grammar *g = NULL;
    struct herd_error err = {0};
    enum herd_status rc = herd_grammar_parse(text, strlen(text), &g, &err);
    if (rc != HERD_OK) fprintf(stderr, "unexpected grammar error: %s\n", err.msg);
    assert_int_equal(rc, HERD_OK);
    return g;
}

/* Parses text expecting failure with msg containing want. */
static void parse_fails(const char *text, const char *want) {
    struct herd_grammar *g = NULL;
    struct herd_error err = {0};
    if (herd_grammar_parse(text, strlen(text), &g, &err) == HERD_OK)
        fprintf(stderr, "parsed, but should not: %s", text);
    assert_null(g);
    assert_true(err.msg[0] != 0);
    assert_null(g);
    if (!strstr(err.msg, want)) fprintf(stderr, "message '%s' lacks '%s'\n", err.msg, want);
    assert_non_null(strstr(err.msg, want));
}

/* Does the grammar take the whole text (and may it end there)? */
static bool matches(const struct herd_grammar *g, const char *text) {
    struct herd_error err = {0};
    struct herd_grammar_state *s = herd_grammar_state_create(g, &err);
    assert_non_null(s);
    bool ok = herd_grammar_accept(s, text, strlen(text), &err) == HERD_OK && herd_grammar_can_end(s);
    herd_grammar_state_destroy(s);
    return ok;
}

/* Feeding byte by byte gives the same answer as feeding at once. */
static bool matches_bytewise(const struct herd_grammar *g, const char *text) {
    struct herd_error err = {0};
    struct herd_grammar_state *s = herd_grammar_state_create(g, &err);
    bool ok = true;
    for (size_t i = 0; ok && text[i]; i++) ok = herd_grammar_accept(s, text + i, 1, &err) == HERD_OK;
    ok = ok && herd_grammar_can_end(s);
    herd_grammar_state_destroy(s);
    return ok;
}

static const char *JSON_GBNF =
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" ws\n"
    "array  ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
    "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\bfnrt] | \"u\" [0-9a-fA-F]{4}) )* \"\\\"\" ws\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws\n"
    "# whitespace, bounded\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

static void test_json(void **state) {
    (void)state;
    struct herd_grammar *g = parse_ok(JSON_GBNF);
    static const char *good[] = {
        "{}",
        "{ }",
        "{\"a\":1}",
        "{\"a\": [1, 2.5, -3e4, true, null, \"x\"]}",
        "{\"nested\": {\"deep\": {\"k\": []}}}",
        "{\"esc\": \"q\\\"\\\\\\n\\u00e9\"}",
        "{\"utf8\": \"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}",
        "{\"a\":1}\n  ",
    };
    static const char *bad[] = {
        "",
        "{",
        "}",
        "{\"a\"}",
        "{\"a\":}",
        "{a:1}",
        "{\"a\":1,}",
        "[1]",
        "{\"a\":01}",
        "{\"a\":\"\x01\"}",
        "{\"a\":1} x",
        "{\"a\":tru}",
        "{\"a\":\"\\x\"}",
        "{\"bad\": \"\xc3\x28\"}",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (!matches(g, good[i])) fprintf(stderr, "should match: %s\n", good[i]);
        assert_true(matches(g, good[i]));
        assert_true(matches_bytewise(g, good[i]));
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (matches(g, bad[i])) fprintf(stderr, "should not match: %s\n", bad[i]);
        assert_false(matches(g, bad[i]));
        assert_false(matches_bytewise(g, bad[i]));
    }
    herd_grammar_destroy(g);
}

/* JSON mode's built-in grammar: objects only, bounded whitespace. */
static void test_json_object(void **state) {
    (void)state;
    struct herd_grammar *g = parse_ok(herd_grammar_json_object);
    assert_true(matches(g, "{\"a\": [1, -0.5, 2e10, \"x\\/y\", {}], \"b\": null}"));
    assert_true(matches(g, "{}\n"));
    assert_false(matches(g, "[1, 2]"));      /* an object, not any value */
    assert_false(matches(g, " {}"));         /* no blanks before it */
    assert_false(matches(g, "{\"a\": 01}")); /* JSON numbers */
    char blanks[64] = "{\n";
    memset(blanks + 2, ' ', 30);
    strcpy(blanks + 32, "}");
    assert_false(matches(g, blanks)); /* 30 blanks in a row: more than 20 */
    herd_grammar_destroy(g);
    /* references: the last destroy frees */
    g = parse_ok("root ::= \"a\"\n");
    assert_ptr_equal(herd_grammar_retain(g), g);
    herd_grammar_destroy(g);
    assert_true(matches(g, "a"));
    herd_grammar_destroy(g);
}

static void test_repetition(void **state) {
    (void)state;
    struct herd_grammar *g = parse_ok("root ::= \"a\"{2,4} \"b\"+ \"c\"? \"d\"{3} \"e\"{2,}\n");
    assert_true(matches(g, "aabddd"
                           "ee"));
    assert_true(matches(g, "aaaabbbcddd"
                           "eeeee"));
    assert_false(matches(g, "abddd"
                            "ee")); /* too few a */
    assert_false(matches(g, "aaaaabddd"
                            "ee")); /* too many a */
    assert_false(matches(g, "aaddd"
                            "ee")); /* no b */
    assert_false(matches(g, "aabccddd"
                            "ee")); /* c twice */
    assert_false(matches(g, "aabdd"
                            "ee")); /* d twice */
    assert_false(matches(g, "aabddd"
                            "e")); /* e once */
    herd_grammar_destroy(g);
    /* classes, ranges, negation, any, escapes, comments, groups over lines */
    g = parse_ok("# a comment\nroot ::= ( [a-cx] | [^a-z0-9] )+ . \"\\x41\\u00e9\\U0001F600\" # trailing\n");
    assert_true(matches(g, "abx!Z?A\xc3\xa9\xf0\x9f\x98\x80"));
    assert_true(matches(g, "\xe2\x82\xac"
                           "zA\xc3\xa9\xf0\x9f\x98\x80")); /* any may be a letter */
    assert_false(matches(g, "d!A\xc3\xa9\xf0\x9f\x98\x80"));
    herd_grammar_destroy(g);
    /* a rule named like a group's own rule stays apart from it */
    g = parse_ok("root ::= (\"a\" | \"b\") root_1 root_2\nroot_1 ::= \"c\"\nroot_2 ::= \"d\"\n");
    assert_true(matches(g, "acd"));
    assert_true(matches(g, "bcd"));
    assert_false(matches(g, "ad"));
    herd_grammar_destroy(g);
    g = parse_ok("root ::= (\n  \"x\" |\n  \"y\"\n) end\nend ::= \"!\"\n");
    assert_true(matches(g, "x!"));
    assert_true(matches(g, "y!"));
    assert_false(matches(g, "xy!"));
    herd_grammar_destroy(g);
}

static void test_end(void **state) {
    (void)state;
    struct herd_grammar *g = parse_ok("root ::= \"ab\" \"c\"?\n");
    struct herd_error err = {0};
    struct herd_grammar_state *s = herd_grammar_state_create(g, &err);
    assert_false(herd_grammar_can_end(s));
    assert_int_equal(herd_grammar_accept(s, "ab", 2, &err), HERD_OK);
    assert_true(herd_grammar_can_end(s));
    assert_false(herd_grammar_must_end(s));
    /* a refused byte leaves the state as it was */
    assert_int_equal(herd_grammar_accept(s, "x", 1, &err), HERD_E_INVALID);
    assert_true(herd_grammar_can_end(s));
    assert_int_equal(herd_grammar_accept(s, "c", 1, &err), HERD_OK);
    assert_true(herd_grammar_must_end(s));
    herd_grammar_state_destroy(s);
    herd_grammar_destroy(g);
}

static void test_errors(void **state) {
    (void)state;
    parse_fails("root ::= foo\n", "'foo' is used but not defined");
    parse_fails("start ::= \"a\"\n", "no 'root' rule");
    parse_fails("root ::= root \"a\" | \"b\"\n", "left-recursive");
    parse_fails("root ::= x\nx ::= y? x \"a\"\ny ::= \"b\"\n", "left-recursive");
    parse_fails("root ::= \"abc\n", "line 1");
    parse_fails("root ::= [abc\n", "not closed");
    parse_fails("root ::= \"\\q\"\n", "unknown escape");
    parse_fails("root ::= \"a\"{3,2}\n", "n below m");
    parse_fails("root ::= \"a\"{5000}\n", "above 1000");
    parse_fails("root ::= \"a\"\nroot ::= \"b\"\n", "defined twice");
    parse_fails("root = \"a\"\n", "'::='");
    parse_fails("root ::= * \"a\"\n", "nothing before it");
    parse_fails("root ::= [z-a]\n", "below its start");
    parse_fails("root ::= []\n", "empty character class");
    parse_fails("root ::= \"a\" )\n", "line 1 column 14");
    parse_fails("\n\nroot ::= \"\\u12\"\n", "line 3");
    parse_fails("root ::= \"\\uD800\"\n", "scalar value");
    /* groups are rules, so nested repetition stays small... */
    struct herd_grammar *g = parse_ok("root ::= ((\"ab\"{1000}){1000}){1000}\n");
    herd_grammar_destroy(g);
    /* ...but 600 inline [a-z]{1000} are 1.2 million elements: refused */
    const size_t n = 600 * 12 + 32;
    char *big = malloc(n);
    strcpy(big, "root ::=");
    for (int i = 0; i < 600; i++) strcat(big, " [a-z]{1000}");
    strcat(big, "\n");
    parse_fails(big, "too many elements");
    free(big);
    /* and a source over the limit */
    char *huge = malloc(HERD_GRAMMAR_MAX_SOURCE + 2);
    memset(huge, ' ', HERD_GRAMMAR_MAX_SOURCE + 1);
    huge[HERD_GRAMMAR_MAX_SOURCE + 1] = 0;
    parse_fails(huge, "at most");
    free(huge);
}

/* ---------------------------------------------------------------- the mask */

/* A vocabulary: ASCII fragments of JSON, words, multi-byte characters whole
 * and split, and one EOG token with no bytes. */
static const char *PIECES[] = {
    "{",        "}",        "[",     "]",        ",",        ":",     "\"",
    " ",        "\n",       "  ",    "{\"",      "\":",      "\",",   "\"}",
    "\": \"",   "a",        "b",     "key",      "name",     " true", "true",
    "fals",     "e",        "null",  "0",        "1",        "12",    "-",
    ".",        "5e",       "e+",    "\\",       "\\n",      "\\u",   "00e9",
    "abc\"",    "\xc3",     "\xa9",  "\xc3\xa9", "\xe2\x82", "\xac",  "\xe2\x82\xac",
    "\xf0\x9f", "\x98\x80", "x\xc3", "\xff",     "\x80",     "}}",    "]}",
    "\"]",      "1,",       ",\"",   "é",        "\t",       "",
};
#define N_PIECES (sizeof PIECES / sizeof PIECES[0])

static struct herd_grammar_vocab *make_vocab(bool *eog) {
    uint32_t lens[N_PIECES];
    for (size_t i = 0; i < N_PIECES; i++) lens[i] = (uint32_t)strlen(PIECES[i]), eog[i] = lens[i] == 0;
    struct herd_grammar_vocab *v = NULL;
    struct herd_error err = {0};
    assert_int_equal(herd_grammar_vocab_create(PIECES, lens, eog, N_PIECES, &v, &err), HERD_OK);
    return v;
}

/* The mask of s against trying each token on a copy. */
static void check_mask(const struct herd_grammar_state *s, const struct herd_grammar_vocab *v, const bool *eog) {
    uint64_t bits[2];
    assert_int_equal(herd_grammar_mask_words(v), (N_PIECES + 63) / 64);
    uint32_t n = herd_grammar_mask(s, v, bits);
    uint8_t allowed[N_PIECES];
    for (size_t t = 0; t < N_PIECES; t++) allowed[t] = (bits[t / 64] >> (t % 64)) & 1;
    uint32_t count = 0;
    for (size_t t = 0; t < N_PIECES; t++) {
        bool want;
        if (eog[t]) {
            want = herd_grammar_can_end(s);
        } else {
            struct herd_grammar_state *c = herd_grammar_state_clone(s);
            struct herd_error err = {0};
            want = herd_grammar_accept(c, PIECES[t], strlen(PIECES[t]), &err) == HERD_OK;
            herd_grammar_state_destroy(c);
        }
        if (want != (allowed[t] != 0))
            fprintf(stderr, "token %zu '%s': mask %d, by hand %d\n", t, PIECES[t], allowed[t], want);
        assert_int_equal(want, allowed[t] != 0);
        count += want;
    }
    assert_int_equal(n, count);
}

static void test_mask(void **state) {
    (void)state;
    bool eog[N_PIECES];
    struct herd_grammar_vocab *v = make_vocab(eog);
    struct herd_grammar *g = parse_ok(JSON_GBNF);
    static const char *texts[] = {
        "{\"key\": [1, 12, -0.5e+3, true, null], \"name\": \"caf\xc3\xa9 \xe2\x82\xac\\n\\u00e9\"}",
        "{\"a\":{\"b\":[[],{}]}}\n\t",
    };
    for (size_t k = 0; k < 2; k++) {
        struct herd_error err = {0};
        struct herd_grammar_state *s = herd_grammar_state_create(g, &err);
        check_mask(s, v, eog);
        for (const char *p = texts[k]; *p; p++) {
            assert_int_equal(herd_grammar_accept(s, p, 1, &err), HERD_OK);
            check_mask(s, v, eog); /* also inside multi-byte characters */
        }
        assert_true(herd_grammar_can_end(s));
        herd_grammar_state_destroy(s);
    }
    herd_grammar_destroy(g);
    /* a grammar that accepts nothing more: only the EOG token */
    g = parse_ok("root ::= \"a\"\n");
    struct herd_error err = {0};
    struct herd_grammar_state *s = herd_grammar_state_create(g, &err);
    uint64_t allowed[2];
    assert_int_equal(herd_grammar_mask(s, v, allowed), 1); /* "a" */
    assert_int_equal(herd_grammar_accept(s, "a", 1, &err), HERD_OK);
    assert_int_equal(herd_grammar_mask(s, v, allowed), 1); /* the EOG token */
    assert_true((allowed[(N_PIECES - 1) / 64] >> ((N_PIECES - 1) % 64)) & 1);
    herd_grammar_state_destroy(s);
    herd_grammar_destroy(g);
    herd_grammar_vocab_destroy(v);
}

/* The cache answers like the walk, reuses repeated states, and evicts. */
static void test_mask_cache(void **state) {
    (void)state;
    bool eog[N_PIECES];
    struct herd_grammar_vocab *v = make_vocab(eog);
    struct herd_grammar *g = parse_ok(JSON_GBNF);
    struct herd_grammar_mask_cache *c = herd_grammar_mask_cache_create(v, 4);
    assert_non_null(c);
    struct herd_error err = {0};
    struct herd_grammar_state *s = herd_grammar_state_create(g, &err);
    const char *text = "{\"long string value\": \"abcdefghijklmnop\", \"n\": 12345}";
    for (const char *p = text;; p++) {
        uint32_t n_cached, n_walked;
        const uint64_t *cached = herd_grammar_mask_cached(c, s, &n_cached);
        uint64_t walked[2];
        n_walked = herd_grammar_mask(s, v, walked);
        assert_int_equal(n_cached, n_walked);
        assert_memory_equal(cached, walked, herd_grammar_mask_words(v) * sizeof *walked);
        if (!*p) break;
        assert_int_equal(herd_grammar_accept(s, p, 1, &err), HERD_OK);
    }
    uint64_t hits, misses;
    herd_grammar_mask_cache_stats(c, &hits, &misses);
    /* the characters inside the strings and the number repeat their state */
    assert_true(hits > 20);
    assert_true(misses > 4); /* more states than slots: evictions happened */
    herd_grammar_state_destroy(s);
    herd_grammar_mask_cache_destroy(c);
    herd_grammar_destroy(g);
    herd_grammar_vocab_destroy(v);
}

/* An ambiguous grammar: many stacks at once (past the set's linear scan,
 * into its hash index), the same answers as a plain one, and the stack
 * limit as an error rather than a blow-up. */
static void test_ambiguous(void **state) {
    (void)state;
    /* 40 alternatives that all read "a" then differ: 40 live stacks */
    char text[4096] = "root ::= x | y\nx ::= ";
    for (int i = 0; i < 40; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "%s\"a%d\"", i ? " | " : "", i);
    strcat(text, "\ny ::= \"a\" [0-9]+ \"!\"\n");
    struct herd_grammar *g = parse_ok(text);
    assert_true(matches(g, "a17"));
    assert_true(matches(g, "a39"));
    assert_true(matches(g, "a123!"));
    assert_false(matches(g, "a40"));
    assert_false(matches(g, "a1x"));
    /* the same again after the sets were cleared and refilled */
    assert_true(matches_bytewise(g, "a5"));
    herd_grammar_destroy(g);
    /* exponential ambiguity: (a|a)* doubles nothing (stacks are a set), but
     * nested optional runs do grow; the limit is an error */
    g = parse_ok("root ::= x*\nx ::= \"a\" | \"a\" | \"aa\"\n");
    assert_true(matches(g, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    herd_grammar_destroy(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json),       cmocka_unit_test(test_json_object), cmocka_unit_test(test_repetition),
        cmocka_unit_test(test_end),        cmocka_unit_test(test_errors),      cmocka_unit_test(test_mask),
        cmocka_unit_test(test_mask_cache), cmocka_unit_test(test_ambiguous),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

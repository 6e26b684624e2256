/* SentencePiece tokenization against llama.cpp's test vectors
 * (../shared/fixtures/tokenizer, 46 cases per vocabulary; a few of them are
 * also asserted here so the default suite checks them without ../shared),
 * and the streaming detokenizer's UTF-8 hold-back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "herd/gguf.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

struct fixture {
    struct herd_gguf *g;
    struct herd_vocab *v;
    struct herd_tokenizer *tk;
};

static void open_vocab(struct fixture *f, const char *path) {
    struct herd_error err = {0};
    if (herd_gguf_open_file(path, &f->g, &err) != HERD_OK) fail_msg("%s", err.msg);
    if (herd_vocab_load(f->g, &f->v, &err) != HERD_OK) fail_msg("%s", err.msg);
    if (herd_tokenizer_create(f->v, &f->tk, &err) != HERD_OK) fail_msg("%s", err.msg);
}

static void close_vocab(struct fixture *f) {
    herd_tokenizer_destroy(f->tk);
    herd_vocab_destroy(f->v);
    herd_gguf_destroy(f->g);
}

static uint32_t tok(struct fixture *f, const char *text, int32_t *ids) {
    struct herd_error err = {0};
    uint32_t n = 0;
    if (herd_tokenize(f->tk, text, strlen(text), 0, ids, 4096, &n, &err) != HERD_OK) fail_msg("%s", err.msg);
    return n;
}

static void test_known_cases(void **state) {
    (void)state;
    char p[512];
    struct fixture f;
    open_vocab(&f, test_data_path("ggml-vocab-llama-spm.gguf", p, sizeof p));
    int32_t ids[64];
    assert_int_equal(tok(&f, "Hello world", ids), 2);
    assert_int_equal(ids[0], 15043);
    assert_int_equal(ids[1], 3186);
    assert_int_equal(tok(&f, " ", ids), 1);
    assert_int_equal(ids[0], 259);
    assert_int_equal(tok(&f, "", ids), 0);
    /* BOS is added only when asked */
    struct herd_error err = {0};
    uint32_t n;
    assert_int_equal(herd_tokenize(f.tk, "Hello", 5, HERD_TOK_ADD_SPECIAL, ids, 64, &n, &err), HERD_OK);
    assert_int_equal(ids[0], 1);
    assert_int_equal(herd_tokenize(f.tk, "Hello world", 11, 0, ids, 1, &n, &err), HERD_E_OVERFLOW);
    close_vocab(&f);
}

/* Splits the .inp file on the separator and compares with each .out line. */
static void run_vectors(const char *vocab_name) {
    char p[512], pi[600], po[600], rel[256];
    snprintf(rel, sizeof rel, "fixtures/tokenizer/%s", vocab_name);
    if (!test_shared_path(rel, p, sizeof p)) skip();
    snprintf(pi, sizeof pi, "%s.inp", p);
    snprintf(po, sizeof po, "%s.out", p);
    struct fixture f;
    open_vocab(&f, p);
    size_t ni, no;
    char *inp = (char *)test_read_file(pi, &ni), *outp = (char *)test_read_file(po, &no);
    inp = realloc(inp, ni + 1), inp[ni] = '\0';
    outp = realloc(outp, no + 1), outp[no] = '\0';
    const char *sep = "\n__ggml_vocab_test__\n";
    char *cur = inp, *line = outp;
    int cases = 0;
    int32_t *ids = malloc(65536 * sizeof *ids);
    for (char *end; (end = strstr(cur, sep)); cur = end + strlen(sep)) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        struct herd_error err = {0};
        uint32_t n;
        if (herd_tokenize(f.tk, cur, (size_t)(end - cur), 0, ids, 65536, &n, &err) != HERD_OK) fail_msg("%s", err.msg);
        char got[16384];
        size_t o = 0;
        for (uint32_t i = 0; i < n && o < sizeof got - 16; i++)
            o += (size_t)snprintf(got + o, sizeof got - o, " %d", ids[i]);
        got[o] = '\0';
        if (strcmp(got, line) != 0) fail_msg("%s case %d: got '%s', want '%s'", vocab_name, cases, got, line);
        line = nl + 1;
        cases++;
    }
    assert_int_equal(cases, 46);
    free(ids);
    free(inp);
    free(outp);
    close_vocab(&f);
}

static void test_llama_spm_vectors(void **state) {
    (void)state;
    run_vectors("ggml-vocab-llama-spm.gguf");
}

static void test_phi3_vectors(void **state) {
    (void)state;
    run_vectors("ggml-vocab-phi-3.gguf");
}

static void test_gpt2_vectors(void **state) {
    (void)state;
    run_vectors("ggml-vocab-gpt-2.gguf");
}

/* Writes the GPT-2 vocabulary with tokenizer.ggml.pre replaced; false
 * without ../shared. */
static bool vocab_with_pre(const char *pre, char *out, size_t n) {
    char src[512];
    if (!test_shared_path("fixtures/tokenizer/ggml-vocab-gpt-2.gguf", src, sizeof src)) return false;
    test_tmp_path("pre.gguf", out, n);
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    assert_int_equal(herd_gguf_open_file(src, &g, &err), HERD_OK);
    struct herd_gguf_writer *w = herd_gguf_writer_create();
    for (size_t i = 0; i < herd_gguf_n_kv(g); i++) {
        const struct herd_gguf_kv *kv = herd_gguf_kv_at(g, i);
        if (herd_gguf_str_eq(kv->key, "tokenizer.ggml.pre")) continue;
        assert_int_equal(herd_gguf_writer_add_kv_copy(w, kv, &err), HERD_OK);
    }
    assert_int_equal(herd_gguf_writer_add_string(w, "tokenizer.ggml.pre", pre, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_begin(w, out, &err), HERD_OK);
    assert_int_equal(herd_gguf_writer_finish(w, &err), HERD_OK);
    herd_gguf_writer_destroy(w);
    herd_gguf_destroy(g);
    return true;
}

/* A BPE vocabulary whose pre-tokenizer herd does not know is refused by name. */
static void test_unknown_pre_tokenizer(void **state) {
    (void)state;
    char out[512];
    if (!vocab_with_pre("made-up-pre", out, sizeof out)) skip();
    struct herd_error err = {0};
    struct fixture f = {0};
    assert_int_equal(herd_gguf_open_file(out, &f.g, &err), HERD_OK);
    assert_int_equal(herd_vocab_load(f.g, &f.v, &err), HERD_OK);
    assert_int_equal(herd_tokenizer_create(f.v, &f.tk, &err), HERD_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "made-up-pre"));
    herd_vocab_destroy(f.v);
    herd_gguf_destroy(f.g);
    unlink(out);
}

/* Every supported pre-tokenizer compiles and is lossless: byte-level BPE
 * detokenizes back to exactly the input, whatever the split. */
static void test_every_pre_tokenizer_round_trips(void **state) {
    (void)state;
    static const char *const names[] = {
        "gpt-2",        "llama-bpe", "llama3",   "qwen2",  "starcoder",      "refact",          "command-r", "smollm",
        "falcon",       "mpt",       "gpt-neox", "phi-2",  "deepseek-coder", "stablelm2",       "default",   "olmo",
        "deepseek-llm", "llama-v3",  "falcon3",  "megrez", "minerva-7b",     "deepseek-r1-qwen"};
    static const char text[] = "Hello world!  It's 12345 \xe2\x80\x94 \xc3\xbcn\xc3\xaf"
                               "code \xe4\xbd\xa0\xe5\xa5\xbd\n\n"
                               "   tabs\there, 3.14159, $x^2 <= y|z> ~ done.  ";
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!vocab_with_pre(names[i], path, sizeof path)) skip();
        struct fixture f;
        open_vocab(&f, path);
        int32_t ids[512];
        uint32_t n = 0;
        struct herd_error err = {0};
        if (herd_tokenize(f.tk, text, strlen(text), 0, ids, 512, &n, &err) != HERD_OK)
            fail_msg("%s: %s", names[i], err.msg);
        char back[1024];
        size_t o = 0;
        for (uint32_t k = 0; k < n; k++) o += herd_vocab_piece(f.v, ids[k], back + o, sizeof back - o);
        if (o != strlen(text) || memcmp(back, text, o) != 0) fail_msg("%s: the round trip changes the text", names[i]);
        close_vocab(&f);
        unlink(path);
    }
}

/* Segmenting the SentencePiece pass (for speed) gives the same ids as one
 * pass over the whole text, on varied text with spaces, runs of spaces,
 * newlines, digits, punctuation and non-Latin script. */
static void test_spm_segments_equal_whole_pass(void **state) {
    (void)state;
    char p[512];
    struct fixture f;
    open_vocab(&f, test_data_path("ggml-vocab-llama-spm.gguf", p, sizeof p));
    assert_true(f.tk->spm_cut_before_space && f.tk->spm_cut_at_newline); /* Llama's vocabulary allows both */
    static const char piece[] = "Once upon a time,  there were   three\n\nbears: 1234 \xc3\xbc\xc3\xa9 "
                                "\xe4\xbd\xa0\xe5\xa5\xbd\t(tab) end.\n  indented line\nHello world";
    char text[4096] = "";
    for (int i = 0; i < 20; i++) strcat(text, piece);
    int32_t *a = malloc(8192 * sizeof *a), *b = malloc(8192 * sizeof *b);
    uint32_t na, nb;
    struct herd_error err = {0};
    assert_int_equal(herd_tokenize(f.tk, text, strlen(text), HERD_TOK_ADD_SPECIAL, a, 8192, &na, &err), HERD_OK);
    f.tk->spm_cut_before_space = f.tk->spm_cut_at_newline = false;
    assert_int_equal(herd_tokenize(f.tk, text, strlen(text), HERD_TOK_ADD_SPECIAL, b, 8192, &nb, &err), HERD_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    free(a), free(b);
    close_vocab(&f);
}

/* Control-token text becomes those tokens only with HERD_TOK_PARSE_SPECIAL;
 * the longest special token wins; SentencePiece puts its space prefix on
 * the text after a special token. */
static void test_parse_special(void **state) {
    (void)state;
    char p[512];
    struct fixture f;
    open_vocab(&f, test_data_path("ggml-vocab-llama-spm.gguf", p, sizeof p));
    int32_t ids[64];
    uint32_t n;
    struct herd_error err = {0};
    const char *text = "<s>Hello</s> world";
    assert_int_equal(herd_tokenize(f.tk, text, strlen(text), HERD_TOK_PARSE_SPECIAL, ids, 64, &n, &err), HERD_OK);
    const int32_t want[] = {1, 15043, 2, 29871, 3186};
    assert_int_equal(n, 5);
    assert_memory_equal(ids, want, sizeof want);
    assert_int_equal(herd_tokenize(f.tk, text, strlen(text), 0, ids, 64, &n, &err), HERD_OK);
    for (uint32_t i = 0; i < n; i++) assert_true(ids[i] != 1 && ids[i] != 2); /* plain text: no BOS/EOS ids */
    close_vocab(&f);

    char q[512];
    if (!test_shared_path("fixtures/tokenizer/ggml-vocab-phi-3.gguf", q, sizeof q)) return;
    open_vocab(&f, q);
    text = "<|user|>\nHi<|end|>";
    assert_int_equal(herd_tokenize(f.tk, text, strlen(text), HERD_TOK_PARSE_SPECIAL, ids, 64, &n, &err), HERD_OK);
    assert_int_equal(ids[0], 32010);     /* <|user|> */
    assert_int_equal(ids[n - 1], 32007); /* <|end|> */
    close_vocab(&f);
}

/* Re-creates f's tokenizer after the test changed token types. */
static void rebuild(struct fixture *f) {
    struct herd_error err = {0};
    herd_tokenizer_destroy(f->tk);
    if (herd_tokenizer_create(f->v, &f->tk, &err) != HERD_OK) fail_msg("%s", err.msg);
}

static uint32_t tok_flags(struct fixture *f, const char *text, unsigned flags, int32_t *ids) {
    struct herd_error err = {0};
    uint32_t n = 0;
    if (herd_tokenize(f->tk, text, strlen(text), flags, ids, 4096, &n, &err) != HERD_OK) fail_msg("%s", err.msg);
    return n;
}

static int32_t id_of(struct fixture *f, const char *text) {
    int32_t id = herd_tokenizer_find(f->tk, text, strlen(text));
    assert_true(id >= 0);
    return id;
}

/* Added tokens as llama.cpp matches them: USER_DEFINED ones also without
 * HERD_TOK_PARSE_SPECIAL, CONTROL ones only with it; the longest text first
 * wherever it is (not the leftmost match), each piece of plain text after an
 * added token with SentencePiece's space prefix. */
static void test_added_tokens_longest_first(void **state) {
    (void)state;
    char p[512];
    struct fixture f;
    open_vocab(&f, test_data_path("ggml-vocab-llama-spm.gguf", p, sizeof p));
    const int32_t he = id_of(&f, "He"), ello = id_of(&f, "ello"), h = id_of(&f, "\xe2\x96\x81H");
    int32_t ids[64], want[64];
    const uint32_t n_plain = tok(&f, "Hello", want);
    f.v->type[he] = f.v->type[ello] = HERD_TOKEN_USER_DEFINED;
    rebuild(&f);
    /* "ello" (4 bytes) is taken before "He" (2 bytes), though "He" starts first */
    assert_int_equal(tok(&f, "Hello", ids), 2);
    assert_int_equal(ids[0], h);
    assert_int_equal(ids[1], ello);
    /* the text after an added token gets the space prefix, as at the start */
    uint32_t n = tok(&f, "Hello world", ids);
    struct herd_error err = {0};
    uint32_t n_rest = 0;
    assert_int_equal(herd_tokenize_spm(f.tk, " world", 6, true, want, 64, &n_rest, &err), HERD_OK);
    assert_int_equal(n, 2 + n_rest);
    assert_memory_equal(ids + 2, want, n_rest * sizeof *ids);
    /* as CONTROL tokens they count only with PARSE_SPECIAL */
    f.v->type[he] = f.v->type[ello] = HERD_TOKEN_CONTROL;
    rebuild(&f);
    assert_int_equal(tok(&f, "Hello", ids), n_plain);
    assert_int_equal(tok_flags(&f, "Hello", HERD_TOK_PARSE_SPECIAL, ids), 2);
    assert_int_equal(ids[1], ello);
    /* every place of a token, and the text between them */
    assert_int_equal(tok_flags(&f, "elloelloHe", HERD_TOK_PARSE_SPECIAL, ids), 3);
    assert_int_equal(ids[0], ello);
    assert_int_equal(ids[1], ello);
    assert_int_equal(ids[2], he);
    close_vocab(&f);
}

/* Strips: an RSTRIP token drops the ASCII whitespace after it, an LSTRIP
 * one the whitespace before it (flags set by hand here: no supported
 * vocabulary has an LSTRIP rule). */
static void test_added_token_strips(void **state) {
    (void)state;
    char p[512];
    struct fixture f;
    open_vocab(&f, test_data_path("ggml-vocab-llama-spm.gguf", p, sizeof p));
    const int32_t eos = 2;
    int32_t ids[64], want[64];
    const uint32_t n_b = tok(&f, "b", want); /* "▁b": the text after a token gets the prefix */
    for (uint32_t k = 0; k < f.tk->n_added; k++)
        if (f.tk->added[k].id == eos) f.tk->added[k].flags |= HERD_ADDED_RSTRIP | HERD_ADDED_LSTRIP;
    uint32_t n = tok_flags(&f, "a \t</s> \n\r\tb", HERD_TOK_PARSE_SPECIAL, ids);
    assert_int_equal(n, 2 + n_b);
    assert_int_equal(ids[1], eos);
    assert_memory_equal(ids + 2, want, n_b * sizeof *ids);
    /* only whitespace around it: nothing but the token is left */
    assert_int_equal(tok_flags(&f, "  </s>  ", HERD_TOK_PARSE_SPECIAL, ids), 1);
    assert_int_equal(ids[0], eos);
    close_vocab(&f);
}

/* Phi-3 (general.name "Phi3"): llama.cpp's rule strips the whitespace after
 * its added tokens except <unk>, <s> and <|endoftext|>; its </s> is
 * USER_DEFINED, so it is a token even without PARSE_SPECIAL. */
static void test_phi3_added_tokens(void **state) {
    (void)state;
    char q[512];
    if (!test_shared_path("fixtures/tokenizer/ggml-vocab-phi-3.gguf", q, sizeof q)) skip();
    struct fixture f;
    open_vocab(&f, q);
    int32_t ids[64], hi[16], nl_hi[16];
    const uint32_t n_hi = tok(&f, "Hi", hi), n_nl_hi = tok(&f, "\nHi", nl_hi);
    uint32_t n = tok_flags(&f, "<|user|>\n Hi", HERD_TOK_PARSE_SPECIAL, ids);
    assert_int_equal(n, 1 + n_hi);
    assert_int_equal(ids[0], 32010);
    assert_memory_equal(ids + 1, hi, n_hi * sizeof *ids);
    n = tok_flags(&f, "<s>\nHi", HERD_TOK_PARSE_SPECIAL, ids); /* <s> keeps the newline */
    assert_int_equal(n, 1 + n_nl_hi);
    assert_int_equal(ids[0], 1);
    assert_memory_equal(ids + 1, nl_hi, n_nl_hi * sizeof *ids);
    n = tok(&f, "Hi</s>  Hi", ids);
    assert_int_equal(n, 2 * n_hi + 1);
    assert_int_equal(ids[n_hi], 2);
    close_vocab(&f);
}

/* The default model's 512-token vocabulary round-trips llama2.c's texts:
 * tokenize, then detokenize, gives the text back byte for byte. */
static void test_stories260k_round_trip(void **state) {
    (void)state;
    char p[512], t[512];
    snprintf(p, sizeof p, "%s/models/stories260K.gguf", HERD_SOURCE_DIR);
    struct fixture f;
    open_vocab(&f, p);
    const char *files[] = {"stories260K/greedy-bos-60.txt", "stories260K/greedy-bos-256.txt"};
    for (int k = 0; k < 2; k++) {
        size_t n;
        char *text = (char *)test_read_file(test_data_path(files[k], t, sizeof t), &n);
        while (n && text[n - 1] == '\n') n--; /* run.c ends its output with a newline */
        int32_t ids[2048];
        uint32_t m;
        struct herd_error err = {0};
        assert_int_equal(herd_tokenize(f.tk, text, n, HERD_TOK_ADD_SPECIAL, ids, 2048, &m, &err), HERD_OK);
        assert_int_equal(ids[0], 1);
        struct herd_detok d;
        herd_detok_init(&d, f.v);
        char back[8192];
        size_t o = 0;
        for (uint32_t i = 0; i < m; i++) o += herd_detok_push(&d, ids[i], back + o, sizeof back - o);
        o += herd_detok_flush(&d, back + o, sizeof back - o);
        if (o != n || memcmp(back, text, n) != 0) fail_msg("%s does not round-trip", files[k]);
        free(text);
    }
    close_vocab(&f);
}

static void test_detok_utf8_holdback(void **state) {
    (void)state;
    char p[512];
    struct fixture f;
    open_vocab(&f, test_data_path("ggml-vocab-llama-spm.gguf", p, sizeof p));
    struct herd_detok d;
    herd_detok_init(&d, f.v);
    char out[128];
    /* "é" = C3 A9 as two byte tokens: nothing, then the whole character */
    assert_int_equal(herd_detok_push(&d, f.v->byte_token[0xc3], out, sizeof out), 0);
    size_t n = herd_detok_push(&d, f.v->byte_token[0xa9], out, sizeof out);
    assert_int_equal(n, 2);
    assert_memory_equal(out, "\xc3\xa9", 2);
    /* an impossible byte becomes U+FFFD; a dangling lead byte too, at flush */
    n = herd_detok_push(&d, f.v->byte_token[0xff], out, sizeof out);
    assert_int_equal(n, 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    assert_int_equal(herd_detok_push(&d, f.v->byte_token[0xe2], out, sizeof out), 0);
    assert_int_equal(herd_detok_flush(&d, out, sizeof out), 3);
    /* SPM drops the space prefix of the first piece only */
    herd_detok_init(&d, f.v);
    n = herd_detok_push(&d, 15043, out, sizeof out); /* "▁Hello" */
    assert_int_equal(n, 5);
    assert_memory_equal(out, "Hello", 5);
    n = herd_detok_push(&d, 3186, out, sizeof out); /* "▁world" */
    assert_memory_equal(out, " world", n);
    assert_int_equal(herd_detok_push(&d, 1, out, sizeof out), 0); /* BOS prints nothing */
    close_vocab(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_cases),
        cmocka_unit_test(test_llama_spm_vectors),
        cmocka_unit_test(test_phi3_vectors),
        cmocka_unit_test(test_gpt2_vectors),
        cmocka_unit_test(test_unknown_pre_tokenizer),
        cmocka_unit_test(test_every_pre_tokenizer_round_trips),
        cmocka_unit_test(test_detok_utf8_holdback),
        cmocka_unit_test(test_parse_special),
        cmocka_unit_test(test_stories260k_round_trip),
        cmocka_unit_test(test_spm_segments_equal_whole_pass),
        cmocka_unit_test(test_added_tokens_longest_first),
        cmocka_unit_test(test_added_token_strips),
        cmocka_unit_test(test_phi3_added_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

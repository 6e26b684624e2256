/* llama.cpp's vocabulary test files, as many as a directory holds: for each
 * NAME.gguf.inp with its NAME.gguf.out and NAME.gguf (a vocabulary-only
 * GGUF), every test string is tokenized with neither BOS/EOS nor special-
 * token parsing (tokenize(text, add_special = false, parse_special = false),
 * the options of llama.cpp's tests/test-tokenizer-0.cpp) and compared with
 * the expected ids. Prints one row per vocabulary and fails when a BPE or
 * SentencePiece vocabulary does not match; vocabularies of a kind herd does
 * not tokenize (WordPiece, Unigram, ...) and pairs whose GGUF is absent are
 * listed as skipped with the reason.
 *
 * The directory is the first argument or $HERD_LLAMA_VOCAB_DIR (the GGUFs
 * are llama.cpp's data and not part of this repository); without either the
 * test is skipped (exit 77). scripts/llama_vocab_tests.sh runs it. The file
 * formats are described in ../shared/fixtures/tokenizer/README.md. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "herd/gguf.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

/* The longest test string is a few hundred bytes; its ids fit many times. */
#define MAX_IDS 65536u

static const char *vocab_dir;

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Reads a whole file into a NUL-terminated buffer, or NULL when absent. */
static char *read_text_file(const char *path, size_t *len) {
    if (!test_path_exists(path)) return NULL;
    char *p = (char *)test_read_file(path, len);
    p = realloc(p, *len + 1);
    assert_non_null(p);
    p[*len] = '\0';
    return p;
}

/* Runs one pair; writes the table row to stdout. Returns 1 on a mismatch
 * or an error, 0 when every case passes or the vocabulary is skipped. */
static int run_pair(const char *name) {
    char pg[1024], pi[1100], po[1100];
    snprintf(pg, sizeof pg, "%s/%s", vocab_dir, name);
    snprintf(pi, sizeof pi, "%s.inp", pg);
    snprintf(po, sizeof po, "%s.out", pg);
    char row_name[64];
    /* "ggml-vocab-NAME.gguf" -> "NAME" */
    snprintf(row_name, sizeof row_name, "%.*s", (int)(strlen(name) - strlen("ggml-vocab-.gguf")), name + 11);
    if (!test_path_exists(pg) || !test_path_exists(po)) {
        printf("| %-16s | %-5s | %-16s | %5s | SKIP: %s is absent |\n", row_name, "-", "-", "-",
               !test_path_exists(pg) ? "the .gguf" : "the .out");
        return 0;
    }
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    struct herd_vocab *v = NULL;
    struct herd_tokenizer *tk = NULL;
    int failed = 0;
    char *inp = NULL, *outp = NULL;
    int32_t *ids = NULL;
    char model[32] = "-", pre[64] = "-";
    if (herd_gguf_open_file(pg, &g, &err) != HERD_OK) {
        printf("| %-16s | %-5s | %-16s | %5s | FAIL: %s |\n", row_name, model, pre, "-", err.msg);
        return 1;
    }
    struct herd_gguf_str s;
    if (herd_gguf_get_string(g, "tokenizer.ggml.model", &s, &err) == HERD_OK)
        herd_gguf_str_printable(s, model, sizeof model);
    if (herd_gguf_get_string(g, "tokenizer.ggml.pre", &s, &err) == HERD_OK) herd_gguf_str_printable(s, pre, sizeof pre);
    if (herd_vocab_load(g, &v, &err) != HERD_OK) {
        /* herd tokenizes SentencePiece and byte-level BPE only */
        const bool other = err.code == HERD_E_UNSUPPORTED;
        printf("| %-16s | %-5s | %-16s | %5s | %s: %s |\n", row_name, model, pre, "-", other ? "SKIP" : "FAIL",
               err.msg);
        failed = !other;
        goto out;
    }
    if (herd_tokenizer_create(v, &tk, &err) != HERD_OK) {
        printf("| %-16s | %-5s | %-16s | %5s | FAIL: %s |\n", row_name, model, pre, "-", err.msg);
        failed = 1;
        goto out;
    }
    size_t ni, no;
    inp = read_text_file(pi, &ni);
    outp = read_text_file(po, &no);
    ids = malloc(MAX_IDS * sizeof *ids);
    assert_non_null(ids);
    const char *sep = "\n__ggml_vocab_test__\n";
    char *cur = inp, *line = outp, first_fail[512] = "";
    int cases = 0, passed = 0;
    for (char *end; (end = strstr(cur, sep)); cur = end + strlen(sep), cases++) {
        char *nl = strchr(line, '\n');
        if (!nl) {
            snprintf(first_fail, sizeof first_fail, "the .out has fewer lines than the .inp has strings");
            break;
        }
        *nl = '\0';
        uint32_t n = 0;
        char got[16384] = "";
        size_t o = 0;
        if (herd_tokenize(tk, cur, (size_t)(end - cur), 0, ids, MAX_IDS, &n, &err) != HERD_OK)
            snprintf(got, sizeof got, "error: %s", err.msg);
        else
            for (uint32_t i = 0; i < n && o < sizeof got - 16; i++)
                o += (size_t)snprintf(got + o, sizeof got - o, " %d", ids[i]);
        if (strcmp(got, line) == 0) {
            passed++;
        } else {
            if (!first_fail[0]) {
                snprintf(first_fail, sizeof first_fail, "case %d '%.*s': got '%.60s', want '%.60s'", cases,
                         (int)((end - cur) < 24 ? (end - cur) : 24), cur, got, line);
                for (char *c = first_fail; *c; c++)
                    if (*c == '\n' || *c == '\t' || *c == '|') *c = ' ';
            }
            if (getenv("HERD_LLAMA_VOCAB_VERBOSE"))
                fprintf(stderr, "%s case %d:\n  text '%.*s'\n  got  '%s'\n  want '%s'\n", row_name, cases,
                        (int)(end - cur), cur, got, line);
        }
        line = nl + 1;
    }
    failed = passed != cases || cases == 0;
    printf("| %-16s | %-5s | %-16s | %2d/%-2d | %s%s%s |\n", row_name, model, pre, passed, cases,
           failed ? "FAIL" : "pass", first_fail[0] ? ": " : "", first_fail);
out:
    free(ids);
    free(inp);
    free(outp);
    herd_tokenizer_destroy(tk);
    herd_vocab_destroy(v);
    herd_gguf_destroy(g);
    return failed;
}

static void test_llama_vocab_pairs(void **state) {
    (void)state;
    DIR *d = opendir(vocab_dir);
    if (!d) fail_msg("cannot open %s", vocab_dir);
    char *names[256];
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < sizeof names / sizeof names[0];) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "ggml-vocab-", 11) == 0 && len > 9 && strcmp(e->d_name + len - 9, ".gguf.inp") == 0) {
            names[n] = strdup(e->d_name);
            names[n][len - 4] = '\0'; /* NAME.gguf */
            n++;
        }
    }
    closedir(d);
    qsort(names, n, sizeof names[0], by_name);
    printf("| %-16s | %-5s | %-16s | %5s | result |\n", "vocabulary", "model", "pre", "cases");
    printf("|------------------|-------|------------------|-------|--------|\n");
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        failed += run_pair(names[i]);
        free(names[i]);
    }
    fflush(stdout);
    if (n == 0) fail_msg("%s holds no ggml-vocab-*.gguf.inp", vocab_dir);
    if (failed) fail_msg("%d vocabularies do not match llama.cpp's test vectors", failed);
}

int main(int argc, char **argv) {
    vocab_dir = argc > 1 ? argv[1] : getenv("HERD_LLAMA_VOCAB_DIR");
    if (!vocab_dir || !*vocab_dir) {
        fprintf(stderr, "note: no llama.cpp vocabulary directory (set HERD_LLAMA_VOCAB_DIR or pass it): skipped\n");
        return TEST_SKIP_EXIT;
    }
    if (!test_path_exists(vocab_dir)) {
        fprintf(stderr, "note: %s is absent: skipped\n", vocab_dir);
        return TEST_SKIP_EXIT;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_vocab_pairs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

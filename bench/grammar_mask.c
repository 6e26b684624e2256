/* The grammar mask's cost per generated token (src/sampling/grammar.h):
 * loads a vocabulary from a GGUF file, builds its trie, then walks a text
 * that the grammar accepts one character at a time and times
 * herd_grammar_mask at every step, as a constrained generation would call
 * it. Prints the median, p90, p99 and max in microseconds, and the allowed
 * token counts.
 *
 * usage: herd_bench_grammar VOCAB.gguf [GRAMMAR.gbnf TEXT_FILE]
 * Without a grammar: JSON mode's (herd_grammar_json_object) and a JSON object of ~400 characters
 * (strings, numbers, nesting, escapes). Run by hand, not a test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mapped_file.h"
#include "base/timing.h"
#include "herd/gguf.h"
#include "sampling/grammar.h"
#include "tokenizer/vocab.h"

static const char *JSON_TEXT =
    "{\"name\": \"Ada Lovelace\", \"born\": 1815, \"fields\": [\"mathematics\", \"computing\"], "
    "\"notes\": {\"engine\": \"Analytical Engine\", \"program\": \"Bernoulli numbers\", \"year\": 1843, "
    "\"ratio\": -0.125e+2}, \"quote\": \"That brain of mine is something more than merely mortal; as time will "
    "show.\", \"tags\": [true, false, null, 3.14159, {\"k\": \"caf\\u00e9\"}], \"multiline\": \"a\\nb\\tc\"}";

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "usage: %s VOCAB.gguf [GRAMMAR.gbnf TEXT_FILE]\n", argv[0]);
        return 2;
    }
    struct herd_error err = {0};
    struct herd_gguf *gguf = NULL;
    struct herd_vocab *vocab = NULL;
    if (herd_gguf_open_file(argv[1], &gguf, &err) != HERD_OK || herd_vocab_load(gguf, &vocab, &err) != HERD_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    struct herd_mapped_file gfile = {0}, tfile = {0};
    const char *gtext = herd_grammar_json_object, *text = JSON_TEXT;
    size_t glen = strlen(herd_grammar_json_object), tlen = strlen(JSON_TEXT);
    if (argc == 4) {
        if (herd_mapped_file_init(&gfile, argv[2], &err) != HERD_OK ||
            herd_mapped_file_init(&tfile, argv[3], &err) != HERD_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        gtext = (const char *)gfile.data, glen = gfile.size, text = (const char *)tfile.data, tlen = tfile.size;
    }
    const uint32_t n = vocab->n_tokens;
    char **pieces = calloc(n, sizeof *pieces);
    uint32_t *lens = calloc(n, sizeof *lens);
    bool *eog = calloc(n, sizeof *eog);
    for (uint32_t t = 0; t < n; t++) {
        char buf[256];
        size_t len = herd_vocab_piece(vocab, (int32_t)t, buf, sizeof buf);
        if (len > sizeof buf) len = 0; /* longer pieces are not in the text here */
        pieces[t] = malloc(len + 1);
        memcpy(pieces[t], buf, len);
        lens[t] = (uint32_t)len;
        eog[t] = herd_vocab_is_eog(vocab, (int32_t)t);
    }
    struct herd_grammar *g = NULL;
    struct herd_grammar_vocab *gv = NULL;
    double t0 = herd_time_now_s();
    if (herd_grammar_vocab_create((const char *const *)pieces, lens, eog, n, &gv, &err) != HERD_OK ||
        herd_grammar_parse(gtext, glen, &g, &err) != HERD_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const double build_ms = (herd_time_now_s() - t0) * 1e3;
    struct herd_grammar_state *s = herd_grammar_state_create(g, &err);
    struct herd_grammar_mask_cache *cache = herd_grammar_mask_cache_create(gv, 64);
    double *us = malloc((tlen + 1) * sizeof *us);
    uint64_t allowed_sum = 0;
    uint32_t steps = 0, allowed_min = UINT32_MAX, allowed_max = 0;
    for (size_t i = 0; i <= tlen; i++) {
        const double a = herd_time_now_s();
        uint32_t k = 0;
        if (!herd_grammar_mask_cached(cache, s, &k)) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        us[steps++] = (herd_time_now_s() - a) * 1e6;
        allowed_sum += k;
        allowed_min = k < allowed_min ? k : allowed_min;
        allowed_max = k > allowed_max ? k : allowed_max;
        if (i == tlen) break;
        /* one whole character at a time, as tokens end on character bounds mostly */
        size_t c = 1;
        while (i + c < tlen && ((unsigned char)text[i + c] & 0xC0) == 0x80) c++;
        if (herd_grammar_accept(s, text + i, c, &err) != HERD_OK) {
            fprintf(stderr, "the grammar refuses the text at byte %zu: %s\n", i, err.msg);
            return 1;
        }
        i += c - 1;
    }
    qsort(us, steps, sizeof *us, cmp_double);
    uint64_t hits, misses;
    herd_grammar_mask_cache_stats(cache, &hits, &misses);
    printf("vocabulary %s: %u tokens, trie and grammar built in %.1f ms\n", argv[1], n, build_ms);
    printf("mask over %u steps (%llu from the cache, %llu computed): median %.1f us, p90 %.1f, p99 %.1f, max %.1f; "
           "allowed tokens min %u, mean %.0f, max %u\n",
           steps, (unsigned long long)hits, (unsigned long long)misses, us[steps / 2], us[steps * 9 / 10],
           us[steps * 99 / 100], us[steps - 1], allowed_min, (double)allowed_sum / steps, allowed_max);
    return 0;
}

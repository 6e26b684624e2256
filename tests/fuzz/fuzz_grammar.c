/* libFuzzer target for constrained decoding's input side: a request's
 * "grammar" (GBNF) or response_format json_schema, both client-supplied.
 * The input is a grammar, or a JSON Schema when it starts with '{', then
 * after a NUL byte a text fed to the matcher in small pieces with the mask
 * taken over a small vocabulary between them: never a crash, a leak, a
 * hang or unbounded memory, whatever the grammar. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sampling/grammar.h"
#include "sampling/json_schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* JSON fragments, multi-byte characters whole and split, an end token. */
static const char *const pieces[] = {
    "{", "}", "[",    "]",    "\"", ":",    ",",    " ",        "\n",           "a",    "ab",  "0",   "12",
    "-", ".", "true", "null", "\\", "\xc3", "\xa9", "\xc3\xa9", "\xe2\x82\xac", "\xff", "{\"", "\":", ""};
#define N_PIECES (sizeof pieces / sizeof pieces[0])

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static struct herd_grammar_vocab *vocab;
    struct herd_error err = {0};
    if (!vocab) {
        uint32_t lens[N_PIECES];
        bool eog[N_PIECES];
        for (size_t i = 0; i < N_PIECES; i++) lens[i] = (uint32_t)strlen(pieces[i]), eog[i] = lens[i] == 0;
        if (herd_grammar_vocab_create(pieces, lens, eog, N_PIECES, &vocab, &err) != HERD_OK) abort();
    }
    const uint8_t *nul = memchr(data, 0, size);
    const size_t spec = nul ? (size_t)(nul - data) : size;
    const char *text = nul ? (const char *)nul + 1 : "";
    const size_t text_len = nul ? size - spec - 1 : 0;
    struct herd_grammar *g = NULL;
    if (spec && data[0] == '{') {
        json_t *schema = json_loadb((const char *)data, spec, 0, NULL);
        char *gbnf = NULL;
        if (schema && herd_json_schema_to_gbnf(schema, &gbnf, &err) == HERD_OK) {
            /* a compiled schema must always be a grammar that parses */
            if (herd_grammar_parse(gbnf, strlen(gbnf), &g, &err) != HERD_OK) abort();
        }
        free(gbnf);
        json_decref(schema);
    } else {
        herd_grammar_parse((const char *)data, spec, &g, &err);
    }
    if (!g) return 0;
    struct herd_grammar_state *s = herd_grammar_state_create(g, &err);
    uint64_t bits[1];
    for (size_t i = 0; s && i < text_len && i < 512;) {
        const size_t n = 1 + (size_t)(text[i] & 3);
        herd_grammar_mask(s, vocab, bits);
        herd_grammar_accept(s, text + i, n <= text_len - i ? n : text_len - i, &err);
        (void)herd_grammar_can_end(s);
        i += n;
    }
    herd_grammar_state_destroy(s);
    herd_grammar_destroy(g);
    return 0;
}

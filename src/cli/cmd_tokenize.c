/* `herd tokenize` and `herd detokenize`: the model's own vocabulary from its
 * GGUF (vocabulary-only files work too), for checking prompts by hand and
 * for tests. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/timing.h"
#include "base/paths.h"
#include "cli/cli_args.h"
#include "cli/commands.h"
#include "herd/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

/* A token list longer than this is refused rather than allocated. */
#define TOKENIZE_MAX_IDS (1u << 24)

static const struct cli_command tok_cmd = {
    .name = "tokenize",
    .args = "[TEXT]",
    .summary = "Print the token ids of TEXT as a JSON array, with BOS (and EOS) added as the model's vocabulary asks.",
    .details = "Control-token text in TEXT (\"<s>\") is plain text unless --special; user-defined added tokens\n"
               "are matched always, as llama.cpp does. SentencePiece and byte-level BPE\n"
               "vocabularies are supported; a BPE pre-tokenizer herd does not know is an error naming it.",
    .min_pos = 0,
    .max_pos = 1,
};

static const struct cli_command detok_cmd = {
    .name = "detokenize",
    .args = "ID...",
    .summary = "Print the text of token ids (control tokens print nothing; invalid UTF-8 prints as U+FFFD).",
    .min_pos = 1,
    .max_pos = 1 << 16,
};

struct vocab_handle {
    struct herd_gguf *g;
    struct herd_vocab *v;
};

static bool open_vocab(const char *cmd, const char *model, struct vocab_handle *h) {
    char path[4096];
    const char *file = model ? model : herd_paths_data(HERD_PATH_DEFAULT_MODEL, path, sizeof path);
    struct herd_error err = {0};
    if (herd_gguf_open_file(file, &h->g, &err) != HERD_OK || herd_vocab_load(h->g, &h->v, &err) != HERD_OK) {
        fprintf(stderr, "herd %s: %s%s%s\n", cmd, h->g ? file : "", h->g ? ": " : "", err.msg);
        herd_gguf_destroy(h->g);
        h->g = NULL;
        return false;
    }
    return true;
}

static void close_vocab(struct vocab_handle *h) {
    herd_vocab_destroy(h->v);
    herd_gguf_destroy(h->g);
}

/* Reads a whole file (or stdin for "-") up to TOKENIZE_MAX_TEXT bytes. */
#define TOKENIZE_MAX_TEXT ((size_t)64 << 20)

static char *read_text(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "herd tokenize: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            if (cap >= TOKENIZE_MAX_TEXT) {
                fprintf(stderr, "herd tokenize: %s: larger than %zu bytes\n", path, TOKENIZE_MAX_TEXT);
                free(buf);
                buf = NULL;
                break;
            }
            char *p = realloc(buf, cap * 2);
            if (!p) free(buf);
            buf = p;
            cap *= 2;
        }
    }
    if (f != stdin) fclose(f);
    *len = n;
    return buf;
}

int herd_cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *file = NULL;
    bool no_bos = false, quiet = false, special = false;
    uint64_t repeat = 1;
    const struct cli_opt opts[] = {
        {"model", 'm', CLI_STRING, &model, "FILE", "GGUF model or vocabulary (default: the built-in model)"},
        {"no-bos", 0, CLI_FLAG, &no_bos, NULL, "add no BOS/EOS even if the vocabulary asks for them"},
        {"special", 0, CLI_FLAG, &special, NULL,
         "parse control-token text (\"<s>\", \"<|im_start|>\") as those tokens"},
        {"file", 'f', CLI_STRING, &file, "FILE", "read the text from FILE (- for stdin) instead of TEXT"},
        {"repeat", 0, CLI_U64, &repeat, "N", "tokenize N times and print the median time to stderr (benchmarks)"},
        {"quiet", 'q', CLI_FLAG, &quiet, NULL, "print only the token count, not the ids"},
        {0},
    };
    const char *pos[1];
    int n_pos;
    int prc = cli_parse(&tok_cmd, opts, argc, argv, pos, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    if ((n_pos == 1) == (file != NULL) || repeat == 0 || repeat > 1000) {
        fprintf(stderr, "herd tokenize: give TEXT or --file (not both); --repeat must be 1..1000\n");
        cli_print_help(&tok_cmd, opts, stderr);
        return 2;
    }
    size_t len = 0;
    char *owned = NULL;
    const char *text = n_pos ? pos[0] : NULL;
    if (file && !(text = owned = read_text(file, &len))) return 1;
    if (!file) len = strlen(text);
    struct vocab_handle h = {0};
    if (!open_vocab("tokenize", model, &h)) {
        free(owned);
        return 1;
    }
    struct herd_tokenizer *tk = NULL;
    struct herd_error err = {0};
    uint32_t max = len + 8 < TOKENIZE_MAX_IDS ? (uint32_t)len + 8 : TOKENIZE_MAX_IDS, n = 0;
    int32_t *ids = malloc(max * sizeof *ids);
    double *times = malloc(repeat * sizeof *times);
    int rc = 1;
    if (!ids || !times) goto out;
    if (herd_tokenizer_create(h.v, &tk, &err) != HERD_OK) goto fail;
    for (uint64_t r = 0; r < repeat; r++) {
        const double t0 = herd_time_now_s();
        if (herd_tokenize(tk, text, len, (no_bos ? 0 : HERD_TOK_ADD_SPECIAL) | (special ? HERD_TOK_PARSE_SPECIAL : 0),
                          ids, max, &n, &err) != HERD_OK)
            goto fail;
        times[r] = herd_time_now_s() - t0;
    }
    if (quiet) {
        printf("%u\n", n);
    } else {
        putchar('[');
        for (uint32_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
        printf("]\n");
    }
    if (repeat > 1) {
        const double med = herd_median(times, (size_t)repeat);
        fprintf(stderr, "herd tokenize: %zu bytes -> %u tokens, median of %llu: %.2f ms (%.1f MB/s)\n", len, n,
                (unsigned long long)repeat, med * 1e3, (double)len / med / 1e6);
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "herd tokenize: %s\n", err.msg);
out:
    free(ids);
    free(times);
    free(owned);
    herd_tokenizer_destroy(tk);
    close_vocab(&h);
    return rc;
}

int herd_cmd_detokenize(int argc, char **argv) {
    const char *model = NULL;
    const struct cli_opt opts[] = {
        {"model", 'm', CLI_STRING, &model, "FILE", "GGUF model or vocabulary (default: the built-in model)"},
        {0},
    };
    const char **pos = malloc((1 << 16) * sizeof *pos);
    if (!pos) return 1;
    int n_pos;
    int prc = cli_parse(&detok_cmd, opts, argc, argv, pos, &n_pos);
    if (prc != CLI_OK) {
        free(pos);
        return prc == CLI_EXIT_OK ? 0 : prc;
    }
    struct vocab_handle h = {0};
    if (!open_vocab("detokenize", model, &h)) {
        free(pos);
        return 1;
    }
    struct herd_detok d;
    herd_detok_init(&d, h.v);
    char out[1024];
    int rc = 0;
    for (int i = 0; i < n_pos; i++) {
        char *end;
        errno = 0;
        long id = strtol(pos[i], &end, 10);
        if (*end || errno || id < 0 || (uint64_t)id >= h.v->n_tokens) {
            fprintf(stderr, "herd detokenize: '%s' is not a token id of this vocabulary (0..%u)\n", pos[i],
                    h.v->n_tokens - 1);
            rc = 2;
            break;
        }
        fwrite(out, 1, herd_detok_push(&d, (int32_t)id, out, sizeof out), stdout);
    }
    fwrite(out, 1, herd_detok_flush(&d, out, sizeof out), stdout);
    putchar('\n');
    close_vocab(&h);
    free(pos);
    return rc;
}

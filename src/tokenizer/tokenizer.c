/* Token lookup table and the tokenize entry point. */
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "base/checked.h"

HERD_WRAPS_ON_PURPOSE static uint32_t hash_bytes(const char *p, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

/* Special tokens sorted longest text first, so "<|im_start|>" wins over "<". */
struct special {
    uint64_t len;
    int32_t id;
};

static int longer_first(const void *a, const void *b) {
    const struct special *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

enum herd_status herd_tokenizer_create(const struct herd_vocab *vocab, struct herd_tokenizer **out,
                                       struct herd_error *err) {
    *out = NULL;
    struct herd_tokenizer *tk = calloc(1, sizeof *tk);
    if (!tk) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    uint32_t cap = 1024;
    while (cap < 2 * vocab->n_tokens) cap *= 2; /* load factor <= 1/2 keeps probes short */
    tk->vocab = vocab;
    tk->mask = cap - 1;
    tk->slots = malloc(cap * sizeof *tk->slots);
    if (!tk->slots) {
        free(tk);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    memset(tk->slots, 0xff, cap * sizeof *tk->slots);
    for (uint32_t id = 0; id < vocab->n_tokens; id++) {
        const struct herd_gguf_str *s = &vocab->text[id];
        if (herd_tokenizer_find(tk, s->ptr, (size_t)s->len) >= 0) continue; /* first of duplicates wins */
        uint32_t i = hash_bytes(s->ptr, (size_t)s->len) & tk->mask;
        while (tk->slots[i] >= 0) i = (i + 1) & tk->mask;
        tk->slots[i] = (int32_t)id;
    }
    tk->specials = malloc(vocab->n_tokens * sizeof *tk->specials);
    if (!tk->specials) {
        herd_tokenizer_destroy(tk);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    struct special *sp = malloc(vocab->n_tokens * sizeof *sp);
    if (!sp) {
        herd_tokenizer_destroy(tk);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    uint32_t n_sp = 0;
    for (uint32_t id = 0; id < vocab->n_tokens; id++)
        if ((vocab->type[id] == HERD_TOKEN_CONTROL || vocab->type[id] == HERD_TOKEN_USER_DEFINED) &&
            vocab->text[id].len)
            sp[n_sp++] = (struct special){vocab->text[id].len, (int32_t)id};
    qsort(sp, n_sp, sizeof *sp, longer_first);
    for (uint32_t i = 0; i < n_sp; i++) tk->specials[i] = sp[i].id;
    tk->n_specials = n_sp;
    free(sp);
    if (vocab->kind == HERD_VOCAB_SPM) {
        tk->spm_cut_before_space = tk->spm_cut_at_newline = true;
        for (uint32_t id = 0; id < vocab->n_tokens; id++) {
            const struct herd_gguf_str *t = &vocab->text[id];
            if (t->len > 1 && memchr(t->ptr, '\n', (size_t)t->len)) tk->spm_cut_at_newline = false;
            for (uint64_t k = 1; k + 3 <= t->len; k++) {
                bool mark = memcmp(t->ptr + k, "\xe2\x96\x81", 3) == 0;
                bool after_mark = k >= 3 && memcmp(t->ptr + k - 3, "\xe2\x96\x81", 3) == 0;
                if (mark && !after_mark) tk->spm_cut_before_space = false;
            }
        }
    }
    if (vocab->kind == HERD_VOCAB_BPE) {
        enum herd_status rc = herd_bpe_create(tk, vocab->pre, &tk->bpe, err);
        if (rc != HERD_OK) {
            herd_tokenizer_destroy(tk);
            return rc;
        }
    }
    *out = tk;
    return HERD_OK;
}

void herd_tokenizer_destroy(struct herd_tokenizer *tk) {
    if (!tk) return;
    herd_bpe_destroy(tk->bpe);
    free(tk->specials);
    free(tk->slots);
    free(tk);
}

int32_t herd_tokenizer_find(const struct herd_tokenizer *tk, const char *text, size_t len) {
    uint32_t i = hash_bytes(text, len) & tk->mask;
    for (;;) {
        int32_t id = tk->slots[i];
        if (id < 0) return -1;
        const struct herd_gguf_str *s = &tk->vocab->text[id];
        if (s->len == len && memcmp(s->ptr, text, len) == 0) return id;
        i = (i + 1) & tk->mask;
    }
}

/* Tokenizes one fragment of plain text, appending to out[*n..). */
static enum herd_status plain(const struct herd_tokenizer *tk, const char *text, size_t len, bool first, int32_t *out,
                              uint32_t max, uint32_t *n, struct herd_error *err) {
    if (len == 0) return HERD_OK;
    uint32_t got = 0;
    enum herd_status rc = tk->vocab->kind == HERD_VOCAB_SPM
                              ? herd_tokenize_spm(tk, text, len, first, out + *n, max - *n, &got, err)
                              : herd_tokenize_bpe(tk, text, len, out + *n, max - *n, &got, err);
    if (rc == HERD_OK) *n += got;
    return rc;
}

/* The longest special token whose text starts at p (at most left bytes), or -1. */
static int32_t special_at(const struct herd_tokenizer *tk, const char *p, size_t left) {
    for (uint32_t i = 0; i < tk->n_specials; i++) { /* longest first */
        const struct herd_gguf_str *t = &tk->vocab->text[tk->specials[i]];
        if (t->len <= left && (uint8_t)t->ptr[0] == (uint8_t)p[0] && memcmp(t->ptr, p, (size_t)t->len) == 0)
            return tk->specials[i];
    }
    return -1;
}

enum herd_status herd_tokenize(const struct herd_tokenizer *tk, const char *text, size_t len, unsigned flags,
                               int32_t *out, uint32_t max, uint32_t *n_out, struct herd_error *err) {
    const struct herd_vocab *v = tk->vocab;
    const bool add_special = flags & HERD_TOK_ADD_SPECIAL;
    uint32_t n = 0;
    enum herd_status rc = HERD_OK;
    if (add_special && v->add_bos && v->bos >= 0) {
        if (max == 0) return herd_error_set(err, HERD_E_INVALID, "no room for tokens");
        out[n++] = v->bos;
    }
    if (!(flags & HERD_TOK_PARSE_SPECIAL) || tk->n_specials == 0) {
        rc = plain(tk, text, len, true, out, max, &n, err);
    } else {
        /* split at special-token text; SentencePiece puts its space prefix on
         * the text after each special token, as llama.cpp does */
        size_t start = 0, i = 0;
        bool after_special = true;
        while (rc == HERD_OK && i < len) {
            int32_t id = special_at(tk, text + i, len - i);
            if (id < 0) {
                i++;
                continue;
            }
            rc = plain(tk, text + start, i - start, after_special, out, max, &n, err);
            if (rc != HERD_OK) break;
            if (n >= max) return herd_error_set(err, HERD_E_OVERFLOW, "text is longer than %u tokens", max);
            out[n++] = id;
            i += (size_t)v->text[id].len;
            start = i;
            after_special = true;
        }
        if (rc == HERD_OK) rc = plain(tk, text + start, len - start, after_special || start == 0, out, max, &n, err);
    }
    if (rc != HERD_OK) return rc;
    if (add_special && v->add_eos && v->eos >= 0) {
        if (n >= max) return herd_error_set(err, HERD_E_OVERFLOW, "text is longer than %u tokens", max);
        out[n++] = v->eos;
    }
    *n_out = n;
    return HERD_OK;
}

/* SentencePiece (tokenizer.ggml.model = "llama") tokenization from GGUF
 * scores, as llama.cpp's llm_tokenizer_spm does it:
 *   1. spaces become "▁", and one "▁" goes in front when add_space_prefix;
 *   2. the text is split into UTF-8 characters (symbols);
 *   3. adjacent pairs whose concatenation is a token are queued by that
 *      token's score (then leftmost first); the best pair merges, and the
 *      merged symbol's new neighbour pairs are queued, until none is left;
 *   4. each final symbol is its token, or, when the text is not in the
 *      vocabulary, its bytes as <0xNN> byte tokens (or <unk>). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

struct symbol {
    uint32_t start, len;
    int32_t prev, next;
};

struct bigram {
    float score;
    int32_t left;
    uint32_t len; /* of the merged text, to detect stale entries */
};

/* max-heap by score, then by smaller left index */
static bool bigram_before(const struct bigram *a, const struct bigram *b) {
    if (a->score != b->score) return a->score > b->score;
    return a->left < b->left;
}

struct heap {
    struct bigram *v;
    size_t n, cap;
};

static bool heap_push(struct heap *h, struct bigram b) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        struct bigram *p = realloc(h->v, cap * sizeof *p);
        if (!p) return false;
        h->v = p;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0 && bigram_before(&b, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = b;
    return true;
}

static struct bigram heap_pop(struct heap *h) {
    struct bigram top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        const struct bigram *cand = &last;
        if (l < h->n && bigram_before(&h->v[l], cand)) best = l, cand = &h->v[l];
        if (r < h->n && bigram_before(&h->v[r], cand)) best = r;
        if (best == i) break;
        h->v[i] = h->v[best];
        i = best;
    }
    if (h->n) h->v[i] = last;
    return top;
}

struct spm {
    const struct herd_tokenizer *tk;
    const char *text;
    struct symbol *sym;
    struct heap heap;
    int32_t *out;
    uint32_t max, n;
    bool overflow, nomem;
};

static void try_bigram(struct spm *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    uint32_t len = s->sym[left].len + s->sym[right].len;
    int32_t id = herd_tokenizer_find(s->tk, s->text + s->sym[left].start, len);
    if (id < 0) return;
    if (!heap_push(&s->heap, (struct bigram){s->tk->vocab->score[id], left, len})) s->nomem = true;
}

static void emit(struct spm *s, int32_t id) {
    if (s->n >= s->max) {
        s->overflow = true;
        return;
    }
    s->out[s->n++] = id;
}

static void emit_symbol(struct spm *s, const struct symbol *sym) {
    const struct herd_vocab *v = s->tk->vocab;
    int32_t id = herd_tokenizer_find(s->tk, s->text + sym->start, sym->len);
    if (id >= 0) {
        emit(s, id);
        return;
    }
    /* Merges only ever form vocabulary tokens, so an unknown symbol is a
     * single character: fall back to its bytes. */
    for (uint32_t i = 0; i < sym->len; i++) {
        int32_t b = v->byte_token[(uint8_t)s->text[sym->start + i]];
        emit(s, b >= 0 ? b : (v->unk >= 0 ? v->unk : 0));
    }
}

static uint32_t utf8_len(uint8_t c) {
    if (c < 0x80) return 1;
    if ((c >> 5) == 6) return 2;
    if ((c >> 4) == 14) return 3;
    if ((c >> 3) == 30) return 4;
    return 1; /* stray continuation or invalid byte: a symbol of its own */
}

static bool is_space_mark(const char *p, uint32_t len) { return len == 3 && memcmp(p, "\xe2\x96\x81", 3) == 0; }

/* True when no merge can join symbols x and y (adjacent), so a segment may
 * end between them. */
static bool segment_cut(const struct herd_tokenizer *tk, const char *text, const struct symbol *x,
                        const struct symbol *y) {
    const bool x_space = is_space_mark(text + x->start, x->len), y_space = is_space_mark(text + y->start, y->len);
    if (tk->spm_cut_before_space && y_space && !x_space) return true;
    if (tk->spm_cut_at_newline && ((x->len == 1 && text[x->start] == '\n') || (y->len == 1 && text[y->start] == '\n')))
        return true;
    return false;
}

enum herd_status herd_tokenize_spm(const struct herd_tokenizer *tk, const char *text, size_t len, bool add_prefix,
                                   int32_t *out, uint32_t max, uint32_t *n_out, struct herd_error *err) {
    const struct herd_vocab *v = tk->vocab;
    /* escaped text: "▁" prefix and every ' ' -> "▁" (3 bytes) */
    size_t cap = 3 * len + 4;
    char *buf = malloc(cap);
    struct symbol *sym = malloc((len + 2) * sizeof *sym);
    struct spm s = {.tk = tk, .text = buf, .sym = sym, .out = out, .max = max};
    enum herd_status rc = HERD_OK;
    if (!buf || !sym) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory tokenizing %zu bytes", len);
        goto out;
    }
    size_t o = 0;
    if (add_prefix && v->add_space_prefix && len > 0) memcpy(buf, "\xe2\x96\x81", 3), o = 3;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ')
            memcpy(buf + o, "\xe2\x96\x81", 3), o += 3;
        else
            buf[o++] = text[i];
    }
    int32_t n_sym = 0;
    for (size_t i = 0; i < o;) {
        uint32_t l = utf8_len((uint8_t)buf[i]);
        if (i + l > o) l = (uint32_t)(o - i);
        sym[n_sym++] = (struct symbol){(uint32_t)i, l, -1, -1};
        i += l;
    }
    /* Segments the merges cannot cross (see herd_tokenizer_create): each is
     * tokenized on its own, which keeps the priority queue small and in
     * cache; the result is the same as one pass over the whole text. */
    for (int32_t a = 0; a < n_sym && !s.nomem && !s.overflow;) {
        int32_t b = a + 1;
        while (b < n_sym && !segment_cut(tk, buf, &sym[b - 1], &sym[b])) b++;
        for (int32_t i = a; i < b; i++) {
            sym[i].prev = i > a ? i - 1 : -1;
            sym[i].next = i + 1 < b ? i + 1 : -1;
        }
        s.heap.n = 0;
        for (int32_t i = a + 1; i < b; i++) try_bigram(&s, i - 1, i);
        while (s.heap.n && !s.nomem) {
            struct bigram bg = heap_pop(&s.heap);
            struct symbol *left = &sym[bg.left];
            if (left->len == 0 || left->next < 0) continue;
            struct symbol *right = &sym[left->next];
            if (left->len + right->len != bg.len) continue; /* stale: one side changed since */
            left->len += right->len;
            right->len = 0;
            left->next = right->next;
            if (right->next >= 0) sym[right->next].prev = bg.left;
            try_bigram(&s, left->prev, bg.left);
            try_bigram(&s, bg.left, left->next);
        }
        for (int32_t i = a; i >= 0 && i < b; i = sym[i].next) emit_symbol(&s, &sym[i]);
        a = b;
    }
    if (s.nomem) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory tokenizing %zu bytes", len);
        goto out;
    }
    if (s.overflow) {
        rc = herd_error_set(err, HERD_E_OVERFLOW, "text is longer than %u tokens", max);
        goto out;
    }
    *n_out = s.n;
out:
    free(s.heap.v);
    free(buf);
    free(sym);
    return rc;
}

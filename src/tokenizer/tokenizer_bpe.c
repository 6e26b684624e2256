/* Byte-level BPE (tokenizer.ggml.model = "gpt2"), as Hugging Face's GPT-2
 * tokenizer does it:
 *   1. the pre-tokenizer named by tokenizer.ggml.pre splits the text into
 *      words with its regular expression (PCRE2 with Unicode properties and
 *      JIT, not hand-written Unicode tables);
 *   2. each word's bytes become the byte-level alphabet's characters (bytes
 *      that print map to themselves, the rest to U+0100 and up);
 *   3. adjacent symbols merge by the rank of their pair in
 *      tokenizer.ggml.merges (lowest rank first, leftmost on ties) until no
 *      pair is a merge; each final symbol is a token.
 * Pre-tokenizers herd does not know are refused by name at load. */
#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "tokenizer/tokenizer.h"

/* Pre-tokenizers, as sequences of patterns. Each pattern splits every
 * fragment left by the previous one into its matches and the gaps between
 * them, all kept (Hugging Face's Split with the "Isolated" behaviour), so a
 * sequence reproduces tokenizer.json's Sequence of Splits. The patterns are
 * those of the models' tokenizer.json files (PCRE2 supports the (?i:) and
 * lookahead forms directly); the names are the tokenizer.ggml.pre values
 * llama.cpp's converter writes, and "default" is llama.cpp's fallback set.
 * Only gpt-2 is checked against reference vectors (../shared/fixtures);
 * deepseek-llm (a long explicit letter list) is not here yet. */
#define GPT2_PAT "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define LLAMA3_PAT                                                                                                     \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                                         \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"                                                                     \
    "\\s+(?!\\S)|\\s+"
#define QWEN2_PAT                                                                                                      \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"  \
    "\\s+(?!\\S)|\\s+"

#define MAX_PATTERNS 6

static const struct {
    const char *names[8];
    const char *patterns[MAX_PATTERNS];
} pre_tokenizers[] = {
    {{"gpt-2", "gpt2", "mpt", "olmo", "jais", "gpt-neox", "phi-2"}, {GPT2_PAT}},
    {{"llama3", "llama-bpe", "dbrx", "smaug-bpe"}, {LLAMA3_PAT}},
    {{"qwen2", "stablelm2"}, {QWEN2_PAT}},
    {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva"}, {"\\p{N}", GPT2_PAT}},
    {{"falcon"}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2_PAT, "[0-9][0-9][0-9]"}},
    {{"deepseek-coder"},
     {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+",
      "\\p{N}"}},
    {{"default"}, {"[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_PAT, "\\p{N}+", "[0-9][0-9][0-9]"}},
};

/* ------------------------------------------------------------ merges table */

HERD_WRAPS_ON_PURPOSE static uint32_t hash2(const char *a, size_t na, const char *b, size_t nb) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < na; i++) h = (h ^ (uint8_t)a[i]) * 16777619u;
    h = (h ^ 0xffu) * 16777619u; /* a separator no UTF-8 text contains */
    for (size_t i = 0; i < nb; i++) h = (h ^ (uint8_t)b[i]) * 16777619u;
    return h;
}

struct merge {
    const char *left, *right;
    uint32_t nl, nr;
};

struct herd_bpe {
    pcre2_code *re[MAX_PATTERNS];
    pcre2_match_data *md[MAX_PATTERNS];
    int n_re;
    struct merge *merges; /* by rank */
    uint32_t n_merges;
    int32_t *slots; /* open addressing: merge rank by (left, right), -1 empty */
    uint32_t mask;
};

static int32_t merge_rank(const struct herd_bpe *b, const char *l, size_t nl, const char *r, size_t nr) {
    uint32_t i = hash2(l, nl, r, nr) & b->mask;
    for (;;) {
        int32_t rank = b->slots[i];
        if (rank < 0) return -1;
        const struct merge *m = &b->merges[rank];
        if (m->nl == nl && m->nr == nr && memcmp(m->left, l, nl) == 0 && memcmp(m->right, r, nr) == 0) return rank;
        i = (i + 1) & b->mask;
    }
}

void herd_bpe_destroy(struct herd_bpe *b) {
    if (!b) return;
    for (int i = 0; i < b->n_re; i++) {
        pcre2_match_data_free(b->md[i]);
        pcre2_code_free(b->re[i]);
    }
    free(b->merges);
    free(b->slots);
    free(b);
}

enum herd_status herd_bpe_create(const struct herd_gguf *g, const char *pre, struct herd_bpe **out,
                                 struct herd_error *err) {
    *out = NULL;
    int which = -1;
    for (size_t i = 0; which < 0 && i < sizeof pre_tokenizers / sizeof pre_tokenizers[0]; i++)
        for (size_t j = 0; j < 8 && pre_tokenizers[i].names[j]; j++)
            if (strcmp(pre_tokenizers[i].names[j], pre) == 0) which = (int)i;
    if (which < 0)
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "pre-tokenizer '%s' is not supported (see docs/modules/sampling-tokenizer.md)", pre);
    struct herd_gguf_array merges;
    enum herd_status rc = herd_gguf_get_array(g, "tokenizer.ggml.merges", HERD_GGUF_VTYPE_STRING, &merges, err);
    if (rc != HERD_OK) return rc;
    if (merges.count > (1u << 24))
        return herd_error_set(err, HERD_E_INVALID, "tokenizer.ggml.merges has %llu entries",
                              (unsigned long long)merges.count);
    struct herd_bpe *b = calloc(1, sizeof *b);
    if (!b) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    for (int i = 0; i < MAX_PATTERNS && pre_tokenizers[which].patterns[i]; i++) {
        int code;
        PCRE2_SIZE offset;
        b->re[i] = pcre2_compile((PCRE2_SPTR)pre_tokenizers[which].patterns[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP, &code, &offset, NULL);
        if (!b->re[i]) {
            herd_bpe_destroy(b);
            return herd_error_set(err, HERD_E_INVALID,
                                  "pre-tokenizer '%s': pattern %d does not compile (PCRE2 error %d)", pre, i, code);
        }
        b->n_re = i + 1;
        pcre2_jit_compile(b->re[i], PCRE2_JIT_COMPLETE); /* the interpreter serves if JIT is unavailable */
        b->md[i] = pcre2_match_data_create_from_pattern(b->re[i], NULL);
        if (!b->md[i]) {
            herd_bpe_destroy(b);
            return herd_error_set(err, HERD_E_NOMEM, "out of memory");
        }
    }
    const uint32_t n = (uint32_t)merges.count;
    uint32_t cap = 1024;
    while (cap < 2 * n) cap *= 2;
    b->merges = malloc((n ? n : 1) * sizeof *b->merges);
    b->slots = malloc(cap * sizeof *b->slots);
    if (!b->merges || !b->slots) {
        herd_bpe_destroy(b);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory for %u merges", n);
    }
    b->mask = cap - 1;
    memset(b->slots, 0xff, cap * sizeof *b->slots);
    struct herd_gguf_str_iter it;
    struct herd_gguf_str s;
    herd_gguf_str_iter_init(&it, &merges);
    for (uint32_t rank = 0; herd_gguf_str_iter_next(&it, &s); rank++) {
        const char *sp = memchr(s.ptr, ' ', (size_t)s.len);
        if (!sp || sp == s.ptr || sp == s.ptr + s.len - 1) {
            herd_bpe_destroy(b);
            return herd_error_set(err, HERD_E_FORMAT,
                                  "tokenizer.ggml.merges entry %u is not two tokens split by a space", rank);
        }
        struct merge *m = &b->merges[b->n_merges];
        m->left = s.ptr;
        m->nl = (uint32_t)(sp - s.ptr);
        m->right = sp + 1;
        m->nr = (uint32_t)(s.len - m->nl - 1);
        if (merge_rank(b, m->left, m->nl, m->right, m->nr) >= 0) continue; /* the first (lowest rank) wins */
        uint32_t i = hash2(m->left, m->nl, m->right, m->nr) & b->mask;
        while (b->slots[i] >= 0) i = (i + 1) & b->mask;
        b->slots[i] = (int32_t)b->n_merges++;
    }
    *out = b;
    return HERD_OK;
}

/* ------------------------------------------------------------ one word */

/* GPT-2's byte-level alphabet: printable bytes map to themselves, the 68
 * others to U+0100.. in byte order. */
static uint32_t byte_char(uint8_t c) {
    static uint32_t table[256];
    static int ready;
    if (!ready) { /* idempotent; racing initialisers write the same values */
        uint32_t next = 256;
        for (int b = 0; b < 256; b++) {
            bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            table[b] = printable ? (uint32_t)b : next++;
        }
        ready = 1;
    }
    return table[c];
}

static size_t put_utf8(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6)); /* the alphabet stays below U+0800 */
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

struct sym {
    uint32_t start, len;
    int32_t prev, next;
};

struct big {
    int32_t rank, left;
    uint32_t len;
};

static bool big_before(const struct big *a, const struct big *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

struct word {
    const struct herd_tokenizer *tk;
    const struct herd_bpe *bpe;
    const char *text; /* the word in the byte-level alphabet */
    struct sym *sym;
    struct big *heap;
    size_t n_heap, cap_heap;
    bool nomem;
};

static void push(struct word *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const struct sym *l = &w->sym[left], *r = &w->sym[right];
    int32_t rank = merge_rank(w->bpe, w->text + l->start, l->len, w->text + r->start, r->len);
    if (rank < 0) return;
    if (w->n_heap == w->cap_heap) {
        size_t cap = w->cap_heap ? w->cap_heap * 2 : 32;
        struct big *p = realloc(w->heap, cap * sizeof *p);
        if (!p) {
            w->nomem = true;
            return;
        }
        w->heap = p;
        w->cap_heap = cap;
    }
    struct big b = {rank, left, l->len + r->len};
    size_t i = w->n_heap++;
    while (i > 0 && big_before(&b, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = b;
}

static struct big pop(struct word *w) {
    struct big top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        const struct big *c = &last;
        if (l < w->n_heap && big_before(&w->heap[l], c)) best = l, c = &w->heap[l];
        if (r < w->n_heap && big_before(&w->heap[r], c)) best = r;
        if (best == i) break;
        w->heap[i] = w->heap[best];
        i = best;
    }
    if (w->n_heap) w->heap[i] = last;
    return top;
}

/* Tokenizes one pre-tokenized word (raw bytes) into out. */
static enum herd_status encode_word(const struct herd_tokenizer *tk, const struct herd_bpe *bpe, const char *bytes,
                                    size_t n, int32_t *out, uint32_t max, uint32_t *n_out, struct herd_error *err) {
    char *text = malloc(2 * n + 1);
    struct sym *sym = malloc((n + 1) * sizeof *sym);
    struct word w = {tk, bpe, text, sym, NULL, 0, 0, false};
    enum herd_status rc = HERD_OK;
    if (!text || !sym) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = put_utf8(byte_char((uint8_t)bytes[i]), text + o);
        sym[i] = (struct sym){(uint32_t)o, (uint32_t)k, (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1};
        o += k;
    }
    for (size_t i = 1; i < n; i++) push(&w, (int32_t)i - 1, (int32_t)i);
    while (w.n_heap && !w.nomem) {
        struct big b = pop(&w);
        struct sym *l = &sym[b.left];
        if (l->len == 0 || l->next < 0) continue;
        struct sym *r = &sym[l->next];
        if (l->len + r->len != b.len) continue; /* stale */
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        push(&w, l->prev, b.left);
        push(&w, b.left, l->next);
    }
    if (w.nomem) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    for (int32_t i = 0; n > 0 && i >= 0; i = sym[i].next) {
        int32_t id = herd_tokenizer_find(tk, text + sym[i].start, sym[i].len);
        if (id < 0) id = tk->vocab->unk >= 0 ? tk->vocab->unk : 0; /* a merge product missing from the vocabulary */
        if (*n_out >= max) {
            rc = herd_error_set(err, HERD_E_INVALID, "text is longer than %u tokens", max);
            goto out;
        }
        out[(*n_out)++] = id;
    }
out:
    free(text);
    free(sym);
    free(w.heap);
    return rc;
}

/* Fragments of the text (offset, length) during pre-tokenization. */
struct frags {
    size_t *off, *len;
    size_t n, cap;
};

static bool frag_push(struct frags *f, size_t off, size_t len) {
    if (len == 0) return true;
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 64;
        size_t *o = realloc(f->off, cap * sizeof *o), *l = o ? realloc(f->len, cap * sizeof *l) : NULL;
        if (o) f->off = o;
        if (!o || !l) return false;
        f->len = l;
        f->cap = cap;
    }
    f->off[f->n] = off;
    f->len[f->n++] = len;
    return true;
}

/* Splits every fragment of in by pattern i into matches and gaps (out). */
static enum herd_status split(const struct herd_bpe *b, int i, const char *text, const struct frags *in,
                              struct frags *out, struct herd_error *err) {
    for (size_t k = 0; k < in->n; k++) {
        const PCRE2_SPTR frag = (PCRE2_SPTR)(text + in->off[k]);
        const size_t len = in->len[k];
        PCRE2_SIZE start = 0, gap = 0;
        while (start < len) {
            /* the whole text was UTF-8-checked once before splitting */
            int m = pcre2_match(b->re[i], frag, len, start, PCRE2_NO_UTF_CHECK, b->md[i], NULL);
            if (m == PCRE2_ERROR_NOMATCH) break;
            if (m < 0) {
                PCRE2_UCHAR msg[128];
                pcre2_get_error_message(m, msg, sizeof msg);
                return herd_error_set(err, HERD_E_INVALID, "cannot pre-tokenize the text: %s", (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(b->md[i]);
            if (ov[1] <= ov[0]) { /* an empty match cannot make progress: step one character */
                start = ov[0] + 1;
                while (start < len && (frag[start] & 0xc0) == 0x80) start++;
                continue;
            }
            if (!frag_push(out, in->off[k] + gap, ov[0] - gap) || !frag_push(out, in->off[k] + ov[0], ov[1] - ov[0]))
                return herd_error_set(err, HERD_E_NOMEM, "out of memory");
            gap = start = ov[1];
        }
        if (!frag_push(out, in->off[k] + gap, len - gap)) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    return HERD_OK;
}

enum herd_status herd_tokenize_bpe(const struct herd_tokenizer *tk, const char *text, size_t len, int32_t *out,
                                   uint32_t max, uint32_t *n_out, struct herd_error *err) {
    const struct herd_bpe *b = tk->bpe;
    *n_out = 0;
    int code;
    PCRE2_SIZE bad;
    if (len && (code = pcre2_match(b->re[0], (PCRE2_SPTR)text, len, 0, 0, b->md[0], NULL)) < PCRE2_ERROR_NOMATCH) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(code, msg, sizeof msg);
        bad = pcre2_get_startchar(b->md[0]);
        return herd_error_set(err, HERD_E_INVALID, "the text is not valid UTF-8 (%s, near byte %zu)", (const char *)msg,
                              (size_t)bad);
    }
    struct frags a = {0}, c = {0};
    enum herd_status rc = HERD_OK;
    if (!frag_push(&a, 0, len)) rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
    for (int i = 0; rc == HERD_OK && i < b->n_re; i++) {
        c.n = 0;
        rc = split(b, i, text, &a, &c, err);
        struct frags t = a;
        a = c;
        c = t;
    }
    for (size_t k = 0; rc == HERD_OK && k < a.n; k++)
        rc = encode_word(tk, b, text + a.off[k], a.len[k], out, max, n_out, err);
    free(a.off), free(a.len), free(c.off), free(c.len);
    return rc;
}

/* Token lookup table and the tokenize entry point. */
#include "tokenizer/tokenizer.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"

HERD_WRAPS_ON_PURPOSE static uint32_t hash_bytes(const char *p, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

/* --------------------------------------------------------- added tokens */

/* Matching order: longer text first, so "<|im_start|>" wins over "<", and
 * among equal lengths the lower id (llama.cpp sorts by length alone with an
 * unstable sort; two tokens of one length compete only where their texts
 * overlap in the input). */
static int match_order(const void *a, const void *b) {
    const struct herd_added *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

static bool token_is(const struct herd_vocab *v, int32_t id, const char *text) {
    const struct herd_gguf_str *t = &v->text[id];
    return t->len == strlen(text) && memcmp(t->ptr, text, (size_t)t->len) == 0;
}

/* llama.cpp's per-model strip rules (llama_vocab::impl::load): a model whose
 * general.name contains "phi-3" or "phi3" (any case) strips the whitespace
 * after each added token and </s>, except <unk>, <s> and <|endoftext|>. */
static bool is_phi3(const struct herd_vocab *v) {
    struct herd_gguf_str name;
    struct herd_error e;
    if (herd_gguf_get_string(v->gguf, "general.name", &name, &e) != HERD_OK) return false;
    char low[256]; /* names are short; a longer one is cut, as no rule needs its tail */
    size_t n = name.len < sizeof low - 1 ? (size_t)name.len : sizeof low - 1;
    for (size_t i = 0; i < n; i++) low[i] = (char)tolower((unsigned char)name.ptr[i]);
    low[n] = '\0';
    return strstr(low, "phi-3") || strstr(low, "phi3");
}

static uint32_t bucket_of(const char *p, uint32_t len) {
    return len == 1 ? 65536u + (uint8_t)p[0] : (uint32_t)(uint8_t)p[0] << 8 | (uint8_t)p[1];
}

/* Collects the added tokens in matching order and indexes them by bucket. */
static enum herd_status build_added(struct herd_tokenizer *tk, struct herd_error *err) {
    const struct herd_vocab *v = tk->vocab;
    uint32_t n = 0;
    for (uint32_t id = 0; id < v->n_tokens; id++) {
        const uint8_t t = v->type[id];
        if ((t == HERD_TOKEN_CONTROL || t == HERD_TOKEN_USER_DEFINED || t == HERD_TOKEN_UNKNOWN) && v->text[id].len)
            n++;
    }
    if (n == 0) return HERD_OK;
    tk->added = malloc(n * sizeof *tk->added);
    tk->bucket_start = calloc(HERD_ADDED_BUCKETS + 1, sizeof *tk->bucket_start);
    tk->bucket_items = malloc(n * sizeof *tk->bucket_items);
    if (!tk->added || !tk->bucket_start || !tk->bucket_items) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    const bool phi3 = is_phi3(v);
    for (uint32_t id = 0; id < v->n_tokens; id++) {
        const uint8_t t = v->type[id];
        const struct herd_gguf_str *s = &v->text[id];
        if (!(t == HERD_TOKEN_CONTROL || t == HERD_TOKEN_USER_DEFINED || t == HERD_TOKEN_UNKNOWN) || !s->len) continue;
        /* texts are at most HERD_MAX_TOKEN_BYTES long (herd_vocab_load checks), so len fits */
        struct herd_added a = {(int32_t)id, (uint32_t)s->len, t == HERD_TOKEN_USER_DEFINED ? 0 : HERD_ADDED_PARSE_ONLY};
        if (phi3 && !token_is(v, a.id, "<unk>") && !token_is(v, a.id, "<s>") && !token_is(v, a.id, "<|endoftext|>"))
            a.flags |= HERD_ADDED_RSTRIP;
        tk->added[tk->n_added++] = a;
        if (t == HERD_TOKEN_USER_DEFINED) tk->n_user++;
    }
    qsort(tk->added, n, sizeof *tk->added, match_order);
    /* counting sort into buckets keeps the matching order inside each */
    for (uint32_t k = 0; k < n; k++) {
        const struct herd_added *a = &tk->added[k];
        const char *p = v->text[a->id].ptr;
        tk->bucket_start[bucket_of(p, a->len) + 1]++;
        tk->first_byte[(uint8_t)p[0]] |= a->flags & HERD_ADDED_PARSE_ONLY ? 2 : 1;
    }
    for (uint32_t b = 0; b < HERD_ADDED_BUCKETS; b++) tk->bucket_start[b + 1] += tk->bucket_start[b];
    uint32_t *fill = malloc(HERD_ADDED_BUCKETS * sizeof *fill);
    if (!fill) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    memcpy(fill, tk->bucket_start, HERD_ADDED_BUCKETS * sizeof *fill);
    for (uint32_t k = 0; k < n; k++) {
        const struct herd_added *a = &tk->added[k];
        tk->bucket_items[fill[bucket_of(v->text[a->id].ptr, a->len)]++] = k;
    }
    free(fill);
    return HERD_OK;
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
        uint32_t i = hash_bytes(s->ptr, (size_t)s->len) & tk->mask;
        for (; tk->slots[i] >= 0; i = (i + 1) & tk->mask) {
            const struct herd_gguf_str *o = &vocab->text[tk->slots[i]];
            if (o->len == s->len && memcmp(o->ptr, s->ptr, (size_t)s->len) == 0) break;
        }
        tk->slots[i] = (int32_t)id; /* the last of duplicate texts wins, as in llama.cpp's token_to_id */
    }
    enum herd_status rc = build_added(tk, err);
    if (rc != HERD_OK) {
        herd_tokenizer_destroy(tk);
        return rc;
    }
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
        rc = herd_bpe_create(tk, vocab->pre, &tk->bpe, err);
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
    free(tk->added);
    free(tk->bucket_start);
    free(tk->bucket_items);
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

/* ------------------------------------------------------ partition */

/* A piece of the text after the added tokens are cut out: plain text
 * [off, off + len) when id < 0, else the added token id. */
struct piece {
    size_t off, len;
    int32_t id;
};

struct pieces {
    struct piece *v;
    size_t n, cap;
};

static bool piece_push(struct pieces *p, size_t off, size_t len, int32_t id) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 16;
        struct piece *q = realloc(p->v, cap * sizeof *q);
        if (!q) return false;
        p->v = q;
        p->cap = cap;
    }
    p->v[p->n++] = (struct piece){off, len, id};
    return true;
}

/* isspace() in the C locale, which llama.cpp's strips use. */
static bool ascii_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* One pass over the text: first[k] = where added token k first occurs (or
 * SIZE_MAX), for the tokens the flags allow. Returns how many occur. The
 * hot loop: one table test per byte, and a bucket of candidates only at
 * bytes that start an added token. */
static uint32_t find_occurring(const struct herd_tokenizer *tk, const char *text, size_t len, bool parse_special,
                               size_t *first) {
    const uint8_t want = parse_special ? 3 : 1;
    const uint32_t can_occur = parse_special ? tk->n_added : tk->n_user;
    uint32_t found = 0;
    for (uint32_t k = 0; k < tk->n_added; k++) first[k] = SIZE_MAX;
    for (size_t i = 0; i < len && found < can_occur; i++) {
        const uint8_t c = (uint8_t)text[i];
        if (!(tk->first_byte[c] & want)) continue;
        for (int one = 0; one < 2; one++) {
            if (!one && i + 1 >= len) continue;
            const uint32_t b = one ? 65536u + c : (uint32_t)c << 8 | (uint8_t)text[i + 1];
            for (uint32_t j = tk->bucket_start[b]; j < tk->bucket_start[b + 1]; j++) {
                const uint32_t k = tk->bucket_items[j];
                const struct herd_added *a = &tk->added[k];
                if (first[k] != SIZE_MAX || (!parse_special && (a->flags & HERD_ADDED_PARSE_ONLY)) || a->len > len - i)
                    continue;
                if (memcmp(text + i, tk->vocab->text[a->id].ptr, a->len) == 0) {
                    first[k] = i;
                    found++;
                }
            }
        }
    }
    return found;
}

/* Cuts the plain pieces of in at every place of added token k, left to
 * right, into out (llama.cpp's tokenizer_st_partition for one token). */
static bool cut_at(const struct herd_tokenizer *tk, uint32_t k, size_t from, const char *text, const struct pieces *in,
                   struct pieces *out) {
    const struct herd_added *a = &tk->added[k];
    const char *needle = tk->vocab->text[a->id].ptr;
    out->n = 0;
    for (size_t q = 0; q < in->n; q++) {
        const struct piece pc = in->v[q];
        if (pc.id >= 0 || pc.off + pc.len < from + a->len) { /* a token, or ends before the first place */
            if (!piece_push(out, pc.off, pc.len, pc.id)) return false;
            continue;
        }
        const size_t end = pc.off + pc.len;
        size_t start = pc.off; /* of the plain text not yet cut */
        for (;;) {
            const size_t s = start > from ? start : from;
            const char *hit = s < end ? memmem(text + s, end - s, needle, a->len) : NULL;
            if (!hit) {
                if (end > start && !piece_push(out, start, end - start, -1)) return false;
                break;
            }
            const size_t m = (size_t)(hit - text);
            size_t left_end = m;
            if (a->flags & HERD_ADDED_LSTRIP)
                while (left_end > start && ascii_space(text[left_end - 1])) left_end--;
            if (left_end > start && !piece_push(out, start, left_end - start, -1)) return false;
            if (!piece_push(out, m, a->len, a->id)) return false;
            start = m + a->len;
            if (a->flags & HERD_ADDED_RSTRIP)
                while (start < end && ascii_space(text[start])) start++;
        }
    }
    return true;
}

/* Splits text into plain pieces and added tokens (out->v, in text order).
 * Costs one pass over the text, plus one memmem pass per distinct added
 * token that occurs in it. */
static enum herd_status partition(const struct herd_tokenizer *tk, const char *text, size_t len, bool parse_special,
                                  struct pieces *out, struct herd_error *err) {
    struct pieces other = {0};
    size_t *first = NULL;
    enum herd_status rc = HERD_OK;
    out->n = 0;
    if (!piece_push(out, 0, len, -1)) goto nomem;
    if (len == 0 || (parse_special ? tk->n_added : tk->n_user) == 0) return HERD_OK;
    first = malloc(tk->n_added * sizeof *first);
    if (!first) goto nomem;
    if (find_occurring(tk, text, len, parse_special, first) == 0) goto out;
    for (uint32_t k = 0; k < tk->n_added; k++) {
        if (first[k] == SIZE_MAX) continue;
        if (!cut_at(tk, k, first[k], text, out, &other)) goto nomem;
        struct pieces t = *out;
        *out = other;
        other = t;
    }
    goto out;
nomem:
    rc = herd_error_set(err, HERD_E_NOMEM, "out of memory splitting %zu bytes at added tokens", len);
out:
    free(first);
    free(other.v);
    return rc;
}

enum herd_status herd_tokenize(const struct herd_tokenizer *tk, const char *text, size_t len, unsigned flags,
                               int32_t *out, uint32_t max, uint32_t *n_out, struct herd_error *err) {
    const struct herd_vocab *v = tk->vocab;
    const bool add_special = flags & HERD_TOK_ADD_SPECIAL;
    uint32_t n = 0;
    struct pieces ps = {0};
    enum herd_status rc = partition(tk, text, len, flags & HERD_TOK_PARSE_SPECIAL, &ps, err);
    if (rc != HERD_OK) goto out;
    if (add_special && v->add_bos && v->bos >= 0) {
        if (max == 0) {
            rc = herd_error_set(err, HERD_E_INVALID, "no room for tokens");
            goto out;
        }
        out[n++] = v->bos;
    }
    /* SentencePiece puts its space prefix on the text at the start and after
     * each added token, as llama.cpp does */
    bool after_added = true;
    for (size_t k = 0; k < ps.n && rc == HERD_OK; k++) {
        if (ps.v[k].id < 0) {
            rc = plain(tk, text + ps.v[k].off, ps.v[k].len, after_added, out, max, &n, err);
            after_added = false;
        } else if (n >= max) {
            rc = herd_error_set(err, HERD_E_OVERFLOW, "text is longer than %u tokens", max);
        } else {
            out[n++] = ps.v[k].id;
            after_added = true;
        }
    }
    if (rc != HERD_OK) goto out;
    if (add_special && v->add_eos && v->eos >= 0) {
        if (n >= max) {
            rc = herd_error_set(err, HERD_E_OVERFLOW, "text is longer than %u tokens", max);
            goto out;
        }
        out[n++] = v->eos;
    }
    *n_out = n;
out:
    free(ps.v);
    return rc;
}

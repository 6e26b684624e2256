/* Byte-level BPE (tokenizer.ggml.model = "gpt2"), as Hugging Face's GPT-2
 * tokenizer does it:
 *   1. the pre-tokenizer named by tokenizer.ggml.pre splits the text into
 *      words with its regular expression (PCRE2 with Unicode properties and
 *      JIT, not hand-written Unicode tables);
 *   2. each word's bytes become the byte-level alphabet's characters (bytes
 *      that print map to themselves, the rest to U+0100 and up);
 *   3. adjacent symbols merge by the rank of their pair in
 *      tokenizer.ggml.merges (lowest rank first, leftmost on ties) until no
 *      pair is a merge; each final symbol is a token (with ignore_merges, a
 *      word that is a token whole is taken as it is first).
 * Pre-tokenizers herd does not know are refused by name at load. */
#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/utf8.h"
#include "base/vocab_limits.h"
#include "tokenizer/tokenizer.h"

/* Pre-tokenizers, as sequences of patterns. Each pattern splits every
 * fragment left by the previous one into its matches and the gaps between
 * them, all kept (Hugging Face's Split with the "Isolated" behaviour), so a
 * sequence reproduces tokenizer.json's Sequence of Splits. The patterns are
 * those of the models' tokenizer.json files (PCRE2 supports the (?i:) and
 * lookahead forms directly); the names are the tokenizer.ggml.pre values
 * llama.cpp's converter writes, and "default" is llama.cpp's fallback set.
 * gpt-2, mpt, falcon, starcoder, refact, deepseek-coder, deepseek-llm,
 * qwen2, llama-bpe and "default" (gpt-neox) pass llama.cpp's vocabulary
 * test files (tests/tokenizer/test_llama_vocab.c). */
#define GPT2_PAT "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define LLAMA3_PAT                                                                                                     \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                                         \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"                                                                     \
    "\\s+(?!\\S)|\\s+"
#define QWEN2_PAT                                                                                                      \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"  \
    "\\s+(?!\\S)|\\s+"

/* deepseek-llm's tokenizer.json spells its letter class out (the cased
 * letters of many scripts) instead of using \\p{L}; here as code points.
 * Its punctuation and CJK patterns are as deepseek-coder's but wider. */
#define DEEPSEEK_LLM_LETTERS                                                                                           \
    "A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}"                    \
    "\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-"                     \
    "\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-"                    \
    "\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-"                   \
    "\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-"                  \
    "\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}"                    \
    "\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-"                  \
    "\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-"                  \
    "\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}"                     \
    "\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}"                   \
    "\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}"                    \
    "\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-"                  \
    "\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-"                  \
    "\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}"                    \
    "\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}"

#define MAX_PATTERNS 6

/* ignore_merges: a word that is a token whole is that token, without the
 * merges (Hugging Face's BPE option, which Llama 3's tokenizer.json sets and
 * llama.cpp applies to its llama3 names): some of its tokens cannot be built
 * by its merges ("ệt"). */
static const struct {
    const char *names[8];
    bool ignore_merges;
    const char *patterns[MAX_PATTERNS];
} pre_tokenizers[] = {
    {{"gpt-2", "gpt2", "mpt", "olmo", "jais", "gpt-neox", "phi-2"}, false, {GPT2_PAT}},
    {{"llama3", "llama-bpe", "llama-v3", "falcon3"}, true, {LLAMA3_PAT}},
    {{"dbrx", "smaug-bpe"}, false, {LLAMA3_PAT}},
    {{"qwen2", "stablelm2", "deepseek-r1-qwen", "megrez"}, false, {QWEN2_PAT}},
    {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva", "minerva-7b"},
     false,
     {"\\p{N}", GPT2_PAT}},
    {{"falcon"}, false, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2_PAT, "[0-9][0-9][0-9]"}},
    {{"deepseek-coder"},
     false,
     {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+",
      "\\p{N}"}},
    {{"deepseek-llm"},
     false,
     {"[\r\n]", "\\s?[" DEEPSEEK_LLM_LETTERS "]+",
      "\\s?[\\x{21}-\\x{2F}\\x{3A}-\\x{7E}\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]"
      "+",
      "\\s+$", "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+", "\\p{N}+"}},
    {{"default"}, false, {"[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_PAT, "\\p{N}+", "[0-9][0-9][0-9]"}},
};

/* ------------------------------------------------------------ merges table */

/* Every symbol during BPE is a token (single byte-level characters are
 * tokens, and a merge's result is one), so merges are keyed by the pair of
 * token ids and carry the id they produce: a lookup is one integer hash
 * probe, no string compare. */
struct merge_slot {
    uint64_t key; /* left id << 32 | right id; UINT64_MAX when empty */
    int32_t rank;
    int32_t result;
};

struct herd_bpe {
    pcre2_code *re[MAX_PATTERNS];
    pcre2_match_data *md[MAX_PATTERNS];
    int n_re;
    struct merge_slot *slots;
    uint64_t mask;
    int32_t byte_id[256]; /* token of each byte's byte-level character, -1 if missing */
    bool ignore_merges;
    char byte_utf8[256][2]; /* each byte's byte-level character in UTF-8 (1 or 2 bytes) */
    uint8_t byte_utf8_len[256];
};

HERD_WRAPS_ON_PURPOSE static uint64_t hash_key(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

static const struct merge_slot *find_merge(const struct herd_bpe *b, int32_t left, int32_t right) {
    const uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (uint64_t i = hash_key(key) & b->mask;; i = (i + 1) & b->mask) {
        if (b->slots[i].key == key) return &b->slots[i];
        if (b->slots[i].key == UINT64_MAX) return NULL;
    }
}

void herd_bpe_destroy(struct herd_bpe *b) {
    if (!b) return;
    for (int i = 0; i < b->n_re; i++) {
        pcre2_match_data_free(b->md[i]);
        pcre2_code_free(b->re[i]);
    }
    free(b->slots);
    free(b);
}

/* GPT-2's byte-level alphabet: printable bytes map to themselves, the 68
 * others to U+0100.. in byte order. */
static uint32_t byte_char(uint8_t c) {
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        if (b == c) return printable ? (uint32_t)b : next;
        if (!printable) next++;
    }
    return 0;
}

enum herd_status herd_bpe_create(const struct herd_tokenizer *tk, const char *pre, struct herd_bpe **out,
                                 struct herd_error *err) {
    *out = NULL;
    const struct herd_gguf *g = tk->vocab->gguf;
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
    b->ignore_merges = pre_tokenizers[which].ignore_merges;
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
    for (int c = 0; c < 256; c++) {
        char u[2];
        const size_t ul = herd_utf8_encode(byte_char((uint8_t)c), u); /* U+0021..U+0143: 1 or 2 bytes */
        b->byte_id[c] = herd_tokenizer_find(tk, u, ul);
        memcpy(b->byte_utf8[c], u, ul);
        b->byte_utf8_len[c] = (uint8_t)ul;
    }
    const uint32_t n = (uint32_t)merges.count;
    uint64_t cap = 1024;
    while (cap < 2 * (uint64_t)n) cap *= 2;
    b->slots = malloc(cap * sizeof *b->slots);
    if (!b->slots) {
        herd_bpe_destroy(b);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory for %u merges", n);
    }
    for (uint64_t i = 0; i < cap; i++) b->slots[i].key = UINT64_MAX;
    b->mask = cap - 1;
    char joined[2 * HERD_MAX_TOKEN_BYTES];
    struct herd_gguf_str_iter it;
    struct herd_gguf_str s;
    herd_gguf_str_iter_init(&it, &merges);
    for (uint32_t rank = 0; herd_gguf_str_iter_next(&it, &s); rank++) {
        const char *sp = memchr(s.ptr, ' ', (size_t)s.len);
        if (!sp || sp == s.ptr || sp == s.ptr + s.len - 1 || s.len > sizeof joined) {
            herd_bpe_destroy(b);
            return herd_error_set(err, HERD_E_FORMAT,
                                  "tokenizer.ggml.merges entry %u is not two tokens split by a space", rank);
        }
        const size_t nl = (size_t)(sp - s.ptr), nr = (size_t)s.len - nl - 1;
        memcpy(joined, s.ptr, nl);
        memcpy(joined + nl, sp + 1, nr);
        const int32_t l = herd_tokenizer_find(tk, s.ptr, nl), r = herd_tokenizer_find(tk, sp + 1, nr);
        const int32_t res = herd_tokenizer_find(tk, joined, nl + nr);
        /* a merge whose parts or product are not tokens can never apply */
        if (l < 0 || r < 0 || res < 0 || find_merge(b, l, r)) continue; /* the first (lowest rank) wins */
        const uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
        uint64_t i = hash_key(key) & b->mask;
        while (b->slots[i].key != UINT64_MAX) i = (i + 1) & b->mask;
        b->slots[i] = (struct merge_slot){key, (int32_t)rank, res};
    }
    *out = b;
    return HERD_OK;
}

/* ------------------------------------------------------------ one word */

struct sym {
    int32_t id; /* the token this symbol is */
    int32_t prev, next;
    uint32_t len; /* raw bytes covered; 0 once merged away */
};

struct big {
    int32_t rank, left;
    int32_t left_id, right_id, result;
};

static bool big_before(const struct big *a, const struct big *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

/* Working memory for words, reused across the words of one call. */
struct word {
    const struct herd_bpe *bpe;
    struct sym *sym;
    size_t cap_sym;
    struct big *heap;
    size_t n_heap, cap_heap;
    bool nomem;
};

static void push(struct word *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const struct merge_slot *m = find_merge(w->bpe, w->sym[left].id, w->sym[right].id);
    if (!m) return;
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
    struct big b = {m->rank, left, w->sym[left].id, w->sym[right].id, m->result};
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
static enum herd_status encode_word(struct word *w, const struct herd_tokenizer *tk, const char *bytes, size_t n,
                                    int32_t *out, uint32_t max, uint32_t *n_out, struct herd_error *err) {
    if (n > w->cap_sym) {
        size_t cap = n > 2 * w->cap_sym ? n : 2 * w->cap_sym;
        struct sym *p = realloc(w->sym, cap * sizeof *p);
        if (!p) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
        w->sym = p;
        w->cap_sym = cap;
    }
    if (w->bpe->ignore_merges && n <= HERD_MAX_TOKEN_BYTES) {
        char text[2 * HERD_MAX_TOKEN_BYTES]; /* the word in the byte-level alphabet */
        size_t len = 0;
        for (size_t i = 0; i < n; i++) {
            const uint8_t c = (uint8_t)bytes[i];
            memcpy(text + len, w->bpe->byte_utf8[c], w->bpe->byte_utf8_len[c]);
            len += w->bpe->byte_utf8_len[c];
        }
        const int32_t id = herd_tokenizer_find(tk, text, len);
        if (id >= 0) {
            if (*n_out >= max) return herd_error_set(err, HERD_E_OVERFLOW, "text is longer than %u tokens", max);
            out[(*n_out)++] = id;
            return HERD_OK;
        }
    }
    struct sym *sym = w->sym;
    const int32_t fallback = tk->vocab->unk >= 0 ? tk->vocab->unk : 0;
    w->n_heap = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = w->bpe->byte_id[(uint8_t)bytes[i]];
        sym[i] = (struct sym){id >= 0 ? id : fallback, (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, 1};
    }
    for (size_t i = 1; i < n; i++) push(w, (int32_t)i - 1, (int32_t)i);
    while (w->n_heap && !w->nomem) {
        struct big b = pop(w);
        struct sym *l = &sym[b.left];
        if (l->len == 0 || l->next < 0 || l->id != b.left_id) continue;
        struct sym *r = &sym[l->next];
        if (r->id != b.right_id) continue; /* stale: a side changed since */
        l->id = b.result;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        push(w, l->prev, b.left);
        push(w, b.left, l->next);
    }
    if (w->nomem) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    for (int32_t i = 0; n > 0 && i >= 0; i = sym[i].next) {
        if (*n_out >= max) return herd_error_set(err, HERD_E_OVERFLOW, "text is longer than %u tokens", max);
        out[(*n_out)++] = sym[i].id;
    }
    return HERD_OK;
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
    struct word w = {.bpe = b};
    for (size_t k = 0; rc == HERD_OK && k < a.n; k++)
        rc = encode_word(&w, tk, text + a.off[k], a.len[k], out, max, n_out, err);
    free(w.sym), free(w.heap);
    free(a.off), free(a.len), free(c.off), free(c.len);
    return rc;
}

/* Vocabulary loading and detokenization. */
#include "tokenizer/vocab.h"

#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "base/utf8.h"
#include "base/vocab_limits.h"

static int32_t opt_id(const struct herd_gguf *g, const char *key, uint32_t n) {
    uint64_t v;
    struct herd_error e;
    if (herd_gguf_get_uint(g, key, UINT32_MAX, &v, &e) != HERD_OK || v >= n) return -1;
    return (int32_t)v;
}

static bool opt_bool(const struct herd_gguf *g, const char *key, bool def) {
    bool b;
    struct herd_error e;
    return herd_gguf_get_bool(g, key, &b, &e) == HERD_OK ? b : def;
}

enum herd_status herd_vocab_load(const struct herd_gguf *g, struct herd_vocab **out, struct herd_error *err) {
    *out = NULL;
    struct herd_gguf_str model;
    enum herd_status rc = herd_gguf_get_string(g, "tokenizer.ggml.model", &model, err);
    if (rc != HERD_OK) return rc;
    enum herd_vocab_kind kind;
    if (herd_gguf_str_eq(model, "llama"))
        kind = HERD_VOCAB_SPM;
    else if (herd_gguf_str_eq(model, "gpt2"))
        kind = HERD_VOCAB_BPE;
    else {
        char buf[64];
        return herd_error_set(err, HERD_E_UNSUPPORTED, "tokenizer model '%s' is not supported (llama, gpt2 are)",
                              herd_gguf_str_printable(model, buf, sizeof buf));
    }
    struct herd_gguf_array tokens, scores, types;
    if ((rc = herd_gguf_get_array(g, "tokenizer.ggml.tokens", HERD_GGUF_VTYPE_STRING, &tokens, err)) != HERD_OK)
        return rc;
    if (tokens.count == 0 || tokens.count > (1u << 22))
        return herd_error_set(err, HERD_E_INVALID, "vocabulary of %llu tokens", (unsigned long long)tokens.count);
    bool have_scores = herd_gguf_get_array(g, "tokenizer.ggml.scores", HERD_GGUF_VTYPE_F32, &scores, err) == HERD_OK &&
                       scores.count == tokens.count;
    bool have_types =
        herd_gguf_get_array(g, "tokenizer.ggml.token_type", HERD_GGUF_VTYPE_I32, &types, err) == HERD_OK &&
        types.count == tokens.count;
    struct herd_vocab *v = calloc(1, sizeof *v);
    if (!v) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    const uint32_t n = (uint32_t)tokens.count;
    v->kind = kind;
    v->gguf = g;
    struct herd_gguf_str pre;
    if (herd_gguf_get_string(g, "tokenizer.ggml.pre", &pre, err) == HERD_OK) {
        size_t k = pre.len < sizeof v->pre - 1 ? (size_t)pre.len : sizeof v->pre - 1;
        memcpy(v->pre, pre.ptr, k);
        v->pre[k] = '\0';
    } else {
        strcpy(v->pre, "default");
    }
    v->n_tokens = n;
    v->text = malloc(n * sizeof *v->text);
    v->type = malloc(n);
    v->score = calloc(n, sizeof *v->score);
    if (!v->text || !v->type || !v->score) {
        herd_vocab_destroy(v);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory for %u tokens", n);
    }
    struct herd_gguf_str_iter it;
    herd_gguf_str_iter_init(&it, &tokens);
    for (uint32_t i = 0; i < n; i++) {
        herd_gguf_str_iter_next(&it, &v->text[i]);
        if (v->text[i].len > HERD_MAX_TOKEN_BYTES) {
            const unsigned long long bytes = v->text[i].len;
            herd_vocab_destroy(v);
            return herd_error_set(err, HERD_E_INVALID, "tokenizer.ggml.tokens[%u] is %llu bytes long (at most %u)", i,
                                  bytes, HERD_MAX_TOKEN_BYTES);
        }
        int64_t t = have_types ? herd_gguf_array_i64(&types, i) : HERD_TOKEN_NORMAL;
        v->type[i] = (uint8_t)(t >= 0 && t <= 6 ? t : HERD_TOKEN_NORMAL);
        if (have_scores) v->score[i] = (float)herd_gguf_array_f64(&scores, i);
    }
    for (int b = 0; b < 256; b++) v->byte_token[b] = -1;
    if (kind == HERD_VOCAB_SPM) {
        static const char hex[] = "0123456789ABCDEF";
        for (uint32_t i = 0; i < n; i++) {
            const struct herd_gguf_str *s = &v->text[i];
            if (v->type[i] != HERD_TOKEN_BYTE || s->len != 6) continue;
            const char *h1 = memchr(hex, s->ptr[3], 16), *h2 = memchr(hex, s->ptr[4], 16);
            if (h1 && h2) v->byte_token[(h1 - hex) * 16 + (h2 - hex)] = (int32_t)i;
        }
    }
    v->bos = opt_id(g, "tokenizer.ggml.bos_token_id", n);
    v->eos = opt_id(g, "tokenizer.ggml.eos_token_id", n);
    v->eot = opt_id(g, "tokenizer.ggml.eot_token_id", n);
    v->unk = opt_id(g, "tokenizer.ggml.unknown_token_id", n);
    v->add_bos = opt_bool(g, "tokenizer.ggml.add_bos_token", kind == HERD_VOCAB_SPM);
    v->add_eos = opt_bool(g, "tokenizer.ggml.add_eos_token", false);
    v->add_space_prefix = opt_bool(g, "tokenizer.ggml.add_space_prefix", kind == HERD_VOCAB_SPM);
    herd_error_clear(err);
    *out = v;
    return HERD_OK;
}

void herd_vocab_destroy(struct herd_vocab *v) {
    if (!v) return;
    free(v->text);
    free(v->type);
    free(v->score);
    free(v);
}

bool herd_vocab_is_eog(const struct herd_vocab *v, int32_t id) { return id >= 0 && (id == v->eos || id == v->eot); }

/* GPT-2's byte-level alphabet: bytes that are printable map to themselves,
 * the other 68 to U+0100.. in byte order. */
static int bpe_char_to_byte(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    if (cp < 256 || cp > 323) return -1;
    uint32_t k = cp - 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        if (printable) continue;
        if (k == 0) return b;
        k--;
    }
    return -1;
}

size_t herd_vocab_piece(const struct herd_vocab *v, int32_t id, char *out, size_t cap) {
    if (id < 0 || (uint32_t)id >= v->n_tokens) return 0;
    const struct herd_gguf_str *s = &v->text[id];
    const uint8_t type = v->type[id];
    size_t n = 0;
#define PUT(c)                                                                                                         \
    do {                                                                                                               \
        if (n < cap) out[n] = (char)(c);                                                                               \
        n++;                                                                                                           \
    } while (0)
    if (type == HERD_TOKEN_CONTROL || type == HERD_TOKEN_UNKNOWN || type == HERD_TOKEN_UNUSED) return 0;
    if (v->kind == HERD_VOCAB_SPM) {
        if (type == HERD_TOKEN_BYTE && s->len == 6) {
            for (int b = 0; b < 256; b++)
                if (v->byte_token[b] == id) {
                    PUT(b);
                    return n;
                }
        }
        for (uint64_t i = 0; i < s->len; i++) {
            if (i + 2 < s->len && (uint8_t)s->ptr[i] == 0xe2 && (uint8_t)s->ptr[i + 1] == 0x96 &&
                (uint8_t)s->ptr[i + 2] == 0x81) {
                PUT(' ');
                i += 2;
            } else {
                PUT(s->ptr[i]);
            }
        }
        return n;
    }
    if (type == HERD_TOKEN_USER_DEFINED) {
        for (uint64_t i = 0; i < s->len; i++) PUT(s->ptr[i]);
        return n;
    }
    /* BPE: decode UTF-8 code points of the token text, map each back to a byte */
    for (uint64_t i = 0; i < s->len;) {
        uint8_t c = (uint8_t)s->ptr[i];
        uint32_t cp;
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
        if (i + (uint64_t)len > s->len) break;
        cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
        for (int k = 1; k < len; k++) cp = cp << 6 | ((uint8_t)s->ptr[i + (uint64_t)k] & 0x3f);
        int b = bpe_char_to_byte(cp);
        if (b >= 0) PUT(b);
        i += (uint64_t)len;
    }
    return n;
#undef PUT
}

void herd_detok_init(struct herd_detok *d, const struct herd_vocab *v) {
    memset(d, 0, sizeof *d);
    d->v = v;
}

static const char replacement[] = "\xef\xbf\xbd";

/* Moves the complete, valid prefix of buf (n bytes) to out; keeps an
 * incomplete tail (<= 3 bytes) in d->pending unless flushing. */
static size_t drain(struct herd_detok *d, const uint8_t *buf, size_t n, char *out, size_t cap, bool flush) {
    size_t o = 0, i = 0;
    while (i < n) {
        int len = herd_utf8_seq(buf + i, n - i);
        if (len == 0 && !flush) {
            HERD_ASSERT(n - i < sizeof d->pending);
            memmove(d->pending, buf + i, n - i);
            d->n_pending = n - i;
            return o;
        }
        if (len <= 0) {
            if (o + 3 <= cap) memcpy(out + o, replacement, 3);
            o += 3;
            i++;
            continue;
        }
        if (o + (size_t)len <= cap) memcpy(out + o, buf + i, (size_t)len);
        o += (size_t)len;
        i += (size_t)len;
    }
    d->n_pending = 0;
    return o;
}

size_t herd_detok_push(struct herd_detok *d, int32_t id, char *out, size_t cap) {
    char piece[512];
    size_t n = herd_vocab_piece(d->v, id, piece, sizeof piece);
    if (n > sizeof piece) n = sizeof piece; /* tokens longer than 512 bytes are cut (none exist) */
    size_t skip = 0;
    if (!d->started && n > 0) {
        d->started = true;
        if (d->v->kind == HERD_VOCAB_SPM && d->v->add_space_prefix && piece[0] == ' ') skip = 1;
    }
    uint8_t buf[sizeof piece + sizeof d->pending];
    memcpy(buf, d->pending, d->n_pending);
    memcpy(buf + d->n_pending, piece + skip, n - skip);
    return drain(d, buf, d->n_pending + n - skip, out, cap, false);
}

size_t herd_detok_flush(struct herd_detok *d, char *out, size_t cap) {
    uint8_t buf[sizeof d->pending];
    size_t n = d->n_pending;
    memcpy(buf, d->pending, n);
    return drain(d, buf, n, out, cap, true);
}

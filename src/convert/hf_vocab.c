/* tokenizer.json and friends -> GGUF tokenizer keys; what is read and what
 * is written is described in hf_vocab.h.
 *
 * Scores of SentencePiece-style vocabularies: Hugging Face applies BPE merges
 * by their rank in model.merges; GGUF "llama" tokenizers (herd's and
 * llama.cpp's) merge the adjacent pair whose concatenation is the token with
 * the highest score. So each token made by a merge scores -rank of the first
 * merge that makes it, and both orders agree. Tokens no merge makes score
 * below every merge when they are longer than one character (no HF
 * tokenization produces them), 0 otherwise (characters, bytes, control
 * tokens: as SentencePiece scores them). llama.cpp's converter writes -1000
 * for every token instead, which leaves the merge order to chance. */
#include "convert/hf_vocab.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/mapped_file.h"
#include "base/utf8.h"
#include "model/model_desc.h"
#include "tokenizer/vocab.h"

/* ------------------------------------------------------------ JSON files */

enum herd_status herd_hf_json_load(const char *path, size_t max_bytes, json_t **out, struct herd_error *err) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) return herd_error_set(err, HERD_E_NOT_FOUND, "%s: no such file", path);
        return herd_error_set(err, HERD_E_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max_bytes)
        return herd_error_set(err, HERD_E_INVALID, "%s: %lld bytes; more than the %zu a JSON file of a model may have",
                              path, (long long)st.st_size, max_bytes);
    struct herd_mapped_file map;
    enum herd_status rc = herd_mapped_file_init(&map, path, err);
    if (rc != HERD_OK) return rc;
    /* Numbers as doubles: transformers writes model_max_length as 1e30 in
     * integer form, which overflows jansson's integers; every integer read
     * goes through herd_hf_json_uint. */
    json_error_t je;
    json_t *root = json_loadb(map.data ? (const char *)map.data : "", map.size,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &je);
    herd_mapped_file_cleanup(&map);
    if (!root)
        return herd_error_set(err, HERD_E_FORMAT, "%s: malformed JSON at line %d, column %d: %s", path, je.line,
                              je.column, je.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return herd_error_set(err, HERD_E_FORMAT, "%s: not a JSON object", path);
    }
    *out = root;
    return HERD_OK;
}

bool herd_hf_json_uint(const json_t *v, uint64_t max, uint64_t *out) {
    uint64_t u;
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0) return false;
        u = (uint64_t)json_integer_value(v);
    } else if (json_is_real(v)) {
        const double d = json_real_value(v);
        /* 2^53: beyond it doubles skip integers */
        if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d)) return false;
        u = (uint64_t)d;
    } else {
        return false;
    }
    if (u > max) return false;
    *out = u;
    return true;
}

/* Loads dir/name; an absent file leaves *out NULL and returns OK. */
static enum herd_status load_optional(const char *dir, const char *name, size_t max_bytes, json_t **out,
                                      struct herd_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    enum herd_status rc = herd_hf_json_load(path, max_bytes, out, err);
    if (rc == HERD_E_NOT_FOUND) {
        herd_error_clear(err);
        return HERD_OK;
    }
    return rc;
}

/* ------------------------------------------------------------ text -> id */

/* Open addressing over token ids, for the merges' and special tokens'
 * lookups by text. */
struct text_index {
    int32_t *slot; /* id, -1 when empty */
    uint64_t mask;
    const struct herd_hf_vocab *v;
};

static uint64_t hash_text(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static bool index_build(struct text_index *ix, const struct herd_hf_vocab *v) {
    uint64_t cap = 1024;
    while (cap < 2 * (uint64_t)v->n_tokens) cap *= 2;
    ix->slot = malloc(cap * sizeof *ix->slot);
    if (!ix->slot) return false;
    for (uint64_t i = 0; i < cap; i++) ix->slot[i] = -1;
    ix->mask = cap - 1;
    ix->v = v;
    for (uint32_t id = 0; id < v->n_tokens; id++) {
        uint64_t i = hash_text(v->text[id], v->len[id]) & ix->mask;
        while (ix->slot[i] >= 0) i = (i + 1) & ix->mask;
        ix->slot[i] = (int32_t)id;
    }
    return true;
}

/* The lowest id whose text is s[0..n), or -1. */
static int32_t index_find(const struct text_index *ix, const char *s, size_t n) {
    int32_t best = -1;
    for (uint64_t i = hash_text(s, n) & ix->mask; ix->slot[i] >= 0; i = (i + 1) & ix->mask) {
        int32_t id = ix->slot[i];
        if (ix->v->len[id] == n && memcmp(ix->v->text[id], s, n) == 0 && (best < 0 || id < best)) best = id;
    }
    return best;
}

/* ------------------------------------------------------------ helpers */

void herd_hf_vocab_destroy(struct herd_hf_vocab *v) {
    if (!v) return;
    if (v->text)
        for (uint32_t i = 0; i < v->n_tokens; i++) free(v->text[i]);
    for (uint32_t i = 0; v->merges && i < v->n_merges; i++) free(v->merges[i]);
    for (uint32_t i = 0; i < v->n_templates; i++) {
        free(v->template_names[i]);
        free(v->templates[i]);
    }
    free(v->template_names);
    free(v->templates);
    free(v->text);
    free(v->len);
    free(v->score);
    free(v->type);
    free(v->merges);
    free(v->merge_len);
    free(v->chat_template);
    free(v);
}

static const char *str_field(const json_t *obj, const char *key) {
    const json_t *s = json_object_get(obj, key);
    return json_is_string(s) ? json_string_value(s) : NULL;
}

static bool is_type(const json_t *obj, const char *type) {
    const char *t = str_field(obj, "type");
    return t && strcmp(t, type) == 0;
}

/* Boolean field with a default for absent or non-boolean values. */
static bool bool_field(const json_t *obj, const char *key, bool def) {
    const json_t *b = json_object_get(obj, key);
    return json_is_boolean(b) ? json_is_true(b) : def;
}

/* llama.cpp's does_token_look_special: added tokens some models forget to
 * mark special. */
static bool looks_special(const char *s) {
    size_t n = strlen(s);
    static const char *const exact[] = {"<pad>", "<mask>", "<2mass>", "[@BOS@]"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strcmp(s, exact[i]) == 0) return true;
#define ENDS(suf) (n >= strlen(suf) && strcmp(s + n - strlen(suf), suf) == 0)
    if (strncmp(s, "<|", 2) == 0 && ENDS("|>") && n >= 4) return true;
    if (strncmp(s, "<\xef\xbd\x9c", 4) == 0 && ENDS("\xef\xbd\x9c>") && n >= 8) return true; /* "<｜...｜>" */
    if (strncmp(s, "<unused", 7) == 0 && ENDS(">")) return true;
#undef ENDS
    return false;
}

static bool is_byte_token(const char *s, uint64_t n) {
    static const char hex[] = "0123456789ABCDEFabcdef";
    return n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' && memchr(hex, s[3], 22) && memchr(hex, s[4], 22);
}

/* Calls fn on each pre-tokenizer of pt (the members of a Sequence, or pt). */
static size_t flatten(const json_t *pt, const json_t **out, size_t cap) {
    if (!json_is_object(pt)) return 0;
    if (!is_type(pt, "Sequence")) {
        out[0] = pt;
        return 1;
    }
    const json_t *list = json_object_get(pt, "pretokenizers");
    if (!list) list = json_object_get(pt, "decoders");
    if (!list) list = json_object_get(pt, "normalizers");
    if (!list) list = json_object_get(pt, "processors");
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(list) && n < cap; i++) out[n++] = json_array_get(list, i);
    return n;
}

static bool has_member_of_type(const json_t *pt, const char *type) {
    const json_t *parts[16];
    size_t n = flatten(pt, parts, 16);
    for (size_t i = 0; i < n; i++)
        if (is_type(parts[i], type)) return true;
    return false;
}

/* ------------------------------------------------------------ pre-tokenizer names */

/* The regular expressions of known tokenizer.json Split pre-tokenizers (as
 * the files spell them) and the tokenizer.ggml.pre value llama.cpp's
 * converter writes for each; tokenizer_bpe.c implements these names. */
static const struct {
    const char *regex;
    const char *pre;
} known_splits[] = {
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
     "\\s+(?!\\S)|\\s+",
     "llama-bpe"},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
     "\\s+(?!\\S)|\\s+",
     "qwen2"},
    {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", "gpt-2"},
};

static enum herd_status bpe_pre_name(const json_t *tok, const char *path, char *out, size_t cap,
                                     struct herd_error *err) {
    const json_t *parts[16];
    size_t n = flatten(json_object_get(tok, "pre_tokenizer"), parts, 16);
    const char *name = NULL;
    const json_t *last = n ? parts[n - 1] : NULL;
    if (last && is_type(last, "ByteLevel") && bool_field(last, "add_prefix_space", true))
        return herd_error_set(err, HERD_E_UNSUPPORTED,
                              "%s: the ByteLevel pre-tokenizer adds a prefix space (add_prefix_space), which herd "
                              "and llama.cpp do not do",
                              path);
    if (n == 1 && is_type(last, "ByteLevel") && bool_field(last, "use_regex", true)) {
        name = "gpt-2";
    } else if (n == 2 && is_type(last, "ByteLevel") && bool_field(last, "use_regex", true) &&
               is_type(parts[0], "Digits") && bool_field(parts[0], "individual_digits", false)) {
        name = "smollm"; /* digits one by one, then GPT-2's expression (also starcoder) */
    } else if (n == 2 && is_type(last, "ByteLevel") && !bool_field(last, "use_regex", true) &&
               is_type(parts[0], "Split")) {
        const char *re = str_field(json_object_get(parts[0], "pattern"), "Regex");
        const char *behavior = str_field(parts[0], "behavior");
        if (re && (!behavior || strcmp(behavior, "Isolated") == 0) && !bool_field(parts[0], "invert", false))
            for (size_t i = 0; !name && i < sizeof known_splits / sizeof known_splits[0]; i++)
                if (strcmp(re, known_splits[i].regex) == 0) name = known_splits[i].pre;
    }
    if (!name) {
        char *dump = json_dumps(json_object_get(tok, "pre_tokenizer"), JSON_COMPACT | JSON_ENCODE_ANY);
        herd_error_set(err, HERD_E_UNSUPPORTED,
                       "%s: byte-level BPE with a pre-tokenizer herd does not recognise (known: gpt-2, llama-bpe, "
                       "qwen2, smollm): %.300s",
                       path, dump ? dump : "?");
        free(dump);
        return HERD_E_UNSUPPORTED;
    }
    snprintf(out, cap, "%s", name);
    return HERD_OK;
}

/* ------------------------------------------------------------ tokens */

static enum herd_status set_text(struct herd_hf_vocab *v, uint32_t id, const char *s, const char *path,
                                 struct herd_error *err) {
    size_t n = strlen(s);
    if (n > HERD_MAX_TOKEN_BYTES)
        return herd_error_set(err, HERD_E_INVALID, "%s: token %u is %zu bytes long; the limit is %u", path, id, n,
                              HERD_MAX_TOKEN_BYTES);
    char *copy = strdup(s);
    if (!copy) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    free(v->text[id]);
    v->text[id] = copy;
    v->len[id] = n;
    return HERD_OK;
}

/* Largest id in model.vocab and added_tokens, checking each is an integer
 * in range. */
static enum herd_status max_id(const json_t *vocab, const json_t *added, const char *path, int64_t *out,
                               struct herd_error *err) {
    int64_t m = -1;
    const char *key;
    json_t *val;
    uint64_t id;
    json_object_foreach((json_t *)vocab, key, val) {
        if (!herd_hf_json_uint(val, HERD_MAX_VOCAB - 1, &id))
            return herd_error_set(err, HERD_E_FORMAT, "%s: model.vocab entry '%.80s' has no id in 0..%u", path, key,
                                  HERD_MAX_VOCAB - 1);
        if ((int64_t)id > m) m = (int64_t)id;
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i);
        if (!json_is_string(json_object_get(a, "content")) ||
            !herd_hf_json_uint(json_object_get(a, "id"), HERD_MAX_VOCAB - 1, &id))
            return herd_error_set(err, HERD_E_FORMAT, "%s: added_tokens[%zu] needs a string content and an id in 0..%u",
                                  path, i, HERD_MAX_VOCAB - 1);
        if ((int64_t)id > m) m = (int64_t)id;
    }
    *out = m;
    return HERD_OK;
}

/* Texts and types of every id. */
static enum herd_status read_tokens(struct herd_hf_vocab *v, const json_t *tok, uint32_t n_vocab, const char *path,
                                    struct herd_error *err) {
    const json_t *model = json_object_get(tok, "model"), *vocab = json_object_get(model, "vocab"),
                 *added = json_object_get(tok, "added_tokens");
    if (!json_is_object(vocab))
        return herd_error_set(err, HERD_E_FORMAT, "%s: model.vocab is missing or not an object", path);
    if (added && !json_is_array(added))
        return herd_error_set(err, HERD_E_FORMAT, "%s: added_tokens is not an array", path);
    int64_t m = -1;
    enum herd_status rc = max_id(vocab, added, path, &m, err);
    if (rc != HERD_OK) return rc;
    if (m < 0) return herd_error_set(err, HERD_E_FORMAT, "%s: the vocabulary is empty", path);
    if (n_vocab && (uint64_t)m >= n_vocab)
        return herd_error_set(err, HERD_E_INVALID,
                              "%s: token id %lld is outside the model's %u embedding rows (config vocab_size)", path,
                              (long long)m, n_vocab);
    v->n_tokens = n_vocab ? n_vocab : (uint32_t)m + 1;
    v->text = calloc(v->n_tokens, sizeof *v->text);
    v->len = calloc(v->n_tokens, sizeof *v->len);
    v->score = calloc(v->n_tokens, sizeof *v->score);
    v->type = calloc(v->n_tokens, sizeof *v->type);
    if (!v->text || !v->len || !v->score || !v->type) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    const char *unk_text = str_field(model, "unk_token");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)vocab, key, val) {
        uint64_t id64 = 0;
        herd_hf_json_uint(val, HERD_MAX_VOCAB - 1, &id64); /* checked by max_id */
        const uint32_t id = (uint32_t)id64;
        if (v->text[id])
            return herd_error_set(err, HERD_E_DUPLICATE, "%s: model.vocab gives id %u to both '%.80s' and '%.80s'",
                                  path, id, v->text[id], key);
        if ((rc = set_text(v, id, key, path, err)) != HERD_OK) return rc;
        v->type[id] = HERD_TOKEN_NORMAL;
        if (v->kind == HERD_HF_VOCAB_SPM) {
            if (is_byte_token(key, v->len[id]))
                v->type[id] = HERD_TOKEN_BYTE;
            else if (unk_text && strcmp(unk_text, key) == 0)
                v->type[id] = HERD_TOKEN_UNKNOWN;
        }
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i);
        uint64_t id64 = 0;
        herd_hf_json_uint(json_object_get(a, "id"), HERD_MAX_VOCAB - 1, &id64); /* checked by max_id */
        const uint32_t id = (uint32_t)id64;
        const char *content = str_field(a, "content");
        if ((rc = set_text(v, id, content, path, err)) != HERD_OK) return rc;
        if (v->kind == HERD_HF_VOCAB_SPM && unk_text && strcmp(unk_text, content) == 0)
            v->type[id] = HERD_TOKEN_UNKNOWN;
        else if (bool_field(a, "special", false) || looks_special(content))
            v->type[id] = HERD_TOKEN_CONTROL;
        else
            v->type[id] = HERD_TOKEN_USER_DEFINED;
    }
    for (uint32_t id = 0; id < v->n_tokens; id++) {
        if (v->text[id]) continue;
        char pad[32];
        snprintf(pad, sizeof pad, "[PAD%u]", id);
        if ((rc = set_text(v, id, pad, path, err)) != HERD_OK) return rc;
        v->type[id] = HERD_TOKEN_UNUSED;
    }
    return HERD_OK;
}

/* ------------------------------------------------------------ merges */

/* Splits merge i of model.merges ("a b", or ["a", "b"] since transformers
 * 4.45) into its two parts. Parts of the pair form may hold spaces; in
 * GGUF's "a b" form they become U+0120, as llama.cpp's converter writes them. */
static enum herd_status merge_parts(const json_t *m, size_t i, const char *path, char *a, char *b, size_t cap,
                                    struct herd_error *err) {
    if (json_is_string(m)) {
        const char *s = json_string_value(m), *sp = strchr(s, ' ');
        if (!sp || sp == s || !sp[1] || (size_t)(sp - s) >= cap || strlen(sp + 1) >= cap)
            return herd_error_set(err, HERD_E_FORMAT, "%s: model.merges[%zu] is not two tokens split by a space", path,
                                  i);
        memcpy(a, s, (size_t)(sp - s));
        a[sp - s] = '\0';
        strcpy(b, sp + 1);
        return HERD_OK;
    }
    const json_t *l = json_array_get(m, 0), *r = json_array_get(m, 1);
    if (!json_is_array(m) || json_array_size(m) != 2 || !json_is_string(l) || !json_is_string(r))
        return herd_error_set(err, HERD_E_FORMAT, "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", path,
                              i);
    const char *parts[2] = {json_string_value(l), json_string_value(r)};
    char *outs[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        size_t o = 0;
        for (const char *p = parts[k]; *p; p++) {
            if (o + 3 > cap) return herd_error_set(err, HERD_E_INVALID, "%s: model.merges[%zu] is too long", path, i);
            if (*p == ' ') {
                outs[k][o++] = '\xc4'; /* U+0120 */
                outs[k][o++] = '\xa0';
            } else {
                outs[k][o++] = *p;
            }
        }
        outs[k][o] = '\0';
    }
    return HERD_OK;
}

static enum herd_status read_merges(struct herd_hf_vocab *v, const json_t *tok, const char *path,
                                    struct herd_error *err) {
    const json_t *merges = json_object_get(json_object_get(tok, "model"), "merges");
    if (merges && !json_is_array(merges))
        return herd_error_set(err, HERD_E_FORMAT, "%s: model.merges is not an array", path);
    const size_t n = json_array_size(merges);
    if (n > (1u << 24))
        return herd_error_set(err, HERD_E_INVALID, "%s: model.merges has %zu entries; at most %u are read", path, n,
                              1u << 24);
    if (v->kind == HERD_HF_VOCAB_BPE && n == 0)
        return herd_error_set(err, HERD_E_FORMAT, "%s: model.merges is empty: a byte-level BPE needs its merges", path);
    enum herd_status rc = HERD_OK;
    const size_t cap = 2 * HERD_MAX_TOKEN_BYTES + 2;
    char *a = malloc(cap), *b = malloc(cap), *joined = malloc(2 * cap);
    bool *from_merge = calloc(v->n_tokens, sizeof *from_merge);
    struct text_index ix = {0};
    if (!a || !b || !joined || !from_merge) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    if (v->kind == HERD_HF_VOCAB_BPE) {
        v->merges = calloc(n, sizeof *v->merges);
        v->merge_len = calloc(n, sizeof *v->merge_len);
        if (!v->merges || !v->merge_len) {
            rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
            goto out;
        }
    } else if (!index_build(&ix, v)) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if ((rc = merge_parts(json_array_get(merges, i), i, path, a, b, cap, err)) != HERD_OK) goto out;
        const size_t na = strlen(a), nb = strlen(b);
        memcpy(joined, a, na);
        joined[na] = ' ';
        memcpy(joined + na + 1, b, nb + 1);
        if (v->kind == HERD_HF_VOCAB_BPE) {
            if (!(v->merges[i] = strdup(joined))) {
                rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
                goto out;
            }
            v->merge_len[i] = na + 1 + nb;
            v->n_merges = (uint32_t)i + 1;
            continue;
        }
        memmove(joined + na, joined + na + 1, nb + 1); /* "ab" */
        const int32_t id = index_find(&ix, joined, na + nb);
        if (id >= 0 && !from_merge[id] && v->type[id] == HERD_TOKEN_NORMAL) {
            from_merge[id] = true;
            v->score[id] = -(float)i; /* exact: ranks stay below 2^24 */
        }
    }
    if (v->kind == HERD_HF_VOCAB_SPM)
        for (uint32_t id = 0; id < v->n_tokens; id++) {
            const uint8_t *s = (const uint8_t *)v->text[id];
            bool one_char = v->len[id] > 0 && herd_utf8_seq(s, v->len[id]) == (int)v->len[id];
            if (v->type[id] == HERD_TOKEN_NORMAL && !from_merge[id] && !one_char) v->score[id] = -(float)n - 1;
        }
out:
    free(a);
    free(b);
    free(joined);
    free(from_merge);
    free(ix.slot);
    return rc;
}

/* ------------------------------------------------------------ special tokens */

/* Content of tokenizer_config's "<typ>_token": a string or {"content": ...}. */
static const char *special_content(const json_t *cfg, const char *typ) {
    char key[32];
    snprintf(key, sizeof key, "%s_token", typ);
    const json_t *e = json_object_get(cfg, key);
    if (json_is_string(e)) return json_string_value(e);
    return str_field(e, "content");
}

/* An integer id (the first of a list, as generation_config.json may give
 * several EOS ids) inside the vocabulary, or -1. llama.cpp skips ids out of
 * range too. */
static int32_t config_id(const json_t *cfg, const char *typ, uint32_t n_tokens) {
    char key[32];
    snprintf(key, sizeof key, "%s_token_id", typ);
    const json_t *e = json_object_get(cfg, key);
    if (json_is_array(e)) e = json_array_get(e, 0);
    uint64_t id;
    if (!herd_hf_json_uint(e, n_tokens - 1, &id)) return -1;
    return (int32_t)id;
}

static int32_t find_text(const struct herd_hf_vocab *v, const json_t *tok, const char *s) {
    const json_t *added = json_object_get(tok, "added_tokens");
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i);
        const char *c = str_field(a, "content");
        uint64_t id;
        if (c && strcmp(c, s) == 0 && herd_hf_json_uint(json_object_get(a, "id"), v->n_tokens - 1, &id))
            return (int32_t)id;
    }
    for (uint32_t id = 0; id < v->n_tokens; id++)
        if (strcmp(v->text[id], s) == 0) return (int32_t)id;
    return -1;
}

/* bos/eos/unk/pad: tokenizer_config.json's token texts first, then
 * config.json's ids, then generation_config.json's (llama.cpp reads the first
 * two, in that order). */
static void read_special_ids(struct herd_hf_vocab *v, const json_t *tok, const json_t *tcfg, const json_t *cfg,
                             const json_t *gcfg) {
    static const char *const typs[4] = {"bos", "eos", "unk", "pad"};
    int32_t *ids[4] = {&v->bos, &v->eos, &v->unk, &v->pad};
    for (int i = 0; i < 4; i++) {
        const char *c = tcfg ? special_content(tcfg, typs[i]) : NULL;
        *ids[i] = c ? find_text(v, tok, c) : -1;
        if (*ids[i] < 0 && cfg) *ids[i] = config_id(cfg, typs[i], v->n_tokens);
        if (*ids[i] < 0 && gcfg) *ids[i] = config_id(gcfg, typs[i], v->n_tokens);
    }
    if (v->unk < 0) {
        const char *u = str_field(json_object_get(tok, "model"), "unk_token");
        if (u) v->unk = find_text(v, tok, u);
    }
    /* End-of-turn tokens of chat models, which llama.cpp's loader finds by
     * these texts; herd reads only the key. */
    static const char *const eot_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>"};
    for (size_t i = 0; v->eot < 0 && i < sizeof eot_texts / sizeof eot_texts[0]; i++) {
        int32_t id = find_text(v, tok, eot_texts[i]);
        if (id >= 0 && id != v->eos && v->type[id] == HERD_TOKEN_CONTROL) v->eot = id;
    }
}

/* add_bos/add_eos from tokenizer_config.json, else from the post-processor's
 * template: a TemplateProcessing whose "single" starts with the BOS (ends
 * with the EOS) adds it. Llama 3 says so only there. */
static void read_add_flags(struct herd_hf_vocab *v, const json_t *tok, const json_t *tcfg) {
    const json_t *b = json_object_get(tcfg, "add_bos_token"), *e = json_object_get(tcfg, "add_eos_token");
    v->add_bos = json_is_boolean(b) ? json_is_true(b) : -1;
    v->add_eos = json_is_boolean(e) ? json_is_true(e) : -1;
    const json_t *parts[16], *tp = NULL;
    size_t n = flatten(json_object_get(tok, "post_processor"), parts, 16);
    for (size_t i = 0; i < n; i++)
        if (is_type(parts[i], "TemplateProcessing")) tp = parts[i];
    const json_t *single = json_object_get(tp, "single");
    if (!json_is_array(single) || json_array_size(single) == 0) return;
    const char *first = str_field(json_object_get(json_array_get(single, 0), "SpecialToken"), "id");
    const char *last =
        str_field(json_object_get(json_array_get(single, json_array_size(single) - 1), "SpecialToken"), "id");
    if (v->add_bos < 0) v->add_bos = first && v->bos >= 0 && strcmp(first, v->text[v->bos]) == 0;
    if (v->add_eos < 0) v->add_eos = last && v->eos >= 0 && strcmp(last, v->text[v->eos]) == 0;
}

/* SPM: whether a "▁" goes before the text. tokenizer_config's
 * add_prefix_space wins (llama.cpp reads it); else a Prepend("▁") normalizer
 * or a Metaspace pre-tokenizer that prepends says yes, a normalizer that
 * replaces spaces without prepending says no. */
static void read_space_prefix(struct herd_hf_vocab *v, const json_t *tok, const json_t *tcfg) {
    v->add_space_prefix = -1;
    const json_t *parts[16];
    size_t n = flatten(json_object_get(tok, "normalizer"), parts, 16);
    bool prepend = false, replace = false;
    for (size_t i = 0; i < n; i++) {
        if (is_type(parts[i], "Prepend")) prepend = true;
        if (is_type(parts[i], "Replace")) replace = true;
    }
    if (prepend)
        v->add_space_prefix = 1;
    else if (replace)
        v->add_space_prefix = 0;
    n = flatten(json_object_get(tok, "pre_tokenizer"), parts, 16);
    for (size_t i = 0; i < n; i++)
        if (is_type(parts[i], "Metaspace")) {
            const char *scheme = str_field(parts[i], "prepend_scheme");
            if (scheme)
                v->add_space_prefix = strcmp(scheme, "never") != 0;
            else
                v->add_space_prefix = bool_field(parts[i], "add_prefix_space", true);
        }
    const json_t *a = json_object_get(tcfg, "add_prefix_space");
    if (json_is_boolean(a)) v->add_space_prefix = json_is_true(a);
}

/* tokenizer_config's chat_template (a string, or a list of {name, template}
 * whose "default" is the main one), else chat_template.jinja, where newer
 * transformers save it. */
static enum herd_status read_chat_template(struct herd_hf_vocab *v, const char *dir, const json_t *tcfg,
                                           struct herd_error *err) {
    const json_t *t = json_object_get(tcfg, "chat_template");
    if (json_is_string(t)) {
        v->chat_template = strdup(json_string_value(t));
        return v->chat_template ? HERD_OK : herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    if (json_is_array(t)) {
        size_t n = json_array_size(t);
        v->template_names = calloc(n + 1, sizeof *v->template_names);
        v->templates = calloc(n + 1, sizeof *v->templates);
        if (!v->template_names || !v->templates) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
            const char *name = str_field(json_array_get(t, i), "name"),
                       *text = str_field(json_array_get(t, i), "template");
            if (!name || !text) continue;
            if (strcmp(name, "default") == 0) {
                free(v->chat_template);
                if (!(v->chat_template = strdup(text))) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
                continue;
            }
            v->template_names[v->n_templates] = strdup(name);
            v->templates[v->n_templates] = strdup(text);
            v->n_templates++;
            if (!v->template_names[v->n_templates - 1] || !v->templates[v->n_templates - 1])
                return herd_error_set(err, HERD_E_NOMEM, "out of memory");
        }
        return HERD_OK;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    struct stat st;
    if (stat(path, &st) != 0) return HERD_OK;
    if ((uint64_t)st.st_size > HERD_HF_CONFIG_JSON_MAX_BYTES)
        return herd_error_set(err, HERD_E_INVALID, "%s: %lld bytes is too large for a chat template", path,
                              (long long)st.st_size);
    struct herd_mapped_file map;
    enum herd_status rc = herd_mapped_file_init(&map, path, err);
    if (rc != HERD_OK) return rc;
    v->chat_template = malloc(map.size + 1);
    if (v->chat_template) {
        if (map.size) memcpy(v->chat_template, map.data, map.size);
        v->chat_template[map.size] = '\0';
    }
    herd_mapped_file_cleanup(&map);
    return v->chat_template ? HERD_OK : herd_error_set(err, HERD_E_NOMEM, "out of memory");
}

/* ------------------------------------------------------------ load */

enum herd_status herd_hf_vocab_load(const char *dir, uint32_t n_vocab, struct herd_hf_vocab **out,
                                    struct herd_error *err) {
    *out = NULL;
    json_t *tok = NULL, *tcfg = NULL, *cfg = NULL, *gcfg = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    enum herd_status rc = herd_hf_json_load(path, HERD_HF_TOKENIZER_JSON_MAX_BYTES, &tok, err);
    if (rc == HERD_E_NOT_FOUND) {
        char spm[4096];
        snprintf(spm, sizeof spm, "%s/tokenizer.model", dir);
        struct stat st;
        if (stat(spm, &st) == 0)
            return herd_error_set(
                err, HERD_E_UNSUPPORTED,
                "%s: only tokenizer.model (a SentencePiece protobuf) is here; herd convert hf does not "
                "read it yet and needs tokenizer.json",
                dir);
        return herd_error_set(err, HERD_E_NOT_FOUND, "%s: no tokenizer.json", dir);
    }
    if (rc != HERD_OK) return rc;
    struct herd_hf_vocab *v = calloc(1, sizeof *v);
    if (!v) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    v->bos = v->eos = v->unk = v->pad = v->eot = -1;
    v->add_bos = v->add_eos = v->add_space_prefix = -1;
    const json_t *model = json_object_get(tok, "model");
    const char *mtype = str_field(model, "type");
    if (!json_is_object(model)) {
        rc = herd_error_set(err, HERD_E_FORMAT, "%s: field model is missing or not an object", path);
        goto out;
    }
    if (!mtype && json_is_object(json_object_get(model, "vocab")) && json_object_get(model, "merges"))
        mtype = "BPE"; /* older files leave the type out */
    if (!mtype || strcmp(mtype, "BPE") != 0) {
        rc = herd_error_set(
            err, HERD_E_UNSUPPORTED,
            "%s: tokenizer model type '%s' is not supported (BPE, SentencePiece-style or byte-level, is)", path,
            mtype ? mtype : "(none)");
        goto out;
    }
    const bool byte_level = has_member_of_type(json_object_get(tok, "pre_tokenizer"), "ByteLevel") ||
                            has_member_of_type(json_object_get(tok, "decoder"), "ByteLevel");
    if (byte_level) {
        v->kind = HERD_HF_VOCAB_BPE;
        if ((rc = bpe_pre_name(tok, path, v->pre, sizeof v->pre, err)) != HERD_OK) goto out;
    } else if (bool_field(model, "byte_fallback", false)) {
        v->kind = HERD_HF_VOCAB_SPM;
        snprintf(v->pre, sizeof v->pre, "default");
    } else {
        rc = herd_error_set(err, HERD_E_UNSUPPORTED,
                            "%s: a BPE tokenizer with neither byte_fallback nor a ByteLevel pre-tokenizer is not "
                            "supported",
                            path);
        goto out;
    }
    if ((rc = load_optional(dir, "tokenizer_config.json", HERD_HF_CONFIG_JSON_MAX_BYTES, &tcfg, err)) != HERD_OK ||
        (rc = load_optional(dir, "config.json", HERD_HF_CONFIG_JSON_MAX_BYTES, &cfg, err)) != HERD_OK ||
        (rc = load_optional(dir, "generation_config.json", HERD_HF_CONFIG_JSON_MAX_BYTES, &gcfg, err)) != HERD_OK)
        goto out;
    if ((rc = read_tokens(v, tok, n_vocab, path, err)) != HERD_OK) goto out;
    if ((rc = read_merges(v, tok, path, err)) != HERD_OK) goto out;
    read_special_ids(v, tok, tcfg, cfg, gcfg);
    read_add_flags(v, tok, tcfg);
    if (v->kind == HERD_HF_VOCAB_SPM) read_space_prefix(v, tok, tcfg);
    if ((rc = read_chat_template(v, dir, tcfg, err)) != HERD_OK) goto out;
    *out = v;
    v = NULL;
out:
    herd_hf_vocab_destroy(v);
    json_decref(tok);
    json_decref(tcfg);
    json_decref(cfg);
    json_decref(gcfg);
    return rc;
}

/* ------------------------------------------------------------ write */

enum herd_status herd_hf_vocab_write(const struct herd_hf_vocab *v, struct herd_gguf_writer *w,
                                     struct herd_error *err) {
    enum herd_status rc;
#define TRY(expr)                                                                                                      \
    do {                                                                                                               \
        if ((rc = (expr)) != HERD_OK) return rc;                                                                       \
    } while (0)
    const bool spm = v->kind == HERD_HF_VOCAB_SPM;
    TRY(herd_gguf_writer_add_string(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2", err));
    TRY(herd_gguf_writer_add_string(w, "tokenizer.ggml.pre", v->pre, err));
    TRY(herd_gguf_writer_add_string_array(w, "tokenizer.ggml.tokens", v->n_tokens, (const char *const *)v->text, v->len,
                                          err));
    if (spm)
        TRY(herd_gguf_writer_add_array(w, "tokenizer.ggml.scores", HERD_GGUF_VTYPE_F32, v->n_tokens, v->score, err));
    TRY(herd_gguf_writer_add_array(w, "tokenizer.ggml.token_type", HERD_GGUF_VTYPE_I32, v->n_tokens, v->type, err));
    if (!spm)
        TRY(herd_gguf_writer_add_string_array(w, "tokenizer.ggml.merges", v->n_merges, (const char *const *)v->merges,
                                              v->merge_len, err));
    const struct {
        const char *key;
        int32_t id;
    } ids[] = {{"tokenizer.ggml.bos_token_id", v->bos},
               {"tokenizer.ggml.eos_token_id", v->eos},
               {"tokenizer.ggml.unknown_token_id", v->unk},
               {"tokenizer.ggml.padding_token_id", v->pad},
               {"tokenizer.ggml.eot_token_id", v->eot}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i].id >= 0) TRY(herd_gguf_writer_add_u32(w, ids[i].key, (uint32_t)ids[i].id, err));
    if (v->add_bos >= 0) TRY(herd_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos, err));
    if (v->add_eos >= 0) TRY(herd_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", v->add_eos, err));
    if (spm && v->add_space_prefix >= 0)
        TRY(herd_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", v->add_space_prefix, err));
    if (v->chat_template) TRY(herd_gguf_writer_add_string(w, "tokenizer.chat_template", v->chat_template, err));
    for (uint32_t i = 0; i < v->n_templates; i++) {
        char key[256];
        snprintf(key, sizeof key, "tokenizer.chat_template.%s", v->template_names[i]);
        TRY(herd_gguf_writer_add_string(w, key, v->templates[i], err));
    }
#undef TRY
    return HERD_OK;
}

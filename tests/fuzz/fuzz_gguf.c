/* libFuzzer target for the GGUF reader (RELIABILITY.md A3, A5, A8): any
 * bytes parse into a model description or an error, never a crash, a leak,
 * a read past the input or a hang. After a successful parse it also walks
 * every accessor the model loader uses, so their invariants get fuzzed too. */
#include <stddef.h>
#include <stdint.h>

#include "herd/gguf.h"
#include "model/model_desc.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    if (herd_gguf_open_memory(data, size, &g, &err) != HERD_OK) return 0;
    for (size_t i = 0; i < herd_gguf_n_kv(g); i++) {
        const struct herd_gguf_kv *kv = herd_gguf_kv_at(g, i);
        if (kv->type != HERD_GGUF_VTYPE_ARRAY) continue;
        if (kv->v.arr.type == HERD_GGUF_VTYPE_STRING) {
            struct herd_gguf_str_iter it;
            struct herd_gguf_str s;
            herd_gguf_str_iter_init(&it, &kv->v.arr);
            while (herd_gguf_str_iter_next(&it, &s)) (void)s;
        } else if (kv->v.arr.count) {
            (void)herd_gguf_array_f64(&kv->v.arr, kv->v.arr.count - 1);
        }
    }
    for (size_t i = 0; i < herd_gguf_n_tensors(g); i++) {
        const struct herd_gguf_tensor *t = herd_gguf_tensor_at(g, i);
        /* touch the first and last byte: must lie inside the input */
        if (t->n_bytes)
            (void)(((const volatile uint8_t *)t->data)[0] + ((const volatile uint8_t *)t->data)[t->n_bytes - 1]);
    }
    struct herd_model_desc d;
    if (herd_model_desc_read(g, &d, &err) == HERD_OK) {
        (void)herd_model_desc_validate(g, &d, &err);
        struct herd_ram_estimate r;
        herd_model_desc_ram_estimate(&d, 4096, &r);
    }
    /* RELIABILITY A7's fuzz_model_load (vocabulary only): the vocabulary and
     * tokenizer built from whatever metadata the file has, then used once. */
    struct herd_vocab *v = NULL;
    struct herd_tokenizer *tk = NULL;
    if (herd_vocab_load(g, &v, &err) == HERD_OK && herd_tokenizer_create(v, &tk, &err) == HERD_OK) {
        static const char text[] = "Hello <s> w\xc3\xb6rld 123\n";
        int32_t ids[64];
        uint32_t n;
        (void)herd_tokenize(tk, text, sizeof text - 1, HERD_TOK_ADD_SPECIAL | HERD_TOK_PARSE_SPECIAL, ids, 64, &n,
                            &err);
        struct herd_detok dt;
        char out[128];
        herd_detok_init(&dt, v);
        for (uint32_t i = 0; i < v->n_tokens && i < 8; i++) (void)herd_detok_push(&dt, (int32_t)i, out, sizeof out);
        (void)herd_detok_flush(&dt, out, sizeof out);
    }
    herd_tokenizer_destroy(tk);
    herd_vocab_destroy(v);
    herd_gguf_destroy(g);
    return 0;
}

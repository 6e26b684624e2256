/* `herd inspect FILE [--json] [--ctx N]`: what a GGUF file holds and what
 * running it would take. Works on any GGUF, including vocabulary-only files
 * and architectures the engine does not run (it says so). */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli_args.h"
#include "cli/commands.h"
#include "herd/gguf.h"
#include "model/model_desc.h"

static const struct cli_command cmd = {
    .name = "inspect",
    .args = "FILE",
    .summary = "Show a GGUF file's architecture, hyperparameters, tokenizer, chat template, tensors, total weight\n"
               "bytes, whether herd can run it, and the memory a context of N tokens needs.",
    .details = "The RAM estimate counts the weights (mapped from the file), an f16 KV cache for --ctx tokens,\n"
               "and activations for a 512-token batch. Exit code 1 when the file cannot be parsed.",
    .min_pos = 1,
    .max_pos = 1,
};

/* ------------------------------------------------------------ value rendering */

/* general.file_type is llama.cpp's llama_ftype: the dominant weight type. */
static const char *file_type_name(int64_t ft) {
    static const char *const names[] = {
        [0] = "all F32",     [1] = "mostly F16",  [2] = "mostly Q4_0",  [3] = "mostly Q4_1", [7] = "mostly Q8_0",
        [8] = "mostly Q5_0", [9] = "mostly Q5_1", [10] = "mostly Q2_K", [11] = "Q3_K_S",     [12] = "Q3_K_M",
        [13] = "Q3_K_L",     [14] = "Q4_K_S",     [15] = "Q4_K_M",      [16] = "Q5_K_S",     [17] = "Q5_K_M",
        [18] = "Q6_K",       [19] = "IQ2_XXS",    [20] = "IQ2_XS",      [21] = "Q2_K_S",     [22] = "IQ3_XS",
        [23] = "IQ3_XXS",    [24] = "IQ1_S",      [25] = "IQ4_NL",      [26] = "IQ3_S",      [27] = "IQ3_M",
        [28] = "IQ2_S",      [29] = "IQ2_M",      [30] = "IQ4_XS",      [31] = "IQ1_M",      [32] = "mostly BF16",
        [36] = "TQ1_0",      [37] = "TQ2_0",      [38] = "MXFP4_MOE",
    };
    if (ft < 0 || ft >= (int64_t)(sizeof names / sizeof names[0]) || !names[ft]) return "unknown";
    return names[ft];
}

/* A short human rendering of a metadata value: scalars in full, strings cut,
 * arrays as "[type x count]" with their first few elements. */
static void render_value(const struct herd_gguf_kv *kv, char *buf, size_t n) {
    char s[96];
    switch (kv->type) {
    case HERD_GGUF_VTYPE_U8:
    case HERD_GGUF_VTYPE_U16:
    case HERD_GGUF_VTYPE_U32:
    case HERD_GGUF_VTYPE_U64: snprintf(buf, n, "%llu", (unsigned long long)kv->v.u); return;
    case HERD_GGUF_VTYPE_I8:
    case HERD_GGUF_VTYPE_I16:
    case HERD_GGUF_VTYPE_I32:
    case HERD_GGUF_VTYPE_I64: snprintf(buf, n, "%lld", (long long)kv->v.i); return;
    case HERD_GGUF_VTYPE_F32:
    case HERD_GGUF_VTYPE_F64: snprintf(buf, n, "%g", kv->v.f); return;
    case HERD_GGUF_VTYPE_BOOL: snprintf(buf, n, "%s", kv->v.b ? "true" : "false"); return;
    case HERD_GGUF_VTYPE_STRING:
        if (kv->v.s.len > 60)
            snprintf(buf, n, "(%llu bytes) ", (unsigned long long)kv->v.s.len);
        else
            buf[0] = '\0';
        snprintf(buf + strlen(buf), n - strlen(buf), "\"%s\"", herd_gguf_str_printable(kv->v.s, s, 64));
        return;
    case HERD_GGUF_VTYPE_ARRAY: {
        const struct herd_gguf_array *a = &kv->v.arr;
        int o = snprintf(buf, n, "[%s x %llu]", herd_gguf_vtype_name(a->type), (unsigned long long)a->count);
        if (a->type == HERD_GGUF_VTYPE_STRING) {
            struct herd_gguf_str_iter it;
            struct herd_gguf_str str;
            herd_gguf_str_iter_init(&it, a);
            for (int i = 0; i < 3 && herd_gguf_str_iter_next(&it, &str) && (size_t)o < n; i++)
                o += snprintf(buf + o, n - (size_t)o, " \"%s\"", herd_gguf_str_printable(str, s, 24));
        } else {
            for (uint64_t i = 0; i < a->count && i < 4 && (size_t)o < n; i++)
                o += snprintf(buf + o, n - (size_t)o, " %g", herd_gguf_array_f64(a, i));
        }
        if (a->count > 3 && (size_t)o < n) snprintf(buf + o, n - (size_t)o, " ...");
        return;
    }
    default: snprintf(buf, n, "?");
    }
}

static const char *shape_str(const struct herd_gguf_tensor *t, char *buf, size_t n) {
    int o = snprintf(buf, n, "[");
    for (uint32_t d = 0; d < t->n_dims; d++)
        o += snprintf(buf + o, n - (size_t)o, "%s%llu", d ? ", " : "", (unsigned long long)t->ne[d]);
    snprintf(buf + o, n - (size_t)o, "]");
    return buf;
}

static void human_bytes(uint64_t b, char *buf, size_t n) {
    if (b >= (1ull << 30))
        snprintf(buf, n, "%.2f GiB", (double)b / (1ull << 30));
    else if (b >= (1ull << 20))
        snprintf(buf, n, "%.2f MiB", (double)b / (1ull << 20));
    else if (b >= (1ull << 10))
        snprintf(buf, n, "%.1f KiB", (double)b / (1ull << 10));
    else
        snprintf(buf, n, "%llu B", (unsigned long long)b);
}

/* ------------------------------------------------------------ the type mix */

/* Tensors and bytes per ggml type: what a K-quant mix (Q4_K_M: Q4_K with
 * Q6_K for some attn_v / ffn_down and the output, F32 norms) is made of. */
struct type_mix {
    uint64_t n[HERD_GGML_TYPE__COUNT], bytes[HERD_GGML_TYPE__COUNT], elems[HERD_GGML_TYPE__COUNT];
};

static void type_mix(const struct herd_gguf *g, struct type_mix *m) {
    memset(m, 0, sizeof *m);
    for (size_t i = 0; i < herd_gguf_n_tensors(g); i++) {
        const struct herd_gguf_tensor *t = herd_gguf_tensor_at(g, i);
        m->n[t->type]++;
        m->bytes[t->type] += t->n_bytes;
        m->elems[t->type] += t->n_elems;
    }
}

static void print_type_mix(const struct herd_gguf *g) {
    struct type_mix m;
    type_mix(g, &m);
    printf("type mix     ");
    for (int t = 0; t < HERD_GGML_TYPE__COUNT; t++) {
        if (!m.n[t]) continue;
        char a[32];
        human_bytes(m.bytes[t], a, sizeof a);
        printf(" %s x %llu (%s, %.2f bits/weight)", herd_ggml_type_info((uint32_t)t)->name, (unsigned long long)m.n[t],
               a, 8.0 * (double)m.bytes[t] / (double)m.elems[t]);
    }
    printf("\n");
}

static json_t *type_mix_json(const struct herd_gguf *g) {
    struct type_mix m;
    type_mix(g, &m);
    json_t *arr = json_array();
    for (int t = 0; t < HERD_GGML_TYPE__COUNT; t++)
        if (m.n[t])
            json_array_append_new(arr, json_pack("{s:s,s:I,s:I,s:I}", "type", herd_ggml_type_info((uint32_t)t)->name,
                                                 "tensors", (json_int_t)m.n[t], "bytes", (json_int_t)m.bytes[t],
                                                 "elements", (json_int_t)m.elems[t]));
    return arr;
}

/* ------------------------------------------------------------ text output */

static void print_text(const char *path, const struct herd_gguf *g, const struct herd_model_desc *d,
                       const struct herd_error *runnable, uint64_t n_ctx, const struct herd_ram_estimate *ram) {
    char a[64], b[64], c[64], e[64];
    human_bytes(herd_gguf_file_size(g), a, sizeof a);
    printf("file          %s (%s, GGUF v%u, alignment %u)\n", path, a, herd_gguf_version(g), herd_gguf_alignment(g));
    printf("architecture  %s\n", d->arch[0] ? d->arch : "(none)");
    if (d->name[0]) printf("name          %s\n", d->name);
    if (d->file_type >= 0) printf("file type     %lld (%s)\n", (long long)d->file_type, file_type_name(d->file_type));
    if (d->n_embd)
        printf("hparams       n_embd %llu, n_layer %llu, n_ff %llu, n_head %llu, n_head_kv %llu, head_dim %llu, "
               "n_ctx_train %llu, rope_freq_base %g, rms_eps %g%s\n",
               (unsigned long long)d->n_embd, (unsigned long long)d->n_layer, (unsigned long long)d->n_ff,
               (unsigned long long)d->n_head, (unsigned long long)d->n_head_kv, (unsigned long long)d->head_dim,
               (unsigned long long)d->n_ctx_train, d->rope_freq_base, d->rms_eps,
               d->tied_embeddings ? ", tied embeddings" : "");
    if (d->tok_model[0] || d->n_vocab) {
        printf("tokenizer     model %s, pre %s, %llu tokens, %llu merges, bos %lld, eos %lld, unk %lld, pad %lld, "
               "add_bos %s, add_eos %s\n",
               d->tok_model[0] ? d->tok_model : "(none)", d->tok_pre[0] ? d->tok_pre : "(none)",
               (unsigned long long)d->n_vocab, (unsigned long long)d->n_merges, (long long)d->bos_id,
               (long long)d->eos_id, (long long)d->unk_id, (long long)d->pad_id,
               d->has_add_bos ? (d->add_bos ? "true" : "false") : "unset",
               d->has_add_eos ? (d->add_eos ? "true" : "false") : "unset");
    } else {
        printf("tokenizer     (none)\n");
    }
    if (d->chat_template_bytes)
        printf("chat template present (%llu bytes)\n", (unsigned long long)d->chat_template_bytes);
    else
        printf("chat template none (herd falls back to ChatML)\n");
    if (runnable->code == HERD_OK)
        printf("runnable      yes\n");
    else
        printf("runnable      no: %s\n", runnable->msg);

    printf("\nmetadata (%zu keys)\n", herd_gguf_n_kv(g));
    for (size_t i = 0; i < herd_gguf_n_kv(g); i++) {
        const struct herd_gguf_kv *kv = herd_gguf_kv_at(g, i);
        char key[96], val[200];
        render_value(kv, val, sizeof val);
        printf("  %-44s %-7s %s\n", herd_gguf_str_printable(kv->key, key, sizeof key), herd_gguf_vtype_name(kv->type),
               val);
    }
    human_bytes(d->weight_bytes, a, sizeof a);
    printf("\ntensors (%zu, %s, %llu parameters)\n", herd_gguf_n_tensors(g), a, (unsigned long long)d->n_params);
    if (herd_gguf_n_tensors(g)) {
        print_type_mix(g);
        printf("  %-32s %-8s %-22s %12s\n", "name", "type", "shape", "bytes");
    }
    for (size_t i = 0; i < herd_gguf_n_tensors(g); i++) {
        const struct herd_gguf_tensor *t = herd_gguf_tensor_at(g, i);
        char name[96], shape[96];
        printf("  %-32s %-8s %-22s %12llu\n", herd_gguf_str_printable(t->name, name, sizeof name),
               herd_ggml_type_info(t->type)->name, shape_str(t, shape, sizeof shape), (unsigned long long)t->n_bytes);
    }
    if (herd_gguf_n_tensors(g) && d->n_layer) {
        human_bytes(ram->weights, a, sizeof a);
        human_bytes(ram->kv_cache, b, sizeof b);
        human_bytes(ram->compute, c, sizeof c);
        human_bytes(ram->total, e, sizeof e);
        printf("\nram estimate  ctx %llu: weights %s + KV cache (f16) %s + compute %s = %s\n",
               (unsigned long long)n_ctx, a, b, c, e);
    }
}

/* ------------------------------------------------------------ JSON output */

static json_t *json_value(const struct herd_gguf_kv *kv) {
    switch (kv->type) {
    case HERD_GGUF_VTYPE_U8:
    case HERD_GGUF_VTYPE_U16:
    case HERD_GGUF_VTYPE_U32:
    case HERD_GGUF_VTYPE_U64:
        return kv->v.u <= (uint64_t)INT64_MAX ? json_integer((json_int_t)kv->v.u) : json_real((double)kv->v.u);
    case HERD_GGUF_VTYPE_I8:
    case HERD_GGUF_VTYPE_I16:
    case HERD_GGUF_VTYPE_I32:
    case HERD_GGUF_VTYPE_I64: return json_integer((json_int_t)kv->v.i);
    case HERD_GGUF_VTYPE_F32:
    case HERD_GGUF_VTYPE_F64: return kv->v.f == kv->v.f ? json_real(kv->v.f) : json_null();
    case HERD_GGUF_VTYPE_BOOL: return json_boolean(kv->v.b);
    case HERD_GGUF_VTYPE_STRING:
        /* Long strings (chat templates) are summarised; json_stringn_nocheck
         * is avoided so invalid UTF-8 cannot produce invalid JSON. */
        if (kv->v.s.len <= 256) {
            json_t *s = json_stringn(kv->v.s.ptr, (size_t)kv->v.s.len);
            if (s) return s;
        }
        return json_pack("{s:s,s:I}", "type", "string", "bytes", (json_int_t)kv->v.s.len);
    case HERD_GGUF_VTYPE_ARRAY:
        return json_pack("{s:s,s:s,s:I}", "type", "array", "element_type", herd_gguf_vtype_name(kv->v.arr.type),
                         "count", (json_int_t)kv->v.arr.count);
    default: return json_null();
    }
}

static json_t *id_or_null(int64_t id) { return id >= 0 ? json_integer(id) : json_null(); }

static int print_json(const char *path, const struct herd_gguf *g, const struct herd_model_desc *d,
                      const struct herd_error *runnable, uint64_t n_ctx, const struct herd_ram_estimate *ram) {
    json_t *root = json_object();
    json_object_set_new(root, "file", json_string(path));
    json_object_set_new(root, "file_bytes", json_integer((json_int_t)herd_gguf_file_size(g)));
    json_object_set_new(root, "gguf_version", json_integer(herd_gguf_version(g)));
    json_object_set_new(root, "alignment", json_integer(herd_gguf_alignment(g)));
    json_object_set_new(root, "data_offset", json_integer((json_int_t)herd_gguf_data_offset(g)));
    json_object_set_new(root, "architecture", d->arch[0] ? json_string(d->arch) : json_null());
    json_object_set_new(root, "name", d->name[0] ? json_string(d->name) : json_null());
    json_object_set_new(root, "file_type", d->file_type >= 0 ? json_integer(d->file_type) : json_null());
    json_object_set_new(root, "file_type_name",
                        d->file_type >= 0 ? json_string(file_type_name(d->file_type)) : json_null());
    json_t *hp = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:b}", "n_ctx_train", (json_int_t)d->n_ctx_train,
                           "n_embd", (json_int_t)d->n_embd, "n_layer", (json_int_t)d->n_layer, "n_ff",
                           (json_int_t)d->n_ff, "n_head", (json_int_t)d->n_head, "n_head_kv", (json_int_t)d->n_head_kv,
                           "head_dim", (json_int_t)d->head_dim, "n_rot", (json_int_t)d->n_rot, "rope_freq_base",
                           d->rope_freq_base, "rms_eps", d->rms_eps, "tied_embeddings", d->tied_embeddings);
    json_object_set_new(root, "hparams", hp);
    json_t *tok = json_object();
    json_object_set_new(tok, "model", d->tok_model[0] ? json_string(d->tok_model) : json_null());
    json_object_set_new(tok, "pre", d->tok_pre[0] ? json_string(d->tok_pre) : json_null());
    json_object_set_new(tok, "n_tokens", json_integer((json_int_t)d->n_vocab));
    json_object_set_new(tok, "n_merges", json_integer((json_int_t)d->n_merges));
    json_object_set_new(tok, "bos_token_id", id_or_null(d->bos_id));
    json_object_set_new(tok, "eos_token_id", id_or_null(d->eos_id));
    json_object_set_new(tok, "unknown_token_id", id_or_null(d->unk_id));
    json_object_set_new(tok, "padding_token_id", id_or_null(d->pad_id));
    json_object_set_new(tok, "add_bos_token", d->has_add_bos ? json_boolean(d->add_bos) : json_null());
    json_object_set_new(tok, "add_eos_token", d->has_add_eos ? json_boolean(d->add_eos) : json_null());
    json_object_set_new(root, "tokenizer", tok);
    json_object_set_new(
        root, "chat_template",
        json_pack("{s:b,s:I}", "present", d->chat_template_bytes > 0, "bytes", (json_int_t)d->chat_template_bytes));
    json_object_set_new(root, "runnable", json_boolean(runnable->code == HERD_OK));
    json_object_set_new(root, "runnable_error", runnable->code == HERD_OK ? json_null() : json_string(runnable->msg));

    json_t *meta = json_array();
    for (size_t i = 0; i < herd_gguf_n_kv(g); i++) {
        const struct herd_gguf_kv *kv = herd_gguf_kv_at(g, i);
        json_t *key = json_stringn(kv->key.ptr, (size_t)kv->key.len);
        if (!key) {
            char buf[160];
            key = json_string(herd_gguf_str_printable(kv->key, buf, sizeof buf));
        }
        json_array_append_new(meta, json_pack("{s:o,s:s,s:o}", "key", key, "type", herd_gguf_vtype_name(kv->type),
                                              "value", json_value(kv)));
    }
    json_object_set_new(root, "metadata", meta);

    json_t *tensors = json_array();
    for (size_t i = 0; i < herd_gguf_n_tensors(g); i++) {
        const struct herd_gguf_tensor *t = herd_gguf_tensor_at(g, i);
        char name[160];
        json_t *shape = json_array();
        for (uint32_t k = 0; k < t->n_dims; k++) json_array_append_new(shape, json_integer((json_int_t)t->ne[k]));
        json_array_append_new(tensors, json_pack("{s:s,s:s,s:o,s:I,s:I}", "name",
                                                 herd_gguf_str_printable(t->name, name, sizeof name), "type",
                                                 herd_ggml_type_info(t->type)->name, "shape", shape, "bytes",
                                                 (json_int_t)t->n_bytes, "offset", (json_int_t)t->offset));
    }
    json_object_set_new(root, "tensors", tensors);
    json_object_set_new(root, "type_mix", type_mix_json(g));
    json_object_set_new(root, "n_tensors", json_integer((json_int_t)d->n_tensors));
    json_object_set_new(root, "weight_bytes", json_integer((json_int_t)d->weight_bytes));
    json_object_set_new(root, "n_params", json_integer((json_int_t)d->n_params));
    json_object_set_new(root, "ram_estimate",
                        json_pack("{s:I,s:I,s:I,s:I,s:I}", "n_ctx", (json_int_t)n_ctx, "weights",
                                  (json_int_t)ram->weights, "kv_cache", (json_int_t)ram->kv_cache, "compute",
                                  (json_int_t)ram->compute, "total", (json_int_t)ram->total));
    int rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    fputc('\n', stdout);
    json_decref(root);
    return rc == 0 ? 0 : 1;
}

int herd_cmd_inspect(int argc, char **argv) {
    bool as_json = false;
    uint64_t n_ctx = 0;
    const struct cli_opt opts[] = {
        {"json", 0, CLI_FLAG, &as_json, NULL, "print one JSON object instead of text"},
        {"ctx", 0, CLI_U64, &n_ctx, "N", "context length for the RAM estimate (default: the model's, at most 4096)"},
        {0},
    };
    const char *pos[1];
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, pos, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;

    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    if (herd_gguf_open_file(pos[0], &g, &err) != HERD_OK) {
        fprintf(stderr, "herd inspect: %s\n", err.msg);
        return 1;
    }
    struct herd_model_desc d;
    if (herd_model_desc_read(g, &d, &err) != HERD_OK) {
        fprintf(stderr, "herd inspect: %s: %s\n", pos[0], err.msg);
        herd_gguf_destroy(g);
        return 1;
    }
    struct herd_error runnable = {0};
    if (d.n_tensors == 0)
        herd_error_set(&runnable, HERD_E_NOT_FOUND, "vocabulary only (no tensors)");
    else if (herd_model_desc_validate(g, &d, &runnable) == HERD_OK)
        herd_error_clear(&runnable);
    if (n_ctx == 0) n_ctx = d.n_ctx_train && d.n_ctx_train < 4096 ? d.n_ctx_train : 4096;
    struct herd_ram_estimate ram;
    herd_model_desc_ram_estimate(&d, n_ctx, &ram);
    int rc = 0;
    if (as_json)
        rc = print_json(pos[0], g, &d, &runnable, n_ctx, &ram);
    else
        print_text(pos[0], g, &d, &runnable, n_ctx, &ram);
    herd_gguf_destroy(g);
    return rc;
}

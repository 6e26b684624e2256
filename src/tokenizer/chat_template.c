/* Chat template selection (override, the model's own, ChatML fallback),
 * the built-in templates, and the variables a template is rendered with. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tokenizer/chat_template.h"

/* ChatML, the format most instruction-tuned models without a template of
 * their own were trained on; what Hugging Face and llama.cpp fall back to.
 * Content may be a string or a list of text parts. */
static const char chatml[] = "{%- for message in messages -%}\n"
                             "{{- '<|im_start|>' + message['role'] + '\\n' -}}\n"
                             "{%- if message['content'] is string -%}{{- message['content'] -}}\n"
                             "{%- elif message['content'] is iterable -%}\n"
                             "{%- for part in message['content'] -%}{%- if part['type'] == 'text' -%}{{- part['text'] "
                             "-}}{%- endif -%}{%- endfor -%}\n"
                             "{%- endif -%}\n"
                             "{{- '<|im_end|>\\n' -}}\n"
                             "{%- endfor -%}\n"
                             "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}\n";

/* The templates these models ship with (as in ../shared/fixtures/chat). */
static const char llama3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

static const char phi3[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + '\n' + "
    "message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}{% elif (message['role'] == 'assistant') "
    "%}{{message['content'] + '<|end|>' + '\n'}}{% endif %}{% endfor %}";

static const char mistral_v7[] =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] "
    "+ '[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' + message['content'] + "
    "'[/SYSTEM_PROMPT]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% "
    "else %}{{ raise_exception('Only user, system and assistant roles are supported!') }}{% endif %}{% endfor %}";

struct builtin {
    const char *name, *source;
};

static const struct builtin builtins[] = {
    {"chatml", chatml},
    {"llama3", llama3},
    {"phi3", phi3},
    {"mistral-v7", mistral_v7},
};

const char *herd_chat_template_builtin_names(void) { return "chatml, llama3, phi3, mistral-v7"; }

static char *dup_str(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* Reads a template file of at most HERD_CHAT_TEMPLATE_MAX_BYTES. */
static enum herd_status read_file(const char *path, char **out, size_t *len, struct herd_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return herd_error_set(err, HERD_E_IO, "%s: %s", path, strerror(errno));
    char *buf = malloc(HERD_CHAT_TEMPLATE_MAX_BYTES + 1);
    if (!buf) {
        fclose(f);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory reading %s", path);
    }
    size_t n = fread(buf, 1, HERD_CHAT_TEMPLATE_MAX_BYTES + 1, f);
    bool bad = ferror(f);
    fclose(f);
    if (bad || n > HERD_CHAT_TEMPLATE_MAX_BYTES) {
        free(buf);
        return bad ? herd_error_set(err, HERD_E_IO, "%s: read error", path)
                   : herd_error_set(err, HERD_E_INVALID, "%s: a chat template larger than %zu bytes", path,
                                    HERD_CHAT_TEMPLATE_MAX_BYTES);
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return HERD_OK;
}

static char *token_text(const struct herd_vocab *v, int32_t id) {
    if (!v || id < 0 || (uint32_t)id >= v->n_tokens) return dup_str("", 0);
    return dup_str(v->text[id].ptr, v->text[id].len);
}

/* The tool-call format of a template, from the markers in its text. */
static enum herd_tool_format tool_format_of(const char *src, size_t len) {
    if (memmem(src, len, "<tool_call>", 11)) return HERD_TOOLS_HERMES;
    if (memmem(src, len, "[TOOL_CALLS]", 12)) return HERD_TOOLS_MISTRAL;
    if (memmem(src, len, "<|python_tag|>", 14) ||
        (memmem(src, len, "ipython", 7) && memmem(src, len, "parameters", 10)))
        return HERD_TOOLS_LLAMA3;
    return HERD_TOOLS_GENERIC;
}

enum herd_status herd_chat_template_load(const struct herd_gguf *g, const struct herd_vocab *v, const char *override,
                                         struct herd_chat_template **out, struct herd_error *err) {
    *out = NULL;
    struct herd_chat_template *t = calloc(1, sizeof *t);
    if (!t) return herd_error_set(err, HERD_E_NOMEM, "out of memory loading a chat template");
    enum herd_status rc = HERD_OK;
    char *file_src = NULL;
    const char *src = NULL;
    size_t len = 0;
    struct herd_gguf_str s;
    if (override) {
        char key[256];
        snprintf(key, sizeof key, "tokenizer.chat_template.%s", override);
        if (g && strlen(override) < 200 && herd_gguf_get_string(g, key, &s, NULL) == HERD_OK) {
            src = s.ptr;
            len = s.len;
            snprintf(t->origin, sizeof t->origin, "model:%s", override);
        }
        for (size_t i = 0; !src && i < sizeof builtins / sizeof *builtins; i++)
            if (strcmp(builtins[i].name, override) == 0) {
                src = builtins[i].source;
                len = strlen(src);
                snprintf(t->origin, sizeof t->origin, "built-in %s", override);
            }
        if (!src) {
            struct stat st;
            if (stat(override, &st) != 0) {
                rc = herd_error_set(err, HERD_E_NOT_FOUND,
                                    "chat template '%s' is neither a template in the model, a built-in one (%s), "
                                    "nor a file",
                                    override, herd_chat_template_builtin_names());
                goto out;
            }
            if ((rc = read_file(override, &file_src, &len, err)) != HERD_OK) goto out;
            src = file_src;
            snprintf(t->origin, sizeof t->origin, "%s", override);
        }
    } else if (g && herd_gguf_get_string(g, "tokenizer.chat_template", &s, NULL) == HERD_OK) {
        src = s.ptr;
        len = s.len;
        snprintf(t->origin, sizeof t->origin, "model");
    } else {
        src = chatml;
        len = strlen(chatml);
        snprintf(t->origin, sizeof t->origin, "built-in chatml (the model has no chat template)");
    }
    if (len > HERD_CHAT_TEMPLATE_MAX_BYTES) {
        rc = herd_error_set(err, HERD_E_INVALID, "chat template (%s) larger than %zu bytes", t->origin,
                            HERD_CHAT_TEMPLATE_MAX_BYTES);
        goto out;
    }
    if ((rc = herd_jinja_parse(src, len, &t->jinja, err)) != HERD_OK) {
        herd_error_prefix(err, "chat template (%s)", t->origin);
        goto out;
    }
    t->tool_format = tool_format_of(src, len);
    t->bos = token_text(v, v ? v->bos : -1);
    t->eos = token_text(v, v ? v->eos : -1);
    if (!t->bos || !t->eos) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory loading a chat template");
        goto out;
    }
    *out = t;
    t = NULL;
out:
    free(file_src);
    herd_chat_template_destroy(t);
    return rc;
}

void herd_chat_template_destroy(struct herd_chat_template *t) {
    if (!t) return;
    herd_jinja_destroy(t->jinja);
    free(t->bos);
    free(t->eos);
    free(t);
}

enum herd_status herd_chat_template_render(const struct herd_chat_template *t, const struct herd_chat_render_params *p,
                                           char **out, size_t *out_len, struct herd_error *err) {
    *out = NULL;
    *out_len = 0;
    if (!json_is_array(p->messages)) return herd_error_set(err, HERD_E_INVALID, "messages must be a JSON array");
    if (p->tools && !json_is_array(p->tools)) return herd_error_set(err, HERD_E_INVALID, "tools must be a JSON array");
    /* Hugging Face passes tools only when there are some: templates test
     * `tools is defined` as often as `tools is not none` */
    json_t *vars = json_object();
    if (!vars) return herd_error_set(err, HERD_E_NOMEM, "out of memory rendering a chat template");
    json_object_set(vars, "messages", (json_t *)p->messages);
    if (p->tools) json_object_set(vars, "tools", (json_t *)p->tools);
    json_object_set_new(vars, "add_generation_prompt", json_boolean(p->add_generation_prompt));
    json_t *bos = json_string(p->bos_token ? p->bos_token : t->bos);
    json_t *eos = json_string(p->eos_token ? p->eos_token : t->eos);
    enum herd_status rc;
    if (!bos || !eos) {
        rc = herd_error_set(err, HERD_E_INVALID, "the BOS or EOS token text is not UTF-8");
        json_decref(bos);
        json_decref(eos);
    } else {
        json_object_set_new(vars, "bos_token", bos);
        json_object_set_new(vars, "eos_token", eos);
        rc = herd_jinja_render(t->jinja, vars, p->now, p->limits, out, out_len, err);
        if (rc != HERD_OK) herd_error_prefix(err, "chat template (%s)", t->origin);
    }
    json_decref(vars);
    return rc;
}

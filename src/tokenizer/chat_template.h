/* A model's chat template: which one applies (an override, the GGUF's own
 * tokenizer.chat_template, or ChatML when the file has none) and rendering
 * a conversation through it the way Hugging Face's apply_chat_template
 * does (messages, tools, add_generation_prompt, bos_token, eos_token). */
#ifndef HERD_TOKENIZER_CHAT_TEMPLATE_H
#define HERD_TOKENIZER_CHAT_TEMPLATE_H

#include <jansson.h>
#include <stdbool.h>
#include <time.h>

#include "herd/gguf.h"
#include "herd/status.h"
#include "jinja/jinja.h"
#include "tokenizer/vocab.h"

/* Template sources larger than this are refused (real ones are < 20 KiB). */
#define HERD_CHAT_TEMPLATE_MAX_BYTES ((size_t)1 << 20)

/* How the template's model family writes a tool call, read from the
 * template's text (the markers each family's templates carry):
 *   HERMES   <tool_call>{"name": ..., "arguments": {...}}</tool_call> (Hermes, Qwen)
 *   LLAMA3   {"name": ..., "parameters": {...}}, after <|python_tag|> or alone (Llama 3.x)
 *   MISTRAL  [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...] (Mistral)
 *   GENERIC  {"name": ..., "arguments": {...}} (any other template) */
enum herd_tool_format { HERD_TOOLS_GENERIC = 0, HERD_TOOLS_HERMES, HERD_TOOLS_LLAMA3, HERD_TOOLS_MISTRAL };

struct herd_chat_template {
    struct herd_jinja_template *jinja;
    enum herd_tool_format tool_format;
    char origin[256]; /* "model", "model:tool_use", "built-in chatml", or the file path */
    char *bos, *eos;  /* the model's BOS / EOS token text; "" without a model */
};

/* Picks and parses a template. override (NULL for none) is a NAME or a
 * FILE: a name first selects tokenizer.chat_template.NAME from g, then a
 * built-in template (herd_chat_template_builtin_names), else it is read as
 * a file. Without an override: g's tokenizer.chat_template, or ChatML
 * when g has none (or g is NULL). v (may be NULL) supplies bos/eos.
 * Errors name the template's origin and the line/column. Free with
 * herd_chat_template_destroy. */
enum herd_status herd_chat_template_load(const struct herd_gguf *g, const struct herd_vocab *v, const char *override,
                                         struct herd_chat_template **out, struct herd_error *err);
void herd_chat_template_destroy(struct herd_chat_template *t);

/* "chatml, llama3, ..." for messages and --help. */
const char *herd_chat_template_builtin_names(void);

struct herd_chat_render_params {
    const json_t *messages; /* array of {role, content, ...} */
    const json_t *tools;    /* array, or NULL: the template sees no `tools` variable */
    bool add_generation_prompt;
    const char *bos_token, *eos_token;      /* NULL: the template's (the model's) */
    time_t now;                             /* what strftime_now() formats */
    const struct herd_jinja_limits *limits; /* NULL: the defaults */
};

/* Renders the conversation. *out is malloc'd, NUL-terminated, *out_len
 * bytes; the caller frees it. Thread-safe for one template. */
enum herd_status herd_chat_template_render(const struct herd_chat_template *t, const struct herd_chat_render_params *p,
                                           char **out, size_t *out_len, struct herd_error *err);

#endif

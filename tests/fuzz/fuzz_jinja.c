/* libFuzzer target for the chat-template engine: any bytes as a template
 * either fail to parse or render (with the conversation below) into text
 * or an error, within tight limits: never a crash, a leak, a hang or a
 * stack overflow. Templates are files users download. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "jinja/jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char conversation[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \"Hi <b> & 'you' \\u00e9\"},"
    " {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"Hello\"}],"
    "  \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": "
    "{\"x\": 1}}}]},"
    " {\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"42\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": \"d\","
    "  \"parameters\": {\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"integer\"}}, \"required\": "
    "[\"x\"]}}}],"
    " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"n\": 3, \"f\": 2.5}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static json_t *vars;
    if (!vars) vars = json_loads(conversation, 0, NULL);
    struct herd_error err = {0};
    struct herd_jinja_template *t = NULL;
    if (herd_jinja_parse((const char *)data, size, &t, &err) != HERD_OK) return 0;
    /* limits small enough that one input takes milliseconds */
    struct herd_jinja_limits lim = {
        .max_output_bytes = 1 << 20, .max_memory_bytes = 32 << 20, .max_steps = 20000, .max_depth = 32};
    char *out = NULL;
    size_t len = 0;
    if (herd_jinja_render(t, vars, 0, &lim, &out, &len, &err) == HERD_OK) free(out);
    herd_jinja_destroy(t);
    return 0;
}

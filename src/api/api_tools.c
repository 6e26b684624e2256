/* Tool calling (api.h, "tools"): the request's tools, tool_choice and
 * parallel_tool_calls checked; with tool_choice "required" or a named
 * function, the grammar that makes the model write a call in its family's
 * format with arguments valid against the function's parameters; and the
 * model's output parsed back into OpenAI's tool_calls. The tools
 * themselves reach the model through its chat template (parse_chat passes
 * them to the renderer). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "api/api.h"
#include "sampling/json_schema.h"

#define TOOLS_MAX     128
#define TOOL_NAME_MAX 64

/* ---------------------------------------------------------- the request */

static bool tool_bad(struct herd_api_error *err, const char *param, const char *msg) {
    err->kind = HERD_API_BAD_REQUEST;
    err->type = "invalid_request_error";
    snprintf(err->param, sizeof err->param, "%s", param);
    snprintf(err->message, sizeof err->message, "%s", msg);
    err->code = NULL;
    return false;
}

static bool valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > TOOL_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-') return false;
    return true;
}

/* The grammar of one call to tool t (its index i for rule names): the
 * family's JSON object with the name fixed and the arguments compiled from
 * the parameters schema. Appends to g. */
static bool call_rules(struct herd_buf *g, const json_t *fn, size_t i, enum herd_tool_format f, char *msg,
                       size_t msg_cap) {
    const char *name = json_string_value(json_object_get(fn, "name"));
    json_t *params = json_object_get(fn, "parameters");
    json_t *any = NULL;
    /* no parameters: the function takes none, and is called with {} */
    if (!params) params = any = json_pack("{s:s,s:{},s:b}", "type", "object", "properties", "additionalProperties", 0);
    char prefix[24];
    snprintf(prefix, sizeof prefix, "t%zu-", i);
    char *rules = NULL;
    struct herd_error e = {0};
    enum herd_status rc = herd_json_schema_rules(params, prefix, &rules, &e);
    json_decref(any);
    if (rc != HERD_OK) {
        snprintf(msg, msg_cap, "tool '%.64s': %.380s", name, e.msg);
        return false;
    }
    char head[256];
    /* {"name": "NAME", "arguments": ARGS} with Llama 3's "parameters" */
    snprintf(head, sizeof head, "call%zu ::= \"{\\\"name\\\": \\\"%s\\\", \\\"%s\\\": \" %sroot \"}\"\n", i, name,
             f == HERD_TOOLS_LLAMA3 ? "parameters" : "arguments", prefix);
    bool ok = herd_buf_append(g, head, strlen(head)) && herd_buf_append(g, rules, strlen(rules));
    free(rules);
    if (!ok) snprintf(msg, msg_cap, "the tools' grammar is too large");
    return ok;
}

bool herd_api_parse_tools(json_t *body, const struct herd_api_model *m, struct herd_api_request *r,
                          struct herd_api_error *err) {
    json_t *tools = json_object_get(body, "tools"), *choice = json_object_get(body, "tool_choice");
    json_t *parallel = json_object_get(body, "parallel_tool_calls");
    const size_t n = json_is_array(tools) ? json_array_size(tools) : 0;
    if (tools && !json_is_null(tools) && !json_is_array(tools))
        return tool_bad(err, "tools", "'tools' must be an array");
    if (n > TOOLS_MAX) return tool_bad(err, "tools", "more than 128 tools");
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(tools, i), *fn = json_object_get(t, "function");
        json_t *type = json_object_get(t, "type"), *name = json_object_get(fn, "name");
        json_t *params = json_object_get(fn, "parameters");
        if (!json_is_object(t) || !json_is_string(type) || strcmp(json_string_value(type), "function") != 0 ||
            !json_is_object(fn))
            return tool_bad(err, "tools", "each tool must be {\"type\": \"function\", \"function\": {...}}");
        if (!json_is_string(name) || !valid_name(json_string_value(name)))
            return tool_bad(err, "tools", "a function's 'name' must be 1-64 of a-z, A-Z, 0-9, _ and -");
        if (params && !json_is_object(params))
            return tool_bad(err, "tools", "a function's 'parameters' must be a JSON Schema object");
        for (size_t j = 0; j < i; j++)
            if (strcmp(
                    json_string_value(json_object_get(json_object_get(json_array_get(tools, j), "function"), "name")),
                    json_string_value(name)) == 0)
                return tool_bad(err, "tools", "two tools have the same name");
    }
    if (parallel && !json_is_null(parallel) && !json_is_boolean(parallel))
        return tool_bad(err, "parallel_tool_calls", "'parallel_tool_calls' must be true or false");
    r->tools.parallel = !json_is_false(parallel);
    r->tools.format = m->chat_template ? m->chat_template->tool_format : HERD_TOOLS_GENERIC;
    bool required = false;
    const char *forced = NULL;
    if (choice && !json_is_null(choice)) {
        if (json_is_string(choice)) {
            const char *c = json_string_value(choice);
            if (strcmp(c, "none") == 0) return true; /* tools shown to the template, never parsed */
            if (strcmp(c, "required") == 0)
                required = true;
            else if (strcmp(c, "auto") != 0)
                return tool_bad(err, "tool_choice", "'tool_choice' must be none, auto, required or a named function");
        } else {
            json_t *fn = json_object_get(choice, "function");
            if (!json_is_object(choice) || !json_is_string(json_object_get(fn, "name")))
                return tool_bad(err, "tool_choice",
                                "'tool_choice' must be none, auto, required or {\"type\": \"function\", \"function\": "
                                "{\"name\": ...}}");
            forced = json_string_value(json_object_get(fn, "name"));
        }
    }
    if (n == 0) {
        if (required || forced) return tool_bad(err, "tool_choice", "'tool_choice' needs 'tools'");
        return true;
    }
    r->tools.on = true;
    if (!required && !forced) return true;
    if (r->grammar)
        return tool_bad(err, "tool_choice",
                        "a required or named tool_choice cannot be combined with response_format or grammar");
    /* the constraint: one call to the named tool, or to any of them */
    struct herd_buf g;
    herd_buf_init(&g, 8u << 20);
    char msg[480] = "out of memory";
    bool ok = true, found = false;
    const char *open = "", *close = "";
    if (r->tools.format == HERD_TOOLS_HERMES) open = "\"<tool_call>\\n\" ", close = " \"\\n</tool_call>\"";
    if (r->tools.format == HERD_TOOLS_MISTRAL) open = "\"[\" ", close = " \"]\"";
    char line[256];
    snprintf(line, sizeof line, "root ::= %scalls%s\ncalls ::= ", open, close);
    ok = herd_buf_append(&g, line, strlen(line));
    for (size_t i = 0; ok && i < n; i++) {
        const char *name =
            json_string_value(json_object_get(json_object_get(json_array_get(tools, i), "function"), "name"));
        if (forced && strcmp(forced, name) != 0) continue;
        snprintf(line, sizeof line, "%scall%zu", found ? " | " : "", i);
        ok = herd_buf_append(&g, line, strlen(line));
        found = true;
    }
    if (forced && !found) {
        herd_buf_cleanup(&g);
        return tool_bad(err, "tool_choice", "'tool_choice' names a function that is not among the tools");
    }
    ok = ok && herd_buf_append(&g, "\n", 1);
    for (size_t i = 0; ok && i < n; i++) {
        const json_t *fn = json_object_get(json_array_get(tools, i), "function");
        if (forced && strcmp(forced, json_string_value(json_object_get(fn, "name"))) != 0) continue;
        ok = call_rules(&g, fn, i, r->tools.format, msg, sizeof msg);
    }
    const char *prim = herd_json_schema_primitives();
    ok = ok && herd_buf_append(&g, prim, strlen(prim));
    struct herd_error e = {0};
    if (ok && herd_grammar_parse((const char *)g.data, g.len, &r->grammar, &e) != HERD_OK) {
        snprintf(msg, sizeof msg, "%.470s", e.msg);
        ok = false;
    }
    herd_buf_cleanup(&g);
    if (!ok) return tool_bad(err, "tools", msg);
    r->gp.grammar = r->grammar;
    r->tools.constrained = true;
    return true;
}

/* ------------------------------------------------------------ the output */

static const char *skip_space(const char *p, const char *end) {
    while (p < end && isspace((unsigned char)*p)) p++;
    return p;
}

/* A call object {"name": s, "arguments"|"parameters": object or string}
 * as OpenAI's tool_call, id from seed and k: "call_" and 24 characters as
 * OpenAI's look, or 9 alphanumerics for Mistral's templates, which refuse
 * other ids when the call comes back. NULL when it is not one. */
static json_t *call_json(json_t *o, uint64_t seed, size_t k, enum herd_tool_format f) {
    json_t *name = json_object_get(o, "name");
    json_t *args = json_object_get(o, "arguments");
    if (!args) args = json_object_get(o, "parameters");
    if (!json_is_object(o) || !json_is_string(name) || !args || !(json_is_object(args) || json_is_string(args)))
        return NULL;
    char *text = json_is_string(args) ? strdup(json_string_value(args)) : json_dumps(args, JSON_COMPACT);
    if (!text) return NULL;
    /* call_ + 24 characters, as OpenAI's ids look; unique per answer and call */
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    char id[32] = "call_";
    const int at = f == HERD_TOOLS_MISTRAL ? 0 : 5, len = f == HERD_TOOLS_MISTRAL ? 9 : 24;
    uint64_t h = XXH3_64bits_withSeed(&k, sizeof k, seed);
    for (int i = 0; i < len; i++) {
        if (i % 10 == 0) h = XXH3_64bits_withSeed(&h, sizeof h, seed ^ (uint64_t)i);
        id[at + i] = alnum[h % 62];
        h /= 62;
    }
    id[at + len] = 0;
    json_t *call =
        json_pack("{s:s,s:s,s:{s:O,s:s}}", "id", id, "type", "function", "function", "name", name, "arguments", text);
    free(text);
    return call;
}

/* Parses one JSON value at *p (advanced past it); NULL when there is none. */
static json_t *json_at(const char **p, const char *end) {
    json_error_t je;
    json_t *v = json_loadb(*p, (size_t)(end - *p), JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &je);
    if (v) *p += je.position;
    return v;
}

json_t *herd_api_tool_calls(enum herd_tool_format f, const char *text, size_t n, uint64_t seed, size_t *content_len) {
    const char *p = text, *end = text + n;
    json_t *calls = json_array();
    *content_len = n;
    if (f == HERD_TOOLS_HERMES) {
        const char *first = NULL;
        for (;;) {
            const char *open = memmem(p, (size_t)(end - p), "<tool_call>", 11);
            if (!open) break;
            const char *q = skip_space(open + 11, end);
            json_t *o = json_at(&q, end);
            q = skip_space(q, end);
            json_t *call = o ? call_json(o, seed, json_array_size(calls), f) : NULL;
            json_decref(o);
            if (!call || (size_t)(end - q) < 12 || memcmp(q, "</tool_call>", 12) != 0) {
                json_decref(call);
                break;
            }
            json_array_append_new(calls, call);
            if (!first) first = open;
            p = q + 12;
        }
        /* what the model wrote before its first call stays its content */
        if (first) {
            const char *c = first;
            while (c > text && isspace((unsigned char)c[-1])) c--;
            *content_len = (size_t)(c - text);
        }
    } else {
        p = skip_space(p, end);
        /* a call is the whole answer: Llama's <|python_tag|> and Mistral's
         * [TOOL_CALLS] are control tokens, not in the text */
        if (f == HERD_TOOLS_MISTRAL && (size_t)(end - p) >= 12 && memcmp(p, "[TOOL_CALLS]", 12) == 0) p += 12;
        json_t *v = json_at(&p, end);
        if (v && skip_space(p, end) == end) {
            if (json_is_array(v)) {
                size_t i;
                json_t *o;
                json_array_foreach(v, i, o) {
                    json_t *call = call_json(o, seed, i, f);
                    if (!call) {
                        json_array_clear(calls);
                        break;
                    }
                    json_array_append_new(calls, call);
                }
            } else if (json_is_object(v)) {
                json_t *call = call_json(v, seed, 0, f);
                if (call) json_array_append_new(calls, call);
            }
        }
        json_decref(v);
        if (json_array_size(calls)) *content_len = 0;
    }
    if (json_array_size(calls) == 0) {
        json_decref(calls);
        *content_len = n;
        return NULL;
    }
    return calls;
}

bool herd_api_tool_call_possible(enum herd_tool_format f, const char *text, size_t n) {
    const char *p = skip_space(text, text + n);
    const size_t left = (size_t)(text + n - p);
    if (left == 0) return true;
    if (f == HERD_TOOLS_HERMES) {
        /* a call may come after some content too: hold only its opening */
        return left < 11 ? memcmp(p, "<tool_call>", left) == 0 : memcmp(p, "<tool_call>", 11) == 0;
    }
    if (f == HERD_TOOLS_MISTRAL && (*p == '[')) return true;
    return *p == '{' || (f == HERD_TOOLS_MISTRAL && *p == '[');
}

/* `herd chat-template`: renders a conversation through a chat template
 * (the model's, a built-in one, or a file) and prints exactly what the
 * model would be given, for debugging templates and for tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/timing.h"
#include "cli/cli_args.h"
#include "cli/commands.h"
#include "herd/gguf.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/vocab.h"

static const struct cli_command cmd = {
    .name = "chat-template",
    .args = "",
    .summary = "Render a conversation through a chat template and print the prompt exactly, nothing added.",
    .details = "The template is the model's tokenizer.chat_template (-m), or --template NAME|FILE: a template\n"
               "stored in the model under that name, a built-in one (chatml, llama3, phi3, mistral-v7), or a\n"
               "Jinja file. --messages is a JSON array of {\"role\", \"content\"} objects (content a string or a\n"
               "list of parts); --tools a JSON array of tool definitions. A template error is printed on stderr\n"
               "with its line and column, exit code 1.",
    .min_pos = 0,
    .max_pos = 0,
};

static json_t *load_json(const char *path, const char *what) {
    json_error_t je;
    json_t *j =
        strcmp(path, "-") == 0 ? json_loadf(stdin, JSON_DECODE_ANY, &je) : json_load_file(path, JSON_DECODE_ANY, &je);
    if (!j) {
        fprintf(stderr, "herd chat-template: %s %s: line %d, column %d: %s\n", what, path, je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_array(j)) {
        fprintf(stderr, "herd chat-template: %s %s: expected a JSON array\n", what, path);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* --now YYYY-MM-DD: the date strftime_now() sees (tests pin it). */
static bool parse_date(const char *s, time_t *out) {
    struct tm tm = {0};
    int y, m, d;
    char extra;
    if (sscanf(s, "%d-%d-%d%c", &y, &m, &d, &extra) != 3 || y < 1970 || y > 9999 || m < 1 || m > 12 || d < 1 || d > 31)
        return false;
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    *out = timegm(&tm);
    return true;
}

int herd_cmd_chat_template(int argc, char **argv) {
    const char *model = NULL, *tmpl = NULL, *messages_path = NULL, *tools_path = NULL, *bos = NULL, *eos = NULL,
               *now_s = NULL;
    bool gen = false;
    uint64_t repeat = 1;
    const struct cli_opt opts[] = {
        {"model", 'm', CLI_STRING, &model, "FILE", "GGUF model (or vocabulary) whose template and BOS/EOS to use"},
        {"template", 0, CLI_STRING, &tmpl, "NAME|FILE", "template to use instead of the model's"},
        {"messages", 0, CLI_STRING, &messages_path, "FILE", "JSON array of messages (- for stdin)"},
        {"tools", 0, CLI_STRING, &tools_path, "FILE", "JSON array of tools"},
        {"add-generation-prompt", 0, CLI_FLAG, &gen, NULL, "end with the start of an assistant turn"},
        {"bos", 0, CLI_STRING, &bos, "TEXT", "bos_token (default: the model's; empty without -m)"},
        {"eos", 0, CLI_STRING, &eos, "TEXT", "eos_token (default: the model's; empty without -m)"},
        {"now", 0, CLI_STRING, &now_s, "YYYY-MM-DD", "date strftime_now() formats (default: today, UTC)"},
        {"repeat", 0, CLI_U64, &repeat, "N", "render N times and print the median time to stderr (benchmarks)"},
        {0},
    };
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, NULL, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    if ((!model && !tmpl) || !messages_path || repeat == 0 || repeat > 100000) {
        fprintf(stderr, "herd chat-template: give -m MODEL or --template NAME|FILE, and --messages FILE; --repeat is "
                        "1..100000\n");
        cli_print_help(&cmd, opts, stderr);
        return 2;
    }
    time_t now = time(NULL);
    if (now_s && !parse_date(now_s, &now)) {
        fprintf(stderr, "herd chat-template: --now wants YYYY-MM-DD, got '%s'\n", now_s);
        return 2;
    }
    int rc = 1;
    struct herd_error err = {0};
    struct herd_gguf *g = NULL;
    struct herd_vocab *v = NULL;
    struct herd_chat_template *t = NULL;
    json_t *messages = NULL, *tools = NULL;
    char *text = NULL;
    size_t len = 0;
    if (model && (herd_gguf_open_file(model, &g, &err) != HERD_OK || herd_vocab_load(g, &v, &err) != HERD_OK)) {
        fprintf(stderr, "herd chat-template: %s: %s\n", model, err.msg);
        goto out;
    }
    if (herd_chat_template_load(g, v, tmpl, &t, &err) != HERD_OK) {
        fprintf(stderr, "herd chat-template: %s\n", err.msg);
        goto out;
    }
    if (!(messages = load_json(messages_path, "messages"))) goto out;
    if (tools_path && !(tools = load_json(tools_path, "tools"))) goto out;
    struct herd_chat_render_params p = {
        .messages = messages,
        .tools = tools,
        .add_generation_prompt = gen,
        .bos_token = bos     ? bos
                     : model ? NULL
                             : "",
        .eos_token = eos     ? eos
                     : model ? NULL
                             : "",
        .now = now,
    };
    double *times = calloc(repeat, sizeof *times);
    if (!times) goto out;
    for (uint64_t i = 0; i < repeat; i++) {
        free(text);
        text = NULL;
        double t0 = herd_time_now_s();
        enum herd_status st = herd_chat_template_render(t, &p, &text, &len, &err);
        times[i] = herd_time_now_s() - t0;
        if (st != HERD_OK) {
            fprintf(stderr, "herd chat-template: %s\n", err.msg);
            free(times);
            goto out;
        }
    }
    if (repeat > 1)
        fprintf(stderr, "herd chat-template: %zu bytes rendered, median of %llu: %.1f us\n", len,
                (unsigned long long)repeat, herd_median(times, (size_t)repeat) * 1e6);
    free(times);
    rc = fwrite(text, 1, len, stdout) == len && fflush(stdout) == 0 ? 0 : 1;
out:
    free(text);
    json_decref(messages);
    json_decref(tools);
    herd_chat_template_destroy(t);
    herd_vocab_destroy(v);
    herd_gguf_destroy(g);
    return rc;
}

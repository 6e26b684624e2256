/* `herd run`: generate text from a prompt on one sequence. The generated
 * text goes to stdout as it is produced (never a broken UTF-8 character),
 * timings to stderr; --json prints one object instead. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/timing.h"
#include "cli/cli_model.h"
#include "cli/commands.h"
#include "sampling/sampler.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

static const struct cli_command cmd = {
    .name = "run",
    .args = "",
    .summary = "Generate text from a prompt (-p TEXT or --prompt-ids 1,2,3) with the model (-m, default: the\n"
               "built-in stories260K). Text to stdout as it is generated, timings to stderr.",
    .details =
        "-p TEXT is tokenized with the model's own vocabulary, BOS added as the vocabulary asks;\n"
        "--prompt-ids are used exactly as given. Generation stops after -n tokens, at an end-of-generation\n"
        "token (unless --ignore-eos), or at the context length. --json prints\n"
        "{\"prompt_ids\":[...],\"ids\":[...],\"text\":\"...\",\"finish_reason\":\"stop|length\",\"timings\":{...}}.",
    .min_pos = 0,
    .max_pos = 0,
};

#define RUN_MAX_PROMPT (1u << 20)

/* [system,] user message through the chat template, with the assistant's
 * turn opened. */
static bool render_chat(const struct herd_gguf *g, const struct herd_vocab *v, const char *override, const char *system,
                        const char *user, char **out, size_t *out_len, struct herd_error *err) {
    struct herd_chat_template *t = NULL;
    if (herd_chat_template_load(g, v, override, &t, err) != HERD_OK) return false;
    json_t *messages = json_array();
    if (system) json_array_append_new(messages, json_pack("{s:s,s:s}", "role", "system", "content", system));
    json_array_append_new(messages, json_pack("{s:s,s:s}", "role", "user", "content", user));
    struct herd_chat_render_params p = {.messages = messages, .add_generation_prompt = true, .now = time(NULL)};
    bool ok = json_array_size(messages) == (system ? 2u : 1u) &&
              herd_chat_template_render(t, &p, out, out_len, err) == HERD_OK;
    if (json_array_size(messages) != (system ? 2u : 1u))
        herd_error_set(err, HERD_E_INVALID, "-p / --system is not UTF-8");
    json_decref(messages);
    herd_chat_template_destroy(t);
    return ok;
}

int herd_cmd_run(int argc, char **argv) {
    struct cli_model_opts mo = {0};
    const char *prompt = NULL, *prompt_ids = NULL, *chat_template = NULL, *system = NULL;
    bool chat = false;
    uint64_t n_predict = 256, top_k = 0, seed = 0;
    double temp = 0.8, top_p = 1.0, min_p = 0.0, repeat_penalty = 1.0;
    bool as_json = false, ignore_eos = false, greedy = false, profile = false;
    const struct cli_opt opts[] = {
        CLI_MODEL_OPTIONS(mo),
        {"prompt", 'p', CLI_STRING, &prompt, "TEXT", "prompt text"},
        {"prompt-ids", 0, CLI_STRING, &prompt_ids, "1,2,3", "prompt as token ids (instead of -p)"},
        {"chat", 0, CLI_FLAG, &chat, NULL, "-p is a user message: render it through the model's chat template"},
        {"system", 0, CLI_STRING, &system, "TEXT", "with --chat: a system message before it"},
        {"chat-template", 0, CLI_STRING, &chat_template, "NAME|FILE",
         "with --chat: this template instead of the model's (a name in the model, a built-in, or a file)"},
        {"n-predict", 'n', CLI_U64, &n_predict, "N", "tokens to generate at most (default 256)"},
        {"temp", 0, CLI_F64, &temp, "T", "temperature; 0 is greedy (default 0.8)"},
        {"greedy", 0, CLI_FLAG, &greedy, NULL, "same as --temp 0"},
        {"top-k", 0, CLI_U64, &top_k, "K", "keep the K most likely tokens (default 0: off)"},
        {"top-p", 0, CLI_F64, &top_p, "P", "keep the smallest set with probability P (default 1: off)"},
        {"min-p", 0, CLI_F64, &min_p, "P", "drop tokens below P x the best one's probability (default 0)"},
        {"repeat-penalty", 0, CLI_F64, &repeat_penalty, "R", "penalise the last 64 tokens (default 1: off)"},
        {"seed", 's', CLI_U64, &seed, "S", "random seed (default 0)"},
        {"ignore-eos", 0, CLI_FLAG, &ignore_eos, NULL, "keep generating after an end-of-generation token"},
        {"json", 0, CLI_FLAG, &as_json, NULL, "print one JSON object at the end instead of streaming text"},
        {"profile", 0, CLI_FLAG, &profile, NULL,
         "print time per operation (matmuls by weight type, attention, norms, sampling, ...) to stderr"},
        {0},
    };
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, NULL, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    if ((prompt == NULL) == (prompt_ids == NULL)) {
        fprintf(stderr, "herd run: give exactly one of -p TEXT and --prompt-ids\n");
        cli_print_help(&cmd, opts, stderr);
        return 2;
    }
    if ((chat || chat_template || system) && !prompt) {
        fprintf(stderr, "herd run: --chat, --system and --chat-template need -p TEXT\n");
        return 2;
    }
    if (chat_template || system) chat = true;
    if (greedy) temp = 0;

    struct herd_model *model = NULL;
    struct herd_context *ctx = NULL;
    struct herd_vocab *vocab = NULL;
    struct herd_tokenizer *tk = NULL;
    struct herd_sampler *sampler = NULL;
    int32_t *ids = malloc(RUN_MAX_PROMPT * sizeof *ids);
    int32_t *gen = NULL;
    char *text = NULL;
    json_t *root = NULL;
    int rc = 1;
    uint32_t n_prompt = 0;
    struct herd_error err = {0};
    if (!ids) goto out;
    if (prompt_ids && !cli_parse_ids("run", prompt_ids, ids, RUN_MAX_PROMPT, &n_prompt)) {
        rc = 2;
        goto out;
    }
    if (!cli_model_open("run", &mo, 512, 1, 1, &model, &ctx)) goto out;
    if (herd_vocab_load(model->gguf, &vocab, &err) != HERD_OK || herd_tokenizer_create(vocab, &tk, &err) != HERD_OK)
        goto fail;
    if (chat) {
        /* the rendered prompt carries its own BOS and control tokens:
         * tokenize it with special-token parsing and nothing added, as
         * Hugging Face's apply_chat_template(tokenize=True) does */
        char *rendered = NULL;
        size_t rendered_len = 0;
        if (!render_chat(model->gguf, vocab, chat_template, system, prompt, &rendered, &rendered_len, &err)) goto fail;
        enum herd_status ts =
            herd_tokenize(tk, rendered, rendered_len, HERD_TOK_PARSE_SPECIAL, ids, RUN_MAX_PROMPT, &n_prompt, &err);
        free(rendered);
        if (ts != HERD_OK) goto fail;
    } else if (prompt && herd_tokenize(tk, prompt, strlen(prompt), HERD_TOK_ADD_SPECIAL, ids, RUN_MAX_PROMPT, &n_prompt,
                                       &err) != HERD_OK) {
        goto fail;
    }
    if (n_prompt == 0) {
        herd_error_set(&err, HERD_E_INVALID, "the prompt is empty (and the vocabulary adds no BOS)");
        goto fail;
    }
    const uint32_t n_ctx = ctx->params.n_ctx;
    if (n_prompt >= n_ctx) {
        herd_error_set(&err, HERD_E_INVALID, "the prompt has %u tokens; the context holds %u (raise --ctx)", n_prompt,
                       n_ctx);
        goto fail;
    }
    struct herd_sampler_params sp;
    herd_sampler_default_params(&sp);
    sp.temperature = (float)temp;
    sp.top_k = (uint32_t)(top_k > UINT32_MAX ? UINT32_MAX : top_k);
    sp.top_p = (float)top_p;
    sp.min_p = (float)min_p;
    sp.repeat_penalty = (float)repeat_penalty;
    sp.seed = seed;
    if (herd_sampler_create(&sp, (uint32_t)model->desc.n_vocab, &sampler, &err) != HERD_OK) goto fail;
    for (uint32_t i = 0; i < n_prompt; i++) herd_sampler_accept(sampler, ids[i]);

    int32_t s;
    if (herd_kv_seq_new(ctx->kv, &s, &err) != HERD_OK) goto fail;
    uint32_t *pos = malloc(512 * sizeof *pos);
    int32_t *seq = malloc(512 * sizeof *seq);
    if (!pos || !seq) {
        free(pos);
        free(seq);
        goto out;
    }
    /* the prompt's forward passes and the generation's, profiled apart */
    struct herd_profile prof[2] = {0};
    if (profile) ctx->profile = &prof[0];
    const double t0 = herd_time_now_s();
    enum herd_status st = HERD_OK;
    for (uint32_t i0 = 0; i0 < n_prompt && st == HERD_OK; i0 += 512) {
        uint32_t m = n_prompt - i0 < 512 ? n_prompt - i0 : 512;
        for (uint32_t i = 0; i < m; i++) pos[i] = i0 + i, seq[i] = s;
        struct herd_batch b = {m, ids + i0, pos, seq, NULL};
        st = herd_decode(ctx, &b, &err);
    }
    free(pos);
    free(seq);
    if (st != HERD_OK) goto fail;
    const double t1 = herd_time_now_s();
    if (profile) ctx->profile = &prof[1];

    if (n_predict > n_ctx - n_prompt) n_predict = n_ctx - n_prompt;
    gen = malloc((n_predict ? n_predict : 1) * sizeof *gen);
    size_t text_cap = 64 + n_predict * 64, text_len = 0;
    text = malloc(text_cap);
    if (!gen || !text) goto out;
    struct herd_detok detok;
    herd_detok_init(&detok, vocab);
    const char *finish = "length";
    uint32_t n_gen = 0;
    char piece[1024];
    for (; n_gen < n_predict; n_gen++) {
        const uint64_t ts = profile ? herd_prof_now_ns() : 0;
        int32_t next = herd_sampler_sample(sampler, herd_context_logits(ctx, 0));
        herd_prof_op(ctx->profile, HERD_PROF_SAMPLING, ts);
        if (!ignore_eos && herd_vocab_is_eog(vocab, next)) {
            finish = "stop";
            break;
        }
        gen[n_gen] = next;
        herd_sampler_accept(sampler, next);
        size_t n = herd_detok_push(&detok, next, piece, sizeof piece);
        if (text_len + n < text_cap) memcpy(text + text_len, piece, n), text_len += n;
        if (!as_json && n) {
            fwrite(piece, 1, n, stdout);
            fflush(stdout);
        }
        if (n_gen + 1 == n_predict) {
            n_gen++;
            break; /* no forward pass for a token nobody will sample after */
        }
        uint32_t p = n_prompt + n_gen;
        struct herd_batch b = {1, &next, &p, &s, NULL};
        if (herd_decode(ctx, &b, &err) != HERD_OK) goto fail;
    }
    size_t n = herd_detok_flush(&detok, piece, sizeof piece);
    if (text_len + n < text_cap) memcpy(text + text_len, piece, n), text_len += n;
    const double t2 = herd_time_now_s();
    const double pp_s = t1 - t0, tg_s = t2 - t1;
    if (as_json) {
        json_t *pj = json_array(), *gj = json_array();
        for (uint32_t i = 0; i < n_prompt; i++) json_array_append_new(pj, json_integer(ids[i]));
        for (uint32_t i = 0; i < n_gen; i++) json_array_append_new(gj, json_integer(gen[i]));
        root = json_pack("{s:o,s:o,s:s%,s:s,s:{s:i,s:f,s:f,s:i,s:f,s:f,s:i}}", "prompt_ids", pj, "ids", gj, "text",
                         text, text_len, "finish_reason", finish, "timings", "prompt_tokens", (int)n_prompt,
                         "prompt_ms", pp_s * 1e3, "prompt_tokens_per_s", pp_s > 0 ? n_prompt / pp_s : 0.0,
                         "generated_tokens", (int)n_gen, "generation_ms", tg_s * 1e3, "generation_tokens_per_s",
                         tg_s > 0 ? n_gen / tg_s : 0.0, "threads", herd_pool_size(ctx->pool));
        if (!root) {
            herd_error_set(&err, HERD_E_INVALID, "the generated text is not valid UTF-8");
            goto fail;
        }
        json_dumpf(root, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
        fputc('\n', stdout);
    } else {
        fwrite(piece, 1, n, stdout);
        fputc('\n', stdout);
    }
    fflush(stdout);
    fprintf(stderr,
            "herd run: prompt %u tokens in %.1f ms (%.1f tokens/s), generated %u tokens in %.1f ms (%.1f tokens/s), "
            "%d threads, %s kernels, finish %s\n",
            n_prompt, pp_s * 1e3, pp_s > 0 ? n_prompt / pp_s : 0.0, n_gen, tg_s * 1e3, tg_s > 0 ? n_gen / tg_s : 0.0,
            herd_pool_size(ctx->pool), ctx->k->name, finish);
    if (profile) {
        herd_profile_print(&prof[0], "prompt", stderr);
        herd_profile_print(&prof[1], "generation", stderr);
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "herd run: %s\n", err.msg);
    rc = 1;
out:
    json_decref(root);
    free(ids);
    free(gen);
    free(text);
    herd_sampler_destroy(sampler);
    herd_tokenizer_destroy(tk);
    herd_vocab_destroy(vocab);
    herd_context_destroy(ctx);
    herd_model_destroy(model);
    return rc;
}

/* `herd run`: generate text from a prompt on one sequence, through the
 * scheduler like a served request (one generation path). The generated
 * text goes to stdout as it is produced (never a broken UTF-8 character),
 * timings to stderr; --json prints one object instead. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli_model.h"
#include "cli/commands.h"
#include "engine/sched.h"
#include "model/model.h"
#include "model/profile.h"
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

/* [system,] user message through the engine's chat template, with the
 * assistant's turn opened. */
static bool render_chat(const struct herd_chat_template *t, const char *system, const char *user, char **out,
                        size_t *out_len, struct herd_error *err) {
    json_t *messages = json_array();
    if (system) json_array_append_new(messages, json_pack("{s:s,s:s}", "role", "system", "content", system));
    json_array_append_new(messages, json_pack("{s:s,s:s}", "role", "user", "content", user));
    struct herd_chat_render_params p = {.messages = messages, .add_generation_prompt = true, .now = time(NULL)};
    bool ok = json_array_size(messages) == (system ? 2u : 1u) &&
              herd_chat_template_render(t, &p, out, out_len, err) == HERD_OK;
    if (json_array_size(messages) != (system ? 2u : 1u))
        herd_error_set(err, HERD_E_INVALID, "-p / --system is not UTF-8");
    json_decref(messages);
    return ok;
}

/* The scheduler's notify: wakes the waiting main thread. */
struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool ready;
};

static void wake(void *arg) {
    struct waiter *w = arg;
    pthread_mutex_lock(&w->lock);
    w->ready = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void wait_ready(struct waiter *w) {
    pthread_mutex_lock(&w->lock);
    while (!w->ready) pthread_cond_wait(&w->cond, &w->lock);
    w->ready = false;
    pthread_mutex_unlock(&w->lock);
}

/* What the request produced: its tokens and text, and how it ended. */
struct run_output {
    int32_t *ids;
    uint32_t n_ids, cap_ids;
    char *text;
    size_t text_len, text_cap;
    enum herd_finish finish;
};

static bool append_event(struct run_output *o, const struct herd_event *e, bool echo) {
    if (e->token >= 0 && o->n_ids < o->cap_ids) o->ids[o->n_ids++] = e->token;
    if (e->text_len) {
        if (o->text_len + e->text_len > o->text_cap) {
            size_t cap = (o->text_len + e->text_len) * 2;
            char *t = realloc(o->text, cap);
            if (!t) return false;
            o->text = t, o->text_cap = cap;
        }
        memcpy(o->text + o->text_len, e->text, e->text_len);
        o->text_len += e->text_len;
        if (echo) {
            fwrite(e->text, 1, e->text_len, stdout);
            fflush(stdout);
        }
    }
    if (e->finish != HERD_FINISH_NONE) o->finish = e->finish;
    return true;
}

/* Submits the prompt and reads its events until it is done. */
static enum herd_status generate(struct herd_sched *sched, const int32_t *ids, uint32_t n_prompt,
                                 const struct herd_gen_params *gp, bool echo, struct run_output *o,
                                 struct herd_request_stats *stats, struct herd_error *err) {
    struct waiter w = {.ready = false};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    enum herd_status rc = HERD_E_NOMEM;
    struct herd_request *r = herd_request_create(ids, n_prompt, gp, wake, &w, err);
    if (!r) goto out;
    if ((rc = herd_sched_submit(sched, r, err)) != HERD_OK) goto out;
    struct herd_event ev[16];
    while (!herd_request_done(r)) {
        size_t n = herd_request_poll(r, ev, 16);
        if (n == 0) {
            wait_ready(&w);
            continue;
        }
        for (size_t i = 0; i < n; i++)
            if (!append_event(o, &ev[i], echo)) {
                rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
                goto out;
            }
    }
    herd_request_stats(r, stats);
    if (o->finish == HERD_FINISH_ERROR) {
        rc = herd_error_set(err, HERD_E_IO, "the engine failed");
        herd_sched_failed(sched, err->msg, sizeof err->msg);
    }
out:
    if (r) {
        herd_request_set_notify(r, NULL, NULL);
        herd_request_cancel(r);
        herd_request_release(r);
    }
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
    return rc;
}

static const char *finish_name(enum herd_finish f) { return f == HERD_FINISH_STOP ? "stop" : "length"; }

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

    struct herd_engine *e = NULL;
    int32_t *ids = malloc(RUN_MAX_PROMPT * sizeof *ids);
    struct run_output o = {.finish = HERD_FINISH_LENGTH};
    json_t *root = NULL;
    int rc = 1;
    uint32_t n_prompt = 0;
    struct herd_error err = {0};
    /* the prompt's steps and the generation's, profiled apart */
    struct herd_profile prof[2] = {0};
    if (!ids) goto out;
    if (prompt_ids && !cli_parse_ids("run", prompt_ids, ids, RUN_MAX_PROMPT, &n_prompt)) {
        rc = 2;
        goto out;
    }
    struct herd_engine_options eo;
    cli_engine_options(&mo, &eo);
    eo.parts = HERD_ENGINE_SCHEDULER | (chat ? HERD_ENGINE_CHAT : 0u);
    eo.chat_template = chat_template;
    eo.max_outputs = 1;
    if (profile) eo.profile_prompt = &prof[0], eo.profile_generation = &prof[1];
    if (!(e = cli_engine_open("run", &eo))) goto out;
    const struct herd_tokenizer *tk = herd_engine_tokenizer(e);
    const uint64_t n_vocab = herd_engine_model(e)->desc.n_vocab;
    if (chat) {
        /* the rendered prompt carries its own BOS and control tokens:
         * tokenize it with special-token parsing and nothing added, as
         * Hugging Face's apply_chat_template(tokenize=True) does */
        char *rendered = NULL;
        size_t rendered_len = 0;
        if (!render_chat(herd_engine_chat_template(e), system, prompt, &rendered, &rendered_len, &err)) goto fail;
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
    for (uint32_t i = 0; i < n_prompt; i++)
        if (ids[i] < 0 || (uint64_t)ids[i] >= n_vocab) {
            herd_error_set(&err, HERD_E_INVALID, "invalid token id %d (vocabulary of %llu)", ids[i],
                           (unsigned long long)n_vocab);
            goto fail;
        }
    const uint32_t n_ctx = herd_engine_n_ctx(e);
    if (n_prompt >= n_ctx) {
        herd_error_set(&err, HERD_E_INVALID, "the prompt has %u tokens; the context holds %u (raise --ctx)", n_prompt,
                       n_ctx);
        goto fail;
    }
    if (n_predict > n_ctx - n_prompt) n_predict = n_ctx - n_prompt;
    o.cap_ids = (uint32_t)n_predict;
    o.ids = malloc((n_predict ? n_predict : 1) * sizeof *o.ids);
    if (!o.ids) goto out;
    struct herd_gen_params gp;
    herd_gen_default_params(&gp);
    gp.max_tokens = (uint32_t)n_predict;
    gp.ignore_eos = ignore_eos;
    gp.text_from_start = true;
    gp.sampling.temperature = (float)temp;
    gp.sampling.top_k = (uint32_t)(top_k > UINT32_MAX ? UINT32_MAX : top_k);
    gp.sampling.top_p = (float)top_p;
    gp.sampling.min_p = (float)min_p;
    gp.sampling.repeat_penalty = (float)repeat_penalty;
    gp.sampling.seed = seed;
    struct herd_request_stats st = {0};
    /* -n 0: nothing to generate, nothing to run */
    if (n_predict && generate(herd_engine_sched(e), ids, n_prompt, &gp, !as_json, &o, &st, &err) != HERD_OK) goto fail;
    /* the first token comes out of the prompt's last step: its time is the
     * prompt's, and generation speed counts the tokens after it */
    const double pp_s = st.first_token_s > 0 ? st.first_token_s - st.admitted_s : 0;
    const double tg_s = st.first_token_s > 0 ? st.finished_s - st.first_token_s : 0;
    const double tg_rate = tg_s > 0 && o.n_ids > 1 ? (o.n_ids - 1) / tg_s : 0.0;
    const char *finish = finish_name(o.finish);
    if (as_json) {
        json_t *pj = json_array(), *gj = json_array();
        for (uint32_t i = 0; i < n_prompt; i++) json_array_append_new(pj, json_integer(ids[i]));
        for (uint32_t i = 0; i < o.n_ids; i++) json_array_append_new(gj, json_integer(o.ids[i]));
        root = json_pack("{s:o,s:o,s:s%,s:s,s:{s:i,s:f,s:f,s:i,s:f,s:f,s:i}}", "prompt_ids", pj, "ids", gj, "text",
                         o.text ? o.text : "", o.text_len, "finish_reason", finish, "timings", "prompt_tokens",
                         (int)n_prompt, "prompt_ms", pp_s * 1e3, "prompt_tokens_per_s",
                         pp_s > 0 ? n_prompt / pp_s : 0.0, "generated_tokens", (int)o.n_ids, "generation_ms",
                         tg_s * 1e3, "generation_tokens_per_s", tg_rate, "threads", herd_engine_threads(e));
        if (!root) {
            herd_error_set(&err, HERD_E_INVALID, "the generated text is not valid UTF-8");
            goto fail;
        }
        json_dumpf(root, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
    }
    fputc('\n', stdout);
    fflush(stdout);
    fprintf(stderr,
            "herd run: prompt %u tokens in %.1f ms (%.1f tokens/s), generated %u tokens in %.1f ms (%.1f tokens/s), "
            "%d threads, %s kernels, finish %s\n",
            n_prompt, pp_s * 1e3, pp_s > 0 ? n_prompt / pp_s : 0.0, o.n_ids, tg_s * 1e3, tg_rate,
            herd_engine_threads(e), herd_engine_kernels(e), finish);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "herd run: %s\n", err.msg);
    rc = 1;
out:
    /* the scheduler thread is joined before its profile is read */
    herd_engine_close(e);
    if (rc == 0 && profile) {
        herd_profile_print(&prof[0], "prompt", stderr);
        herd_profile_print(&prof[1], "generation", stderr);
    }
    json_decref(root);
    free(ids);
    free(o.ids);
    free(o.text);
    return rc;
}

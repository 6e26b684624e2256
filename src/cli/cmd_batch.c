/* `herd batch run` and `herd batch merge`: OpenAI Batch JSONL files through
 * the engine, resumable and shardable (src/batch/batch.h). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/timing.h"
#include "batch/batch.h"
#include "cli/cli_model.h"
#include "cli/commands.h"

static const struct cli_command run_cmd = {
    .name = "batch run",
    .args = "",
    .summary = "Run an OpenAI Batch input file (--input, JSONL) with the model; answers to --output, failures to\n"
               "--errors (default OUTPUT.errors.jsonl), both in OpenAI's batch output shape.",
    .details = "Each line: {\"custom_id\": \"...\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\" or\n"
               "\"/v1/completions\", \"body\": {...}}; the lines run concurrently through the continuous-batching\n"
               "scheduler. A rerun with the same arguments skips what is already written (kill -9 safe: whole lines,\n"
               "synced each second); a changed input is refused unless --restart. A bad line (invalid JSON, no\n"
               "custom_id, a repeated one, another url or model, a prompt over the context, a line over\n"
               "--max-line-bytes) goes to the error file with its line number and the job goes on. --shard I/N takes\n"
               "the lines k with (k - 1) % N == I, for N array tasks; `herd batch merge` puts them back together.\n"
               "SIGTERM or SIGINT stops after writing what finished (rerun to go on). Exit 0 when every line of the\n"
               "shard is answered or in the error file, 1 on an error that stopped the job, 2 on usage.",
    .min_pos = 0,
    .max_pos = 0,
};

static const struct cli_command merge_cmd = {
    .name = "batch merge",
    .args = "PART...",
    .summary = "Combine shard outputs and error files (PART..., any order) into --output and --errors in input\n"
               "order, checking every input line is there exactly once.",
    .details = "Writes to temporary files renamed into place, so a failed merge leaves nothing half-written.\n"
               "Exit 1 (nothing written) when a line is missing or present twice.",
    .min_pos = 1,
    .max_pos = 100000,
};

/* a lock-free atomic: safe to set from a signal handler */
static atomic_int stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* A progress line on a terminal, a line per ~10 s elsewhere (a log). */
struct progress {
    bool tty;
    double last_s;
};

static void show_progress(void *arg, const struct herd_batch_counts *c) {
    struct progress *pr = arg;
    const double now = herd_time_now_s();
    const uint64_t todo = c->lines - c->skipped, finished = c->done + c->failed;
    if (!pr->tty && now - pr->last_s < 10 && finished < todo) return;
    pr->last_s = now;
    const double rate = c->elapsed_s > 0 ? (double)finished / c->elapsed_s : 0;
    const double eta = rate > 0 ? (double)(todo - finished) / rate : 0;
    const int width = 30;
    const int fill = todo ? (int)((double)finished / (double)todo * width) : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "%s[%s] %llu/%llu lines, %llu failed, %.1f lines/s, %.0f tok/s, ETA %.0f s%s", pr->tty ? "\r" : "",
            bar, (unsigned long long)finished, (unsigned long long)todo, (unsigned long long)c->failed, rate,
            c->elapsed_s > 0 ? (double)c->completion_tokens / c->elapsed_s : 0, eta, pr->tty ? "\033[K" : "\n");
    fflush(stderr);
}

static bool parse_shard(const char *s, uint32_t *i, uint32_t *n) {
    char *end;
    const unsigned long a = strtoul(s, &end, 10);
    if (end == s || *end != '/') return false;
    const char *b_s = end + 1;
    const unsigned long b = strtoul(b_s, &end, 10);
    if (end == b_s || *end || b < 1 || b > 1000000 || a >= b) return false;
    *i = (uint32_t)a;
    *n = (uint32_t)b;
    return true;
}

static int batch_run(int argc, char **argv) {
    struct cli_model_opts mo = {0};
    const char *input = NULL, *output = NULL, *errors = NULL, *shard = NULL, *name = NULL, *chat_template = NULL;
    uint64_t max_seqs = 16, max_line = HERD_BATCH_DEFAULT_MAX_LINE, batch_tokens = 512;
    bool restart = false, quiet = false;
    const struct cli_opt opts[] = {
        CLI_MODEL_OPTIONS(mo),
        {"input", 'i', CLI_STRING, &input, "FILE", "the batch input (JSONL)"},
        {"output", 'o', CLI_STRING, &output, "FILE", "answers, appended (JSONL)"},
        {"errors", 'e', CLI_STRING, &errors, "FILE", "failed lines (default: OUTPUT.errors.jsonl)"},
        {"shard", 0, CLI_STRING, &shard, "I/N", "run shard I of N (0 <= I < N), e.g. $SLURM_ARRAY_TASK_ID/N"},
        {"max-seqs", 0, CLI_U64, &max_seqs, "N", "sequences computed at once (default 16)"},
        {"batch-tokens", 0, CLI_U64, &batch_tokens, "N", "tokens per forward pass (default 512)"},
        {"max-line-bytes", 0, CLI_U64, &max_line, "N", "longest input line accepted (default 4 MiB)"},
        {"model-name", 0, CLI_STRING, &name, "NAME", "the model id lines must name (default: the file name)"},
        {"chat-template", 0, CLI_STRING, &chat_template, "T", "chat template (default: the model's)"},
        {"restart", 0, CLI_FLAG, &restart, NULL, "start over: empty the output and error files"},
        {"quiet", 'q', CLI_FLAG, &quiet, NULL, "no progress line"},
        {0},
    };
    int n_pos;
    int prc = cli_parse(&run_cmd, opts, argc, argv, NULL, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    struct herd_batch_params p;
    herd_batch_default_params(&p);
    if (!input || !output) {
        fprintf(stderr, "herd batch run: --input and --output are required\n");
        return 2;
    }
    if (shard && !parse_shard(shard, &p.shard, &p.n_shards)) {
        fprintf(stderr, "herd batch run: --shard %s: want I/N with 0 <= I < N\n", shard);
        return 2;
    }
    if (max_seqs < 1 || max_seqs > 1024 || batch_tokens < 1 || batch_tokens > 8192 || max_line < 2) {
        fprintf(stderr, "herd batch run: --max-seqs is 1..1024, --batch-tokens 1..8192, --max-line-bytes >= 2\n");
        return 2;
    }
    char errors_default[4200];
    if (!errors) {
        snprintf(errors_default, sizeof errors_default, "%s.errors.jsonl", output);
        errors = errors_default;
    }
    if (strcmp(input, output) == 0 || strcmp(input, errors) == 0 || strcmp(output, errors) == 0) {
        fprintf(stderr, "herd batch run: --input, --output and --errors must be three different files\n");
        return 2;
    }
    char default_name[256];
    p.input = input;
    p.output = output;
    p.errors = errors;
    p.restart = restart;
    p.max_line_bytes = (size_t)max_line;
    /* lines enough to keep every sequence busy while finished ones are
     * collected, and within the scheduler's queue */
    p.max_inflight = (uint32_t)max_seqs * 2;
    p.limits =
        (struct herd_api_limits){.model_name = name ? name : cli_model_name(&mo, default_name, sizeof default_name),
                                 .max_n = HERD_MAX_CHOICES,
                                 .max_tokens_limit = 1u << 20,
                                 .max_stops = HERD_MAX_STOPS,
                                 .max_stop_bytes = 256,
                                 .max_logit_bias = 300,
                                 .max_messages = 4096};
    struct herd_engine_options eo;
    cli_engine_options(&mo, &eo);
    eo.parts = HERD_ENGINE_SCHEDULER | HERD_ENGINE_CHAT;
    eo.chat_template = chat_template;
    eo.max_seqs = (uint32_t)max_seqs;
    eo.batch_tokens = (uint32_t)batch_tokens;
    eo.max_outputs = (uint32_t)max_seqs + 16;
    eo.max_queue = p.max_inflight * HERD_API_MAX_PROMPTS;
    struct herd_engine *e = cli_engine_open("batch run", &eo);
    if (!e) return 1;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* a file size limit (ulimit -f) is a full disk: write fails, the job
     * stops with its lines whole, instead of the process being killed */
    signal(SIGXFSZ, SIG_IGN);
    p.stop = &stop_requested;
    struct progress pr = {.tty = isatty(2) != 0, .last_s = herd_time_now_s()};
    if (!quiet) {
        p.progress = show_progress;
        p.progress_arg = &pr;
    }
    struct herd_batch_counts c;
    struct herd_error err = {0};
    enum herd_status rc = herd_batch_run(e, &p, &c, &err);
    herd_engine_close(e);
    if (!quiet && pr.tty) fputc('\n', stderr);
    const double tok_s = c.elapsed_s > 0 ? (double)c.completion_tokens / c.elapsed_s : 0;
    if (c.lines)
        fprintf(stderr,
                "herd batch run: %llu lines in shard %u/%u: %llu already written, %llu answered, %llu failed; "
                "%llu prompt + %llu completion tokens in %.1f s (%.0f tok/s)\n",
                (unsigned long long)c.lines, p.shard, p.n_shards, (unsigned long long)c.skipped,
                (unsigned long long)c.done, (unsigned long long)c.failed, (unsigned long long)c.prompt_tokens,
                (unsigned long long)c.completion_tokens, c.elapsed_s, tok_s);
    if (rc != HERD_OK) {
        fprintf(stderr, "herd batch run: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static int batch_merge(int argc, char **argv) {
    const char *input = NULL, *output = NULL, *errors = NULL;
    const struct cli_opt opts[] = {
        {"input", 'i', CLI_STRING, &input, "FILE", "the batch input the parts came from"},
        {"output", 'o', CLI_STRING, &output, "FILE", "merged answers"},
        {"errors", 'e', CLI_STRING, &errors, "FILE", "merged failures (default: OUTPUT.errors.jsonl)"},
        {0},
    };
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    if (!pos) return 1;
    int n_pos, ret = 0;
    int prc = cli_parse(&merge_cmd, opts, argc, argv, pos, &n_pos);
    if (prc != CLI_OK) {
        free(pos);
        return prc == CLI_EXIT_OK ? 0 : prc;
    }
    char errors_default[4200];
    if (!input || !output) {
        fprintf(stderr, "herd batch merge: --input and --output are required\n");
        free(pos);
        return 2;
    }
    if (!errors) {
        snprintf(errors_default, sizeof errors_default, "%s.errors.jsonl", output);
        errors = errors_default;
    }
    struct herd_batch_merge_counts c;
    struct herd_error err = {0};
    if (herd_batch_merge(input, pos, (size_t)n_pos, output, errors, &c, &err) != HERD_OK) {
        fprintf(stderr, "herd batch merge: %s\n", err.msg);
        ret = 1;
    } else {
        fprintf(stderr, "herd batch merge: %llu lines: %llu answers to %s, %llu errors to %s\n",
                (unsigned long long)c.lines, (unsigned long long)c.answers, output, (unsigned long long)c.errors,
                errors);
    }
    free(pos);
    return ret;
}

int herd_cmd_batch(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "run") == 0) return batch_run(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "merge") == 0) return batch_merge(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: herd batch run --input IN.jsonl --output OUT.jsonl [--errors ERR.jsonl] [--shard I/N] ...\n"
               "       herd batch merge --input IN.jsonl --output OUT.jsonl [--errors ERR.jsonl] PART...\n"
               "`herd batch run --help` and `herd batch merge --help` list the options.\n");
        return 0;
    }
    fprintf(stderr, "herd batch: want `run` or `merge` (herd batch --help)\n");
    return 2;
}

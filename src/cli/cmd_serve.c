/* `herd serve`: loads the model, starts the scheduler thread and runs the
 * OpenAI-compatible HTTP server on this thread until SIGTERM / SIGINT has
 * drained it. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/paths.h"
#include "batch/batch_api.h"
#include "batch/batch_service.h"
#include "cli/cli_args.h"
#include "cli/cli_model.h"
#include "cli/commands.h"
#include "engine/sched.h"
#include "server/server.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

static const struct cli_command cmd = {
    .name = "serve",
    .args = "",
    .summary = "Serve the model over an OpenAI-compatible HTTP API (chat and text completions, streaming).",
    .details = "Binds 127.0.0.1:8080 by default. With no -m it serves the built-in default model. Requests are\n"
               "batched continuously: --batch-tokens per step, --max-seqs sequences at once, --max-queue waiting\n"
               "(then 429 with Retry-After). API keys (--api-key, repeatable, or --api-key-file with one per\n"
               "line) protect everything but /health, /livez, /readyz and /metrics (also those with --auth-all).\n"
               "SIGTERM or SIGINT drains: /readyz turns 503, running requests get --drain-timeout seconds to\n"
               "finish, then the process exits 0; a second signal exits at once.\n"
               "With --data-dir, OpenAI's /v1/files and /v1/batches run batch jobs at background priority (they\n"
               "fill idle capacity and give way to interactive requests); their state survives a restart.",
    .min_pos = 0,
    .max_pos = 0,
};

/* One key per line (blank lines and # comments skipped). The file is read
 * whole into *storage (at most 64 KiB), which the keys point into. */
static bool read_keys(const char *path, struct cli_strings *keys, char **storage) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "herd serve: --api-key-file %s: %s\n", path, strerror(errno));
        return false;
    }
    char *buf = malloc(65537);
    size_t n = buf ? fread(buf, 1, 65537, f) : 0;
    fclose(f);
    *storage = buf;
    if (!buf || n > 65536) {
        fprintf(stderr, "herd serve: --api-key-file %s: %s\n", path, buf ? "larger than 64 KiB" : "out of memory");
        return false;
    }
    buf[n] = 0;
    for (char *line = strtok(buf, "\r\n"); line; line = strtok(NULL, "\r\n")) {
        if (!*line || *line == '#') continue;
        if (keys->n == CLI_LIST_MAX) {
            fprintf(stderr, "herd serve: more than %d API keys\n", CLI_LIST_MAX);
            return false;
        }
        keys->v[keys->n++] = line;
    }
    keys->v[keys->n] = NULL;
    return true;
}

/* What the loading thread builds, and hands to the server. */
struct loader {
    struct herd_engine_options eo;
    const char *host, *name;
    struct herd_server *srv;
    struct herd_engine *engine;
    struct herd_batch_service *batches; /* NULL without --data-dir */
};

static void *load_model(void *arg) {
    struct loader *ld = arg;
    struct herd_error err = {0};
    /* a test hook: a slow load, so tests can see the loading state */
    const char *delay = getenv("HERD_TEST_LOAD_DELAY_MS");
    if (delay) usleep((useconds_t)(strtoul(delay, NULL, 10) % 60000) * 1000);
    if (herd_engine_open(&ld->eo, &ld->engine, &err) != HERD_OK) {
        fprintf(stderr, "herd serve: %s\n", err.msg);
        herd_server_load_failed(ld->srv, "the model could not be loaded (see above)");
        return NULL;
    }
    struct herd_engine *e = ld->engine;
    struct herd_sched *sched = herd_engine_sched(e);
    const struct herd_chat_template *tmpl = herd_engine_chat_template(e);
    uint16_t port = herd_server_port(ld->srv);
    herd_log(HERD_LOG_INFO, "serve", NULL, NULL, 0,
             "ready: %s (%s, context %u, KV cache %u tokens in %.0f MiB, chat template: %s) on http://%s:%u\n"
             "  try: curl http://%s:%u/v1/chat/completions -H 'Content-Type: application/json' \\\n"
             "         -d '{\"model\": \"%s\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'",
             ld->name, herd_engine_model(e)->desc.arch, herd_sched_n_ctx(sched), herd_engine_kv_tokens(e),
             (double)herd_engine_kv_bytes(e) / (1024.0 * 1024.0), tmpl->origin, ld->host, port, ld->host, port,
             ld->name);
    struct herd_server_model sm = {herd_engine_model(e), herd_engine_vocab(e), herd_engine_tokenizer(e), tmpl, sched};
    /* batches resume before the API can list them as waiting */
    if (ld->batches && herd_batch_service_start(ld->batches, e, &err) != HERD_OK) {
        fprintf(stderr, "herd serve: %s\n", err.msg);
        herd_server_load_failed(ld->srv, err.msg);
        return NULL;
    }
    herd_server_set_model(ld->srv, &sm);
    return NULL;
}

int herd_cmd_serve(int argc, char **argv) {
    struct cli_model_opts mo = {0};
    struct herd_server_params sp;
    herd_server_default_params(&sp);
    const char *host = NULL, *chat_template = NULL, *key_file = NULL, *name = NULL, *data_dir = NULL;
    struct herd_batch_service_params bsp;
    herd_batch_service_default_params(&bsp);
    uint64_t batch_max_file_mb = bsp.max_file_bytes / 1000000, background_tokens = 64;
    uint64_t port = 8080, batch_tokens = 512, max_seqs = 16, max_queue = 256, max_body = 16u << 20, max_conns = 1024,
             max_n = 16;
    double drain_timeout = 30, header_timeout = 10, prefill_per_decode = 1, write_timeout = 30;
    bool auth_all = false, quiet = false, no_vllm_metrics = false, no_web = false;
    const char *log_format = "text", *log_level = "info";
    struct cli_strings keys = {0};
    const struct cli_opt opts[] = {
        CLI_MODEL_OPTIONS(mo),
        {"host", 0, CLI_STRING, &host, "ADDR", "address to bind (default 127.0.0.1)"},
        {"port", 0, CLI_U64, &port, "N", "port (default 8080; 0 picks a free one)"},
        {"model-name", 0, CLI_STRING, &name, "NAME", "the model id clients send (default: the file name)"},
        {"chat-template", 0, CLI_STRING, &chat_template, "NAME|FILE", "chat template instead of the model's"},
        {"batch-tokens", 0, CLI_U64, &batch_tokens, "N", "tokens per scheduler step (default 512)"},
        {"max-seqs", 0, CLI_U64, &max_seqs, "N", "sequences computed at once (default 16)"},
        {"kv-mem", 0, CLI_U64, &mo.kv_mem, "BYTES", "KV cache size (default: a full context per sequence)"},
        {"max-queue", 0, CLI_U64, &max_queue, "N", "requests waiting before 429 (default 256)"},
        {"prefill-per-decode", 0, CLI_F64, &prefill_per_decode, "R",
         "while streams generate, prompt tokens per step per stream (default 1; 0: only --batch-tokens)"},
        {"max-body", 0, CLI_U64, &max_body, "BYTES", "largest request body (default 16 MiB)"},
        {"max-connections", 0, CLI_U64, &max_conns, "N", "open connections (default 1024)"},
        {"max-n", 0, CLI_U64, &max_n, "N", "largest n (default 16)"},
        {"header-timeout", 0, CLI_F64, &header_timeout, "S", "seconds to receive a request's headers (default 10)"},
        {"drain-timeout", 0, CLI_F64, &drain_timeout, "S", "seconds running requests get after SIGTERM (default 30)"},
        {"write-timeout", 0, CLI_F64, &write_timeout, "S",
         "a client that reads nothing for S seconds is dropped and its request cancelled (default 30)"},
        {"api-key", 0, CLI_STRING_LIST, &keys, "KEY", "accept this API key (repeatable)"},
        {"api-key-file", 0, CLI_STRING, &key_file, "FILE", "accept the keys in FILE, one per line"},
        {"auth-all", 0, CLI_FLAG, &auth_all, NULL, "require a key for health and metrics too"},
        {"log-format", 0, CLI_STRING, &log_format, "text|json", "log lines as text (default) or one JSON object each"},
        {"log-level", 0, CLI_STRING, &log_level, "LEVEL", "debug, info (default: with the access log), warn, error"},
        {"quiet", 'q', CLI_FLAG, &quiet, NULL, "no access log"},
        {"no-vllm-metrics", 0, CLI_FLAG, &no_vllm_metrics, NULL, "export /metrics under herd's names only"},
        {"no-web", 0, CLI_FLAG, &no_web, NULL, "no chat page at / and no status page at /status (404)"},
        {"data-dir", 0, CLI_STRING, &data_dir, "DIR",
         "keep files and batches here: turns /v1/files and /v1/batches on"},
        {"batch-max-requests", 0, CLI_U64, &bsp.max_requests, "N", "requests per batch (default 50000)"},
        {"batch-max-file-mb", 0, CLI_U64, &batch_max_file_mb, "MB", "largest uploaded file, in MB (default 200)"},
        {"background-tokens", 0, CLI_U64, &background_tokens, "N",
         "tokens per step while only batch work runs: a short step keeps interactive requests from waiting "
         "(default 64; 0: --batch-tokens)"},
        {"batch-window", 0, CLI_F64, &bsp.window_s, "S",
         "seconds a batch may take before it expires (default 86400, OpenAI's 24h)"},
        {0},
    };
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, NULL, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    if (port > 65535 || batch_tokens < 1 || batch_tokens > 8192 || max_seqs < 1 || max_seqs > 1024 || max_queue < 1 ||
        max_body < 1024 || max_conns < 1 || max_n < 1 || max_n > HERD_MAX_CHOICES || drain_timeout < 0 ||
        header_timeout <= 0 || write_timeout < 1 || bsp.max_requests < 1 || batch_max_file_mb < 1 ||
        batch_max_file_mb > 100000 || bsp.window_s < 1) {
        fprintf(stderr,
                "herd serve: --port 0..65535, --batch-tokens 1..8192, --max-seqs 1..1024, --max-n 1..%d, "
                "--max-body >= 1024, --batch-max-file-mb 1..100000, other limits >= 1\n",
                HERD_MAX_CHOICES);
        return 2;
    }
    enum herd_log_format lf;
    enum herd_log_level ll;
    if (!herd_log_parse_format(log_format, &lf) || !herd_log_parse_level(log_level, &ll)) {
        fprintf(stderr, "herd serve: --log-format is text or json; --log-level debug, info, warn or error\n");
        return 2;
    }
    herd_log_configure(lf, ll);
    char *key_storage = NULL;
    if (key_file && !read_keys(key_file, &keys, &key_storage)) {
        free(key_storage);
        return 1;
    }
    char default_name[256];
    if (!name) name = cli_model_name(&mo, default_name, sizeof default_name);
    sp.host = host ? host : "127.0.0.1";
    sp.port = (uint16_t)port;
    sp.http.max_body_bytes = max_body;
    sp.max_connections = (uint32_t)max_conns;
    sp.max_n = (uint32_t)max_n;
    sp.header_timeout_s = header_timeout;
    sp.drain_timeout_s = drain_timeout;
    sp.write_timeout_s = write_timeout;
    sp.api_keys = keys.n ? keys.v : NULL;
    sp.auth_all = auth_all;
    sp.model_name = name;
    sp.vllm_metrics = !no_vllm_metrics;
    sp.web = !no_web;
    sp.quiet = quiet;
    /* a batch line is checked as the server checks a request */
    bsp.limits = (struct herd_api_limits){.model_name = sp.model_name,
                                          .max_n = sp.max_n,
                                          .max_tokens_limit = sp.max_tokens_limit,
                                          .max_stops = sp.max_stops,
                                          .max_stop_bytes = sp.max_stop_bytes,
                                          .max_logit_bias = sp.max_logit_bias,
                                          .max_messages = sp.max_messages};
    bsp.max_file_bytes = batch_max_file_mb * 1000000;
    bsp.max_inflight = (uint32_t)max_seqs;
    bsp.data_dir = data_dir;
    struct herd_batch_service *batches = NULL;
    struct herd_error err = {0};
    if (data_dir && herd_batch_service_open(&bsp, &batches, &err) != HERD_OK) {
        herd_log(HERD_LOG_ERROR, "serve", NULL, NULL, 0, "%s", err.msg);
        free(key_storage);
        return 1;
    }
    struct herd_http_route batch_routes[HERD_BATCH_API_ROUTES];
    herd_batch_api_routes(batches, batch_routes);
    sp.extra_routes = batch_routes;
    sp.n_extra_routes = HERD_BATCH_API_ROUTES;
    sp.max_upload_bytes = herd_batch_api_max_upload(batches);
    /* the port first, so probes see /readyz 503 "loading" while a large
     * model loads, then the model on its own thread */
    struct loader ld = {.host = sp.host, .name = name, .batches = batches};
    cli_engine_options(&mo, &ld.eo);
    ld.eo.parts = HERD_ENGINE_SCHEDULER | HERD_ENGINE_CHAT;
    ld.eo.chat_template = chat_template;
    ld.eo.max_seqs = (uint32_t)max_seqs;
    ld.eo.batch_tokens = (uint32_t)batch_tokens;
    /* a step's logits rows: one per decoding sequence plus the prompts
     * finishing in it */
    ld.eo.max_outputs = (uint32_t)max_seqs + 16;
    ld.eo.max_queue = (uint32_t)max_queue;
    ld.eo.prefill_per_decode = prefill_per_decode < 0 ? 0 : prefill_per_decode;
    ld.eo.background_tokens = (int64_t)(background_tokens > 8192 ? 8192 : background_tokens);
    int rc = 1;
    pthread_t th;
    bool started = false;
    if (herd_server_create(&sp, NULL, &ld.srv, &err) != HERD_OK) {
        herd_log(HERD_LOG_ERROR, "serve", NULL, NULL, 0, "%s", err.msg);
        goto out;
    }
    herd_log(HERD_LOG_INFO, "serve", NULL, NULL, 0, "loading %s on http://%s:%u (503 until ready)", name, sp.host,
             herd_server_port(ld.srv));
    ld.eo.metrics = herd_server_sched_metrics(ld.srv);
    if (pthread_create(&th, NULL, load_model, &ld) != 0) {
        herd_log(HERD_LOG_ERROR, "serve", NULL, NULL, 0, "cannot start the loading thread");
        goto out;
    }
    started = true;
    if (herd_server_run(ld.srv, &err) != HERD_OK)
        herd_log(HERD_LOG_ERROR, "serve", NULL, NULL, 0, "%s", err.msg);
    else
        rc = 0;
out:
    if (started) pthread_join(th, NULL);
    if (rc == 0) herd_log(HERD_LOG_INFO, "serve", NULL, NULL, 0, "stopped");
    /* the batch worker first (its running batch stays in_progress, resumed
     * at the next start), then the engine, whose scheduler observes the
     * server's metrics until it stops */
    herd_batch_service_close(batches);
    herd_engine_close(ld.engine);
    herd_server_destroy(ld.srv);
    free(key_storage);
    return rc;
}

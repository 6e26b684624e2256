/* What `herd serve` exports on /metrics (docs/user-guide.md lists every
 * metric): herd_* names for everything, the core signals again under the
 * names vLLM exports (so KEDA recipes, the Kubernetes inference gateway and
 * vLLM dashboards work unchanged; --no-vllm-metrics leaves them out), and
 * the process_* metrics of the Prometheus client libraries.
 *
 * Three kinds of update: the scheduler thread observes its histograms
 * itself (struct herd_sched_metrics, lock-free); the event loop counts
 * rejections, cancellations and responses as it makes them; and the
 * scheduler's counters and gauges are copied from herd_sched_status when a
 * scrape renders (a memcpy under the scheduler's status lock, which a step
 * holds only to publish its counts). */
#include <string.h>

#include <stdio.h>

#include "kernels/kernels.h"
#include "server/server_internal.h"

/* Latency buckets in seconds: 1 ms to ~11 min, wide enough for a tiny
 * model's millisecond steps and a 70B model's minute-long prompts on CPU. */
static const double latency_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                                        0.75,  1,      2.5,   5,    7.5,   10,   20,    40,  80,   160, 320, 640};
#define N_LATENCY (sizeof latency_bounds / sizeof *latency_bounds)

static const char *const finish_names[3] = {"stop", "length", "abort"};
static const char *const reject_names[SERVER_REJECT_N] = {"queue_full", "too_long", "auth", "bad_request", "draining"};

static struct herd_metric *labelled(struct herd_metric_family *f, const char *label, const char *value) {
    const char *names[1] = {label}, *values[1] = {value};
    return herd_metric_series(f, 1, names, values);
}

/* A family with one unlabelled series, also exported as vLLM's alias. */
static struct herd_metric *with_alias(struct server_metrics *sm, const char *name, const char *alias, const char *help,
                                      enum herd_metric_type type) {
    const bool hist = type == HERD_METRIC_HISTOGRAM;
    struct herd_metric_family *f =
        herd_metrics_family(sm->reg, name, help, type, hist ? latency_bounds : NULL, hist ? N_LATENCY : 0);
    if (alias) herd_metric_family_alias(f, alias, "model_name", sm->model_name);
    return herd_metric_series(f, 0, NULL, NULL);
}

static void collect(void *arg) {
    struct herd_server *s = arg;
    struct server_metrics *sm = &s->metrics;
    herd_metric_set(sm->open_connections, s->http ? herd_http_server_connections(s->http) : 0);
    if (!s->m.sched) return;
    struct herd_sched_status st;
    herd_sched_status(s->m.sched, &st);
    herd_metric_set(sm->running, st.running);
    herd_metric_set(sm->waiting, st.waiting);
    for (int c = 0; c < HERD_PRIO_CLASSES; c++) {
        herd_metric_set(sm->running_by[c], st.running_by_class[c]);
        herd_metric_set(sm->waiting_by[c], st.waiting_by_class[c]);
    }
    const uint32_t used = st.kv_blocks_total - st.kv_blocks_free;
    herd_metric_set(sm->kv_total, st.kv_blocks_total);
    herd_metric_set(sm->kv_used, used);
    herd_metric_set(sm->kv_usage, st.kv_blocks_total ? (double)used / st.kv_blocks_total : 0);
    herd_metric_set(sm->prefix_queries, (double)st.prefix_queries * st.kv_block_tokens);
    herd_metric_set(sm->prefix_hits, (double)st.prefix_hits * st.kv_block_tokens);
    herd_metric_set(sm->prefix_blocks, st.prefix_cached_blocks);
    herd_metric_set(sm->preemptions, (double)st.preemptions);
    herd_metric_set(sm->steps, (double)st.steps);
    herd_metric_set(sm->background_paused_steps, (double)st.background_paused_steps);
    herd_metric_set(sm->prompt_tokens, (double)st.prompt_tokens);
    herd_metric_set(sm->computed_prompt_tokens, (double)st.computed_prompt_tokens);
    herd_metric_set(sm->generation_tokens, (double)st.generated_tokens);
    for (int i = 0; i < 3; i++) herd_metric_set(sm->finished[i], (double)st.finished[i]);
}

bool server_metrics_init(struct herd_server *s) {
    struct server_metrics *sm = &s->metrics;
    sm->reg = herd_metrics_create();
    if (!sm->reg) return false;
    snprintf(sm->model_name, sizeof sm->model_name, "%s", s->p.model_name);
    struct herd_metrics *reg = sm->reg;
    const enum herd_metric_type G = HERD_METRIC_GAUGE, C = HERD_METRIC_COUNTER, H = HERD_METRIC_HISTOGRAM;

    sm->running = with_alias(sm, "herd_requests_running", "vllm:num_requests_running", "Requests being computed.", G);
    sm->waiting = with_alias(sm, "herd_requests_waiting", "vllm:num_requests_waiting",
                             "Requests waiting to be admitted (queued or preempted).", G);
    struct herd_metric_family *rb = herd_metrics_family(
        reg, "herd_requests_running_by_priority",
        "Requests being computed by priority class (high: priority < 0, normal: 0, low: > 0).", G, NULL, 0);
    struct herd_metric_family *wb = herd_metrics_family(reg, "herd_requests_waiting_by_priority",
                                                        "Requests waiting by priority class.", G, NULL, 0);
    for (int c = 0; c < HERD_PRIO_CLASSES; c++) {
        sm->running_by[c] = labelled(rb, "priority", herd_priority_class_name(c));
        sm->waiting_by[c] = labelled(wb, "priority", herd_priority_class_name(c));
    }
    sm->kv_total = herd_metrics_gauge(reg, "herd_kv_blocks_capacity", "KV cache blocks in all.");
    sm->kv_used = herd_metrics_gauge(reg, "herd_kv_blocks_used", "KV cache blocks in use (prefix cache included).");
    struct herd_metric_family *ku = herd_metrics_family(reg, "herd_kv_cache_usage_ratio",
                                                        "KV cache blocks in use over all blocks (0..1).", G, NULL, 0);
    herd_metric_family_alias(ku, "vllm:kv_cache_usage_perc", "model_name", sm->model_name);
    herd_metric_family_alias(ku, "vllm:gpu_cache_usage_perc", "model_name", sm->model_name);
    sm->kv_usage = herd_metric_series(ku, 0, NULL, NULL);
    sm->prefix_queries = with_alias(sm, "herd_prefix_cache_queries_total", "vllm:prefix_cache_queries_total",
                                    "Prompt tokens looked up in the prefix cache (whole blocks).", C);
    sm->prefix_hits = with_alias(sm, "herd_prefix_cache_hits_total", "vllm:prefix_cache_hits_total",
                                 "Prompt tokens found in the prefix cache.", C);
    sm->prefix_blocks = herd_metrics_gauge(reg, "herd_prefix_cache_blocks", "KV blocks the prefix cache holds.");
    sm->preemptions = with_alias(sm, "herd_preemptions_total", "vllm:num_preemptions_total",
                                 "Requests preempted for KV blocks or a sequence slot.", C);
    sm->steps = herd_metrics_counter(reg, "herd_steps_total", "Scheduler steps (batches run).");
    sm->background_paused_steps =
        herd_metrics_counter(reg, "herd_background_paused_steps_total",
                             "Steps in which running batch (background) work sat out while an interactive prompt was "
                             "computed.");
    sm->prompt_tokens = with_alias(sm, "herd_prompt_tokens_total", "vllm:prompt_tokens_total",
                                   "Prompt tokens of admitted requests.", C);
    sm->computed_prompt_tokens =
        herd_metrics_counter(reg, "herd_prompt_tokens_computed_total",
                             "Prompt tokens run through the model (prefix cache hits excluded, recomputation after "
                             "preemption included).");
    sm->generation_tokens =
        with_alias(sm, "herd_generation_tokens_total", "vllm:generation_tokens_total", "Tokens generated.", C);
    struct herd_metric_family *fin = herd_metrics_family(
        reg, "herd_request_success_total", "Requests finished, by reason (stop, length, abort).", C, NULL, 0);
    herd_metric_family_alias(fin, "vllm:request_success_total", "model_name", sm->model_name);
    for (int i = 0; i < 3; i++) sm->finished[i] = labelled(fin, "finished_reason", finish_names[i]);
    struct herd_metric_family *rej = herd_metrics_family(
        reg, "herd_rejections_total",
        "Requests refused, by reason (queue_full, too_long, auth, bad_request, draining).", C, NULL, 0);
    for (int i = 0; i < SERVER_REJECT_N; i++) sm->rejections[i] = labelled(rej, "reason", reject_names[i]);
    sm->http.rejections[HERD_HTTP_REJECT_AUTH] = sm->rejections[SERVER_REJECT_AUTH];
    sm->http.rejections[HERD_HTTP_REJECT_BAD_REQUEST] = sm->rejections[SERVER_REJECT_BAD_REQUEST];
    sm->http.rejections[HERD_HTTP_REJECT_DRAINING] = sm->rejections[SERVER_REJECT_DRAINING];
    sm->http.cancellations =
        herd_metrics_counter(reg, "herd_cancellations_total", "Requests cancelled because their client went away.");
    struct herd_metric_family *resp =
        herd_metrics_family(reg, "herd_http_responses_total", "HTTP responses by status class.", C, NULL, 0);
    static const char *const classes[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int i = 0; i < 5; i++) sm->http.responses[i] = labelled(resp, "code", classes[i]);
    sm->open_connections = herd_metrics_gauge(reg, "herd_open_connections", "Open client connections.");

    struct herd_sched_metrics *hm = &sm->sched;
    hm->ttft = with_alias(sm, "herd_time_to_first_token_seconds", "vllm:time_to_first_token_seconds",
                          "Time from arrival to the first token.", H);
    hm->itl = with_alias(sm, "herd_inter_token_latency_seconds", "vllm:inter_token_latency_seconds",
                         "Time between two tokens of a choice.", H);
    hm->tpot = with_alias(sm, "herd_time_per_output_token_seconds", NULL,
                          "Per choice: (last token - first token) / (tokens - 1).", H);
    hm->e2e = with_alias(sm, "herd_e2e_request_latency_seconds", "vllm:e2e_request_latency_seconds",
                         "Time from arrival to the last token.", H);
    hm->queue_time = with_alias(sm, "herd_request_queue_time_seconds", "vllm:request_queue_time_seconds",
                                "Time from arrival to admission.", H);
    hm->prefill_time = with_alias(sm, "herd_request_prefill_time_seconds", "vllm:request_prefill_time_seconds",
                                  "Time from admission to the first token.", H);
    hm->step_seconds = herd_metrics_histogram(reg, "herd_step_duration_seconds",
                                              "Duration of a scheduler step (one batch).", latency_bounds, N_LATENCY);
    double token_bounds[14];
    herd_metrics_exponential_bounds(token_bounds, 14, 1, 2); /* 1 .. 8192 */
    hm->step_tokens =
        herd_metrics_histogram(reg, "herd_step_tokens", "Tokens in a scheduler step's batch.", token_bounds, 14);

    struct herd_metric_family *build = herd_metrics_family(
        reg, "herd_build_info", "Always 1; the labels say which herd and which kernels run.", G, NULL, 0);
    const char *names[2] = {"version", "kernels"};
    const char *values[2] = {HERD_VERSION, herd_kernels_best()->name};
    herd_metric_set(herd_metric_series(build, 2, names, values), 1);
    sm->model_info = herd_metrics_family(reg, "herd_model_info",
                                         "Always 1 once the model is loaded; the labels describe it.", G, NULL, 0);
    herd_metrics_register_process(reg);
    herd_metrics_on_collect(reg, collect, s, false);
    return true;
}

void server_metrics_model_loaded(struct herd_server *s) {
    const struct herd_model *m = s->m.model;
    if (!m) return;
    char ctx[16];
    snprintf(ctx, sizeof ctx, "%u", herd_sched_n_ctx(s->m.sched));
    const char *names[4] = {"model_name", "arch", "weights", "context"};
    const struct herd_ggml_type_info *ti = herd_ggml_type_info(m->layers[0].wq.type);
    const char *values[4] = {s->metrics.model_name, m->desc.arch, ti ? ti->name : "?", ctx};
    herd_metric_set(herd_metric_series(s->metrics.model_info, 4, names, values), 1);
}

void server_metrics_destroy(struct herd_server *s) { herd_metrics_destroy(s->metrics.reg); }

void server_count_rejection(struct herd_server *s, enum server_reject why) {
    herd_metric_add(s->metrics.rejections[why], 1);
}

void server_metrics_respond(struct herd_http_request *r, json_t *body, void *app) {
    (void)body;
    struct herd_server *s = app;
    enum herd_metrics_format f = herd_metrics_negotiate(herd_http_request_header(r, "accept"));
    struct herd_buf b;
    herd_buf_init(&b, (size_t)16 << 20);
    if (!herd_metrics_render(s->metrics.reg, f, s->p.vllm_metrics, &b)) {
        herd_buf_cleanup(&b);
        herd_http_respond_error(r, 500, "server_error", NULL, NULL, "out of memory rendering the metrics");
        return;
    }
    herd_http_respond(r, 200, herd_metrics_content_type(f), b.data ? (const char *)b.data : "", b.len, NULL);
    herd_buf_cleanup(&b);
}

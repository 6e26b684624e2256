/* `herd route`: the load balancer (src/router/router.h) over --backend
 * URLs, the records of a DNS name, or a local pool of `herd serve`
 * children; runs until SIGTERM / SIGINT has drained it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "cli/cli_args.h"
#include "cli/commands.h"
#include "router/router.h"

static const struct cli_command cmd = {
    .name = "route",
    .args = "",
    .summary = "Balance OpenAI-compatible requests over herd serve replicas (cache-aware, failover, local pool).",
    .details =
        "Replicas: --backend URL (repeatable), --backends-dns NAME:PORT (every A/AAAA record, re-resolved), or\n"
        "--spawn N -m MODEL (local herd serve children on disjoint CPUs, restarted on crash, autoscaled between\n"
        "--min and --max on waiting requests). Policies: cache-aware (default: the replica holding the longest\n"
        "cached prefix of the prompt, unless overloaded; consistent hashing otherwise), round-robin,\n"
        "least-outstanding, power-of-two. With -m the router tokenizes prompts exactly as the replicas do (the\n"
        "vocabulary and template only; weights are never read). A request that failed before any byte reached\n"
        "the client is retried elsewhere; a stream whose replica dies resumes on another. GET /router/replicas\n"
        "shows the replicas' state. SIGTERM drains.",
    .min_pos = 0,
    .max_pos = 0,
};

int herd_cmd_route(int argc, char **argv) {
    struct herd_router_params p;
    herd_router_default_params(&p);
    const char *host = NULL, *policy = "cache-aware", *model = NULL, *chat_template = NULL, *log_format = "text",
               *log_level = "info", *backend_key = NULL;
    uint64_t port = 8080, spawn = 0, min = UINT64_MAX, max = 0, threads = 0, max_attempts = 2, max_body = 16u << 20;
    double resolve_every = 5, health_interval = 1, slow_start = 10, wait_timeout = -1, drain_timeout = 30,
           balance_abs = 4, balance_rel = 1.5, target_waiting = 2, scale_down_window = 300, upstream_timeout = 300;
    bool auth_all = false, quiet = false, forward_key = false, no_web = false;
    struct cli_strings backends = {0}, keys = {0}, serve_args = {0};
    const char *dns = NULL;
    const struct cli_opt opts[] = {
        {"host", 0, CLI_STRING, &host, "ADDR", "address to bind (default 127.0.0.1)"},
        {"port", 0, CLI_U64, &port, "N", "port (default 8080; 0 picks a free one)"},
        {"backend", 0, CLI_STRING_LIST, &backends, "URL", "a replica, http://IP:PORT (repeatable)"},
        {"backends-dns", 0, CLI_STRING, &dns, "NAME:PORT", "every A/AAAA record of NAME is a replica"},
        {"resolve-every", 0, CLI_F64, &resolve_every, "S", "re-resolve --backends-dns every S seconds (default 5)"},
        {"spawn", 0, CLI_U64, &spawn, "N", "start N local herd serve replicas of -m MODEL"},
        {"model", 'm', CLI_STRING, &model, "FILE",
         "the model: with --spawn the replicas serve it; otherwise its vocabulary hashes prompts (cache-aware)"},
        {"min", 0, CLI_U64, &min, "A", "with --spawn: fewest replicas (default N; 0 scales to zero)"},
        {"max", 0, CLI_U64, &max, "B", "with --spawn: most replicas (default N)"},
        {"threads-per-replica", 0, CLI_U64, &threads, "T", "with --spawn: threads and CPUs per replica"},
        {"target-waiting", 0, CLI_F64, &target_waiting, "W",
         "with --spawn: the autoscaler's target, waiting requests per replica (default 2)"},
        {"scale-down-window", 0, CLI_F64, &scale_down_window, "S",
         "with --spawn: scale down on the highest recommendation of the last S seconds (default 300)"},
        {"serve-arg", 0, CLI_STRING_LIST, &serve_args, "ARG", "with --spawn: one more herd serve argument"},
        {"chat-template", 0, CLI_STRING, &chat_template, "NAME|FILE",
         "the replicas' chat template, if not the model's"},
        {"policy", 0, CLI_STRING, &policy, "NAME",
         "cache-aware (default), round-robin, least-outstanding or power-of-two"},
        {"balance-abs", 0, CLI_F64, &balance_abs, "N",
         "cache-aware: release the affinity when its replica has N more requests than the least loaded (4; up to 64 as "
         "more of the prompt is cached there)"},
        {"balance-rel", 0, CLI_F64, &balance_rel, "R", "... and R times as many (1.5)"},
        {"health-interval", 0, CLI_F64, &health_interval, "S", "seconds between /readyz checks (default 1)"},
        {"slow-start", 0, CLI_F64, &slow_start, "S", "a returning replica's share ramps up over S seconds (10)"},
        {"max-attempts", 0, CLI_U64, &max_attempts, "N",
         "tries of a failing request, the first included (2: one retry)"},
        {"wait-timeout", 0, CLI_F64, &wait_timeout, "S",
         "a request waits S seconds for a ready replica, then 503 (0; 60 with --spawn)"},
        {"drain-timeout", 0, CLI_F64, &drain_timeout, "S", "seconds running requests get after SIGTERM (30)"},
        {"upstream-timeout", 0, CLI_F64, &upstream_timeout, "S",
         "a replica's answer must begin, and may pause, at most S seconds (300)"},
        {"max-body", 0, CLI_U64, &max_body, "BYTES", "largest request body (default 16 MiB)"},
        {"api-key", 0, CLI_STRING_LIST, &keys, "KEY", "accept this API key (repeatable)"},
        {"auth-all", 0, CLI_FLAG, &auth_all, NULL, "require a key for health and metrics too"},
        {"forward-api-key", 0, CLI_FLAG, &forward_key, NULL, "pass the client's Authorization on to the replica"},
        {"backend-api-key", 0, CLI_STRING, &backend_key, "KEY", "send this key to the replicas"},
        {"log-format", 0, CLI_STRING, &log_format, "text|json", "log lines as text (default) or one JSON object each"},
        {"log-level", 0, CLI_STRING, &log_level, "LEVEL", "debug, info (default), warn, error"},
        {"quiet", 'q', CLI_FLAG, &quiet, NULL, "no access log"},
        {"no-web", 0, CLI_FLAG, &no_web, NULL, "no chat page at / and no status page at /status (404)"},
        {0},
    };
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, NULL, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    enum herd_log_format lf;
    enum herd_log_level ll;
    if (!herd_log_parse_format(log_format, &lf) || !herd_log_parse_level(log_level, &ll)) {
        fprintf(stderr, "herd route: --log-format is text or json; --log-level debug, info, warn or error\n");
        return 2;
    }
    herd_log_configure(lf, ll);
    if (!route_policy_parse(policy, &p.policy)) {
        fprintf(stderr, "herd route: --policy is cache-aware, round-robin, least-outstanding or power-of-two\n");
        return 2;
    }
    const bool pool = spawn > 0 || max > 0;
    if (pool) {
        if (!model) {
            fprintf(stderr, "herd route: --spawn needs -m MODEL\n");
            return 2;
        }
        if (min == UINT64_MAX) min = spawn;
        if (max == 0) max = spawn > min ? spawn : (min ? min : 1);
        if (min > max || max > 256 || spawn > max) {
            fprintf(stderr, "herd route: --min <= --spawn <= --max <= 256\n");
            return 2;
        }
    }
    if (port > 65535 || max_attempts < 1 || max_attempts > 10 || health_interval < 0.05 || upstream_timeout < 0.1 ||
        resolve_every < 0.05 || max_body < 1024 || backends.n > ROUTER_MAX_BACKENDS) {
        fprintf(stderr,
                "herd route: --port 0..65535, --max-attempts 1..10, --health-interval and --resolve-every "
                ">= 0.05, --max-body >= 1024, at most %d --backend\n",
                ROUTER_MAX_BACKENDS);
        return 2;
    }
    p.host = host ? host : "127.0.0.1";
    p.port = (uint16_t)port;
    p.http.max_body_bytes = max_body;
    for (int i = 0; i < backends.n; i++) p.backends[i] = backends.v[i];
    p.n_backends = (uint32_t)backends.n;
    p.dns_name = dns;
    p.resolve_every_s = resolve_every;
    p.policy_params.balance_abs = balance_abs;
    p.policy_params.balance_rel = balance_rel;
    p.model_path = model;
    p.chat_template = chat_template;
    p.health_interval_s = health_interval;
    p.slow_start_s = slow_start;
    p.max_attempts = (uint32_t)max_attempts;
    p.wait_timeout_s = wait_timeout >= 0 ? wait_timeout : pool ? 60 : 0;
    p.drain_timeout_s = drain_timeout;
    p.upstream_head_timeout_s = p.upstream_idle_timeout_s = upstream_timeout;
    p.api_keys = keys.n ? keys.v : NULL;
    p.auth_all = auth_all;
    p.forward_api_key = forward_key;
    p.backend_api_key = backend_key;
    p.quiet = quiet;
    p.web = !no_web;
    if (pool) {
        p.pool_model = model;
        p.pool_serve_args = serve_args.n ? serve_args.v : NULL;
        p.pool_n = (uint32_t)spawn;
        p.pool_min = (uint32_t)min;
        p.pool_max = (uint32_t)max;
        p.pool_threads = (uint32_t)threads;
        p.pool_target_waiting = target_waiting;
        p.pool_scale_down_window_s = scale_down_window;
    }
    struct herd_router *rt = NULL;
    struct herd_error err = {0};
    if (herd_router_create(&p, &rt, &err) != HERD_OK) {
        herd_log(HERD_LOG_ERROR, "route", NULL, NULL, 0, "%s", err.msg);
        return 1;
    }
    herd_log(HERD_LOG_INFO, "route", NULL, NULL, 0, "routing (%s) on http://%s:%u", route_policy_name(p.policy), p.host,
             herd_router_port(rt));
    int rc = 0;
    if (herd_router_run(rt, &err) != HERD_OK) {
        herd_log(HERD_LOG_ERROR, "route", NULL, NULL, 0, "%s", err.msg);
        rc = 1;
    }
    herd_router_destroy(rt);
    herd_log(HERD_LOG_INFO, "route", NULL, NULL, 0, "stopped");
    return rc;
}

/* `herd serve` on the HTTP layer (server.h): the route table, the model's
 * state as the HTTP server's hooks (loading, engine failed, the drain
 * handed to the scheduler), the model handed over by the loading thread,
 * the engine watch, and the idle memory trim. Connections, limits, keys,
 * answers and the drain itself are http/http_server.c's. */
#include <event2/event.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/timing.h"
#include "server/server_internal.h"
#include "web/web.h"

void herd_server_default_params(struct herd_server_params *p) {
    memset(p, 0, sizeof *p);
    /* the transport's defaults are the HTTP layer's, stated once there */
    struct herd_http_server_params hp;
    herd_http_server_default_params(&hp);
    p->host = hp.host;
    p->port = hp.port;
    p->http = hp.limits;
    p->max_connections = hp.max_connections;
    p->header_timeout_s = hp.header_timeout_s;
    p->body_timeout_s = hp.body_timeout_s;
    p->idle_timeout_s = hp.idle_timeout_s;
    p->write_timeout_s = hp.write_timeout_s;
    p->drain_timeout_s = hp.drain_timeout_s;
    p->model_name = "default";
    p->max_n = 16;
    p->max_tokens_limit = 1u << 20;
    p->max_stops = 4;
    p->max_stop_bytes = 256;
    p->max_logit_bias = 300;
    p->max_messages = 4096;
    p->vllm_metrics = true;
    p->web = true;
}

static void arm(struct event *ev, double seconds) {
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    event_add(ev, &tv);
}

/* ---------------------------------------------------------------- routes */

static void route_models(struct herd_http_request *r, json_t *body, void *app) {
    (void)body, (void)app;
    api_models(r, NULL);
}

static void route_model(struct herd_http_request *r, json_t *body, void *app) {
    (void)body, (void)app;
    api_models(r, herd_http_request_path_rest(r));
}

enum {
    PROBE = HERD_HTTP_ROUTE_OPEN | HERD_HTTP_ROUTE_PROBE,
    API = HERD_HTTP_ROUTE_NEEDS_READY,
    API_POST = HERD_HTTP_ROUTE_NEEDS_READY | HERD_HTTP_ROUTE_JSON_BODY | HERD_HTTP_ROUTE_ONLY_METHOD,
};

/* What `herd serve` answers. Probes and /metrics are open (no key unless
 * --auth-all) and answered in every state; the rest needs the model
 * loaded and the server not draining. */
static const struct herd_http_route routes[] = {
    {"GET", "/livez", HERD_HTTP_ROUTE_OPEN, herd_http_livez, NULL},
    {"GET", "/health", PROBE, herd_http_health, NULL},
    {"GET", "/readyz", PROBE, herd_http_readyz, NULL},
    {"GET", "/metrics", HERD_HTTP_ROUTE_OPEN, server_metrics_respond, NULL},
    {"GET", "/v1/models", API, route_models, NULL},
    {"GET", "/v1/models/", API | HERD_HTTP_ROUTE_PREFIX, route_model, NULL},
    {"POST", "/v1/chat/completions", API_POST, api_chat_completions, NULL},
    {"POST", "/v1/completions", API_POST, api_completions, NULL},
    {"POST", "/tokenize", API_POST, api_tokenize, NULL},
    {"POST", "/detokenize", API_POST, api_detokenize, NULL},
    {"GET", "/v1/herd/state", API | HERD_HTTP_ROUTE_ONLY_METHOD, api_herd_state, NULL},
};

/* ---------------------------------------------------------------- hooks */

/* The scheduler stopped on an engine failure: once seen, the server stops
 * being ready, refuses work, lets the failed answers go out and exits
 * (herd_server_run returns the failure; herd serve exits 1 for its
 * supervisor to restart it). Checked on every probe and every 100 ms. */
static bool engine_failed(struct herd_server *s) {
    if (s->engine_failed) return true;
    char msg[300];
    if (!s->m.sched || !herd_sched_failed(s->m.sched, msg, sizeof msg)) return false;
    s->engine_failed = true;
    herd_log(HERD_LOG_ERROR, "serve", NULL, NULL, 0, "%s; not ready, exiting", msg);
    herd_http_server_drain(s->http);
    return true;
}

static enum herd_http_app_state state(void *app) {
    struct herd_server *s = app;
    if (!s->m.sched) return HERD_HTTP_APP_LOADING;
    return engine_failed(s) ? HERD_HTTP_APP_FAILED : HERD_HTTP_APP_READY;
}

static void on_drain(void *app) {
    struct herd_server *s = app;
    if (s->m.sched) herd_sched_drain(s->m.sched);
    /* state streams never end by themselves: they must not hold the drain up */
    state_hub_end_all(s);
}

/* Half a second after the last connection closed, free heap memory goes
 * back to the kernel once: a burst (a full queue, a thousand connections)
 * leaves the allocator's free pages resident otherwise, and resident memory
 * is what operators and the soak test watch (measured: RSS rose ~5 MiB over
 * the first minutes of a soak at 80 % load and stayed there). */
#define IDLE_TRIM_S 0.5

static void trim_when_idle(struct herd_server *s) {
    if (herd_http_server_connections(s->http) > 0) {
        s->idle_since_s = 0;
        s->trimmed = false;
        return;
    }
    const double now = herd_time_now_s();
    if (s->idle_since_s == 0) s->idle_since_s = now;
    if (s->trimmed || now - s->idle_since_s < IDLE_TRIM_S) return;
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
    s->trimmed = true;
}

static void on_watch(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct herd_server *s = arg;
    if (engine_failed(s)) return;
    trim_when_idle(s);
    arm(s->watch, 0.1);
}

/* ------------------------------------------------------------- lifecycle */

static void on_loaded(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct herd_server *s = arg;
    pthread_mutex_lock(&s->load_lock);
    bool ready = s->loaded_ready && !s->m.sched;
    if (ready) s->m = s->loaded;
    bool failed = s->load_failed;
    pthread_mutex_unlock(&s->load_lock);
    if (ready) {
        server_metrics_model_loaded(s);
        arm(s->watch, 0.1);
    }
    if (failed) {
        herd_http_server_stop(s->http);
        return;
    }
    if (herd_http_server_draining(s->http) && s->m.sched) herd_sched_drain(s->m.sched);
}

void herd_server_set_model(struct herd_server *s, const struct herd_server_model *m) {
    pthread_mutex_lock(&s->load_lock);
    s->loaded = *m;
    s->loaded_ready = true;
    pthread_mutex_unlock(&s->load_lock);
    event_active(s->load_event, EV_READ, 0);
}

void herd_server_load_failed(struct herd_server *s, const char *msg) {
    pthread_mutex_lock(&s->load_lock);
    s->load_failed = true;
    snprintf(s->load_error, sizeof s->load_error, "%s", msg);
    pthread_mutex_unlock(&s->load_lock);
    event_active(s->load_event, EV_READ, 0);
}

enum herd_status herd_server_create(const struct herd_server_params *p, const struct herd_server_model *m,
                                    struct herd_server **out, struct herd_error *err) {
    *out = NULL;
    struct herd_server *s = calloc(1, sizeof *s);
    if (!s) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    s->p = *p;
    if (m) s->m = *m;
    pthread_mutex_init(&s->load_lock, NULL);
    s->started_wall = time(NULL);
    if (!server_metrics_init(s)) {
        pthread_mutex_destroy(&s->load_lock);
        free(s);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    if (m) server_metrics_model_loaded(s);
    struct herd_http_server_params hp;
    herd_http_server_default_params(&hp);
    hp.host = p->host;
    hp.port = p->port;
    hp.limits = p->http;
    hp.max_connections = p->max_connections;
    hp.header_timeout_s = p->header_timeout_s;
    hp.body_timeout_s = p->body_timeout_s;
    hp.idle_timeout_s = p->idle_timeout_s;
    hp.write_timeout_s = p->write_timeout_s;
    hp.drain_timeout_s = p->drain_timeout_s;
    hp.api_keys = p->api_keys;
    hp.auth_all = p->auth_all;
    hp.quiet = p->quiet;
    hp.log_component = "serve";
    /* the server's own routes, the pages (unless --no-web), then the extra */
    size_t n_own = sizeof routes / sizeof *routes;
    s->routes = calloc(n_own + HERD_WEB_ROUTES + p->n_extra_routes, sizeof *s->routes);
    if (!s->routes) {
        herd_server_destroy(s);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    memcpy(s->routes, routes, sizeof routes);
    if (p->web) {
        herd_web_routes(s->routes + n_own);
        n_own += HERD_WEB_ROUTES;
    }
    if (p->n_extra_routes) memcpy(s->routes + n_own, p->extra_routes, p->n_extra_routes * sizeof *s->routes);
    hp.routes = s->routes;
    hp.n_routes = n_own + p->n_extra_routes;
    hp.max_upload_bytes = p->max_upload_bytes;
    hp.hooks = (struct herd_http_hooks){
        .app = s,
        .state = state,
        .loading = {"loading", "loading", "the model is still loading"},
        .failed = {"engine failed", "engine_failed", "the engine failed; the server is exiting"},
        .on_drain = on_drain,
    };
    hp.metrics = &s->metrics.http;
    enum herd_status rc = herd_http_server_create(&hp, &s->http, err);
    if (rc != HERD_OK) {
        herd_server_destroy(s);
        return rc;
    }
    struct event_base *base = herd_http_server_base(s->http);
    s->load_event = event_new(base, -1, 0, on_loaded, s);
    s->watch = evtimer_new(base, on_watch, s);
    if (!s->load_event || !s->watch || !state_hub_init(s)) {
        herd_server_destroy(s);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    *out = s;
    return HERD_OK;
}

uint16_t herd_server_port(const struct herd_server *s) { return herd_http_server_port(s->http); }

enum herd_status herd_server_run(struct herd_server *s, struct herd_error *err) {
    if (s->m.sched) arm(s->watch, 0.1);
    enum herd_status rc = herd_http_server_run(s->http, err);
    state_hub_end_all(s); /* a second signal ends the loop with subscribers still there */
    if (rc != HERD_OK) return rc;
    pthread_mutex_lock(&s->load_lock);
    bool failed = s->load_failed;
    pthread_mutex_unlock(&s->load_lock);
    if (failed) return herd_error_set(err, HERD_E_IO, "%s", s->load_error);
    if (s->engine_failed) {
        char msg[300] = "the engine failed";
        herd_sched_failed(s->m.sched, msg, sizeof msg);
        return herd_error_set(err, HERD_E_IO, "%s", msg);
    }
    return HERD_OK;
}

void herd_server_destroy(struct herd_server *s) {
    if (!s) return;
    /* the server's events first: the HTTP server frees their loop */
    if (s->load_event) event_free(s->load_event);
    if (s->watch) event_free(s->watch);
    state_hub_cleanup(s); /* no subscriber is left: herd_server_run ended their streams */
    herd_http_server_destroy(s->http);
    pthread_mutex_destroy(&s->load_lock);
    server_metrics_destroy(s);
    free(s->routes);
    free(s);
}

const struct herd_sched_metrics *herd_server_sched_metrics(const struct herd_server *s) { return &s->metrics.sched; }

void server_respond_queue_full(struct herd_http_request *r, const char *msg) {
    struct herd_server *s = srv(r);
    struct herd_sched_status st = {0};
    herd_sched_status(s->m.sched, &st);
    /* a rough wait: the queue ahead, each request taking a few hundred
     * steps spread over the running slots */
    double per_req = st.median_step_s > 0 ? st.median_step_s * 256 : 1;
    unsigned secs = (unsigned)(1 + st.waiting * per_req / (st.running ? st.running : 1));
    if (secs > 120) secs = 120;
    char hdr[64];
    snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n", secs);
    server_count_rejection(s, SERVER_REJECT_QUEUE_FULL);
    herd_http_respond_error_headers(r, 429, "rate_limit_exceeded", NULL, "queue_full", hdr, "%s", msg);
}

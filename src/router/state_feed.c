/* A replica's state, pushed (docs/modules/router-protocol.md, section 1):
 * one long-lived GET /v1/herd/state per herd replica, whose events keep
 * the replica's load and the router's index of its prefix-cache blocks
 * fresh within tens of milliseconds. A server without the stream (404:
 * vLLM, llama-server) is scraped instead: GET /metrics once a second for
 * its running and waiting requests under vLLM's or herd's names. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/timing.h"
#include "base/block_hash.h"
#include "router/router_internal.h"

#define STREAM_SILENCE_S 3.0 /* the replica sends a heartbeat every second */
#define SCRAPE_EVERY_S   1.0
#define RECONNECT_S      0.2

static bool parse_hash(const char *s, uint64_t *out) {
    if (!s || strlen(s) != 16) return false;
    char *end;
    *out = strtoull(s, &end, 16);
    return *end == 0;
}

static void apply_hashes(struct replica *x, json_t *arr, bool store) {
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        uint64_t h;
        if (!parse_hash(json_string_value(v), &h)) continue;
        if (store)
            prefix_index_put(&x->index, h, INFINITY);
        else
            prefix_index_remove(&x->index, h);
    }
}

static uint32_t u32(json_t *o, const char *k) {
    json_int_t v = json_integer_value(json_object_get(o, k));
    return v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static void on_hello(struct replica *x, json_t *ev) {
    const char *inst = json_string_value(json_object_get(ev, "instance"));
    if (inst && strcmp(inst, x->instance) != 0) {
        /* a new process behind the address: what it held is gone */
        if (x->instance[0]) prefix_index_clear(&x->index);
        snprintf(x->instance, sizeof x->instance, "%s", inst);
    } else {
        /* the same process, its stream reconnected: blocks evicted while
         * the stream was down were never reported; the snapshot that
         * follows says what is still held */
        prefix_index_drop_confirmed(&x->index);
    }
    const char *hash = json_string_value(json_object_get(ev, "hash"));
    x->block_tokens = hash && strcmp(hash, HERD_BLOCK_HASH_NAME) == 0 ? u32(ev, "block_tokens") : 0;
    x->n_ctx = u32(ev, "n_ctx");
    x->kv_total = u32(ev, "kv_blocks_total");
    struct herd_router *rt = x->rt;
    if (x->block_tokens && x->block_tokens <= 256) rt->block_tokens = x->block_tokens;
    if (x->n_ctx > rt->n_ctx) rt->n_ctx = x->n_ctx;
    x->herd = true;
}

static void on_event(struct replica *x, const char *data, size_t len) {
    json_error_t jerr;
    json_t *ev = json_loadb(data, len, 0, &jerr);
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (!type) {
        json_decref(ev);
        return;
    }
    if (strcmp(type, "hello") == 0) {
        on_hello(x, ev);
    } else if (strcmp(type, "load") == 0) {
        x->running = u32(ev, "running");
        x->waiting = u32(ev, "waiting");
        x->kv_used = u32(ev, "kv_used");
        x->kv_total = u32(ev, "kv_total");
    } else if (strcmp(type, "blocks") == 0 && x->block_tokens) {
        apply_hashes(x, json_object_get(ev, "stored"), true);
        apply_hashes(x, json_object_get(ev, "evicted"), false);
    } else if (strcmp(type, "reset") == 0) {
        prefix_index_clear(&x->index);
    }
    json_decref(ev);
}

/* Splits the buffered stream into events ("\n\n"-ended) and handles the
 * data line of each. */
static void drain_events(struct replica *x) {
    struct herd_buf *b = &x->feed_buf;
    size_t start = 0;
    for (;;) {
        const char *s = (const char *)b->data + start;
        const char *end = memmem(s, b->len - start, "\n\n", 2);
        if (!end) break;
        for (const char *line = s; line < end;) {
            const char *nl = memchr(line, '\n', (size_t)(end - line));
            const char *le = nl ? nl : end;
            if (le - line > 6 && memcmp(line, "data: ", 6) == 0) on_event(x, line + 6, (size_t)(le - line - 6));
            line = le + 1;
        }
        start = (size_t)(end + 2 - (const char *)b->data);
    }
    memmove(b->data, b->data + start, b->len - start);
    b->len -= start;
}

/* ------------------------------------------------------- the stream */

static void stream_head(struct herd_http_call *call, const struct herd_http_resp_parser *resp, void *arg) {
    struct replica *x = arg;
    if (resp->status == 200) {
        x->heard_s = herd_time_now_s();
        return;
    }
    herd_http_call_cancel(call);
    x->feed = NULL;
    if (resp->status == 404 || resp->status == 405 || resp->status == 401 || resp->status == 403) {
        /* not a herd replica, or one whose key the router lacks
         * (--backend-api-key): scrape its /metrics, least-load */
        x->no_stream = true;
        x->next_feed_s = herd_time_now_s();
        herd_log(resp->status >= 404 ? HERD_LOG_INFO : HERD_LOG_WARN, "route", NULL, NULL, 0,
                 "replica %s %s: scraping /metrics", x->name,
                 resp->status >= 404 ? "has no state stream" : "refused the state stream (is --backend-api-key set?)");
    } else {
        x->next_feed_s = herd_time_now_s() + 1; /* loading, or refused: later */
    }
}

static void stream_body(struct herd_http_call *call, const char *data, size_t len, void *arg) {
    struct replica *x = arg;
    x->heard_s = herd_time_now_s();
    if (!herd_buf_append(&x->feed_buf, data, len)) {
        /* an event over 1 MiB: not the protocol; start over */
        herd_http_call_cancel(call);
        x->feed = NULL;
        x->feed_buf.len = 0;
        x->next_feed_s = x->heard_s + 1;
        return;
    }
    drain_events(x);
}

static void stream_done(struct herd_http_call *call, enum herd_http_call_error e, const char *msg, void *arg) {
    (void)call, (void)msg;
    struct replica *x = arg;
    x->feed = NULL;
    x->feed_buf.len = 0;
    const double now = herd_time_now_s();
    x->next_feed_s = now + RECONNECT_S;
    /* the stream broke: the replica may have died; ask at once */
    if (e != HERD_HTTP_CALL_OK) x->next_probe_s = now;
}

static const struct herd_http_call_ops stream_ops = {stream_head, stream_body, stream_done};

/* ------------------------------------------------------- scraping */

static double sample(const char *text, const char *const *names) {
    for (const char *const *n = names; *n; n++) {
        const size_t nl = strlen(*n);
        for (const char *p = text; (p = strstr(p, *n)) != NULL; p += nl) {
            if (p != text && p[-1] != '\n') continue;
            const char *v = p + nl;
            if (*v == '{') v = strchr(v, '}');
            if (!v || (v[*v == '}' ? 1 : 0] != ' ')) continue;
            return strtod(v + (*v == '}' ? 2 : 1), NULL);
        }
    }
    return 0;
}

static void scrape_head(struct herd_http_call *call, const struct herd_http_resp_parser *resp, void *arg) {
    struct replica *x = arg;
    if (resp->status == 200) return;
    /* an error page is not metrics: nothing learned this time */
    herd_http_call_cancel(call);
    x->feed = NULL;
    x->feed_buf.len = 0;
}

static void scrape_body(struct herd_http_call *call, const char *data, size_t len, void *arg) {
    struct replica *x = arg;
    if (!herd_buf_append(&x->feed_buf, data, len)) herd_http_call_cancel(call), x->feed = NULL, x->feed_buf.len = 0;
}

static void scrape_done(struct herd_http_call *call, enum herd_http_call_error e, const char *msg, void *arg) {
    (void)call, (void)msg;
    struct replica *x = arg;
    x->feed = NULL;
    if (e == HERD_HTTP_CALL_OK && herd_buf_append(&x->feed_buf, "", 1)) {
        static const char *const running[] = {"vllm:num_requests_running", "herd_requests_running",
                                              "llamacpp:requests_processing", NULL};
        static const char *const waiting[] = {"vllm:num_requests_waiting", "herd_requests_waiting",
                                              "llamacpp:requests_deferred", NULL};
        const char *text = (const char *)x->feed_buf.data;
        x->running = (uint32_t)fmax(0, fmin(1e6, sample(text, running)));
        x->waiting = (uint32_t)fmax(0, fmin(1e6, sample(text, waiting)));
        x->heard_s = herd_time_now_s();
    }
    x->feed_buf.len = 0;
}

static const struct herd_http_call_ops scrape_ops = {scrape_head, scrape_body, scrape_done};

/* ------------------------------------------------------- control */

void feed_start(struct replica *x) {
    if (x->feed || x->health != HEALTH_UP) return;
    struct herd_router *rt = x->rt;
    struct herd_http_client_request q = {.method = "GET",
                                         .host = x->host,
                                         .port = x->port,
                                         .target = x->no_stream ? "/metrics" : "/v1/herd/state",
                                         .headers = rt->backend_auth};
    x->feed_buf.len = 0;
    x->next_feed_s = herd_time_now_s() + (x->no_stream ? SCRAPE_EVERY_S : RECONNECT_S);
    struct herd_error err = {0};
    x->feed = herd_http_client_send(rt->control, &q, x->no_stream ? &scrape_ops : &stream_ops, x, &err);
    if (!x->feed) herd_log(HERD_LOG_ERROR, "route", NULL, NULL, 0, "state of %s: %s", x->name, err.msg);
}

void feed_stop(struct replica *x) {
    if (x->feed) herd_http_call_cancel(x->feed);
    x->feed = NULL;
    x->feed_buf.len = 0;
}

void feed_tick(struct replica *x, double now) {
    if (x->feed && !x->no_stream && now - x->heard_s > STREAM_SILENCE_S) {
        herd_log(HERD_LOG_WARN, "route", NULL, NULL, 0, "state stream of %s silent for %.1f s: reconnecting", x->name,
                 now - x->heard_s);
        feed_stop(x);
        x->next_probe_s = now;
    }
    if (!x->feed && now >= x->next_feed_s) feed_start(x);
}

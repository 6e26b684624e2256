/* Forwarding one request (router_internal.h): pick a replica, send the
 * client's request on (its bytes unchanged, hop-by-hop headers dropped,
 * the request id and the token-id header added), and relay the answer:
 *
 *   - a generation's whole answer is collected and answered at once, so
 *     any failure before its end (a connection refused, a replica dying
 *     mid-generation, a 5xx) is retried on another replica within the
 *     attempts and the retry budget; a 429 or 503 (the replica did not
 *     take the request: busy, draining, loading) goes to another replica
 *     too and reaches the client only when every try got one; any other
 *     4xx is the client's and is relayed;
 *   - other answers (models, tokenize, health, anything else) are relayed
 *     as they arrive once their head is in: nothing large is held. A
 *     request that is not known to be free of side effects (a POST or
 *     DELETE the router does not know) is sent again only when it never
 *     reached a replica (connect errors) or the replica refused it (429,
 *     503);
 *   - a server-sent event stream is relayed event by event as it arrives
 *     (whole events only: a replica dying mid-event never leaves half an
 *     event at the client), with the `: herd` comment lines of herd
 *     replicas (docs/modules/router-protocol.md) taken out, so the client
 *     sees exactly what a direct client sees. If the replica dies before
 *     [DONE], the generation is resumed on another replica from the token
 *     ids those comments carried; a backend that cannot resume ends the
 *     stream with an error event and [DONE].
 *
 * A client that goes away cancels the upstream call; a slow client pauses
 * it (the replica's TCP window fills and it slows down). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "base/timing.h"
#include "router/router_internal.h"

#define MAX_WHOLE_ANSWER  (64u << 20) /* a non-streamed answer is collected up to this */
#define GUESS_TTL_HERD_S  10.0        /* until the replica's stream confirms the blocks */
#define GUESS_TTL_OTHER_S 300.0       /* a backend that never confirms: this is all there is */
#define RETRY_BUDGET_MAX  100.0

struct proxy {
    struct herd_router *rt;
    struct herd_http_request *r;
    struct proxy *wait_next;             /* the waiting list */
    struct proxy *live_prev, *live_next; /* every proxy, for the router's teardown */
    bool queued;
    double wait_deadline;

    struct replica *rep;
    struct herd_http_call *call;
    uint32_t attempts;
    double started_s, attempt_s;

    char method[16];
    char *target;
    char *headers;    /* forwarded header lines */
    const char *body; /* the client's, valid until the answer ends */
    size_t body_len;
    json_t *json;      /* the parsed body (parse_body), for cache-aware and resuming */
    bool body_parsed;  /* parse_body ran (json may still be NULL) */
    char *resume_body; /* the body of a resume attempt */
    size_t resume_len;
    struct prompt_key *key;
    bool gen;         /* chat or completions */
    bool resend_safe; /* no side effects: may be sent again after it reached a replica */

    int status;
    bool head_sent; /* the client has the head: no plain retry after this */
    bool sse;
    bool passthrough; /* a non-generation answer relayed as it arrives */
    size_t head_len;  /* a HEAD request's answer: the Content-Length a GET would have */
    char ctype[128];
    struct herd_buf whole; /* a non-streamed answer */
    struct herd_buf ev;    /* stream bytes not yet a whole event */
    size_t ev_line;        /* in ev: where the line being read starts */
    size_t ev_pos;         /* in ev: scanned up to here */
    struct herd_buf out;   /* what one arrival relays, as one chunk */
    char *resp_headers;

    /* resuming a stream */
    bool resumable; /* stream, one choice */
    bool herd_seen; /* the upstream sent `: herd` lines */
    bool data_seen; /* a data event reached the client */
    bool done_seen; /* data: [DONE] reached the client */
    bool resuming;
    bool resume_counted; /* its outcome is in the metrics */
    int32_t *tokens;
    size_t n_tokens, cap_tokens;
    json_int_t text_bytes;
    char chunk_id[128];
    json_int_t created;
};

static void attempt(struct proxy *px, struct replica *x);
static void dispatch(struct proxy *px, const struct replica *exclude);

/* ------------------------------------------------------------ helpers */

static void proxy_free(struct proxy *px) {
    if (px->call) herd_http_call_cancel(px->call);
    if (px->live_prev)
        px->live_prev->live_next = px->live_next;
    else
        px->rt->live = px->live_next;
    if (px->live_next) px->live_next->live_prev = px->live_prev;
    json_decref(px->json);
    free(px->target);
    free(px->headers);
    free(px->resume_body);
    free(px->key);
    free(px->resp_headers);
    free(px->tokens);
    herd_buf_cleanup(&px->whole);
    herd_buf_cleanup(&px->ev);
    herd_buf_cleanup(&px->out);
    free(px);
}

static void unqueue(struct proxy *px) {
    struct herd_router *rt = px->rt;
    if (!px->queued) return;
    for (struct proxy **p = &rt->wait_head; *p; p = &(*p)->wait_next)
        if (*p == px) {
            *p = px->wait_next;
            if (rt->wait_tail == px) {
                rt->wait_tail = NULL;
                for (struct proxy *q = rt->wait_head; q; q = q->wait_next) rt->wait_tail = q;
            }
            break;
        }
    px->queued = false;
    rt->n_waiting--;
    herd_metric_set(rt->metrics.waiting, rt->n_waiting);
}

/* The attempt on px->rep is over (its call ended or was cancelled). */
static void attempt_over(struct proxy *px, enum replica_failure f) {
    struct replica *x = px->rep;
    if (!x) return;
    x->in_flight--;
    herd_metric_set(x->m_in_flight, x->in_flight);
    herd_metric_observe(x->m_latency, herd_time_now_s() - px->attempt_s);
    replica_report(x, f);
    px->rep = NULL;
}

static void log_fields(struct proxy *px, const struct replica *x) {
    const struct herd_log_field f[3] = {HERD_LOG_S("replica", x ? x->name : "-"), HERD_LOG_I("attempts", px->attempts),
                                        HERD_LOG_I("resumed", px->resuming ? 1 : 0)};
    herd_http_request_log(px->r, f, 3);
}

/* The request is over for the router: detached, then freed. */
static void finish(struct proxy *px) {
    herd_http_request_set_work(px->r, NULL, NULL);
    proxy_free(px);
}

static void fail(struct proxy *px, int status, const char *code, const char *msg) {
    struct herd_http_request *r = px->r;
    log_fields(px, px->rep);
    finish(px);
    herd_http_respond_error_headers(r, status, "server_error", NULL, code, status == 503 ? "Retry-After: 1\r\n" : NULL,
                                    "%s", msg);
}

/* Once per request that needed a resume: did its stream reach [DONE]? */
static void count_resume(struct proxy *px, bool ok) {
    if (px->resume_counted) return;
    px->resume_counted = true;
    herd_metric_add(ok ? px->rt->metrics.resumes_ok : px->rt->metrics.resumes_failed, 1);
}

/* An SSE stream that cannot go on: an error event, then [DONE]. */
static void end_stream_with_error(struct proxy *px, const char *code, const char *msg) {
    struct herd_http_request *r = px->r;
    if (px->resuming) count_resume(px, false);
    char *err = NULL;
    json_t *e =
        json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", msg, "type", "server_error", "param", "code", code);
    if (e) err = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    log_fields(px, NULL);
    finish(px);
    if (err) herd_http_sse_send(r, err, strlen(err));
    free(err);
    herd_http_stream_send(r, "data: [DONE]\n\n", 14);
    herd_http_stream_end(r);
}

static bool may_retry(struct proxy *px) {
    struct herd_router *rt = px->rt;
    if (px->attempts >= rt->p.max_attempts) return false;
    if (rt->retry_budget < 1) {
        herd_metric_add(rt->metrics.budget_exhausted, 1);
        return false;
    }
    rt->retry_budget -= 1;
    herd_metric_add(rt->metrics.retries, 1);
    return true;
}

/* src into dst[cap], cut to fit (per request: no printf) */
static void copy_str(char *dst, size_t cap, const char *src) {
    const size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* ------------------------------------------------------------ headers */

static bool named_in(const char *list, size_t list_len, const char *name) {
    const size_t n = strlen(name);
    for (size_t i = 0; i < list_len;) {
        while (i < list_len && (list[i] == ' ' || list[i] == '\t' || list[i] == ',')) i++;
        const size_t start = i;
        while (i < list_len && list[i] != ',' && list[i] != ' ' && list[i] != '\t') i++;
        if (i - start == n && strncasecmp(list + start, name, n) == 0) return true;
    }
    return false;
}

/* Headers for this hop only: the standard ones, those the Connection
 * header names (RFC 9110 7.6.1), and the router's own. Lengths are
 * compared first: every header of every request and answer passes here. */
static bool hop_by_hop_in(const struct herd_http_header *h, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (h[i].name_len == 10 && strcasecmp(h[i].name, "connection") == 0 &&
            named_in(h[i].value, h[i].value_len, name))
            return true;
    return false;
}

static bool hop_by_hop(const struct herd_http_header *h) {
    static const struct {
        const char *name;
        size_t len;
    } skip[] = {{"host", 4},
                {"content-length", 14},
                {"transfer-encoding", 17},
                {"connection", 10},
                {"keep-alive", 10},
                {"te", 2},
                {"trailer", 7},
                {"upgrade", 7},
                {"proxy-authorization", 19},
                {"proxy-connection", 16},
                {"expect", 6},
                {"x-request-id", 12},
                {"x-herd-stream-tokens", 20}};
    for (size_t i = 0; i < sizeof skip / sizeof *skip; i++)
        if (h->name_len == skip[i].len && strcasecmp(h->name, skip[i].name) == 0) return true;
    return false;
}

static char *forwarded_headers(struct herd_router *rt, struct herd_http_request *r, bool want_tokens) {
    struct herd_buf b;
    herd_buf_init(&b, 1u << 20);
    size_t n;
    const struct herd_http_header *h = herd_http_request_headers(r, &n);
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        if (hop_by_hop(&h[i]) || hop_by_hop_in(h, n, h[i].name)) continue;
        if (h[i].name_len == 13 && strcasecmp(h[i].name, "authorization") == 0 && !rt->p.forward_api_key) continue;
        ok = ok && herd_buf_append(&b, h[i].name, h[i].name_len) && herd_buf_append(&b, ": ", 2) &&
             herd_buf_append(&b, h[i].value, h[i].value_len) && herd_buf_append(&b, "\r\n", 2);
    }
    const char *id = herd_http_request_id(r);
    ok = ok && herd_buf_append(&b, "X-Request-Id: ", 14) && herd_buf_append(&b, id, strlen(id)) &&
         herd_buf_append(&b, "\r\n", 2);
    if (want_tokens) ok = ok && herd_buf_append(&b, "X-Herd-Stream-Tokens: 1\r\n", 25);
    if (rt->backend_auth && !(rt->p.forward_api_key && herd_http_request_header(r, "authorization")))
        ok = ok && herd_buf_append(&b, rt->backend_auth, strlen(rt->backend_auth));
    ok = ok && herd_buf_append(&b, "", 1);
    if (!ok) {
        herd_buf_cleanup(&b);
        return NULL;
    }
    return (char *)b.data;
}

/* The upstream's headers worth relaying (not framing, not hop-by-hop),
 * and which replica answered. */
static char *relayed_headers(const struct herd_http_resp_parser *resp, const struct replica *x) {
    struct herd_buf b;
    herd_buf_init(&b, 1u << 16);
    for (size_t i = 0; i < resp->n_headers; i++) {
        const struct herd_http_header *h = &resp->headers[i];
        if (hop_by_hop(h) || hop_by_hop_in(resp->headers, resp->n_headers, h->name) ||
            (h->name_len == 12 && strcasecmp(h->name, "content-type") == 0))
            continue;
        if (!herd_buf_append(&b, h->name, h->name_len) || !herd_buf_append(&b, ": ", 2) ||
            !herd_buf_append(&b, h->value, h->value_len) || !herd_buf_append(&b, "\r\n", 2))
            break; /* past 64 KiB: the rest is dropped */
    }
    const char *name = x ? x->name : "-";
    herd_buf_append(&b, "X-Herd-Replica: ", 16);
    herd_buf_append(&b, name, strlen(name));
    herd_buf_append(&b, "\r\n", 3); /* with the NUL */
    return (char *)b.data;
}

/* The client's body as JSON, once (NULL when it is not a JSON object:
 * the replica refuses it). */
static void parse_body(struct proxy *px) {
    if (px->json || px->body_parsed) return;
    px->body_parsed = true;
    px->json = json_loadb(px->body, px->body_len, JSON_REJECT_DUPLICATES, NULL);
    if (px->json && !json_is_object(px->json)) {
        json_decref(px->json);
        px->json = NULL;
    }
}

/* -------------------------------------------------------- the stream */

/* The generated token ids so far, for a resume. A stream longer than any
 * context a replica has is not resumable (nor sane): no more are kept. */
static bool add_tokens(struct proxy *px, json_t *t) {
    const size_t limit = px->rt->n_ctx ? px->rt->n_ctx : (size_t)1 << 20;
    size_t i;
    json_t *v;
    json_array_foreach(t, i, v) {
        if (px->n_tokens >= limit) {
            px->resumable = false;
            return false;
        }
        if (px->n_tokens == px->cap_tokens) {
            const size_t cap = px->cap_tokens ? px->cap_tokens * 2 : 256;
            int32_t *nt = realloc(px->tokens, cap * sizeof *nt);
            if (!nt) return false;
            px->tokens = nt, px->cap_tokens = cap;
        }
        px->tokens[px->n_tokens++] = (int32_t)json_integer_value(v);
    }
    return true;
}

/* A `: herd {...}` line: the tokens and text bytes of choice 0 so far. */
static void herd_line(struct proxy *px, const char *json, size_t len) {
    json_t *o = json_loadb(json, len, 0, NULL);
    if (o && json_integer_value(json_object_get(o, "c")) == 0) {
        add_tokens(px, json_object_get(o, "t"));
        json_t *b = json_object_get(o, "b");
        if (json_is_integer(b)) px->text_bytes = json_integer_value(b);
        px->herd_seen = true;
    }
    json_decref(o);
}

/* A data line going to the client: remember the stream's id and created
 * (a resume carries them on) and whether it is the end. */
static void data_line(struct proxy *px, const char *data, size_t len) {
    px->data_seen = true;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        px->done_seen = true;
        return;
    }
    if (px->chunk_id[0] || !px->resumable) return;
    json_t *o = json_loadb(data, len, 0, NULL);
    const char *id = json_string_value(json_object_get(o, "id"));
    if (id) copy_str(px->chunk_id, sizeof px->chunk_id, id);
    px->created = json_integer_value(json_object_get(o, "created"));
    json_decref(o);
}

/* The line at [line, end): its length without the terminator (CRLF, LF
 * or CR, as SSE allows) and where the next one starts. */
static const char *next_line(const char *line, const char *end, size_t *len) {
    const char *le = line;
    while (le < end && *le != '\n' && *le != '\r') le++;
    *len = (size_t)(le - line);
    if (le == end) return end;
    return le + (*le == '\r' && le + 1 < end && le[1] == '\n' ? 2 : 1);
}

static bool is_herd_line(const char *line, size_t len) { return len >= 7 && memcmp(line, ": herd ", 7) == 0; }

/* One event into px->out, less its `: herd` lines: its lines [ev, ev +
 * len - blank), then the blank line that ended it (blank bytes: none for
 * the unended tail of a stream that closed). */
static void relay_event(struct proxy *px, const char *ev, size_t len, size_t blank) {
    bool stripped = false, kept = false;
    const char *end = ev + len - blank;
    for (const char *line = ev; line < end;) {
        size_t ll;
        const char *next = next_line(line, end, &ll);
        if (is_herd_line(line, ll)) {
            herd_line(px, line + 7, ll - 7);
            stripped = true;
        } else {
            if (ll >= 5 && memcmp(line, "data:", 5) == 0) {
                const size_t sp = ll > 5 && line[5] == ' ' ? 6 : 5; /* one space after the colon is not data */
                data_line(px, line + sp, ll - sp);
            }
            kept = true;
        }
        line = next;
    }
    if (!kept) return; /* a comment-only event: nothing for the client */
    if (!stripped) {
        herd_buf_append(&px->out, ev, len); /* exactly as sent */
        return;
    }
    for (const char *line = ev; line < end;) {
        size_t ll;
        const char *next = next_line(line, end, &ll);
        if (!is_herd_line(line, ll)) herd_buf_append(&px->out, line, (size_t)(next - line));
        line = next;
    }
    herd_buf_append(&px->out, end, blank);
}

/* The stream's bytes so far (px->ev): whole events out, the rest kept.
 * Scanning resumes where it stopped, so an event arriving a byte at a
 * time costs its length, not its length squared. */
static void split_events(struct proxy *px) {
    const char *buf = (const char *)px->ev.data;
    const size_t len = px->ev.len;
    size_t start = 0, line = px->ev_line, pos = px->ev_pos;
    while (pos < len) {
        const char *t = buf + pos;
        while (t < buf + len && *t != '\n' && *t != '\r') t++;
        if (t == buf + len) {
            pos = len;
            break;
        }
        size_t tl = 1;
        if (*t == '\r') {
            if (t + 1 == buf + len) { /* a CR whose LF may come next: wait for it */
                pos = (size_t)(t - buf);
                break;
            }
            if (t[1] == '\n') tl = 2;
        }
        const size_t at = (size_t)(t - buf);
        const bool blank = at == line;
        pos = line = at + tl;
        if (blank) { /* an empty line ends the event */
            relay_event(px, buf + start, pos - start, tl);
            start = pos;
        }
    }
    memmove(px->ev.data, px->ev.data + start, len - start);
    px->ev.len = len - start;
    px->ev_line = line - start;
    px->ev_pos = pos - start;
}

static void relay_stream(struct proxy *px, const char *data, size_t len) {
    if (!herd_buf_append(&px->ev, data, len)) {
        /* an event past the buffer's limit is not SSE from a sane server */
        herd_http_call_cancel(px->call);
        px->call = NULL;
        attempt_over(px, REPLICA_BROKEN);
        end_stream_with_error(px, "bad_upstream", "the replica sent an event over 16 MiB");
        return;
    }
    split_events(px);
    if (px->out.len) herd_http_stream_send(px->r, (const char *)px->out.data, px->out.len);
    px->out.len = 0;
    if (px->call && herd_http_request_pending_output(px->r) > HERD_HTTP_STREAM_HIGH_WATER)
        herd_http_call_pause(px->call, true);
}

/* The stream ended (the upstream closed it after its last event): an
 * unended tail goes out as a direct client would see it, less `: herd`
 * lines. */
static void flush_tail(struct proxy *px) {
    if (!px->ev.len) return;
    relay_event(px, (const char *)px->ev.data, px->ev.len, 0);
    px->ev.len = px->ev_line = px->ev_pos = 0;
    if (px->out.len) herd_http_stream_send(px->r, (const char *)px->out.data, px->out.len);
    px->out.len = 0;
}

/* ------------------------------------------------------------ upstream */

/* The replica did not take the request (busy, draining, still loading):
 * another one may, whatever the request. */
static bool refused(int status) { return status == 429 || status == 503; }

/* Another replica could take it now (a refusal is not sent back to the
 * replica that refused). */
static bool another_replica(const struct herd_router *rt, const struct replica *x) {
    for (uint32_t i = 0; i < rt->n_rep; i++)
        if (rt->rep[i] != x && replica_eligible(rt->rep[i])) return true;
    return false;
}

static void on_head(struct herd_http_call *call, const struct herd_http_resp_parser *resp, void *arg) {
    struct proxy *px = arg;
    px->status = resp->status;
    const struct herd_http_header *ct = herd_http_resp_header_get(resp, "content-type");
    copy_str(px->ctype, sizeof px->ctype, ct ? ct->value : "application/json");
    const bool sse = resp->status == 200 && strncasecmp(px->ctype, "text/event-stream", 17) == 0;
    if (px->head_sent) {
        /* a stream going on elsewhere (resumed or re-sent): must be a stream */
        if (!sse) {
            herd_http_call_cancel(call);
            px->call = NULL;
            attempt_over(px, resp->status >= 500 && !refused(resp->status) ? REPLICA_5XX : REPLICA_OK);
            end_stream_with_error(px, "resume_failed", "the stream broke and could not be resumed on another replica");
        }
        return;
    }
    /* a refusal only to another replica: when every one is full, the
     * client gets the 429 and its Retry-After */
    const bool retry =
        refused(resp->status) ? another_replica(px->rt, px->rep) : resp->status >= 500 && px->resend_safe;
    if (retry && may_retry(px)) {
        struct replica *x = px->rep;
        herd_http_call_cancel(call);
        px->call = NULL;
        /* a refusal is the replica working as it should: not held against it */
        attempt_over(px, refused(resp->status) ? REPLICA_OK : REPLICA_5XX);
        dispatch(px, x);
        return;
    }
    free(px->resp_headers);
    px->resp_headers = relayed_headers(resp, px->rep);
    if (strcmp(px->method, "HEAD") == 0) {
        const struct herd_http_header *cl = herd_http_resp_header_get(resp, "content-length");
        px->head_len = cl ? strtoull(cl->value, NULL, 10) : 0;
        return; /* no body: answered at the end */
    }
    if (sse) {
        px->sse = true;
        px->head_sent = true;
        if (px->gen) { /* a generation's stream: resumable when it has one choice */
            parse_body(px);
            json_t *n = json_object_get(px->json, "n");
            px->resumable = px->json && (!n || json_integer_value(n) == 1);
        }
        herd_http_stream_begin(px->r, 200, px->ctype, px->resp_headers);
        return;
    }
    if (px->gen) return; /* collected whole, answered at the end: a failure before then is retried */
    px->passthrough = true;
    px->head_sent = true;
    herd_http_stream_begin(px->r, resp->status, px->ctype, px->resp_headers);
}

static void on_body(struct herd_http_call *call, const char *data, size_t len, void *arg) {
    struct proxy *px = arg;
    if (px->sse) {
        relay_stream(px, data, len);
        return;
    }
    if (px->passthrough) {
        herd_http_stream_send(px->r, data, len);
        if (herd_http_request_pending_output(px->r) > HERD_HTTP_STREAM_HIGH_WATER) herd_http_call_pause(call, true);
        return;
    }
    if (!herd_buf_append(&px->whole, data, len)) {
        herd_http_call_cancel(call);
        px->call = NULL;
        attempt_over(px, REPLICA_OK); /* a large answer is the request's doing, not the replica's fault */
        fail(px, 502, "answer_too_large", "the replica's answer is larger than 64 MiB");
    }
}

static enum replica_failure failure_of(enum herd_http_call_error e) {
    switch (e) {
    case HERD_HTTP_CALL_OK: return REPLICA_OK;
    case HERD_HTTP_CALL_CONNECT: return REPLICA_CONNECT;
    case HERD_HTTP_CALL_TIMEOUT: return REPLICA_TIMEOUT;
    default: return REPLICA_BROKEN;
    }
}

/* The body of a resume: the client's request plus herd_resume. */
static bool build_resume(struct proxy *px) {
    json_t *b = json_deep_copy(px->json);
    json_t *toks = json_array();
    for (size_t i = 0; toks && i < px->n_tokens; i++) json_array_append_new(toks, json_integer(px->tokens[i]));
    json_t *res = json_pack("{s:o, s:I, s:s, s:I}", "tokens", toks, "text_bytes", px->text_bytes, "id", px->chunk_id,
                            "created", px->created);
    if (!b || !res || json_object_set_new(b, "herd_resume", res) != 0) {
        json_decref(b);
        return false;
    }
    free(px->resume_body);
    px->resume_body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    px->resume_len = px->resume_body ? strlen(px->resume_body) : 0;
    return px->resume_body != NULL;
}

/* The stream broke before [DONE]: go on elsewhere, or end it cleanly. */
static void stream_broke(struct proxy *px, const struct replica *dead, const char *msg) {
    struct herd_router *rt = px->rt;
    px->ev.len = px->ev_line = px->ev_pos = 0; /* half an event from the dead replica */
    if (!px->data_seen) {
        /* only the head reached the client: send the request again, from
         * nothing (what the dead replica's comments said is void) */
        if (px->attempts < rt->p.max_attempts + 2) {
            px->n_tokens = 0;
            px->text_bytes = 0;
            px->herd_seen = false;
            px->chunk_id[0] = 0;
            px->created = 0;
            dispatch(px, dead);
            return;
        }
    } else if (px->resumable && px->herd_seen && px->chunk_id[0] && px->attempts < rt->p.max_attempts + 2 &&
               build_resume(px)) {
        px->resuming = true;
        herd_log(HERD_LOG_WARN, "route", herd_http_request_id(px->r), NULL, 0,
                 "stream from %s broke (%s): resuming after %zu tokens", dead ? dead->name : "?", msg, px->n_tokens);
        dispatch(px, dead);
        return;
    } else {
        count_resume(px, false); /* a resume was needed and is not possible */
    }
    end_stream_with_error(px, "upstream_failed", msg);
}

/* The attempt on x failed with f (its call is over): go on elsewhere, or
 * answer the error. */
static void attempt_failed(struct proxy *px, const struct replica *x, enum replica_failure f, const char *msg) {
    if (px->sse) {
        if (px->done_seen) {
            if (px->resuming) count_resume(px, true);
            log_fields(px, x);
            struct herd_http_request *r = px->r;
            finish(px);
            herd_http_stream_end(r);
            return;
        }
        stream_broke(px, x, msg);
        return;
    }
    if (px->passthrough) {
        /* part of the answer is out: the client must see it cut */
        log_fields(px, x);
        struct herd_http_request *r = px->r;
        finish(px);
        herd_http_stream_abort(r);
        return;
    }
    /* a refused connection: the request never got there and the replica
     * is ejected, so another costs nothing and cannot loop; when none is
     * left the client hears so (503), not about one dead replica */
    if (f == REPLICA_CONNECT && px->attempts < px->rt->p.max_attempts + 4) {
        herd_metric_add(px->rt->metrics.retries, 1);
        dispatch(px, x);
        return;
    }
    /* a request that may have had effects goes again only if it never got there */
    if (px->resend_safe && may_retry(px)) {
        dispatch(px, x);
        return;
    }
    fail(px, f == REPLICA_TIMEOUT ? 504 : 502, "upstream_failed", msg);
}

void proxy_abandon_replica(struct replica *x, const char *why) {
    struct proxy *next;
    for (struct proxy *px = x->rt->live; px; px = next) {
        next = px->live_next; /* px may be freed below, no other proxy */
        if (px->rep != x || !px->call) continue;
        herd_http_call_cancel(px->call);
        px->call = NULL;
        attempt_over(px, REPLICA_TIMEOUT);
        attempt_failed(px, x, REPLICA_TIMEOUT, why);
    }
}

static void on_done(struct herd_http_call *call, enum herd_http_call_error e, const char *msg, void *arg) {
    (void)call;
    struct proxy *px = arg;
    px->call = NULL;
    struct replica *x = px->rep;
    if (e == HERD_HTTP_CALL_OK) {
        attempt_over(px, px->status >= 500 && !refused(px->status) ? REPLICA_5XX : REPLICA_OK);
        struct herd_http_request *r = px->r;
        if (px->sse || px->passthrough) {
            if (px->sse) flush_tail(px);
            if (px->resuming) count_resume(px, px->done_seen);
            log_fields(px, x);
            finish(px);
            herd_http_stream_end(r);
            return;
        }
        log_fields(px, x);
        /* the body lives in px: answer first, then free; a HEAD answer
         * has the length a GET would have and no body */
        const bool head = strcmp(px->method, "HEAD") == 0;
        herd_http_request_set_work(r, NULL, NULL);
        herd_http_respond(r, px->status, px->ctype, px->whole.data ? (const char *)px->whole.data : "",
                          head ? px->head_len : px->whole.len, px->resp_headers);
        proxy_free(px);
        return;
    }
    const enum replica_failure f = failure_of(e);
    attempt_over(px, f);
    attempt_failed(px, x, f, msg);
}

static const struct herd_http_call_ops call_ops = {on_head, on_body, on_done};

static void attempt(struct proxy *px, struct replica *x) {
    struct herd_router *rt = px->rt;
    const double now = herd_time_now_s();
    px->rep = x;
    px->attempts++;
    px->attempt_s = now;
    x->in_flight++;
    herd_metric_set(x->m_in_flight, x->in_flight);
    herd_metric_add(x->m_requests, 1);
    /* the blocks this prompt will leave there, until the replica says so */
    if (px->key) {
        const double ttl = x->herd ? GUESS_TTL_HERD_S : GUESS_TTL_OTHER_S;
        for (uint32_t i = 0; i < px->key->n_hashes; i++)
            if (!prefix_index_has(&x->index, px->key->hashes[i], now))
                prefix_index_put(&x->index, px->key->hashes[i], now + ttl);
    }
    const struct herd_http_client_request q = {.method = px->method,
                                               .host = x->host,
                                               .port = x->port,
                                               .target = px->target,
                                               .headers = px->headers,
                                               .body = px->resuming ? px->resume_body : px->body,
                                               .body_len = px->resuming ? px->resume_len : px->body_len};
    struct herd_error err = {0};
    px->call = herd_http_client_send(rt->client, &q, &call_ops, px, &err);
    if (!px->call) {
        attempt_over(px, REPLICA_OK);
        if (px->head_sent)
            end_stream_with_error(px, "internal_error", err.msg);
        else
            fail(px, 500, "internal_error", err.msg);
    }
}

static void enqueue(struct proxy *px) {
    struct herd_router *rt = px->rt;
    px->queued = true;
    px->wait_next = NULL;
    px->wait_deadline = herd_time_now_s() + rt->p.wait_timeout_s;
    if (rt->wait_tail)
        rt->wait_tail->wait_next = px;
    else
        rt->wait_head = px;
    rt->wait_tail = px;
    rt->n_waiting++;
    herd_metric_set(rt->metrics.waiting, rt->n_waiting);
}

static void dispatch(struct proxy *px, const struct replica *exclude) {
    /* a resume needs a replica that takes herd_resume */
    struct replica *x = router_choose(px->rt, px->key, exclude, px->resuming);
    if (!x && exclude) x = router_choose(px->rt, px->key, NULL, px->resuming); /* the one that failed is all there is */
    if (x) {
        attempt(px, x);
        return;
    }
    if (px->rt->p.wait_timeout_s > 0) {
        enqueue(px); /* until a replica is up (scale from zero, a restart) */
        router_wants_replica(px->rt);
        return;
    }
    herd_metric_add(px->rt->metrics.no_replica, 1);
    if (px->resuming)
        end_stream_with_error(px, "resume_failed", "no replica that can resume a stream is available");
    else if (px->head_sent)
        end_stream_with_error(px, "no_replica", "no replica is available to continue the stream");
    else
        fail(px, 503, "no_replica", "no replica is available");
}

void proxy_dispatch_waiting(struct herd_router *rt, double now) {
    while (rt->wait_head) {
        struct proxy *px = rt->wait_head;
        struct replica *x = router_choose(rt, px->key, NULL, px->resuming);
        if (!x) {
            if (px->wait_deadline > now) break;
            unqueue(px);
            herd_metric_add(rt->metrics.no_replica, 1);
            if (px->head_sent)
                end_stream_with_error(px, "no_replica", "no replica became available to continue the stream");
            else
                fail(px, 503, "no_replica", "no replica became available in time");
            continue;
        }
        unqueue(px);
        attempt(px, x);
    }
}

void proxy_fail_waiting(struct herd_router *rt) {
    while (rt->wait_head) {
        struct proxy *px = rt->wait_head;
        unqueue(px);
        if (px->head_sent)
            end_stream_with_error(px, "draining", "the router is shutting down");
        else
            fail(px, 503, "draining", "the router is shutting down");
    }
}

void proxy_cancel_calls(struct herd_router *rt) {
    for (struct proxy *px = rt->live; px; px = px->live_next) {
        unqueue(px);
        if (!px->call) continue;
        herd_http_call_cancel(px->call);
        px->call = NULL;
        attempt_over(px, REPLICA_OK);
    }
}

/* ------------------------------------------------------------ work ops */

static void work_wake(struct herd_http_request *r, void *work) {
    (void)r;
    struct proxy *px = work;
    if (px->call) herd_http_call_pause(px->call, false); /* the client caught up */
}

static void work_cancel(struct herd_http_request *r, void *work) {
    (void)r;
    struct proxy *px = work;
    unqueue(px);
    if (px->call) {
        herd_http_call_cancel(px->call);
        px->call = NULL;
        attempt_over(px, REPLICA_OK);
    }
    if (px->head_sent)
        end_stream_with_error(px, "draining", "the router is shutting down");
    else
        fail(px, 503, "draining", "the router is shutting down");
}

static void work_abort(struct herd_http_request *r, void *work) {
    (void)r;
    struct proxy *px = work;
    unqueue(px);
    if (px->call) {
        herd_http_call_cancel(px->call); /* the replica stops generating for nobody */
        px->call = NULL;
        attempt_over(px, REPLICA_OK);
    }
    proxy_free(px);
}

static const struct herd_http_work_ops work_ops = {work_wake, work_cancel, work_abort};

/* ------------------------------------------------------------ handler */

static bool generates(const char *path) {
    return strcmp(path, "/v1/chat/completions") == 0 || strcmp(path, "/v1/completions") == 0;
}

/* Requests with no effect but their answer: sending one twice is harmless. */
static bool resend_safe(const char *method, const char *path) {
    static const char *const paths[] = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize",
                                        "/detokenize",          "/v1/tokenize",    "/v1/detokenize", NULL};
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 || strcmp(method, "OPTIONS") == 0) return true;
    if (strcmp(method, "POST") != 0) return false;
    for (const char *const *p = paths; *p; p++)
        if (strcmp(path, *p) == 0) return true;
    return false;
}

void proxy_handler(struct herd_http_request *r, json_t *body, void *app) {
    struct herd_router *rt = app;
    if (herd_http_server_draining(rt->http)) {
        herd_http_respond_error_headers(r, 503, "server_error", NULL, "draining", "Retry-After: 1\r\n",
                                        "the router is draining");
        return;
    }
    const char *path = herd_http_request_path(r);
    struct proxy *px = calloc(1, sizeof *px);
    if (!px) {
        herd_http_respond_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    px->rt = rt;
    px->r = r;
    px->live_next = rt->live;
    if (rt->live) rt->live->live_prev = px;
    rt->live = px;
    px->started_s = herd_time_now_s();
    copy_str(px->method, sizeof px->method, herd_http_request_method(r));
    px->target = strdup(herd_http_request_target(r));
    px->body = herd_http_request_body(r, &px->body_len);
    herd_buf_init(&px->whole, MAX_WHOLE_ANSWER);
    herd_buf_init(&px->ev, 16u << 20);
    herd_buf_init(&px->out, 64u << 20);
    (void)body; /* the route parses none (router.c): parsed here when needed */
    const bool gen = generates(path);
    px->gen = gen;
    px->resend_safe = resend_safe(px->method, path);
    /* only cache-aware reads a prompt's blocks; the others need none */
    if (gen && rt->p.policy == ROUTE_CACHE_AWARE && (px->key = malloc(sizeof *px->key))) {
        parse_body(px);
        prompt_key_of(rt, path, px->json, px->body, px->body_len, px->key);
    }
    /* token lines only serve a stream's resume: asked for when the body
     * names "stream" (a body that does not is no stream) */
    px->headers = forwarded_headers(rt, r, gen && px->body_len && memmem(px->body, px->body_len, "\"stream\"", 8));
    if (!px->target || !px->headers) {
        proxy_free(px);
        herd_http_respond_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    rt->retry_budget = fmin(RETRY_BUDGET_MAX, rt->retry_budget + rt->p.retry_ratio);
    herd_http_request_set_work(r, &work_ops, px);
    dispatch(px, NULL);
}

/* GET /v1/herd/state: what `herd serve` tells `herd route`
 * (docs/modules/router-protocol.md, section 1). Each subscriber gets a
 * server-sent event stream: hello, its load, the prefix cache's block
 * hashes (a snapshot, then what was stored and evicted), and a reset when
 * events were lost; the stream ends when the server drains.
 *
 * One hub on the loop thread serves every subscriber. While any is
 * connected the scheduler's block feed is on (sched.h) and a 10 ms tick
 * takes its changes, keeps a copy of the set of hashes the cache holds
 * (so a router connecting later gets its snapshot from the hub, at once
 * and consistent with the changes the others get, without asking the
 * scheduler again), and sends the load when it changed or half a second
 * passed. A subscriber that leaves HERD_HTTP_STREAM_HIGH_WATER bytes unread
 * is skipped from then on; when it has read half of that it gets a reset
 * and a fresh snapshot, as after an overflow of the feed. */
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "base/block_hash.h"
#include "base/rng.h"
#include "base/timing.h"
#include "engine/block_feed.h"
#include "server/server_internal.h"

/* The protocol's bounds: changes are taken and the load compared every
 * TICK_S; the load goes out at least every HEARTBEAT_S (a router hearing
 * nothing for 3 s reconnects: half a second leaves room for a slow loop);
 * a blocks event holds at most BLOCKS_PER_EVENT hashes (an event of about
 * 80 KB: a router's read buffer takes it whole). */
#define TICK_S           0.01
#define HEARTBEAT_S      0.5
#define BLOCKS_PER_EVENT 4096
/* Ceiling of an event's text: BLOCKS_PER_EVENT hashes of 19 bytes, twice */
#define EVENT_MAX_BYTES  ((size_t)1 << 20)

struct state_sub {
    struct herd_server *s;
    struct herd_http_request *r;
    struct state_sub *prev, *next;
    bool synced; /* has had a snapshot: gets the block changes */
    bool behind; /* skipped events (a slow reader): a reset and a snapshot when it catches up */
};

static void arm(struct event *ev, double seconds) {
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    event_add(ev, &tv);
}

/* ------------------------------------------------------- the hash set */

/* The hashes the prefix cache holds, as the feed told them: open
 * addressing with linear probing, deletion by shifting back (as
 * prefix_cache.c, for the same reason: no tombstones on a long run). */
static bool set_init(struct state_set *t, uint32_t max_entries) {
    t->cap = 16;
    while (t->cap < 2 * max_entries) t->cap *= 2;
    t->max = max_entries;
    t->keys = malloc(t->cap * sizeof *t->keys);
    t->used = calloc(t->cap, 1);
    t->n = 0;
    return t->keys && t->used;
}

static void set_cleanup(struct state_set *t) {
    free(t->keys);
    free(t->used);
    memset(t, 0, sizeof *t);
}

static void set_clear(struct state_set *t) {
    if (t->used) memset(t->used, 0, t->cap);
    t->n = 0;
}

/* xxHash3 output: its low bits are already uniform */
static uint32_t set_home(const struct state_set *t, uint64_t h) { return (uint32_t)h & (t->cap - 1); }

/* The slot of h, or of the hole where it would go. */
static uint32_t set_find(const struct state_set *t, uint64_t h) {
    uint32_t i = set_home(t, h);
    while (t->used[i] && t->keys[i] != h) i = (i + 1) & (t->cap - 1);
    return i;
}

/* False when the set is full: the feed told more hashes than the cache
 * can hold, which only a lost eviction explains; the caller resynchronises. */
static bool set_put(struct state_set *t, uint64_t h) {
    const uint32_t i = set_find(t, h);
    if (t->used[i]) return true;
    if (t->n >= t->max) return false;
    t->used[i] = 1;
    t->keys[i] = h;
    t->n++;
    return true;
}

static void set_del(struct state_set *t, uint64_t h) {
    uint32_t i = set_find(t, h);
    if (!t->used[i]) return;
    const uint32_t mask = t->cap - 1;
    for (uint32_t j = (i + 1) & mask; t->used[j]; j = (j + 1) & mask) {
        const uint32_t home = set_home(t, t->keys[j]);
        if (((j - home) & mask) >= ((j - i) & mask)) { /* home is not in (i, j]: the key may move to i */
            t->keys[i] = t->keys[j];
            i = j;
        }
    }
    t->used[i] = 0;
    t->n--;
}

/* ------------------------------------------------------------ sending */

static struct state_hub *hub(struct herd_server *s) { return &s->state; }

/* One event to one subscriber, unless it is behind: then nothing until it
 * catches up (catch_up). */
static void send_to(struct state_sub *sub, const char *data, size_t len) {
    if (sub->behind) return;
    if (herd_http_request_pending_output(sub->r) > HERD_HTTP_STREAM_HIGH_WATER) {
        sub->behind = true;
        sub->synced = false;
        return;
    }
    herd_http_sse_send(sub->r, data, len);
}

static void send_json(struct state_sub *sub, json_t *ev) {
    char *text = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (text) send_to(sub, text, strlen(text));
    free(text);
}

static void send_hello(struct state_sub *sub) {
    struct herd_server *s = sub->s;
    struct herd_sched_status st;
    herd_sched_status(s->m.sched, &st);
    send_json(sub, json_pack("{s:s,s:s,s:s,s:i,s:s,s:i,s:i}", "type", "hello", "instance", hub(s)->instance, "model",
                             s->p.model_name, "block_tokens", (int)st.kv_block_tokens, "hash", HERD_BLOCK_HASH_NAME,
                             "kv_blocks_total", (int)st.kv_blocks_total, "n_ctx", (int)herd_sched_n_ctx(s->m.sched)));
}

static struct state_load load_now(struct herd_server *s) {
    struct herd_sched_status st;
    herd_sched_status(s->m.sched, &st);
    return (struct state_load){st.running, st.waiting, st.kv_blocks_total - st.kv_blocks_free, st.kv_blocks_total};
}

static bool load_equal(struct state_load a, struct state_load b) {
    return a.running == b.running && a.waiting == b.waiting && a.kv_used == b.kv_used && a.kv_total == b.kv_total;
}

static void send_load(struct state_sub *sub, struct state_load l) {
    char ev[160];
    const int n =
        snprintf(ev, sizeof ev, "{\"type\":\"load\",\"running\":%u,\"waiting\":%u,\"kv_used\":%u,\"kv_total\":%u}",
                 l.running, l.waiting, l.kv_used, l.kv_total);
    send_to(sub, ev, (size_t)n);
}

static void send_reset(struct state_sub *sub) {
    static const char ev[] = "{\"type\":\"reset\"}";
    send_to(sub, ev, sizeof ev - 1);
}

/* A blocks event being built in h->ev: stored hashes, then evicted ones. */
struct blocks_event {
    uint32_t n_stored, n_evicted;
    struct herd_buf stored, evicted; /* `"<hex>",` each */
};

static void blocks_add(struct blocks_event *b, uint64_t hash, bool stored) {
    char hex[20];
    snprintf(hex, sizeof hex, "\"%016" PRIx64 "\",", hash);
    herd_buf_append(stored ? &b->stored : &b->evicted, hex, 19);
    if (stored)
        b->n_stored++;
    else
        b->n_evicted++;
}

/* The event's text into out (emptied first), and the builder emptied. */
static void blocks_finish(struct blocks_event *b, struct herd_buf *out) {
    out->len = 0;
    herd_buf_append(out, "{\"type\":\"blocks\",\"stored\":[", 27);
    herd_buf_append(out, b->stored.data, b->stored.len ? b->stored.len - 1 : 0); /* less the last comma */
    herd_buf_append(out, "],\"evicted\":[", 13);
    herd_buf_append(out, b->evicted.data, b->evicted.len ? b->evicted.len - 1 : 0);
    herd_buf_append(out, "]}", 2);
    b->stored.len = b->evicted.len = 0;
    b->n_stored = b->n_evicted = 0;
}

/* Every hash of the set, in events of at most BLOCKS_PER_EVENT; the
 * subscriber is synced from then on. */
static void send_snapshot(struct state_sub *sub) {
    struct state_hub *h = hub(sub->s);
    struct blocks_event b = {0};
    herd_buf_init(&b.stored, EVENT_MAX_BYTES);
    herd_buf_init(&b.evicted, EVENT_MAX_BYTES);
    bool sent_one = false;
    for (uint32_t i = 0; i < h->set.cap; i++) {
        if (!h->set.used[i]) continue;
        blocks_add(&b, h->set.keys[i], true);
        if (b.n_stored == BLOCKS_PER_EVENT) {
            blocks_finish(&b, &h->ev);
            send_to(sub, (const char *)h->ev.data, h->ev.len);
            sent_one = true;
        }
    }
    if (b.n_stored || !sent_one) { /* an empty cache: one empty event says the snapshot is complete */
        blocks_finish(&b, &h->ev);
        send_to(sub, (const char *)h->ev.data, h->ev.len);
    }
    herd_buf_cleanup(&b.stored);
    herd_buf_cleanup(&b.evicted);
    sub->synced = !sub->behind;
}

/* ------------------------------------------------------------- the tick */

static void resync_all(struct state_hub *h) {
    for (struct state_sub *sub = h->subs; sub; sub = sub->next)
        if (sub->synced) {
            send_reset(sub);
            sub->synced = false;
        }
}

/* The block changes to every synced subscriber, in order: a stored hash
 * after an evicted one starts a new event, since a reader applies an
 * event's stored list before its evicted list. */
static void send_changes(struct state_hub *h, const struct herd_block_change *ch, uint32_t n) {
    struct blocks_event b = {0};
    herd_buf_init(&b.stored, EVENT_MAX_BYTES);
    herd_buf_init(&b.evicted, EVENT_MAX_BYTES);
    for (uint32_t i = 0; i <= n; i++) {
        const bool cut = i == n || (ch[i].stored && b.n_evicted) || b.n_stored + b.n_evicted == BLOCKS_PER_EVENT;
        if (cut && b.n_stored + b.n_evicted) {
            blocks_finish(&b, &h->ev);
            for (struct state_sub *sub = h->subs; sub; sub = sub->next)
                if (sub->synced) send_to(sub, (const char *)h->ev.data, h->ev.len);
        }
        if (i < n) blocks_add(&b, ch[i].hash, ch[i].stored);
    }
    herd_buf_cleanup(&b.stored);
    herd_buf_cleanup(&b.evicted);
}

/* What the feed has: an overflow resets everyone, a snapshot replaces the
 * set, the changes go to the set and to the synced subscribers. */
static void apply_feed(struct herd_server *s) {
    struct state_hub *h = hub(s);
    struct herd_block_feed_take t;
    herd_block_feed_take(herd_sched_block_feed(s->m.sched), &t);
    if (t.overflowed || t.snapshot) {
        resync_all(h);
        set_clear(&h->set);
        h->have_set = false;
    }
    if (t.snapshot) {
        for (uint32_t i = 0; i < t.n_hashes; i++) set_put(&h->set, t.hashes[i]);
        h->have_set = true;
    }
    if (!h->have_set) return; /* changes before the snapshot are in it */
    bool lost = false;
    for (uint32_t i = 0; i < t.n_changes; i++) {
        if (!t.changes[i].stored)
            set_del(&h->set, t.changes[i].hash);
        else if (!set_put(&h->set, t.changes[i].hash))
            lost = true;
    }
    if (lost) { /* defensive: more hashes than blocks; start over from a snapshot */
        resync_all(h);
        set_clear(&h->set);
        h->have_set = false;
        herd_sched_feed_start(s->m.sched);
        return;
    }
    send_changes(h, t.changes, t.n_changes);
}

/* A subscriber that skipped events and has read half of its backlog: a
 * reset, the load, and (below) a snapshot. */
static void catch_up(struct state_sub *sub) {
    if (!sub->behind || herd_http_request_pending_output(sub->r) >= HERD_HTTP_STREAM_HIGH_WATER / 2) return;
    sub->behind = false;
    send_reset(sub);
    send_load(sub, load_now(sub->s));
    if (hub(sub->s)->have_set) send_snapshot(sub);
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct herd_server *s = arg;
    struct state_hub *h = hub(s);
    if (!h->subs) return;
    apply_feed(s);
    const struct state_load l = load_now(s);
    const double now = herd_time_now_s();
    if (!load_equal(l, h->last_load) || now - h->last_load_s >= HEARTBEAT_S) {
        for (struct state_sub *sub = h->subs; sub; sub = sub->next) send_load(sub, l);
        h->last_load = l;
        h->last_load_s = now;
    }
    for (struct state_sub *sub = h->subs; sub; sub = sub->next) {
        catch_up(sub);
        if (!sub->synced && !sub->behind && h->have_set) send_snapshot(sub);
    }
    arm(h->tick, TICK_S);
}

/* -------------------------------------------------------- subscribers */

/* Takes sub off the hub; the last one turns the feed and the tick off. */
static void unlink_sub(struct state_sub *sub) {
    struct herd_server *s = sub->s;
    struct state_hub *h = hub(s);
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        h->subs = sub->next;
    if (sub->next) sub->next->prev = sub->prev;
    if (h->subs) return;
    herd_sched_feed_stop(s->m.sched);
    event_del(h->tick);
    set_clear(&h->set);
    h->have_set = false;
}

/* The stream ends (a drain): the answer's last chunk; r may be gone after. */
static void end_sub(struct state_sub *sub) {
    struct herd_http_request *r = sub->r;
    unlink_sub(sub);
    free(sub);
    herd_http_request_set_work(r, NULL, NULL);
    herd_http_stream_end(r);
}

/* A slow reader read below half the high water. */
static void sub_wake(struct herd_http_request *r, void *work) {
    (void)r;
    struct state_sub *sub = work;
    catch_up(sub);
    if (!sub->synced && !sub->behind && hub(sub->s)->have_set) send_snapshot(sub);
}

static void sub_cancel(struct herd_http_request *r, void *work) {
    (void)r;
    end_sub(work);
}

/* The router went away (or the server is being destroyed). */
static void sub_abort(struct herd_http_request *r, void *work) {
    (void)r;
    unlink_sub(work);
    free(work);
}

static const struct herd_http_work_ops sub_ops = {sub_wake, sub_cancel, sub_abort};

void api_herd_state(struct herd_http_request *r, json_t *body, void *app) {
    (void)body;
    struct herd_server *s = app;
    struct state_hub *h = hub(s);
    struct herd_sched_status st;
    herd_sched_status(s->m.sched, &st);
    struct state_sub *sub = calloc(1, sizeof *sub);
    if (!sub || (!h->set.keys && !set_init(&h->set, st.kv_blocks_total))) {
        free(sub);
        set_cleanup(&h->set);
        herd_http_respond_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    sub->s = s;
    sub->r = r;
    herd_http_sse_begin(r);
    herd_http_request_set_work(r, &sub_ops, sub);
    sub->next = h->subs;
    if (h->subs) h->subs->prev = sub;
    const bool first = !h->subs;
    h->subs = sub;
    send_hello(sub);
    send_load(sub, load_now(s));
    if (first) {
        /* the feed starts with a snapshot from the scheduler thread; the
         * tick sends it when it comes */
        herd_sched_feed_start(s->m.sched);
        arm(h->tick, TICK_S);
    } else if (h->have_set) {
        send_snapshot(sub);
    }
}

/* ------------------------------------------------------------- the hub */

bool state_hub_init(struct herd_server *s) {
    struct state_hub *h = hub(s);
    uint64_t x = 0;
    if (getrandom(&x, sizeof x, GRND_NONBLOCK) != (ssize_t)sizeof x) /* early boot: no entropy yet */
        x = herd_rng_mix((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(herd_time_now_s() * 1e9));
    snprintf(h->instance, sizeof h->instance, "%016" PRIx64, x);
    herd_buf_init(&h->ev, EVENT_MAX_BYTES);
    h->tick = evtimer_new(herd_http_server_base(s->http), on_tick, s);
    return h->tick != NULL;
}

void state_hub_end_all(struct herd_server *s) {
    while (hub(s)->subs) end_sub(hub(s)->subs);
}

void state_hub_cleanup(struct herd_server *s) {
    struct state_hub *h = hub(s);
    if (h->tick) event_free(h->tick);
    h->tick = NULL;
    set_cleanup(&h->set);
    herd_buf_cleanup(&h->ev);
}

/* herd_batch_run: a JSONL file of OpenAI batch requests through the
 * scheduler (batch.h). One thread: it reads lines, submits them (at most
 * max_inflight at once), sleeps until the scheduler says events are ready,
 * collects finished answers and appends them, a flush about once a second
 * (jsonl_file.h: whole lines, synced). */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "base/log.h"
#include "base/timing.h"
#include "batch/batch.h"
#include "batch/jsonl_file.h"
#include "model/model.h"

/* Seconds between flushes (and progress calls): a kill loses at most this
 * much finished work, and a sync a second costs nothing next to a step. */
#define FLUSH_EVERY_S 1.0

void herd_batch_default_params(struct herd_batch_params *p) {
    memset(p, 0, sizeof *p);
    p->n_shards = 1;
    p->max_inflight = 64;
    p->max_line_bytes = HERD_BATCH_DEFAULT_MAX_LINE;
}

/* ------------------------------------------------ custom_id -> first line */

struct id_slot {
    char *id; /* NULL: empty */
    uint64_t line;
};

struct id_table {
    struct id_slot *s;
    uint64_t cap, n; /* cap a power of two, at most half full */
};

static uint64_t id_hash(const char *id) { return XXH3_64bits(id, strlen(id)); }

static bool id_grow(struct id_table *t) {
    const uint64_t ncap = t->cap ? t->cap * 2 : 1024;
    struct id_slot *ns = calloc(ncap, sizeof *ns);
    if (!ns) return false;
    for (uint64_t i = 0; i < t->cap; i++)
        if (t->s[i].id)
            for (uint64_t j = id_hash(t->s[i].id) & (ncap - 1);; j = (j + 1) & (ncap - 1))
                if (!ns[j].id) {
                    ns[j] = t->s[i];
                    break;
                }
    free(t->s);
    t->s = ns;
    t->cap = ncap;
    return true;
}

/* The slot of id: found, or the empty one where it would go. */
static struct id_slot *id_find(const struct id_table *t, const char *id) {
    if (!t->cap) return NULL;
    for (uint64_t j = id_hash(id) & (t->cap - 1);; j = (j + 1) & (t->cap - 1))
        if (!t->s[j].id || strcmp(t->s[j].id, id) == 0) return &t->s[j];
}

/* Records id at line (0-based); returns the line it was first seen on. */
static bool id_put(struct id_table *t, const char *id, uint64_t line, uint64_t *first) {
    if ((t->n + 1) * 2 > t->cap && !id_grow(t)) return false;
    struct id_slot *s = id_find(t, id);
    if (!s->id) {
        if (!(s->id = strdup(id))) return false;
        s->line = line;
        t->n++;
    }
    *first = s->line;
    return true;
}

static void id_free(struct id_table *t) {
    for (uint64_t i = 0; i < t->cap; i++) free(t->s[i].id);
    free(t->s);
}

/* ---------------------------------------------------------------- job */

/* One input line while its requests run. */
struct job_line {
    uint64_t k; /* 0-based line */
    char *custom_id;
    struct herd_request *req[HERD_API_MAX_PROMPTS];
    uint32_t n_req, per_prompt;
    bool failed; /* the engine failed under it */
    struct herd_api_answer ans;
    char request_id[40];
};

struct job {
    struct herd_engine *e;
    const struct herd_batch_params *p;
    struct jsonl_input in;
    struct jsonl_output out, errs;
    struct id_table ids;
    uint8_t *skip;    /* [n_lines]: 1 when already written, or not this shard's */
    uint64_t *dup_of; /* [n_lines]: 1 + the line a repeated custom_id was first on; 0 none */
    struct job_line **running;
    uint32_t n_running;
    struct herd_batch_counts c;
    uint64_t queued_done, queued_failed; /* lines not flushed yet: counted once they are on disk */
    uint64_t seq;                        /* for ids */
    /* the scheduler's notify */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool ready;
};

static void notify(void *arg) {
    struct job *j = arg;
    pthread_mutex_lock(&j->lock);
    j->ready = true;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->lock);
}

/* Waits for the scheduler's next events, at most until deadline_s. */
static void wait_events(struct job *j, double seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const long ns = ts.tv_nsec + (long)(seconds * 1e9);
    ts.tv_sec += ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    pthread_mutex_lock(&j->lock);
    while (!j->ready)
        if (pthread_cond_timedwait(&j->cond, &j->lock, &ts) != 0) break;
    j->ready = false;
    pthread_mutex_unlock(&j->lock);
}

/* "batch_req_..." and "req_...": unique within a job and across reruns. */
static void make_id(struct job *j, const char *prefix, char *out, size_t cap) {
    const uint64_t h = XXH3_64bits_withSeed(&j->seq, sizeof j->seq, (uint64_t)time(NULL) ^ j->in.xxh3);
    j->seq++;
    snprintf(out, cap, "%s%016llx", prefix, (unsigned long long)h);
}

static bool add_line(struct jsonl_output *o, json_t *v) {
    char *s = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (!s) return false;
    const bool ok = jsonl_output_add(o, s, strlen(s));
    free(s);
    return ok;
}

/* An error line: line-level (code, message) or a request the API refused
 * (response with its status and OpenAI error body). "line" is herd's: the
 * 1-based line, which is how a rerun knows lines without a custom_id. */
static bool write_error(struct job *j, uint64_t k, const char *custom_id, int status, json_t *body, const char *code,
                        const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static bool write_error(struct job *j, uint64_t k, const char *custom_id, int status, json_t *body, const char *code,
                        const char *fmt, ...) {
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char id[48], rid[40];
    make_id(j, "batch_req_", id, sizeof id);
    make_id(j, "req_", rid, sizeof rid);
    json_t *response = json_null(), *error = json_null();
    if (body)
        response = json_pack("{s:i,s:s,s:o}", "status_code", status, "request_id", rid, "body", body);
    else
        error = json_pack("{s:s,s:o}", "code", code, "message", herd_api_text(msg, strlen(msg)));
    json_t *line = json_pack("{s:s,s:o,s:I,s:o,s:o}", "id", id, "custom_id",
                             custom_id ? herd_api_text(custom_id, strlen(custom_id)) : json_null(), "line",
                             (json_int_t)(k + 1), "response", response, "error", error);
    j->queued_failed++;
    return line && add_line(&j->errs, line);
}

static void line_free(struct job_line *l) {
    if (!l) return;
    for (uint32_t i = 0; i < l->n_req; i++) {
        herd_request_set_notify(l->req[i], NULL, NULL);
        herd_request_cancel(l->req[i]);
        herd_request_release(l->req[i]);
    }
    herd_api_answer_cleanup(&l->ans);
    free(l->custom_id);
    free(l);
}

static json_t *api_error_body(const struct herd_api_error *e) {
    return herd_api_error_json(e->type, e->param[0] ? e->param : NULL, e->code, e->message);
}

static int api_error_status(const struct herd_api_error *e) {
    switch (e->kind) {
    case HERD_API_MODEL_NOT_FOUND: return 404;
    case HERD_API_NO_MEMORY: return 500;
    default: return 400;
    }
}

/* Starts line k: checked, tokenized and submitted, or written as an error.
 * HERD_E_AGAIN: the scheduler's queue is full, try again later. Other
 * errors stop the job. */
static enum herd_status start_line(struct job *j, uint64_t k, struct herd_buf *buf, struct herd_error *err) {
    const struct herd_batch_params *p = j->p;
    struct herd_error lerr = {0};
    enum herd_status rc = jsonl_input_read(&j->in, k, buf, p->max_line_bytes, &lerr);
    if (rc == HERD_E_OVERFLOW)
        return write_error(j, k, NULL, 0, NULL, "line_too_long", "line %llu: %s", (unsigned long long)k + 1, lerr.msg)
                   ? HERD_OK
                   : herd_error_set(err, HERD_E_NOMEM, "out of memory");
    if (rc != HERD_OK) return herd_error_set(err, rc, "%s", lerr.msg);
    json_error_t jerr;
    json_t *v = json_loadb((const char *)buf->data, buf->len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *cid = json_object_get(v, "custom_id");
    const char *custom_id = json_is_string(cid) ? json_string_value(cid) : NULL;
    const char *method = json_string_value(json_object_get(v, "method"));
    const char *url = json_string_value(json_object_get(v, "url"));
    json_t *body = json_object_get(v, "body");
    bool ok = true;
    if (!v)
        ok = write_error(j, k, NULL, 0, NULL, "invalid_json", "line %llu: not valid JSON (column %d): %s",
                         (unsigned long long)k + 1, jerr.column, jerr.text);
    else if (!json_is_object(v))
        ok = write_error(j, k, NULL, 0, NULL, "invalid_request", "line %llu: not a JSON object",
                         (unsigned long long)k + 1);
    else if (!custom_id || !*custom_id)
        ok = write_error(j, k, NULL, 0, NULL, "missing_custom_id", "line %llu: no custom_id (a non-empty string)",
                         (unsigned long long)k + 1);
    else if (j->dup_of[k])
        ok = write_error(j, k, custom_id, 0, NULL, "duplicate_custom_id",
                         "line %llu: custom_id '%s' was already used on line %llu", (unsigned long long)k + 1,
                         custom_id, (unsigned long long)j->dup_of[k]);
    else if (method && strcmp(method, "POST") != 0)
        ok = write_error(j, k, custom_id, 0, NULL, "invalid_method", "line %llu: method '%s': only POST is supported",
                         (unsigned long long)k + 1, method);
    else if (p->only_url && (!url || strcmp(url, p->only_url) != 0))
        ok = write_error(j, k, custom_id, 0, NULL, "invalid_url", "line %llu: url '%s': this batch's endpoint is %s",
                         (unsigned long long)k + 1, url ? url : "(none)", p->only_url);
    else if (!url || (strcmp(url, "/v1/chat/completions") != 0 && strcmp(url, "/v1/completions") != 0))
        ok = write_error(j, k, custom_id, 0, NULL, "invalid_url",
                         "line %llu: url '%s': only /v1/chat/completions and /v1/completions are supported",
                         (unsigned long long)k + 1, url ? url : "(none)");
    else if (!json_is_object(body))
        ok = write_error(j, k, custom_id, 0, NULL, "invalid_body", "line %llu: no body object",
                         (unsigned long long)k + 1);
    else
        goto submit;
    json_decref(v);
    return ok ? HERD_OK : herd_error_set(err, HERD_E_NOMEM, "out of memory");

submit:;
    const bool chat = strcmp(url, "/v1/chat/completions") == 0;
    const struct herd_model *model = herd_engine_model(j->e);
    struct herd_sched *s = herd_engine_sched(j->e);
    const struct herd_api_model m = {.tokenizer = herd_engine_tokenizer(j->e),
                                     .chat_template = herd_engine_chat_template(j->e),
                                     .n_vocab = model->desc.n_vocab,
                                     .n_ctx = herd_sched_n_ctx(s)};
    struct herd_api_request q;
    struct herd_api_error aerr;
    const bool parsed = chat ? herd_api_parse_chat(body, &p->limits, &m, &q, &aerr)
                             : herd_api_parse_completion(body, &p->limits, &m, &q, &aerr);
    if (!parsed) {
        ok = write_error(j, k, custom_id, api_error_status(&aerr), api_error_body(&aerr), NULL, "line %llu",
                         (unsigned long long)k + 1);
        json_decref(v);
        return ok ? HERD_OK : herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    q.stream = false; /* a batch answer is the whole body */
    q.include_usage = false;
    q.gp.priority = p->priority;
    struct job_line *l = calloc(1, sizeof *l);
    uint32_t prompt_tokens = 0;
    for (uint32_t i = 0; i < q.n_prompts; i++) prompt_tokens += q.n_ids[i];
    rc = HERD_OK;
    if (l) make_id(j, "req_", l->request_id, sizeof l->request_id);
    if (!l || !(l->custom_id = strdup(custom_id)) ||
        !herd_api_answer_init(&l->ans, &q, prompt_tokens, l->request_id, p->limits.model_name, herd_engine_vocab(j->e),
                              time(NULL))) {
        if (l) free(l->custom_id);
        free(l);
        herd_api_request_cleanup(&q);
        json_decref(v);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    l->k = k;
    l->per_prompt = q.gp.n;
    struct herd_error serr = {0};
    for (uint32_t i = 0; i < q.n_prompts && rc == HERD_OK; i++) {
        struct herd_request *r = herd_request_create(q.ids[i], q.n_ids[i], &q.gp, notify, j, &serr);
        if (!r) {
            rc = serr.code ? serr.code : HERD_E_NOMEM;
            break;
        }
        l->req[l->n_req++] = r;
        rc = herd_sched_submit(s, r, &serr);
    }
    herd_api_request_cleanup(&q);
    if (rc == HERD_OK) {
        json_decref(v);
        j->running[j->n_running++] = l;
        return HERD_OK;
    }
    line_free(l); /* cancels the prompts already queued */
    if (rc == HERD_E_AGAIN || rc == HERD_E_UNAVAILABLE || rc == HERD_E_NOMEM) {
        json_decref(v);
        return rc == HERD_E_AGAIN ? HERD_E_AGAIN : herd_error_set(err, rc, "%s", serr.msg);
    }
    /* the scheduler refused this request (it does not fit): the line's error */
    json_t *ebody = herd_api_error_json("invalid_request_error", NULL, NULL, serr.msg);
    ok = write_error(j, k, custom_id, 400, ebody, NULL, "line %llu", (unsigned long long)k + 1);
    json_decref(v);
    return ok ? HERD_OK : herd_error_set(err, HERD_E_NOMEM, "out of memory");
}

/* Polls a running line; true once its answer (or error) is written. */
static bool collect(struct job *j, struct job_line *l, struct herd_error *err) {
    struct herd_event ev[64];
    size_t n;
    for (uint32_t i = 0; i < l->n_req; i++)
        while ((n = herd_request_poll(l->req[i], ev, 64)) > 0)
            for (size_t e = 0; e < n; e++) {
                ev[e].choice += i * l->per_prompt;
                if (ev[e].finish == HERD_FINISH_ERROR) {
                    l->failed = true;
                    l->ans.n_finished++;
                    continue;
                }
                json_decref(herd_api_answer_event(&l->ans, &ev[e]));
            }
    if (l->ans.n_finished < l->ans.n) return false;
    if (l->failed) {
        herd_error_set(err, HERD_E_UNAVAILABLE, "the engine failed");
        return false;
    }
    uint32_t cached = 0;
    for (uint32_t i = 0; i < l->n_req; i++) {
        struct herd_request_stats st;
        herd_request_stats(l->req[i], &st);
        cached += st.cached_tokens;
        j->c.prompt_tokens += st.prompt_tokens;
        j->c.completion_tokens += st.completion_tokens;
    }
    char id[48];
    make_id(j, "batch_req_", id, sizeof id);
    json_t *body = herd_api_answer_body(&l->ans, cached);
    json_t *line = body ? json_pack("{s:s,s:o,s:{s:i,s:s,s:o},s:n}", "id", id, "custom_id",
                                    herd_api_text(l->custom_id, strlen(l->custom_id)), "response", "status_code", 200,
                                    "request_id", l->request_id, "body", body, "error")
                        : NULL;
    if (!line || !add_line(&j->out, line)) {
        herd_error_set(err, HERD_E_NOMEM, "out of memory");
        return false;
    }
    j->queued_done++;
    return true;
}

/* ------------------------------------------------------------ resuming */

struct resume_ctx {
    struct job *j;
    bool errors; /* reading the error file */
};

static enum herd_status resume_line(void *arg, char *text, size_t len) {
    struct resume_ctx *r = arg;
    struct job *j = r->j;
    json_t *v = json_loadb(text, len, 0, NULL);
    json_t *line = json_object_get(v, "line");
    const char *cid = json_string_value(json_object_get(v, "custom_id"));
    const uint8_t mark = r->errors ? 4 : 2;
    if (r->errors && json_is_integer(line) && json_integer_value(line) >= 1 &&
        (uint64_t)json_integer_value(line) <= j->in.n_lines) {
        j->skip[json_integer_value(line) - 1] |= mark;
    } else if (cid) {
        struct id_slot *s = id_find(&j->ids, cid);
        if (s && s->id) j->skip[s->line] |= mark;
    }
    json_decref(v);
    return HERD_OK;
}

/* OUTPUT.state: the input's checksum and size, and the shard. */
static enum herd_status check_state(struct job *j, struct herd_error *err) {
    const struct herd_batch_params *p = j->p;
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s.state", p->output);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    char sum[20];
    snprintf(sum, sizeof sum, "%016llx", (unsigned long long)j->in.xxh3);
    json_t *want = json_pack("{s:s,s:I,s:i,s:i}", "input_xxh3", sum, "input_bytes", (json_int_t)j->in.size, "shard",
                             (int)p->shard, "shards", (int)p->n_shards);
    if (!want) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    json_t *have = p->restart ? NULL : json_load_file(path, 0, NULL);
    enum herd_status rc = HERD_OK;
    if (have && !json_equal(have, want)) {
        rc = herd_error_set(err, HERD_E_INVALID,
                            "%s was written for another input or shard (%s says so): the input changed since; "
                            "rerun with --restart to start over (the output and error files are emptied)",
                            p->output, path);
    } else if (!have) {
        if (json_dump_file(want, tmp, JSON_COMPACT) != 0 || rename(tmp, path) != 0)
            rc = herd_error_set(err, HERD_E_IO, "%s: %s", path, strerror(errno));
    }
    json_decref(have);
    json_decref(want);
    return rc;
}

/* -------------------------------------------------------------- running */

/* The job stops for good (p->abandon_code): the lines running and those
 * not started from next on get an error line each. */
static enum herd_status abandon(struct job *j, uint64_t next, struct herd_buf *buf, struct herd_error *err) {
    const struct herd_batch_params *p = j->p;
    for (uint32_t i = 0; i < j->n_running; i++) {
        const struct job_line *l = j->running[i];
        if (!write_error(j, l->k, l->custom_id, 0, NULL, p->abandon_code, "line %llu: %s", (unsigned long long)l->k + 1,
                         p->abandon_message))
            return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    for (uint64_t k = next; k < j->in.n_lines; k++) {
        if (j->skip[k]) continue;
        struct herd_error lerr;
        enum herd_status rc = jsonl_input_read(&j->in, k, buf, p->max_line_bytes, &lerr);
        if (rc != HERD_OK && rc != HERD_E_OVERFLOW) return herd_error_set(err, rc, "%s", lerr.msg);
        json_t *v = rc == HERD_OK ? json_loadb((const char *)buf->data, buf->len, 0, NULL) : NULL;
        const char *cid = json_string_value(json_object_get(v, "custom_id"));
        const bool ok = write_error(j, k, cid && *cid && !j->dup_of[k] ? cid : NULL, 0, NULL, p->abandon_code,
                                    "line %llu: %s", (unsigned long long)k + 1, p->abandon_message);
        json_decref(v);
        if (!ok) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    return HERD_OK;
}

static enum herd_status flush(struct job *j, struct herd_error *err) {
    enum herd_status rc = jsonl_output_flush(&j->out, err);
    if (rc == HERD_OK) {
        j->c.done += j->queued_done;
        j->queued_done = 0;
        rc = jsonl_output_flush(&j->errs, err);
    }
    if (rc == HERD_OK) {
        j->c.failed += j->queued_failed;
        j->queued_failed = 0;
    }
    if (rc != HERD_OK)
        herd_error_prefix(err, "writing stopped (the lines written before are whole and a rerun goes on from them)");
    return rc;
}

static enum herd_status run(struct job *j, struct herd_error *err) {
    const struct herd_batch_params *p = j->p;
    const uint64_t n = j->in.n_lines;
    enum herd_status rc;
    /* every line's custom_id: a repeat is an error wherever it falls, the
     * same in every shard */
    struct herd_buf buf;
    herd_buf_init(&buf, SIZE_MAX);
    for (uint64_t k = 0; k < n; k++) {
        const struct jsonl_line *ln = &j->in.lines[k];
        if (ln->len > p->max_line_bytes) continue;
        struct herd_error lerr;
        if ((rc = jsonl_input_read(&j->in, k, &buf, p->max_line_bytes, &lerr)) != HERD_OK) {
            herd_buf_cleanup(&buf);
            return herd_error_set(err, rc, "%s", lerr.msg);
        }
        if (jsonl_blank((const char *)buf.data, buf.len)) {
            j->skip[k] = 1;
            continue;
        }
        if (k % p->n_shards == p->shard)
            j->c.lines++;
        else
            j->skip[k] = 1;
        json_t *v = json_loadb((const char *)buf.data, buf.len, 0, NULL);
        const char *cid = json_string_value(json_object_get(v, "custom_id"));
        uint64_t first = k;
        const bool put = !cid || !*cid || id_put(&j->ids, cid, k, &first);
        json_decref(v);
        if (!put) {
            herd_buf_cleanup(&buf);
            return herd_error_set(err, HERD_E_NOMEM, "out of memory");
        }
        if (first != k) j->dup_of[k] = first + 1;
    }
    if ((rc = jsonl_output_open(&j->out, p->output, p->restart, err)) != HERD_OK ||
        (rc = jsonl_output_open(&j->errs, p->errors, p->restart, err)) != HERD_OK ||
        (rc = check_state(j, err)) != HERD_OK)
        goto out;
    struct resume_ctx rout = {j, false}, rerr = {j, true};
    if ((rc = jsonl_each_line(p->output, resume_line, &rout, err)) != HERD_OK ||
        (rc = jsonl_each_line(p->errors, resume_line, &rerr, err)) != HERD_OK)
        goto out;
    for (uint64_t k = 0; k < n; k++) {
        if (j->skip[k] & 1 || !(j->skip[k] & 6)) continue;
        j->c.skipped++;
        if (!(j->skip[k] & 2)) j->c.skipped_failed++; /* an answer wins over an error for the same line */
    }

    const double t0 = herd_time_now_s();
    double last_flush = t0;
    uint64_t next = 0;
    bool queue_full = false;
    for (;;) {
        const bool stopping = p->stop && atomic_load(p->stop);
        /* fill the free slots */
        while (!stopping && !queue_full && j->n_running < p->max_inflight && next < n) {
            if (j->skip[next]) {
                next++;
                continue;
            }
            rc = start_line(j, next, &buf, err);
            if (rc == HERD_E_AGAIN) {
                queue_full = true;
                break;
            }
            if (rc != HERD_OK) goto out;
            next++;
        }
        if (stopping) { /* unfinished lines are redone by a rerun, or abandoned */
            if (p->abandon_code && (rc = abandon(j, next, &buf, err)) != HERD_OK) goto out;
            for (uint32_t i = 0; i < j->n_running; i++) line_free(j->running[i]);
            j->n_running = 0;
            break;
        }
        if (!j->n_running && next >= n) break;
        if (j->n_running) wait_events(j, FLUSH_EVERY_S / 4);
        queue_full = false;
        for (uint32_t i = 0; i < j->n_running;) {
            struct herd_error cerr = {0};
            if (collect(j, j->running[i], &cerr)) {
                line_free(j->running[i]);
                j->running[i] = j->running[--j->n_running];
            } else if (cerr.code) {
                rc = herd_error_set(err, cerr.code, "%s", cerr.msg);
                goto out;
            } else {
                i++;
            }
        }
        const double now = herd_time_now_s();
        if (now - last_flush >= FLUSH_EVERY_S) {
            if ((rc = flush(j, err)) != HERD_OK) goto out;
            last_flush = now;
            j->c.elapsed_s = now - t0;
            if (p->progress) p->progress(p->progress_arg, &j->c);
        }
    }
    rc = flush(j, err);
    j->c.elapsed_s = herd_time_now_s() - t0;
    if (rc == HERD_OK && p->stop && atomic_load(p->stop))
        rc = herd_error_set(err, HERD_E_UNAVAILABLE, "stopped: the lines finished so far are written; rerun to go on");
out:
    /* what finished is kept even when the job stops on an error */
    if (rc != HERD_OK && j->out.fd >= 0 && j->errs.fd >= 0) {
        struct herd_error ferr;
        if (j->out.pending.len || j->errs.pending.len) (void)flush(j, &ferr);
    }
    if (p->progress) p->progress(p->progress_arg, &j->c);
    herd_buf_cleanup(&buf);
    return rc;
}

enum herd_status herd_batch_run(struct herd_engine *e, const struct herd_batch_params *p, struct herd_batch_counts *out,
                                struct herd_error *err) {
    if (!p->n_shards || p->shard >= p->n_shards)
        return herd_error_set(err, HERD_E_INVALID, "shard %u of %u: want 0 <= shard < shards", p->shard, p->n_shards);
    if (!p->max_inflight) return herd_error_set(err, HERD_E_INVALID, "max_inflight must be at least 1");
    if (!herd_engine_sched(e) || !herd_engine_chat_template(e))
        return herd_error_set(err, HERD_E_INVALID, "the engine needs its scheduler and chat template");
    struct job j = {.e = e, .p = p};
    j.out.fd = j.errs.fd = -1;
    pthread_mutex_init(&j.lock, NULL);
    pthread_cond_init(&j.cond, NULL);
    enum herd_status rc = jsonl_input_open(&j.in, p->input, err);
    if (rc != HERD_OK) goto out;
    if (!j.in.n_lines) {
        rc = herd_error_set(err, HERD_E_INVALID, "%s: the file is empty", p->input);
        goto out;
    }
    j.skip = calloc(j.in.n_lines, 1);
    j.dup_of = calloc(j.in.n_lines, sizeof *j.dup_of);
    j.running = calloc(p->max_inflight, sizeof *j.running);
    if (!j.skip || !j.dup_of || !j.running) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    rc = run(&j, err);
out:
    if (j.running)
        for (uint32_t i = 0; i < j.n_running; i++) line_free(j.running[i]);
    free(j.running);
    free(j.skip);
    free(j.dup_of);
    id_free(&j.ids);
    jsonl_output_close(&j.out);
    jsonl_output_close(&j.errs);
    jsonl_input_close(&j.in);
    pthread_mutex_destroy(&j.lock);
    pthread_cond_destroy(&j.cond);
    if (out) *out = j.c;
    return rc;
}

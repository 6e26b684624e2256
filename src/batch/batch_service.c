/* The server's batch jobs (batch_service.h): the batches in memory under
 * one lock, each mirrored to DIR/batches/ID.json at every change, and one
 * worker thread that moves them through their lifecycle. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "batch/batch.h"
#include "batch/batch_service.h"
#include "batch/jsonl_file.h"
#include "engine/sched.h"

#define BATCH_ID_LEN 30 /* "batch_" + 24 hex digits */
/* Seconds between retries of a batch whose writing failed (a full disk). */
#define RETRY_S      5

enum bstatus {
    ST_VALIDATING,
    ST_IN_PROGRESS,
    ST_FINALIZING,
    ST_COMPLETED,
    ST_FAILED,
    ST_EXPIRED,
    ST_CANCELLING,
    ST_CANCELLED,
    ST_N
};

static const char *const status_names[ST_N] = {"validating", "in_progress", "finalizing", "completed",
                                               "failed",     "expired",     "cancelling", "cancelled"};

/* The timestamps of the object, in this order. */
enum {
    T_CREATED,
    T_IN_PROGRESS,
    T_EXPIRES,
    T_FINALIZING,
    T_COMPLETED,
    T_FAILED,
    T_EXPIRED,
    T_CANCELLING,
    T_CANCELLED,
    T_N
};
static const char *const time_names[T_N] = {"created_at",    "in_progress_at", "expires_at",
                                            "finalizing_at", "completed_at",   "failed_at",
                                            "expired_at",    "cancelling_at",  "cancelled_at"};

struct batch {
    char id[BATCH_ID_LEN + 1];
    char input_file_id[HERD_FILE_ID_LEN + 1];
    char output_file_id[HERD_FILE_ID_LEN + 1], error_file_id[HERD_FILE_ID_LEN + 1]; /* "": null */
    char endpoint[32];
    enum bstatus status;
    enum bstatus final; /* what finalizing ends in: completed, expired or cancelled */
    int64_t t[T_N];     /* 0: null */
    uint64_t total, completed, failed;
    json_t *metadata; /* NULL: null */
    json_t *errors;   /* the list object, or NULL */
    double retry_at;  /* a failed write: not before this (monotonic seconds) */
};

enum stop_reason { STOP_NONE, STOP_CANCEL, STOP_EXPIRE, STOP_SHUTDOWN };

struct herd_batch_service {
    struct herd_batch_service_params p;
    char data_dir[4096], dir[4200]; /* DIR/batches */
    struct herd_file_store *files;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct batch *b; /* [n], oldest first */
    size_t n, cap;
    struct herd_engine *e;
    pthread_t thread;
    bool started, shutting_down;
    char running[BATCH_ID_LEN + 1]; /* the batch herd_batch_run works on; "" none */
    atomic_int stop_run;            /* its stop flag */
    enum stop_reason reason;        /* why it was set */
};

void herd_batch_service_default_params(struct herd_batch_service_params *p) {
    memset(p, 0, sizeof *p);
    p->max_requests = 50000;
    p->max_file_bytes = (uint64_t)200 * 1000 * 1000;
    p->window_s = 24 * 3600;
    p->max_inflight = 16;
}

bool herd_batch_id_valid(const char *id) {
    if (!id || strncmp(id, "batch_", 6) != 0 || strlen(id) != BATCH_ID_LEN) return false;
    for (const char *p = id + 6; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
    return true;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void api_error(struct herd_batch_api_error *e, int status, const char *code, const char *param, const char *fmt,
                      ...) __attribute__((format(printf, 5, 6)));
static void api_error(struct herd_batch_api_error *e, int status, const char *code, const char *param, const char *fmt,
                      ...) {
    e->status = status;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ objects */

static json_t *time_or_null(int64_t t) { return t ? json_integer(t) : json_null(); }
static json_t *id_or_null(const char *id) { return *id ? json_string(id) : json_null(); }

/* The batch object; internal adds what only the record on disk keeps.
 * Under the lock. It shares nothing with the batch (deep copies): the
 * caller writes it out after the lock is released, while the worker may
 * change the batch's errors (jansson objects are not for two threads). */
static json_t *batch_json(const struct batch *b, bool internal) {
    json_t *o =
        json_pack("{s:s,s:s,s:s,s:o?,s:s,s:s,s:s,s:o,s:o}", "id", b->id, "object", "batch", "endpoint", b->endpoint,
                  "errors", b->errors ? json_deep_copy(b->errors) : NULL, "input_file_id", b->input_file_id,
                  "completion_window", "24h", "status", status_names[b->status], "output_file_id",
                  id_or_null(b->output_file_id), "error_file_id", id_or_null(b->error_file_id));
    if (!o) return NULL;
    for (int i = 0; i < T_N; i++) json_object_set_new(o, time_names[i], time_or_null(b->t[i]));
    json_object_set_new(o, "request_counts",
                        json_pack("{s:I,s:I,s:I}", "total", (json_int_t)b->total, "completed", (json_int_t)b->completed,
                                  "failed", (json_int_t)b->failed));
    json_object_set_new(o, "metadata", b->metadata ? json_deep_copy(b->metadata) : json_null());
    if (internal) json_object_set_new(o, "herd_final", json_string(status_names[b->final]));
    return o;
}

static int status_of(const char *name) {
    for (int i = 0; name && i < ST_N; i++)
        if (strcmp(name, status_names[i]) == 0) return i;
    return -1;
}

/* Rewrites the batch's record (under the lock). A failure (a full disk) is
 * logged: memory stays right, and the next change writes it again. */
static void persist(struct herd_batch_service *s, const struct batch *b) {
    json_t *o = batch_json(b, true);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    char path[4300];
    snprintf(path, sizeof path, "%s/%s.json", s->dir, b->id);
    struct herd_error err = {0};
    if (!text || herd_write_file_atomic(path, text, strlen(text), &err) != HERD_OK)
        herd_log(HERD_LOG_WARN, "batch", b->id, NULL, 0, "cannot save the batch's state: %s",
                 text ? err.msg : "out of memory");
    free(text);
}

static struct batch *find(struct herd_batch_service *s, const char *id) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->b[i].id, id) == 0) return &s->b[i];
    return NULL;
}

static void set_status(struct herd_batch_service *s, struct batch *b, enum bstatus st, int t_index) {
    b->status = st;
    if (t_index >= 0) b->t[t_index] = time(NULL);
    persist(s, b);
    pthread_cond_broadcast(&s->cond);
}

/* OpenAI's errors object: a list of {code, message, param, line}. */
static void set_errors(struct batch *b, const char *code, const char *message, int64_t line) {
    json_decref(b->errors);
    b->errors = json_pack("{s:s,s:[{s:s,s:s,s:n,s:o}]}", "object", "list", "data", "code", code, "message", message,
                          "param", "line", line > 0 ? json_integer(line) : json_null());
}

/* ------------------------------------------------------------ loading */

static bool push(struct herd_batch_service *s, const struct batch *b) {
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 32;
        struct batch *nb = realloc(s->b, ncap * sizeof *nb);
        if (!nb) return false;
        s->b = nb;
        s->cap = ncap;
    }
    s->b[s->n++] = *b;
    return true;
}

static void copy_str(char *dst, size_t cap, const char *src) { snprintf(dst, cap, "%s", src ? src : ""); }

/* A record read back; false when it is not one of ours. */
static bool load_batch(const char *path, const char *id, struct batch *b) {
    json_t *o = json_load_file(path, 0, NULL);
    const int st = status_of(json_string_value(json_object_get(o, "status")));
    const int fin = status_of(json_string_value(json_object_get(o, "herd_final")));
    const char *input = json_string_value(json_object_get(o, "input_file_id"));
    const char *endpoint = json_string_value(json_object_get(o, "endpoint"));
    const char *oid = json_string_value(json_object_get(o, "id"));
    bool ok = st >= 0 && input && endpoint && oid && strcmp(oid, id) == 0;
    if (ok) {
        memset(b, 0, sizeof *b);
        copy_str(b->id, sizeof b->id, id);
        copy_str(b->input_file_id, sizeof b->input_file_id, input);
        copy_str(b->endpoint, sizeof b->endpoint, endpoint);
        copy_str(b->output_file_id, sizeof b->output_file_id, json_string_value(json_object_get(o, "output_file_id")));
        copy_str(b->error_file_id, sizeof b->error_file_id, json_string_value(json_object_get(o, "error_file_id")));
        b->status = (enum bstatus)st;
        b->final = fin >= 0 ? (enum bstatus)fin : ST_COMPLETED;
        for (int i = 0; i < T_N; i++) b->t[i] = json_integer_value(json_object_get(o, time_names[i]));
        json_t *rc = json_object_get(o, "request_counts");
        b->total = (uint64_t)json_integer_value(json_object_get(rc, "total"));
        b->completed = (uint64_t)json_integer_value(json_object_get(rc, "completed"));
        b->failed = (uint64_t)json_integer_value(json_object_get(rc, "failed"));
        json_t *md = json_object_get(o, "metadata"), *errs = json_object_get(o, "errors");
        b->metadata = json_is_object(md) ? json_incref(md) : NULL;
        b->errors = json_is_object(errs) ? json_incref(errs) : NULL;
    }
    json_decref(o);
    return ok;
}

static int by_created(const void *a, const void *b) {
    const struct batch *x = a, *y = b;
    if (x->t[T_CREATED] != y->t[T_CREATED]) return x->t[T_CREATED] < y->t[T_CREATED] ? -1 : 1;
    return strcmp(x->id, y->id);
}

static void free_batches(struct herd_batch_service *s) {
    for (size_t i = 0; i < s->n; i++) {
        json_decref(s->b[i].metadata);
        json_decref(s->b[i].errors);
    }
    free(s->b);
}

enum herd_status herd_batch_service_open(const struct herd_batch_service_params *p, struct herd_batch_service **out,
                                         struct herd_error *err) {
    *out = NULL;
    struct herd_batch_service *s = calloc(1, sizeof *s);
    if (!s) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    s->p = *p;
    copy_str(s->data_dir, sizeof s->data_dir, p->data_dir);
    s->p.data_dir = s->data_dir;
    snprintf(s->dir, sizeof s->dir, "%s/batches", s->data_dir);
    if ((mkdir(s->data_dir, 0755) != 0 && errno != EEXIST) || (mkdir(s->dir, 0755) != 0 && errno != EEXIST)) {
        herd_error_set(err, HERD_E_IO, "--data-dir %s: %s", s->data_dir, strerror(errno));
        free(s);
        return HERD_E_IO;
    }
    enum herd_status rc = herd_file_store_open(s->data_dir, &s->files, err);
    if (rc != HERD_OK) {
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    DIR *d = opendir(s->dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        const size_t len = strlen(de->d_name);
        if (len != BATCH_ID_LEN + 5 || strcmp(de->d_name + BATCH_ID_LEN, ".json") != 0) continue;
        char id[BATCH_ID_LEN + 1], path[4400];
        memcpy(id, de->d_name, BATCH_ID_LEN); /* the name less ".json" */
        id[BATCH_ID_LEN] = 0;
        if (!herd_batch_id_valid(id)) continue;
        snprintf(path, sizeof path, "%s/%s", s->dir, de->d_name);
        struct batch b;
        if (!load_batch(path, id, &b)) {
            herd_log(HERD_LOG_WARN, "batch", NULL, NULL, 0, "%s: not a batch record; ignored", path);
            continue;
        }
        if (!push(s, &b)) {
            closedir(d);
            herd_batch_service_close(s);
            return herd_error_set(err, HERD_E_NOMEM, "out of memory");
        }
    }
    if (d) closedir(d);
    if (s->n) qsort(s->b, s->n, sizeof *s->b, by_created);
    *out = s;
    return HERD_OK;
}

struct herd_file_store *herd_batch_service_files(struct herd_batch_service *s) {
    return s->files;
}
const struct herd_batch_service_params *herd_batch_service_params(const struct herd_batch_service *s) { return &s->p; }

/* ------------------------------------------------------------- the API */

static bool metadata_ok(json_t *md, struct herd_batch_api_error *e) {
    if (!md || json_is_null(md)) return true;
    if (!json_is_object(md) || json_object_size(md) > 16) {
        api_error(e, 400, "invalid_metadata", "metadata", "metadata: an object of at most 16 string pairs");
        return false;
    }
    const char *k;
    json_t *v;
    json_object_foreach(md, k, v) {
        if (strlen(k) > 64 || !json_is_string(v) || json_string_length(v) > 512) {
            api_error(e, 400, "invalid_metadata", "metadata",
                      "metadata: keys of at most 64 characters, string values of at most 512");
            return false;
        }
    }
    return true;
}

json_t *herd_batch_service_create(struct herd_batch_service *s, json_t *body, struct herd_batch_api_error *e) {
    const char *input = json_string_value(json_object_get(body, "input_file_id"));
    const char *endpoint = json_string_value(json_object_get(body, "endpoint"));
    const char *window = json_string_value(json_object_get(body, "completion_window"));
    json_t *md = json_object_get(body, "metadata");
    struct herd_file_info f;
    if (!input) {
        api_error(e, 400, "missing_required_parameter", "input_file_id", "input_file_id is required");
    } else if (!herd_file_id_valid(input)) {
        api_error(e, 400, "invalid_file_id", "input_file_id", "input_file_id: not a file id (file- and 24 hex digits)");
    } else if (!herd_file_store_get(s->files, input, &f)) {
        api_error(e, 404, "file_not_found", "input_file_id", "no such file: %s", input);
    } else if (strcmp(f.purpose, "batch") != 0) {
        api_error(e, 400, "invalid_file_purpose", "input_file_id", "%s was uploaded with purpose '%s', not 'batch'",
                  input, f.purpose);
    } else if (!endpoint ||
               (strcmp(endpoint, "/v1/chat/completions") != 0 && strcmp(endpoint, "/v1/completions") != 0)) {
        api_error(e, 400, "invalid_endpoint", "endpoint",
                  "endpoint: /v1/chat/completions or /v1/completions are supported");
    } else if (!window || strcmp(window, "24h") != 0) {
        api_error(e, 400, "invalid_completion_window", "completion_window", "completion_window: only '24h'");
    } else if (metadata_ok(md, e)) {
        struct batch b = {0};
        uint8_t r[12];
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
            api_error(e, 500, "server_error", NULL, "no random source for an id");
            return NULL;
        }
        memcpy(b.id, "batch_", 6);
        for (int i = 0; i < 12; i++) snprintf(b.id + 6 + 2 * i, 3, "%02x", r[i]);
        copy_str(b.input_file_id, sizeof b.input_file_id, input);
        copy_str(b.endpoint, sizeof b.endpoint, endpoint);
        b.status = ST_VALIDATING;
        b.final = ST_COMPLETED;
        b.t[T_CREATED] = time(NULL);
        b.t[T_EXPIRES] = b.t[T_CREATED] + (int64_t)s->p.window_s;
        b.metadata = json_is_object(md) ? json_deep_copy(md) : NULL;
        pthread_mutex_lock(&s->lock);
        const bool ok = push(s, &b);
        json_t *o = NULL;
        if (ok) {
            persist(s, &s->b[s->n - 1]);
            o = batch_json(&s->b[s->n - 1], false);
            pthread_cond_broadcast(&s->cond);
        }
        pthread_mutex_unlock(&s->lock);
        if (!ok) json_decref(b.metadata);
        if (!o) api_error(e, 500, "server_error", NULL, "out of memory");
        return o;
    }
    return NULL;
}

json_t *herd_batch_service_get(struct herd_batch_service *s, const char *id, struct herd_batch_api_error *e) {
    if (!herd_batch_id_valid(id)) {
        api_error(e, 400, "invalid_batch_id", NULL, "not a batch id (batch_ and 24 hex digits)");
        return NULL;
    }
    pthread_mutex_lock(&s->lock);
    const struct batch *b = find(s, id);
    json_t *o = b ? batch_json(b, false) : NULL;
    pthread_mutex_unlock(&s->lock);
    if (!b)
        api_error(e, 404, "not_found", NULL, "no such batch: %s", id);
    else if (!o)
        api_error(e, 500, "server_error", NULL, "out of memory");
    return o;
}

json_t *herd_batch_service_list(struct herd_batch_service *s, const char *after, uint32_t limit,
                                struct herd_batch_api_error *e) {
    json_t *data = json_array();
    pthread_mutex_lock(&s->lock);
    size_t i = s->n; /* newest first: from the end */
    if (after) {
        while (i > 0 && strcmp(s->b[i - 1].id, after) != 0) i--;
        if (i > 0) i--; /* past `after` itself */
    }
    bool has_more = false;
    for (; i > 0 && data; i--) {
        if (json_array_size(data) == limit) {
            has_more = true;
            break;
        }
        json_array_append_new(data, batch_json(&s->b[i - 1], false));
    }
    pthread_mutex_unlock(&s->lock);
    const size_t n = json_array_size(data);
    json_t *o = data ? json_pack("{s:s,s:o,s:O?,s:O?,s:b}", "object", "list", "data", data, "first_id",
                                 n ? json_object_get(json_array_get(data, 0), "id") : NULL, "last_id",
                                 n ? json_object_get(json_array_get(data, n - 1), "id") : NULL, "has_more", has_more)
                     : NULL;
    if (!o) api_error(e, 500, "server_error", NULL, "out of memory");
    return o;
}

json_t *herd_batch_service_cancel(struct herd_batch_service *s, const char *id, struct herd_batch_api_error *e) {
    if (!herd_batch_id_valid(id)) {
        api_error(e, 400, "invalid_batch_id", NULL, "not a batch id (batch_ and 24 hex digits)");
        return NULL;
    }
    pthread_mutex_lock(&s->lock);
    struct batch *b = find(s, id);
    json_t *o = NULL;
    if (!b) {
        api_error(e, 404, "not_found", NULL, "no such batch: %s", id);
    } else if (b->status != ST_VALIDATING && b->status != ST_IN_PROGRESS && b->status != ST_CANCELLING) {
        api_error(e, 400, "batch_not_cancellable", NULL,
                  "batch %s is %s: only a validating or in_progress batch can be cancelled", id,
                  status_names[b->status]);
    } else {
        if (b->status != ST_CANCELLING) {
            b->final = ST_CANCELLED;
            set_status(s, b, ST_CANCELLING, T_CANCELLING);
        }
        if (strcmp(s->running, id) == 0) {
            s->reason = STOP_CANCEL;
            atomic_store(&s->stop_run, 1);
        }
        o = batch_json(b, false);
        if (!o) api_error(e, 500, "server_error", NULL, "out of memory");
    }
    pthread_mutex_unlock(&s->lock);
    return o;
}

bool herd_batch_service_file_in_use(struct herd_batch_service *s, const char *file_id) {
    pthread_mutex_lock(&s->lock);
    bool used = false;
    for (size_t i = 0; i < s->n && !used; i++) {
        const struct batch *b = &s->b[i];
        used = strcmp(b->input_file_id, file_id) == 0 && (b->status == ST_VALIDATING || b->status == ST_IN_PROGRESS ||
                                                          b->status == ST_CANCELLING || b->status == ST_FINALIZING);
    }
    pthread_mutex_unlock(&s->lock);
    return used;
}

/* ------------------------------------------------------------- the work */

static void work_path(const struct herd_batch_service *s, const char *id, const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s%s%s", s->dir, id, name ? "/" : "", name ? name : "");
}

/* Validating: the input as a whole. Under the lock on entry and exit. */
static void validate(struct herd_batch_service *s, struct batch *b) {
    char id[BATCH_ID_LEN + 1], input[HERD_FILE_ID_LEN + 1];
    copy_str(id, sizeof id, b->id);
    copy_str(input, sizeof input, b->input_file_id);
    pthread_mutex_unlock(&s->lock);
    struct herd_file_info f;
    char path[4200], msg[700] = "";
    const char *code = NULL;
    uint64_t lines = 0;
    if (!herd_file_store_get(s->files, input, &f)) {
        code = "file_not_found";
        snprintf(msg, sizeof msg, "the input file %s is gone", input);
    } else if (f.bytes > s->p.max_file_bytes) {
        code = "file_too_large";
        snprintf(msg, sizeof msg, "the input file has %llu bytes; a batch takes at most %llu",
                 (unsigned long long)f.bytes, (unsigned long long)s->p.max_file_bytes);
    } else {
        herd_file_store_path(s->files, input, path, sizeof path);
        struct jsonl_input in;
        struct herd_error err = {0};
        if (jsonl_input_open(&in, path, &err) != HERD_OK) {
            code = err.code == HERD_E_FORMAT ? "invalid_file_format" : "file_unreadable";
            snprintf(msg, sizeof msg, "%s", err.msg);
        } else {
            struct herd_buf buf;
            herd_buf_init(&buf, SIZE_MAX);
            for (uint64_t k = 0; k < in.n_lines; k++) {
                if (in.lines[k].len > HERD_BATCH_DEFAULT_MAX_LINE) { /* the runner's error, counted */
                    lines++;
                    continue;
                }
                if (jsonl_input_read(&in, k, &buf, HERD_BATCH_DEFAULT_MAX_LINE, &err) == HERD_OK &&
                    !jsonl_blank((const char *)buf.data, buf.len))
                    lines++;
            }
            herd_buf_cleanup(&buf);
            jsonl_input_close(&in);
            if (!lines) {
                code = "empty_file";
                snprintf(msg, sizeof msg, "the input file has no requests");
            } else if (lines > s->p.max_requests) {
                code = "too_many_requests";
                snprintf(msg, sizeof msg, "the input file has %llu requests; a batch takes at most %llu",
                         (unsigned long long)lines, (unsigned long long)s->p.max_requests);
            }
        }
    }
    pthread_mutex_lock(&s->lock);
    b = find(s, id);
    if (!b || b->status != ST_VALIDATING) return; /* cancelled meanwhile */
    b->total = lines;
    if (code) {
        set_errors(b, code, msg, 0);
        herd_log(HERD_LOG_WARN, "batch", id, NULL, 0, "failed validation: %s", msg);
        set_status(s, b, ST_FAILED, T_FAILED);
        return;
    }
    set_status(s, b, ST_IN_PROGRESS, T_IN_PROGRESS);
}

struct run_ctx {
    struct herd_batch_service *s;
    struct herd_batch_params *bp;
    char id[BATCH_ID_LEN + 1];
    int64_t expires_at;
};

/* The runner's progress, about once a second, on the worker thread. */
static void on_progress(void *arg, const struct herd_batch_counts *c) {
    struct run_ctx *r = arg;
    struct herd_batch_service *s = r->s;
    pthread_mutex_lock(&s->lock);
    struct batch *b = find(s, r->id);
    if (b) {
        b->completed = c->skipped - c->skipped_failed + c->done;
        b->failed = c->skipped_failed + c->failed;
        if (b->errors && c->done + c->failed > 0) { /* writing works again */
            json_decref(b->errors);
            b->errors = NULL;
            persist(s, b);
        }
    }
    if (time(NULL) >= r->expires_at && !atomic_load(&s->stop_run)) {
        /* set here, on the runner's thread, before the stop it reads */
        r->bp->abandon_code = "batch_expired";
        r->bp->abandon_message = "the batch expired before this request ran";
        s->reason = STOP_EXPIRE;
        atomic_store(&s->stop_run, 1);
    }
    pthread_mutex_unlock(&s->lock);
}

/* In progress: the lines through herd_batch_run. Under the lock on entry
 * and exit. */
static void run(struct herd_batch_service *s, struct batch *b) {
    struct run_ctx r = {.s = s, .expires_at = b->t[T_EXPIRES]};
    copy_str(r.id, sizeof r.id, b->id);
    char endpoint[32], input[4200], dir[4300], output[4400], errors[4400];
    copy_str(endpoint, sizeof endpoint, b->endpoint);
    herd_file_store_path(s->files, b->input_file_id, input, sizeof input);
    work_path(s, b->id, NULL, dir, sizeof dir);
    work_path(s, b->id, "output.jsonl", output, sizeof output);
    work_path(s, b->id, "errors.jsonl", errors, sizeof errors);
    copy_str(s->running, sizeof s->running, b->id);
    atomic_store(&s->stop_run, 0);
    s->reason = STOP_NONE;
    struct herd_batch_params bp;
    herd_batch_default_params(&bp);
    bp.input = input;
    bp.output = output;
    bp.errors = errors;
    bp.max_inflight = s->p.max_inflight;
    bp.priority = HERD_PRIORITY_BACKGROUND;
    bp.limits = s->p.limits;
    bp.only_url = endpoint;
    bp.progress = on_progress;
    bp.progress_arg = &r;
    bp.stop = &s->stop_run;
    r.bp = &bp;
    if (time(NULL) >= r.expires_at) { /* expired while the server was down */
        bp.abandon_code = "batch_expired";
        bp.abandon_message = "the batch expired before this request ran";
        s->reason = STOP_EXPIRE;
        atomic_store(&s->stop_run, 1);
    }
    pthread_mutex_unlock(&s->lock);

    struct herd_error err = {0};
    struct herd_batch_counts c = {0};
    enum herd_status rc = HERD_OK;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        rc = herd_error_set(&err, HERD_E_IO, "%s: %s", dir, strerror(errno));
    else
        rc = herd_batch_run(s->e, &bp, &c, &err);

    pthread_mutex_lock(&s->lock);
    s->running[0] = 0;
    b = find(s, r.id);
    if (!b) return;
    /* HERD_E_UNAVAILABLE: stopped (our stop flag, or the scheduler draining
     * or failed), everything written whole; anything else stopped writing */
    const bool stopped = rc == HERD_E_UNAVAILABLE;
    if (b->status == ST_CANCELLING) return; /* finalized as cancelled next */
    if (rc == HERD_OK) {
        set_status(s, b, ST_FINALIZING, T_FINALIZING);
        return;
    }
    if (stopped && s->reason == STOP_EXPIRE) {
        b->final = ST_EXPIRED;
        set_status(s, b, ST_FINALIZING, T_FINALIZING);
        return;
    }
    b->retry_at = mono_s() + RETRY_S;
    if (stopped) return; /* shutting down, or the scheduler takes no work now: resumed later */
    /* a failed write (a full disk, a removed directory): kept in progress,
     * retried; the reason is in the object for the client to see */
    herd_log(HERD_LOG_ERROR, "batch", r.id, NULL, 0, "%s; retrying in %d s", err.msg, RETRY_S);
    set_errors(b, "output_write_failed", err.msg, 0);
    persist(s, b);
}

/* Finalizing (and a cancelled batch): the output and error files become
 * files of the store, under ids made from the batch's so that redoing this
 * after a crash finds them. Under the lock on entry and exit. */
static void finalize(struct herd_batch_service *s, struct batch *b) {
    char id[BATCH_ID_LEN + 1], dir[4300], paths[2][4400], ids[2][HERD_FILE_ID_LEN + 1], names[2][96];
    copy_str(id, sizeof id, b->id);
    const enum bstatus final = b->status == ST_CANCELLING ? ST_CANCELLED : b->final;
    pthread_mutex_unlock(&s->lock);
    work_path(s, id, NULL, dir, sizeof dir);
    const char *kinds[2] = {"output", "errors"};
    enum herd_status rc = HERD_OK;
    struct herd_error err = {0};
    for (int i = 0; i < 2 && rc == HERD_OK; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/%s.jsonl", dir, kinds[i]);
        char key[64];
        snprintf(key, sizeof key, "%s/%s", id, kinds[i]);
        herd_file_id_for(key, ids[i]);
        snprintf(names[i], sizeof names[i], "%s_%s.jsonl", id, i ? "error" : "output");
        struct stat st;
        if (herd_file_store_get(s->files, ids[i], NULL)) continue; /* moved before a crash */
        if (stat(paths[i], &st) != 0 || st.st_size == 0) {         /* nothing of this kind: a null id */
            ids[i][0] = 0;
            continue;
        }
        rc = herd_file_store_adopt(s->files, ids[i], paths[i], names[i], "batch_output", NULL, &err);
    }
    pthread_mutex_lock(&s->lock);
    b = find(s, id);
    if (!b) return;
    if (rc != HERD_OK) {
        herd_log(HERD_LOG_ERROR, "batch", id, NULL, 0, "finishing: %s; retrying in %d s", err.msg, RETRY_S);
        set_errors(b, "output_write_failed", err.msg, 0);
        b->retry_at = mono_s() + RETRY_S;
        return;
    }
    copy_str(b->output_file_id, sizeof b->output_file_id, ids[0]);
    copy_str(b->error_file_id, sizeof b->error_file_id, ids[1]);
    /* errors a finishing batch still shows are those of writes that failed
     * and then went through (validation errors end a batch as failed) */
    json_decref(b->errors);
    b->errors = NULL;
    const int t = final == ST_CANCELLED ? T_CANCELLED : final == ST_EXPIRED ? T_EXPIRED : T_COMPLETED;
    set_status(s, b, final, t);
    herd_log(HERD_LOG_INFO, "batch", id, NULL, 0, "%s: %llu answered, %llu failed", status_names[final],
             (unsigned long long)b->completed, (unsigned long long)b->failed);
    /* the run's leftovers (its state file) */
    char state[4500];
    snprintf(state, sizeof state, "%s/output.jsonl.state", dir);
    unlink(state);
    for (int i = 0; i < 2; i++) unlink(paths[i]); /* empty ones */
    rmdir(dir);
}

/* The next batch with work to do, oldest first; NULL: none now. */
static struct batch *next_batch(struct herd_batch_service *s, double now) {
    for (size_t i = 0; i < s->n; i++) {
        struct batch *b = &s->b[i];
        if (b->status != ST_VALIDATING && b->status != ST_IN_PROGRESS && b->status != ST_FINALIZING &&
            b->status != ST_CANCELLING)
            continue;
        if (b->retry_at > now) continue;
        return b;
    }
    return NULL;
}

static void *worker(void *arg) {
    struct herd_batch_service *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->shutting_down) {
        struct batch *b = next_batch(s, mono_s());
        if (!b) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1; /* retries come due */
            pthread_cond_timedwait(&s->cond, &s->lock, &ts);
            continue;
        }
        switch (b->status) {
        case ST_VALIDATING: validate(s, b); break;
        case ST_IN_PROGRESS: run(s, b); break;
        default: finalize(s, b); break; /* finalizing, cancelling */
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

enum herd_status herd_batch_service_start(struct herd_batch_service *s, struct herd_engine *e, struct herd_error *err) {
    s->e = e;
    if (pthread_create(&s->thread, NULL, worker, s) != 0)
        return herd_error_set(err, HERD_E_NOMEM, "cannot start the batch worker thread");
    s->started = true;
    return HERD_OK;
}

void herd_batch_service_close(struct herd_batch_service *s) {
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    s->shutting_down = true;
    if (s->running[0]) {
        s->reason = STOP_SHUTDOWN;
        atomic_store(&s->stop_run, 1);
    }
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (s->started) pthread_join(s->thread, NULL);
    free_batches(s);
    herd_file_store_close(s->files);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* The batch API's HTTP handlers (batch_api.h). Each runs on the server's
 * loop thread and answers at once; the service and the file store do the
 * work under their own locks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/batch_api.h"
#include "http/multipart.h"

/* Room for the multipart framing around an uploaded file. */
#define UPLOAD_FRAMING ((size_t)64 << 10)

static void respond_api_error(struct herd_http_request *r, const struct herd_batch_api_error *e) {
    herd_http_respond_error(r, e->status, e->status >= 500 ? "server_error" : "invalid_request_error",
                            e->param[0] ? e->param : NULL, e->code, "%s", e->message);
}

static void respond(struct herd_http_request *r, json_t *o, const struct herd_batch_api_error *e) {
    if (o)
        herd_http_respond_json(r, 200, o);
    else
        respond_api_error(r, e);
}

/* A limit query parameter: default when absent, 400 when out of [1, max]. */
static bool limit_param(struct herd_http_request *r, uint32_t def, uint32_t max, uint32_t *out) {
    char v[24];
    *out = def;
    if (!herd_http_request_query(r, "limit", v, sizeof v)) return true;
    char *end;
    const long n = strtol(v, &end, 10);
    if (*v && !*end && n >= 1 && n <= (long)max) {
        *out = (uint32_t)n;
        return true;
    }
    herd_http_respond_error(r, 400, "invalid_request_error", "limit", "invalid_limit", "limit: an integer from 1 to %u",
                            max);
    return false;
}

/* The id in a PREFIX route's rest ("ID" or "ID/action"): 400 when it is
 * not of valid's shape, or the action is not the one expected. */
static bool split_id(struct herd_http_request *r, bool (*valid)(const char *), const char *action, char *id,
                     size_t cap) {
    const char *rest = herd_http_request_path_rest(r);
    const char *slash = strchr(rest, '/');
    const size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
    const bool action_ok = action ? slash && strcmp(slash + 1, action) == 0 : !slash;
    if (n < cap) {
        memcpy(id, rest, n);
        id[n] = 0;
    }
    if (n >= cap || !valid(id)) {
        herd_http_respond_error(r, 400, "invalid_request_error", NULL, "invalid_id", "'%.*s' is not a %s id",
                                (int)(n < 64 ? n : 64), rest, valid == herd_file_id_valid ? "file" : "batch");
        return false;
    }
    if (!action_ok) {
        herd_http_respond_error(r, 404, "invalid_request_error", NULL, "not_found", "no route for %s %s",
                                herd_http_request_method(r), herd_http_request_path(r));
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- files */

static void files_upload(struct herd_http_request *r, json_t *body, void *app) {
    (void)body;
    struct herd_batch_service *svc = app;
    const struct herd_batch_service_params *p = herd_batch_service_params(svc);
    const char *ct = herd_http_request_header(r, "content-type");
    const char *boundary;
    size_t blen, len;
    if (!ct || !herd_multipart_boundary(ct, &boundary, &blen)) {
        herd_http_respond_error(r, 400, "invalid_request_error", NULL, "invalid_content_type",
                                "upload a file as multipart/form-data with the fields 'purpose' and 'file'");
        return;
    }
    const char *data = herd_http_request_body(r, &len);
    struct herd_multipart_part parts[8];
    size_t n;
    char why[160];
    if (!herd_multipart_parse(data, len, boundary, blen, parts, 8, &n, why, sizeof why)) {
        herd_http_respond_error(r, 400, "invalid_request_error", NULL, "invalid_multipart", "the upload: %s", why);
        return;
    }
    const struct herd_multipart_part *purpose = herd_multipart_find(parts, n, "purpose");
    const struct herd_multipart_part *file = herd_multipart_find(parts, n, "file");
    if (!purpose || purpose->len != 5 || memcmp(purpose->data, "batch", 5) != 0) {
        herd_http_respond_error(r, 400, "invalid_request_error", "purpose", "invalid_purpose",
                                "purpose: only 'batch' is supported");
        return;
    }
    if (!file) {
        herd_http_respond_error(r, 400, "invalid_request_error", "file", "missing_required_parameter",
                                "the upload has no 'file' part");
        return;
    }
    if (file->len > p->max_file_bytes) {
        herd_http_respond_error(r, 413, "invalid_request_error", "file", "file_too_large",
                                "the file has %zu bytes; at most %llu (--batch-max-file-mb)", file->len,
                                (unsigned long long)p->max_file_bytes);
        return;
    }
    /* the name is shown back, never used as a path: control bytes dropped */
    char name[256];
    size_t k = 0;
    for (size_t i = 0; file->filename && i < file->filename_len && k + 1 < sizeof name; i++)
        if ((unsigned char)file->filename[i] >= 0x20 && file->filename[i] != 0x7f) name[k++] = file->filename[i];
    name[k] = 0;
    if (!k) snprintf(name, sizeof name, "upload.jsonl");
    struct herd_file_info f;
    struct herd_error err = {0};
    if (herd_file_store_add(herd_batch_service_files(svc), name, "batch", file->data, file->len, &f, &err) != HERD_OK) {
        herd_http_respond_error(r, 507, "server_error", NULL, "storage_error", "the file was not stored: %s", err.msg);
        return;
    }
    herd_http_respond_json(r, 200, herd_file_json(&f));
}

static void files_list(struct herd_http_request *r, json_t *body, void *app) {
    (void)body;
    struct herd_batch_service *svc = app;
    char purpose[32], order[8] = "desc", after[64] = "";
    uint32_t limit;
    const bool by_purpose = herd_http_request_query(r, "purpose", purpose, sizeof purpose);
    if (!limit_param(r, 10000, 10000, &limit)) return;
    if (herd_http_request_query(r, "order", order, sizeof order) && strcmp(order, "asc") != 0 &&
        strcmp(order, "desc") != 0) {
        herd_http_respond_error(r, 400, "invalid_request_error", "order", "invalid_order", "order: asc or desc");
        return;
    }
    herd_http_request_query(r, "after", after, sizeof after);
    size_t n;
    struct herd_file_info *f = herd_file_store_list(herd_batch_service_files(svc), by_purpose ? purpose : NULL, &n);
    json_t *data = json_array();
    if (!f || !data) {
        free(f);
        json_decref(data);
        herd_http_respond_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    const bool desc = strcmp(order, "desc") == 0;
    bool started = !*after, has_more = false;
    for (size_t i = 0; i < n; i++) {
        const struct herd_file_info *x = &f[desc ? n - 1 - i : i];
        if (!started) {
            started = strcmp(x->id, after) == 0;
            continue;
        }
        if (json_array_size(data) == limit) {
            has_more = true;
            break;
        }
        json_array_append_new(data, herd_file_json(x));
    }
    free(f);
    const size_t m = json_array_size(data);
    herd_http_respond_json(r, 200,
                           json_pack("{s:s,s:o,s:O?,s:O?,s:b}", "object", "list", "data", data, "first_id",
                                     m ? json_object_get(json_array_get(data, 0), "id") : NULL, "last_id",
                                     m ? json_object_get(json_array_get(data, m - 1), "id") : NULL, "has_more",
                                     has_more));
}

static void files_get(struct herd_http_request *r, json_t *body, void *app) {
    (void)body;
    struct herd_batch_service *svc = app;
    const char *rest = herd_http_request_path_rest(r);
    const bool content = strchr(rest, '/') != NULL;
    char id[HERD_FILE_ID_LEN + 1];
    if (!split_id(r, herd_file_id_valid, content ? "content" : NULL, id, sizeof id)) return;
    struct herd_file_store *fs = herd_batch_service_files(svc);
    if (!content) {
        struct herd_file_info f;
        if (herd_file_store_get(fs, id, &f))
            herd_http_respond_json(r, 200, herd_file_json(&f));
        else
            herd_http_respond_error(r, 404, "invalid_request_error", NULL, "not_found", "no such file: %s", id);
        return;
    }
    uint64_t bytes = 0;
    const int fd = herd_file_store_open_content(fs, id, &bytes);
    if (fd < 0) {
        herd_http_respond_error(r, 404, "invalid_request_error", NULL, "not_found", "no such file: %s", id);
        return;
    }
    herd_http_respond_file(r, 200, "application/octet-stream", fd, (size_t)bytes, NULL);
}

static void files_delete(struct herd_http_request *r, json_t *body, void *app) {
    (void)body;
    struct herd_batch_service *svc = app;
    char id[HERD_FILE_ID_LEN + 1];
    if (!split_id(r, herd_file_id_valid, NULL, id, sizeof id)) return;
    if (herd_batch_service_file_in_use(svc, id)) {
        herd_http_respond_error(r, 409, "invalid_request_error", NULL, "file_in_use",
                                "%s is the input of a batch that has not ended: cancel it or wait", id);
        return;
    }
    struct herd_error err = {0};
    if (herd_file_store_delete(herd_batch_service_files(svc), id, &err) != HERD_OK) {
        herd_http_respond_error(r, 404, "invalid_request_error", NULL, "not_found", "no such file: %s", id);
        return;
    }
    herd_http_respond_json(r, 200, json_pack("{s:s,s:s,s:b}", "id", id, "object", "file", "deleted", 1));
}

/* -------------------------------------------------------------- batches */

static void batches_create(struct herd_http_request *r, json_t *body, void *app) {
    struct herd_batch_api_error e;
    json_t *o = herd_batch_service_create(app, body, &e);
    respond(r, o, &e);
}

static void batches_list(struct herd_http_request *r, json_t *body, void *app) {
    (void)body;
    char after[64];
    uint32_t limit;
    if (!limit_param(r, 20, 100, &limit)) return;
    const bool has_after = herd_http_request_query(r, "after", after, sizeof after);
    struct herd_batch_api_error e;
    respond(r, herd_batch_service_list(app, has_after ? after : NULL, limit, &e), &e);
}

static void batches_get(struct herd_http_request *r, json_t *body, void *app) {
    (void)body;
    char id[64];
    if (!split_id(r, herd_batch_id_valid, NULL, id, sizeof id)) return;
    struct herd_batch_api_error e;
    respond(r, herd_batch_service_get(app, id, &e), &e);
}

static void batches_cancel(struct herd_http_request *r, json_t *body, void *app) {
    (void)body;
    char id[64];
    if (!split_id(r, herd_batch_id_valid, "cancel", id, sizeof id)) return;
    struct herd_batch_api_error e;
    respond(r, herd_batch_service_cancel(app, id, &e), &e);
}

/* ------------------------------------------------------------- routes */

/* No --data-dir: where the files would go is the operator's choice. */
static void api_off(struct herd_http_request *r, json_t *body, void *app) {
    (void)body, (void)app;
    herd_http_respond_error(r, 404, "invalid_request_error", NULL, "batch_api_off",
                            "the files and batches API is off: start herd serve with --data-dir DIR");
}

static char off_marker; /* the routes' arg without a service (NULL would mean the server) */

enum {
    API = HERD_HTTP_ROUTE_NEEDS_READY | HERD_HTTP_ROUTE_ONLY_METHOD,
};

void herd_batch_api_routes(struct herd_batch_service *svc, struct herd_http_route out[HERD_BATCH_API_ROUTES]) {
    const struct herd_http_route routes[HERD_BATCH_API_ROUTES] = {
        {"POST", "/v1/files", API | HERD_HTTP_ROUTE_UPLOAD, files_upload, svc},
        {"GET", "/v1/files", API, files_list, svc},
        {"GET", "/v1/files/", API | HERD_HTTP_ROUTE_PREFIX, files_get, svc},
        {"DELETE", "/v1/files/", API | HERD_HTTP_ROUTE_PREFIX, files_delete, svc},
        {"POST", "/v1/batches", API | HERD_HTTP_ROUTE_JSON_BODY, batches_create, svc},
        {"GET", "/v1/batches", API, batches_list, svc},
        {"GET", "/v1/batches/", API | HERD_HTTP_ROUTE_PREFIX, batches_get, svc},
        {"POST", "/v1/batches/", API | HERD_HTTP_ROUTE_PREFIX, batches_cancel, svc},
    };
    memcpy(out, routes, sizeof routes);
    if (!svc)
        for (size_t i = 0; i < HERD_BATCH_API_ROUTES; i++) {
            out[i].handler = api_off;
            out[i].arg = &off_marker;
            out[i].flags &= ~(unsigned)(HERD_HTTP_ROUTE_UPLOAD | HERD_HTTP_ROUTE_JSON_BODY);
        }
}

size_t herd_batch_api_max_upload(const struct herd_batch_service *svc) {
    return svc ? (size_t)herd_batch_service_params(svc)->max_file_bytes + UPLOAD_FRAMING : 0;
}

/* herd_batch_merge: shard outputs and error files back into one output
 * and one error file, in input order, each input line exactly once. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch/batch.h"
#include "batch/jsonl_file.h"

/* Where each input line's result was found. */
struct merged {
    char *text; /* the result line, NULL: not yet */
    bool error;
    const char *part;
};

struct merge {
    struct jsonl_input in;
    struct merged *m; /* [n_lines] */
    char **ids;       /* [n_lines]: the line's custom_id, NULL if none */
    uint64_t *by_id;  /* lines with a custom_id, sorted by it (first line first) */
    uint64_t n_by_id;
    bool *blank; /* [n_lines] */
    const char *part;
    char dup[300]; /* a result found twice */
};

/* The input line a result belongs to: by herd's "line" for errors, else by
 * custom_id (the first line holding it). */
static int64_t find_line(struct merge *g, json_t *v) {
    json_t *line = json_object_get(v, "line");
    if (json_is_integer(line) && json_integer_value(line) >= 1 && (uint64_t)json_integer_value(line) <= g->in.n_lines)
        return json_integer_value(line) - 1;
    const char *cid = json_string_value(json_object_get(v, "custom_id"));
    if (!cid) return -1;
    /* the first line holding cid: the lowest index among equal ids */
    uint64_t lo = 0, hi = g->n_by_id;
    while (lo < hi) {
        const uint64_t mid = lo + (hi - lo) / 2;
        if (strcmp(g->ids[g->by_id[mid]], cid) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < g->n_by_id && strcmp(g->ids[g->by_id[lo]], cid) == 0 ? (int64_t)g->by_id[lo] : -1;
}

static int by_id_cmp(const void *a, const void *b, void *ids_arg) {
    char **ids = ids_arg;
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    const int c = strcmp(ids[x], ids[y]);
    return c ? c : (x > y) - (x < y);
}

static enum herd_status take_line(void *arg, char *text, size_t len) {
    struct merge *g = arg;
    json_t *v = json_loadb(text, len, 0, NULL);
    const int64_t k = v ? find_line(g, v) : -1;
    json_t *resp = json_object_get(v, "response");
    const bool error =
        !json_is_null(json_object_get(v, "error")) || json_integer_value(json_object_get(resp, "status_code")) != 200;
    json_decref(v);
    if (k < 0) {
        snprintf(g->dup, sizeof g->dup, "%s holds a line that matches no input line: %.120s", g->part, text);
        return HERD_E_NOT_FOUND;
    }
    if (g->m[k].text) {
        snprintf(g->dup, sizeof g->dup, "input line %lld has two results (in %s and %s)", (long long)k + 1,
                 g->m[k].part, g->part);
        return HERD_E_DUPLICATE;
    }
    if (!(g->m[k].text = strdup(text))) return HERD_E_NOMEM;
    g->m[k].error = error;
    g->m[k].part = g->part;
    return HERD_OK;
}

/* Writes path.tmp with the results of one kind, then renames it. */
static enum herd_status write_kind(struct merge *g, const char *path, bool errors, uint64_t *count,
                                   struct herd_error *err) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct jsonl_output o;
    enum herd_status rc = jsonl_output_open(&o, tmp, true, err);
    for (uint64_t k = 0; rc == HERD_OK && k < g->in.n_lines; k++) {
        if (!g->m[k].text || g->m[k].error != errors) continue;
        if (!jsonl_output_add(&o, g->m[k].text, strlen(g->m[k].text)))
            rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        (*count)++;
        if (rc == HERD_OK && o.pending.len > ((size_t)4 << 20)) rc = jsonl_output_flush(&o, err);
    }
    if (rc == HERD_OK) rc = jsonl_output_flush(&o, err);
    jsonl_output_close(&o);
    if (rc == HERD_OK && rename(tmp, path) != 0) rc = herd_error_set(err, HERD_E_IO, "%s: %s", path, strerror(errno));
    if (rc != HERD_OK) unlink(tmp);
    return rc;
}

enum herd_status herd_batch_merge(const char *input, const char *const *parts, size_t n_parts, const char *output,
                                  const char *errors, struct herd_batch_merge_counts *out, struct herd_error *err) {
    struct merge g = {0};
    struct herd_buf buf;
    herd_buf_init(&buf, SIZE_MAX);
    enum herd_status rc = jsonl_input_open(&g.in, input, err);
    if (rc != HERD_OK) goto out;
    g.m = calloc(g.in.n_lines ? g.in.n_lines : 1, sizeof *g.m);
    g.ids = calloc(g.in.n_lines ? g.in.n_lines : 1, sizeof *g.ids);
    g.by_id = calloc(g.in.n_lines ? g.in.n_lines : 1, sizeof *g.by_id);
    g.blank = calloc(g.in.n_lines ? g.in.n_lines : 1, sizeof *g.blank);
    if (!g.m || !g.ids || !g.by_id || !g.blank) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    uint64_t want = 0;
    for (uint64_t k = 0; k < g.in.n_lines; k++) {
        struct herd_error lerr;
        const enum herd_status r = jsonl_input_read(&g.in, k, &buf, HERD_BATCH_DEFAULT_MAX_LINE * 64, &lerr);
        if (r == HERD_E_OVERFLOW) {
            want++;
            continue;
        }
        if (r != HERD_OK) {
            rc = herd_error_set(err, r, "%s", lerr.msg);
            goto out;
        }
        if (jsonl_blank((const char *)buf.data, buf.len)) {
            g.blank[k] = true;
            continue;
        }
        want++;
        json_t *v = json_loadb((const char *)buf.data, buf.len, 0, NULL);
        const char *cid = json_string_value(json_object_get(v, "custom_id"));
        if (cid && !(g.ids[k] = strdup(cid))) rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        if (cid) g.by_id[g.n_by_id++] = k;
        json_decref(v);
        if (rc != HERD_OK) goto out;
    }
    qsort_r(g.by_id, g.n_by_id, sizeof *g.by_id, by_id_cmp, g.ids);
    for (size_t i = 0; i < n_parts; i++) {
        g.part = parts[i];
        rc = jsonl_each_line(parts[i], take_line, &g, err);
        if (rc == HERD_E_NOMEM)
            herd_error_set(err, rc, "out of memory");
        else if (rc != HERD_OK && g.dup[0])
            herd_error_set(err, rc, "%s", g.dup);
        if (rc != HERD_OK) goto out;
    }
    uint64_t have = 0, first_missing = 0;
    for (uint64_t k = 0; k < g.in.n_lines; k++) {
        if (g.m[k].text)
            have++;
        else if (!g.blank[k] && !first_missing)
            first_missing = k + 1;
    }
    if (have != want || first_missing) {
        rc = herd_error_set(err, HERD_E_NOT_FOUND,
                            "%llu of %llu input lines have a result; the first missing is line %llu%s%s%s: "
                            "a shard has not finished (rerun it) or a part was left out",
                            (unsigned long long)have, (unsigned long long)want, (unsigned long long)first_missing,
                            first_missing && g.ids[first_missing - 1] ? " (custom_id '" : "",
                            first_missing && g.ids[first_missing - 1] ? g.ids[first_missing - 1] : "",
                            first_missing && g.ids[first_missing - 1] ? "')" : "");
        goto out;
    }
    struct herd_batch_merge_counts c = {.lines = want};
    if ((rc = write_kind(&g, output, false, &c.answers, err)) != HERD_OK) goto out;
    if (errors && (rc = write_kind(&g, errors, true, &c.errors, err)) != HERD_OK) goto out;
    if (!errors) c.errors = want - c.answers;
    if (out) *out = c;
out:
    herd_buf_cleanup(&buf);
    if (g.m)
        for (uint64_t k = 0; k < g.in.n_lines; k++) free(g.m[k].text), free(g.ids[k]);
    free(g.m);
    free(g.ids);
    free(g.by_id);
    free(g.blank);
    jsonl_input_close(&g.in);
    return rc;
}

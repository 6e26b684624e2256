/* Importance matrices: collection during forward passes, and llama.cpp's
 * file format (described in imatrix.h). */
#include "convert/imatrix.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/mapped_file.h"

/* ------------------------------------------------------------ collection */

/* Entry index of (layer, role): the 7 block matrices per layer in role
 * order, then output.weight. */
static size_t entry_index(const struct herd_imatrix *im, uint32_t layer, enum herd_matrix_role role) {
    (void)im;
    return role == HERD_ROLE_OUTPUT ? SIZE_MAX : (size_t)layer * HERD_ROLE_OUTPUT + (size_t)role;
}

static bool add_entry(struct herd_imatrix *im, const char *name, uint64_t cols) {
    struct herd_imatrix_entry *e = &im->entries[im->n_entries];
    e->name = strdup(name);
    e->nval = (uint32_t)cols;
    e->sum = calloc(cols, sizeof *e->sum);
    if (!e->name || !e->sum) return false;
    im->n_entries++;
    return true;
}

struct herd_imatrix *herd_imatrix_create_for(const struct herd_model *m, bool with_output) {
    struct herd_imatrix *im = calloc(1, sizeof *im);
    if (!im) return NULL;
    const size_t n = (size_t)m->desc.n_layer * HERD_ROLE_OUTPUT + 1;
    im->entries = calloc(n, sizeof *im->entries);
    im->with_output = with_output;
    if (!im->entries) goto fail;
    for (uint32_t l = 0; l < m->desc.n_layer; l++) {
        const struct herd_layer *L = &m->layers[l];
        const struct herd_matrix *ws[HERD_ROLE_OUTPUT] = {&L->wq,     &L->wk,   &L->wv,    &L->wo,
                                                          &L->w_gate, &L->w_up, &L->w_down};
        for (int r = 0; r < HERD_ROLE_OUTPUT; r++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%u.%s.weight", l, herd_matrix_role_name((enum herd_matrix_role)r));
            if (!add_entry(im, name, ws[r]->cols)) goto fail;
        }
    }
    if (with_output && !add_entry(im, "output.weight", m->output.cols)) goto fail;
    return im;
fail:
    herd_imatrix_destroy(im);
    return NULL;
}

/* Fewer rows than this in one call are not counted, as in llama-imatrix. */
#define MIN_ROWS 16

void herd_imatrix_observe(void *ctx, uint32_t layer, enum herd_matrix_role role, const float *x, size_t x_stride,
                          size_t n_tokens) {
    struct herd_imatrix *im = ctx;
    if (n_tokens < MIN_ROWS) return;
    size_t i = entry_index(im, layer, role);
    if (i == SIZE_MAX) {
        if (!im->with_output) return;
        i = im->n_entries - 1;
    }
    struct herd_imatrix_entry *e = &im->entries[i];
    for (size_t t = 0; t < n_tokens; t++) {
        const float *row = x + t * x_stride;
        for (uint32_t j = 0; j < e->nval; j++) e->sum[j] += (double)row[j] * row[j];
    }
    e->rows += n_tokens;
    e->ncall++;
}

/* ------------------------------------------------------------ the file */

static bool put_i32(struct herd_buf *b, int32_t v) { return herd_buf_append_le(b, (uint32_t)v, 4); }

enum herd_status herd_imatrix_save(const struct herd_imatrix *im, const char *path, int32_t chunks, const char *dataset,
                                   struct herd_error *err) {
    enum herd_status rc = HERD_OK;
    struct herd_buf b;
    herd_buf_init(&b, SIZE_MAX);
    char *tmp = NULL;
    FILE *f = NULL;
    int32_t n = 0;
    for (size_t i = 0; i < im->n_entries; i++) n += im->entries[i].ncall > 0;
    bool ok = put_i32(&b, n);
    for (size_t i = 0; ok && i < im->n_entries; i++) {
        const struct herd_imatrix_entry *e = &im->entries[i];
        if (e->ncall == 0) continue;
        const size_t len = strlen(e->name);
        ok = put_i32(&b, (int32_t)len) && herd_buf_append(&b, e->name, len) && put_i32(&b, e->ncall) &&
             put_i32(&b, (int32_t)e->nval);
        for (uint32_t j = 0; ok && j < e->nval; j++) {
            /* the stored form: mean x ncall, in f32 as llama-imatrix computes it */
            const float v = (float)(e->sum[j] / (double)e->rows) * (float)e->ncall;
            uint32_t bits;
            memcpy(&bits, &v, 4);
            ok = herd_buf_append_le(&b, bits, 4);
        }
    }
    const size_t dlen = dataset ? strlen(dataset) : 0;
    ok = ok && put_i32(&b, chunks) && put_i32(&b, (int32_t)dlen) && herd_buf_append(&b, dataset ? dataset : "", dlen);
    if (!ok) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory building the importance matrix");
        goto out;
    }
    const size_t tn = strlen(path) + 32;
    tmp = malloc(tn);
    if (!tmp) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    snprintf(tmp, tn, "%s.tmp-%ld", path, (long)getpid());
    f = fopen(tmp, "wb");
    if (!f) {
        rc = herd_error_set(err, HERD_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    int failed = fwrite(b.data, 1, b.len, f) != b.len || fflush(f) != 0 || fsync(fileno(f)) != 0;
    int saved = errno;
    if (fclose(f) != 0 && !failed) failed = 1, saved = errno;
    f = NULL;
    if (failed) {
        unlink(tmp);
        rc = herd_error_set(err, HERD_E_IO, "%s: write failed: %s", path, strerror(saved));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        rc =
            herd_error_set(err, HERD_E_IO, "%s: cannot rename the finished file into place: %s", path, strerror(saved));
    }
out:
    herd_buf_cleanup(&b);
    free(tmp);
    return rc;
}

/* A bounds-checked reader over the mapped file. */
struct reader {
    const uint8_t *p;
    size_t size, at;
    const char *path;
};

static enum herd_status read_i32(struct reader *r, const char *what, int32_t *v, struct herd_error *err) {
    if (r->size - r->at < 4)
        return herd_error_set(err, HERD_E_TRUNCATED, "%s: file ends at offset %zu, reading %s", r->path, r->at, what);
    const uint8_t *q = r->p + r->at;
    *v = (int32_t)((uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24);
    r->at += 4;
    return HERD_OK;
}

static enum herd_status read_count(struct reader *r, const char *what, int32_t lo, int32_t hi, int32_t *v,
                                   struct herd_error *err) {
    enum herd_status rc = read_i32(r, what, v, err);
    if (rc != HERD_OK) return rc;
    if (*v < lo || *v > hi)
        return herd_error_set(err, HERD_E_FORMAT, "%s: %s is %d at offset %zu; expected %d..%d", r->path, what, *v,
                              r->at - 4, lo, hi);
    return HERD_OK;
}

static enum herd_status read_entry(struct reader *r, size_t i, struct herd_imatrix_entry *e, struct herd_error *err) {
    enum herd_status rc;
    int32_t len, ncall, nval;
    char what[64];
    snprintf(what, sizeof what, "entry %zu's name length", i);
    if ((rc = read_count(r, what, 1, HERD_IMATRIX_MAX_NAME, &len, err)) != HERD_OK) return rc;
    if (r->size - r->at < (size_t)len)
        return herd_error_set(err, HERD_E_TRUNCATED, "%s: file ends inside entry %zu's name (offset %zu)", r->path, i,
                              r->at);
    e->name = strndup((const char *)r->p + r->at, (size_t)len);
    if (!e->name) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    r->at += (size_t)len;
    snprintf(what, sizeof what, "the call count of '%.40s'", e->name);
    if ((rc = read_count(r, what, 0, INT32_MAX, &ncall, err)) != HERD_OK) return rc;
    snprintf(what, sizeof what, "the value count of '%.40s'", e->name);
    if ((rc = read_count(r, what, 1, HERD_IMATRIX_MAX_VALUES, &nval, err)) != HERD_OK) return rc;
    if ((r->size - r->at) / 4 < (size_t)nval)
        return herd_error_set(err, HERD_E_TRUNCATED, "%s: file ends inside the %d values of '%s' (offset %zu)", r->path,
                              nval, e->name, r->at);
    e->ncall = ncall;
    e->nval = (uint32_t)nval;
    e->values = malloc((size_t)nval * sizeof *e->values);
    if (!e->values) return herd_error_set(err, HERD_E_NOMEM, "out of memory for %d values", nval);
    memcpy(e->values, r->p + r->at, (size_t)nval * 4);
    r->at += (size_t)nval * 4;
    /* the mean, as llama-quantize divides: each value / ncall in f32 */
    if (ncall > 0)
        for (int32_t j = 0; j < nval; j++) e->values[j] /= (float)ncall;
    return HERD_OK;
}

enum herd_status herd_imatrix_load(const char *path, struct herd_imatrix **out, struct herd_error *err) {
    *out = NULL;
    struct herd_mapped_file map = {0};
    struct herd_imatrix *im = NULL;
    enum herd_status rc = herd_mapped_file_init(&map, path, err);
    if (rc != HERD_OK) return rc;
    struct reader r = {map.data, map.size, 0, path};
    int32_t n;
    if ((rc = read_count(&r, "the entry count", 1, HERD_IMATRIX_MAX_ENTRIES, &n, err)) != HERD_OK) goto out;
    im = calloc(1, sizeof *im);
    if (im) im->entries = calloc((size_t)n, sizeof *im->entries);
    if (!im || !im->entries) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory for %d entries", n);
        goto out;
    }
    for (int32_t i = 0; i < n; i++) {
        rc = read_entry(&r, (size_t)i, &im->entries[i], err);
        im->n_entries += im->entries[i].name != NULL;
        if (rc != HERD_OK) goto out;
        for (int32_t k = 0; k < i; k++)
            if (strcmp(im->entries[k].name, im->entries[i].name) == 0) {
                rc =
                    herd_error_set(err, HERD_E_DUPLICATE, "%s: tensor '%s' has two entries", path, im->entries[i].name);
                goto out;
            }
    }
    if (r.at < r.size) { /* the trailer: chunks and the dataset's name */
        int32_t len;
        if ((rc = read_count(&r, "the chunk count", 0, INT32_MAX, &im->chunks, err)) != HERD_OK) goto out;
        if ((rc = read_count(&r, "the dataset name length", 0, HERD_IMATRIX_MAX_NAME, &len, err)) != HERD_OK) goto out;
        if (r.size - r.at < (size_t)len) {
            rc = herd_error_set(err, HERD_E_TRUNCATED, "%s: file ends inside the dataset name", path);
            goto out;
        }
        im->dataset = strndup((const char *)r.p + r.at, (size_t)len);
        if (!im->dataset) {
            rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
            goto out;
        }
    }
    *out = im;
    im = NULL;
out:
    herd_imatrix_destroy(im);
    herd_mapped_file_cleanup(&map);
    return rc;
}

const struct herd_imatrix_entry *herd_imatrix_find(const struct herd_imatrix *im, const char *name) {
    for (size_t i = 0; i < im->n_entries; i++)
        if (strcmp(im->entries[i].name, name) == 0) return &im->entries[i];
    return NULL;
}

void herd_imatrix_destroy(struct herd_imatrix *im) {
    if (!im) return;
    for (size_t i = 0; i < im->n_entries; i++) {
        free(im->entries[i].name);
        free(im->entries[i].sum);
        free(im->entries[i].values);
    }
    free(im->entries);
    free(im->dataset);
    free(im);
}

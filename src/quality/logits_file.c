/* llama-perplexity's log-probability file (logits_file.h): written through
 * a temporary file and a rename, read from a mapping after checking every
 * count against the file's size. herd runs on little-endian x86-64, the
 * byte order of the file, so values are written and read as they lie. */
#include "quality/logits_file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quality/perplexity.h"

static const char MAGIC[8] = {'_', 'l', 'o', 'g', 'i', 't', 's', '_'};

/* Bounds on a header's counts: far above any model or run (the largest
 * published vocabularies are ~262k; a chunk is a context window), low
 * enough that the products below cannot overflow 64 bits. */
#define LOGITS_MAX_CTX   (1u << 24)
#define LOGITS_MAX_VOCAB (1 << 24)
#define LOGITS_MAX_CHUNK (1 << 24)

/* ---------------------------------------------------------------- writing */

static void writer_free(struct herd_logits_writer *w) {
    free(w->path);
    free(w->tmp_path);
    w->path = w->tmp_path = NULL;
    w->f = NULL;
}

enum herd_status herd_logits_writer_create(struct herd_logits_writer *w, const char *path, uint32_t n_ctx,
                                           int32_t n_vocab, int32_t n_chunk, const int32_t *tokens,
                                           struct herd_error *err) {
    memset(w, 0, sizeof *w);
    const size_t n = strlen(path) + 32;
    w->path = strdup(path);
    w->tmp_path = malloc(n);
    if (!w->path || !w->tmp_path) {
        writer_free(w);
        return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    }
    snprintf(w->tmp_path, n, "%s.tmp-%ld", path, (long)getpid());
    if (!(w->f = fopen(w->tmp_path, "wb"))) {
        enum herd_status rc = herd_error_set(err, HERD_E_IO, "%s: cannot create: %s", w->tmp_path, strerror(errno));
        writer_free(w);
        return rc;
    }
    const size_t n_tokens = (size_t)n_chunk * n_ctx;
    if (fwrite(MAGIC, 1, sizeof MAGIC, w->f) != sizeof MAGIC || fwrite(&n_ctx, 4, 1, w->f) != 1 ||
        fwrite(&n_vocab, 4, 1, w->f) != 1 || fwrite(&n_chunk, 4, 1, w->f) != 1 ||
        fwrite(tokens, sizeof *tokens, n_tokens, w->f) != n_tokens) {
        enum herd_status rc = herd_error_set(err, HERD_E_IO, "%s: write failed: %s", path, strerror(errno));
        herd_logits_writer_abort(w);
        return rc;
    }
    return HERD_OK;
}

enum herd_status herd_logits_writer_append(struct herd_logits_writer *w, const uint16_t *rows, size_t n,
                                           struct herd_error *err) {
    if (fwrite(rows, sizeof *rows, n, w->f) != n)
        return herd_error_set(err, HERD_E_IO, "%s: write failed: %s", w->path, strerror(errno));
    return HERD_OK;
}

enum herd_status herd_logits_writer_finish(struct herd_logits_writer *w, struct herd_error *err) {
    int failed = fflush(w->f) != 0 || fsync(fileno(w->f)) != 0;
    int saved = errno;
    if (fclose(w->f) != 0 && !failed) failed = 1, saved = errno;
    w->f = NULL;
    enum herd_status rc = HERD_OK;
    if (failed) {
        rc = herd_error_set(err, HERD_E_IO, "%s: write failed: %s", w->path, strerror(saved));
        unlink(w->tmp_path);
    } else if (rename(w->tmp_path, w->path) != 0) {
        rc = herd_error_set(err, HERD_E_IO, "%s: cannot rename the finished file into place: %s", w->path,
                            strerror(errno));
        unlink(w->tmp_path);
    }
    writer_free(w);
    return rc;
}

void herd_logits_writer_abort(struct herd_logits_writer *w) {
    if (w->f) fclose(w->f);
    if (w->tmp_path) unlink(w->tmp_path);
    writer_free(w);
}

/* ---------------------------------------------------------------- reading */

enum herd_status herd_logits_file_open(struct herd_logits_file *lf, const char *path, struct herd_error *err) {
    memset(lf, 0, sizeof *lf);
    enum herd_status rc = herd_mapped_file_init(&lf->map, path, err);
    if (rc != HERD_OK) return rc;
    const uint8_t *p = lf->map.data;
    const size_t size = lf->map.size;
    const size_t head = sizeof MAGIC + 12;
    if (size < head || memcmp(p, MAGIC, sizeof MAGIC) != 0) {
        rc = herd_error_set(err, HERD_E_INVALID,
                            "%s: not a log-probability file (no \"_logits_\" header; write one with herd perplexity "
                            "--kl-divergence-base or llama-perplexity --kl-divergence-base)",
                            path);
        goto fail;
    }
    memcpy(&lf->n_ctx, p + 8, 4);
    memcpy(&lf->n_vocab, p + 12, 4);
    memcpy(&lf->n_chunk, p + 16, 4);
    if (lf->n_ctx < 3 || lf->n_ctx > LOGITS_MAX_CTX || lf->n_vocab < 1 || lf->n_vocab > LOGITS_MAX_VOCAB ||
        lf->n_chunk < 1 || lf->n_chunk > LOGITS_MAX_CHUNK) {
        rc = herd_error_set(err, HERD_E_INVALID, "%s: header out of range (n_ctx %u, n_vocab %d, n_chunk %d)", path,
                            lf->n_ctx, lf->n_vocab, lf->n_chunk);
        goto fail;
    }
    const uint64_t tokens_bytes = (uint64_t)lf->n_chunk * lf->n_ctx * 4;
    const uint64_t chunk_bytes =
        (uint64_t)herd_logits_file_rows(lf->n_ctx) * herd_ppl_packed_row_len((uint32_t)lf->n_vocab) * 2;
    const uint64_t want = head + tokens_bytes + chunk_bytes * (uint64_t)lf->n_chunk;
    if (size != want) {
        const uint64_t whole = size > head + tokens_bytes ? (size - head - tokens_bytes) / chunk_bytes : 0;
        rc = herd_error_set(err, HERD_E_INVALID,
                            "%s: %zu bytes, but its header (n_ctx %u, n_vocab %d, %d chunks) needs %llu%s "
                            "(%llu whole chunks present)",
                            path, size, lf->n_ctx, lf->n_vocab, lf->n_chunk, (unsigned long long)want,
                            size < want ? ": the file is truncated" : ": trailing bytes", (unsigned long long)whole);
        goto fail;
    }
    lf->tokens = (const int32_t *)(const void *)(p + head);
    lf->rows = (const uint16_t *)(const void *)(p + head + tokens_bytes);
    return HERD_OK;
fail:
    herd_logits_file_cleanup(lf);
    return rc;
}

const uint16_t *herd_logits_file_row(const struct herd_logits_file *lf, uint32_t c, uint32_t i) {
    const size_t per = herd_logits_file_rows(lf->n_ctx);
    return lf->rows + ((size_t)c * per + i) * herd_ppl_packed_row_len((uint32_t)lf->n_vocab);
}

void herd_logits_file_cleanup(struct herd_logits_file *lf) {
    herd_mapped_file_cleanup(&lf->map);
    memset(lf, 0, sizeof *lf);
}

/* Whole-line JSONL input and output (see jsonl_file.h for the rules). */
#include "batch/jsonl_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* Bytes read at a time while indexing: large enough that a 200 MB input
 * is a few hundred reads. */
#define SCAN_CHUNK ((size_t)1 << 20)
/* A NUL in this many first bytes marks a binary file. */
#define TEXT_PROBE ((size_t)64 << 10)

static bool index_line(struct jsonl_input *in, uint64_t *cap, off_t start, uint64_t len) {
    if (in->n_lines == *cap) {
        const uint64_t ncap = *cap ? *cap * 2 : 1024;
        struct jsonl_line *nl = realloc(in->lines, ncap * sizeof *nl);
        if (!nl) return false;
        in->lines = nl;
        *cap = ncap;
    }
    in->lines[in->n_lines++] = (struct jsonl_line){start, len};
    return true;
}

enum herd_status jsonl_input_open(struct jsonl_input *in, const char *path, struct herd_error *err) {
    memset(in, 0, sizeof *in);
    in->path = path;
    in->f = fopen(path, "rb");
    if (!in->f) return herd_error_set(err, HERD_E_IO, "%s: %s", path, strerror(errno));
    char *chunk = malloc(SCAN_CHUNK);
    XXH3_state_t *h = XXH3_createState();
    enum herd_status rc = HERD_OK;
    if (!chunk || !h) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    XXH3_64bits_reset(h);
    uint64_t cap = 0, pos = 0;
    off_t start = 0;
    char prev = 0; /* the byte before this chunk */
    size_t got;
    while ((got = fread(chunk, 1, SCAN_CHUNK, in->f)) > 0) {
        if (pos < TEXT_PROBE && memchr(chunk, 0, got < TEXT_PROBE - pos ? got : TEXT_PROBE - pos)) {
            rc = herd_error_set(err, HERD_E_FORMAT, "%s: not a JSONL text file (it holds NUL bytes)", path);
            goto out;
        }
        XXH3_64bits_update(h, chunk, got);
        for (char *p = chunk, *end = chunk + got; p < end;) {
            char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) break;
            const off_t at = (off_t)(pos + (uint64_t)(nl - chunk));
            uint64_t len = (uint64_t)(at - start);
            /* a CR before the newline is not part of the line */
            if (len && (nl > chunk ? nl[-1] : prev) == '\r') len--;
            if (!index_line(in, &cap, start, len)) {
                rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
                goto out;
            }
            start = at + 1;
            p = nl + 1;
        }
        prev = chunk[got - 1];
        pos += got;
    }
    if (ferror(in->f)) {
        rc = herd_error_set(err, HERD_E_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    /* a last line without its newline is still a line */
    if ((uint64_t)start < pos && !index_line(in, &cap, start, pos - (uint64_t)start)) {
        rc = herd_error_set(err, HERD_E_NOMEM, "out of memory");
        goto out;
    }
    in->size = pos;
    in->xxh3 = XXH3_64bits_digest(h);
out:
    free(chunk);
    if (h) XXH3_freeState(h);
    if (rc != HERD_OK) jsonl_input_close(in);
    return rc;
}

void jsonl_input_close(struct jsonl_input *in) {
    if (in->f) fclose(in->f);
    free(in->lines);
    in->f = NULL;
    in->lines = NULL;
    in->n_lines = 0;
}

enum herd_status jsonl_input_read(struct jsonl_input *in, uint64_t k, struct herd_buf *buf, size_t max,
                                  struct herd_error *err) {
    buf->len = 0;
    const struct jsonl_line *l = &in->lines[k];
    if (l->len > max)
        return herd_error_set(err, HERD_E_OVERFLOW, "the line is %llu bytes, over the %zu-byte limit",
                              (unsigned long long)l->len, max);
    if (buf->cap < l->len + 1) {
        uint8_t *nd = realloc(buf->data, l->len + 1);
        if (!nd) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
        buf->data = nd;
        buf->cap = l->len + 1;
    }
    if (pread(fileno(in->f), buf->data, l->len, l->offset) != (ssize_t)l->len)
        return herd_error_set(err, HERD_E_IO, "%s: reading line %llu: %s", in->path, (unsigned long long)k + 1,
                              strerror(errno ? errno : EIO));
    buf->len = l->len;
    buf->data[buf->len] = 0;
    return HERD_OK;
}

bool jsonl_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return false;
    return true;
}

/* ------------------------------------------------------------ output */

/* The length of path's whole lines: up to and including its last newline. */
static enum herd_status whole_length(int fd, const char *path, off_t *out, struct herd_error *err) {
    struct stat st;
    if (fstat(fd, &st) != 0) return herd_error_set(err, HERD_E_IO, "%s: %s", path, strerror(errno));
    off_t end = st.st_size;
    char tail[4096];
    while (end > 0) {
        const size_t n = end < (off_t)sizeof tail ? (size_t)end : sizeof tail;
        if (pread(fd, tail, n, end - (off_t)n) != (ssize_t)n)
            return herd_error_set(err, HERD_E_IO, "%s: %s", path, strerror(errno ? errno : EIO));
        const char *nl = memrchr(tail, '\n', n);
        if (nl) {
            end = end - (off_t)n + (off_t)(nl - tail) + 1;
            break;
        }
        end -= (off_t)n;
    }
    *out = end;
    return HERD_OK;
}

enum herd_status jsonl_output_open(struct jsonl_output *o, const char *path, bool truncate, struct herd_error *err) {
    memset(o, 0, sizeof *o);
    o->fd = -1;
    if (strlen(path) >= sizeof o->path) return herd_error_set(err, HERD_E_INVALID, "%s: path too long", path);
    strcpy(o->path, path);
    herd_buf_init(&o->pending, SIZE_MAX);
    struct stat st;
    /* resuming reads the file back and cuts torn tails: a device or a pipe
     * cannot be either (and a state file beside /dev/null would be odd) */
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return herd_error_set(err, HERD_E_INVALID, "%s: not a regular file (outputs are appended and resumed)", path);
    o->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0644);
    if (o->fd < 0) return herd_error_set(err, HERD_E_IO, "%s: %s", path, strerror(errno));
    enum herd_status rc = whole_length(o->fd, path, &o->committed, err);
    if (rc != HERD_OK) return rc;
    if (fstat(o->fd, &st) == 0 && st.st_size != o->committed) {
        /* a writer killed mid-line: its torn line goes, it is redone */
        if (ftruncate(o->fd, o->committed) != 0)
            return herd_error_set(err, HERD_E_IO, "%s: cutting a torn last line: %s", path, strerror(errno));
    }
    return HERD_OK;
}

void jsonl_output_close(struct jsonl_output *o) {
    if (o->fd >= 0) close(o->fd);
    o->fd = -1;
    herd_buf_cleanup(&o->pending);
}

bool jsonl_output_add(struct jsonl_output *o, const char *line, size_t len) {
    const size_t before = o->pending.len;
    if (!herd_buf_append(&o->pending, line, len) || !herd_buf_append(&o->pending, "\n", 1)) {
        o->pending.len = before;
        return false;
    }
    return true;
}

enum herd_status jsonl_output_flush(struct jsonl_output *o, struct herd_error *err) {
    struct stat st;
    if (fstat(o->fd, &st) != 0) return herd_error_set(err, HERD_E_IO, "%s: %s", o->path, strerror(errno));
    if (st.st_nlink == 0)
        return herd_error_set(err, HERD_E_IO,
                              "%s: the file was removed (or its directory): nothing more is written there", o->path);
    size_t done = 0;
    while (done < o->pending.len) {
        const ssize_t w = pwrite(o->fd, o->pending.data + done, o->pending.len - done, o->committed + (off_t)done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            const int e = w < 0 ? errno : ENOSPC;
            /* the whole lines that fitted stay (synced), the torn one goes */
            const uint8_t *nl = done ? memrchr(o->pending.data, '\n', done) : NULL;
            const size_t keep = nl ? (size_t)(nl - o->pending.data) + 1 : 0;
            if (ftruncate(o->fd, o->committed + (off_t)keep) == 0 && keep && fdatasync(o->fd) == 0) {
                o->committed += (off_t)keep;
                memmove(o->pending.data, o->pending.data + keep, o->pending.len - keep);
                o->pending.len -= keep;
            }
            return herd_error_set(err, HERD_E_IO, "%s: %s", o->path, strerror(e));
        }
        done += (size_t)w;
    }
    if (done && fdatasync(o->fd) != 0) {
        const int e = errno;
        if (ftruncate(o->fd, o->committed) != 0) { /* the error below says enough */
        }
        return herd_error_set(err, HERD_E_IO, "%s: sync: %s", o->path, strerror(e));
    }
    o->committed += (off_t)done;
    o->pending.len = 0;
    return HERD_OK;
}

enum herd_status jsonl_each_line(const char *path, enum herd_status (*fn)(void *arg, char *line, size_t len), void *arg,
                                 struct herd_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? HERD_OK : herd_error_set(err, HERD_E_IO, "%s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    enum herd_status rc = HERD_OK;
    while (rc == HERD_OK && (n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n') break; /* a torn tail: not a line yet */
        line[--n] = 0;
        if (n && line[n - 1] == '\r') line[--n] = 0;
        if (!jsonl_blank(line, (size_t)n)) rc = fn(arg, line, (size_t)n);
    }
    if (rc == HERD_OK && ferror(f)) rc = herd_error_set(err, HERD_E_IO, "%s: %s", path, strerror(errno));
    free(line);
    fclose(f);
    return rc;
}

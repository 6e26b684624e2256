/* The batch API's file store (file_store.h): an index in memory, loaded
 * from DIR/files/ID.json at open, and one file per id on disk. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/log.h"
#include "batch/file_store.h"

struct herd_file_store {
    char dir[4096]; /* DIR/files */
    pthread_mutex_t lock;
    struct herd_file_info *f; /* [n], in creation order */
    size_t n, cap;
};

/* ------------------------------------------------------------- helpers */

bool herd_file_id_valid(const char *id) {
    if (!id || strncmp(id, "file-", 5) != 0 || strlen(id) != HERD_FILE_ID_LEN) return false;
    for (const char *p = id + 5; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
    return true;
}

static void hex_id(const uint8_t bytes[12], char out[HERD_FILE_ID_LEN + 1]) {
    memcpy(out, "file-", 5);
    for (int i = 0; i < 12; i++) snprintf(out + 5 + 2 * i, 3, "%02x", bytes[i]);
}

static void random_id(char out[HERD_FILE_ID_LEN + 1]) {
    uint8_t b[12];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) { /* no entropy source: time and a counter */
        static unsigned seq;
        const uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32), h = XXH3_64bits_withSeed(&seq, 4, t);
        seq++;
        memcpy(b, &h, 8);
        memcpy(b + 8, &t, 4);
    }
    hex_id(b, out);
}

void herd_file_id_for(const char *name, char out[HERD_FILE_ID_LEN + 1]) {
    const XXH128_hash_t h = XXH3_128bits(name, strlen(name));
    uint8_t b[16];
    memcpy(b, &h.low64, 8);
    memcpy(b + 8, &h.high64, 8);
    hex_id(b, out);
}

static void path_of(const struct herd_file_store *s, const char *id, const char *suffix, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s%s", s->dir, id, suffix);
}

void herd_file_store_path(const struct herd_file_store *s, const char *id, char *buf, size_t cap) {
    path_of(s, id, "", buf, cap);
}

static enum herd_status sync_dir(const char *path, struct herd_error *err) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    int fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return herd_error_set(err, HERD_E_IO, "%s: %s", dir, strerror(errno));
    const int rc = fsync(fd);
    close(fd);
    return rc == 0 ? HERD_OK : herd_error_set(err, HERD_E_IO, "%s: fsync: %s", dir, strerror(errno));
}

enum herd_status herd_write_file_atomic(const char *path, const void *data, size_t len, struct herd_error *err) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return herd_error_set(err, HERD_E_IO, "%s: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            const int saved = w < 0 ? errno : ENOSPC;
            close(fd);
            unlink(tmp);
            return herd_error_set(err, HERD_E_IO, "%s: %s", path, strerror(saved));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        const int saved = errno;
        close(fd);
        unlink(tmp);
        return herd_error_set(err, HERD_E_IO, "%s: fsync: %s", path, strerror(saved));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        const int saved = errno;
        unlink(tmp);
        return herd_error_set(err, HERD_E_IO, "%s: rename: %s", path, strerror(saved));
    }
    return sync_dir(path, err);
}

json_t *herd_file_json(const struct herd_file_info *f) {
    return json_pack("{s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:n}", "id", f->id, "object", "file", "bytes", (json_int_t)f->bytes,
                     "created_at", (json_int_t)f->created_at, "filename", f->filename, "purpose", f->purpose, "status",
                     "processed", "status_details");
}

static enum herd_status write_meta(struct herd_file_store *s, const struct herd_file_info *f, struct herd_error *err) {
    json_t *j = herd_file_json(f);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    char path[4200];
    path_of(s, f->id, ".json", path, sizeof path);
    enum herd_status rc = herd_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

static bool push(struct herd_file_store *s, const struct herd_file_info *f) {
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 64;
        struct herd_file_info *nf = realloc(s->f, ncap * sizeof *nf);
        if (!nf) return false;
        s->f = nf;
        s->cap = ncap;
    }
    s->f[s->n++] = *f;
    return true;
}

static ssize_t find(const struct herd_file_store *s, const char *id) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->f[i].id, id) == 0) return (ssize_t)i;
    return -1;
}

/* ---------------------------------------------------------------- open */

static void copy_str(char *dst, size_t cap, const char *src) { snprintf(dst, cap, "%s", src ? src : ""); }

/* Reads ID.json; false (and the entry skipped, with a warning) when it is
 * not a file object for a file that is there. */
static bool load_meta(struct herd_file_store *s, const char *id, struct herd_file_info *f) {
    char path[4200];
    path_of(s, id, ".json", path, sizeof path);
    json_t *j = json_load_file(path, 0, NULL);
    const char *filename = json_string_value(json_object_get(j, "filename"));
    const char *purpose = json_string_value(json_object_get(j, "purpose"));
    json_t *bytes = json_object_get(j, "bytes"), *created = json_object_get(j, "created_at");
    const bool ok =
        filename && purpose && json_is_integer(bytes) && json_is_integer(created) &&
        strcmp(json_string_value(json_object_get(j, "id")) ? json_string_value(json_object_get(j, "id")) : "", id) == 0;
    if (ok) {
        memset(f, 0, sizeof *f);
        copy_str(f->id, sizeof f->id, id);
        copy_str(f->filename, sizeof f->filename, filename);
        copy_str(f->purpose, sizeof f->purpose, purpose);
        f->bytes = (uint64_t)json_integer_value(bytes);
        f->created_at = json_integer_value(created);
    }
    json_decref(j);
    struct stat st;
    path_of(s, id, "", path, sizeof path);
    if (ok && stat(path, &st) == 0 && (uint64_t)st.st_size == f->bytes) return true;
    herd_log(HERD_LOG_WARN, "files", NULL, NULL, 0, "%s/%s.json: not a whole file record; ignored", s->dir, id);
    return false;
}

static int by_created(const void *a, const void *b) {
    const struct herd_file_info *x = a, *y = b;
    if (x->created_at != y->created_at) return x->created_at < y->created_at ? -1 : 1;
    return strcmp(x->id, y->id);
}

enum herd_status herd_file_store_open(const char *dir, struct herd_file_store **out, struct herd_error *err) {
    *out = NULL;
    struct herd_file_store *s = calloc(1, sizeof *s);
    if (!s) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    snprintf(s->dir, sizeof s->dir, "%s/files", dir);
    if (mkdir(s->dir, 0755) != 0 && errno != EEXIST) {
        herd_error_set(err, HERD_E_IO, "%s: %s", s->dir, strerror(errno));
        free(s);
        return HERD_E_IO;
    }
    DIR *d = opendir(s->dir);
    if (!d) {
        herd_error_set(err, HERD_E_IO, "%s: %s", s->dir, strerror(errno));
        free(s);
        return HERD_E_IO;
    }
    pthread_mutex_init(&s->lock, NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *name = e->d_name;
        const size_t len = strlen(name);
        char id[HERD_FILE_ID_LEN + 1];
        if (len == HERD_FILE_ID_LEN + 5 && strcmp(name + HERD_FILE_ID_LEN, ".json") == 0) {
            memcpy(id, name, HERD_FILE_ID_LEN); /* the name less ".json" */
            id[HERD_FILE_ID_LEN] = 0;
            struct herd_file_info f;
            if (herd_file_id_valid(id) && load_meta(s, id, &f) && !push(s, &f)) {
                closedir(d);
                herd_file_store_close(s);
                return herd_error_set(err, HERD_E_NOMEM, "out of memory");
            }
        } else if (len > 4 && strcmp(name + len - 4, ".tmp") == 0) {
            char path[4400];
            snprintf(path, sizeof path, "%s/%s", s->dir, name); /* a write a crash cut short */
            unlink(path);
        }
    }
    closedir(d);
    /* bytes without a record: an upload that did not finish */
    d = opendir(s->dir);
    while (d && (e = readdir(d)))
        if (herd_file_id_valid(e->d_name) && find(s, e->d_name) < 0) {
            char path[4400];
            snprintf(path, sizeof path, "%s/%s", s->dir, e->d_name);
            unlink(path);
        }
    if (d) closedir(d);
    if (s->n) qsort(s->f, s->n, sizeof *s->f, by_created);
    *out = s;
    return HERD_OK;
}

void herd_file_store_close(struct herd_file_store *s) {
    if (!s) return;
    pthread_mutex_destroy(&s->lock);
    free(s->f);
    free(s);
}

/* ------------------------------------------------------------- changes */

/* A file whose bytes and record are on disk joins the index. */
static enum herd_status index_add(struct herd_file_store *s, const struct herd_file_info *f, struct herd_file_info *out,
                                  struct herd_error *err) {
    pthread_mutex_lock(&s->lock);
    const bool ok = push(s, f);
    pthread_mutex_unlock(&s->lock);
    if (!ok) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    if (out) *out = *f;
    return HERD_OK;
}

enum herd_status herd_file_store_add(struct herd_file_store *s, const char *filename, const char *purpose,
                                     const void *data, size_t len, struct herd_file_info *out, struct herd_error *err) {
    struct herd_file_info f = {0};
    random_id(f.id);
    copy_str(f.filename, sizeof f.filename, filename);
    copy_str(f.purpose, sizeof f.purpose, purpose);
    f.bytes = len;
    f.created_at = time(NULL);
    char path[4200];
    path_of(s, f.id, "", path, sizeof path);
    /* the bytes first, then the record that makes them a file */
    enum herd_status rc = herd_write_file_atomic(path, data, len, err);
    if (rc == HERD_OK && (rc = write_meta(s, &f, err)) != HERD_OK) unlink(path);
    if (rc != HERD_OK) return rc;
    return index_add(s, &f, out, err);
}

enum herd_status herd_file_store_adopt(struct herd_file_store *s, const char *id, const char *path,
                                       const char *filename, const char *purpose, struct herd_file_info *out,
                                       struct herd_error *err) {
    if (herd_file_store_get(s, id, out)) return HERD_OK; /* done before a crash */
    struct stat st;
    if (stat(path, &st) != 0) return herd_error_set(err, HERD_E_IO, "%s: %s", path, strerror(errno));
    struct herd_file_info f = {0};
    copy_str(f.id, sizeof f.id, id);
    copy_str(f.filename, sizeof f.filename, filename);
    copy_str(f.purpose, sizeof f.purpose, purpose);
    f.bytes = (uint64_t)st.st_size;
    f.created_at = time(NULL);
    char dst[4200];
    path_of(s, id, "", dst, sizeof dst);
    /* a second name first, then the record, then the old name goes: a
     * crash at any point leaves the bytes under path (an orphan under dst
     * is swept at open), never only as an orphan */
    if (link(path, dst) != 0 && errno != EEXIST)
        return herd_error_set(err, HERD_E_IO, "%s -> %s: %s", path, dst, strerror(errno));
    enum herd_status rc = sync_dir(dst, err);
    if (rc == HERD_OK) rc = write_meta(s, &f, err);
    if (rc != HERD_OK) {
        unlink(dst); /* the caller retries from path */
        return rc;
    }
    unlink(path);
    return index_add(s, &f, out, err);
}

bool herd_file_store_get(struct herd_file_store *s, const char *id, struct herd_file_info *out) {
    if (!herd_file_id_valid(id)) return false;
    pthread_mutex_lock(&s->lock);
    const ssize_t i = find(s, id);
    if (i >= 0 && out) *out = s->f[i];
    pthread_mutex_unlock(&s->lock);
    return i >= 0;
}

struct herd_file_info *herd_file_store_list(struct herd_file_store *s, const char *purpose, size_t *n) {
    *n = 0;
    pthread_mutex_lock(&s->lock);
    struct herd_file_info *v = malloc((s->n ? s->n : 1) * sizeof *v);
    if (v)
        for (size_t i = 0; i < s->n; i++)
            if (!purpose || strcmp(s->f[i].purpose, purpose) == 0) v[(*n)++] = s->f[i];
    pthread_mutex_unlock(&s->lock);
    return v;
}

enum herd_status herd_file_store_delete(struct herd_file_store *s, const char *id, struct herd_error *err) {
    if (!herd_file_id_valid(id)) return herd_error_set(err, HERD_E_NOT_FOUND, "no such file");
    pthread_mutex_lock(&s->lock);
    const ssize_t i = find(s, id);
    if (i >= 0) memmove(s->f + i, s->f + i + 1, (s->n - (size_t)i - 1) * sizeof *s->f), s->n--;
    pthread_mutex_unlock(&s->lock);
    if (i < 0) return herd_error_set(err, HERD_E_NOT_FOUND, "no such file: %s", id);
    /* the record first: without it the bytes are not a file (and go at the next open) */
    char path[4200];
    path_of(s, id, ".json", path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT)
        herd_log(HERD_LOG_WARN, "files", NULL, NULL, 0, "%s: %s", path, strerror(errno));
    path_of(s, id, "", path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT)
        herd_log(HERD_LOG_WARN, "files", NULL, NULL, 0, "%s: %s", path, strerror(errno));
    return HERD_OK;
}

int herd_file_store_open_content(struct herd_file_store *s, const char *id, uint64_t *bytes) {
    if (!herd_file_store_get(s, id, NULL)) return -1;
    char path[4200];
    path_of(s, id, "", path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    if (fd >= 0) *bytes = (uint64_t)st.st_size;
    return fd;
}

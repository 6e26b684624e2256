/* The files of the server's batch API (/v1/files): uploaded batch inputs
 * and the batches' output and error files, kept under DIR/files as ID (the
 * bytes) and ID.json (the file object). Every write goes to a temporary
 * name, is synced and renamed into place, so a crash or a full disk leaves
 * a file whole or absent, never torn; an ID without its ID.json is not a
 * file (an upload that did not finish) and is removed on open.
 *
 * A file id is "file-" and 24 lowercase hex digits, made here; nothing but
 * a valid id ever becomes part of a path, so no id a client sends ("../x",
 * "/etc/passwd", "a/b", an encoded slash) can name anything outside DIR.
 *
 * Thread-safe: the HTTP handlers and the batch worker share one store. */
#ifndef HERD_BATCH_FILE_STORE_H
#define HERD_BATCH_FILE_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/status.h"

#define HERD_FILE_ID_LEN 29 /* "file-" + 24 hex digits */

struct herd_file_info {
    char id[HERD_FILE_ID_LEN + 1];
    char filename[256]; /* as uploaded, for display only; never a path */
    char purpose[24];   /* "batch", "batch_output" */
    uint64_t bytes;
    int64_t created_at; /* Unix seconds */
};

struct herd_file_store;

/* Opens (creating) dir/files. */
enum herd_status herd_file_store_open(const char *dir, struct herd_file_store **out, struct herd_error *err);
void herd_file_store_close(struct herd_file_store *s);

/* True when id has the shape of a file id (and so is safe in a path). */
bool herd_file_id_valid(const char *id);

/* Stores data as a new file. */
enum herd_status herd_file_store_add(struct herd_file_store *s, const char *filename, const char *purpose,
                                     const void *data, size_t len, struct herd_file_info *out, struct herd_error *err);
/* Moves the file at path (on the same file system) in as file id, which
 * the caller chose (herd_file_id_for, so that redoing it after a crash
 * finds the same file). An id already stored is left as it is. */
enum herd_status herd_file_store_adopt(struct herd_file_store *s, const char *id, const char *path,
                                       const char *filename, const char *purpose, struct herd_file_info *out,
                                       struct herd_error *err);
/* A file id derived from a name (a batch's id and "output"). */
void herd_file_id_for(const char *name, char out[HERD_FILE_ID_LEN + 1]);

/* The file's object; false when there is none. */
bool herd_file_store_get(struct herd_file_store *s, const char *id, struct herd_file_info *out);
/* All files, oldest first ([*n], free with free()); purpose NULL: any. */
struct herd_file_info *herd_file_store_list(struct herd_file_store *s, const char *purpose, size_t *n);
/* HERD_E_NOT_FOUND when there is no such file. */
enum herd_status herd_file_store_delete(struct herd_file_store *s, const char *id, struct herd_error *err);
/* The file's bytes, opened for reading (*bytes its size); -1 when there is
 * no such file. */
int herd_file_store_open_content(struct herd_file_store *s, const char *id, uint64_t *bytes);
/* Where the file's bytes are (for readers such as the batch runner). */
void herd_file_store_path(const struct herd_file_store *s, const char *id, char *buf, size_t cap);

/* OpenAI's file object. */
json_t *herd_file_json(const struct herd_file_info *f);

/* Writes data to path whole or not at all: a temporary file beside it,
 * synced, renamed over path, the directory synced. */
enum herd_status herd_write_file_atomic(const char *path, const void *data, size_t len, struct herd_error *err);

#endif

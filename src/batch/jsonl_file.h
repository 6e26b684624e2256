/* JSONL files a batch job reads and writes, so that a kill -9, a full disk
 * or a removed directory never leaves a torn line or loses a committed one.
 *
 * An input is indexed once (where each line starts, how long it is) and
 * read back a line at a time, so a 200 MB file is never held whole. An
 * output is appended in whole lines only: lines are collected in memory and
 * written with one write() at a flush, then synced; a short or failed write
 * is cut back to the last whole line before the error is reported. On
 * opening, a torn tail left by a killed writer is cut off the same way. */
#ifndef HERD_BATCH_JSONL_FILE_H
#define HERD_BATCH_JSONL_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "base/buf.h"
#include "herd/status.h"

/* ------------------------------------------------------------- input */

struct jsonl_line {
    off_t offset;
    uint64_t len; /* without the newline (and a CR before it) */
};

/* An input file's lines. Blank lines are kept in the index (their numbers
 * count, as editors show them) and skipped by readers. */
struct jsonl_input {
    FILE *f;
    const char *path;
    struct jsonl_line *lines; /* [n_lines], line k+1 at lines[k] */
    uint64_t n_lines;
    uint64_t size;
    uint64_t xxh3; /* of the whole file: a rerun against a changed input is refused */
};

/* Indexes path. A file with a NUL byte in its first 64 KiB is refused as
 * not text (a binary file), HERD_E_FORMAT. Close with jsonl_input_close. */
enum herd_status jsonl_input_open(struct jsonl_input *in, const char *path, struct herd_error *err);
void jsonl_input_close(struct jsonl_input *in);

/* Line k (0-based) into *buf (max bytes at most; longer lines leave *buf
 * empty and return HERD_E_OVERFLOW). buf is NUL-terminated on success. */
enum herd_status jsonl_input_read(struct jsonl_input *in, uint64_t k, struct herd_buf *buf, size_t max,
                                  struct herd_error *err);

/* True when the line holds only spaces and tabs (or nothing). */
bool jsonl_blank(const char *s, size_t n);

/* ------------------------------------------------------------ output */

struct jsonl_output {
    int fd;
    char path[4096];
    off_t committed;         /* bytes of whole lines on disk */
    struct herd_buf pending; /* whole lines not written yet */
};

/* Opens (creating) path for appending whole lines; truncate: start empty.
 * A torn last line (no newline: a writer killed mid-write) is cut off. */
enum herd_status jsonl_output_open(struct jsonl_output *o, const char *path, bool truncate, struct herd_error *err);
void jsonl_output_close(struct jsonl_output *o);

/* Queues one line (newline added). False on out of memory. */
bool jsonl_output_add(struct jsonl_output *o, const char *line, size_t len);

/* Writes what is queued and syncs it. On a failed or short write (a full
 * disk) the file is cut back to its last whole line, the lines stay queued
 * and err says why. A file removed under us (its directory gone) is an
 * error too: what is written there would be lost. */
enum herd_status jsonl_output_flush(struct jsonl_output *o, struct herd_error *err);

/* Calls fn for every whole line already in path (missing file: none).
 * Stops and returns fn's error. */
enum herd_status jsonl_each_line(const char *path, enum herd_status (*fn)(void *arg, char *line, size_t len), void *arg,
                                 struct herd_error *err);

#endif

/* Batch jobs: an OpenAI Batch input file (JSONL, one request per line:
 * custom_id, method, url, body) run through the engine's scheduler, the
 * answers appended to an output file and the failures to an error file,
 * both in OpenAI's batch output shape.
 *
 * A job is resumable: a rerun with the same files skips every line whose
 * answer (by custom_id) or error (by line number) is already written, so
 * after a kill -9 at any moment every custom_id ends up exactly once. A
 * small state file beside the output (OUTPUT.state) keeps the input's
 * checksum and the shard, and a rerun against a changed input is refused
 * unless restart is asked for. Shard i of n takes lines k with
 * (k - 1) % n == i, so n array tasks split a file deterministically, and
 * herd_batch_merge puts their outputs back in input order. */
#ifndef HERD_BATCH_BATCH_H
#define HERD_BATCH_BATCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/api.h"
#include "herd/herd.h"
#include "herd/status.h"

/* Lines longer than this are refused one by one (OpenAI's own requests
 * are far smaller; a 10 MB line is a mistake, not a prompt). */
#define HERD_BATCH_DEFAULT_MAX_LINE ((size_t)4 << 20)

struct herd_batch_counts {
    uint64_t lines;          /* of this shard, blank lines not counted */
    uint64_t skipped;        /* already in the output or error file (a resumed job) */
    uint64_t skipped_failed; /* of them, in the error file */
    uint64_t done;           /* answered this run (written and synced) */
    uint64_t failed;         /* written to the error file this run (synced) */
    uint64_t prompt_tokens, completion_tokens;
    double elapsed_s;
};

struct herd_batch_params {
    const char *input, *output, *errors;
    uint32_t shard, n_shards; /* 0 of 1: the whole file */
    uint32_t max_inflight;    /* lines running at once */
    int32_t priority;         /* the scheduler priority of every line */
    size_t max_line_bytes;
    bool restart; /* start over: the output and error files are emptied */
    /* The one url lines may name (a server batch's endpoint); NULL: both
     * /v1/chat/completions and /v1/completions. */
    const char *only_url;
    /* When set, a stop also writes every line not answered yet to the error
     * file with this code and message (an expired server batch:
     * "batch_expired"), so the job ends with every line accounted for. */
    const char *abandon_code, *abandon_message;
    struct herd_api_limits limits;
    /* Called about once a second and at the end, from the calling thread. */
    void (*progress)(void *arg, const struct herd_batch_counts *c);
    void *progress_arg;
    /* Checked between steps: when it turns true, the job stops cleanly
     * (what finished is written; the rest is redone by a rerun). */
    const atomic_int *stop;
};

void herd_batch_default_params(struct herd_batch_params *p);

/* Runs the job on e (opened with a scheduler and the chat template).
 * Per-line failures go to the error file and do not stop it. It stops with
 * an error (lines written so far kept whole) on a full disk, a removed
 * output, a changed input, the engine failing, or p->stop. */
enum herd_status herd_batch_run(struct herd_engine *e, const struct herd_batch_params *p, struct herd_batch_counts *out,
                                struct herd_error *err);

struct herd_batch_merge_counts {
    uint64_t lines, answers, errors;
};

/* Combines shard outputs and error files (parts, in any order, each line
 * an answer or an error) into output and errors in input order, checking
 * that every non-blank input line is there exactly once. Both are written
 * to temporary files and renamed into place only when complete. */
enum herd_status herd_batch_merge(const char *input, const char *const *parts, size_t n_parts, const char *output,
                                  const char *errors, struct herd_batch_merge_counts *out, struct herd_error *err);

#endif

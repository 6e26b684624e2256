/* The server's batch jobs: OpenAI's /v1/batches inside `herd serve`. A
 * batch names an uploaded input file (file_store.h) and an endpoint; one
 * worker thread runs the batches one after another, oldest first, through
 * herd_batch_run on the server's own engine at background priority
 * (HERD_PRIORITY_BACKGROUND: its lines fill the capacity interactive
 * requests leave idle and give way to them), and turns the output and
 * error files into files of the store when it finishes.
 *
 * Status follows OpenAI's lifecycle: validating (the input is checked as a
 * whole: there, a batch file, not empty, not binary, at most max_requests
 * lines and max_file_bytes) -> in_progress -> finalizing -> completed; or
 * failed (validation), cancelling -> cancelled (herd_batch_service_cancel),
 * expired (not done within window_s: the lines not answered go to the
 * error file with code "batch_expired").
 *
 * State lives under DIR/batches: BATCH_ID.json (the batch object, rewritten
 * whole at each status change) and BATCH_ID/ (the run's output, errors and
 * state files). A server killed at any moment resumes every unfinished
 * batch when it starts again, and each custom_id ends up answered exactly
 * once (herd_batch_run's resume). A write that fails (a full disk) keeps
 * the batch in_progress, says why in its errors, and is retried every few
 * seconds: what was written stays whole, and freeing space lets it go on. */
#ifndef HERD_BATCH_BATCH_SERVICE_H
#define HERD_BATCH_BATCH_SERVICE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "api/api.h"
#include "batch/file_store.h"
#include "herd/herd.h"
#include "herd/status.h"

struct herd_batch_service_params {
    const char *data_dir;
    uint64_t max_requests;         /* lines per batch (OpenAI's 50,000) */
    uint64_t max_file_bytes;       /* bytes per input file (OpenAI's 200 MB) */
    double window_s;               /* a batch not done this long after creation expires (24 h) */
    uint32_t max_inflight;         /* lines running at once (the scheduler's sequence slots) */
    struct herd_api_limits limits; /* as the server checks its requests */
};

void herd_batch_service_default_params(struct herd_batch_service_params *p);

struct herd_batch_service;

/* Opens the store under data_dir (creating it) and loads the batches. */
enum herd_status herd_batch_service_open(const struct herd_batch_service_params *p, struct herd_batch_service **out,
                                         struct herd_error *err);
/* Starts the worker on e (the model is loaded): unfinished batches resume. */
enum herd_status herd_batch_service_start(struct herd_batch_service *s, struct herd_engine *e, struct herd_error *err);
/* Stops the worker (a running batch stays in_progress, resumed at the
 * next start) and frees everything. Before the engine closes. */
void herd_batch_service_close(struct herd_batch_service *s);

struct herd_file_store *herd_batch_service_files(struct herd_batch_service *s);
const struct herd_batch_service_params *herd_batch_service_params(const struct herd_batch_service *s);

/* Why a call failed, as the API answers it. */
struct herd_batch_api_error {
    int status; /* 400, 404, 500 */
    const char *code;
    char param[32];
    char message[300];
};

/* POST /v1/batches: body {input_file_id, endpoint, completion_window,
 * metadata}. The new batch object, or NULL and e. */
json_t *herd_batch_service_create(struct herd_batch_service *s, json_t *body, struct herd_batch_api_error *e);
/* The batch object; NULL and e (404) when there is none. */
json_t *herd_batch_service_get(struct herd_batch_service *s, const char *id, struct herd_batch_api_error *e);
/* Newest first, at most limit after the batch `after` (NULL: from the
 * newest): OpenAI's list object. */
json_t *herd_batch_service_list(struct herd_batch_service *s, const char *after, uint32_t limit,
                                struct herd_batch_api_error *e);
/* Asks a batch to stop: cancelling, then cancelled once its running lines
 * are stopped (what was answered stays in its output file). A batch that
 * has ended is a 400. */
json_t *herd_batch_service_cancel(struct herd_batch_service *s, const char *id, struct herd_batch_api_error *e);

/* True while a batch that has not ended reads file_id (its input): such a
 * file is not deleted under it. */
bool herd_batch_service_file_in_use(struct herd_batch_service *s, const char *file_id);

/* True when id has the shape of a batch id ("batch_" + 24 hex digits). */
bool herd_batch_id_valid(const char *id);

#endif

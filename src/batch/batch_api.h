/* OpenAI's /v1/files and /v1/batches over HTTP, on the batch service
 * (batch_service.h): routes `herd serve` adds to its table.
 *
 *   POST   /v1/files                 multipart upload (purpose "batch")
 *   GET    /v1/files                 list (purpose, limit, order, after)
 *   GET    /v1/files/ID              the file object
 *   GET    /v1/files/ID/content      the bytes
 *   DELETE /v1/files/ID
 *   POST   /v1/batches               create
 *   GET    /v1/batches               list (limit, after)
 *   GET    /v1/batches/ID
 *   POST   /v1/batches/ID/cancel
 *
 * An id that is not of the shape herd makes (file-/batch_ and 24 hex
 * digits) is a 400 before anything looks for it. */
#ifndef HERD_BATCH_BATCH_API_H
#define HERD_BATCH_BATCH_API_H

#include <stddef.h>

#include "batch/batch_service.h"
#include "http/http_server.h"

#define HERD_BATCH_API_ROUTES 8

/* Fills out[HERD_BATCH_API_ROUTES]. svc NULL (no --data-dir): each route
 * answers 404 saying how to turn the batch API on. */
void herd_batch_api_routes(struct herd_batch_service *svc, struct herd_http_route out[HERD_BATCH_API_ROUTES]);

/* The largest upload body the routes take for svc's file limit (the
 * multipart framing around the file included). */
size_t herd_batch_api_max_upload(const struct herd_batch_service *svc);

#endif

/* Read-only memory mapping of a whole file: model weights are used in place
 * from the page cache, never copied. */
#ifndef HERD_BASE_MAPPED_FILE_H
#define HERD_BASE_MAPPED_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "herd/status.h"

struct herd_mapped_file {
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
};

/* Maps path read-only (MAP_PRIVATE). An empty file maps to data NULL, size 0.
 * Directories and unreadable files are HERD_E_IO with the path and errno text.
 * The caller owns the mapping; release it with herd_mapped_file_cleanup. */
enum herd_status herd_mapped_file_init(struct herd_mapped_file *f, const char *path, struct herd_error *err);

/* Unmaps; safe on a zeroed or already cleaned-up struct. */
void herd_mapped_file_cleanup(struct herd_mapped_file *f);

#endif

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

/* Tells the kernel the pages wholly inside [p, p + n) of a mapping will not
 * be read soon: they leave the process's resident memory (the page cache
 * keeps them while it has room) and a later read faults them back in from
 * the file, unchanged. For weights that were copied elsewhere. */
void herd_mapped_file_drop(const void *p, size_t n);

/* Unmaps; safe on a zeroed or already cleaned-up struct. */
void herd_mapped_file_cleanup(struct herd_mapped_file *f);

#endif

/* Large, long-lived buffers (the KV cache, repacked weights) on
 * transparent huge pages where the kernel offers them: the engine streams
 * through hundreds of MB per step, and with 4 KiB pages every few KB is a
 * TLB miss. */
#ifndef HERD_BASE_ALLOC_H
#define HERD_BASE_ALLOC_H

#include <stddef.h>

/* bytes (> 0), 2 MiB aligned when at least 2 MiB, else 64-byte aligned;
 * asks for huge pages (madvise), which the kernel may decline. Not zeroed.
 * NULL when out of memory. Free with free(). */
void *herd_alloc_large(size_t bytes);

/* The memory the kernel says can be handed out without swapping
 * (MemAvailable in /proc/meminfo), in bytes; 0 when unknown. */
size_t herd_mem_available(void);

#endif

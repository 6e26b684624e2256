/* A fixed thread pool for data-parallel kernels: every call runs one
 * function on all threads, each with its (ith, nth), and returns when all
 * are done. The calling thread is thread 0, so a pool of 1 has no workers.
 * Workers spin briefly between calls (a forward pass makes hundreds of calls
 * microseconds apart) and then sleep on a condition variable. */
#ifndef HERD_BASE_POOL_H
#define HERD_BASE_POOL_H

#include <stddef.h>

typedef void (*herd_pool_fn)(void *ctx, int ith, int nth);

struct herd_pool;

/* n_threads >= 1. NULL if threads cannot be created. Destroy with herd_pool_destroy. */
struct herd_pool *herd_pool_create(int n_threads);
void herd_pool_destroy(struct herd_pool *p);
int herd_pool_size(const struct herd_pool *p);

/* Runs fn(ctx, ith, nth) for ith in 0..nth-1, one per thread, and waits.
 * Only one thread may call this at a time; fn must not call it (except in
 * a team run, see herd_pool_run_team). */
void herd_pool_run(struct herd_pool *p, herd_pool_fn fn, void *ctx);

/* Items [begin, end) of a split run, on thread ith (for per-thread scratch). */
typedef void (*herd_pool_range_fn)(void *ctx, int ith, size_t begin, size_t end);

/* Runs fn over items 0..n_items-1 on all threads and waits. Each thread
 * starts on its own contiguous share, taking grain items at a time, and when
 * its share is done takes what is left of the others' the same way: on a
 * shared machine the OS preempts a compute thread now and then (for an HTTP
 * thread, a client, another process), and a static split would leave the
 * other threads spinning until it comes back. Every item runs exactly once,
 * on one thread, so results do not depend on which. Same rules as
 * herd_pool_run. */
void herd_pool_run_split(struct herd_pool *p, size_t n_items, size_t grain, herd_pool_range_fn fn, void *ctx);

/* Runs fn(ctx, ith, nth) on every thread like herd_pool_run, as a team:
 * inside fn every thread makes the same pool calls in the same order, and
 * each is collective. herd_pool_run_split splits its items among the
 * threads (each passes its own fn and ctx, which must compute the same
 * thing: a thread may run items of another's share) and returns on each
 * once all items are done; herd_pool_run runs its fn on every thread and
 * waits for all; herd_pool_barrier waits for all. A forward pass of a small
 * model on one token makes ~150 dependent steps, each a few microseconds:
 * as one team run the threads meet at a barrier between steps instead of
 * the caller publishing each step to workers that start it late, and work
 * the caller did alone between steps can be split or done by each thread
 * on its own copy. Not from inside another run. */
void herd_pool_run_team(struct herd_pool *p, herd_pool_fn fn, void *ctx);

/* Inside a team run: returns once every thread has called it. Outside one:
 * returns at once. */
void herd_pool_barrier(struct herd_pool *p);

/* Inside a team run: the calling thread asks for the bytes [start, start +
 * bytes) a few cache lines at a time while it waits at the team's barriers
 * (those that end split runs included), from where it left off, until they
 * are all asked for or it names another region (NULL: none). A forward
 * pass names the start of the thread's share of its next matmul: the
 * memory is otherwise idle while one thread waits for the other. A hint
 * only: nothing is read or written. Outside a team run: ignored. */
void herd_pool_prefetch_while_waiting(struct herd_pool *p, const void *start, size_t bytes);

/* Items [*begin, *end) of thread ith's own share of a split run of n_items
 * in grains of grain on p, the ones it takes first. */
void herd_pool_share_bounds(const struct herd_pool *p, size_t n_items, size_t grain, int ith, size_t *begin,
                            size_t *end);

#endif

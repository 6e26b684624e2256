/* Thread pool: a generation counter that spinning workers watch, a mutex
 * and condition variable only for workers that have gone to sleep (no lost
 * wake-ups: see herd_pool_run), completion counted atomically. */
#include "base/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* ~50-100 us of spinning before a worker sleeps: long enough to bridge the
 * gaps between the kernels of one forward pass, short enough not to burn a
 * core between requests. Under ThreadSanitizer each acquire load is a call
 * into its runtime that updates the thread's vector clock from the shared
 * generation's, so a spinning worker slows the threads it waits for: with
 * 20000 iterations tests/engine/test_engine took 2-3 s instead of 0.6 s, and
 * test_sched's aging case overran its 60 s bound on 2 cores. Only the
 * -fsanitize=thread build spins less. */
#if defined(__SANITIZE_THREAD__)
#define SPIN_ITERATIONS 200
#else
#define SPIN_ITERATIONS 20000
#endif

struct worker {
    struct herd_pool *pool;
    int index;
    pthread_t thread;
};

/* One thread's share of a split run, on its own cache line: the owner's
 * claims stay uncontended until another thread comes to take what is left. */
struct share {
    _Atomic size_t next;
    size_t end;
    char pad[64 - sizeof(_Atomic size_t) - sizeof(size_t)];
};

struct split_job {
    herd_pool_range_fn fn;
    void *ctx;
    size_t grain;
};

/* What a call publishes and its workers read sits on one cache line, and
 * the completion count on another: a forward pass of a small model makes
 * ~180 calls a token, and each line moved between cores is ~100 ns. */
struct herd_pool {
    _Alignas(64) _Atomic unsigned long generation;
    herd_pool_fn fn;
    void *ctx;
    struct split_job split;
    bool stop;
    _Alignas(64) _Atomic int pending;
    /* workers between deciding to sleep and waking; herd_pool_run takes the
     * mutex to wake them only when this is not 0 */
    _Alignas(64) _Atomic int sleepers;
    int n_threads;
    struct share *shares;   /* n_threads, for herd_pool_run_split */
    struct worker *workers; /* n_threads - 1 */
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct herd_pool *p = w->pool;
    unsigned long seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&p->generation, memory_order_acquire) == seen && spins < SPIN_ITERATIONS) {
            CPU_RELAX();
            spins++;
        }
        if (atomic_load_explicit(&p->generation, memory_order_acquire) == seen) {
            pthread_mutex_lock(&p->mu);
            /* announced before the generation is tested again (both seq_cst):
             * a caller that publishes after this test sees the sleeper and
             * broadcasts under the mutex, which this thread holds until it waits */
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->generation) == seen && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            bool stop = p->stop;
            pthread_mutex_unlock(&p->mu);
            if (stop) return NULL;
        }
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (p->stop) return NULL;
        p->fn(p->ctx, w->index, p->n_threads);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel);
    }
}

struct herd_pool *herd_pool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    struct herd_pool *p = aligned_alloc(64, sizeof *p);
    if (!p) return NULL;
    memset(p, 0, sizeof *p);
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    p->shares = aligned_alloc(64, (size_t)n_threads * sizeof *p->shares);
    if (!p->workers || !p->shares) {
        free(p->workers);
        free(p->shares);
        free(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        p->workers[i].pool = p;
        p->workers[i].index = i;
        if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
            p->n_threads = i; /* destroy joins the ones that started */
            herd_pool_destroy(p);
            return NULL;
        }
    }
    return p;
}

void herd_pool_destroy(struct herd_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->workers[i].thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->workers);
    free(p->shares);
    free(p);
}

int herd_pool_size(const struct herd_pool *p) { return p->n_threads; }

void herd_pool_run(struct herd_pool *p, herd_pool_fn fn, void *ctx) {
    if (p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_release);
    /* seq_cst, like the sleepers' count in worker_main: either a worker
     * about to sleep sees this generation, or this sees it as a sleeper */
    atomic_fetch_add(&p->generation, 1);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(ctx, 0, p->n_threads);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) CPU_RELAX();
}

/* Claims the next grain of share s; false once it is used up. */
static bool claim(struct share *s, size_t grain, size_t *begin, size_t *end) {
    if (atomic_load_explicit(&s->next, memory_order_relaxed) >= s->end) return false;
    size_t b = atomic_fetch_add_explicit(&s->next, grain, memory_order_relaxed);
    if (b >= s->end) return false;
    *begin = b;
    *end = b + grain < s->end ? b + grain : s->end;
    return true;
}

static void split_part(void *ctx, int ith, int nth) {
    struct herd_pool *p = ctx;
    const struct split_job *j = &p->split;
    size_t b, e;
    /* own share first, then the others' from the next thread on */
    for (int k = 0; k < nth; k++) {
        struct share *s = &p->shares[(ith + k) % nth];
        while (claim(s, j->grain, &b, &e)) j->fn(j->ctx, ith, b, e);
    }
}

void herd_pool_run_split(struct herd_pool *p, size_t n_items, size_t grain, herd_pool_range_fn fn, void *ctx) {
    if (n_items == 0) return;
    if (grain == 0) grain = 1;
    const size_t nth = (size_t)p->n_threads;
    if (nth == 1) {
        for (size_t b = 0; b < n_items; b += grain) fn(ctx, 0, b, b + grain < n_items ? b + grain : n_items);
        return;
    }
    /* shares start on whole grains, so a thread's claims never straddle two */
    const size_t grains = (n_items + grain - 1) / grain;
    for (size_t i = 0; i < nth; i++) {
        size_t b = grains * i / nth * grain, e = grains * (i + 1) / nth * grain;
        atomic_store_explicit(&p->shares[i].next, b < n_items ? b : n_items, memory_order_relaxed);
        p->shares[i].end = e < n_items ? e : n_items;
    }
    p->split = (struct split_job){fn, ctx, grain};
    herd_pool_run(p, split_part, p);
}

/* Thread pool: a generation counter that spinning workers watch, a mutex
 * and condition variable only for workers that have gone to sleep (no lost
 * wake-ups: see herd_pool_run), completion counted atomically. */
#include "base/pool.h"

#include "base/assert.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
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

/* The index of this thread in the pool it serves (0 for the thread that
 * calls a team run): a split run made inside a team run is a collective
 * call, and each thread claims first from its own share. */
static _Thread_local int tls_ith;

struct worker {
    struct herd_pool *pool;
    int index;
    pthread_t thread;
};

/* One thread's share of a split run, on its own cache line: the owner's
 * claims stay uncontended until another thread comes to take what is left.
 * The word holds the split's epoch above the next item (EPOCH_SHIFT): in a
 * team run (herd_pool_run_team) no thread resets the shares while the
 * others may still be claiming; whichever thread first comes to a share in
 * a new split opens it by compare-and-swap from the last epoch, and a claim
 * on a share of the current epoch can only be of the current split. */
struct share {
    _Atomic uint64_t word;
    char pad[64 - sizeof(_Atomic uint64_t)];
};

/* Items below 2^40 (a split's count is far smaller); epochs wrap at 2^24,
 * compared for equality only: a share is opened in every split, so it is
 * never more than one epoch behind. */
#define EPOCH_SHIFT 40
#define NEXT_MASK   ((UINT64_C(1) << EPOCH_SHIFT) - 1)
#define EPOCH_MASK  ((UINT64_C(1) << (64 - EPOCH_SHIFT)) - 1)

/* A thread's own state in a team run: how many splits it has been through,
 * the same count on every thread since each makes the same calls, and what
 * it prefetches while it waits (herd_pool_prefetch_while_waiting). */
struct member {
    uint64_t epoch;
    const char *prefetch, *prefetch_end;
    char pad[64 - sizeof(uint64_t) - 2 * sizeof(const char *)];
};

struct split_job {
    herd_pool_range_fn fn;
    void *ctx;
    size_t n_items, grain;
    uint64_t epoch;
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
    bool team;      /* a herd_pool_run_team is under way: split runs are collective */
    uint64_t epoch; /* of the last split run, between runs */
    _Alignas(64) _Atomic int pending;
    /* a team run's barrier: the number of threads arrived in the low 32
     * bits, the barrier's phase above them, so one cache line carries both */
    _Alignas(64) _Atomic uint64_t barrier;
    /* workers between deciding to sleep and waking; herd_pool_run takes the
     * mutex to wake them only when this is not 0 */
    _Alignas(64) _Atomic int sleepers;
    int n_threads;
    struct share *shares;   /* n_threads, for herd_pool_run_split */
    struct member *members; /* n_threads, for herd_pool_run_team */
    struct worker *workers; /* n_threads - 1 */
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct herd_pool *p = w->pool;
    unsigned long seen = 0;
    tls_ith = w->index;
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
    p->members = aligned_alloc(64, (size_t)n_threads * sizeof *p->members);
    if (p->shares) memset(p->shares, 0, (size_t)n_threads * sizeof *p->shares);
    if (!p->workers || !p->shares || !p->members) {
        free(p->workers);
        free(p->shares);
        free(p->members);
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
    free(p->members);
    free(p);
}

int herd_pool_size(const struct herd_pool *p) { return p->n_threads; }

/* Cache lines a waiting thread asks for between two looks at the barrier:
 * ~1 KiB, which the memory delivers in a few tens of nanoseconds, so the
 * thread still sees the barrier open about as soon as it would have. */
#define PREFETCH_LINES_PER_LOOK 16

/* Waits until every thread of a team run has arrived. The last to arrive
 * starts the next phase; the others spin (the phases of a forward pass are
 * microseconds apart), asking for the region the thread named
 * (herd_pool_prefetch_while_waiting) while it lasts, and yielding now and
 * then so that a thread the OS has preempted on a busy machine gets the
 * core back. */
static void team_barrier(struct herd_pool *p) {
    const uint64_t seen = atomic_fetch_add_explicit(&p->barrier, 1, memory_order_acq_rel);
    if ((uint32_t)seen == (uint32_t)p->n_threads - 1) {
        atomic_store_explicit(&p->barrier, ((seen >> 32) + 1) << 32, memory_order_release);
        return;
    }
    struct member *me = &p->members[tls_ith];
    for (unsigned spins = 1; atomic_load_explicit(&p->barrier, memory_order_acquire) >> 32 == seen >> 32; spins++) {
        if (me->prefetch < me->prefetch_end) {
            for (int i = 0; i < PREFETCH_LINES_PER_LOOK && me->prefetch < me->prefetch_end; i++, me->prefetch += 64)
                __builtin_prefetch(me->prefetch, 0, 2);
        } else {
            CPU_RELAX();
        }
        if (spins % SPIN_ITERATIONS == 0) sched_yield();
    }
}

void herd_pool_prefetch_while_waiting(struct herd_pool *p, const void *start, size_t bytes) {
    if (!p->team) return;
    struct member *me = &p->members[tls_ith];
    me->prefetch = start;
    me->prefetch_end = start ? (const char *)start + bytes : NULL;
}

/* Runs fn on every thread and waits: herd_pool_run outside a team run. */
static void launch(struct herd_pool *p, herd_pool_fn fn, void *ctx) {
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

void herd_pool_run(struct herd_pool *p, herd_pool_fn fn, void *ctx) {
    if (p->team) { /* every thread of the team is here */
        fn(ctx, tls_ith, p->n_threads);
        team_barrier(p);
        return;
    }
    launch(p, fn, ctx);
}

/* Share i of a split: [*begin, *end), on whole grains so that a thread's
 * claims never straddle two shares. */
static void share_bounds(const struct split_job *j, size_t i, size_t nth, size_t *begin, size_t *end) {
    const size_t grains = (j->n_items + j->grain - 1) / j->grain;
    const size_t b = grains * i / nth * j->grain, e = grains * (i + 1) / nth * j->grain;
    *begin = b < j->n_items ? b : j->n_items;
    *end = e < j->n_items ? e : j->n_items;
}

void herd_pool_share_bounds(const struct herd_pool *p, size_t n_items, size_t grain, int ith, size_t *begin,
                            size_t *end) {
    const struct split_job j = {NULL, NULL, n_items, grain ? grain : 1, 0};
    share_bounds(&j, (size_t)ith, (size_t)p->n_threads, begin, end);
}

/* Opens share s for the split of epoch (tagged), at item begin, unless a
 * thread has already done so. */
static void open_share(struct share *s, uint64_t epoch, size_t begin) {
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    while (w >> EPOCH_SHIFT != epoch &&
           !atomic_compare_exchange_weak_explicit(&s->word, &w, epoch << EPOCH_SHIFT | begin, memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
}

/* Claims the next grain of an open share ending at end; false once it is
 * used up. */
static bool claim(struct share *s, size_t grain, size_t end, size_t *begin, size_t *stop) {
    if ((atomic_load_explicit(&s->word, memory_order_relaxed) & NEXT_MASK) >= end) return false;
    const size_t b = (size_t)(atomic_fetch_add_explicit(&s->word, grain, memory_order_relaxed) & NEXT_MASK);
    if (b >= end) return false;
    *begin = b;
    *stop = b + grain < end ? b + grain : end;
    return true;
}

/* Thread ith's part of a split: its own share first, then what is left of
 * the others' from the next thread on. */
static void split_claims(struct herd_pool *p, const struct split_job *j, int ith, int nth) {
    size_t b, e;
    for (int k = 0; k < nth; k++) {
        const size_t i = (size_t)((ith + k) % nth);
        size_t sb, se;
        share_bounds(j, i, (size_t)nth, &sb, &se);
        open_share(&p->shares[i], j->epoch, sb);
        while (claim(&p->shares[i], j->grain, se, &b, &e)) j->fn(j->ctx, ith, b, e);
    }
}

static void split_part(void *ctx, int ith, int nth) {
    struct herd_pool *p = ctx;
    split_claims(p, &p->split, ith, nth);
}

void herd_pool_run_split(struct herd_pool *p, size_t n_items, size_t grain, herd_pool_range_fn fn, void *ctx) {
    if (grain == 0) grain = 1;
    const int nth = p->n_threads;
    if (p->team) { /* every thread of the team is here, with its own fn and ctx */
        struct member *me = &p->members[tls_ith];
        me->epoch = (me->epoch + 1) & EPOCH_MASK;
        if (n_items) {
            const struct split_job j = {fn, ctx, n_items, grain, me->epoch};
            split_claims(p, &j, tls_ith, nth);
        }
        team_barrier(p);
        return;
    }
    if (n_items == 0) return;
    if (nth == 1) {
        for (size_t b = 0; b < n_items; b += grain) fn(ctx, 0, b, b + grain < n_items ? b + grain : n_items);
        return;
    }
    /* every share opened before the workers start, so a worker the OS has
     * not yet scheduled cannot hold its share up */
    p->epoch = (p->epoch + 1) & EPOCH_MASK;
    p->split = (struct split_job){fn, ctx, n_items, grain, p->epoch};
    for (int i = 0; i < nth; i++) {
        size_t sb, se;
        share_bounds(&p->split, (size_t)i, (size_t)nth, &sb, &se);
        open_share(&p->shares[i], p->epoch, sb);
    }
    launch(p, split_part, p);
}

void herd_pool_barrier(struct herd_pool *p) {
    if (p->team) team_barrier(p);
}

struct team_job {
    herd_pool_fn fn;
    void *ctx;
};

static void team_part(void *ctx, int ith, int nth) {
    const struct team_job *j = ctx;
    tls_ith = ith; /* workers' own already; the calling thread's for the run */
    j->fn(j->ctx, ith, nth);
}

void herd_pool_run_team(struct herd_pool *p, herd_pool_fn fn, void *ctx) {
    HERD_ASSERT(!p->team);
    if (p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    for (int i = 0; i < p->n_threads; i++)
        p->members[i] = (struct member){.epoch = p->epoch, .prefetch = NULL, .prefetch_end = NULL};
    const int caller_ith = tls_ith;
    struct team_job j = {fn, ctx};
    p->team = true; /* published to the workers with the run */
    launch(p, team_part, &j);
    p->team = false;
    p->epoch = p->members[0].epoch;
    tls_ith = caller_ith;
}

/* The local replica pool of pool.h: fork/exec of `herd serve` children on
 * disjoint CPU sets, their supervision (reaping, restarts with backoff, the
 * port race), and the autoscaler's sync on the router's event loop. */
#include "router/pool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <math.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/assert.h"
#include "base/log.h"
#include "base/timing.h"

/* Replicas one pool may run: more CPU slots than any machine has cores
 * for at one thread each, and a bound on the slot table. */
#define POOL_MAX_REPLICAS   1024
/* A draining replica's in-flight count is looked at this often: a drain
 * ends within 100 ms of its last request, and 10 calls a second cost the
 * router nothing. */
#define POOL_DRAIN_POLL_S   0.1
/* Port races in a row on one slot before the exit counts as a crash: one
 * race is bad luck, three mean something else holds ports (or the child
 * fails for another reason while the port happens to be busy). */
#define POOL_MAX_PORT_RACES 3

static const char *const COMPONENT = "pool";

/* ---------------------------------------------------------------- state */

enum slot_state {
    SLOT_FREE,     /* nothing on it */
    SLOT_STARTING, /* a child, not yet reported ready */
    SLOT_READY,    /* a child the router reported ready */
    SLOT_DRAINING, /* the router was told to drain it; waiting for in-flight 0 */
    SLOT_STOPPING, /* SIGTERM sent; SIGKILL at deadline_s */
    SLOT_BACKOFF,  /* its child crashed; the next starts when the timer fires */
};

/* A CPU slot and the replica on it. Slot s runs on CPUs [s*T, s*T + T) of
 * the allowed ones, wrapping. */
struct slot {
    struct herd_replica_pool *pool;
    uint32_t index;
    enum slot_state state;
    uint32_t id; /* the replica (process) on it; 0: none */
    pid_t pid;   /* 0: none */
    uint16_t port;
    bool ever_ready;
    double started_s;
    double deadline_s;   /* the drain's end, or SIGKILL's time */
    double backoff_s;    /* the delay before the next restart after a crash */
    uint32_t races;      /* port races in a row */
    struct event *timer; /* backoff restart, drain poll, SIGKILL */
};

struct herd_replica_pool {
    struct event_base *base;
    struct herd_replica_pool_params p;
    const char *herd_path;
    char **serve_args; /* copies, NULL-terminated */
    uint32_t n_serve_args;
    char *model_path;
    int cpus[CPU_SETSIZE]; /* the CPUs this process may use, in order */
    uint32_t n_cpus;
    uint32_t threads; /* per replica */
    struct slot *slots;
    uint32_t n_slots; /* 2 x max: max running and as many draining */
    uint32_t next_id;
    struct event *tick;
    struct event *sigchld;
    struct herd_autoscale_history hist;
    struct herd_autoscale_sample *hist_storage;
    uint32_t desired;
    struct herd_replica_pool_status counts; /* the counters; the gauges are computed */
};

void herd_replica_pool_default_params(struct herd_replica_pool_params *p) {
    *p = (struct herd_replica_pool_params){
        .initial_replicas = 1,
        .sync_period_s = 1,
        .drain_timeout_s = 60,
        .stop_timeout_s = 35,
        .backoff_initial_s = 1,
        .backoff_max_s = 30,
        .backoff_reset_s = 60,
    };
    herd_autoscale_default_params(&p->as);
}

static struct timeval tv_of(double s) {
    if (s < 0) s = 0;
    struct timeval tv = {.tv_sec = (time_t)s};
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

static void arm(struct slot *s, double after_s) {
    struct timeval tv = tv_of(after_s);
    evtimer_add(s->timer, &tv);
}

static bool alive(const struct slot *s) {
    return s->state == SLOT_STARTING || s->state == SLOT_READY || s->state == SLOT_DRAINING ||
           s->state == SLOT_STOPPING;
}

/* Replicas the autoscaler counts as current: those that serve or will
 * (a crashed one waiting to restart included, as Kubernetes counts a pod
 * in CrashLoopBackOff). */
static bool counted(const struct slot *s) {
    return s->state == SLOT_STARTING || s->state == SLOT_READY || s->state == SLOT_BACKOFF;
}

static uint32_t n_current(const struct herd_replica_pool *pool) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < pool->n_slots; i++) n += counted(&pool->slots[i]);
    return n;
}

/* ---------------------------------------------------------------- ports */

/* A port free now on 127.0.0.1 (the kernel's pick for port 0), or 0. */
static uint16_t pick_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    uint16_t port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* The picker slot_start calls; tests/router/test_pool.c replaces it to
 * hand a child a port that is taken (the race, on purpose). */
static uint16_t (*pick_port_fn)(void) = pick_port;

/* Whether another socket listens on port now. SO_REUSEADDR so that the
 * TIME_WAIT connections a dead child leaves do not count. */
static bool port_taken(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool taken = bind(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno == EADDRINUSE;
    close(fd);
    return taken;
}

/* ---------------------------------------------------------------- spawn */

static void on_slot_timer(evutil_socket_t fd, short what, void *arg);

static void slot_cpus(const struct herd_replica_pool *pool, uint32_t index, cpu_set_t *set) {
    CPU_ZERO(set);
    for (uint32_t k = 0; k < pool->threads; k++) {
        uint64_t at = ((uint64_t)index * pool->threads + k) % pool->n_cpus;
        CPU_SET(pool->cpus[at], set);
    }
}

/* In the child, between fork and exec: only async-signal-safe calls. */
static void child_exec(const char *path, char *const argv[], const cpu_set_t *cpus, pid_t parent) {
    (void)setpgid(0, 0);
    (void)prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1); /* the router died before the line above */
    (void)sched_setaffinity(0, sizeof *cpus, cpus);
    sigset_t none;
    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, NULL);
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    const int sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGCHLD, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) (void)sigaction(sigs[i], &dfl, NULL);
    (void)dup2(STDERR_FILENO, STDOUT_FILENO);
    if (close_range(3, ~0u, 0) != 0) {
        /* kernels before 5.9: close what the limit allows */
        long max = sysconf(_SC_OPEN_MAX);
        for (long fd = 3; fd < (max > 0 ? max : 1024); fd++) (void)close((int)fd);
    }
    execv(path, argv);
    _exit(127);
}

/* Starts a child on s (FREE or BACKOFF) and tells the router. A failure to
 * fork puts the slot in backoff like a crash. */
static void slot_start(struct slot *s) {
    struct herd_replica_pool *pool = s->pool;
    HERD_ASSERT(s->state == SLOT_FREE || s->state == SLOT_BACKOFF);
    evtimer_del(s->timer);
    uint16_t port = pick_port_fn();
    char port_arg[8], threads_arg[16];
    snprintf(port_arg, sizeof port_arg, "%u", (unsigned)port);
    snprintf(threads_arg, sizeof threads_arg, "%u", (unsigned)pool->threads);
    /* herd serve -m MODEL --host H --port P --threads T [serve_args] NULL */
    char **argv = calloc(10 + pool->n_serve_args + 1, sizeof *argv);
    HERD_ASSERT(argv); /* a few pointers; the pool cannot run without them */
    const char *fixed[] = {pool->herd_path, "serve",  "-m",     pool->model_path, "--host",
                           "127.0.0.1",     "--port", port_arg, "--threads",      threads_arg};
    uint32_t n = 0;
    for (; n < 10; n++) argv[n] = (char *)fixed[n];
    for (uint32_t i = 0; i < pool->n_serve_args; i++) argv[n++] = pool->serve_args[i];
    argv[n] = NULL;
    cpu_set_t cpus;
    slot_cpus(pool, s->index, &cpus);

    pid_t parent = getpid();
    pid_t pid = port ? fork() : -1;
    if (pid == 0) child_exec(pool->herd_path, argv, &cpus, parent);
    free(argv);
    if (pid < 0) {
        herd_log(HERD_LOG_ERROR, COMPONENT, NULL, NULL, 0, "slot %u: cannot start a replica: %s", s->index,
                 port ? strerror(errno) : "no free port");
        s->state = SLOT_BACKOFF;
        s->id = 0;
        arm(s, s->backoff_s);
        return;
    }
    s->state = SLOT_STARTING;
    s->id = pool->next_id++;
    if (pool->next_id == 0) pool->next_id = 1; /* 0 means none */
    s->pid = pid;
    s->port = port;
    s->ever_ready = false;
    s->started_s = herd_time_now_s();
    pool->counts.starts++;
    struct herd_log_field f[] = {HERD_LOG_I("replica", s->id), HERD_LOG_I("pid", pid), HERD_LOG_I("port", port),
                                 HERD_LOG_I("slot", s->index)};
    herd_log(HERD_LOG_INFO, COMPONENT, NULL, f, 4, "replica %u started on 127.0.0.1:%u (pid %d, CPUs from %d)", s->id,
             (unsigned)port, (int)pid, pool->cpus[((uint64_t)s->index * pool->threads) % pool->n_cpus]);
    pool->p.ops->replica_up(pool->p.ops_arg, s->id, "127.0.0.1", port);
}

/* The lowest free slot, or NULL (the table holds 2 x max, so a scale-up
 * finds one unless max replicas all drain at once and max more start). */
static struct slot *free_slot(struct herd_replica_pool *pool) {
    for (uint32_t i = 0; i < pool->n_slots; i++)
        if (pool->slots[i].state == SLOT_FREE) return &pool->slots[i];
    return NULL;
}

static void start_new(struct herd_replica_pool *pool) {
    struct slot *s = free_slot(pool);
    if (!s) {
        herd_log(HERD_LOG_WARN, COMPONENT, NULL, NULL, 0, "no free slot: a replica waits for a drain to end");
        return;
    }
    s->backoff_s = pool->p.backoff_initial_s;
    s->races = 0;
    slot_start(s);
}

/* ---------------------------------------------------------------- exits */

static void describe_exit(int status, char *buf, size_t n) {
    if (WIFEXITED(status))
        snprintf(buf, n, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, n, "ended (wait status 0x%x)", (unsigned)status);
}

/* s's child has exited with status (reaped). */
static void slot_exited(struct slot *s, int status) {
    struct herd_replica_pool *pool = s->pool;
    char how[96];
    describe_exit(status, how, sizeof how);
    uint32_t id = s->id;
    double now = herd_time_now_s();
    double up_s = now - s->started_s;
    enum slot_state was = s->state;
    s->pid = 0;
    s->id = 0;
    evtimer_del(s->timer);
    struct herd_log_field f[] = {HERD_LOG_I("replica", id), HERD_LOG_S("exit", how), HERD_LOG_N("up_s", up_s)};
    if (was == SLOT_DRAINING || was == SLOT_STOPPING) {
        herd_log(was == SLOT_STOPPING ? HERD_LOG_INFO : HERD_LOG_WARN, COMPONENT, NULL, f, 3, "replica %u stopped: %s",
                 id, how);
        s->state = SLOT_FREE;
        pool->p.ops->replica_gone(pool->p.ops_arg, id);
        return;
    }
    HERD_ASSERT(was == SLOT_STARTING || was == SLOT_READY);
    uint16_t port = s->port;
    if (!s->ever_ready && s->races < POOL_MAX_PORT_RACES && port_taken(port)) {
        /* another socket took the port between pick_port and the child's
         * bind: not the replica's fault, so no backoff and no crash */
        herd_log(HERD_LOG_INFO, COMPONENT, NULL, f, 3, "replica %u lost port %u to another socket (%s); starting again",
                 id, (unsigned)port, how);
        s->races++;
        pool->counts.port_races++;
        s->state = SLOT_BACKOFF;
        pool->p.ops->replica_gone(pool->p.ops_arg, id);
        if (s->state == SLOT_BACKOFF) slot_start(s);
        return;
    }
    s->races = 0;
    pool->counts.crashes++;
    if (up_s >= pool->p.backoff_reset_s) s->backoff_s = pool->p.backoff_initial_s;
    double delay = s->backoff_s;
    s->backoff_s = fmin(2 * s->backoff_s, pool->p.backoff_max_s);
    herd_log(HERD_LOG_WARN, COMPONENT, NULL, f, 3, "replica %u %s after %.1f s; restarting in %.1f s", id, how, up_s,
             delay);
    s->state = SLOT_BACKOFF;
    arm(s, delay);
    pool->p.ops->replica_gone(pool->p.ops_arg, id);
}

/* waitpid on each child of ours (never -1: the router may have other
 * children, which are not ours to reap). */
static void reap(struct herd_replica_pool *pool) {
    for (uint32_t i = 0; i < pool->n_slots; i++) {
        struct slot *s = &pool->slots[i];
        if (!alive(s) || s->pid <= 0) continue;
        int status = 0;
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid) slot_exited(s, status);
    }
}

static void on_sigchld(evutil_socket_t sig, short what, void *arg) {
    (void)sig;
    (void)what;
    reap(arg);
}

/* ---------------------------------------------------------------- drain */

static void slot_sigterm(struct slot *s) {
    s->state = SLOT_STOPPING;
    s->deadline_s = herd_time_now_s() + s->pool->p.stop_timeout_s;
    if (kill(s->pid, SIGTERM) != 0)
        herd_log(HERD_LOG_WARN, COMPONENT, NULL, NULL, 0, "replica %u: SIGTERM: %s", s->id, strerror(errno));
    arm(s, s->pool->p.stop_timeout_s);
}

/* Takes s out of the count: a backoff slot is freed, a replica drained. */
static void slot_retire(struct slot *s) {
    struct herd_replica_pool *pool = s->pool;
    if (s->state == SLOT_BACKOFF) {
        evtimer_del(s->timer);
        s->state = SLOT_FREE;
        return;
    }
    HERD_ASSERT(s->state == SLOT_STARTING || s->state == SLOT_READY);
    s->state = SLOT_DRAINING;
    s->deadline_s = herd_time_now_s() + pool->p.drain_timeout_s;
    herd_log(HERD_LOG_INFO, COMPONENT, NULL, NULL, 0, "replica %u draining (scale down)", s->id);
    pool->p.ops->replica_drain(pool->p.ops_arg, s->id);
    if (s->state == SLOT_DRAINING) arm(s, 0); /* the first look at once, from the loop */
}

static void on_slot_timer(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct slot *s = arg;
    struct herd_replica_pool *pool = s->pool;
    switch (s->state) {
    case SLOT_BACKOFF:
        pool->counts.restarts++;
        slot_start(s);
        break;
    case SLOT_DRAINING: {
        uint32_t in_flight = pool->p.ops->replica_in_flight(pool->p.ops_arg, s->id);
        bool late = herd_time_now_s() >= s->deadline_s;
        if (in_flight == 0 || late) {
            if (late)
                herd_log(HERD_LOG_WARN, COMPONENT, NULL, NULL, 0,
                         "replica %u: drain timeout with requests in flight (%u); stopping it", s->id, in_flight);
            slot_sigterm(s);
        } else {
            arm(s, POOL_DRAIN_POLL_S);
        }
        break;
    }
    case SLOT_STOPPING:
        herd_log(HERD_LOG_WARN, COMPONENT, NULL, NULL, 0, "replica %u did not stop within %.0f s: SIGKILL", s->id,
                 pool->p.stop_timeout_s);
        (void)kill(s->pid, SIGKILL);
        break; /* reaped when SIGCHLD comes */
    default: break;
    }
}

/* The slot to retire first: a crashed one waiting (nothing runs), then
 * one not yet ready (nothing in flight, no cache warmed), then the ready
 * one with the fewest requests in flight; the highest slot on ties, so
 * the low CPU slots stay in use. */
static struct slot *pick_victim(struct herd_replica_pool *pool) {
    struct slot *best = NULL;
    int best_rank = 0;
    uint32_t best_in_flight = 0;
    for (uint32_t i = 0; i < pool->n_slots; i++) {
        struct slot *s = &pool->slots[i];
        int rank;
        uint32_t in_flight = 0;
        if (s->state == SLOT_BACKOFF)
            rank = 3;
        else if (s->state == SLOT_STARTING)
            rank = 2;
        else if (s->state == SLOT_READY)
            rank = 1, in_flight = pool->p.ops->replica_in_flight(pool->p.ops_arg, s->id);
        else
            continue;
        if (!best || rank > best_rank || (rank == best_rank && in_flight <= best_in_flight)) {
            best = s;
            best_rank = rank;
            best_in_flight = in_flight;
        }
    }
    return best;
}

/* ---------------------------------------------------------------- scaling */

/* Moves the count of current replicas to want. */
static void scale_to(struct herd_replica_pool *pool, uint32_t want) {
    uint32_t cur = n_current(pool);
    pool->desired = want;
    if (want == cur) return;
    struct herd_log_field f[] = {HERD_LOG_I("from", cur), HERD_LOG_I("to", want)};
    herd_log(HERD_LOG_INFO, COMPONENT, NULL, f, 2, "scaling %s from %u to %u replicas", want > cur ? "up" : "down", cur,
             want);
    if (want > cur) {
        pool->counts.scale_ups++;
        for (uint32_t i = cur; i < want; i++) start_new(pool);
    } else {
        pool->counts.scale_downs++;
        for (uint32_t i = want; i < cur; i++) {
            struct slot *s = pick_victim(pool);
            if (!s) break;
            slot_retire(s);
        }
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct herd_replica_pool *pool = arg;
    reap(pool); /* should a SIGCHLD have been lost to another handler */
    double total = pool->p.ops->observed_waiting(pool->p.ops_arg);
    uint32_t cur = n_current(pool);
    uint32_t want = herd_autoscale_step(&pool->p.as, &pool->hist, herd_time_now_s(), cur, total);
    scale_to(pool, want);
}

void herd_replica_pool_demand(struct herd_replica_pool *pool) {
    if (n_current(pool) > 0) return;
    /* scale from zero through the same rule: it answers at least 1 at once
     * and records it, so the scale-down window keeps the replica */
    uint32_t want = herd_autoscale_step(&pool->p.as, &pool->hist, herd_time_now_s(), 0, 1);
    herd_log(HERD_LOG_INFO, COMPONENT, NULL, NULL, 0, "a request waits and no replica runs: starting one");
    scale_to(pool, want);
}

void herd_replica_pool_replica_ready(struct herd_replica_pool *pool, uint32_t id, bool ready) {
    if (id == 0) return;
    for (uint32_t i = 0; i < pool->n_slots; i++) {
        struct slot *s = &pool->slots[i];
        if (s->id != id) continue;
        if (ready && s->state == SLOT_STARTING) {
            s->state = SLOT_READY;
            s->ever_ready = true;
            s->races = 0;
            herd_log(HERD_LOG_INFO, COMPONENT, NULL, NULL, 0, "replica %u ready after %.1f s", id,
                     herd_time_now_s() - s->started_s);
        } else if (!ready && s->state == SLOT_READY) {
            s->state = SLOT_STARTING; /* counted the same; not ready until the router says so again */
        }
        return;
    }
}

/* ---------------------------------------------------------------- create */

static enum herd_status check_params(const struct herd_replica_pool_params *p, struct herd_error *err) {
    const struct herd_replica_pool_ops *o = p->ops;
    if (!o || !o->replica_up || !o->replica_drain || !o->replica_in_flight || !o->replica_gone || !o->observed_waiting)
        return herd_error_set(err, HERD_E_INVALID, "pool: every op must be set");
    if (!p->model_path || !*p->model_path) return herd_error_set(err, HERD_E_INVALID, "pool: a model is required");
    const struct herd_autoscale_params *a = &p->as;
    if (a->max_replicas < 1 || a->max_replicas > POOL_MAX_REPLICAS || a->min_replicas > a->max_replicas)
        return herd_error_set(err, HERD_E_INVALID, "pool: replicas min %u max %u: need 0 <= min <= max, 1 <= max <= %d",
                              a->min_replicas, a->max_replicas, POOL_MAX_REPLICAS);
    if (!(a->target > 0) || !(a->tolerance >= 0) || !(a->scale_up_window_s >= 0) || !(a->scale_down_window_s >= 0) ||
        a->scale_up_window_s > 3600 || a->scale_down_window_s > 3600)
        return herd_error_set(err, HERD_E_INVALID,
                              "pool: target must be > 0, tolerance >= 0, windows 0..3600 s (Kubernetes' bound)");
    if (!(p->sync_period_s >= 0.001) || !(p->drain_timeout_s >= 0) || !(p->stop_timeout_s >= 0) ||
        !(p->backoff_initial_s >= 0) || !(p->backoff_max_s >= p->backoff_initial_s) || !(p->backoff_reset_s >= 0))
        return herd_error_set(err, HERD_E_INVALID, "pool: sync period >= 1 ms, timeouts >= 0, backoff initial <= max");
    if (p->threads_per_replica > CPU_SETSIZE)
        return herd_error_set(err, HERD_E_INVALID, "pool: threads per replica %u > %d", p->threads_per_replica,
                              CPU_SETSIZE);
    return HERD_OK;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    HERD_ASSERT(d); /* start-up allocation */
    memcpy(d, s, n);
    return d;
}

enum herd_status herd_replica_pool_create(struct event_base *base, const struct herd_replica_pool_params *p,
                                          struct herd_replica_pool **out, struct herd_error *err) {
    *out = NULL;
    enum herd_status rc = check_params(p, err);
    if (rc != HERD_OK) return rc;
    const char *path = p->herd_path ? p->herd_path : "/proc/self/exe";
    if (access(path, X_OK) != 0)
        return herd_error_set(err, HERD_E_IO, "pool: %s is not an executable herd: %s", path, strerror(errno));

    struct herd_replica_pool *pool = calloc(1, sizeof *pool);
    HERD_ASSERT(pool);
    pool->base = base;
    pool->p = *p;
    pool->next_id = 1;
    /* /proc/self/exe is resolved now: the router's binary may be replaced
     * on disk by an upgrade while it runs, and its children should run the
     * same code as it does */
    char exe[4096];
    ssize_t n = p->herd_path ? -1 : readlink(path, exe, sizeof exe - 1);
    if (n > 0) exe[n] = 0;
    pool->herd_path = dup_str(n > 0 ? exe : path);
    pool->model_path = dup_str(p->model_path);
    for (const char *const *a = p->serve_args; a && *a; a++) pool->n_serve_args++;
    pool->serve_args = calloc(pool->n_serve_args + 1, sizeof *pool->serve_args);
    HERD_ASSERT(pool->serve_args);
    for (uint32_t i = 0; i < pool->n_serve_args; i++) pool->serve_args[i] = dup_str(p->serve_args[i]);
    pool->p.serve_args = NULL;
    pool->p.herd_path = pool->herd_path;
    pool->p.model_path = pool->model_path;

    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &allowed)) pool->cpus[pool->n_cpus++] = c;
    }
    if (pool->n_cpus == 0) pool->cpus[pool->n_cpus++] = 0; /* defensive: the call cannot fail for our own pid */
    uint32_t max = p->as.max_replicas;
    pool->threads = p->threads_per_replica;
    if (pool->threads == 0) pool->threads = pool->n_cpus / max > 0 ? pool->n_cpus / max : 1;
    if ((uint64_t)pool->threads * max > pool->n_cpus)
        herd_log(HERD_LOG_WARN, COMPONENT, NULL, NULL, 0,
                 "%u replicas x %u threads need %u CPUs, this process may use %u: CPU sets wrap and share",
                 (unsigned)max, (unsigned)pool->threads, (unsigned)(max * pool->threads), (unsigned)pool->n_cpus);

    pool->n_slots = 2 * max;
    pool->slots = calloc(pool->n_slots, sizeof *pool->slots);
    HERD_ASSERT(pool->slots);
    for (uint32_t i = 0; i < pool->n_slots; i++) {
        struct slot *s = &pool->slots[i];
        s->pool = pool;
        s->index = i;
        s->backoff_s = p->backoff_initial_s;
        s->timer = evtimer_new(base, on_slot_timer, s);
        HERD_ASSERT(s->timer);
    }
    uint32_t cap = herd_autoscale_history_cap(&p->as, p->sync_period_s);
    pool->hist_storage = calloc(cap, sizeof *pool->hist_storage);
    HERD_ASSERT(pool->hist_storage);
    herd_autoscale_history_init(&pool->hist, pool->hist_storage, cap);

    pool->sigchld = evsignal_new(base, SIGCHLD, on_sigchld, pool);
    pool->tick = event_new(base, -1, EV_PERSIST, on_tick, pool);
    HERD_ASSERT(pool->sigchld && pool->tick);
    struct timeval period = tv_of(p->sync_period_s);
    if (evsignal_add(pool->sigchld, NULL) != 0 || evtimer_add(pool->tick, &period) != 0) {
        rc = herd_error_set(err, HERD_E_IO, "pool: cannot watch SIGCHLD or start the sync timer");
        goto out;
    }

    uint32_t initial = p->initial_replicas;
    if (initial < p->as.min_replicas) initial = p->as.min_replicas;
    if (initial > max) initial = max;
    pool->desired = initial;
    /* the count asked for is the first recommendation: without it the
     * first sync of an idle start would scale down at once, as an empty
     * history sets no bound */
    (void)herd_autoscale_stabilize(&pool->p.as, &pool->hist, herd_time_now_s(), initial, initial);
    for (uint32_t i = 0; i < initial; i++) start_new(pool);
    *out = pool;
    pool = NULL;
out:
    herd_replica_pool_destroy(pool);
    return rc;
}

/* ---------------------------------------------------------------- destroy */

void herd_replica_pool_destroy(struct herd_replica_pool *pool) {
    if (!pool) return;
    if (pool->tick) event_free(pool->tick);
    if (pool->sigchld) event_free(pool->sigchld);
    uint32_t left = 0;
    for (uint32_t i = 0; i < pool->n_slots; i++) {
        struct slot *s = &pool->slots[i];
        if (alive(s) && s->pid > 0) {
            (void)kill(s->pid, SIGTERM);
            left++;
        }
    }
    /* bounded: children that do not exit by the deadline get SIGKILL */
    double deadline = herd_time_now_s() + pool->p.stop_timeout_s;
    while (left > 0) {
        left = 0;
        for (uint32_t i = 0; i < pool->n_slots; i++) {
            struct slot *s = &pool->slots[i];
            if (!alive(s) || s->pid <= 0) continue;
            int status;
            pid_t r = waitpid(s->pid, &status, WNOHANG);
            if (r == s->pid || (r < 0 && errno == ECHILD))
                s->pid = 0;
            else
                left++;
        }
        if (left == 0) break;
        if (herd_time_now_s() >= deadline) {
            for (uint32_t i = 0; i < pool->n_slots; i++) {
                struct slot *s = &pool->slots[i];
                if (!alive(s) || s->pid <= 0) continue;
                herd_log(HERD_LOG_WARN, COMPONENT, NULL, NULL, 0, "replica %u did not stop: SIGKILL", s->id);
                (void)kill(s->pid, SIGKILL);
                while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR) {
                }
                s->pid = 0;
            }
            break;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000}; /* 20 ms: a child's exit is noticed fast */
        nanosleep(&ts, NULL);
    }
    for (uint32_t i = 0; pool->slots && i < pool->n_slots; i++)
        if (pool->slots[i].timer) event_free(pool->slots[i].timer);
    free(pool->slots);
    free(pool->hist_storage);
    for (uint32_t i = 0; pool->serve_args && i < pool->n_serve_args; i++) free(pool->serve_args[i]);
    free(pool->serve_args);
    free(pool->model_path);
    free((char *)pool->herd_path);
    free(pool);
}

/* ---------------------------------------------------------------- status */

void herd_replica_pool_status(const struct herd_replica_pool *pool, struct herd_replica_pool_status *out) {
    *out = pool->counts;
    out->running = out->ready = out->starting = out->draining = out->backoff = 0;
    for (uint32_t i = 0; i < pool->n_slots; i++) {
        const struct slot *s = &pool->slots[i];
        out->running += alive(s);
        out->ready += s->state == SLOT_READY;
        out->starting += s->state == SLOT_STARTING;
        out->draining += s->state == SLOT_DRAINING || s->state == SLOT_STOPPING;
        out->backoff += s->state == SLOT_BACKOFF;
    }
    out->desired = pool->desired;
}

static const struct slot *find(const struct herd_replica_pool *pool, uint32_t id) {
    for (uint32_t i = 0; id && i < pool->n_slots; i++)
        if (pool->slots[i].id == id) return &pool->slots[i];
    return NULL;
}

uint16_t herd_replica_pool_replica_port(const struct herd_replica_pool *pool, uint32_t id) {
    const struct slot *s = find(pool, id);
    return s ? s->port : 0;
}

int herd_replica_pool_replica_pid(const struct herd_replica_pool *pool, uint32_t id) {
    const struct slot *s = find(pool, id);
    return s ? (int)s->pid : 0;
}

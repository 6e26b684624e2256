/* A TCP connection with evbuffers on a libevent loop (sock.h). Two
 * events: reading (persistent while reading is on and the input is under
 * its limit) and writing (only while output waits for the socket, or a
 * connect is in progress; its timeout is the write timeout, which libevent
 * restarts each time the socket takes bytes). */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <linux/io_uring.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "http/sock.h"

/* The most one recv() takes: a small message in one, a large body in a
 * few dozen. */
#define READ_CHUNK 16384
/* Reads and writes one batch holds (each list); past it, direct calls. */
#define BATCH_MAX  64
/* Output pieces one batched write sends (the rest waits for the next). */
#define BATCH_IOV  8

struct io_batch;

struct herd_sock {
    struct event_base *base;
    int fd;
    struct evbuffer *in, *out;
    struct evbuffer_cb_entry *in_cb; /* enabled only while reading is paused at the limit */
    struct event *rev, *wev;
    const struct herd_sock_ops *ops;
    void *arg;
    bool want_read;  /* the owner's wish */
    bool reading;    /* rev is added */
    bool writing;    /* wev is added: output waits, or the connect */
    bool connecting; /* herd_sock_connect's connect is in progress */
    bool at_limit;   /* reading paused: the input reached read_limit */
    size_t read_limit;
    struct timeval write_tv;
    bool has_write_timeout;
    struct io_batch *batch; /* the loop thread's batch when on, at creation */
    bool queued_recv, queued_send;
};

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);

/* ------------------------------------------------------------ batches */

/* io_uring as a batch of system calls, never as asynchronous I/O: every
 * operation is non-blocking (MSG_DONTWAIT), so it completes inside the
 * io_uring_enter that submits it (an empty socket or a full one answers
 * EAGAIN at once), and the kernel holds no buffer or socket of ours after
 * that call returns. A loop turn's reads go in one such call, the writes
 * its callbacks queued in the next, where each would have been a recv() or
 * a writev() of its own: on a virtual machine whose system call costs
 * about a microsecond, that is most of what a proxy spends per request
 * beyond the TCP work itself. */
struct io_ring {
    int fd;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *rings;
    size_t rings_len, sqes_len;
};

struct batch_op {
    struct herd_sock *s; /* NULL once the socket is freed */
    bool send;
    int res; /* the completion's: bytes, or -errno */
    struct msghdr msg;
    struct iovec iov[BATCH_IOV];
};

struct io_batch {
    struct event_base *base;
    struct io_ring ring;
    struct herd_sock *recv[BATCH_MAX], *send[BATCH_MAX]; /* queued; NULL: freed since */
    unsigned n_recv, n_send;
    struct batch_op ops[2 * BATCH_MAX]; /* the round being applied */
    unsigned n_ops;
    char (*bufs)[READ_CHUNK]; /* one per read of a round */
    unsigned n_socks;         /* sockets pointing here: freed after the last */
    bool ended;               /* herd_sock_batch_end: nothing more is queued */
};

static _Thread_local struct io_batch *tl_batch;

static void ring_close(struct io_ring *r) {
    if (r->sqes && r->sqes != MAP_FAILED) munmap(r->sqes, r->sqes_len);
    if (r->rings && r->rings != MAP_FAILED) munmap(r->rings, r->rings_len);
    if (r->fd >= 0) close(r->fd);
}

static bool ring_open(struct io_ring *r, unsigned entries) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    memset(r, 0, sizeof *r);
    r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (r->fd < 0) return false; /* an old kernel, or io_uring not allowed here (seccomp, sysctl) */
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
        ring_close(r);
        return false;
    }
    const size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    const size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    r->rings_len = sq_len > cq_len ? sq_len : cq_len;
    r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
    r->rings = mmap(NULL, r->rings_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
    r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (r->rings == MAP_FAILED || r->sqes == MAP_FAILED) {
        ring_close(r);
        return false;
    }
    char *m = r->rings;
    r->sq_head = (unsigned *)(m + p.sq_off.head);
    r->sq_tail = (unsigned *)(m + p.sq_off.tail);
    r->sq_mask = (unsigned *)(m + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(m + p.sq_off.array);
    r->cq_head = (unsigned *)(m + p.cq_off.head);
    r->cq_tail = (unsigned *)(m + p.cq_off.tail);
    r->cq_mask = (unsigned *)(m + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(m + p.cq_off.cqes);
    return true;
}

/* Takes the completions there are into ops[].res; returns how many. */
static unsigned ring_reap(struct io_ring *r, struct batch_op *ops) {
    unsigned head = *r->cq_head, n = 0;
    const unsigned tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
    for (; head != tail; head++, n++) {
        const struct io_uring_cqe *cqe = &r->cqes[head & *r->cq_mask];
        ops[cqe->user_data].res = cqe->res;
    }
    __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
    return n;
}

/* The submission slot at tail, cleared and entered in the ring's array
 * (published when the tail is stored). */
static struct io_uring_sqe *ring_sqe(struct io_ring *r, unsigned tail) {
    const unsigned idx = tail & *r->sq_mask;
    struct io_uring_sqe *sqe = &r->sqes[idx];
    memset(sqe, 0, sizeof *sqe);
    r->sq_array[idx] = idx;
    return sqe;
}

/* A non-blocking recv() of up to len bytes of fd into buf. */
static void prep_recv(struct io_uring_sqe *sqe, int fd, void *buf, unsigned len) {
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = fd;
    sqe->addr = (unsigned long)buf;
    sqe->len = len;
    sqe->msg_flags = MSG_DONTWAIT;
}

/* Submits ops [0, n) and returns once all have completed (each is
 * non-blocking, so that is the submitting call itself). false: the ring
 * failed before taking them all; those it did not take are marked EAGAIN
 * (nothing read or written: the socket is tried again from the loop). */
static bool ring_run(struct io_ring *r, struct batch_op *ops, char (*bufs)[READ_CHUNK], unsigned n) {
    unsigned tail = *r->sq_tail, k = 0;
    const unsigned first = *r->sq_head;
    for (unsigned i = 0; i < n; i++, tail++) {
        struct batch_op *op = &ops[i];
        struct io_uring_sqe *sqe = ring_sqe(r, tail);
        sqe->user_data = i;
        if (op->send) {
            sqe->opcode = IORING_OP_SENDMSG;
            sqe->fd = op->s->fd;
            sqe->addr = (unsigned long)&op->msg;
            sqe->len = 1;
            sqe->msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
        } else {
            prep_recv(sqe, op->s->fd, bufs[k++], READ_CHUNK);
        }
        op->res = -EAGAIN;
    }
    __atomic_store_n(r->sq_tail, tail, __ATOMIC_RELEASE);
    unsigned done = 0;
    for (;;) {
        done += ring_reap(r, ops);
        if (done >= n) return true;
        const unsigned submitted = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE) - first;
        if (syscall(__NR_io_uring_enter, r->fd, n - submitted, n - done, IORING_ENTER_GETEVENTS, NULL, 0) < 0 &&
            errno != EINTR && errno != EAGAIN && errno != EBUSY) {
            /* withdraw what the kernel did not take */
            __atomic_store_n(r->sq_tail, __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE), __ATOMIC_RELEASE);
            ring_reap(r, ops);
            return false;
        }
    }
}

/* One operation alone: the plain call is cheaper than a ring round trip
 * (at one connection every turn has a single read or write). */
static void direct_run(struct batch_op *op, char *buf) {
    const ssize_t r = op->send ? sendmsg(op->s->fd, &op->msg, MSG_DONTWAIT | MSG_NOSIGNAL)
                               : recv(op->s->fd, buf, READ_CHUNK, MSG_DONTWAIT);
    op->res = r < 0 ? -errno : (int)r;
}

static void batch_free(struct io_batch *b) {
    ring_close(&b->ring);
    free(b->bufs);
    free(b);
}

/* Whether this kernel answers a non-blocking read of an empty socket in
 * the submitting call (EAGAIN), as batching needs: one that waited for
 * data instead would stall the loop. */
static bool ring_answers_at_once(struct io_ring *r) {
    int fd[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd) != 0) return false;
    char c;
    const unsigned tail = *r->sq_tail;
    prep_recv(ring_sqe(r, tail), fd[0], &c, 1);
    __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
    struct batch_op op = {.res = 1};
    bool ok = false;
    if (syscall(__NR_io_uring_enter, r->fd, 1, 0, 0, NULL, 0) == 1) {
        if (ring_reap(r, &op) == 1) {
            ok = op.res == -EAGAIN;
        } else { /* it waits for data: give it some, and take it back */
            const ssize_t w = write(fd[1], "x", 1);
            (void)w;
            syscall(__NR_io_uring_enter, r->fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0);
            ring_reap(r, &op);
        }
    }
    close(fd[0]);
    close(fd[1]);
    return ok;
}

bool herd_sock_batch_begin(struct event_base *base) {
    if (tl_batch) return tl_batch->base == base && !tl_batch->ended;
    struct io_batch *b = calloc(1, sizeof *b);
    if (!b) return false;
    b->bufs = malloc(BATCH_MAX * sizeof *b->bufs);
    if (!b->bufs || !ring_open(&b->ring, 2 * BATCH_MAX)) {
        free(b->bufs);
        free(b);
        return false;
    }
    if (!ring_answers_at_once(&b->ring)) {
        batch_free(b);
        return false;
    }
    b->base = base;
    tl_batch = b;
    return true;
}

void herd_sock_batch_end(void) {
    struct io_batch *b = tl_batch;
    if (!b) return;
    herd_sock_batch_run();
    b->ended = true;
    tl_batch = NULL;
    if (!b->n_socks) batch_free(b);
}

/* Puts s on one of the batch's lists (once: *queued marks it there);
 * false when it makes a direct call instead (no batch, or the list full). */
static bool enqueue(struct herd_sock *s, struct herd_sock **list, unsigned *n, bool *queued) {
    if (*queued) return true;
    if (*n == BATCH_MAX) return false;
    list[(*n)++] = s;
    *queued = true;
    return true;
}

static bool queue_recv(struct herd_sock *s) {
    struct io_batch *b = s->batch;
    return b && !b->ended && enqueue(s, b->recv, &b->n_recv, &s->queued_recv);
}

static bool queue_send(struct herd_sock *s) {
    struct io_batch *b = s->batch;
    return b && !b->ended && enqueue(s, b->send, &b->n_send, &s->queued_send);
}

/* s is being freed: nothing of the batch refers to it any more. */
static void batch_forget(struct herd_sock *s) {
    struct io_batch *b = s->batch;
    if (!b) return;
    for (unsigned i = 0; s->queued_recv && i < b->n_recv; i++)
        if (b->recv[i] == s) b->recv[i] = NULL;
    for (unsigned i = 0; s->queued_send && i < b->n_send; i++)
        if (b->send[i] == s) b->send[i] = NULL;
    for (unsigned i = 0; i < b->n_ops; i++)
        if (b->ops[i].s == s) b->ops[i].s = NULL;
    if (--b->n_socks == 0 && b->ended) batch_free(b);
}

static void received(struct herd_sock *s, ssize_t n, int err, const char *buf);
static void sent(struct herd_sock *s, int res);

void herd_sock_batch_run(void) {
    struct io_batch *b = tl_batch;
    if (!b) return;
    while (b->n_recv || b->n_send) {
        unsigned n = 0;
        for (unsigned i = 0; i < b->n_send; i++) {
            struct herd_sock *s = b->send[i];
            if (!s) continue;
            s->queued_send = false;
            if (s->writing || s->fd < 0 || !evbuffer_get_length(s->out)) continue;
            struct batch_op *op = &b->ops[n++];
            op->s = s;
            op->send = true;
            memset(&op->msg, 0, sizeof op->msg);
            const int pieces = evbuffer_peek(s->out, -1, NULL, op->iov, BATCH_IOV);
            op->msg.msg_iov = op->iov;
            op->msg.msg_iovlen = (size_t)(pieces < BATCH_IOV ? pieces : BATCH_IOV);
        }
        for (unsigned i = 0; i < b->n_recv; i++) {
            struct herd_sock *s = b->recv[i];
            if (!s) continue;
            s->queued_recv = false;
            if (!s->reading) continue;
            b->ops[n].s = s;
            b->ops[n++].send = false;
        }
        b->n_send = b->n_recv = 0;
        if (!n) break;
        if (n == 1)
            direct_run(&b->ops[0], b->bufs[0]);
        else if (!ring_run(&b->ring, b->ops, b->bufs, n))
            b->ended = true; /* direct calls from now on */
        b->n_ops = n;
        /* callbacks may free sockets of later ops (batch_forget clears them)
         * and queue more writes (the next round) */
        for (unsigned i = 0, k = 0; i < n; i++) {
            struct batch_op *op = &b->ops[i];
            const char *buf = op->send ? NULL : b->bufs[k++];
            struct herd_sock *s = op->s;
            if (!s) continue;
            if (op->send)
                sent(s, op->res);
            else
                received(s, op->res < 0 ? -1 : op->res, op->res < 0 ? -op->res : 0, buf);
        }
        b->n_ops = 0;
    }
}

void herd_sock_batch_dispatch(struct event_base *base) {
    if (!tl_batch || tl_batch->base != base) {
        event_base_dispatch(base);
        return;
    }
    /* a turn at a time: what the turn queued goes out after it */
    while (event_base_loop(base, EVLOOP_ONCE) == 0) {
        herd_sock_batch_run();
        if (event_base_got_exit(base) || event_base_got_break(base)) break;
    }
}

/* rev added exactly when wanted, connected and under the limit */
static void update_reading(struct herd_sock *s) {
    const bool on = s->want_read && s->rev && !s->connecting && !s->at_limit;
    if (on == s->reading) return;
    s->reading = on;
    if (on)
        event_add(s->rev, NULL);
    else
        event_del(s->rev);
}

static void start_writing(struct herd_sock *s) {
    if (s->writing) return;
    s->writing = true;
    event_add(s->wev, s->has_write_timeout && !s->connecting ? &s->write_tv : NULL);
}

static void stop_writing(struct herd_sock *s) {
    if (!s->writing) return;
    s->writing = false;
    event_del(s->wev);
}

/* The input changed: once the owner has parsed it below the limit,
 * reading resumes. */
static void on_input_change(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg) {
    (void)info;
    struct herd_sock *s = arg;
    if (!s->at_limit || (s->read_limit && evbuffer_get_length(b) >= s->read_limit)) return;
    s->at_limit = false;
    evbuffer_cb_set_flags(b, s->in_cb, 0);
    update_reading(s);
}

static bool make_events(struct herd_sock *s, int fd) {
    s->fd = fd;
    s->rev = event_new(s->base, fd, EV_READ | EV_PERSIST, on_readable, s);
    s->wev = event_new(s->base, fd, EV_WRITE | EV_PERSIST, on_writable, s);
    return s->rev && s->wev;
}

struct herd_sock *herd_sock_new(struct event_base *base, int fd, const struct herd_sock_ops *ops, void *arg) {
    struct herd_sock *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->base = base;
    s->fd = -1;
    s->ops = ops;
    s->arg = arg;
    s->in = evbuffer_new();
    s->out = evbuffer_new();
    s->in_cb = s->in ? evbuffer_add_cb(s->in, on_input_change, s) : NULL;
    if (!s->in || !s->out || !s->in_cb || (fd >= 0 && !make_events(s, fd))) {
        s->fd = -1; /* the caller still owns fd */
        herd_sock_free(s);
        return NULL;
    }
    evbuffer_cb_set_flags(s->in, s->in_cb, 0);
    if (tl_batch && tl_batch->base == base) {
        s->batch = tl_batch;
        tl_batch->n_socks++;
    }
    return s;
}

void herd_sock_free(struct herd_sock *s) {
    if (!s) return;
    batch_forget(s);
    if (s->rev) event_free(s->rev);
    if (s->wev) event_free(s->wev);
    if (s->fd >= 0) close(s->fd);
    if (s->in) evbuffer_free(s->in);
    if (s->out) evbuffer_free(s->out);
    free(s);
}

int herd_sock_connect(struct herd_sock *s, const struct sockaddr *addr, socklen_t len) {
    if (s->fd >= 0) {
        errno = EISCONN;
        return -1;
    }
    const int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, addr, len) != 0 && errno != EINPROGRESS) {
        const int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (!make_events(s, fd)) {
        errno = ENOMEM;
        return -1; /* fd is s's now: closed by herd_sock_free */
    }
    s->connecting = true;
    start_writing(s); /* writable once connected (or failed) */
    return 0;
}

struct evbuffer *herd_sock_input(struct herd_sock *s) {
    return s->in;
}
struct evbuffer *herd_sock_output(struct herd_sock *s) {
    return s->out;
}
int herd_sock_fd(const struct herd_sock *s) { return s->fd; }

void herd_sock_set_reading(struct herd_sock *s, bool on) {
    s->want_read = on;
    update_reading(s);
}

void herd_sock_set_read_limit(struct herd_sock *s, size_t bytes) { s->read_limit = bytes; }

void herd_sock_set_write_timeout(struct herd_sock *s, double seconds) {
    s->has_write_timeout = seconds > 0;
    s->write_tv.tv_sec = (time_t)seconds;
    s->write_tv.tv_usec = (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6);
}

void herd_sock_flush(struct herd_sock *s) {
    /* waiting for the socket already: writing again now would change
     * nothing, and the write timeout keeps running from the last progress */
    if (s->writing || s->fd < 0 || !evbuffer_get_length(s->out) || queue_send(s)) return;
    evbuffer_write(s->out, s->fd); /* an error is met again, and reported, by on_writable */
    if (evbuffer_get_length(s->out)) start_writing(s);
}

size_t herd_sock_pending(const struct herd_sock *s) { return evbuffer_get_length(s->out); }
bool herd_sock_waiting(const struct herd_sock *s) { return s->writing && !s->connecting; }

/* ------------------------------------------------------------ events */

/* One recv() per readiness (the loop is level-triggered: what is left
 * comes on the next turn), into the stack and then the input: a small
 * message takes a small chain, where reading into a reserved chunk of the
 * input would allocate, and on drain free, READ_CHUNK bytes for it. The
 * callback is the last thing done: the owner may free s in it. */
static void on_readable(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    struct herd_sock *s = arg;
    if (queue_recv(s)) return;
    char buf[READ_CHUNK];
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    received(s, n, n < 0 ? errno : 0, buf);
}

/* What one recv() returned (n, or -1 and err), whether made here or in a
 * batch. The callback is the last thing done: the owner may free s in
 * it. */
static void received(struct herd_sock *s, ssize_t n, int err, const char *buf) {
    if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)) return;
    if (n <= 0 || evbuffer_add(s->in, buf, (size_t)n) != 0) {
        const int e = n < 0 ? err : ENOMEM;
        s->want_read = false;
        update_reading(s);
        s->ops->on_event(s, n == 0 ? HERD_SOCK_EOF : HERD_SOCK_ERROR, n == 0 ? 0 : e, s->arg);
        return;
    }
    if (s->read_limit && evbuffer_get_length(s->in) >= s->read_limit) {
        s->at_limit = true;
        evbuffer_cb_set_flags(s->in, s->in_cb, EVBUFFER_CB_ENABLED);
        update_reading(s);
    }
    s->ops->on_read(s, s->arg);
}

/* A batched write's result: what the socket did not take waits for it
 * (EPOLLOUT and the write timeout, as after a direct flush); all of it
 * written is on_drained, since the owner saw it pending after its flush. */
static void sent(struct herd_sock *s, int res) {
    if (res == -EAGAIN || res == -EINTR) res = 0;
    if (res < 0) {
        s->ops->on_event(s, HERD_SOCK_ERROR, -res, s->arg);
        return;
    }
    evbuffer_drain(s->out, (size_t)res);
    if (evbuffer_get_length(s->out)) {
        start_writing(s);
        return;
    }
    if (s->ops->on_drained) s->ops->on_drained(s, s->arg);
}

static void on_writable(evutil_socket_t fd, short what, void *arg) {
    struct herd_sock *s = arg;
    if (s->connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        if (err == EINPROGRESS) return;
        s->connecting = false;
        stop_writing(s);
        if (err) {
            s->ops->on_event(s, HERD_SOCK_ERROR, err, s->arg);
            return;
        }
        update_reading(s);
        herd_sock_flush(s); /* what was queued during the connect */
        s->ops->on_event(s, HERD_SOCK_CONNECTED, 0, s->arg);
        return;
    }
    if (what & EV_TIMEOUT) {
        stop_writing(s);
        s->ops->on_event(s, HERD_SOCK_TIMEOUT, ETIMEDOUT, s->arg);
        return;
    }
    if (evbuffer_write(s->out, fd) < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        const int e = errno;
        stop_writing(s);
        s->ops->on_event(s, HERD_SOCK_ERROR, e, s->arg);
        return;
    }
    if (evbuffer_get_length(s->out)) return;
    stop_writing(s);
    if (s->ops->on_drained) s->ops->on_drained(s, s->arg);
}

/* ------------------------------------------------------------ deadlines */

void herd_deadlines_init(struct herd_deadlines *d, struct event_base *base) {
    d->base = base;
    d->n = 0;
}

void herd_deadline_arm(struct herd_deadlines *d, struct event *ev, double seconds) {
    const struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    if (seconds > 0) {
        for (unsigned i = 0; i < d->n; i++)
            if (d->seconds[i] == seconds) {
                event_add(ev, d->common[i]);
                return;
            }
        const struct timeval *common =
            d->n < HERD_DEADLINE_LENGTHS ? event_base_init_common_timeout(d->base, &tv) : NULL;
        if (common) {
            d->seconds[d->n] = seconds;
            d->common[d->n++] = common;
            event_add(ev, common);
            return;
        }
    }
    event_add(ev, &tv);
}

/* A TCP connection on a libevent loop, with an input and an output
 * evbuffer: what the HTTP server and client build on. It does what
 * libevent's socket bufferevent did for them, with fewer system calls per
 * message:
 *   - a read is one recv() into the input's free space: no FIONREAD
 *     ioctl first (a bufferevent asks the kernel how much is waiting
 *     before every read, one extra system call per message, which is
 *     ~10 % of a small proxied request's CPU);
 *   - output is written when the owner flushes, not a loop turn later,
 *     and EPOLLOUT is watched only while some of it waits for the socket;
 *   - callbacks run inline from the loop, never deferred.
 *
 * Reading is on while the owner wants it and the input holds less than
 * the read limit (a peer that sends faster than it is answered is not
 * buffered without bound); draining the input below the limit resumes it.
 * A write that makes no progress for the write timeout is an error
 * (HERD_SOCK_TIMEOUT): a peer that reads nothing is dropped.
 *
 * Everything runs on the loop's thread. */
#ifndef HERD_HTTP_SOCK_H
#define HERD_HTTP_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct event_base;
struct evbuffer;
struct herd_sock;

enum herd_sock_event {
    HERD_SOCK_CONNECTED, /* herd_sock_connect's connection is up */
    HERD_SOCK_EOF,       /* the peer closed its side; reading stops */
    HERD_SOCK_ERROR,     /* a read, write or connect failed (err: its errno) */
    HERD_SOCK_TIMEOUT,   /* the output waited longer than the write timeout */
};

struct herd_sock_ops {
    /* Bytes were added to the input. */
    void (*on_read)(struct herd_sock *s, void *arg);
    /* Output that had waited for the socket is all written (not called
     * when a flush writes everything at once). May be NULL. */
    void (*on_drained)(struct herd_sock *s, void *arg);
    /* One of enum herd_sock_event; err is an errno for HERD_SOCK_ERROR. */
    void (*on_event)(struct herd_sock *s, enum herd_sock_event what, int err, void *arg);
};

/* A connection on fd (accepted: it is made non-blocking here), or with
 * fd -1 one that herd_sock_connect opens. The socket closes with
 * herd_sock_free. Reading starts off. NULL: out of memory (fd is not
 * closed). */
struct herd_sock *herd_sock_new(struct event_base *base, int fd, const struct herd_sock_ops *ops, void *arg);
void herd_sock_free(struct herd_sock *s);

/* Opens a non-blocking connection; HERD_SOCK_CONNECTED or
 * HERD_SOCK_ERROR follows from the loop. Output queued before it is
 * written once connected. -1 with errno set when it failed at once. */
int herd_sock_connect(struct herd_sock *s, const struct sockaddr *addr, socklen_t len);

struct evbuffer *herd_sock_input(struct herd_sock *s);
struct evbuffer *herd_sock_output(struct herd_sock *s);
int herd_sock_fd(const struct herd_sock *s);

/* Reading wanted or not (a paused reader, a connection that closes). */
void herd_sock_set_reading(struct herd_sock *s, bool on);
/* The input level past which reading pauses (0: none). */
void herd_sock_set_read_limit(struct herd_sock *s, size_t bytes);
/* The longest a write may wait for the peer (0: for ever). */
void herd_sock_set_write_timeout(struct herd_sock *s, double seconds);

/* Writes what the output holds now; what the socket does not take waits
 * for it (and the write timeout runs). A write error is reported from the
 * loop, never from inside this call. */
void herd_sock_flush(struct herd_sock *s);
/* Output bytes not yet written. */
size_t herd_sock_pending(const struct herd_sock *s);
/* Some output waits for the socket (the write timeout is running). */
bool herd_sock_waiting(const struct herd_sock *s);

/* -------------------------------------------------------- batched I/O */

/* Batched I/O for the loop base run by the calling thread: the reads a
 * loop turn's readiness asks for go to the kernel in one io_uring_enter
 * after the turn, and the writes that flushes queued in the next, instead
 * of one recv() or writev() each (about 1 us of system call entry apiece
 * on a virtual machine, most of a proxy's cost per request beyond the TCP
 * work). Every operation is non-blocking and complete when that call
 * returns: io_uring batches the calls, nothing is in flight afterwards.
 * Only sockets made on base by this thread after begin take part.
 *
 * The loop must then be run by herd_sock_batch_dispatch, a turn at a
 * time with herd_sock_batch_run after each: a flush only queues its write
 * until the turn ends, and a herd_sock_pending after it still counts what
 * was queued (on_drained follows once it is written).
 * false: not available here (a kernel without io_uring, or one that does
 * not allow it); everything stays direct, as without begin. */
bool herd_sock_batch_begin(struct event_base *base);
/* Carries out what the turn queued, and what the callbacks it runs queue
 * in turn, until nothing is queued. */
void herd_sock_batch_run(void);
/* Runs base's loop until it is exited or broken: a turn at a time with
 * herd_sock_batch_run after each while this thread batches base, else
 * event_base_dispatch. */
void herd_sock_batch_dispatch(struct event_base *base);
/* Runs what is queued and stops batching on this thread (sockets that
 * still exist go on with direct calls). */
void herd_sock_batch_end(void);

/* ------------------------------------------------------------ deadlines */

/* Deadlines of a few fixed lengths (a server's idle, header and body
 * timeouts, a client's head and pool timeouts), armed and disarmed per
 * request. libevent keeps timers in a heap, O(log n) per add and delete;
 * timers of a length registered as a common timeout sit in a queue of
 * their own instead, O(1). The first 16 lengths armed are registered. */
#define HERD_DEADLINE_LENGTHS 16
struct herd_deadlines {
    struct event_base *base;
    unsigned n;
    double seconds[HERD_DEADLINE_LENGTHS];
    const struct timeval *common[HERD_DEADLINE_LENGTHS];
};

void herd_deadlines_init(struct herd_deadlines *d, struct event_base *base);
/* (Re)arms the timer ev to fire in seconds (0: on the next loop turn). */
void herd_deadline_arm(struct herd_deadlines *d, struct event *ev, double seconds);

#endif

/* A TCP connection with evbuffers on a libevent loop (sock.h). Two
 * events: reading (persistent while reading is on and the input is under
 * its limit) and writing (only while output waits for the socket, or a
 * connect is in progress; its timeout is the write timeout, which libevent
 * restarts each time the socket takes bytes). */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/sock.h"

/* The most one recv() takes: a small message in one, a large body in a
 * few dozen. */
#define READ_CHUNK 16384

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
};

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);

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
    return s;
}

void herd_sock_free(struct herd_sock *s) {
    if (!s) return;
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
    if (s->writing || s->fd < 0 || !evbuffer_get_length(s->out)) return;
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
    char buf[READ_CHUNK];
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0 || evbuffer_add(s->in, buf, (size_t)n) != 0) {
        const int e = n < 0 ? errno : ENOMEM;
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

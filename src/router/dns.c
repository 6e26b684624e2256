/* --backends-dns NAME:PORT: every A and AAAA record of NAME is a replica
 * (a Kubernetes headless Service lists one per ready pod), re-resolved
 * every resolve_every_s. getaddrinfo blocks, so it runs on a thread of its
 * own; the loop's tick picks up each new answer under the lock and adds
 * the new addresses and drains the vanished ones (a drained replica takes
 * no new requests and is removed once its requests have finished, so
 * nothing in flight is dropped). A failed lookup (EAI_AGAIN: the resolver
 * is down) keeps the replicas as they are; a name with no records
 * (EAI_NONAME, EAI_NODATA) means there are none. */
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include "base/log.h"
#include "router/router_internal.h"

#define DNS_MAX_ADDRS 256

struct router_dns {
    char name[256];
    char port[8];
    double every_s;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop;
    /* the latest answer, under lock */
    uint64_t generation, applied;
    char addrs[DNS_MAX_ADDRS][INET6_ADDRSTRLEN];
    uint32_t n_addrs;
    char error[160];
    /* scratch: the resolver thread's lookup, and the loop's copy */
    char looked_up[DNS_MAX_ADDRS][INET6_ADDRSTRLEN];
    char applying[DNS_MAX_ADDRS][INET6_ADDRSTRLEN];
};

/* One lookup; the addresses sorted and deduplicated, or false with why. */
static bool resolve(struct router_dns *d, char out[][INET6_ADDRSTRLEN], uint32_t *n, char *why, size_t why_len) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    const int rc = getaddrinfo(d->name, d->port, &hints, &res);
    *n = 0;
    if (rc == EAI_NONAME
#ifdef EAI_NODATA
        || rc == EAI_NODATA
#endif
    )
        return true; /* no records: no replicas */
    if (rc != 0) {
        snprintf(why, why_len, "%s", gai_strerror(rc));
        return false;
    }
    for (struct addrinfo *a = res; a && *n < DNS_MAX_ADDRS; a = a->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        const void *src = a->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                                                  : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
        if (!inet_ntop(a->ai_family, src, ip, sizeof ip)) continue;
        bool dup = false;
        for (uint32_t i = 0; i < *n && !dup; i++) dup = strcmp(out[i], ip) == 0;
        if (!dup) snprintf(out[(*n)++], INET6_ADDRSTRLEN, "%s", ip);
    }
    freeaddrinfo(res);
    return true;
}

static void *resolver(void *arg) {
    struct router_dns *d = arg;
    char(*addrs)[INET6_ADDRSTRLEN] = d->looked_up;
    pthread_mutex_lock(&d->lock);
    while (!d->stop) {
        pthread_mutex_unlock(&d->lock);
        uint32_t n;
        char why[160] = "";
        const bool ok = resolve(d, addrs, &n, why, sizeof why);
        pthread_mutex_lock(&d->lock);
        if (ok) {
            memcpy(d->addrs, addrs, sizeof d->addrs[0] * n);
            d->n_addrs = n;
            d->error[0] = 0;
            d->generation++;
        } else {
            snprintf(d->error, sizeof d->error, "%s", why);
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        const double t = (double)until.tv_nsec / 1e9 + d->every_s;
        until.tv_sec += (time_t)t;
        until.tv_nsec = (long)((t - (double)(time_t)t) * 1e9);
        while (!d->stop && pthread_cond_timedwait(&d->cond, &d->lock, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

enum herd_status router_dns_start(struct herd_router *rt, struct herd_error *err) {
    const char *spec = rt->p.dns_name;
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || !colon[1] || strlen(colon + 1) > 5 || colon - spec >= 256)
        return herd_error_set(err, HERD_E_INVALID, "--backends-dns %s: expected NAME:PORT", spec);
    char *end;
    const unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end || port == 0 || port > 65535)
        return herd_error_set(err, HERD_E_INVALID, "--backends-dns %s: the port is not 1..65535", spec);
    struct router_dns *d = calloc(1, sizeof *d);
    if (!d) return herd_error_set(err, HERD_E_NOMEM, "out of memory");
    memcpy(d->name, spec, (size_t)(colon - spec));
    snprintf(d->port, sizeof d->port, "%lu", port);
    d->every_s = rt->p.resolve_every_s > 0.05 ? rt->p.resolve_every_s : 0.05;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
    if (pthread_create(&d->thread, NULL, resolver, d) != 0) {
        pthread_mutex_destroy(&d->lock);
        pthread_cond_destroy(&d->cond);
        free(d);
        return herd_error_set(err, HERD_E_NOMEM, "cannot start the resolver thread");
    }
    rt->dns = d;
    return HERD_OK;
}

void router_dns_apply(struct herd_router *rt) {
    struct router_dns *d = rt->dns;
    if (!d) return;
    char(*addrs)[INET6_ADDRSTRLEN] = d->applying;
    uint32_t n;
    char error[160];
    pthread_mutex_lock(&d->lock);
    const bool fresh = d->generation != d->applied;
    d->applied = d->generation;
    n = d->n_addrs;
    memcpy(addrs, d->addrs, sizeof d->addrs[0] * n);
    snprintf(error, sizeof error, "%s", d->error);
    d->error[0] = 0;
    pthread_mutex_unlock(&d->lock);
    if (error[0]) herd_log(HERD_LOG_WARN, "route", NULL, NULL, 0, "resolving %s: %s (replicas kept)", d->name, error);
    if (!fresh) return;
    const uint16_t port = (uint16_t)atoi(d->port);
    for (uint32_t i = 0; i < n; i++) replica_add(rt, addrs[i], port, FROM_DNS);
    for (uint32_t i = 0; i < rt->n_rep; i++) {
        struct replica *x = rt->rep[i];
        if (x->source != FROM_DNS || x->draining) continue;
        bool listed = false;
        for (uint32_t k = 0; k < n && !listed; k++) listed = x->port == port && strcmp(x->host, addrs[k]) == 0;
        if (!listed) replica_drain(x);
    }
}

void router_dns_stop(struct herd_router *rt) {
    struct router_dns *d = rt->dns;
    if (!d) return;
    pthread_mutex_lock(&d->lock);
    d->stop = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
    pthread_join(d->thread, NULL);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
    free(d);
    rt->dns = NULL;
}

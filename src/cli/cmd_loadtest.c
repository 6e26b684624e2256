/* `herd loadtest`: drives an OpenAI-compatible server (herd serve, vLLM,
 * llama.cpp's server) with streaming completion requests and reports what
 * `vllm bench serve` reports (and p90 and max): successes and failures,
 * duration, request and output-token throughput, and mean / median / p90 /
 * p99 / max of time to first token (TTFT), time per output token after the
 * first (TPOT), inter-token latency (ITL) and end-to-end latency. Requests come from --concurrency
 * clients back to back, or at --rate requests per second (Poisson
 * arrivals). Each prompt is --prompt-tokens random token ids and asks for
 * exactly --max-tokens tokens (ignore_eos), so the work per request is
 * fixed. With --shared-prefixes K the prompt starts with one of K fixed
 * random prefixes of --prefix-tokens ids (the system prompts of many users
 * of one application), picked at random per request: the traffic a
 * prefix cache and a cache-aware router are for. A plain blocking HTTP/1.1
 * client per in-flight request keeps the timing honest and the code small. */
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "base/rng.h"
#include "base/timing.h"
#include "cli/cli_args.h"
#include "cli/commands.h"

static const struct cli_command cmd = {
    .name = "loadtest",
    .args = "",
    .summary = "Load an OpenAI-compatible server with streaming requests; report throughput and latency percentiles.",
    .details = "Reports successful and failed requests, duration, requests/s, output tokens/s, and mean,\n"
               "median, p90, p99 and max of TTFT, TPOT (per output token after the first), ITL (between\n"
               "streamed tokens) and end-to-end latency, like `vllm bench serve`. --json writes them with every\n"
               "request's numbers (start, TTFT, end-to-end, tokens, longest gap between two chunks), --svg a\n"
               "chart of the latency distributions. --shared-prefixes K starts each prompt with one of K fixed\n"
               "random prefixes of --prefix-tokens ids, picked at random per request (prefix-cache traffic).",
    .min_pos = 0,
    .max_pos = 0,
};

struct sample {
    bool ok;
    double start_s, ttft_s, e2e_s;
    uint32_t out_tokens;
    double *itl; /* gaps between streamed chunks */
    uint32_t n_itl;
    double max_gap_s; /* the longest of them: a stall, e.g. a stream resumed elsewhere */
    uint32_t prefix;  /* which shared prefix (with --shared-prefixes) */
    char error[128];
};

struct run {
    char host[256], port[16], path[256], model[256], api_key[256];
    uint32_t prompt_tokens, max_tokens;
    uint32_t n_prefixes, prefix_tokens;
    uint32_t *prefixes; /* (n_prefixes, prefix_tokens) token ids */
    uint64_t requests;
    atomic_ulong next, done;
    struct sample *samples;
    double t0;
    double rate, temperature;
    uint64_t seed;
};

/* ----------------------------------------------------------- one request */

static int connect_to(const struct run *r) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(r->host, r->port, &hints, &res) != 0) return -1;
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        struct timeval tv = {600, 0}; /* a request that hangs this long failed */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    return fd;
}

static bool send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* A token id for a random prompt: 100..399, clear of the control and byte
 * tokens at the start of the common vocabularies. */
static uint32_t random_token(struct herd_rng *rng) { return 100 + (uint32_t)(herd_rng_u64(rng) % 300); }

/* Sends one streaming request and times its chunks. Chunked transfer
 * coding is decoded on the fly; each `data:` event with text counts as
 * one token arrival (servers send one token per event), and the final
 * usage gives the exact output count. */
static void one_request(struct run *r, uint64_t idx, struct sample *s) {
    struct herd_rng rng;
    herd_rng_init(&rng, r->seed + idx);
    size_t cap = 256 + ((size_t)r->prompt_tokens + r->prefix_tokens) * 8;
    char *body = malloc(cap);
    size_t n = (size_t)snprintf(body, cap, "{\"model\":\"%s\",\"prompt\":[", r->model);
    if (r->n_prefixes) {
        /* picked apart from the suffix's draws, which stay those of a run without prefixes */
        s->prefix = (uint32_t)(herd_rng_mix(herd_rng_mix(r->seed ^ 0x70696bull) + idx) % r->n_prefixes);
        const uint32_t *pre = r->prefixes + (size_t)s->prefix * r->prefix_tokens;
        for (uint32_t i = 0; i < r->prefix_tokens; i++) n += (size_t)snprintf(body + n, cap - n, "%u,", pre[i]);
    }
    for (uint32_t i = 0; i < r->prompt_tokens; i++)
        n += (size_t)snprintf(body + n, cap - n, "%s%u", i ? "," : "", random_token(&rng));
    n += (size_t)snprintf(body + n, cap - n,
                          "],\"max_tokens\":%u,\"ignore_eos\":true,\"temperature\":%g,\"seed\":%llu,"
                          "\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                          r->max_tokens, r->temperature, (unsigned long long)(r->seed + idx));
    char head[1024];
    int hn = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s%s%s"
                      "Connection: close\r\n\r\n",
                      r->path, r->host, n, r->api_key[0] ? "Authorization: Bearer " : "", r->api_key,
                      r->api_key[0] ? "\r\n" : "");
    s->start_s = herd_time_now_s() - r->t0;
    double t_start = herd_time_now_s(), t_last = 0;
    s->itl = malloc((r->max_tokens + 8) * sizeof *s->itl);
    int fd = connect_to(r);
    if (fd < 0 || !send_all(fd, head, (size_t)hn) || !send_all(fd, body, n)) {
        snprintf(s->error, sizeof s->error, "cannot connect or send: %s", strerror(errno));
        if (fd >= 0) close(fd);
        free(body);
        return;
    }
    free(body);
    /* read everything, processing SSE lines as they complete */
    char buf[65536];
    size_t have = 0;
    bool headers_done = false, got_usage = false;
    int status = 0;
    char line[65536];
    size_t ln = 0;
    size_t chunk_left = 0;
    bool in_chunk_size = true;
    char sizebuf[32];
    size_t sn = 0;
    for (;;) {
        ssize_t got = recv(fd, buf + have, sizeof buf - have, 0);
        if (got <= 0) break;
        have += (size_t)got;
        size_t at = 0;
        if (!headers_done) {
            char *end = memmem(buf, have, "\r\n\r\n", 4);
            if (!end) {
                if (have == sizeof buf) break;
                continue;
            }
            sscanf(buf, "HTTP/1.%*d %d", &status);
            headers_done = true;
            at = (size_t)(end - buf) + 4;
        }
        for (; at < have; at++) {
            char ch = buf[at];
            if (in_chunk_size) { /* "<hex>\r\n" */
                if (ch == '\n') {
                    sizebuf[sn] = 0;
                    chunk_left = strtoul(sizebuf, NULL, 16);
                    sn = 0;
                    in_chunk_size = false;
                    if (chunk_left == 0) goto finished;
                } else if (ch != '\r' && sn < sizeof sizebuf - 1) {
                    sizebuf[sn++] = ch;
                }
                continue;
            }
            if (chunk_left == 0) { /* the CRLF after a chunk */
                if (ch == '\n') in_chunk_size = true;
                continue;
            }
            chunk_left--;
            if (ch != '\n') {
                if (ln < sizeof line - 1) line[ln++] = ch;
                continue;
            }
            line[ln] = 0;
            ln = 0;
            if (strncmp(line, "data: ", 6) != 0 || strcmp(line + 6, "[DONE]") == 0) continue;
            const char *u = strstr(line, "\"completion_tokens\":");
            if (u) {
                s->out_tokens = (uint32_t)strtoul(u + 20, NULL, 10);
                got_usage = true;
            }
            if (strstr(line, "\"text\":\"") && !strstr(line, "\"text\":\"\"")) {
                double now = herd_time_now_s();
                if (s->ttft_s == 0) {
                    s->ttft_s = now - t_start;
                } else {
                    if (s->n_itl < r->max_tokens + 8) s->itl[s->n_itl++] = now - t_last;
                    if (now - t_last > s->max_gap_s) s->max_gap_s = now - t_last;
                }
                t_last = now;
            }
        }
        have = 0;
    }
finished:
    close(fd);
    s->e2e_s = herd_time_now_s() - t_start;
    s->ok = status == 200 && got_usage && s->out_tokens > 0;
    if (!s->ok && !s->error[0])
        snprintf(s->error, sizeof s->error, "HTTP status %d%s", status, got_usage ? "" : ", no usage");
}

static void *client(void *arg) {
    struct run *r = arg;
    for (;;) {
        uint64_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->requests) break;
        if (r->rate > 0) { /* Poisson arrivals: request i starts at its scheduled time */
            double when = r->samples[i].start_s, now = herd_time_now_s() - r->t0;
            if (when > now) usleep((useconds_t)((when - now) * 1e6));
        }
        one_request(r, i, &r->samples[i]);
        atomic_fetch_add(&r->done, 1);
    }
    return NULL;
}

/* ------------------------------------------------------------ statistics */

struct stat3 {
    double mean, median, p90, p99, max;
};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The nearest-rank percentile q (0..1] of n sorted values. */
static double percentile(const double *v, size_t n, double q) {
    size_t k = (size_t)ceil(q * (double)n);
    return v[k ? k - 1 : 0];
}

static struct stat3 stats(double *v, size_t n) {
    struct stat3 s = {0};
    if (!n) return s;
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    s.mean = sum / (double)n;
    s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    s.p90 = percentile(v, n, 0.90);
    s.p99 = percentile(v, n, 0.99);
    s.max = v[n - 1];
    return s;
}

/* A chart of the four latency distributions (empirical CDFs), one panel
 * each, as a standalone SVG. v[m] are sorted. */
static bool write_svg(const char *path, const char *const names[4], double *const v[4], const size_t n[4]) {
    FILE *f = fopen(path, "w");
    if (!f) return false;
    const int W = 900, H = 240, PW = 200, PH = 160, X0 = 20;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
            "font-size=\"11\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, H);
    for (int m = 0; m < 4; m++) {
        int ox = X0 + m * (PW + 20), oy = 30;
        double mx = n[m] ? v[m][n[m] - 1] * 1e3 : 1;
        if (mx <= 0) mx = 1;
        fprintf(f, "<text x=\"%d\" y=\"20\">%s (ms), CDF of %zu</text>\n", ox, names[m], n[m]);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>\n", ox, oy, PW,
                PH);
        fprintf(f, "<text x=\"%d\" y=\"%d\">0</text><text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.1f</text>\n", ox,
                oy + PH + 14, ox + PW, oy + PH + 14, mx);
        fprintf(f, "<polyline fill=\"none\" stroke=\"#2060c0\" stroke-width=\"1.5\" points=\"");
        size_t stride = n[m] > 400 ? n[m] / 400 : 1; /* about 400 points a curve is enough */
        for (size_t i = 0; i < n[m]; i += stride) {
            size_t j = i + stride >= n[m] ? n[m] - 1 : i;
            double x = ox + v[m][j] * 1e3 / mx * PW, y = oy + PH - (double)(j + 1) / (double)n[m] * PH;
            fprintf(f, "%.1f,%.1f ", x, y);
        }
        fprintf(f, "\"/>\n");
    }
    fprintf(f, "</svg>\n");
    return fclose(f) == 0;
}

/* -------------------------------------------------------------- command */

static bool parse_url(const char *url, struct run *r) {
    const char *p = url;
    if (strncmp(p, "http://", 7) != 0) return false;
    p += 7;
    const char *slash = strchr(p, '/');
    size_t hp = slash ? (size_t)(slash - p) : strlen(p);
    char hostport[256];
    if (hp >= sizeof hostport) return false;
    memcpy(hostport, p, hp);
    hostport[hp] = 0;
    char *colon = strrchr(hostport, ':');
    if (colon) {
        *colon = 0;
        snprintf(r->port, sizeof r->port, "%s", colon + 1);
    } else {
        snprintf(r->port, sizeof r->port, "80");
    }
    memcpy(r->host, hostport, strlen(hostport) + 1);
    snprintf(r->path, sizeof r->path, "%s", slash && strlen(slash) > 1 ? slash : "/v1/completions");
    return r->host[0] != 0;
}

int herd_cmd_loadtest(int argc, char **argv) {
    const char *url = NULL, *json_path = NULL, *svg_path = NULL, *model = NULL, *key = NULL;
    uint64_t concurrency = 0, requests = 100, prompt_tokens = 128, max_tokens = 128, seed = 1;
    uint64_t n_prefixes = 0, prefix_tokens = 1000, prefix_seed = UINT64_MAX;
    double rate = 0, temperature = 0;
    const struct cli_opt opts[] = {
        {"url", 0, CLI_STRING, &url, "URL", "server, e.g. http://127.0.0.1:8080 (path default /v1/completions)"},
        {"model", 0, CLI_STRING, &model, "NAME", "model name to send (default: the server's first /v1/models entry)"},
        {"concurrency", 'c', CLI_U64, &concurrency, "C", "clients sending back to back (default 16)"},
        {"rate", 0, CLI_F64, &rate, "R", "requests per second, Poisson arrivals (instead of --concurrency)"},
        {"requests", 'n', CLI_U64, &requests, "N", "requests in all (default 100)"},
        {"prompt-tokens", 0, CLI_U64, &prompt_tokens, "P", "prompt length in tokens (default 128)"},
        {"max-tokens", 0, CLI_U64, &max_tokens, "M", "output tokens per request (default 128)"},
        {"shared-prefixes", 0, CLI_U64, &n_prefixes, "K",
         "each prompt starts with one of K fixed random prefixes, picked at random (default 0: none)"},
        {"prefix-tokens", 0, CLI_U64, &prefix_tokens, "N", "with --shared-prefixes: tokens per prefix (default 1000)"},
        {"prefix-seed", 0, CLI_U64, &prefix_seed, "S",
         "with --shared-prefixes: the prefixes' seed (default --seed): the same prefixes under other prompts"},
        {"temperature", 0, CLI_F64, &temperature, "T", "sampling temperature sent (default 0: greedy)"},
        {"api-key", 0, CLI_STRING, &key, "KEY", "Authorization: Bearer KEY"},
        {"seed", 0, CLI_U64, &seed, "S", "random prompts and arrivals seed (default 1)"},
        {"json", 0, CLI_STRING, &json_path, "FILE", "write the results as JSON"},
        {"svg", 0, CLI_STRING, &svg_path, "FILE", "write a chart of the latency distributions"},
        {0},
    };
    int n_pos;
    int prc = cli_parse(&cmd, opts, argc, argv, NULL, &n_pos);
    if (prc != CLI_OK) return prc == CLI_EXIT_OK ? 0 : prc;
    struct run *r = calloc(1, sizeof *r);
    if (!url || !r || !parse_url(url, r) || (concurrency && rate > 0) || requests < 1 || requests > 1000000 ||
        prompt_tokens < 1 || prompt_tokens > 1000000 || max_tokens < 1 || max_tokens > 1000000 || rate < 0 ||
        !(temperature >= 0 && temperature <= 2) || concurrency > 4096 || n_prefixes > 4096 || prefix_tokens < 1 ||
        prefix_tokens > 1000000 || n_prefixes * prefix_tokens > (64u << 20)) {
        /* the bounds keep a prompt's body and the prefixes' table (K x N
         * ids, 256 MiB at most) allocatable */
        fprintf(stderr,
                "herd loadtest: give --url http://HOST:PORT, and --concurrency or --rate (not both); counts >= 1, "
                "--temperature in [0, 2], --shared-prefixes x --prefix-tokens at most 64 Mi\n");
        free(r);
        return 2;
    }
    if (!concurrency && rate <= 0) concurrency = 16;
    snprintf(r->model, sizeof r->model, "%s", model ? model : "");
    snprintf(r->api_key, sizeof r->api_key, "%s", key ? key : "");
    r->prompt_tokens = (uint32_t)prompt_tokens;
    r->max_tokens = (uint32_t)max_tokens;
    r->requests = requests;
    r->rate = rate;
    r->temperature = temperature;
    r->seed = seed;
    r->samples = calloc(requests, sizeof *r->samples);
    if (!r->samples) {
        free(r);
        return 1;
    }
    if (!model) { /* ask the server */
        int fd = connect_to(r);
        char req[512], resp[8192];
        int qn = snprintf(req, sizeof req, "GET /v1/models HTTP/1.1\r\nHost: %s\r\n%s%s%sConnection: close\r\n\r\n",
                          r->host, key ? "Authorization: Bearer " : "", key ? key : "", key ? "\r\n" : "");
        size_t have = 0;
        if (fd >= 0 && send_all(fd, req, (size_t)qn))
            for (ssize_t got; (got = recv(fd, resp + have, sizeof resp - 1 - have, 0)) > 0;) have += (size_t)got;
        if (fd >= 0) close(fd);
        resp[have] = 0;
        const char *id = strstr(resp, "\"id\":\"");
        if (!id) {
            fprintf(stderr, "herd loadtest: %s: cannot read /v1/models; give --model\n", url);
            free(r->samples);
            free(r);
            return 1;
        }
        id += 6;
        size_t len = strcspn(id, "\"");
        snprintf(r->model, sizeof r->model, "%.*s", (int)(len < 255 ? len : 255), id);
    }
    /* the shared prefixes: fixed by the seed (or --prefix-seed, so that a
     * warm-up run can send the same system prompts with other questions),
     * drawn apart from the prompts' own tokens so that the suffixes do not
     * change with K */
    if (n_prefixes) {
        r->prefixes = malloc(n_prefixes * prefix_tokens * sizeof *r->prefixes);
        if (!r->prefixes) {
            fprintf(stderr, "herd loadtest: out of memory for the shared prefixes\n");
            free(r->samples);
            free(r);
            return 1;
        }
        struct herd_rng rng;
        herd_rng_init(&rng, herd_rng_mix((prefix_seed == UINT64_MAX ? seed : prefix_seed) ^ 0x707265666978ull));
        /* ^ "prefix" */
        for (uint64_t i = 0; i < n_prefixes * prefix_tokens; i++) r->prefixes[i] = random_token(&rng);
        r->n_prefixes = (uint32_t)n_prefixes;
        r->prefix_tokens = (uint32_t)prefix_tokens;
    }
    /* with --rate, every request's start time is drawn up front */
    uint32_t n_threads = (uint32_t)concurrency;
    if (rate > 0) {
        struct herd_rng rng;
        herd_rng_init(&rng, seed ^ 0x5eed);
        double t = 0;
        for (uint64_t i = 0; i < requests; i++) {
            double u = 1.0 - herd_rng_uniform(&rng); /* in (0, 1] */
            t += -log(u) / rate;
            r->samples[i].start_s = t;
        }
        n_threads = requests < 512 ? (uint32_t)requests : 512; /* enough to keep up with the schedule */
    }
    pthread_t *th = calloc(n_threads, sizeof *th);
    r->t0 = herd_time_now_s();
    for (uint32_t i = 0; i < n_threads; i++) pthread_create(&th[i], NULL, client, r);
    bool tty = isatty(2);
    while (atomic_load(&r->done) < requests) {
        if (tty) {
            unsigned long d = atomic_load(&r->done);
            int w = (int)(40 * d / requests);
            fprintf(stderr, "\r[%.*s%*s] %lu/%llu", w, "########################################", 40 - w, "", d,
                    (unsigned long long)requests);
        }
        usleep(100000);
    }
    for (uint32_t i = 0; i < n_threads; i++) pthread_join(th[i], NULL);
    free(th);
    double duration = herd_time_now_s() - r->t0;
    if (tty) fprintf(stderr, "\r%60s\r", "");

    /* gather */
    size_t ok = 0, n_itl = 0;
    uint64_t out_tokens = 0;
    for (uint64_t i = 0; i < requests; i++) {
        if (r->samples[i].ok) {
            ok++;
            out_tokens += r->samples[i].out_tokens;
            n_itl += r->samples[i].n_itl;
        }
    }
    double *ttft = calloc(ok + 1, sizeof *ttft), *tpot = calloc(ok + 1, sizeof *tpot),
           *e2e = calloc(ok + 1, sizeof *e2e), *itl = calloc(n_itl + 1, sizeof *itl);
    size_t k = 0, ki = 0, kt = 0;
    for (uint64_t i = 0; i < requests; i++) {
        const struct sample *s = &r->samples[i];
        if (!s->ok) continue;
        ttft[k] = s->ttft_s;
        e2e[k] = s->e2e_s;
        if (s->out_tokens > 1) tpot[kt++] = (s->e2e_s - s->ttft_s) / (s->out_tokens - 1);
        k++;
        for (uint32_t j = 0; j < s->n_itl; j++) itl[ki++] = s->itl[j];
    }
    struct stat3 st_ttft = stats(ttft, k), st_tpot = stats(tpot, kt), st_itl = stats(itl, ki), st_e2e = stats(e2e, k);
    printf("| metric | value |\n|---|---|\n");
    printf("| successful requests | %zu |\n| failed requests | %llu |\n", ok, (unsigned long long)(requests - ok));
    printf("| duration (s) | %.2f |\n| requests/s | %.2f |\n| output tokens/s | %.1f |\n", duration, ok / duration,
           out_tokens / duration);
    const char *names[4] = {"TTFT", "TPOT", "ITL", "E2E latency"};
    const struct stat3 *sts[4] = {&st_ttft, &st_tpot, &st_itl, &st_e2e};
    for (int m = 0; m < 4; m++)
        printf("| %s mean / median / p90 / p99 / max (ms) | %.2f / %.2f / %.2f / %.2f / %.2f |\n", names[m],
               sts[m]->mean * 1e3, sts[m]->median * 1e3, sts[m]->p90 * 1e3, sts[m]->p99 * 1e3, sts[m]->max * 1e3);
    for (uint64_t i = 0; i < requests && ok < requests; i++)
        if (!r->samples[i].ok) {
            fprintf(stderr, "herd loadtest: first failure: %s\n", r->samples[i].error);
            break;
        }
    int rc = ok == requests ? 0 : 1;
    if (json_path) {
        FILE *f = fopen(json_path, "w");
        if (!f) {
            fprintf(stderr, "herd loadtest: %s: %s\n", json_path, strerror(errno));
            rc = 1;
        } else {
            fprintf(f,
                    "{\"url\":\"%s\",\"model\":\"%s\",\"concurrency\":%llu,\"rate\":%g,\"requests\":%llu,"
                    "\"prompt_tokens\":%u,\"shared_prefixes\":%u,\"prefix_tokens\":%u,\"max_tokens\":%u,\"successful\":"
                    "%zu,\"failed\":%llu,\"duration_s\":%.4f,"
                    "\"requests_per_s\":%.4f,\"output_tokens_per_s\":%.3f",
                    url, r->model, (unsigned long long)concurrency, rate, (unsigned long long)requests,
                    r->prompt_tokens, r->n_prefixes, r->prefix_tokens, r->max_tokens, ok,
                    (unsigned long long)(requests - ok), duration, ok / duration, out_tokens / duration);
            const char *keys[4] = {"ttft", "tpot", "itl", "e2e"};
            for (int m = 0; m < 4; m++)
                fprintf(f, ",\"%s_ms\":{\"mean\":%.4f,\"median\":%.4f,\"p90\":%.4f,\"p99\":%.4f,\"max\":%.4f}", keys[m],
                        sts[m]->mean * 1e3, sts[m]->median * 1e3, sts[m]->p90 * 1e3, sts[m]->p99 * 1e3,
                        sts[m]->max * 1e3);
            /* every request, in the order sent: when it started, its
             * latencies and its longest gap between two chunks */
            fprintf(f, ",\"per_request\":[");
            for (uint64_t i = 0; i < requests; i++) {
                const struct sample *s = &r->samples[i];
                fprintf(f,
                        "%s{\"ok\":%s,\"start_s\":%.4f,\"ttft_ms\":%.3f,\"e2e_ms\":%.3f,\"max_gap_ms\":%.3f,"
                        "\"output_tokens\":%u",
                        i ? "," : "", s->ok ? "true" : "false", s->start_s, s->ttft_s * 1e3, s->e2e_s * 1e3,
                        s->max_gap_s * 1e3, s->out_tokens);
                if (r->n_prefixes) fprintf(f, ",\"prefix\":%u", s->prefix);
                fprintf(f, "}");
            }
            fprintf(f, "]}\n");
            if (fclose(f) != 0) rc = 1;
        }
    }
    if (svg_path) {
        double *vs[4] = {ttft, tpot, itl, e2e};
        size_t ns[4] = {k, kt, ki, k};
        if (!write_svg(svg_path, names, vs, ns)) {
            fprintf(stderr, "herd loadtest: %s: cannot write\n", svg_path);
            rc = 1;
        }
    }
    for (uint64_t i = 0; i < requests; i++) free(r->samples[i].itl);
    free(ttft);
    free(tpot);
    free(e2e);
    free(itl);
    free(r->samples);
    free(r->prefixes);
    free(r);
    return rc;
}

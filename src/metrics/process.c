/* process_* metrics under the names and meanings of the Prometheus client
 * libraries (client_golang's process collector), so the usual dashboards
 * and alerts on them work. Linux only: read from /proc at scrape time. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "metrics/metrics.h"

struct process_metrics {
    struct herd_metric *cpu, *rss, *vsz, *open_fds, *max_fds, *start;
};

static double clock_ticks(void) {
    long t = sysconf(_SC_CLK_TCK);
    return t > 0 ? (double)t : 100.0;
}

/* Boot time (seconds since the epoch) from /proc/stat's btime line. */
static double boot_time_s(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    char line[256];
    double bt = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "btime ", 6) == 0) {
            bt = strtod(line + 6, NULL);
            break;
        }
    fclose(f);
    return bt;
}

/* Field 22 of /proc/self/stat (starttime, in clock ticks since boot); the
 * fields after the command name, which may hold spaces, start after ')'. */
static double start_time_s(void) {
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return 0;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    if (!p) return 0;
    p++;
    /* after ')': field 3 (state) is the first; starttime is field 22 */
    for (int field = 3; field < 22 && *p; field++) {
        while (*p == ' ') p++;
        while (*p && *p != ' ') p++;
    }
    return boot_time_s() + strtod(p, NULL) / clock_ticks();
}

static double count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 0;
    double n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

static void collect(void *arg) {
    struct process_metrics *p = arg;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        herd_metric_set(p->cpu, (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
                                    (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6);
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        unsigned long long size = 0, resident = 0;
        if (fscanf(f, "%llu %llu", &size, &resident) == 2) {
            double page = (double)sysconf(_SC_PAGESIZE);
            herd_metric_set(p->vsz, (double)size * page);
            herd_metric_set(p->rss, (double)resident * page);
        }
        fclose(f);
    }
    herd_metric_set(p->open_fds, count_fds());
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) herd_metric_set(p->max_fds, (double)rl.rlim_cur);
}

void herd_metrics_register_process(struct herd_metrics *m) {
    struct process_metrics *p = calloc(1, sizeof *p);
    if (!p) return; /* no process metrics rather than no server */
    p->cpu = herd_metrics_counter(m, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.");
    p->rss = herd_metrics_gauge(m, "process_resident_memory_bytes", "Resident memory size in bytes.");
    p->vsz = herd_metrics_gauge(m, "process_virtual_memory_bytes", "Virtual memory size in bytes.");
    p->open_fds = herd_metrics_gauge(m, "process_open_fds", "Number of open file descriptors.");
    p->max_fds = herd_metrics_gauge(m, "process_max_fds", "Maximum number of open file descriptors.");
    p->start =
        herd_metrics_gauge(m, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.");
    herd_metric_set(p->start, start_time_s());
    herd_metrics_on_collect(m, collect, p, true);
}

/* Reading the cgroup limits (cgroup.h): parsers for each file, then the walk
 * from this process's cgroup up to its hierarchy's mount. */
#include "base/cgroup.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parsers ---- */

/* The line of text starting at *p (up to '\n' or the end) into line; moves
 * *p past it. False at the end of the text or when the line does not fit
 * (it is skipped). */
static bool next_line(const char **p, char *line, size_t n, bool *fits) {
    if (!**p) return false;
    const char *e = strchr(*p, '\n');
    size_t len = e ? (size_t)(e - *p) : strlen(*p);
    *fits = len < n;
    if (*fits) {
        memcpy(line, *p, len);
        line[len] = '\0';
    }
    *p += len + (e ? 1 : 0);
    return true;
}

/* True when list (comma-separated) has the item word. */
static bool list_has(const char *list, size_t list_len, const char *word) {
    const size_t w = strlen(word);
    const char *p = list, *end = list + list_len;
    while (p < end) {
        const char *c = memchr(p, ',', (size_t)(end - p));
        const size_t len = c ? (size_t)(c - p) : (size_t)(end - p);
        if (len == w && memcmp(p, word, w) == 0) return true;
        p += len + 1;
    }
    return false;
}

bool herd_cgroup_parse_proc(const char *text, const char *controller, char *path, size_t n) {
    char line[HERD_CGROUP_PATH_BYTES + 128];
    bool fits;
    while (next_line(&text, line, sizeof line, &fits)) {
        if (!fits) continue;
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        const char *ctrls = c1 + 1;
        const size_t ctrls_len = (size_t)(c2 - ctrls);
        const bool match =
            controller ? list_has(ctrls, ctrls_len, controller) : ctrls_len == 0 && c1 - line == 1 && line[0] == '0';
        if (!match) continue;
        const char *p = c2 + 1;
        if (strlen(p) >= n || p[0] != '/') return false;
        strcpy(path, p);
        return true;
    }
    return false;
}

/* mountinfo writes space, tab, newline and backslash in paths as \ooo. */
static bool unescape(const char *s, size_t len, char *out, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '\\' && i + 3 < len && isdigit((unsigned char)s[i + 1]) && isdigit((unsigned char)s[i + 2]) &&
            isdigit((unsigned char)s[i + 3])) {
            c = (char)((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
            i += 3;
        }
        if (o + 1 >= n) return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

bool herd_cgroup_parse_mountinfo(const char *text, const char *controller, char *root, size_t root_n, char *mount,
                                 size_t mount_n) {
    char line[4 * HERD_CGROUP_PATH_BYTES];
    bool fits;
    while (next_line(&text, line, sizeof line, &fits)) {
        if (!fits) continue;
        /* ID PARENT MAJ:MIN ROOT MOUNT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER */
        const char *f[6];
        size_t flen[6];
        const char *p = line;
        int nf = 0;
        while (nf < 6) {
            while (*p == ' ') p++;
            if (!*p) break;
            f[nf] = p;
            while (*p && *p != ' ') p++;
            flen[nf] = (size_t)(p - f[nf]);
            nf++;
        }
        if (nf < 6) continue;
        const char *sep = strstr(p, " - ");
        if (!sep) continue;
        char fstype[32], source[256], super[512];
        if (sscanf(sep + 3, "%31s %255s %511s", fstype, source, super) != 3) continue;
        const bool match = controller ? strcmp(fstype, "cgroup") == 0 && list_has(super, strlen(super), controller)
                                      : strcmp(fstype, "cgroup2") == 0;
        if (!match) continue;
        if (!unescape(f[3], flen[3], root, root_n) || !unescape(f[4], flen[4], mount, mount_n)) return false;
        return true;
    }
    return false;
}

/* A whole decimal integer (surrounding white space allowed). */
static bool parse_i64(const char *s, long long *out) {
    while (isspace((unsigned char)*s)) s++;
    if (!*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s) return false;
    while (isspace((unsigned char)*end)) end++;
    if (*end) return false;
    *out = v;
    return true;
}

bool herd_cgroup_parse_cpu_max(const char *text, double *cpus) {
    char quota[32];
    long long period;
    char rest;
    if (sscanf(text, "%31s %lld %c", quota, &period, &rest) != 2 || period <= 0) return false;
    if (strcmp(quota, "max") == 0) {
        *cpus = 0;
        return true;
    }
    long long q;
    if (!parse_i64(quota, &q) || q <= 0) return false;
    *cpus = (double)q / (double)period;
    return true;
}

bool herd_cgroup_parse_cfs(const char *quota_text, const char *period_text, double *cpus) {
    long long q, period;
    if (!parse_i64(quota_text, &q) || !parse_i64(period_text, &period) || period <= 0) return false;
    if (q == -1) {
        *cpus = 0;
        return true;
    }
    if (q <= 0) return false;
    *cpus = (double)q / (double)period;
    return true;
}

bool herd_cgroup_parse_memory(const char *text, uint64_t *bytes) {
    const char *s = text;
    while (isspace((unsigned char)*s)) s++;
    if (strncmp(s, "max", 3) == 0) {
        s += 3;
        while (isspace((unsigned char)*s)) s++;
        if (*s) return false;
        *bytes = 0;
        return true;
    }
    if (!isdigit((unsigned char)*s)) return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        v = UINT64_MAX; /* larger than anything: no limit */
    else if (errno)
        return false;
    while (isspace((unsigned char)*end)) end++;
    if (*end) return false;
    /* v1's "unlimited" is 0x7ffffffffffff000 (LONG_MAX rounded to a page);
     * no machine has 2^62 bytes, so treat that range as none. */
    *bytes = v >= (1ull << 62) ? 0 : (uint64_t)v;
    return true;
}

int herd_cgroup_parse_cpulist(const char *text) {
    const char *p = text;
    int n = 0;
    while (isspace((unsigned char)*p)) p++;
    if (!*p) return -1;
    while (*p && !isspace((unsigned char)*p)) {
        char *end;
        long a = strtol(p, &end, 10), b;
        if (end == p || a < 0) return -1;
        p = end;
        b = a;
        if (*p == '-') {
            b = strtol(p + 1, &end, 10);
            if (end == p + 1 || b < a) return -1;
            p = end;
        }
        if (b - a >= 1 << 20) return -1; /* far past any machine: malformed */
        n += (int)(b - a + 1);
        if (*p == ',')
            p++;
        else if (*p && !isspace((unsigned char)*p))
            return -1;
    }
    while (isspace((unsigned char)*p)) p++;
    return *p ? -1 : n;
}

/* ---- the walk ---- */

/* Reads a small file whole into buf; false when it cannot be opened or is
 * empty. */
static bool read_small(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t got = fread(buf, 1, n - 1, f);
    fclose(f);
    buf[got] = '\0';
    return got > 0;
}

/* Reads a whole file (mountinfo can be tens of KB) into a heap buffer. */
static char *read_all(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t cap = 16384, len = 0;
    char *buf = malloc(cap);
    /* 4 MiB: far past any real mountinfo; a ceiling, since a test root could be anything */
    while (buf && cap <= (4u << 20)) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (len < cap - 1) break;
        char *b = realloc(buf, cap * 2);
        if (!b) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = b;
        cap *= 2;
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

/* One hierarchy: the directory of this process's cgroup in it (as ROOT +
 * mount point + path below the mount's root) and the mount point, where the
 * walk up stops. */
struct hier {
    char dir[HERD_CGROUP_PATH_BYTES];
    size_t mount_len; /* dir[0..mount_len) is the mount point */
};

static bool find_hier(const char *root, const char *proc, const char *mountinfo, const char *controller,
                      struct hier *h) {
    char path[HERD_CGROUP_PATH_BYTES], mroot[HERD_CGROUP_PATH_BYTES], mount[HERD_CGROUP_PATH_BYTES];
    if (!herd_cgroup_parse_proc(proc, controller, path, sizeof path)) return false;
    if (!herd_cgroup_parse_mountinfo(mountinfo, controller, mroot, sizeof mroot, mount, sizeof mount)) return false;
    /* Below the mount's root: "/kubepods/x" under root "/kubepods" is "/x";
     * a path outside the mount's root (a cgroup namespace shows "/" while
     * the mount is of the container's cgroup) is the mount itself. */
    const char *rel = "";
    const size_t rl = strlen(mroot);
    if (strcmp(mroot, "/") == 0)
        rel = path;
    else if (strncmp(path, mroot, rl) == 0 && (path[rl] == '/' || path[rl] == '\0'))
        rel = path + rl;
    if (strcmp(rel, "/") == 0) rel = "";
    int w = snprintf(h->dir, sizeof h->dir, "%s%s", root, mount);
    if (w < 0 || (size_t)w >= sizeof h->dir) return false;
    h->mount_len = (size_t)w;
    w = snprintf(h->dir + h->mount_len, sizeof h->dir - h->mount_len, "%s", rel);
    return w >= 0 && (size_t)w < sizeof h->dir - h->mount_len;
}

/* Moves dir one level up; false at the mount point. */
static bool up(char *dir, size_t mount_len) {
    size_t len = strlen(dir);
    if (len <= mount_len) return false;
    while (len > mount_len && dir[len - 1] != '/') len--;
    if (len > mount_len) len--; /* the slash */
    dir[len] = '\0';
    return true;
}

/* Walks from h's cgroup up to the mount; at each level read_level(dir)
 * gives that level's value (0: none), and the smallest nonzero one wins,
 * with the file it came from. */
typedef bool (*level_fn)(const char *dir, double *value, char *file, size_t n);

static double walk(struct hier *h, level_fn read_level, char *file, size_t n) {
    char dir[HERD_CGROUP_PATH_BYTES];
    memcpy(dir, h->dir, sizeof dir);
    double best = 0;
    char f[HERD_CGROUP_PATH_BYTES];
    do {
        double v = 0;
        if (read_level(dir, &v, f, sizeof f) && v > 0 && (best == 0 || v < best)) {
            best = v;
            snprintf(file, n, "%s", f);
        }
    } while (up(dir, h->mount_len));
    return best;
}

static bool level_file(const char *dir, const char *name, char *file, size_t n, char *buf, size_t buf_n) {
    int w = snprintf(file, n, "%s/%s", dir, name);
    return w >= 0 && (size_t)w < n && read_small(file, buf, buf_n);
}

static bool cpu_v2(const char *dir, double *v, char *file, size_t n) {
    char buf[128];
    return level_file(dir, "cpu.max", file, n, buf, sizeof buf) && herd_cgroup_parse_cpu_max(buf, v);
}

static bool cpu_v1(const char *dir, double *v, char *file, size_t n) {
    char q[64], p[64], pf[HERD_CGROUP_PATH_BYTES];
    return level_file(dir, "cpu.cfs_period_us", pf, sizeof pf, p, sizeof p) &&
           level_file(dir, "cpu.cfs_quota_us", file, n, q, sizeof q) && herd_cgroup_parse_cfs(q, p, v);
}

static bool memory_level(const char *dir, const char *name, double *v, char *file, size_t n) {
    char buf[64];
    uint64_t b;
    if (!level_file(dir, name, file, n, buf, sizeof buf) || !herd_cgroup_parse_memory(buf, &b)) return false;
    *v = (double)b; /* exact: limits are page multiples far below 2^53 */
    return true;
}
static bool memory_v2(const char *dir, double *v, char *file, size_t n) {
    return memory_level(dir, "memory.max", v, file, n);
}
static bool memory_v1(const char *dir, double *v, char *file, size_t n) {
    return memory_level(dir, "memory.limit_in_bytes", v, file, n);
}

/* The CPU set of the cgroup itself (the kernel already intersects it with
 * the parents': the effective list). */
static int cpuset_of(const struct hier *h, int version, char *file, size_t n) {
    char buf[4096];
    if (!level_file(h->dir, version == 2 ? "cpuset.cpus.effective" : "cpuset.effective_cpus", file, n, buf, sizeof buf))
        return 0;
    int c = herd_cgroup_parse_cpulist(buf);
    return c > 0 ? c : 0;
}

void herd_cgroup_read(const char *root, struct herd_cgroup_limits *out) {
    memset(out, 0, sizeof *out);
    char path[HERD_CGROUP_PATH_BYTES];
    snprintf(path, sizeof path, "%s/proc/self/cgroup", root);
    char *proc = read_all(path);
    snprintf(path, sizeof path, "%s/proc/self/mountinfo", root);
    char *mountinfo = read_all(path);
    if (!proc || !mountinfo) goto out;
    struct hier h;
    /* v1 first: in the hybrid layout the v2 hierarchy holds no controllers */
    if (find_hier(root, proc, mountinfo, "cpu", &h)) {
        out->cpu_version = 1;
        out->cpu_quota = walk(&h, cpu_v1, out->cpu_file, sizeof out->cpu_file);
    } else if (find_hier(root, proc, mountinfo, NULL, &h)) {
        out->cpu_version = 2;
        out->cpu_quota = walk(&h, cpu_v2, out->cpu_file, sizeof out->cpu_file);
    }
    if (find_hier(root, proc, mountinfo, "cpuset", &h))
        out->cpuset_cpus = cpuset_of(&h, 1, out->cpuset_file, sizeof out->cpuset_file);
    else if (find_hier(root, proc, mountinfo, NULL, &h))
        out->cpuset_cpus = cpuset_of(&h, 2, out->cpuset_file, sizeof out->cpuset_file);
    if (find_hier(root, proc, mountinfo, "memory", &h)) {
        out->memory_version = 1;
        out->memory_max_bytes = (uint64_t)walk(&h, memory_v1, out->memory_file, sizeof out->memory_file);
    } else if (find_hier(root, proc, mountinfo, NULL, &h)) {
        out->memory_version = 2;
        out->memory_max_bytes = (uint64_t)walk(&h, memory_v2, out->memory_file, sizeof out->memory_file);
    }
    if (!out->cpuset_cpus) out->cpuset_file[0] = '\0';
    if (out->cpu_quota == 0) out->cpu_file[0] = '\0';
    if (!out->memory_max_bytes) out->memory_file[0] = '\0';
out:
    free(proc);
    free(mountinfo);
}

static struct herd_cgroup_limits limits;
static pthread_once_t limits_once = PTHREAD_ONCE_INIT;

static void read_once(void) {
    const char *root = getenv("HERD_TEST_CGROUP_ROOT");
    herd_cgroup_read(root ? root : "", &limits);
}

const struct herd_cgroup_limits *herd_cgroup_limits(void) {
    pthread_once(&limits_once, read_once);
    return &limits;
}

/* The CPU and memory limits of the cgroup this process runs in (a container,
 * a Kubernetes pod, a systemd unit), so that defaults follow them: threads
 * from the CPU quota or CPU set, the KV cache from the memory limit.
 *
 * Where the limits live:
 * - /proc/self/cgroup names the process's cgroup, one line per hierarchy:
 *   "ID:CONTROLLERS:PATH"; cgroup v1 has a line per mounted hierarchy
 *   ("4:memory:/kubepods/pod1/abc", "3:cpu,cpuacct:/..."), cgroup v2 one
 *   line "0::/PATH". A hybrid layout (v1 controllers plus an empty v2
 *   hierarchy, as these build machines have) has both.
 * - /proc/self/mountinfo says where each hierarchy is mounted and which part
 *   of it (the 4th field, the mount's root: a container sees its own cgroup
 *   as "/" or as its full path, depending on cgroup namespaces):
 *   "34 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory".
 * - The limit files, in the cgroup's directory and in each of its ancestors
 *   up to the mount (a parent's limit binds its children too, so the
 *   effective limit is the smallest on the way up):
 *     v2: cpu.max "QUOTA PERIOD" or "max PERIOD"; memory.max bytes or "max";
 *         cpuset.cpus.effective "0-3,8".
 *     v1: cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us;
 *         memory.limit_in_bytes (a huge page-rounded number: none);
 *         cpuset.effective_cpus.
 * A v1 controller mounted on its own wins over the v2 hierarchy (in the
 * hybrid layout the v2 one has no controllers). */
#ifndef HERD_BASE_CGROUP_H
#define HERD_BASE_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Paths are bounded: a cgroup directory deeper than this is treated as
 * having no limit (Kubernetes' are ~120 bytes). */
#define HERD_CGROUP_PATH_BYTES 512

struct herd_cgroup_limits {
    int cpu_version;                       /* 0: no cpu controller found, 1 or 2 */
    double cpu_quota;                      /* CPUs the quota allows (quota / period); 0: no quota */
    char cpu_file[HERD_CGROUP_PATH_BYTES]; /* the file that set cpu_quota */
    int cpuset_cpus;                       /* CPUs in the cgroup's CPU set; 0: unknown */
    char cpuset_file[HERD_CGROUP_PATH_BYTES];
    int memory_version;                       /* 0: no memory controller found, 1 or 2 */
    uint64_t memory_max_bytes;                /* 0: no limit */
    char memory_file[HERD_CGROUP_PATH_BYTES]; /* the file that set memory_max_bytes */
};

/* ---- pure parsers (the contents of one file; no I/O) ---- */

/* The path of the cgroup that holds controller ("cpu", "memory", "cpuset")
 * in /proc/self/cgroup's text; controller NULL asks for the v2 line
 * ("0::PATH"). Writes at most n bytes to path. False when there is no such
 * line (or the path does not fit). */
bool herd_cgroup_parse_proc(const char *text, const char *controller, char *path, size_t n);

/* The mount of the hierarchy holding controller (v1: fstype "cgroup" with
 * the controller among its super options) or, with controller NULL, of the
 * v2 hierarchy (fstype "cgroup2"), from /proc/self/mountinfo's text. The
 * mount's root and its mount point are written (octal escapes such as \040
 * decoded). False when there is none. */
bool herd_cgroup_parse_mountinfo(const char *text, const char *controller, char *root, size_t root_n, char *mount,
                                 size_t mount_n);

/* cgroup v2 cpu.max: "max 100000" (no quota: *cpus = 0) or "150000 100000"
 * (*cpus = 1.5). False on anything else. */
bool herd_cgroup_parse_cpu_max(const char *text, double *cpus);

/* cgroup v1 cpu.cfs_quota_us and cpu.cfs_period_us: "-1" means no quota
 * (*cpus = 0). False on anything else. */
bool herd_cgroup_parse_cfs(const char *quota_text, const char *period_text, double *cpus);

/* memory.max ("max" or bytes) or memory.limit_in_bytes (bytes; v1 writes
 * "no limit" as the largest page-aligned signed 64-bit value, so anything
 * from 2^62 up reads as none): *bytes = 0 when there is no limit. False on
 * anything else. */
bool herd_cgroup_parse_memory(const char *text, uint64_t *bytes);

/* A CPU list ("0-3,8,10-11"): the number of CPUs in it. -1 when malformed. */
int herd_cgroup_parse_cpulist(const char *text);

/* ---- readers ---- */

/* Reads the limits of this process's cgroups. root prefixes every path
 * ("" for the real system; a fixture tree in tests: ROOT/proc/self/cgroup,
 * ROOT/proc/self/mountinfo and ROOT + each mount point). Never fails: what
 * cannot be read counts as no limit. */
void herd_cgroup_read(const char *root, struct herd_cgroup_limits *out);

/* This process's limits, read once (thread-safe). HERD_TEST_CGROUP_ROOT,
 * when set, is the root passed to herd_cgroup_read (a test hook: limits from
 * a fixture tree without creating cgroups). */
const struct herd_cgroup_limits *herd_cgroup_limits(void);

#endif

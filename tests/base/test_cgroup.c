/* Unit tests for src/base/cgroup.c: each parser on the shapes the kernel
 * writes (and on malformed text), then the whole reader on fixture trees
 * under tests/data/cgroup (v1 hybrid as on these build machines, v2 in a
 * container with a cgroup namespace, v2 on a host with the limit on the
 * parent slice, and no cgroups at all). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "base/cgroup.h"

#define FIXTURES HERD_TEST_DATA "/cgroup"

static void test_parse_proc(void **state) {
    (void)state;
    const char *hybrid = "9:name=systemd:/\n4:memory:/process_api/1d8a\n3:cpu,cpuacct:/a/b\n0::/\n";
    char path[64];
    assert_true(herd_cgroup_parse_proc(hybrid, "memory", path, sizeof path));
    assert_string_equal(path, "/process_api/1d8a");
    assert_true(herd_cgroup_parse_proc(hybrid, "cpu", path, sizeof path));
    assert_string_equal(path, "/a/b");
    assert_true(herd_cgroup_parse_proc(hybrid, "cpuacct", path, sizeof path));
    assert_true(herd_cgroup_parse_proc(hybrid, NULL, path, sizeof path));
    assert_string_equal(path, "/");
    assert_false(herd_cgroup_parse_proc(hybrid, "cpuset", path, sizeof path));
    /* "name=systemd" is not the controller "systemd"; "cpu" is not "cpuset" */
    assert_false(herd_cgroup_parse_proc("1:cpuset:/x\n", "cpu", path, sizeof path));
    assert_false(herd_cgroup_parse_proc("", NULL, path, sizeof path));
    assert_false(herd_cgroup_parse_proc("garbage\n0:x\n", NULL, path, sizeof path));
    /* a path that does not fit is refused, not cut */
    assert_false(herd_cgroup_parse_proc("0::/a/very/long/path\n", NULL, path, 8));
    /* v2 only; no trailing newline */
    assert_true(herd_cgroup_parse_proc("0::/kubepods.slice/x.scope", NULL, path, sizeof path));
    assert_string_equal(path, "/kubepods.slice/x.scope");
}

static void test_parse_mountinfo(void **state) {
    (void)state;
    const char *mi = "22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n"
                     "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:7 - cgroup cgroup rw,cpu,cpuacct\n"
                     "34 30 0:31 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
                     "40 30 0:37 / /sys/fs/cgroup/un\\040ified rw,relatime - cgroup2 cgroup2 rw\n";
    char root[64], mount[64];
    assert_true(herd_cgroup_parse_mountinfo(mi, "cpu", root, sizeof root, mount, sizeof mount));
    assert_string_equal(root, "/");
    assert_string_equal(mount, "/sys/fs/cgroup/cpu,cpuacct");
    assert_true(herd_cgroup_parse_mountinfo(mi, "memory", root, sizeof root, mount, sizeof mount));
    assert_string_equal(root, "/docker/abc");
    assert_string_equal(mount, "/sys/fs/cgroup/memory");
    assert_true(herd_cgroup_parse_mountinfo(mi, NULL, root, sizeof root, mount, sizeof mount));
    assert_string_equal(mount, "/sys/fs/cgroup/un ified"); /* \040 is a space */
    assert_false(herd_cgroup_parse_mountinfo(mi, "cpuset", root, sizeof root, mount, sizeof mount));
    assert_false(herd_cgroup_parse_mountinfo("1 2 3\n", NULL, root, sizeof root, mount, sizeof mount));
    assert_false(herd_cgroup_parse_mountinfo(mi, "memory", root, sizeof root, mount, 4));
}

static void test_parse_cpu(void **state) {
    (void)state;
    double c = -1;
    assert_true(herd_cgroup_parse_cpu_max("max 100000\n", &c));
    assert_true(c == 0);
    assert_true(herd_cgroup_parse_cpu_max("150000 100000\n", &c));
    assert_true(c == 1.5);
    assert_true(herd_cgroup_parse_cpu_max("50000 100000", &c));
    assert_true(c == 0.5);
    assert_false(herd_cgroup_parse_cpu_max("", &c));
    assert_false(herd_cgroup_parse_cpu_max("150000", &c));
    assert_false(herd_cgroup_parse_cpu_max("150000 0", &c));
    assert_false(herd_cgroup_parse_cpu_max("abc 100000", &c));
    assert_false(herd_cgroup_parse_cpu_max("1 2 3", &c));
    assert_true(herd_cgroup_parse_cfs("-1\n", "100000\n", &c));
    assert_true(c == 0);
    assert_true(herd_cgroup_parse_cfs("200000\n", "100000\n", &c));
    assert_true(c == 2);
    assert_false(herd_cgroup_parse_cfs("0\n", "100000\n", &c));
    assert_false(herd_cgroup_parse_cfs("10x", "100000", &c));
    assert_false(herd_cgroup_parse_cfs("1000", "-5", &c));
}

static void test_parse_memory(void **state) {
    (void)state;
    uint64_t b = 1;
    assert_true(herd_cgroup_parse_memory("max\n", &b));
    assert_true(b == 0);
    assert_true(herd_cgroup_parse_memory("268435456\n", &b));
    assert_true(b == 268435456);
    assert_true(herd_cgroup_parse_memory("9223372036854771712\n", &b)); /* v1: no limit */
    assert_true(b == 0);
    assert_true(herd_cgroup_parse_memory("99999999999999999999999", &b)); /* past 2^64: no limit */
    assert_true(b == 0);
    assert_false(herd_cgroup_parse_memory("", &b));
    assert_false(herd_cgroup_parse_memory("-1", &b));
    assert_false(herd_cgroup_parse_memory("12k", &b));
    assert_false(herd_cgroup_parse_memory("maximum", &b));
}

static void test_parse_cpulist(void **state) {
    (void)state;
    assert_int_equal(herd_cgroup_parse_cpulist("0-3\n"), 4);
    assert_int_equal(herd_cgroup_parse_cpulist("0-1,4-5,8"), 5);
    assert_int_equal(herd_cgroup_parse_cpulist("7"), 1);
    assert_int_equal(herd_cgroup_parse_cpulist(""), -1);
    assert_int_equal(herd_cgroup_parse_cpulist("\n"), -1);
    assert_int_equal(herd_cgroup_parse_cpulist("3-1"), -1);
    assert_int_equal(herd_cgroup_parse_cpulist("a"), -1);
    assert_int_equal(herd_cgroup_parse_cpulist("0-"), -1);
    assert_int_equal(herd_cgroup_parse_cpulist("0;1"), -1);
}

/* file ends with suffix (the reader's paths start with the fixture root) */
static void assert_ends_with(const char *file, const char *suffix) {
    const size_t n = strlen(file), s = strlen(suffix);
    if (n < s || strcmp(file + n - s, suffix) != 0) fail_msg("%s does not end with %s", file, suffix);
}

static void test_read_v1_hybrid(void **state) {
    (void)state;
    struct herd_cgroup_limits l;
    herd_cgroup_read(FIXTURES "/v1", &l);
    assert_int_equal(l.cpu_version, 1);
    assert_true(l.cpu_quota == 1.5);
    assert_ends_with(l.cpu_file, "/sys/fs/cgroup/cpu/kubepods/pod1/c1/cpu.cfs_quota_us");
    assert_int_equal(l.cpuset_cpus, 4);
    assert_int_equal(l.memory_version, 1);
    /* the parent's 512 MiB binds the child's 1 GiB */
    assert_true(l.memory_max_bytes == 536870912);
    assert_ends_with(l.memory_file, "/sys/fs/cgroup/memory/kubepods/pod1/memory.limit_in_bytes");
}

static void test_read_v2_namespace(void **state) {
    (void)state;
    struct herd_cgroup_limits l;
    herd_cgroup_read(FIXTURES "/v2ns", &l);
    assert_int_equal(l.cpu_version, 2);
    assert_true(l.cpu_quota == 2.5);
    assert_ends_with(l.cpu_file, "/sys/fs/cgroup/cpu.max");
    assert_int_equal(l.cpuset_cpus, 5);
    assert_int_equal(l.memory_version, 2);
    assert_true(l.memory_max_bytes == 2147483648u);
    assert_ends_with(l.memory_file, "/sys/fs/cgroup/memory.max");
}

static void test_read_v2_host_parent_limit(void **state) {
    (void)state;
    struct herd_cgroup_limits l;
    herd_cgroup_read(FIXTURES "/v2host", &l);
    assert_int_equal(l.cpu_version, 2);
    assert_true(l.cpu_quota == 0.5);
    assert_ends_with(l.cpu_file, "/sys/fs/cgroup/herd.slice/cpu.max");
    assert_int_equal(l.cpuset_cpus, 0);
    assert_string_equal(l.cpuset_file, "");
    assert_true(l.memory_max_bytes == 805306368);
    assert_ends_with(l.memory_file, "/sys/fs/cgroup/herd.slice/memory.max");
}

static void test_read_none(void **state) {
    (void)state;
    struct herd_cgroup_limits l;
    herd_cgroup_read(FIXTURES "/none", &l);
    assert_int_equal(l.cpu_version, 0);
    assert_true(l.cpu_quota == 0);
    assert_true(l.memory_max_bytes == 0);
    assert_string_equal(l.memory_file, "");
    herd_cgroup_read(FIXTURES "/does-not-exist", &l);
    assert_int_equal(l.memory_version, 0);
    assert_true(l.memory_max_bytes == 0);
}

/* The real machine: whatever it has, reading never fails, and a quota or
 * limit found names its file. */
static void test_read_this_machine(void **state) {
    (void)state;
    const struct herd_cgroup_limits *l = herd_cgroup_limits();
    assert_true(l->cpu_quota >= 0);
    if (l->cpu_quota > 0) assert_true(strlen(l->cpu_file) > 0);
    if (l->memory_max_bytes) assert_true(strlen(l->memory_file) > 0);
    assert_ptr_equal(l, herd_cgroup_limits()); /* read once */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_proc),        cmocka_unit_test(test_parse_mountinfo),
        cmocka_unit_test(test_parse_cpu),         cmocka_unit_test(test_parse_memory),
        cmocka_unit_test(test_parse_cpulist),     cmocka_unit_test(test_read_v1_hybrid),
        cmocka_unit_test(test_read_v2_namespace), cmocka_unit_test(test_read_v2_host_parent_limit),
        cmocka_unit_test(test_read_none),         cmocka_unit_test(test_read_this_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

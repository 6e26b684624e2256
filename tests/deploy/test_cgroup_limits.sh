#!/usr/bin/env bash
# herd inside a cgroup: threads follow the CPU quota, the KV cache shrinks to
# what the memory limit leaves after the model, a limit too small for the
# model fails at start naming it, and explicit flags win.
#   1. with HERD_TEST_CGROUP_ROOT pointed at the fixture trees (cgroup v2 on a
#      host, v1 in a pod): the derivation and its log lines, on any machine;
#   2. in real cgroups this script creates below its own (v1: the cpu and
#      memory hierarchies; v2: the unified one when it has those
#      controllers), the process moved into them before exec. Exits 77 with a
#      message when no cgroup can be created here (not root, read-only
#      /sys/fs/cgroup), after part 1 passed.
# Usage: test_cgroup_limits.sh HERD SOURCE_DIR
set -euo pipefail
herd=$1
src=$2
model=$src/models/stories260K.gguf
tmp=$(mktemp -d)
created=()
cleanup() {
    local d p
    for d in "${created[@]}"; do
        # a server a failed check left running (only this script's processes are in these cgroups)
        while read -r p; do kill -KILL "$p" 2>/dev/null || true; done < <(cat "$d/cgroup.procs" 2>/dev/null)
    done
    sleep 0.2
    for d in "${created[@]}"; do rmdir "$d" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    [ -f "$tmp/out" ] && sed 's/^/  | /' "$tmp/out" >&2
    exit 1
}
# expect_in FILE TEXT: fails unless FILE has TEXT
expect_in() { grep -qF -- "$2" "$1" || fail "expected '$2'"; }

# ---- 1. fixture trees ----
fixtures=$src/tests/data/cgroup
HERD_TEST_CGROUP_ROOT=$fixtures/v2host "$herd" run -m "$model" -p Once -n 2 >"$tmp/out" 2>&1 || fail "v2host run"
expect_in "$tmp/out" "1 threads from the cgroup CPU quota of 0.50 CPUs ($fixtures/v2host/sys/fs/cgroup/herd.slice/cpu.max)"
expect_in "$tmp/out" ", 1 threads,"
expect_in "$tmp/out" "fits the cgroup memory limit of 768.0 MiB ($fixtures/v2host/sys/fs/cgroup/herd.slice/memory.max)"
# explicit --threads wins, and says nothing about the quota
HERD_TEST_CGROUP_ROOT=$fixtures/v2host "$herd" run -m "$model" -p Once -n 2 --threads 2 >"$tmp/out" 2>&1 ||
    fail "v2host --threads 2"
expect_in "$tmp/out" ", 2 threads,"
if grep -q "CPU quota" "$tmp/out"; then fail "--threads 2 still logged the quota"; fi
echo "ok: fixtures (v2 quota on the parent slice -> 1 thread; --threads wins)"

# ---- 2. real cgroups ----
# own_path CONTROLLER: this process's cgroup in that v1 hierarchy ("" for v2)
own_path() { awk -F: -v c="$1" '{n=split($2,a,","); for(i=1;i<=n;i++) if(a[i]==c) {print $3; exit}} c=="" && $1=="0" {print $3; exit}' /proc/self/cgroup; }
mode=""
if [ -w /sys/fs/cgroup/memory ] && [ -w /sys/fs/cgroup/cpu ] || [ -d /sys/fs/cgroup/cpu,cpuacct ]; then
    cpu_mount=/sys/fs/cgroup/cpu
    [ -d "$cpu_mount/cpu.cfs_quota_us" ] || [ -f "$cpu_mount/cpu.cfs_quota_us" ] || cpu_mount=/sys/fs/cgroup/cpu,cpuacct
    cpu_dir=$cpu_mount$(own_path cpu | sed 's|^/$||')/herd-test-$$
    mem_dir=/sys/fs/cgroup/memory$(own_path memory | sed 's|^/$||')/herd-test-$$
    if mkdir "$cpu_dir" 2>/dev/null; then
        created+=("$cpu_dir")
        if mkdir "$mem_dir" 2>/dev/null; then
            created+=("$mem_dir")
            mode=v1
        fi
    fi
fi
if [ -z "$mode" ] && [ -f /sys/fs/cgroup/cgroup.controllers ] &&
    grep -qw memory /sys/fs/cgroup/cgroup.controllers && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
    v2_dir=/sys/fs/cgroup$(own_path "" | sed 's|^/$||')/herd-test-$$
    if mkdir "$v2_dir" 2>/dev/null && [ -f "$v2_dir/memory.max" ] && [ -f "$v2_dir/cpu.max" ]; then
        created+=("$v2_dir")
        mode=v2
    fi
fi
if [ -z "$mode" ]; then
    echo "skip: cannot create a cgroup here (needs root and a writable /sys/fs/cgroup with the cpu and memory"
    echo "controllers); the fixture part passed"
    exit 77
fi
echo "real cgroups: $mode ${created[*]}"

# limits CPU_QUOTA_US MEMORY_BYTES: sets them on the cgroups made above
limits() {
    if [ "$mode" = v1 ]; then
        echo 100000 >"$cpu_dir/cpu.cfs_period_us"
        echo "$1" >"$cpu_dir/cpu.cfs_quota_us"
        echo "$2" >"$mem_dir/memory.limit_in_bytes"
    else
        echo "$1 100000" >"$v2_dir/cpu.max"
        echo "$2" >"$v2_dir/memory.max"
    fi
}
# in_cgroup CMD...: runs CMD inside the cgroups (moved before exec); in a
# subshell, `exec_in_cgroup` makes CMD that subshell's process (for $!)
in_cgroup() { (exec_in_cgroup "$@"); }
exec_in_cgroup() {
    local dirs=("${created[@]}")
    # shellcheck disable=SC2016 # $$ and "$@" are the inner shell's
    exec bash -c 'for d in "${@:1:$0}"; do echo $$ >"$d/cgroup.procs"; done; shift "$0"; exec "$@"' \
        "${#dirs[@]}" "${dirs[@]}" "$@"
}

# half a CPU: 1 thread, logged with the file
limits 50000 $((512 << 20))
in_cgroup "$herd" run -m "$model" -p Once -n 2 >"$tmp/out" 2>&1 || fail "run under a 0.5 CPU quota"
expect_in "$tmp/out" "1 threads from the cgroup CPU quota of 0.50 CPUs ("
expect_in "$tmp/out" ", 1 threads,"
in_cgroup "$herd" run -m "$model" -p Once -n 2 --threads 2 >"$tmp/out" 2>&1 || fail "--threads 2 under the quota"
expect_in "$tmp/out" ", 2 threads,"
echo "ok: a 0.5 CPU quota gives 1 thread; --threads 2 wins"

# serve_in_cgroup ARGS...: herd serve ARGS inside the cgroups until ready,
# one completion (200), then SIGTERM and a clean exit; its log in $tmp/out
serve_in_cgroup() {
    (exec_in_cgroup "$herd" serve -m "$model" --port 0 "$@" >"$tmp/out" 2>&1) &
    local pid=$! port="" code
    for _ in $(seq 100); do
        port=$(sed -n 's/.*ready: .* on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/out" | head -1)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$port" ] || { kill "$pid" 2>/dev/null; fail "herd serve $* never became ready"; }
    code=$(curl -s -o "$tmp/answer" -w '%{http_code}' -H 'Content-Type: application/json' \
        -d '{"model":"stories260K","prompt":"Once upon","max_tokens":8}' "http://127.0.0.1:$port/v1/completions") || true
    kill -TERM "$pid"
    wait "$pid" || fail "herd serve $* did not exit 0 on SIGTERM"
    [ "$code" = 200 ] || fail "herd serve $*: a completion got HTTP $code"
}

# 72 MiB: herd serve with 64 sequences of 512 tokens wants a 20 MiB KV cache;
# the limit leaves ~4 MiB after the model, activations and the runtime: the
# cache shrinks, the server is ready and answers within the limit.
limits -1 $((72 << 20))
serve_in_cgroup --max-seqs 64
expect_in "$tmp/out" "not the 20.0 MiB of 64 contexts x 512) from the cgroup memory limit of 72.0 MiB ("
echo "ok: 72 MiB shrinks the default KV cache and serves"

# an explicit --kv-mem wins (with a warning when over the budget)
serve_in_cgroup --kv-mem $((8 << 20))
expect_in "$tmp/out" "--kv-mem 8.0 MiB is more than the"
expect_in "$tmp/out" "KV cache 13104 tokens in 8 MiB"
echo "ok: --kv-mem wins, with a warning"

# 66 MiB: the model and the runtime fit, one context's KV cache does not
limits -1 $((66 << 20))
if in_cgroup "$herd" run -m "$model" -p Once -n 2 >"$tmp/out" 2>&1; then fail "66 MiB should not hold the model"; fi
expect_in "$tmp/out" "the cgroup memory limit of 66.0 MiB ("
expect_in "$tmp/out" "less than the 0.3 MiB of KV cache one context of 512 tokens needs"
# 32 MiB: refused before the model is loaded
limits -1 $((32 << 20))
if in_cgroup "$herd" serve -m "$model" --port 0 >"$tmp/out" 2>&1; then fail "32 MiB should not hold the model"; fi
expect_in "$tmp/out" "the cgroup memory limit of 32.0 MiB ("
expect_in "$tmp/out" "is too small for the model $model"
echo "ok: limits too small for the model fail at start, naming the limit"

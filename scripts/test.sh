#!/usr/bin/env bash
# The README's second command, and what CI runs (.ci/run): installs what is
# missing, then
#   1. builds with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)
#      and runs the unit and CLI suites there;
#   2. builds with ThreadSanitizer (build-tsan/) and runs the tests labelled
#      tsan there (scheduler, engine, HTTP, herd serve end to end); any race
#      report, from a test binary or from a server a test started, fails it;
#   3. builds the libFuzzer targets with clang (build-fuzz/) and runs each
#      for a bounded time (HERD_FUZZ_SECONDS, default 60);
#   4. builds the release binary (build/) and runs the whole suite there,
#      slow tests included unless HERD_SKIP_SLOW=1.
# The last CTest summary is the release run's. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc)

echo "== ASan/UBSan build: unit and CLI tests"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHERD_SANITIZE=ON >/dev/null
cmake --build build-asan --parallel "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan -L "unit|cli" --output-on-failure -j "$jobs"

echo "== ThreadSanitizer build: engine, HTTP and server tests"
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHERD_TSAN=ON >/dev/null
cmake --build build-tsan --parallel "$jobs"
# Reports go to files, one per process: the servers the end-to-end tests
# start write their stderr to logs no test reads, so the files are checked
# here. tests/tsan.supp lists what is suppressed and why.
tsan_reports="$PWD/build-tsan/tsan-reports"
rm -rf "$tsan_reports" && mkdir -p "$tsan_reports"
tsan_rc=0
TSAN_OPTIONS="log_path=$tsan_reports/report suppressions=$PWD/tests/tsan.supp second_deadlock_stack=1" \
    ctest --test-dir build-tsan -L tsan --output-on-failure -j "$jobs" || tsan_rc=$?
if compgen -G "$tsan_reports/report.*" >/dev/null; then
    cat "$tsan_reports"/report.*
    echo "ThreadSanitizer reported the races above (one file per process in $tsan_reports)"
    exit 1
fi
[ "$tsan_rc" = 0 ] || exit "$tsan_rc"

echo "== libFuzzer build: bounded fuzz runs"
CC=clang cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHERD_FUZZ=ON \
    -DFUZZ_SECONDS="${HERD_FUZZ_SECONDS:-60}" >/dev/null
cmake --build build-fuzz --parallel "$jobs" --target fuzz_gguf fuzz_jinja fuzz_http1 fuzz_http1_response fuzz_api \
    fuzz_multipart fuzz_grammar
ctest --test-dir build-fuzz -L fuzz --output-on-failure

echo "== release build: the whole suite"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --parallel "$jobs"
exclude=()
[ "${HERD_SKIP_SLOW:-0}" = 1 ] && exclude=(-LE slow)
ctest --test-dir build --output-on-failure -j "$jobs" "${exclude[@]}"

# Sourced by the bench scripts that run `herd serve`: a scratch directory
# ($tmp) and background processes (bench_bg) that are cleaned up on exit,
# and bench_serve, which starts the server and waits until it is ready.
tmp=$(mktemp -d)
bench_pids=()
bench_cleanup() {
    for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap bench_cleanup EXIT
# bench_bg PID: kill it on exit
bench_bg() { bench_pids+=("$1"); }
# bench_serve PORT ARGS...: $HERD serve on 127.0.0.1:PORT (stderr to
# $tmp/serve.log); sets $server; returns once /health answers (30 s at most)
bench_serve() {
    local port=$1
    shift
    "$HERD" serve --port "$port" "$@" 2>"$tmp/serve.log" &
    server=$!
    bench_bg $server
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "herd serve did not become ready:" >&2
    cat "$tmp/serve.log" >&2
    return 1
}

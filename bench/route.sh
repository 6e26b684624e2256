#!/usr/bin/env bash
# herd route benchmarks (issue 16). Three parts, each alternating what it
# compares within one run (shared, noisy machines: ratios from the same run):
#   overhead  small non-streaming POSTs (wrk) to a static nginx answering a
#             fixed chat completion: direct, through HAProxy (nbthread 1,
#             http mode, keep-alive to the backend) and through
#             `herd route --policy round-robin`. Latency p50 / p99 at one
#             connection (added latency = proxied minus direct, same round),
#             requests/s at 32 connections and per proxy core (the proxy's
#             CPU seconds from /proc/PID/stat over the run).
#             Goal: added p99 <= 250 us, requests/s >= HAProxy's. A run
#             whose slowest request took 50 ms or more was stopped by the
#             hypervisor (see the summary's comment); the added p99 is
#             also given over the rounds free of such stalls and the goal
#             judged on those.
#   prefix    local `herd serve` replicas (1 thread each) of a synthesized
#             smollm-135m Q8_0, each with a KV cache holding about 3.4 of 8
#             shared system prompts of 1,000 tokens; `herd loadtest
#             --shared-prefixes 8` through the router, cache-aware against
#             round-robin: output tokens/s and TTFT p90 (goal: 2x and 5x
#             better). Then traffic with no shared prefix: cache-aware
#             against least-outstanding (goal: within 3 %).
#             Each shared-prefix run first sends --warm requests (default
#             2 x clients) of the same system prompts with other questions
#             (loadtest --prefix-seed) through the same router and
#             replicas, unmeasured, for either policy alike: a service's
#             system prompts are hot, and with 16 clients on 96-120
#             requests the first cold pass (every prompt a miss whatever
#             the policy) was over 10 % of the requests, so it alone set
#             the TTFT p90 of both. Counters in the table are the measured
#             run's (those after the warm-up subtracted). The replicas'
#             prefix-cache hits are prompt tokens found over every full
#             block of each admitted prompt (before 2026-12-04 they counted
#             only up to a request's first miss, which showed round-robin
#             at 79-87 %; it is about 25 %).
#   failover  3 replicas, streaming requests through the router
#             (round-robin, so every replica has streams), kill -9 of one:
#             the time from the kill to the router's ejection (GET
#             /router/replicas polled every 5 ms, and its log line), the
#             longest gap between two chunks a stream live across the kill
#             saw, and whether every request completed.
# Everything binds 127.0.0.1 on free ports, runs from a temporary directory
# (nginx and HAProxy in the foreground on generated configs) and is stopped
# on exit; the whole run is bounded by --limit seconds. Needs nginx, haproxy
# and wrk (Debian packages nginx-light, haproxy, wrk; installed if missing).
# Writes bench/results/route-<UTC date>.json and a summary beside it (.md).
# Usage: bench/route.sh [overhead|prefix|failover|all] [--rounds N] [--seconds S]
#        [--replicas N] [--threads T] [--clients C] [--requests N] [--warm N] [--limit S]
set -euo pipefail
cd "$(dirname "$0")/.."
HERD=${HERD:-build/bin/herd}
[ -x "$HERD" ] || scripts/build.sh
part=all rounds=3 secs=5 replicas=4 threads=1 clients=16 requests=120 limit=1800 warm=
shape=smollm-135m type=Q8_0 n_prefixes=8 prefix_tokens=1000
while [ $# -gt 0 ]; do
    case $1 in
    overhead | prefix | failover | all) part=$1; shift ;;
    --rounds) rounds=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --replicas) replicas=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --warm) warm=$2; shift 2 ;;
    --limit) limit=$2; shift 2 ;;
    *) echo "usage: $0 [overhead|prefix|failover|all] [--rounds N] [--seconds S] [--replicas N] [--threads T]" \
        "[--clients C] [--requests N] [--warm N] [--limit S]" >&2; exit 2 ;;
    esac
done
warm=${warm:-$((2 * clients))}
if [ "$part" = all ] || [ "$part" = overhead ]; then
    for pkg in nginx:nginx-light haproxy:haproxy wrk:wrk; do
        if ! command -v "${pkg%%:*}" >/dev/null && ! [ -x "/usr/sbin/${pkg%%:*}" ]; then
            echo "bench/route.sh: installing ${pkg#*:}" >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkg#*:}" >/dev/null
        fi
    done
fi
export PATH=$PATH:/usr/sbin
. bench/lib.sh
# bench_cleanup runs with errexit off: under set -e its first kill of a
# process already stopped would end it, leaving the rest running
trap 'set +e; bench_cleanup' EXIT
trap 'exit 143' TERM INT # run the EXIT trap on a signal too
# the watchdog: its sleep dies with it when the run ends first
(
    trap 'kill $sleeper 2>/dev/null; exit 0' TERM
    sleep "$limit" &
    sleeper=$!
    wait $sleeper
    echo "bench/route.sh: over $limit s, stopping" >&2
    kill -TERM $$
) &
bench_bg $!
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
out=bench/results/route-$stamp
echo '{}' >"$tmp/overhead.json"
echo '{}' >"$tmp/prefix.json"
echo '{}' >"$tmp/failover.json"
: >"$tmp/summary.md"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_http URL: until it answers 2xx (30 s at most)
wait_http() {
    for _ in $(seq 300); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "bench/route.sh: $1 did not answer" >&2
    return 1
}
# stop PID...: SIGTERM, then wait for it
stop() {
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
}
# start_serve NAME ARGS...: herd serve on a free port, log $tmp/NAME.log;
# sets $serve_pid and $serve_url once it is ready
start_serve() {
    local name=$1
    shift
    "$HERD" serve --port 0 -q "$@" 2>"$tmp/$name.log" &
    serve_pid=$!
    bench_bg $serve_pid
    serve_url=""
    for _ in $(seq 300); do
        serve_url=$(grep -so 'http://127.0.0.1:[0-9]*' "$tmp/$name.log" | head -1 || true)
        [ -n "$serve_url" ] && curl -sf "$serve_url/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench/route.sh: herd serve ($name) did not become ready:" >&2
    cat "$tmp/$name.log" >&2
    return 1
}
# start_route NAME N_HERD ARGS...: herd route on a free port, log
# $tmp/NAME.log; sets $route_pid and $route_url once it says it routes and,
# with N_HERD > 0, N_HERD replicas are up with their state stream open
start_route() {
    local name=$1 n_herd=$2
    shift 2
    "$HERD" route --port 0 -q "$@" 2>"$tmp/$name.log" &
    route_pid=$!
    bench_bg $route_pid
    route_url=""
    for _ in $(seq 300); do
        route_url=$(grep -so 'routing ([a-z-]*) on http://127.0.0.1:[0-9]*' "$tmp/$name.log" | grep -o 'http.*' || true)
        if [ -n "$route_url" ]; then
            local reps
            reps=$(curl -sf "$route_url/router/replicas" || true)
            if [ "$n_herd" = 0 ] && grep -q '"health":"up"' <<<"$reps"; then return 0; fi
            [ "$n_herd" != 0 ] && [ "$(grep -o '"state_stream":true' <<<"$reps" | wc -l)" -ge "$n_herd" ] &&
                [ "$(grep -o '"health":"up"' <<<"$reps" | wc -l)" -ge "$n_herd" ] && return 0
        fi
        sleep 0.1
    done
    echo "bench/route.sh: herd route ($name) did not become ready:" >&2
    cat "$tmp/$name.log" >&2
    return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, all threads
ncpu=$(nproc)

# ------------------------------------------------------------- overhead

overhead() {
    local nginx_port haproxy_port wrk_cpu proxy_cpu pinned
    nginx_port=$(free_port)
    haproxy_port=$(free_port)
    # two cores: wrk and nginx share the first, the proxy under test has the
    # last to itself (the direct path leaves it idle); one core: no pinning
    if [ "$ncpu" -ge 2 ]; then
        wrk_cpu="taskset -c 0" proxy_cpu="taskset -c $((ncpu - 1))"
        pinned="wrk and nginx on CPU 0, the proxy (HAProxy or herd route) on CPU $((ncpu - 1))"
    else
        wrk_cpu="" proxy_cpu="" pinned="nothing (one CPU)"
    fi
    mkdir -p "$tmp/nginx"
    cat >"$tmp/nginx/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$nginx_port;
        location = /v1/chat/completions {
            default_type application/json;
            return 200 '{"id":"chatcmpl-0","object":"chat.completion","created":0,"model":"static","choices":[{"index":0,"message":{"role":"assistant","content":"Hello."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}';
        }
        location = /readyz { return 200 'ok'; }
        location / { return 404; }
    }
}
EOF
    $wrk_cpu nginx -e "$tmp/nginx/error.log" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
    local nginx_pid=$!
    bench_bg $nginx_pid
    wait_http "http://127.0.0.1:$nginx_port/readyz"
    cat >"$tmp/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend bench
    bind 127.0.0.1:$haproxy_port
    default_backend nginx
backend nginx
    http-reuse always
    server s1 127.0.0.1:$nginx_port
EOF
    $proxy_cpu haproxy -db -f "$tmp/haproxy.cfg" 2>"$tmp/haproxy.log" &
    local haproxy_pid=$!
    bench_bg $haproxy_pid
    wait_http "http://127.0.0.1:$haproxy_port/readyz"
    $proxy_cpu "$HERD" route --port 0 -q --policy round-robin --backend "http://127.0.0.1:$nginx_port" \
        2>"$tmp/route-overhead.log" &
    local route_pid=$!
    bench_bg $route_pid
    local route_url=""
    for _ in $(seq 300); do
        route_url=$(grep -o 'routing ([a-z-]*) on http://127.0.0.1:[0-9]*' "$tmp/route-overhead.log" | grep -o 'http.*' || true)
        [ -n "$route_url" ] && curl -sf "$route_url/router/replicas" | grep -q '"health":"up"' && break
        sleep 0.1
    done
    [ -n "$route_url" ] || { cat "$tmp/route-overhead.log" >&2; return 1; }
    cat >"$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"static","messages":[{"role":"user","content":"Say hello."}],"max_tokens":8}'
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
        '"max_us":%d,"mean_us":%.2f,"socket_errors":%d,"non_2xx":%d}\n', summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
        e.connect + e.read + e.write + e.timeout, e.status))
end
LUA
    local path=/v1/chat/completions
    local -A url=([direct]="http://127.0.0.1:$nginx_port$path" [haproxy]="http://127.0.0.1:$haproxy_port$path"
        [herd-route]="$route_url$path")
    local -A pid=([direct]=$nginx_pid [haproxy]=$haproxy_pid [herd-route]=$route_pid)
    # every path answers the same 200 (herd route adds X-Herd-Replica)
    for t in direct haproxy herd-route; do
        curl -sf -D "$tmp/head-$t" -o "$tmp/body-$t" -H 'Content-Type: application/json' \
            -d '{"model":"static","messages":[{"role":"user","content":"hi"}]}' "${url[$t]}" ||
            { echo "bench/route.sh: POST through $t failed" >&2; cat "$tmp/route-overhead.log" >&2; return 1; }
    done
    grep -qi '^x-herd-replica:' "$tmp/head-herd-route" || echo "bench/route.sh: no X-Herd-Replica header" >&2
    local order=(direct haproxy herd-route) r t c
    : >"$tmp/overhead.jsonl"
    for r in $(seq "$rounds"); do
        for t in "${order[@]}"; do
            for c in 1 32; do
                local p=${pid[$t]} t0 t1 line
                t0=$(cpu_ticks "$p")
                # shellcheck disable=SC2086 # $wrk_cpu is a command prefix, or nothing
                line=$(timeout $((secs + 30)) $wrk_cpu wrk -t1 -c$c -d"${secs}s" --latency -s "$tmp/post.lua" \
                    "${url[$t]}" | tee "$tmp/wrk-$t-$c-$r.txt" | grep '^WRKJSON' | cut -d' ' -f2-)
                t1=$(cpu_ticks "$p")
                echo "{\"round\":$r,\"target\":\"$t\",\"connections\":$c,\"cpu_ticks\":$((t1 - t0)),\"wrk\":$line}" \
                    >>"$tmp/overhead.jsonl"
            done
        done
        order=("${order[@]:1}" "${order[0]}") # the next round starts with the next path
    done
    python3 - "$tmp/overhead.jsonl" "$tmp/overhead.json" "$(getconf CLK_TCK)" "$pinned" "$secs" "$rounds" \
        "$(nginx -v 2>&1)" "$(haproxy -v | head -1)" "$(wrk -v 2>&1 | head -1)" >>"$tmp/summary.md" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tck, pinned, secs, rounds = int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
med = statistics.median
res = {"pinned": pinned, "seconds_per_run": secs, "rounds": rounds,
       "versions": {"nginx": sys.argv[7], "haproxy": sys.argv[8], "wrk": sys.argv[9]}, "runs": rows, "paths": {}}
for t in ("direct", "haproxy", "herd-route"):
    one = [x for x in rows if x["target"] == t and x["connections"] == 1]
    many = [x for x in rows if x["target"] == t and x["connections"] == 32]
    rps = [x["wrk"]["requests"] / (x["wrk"]["duration_us"] / 1e6) for x in many]
    # requests/s per core: requests over the proxy's CPU seconds in the run
    per_core = [x["wrk"]["requests"] / (x["cpu_ticks"] / tck) if x["cpu_ticks"] else None for x in many]
    res["paths"][t] = {
        "p50_us": med(x["wrk"]["p50_us"] for x in one), "p99_us": med(x["wrk"]["p99_us"] for x in one),
        "requests_per_s_1": med(x["wrk"]["requests"] / (x["wrk"]["duration_us"] / 1e6) for x in one),
        "requests_per_s_32": med(rps), "cpu_cores_32": med(x["cpu_ticks"] / tck / (x["wrk"]["duration_us"] / 1e6) for x in many),
        "requests_per_core_s_32": med(v for v in per_core if v) if any(per_core) else None,
        "errors": sum(x["wrk"]["socket_errors"] + x["wrk"]["non_2xx"] for x in one + many)}
def one_conn(r, t):
    """wrk's figures for target t at one connection in round r"""
    return next(y for y in rows if y["round"] == r and y["target"] == t and y["connections"] == 1)["wrk"]
# added latency: per round, proxied minus direct (the same round), then the median
for t in ("haproxy", "herd-route"):
    for q in ("p50_us", "p99_us"):
        d = [one_conn(x["round"], t)[q] - x["wrk"][q] for x in rows if x["target"] == "direct" and x["connections"] == 1]
        res["paths"][t]["added_" + q] = med(d)
# A run whose slowest request took 50 ms or more was stalled from outside:
# on these VMs the hypervisor stops a busy vCPU for ~100 ms every few
# seconds (perf's cpu-clock samples of the proxy stop for those 100 ms;
# the direct path, whose CPU 1 is idle, never shows one), and wrk's
# coordinated-omission correction turns one such stall into ~1,000
# samples, a p99 of ~48 ms. The added p99 is therefore also given over the
# rounds where neither the direct nor the proxied run at one connection
# stalled, and the goal is judged on those when there are any.
STALL_US = 50000
for t in ("haproxy", "herd-route"):
    clean = [r for r in range(1, rounds + 1)
             if one_conn(r, "direct")["max_us"] < STALL_US and one_conn(r, t)["max_us"] < STALL_US]
    res["paths"][t]["stalled_runs"] = sum(x["wrk"]["max_us"] >= STALL_US for x in rows if x["target"] == t)
    res["paths"][t]["stall_free_rounds_1"] = len(clean)
    res["paths"][t]["added_p99_us_stall_free"] = (
        med(one_conn(r, t)["p99_us"] - one_conn(r, "direct")["p99_us"] for r in clean) if clean else None)
hr, hp = res["paths"]["herd-route"], res["paths"]["haproxy"]
judged_p99 = hr["added_p99_us_stall_free"] if hr["added_p99_us_stall_free"] is not None else hr["added_p99_us"]
res["goals"] = {"added_p99_le_250us": judged_p99 <= 250,
                "requests_per_s_ge_haproxy": hr["requests_per_s_32"] >= hp["requests_per_s_32"],
                "requests_per_core_ge_haproxy": (hr["requests_per_core_s_32"] or 0) >= (hp["requests_per_core_s_32"] or 0)}
json.dump(res, open(sys.argv[2], "w"), indent=1)
print(f"### Overhead (wrk, {rounds} rounds of {secs} s, medians; pinned: {pinned})\n")
print("| path | p50 @1 conn | p99 @1 conn | added p50 / p99 | req/s @1 | req/s @32 | proxy cores @32 | req/s per proxy core | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for t, v in res["paths"].items():
    added = f"{v['added_p50_us']:+.0f} / {v['added_p99_us']:+.0f} us" if "added_p50_us" in v else "-"
    core = f"{v['requests_per_core_s_32']:.0f}" if t != "direct" and v["requests_per_core_s_32"] else "-"
    cores = f"{v['cpu_cores_32']:.2f}" if t != "direct" else "-"
    print(f"| {t} | {v['p50_us']:.0f} us | {v['p99_us']:.0f} us | {added} | {v['requests_per_s_1']:.0f} | "
          f"{v['requests_per_s_32']:.0f} | {cores} | {core} | {v['errors']} |")
g = res["goals"]
def stall_free(v):
    if v["added_p99_us_stall_free"] is None:
        return f"no round free of stalls; {v['stalled_runs']} of {2 * rounds} runs stalled"
    return (f"{v['added_p99_us_stall_free']:+.0f} us over the {v['stall_free_rounds_1']} of {rounds} rounds free of "
            f"stalls; {v['stalled_runs']} of {2 * rounds} runs stalled")
print(f"\nAdded p99 without the hypervisor's stalls (a run whose slowest request took 50 ms or more): "
      f"herd route {stall_free(hr)}; HAProxy {stall_free(hp)}.")
print(f"\nGoals: added p99 {judged_p99:.0f} us (<= 250: {'met' if g['added_p99_le_250us'] else 'NOT met'}); "
      f"req/s @32 {hr['requests_per_s_32']:.0f} against HAProxy's {hp['requests_per_s_32']:.0f} "
      f"({'met' if g['requests_per_s_ge_haproxy'] else 'NOT met'}); per core {hr['requests_per_core_s_32'] or 0:.0f} "
      f"against {hp['requests_per_core_s_32'] or 0:.0f}.\n")
PY
    stop "$route_pid" "$haproxy_pid" "$nginx_pid"
}

# --------------------------------------------------------------- prefix

models=${HERD_BENCH_MODELS:-/tmp/herd-bench-models}
model=$models/$shape-$type.gguf
ensure_model() {
    mkdir -p "$models"
    [ -f "$model" ] || "$HERD" synth --shape "$shape" --type "$type" -o "$model" 2>/dev/null
}
# KV bytes per token (f16 K and V over every layer), from herd inspect
kv_bytes_per_token() {
    "$HERD" inspect "$model" | python3 -c '
import re, sys
t = sys.stdin.read()
g = lambda k: int(re.search(k + r" (\d+)", t).group(1))
print(2 * g("n_layer") * g("n_head_kv") * g("head_dim") * 2)'
}

# prefix_run NAME POLICY WARM LOADTEST-ARGS...: fresh replicas and router;
# with WARM set and not 0, a warm-up loadtest (unmeasured: "$warm" requests of the
# same system prompts with other questions, --seed + 1000 and
# --prefix-seed), then the measured one; $tmp/NAME.json (loadtest) and
# $tmp/NAME.metrics (counters from after the warm-up subtracted)
prefix_run() {
    local name=$1 policy=$2 warm=$3
    shift 3
    local pids=() backends=() i
    for i in $(seq "$replicas"); do
        start_serve "$name-r$i" -m "$model" -t "$threads" --kv-mem "$kv_mem"
        pids+=("$serve_pid")
        backends+=(--backend "$serve_url")
    done
    start_route "$name-route" "$replicas" --policy "$policy" -m "$model" "${backends[@]}"
    if [ -n "$warm" ] && [ "$warm" != 0 ]; then
        local seed=${*: -1} # the measured run's --seed is the last argument
        timeout 900 "$HERD" loadtest --url "$route_url" "$@" -n "$warm" --seed $((seed + 1000)) --prefix-seed "$seed" \
            >/dev/null || echo "bench/route.sh: $name: warm-up loadtest reported failures" >&2
        prefix_counters "$name" >"$tmp/$name.warm"
    else
        : >"$tmp/$name.warm"
    fi
    timeout 900 "$HERD" loadtest --url "$route_url" "$@" --json "$tmp/$name.json" >"$tmp/$name.md" ||
        echo "bench/route.sh: $name: loadtest reported failures (see $tmp/$name.json)" >&2
    prefix_counters "$name" >"$tmp/$name.metrics"
    stop "$route_pid" "${pids[@]}"
}
# prefix_counters NAME: the router's decision counters and the replicas'
# prefix-cache and preemption counters, now
prefix_counters() {
    curl -sf "$route_url/metrics" | grep -E '^herd_router_(requests_total|decisions_total|cache_affinity)' || true
    local i u
    for i in $(seq "$replicas"); do
        u=$(grep -o 'http://127.0.0.1:[0-9]*' "$tmp/$1-r$i.log" | head -1)
        curl -sf "$u/metrics" | grep -E '^herd_(prefix_cache_(hits|queries)|preemptions)_total' | sed "s/^/r$i /" || true
    done
}

prefix() {
    ensure_model
    local per_token
    per_token=$(kv_bytes_per_token)
    # room for the system prompts cache-aware gives each replica (8 over 4:
    # 2) and 1.4 more for the running requests' own tokens: round-robin,
    # sending every prompt everywhere, evicts them, cache-aware keeps its own
    kv_mem=$((per_token * prefix_tokens * (n_prefixes * 10 / replicas + 14) / 10))
    local shared=(-c "$clients" -n "$requests" --prompt-tokens 32 --max-tokens 32 --shared-prefixes "$n_prefixes"
        --prefix-tokens "$prefix_tokens")
    local plain=(-c "$clients" -n $((requests / 2)) --prompt-tokens 512 --max-tokens 64)
    local r order=(cache-aware round-robin) order2=(cache-aware least-outstanding) p
    for r in $(seq "$rounds"); do
        for p in "${order[@]}"; do
            echo "prefix: round $r, $p, shared prefixes" >&2
            prefix_run "shared-$p-$r" "$p" "$warm" "${shared[@]}" --seed "$r"
        done
        for p in "${order2[@]}"; do
            echo "prefix: round $r, $p, no shared prefix" >&2
            prefix_run "plain-$p-$r" "$p" "" "${plain[@]}" --seed "$r"
        done
        order=("${order[1]}" "${order[0]}")
        order2=("${order2[1]}" "${order2[0]}")
    done
    python3 - "$tmp" "$tmp/prefix.json" "$rounds" "$replicas" "$threads" "$kv_mem" "$ncpu" "$shape $type" \
        "$clients" "$warm" >>"$tmp/summary.md" <<'PY'
import json, re, statistics, sys
tmp, out, rounds, replicas, threads, kv_mem, ncpu, model, clients, warm = sys.argv[1:11]
rounds, replicas = int(rounds), int(replicas)
med = statistics.median
def counters(path):
    m = {"replica_requests": {}, "decisions": {}, "affinity_hits": 0, "prefix_hits": 0, "prefix_queries": 0,
         "preemptions": 0}
    for l in open(path):
        if l.startswith("herd_router_requests_total"):
            m["replica_requests"][re.search(r'replica="([^"]*)"', l).group(1)] = int(float(l.split()[-1]))
        elif l.startswith("herd_router_decisions_total"):
            m["decisions"][re.search(r'reason="([^"]*)"', l).group(1)] = int(float(l.split()[-1]))
        elif l.startswith("herd_router_cache_affinity_hits_total"):
            m["affinity_hits"] = int(float(l.split()[-1]))
        elif "herd_prefix_cache_hits_total" in l:
            m["prefix_hits"] += int(float(l.split()[-1]))
        elif "herd_prefix_cache_queries_total" in l:
            m["prefix_queries"] += int(float(l.split()[-1]))
        elif "herd_preemptions_total" in l:
            m["preemptions"] += int(float(l.split()[-1]))
    return m
def metrics(name):
    # the measured run's: the counters after it less those after the warm-up
    m, w = counters(f"{tmp}/{name}.metrics"), counters(f"{tmp}/{name}.warm")
    for k in ("replica_requests", "decisions"):
        m[k] = {x: v - w[k].get(x, 0) for x, v in m[k].items()}
    for k in ("affinity_hits", "prefix_hits", "prefix_queries", "preemptions"):
        m[k] -= w[k]
    return m
res = {"model": f"{model} (herd synth)", "replicas": replicas, "threads_per_replica": int(threads), "cpus": int(ncpu),
       "kv_mem_bytes": int(kv_mem), "clients": int(clients), "warm_up_requests": int(warm or 0), "runs": {}}
def summary(traffic, policy):
    runs = []
    for r in range(1, rounds + 1):
        name = f"{traffic}-{policy}-{r}"
        lt = json.load(open(f"{tmp}/{name}.json"))
        per = lt.pop("per_request")
        runs.append({"round": r, "loadtest": lt, "router": metrics(name)})
    res["runs"][f"{traffic}/{policy}"] = runs
    return {"output_tokens_per_s": med(x["loadtest"]["output_tokens_per_s"] for x in runs),
            "ttft_p90_ms": med(x["loadtest"]["ttft_ms"]["p90"] for x in runs),
            "ttft_median_ms": med(x["loadtest"]["ttft_ms"]["median"] for x in runs),
            "e2e_p90_ms": med(x["loadtest"]["e2e_ms"]["p90"] for x in runs),
            "failed": sum(x["loadtest"]["failed"] for x in runs),
            "preemptions": med(x["router"]["preemptions"] for x in runs),
            "replica_prefix_hit_rate": med(x["router"]["prefix_hits"] / max(1, x["router"]["prefix_queries"]) for x in runs),
            "replica_requests": " / ".join(str(n) for n in sorted(runs[-1]["router"]["replica_requests"].values(), reverse=True)),
            "per_round_tokens_per_s": [x["loadtest"]["output_tokens_per_s"] for x in runs],
            "per_round_ttft_p90_ms": [x["loadtest"]["ttft_ms"]["p90"] for x in runs]}
ca, rr = summary("shared", "cache-aware"), summary("shared", "round-robin")
ca2, lo = summary("plain", "cache-aware"), summary("plain", "least-outstanding")
# ratios per round (same round, alternating), then their median
def ratio(a, b, key, inv=False):
    va = res["runs"][a]; vb = res["runs"][b]
    f = (lambda x: x["loadtest"]["output_tokens_per_s"]) if key == "tps" else (lambda x: x["loadtest"]["ttft_ms"]["p90"])
    return med((f(y) / f(x)) if inv else (f(x) / f(y)) for x, y in zip(va, vb))
res["shared"] = {"cache-aware": ca, "round-robin": rr,
                 "tokens_per_s_ratio": ratio("shared/cache-aware", "shared/round-robin", "tps"),
                 "ttft_p90_improvement": ratio("shared/cache-aware", "shared/round-robin", "ttft", inv=True)}
res["plain"] = {"cache-aware": ca2, "least-outstanding": lo,
                "tokens_per_s_ratio": ratio("plain/cache-aware", "plain/least-outstanding", "tps")}
res["goals"] = {"tokens_per_s_2x": res["shared"]["tokens_per_s_ratio"] >= 2,
                "ttft_p90_5x": res["shared"]["ttft_p90_improvement"] >= 5,
                "plain_within_3pct": res["plain"]["tokens_per_s_ratio"] >= 0.97}
json.dump(res, open(out, "w"), indent=1)
print(f"### Shared prefixes ({replicas} replicas x {threads} thread on {ncpu} CPUs, {model}, KV {int(kv_mem) / 2**20:.0f} MiB "
      f"each, {clients} clients, {rounds} rounds alternating, medians; shared-prefix runs after an unmeasured warm-up "
      f"of {int(warm or 0)} requests)\n")
print("| traffic | policy | output tokens/s | TTFT median | TTFT p90 | E2E p90 | prefix-cache hits (tokens) | preemptions | requests per replica | failed |")
print("|---|---|---|---|---|---|---|---|---|---|")
for traffic, pols in (("8 shared 1,000-token prefixes", (("cache-aware", ca), ("round-robin", rr))),
                      ("no shared prefix (512 tokens)", (("cache-aware", ca2), ("least-outstanding", lo)))):
    for p, v in pols:
        print(f"| {traffic} | {p} | {v['output_tokens_per_s']:.1f} | {v['ttft_median_ms']:.0f} ms | {v['ttft_p90_ms']:.0f} ms | "
              f"{v['e2e_p90_ms']:.0f} ms | {100 * v['replica_prefix_hit_rate']:.0f} % | {v['preemptions']:.0f} | "
              f"{v['replica_requests']} | {v['failed']} |")
s, p = res["shared"], res["plain"]
g = res["goals"]
print(f"\nGoals: shared prefixes, cache-aware / round-robin tokens/s {s['tokens_per_s_ratio']:.2f}x "
      f"(>= 2x: {'met' if g['tokens_per_s_2x'] else 'NOT met'}), TTFT p90 {s['ttft_p90_improvement']:.1f}x better "
      f"(>= 5x: {'met' if g['ttft_p90_5x'] else 'NOT met'}); no shared prefix, cache-aware / least-outstanding "
      f"tokens/s {p['tokens_per_s_ratio']:.3f} (>= 0.97: {'met' if g['plain_within_3pct'] else 'NOT met'}).\n")
PY
}

# ------------------------------------------------------------- failover

failover() {
    ensure_model
    local pids=() backends=() i n=3
    for i in $(seq $n); do
        start_serve "fo-r$i" -m "$model" -t "$threads" --kv-mem $((256 << 20))
        pids+=("$serve_pid")
        backends+=(--backend "$serve_url")
    done
    start_route fo-route $n --policy round-robin -m "$model" "${backends[@]}"
    local victim_url
    victim_url=$(grep -o 'http://127.0.0.1:[0-9]*' "$tmp/fo-r2.log" | head -1)
    # the controller starts the load, kills replica 2 once each replica has
    # streams running, polls the router every 5 ms until it is ejected
    python3 - "$HERD" "$route_url" "${pids[1]}" "${victim_url#http://}" "$tmp" "$tmp/failover.json" \
        "$tmp/fo-route.log" >>"$tmp/summary.md" <<'PY'
import datetime, http.client, json, os, re, signal, subprocess, sys, time
herd, url, victim_pid, victim, tmp, out, log = sys.argv[1:8]
host, port = url[len("http://"):].split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=5)
def replicas():
    conn.request("GET", "/router/replicas")
    return {x["replica"]: x for x in json.loads(conn.getresponse().read())["replicas"]}
t_launch = time.monotonic()
lt = subprocess.Popen([herd, "loadtest", "--url", url, "-c", "12", "-n", "24", "--prompt-tokens", "64",
                       "--max-tokens", "256", "--json", f"{tmp}/failover-lt.json"], stdout=subprocess.DEVNULL)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:  # every replica streaming, for a second
    if all(x["in_flight"] >= 2 for x in replicas().values()):
        break
    time.sleep(0.05)
time.sleep(1.0)
in_flight = replicas()[victim]["in_flight"]
t_kill_wall = time.time()
t_kill = time.monotonic()
os.kill(int(victim_pid), signal.SIGKILL)
t_eject, polls = None, 0
while time.monotonic() - t_kill < 30:
    polls += 1
    if replicas()[victim]["health"] != "up":
        t_eject = time.monotonic()
        break
    time.sleep(0.005)
rc = lt.wait(timeout=600)
ltres = json.load(open(f"{tmp}/failover-lt.json"))
conn.request("GET", "/metrics")
metrics = conn.getresponse().read().decode()
resumes = {m.group(1): int(float(m.group(2))) for m in re.finditer(r'herd_router_resumes_total\{outcome="(\w+)"\} (\S+)', metrics)}
# the router's own log line, to the millisecond (wall clock)
log_ms = None
for l in open(log):
    if "ejected" in l and victim in l:
        ts = datetime.datetime.strptime(l.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
        log_ms = (ts.timestamp() - t_kill_wall) * 1e3
        break
# streams live across the kill (loadtest's clock starts within a few ms of t_launch)
k = t_kill - t_launch
per = ltres.pop("per_request")
live = [p for p in per if p["start_s"] < k < p["start_s"] + p["e2e_ms"] / 1e3]
later = [p for p in per if p["start_s"] > k + 1]
res = {"replicas": 3, "victim": victim, "victim_in_flight_at_kill": in_flight,
       "kill_to_ejection_ms": (t_eject - t_kill) * 1e3 if t_eject else None, "polls": polls,
       "kill_to_ejection_log_ms": log_ms, "resumes": resumes, "loadtest_rc": rc, "loadtest": ltres,
       "streams_live_at_kill": len(live),
       "longest_stall_live_ms": max((p["max_gap_ms"] for p in live), default=None),
       "live_max_gaps_ms": sorted((p["max_gap_ms"] for p in live), reverse=True),
       "longest_gap_after_ms": max((p["max_gap_ms"] for p in later), default=None),
       "failed": ltres["failed"]}
json.dump(res, open(out, "w"), indent=1)
print("### Failover (3 replicas, round-robin, 12 streaming clients, 24 requests of 256 tokens, kill -9 of one)\n")
print("| measure | value |\n|---|---|")
ej = f"{res['kill_to_ejection_ms']:.1f} ms" if t_eject else "not ejected within 30 s"
print(f"| kill to ejection (GET /router/replicas every 5 ms) | {ej} |")
print(f"| kill to the router's 'ejected' log line | {f'{log_ms:.0f} ms' if log_ms is not None else 'none'} |")
print(f"| streams on the killed replica / live across the kill | {in_flight} / {len(live)} |")
print(f"| resumes (router) | {resumes} |")
print(f"| longest gap between two chunks, streams live across the kill | {res['longest_stall_live_ms'] or 0:.0f} ms |")
print(f"| their gaps (ms, longest first) | {' '.join(f'{g:.0f}' for g in res['live_max_gaps_ms'])} |")
print(f"| longest gap, streams started 1 s after the kill (no fault) | {res['longest_gap_after_ms'] or 0:.0f} ms |")
print(f"| ITL median / p99 over the run | {ltres['itl_ms']['median']:.1f} / {ltres['itl_ms']['p99']:.1f} ms |")
print(f"| failed requests | {res['failed']} of {ltres['requests']} |\n")
PY
    stop "$route_pid" "${pids[@]}"
}

case $part in
overhead) overhead ;;
prefix) prefix ;;
failover) failover ;;
all) overhead; prefix; failover ;;
esac
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
python3 - "$tmp" "$out.json" "$commit" "$part" <<'PY'
import json, platform, sys
tmp, out, commit, part = sys.argv[1:5]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
res = {"commit": commit, "part": part, "cpu": cpu}
for p in ("overhead", "prefix", "failover"):
    d = json.load(open(f"{tmp}/{p}.json"))
    if d:
        res[p] = d
json.dump(res, open(out, "w"), indent=1)
PY
{
    echo "# bench/route.sh $part, $stamp (commit $commit, $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
    echo
    cat "$tmp/summary.md"
} >"$out.md"
cat "$out.md"
echo "wrote $out.json and $out.md"

#!/usr/bin/env bash
# Slow clients at scale (RELIABILITY B1): `herd serve` on the default model
# answers normal traffic (wrk posting small completions) while slowhttptest
# holds 500 connections that trickle their headers (-H), then their bodies
# (-B). Reports wrk's p50 / p99 latency without and with each attack, the
# server's open file descriptors at their highest, the 4xx answers it gave
# (408 for the slow clients) and whether it still answers afterwards.
# Writes bench/results/slowloris-<UTC date>.json. Target: p99 under attack
# within 2x the baseline, fds bounded by --max-connections, server up.
# Needs slowhttptest and wrk (Debian packages; installed here if missing).
# Usage: bench/slowloris.sh [--connections N] [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
HERD=build/bin/herd
[ -x "$HERD" ] || scripts/build.sh
conns=500 secs=20 port=18790
while [ $# -gt 0 ]; do
    case $1 in
    --connections) conns=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    *) echo "usage: $0 [--connections N] [--seconds S]" >&2; exit 2 ;;
    esac
done
for tool in slowhttptest wrk; do
    if ! command -v $tool >/dev/null; then
        echo "bench/slowloris.sh: installing $tool" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $tool >/dev/null
    fi
done
. bench/lib.sh
bench_serve $port -t 1 --header-timeout 10 --max-connections 1024 -q
cat >"$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}'
LUA
# the server's open descriptors, sampled every 0.2 s
(while kill -0 $server 2>/dev/null; do ls /proc/$server/fd 2>/dev/null | wc -l; sleep 0.2; done >"$tmp/fds") &
sampler=$!
bench_bg $sampler
run_wrk() { # NAME: wrk for $secs s; p50 and p99 in ms to $tmp/NAME
    wrk -t1 -c8 -d"${secs}s" --latency -s "$tmp/post.lua" "http://127.0.0.1:$port/v1/completions" >"$tmp/$1.txt"
    python3 - "$tmp/$1.txt" >"$tmp/$1" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
lat = {m.group(1): ms(m.group(2), m.group(3)) for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", t, re.M)}
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(lat["50"], lat["99"], rps, int(errs.group(1)) if errs else 0)
PY
}
attack() { # NAME FLAG: slowhttptest with FLAG (-H or -B) while wrk runs
    slowhttptest $2 -c "$conns" -i 10 -r 200 -l $((secs + 15)) -s 8192 -t POST -x 24 -p 3 \
        -u "http://127.0.0.1:$port/v1/completions" >"$tmp/$1.slow.txt" 2>&1 &
    local slow=$!
    sleep 5 # let the connections open
    run_wrk "$1"
    kill $slow 2>/dev/null || true
    wait $slow 2>/dev/null || true
}
run_wrk baseline
attack headers -H
attack body -B
up=0
curl -sf "http://127.0.0.1:$port/health" >/dev/null && up=1
fds_max=$(sort -n "$tmp/fds" | tail -1)
resp_4xx=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^herd_http_responses_total\{code="4xx"\}/ {print $2}')
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=bench/results/slowloris-$stamp.json
python3 - "$tmp" "$out" "$conns" "$secs" "$fds_max" "${resp_4xx:-0}" "$up" <<'PY'
import json, sys
tmp, out, conns, secs, fds, r4, up = sys.argv[1:]
rows = {}
for name in ("baseline", "headers", "body"):
    p50, p99, rps, errs = open(f"{tmp}/{name}").read().split()
    rows[name] = {"p50_ms": float(p50), "p99_ms": float(p99), "requests_per_s": float(rps), "non_2xx": int(errs)}
res = {"slow_connections": int(conns), "seconds": int(secs), "wrk": rows, "max_open_fds": int(fds),
       "responses_4xx": float(r4), "server_up_after": up == "1",
       "p99_ratio_headers": rows["headers"]["p99_ms"] / rows["baseline"]["p99_ms"],
       "p99_ratio_body": rows["body"]["p99_ms"] / rows["baseline"]["p99_ms"]}
json.dump(res, open(out, "w"), indent=1)
print("| traffic | p50 ms | p99 ms | req/s | non-2xx |")
print("|---|---|---|---|---|")
for name, r in rows.items():
    label = name if name == "baseline" else f"with {conns} slow {name}"
    print(f"| {label} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['requests_per_s']:.0f} | {r['non_2xx']} |")
print(f"| p99 ratio (target <= 2) | headers {res['p99_ratio_headers']:.2f}x, body {res['p99_ratio_body']:.2f}x |")
print(f"| server fds at most / 4xx answers / up after | {fds} / {float(r4):.0f} / {'yes' if up == '1' else 'NO'} |")
PY
echo "wrote $out"

#!/usr/bin/env bash
# Serving benchmark (issue: herd serve). On the smollm-135m Q8_0 synth model
# (herd synth, cached in $HERD_BENCH_MODELS, default /tmp/herd-bench-models):
#   1. the single-stream generation rate of `herd bench` (tg128), the
#      baseline batching must beat, before and after the load;
#   2. `herd serve` loaded by `herd loadtest` with 16 concurrent streaming
#      clients, 128 prompt and 128 output tokens each.
# Prints a table and writes bench/results/serve-<UTC date>.json with the
# throughput ratio (target: >= 4x) and the TTFT / ITL percentiles.
# --llama-server PATH: also loads that llama-server binary (built by you from
# llama.cpp, outside this repository) on the same file, the same way (16
# slots of 512 tokens, the same threads), and records it beside herd.
# Usage: bench/serve.sh [--threads N] [--requests N] [--shape S] [--type T] [--llama-server PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
HERD=build/bin/herd
[ -x "$HERD" ] || scripts/build.sh
threads=2 requests=96 shape=smollm-135m type=Q8_0 port=18777 llama=""
while [ $# -gt 0 ]; do
    case $1 in
    --threads) threads=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --shape) shape=$2; shift 2 ;;
    --type) type=$2; shift 2 ;;
    --llama-server) llama=$2; shift 2 ;;
    *) echo "usage: $0 [--threads N] [--requests N] [--shape S] [--type T] [--llama-server PATH]" >&2; exit 2 ;;
    esac
done
[ -z "$llama" ] || [ -x "$llama" ] || { echo "$llama: not an executable" >&2; exit 2; }
models=${HERD_BENCH_MODELS:-/tmp/herd-bench-models}
mkdir -p "$models" bench/results
f=$models/$shape-$type.gguf
[ -f "$f" ] || "$HERD" synth --shape "$shape" --type "$type" -o "$f" 2>/dev/null
. bench/lib.sh
# the single-stream rate moves by tens of percent on a shared machine: taken
# before and after the load, and the ratio uses their mean
single_rate() {
    "$HERD" bench -m "$f" -p 0 -n 128 -r 3 -t "$threads" --json >"$tmp/bench.json"
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print([r for r in d['results'] if r['test'] == 'tg128'][0]['tokens_per_s'])" "$tmp/bench.json"
}
single_before=$(single_rate)
bench_serve $port -m "$f" -t "$threads" --max-seqs 16 --batch-tokens 512 -q
"$HERD" loadtest --url "http://127.0.0.1:$port" -c 16 -n "$requests" --prompt-tokens 128 --max-tokens 128 \
    --json "$tmp/load.json" --svg "$tmp/load.svg" | tee "$tmp/load.md"
kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true
echo '{}' >"$tmp/llama.json"
if [ -n "$llama" ]; then
    lport=$((port + 1))
    "$llama" -m "$f" -t "$threads" -np 16 -c 8192 --host 127.0.0.1 --port "$lport" >"$tmp/llama.log" 2>&1 &
    lpid=$!
    bench_bg $lpid
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$lport/health" >/dev/null 2>&1 && break; sleep 0.1; done
    "$HERD" loadtest --url "http://127.0.0.1:$lport" -c 16 -n "$requests" --prompt-tokens 128 --max-tokens 128 \
        --json "$tmp/llama.json" | tee "$tmp/llama.md"
    kill "$lpid" 2>/dev/null || true
    wait "$lpid" 2>/dev/null || true
fi
single_after=$(single_rate)
single=$(python3 -c "import sys; print((float(sys.argv[1]) + float(sys.argv[2])) / 2)" "$single_before" "$single_after")
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=bench/results/serve-$stamp.json
cp "$tmp/load.svg" "bench/results/serve-$stamp.svg"
python3 - "$tmp/load.json" "$single" "$out" "$shape" "$type" "$threads" "$single_before" "$single_after" \
    "$tmp/llama.json" <<'PY'
import json, sys
load = json.load(open(sys.argv[1]))
llama = json.load(open(sys.argv[9]))
single = float(sys.argv[2])
res = {"model": f"{sys.argv[4]} {sys.argv[5]} (herd synth)", "threads": int(sys.argv[6]),
       "single_stream_tokens_per_s": single,
       "single_stream_before_after": [float(sys.argv[7]), float(sys.argv[8])], "loadtest": load,
       "ratio_vs_single_stream": load["output_tokens_per_s"] / single}
if llama:
    res["llama_server_loadtest"] = llama
json.dump(res, open(sys.argv[3], "w"), indent=1)
print(f"| single stream (herd bench tg128, mean of before / after) | {single:.1f} tokens/s "
      f"({float(sys.argv[7]):.1f} / {float(sys.argv[8]):.1f}) |")
print(f"| 16 clients through herd serve | {load['output_tokens_per_s']:.1f} tokens/s |")
print(f"| ratio | {res['ratio_vs_single_stream']:.2f}x (target >= 4x) |")
print(f"| TTFT p99 / ITL p99 | {load['ttft_ms']['p99']:.1f} ms / {load['itl_ms']['p99']:.1f} ms |")
if llama:
    print(f"| 16 clients through llama-server | {llama['output_tokens_per_s']:.1f} tokens/s "
          f"(herd / llama-server {load['output_tokens_per_s'] / llama['output_tokens_per_s']:.2f}x), "
          f"TTFT p99 {llama['ttft_ms']['p99']:.1f} ms, ITL p99 {llama['itl_ms']['p99']:.1f} ms |")
PY
echo "wrote $out"

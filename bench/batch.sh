#!/usr/bin/env bash
# Batch jobs beside interactive traffic (issue: batch jobs). On a synth
# model (herd synth, cached in $HERD_BENCH_MODELS, default
# /tmp/herd-bench-models; smollm-135m Q8_0 unless --shape/--type), one
# `herd serve --data-dir` answers an interactive client's streamed chat
# requests with no batch, with a 4,000-line /v1/batches job running at
# background priority, and again with none (bench/batch_ttft.py). Prints a
# table and writes bench/results/batch-<UTC date>.json: TTFT percentiles per
# phase, the ratio of p99 with the batch to p99 without (target <= 1.2),
# and the batch's lines/s alone and beside the interactive client.
# --background-tokens N is herd serve's (0: a background-only step may take
# all of --batch-tokens), to measure what the short steps buy.
# Usage: bench/batch.sh [--threads N] [--requests N] [--shape S] [--type T] [--background-tokens N]
set -euo pipefail
cd "$(dirname "$0")/.."
HERD=build/bin/herd
[ -x "$HERD" ] || scripts/build.sh
threads=2 requests=60 shape=smollm-135m type=Q8_0 bg=64
while [ $# -gt 0 ]; do
    case $1 in
    --threads) threads=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --shape) shape=$2; shift 2 ;;
    --type) type=$2; shift 2 ;;
    --background-tokens) bg=$2; shift 2 ;;
    *) echo "usage: $0 [--threads N] [--requests N] [--shape S] [--type T] [--background-tokens N]" >&2; exit 2 ;;
    esac
done
models=${HERD_BENCH_MODELS:-/tmp/herd-bench-models}
mkdir -p "$models" bench/results
f=$models/$shape-$type.gguf
[ -f "$f" ] || "$HERD" synth --shape "$shape" --type "$type" -o "$f" 2>/dev/null
out=bench/results/batch-$(date -u +%Y%m%dT%H%M%SZ).json
python3 bench/batch_ttft.py "$HERD" "$f" "$out" --threads "$threads" --requests "$requests" --background-tokens "$bg"
echo "wrote $out"

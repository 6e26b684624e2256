#!/usr/bin/env bash
# Engine benchmark: synthesizes random-weight models of the reference shapes
# (herd synth, cached in $HERD_BENCH_MODELS, default /tmp/herd-bench-models),
# runs `herd bench` on each, prints a table and writes
# bench/results/engine-<UTC date>.json.
#
#   bench/engine.sh [--reps R] [--threads N] [--quick] [--rows "SHAPE TYPE,..."]
#                   [--llama-bench PATH] [--llama-quantize PATH] [--llama-batched-bench PATH]
#
# --quick: smollm-135m only, fewer tokens (a smoke run, not a result).
# --rows: the models to run, e.g. "tinyllama-1.1b Q4_K_M,smollm-135m Q6_K".
# A type is one `herd synth --type` writes, or a llama-quantize mix (Q4_K_M,
# Q5_K_M, Q6_K, ...) made from an F16 synth file with --llama-quantize PATH
# (a llama-quantize binary built by you from llama.cpp, outside this
# repository); such rows are named "TYPE/lq".
# --llama-bench PATH: also run that llama-bench binary on the same files
# with the same threads, -p 512 -n 128 -mmp 0 (llama.cpp reads faster from
# loaded memory than from its mmap on these machines: the peer at its
# best), and put its numbers beside herd's.
# --llama-batched-bench PATH: also time llama.cpp's 16-sequence decode the way
# herd bench's tgN-b16 does (16 prompts of 128 tokens, then N steps of one
# token each; --no-mmap), for the tgN-b16 row.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=3 threads=$(nproc) quick=0 llama="" lquant="" lbatched="" rows_arg=""
while [ $# -gt 0 ]; do
    case $1 in
        --reps) reps=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --quick) quick=1; shift ;;
        --llama-bench) llama=$2; shift 2 ;;
        --llama-quantize) lquant=$2; shift 2 ;;
        --llama-batched-bench) lbatched=$2; shift 2 ;;
        --rows) rows_arg=$2; shift 2 ;;
        *) echo "usage: bench/engine.sh [--reps R] [--threads N] [--quick] [--rows \"SHAPE TYPE,...\"] [--llama-bench PATH] [--llama-quantize PATH] [--llama-batched-bench PATH]" >&2; exit 2 ;;
    esac
done
HERD=build/bin/herd
[ -x "$HERD" ] || scripts/build.sh
models=${HERD_BENCH_MODELS:-/tmp/herd-bench-models}
mkdir -p "$models" bench/results
rows=("smollm-135m Q8_0" "smollm-135m Q4_0" "tinyllama-1.1b Q8_0" "tinyllama-1.1b Q4_0")
p=512 n=128
if [ "$quick" = 1 ]; then rows=("smollm-135m Q8_0" "smollm-135m Q4_0"); p=128 n=32; fi
if [ -n "$rows_arg" ]; then IFS=, read -r -a rows <<<"$rows_arg"; fi
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=bench/results/engine-$stamp.json
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
i=0
for row in "${rows[@]}"; do
    set -- $row
    f=$models/$1-${2//\//-}.gguf
    if [ ! -f "$f" ]; then
        if [ "${2%/lq}" != "$2" ]; then
            [ -n "$lquant" ] || { echo "row '$row' needs --llama-quantize PATH" >&2; exit 2; }
            f16=$models/$1-F16.gguf
            [ -f "$f16" ] || "$HERD" synth --shape "$1" --type F16 -o "$f16" 2>/dev/null
            "$lquant" "$f16" "$f" "${2%/lq}" >/dev/null 2>&1
        else
            "$HERD" synth --shape "$1" --type "$2" -o "$f" 2>/dev/null
        fi
    fi
    "$HERD" bench -m "$f" -p $p -n $n -r "$reps" -t "$threads" --batch 16 --json >"$tmp/herd-$i.json"
    if [ -n "$llama" ]; then
        "$llama" -m "$f" -p $p -n $n -r "$reps" -t "$threads" -mmp 0 -o json >"$tmp/llama-$i.json" 2>/dev/null || echo '[]' >"$tmp/llama-$i.json"
    else
        echo '[]' >"$tmp/llama-$i.json"
    fi
    if [ -n "$lbatched" ]; then
        "$lbatched" -m "$f" -c 4096 -b 2048 -ub 512 -npp 128 -ntg $n -npl 16 -t "$threads" --no-mmap \
            --output-format jsonl 2>/dev/null | grep '^{"n_kv_max"' >"$tmp/batched-$i.json" || true
    fi
    [ -f "$tmp/batched-$i.json" ] || : >"$tmp/batched-$i.json"
    echo "$1 $2" >"$tmp/name-$i"
    i=$((i + 1))
done
python3 - "$tmp" "$i" "$out" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'PY'
import json, sys, os
tmp, n, out, commit = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
runs = []
print("| shape | type | MiB | test | herd t/s | of ceiling | llama-bench t/s | herd / llama |")
print("|---|---|---|---|---|---|---|---|")
for i in range(n):
    shape, wtype = open(os.path.join(tmp, "name-%d" % i)).read().split()
    h = json.load(open(os.path.join(tmp, "herd-%d.json" % i)))
    l = json.load(open(os.path.join(tmp, "llama-%d.json" % i)))
    peer = {}
    for line in open(os.path.join(tmp, "batched-%d.json" % i)):
        r = json.loads(line)
        peer["tg%d-b%d" % (r["tg"], r["pl"])] = r["speed_tg"]
        l = l + [{"batched_bench": r}]
    for r in l:
        if "batched_bench" in r: continue
        if r.get("n_prompt", 0) and not r.get("n_gen", 0): peer["pp%d" % r["n_prompt"]] = r["avg_ts"]
        if r.get("n_gen", 0) and not r.get("n_prompt", 0): peer["tg%d" % r["n_gen"]] = r["avg_ts"]
    for r in h["results"]:
        p = peer.get(r["test"])
        print("| %s | %s | %.0f | %s | %.1f | %.0f %% | %s | %s |" % (shape, wtype, h["model_bytes"] / 2**20, r["test"], r["tokens_per_s"],
              100 * r["fraction_of_ceiling"], "%.1f" % p if p else "-", "%.2f" % (r["tokens_per_s"] / p) if p else "-"))
    runs.append({"shape": shape, "type": wtype, "herd": h, "llama_bench": l})
c = runs[0]["herd"]["ceilings"] if runs else {}
print("\nceilings (last run): read %.1f GB/s, int8 %.2f TOPS, f32 %.2f TFLOPS" % (c.get("read_gbps", 0), c.get("int8_ops_per_s", 0) / 1e12, c.get("f32_flops_per_s", 0) / 1e12))
json.dump({"commit": commit, "runs": runs}, open(out, "w"), indent=1)
print("wrote", out)
PY

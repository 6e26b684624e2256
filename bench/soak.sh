#!/usr/bin/env bash
# Soak (RELIABILITY D6): `herd serve` under steady load at 80 % of its
# measured capacity for --minutes (default 30), in one-minute slices of
# `herd loadtest --rate`. Samples the server's resident memory and open file
# descriptors every 5 s, and at the quiet moment after each slice. Reports
# each slice's end-to-end p99, the drift of the p99 (median of the last three
# slices against the median of slices 2-4, the first being warm-up; target
# < 20 %), and RSS / fds after the first and the last slice (target: flat).
# Bounded: it stops by itself.
# Writes bench/results/soak-<UTC date>.json.
# Usage: bench/soak.sh [--minutes M] [-m MODEL] [--threads N]
set -euo pipefail
cd "$(dirname "$0")/.."
HERD=build/bin/herd
[ -x "$HERD" ] || scripts/build.sh
minutes=30 model="" threads=2 port=18791
while [ $# -gt 0 ]; do
    case $1 in
    --minutes) minutes=$2; shift 2 ;;
    -m) model=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "usage: $0 [--minutes M] [-m MODEL] [--threads N]" >&2; exit 2 ;;
    esac
done
. bench/lib.sh
bench_serve $port ${model:+-m "$model"} -t "$threads" -q
url="http://127.0.0.1:$port"
# capacity: 16 clients back to back, the median of three rounds (one round
# at a quiet moment of a shared machine overstates it)
for r in 1 2 3; do
    "$HERD" loadtest --url "$url" -c 16 -n 300 --prompt-tokens 32 --max-tokens 32 --json "$tmp/cap-$r.json" >/dev/null
done
capacity=$(python3 -c "import json,statistics,sys; print(statistics.median(json.load(open(f))['requests_per_s'] for f in sys.argv[1:]))" "$tmp"/cap-*.json)
rate=$(python3 -c "print(round(0.8 * $capacity, 2))")
per_slice=$(python3 -c "print(max(1, int($rate * 60)))")
echo "capacity $capacity req/s; soaking at $rate req/s for $minutes min" >&2
(while kill -0 $server 2>/dev/null; do
    echo "$(date +%s) $(awk '/VmRSS/ {print $2}' /proc/$server/status) $(ls /proc/$server/fd | wc -l)"
    sleep 5
done >"$tmp/samples") &
sampler=$!
bench_bg $sampler
for i in $(seq "$minutes"); do
    "$HERD" loadtest --url "$url" --rate "$rate" -n "$per_slice" --prompt-tokens 32 --max-tokens 32 --seed "$i" \
        --json "$tmp/slice-$i.json" >/dev/null || true
    sleep 1 # the slice's connections close
    echo "$(awk '/VmRSS/ {print $2}' /proc/$server/status) $(ls /proc/$server/fd | wc -l)" >>"$tmp/after-slice"
done
kill $sampler 2>/dev/null || true
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=bench/results/soak-$stamp.json
python3 - "$tmp" "$out" "$minutes" "$rate" <<'PY'
import json, sys
tmp, out, minutes, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
slices = [json.load(open(f"{tmp}/slice-{i}.json")) for i in range(1, minutes + 1)]
samples = [tuple(map(int, l.split())) for l in open(f"{tmp}/samples") if len(l.split()) == 3]
after = [tuple(map(int, l.split())) for l in open(f"{tmp}/after-slice") if len(l.split()) == 2]
p99 = [s["e2e_ms"]["p99"] for s in slices]
failed = sum(s["failed"] for s in slices)
# drift: the median p99 of the last three minutes against that of minutes
# 2-4 (the first is warm-up); single minutes swing with the machine
import statistics
early = p99[1:4] if minutes >= 7 else p99[:1]  # shorter runs: first against last minute
late = p99[-3:] if minutes >= 7 else p99[-1:]
res = {"minutes": minutes, "rate_per_s": rate, "failed": failed,
       "e2e_p99_ms_per_minute": p99,
       "p99_early_late_ms": [statistics.median(early), statistics.median(late)],
       "p99_drift": statistics.median(late) / statistics.median(early) - 1,
       "rss_kib_after_first_last_slice": [after[0][0], after[-1][0]],
       "fds_after_first_last_slice": [after[0][1], after[-1][1]],
       "rss_kib_max": max(s[1] for s in samples), "fds_max": max(s[2] for s in samples)}
json.dump(res, open(out, "w"), indent=1)
print(f"| minutes at {rate} req/s (80 % of capacity) | {minutes} |")
print(f"| failed requests | {failed} |")
print(f"| e2e p99 per minute | {' '.join(f'{x:.0f}' for x in p99)} ms |")
print(f"| e2e p99 minutes 2-4 / last 3 (medians) | {res['p99_early_late_ms'][0]:.1f} / {res['p99_early_late_ms'][1]:.1f} ms "
      f"(drift {100 * res['p99_drift']:+.1f} %, target < 20 %) |")
print(f"| RSS after the first / last slice, max | {after[0][0] / 1024:.1f} / {after[-1][0] / 1024:.1f} / {res['rss_kib_max'] / 1024:.1f} MiB |")
print(f"| open fds after the first / last slice, max | {after[0][1]} / {after[-1][1]} / {res['fds_max']} |")
PY
echo "wrote $out"

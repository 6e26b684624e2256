#!/usr/bin/env bash
# Chat-template rendering speed: every template of tests/data/chat-templates.json
# (33 real templates) rendering its largest case (the tool-calling
# conversation) 2000 times on one core; the median per render. The server
# renders once per chat request, so this is per-request overhead. Prints a
# table and writes bench/results/chat-template-<UTC date>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
HERD=build/bin/herd
[ -x "$HERD" ] || scripts/build.sh
mkdir -p bench/results
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import json, os, sys
out = sys.argv[1]
d = json.load(open("tests/data/chat-templates.json"))
for i, t in enumerate(d["templates"]):
    c = max((c for c in t["cases"] if "expected" in c), key=lambda c: len(c["expected"]), default=None)
    if c is None:
        continue
    base = os.path.join(out, "%02d" % i)
    open(base + ".jinja", "w").write(t["template"])
    json.dump(c["messages"], open(base + ".messages.json", "w"))
    args = ["--bos", c["bos_token"], "--eos", c["eos_token"]]
    if c["tools"] is not None:
        json.dump(c["tools"], open(base + ".tools.json", "w"))
        args += ["--tools", base + ".tools.json"]
    if c["add_generation_prompt"]:
        args.append("--add-generation-prompt")
    open(base + ".args", "w").write("\n".join(args) + "\n")
    open(base + ".name", "w").write(t["name"])
PY
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=bench/results/chat-template-$stamp.json
echo "| template | template bytes | output bytes | median us |"
echo "|---|---|---|---|"
json="["
all=()
for tf in "$work"/*.jinja; do
    base=${tf%.jinja}
    mapfile -t extra <"$base.args"
    line=$(taskset -c 0 "$HERD" chat-template --template "$tf" --messages "$base.messages.json" "${extra[@]}" \
        --now 2026-07-26 --repeat 2000 2>&1 >/dev/null)
    read -r obytes us <<<"$(echo "$line" | sed -E 's/.*: ([0-9]+) bytes rendered, median of [0-9]+: ([0-9.]+) us.*/\1 \2/')"
    name=$(cat "$base.name")
    echo "| $name | $(stat -c %s "$tf") | $obytes | $us |"
    json="$json{\"template\":\"$name\",\"output_bytes\":$obytes,\"median_us\":$us},"
    all+=("$us")
done
med=$(printf '%s\n' "${all[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
max=$(printf '%s\n' "${all[@]}" | sort -g | tail -1)
echo "median over templates: $med us, slowest: $max us"
echo "${json%,}]" >"$out"
echo "wrote $out"

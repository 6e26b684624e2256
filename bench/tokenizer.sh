#!/usr/bin/env bash
# Tokenizer speed: 1 MiB of English prose (the licence texts every Debian
# system has in /usr/share/common-licenses, concatenated and repeated),
# tokenized on one core with the SentencePiece (Llama 2) and byte-level BPE
# (GPT-2) vocabularies; medians of 7 runs. Prints a table and writes
# bench/results/tokenizer-<UTC date>.json. The target is < 100 ms per MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
HERD=build/bin/herd
[ -x "$HERD" ] || scripts/build.sh
mkdir -p bench/results
prose=$(mktemp)
trap 'rm -f "$prose"' EXIT
while [ "$(stat -c %s "$prose")" -lt 1048576 ]; do
    cat /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 /usr/share/common-licenses/GFDL-1.3 >>"$prose"
done
truncate -s 1048576 "$prose" # the licence texts are ASCII: no character is cut
vocabs=("spm tests/data/ggml-vocab-llama-spm.gguf")
[ -f ../shared/fixtures/tokenizer/ggml-vocab-gpt-2.gguf ] && vocabs+=("bpe-gpt2 ../shared/fixtures/tokenizer/ggml-vocab-gpt-2.gguf")
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=bench/results/tokenizer-$stamp.json
echo "| vocabulary | bytes | tokens | median ms | MB/s |"
echo "|---|---|---|---|---|"
json="["
for row in "${vocabs[@]}"; do
    set -- $row
    line=$(taskset -c 0 "$HERD" tokenize -m "$2" -f "$prose" --repeat 7 -q 2>&1 >/dev/null)
    bytes=$(echo "$line" | sed -E 's/.*: ([0-9]+) bytes -> ([0-9]+) tokens, median of 7: ([0-9.]+) ms \(([0-9.]+) MB\/s\).*/\1 \2 \3 \4/')
    read -r b t ms mbs <<<"$bytes"
    echo "| $1 | $b | $t | $ms | $mbs |"
    json="$json{\"vocab\":\"$1\",\"bytes\":$b,\"tokens\":$t,\"median_ms\":$ms,\"mb_per_s\":$mbs},"
done
echo "${json%,}]" >"$out"
echo "wrote $out"

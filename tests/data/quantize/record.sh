#!/usr/bin/env bash
# Records expected.txt from llama-quantize: for each case line
# "HASH INPUT TYPE [FLAGS]" the sha256 of what `llama-quantize FLAGS INPUT
# OUT TYPE` writes, or FAIL when it refuses. herd's flag names are
# translated (--output-type is llama's --output-tensor-type). Inputs are
# linked into a scratch folder and named relatively, because the
# --imatrix path is written into the output (quantize.imatrix.file).
#   tests/data/quantize/record.sh /path/to/llama-quantize
set -eu
LQ=$1
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
ln -s "$HERE/tiny-mix.gguf" "$HERE/tiny-mix.imatrix" "$HERE/stories260K.imatrix" "$W/"
ln -s "$ROOT/models/stories260K.gguf" "$W/"
cd "$W"
"$LQ" tiny-mix.gguf tiny-mix-q8_0.gguf Q8_0 1 >/dev/null 2>&1
out=$HERE/expected.txt.new
: >"$out"
while read -r _ input type flags; do
    lflags=${flags//--output-type/--output-tensor-type}
    rm -f out.gguf
    # shellcheck disable=SC2086
    if "$LQ" $lflags "$input" out.gguf "$type" 1 >log 2>&1; then
        h=$(sha256sum out.gguf | cut -d' ' -f1)
    else
        h=FAIL
    fi
    echo "$h $input $type${flags:+ $flags}" >>"$out"
done <"$HERE/expected.txt"
mv "$out" "$HERE/expected.txt"
echo "recorded $(wc -l <"$HERE/expected.txt") cases with $LQ"

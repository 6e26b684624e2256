#!/usr/bin/env bash
# `herd quantize` against llama-quantize: every case of
# tests/data/quantize/expected.txt (recorded from llama.cpp c392e50 by
# record.sh there) must come out with the same sha256, or fail where
# llama-quantize fails, leaving no file. Then the errors a user can cause:
# unknown type, unreadable or truncated input, bad imatrix, a full disk.
#   test_quantize.sh HERD SOURCE_DIR
set -u
HERD=$1
SRC=$2
DATA=$SRC/tests/data/quantize
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
    fail=$((fail + 1))
    echo "FAIL: $*"
}

# Inputs by relative name: the --imatrix path is part of the output.
ln -s "$DATA/tiny-mix.gguf" "$DATA/tiny-mix.imatrix" "$DATA/stories260K.imatrix" "$TMP/"
ln -s "$SRC/models/stories260K.gguf" "$TMP/"
cd "$TMP" || exit 1
"$HERD" quantize tiny-mix.gguf tiny-mix-q8_0.gguf Q8_0 2>/dev/null || bad "making tiny-mix-q8_0.gguf"

# --- byte identity with llama-quantize --------------------------------------
while read -r want input type flags; do
    rm -f out.gguf
    # shellcheck disable=SC2086
    if "$HERD" quantize $flags -t 2 "$input" out.gguf "$type" >log 2>&1; then
        got=$(sha256sum out.gguf | cut -d' ' -f1)
    else
        got=FAIL
        [ ! -e out.gguf ] || bad "$input $type $flags: failed but left out.gguf"
        ls out.gguf.tmp-* >/dev/null 2>&1 && bad "$input $type $flags: left a temp file"
    fi
    if [ "$got" = "$want" ]; then ok; else
        bad "$input $type $flags: sha256 $got, llama-quantize $want"
        tail -3 log
    fi
done <"$DATA/expected.txt"

# --- errors ------------------------------------------------------------------
expect() { # code pattern cmd...: exit code and a message on stderr
    local code=$1 pat=$2
    shift 2
    "$@" >out 2>err
    local rc=$?
    if [ $rc -ne "$code" ]; then
        bad "exit $rc, want $code: $*"
        cat err
    elif ! grep -q -- "$pat" err; then
        bad "no '$pat' in the message of: $*"
        cat err
    else ok; fi
}
expect 2 "unknown type 'Q9_K'" "$HERD" quantize tiny-mix.gguf x.gguf Q9_K
expect 2 "no quantizer" "$HERD" quantize tiny-mix.gguf x.gguf IQ2_XXS
expect 2 "usage" "$HERD" quantize tiny-mix.gguf x.gguf
expect 2 "unknown type 'q7'" "$HERD" quantize --output-type q7 tiny-mix.gguf x.gguf Q4_K_M
expect 2 "same file" "$HERD" quantize tiny-mix.gguf tiny-mix.gguf Q8_0
expect 1 "missing.gguf" "$HERD" quantize missing.gguf x.gguf Q8_0
expect 1 "needs an importance matrix" "$HERD" quantize tiny-mix.gguf x.gguf Q2_K_S
expect 1 "herd cannot write" "$HERD" quantize --output-type iq2_xxs tiny-mix.gguf x.gguf Q4_K_M
expect 1 "requantize" "$HERD" quantize tiny-mix-q8_0.gguf x.gguf Q4_K_M
head -c 200000 tiny-mix.gguf >cut.gguf
expect 1 "cut.gguf" "$HERD" quantize cut.gguf x.gguf Q4_K_M
head -c 30000 tiny-mix.imatrix >cut.imatrix
expect 1 "cut.imatrix" "$HERD" quantize --imatrix cut.imatrix tiny-mix.gguf x.gguf Q4_K_M
expect 1 "missing.imatrix" "$HERD" quantize --imatrix missing.imatrix tiny-mix.gguf x.gguf Q4_K_M
cp tiny-mix.gguf noread.gguf && chmod 000 noread.gguf
if [ "$(id -u)" != 0 ]; then expect 1 "noread.gguf" "$HERD" quantize noread.gguf x.gguf Q8_0; fi
# a full disk: the file size limit makes writes fail (EFBIG) once ~40 KB are out
(
    trap '' XFSZ
    ulimit -f 40
    exec "$HERD" quantize tiny-mix.gguf x.gguf Q8_0
) >out 2>err
rc=$?
if [ $rc -eq 1 ] && grep -q "write failed" err; then ok; else
    bad "full disk: exit $rc"
    cat err
fi
[ ! -e x.gguf ] && ! ls x.gguf.tmp-* >/dev/null 2>&1 && ok || bad "an error left x.gguf or a temp file"
# an existing file is replaced only by a complete one
echo keep >y.gguf
expect 1 "requantize" "$HERD" quantize tiny-mix-q8_0.gguf y.gguf Q4_K_M
[ "$(cat y.gguf)" = keep ] && ok || bad "a failed run changed the existing output"

echo "herd quantize: $pass passed, $fail failed"
[ $fail -eq 0 ]

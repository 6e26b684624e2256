#!/usr/bin/env bash
# Runs herd's tokenizer on every llama.cpp vocabulary test pair in a
# directory (ggml-vocab-NAME.gguf with its .gguf.inp and .gguf.out, as in
# llama.cpp's models/ folder) and prints a per-vocabulary pass/fail table.
# The GGUFs are llama.cpp's data and are not kept in this repository.
#   usage: scripts/llama_vocab_tests.sh [DIR]   (default $HERD_LLAMA_VOCAB_DIR)
# Exit status: 0 when every SentencePiece and BPE vocabulary matches, 1 when
# one does not, 77 when there is no directory. HERD_LLAMA_VOCAB_VERBOSE=1
# lists every failing case on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-${HERD_LLAMA_VOCAB_DIR:-}}
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
    echo "usage: $0 DIR (a folder of ggml-vocab-*.gguf with their .inp/.out files)" >&2
    exit 77
fi
bin=${HERD_BUILD_DIR:-build}/bin/test_llama_vocab
[ -x "$bin" ] || cmake --build "${HERD_BUILD_DIR:-build}" --target test_llama_vocab -j2 >&2
# the table is on stdout; cmocka's own lines go to stderr with the failures
"$bin" "$dir" 2> >(grep -v -e '^\[' >&2)

#!/usr/bin/env bash
# Every named shape is synthesized once (Q4_0, the smallest) and must inspect
# as runnable with the advertised dimensions. Slow: ~2.5 billion random draws.
set -eu
HERD=$1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
check() { # shape n_embd n_layer n_head n_head_kv n_ff
    "$HERD" synth --shape "$1" --type Q4_0 -o "$TMP/m.gguf"
    "$HERD" inspect --json "$TMP/m.gguf" >"$TMP/m.json"
    python3 - "$TMP/m.json" "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); h = d["hparams"]
want = dict(zip(["n_embd", "n_layer", "n_head", "n_head_kv", "n_ff"], map(int, sys.argv[3:8])))
got = {k: h[k] for k in want}
assert d["runnable"], d["runnable_error"]
assert got == want, (sys.argv[2], got, want)
print(sys.argv[2], "ok", d["n_params"], "parameters")
PY
    rm -f "$TMP/m.gguf"
}
check tiny 64 2 4 2 192
check tiny-256 256 2 4 2 768
check smollm-135m 576 30 9 3 1536
check tinyllama-1.1b 2048 22 32 4 5632
check llama-3.2-1b 2048 16 32 8 8192
echo "synth shapes: 5 passed, 0 failed"

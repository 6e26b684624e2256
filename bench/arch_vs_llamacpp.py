#!/usr/bin/env python3
"""herd against llama.cpp on the same small F32 synth file of each family
llama.cpp runs (its Feb 2025 snapshot predates qwen3, gemma3 and qwen3moe: those are
checked against tests/model/test_arch_variants.py's float64 reference).

For each shape: `herd synth` writes the F32 file, `herd eval` (f16 KV cache,
as llama.cpp's default) and a llama.cpp logits dumper evaluate the same ids
(longer than every sliding window) in one pass, and the table gives the
largest |logit difference| over all positions and the vocabulary, and the
positions whose top-1 token differs where the margin between the first two
is clear (more than twice the largest difference).

usage: arch_vs_llamacpp.py HERD LOGITS_DUMP [OUT_DIR]
phi3 takes the Phi-3 vocabulary from ../shared/fixtures/tokenizer (llama.cpp's phi3
loader looks its special tokens up by text).
LOGITS_DUMP is a program of your own built against llama.cpp's libllama:
`LOGITS_DUMP MODEL.gguf 1,2,3` prints {"n_vocab": V, "logits": [[V floats] per position]}.
Writes OUT_DIR/arch-vs-llamacpp-<time>.json (default bench/results)."""
import json
import os
import subprocess
import sys
import tempfile
import time

herd, dump = sys.argv[1], sys.argv[2]
out_dir = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# (shape, what it exercises)
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
phi3_vocab = os.path.join(repo, "..", "shared", "fixtures", "tokenizer", "ggml-vocab-phi-3.gguf")
shapes = [("tiny", "llama baseline"),
          ("mistral-tiny", "llama + sliding window 8 (llama.cpp ignores llama windows: 8 ids only)"),
          ("gemma2-tiny", "gemma2: softcaps 50/30, window 8 on even layers, 26 layers"),
          ("phi3-tiny", "phi3: fused qkv and gate/up, window 8"),
          ("mixtral-tiny", "llama with 8 experts, top 2, renormalised"),
          ("qwen2moe-tiny", "qwen2moe: 8 experts, top 2, shared expert with sigmoid gate")]
ids_long = [1] + [(i * 7919 + 13) % 31000 + 3 for i in range(47)]

tmp = tempfile.mkdtemp()
rows = []
for shape, what in shapes:
    path = os.path.join(tmp, shape + ".gguf")
    vocab = ["--vocab", phi3_vocab] if shape.startswith("phi3") else []
    subprocess.run([herd, "synth", "--shape", shape, "-o", path] + vocab, check=True, capture_output=True)
    ids = ids_long[:8] if shape == "mistral-tiny" else ids_long
    ids_arg = ",".join(map(str, ids))
    h = json.loads(subprocess.run([herd, "eval", "-m", path, "--ids", ids_arg, "--top", "2"], check=True,
                                  capture_output=True, text=True).stdout)
    ref = json.loads(subprocess.run([dump, path, ids_arg], check=True, capture_output=True, text=True).stdout)
    worst = 0.0
    for p in h["positions"]:
        for tok, logit in p["top"]:
            worst = max(worst, abs(logit - ref["logits"][p["pos"]][tok]))
    last = ref["logits"][len(ids) - 1]
    worst = max(worst, max(abs(a - b) for a, b in zip(h["last_logits"], last)))
    flips = 0
    for p in h["positions"]:
        (t1, l1), (t2, l2) = p["top"]
        r = ref["logits"][p["pos"]]
        if l1 - l2 > 2 * worst and max(range(len(r)), key=r.__getitem__) != t1:
            flips += 1
    rows.append({"shape": shape, "what": what, "tokens": len(ids), "max_abs_logit_diff": worst,
                 "top1_differs_with_clear_margin": flips})
    print("%-14s %3d tokens  max |herd - llama.cpp| %.2e  top-1 differences where the margin is clear: %d   (%s)"
          % (shape, len(ids), worst, flips, what))

os.makedirs(out_dir, exist_ok=True)
name = os.path.join(out_dir, "arch-vs-llamacpp-%s.json" % time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
with open(name, "w") as f:
    json.dump({"herd": herd, "llama_cpp_dump": dump, "kv_cache": "f16 both", "rows": rows}, f, indent=1)
print("wrote", name)

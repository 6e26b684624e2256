#!/usr/bin/env python3
"""`herd convert hf` on a trained model in Hugging Face's own layout
(../shared/fixtures/models/tinystories-656k, see its README):
  - greedy decoding from BOS on the converted GGUF gives exactly the ids of the
    float64 reference that runs the safetensors weights in Hugging Face's own
    RoPE convention (so the Q/K permutation is right);
  - the converted vocabulary tokenizes like Hugging Face's BPE (implemented
    below from tokenizer.json's merges, the way the tokenizers library applies
    them);
  - the command's usage errors, and a corrupt folder exits 1 leaving no file.

usage: test_convert_hf.py HERD_BINARY SHARED_DIR
Exits 77 (skipped) when ../shared/fixtures is absent."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

herd, shared = sys.argv[1], sys.argv[2]
model = os.path.join(shared, "fixtures", "models", "tinystories-656k")
if not os.path.exists(os.path.join(model, "model.safetensors")):
    print("note: %s is absent (no ../shared next to the checkout); skipping" % model)
    sys.exit(77)

failures = 0


def check(ok, what):
    global failures
    if not ok:
        failures += 1
        print("FAIL: " + what, file=sys.stderr)


def run(*args):
    return subprocess.run([herd] + list(args), capture_output=True, text=True, timeout=120)


def hf_bpe(tok, text):
    """tokenizers' BPE for this tokenizer.json: normalizer Prepend("▁") +
    Replace(" ", "▁"), no pre-tokenizer, merges by rank (leftmost first),
    byte fallback when every byte token exists, else <unk> (fused)."""
    vocab = tok["model"]["vocab"]
    rank = {}
    for i, m in enumerate(tok["model"]["merges"]):
        pair = tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
        rank.setdefault(pair, i)
    syms = list("\u2581" + text.replace(" ", "\u2581"))
    while True:
        best = None
        for i in range(len(syms) - 1):
            r = rank.get((syms[i], syms[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        syms[i:i + 2] = [syms[i] + syms[i + 1]]
    unk = vocab[tok["model"]["unk_token"]]
    ids = []
    for s in syms:
        if s in vocab:
            ids.append(vocab[s])
            continue
        names = ["<0x%02X>" % b for b in s.encode()]
        if all(n in vocab for n in names):
            ids += [vocab[n] for n in names]
        elif not ids or ids[-1] != unk:
            ids.append(unk)
    return ids


with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "ts.gguf")
    r = run("convert", "hf", model, "-o", out)
    check(r.returncode == 0, "convert exits 0: " + r.stderr)
    check("wrote " + out in r.stderr and "tied embeddings" in r.stderr and "vocabulary 2048 (llama" in r.stderr,
          "summary line: " + r.stderr)

    # greedy ids from BOS against the float64 Hugging Face reference
    want = json.load(open(os.path.join(model, "greedy-bos-80.ids.json")))
    r = run("run", "-m", out, "--prompt-ids", "1", "-n", str(len(want)), "--greedy", "--json")
    check(r.returncode == 0, "herd run: " + r.stderr)
    got = json.loads(r.stdout)["ids"] if r.returncode == 0 else []
    check(got == want, "greedy ids differ from the reference at position %d" %
          next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want))))

    # tokenization against Hugging Face's BPE on the same tokenizer.json
    tok = json.load(open(os.path.join(model, "tokenizer.json")))
    texts = ["Once upon a time, there was a little girl named Lily.",
             "She liked to play with her toy car in the park every day!",
             "Tom said, \"I don't want to go.\" Then he ran away... 123 4567",
             "  two  spaces and trailing ",
             "The big brown dog jumped over the lazy fox and they became friends forever.",
             "a"]
    # (not characters whose byte tokens this 2048-token vocabulary lacks:
    # Hugging Face gives one <unk> per character, herd's SPM one per byte)
    for t in texts:
        r = run("tokenize", "-m", out, t)
        ids = json.loads(r.stdout) if r.returncode == 0 else None
        check(ids == [1] + hf_bpe(tok, t), "tokenize %r: herd %s, Hugging Face %s" % (t, ids, [1] + hf_bpe(tok, t)))

    # other types convert and run
    for t in ("F16", "Q8_0"):
        q = os.path.join(tmp, "ts-%s.gguf" % t)
        r = run("convert", "hf", model, "-o", q, "--type", t)
        check(r.returncode == 0 and (" %s," % t.lower()) in r.stderr, "convert --type %s: %s" % (t, r.stderr))
        r = run("run", "-m", q, "--prompt-ids", "1", "-n", "8", "--greedy")
        check(r.returncode == 0, "run the %s conversion: %s" % (t, r.stderr))

    # usage errors (exit 2) and a corrupt folder (exit 1, no file)
    for args in (["convert", "hf", model], ["convert", "hf", "-o", out], ["convert", "hf", model, "x", "-o", out],
                 ["convert", "hf", model, "-o", out, "--type", "Q9"]):
        check(run(*args).returncode == 2, "usage error exits 2: %s" % " ".join(args))
    broken = os.path.join(tmp, "broken")
    shutil.copytree(model, broken)
    with open(os.path.join(broken, "model.safetensors"), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(model, "model.safetensors")) - 100)
    bad = os.path.join(tmp, "bad.gguf")
    r = run("convert", "hf", broken, "-o", bad)
    check(r.returncode == 1 and "model.safetensors" in r.stderr and "truncated" not in r.stdout,
          "corrupt weights exit 1 naming the file: %s" % r.stderr)
    check(not os.path.exists(bad) and not [f for f in os.listdir(tmp) if ".tmp-" in f], "no file left behind")
    r = run("convert", "hf", os.path.join(tmp, "nope"), "-o", bad)
    check(r.returncode == 1 and "nope" in r.stderr, "missing folder: %s" % r.stderr)

print("convert hf: %d failure(s)" % failures)
sys.exit(1 if failures else 0)

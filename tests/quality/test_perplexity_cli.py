#!/usr/bin/env python3
"""`herd perplexity` end to end on the built-in model (stories260K, trained
on TinyStories) and tests/data/text/stories.txt:
  - the report's form ([i]PPL after each chunk, then the final estimate);
  - the figure does not depend on --batch (one chunk per pass, a chunk cut
    over several passes, 16 chunks per pass), --chunks N stops at [N];
  - --json, and tokens/s in it;
  - every weight type runs (herd synth tiny-256 in each), and the KL from
    the F32 model grows as bits are taken away;
  - --kl-divergence-base writes llama-perplexity's file (its exact size),
    --kl-divergence against the same model gives KL ~ 0 and the same top
    token almost everywhere (the file keeps 16 bits per log-prob), against an F16 copy a small positive KL;
  - every bad input is a clear message, a non-zero exit and no output file;
  - with ../shared (float64 reference.py) and numpy: the PPL equals
    llama.cpp's method run on float64 logits, within 0.1 % (the issue's
    bound against llama-perplexity).

usage: test_perplexity_cli.py HERD_BINARY SOURCE_DIR SHARED_DIR"""
import json
import os
import re
import subprocess
import sys
import tempfile

herd, src, shared = sys.argv[1], sys.argv[2], sys.argv[3]
text = os.path.join(src, "tests", "data", "text", "stories.txt")
model = os.path.join(src, "models", "stories260K.gguf")
CTX = 128
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures += 1


def run(*args, ok=True):
    p = subprocess.run([herd, "perplexity", *args], capture_output=True, text=True, timeout=300)
    if ok and p.returncode != 0:
        print(p.stdout, p.stderr)
        raise SystemExit("herd perplexity %s failed (%d)" % (" ".join(args), p.returncode))
    return p


def report(out):
    """([i] values, final PPL, its error) from the text report."""
    running = [(int(i), float(v)) for i, v in re.findall(r"\[(\d+)\]([0-9.]+),", out)]
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
    return running, (float(m.group(1)) if m else None), (float(m.group(2)) if m else None)


tmp = tempfile.mkdtemp(prefix="herd-ppl-")
ids = json.loads(subprocess.run([herd, "tokenize", "-m", model, "-f", text], capture_output=True, text=True,
                                check=True).stdout)
n_chunk = len(ids) // CTX

# ---------------------------------------------------------------- the report
p = run("-m", model, "-f", text, "--ctx", str(CTX))
running, ppl, err = report(p.stdout)
check([i for i, _ in running] == list(range(1, n_chunk + 1)), "one [i] value per chunk (%d chunks)" % n_chunk)
check(ppl is not None and abs(running[-1][1] - ppl) < 1e-4, "final estimate %s equals the last [i] value" % ppl)
check(err is not None and 0 < err < ppl, "an uncertainty %s" % err)
check(1.5 < ppl < 20, "a trained model's perplexity on its kind of text (%.4f)" % ppl)
check("%d chunks of %d" % (n_chunk, CTX) in p.stderr, "stderr names the chunks")

# ------------------------------------------------- batch and chunk invariance
for b in ("128", "48", "2048"):
    q = run("-m", model, "-f", text, "--ctx", str(CTX), "--batch", b)
    r2, ppl2, _ = report(q.stdout)
    check(ppl2 is not None and abs(ppl2 - ppl) <= 1e-4 * ppl, "--batch %s gives the same PPL (%s vs %s)" % (b, ppl2, ppl))
q = run("-m", model, "-f", text, "--ctx", str(CTX), "--chunks", "5")
r5, ppl5, _ = report(q.stdout)
check(len(r5) == 5 and abs(ppl5 - running[4][1]) < 1e-4, "--chunks 5 stops at [5] (%s vs %s)" % (ppl5, running[4][1]))

# ---------------------------------------------------------------------- json
q = run("-m", model, "-f", text, "--ctx", str(CTX), "--json")
j = json.loads(q.stdout)
check(abs(j["ppl"]["value"] - ppl) < 1e-4 and j["chunks"] == n_chunk and j["ctx"] == CTX,
      "--json holds the same PPL, chunks and ctx")
check(j["tokens_scored"] == n_chunk * (CTX - 1 - CTX // 2) and j["tokens_per_second"] > 0,
      "--json counts %d scored tokens, %.0f tokens/s" % (j["tokens_scored"], j["tokens_per_second"]))

# ------------------------------------------------------------- KL divergence
base = os.path.join(tmp, "base.kld")
q = run("-m", model, "-f", text, "--ctx", str(CTX), "--kl-divergence-base", base)
check(abs(report(q.stdout)[1] - ppl) < 2e-4 * ppl, "saving the base file leaves the PPL as it was")
n_vocab = 512
want = 8 + 12 + 4 * n_chunk * CTX + n_chunk * (CTX - 1 - CTX // 2) * (2 * ((n_vocab + 1) // 2) + 4) * 2
check(os.path.getsize(base) == want, "the base file has llama-perplexity's size (%d bytes)" % want)
with open(base, "rb") as f:
    head = f.read(20 + 4 * 8)
check(head[:8] == b"_logits_" and int.from_bytes(head[8:12], "little") == CTX
      and int.from_bytes(head[12:16], "little") == n_vocab and int.from_bytes(head[16:20], "little") == n_chunk,
      "header: magic, n_ctx, n_vocab, n_chunk")
check([int.from_bytes(head[20 + 4 * i:24 + 4 * i], "little") for i in range(8)] == ids[:8],
      "the text's own tokens follow (BOS first, as tokenized)")
check(not [f for f in os.listdir(tmp) if ".tmp-" in f], "no temporary file left")

q = run("-m", model, "--kl-divergence-base", base, "--kl-divergence", "--json")
j = json.loads(q.stdout)
# the base rows are stored in 16 bits, so a near-tie may flip the top token
check(j["kl_divergence"]["value"] < 1e-4 and j["same_top"]["value"] > 0.995,
      "the same model: KL %.2g, same top token %.3f" % (j["kl_divergence"]["value"], j["same_top"]["value"]))
check(abs(j["ppl_ratio"]["value"] - 1) < 1e-3, "the same model: PPL ratio %.6f" % j["ppl_ratio"]["value"])
q = run("-m", model, "--kl-divergence-base", base, "--kl-divergence")
check("====== KL divergence statistics ======" in q.stdout and "Same top p:" in q.stdout
      and "Mean PPL(Q)/PPL(base)" in q.stdout, "the text report has llama-perplexity's sections")
check(len(re.findall(r"^\s+\d+\s+[0-9.]+ ± ", q.stdout, re.M)) == n_chunk, "one line per chunk")

f16 = os.path.join(tmp, "f16.gguf")
subprocess.run([herd, "quantize", model, f16, "F16"], check=True, capture_output=True)
q = run("-m", f16, "--kl-divergence-base", base, "--kl-divergence", "--json")
j = json.loads(q.stdout)
kl = j["kl_divergence"]["value"]
check(0 < kl < 1e-3 and j["same_top"]["value"] > 0.98,
      "an F16 copy: KL %.2g, same top %.4f" % (kl, j["same_top"]["value"]))

# ------------------------------------------------------------ every weight type
# tiny-256's matrices take every type without fallbacks; its random weights
# give a huge PPL, but a finite one, and a KL from the F32 model that grows
# as bits are taken away
t_base = os.path.join(tmp, "t256.kld")
kl_by_type = {}
for t in ("F32", "F16", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "IQ4_NL", "Q6_K", "Q5_K_M", "Q4_K_M",
          "Q3_K_M", "Q2_K"):
    m = os.path.join(tmp, "t256-%s.gguf" % t)
    subprocess.run([herd, "synth", "--shape", "tiny-256", "--type", t, "-o", m], check=True, capture_output=True)
    if t == "F32":
        j = json.loads(run("-m", m, "-f", text, "--ctx", "64", "--chunks", "4", "--json",
                           "--kl-divergence-base", t_base).stdout)
        check(1 < j["ppl"]["value"] < float("inf"), "F32 tiny-256: PPL %.4g" % j["ppl"]["value"])
        continue
    j = json.loads(run("-m", m, "--kl-divergence-base", t_base, "--kl-divergence", "--json").stdout)
    kl_by_type[t] = j["kl_divergence"]["value"]
    check(1 < j["ppl"]["value"] < float("inf") and 0 <= kl_by_type[t] < float("inf"),
          "%s: PPL %.4g, KL from F32 %.4g" % (t, j["ppl"]["value"], kl_by_type[t]))
check(kl_by_type["F16"] < kl_by_type["Q8_0"] < kl_by_type["Q4_K_M"] < kl_by_type["Q2_K"],
      "KL grows as bits go: F16 %.3g < Q8_0 %.3g < Q4_K_M %.3g < Q2_K %.3g"
      % (kl_by_type["F16"], kl_by_type["Q8_0"], kl_by_type["Q4_K_M"], kl_by_type["Q2_K"]))

# ----------------------------------------------------------------- bad input
def refused(args, words, code=None, what=""):
    q = run(*args, ok=False)
    good = q.returncode != 0 and (code is None or q.returncode == code) and all(w in q.stderr for w in words)
    check(good, "refused: %s (exit %d: %s)" % (what, q.returncode, q.stderr.strip().splitlines()[-1:] or ""))


refused(["-m", model, "-f", text, "--ctx", "4096"], ["needs at least 8192"], 1, "text shorter than two chunks")
refused(["-m", model, "-f", os.path.join(tmp, "missing.txt")], ["missing.txt"], 1, "missing text")
refused(["-m", model], ["-f TEXT"], 2, "no text")
refused(["-m", model, "--kl-divergence"], ["--kl-divergence-base"], 2, "--kl-divergence without a file")
refused(["-m", model, "-f", text, "--batch", "0"], ["--batch"], 2, "--batch 0")
refused(["-m", model, "-f", text, "--ctx", "8"], ["--ctx"], 1, "--ctx 8")
refused(["-m", model, "--kl-divergence-base", base, "--kl-divergence", "--ctx", "256"], ["--ctx 128"], 1,
        "--ctx other than the file's")
cut = os.path.join(tmp, "cut.kld")
with open(base, "rb") as f, open(cut, "wb") as g:
    g.write(f.read()[:-1000])
refused(["-m", model, "--kl-divergence-base", cut, "--kl-divergence"], ["truncated"], 1, "a truncated base file")
notkld = os.path.join(tmp, "not.kld")
with open(notkld, "wb") as g:
    g.write(b"GGUF" + b"\0" * 100)
refused(["-m", model, "--kl-divergence-base", notkld, "--kl-divergence"], ["_logits_"], 1, "not a base file")
other = os.path.join(tmp, "other.gguf")
subprocess.run([herd, "synth", "--shape", "tiny", "-o", other], check=True, capture_output=True)
refused(["-m", other, "--kl-divergence-base", base, "--kl-divergence"], ["vocabulary"], 1,
        "a model with another vocabulary")
nowhere = os.path.join(tmp, "no", "dir", "x.kld")
refused(["-m", model, "-f", text, "--ctx", str(CTX), "--kl-divergence-base", nowhere], ["cannot create"], 1,
        "an unwritable base file")
check(not os.path.exists(nowhere), "nothing written there")
refused(["-m", os.path.join(tmp, "not.kld"), "-f", text], ["not.kld"], 1, "a model file that is not GGUF")

# ------------------------------------------------ against a float64 reference
ref_dir = os.path.join(shared, "tools")
try:
    import numpy as np
    sys.path.insert(0, ref_dir)
    from reference import LlamaRef  # noqa: E402
except ImportError as e:
    print("note: float64 comparison skipped (%s; needs numpy and %s/reference.py)" % (e, ref_dir))
    LlamaRef = None
if LlamaRef:
    ref = LlamaRef(model)
    bos = ids[0]
    nll = []
    first = CTX // 2
    for c in range(n_chunk):
        chunk = list(ids[c * CTX:(c + 1) * CTX])
        chunk[0] = bos
        logits = ref.forward(chunk)
        for k in range(first, CTX - 1):
            row = logits[k]
            m = row.max()
            nll.append(-(row[ids[c * CTX + k + 1]] - m - np.log(np.exp(row - m).sum())))
    ref_ppl = float(np.exp(np.mean(nll)))
    rel = abs(ppl - ref_ppl) / ref_ppl
    check(rel < 1e-3, "PPL %.4f against float64 llama.cpp method %.4f: %.4f %% apart (bound 0.1 %%)"
          % (ppl, ref_ppl, 100 * rel))
    q = run("-m", model, "-f", text, "--ctx", str(CTX), "--precise")
    pp = report(q.stdout)[1]
    check(abs(pp - ref_ppl) / ref_ppl < 1e-4, "--precise: %.4f, %.5f %% apart" % (pp, 100 * abs(pp - ref_ppl) / ref_ppl))

print("%d failure(s)" % failures)
sys.exit(1 if failures else 0)

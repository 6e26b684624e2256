#!/usr/bin/env python3
"""herd perplexity beside llama-perplexity on the same GGUF files and text:
the PPL each prints (and how far apart, the issue's bound is 0.1 %) and the
tokens/s each computes at, alternating the two tools --reps times per model
and reporting medians. Prints a markdown table and writes
bench/results/perplexity-<UTC time>.json.

usage: bench/perplexity.py --llama-perplexity PATH [--herd build/bin/herd]
           [--text FILE] [--ctx 512] [--chunks 4] [--reps 3] [--threads N] MODEL.gguf ...

The text is repeated until it holds the chunks asked for (a random-weight
synth model's PPL is large, but both tools must still print the same one).
llama-perplexity runs with --no-mmap (faster from loaded memory on these
machines) and its own default batch; its speed is the prompt-eval rate
from its timing summary, herd's the tokens/s of its --json (both count
every token of every chunk, forward passes and scoring)."""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("models", nargs="+")
ap.add_argument("--llama-perplexity", required=True)
ap.add_argument("--herd", default=os.path.join(here, "..", "build", "bin", "herd"))
ap.add_argument("--text", default=os.path.join(here, "..", "tests", "data", "text", "stories.txt"))
ap.add_argument("--ctx", type=int, default=512)
ap.add_argument("--chunks", type=int, default=4)
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--llama-args", default="", help="more llama-perplexity flags, e.g. \"-b 512\" (one chunk per pass)")
a = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="herd-bench-ppl-")
base = open(a.text, encoding="utf-8").read()


def text_for(model):
    """The text repeated until herd's tokenizer gives (chunks + 1) x ctx tokens."""
    t = base
    while True:
        path = os.path.join(tmp, "text.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(t)
        ids = json.loads(subprocess.run([a.herd, "tokenize", "-m", model, "-f", path], capture_output=True,
                                        text=True, check=True).stdout)
        if len(ids) >= (a.chunks + 1) * a.ctx:
            return path
        t += "\n\n" + base


def run_herd(model, text):
    p = subprocess.run([a.herd, "perplexity", "-m", model, "-f", text, "--ctx", str(a.ctx), "--chunks",
                        str(a.chunks), "--threads", str(a.threads), "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("herd perplexity failed on %s:\n%s" % (model, p.stderr))
    j = json.loads(p.stdout)
    return j["ppl"]["value"], j["ppl"]["error"], j["tokens_per_second"]


def run_llama(model, text):
    p = subprocess.run([a.llama_perplexity, "-m", model, "-f", text, "-c", str(a.ctx), "--chunks", str(a.chunks),
                        "-t", str(a.threads), "--no-mmap", *a.llama_args.split()], capture_output=True, text=True)
    out = p.stdout + p.stderr
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
    s = re.search(r"prompt eval time =\s*[0-9.]+ ms /\s*\d+ tokens \(\s*[0-9.]+ ms per token,\s*([0-9.]+) tokens per "
                  r"second\)", out)
    if p.returncode != 0 or not m or not s:
        sys.exit("llama-perplexity failed on %s:\n%s" % (model, out[-3000:]))
    return float(m.group(1)), float(m.group(2)), float(s.group(1))


rows = []
for model in a.models:
    text = text_for(model)
    h, l = [], []
    for _ in range(a.reps):
        h.append(run_herd(model, text))
        l.append(run_llama(model, text))
    row = {
        "model": os.path.basename(model),
        "herd_ppl": h[0][0], "herd_ppl_error": h[0][1],
        "llama_ppl": l[0][0], "llama_ppl_error": l[0][1],
        "ppl_diff_percent": 100 * abs(h[0][0] - l[0][0]) / l[0][0],
        "herd_tokens_per_second": statistics.median(x[2] for x in h),
        "llama_tokens_per_second": statistics.median(x[2] for x in l),
        "herd_runs": [x[2] for x in h], "llama_runs": [x[2] for x in l],
    }
    row["speed_ratio"] = row["herd_tokens_per_second"] / row["llama_tokens_per_second"]
    rows.append(row)
    print("%s: herd %.4f, llama %.4f (%.4f %% apart); %.1f vs %.1f tokens/s (%.2fx)" % (
        row["model"], row["herd_ppl"], row["llama_ppl"], row["ppl_diff_percent"], row["herd_tokens_per_second"],
        row["llama_tokens_per_second"], row["speed_ratio"]), file=sys.stderr)

print("| model | herd PPL | llama-perplexity PPL | apart | herd tokens/s | llama tokens/s | ratio |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print("| %s | %.4f +/- %.4f | %.4f +/- %.4f | %.4f %% | %.1f | %.1f | %.2fx |" % (
        r["model"], r["herd_ppl"], r["herd_ppl_error"], r["llama_ppl"], r["llama_ppl_error"], r["ppl_diff_percent"],
        r["herd_tokens_per_second"], r["llama_tokens_per_second"], r["speed_ratio"]))
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
out = os.path.join(here, "results", "perplexity-%s.json" % stamp)
with open(out, "w") as f:
    json.dump({"ctx": a.ctx, "chunks": a.chunks, "reps": a.reps, "threads": a.threads, "llama_args": a.llama_args,
               "text": os.path.basename(a.text), "rows": rows}, f, indent=1)
print("wrote %s" % out, file=sys.stderr)

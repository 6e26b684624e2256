#!/usr/bin/env python3
"""What each way of shrinking a model costs, on one model and one text: for
F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, Q4_K_M with an importance matrix,
and pruned copies (herd prune), the file size, herd bench's pp512 and
tg128 (tokens/s, medians of --reps) and herd perplexity on the text, with
the KL divergence from the F16 model and how often the top token agrees.
A variant the model cannot take (a quantization whose block size does not
divide a matrix's rows, a prune level beyond its layers) is a row saying why.

Writes bench/results/optimise-<name>-<UTC time>.{json,md,svg}: the table as
markdown, everything as JSON, and a chart: perplexity against size on the
left, pp512 and tg128 on the right.

usage: bench/optimise.py --model SOURCE.gguf --text TEXT [--calib TEXT] [--ctx 128]
           [--prune drop-layers=1 --prune ffn-keep=0.5 ...] [--reps 3] [--herd build/bin/herd] [--name NAME]
           [--no-speed]
SOURCE is an F32, F16 or BF16 file (a Hugging Face model converted with
`herd convert hf`, a llama2.c one with `herd convert llama2c`, or
`herd synth` for speed alone)."""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--model", required=True)
ap.add_argument("--text", required=True)
ap.add_argument("--calib", help="calibration text for the importance matrix and pruning (default: --text)")
ap.add_argument("--ctx", type=int, default=128, help="perplexity context (default 128)")
ap.add_argument("--chunks", type=int, default=0, help="perplexity chunks (default: all)")
ap.add_argument("--prune", action="append", help="a prune level: drop-layers=N, layers=I,J, ffn-keep=F or heads-keep=F")
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--herd", default=os.path.join(here, "..", "build", "bin", "herd"))
ap.add_argument("--name", help="name in the results' file names (default: the model's file name)")
ap.add_argument("--no-speed", action="store_true", help="skip herd bench")
a = ap.parse_args()
calib = a.calib or a.text
name = a.name or os.path.splitext(os.path.basename(a.model))[0]
tmp = tempfile.mkdtemp(prefix="herd-optimise-")


def herd(*args, check=True):
    p = subprocess.run([a.herd, *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        lines = [x for x in p.stderr.splitlines() if x.startswith("herd")] or p.stderr.strip().splitlines()
        raise RuntimeError(lines[0] if lines else "exit %d" % p.returncode)
    return p


def inspect(path):
    return json.loads(herd("inspect", path, "--json").stdout)


src = inspect(a.model)
n_layer = int(src["hparams"].get("n_layer", 0))
prunes = a.prune or (["drop-layers=1", "drop-layers=2"] if n_layer > 3 else ["drop-layers=1", "ffn-keep=0.5"])

# ------------------------------------------------------------- the variants
f16 = os.path.join(tmp, "F16.gguf")
herd("quantize", a.model, f16, "F16", "--allow-requantize")
imatrix = os.path.join(tmp, "imatrix.dat")
imatrix_err = None
try:
    herd("imatrix", "-m", f16, "-f", calib, "-o", imatrix, "--ctx", str(a.ctx))
except RuntimeError as e:
    imatrix_err = str(e)

variants = [("F16", f16, None)]
for t in ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"):
    out = os.path.join(tmp, t + ".gguf")
    try:
        herd("quantize", f16, out, t)
        variants.append((t, out, None))
    except RuntimeError as e:
        variants.append((t, None, str(e)))
out = os.path.join(tmp, "Q4_K_M-imatrix.gguf")
if imatrix_err:
    variants.append(("Q4_K_M + imatrix", None, imatrix_err))
else:
    try:
        herd("quantize", f16, out, "Q4_K_M", "--imatrix", imatrix)
        variants.append(("Q4_K_M + imatrix", out, None))
    except RuntimeError as e:
        variants.append(("Q4_K_M + imatrix", None, str(e)))
for level in prunes:
    flag, _, value = level.partition("=")
    out = os.path.join(tmp, "pruned-%s-%s.gguf" % (flag, value.replace(",", "_")))
    label = "F16 pruned %s %s" % (flag, value)
    try:
        herd("prune", f16, out, "--calib", calib, "--" + flag, value, "--report", out + ".json")
        variants.append((label, out, None))
    except RuntimeError as e:
        variants.append((label, None, str(e)))

# ------------------------------------------------------------- measurements
base_kld = os.path.join(tmp, "base.kld")
ppl_args = ["--ctx", str(a.ctx)] + (["--chunks", str(a.chunks)] if a.chunks else [])
rows = []
for label, path, why in variants:
    row = {"variant": label, "refused": why}
    if path:
        info = inspect(path)
        row["size_bytes"] = os.path.getsize(path)
        row["bits_per_weight"] = 8.0 * info["weight_bytes"] / max(1, info["n_params"])
        row["n_params"] = info["n_params"]
        row["n_layer"] = info["hparams"].get("n_layer")
        extra = ["--kl-divergence-base", base_kld] if label == "F16" else []
        j = json.loads(herd("perplexity", "-m", path, "-f", a.text, *ppl_args, "--json", *extra).stdout)
        row["ppl"], row["ppl_error"] = j["ppl"]["value"], j["ppl"]["error"]
        if label != "F16":
            k = json.loads(herd("perplexity", "-m", path, "--kl-divergence-base", base_kld, "--kl-divergence",
                                *(["--chunks", str(a.chunks)] if a.chunks else []), "--json").stdout)
            row["kl_divergence"] = k["kl_divergence"]["value"]
            row["same_top"] = k["same_top"]["value"]
        else:
            row["kl_divergence"], row["same_top"] = 0.0, 1.0
        if not a.no_speed:
            b = json.loads(herd("bench", "-m", path, "-p", "512", "-n", "128", "-b", "0", "-r", str(a.reps),
                                "--no-ceilings", "--json").stdout)
            for r in b["results"]:
                row[r["test"] + "_tokens_per_s"] = r["tokens_per_s"]
    rows.append(row)
    print("%-24s %s" % (label, "refused: " + why if why else "%.1f MiB, PPL %.4f" % (row["size_bytes"] / 2**20,
                                                                                      row["ppl"])), file=sys.stderr)

# ------------------------------------------------------------------ outputs
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
stem = os.path.join(here, "results", "optimise-%s-%s" % (name, stamp))
md = ["%s: perplexity on %s (ctx %d), KL divergence and top-token agreement against F16; speed by herd bench "
      "(median of %d)." % (name, os.path.basename(a.text), a.ctx, a.reps), "",
      "| variant | size MiB | bits/weight | layers | PPL | KLD vs F16 | same top | pp512 t/s | tg128 t/s |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for r in rows:
    if r["refused"]:
        md.append("| %s | refused: %s | | | | | | | |" % (r["variant"], r["refused"].replace("|", "/")))
        continue
    md.append("| %s | %.2f | %.2f | %s | %.4f +/- %.4f | %.5f | %.2f %% | %s | %s |" % (
        r["variant"], r["size_bytes"] / 2**20, r["bits_per_weight"], r["n_layer"], r["ppl"], r["ppl_error"],
        r["kl_divergence"], 100 * r["same_top"], "%.1f" % r["pp512_tokens_per_s"] if "pp512_tokens_per_s" in r else "-",
        "%.1f" % r["tg128_tokens_per_s"] if "tg128_tokens_per_s" in r else "-"))
with open(stem + ".md", "w") as f:
    f.write("\n".join(md) + "\n")
with open(stem + ".json", "w") as f:
    json.dump({"model": a.model, "text": os.path.basename(a.text), "calib": os.path.basename(calib), "ctx": a.ctx,
               "reps": a.reps, "prune_levels": prunes, "rows": rows}, f, indent=1)


def svg_chart(rows):
    """Two panels: PPL against size (points, labelled), and pp512 / tg128 bars."""
    ok = [r for r in rows if not r["refused"]]
    W, H, P = 980, 420, 60
    pw = (W - 3 * P) // 2
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">'
           % (W, H), '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="20" font-size="14">%s: perplexity against size</text>' % (P, name),
           '<text x="%d" y="20" font-size="14">speed (tokens/s, herd bench)</text>' % (2 * P + pw)]
    if not ok:
        return "\n".join(out + ["</svg>"])
    xs = [r["size_bytes"] / 2**20 for r in ok]
    ys = [r["ppl"] for r in ok]
    x0, x1 = 0, max(xs) * 1.1
    y0, y1 = min(ys) * 0.95, max(ys) * 1.05
    top, bottom = 40, H - P

    def sx(v):
        return P + (v - x0) / (x1 - x0) * pw

    def sy(v):
        return bottom - (v - y0) / (y1 - y0 or 1) * (bottom - top)
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (P, bottom, P + pw, bottom))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (P, top, P, bottom))
    for i in range(5):
        v = x0 + (x1 - x0) * i / 4
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%.2f</text>' % (sx(v), bottom + 15, v))
        w = y0 + (y1 - y0) * i / 4
        out.append('<text x="%d" y="%.1f" text-anchor="end">%.3g</text>' % (P - 5, sy(w) + 4, w))
    out.append('<text x="%d" y="%d" text-anchor="middle">size (MiB)</text>' % (P + pw // 2, bottom + 32))
    out.append('<text x="15" y="%d" transform="rotate(-90 15 %d)" text-anchor="middle">perplexity</text>'
               % ((top + bottom) // 2, (top + bottom) // 2))
    # labels of points close together alternate above and below their point
    for i, (r, x, y) in enumerate(zip(ok, xs, ys)):
        out.append('<circle cx="%.1f" cy="%.1f" r="4" fill="#1f77b4"/>' % (sx(x), sy(y)))
        out.append('<text x="%.1f" y="%.1f">%s</text>' % (sx(x) + 6, sy(y) + (-5 if i % 2 == 0 else 13),
                                                          r["variant"]))
    speed = [r for r in ok if "pp512_tokens_per_s" in r]
    if speed:
        bx = 2 * P + pw
        vmax = max(max(r["pp512_tokens_per_s"], r["tg128_tokens_per_s"]) for r in speed) * 1.1
        slot = pw / len(speed)
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (bx, bottom, bx + pw, bottom))
        for i, r in enumerate(speed):
            for j, (key, colour) in enumerate((("pp512_tokens_per_s", "#1f77b4"), ("tg128_tokens_per_s", "#ff7f0e"))):
                h = r[key] / vmax * (bottom - top)
                x = bx + i * slot + 4 + j * (slot - 8) / 2
                out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>'
                           % (x, bottom - h, (slot - 8) / 2, h, colour))
                out.append('<text x="%.1f" y="%.1f" font-size="9" text-anchor="middle">%.0f</text>'
                           % (x + (slot - 8) / 4, bottom - h - 3, r[key]))
            out.append('<text x="%.1f" y="%d" font-size="9" transform="rotate(30 %.1f %d)">%s</text>'
                       % (bx + i * slot + slot / 2, bottom + 12, bx + i * slot + slot / 2, bottom + 12, r["variant"]))
        out.append('<rect x="%d" y="30" width="10" height="10" fill="#1f77b4"/><text x="%d" y="39">pp512</text>'
                   % (bx + pw - 120, bx + pw - 106))
        out.append('<rect x="%d" y="30" width="10" height="10" fill="#ff7f0e"/><text x="%d" y="39">tg128</text>'
                   % (bx + pw - 60, bx + pw - 46))
    return "\n".join(out + ["</svg>"])


with open(stem + ".svg", "w") as f:
    f.write(svg_chart(rows) + "\n")
print("\n".join(md))
print("wrote %s.{md,json,svg}" % stem, file=sys.stderr)

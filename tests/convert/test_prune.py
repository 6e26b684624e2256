#!/usr/bin/env python3
"""herd prune, end to end on models written by `herd synth`:
  - --layers on each family herd prunes (llama, mistral, qwen3, phi3,
    mixtral, qwen2moe, qwen3moe; F32, and Q8_0 / Q4_K_M where bytes must be
    copied, not requantized): block_count, the tensors renumbered
    (`herd inspect --json`), every kept tensor's bytes equal to the
    input's, and the pruned model's logits (`herd eval --precise`) equal to
    the original's with the removed layers made identities (their
    attn_output and ffn_down* zeroed in a copy: a pre-norm block whose two
    output projections are zero adds nothing to the residual stream). The
    unmodified original must NOT match, so the comparison can fail.
  - --drop-layers with --calib: on a model with one layer zeroed, that
    layer's Block Influence is 0 and it is the one removed; --drop-layers 2
    removes the two lowest of the report's ranking; the report's fields.
  - bad input: each case exits 1 or 2 with its message and leaves no output
    (an existing output file survives).
The calibration text is generated here. Needs nothing outside the repo.

usage: test_prune.py HERD_BINARY"""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

herd = sys.argv[1]
tmp = tempfile.mkdtemp(prefix="herd-prune-test-")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run(*args, expect=0):
    p = subprocess.run([herd] + [str(a) for a in args], capture_output=True, text=True)
    if expect is not None and p.returncode != expect:
        print(p.stdout[-2000:], p.stderr[-2000:])
        raise SystemExit("herd %s: exit %d, expected %d" % (" ".join(map(str, args)), p.returncode, expect))
    return p


def path(name):
    return os.path.join(tmp, name)


def synth(shape, name, layers=None, type_="F32"):
    args = ["synth", "--shape", shape, "-o", path(name), "--type", type_]
    if layers:
        args += ["--layers", layers]
    run(*args)
    return path(name)


def inspect(model):
    return json.loads(run("inspect", "--json", model).stdout)


def meta(info, key):
    for kv in info["metadata"]:
        if kv["key"] == key:
            return kv["value"]
    return None


def tensor_bytes(model, info):
    """name -> the tensor's data bytes."""
    out = {}
    with open(model, "rb") as f:
        for t in info["tensors"]:
            f.seek(info["data_offset"] + t["offset"])
            out[t["name"]] = f.read(t["bytes"])
    return out


def zero_layers(model, out, layers):
    """A copy of model whose given layers add nothing to the residual stream."""
    shutil.copyfile(model, out)
    info = inspect(model)
    with open(out, "r+b") as f:
        for t in info["tensors"]:
            parts = t["name"].split(".")
            if parts[0] == "blk" and int(parts[1]) in layers and (
                    parts[2] == "attn_output" or parts[2].startswith("ffn_down")):
                f.seek(info["data_offset"] + t["offset"])
                f.write(b"\0" * t["bytes"])  # zero bytes are 0.0 in F32 / F16 and zero scales in Q8_0 / K-quants


def eval_logits(model, ids):
    r = json.loads(run("eval", "-m", model, "--ids", ids, "--precise").stdout)
    return r["last_logits"]


def max_diff(a, b):
    return max(abs(x - y) for x, y in zip(a, b))


ids = "1,450,300,12,99,1000,7,31,2000,15,4,888"

# ------------------------------------------------------------------ calibration text
rng = random.Random(7)
words = ("once upon a time there was a little girl who lived in a small house near the big river and every day she "
         "walked with her dog to see the old tree where birds sang songs about the sun the moon and stars").split()
with open(path("calib.txt"), "w") as f:
    f.write(" ".join(rng.choice(words) for _ in range(4000)) + "\n")
with open(path("short.txt"), "w") as f:
    f.write("once upon a time\n")

# ------------------------------------------------------------------ --layers on every family
cases = [  # shape, layers of the synth model, type, layers to drop
    ("tiny", "4", "F32", [1]),
    ("tiny", "4", "F32", [0, 3]),
    ("tiny", "4", "Q8_0", [2]),
    ("tiny-256", None, "Q4_K_M", [0]),
    ("mistral-tiny", "3", "F32", [1]),
    ("qwen3-tiny", "3", "F32", [2]),
    ("phi3-tiny", "3", "F32", [0]),
    ("mixtral-tiny", None, "F32", [1]),
    ("qwen2moe-tiny", "3", "F32", [1]),
    ("qwen3moe-tiny", None, "F32", [0]),
]
for shape, layers, type_, drop in cases:
    tag = "%s-%s-%s-drop%s" % (shape, layers or "d", type_, "_".join(map(str, drop)))
    src = synth(shape, tag + ".gguf", layers, type_)
    out = path(tag + ".pruned.gguf")
    run("prune", src, out, "--layers", ",".join(map(str, drop)))
    a, b = inspect(src), inspect(out)
    arch = a["architecture"]
    n = a["hparams"]["n_layer"]
    keep = [l for l in range(n) if l not in drop]
    check(meta(b, arch + ".block_count") == len(keep) and b["hparams"]["n_layer"] == len(keep),
          "%s: block_count %d" % (tag, len(keep)))
    # names: kept layer keep[k] becomes blk.k, other tensors stay; same order, types, shapes
    renamed = []
    for t in a["tensors"]:
        p = t["name"].split(".")
        if p[0] == "blk":
            l = int(p[1])
            if l in drop:
                continue
            renamed.append(dict(t, name="blk.%d.%s" % (keep.index(l), ".".join(p[2:]))))
        else:
            renamed.append(t)
    got = [(t["name"], t["type"], t["shape"]) for t in b["tensors"]]
    want = [(t["name"], t["type"], t["shape"]) for t in renamed]
    check(got == want, "%s: tensors renumbered in order, types and shapes kept" % tag)
    ba, bb = tensor_bytes(src, a), tensor_bytes(out, b)
    same = all(ba[o["name"]] == bb[r["name"]] for o, r in zip(
        [t for t in a["tensors"] if not (t["name"].startswith("blk.") and int(t["name"].split(".")[1]) in drop)],
        renamed))
    check(same, "%s: every kept tensor's bytes copied unchanged" % tag)
    check([m["key"] for m in a["metadata"]] == [m["key"] for m in b["metadata"]] and all(
        x == y for x, y in zip(a["metadata"], b["metadata"]) if not x["key"].endswith(".block_count")),
        "%s: every other key unchanged, in order" % tag)
    check(b["alignment"] == a["alignment"] and b["runnable"], "%s: alignment kept, runnable" % tag)
    zeroed = path(tag + ".zeroed.gguf")
    zero_layers(src, zeroed, drop)
    lp, lz, lo = eval_logits(out, ids), eval_logits(zeroed, ids), eval_logits(src, ids)
    d, d0 = max_diff(lp, lz), max_diff(lp, lo)
    check(d <= 1e-5, "%s: logits equal the original's with layers %s as identities (max diff %.3g)" % (tag, drop, d))
    check(d0 > 1e-3, "%s: and differ from the unmodified original's (%.3g): the check can fail" % (tag, d0))
    for f in (src, out, zeroed):
        os.unlink(f)

# ------------------------------------------------------------------ --drop-layers by Block Influence
base = synth("tiny", "bi.gguf", "4")
zeroed = path("bi.zeroed2.gguf")
zero_layers(base, zeroed, [2])
report = path("bi.report.json")
p = run("prune", zeroed, path("bi.pruned.gguf"), "--drop-layers", "1", "--calib", path("calib.txt"), "--ctx", "64",
        "--chunks", "6", "--report", report, "--threads", "2")
r = json.load(open(report))
bi = [l["block_influence"] for l in r["layers"]]
check(r["removed"] == [2] and r["kept"] == [0, 1, 3], "BI: the identity layer 2 is the one removed (%s)" % bi)
check(abs(bi[2]) < 1e-6 and min(bi[0], bi[1], bi[3]) > 1e-3, "BI: layer 2 scores 0, the others more")
check(r["ranking"][0] == 2 and sorted(r["ranking"]) == [0, 1, 2, 3] and
      all(bi[r["ranking"][i]] <= bi[r["ranking"][i + 1]] for i in range(3)), "BI: the ranking sorts the scores")
check([l["rank"] for l in r["layers"]] == [r["ranking"].index(i) for i in range(4)], "BI: each layer's rank")
c = r["calibration"]
check(c["chunks"] == 6 and c["ctx"] == 64 and c["tokens"] == 384 and c["text_tokens"] > 384 and
      c["file"] == path("calib.txt"), "report: calibration chunks, ctx and tokens")
check(r["method"] == "block_influence" and r["n_layer_in"] == 4 and r["n_layer_out"] == 3 and
      r["architecture"] == "llama", "report: method and layer counts")
check(r["file_bytes_in"] == os.path.getsize(zeroed) and r["file_bytes_out"] == os.path.getsize(path("bi.pruned.gguf"))
      and r["weight_bytes_out"] < r["weight_bytes_in"] and r["tensors_out"] == r["tensors_in"] - 9,
      "report: sizes in and out")
check("block influence" in p.stderr and "removed" in p.stderr, "a table on stderr")
lp, lz = eval_logits(path("bi.pruned.gguf"), ids), eval_logits(zeroed, ids)
check(max_diff(lp, lz) <= 1e-5, "BI-pruned model: logits as the zeroed original's")

run("prune", base, path("bi2.gguf"), "--drop-layers", "2", "--calib", path("calib.txt"), "--ctx", "64", "--chunks",
    "4", "--report", report)
r = json.load(open(report))
check(sorted(r["removed"]) == sorted(r["ranking"][:2]) and inspect(path("bi2.gguf"))["hparams"]["n_layer"] == 2,
      "--drop-layers 2: the two lowest scores go")
run("prune", base, path("l.gguf"), "--layers", "3", "--calib", path("calib.txt"), "--ctx", "64", "--chunks", "2",
    "--report", report)
r = json.load(open(report))
check(r["method"] == "layers" and r["removed"] == [3] and r["layers"][0]["block_influence"] is not None,
      "--layers with --calib: scores reported, the named layer removed")
run("prune", base, path("l.gguf"), "--layers", "3", "--report", report)
r = json.load(open(report))
check(r["removed"] == [3] and r["ranking"] is None and r["calibration"] is None and
      r["layers"][3]["block_influence"] is None, "--layers without --calib: no scores")


# ------------------------------------------------------------------ --ffn-keep
def rows(blob, n_rows):
    rb = len(blob) // n_rows
    return [blob[i * rb:(i + 1) * rb] for i in range(n_rows)]


def gate_rows(info, blobs, layer):
    """A layer's gate rows: ffn_gate's, or the first half of phi3's fused ffn_up."""
    shapes = {t["name"]: t["shape"] for t in info["tensors"]}
    name = "blk.%d.ffn_gate.weight" % layer
    if name in shapes:
        return rows(blobs[name], shapes[name][1])
    up = "blk.%d.ffn_up.weight" % layer
    return rows(blobs[up], shapes[up][1])[:shapes[up][1] // 2]


def kept_channels(src_info, src_bytes, out_info, out_bytes, layer):
    """The channels a pruned layer kept: its gate rows are the input's rows, byte for byte."""
    index = {r: j for j, r in enumerate(gate_rows(src_info, src_bytes, layer))}
    return [index.get(r, -1) for r in gate_rows(out_info, out_bytes, layer)]


def zero_channels(model, out, dropped):
    """A copy of model whose dropped FFN channels (layer -> channels) carry nothing: gate and up rows zeroed."""
    shutil.copyfile(model, out)
    info = inspect(model)
    with open(out, "r+b") as f:
        for t in info["tensors"]:
            p = t["name"].split(".")
            if p[0] == "blk" and p[2] in ("ffn_gate", "ffn_up") and dropped.get(int(p[1])):
                n_rows = t["shape"][1]
                rb = t["bytes"] // n_rows
                fused = p[2] == "ffn_up" and not any(u["name"] == "blk.%s.ffn_gate.weight" % p[1]
                                                     for u in info["tensors"])
                for j in dropped[int(p[1])]:
                    for r in ((j, n_rows // 2 + j) if fused else (j,)):  # phi3: gate row j and up row j
                        f.seek(info["data_offset"] + t["offset"] + r * rb)
                        f.write(b"\0" * rb)


fbase = synth("tiny-256", "ffn.gguf", "3")  # n_ff 768
calib = ["--calib", path("calib.txt"), "--ctx", "64", "--chunks", "4"]
for fr, want in (("0.5", [512, 512, 512]), ("0.34,1,0.67", [256, 768, 512]), ("0.1", [256, 256, 256])):
    out = path("ffn.pruned.gguf")
    report = path("ffn.report.json")
    p = run("prune", fbase, out, "--ffn-keep", fr, "--report", report, *calib)
    a, b = inspect(fbase), inspect(out)
    r = json.load(open(report))
    got = [l["n_ff_out"] for l in r["layers"]]
    check(got == want and [l["n_ff_in"] for l in r["layers"]] == [768] * 3 and r["method"] == "ffn_channels",
          "--ffn-keep %s: widths %s (multiples of 256)" % (fr, got))
    ff = meta(b, "llama.feed_forward_length")
    uniform = len(set(want)) == 1
    check(ff == want[0] if uniform else (isinstance(ff, dict) and ff["count"] == 3),
          "--ffn-keep %s: feed_forward_length %s" % (fr, "one number" if uniform else "an array of 3"))
    check(uniform or "note:" in p.stderr, "--ffn-keep %s: a note when widths differ" % fr)
    shapes = {t["name"]: t["shape"] for t in b["tensors"]}
    check(all(shapes["blk.%d.ffn_gate.weight" % l] == [256, want[l]] and shapes["blk.%d.ffn_up.weight" % l] ==
              [256, want[l]] and shapes["blk.%d.ffn_down.weight" % l] == [want[l], 256] for l in range(3)),
          "--ffn-keep %s: gate, up, down shapes" % fr)
    ba, bb = tensor_bytes(fbase, a), tensor_bytes(out, b)
    kept = [kept_channels(a, ba, b, bb, l) for l in range(3)]
    check(all(k == sorted(k) and k[0] >= 0 and len(set(k)) == len(k) for k in kept),
          "--ffn-keep %s: gate rows are input rows, in order" % fr)
    ok = True
    for l in range(3):  # up rows and down columns of the same channels (F32: exact)
        up_in, up_out = rows(ba["blk.%d.ffn_up.weight" % l], 768), rows(bb["blk.%d.ffn_up.weight" % l], want[l])
        ok &= all(up_out[k] == up_in[j] for k, j in enumerate(kept[l]))
        d_in, d_out = rows(ba["blk.%d.ffn_down.weight" % l], 256), rows(bb["blk.%d.ffn_down.weight" % l], 256)
        ok &= all(d_out[e] == b"".join(d_in[e][4 * j:4 * j + 4] for j in kept[l]) for e in range(256))
    check(ok, "--ffn-keep %s: up rows and down columns of the same channels, values unchanged" % fr)
    zeroed = path("ffn.zeroed.gguf")
    zero_channels(fbase, zeroed, {l: [j for j in range(768) if j not in kept[l]] for l in range(3)})
    lp, lz, lo = eval_logits(out, ids), eval_logits(zeroed, ids), eval_logits(fbase, ids)
    d, d0 = max_diff(lp, lz), max_diff(lp, lo)
    check(d <= 1e-3, "--ffn-keep %s: logits equal the original's with the dropped channels zeroed (%.3g)" % (fr, d))
    check(d0 > 1e-2, "--ffn-keep %s: and differ from the unmodified original's (%.3g)" % (fr, d0))
    if fr == "0.34,1,0.67":
        shutil.copyfile(out, path("ffn.perlayer.gguf"))

# layer removal on a file whose feed_forward_length is an array: the kept layers' entries stay
m = path("ffn.perlayer.gguf")
run("prune", m, path("ffn.perlayer.l1.gguf"), "--layers", "1")
b = inspect(path("ffn.perlayer.l1.gguf"))
check(meta(b, "llama.feed_forward_length") == {"type": "array", "element_type": "i32", "count": 2} and
      [t["shape"] for t in b["tensors"] if t["name"].endswith("ffn_down.weight")] == [[256, 256], [512, 256]],
      "--layers 1 on per-layer FFN widths 256 / 768 / 512: the array becomes 256 / 512")
zero_layers(m, path("ffn.perlayer.z1.gguf"), [1])
d = max_diff(eval_logits(path("ffn.perlayer.l1.gguf"), ids), eval_logits(path("ffn.perlayer.z1.gguf"), ids))
check(d <= 1e-5, "and its logits equal the original's with layer 1 zeroed (%.3g)" % d)

# other families: qwen3 (Q/K norms), phi3 (gate and up in one ffn_up), gemma3 (GELU, post norms)
for shape, n_ff in (("qwen3-tiny", 512), ("phi3-tiny", 768), ("gemma3-tiny", 512)):
    src = synth(shape, "ffn-%s.gguf" % shape, "2")
    os.unlink(src)
    run("synth", "--shape", shape, "--layers", "2", "--ff", n_ff, "-o", src)
    out = path("ffn-%s.pruned.gguf" % shape)
    run("prune", src, out, "--ffn-keep", "0.5", *calib)
    a, b = inspect(src), inspect(out)
    keep_n = 256 if n_ff == 512 else 512
    check(meta(b, a["architecture"] + ".feed_forward_length") == keep_n, "%s --ffn-keep 0.5: %d of %d" %
          (shape, keep_n, n_ff))
    ba, bb = tensor_bytes(src, a), tensor_bytes(out, b)
    kept = [kept_channels(a, ba, b, bb, l) for l in range(2)]
    check(all(len(k) == keep_n and k == sorted(k) and k[0] >= 0 for k in kept), "%s: gate rows are input rows" % shape)
    zeroed = path("ffn-%s.zeroed.gguf" % shape)
    zero_channels(src, zeroed, {l: [j for j in range(n_ff) if j not in kept[l]] for l in range(2)})
    lp, lz, lo = eval_logits(out, ids), eval_logits(zeroed, ids), eval_logits(src, ids)
    d, d0 = max_diff(lp, lz), max_diff(lp, lo)
    check(d <= 1e-3 and d0 > 1e-2, "%s: logits as the original's with the dropped channels zeroed (%.3g; unmodified "
          "%.3g)" % (shape, d, d0))
    for f in (src, out, zeroed):
        os.unlink(f)

# the kept channels score highest: a channel whose gate and up rows are zero carries nothing and must go
zeroed = path("ffn.dead.gguf")
zero_channels(fbase, zeroed, {0: list(range(0, 768, 3))})  # 256 dead channels in layer 0
run("prune", zeroed, path("ffn.dead.pruned.gguf"), "--ffn-keep", "0.67", *calib)
a, b = inspect(zeroed), inspect(path("ffn.dead.pruned.gguf"))
kept0 = kept_channels(a, tensor_bytes(zeroed, a), b, tensor_bytes(path("ffn.dead.pruned.gguf"), b), 0)
check(len(kept0) == 512 and all(j % 3 != 0 for j in kept0), "--ffn-keep 0.67: the 256 dead channels are the ones cut")

# quantized: gate / up rows copied whole, down re-encoded in its type
q = synth("tiny-256", "ffnq.gguf", "2", "Q4_K_M")
run("prune", q, path("ffnq.pruned.gguf"), "--ffn-keep", "0.67", *calib)
a, b = inspect(q), inspect(path("ffnq.pruned.gguf"))
ta = {t["name"]: t for t in a["tensors"]}
check(all(t["type"] == ta[t["name"]]["type"] for t in b["tensors"]), "--ffn-keep on Q4_K_M: every type kept")
ba, bb = tensor_bytes(q, a), tensor_bytes(path("ffnq.pruned.gguf"), b)
check(all(set(rows(bb["blk.%d.ffn_gate.weight" % l], 512)) <= set(rows(ba["blk.%d.ffn_gate.weight" % l], 768))
          for l in range(2)), "--ffn-keep on Q4_K_M: gate rows copied whole")
lq, lo = eval_logits(path("ffnq.pruned.gguf"), ids), eval_logits(q, ids)
check(max_diff(lq, lo) < 30 and b["runnable"], "--ffn-keep on Q4_K_M: runs (logits within %.3g)" % max_diff(lq, lo))

# per-layer widths in the engine: herd against a float64 numpy forward pass over the pruned file's weights
try:
    import numpy as np
except ImportError:
    np = None
    print("note: numpy is missing; skipping the float64 reference of per-layer FFN widths")


def reference_logits(m):
    """A float64 llama forward pass over an F32 file's weights (the last position's logits); each layer's head and
    FFN counts from its tensors' shapes, so per-layer sizes need no metadata reader."""
    info = inspect(m)
    hp = info["hparams"]
    W = {}
    with open(m, "rb") as f:
        for t in info["tensors"]:
            f.seek(info["data_offset"] + t["offset"])
            W[t["name"]] = np.frombuffer(f.read(t["bytes"]), dtype=np.float32).astype(np.float64).reshape(
                t["shape"][::-1])
    HD, eps, base_freq = hp["head_dim"], hp["rms_eps"], hp["rope_freq_base"]
    tok = [int(i) for i in ids.split(",")]
    T = len(tok)

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(x):  # llama: adjacent pairs (2i, 2i + 1)
        inv = base_freq ** (-np.arange(0, HD, 2) / HD)
        ang = np.arange(T)[:, None] * inv[None, :]
        c, s_ = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = x0 * c - x1 * s_, x0 * s_ + x1 * c
        return out

    x = W["token_embd.weight"][tok]
    for l in range(hp["n_layer"]):
        g = lambda n: W["blk.%d.%s.weight" % (l, n)]  # noqa: E731
        H, KV = g("attn_q").shape[0] // HD, g("attn_k").shape[0] // HD
        xn = rms(x, g("attn_norm"))
        q = rope((xn @ g("attn_q").T).reshape(T, H, HD))
        k = rope((xn @ g("attn_k").T).reshape(T, KV, HD))
        v = (xn @ g("attn_v").T).reshape(T, KV, HD)
        att = np.empty((T, H, HD))
        for h in range(H):
            sc = q[:, h] @ k[:, h // (H // KV)].T / np.sqrt(HD)
            sc = np.where(np.tril(np.ones((T, T))) > 0, sc, -np.inf)
            pr = np.exp(sc - sc.max(-1, keepdims=True))
            att[:, h] = (pr / pr.sum(-1, keepdims=True)) @ v[:, h // (H // KV)]
        x = x + att.reshape(T, H * HD) @ g("attn_output").T
        xn = rms(x, g("ffn_norm"))
        gt, up = xn @ g("ffn_gate").T, xn @ g("ffn_up").T
        x = x + (gt / (1 + np.exp(-gt)) * up) @ g("ffn_down").T
    return rms(x[-1], W["output_norm.weight"]) @ W["output.weight"].T


if np is not None:
    ref = reference_logits(path("ffn.perlayer.gguf"))
    d = float(np.abs(np.array(eval_logits(path("ffn.perlayer.gguf"), ids)) - ref).max())
    check(d <= 1e-3, "per-layer FFN widths 256 / 768 / 512: herd eval --precise within %.3g of float64" % d)
    # the reference can fail: the unpruned model is far from it
    check(float(np.abs(np.array(eval_logits(fbase, ids)) - ref).max()) > 1e-2, "and the unpruned model is not within it")


# ------------------------------------------------------------------ --heads-keep
def zero_head_outputs(model, out, dropped):
    """A copy whose dropped query heads (layer -> heads) write nothing: their attn_output columns zeroed (F32)."""
    shutil.copyfile(model, out)
    info = inspect(model)
    hd = info["hparams"]["head_dim"]
    with open(out, "r+b") as f:
        for t in info["tensors"]:
            p = t["name"].split(".")
            if p[0] == "blk" and p[2] == "attn_output" and dropped.get(int(p[1])):
                assert t["type"] == "f32"
                cols, n_rows = t["shape"]
                for r in range(n_rows):
                    for h in dropped[int(p[1])]:
                        f.seek(info["data_offset"] + t["offset"] + 4 * (r * cols + h * hd))
                        f.write(b"\0" * (4 * hd))


for shape, layers, fr, kv_out in (("tiny-256", "2", "0.5", 1), ("qwen3-tiny", "2", "0.5", 1),
                                  ("phi3-tiny", "2", "0.5", 2), ("qwen2moe-tiny", None, "0.5", 1),
                                  ("tiny", "3", "0.5", 1), ("gemma2-tiny", "4", "0.5", 1)):
    src = synth(shape, "heads-%s.gguf" % shape, layers)
    out = path("heads-%s.pruned.gguf" % shape)
    report = path("heads.report.json")
    run("prune", src, out, "--heads-keep", fr, "--report", report, *calib)
    a, b = inspect(src), inspect(out)
    H, KV, hd = a["hparams"]["n_head"], a["hparams"]["n_head_kv"], a["hparams"]["head_dim"]
    G = H // KV
    r = json.load(open(report))
    check(b["hparams"]["n_head_kv"] == kv_out and b["hparams"]["n_head"] == kv_out * G and
          b["hparams"]["head_dim"] == hd and r["layers"][0]["n_head_kv_out"] == kv_out and
          r["method"] == "attention_heads",
          "%s --heads-keep %s: %d of %d KV heads, %d query heads, head size %d kept" % (shape, fr, kv_out, KV,
                                                                                     kv_out * G, hd))
    ba, bb = tensor_bytes(src, a), tensor_bytes(out, b)
    n_l = a["hparams"]["n_layer"]
    fused = "blk.0.attn_qkv.weight" in ba
    dropped = {}
    ok = True
    for l in range(n_l):
        name = "blk.%d.%s.weight" % (l, "attn_qkv" if fused else "attn_q")
        rin, rout = rows(ba[name], len(ba[name]) // (4 * a["hparams"]["n_embd"])), rows(
            bb[name], len(bb[name]) // (4 * a["hparams"]["n_embd"]))
        heads_in = [b"".join(rin[h * hd:(h + 1) * hd]) for h in range(H)]
        kept = [heads_in.index(b"".join(rout[k * hd:(k + 1) * hd])) for k in range(kv_out * G)]
        groups = sorted(set(h // G for h in kept))
        ok &= kept == [g * G + i for g in groups for i in range(G)] and len(groups) == kv_out
        dropped[l] = [h for h in range(H) if h not in kept]
        # K and V rows of the kept groups (after Q's in phi3's attn_qkv)
        if fused:
            kin, kout = rin[H * hd:], rout[kv_out * G * hd:]
            ok &= all(kout[i * hd:(i + 1) * hd] == kin[g * hd:(g + 1) * hd] and
                      kout[(kv_out + i) * hd:(kv_out + i + 1) * hd] == kin[(KV + g) * hd:(KV + g + 1) * hd]
                      for i, g in enumerate(groups))
        else:
            for m in ("attn_k", "attn_v"):
                kin, kout = rows(ba["blk.%d.%s.weight" % (l, m)], KV * hd), rows(bb["blk.%d.%s.weight" % (l, m)],
                                                                               kv_out * hd)
                ok &= all(kout[i * hd:(i + 1) * hd] == kin[g * hd:(g + 1) * hd] for i, g in enumerate(groups))
        if "blk.%d.attn_q.bias" % l in ba:  # qwen2moe: biases cut alike
            qb = ba["blk.%d.attn_q.bias" % l]
            ok &= bb["blk.%d.attn_q.bias" % l] == b"".join(qb[4 * h * hd:4 * (h + 1) * hd] for h in kept)
    check(ok, "%s: whole KV groups kept, Q / K / V rows (and biases) are the input's" % shape)
    zeroed = path("heads-%s.zeroed.gguf" % shape)
    zero_head_outputs(src, zeroed, dropped)
    lp, lz, lo = eval_logits(out, ids), eval_logits(zeroed, ids), eval_logits(src, ids)
    d, d0 = max_diff(lp, lz), max_diff(lp, lo)
    check(d <= 1e-3 and d0 > 1e-2, "%s: logits as the original's with the dropped heads' outputs zeroed (%.3g; "
          "unmodified %.3g)" % (shape, d, d0))
    for f in (src, out, zeroed):
        os.unlink(f)
# per-layer head counts: arrays, the engine's per-layer attention and KV cache regions
src = synth("tiny", "heads-pl.gguf", "3")
out = path("heads-pl.pruned.gguf")
report = path("heads.report.json")
p = run("prune", src, out, "--heads-keep", "0.5,1,0.5", "--report", report, *calib)
a, b = inspect(src), inspect(out)
r = json.load(open(report))
check([l["n_head_kv_out"] for l in r["layers"]] == [1, 2, 1] and [l["n_head_out"] for l in r["layers"]] == [2, 4, 2]
      and meta(b, "llama.attention.head_count")["count"] == 3 and "note:" in p.stderr and b["runnable"],
      "--heads-keep 0.5,1,0.5: KV heads 1 / 2 / 1, query heads 2 / 4 / 2, as arrays, with a note")
ba, bb = tensor_bytes(src, a), tensor_bytes(out, b)
dropped = {}
for l in (0, 2):
    heads_in = [b"".join(rows(ba["blk.%d.attn_q.weight" % l], 64)[h * 16:(h + 1) * 16]) for h in range(4)]
    kept = [heads_in.index(b"".join(rows(bb["blk.%d.attn_q.weight" % l], 32)[k * 16:(k + 1) * 16])) for k in range(2)]
    dropped[l] = [h for h in range(4) if h not in kept]
zeroed = path("heads-pl.zeroed.gguf")
zero_head_outputs(src, zeroed, dropped)
lp, lz = eval_logits(out, ids), eval_logits(zeroed, ids)
check(max_diff(lp, lz) <= 1e-3, "per-layer heads: logits as the original's with the dropped heads zeroed (%.3g)" %
      max_diff(lp, lz))
full = json.loads(run("eval", "-m", out, "--ids", ids).stdout)["last_logits"]
one = json.loads(run("eval", "-m", out, "--ids", ids, "--batch", "1").stdout)["last_logits"]
q8 = json.loads(run("eval", "-m", out, "--ids", ids, "--kv-type", "q8").stdout)["last_logits"]
check(full == one and max_diff(full, lp) < 1 and max_diff(q8, lp) < 1,
      "per-layer heads: the same logits token by token (decode) as in one pass; 8-bit activations and a q8 KV cache "
      "close (%.3g, %.3g)" % (max_diff(full, lp), max_diff(q8, lp)))
if np is not None:
    d = float(np.abs(np.array(lp) - reference_logits(out)).max())
    check(d <= 1e-3, "per-layer heads 1 / 2 / 1: herd eval --precise within %.3g of float64" % d)

# the group that writes nothing (its query heads' attn_output columns zeroed) is the one cut
src = synth("tiny", "heads-dead.gguf", "2")
zero_head_outputs(src, path("heads-dead.zeroed.gguf"), {0: [2, 3], 1: [0, 1]})  # layer 0: group 1, layer 1: group 0
run("prune", path("heads-dead.zeroed.gguf"), path("heads-dead.pruned.gguf"), "--heads-keep", "0.5", *calib)
a, b = inspect(path("heads-dead.zeroed.gguf")), inspect(path("heads-dead.pruned.gguf"))
ba, bb = tensor_bytes(path("heads-dead.zeroed.gguf"), a), tensor_bytes(path("heads-dead.pruned.gguf"), b)
check(bb["blk.0.attn_k.weight"] == b"".join(rows(ba["blk.0.attn_k.weight"], 32)[0:16]) and
      bb["blk.1.attn_k.weight"] == b"".join(rows(ba["blk.1.attn_k.weight"], 32)[16:32]),
      "--heads-keep 0.5: the silent KV group of each layer is the one cut")

q = synth("tiny-256", "heads-q.gguf", "2", "Q4_K_M")  # attn_output Q4_K: 2 groups of 128 columns per block
p = run("prune", q, path("heads-q.pruned.gguf"), "--heads-keep", "0.5", *calib, expect=None)
check(p.returncode == 2 and "keeps all 2 KV heads" in p.stderr and not os.path.exists(path("heads-q.pruned.gguf")),
      "--heads-keep on Q4_K attn_output of 2 x 128 columns: refused, it cannot keep whole blocks")
q = synth("tiny", "heads-q8.gguf", "2", "Q8_0")
run("prune", q, path("heads-q8.pruned.gguf"), "--heads-keep", "0.5", *calib)
b = inspect(path("heads-q8.pruned.gguf"))
check(b["hparams"]["n_head_kv"] == 1 and b["runnable"] and all(t["type"] == "q8_0" for t in b["tensors"]
                                                              if t["name"].endswith("attn_output.weight")),
      "--heads-keep on Q8_0: attn_output re-encoded as Q8_0, runnable")
eval_logits(path("heads-q8.pruned.gguf"), ids)

# ------------------------------------------------------------------ bad input
gemma = synth("gemma3-tiny", "gemma3.gguf")
with open(base, "rb") as f:
    head = f.read(4096)
with open(path("truncated.gguf"), "wb") as f:
    f.write(head)
with open(path("existing.gguf"), "w") as f:
    f.write("keep me")
calib = ["--calib", path("calib.txt"), "--ctx", "64", "--chunks", "2"]
bad = [  # args, exit code, message part
    ([base, "OUT", "--layers", "4"], 2, "out of range"),
    ([base, "OUT", "--layers", "1,1"], 2, "given twice"),
    ([base, "OUT", "--layers", "0,1,2,3"], 2, "at least one must stay"),
    ([base, "OUT", "--layers", "1,x"], 2, "not a list"),
    ([base, "OUT", "--layers", "-1"], 2, "not a list"),
    ([base, "OUT", "--drop-layers", "4"] + calib, 2, "drop 1 to 3"),
    ([base, "OUT", "--drop-layers", "0"] + calib, 2, "drop 1 to 3"),
    ([base, "OUT", "--drop-layers", "2"], 2, "--calib"),
    ([base, "OUT", "--ffn-keep", "0"] + calib, 2, "(0, 1]"),
    ([base, "OUT", "--ffn-keep", "1.5"] + calib, 2, "(0, 1]"),
    ([base, "OUT", "--heads-keep", "-0.5"] + calib, 2, "(0, 1]"),
    ([base, "OUT", "--heads-keep", "1.01"] + calib, 2, "(0, 1]"),
    ([base, "OUT", "--ffn-keep", "abc"] + calib, 2, "(0, 1]"),
    ([base, "OUT", "--layers", "1", "--drop-layers", "1"] + calib, 2, "exactly one"),
    ([base, "OUT"], 2, "exactly one"),
    ([path("no-such.gguf"), "OUT", "--layers", "1"], 1, "no-such.gguf"),
    ([path("truncated.gguf"), "OUT", "--layers", "1"], 1, "truncated.gguf"),
    ([base, "OUT", "--drop-layers", "1", "--calib", path("no-such.txt")], 1, "no-such.txt"),
    ([base, "OUT", "--drop-layers", "1", "--calib", path("short.txt")], 1, "fewer than one chunk"),
    ([base, "OUT", "--drop-layers", "1", "--calib", tmp], 1, tmp),
    ([base, base, "--layers", "1"], 2, "different files"),
    ([base, os.path.join(tmp, ".", "bi.gguf"), "--layers", "1"], 2, "different files"),
    ([gemma, "OUT", "--layers", "1"], 1, "gemma3"),
    ([base, "OUT", "--layers", "1", "--ctx", "8"] + calib[:2], 2, "--ctx"),
    ([base, "OUT", "--ffn-keep", "0.5"], 2, "--calib"),
    ([base, "OUT", "--ffn-keep", "0.5,0.5"] + calib, 2, "fractions"),
    ([base, "OUT", "--ffn-keep", "0.5,0,0.5,0.5"] + calib, 2, "(0, 1]"),
    ([synth("mixtral-tiny", "moe.gguf"), "OUT", "--ffn-keep", "0.5"] + calib, 1, "mixture-of-experts"),
    ([base, "OUT", "--heads-keep", "0.5"], 2, "--calib"),
    ([base, "OUT", "--ffn-keep", "0.5"] + calib, 2, "keeps every channel"),
    ([synth("gemma3-tiny", "g3.gguf"), "OUT", "--heads-keep", "0.5"] + calib, 2, "keeps all 1 KV heads"),
]
for args, code, msg in bad:
    for out in (path("out.gguf"), path("existing.gguf")):
        a = [out if x == "OUT" else x for x in args]
        p = run("prune", *a, expect=None)
        what = "prune %s" % " ".join(os.path.basename(x) if x.startswith(tmp) else x for x in a)
        if out.endswith("out.gguf"):
            check(p.returncode == code and msg in p.stderr and not os.path.exists(out),
                  "%s: exit %d (%d), says '%s', no output" % (what, code, p.returncode, msg))
        else:
            check(p.returncode == code and open(out).read() == "keep me", "%s: an existing output survives" % what)
p = run("prune", base, path("no-dir/out.gguf"), "--layers", "1", expect=None)
check(p.returncode == 1 and "no-dir" in p.stderr, "an output in a missing folder: exit 1 naming it")
check(not [f for f in os.listdir(tmp) if ".tmp-" in f], "no temp file left behind")

shutil.rmtree(tmp)
if failures:
    print("%d failed" % len(failures))
    sys.exit(1)
print("all passed")

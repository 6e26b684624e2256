#!/usr/bin/env python3
"""Architecture variants the fixtures do not cover:
  - qwen2: NEOX-pair RoPE and Q/K/V biases;
  - llama with rope_freqs.weight (Llama 3.1 RoPE scaling: per-frequency divisors).
For each, writes a small random-weight GGUF (with ../shared/tools/gguf_fixture.py),
computes its logits with an independent float64 numpy forward pass, and
compares with `herd eval --precise`. A reference with the variant's feature
removed must NOT match, which shows each comparison can fail.

usage: test_qwen2_reference.py HERD_BINARY SHARED_DIR
Exits 77 (skipped) without numpy or ../shared/tools."""
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("note: numpy is missing; skipping the qwen2 reference check")
    sys.exit(77)

herd, shared = sys.argv[1], sys.argv[2]
tools = os.path.join(shared, "tools")
if not os.path.exists(os.path.join(tools, "gguf_fixture.py")):
    print("note: %s/gguf_fixture.py is absent; skipping the qwen2 reference check" % tools)
    sys.exit(77)
sys.path.insert(0, tools)
import gguf_fixture as G  # noqa: E402

E, L, H, KV, FF, V, BASE, EPS = 64, 2, 4, 2, 128, 256, 1000000.0, 1e-6
HD = E // H
rng = np.random.default_rng(7)


def nrm(shape, std):
    return (rng.standard_normal(shape) * std).astype(np.float32)


w = {"token_embd.weight": nrm((V, E), 0.6), "output_norm.weight": 1 + nrm((E,), 0.1), "output.weight": nrm((V, E), 6 / np.sqrt(E))}
for l in range(L):
    p = "blk.%d." % l
    w[p + "attn_norm.weight"] = 1 + nrm((E,), 0.1)
    w[p + "attn_q.weight"] = nrm((H * HD, E), 1.6 / np.sqrt(E))
    w[p + "attn_q.bias"] = nrm((H * HD,), 0.5)
    w[p + "attn_k.weight"] = nrm((KV * HD, E), 1.6 / np.sqrt(E))
    w[p + "attn_k.bias"] = nrm((KV * HD,), 0.5)
    w[p + "attn_v.weight"] = nrm((KV * HD, E), 1.2 / np.sqrt(E))
    w[p + "attn_v.bias"] = nrm((KV * HD,), 0.5)
    w[p + "attn_output.weight"] = nrm((E, H * HD), 0.8 / np.sqrt(H * HD))
    w[p + "ffn_norm.weight"] = 1 + nrm((E,), 0.1)
    w[p + "ffn_gate.weight"] = nrm((FF, E), 0.8 / np.sqrt(E))
    w[p + "ffn_up.weight"] = nrm((FF, E), 0.8 / np.sqrt(E))
    w[p + "ffn_down.weight"] = nrm((E, FF), 1.2 / np.sqrt(FF))

FREQS = (1.0 + 7.0 * rng.random(HD // 2)).astype(np.float32)


def write_model(arch, path):
    wr = G.GGUFWriter()
    wr.add("general.architecture", G.STRING, arch)
    for key, val in [("context_length", 256), ("embedding_length", E), ("block_count", L), ("feed_forward_length", FF),
                     ("attention.head_count", H), ("attention.head_count_kv", KV)]:
        wr.add(arch + "." + key, G.UINT32, val)
    wr.add(arch + ".rope.freq_base", G.FLOAT32, BASE)
    wr.add(arch + ".attention.layer_norm_rms_epsilon", G.FLOAT32, EPS)
    wr.add("tokenizer.ggml.model", G.STRING, "llama")
    wr.add("tokenizer.ggml.tokens", G.ARRAY, (G.STRING, ["<unk>", "<s>", "</s>"] + ["t%d" % i for i in range(3, V)]))
    wr.add("tokenizer.ggml.scores", G.ARRAY, (G.FLOAT32, [0.0] * V))
    wr.add("tokenizer.ggml.token_type", G.ARRAY, (G.INT32, [2, 3, 3] + [1] * (V - 3)))
    for name, arr in w.items():
        if arch == "llama" and name.endswith(".bias"):
            continue
        wr.add_tensor(name, arr, G.F32)
    if arch == "llama":
        wr.add_tensor("rope_freqs.weight", FREQS, G.F32)
    wr.write(path)


ids = [1, 17, 200, 5, 99, 42, 3, 250, 8, 8, 120, 64]


def forward(neox, biases, freqs):
    f = {k: v.astype(np.float64) for k, v in w.items()}
    T = len(ids)
    x = f["token_embd.weight"][ids]
    pos = np.arange(T)
    half = HD // 2
    theta = BASE ** (-2.0 * np.arange(half) / HD)
    if freqs:
        theta = theta / FREQS.astype(np.float64)
    ang = pos[:, None] * theta[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(t):
        out = t.copy()
        if neox:
            a, b = t[..., :half], t[..., half:]
            out[..., :half], out[..., half:] = a * cos - b * sin, a * sin + b * cos
        else:
            a, b = t[..., 0::2], t[..., 1::2]
            out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    def rms(v, g):
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + EPS) * g

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(L):
        p = "blk.%d." % l
        h = rms(x, f[p + "attn_norm.weight"])
        bq, bk, bv = (f[p + n] if biases else 0.0 for n in ("attn_q.bias", "attn_k.bias", "attn_v.bias"))
        q = rope((h @ f[p + "attn_q.weight"].T + bq).reshape(T, H, HD))
        k = rope((h @ f[p + "attn_k.weight"].T + bk).reshape(T, KV, HD))
        v = (h @ f[p + "attn_v.weight"].T + bv).reshape(T, KV, HD)
        att = np.empty((T, H, HD))
        for hh in range(H):
            kh = hh // (H // KV)
            s = q[:, hh] @ k[:, kh].T / np.sqrt(HD) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            att[:, hh] = (s / s.sum(axis=1, keepdims=True)) @ v[:, kh]
        x = x + att.reshape(T, -1) @ f[p + "attn_output.weight"].T
        h = rms(x, f[p + "ffn_norm.weight"])
        g = h @ f[p + "ffn_gate.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ f[p + "ffn_up.weight"].T)) @ f[p + "ffn_down.weight"].T
    return rms(x, f["output_norm.weight"]) @ f["output.weight"].T


def worst(got, reference):
    d = 0.0
    for p in got["positions"]:
        for tok, logit in p["top"]:
            d = max(d, abs(logit - reference[p["pos"], tok]))
    return max(d, float(np.max(np.abs(np.array(got["last_logits"]) - reference[-1]))))


tmp = tempfile.mkdtemp()
failed = 0
# (arch, what herd must match, the same without the variant's feature)
cases = [("qwen2", dict(neox=True, biases=True, freqs=False), dict(neox=False, biases=True, freqs=False)),
         ("llama", dict(neox=False, biases=False, freqs=True), dict(neox=False, biases=False, freqs=False))]
for arch, right, without in cases:
    path = os.path.join(tmp, arch + ".gguf")
    write_model(arch, path)
    out = subprocess.run([herd, "eval", "-m", path, "--ids", ",".join(map(str, ids)), "--precise", "--top", "5"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print("%s: herd eval failed: %s" % (arch, out.stderr))
        failed += 1
        continue
    got = json.loads(out.stdout)
    d_ok, d_wrong = worst(got, forward(**right)), worst(got, forward(**without))
    print("%s: max |logit - reference| %.2e (tolerance 1e-3); without its feature the reference is %.2f away"
          % (arch, d_ok, d_wrong))
    if d_ok > 1e-3 or d_wrong < 0.1:
        failed += 1
print("architecture variants: %d passed, %d failed" % (len(cases) - failed, failed))
sys.exit(1 if failed else 0)

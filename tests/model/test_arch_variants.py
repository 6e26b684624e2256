#!/usr/bin/env python3
"""Architectures and variants the fixtures do not cover, each checked against
an independent float64 numpy forward pass written from the architecture's
published definition (Hugging Face's modeling code):
  - qwen2: NEOX-pair RoPE and Q/K/V biases;
  - llama with rope_freqs.weight (Llama 3.1 RoPE scaling: per-frequency divisors);
  - llama with attention.sliding_window (Mistral 7B v0.1): every layer sees
    the last W positions only;
  - qwen3: per-head RMSNorm of Q and K before RoPE, head size != n_embd / n_head;
  - gemma2: embeddings x sqrt(n_embd), GELU-tanh gate, norms after attention
    and FFN, attention and final logit soft-capping, sliding window on even
    layers, tied embeddings;
  - gemma3: gemma2's layout without soft-capping, Q/K norms, one global
    layer in six with its own RoPE base and linear scaling, base 10000 on the
    sliding ones;
  - phi3: Q, K, V in one attn_qkv matrix, gate and up in one ffn_up, sliding
    window on every layer; LongRoPE (Phi-3 128k): long or short per-frequency
    divisors by the context against the original one, cos and sin scaled by
    rope.scaling.attn_factor;
  - mixture of experts: mixtral (llama with 8 experts, top 2, weights
    renormalised), qwen2moe (top-k weights as they are, plus a shared
    expert behind a sigmoid gate), qwen3moe (Q/K norms, renormalised top 4
    of 16).
For each, writes a small random-weight GGUF (with ../shared/tools/gguf_fixture.py)
and compares `herd eval --precise` with the reference, with the whole prompt
in one pass and token by token (--batch 1: the decode path). Windows are
shorter than the prompt and cut through KV blocks. A reference with the
variant's feature removed must NOT match, which shows each comparison can fail.

usage: test_arch_variants.py HERD_BINARY SHARED_DIR
Exits 77 (skipped) without numpy or ../shared/tools."""
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("note: numpy is missing; skipping the architecture reference checks")
    sys.exit(77)

herd, shared = sys.argv[1], sys.argv[2]
tools = os.path.join(shared, "tools")
if not os.path.exists(os.path.join(tools, "gguf_fixture.py")):
    print("note: %s/gguf_fixture.py is absent; skipping the architecture reference checks" % tools)
    sys.exit(77)
sys.path.insert(0, tools)
import gguf_fixture as G  # noqa: E402

E, FF, V, EPS = 64, 128, 256, 1e-6
ids = [1, 17, 200, 5, 99, 42, 3, 250, 8, 8, 120, 64, 7, 19, 77, 130, 31, 2, 240, 66, 13, 150, 91, 4]


def case(arch, **kw):
    """A model's shape and features; keys not given take these defaults."""
    c = dict(arch=arch, layers=2, heads=4, kv=2, hd=16, base=10000.0, neox=True, biases=False, freqs=False,
             qk_norm=False, gemma=False, fused=False, window=0, swa_period=0, local_rope=False, linear=1.0,
             attn_cap=0.0, final_cap=0.0, tied=False, experts=0, used=0, ffe=48, norm=False, shexp=False,
             longrope=None)
    c.update(kw)
    return c


def weights(c, seed):
    rng = np.random.default_rng(seed)
    H, KV, HD, L = c["heads"], c["kv"], c["hd"], c["layers"]

    def nrm(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w = {"token_embd.weight": nrm((V, E), 0.6 / (np.sqrt(E) if c["gemma"] else 1)),
         "output_norm.weight": 1 + nrm((E,), 0.1)}
    if not c["tied"]:
        w["output.weight"] = nrm((V, E), 6 / np.sqrt(E))
    for l in range(L):
        p = "blk.%d." % l
        w[p + "attn_norm.weight"] = 1 + nrm((E,), 0.1)
        q = nrm((H * HD, E), 1.6 / np.sqrt(E))
        k = nrm((KV * HD, E), 1.6 / np.sqrt(E))
        v = nrm((KV * HD, E), 1.2 / np.sqrt(E))
        if c["fused"]:
            w[p + "attn_qkv.weight"] = np.concatenate([q, k, v])
        else:
            w[p + "attn_q.weight"], w[p + "attn_k.weight"], w[p + "attn_v.weight"] = q, k, v
        if c["biases"]:
            w[p + "attn_q.bias"] = nrm((H * HD,), 0.5)
            w[p + "attn_k.bias"] = nrm((KV * HD,), 0.5)
            w[p + "attn_v.bias"] = nrm((KV * HD,), 0.5)
        if c["qk_norm"]:
            w[p + "attn_q_norm.weight"] = 1 + nrm((HD,), 0.3)
            w[p + "attn_k_norm.weight"] = 1 + nrm((HD,), 0.3)
        w[p + "attn_output.weight"] = nrm((E, H * HD), 0.8 / np.sqrt(H * HD))
        w[p + "ffn_norm.weight"] = 1 + nrm((E,), 0.1)
        if c["experts"]:
            X, FE = c["experts"], c["ffe"]
            w[p + "ffn_gate_inp.weight"] = nrm((X, E), 2.0 / np.sqrt(E))
            w[p + "ffn_gate_exps.weight"] = nrm((X, FE, E), 0.8 / np.sqrt(E))
            w[p + "ffn_up_exps.weight"] = nrm((X, FE, E), 0.8 / np.sqrt(E))
            w[p + "ffn_down_exps.weight"] = nrm((X, E, FE), 1.2 / np.sqrt(FE))
            if c["shexp"]:
                w[p + "ffn_gate_inp_shexp.weight"] = nrm((E,), 1.0 / np.sqrt(E))
                w[p + "ffn_gate_shexp.weight"] = nrm((FF, E), 0.8 / np.sqrt(E))
                w[p + "ffn_up_shexp.weight"] = nrm((FF, E), 0.8 / np.sqrt(E))
                w[p + "ffn_down_shexp.weight"] = nrm((E, FF), 1.2 / np.sqrt(FF))
            continue
        gate, up = nrm((FF, E), 0.8 / np.sqrt(E)), nrm((FF, E), 0.8 / np.sqrt(E))
        if c["fused"]:
            w[p + "ffn_up.weight"] = np.concatenate([gate, up])
        else:
            w[p + "ffn_gate.weight"], w[p + "ffn_up.weight"] = gate, up
        w[p + "ffn_down.weight"] = nrm((E, FF), 1.2 / np.sqrt(FF))
        if c["gemma"]:
            w[p + "post_attention_norm.weight"] = 1 + nrm((E,), 0.2)
            w[p + "post_ffw_norm.weight"] = 1 + nrm((E,), 0.2)
    if c["freqs"]:
        w["rope_freqs.weight"] = (1.0 + 7.0 * rng.random(HD // 2)).astype(np.float32)
    if c["longrope"]:
        w["rope_factors_long.weight"] = (1.0 + 30.0 * rng.random(HD // 2)).astype(np.float32)
        w["rope_factors_short.weight"] = (1.0 + 0.5 * rng.random(HD // 2)).astype(np.float32)
    return w


def write_model(c, w, path):
    a = c["arch"]
    wr = G.GGUFWriter()
    wr.add("general.architecture", G.STRING, a)
    for key, val in [("context_length", 256), ("embedding_length", E), ("block_count", c["layers"]),
                     ("feed_forward_length", FF), ("attention.head_count", c["heads"]),
                     ("attention.head_count_kv", c["kv"])]:
        wr.add(a + "." + key, G.UINT32, val)
    if c["hd"] * c["heads"] != E:
        wr.add(a + ".attention.key_length", G.UINT32, c["hd"])
        wr.add(a + ".attention.value_length", G.UINT32, c["hd"])
    wr.add(a + ".rope.freq_base", G.FLOAT32, c["base"])
    wr.add(a + ".attention.layer_norm_rms_epsilon", G.FLOAT32, EPS)
    if c["window"]:
        wr.add(a + ".attention.sliding_window", G.UINT32, c["window"])
    if a == "gemma2":  # herd, like llama.cpp, defaults to 50 / 30 when absent
        wr.add(a + ".attn_logit_softcapping", G.FLOAT32, c["attn_cap"])
        wr.add(a + ".final_logit_softcapping", G.FLOAT32, c["final_cap"])
    if c["experts"]:
        wr.add(a + ".expert_count", G.UINT32, c["experts"])
        wr.add(a + ".expert_used_count", G.UINT32, c["used"])
        wr.add(a + ".expert_feed_forward_length", G.UINT32, c["ffe"])
        if c["shexp"]:
            wr.add(a + ".expert_shared_feed_forward_length", G.UINT32, FF)
        wr.add(a + ".expert_weights_norm", G.BOOL, c["norm"])
    if c["longrope"]:  # as llama.cpp's converter writes Phi-3 128k
        wr.add(a + ".rope.scaling.attn_factor", G.FLOAT32, c["longrope"][1])
        wr.add(a + ".rope.scaling.original_context_length", G.UINT32, c["longrope"][0])
    if c["linear"] != 1.0:
        wr.add(a + ".rope.scaling.type", G.STRING, "linear")
        wr.add(a + ".rope.scaling.factor", G.FLOAT32, c["linear"])
    wr.add("tokenizer.ggml.model", G.STRING, "llama")
    wr.add("tokenizer.ggml.tokens", G.ARRAY, (G.STRING, ["<unk>", "<s>", "</s>"] + ["t%d" % i for i in range(3, V)]))
    wr.add("tokenizer.ggml.scores", G.ARRAY, (G.FLOAT32, [0.0] * V))
    wr.add("tokenizer.ggml.token_type", G.ARRAY, (G.INT32, [2, 3, 3] + [1] * (V - 3)))
    for name, arr in w.items():
        wr.add_tensor(name, arr, G.F32)
    wr.write(path)


def forward(c, w):
    f = {k: v.astype(np.float64) for k, v in w.items()}
    H, KV, HD, L = c["heads"], c["kv"], c["hd"], c["layers"]
    T = len(ids)
    x = f["token_embd.weight"][ids]
    if c["gemma"]:
        x = x * np.sqrt(E)
    pos = np.arange(T)
    half = HD // 2

    def angles(base, scale):
        theta = base ** (-2.0 * np.arange(half) / HD) / scale
        if c["freqs"]:
            theta = theta / f["rope_freqs.weight"]
        mscale = 1.0
        if c["longrope"]:  # llama.cpp's choice: long factors when the context (herd eval: the ids) exceeds the original
            orig, mscale = c["longrope"]
            theta = theta / f["rope_factors_long.weight" if T > orig else "rope_factors_short.weight"]
        ang = pos[:, None] * theta[None, :]
        return mscale * np.cos(ang)[:, None, :], mscale * np.sin(ang)[:, None, :]

    global_cs = angles(c["base"], c["linear"])
    local_cs = angles(10000.0, 1.0) if c["local_rope"] else global_cs

    def rope(t, cs):
        cos, sin = cs
        out = t.copy()
        if c["neox"]:
            a, b = t[..., :half], t[..., half:]
            out[..., :half], out[..., half:] = a * cos - b * sin, a * sin + b * cos
        else:
            a, b = t[..., 0::2], t[..., 1::2]
            out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    def rms(v, g):
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + EPS) * g

    def cap(s, limit):
        return limit * np.tanh(s / limit) if limit else s

    causal = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(L):
        p = "blk.%d." % l
        slides = c["window"] and (c["swa_period"] == 0 or (l + 1) % c["swa_period"] != 0)
        mask = causal.copy()
        if slides:  # key j is seen from i when i - j < window
            mask[np.subtract.outer(pos, pos) >= c["window"]] = -np.inf
        h = rms(x, f[p + "attn_norm.weight"])
        if c["fused"]:
            qkv = h @ f[p + "attn_qkv.weight"].T
            q, k, v = np.split(qkv, [H * HD, H * HD + KV * HD], axis=1)
        else:
            q, k, v = (h @ f[p + n].T for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight"))
        if c["biases"]:
            q, k, v = q + f[p + "attn_q.bias"], k + f[p + "attn_k.bias"], v + f[p + "attn_v.bias"]
        q, k, v = q.reshape(T, H, HD), k.reshape(T, KV, HD), v.reshape(T, KV, HD)
        if c["qk_norm"]:
            q, k = rms(q, f[p + "attn_q_norm.weight"]), rms(k, f[p + "attn_k_norm.weight"])
        cs = local_cs if slides else global_cs
        q, k = rope(q, cs), rope(k, cs)
        att = np.empty((T, H, HD))
        for hh in range(H):
            kh = hh // (H // KV)
            s = cap(q[:, hh] @ k[:, kh].T / np.sqrt(HD), c["attn_cap"]) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            att[:, hh] = (s / s.sum(axis=1, keepdims=True)) @ v[:, kh]
        o = att.reshape(T, -1) @ f[p + "attn_output.weight"].T
        x = x + (rms(o, f[p + "post_attention_norm.weight"]) if c["gemma"] else o)
        h = rms(x, f[p + "ffn_norm.weight"])
        if c["experts"]:
            x = x + moe(c, f, p, h)
            continue
        if c["fused"]:
            g, u = np.split(h @ f[p + "ffn_up.weight"].T, 2, axis=1)
        else:
            g, u = h @ f[p + "ffn_gate.weight"].T, h @ f[p + "ffn_up.weight"].T
        if c["gemma"]:
            act = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3)))
        else:
            act = g / (1 + np.exp(-g))
        o = (act * u) @ f[p + "ffn_down.weight"].T
        x = x + (rms(o, f[p + "post_ffw_norm.weight"]) if c["gemma"] else o)
    out = f["token_embd.weight"] if c["tied"] else f["output.weight"]
    return cap(rms(x, f["output_norm.weight"]) @ out.T, c["final_cap"])


def silu_ffn(h, gate, up, down):
    g = h @ gate.T
    return ((g / (1 + np.exp(-g))) * (h @ up.T)) @ down.T


def moe(c, f, p, h):
    logits = h @ f[p + "ffn_gate_inp.weight"].T
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    out = np.zeros_like(h)
    for t in range(h.shape[0]):
        top = np.argsort(-probs[t], kind="stable")[:c["used"]]
        wt = probs[t, top] / (probs[t, top].sum() if c["norm"] else 1.0)
        for e, we in zip(top, wt):
            out[t] += we * silu_ffn(h[t], f[p + "ffn_gate_exps.weight"][e], f[p + "ffn_up_exps.weight"][e],
                                    f[p + "ffn_down_exps.weight"][e])
    if c["shexp"]:
        gate = 1 / (1 + np.exp(-(h @ f[p + "ffn_gate_inp_shexp.weight"])))
        out += gate[:, None] * silu_ffn(h, f[p + "ffn_gate_shexp.weight"], f[p + "ffn_up_shexp.weight"],
                                        f[p + "ffn_down_shexp.weight"])
    return out


def worst(got, reference):
    d = 0.0
    for p in got["positions"]:
        for tok, logit in p["top"]:
            d = max(d, abs(logit - reference[p["pos"], tok]))
    return max(d, float(np.max(np.abs(np.array(got["last_logits"]) - reference[-1]))))


# (name, the model, the same without the variant's feature)
cases = [
    ("qwen2", case("qwen2", biases=True, base=1000000.0), dict(neox=False)),
    ("llama rope_freqs", case("llama", neox=False, freqs=True, base=1000000.0), dict(freqs=False)),
    ("llama sliding window (mistral)", case("llama", neox=False, window=5), dict(window=0)),
    ("qwen3", case("qwen3", hd=32, qk_norm=True, base=1000000.0), dict(qk_norm=False)),
    ("gemma2", case("gemma2", gemma=True, window=6, swa_period=2, attn_cap=3.0, final_cap=4.0, tied=True),
     dict(attn_cap=0.0)),
    ("gemma2 window", case("gemma2", gemma=True, window=6, swa_period=2, attn_cap=3.0, final_cap=4.0, tied=True),
     dict(window=0)),
    ("gemma2 final cap", case("gemma2", gemma=True, window=6, swa_period=2, attn_cap=3.0, final_cap=4.0, tied=True),
     dict(final_cap=0.0)),
    ("gemma3", case("gemma3", layers=6, hd=32, qk_norm=True, gemma=True, window=7, swa_period=6, local_rope=True,
                    base=1000000.0, linear=8.0, tied=True), dict(local_rope=False)),
    ("gemma3 linear rope", case("gemma3", layers=6, hd=32, qk_norm=True, gemma=True, window=7, swa_period=6,
                                local_rope=True, base=1000000.0, linear=8.0, tied=True), dict(linear=1.0)),
    ("phi3", case("phi3", fused=True, window=9), dict(window=0)),
    ("phi3 LongRoPE, long factors", case("phi3", fused=True, window=9, longrope=(16, 1.19)), dict(longrope=(4096, 1.19))),
    ("phi3 LongRoPE, short factors", case("phi3", fused=True, window=9, longrope=(4096, 1.19)), dict(longrope=(16, 1.19))),
    ("phi3 LongRoPE attn_factor", case("phi3", fused=True, window=9, longrope=(16, 1.19)), dict(longrope=(16, 1.0))),
    ("mixtral", case("llama", neox=False, experts=8, used=2, norm=True), dict(norm=False)),
    ("qwen2moe", case("qwen2moe", biases=True, experts=8, used=2, shexp=True), dict(shexp=False)),
    ("qwen2moe top-k weights", case("qwen2moe", biases=True, experts=8, used=2, shexp=True), dict(norm=True)),
    ("qwen3moe", case("qwen3moe", hd=32, qk_norm=True, experts=16, used=4, norm=True, ffe=32), dict(used=3)),
]

tmp = tempfile.mkdtemp()
failed = 0
for seed, (name, c, without) in enumerate(cases):
    w = weights(c, seed + 7)
    path = os.path.join(tmp, "m%d.gguf" % seed)
    write_model(c, w, path)
    reference, other = forward(c, w), forward(dict(c, **without), w)
    for batch in (64, 1):
        out = subprocess.run([herd, "eval", "-m", path, "--ids", ",".join(map(str, ids)), "--precise", "--top", "5",
                              "--batch", str(batch)], capture_output=True, text=True)
        if out.returncode != 0:
            print("%s: herd eval failed: %s" % (name, out.stderr.strip()))
            failed += 1
            continue
        got = json.loads(out.stdout)
        d_ok, d_wrong = worst(got, reference), worst(got, other)
        print("%s, %d token(s) a pass: max |logit - reference| %.2e (tolerance 1e-3); without %s the reference is "
              "%.2f away" % (name, batch, d_ok, ", ".join(without), d_wrong))
        if d_ok > 1e-3 or d_wrong < 0.1:
            failed += 1
print("architecture variants: %d checks failed of %d" % (failed, 2 * len(cases)))
sys.exit(1 if failed else 0)

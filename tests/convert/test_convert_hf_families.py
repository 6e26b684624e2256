#!/usr/bin/env python3
"""`herd convert hf` on each model family's Hugging Face layout, checked against
a float64 forward pass written from Hugging Face's modeling code that runs on
the safetensors tensors themselves (their names, their row order, Gemma's
stored w of 1 + w, Phi-3's fused matrices, one matrix per expert), so every
transform of the converter is checked independently of GGUF:
  - mistral: llama with a sliding window (Q/K rows permuted for GGUF llama);
  - mixtral: block_sparse_moe.gate and experts.N.w1 / w3 / w2 stacked;
  - qwen3: per-head q_norm / k_norm, head_dim from the config (F16 weights);
  - qwen2moe: mlp.gate, mlp.experts.N.*, the shared expert behind
    shared_expert_gate, norm_topk_prob false;
  - qwen3moe: Q/K norms, moe_intermediate_size, norm_topk_prob true;
  - gemma2: every norm stored as w (GGUF gets 1 + w), four norms a layer,
    embeddings x sqrt(hidden_size), GELU-tanh, attention and final
    soft-capping, a window on even layers, query_pre_attn_scalar != head_dim
    (attention.scale), BF16 weights, tied embeddings;
  - gemma3: Q/K norms (also 1 + w), one global layer in six at rope_theta
    with linear scaling, sliding ones at rope_local_base_freq; and the
    multimodal checkpoint's text model (text_config filled with
    Gemma3TextConfig's defaults, tensors under language_model.model. or
    model.language_model., the vision tower's left out);
  - phi3: qkv_proj and gate_up_proj kept fused, a window on every layer;
    LongRoPE (long and short factors, attention factor).
Each family's folder (config.json, model.safetensors written here, the
tokenizer of ../shared's tinystories-656k) is converted, then `herd eval
--precise` (whole prompt and token by token) must be within 1e-3 of the
reference, and a reference with one transform or feature left out (the Gemma
+1, the permutation, a swapped gate/up, the shared expert's gate, ...) must be
more than 0.1 away, which shows each comparison can fail. The GGUF's
metadata keys and tensor names, shapes and types are checked against what
llama.cpp's converter writes. Configs with features herd does not run are
refused with a message naming them, and leave no file.

usage: test_convert_hf_families.py HERD_BINARY SHARED_DIR
Exits 77 (skipped) without numpy or ../shared."""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("note: numpy is missing; skipping the Hugging Face family conversion checks")
    sys.exit(77)

herd, shared = sys.argv[1], sys.argv[2]
tok_dir = os.path.join(shared, "fixtures", "models", "tinystories-656k")
tools = os.path.join(shared, "tools")
if not os.path.exists(os.path.join(tok_dir, "tokenizer.json")) or \
        not os.path.exists(os.path.join(tools, "gguf_fixture.py")):
    print("note: %s or %s/gguf_fixture.py is absent (no ../shared); skipping" % (tok_dir, tools))
    sys.exit(77)
sys.path.insert(0, tools)
import gguf_fixture as G  # noqa: E402

E, FF, EPS = 64, 96, 1e-6
V = 2048  # tinystories-656k's tokenizer
ids = [1, 17, 200, 5, 99, 42, 3, 250, 8, 8, 1200, 64, 7, 19, 77, 130, 31, 2, 2040, 66, 13, 150, 91, 4]
T = len(ids)

failures = 0


def check(ok, what):
    global failures
    if not ok:
        failures += 1
        print("FAIL: " + what)


# ---------------------------------------------------------------- safetensors

def bf16_round(a):
    """float32 -> bfloat16 bits, round to nearest even (torch's rounding)."""
    u = a.astype("<f4").view("<u4").astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")


def encode(a, dtype):
    """(bytes as stored, the values they hold as float64)"""
    if dtype == "F32":
        raw = a.astype("<f4")
        return raw.tobytes(), raw.astype(np.float64)
    if dtype == "F16":
        raw = a.astype("<f2")
        return raw.tobytes(), raw.astype(np.float64)
    bits = bf16_round(a)
    return bits.tobytes(), (bits.astype(np.uint32) << 16).view("<f4").astype(np.float64)


def write_safetensors(path, tensors, dtype):
    """tensors: name -> float32 array. Returns name -> float64 values as stored."""
    header, blobs, values, off = {}, [], {}, 0
    for name in sorted(tensors):
        raw, values[name] = encode(tensors[name], dtype)
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return values


# ---------------------------------------------------------------- the families

def family(arch, model_type, **kw):
    """config.json for a small model of this architecture"""
    c = dict(architectures=[arch], model_type=model_type, hidden_size=E, intermediate_size=FF,
             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
             rms_norm_eps=EPS, rope_theta=10000.0, vocab_size=V, hidden_act="silu", tie_word_embeddings=False,
             bos_token_id=1, eos_token_id=2)
    c.update(kw)
    return c


def head_dim(c):
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def weights(c, seed):
    """Random Hugging Face tensors, named as the family's modeling code names them."""
    rng = np.random.default_rng(seed)
    arch = c["architectures"][0]
    gemma, phi3 = arch.startswith("Gemma"), arch.startswith("Phi3")
    H, KV, HD, L = c["num_attention_heads"], c["num_key_value_heads"], head_dim(c), c["num_hidden_layers"]

    def nrm(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def norm_w(n):  # Gemma stores w for a scale of 1 + w
        return nrm((n,), 0.3) if gemma else 1 + nrm((n,), 0.1)

    w = {"model.embed_tokens.weight": nrm((V, E), 0.6 / (np.sqrt(E) if gemma else 1)), "model.norm.weight": norm_w(E)}
    if not c.get("tie_word_embeddings"):
        w["lm_head.weight"] = nrm((V, E), 6 / np.sqrt(E))
    for l in range(L):
        p = "model.layers.%d." % l
        w[p + "input_layernorm.weight"] = norm_w(E)
        w[p + "post_attention_layernorm.weight"] = norm_w(E)
        q = nrm((H * HD, E), 1.6 / np.sqrt(E))
        k = nrm((KV * HD, E), 1.6 / np.sqrt(E))
        v = nrm((KV * HD, E), 1.2 / np.sqrt(E))
        if phi3:
            w[p + "self_attn.qkv_proj.weight"] = np.concatenate([q, k, v])
        else:
            w[p + "self_attn.q_proj.weight"], w[p + "self_attn.k_proj.weight"] = q, k
            w[p + "self_attn.v_proj.weight"] = v
        if arch.startswith("Qwen2"):
            w[p + "self_attn.q_proj.bias"] = nrm((H * HD,), 0.5)
            w[p + "self_attn.k_proj.bias"] = nrm((KV * HD,), 0.5)
            w[p + "self_attn.v_proj.bias"] = nrm((KV * HD,), 0.5)
        if arch.startswith("Qwen3") or arch.startswith("Gemma3"):
            w[p + "self_attn.q_norm.weight"] = nrm((HD,), 0.3) if gemma else 1 + nrm((HD,), 0.3)
            w[p + "self_attn.k_norm.weight"] = nrm((HD,), 0.3) if gemma else 1 + nrm((HD,), 0.3)
        w[p + "self_attn.o_proj.weight"] = nrm((E, H * HD), 0.8 / np.sqrt(H * HD))
        if gemma:
            w[p + "pre_feedforward_layernorm.weight"] = norm_w(E)
            w[p + "post_feedforward_layernorm.weight"] = norm_w(E)
        if arch == "MixtralForCausalLM":
            X = c["num_local_experts"]
            w[p + "block_sparse_moe.gate.weight"] = nrm((X, E), 2.0 / np.sqrt(E))
            for e in range(X):
                q = p + "block_sparse_moe.experts.%d." % e
                w[q + "w1.weight"] = nrm((FF, E), 0.8 / np.sqrt(E))
                w[q + "w3.weight"] = nrm((FF, E), 0.8 / np.sqrt(E))
                w[q + "w2.weight"] = nrm((E, FF), 1.2 / np.sqrt(FF))
            continue
        if "Moe" in arch:
            X, FE = c["num_experts"], c["moe_intermediate_size"]
            w[p + "mlp.gate.weight"] = nrm((X, E), 2.0 / np.sqrt(E))
            for e in range(X):
                q = p + "mlp.experts.%d." % e
                w[q + "gate_proj.weight"] = nrm((FE, E), 0.8 / np.sqrt(E))
                w[q + "up_proj.weight"] = nrm((FE, E), 0.8 / np.sqrt(E))
                w[q + "down_proj.weight"] = nrm((E, FE), 1.2 / np.sqrt(FE))
            if "shared_expert_intermediate_size" in c:
                FS = c["shared_expert_intermediate_size"]
                w[p + "mlp.shared_expert_gate.weight"] = nrm((1, E), 1.0 / np.sqrt(E))
                w[p + "mlp.shared_expert.gate_proj.weight"] = nrm((FS, E), 0.8 / np.sqrt(E))
                w[p + "mlp.shared_expert.up_proj.weight"] = nrm((FS, E), 0.8 / np.sqrt(E))
                w[p + "mlp.shared_expert.down_proj.weight"] = nrm((E, FS), 1.2 / np.sqrt(FS))
            continue
        gate, up = nrm((FF, E), 0.8 / np.sqrt(E)), nrm((FF, E), 0.8 / np.sqrt(E))
        if phi3:
            w[p + "mlp.gate_up_proj.weight"] = np.concatenate([gate, up])
        else:
            w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"] = gate, up
        w[p + "mlp.down_proj.weight"] = nrm((E, FF), 1.2 / np.sqrt(FF))
    return w


# ---------------------------------------------------------------- the reference

def forward(c, w, off=()):
    """Logits [T, V] of Hugging Face's modeling code for config c on the
    tensors w (float64), with the features named in off left out."""
    arch = c["architectures"][0]
    gemma, gemma3, phi3 = arch.startswith("Gemma"), arch.startswith("Gemma3"), arch.startswith("Phi3")
    H, KV, HD, L = c["num_attention_heads"], c["num_key_value_heads"], head_dim(c), c["num_hidden_layers"]
    half = HD // 2
    x = w["model.embed_tokens.weight"][ids]
    if gemma:
        x = x * np.sqrt(c["hidden_size"])
    pos = np.arange(T)

    def scale(g, qk=False):  # Gemma's RMSNorm multiplies by 1 + w
        if not gemma or "plus one" in off or (qk and "plus one on q/k norms" in off):
            return g
        return 1 + g

    def rms(v, g, qk=False):
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + c["rms_norm_eps"]) * scale(g, qk)

    def angles(base, rope_scaling):
        inv = base ** (-np.arange(0, HD, 2) / HD)
        mscale = 1.0
        rs = rope_scaling or {}
        if rs.get("rope_type", rs.get("type")) == "linear" and "linear scaling" not in off:
            inv = inv / rs["factor"]
        if rs.get("type") == "longrope":
            orig = c["original_max_position_embeddings"]
            long = (T > orig) != ("factor choice" in off)
            inv = inv / np.array(rs["long_factor" if long else "short_factor"])
            factor = c["max_position_embeddings"] / orig
            if factor > 1 and "attention factor" not in off:
                mscale = np.sqrt(1 + np.log(factor) / np.log(orig))
        ang = pos[:, None] * inv[None, :]
        return mscale * np.cos(ang)[:, None, :], mscale * np.sin(ang)[:, None, :]

    def rope(t, cs):
        cos, sin = cs
        out = t.copy()
        if "permutation" in off:  # what skipping the llama permutation computes: adjacent pairs of HF's rows
            a, b = t[..., 0::2], t[..., 1::2]
            out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        else:  # rotate_half
            a, b = t[..., :half], t[..., half:]
            out[..., :half], out[..., half:] = a * cos - b * sin, a * sin + b * cos
        return out

    def cap(s, limit):
        return limit * np.tanh(s / limit) if limit and "softcap" not in off else s

    global_cs = angles(c.get("rope_theta", 10000.0), c.get("rope_scaling"))
    local_cs = angles(c.get("rope_local_base_freq", 10000.0), None) if gemma3 and "local base" not in off \
        else global_cs
    window = c.get("sliding_window") if "window" not in off else None
    qscale = c.get("query_pre_attn_scalar", HD) ** -0.5 if gemma and "query scale" not in off else HD ** -0.5
    causal = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(L):
        p = "model.layers.%d." % l
        slides = window and (not gemma or (gemma3 and (l + 1) % 6 != 0) or (not gemma3 and l % 2 == 0))
        mask = causal.copy()
        if slides:  # key j is seen from i when i - j < window
            mask[np.subtract.outer(pos, pos) >= window] = -np.inf
        h = rms(x, w[p + "input_layernorm.weight"])
        if phi3:
            q, k, v = np.split(h @ w[p + "self_attn.qkv_proj.weight"].T, [H * HD, H * HD + KV * HD], axis=1)
        else:
            q, k, v = (h @ w[p + "self_attn.%s_proj.weight" % n].T for n in "qkv")
        if p + "self_attn.q_proj.bias" in w:
            q, k, v = (t + w[p + "self_attn.%s_proj.bias" % n] for t, n in zip((q, k, v), "qkv"))
        q, k, v = q.reshape(T, H, HD), k.reshape(T, KV, HD), v.reshape(T, KV, HD)
        if p + "self_attn.q_norm.weight" in w and "q/k norms" not in off:
            q, k = rms(q, w[p + "self_attn.q_norm.weight"], True), rms(k, w[p + "self_attn.k_norm.weight"], True)
        cs = local_cs if slides else global_cs
        q, k = rope(q, cs), rope(k, cs)
        att = np.empty((T, H, HD))
        for hh in range(H):
            kh = hh // (H // KV)
            s = cap(q[:, hh] @ k[:, kh].T * qscale, c.get("attn_logit_softcapping")) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            att[:, hh] = (s / s.sum(axis=1, keepdims=True)) @ v[:, kh]
        o = att.reshape(T, -1) @ w[p + "self_attn.o_proj.weight"].T
        if gemma:
            x = x + rms(o, w[p + "post_attention_layernorm.weight"])
            h = rms(x, w[p + "pre_feedforward_layernorm.weight"])
        else:
            x = x + o
            h = rms(x, w[p + "post_attention_layernorm.weight"])
        if arch == "MixtralForCausalLM" or "Moe" in arch:
            x = x + moe(c, w, p, h, off)
            continue
        if phi3:
            g, u = np.split(h @ w[p + "mlp.gate_up_proj.weight"].T, 2, axis=1)
            if "swap gate/up" in off:
                g, u = u, g
        else:
            g, u = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        if gemma:
            act = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3)))
        else:
            act = g / (1 + np.exp(-g))
        o = (act * u) @ w[p + "mlp.down_proj.weight"].T
        x = x + (rms(o, w[p + "post_feedforward_layernorm.weight"]) if gemma else o)
    head = w["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else w["lm_head.weight"]
    return cap(rms(x, w["model.norm.weight"]) @ head.T, c.get("final_logit_softcapping"))


def moe(c, w, p, h, off):
    """Mixtral's and Qwen's sparse MoE blocks: softmax over the router's
    logits, top k, renormalised (always for Mixtral, as norm_topk_prob says
    for Qwen), plus Qwen2-MoE's shared expert behind a sigmoid gate."""
    mixtral = c["architectures"][0] == "MixtralForCausalLM"
    k = c["num_experts_per_tok"]
    router = w[p + ("block_sparse_moe.gate.weight" if mixtral else "mlp.gate.weight")]
    logits = h @ router.T
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    norm = mixtral or c.get("norm_topk_prob", False)
    if "norm_topk_prob" in off:
        norm = not norm
    names = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    if "swap gate/up" in off:
        names = (names[1], names[0], names[2])
    out = np.zeros_like(h)
    for t in range(h.shape[0]):
        top = np.argsort(-probs[t], kind="stable")[:k]
        wt = probs[t, top] / (probs[t, top].sum() if norm else 1.0)
        for e, we in zip(top, wt):
            q = p + ("block_sparse_moe" if mixtral else "mlp") + ".experts.%d." % e
            g = h[t] @ w[q + names[0] + ".weight"].T
            out[t] += we * (((g / (1 + np.exp(-g))) * (h[t] @ w[q + names[1] + ".weight"].T))
                            @ w[q + names[2] + ".weight"].T)
    if p + "mlp.shared_expert_gate.weight" in w:
        s = p + "mlp.shared_expert."
        g = h @ w[s + "gate_proj.weight"].T
        shared = ((g / (1 + np.exp(-g))) * (h @ w[s + "up_proj.weight"].T)) @ w[s + "down_proj.weight"].T
        gate = 1 / (1 + np.exp(-(h @ w[p + "mlp.shared_expert_gate.weight"].T)))
        out += shared if "shared expert gate" in off else gate * shared
    return out


# ---------------------------------------------------------------- the GGUF

F32, F16, Q8_0, BF16 = 0, 1, 8, 30
TYPE_OF = {"F32": F32, "F16": F16, "BF16": BF16, "Q8_0": Q8_0}


def expected_tensors(c, mat):
    """name -> (ne, type) as llama.cpp's converter writes the family: vectors,
    norms and the router F32, matrices in the output type (F32 where a row is
    not a whole number of Q8_0 blocks: herd's fallback, llama.cpp's is F16)."""
    arch = c["architectures"][0]
    gemma, phi3, moe = arch.startswith("Gemma"), arch.startswith("Phi3"), "num_experts_per_tok" in c
    H, KV, HD = c["num_attention_heads"], c["num_key_value_heads"], head_dim(c)
    q, kv = H * HD, KV * HD
    t = {"token_embd.weight": ((E, V), mat), "output_norm.weight": ((E,), F32)}
    if not c.get("tie_word_embeddings"):
        t["output.weight"] = ((E, V), mat)
    if (c.get("rope_scaling") or {}).get("type") == "longrope":
        t["rope_factors_long.weight"] = t["rope_factors_short.weight"] = ((HD // 2,), F32)
    for l in range(c["num_hidden_layers"]):
        b = "blk.%d." % l
        t[b + "attn_norm.weight"] = t[b + "ffn_norm.weight"] = ((E,), F32)
        if phi3:
            t[b + "attn_qkv.weight"] = ((E, q + 2 * kv), mat)
        else:
            t[b + "attn_q.weight"], t[b + "attn_k.weight"], t[b + "attn_v.weight"] = \
                ((E, q), mat), ((E, kv), mat), ((E, kv), mat)
        if arch.startswith("Qwen2"):
            t[b + "attn_q.bias"], t[b + "attn_k.bias"], t[b + "attn_v.bias"] = ((q,), F32), ((kv,), F32), ((kv,), F32)
        if arch.startswith("Qwen3") or arch.startswith("Gemma3"):
            t[b + "attn_q_norm.weight"] = t[b + "attn_k_norm.weight"] = ((HD,), F32)
        t[b + "attn_output.weight"] = ((q, E), mat)
        if gemma:
            t[b + "post_attention_norm.weight"] = t[b + "post_ffw_norm.weight"] = ((E,), F32)
        if moe:
            X = c.get("num_experts") or c["num_local_experts"]
            FE = c.get("moe_intermediate_size", FF)
            t[b + "ffn_gate_inp.weight"] = ((E, X), F32)
            t[b + "ffn_gate_exps.weight"] = t[b + "ffn_up_exps.weight"] = ((E, FE, X), mat)
            t[b + "ffn_down_exps.weight"] = ((FE, E, X), mat)
            if "shared_expert_intermediate_size" in c:
                FS = c["shared_expert_intermediate_size"]
                t[b + "ffn_gate_inp_shexp.weight"] = ((E, 1), mat)
                t[b + "ffn_gate_shexp.weight"] = t[b + "ffn_up_shexp.weight"] = ((E, FS), mat)
                t[b + "ffn_down_shexp.weight"] = ((FS, E), mat)
        elif phi3:
            t[b + "ffn_up.weight"], t[b + "ffn_down.weight"] = ((E, 2 * FF), mat), ((FF, E), mat)
        else:
            t[b + "ffn_gate.weight"] = t[b + "ffn_up.weight"] = ((E, FF), mat)
            t[b + "ffn_down.weight"] = ((FF, E), mat)
    return {n: (ne, F32 if ty == Q8_0 and ne[0] % 32 else ty) for n, (ne, ty) in t.items()}


def check_gguf(name, path, c, mat, keys):
    g = G.GGUFFile(path)
    got = {n: (tuple(i["ne"]), i["type"]) for n, i in g.tensors.items()}
    want = expected_tensors(c, mat)
    for n in sorted(set(got) | set(want)):
        check(got.get(n) == want.get(n), "%s: tensor %s is %s, want %s" % (name, n, got.get(n), want.get(n)))
    for k, v in keys.items():
        have = g.get(k)
        ok = (have is None) if v is None else \
            (have is not None and (abs(have - v) <= 1e-6 * abs(v) if isinstance(v, float) else have == v))
        check(ok, "%s: key %s = %r, want %r" % (name, k, have, v))


# ---------------------------------------------------------------- the cases

def run(*args):
    return subprocess.run([herd] + list(args), capture_output=True, text=True, timeout=120)


def write_folder(d, c, w, dtype):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({k: v for k, v in c.items() if v is not None or k.endswith("softcapping")}, f, indent=1)
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(os.path.join(tok_dir, f), d)
    return write_safetensors(os.path.join(d, "model.safetensors"), w, dtype)


def worst(got, reference):
    d = 0.0
    for p in got["positions"]:
        for tok, logit in p["top"]:
            d = max(d, abs(logit - reference[p["pos"], tok]))
    return max(d, float(np.max(np.abs(np.array(got["last_logits"]) - reference[-1]))))


def herd_eval(path, batch):
    r = run("eval", "-m", path, "--ids", ",".join(map(str, ids)), "--precise", "--top", "5", "--batch", str(batch))
    return json.loads(r.stdout) if r.returncode == 0 else r.stderr.strip()


rng = np.random.default_rng(1)
longrope = dict(type="longrope", long_factor=list(1.0 + 30.0 * rng.random(8)),
                short_factor=list(1.0 + 0.5 * rng.random(8)))
gemma_kw = dict(hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True)
moe_kw = dict(decoder_sparse_step=1, mlp_only_layers=[])

# (name, config, weight dtype, features the reference leaves out one at a time, GGUF keys: value or None for absent)
cases = [
    ("mistral", family("MistralForCausalLM", "mistral", sliding_window=5), "F32", ["window", "permutation"],
     {"general.architecture": "llama", "llama.attention.sliding_window": 5, "llama.attention.key_length": None}),
    ("mixtral", family("MixtralForCausalLM", "mixtral", num_local_experts=4, num_experts_per_tok=2,
                       sliding_window=None), "F32", ["swap gate/up", "norm_topk_prob", "permutation"],
     {"llama.expert_count": 4, "llama.expert_used_count": 2, "llama.feed_forward_length": FF,
      "llama.attention.sliding_window": None, "llama.expert_weights_norm": None}),
    ("qwen3", family("Qwen3ForCausalLM", "qwen3", head_dim=32, rope_theta=1000000.0, use_sliding_window=False,
                     sliding_window=None), "F16", ["q/k norms"],
     {"qwen3.attention.key_length": 32, "qwen3.attention.value_length": 32, "qwen3.rope.dimension_count": 32,
      "qwen3.rope.freq_base": 1000000.0}),
    ("qwen2moe", family("Qwen2MoeForCausalLM", "qwen2_moe", num_experts=8, num_experts_per_tok=2,
                        moe_intermediate_size=48, shared_expert_intermediate_size=80, norm_topk_prob=False, **moe_kw),
     "F32", ["shared expert gate", "norm_topk_prob", "swap gate/up"],
     {"qwen2moe.expert_count": 8, "qwen2moe.expert_used_count": 2, "qwen2moe.expert_feed_forward_length": 48,
      "qwen2moe.expert_shared_feed_forward_length": 80, "qwen2moe.expert_weights_norm": False}),
    ("qwen3moe", family("Qwen3MoeForCausalLM", "qwen3_moe", head_dim=32, num_experts=16, num_experts_per_tok=4,
                        moe_intermediate_size=32, norm_topk_prob=True, **moe_kw), "BF16",
     ["norm_topk_prob", "q/k norms"],
     {"qwen3moe.expert_count": 16, "qwen3moe.expert_used_count": 4, "qwen3moe.expert_feed_forward_length": 32,
      "qwen3moe.expert_weights_norm": True, "qwen3moe.attention.key_length": 32}),
    ("gemma2", family("Gemma2ForCausalLM", "gemma2", head_dim=16, query_pre_attn_scalar=64, sliding_window=6,
                      attn_logit_softcapping=3.0, final_logit_softcapping=4.0, **gemma_kw), "BF16",
     ["plus one", "softcap", "window", "query scale"],
     {"gemma2.attention.sliding_window": 6, "gemma2.attn_logit_softcapping": 3.0,
      "gemma2.final_logit_softcapping": 4.0, "gemma2.attention.key_length": 16,
      "gemma2.attention.scale": 0.125}),
    ("gemma3", family("Gemma3ForCausalLM", "gemma3_text", num_hidden_layers=6, head_dim=32, query_pre_attn_scalar=32,
                      sliding_window=7, sliding_window_pattern=6, rope_theta=1000000.0, rope_local_base_freq=10000.0,
                      rope_scaling=dict(rope_type="linear", factor=8.0), attn_logit_softcapping=None,
                      final_logit_softcapping=None, **gemma_kw), "F32",
     ["plus one", "plus one on q/k norms", "local base", "linear scaling"],
     {"gemma3.attention.sliding_window": 7, "gemma3.rope.scaling.type": "linear", "gemma3.rope.scaling.factor": 8.0,
      "gemma3.rope.freq_base": 1000000.0, "gemma3.attention.key_length": 32, "gemma3.attention.scale": None,
      "gemma3.attn_logit_softcapping": None}),
    ("phi3", family("Phi3ForCausalLM", "phi3", sliding_window=9, original_max_position_embeddings=256), "F32",
     ["swap gate/up", "window"],
     {"phi3.attention.sliding_window": 9, "phi3.rope.scaling.original_context_length": 256,
      "phi3.rope.scaling.attn_factor": None}),
    ("phi3 LongRoPE, long factors", family("Phi3ForCausalLM", "phi3", sliding_window=9, max_position_embeddings=512,
                                           original_max_position_embeddings=16, rope_scaling=longrope), "F32",
     ["factor choice", "attention factor"],
     {"phi3.rope.scaling.original_context_length": 16, "phi3.rope.scaling.attn_factor": 1.5}),
    ("phi3 LongRoPE, short factors", family("Phi3ForCausalLM", "phi3", sliding_window=None,
                                            max_position_embeddings=131072, original_max_position_embeddings=4096,
                                            rope_scaling=longrope), "F32", ["factor choice", "attention factor"],
     {"phi3.attention.sliding_window": 0, "phi3.context_length": 131072}),
]

tmp = tempfile.mkdtemp(prefix="herd-hf-families-")
folders = {}
for seed, (name, c, dtype, offs, keys) in enumerate(cases):
    d = os.path.join(tmp, name.replace(" ", "_").replace(",", ""))
    w = weights(c, seed + 11)
    if c["architectures"][0].startswith("Gemma"):  # a tied Gemma's lm_head is ignored (transformers ties it)
        w["lm_head.weight"] = np.ones((V, E), np.float32)
    values = write_folder(d, c, w, dtype)
    folders[name] = (d, c, dtype, values)
    out = d + ".gguf"
    r = run("convert", "hf", d, "-o", out)
    if r.returncode != 0:
        check(False, "%s: herd convert hf failed: %s" % (name, r.stderr.strip()))
        continue
    check_gguf(name, out, c, TYPE_OF[dtype], keys)
    reference = forward(c, values)
    for batch in (64, 1):
        got = herd_eval(out, batch)
        if isinstance(got, str):
            check(False, "%s: herd eval failed: %s" % (name, got))
            continue
        d_ok = worst(got, reference)
        print("%s (%s), %d token(s) a pass: max |logit - HF reference| %.2e (tolerance 1e-3)"
              % (name, dtype, batch, d_ok))
        check(d_ok <= 1e-3, "%s: %.2e from the reference" % (name, d_ok))
        if batch != 64:
            continue
        for off in offs:
            d_wrong = worst(got, forward(c, values, (off,)))
            print("    the reference without %s is %.3f away (must be > 0.1)" % (off, d_wrong))
            check(d_wrong > 0.1, "%s: leaving out %s moves the reference only %.3f" % (name, off, d_wrong))

# Gemma 3's multimodal checkpoint (gemma-3-4b-it and larger): the text model's
# config is text_config, sparse (Gemma3TextConfig's defaults fill it: 8 heads,
# 4 KV heads, head_dim 256, rope_theta 1e6, ...), its tensors are under
# language_model., and the vision tower's are left out.
text = dict(hidden_size=E, intermediate_size=FF, num_hidden_layers=6, sliding_window=7, model_type="gemma3_text",
            rope_scaling=dict(rope_type="linear", factor=8.0))
mm = dict(architectures=["Gemma3ForConditionalGeneration"], model_type="gemma3", text_config=text,
          vision_config=dict(hidden_size=32, model_type="siglip_vision_model"), mm_tokens_per_image=4)
full = family("Gemma3ForCausalLM", "gemma3_text", num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4,
              head_dim=256, query_pre_attn_scalar=256, sliding_window=7, rope_theta=1000000.0,
              rope_local_base_freq=10000.0, rope_scaling=text["rope_scaling"], **gemma_kw)
# Published checkpoints name the decoder language_model.model.*, those saved by
# transformers 4.52 or later model.language_model.* (the head lm_head.weight).
for layout, body, vision in (("published", "language_model.model.", ""), ("transformers 4.52", "model.language_model.",
                                                                          "model.")):
    w = {(body + k[len("model."):] if k.startswith("model.") else "language_model." + k): v
         for k, v in weights(full, 5).items()}
    w[vision + "vision_tower.vision_model.embeddings.patch_embedding.weight"] = np.ones((32, 3, 2, 2), np.float32)
    w[vision + "multi_modal_projector.mm_input_projection_weight"] = np.ones((32, E), np.float32)
    d = os.path.join(tmp, "gemma3-multimodal-" + body.replace(".", "-"))
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(mm, f, indent=1)
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(os.path.join(tok_dir, f), d)
    stored = write_safetensors(os.path.join(d, "model.safetensors"), w, "BF16")
    values = {"model." + k[len(body):]: v for k, v in stored.items() if k.startswith(body)}
    out = d + ".gguf"
    r = run("convert", "hf", d, "-o", out)
    check(r.returncode == 0, "gemma3 multimodal (%s): herd convert hf failed: %s" % (layout, r.stderr.strip()))
    if r.returncode != 0:
        continue
    check_gguf("gemma3 multimodal", out, full, BF16,
               {"gemma3.attention.head_count": 8, "gemma3.attention.head_count_kv": 4,
                "gemma3.attention.key_length": 256, "gemma3.context_length": 131072,
                "gemma3.rope.freq_base": 1000000.0, "gemma3.attention.scale": None})
    got = herd_eval(out, 64)
    d_ok = worst(got, forward(full, values)) if not isinstance(got, str) else float("inf")
    print("gemma3 multimodal checkpoint (%s names), its text model (BF16): max |logit - HF reference| %.2e "
          "(tolerance 1e-3)" % (layout, d_ok))
    check(d_ok <= 1e-3, "gemma3 multimodal: %s" % (got if isinstance(got, str) else "%.2e from the reference" % d_ok))

# Other output types: the router stays F32, the rest follows --type.
for name, typ, tol in (("qwen2moe", "Q8_0", 0.5), ("gemma2", "F16", 1e-3)):
    d, c, dtype, values = folders[name]
    out = os.path.join(tmp, "%s-%s.gguf" % (name, typ))
    r = run("convert", "hf", d, "-o", out, "--type", typ)
    check(r.returncode == 0, "%s --type %s: %s" % (name, typ, r.stderr.strip()))
    if r.returncode != 0:
        continue
    check_gguf("%s --type %s" % (name, typ), out, c, TYPE_OF[typ], {})
    got = herd_eval(out, 64)
    if isinstance(got, str):
        check(False, "%s --type %s: herd eval failed: %s" % (name, typ, got))
        continue
    d_q = worst(got, forward(c, values))
    print("%s --type %s: max |logit - HF reference| %.3f (tolerance %g)" % (name, typ, d_q, tol))
    check(d_q <= tol, "%s --type %s: %.3f from the reference" % (name, typ, d_q))


# ---------------------------------------------------------------- refusals

def drop_expert(w, name):
    del w[name]
    return w


def extra_expert(w, layer):
    p = "model.layers.%d.mlp.experts." % layer
    for n in ("gate_proj", "up_proj", "down_proj"):
        w[p + "8.%s.weight" % n] = w[p + "0.%s.weight" % n]
    return w


# (base case, config changes (None deletes), weight change, what the message must name)
refusals = [
    ("phi3", dict(partial_rotary_factor=0.75), None, "partial_rotary_factor 0.75"),
    ("phi3 LongRoPE, long factors", dict(rope_scaling=dict(longrope, short_factor=[1.0] * 7)), None,
     "rope_scaling.short_factor is not a list of 8 numbers"),
    ("gemma3", dict(sliding_window_pattern=4), None, "sliding_window_pattern 4 is not supported"),
    ("gemma3", dict(sliding_window_pattern=None, layer_types=["sliding_attention"] * 6), None,
     "layer_types[5] is not 'full_attention'"),
    ("gemma3", dict(rope_local_base_freq=20000.0), None, "rope_local_base_freq 20000 is not supported"),
    ("gemma3", dict(final_logit_softcapping=30.0), None, "logit soft-capping on Gemma 3 is not supported"),
    ("gemma3", dict(rope_scaling=dict(rope_type="linear", factor=0.5)), None, "factor 0.5 below 1"),
    ("gemma2", dict(hidden_activation="gelu"), None, "activation 'gelu' is not supported"),
    ("qwen3", dict(use_sliding_window=True, sliding_window=4), None, "use_sliding_window"),
    ("qwen2moe", dict(decoder_sparse_step=2), None, "decoder_sparse_step 2"),
    ("qwen3moe", dict(mlp_only_layers=[1]), None, "mlp_only_layers"),
    ("qwen3moe", dict(num_experts_per_tok=17), None, "num_experts_per_tok 17 with 16 experts"),
    ("mixtral", dict(rope_scaling=dict(type="yarn", factor=4.0)), None, "rope_scaling type 'yarn'"),
    ("mixtral", dict(rope_scaling=dict(rope_type="dynamic", factor=2.0)), None, "rope_scaling type 'dynamic'"),
    ("qwen3moe", {}, lambda w: drop_expert(w, "model.layers.1.mlp.experts.15.up_proj.weight"),
     "no tensor 'model.layers.1.mlp.experts.15.up_proj.weight'"),
    ("qwen2moe", {}, lambda w: extra_expert(w, 1), "tensor 'model.layers.1.mlp.experts.8.down_proj.weight' has no "
     "place in a qwen2moe GGUF"),
    ("gemma3", dict(architectures=["Gemma3ForConditionalGeneration"]), None, "text_config is missing"),
]
for i, (base, changes, reweigh, fragment) in enumerate(refusals):
    d, c, dtype, _ = folders[base]
    bad = os.path.join(tmp, "refused-%d" % i)
    c = dict(c)
    for k, v in changes.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    write_folder(bad, c, reweigh(weights(folders[base][1], 1)) if reweigh else {}, "F32")
    if not reweigh:
        shutil.copy(os.path.join(d, "model.safetensors"), bad)
    out = bad + ".gguf"
    r = run("convert", "hf", bad, "-o", out)
    check(r.returncode == 1 and fragment in r.stderr and not os.path.exists(out),
          "%s with %s: want exit 1 naming \"%s\", got %d: %s" % (base, changes or "changed weights", fragment,
                                                                r.returncode, r.stderr.strip()))
print("refusals: %d configs or folders refused with their reason" % len(refusals))

shutil.rmtree(tmp)
print("hf families: %d checks failed" % failures)
sys.exit(1 if failures else 0)

#!/usr/bin/env python3
"""Writes tiny-mix.gguf and tiny-mix.imatrix: a small model shaped to walk
every branch of llama-quantize's type rules, and an importance matrix for it
in llama.cpp's format. Python's standard library only; deterministic.

tiny-mix is a Llama-architecture GGUF whose matrices have few rows (so the
file stays small) but rows of 256 values (so the K types apply) and 16
layers (so the "more bits" layers of the M mixes, the first eighth and
sixteenth, all occur). It is not a runnable model: llama-quantize reads
hyperparameters and tensors, never builds the graph.

  - 1 KV head for 4 query heads (n_gqa 4: Q2_K's attn_v rule)
  - ffn_down rows of 96 values: the K types fall back (IQ4_NL, Q5_0, Q5_1, Q8_0)
  - token_embd stored F16, output BF16, the rest F32 (every input type)
  - blk.5.attn_k has one row: a vector to llama.cpp (n_dims 1), copied
  - values: N(0, 0.05) with a few outliers, a zero row, a constant row

The importance matrix has entries for layers 0-7 only (the rest quantize
without one, as a partial imatrix does), ncall 10, a token_embd entry of the
wrong size (llama-quantize ignores it for that tensor) and the trailer with
chunks 10 and dataset "tiny.txt".

    python3 make_tiny_mix.py OUTDIR
"""
import random
import struct
import sys

N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, N_FF, N_VOCAB = 256, 16, 4, 1, 96, 16
ALIGN = 32
F32, F16, BF16 = 0, 1, 30


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return gguf_str(key) + struct.pack("<I", vtype) + payload


def kv_u32(key, v):
    return kv(key, 4, struct.pack("<I", v))


def kv_f32(key, v):
    return kv(key, 6, struct.pack("<f", v))


def kv_str(key, v):
    return kv(key, 8, gguf_str(v))


def kv_bool(key, v):
    return kv(key, 7, struct.pack("<B", 1 if v else 0))


def kv_arr(key, etype, items):
    body = struct.pack("<IQ", etype, len(items))
    for it in items:
        if etype == 8:
            body += gguf_str(it)
        elif etype == 6:
            body += struct.pack("<f", it)
        elif etype == 5:
            body += struct.pack("<i", it)
    return kv(key, 9, body)


def f16_bits(x):
    return struct.unpack("<H", struct.pack("<e", x))[0]


def bf16_bits(x):
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    return (u + 0x7FFF + ((u >> 16) & 1)) >> 16


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    rng = random.Random(20261202)

    def values(ne0, ne1, scale=0.05):
        v = [rng.gauss(0.0, scale) for _ in range(ne0 * ne1)]
        for _ in range(max(1, ne0 * ne1 // 512)):  # a few outliers
            v[rng.randrange(len(v))] = rng.choice([-1, 1]) * rng.uniform(0.3, 0.6)
        return v

    tensors = []  # (name, ne, type, floats)
    tensors.append(("token_embd.weight", [N_EMBD, N_VOCAB], F16, values(N_EMBD, N_VOCAB, 0.6)))
    tensors.append(("output_norm.weight", [N_EMBD], F32, [1.0 + rng.gauss(0, 0.1) for _ in range(N_EMBD)]))
    tensors.append(("output.weight", [N_EMBD, N_VOCAB], BF16, values(N_EMBD, N_VOCAB, 0.4)))
    for il in range(N_LAYER):
        b = "blk.%d." % il
        tensors.append((b + "attn_norm.weight", [N_EMBD], F32, [1.0 + rng.gauss(0, 0.1) for _ in range(N_EMBD)]))
        tensors.append((b + "attn_q.weight", [N_EMBD, 3], F32, values(N_EMBD, 3)))
        k_rows = 1 if il == 5 else 2
        tensors.append((b + "attn_k.weight", [N_EMBD, k_rows], F32, values(N_EMBD, k_rows)))
        v = values(N_EMBD, 2)
        if il == 2:
            v[:N_EMBD] = [0.0] * N_EMBD  # a zero row
        if il == 3:
            v[N_EMBD:] = [0.125] * N_EMBD  # a constant row
        tensors.append((b + "attn_v.weight", [N_EMBD, 2], F32, v))
        tensors.append((b + "attn_output.weight", [N_EMBD, 3], F32, values(N_EMBD, 3)))
        tensors.append((b + "ffn_norm.weight", [N_EMBD], F32, [1.0 + rng.gauss(0, 0.1) for _ in range(N_EMBD)]))
        tensors.append((b + "ffn_gate.weight", [N_EMBD, 2], F32, values(N_EMBD, 2)))
        tensors.append((b + "ffn_up.weight", [N_EMBD, 2], F32, values(N_EMBD, 2)))
        tensors.append((b + "ffn_down.weight", [N_FF, 2], F32, values(N_FF, 2)))

    kvs = [
        kv_str("general.architecture", "llama"),
        kv_str("general.name", "tiny-mix"),
        kv_u32("general.file_type", 0),
        kv_u32("llama.vocab_size", N_VOCAB),
        kv_u32("llama.context_length", 128),
        kv_u32("llama.embedding_length", N_EMBD),
        kv_u32("llama.block_count", N_LAYER),
        kv_u32("llama.feed_forward_length", N_FF),
        kv_u32("llama.attention.head_count", N_HEAD),
        kv_u32("llama.attention.head_count_kv", N_HEAD_KV),
        kv_f32("llama.rope.freq_base", 10000.0),
        kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5),
        kv_u32("llama.rope.dimension_count", N_EMBD // N_HEAD),
        kv_str("tokenizer.ggml.model", "llama"),
        kv_arr("tokenizer.ggml.tokens", 8, ["<unk>", "<s>", "</s>"] + ["t%d" % i for i in range(N_VOCAB - 3)]),
        kv_arr("tokenizer.ggml.scores", 6, [0.0] * N_VOCAB),
        kv_arr("tokenizer.ggml.token_type", 5, [2, 3, 3] + [1] * (N_VOCAB - 3)),
        kv_u32("tokenizer.ggml.bos_token_id", 1),
        kv_u32("tokenizer.ggml.eos_token_id", 2),
        kv_bool("tokenizer.ggml.add_bos_token", True),
    ]

    def data_of(t):
        _, ne, ty, v = t
        if ty == F32:
            return struct.pack("<%df" % len(v), *v)
        if ty == F16:
            return struct.pack("<%dH" % len(v), *[f16_bits(x) for x in v])
        return struct.pack("<%dH" % len(v), *[bf16_bits(x) for x in v])

    infos, blobs, off = b"", [], 0
    for t in tensors:
        name, ne, ty, _ = t
        d = data_of(t)
        infos += gguf_str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        infos += struct.pack("<IQ", ty, off)
        pad = (-len(d)) % ALIGN
        blobs.append(d + b"\0" * pad)
        off += len(d) + pad
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + infos
    head += b"\0" * ((-len(head)) % ALIGN)
    with open(out + "/tiny-mix.gguf", "wb") as f:
        f.write(head + b"".join(blobs))

    # importance matrix: llama.cpp's format (src/convert/imatrix.h)
    ncall = 10
    entries = []
    for name, ne, ty, _ in tensors:
        if len(ne) < 2 or "norm" in name:
            continue
        if name == "token_embd.weight":
            entries.append((name, 17))  # wrong size on purpose
            continue
        if name.startswith("blk.") and int(name.split(".")[1]) >= 8:
            continue
        entries.append((name, ne[0]))
    im = struct.pack("<i", len(entries))
    for name, n in entries:
        vals = [(rng.gauss(0, 1) ** 2 + 1e-3) * ncall for _ in range(n)]
        im += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", ncall, n)
        im += struct.pack("<%df" % n, *vals)
    ds = b"tiny.txt"
    im += struct.pack("<ii", 10, len(ds)) + ds
    with open(out + "/tiny-mix.imatrix", "wb") as f:
        f.write(im)


if __name__ == "__main__":
    main()

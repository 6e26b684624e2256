#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_gguf: small valid models (every metadata
value type, tensors of several ggml types, a vocabulary-only file) and
hand-broken variants. Run from the repository root:
    python3 tests/fuzz/make_seeds.py tests/fuzz/corpus/gguf
"""
import os
import struct
import sys


def s(text):
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return s(key) + struct.pack("<I", vtype) + payload


def model(n_layer=1, alignment=None, vocab=("<unk>", "<s>", "</s>", "<0x41>", "a", "b", "c", "d"),
          ttype=0, extra_kv=b"", n_extra_kv=0, tensors=True):
    dim, ff = 32, 64
    kvs = [kv("general.architecture", 8, s("llama")),
           kv("llama.embedding_length", 4, struct.pack("<I", dim)),
           kv("llama.block_count", 4, struct.pack("<I", n_layer)),
           kv("llama.feed_forward_length", 4, struct.pack("<I", ff)),
           kv("llama.attention.head_count", 4, struct.pack("<I", 2)),
           kv("llama.attention.head_count_kv", 4, struct.pack("<I", 1)),
           kv("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
           kv("tokenizer.ggml.model", 8, s("llama")),
           kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(vocab)) + b"".join(s(t) for t in vocab)),
           kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, len(vocab)) + struct.pack("<%df" % len(vocab), *range(len(vocab)))),
           kv("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, len(vocab)) + struct.pack("<%di" % len(vocab), 2, 3, 3, 6, 1, 1, 1, 1)),
           kv("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", 1)),
           kv("tokenizer.ggml.add_bos_token", 7, b"\x01"),
           kv("general.x.i64", 11, struct.pack("<q", -1)),
           kv("general.x.f64", 12, struct.pack("<d", 0.5)),
           kv("general.x.u16", 2, struct.pack("<H", 7)),
           kv("general.x.i8", 1, b"\xff")]
    align = 32
    if alignment is not None:
        kvs.append(kv("general.alignment", 4, struct.pack("<I", alignment)))
        align = alignment
    names = [("token_embd.weight", (dim, len(vocab))), ("output_norm.weight", (dim,))]
    for l in range(n_layer):
        p = "blk.%d." % l
        names += [(p + "attn_norm.weight", (dim,)), (p + "attn_q.weight", (dim, dim)),
                  (p + "attn_k.weight", (dim, dim // 2)), (p + "attn_v.weight", (dim, dim // 2)),
                  (p + "attn_output.weight", (dim, dim)), (p + "ffn_norm.weight", (dim,)),
                  (p + "ffn_gate.weight", (dim, ff)), (p + "ffn_up.weight", (dim, ff)), (p + "ffn_down.weight", (ff, dim))]
    if not tensors:
        names = []
    sizes = {0: (1, 4), 1: (1, 2), 30: (1, 2), 8: (32, 34), 2: (32, 18)}
    infos, off, blobs = [], 0, []
    for name, ne in names:
        t = 0 if len(ne) == 1 else ttype
        bs, bb = sizes[t]
        n = 1
        for d in ne:
            n *= d
        nbytes = n // bs * bb
        infos.append(s(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne) + struct.pack("<IQ", t, off))
        blobs.append(bytes(nbytes) + bytes((-nbytes) % align))
        off += nbytes + (-nbytes) % align
    head = b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(kvs) + n_extra_kv) + b"".join(kvs) + extra_kv + b"".join(infos)
    if infos:
        head += bytes((-len(head)) % align)
    return head + b"".join(blobs)


def byte_chars():
    """GPT-2's byte-level alphabet, byte -> character."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out, nxt = {}, 256
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(nxt)
            nxt += 1
    return out


def bpe_vocab():
    """A small byte-level BPE vocabulary-only file: 256 byte tokens, a few merges."""
    bc = byte_chars()
    toks = [bc[b] for b in range(256)] + ["\u0120h", "el", "lo", "\u0120hel", "<|endoftext|>"]
    merges = ["\u0120 h", "e l", "l o", "\u0120h el"]
    types = [1] * 260 + [3]
    kvs = [kv("general.architecture", 8, s("gpt2")),
           kv("tokenizer.ggml.model", 8, s("gpt2")),
           kv("tokenizer.ggml.pre", 8, s("gpt-2")),
           kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(toks)) + b"".join(s(t) for t in toks)),
           kv("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, len(types)) + struct.pack("<%di" % len(types), *types)),
           kv("tokenizer.ggml.merges", 9, struct.pack("<IQ", 8, len(merges)) + b"".join(s(m) for m in merges)),
           kv("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", 260))]
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seeds = {
        "valid-f32": model(),
        "valid-f16-2layers": model(n_layer=2, ttype=1),
        "valid-q8_0": model(ttype=8),
        "valid-q4_0-align64": model(ttype=2, alignment=64),
        "valid-bf16": model(ttype=30),
        "vocab-only": model(tensors=False),
        "bad-alignment-3": model(alignment=3),
        "bad-byte-token": model(vocab=("<unk>", "<s>", "</s>", "<0x-1>", "a", "b", "c", "d")),
        "nested-array": model(extra_kv=kv("x.nested", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 0, 1) + b"\x01"), n_extra_kv=1),
        "header-huge-counts": b"GGUF" + struct.pack("<IQQ", 3, 2**64 - 1, 2**63),
        "magic-only": b"GGUF",
        "version1": b"GGUF" + struct.pack("<III", 1, 0, 0),
        "bpe-vocab": bpe_vocab(),
    }
    full = model()
    seeds["truncated-half"] = full[: len(full) // 2]
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
